//! Per-rule `fallbackReplicas`: a failed rule stands in with its fallback, which never
//! scales down and never overrides a healthy rule that asks for more.

use proptest::prelude::*;
use vllm_scaling_core::{
    CurrentScale, Decision, Engine, LimitedBy, PodMetrics, ResolvedPolicy, RuleStatus, ScalingMetrics, Timestamp,
    parse_policy,
};

fn policy(yaml: &str) -> ResolvedPolicy {
    parse_policy(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")).1
}

/// queue_length (per pod, threshold 10) and latency (fleet, threshold 1000 ms), the
/// latency rule with the given fallback.
fn two_rules(fallback: Option<i32>, behavior: &str) -> ResolvedPolicy {
    let fb = fallback.map(|f| format!(", fallbackReplicas: {f}")).unwrap_or_default();
    policy(&format!(
        "maxReplicas: 20\nscalingRules:\n  - {{metric: queue_length, threshold: 10}}\n  - {{metric: latency, threshold: 1000{fb}}}\n{behavior}"
    ))
}

fn metrics(queue: &[f64], latency_ms: Option<f64>) -> ScalingMetrics {
    let pods =
        queue.iter().enumerate().map(|(i, &q)| PodMetrics::running(format!("p{i}")).with("queue_length", q)).collect();
    let mut m = ScalingMetrics { pods, ..Default::default() };
    match latency_ms {
        Some(v) => {
            m.fleet.insert("latency".into(), v);
        }
        None => {
            m.failures.insert("latency".into(), "prometheus: connection refused".into());
        }
    }
    m
}

fn eval(p: &ResolvedPolicy, current: i32, m: &ScalingMetrics) -> Decision {
    Engine::new(p.clone()).evaluate(Timestamp::from_secs(1000), CurrentScale::new(current), m)
}

#[test]
fn a_healthy_rule_that_asks_for_more_wins_over_the_fallback() {
    // queue 20 per pod on 4 pods proposes 8; latency is down with fallback 6.
    let d = eval(&two_rules(Some(6), ""), 4, &metrics(&[20.0; 4], None));
    assert_eq!(d.desired_replicas, 8);
    assert_eq!(d.winning_rule.as_deref(), Some("queue_length"));
    let latency = &d.rules[1];
    assert_eq!((latency.status, latency.proposal, latency.fallback), (RuleStatus::Missing, Some(6), true));
    assert!(d.explanation.contains("fallbackReplicas propose 6"), "{}", d.explanation);
}

#[test]
fn a_fallback_above_the_healthy_rules_scales_up() {
    // queue proposes 5 on 4 pods; fallback 10 wins, held to the legacy ×2 limit (8).
    let d = eval(&two_rules(Some(10), ""), 4, &metrics(&[12.5; 4], None));
    assert_eq!((d.proposed_replicas, d.desired_replicas, d.limited_by), (Some(10), 8, LimitedBy::ScaleUpPolicy));
    assert_eq!(d.winning_rule.as_deref(), Some("latency"));
}

#[test]
fn a_fallback_never_scales_down() {
    // The healthy rule wants 2 of 6; the failing rule's fallback is 3: replicas held at 6
    // (the fallback proposes max(3, current)), exactly as the HPA holds without one.
    let behavior = "behavior: {scaleDown: {stabilizationWindowSeconds: 0}}\n";
    let with = eval(&two_rules(Some(3), behavior), 6, &metrics(&[3.0; 6], None));
    let without = eval(&two_rules(None, behavior), 6, &metrics(&[3.0; 6], None));
    assert_eq!(with.desired_replicas, 6);
    assert_eq!(with.rules[1].proposal, Some(6));
    assert_eq!((without.desired_replicas, without.limited_by), (6, LimitedBy::MetricsUnavailable));
    // Healthy again: the scale-down happens.
    let healthy = eval(&two_rules(Some(3), behavior), 6, &metrics(&[3.0; 6], Some(100.0)));
    assert_eq!(healthy.desired_replicas, 2);
    assert!(!healthy.rules[1].fallback);
}

#[test]
fn every_rule_failing_uses_the_fallbacks() {
    let p = policy(
        "maxReplicas: 20\nscalingRules:\n  - {metric: queue_length, threshold: 10, fallbackReplicas: 5}\n  - {metric: latency, threshold: 1000}\n",
    );
    let m = ScalingMetrics::all_failed(["queue_length", "latency"], "scrape timed out");
    let d = eval(&p, 2, &m);
    assert_eq!((d.desired_replicas, d.limited_by), (4, LimitedBy::ScaleUpPolicy)); // 5, held to max(2×2, 4)
    // Without any fallback the HPA holds.
    let d = eval(&two_rules(None, ""), 2, &ScalingMetrics::all_failed(["queue_length", "latency"], "down"));
    assert_eq!((d.desired_replicas, d.limited_by), (2, LimitedBy::MetricsUnavailable));
}

#[test]
fn an_invalid_value_also_falls_back() {
    let d = eval(&two_rules(Some(9), ""), 6, &metrics(&[10.0; 6], Some(f64::NAN)));
    assert_eq!(d.rules[1].status, RuleStatus::Invalid);
    assert_eq!((d.rules[1].proposal, d.rules[1].fallback), (Some(9), true));
    assert_eq!(d.desired_replicas, 9);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Against the same engine without fallbacks: never fewer replicas, never a
    /// scale-down while a rule fails, and the proposal is exactly the healthy max raised
    /// to max(fallback, current).
    #[test]
    fn fallback_never_lowers_replicas_below_the_healthy_max(
        current in 1..16i32,
        queue in prop::collection::vec(0.0..40.0f64, 1..16),
        latency in prop::option::weighted(0.5, 0.0..3000.0f64),
        fallback in 1..20i32,
        behavior in prop_oneof![Just(""), Just("behavior: {scaleDown: {stabilizationWindowSeconds: 0}}\n")],
    ) {
        let m = metrics(&queue, latency);
        let with = eval(&two_rules(Some(fallback), behavior), current, &m);
        let without = eval(&two_rules(None, behavior), current, &m);
        prop_assert!(with.desired_replicas >= without.desired_replicas, "{} < {}", with.explanation, without.explanation);
        if latency.is_none() {
            prop_assert!(with.desired_replicas >= current, "scaled down while a rule failed: {}", with.explanation);
            let healthy = with.rules[0].proposal.filter(|_| with.rules[0].status == RuleStatus::Ok);
            let expected = healthy.unwrap_or(i32::MIN).max(fallback.max(current));
            prop_assert_eq!(with.proposed_replicas, Some(expected), "{}", with.explanation);
        } else {
            // A healthy rule set: the fallback is not used and nothing changes.
            prop_assert_eq!(&with.desired_replicas, &without.desired_replicas);
            prop_assert!(with.rules.iter().all(|r| !r.fallback));
        }
    }
}
