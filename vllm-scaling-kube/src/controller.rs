//! The reference controller: one evaluation of a `vLLMScalingPolicy` ([`reconcile`]) and
//! the kube-runtime loop that runs it for every policy ([`run`]).
//!
//! # One evaluation
//! 1. Validate the spec (`Ready=False` naming the field when it is invalid; no scaling).
//! 2. Resolve the target: `scaleTargetRef` by name, by served model id when the name is
//!    not an object name, or the workload annotated `autoscaler.production-stack/policy`.
//! 3. Refuse to fight: an HPA or KEDA ScaledObject on the same object stops the policy.
//!    A policy that a ScaledObject drives through the KEDA scaler is the scaler's: this
//!    controller leaves it alone, and one [`publishing`](Context::publishing_to) for the
//!    scaler evaluates only those (see [`crate::publish`]).
//! 4. Read the target's `/scale` (replicas, pod selector) and list its pods.
//! 5. Gather metrics through the [`GetScalingMetrics`] port and ask the core engine.
//! 6. Patch `/scale` when the decision says so (never the workload's spec, so the
//!    controller does not fight GitOps or the production-stack operator), with the read
//!    `resourceVersion` as a precondition; a `409 Conflict` is retried while the replicas
//!    are still the ones decided on.
//! 7. Write the status (rules, conditions, and the engine's history) and events, update
//!    `/metrics`, and requeue at the decision's next evaluation time.
//!
//! A failure to read metrics, to read the scale or to write it never changes replicas: it
//! sets a condition, publishes a Warning event and counts an error.

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::{ObjectReference, Pod};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as RuntimeConfig, Controller};
use kube::runtime::events::{Event, EventType};
use kube::runtime::watcher;
use kube::{Api, Client, Resource, ResourceExt};
use serde::Deserialize;
use serde_json::Value;
use vllm_scaling_core::{
    Clock, CurrentScale, Decision, Engine, EngineConfig, GetScalingMetrics, LimitedBy, MAX_REASON_BYTES,
    MetricsRequest, PodInfo, PodMetrics, PodPhase, ResolvedPolicy, RuleStatus, ScaleTargetRef, ScalingMetrics,
    TargetId, Timestamp, error_chain,
};

use crate::crd::{
    PendingRescale, PolicyCondition, PolicyStatus, ResolvedTarget, RuleStatusEntry, VllmScalingPolicyResource,
};
use crate::discovery::pod_info;
use crate::error::Error;
use crate::events::EventPublisher;
use crate::gpu::GpuExporters;
use crate::lease::Leadership;
use crate::publish::{DecisionBoard, Outcome, Published, drives, is_inline};
use crate::scale::{KubeScale, RequestError, ScaleError, timed};
use crate::telemetry::{
    ControllerMetrics, Direction, DirectionLabels, ErrorKind, PolicyLabels, RuleLabels, ScaleDirectionLabels,
};

/// The field manager and event reporter name.
pub const CONTROLLER_NAME: &str = "vllm-autoscaler";

/// Controller-wide settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ControllerConfig {
    /// How often each policy is evaluated (`--sync-period`, 15 s like the HPA).
    pub sync_period: Duration,
    /// Decide, report and record, but never write `/scale` (`--dry-run`).
    pub dry_run: bool,
    /// The longest any one API request or metrics read may take.
    pub request_timeout: Duration,
    /// How many times a `409 Conflict` on `/scale` is retried within one evaluation.
    pub conflict_retries: u32,
    /// The scale-down stabilization of policies without `behavior` (300 s).
    pub downscale_stabilization: Duration,
    /// How long lists of HPAs, ScaledObjects and workloads and the discovery of target
    /// kinds are cached (default: the sync period).
    pub cache_ttl: Duration,
    /// How many policies are evaluated at once (0: no limit).
    pub concurrency: u16,
    /// The namespace to watch (`None`: all).
    pub namespace: Option<String>,
    /// This replica's identity, for events.
    pub identity: String,
    /// The longest a policy's status goes unwritten (`--status-interval`, 60 s). A status
    /// is written when something a user reads changed, or the history in a way a restart
    /// needs (see [`reconcile`]); otherwise at most this often, which refreshes
    /// `lastEvaluationTime` and the rules' observed values. Zero writes every evaluation.
    pub status_interval: Duration,
    /// When publishing decisions ([`Context::publishing_to`]): how often a policy at zero
    /// replicas, or one that wants zero, is evaluated instead of every sync period, so an
    /// activation is seen within about this long (`keda-scaler --activation-period`, 1 s).
    pub activation_period: Duration,
}

impl Default for ControllerConfig {
    fn default() -> Self {
        Self {
            sync_period: Duration::from_secs(15),
            dry_run: false,
            request_timeout: Duration::from_secs(10),
            conflict_retries: 3,
            downscale_stabilization: vllm_scaling_core::DEFAULT_DOWNSCALE_STABILIZATION,
            cache_ttl: Duration::from_secs(15),
            concurrency: 256,
            namespace: None,
            identity: CONTROLLER_NAME.to_owned(),
            status_interval: Duration::from_secs(60),
            activation_period: Duration::from_secs(1),
        }
    }
}

impl ControllerConfig {
    /// Sets the activation period (builder style; see [`ControllerConfig::activation_period`]).
    #[must_use]
    pub fn with_activation_period(mut self, period: Duration) -> Self {
        self.activation_period = period;
        self
    }

    /// Sets the sync period, and the cache TTL to match (builder style).
    #[must_use]
    pub fn with_sync_period(mut self, sync_period: Duration) -> Self {
        self.sync_period = sync_period;
        self.cache_ttl = sync_period;
        self
    }

    /// Sets dry-run (builder style).
    #[must_use]
    pub fn with_dry_run(mut self, dry_run: bool) -> Self {
        self.dry_run = dry_run;
        self
    }

    /// Sets the request timeout (builder style).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets the namespace to watch (builder style).
    #[must_use]
    pub fn with_namespace(mut self, namespace: Option<String>) -> Self {
        self.namespace = namespace;
        self
    }

    /// Sets the identity (builder style).
    #[must_use]
    pub fn with_identity(mut self, identity: impl Into<String>) -> Self {
        self.identity = identity.into();
        self
    }

    /// Sets the status interval (builder style).
    #[must_use]
    pub fn with_status_interval(mut self, interval: Duration) -> Self {
        self.status_interval = interval;
        self
    }

    /// Sets the evaluation concurrency (builder style).
    #[must_use]
    pub fn with_concurrency(mut self, concurrency: u16) -> Self {
        self.concurrency = concurrency;
        self
    }
}

/// The wall clock in Unix milliseconds: what the controller stamps engine history with,
/// so the history in a policy's status means the same to a restarted process.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}

type PolicyKey = (String, String);

/// What the controller remembers about one policy between evaluations.
#[derive(Debug, Default)]
struct PolicyRuntime {
    uid: Option<String>,
    engine: Option<Engine>,
    generation: Option<i64>,
    next_evaluation: Option<Timestamp>,
    retry_now: bool,
    last_direction: Option<Direction>,
    missing_since: BTreeMap<String, Timestamp>,
    rule_labels: Vec<(String, String)>,
    /// The last status this controller wrote, as compared for the next write.
    written: Option<Written>,
    /// When publishing: the target's replicas at the last evaluation.
    seen_replicas: Option<i32>,
}

/// What [`write_status`] remembers of the last status it wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Written {
    /// [`status_fingerprint`] of it.
    fingerprint: u64,
    /// The newest recommendation in its history.
    newest_recommendation: Option<i32>,
    /// When it was written.
    at: Timestamp,
}

/// Everything an evaluation needs, shared by all policies.
pub struct Context<M> {
    client: Client,
    metrics_source: M,
    config: ControllerConfig,
    clock: Arc<dyn Clock>,
    leadership: Leadership,
    recorder: EventPublisher,
    telemetry: Arc<ControllerMetrics>,
    runtimes: Mutex<HashMap<PolicyKey, Arc<tokio::sync::Mutex<PolicyRuntime>>>>,
    /// Target resolution and every `/scale` read and write (with the workload-list and
    /// discovery caches).
    scale: KubeScale,
    /// The watched policies, when [`run`] watches them (else policies are listed).
    policy_store: std::sync::OnceLock<kube::runtime::reflector::Store<DynamicObject>>,
    /// Per namespace: which policy claims which target.
    claims: Mutex<HashMap<String, Arc<Claims>>>,
    /// GPU `auto` rules are read from the node exporters of the target's pods.
    gpu: Option<GpuExporters>,
    /// Where decisions go instead of `/scale`, when another actuator applies them.
    board: Option<Arc<DecisionBoard>>,
}

impl<M> std::fmt::Debug for Context<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Context").field("config", &self.config).finish_non_exhaustive()
    }
}

