//! The `vLLMScalingPolicy` custom resource: its Rust type, its status, and the generated
//! `CustomResourceDefinition`.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::CustomResource;
use kube::core::crd::v1::CustomResourceExt;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use vllm_scaling_core::{EngineState, PolicySpec};

/// The API group of the policy.
pub const GROUP: &str = "autoscaler.production-stack";
/// The API version of the policy within [`GROUP`].
pub const VERSION: &str = "v1alpha1";
/// The plural resource name (`kubectl get vllmscalingpolicies`).
pub const PLURAL: &str = "vllmscalingpolicies";

/// The spec of a `vLLMScalingPolicy`: exactly the core's [`PolicySpec`], so a policy file
/// that `vllm-autoscaler validate` accepts applies unchanged.
#[derive(CustomResource, Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
// clippy reads the repeated `type_ = "integer"` of the printer columns as duplicated attributes.
#[allow(clippy::duplicated_attributes)]
#[kube(
    group = "autoscaler.production-stack",
    version = "v1alpha1",
    kind = "vLLMScalingPolicy",
    root = "VllmScalingPolicyResource",
    plural = "vllmscalingpolicies",
    singular = "vllmscalingpolicy",
    shortname = "vsp",
    category = "autoscaling",
    namespaced,
    status = "PolicyStatus",
    doc = "Scales a vLLM workload through its /scale subresource from LLM-serving signals.",
    printcolumn(
        name = "Target",
        type_ = "string",
        json_path = ".status.reference",
        description = "The resolved scale target, Kind/name"
    ),
    printcolumn(name = "Min", type_ = "integer", json_path = ".spec.minReplicas"),
    printcolumn(name = "Max", type_ = "integer", json_path = ".spec.maxReplicas"),
    printcolumn(name = "Replicas", type_ = "integer", json_path = ".status.currentReplicas"),
    printcolumn(name = "Desired", type_ = "integer", json_path = ".status.desiredReplicas"),
    printcolumn(
        name = "Ready",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Ready\")].status",
        description = "The Ready condition: the spec is valid and the target resolved"
    ),
    printcolumn(
        name = "Active",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"ScalingActive\")].status",
        description = "The ScalingActive condition: the rules computed replicas from their metrics"
    ),
    printcolumn(name = "Winning Rule", type_ = "string", json_path = ".status.winningRule"),
    printcolumn(name = "Mode", type_ = "string", json_path = ".spec.mode"),
    printcolumn(name = "Limited By", type_ = "string", json_path = ".status.limitedBy", priority = 1),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(transparent)]
pub struct VllmScalingPolicySpec(pub PolicySpec);

/// What the controller reports on a policy, HPA-style, plus the engine's history so a
/// restarted controller keeps its stabilization windows.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyStatus {
    /// The `metadata.generation` of the spec this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The object being scaled, as resolved (a model id is resolved to a workload name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ResolvedTarget>,
    /// `Kind/name` of the resolved target (the TARGET column).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference: Option<String>,
    /// The target's pod label selector, from its scale subresource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub selector: Option<String>,
    /// `scale.spec.replicas` at the last evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_replicas: Option<i32>,
    /// What the policy last decided.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub desired_replicas: Option<i32>,
    /// When the controller last changed the target's replicas.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<Time>,
    /// When the policy was last evaluated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_evaluation_time: Option<Time>,
    /// The rule whose proposal won the last evaluation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub winning_rule: Option<String>,
    /// What held the result away from the winning proposal (`none`, `tolerance`,
    /// `maxReplicas`, `scaleDownStabilization`, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limited_by: Option<String>,
    /// One line saying what was decided and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explanation: Option<String>,
    /// Each rule's observed value, threshold and proposal at the last evaluation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rules: Vec<RuleStatusEntry>,
    /// `Ready`, `AbleToScale`, `ScalingActive`, `ScalingLimited`, HPA-style.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<PolicyCondition>,
    /// The engine's recommendations and scale events (timestamps in Unix milliseconds):
    /// restored by a restarted controller so it keeps its stabilization windows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "engine_state_schema")]
    pub history: Option<EngineState>,
    /// A rescale written but not yet observed as complete (for the time-to-scale metric).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_rescale: Option<PendingRescale>,
}

