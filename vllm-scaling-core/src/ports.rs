//! The three ports (`GetScalingMetrics`, `AdjustReplicas`, `GetScalingPolicy`), in-memory
//! implementations of each, and [`reconcile`], which runs one step through them.
//!
//! The engine never calls a port: a driver gathers inputs, calls the engine and applies
//! its output. Adapter crates implement one port each.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::decision::Decision;
use crate::engine::Engine;
use crate::observation::{CurrentScale, PodPhase, ScalingMetrics};
use crate::policy::{PolicyErrors, ResolvedRule, ScaleTargetRef, VllmScalingPolicy};
use crate::time::Timestamp;

/// Names a policy's target in a namespace: the unit every port works on.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TargetId {
    /// The namespace (empty outside Kubernetes).
    pub namespace: String,
    /// The policy's name (or, for [`GetScalingPolicy`] lookups by model, the model id).
    pub name: String,
}

impl TargetId {
    /// A target id.
    #[must_use]
    pub fn new(namespace: impl Into<String>, name: impl Into<String>) -> Self {
        Self { namespace: namespace.into(), name: name.into() }
    }
}

impl fmt::Display for TargetId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.namespace.is_empty() { f.write_str(&self.name) } else { write!(f, "{}/{}", self.namespace, self.name) }
    }
}

/// A pod of the target as the cluster sees it, before any metric is read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PodInfo {
    /// The pod's name.
    pub name: String,
    /// Its phase.
    pub phase: PodPhase,
    /// Whether its Ready condition is true.
    pub ready: bool,
    /// Whether it is being deleted.
    pub deleting: bool,
    /// The URL of its metrics endpoint (`http://10.0.0.7:8000/metrics`), when known.
    pub metrics_url: Option<String>,
    /// Why the pod has no `metrics_url` although it is to be scraped: its annotations or
    /// status give no usable endpoint (a scheme other than http/https, a bad port or path).
    /// Reported as the pod's failure, so the status says what to fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_url_error: Option<String>,
}

/// What a [`GetScalingMetrics`] backend is asked for.
#[derive(Clone, Debug, PartialEq)]
pub struct MetricsRequest {
    /// The target.
    pub target: TargetId,
    /// The workload being scaled, if known.
    pub scale_target_ref: Option<ScaleTargetRef>,
    /// The rules whose values are wanted.
    pub rules: Vec<ResolvedRule>,
    /// The target's pods (may be empty when the backend discovers them itself).
    pub pods: Vec<PodInfo>,
}

/// Reads the metrics a policy's rules need.
///
/// Per-rule failures go into [`ScalingMetrics::failures`]; an `Err` means nothing at all
/// could be read (every rule is then treated as missing).
#[async_trait]
pub trait GetScalingMetrics: Send + Sync {
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reads the values for `request` as of `now`.
    async fn get_scaling_metrics(
        &self,
        request: &MetricsRequest,
        now: Timestamp,
    ) -> Result<ScalingMetrics, Self::Error>;
}

/// Reads and writes a target's replica count through its scale subresource.
#[async_trait]
pub trait AdjustReplicas: Send + Sync {
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// Reads the target's current scale.
    async fn get_scale(
        &self,
        target: &TargetId,
        scale_ref: Option<&ScaleTargetRef>,
    ) -> Result<CurrentScale, Self::Error>;

    /// Sets the target's replicas.
    async fn adjust_replicas(
        &self,
        target: &TargetId,
        scale_ref: Option<&ScaleTargetRef>,
        replicas: i32,
    ) -> Result<(), Self::Error>;
}

/// Finds the policy for a target (by policy name, or by served model id).
#[async_trait]
pub trait GetScalingPolicy: Send + Sync {
    /// The backend's error.
    type Error: std::error::Error + Send + Sync + 'static;

    /// The policy, or `None` if there is none.
    async fn get_scaling_policy(&self, target: &TargetId) -> Result<Option<VllmScalingPolicy>, Self::Error>;
}

