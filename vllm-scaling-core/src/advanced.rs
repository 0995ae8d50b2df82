//! Policies beyond the HPA: panic mode, scale to zero, per-rule fallback replicas,
//! scheduled bounds, predictive scale-up and the survivors check.
//!
//! Every feature is an optional field of the policy; with none of them set the engine
//! is exactly the HPA. Each one is a small step of [`Engine::evaluate`](crate::Engine::evaluate),
//! run in this order:
//!
//! 1. rule proposals, with `fallbackReplicas` standing in for a failed rule;
//! 2. extra proposals: panic mode and the predictive forecast (they can only raise);
//! 3. max of proposals, holding replicas when a rule failed and the rest would scale down;
//! 4. the survivors check on a scale-down;
//! 5. stabilization (panic mode holds scale-down here);
//! 6. rate policies (panic mode lifts the scale-up limit here);
//! 7. bounds: scheduled `minReplicas`/`maxReplicas`, then scale to zero.
//!
//! The short history these steps need (panic-window demand, rate samples for the
//! forecast, when the target went idle) lives in [`AdvancedState`], part of the
//! serializable [`EngineState`](crate::EngineState).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::decision::RuleOutcome;
use crate::decision::RuleStatus;
use crate::forecast::{RateForecast, linear_forecast};
use crate::metric::TargetType;
use crate::observation::{PodPhase, ScalingMetrics};
use crate::policy::{PolicySpec, ResolvedRule};
use crate::schedule::{ResolvedSchedule, resolve_schedules};
use crate::time::Timestamp;

// ---------------------------------------------------------------------------------------
// The policy fields

/// `spec.panic`: Knative-KPA-style panic mode.
///
/// Demand is the largest healthy proposal of the panic `rules` (default: every rule) in
/// each evaluation. When the demand averaged over the short panic window reaches
/// `thresholdPercent` of the current replicas, the target is *panicking*: scale-up may
/// go straight to that panic-window demand (at most `maxScaleUpRate` × current) whatever
/// the rate policies say, and no scale-down happens. Panic ends once a whole
/// `stableWindowSeconds` has passed without the condition.
///
/// Pick panic rules whose proposals track the load (arrivals, requests in flight) rather
/// than a backlog: a queue-length proposal grows with every second a cold start lasts,
/// and panic would chase it. Other rules still propose, under their rate limits.
///
/// The engine sees one snapshot per evaluation and averages the evaluations inside the
/// window, so **panic mode expects the driver to evaluate at least twice per panic
/// window** (Knative ticks every 2 s against a 6 s window). With a slower period (the
/// HPA's 15 s) the window holds only the latest snapshot: panic then reacts to a single
/// evaluation, which is still fast, but not averaged.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PanicSpec {
    /// The panic window, 1..=3600 s (default 6, Knative's 10 % of 60 s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window_seconds: Option<i32>,
    /// How long the condition must stay off before panic ends, 1..=3600 s, at least the
    /// panic window (default 60, Knative's stable window).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stable_window_seconds: Option<i32>,
    /// Enter panic when the panic-window demand is at least this percent of the current
    /// replicas, 110..=1000 (default 200, Knative's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub threshold_percent: Option<f64>,
    /// While panicking, one evaluation may scale up to at most `ceil(current ×
    /// maxScaleUpRate)`, whatever the rate policies say; greater than 1 (default 1000,
    /// Knative's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_scale_up_rate: Option<f64>,
    /// The keys of the rules whose proposals are the demand (default: every rule).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<Vec<String>>,
}

/// `spec.scaleToZero`: go to zero replicas when idle, come back when activated.
///
/// The *activation signal* is the fleet total of one rule's metric (its fleet value, or
/// the sum of the pods' values). Once it has stayed at or below `activationThreshold`
/// for `idleSeconds`, and no rule is failing, the target scales to zero. At zero, a
/// signal above the threshold scales the target from zero (to at least one replica, or
/// more if the rules ask for it); a missing signal keeps it at zero, unless the rule has
/// `fallbackReplicas`, which are then started.
///
/// At zero there are no pods, so the activation rule must be one the metrics backend
/// can answer without pods: a `custom` PromQL query (for example the router's request
/// rate for the model) or a fleet-level value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleToZeroSpec {
    /// The key of the scaling rule whose value is the activation signal.
    pub activation_rule: String,
    /// The target is active while the signal is above this (default 0: any traffic).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub activation_threshold: Option<f64>,
    /// How long the signal must stay at or below the threshold before scaling to zero,
    /// 0..=86400 s (default 300, KEDA's cooldownPeriod).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_seconds: Option<i32>,
}

