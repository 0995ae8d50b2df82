//! Invariants of the whole pipeline with the features beyond the HPA switched on in
//! random combinations, driven through random load, failures and evaluation gaps.

use proptest::prelude::*;
use vllm_scaling_core::{
    Bounds, CurrentScale, Engine, LimitedBy, PodMetrics, ProposalSource, ResolvedPolicy, RuleStatus, ScalingMetrics,
    Timestamp, parse_policy,
};

/// 2026-01-01T00:00:00Z: schedules read wall-clock time, so the drive uses Unix time.
const START: u64 = 1_767_225_600;

#[derive(Clone, Debug)]
struct Features {
    panic: Option<(i32, i32)>,
    scale_to_zero: bool,
    predictive: bool,
    survivors: Option<f64>,
    /// (start minute, length in minutes, min, max) of a UTC schedule in the first hour.
    schedule: Option<(u32, u32, i32, i32)>,
    fallback: Option<i32>,
    min: i32,
    max: i32,
    behavior: &'static str,
}

impl Features {
    fn yaml(&self) -> String {
        let fb = self.fallback.map(|f| format!(", fallbackReplicas: {f}")).unwrap_or_default();
        let min = if self.scale_to_zero { 0 } else { self.min };
        let mut y = format!(
            "minReplicas: {min}\nmaxReplicas: {}\nscalingRules:\n  - {{metric: queue_length, threshold: 10{fb}}}\n\
             \x20 - {{metric: custom, name: arrivals, query: 'sum(rate(router_requests_total[1m]))', threshold: 8, targetType: AverageValue}}\n{}",
            self.max, self.behavior
        );
        if let Some((w, s)) = self.panic {
            y += &format!("panic: {{windowSeconds: {w}, stableWindowSeconds: {}}}\n", w + s);
        }
        if self.scale_to_zero {
            y += "scaleToZero: {activationRule: arrivals, idleSeconds: 120}\n";
        }
        if self.predictive {
            y += "predictive: {rule: arrivals, horizonSeconds: 60, historySeconds: 300, minSamples: 3}\n";
        }
        if let Some(h) = self.survivors {
            y += &format!("survivorsCheck: {{headroomPercent: {h}}}\n");
        }
        if let Some((start, len, smin, smax)) = self.schedule {
            let hhmm = |m: u32| format!("{:02}:{:02}", m / 60, m % 60);
            let smin = if self.scale_to_zero { smin } else { smin.max(1) };
            y += &format!(
                "schedules: [{{name: s, timeZone: UTC, start: '{}', end: '{}', minReplicas: {smin}, maxReplicas: {smax}}}]\n",
                hhmm(start),
                hhmm(start + len)
            );
        }
        y
    }

    fn policy(&self) -> ResolvedPolicy {
        let y = self.yaml();
        parse_policy(&y).unwrap_or_else(|e| panic!("generated policy is invalid: {e}\n{y}")).1
    }
}

fn features() -> impl Strategy<Value = Features> {
    (
        prop::option::of((2..20i32, 0..60i32)),
        any::<bool>(),
        any::<bool>(),
        prop::option::of(0.0..40.0f64),
        prop::option::of((0..40u32, 1..30u32, 0..4i32, 4..30i32)),
        prop::option::of(1..10i32),
        1..4i32,
        10..30i32,
        prop_oneof![Just(""), Just("behavior: {}\n"), Just("behavior: {scaleDown: {stabilizationWindowSeconds: 0}}\n")],
    )
        .prop_map(|(panic, scale_to_zero, predictive, survivors, schedule, fallback, min, max, behavior)| {
            Features {
                panic,
                scale_to_zero,
                predictive,
                survivors,
                schedule: schedule.map(|(s, l, lo, hi)| (s, l, lo, hi.min(max))),
                fallback,
                min,
                max,
                behavior,
            }
        })
}

/// One evaluation's inputs: the gap since the last one, the queue per pod (or a failed
/// scrape), the arrival rate (or a failed query).
fn steps() -> impl Strategy<Value = Vec<(u64, Option<f64>, Option<f64>)>> {
    prop::collection::vec(
        (
            1..40u64,
            prop::option::weighted(0.9, 0.0..40.0f64),
            prop::option::weighted(0.9, prop_oneof![3 => Just(0.0), 2 => 0.0..200.0f64]),
        ),
        1..60,
    )
}

fn observe(current: i32, queue: Option<f64>, arrivals: Option<f64>) -> ScalingMetrics {
    let mut m = ScalingMetrics::default();
    match queue {
        Some(q) => {
            m.pods = (0..current).map(|i| PodMetrics::running(format!("p{i}")).with("queue_length", q)).collect()
        }
        None => {
            m.pods = (0..current).map(|i| PodMetrics::running(format!("p{i}"))).collect();
            m.failures.insert("queue_length".into(), "scrape failed".into());
        }
    }
    match arrivals {
        Some(a) => {
            m.fleet.insert("arrivals".into(), a);
        }
        None => {
            m.failures.insert("arrivals".into(), "prometheus down".into());
        }
    }
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, ..ProptestConfig::default() })]

    #[test]
    fn the_pipeline_keeps_its_promises(f in features(), steps in steps(), start in 1..8i32) {
        let p = f.policy();
        let mut e = Engine::new(p.clone());
        let mut current = start.min(p.max_replicas);
        let mut t = START;
        for (gap, queue, arrivals) in steps {
            t += gap;
            let now = Timestamp::from_secs(t);
            let m = observe(current, queue, arrivals);
            let b = Bounds::at(&p.advanced.schedules, p.min_replicas, p.max_replicas, now);

            // Persistence: the state through JSON gives the same decision.
            let mut restored = Engine::new(p.clone());
            restored.restore_state(serde_json::from_str(&serde_json::to_string(e.state()).unwrap()).unwrap());

            let d = e.evaluate(now, CurrentScale::new(current), &m);
            let again = restored.evaluate(now, CurrentScale::new(current), &m);
            prop_assert_eq!(serde_json::to_value(&d).unwrap(), serde_json::to_value(&again).unwrap());
            prop_assert_eq!(e.state(), restored.state());

            let why = &d.explanation;
            // Bounds: the scheduled ones, and zero only through scale-to-zero.
            prop_assert!(d.desired_replicas <= b.max_replicas, "{why}");
            if d.desired_replicas == 0 {
                prop_assert!(f.scale_to_zero && b.min_replicas == 0, "{why}");
                prop_assert_eq!(d.limited_by, LimitedBy::ScaleToZero, "{}", why);
            } else {
                prop_assert!(d.desired_replicas >= b.min_replicas, "{why}");
            }
            let inside = current >= b.min_replicas && current <= b.max_replicas && current > 0;
            // Missing or bad data never scales down.
            if inside && d.rules.iter().any(|r| r.status != RuleStatus::Ok) {
                prop_assert!(d.desired_replicas >= current, "scaled down on missing data: {why}");
            }
            // Panic never scales down.
            if inside && e.state().advanced.panic.is_some() {
                prop_assert!(d.desired_replicas >= current, "scaled down while panicking: {why}");
            }
            // A forecast only ever raises.
            for x in d.extra_proposals.iter().filter(|x| x.source == ProposalSource::Predictive) {
                prop_assert!(x.replicas > current, "{why}");
            }
            // Without scale-to-zero, zero replicas is hands off.
            if current == 0 && !f.scale_to_zero {
                prop_assert_eq!(d.limited_by, LimitedBy::ScalingDisabled);
            }
            if d.desired_replicas != current {
                e.record_scale(now, current, d.desired_replicas);
                current = d.desired_replicas;
            }
        }
    }
}
