//! The `vLLMScalingPolicy` resource: its serde model, parsing and validation.

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::advanced::{self, AdvancedPolicy, PanicSpec, PredictiveSpec, ScaleToZeroSpec, SurvivorsCheckSpec};
use crate::metric::{Metric, TargetType};
use crate::schedule::ScheduleSpec;

/// The `apiVersion` of a `vLLMScalingPolicy`.
pub const API_VERSION: &str = "autoscaler.production-stack/v1alpha1";
/// The `kind` of a `vLLMScalingPolicy`.
pub const KIND: &str = "vLLMScalingPolicy";

/// A whole `vLLMScalingPolicy` object, as written in YAML or stored by the API server.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct VllmScalingPolicy {
    /// Must be [`API_VERSION`].
    pub api_version: String,
    /// Must be [`KIND`].
    pub kind: String,
    /// Name, namespace, labels and annotations.
    #[serde(default)]
    pub metadata: ObjectMeta,
    /// What to scale and how.
    pub spec: PolicySpec,
    /// The status the controller writes; ignored when a policy is read from a file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<serde_json::Value>,
}

/// The part of Kubernetes object metadata that policies use. Other metadata fields the API
/// server adds (uid, resourceVersion, managedFields...) are accepted and ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ObjectMeta {
    /// The object's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// The object's namespace.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Annotations.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
}

/// The spec of a `vLLMScalingPolicy`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PolicySpec {
    /// The object to scale: anything with a `/scale` subresource. Its `name` may also be a
    /// served model id (`meta-llama/Llama-2-70b-hf`), resolved by the controller. May be
    /// omitted when workloads bind themselves with the `autoscaler.production-stack/policy`
    /// annotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_target_ref: Option<ScaleTargetRef>,
    /// The fewest replicas to run (default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_replicas: Option<i32>,
    /// The most replicas to run.
    pub max_replicas: i32,
    /// The rules; the policy proposes the largest of their proposals.
    pub scaling_rules: Vec<ScalingRule>,
    /// The dead band around each rule's threshold inside which it proposes no change
    /// (default 0.1, i.e. ±10 %).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<ToleranceSpec>,
    /// Stabilization windows and rate policies, with the shape and defaults of Kubernetes
    /// autoscaling/v2 `behavior`. Omitted: the HPA's legacy path (scale-up at most ×2 or
    /// to 4 per evaluation, 300 s scale-down stabilization).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub behavior: Option<Behavior>,
    /// `active` (default) scales the target; `observe` decides and reports but never scales.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<Mode>,
    /// Knative-style panic mode (see "Policies beyond HPA").
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub panic: Option<PanicSpec>,
    /// Scale to zero when idle, and back from zero on an activation signal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_to_zero: Option<ScaleToZeroSpec>,
    /// Min/max replicas by weekday and time of day, in a time zone.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedules: Option<Vec<ScheduleSpec>>,
    /// Pre-warm replicas for the rate forecast one cold start ahead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub predictive: Option<PredictiveSpec>,
    /// Check before a scale-down that the remaining replicas stay under every threshold.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub survivors_check: Option<SurvivorsCheckSpec>,
}

/// Names the object to scale.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScaleTargetRef {
    /// API version of the target, such as `apps/v1`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// Kind of the target, such as `Deployment`.
    pub kind: String,
    /// Name of the target, or a served model id.
    pub name: String,
}

/// One scaling rule: a metric and the threshold it is held to.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScalingRule {
    /// The catalog metric.
    pub metric: Metric,
    /// The target value, in the metric's unit: per replica for `AverageValue`, for the
    /// fleet for `Value`.
    pub threshold: f64,
    /// A name for the rule, unique within the policy (default: the metric's name). Needed
    /// to tell several `custom` rules apart.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `AverageValue` or `Value`; default from the catalog.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target_type: Option<TargetType>,
    /// Where the metric is read from (default `auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<MetricSource>,
    /// The PromQL query of a `custom` rule.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<String>,
    /// The quantile of a latency rule, in (0, 1) (default 0.95).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub quantile: Option<f64>,
    /// The window that rates and quantiles are computed over, as a Prometheus duration
    /// (`30s`, `1m`, `5m`; default `1m`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub window: Option<String>,
    /// The replicas to ask for while this rule's metric fails (1..=maxReplicas). Never
    /// a scale-down (the rule then proposes `max(fallbackReplicas, current)`) and never
    /// above a healthy rule (the largest proposal still wins).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fallback_replicas: Option<i32>,
}

/// Where a rule's metric is read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum MetricSource {
    /// Pods' `/metrics` when pod endpoints are known, else Prometheus.
    #[default]
    Auto,
    /// Scrape each pod's `/metrics` directly.
    Pods,
    /// Query Prometheus.
    Prometheus,
    /// Read the GPU through NVML (GPU metrics only).
    Nvml,
}

/// The tolerance: one number for both directions, or one per direction.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum ToleranceSpec {
    /// The same dead band both ways.
    Both(Quantity),
    /// A dead band per direction.
    PerDirection(DirectionalTolerance),
}

/// Per-direction tolerance.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirectionalTolerance {
    /// Ratio above 1 that still counts as "at target" (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<Quantity>,
    /// Ratio below 1 that still counts as "at target" (default 0.1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<Quantity>,
}

/// A dimensionless Kubernetes `resource.Quantity`, as tolerances are written: a number
/// (`0.05`) or a string (`"50m"`, `"0.05"`, `"5e-2"`), the forms `kubectl get hpa -o yaml`
/// prints. The text is kept as given and parsed by validation, so a malformed quantity is
/// a validation error naming its field, not a decoding failure.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(untagged)]
pub enum Quantity {
    /// A JSON/YAML number.
    Number(f64),
    /// A quantity string (`50m`, `0.05`, `5e-2`, `1`).
    Text(String),
}

impl From<f64> for Quantity {
    fn from(v: f64) -> Self {
        Self::Number(v)
    }
}

impl Quantity {
    /// The value.
    ///
    /// # Errors
    /// A sentence saying why the text is not a Kubernetes quantity.
    pub fn value(&self) -> Result<f64, String> {
        match self {
            Self::Number(v) => Ok(*v),
            Self::Text(t) => parse_quantity(t),
        }
    }
}