/// `spec.predictive`: pre-warm replicas for the load one cold start ahead.
///
/// Each evaluation records the fleet total of the named rule's metric (a request rate);
/// a line fitted to the last `historySeconds` of samples forecasts it `horizonSeconds`
/// ahead, and the one-sided upper prediction bound at `confidence` divided by
/// `capacityPerReplica` is a proposal. It only ever raises the desired replicas: a
/// forecast below the current replicas proposes nothing, so the forecast alone never
/// scales down.
///
/// Forecast an arrival rate (the router's or gateway's incoming requests): a completion
/// rate such as `requests_per_second` stops growing once the fleet saturates, which is
/// exactly when the forecast matters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PredictiveSpec {
    /// The key of the scaling rule whose fleet total is the rate to forecast (for
    /// example `requests_per_second`, or a `custom` query for the arrival rate).
    pub rule: String,
    /// How far ahead to look: the cold start of a replica, 1..=3600 s (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub horizon_seconds: Option<i32>,
    /// How much history the line is fitted to, 10..=86400 s (default 600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub history_seconds: Option<i32>,
    /// The one-sided confidence of the upper bound, in [0.5, 1) (default 0.9; 0.5 is
    /// the plain forecast).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confidence: Option<f64>,
    /// The rate one replica serves within its SLO. Default: the rule's threshold when
    /// the rule is `AverageValue` (a per-replica target); required otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub capacity_per_replica: Option<f64>,
    /// The fewest samples to fit a line to, 3..=10000 (default 5).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_samples: Option<i32>,
}

/// `spec.survivorsCheck`: before a scale-down, check that the replicas left carry the
/// load under every threshold.
///
/// For each healthy rule the load is spread over the candidate count (per-pod totals,
/// with pods that reported nothing counted at the threshold as the HPA does; fleet
/// `Value` rules scaled by ready pods / candidate); the scale-down goes only as far as
/// every rule stays at or below `(100 - headroomPercent) %` of its threshold.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SurvivorsCheckSpec {
    /// Headroom to keep under each threshold after a scale-down, in [0, 100) percent
    /// (default 0: at or under the threshold).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headroom_percent: Option<f64>,
}

// ---------------------------------------------------------------------------------------
// The resolved form

/// Panic mode with defaults filled in.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResolvedPanic {
    /// The panic window.
    pub window: Duration,
    /// The stable window that must pass without the condition for panic to end.
    pub stable_window: Duration,
    /// The demand / current ratio that triggers panic (2.0 for 200 %).
    pub threshold: f64,
    /// The scale-up multiple allowed per evaluation while panicking.
    pub max_scale_up_rate: f64,
    /// The keys of the rules that make the demand (empty: every rule).
    pub rules: Vec<String>,
}

/// Scale to zero with defaults filled in.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResolvedScaleToZero {
    /// The activation rule's key.
    pub activation_rule: String,
    /// Active while the signal is above this.
    pub activation_threshold: f64,
    /// How long the signal must be idle before scaling to zero.
    pub idle: Duration,
}

/// Predictive scale-up with defaults filled in.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResolvedPredictive {
    /// The rate rule's key.
    pub rule: String,
    /// How far ahead to forecast.
    pub horizon: Duration,
    /// How much history to fit.
    pub history: Duration,
    /// The one-sided confidence of the upper bound.
    pub confidence: f64,
    /// The rate one replica serves.
    pub capacity_per_replica: f64,
    /// The fewest samples to forecast from.
    pub min_samples: usize,
}