impl<M: GetScalingMetrics + 'static> Context<M> {
    /// A context with the wall clock, always leading, and fresh metrics.
    #[must_use]
    pub fn new(client: Client, metrics_source: M, config: ControllerConfig) -> Self {
        let gpu =
            GpuExporters::new(client.clone(), config.cache_ttl, config.request_timeout.min(Duration::from_secs(3)));
        Self {
            recorder: EventPublisher::new(client.clone(), CONTROLLER_NAME, &config.identity),
            scale: KubeScale::new(client.clone())
                .with_request_timeout(config.request_timeout)
                .with_conflict_retries(config.conflict_retries)
                .with_cache_ttl(config.cache_ttl),
            client,
            metrics_source,
            gpu: Some(gpu),
            config,
            clock: Arc::new(SystemClock),
            leadership: Leadership::always(),
            telemetry: Arc::new(ControllerMetrics::new()),
            runtimes: Mutex::new(HashMap::new()),
            policy_store: std::sync::OnceLock::new(),
            claims: Mutex::new(HashMap::new()),
            board: None,
        }
    }

    /// Publishes every decision on `board` instead of writing `/scale`, and evaluates only
    /// the policies a KEDA ScaledObject drives (builder style; see [`crate::publish`]).
    /// This is how the KEDA external scaler runs the controller.
    #[must_use]
    pub fn publishing_to(mut self, board: Arc<DecisionBoard>) -> Self {
        self.board = Some(board);
        self
    }

    /// The board decisions are published on, when publishing.
    #[must_use]
    pub fn board(&self) -> Option<&Arc<DecisionBoard>> {
        self.board.as_ref()
    }

    /// The time by this context's clock.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// The API client.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// A watched policy, once [`run`] watches them: `Ok(None)` when there is no such
    /// policy, `Err(())` while the watch has not listed them yet (or [`run`] is not
    /// running).
    ///
    /// # Errors
    /// `Err(())` when the policies are not known yet.
    #[allow(clippy::result_unit_err)]
    pub fn watched_policy(&self, namespace: &str, name: &str) -> Result<Option<Arc<DynamicObject>>, ()> {
        let store = self.policy_store.get().ok_or(())?;
        // Ready once the watch's first list is in (it never becomes unready).
        if !matches!(futures::FutureExt::now_or_never(store.wait_until_ready()), Some(Ok(()))) {
            return Err(());
        }
        Ok(store.get(&kube::runtime::reflector::ObjectRef::new_with(name, policy_resource()).within(namespace)))
    }

    /// Uses `clock` instead of the wall clock (builder style; tests use a `FakeClock` at a
    /// Unix time).
    #[must_use]
    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// Leaves GPU `auto` rules to the metrics source alone, without looking for GPU node
    /// exporters (builder style; see [`GpuExporters`]).
    #[must_use]
    pub fn without_gpu_exporters(mut self) -> Self {
        self.gpu = None;
        self
    }

    /// Acts only while `leadership` says so (builder style).
    #[must_use]
    pub fn with_leadership(mut self, leadership: Leadership) -> Self {
        self.leadership = leadership;
        self
    }

    /// Reports into `telemetry` (builder style).
    #[must_use]
    pub fn with_telemetry(mut self, telemetry: Arc<ControllerMetrics>) -> Self {
        self.telemetry = telemetry;
        self
    }

    /// The controller's metrics.
    #[must_use]
    pub fn telemetry(&self) -> &Arc<ControllerMetrics> {
        &self.telemetry
    }

    /// The settings.
    #[must_use]
    pub fn config(&self) -> &ControllerConfig {
        &self.config
    }

    /// The metrics source.
    #[must_use]
    pub fn metrics_source(&self) -> &M {
        &self.metrics_source
    }

    fn runtime(&self, key: &PolicyKey) -> Arc<tokio::sync::Mutex<PolicyRuntime>> {
        let mut map = self.runtimes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        map.entry(key.clone()).or_default().clone()
    }

    /// Forgets policies that no longer exist (their engines and metric series); returns
    /// how many are still tracked.
    pub fn retain_policies(&self, alive: &std::collections::HashSet<(String, String)>) -> usize {
        let mut map = self.runtimes.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let gone: Vec<PolicyKey> = map.keys().filter(|k| !alive.contains(*k)).cloned().collect();
        for key in gone {
            if let Some(rt) = map.remove(&key) {
                let labels = rt.try_lock().map(|r| r.rule_labels.clone()).unwrap_or_default();
                self.telemetry.forget_policy(&key.0, &key.1, &labels);
            }
        }
        map.len()
    }

    async fn timed<T>(
        &self,
        step: &'static str,
        fut: impl Future<Output = Result<T, kube::Error>>,
    ) -> Result<T, RequestError> {
        timed(self.config.request_timeout, step, fut).await
    }

    async fn publish(
        &self,
        policy: &VllmScalingPolicyResource,
        type_: EventType,
        reason: &str,
        action: &str,
        note: String,
    ) {
        let subject = Subject::of(policy);
        self.publish_on(&subject, type_, reason, action, note).await;
    }

    async fn publish_on(&self, subject: &Subject, type_: EventType, reason: &str, action: &str, note: String) {
        if is_inline(&subject.name) {
            // An inline policy has no object to attach an event to.
            return;
        }
        let note = bounded(note, MAX_NOTE_BYTES);
        let event =
            Event { type_, reason: reason.to_owned(), note: Some(note), action: action.to_owned(), secondary: None };
        match tokio::time::timeout(self.config.request_timeout, self.recorder.publish(&event, &subject.reference)).await
        {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                self.count_error_on(subject, ErrorKind::Event);
                tracing::warn!(error = %error_chain(&e), reason, "publishing an event failed");
            }
            Err(_) => {
                self.count_error_on(subject, ErrorKind::Event);
                tracing::warn!(reason, "publishing an event timed out");
            }
        }
    }

    fn count_error(&self, policy: &VllmScalingPolicyResource, kind: ErrorKind) {
        self.telemetry.error(&policy.namespace().unwrap_or_default(), &policy.name_any(), kind);
    }

    fn count_error_on(&self, subject: &Subject, kind: ErrorKind) {
        self.telemetry.error(&subject.namespace, &subject.name, kind);
    }
}

fn to_time(t: Timestamp) -> Time {
    let ms = i64::try_from(t.as_millis()).unwrap_or(i64::MAX);
    Time(k8s_openapi::jiff::Timestamp::from_millisecond(ms).unwrap_or(k8s_openapi::jiff::Timestamp::UNIX_EPOCH))
}

fn to_requeue(now: Timestamp, at: Timestamp) -> Action {
    Action::requeue(at.saturating_duration_since(now).max(Duration::from_millis(50)))
}

/// Sets a condition, keeping its `lastTransitionTime` when its status did not change.
fn set_condition(
    conditions: &mut Vec<PolicyCondition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    now: Timestamp,
) {
    let status = if status { "True" } else { "False" }.to_owned();
    // Messages quote rules' reasons (external text): bounded, so the status stays writable.
    let message = bounded(message, 4 * MAX_REASON_BYTES);
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status {
                c.last_transition_time = Some(to_time(now));
            }
            c.status = status;
            c.reason = reason.to_owned();
            c.message = message;
        }
        None => conditions.push(PolicyCondition {
            type_: type_.to_owned(),
            status,
            reason: reason.to_owned(),
            message,
            last_transition_time: Some(to_time(now)),
        }),
    }
    // A stable order makes status diffs readable.
    let order =
        |t: &str| ["Ready", "AbleToScale", "ScalingActive", "ScalingLimited"].iter().position(|x| *x == t).unwrap_or(9);
    conditions.sort_by_key(|c| order(&c.type_));
}

/// Why a target could not be used: a condition reason and a message.
struct Blocked {
    reason: &'static str,
    message: String,
    kind: ErrorKind,
}

impl Blocked {
    fn new(reason: &'static str, kind: ErrorKind, message: impl Into<String>) -> Self {
        Self { reason, message: message.into(), kind }
    }

    /// A target that does not resolve, or does not exist.
    fn target(e: &ScaleError) -> Self {
        Self::new(e.reason(), ErrorKind::Target, e.to_string())
    }
}

/// The policy an evaluation is about, for events and error counts.
struct Subject {
    namespace: String,
    name: String,
    reference: ObjectReference,
}

impl Subject {
    fn of(policy: &VllmScalingPolicyResource) -> Self {
        Self {
            namespace: policy.namespace().unwrap_or_default(),
            name: policy.name_any(),
            reference: policy.object_ref(&()),
        }
    }
}

/// The longest event note (the API server's limit is 1 kB).
const MAX_NOTE_BYTES: usize = 1000;
/// The longest decode error quoted in a condition or an event.
const MAX_DECODE_ERROR_BYTES: usize = 900;

/// `text` cut to at most `max` bytes (and 16 lines) at a character boundary, the cut
/// marked: core's one `excerpt` for every external text.
fn bounded(text: String, max: usize) -> String {
    match vllm_scaling_core::excerpt(&text, max, 16) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(cut) => cut,
    }
}

/// The `vLLMScalingPolicy` resource, for watching policies as untyped objects.
pub(crate) fn policy_resource() -> ApiResource {
    ApiResource::erase::<VllmScalingPolicyResource>(&())
}