/// Parses a Kubernetes quantity (`resource.Quantity`'s grammar): an optionally signed
/// decimal number (`1`, `0.05`, `.5`, `5.`) followed by an optional suffix, either a
/// decimal SI one (`n`, `u`, `m`, `k`, `M`, `G`, `T`, `P`, `E`), a binary SI one (`Ki`,
/// `Mi`, `Gi`, `Ti`, `Pi`, `Ei`) or a decimal exponent (`e-2`, `E3`).
///
/// # Errors
/// A sentence saying why the text is not a quantity.
pub fn parse_quantity(text: &str) -> Result<f64, String> {
    let bad = |why: &str| {
        format!("`{text}` is not a Kubernetes quantity ({why}): write a number such as 0.05, \"50m\" or \"5e-2\"")
    };
    let bytes = text.as_bytes();
    let mut i = usize::from(matches!(bytes.first(), Some(b'+' | b'-')));
    let int_start = i;
    while bytes.get(i).is_some_and(u8::is_ascii_digit) {
        i += 1;
    }
    let mut digits = i - int_start;
    if bytes.get(i) == Some(&b'.') {
        i += 1;
        let frac_start = i;
        while bytes.get(i).is_some_and(u8::is_ascii_digit) {
            i += 1;
        }
        digits += i - frac_start;
    }
    if digits == 0 {
        return Err(bad("no digits"));
    }
    let number: f64 = text[..i].parse().map_err(|_| bad("not a decimal number"))?;
    let suffix = &text[i..];
    let scale = match suffix {
        "" => 1.0,
        "n" => 1e-9,
        "u" => 1e-6,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024f64.powi(2),
        "Gi" => 1024f64.powi(3),
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        _ if suffix.starts_with(['e', 'E']) => {
            let exp = &suffix[1..];
            let unsigned = exp.strip_prefix(['+', '-']).unwrap_or(exp);
            if unsigned.is_empty() || !unsigned.bytes().all(|b| b.is_ascii_digit()) {
                return Err(bad(&format!("`{suffix}` is not a decimal exponent")));
            }
            let exp: i32 = exp.parse().map_err(|_| bad("the exponent is out of range"))?;
            10f64.powi(exp)
        }
        _ => return Err(bad(&format!("unknown suffix `{suffix}`"))),
    };
    let value = number * scale;
    if !value.is_finite() {
        return Err(bad("out of range"));
    }
    Ok(value)
}

/// Whether the policy acts on its target.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
#[non_exhaustive]
pub enum Mode {
    /// Scale the target.
    #[default]
    Active,
    /// Decide and report, never scale.
    Observe,
}

/// Kubernetes autoscaling/v2 `HorizontalPodAutoscalerBehavior`, same shape and defaults.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Behavior {
    /// Scale-up rules; default: no stabilization, at most +4 pods or +100 % per 15 s (the larger).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_up: Option<HpaScalingRules>,
    /// Scale-down rules; default: 300 s stabilization, at most −100 % per 15 s.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scale_down: Option<HpaScalingRules>,
}

/// Kubernetes `HPAScalingRules`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HpaScalingRules {
    /// Seconds of past recommendations considered (0..=3600).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stabilization_window_seconds: Option<i32>,
    /// How to pick among the policies (default `Max`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub select_policy: Option<SelectPolicy>,
    /// Rate limits; a given list replaces the default list whole.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policies: Option<Vec<HpaScalingPolicy>>,
    /// Tolerance for this direction (KEP-4951); overrides `spec.tolerance`. A Kubernetes
    /// quantity: a number or a string such as `"50m"` or `"0.05"`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Quantity>,
}

/// Kubernetes `ScalingPolicySelect`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum SelectPolicy {
    /// The policy allowing the largest change.
    Max,
    /// The policy allowing the smallest change.
    Min,
    /// No scaling in this direction.
    Disabled,
}

/// Kubernetes `HPAScalingPolicy`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HpaScalingPolicy {
    /// `Pods` or `Percent`.
    #[serde(rename = "type")]
    pub policy_type: PolicyType,
    /// Pods, or percent of the replicas at the start of the period (> 0).
    pub value: i32,
    /// The period the change is counted over (1..=1800).
    pub period_seconds: i32,
}

/// Kubernetes `HPAScalingPolicyType`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum PolicyType {
    /// An absolute number of pods.
    Pods,
    /// A percentage of the replicas at the start of the period.
    Percent,
}

// ---------------------------------------------------------------------------------------
// Errors

/// One problem with a policy: where it is and why it is wrong.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub struct PolicyError {
    /// The field path, such as `spec.scalingRules[1].threshold`.
    pub path: String,
    /// Why the value is rejected.
    pub reason: String,
}

impl PolicyError {
    fn new(path: impl Into<String>, reason: impl Into<String>) -> Self {
        Self { path: path.into(), reason: reason.into() }
    }
}

/// Every problem found in one policy document (never empty).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct PolicyErrors(pub Vec<PolicyError>);

impl fmt::Display for PolicyErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl From<PolicyError> for PolicyErrors {
    fn from(e: PolicyError) -> Self {
        Self(vec![e])
    }
}

// ---------------------------------------------------------------------------------------
// Parsing

/// Parses every policy in a YAML or JSON text (YAML may hold several `---` documents).
///
/// Each document is parsed and validated on its own; one bad document does not hide the
/// others. Unknown fields are rejected with their path.
#[must_use]
pub fn parse_policies(text: &str) -> Vec<Result<(VllmScalingPolicy, ResolvedPolicy), PolicyErrors>> {
    let mut out = Vec::new();
    for doc in serde_yaml_ng::Deserializer::from_str(text) {
        let value: Result<serde_yaml_ng::Value, _> = serde_path_to_error::deserialize(doc);
        match value {
            Ok(serde_yaml_ng::Value::Null) => continue, // an empty document between `---`s
            Ok(value) => out.push(policy_from_value(value)),
            Err(e) => {
                out.push(Err(PolicyError::new(path_or_root(e.path()), e.inner().to_string()).into()));
                // The YAML stream cannot be resynchronized after a syntax error.
                break;
            }
        }
    }
    if out.is_empty() {
        out.push(Err(PolicyError::new("(document)", "no policy found: the text is empty").into()));
    }
    out
}

