//! `KubeScale` (the core's `AdjustReplicas`) and `KubePolicies` (`GetScalingPolicy`)
//! against the in-process API server: the exact requests, 409 handling, target
//! resolution, policy lookup, and the core's `reconcile` driven through both.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use vllm_scaling_core::{
    AdjustReplicas, Engine, GetScalingPolicy, InMemoryMetrics, PodMetrics, ReconcileError, ScaleTargetRef,
    ScalingMetrics, TargetId, Timestamp, reconcile,
};
use vllm_scaling_kube::fake_api::{FakeApiServer, Fault, KindInfo, RecordedRequest, ScaleSpec};
use vllm_scaling_kube::{KubePolicies, KubeScale, PolicyError, ScaleError};

const SCALE_PATH: &str = "/apis/apps/v1/namespaces/default/deployments/llama-70b/scale";

/// The server of the controller tests: `llama-70b` serving the seed's model (2 replicas,
/// 2 pods), the decoy `mistral-7b`, and the seed policy.
async fn server() -> FakeApiServer {
    let server = FakeApiServer::start().await.unwrap();
    server.apply(deployment("llama-70b", MODEL, 2));
    server.apply(deployment("mistral-7b", "mistralai/Mistral-7B-v0.1", 1));
    for i in 0..2 {
        server.apply(pod("llama-70b", i, true));
    }
    server.apply(pod("mistral-7b", 0, true));
    server.apply(seed_json());
    server
}

/// No list caching, so every step's requests show.
fn scale(server: &FakeApiServer) -> KubeScale {
    KubeScale::new(server.client()).with_request_timeout(Duration::from_millis(500)).with_cache_ttl(Duration::ZERO)
}

fn deployment_ref(name: &str) -> ScaleTargetRef {
    ScaleTargetRef { api_version: Some("apps/v1".into()), kind: "Deployment".into(), name: name.into() }
}

fn calls(requests: &[RecordedRequest]) -> Vec<String> {
    requests.iter().map(|r| format!("{} {}", r.method, r.path)).collect()
}

fn replicas(server: &FakeApiServer, name: &str) -> i64 {
    server.get("apps/v1", "Deployment", NS, name).unwrap()["spec"]["replicas"].as_i64().unwrap()
}

fn rv(server: &FakeApiServer, name: &str) -> serde_json::Value {
    server.get("apps/v1", "Deployment", NS, name).unwrap()["metadata"]["resourceVersion"].clone()
}

