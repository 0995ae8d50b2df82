//! Differential vectors against the Kubernetes HPA controller.
//!
//! Each case is named after the upstream test in `pkg/controller/podautoscaler`
//! (`replica_calculator_test.go`, `horizontal_test.go`) whose behaviour it pins down,
//! adapted to the metric types this engine uses (a per-pod rule is an HPA Pods metric
//! with an AverageValue target; a fleet rule is an External metric). The expected
//! numbers were derived by hand from the HPA algorithm, not by running this code.

use std::time::Duration;

use vllm_scaling_core::{
    CurrentScale, Decision, Engine, EngineConfig, EngineState, LimitedBy, PodMetrics, PodPhase, Recommendation,
    ResolvedPolicy, RuleStatus, ScaleEvent, ScalingMetrics, Timestamp, parse_policy,
};

const Q: &str = "queue_length";

fn policy(yaml: &str) -> ResolvedPolicy {
    parse_policy(yaml).unwrap_or_else(|e| panic!("bad test policy: {e}\n{yaml}")).1
}

/// A one-rule queue_length policy with a wide max, so only the calculator matters.
fn queue_policy(threshold: f64, extra: &str) -> ResolvedPolicy {
    policy(&format!("maxReplicas: 1000\nscalingRules: [{{metric: queue_length, threshold: {threshold}}}]\n{extra}"))
}

#[derive(Clone, Copy)]
enum P {
    /// Running, ready, reporting this value.
    V(f64),
    /// Running but not Ready, reporting this value.
    NotReady(f64),
    /// Pending (reporting nothing or a value that must be ignored).
    Pending(Option<f64>),
    /// Running, no value.
    Missing,
    /// Failed, reporting a value that must be ignored.
    Failed(f64),
    /// Being deleted, reporting a value that must be ignored.
    Deleting(f64),
}

fn pods(key: &str, spec: &[P]) -> Vec<PodMetrics> {
    spec.iter()
        .enumerate()
        .map(|(i, p)| {
            let mut pod = PodMetrics::running(format!("pod-{i}"));
            let value = match *p {
                P::V(v) => Some(v),
                P::NotReady(v) => {
                    pod.ready = false;
                    Some(v)
                }
                P::Pending(v) => {
                    pod.phase = PodPhase::Pending;
                    pod.ready = false;
                    v
                }
                P::Missing => None,
                P::Failed(v) => {
                    pod.phase = PodPhase::Failed;
                    Some(v)
                }
                P::Deleting(v) => {
                    pod.deleting = true;
                    Some(v)
                }
            };
            if let Some(v) = value {
                pod.metrics.insert(key.to_owned(), v);
            }
            pod
        })
        .collect()
}

fn eval(p: &ResolvedPolicy, current: i32, metrics: &ScalingMetrics) -> Decision {
    Engine::new(p.clone()).evaluate(Timestamp::from_secs(1000), CurrentScale::new(current), metrics)
}

fn queue(current: i32, threshold: f64, spec: &[P]) -> Decision {
    eval(&queue_policy(threshold, ""), current, &ScalingMetrics { pods: pods(Q, spec), ..Default::default() })
}

// --- Replica calculator: Pods metric, AverageValue --------------------------------------

#[test]
fn replica_calc_scale_up_cm() {
    // avg 20 vs 15 -> ratio 1.333 -> ceil(1.333 * 3) = 4
    let d = queue(3, 15.0, &[P::V(20.0), P::V(10.0), P::V(30.0)]);
    assert_eq!(d.rules[0].proposal, Some(4));
    assert_eq!(d.rules[0].observed, Some(20.0));
    assert_eq!(d.desired_replicas, 4);
}

#[test]
fn replica_calc_scale_up_cm_unready_pods_still_count() {
    // A Pods metric ignores readiness (only Pending is unready): avg 30 vs 15 -> 6.
    let d = queue(3, 15.0, &[P::NotReady(50.0), P::V(10.0), P::NotReady(30.0)]);
    assert_eq!(d.rules[0].proposal, Some(6));
}

#[test]
fn replica_calc_scale_down_cm() {
    let d = queue(5, 20.0, &[P::V(12.0); 5]);
    assert_eq!(d.rules[0].proposal, Some(3));
}