/// The survivors check with defaults filled in.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResolvedSurvivorsCheck {
    /// The fraction of each threshold to stay under (0.0 = at or under the threshold).
    pub headroom: f64,
}

/// The features beyond the HPA, resolved; all off by default.
#[derive(Clone, Debug, Default, PartialEq)]
#[non_exhaustive]
pub struct AdvancedPolicy {
    /// Panic mode.
    pub panic: Option<ResolvedPanic>,
    /// Scale to zero.
    pub scale_to_zero: Option<ResolvedScaleToZero>,
    /// Predictive scale-up.
    pub predictive: Option<ResolvedPredictive>,
    /// The survivors check.
    pub survivors_check: Option<ResolvedSurvivorsCheck>,
    /// Scheduled bounds, in spec order (the first active one wins).
    pub schedules: Vec<ResolvedSchedule>,
}

impl AdvancedPolicy {
    /// Whether every feature is off (the engine is then exactly the HPA).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.panic.is_none()
            && self.scale_to_zero.is_none()
            && self.predictive.is_none()
            && self.survivors_check.is_none()
            && self.schedules.is_empty()
    }
}

/// The `spec.minReplicas` check: 0 is valid only with `scaleToZero`.
pub(crate) fn check_min_replicas(spec: &PolicySpec, min_replicas: i32, err: &mut dyn FnMut(&str, String)) {
    if min_replicas < 0 || (min_replicas == 0 && spec.scale_to_zero.is_none()) {
        err("minReplicas", format!("must be at least 1, got {min_replicas} (0 is allowed only with spec.scaleToZero)"));
    }
}

