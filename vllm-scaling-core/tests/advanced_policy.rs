//! The policy fields beyond the HPA: parsing, defaults, field-path errors, and the
//! guarantee that a policy without them is the plain HPA (same decisions, same JSON).

use std::time::Duration;

use vllm_scaling_core::{
    CurrentScale, Engine, PodMetrics, PolicyError, PolicyErrors, ResolvedPolicy, ScalingMetrics, Timestamp,
    parse_policy,
};

fn resolve(yaml: &str) -> ResolvedPolicy {
    parse_policy(yaml).unwrap_or_else(|e| panic!("expected a valid policy, got {e}\n{yaml}")).1
}

fn errors(yaml: &str) -> Vec<PolicyError> {
    match parse_policy(yaml) {
        Ok(_) => panic!("expected errors for:\n{yaml}"),
        Err(PolicyErrors(e)) => e,
    }
}

/// The error at `path`, failing with every error found when there is none.
fn error_at(yaml: &str, path: &str) -> PolicyError {
    let all = errors(yaml);
    all.iter().find(|e| e.path == path).cloned().unwrap_or_else(|| panic!("no error at {path}; got {all:?}"))
}

const BASE: &str = "maxReplicas: 10\nscalingRules:\n  - {metric: queue_length, threshold: 10}\n  - {metric: custom, name: incoming, query: 'sum(rate(router_requests_total[1m]))', threshold: 5, targetType: AverageValue}\n";

fn with(extra: &str) -> String {
    format!("{BASE}{extra}")
}

#[test]
fn defaults_are_filled_in() {
    let p = resolve(&with(
        "minReplicas: 0\npanic: {}\nscaleToZero: {activationRule: incoming}\npredictive: {rule: incoming}\nsurvivorsCheck: {}\n",
    ));
    let a = &p.advanced;
    let panic = a.panic.as_ref().unwrap();
    assert_eq!(
        (panic.window, panic.stable_window, panic.threshold, panic.max_scale_up_rate),
        (Duration::from_secs(6), Duration::from_secs(60), 2.0, 1000.0)
    );
    let z = a.scale_to_zero.as_ref().unwrap();
    assert_eq!(
        (z.activation_rule.as_str(), z.activation_threshold, z.idle),
        ("incoming", 0.0, Duration::from_secs(300))
    );
    let f = a.predictive.as_ref().unwrap();
    assert_eq!(
        (f.horizon, f.history, f.confidence, f.min_samples),
        (Duration::from_secs(60), Duration::from_secs(600), 0.9, 5)
    );
    // The capacity defaults to the AverageValue rule's per-replica threshold.
    assert_eq!(f.capacity_per_replica, 5.0);
    assert_eq!(a.survivors_check.unwrap().headroom, 0.0);
    assert_eq!(p.min_replicas, 0);
}

#[test]
fn a_policy_without_the_new_fields_is_the_hpa() {
    let p = resolve(BASE);
    assert!(p.advanced.is_empty());
    assert!(p.rules.iter().all(|r| r.fallback_replicas.is_none()));
    let mut e = Engine::new(p);
    let m = ScalingMetrics {
        pods: (0..3).map(|i| PodMetrics::running(format!("p{i}")).with("queue_length", 25.0)).collect(),
        failures: [("incoming".to_owned(), "prometheus unreachable".to_owned())].into(),
        ..Default::default()
    };
    let d = e.evaluate(Timestamp::from_secs(100), CurrentScale::new(3), &m);
    assert_eq!(d.desired_replicas, 6);
    // Nothing new appears in the JSON of the decision or the state.
    let decision = serde_json::to_value(&d).unwrap();
    for key in ["extraProposals", "activeSchedule"] {
        assert!(decision.get(key).is_none(), "{key} in {decision}");
    }
    assert!(decision["rules"].as_array().unwrap().iter().all(|r| r.get("fallback").is_none()), "{decision}");
    let state = serde_json::to_value(e.state()).unwrap();
    assert!(state.get("advanced").is_none(), "{state}");
}

#[test]
fn min_replicas_zero_needs_scale_to_zero() {
    let e = error_at(&with("minReplicas: 0\n"), "spec.minReplicas");
    assert!(e.reason.contains("scaleToZero"), "{e}");
    let e = error_at(&with("minReplicas: -1\nscaleToZero: {activationRule: incoming}\n"), "spec.minReplicas");
    assert!(e.reason.contains("at least 1"), "{e}");
    // scaleToZero with no way to reach zero is a mistake, not a silent no-op.
    let e = error_at(&with("scaleToZero: {activationRule: incoming}\n"), "spec.scaleToZero");
    assert!(e.reason.contains("no effect"), "{e}");
    // ...but a schedule may be the one that allows zero.
    let p = resolve(&with(
        "scaleToZero: {activationRule: incoming}\nschedules: [{timeZone: UTC, start: '22:00', end: '06:00', minReplicas: 0}]\n",
    ));
    assert_eq!(p.min_replicas, 1);
    assert_eq!(p.advanced.schedules[0].min_replicas, Some(0));
}