#[test]
fn replica_calc_tolerance_cm() {
    // (20 + 21 + 21) / 3 = 20.666 (integer milli-average 20666) -> ratio 1.033: within.
    let d = queue(3, 20.0, &[P::V(20.0), P::V(21.0), P::V(21.0)]);
    assert_eq!(d.rules[0].proposal, Some(3));
    assert_eq!(d.limited_by, LimitedBy::Tolerance);
}

#[test]
fn replica_calc_scale_up_unready_less_scale() {
    // Pending pod dropped: avg 60 vs 30 = 2.0 > 1 with an unready pod -> it counts as 0:
    // 120/3 = 40 -> 1.333 -> ceil(1.333 * 3) = 4 (6 without the unready rule).
    let d = queue(3, 30.0, &[P::Pending(Some(100.0)), P::V(50.0), P::V(70.0)]);
    assert_eq!(d.rules[0].proposal, Some(4));
    assert_eq!(d.rules[0].observed, Some(60.0), "status reports the first-pass average");
}

#[test]
fn replica_calc_scale_up_unready_no_scale() {
    // avg 37.5 vs 30 = 1.25; with the Pending pod at 0: 25 -> 0.833, the direction
    // flips, so no change.
    let d = queue(3, 30.0, &[P::Pending(None), P::V(40.0), P::V(35.0)]);
    assert_eq!(d.rules[0].proposal, Some(3));
}

#[test]
fn replica_calc_scale_down_exclude_unscheduled_pods() {
    // Pending pods are simply dropped on a scale-down: ceil(0.5 * 4) = 2.
    let d = queue(5, 20.0, &[P::V(10.0), P::V(10.0), P::V(10.0), P::V(10.0), P::Pending(None)]);
    assert_eq!(d.rules[0].proposal, Some(2));
}

#[test]
fn replica_calc_missing_metrics_scale_down_fills_target() {
    // ratio 0.5 -> missing pods count as at the target: (10+10+20+20)/4 = 15 -> 0.75 -> 3.
    let d = queue(4, 20.0, &[P::V(10.0), P::V(10.0), P::Missing, P::Missing]);
    assert_eq!(d.rules[0].proposal, Some(3));
}

#[test]
fn replica_calc_missing_metrics_scale_up_fills_zero() {
    // ratio 2 -> missing count as 0: 80/4 = 20 -> 1.0, within: no change.
    let d = queue(4, 20.0, &[P::V(40.0), P::V(40.0), P::Missing, P::Missing]);
    assert_eq!(d.rules[0].proposal, Some(4));
    // ratio 3 -> (60+60+0+0)/4 = 30 -> 1.5 -> ceil(1.5 * 4) = 6.
    let d = queue(4, 20.0, &[P::V(60.0), P::V(60.0), P::Missing, P::Missing]);
    assert_eq!(d.rules[0].proposal, Some(6));
}

#[test]
fn replica_calc_missing_metrics_no_change_eq() {
    // ratio exactly 1.0: nothing is filled in, no change (never a scale-down).
    let d = queue(4, 20.0, &[P::V(20.0), P::V(20.0), P::Missing, P::Missing]);
    assert_eq!(d.rules[0].proposal, Some(4));
}

#[test]
fn replica_calc_missing_metrics_unready_scale_up() {
    // samples 50, 50 vs 20 = 2.5; the missing and the Pending pod both count as 0:
    // 100/4 = 25 -> 1.25 -> ceil(1.25 * 4) = 5.
    let d = queue(4, 20.0, &[P::Pending(None), P::V(50.0), P::V(50.0), P::Missing]);
    assert_eq!(d.rules[0].proposal, Some(5));
}

#[test]
fn replica_calc_missing_metrics_unready_scale_down() {
    // ratio 0.5 with an unready pod: unready pods are not filled on a scale-down, the
    // missing one counts at the target: (10+10+20)/3 = 13.333 -> 0.666 -> ceil(2.0) = 2.
    let d = queue(4, 20.0, &[P::Pending(None), P::V(10.0), P::V(10.0), P::Missing]);
    assert_eq!(d.rules[0].proposal, Some(2));
}

#[test]
fn replica_calc_ignores_failed_and_deleting_pods() {
    let d = queue(3, 15.0, &[P::Failed(1000.0), P::Deleting(1000.0), P::V(20.0), P::V(10.0), P::V(30.0)]);
    assert_eq!(d.rules[0].proposal, Some(4));
}