/// The object a policy scales, after resolution.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResolvedTarget {
    /// Its API version, such as `apps/v1`.
    pub api_version: String,
    /// Its kind, such as `Deployment`.
    pub kind: String,
    /// Its object name.
    pub name: String,
}

/// One rule's view at the last evaluation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RuleStatusEntry {
    /// The rule's key (its `name`, else the metric name).
    pub name: String,
    /// The catalog metric.
    pub metric: String,
    /// The observed value in the metric's unit (per replica for `AverageValue` rules).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed: Option<f64>,
    /// The threshold.
    pub threshold: f64,
    /// `AverageValue` or `Value`.
    pub target_type: String,
    /// The replicas this rule alone asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub proposal: Option<i32>,
    /// `ok`, `missing` or `invalid`.
    pub status: String,
    /// Why the rule is missing or invalid, or a note on its proposal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

/// An HPA-style status condition.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyCondition {
    /// `Ready`, `AbleToScale`, `ScalingActive` or `ScalingLimited`.
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    /// A CamelCase reason (`SucceededRescale`, `FailedGetMetrics`, `InvalidSpec`...).
    pub reason: String,
    /// A sentence for humans.
    pub message: String,
    /// When the status last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<Time>,
}

/// A rescale the controller wrote, kept until the new replicas are observed ready.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PendingRescale {
    /// Replicas before.
    pub from: i32,
    /// Replicas written.
    pub to: i32,
    /// When the decision was made, in Unix milliseconds.
    pub decided_at_ms: u64,
}

/// A status as a JSON merge patch of the whole object: `{"status": {...}}` with every
/// field present, `null` where the status has none (an empty list included), so a merge
/// patch also clears what the new status leaves out. Serialized straight from the status,
/// without an intermediate JSON value (it is written on every evaluation).
#[derive(Clone, Copy, Debug)]
pub struct StatusMergePatch<'a>(&'a PolicyStatus);

struct AllFields<'a>(&'a PolicyStatus);

impl PolicyStatus {
    /// This status as a merge patch of the policy (see [`StatusMergePatch`]).
    #[must_use]
    pub fn merge_patch(&self) -> StatusMergePatch<'_> {
        StatusMergePatch(self)
    }
}

impl Serialize for StatusMergePatch<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry("status", &AllFields(self.0))?;
        map.end()
    }
}

impl Serialize for AllFields<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        fn non_empty<T>(v: &[T]) -> Option<&[T]> {
            (!v.is_empty()).then_some(v)
        }
        // Destructured so that a new field is a compile error here until it is written.
        let PolicyStatus {
            observed_generation,
            target,
            reference,
            selector,
            current_replicas,
            desired_replicas,
            last_scale_time,
            last_evaluation_time,
            winning_rule,
            limited_by,
            explanation,
            rules,
            conditions,
            history,
            pending_rescale,
        } = self.0;
        let mut map = serializer.serialize_map(Some(15))?;
        map.serialize_entry("observedGeneration", observed_generation)?;
        map.serialize_entry("target", target)?;
        map.serialize_entry("reference", reference)?;
        map.serialize_entry("selector", selector)?;
        map.serialize_entry("currentReplicas", current_replicas)?;
        map.serialize_entry("desiredReplicas", desired_replicas)?;
        map.serialize_entry("lastScaleTime", last_scale_time)?;
        map.serialize_entry("lastEvaluationTime", last_evaluation_time)?;
        map.serialize_entry("winningRule", winning_rule)?;
        map.serialize_entry("limitedBy", limited_by)?;
        map.serialize_entry("explanation", explanation)?;
        map.serialize_entry("rules", &non_empty(rules))?;
        map.serialize_entry("conditions", &non_empty(conditions))?;
        map.serialize_entry("history", history)?;
        map.serialize_entry("pendingRescale", pending_rescale)?;
        map.end()
    }
}

