//! The per-target engine: HPA-exact rule proposals, max-of-proposals, stabilization,
//! rate policies and bounds.
//!
//! Each step cites the Kubernetes behaviour it reproduces (`pkg/controller/podautoscaler`:
//! `horizontal.go`, `replica_calculator.go`, `metrics/utilization.go`).

use std::fmt::Write as _;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::advanced::{self, Activation, AdvancedState, ExtraProposal, ResolvedScaleToZero};
use crate::decision::{Decision, LimitedBy, RuleOutcome, RuleStatus};
use crate::excerpt::{MAX_REASON_BYTES, MAX_REASON_LINES, excerpt};
use crate::metric::TargetType;
use crate::observation::{CurrentScale, PodMetrics, PodPhase, ScalingMetrics};
use crate::policy::{
    DEFAULT_DOWNSCALE_STABILIZATION, Mode, PolicyType, ResolvedDirection, ResolvedPolicy, ResolvedRule, SelectPolicy,
    to_milli,
};
use crate::schedule::Bounds;
use crate::time::{Cutoff, Timestamp};

/// Controller-wide settings (the kube-controller-manager flags of the HPA).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct EngineConfig {
    /// How often a target is evaluated (`--horizontal-pod-autoscaler-sync-period`, 15 s).
    pub sync_period: Duration,
    /// The scale-down stabilization of policies without `behavior`, and the default for
    /// an unset `behavior.scaleDown.stabilizationWindowSeconds`
    /// (`--horizontal-pod-autoscaler-downscale-stabilization`, 300 s).
    pub downscale_stabilization: Duration,
}

impl Default for EngineConfig {
    fn default() -> Self {
        Self { sync_period: Duration::from_secs(15), downscale_stabilization: DEFAULT_DOWNSCALE_STABILIZATION }
    }
}

impl EngineConfig {
    /// Sets the sync period (builder style).
    #[must_use]
    pub const fn with_sync_period(mut self, sync_period: Duration) -> Self {
        self.sync_period = sync_period;
        self
    }

    /// Sets the legacy downscale stabilization (builder style).
    #[must_use]
    pub const fn with_downscale_stabilization(mut self, window: Duration) -> Self {
        self.downscale_stabilization = window;
        self
    }
}

/// A past recommendation (the raw, pre-normalization desired replicas).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Recommendation {
    /// When it was made.
    pub at: Timestamp,
    /// The replicas recommended.
    pub replicas: i32,
}

/// A past rescale, for the rate policies.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleEvent {
    /// When the target was rescaled.
    pub at: Timestamp,
    /// How many replicas were added (on the up list) or removed (on the down list).
    pub change: i32,
    /// Older than the direction's longest policy period when last looked at: its slot may
    /// be reused.
    #[serde(default)]
    pub outdated: bool,
}

/// The engine's memory: what makes stabilization and rate limits work across
/// evaluations. It serializes so a controller can keep it in the policy's status and a
/// restarted process does not forget its windows (the Kubernetes HPA does forget).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct EngineState {
    /// Recent recommendations.
    #[serde(default)]
    pub recommendations: Vec<Recommendation>,
    /// Recent scale-ups.
    #[serde(default)]
    pub scale_up_events: Vec<ScaleEvent>,
    /// Recent scale-downs.
    #[serde(default)]
    pub scale_down_events: Vec<ScaleEvent>,
    /// The history of the steps beyond the HPA (panic window, forecast samples, idle
    /// time); empty, and absent from JSON, unless those features are configured.
    #[serde(default, skip_serializing_if = "AdvancedState::is_empty")]
    pub advanced: AdvancedState,
}

/// The policy engine for one target.
///
/// Feed it the target's scale and metrics with [`Engine::evaluate`], apply the returned
/// [`Decision`], and tell it when a rescale was written with [`Engine::record_scale`].
///
/// ```
/// use vllm_scaling_core::{parse_policy, CurrentScale, Engine, PodMetrics, ScalingMetrics, Timestamp};
///
/// let (_, policy) = parse_policy("maxReplicas: 10\nscalingRules: [{metric: queue_length, threshold: 10}]").unwrap();
/// let mut engine = Engine::new(policy);
/// let metrics = ScalingMetrics {
///     pods: (0..3).map(|i| PodMetrics::running(format!("p{i}")).with("queue_length", 20.0)).collect(),
///     ..Default::default()
/// };
/// let decision = engine.evaluate(Timestamp::from_secs(0), CurrentScale::new(3), &metrics);
/// assert_eq!(decision.desired_replicas, 6); // 20 waiting per pod vs 10: twice the pods
/// ```
#[derive(Clone, Debug)]
pub struct Engine {
    policy: ResolvedPolicy,
    config: EngineConfig,
    state: EngineState,
}

impl Engine {
    /// An engine with the HPA's default controller settings and no history.
    #[must_use]
    pub fn new(policy: ResolvedPolicy) -> Self {
        Self::with_config(policy, EngineConfig::default())
    }

    /// An engine with explicit controller settings.
    #[must_use]
    pub fn with_config(policy: ResolvedPolicy, config: EngineConfig) -> Self {
        Self { policy, config, state: EngineState::default() }
    }

    /// The policy in force.
    #[must_use]
    pub fn policy(&self) -> &ResolvedPolicy {
        &self.policy
    }

    /// The controller settings.
    #[must_use]
    pub fn config(&self) -> &EngineConfig {
        &self.config
    }

    /// Replaces the policy, keeping the history (an edited policy keeps its windows).
    pub fn set_policy(&mut self, policy: ResolvedPolicy) {
        self.policy = policy;
    }

    /// The history, for persisting.
    #[must_use]
    pub fn state(&self) -> &EngineState {
        &self.state
    }

    /// Restores history saved from [`Engine::state`].
    pub fn restore_state(&mut self, state: EngineState) {
        self.state = state;
    }