#[test]
fn replica_calc_during_rolling_update_with_max_surge_cm() {
    // More ready pods than current: the fast path multiplies by the ready count.
    let d = queue(2, 10.0, &[P::V(30.0), P::V(30.0), P::V(30.0)]);
    assert_eq!(d.rules[0].proposal, Some(9));
}

#[test]
fn replica_calc_no_pods_or_no_samples_is_missing() {
    let d = queue(3, 10.0, &[]);
    assert_eq!(d.rules[0].status, RuleStatus::Missing);
    let d = queue(3, 10.0, &[P::Missing, P::Pending(Some(5.0))]);
    assert_eq!(d.rules[0].status, RuleStatus::Missing);
    assert_eq!(d.desired_replicas, 3);
    assert_eq!(d.limited_by, LimitedBy::MetricsUnavailable);
}

#[test]
fn tolerance_boundaries_use_the_per_direction_form() {
    // 110 % of target: 1.1 <= 1.0 + 0.1 in f64, so no scale (the <=1.32 form would scale).
    assert_eq!(queue(4, 10.0, &[P::V(11.0); 4]).desired_replicas, 4);
    // 90 %: within.
    assert_eq!(queue(4, 10.0, &[P::V(9.0); 4]).desired_replicas, 4);
    // Just outside: 11.001 -> ratio 1.1001 -> ceil(4.4004) = 5.
    assert_eq!(queue(4, 10.0, &[P::V(11.001); 4]).rules[0].proposal, Some(5));
    // Per-direction: a 5 % up band scales at 108 %.
    let p = queue_policy(10.0, "tolerance: {scaleUp: 0.05}");
    let d = eval(&p, 4, &ScalingMetrics { pods: pods(Q, &[P::V(10.8); 4]), ..Default::default() });
    assert_eq!(d.rules[0].proposal, Some(5));
}

#[test]
fn milli_unit_average_truncates() {
    // Values 1, 1, 2 -> milli average 4000/3 = 1333 (integer) vs target 1 -> 1.333 -> 4.
    let d = queue(3, 1.0, &[P::V(1.0), P::V(1.0), P::V(2.0)]);
    assert_eq!(d.rules[0].proposal, Some(4));
    assert_eq!(d.rules[0].observed, Some(1.333));
}

// --- External metrics: Value and AverageValue targets -----------------------------------

fn fleet(key: &str, v: f64) -> ScalingMetrics {
    ScalingMetrics { fleet: [(key.to_owned(), v)].into(), ..Default::default() }
}

#[test]
fn replica_calc_scale_up_cm_external_value_uses_ready_pods() {
    let p = policy("maxReplicas: 100\nscalingRules: [{metric: latency, threshold: 1000}]");
    let mut m = fleet("latency", 1500.0);
    m.pods = pods("x", &[P::V(0.0), P::V(0.0), P::V(0.0)]);
    assert_eq!(eval(&p, 3, &m).rules[0].proposal, Some(5)); // ceil(1.5 * 3)
    // Only Running-and-Ready pods count: 2 of 4 -> ceil(2.0 * 2) = 4.
    let mut m = fleet("latency", 2000.0);
    m.pods = pods("x", &[P::V(0.0), P::NotReady(0.0), P::V(0.0), P::Pending(None)]);
    assert_eq!(eval(&p, 4, &m).rules[0].proposal, Some(4));
}

#[test]
fn replica_calc_tolerance_cm_external() {
    let p = policy("maxReplicas: 100\nscalingRules: [{metric: latency, threshold: 1000}]");
    let mut m = fleet("latency", 1050.0);
    m.pods = pods("x", &[P::V(0.0); 3]);
    let d = eval(&p, 3, &m);
    assert_eq!(d.rules[0].proposal, Some(3));
    assert_eq!(d.limited_by, LimitedBy::Tolerance);
}