/// Validates the fields beyond the HPA and fills in their defaults. `rules` are the
/// already resolved rules (for names referenced by key).
pub(crate) fn resolve(
    spec: &PolicySpec,
    rules: &[ResolvedRule],
    min_replicas: i32,
    err: &mut dyn FnMut(&str, String),
) -> AdvancedPolicy {
    let keys = || rules.iter().map(|r| format!("`{}`", r.key)).collect::<Vec<_>>().join(", ");
    let max_replicas = spec.max_replicas;

    for (i, rule) in spec.scaling_rules.iter().enumerate() {
        if let Some(f) = rule.fallback_replicas {
            if f < 1 {
                err(&format!("scalingRules[{i}].fallbackReplicas"), format!("must be at least 1, got {f}"));
            } else if f > max_replicas {
                err(
                    &format!("scalingRules[{i}].fallbackReplicas"),
                    format!("must not exceed maxReplicas ({f} > {max_replicas})"),
                );
            }
        }
    }

    let panic = spec.panic.as_ref().map(|p| {
        let window = p.window_seconds.unwrap_or(6);
        let stable = p.stable_window_seconds.unwrap_or(60);
        for (field, v) in [("windowSeconds", window), ("stableWindowSeconds", stable)] {
            if !(1..=3600).contains(&v) {
                err(&format!("panic.{field}"), format!("must be between 1 and 3600, got {v}"));
            }
        }
        if window > stable {
            err("panic.windowSeconds", format!("must not exceed stableWindowSeconds ({window} > {stable})"));
        }
        let threshold = p.threshold_percent.unwrap_or(200.0);
        if !(threshold.is_finite() && (110.0..=1000.0).contains(&threshold)) {
            err("panic.thresholdPercent", format!("must be between 110 and 1000, got {threshold}"));
        }
        let rate = p.max_scale_up_rate.unwrap_or(1000.0);
        if !(rate.is_finite() && rate > 1.0) {
            err("panic.maxScaleUpRate", format!("must be a finite number greater than 1, got {rate}"));
        }
        let panic_rules = p.rules.clone().unwrap_or_default();
        if p.rules.as_ref().is_some_and(Vec::is_empty) {
            err("panic.rules", "must name at least one rule when given (omit it for every rule)".to_owned());
        }
        if panic_rules.len() > crate::policy::MAX_SCALING_RULES {
            err(
                "panic.rules",
                format!("must name at most {} rules, got {}", crate::policy::MAX_SCALING_RULES, panic_rules.len()),
            );
        }
        for (i, key) in panic_rules.iter().enumerate() {
            if !rules.iter().any(|r| &r.key == key) {
                err(
                    &format!("panic.rules[{i}]"),
                    format!("no scaling rule is named `{key}`; the rules are {}", keys()),
                );
            }
        }
        ResolvedPanic {
            window: secs(window),
            stable_window: secs(stable),
            threshold: threshold / 100.0,
            max_scale_up_rate: rate,
            rules: panic_rules,
        }
    });

    let scale_to_zero = spec.scale_to_zero.as_ref().map(|z| {
        if !rules.iter().any(|r| r.key == z.activation_rule) {
            err(
                "scaleToZero.activationRule",
                format!("no scaling rule is named `{}`; the rules are {}", z.activation_rule, keys()),
            );
        }
        let threshold = z.activation_threshold.unwrap_or(0.0);
        if !(threshold.is_finite() && threshold >= 0.0) {
            err("scaleToZero.activationThreshold", format!("must be a finite number of at least 0, got {threshold}"));
        }
        let idle = z.idle_seconds.unwrap_or(300);
        if !(0..=86_400).contains(&idle) {
            err("scaleToZero.idleSeconds", format!("must be between 0 and 86400, got {idle}"));
        }
        let schedule_zero = spec.schedules.iter().flatten().any(|s| s.min_replicas == Some(0));
        if min_replicas != 0 && !schedule_zero {
            err(
                "scaleToZero",
                "has no effect: set minReplicas: 0, or minReplicas: 0 in one of the schedules".to_owned(),
            );
        }
        ResolvedScaleToZero {
            activation_rule: z.activation_rule.clone(),
            activation_threshold: threshold,
            idle: secs(idle),
        }
    });

    let predictive = spec.predictive.as_ref().map(|p| {
        let rule = rules.iter().find(|r| r.key == p.rule);
        if rule.is_none() {
            err("predictive.rule", format!("no scaling rule is named `{}`; the rules are {}", p.rule, keys()));
        }
        let horizon = p.horizon_seconds.unwrap_or(60);
        if !(1..=3600).contains(&horizon) {
            err("predictive.horizonSeconds", format!("must be between 1 and 3600, got {horizon}"));
        }
        let history = p.history_seconds.unwrap_or(600);
        if !(10..=86_400).contains(&history) {
            err("predictive.historySeconds", format!("must be between 10 and 86400, got {history}"));
        }
        let confidence = p.confidence.unwrap_or(0.9);
        if !(confidence.is_finite() && (0.5..1.0).contains(&confidence)) {
            err("predictive.confidence", format!("must be at least 0.5 and below 1, got {confidence}"));
        }
        let capacity = match (p.capacity_per_replica, rule) {
            (Some(c), _) => {
                if !(c.is_finite() && c > 0.0) {
                    err("predictive.capacityPerReplica", format!("must be a finite number greater than 0, got {c}"));
                }
                c
            }
            (None, Some(r)) if r.target_type == TargetType::AverageValue => r.threshold,
            (None, Some(r)) => {
                err(
                    "predictive.capacityPerReplica",
                    format!(
                        "is required: rule `{}` has a fleet-level (Value) threshold, which is not a per-replica capacity",
                        r.key
                    ),
                );
                1.0
            }
            (None, None) => 1.0,
        };
        let min_samples = p.min_samples.unwrap_or(5);
        if !(3..=10_000).contains(&min_samples) {
            err("predictive.minSamples", format!("must be between 3 and 10000, got {min_samples}"));
        }
        ResolvedPredictive {
            rule: p.rule.clone(),
            horizon: secs(horizon),
            history: secs(history),
            confidence,
            capacity_per_replica: capacity,
            min_samples: usize::try_from(min_samples.clamp(3, 10_000)).unwrap_or(5),
        }
    });

    let survivors_check = spec.survivors_check.as_ref().map(|s| {
        let headroom = s.headroom_percent.unwrap_or(0.0);
        if !(headroom.is_finite() && (0.0..100.0).contains(&headroom)) {
            err("survivorsCheck.headroomPercent", format!("must be at least 0 and below 100, got {headroom}"));
        }
        ResolvedSurvivorsCheck { headroom: headroom.clamp(0.0, 99.0) / 100.0 }
    });

    let schedules = match &spec.schedules {
        None => Vec::new(),
        Some(list) => resolve_schedules(list, min_replicas, max_replicas, spec.scale_to_zero.is_some(), err),
    };

    AdvancedPolicy { panic, scale_to_zero, predictive, survivors_check, schedules }
}