/// Parses and validates one policy from YAML or JSON text.
///
/// # Errors
/// Every problem found, each with its field path.
pub fn parse_policy(text: &str) -> Result<(VllmScalingPolicy, ResolvedPolicy), PolicyErrors> {
    let mut all = parse_policies(text);
    if all.len() > 1 {
        return Err(
            PolicyError::new("(document)", format!("expected one policy, found {} documents", all.len())).into()
        );
    }
    all.pop().unwrap_or_else(|| Err(PolicyError::new("(document)", "no policy found").into()))
}

/// Reads a policy from an already-parsed YAML value: a whole object, or only its spec
/// (recognized by the absence of `apiVersion`, `kind` and `spec`).
///
/// # Errors
/// Every problem found, each with its field path.
pub fn policy_from_value(value: serde_yaml_ng::Value) -> Result<(VllmScalingPolicy, ResolvedPolicy), PolicyErrors> {
    let is_object = value.as_mapping().is_some_and(|m| {
        ["apiVersion", "kind", "spec", "metadata"].iter().any(|k| m.contains_key(serde_yaml_ng::Value::from(*k)))
    });
    let policy = if is_object {
        let policy: VllmScalingPolicy = serde_path_to_error::deserialize(value)
            .map_err(|e| PolicyError::new(path_or_root(e.path()), e.inner().to_string()))?;
        policy
    } else {
        let spec: PolicySpec = serde_path_to_error::deserialize(value)
            .map_err(|e| PolicyError::new(prefixed("spec", e.path()), e.inner().to_string()))?;
        VllmScalingPolicy {
            api_version: API_VERSION.to_owned(),
            kind: KIND.to_owned(),
            metadata: ObjectMeta::default(),
            spec,
            status: None,
        }
    };
    let resolved = policy.validate()?;
    Ok((policy, resolved))
}

fn path_or_root(path: &serde_path_to_error::Path) -> String {
    let s = path.to_string();
    if s == "." { "(document)".to_owned() } else { s }
}

fn prefixed(prefix: &str, path: &serde_path_to_error::Path) -> String {
    let s = path.to_string();
    if s == "." { prefix.to_owned() } else { format!("{prefix}.{s}") }
}

// ---------------------------------------------------------------------------------------
// Validation and the resolved form the engine runs on

/// Kubernetes' limit on `stabilizationWindowSeconds`.
pub const MAX_STABILIZATION_WINDOW_SECS: i32 = 3600;
/// Kubernetes' limit on a rate policy's `periodSeconds`.
pub const MAX_PERIOD_SECS: i32 = 1800;
/// The most scaling rules one policy may hold (the CRD's `maxItems` on `scalingRules`).
/// Every rule is evaluated, queried and reported in the status on every evaluation, and
/// the CRD's CEL rules compare rule names pairwise: the bound keeps both cheap.
pub const MAX_SCALING_RULES: usize = 64;
/// The most rate policies per `behavior` direction (the CRD's `maxItems`).
pub const MAX_RATE_POLICIES: usize = 16;
/// The most entries of `spec.schedules` (the CRD's `maxItems`).
pub const MAX_SCHEDULES: usize = 32;
/// The longest `query` of a `custom` rule, in bytes (the CRD's `maxLength`).
pub const MAX_QUERY_LEN: usize = 4096;
/// The longest `window` of a rule, in bytes (the CRD's `maxLength`).
pub const MAX_WINDOW_LEN: usize = 32;
/// The longest `scaleTargetRef` field (`apiVersion`, `kind`, `name`), in bytes: a
/// Kubernetes object name or a served model id (the CRD's `maxLength`).
pub const MAX_TARGET_FIELD_LEN: usize = 253;

/// The default tolerance (the kube-controller-manager flag's default).
pub const DEFAULT_TOLERANCE: f64 = 0.1;
/// The default quantile of latency rules.
pub const DEFAULT_QUANTILE: f64 = 0.95;
/// The default rate/quantile window of a rule, in seconds.
pub const DEFAULT_WINDOW_SECS: u32 = 60;

/// A validated policy with every default filled in: what the engine runs on.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResolvedPolicy {
    /// The target, if the policy names one.
    pub scale_target_ref: Option<ScaleTargetRef>,
    /// The fewest replicas.
    pub min_replicas: i32,
    /// The most replicas.
    pub max_replicas: i32,
    /// The rules, in spec order.
    pub rules: Vec<ResolvedRule>,
    /// Tolerance below 1 (scale-down side).
    pub tolerance_down: f64,
    /// Tolerance above 1 (scale-up side).
    pub tolerance_up: f64,
    /// `None` selects the HPA's legacy normalization (no `behavior` in the spec).
    pub behavior: Option<ResolvedBehavior>,
    /// Active or observe.
    pub mode: Mode,
    /// The features beyond the HPA (all off unless configured).
    pub advanced: AdvancedPolicy,
}

/// A rule with its defaults filled in.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResolvedRule {
    /// The unique key observations are filed under: the rule's `name`, else the metric name.
    pub key: String,
    /// The catalog metric.
    pub metric: Metric,
    /// The threshold in the metric's unit.
    pub threshold: f64,
    /// The threshold in milli-units, as the HPA holds quantities.
    pub threshold_milli: i64,
    /// The resolved target type.
    pub target_type: TargetType,
    /// The resolved source.
    pub source: MetricSource,
    /// The PromQL of a custom rule.
    pub query: Option<String>,
    /// The quantile of latency rules (also set, unused, for others).
    pub quantile: f64,
    /// The rate/quantile window.
    pub window: Duration,
    /// The replicas this rule asks for while its metric fails.
    pub fallback_replicas: Option<i32>,
}

/// `behavior` with defaults applied, as the HPA controller sees it.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResolvedBehavior {
    /// Scale-up rules.
    pub scale_up: ResolvedDirection,
    /// Scale-down rules.
    pub scale_down: ResolvedDirection,
}

