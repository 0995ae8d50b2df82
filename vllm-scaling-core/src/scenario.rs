//! What-if scenarios: a policy and a list of evaluation steps, replayed through the
//! engine. `vllm-autoscaler replay` is a thin wrapper around this module.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::decision::{Decision, LimitedBy, RuleStatus};
use crate::engine::{Engine, EngineConfig};
use crate::metric::Metric;
use crate::observation::{CurrentScale, PodMetrics, PodPhase, ScalingMetrics};
use crate::policy::{PolicyErrors, ResolvedPolicy, VllmScalingPolicy, policy_from_value};
use crate::time::Timestamp;

/// A malformed scenario: where and why.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The text is not YAML/JSON of the scenario's shape.
    #[error("{path}: {reason}")]
    Malformed {
        /// Where, such as `steps[3].pods[0].ready`.
        path: String,
        /// Why.
        reason: String,
    },
    /// The scenario's policy is invalid.
    #[error("policy: {0}")]
    Policy(PolicyErrors),
    /// A step is inconsistent.
    #[error("steps[{step}]{field}: {reason}")]
    Step {
        /// The step's index (from 0).
        step: usize,
        /// The field under the step, starting with `.`, or empty.
        field: String,
        /// Why.
        reason: String,
    },
}

/// Optional controller-wide settings of a scenario (the HPA controller flags).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScenarioController {
    /// `--horizontal-pod-autoscaler-downscale-stabilization` in seconds (default 300).
    #[serde(default)]
    pub downscale_stabilization_seconds: Option<u64>,
    /// `--horizontal-pod-autoscaler-sync-period` in seconds (default 15); only sets the
    /// decisions' next-evaluation time.
    #[serde(default)]
    pub sync_period_seconds: Option<u64>,
}

/// One evaluation of a scenario.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScenarioStep {
    /// Seconds since the start (non-decreasing from step to step).
    pub at: f64,
    /// What the target's scale subresource says now (`spec.replicas`). Omitted: the
    /// previous step's desired replicas (required on the first step).
    #[serde(default)]
    pub current_replicas: Option<i32>,
    /// `status.replicas`, used by fleet-level `AverageValue` rules (default: `currentReplicas`).
    #[serde(default)]
    pub status_replicas: Option<i32>,
    /// Per-pod values and state. Omitted: `currentReplicas` running, ready pods with no
    /// per-pod values.
    #[serde(default)]
    pub pods: Option<Vec<ScenarioPod>>,
    /// Fleet-level values by rule key.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// Rules whose backend failed, by rule key, with the reason.
    #[serde(default)]
    pub failures: BTreeMap<String, String>,
    /// Rules whose signal is idle (nothing served in the window, nothing in flight): see
    /// [`ScalingMetrics::idle`].
    #[serde(default)]
    pub idle: Vec<String>,
    /// What the decision should be; `replay` reports any mismatch.
    #[serde(default)]
    pub expect: Option<StepExpectation>,
}

/// Expected outcome of a step, for scenarios used as regression tests.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StepExpectation {
    /// The desired replicas.
    #[serde(default)]
    pub desired_replicas: Option<i32>,
    /// What limited the result.
    #[serde(default)]
    pub limited_by: Option<LimitedBy>,
    /// The winning rule's key.
    #[serde(default)]
    pub winning_rule: Option<String>,
}

impl StepExpectation {
    /// Every way `decision` differs from this expectation (empty when it matches).
    #[must_use]
    pub fn mismatches(&self, decision: &Decision) -> Vec<String> {
        let mut out = Vec::new();
        if let Some(want) = self.desired_replicas
            && want != decision.desired_replicas
        {
            out.push(format!("expected desiredReplicas {want}, got {}", decision.desired_replicas));
        }
        if let Some(want) = self.limited_by
            && want != decision.limited_by
        {
            out.push(format!("expected limitedBy {want}, got {}", decision.limited_by));
        }
        if let Some(want) = &self.winning_rule
            && Some(want) != decision.winning_rule.as_ref()
        {
            out.push(format!(
                "expected winningRule {want}, got {}",
                decision.winning_rule.as_deref().unwrap_or("none")
            ));
        }
        out
    }
}

