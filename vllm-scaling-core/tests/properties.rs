//! Invariants of the whole decision pipeline, checked with proptest.

use proptest::prelude::*;
use vllm_scaling_core::{
    CurrentScale, Decision, Engine, LimitedBy, PodMetrics, ResolvedPolicy, RuleStatus, ScalingMetrics, Timestamp,
    parse_policy,
};

/// Rules the generators pick from: (key, threshold, per-pod?).
const RULES: [(&str, f64, bool); 3] =
    [("queue_length", 10.0, true), ("kv_cache_usage", 80.0, true), ("latency", 1000.0, false)];

#[derive(Clone, Debug)]
struct PolicyCase {
    rules: Vec<usize>,
    min: i32,
    max: i32,
    behavior: Option<String>,
}

impl PolicyCase {
    fn resolve(&self) -> ResolvedPolicy {
        let rules: Vec<String> =
            self.rules.iter().map(|&i| format!("{{metric: {}, threshold: {}}}", RULES[i].0, RULES[i].1)).collect();
        let mut yaml =
            format!("minReplicas: {}\nmaxReplicas: {}\nscalingRules: [{}]\n", self.min, self.max, rules.join(", "));
        if let Some(b) = &self.behavior {
            yaml.push_str(&format!("behavior: {b}\n"));
        }
        parse_policy(&yaml).unwrap_or_else(|e| panic!("generated policy is invalid: {e}\n{yaml}")).1
    }
}

fn behavior() -> impl Strategy<Value = Option<String>> {
    prop_oneof![
        Just(None),
        Just(Some("{}".to_owned())),
        (0..120i32, 0..400i32, 1..5i32, 1..120i32, prop::bool::ANY).prop_map(|(up_win, down_win, pods, period, percent)| {
            let ty = if percent { "Percent" } else { "Pods" };
            let value = if percent { pods * 25 } else { pods };
            Some(format!(
                "{{scaleUp: {{stabilizationWindowSeconds: {up_win}, policies: [{{type: {ty}, value: {value}, periodSeconds: {period}}}]}}, \
                 scaleDown: {{stabilizationWindowSeconds: {down_win}, policies: [{{type: {ty}, value: {value}, periodSeconds: {period}}}]}}}}"
            ))
        }),
    ]
}

fn policy_case() -> impl Strategy<Value = PolicyCase> {
    (prop::sample::subsequence(vec![0usize, 1, 2], 1..=3), 1..5i32, 0..20i32, behavior())
        .prop_map(|(rules, min, extra, behavior)| PolicyCase { rules, min, max: min + extra, behavior })
}

/// One observation: per-pod load factors (relative to each threshold) and a fleet factor.
#[derive(Clone, Debug)]
struct Load {
    pods: Vec<Option<f64>>,
    fleet: Option<f64>,
}

fn load(max_pods: usize) -> impl Strategy<Value = Load> {
    (
        prop::collection::vec(prop::option::weighted(0.9, 0.0..4.0f64), 1..max_pods),
        prop::option::weighted(0.9, 0.0..4.0f64),
    )
        .prop_map(|(pods, fleet)| Load { pods, fleet })
}

fn metrics(policy: &ResolvedPolicy, load: &Load) -> ScalingMetrics {
    let mut m = ScalingMetrics::default();
    for (i, f) in load.pods.iter().enumerate() {
        let mut pod = PodMetrics::running(format!("p{i}"));
        if let Some(f) = f {
            for r in &policy.rules {
                if r.metric.info().per_pod {
                    pod.metrics.insert(r.key.clone(), f * r.threshold);
                }
            }
        }
        m.pods.push(pod);
    }
    if let Some(f) = load.fleet {
        for r in policy.rules.iter().filter(|r| !r.metric.info().per_pod) {
            m.fleet.insert(r.key.clone(), f * r.threshold);
        }
    }
    m
}

