//! One reconcile step through the three ports, with the in-memory implementations.

use futures::executor::block_on;
use vllm_scaling_core::{
    Engine, InMemoryMetrics, InMemoryPolicies, InMemoryReplicas, LimitedBy, PodMetrics, ReconcileError, ScalingMetrics,
    TargetId, Timestamp, parse_policy,
};

const POLICY: &str = "apiVersion: autoscaler.production-stack/v1alpha1\nkind: vLLMScalingPolicy\nmetadata: {name: llama}\nspec:\n  scaleTargetRef: {kind: Deployment, name: llama}\n  maxReplicas: 10\n  scalingRules: [{metric: queue_length, threshold: 10}]\n  behavior: {}\n";

struct World {
    target: TargetId,
    policies: InMemoryPolicies,
    replicas: InMemoryReplicas,
    metrics: InMemoryMetrics,
    engine: Engine,
}

fn world(policy: &str) -> World {
    let target = TargetId::new("inference", "llama");
    let (object, resolved) = parse_policy(policy).unwrap();
    let policies = InMemoryPolicies::default();
    policies.insert(&target, object);
    let replicas = InMemoryReplicas::default();
    replicas.set(&target, 2);
    World { target, policies, replicas, metrics: InMemoryMetrics::default(), engine: Engine::new(resolved) }
}

fn queue(per_pod: f64, pods: usize) -> ScalingMetrics {
    ScalingMetrics {
        pods: (0..pods).map(|i| PodMetrics::running(format!("p{i}")).with("queue_length", per_pod)).collect(),
        ..Default::default()
    }
}

impl World {
    fn step(&mut self, secs: u64) -> Result<vllm_scaling_core::Decision, String> {
        block_on(vllm_scaling_core::reconcile(
            &mut self.engine,
            &self.target,
            Timestamp::from_secs(secs),
            &self.policies,
            &self.replicas,
            &self.metrics,
            Vec::new(),
        ))
        .map_err(|e| e.to_string())
    }
}

#[test]
fn scales_through_the_port_and_records_the_event() {
    let mut w = world(POLICY);
    w.metrics.set(&w.target, queue(30.0, 2));
    let d = w.step(0).unwrap();
    assert_eq!(d.desired_replicas, 6);
    assert_eq!(w.replicas.get(&w.target), Some(6));
    assert_eq!(w.replicas.writes(), vec![(w.target.clone(), 6)]);
    assert_eq!(w.engine.state().scale_up_events.len(), 1);
    // 5 s later the +4 event limits the next step: period start 2 -> max(2 + 4, 4) = 6.
    w.metrics.set(&w.target, queue(30.0, 6));
    let d = w.step(5).unwrap();
    assert_eq!((d.desired_replicas, d.limited_by), (6, LimitedBy::ScaleUpPolicy));
    assert_eq!(w.replicas.writes().len(), 1, "no write when nothing changes");
}

#[test]
fn observe_mode_never_writes() {
    let mut w = world(&POLICY.replace("behavior: {}", "mode: observe"));
    w.metrics.set(&w.target, queue(30.0, 2));
    let d = w.step(0).unwrap();
    assert_eq!(d.desired_replicas, 4);
    assert!(!d.actuate);
    assert!(d.explanation.contains("observe mode"));
    assert!(w.replicas.writes().is_empty());
    assert_eq!(w.replicas.get(&w.target), Some(2));
}

#[test]
fn a_failed_metrics_backend_holds_the_replicas() {
    let mut w = world(POLICY);
    w.replicas.set(&w.target, 5);
    w.metrics.fail(&w.target, "connection refused");
    let d = w.step(0).unwrap();
    assert_eq!((d.desired_replicas, d.limited_by), (5, LimitedBy::MetricsUnavailable));
    assert!(d.rules[0].reason.as_deref().unwrap().contains("connection refused"));
    assert!(w.replicas.writes().is_empty());
}

#[test]
fn a_failed_write_is_an_error_and_records_no_event() {
    let mut w = world(POLICY);
    w.metrics.set(&w.target, queue(30.0, 2));
    w.replicas.fail_writes(Some("409 conflict"));
    let e = w.step(0).unwrap_err();
    assert!(e.contains("scaling inference/llama to 6 failed"), "{e}");
    assert!(w.engine.state().scale_up_events.is_empty());
    assert_eq!(w.replicas.get(&w.target), Some(2));
    // The next attempt is not rate-limited by a scale that never happened.
    w.replicas.fail_writes(None);
    assert_eq!(w.step(1).unwrap().desired_replicas, 6);
}

#[test]
fn missing_and_invalid_policies_are_errors() {
    let mut w = world(POLICY);
    w.target = TargetId::new("inference", "other");
    let e = block_on(vllm_scaling_core::reconcile(
        &mut w.engine,
        &w.target,
        Timestamp::ZERO,
        &w.policies,
        &w.replicas,
        &w.metrics,
        Vec::new(),
    ))
    .unwrap_err();
    assert!(matches!(e, ReconcileError::NoPolicy(_)), "{e}");
}

#[test]
fn an_edited_policy_keeps_the_history() {
    let mut w = world(POLICY);
    w.metrics.set(&w.target, queue(30.0, 2));
    w.step(0).unwrap();
    let (edited, _) = parse_policy(&POLICY.replace("maxReplicas: 10", "maxReplicas: 20")).unwrap();
    w.policies.insert(&w.target, edited);
    w.metrics.set(&w.target, queue(1.0, 6));
    let d = w.step(30).unwrap();
    assert_eq!(w.engine.policy().max_replicas, 20);
    // The recommendations of the last 300 s (6) still hold the scale-down.
    assert_eq!((d.desired_replicas, d.limited_by), (6, LimitedBy::ScaleDownStabilization));
}
