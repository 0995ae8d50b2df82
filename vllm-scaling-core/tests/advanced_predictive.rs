//! Predictive scale-up: replicas for the rate forecast one cold start ahead are started
//! before the queue builds; a forecast never scales down.

use proptest::prelude::*;
use vllm_scaling_core::{
    CurrentScale, Decision, Engine, PodMetrics, ProposalSource, ResolvedPolicy, ScalingMetrics, Timestamp, parse_policy,
};

fn policy(yaml: &str) -> ResolvedPolicy {
    parse_policy(yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}")).1
}

/// Served requests per second, 8 per replica; optionally forecast 60 s ahead.
fn rate_policy(predictive: bool) -> ResolvedPolicy {
    let extra = if predictive {
        "predictive: {rule: requests_per_second, horizonSeconds: 60, historySeconds: 300}\n"
    } else {
        ""
    };
    policy(&format!(
        "minReplicas: 1\nmaxReplicas: 100\nscalingRules: [{{metric: requests_per_second, threshold: 8}}]\n{extra}"
    ))
}

/// `current` pods sharing a fleet rate evenly.
fn rate(current: i32, fleet_rate: f64) -> ScalingMetrics {
    ScalingMetrics {
        pods: (0..current)
            .map(|i| PodMetrics::running(format!("p{i}")).with("requests_per_second", fleet_rate / f64::from(current)))
            .collect(),
        ..Default::default()
    }
}

fn step(e: &mut Engine, at_s: u64, current: &mut i32, fleet_rate: f64) -> Decision {
    let now = Timestamp::from_secs(at_s);
    let d = e.evaluate(now, CurrentScale::new(*current), &rate(*current, fleet_rate));
    if d.desired_replicas != *current {
        e.record_scale(now, *current, d.desired_replicas);
        *current = d.desired_replicas;
    }
    d
}

#[test]
fn a_ramp_is_met_one_horizon_ahead() {
    // 40 req/s growing by 0.5 req/s every second, evaluated every 15 s.
    let ramp = |t: u64| 40.0 + 0.5 * t as f64;
    let (mut predictive, mut reactive) = (Engine::new(rate_policy(true)), Engine::new(rate_policy(false)));
    let (mut cp, mut cr) = (5, 5);
    let mut last = None;
    for t in (0..=300).step_by(15) {
        let dp = step(&mut predictive, t, &mut cp, ramp(t));
        let dr = step(&mut reactive, t, &mut cr, ramp(t));
        assert!(dp.desired_replicas >= dr.desired_replicas, "at {t}s: {} vs {}", dp.explanation, dr.explanation);
        last = Some((t, dp, dr));
    }
    let (t, dp, dr) = last.unwrap();
    // At 300 s the rate is 190 req/s (24 replicas at most for the reactive rule, less
    // inside its tolerance band); in 60 s it will be 220 (28 replicas).
    assert_eq!(t, 300);
    assert!(dr.desired_replicas <= 24, "{}", dr.explanation);
    assert_eq!(dp.desired_replicas, 28, "{}", dp.explanation);
    assert_eq!(dp.winning_rule.as_deref(), Some("(predictive)"));
    let extra = &dp.extra_proposals[0];
    assert_eq!((extra.source, extra.replicas), (ProposalSource::Predictive, 28));
    assert!(extra.detail.contains("forecast 220.00/s in 60s"), "{}", extra.detail);
}

#[test]
fn too_few_samples_forecast_nothing() {
    let mut e = Engine::new(rate_policy(true));
    let mut current = 5;
    for t in (0..60).step_by(15) {
        let d = step(&mut e, t, &mut current, 40.0 + t as f64);
        assert!(d.extra_proposals.is_empty(), "at {t}s ({} samples)", e.state().advanced.rate_samples.len());
    }
    assert_eq!(e.state().advanced.rate_samples.len(), 4);
}

