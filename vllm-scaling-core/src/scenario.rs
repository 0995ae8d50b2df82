//! What-if scenarios: a policy and a list of evaluation steps, replayed through the
//! engine. `vllm-autoscaler replay` is a thin wrapper around this module.

use std::collections::BTreeMap;
use std::time::Duration;

use std::fmt;
use std::ops::ControlFlow;

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
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

/// The most synthetic pods a step without `pods` stands in for its replicas with: a step
/// with more replicas must list its pods.
pub const MAX_SYNTHETIC_PODS: i32 = 10_000;

impl Scenario {
    /// Parses and checks a scenario from YAML or JSON.
    ///
    /// # Errors
    /// The first structural problem (with its path, including the step index), every
    /// policy problem, or an inconsistent step.
    pub fn parse(text: &str) -> Result<Self, ScenarioError> {
        let de = serde_yaml_ng::Deserializer::from_str(text);
        let raw: RawScenario = serde_path_to_error::deserialize(de).map_err(malformed)?;
        let (policy, resolved) = policy_from_value(raw.policy).map_err(ScenarioError::Policy)?;
        let scenario = Self { policy, resolved, controller: raw.controller, steps: raw.steps };
        scenario.check()?;
        Ok(scenario)
    }

    fn check(&self) -> Result<(), ScenarioError> {
        if self.steps.is_empty() {
            return Err(no_steps());
        }
        let mut checker = StepChecker::new(&self.resolved);
        for (i, s) in self.steps.iter().enumerate() {
            checker.check(i, s)?;
        }
        Ok(())
    }

    /// The engine settings the scenario asks for.
    #[must_use]
    pub fn engine_config(&self) -> EngineConfig {
        self.controller.engine_config()
    }

    /// Replays every step through a fresh engine: one decision per step. A step whose
    /// decision is applied (desired differs from current, not in observe mode) counts as
    /// a scale event for the rate policies of later steps.
    ///
    /// # Errors
    /// A step that cannot be evaluated: one without `pods` whose replicas, carried from
    /// the previous step's decision, exceed [`MAX_SYNTHETIC_PODS`].
    pub fn replay(&self) -> Result<Vec<(Decision, ReplayLine)>, ScenarioError> {
        let mut replayer = Replayer::new(self.resolved.clone(), self.engine_config());
        self.steps.iter().map(|step| replayer.step(step)).collect()
    }

    /// Checks and replays a scenario's text step by step, calling `on_line` with each
    /// step's index, decision and output line as soon as it is evaluated, without holding
    /// the steps or the decisions: memory stays bounded by one step, whatever the number
    /// of steps. The text is read three times: the policy and controller settings, then
    /// every step is checked (so a malformed scenario calls `on_line` for no step), then
    /// replayed. JSON text is read by serde_json as it goes. A YAML text whose `steps` are
    /// a top-level block sequence (`steps:` then `- ...` items) is cut into its items, each
    /// parsed alone, so the YAML parser never holds more than one step either; other YAML
    /// shapes (a flow sequence, anchors, aliases) are parsed as one document. `on_line`
    /// returns [`ControlFlow::Break`] to stop early. Returns the number of steps replayed.
    ///
    /// # Errors
    /// As [`Scenario::parse`], and as [`Scenario::replay`] for a step that cannot be
    /// evaluated (then `on_line` has seen the steps before it).
    pub fn stream(
        text: &str,
        mut on_line: impl FnMut(usize, &Decision, ReplayLine) -> ControlFlow<()>,
    ) -> Result<usize, ScenarioError> {
        let json = looks_like_json(text);
        let yaml = if json { None } else { yaml_steps(text) };
        let header: RawHeader = match &yaml {
            Some(y) => run_pass(&y.header, false, std::marker::PhantomData)?,
            None => run_pass(text, json, std::marker::PhantomData)?,
        };
        let (_, resolved) = policy_from_value(header.policy).map_err(ScenarioError::Policy)?;
        // A block sequence starts with an item.
        if yaml.is_none() && header.steps.0 == 0 {
            return Err(no_steps());
        }
        let pass = |on_step: &mut dyn FnMut(usize, ScenarioStep) -> Result<bool, ScenarioError>| match &yaml {
            Some(y) => yaml_item_pass(y, on_step),
            None => run_pass(text, json, StepsOnly { on_step }),
        };
        let mut checker = StepChecker::new(&resolved);
        pass(&mut |i, step| checker.check(i, &step).map(|()| true))?;
        let mut replayer = Replayer::new(resolved, header.controller.engine_config());
        let mut replayed = 0usize;
        pass(&mut |i, step| {
            let (decision, line) = replayer.step(&step)?;
            replayed += 1;
            Ok(on_line(i, &decision, line).is_continue())
        })?;
        Ok(replayed)
    }
}

