//! One tenant never stops or stalls the others, and what a policy reports stays true: a
//! policy that does not decode, two policies on one target, a paused policy, events and
//! conditions of a blocked policy.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use serde_json::{Value, json};
use vllm_scaling_core::{InMemoryMetrics, PodMetrics, ScalingMetrics, TargetId};
use vllm_scaling_kube::fake_api::FakeApiServer;
use vllm_scaling_kube::{Context, ControllerConfig, reconcile_object, run};

const POLICIES: &str = "autoscaler.production-stack/v1alpha1";
const KIND: &str = "vLLMScalingPolicy";

fn policy_for(name: &str, target: &str) -> Value {
    let mut p = seed_json();
    p["metadata"]["name"] = json!(name);
    p["spec"]["scaleTargetRef"]["name"] = json!(target);
    p
}

fn status_of(server: &FakeApiServer, name: &str) -> Value {
    server.get(POLICIES, KIND, NS, name).map(|p| p["status"].clone()).unwrap_or(Value::Null)
}

fn condition_of(server: &FakeApiServer, name: &str, type_: &str) -> Value {
    status_of(server, name)["conditions"]
        .as_array()
        .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
        .unwrap_or(Value::Null)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    panic!("timed out waiting for {what}");
}

fn loaded(pods: &str, n: usize, queue: f64) -> ScalingMetrics {
    ScalingMetrics {
        pods: (0..n)
            .map(|i| {
                PodMetrics::running(format!("{pods}-{i}")).with("queue_length", queue).with("gpu_utilization", 80.0)
            })
            .collect(),
        fleet: [("latency".to_owned(), 500.0)].into(),
        ..ScalingMetrics::default()
    }
}

/// `tolerance: "abc"` passes the CRD's schema (the field keeps unknown shapes) but does not
/// decode: with a typed watch the whole list failed, /readyz stayed false and no policy in
/// any namespace was evaluated.
#[tokio::test]
async fn a_policy_that_does_not_decode_gets_its_own_condition_and_the_others_go_on() {
    let server = FakeApiServer::start().await.unwrap();
    server.apply(deployment("llama-70b", MODEL, 2));
    server.apply(deployment("mistral-7b", "mistralai/Mistral-7B-v0.1", 1));
    for i in 0..2 {
        server.apply(pod("llama-70b", i, true));
    }
    let mut broken = policy_for("broken", "mistral-7b");
    broken["spec"]["tolerance"] = json!("abc");
    server.apply(broken);
    let mut listy = policy_for("listy", "mistral-7b");
    listy["spec"]["tolerance"] = json!([1, 2]);
    server.apply(listy);
    server.apply(seed_json());

    let config =
        ControllerConfig::default().with_sync_period(Duration::from_millis(300)).with_namespace(Some(NS.into()));
    let ctx = Arc::new(Context::new(server.client(), InMemoryMetrics::default(), config));
    ctx.metrics_source().set(&TargetId::new(NS, POLICY), loaded("llama-70b", 2, 15.0));
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let controller = tokio::spawn(run(ctx.clone(), ready.clone(), async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));

    wait_for("readiness", || ready.load(Ordering::SeqCst)).await;
    wait_for("the good policy's scale patch", || {
        !server.requests_to("PATCH", "/deployments/llama-70b/scale").is_empty()
    })
    .await;
    assert_eq!(server.get("apps/v1", "Deployment", NS, "llama-70b").unwrap()["spec"]["replicas"], 3);
    for (name, field) in [("broken", "spec.tolerance"), ("listy", "spec.tolerance")] {
        wait_for("the InvalidSpec condition", || condition_of(&server, name, "Ready")["reason"] == "InvalidSpec").await;
        let ready = condition_of(&server, name, "Ready");
        assert_eq!(ready["status"], "False");
        let message = ready["message"].as_str().unwrap();
        assert!(message.contains(field), "{message}");
        assert!(message.len() < 1100, "bounded: {} bytes", message.len());
        assert_eq!(condition_of(&server, name, "AbleToScale")["status"], "False");
    }
    let events = server.list("events.k8s.io/v1", "Event", Some(NS));
    assert!(
        events.iter().any(|e| e["reason"] == "InvalidSpec"
            && e["type"] == "Warning"
            && e["regarding"]["name"] == "broken"
            && e["regarding"]["kind"] == "vLLMScalingPolicy"),
        "{events:#?}"
    );
    assert_eq!(server.get("apps/v1", "Deployment", NS, "mistral-7b").unwrap()["spec"]["replicas"], 1);

    // Fixed, it is evaluated like any other (its edit is a new generation).
    server.merge(POLICIES, KIND, NS, "broken", &json!({"spec": {"tolerance": 0.1}}));
    wait_for("the fixed policy", || condition_of(&server, "broken", "Ready")["reason"] == "TargetResolved").await;

    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), controller).await.expect("the controller stops").unwrap();
}