#[test]
fn external_value_with_no_ready_pods_proposes_zero_then_min() {
    let p = policy("minReplicas: 2\nmaxReplicas: 100\nscalingRules: [{metric: latency, threshold: 1000}]");
    let mut m = fleet("latency", 3000.0);
    m.pods = pods("x", &[P::NotReady(0.0), P::NotReady(0.0), P::NotReady(0.0)]);
    // A fresh engine's seeded history (3) holds the first evaluation, as in the HPA.
    let mut e = Engine::with_config(p, EngineConfig::default().with_downscale_stabilization(Duration::ZERO));
    let d = e.evaluate(Timestamp::from_secs(0), CurrentScale::new(3), &m);
    assert_eq!((d.rules[0].proposal, d.desired_replicas), (Some(0), 3));
    let d = e.evaluate(Timestamp::from_secs(15), CurrentScale::new(3), &m);
    assert_eq!((d.desired_replicas, d.limited_by), (2, LimitedBy::MinReplicas));
}

#[test]
fn replica_calc_scale_up_per_pod_cm_external_uses_status_replicas() {
    // AverageValue on a fleet total: ratio = 100 / (10 * statusReplicas 4) = 2.5 ->
    // ceil(100 / 10) = 10, whatever spec.replicas says.
    let p = queue_policy(10.0, "");
    let d = Engine::new(p.clone()).evaluate(
        Timestamp::ZERO,
        CurrentScale { replicas: 5, status_replicas: Some(4) },
        &fleet(Q, 100.0),
    );
    assert_eq!(d.rules[0].proposal, Some(10));
    assert_eq!(d.rules[0].observed, Some(25.0));
    // Within tolerance: the proposal is statusReplicas (4), not spec.replicas.
    let d = Engine::new(p).evaluate(
        Timestamp::ZERO,
        CurrentScale { replicas: 5, status_replicas: Some(4) },
        &fleet(Q, 41.0),
    );
    assert_eq!(d.rules[0].proposal, Some(4));
}

// --- Several metrics (computeReplicasForMetrics) ----------------------------------------

fn two_rules() -> ResolvedPolicy {
    policy(
        "maxReplicas: 100\nscalingRules: [{metric: queue_length, threshold: 10}, {metric: kv_cache_usage, threshold: 80}]",
    )
}

fn two(queue: &[P], kv: &[Option<f64>]) -> ScalingMetrics {
    let mut ps = pods(Q, queue);
    for (p, v) in ps.iter_mut().zip(kv) {
        if let Some(v) = v {
            p.metrics.insert("kv_cache_usage".into(), *v);
        }
    }
    ScalingMetrics { pods: ps, ..Default::default() }
}

#[test]
fn scale_up_one_metric_invalid() {
    let d = eval(&two_rules(), 3, &two(&[P::V(20.0); 3], &[Some(f64::NAN), Some(50.0), Some(50.0)]));
    assert_eq!(d.rules[1].status, RuleStatus::Invalid);
    assert_eq!(d.desired_replicas, 6);
}

#[test]
fn no_scale_down_one_metric_invalid() {
    let d = eval(&two_rules(), 4, &two(&[P::V(2.0); 4], &[Some(-1.0), Some(10.0), Some(10.0), Some(10.0)]));
    assert_eq!(d.rules[0].proposal, Some(1));
    assert_eq!(d.desired_replicas, 4);
    assert_eq!(d.limited_by, LimitedBy::MetricsUnavailable);
}

#[test]
fn no_scale_down_one_metric_empty() {
    let d = eval(&two_rules(), 4, &two(&[P::V(2.0); 4], &[]));
    assert_eq!(d.rules[1].status, RuleStatus::Missing);
    assert_eq!(d.desired_replicas, 4);
}

#[test]
fn scale_up_both_metrics_empty() {
    let d = eval(&two_rules(), 4, &two(&[P::Missing; 4], &[]));
    assert_eq!(d.desired_replicas, 4);
    assert_eq!(d.limited_by, LimitedBy::MetricsUnavailable);
    assert!(!d.actuate);
}

#[test]
fn max_of_proposals_wins() {
    // queue proposes ceil(2 * 3) = 6, kv proposes ceil(1.25 * 3) = 4.
    let d = eval(&two_rules(), 3, &two(&[P::V(20.0); 3], &[Some(100.0); 3]));
    assert_eq!((d.desired_replicas, d.winning_rule.as_deref()), (6, Some("queue_length")));
}

// --- Controller shortcuts and legacy normalization --------------------------------------

#[test]
fn zero_replicas_is_hands_off() {
    let d = queue(0, 10.0, &[]);
    assert_eq!((d.desired_replicas, d.limited_by, d.actuate), (0, LimitedBy::ScalingDisabled, false));
}

