//! Honest scoring: the split never lets the recommender see the scored window, the
//! oracle's lower bound is below every policy at its attainment, and every policy reads
//! the same modelled Prometheus.

use proptest::prelude::*;
use vllm_scaling_core::sim::{
    EngineAutoscaler, ExperimentConfig, FleetConfig, GeneratorConfig, Learning, Plan, PolicyKind, Sequential, Start,
    Trace, TraceRequest, Windows, compare, simulate,
};
use vllm_scaling_core::{EngineConfig, parse_policy};

fn load(duration: f64, rps: f64, seed: u64) -> Trace {
    GeneratorConfig {
        duration_secs: duration,
        daily_period_secs: duration,
        mean_rps: rps,
        ..GeneratorConfig::default()
    }
    .generate(seed)
    .expect("valid generator settings")
}

/// `first` for its span, then `second` from the next whole minute.
fn joined(first: &Trace, second: &Trace) -> Vec<TraceRequest> {
    let cut = (first.duration_secs() / 60.0).floor() * 60.0 + 60.0;
    first
        .requests()
        .iter()
        .copied()
        .chain(second.requests().iter().map(|r| TraceRequest { arrival_secs: r.arrival_secs + cut, ..*r }))
        .collect()
}

#[test]
fn the_split_never_lets_the_recommender_see_the_scored_window() {
    let first = load(540.0, 12.0, 7);
    // Two second halves that differ wildly: a quiet one, and one ten times as busy with
    // prompts four times as long.
    let quiet = load(540.0, 3.0, 8);
    let busy: Vec<TraceRequest> = load(540.0, 30.0, 9)
        .requests()
        .iter()
        .map(|r| TraceRequest { input_tokens: r.input_tokens * 4, ..*r })
        .collect();
    let busy = Trace::from_requests(busy).expect("valid");
    let config = ExperimentConfig { learning: Learning::Split { fraction: 0.5 }, ..ExperimentConfig::default() };
    let a = Plan::prepare(&joined(&first, &quiet), &config, &mut |_, _| {}).expect("plan");
    let b = Plan::prepare(&joined(&first, &busy), &config, &mut |_, _| {}).expect("plan");
    let alone = Plan::prepare_windows(
        Windows::with_training(first.requests(), quiet.requests(), 60.0).expect("windows"),
        &ExperimentConfig { learning: Learning::TrainFile, ..config },
        &Sequential,
        &mut |_, _| {},
    )
    .expect("plan");
    assert_eq!(a.data().train, b.data().train, "the same training window");
    assert_ne!(a.data().scored, b.data().scored);
    for other in [&b, &alone] {
        assert_eq!(a.calibration, other.calibration);
        assert_eq!(a.burstiness, other.burstiness);
        assert_eq!(a.fixed_99, other.fixed_99);
        assert_eq!(a.max_replicas, other.max_replicas);
        assert_eq!(a.tuning, other.tuning);
        assert_eq!(a.kpa, other.kpa);
        assert_eq!(a.recommended_policy, other.recommended_policy, "the learned policy depends on the scored window");
    }
    // The oracle, which knows the future by definition, does see it.
    assert_ne!(a.oracle.replicas, b.oracle.replicas);
    assert!(!a.windows.in_sample && a.windows.label.starts_with("out of sample"), "{}", a.windows.label);
    // In sample, the learned policy follows the scored window, and says so.
    let inside = ExperimentConfig { learning: Learning::InSample, ..config };
    let c = Plan::prepare(&joined(&first, &busy), &inside, &mut |_, _| {}).expect("plan");
    assert!(c.windows.in_sample && c.windows.label.starts_with("IN-SAMPLE"), "{}", c.windows.label);
    assert_ne!(c.calibration, b.calibration);
}