#[tokio::test]
async fn an_undecodable_policy_is_reported_once_per_period_without_touching_workloads() {
    let h = Harness::seed().await;
    h.server.merge(POLICIES, KIND, NS, POLICY, &json!({"spec": {"maxReplicas": "ten"}}));
    let object = || async {
        let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
            h.server.client(),
            NS,
            &kube::api::ApiResource::erase::<vllm_scaling_kube::VllmScalingPolicyResource>(&()),
        );
        Arc::new(api.get(POLICY).await.unwrap())
    };
    let first = object().await;
    h.server.clear_requests();
    let action = reconcile_object(first, h.ctx.clone()).await.unwrap();
    assert_eq!(action, kube::runtime::controller::Action::requeue(Duration::from_secs(15)));
    let ready = h.condition("Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("InvalidSpec")));
    assert!(ready["message"].as_str().unwrap().contains("spec.maxReplicas: invalid type: string \"ten\""), "{ready}");
    assert!(h.server.requests().iter().all(|r| !r.path.contains("/deployments")), "{:#?}", h.server.requests());
    assert!(h.event_reasons().contains(&"InvalidSpec".to_owned()));
    // The echo of its own status write does not evaluate it again.
    let echo = object().await;
    h.server.clear_requests();
    reconcile_object(echo, h.ctx.clone()).await.unwrap();
    assert!(h.server.requests().is_empty(), "{:#?}", h.server.requests());
}

