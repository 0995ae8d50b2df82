//! The policies the simulator drives: the project's engine, a Knative-KPA-like baseline,
//! fixed fleets, and a replica schedule (used by the offline oracle).

use std::time::Duration;

use crate::engine::{Engine, EngineConfig};
use crate::observation::CurrentScale;
use crate::policy::ResolvedPolicy;
use crate::time::Timestamp;

use super::fleet::{Autoscaler, Verdict};
use super::observe::FleetView;

/// The project's engine, fed exactly what the controller would feed it: the pod list
/// and the catalog metrics of the policy's rules, built from the simulated scrapes.
///
/// ```
/// use vllm_scaling_core::sim::{simulate, EngineAutoscaler, FleetConfig, Trace, TraceRequest};
/// use vllm_scaling_core::{parse_policy, EngineConfig};
///
/// let (_, policy) = parse_policy("maxReplicas: 8\nscalingRules: [{metric: queue_length, threshold: 5}]").unwrap();
/// let mut hpa = EngineAutoscaler::new("hpa-queue", policy, EngineConfig::default());
/// let requests: Vec<TraceRequest> = (0..600)
///     .map(|i| TraceRequest { arrival_secs: f64::from(i) * 0.2, input_tokens: 500, output_tokens: 50 })
///     .collect();
/// let run = simulate(&requests, &FleetConfig::default(), &mut hpa, &mut |_| {}).unwrap();
/// assert_eq!(run.report.requests, 600);
/// assert!(run.report.slo_attainment > 0.99); // 5 req/s is well within one replica
/// ```
#[derive(Clone, Debug)]
pub struct EngineAutoscaler {
    name: String,
    engine: Engine,
    scrape_interval_secs: Option<f64>,
    explanations: Vec<(f64, String)>,
}

impl EngineAutoscaler {
    /// Wraps an engine running `policy` with `config` (its sync period is the evaluation period).
    #[must_use]
    pub fn new(name: impl Into<String>, policy: ResolvedPolicy, config: EngineConfig) -> Self {
        Self {
            name: name.into(),
            engine: Engine::with_config(policy, config),
            scrape_interval_secs: None,
            explanations: Vec::new(),
        }
    }

    /// Scrapes at this interval instead of the fleet's (builder style).
    #[must_use]
    pub fn with_scrape_interval(mut self, secs: f64) -> Self {
        self.scrape_interval_secs = Some(secs);
        self
    }

    /// The engine, for its state and policy.
    #[must_use]
    pub fn engine(&self) -> &Engine {
        &self.engine
    }
}

impl Autoscaler for EngineAutoscaler {
    fn name(&self) -> &str {
        &self.name
    }

    fn scrape_interval_secs(&self) -> Option<f64> {
        self.scrape_interval_secs
    }

    fn first_evaluation_secs(&self) -> f64 {
        self.engine.config().sync_period.as_secs_f64()
    }

    fn evaluate(&mut self, view: &FleetView<'_>) -> Verdict {
        let now = view.now();
        let current = view.spec_replicas();
        let metrics = view.scaling_metrics(&self.engine.policy().rules);
        let decision = self.engine.evaluate(now, CurrentScale::new(current), &metrics);
        let desired = if decision.actuate { decision.desired_replicas } else { current };
        if desired != current {
            self.engine.record_scale(now, current, desired);
            self.explanations.push((view.now_secs(), decision.explanation));
        }
        Verdict { desired_replicas: desired, next_evaluation: decision.next_evaluation }
    }

    fn take_explanations(&mut self) -> Vec<(f64, String)> {
        std::mem::take(&mut self.explanations)
    }
}

/// Settings of the Knative-KPA-like baseline (Knative Serving defaults unless said).
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KpaConfig {
    /// The concurrency (waiting plus running requests) each replica should carry: the
    /// per-pod target times the target utilization (Knative: `target` × 0.7).
    pub target_concurrency: f64,
    /// The stable window, seconds (60).
    pub stable_window_secs: f64,
    /// The panic window, seconds (10 % of stable: 6).
    pub panic_window_secs: f64,
    /// Panic when the panic-window proposal reaches this multiple of ready pods (2.0 = 200 %).
    pub panic_threshold: f64,
    /// Most growth per tick, as a multiple of ready pods (1000).
    pub max_scale_up_rate: f64,
    /// Most shrinkage per tick, as a divisor of ready pods (2).
    pub max_scale_down_rate: f64,
    /// Decision tick, seconds (2).
    pub tick_secs: f64,
    /// Concurrency sampling interval, seconds (the queue-proxy reports every second).
    pub scrape_interval_secs: f64,
    /// Fewest replicas.
    pub min_replicas: i32,
    /// Most replicas.
    pub max_replicas: i32,
}

impl Default for KpaConfig {
    fn default() -> Self {
        Self {
            target_concurrency: 70.0,
            stable_window_secs: 60.0,
            panic_window_secs: 6.0,
            panic_threshold: 2.0,
            max_scale_up_rate: 1000.0,
            max_scale_down_rate: 2.0,
            tick_secs: 2.0,
            scrape_interval_secs: 1.0,
            min_replicas: 1,
            max_replicas: 1000,
        }
    }
}