#[test]
fn too_many_and_too_few_replicas() {
    let p = policy("minReplicas: 3\nmaxReplicas: 10\nscalingRules: [{metric: queue_length, threshold: 10}]");
    let m = ScalingMetrics { pods: pods(Q, &[P::V(100.0); 12]), ..Default::default() };
    let d = eval(&p, 12, &m);
    assert_eq!((d.desired_replicas, d.limited_by), (10, LimitedBy::MaxReplicas));
    let d = eval(&p, 1, &ScalingMetrics::default());
    assert_eq!((d.desired_replicas, d.limited_by), (3, LimitedBy::MinReplicas));
}

#[test]
fn upscale_cap_without_behavior() {
    // Proposal ceil(8 * 3) = 24, capped at max(2 * 3, 4) = 6.
    let d = queue(3, 10.0, &[P::V(80.0); 3]);
    assert_eq!((d.desired_replicas, d.limited_by), (6, LimitedBy::ScaleUpPolicy));
    // From 1 replica the cap is 4.
    let d = queue(1, 10.0, &[P::V(80.0)]);
    assert_eq!(d.desired_replicas, 4);
}

#[test]
fn upscale_cap_greater_than_max_replicas() {
    let p = policy("maxReplicas: 5\nscalingRules: [{metric: queue_length, threshold: 10}]");
    let d = eval(&p, 3, &ScalingMetrics { pods: pods(Q, &[P::V(80.0); 3]), ..Default::default() });
    assert_eq!((d.desired_replicas, d.limited_by), (5, LimitedBy::MaxReplicas));
}

#[test]
fn min_replicas_clamps_a_low_proposal() {
    let p = policy("minReplicas: 2\nmaxReplicas: 10\nscalingRules: [{metric: queue_length, threshold: 10}]");
    let mut e = Engine::new(p);
    e.restore_state(EngineState {
        recommendations: vec![Recommendation { at: Timestamp::ZERO, replicas: 1 }],
        ..Default::default()
    });
    let d = e.evaluate(
        Timestamp::from_secs(1000),
        CurrentScale::new(4),
        &ScalingMetrics { pods: pods(Q, &[P::V(0.0); 4]), ..Default::default() },
    );
    assert_eq!((d.desired_replicas, d.limited_by), (2, LimitedBy::MinReplicas));
}

#[test]
fn stabilize_downscale_legacy_window_edges() {
    let p = queue_policy(10.0, "");
    let m = ScalingMetrics { pods: pods(Q, &[P::V(5.0); 4]), ..Default::default() }; // proposes 2
    let at = |s: u64| Timestamp::from_secs(s);
    // A recommendation of 4 exactly 300 s old is still in the window (ts >= now - 300 s).
    let mut e = Engine::new(p.clone());
    e.restore_state(EngineState {
        recommendations: vec![Recommendation { at: at(0), replicas: 4 }],
        ..Default::default()
    });
    let d = e.evaluate(at(300), CurrentScale::new(4), &m);
    assert_eq!((d.desired_replicas, d.limited_by), (4, LimitedBy::ScaleDownStabilization));
    // One millisecond later it is not.
    let mut e = Engine::new(p);
    e.restore_state(EngineState {
        recommendations: vec![Recommendation { at: at(0), replicas: 4 }],
        ..Default::default()
    });
    let d = e.evaluate(Timestamp::from_millis(300_001), CurrentScale::new(4), &m);
    assert_eq!(d.desired_replicas, 2);
    // The old slot was reused, not appended.
    assert_eq!(e.state().recommendations.len(), 1);
}

#[test]
fn scale_down_stabilize_initial_size() {
    // A fresh engine seeds its history with the current replicas: no scale-down at once.
    let d = queue(4, 10.0, &[P::V(1.0); 4]);
    assert_eq!((d.desired_replicas, d.limited_by), (4, LimitedBy::ScaleDownStabilization));
}

#[test]
fn legacy_config_window_is_honoured() {
    let p = queue_policy(10.0, "");
    let mut e = Engine::with_config(p, EngineConfig::default().with_downscale_stabilization(Duration::ZERO));
    let m = ScalingMetrics { pods: pods(Q, &[P::V(1.0); 4]), ..Default::default() };
    // The seed entry is at `now` itself, and with a 0 s window `ts >= now` keeps it: 4.
    assert_eq!(e.evaluate(Timestamp::from_secs(0), CurrentScale::new(4), &m).desired_replicas, 4);
    assert_eq!(e.evaluate(Timestamp::from_secs(15), CurrentScale::new(4), &m).desired_replicas, 1);
}

