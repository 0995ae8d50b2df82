//! Fuzzing entry points, shared by `fuzz/` and the corpus replay test so that `cargo
//! test` re-runs every committed corpus input. Behind the `arbitrary` feature; not part
//! of the supported API.

use arbitrary::{Arbitrary, Unstructured};

use crate::decision::{LimitedBy, RuleStatus};
use crate::engine::Engine;
use crate::observation::{CurrentScale, PodMetrics, PodPhase, ScalingMetrics};
use crate::policy::{PolicySpec, parse_policies};
use crate::time::Timestamp;

/// `policy_parse`: arbitrary bytes as a YAML/JSON policy. Never panics; a policy that
/// parses survives a JSON round trip unchanged.
pub fn policy_parse(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    for (policy, resolved) in parse_policies(text).into_iter().flatten() {
        assert!(resolved.min_replicas <= resolved.max_replicas);
        let json = serde_json::to_string(&policy).expect("a parsed policy serializes");
        let again = parse_policies(&json);
        assert_eq!(again.len(), 1, "round trip gave {} documents", again.len());
        let (back, resolved_back) = again.into_iter().next().and_then(Result::ok).expect("a valid policy re-parses");
        assert_eq!(back.spec, policy.spec);
        assert_eq!(resolved_back, resolved);
    }
}

/// A policy and a run of observations, generated structurally.
#[derive(Arbitrary, Debug)]
pub struct EvaluateInput {
    rules: Vec<(u8, u16, bool)>,
    min: u8,
    extra: u8,
    tolerance: Option<(u8, u8)>,
    behavior: Option<FuzzBehavior>,
    start_replicas: u8,
    steps: Vec<FuzzStep>,
}

/// Fuzzed `behavior`.
#[derive(Arbitrary, Debug)]
pub struct FuzzBehavior {
    up: Option<FuzzDirection>,
    down: Option<FuzzDirection>,
}

/// Fuzzed `HPAScalingRules`.
#[derive(Arbitrary, Debug)]
pub struct FuzzDirection {
    window: u16,
    select: u8,
    policies: Vec<(bool, u16, u16)>,
}

/// One fuzzed evaluation.
#[derive(Arbitrary, Debug)]
pub struct FuzzStep {
    dt_ms: u32,
    external_replicas: Option<u8>,
    pods: Vec<(u8, Vec<Option<f32>>)>,
    fleet: Vec<Option<f32>>,
    /// A rule that failed (high bit clear) or is idle (high bit set).
    failed_rule: Option<u8>,
}

fn direction(d: &FuzzDirection) -> serde_json::Value {
    let select = ["Max", "Min", "Disabled"][usize::from(d.select % 3)];
    let mut v = serde_json::json!({"stabilizationWindowSeconds": d.window % 3601, "selectPolicy": select});
    if !d.policies.is_empty() {
        let policies: Vec<serde_json::Value> = d
            .policies
            .iter()
            .take(4)
            .map(|&(pods, value, period)| {
                serde_json::json!({
                    "type": if pods { "Pods" } else { "Percent" },
                    "value": value % 1000 + 1,
                    "periodSeconds": period % 1800 + 1,
                })
            })
            .collect();
        v["policies"] = serde_json::Value::Array(policies);
    }
    v
}

/// `evaluate`: structured input to decisions, with the engine's invariants asserted.
pub fn evaluate(data: &[u8]) {
    let u = Unstructured::new(data);
    let Ok(input) = EvaluateInput::arbitrary_take_rest(u) else { return };
    evaluate_input(&input);
}