/// A pod in a scenario step.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ScenarioPod {
    /// The pod's name (default `pod-<index>`).
    #[serde(default)]
    pub name: Option<String>,
    /// Its phase (default `Running`).
    #[serde(default)]
    pub phase: PodPhase,
    /// Whether it is Ready (default true).
    #[serde(default = "yes")]
    pub ready: bool,
    /// Whether it is being deleted (default false).
    #[serde(default)]
    pub deleting: bool,
    /// Its values by rule key.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

const fn yes() -> bool {
    true
}

/// A parsed, checked scenario.
#[derive(Clone, Debug, PartialEq)]
pub struct Scenario {
    /// The policy object as given (or built around a bare spec).
    pub policy: VllmScalingPolicy,
    /// The validated policy.
    pub resolved: ResolvedPolicy,
    /// Controller settings.
    pub controller: ScenarioController,
    /// The steps.
    pub steps: Vec<ScenarioStep>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawScenario {
    policy: serde_yaml_ng::Value,
    #[serde(default)]
    controller: ScenarioController,
    steps: Vec<ScenarioStep>,
}

/// One line of replay output.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayLine {
    /// The step's time in seconds, as given.
    pub at: serde_json::Number,
    /// Current replicas at the step.
    pub current_replicas: i32,
    /// The decision's desired replicas.
    pub desired_replicas: i32,
    /// The largest valid proposal before stabilization, rate limits and bounds.
    pub proposed_replicas: Option<i32>,
    /// Each rule's view.
    pub rules: Vec<ReplayRule>,
    /// The winning rule's key.
    pub winning_rule: Option<String>,
    /// What limited the result.
    pub limited_by: LimitedBy,
    /// Whether the decision would be applied (false in observe mode).
    pub actuate: bool,
    /// The explanation.
    pub explanation: String,
    /// Mismatches with the step's `expect` (absent when the step has none or it matched).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unmet_expectations: Vec<String>,
}

/// One rule in a replay line.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ReplayRule {
    /// The catalog metric.
    pub metric: Metric,
    /// The rule's key.
    pub name: String,
    /// The observed value.
    pub observed: Option<f64>,
    /// The threshold.
    pub threshold: f64,
    /// The ratio.
    pub ratio: Option<f64>,
    /// The proposal.
    pub proposal: Option<i32>,
    /// ok, missing or invalid.
    pub status: RuleStatus,
    /// Why missing/invalid, or a note.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

impl ReplayLine {
    fn new(at: f64, d: &Decision) -> Self {
        let at = if at.fract() == 0.0 && at < 9.0e15 {
            serde_json::Number::from(at as u64)
        } else {
            serde_json::Number::from_f64(at).unwrap_or_else(|| serde_json::Number::from(0))
        };
        Self {
            at,
            current_replicas: d.current_replicas,
            desired_replicas: d.desired_replicas,
            proposed_replicas: d.proposed_replicas,
            rules: d
                .rules
                .iter()
                .map(|r| ReplayRule {
                    metric: r.metric,
                    name: r.name.clone(),
                    observed: r.observed,
                    threshold: r.threshold,
                    ratio: r.ratio.filter(|x| x.is_finite()),
                    proposal: r.proposal,
                    status: r.status,
                    reason: r.reason.clone(),
                })
                .collect(),
            winning_rule: d.winning_rule.clone(),
            limited_by: d.limited_by,
            actuate: d.actuate,
            explanation: d.explanation.clone(),
            unmet_expectations: Vec::new(),
        }
    }
}

