//! End-to-end against a real Kubernetes API server (kind, k3d, or a real cluster). Not run
//! by `cargo test`: it needs a cluster, the `vllm-autoscaler` image, and
//!
//! ```sh
//! docker build -f deploy/Dockerfile -t vllm-autoscaler:e2e .
//! kind load docker-image vllm-autoscaler:e2e          # or push it where the cluster pulls from
//! VLLM_SCALING_E2E=1 VLLM_SCALING_E2E_IMAGE=vllm-autoscaler:e2e \
//!     cargo test -p vllm-scaling-kube --features test-util --test e2e -- --ignored --nocapture
//! ```
//!
//! It uses the current kubeconfig context (`$KUBECONFIG` or `~/.kube/config`) and needs
//! cluster-admin there (it installs the CRD and a ClusterRole). In a fresh namespace it
//! applies the CRD, `deploy/controller/rbac.yaml` and `deploy/controller/deployment.yaml`
//! (image, namespace scope and a 5 s sync period substituted), a Prometheus
//! (`VLLM_SCALING_E2E_PROMETHEUS_IMAGE`, default `prom/prometheus:v2.53.0`) that discovers
//! the pods by their `prometheus.io/*` annotations, two Deployments of the vLLM emulator
//! (`vllm-autoscaler emulate-vllm` from the same image, one serving the seed's model id),
//! the seed's example policy verbatim, and a second policy that reads `queue_length` from
//! Prometheus. It raises the emulators' queues through the API server's pod proxy and
//! waits for both Deployments to be scaled and both statuses to say why. The namespace and
//! the cluster-scoped RBAC are deleted at the end; the CRD is left installed.

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Namespace, Pod};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::discovery::pinned_kind;
use kube::{Client, ResourceExt};
use serde_json::{Value, json};
use vllm_scaling_kube::{VllmScalingPolicyResource, crd};

const MODEL: &str = "meta-llama/Llama-2-70b-hf";
const MANAGER: &str = "vllm-scaling-e2e";

fn repo(path: &str) -> std::path::PathBuf {
    std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

async fn apply(client: &Client, namespace: &str, mut doc: Value) {
    let api_version = doc["apiVersion"].as_str().unwrap().to_owned();
    let kind = doc["kind"].as_str().unwrap().to_owned();
    let (group, version) = api_version.split_once('/').unwrap_or(("", &api_version));
    let gvk = kube::api::GroupVersionKind::gvk(group, version, &kind);
    let (ar, caps) =
        pinned_kind(client, &gvk).await.unwrap_or_else(|e| panic!("{api_version} {kind} is not served: {e}"));
    let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
        doc["metadata"]["namespace"] = json!(namespace);
        Api::namespaced_with(client.clone(), namespace, &ar)
    } else {
        Api::all_with(client.clone(), &ar)
    };
    let name = doc["metadata"]["name"].as_str().unwrap().to_owned();
    api.patch(&name, &PatchParams::apply(MANAGER).force(), &Patch::Apply(&doc))
        .await
        .unwrap_or_else(|e| panic!("applying {kind} {name}: {e}"));
}

fn yaml_docs(path: &str) -> Vec<Value> {
    let text = std::fs::read_to_string(repo(path)).unwrap();
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| <Value as serde::Deserialize>::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect()
}

fn emulator(name: &str, model: &str, image: &str) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {
                    "labels": {"app": name, "app.kubernetes.io/component": "vllm"},
                    "annotations": {"prometheus.io/scrape": "true", "prometheus.io/port": "8000", "prometheus.io/path": "/metrics"}
                },
                "spec": {"containers": [{
                    "name": "vllm", "image": image, "imagePullPolicy": "IfNotPresent",
                    // `--model <id>` is how the controller finds the Deployment serving a model id.
                    "args": ["emulate-vllm", "--listen", "0.0.0.0:8000", "--model", model],
                    "ports": [{"name": "http", "containerPort": 8000}],
                    "readinessProbe": {"httpGet": {"path": "/health", "port": "http"}, "periodSeconds": 2}
                }]}
            }
        }
    })
}