fn engine_state_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    fn events(what: &str) -> Value {
        json!({
            "type": "array",
            "description": format!("Recent {what} rescales, for the rate policies."),
            "items": {
                "type": "object",
                "required": ["at", "change"],
                "properties": {
                    "at": {"type": "integer", "format": "int64", "description": "Unix milliseconds."},
                    "change": {"type": "integer", "format": "int32", "description": "Replicas added or removed."},
                    "outdated": {"type": "boolean", "description": "Older than the longest policy period."}
                }
            }
        })
    }
    let schema = json!({
        "type": "object",
        "description": "The engine's history: recent recommendations and rescales (Unix milliseconds).",
        "properties": {
            "recommendations": {
                "type": "array",
                "description": "Recent raw recommendations, for the stabilization windows.",
                "items": {
                    "type": "object",
                    "required": ["at", "replicas"],
                    "properties": {
                        "at": {"type": "integer", "format": "int64", "description": "Unix milliseconds."},
                        "replicas": {"type": "integer", "format": "int32", "description": "Replicas recommended."}
                    }
                }
            },
            "scaleUpEvents": events("scale-up"),
            "scaleDownEvents": events("scale-down"),
            // The steps beyond the HPA (panic window, forecast samples, idle time) keep a
            // history whose shape belongs to the core; the controller only stores it.
            "advanced": {
                "type": "object",
                "description": "History of the steps beyond the HPA (panic, predictive, scale to zero), kept as the engine wrote it.",
                "x-kubernetes-preserve-unknown-fields": true
            }
        }
    });
    schemars::Schema::try_from(schema).unwrap_or_default()
}

impl VllmScalingPolicyResource {
    /// The core's view of this object (the spec, with name and namespace), for validation
    /// and for the engine.
    #[must_use]
    pub fn to_core(&self) -> vllm_scaling_core::VllmScalingPolicy {
        vllm_scaling_core::VllmScalingPolicy {
            api_version: vllm_scaling_core::API_VERSION.to_owned(),
            kind: vllm_scaling_core::KIND.to_owned(),
            metadata: vllm_scaling_core::ObjectMeta {
                name: self.metadata.name.clone(),
                namespace: self.metadata.namespace.clone(),
                labels: self.metadata.labels.clone().unwrap_or_default(),
                annotations: self.metadata.annotations.clone().unwrap_or_default(),
            },
            spec: self.spec.0.clone(),
            status: None,
        }
    }
}

/// The `CustomResourceDefinition` of `vLLMScalingPolicy`: generated from the core's types
/// by kube's derive and schemars, then tightened so that the API server admits exactly
/// what `vllm-autoscaler validate` accepts:
///
/// * every bound of core validation the schema can say (`minimum`, `maximum`, `pattern`,
///   `minItems`), `maxItems`/`maxLength` on every list and string (the same bounds as
///   core, [`vllm_scaling_core::MAX_SCALING_RULES`] and friends; they also bound the
///   estimated cost of the CEL rules), and the defaults `minReplicas: 1`, `mode: active`;
/// * the cross-field rules as CEL `x-kubernetes-validations` (min <= max, `minReplicas: 0`
///   only with `scaleToZero`, percent thresholds <= 100, unique rule names, `query`
///   exactly on `custom` rules, rule references of panic, predictive and scale to zero);
/// * `tolerance` is a number, a quantity string or an object (an untagged union), and
///   `behavior.*.tolerance` a number or a quantity string (`"50m"`): a structural schema
///   cannot type them and CEL cannot read a node of unknown type, so they keep any value.
///
/// What stays with the controller (`Ready=False` naming the field): `tolerance`, schedule
/// time-zone names (the bundled IANA database), durations made only of milliseconds that
/// add up to less than 1s, and numbers too large for their type.
#[must_use]
pub fn crd() -> CustomResourceDefinition {
    let mut crd = VllmScalingPolicyResource::crd();
    for version in &mut crd.spec.versions {
        let Some(validation) = version.schema.as_mut() else { continue };
        let Some(schema) = validation.open_api_v3_schema.take() else { continue };
        let mut value = serde_json::to_value(schema).unwrap_or(Value::Null);
        let missing = tighten(&mut value);
        debug_assert!(missing.is_empty(), "schema paths not found: {missing:?}");
        validation.open_api_v3_schema = serde_json::from_value(value).ok();
    }
    crd
}

