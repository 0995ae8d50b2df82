//! The survivors check: a scale-down goes only as far as the replicas left carry the
//! load under every threshold (less the configured headroom).

use proptest::prelude::*;
use vllm_scaling_core::{
    CurrentScale, Decision, Engine, LimitedBy, PodMetrics, ResolvedPolicy, RuleStatus, ScalingMetrics, Timestamp,
    parse_policy,
};

fn policy(yaml: &str) -> ResolvedPolicy {
    parse_policy(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")).1
}

/// KV-cache usage ≤ 80 % and queue ≤ 10 per replica, p95 latency ≤ 1000 ms for the
/// fleet; no scale-down stabilization, so each evaluation shows the check itself.
fn kv_policy(headroom: Option<f64>) -> ResolvedPolicy {
    let check = headroom.map(|h| format!("survivorsCheck: {{headroomPercent: {h}}}\n")).unwrap_or_default();
    policy(&format!(
        "maxReplicas: 50\nscalingRules:\n  - {{metric: kv_cache_usage, threshold: 80}}\n  - {{metric: queue_length, threshold: 10}}\n\
         \x20 - {{metric: latency, threshold: 1000}}\nbehavior: {{scaleDown: {{stabilizationWindowSeconds: 0}}}}\n{check}"
    ))
}

/// One pod per entry: (KV usage or missing, queue length); fleet latency.
fn fleet(pods: &[(Option<f64>, f64)], latency_ms: f64) -> ScalingMetrics {
    ScalingMetrics {
        pods: pods
            .iter()
            .enumerate()
            .map(|(i, &(kv, q))| {
                let p = PodMetrics::running(format!("p{i}")).with("queue_length", q);
                match kv {
                    Some(v) => p.with("kv_cache_usage", v),
                    None => p,
                }
            })
            .collect(),
        fleet: [("latency".to_owned(), latency_ms)].into(),
        ..Default::default()
    }
}

fn eval(p: &ResolvedPolicy, m: &ScalingMetrics) -> Decision {
    let current = i32::try_from(m.pods.len()).unwrap();
    Engine::new(p.clone()).evaluate(Timestamp::from_secs(100), CurrentScale::new(current), m)
}

#[test]
fn without_headroom_the_hpa_proposal_already_passes() {
    // 10 pods at 70 % KV: the HPA proposes ceil(0.875 × 10) = 9, and 700 / 9 = 77.8 ≤ 80.
    let m = fleet(&[(Some(70.0), 0.0); 10], 100.0);
    assert_eq!(eval(&kv_policy(None), &m).desired_replicas, 9);
    let d = eval(&kv_policy(Some(0.0)), &m);
    assert_eq!((d.desired_replicas, d.limited_by), (9, LimitedBy::None));
}

#[test]
fn headroom_stops_a_scale_down_that_would_leave_the_rest_near_the_threshold() {
    let m = fleet(&[(Some(70.0), 0.0); 10], 100.0);
    // 20 % headroom: 700 % of KV must stay ≤ 64 % per replica: 11 replicas, capped at 10.
    let d = eval(&kv_policy(Some(20.0)), &m);
    assert_eq!((d.desired_replicas, d.limited_by), (10, LimitedBy::SurvivorsCheck), "{}", d.explanation);
    // At 50 % KV the HPA goes to 7; with 20 % headroom 500 / 64 = 7.8: 8.
    let m = fleet(&[(Some(50.0), 0.0); 10], 100.0);
    let d = eval(&kv_policy(Some(20.0)), &m);
    assert_eq!((d.proposed_replicas, d.desired_replicas, d.limited_by), (Some(7), 8, LimitedBy::SurvivorsCheck));
    assert!(d.explanation.contains("survivors check: `kv_cache_usage` needs 8 replicas"), "{}", d.explanation);
}

#[test]
fn pods_without_a_value_count_at_the_threshold() {
    // 6 pods at 40 %, 4 reporting nothing (counted at 80 %): 560 % → 7 at 0 headroom
    // (the HPA's own answer), 560 / 64 = 8.75 → 9 at 20 %.
    let mut pods = vec![(Some(40.0), 0.0); 6];
    pods.extend([(None, 0.0); 4]);
    let m = fleet(&pods, 100.0);
    assert_eq!(eval(&kv_policy(Some(0.0)), &m).desired_replicas, 7);
    assert_eq!(eval(&kv_policy(Some(20.0)), &m).desired_replicas, 9);
}

#[test]
fn fleet_rules_scale_by_the_ready_pods() {
    // Latency 500 ms against 1000 on 10 ready pods: the HPA proposes 5; with 20 %
    // headroom 5 / 0.8 = 6.25 → 7.
    let m = fleet(&[(Some(10.0), 0.0); 10], 500.0);
    let d = eval(&kv_policy(None), &m);
    assert_eq!(d.desired_replicas, 5);
    let d = eval(&kv_policy(Some(20.0)), &m);
    assert_eq!((d.desired_replicas, d.limited_by), (7, LimitedBy::SurvivorsCheck), "{}", d.explanation);
}

#[test]
fn scale_up_is_untouched() {
    let m = fleet(&[(Some(95.0), 30.0); 4], 100.0);
    let a = eval(&kv_policy(None), &m);
    let b = eval(&kv_policy(Some(30.0)), &m);
    assert_eq!(a.desired_replicas, b.desired_replicas);
    assert!(a.desired_replicas > 4);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// After any scale-down the check allowed, the load of every healthy per-pod rule
    /// spread over the survivors (pods without a value at the threshold) is at or under
    /// (1 - headroom) × threshold; the check only ever raises the HPA's answer.
    #[test]
    fn survivors_stay_under_every_threshold(
        // Loads mostly under the thresholds, so that most cases scale down.
        pods in prop::collection::vec((prop::option::weighted(0.85, 0.0..90.0f64), 0.0..11.0f64), 1..30),
        latency in 0.0..1100.0f64,
        headroom in prop_oneof![Just(0.0), 0.0..60.0f64],
    ) {
        let m = fleet(&pods, latency);
        let d = eval(&kv_policy(Some(headroom)), &m);
        let hpa = eval(&kv_policy(None), &m);
        let current = d.current_replicas;
        prop_assert!(d.desired_replicas >= hpa.desired_replicas, "{} < {}", d.explanation, hpa.explanation);
        prop_assert!(d.desired_replicas <= current.max(hpa.desired_replicas));
        if d.desired_replicas < current {
            let survivors = f64::from(d.desired_replicas);
            let limit = 1.0 - headroom / 100.0;
            let kv_ok = d.rules[0].status == RuleStatus::Ok;
            if kv_ok {
                let kv_load: f64 = pods.iter().map(|(kv, _)| kv.unwrap_or(80.0)).sum();
                prop_assert!(kv_load / survivors <= 80.0 * limit + 1e-6, "kv {} on {}: {}", kv_load, survivors, d.explanation);
            }
            let queue_load: f64 = pods.iter().map(|(_, q)| q).sum();
            prop_assert!(queue_load / survivors <= 10.0 * limit + 1e-6, "queue {} on {}: {}", queue_load, survivors, d.explanation);
            let latency_ratio = latency / 1000.0 * current as f64 / survivors;
            prop_assert!(latency_ratio <= limit + 1e-6, "latency ratio {}: {}", latency_ratio, d.explanation);
        }
    }
}