/// Decodes a policy watched as an untyped object. The spec must decode (the error names
/// the field); a status that does not decode is dropped with a warning (the controller
/// rewrites it; the engine then starts without history, which holds scale-downs for a
/// whole window).
///
/// # Errors
/// The spec's decode error, with the path of the offending field.
pub fn decode_policy(object: &DynamicObject) -> Result<VllmScalingPolicyResource, String> {
    let spec = decode_spec(object)?;
    let status = match object.data.get("status").filter(|s| !s.is_null()) {
        None => None,
        Some(value) => match PolicyStatus::deserialize(value) {
            Ok(status) => Some(status),
            Err(e) => {
                tracing::warn!(
                    namespace = object.metadata.namespace.as_deref().unwrap_or_default(),
                    policy = object.metadata.name.as_deref().unwrap_or_default(),
                    error = %e,
                    "the policy's status does not decode; it is rewritten"
                );
                None
            }
        },
    };
    Ok(VllmScalingPolicyResource { metadata: object.metadata.clone(), spec, status })
}

/// The spec of a policy watched as an untyped object; the error names the field.
fn decode_spec(object: &DynamicObject) -> Result<crate::crd::VllmScalingPolicySpec, String> {
    let spec_value = object.data.get("spec").unwrap_or(&Value::Null);
    serde_path_to_error::deserialize(spec_value).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "spec".to_owned() } else { format!("spec.{path}") };
        format!("{path}: {}", e.into_inner())
    })
}

/// Evaluates one policy watched as an untyped object (what [`run`] does): a policy whose
/// spec does not decode (a `tolerance: "abc"`, which the CRD's schema lets through) gets
/// its own `Ready=False, InvalidSpec` condition and a Warning event, without stopping the
/// watch or any other policy; every other policy goes to [`reconcile`].
///
/// # Errors
/// Only for an object without namespace or name.
pub async fn reconcile_object<M: GetScalingMetrics + 'static>(
    object: Arc<DynamicObject>,
    ctx: Arc<Context<M>>,
) -> Result<Action, Error> {
    match decode_policy(&object) {
        Ok(policy) => reconcile(Arc::new(policy), ctx).await,
        Err(error) => {
            let subject = Subject {
                namespace: object.metadata.namespace.clone().ok_or(Error::MissingMetadata("namespace"))?,
                name: object.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?,
                reference: object.object_ref(&policy_resource()),
            };
            let status = object.data.get("status").and_then(|s| PolicyStatus::deserialize(s).ok()).unwrap_or_default();
            schedule(&ctx, &subject, &object.metadata, async |ctx, rt, now| {
                evaluate_undecodable(ctx, rt, &subject, &object.metadata, status, &error, now).await
            })
            .await
        }
    }
}

/// Evaluates one policy: the function kube-runtime's `Controller` calls.
///
/// Returns when to evaluate again. Failures of the cluster or of the metrics backend are
/// reported in the policy's status, in events and in `/metrics`, and never change replicas.
///
/// # Errors
/// Only for an object without namespace or name.
pub async fn reconcile<M: GetScalingMetrics + 'static>(
    policy: Arc<VllmScalingPolicyResource>,
    ctx: Arc<Context<M>>,
) -> Result<Action, Error> {
    let namespace = policy.namespace().ok_or(Error::MissingMetadata("namespace"))?;
    let name = policy.metadata.name.clone().ok_or(Error::MissingMetadata("name"))?;
    let subject = Subject { namespace, name, reference: policy.object_ref(&()) };
    schedule(&ctx, &subject, &policy.metadata, async |ctx, rt, now| {
        evaluate(&policy, ctx, rt, &subject.namespace, &subject.name, now).await
    })
    .await
}

/// The schedule around one evaluation: only the leader evaluates, a recreated policy
/// starts afresh, our own status writes (echoed by the watch) do not move the schedule,
/// and the next evaluation is set from what `evaluate` returns.
async fn schedule<M: GetScalingMetrics + 'static>(
    ctx: &Arc<Context<M>>,
    subject: &Subject,
    meta: &kube::api::ObjectMeta,
    evaluate: impl AsyncFnOnce(&Context<M>, &mut PolicyRuntime, Timestamp) -> Next,
) -> Result<Action, Error> {
    let (namespace, name) = (&subject.namespace, &subject.name);
    let sync = ctx.config.sync_period;
    let leading = ctx.leadership.is_leader();
    ctx.telemetry.leader.set(i64::from(leading));
    if !leading {
        return Ok(Action::requeue(sync));
    }
    let runtime = ctx.runtime(&(namespace.clone(), name.clone()));
    let mut rt = runtime.lock().await;
    let now = ctx.clock.now();

    // A recreated policy (new uid) starts afresh.
    if rt.uid.is_some() && rt.uid != meta.uid {
        let labels = std::mem::take(&mut rt.rule_labels);
        ctx.telemetry.forget_policy(namespace, name, &labels);
        *rt = PolicyRuntime::default();
    }
    if rt.uid.is_none() {
        // First sight (or a restarted controller): pick up what the status remembers.
        ctx.telemetry.touch_policy(namespace, name);
        rt.uid.clone_from(&meta.uid);
    }
    // Our own status writes come back through the watch: they do not move the schedule.
    // Neither does a change of annotations alone (pausing or resuming is read at the
    // next evaluation, within a sync period), since it does not bump the generation.
    if !rt.retry_now
        && rt.generation == meta.generation
        && let Some(next) = rt.next_evaluation
        && now < next
    {
        return Ok(to_requeue(now, next));
    }
    if let Some(scheduled) = rt.next_evaluation
        && now >= scheduled
    {
        ctx.telemetry.evaluation_delay.observe(now.saturating_duration_since(scheduled).as_secs_f64());
    }
    let started = tokio::time::Instant::now();
    rt.retry_now = false;
    rt.generation = meta.generation;
    let action = evaluate(ctx, &mut rt, now).await;
    let next = now.saturating_add(match &action {
        Next::At(at) => at.saturating_duration_since(now),
        Next::Soon => Duration::from_secs(1),
        Next::Period => sync,
    });
    rt.next_evaluation = Some(next);
    if matches!(action, Next::Soon) {
        rt.retry_now = true;
    }
    ctx.telemetry.reconcile_duration.observe(started.elapsed().as_secs_f64());
    // The requeue counts from now, after the evaluation's own wall time, so the next
    // evaluation starts one period after this one started.
    Ok(to_requeue(ctx.clock.now(), next))
}

/// A policy whose spec does not decode: its own `InvalidSpec` condition and event, no
/// engine, nothing scaled.
async fn evaluate_undecodable<M: GetScalingMetrics + 'static>(
    ctx: &Context<M>,
    rt: &mut PolicyRuntime,
    subject: &Subject,
    meta: &kube::api::ObjectMeta,
    mut status: PolicyStatus,
    error: &str,
    now: Timestamp,
) -> Next {
    if let Some(why) = not_ours(ctx, &subject.namespace, &subject.name).await {
        tracing::debug!(namespace = subject.namespace, policy = subject.name, why, "left to the other controller");
        return Next::Period;
    }
    // No spec, so no engine: a fixed policy starts from the history in its status.
    rt.engine = None;
    status.observed_generation = meta.generation;
    status.last_evaluation_time = Some(to_time(now));
    let message = format!(
        "the policy's spec does not decode, so it is not evaluated: {}",
        bounded(error.to_owned(), MAX_DECODE_ERROR_BYTES)
    );
    let blocked = Blocked::new("InvalidSpec", ErrorKind::InvalidPolicy, message);
    block_on(ctx, subject, &mut status, &blocked, "Validate", now).await;
    write_status_on(ctx, rt, subject, status, now).await;
    Next::Period
}

/// When to look again.
enum Next {
    At(Timestamp),
    Soon,
    Period,
}