/// Every rescale keeps its own note: kube-runtime's recorder folded a repeated reason into
/// the first event's series, so `kubectl describe` showed "2 -> 4" for every later rescale.
#[tokio::test]
async fn each_rescale_keeps_its_note_and_identical_warnings_fold_into_a_series() {
    let h = Harness::seed().await;
    h.server.merge(
        POLICIES,
        KIND,
        NS,
        POLICY,
        &json!({"spec": {"behavior": {"scaleDown": {"stabilizationWindowSeconds": 0}}}}),
    );
    h.set_load(&h.ctx, 2, 20.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    assert_eq!(h.replicas("llama-70b"), 4);
    for i in 2..4 {
        h.server.apply(pod("llama-70b", i, true));
    }
    h.advance(15);
    h.set_load(&h.ctx, 4, 1.0, 10.0, 100.0);
    h.reconcile(&h.ctx).await;
    assert_eq!(h.replicas("llama-70b"), 1);
    let notes: Vec<String> = h
        .events()
        .iter()
        .filter(|e| e["reason"] == "SuccessfulRescale")
        .map(|e| e["note"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(notes.len(), 2, "{notes:#?}");
    assert!(notes.iter().any(|n| n.contains("scale up 2 -> 4")), "{notes:#?}");
    assert!(notes.iter().any(|n| n.contains("scale down 4 -> 1")), "{notes:#?}");

    // The same warning three times: one event, counted in its series.
    h.ctx.metrics_source().fail(&Harness::target(), "connection refused (127.0.0.1:9090)");
    for _ in 0..3 {
        h.advance(15);
        h.reconcile(&h.ctx).await;
    }
    let failed: Vec<Value> = h.events().into_iter().filter(|e| e["reason"] == "FailedGetMetrics").collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["series"]["count"], 3, "{failed:#?}");
}

/// A policy that stops being evaluated does not keep showing its last decision.
#[tokio::test]
async fn a_blocked_policy_clears_its_stale_decision() {
    let h = Harness::seed().await;
    h.server.merge(POLICIES, KIND, NS, POLICY, &json!({"spec": {"maxReplicas": 3}}));
    h.set_load(&h.ctx, 2, 40.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    assert_eq!(h.replicas("llama-70b"), 3);
    assert_eq!(h.condition("ScalingLimited")["reason"], "TooManyReplicas");
    assert_eq!(h.status()["desiredReplicas"], 3);

    // An HPA appears on the same Deployment.
    h.server.apply(json!({
        "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": "llama-hpa", "namespace": NS},
        "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama-70b"}, "maxReplicas": 4}
    }));
    let ctx = h.restarted(ControllerConfig::default()); // the HPA list is cached for a period
    h.set_load(&ctx, 3, 40.0, 80.0, 500.0);
    h.advance(15);
    h.reconcile(&ctx).await;
    assert_eq!(h.condition("Ready")["reason"], "ConflictingAutoscaler");
    let limited = h.condition("ScalingLimited");
    assert_eq!(
        (limited["status"].as_str(), limited["reason"].as_str()),
        (Some("False"), Some("ConflictingAutoscaler"))
    );
    let status = h.status();
    assert!(status["explanation"].as_str().unwrap().contains("HorizontalPodAutoscaler default/llama-hpa"), "{status}");
    assert!(status["desiredReplicas"].is_null(), "{status}");
    assert!(status["limitedBy"].is_null(), "{status}");
    assert!(status["winningRule"].is_null(), "{status}");
    assert!(status["rules"].is_null(), "{status}");
    assert_eq!(h.replicas("llama-70b"), 3);
}