/// Why a [`reconcile`] step failed before or after deciding.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ReconcileError<P, A>
where
    P: std::error::Error + 'static,
    A: std::error::Error + 'static,
{
    /// The policy could not be read.
    #[error("reading the policy for {target} failed")]
    GetPolicy {
        /// The target.
        target: TargetId,
        /// The backend's error.
        #[source]
        source: P,
    },
    /// There is no policy for the target.
    #[error("no policy for {0}")]
    NoPolicy(TargetId),
    /// The policy is invalid.
    #[error("the policy for {target} is invalid: {errors}")]
    InvalidPolicy {
        /// The target.
        target: TargetId,
        /// What is wrong.
        errors: PolicyErrors,
    },
    /// The target's scale could not be read.
    #[error("reading the scale of {target} failed")]
    GetScale {
        /// The target.
        target: TargetId,
        /// The backend's error.
        #[source]
        source: A,
    },
    /// The decision could not be applied; replicas are unchanged.
    #[error("scaling {target} to {replicas} failed")]
    Adjust {
        /// The target.
        target: TargetId,
        /// The replicas that were to be set.
        replicas: i32,
        /// The decision that was not applied.
        decision: Box<Decision>,
        /// The backend's error.
        #[source]
        source: A,
    },
}

/// Runs one reconcile step: read the policy, the scale and the metrics, ask the engine,
/// and apply the decision (unless the policy observes only).
///
/// The engine keeps its history across calls; an edited policy replaces the engine's
/// policy but not its history. A metrics backend that fails entirely makes every rule
/// `missing`, which holds the replicas.
///
/// # Errors
/// When the policy or scale cannot be read, the policy is invalid, or the write fails.
pub async fn reconcile<P, A, M>(
    engine: &mut Engine,
    target: &TargetId,
    now: Timestamp,
    policies: &P,
    replicas: &A,
    metrics: &M,
    pods: Vec<PodInfo>,
) -> Result<Decision, ReconcileError<P::Error, A::Error>>
where
    P: GetScalingPolicy + ?Sized,
    A: AdjustReplicas + ?Sized,
    M: GetScalingMetrics + ?Sized,
{
    let policy = policies
        .get_scaling_policy(target)
        .await
        .map_err(|source| ReconcileError::GetPolicy { target: target.clone(), source })?
        .ok_or_else(|| ReconcileError::NoPolicy(target.clone()))?;
    let resolved =
        policy.validate().map_err(|errors| ReconcileError::InvalidPolicy { target: target.clone(), errors })?;
    if engine.policy() != &resolved {
        engine.set_policy(resolved);
    }
    let scale_ref = engine.policy().scale_target_ref.clone();
    let scale = replicas
        .get_scale(target, scale_ref.as_ref())
        .await
        .map_err(|source| ReconcileError::GetScale { target: target.clone(), source })?;
    let request = MetricsRequest {
        target: target.clone(),
        scale_target_ref: scale_ref.clone(),
        rules: engine.policy().rules.clone(),
        pods,
    };
    let observed = match metrics.get_scaling_metrics(&request, now).await {
        Ok(m) => m,
        Err(e) => ScalingMetrics::all_failed(request.rules.iter().map(|r| r.key.as_str()), &error_chain(&e)),
    };
    let decision = engine.evaluate(now, scale, &observed);
    if decision.actuate {
        if let Err(source) = replicas.adjust_replicas(target, scale_ref.as_ref(), decision.desired_replicas).await {
            return Err(ReconcileError::Adjust {
                target: target.clone(),
                replicas: decision.desired_replicas,
                decision: Box::new(decision),
                source,
            });
        }
        engine.record_scale(now, decision.current_replicas, decision.desired_replicas);
    }
    Ok(decision)
}

/// An error and its sources, joined with `: `.
#[must_use]
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(inner) = cur {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        cur = inner.source();
    }
    s
}

