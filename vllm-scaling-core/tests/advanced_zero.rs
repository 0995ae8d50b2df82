//! Scale to zero: idle long enough goes to zero, the activation signal brings the target
//! back, and missing data never causes either a scale-down to zero or a silent start.

use proptest::prelude::*;
use vllm_scaling_core::{
    CurrentScale, Decision, Engine, LimitedBy, PodMetrics, ResolvedPolicy, RuleStatus, ScalingMetrics, Timestamp,
    parse_policy,
};

fn policy(yaml: &str) -> ResolvedPolicy {
    parse_policy(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")).1
}

/// `incoming`: the router's request rate for the model, a Prometheus query that answers
/// with no pods running, 5 req/s per replica. `queue_length` per pod, 10 per replica.
/// No scale-down stabilization, so the scale-to-zero step is what is observed.
fn zero_policy(extra: &str) -> ResolvedPolicy {
    policy(&format!(
        "minReplicas: 0\nmaxReplicas: 10\nscalingRules:\n\
         \x20 - {{metric: custom, name: incoming, query: 'sum(rate(router_requests_total[1m]))', threshold: 5, targetType: AverageValue{extra}}}\n\
         \x20 - {{metric: queue_length, threshold: 10}}\n\
         behavior: {{scaleDown: {{stabilizationWindowSeconds: 0}}}}\n\
         scaleToZero: {{activationRule: incoming, idleSeconds: 60}}\n"
    ))
}

/// `current` running pods with `queue` waiting each, and the fleet request rate.
fn observe(current: i32, queue: f64, rate: Option<f64>) -> ScalingMetrics {
    let mut m = ScalingMetrics {
        pods: (0..current).map(|i| PodMetrics::running(format!("p{i}")).with("queue_length", queue)).collect(),
        ..Default::default()
    };
    match rate {
        Some(r) => {
            m.fleet.insert("incoming".into(), r);
        }
        None => {
            m.failures.insert("incoming".into(), "prometheus: 503".into());
        }
    }
    m
}

fn step(e: &mut Engine, at_s: u64, current: &mut i32, m: &ScalingMetrics) -> Decision {
    let now = Timestamp::from_secs(at_s);
    let d = e.evaluate(now, CurrentScale::new(*current), m);
    if d.desired_replicas != *current {
        e.record_scale(now, *current, d.desired_replicas);
        *current = d.desired_replicas;
    }
    d
}

#[test]
fn idle_for_idle_seconds_goes_to_zero() {
    let mut e = Engine::new(zero_policy(""));
    let mut current = 1;
    for t in [0, 15, 30, 45] {
        let m = observe(current, 0.0, Some(0.0));
        let d = step(&mut e, t, &mut current, &m);
        assert_eq!((d.desired_replicas, d.limited_by), (1, LimitedBy::ScaleToZeroWait), "at {t}s: {}", d.explanation);
    }
    let d = step(&mut e, 60, &mut current, &observe(1, 0.0, Some(0.0)));
    assert_eq!((d.desired_replicas, d.limited_by), (0, LimitedBy::ScaleToZero), "{}", d.explanation);
    assert!(d.actuate);
    // At zero with no traffic it stays there and says why.
    let d = step(&mut e, 75, &mut current, &observe(0, 0.0, Some(0.0)));
    assert_eq!((d.desired_replicas, d.limited_by), (0, LimitedBy::ScaleToZero));
    assert!(d.explanation.contains("idle"), "{}", d.explanation);
}

#[test]
fn traffic_resets_the_idle_clock() {
    let mut e = Engine::new(zero_policy(""));
    let mut current = 1;
    step(&mut e, 0, &mut current, &observe(1, 0.0, Some(0.0)));
    step(&mut e, 45, &mut current, &observe(1, 0.0, Some(0.5))); // a trickle
    let d = step(&mut e, 60, &mut current, &observe(1, 0.0, Some(0.0)));
    assert_eq!(d.desired_replicas, 1, "{}", d.explanation);
    let d = step(&mut e, 119, &mut current, &observe(1, 0.0, Some(0.0)));
    assert_eq!(d.desired_replicas, 1);
    let d = step(&mut e, 120, &mut current, &observe(1, 0.0, Some(0.0)));
    assert_eq!(d.desired_replicas, 0);
}

#[test]
fn the_activation_signal_scales_from_zero() {
    let mut e = Engine::new(zero_policy(""));
    let mut current = 0;
    // 12 req/s at 5 per replica: 3 replicas, straight from zero.
    let d = step(&mut e, 0, &mut current, &observe(0, 0.0, Some(12.0)));
    assert_eq!(d.desired_replicas, 3, "{}", d.explanation);
    assert_eq!(d.winning_rule.as_deref(), Some("incoming"));
    assert!(d.explanation.contains("scale from zero"), "{}", d.explanation);
    // The queue rule had no pods to read: missing, which does not block a scale-up.
    assert_eq!(d.rules[1].status, RuleStatus::Missing);
    // Any signal above the threshold starts at least one replica.
    let mut e = Engine::new(zero_policy(""));
    let d = e.evaluate(Timestamp::ZERO, CurrentScale::new(0), &observe(0, 0.0, Some(0.01)));
    assert_eq!(d.desired_replicas, 1);
}

#[test]
fn the_activation_threshold_is_respected() {
    let p = policy(
        "minReplicas: 0\nmaxReplicas: 10\nscalingRules: [{metric: custom, name: incoming, query: 'sum(x)', threshold: 5, targetType: AverageValue}]\n\
         scaleToZero: {activationRule: incoming, activationThreshold: 0.5, idleSeconds: 0}\n",
    );
    let mut e = Engine::new(p.clone());
    let d = e.evaluate(Timestamp::ZERO, CurrentScale::new(0), &observe(0, 0.0, Some(0.5)));
    assert_eq!(d.desired_replicas, 0);
    let d = e.evaluate(Timestamp::ZERO, CurrentScale::new(0), &observe(0, 0.0, Some(0.6)));
    assert_eq!(d.desired_replicas, 1);
    // idleSeconds 0: the first idle evaluation goes to zero.
    let mut e = Engine::new(p);
    let d = e.evaluate(Timestamp::ZERO, CurrentScale::new(2), &observe(2, 0.0, Some(0.4)));
    assert_eq!((d.desired_replicas, d.limited_by), (0, LimitedBy::ScaleToZero));
}

#[test]
fn a_missing_signal_never_goes_to_zero_and_never_starts_replicas() {
    let mut e = Engine::new(zero_policy(""));
    let mut current = 1;
    for t in (0..600).step_by(15) {
        let d = step(&mut e, t, &mut current, &observe(1, 0.0, None));
        assert_eq!(d.desired_replicas, 1, "at {t}s: {}", d.explanation);
    }
    let mut e = Engine::new(zero_policy(""));
    let d = e.evaluate(Timestamp::ZERO, CurrentScale::new(0), &observe(0, 0.0, None));
    assert_eq!((d.desired_replicas, d.limited_by), (0, LimitedBy::ScaleToZero));
    assert!(d.explanation.contains("missing"), "{}", d.explanation);
    // ...unless the activation rule has fallbackReplicas: then they start.
    let mut e = Engine::new(zero_policy(", fallbackReplicas: 2"));
    let d = e.evaluate(Timestamp::ZERO, CurrentScale::new(0), &observe(0, 0.0, None));
    assert_eq!(d.desired_replicas, 2, "{}", d.explanation);
    assert!(d.rules[0].fallback);
}

#[test]
fn a_failing_rule_blocks_the_scale_to_zero() {
    let mut e = Engine::new(zero_policy(""));
    let mut current = 1;
    let mut m = observe(1, 0.0, Some(0.0));
    m.pods.clear();
    m.failures.insert("queue_length".into(), "scrape failed".into());
    for t in (0..300).step_by(15) {
        let d = step(&mut e, t, &mut current, &m);
        assert_eq!(d.desired_replicas, 1, "at {t}s: {}", d.explanation);
    }
}

#[test]
fn a_failing_rule_with_a_fallback_also_blocks_the_scale_to_zero() {
    // queue_length fails but its fallback (2) proposes max(2, current): a valid
    // proposal, yet the target must not go to zero on a blind spot.
    let p = policy(
        "minReplicas: 0\nmaxReplicas: 10\nscalingRules:\n\
         \x20 - {metric: custom, name: incoming, query: 'sum(x)', threshold: 5, targetType: AverageValue}\n\
         \x20 - {metric: queue_length, threshold: 10, fallbackReplicas: 2}\n\
         scaleToZero: {activationRule: incoming, idleSeconds: 0}\n",
    );
    let mut m = observe(2, 0.0, Some(0.0));
    m.pods.iter_mut().for_each(|pod| pod.metrics.clear());
    m.failures.insert("queue_length".into(), "scrape failed".into());
    let d = Engine::new(p).evaluate(Timestamp::from_secs(1000), CurrentScale::new(2), &m);
    assert_eq!(d.desired_replicas, 2, "{}", d.explanation);
    assert!(d.rules[1].fallback);
}

#[test]
fn without_scale_to_zero_zero_replicas_is_hands_off() {
    let p = policy(
        "maxReplicas: 10\nscalingRules: [{metric: custom, name: incoming, query: 'sum(x)', threshold: 5, targetType: AverageValue}]\n",
    );
    let d = Engine::new(p).evaluate(Timestamp::ZERO, CurrentScale::new(0), &observe(0, 0.0, Some(100.0)));
    assert_eq!((d.desired_replicas, d.limited_by), (0, LimitedBy::ScalingDisabled));
    assert!(!d.actuate);
}

#[test]
fn a_schedule_can_hold_warm_replicas_over_scale_to_zero() {
    // minReplicas 1 by default; from 22:00 to 06:00 UTC the schedule allows zero.
    let p = policy(
        "maxReplicas: 10\nscalingRules: [{metric: custom, name: incoming, query: 'sum(x)', threshold: 5, targetType: AverageValue}]\n\
         behavior: {scaleDown: {stabilizationWindowSeconds: 0}}\n\
         scaleToZero: {activationRule: incoming, idleSeconds: 0}\n\
         schedules: [{name: night, timeZone: UTC, start: '22:00', end: '06:00', minReplicas: 0}]\n",
    );
    let noon = Timestamp::from_secs(12 * 3600);
    let midnight = Timestamp::from_secs(24 * 3600);
    let d = Engine::new(p.clone()).evaluate(noon, CurrentScale::new(1), &observe(1, 0.0, Some(0.0)));
    assert_eq!((d.desired_replicas, d.limited_by), (1, LimitedBy::MinReplicas), "{}", d.explanation);
    let d = Engine::new(p.clone()).evaluate(midnight, CurrentScale::new(1), &observe(1, 0.0, Some(0.0)));
    assert_eq!((d.desired_replicas, d.limited_by), (0, LimitedBy::ScaleToZero), "{}", d.explanation);
    assert_eq!(d.active_schedule.as_deref(), Some("night"));
    // At zero when the schedule ends, the day's minReplicas brings one replica back.
    let d = Engine::new(p).evaluate(noon, CurrentScale::new(0), &observe(0, 0.0, Some(0.0)));
    assert_eq!((d.desired_replicas, d.limited_by), (1, LimitedBy::MinReplicas), "{}", d.explanation);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Zero only after `idleSeconds` of a present, idle signal; never below one replica
    /// otherwise; never above max.
    #[test]
    fn zero_only_after_an_idle_period(
        trace in prop::collection::vec((prop::option::weighted(0.8, prop_oneof![Just(0.0), 0.0..30.0f64]), 0.0..30.0f64, 1..40u64), 1..60),
    ) {
        let mut e = Engine::new(zero_policy(""));
        let (mut current, mut t) = (1, 0u64);
        let mut idle_since: Option<u64> = None;
        for (rate, queue, gap) in trace {
            t += gap;
            let m = observe(current, queue, rate);
            idle_since = match rate { Some(r) if r <= 0.0 => Some(idle_since.unwrap_or(t)), _ => None };
            let before = current;
            let d = step(&mut e, t, &mut current, &m);
            prop_assert!((0..=10).contains(&d.desired_replicas));
            if before > 0 && d.desired_replicas == 0 {
                let since = idle_since.expect("went to zero without an idle signal");
                prop_assert!(t - since >= 60, "zero after {}s idle: {}", t - since, d.explanation);
            }
            if before > 0 && rate.is_none() {
                prop_assert!(d.desired_replicas >= 1, "{}", d.explanation);
            }
            if before == 0 && d.desired_replicas > 0 {
                prop_assert!(rate.is_some_and(|r| r > 0.0), "started without a signal: {}", d.explanation);
            }
        }
    }
}