    /// Evaluates the policy at `now` for a target at `scale` with `metrics`.
    ///
    /// Follows the HPA's reconcile order: seed the history on a fresh start; hands off at
    /// 0 replicas; jump into `[min, max]` when outside it; otherwise compute each rule's
    /// proposal, take the maximum (holding replicas when rules fail and the rest would
    /// scale down), stabilize, apply the rate policies and the bounds.
    ///
    /// The policies beyond the HPA slot into that order when configured: fallback
    /// replicas with the rule proposals, panic and predictive proposals before the
    /// maximum, the survivors check before stabilization, panic's scale-down hold in
    /// stabilization and its scale-up lift in the rate policies, then scheduled bounds and
    /// scale to zero. With none configured the result is the HPA's. Schedules read
    /// wall-clock time from `now`, so policies with `schedules` need Unix time.
    pub fn evaluate(&mut self, now: Timestamp, scale: CurrentScale, metrics: &ScalingMetrics) -> Decision {
        let current = scale.replicas;
        // horizontal.go: a fresh HPA seeds its recommendations with the current replicas,
        // so the first evaluations cannot scale down past what is running.
        if self.state.recommendations.is_empty() {
            self.state.recommendations.push(Recommendation { at: now, replicas: current });
        }
        let p = &self.policy;
        let columns = PodColumns::new(&p.rules, &metrics.pods);
        let mut computed: Vec<Computed> =
            p.rules.iter().enumerate().map(|(i, r)| compute_rule(r, p, scale, metrics, columns.rule(i))).collect();
        // The steps beyond the HPA (advanced.rs); each is a no-op unless configured.
        let extras = gather_extras(&self.policy, &mut self.state.advanced, now, current, &mut computed, metrics);
        let p = &self.policy;
        let bounds = &extras.bounds;
        let (min, max) = (bounds.min_replicas, bounds.max_replicas);
        let min_reason =
            if bounds.min_from_schedule { LimitedBy::ScheduledMinReplicas } else { LimitedBy::MinReplicas };
        let max_reason =
            if bounds.max_from_schedule { LimitedBy::ScheduledMaxReplicas } else { LimitedBy::MaxReplicas };
        let scale_to_zero = p.advanced.scale_to_zero.clone();

        let mut proposed_replicas = None;
        let mut winning_rule = None;
        let mut survivors_note = None;
        let (desired, limited_by, note) = if current == 0 && p.min_replicas != 0 && scale_to_zero.is_none() {
            (
                0,
                LimitedBy::ScalingDisabled,
                "the target runs 0 replicas and scale-to-zero is not configured: hands off".to_owned(),
            )
        } else if current == 0 && min == 0 && !extras.activated {
            // Scale to zero: idle (or no signal) at zero stays at zero; a missing signal
            // never starts replicas unless the activation rule has fallbackReplicas.
            (0, LimitedBy::ScaleToZero, "idle at zero: the activation signal does not ask for replicas".to_owned())
        } else if current > max {
            (max, max_reason, format!("{current} replicas is above {} {max}", describe_limit(max_reason)))
        } else if current < min {
            (min, min_reason, format!("{current} replicas is below {} {min}", describe_limit(min_reason)))
        } else {
            // Max of the rule proposals and the extra ones (panic, predictive). Extras
            // only raise: a hold stands unless one asks for more than the current scale.
            let best_extra = extras.proposals.iter().fold(None::<&ExtraProposal>, |best, e| match best {
                Some(b) if b.replicas >= e.replicas => Some(b),
                _ => Some(e),
            });
            let merged = match (combine(&computed, current), best_extra) {
                (Combined::Proposal { replicas, .. }, Some(e)) if e.replicas > replicas => {
                    Ok((e.replicas, e.source.as_str().to_owned()))
                }
                (Combined::Proposal { replicas, winner }, _) => Ok((replicas, computed[winner].outcome.name.clone())),
                (Combined::Hold(_), Some(e)) if e.replicas > current => Ok((e.replicas, e.source.as_str().to_owned())),
                (Combined::Hold(why), _) => Err(why),
            };
            match merged {
                Err(why) => (current, LimitedBy::MetricsUnavailable, why),
                Ok((replicas, winner)) => {
                    proposed_replicas = Some(replicas);
                    winning_rule = Some(winner.clone());
                    // The survivors check: a scale-down goes only as far as the replicas
                    // left stay under every threshold.
                    let mut target = replicas;
                    if let Some(check) = &p.advanced.survivors_check
                        && replicas < current
                        && let Some((floor, key)) = advanced::survivors_floor(
                            &p.rules,
                            computed.iter().map(|c| &c.outcome),
                            metrics,
                            current,
                            replicas,
                            check.headroom,
                        )
                    {
                        target = floor;
                        survivors_note = Some(format!(
                            "survivors check: `{key}` needs {floor} replicas to stay under {:.0}% of its threshold",
                            (1.0 - check.headroom) * 100.0
                        ));
                    }
                    let limits = Limits { min, max, min_reason, max_reason, panic_up_limit: extras.panic_up_limit };
                    let (desired, limited) = self.normalize(now, current, target, &limits);
                    let limited = if limited == LimitedBy::None && target != replicas {
                        LimitedBy::SurvivorsCheck
                    } else {
                        limited
                    };
                    // Scale to zero, the last bound.
                    let (desired, limited) = match &scale_to_zero {
                        Some(cfg) if min == 0 => zero_bound(cfg, &extras, &computed, now, current, desired, limited),
                        _ => (desired, limited),
                    };
                    let limited = if limited == LimitedBy::None
                        && desired == current
                        && computed
                            .iter()
                            .all(|c| (c.outcome.status != RuleStatus::Ok && !c.outcome.fallback) || c.within_tolerance)
                    {
                        LimitedBy::Tolerance
                    } else {
                        limited
                    };
                    let from_zero = if current == 0 { "scale from zero on the activation signal; " } else { "" };
                    let note = match limited {
                        LimitedBy::None => format!("{from_zero}largest proposal {replicas} from {winner}"),
                        LimitedBy::Tolerance => "every rule is within tolerance".to_owned(),
                        other => format!(
                            "{from_zero}largest proposal {replicas} from {winner}, limited by {}",
                            describe_limit(other)
                        ),
                    };
                    (desired, limited, note)
                }
            }
        };

        let rules: Vec<RuleOutcome> = computed.into_iter().map(|c| c.outcome).collect();
        // Sized for the usual explanation, so it is built without reallocating.
        let mut explanation = String::with_capacity(128 + 112 * rules.len());
        let verb = match desired.cmp(&current) {
            std::cmp::Ordering::Greater => "scale up",
            std::cmp::Ordering::Less => "scale down",
            std::cmp::Ordering::Equal => "hold",
        };
        let _ = write!(explanation, "{verb} {current} -> {desired}: {note}");
        for r in &rules {
            summarize_rule(&mut explanation, r);
        }
        for line in extras.notes.iter().chain(&survivors_note) {
            let _ = write!(explanation, "; {line}");
        }
        if self.policy.mode == Mode::Observe && desired != current {
            explanation.push_str(" (observe mode: not applied)");
        }
        Decision {
            at: now,
            current_replicas: current,
            desired_replicas: desired,
            proposed_replicas,
            rules,
            winning_rule,
            limited_by,
            explanation,
            actuate: desired != current && self.policy.mode == Mode::Active,
            next_evaluation: now.saturating_add(self.config.sync_period),
            extra_proposals: extras.proposals,
            active_schedule: extras.bounds.schedule,
        }
    }

