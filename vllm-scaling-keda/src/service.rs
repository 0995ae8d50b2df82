//! The `ExternalScaler` gRPC service over a publishing controller.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use kube::{Api, ResourceExt};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use vllm_scaling_core::{GetScalingMetrics, ScaleTargetRef};
use vllm_scaling_kube::{Context, DecisionBoard, Outcome, Published, VllmScalingPolicyResource, reconcile};

use crate::metadata::{self, PolicyRef};
use crate::proto::external_scaler_server::ExternalScaler;
use crate::proto::{
    GetMetricSpecResponse, GetMetricsRequest, GetMetricsResponse, IsActiveResponse, MetricSpec, MetricValue,
    ScaledObjectRef,
};

/// The one metric the scaler gives KEDA's HPA.
pub const METRIC_NAME: &str = "vllm-desired-replicas";

/// The AverageValue target of [`METRIC_NAME`]: the scaler answers the engine's desired
/// replicas times this, so the HPA's `ceil(value / target)` is the desired count.
pub const TARGET: f64 = 1.0;

/// How old a decision may be before it is no longer answered, in sync periods.
pub const STALE_AFTER_PERIODS: u32 = 3;

/// KEDA's external scaler over the controller's decisions.
///
/// Policies named in a trigger's `policy` are evaluated by the controller's watch loop
/// ([`vllm_scaling_kube::run`] on a context [`publishing_to`](Context::publishing_to) the
/// same board); policies carried inline (`policySpec`) are evaluated here, when KEDA asks
/// and while a `StreamIsActive` stream is open, on the same schedule. Either way the answer
/// is the newest decision on the board.
pub struct KedaScaler<M> {
    inner: Arc<Inner<M>>,
}

impl<M> Clone for KedaScaler<M> {
    fn clone(&self) -> Self {
        Self { inner: self.inner.clone() }
    }
}

impl<M> std::fmt::Debug for KedaScaler<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KedaScaler").finish_non_exhaustive()
    }
}

struct Inner<M> {
    ctx: Arc<Context<M>>,
    board: Arc<DecisionBoard>,
    /// Inline policies by ScaledObject (namespace, name): the spec text they came from.
    inline: Mutex<HashMap<(String, String), InlinePolicy>>,
}

/// An inline policy: the spec text it came from, and its synthetic object.
type InlinePolicy = (String, Arc<VllmScalingPolicyResource>);

/// What the scaler knows of one policy when KEDA asks.
enum Answer {
    /// A fresh decision with at least one rule's value.
    Decided(Published),
    /// No usable decision, and why; with the replicas last seen, if known.
    Unusable { why: String, current_replicas: Option<i32> },
}