fn prometheus(namespace: &str, image: &str) -> Vec<Value> {
    let config = format!(
        r#"global: {{scrape_interval: 5s, evaluation_interval: 5s}}
scrape_configs:
  - job_name: vllm
    kubernetes_sd_configs: [{{role: pod, namespaces: {{names: [{namespace}]}}}}]
    relabel_configs:
      - {{source_labels: [__meta_kubernetes_pod_annotation_prometheus_io_scrape], action: keep, regex: "true"}}
      - {{source_labels: [__address__, __meta_kubernetes_pod_annotation_prometheus_io_port], action: replace, regex: '([^:]+)(?::\d+)?;(\d+)', replacement: '$1:$2', target_label: __address__}}
      - {{source_labels: [__meta_kubernetes_namespace], target_label: namespace}}
      - {{source_labels: [__meta_kubernetes_pod_name], target_label: pod}}
"#
    );
    vec![
        json!({"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "prometheus"}}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "prometheus"},
               "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get", "list", "watch"]}]}),
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "prometheus"},
               "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "prometheus"},
               "subjects": [{"kind": "ServiceAccount", "name": "prometheus", "namespace": namespace}]}),
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "prometheus"}, "data": {"prometheus.yml": config}}),
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "prometheus"},
               "spec": {"replicas": 1, "selector": {"matchLabels": {"app": "prometheus"}},
                        "template": {"metadata": {"labels": {"app": "prometheus"}},
                                     "spec": {"serviceAccountName": "prometheus",
                                              "containers": [{"name": "prometheus", "image": image,
                                                              "args": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"],
                                                              "ports": [{"name": "web", "containerPort": 9090}],
                                                              "volumeMounts": [{"name": "config", "mountPath": "/etc/prometheus"}, {"name": "data", "mountPath": "/prometheus"}]}],
                                              "volumes": [{"name": "config", "configMap": {"name": "prometheus"}}, {"name": "data", "emptyDir": {}}]}}}}),
        json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "prometheus"},
               "spec": {"selector": {"app": "prometheus"}, "ports": [{"name": "web", "port": 9090, "targetPort": "web"}]}}),
    ]
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

/// Sets an emulator pod's load through the API server's pod proxy.
async fn set_queue(client: &Client, namespace: &str, app: &str, queue: f64) {
    let pods: Api<Pod> = Api::namespaced(client.clone(), namespace);
    for pod in pods.list(&ListParams::default().labels(&format!("app={app}"))).await.unwrap() {
        let path = format!("/api/v1/namespaces/{namespace}/pods/{}:8000/proxy/control", pod.name_any());
        let body = serde_json::to_vec(&json!({"queue_length": queue})).unwrap();
        let request = hyper::Request::post(path).header("content-type", "application/json").body(body).unwrap();
        client.request_text(request).await.unwrap_or_else(|e| panic!("setting the load of {}: {e}", pod.name_any()));
    }
}