#[allow(clippy::too_many_lines)]
async fn evaluate<M: GetScalingMetrics + 'static>(
    policy: &VllmScalingPolicyResource,
    ctx: &Context<M>,
    rt: &mut PolicyRuntime,
    namespace: &str,
    name: &str,
    now: Timestamp,
) -> Next {
    if let Some(why) = not_ours(ctx, namespace, name).await {
        tracing::debug!(namespace, policy = name, why, "left to the other controller");
        if let Some(board) = &ctx.board {
            let current_replicas = policy.status.as_ref().and_then(|s| s.current_replicas);
            board.publish(namespace, name, Outcome::NotDecided { reason: why, current_replicas, at: now });
        }
        return Next::Period;
    }
    let labels = PolicyLabels { namespace: namespace.to_owned(), policy: name.to_owned() };
    // The stored status (our last write, echoed by the watch) is the starting point; the
    // controller keeps no second copy per policy.
    let mut status = policy.status.clone().unwrap_or_default();
    status.observed_generation = policy.metadata.generation;
    status.last_evaluation_time = Some(to_time(now));

    // 1. The spec.
    let resolved = match policy.to_core().validate() {
        Ok(r) => r,
        Err(errors) => {
            let message = format!("the policy is invalid: {errors}");
            set_condition(&mut status.conditions, "Ready", false, "InvalidSpec", message.clone(), now);
            set_condition(
                &mut status.conditions,
                "AbleToScale",
                false,
                "InvalidSpec",
                "the policy is invalid".into(),
                now,
            );
            set_condition(
                &mut status.conditions,
                "ScalingActive",
                false,
                "InvalidSpec",
                "the policy is invalid".into(),
                now,
            );
            not_evaluated(&mut status, "InvalidSpec", &message, now);
            ctx.count_error(policy, ErrorKind::InvalidPolicy);
            ctx.publish(policy, EventType::Warning, "InvalidSpec", "Validate", message).await;
            write_status(ctx, rt, policy, status, now).await;
            return Next::Period;
        }
    };
    if is_paused(policy) {
        pause(ctx, policy, &mut status, now).await;
        write_status(ctx, rt, policy, status, now).await;
        return Next::Period;
    }
    if status.conditions.iter().any(|c| c.type_ == "AbleToScale" && c.reason == "Paused") {
        let note = format!("the annotation {PAUSED_ANNOTATION} was removed: the policy scales again");
        ctx.publish(policy, EventType::Normal, "Resumed", "Resume", note).await;
    }
    ctx.telemetry.min_replicas.get_or_create(&labels).set(i64::from(resolved.min_replicas));
    ctx.telemetry.max_replicas.get_or_create(&labels).set(i64::from(resolved.max_replicas));
    let down_window = resolved.scale_down_stabilization(ctx.config.downscale_stabilization);
    ctx.telemetry
        .scale_down_stabilization_seconds
        .get_or_create(&labels)
        .set(i64::try_from(down_window.as_secs()).unwrap_or(i64::MAX));

    let mut seen_replicas = rt.seen_replicas;
    // The engine: restored from the status history on first sight.
    let engine = match rt.engine.as_mut() {
        Some(engine) => {
            if engine.policy() != &resolved {
                engine.set_policy(resolved.clone());
            }
            engine
        }
        None => {
            let config = EngineConfig::default()
                .with_sync_period(ctx.config.sync_period)
                .with_downscale_stabilization(ctx.config.downscale_stabilization);
            let mut engine = Engine::with_config(resolved.clone(), config);
            if let Some(mut history) = status.history.clone() {
                let interval = ctx.config.status_interval;
                if let Some(written_at) = policy.status.as_ref().and_then(|s| s.last_evaluation_time.as_ref())
                    && !interval.is_zero()
                {
                    let written_at = u64::try_from(written_at.0.as_millisecond()).unwrap_or(0);
                    let unwritten_for = interval.saturating_add(ctx.config.sync_period);
                    cover_unwritten(&mut history, Timestamp::from_millis(written_at), now, unwritten_for);
                }
                engine.restore_state(history);
            }
            rt.engine.insert(engine)
        }
    };

    // 2. The target.
    let scale_target = match ctx.scale.resolve(namespace, name, resolved.scale_target_ref.as_ref()).await {
        Ok(found) => found,
        Err(e) => {
            // The target of an earlier evaluation is not this policy's target now.
            status.target = None;
            status.reference = None;
            status.selector = None;
            block(ctx, policy, &mut status, &Blocked::target(&e), now).await;
            write_status(ctx, rt, policy, status, now).await;
            return Next::Period;
        }
    };
    let target = scale_target.target.clone();
    status.reference = Some(format!("{}/{}", target.kind, target.name));
    status.target = Some(target.clone());

    // 3. Refuse to fight.
    if let Some(blocked) = other_autoscaler(ctx, namespace, name, &target).await {
        block(ctx, policy, &mut status, &blocked, now).await;
        write_status(ctx, rt, policy, status, now).await;
        return Next::Period;
    }

    if let Some(blocked) = older_policy(ctx, policy, namespace, &target).await {
        block(ctx, policy, &mut status, &blocked, now).await;
        write_status(ctx, rt, policy, status, now).await;
        return Next::Period;
    }

    // 4. The scale and the pods.
    let scale = match ctx.scale.read(&scale_target).await {
        Ok(s) => s,
        Err(e @ ScaleError::NotFound { .. }) => {
            block(ctx, policy, &mut status, &Blocked::target(&e), now).await;
            write_status(ctx, rt, policy, status, now).await;
            return Next::Period;
        }
        Err(e) => {
            let message = format!("{e}; replicas left as they are");
            set_condition(&mut status.conditions, "Ready", true, "TargetResolved", ready_message(&target), now);
            set_condition(&mut status.conditions, "AbleToScale", false, "FailedGetScale", message.clone(), now);
            set_condition(
                &mut status.conditions,
                "ScalingActive",
                false,
                "FailedGetScale",
                "the policy is not evaluated".to_owned(),
                now,
            );
            not_evaluated(&mut status, "FailedGetScale", &message, now);
            ctx.count_error(policy, ErrorKind::GetScale);
            ctx.publish(policy, EventType::Warning, "FailedGetScale", "GetScale", message).await;
            write_status(ctx, rt, policy, status, now).await;
            return Next::Period;
        }
    };
    let current = scale.replicas;
    let status_replicas = scale.status_replicas;
    if ctx.board.is_some() {
        // Another actuator (KEDA's HPA) scales: what it did enters the engine's scale
        // history when seen, for the behavior's rate limits.
        if let Some(seen) = seen_replicas
            && seen != current
        {
            engine.record_scale(now, seen, current);
        }
        seen_replicas = Some(current);
    }
    let selector = scale.selector.clone().unwrap_or_default();
    status.selector = (!selector.is_empty()).then(|| selector.clone());
    status.current_replicas = Some(current);
    ctx.telemetry.current_replicas.get_or_create(&labels).set(i64::from(current));
    if selector.is_empty() {
        let blocked = Blocked::new(
            "InvalidSelector",
            ErrorKind::Target,
            format!("the scale subresource of {} {} reports no pod selector", target.kind, target.name),
        );
        block(ctx, policy, &mut status, &blocked, now).await;
        write_status(ctx, rt, policy, status, now).await;
        return Next::Period;
    }
    set_condition(&mut status.conditions, "Ready", true, "TargetResolved", ready_message(&target), now);

    let pods_api: Api<Pod> = Api::namespaced(ctx.client.clone(), namespace);
    let pods = ctx.timed("listing the target's pods", pods_api.list(&ListParams::default().labels(&selector))).await;

    // 5. Metrics and the decision.
    let target_id = TargetId::new(namespace, name);
    let scale_ref = ScaleTargetRef {
        api_version: Some(target.api_version.clone()),
        kind: target.kind.clone(),
        name: target.name.clone(),
    };
    let mut gpu = crate::gpu::GpuReading::default();
    let observed = match pods {
        Err(e) => {
            ctx.count_error(policy, ErrorKind::ListPods);
            ScalingMetrics::all_failed(
                resolved.rules.iter().map(|r| r.key.as_str()),
                &format!("listing the target's pods: {e}"),
            )
        }
        Ok(list) => {
            let infos: Vec<PodInfo> = list.items.iter().map(pod_info).collect();
            observe_time_to_scale(ctx, &mut status, &infos, now);
            // GPU rules first from the node exporters; the backend gets the rest.
            if let Some(exporters) = &ctx.gpu {
                gpu = exporters.read(&resolved.rules, &list.items, namespace).await;
            }
            let request = MetricsRequest {
                target: target_id.clone(),
                scale_target_ref: Some(scale_ref.clone()),
                rules: resolved.rules.iter().filter(|r| !gpu.handles(&r.key)).cloned().collect(),
                pods: infos.clone(),
            };
            let asked = || request.rules.iter().map(|r| r.key.as_str());
            let got = if request.rules.is_empty() {
                Ok(Ok(ScalingMetrics::default()))
            } else {
                tokio::time::timeout(ctx.config.request_timeout, ctx.metrics_source.get_scaling_metrics(&request, now))
                    .await
            };
            let mut observed = match got {
                Ok(Ok(m)) => join_pods(&infos, m),
                Ok(Err(e)) => join_pods(&infos, ScalingMetrics::all_failed(asked(), &error_chain(&e))),
                Err(_) => join_pods(
                    &infos,
                    ScalingMetrics::all_failed(
                        asked(),
                        &format!("the metrics backend did not answer within {:?}", ctx.config.request_timeout),
                    ),
                ),
            };
            gpu.apply(&mut observed);
            observed
        }
    };
    let scale_now = CurrentScale { replicas: current, status_replicas };
    let decision = engine.evaluate(now, scale_now, &observed);
    rt.seen_replicas = seen_replicas;
    record_decision(ctx, rt, &labels, &resolved, &decision, now);
    let failed: Vec<String> = decision
        .rules
        .iter()
        .filter(|r| r.status != RuleStatus::Ok)
        .map(|r| format!("{}: {}", r.name, r.reason.as_deref().unwrap_or("no value")))
        .collect();
    if !failed.is_empty() {
        ctx.count_error(policy, ErrorKind::GetMetrics);
        ctx.publish(policy, EventType::Warning, "FailedGetMetrics", "GetMetrics", failed.join("; ")).await;
    }
    let metrics_ok = decision.limited_by != LimitedBy::MetricsUnavailable;
    if metrics_ok {
        let winner = decision.winning_rule.clone().unwrap_or_default();
        set_condition(
            &mut status.conditions,
            "ScalingActive",
            true,
            "ValidMetricFound",
            format!("the policy computed replicas from its rules (winning rule: {winner})"),
            now,
        );
    } else if decision.limited_by == LimitedBy::ScalingDisabled {
        set_condition(
            &mut status.conditions,
            "ScalingActive",
            false,
            "ScalingDisabled",
            decision.explanation.clone(),
            now,
        );
    } else {
        set_condition(
            &mut status.conditions,
            "ScalingActive",
            false,
            "FailedGetMetrics",
            format!("replicas held at {current}: {}", failed.join("; ")),
            now,
        );
    }
    if decision.limited_by == LimitedBy::ScalingDisabled {
        set_condition(
            &mut status.conditions,
            "ScalingActive",
            false,
            "ScalingDisabled",
            decision.explanation.clone(),
            now,
        );
    }
    let (limited, limit_reason) = match decision.limited_by {
        LimitedBy::MinReplicas => (true, "TooFewReplicas"),
        LimitedBy::MaxReplicas => (true, "TooManyReplicas"),
        LimitedBy::ScaleUpPolicy => (true, "ScaleUpLimit"),
        LimitedBy::ScaleDownPolicy => (true, "ScaleDownLimit"),
        _ => (false, "DesiredWithinRange"),
    };
    let limit_message = if limited {
        format!("the desired count is limited by {}: {}", decision.limited_by, decision.explanation)
    } else {
        "the desired count is within the acceptable range".to_owned()
    };
    set_condition(&mut status.conditions, "ScalingLimited", limited, limit_reason, limit_message, now);

    status.desired_replicas = Some(decision.desired_replicas);
    status.winning_rule.clone_from(&decision.winning_rule);
    status.limited_by = Some(decision.limited_by.as_str().to_owned());
    status.explanation = Some(decision.explanation.clone());
    status.rules = decision
        .rules
        .iter()
        .map(|r| RuleStatusEntry {
            name: r.name.clone(),
            metric: r.metric.name().to_owned(),
            observed: r.observed,
            threshold: r.threshold,
            target_type: r.target_type.to_string(),
            proposal: r.proposal,
            status: match r.status {
                RuleStatus::Ok => "ok",
                RuleStatus::Missing => "missing",
                _ => "invalid",
            }
            .to_owned(),
            // Where a GPU rule's values came from (an exporter, or the backend and why).
            reason: match (
                r.reason.as_deref().map(|why| bounded(why.to_owned(), MAX_REASON_BYTES)),
                gpu.source_note(&r.name),
            ) {
                (Some(reason), Some(note)) if r.status == RuleStatus::Ok => Some(format!("{reason}; {note}")),
                (None, Some(note)) => Some(note),
                (reason, _) => reason,
            },
        })
        .collect();

    // 6. Act.
    let mut next = Next::At(decision.next_evaluation);
    let stabilized = match decision.limited_by {
        LimitedBy::ScaleDownStabilization => Some("ScaleDownStabilized"),
        LimitedBy::ScaleUpStabilization => Some("ScaleUpStabilized"),
        _ => None,
    };
    if decision.is_rescale() && !decision.actuate {
        set_condition(
            &mut status.conditions,
            "AbleToScale",
            true,
            "ObserveMode",
            format!("observe mode: would scale {current} -> {}, not applied", decision.desired_replicas),
            now,
        );
    } else if decision.actuate && ctx.board.is_some() {
        set_condition(
            &mut status.conditions,
            "AbleToScale",
            true,
            "Published",
            format!(
                "{current} -> {} published for KEDA's HPA to apply: {}",
                decision.desired_replicas, decision.explanation
            ),
            now,
        );
    } else if decision.actuate && ctx.config.dry_run {
        set_condition(
            &mut status.conditions,
            "AbleToScale",
            true,
            "DryRun",
            format!("dry run: would scale {current} -> {}, not applied", decision.desired_replicas),
            now,
        );
    } else if decision.actuate {
        let to = decision.desired_replicas;
        match ctx.scale.write(&scale_target, &scale, to).await {
            Ok(()) => {
                if let Some(engine) = rt.engine.as_mut() {
                    engine.record_scale(now, current, to);
                }
                let direction = Direction::of(current, to);
                ctx.telemetry
                    .scale_events
                    .get_or_create(&DirectionLabels {
                        namespace: namespace.to_owned(),
                        policy: name.to_owned(),
                        direction,
                    })
                    .inc();
                if rt.last_direction.is_some_and(|d| d != direction) {
                    ctx.telemetry.direction_changes.get_or_create(&labels).inc();
                }
                rt.last_direction = Some(direction);
                status.last_scale_time = Some(to_time(now));
                status.current_replicas = Some(to);
                status.pending_rescale = Some(PendingRescale { from: current, to, decided_at_ms: now.as_millis() });
                let message = format!("New size: {to}; reason: {}", decision.explanation);
                set_condition(&mut status.conditions, "AbleToScale", true, "SucceededRescale", message.clone(), now);
                ctx.publish(policy, EventType::Normal, "SuccessfulRescale", "Scale", message).await;
                tracing::info!(namespace, policy = name, from = current, to, "rescaled");
            }
            Err(ScaleError::Moved { now: now_replicas, .. }) => {
                // Someone else changed the replicas since we read them: decide again on
                // the new count right away instead of overwriting it.
                tracing::info!(
                    namespace,
                    policy = name,
                    from = current,
                    now = now_replicas,
                    "replicas changed under us; re-evaluating"
                );
                set_condition(
                    &mut status.conditions,
                    "AbleToScale",
                    true,
                    "ScaleChanged",
                    format!(
                        "the target's replicas changed from {current} to {now_replicas} while scaling to {to}; re-evaluating"
                    ),
                    now,
                );
                next = Next::Soon;
            }
            Err(e) => {
                // The failed request alone: the message names the target itself.
                let e = match e {
                    ScaleError::Request { source, .. } => source.to_string(),
                    other => other.to_string(),
                };
                let message = format!(
                    "scaling {} {} from {current} to {to} failed: {e}; replicas left as they are",
                    target.kind, target.name
                );
                set_condition(&mut status.conditions, "AbleToScale", false, "FailedUpdateScale", message.clone(), now);
                ctx.count_error(policy, ErrorKind::UpdateScale);
                ctx.publish(policy, EventType::Warning, "FailedRescale", "Scale", message).await;
                status.current_replicas = Some(current);
            }
        }
    } else if let Some(reason) = stabilized {
        set_condition(&mut status.conditions, "AbleToScale", true, reason, decision.explanation.clone(), now);
    } else {
        set_condition(
            &mut status.conditions,
            "AbleToScale",
            true,
            "ReadyForNewScale",
            "recommended size matches current size".to_owned(),
            now,
        );
    }

    if ctx.board.is_some() && (current == 0 || decision.desired_replicas == 0) {
        // At zero (or on the way there) an activation must be seen soon, not a sync
        // period later.
        let soon = now.saturating_add(ctx.config.activation_period);
        if let Next::At(at) = next {
            next = Next::At(at.min(soon));
        }
    }
    status.history = rt.engine.as_ref().map(|e| e.state().clone());
    write_status(ctx, rt, policy, status, now).await;
    next
}