#[tokio::test]
async fn model_id_target_reads_and_patches_scale_with_the_read_version() {
    let server = server().await;
    let kube = scale(&server);
    let target = TargetId::new(NS, POLICY);
    let by_model = deployment_ref(MODEL);

    let current = kube.get_scale(&target, Some(&by_model)).await.unwrap();
    assert_eq!((current.replicas, current.status_replicas), (2, Some(2)));
    assert_eq!(
        calls(&server.requests()),
        ["GET /apis/apps/v1", "GET /apis/apps/v1/namespaces/default/deployments", &format!("GET {SCALE_PATH}"),],
        "discovery of the kind, the list to match the model id, the scale read"
    );

    let read_version = rv(&server, "llama-70b");
    server.clear_requests();
    kube.adjust_replicas(&target, Some(&by_model), 4).await.unwrap();
    let requests = server.requests();
    // Discovery is cached; the model id is matched again (lists are not cached here); the
    // write reuses the reading of get_scale as its precondition: no second read.
    assert_eq!(
        calls(&requests),
        ["GET /apis/apps/v1/namespaces/default/deployments", &format!("PATCH {SCALE_PATH}")],
        "{requests:#?}"
    );
    let patch = &requests[1];
    assert_eq!(patch.content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(patch.body, Some(json!({"metadata": {"resourceVersion": read_version}, "spec": {"replicas": 4}})));
    assert_eq!(replicas(&server, "llama-70b"), 4);
    assert_eq!(replicas(&server, "mistral-7b"), 1, "the decoy serving another model is untouched");

    // Without a preceding get_scale the adapter reads first, then patches.
    server.clear_requests();
    kube.adjust_replicas(&target, Some(&deployment_ref("llama-70b")), 5).await.unwrap();
    assert_eq!(calls(&server.requests()), [format!("GET {SCALE_PATH}"), format!("PATCH {SCALE_PATH}")]);
    assert_eq!(replicas(&server, "llama-70b"), 5);
}

#[tokio::test]
async fn statefulsets_and_custom_kinds_are_found_through_discovery() {
    let server = server().await;
    let mut sts = deployment("llama-sts", MODEL, 3);
    sts["kind"] = json!("StatefulSet");
    server.apply(sts);
    server.add_kind(
        KindInfo::new("serving.example.com/v1", "InferencePool", "inferencepools", true).with_status().with_scale(
            ScaleSpec {
                spec_replicas: "/spec/size".into(),
                status_replicas: "/status/size".into(),
                selector: "/status/selector".into(),
            },
        ),
    );
    server.apply(json!({
        "apiVersion": "serving.example.com/v1", "kind": "InferencePool",
        "metadata": {"name": "pool", "namespace": NS},
        "spec": {"size": 7}, "status": {"size": 6, "selector": "app=pool"}
    }));
    let kube = scale(&server);
    let target = TargetId::new(NS, POLICY);

    // A StatefulSet needs no apiVersion: apps/v1 is its default.
    let sts_ref = ScaleTargetRef { api_version: None, kind: "StatefulSet".into(), name: "llama-sts".into() };
    assert_eq!(kube.get_scale(&target, Some(&sts_ref)).await.unwrap().replicas, 3);
    kube.adjust_replicas(&target, Some(&sts_ref), 1).await.unwrap();
    assert_eq!(server.get("apps/v1", "StatefulSet", NS, "llama-sts").unwrap()["spec"]["replicas"], 1);

    server.clear_requests();
    let pool = ScaleTargetRef {
        api_version: Some("serving.example.com/v1".into()),
        kind: "InferencePool".into(),
        name: "pool".into(),
    };
    let (resolved, reading) = kube.resolve_and_read(&target, Some(&pool)).await.unwrap();
    assert_eq!(resolved.plural(), "inferencepools");
    assert_eq!(
        (reading.replicas, reading.status_replicas, reading.selector.as_deref()),
        (7, Some(6), Some("app=pool"))
    );
    kube.adjust_replicas(&target, Some(&pool), 9).await.unwrap();
    assert_eq!(
        calls(&server.requests()),
        [
            "GET /apis/serving.example.com/v1",
            "GET /apis/serving.example.com/v1/namespaces/default/inferencepools/pool/scale",
            "PATCH /apis/serving.example.com/v1/namespaces/default/inferencepools/pool/scale",
        ]
    );
    assert_eq!(server.get("serving.example.com/v1", "InferencePool", NS, "pool").unwrap()["spec"]["size"], 9);

    // The pods behind a reading: listed by its selector.
    let (_, reading) = kube.resolve_and_read(&target, Some(&deployment_ref("llama-70b"))).await.unwrap();
    let pods = kube.pods(NS, &reading).await.unwrap();
    assert_eq!(pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["llama-70b-0", "llama-70b-1"]);
}

#[tokio::test]
async fn a_conflict_is_retried_while_the_replicas_are_unchanged() {
    let server = server().await;
    let kube = scale(&server);
    let target = TargetId::new(NS, POLICY);
    let by_name = deployment_ref("llama-70b");
    kube.get_scale(&target, Some(&by_name)).await.unwrap();
    // Something else changes the object, not its replicas: the read version is stale.
    server.merge("apps/v1", "Deployment", NS, "llama-70b", &json!({"metadata": {"labels": {"touched": "yes"}}}));
    let fresh_version = rv(&server, "llama-70b");
    server.clear_requests();

    kube.adjust_replicas(&target, Some(&by_name), 3).await.unwrap();
    let requests = server.requests();
    assert_eq!(
        calls(&requests),
        [format!("PATCH {SCALE_PATH}"), format!("GET {SCALE_PATH}"), format!("PATCH {SCALE_PATH}")],
        "409, re-read, retry"
    );
    assert_eq!(
        requests[2].body,
        Some(json!({"metadata": {"resourceVersion": fresh_version}, "spec": {"replicas": 3}}))
    );
    assert_eq!(replicas(&server, "llama-70b"), 3);
}

#[tokio::test]
async fn a_conflict_over_changed_replicas_gives_up_instead_of_overwriting() {
    let server = server().await;
    let kube = scale(&server);
    let target = TargetId::new(NS, POLICY);
    let by_name = deployment_ref("llama-70b");
    kube.get_scale(&target, Some(&by_name)).await.unwrap();
    // Someone scales by hand between the read and the write.
    server.merge("apps/v1", "Deployment", NS, "llama-70b", &json!({"spec": {"replicas": 6}}));
    server.clear_requests();

    let err = kube.adjust_replicas(&target, Some(&by_name), 3).await.unwrap_err();
    assert!(matches!(err, ScaleError::Moved { from: 2, now: 6, to: 3, .. }), "{err:?}");
    assert_eq!(err.reason(), "ScaleChanged");
    assert_eq!(err.to_string(), "the replicas of Deployment llama-70b changed from 2 to 6 while scaling to 3");
    assert_eq!(calls(&server.requests()), [format!("PATCH {SCALE_PATH}"), format!("GET {SCALE_PATH}")]);
    assert_eq!(replicas(&server, "llama-70b"), 6, "the hand-set count stands");
}

#[tokio::test]
async fn conflicts_past_the_retry_budget_fail_the_write() {
    let server = server().await;
    let kube = scale(&server).with_conflict_retries(2);
    let target = TargetId::new(NS, POLICY);
    server.inject(Fault::status(409).on("PATCH", "/scale").times(usize::MAX));
    let err = kube.adjust_replicas(&target, Some(&deployment_ref("llama-70b")), 3).await.unwrap_err();
    assert_eq!(err.reason(), "FailedUpdateScale");
    assert!(
        err.to_string().starts_with("writing the scale of Deployment llama-70b: the API server answered 409"),
        "{err}"
    );
    assert_eq!(server.requests_to("PATCH", "/scale").len(), 3, "the first try and two retries");
    assert_eq!(replicas(&server, "llama-70b"), 2);
}

#[tokio::test]
async fn unknown_kinds_and_kinds_without_scale_are_clear_errors() {
    let server = server().await;
    let kube = scale(&server);
    let target = TargetId::new(NS, POLICY);

    let unknown_group =
        ScaleTargetRef { api_version: Some("nope.example.com/v1".into()), kind: "Pool".into(), name: "x".into() };
    let err = kube.get_scale(&target, Some(&unknown_group)).await.unwrap_err();
    assert_eq!(err.reason(), "UnknownKind");
    assert_eq!(err.to_string(), "the API server does not serve nope.example.com/v1");

    let unknown_kind = ScaleTargetRef { api_version: Some("apps/v1".into()), kind: "Rollout".into(), name: "x".into() };
    let err = kube.get_scale(&target, Some(&unknown_kind)).await.unwrap_err();
    assert_eq!(err.to_string(), "the API server does not serve kind Rollout in apps/v1");

    let no_version = ScaleTargetRef { api_version: None, kind: "Rollout".into(), name: "x".into() };
    let err = kube.get_scale(&target, Some(&no_version)).await.unwrap_err();
    assert!(matches!(err, ScaleError::MissingApiVersion { .. }), "{err:?}");
    assert_eq!(err.to_string(), "spec.scaleTargetRef.apiVersion: required for kind Rollout");

    let daemonset = ScaleTargetRef { api_version: Some("apps/v1".into()), kind: "DaemonSet".into(), name: "x".into() };
    let err = kube.adjust_replicas(&target, Some(&daemonset), 2).await.unwrap_err();
    assert_eq!(err.reason(), "NoScaleSubresource");
    assert_eq!(err.to_string(), "DaemonSet (apps/v1) has no scale subresource, so it cannot be scaled");

    let missing = deployment_ref("gone");
    let err = kube.get_scale(&target, Some(&missing)).await.unwrap_err();
    assert_eq!(err.reason(), "TargetNotFound");
    assert_eq!(err.to_string(), "Deployment default/gone does not exist");
    assert!(server.requests_to("PATCH", "").is_empty(), "no error path writes anything");
}

#[tokio::test]
async fn model_ids_and_annotations_resolve_to_one_workload_or_say_why_not() {
    let server = server().await;
    let kube = scale(&server);

    let err = kube.resolve(NS, POLICY, Some(&deployment_ref("org/not-served"))).await.unwrap_err();
    assert_eq!(err.reason(), "ModelNotServed");
    assert!(err.to_string().contains("no Deployment in namespace default serves it"), "{err}");
    assert!(err.to_string().contains("in 2 workloads"), "{err}");

    server.apply(deployment("llama-70b-b", MODEL, 1));
    let err = kube.resolve(NS, POLICY, Some(&deployment_ref(MODEL))).await.unwrap_err();
    assert_eq!(err.reason(), "AmbiguousModel");
    assert!(err.to_string().contains("(llama-70b, llama-70b-b)"), "{err}");

    // No scaleTargetRef: the workload annotated with the policy's name.
    let err = kube.resolve(NS, "annotated", None).await.unwrap_err();
    assert_eq!(err.reason(), "NoTarget");
    let mut annotated = deployment("mistral-7b", "mistralai/Mistral-7B-v0.1", 1);
    annotated["metadata"]["annotations"] = json!({"autoscaler.production-stack/policy": "annotated"});
    server.apply(annotated);
    let target = kube.resolve(NS, "annotated", None).await.unwrap();
    assert_eq!((target.target.kind.as_str(), target.target.name.as_str()), ("Deployment", "mistral-7b"));
    // Through the port: TargetId's name is the policy's.
    let got = kube.get_scale(&TargetId::new(NS, "annotated"), None).await.unwrap();
    assert_eq!(got.replicas, 1);
    // An empty namespace is the client's default one.
    assert_eq!(kube.get_scale(&TargetId::new("", "annotated"), None).await.unwrap().replicas, 1);
}

#[tokio::test]
async fn policies_by_name_and_by_model_id() {
    let server = server().await;
    // A second policy whose target is an object name: found by the model its workload serves.
    server.apply(json!({
        "apiVersion": "autoscaler.production-stack/v1alpha1", "kind": "vLLMScalingPolicy",
        "metadata": {"name": "mistral", "namespace": NS},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "mistral-7b"},
            "minReplicas": 1, "maxReplicas": 4,
            "scalingRules": [{"metric": "queue_length", "threshold": 5}]
        }
    }));
    let policies = KubePolicies::new(server.client()).with_request_timeout(Duration::from_millis(500));

    server.clear_requests();
    let seed = policies.get_scaling_policy(&TargetId::new(NS, POLICY)).await.unwrap().expect("the seed policy");
    assert_eq!(seed.spec.max_replicas, 10);
    assert_eq!(
        calls(&server.requests()),
        ["GET /apis/autoscaler.production-stack/v1alpha1/namespaces/default/vllmscalingpolicies/example-policy"]
    );

    // The seed's model id is its scaleTargetRef.name.
    let by_model = policies.get_scaling_policy(&TargetId::new(NS, MODEL)).await.unwrap().expect("by model");
    assert_eq!(by_model.spec.max_replicas, 10);
    // Mistral's policy names its Deployment; the Deployment serves the model.
    let mistral = policies.by_model(NS, "mistralai/Mistral-7B-v0.1").await.unwrap().expect("mistral by model");
    assert_eq!(mistral.metadata.name.as_deref(), Some("mistral"));

    // Nothing: Ok(None), and the core's reconcile reports it as "no policy".
    assert!(policies.get_scaling_policy(&TargetId::new(NS, "no-such-policy")).await.unwrap().is_none());
    assert!(policies.by_model(NS, "org/unknown-model").await.unwrap().is_none());
    let mut engine = Engine::new(seed.validate().unwrap());
    let err = reconcile(
        &mut engine,
        &TargetId::new(NS, "no-such-policy"),
        Timestamp::from_millis(T0_MS),
        &policies,
        &scale(&server),
        &InMemoryMetrics::default(),
        Vec::new(),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, ReconcileError::NoPolicy(_)), "{err:?}");
    assert_eq!(err.to_string(), "no policy for default/no-such-policy");

    // Two policies for one model.
    let mut twin = seed_json();
    twin["metadata"]["name"] = json!("twin");
    server.apply(twin);
    let err = policies.by_model(NS, MODEL).await.unwrap_err();
    assert!(matches!(err, PolicyError::Ambiguous { .. }), "{err:?}");
    assert!(err.to_string().contains("(example-policy, twin)"), "{err}");

    // A stored object that does not decode: an error by name, skipped by model.
    server.apply(json!({
        "apiVersion": "autoscaler.production-stack/v1alpha1", "kind": "vLLMScalingPolicy",
        "metadata": {"name": "broken", "namespace": NS},
        "spec": {"minReplicas": "one", "maxReplicas": 2, "scalingRules": []}
    }));
    let err = policies.by_name(NS, "broken").await.unwrap_err();
    assert!(matches!(err, PolicyError::Decode { .. }), "{err:?}");
    assert!(
        err.to_string().starts_with("the vLLMScalingPolicy default/broken does not decode: spec.minReplicas: "),
        "{err}"
    );
    assert!(policies.by_model(NS, "mistralai/Mistral-7B-v0.1").await.unwrap().is_some());

    // A failing API server is an error, not "no policy".
    server.inject(Fault::status(500).on("GET", "/vllmscalingpolicies"));
    let err = policies.by_name(NS, POLICY).await.unwrap_err();
    assert!(matches!(err, PolicyError::Request { .. }), "{err:?}");
}

