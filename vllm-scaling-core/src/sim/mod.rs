//! The trace-driven fleet simulator: replays request arrivals against a modelled vLLM
//! fleet driven by a scaling policy, on simulated time.
//!
//! It is pure like the rest of the crate: no clock, no files, no threads of its own (a
//! driver may run a plan's independent jobs on threads through [`Parallel`]), and the
//! same seed gives the same run. Traces are parsed from text ([`Trace::parse_csv`]); reading
//! files, plotting and progress bars belong to the driver (`vllm-autoscaler simulate`).
//!
//! The pieces:
//! - [`ReplicaModel`]: one vLLM replica: continuous batching with chunked prefill, a
//!   step time `a + b·(prefill tokens) + c·(sequences) + d·(context tokens attended)`, a
//!   KV-cache token budget and a waiting queue. [`ReplicaProfile`] is one GPU and model
//!   as a data file (`profiles/*.yaml`), with its cold start, price and sources. Each request gets its queue time, time to first token, inter-token
//!   latency and end-to-end latency.
//! - [`FleetConfig`] and [`simulate`]: replicas that become useful a cold start after the
//!   scale decision, drain when removed, and cost GPU time from the decision; a gateway
//!   that routes each request to the least-loaded ready replica; pods scraped at an
//!   interval, with an optional Prometheus lag; the policy evaluated on its own period.
//! - [`Autoscaler`]: what the simulator drives. [`EngineAutoscaler`] runs the same
//!   [`Engine`](crate::Engine) the controller runs, fed the catalog metrics built from the
//!   scrapes by [`FleetView::scaling_metrics`]; [`KpaAutoscaler`], [`FixedAutoscaler`]
//!   and [`ScheduleAutoscaler`] are the baselines.
//! - [`Plan`] and [`compare`]: the comparison of `vllm-autoscaler simulate`, out of
//!   sample by default ([`Windows`]: the first half learns, the second is scored): the
//!   recommended policy, the HPA on its arrival-rate signal and on queue, running and
//!   KV-cache metrics (targets tuned on the training window), a KPA tuned for the cold
//!   start, fixed fleets, and the oracle with its [`LowerBound`] on GPU-hours.
//! - [`analyze_burstiness`]: how fast a trace's bursts outgrow the ones before them,
//!   which decides whether the recommended policy keeps burst headroom.
//! - [`GeneratorConfig`]: the built-in load (daily shape, Gamma arrivals, bursts).
//!
//! ```
//! use vllm_scaling_core::sim::{compare, ExperimentConfig, GeneratorConfig, PolicyKind};
//!
//! let trace = GeneratorConfig { duration_secs: 600.0, mean_rps: 15.0, ..GeneratorConfig::default() }
//!     .generate(1)
//!     .unwrap();
//! let config = ExperimentConfig::default();
//! let comparison = compare(trace.requests(), &config, &[PolicyKind::VllmScaling, PolicyKind::Oracle], &mut |_, _| {}).unwrap();
//! let ours = &comparison.runs[0].report;
//! assert_eq!(ours.name, "vllm-scaling");
//! assert!(ours.gpu_hours > 0.0 && (0.0..=1.0).contains(&ours.slo_attainment));
//! ```

mod autoscalers;
mod bench;
mod burst;
mod experiment;
mod fleet;
mod generator;
mod ledger;
mod model;
mod observe;
mod profile;
mod replica;
mod report;
mod rng;
mod trace;
mod user_policy;

pub use autoscalers::{EngineAutoscaler, FixedAutoscaler, KpaAutoscaler, KpaConfig, ScheduleAutoscaler};
pub use bench::{
    BenchError, BenchLoad, BenchPoint, Fit, PointError, constant_errors, emulate_bench, fit_step_constants,
    score as score_bench,
};
pub use burst::{Burstiness, HOLD_STEP_SECS, MAX_HOLD_SECS, MIN_HOLD_SECS, analyze as analyze_burstiness};
pub use experiment::{
    BURSTY_GIVE_BACK_PERCENT, CALIBRATION_REPLICAS, Calibration, Comparison, ExperimentConfig, FixedSearch,
    IntervalCurve, Learning, LowerBound, ORACLE_WARMUP_SECS, OraclePlan, Parallel, Plan, PolicyKind, Sequential, Stage,
    Start, Tuning, UnknownPolicy, WindowInfo, Windows, calibrate, compare, feasible_share, hpa_policy_yaml,
    hpa_queue_policy_yaml, hpa_rate_policy_yaml, lower_bound_gpu_hours, rate_window_secs, recommended_policy_yaml,
    recommended_policy_yaml_for,
};
pub use fleet::{Autoscaler, FleetConfig, Router, RunResult, SimError, Verdict, simulate};
pub use generator::{GeneratorConfig, RateProfile, RateWindow};
pub use model::{ModelError, ReplicaModel};
pub use observe::{ARRIVAL_RATE_QUERY, FleetView, PodSample, PodStatus, Snapshot, pod_name};
pub use profile::{PROFILE_NUMBERS, ProfileError, ReplicaProfile, camel_case};
pub use report::{PolicyReport, ScaleChange, SeriesPoint, direction_changes};
pub use rng::SimRng;
pub use trace::{ColumnMap, ParsedTrace, TimeFormat, Trace, TraceError, TraceOptions, TraceRequest, TraceStats};
pub use user_policy::{SIMULATED_METRICS, UnmodelledRule, unmodelled_rules};