/// The CRD as YAML, exactly as committed in `deploy/crd.yaml`.
///
/// # Errors
/// When YAML serialization fails (it does not for this type).
pub fn crd_yaml() -> Result<String, serde_yaml_ng::Error> {
    let body = serde_yaml_ng::to_string(&crd())?;
    Ok(format!(
        "# Generated by `vllm-autoscaler crd`; do not edit (a test fails when it drifts from the types).\n{body}"
    ))
}

/// A rule name, as CEL reads it: the rule's `name`, else its metric (core's rule key).
const RULE_KEY: &str = "(has(r.name) ? r.name : r.metric)";

/// The metrics whose thresholds are percentages.
const PERCENT_METRICS: &str = "['kv_cache_usage', 'gpu_utilization', 'gpu_memory_used']";
/// The metrics that take a `quantile`.
const QUANTILE_METRICS: &str = "['latency', 'ttft', 'itl', 'queue_time']";
/// The metrics whose default target type is `Value` (fleet-level).
const VALUE_METRICS: &str = "['latency', 'ttft', 'itl', 'queue_time', 'custom']";

/// One CEL rule: its expression, the message, and the field the API server names.
fn cel(rule: &str, message: &str, field_path: &str) -> Value {
    let mut v = json!({"rule": rule, "message": message});
    if !field_path.is_empty() {
        v["fieldPath"] = json!(field_path);
    }
    v
}