// --- Normalization with behavior (stabilization) ----------------------------------------

fn with_history(p: ResolvedPolicy, now_s: u64, recs: &[(u64, i32)], up: &[(u64, i32)], down: &[(u64, i32)]) -> Engine {
    let ev = |l: &[(u64, i32)]| {
        l.iter()
            .map(|&(ago, change)| ScaleEvent { at: Timestamp::from_secs(now_s - ago), change, outdated: false })
            .collect()
    };
    let mut e = Engine::new(p);
    e.restore_state(EngineState {
        recommendations: recs
            .iter()
            .map(|&(ago, r)| Recommendation { at: Timestamp::from_secs(now_s - ago), replicas: r })
            .collect(),
        scale_up_events: ev(up),
        scale_down_events: ev(down),
        ..Default::default()
    });
    e
}

/// Evaluates a queue_length policy with `behavior` at t=1000 s where the rule proposes
/// exactly `desired`: a fleet total of `desired * 10` against a per-replica threshold of
/// 10 gives `ceil(total / 10)` (HPA External AverageValue), with no tolerance.
#[allow(clippy::too_many_arguments)]
fn behave(
    behavior: &str,
    min: i32,
    max: i32,
    current: i32,
    desired: i32,
    recs: &[(u64, i32)],
    up: &[(u64, i32)],
    down: &[(u64, i32)],
) -> Decision {
    let p = policy(&format!(
        "minReplicas: {min}\nmaxReplicas: {max}\ntolerance: 0\nscalingRules: [{{metric: queue_length, threshold: 10}}]\nbehavior: {behavior}"
    ));
    let mut e = with_history(p, 1000, recs, up, down);
    let d = e.evaluate(Timestamp::from_secs(1000), CurrentScale::new(current), &fleet(Q, f64::from(desired) * 10.0));
    assert_eq!(d.proposed_replicas, Some(desired), "test set-up: the rule should propose {desired}");
    d
}

#[test]
fn normalize_with_behavior_stabilizes_scale_down() {
    // current 5, desired 2, recommendations in the last 300 s {6, 4, 3}: stays 5.
    let d = behave("{}", 1, 100, 5, 2, &[(10, 6), (20, 4), (30, 3)], &[], &[]);
    assert_eq!((d.desired_replicas, d.limited_by), (5, LimitedBy::ScaleDownStabilization));
    // The same history 301 s old: free to go down (100 % per 15 s allows it).
    let d = behave("{}", 1, 100, 5, 2, &[(301, 6), (302, 4), (303, 3)], &[], &[]);
    assert_eq!(d.desired_replicas, 2);
}

#[test]
fn normalize_with_behavior_stabilizes_scale_up() {
    // current 3, desired 8, up window 60 s with {4, 6}: the min over the window, 4.
    let d = behave("{scaleUp: {stabilizationWindowSeconds: 60}}", 1, 100, 3, 8, &[(10, 4), (20, 6)], &[], &[]);
    assert_eq!((d.desired_replicas, d.limited_by), (4, LimitedBy::ScaleUpStabilization));
}

#[test]
fn behavior_window_edge_is_strict() {
    // An entry exactly 300 s old is outside a behavior window (ts > now - window).
    let d = behave("{}", 1, 100, 5, 2, &[(300, 6)], &[], &[]);
    assert_eq!(d.desired_replicas, 2);
    let d = behave("{}", 1, 100, 5, 2, &[(299, 6)], &[], &[]);
    assert_eq!(d.desired_replicas, 5);
}

#[test]
fn do_not_scale_up_when_prenormalized_recommendation_goes_down() {
    // current 5, desired 4, with an up window holding 6: clamp(current, [min(4,6), max(4, 6)])
    // = 5: neither direction moves.
    let d = behave("{scaleUp: {stabilizationWindowSeconds: 300}}", 1, 100, 5, 4, &[(10, 6)], &[], &[]);
    assert_eq!(d.desired_replicas, 5);
}

// --- Rate policies (TestScalingWithRules) -----------------------------------------------