/// `None` when this controller evaluates the policy, else why the other one does (see
/// [`crate::publish`]): the one writing `/scale` leaves the policies a KEDA ScaledObject
/// drives to the publishing one, which evaluates only those.
async fn not_ours<M: GetScalingMetrics + 'static>(ctx: &Context<M>, namespace: &str, name: &str) -> Option<String> {
    let publishing = ctx.board.is_some();
    if is_inline(name) {
        return (!publishing).then(|| "an inline policy of a ScaledObject is the KEDA scaler's".to_owned());
    }
    match ctx.scale.cached_list(namespace, &scaled_object_resource()).await {
        Ok(list) => {
            let driver = list.as_ref().and_then(|l| l.iter().find(|so| drives(so, namespace, name)));
            match (publishing, driver) {
                (false, Some(so)) => Some(format!(
                    "KEDA ScaledObject {namespace}/{} drives it through the external scaler (vllm-autoscaler keda-scaler)",
                    so["metadata"]["name"].as_str().unwrap_or_default()
                )),
                (true, None) => Some(format!(
                    "no KEDA ScaledObject in {namespace} names this policy in an external trigger's metadata.policy"
                )),
                _ => None,
            }
        }
        // Cannot tell: the controller writing `/scale` goes on (its conflict check warns
        // too); the publishing one waits.
        Err(e) => publishing.then(|| format!("listing KEDA ScaledObjects in {namespace} failed: {e}")),
    }
}

fn scaled_object_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(&GroupVersionKind::gvk("keda.sh", "v1alpha1", "ScaledObject"), "scaledobjects")
}

