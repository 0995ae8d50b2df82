//! The controller's own Prometheus metrics (`/metrics`), with `prometheus-client`.
//!
//! Every series is prefixed `vllm_autoscaler_`. The PrometheusRule and the Grafana
//! dashboard in `deploy/` query these names; a test checks them with `promtool`.

use std::sync::atomic::AtomicU64;

use std::fmt::Write as _;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue, LabelValueEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Labels naming a policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct PolicyLabels {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub policy: String,
}

/// Labels naming a rule of a policy.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct RuleLabels {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub policy: String,
    /// The rule's key.
    pub rule: String,
    /// The catalog metric.
    pub metric: String,
}

/// The direction of a decision or rescale.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
pub enum Direction {
    /// More replicas.
    Up,
    /// Fewer replicas.
    Down,
    /// No change.
    Hold,
}

impl Direction {
    /// The label value: `up`, `down` or `hold`.
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Down => "down",
            Self::Hold => "hold",
        }
    }

    /// The direction from `from` to `to`.
    #[must_use]
    pub fn of(from: i32, to: i32) -> Self {
        match to.cmp(&from) {
            std::cmp::Ordering::Greater => Self::Up,
            std::cmp::Ordering::Less => Self::Down,
            std::cmp::Ordering::Equal => Self::Hold,
        }
    }
}

impl EncodeLabelValue for Direction {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Labels of per-direction series.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct DirectionLabels {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub policy: String,
    /// `up`, `down` or `hold`.
    pub direction: Direction,
}

/// What failed.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The policy is invalid.
    InvalidPolicy,
    /// The target could not be resolved (missing, no scale subresource, model ambiguous).
    Target,
    /// Another autoscaler targets the same object.
    ConflictingAutoscaler,
    /// Reading the scale subresource failed.
    GetScale,
    /// Listing the target's pods failed.
    ListPods,
    /// A rule's metric was missing or invalid.
    GetMetrics,
    /// Writing the scale subresource failed.
    UpdateScale,
    /// Writing the policy status failed.
    Status,
    /// Publishing an event failed.
    Event,
}

impl ErrorKind {
    /// Every kind.
    pub const ALL: [Self; 9] = [
        Self::InvalidPolicy,
        Self::Target,
        Self::ConflictingAutoscaler,
        Self::GetScale,
        Self::ListPods,
        Self::GetMetrics,
        Self::UpdateScale,
        Self::Status,
        Self::Event,
    ];

    /// The label value (`invalid_policy`, `target`, `conflict`, `get_scale`, `list_pods`,
    /// `get_metrics`, `update_scale`, `status`, `event`).
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::InvalidPolicy => "invalid_policy",
            Self::Target => "target",
            Self::ConflictingAutoscaler => "conflict",
            Self::GetScale => "get_scale",
            Self::ListPods => "list_pods",
            Self::GetMetrics => "get_metrics",
            Self::UpdateScale => "update_scale",
            Self::Status => "status",
            Self::Event => "event",
        }
    }
}

impl EncodeLabelValue for ErrorKind {
    fn encode(&self, encoder: &mut LabelValueEncoder<'_>) -> Result<(), std::fmt::Error> {
        encoder.write_str(self.as_str())
    }
}

/// Labels of the error counter.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ErrorLabels {
    /// The policy's namespace.
    pub namespace: String,
    /// The policy's name.
    pub policy: String,
    /// What failed.
    pub kind: ErrorKind,
}

/// Labels of the time-to-scale histogram.
#[derive(Clone, Debug, Hash, PartialEq, Eq, PartialOrd, Ord, EncodeLabelSet)]
pub struct ScaleDirectionLabels {
    /// `up` or `down`.
    pub direction: Direction,
}

type GaugeF64 = Gauge<f64, AtomicU64>;