/// One direction of `behavior` with defaults applied.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub struct ResolvedDirection {
    /// The stabilization window; `None` when the policy leaves it unset and the engine
    /// fills it from its configuration ([`crate::EngineConfig::downscale_stabilization`]
    /// for scale-down; scale-up's default, 0, is filled at parse time as the API does).
    pub stabilization_window: Option<Duration>,
    /// How policies are combined.
    pub select_policy: SelectPolicy,
    /// The rate policies.
    pub policies: Vec<HpaScalingPolicy>,
}

impl ResolvedDirection {
    /// The stabilization window, with `unset` standing in for a window the policy leaves
    /// unset (the controller's downscale-stabilization setting, for scale-down).
    #[must_use]
    pub fn stabilization_window_or(&self, unset: Duration) -> Duration {
        self.stabilization_window.unwrap_or(unset)
    }

    /// The longest `periodSeconds` among the policies (0 when there are none).
    #[must_use]
    pub fn longest_period(&self) -> Duration {
        let secs = self.policies.iter().map(|p| p.period_seconds).max().unwrap_or(0);
        Duration::from_secs(u64::try_from(secs).unwrap_or(0))
    }
}

/// The HPA's default scale-down stabilization (the controller flag, 300 s).
pub const DEFAULT_DOWNSCALE_STABILIZATION: Duration = Duration::from_secs(300);

impl ResolvedPolicy {
    /// The scale-down stabilization window this policy runs with under a controller whose
    /// downscale-stabilization setting is `controller_default`: the policy's own
    /// `behavior.scaleDown.stabilizationWindowSeconds` when set, else `controller_default`
    /// (with or without `behavior`, as the HPA controller's
    /// `maybeInitScaleDownStabilizationWindow` does).
    #[must_use]
    pub fn scale_down_stabilization(&self, controller_default: Duration) -> Duration {
        self.behavior.as_ref().map_or(controller_default, |b| b.scale_down.stabilization_window_or(controller_default))
    }
}

impl VllmScalingPolicy {
    /// Validates the object (apiVersion, kind and the spec).
    ///
    /// # Errors
    /// Every problem found, each with its field path.
    pub fn validate(&self) -> Result<ResolvedPolicy, PolicyErrors> {
        let mut errors = Vec::new();
        if self.api_version != API_VERSION {
            errors.push(PolicyError::new("apiVersion", format!("must be `{API_VERSION}`, got `{}`", self.api_version)));
        }
        if self.kind != KIND {
            errors.push(PolicyError::new("kind", format!("must be `{KIND}`, got `{}`", self.kind)));
        }
        match self.spec.validate() {
            Ok(resolved) if errors.is_empty() => Ok(resolved),
            Ok(_) => Err(PolicyErrors(errors)),
            Err(PolicyErrors(mut more)) => {
                errors.append(&mut more);
                Err(PolicyErrors(errors))
            }
        }
    }
}