fn secs(s: i32) -> Duration {
    Duration::from_secs(u64::try_from(s).unwrap_or(0))
}

// ---------------------------------------------------------------------------------------
// The state

/// One timestamped value, in milli-units (the engine's state holds no floats, so it
/// compares exactly and round-trips through JSON unchanged).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Sample {
    /// When it was observed.
    pub at: Timestamp,
    /// The value × 1000.
    pub milli: i64,
}

/// Panic mode's memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PanicState {
    /// When panic began.
    pub since: Timestamp,
    /// The last evaluation that met the panic condition; panic ends a stable window later.
    pub last_triggered: Timestamp,
}

/// The history of the steps beyond the HPA (empty when none is configured).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AdvancedState {
    /// Panic mode: the demand (replicas × 1000) of recent evaluations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub demand_samples: Vec<Sample>,
    /// Panic mode: set while panicking.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic: Option<PanicState>,
    /// Predictive scale-up: the observed rate (× 1000) of recent evaluations.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rate_samples: Vec<Sample>,
    /// Scale to zero: since when the activation signal has been at or below its threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_since: Option<Timestamp>,
}

impl AdvancedState {
    /// Whether nothing is remembered.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.demand_samples.is_empty()
            && self.panic.is_none()
            && self.rate_samples.is_empty()
            && self.idle_since.is_none()
    }
}

/// The most samples kept per series: a bound on state size whatever the evaluation rate.
const MAX_SAMPLES: usize = 4096;

/// Keeps the samples strictly newer than `now - keep` (the behavior-stabilization edge)
/// and not from the future. Compared as an age, so nothing near the epoch is lost to a
/// saturating subtraction.
fn prune(samples: &mut Vec<Sample>, now: Timestamp, keep: Duration) {
    samples.retain(|s| s.at <= now && now.saturating_duration_since(s.at) < keep);
}

fn push_sample(samples: &mut Vec<Sample>, at: Timestamp, value: f64, keep: Duration) {
    prune(samples, at, keep);
    if (0.0..9.0e15).contains(&value) {
        samples.push(Sample { at, milli: (value * 1000.0).round() as i64 });
    }
    if samples.len() > MAX_SAMPLES {
        let excess = samples.len() - MAX_SAMPLES;
        samples.drain(..excess);
    }
}

// ---------------------------------------------------------------------------------------
// What the steps report

/// Where an extra proposal comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum ProposalSource {
    /// Panic mode: the panic-window demand.
    Panic,
    /// Predictive scale-up: the forecast rate one cold start ahead.
    Predictive,
}

impl ProposalSource {
    /// The name used as `winning_rule` when this proposal wins: `(panic)` or
    /// `(predictive)` (parentheses never occur in rule keys).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Panic => "(panic)",
            Self::Predictive => "(predictive)",
        }
    }
}

/// A proposal that does not come from one rule's metric.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct ExtraProposal {
    /// Panic or predictive.
    pub source: ProposalSource,
    /// The replicas it asks for.
    pub replicas: i32,
    /// How it was computed, in a sentence.
    pub detail: String,
}

// ---------------------------------------------------------------------------------------
// The steps

/// The fleet total of a rule's metric: the fleet value, else the sum over the pods that
/// are not being deleted or failed. `None` when the rule failed, has no data, or a value
/// is not a finite non-negative number.
pub(crate) fn fleet_total(rule: &ResolvedRule, outcome: &RuleOutcome, metrics: &ScalingMetrics) -> Option<f64> {
    if outcome.status != RuleStatus::Ok || metrics.failures.contains_key(&rule.key) {
        return None;
    }
    let key = rule.key.as_str();
    let pod_values: Vec<f64> = metrics
        .pods
        .iter()
        .filter(|p| !p.deleting && p.phase != PodPhase::Failed)
        .filter_map(|p| p.metrics.get(key).copied())
        .collect();
    let total = if pod_values.is_empty() { metrics.fleet.get(key).copied()? } else { pod_values.iter().sum() };
    (total.is_finite() && total >= 0.0).then_some(total)
}

