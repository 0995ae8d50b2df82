//! Shared fixtures for the criterion benchmarks in this folder.

use std::time::Duration;

use vllm_scaling_core::{CurrentScale, Engine, PodMetrics, ScalingMetrics, Timestamp, parse_policy};

/// Per-pod catalog metrics with a threshold each, then fleet-level ones.
const RULES: [(&str, f64, bool); 10] = [
    ("queue_length", 10.0, true),
    ("gpu_utilization", 75.0, true),
    ("latency", 1000.0, false),
    ("kv_cache_usage", 80.0, true),
    ("running_requests", 64.0, true),
    ("gpu_memory_used", 90.0, true),
    ("tokens_per_second", 2000.0, true),
    ("requests_per_second", 10.0, true),
    ("ttft", 2000.0, false),
    ("itl", 100.0, false),
];

/// An engine with `rules` rules (the seed example's three first) and a full 300 s
/// history with scale events, metrics for `pods` pods, and the time of the last
/// evaluation.
///
/// # Panics
/// If `rules` is more than 10 (a bug in the benchmark itself).
#[must_use]
pub fn engine_fixture(rules: usize, pods: usize) -> (Engine, CurrentScale, ScalingMetrics, Timestamp) {
    assert!(rules <= RULES.len(), "at most {} rules", RULES.len());
    let list: Vec<String> = RULES[..rules].iter().map(|(m, t, _)| format!("{{metric: {m}, threshold: {t}}}")).collect();
    let yaml = format!(
        "maxReplicas: 5000\nscalingRules: [{}]\nbehavior: {{scaleDown: {{policies: [{{type: Pods, value: 2, periodSeconds: 60}}, {{type: Percent, value: 10, periodSeconds: 120}}]}}}}",
        list.join(", ")
    );
    let (_, policy) = parse_policy(&yaml).expect("the benchmark policy is valid");
    let current = i32::try_from(pods).unwrap_or(i32::MAX);
    let mut engine = Engine::new(policy);
    let mut now = Timestamp::from_secs(1_000_000);
    let metrics = ScalingMetrics {
        pods: (0..pods)
            .map(|i| {
                let mut pod = PodMetrics::running(format!("vllm-{i}"));
                for (m, t, per_pod) in &RULES[..rules] {
                    if *per_pod {
                        // Load varies across pods around the threshold.
                        pod.metrics.insert((*m).to_owned(), t * (0.7 + (i % 7) as f64 * 0.1));
                    }
                }
                pod
            })
            .collect(),
        fleet: RULES[..rules].iter().filter(|(_, _, p)| !p).map(|(m, t, _)| ((*m).to_owned(), t * 1.05)).collect(),
        failures: Default::default(),
        idle: Default::default(),
    };
    // Fill the history: 20 evaluations 15 s apart, with a rescale now and then.
    let scale = CurrentScale::new(current);
    for step in 0..20 {
        now = now.saturating_add(Duration::from_secs(15));
        let d = engine.evaluate(now, scale, &metrics);
        if step % 5 == 0 {
            engine.record_scale(now, current, current + 1);
        }
        std::hint::black_box(d);
    }
    (engine, scale, metrics, now)
}