    /// Records that the target was rescaled from `from` to `to` at `now`, for the rate
    /// policies. Call it after the write succeeded. Like the HPA, events are kept only for
    /// policies with `behavior` (the legacy path has no rate history).
    pub fn record_scale(&mut self, now: Timestamp, from: i32, to: i32) {
        let Some(behavior) = &self.policy.behavior else { return };
        if to == from {
            return;
        }
        // horizontal.go storeScaleEvent: mark events older than the direction's longest
        // period as outdated, and reuse the last outdated slot for the new event.
        let (events, longest) = if to > from {
            (&mut self.state.scale_up_events, behavior.scale_up.longest_period())
        } else {
            (&mut self.state.scale_down_events, behavior.scale_down.longest_period())
        };
        let cutoff = Cutoff::new(now, longest);
        let mut reuse = None;
        for (i, e) in events.iter_mut().enumerate() {
            if cutoff.is_older(e.at) {
                e.outdated = true;
            }
            if e.outdated {
                reuse = Some(i);
            }
        }
        let event = ScaleEvent { at: now, change: (to - from).saturating_abs(), outdated: false };
        match reuse {
            Some(i) => events[i] = event,
            None => events.push(event),
        }
    }

    fn normalize(&mut self, now: Timestamp, current: i32, desired: i32, limits: &Limits) -> (i32, LimitedBy) {
        let (min, max) = (limits.min, limits.max);
        // Panic mode (advanced.rs) holds scale-down after stabilization and lets scale-up
        // reach the panic-window demand whatever the rate policies say; both no-ops when
        // not panicking.
        let panicking = limits.panic_up_limit.is_some();
        let panic_up_limit = limits.panic_up_limit.unwrap_or(i32::MIN);
        match self.policy.behavior.clone() {
            None => {
                // horizontal.go normalizeDesiredReplicas + convertDesiredReplicasWithRules.
                let stabilized = self.stabilize_legacy(now, desired);
                let mut limited =
                    if stabilized != desired { LimitedBy::ScaleDownStabilization } else { LimitedBy::None };
                let stabilized = if panicking && stabilized < current {
                    limited = LimitedBy::PanicHold;
                    current
                } else {
                    stabilized
                };
                let scale_up_limit = sat_i32((2.0 * f64::from(current)).max(4.0)).max(panic_up_limit);
                let (max_allowed, max_reason) = if max > scale_up_limit {
                    (scale_up_limit, LimitedBy::ScaleUpPolicy)
                } else {
                    (max, limits.max_reason)
                };
                if stabilized < min {
                    (min, limits.min_reason)
                } else if stabilized > max_allowed {
                    (max_allowed, max_reason)
                } else {
                    (stabilized, limited)
                }
            }
            Some(behavior) => {
                // horizontal.go normalizeDesiredReplicasWithBehaviors.
                let stabilized =
                    self.stabilize_with_behavior(now, current, desired, &behavior.scale_up, &behavior.scale_down);
                let mut limited = match (stabilized == desired, desired >= current) {
                    (true, _) => LimitedBy::None,
                    (false, true) => LimitedBy::ScaleUpStabilization,
                    (false, false) => LimitedBy::ScaleDownStabilization,
                };
                let stabilized = if panicking && stabilized < current {
                    limited = LimitedBy::PanicHold;
                    current
                } else {
                    stabilized
                };
                // convertDesiredReplicasWithBehaviorRate.
                if stabilized > current {
                    let limit = scale_limit(now, current, &self.state, &behavior.scale_up, true)
                        .max(current)
                        .max(panic_up_limit);
                    let (max_allowed, reason) =
                        if max > limit { (limit, LimitedBy::ScaleUpPolicy) } else { (max, limits.max_reason) };
                    if stabilized > max_allowed {
                        return (max_allowed, reason);
                    }
                } else if stabilized < current {
                    let limit = scale_limit(now, current, &self.state, &behavior.scale_down, false).min(current);
                    let (min_allowed, reason) =
                        if min < limit { (limit, LimitedBy::ScaleDownPolicy) } else { (min, limits.min_reason) };
                    if stabilized < min_allowed {
                        return (min_allowed, reason);
                    }
                }
                (stabilized, limited)
            }
        }
    }

