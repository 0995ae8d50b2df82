//! What the engine returns: the desired replicas and why.

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::advanced::ExtraProposal;
use crate::metric::{Metric, TargetType};
use crate::time::Timestamp;

/// The outcome of one evaluation: how many replicas to run, each rule's view, and what
/// shaped the result. "Nothing to do" is a decision with `desired_replicas ==
/// current_replicas`, never an error.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct Decision {
    /// When the evaluation ran.
    pub at: Timestamp,
    /// The target's replicas when the evaluation ran (`scale.spec.replicas`).
    pub current_replicas: i32,
    /// What the target should run.
    pub desired_replicas: i32,
    /// The largest valid rule proposal before stabilization, rate limits and bounds
    /// (`None` when no proposal was computed).
    pub proposed_replicas: Option<i32>,
    /// Each rule's observed value, threshold, ratio, proposal and status, in spec order.
    pub rules: Vec<RuleOutcome>,
    /// The key of the rule whose proposal won, if any.
    pub winning_rule: Option<String>,
    /// What held the result away from the winning proposal.
    pub limited_by: LimitedBy,
    /// One line saying what was decided and why.
    pub explanation: String,
    /// Whether the driver should write `desired_replicas` to the target: they differ and
    /// the policy is not in `observe` mode.
    pub actuate: bool,
    /// When to evaluate again (maps onto kube-runtime's `Action::requeue`).
    pub next_evaluation: Timestamp,
    /// Proposals that do not come from one rule (panic mode, the predictive forecast);
    /// empty unless those features are configured and proposing.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub extra_proposals: Vec<ExtraProposal>,
    /// The scheduled bounds in force, if a schedule is active.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub active_schedule: Option<String>,
}

impl Decision {
    /// Whether the decision changes the replica count (regardless of observe mode).
    #[must_use]
    pub fn is_rescale(&self) -> bool {
        self.desired_replicas != self.current_replicas
    }
}

/// One rule's part in a decision.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub struct RuleOutcome {
    /// The rule's key (its `name`, else the metric name).
    pub name: String,
    /// The catalog metric.
    pub metric: Metric,
    /// The observed value in the metric's unit: the per-replica average for
    /// `AverageValue` rules, the fleet value for `Value` rules (first pass, as the HPA
    /// reports it).
    pub observed: Option<f64>,
    /// The threshold.
    pub threshold: f64,
    /// The target type the rule ran with.
    pub target_type: TargetType,
    /// `observed / threshold` as the HPA computes it.
    pub ratio: Option<f64>,
    /// The replicas this rule alone asks for.
    pub proposal: Option<i32>,
    /// Whether the rule produced a proposal.
    pub status: RuleStatus,
    /// Why the rule is missing or invalid, or a note on how the proposal was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The rule failed and `proposal` is its `fallbackReplicas` (raised to the current
    /// replicas: a fallback never scales down).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fallback: bool,
}

/// Whether a rule produced a usable proposal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum RuleStatus {
    /// A proposal was computed.
    Ok,
    /// No data (backend down, stale, empty, no pods with values).
    Missing,
    /// Data arrived but cannot be used (NaN, infinite, negative...).
    Invalid,
}

/// What held the desired replicas away from the winning proposal (or why nothing moved).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[non_exhaustive]
pub enum LimitedBy {
    /// Nothing: the desired replicas are the winning proposal.
    None,
    /// Every rule is within its tolerance band: no change.
    Tolerance,
    /// The scale-up stabilization window held the result down.
    ScaleUpStabilization,
    /// The scale-down stabilization window held the result up.
    ScaleDownStabilization,
    /// A scale-up rate policy (or the legacy ×2-or-4 cap) bounded the result.
    ScaleUpPolicy,
    /// A scale-down rate policy bounded the result.
    ScaleDownPolicy,
    /// `minReplicas` bounded the result.
    MinReplicas,
    /// `maxReplicas` bounded the result.
    MaxReplicas,
    /// The target runs 0 replicas and scale-to-zero is not configured: hands off.
    ScalingDisabled,
    /// No rule produced a proposal, or some failed and the rest would scale down:
    /// replicas are held.
    MetricsUnavailable,
    /// The survivors check raised a scale-down so the remaining replicas stay under
    /// every threshold.
    SurvivorsCheck,
    /// Panic mode held a scale-down.
    PanicHold,
    /// An active schedule's `minReplicas` bounded the result.
    ScheduledMinReplicas,
    /// An active schedule's `maxReplicas` bounded the result.
    ScheduledMaxReplicas,
    /// Scale to zero: the activation signal was idle long enough, so the target went to
    /// (or stays at) zero.
    ScaleToZero,
    /// Scale to zero is configured but the activation signal has not been idle for
    /// `idleSeconds` (or is missing): at least one replica is kept.
    ScaleToZeroWait,
}

impl LimitedBy {
    /// The camelCase name used in JSON and status.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::Tolerance => "tolerance",
            Self::ScaleUpStabilization => "scaleUpStabilization",
            Self::ScaleDownStabilization => "scaleDownStabilization",
            Self::ScaleUpPolicy => "scaleUpPolicy",
            Self::ScaleDownPolicy => "scaleDownPolicy",
            Self::MinReplicas => "minReplicas",
            Self::MaxReplicas => "maxReplicas",
            Self::ScalingDisabled => "scalingDisabled",
            Self::MetricsUnavailable => "metricsUnavailable",
            Self::SurvivorsCheck => "survivorsCheck",
            Self::PanicHold => "panicHold",
            Self::ScheduledMinReplicas => "scheduledMinReplicas",
            Self::ScheduledMaxReplicas => "scheduledMaxReplicas",
            Self::ScaleToZero => "scaleToZero",
            Self::ScaleToZeroWait => "scaleToZeroWait",
        }
    }
}

impl fmt::Display for LimitedBy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