const NO_STAB: &str = "scaleDown: {stabilizationWindowSeconds: 0}";

#[test]
fn scale_up_with_default_behavior() {
    // max(5 + 4, ceil(5 * 2.0)) = 10.
    let d = behave("{}", 1, 100, 5, 50, &[], &[], &[]);
    assert_eq!((d.desired_replicas, d.limited_by), (10, LimitedBy::ScaleUpPolicy));
}

#[test]
fn scale_up_pods_policy_larger_than_percent() {
    let b = "{scaleUp: {policies: [{type: Pods, value: 100, periodSeconds: 60}, {type: Percent, value: 100, periodSeconds: 60}]}}";
    let d = behave(b, 1, 1000, 3, 500, &[], &[], &[]);
    assert_eq!(d.desired_replicas, 103);
    // The max bound wins when it is tighter.
    let d = behave(b, 1, 10, 3, 500, &[], &[], &[]);
    assert_eq!((d.desired_replicas, d.limited_by), (10, LimitedBy::MaxReplicas));
}

#[test]
fn scale_up_select_policy_min_and_disabled() {
    let b = "{scaleUp: {selectPolicy: Min, policies: [{type: Pods, value: 4, periodSeconds: 15}, {type: Percent, value: 100, periodSeconds: 15}]}}";
    // current 1: min(1 + 4, ceil(1 * 2)) = 2.
    let d = behave(b, 1, 100, 1, 10, &[], &[], &[]);
    assert_eq!(d.desired_replicas, 2);
    let d = behave("{scaleUp: {selectPolicy: Disabled}}", 1, 100, 3, 10, &[], &[], &[]);
    assert_eq!((d.desired_replicas, d.limited_by), (3, LimitedBy::ScaleUpPolicy));
}

#[test]
fn scale_up_with_previous_events_in_period() {
    // 4 replicas were added 10 s ago (8 now): period start 4 -> limit max(4+4, 8) = 8,
    // which is not above current: no further scale-up until the event ages out.
    let d = behave("{}", 1, 100, 8, 20, &[], &[(10, 4)], &[]);
    assert_eq!((d.desired_replicas, d.limited_by), (8, LimitedBy::ScaleUpPolicy));
    // 16 s later the event is outside the 15 s period: max(8 + 4, 16) = 16.
    let d = behave("{}", 1, 100, 8, 20, &[], &[(16, 4)], &[]);
    assert_eq!(d.desired_replicas, 16);
}

#[test]
fn scale_down_with_previous_events_preventing_further_scale_down() {
    let b = format!(
        "{{{NO_STAB}, scaleDown: {{stabilizationWindowSeconds: 0, policies: [{{type: Pods, value: 1, periodSeconds: 60}}]}}}}"
    );
    let b = b.replace(&format!("{NO_STAB}, "), "");
    // 10 -> 9 happened 30 s ago: period start 10, limit 10 - 1 = 9: stays at 9.
    let d = behave(&b, 1, 100, 9, 2, &[], &[], &[(30, 1)]);
    assert_eq!((d.desired_replicas, d.limited_by), (9, LimitedBy::ScaleDownPolicy));
    // Without the event, one pod per minute: 8.
    let d = behave(&b, 1, 100, 9, 2, &[], &[], &[]);
    assert_eq!(d.desired_replicas, 8);
}

#[test]
fn scale_down_select_policy_min_takes_the_smaller_change() {
    let b = "{scaleDown: {stabilizationWindowSeconds: 0, selectPolicy: Min, policies: [{type: Pods, value: 1, periodSeconds: 15}, {type: Percent, value: 50, periodSeconds: 15}]}}";
    // Max of (10 - 1, trunc(10 * 0.5)) = 9.
    let d = behave(b, 1, 100, 10, 2, &[], &[], &[]);
    assert_eq!(d.desired_replicas, 9);
    let b = b.replace("selectPolicy: Min", "selectPolicy: Max");
    let d = behave(&b, 1, 100, 10, 2, &[], &[], &[]);
    assert_eq!(d.desired_replicas, 5);
}