    /// horizontal.go stabilizeRecommendation: the max over recommendations not older than
    /// the window (`ts >= now - window`), recording the raw recommendation.
    fn stabilize_legacy(&mut self, now: Timestamp, desired: i32) -> i32 {
        let cutoff = Cutoff::new(now, self.config.downscale_stabilization);
        let mut max_rec = desired;
        let mut old = None;
        for (i, rec) in self.state.recommendations.iter().enumerate() {
            if cutoff.is_older(rec.at) {
                old = Some(i);
            } else if rec.replicas > max_rec {
                max_rec = rec.replicas;
            }
        }
        self.store_recommendation(old, now, desired);
        max_rec
    }

    /// horizontal.go stabilizeRecommendationWithBehaviors: clamp `current` into
    /// `[min of the up window, max of the down window]` (both windows strictly newer than
    /// their cutoff), recording the raw recommendation.
    fn stabilize_with_behavior(
        &mut self,
        now: Timestamp,
        current: i32,
        desired: i32,
        up: &ResolvedDirection,
        down: &ResolvedDirection,
    ) -> i32 {
        let up_cutoff = Cutoff::new(now, up.stabilization_window_or(Duration::ZERO));
        let down_cutoff = Cutoff::new(now, self.down_window(down));
        let (mut up_rec, mut down_rec) = (desired, desired);
        let mut old = None;
        for (i, rec) in self.state.recommendations.iter().enumerate() {
            if up_cutoff.is_newer(rec.at) {
                up_rec = up_rec.min(rec.replicas);
            }
            if down_cutoff.is_newer(rec.at) {
                down_rec = down_rec.max(rec.replicas);
            }
            if up_cutoff.is_older(rec.at) && down_cutoff.is_older(rec.at) {
                old = Some(i);
            }
        }
        self.store_recommendation(old, now, desired);
        current.max(up_rec).min(down_rec)
    }

    /// The scale-down window: the policy's, else the controller's setting.
    fn down_window(&self, down: &ResolvedDirection) -> Duration {
        down.stabilization_window_or(self.config.downscale_stabilization)
    }

    fn store_recommendation(&mut self, reuse: Option<usize>, now: Timestamp, replicas: i32) {
        let rec = Recommendation { at: now, replicas };
        match reuse {
            Some(i) => self.state.recommendations[i] = rec,
            None => self.state.recommendations.push(rec),
        }
    }
}

/// horizontal.go calculateScaleUpLimitWithScalingRules / calculateScaleDownLimitWithBehaviors.
fn scale_limit(now: Timestamp, current: i32, state: &EngineState, rules: &ResolvedDirection, up: bool) -> i32 {
    let pick_largest_change = match rules.select_policy {
        SelectPolicy::Disabled => return current,
        SelectPolicy::Max => true,
        SelectPolicy::Min => false,
    };
    // Scale-up picks the largest limit for Max; scale-down picks the smallest for Max.
    let take_max = pick_largest_change == up;
    let mut result = if take_max { i32::MIN } else { i32::MAX };
    for policy in &rules.policies {
        let period = Duration::from_secs(u64::try_from(policy.period_seconds).unwrap_or(0));
        let added = change_in_period(now, period, &state.scale_up_events);
        let removed = change_in_period(now, period, &state.scale_down_events);
        let period_start = current.saturating_sub(added).saturating_add(removed);
        // The f64 operations run in the same order as Go's, so the rounding matches
        // (periodStart 25 at +12 % gives 29, not 28).
        let proposed = match (policy.policy_type, up) {
            (PolicyType::Pods, true) => period_start.saturating_add(policy.value),
            (PolicyType::Pods, false) => period_start.saturating_sub(policy.value),
            (PolicyType::Percent, true) => {
                sat_i32((f64::from(period_start) * (1.0 + f64::from(policy.value) / 100.0)).ceil())
            }
            (PolicyType::Percent, false) => {
                sat_i32((f64::from(period_start) * (1.0 - f64::from(policy.value) / 100.0)).trunc())
            }
        };
        result = if take_max { result.max(proposed) } else { result.min(proposed) };
    }
    result
}

/// horizontal.go getReplicasChangePerPeriod: events strictly newer than `now - period`.
fn change_in_period(now: Timestamp, period: Duration, events: &[ScaleEvent]) -> i32 {
    let cutoff = Cutoff::new(now, period);
    events.iter().filter(|e| cutoff.is_newer(e.at)).fold(0i32, |acc, e| acc.saturating_add(e.change))
}

fn describe_limit(l: LimitedBy) -> &'static str {
    match l {
        LimitedBy::ScaleUpStabilization => "the scale-up stabilization window",
        LimitedBy::ScaleDownStabilization => "the scale-down stabilization window",
        LimitedBy::ScaleUpPolicy => "the scale-up rate limit",
        LimitedBy::ScaleDownPolicy => "the scale-down rate limit",
        LimitedBy::MinReplicas => "minReplicas",
        LimitedBy::MaxReplicas => "maxReplicas",
        LimitedBy::SurvivorsCheck => "the survivors check",
        LimitedBy::PanicHold => "panic mode (no scale-down while panicking)",
        LimitedBy::ScheduledMinReplicas => "the scheduled minReplicas",
        LimitedBy::ScheduledMaxReplicas => "the scheduled maxReplicas",
        LimitedBy::ScaleToZero => "scale to zero (idle)",
        LimitedBy::ScaleToZeroWait => "scale to zero (not idle long enough: one replica kept)",
        _ => "policy",
    }
}

/// Appends `; name observed vs threshold (ratio r) proposes n` for one rule.
fn summarize_rule(out: &mut String, r: &RuleOutcome) {
    out.push_str("; ");
    out.push_str(&r.name);
    match r.status {
        RuleStatus::Ok => {
            out.push(' ');
            push_decimal(out, r.observed);
            if r.target_type == TargetType::AverageValue {
                out.push_str(" per replica");
            }
            out.push_str(" vs ");
            push_decimal(out, Some(r.threshold));
            out.push_str(" (ratio ");
            push_decimal(out, r.ratio);
            out.push_str(") proposes ");
            push_int(out, r.proposal);
        }
        RuleStatus::Missing => out.push_str(" missing"),
        RuleStatus::Invalid => out.push_str(" invalid"),
    }
    if let Some(reason) = &r.reason {
        out.push_str(" (");
        out.push_str(reason);
        out.push(')');
    }
    if let (true, Some(p)) = (r.fallback, r.proposal) {
        let _ = write!(out, ", fallbackReplicas propose {p}");
    }
}