impl<M: GetScalingMetrics + 'static> KedaScaler<M> {
    /// A scaler over `ctx`, which must publish its decisions (see
    /// [`Context::publishing_to`]).
    ///
    /// # Panics
    /// If `ctx` does not publish.
    #[must_use]
    pub fn new(ctx: Arc<Context<M>>) -> Self {
        let board = ctx.board().cloned().expect("the KEDA scaler needs a context that publishes its decisions");
        Self { inner: Arc::new(Inner { ctx, board, inline: Mutex::new(HashMap::new()) }) }
    }

    /// The board the answers come from.
    #[must_use]
    pub fn board(&self) -> &Arc<DecisionBoard> {
        &self.inner.board
    }

    /// Resolves a ScaledObject's reference to the policy it asks for; an inline policy is
    /// evaluated (when due).
    async fn resolve(&self, reference: &ScaledObjectRef) -> Result<PolicyRef, Status> {
        let policy = metadata::parse(&reference.namespace, &reference.name, &reference.scaler_metadata)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        match &policy {
            PolicyRef::Named { namespace, name } => match self.inner.ctx.watched_policy(namespace, name) {
                Ok(Some(_)) => {}
                Ok(None) => return Err(Status::not_found(format!("vLLMScalingPolicy {namespace}/{name} not found"))),
                Err(()) => {
                    return Err(Status::unavailable(
                        "the scaler has not listed the vLLMScalingPolicies yet; KEDA asks again",
                    ));
                }
            },
            PolicyRef::Inline { .. } => {
                let resource = self.inline_resource(&policy).await?;
                // Evaluates when due, like the watch loop does for named policies.
                if let Err(e) = reconcile(resource, self.inner.ctx.clone()).await {
                    return Err(Status::internal(format!("{policy}: {e}")));
                }
            }
        }
        Ok(policy)
    }

    /// The synthetic policy object of an inline spec: validated, its `scaleTargetRef`
    /// taken from the ScaledObject when the spec has none. Cached per ScaledObject while
    /// its text stays the same.
    async fn inline_resource(&self, policy: &PolicyRef) -> Result<Arc<VllmScalingPolicyResource>, Status> {
        let PolicyRef::Inline { namespace, scaled_object, spec, text } = policy else {
            return Err(Status::internal("not an inline policy"));
        };
        let key = (namespace.clone(), scaled_object.clone());
        if let Some((cached_text, resource)) = self.lock_inline().get(&key)
            && cached_text == text
        {
            return Ok(resource.clone());
        }
        let mut spec = (**spec).clone();
        if spec.0.scale_target_ref.is_none() {
            spec.0.scale_target_ref = Some(self.scaled_object_target(namespace, scaled_object).await?);
        }
        let mut resource = VllmScalingPolicyResource::new(&policy.policy_name(), spec);
        resource.metadata.namespace = Some(namespace.clone());
        // A new text is a new generation: it is evaluated at once.
        resource.metadata.generation = Some(i64::from(fingerprint(text)));
        if let Err(errors) = resource.to_core().validate() {
            return Err(Status::invalid_argument(format!("{policy}: the `policySpec` is invalid: {errors}")));
        }
        let resource = Arc::new(resource);
        self.lock_inline().insert(key, (text.clone(), resource.clone()));
        Ok(resource)
    }

    fn lock_inline(&self) -> std::sync::MutexGuard<'_, HashMap<(String, String), InlinePolicy>> {
        self.inner.inline.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The `scaleTargetRef` of a ScaledObject, read from the API.
    async fn scaled_object_target(&self, namespace: &str, name: &str) -> Result<ScaleTargetRef, Status> {
        let resource = ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"),
            "scaledobjects",
        );
        let api: Api<DynamicObject> = Api::namespaced_with(self.inner.ctx.client().clone(), namespace, &resource);
        let timeout = self.inner.ctx.config().request_timeout;
        let object = match tokio::time::timeout(timeout, api.get_opt(name)).await {
            Ok(Ok(Some(object))) => object,
            Ok(Ok(None)) => return Err(Status::not_found(format!("ScaledObject {namespace}/{name} not found"))),
            Ok(Err(e)) => {
                return Err(Status::unavailable(format!(
                    "reading ScaledObject {namespace}/{name} for its scaleTargetRef: {e}"
                )));
            }
            Err(_) => {
                return Err(Status::unavailable(format!(
                    "reading ScaledObject {namespace}/{name} for its scaleTargetRef: no answer within {timeout:?}"
                )));
            }
        };
        let target = &object.data["spec"]["scaleTargetRef"];
        let name_of_target = target["name"].as_str().filter(|n| !n.is_empty()).ok_or_else(|| {
            Status::invalid_argument(format!(
                "ScaledObject {namespace}/{}: spec.scaleTargetRef.name is missing, and the `policySpec` has no scaleTargetRef",
                object.name_any()
            ))
        })?;
        Ok(ScaleTargetRef {
            api_version: Some(target["apiVersion"].as_str().unwrap_or("apps/v1").to_owned()),
            kind: target["kind"].as_str().unwrap_or("Deployment").to_owned(),
            name: name_of_target.to_owned(),
        })
    }

    /// The newest decision for `policy`, if it can be answered.
    fn answer(&self, policy: &PolicyRef) -> Answer {
        let (namespace, name) = (policy.namespace(), policy.policy_name());
        let stale_after = self.inner.ctx.config().sync_period * STALE_AFTER_PERIODS;
        match self.inner.board.latest(namespace, &name) {
            None => Answer::Unusable {
                why: format!("{policy} has not been evaluated yet (it is, within a sync period)"),
                current_replicas: None,
            },
            Some(Outcome::NotDecided { reason, current_replicas, .. }) => {
                Answer::Unusable { why: format!("{policy}: no decision: {reason}"), current_replicas }
            }
            Some(Outcome::Decided(published)) => {
                let age = self.inner.ctx.now().saturating_duration_since(published.at);
                if age > stale_after {
                    Answer::Unusable {
                        why: format!(
                            "{policy}: the newest decision is {:.0} s old (more than {STALE_AFTER_PERIODS} sync periods)",
                            age.as_secs_f64()
                        ),
                        current_replicas: Some(published.current_replicas),
                    }
                } else if published.no_valid_metric {
                    Answer::Unusable {
                        why: format!(
                            "{policy}: the engine holds {} replicas for want of metrics: {}",
                            published.current_replicas, published.explanation
                        ),
                        current_replicas: Some(published.current_replicas),
                    }
                } else {
                    Answer::Decided(published)
                }
            }
        }
    }

    /// Whether the target should run: the engine wants replicas. Without a usable
    /// decision a running target stays active (KEDA scales an inactive target to zero,
    /// and missing data never scales down) and a target at zero stays at zero.
    fn activity(&self, policy: &PolicyRef) -> bool {
        match self.answer(policy) {
            Answer::Decided(p) => p.desired_replicas > 0,
            Answer::Unusable { why, current_replicas } => {
                let active = current_replicas != Some(0);
                tracing::warn!(%policy, why, active, "no usable decision: activity left as the replicas are");
                active
            }
        }
    }
}