impl ScenarioController {
    /// The engine settings these controller settings ask for.
    #[must_use]
    pub fn engine_config(&self) -> EngineConfig {
        let mut config = EngineConfig::default();
        if let Some(s) = self.downscale_stabilization_seconds {
            config = config.with_downscale_stabilization(Duration::from_secs(s));
        }
        if let Some(s) = self.sync_period_seconds {
            config = config.with_sync_period(Duration::from_secs(s));
        }
        config
    }
}

fn no_steps() -> ScenarioError {
    ScenarioError::Malformed { path: "steps".into(), reason: "no steps: give at least one".into() }
}

fn malformed<E: fmt::Display>(e: serde_path_to_error::Error<E>) -> ScenarioError {
    let path = e.path().to_string();
    ScenarioError::Malformed {
        path: if path == "." { "(document)".into() } else { path },
        reason: e.inner().to_string(),
    }
}

/// Checks steps one at a time against the policy and the step before.
struct StepChecker {
    rule_keys: Vec<String>,
    last_at: f64,
}

impl StepChecker {
    fn new(resolved: &ResolvedPolicy) -> Self {
        Self { rule_keys: resolved.rules.iter().map(|r| r.key.clone()).collect(), last_at: f64::NEG_INFINITY }
    }

    fn check(&mut self, i: usize, s: &ScenarioStep) -> Result<(), ScenarioError> {
        let step_err = |field: &str, reason: String| ScenarioError::Step { step: i, field: field.into(), reason };
        if !s.at.is_finite() || s.at < 0.0 {
            return Err(step_err(".at", format!("must be a finite number of seconds >= 0, got {}", s.at)));
        }
        if Timestamp::from_secs_f64(s.at).is_none() {
            // Timestamps are u64 milliseconds: beyond ~1.8e16 s a time has no value.
            return Err(step_err(
                ".at",
                format!(
                    "{} s is too far in the future to represent (times are whole milliseconds below 2^64: at most {} s)",
                    s.at,
                    u64::MAX / 1000 - 1
                ),
            ));
        }
        if s.at < self.last_at {
            return Err(step_err(".at", format!("{} is earlier than the previous step's {}", s.at, self.last_at)));
        }
        self.last_at = s.at;
        if i == 0 && s.current_replicas.is_none() {
            return Err(step_err(".currentReplicas", "required on the first step".into()));
        }
        for (field, v) in [("currentReplicas", s.current_replicas), ("statusReplicas", s.status_replicas)] {
            if let Some(v) = v
                && v < 0
            {
                return Err(step_err(&format!(".{field}"), format!("must be >= 0, got {v}")));
            }
        }
        if let (None, Some(n)) = (&s.pods, s.current_replicas)
            && n > MAX_SYNTHETIC_PODS
        {
            return Err(step_err(".currentReplicas", too_many_synthetic_pods(n)));
        }
        let rule_keys = &self.rule_keys;
        let known = |k: &str| rule_keys.iter().any(|r| r == k) || k.parse::<Metric>().is_ok();
        let unknown =
            |k: &str| format!("`{k}` is neither a rule of the policy ({}) nor a catalog metric", rule_keys.join(", "));
        for k in s.metrics.keys() {
            if !known(k) {
                return Err(step_err(&format!(".metrics.{k}"), unknown(k)));
            }
        }
        for k in s.failures.keys() {
            if !known(k) {
                return Err(step_err(&format!(".failures.{k}"), unknown(k)));
            }
        }
        for (j, k) in s.idle.iter().enumerate() {
            if !known(k) {
                return Err(step_err(&format!(".idle[{j}]"), unknown(k)));
            }
        }
        let mut names = std::collections::BTreeSet::new();
        for (j, p) in s.pods.iter().flatten().enumerate() {
            let name = p.name.clone().unwrap_or_else(|| format!("pod-{j}"));
            if !names.insert(name.clone()) {
                return Err(step_err(&format!(".pods[{j}].name"), format!("duplicate pod name `{name}`")));
            }
            if let Some(k) = p.metrics.keys().find(|k| !known(k)) {
                return Err(step_err(&format!(".pods[{j}].metrics.{k}"), unknown(k)));
            }
        }
        Ok(())
    }
}