/// The error of the in-memory ports.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InMemoryError {
    /// Nothing is stored for the target.
    #[error("nothing stored for {0}")]
    NotFound(TargetId),
    /// A failure injected by a test.
    #[error("injected failure: {0}")]
    Injected(String),
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panicking test thread must not hide the data from the others.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// In-memory [`GetScalingMetrics`]: returns what was last stored for a target.
#[derive(Debug, Default)]
pub struct InMemoryMetrics {
    by_target: Mutex<BTreeMap<TargetId, Result<ScalingMetrics, InMemoryError>>>,
}

impl InMemoryMetrics {
    /// Stores the metrics a target will report.
    pub fn set(&self, target: &TargetId, metrics: ScalingMetrics) {
        lock(&self.by_target).insert(target.clone(), Ok(metrics));
    }

    /// Makes the next reads for a target fail.
    pub fn fail(&self, target: &TargetId, why: &str) {
        lock(&self.by_target).insert(target.clone(), Err(InMemoryError::Injected(why.to_owned())));
    }
}

#[async_trait]
impl GetScalingMetrics for InMemoryMetrics {
    type Error = InMemoryError;

    async fn get_scaling_metrics(
        &self,
        request: &MetricsRequest,
        _now: Timestamp,
    ) -> Result<ScalingMetrics, Self::Error> {
        lock(&self.by_target)
            .get(&request.target)
            .cloned()
            .unwrap_or_else(|| Err(InMemoryError::NotFound(request.target.clone())))
    }
}

/// In-memory [`AdjustReplicas`]: a replica count per target, and a log of every write.
#[derive(Debug, Default)]
pub struct InMemoryReplicas {
    replicas: Mutex<BTreeMap<TargetId, i32>>,
    writes: Mutex<Vec<(TargetId, i32)>>,
    fail_writes: Mutex<Option<String>>,
}

impl InMemoryReplicas {
    /// Sets a target's replica count (as if someone else scaled it).
    pub fn set(&self, target: &TargetId, replicas: i32) {
        lock(&self.replicas).insert(target.clone(), replicas);
    }

    /// A target's replica count.
    #[must_use]
    pub fn get(&self, target: &TargetId) -> Option<i32> {
        lock(&self.replicas).get(target).copied()
    }

    /// Every write made through [`AdjustReplicas::adjust_replicas`], in order.
    #[must_use]
    pub fn writes(&self) -> Vec<(TargetId, i32)> {
        lock(&self.writes).clone()
    }

    /// Makes writes fail (`Some(reason)`) or succeed again (`None`).
    pub fn fail_writes(&self, why: Option<&str>) {
        *lock(&self.fail_writes) = why.map(str::to_owned);
    }
}

#[async_trait]
impl AdjustReplicas for InMemoryReplicas {
    type Error = InMemoryError;

    async fn get_scale(&self, target: &TargetId, _: Option<&ScaleTargetRef>) -> Result<CurrentScale, Self::Error> {
        self.get(target).map(CurrentScale::new).ok_or_else(|| InMemoryError::NotFound(target.clone()))
    }

    async fn adjust_replicas(
        &self,
        target: &TargetId,
        _: Option<&ScaleTargetRef>,
        replicas: i32,
    ) -> Result<(), Self::Error> {
        if let Some(why) = lock(&self.fail_writes).clone() {
            return Err(InMemoryError::Injected(why));
        }
        lock(&self.replicas).insert(target.clone(), replicas);
        lock(&self.writes).push((target.clone(), replicas));
        Ok(())
    }
}

/// In-memory [`GetScalingPolicy`].
#[derive(Debug, Default)]
pub struct InMemoryPolicies {
    policies: Mutex<BTreeMap<TargetId, VllmScalingPolicy>>,
}

impl InMemoryPolicies {
    /// Stores a policy for a target.
    pub fn insert(&self, target: &TargetId, policy: VllmScalingPolicy) {
        lock(&self.policies).insert(target.clone(), policy);
    }
}

#[async_trait]
impl GetScalingPolicy for InMemoryPolicies {
    type Error = InMemoryError;

    async fn get_scaling_policy(&self, target: &TargetId) -> Result<Option<VllmScalingPolicy>, Self::Error> {
        Ok(lock(&self.policies).get(target).cloned())
    }
}