/// Knative's KPA (`pkg/autoscaler/scaling/autoscaler.go`), on vLLM concurrency: the
/// average total concurrency over a stable and a panic window, panic mode entered when
/// the panic proposal reaches 200 % of ready pods, left a stable window after it last
/// held, and no scale-down while panicking.
#[derive(Clone, Debug)]
pub struct KpaAutoscaler {
    name: String,
    config: KpaConfig,
    panic_since: Option<f64>,
    max_panic_pods: i32,
}

impl KpaAutoscaler {
    /// A KPA with these settings.
    #[must_use]
    pub fn new(name: impl Into<String>, config: KpaConfig) -> Self {
        Self { name: name.into(), config, panic_since: None, max_panic_pods: 0 }
    }

    fn window_average(view: &FleetView<'_>, window: f64) -> Option<f64> {
        let from = view.now_secs() - window;
        let (mut sum, mut n) = (0.0, 0usize);
        for s in view.visible_snapshots(0.0).rev().take_while(|s| s.at_secs > from) {
            sum += s.pods.iter().map(|p| f64::from(p.in_flight())).sum::<f64>();
            n += 1;
        }
        (n > 0).then(|| sum / n as f64)
    }
}

impl Autoscaler for KpaAutoscaler {
    fn name(&self) -> &str {
        &self.name
    }

    fn scrape_interval_secs(&self) -> Option<f64> {
        Some(self.config.scrape_interval_secs)
    }

    fn first_evaluation_secs(&self) -> f64 {
        self.config.tick_secs
    }

    fn evaluate(&mut self, view: &FleetView<'_>) -> Verdict {
        let c = &self.config;
        let now = view.now_secs();
        let next_evaluation = view.now().saturating_add(Duration::from_secs_f64(c.tick_secs));
        let current = view.spec_replicas();
        let (Some(stable), Some(panic)) =
            (Self::window_average(view, c.stable_window_secs), Self::window_average(view, c.panic_window_secs))
        else {
            // No data: Knative keeps the current scale.
            return Verdict { desired_replicas: current, next_evaluation };
        };
        let ready = view.ready_replicas().max(1) as f64;
        let max_up = (c.max_scale_up_rate * ready).ceil() as i32;
        let max_down = (ready / c.max_scale_down_rate).floor() as i32;
        let stable_pods = ((stable / c.target_concurrency).ceil() as i32).clamp(max_down, max_up);
        let panic_pods = ((panic / c.target_concurrency).ceil() as i32).clamp(max_down, max_up);
        let over_threshold = f64::from(panic_pods) / ready >= c.panic_threshold;
        if over_threshold {
            self.panic_since = Some(now);
        } else if self.panic_since.is_some_and(|since| now >= since + c.stable_window_secs) {
            self.panic_since = None;
            self.max_panic_pods = 0;
        }
        let mut desired = stable_pods;
        if self.panic_since.is_some() {
            desired = desired.max(panic_pods);
            // While panicking, never scale down.
            if desired > self.max_panic_pods {
                self.max_panic_pods = desired;
            } else {
                desired = self.max_panic_pods;
            }
        }
        Verdict { desired_replicas: desired.clamp(c.min_replicas, c.max_replicas), next_evaluation }
    }
}

/// A fleet that never changes size.
#[derive(Clone, Debug)]
pub struct FixedAutoscaler {
    name: String,
    replicas: i32,
}

impl FixedAutoscaler {
    /// Always `replicas`.
    #[must_use]
    pub fn new(name: impl Into<String>, replicas: i32) -> Self {
        Self { name: name.into(), replicas }
    }
}

impl Autoscaler for FixedAutoscaler {
    fn name(&self) -> &str {
        &self.name
    }

    fn first_evaluation_secs(&self) -> f64 {
        0.0
    }

    fn evaluate(&mut self, view: &FleetView<'_>) -> Verdict {
        Verdict {
            desired_replicas: self.replicas,
            next_evaluation: view.now().saturating_add(Duration::from_secs(86_400)),
        }
    }
}

/// Replicas set by a timetable: `(from_secs, replicas)` steps, sorted by time.
#[derive(Clone, Debug)]
pub struct ScheduleAutoscaler {
    name: String,
    steps: Vec<(f64, i32)>,
}

impl ScheduleAutoscaler {
    /// Follows `steps` (sorted here by time); before the first step, the first step's replicas.
    #[must_use]
    pub fn new(name: impl Into<String>, mut steps: Vec<(f64, i32)>) -> Self {
        steps.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self { name: name.into(), steps }
    }

    /// The timetable.
    #[must_use]
    pub fn steps(&self) -> &[(f64, i32)] {
        &self.steps
    }
}

impl Autoscaler for ScheduleAutoscaler {
    fn name(&self) -> &str {
        &self.name
    }

    fn first_evaluation_secs(&self) -> f64 {
        0.0
    }

    fn evaluate(&mut self, view: &FleetView<'_>) -> Verdict {
        let now = view.now_secs();
        let idx = self.steps.partition_point(|s| s.0 <= now + 1e-9);
        let desired = self.steps.get(idx.saturating_sub(1)).map_or(view.spec_replicas(), |s| s.1);
        let next = self.steps.get(idx).map_or(now + 86_400.0, |s| s.0);
        Verdict {
            desired_replicas: desired,
            next_evaluation: Timestamp::from_secs_f64(next).unwrap_or_else(|| view.now()),
        }
    }
}
