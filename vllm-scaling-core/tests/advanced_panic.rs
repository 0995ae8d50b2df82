//! Panic mode: a short window that lifts the scale-up rate limit when demand reaches a
//! multiple of the current replicas, and holds scale-down while panicking.

use std::time::Duration;

use proptest::prelude::*;
use vllm_scaling_core::{
    CurrentScale, Decision, Engine, EngineConfig, LimitedBy, PodMetrics, ProposalSource, ResolvedPolicy,
    ScalingMetrics, Timestamp, parse_policy,
};

fn policy(yaml: &str) -> ResolvedPolicy {
    parse_policy(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")).1
}

/// queue_length ≤ 10 per replica, max 100, the HPA's default behavior except no
/// scale-down stabilization (so panic's own hold is what is observed).
fn queue_policy(panic: &str) -> ResolvedPolicy {
    policy(&format!(
        "minReplicas: 1\nmaxReplicas: 100\nscalingRules: [{{metric: queue_length, threshold: 10}}]\n\
         behavior: {{scaleDown: {{stabilizationWindowSeconds: 0}}}}\n{panic}"
    ))
}

fn queue(current: i32, per_pod: f64) -> ScalingMetrics {
    ScalingMetrics {
        pods: (0..current).map(|i| PodMetrics::running(format!("p{i}")).with("queue_length", per_pod)).collect(),
        ..Default::default()
    }
}

/// Evaluates and applies the decision (as a driver would).
fn step(e: &mut Engine, at_s: u64, current: &mut i32, per_pod: f64) -> Decision {
    let now = Timestamp::from_secs(at_s);
    let d = e.evaluate(now, CurrentScale::new(*current), &queue(*current, per_pod));
    if d.desired_replicas != *current {
        e.record_scale(now, *current, d.desired_replicas);
        *current = d.desired_replicas;
    }
    d
}

#[test]
fn a_burst_scales_up_in_one_step_instead_of_doubling() {
    // 4 replicas with 50 waiting each: the rule proposes 20 (5× the target).
    let mut reactive = Engine::new(queue_policy(""));
    let d = reactive.evaluate(Timestamp::from_secs(0), CurrentScale::new(4), &queue(4, 50.0));
    assert_eq!((d.desired_replicas, d.limited_by), (8, LimitedBy::ScaleUpPolicy)); // max(+4, ×2) per 15 s

    let mut panicky = Engine::new(queue_policy("panic: {}\n"));
    let d = panicky.evaluate(Timestamp::from_secs(0), CurrentScale::new(4), &queue(4, 50.0));
    assert_eq!((d.desired_replicas, d.limited_by), (20, LimitedBy::None));
    assert_eq!(d.extra_proposals.len(), 1);
    assert_eq!((d.extra_proposals[0].source, d.extra_proposals[0].replicas), (ProposalSource::Panic, 20));
    assert!(d.explanation.contains("panic mode"), "{}", d.explanation);
    assert!(panicky.state().advanced.panic.is_some());
}

#[test]
fn below_the_threshold_it_is_the_plain_hpa() {
    // 1.5× the target: proposes 6 of 4, under the 200 % panic threshold.
    let mut e = Engine::new(queue_policy("panic: {}\n"));
    let d = e.evaluate(Timestamp::from_secs(0), CurrentScale::new(4), &queue(4, 15.0));
    assert_eq!(d.desired_replicas, 6);
    assert!(d.extra_proposals.is_empty());
    assert!(e.state().advanced.panic.is_none());
    // The threshold is configurable.
    let mut e = Engine::new(queue_policy("panic: {thresholdPercent: 150}\n"));
    let d = e.evaluate(Timestamp::from_secs(0), CurrentScale::new(4), &queue(4, 15.0));
    assert_eq!(d.extra_proposals.len(), 1);
}

#[test]
fn scale_down_is_held_until_a_stable_window_passes_without_panic() {
    let mut e = Engine::new(queue_policy("panic: {stableWindowSeconds: 60}\n"));
    let mut current = 4;
    assert_eq!(step(&mut e, 0, &mut current, 50.0).desired_replicas, 20);
    // The burst is gone: the rule proposes 1, panic holds 20.
    for t in [15, 30, 45] {
        let d = step(&mut e, t, &mut current, 0.5);
        assert_eq!((d.desired_replicas, d.limited_by), (20, LimitedBy::PanicHold), "at {t}s: {}", d.explanation);
    }
    // 60 s after the last trigger, panic is over and the scale-down happens.
    let d = step(&mut e, 60, &mut current, 0.5);
    assert_eq!(d.desired_replicas, 1, "{}", d.explanation);
    assert!(e.state().advanced.panic.is_none());
}

#[test]
fn the_rate_limit_lift_is_bounded_by_max_scale_up_rate_and_max_replicas() {
    let mut e = Engine::new(queue_policy("panic: {maxScaleUpRate: 3}\n"));
    let d = e.evaluate(Timestamp::from_secs(0), CurrentScale::new(4), &queue(4, 100.0)); // proposes 40
    assert_eq!((d.desired_replicas, d.limited_by), (12, LimitedBy::ScaleUpPolicy));
    let mut e = Engine::new(queue_policy("panic: {}\n"));
    let d = e.evaluate(Timestamp::from_secs(0), CurrentScale::new(4), &queue(4, 1000.0)); // proposes 400
    assert_eq!((d.desired_replicas, d.limited_by), (100, LimitedBy::MaxReplicas));
}

#[test]
fn the_fast_path_goes_only_as_far_as_the_panic_rules_demand() {
    // Panic on requests in flight (3× the target: proposes 12 of 4); the queue, a backlog,
    // proposes 40 but keeps its rate limit (+4 or ×2 per 15 s: 8).
    let p = policy(
        "maxReplicas: 100\nscalingRules:\n  - {metric: running_requests, threshold: 20}\n  - {metric: queue_length, threshold: 5}\n\
         panic: {rules: [running_requests]}\n",
    );
    let m = ScalingMetrics {
        pods: (0..4)
            .map(|i| PodMetrics::running(format!("p{i}")).with("running_requests", 60.0).with("queue_length", 50.0))
            .collect(),
        ..Default::default()
    };
    let d = Engine::new(p.clone()).evaluate(Timestamp::from_secs(0), CurrentScale::new(4), &m);
    assert_eq!((d.proposed_replicas, d.desired_replicas), (Some(40), 12), "{}", d.explanation);
    assert_eq!(d.limited_by, LimitedBy::ScaleUpPolicy);
    assert_eq!(d.extra_proposals[0].replicas, 12);
    // Below the panic threshold on the panic rule, the queue alone does not panic.
    let calm = ScalingMetrics {
        pods: (0..4)
            .map(|i| PodMetrics::running(format!("p{i}")).with("running_requests", 20.0).with("queue_length", 50.0))
            .collect(),
        ..Default::default()
    };
    let mut e = Engine::new(p);
    let d = e.evaluate(Timestamp::from_secs(0), CurrentScale::new(4), &calm);
    assert_eq!(d.desired_replicas, 8);
    assert!(e.state().advanced.panic.is_none());
}

#[test]
fn the_panic_window_averages_the_evaluations_inside_it() {
    // A 2 s evaluation period against a 6 s window (Knative's tick and default window).
    let config = EngineConfig::default().with_sync_period(Duration::from_secs(2));
    let mut e = Engine::with_config(queue_policy("panic: {windowSeconds: 6}\n"), config);
    let current = 10;
    let at = Timestamp::from_secs;
    // Demand 10 (at target), then one evaluation at 40: the window average is 25 ≥ 20.
    let d = e.evaluate(at(0), CurrentScale::new(current), &queue(current, 10.0));
    assert!(d.extra_proposals.is_empty());
    let d = e.evaluate(at(2), CurrentScale::new(current), &queue(current, 40.0));
    assert_eq!(d.extra_proposals[0].replicas, 25, "{}", d.explanation);
    // The sample from t=0 leaves the window at t=6: only 40 and 10 remain.
    let d = e.evaluate(at(6), CurrentScale::new(current), &queue(current, 10.0));
    assert_eq!(d.extra_proposals[0].replicas, 25, "{}", d.explanation);
    assert_eq!(e.state().advanced.demand_samples.len(), 2);
}

#[test]
fn panic_state_survives_a_restart() {
    let mut e = Engine::new(queue_policy("panic: {}\n"));
    let mut current = 4;
    step(&mut e, 0, &mut current, 50.0);
    let saved = serde_json::to_string(e.state()).unwrap();
    let mut restarted = Engine::new(queue_policy("panic: {}\n"));
    restarted.restore_state(serde_json::from_str(&saved).unwrap());
    let d = restarted.evaluate(Timestamp::from_secs(15), CurrentScale::new(current), &queue(current, 0.0));
    assert_eq!((d.desired_replicas, d.limited_by), (20, LimitedBy::PanicHold));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Driving the engine through random load and random evaluation gaps: while panic is
    /// on, the decision never scales down, and the replicas stay in [min, max].
    #[test]
    fn panic_never_scales_down_while_panicking(
        loads in prop::collection::vec((0.0..120.0f64, 1..20u64), 1..40),
        window in 2..30i32,
        stable_extra in 0..90i32,
        with_behavior in any::<bool>(),
    ) {
        let behavior = if with_behavior { "behavior: {scaleDown: {stabilizationWindowSeconds: 0}}\n" } else { "" };
        let p = policy(&format!(
            "minReplicas: 1\nmaxReplicas: 60\nscalingRules: [{{metric: queue_length, threshold: 10}}]\n{behavior}\
             panic: {{windowSeconds: {window}, stableWindowSeconds: {}}}\n", window + stable_extra
        ));
        let mut e = Engine::new(p);
        let (mut current, mut t) = (3, 0u64);
        for (load, gap) in loads {
            t += gap;
            let d = step(&mut e, t, &mut current, load);
            // Panic state after the evaluation: entered or still on (it ends only once a
            // stable window has passed without the condition).
            let is_panicking = e.state().advanced.panic.is_some();
            prop_assert!((1..=60).contains(&d.desired_replicas), "{}", d.explanation);
            if is_panicking {
                prop_assert!(d.desired_replicas >= d.current_replicas, "scaled down in panic: {}", d.explanation);
            }
        }
    }
}