/// What panic mode concluded this evaluation.
pub(crate) struct PanicView {
    pub(crate) panicking: bool,
    pub(crate) proposal: Option<ExtraProposal>,
}

/// Panic mode: records this evaluation's demand, updates the panic state and proposes
/// the panic-window demand while panicking.
pub(crate) fn panic_step(
    cfg: &ResolvedPanic,
    state: &mut AdvancedState,
    now: Timestamp,
    current: i32,
    demand: Option<i32>,
) -> PanicView {
    let keep = cfg.window;
    match demand {
        Some(d) => push_sample(&mut state.demand_samples, now, f64::from(d.max(0)), keep),
        None => {
            prune(&mut state.demand_samples, now, keep);
        }
    }
    let samples = &state.demand_samples;
    let average = (!samples.is_empty())
        .then(|| samples.iter().map(|s| s.milli as f64 / 1000.0).sum::<f64>() / samples.len() as f64);
    // Knative: panic when the panic-window demand reaches threshold × the current scale
    // (current ≥ 1; at zero, scale-from-zero decides).
    let triggered = current >= 1 && average.is_some_and(|a| a >= cfg.threshold * f64::from(current));
    if triggered {
        let since = state.panic.map_or(now, |p| p.since);
        state.panic = Some(PanicState { since, last_triggered: now });
    } else if let Some(p) = state.panic
        && now.saturating_duration_since(p.last_triggered) >= cfg.stable_window
    {
        state.panic = None;
    }
    let panicking = state.panic.is_some() && current >= 1;
    let proposal = match (panicking, average) {
        (true, Some(a)) => Some(ExtraProposal {
            source: ProposalSource::Panic,
            replicas: ceil_i32(a),
            detail: format!(
                "panic mode: demand {a:.2} replicas over the last {}s vs {current} running (panic at {:.0}%)",
                cfg.window.as_secs(),
                cfg.threshold * 100.0
            ),
        }),
        _ => None,
    };
    PanicView { panicking, proposal }
}

/// Predictive scale-up: records the rate, forecasts it one horizon ahead and proposes
/// the replicas for the upper bound when that is more than `current`.
pub(crate) fn predictive_step(
    cfg: &ResolvedPredictive,
    state: &mut AdvancedState,
    now: Timestamp,
    current: i32,
    rate: Option<f64>,
) -> (Option<RateForecast>, Option<ExtraProposal>) {
    match rate {
        Some(r) => push_sample(&mut state.rate_samples, now, r, cfg.history),
        None => {
            prune(&mut state.rate_samples, now, cfg.history);
        }
    }
    if state.rate_samples.len() < cfg.min_samples {
        return (None, None);
    }
    let points: Vec<(f64, f64)> = state
        .rate_samples
        .iter()
        .map(|s| (-(now.saturating_duration_since(s.at).as_secs_f64()), s.milli as f64 / 1000.0))
        .collect();
    let Some(forecast) = linear_forecast(&points, cfg.horizon.as_secs_f64(), cfg.confidence) else {
        return (None, None);
    };
    let replicas = ceil_i32(forecast.upper_bound / cfg.capacity_per_replica);
    // Never scale down on a forecast: a proposal at or below the current replicas is
    // dropped, and at zero the activation signal decides.
    if current < 1 || replicas <= current {
        return (Some(forecast), None);
    }
    let detail = format!(
        "predictive: rate {:.2}/s now, forecast {:.2}/s in {}s ({:.0}% upper bound {:.2}/s, {} samples) at {} per replica",
        forecast.fitted_now,
        forecast.expected,
        forecast.ahead_secs,
        cfg.confidence * 100.0,
        forecast.upper_bound,
        forecast.samples,
        cfg.capacity_per_replica
    );
    (Some(forecast), Some(ExtraProposal { source: ProposalSource::Predictive, replicas, detail }))
}