fn assert_bounds(d: &Decision, p: &ResolvedPolicy) -> Result<(), TestCaseError> {
    match d.limited_by {
        LimitedBy::ScalingDisabled | LimitedBy::MetricsUnavailable => {
            prop_assert_eq!(d.desired_replicas, d.current_replicas, "{}", d.explanation);
        }
        _ => prop_assert!(
            (p.min_replicas..=p.max_replicas).contains(&d.desired_replicas),
            "desired {} outside [{}, {}]: {}",
            d.desired_replicas,
            p.min_replicas,
            p.max_replicas,
            d.explanation
        ),
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Over a run with actuation, every decision stays in [min, max] (or holds), a missing
    /// rule never scales down, the max-of-proposals is at least every rule's proposal, and
    /// a scale-down never goes below the largest recommendation in the stabilization window.
    #[test]
    fn pipeline_invariants(case in policy_case(), start in 0..30i32, steps in prop::collection::vec((1..60u64, load(12)), 1..25)) {
        let p = case.resolve();
        let mut engine = Engine::new(p.clone());
        let mut current = start;
        let mut now = Timestamp::from_secs(1_000);
        // (time, raw recommendation) as the HPA records them, seed included.
        let mut recs: Vec<(Timestamp, i32)> = vec![(now, current)];
        for (dt, l) in steps {
            now = now.saturating_add(std::time::Duration::from_secs(dt));
            let d = engine.evaluate(now, CurrentScale::new(current), &metrics(&p, &l));
            assert_bounds(&d, &p)?;
            if d.rules.iter().any(|r| r.status != RuleStatus::Ok) && (p.min_replicas..=p.max_replicas).contains(&current) {
                prop_assert!(d.desired_replicas >= current, "scaled down with a missing rule: {}", d.explanation);
            }
            if let Some(proposed) = d.proposed_replicas {
                for r in d.rules.iter().filter(|r| r.status == RuleStatus::Ok) {
                    prop_assert!(proposed >= r.proposal.unwrap_or(0));
                }
                let window = p.scale_down_stabilization(std::time::Duration::from_secs(300));
                let legacy = p.behavior.is_none();
                let cutoff = now.saturating_sub(window);
                let in_window = recs.iter().filter(|(t, _)| if legacy { *t >= cutoff } else { *t > cutoff }).map(|&(_, r)| r);
                let floor = in_window.chain(std::iter::once(proposed)).max().unwrap_or(proposed);
                if d.desired_replicas < current {
                    prop_assert!(d.desired_replicas >= floor,
                        "scale-down to {} below the window's max recommendation {}: {}", d.desired_replicas, floor, d.explanation);
                }
                recs.push((now, proposed));
            }
            if d.actuate {
                engine.record_scale(now, current, d.desired_replicas);
                current = d.desired_replicas;
            }
        }
    }

    /// Constant load inside the tolerance band never changes the replicas.
    #[test]
    fn constant_load_within_tolerance_holds(case in policy_case(), n in 1..12usize, factor in 0.91..1.09f64, evals in 1..20usize) {
        let p = case.resolve();
        let current = (n as i32).clamp(p.min_replicas, p.max_replicas);
        let l = Load { pods: vec![Some(factor); current as usize], fleet: Some(factor) };
        let m = metrics(&p, &l);
        let mut engine = Engine::new(p.clone());
        for i in 0..evals {
            let d = engine.evaluate(Timestamp::from_secs(15 * i as u64), CurrentScale::new(current), &m);
            prop_assert_eq!(d.desired_replicas, current, "{}", d.explanation);
        }
    }

    /// More load (every value at least as high) never gives fewer replicas.
    #[test]
    fn more_load_never_fewer_replicas(case in policy_case(), base in prop::collection::vec(0.0..4.0f64, 1..12), bump in prop::collection::vec(0.0..2.0f64, 12), fleet in 0.0..4.0f64, fleet_bump in 0.0..2.0f64) {
        let p = case.resolve();
        let current = (base.len() as i32).clamp(p.min_replicas, p.max_replicas);
        let base: Vec<f64> = base.into_iter().cycle().take(current as usize).collect();
        let low = Load { pods: base.iter().copied().map(Some).collect(), fleet: Some(fleet) };
        let high = Load { pods: base.iter().zip(&bump).map(|(b, x)| Some(b + x)).chain(std::iter::repeat(Some(4.0))).take(current as usize).collect(), fleet: Some(fleet + fleet_bump) };
        let now = Timestamp::from_secs(100);
        let d_low = Engine::new(p.clone()).evaluate(now, CurrentScale::new(current), &metrics(&p, &low));
        let d_high = Engine::new(p.clone()).evaluate(now, CurrentScale::new(current), &metrics(&p, &high));
        prop_assert!(d_high.desired_replicas >= d_low.desired_replicas, "low {} -> {}, high {} -> {}", d_low.explanation, d_low.desired_replicas, d_high.explanation, d_high.desired_replicas);
    }

    /// A single Pods or Percent policy is never exceeded over its period.
    #[test]
    fn rate_policy_never_exceeded(pods_value in 1..6i32, percent in prop::bool::ANY, period in 1..120i32, start in 1..20i32, steps in prop::collection::vec((1..40u64, 0.0..8.0f64), 1..30)) {
        let (ty, value) = if percent { ("Percent", pods_value * 20) } else { ("Pods", pods_value) };
        let yaml = format!(
            "maxReplicas: 500\nscalingRules: [{{metric: queue_length, threshold: 10}}]\nbehavior: {{scaleUp: {{policies: [{{type: {ty}, value: {value}, periodSeconds: {period}}}]}}, scaleDown: {{stabilizationWindowSeconds: 0, policies: [{{type: {ty}, value: {value}, periodSeconds: {period}}}]}}}}"
        );
        let p = parse_policy(&yaml).unwrap().1;
        let mut engine = Engine::new(p.clone());
        let mut current = start;
        let mut history: Vec<(Timestamp, i32)> = Vec::new(); // replicas after each rescale
        let mut now = Timestamp::from_secs(0);
        let start_replicas = current;
        for (dt, f) in steps {
            now = now.saturating_add(std::time::Duration::from_secs(dt));
            let d = engine.evaluate(now, CurrentScale::new(current), &metrics(&p, &Load { pods: vec![Some(f); current as usize], fleet: None }));
            // Replicas at the start of the period: before any rescale inside (now - period, now].
            let cutoff = now.saturating_sub(std::time::Duration::from_secs(period as u64));
            let period_start = history.iter().rev().find(|(t, _)| *t <= cutoff).map_or(start_replicas, |&(_, r)| r);
            let (up_limit, down_limit) = if percent {
                ((f64::from(period_start) * (1.0 + f64::from(value) / 100.0)).ceil() as i32, (f64::from(period_start) * (1.0 - f64::from(value) / 100.0)).trunc() as i32)
            } else {
                (period_start + value, period_start - value)
            };
            if d.desired_replicas > current {
                prop_assert!(d.desired_replicas <= up_limit.max(current), "up to {} over limit {} (period start {})", d.desired_replicas, up_limit, period_start);
            }
            if d.desired_replicas < current {
                prop_assert!(d.desired_replicas >= down_limit.min(current).max(1), "down to {} under limit {} (period start {})", d.desired_replicas, down_limit, period_start);
            }
            if d.actuate {
                engine.record_scale(now, current, d.desired_replicas);
                current = d.desired_replicas;
                history.push((now, current));
            }
        }
    }

    /// NaN, infinite or negative values make the rule invalid; nothing panics.
    #[test]
    fn bad_values_are_rule_errors(case in policy_case(), bad in prop_oneof![Just(f64::NAN), Just(f64::INFINITY), Just(f64::NEG_INFINITY), -1e9..-1e-3f64], n in 1..8usize, which in 0..8usize, current in 0..30i32) {
        let p = case.resolve();
        let mut m = metrics(&p, &Load { pods: vec![Some(1.0); n], fleet: Some(1.0) });
        let idx = which % n;
        for v in m.pods[idx].metrics.values_mut() { *v = bad; }
        for v in m.fleet.values_mut() { *v = bad; }
        let d = Engine::new(p.clone()).evaluate(Timestamp::from_secs(5), CurrentScale::new(current), &m);
        for r in &d.rules {
            prop_assert_eq!(r.status, RuleStatus::Invalid, "{:?}", r);
        }
        assert_bounds(&d, &p)?;
    }
}

proptest! {
    /// Every form a Kubernetes quantity of the same tolerance takes (milli-units, decimal,
    /// exponent, YAML number) resolves to the same tolerance, and text that is not a
    /// quantity is an error naming the field, never a panic or a default.
    #[test]
    fn tolerance_quantity_forms_agree(milli in 0u32..1000, junk in "[a-zA-Z%#]{1,3}") {
        let want = f64::from(milli) / 1000.0;
        let forms = [
            format!("\"{milli}m\""),
            format!("\"{want}\""),
            format!("\"{milli}e-3\""),
            format!("{want}"),
            format!("{milli}m"),
        ];
        for form in &forms {
            let yaml = format!(
                "maxReplicas: 5\nscalingRules: [{{metric: queue_length, threshold: 10}}]\nbehavior: {{scaleDown: {{tolerance: {form}}}}}\ntolerance: {{scaleUp: {form}}}\n"
            );
            let (_, p) = parse_policy(&yaml).map_err(|e| TestCaseError::fail(format!("{form}: {e}")))?;
            prop_assert!((p.tolerance_down - want).abs() < 1e-12, "{}: {}", form, p.tolerance_down);
            prop_assert!((p.tolerance_up - want).abs() < 1e-12, "{}: {}", form, p.tolerance_up);
        }
        // A known suffix followed by junk, or junk alone, is rejected with the field's path.
        let yaml = format!(
            "maxReplicas: 5\nscalingRules: [{{metric: queue_length, threshold: 10}}]\nbehavior: {{scaleUp: {{tolerance: \"{milli}{junk}x\"}}}}\n"
        );
        let e = parse_policy(&yaml).err().map(|e| e.to_string()).unwrap_or_default();
        prop_assert!(e.contains("spec.behavior.scaleUp.tolerance") && e.contains("not a Kubernetes quantity"), "{}", e);
    }
}

proptest! {
    /// Whatever the URL's credentials, the token or the text around them, no secret is
    /// left after redaction, and text without credentials is unchanged.
    #[test]
    fn redaction_removes_every_credential(
        user in "[a-z]{1,8}",
        password in "P[A-Za-z0-9%:!$]{6,16}",
        token in "T[A-Za-z0-9._~+/-]{8,40}=*",
        host in "[a-z]{1,10}(\\.[a-z]{1,5})?(:[0-9]{2,5})?",
        around in "[a-z ():]{0,20}",
    ) {
        let text = format!(
            "{around}error sending request for url (https://{user}:{password}@{host}/api/v1/query?access_token={token}): {around} Bearer {token}"
        );
        let out = vllm_scaling_core::redact_credentials(&text);
        prop_assert!(!out.contains(&password), "{}", out);
        prop_assert!(!out.contains(&token), "{}", out);
        prop_assert!(out.contains(&host), "{}", out);
        let clean = format!("{around}querying https://{host}/api/v1/query failed");
        prop_assert_eq!(vllm_scaling_core::redact_credentials(&clean), clean);
    }
}
