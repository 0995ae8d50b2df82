//! An idle fleet: a latency rule with no traffic in its window reads as zero (no
//! pressure), where the same rule with no data for any other reason holds the fleet.

use vllm_scaling_core::{
    CurrentScale, Decision, Engine, LimitedBy, PodMetrics, ResolvedPolicy, RuleStatus, ScalingMetrics, Scenario,
    Timestamp, parse_policy,
};

fn policy(rules: &str) -> ResolvedPolicy {
    let yaml = format!(
        "minReplicas: 2\nmaxReplicas: 20\nscalingRules:\n{rules}\nbehavior: {{scaleDown: {{stabilizationWindowSeconds: 0}}}}\n"
    );
    parse_policy(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")).1
}

const QUEUE_AND_TTFT: &str = "  - {metric: queue_length, threshold: 10}\n  - {metric: ttft, threshold: 2000}";

fn pods(queue: &[f64]) -> ScalingMetrics {
    let pods =
        queue.iter().enumerate().map(|(i, &q)| PodMetrics::running(format!("p{i}")).with("queue_length", q)).collect();
    ScalingMetrics { pods, ..Default::default() }
}

fn eval(p: &ResolvedPolicy, current: i32, m: &ScalingMetrics) -> Decision {
    Engine::new(p.clone()).evaluate(Timestamp::from_secs(1000), CurrentScale::new(current), m)
}

#[test]
fn an_idle_latency_rule_lets_the_fleet_scale_down() {
    let mut m = pods(&[0.0; 6]);
    m.idle.insert("ttft".into());
    let d = eval(&policy(QUEUE_AND_TTFT), 6, &m);
    assert_eq!((d.desired_replicas, d.limited_by), (2, LimitedBy::MinReplicas), "{}", d.explanation);
    let ttft = &d.rules[1];
    assert_eq!((ttft.status, ttft.proposal, ttft.observed), (RuleStatus::Ok, Some(0), Some(0.0)));
    assert!(d.explanation.contains("idle: nothing served"), "{}", d.explanation);
}

#[test]
fn the_same_rule_without_data_holds_the_fleet() {
    let mut m = pods(&[0.0; 6]);
    m.failures.insert("ttft".into(), "no requests finished in the window".into());
    let d = eval(&policy(QUEUE_AND_TTFT), 6, &m);
    assert_eq!(d.desired_replicas, 6, "{}", d.explanation);
    assert!(d.explanation.contains("replicas held"), "{}", d.explanation);
}

#[test]
fn a_failure_wins_over_an_idle_mark_for_the_same_rule() {
    let mut m = pods(&[0.0; 6]);
    m.idle.insert("ttft".into());
    m.failures.insert("ttft".into(), "prometheus: connection refused".into());
    let d = eval(&policy(QUEUE_AND_TTFT), 6, &m);
    assert_eq!((d.desired_replicas, d.rules[1].status), (6, RuleStatus::Missing), "{}", d.explanation);
}

#[test]
fn an_idle_rule_never_outvotes_a_busy_one() {
    // Queue 30 per pod on 4 pods proposes 12; the idle latency rule proposes 0.
    let mut m = pods(&[30.0; 4]);
    m.idle.insert("ttft".into());
    let d = eval(&policy(QUEUE_AND_TTFT), 4, &m);
    assert_eq!((d.desired_replicas, d.winning_rule.as_deref()), (8, Some("queue_length")), "{}", d.explanation);
}

#[test]
fn a_latency_only_policy_goes_to_min_replicas_when_idle() {
    let p = policy("  - {metric: latency, threshold: 5000}");
    let mut m =
        ScalingMetrics { pods: (0..5).map(|i| PodMetrics::running(format!("p{i}"))).collect(), ..Default::default() };
    m.idle.insert("latency".into());
    assert_eq!(eval(&p, 5, &m).desired_replicas, 2);
    // Without the idle mark (no value at all), the rule is missing and nothing moves.
    m.idle.clear();
    let d = eval(&p, 5, &m);
    assert_eq!((d.desired_replicas, d.rules[0].status), (5, RuleStatus::Missing), "{}", d.explanation);
}

#[test]
fn scenarios_carry_idle_rules_and_reject_unknown_keys() {
    let scenario = |idle: &str| {
        format!(
            "policy:\n  minReplicas: 1\n  maxReplicas: 8\n  scalingRules: [{{metric: ttft, threshold: 2000}}]\n  behavior: {{scaleDown: {{stabilizationWindowSeconds: 0}}}}\nsteps:\n  - at: 0\n    currentReplicas: 4\n    idle: [{idle}]\n"
        )
    };
    let s = Scenario::parse(&scenario("ttft")).unwrap_or_else(|e| panic!("{e}"));
    let (d, _) = &s.replay().unwrap_or_else(|e| panic!("{e}"))[0];
    assert_eq!(d.desired_replicas, 1, "{}", d.explanation);
    let err = Scenario::parse(&scenario("tftt")).expect_err("an unknown key is refused").to_string();
    assert!(err.contains("idle[0]") && err.contains("tftt"), "{err}");
}

#[test]
fn an_idle_rule_does_not_lift_the_hold_of_a_failed_one() {
    // The queue rule has no data; the idle latency rule alone would scale down: held.
    let mut m =
        ScalingMetrics { pods: (0..6).map(|i| PodMetrics::running(format!("p{i}"))).collect(), ..Default::default() };
    m.failures.insert("queue_length".into(), "scrape failed".into());
    m.idle.insert("ttft".into());
    let d = eval(&policy(QUEUE_AND_TTFT), 6, &m);
    assert_eq!((d.desired_replicas, d.limited_by), (6, LimitedBy::MetricsUnavailable), "{}", d.explanation);
}
