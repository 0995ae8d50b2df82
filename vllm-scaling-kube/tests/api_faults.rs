//! The controller against an API server that fails: `409` forever, `5xx`, requests that
//! hang past the request timeout, and a server that stops. For each: no panic, no
//! scale-down, the other policies go on, and the controller recovers when the fault ends.

mod common;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use vllm_scaling_core::{InMemoryMetrics, PodMetrics, ScalingMetrics, TargetId};
use vllm_scaling_kube::fake_api::{FakeApiServer, Fault};
use vllm_scaling_kube::{Context, ControllerConfig, reconcile, run};

/// The second tenant: its own namespace, Deployment, pod and policy.
const OTHER_NS: &str = "other";
const OTHER: &str = "mistral";

fn in_other(mut object: Value) -> Value {
    object["metadata"]["namespace"] = json!(OTHER_NS);
    object
}

fn other_objects() -> Vec<Value> {
    let mut policy = seed_json();
    policy["metadata"]["name"] = json!(OTHER);
    policy["spec"]["scaleTargetRef"]["name"] = json!("mistral-7b");
    vec![
        in_other(deployment("mistral-7b", "mistralai/Mistral-7B-v0.1", 1)),
        in_other(pod("mistral-7b", 0, true)),
        in_other(policy),
    ]
}

fn other_load(queue: f64) -> ScalingMetrics {
    ScalingMetrics {
        pods: vec![PodMetrics::running("mistral-7b-0").with("queue_length", queue).with("gpu_utilization", 80.0)],
        fleet: [("latency".to_owned(), 500.0)].into(),
        ..ScalingMetrics::default()
    }
}

fn replicas(server: &FakeApiServer, namespace: &str, name: &str) -> i64 {
    server.get("apps/v1", "Deployment", namespace, name).unwrap()["spec"]["replicas"].as_i64().unwrap()
}

async fn other_policy(server: &FakeApiServer) -> Arc<vllm_scaling_kube::VllmScalingPolicyResource> {
    let api: kube::Api<vllm_scaling_kube::VllmScalingPolicyResource> = kube::Api::namespaced(server.client(), OTHER_NS);
    Arc::new(api.get(OTHER).await.unwrap())
}

/// Each fault hits only the seed policy's requests (namespace `default`); the policy in
/// `other` must scale as if nothing happened.
#[tokio::test]
async fn every_api_fault_holds_replicas_spares_the_other_tenant_and_heals() {
    let hang = Duration::from_secs(3); // past the harness's 500 ms request timeout
    let cases: Vec<(&str, Vec<Fault>, &str, &str)> = vec![
        (
            "409 on every /scale write",
            vec![Fault::status(409).on("PATCH", "/namespaces/default/deployments/llama-70b/scale").times(usize::MAX)],
            "AbleToScale",
            "FailedUpdateScale",
        ),
        (
            "500 on every /scale write",
            vec![Fault::status(500).on("PATCH", "/namespaces/default/deployments/llama-70b/scale").times(usize::MAX)],
            "AbleToScale",
            "FailedUpdateScale",
        ),
        (
            "503 on every /scale read",
            vec![Fault::status(503).on("GET", "/namespaces/default/deployments/llama-70b/scale").times(usize::MAX)],
            "AbleToScale",
            "FailedGetScale",
        ),
        (
            "/scale write hangs, then 504",
            vec![
                Fault::status(504)
                    .after(hang)
                    .on("PATCH", "/namespaces/default/deployments/llama-70b/scale")
                    .times(usize::MAX),
            ],
            "AbleToScale",
            "FailedUpdateScale",
        ),
        (
            "the pod list hangs",
            vec![Fault::delay(hang).on("GET", "/api/v1/namespaces/default/pods").times(usize::MAX)],
            "ScalingActive",
            "FailedGetMetrics",
        ),
        (
            "500 on workload discovery lists",
            vec![Fault::status(500).on("GET", "/namespaces/default/deployments").times(usize::MAX)],
            "Ready",
            "FailedListWorkloads",
        ),
        (
            "500 on status writes and events",
            vec![
                Fault::status(500).on("PATCH", "/namespaces/default/vllmscalingpolicies").times(usize::MAX),
                Fault::status(500).on("POST", "/namespaces/default/events").times(usize::MAX),
            ],
            "",
            "",
        ),
    ];
    for (name, faults, condition, reason) in cases {
        let h = Harness::seed().await;
        for object in other_objects() {
            h.server.apply(object);
        }
        h.ctx.metrics_source().set(&TargetId::new(OTHER_NS, OTHER), other_load(30.0));
        // The seed policy would scale 2 -> 3.
        h.set_load(&h.ctx, 2, 15.0, 80.0, 500.0);
        for fault in faults {
            h.server.inject(fault);
        }
        let status_faulted = condition.is_empty();
        for round in 0..3 {
            h.reconcile(&h.ctx).await;
            reconcile(other_policy(&h.server).await, h.ctx.clone()).await.unwrap();
            if status_faulted {
                // Only the status and events fail: scaling itself goes on.
                assert_eq!(h.replicas("llama-70b"), 3, "{name}, round {round}");
            } else {
                assert_eq!(h.replicas("llama-70b"), 2, "{name}, round {round}: replicas held");
                let c = h.condition(condition);
                assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some("False"), Some(reason)), "{name}: {c}");
            }
            assert_eq!(replicas(&h.server, OTHER_NS, "mistral-7b"), 3, "{name}: the other tenant scaled");
            h.advance(15);
        }
        // The fault ends: the next evaluation acts, and the status is written again.
        h.server.clear_faults();
        h.advance(15);
        h.reconcile(&h.ctx).await;
        assert_eq!(h.replicas("llama-70b"), 3, "{name}: recovered");
        assert_eq!(h.condition("Ready")["status"], "True", "{name}");
        assert_eq!(h.condition("ScalingActive")["status"], "True", "{name}");
        assert_eq!(h.status()["currentReplicas"], 3, "{name}");
    }
}