/// Adds the bounds and the CEL rules; returns the schema paths it expected and did not
/// find (a test keeps this empty, so a renamed field cannot silently lose its bound).
fn tighten(root: &mut Value) -> Vec<String> {
    use vllm_scaling_core::{
        MAX_QUERY_LEN, MAX_RATE_POLICIES, MAX_SCALING_RULES, MAX_SCHEDULE_NAME_LEN, MAX_SCHEDULES,
        MAX_TARGET_FIELD_LEN, MAX_WINDOW_LEN,
    };
    let mut missing = Vec::new();
    let Some(spec) = root.pointer_mut("/properties/spec") else { return vec!["/properties/spec".to_owned()] };
    let mut set = |node: &mut Value, pointer: &str, key: &str, value: Value| {
        if let Some(Value::Object(map)) = node.pointer_mut(pointer) {
            map.insert(key.to_owned(), value);
        } else {
            missing.push(pointer.to_owned());
        }
    };
    set(spec, "/properties/maxReplicas", "minimum", json!(1));
    set(spec, "/properties/minReplicas", "minimum", json!(0));
    // Defaults the API server writes into the stored object, so `kubectl get vsp` shows
    // them (the MIN and MODE columns); core applies the same ones to an absent field.
    set(spec, "/properties/minReplicas", "default", json!(1));
    set(spec, "/properties/mode", "default", json!("active"));
    // Not nullable, so that an explicit `null` is dropped and defaulted like an absent
    // field (as core reads it) instead of reaching the CEL rules as null.
    for field in ["minReplicas", "mode"] {
        if let Some(Value::Object(map)) = spec.pointer_mut(&format!("/properties/{field}")) {
            map.remove("nullable");
        }
    }

    let target = "/properties/scaleTargetRef/properties";
    for field in ["apiVersion", "kind", "name"] {
        set(spec, &format!("{target}/{field}"), "maxLength", json!(MAX_TARGET_FIELD_LEN));
    }
    set(spec, &format!("{target}/kind"), "pattern", json!("\\S"));
    set(spec, &format!("{target}/name"), "pattern", json!("\\S"));

    set(spec, "/properties/scalingRules", "minItems", json!(1));
    set(spec, "/properties/scalingRules", "maxItems", json!(MAX_SCALING_RULES));
    let rule = "/properties/scalingRules/items/properties";
    set(spec, &format!("{rule}/threshold"), "exclusiveMinimum", json!(true));
    set(spec, &format!("{rule}/threshold"), "minimum", json!(0));
    set(spec, &format!("{rule}/quantile"), "exclusiveMinimum", json!(true));
    set(spec, &format!("{rule}/quantile"), "minimum", json!(0));
    set(spec, &format!("{rule}/quantile"), "exclusiveMaximum", json!(true));
    set(spec, &format!("{rule}/quantile"), "maximum", json!(1));
    set(spec, &format!("{rule}/name"), "pattern", json!("^[A-Za-z0-9_-]{1,63}$"));
    set(spec, &format!("{rule}/name"), "maxLength", json!(63));
    set(spec, &format!("{rule}/query"), "maxLength", json!(MAX_QUERY_LEN));
    set(spec, &format!("{rule}/query"), "pattern", json!("\\S"));
    set(spec, &format!("{rule}/window"), "pattern", json!("^([0-9]+(ms|s|m|h|d))+$"));
    set(spec, &format!("{rule}/window"), "maxLength", json!(MAX_WINDOW_LEN));
    set(spec, &format!("{rule}/fallbackReplicas"), "minimum", json!(1));
    set(
        spec,
        "/properties/scalingRules/items",
        "x-kubernetes-validations",
        json!([
            cel(
                &format!("!(self.metric in {PERCENT_METRICS}) || self.threshold <= 100.0"),
                "this metric is a percentage: the threshold must be at most 100",
                ".threshold"
            ),
            cel(
                "self.metric == 'custom' ? has(self.query) : !has(self.query)",
                "a custom rule needs a PromQL query, and only custom rules take one",
                ".query"
            ),
            cel(
                &format!("!has(self.quantile) || self.metric in {QUANTILE_METRICS}"),
                "quantile applies only to latency metrics (latency, ttft, itl, queue_time)",
                ".quantile"
            ),
            cel(
                "!has(self.source) || self.source != 'nvml' || self.metric in ['gpu_utilization', 'gpu_memory_used']",
                "nvml serves only gpu_utilization and gpu_memory_used",
                ".source"
            ),
            cel(
                "!(self.metric == 'custom' && has(self.source) && self.source == 'pods')",
                "a custom rule is a PromQL query: its source is prometheus or auto",
                ".source"
            ),
            cel(
                "!has(self.window) || (!self.window.matches('^(0+(ms|s|m|h|d))+$') && !self.window.matches('^0*[0-9]{1,3}ms$'))",
                "the window must be at least 1s",
                ".window"
            ),
        ]),
    );

    for dir in ["scaleUp", "scaleDown"] {
        let base = format!("/properties/behavior/properties/{dir}/properties");
        set(spec, &format!("{base}/stabilizationWindowSeconds"), "minimum", json!(0));
        set(spec, &format!("{base}/stabilizationWindowSeconds"), "maximum", json!(3600));
        set(spec, &format!("{base}/policies"), "minItems", json!(1));
        set(spec, &format!("{base}/policies"), "maxItems", json!(MAX_RATE_POLICIES));
        set(spec, &format!("{base}/policies/items/properties/value"), "minimum", json!(1));
        set(spec, &format!("{base}/policies/items/properties/periodSeconds"), "minimum", json!(1));
        set(spec, &format!("{base}/policies/items/properties/periodSeconds"), "maximum", json!(1800));
    }

    let panic = "/properties/panic/properties";
    for field in ["windowSeconds", "stableWindowSeconds"] {
        set(spec, &format!("{panic}/{field}"), "minimum", json!(1));
        set(spec, &format!("{panic}/{field}"), "maximum", json!(3600));
    }
    set(spec, &format!("{panic}/thresholdPercent"), "minimum", json!(110));
    set(spec, &format!("{panic}/thresholdPercent"), "maximum", json!(1000));
    set(spec, &format!("{panic}/maxScaleUpRate"), "minimum", json!(1));
    set(spec, &format!("{panic}/maxScaleUpRate"), "exclusiveMinimum", json!(true));
    set(spec, &format!("{panic}/rules"), "minItems", json!(1));
    set(spec, &format!("{panic}/rules"), "maxItems", json!(MAX_SCALING_RULES));
    set(spec, &format!("{panic}/rules/items"), "maxLength", json!(63));
    set(
        spec,
        "/properties/panic",
        "x-kubernetes-validations",
        json!([cel(
            "(has(self.windowSeconds) ? self.windowSeconds : 6) <= (has(self.stableWindowSeconds) ? self.stableWindowSeconds : 60)",
            "windowSeconds must not exceed stableWindowSeconds",
            ".windowSeconds"
        )]),
    );

    let zero = "/properties/scaleToZero/properties";
    set(spec, &format!("{zero}/activationRule"), "maxLength", json!(63));
    set(spec, &format!("{zero}/activationThreshold"), "minimum", json!(0));
    set(spec, &format!("{zero}/idleSeconds"), "minimum", json!(0));
    set(spec, &format!("{zero}/idleSeconds"), "maximum", json!(86_400));

    let predictive = "/properties/predictive/properties";
    set(spec, &format!("{predictive}/rule"), "maxLength", json!(63));
    set(spec, &format!("{predictive}/horizonSeconds"), "minimum", json!(1));
    set(spec, &format!("{predictive}/horizonSeconds"), "maximum", json!(3600));
    set(spec, &format!("{predictive}/historySeconds"), "minimum", json!(10));
    set(spec, &format!("{predictive}/historySeconds"), "maximum", json!(86_400));
    set(spec, &format!("{predictive}/confidence"), "minimum", json!(0.5));
    set(spec, &format!("{predictive}/confidence"), "maximum", json!(1));
    set(spec, &format!("{predictive}/confidence"), "exclusiveMaximum", json!(true));
    set(spec, &format!("{predictive}/capacityPerReplica"), "minimum", json!(0));
    set(spec, &format!("{predictive}/capacityPerReplica"), "exclusiveMinimum", json!(true));
    set(spec, &format!("{predictive}/minSamples"), "minimum", json!(3));
    set(spec, &format!("{predictive}/minSamples"), "maximum", json!(10_000));

    let survivors = "/properties/survivorsCheck/properties/headroomPercent";
    set(spec, survivors, "minimum", json!(0));
    set(spec, survivors, "maximum", json!(100));
    set(spec, survivors, "exclusiveMaximum", json!(true));

    set(spec, "/properties/schedules", "maxItems", json!(MAX_SCHEDULES));
    let schedule = "/properties/schedules/items/properties";
    set(spec, &format!("{schedule}/name"), "maxLength", json!(MAX_SCHEDULE_NAME_LEN));
    set(spec, &format!("{schedule}/name"), "pattern", json!("\\S"));
    set(spec, &format!("{schedule}/timeZone"), "maxLength", json!(64));
    set(spec, &format!("{schedule}/start"), "pattern", json!("^([01][0-9]|2[0-3]):[0-5][0-9]$"));
    set(spec, &format!("{schedule}/start"), "maxLength", json!(5));
    set(spec, &format!("{schedule}/end"), "pattern", json!("^(([01][0-9]|2[0-3]):[0-5][0-9]|24:00)$"));
    set(spec, &format!("{schedule}/end"), "maxLength", json!(5));
    set(spec, &format!("{schedule}/days"), "minItems", json!(1));
    set(spec, &format!("{schedule}/days"), "maxItems", json!(7));
    // `Weekday` also accepts the full English names (serde aliases schemars does not list).
    set(
        spec,
        &format!("{schedule}/days/items"),
        "enum",
        json!([
            "Mon",
            "Tue",
            "Wed",
            "Thu",
            "Fri",
            "Sat",
            "Sun",
            "Monday",
            "Tuesday",
            "Wednesday",
            "Thursday",
            "Friday",
            "Saturday",
            "Sunday"
        ]),
    );
    set(spec, &format!("{schedule}/minReplicas"), "minimum", json!(0));
    set(spec, &format!("{schedule}/maxReplicas"), "minimum", json!(1));
    set(
        spec,
        "/properties/schedules/items",
        "x-kubernetes-validations",
        json!([
            cel(
                "has(self.minReplicas) || has(self.maxReplicas)",
                "a schedule must set minReplicas, maxReplicas or both",
                ".minReplicas"
            ),
            cel(
                "self.start != self.end && !(self.start == '00:00' && self.end == '24:00')",
                "the window is empty or a whole day; for every day leave the bounds in the spec",
                ".end"
            ),
            cel(
                "!has(self.days) || self.days.all(d, self.days.exists_one(e, e.substring(0, 3) == d.substring(0, 3)))",
                "a day is listed twice",
                ".days"
            ),
        ]),
    );

    // `tolerance` is a number or a mapping: a structural schema cannot type that union,
    // and CEL cannot read a node of unknown type, so it keeps any value and the controller
    // validates it (`Ready=False` naming the field).
    if let Some(tolerance) = spec.pointer_mut("/properties/tolerance") {
        let description = tolerance.get("description").cloned().unwrap_or_else(|| json!(""));
        *tolerance = json!({
            "description": description,
            "x-kubernetes-preserve-unknown-fields": true,
        });
    }
    let tolerance_found = spec.pointer("/properties/tolerance").is_some();

    let rule_named = |what: &str| format!("self.scalingRules.exists(r, {RULE_KEY} == {what})");
    set(
        spec,
        "",
        "x-kubernetes-validations",
        json!([
            cel("self.minReplicas <= self.maxReplicas", "minReplicas must not exceed maxReplicas", ".minReplicas"),
            cel(
                "self.minReplicas != 0 || has(self.scaleToZero)",
                "minReplicas 0 is allowed only with scaleToZero",
                ".minReplicas"
            ),
            cel(
                &format!(
                    "self.scalingRules.all(r, self.scalingRules.exists_one(s, (has(s.name) ? s.name : s.metric) == {RULE_KEY}))"
                ),
                "rule names must be unique (a rule's name defaults to its metric: give each custom rule a unique name)",
                ".scalingRules"
            ),
            cel(
                "self.scalingRules.all(r, !has(r.fallbackReplicas) || r.fallbackReplicas <= self.maxReplicas)",
                "fallbackReplicas must not exceed maxReplicas",
                ".scalingRules"
            ),
            cel(
                &format!("!has(self.panic) || !has(self.panic.rules) || self.panic.rules.all(k, {})", rule_named("k")),
                "panic.rules must name scaling rules (a rule's name, else its metric)",
                ".panic.rules"
            ),
            cel(
                &format!("!has(self.scaleToZero) || {}", rule_named("self.scaleToZero.activationRule")),
                "scaleToZero.activationRule must name a scaling rule (a rule's name, else its metric)",
                ".scaleToZero.activationRule"
            ),
            cel(
                "!has(self.scaleToZero) || self.minReplicas == 0 || (has(self.schedules) && self.schedules.exists(s, has(s.minReplicas) && s.minReplicas == 0))",
                "scaleToZero has no effect: set minReplicas: 0, or minReplicas: 0 in one of the schedules",
                ".scaleToZero"
            ),
            cel(
                &format!("!has(self.predictive) || {}", rule_named("self.predictive.rule")),
                "predictive.rule must name a scaling rule (a rule's name, else its metric)",
                ".predictive.rule"
            ),
            cel(
                &format!(
                    "!has(self.predictive) || has(self.predictive.capacityPerReplica) || self.scalingRules.all(r, {RULE_KEY} != self.predictive.rule || (has(r.targetType) ? r.targetType == 'AverageValue' : !(r.metric in {VALUE_METRICS})))"
                ),
                "predictive.capacityPerReplica is required when the predictive rule has a fleet-level (Value) threshold",
                ".predictive.capacityPerReplica"
            ),
            cel(
                "!has(self.schedules) || has(self.scaleToZero) || self.schedules.all(s, !has(s.minReplicas) || s.minReplicas != 0)",
                "a schedule's minReplicas 0 needs scaleToZero",
                ".schedules"
            ),
            cel(
                "!has(self.schedules) || self.schedules.all(s, (has(s.minReplicas) ? s.minReplicas : self.minReplicas) <= (has(s.maxReplicas) ? s.maxReplicas : self.maxReplicas))",
                "a schedule's bounds are inverted: its minReplicas exceeds its maxReplicas (a bound it leaves out is the spec's)",
                ".schedules"
            ),
            cel(
                "!has(self.schedules) || self.schedules.all(a, !has(a.name) || self.schedules.exists_one(b, has(b.name) && b.name == a.name))",
                "schedule names must be unique",
                ".schedules"
            ),
        ]),
    );
    if !tolerance_found {
        missing.push("/properties/tolerance".to_owned());
    }
    bound_enums(spec);
    // A Kubernetes quantity: a number (`0.05`) or a string (`"50m"`). A structural schema
    // cannot say number-or-string (`x-kubernetes-int-or-string` would reject `0.05`), so
    // it keeps any value and the controller validates it.
    for dir in ["scaleUp", "scaleDown"] {
        let pointer = format!("/properties/behavior/properties/{dir}/properties/tolerance");
        preserve(spec, &pointer, Some(BEHAVIOR_TOLERANCE), &mut missing);
    }
    missing
}