#[test]
fn scale_to_zero_errors_name_their_field() {
    let e = error_at(&with("minReplicas: 0\nscaleToZero: {activationRule: nope}\n"), "spec.scaleToZero.activationRule");
    assert!(e.reason.contains("`nope`") && e.reason.contains("`incoming`"), "{e}");
    error_at(
        &with("minReplicas: 0\nscaleToZero: {activationRule: incoming, activationThreshold: -1}\n"),
        "spec.scaleToZero.activationThreshold",
    );
    error_at(
        &with("minReplicas: 0\nscaleToZero: {activationRule: incoming, idleSeconds: -5}\n"),
        "spec.scaleToZero.idleSeconds",
    );
    let e = errors(&with("minReplicas: 0\nscaleToZero: {activationRule: incoming, idle: 5}\n"));
    assert!(e[0].reason.contains("idle"), "{e:?}");
}

#[test]
fn panic_errors_name_their_field() {
    error_at(&with("panic: {windowSeconds: 0}\n"), "spec.panic.windowSeconds");
    let e = error_at(&with("panic: {windowSeconds: 90, stableWindowSeconds: 60}\n"), "spec.panic.windowSeconds");
    assert!(e.reason.contains("90 > 60"), "{e}");
    error_at(&with("panic: {stableWindowSeconds: 4000}\n"), "spec.panic.stableWindowSeconds");
    error_at(&with("panic: {thresholdPercent: 100}\n"), "spec.panic.thresholdPercent");
    error_at(&with("panic: {thresholdPercent: .nan}\n"), "spec.panic.thresholdPercent");
    error_at(&with("panic: {maxScaleUpRate: 1}\n"), "spec.panic.maxScaleUpRate");
    error_at(&with("panic: {rules: []}\n"), "spec.panic.rules");
    let e = error_at(&with("panic: {rules: [queue_length, kv]}\n"), "spec.panic.rules[1]");
    assert!(e.reason.contains("`kv`"), "{e}");
    let p = resolve(&with("panic: {rules: [incoming]}\n"));
    assert_eq!(p.advanced.panic.unwrap().rules, ["incoming"]);
}

#[test]
fn predictive_errors_name_their_field() {
    let e = error_at(&with("predictive: {rule: arrivals}\n"), "spec.predictive.rule");
    assert!(e.reason.contains("queue_length"), "{e}");
    error_at(&with("predictive: {rule: incoming, horizonSeconds: 0}\n"), "spec.predictive.horizonSeconds");
    error_at(&with("predictive: {rule: incoming, historySeconds: 5}\n"), "spec.predictive.historySeconds");
    error_at(&with("predictive: {rule: incoming, confidence: 1.0}\n"), "spec.predictive.confidence");
    error_at(&with("predictive: {rule: incoming, confidence: 0.3}\n"), "spec.predictive.confidence");
    error_at(&with("predictive: {rule: incoming, capacityPerReplica: 0}\n"), "spec.predictive.capacityPerReplica");
    error_at(&with("predictive: {rule: incoming, minSamples: 2}\n"), "spec.predictive.minSamples");
    // A fleet-level (Value) rule has no per-replica capacity to borrow.
    let yaml = "maxReplicas: 10\nscalingRules: [{metric: custom, name: rate, query: 'sum(x)', threshold: 100}]\npredictive: {rule: rate}\n";
    let e = error_at(yaml, "spec.predictive.capacityPerReplica");
    assert!(e.reason.contains("Value"), "{e}");
    let p = resolve(&yaml.replace("{rule: rate}", "{rule: rate, capacityPerReplica: 8}"));
    assert_eq!(p.advanced.predictive.unwrap().capacity_per_replica, 8.0);
}

#[test]
fn survivors_and_fallback_errors_name_their_field() {
    error_at(&with("survivorsCheck: {headroomPercent: 100}\n"), "spec.survivorsCheck.headroomPercent");
    error_at(&with("survivorsCheck: {headroomPercent: -1}\n"), "spec.survivorsCheck.headroomPercent");
    let yaml = "maxReplicas: 10\nscalingRules: [{metric: queue_length, threshold: 10, fallbackReplicas: 0}]\n";
    error_at(yaml, "spec.scalingRules[0].fallbackReplicas");
    let e =
        error_at(&yaml.replace("fallbackReplicas: 0", "fallbackReplicas: 11"), "spec.scalingRules[0].fallbackReplicas");
    assert!(e.reason.contains("11 > 10"), "{e}");
    let p = resolve(&yaml.replace("fallbackReplicas: 0", "fallbackReplicas: 4"));
    assert_eq!(p.rules[0].fallback_replicas, Some(4));
}

