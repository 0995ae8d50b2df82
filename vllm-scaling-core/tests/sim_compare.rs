//! The comparison of `vllm-autoscaler simulate` end to end: determinism, what the
//! baselines guarantee by construction, the shared traces, and bad input.

use std::path::PathBuf;

use vllm_scaling_core::sim::{
    ExperimentConfig, GeneratorConfig, PolicyKind, ReplicaModel, SimError, Trace, TraceError, TraceOptions, compare,
};

fn small_load(seed: u64) -> Trace {
    GeneratorConfig { duration_secs: 900.0, daily_period_secs: 900.0, mean_rps: 25.0, ..GeneratorConfig::default() }
        .generate(seed)
        .expect("valid generator settings")
}

#[test]
fn same_seed_same_runs() {
    let trace = small_load(3);
    let config = ExperimentConfig::default();
    let policies = [PolicyKind::VllmScaling, PolicyKind::HpaQueue, PolicyKind::Kpa];
    let a = compare(trace.requests(), &config, &policies, &mut |_, _| {}).expect("runs");
    let b = compare(trace.requests(), &config, &policies, &mut |_, _| {}).expect("runs");
    assert_eq!(a.plan, b.plan);
    for (x, y) in a.runs.iter().zip(&b.runs) {
        assert_eq!(x.report, y.report);
        assert_eq!(x.scale_log, y.scale_log);
    }
    let other = small_load(4);
    assert_ne!(other.requests(), trace.requests(), "a different seed gives a different load");
}

#[test]
fn baselines_hold_their_definitions() {
    let trace = small_load(5);
    let config = ExperimentConfig::default();
    let cmp = compare(trace.requests(), &config, &PolicyKind::ALL, &mut |_, _| {}).expect("runs");
    let by_name = |n: &str| cmp.runs.iter().find(|r| r.report.name == n).map(|r| &r.report).expect("every policy ran");
    let (oracle, fixed_99, fixed_peak) = (by_name("oracle"), by_name("fixed-99"), by_name("fixed-peak"));

    // fixed-99 is the smallest fixed fleet meeting the target on the training window: it
    // meets it there, one less does not.
    let train = &cmp.plan.data().train;
    let on_train = |n: i32| {
        let fleet = vllm_scaling_core::sim::FleetConfig { initial_replicas: n as u32, ..config.fleet };
        let mut fixed = vllm_scaling_core::sim::FixedAutoscaler::new("probe", n);
        vllm_scaling_core::sim::simulate(train, &fleet, &mut fixed, &mut |_| {}).expect("runs").report
    };
    assert!(cmp.plan.fixed_99.target_met);
    assert!(on_train(cmp.plan.fixed_99.replicas).slo_attainment_feasible >= config.attainment_target);
    let smaller = on_train(cmp.plan.fixed_99.replicas - 1);
    assert!(smaller.slo_attainment_feasible < config.attainment_target, "{smaller:?}");
    assert!(fixed_99.gpu_hours > 0.0);

    // fixed-peak runs the oracle's largest interval fleet all the time.
    assert_eq!(fixed_peak.peak_replicas, cmp.plan.oracle.peak());
    assert!((fixed_peak.mean_replicas - f64::from(cmp.plan.fixed_peak)).abs() < 1e-6);

    // The oracle's plan costs no less than its lower bound, and no more than running its
    // own peak all the time.
    let bound = cmp.plan.lower_bound.gpu_hours.expect("reachable on generated traffic");
    assert!(bound <= oracle.gpu_hours + 1e-9, "{bound} > {oracle:?}");
    assert!(oracle.gpu_hours <= fixed_peak.gpu_hours + 1e-9);
    assert!(cmp.plan.oracle.planned_attainment >= config.attainment_target - 1e-9);

    // Every report is well-formed and covers the scored window only.
    for r in cmp.runs.iter().map(|r| &r.report) {
        assert!((0.0..=1.0).contains(&r.slo_attainment), "{r:?}");
        assert!(r.gpu_hours > 0.0 && r.requests == cmp.plan.data().scored.len(), "{r:?}");
        assert!(r.direction_changes <= r.scale_events, "{r:?}");
    }
}

#[test]
fn impossible_settings_are_clear_errors() {
    let trace = small_load(1);
    let mut config = ExperimentConfig::default();
    config.fleet.model = ReplicaModel { max_batched_tokens: 8, ..ReplicaModel::default() };
    let e = compare(trace.requests(), &config, &[PolicyKind::Oracle], &mut |_, _| {}).unwrap_err();
    assert!(matches!(e, SimError::Model(_)), "{e:?}");
    let chain = format!("{e}: {}", std::error::Error::source(&e).map(ToString::to_string).unwrap_or_default());
    assert!(chain.contains("max_batched_tokens"), "{chain}");

    let mut config = ExperimentConfig::default();
    config.fleet.cold_start_secs = -5.0;
    let e = compare(trace.requests(), &config, &[PolicyKind::Oracle], &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("cold_start_secs"), "{e}");

    let e = compare(&[], &ExperimentConfig::default(), &[PolicyKind::Oracle], &mut |_, _| {}).unwrap_err();
    assert_eq!(e, SimError::NoRequests);
}

/// `../shared/traces`, which CI has; a plain clone without it skips these checks (they
/// read shared data, not a component), unless `CI=true`, where a missing folder fails.
fn shared_traces() -> Option<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../shared/traces");
    if dir.join("azure2023_conv.csv").exists() {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true but {} is missing: check out the shared research data next to the repository",
        dir.display()
    );
    eprintln!("skipping: {} not found (the shared research data is not checked out)", dir.display());
    None
}

#[test]
fn shared_traces_parse_with_their_documented_shape() {
    let Some(dir) = shared_traces() else { return };
    // (file, requests, mean req/s) from ../shared/traces/README.md.
    for (file, requests, mean_rps) in [
        ("azure2023_code.csv", 8_819, 2.57),
        ("azure2023_conv.csv", 19_366, 5.53),
        ("mooncake_conversation.csv", 12_031, 3.40),
    ] {
        let text = std::fs::read_to_string(dir.join(file)).expect("readable trace");
        let parsed = Trace::parse_csv(&text, TraceOptions::default()).unwrap_or_else(|e| panic!("{file}: {e}"));
        let stats = parsed.trace.stats();
        assert_eq!(stats.requests, requests, "{file}");
        assert!((stats.mean_rps - mean_rps).abs() < 0.05, "{file}: {stats:?}");
        let scaled = parsed.trace.replicate(30.0, 0.5, 1).expect("valid scale");
        assert_eq!(scaled.len(), 30 * requests, "{file}");
    }
}

#[test]
fn a_corrupted_shared_trace_names_the_line() {
    let Some(dir) = shared_traces() else { return };
    let text = std::fs::read_to_string(dir.join("azure2023_code.csv")).expect("readable trace");
    let mut lines: Vec<&str> = text.lines().collect();
    lines[100] = "12.5,-3,10";
    lines.swap(200, 201);
    let broken = lines.join("\n");
    let e = Trace::parse_csv(&broken, TraceOptions::default()).unwrap_err();
    assert!(matches!(e, TraceError::BadRow { line: 101, .. }), "{e}");
    assert!(e.to_string().contains("negative"), "{e}");
    let skipped = Trace::parse_csv(&broken, TraceOptions { skip_bad_rows: true }).expect("skips");
    assert_eq!(skipped.skipped_rows, 2, "the negative row and the row out of order");
    assert_eq!(skipped.trace.len(), 8_819 - 2);
}