/// The controller's metrics and the registry that exposes them.
#[derive(Debug)]
pub struct ControllerMetrics {
    registry: Registry,
    /// Evaluations by direction (`vllm_autoscaler_decisions_total`).
    pub decisions: Family<DirectionLabels, Counter>,
    /// The last desired replicas (`vllm_autoscaler_desired_replicas`).
    pub desired_replicas: Family<PolicyLabels, Gauge>,
    /// The target's replicas at the last evaluation (`vllm_autoscaler_current_replicas`).
    pub current_replicas: Family<PolicyLabels, Gauge>,
    /// The policy's `minReplicas` (`vllm_autoscaler_min_replicas`).
    pub min_replicas: Family<PolicyLabels, Gauge>,
    /// The policy's `maxReplicas` (`vllm_autoscaler_max_replicas`).
    pub max_replicas: Family<PolicyLabels, Gauge>,
    /// The scale-down stabilization window in seconds
    /// (`vllm_autoscaler_scale_down_stabilization_seconds`).
    pub scale_down_stabilization_seconds: Family<PolicyLabels, Gauge>,
    /// Each rule's observed value (`vllm_autoscaler_rule_observed`).
    pub rule_observed: Family<RuleLabels, GaugeF64>,
    /// Each rule's threshold (`vllm_autoscaler_rule_threshold`).
    pub rule_threshold: Family<RuleLabels, GaugeF64>,
    /// Each rule's proposal (`vllm_autoscaler_rule_proposal`).
    pub rule_proposal: Family<RuleLabels, Gauge>,
    /// How long each rule has been missing or invalid without a break, 0 when it has a value
    /// (`vllm_autoscaler_rule_missing_seconds`).
    pub rule_missing_seconds: Family<RuleLabels, GaugeF64>,
    /// Rescales written (`vllm_autoscaler_scale_events_total`).
    pub scale_events: Family<DirectionLabels, Counter>,
    /// Rescales whose direction differs from the previous rescale's
    /// (`vllm_autoscaler_direction_changes_total`): the flapping alert counts these.
    pub direction_changes: Family<PolicyLabels, Counter>,
    /// Errors by kind (`vllm_autoscaler_errors_total`).
    pub errors: Family<ErrorLabels, Counter>,
    /// Reconcile wall time (`vllm_autoscaler_reconcile_duration_seconds`).
    pub reconcile_duration: Histogram,
    /// Lateness of each evaluation against its scheduled time
    /// (`vllm_autoscaler_evaluation_delay_seconds`): shows whether the controller keeps
    /// its sync period.
    pub evaluation_delay: Histogram,
    /// From a rescale decision to the new replica count being ready
    /// (`vllm_autoscaler_time_to_scale_seconds`), observed at the evaluation that sees it.
    pub time_to_scale: Family<ScaleDirectionLabels, Histogram>,
    /// 1 while this replica holds the leader lease (`vllm_autoscaler_leader`).
    pub leader: Gauge,
    /// Policies this controller knows (`vllm_autoscaler_policies`).
    pub policies: Gauge,
    /// Status writes made (`vllm_autoscaler_status_writes_total`).
    pub status_writes: Counter,
    /// Evaluations whose status was not written because nothing a user reads or a restart
    /// needs changed (`vllm_autoscaler_status_writes_skipped_total`).
    pub status_writes_skipped: Counter,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl ControllerMetrics {
    /// Fresh metrics, registered.
    #[must_use]
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("vllm_autoscaler");
        let m = Self {
            decisions: Family::default(),
            desired_replicas: Family::default(),
            current_replicas: Family::default(),
            min_replicas: Family::default(),
            max_replicas: Family::default(),
            scale_down_stabilization_seconds: Family::default(),
            rule_observed: Family::default(),
            rule_threshold: Family::default(),
            rule_proposal: Family::default(),
            rule_missing_seconds: Family::default(),
            scale_events: Family::default(),
            direction_changes: Family::default(),
            errors: Family::default(),
            reconcile_duration: Histogram::new([
                0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
            ]),
            evaluation_delay: Histogram::new([0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0]),
            time_to_scale: Family::new_with_constructor(|| {
                Histogram::new([1.0, 5.0, 10.0, 15.0, 30.0, 60.0, 120.0, 180.0, 300.0, 600.0, 900.0, 1800.0])
            }),
            leader: Gauge::default(),
            policies: Gauge::default(),
            status_writes: Counter::default(),
            status_writes_skipped: Counter::default(),
            registry: Registry::default(),
        };
        registry.register("decisions", "Policy evaluations by direction", m.decisions.clone());
        registry.register("desired_replicas", "Replicas the policy last decided on", m.desired_replicas.clone());
        registry.register(
            "current_replicas",
            "The target's replicas at the last evaluation",
            m.current_replicas.clone(),
        );
        registry.register("min_replicas", "The policy's minReplicas", m.min_replicas.clone());
        registry.register("max_replicas", "The policy's maxReplicas", m.max_replicas.clone());
        registry.register(
            "scale_down_stabilization_seconds",
            "The policy's scale-down stabilization window",
            m.scale_down_stabilization_seconds.clone(),
        );
        registry.register("rule_observed", "Each rule's observed value in its metric's unit", m.rule_observed.clone());
        registry.register("rule_threshold", "Each rule's threshold in its metric's unit", m.rule_threshold.clone());
        registry.register("rule_proposal", "The replicas each rule alone proposes", m.rule_proposal.clone());
        registry.register(
            "rule_missing_seconds",
            "How long each rule has had no usable value (0 while it has one)",
            m.rule_missing_seconds.clone(),
        );
        registry.register("scale_events", "Rescales written to the scale subresource", m.scale_events.clone());
        registry.register(
            "direction_changes",
            "Rescales in the opposite direction of the previous rescale",
            m.direction_changes.clone(),
        );
        registry.register("errors", "Failures by kind", m.errors.clone());
        registry.register(
            "reconcile_duration_seconds",
            "Wall time of one policy evaluation",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "evaluation_delay_seconds",
            "How late each evaluation ran against its scheduled time",
            m.evaluation_delay.clone(),
        );
        registry.register(
            "time_to_scale_seconds",
            "From a rescale decision to the new replica count being ready",
            m.time_to_scale.clone(),
        );
        registry.register("leader", "1 while this replica holds the leader lease", m.leader.clone());
        registry.register("policies", "Policies this controller tracks", m.policies.clone());
        registry.register("status_writes", "Policy status writes", m.status_writes.clone());
        registry.register(
            "status_writes_skipped",
            "Evaluations whose status was left unwritten: nothing a user reads or a restart needs changed",
            m.status_writes_skipped.clone(),
        );
        // Present from the start, so dashboards and alerts find the families.
        for direction in [Direction::Up, Direction::Down] {
            let _ = m.time_to_scale.get_or_create(&ScaleDirectionLabels { direction });
        }
        Self { registry, ..m }
    }

