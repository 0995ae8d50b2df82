//! The controller against the in-process API server: the exact requests it sends, the
//! status it writes, and what it refuses to do.

mod common;

use std::time::Duration;

use common::*;
use serde_json::json;
use vllm_scaling_core::InMemoryMetrics;
use vllm_scaling_kube::fake_api::{FakeApiServer, Fault, keda_scaled_object_kind};
use vllm_scaling_kube::{ControllerConfig, Leadership, reconcile};

const SCALE_PATH: &str = "/apis/apps/v1/namespaces/default/deployments/llama-70b/scale";

#[tokio::test]
async fn seed_policy_resolves_the_model_and_patches_scale_only() {
    let h = Harness::seed().await;
    // 15 waiting per pod against 10: ceil(1.5 × 2) = 3. GPU 80 % is within 10 % of 75.
    // Fleet latency 500 ms against 1000 ms proposes ceil(0.5 × 2) = 1.
    h.set_load(&h.ctx, 2, 15.0, 80.0, 500.0);
    let rv_before =
        h.server.get("apps/v1", "Deployment", NS, "llama-70b").unwrap()["metadata"]["resourceVersion"].clone();
    let action = h.reconcile(&h.ctx).await;

    // Exactly one write to the workload, a merge patch of /scale with the read version.
    let writes = h.workload_writes();
    assert_eq!(writes.len(), 1, "{writes:#?}");
    assert_eq!(writes[0].method, "PATCH");
    assert_eq!(writes[0].path, SCALE_PATH);
    assert_eq!(writes[0].content_type.as_deref(), Some("application/merge-patch+json"));
    assert_eq!(writes[0].body, Some(json!({"metadata": {"resourceVersion": rv_before}, "spec": {"replicas": 3}})));
    assert_eq!(h.replicas("llama-70b"), 3);
    assert_eq!(h.replicas("mistral-7b"), 1, "the decoy serving another model is untouched");

    // The status.
    let status = h.status();
    assert_eq!(status["currentReplicas"], 3);
    assert_eq!(status["desiredReplicas"], 3);
    assert_eq!(status["winningRule"], "queue_length");
    assert_eq!(status["reference"], "Deployment/llama-70b");
    assert_eq!(status["target"], json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-70b"}));
    assert_eq!(status["selector"], "app=llama-70b");
    assert_eq!(status["observedGeneration"], 1);
    assert!(status["lastScaleTime"].is_string());
    let rules = status["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 3);
    assert_eq!(
        rules[1],
        json!({"name": "queue_length", "metric": "queue_length", "observed": 15.0, "threshold": 10.0, "targetType": "AverageValue", "proposal": 3, "status": "ok"})
    );
    assert_eq!(rules[2]["observed"], 500.0);
    assert_eq!(rules[2]["proposal"], 1);
    assert_eq!(h.condition("Ready")["status"], "True");
    assert_eq!(h.condition("AbleToScale")["reason"], "SucceededRescale");
    assert_eq!(h.condition("ScalingActive")["reason"], "ValidMetricFound");
    assert_eq!(h.condition("ScalingLimited")["status"], "False");
    assert_eq!(status["history"]["recommendations"][0]["replicas"], 2, "the fresh engine seeds with the current count");
    assert_eq!(status["history"]["recommendations"][0]["at"], T0_MS);
    assert_eq!(status["pendingRescale"], json!({"from": 2, "to": 3, "decidedAtMs": T0_MS}));

    // The event, on the policy.
    let events = h.events();
    let rescale = events.iter().find(|e| e["reason"] == "SuccessfulRescale").expect("a rescale event");
    assert_eq!(rescale["type"], "Normal");
    assert_eq!(rescale["regarding"]["name"], POLICY);
    assert_eq!(rescale["regarding"]["kind"], "vLLMScalingPolicy");
    assert!(
        rescale["note"].as_str().unwrap().starts_with("New size: 3; reason: scale up 2 -> 3"),
        "{}",
        rescale["note"]
    );

    // Next evaluation one sync period later.
    assert_eq!(action, kube::runtime::controller::Action::requeue(Duration::from_secs(15)));

    // /metrics.
    let text = h.ctx.telemetry().encode();
    assert!(
        text.contains(
            r#"vllm_autoscaler_scale_events_total{namespace="default",policy="example-policy",direction="up"} 1"#
        ),
        "{text}"
    );
    assert!(text.contains(r#"vllm_autoscaler_rule_observed{namespace="default",policy="example-policy",rule="queue_length",metric="queue_length"} 15.0"#), "{text}");
    assert!(
        text.contains(r#"vllm_autoscaler_desired_replicas{namespace="default",policy="example-policy"} 3"#),
        "{text}"
    );
}

#[tokio::test]
async fn status_echo_does_not_trigger_an_early_evaluation() {
    let h = Harness::seed().await;
    h.set_load(&h.ctx, 2, 1.0, 10.0, 100.0);
    h.reconcile(&h.ctx).await;
    // The watch delivers our own status write: same generation, before the next evaluation.
    h.advance(3);
    let policy = h.policy().await;
    h.server.clear_requests();
    let action = reconcile(policy, h.ctx.clone()).await.unwrap();
    assert!(h.server.requests().is_empty(), "{:#?}", h.server.requests());
    assert_eq!(action, kube::runtime::controller::Action::requeue(Duration::from_secs(12)));
    // An edited spec (new generation) is evaluated at once.
    h.server.merge(
        "autoscaler.production-stack/v1alpha1",
        "vLLMScalingPolicy",
        NS,
        POLICY,
        &json!({"spec": {"maxReplicas": 8}}),
    );
    h.reconcile(&h.ctx).await;
    assert!(!h.server.requests_to("PATCH", "/status").is_empty());
    assert_eq!(h.status()["observedGeneration"], 2);
}

#[tokio::test]
async fn observe_mode_and_dry_run_never_patch() {
    let h = Harness::seed().await;
    h.server.merge(
        "autoscaler.production-stack/v1alpha1",
        "vLLMScalingPolicy",
        NS,
        POLICY,
        &json!({"spec": {"mode": "observe"}}),
    );
    h.set_load(&h.ctx, 2, 40.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    assert!(h.scale_patches().is_empty());
    assert!(h.workload_writes().is_empty());
    assert_eq!(h.replicas("llama-70b"), 2);
    assert_eq!(h.status()["desiredReplicas"], 4);
    assert_eq!(h.condition("AbleToScale")["reason"], "ObserveMode");
    assert!(h.status()["explanation"].as_str().unwrap().contains("observe mode: not applied"));

    let h = Harness::with_server(FakeApiServer::start().await.unwrap(), ControllerConfig::default().with_dry_run(true))
        .await;
    h.server.apply(deployment("llama-70b", MODEL, 2));
    for i in 0..2 {
        h.server.apply(pod("llama-70b", i, true));
    }
    h.server.apply(seed_json());
    h.set_load(&h.ctx, 2, 40.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    assert!(h.workload_writes().is_empty());
    assert_eq!(h.condition("AbleToScale")["reason"], "DryRun");
    assert_eq!(h.status()["desiredReplicas"], 4);
}

#[tokio::test]
async fn a_conflict_is_retried_with_the_fresh_resource_version() {
    let h = Harness::seed().await;
    h.server.inject(Fault::status(409).on("PATCH", "/deployments/llama-70b/scale"));
    h.set_load(&h.ctx, 2, 15.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    let patches = h.scale_patches();
    assert_eq!(patches.len(), 2, "{patches:#?}");
    assert_eq!(patches[0].body, patches[1].body, "nothing changed in between, so the same version is retried");
    assert_eq!(
        h.server.requests_to("GET", "/deployments/llama-70b/scale").len(),
        2,
        "read, then re-read after the conflict"
    );
    assert_eq!(h.replicas("llama-70b"), 3);
    assert_eq!(h.condition("AbleToScale")["reason"], "SucceededRescale");
}

#[tokio::test]
async fn a_conflict_from_someone_else_scaling_is_not_overwritten() {
    let h = Harness::seed().await;
    // The PATCH hangs 300 ms then conflicts; meanwhile someone scales to 5.
    h.server.inject(Fault::status(409).after(Duration::from_millis(300)).on("PATCH", "/deployments/llama-70b/scale"));
    h.set_load(&h.ctx, 2, 15.0, 80.0, 500.0);
    let (ctx, policy) = (h.ctx.clone(), h.policy().await);
    let evaluation = tokio::spawn(async move { reconcile(policy, ctx).await.unwrap() });
    tokio::time::sleep(Duration::from_millis(100)).await;
    h.server.merge("apps/v1", "Deployment", NS, "llama-70b", &json!({"spec": {"replicas": 5}}));
    let action = evaluation.await.unwrap();
    assert_eq!(h.scale_patches().len(), 1);
    assert_eq!(h.replicas("llama-70b"), 5, "the other writer's count stands");
    assert_eq!(h.condition("AbleToScale")["reason"], "ScaleChanged");
    assert_eq!(action, kube::runtime::controller::Action::requeue(Duration::from_secs(1)), "re-evaluated soon");
}

#[tokio::test]
async fn a_server_error_or_timeout_leaves_replicas_and_sets_a_condition() {
    let h = Harness::seed().await;
    h.server.inject(Fault::status(500).on("PATCH", "/scale").times(usize::MAX));
    h.set_load(&h.ctx, 2, 15.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    assert_eq!(h.replicas("llama-70b"), 2);
    let c = h.condition("AbleToScale");
    assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some("False"), Some("FailedUpdateScale")));
    assert!(c["message"].as_str().unwrap().contains("500"), "{c}");
    assert_eq!(h.status()["currentReplicas"], 2);
    assert!(h.status()["lastScaleTime"].is_null());
    assert!(h.event_reasons().contains(&"FailedRescale".to_owned()));
    assert!(h.ctx.telemetry().encode().contains(
        r#"vllm_autoscaler_errors_total{namespace="default",policy="example-policy",kind="update_scale"} 1"#
    ));

    // A hung API server: the request times out (500 ms here) and is never applied.
    let h = Harness::seed().await;
    h.server.inject(Fault::status(504).after(Duration::from_secs(2)).on("PATCH", "/scale"));
    h.set_load(&h.ctx, 2, 15.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    let c = h.condition("AbleToScale");
    assert_eq!(c["reason"], "FailedUpdateScale");
    assert!(c["message"].as_str().unwrap().contains("did not answer within"), "{c}");
    assert_eq!(h.replicas("llama-70b"), 2);

    // Reading the scale fails: no write at all.
    let h = Harness::seed().await;
    // (kube's client itself retries 503s, so the API server keeps failing here.)
    h.server.inject(Fault::status(503).on("GET", "/deployments/llama-70b/scale").times(usize::MAX));
    h.set_load(&h.ctx, 2, 15.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    assert!(h.scale_patches().is_empty(), "{:#?}", h.server.requests());
    assert_eq!(h.condition("AbleToScale")["reason"], "FailedGetScale");
    assert!(h.event_reasons().contains(&"FailedGetScale".to_owned()));
}

#[tokio::test]
async fn a_metrics_backend_that_is_down_keeps_replicas() {
    let h = Harness::seed().await;
    h.ctx.metrics_source().fail(&Harness::target(), "connection refused (127.0.0.1:9090)");
    h.reconcile(&h.ctx).await;
    // Time passes beyond every window: still nothing is written.
    for _ in 0..30 {
        h.advance(15);
        h.reconcile(&h.ctx).await;
    }
    assert!(h.scale_patches().is_empty());
    assert_eq!(h.replicas("llama-70b"), 2);
    let c = h.condition("ScalingActive");
    assert_eq!((c["status"].as_str(), c["reason"].as_str()), (Some("False"), Some("FailedGetMetrics")));
    assert!(c["message"].as_str().unwrap().contains("connection refused"), "{c}");
    assert_eq!(h.status()["rules"][0]["status"], "missing");
    assert!(h.event_reasons().contains(&"FailedGetMetrics".to_owned()));
    let text = h.ctx.telemetry().encode();
    assert!(text.contains(r#"vllm_autoscaler_rule_missing_seconds{namespace="default",policy="example-policy",rule="queue_length",metric="queue_length"} 450.0"#), "{text}");
    assert!(!text.contains("vllm_autoscaler_rule_observed{"), "no stale observed values: {text}");
}

#[tokio::test]
async fn scale_down_waits_for_the_window_across_a_restart() {
    let h = Harness::seed().await;
    // High load: 20 waiting per pod against 10 proposes 4 (the legacy cap is also 4).
    h.set_load(&h.ctx, 2, 20.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    assert_eq!(h.replicas("llama-70b"), 4);
    for i in 2..4 {
        h.server.apply(pod("llama-70b", i, true));
    }
    // Load falls 60 s later: the 300 s scale-down window holds 4.
    h.advance(60);
    h.set_load(&h.ctx, 4, 1.0, 10.0, 100.0);
    h.reconcile(&h.ctx).await;
    assert_eq!(h.replicas("llama-70b"), 4);
    assert_eq!(h.status()["limitedBy"], "scaleDownStabilization");

    // The controller restarts 120 s after the scale-up, with only the status to go on.
    h.advance(60);
    let restarted = h.restarted(ControllerConfig::default());
    h.set_load(&restarted, 4, 1.0, 10.0, 100.0);
    while h.now().as_millis() <= T0_MS + 300_000 {
        h.reconcile(&restarted).await;
        assert_eq!(h.replicas("llama-70b"), 4, "inside the window at {}", h.now());
        assert_eq!(h.status()["limitedBy"], "scaleDownStabilization");
        h.advance(15);
    }
    // t0 + 315 s: the recommendation of 4 made at t0 has left the window, so the restarted
    // controller scales down exactly when an uninterrupted one would (a controller that
    // forgot its history would hold until restart + 300 s).
    assert_eq!(h.now().as_millis(), T0_MS + 315_000);
    h.reconcile(&restarted).await;
    assert_eq!(h.replicas("llama-70b"), 1);
}

#[tokio::test]
async fn restored_rate_limits_survive_a_restart() {
    let h = Harness::seed().await;
    // At most one pod removed per 10 minutes, no stabilization.
    h.server.merge(
        "autoscaler.production-stack/v1alpha1",
        "vLLMScalingPolicy",
        NS,
        POLICY,
        &json!({"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Pods", "value": 1, "periodSeconds": 600}]}}}}),
    );
    h.server.merge("apps/v1", "Deployment", NS, "llama-70b", &json!({"spec": {"replicas": 4}}));
    for i in 2..4 {
        h.server.apply(pod("llama-70b", i, true));
    }
    h.set_load(&h.ctx, 4, 1.0, 10.0, 100.0);
    h.reconcile(&h.ctx).await;
    assert_eq!(h.replicas("llama-70b"), 3, "one pod removed");
    h.server.delete("v1", "Pod", NS, "llama-70b-3");

    // Restart a minute later: the restored scale-down event still forbids another removal.
    h.advance(60);
    let restarted = h.restarted(ControllerConfig::default());
    h.set_load(&restarted, 3, 1.0, 10.0, 100.0);
    h.reconcile(&restarted).await;
    assert_eq!(h.replicas("llama-70b"), 3);
    assert_eq!(h.status()["limitedBy"], "scaleDownPolicy");

    // Without the history (what the HPA does on restart) it would remove another pod now.
    h.server.merge(
        "autoscaler.production-stack/v1alpha1",
        "vLLMScalingPolicy",
        NS,
        POLICY,
        &json!({"status": {"history": null}}),
    );
    let amnesiac = h.restarted(ControllerConfig::default());
    h.set_load(&amnesiac, 3, 1.0, 10.0, 100.0);
    h.advance(15);
    h.reconcile(&amnesiac).await;
    assert_eq!(h.replicas("llama-70b"), 2, "the control: forgetting the history breaks the rate limit");
}

#[tokio::test]
async fn model_resolution_picks_the_serving_deployment_or_says_why_not() {
    // Two Deployments serve the model: ambiguous, nothing scaled.
    let h = Harness::seed().await;
    h.server.apply(deployment("llama-70b-canary", MODEL, 1));
    h.set_load(&h.ctx, 2, 40.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    let ready = h.condition("Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("AmbiguousModel")));
    let message = ready["message"].as_str().unwrap();
    assert!(message.contains("llama-70b, llama-70b-canary"), "{message}");
    assert!(h.server.requests_to("GET", "/scale").is_empty());
    assert!(h.workload_writes().is_empty());
    assert!(h.event_reasons().contains(&"AmbiguousModel".to_owned()));

    // No Deployment serves it.
    let h = Harness::seed().await;
    h.server.delete("apps/v1", "Deployment", NS, "llama-70b");
    h.reconcile(&h.ctx).await;
    let ready = h.condition("Ready");
    assert_eq!(ready["reason"], "ModelNotServed");
    assert!(ready["message"].as_str().unwrap().contains("meta-llama/Llama-2-70b-hf"));
    assert!(h.workload_writes().is_empty());

    // `--served-model-name` counts as serving the model.
    let h = Harness::seed().await;
    h.server.delete("apps/v1", "Deployment", NS, "llama-70b");
    let mut d = deployment("llama-served", "/models/llama", 2);
    d["spec"]["template"]["spec"]["containers"][0]["args"] = json!(["--served-model-name", MODEL, "--port", "8000"]);
    h.server.apply(d);
    h.reconcile(&h.ctx).await;
    assert_eq!(h.status()["reference"], "Deployment/llama-served");
}

#[tokio::test]
async fn a_workload_annotation_binds_a_policy_without_a_target() {
    let h = Harness::seed().await;
    h.server.merge(
        "autoscaler.production-stack/v1alpha1",
        "vLLMScalingPolicy",
        NS,
        POLICY,
        &json!({"spec": {"scaleTargetRef": null}}),
    );
    h.reconcile(&h.ctx).await;
    assert_eq!(h.condition("Ready")["reason"], "NoTarget");
    assert!(
        h.condition("Ready")["message"]
            .as_str()
            .unwrap()
            .contains("autoscaler.production-stack/policy: example-policy")
    );

    h.server.merge(
        "apps/v1",
        "Deployment",
        NS,
        "llama-70b",
        &json!({"metadata": {"annotations": {"autoscaler.production-stack/policy": POLICY}}}),
    );
    // A fresh controller (the workload list is cached for a sync period).
    let ctx = h.restarted(ControllerConfig::default());
    h.set_load(&ctx, 2, 15.0, 80.0, 500.0);
    h.advance(15);
    h.reconcile(&ctx).await;
    assert_eq!(h.condition("Ready")["status"], "True");
    assert_eq!(h.status()["reference"], "Deployment/llama-70b");
    assert_eq!(h.replicas("llama-70b"), 3);
}

#[tokio::test]
async fn another_autoscaler_on_the_target_stops_the_policy() {
    let h = Harness::seed().await;
    h.server.apply(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "llama-hpa", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-70b"}, "minReplicas": 1, "maxReplicas": 4}
    }));
    h.set_load(&h.ctx, 2, 40.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    let ready = h.condition("Ready");
    assert_eq!(ready["reason"], "ConflictingAutoscaler");
    assert!(ready["message"].as_str().unwrap().contains("HorizontalPodAutoscaler default/llama-hpa"), "{ready}");
    assert!(h.workload_writes().is_empty());
    assert!(h.server.requests_to("GET", "/scale").is_empty());

    let h = Harness::seed().await;
    h.server.add_kind(keda_scaled_object_kind());
    h.server.apply(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": "llama-keda", "namespace": NS},
        "spec": {"scaleTargetRef": {"name": "llama-70b"}, "triggers": []}
    }));
    h.set_load(&h.ctx, 2, 40.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    let ready = h.condition("Ready");
    assert_eq!(ready["reason"], "ConflictingAutoscaler");
    assert!(ready["message"].as_str().unwrap().contains("KEDA ScaledObject default/llama-keda"), "{ready}");
    assert!(h.workload_writes().is_empty());
}

#[tokio::test]
async fn missing_or_unscalable_targets_get_a_condition() {
    let cases = [
        (
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "name": "nope"}),
            "TargetNotFound",
            "Deployment default/nope does not exist",
        ),
        (
            json!({"apiVersion": "apps/v1", "kind": "DaemonSet", "name": "llama-70b"}),
            "NoScaleSubresource",
            "has no scale subresource",
        ),
        (
            json!({"apiVersion": "example.com/v1", "kind": "Widget", "name": "w"}),
            "UnknownKind",
            "does not serve example.com/v1",
        ),
        (
            json!({"apiVersion": null, "kind": "Widget", "name": "w"}),
            "UnknownKind",
            "apiVersion: required for kind Widget",
        ),
    ];
    for (reference, reason, text) in cases {
        let h = Harness::seed().await;
        h.server.merge(
            "autoscaler.production-stack/v1alpha1",
            "vLLMScalingPolicy",
            NS,
            POLICY,
            &json!({"spec": {"scaleTargetRef": reference}}),
        );
        h.set_load(&h.ctx, 2, 40.0, 80.0, 500.0);
        h.reconcile(&h.ctx).await;
        let ready = h.condition("Ready");
        assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some(reason)), "{ready}");
        assert!(ready["message"].as_str().unwrap().contains(text), "{ready}");
        assert_eq!(h.condition("AbleToScale")["status"], "False");
        assert!(h.workload_writes().is_empty());
    }
}

#[tokio::test]
async fn an_invalid_policy_names_the_field_and_scales_nothing() {
    let h = Harness::seed().await;
    // `tolerance` is the one field the schema cannot type (a number or an object).
    h.server.merge(
        "autoscaler.production-stack/v1alpha1",
        "vLLMScalingPolicy",
        NS,
        POLICY,
        &json!({"spec": {"tolerance": 2.5}}),
    );
    h.set_load(&h.ctx, 2, 40.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    let ready = h.condition("Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("InvalidSpec")));
    assert!(ready["message"].as_str().unwrap().contains("spec.tolerance: must be in [0, 1), got 2.5"), "{ready}");
    assert!(h.server.requests_to("GET", "/scale").is_empty());
    assert!(h.workload_writes().is_empty());
    assert!(h.event_reasons().contains(&"InvalidSpec".to_owned()));
}

#[tokio::test]
async fn a_standby_replica_does_nothing() {
    let h = Harness::seed().await;
    let standby = std::sync::Arc::new(
        vllm_scaling_kube::Context::new(h.server.client(), InMemoryMetrics::default(), ControllerConfig::default())
            .with_leadership(Leadership::candidate()),
    );
    standby.metrics_source().set(&Harness::target(), vllm_scaling_core::ScalingMetrics::default());
    let policy = h.policy().await;
    h.server.clear_requests();
    let action = reconcile(policy, standby).await.unwrap();
    assert_eq!(h.server.requests().len(), 0, "{:#?}", h.server.requests());
    assert_eq!(action, kube::runtime::controller::Action::requeue(Duration::from_secs(15)));
}

#[tokio::test]
async fn time_to_scale_is_observed_when_the_new_pods_are_ready() {
    let h = Harness::seed().await;
    h.set_load(&h.ctx, 2, 15.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    assert_eq!(h.replicas("llama-70b"), 3);
    // 15 s later the third pod exists but is not ready yet.
    h.server.apply(pod("llama-70b", 2, false));
    h.advance(15);
    h.set_load(&h.ctx, 3, 10.0, 75.0, 500.0);
    h.reconcile(&h.ctx).await;
    assert!(!h.status()["pendingRescale"].is_null());
    // 30 s after the decision it is ready.
    h.server.apply(pod("llama-70b", 2, true));
    h.advance(15);
    h.reconcile(&h.ctx).await;
    assert!(h.status()["pendingRescale"].is_null());
    let text = h.ctx.telemetry().encode();
    assert!(text.contains(r#"vllm_autoscaler_time_to_scale_seconds_sum{direction="up"} 30.0"#), "{text}");
    assert!(text.contains(r#"vllm_autoscaler_time_to_scale_seconds_count{direction="up"} 1"#), "{text}");
}