impl Scenario {
    /// Parses and checks a scenario from YAML or JSON.
    ///
    /// # Errors
    /// The first structural problem (with its path, including the step index), every
    /// policy problem, or an inconsistent step.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let raw: RawScenario = serde_path_to_error::deserialize(de).map_err(|e| {
            let path = e.path().to_string();
            ScenarioError::Malformed {
                path: if path == "." { "(document)".into() } else { path },
                reason: e.inner().to_string(),
            }
        })?;
        let (policy, resolved) = policy_from_value(raw.policy).map_err(|PolicyErrors(errors)| {
            // Paths of a bare spec start with `spec.`; keep them under `policy`.
            ScenarioError::Policy(PolicyErrors(errors))
        })?;
        let scenario = Self { policy, resolved, controller: raw.controller, steps: raw.steps };
        scenario.check()?;
        Ok(scenario)
    }

    fn check(&self) -> Result<(), ScenarioError> {
        if self.steps.is_empty() {
            return Err(ScenarioError::Malformed {
                path: "steps".into(),
                reason: "no steps: give at least one".into(),
            });
        }
        let rule_keys: Vec<&str> = self.resolved.rules.iter().map(|r| r.key.as_str()).collect();
        let known = |k: &str| rule_keys.contains(&k) || k.parse::<Metric>().is_ok();
        let step_err = |step: usize, field: String, reason: String| ScenarioError::Step { step, field, reason };
        let mut last_at = f64::NEG_INFINITY;
        for (i, s) in self.steps.iter().enumerate() {
            if !s.at.is_finite() || s.at < 0.0 {
                return Err(step_err(
                    i,
                    ".at".into(),
                    format!("must be a finite number of seconds >= 0, got {}", s.at),
                ));
            }
            if s.at < last_at {
                return Err(step_err(
                    i,
                    ".at".into(),
                    format!("{} is earlier than the previous step's {last_at}", s.at),
                ));
            }
            last_at = s.at;
            if i == 0 && s.current_replicas.is_none() {
                return Err(step_err(i, ".currentReplicas".into(), "required on the first step".into()));
            }
            for (field, v) in [("currentReplicas", s.current_replicas), ("statusReplicas", s.status_replicas)] {
                if let Some(v) = v
                    && v < 0
                {
                    return Err(step_err(i, format!(".{field}"), format!("must be >= 0, got {v}")));
                }
            }
            let unknown = |k: &str| {
                format!("`{k}` is neither a rule of the policy ({}) nor a catalog metric", rule_keys.join(", "))
            };
            for k in s.metrics.keys() {
                if !known(k) {
                    return Err(step_err(i, format!(".metrics.{k}"), unknown(k)));
                }
            }
            for k in s.failures.keys() {
                if !known(k) {
                    return Err(step_err(i, format!(".failures.{k}"), unknown(k)));
                }
            }
            for (j, k) in s.idle.iter().enumerate() {
                if !known(k) {
                    return Err(step_err(i, format!(".idle[{j}]"), unknown(k)));
                }
            }
            let mut names = std::collections::BTreeSet::new();
            for (j, p) in s.pods.iter().flatten().enumerate() {
                let name = p.name.clone().unwrap_or_else(|| format!("pod-{j}"));
                if !names.insert(name.clone()) {
                    return Err(step_err(i, format!(".pods[{j}].name"), format!("duplicate pod name `{name}`")));
                }
                if let Some(k) = p.metrics.keys().find(|k| !known(k)) {
                    return Err(step_err(i, format!(".pods[{j}].metrics.{k}"), unknown(k)));
                }
            }
        }
        Ok(())
    }

    /// The engine settings the scenario asks for.
    #[must_use]
    pub fn engine_config(&self) -> EngineConfig {
        let mut config = EngineConfig::default();
        if let Some(s) = self.controller.downscale_stabilization_seconds {
            config = config.with_downscale_stabilization(Duration::from_secs(s));
        }
        if let Some(s) = self.controller.sync_period_seconds {
            config = config.with_sync_period(Duration::from_secs(s));
        }
        config
    }

    /// Replays every step through a fresh engine: one decision per step. A step whose
    /// decision is applied (desired differs from current, not in observe mode) counts as
    /// a scale event for the rate policies of later steps.
    #[must_use]
    pub fn replay(&self) -> Vec<(Decision, ReplayLine)> {
        let mut engine = Engine::with_config(self.resolved.clone(), self.engine_config());
        let mut previous_desired = 0;
        let mut out = Vec::with_capacity(self.steps.len());
        for step in &self.steps {
            let now = Timestamp::from_secs_f64(step.at).unwrap_or(Timestamp::ZERO);
            let current = step.current_replicas.unwrap_or(previous_desired);
            let scale = CurrentScale { replicas: current, status_replicas: step.status_replicas };
            let metrics = step.metrics(current);
            let decision = engine.evaluate(now, scale, &metrics);
            if decision.actuate {
                engine.record_scale(now, decision.current_replicas, decision.desired_replicas);
            }
            previous_desired = decision.desired_replicas;
            let mut line = ReplayLine::new(step.at, &decision);
            if let Some(expect) = &step.expect {
                line.unmet_expectations = expect.mismatches(&decision);
            }
            out.push((decision, line));
        }
        out
    }
}