#[test]
fn a_falling_rate_proposes_nothing_and_history_is_bounded() {
    let mut e = Engine::new(rate_policy(true));
    let mut current = 30;
    for t in (0..900).step_by(15) {
        let d = step(&mut e, t, &mut current, (240.0 - 0.25 * t as f64).max(8.0));
        assert!(
            d.extra_proposals.iter().all(|x| x.replicas > d.current_replicas),
            "a forecast proposed a scale-down: {}",
            d.explanation
        );
    }
    // historySeconds 300 at one sample per 15 s.
    assert_eq!(e.state().advanced.rate_samples.len(), 20);
}

#[test]
fn a_fleet_rate_rule_uses_its_capacity() {
    // A router-side arrival rate (a fleet value) with an explicit per-replica capacity.
    let p = policy(
        "maxReplicas: 100\nscalingRules: [{metric: custom, name: arrivals, query: 'sum(rate(router_requests_total[1m]))', threshold: 1000}]\n\
         predictive: {rule: arrivals, capacityPerReplica: 10, horizonSeconds: 120, minSamples: 3, confidence: 0.5}\n",
    );
    let mut e = Engine::new(p);
    let mut d = None;
    for (i, t) in [0u64, 30, 60].into_iter().enumerate() {
        let m = ScalingMetrics {
            pods: (0..4).map(|i| PodMetrics::running(format!("p{i}"))).collect(),
            fleet: [("arrivals".to_owned(), 30.0 + 10.0 * i as f64)].into(),
            ..Default::default()
        };
        d = Some(e.evaluate(Timestamp::from_secs(t), CurrentScale::new(4), &m));
    }
    // 50 req/s now, +1 req/s every 3 s: 90 req/s in 120 s, 9 replicas at 10 each.
    let d = d.unwrap();
    assert_eq!(d.extra_proposals[0].replicas, 9, "{}", d.explanation);
}

#[test]
fn a_missing_rate_holds_and_never_scales_down() {
    let mut e = Engine::new(rate_policy(true));
    let mut current = 10;
    for t in (0..120).step_by(15) {
        step(&mut e, t, &mut current, 80.0);
    }
    let m = ScalingMetrics::all_failed(["requests_per_second"], "prometheus unreachable");
    let d = e.evaluate(Timestamp::from_secs(120), CurrentScale::new(current), &m);
    assert_eq!(d.desired_replicas, current, "{}", d.explanation);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    /// Against the same engine state without the forecast: never fewer replicas; and a
    /// predictive proposal is always above the current replicas (it can only raise).
    #[test]
    fn predictive_never_scales_down(
        series in prop::collection::vec((0.0..400.0f64, 1..40u64, any::<bool>()), 1..50),
        confidence in 0.5..0.99f64,
        horizon in 1..600i32,
    ) {
        let with = policy(&format!(
            "minReplicas: 1\nmaxReplicas: 100\nscalingRules: [{{metric: requests_per_second, threshold: 8}}]\n\
             predictive: {{rule: requests_per_second, horizonSeconds: {horizon}, historySeconds: 600, confidence: {confidence}, minSamples: 3}}\n"
        ));
        let without = rate_policy(false);
        let mut e = Engine::new(with);
        let (mut current, mut t) = (4, 0u64);
        for (fleet_rate, gap, failed) in series {
            t += gap;
            let now = Timestamp::from_secs(t);
            let m = if failed {
                ScalingMetrics::all_failed(["requests_per_second"], "down")
            } else {
                rate(current, fleet_rate)
            };
            let mut reference = Engine::new(without.clone());
            reference.restore_state(e.state().clone());
            let r = reference.evaluate(now, CurrentScale::new(current), &m);
            let d = e.evaluate(now, CurrentScale::new(current), &m);
            prop_assert!(d.desired_replicas >= r.desired_replicas, "{} < {}", d.explanation, r.explanation);
            for x in &d.extra_proposals {
                prop_assert!(x.replicas > current, "{}", d.explanation);
            }
            if failed {
                prop_assert!(d.desired_replicas >= current, "{}", d.explanation);
            }
            if d.desired_replicas != current {
                e.record_scale(now, current, d.desired_replicas);
                current = d.desired_replicas;
            }
        }
    }
}