fn push_int(out: &mut String, v: Option<i32>) {
    match v {
        Some(v) => {
            if v < 0 {
                out.push('-');
            }
            push_u64(out, u64::from(v.unsigned_abs()));
        }
        None => out.push('-'),
    }
}

/// Writes an unsigned integer in decimal, without the formatting machinery.
fn push_u64(out: &mut String, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    // ASCII digits: always valid UTF-8.
    out.push_str(std::str::from_utf8(&digits[at..]).unwrap_or_default());
}

/// Writes a value rounded to 3 decimals without trailing zeros (`12.5`, `0.947`, `3`)
/// with integer formatting only: the explanation is built on every evaluation, and
/// float formatting with a precision cost more than the whole HPA computation.
fn push_decimal(out: &mut String, v: Option<f64>) {
    let Some(v) = v.filter(|v| v.is_finite() && v.abs() < 9.0e12) else {
        out.push('-');
        return;
    };
    let milli = (v * 1000.0).round() as i64;
    if milli < 0 {
        out.push('-');
    }
    let milli = milli.unsigned_abs();
    push_u64(out, milli / 1000);
    let mut frac = milli % 1000;
    if frac != 0 {
        out.push('.');
        let mut div = 100;
        while frac != 0 {
            // `frac / div` is a single digit: frac < 10 * div.
            out.push(char::from(b'0' + (frac / div) as u8));
            frac %= div;
            div /= 10;
        }
    }
}

/// Go's `int32(x)` after `math.Ceil`, saturating as the newer HPA code caps products.
fn sat_i32(x: f64) -> i32 {
    if x.is_nan() {
        0
    } else if x >= f64::from(i32::MAX) {
        i32::MAX
    } else if x <= f64::from(i32::MIN) {
        i32::MIN
    } else {
        x as i32
    }
}

// ---------------------------------------------------------------------------------------
// Per-rule proposals (replica_calculator.go)

struct Computed {
    outcome: RuleOutcome,
    within_tolerance: bool,
}

enum Combined {
    Proposal { replicas: i32, winner: usize },
    Hold(String),
}

/// horizontal.go computeReplicasForMetrics: the max over valid proposals (the first valid
/// one even if 0); all invalid, or some invalid while the rest would scale down, holds.
fn combine(computed: &[Computed], current: i32) -> Combined {
    let mut best: Option<(i32, usize)> = None;
    let mut invalid = 0usize;
    let mut first_failure = None;
    for (i, c) in computed.iter().enumerate() {
        // A failed rule standing in with its fallbackReplicas counts as valid.
        let valid = c.outcome.status == RuleStatus::Ok || c.outcome.fallback;
        match (valid, c.outcome.proposal) {
            (true, Some(p)) => {
                if best.is_none_or(|(b, _)| b == 0 || p > b) {
                    best = Some((p, i));
                }
            }
            _ => {
                invalid += 1;
                if first_failure.is_none() {
                    first_failure = Some(i);
                }
            }
        }
    }
    let failure_note = |i: usize| {
        let o = &computed[i].outcome;
        format!(
            "{} is {}{}",
            o.name,
            if o.status == RuleStatus::Invalid { "invalid" } else { "missing" },
            o.reason.as_ref().map(|r| format!(": {r}")).unwrap_or_default()
        )
    };
    match best {
        None => Combined::Hold(format!(
            "no rule has usable data, replicas held ({})",
            first_failure.map(failure_note).unwrap_or_else(|| "no rules".to_owned())
        )),
        Some((replicas, _)) if invalid > 0 && replicas < current => Combined::Hold(format!(
            "{invalid} of {} rules failed and the rest would scale down to {replicas}: replicas held ({})",
            computed.len(),
            first_failure.map(failure_note).unwrap_or_default()
        )),
        Some((replicas, winner)) => Combined::Proposal { replicas, winner },
    }
}

fn within(policy: &ResolvedPolicy, ratio: f64) -> bool {
    // The 1.33+ per-direction form: 1 - down <= ratio <= 1 + up (KEP-4951).
    1.0 - policy.tolerance_down <= ratio && ratio <= 1.0 + policy.tolerance_up
}

fn compute_rule(
    rule: &ResolvedRule,
    policy: &ResolvedPolicy,
    scale: CurrentScale,
    m: &ScalingMetrics,
    column: &[Option<f64>],
) -> Computed {
    let mut outcome = RuleOutcome {
        name: rule.key.clone(),
        metric: rule.metric,
        observed: None,
        threshold: rule.threshold,
        target_type: rule.target_type,
        ratio: None,
        proposal: None,
        status: RuleStatus::Ok,
        reason: None,
        fallback: false,
    };
    let result = proposal_for(rule, policy, scale, m, column);
    let mut within_tolerance = false;
    match result {
        Ok(p) => {
            outcome.observed = Some(p.observed_milli as f64 / 1000.0);
            outcome.ratio = Some(p.ratio);
            outcome.proposal = Some(p.replicas);
            outcome.reason = p.note;
            within_tolerance = p.within;
        }
        Err(RuleError { status, reason, observed_milli }) => {
            outcome.status = status;
            outcome.reason = Some(reason);
            outcome.observed = observed_milli.map(|v| v as f64 / 1000.0);
        }
    }
    Computed { outcome, within_tolerance }
}

struct Proposal {
    replicas: i32,
    observed_milli: i64,
    ratio: f64,
    within: bool,
    note: Option<String>,
}

struct RuleError {
    status: RuleStatus,
    reason: String,
    observed_milli: Option<i64>,
}

