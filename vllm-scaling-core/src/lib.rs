//! The policy engine of vllm-scaling: decides how many vLLM replicas to run from the
//! signals that matter for LLM serving (queue length, KV-cache usage, latency
//! quantiles, GPU utilization), with the Kubernetes HPA's threshold and stabilization
//! math reproduced exactly.
//!
//! # Sans-I/O and clock-free
//! This crate performs no I/O: no sockets, no files, no async runtime, and it never
//! reads a clock. Every entry point that moves state takes `now: Timestamp`. Drivers (the
//! Kubernetes controller, the `vllm-autoscaler` binary, the simulator, your own) gather
//! the inputs through the three ports ([`GetScalingMetrics`], [`AdjustReplicas`],
//! [`GetScalingPolicy`]), call [`Engine::evaluate`], apply the [`Decision`], and report a
//! successful rescale back with [`Engine::record_scale`]. A crate-local `clippy.toml`
//! bans `Instant::now` and `SystemTime::now`.
//!
//! # Example
//! ```
//! use vllm_scaling_core::{parse_policy, CurrentScale, Engine, LimitedBy, PodMetrics, ScalingMetrics, Timestamp};
//!
//! let (_, policy) = parse_policy(r#"
//! apiVersion: autoscaler.production-stack/v1alpha1
//! kind: vLLMScalingPolicy
//! metadata: {name: example-policy}
//! spec:
//!   scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: meta-llama/Llama-2-70b-hf}
//!   minReplicas: 1
//!   maxReplicas: 10
//!   scalingRules:
//!     - {metric: gpu_utilization, threshold: 75}
//!     - {metric: queue_length, threshold: 10}
//! "#).expect("valid policy");
//! let mut engine = Engine::new(policy);
//!
//! // Two replicas, each with 15 requests waiting and the GPU 80 % busy.
//! let pods = (0..2)
//!     .map(|i| PodMetrics::running(format!("vllm-{i}")).with("queue_length", 15.0).with("gpu_utilization", 80.0))
//!     .collect();
//! let metrics = ScalingMetrics { pods, ..Default::default() };
//! let decision = engine.evaluate(Timestamp::from_secs(0), CurrentScale::new(2), &metrics);
//!
//! // queue_length proposes ceil(15/10 × 2) = 3; gpu_utilization is within tolerance.
//! assert_eq!(decision.desired_replicas, 3);
//! assert_eq!(decision.winning_rule.as_deref(), Some("queue_length"));
//! assert_eq!(decision.limited_by, LimitedBy::None);
//! ```

mod advanced;
mod decision;
mod engine;
mod excerpt;
mod forecast;
#[cfg(feature = "arbitrary")]
#[doc(hidden)]
pub mod fuzzing;
mod metric;
mod observation;
mod policy;
mod ports;
mod redact;
mod scenario;
mod schedule;
pub mod sim;
mod time;

pub use advanced::{
    AdvancedPolicy, AdvancedState, ExtraProposal, PanicSpec, PanicState, PredictiveSpec, ProposalSource, ResolvedPanic,
    ResolvedPredictive, ResolvedScaleToZero, ResolvedSurvivorsCheck, Sample, ScaleToZeroSpec, SurvivorsCheckSpec,
};
pub use decision::{Decision, LimitedBy, RuleOutcome, RuleStatus};
pub use engine::{Engine, EngineConfig, EngineState, Recommendation, ScaleEvent};
pub use excerpt::{MAX_REASON_BYTES, MAX_REASON_LINES, excerpt};
pub use forecast::{RateForecast, linear_forecast};
pub use metric::{Metric, MetricInfo, TargetType, UnknownMetric};
pub use observation::{CurrentScale, PodMetrics, PodPhase, ScalingMetrics};
pub use policy::{
    API_VERSION, Behavior, DEFAULT_DOWNSCALE_STABILIZATION, DEFAULT_QUANTILE, DEFAULT_TOLERANCE, DEFAULT_WINDOW_SECS,
    DirectionalTolerance, HpaScalingPolicy, HpaScalingRules, KIND, MAX_PERIOD_SECS, MAX_QUERY_LEN, MAX_RATE_POLICIES,
    MAX_SCALING_RULES, MAX_SCHEDULES, MAX_STABILIZATION_WINDOW_SECS, MAX_TARGET_FIELD_LEN, MAX_WINDOW_LEN,
    MetricSource, Mode, ObjectMeta, PolicyError, PolicyErrors, PolicySpec, PolicyType, Quantity, ResolvedBehavior,
    ResolvedDirection, ResolvedPolicy, ResolvedRule, ScaleTargetRef, ScalingRule, SelectPolicy, ToleranceSpec,
    VllmScalingPolicy, parse_policies, parse_policy, parse_prom_duration, parse_quantity, policy_from_value, to_milli,
};
pub use ports::{
    AdjustReplicas, GetScalingMetrics, GetScalingPolicy, InMemoryError, InMemoryMetrics, InMemoryPolicies,
    InMemoryReplicas, MetricsRequest, PodInfo, ReconcileError, TargetId, error_chain, reconcile,
};
pub use redact::{REDACTED, redact_credentials};
pub use scenario::{
    MAX_SYNTHETIC_PODS, ReplayLine, ReplayRule, Replayer, Scenario, ScenarioController, ScenarioError, ScenarioPod,
    ScenarioStep, StepExpectation,
};
pub use schedule::{Bounds, MAX_SCHEDULE_NAME_LEN, ResolvedSchedule, ScheduleSpec, ScheduleZone, Weekday};
pub use time::{Clock, FakeClock, Timestamp};