/// The annotation that holds a policy (KEDA's `autoscaling.keda.sh/paused`, for this CRD):
/// `"true"` (any case) pauses, anything else or no annotation does not.
pub const PAUSED_ANNOTATION: &str = "autoscaler.production-stack/paused";

fn is_paused(policy: &VllmScalingPolicyResource) -> bool {
    policy.annotations().get(PAUSED_ANNOTATION).is_some_and(|v| v.trim().eq_ignore_ascii_case("true"))
}

/// Holds a paused policy: nothing is read or written but its status. `Ready` stays `True`
/// (the policy is fine, as a paused KEDA ScaledObject stays Ready, so `kubectl wait` and
/// Argo CD see a healthy object) with reason `Paused`; `AbleToScale` and `ScalingActive`
/// are `False` with reason `Paused`; a Normal event marks the start of the pause.
async fn pause<M: GetScalingMetrics + 'static>(
    ctx: &Context<M>,
    policy: &VllmScalingPolicyResource,
    status: &mut PolicyStatus,
    now: Timestamp,
) {
    let message = format!(
        "paused by the annotation {PAUSED_ANNOTATION}: \"true\": replicas are left as they are; remove the annotation to resume"
    );
    let was_paused = status.conditions.iter().any(|c| c.type_ == "AbleToScale" && c.reason == "Paused");
    set_condition(&mut status.conditions, "Ready", true, "Paused", message.clone(), now);
    set_condition(&mut status.conditions, "AbleToScale", false, "Paused", message.clone(), now);
    set_condition(
        &mut status.conditions,
        "ScalingActive",
        false,
        "Paused",
        "the policy is not evaluated while paused".to_owned(),
        now,
    );
    not_evaluated(status, "Paused", &message, now);
    if !was_paused {
        ctx.publish(policy, EventType::Normal, "Paused", "Pause", message).await;
    }
}

fn ready_message(target: &ResolvedTarget) -> String {
    format!("the policy is valid and targets {} {} ({})", target.kind, target.name, target.api_version)
}

/// Joins the backend's per-pod values onto the pods the API server listed: phase,
/// readiness and deletion come from the cluster, values from the backend; a listed pod
/// the backend did not report counts as missing (HPA semantics), a reported pod that is
/// not listed (gone, or outside the selector) is dropped.
fn join_pods(pods: &[PodInfo], mut metrics: ScalingMetrics) -> ScalingMetrics {
    let mut by_name: HashMap<String, BTreeMap<String, f64>> =
        std::mem::take(&mut metrics.pods).into_iter().map(|p| (p.name, p.metrics)).collect();
    metrics.pods = pods
        .iter()
        .map(|p| PodMetrics {
            name: p.name.clone(),
            phase: p.phase,
            ready: p.ready,
            deleting: p.deleting,
            metrics: by_name.remove(&p.name).unwrap_or_default(),
        })
        .collect();
    metrics
}

fn observe_time_to_scale<M>(ctx: &Context<M>, status: &mut PolicyStatus, pods: &[PodInfo], now: Timestamp) {
    let Some(pending) = status.pending_rescale else { return };
    let live = pods.iter().filter(|p| !p.deleting && p.phase != PodPhase::Failed && p.phase != PodPhase::Succeeded);
    let done = if pending.to > pending.from {
        live.filter(|p| p.ready && p.phase == PodPhase::Running).count() >= usize::try_from(pending.to).unwrap_or(0)
    } else {
        live.count() <= usize::try_from(pending.to).unwrap_or(0)
    };
    if done {
        let took = now.saturating_duration_since(Timestamp::from_millis(pending.decided_at_ms));
        let direction = Direction::of(pending.from, pending.to);
        ctx.telemetry.time_to_scale.get_or_create(&ScaleDirectionLabels { direction }).observe(took.as_secs_f64());
        status.pending_rescale = None;
    }
}

fn record_decision<M>(
    ctx: &Context<M>,
    rt: &mut PolicyRuntime,
    labels: &PolicyLabels,
    resolved: &ResolvedPolicy,
    decision: &Decision,
    now: Timestamp,
) {
    let t = &ctx.telemetry;
    let direction = Direction::of(decision.current_replicas, decision.desired_replicas);
    t.decisions
        .get_or_create(&DirectionLabels {
            namespace: labels.namespace.clone(),
            policy: labels.policy.clone(),
            direction,
        })
        .inc();
    t.desired_replicas.get_or_create(labels).set(i64::from(decision.desired_replicas));
    let mut current_labels = Vec::new();
    for (rule, outcome) in resolved.rules.iter().zip(&decision.rules) {
        let rl = RuleLabels {
            namespace: labels.namespace.clone(),
            policy: labels.policy.clone(),
            rule: rule.key.clone(),
            metric: rule.metric.name().to_owned(),
        };
        t.rule_threshold.get_or_create(&rl).set(rule.threshold);
        match (outcome.status, outcome.observed) {
            (RuleStatus::Ok, Some(v)) => {
                t.rule_observed.get_or_create(&rl).set(v);
                rt.missing_since.remove(&rule.key);
                t.rule_missing_seconds.get_or_create(&rl).set(0.0);
            }
            _ => {
                // A rule without a value has no observed series: a stale number would lie.
                t.rule_observed.remove(&rl);
                let since = *rt.missing_since.entry(rule.key.clone()).or_insert(now);
                t.rule_missing_seconds.get_or_create(&rl).set(now.saturating_duration_since(since).as_secs_f64());
            }
        }
        match outcome.proposal {
            Some(p) => {
                t.rule_proposal.get_or_create(&rl).set(i64::from(p));
            }
            None => {
                t.rule_proposal.remove(&rl);
            }
        }
        current_labels.push((rl.rule, rl.metric));
    }
    // Rules removed from the policy lose their series.
    for (rule, metric) in std::mem::replace(&mut rt.rule_labels, current_labels.clone()) {
        if !current_labels.iter().any(|(r, m)| *r == rule && *m == metric) {
            let rl = RuleLabels { namespace: labels.namespace.clone(), policy: labels.policy.clone(), rule, metric };
            t.rule_observed.remove(&rl);
            t.rule_threshold.remove(&rl);
            t.rule_proposal.remove(&rl);
            t.rule_missing_seconds.remove(&rl);
        }
    }
}

/// Sets the conditions of a policy that cannot act, counts and reports it.
async fn block<M: GetScalingMetrics + 'static>(
    ctx: &Context<M>,
    policy: &VllmScalingPolicyResource,
    status: &mut PolicyStatus,
    blocked: &Blocked,
    now: Timestamp,
) {
    block_on(ctx, &Subject::of(policy), status, blocked, "ResolveTarget", now).await;
}

/// [`block`] for any subject, with the event's action.
async fn block_on<M: GetScalingMetrics + 'static>(
    ctx: &Context<M>,
    subject: &Subject,
    status: &mut PolicyStatus,
    blocked: &Blocked,
    action: &str,
    now: Timestamp,
) {
    set_condition(&mut status.conditions, "Ready", false, blocked.reason, blocked.message.clone(), now);
    set_condition(&mut status.conditions, "AbleToScale", false, blocked.reason, blocked.message.clone(), now);
    set_condition(
        &mut status.conditions,
        "ScalingActive",
        false,
        blocked.reason,
        "the policy is not evaluated".to_owned(),
        now,
    );
    not_evaluated(status, blocked.reason, &blocked.message, now);
    ctx.count_error_on(subject, blocked.kind);
    ctx.publish_on(subject, EventType::Warning, blocked.reason, action, blocked.message.clone()).await;
}

/// Clears what an evaluation that did not happen would leave stale: the decision, the
/// rules' values and `ScalingLimited` describe the last evaluation, not the policy now.
/// The explanation says why nothing was decided.
fn not_evaluated(status: &mut PolicyStatus, reason: &str, why: &str, now: Timestamp) {
    status.desired_replicas = None;
    status.winning_rule = None;
    status.limited_by = None;
    status.rules.clear();
    status.explanation = Some(why.to_owned());
    set_condition(
        &mut status.conditions,
        "ScalingLimited",
        false,
        reason,
        "the policy is not evaluated".to_owned(),
        now,
    );
}

async fn write_status<M: GetScalingMetrics + 'static>(
    ctx: &Context<M>,
    rt: &mut PolicyRuntime,
    policy: &VllmScalingPolicyResource,
    status: PolicyStatus,
    now: Timestamp,
) {
    write_status_on(ctx, rt, &Subject::of(policy), status, now).await;
}