impl ScenarioStep {
    /// The step's observations as the engine's input.
    #[must_use]
    pub fn metrics(&self, current_replicas: i32) -> ScalingMetrics {
        let pods = match &self.pods {
            Some(pods) => pods
                .iter()
                .enumerate()
                .map(|(j, p)| PodMetrics {
                    name: p.name.clone().unwrap_or_else(|| format!("pod-{j}")),
                    phase: p.phase,
                    ready: p.ready,
                    deleting: p.deleting,
                    metrics: p.metrics.clone(),
                })
                .collect(),
            None => (0..current_replicas.max(0)).map(|j| PodMetrics::running(format!("pod-{j}"))).collect(),
        };
        ScalingMetrics {
            pods,
            fleet: self.metrics.clone(),
            failures: self.failures.clone(),
            idle: self.idle.iter().cloned().collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASIC: &str = r#"
policy:
  maxReplicas: 10
  scalingRules:
    - {metric: queue_length, threshold: 10}
    - {metric: latency, threshold: 1000}
steps:
  - at: 0
    currentReplicas: 3
    pods:
      - {name: p0, metrics: {queue_length: 12}}
      - {name: p1, metrics: {queue_length: 30}}
      - {name: p2, phase: Pending, ready: false}
    metrics: {latency: 1200}
  - at: 15
    pods:
      - {name: p0, metrics: {queue_length: 1}}
"#;

    #[test]
    fn replays_and_carries_desired_forward() {
        let s = Scenario::parse(BASIC).unwrap();
        let out = s.replay();
        assert_eq!(out.len(), 2);
        let (d0, line0) = &out[0];
        // queue_length: pods p0/p1 average 21 vs 10 with one unready pod -> slow path:
        // (12+30+0)/3 = 14 -> ratio 1.4 -> ceil(1.4*3) = 5. latency: 1.2 * 2 ready = 3.
        assert_eq!(d0.desired_replicas, 5);
        assert_eq!(d0.winning_rule.as_deref(), Some("queue_length"));
        assert_eq!(line0.at, serde_json::Number::from(0u64));
        // Step 2 takes current from step 1's desired, and a missing latency holds the
        // scale-down.
        assert_eq!(out[1].0.current_replicas, 5);
        assert_eq!(out[1].0.desired_replicas, 5);
        assert_eq!(out[1].0.limited_by, LimitedBy::MetricsUnavailable);
        let json = serde_json::to_string(line0).unwrap();
        assert!(json.starts_with(r#"{"at":0,"currentReplicas":3,"desiredReplicas":5"#), "{json}");
    }

    #[test]
    fn errors_name_the_step() {
        let bad = BASIC.replace("phase: Pending", "phase: Sleeping");
        let e = Scenario::parse(&bad).unwrap_err();
        assert!(e.to_string().starts_with("steps[0].pods[2].phase"), "{e}");
        let bad = BASIC.replace("at: 15", "at: -1");
        assert!(Scenario::parse(&bad).unwrap_err().to_string().starts_with("steps[1].at"));
        let bad = BASIC.replace("queue_length: 1}", "queue_lenght: 1}");
        let e = Scenario::parse(&bad).unwrap_err().to_string();
        assert!(e.starts_with("steps[1].pods[0].metrics.queue_lenght"), "{e}");
        let bad = BASIC.replace("    currentReplicas: 3\n", "");
        assert!(Scenario::parse(&bad).unwrap_err().to_string().contains("currentReplicas"));
        let bad = BASIC.replace("maxReplicas: 10", "maxReplicas: 0");
        assert!(matches!(Scenario::parse(&bad), Err(ScenarioError::Policy(_))));
    }
}