/// With zero stabilization a low load scales down at once; while the pod list fails the
/// rules have no values and nothing is scaled down.
#[tokio::test]
async fn a_failing_pod_list_never_scales_down() {
    let h = Harness::seed().await;
    h.server.merge(
        "autoscaler.production-stack/v1alpha1",
        "vLLMScalingPolicy",
        NS,
        POLICY,
        &json!({"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}),
    );
    h.set_load(&h.ctx, 2, 1.0, 10.0, 100.0);
    for fault in [
        Fault::status(500).on("GET", "/api/v1/namespaces/default/pods").times(3),
        Fault::status(504).after(Duration::from_secs(3)).on("GET", "/api/v1/namespaces/default/pods").times(3),
    ] {
        h.server.inject(fault);
        for _ in 0..3 {
            h.reconcile(&h.ctx).await;
            assert_eq!(h.replicas("llama-70b"), 2);
            assert_eq!(h.condition("ScalingActive")["reason"], "FailedGetMetrics");
            h.advance(15);
        }
    }
    h.reconcile(&h.ctx).await;
    assert_eq!(h.replicas("llama-70b"), 1, "the control: with the pods listed it scales down");
}

async fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + timeout;
    while !done() {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// The whole loop (watch, schedule) while the API server is stopped, then back.
#[tokio::test]
async fn a_stopped_api_server_holds_everything_and_the_loop_recovers() {
    let server = FakeApiServer::start().await.unwrap();
    server.apply(deployment("llama-70b", MODEL, 2));
    for i in 0..2 {
        server.apply(pod("llama-70b", i, true));
    }
    server.apply(seed_json());
    for object in other_objects() {
        server.apply(object);
    }
    let config = ControllerConfig::default()
        .with_sync_period(Duration::from_millis(200))
        .with_request_timeout(Duration::from_millis(300));
    let ctx = Arc::new(Context::new(server.client(), InMemoryMetrics::default(), config).without_gpu_exporters());
    let seed_target = TargetId::new(NS, POLICY);
    let load = |queue: f64| ScalingMetrics {
        pods: (0..2)
            .map(|i| {
                PodMetrics::running(format!("llama-70b-{i}")).with("queue_length", queue).with("gpu_utilization", 80.0)
            })
            .collect(),
        fleet: [("latency".to_owned(), 500.0)].into(),
        ..ScalingMetrics::default()
    };
    ctx.metrics_source().set(&seed_target, load(15.0));
    ctx.metrics_source().set(&TargetId::new(OTHER_NS, OTHER), other_load(30.0));
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(run(ctx.clone(), ready.clone(), async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let both_scaled = |llama: i64, mistral: i64| {
        let server = &server;
        move || replicas(server, NS, "llama-70b") == llama && replicas(server, OTHER_NS, "mistral-7b") == mistral
    };
    wait_for("both policies' first rescale", Duration::from_secs(10), both_scaled(3, 3)).await;

    // Stopped for 1.5 s (several periods): the load drops meanwhile.
    server.stop_serving();
    ctx.metrics_source().set(&seed_target, load(1.0));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!controller.is_finished(), "the controller is still running");
    server.clear_requests();
    // Back, with high load: both act again (the legacy 300 s window holds the seed policy's
    // scale-down, so the drop while stopped scales nothing down).
    ctx.metrics_source().set(&seed_target, load(25.0));
    ctx.metrics_source().set(&TargetId::new(OTHER_NS, OTHER), other_load(50.0));
    server.resume_serving();
    wait_for("both policies acting again", Duration::from_secs(15), both_scaled(5, 5)).await;
    assert!(
        server
            .requests_to("PATCH", "/deployments/llama-70b/scale")
            .iter()
            .all(|r| { r.body.as_ref().and_then(|b| b["spec"]["replicas"].as_i64()).is_some_and(|n| n >= 3) }),
        "no scale-down"
    );

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), controller).await.expect("the controller stops").unwrap();
}