/// The description of `behavior.*.tolerance` (schemars gives the `Quantity` type's).
const BEHAVIOR_TOLERANCE: &str = "Tolerance for this direction (KEP-4951); overrides `spec.tolerance`. A Kubernetes \
                                  quantity in [0, 1): a number, or a string such as \"50m\" or \"0.05\".";

/// Replaces the schema at `pointer` with one that keeps any value, with `description` or
/// the one it had.
fn preserve(spec: &mut Value, pointer: &str, description: Option<&str>, missing: &mut Vec<String>) {
    if let Some(node) = spec.pointer_mut(pointer) {
        let description =
            description.map(|d| json!(d)).or_else(|| node.get("description").cloned()).unwrap_or_else(|| json!(""));
        *node = json!({
            "description": description,
            "x-kubernetes-preserve-unknown-fields": true,
        });
    } else {
        missing.push(pointer.to_owned());
    }
}

/// Gives every enum string its longest value as `maxLength`: the API server estimates the
/// cost of a CEL rule from the sizes the schema bounds, and an unbounded string counts as
/// long as a whole request.
fn bound_enums(node: &mut Value) {
    let Some(map) = node.as_object_mut() else { return };
    if map.get("type") == Some(&json!("string")) && !map.contains_key("maxLength") {
        let longest = map
            .get("enum")
            .and_then(Value::as_array)
            .map(|values| values.iter().filter_map(Value::as_str).map(|s| s.chars().count()).max().unwrap_or(0));
        if let Some(longest) = longest {
            map.insert("maxLength".to_owned(), json!(longest));
        }
    }
    for key in ["properties", "items"] {
        match map.get_mut(key) {
            Some(Value::Object(children)) if key == "properties" => children.values_mut().for_each(bound_enums),
            Some(items) if key == "items" => bound_enums(items),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_merge_patch_names_every_field_and_nulls_the_absent_ones() {
        let full = PolicyStatus {
            observed_generation: Some(3),
            target: Some(ResolvedTarget { api_version: "apps/v1".into(), kind: "Deployment".into(), name: "d".into() }),
            reference: Some("Deployment/d".into()),
            selector: Some("app=d".into()),
            current_replicas: Some(2),
            desired_replicas: Some(3),
            last_scale_time: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            last_evaluation_time: Some(Time(k8s_openapi::jiff::Timestamp::UNIX_EPOCH)),
            winning_rule: Some("queue_length".into()),
            limited_by: Some("none".into()),
            explanation: Some("scale up".into()),
            rules: vec![RuleStatusEntry {
                name: "queue_length".into(),
                metric: "queue_length".into(),
                observed: Some(15.0),
                threshold: 10.0,
                target_type: "AverageValue".into(),
                proposal: Some(3),
                status: "ok".into(),
                reason: None,
            }],
            conditions: vec![PolicyCondition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "TargetResolved".into(),
                message: "ok".into(),
                last_transition_time: None,
            }],
            history: Some(EngineState::default()),
            pending_rescale: Some(PendingRescale { from: 2, to: 3, decided_at_ms: 5 }),
        };
        // Every field of a full status, with the same values as its own serialization.
        let patch = serde_json::to_value(full.merge_patch()).unwrap();
        assert_eq!(patch["status"], serde_json::to_value(&full).unwrap());
        // An empty status clears every one of them.
        let empty = serde_json::to_value(PolicyStatus::default().merge_patch()).unwrap();
        let keys: Vec<&String> = empty["status"].as_object().unwrap().keys().collect();
        assert_eq!(keys.len(), patch["status"].as_object().unwrap().len());
        assert!(empty["status"].as_object().unwrap().values().all(Value::is_null));
    }
}
