//! `deploy/keda/`: the manifests parse, the example ScaledObject asks the scaler for the
//! seed policy with its bounds and the behavior that leaves the HPA nothing to change, and
//! the scaler's RBAC is exactly the requests the scaler makes.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::{Cluster, NS};
use serde_json::json;
use serde_yaml_ng::Value;
use vllm_scaling_keda::PolicyRef;
use vllm_scaling_kube::fake_api::{document_of_kind as find, manifest_documents, rbac_allows, rbac_grants, rbac_view};

fn documents(path: &str) -> Vec<Value> {
    manifest_documents(&PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path))
}

#[test]
fn the_example_scaled_object_asks_for_the_seed_policy_and_leaves_the_hpa_nothing_to_change() {
    for path in ["deploy/keda/scaler.yaml", "deploy/keda/scaledobject.yaml"] {
        for d in documents(path) {
            assert!(d["apiVersion"].as_str().is_some() && d["kind"].as_str().is_some(), "{path}: {d:?}");
        }
    }
    let so = documents("deploy/keda/scaledobject.yaml");
    let so = find(&so, "ScaledObject");
    let seed = documents("deploy/examples/example-policy.yaml");
    let seed = find(&seed, "vLLMScalingPolicy");
    let trigger = &so["spec"]["triggers"][0];
    assert_eq!(trigger["type"].as_str(), Some("external-push"));
    let metadata: std::collections::HashMap<String, String> =
        serde_yaml_ng::from_value(trigger["metadata"].clone()).expect("string metadata");
    let namespace = so["metadata"]["namespace"].as_str().unwrap();
    let asked = vllm_scaling_keda::metadata::parse(namespace, so["metadata"]["name"].as_str().unwrap(), &metadata)
        .expect("the example's metadata parses");
    assert_eq!(
        asked,
        PolicyRef::Named {
            namespace: namespace.to_owned(),
            name: seed["metadata"]["name"].as_str().unwrap().to_owned()
        }
    );
    assert_eq!(so["spec"]["minReplicaCount"], seed["spec"]["minReplicas"]);
    assert_eq!(so["spec"]["maxReplicaCount"], seed["spec"]["maxReplicas"]);
    let behavior = &so["spec"]["advanced"]["horizontalPodAutoscalerConfig"]["behavior"];
    for direction in ["scaleUp", "scaleDown"] {
        assert_eq!(behavior[direction]["stabilizationWindowSeconds"].as_i64(), Some(0), "{direction}");
        assert_eq!(behavior[direction]["tolerance"].as_f64(), Some(0.0), "{direction}");
    }
    let deployment = documents("deploy/keda/scaler.yaml");
    let deployment = find(&deployment, "Deployment");
    let args: Vec<&str> = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(args.contains(&"keda-scaler"), "{args:?}");
    assert!(!args.contains(&"--insecure-no-tls"), "the shipped scaler serves TLS: {args:?}");
    assert_eq!(deployment["spec"]["replicas"].as_i64(), Some(1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_scalers_rbac_is_exactly_its_traffic() {
    let Some(mut c) = Cluster::start(2, false).await else { return };
    // A named policy by Deployment name, one by served model id (resolved by listing
    // workloads), and an inline one whose target comes from its ScaledObject.
    c.server.apply(common::scaled_object(json!({"policy": common::POLICY})));
    let mut spec = common::policy_spec();
    spec["scalingRules"] = json!([{"metric": "queue_length", "threshold": 5, "source": "pods"}]);
    spec["minReplicas"] = json!(1);
    spec.as_object_mut().unwrap().remove("scaleToZero");
    // By model id: the Deployment serves `vllm serve org/model`.
    c.server.apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "by-model", "namespace": NS},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "by-model"}},
                 "template": {"metadata": {"labels": {"app": "by-model"}},
                              "spec": {"containers": [{"name": "vllm", "command": ["vllm", "serve", "org/model"]}]}}},
        "status": {"replicas": 1}
    }));
    c.server.apply(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": "by-model", "namespace": NS},
        "spec": {"scaleTargetRef": {"name": "by-model"}, "triggers": [{"type": "external", "metadata": {"policy": "by-model"}}]}
    }));
    let mut by_model = spec.clone();
    by_model["scaleTargetRef"] = json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "org/model"});
    c.server.apply(json!({
        "apiVersion": "autoscaler.production-stack/v1alpha1", "kind": "vLLMScalingPolicy",
        "metadata": {"name": "by-model", "namespace": NS}, "spec": by_model
    }));
    c.apply_policy(spec.clone()).await;
    c.set_load(20.0, 0.0);
    c.step(15).await;
    // Metrics down twice: a Warning event, then its series patched.
    for e in &c.pods {
        e.control(vllm_scaling_prom::emulator::ControlUpdate {
            fault: Some(vllm_scaling_prom::emulator::Fault::ServerError),
            ..Default::default()
        })
        .unwrap();
    }
    c.step(15).await;
    c.step(15).await;
    let text = "maxReplicas: 3\nscalingRules:\n  - {metric: queue_length, threshold: 5, source: pods}\n";
    let mut inline = common::scaled_object(json!({"policySpec": text}));
    inline["metadata"]["name"] = json!("inline");
    c.server.apply(inline);
    let reference = vllm_scaling_keda::proto::ScaledObjectRef {
        name: "inline".into(),
        namespace: NS.into(),
        scaler_metadata: [("policySpec".to_owned(), text.to_owned())].into_iter().collect(),
    };
    let _ = c.client.is_active(reference).await;
    let started = std::time::Instant::now();
    while !matches!(c.board.latest(NS, "by-model"), Some(vllm_scaling_kube::Outcome::Decided(_))) {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "by-model never decided: {:?}",
            c.board.latest(NS, "by-model")
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let rbac = documents("deploy/keda/scaler.yaml");
    let rules = &find(&rbac, "ClusterRole")["rules"];
    let mut seen = std::collections::BTreeSet::new();
    for request in c.server.requests() {
        let Some((group, resource, verb, namespace)) = rbac_view(&request) else { continue };
        assert!(
            rbac_allows(rules, &group, &resource, &verb),
            "the scaler's RBAC forbids {verb} {group}/{resource} in {namespace:?} ({} {})",
            request.method,
            request.path
        );
        seen.insert((group, resource, verb));
    }
    assert!(
        !seen.iter().any(|(_, r, v)| r.ends_with("/scale") && v != "get"),
        "the scaler only reads /scale: {seen:?}"
    );
    // Every grant is used (workload kinds alike: the traffic scales Deployments only).
    let workload = |resource: &str| {
        let (plural, sub) = resource.split_once('/').map_or((resource, None), |(p, s)| (p, Some(s)));
        let plural =
            if ["deployments", "statefulsets", "replicasets", "leaderworkersets", "vllmruntimes"].contains(&plural) {
                "<workload>"
            } else {
                plural
            };
        sub.map_or_else(|| plural.to_owned(), |s| format!("{plural}/{s}"))
    };
    let used: std::collections::BTreeSet<(String, String)> =
        seen.iter().map(|(_, r, v)| (workload(r), v.clone())).collect();
    for (group, resource, verb) in rbac_grants(rules) {
        assert!(
            used.contains(&(workload(&resource), verb.clone())),
            "the scaler's ClusterRole grants {verb} on {group}/{resource}, which it never requests (traffic: {seen:#?})"
        );
    }
}