#[test]
fn a_split_that_leaves_a_window_empty_is_refused() {
    let t = load(300.0, 5.0, 1);
    let config = ExperimentConfig { learning: Learning::Split { fraction: 0.01 }, ..ExperimentConfig::default() };
    let e = Plan::prepare(t.requests(), &config, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("split") && e.to_string().contains("0 requests to learn from"), "{e}");
    let config = ExperimentConfig { learning: Learning::Split { fraction: 1.5 }, ..ExperimentConfig::default() };
    let e = Plan::prepare(t.requests(), &config, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("(0, 1)"), "{e}");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2, ..ProptestConfig::default() })]

    /// No policy of the comparison, and no fixed fleet of any size, reaches an attainment
    /// with fewer GPU-hours than the lower bound at that attainment.
    #[test]
    fn the_lower_bound_is_below_every_policy_at_its_attainment(
        rps in 4.0f64..10.0,
        seed in 0u64..1000,
        cold in prop::sample::select(vec![30.0, 60.0, 120.0, 300.0]),
        start in prop::sample::select(vec![Start::Warm, Start::Cold]),
    ) {
        let t = load(300.0, rps, seed);
        let mut config = ExperimentConfig { start, ..ExperimentConfig::default() };
        config.fleet.cold_start_secs = cold;
        let cmp = compare(t.requests(), &config, &PolicyKind::ALL, &mut |_, _| {}).expect("runs");
        let plan = &cmp.plan;
        let mut checked = Vec::new();
        for run in &cmp.runs {
            checked.push((run.report.name.clone(), run.report.slo_attainment_feasible, run.report.gpu_hours));
        }
        let top = plan.fixed_99.replicas.max(plan.fixed_peak) + 2;
        for n in 1..=top {
            let fleet = FleetConfig { initial_replicas: n as u32, ..config.fleet };
            let mut fixed = vllm_scaling_core::sim::FixedAutoscaler::new("fixed", n);
            let run = simulate(&plan.data().scored, &fleet, &mut fixed, &mut |_| {}).expect("runs");
            checked.push((format!("fixed {n}"), run.report.slo_attainment_feasible, run.report.gpu_hours));
        }
        for (name, attainment, gpu_hours) in checked {
            if let Some(bound) = plan.lower_bound_at(attainment) {
                prop_assert!(
                    bound <= gpu_hours + 1e-9,
                    "{name}: {:.3} % at {gpu_hours:.4} GPU-h, below the bound {bound:.4}", 100.0 * attainment
                );
            }
        }
        if let Some(bound) = plan.lower_bound.gpu_hours {
            prop_assert!(bound > 0.0);
        }
    }
}

/// A rule whose `rate()` window holds fewer than two scrapes is missing at every
/// evaluation, for every policy: nothing scales on it. Evaluations here fall on scrape
/// instants, so a window of one scrape interval (`(q - 15 s, q]`) holds one scrape and a
/// longer one holds two.
#[test]
fn a_rate_window_under_two_scrapes_is_missing_for_everyone() {
    // 40 req/s for five minutes: far more than one replica serves.
    let requests: Vec<TraceRequest> = (0..12_000)
        .map(|i| TraceRequest { arrival_secs: f64::from(i) / 40.0, input_tokens: 800, output_tokens: 100 })
        .collect();
    let fleet = FleetConfig { initial_replicas: 1, scrape_interval_secs: 15.0, ..FleetConfig::default() };
    let run_with = |window: &str| {
        let yaml = format!(
            "maxReplicas: 20\nscalingRules:\n- {{name: arrivals, metric: custom, query: 'sum(rate(vllm:num_incoming_requests_total[{window}]))', threshold: 10, targetType: AverageValue}}\n"
        );
        let (_, policy) = parse_policy(&yaml).expect("valid");
        let mut a = EngineAutoscaler::new("probe", policy, EngineConfig::default());
        simulate(&requests, &fleet, &mut a, &mut |_| {}).expect("runs")
    };
    for short in ["15s", "10s"] {
        let run = run_with(short);
        assert!(run.scale_log.is_empty(), "a {short} window over 15 s scrapes has no rate: {:?}", run.scale_log);
    }
    let long = run_with("30s");
    assert!(long.scale_log.iter().any(|c| c.to >= 4), "a 30 s window holds two scrapes: {:?}", long.scale_log);

    // Every engine policy of a comparison reads the fleet's scrapes: none has its own
    // interval (the KPA samples concurrency from the pods every second, Knative's own path).
    let t = load(300.0, 8.0, 2);
    let plan = Plan::prepare(t.requests(), &ExperimentConfig::default(), &mut |_, _| {}).expect("plan");
    for kind in PolicyKind::ALL {
        let a = plan.autoscaler(kind).expect("builds");
        if kind == PolicyKind::Kpa {
            assert_eq!(a.scrape_interval_secs(), Some(1.0));
        } else {
            assert_eq!(a.scrape_interval_secs(), None, "{kind} scrapes on its own interval");
        }
    }
    // The recommended policy's and hpa-rate's rate windows hold two scrapes.
    assert!(plan.recommended_policy.contains("[30s]"), "{}", plan.recommended_policy);
}