#[tokio::test]
async fn the_cores_reconcile_scales_through_both_adapters() {
    let server = server().await;
    let kube = scale(&server);
    let policies = KubePolicies::new(server.client());
    let metrics = InMemoryMetrics::default();
    let target = TargetId::new(NS, POLICY);
    // 15 waiting per pod against 10: ceil(1.5 × 2) = 3.
    metrics.set(
        &target,
        ScalingMetrics {
            pods: (0..2)
                .map(|i| {
                    PodMetrics::running(format!("llama-70b-{i}"))
                        .with("queue_length", 15.0)
                        .with("gpu_utilization", 75.0)
                })
                .collect(),
            fleet: [("latency".to_owned(), 500.0)].into(),
            ..ScalingMetrics::default()
        },
    );
    let seed = policies.get_scaling_policy(&target).await.unwrap().unwrap();
    let mut engine = Engine::new(seed.validate().unwrap());
    server.clear_requests();
    let decision =
        reconcile(&mut engine, &target, Timestamp::from_millis(T0_MS), &policies, &kube, &metrics, Vec::new())
            .await
            .unwrap();
    assert_eq!((decision.current_replicas, decision.desired_replicas, decision.actuate), (2, 3, true));
    assert_eq!(replicas(&server, "llama-70b"), 3);
    let writes: Vec<String> = calls(&server.requests()).into_iter().filter(|c| !c.starts_with("GET")).collect();
    assert_eq!(writes, [format!("PATCH {SCALE_PATH}")], "the only write is the /scale patch");
}