#[tokio::test]
async fn the_pause_annotation_holds_a_policy_until_it_is_removed() {
    let h = Harness::seed().await;
    let annotate = |value: Value| {
        h.server.merge(
            POLICIES,
            KIND,
            NS,
            POLICY,
            &json!({"metadata": {"annotations": {"autoscaler.production-stack/paused": value}}}),
        );
    };
    annotate(json!("true"));
    h.set_load(&h.ctx, 2, 40.0, 80.0, 500.0);
    h.server.clear_requests();
    h.reconcile(&h.ctx).await;
    // Nothing read or written but the policy's own status (and the event).
    let touched: Vec<String> = h
        .server
        .requests()
        .iter()
        .filter(|r| !r.path.contains("/vllmscalingpolicies/") && !r.path.contains("/events"))
        .map(|r| format!("{} {}", r.method, r.path))
        .collect();
    assert!(touched.iter().all(|r| !r.contains("/deployments") && !r.contains("/pods")), "{touched:#?}");
    assert_eq!(h.replicas("llama-70b"), 2);
    let ready = h.condition("Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("True"), Some("Paused")));
    assert!(ready["message"].as_str().unwrap().contains("autoscaler.production-stack/paused"), "{ready}");
    let able = h.condition("AbleToScale");
    assert_eq!((able["status"].as_str(), able["reason"].as_str()), (Some("False"), Some("Paused")));
    assert_eq!(h.condition("ScalingActive")["reason"], "Paused");
    assert!(h.status()["desiredReplicas"].is_null());
    assert_eq!(h.event_reasons().iter().filter(|r| *r == "Paused").count(), 1);
    for _ in 0..3 {
        h.advance(15);
        h.reconcile(&h.ctx).await;
    }
    assert_eq!(h.replicas("llama-70b"), 2, "held for a minute under load");
    assert_eq!(h.event_reasons().iter().filter(|r| *r == "Paused").count(), 1, "one event per pause");

    // Removing the annotation resumes (so does any value but "true").
    annotate(Value::Null);
    h.advance(15);
    h.reconcile(&h.ctx).await;
    assert_eq!(h.replicas("llama-70b"), 4);
    assert_eq!(h.condition("Ready")["reason"], "TargetResolved");
    assert_eq!(h.condition("AbleToScale")["reason"], "SucceededRescale");
    assert!(h.event_reasons().contains(&"Resumed".to_owned()));
}

/// Two policies on one Deployment flipped it 8 <-> 10 every evaluation. The older keeps
/// it; the newer is blocked and never writes `/scale`, whether it names the Deployment or
/// the model it serves. An observe-mode policy may shadow either.
#[tokio::test]
async fn two_policies_on_one_target_the_older_keeps_it() {
    let h = Harness::seed().await;
    // The seed targets the model id; `newer` names the Deployment that serves it.
    let mut newer = policy_for("newer", "llama-70b");
    newer["metadata"]["creationTimestamp"] = json!("2999-01-01T00:00:00Z");
    newer["spec"]["maxReplicas"] = json!(2);
    h.server.apply(newer);
    let mut shadow = policy_for("shadow", "llama-70b");
    shadow["metadata"]["creationTimestamp"] = json!("2000-01-01T00:00:00Z");
    shadow["spec"]["mode"] = json!("observe");
    h.server.apply(shadow);
    let newer_target = TargetId::new(NS, "newer");
    let load = loaded("llama-70b", 2, 40.0);
    h.ctx.metrics_source().set(&newer_target, load.clone());
    h.ctx.metrics_source().set(&TargetId::new(NS, "shadow"), load);
    h.set_load(&h.ctx, 2, 40.0, 80.0, 500.0);

    let run = |name: &'static str| {
        let (h, ctx) = (&h, h.ctx.clone());
        async move { vllm_scaling_kube::reconcile(h.policy_named(name).await, ctx).await.unwrap() }
    };
    run("newer").await;
    let ready = condition_of(&h.server, "newer", "Ready");
    assert_eq!((ready["status"].as_str(), ready["reason"].as_str()), (Some("False"), Some("ConflictingAutoscaler")));
    let message = ready["message"].as_str().unwrap();
    assert!(message.contains("vLLMScalingPolicy default/example-policy"), "{message}");
    assert!(message.contains("Deployment llama-70b"), "{message}");
    assert!(h.scale_patches().is_empty(), "the newer policy never writes /scale");

    run(POLICY).await;
    assert_eq!(h.condition("Ready")["reason"], "TargetResolved");
    assert_eq!(h.replicas("llama-70b"), 4);
    run("shadow").await;
    assert_eq!(condition_of(&h.server, "shadow", "Ready")["reason"], "TargetResolved", "observe mode does not fight");
    for _ in 0..4 {
        h.advance(15);
        h.set_load(&h.ctx, 4, 20.0, 80.0, 500.0);
        run("newer").await;
        run(POLICY).await;
    }
    let patches = h.scale_patches();
    assert!(
        patches.iter().all(|p| p.body.as_ref().unwrap()["spec"]["replicas"].as_i64().unwrap() >= 4),
        "only the older policy scales: {patches:#?}"
    );

    // The older one gone, the newer takes over at its next evaluation.
    h.server.delete(POLICIES, KIND, NS, POLICY);
    h.advance(15);
    let ctx = h.restarted(ControllerConfig::default());
    ctx.metrics_source().set(&newer_target, loaded("llama-70b", 4, 40.0));
    vllm_scaling_kube::reconcile(h.policy_named("newer").await, ctx).await.unwrap();
    assert_eq!(condition_of(&h.server, "newer", "Ready")["reason"], "TargetResolved");
    assert_eq!(h.replicas("llama-70b"), 2, "the newer policy's maxReplicas 2 now applies");
}

fn status_patches(h: &Harness) -> usize {
    h.server.requests_to("PATCH", "/vllmscalingpolicies/example-policy/status").len()
}