/// Writes the status when it is due: something [`status_fingerprint`] covers changed, the
/// newest recommendation is higher than the newest one written (see [`cover_unwritten`]),
/// or `--status-interval` has passed since the last write (zero: always). A failed write
/// is due again at the next evaluation.
async fn write_status_on<M: GetScalingMetrics + 'static>(
    ctx: &Context<M>,
    rt: &mut PolicyRuntime,
    subject: &Subject,
    status: PolicyStatus,
    now: Timestamp,
) {
    if let Some(board) = &ctx.board {
        board.publish(&subject.namespace, &subject.name, outcome_of(&status, now));
    }
    if is_inline(&subject.name) {
        // An inline policy has no object: its history lives in the engine only.
        return;
    }
    let interval = ctx.config.status_interval;
    let written = Written {
        fingerprint: status_fingerprint(&status),
        newest_recommendation: newest_recommendation(status.history.as_ref()).map(|r| r.replicas),
        at: now,
    };
    let due = match rt.written {
        None => true,
        Some(last) => {
            interval.is_zero()
                || last.fingerprint != written.fingerprint
                || written.newest_recommendation > last.newest_recommendation
                || now.saturating_duration_since(last.at) >= interval
        }
    };
    if !due {
        ctx.telemetry.status_writes_skipped.inc();
        return;
    }
    let (namespace, name) = (&subject.namespace, &subject.name);
    let api: Api<VllmScalingPolicyResource> = Api::namespaced(ctx.client.clone(), namespace);
    let patch = status.merge_patch();
    match ctx.timed("writing the status", api.patch_status(name, &PatchParams::default(), &Patch::Merge(&patch))).await
    {
        Ok(_) => {
            ctx.telemetry.status_writes.inc();
            rt.written = Some(written);
        }
        Err(e) => {
            rt.written = None;
            ctx.count_error_on(subject, ErrorKind::Status);
            tracing::warn!(namespace, policy = name, error = %e, "writing the policy status failed");
        }
    }
}

/// What an evaluation that ends with `status` publishes: its decision when it made one.
fn outcome_of(status: &PolicyStatus, now: Timestamp) -> Outcome {
    let explanation = status.explanation.clone().unwrap_or_default();
    match (status.desired_replicas, status.current_replicas) {
        (Some(desired), Some(current)) => Outcome::Decided(Published {
            // An observe-mode policy reports what it would do; what it publishes for
            // another actuator is to leave the replicas alone.
            desired_replicas: if status.conditions.iter().any(|c| c.reason == "ObserveMode") {
                current
            } else {
                desired
            },
            current_replicas: current,
            no_valid_metric: status.limited_by.as_deref() == Some(LimitedBy::MetricsUnavailable.as_str()),
            explanation,
            at: now,
        }),
        _ => Outcome::NotDecided { reason: explanation, current_replicas: status.current_replicas, at: now },
    }
}

fn newest_recommendation(
    history: Option<&vllm_scaling_core::EngineState>,
) -> Option<vllm_scaling_core::Recommendation> {
    history?.recommendations.iter().max_by_key(|r| r.at).copied()
}

/// What of a status counts as a change worth a write, as one hash:
///
/// * everything a user reads in `kubectl get`/`describe`: the target, selector, current
///   and desired replicas, last scale time, winning rule, `limitedBy`, each rule's
///   status, proposal, threshold and type, each condition's status and reason, the
///   pending rescale, the observed generation;
/// * texts (the explanation, condition messages, rule reasons) with their numbers masked:
///   a new sentence counts, a new number in the same sentence does not (the observed
///   values are on `/metrics` at every evaluation, and in the status at every interval);
/// * of the engine history, what a restarted controller must not lose: the scale events
///   (the rate limits), the panic state and the idle time of scale to zero. The
///   recommendations are covered by the newest-recommendation rule and by
///   [`cover_unwritten`], the panic and forecast samples are short-lived inputs.
///
/// Left out: `lastEvaluationTime`, the rules' observed values, and the numbers in texts.
fn status_fingerprint(status: &PolicyStatus) -> u64 {
    use std::hash::{Hash, Hasher};
    fn text(h: &mut impl Hasher, s: Option<&str>) {
        let Some(s) = s else {
            0u8.hash(h);
            return;
        };
        let mut in_number = false;
        for c in s.chars() {
            let digit = c.is_ascii_digit() || (in_number && c == '.');
            if digit && !in_number {
                '#'.hash(h);
            } else if !digit {
                c.hash(h);
            }
            in_number = digit;
        }
        1u8.hash(h);
    }
    let mut h = std::collections::hash_map::DefaultHasher::new();
    let PolicyStatus {
        observed_generation,
        target,
        reference,
        selector,
        current_replicas,
        desired_replicas,
        last_scale_time,
        last_evaluation_time: _,
        winning_rule,
        limited_by,
        explanation,
        rules,
        conditions,
        history,
        pending_rescale,
    } = status;
    (observed_generation, target, reference, selector, current_replicas, desired_replicas).hash(&mut h);
    last_scale_time.as_ref().map(|t| t.0.as_millisecond()).hash(&mut h);
    (winning_rule, limited_by).hash(&mut h);
    pending_rescale.map(|p| (p.from, p.to, p.decided_at_ms)).hash(&mut h);
    text(&mut h, explanation.as_deref());
    for r in rules {
        (&r.name, &r.metric, r.threshold.to_bits(), &r.target_type, r.proposal, &r.status).hash(&mut h);
        text(&mut h, r.reason.as_deref());
    }
    for c in conditions {
        (&c.type_, &c.status, &c.reason).hash(&mut h);
        text(&mut h, Some(&c.message));
    }
    if let Some(history) = history {
        for e in history.scale_up_events.iter().chain(&history.scale_down_events) {
            (e.at.as_millis(), e.change).hash(&mut h);
        }
        serde_json::to_string(&history.advanced.panic).unwrap_or_default().hash(&mut h);
        history.advanced.idle_since.map(Timestamp::as_millis).hash(&mut h);
    }
    h.finish()
}

/// Makes a restored history safe although the last evaluations before a restart may not
/// have been written. Those unwritten recommendations were each at most the newest
/// written one (a higher one is written at once) and were made before
/// `written_at + status_interval + sync_period` (a write is due by then). A copy of the
/// newest written recommendation stamped at that time (or now, if earlier) bounds them
/// all, so the restarted controller's scale-down stabilization holds at least as long as
/// the stopped one's would have: never an earlier scale-down, at most one interval later.
fn cover_unwritten(
    history: &mut vllm_scaling_core::EngineState,
    written_at: Timestamp,
    now: Timestamp,
    unwritten_for: Duration,
) {
    let Some(newest) = newest_recommendation(Some(history)) else { return };
    let stamp = written_at.saturating_add(unwritten_for).min(now);
    if stamp > newest.at {
        history.recommendations.push(vllm_scaling_core::Recommendation { at: stamp, replicas: newest.replicas });
    }
}