impl PolicySpec {
    /// Validates the spec and fills in every default.
    ///
    /// # Errors
    /// Every problem found, each with its field path under `spec`.
    pub fn validate(&self) -> Result<ResolvedPolicy, PolicyErrors> {
        let mut errors = Vec::new();
        let mut err = |path: &str, reason: String| errors.push(PolicyError::new(format!("spec.{path}"), reason));

        if let Some(target) = &self.scale_target_ref {
            if target.kind.trim().is_empty() {
                err("scaleTargetRef.kind", "must not be empty".into());
            }
            if target.name.trim().is_empty() {
                err("scaleTargetRef.name", "must not be empty".into());
            }
            let fields = [
                ("apiVersion", target.api_version.as_deref()),
                ("kind", Some(&target.kind)),
                ("name", Some(&target.name)),
            ];
            for (field, value) in fields {
                if let Some(v) = value.filter(|v| v.len() > MAX_TARGET_FIELD_LEN) {
                    err(
                        &format!("scaleTargetRef.{field}"),
                        format!("must be at most {MAX_TARGET_FIELD_LEN} characters, got {}", v.len()),
                    );
                }
            }
        }
        let min_replicas = self.min_replicas.unwrap_or(1);
        // 0 only with scaleToZero (the HPA's HPAScaleToZero gate has the same shape).
        advanced::check_min_replicas(self, min_replicas, &mut err);
        if self.max_replicas < 1 {
            err("maxReplicas", format!("must be at least 1, got {}", self.max_replicas));
        }
        if min_replicas > self.max_replicas {
            err("minReplicas", format!("must not exceed maxReplicas ({min_replicas} > {})", self.max_replicas));
        }

        let (mut tolerance_down, mut tolerance_up) = match &self.tolerance {
            None => (DEFAULT_TOLERANCE, DEFAULT_TOLERANCE),
            Some(ToleranceSpec::Both(t)) => {
                let t = check_tolerance(&mut err, "tolerance", t);
                (t, t)
            }
            Some(ToleranceSpec::PerDirection(d)) => {
                let up = d
                    .scale_up
                    .as_ref()
                    .map_or(DEFAULT_TOLERANCE, |t| check_tolerance(&mut err, "tolerance.scaleUp", t));
                let down = d
                    .scale_down
                    .as_ref()
                    .map_or(DEFAULT_TOLERANCE, |t| check_tolerance(&mut err, "tolerance.scaleDown", t));
                (down, up)
            }
        };

        if self.scaling_rules.is_empty() {
            err("scalingRules", "must hold at least one rule".into());
        }
        if self.scaling_rules.len() > MAX_SCALING_RULES {
            // Checked before the rules themselves: a policy this large is refused whole, and
            // its rules are not looked at one by one (the API server refuses it the same way).
            err(
                "scalingRules",
                format!("must hold at most {MAX_SCALING_RULES} rules, got {}", self.scaling_rules.len()),
            );
            return Err(PolicyErrors(errors));
        }
        let mut rules: Vec<ResolvedRule> = Vec::with_capacity(self.scaling_rules.len());
        // Each key's first index, so a duplicate is found in one look-up.
        let mut first_index: HashMap<String, usize> = HashMap::with_capacity(self.scaling_rules.len());
        for (i, rule) in self.scaling_rules.iter().enumerate() {
            let at = |field: &str| format!("scalingRules[{i}].{field}");
            let info = rule.metric.info();
            let key = rule.name.clone().unwrap_or_else(|| info.name.to_owned());
            if let Some(name) = &rule.name
                && (name.is_empty()
                    || name.len() > 63
                    || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
            {
                err(&at("name"), format!("`{name}` must be 1-63 letters, digits, `_` or `-`"));
            }
            if let Some(&j) = first_index.get(&key) {
                let hint = if rule.metric == Metric::Custom { "; give each custom rule a unique `name`" } else { "" };
                err(&at("metric"), format!("duplicate rule `{key}` (also scalingRules[{j}]){hint}"));
            } else {
                first_index.insert(key.clone(), i);
            }
            let threshold = rule.threshold;
            if !threshold.is_finite() || threshold <= 0.0 {
                err(&at("threshold"), format!("must be a finite number greater than 0, got {threshold}"));
            } else if info.unit == "percent" && threshold > 100.0 {
                err(
                    &at("threshold"),
                    format!("`{}` is a percentage; the threshold must be at most 100, got {threshold}", info.name),
                );
            }
            let threshold_milli = to_milli(threshold).unwrap_or(0);
            if threshold.is_finite() && threshold > 0.0 && threshold_milli <= 0 {
                err(&at("threshold"), format!("{threshold} is below the resolution of 0.001"));
            }
            match (rule.metric, &rule.query) {
                (Metric::Custom, None) => err(&at("query"), "a `custom` rule needs a PromQL `query`".into()),
                (Metric::Custom, Some(q)) if q.trim().is_empty() => err(&at("query"), "must not be empty".into()),
                (Metric::Custom, Some(q)) if q.len() > MAX_QUERY_LEN => {
                    err(&at("query"), format!("must be at most {MAX_QUERY_LEN} characters, got {}", q.len()));
                }
                (m, Some(_)) if m != Metric::Custom => {
                    err(&at("query"), format!("only `custom` rules take a query; `{}` has a built-in one", m.name()));
                }
                _ => {}
            }
            let quantile = rule.quantile.unwrap_or(DEFAULT_QUANTILE);
            if let Some(q) = rule.quantile {
                if !info.quantile {
                    err(
                        &at("quantile"),
                        format!(
                            "applies only to latency metrics (latency, ttft, itl, queue_time), not `{}`",
                            info.name
                        ),
                    );
                } else if !(q > 0.0 && q < 1.0) {
                    err(&at("quantile"), format!("must be between 0 and 1 (exclusive), got {q}"));
                }
            }
            let window = match &rule.window {
                None => Duration::from_secs(u64::from(DEFAULT_WINDOW_SECS)),
                Some(w) if w.len() > MAX_WINDOW_LEN => {
                    err(&at("window"), format!("must be at most {MAX_WINDOW_LEN} characters, got {}", w.len()));
                    Duration::from_secs(1)
                }
                Some(w) => match parse_prom_duration(w) {
                    Ok(d) if d >= Duration::from_secs(1) => d,
                    Ok(_) => {
                        err(&at("window"), format!("`{w}` is shorter than 1s"));
                        Duration::from_secs(1)
                    }
                    Err(reason) => {
                        err(&at("window"), reason);
                        Duration::from_secs(1)
                    }
                },
            };
            let source = rule.source.unwrap_or_default();
            let gpu = matches!(rule.metric, Metric::GpuUtilization | Metric::GpuMemoryUsed);
            if source == MetricSource::Nvml && !gpu {
                err(
                    &at("source"),
                    format!("`nvml` serves only gpu_utilization and gpu_memory_used, not `{}`", info.name),
                );
            }
            if rule.metric == Metric::Custom && source == MetricSource::Pods {
                err(&at("source"), "a `custom` rule is a PromQL query: its source is `prometheus` or `auto`".into());
            }
            rules.push(ResolvedRule {
                key,
                metric: rule.metric,
                threshold,
                threshold_milli,
                target_type: rule.target_type.unwrap_or(info.default_target_type),
                source,
                query: rule.query.clone(),
                quantile,
                window,
                fallback_replicas: rule.fallback_replicas,
            });
        }
        let advanced = advanced::resolve(self, &rules, min_replicas, &mut err);

        let behavior = self.behavior.as_ref().map(|b| {
            let (up, up_tolerance) =
                resolve_direction(&mut err, "behavior.scaleUp", b.scale_up.as_ref(), Direction::Up);
            let (down, down_tolerance) =
                resolve_direction(&mut err, "behavior.scaleDown", b.scale_down.as_ref(), Direction::Down);
            if let Some(t) = up_tolerance {
                tolerance_up = t;
            }
            if let Some(t) = down_tolerance {
                tolerance_down = t;
            }
            ResolvedBehavior { scale_up: up, scale_down: down }
        });

        if !errors.is_empty() {
            return Err(PolicyErrors(errors));
        }
        Ok(ResolvedPolicy {
            scale_target_ref: self.scale_target_ref.clone(),
            min_replicas,
            max_replicas: self.max_replicas,
            rules,
            tolerance_down,
            tolerance_up,
            behavior,
            mode: self.mode.unwrap_or_default(),
            advanced,
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Direction {
    Up,
    Down,
}

/// The tolerance's value, reporting a malformed quantity or one outside [0, 1) (then the
/// default stands in; the policy is rejected anyway).
fn check_tolerance(err: &mut impl FnMut(&str, String), path: &str, t: &Quantity) -> f64 {
    match t.value() {
        Ok(v) if v.is_finite() && (0.0..1.0).contains(&v) => v,
        Ok(v) => {
            err(path, format!("must be in [0, 1), got {v}"));
            DEFAULT_TOLERANCE
        }
        Err(why) => {
            err(path, why);
            DEFAULT_TOLERANCE
        }
    }
}

fn resolve_direction(
    err: &mut impl FnMut(&str, String),
    path: &str,
    rules: Option<&HpaScalingRules>,
    direction: Direction,
) -> (ResolvedDirection, Option<f64>) {
    // Defaults from Kubernetes `pkg/apis/autoscaling/v2/defaults.go`: scale-up's window
    // defaults to 0 in the API; an unset scale-down window stays unset there and the HPA
    // controller fills it from its downscale-stabilization flag
    // (`maybeInitScaleDownStabilizationWindow`), so the engine resolves it from its config.
    let default_window = match direction {
        Direction::Up => Some(0),
        Direction::Down => None,
    };
    let default_policies = match direction {
        Direction::Up => vec![
            HpaScalingPolicy { policy_type: PolicyType::Pods, value: 4, period_seconds: 15 },
            HpaScalingPolicy { policy_type: PolicyType::Percent, value: 100, period_seconds: 15 },
        ],
        Direction::Down => vec![HpaScalingPolicy { policy_type: PolicyType::Percent, value: 100, period_seconds: 15 }],
    };
    let window = rules.and_then(|r| r.stabilization_window_seconds).or(default_window);
    if let Some(window) = window
        && !(0..=MAX_STABILIZATION_WINDOW_SECS).contains(&window)
    {
        err(
            &format!("{path}.stabilizationWindowSeconds"),
            format!("must be between 0 and {MAX_STABILIZATION_WINDOW_SECS}, got {window}"),
        );
    }
    let policies = match rules.and_then(|r| r.policies.clone()) {
        None => default_policies,
        Some(list) => {
            if list.is_empty() {
                err(&format!("{path}.policies"), "must hold at least one policy when given".into());
            }
            if list.len() > MAX_RATE_POLICIES {
                err(
                    &format!("{path}.policies"),
                    format!("must hold at most {MAX_RATE_POLICIES} policies, got {}", list.len()),
                );
            }
            for (i, p) in list.iter().enumerate() {
                if p.value <= 0 {
                    err(&format!("{path}.policies[{i}].value"), format!("must be greater than 0, got {}", p.value));
                }
                if !(1..=MAX_PERIOD_SECS).contains(&p.period_seconds) {
                    err(
                        &format!("{path}.policies[{i}].periodSeconds"),
                        format!("must be between 1 and {MAX_PERIOD_SECS}, got {}", p.period_seconds),
                    );
                }
            }
            list
        }
    };
    let tolerance =
        rules.and_then(|r| r.tolerance.as_ref()).map(|t| check_tolerance(err, &format!("{path}.tolerance"), t));
    let resolved = ResolvedDirection {
        stabilization_window: window
            .map(|w| Duration::from_secs(u64::try_from(w.clamp(0, MAX_STABILIZATION_WINDOW_SECS)).unwrap_or(0))),
        select_policy: rules.and_then(|r| r.select_policy).unwrap_or(SelectPolicy::Max),
        policies,
    };
    (resolved, tolerance)
}

/// Converts a value to the HPA's milli-units the way `resource.Quantity` rounds: up to the
/// next milli-unit, except that float noise within 1e-6 of a whole milli-unit is dropped
/// (so `12.5` is 12500, not 12501). `None` for values that are not finite or overflow.
#[must_use]
#[inline]
pub fn to_milli(value: f64) -> Option<i64> {
    let m = value * 1000.0;
    if !m.is_finite() || m.abs() >= 9.0e18 {
        return None;
    }
    // Truncation and integer steps instead of `round`/`ceil`, which are library calls on
    // baseline x86-64 (this runs once per pod and rule). `m - t` is exact: below 2^53 the
    // integer part of `m` is exact, and above it `m` has no fraction.
    let t = m as i64;
    let frac = m - t as f64;
    let milli = if frac.abs() < 1e-6 {
        t
    } else if frac > 1.0 - 1e-6 {
        t + 1
    } else if frac < -(1.0 - 1e-6) {
        t - 1
    } else if frac > 0.0 {
        t + 1
    } else {
        t
    };
    // Nearest whole milli-unit within 1e-6 and `ceil` otherwise, as the float form did;
    // only the boundary of ±9e18 itself could differ, and it is rejected above.
    Some(milli)
}

/// Parses a Prometheus duration: a whole number with `ms`, `s`, `m`, `h` or `d`, or
/// several such parts (`1m30s`).
///
/// # Errors
/// A sentence saying why the text is not a duration.
pub fn parse_prom_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("`{text}` is not a duration: use a number with a unit, like 30s, 1m or 5m");
    if text.is_empty() {
        return Err(bad());
    }
    let mut total_ms: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.chars().take_while(char::is_ascii_digit).count();
        if digits == 0 {
            return Err(bad());
        }
        let n: u64 = rest[..digits].parse().map_err(|_| bad())?;
        rest = &rest[digits..];
        let unit_len = rest.chars().take_while(char::is_ascii_alphabetic).count();
        let unit_ms = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        total_ms = n.checked_mul(unit_ms).and_then(|v| total_ms.checked_add(v)).ok_or_else(bad)?;
    }
    Ok(Duration::from_millis(total_ms))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEED: &str = r#"apiVersion: autoscaler.production-stack/v1alpha1
kind: vLLMScalingPolicy
metadata:
  name: example-policy
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: meta-llama/Llama-2-70b-hf
  minReplicas: 1
  maxReplicas: 10
  scalingRules:
    - metric: "gpu_utilization"
      threshold: 75
    - metric: "queue_length"
      threshold: 10
    - metric: "latency"
      threshold: 1000
"#;

    fn errors_of(text: &str) -> Vec<PolicyError> {
        match parse_policy(text) {
            Ok(_) => panic!("expected errors for:\n{text}"),
            Err(PolicyErrors(e)) => e,
        }
    }

    fn spec_with(rest: &str) -> String {
        format!("maxReplicas: 5\nscalingRules:\n  - metric: queue_length\n    threshold: 10\n{rest}")
    }

    #[test]
    fn seed_example_parses_and_validates_verbatim() {
        let (policy, resolved) = parse_policy(SEED).unwrap();
        assert_eq!(policy.metadata.name.as_deref(), Some("example-policy"));
        assert_eq!(resolved.min_replicas, 1);
        assert_eq!(resolved.max_replicas, 10);
        assert_eq!(resolved.rules.len(), 3);
        assert_eq!(resolved.rules[0].target_type, TargetType::AverageValue);
        assert_eq!(resolved.rules[2].target_type, TargetType::Value);
        assert_eq!(resolved.rules[2].threshold_milli, 1_000_000);
        assert_eq!(resolved.behavior, None);
        assert_eq!((resolved.tolerance_down, resolved.tolerance_up), (0.1, 0.1));
        // The same document as JSON.
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(parse_policy(&json).unwrap().0, policy);
    }

    #[test]
    fn bare_spec_is_accepted() {
        let (_, r) = parse_policy(&spec_with("")).unwrap();
        assert_eq!(r.rules[0].key, "queue_length");
    }

    #[test]
    fn min_above_max_is_rejected_with_path() {
        let e = errors_of("minReplicas: 6\nmaxReplicas: 5\nscalingRules: [{metric: queue_length, threshold: 1}]");
        assert_eq!(e[0].path, "spec.minReplicas");
        assert!(e[0].reason.contains("6 > 5"), "{}", e[0].reason);
    }

    #[test]
    fn bad_thresholds_are_rejected() {
        for t in ["0", "-3", ".nan", ".inf"] {
            let e = errors_of(&format!("maxReplicas: 5\nscalingRules: [{{metric: queue_length, threshold: {t}}}]"));
            assert_eq!(e[0].path, "spec.scalingRules[0].threshold", "{t}");
        }
        let e = errors_of("maxReplicas: 5\nscalingRules: [{metric: gpu_utilization, threshold: 150}]");
        assert!(e[0].reason.contains("at most 100"));
    }

    #[test]
    fn unknown_metric_names_the_known_ones() {
        let e = errors_of("maxReplicas: 5\nscalingRules: [{metric: gpu_util, threshold: 1}]");
        assert_eq!(e[0].path, "spec.scalingRules[0].metric");
        assert!(e[0].reason.contains("gpu_util") && e[0].reason.contains("gpu_utilization"), "{}", e[0].reason);
    }

    #[test]
    fn unknown_fields_are_rejected_by_name() {
        let e = errors_of("maxReplicas: 5\nscalingRules: [{metric: queue_length, threshhold: 1}]");
        assert!(e[0].reason.contains("threshhold"), "{}", e[0].reason);
        let e = errors_of(&SEED.replace("minReplicas: 1", "minReplica: 1"));
        assert!(e[0].reason.contains("minReplica"), "{}", e[0].reason);
        assert!(e[0].path.starts_with("spec"), "{}", e[0].path);
    }

    #[test]
    fn duplicates_and_custom_rules() {
        let e = errors_of(
            "maxReplicas: 5\nscalingRules: [{metric: queue_length, threshold: 1}, {metric: queue_length, threshold: 2}]",
        );
        assert!(e[0].reason.contains("duplicate rule `queue_length`"));
        let e = errors_of("maxReplicas: 5\nscalingRules: [{metric: custom, threshold: 1}]");
        assert_eq!(e[0].path, "spec.scalingRules[0].query");
        let ok = "maxReplicas: 5\nscalingRules: [{metric: custom, name: a, query: 'sum(x)', threshold: 1}, {metric: custom, name: b, query: 'sum(y)', threshold: 1}]";
        assert_eq!(parse_policy(ok).unwrap().1.rules[1].key, "b");
    }

    #[test]
    fn a_policy_with_too_many_rules_is_refused_with_the_bound() {
        // Issue 10 item 14: 100,000 rules (once 65 CPU-s of pairwise de-duplication) are
        // refused by the bound, the API server's `maxItems`.
        let (policy, _) = parse_policy(&spec_with("")).unwrap();
        let mut spec = policy.spec;
        let rule =
            ScalingRule { metric: Metric::Custom, query: Some("sum(x)".into()), ..spec.scaling_rules[0].clone() };
        spec.scaling_rules =
            (0..100_000).map(|i| ScalingRule { name: Some(format!("r{i}")), ..rule.clone() }).collect();
        let PolicyErrors(e) = spec.validate().unwrap_err();
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].path, "spec.scalingRules");
        assert_eq!(e[0].reason, "must hold at most 64 rules, got 100000");
        // At the bound, every rule is checked and duplicates still name their first index.
        let mut text = String::from("maxReplicas: 5\nscalingRules:\n");
        for i in 0..MAX_SCALING_RULES - 1 {
            text.push_str(&format!("  - {{metric: custom, name: r{i}, query: 'sum(x)', threshold: 1}}\n"));
        }
        text.push_str("  - {metric: custom, name: r7, query: 'sum(x)', threshold: 1}\n");
        let e = errors_of(&text);
        assert_eq!(e.len(), 1, "{e:?}");
        assert_eq!(e[0].path, "spec.scalingRules[63].metric");
        assert!(e[0].reason.starts_with("duplicate rule `r7` (also scalingRules[7])"), "{}", e[0].reason);
    }

    #[test]
    fn tolerance_and_behavior_limits() {
        let e = errors_of(&spec_with("tolerance: 1.0\n"));
        assert_eq!(e[0].path, "spec.tolerance");
        let e = errors_of(&spec_with("behavior:\n  scaleDown:\n    stabilizationWindowSeconds: 3601\n"));
        assert_eq!(e[0].path, "spec.behavior.scaleDown.stabilizationWindowSeconds");
        let e = errors_of(&spec_with(
            "behavior:\n  scaleUp:\n    policies: [{type: Pods, value: 1, periodSeconds: 0}, {type: Percent, value: 0, periodSeconds: 1801}]\n",
        ));
        let paths: Vec<_> = e.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "spec.behavior.scaleUp.policies[0].periodSeconds",
                "spec.behavior.scaleUp.policies[1].value",
                "spec.behavior.scaleUp.policies[1].periodSeconds"
            ]
        );
        let (_, r) = parse_policy(&spec_with("tolerance: {scaleUp: 0.2}\n")).unwrap();
        assert_eq!((r.tolerance_down, r.tolerance_up), (0.1, 0.2));
    }

    #[test]
    fn tolerances_are_kubernetes_quantities() {
        // As `kubectl get hpa -o yaml` writes them: strings with a suffix or an exponent,
        // and plain numbers.
        for (text, want) in [
            ("behavior: {scaleUp: {tolerance: \"50m\"}}", 0.05),
            ("behavior: {scaleUp: {tolerance: \"0.05\"}}", 0.05),
            ("behavior: {scaleUp: {tolerance: \"5e-2\"}}", 0.05),
            ("behavior: {scaleUp: {tolerance: 50m}}", 0.05),
            ("behavior: {scaleUp: {tolerance: 0.05}}", 0.05),
            ("behavior: {scaleUp: {tolerance: 0}}", 0.0),
            ("behavior: {scaleUp: {tolerance: \"0\"}}", 0.0),
            ("tolerance: {scaleUp: \"50m\"}", 0.05),
            ("tolerance: \"50m\"", 0.05),
        ] {
            let (_, r) = parse_policy(&spec_with(&format!("{text}\n"))).unwrap_or_else(|e| panic!("{text}: {e}"));
            assert!((r.tolerance_up - want).abs() < 1e-12, "{text}: {}", r.tolerance_up);
        }
        let (_, r) = parse_policy(&spec_with("behavior: {scaleDown: {tolerance: \"10m\"}}\n")).unwrap();
        assert!((r.tolerance_down - 0.01).abs() < 1e-12 && r.tolerance_up == DEFAULT_TOLERANCE);
        // Malformed quantities are validation errors naming the field (the object still
        // decodes, so only this policy is rejected).
        for (text, path, why) in [
            (
                "behavior: {scaleUp: {tolerance: abc}}",
                "spec.behavior.scaleUp.tolerance",
                "`abc` is not a Kubernetes quantity",
            ),
            ("behavior: {scaleDown: {tolerance: \"5x\"}}", "spec.behavior.scaleDown.tolerance", "unknown suffix `x`"),
            (
                "behavior: {scaleDown: {tolerance: \"1e\"}}",
                "spec.behavior.scaleDown.tolerance",
                "not a decimal exponent",
            ),
            ("tolerance: \"\"", "spec.tolerance", "no digits"),
            ("tolerance: {scaleDown: \"2\"}", "spec.tolerance.scaleDown", "must be in [0, 1), got 2"),
            (
                "behavior: {scaleUp: {tolerance: \"-10m\"}}",
                "spec.behavior.scaleUp.tolerance",
                "must be in [0, 1), got -0.01",
            ),
        ] {
            let e = errors_of(&spec_with(&format!("{text}\n")));
            assert_eq!(e[0].path, path, "{text}");
            assert!(e[0].reason.contains(why), "{text}: {}", e[0].reason);
        }
    }

    #[test]
    fn quantity_grammar() {
        for (text, want) in [
            ("1", 1.0),
            ("+1.5", 1.5),
            ("-2", -2.0),
            (".5", 0.5),
            ("5.", 5.0),
            ("100m", 0.1),
            ("250u", 0.00025),
            ("3n", 3e-9),
            ("2k", 2000.0),
            ("1Ki", 1024.0),
            ("1Mi", 1048576.0),
            ("1E", 1e18),
            ("5e-2", 0.05),
            ("5E+1", 50.0),
            ("1.5e3", 1500.0),
        ] {
            let got = parse_quantity(text).unwrap_or_else(|e| panic!("{e}"));
            assert!((got - want).abs() <= want.abs() * 1e-12, "{text}: {got}");
        }
        for bad in
            ["", "m", ".", "+", "1.2.3", "1 m", "1mm", "1e", "1e+", "1e1.5", "0x10", "1ki", "NaN", "inf", "1e999"]
        {
            assert!(parse_quantity(bad).is_err(), "`{bad}` parsed");
        }
    }

    #[test]
    fn behavior_defaults_match_kubernetes() {
        let (_, r) = parse_policy(&spec_with("behavior: {}\n")).unwrap();
        let b = r.behavior.unwrap();
        assert_eq!(b.scale_up.stabilization_window, Some(Duration::ZERO));
        assert_eq!(b.scale_up.policies.len(), 2);
        assert_eq!(b.scale_down.stabilization_window, None, "unset until the engine resolves it");
        assert_eq!(b.scale_down.policies[0].value, 100);
        assert_eq!(b.scale_down.longest_period(), Duration::from_secs(15));
    }

    #[test]
    fn wrong_kind_or_version() {
        let e = errors_of(&SEED.replace("kind: vLLMScalingPolicy", "kind: HorizontalPodAutoscaler"));
        assert_eq!(e[0].path, "kind");
    }

    #[test]
    fn durations_and_milli() {
        assert_eq!(parse_prom_duration("1m30s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_prom_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_prom_duration("5").is_err());
        assert!(parse_prom_duration("m").is_err());
        assert_eq!(to_milli(12.5), Some(12_500));
        assert_eq!(to_milli(0.1 + 0.2), Some(300));
        assert_eq!(to_milli(0.0001), Some(1));
        assert_eq!(to_milli(f64::NAN), None);
        assert_eq!(to_milli(f64::INFINITY), None);
        assert_eq!(to_milli(-0.0001), Some(0), "ceil toward zero for negatives");
        assert_eq!(to_milli(-12.5), Some(-12_500));
        assert_eq!(to_milli(0.9999999999), Some(1000));
        assert_eq!(to_milli(9.0e15), None);
    }

    /// The float form `to_milli` replaced: round to the nearest milli-unit within 1e-6, else ceil.
    fn to_milli_by_floats(value: f64) -> Option<i64> {
        let m = value * 1000.0;
        let r = m.round();
        let milli = if (m - r).abs() < 1e-6 { r } else { m.ceil() };
        (value.is_finite() && milli.abs() < 9.0e18).then_some(milli as i64)
    }

    proptest::proptest! {
        #[test]
        fn to_milli_matches_the_float_form(
            whole in -1_000_000_000i64..1_000_000_000,
            thousandths in 0u32..1000,
            noise in proptest::sample::select(vec![0.0, 1e-12, -1e-12, 1e-9, -1e-9, 3e-7, -3e-7, 0.25, 0.5, 0.75]),
            any in proptest::num::f64::ANY,
        ) {
            let v = whole as f64 + f64::from(thousandths) / 1000.0 + noise / 1000.0;
            proptest::prop_assert_eq!(to_milli(v), to_milli_by_floats(v), "{}", v);
            proptest::prop_assert_eq!(to_milli(any), to_milli_by_floats(any), "{}", any);
        }
    }

    #[test]
    fn garbage_never_panics() {
        for text in ["", "---", "[1,2]", "spec: 5", "{", "maxReplicas: -1\nscalingRules: []", "\u{0}"] {
            let _ = parse_policies(text);
        }
    }
}