/// The activation signal's reading this evaluation.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum Activation {
    /// Above the threshold.
    Active(f64),
    /// At or below the threshold since `since`.
    Idle { value: f64, since: Timestamp },
    /// No usable value.
    Missing,
}

/// Scale to zero: reads the activation signal and tracks since when it has been idle.
pub(crate) fn activation_step(
    cfg: &ResolvedScaleToZero,
    state: &mut AdvancedState,
    now: Timestamp,
    signal: Option<f64>,
) -> Activation {
    match signal {
        Some(v) if v > cfg.activation_threshold => {
            state.idle_since = None;
            Activation::Active(v)
        }
        Some(v) => {
            let since = *state.idle_since.get_or_insert(now);
            Activation::Idle { value: v, since }
        }
        None => {
            // A missing signal is not "idle": it never lets the target go to zero.
            state.idle_since = None;
            Activation::Missing
        }
    }
}

/// The survivors check: the smallest count in `[desired, current]` at which every
/// healthy rule's load, spread over the survivors, stays at or below
/// `(1 - headroom) × threshold`. Returns it with the rule that set it when it is above
/// `desired`.
pub(crate) fn survivors_floor<'a>(
    rules: &[ResolvedRule],
    outcomes: impl Iterator<Item = &'a RuleOutcome>,
    metrics: &ScalingMetrics,
    current: i32,
    desired: i32,
    headroom: f64,
) -> Option<(i32, String)> {
    let limit = 1.0 - headroom;
    let mut floor: Option<(i32, String)> = None;
    for (rule, outcome) in rules.iter().zip(outcomes) {
        if outcome.status != RuleStatus::Ok {
            continue;
        }
        let Some(need) = load_in_replicas(rule, outcome, metrics) else { continue };
        // Float noise must not add a replica: 6.0000000001 needed is 6.
        let n = ceil_i32(need / limit - 1e-9);
        if n > desired && floor.as_ref().is_none_or(|(f, _)| n > *f) {
            floor = Some((n, rule.key.clone()));
        }
    }
    floor.map(|(n, key)| (n.min(current), key))
}

/// How many replicas at exactly the threshold the rule's current load fills.
fn load_in_replicas(rule: &ResolvedRule, outcome: &RuleOutcome, metrics: &ScalingMetrics) -> Option<f64> {
    let key = rule.key.as_str();
    let counted = |p: &&crate::observation::PodMetrics| !p.deleting && p.phase != PodPhase::Failed;
    match rule.target_type {
        TargetType::AverageValue => {
            let pods_have_value = metrics.pods.iter().any(|p| p.metrics.contains_key(key));
            let total = if pods_have_value {
                // Pods with a value carry it; running pods that reported nothing count at
                // the threshold (the HPA's assumption on a scale-down); pending pods carry
                // no load yet.
                let mut total = 0.0;
                for pod in metrics.pods.iter().filter(counted).filter(|p| p.phase != PodPhase::Pending) {
                    total += pod.metrics.get(key).copied().unwrap_or(rule.threshold);
                }
                total
            } else {
                metrics.fleet.get(key).copied()?
            };
            (total.is_finite() && total >= 0.0).then(|| total / rule.threshold)
        }
        TargetType::Value => {
            // A fleet target: the HPA scales the ratio by the Running-and-Ready pods.
            let ratio = outcome.ratio?;
            let ready = metrics.pods.iter().filter(counted).filter(|p| p.phase == PodPhase::Running && p.ready).count();
            (ratio.is_finite() && ratio >= 0.0).then_some(ratio * ready as f64)
        }
    }
}

/// `ceil`, saturating into `i32` (NaN → 0).
pub(crate) fn ceil_i32(x: f64) -> i32 {
    let c = x.ceil();
    if c.is_nan() {
        0
    } else if c >= f64::from(i32::MAX) {
        i32::MAX
    } else if c <= f64::from(i32::MIN) {
        i32::MIN
    } else {
        c as i32
    }
}