impl RuleError {
    fn missing(reason: impl Into<String>) -> Self {
        Self { status: RuleStatus::Missing, reason: reason.into(), observed_milli: None }
    }
    fn invalid(reason: impl Into<String>) -> Self {
        Self { status: RuleStatus::Invalid, reason: reason.into(), observed_milli: None }
    }
}

#[inline]
fn checked_milli(value: f64, what: &dyn Fn() -> String) -> Result<i64, RuleError> {
    // The common case inline; the error (and its message) out of line.
    match to_milli(value) {
        Some(milli) if value >= 0.0 => Ok(milli),
        _ => Err(milli_error(value, what)),
    }
}

#[cold]
#[inline(never)]
fn milli_error(value: f64, what: &dyn Fn() -> String) -> RuleError {
    let why = if value.is_nan() {
        "is NaN".to_owned()
    } else if value.is_infinite() {
        "is infinite".to_owned()
    } else if value < 0.0 {
        format!("is negative ({value})")
    } else {
        format!("is too large ({value})")
    };
    RuleError::invalid(format!("{} {why}", what()))
}

/// Every pod's value for every rule, rule by rule (`[rule][pod]`), read in one pass over
/// each pod's map: the engine's hot loop then walks a contiguous column instead of
/// searching one map per pod and rule.
struct PodColumns {
    values: Vec<Option<f64>>,
    pods: usize,
}

impl PodColumns {
    fn new(rules: &[ResolvedRule], pods: &[PodMetrics]) -> Self {
        let mut values = vec![None; rules.len() * pods.len()];
        for (j, pod) in pods.iter().enumerate() {
            for (key, &v) in &pod.metrics {
                // Rule keys are unique within a policy.
                if let Some(i) = rules.iter().position(|r| r.key == *key) {
                    values[i * pods.len() + j] = Some(v);
                }
            }
        }
        Self { values, pods: pods.len() }
    }

    /// One rule's values, aligned with the pods.
    fn rule(&self, i: usize) -> &[Option<f64>] {
        self.values.get(i * self.pods..(i + 1) * self.pods).unwrap_or_default()
    }
}

fn is_ignored(pod: &PodMetrics) -> bool {
    pod.deleting || pod.phase == PodPhase::Failed
}

fn proposal_for(
    rule: &ResolvedRule,
    policy: &ResolvedPolicy,
    scale: CurrentScale,
    m: &ScalingMetrics,
    column: &[Option<f64>],
) -> Result<Proposal, RuleError> {
    if let Some(reason) = m.failures.get(&rule.key) {
        // Adapters' reasons quote external text (a page's line, a server's error): bounded
        // here, so no adapter can grow the status, the explanation or an event past a limit.
        return Err(RuleError::missing(excerpt(reason, MAX_REASON_BYTES, MAX_REASON_LINES).into_owned()));
    }
    if m.idle.contains(&rule.key) {
        // No traffic in the window and none in flight: the signal (a latency quantile)
        // is undefined, and there is no pressure on it. It reads as zero: no replicas
        // wanted, so the other rules (or minReplicas) decide.
        return Ok(Proposal {
            replicas: 0,
            observed_milli: 0,
            ratio: 0.0,
            within: false,
            note: Some("idle: nothing served in the window and no request in flight".to_owned()),
        });
    }
    let key = rule.key.as_str();
    let fleet = m.fleet.get(key).copied();
    // Given both, a per-pod metric uses the pods' values and a fleet-level one (latency
    // quantiles, custom queries) its fleet value; the pods are only scanned when needed.
    let pods_have_value = || column.iter().any(Option::is_some);
    let per_pod = rule.metric.info().per_pod;
    match fleet {
        Some(v) if !per_pod || !pods_have_value() => {
            let total = checked_milli(v, &|| format!("the fleet value of `{key}`"))?;
            match rule.target_type {
                TargetType::Value => external_value(rule, policy, scale.replicas, total, &m.pods),
                TargetType::AverageValue => external_average(rule, policy, scale.status_replicas(), total),
            }
        }
        _ if per_pod || pods_have_value() => match rule.target_type {
            TargetType::AverageValue => pods_metric(rule, policy, scale.replicas, &m.pods, column),
            TargetType::Value => {
                // A per-pod metric against a fleet target: the fleet total, like an HPA
                // External metric summing its series (ignored pods left out).
                let mut total: i64 = 0;
                let mut any = false;
                for (pod, value) in m.pods.iter().zip(column).filter(|(p, _)| !is_ignored(p)) {
                    if let Some(v) = *value {
                        total = total.saturating_add(checked_milli(v, &|| format!("`{key}` of pod {}", pod.name))?);
                        any = true;
                    }
                }
                if !any {
                    return Err(RuleError::missing(format!("no pod reported `{key}`")));
                }
                external_value(rule, policy, scale.replicas, total, &m.pods)
            }
        },
        _ => Err(RuleError::missing(format!("no value for `{key}`"))),
    }
}