#[tokio::test]
#[ignore = "needs a Kubernetes cluster: VLLM_SCALING_E2E=1 cargo test -p vllm-scaling-kube --features test-util --test e2e -- --ignored"]
async fn seed_policy_scales_a_deployment_on_a_real_cluster() {
    assert_eq!(
        std::env::var("VLLM_SCALING_E2E").as_deref(),
        Ok("1"),
        "the end-to-end suite runs against the current kubeconfig context only when VLLM_SCALING_E2E=1"
    );
    let image = std::env::var("VLLM_SCALING_E2E_IMAGE").unwrap_or_else(|_| "vllm-autoscaler:0.1.0".into());
    let prometheus_image =
        std::env::var("VLLM_SCALING_E2E_PROMETHEUS_IMAGE").unwrap_or_else(|_| "prom/prometheus:v2.53.0".into());
    let client =
        Client::try_default().await.expect("a kubeconfig ($KUBECONFIG or ~/.kube/config) for the test cluster");
    let suffix = format!(
        "{:x}",
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 0xff_ffff
    );
    let ns = format!("vllm-e2e-{suffix}");
    let namespaces: Api<Namespace> = Api::all(client.clone());
    namespaces
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": ns}})).unwrap())
        .await
        .unwrap();
    eprintln!("namespace {ns}");

    // The CRD, as generated, accepted by the real API server's structural-schema checks.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.patch(
        "vllmscalingpolicies.autoscaler.production-stack",
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(crd()),
    )
    .await
    .expect("the API server accepts the CRD");
    wait_until("the CRD to be established", Duration::from_secs(30), || async {
        let crd = crds.get("vllmscalingpolicies.autoscaler.production-stack").await.unwrap();
        crd.status
            .and_then(|s| s.conditions)
            .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Established" && c.status == "True"))
    })
    .await;

    // Prometheus, the emulators, and the controller from deploy/ (substituted).
    for doc in prometheus(&ns, &prometheus_image) {
        apply(&client, &ns, doc).await;
    }
    apply(&client, &ns, emulator("llama-70b", MODEL, &image)).await;
    apply(&client, &ns, emulator("llama-prom", "e2e/llama-prom", &image)).await;
    let cluster_name = format!("vllm-autoscaler-{ns}");
    for mut doc in
        yaml_docs("deploy/controller/rbac.yaml").into_iter().chain(yaml_docs("deploy/controller/deployment.yaml"))
    {
        match doc["kind"].as_str().unwrap() {
            "Namespace" => continue,
            "ClusterRole" => doc["metadata"]["name"] = json!(cluster_name),
            "ClusterRoleBinding" => {
                doc["metadata"]["name"] = json!(cluster_name);
                doc["roleRef"]["name"] = json!(cluster_name);
                doc["subjects"][0]["namespace"] = json!(ns);
            }
            "RoleBinding" => doc["subjects"][0]["namespace"] = json!(ns),
            "Deployment" => {
                let container = &mut doc["spec"]["template"]["spec"]["containers"][0];
                container["image"] = json!(image);
                container["args"] = json!([
                    "run",
                    "--leader-elect",
                    "--sync-period=5s",
                    "--metrics-addr=0.0.0.0:8080",
                    format!("--namespace={ns}"),
                    format!("--prometheus-url=http://prometheus.{ns}.svc:9090")
                ]);
            }
            _ => {}
        }
        apply(&client, &ns, doc).await;
    }

    // The seed's example verbatim, and a policy that reads the queue from Prometheus.
    let seed: Value =
        serde_yaml_ng::from_str(&std::fs::read_to_string(repo("deploy/examples/example-policy.yaml")).unwrap())
            .unwrap();
    apply(&client, &ns, seed).await;
    apply(
        &client,
        &ns,
        json!({
            "apiVersion": "autoscaler.production-stack/v1alpha1", "kind": "vLLMScalingPolicy",
            "metadata": {"name": "llama-prom"},
            "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-prom"},
                     "minReplicas": 1, "maxReplicas": 4,
                     "scalingRules": [{"metric": "queue_length", "threshold": 10, "source": "prometheus"}]}
        }),
    )
    .await;

    let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
    wait_until("the emulators, Prometheus and the controller to be available", Duration::from_secs(300), || async {
        let mut all = true;
        for name in ["llama-70b", "llama-prom", "prometheus", "vllm-autoscaler"] {
            let d = deployments.get(name).await.unwrap();
            all &= d.status.and_then(|s| s.available_replicas).unwrap_or(0) >= 1;
        }
        all
    })
    .await;

    // The controller resolves the model id and reports; nothing scales under light load.
    let policies: Api<VllmScalingPolicyResource> = Api::namespaced(client.clone(), &ns);
    wait_until("the seed policy's status", Duration::from_secs(60), || async {
        let p = policies.get("example-policy").await.unwrap();
        p.status
            .is_some_and(|s| s.reference.as_deref() == Some("Deployment/llama-70b") && s.current_replicas == Some(1))
    })
    .await;

    // Load: 30 waiting against a threshold of 10.
    set_queue(&client, &ns, "llama-70b", 30.0).await;
    set_queue(&client, &ns, "llama-prom", 30.0).await;
    for (deployment, policy) in [("llama-70b", "example-policy"), ("llama-prom", "llama-prom")] {
        wait_until(&format!("{deployment} to be scaled up"), Duration::from_secs(120), || async {
            deployments.get(deployment).await.unwrap().spec.replicas.unwrap_or(0) >= 3
        })
        .await;
        let status = policies.get(policy).await.unwrap().status.expect("a status");
        eprintln!("{policy}: {}", serde_json::to_string_pretty(&status).unwrap());
        assert_eq!(status.winning_rule.as_deref(), Some("queue_length"));
        assert!(status.desired_replicas.unwrap_or(0) >= 3);
        assert!(status.last_scale_time.is_some());
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready").expect("a Ready condition");
        assert_eq!(ready.status, "True", "{ready:?}");
        assert!(status.history.is_some_and(|h| !h.recommendations.is_empty()));
    }

    // Clean up (the CRD stays).
    namespaces.delete(&ns, &DeleteParams::default()).await.unwrap();
    for (kind, plural) in [("ClusterRole", "clusterroles"), ("ClusterRoleBinding", "clusterrolebindings")] {
        let api: Api<DynamicObject> = Api::all_with(
            client.clone(),
            &kube::api::ApiResource::from_gvk_with_plural(
                &kube::api::GroupVersionKind::gvk("rbac.authorization.k8s.io", "v1", kind),
                plural,
            ),
        );
        let _ = api.delete(&cluster_name, &DeleteParams::default()).await;
    }
}