/// An HPA or KEDA ScaledObject that targets the same object, if any.
async fn other_autoscaler<M: GetScalingMetrics + 'static>(
    ctx: &Context<M>,
    namespace: &str,
    policy: &str,
    target: &ResolvedTarget,
) -> Option<Blocked> {
    let group_of = |api_version: &str| api_version.split_once('/').map_or("", |(g, _)| g).to_owned();
    let target_group = group_of(&target.api_version);
    let same = |reference: &Value, default_kind: &str| {
        let kind = reference["kind"].as_str().unwrap_or(default_kind);
        let group = reference["apiVersion"].as_str().map_or_else(|| target_group.clone(), group_of);
        reference["name"].as_str() == Some(target.name.as_str()) && kind == target.kind && group == target_group
    };
    let conflict = |what: &str, other: &Value| {
        let other_name = other["metadata"]["name"].as_str().unwrap_or_default();
        Blocked::new(
            "ConflictingAutoscaler",
            ErrorKind::ConflictingAutoscaler,
            format!(
                "{what} {namespace}/{other_name} also scales {} {}; this policy does nothing until one of them is removed",
                target.kind, target.name
            ),
        )
    };
    // The ScaledObjects that drive this policy through the KEDA scaler (only a publishing
    // controller gets here with one), and the HPAs KEDA made for them, are not others.
    let mut ours: Vec<String> = Vec::new();
    match ctx.scale.cached_list(namespace, &scaled_object_resource()).await {
        Ok(Some(list)) => {
            for so in list.iter() {
                let so_name = so["metadata"]["name"].as_str().unwrap_or_default();
                let on_target = same(&so["spec"]["scaleTargetRef"], "Deployment");
                if ctx.board.is_some() && drives(so, namespace, policy) {
                    if !on_target {
                        let theirs = &so["spec"]["scaleTargetRef"];
                        return Some(Blocked::new(
                            "TargetMismatch",
                            ErrorKind::Target,
                            format!(
                                "KEDA ScaledObject {namespace}/{so_name} drives this policy but scales {} {}, not the policy's {} {}",
                                theirs["kind"].as_str().unwrap_or("Deployment"),
                                theirs["name"].as_str().unwrap_or_default(),
                                target.kind,
                                target.name
                            ),
                        ));
                    }
                    ours.push(so_name.to_owned());
                } else if on_target {
                    return Some(conflict("KEDA ScaledObject", so));
                }
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(namespace, error = %e, "could not check for KEDA ScaledObjects"),
    }
    let hpas = ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("autoscaling", "v2", "HorizontalPodAutoscaler"),
        "horizontalpodautoscalers",
    );
    let keda_made = |hpa: &Value| {
        let owned = hpa["metadata"]["ownerReferences"].as_array().is_some_and(|owners| {
            owners.iter().any(|o| {
                o["kind"].as_str() == Some("ScaledObject")
                    && o["name"].as_str().is_some_and(|n| ours.iter().any(|so| so == n))
            })
        });
        let named =
            hpa["metadata"]["name"].as_str().is_some_and(|n| ours.iter().any(|so| n == format!("keda-hpa-{so}")));
        owned || named
    };
    match ctx.scale.cached_list(namespace, &hpas).await {
        Ok(Some(list)) => {
            if let Some(other) = list.iter().find(|o| same(&o["spec"]["scaleTargetRef"], "") && !keda_made(o)) {
                return Some(conflict("HorizontalPodAutoscaler", other));
            }
        }
        Ok(None) => {}
        Err(e) => tracing::warn!(namespace, error = %e, "could not check for HorizontalPodAutoscalers"),
    }
    None
}

/// A target as two policies can share it: API group, kind, name.
type TargetKey = (String, String, String);

fn target_key(target: &ResolvedTarget) -> TargetKey {
    let group = target.api_version.split_once('/').map_or("", |(g, _)| g).to_owned();
    (group, target.kind.clone(), target.name.clone())
}

/// A policy's seniority: older first (`creationTimestamp`, then name), as in the refusal
/// to fight two policies on one target.
type Seniority = (Option<Time>, String);

/// Which policies of a namespace claim which target, as resolved when it was built.
struct Claims {
    built: tokio::time::Instant,
    /// The `(name, generation)` of every policy it saw, so a new or edited policy rebuilds it.
    seen: std::collections::HashSet<(String, Option<i64>)>,
    by_target: HashMap<TargetKey, Vec<Seniority>>,
}

impl<M: GetScalingMetrics + 'static> Context<M> {
    /// The claims of `namespace`, rebuilt every cache TTL and whenever `policy` (new or
    /// edited) is not in them. Built from the watch's store under [`run`] (no request),
    /// else from a cached list.
    async fn claims(&self, namespace: &str, policy: &VllmScalingPolicyResource) -> Arc<Claims> {
        let me = (policy.name_any(), policy.metadata.generation);
        let cached = self.claims.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(namespace).cloned();
        if let Some(claims) = cached
            && claims.built.elapsed() < self.config.cache_ttl
            && claims.seen.contains(&me)
        {
            return claims;
        }
        let objects: Vec<DynamicObject> = match self.policy_store.get() {
            Some(store) => store
                .state()
                .iter()
                .filter(|o| o.metadata.namespace.as_deref() == Some(namespace))
                .map(|o| (**o).clone())
                .collect(),
            None => match self.scale.cached_list(namespace, &policy_resource()).await {
                Ok(Some(list)) => list.iter().filter_map(|v| serde_json::from_value(v.clone()).ok()).collect(),
                Ok(None) => Vec::new(),
                Err(e) => {
                    tracing::warn!(namespace, error = %e, "could not list the policies to check for conflicts");
                    Vec::new()
                }
            },
        };
        let mut claims = Claims {
            built: tokio::time::Instant::now(),
            seen: std::collections::HashSet::new(),
            by_target: HashMap::new(),
        };
        for object in &objects {
            let Some(name) = object.metadata.name.clone() else { continue };
            claims.seen.insert((name.clone(), object.metadata.generation));
            // Only policies that can write /scale claim a target: an undecodable or
            // invalid policy does nothing, and an observe-mode policy only reports (so a
            // policy can shadow another one to compare). A paused policy holds its target.
            let Ok(spec) = decode_spec(object) else { continue };
            let other = VllmScalingPolicyResource { metadata: object.metadata.clone(), spec, status: None };
            let Ok(resolved) = other.to_core().validate() else { continue };
            if resolved.mode == vllm_scaling_core::Mode::Observe {
                continue;
            }
            if let Ok(found) = self.scale.resolve(namespace, &name, resolved.scale_target_ref.as_ref()).await {
                let seniority = (object.metadata.creation_timestamp.clone(), name);
                claims.by_target.entry(target_key(&found.target)).or_default().push(seniority);
            }
        }
        let claims = Arc::new(claims);
        self.claims
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(namespace.to_owned(), claims.clone());
        claims
    }
}

/// An older `vLLMScalingPolicy` (in actuating mode) on the same target: the older keeps
/// the target, this one is blocked. Two policies on one object would otherwise both patch
/// `/scale` and flip it between their answers on every evaluation.
async fn older_policy<M: GetScalingMetrics + 'static>(
    ctx: &Context<M>,
    policy: &VllmScalingPolicyResource,
    namespace: &str,
    target: &ResolvedTarget,
) -> Option<Blocked> {
    if policy.spec.0.mode == Some(vllm_scaling_core::Mode::Observe) {
        return None;
    }
    let claims = ctx.claims(namespace, policy).await;
    let me: Seniority = (policy.metadata.creation_timestamp.clone(), policy.name_any());
    let oldest = claims.by_target.get(&target_key(target))?.iter().filter(|other| other.1 != me.1).min()?.clone();
    (oldest < me).then(|| {
        Blocked::new(
            "ConflictingAutoscaler",
            ErrorKind::ConflictingAutoscaler,
            format!(
                "vLLMScalingPolicy {namespace}/{} is older and also scales {} {}; this policy does nothing until one of them is removed or retargeted (the older policy keeps the target)",
                oldest.1, target.kind, target.name
            ),
        )
    })
}

/// The policy's current [`EngineState`](vllm_scaling_core::EngineState) as the
/// controller holds it, for tests and diagnostics.
pub async fn engine_state<M: GetScalingMetrics + 'static>(
    ctx: &Context<M>,
    namespace: &str,
    name: &str,
) -> Option<vllm_scaling_core::EngineState> {
    let rt = ctx
        .runtimes
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .get(&(namespace.to_owned(), name.to_owned()))
        .cloned()?;
    let rt = rt.lock().await;
    rt.engine.as_ref().map(|e| e.state().clone())
}

/// What kube-runtime does when [`reconcile`] returns an error: try again after a sync
/// period.
pub fn error_policy<M>(policy: Arc<VllmScalingPolicyResource>, error: &Error, ctx: Arc<Context<M>>) -> Action {
    tracing::warn!(policy = %policy.name_any(), error = %error_chain(error), "reconcile failed");
    Action::requeue(ctx.config.sync_period)
}

fn error_policy_object<M>(object: Arc<DynamicObject>, error: &Error, ctx: Arc<Context<M>>) -> Action {
    tracing::warn!(policy = %object.name_any(), error = %error_chain(error), "reconcile failed");
    Action::requeue(ctx.config.sync_period)
}

/// Runs the controller until `shutdown` resolves: watches every `vLLMScalingPolicy` (in
/// the configured namespace, or all), evaluates each on its schedule, and forgets deleted
/// ones. `ready` turns true once the first list of policies has arrived.
pub async fn run<M: GetScalingMetrics + 'static>(
    ctx: Arc<Context<M>>,
    ready: Arc<AtomicBool>,
    shutdown: impl Future<Output = ()> + Send + Sync + 'static,
) {
    // Watched as untyped objects and decoded one by one (`reconcile_object`): a typed watch
    // fails the whole list on one policy that does not decode, which would stop every
    // policy and keep /readyz false.
    let resource = policy_resource();
    let api: Api<DynamicObject> = match &ctx.config.namespace {
        Some(ns) => Api::namespaced_with(ctx.client.clone(), ns, &resource),
        None => Api::all_with(ctx.client.clone(), &resource),
    };
    let controller = Controller::new_with(api, watcher::Config::default(), resource)
        .with_config(RuntimeConfig::default().concurrency(ctx.config.concurrency));
    let store = controller.store();
    let _ = ctx.policy_store.set(store.clone());
    let sweeper_ctx = ctx.clone();
    let sweeper = tokio::spawn(async move {
        // `Store::wait_until_ready` wakes only its most recent poller (a oneshot channel
        // underneath), and the controller's own runner polls it too: poll it again on a
        // short timer instead of waiting once.
        loop {
            match tokio::time::timeout(Duration::from_millis(100), store.wait_until_ready()).await {
                Ok(Ok(())) => {
                    ready.store(true, Ordering::SeqCst);
                    break;
                }
                Ok(Err(_)) => break,
                Err(_) => {}
            }
        }
        let mut tick = tokio::time::interval(sweeper_ctx.config.sync_period);
        loop {
            tick.tick().await;
            sweeper_ctx.telemetry.leader.set(i64::from(sweeper_ctx.leadership.is_leader()));
            let alive: std::collections::HashSet<(String, String)> =
                store.state().iter().map(|p| (p.namespace().unwrap_or_default(), p.name_any())).collect();
            sweeper_ctx.telemetry.policies.set(i64::try_from(alive.len()).unwrap_or(i64::MAX));
            sweeper_ctx.retain_policies(&alive);
        }
    });
    controller
        .graceful_shutdown_on(shutdown)
        .run(reconcile_object, error_policy_object, ctx)
        .for_each(|result| async move {
            if let Err(e) = result {
                tracing::debug!(error = %error_chain(&e), "controller event");
            }
        })
        .await;
    sweeper.abort();
}