/// The status was patched on every evaluation (414 patches in 7 minutes of a real run)
/// though only `lastEvaluationTime` and the observed values moved.
#[tokio::test]
async fn the_status_is_written_when_it_changes_or_once_per_interval() {
    let h = Harness::seed().await;
    h.set_load(&h.ctx, 2, 15.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    assert_eq!((h.replicas("llama-70b"), status_patches(&h)), (3, 1));
    h.server.apply(pod("llama-70b", 2, true));
    // 15 s later: the rescale completed (pendingRescale cleared): written.
    h.advance(15);
    h.set_load(&h.ctx, 3, 9.0, 70.0, 500.0);
    h.reconcile(&h.ctx).await;
    assert_eq!(status_patches(&h), 2);
    let written_at = h.status()["lastEvaluationTime"].clone();
    // Only the observed values move: nothing is written for under a minute.
    for queue in [9.2, 8.9, 9.1] {
        h.advance(15);
        h.set_load(&h.ctx, 3, queue, 70.0, 500.0);
        h.reconcile(&h.ctx).await;
    }
    assert_eq!(status_patches(&h), 2);
    assert_eq!(h.status()["lastEvaluationTime"], written_at);
    assert!(h.ctx.telemetry().encode().contains("vllm_autoscaler_status_writes_skipped_total 3"));
    // A minute after the last write, one is due.
    h.advance(15);
    h.reconcile(&h.ctx).await;
    assert_eq!(status_patches(&h), 3);
    assert_eq!(h.status()["rules"][1]["observed"], 9.1);
    // A user-visible change is written at once: a rule's status.
    h.advance(15);
    h.ctx.metrics_source().fail(&Harness::target(), "connection refused (127.0.0.1:9090)");
    h.reconcile(&h.ctx).await;
    assert_eq!(status_patches(&h), 4);
    assert_eq!(h.status()["rules"][1]["status"], "missing");

    // `--status-interval 0`: every evaluation, as before.
    let ctx = h.restarted(ControllerConfig::default().with_status_interval(Duration::ZERO));
    h.set_load(&ctx, 3, 9.0, 70.0, 500.0);
    for _ in 0..3 {
        h.advance(15);
        h.reconcile(&ctx).await;
    }
    assert_eq!(status_patches(&h), 7);
}

/// Unwritten evaluations must not let a restarted controller scale down inside the
/// window: the last high recommendation before the restart was never written.
#[tokio::test]
async fn a_restart_after_unwritten_evaluations_still_holds_the_window() {
    let h = Harness::seed().await;
    h.set_load(&h.ctx, 2, 20.0, 80.0, 500.0);
    h.reconcile(&h.ctx).await;
    assert_eq!(h.replicas("llama-70b"), 4);
    for i in 2..4 {
        h.server.apply(pod("llama-70b", i, true));
    }
    // t0+15 s: written (the rescale completed); t0+30..60 s: recommendations of 4, unwritten.
    h.set_load(&h.ctx, 4, 10.0, 75.0, 500.0);
    for _ in 0..4 {
        h.advance(15);
        h.reconcile(&h.ctx).await;
    }
    assert_eq!(status_patches(&h), 2, "the evaluations at t0+30, 45 and 60 s are not written");
    let last_high = T0_MS + 60_000;

    // The controller restarts at t0+70 s and the load is gone.
    h.advance(10);
    let restarted = h.restarted(ControllerConfig::default());
    h.set_load(&restarted, 4, 1.0, 10.0, 100.0);
    loop {
        h.reconcile(&restarted).await;
        if h.now().as_millis() <= last_high + 300_000 {
            assert_eq!(h.replicas("llama-70b"), 4, "inside the window of the t0+60 s recommendation at {}", h.now());
        } else if h.replicas("llama-70b") < 4 {
            break;
        }
        assert!(h.now().as_millis() <= last_high + 300_000 + 75_000, "held for at most one more interval");
        h.advance(15);
    }
    assert_eq!(h.replicas("llama-70b"), 1);
}