/// A small fingerprint of an inline spec's text, as its generation.
fn fingerprint(text: &str) -> u32 {
    // FNV-1a: stable across runs (std's hasher is seeded per process).
    text.bytes().fold(0x811c_9dc5_u32, |h, b| (h ^ u32::from(b)).wrapping_mul(0x0100_0193))
}

/// KEDA's HPA metric name for a trigger's metric: KEDA may prefix it with `sN-` (the
/// trigger's index).
fn is_our_metric(name: &str) -> bool {
    let bare = match name.split_once('-') {
        Some((prefix, rest))
            if prefix.len() > 1 && prefix.starts_with('s') && prefix[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            rest
        }
        _ => name,
    };
    bare == METRIC_NAME
}

type ActivityStream = Pin<Box<dyn Stream<Item = Result<IsActiveResponse, Status>> + Send + 'static>>;

#[tonic::async_trait]
impl<M: GetScalingMetrics + 'static> ExternalScaler for KedaScaler<M> {
    async fn is_active(&self, request: Request<ScaledObjectRef>) -> Result<Response<IsActiveResponse>, Status> {
        let policy = self.resolve(request.get_ref()).await?;
        Ok(Response::new(IsActiveResponse { result: self.activity(&policy) }))
    }

    type StreamIsActiveStream = ActivityStream;

    async fn stream_is_active(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<Self::StreamIsActiveStream>, Status> {
        let reference = request.into_inner();
        let policy = self.resolve(&reference).await?;
        let (tx, rx) = tokio::sync::mpsc::channel(4);
        let scaler = self.clone();
        let period = self.inner.ctx.config().activation_period.max(Duration::from_millis(10));
        tokio::spawn(async move {
            let (namespace, name) = (policy.namespace().to_owned(), policy.policy_name());
            let mut changes = scaler.inner.board.subscribe(&namespace, &name);
            let mut last = None;
            loop {
                if matches!(policy, PolicyRef::Inline { .. })
                    && let Err(status) = scaler.resolve(&reference).await
                {
                    // The ScaledObject changed under the stream into something unusable.
                    let _ = tx.send(Err(status)).await;
                    break;
                }
                let active = scaler.activity(&policy);
                if last != Some(active) {
                    if tx.send(Ok(IsActiveResponse { result: active })).await.is_err() {
                        break;
                    }
                    last = Some(active);
                }
                tokio::select! {
                    changed = changes.changed() => {
                        if changed.is_err() {
                            // The policy was forgotten (deleted): wait on its next slot.
                            changes = scaler.inner.board.subscribe(&namespace, &name);
                        }
                    }
                    () = tokio::time::sleep(period) => {}
                    () = tx.closed() => break,
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn get_metric_spec(
        &self,
        request: Request<ScaledObjectRef>,
    ) -> Result<Response<GetMetricSpecResponse>, Status> {
        self.resolve(request.get_ref()).await?;
        Ok(Response::new(GetMetricSpecResponse {
            metric_specs: vec![MetricSpec {
                metric_name: METRIC_NAME.to_owned(),
                target_size: 1,
                target_size_float: TARGET,
            }],
        }))
    }

    async fn get_metrics(&self, request: Request<GetMetricsRequest>) -> Result<Response<GetMetricsResponse>, Status> {
        let request = request.into_inner();
        if !is_our_metric(&request.metric_name) {
            return Err(Status::invalid_argument(format!(
                "metric `{}` is not one this scaler serves (it serves `{METRIC_NAME}`)",
                request.metric_name
            )));
        }
        let reference = request
            .scaled_object_ref
            .ok_or_else(|| Status::invalid_argument("GetMetrics without a scaledObjectRef"))?;
        let policy = self.resolve(&reference).await?;
        match self.answer(&policy) {
            Answer::Decided(p) => {
                let value = f64::from(p.desired_replicas) * TARGET;
                Ok(Response::new(GetMetricsResponse {
                    metric_values: vec![MetricValue {
                        metric_name: request.metric_name,
                        metric_value: i64::from(p.desired_replicas),
                        metric_value_float: value,
                    }],
                }))
            }
            // An error, not a value: KEDA's HPA then keeps the replicas it has (or KEDA
            // applies the ScaledObject's fallback).
            Answer::Unusable { why, .. } => Err(Status::unavailable(why)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keda_prefixed_metric_names_are_ours() {
        assert!(is_our_metric("vllm-desired-replicas"));
        assert!(is_our_metric("s0-vllm-desired-replicas"));
        assert!(is_our_metric("s12-vllm-desired-replicas"));
        assert!(!is_our_metric("s-vllm-desired-replicas"));
        assert!(!is_our_metric("s0-queue"));
        assert!(!is_our_metric("queue"));
    }

    #[test]
    fn the_fingerprint_is_stable() {
        assert_eq!(fingerprint("a"), 0xe40c_292c);
        assert_ne!(fingerprint("maxReplicas: 3"), fingerprint("maxReplicas: 4"));
    }
}