#[test]
fn schedule_errors_name_their_field() {
    let s = |body: &str| with(&format!("schedules:\n  - {{{body}}}\n"));
    let e = error_at(
        &s("timeZone: Mars/Olympus, start: '08:00', end: '20:00', minReplicas: 2"),
        "spec.schedules[0].timeZone",
    );
    assert!(e.reason.contains("IANA"), "{e}");
    error_at(&s("timeZone: '+25:00', start: '08:00', end: '20:00', minReplicas: 2"), "spec.schedules[0].timeZone");
    error_at(&s("timeZone: UTC, start: '8:00', end: '20:00', minReplicas: 2"), "spec.schedules[0].start");
    error_at(&s("timeZone: UTC, start: '08:00', end: '24:01', minReplicas: 2"), "spec.schedules[0].end");
    error_at(&s("timeZone: UTC, start: '08:00', end: '08:00', minReplicas: 2"), "spec.schedules[0].end");
    error_at(&s("timeZone: UTC, start: '08:00', end: '20:00', days: [], minReplicas: 2"), "spec.schedules[0].days");
    error_at(
        &s("timeZone: UTC, start: '08:00', end: '20:00', days: [Mon, Mon], minReplicas: 2"),
        "spec.schedules[0].days",
    );
    error_at(&s("timeZone: UTC, start: '08:00', end: '20:00'"), "spec.schedules[0].minReplicas");
    let e =
        error_at(&s("timeZone: UTC, start: '08:00', end: '20:00', minReplicas: 12"), "spec.schedules[0].minReplicas");
    assert!(e.reason.contains("12 > maxReplicas 10"), "{e}");
    error_at(&s("timeZone: UTC, start: '08:00', end: '20:00', minReplicas: 0"), "spec.schedules[0].minReplicas");
    error_at(&s("timeZone: UTC, start: '08:00', end: '20:00', maxReplicas: 0"), "spec.schedules[0].maxReplicas");
    let e = errors(&s("timezone: UTC, start: '08:00', end: '20:00', minReplicas: 2"));
    assert!(e[0].reason.contains("timezone"), "{e:?}");
    let e = errors(&s("timeZone: UTC, start: '08:00', end: '20:00', days: [Funday], minReplicas: 2"));
    assert!(e[0].reason.contains("Funday"), "{e:?}");
    let two = with(
        "schedules:\n  - {name: a, timeZone: UTC, start: '08:00', end: '20:00', minReplicas: 2}\n  - {name: a, timeZone: UTC, start: '20:00', end: '22:00', minReplicas: 2}\n",
    );
    error_at(&two, "spec.schedules[1].name");
}

#[test]
fn every_field_round_trips_through_json() {
    let yaml = "minReplicas: 0\nmaxReplicas: 40\nscalingRules:\n  - {metric: queue_length, threshold: 5, fallbackReplicas: 4}\n  - {metric: requests_per_second, threshold: 8}\n\
        panic: {windowSeconds: 10, stableWindowSeconds: 90, thresholdPercent: 150, maxScaleUpRate: 10}\n\
        scaleToZero: {activationRule: requests_per_second, activationThreshold: 0.1, idleSeconds: 600}\n\
        predictive: {rule: requests_per_second, horizonSeconds: 120, historySeconds: 900, confidence: 0.95, minSamples: 8}\n\
        survivorsCheck: {headroomPercent: 10}\n\
        schedules:\n  - {name: day, timeZone: Europe/Berlin, days: [Monday, Tue], start: '08:00', end: '20:00', minReplicas: 4, maxReplicas: 30}\n";
    let (policy, resolved) = parse_policy(yaml).unwrap();
    let json = serde_json::to_string(&policy).unwrap();
    let (again, resolved_again) = parse_policy(&json).unwrap();
    assert_eq!(again, policy);
    assert_eq!(resolved_again, resolved);
    assert!(json.contains("\"scaleToZero\"") && json.contains("\"fallbackReplicas\":4"), "{json}");
    assert_eq!(resolved.advanced.schedules[0].zone.name(), "Europe/Berlin");
    assert_eq!(resolved.advanced.panic.unwrap().threshold, 1.5);
}

#[test]
fn the_readme_example_is_valid() {
    let readme = include_str!("../../README.md");
    let section = &readme[readme.find("### Policies beyond HPA").expect("README has the section")..];
    let start = section.find("```yaml\n").expect("a yaml block") + "```yaml\n".len();
    let yaml = &section[start..start + section[start..].find("```").unwrap()];
    let doc = format!("apiVersion: autoscaler.production-stack/v1alpha1\nkind: vLLMScalingPolicy\n{yaml}");
    let p = resolve(&doc);
    let a = &p.advanced;
    assert!(a.panic.is_some() && a.scale_to_zero.is_some() && a.survivors_check.is_some());
    assert_eq!(a.predictive.as_ref().unwrap().capacity_per_replica, 8.0);
    assert_eq!(a.schedules[0].name, "weekday-daytime");
    assert_eq!(p.rules[1].fallback_replicas, Some(4));
}