fn too_many_synthetic_pods(replicas: i32) -> String {
    format!(
        "{replicas} replicas without `pods` would stand for {replicas} synthetic pods; at most {MAX_SYNTHETIC_PODS}: \
         list the step's pods, or use fewer replicas"
    )
}

/// Replays checked steps one at a time through one engine (what [`Scenario::replay`] and
/// [`Scenario::stream`] run).
#[derive(Debug)]
pub struct Replayer {
    engine: Engine,
    previous_desired: i32,
    next_step: usize,
}

impl Replayer {
    /// A fresh engine for a policy.
    #[must_use]
    pub fn new(policy: ResolvedPolicy, config: EngineConfig) -> Self {
        Self { engine: Engine::with_config(policy, config), previous_desired: 0, next_step: 0 }
    }

    /// Evaluates the next step. A step without `currentReplicas` takes the previous
    /// step's desired replicas; an applied decision counts as a scale event.
    ///
    /// # Errors
    /// A time that cannot be represented, or a step without `pods` with more than
    /// [`MAX_SYNTHETIC_PODS`] replicas.
    pub fn step(&mut self, step: &ScenarioStep) -> Result<(Decision, ReplayLine), ScenarioError> {
        let index = self.next_step;
        self.next_step += 1;
        let now = Timestamp::from_secs_f64(step.at).ok_or_else(|| ScenarioError::Step {
            step: index,
            field: ".at".into(),
            reason: format!("{} s is not a time that can be represented", step.at),
        })?;
        let current = step.current_replicas.unwrap_or(self.previous_desired);
        let scale = CurrentScale { replicas: current, status_replicas: step.status_replicas };
        let metrics = step.metrics(current).map_err(|reason| ScenarioError::Step {
            step: index,
            field: if step.current_replicas.is_some() { ".currentReplicas".into() } else { String::new() },
            reason: if step.current_replicas.is_some() {
                reason
            } else {
                format!("the previous step's desired replicas carry over: {reason}")
            },
        })?;
        let decision = self.engine.evaluate(now, scale, &metrics);
        if decision.actuate {
            self.engine.record_scale(now, decision.current_replicas, decision.desired_replicas);
        }
        self.previous_desired = decision.desired_replicas;
        let mut line = ReplayLine::new(step.at, &decision);
        if let Some(expect) = &step.expect {
            line.unmet_expectations = expect.mismatches(&decision);
        }
        Ok((decision, line))
    }
}

impl ScenarioStep {
    /// The step's observations as the engine's input.
    ///
    /// # Errors
    /// Without `pods`, when `current_replicas` exceeds [`MAX_SYNTHETIC_PODS`].
    pub fn metrics(&self, current_replicas: i32) -> Result<ScalingMetrics, String> {
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
            None if current_replicas > MAX_SYNTHETIC_PODS => return Err(too_many_synthetic_pods(current_replicas)),
            None => (0..current_replicas.max(0)).map(|j| PodMetrics::running(format!("pod-{j}"))).collect(),
        };
        Ok(ScalingMetrics {
            pods,
            fleet: self.metrics.clone(),
            failures: self.failures.clone(),
            idle: self.idle.iter().cloned().collect(),
        })
    }
}

// ---------------------------------------------------------------------------------------
// Streaming: the text is deserialized once per pass, steps one at a time.

/// Pass one: everything but the steps, which are only counted.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct RawHeader {
    policy: serde_yaml_ng::Value,
    #[serde(default)]
    controller: ScenarioController,
    steps: StepCount,
}

/// The number of items of a sequence, each skipped.
struct StepCount(usize);

impl<'de> Deserialize<'de> for StepCount {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = StepCount;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a sequence of steps")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StepCount, A::Error> {
                let mut n = 0;
                while seq.next_element::<de::IgnoredAny>()?.is_some() {
                    n += 1;
                }
                Ok(StepCount(n))
            }
        }
        d.deserialize_seq(V)
    }
}

/// Passes two and three: the document's `steps`, handed to `on_step` one at a time
/// (which returns whether to go on); every other key is skipped.
struct StepsOnly<'a, F: ?Sized> {
    on_step: &'a mut F,
}