/// Runs one [`EvaluateInput`] and asserts the invariants.
pub fn evaluate_input(input: &EvaluateInput) {
    let catalog = ["queue_length", "kv_cache_usage", "gpu_utilization", "latency", "ttft"];
    let mut rules: Vec<serde_json::Value> = Vec::new();
    let mut used = Vec::new();
    for &(m, threshold, value_target) in input.rules.iter().take(4) {
        let metric = catalog[usize::from(m) % catalog.len()];
        if used.contains(&metric) {
            continue;
        }
        used.push(metric);
        let mut rule = serde_json::json!({"metric": metric, "threshold": f64::from(threshold % 100) + 1.0});
        if value_target {
            rule["targetType"] = "Value".into();
        }
        rules.push(rule);
    }
    let min = i32::from(input.min % 20) + 1;
    let mut spec = serde_json::json!({
        "minReplicas": min,
        "maxReplicas": min + i32::from(input.extra % 50),
        "scalingRules": rules,
    });
    if let Some((d, u)) = input.tolerance {
        spec["tolerance"] =
            serde_json::json!({"scaleUp": f64::from(u % 100) / 100.0, "scaleDown": f64::from(d % 100) / 100.0});
    }
    if let Some(b) = &input.behavior {
        let mut behavior = serde_json::json!({});
        if let Some(up) = &b.up {
            behavior["scaleUp"] = direction(up);
        }
        if let Some(down) = &b.down {
            behavior["scaleDown"] = direction(down);
        }
        spec["behavior"] = behavior;
    }
    let spec: PolicySpec = serde_json::from_value(spec).expect("the fuzzing spec has the policy's shape");
    let Ok(policy) = spec.validate() else { return };
    let keys: Vec<String> = policy.rules.iter().map(|r| r.key.clone()).collect();
    let mut engine = Engine::new(policy.clone());
    let mut current = i32::from(input.start_replicas % 80);
    let mut now = Timestamp::from_secs(1_000);
    for step in input.steps.iter().take(64) {
        now = now.saturating_add(std::time::Duration::from_millis(u64::from(step.dt_ms % 600_000)));
        if let Some(r) = step.external_replicas {
            current = i32::from(r % 80);
        }
        let mut metrics = ScalingMetrics::default();
        for (i, (state, values)) in step.pods.iter().take(64).enumerate() {
            let mut pod = PodMetrics::running(format!("p{i}"));
            pod.phase = match state % 8 {
                0 => PodPhase::Pending,
                1 => PodPhase::Failed,
                _ => PodPhase::Running,
            };
            pod.ready = state % 5 != 0;
            pod.deleting = state % 11 == 0;
            for (key, v) in keys.iter().zip(values) {
                if let Some(v) = v {
                    pod.metrics.insert(key.clone(), f64::from(*v));
                }
            }
            metrics.pods.push(pod);
        }
        for (key, v) in keys.iter().zip(&step.fleet) {
            if let Some(v) = v {
                metrics.fleet.insert(key.clone(), f64::from(*v));
            }
        }
        // The low bits pick a rule; the high bit marks it idle instead of failed.
        let mut idle_key = None;
        if let Some(f) = step.failed_rule
            && let Some(key) = keys.get(usize::from(f & 0x7f) % keys.len().max(1))
        {
            if f & 0x80 == 0 {
                metrics.failures.insert(key.clone(), "fuzzed failure".into());
            } else {
                metrics.idle.insert(key.clone());
                idle_key = Some(key.clone());
            }
        }
        let d = engine.evaluate(now, CurrentScale::new(current), &metrics);
        if let Some(key) = &idle_key {
            // An idle rule reads as zero: a valid rule that asks for no replicas.
            let r = d.rules.iter().find(|r| &r.name == key).expect("every rule has an outcome");
            assert_eq!((r.status, r.proposal), (RuleStatus::Ok, Some(0)), "{}", d.explanation);
        }
        match d.limited_by {
            LimitedBy::ScalingDisabled | LimitedBy::MetricsUnavailable => assert_eq!(d.desired_replicas, current),
            _ => assert!(
                (policy.min_replicas..=policy.max_replicas).contains(&d.desired_replicas),
                "desired {} outside bounds: {}",
                d.desired_replicas,
                d.explanation
            ),
        }
        let in_bounds = (policy.min_replicas..=policy.max_replicas).contains(&current);
        if in_bounds && d.rules.iter().any(|r| r.status != RuleStatus::Ok) {
            assert!(d.desired_replicas >= current, "scale-down with a failed rule: {}", d.explanation);
        }
        if let Some(p) = d.proposed_replicas {
            assert!(d.rules.iter().filter_map(|r| r.proposal.filter(|_| r.status == RuleStatus::Ok)).all(|x| x <= p));
        }
        if d.actuate {
            engine.record_scale(now, current, d.desired_replicas);
            current = d.desired_replicas;
        }
    }
}