    /// The metrics in the OpenMetrics text format.
    #[must_use]
    pub fn encode(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts an error.
    pub fn error(&self, namespace: &str, policy: &str, kind: ErrorKind) {
        self.errors
            .get_or_create(&ErrorLabels { namespace: namespace.to_owned(), policy: policy.to_owned(), kind })
            .inc();
    }

    /// Creates the counters the scale-failure and flapping alerts watch at 0, so `increase()` sees the
    /// first failure (a counter that appears at 1 has no increase to Prometheus). The
    /// other alerts fire on repeated events, which a counter created on first use still
    /// shows; creating every series of every policy up front would cost memory at 10,000
    /// policies.
    pub fn touch_policy(&self, namespace: &str, policy: &str) {
        let labels =
            ErrorLabels { namespace: namespace.to_owned(), policy: policy.to_owned(), kind: ErrorKind::UpdateScale };
        let _ = self.errors.get_or_create(&labels);
        // And the flapping alert's counter, so the series exists before the first reversal.
        let _ =
            self.direction_changes.get_or_create(&PolicyLabels { namespace: labels.namespace, policy: labels.policy });
    }

    /// Drops every per-policy series of a deleted policy (its rule series given by `rules`).
    pub fn forget_policy(&self, namespace: &str, policy: &str, rules: &[(String, String)]) {
        let p = PolicyLabels { namespace: namespace.to_owned(), policy: policy.to_owned() };
        for f in [
            &self.desired_replicas,
            &self.current_replicas,
            &self.min_replicas,
            &self.max_replicas,
            &self.scale_down_stabilization_seconds,
        ] {
            f.remove(&p);
        }
        self.direction_changes.remove(&p);
        for kind in ErrorKind::ALL {
            self.errors.remove(&ErrorLabels { namespace: p.namespace.clone(), policy: p.policy.clone(), kind });
        }
        for direction in [Direction::Up, Direction::Down, Direction::Hold] {
            let d = DirectionLabels { namespace: p.namespace.clone(), policy: p.policy.clone(), direction };
            self.decisions.remove(&d);
            self.scale_events.remove(&d);
        }
        for (rule, metric) in rules {
            let r = RuleLabels {
                namespace: p.namespace.clone(),
                policy: p.policy.clone(),
                rule: rule.clone(),
                metric: metric.clone(),
            };
            self.rule_observed.remove(&r);
            self.rule_threshold.remove(&r);
            self.rule_proposal.remove(&r);
            self.rule_missing_seconds.remove(&r);
        }
    }
}