/// Why a pass stopped inside the deserializer: a step error, or `on_step` asked to stop.
const STOPPED: &str = "\u{0}replay stopped";

/// The step error of the pass in progress (a deserializer error can only carry text).
struct PassState<'a, F: ?Sized> {
    on_step: &'a mut F,
    failed: Option<ScenarioError>,
}

impl<'de, F> DeserializeSeed<'de> for &mut PassState<'_, F>
where
    F: FnMut(usize, ScenarioStep) -> Result<bool, ScenarioError> + ?Sized,
{
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, F> Visitor<'de> for &mut PassState<'_, F>
where
    F: FnMut(usize, ScenarioStep) -> Result<bool, ScenarioError> + ?Sized,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a scenario")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == "steps" {
                map.next_value_seed(StepSeq(&mut *self))?;
            } else {
                map.next_value::<de::IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct StepSeq<'s, 'a, F: ?Sized>(&'s mut PassState<'a, F>);

impl<'de, F> DeserializeSeed<'de> for StepSeq<'_, '_, F>
where
    F: FnMut(usize, ScenarioStep) -> Result<bool, ScenarioError> + ?Sized,
{
    type Value = ();

    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F> Visitor<'de> for StepSeq<'_, '_, F>
where
    F: FnMut(usize, ScenarioStep) -> Result<bool, ScenarioError> + ?Sized,
{
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a sequence of steps")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        while let Some(step) = seq.next_element::<ScenarioStep>()? {
            match (self.0.on_step)(i, step) {
                Ok(true) => i += 1,
                Ok(false) => return Err(de::Error::custom(STOPPED)),
                Err(e) => {
                    self.0.failed = Some(e);
                    return Err(de::Error::custom(STOPPED));
                }
            }
        }
        Ok(())
    }
}

/// A deserialization pass that yields a value.
trait Pass {
    type Output;
    fn run<'de, D: de::Deserializer<'de>>(self, d: D) -> Result<Self::Output, ScenarioError>;
}

impl<T: de::DeserializeOwned> Pass for std::marker::PhantomData<T> {
    type Output = T;
    fn run<'de, D: de::Deserializer<'de>>(self, d: D) -> Result<T, ScenarioError> {
        serde_path_to_error::deserialize(d).map_err(malformed)
    }
}

impl<F> Pass for StepsOnly<'_, F>
where
    F: FnMut(usize, ScenarioStep) -> Result<bool, ScenarioError> + ?Sized,
{
    type Output = ();
    fn run<'de, D: de::Deserializer<'de>>(self, d: D) -> Result<(), ScenarioError> {
        let mut state = PassState { on_step: self.on_step, failed: None };
        let mut track = serde_path_to_error::Track::new();
        let result = (&mut state).deserialize(serde_path_to_error::Deserializer::new(d, &mut track));
        if let Some(e) = state.failed {
            return Err(e);
        }
        match result {
            Ok(()) => Ok(()),
            Err(e) if e.to_string().contains(STOPPED) => Ok(()),
            Err(e) => Err(malformed(serde_path_to_error::Error::new(track.path(), e))),
        }
    }
}

// ---------------------------------------------------------------------------------------
// YAML steps one at a time: the YAML parser holds a whole document's events, so a
// top-level block sequence `steps:` is cut into its items, each parsed on its own.

/// A YAML text whose `steps` are a top-level block sequence.
struct YamlSteps<'a> {
    /// The text with the sequence replaced by `[]` (the policy and controller settings).
    header: String,
    /// The sequence's text: its items, from the first `-`.
    region: &'a str,
    /// Lines before the region.
    region_line: usize,
    /// The items' indentation.
    indent: usize,
}

fn is_blank_or_comment(line: &str) -> bool {
    let t = line.trim_start_matches(' ');
    t.trim_end().is_empty() || t.starts_with('#')
}

fn indentation(line: &str) -> usize {
    line.len() - line.trim_start_matches(' ').len()
}

/// Whether `line` starts a block sequence item at indentation `d`.
fn starts_item(line: &str, d: usize) -> bool {
    indentation(line) == d && {
        let rest = line[d..].trim_end_matches(['\n', '\r']);
        rest == "-" || rest.starts_with("- ")
    }
}