#[test]
fn percent_policies_round_like_go_float64() {
    // periodStart 25 at +12 %: ceil(25 * 1.12) = ceil(28.000000000000004) = 29.
    let b = "{scaleUp: {policies: [{type: Percent, value: 12, periodSeconds: 15}]}}";
    assert_eq!(behave(b, 1, 1000, 25, 100, &[], &[], &[]).desired_replicas, 29);
    // periodStart 10 at -80 %: trunc(10 * 0.19999999999999996) = 1 (exact math: 2).
    let b = "{scaleDown: {stabilizationWindowSeconds: 0, policies: [{type: Percent, value: 80, periodSeconds: 15}]}}";
    assert_eq!(behave(b, 1, 1000, 10, 1, &[], &[], &[]).desired_replicas, 1);
    // periodStart 5 at -80 %: 0, so the min bound (1) limits.
    let d = behave(b, 1, 1000, 5, 1, &[], &[], &[]);
    assert_eq!(d.desired_replicas, 1);
}

#[test]
fn min_and_max_bound_large_policies() {
    let b = "{scaleDown: {stabilizationWindowSeconds: 0, policies: [{type: Pods, value: 100, periodSeconds: 15}]}}";
    let d = behave(b, 3, 100, 10, 1, &[], &[], &[]);
    assert_eq!((d.desired_replicas, d.limited_by), (3, LimitedBy::MinReplicas));
}

#[test]
fn store_scale_events_reuses_outdated_slots() {
    let p = policy("maxReplicas: 100\nscalingRules: [{metric: queue_length, threshold: 10}]\nbehavior: {}");
    let mut e = Engine::new(p.clone());
    e.record_scale(Timestamp::from_secs(0), 2, 4);
    e.record_scale(Timestamp::from_secs(5), 4, 6);
    assert_eq!(e.state().scale_up_events.len(), 2);
    // 30 s later both are older than the 15 s period: the last outdated slot is reused.
    e.record_scale(Timestamp::from_secs(35), 6, 9);
    let ev = &e.state().scale_up_events;
    assert_eq!(ev.len(), 2);
    assert!(ev[0].outdated);
    assert_eq!((ev[1].at, ev[1].change, ev[1].outdated), (Timestamp::from_secs(35), 3, false));
    e.record_scale(Timestamp::from_secs(36), 9, 7);
    assert_eq!(e.state().scale_down_events.len(), 1);
    // Without behavior nothing is stored (legacy path).
    let mut legacy = Engine::new(queue_policy(10.0, ""));
    legacy.record_scale(Timestamp::from_secs(0), 2, 4);
    assert!(legacy.state().scale_up_events.is_empty());
}

#[test]
fn unset_scale_down_window_comes_from_the_controller_setting() {
    // horizontal.go maybeInitScaleDownStabilizationWindow: a `behavior` without
    // `scaleDown.stabilizationWindowSeconds` takes the controller's
    // --horizontal-pod-autoscaler-downscale-stabilization, not a fixed 300 s.
    let eval_with = |behavior: &str, window_secs: u64, rec_age: u64| {
        let p = policy(&format!(
            "maxReplicas: 100\ntolerance: 0\nscalingRules: [{{metric: queue_length, threshold: 10}}]\nbehavior: {behavior}"
        ));
        let history = with_history(p.clone(), 1000, &[(rec_age, 8)], &[], &[]).state().clone();
        let config = EngineConfig::default().with_downscale_stabilization(Duration::from_secs(window_secs));
        let mut e = Engine::with_config(p, config);
        e.restore_state(history);
        let d = e.evaluate(Timestamp::from_secs(1000), CurrentScale::new(8), &fleet(Q, 20.0));
        assert_eq!(d.proposed_replicas, Some(2));
        d.desired_replicas
    };
    for behavior in ["{}", "{scaleUp: {stabilizationWindowSeconds: 0}}", "{scaleDown: {selectPolicy: Max}}"] {
        // A 60 s controller window: an 8 recommended 90 s ago no longer holds the target.
        assert_eq!(eval_with(behavior, 60, 90), 2, "{behavior}");
        // A 600 s controller window: one recommended 400 s ago still does (300 s would not).
        assert_eq!(eval_with(behavior, 600, 400), 8, "{behavior}");
    }
    // A window the policy sets wins over the controller's.
    assert_eq!(eval_with("{scaleDown: {stabilizationWindowSeconds: 30}}", 600, 60), 2);
    assert_eq!(eval_with("{scaleDown: {stabilizationWindowSeconds: 120}}", 0, 60), 8);
}