/// replica_calculator.go calcPlainMetricReplicas: a Pods metric with an AverageValue
/// target, with the grouping of groupPods for non-CPU metrics and the two-pass rule.
fn pods_metric(
    rule: &ResolvedRule,
    policy: &ResolvedPolicy,
    current: i32,
    pods: &[PodMetrics],
    column: &[Option<f64>],
) -> Result<Proposal, RuleError> {
    let key = rule.key.as_str();
    let target = rule.threshold_milli;
    if pods.is_empty() {
        return Err(RuleError::missing("the target has no pods"));
    }
    // The samples are only ever averaged, so a sum and a count stand in for the list
    // (values are never negative, so saturating each addition or the total is the same).
    let mut total: i64 = 0;
    let (mut ready, mut unready, mut missing) = (0usize, 0usize, 0usize);
    for (pod, value) in pods.iter().zip(column) {
        if is_ignored(pod) {
            continue;
        }
        // Pending pods are "unready" and their samples are dropped, whatever they report.
        if pod.phase == PodPhase::Pending {
            unready += 1;
            continue;
        }
        match *value {
            None => missing += 1,
            Some(v) => {
                total = total.saturating_add(checked_milli(v, &|| format!("`{key}` of pod {}", pod.name))?);
                ready += 1;
            }
        }
    }
    if ready == 0 {
        return Err(RuleError::missing(format!(
            "no ready pod reported `{key}` ({missing} missing, {unready} not ready)"
        )));
    }
    let (ratio, usage) = usage_ratio(total, ready, target);
    let scale_up_with_unready = unready > 0 && ratio > 1.0;
    if !scale_up_with_unready && missing == 0 {
        let within_band = within(policy, ratio);
        let replicas = if within_band { current } else { sat_i32((ratio * ready as f64).ceil()) };
        return Ok(Proposal { replicas, observed_milli: usage, ratio, within: within_band, note: None });
    }
    // The slow path: missing pods count as at the target on a scale-down and as 0 on a
    // scale-up (nothing at exactly 1.0); unready pods count as 0 on a scale-up.
    let fill = if ratio < 1.0 {
        Some(target)
    } else if ratio > 1.0 {
        Some(0)
    } else {
        None
    };
    let (mut total, mut count) = (total, ready);
    if let Some(fill) = fill {
        total = total.saturating_add(fill.saturating_mul(i64::try_from(missing).unwrap_or(i64::MAX)));
        count += missing;
    }
    if scale_up_with_unready {
        count += unready;
    }
    let (new_ratio, _) = usage_ratio(total, count, target);
    let note =
        Some(format!("{ready} reporting, {missing} missing, {unready} not ready; recomputed ratio {new_ratio:.3}"));
    let flipped = (ratio < 1.0 && new_ratio > 1.0) || (ratio > 1.0 && new_ratio < 1.0);
    if within(policy, new_ratio) || flipped {
        return Ok(Proposal { replicas: current, observed_milli: usage, ratio, within: !flipped, note });
    }
    let n = sat_i32((new_ratio * count as f64).ceil());
    let replicas = if (new_ratio < 1.0 && n > current) || (new_ratio > 1.0 && n < current) { current } else { n };
    Ok(Proposal { replicas, observed_milli: usage, ratio, within: false, note })
}

/// metrics/utilization.go GetMetricUsageRatio: the integer milli-average over `count`
/// samples summing to `total`, then its ratio to the target.
fn usage_ratio(total: i64, count: usize, target: i64) -> (f64, i64) {
    let average = total / i64::try_from(count).unwrap_or(i64::MAX).max(1);
    (average as f64 / target as f64, average)
}

/// replica_calculator.go GetExternalMetricReplicas / getUsageRatioReplicaCount: a
/// fleet value against a fleet target, scaled by the Running-and-Ready pod count.
fn external_value(
    rule: &ResolvedRule,
    policy: &ResolvedPolicy,
    current: i32,
    total: i64,
    pods: &[PodMetrics],
) -> Result<Proposal, RuleError> {
    let ratio = total as f64 / rule.threshold_milli as f64;
    if current == 0 {
        // Only reachable with scale-to-zero: tolerance is ignored.
        return Ok(Proposal {
            replicas: sat_i32(ratio.ceil()),
            observed_milli: total,
            ratio,
            within: false,
            note: None,
        });
    }
    if within(policy, ratio) {
        return Ok(Proposal { replicas: current, observed_milli: total, ratio, within: true, note: None });
    }
    if pods.is_empty() {
        return Err(RuleError {
            observed_milli: Some(total),
            ..RuleError::missing("the target has no pods to count as ready")
        });
    }
    let ready = pods.iter().filter(|p| p.phase == PodPhase::Running && p.ready).count();
    let replicas = sat_i32((ratio * ready as f64).ceil());
    Ok(Proposal { replicas, observed_milli: total, ratio, within: false, note: Some(format!("{ready} ready pods")) })
}

/// replica_calculator.go GetExternalPerPodMetricReplicas: a fleet total against a
/// per-replica target, divided by `scale.status.replicas`.
fn external_average(
    rule: &ResolvedRule,
    policy: &ResolvedPolicy,
    status_replicas: i32,
    total: i64,
) -> Result<Proposal, RuleError> {
    let target = rule.threshold_milli as f64;
    let ratio = total as f64 / (target * f64::from(status_replicas));
    let within_band = within(policy, ratio);
    let replicas = if within_band { status_replicas } else { sat_i32((total as f64 / target).ceil()) };
    let per_replica = (total as f64 / f64::from(status_replicas)).ceil();
    let observed_milli = if per_replica.is_finite() { per_replica as i64 } else { total };
    Ok(Proposal { replicas, observed_milli, ratio, within: within_band, note: None })
}

// ---------------------------------------------------------------------------------------
// Steps beyond the HPA (the logic is in advanced.rs; these adapt it to `Computed`)

/// The bounds a normalization clamps to, and panic mode's scale-up limit.
struct Limits {
    min: i32,
    max: i32,
    min_reason: LimitedBy,
    max_reason: LimitedBy,
    /// `Some(limit)` while panicking: scale-up may reach `limit` whatever the rate
    /// policies say, and scale-down is held.
    panic_up_limit: Option<i32>,
}

/// What the steps beyond the HPA bring to one evaluation.
struct Extras {
    bounds: Bounds,
    proposals: Vec<ExtraProposal>,
    panicking: bool,
    /// While panicking: the panic-window demand, at most `ceil(current × maxScaleUpRate)`.
    panic_up_limit: Option<i32>,
    /// Scale to zero: the activation signal's reading.
    activation: Option<Activation>,
    /// At zero: whether the activation signal (or the activation rule's fallback) asks
    /// for replicas.
    activated: bool,
    /// Lines for the explanation.
    notes: Vec<String>,
}