/// The top-level `steps:` block sequence of a YAML text; `None` for any other shape (a
/// flow sequence, anchors or aliases, tabs), which is then parsed as one document.
fn yaml_steps(text: &str) -> Option<YamlSteps<'_>> {
    let mut lines = text.split_inclusive('\n').scan(0usize, |offset, line| {
        let at = *offset;
        *offset += line.len();
        Some((at, line))
    });
    let mut line_no = 0usize;
    let key_at = loop {
        let (at, line) = lines.next()?;
        line_no += 1;
        let is_key = line.strip_prefix("steps:").is_some_and(|rest| {
            let rest = rest.trim_start_matches(' ').trim_end_matches(['\n', '\r']);
            rest.is_empty() || rest.starts_with('#')
        });
        if is_key {
            break at;
        }
    };
    let (region_start, first) = loop {
        let (at, line) = lines.next()?;
        line_no += 1;
        if !is_blank_or_comment(line) {
            break (at, line);
        }
    };
    let region_line = line_no - 1;
    let indent = indentation(first);
    if !starts_item(first, indent) {
        return None;
    }
    let region_end = lines
        .find(|(_, line)| !is_blank_or_comment(line) && !starts_item(line, indent) && indentation(line) <= indent)
        .map_or(text.len(), |(at, _)| at);
    let region = &text[region_start..region_end];
    if region.contains(['&', '*', '\t']) {
        return None;
    }
    let mut header = String::with_capacity(text.len() - region.len() + 12);
    header.push_str(&text[..key_at]);
    header.push_str("steps: []\n");
    header.push_str(&text[region_end..]);
    Some(YamlSteps { header, region, region_line, indent })
}