/// Runs the observation side of the steps beyond the HPA: fallbacks, scheduled bounds,
/// panic mode, the forecast and the activation signal. Updates `state`.
fn gather_extras(
    p: &ResolvedPolicy,
    state: &mut AdvancedState,
    now: Timestamp,
    current: i32,
    computed: &mut [Computed],
    metrics: &ScalingMetrics,
) -> Extras {
    let a = &p.advanced;
    let bounds = Bounds::at(&a.schedules, p.min_replicas, p.max_replicas, now);
    let mut extras = Extras {
        bounds,
        proposals: Vec::new(),
        panicking: false,
        panic_up_limit: None,
        activation: None,
        activated: false,
        notes: Vec::new(),
    };
    // Fallbacks. At zero only the activation rule's: the others have no pods to read.
    for (c, rule) in computed.iter_mut().zip(&p.rules) {
        let activation_rule = a.scale_to_zero.as_ref().is_some_and(|z| z.activation_rule == rule.key);
        if current > 0 || activation_rule {
            apply_fallback(c, rule, current);
        }
    }
    if let Some(name) = &extras.bounds.schedule {
        let (lo, hi) = (extras.bounds.min_replicas, extras.bounds.max_replicas);
        extras.notes.push(format!("schedule `{name}` active: replicas in [{lo}, {hi}]"));
    }
    if let Some(cfg) = &a.panic {
        // Demand: the largest healthy proposal of the panic rules (fallbacks are not load).
        let demand = computed
            .iter()
            .zip(&p.rules)
            .filter(|(c, r)| c.outcome.status == RuleStatus::Ok && (cfg.rules.is_empty() || cfg.rules.contains(&r.key)))
            .filter_map(|(c, _)| c.outcome.proposal)
            .max();
        let view = advanced::panic_step(cfg, state, now, current, demand);
        extras.panicking = view.panicking;
        if view.panicking {
            // The fast path goes as far as the panic-window demand, not as far as any
            // rule asks: a backlog metric's proposal keeps its rate limits.
            let rate_cap = sat_i32((f64::from(current) * cfg.max_scale_up_rate).ceil());
            let limit = view.proposal.as_ref().map_or(current, |e| e.replicas).min(rate_cap);
            extras.panic_up_limit = Some(limit);
            extras.notes.push(format!("panic mode: scale-down held, scale-up allowed to {limit} now"));
        }
        extras.proposals.extend(view.proposal);
    }
    if let Some(cfg) = &a.predictive {
        let rate = rule_signal(p, computed, metrics, &cfg.rule);
        let (forecast, proposal) = advanced::predictive_step(cfg, state, now, current, rate);
        if let (None, Some(f)) = (&proposal, forecast) {
            extras.notes.push(format!(
                "predictive: forecast {:.2}/s ({:.0}% upper bound {:.2}/s) needs no more than the current replicas",
                f.expected,
                cfg.confidence * 100.0,
                f.upper_bound
            ));
        }
        extras.proposals.extend(proposal);
    }
    for e in &extras.proposals {
        extras.notes.push(format!("{} proposes {}", e.detail, e.replicas));
    }
    if let Some(cfg) = &a.scale_to_zero {
        let signal = rule_signal(p, computed, metrics, &cfg.activation_rule);
        let activation = advanced::activation_step(cfg, state, now, signal);
        let fallback =
            p.rules.iter().zip(computed.iter()).any(|(r, c)| r.key == cfg.activation_rule && c.outcome.fallback);
        extras.activated = matches!(activation, Activation::Active(_)) || fallback;
        let key = &cfg.activation_rule;
        let threshold = cfg.activation_threshold;
        extras.notes.push(match activation {
            Activation::Active(v) => format!("activation `{key}` = {v:.3} > {threshold}: active"),
            Activation::Idle { value, since } => format!(
                "activation `{key}` = {value:.3} <= {threshold}: idle for {}s of {}s",
                now.saturating_duration_since(since).as_secs(),
                cfg.idle.as_secs()
            ),
            Activation::Missing if fallback => format!("activation `{key}` missing: its fallbackReplicas apply"),
            Activation::Missing => format!("activation `{key}` missing: not idle, not activated"),
        });
        extras.activation = Some(activation);
    }
    extras
}

/// The fleet total of the rule named `key` (advanced::fleet_total).
fn rule_signal(p: &ResolvedPolicy, computed: &[Computed], metrics: &ScalingMetrics, key: &str) -> Option<f64> {
    let i = p.rules.iter().position(|r| r.key == key)?;
    advanced::fleet_total(&p.rules[i], &computed[i].outcome, metrics)
}

/// A failed rule with `fallbackReplicas` proposes `max(fallbackReplicas, current)`: it
/// can raise the scale, never lower it, and the max of proposals keeps healthy rules
/// that ask for more (KEDA's `currentReplicasIfHigher`, without KEDA#6659's override).
fn apply_fallback(c: &mut Computed, rule: &ResolvedRule, current: i32) {
    if c.outcome.status != RuleStatus::Ok
        && let Some(fallback) = rule.fallback_replicas
    {
        c.outcome.proposal = Some(fallback.max(current));
        c.outcome.fallback = true;
    }
}

/// Scale to zero, the last bound (with `minReplicas` 0 in force): from zero at least one
/// replica; to zero once the activation signal has been idle for `idleSeconds`, no rule
/// is failing, panic is off and nothing asks for more; otherwise at least one replica.
fn zero_bound(
    cfg: &ResolvedScaleToZero,
    extras: &Extras,
    computed: &[Computed],
    now: Timestamp,
    current: i32,
    desired: i32,
    limited: LimitedBy,
) -> (i32, LimitedBy) {
    if current == 0 {
        return (desired.max(1), limited);
    }
    let idle_long_enough = matches!(extras.activation,
        Some(Activation::Idle { since, .. }) if now.saturating_duration_since(since) >= cfg.idle);
    let any_failed = computed.iter().any(|c| c.outcome.status != RuleStatus::Ok);
    if idle_long_enough && !any_failed && !extras.panicking && desired <= current {
        return (0, LimitedBy::ScaleToZero);
    }
    if desired < 1 {
        return (1, LimitedBy::ScaleToZeroWait);
    }
    (desired, limited)
}