impl<'a> YamlSteps<'a> {
    /// Each item's text (from its `-`) and the number of lines before it in the text.
    fn items(&self) -> impl Iterator<Item = (&'a str, usize)> + 'a {
        let indent = self.indent;
        let mut rest = self.region;
        let mut line = self.region_line;
        std::iter::from_fn(move || {
            if rest.is_empty() {
                return None;
            }
            // The item runs to the next line that starts an item at the same indentation.
            let mut end = 0;
            let mut lines = 0;
            for (i, l) in rest.split_inclusive('\n').enumerate() {
                if i > 0 && starts_item(l, indent) {
                    break;
                }
                end += l.len();
                lines += 1;
            }
            let item = &rest[..end];
            rest = &rest[end..];
            let before = line;
            line += lines;
            Some((item, before))
        })
    }
}

/// Parses and hands on each item of a [`YamlSteps`] (a step each), with paths and line
/// numbers as in the whole document.
fn yaml_item_pass(
    steps: &YamlSteps<'_>,
    on_step: &mut dyn FnMut(usize, ScenarioStep) -> Result<bool, ScenarioError>,
) -> Result<(), ScenarioError> {
    for (i, (item, lines_before)) in steps.items().enumerate() {
        let de = serde_yaml_ng::Deserializer::from_str(item);
        let one: Vec<ScenarioStep> = serde_path_to_error::deserialize(de).map_err(|e| {
            let inner = e.inner();
            let mut reason = inner.to_string();
            if let Some(at) = inner.location() {
                reason = reason.replace(
                    &format!("at line {} column {}", at.line(), at.column()),
                    &format!("at line {} column {}", at.line() + lines_before, at.column()),
                );
            }
            // The parser's message starts with its own path, here within the item.
            if let Some(rest) = reason.strip_prefix(".[0]").or_else(|| reason.strip_prefix("[0]")) {
                reason = format!("steps[{i}]{rest}");
            }
            let path = e.path().to_string();
            let under = path.strip_prefix("[0]").unwrap_or_default();
            ScenarioError::Malformed { path: format!("steps[{i}]{under}"), reason }
        })?;
        // An item is one sequence entry, so one step.
        for step in one {
            if !on_step(i, step)? {
                return Ok(());
            }
        }
    }
    Ok(())
}

/// JSON text is read by serde_json, which streams; anything else by the YAML parser.
fn looks_like_json(text: &str) -> bool {
    let mut rest = text.trim_start().chars();
    rest.next() == Some('{') && rest.as_str().trim_start().starts_with('"')
}

fn run_pass<P: Pass>(text: &str, json: bool, pass: P) -> Result<P::Output, ScenarioError> {
    if json {
        let mut de = serde_json::Deserializer::from_str(text);
        let out = pass.run(&mut de)?;
        de.end().map_err(|e| ScenarioError::Malformed { path: "(document)".into(), reason: e.to_string() })?;
        Ok(out)
    } else {
        pass.run(serde_yaml_ng::Deserializer::from_str(text))
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
        let out = s.replay().unwrap();
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

    #[test]
    fn controller_downscale_stabilization_fills_an_unset_behavior_window() {
        let text = |controller: &str| {
            format!(
                "policy:\n  maxReplicas: 100\n  tolerance: 0\n  scalingRules: [{{metric: queue_length, threshold: 10}}]\n  behavior: {{scaleUp: {{stabilizationWindowSeconds: 0}}}}\n{controller}steps:\n  - {{at: 0, currentReplicas: 8, metrics: {{queue_length: 80}}}}\n  - {{at: 45, metrics: {{queue_length: 20}}}}\n"
            )
        };
        let desired = |t: &str| {
            Scenario::parse(t).unwrap().replay().unwrap().iter().map(|(d, _)| d.desired_replicas).collect::<Vec<_>>()
        };
        // 30 s: the recommendation of 8 at t=0 is out of the window at t=45.
        assert_eq!(desired(&text("controller: {downscaleStabilizationSeconds: 30}\n")), vec![8, 2]);
        // The default, 300 s, holds it.
        assert_eq!(desired(&text("")), vec![8, 8]);
    }

    #[test]
    fn synthetic_pods_are_bounded_with_the_step_named() {
        let policy = "policy: {maxReplicas: 2147483647, scalingRules: [{metric: queue_length, threshold: 10}], behavior: {scaleUp: {policies: [{type: Percent, value: 10000000, periodSeconds: 15}]}}}\n";
        // A step's own currentReplicas: refused when the scenario is checked.
        let text =
            format!("{policy}steps:\n  - {{at: 0, currentReplicas: 1}}\n  - {{at: 15, currentReplicas: 2147483647}}\n");
        let e = Scenario::parse(&text).unwrap_err().to_string();
        assert!(
            e.starts_with("steps[1].currentReplicas: 2147483647 replicas without `pods`") && e.contains("10000"),
            "{e}"
        );
        let mut lines = 0;
        let e = Scenario::stream(&text, |_, _, _| {
            lines += 1;
            ControlFlow::Continue(())
        })
        .unwrap_err()
        .to_string();
        assert!(e.starts_with("steps[1].currentReplicas"), "{e}");
        assert_eq!(lines, 0, "a scenario that fails its check prints nothing");
        // Listing the pods is fine (the step has as many pods as it lists).
        let listed = format!("{policy}steps:\n  - {{at: 0, currentReplicas: 2147483647, pods: [{{name: a}}]}}\n");
        assert!(Scenario::parse(&listed).unwrap().replay().is_ok());
        // Replicas carried from a decision: refused when the step is replayed.
        let carried = format!(
            "{policy}steps:\n  - {{at: 0, currentReplicas: 1, pods: [{{name: a, metrics: {{queue_length: 200000}}}}]}}\n  - {{at: 15}}\n"
        );
        let e = Scenario::parse(&carried).unwrap().replay().unwrap_err().to_string();
        assert!(e.starts_with("steps[1]: the previous step's desired replicas carry over: 20000 replicas"), "{e}");
        let mut seen = Vec::new();
        let e = Scenario::stream(&carried, |i, d, _| {
            seen.push((i, d.desired_replicas));
            ControlFlow::Continue(())
        })
        .unwrap_err();
        assert!(e.to_string().starts_with("steps[1]:"), "{e}");
        assert_eq!(seen, vec![(0, 20000)]);
    }

    #[test]
    fn unrepresentable_times_are_refused() {
        for at in ["1.9e16", "1e300"] {
            let text = BASIC.replace("at: 15", &format!("at: {at}"));
            let e = Scenario::parse(&text).unwrap_err().to_string();
            assert!(e.starts_with("steps[1].at:") && e.contains("too far in the future"), "{at}: {e}");
        }
        // The largest representable time still replays, as itself.
        let text = BASIC.replace("at: 15", "at: 1.8e16");
        let out = Scenario::parse(&text).unwrap().replay().unwrap();
        assert_eq!(out[1].1.at.as_f64(), Some(1.8e16));
    }

    #[test]
    fn stream_matches_replay_for_yaml_and_json_and_stops_on_request() {
        let whole = Scenario::parse(BASIC).unwrap().replay().unwrap();
        let mut streamed = Vec::new();
        let n = Scenario::stream(BASIC, |i, _, line| {
            streamed.push((i, line));
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(n, 2);
        assert_eq!(streamed, whole.iter().map(|(_, l)| l.clone()).enumerate().collect::<Vec<_>>());
        // The same scenario as JSON, with the steps before the policy and the controller.
        let value: serde_json::Value = serde_yaml_ng::from_str(BASIC).unwrap();
        let json = format!(
            "{{\"steps\": {}, \"controller\": {{\"syncPeriodSeconds\": 15}}, \"policy\": {}}}",
            value["steps"], value["policy"]
        );
        assert!(looks_like_json(&json));
        let mut from_json = Vec::new();
        Scenario::stream(&json, |_, _, line| {
            from_json.push(line);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(from_json, whole.iter().map(|(_, l)| l.clone()).collect::<Vec<_>>());
        // Errors keep their paths in both forms, and nothing is replayed.
        let bad = json.replace("\"Pending\"", "\"Sleeping\"");
        let e = Scenario::stream(&bad, |_, _, _| panic!("nothing is replayed")).unwrap_err().to_string();
        assert!(e.starts_with("steps[0].pods[2].phase"), "{e}");
        let e = Scenario::stream(
            "policy: {maxReplicas: 1, scalingRules: [{metric: queue_length, threshold: 1}]}\nsteps: []\n",
            |_, _, _| ControlFlow::Continue(()),
        )
        .unwrap_err();
        assert_eq!(e.to_string(), "steps: no steps: give at least one");
        // Break stops after the first line.
        let n = Scenario::stream(BASIC, |_, _, _| ControlFlow::Break(())).unwrap();
        assert_eq!(n, 1);
    }

    #[test]
    fn yaml_block_steps_are_cut_into_items_with_paths_and_lines_kept() {
        let text = "# a scenario\npolicy:\n  maxReplicas: 10\n  scalingRules:\n    - {metric: queue_length, threshold: 10}\nsteps:   # the steps\n\n- at: 0\n  currentReplicas: 3\n  # a comment\n  metrics: {queue_length: 60}\n-   at: 15\n    metrics:\n      queue_length: 5\n- {at: 30}\ncontroller: {syncPeriodSeconds: 15}\n";
        let y = yaml_steps(text).expect("a block sequence");
        let items: Vec<(&str, usize)> = y.items().collect();
        assert_eq!(items.len(), 3, "{items:?}");
        assert_eq!(items[1], ("-   at: 15\n    metrics:\n      queue_length: 5\n", 11));
        assert_eq!(items[2].0, "- {at: 30}\n");
        assert!(y.header.contains("steps: []\ncontroller:"), "{}", y.header);
        // The items give what the whole document gives.
        let whole: Vec<ReplayLine> =
            Scenario::parse(text).unwrap().replay().unwrap().into_iter().map(|(_, l)| l).collect();
        let mut streamed = Vec::new();
        Scenario::stream(text, |_, _, l| {
            streamed.push(l);
            ControlFlow::Continue(())
        })
        .unwrap();
        assert_eq!(streamed, whole);
        // Indented items, as BASIC has them.
        assert!(yaml_steps(BASIC).is_some());
        // An error inside an item names the step and the line in the whole text.
        let bad = text.replace("queue_length: 5", "queue_length: five");
        let e = Scenario::stream(&bad, |_, _, _| ControlFlow::Continue(())).unwrap_err().to_string();
        assert!(e.starts_with("steps[1].metrics.queue_length: "), "{e}");
        let whole_e = Scenario::parse(&bad).unwrap_err().to_string();
        assert_eq!(e, whole_e);
        // Other shapes are parsed whole.
        for other in [
            "policy: {maxReplicas: 1, scalingRules: [{metric: queue_length, threshold: 1}]}\nsteps: [{at: 0, currentReplicas: 1}]\n",
            "policy: {maxReplicas: 1, scalingRules: [{metric: queue_length, threshold: 1}]}\nsteps:\n  - &s {at: 0, currentReplicas: 1}\n  - *s\n",
        ] {
            assert!(yaml_steps(other).is_none(), "{other}");
            assert!(Scenario::stream(other, |_, _, _| ControlFlow::Continue(())).is_ok(), "{other}");
        }
    }
}
