//! [`KubeScale`]: the core's [`AdjustReplicas`] port on any Kubernetes `/scale`
//! subresource, and the target resolution the controller uses (an object name, a served
//! model id, or the workload annotated with the policy's name).
//!
//! A target kind is found through API discovery, so any `group/version` kind that serves
//! a scale subresource works (apps/v1 Deployment and StatefulSet, LeaderWorkerSet, a
//! custom resource); a kind the API server does not serve, or one without a scale
//! subresource, is a clear [`ScaleError`], never a guess.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, ListParams, Patch, PatchParams};
use kube::{Api, Client};
use serde_json::{Value, json};
use vllm_scaling_core::{AdjustReplicas, CurrentScale, PodInfo, ScaleTargetRef, TargetId, error_chain};

use crate::crd::ResolvedTarget;
use crate::discovery::{Match, POLICY_ANNOTATION, is_object_name, match_annotation, match_model, pod_info};

/// A request to the API server that failed or did not answer in time.
#[derive(Debug)]
#[non_exhaustive]
pub enum RequestError {
    /// The API server (or the connection to it) failed.
    Api(kube::Error),
    /// No answer within the request timeout: the step, and the timeout.
    Timeout(&'static str, Duration),
}

impl std::fmt::Display for RequestError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Api(kube::Error::Api(s)) => {
                write!(f, "the API server answered {} {}: {}", s.code, s.reason, s.message)
            }
            Self::Api(e) => f.write_str(&error_chain(e)),
            Self::Timeout(step, after) => write!(f, "{step} did not answer within {after:?}"),
        }
    }
}

impl std::error::Error for RequestError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            // The Display already carries the API error's text: no source, so an error
            // chain does not repeat it.
            Self::Api(_) | Self::Timeout(..) => None,
        }
    }
}

impl RequestError {
    /// The HTTP status the API server answered, if it answered.
    #[must_use]
    pub fn code(&self) -> Option<u16> {
        match self {
            Self::Api(kube::Error::Api(s)) => Some(s.code),
            _ => None,
        }
    }
}

/// Runs `fut` with a timeout.
pub(crate) async fn timed<T>(
    timeout: Duration,
    step: &'static str,
    fut: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, RequestError> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(RequestError::Api(e)),
        Err(_) => Err(RequestError::Timeout(step, timeout)),
    }
}

/// Why a target could not be resolved, read or scaled. Each variant has a
/// [`reason`](Self::reason), the condition reason the controller reports it under.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScaleError {
    /// `scaleTargetRef` names a kind without `apiVersion` that has no well-known default.
    #[error("spec.scaleTargetRef.apiVersion: required for kind {kind}")]
    MissingApiVersion {
        /// The kind.
        kind: String,
    },
    /// The API server does not serve the kind (or its group/version), or discovery failed.
    #[error("{why}")]
    UnknownKind {
        /// `group/version`.
        api_version: String,
        /// The kind.
        kind: String,
        /// What discovery said.
        why: String,
    },
    /// The kind is served but has no scale subresource.
    #[error("{kind} ({api_version}) has no scale subresource, so it cannot be scaled")]
    NoScaleSubresource {
        /// `group/version`.
        api_version: String,
        /// The kind.
        kind: String,
    },
    /// No workload of the kind serves the model id.
    #[error(
        "scaleTargetRef.name `{model}` is not an object name, so it is read as a served model id, and no {kind} in namespace {namespace} serves it (looked for --model, --served-model-name and `vllm serve` in {searched} workloads)"
    )]
    ModelNotServed {
        /// The namespace.
        namespace: String,
        /// The kind.
        kind: String,
        /// The model id.
        model: String,
        /// How many workloads were searched.
        searched: usize,
    },
    /// Several workloads of the kind serve the model id.
    #[error(
        "several {kind}s in namespace {namespace} serve model `{model}` ({}); name one of them in scaleTargetRef.name",
        names.join(", ")
    )]
    AmbiguousModel {
        /// The namespace.
        namespace: String,
        /// The kind.
        kind: String,
        /// The model id.
        model: String,
        /// The workloads that serve it.
        names: Vec<String>,
    },
    /// No `scaleTargetRef`, and no workload carries the policy annotation.
    #[error(
        "spec.scaleTargetRef is omitted and no Deployment, StatefulSet or LeaderWorkerSet in namespace {namespace} has the annotation {POLICY_ANNOTATION}: {policy}"
    )]
    NoTarget {
        /// The namespace.
        namespace: String,
        /// The policy's name.
        policy: String,
    },
    /// No `scaleTargetRef`, and several workloads carry the policy annotation.
    #[error(
        "several workloads carry {POLICY_ANNOTATION}: {policy} ({}); keep the annotation on one, or set spec.scaleTargetRef",
        found.join(", ")
    )]
    AmbiguousTarget {
        /// The policy's name.
        policy: String,
        /// `Kind/name` of each.
        found: Vec<String>,
    },
    /// Listing the workloads of a kind (to match a model id or an annotation) failed.
    #[error("listing {plural} in {namespace}: {source}")]
    ListWorkloads {
        /// The namespace.
        namespace: String,
        /// The resource, such as `deployments`.
        plural: String,
        /// The failed request.
        source: RequestError,
    },
    /// The resolved object does not exist.
    #[error("{kind} {namespace}/{name} does not exist")]
    NotFound {
        /// The namespace.
        namespace: String,
        /// The kind.
        kind: String,
        /// The object's name.
        name: String,
    },
    /// Reading or patching the scale subresource failed.
    #[error("{step} of {kind} {name}: {source}")]
    Request {
        /// `reading the scale`, `writing the scale`, `re-reading the scale`.
        step: &'static str,
        /// The kind.
        kind: String,
        /// The object's name.
        name: String,
        /// The failed request.
        source: RequestError,
    },
    /// A `409 Conflict` showed that someone else changed the replicas since they were
    /// read: the write was abandoned rather than overwrite them.
    #[error("the replicas of {kind} {name} changed from {from} to {now} while scaling to {to}")]
    Moved {
        /// The kind.
        kind: String,
        /// The object's name.
        name: String,
        /// The replicas that were read.
        from: i32,
        /// The replicas found on re-reading.
        now: i32,
        /// The replicas that were to be set.
        to: i32,
    },
}

impl ScaleError {
    /// The condition reason the controller reports this under (`UnknownKind`,
    /// `ModelNotServed`, `TargetNotFound`, `FailedGetScale`, `FailedUpdateScale`, ...).
    #[must_use]
    pub fn reason(&self) -> &'static str {
        match self {
            Self::MissingApiVersion { .. } | Self::UnknownKind { .. } => "UnknownKind",
            Self::NoScaleSubresource { .. } => "NoScaleSubresource",
            Self::ModelNotServed { .. } => "ModelNotServed",
            Self::AmbiguousModel { .. } => "AmbiguousModel",
            Self::NoTarget { .. } => "NoTarget",
            Self::AmbiguousTarget { .. } => "AmbiguousTarget",
            Self::ListWorkloads { .. } => "FailedListWorkloads",
            Self::NotFound { .. } => "TargetNotFound",
            Self::Request { step: "reading the scale", .. } => "FailedGetScale",
            Self::Request { .. } => "FailedUpdateScale",
            Self::Moved { .. } => "ScaleChanged",
        }
    }
}

/// A TTL cache for lists and discovery results.
struct TtlCache<K, V> {
    ttl: Duration,
    entries: Mutex<HashMap<K, (tokio::time::Instant, V)>>,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> TtlCache<K, V> {
    fn new(ttl: Duration) -> Self {
        Self { ttl, entries: Mutex::new(HashMap::new()) }
    }

    fn get(&self, key: &K) -> Option<V> {
        let entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.get(key).filter(|(at, _)| at.elapsed() < self.ttl).map(|(_, v)| v.clone())
    }

    fn put(&self, key: K, value: V) {
        let mut entries = self.entries.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        entries.insert(key, (tokio::time::Instant::now(), value));
    }
}

/// A target kind as discovered: its resource, or why it cannot be scaled.
#[derive(Clone, Debug)]
enum KindLookup {
    Scalable(ApiResource),
    NoScale,
    Unknown(String),
}

/// The default API version of well-known scalable kinds, for a `scaleTargetRef` that
/// names none.
fn default_api_version(kind: &str) -> Option<&'static str> {
    match kind {
        "Deployment" | "StatefulSet" | "ReplicaSet" => Some("apps/v1"),
        "LeaderWorkerSet" => Some("leaderworkerset.x-k8s.io/v1"),
        _ => None,
    }
}

/// The kinds a policy without `scaleTargetRef` looks for annotated workloads among.
const ANNOTATION_KINDS: [(&str, &str); 3] =
    [("apps/v1", "Deployment"), ("apps/v1", "StatefulSet"), ("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet")];

/// A resolved target: the object with a scale subresource, in a namespace.
#[derive(Clone, Debug)]
pub struct ScaleTarget {
    /// The namespace.
    pub namespace: String,
    /// The object (API version, kind and object name).
    pub target: ResolvedTarget,
    resource: ApiResource,
}

impl ScaleTarget {
    fn api(&self, client: &Client) -> Api<DynamicObject> {
        Api::namespaced_with(client.clone(), &self.namespace, &self.resource)
    }

    /// The resource (plural) name, such as `deployments`.
    #[must_use]
    pub fn plural(&self) -> &str {
        &self.resource.plural
    }
}

/// What a read of `/scale` returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleReading {
    /// `spec.replicas` (0 when the subresource reports none).
    pub replicas: i32,
    /// `status.replicas`, when reported.
    pub status_replicas: Option<i32>,
    /// `status.selector`, the pods' label selector, when reported (and not empty).
    pub selector: Option<String>,
    /// The object's `resourceVersion`, the precondition of the next write.
    pub resource_version: Option<String>,
}

impl ScaleReading {
    /// The core's view.
    #[must_use]
    pub fn current(&self) -> CurrentScale {
        CurrentScale { replicas: self.replicas, status_replicas: self.status_replicas }
    }
}

/// The core's [`AdjustReplicas`] port on Kubernetes: reads and merge-patches the `/scale`
/// subresource of any kind that serves one.
///
/// A target is addressed by the core's [`TargetId`] (namespace and policy name) and the
/// policy's [`ScaleTargetRef`]:
/// - a `scaleTargetRef` whose name is an object name addresses that object;
/// - one whose name is not an object name (the seed's `meta-llama/Llama-2-70b-hf`) is a
///   served model id: the single workload of that kind in the namespace whose vLLM
///   container serves it (`--model`, `--served-model-name`, `vllm serve`);
/// - no `scaleTargetRef` addresses the single Deployment, StatefulSet or LeaderWorkerSet
///   annotated `autoscaler.production-stack/policy: <policy name>`.
///
/// An empty namespace is the client's default namespace. Writes carry the read
/// `resourceVersion` as a precondition; a `409 Conflict` re-reads the scale and retries
/// while the replicas are still the ones read, and gives up with [`ScaleError::Moved`]
/// when someone else changed them. Discovery results are cached for at least five
/// minutes, workload lists for the cache TTL (15 s by default; `Duration::ZERO` turns
/// caching off).
pub struct KubeScale {
    client: Client,
    request_timeout: Duration,
    conflict_retries: u32,
    kinds: TtlCache<(String, String), KindLookup>,
    lists: TtlCache<(String, String), Option<Arc<Vec<Value>>>>,
    /// The last reading per target through the [`AdjustReplicas`] port, the precondition
    /// of its next write.
    readings: Mutex<HashMap<TargetId, (ResolvedTarget, ScaleReading)>>,
}

impl std::fmt::Debug for KubeScale {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeScale")
            .field("request_timeout", &self.request_timeout)
            .field("conflict_retries", &self.conflict_retries)
            .finish_non_exhaustive()
    }
}

impl KubeScale {
    /// An adapter on `client`: 10 s request timeout, 3 conflict retries, 15 s cache TTL.
    #[must_use]
    pub fn new(client: Client) -> Self {
        Self {
            client,
            request_timeout: Duration::from_secs(10),
            conflict_retries: 3,
            kinds: TtlCache::new(Duration::from_secs(300)),
            lists: TtlCache::new(Duration::from_secs(15)),
            readings: Mutex::new(HashMap::new()),
        }
    }

    /// Sets the longest any one request may take (builder style).
    #[must_use]
    pub fn with_request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// Sets how many times a `409 Conflict` is retried within one write (builder style).
    #[must_use]
    pub fn with_conflict_retries(mut self, retries: u32) -> Self {
        self.conflict_retries = retries;
        self
    }

    /// Sets how long workload lists are cached; discovery is cached for this or five
    /// minutes, whichever is longer (builder style).
    #[must_use]
    pub fn with_cache_ttl(mut self, ttl: Duration) -> Self {
        // Served kinds change with CRD installs, rarely: rediscover every few minutes.
        self.kinds = TtlCache::new(ttl.max(Duration::from_secs(300)));
        self.lists = TtlCache::new(ttl);
        self
    }

    /// The client.
    #[must_use]
    pub fn client(&self) -> &Client {
        &self.client
    }

    fn namespace_of<'a>(&'a self, target: &'a TargetId) -> &'a str {
        if target.namespace.is_empty() { self.client.default_namespace() } else { &target.namespace }
    }

    async fn lookup_kind(&self, api_version: &str, kind: &str) -> KindLookup {
        let key = (api_version.to_owned(), kind.to_owned());
        if let Some(found) = self.kinds.get(&key) {
            return found;
        }
        let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
        let gvk = GroupVersionKind::gvk(group, version, kind);
        let found =
            match timed(self.request_timeout, "discovery", kube::discovery::pinned_kind(&self.client, &gvk)).await {
                Ok((ar, caps)) => {
                    if caps.subresources.iter().any(|(sub, _)| sub.plural == "scale") {
                        KindLookup::Scalable(ar)
                    } else {
                        KindLookup::NoScale
                    }
                }
                Err(RequestError::Api(kube::Error::Discovery(_))) => {
                    KindLookup::Unknown(format!("the API server does not serve kind {kind} in {api_version}"))
                }
                Err(RequestError::Api(kube::Error::Api(s))) if s.code == 404 => {
                    KindLookup::Unknown(format!("the API server does not serve {api_version}"))
                }
                // A transient failure is not cached.
                Err(e) => return KindLookup::Unknown(format!("discovering {kind} in {api_version} failed: {e}")),
            };
        self.kinds.put(key, found.clone());
        found
    }

    /// Every object of a kind in a namespace, cached; `None` when the kind is not served
    /// (a CRD that is not installed).
    pub(crate) async fn cached_list(
        &self,
        namespace: &str,
        ar: &ApiResource,
    ) -> Result<Option<Arc<Vec<Value>>>, RequestError> {
        let key = (namespace.to_owned(), format!("{}/{}", ar.api_version, ar.plural));
        if let Some(found) = self.lists.get(&key) {
            return Ok(found);
        }
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, ar);
        let result = match timed(self.request_timeout, "listing", api.list(&ListParams::default())).await {
            Ok(list) => Some(Arc::new(list.items.iter().filter_map(|o| serde_json::to_value(o).ok()).collect())),
            Err(RequestError::Api(kube::Error::Api(s))) if s.code == 404 => None,
            Err(e) => return Err(e),
        };
        self.lists.put(key, result.clone());
        Ok(result)
    }

    /// Resolves a policy's target to an object with a scale subresource (see the type's
    /// docs for the three ways a target is addressed).
    ///
    /// # Errors
    /// An unknown kind, a kind without a scale subresource, a model id no workload (or
    /// several) serves, no (or several) annotated workloads, or a failed list.
    pub async fn resolve(
        &self,
        namespace: &str,
        policy: &str,
        scale_ref: Option<&ScaleTargetRef>,
    ) -> Result<ScaleTarget, ScaleError> {
        let Some(reference) = scale_ref else {
            return self.resolve_by_annotation(namespace, policy).await;
        };
        let Some(api_version) =
            reference.api_version.clone().or_else(|| default_api_version(&reference.kind).map(str::to_owned))
        else {
            return Err(ScaleError::MissingApiVersion { kind: reference.kind.clone() });
        };
        let ar = match self.lookup_kind(&api_version, &reference.kind).await {
            KindLookup::Scalable(ar) => ar,
            KindLookup::NoScale => {
                return Err(ScaleError::NoScaleSubresource { api_version, kind: reference.kind.clone() });
            }
            KindLookup::Unknown(why) => {
                return Err(ScaleError::UnknownKind { api_version, kind: reference.kind.clone(), why });
            }
        };
        let name = if is_object_name(&reference.name) {
            reference.name.clone()
        } else {
            // Not an object name: a served model id (the seed's `meta-llama/Llama-2-70b-hf`).
            let model = &reference.name;
            let all = self.cached_list(namespace, &ar).await.map_err(|source| ScaleError::ListWorkloads {
                namespace: namespace.to_owned(),
                plural: ar.plural.clone(),
                source,
            })?;
            let all = all.unwrap_or_default();
            match match_model(all.iter(), model) {
                Match::One(n) => n,
                Match::None => {
                    return Err(ScaleError::ModelNotServed {
                        namespace: namespace.to_owned(),
                        kind: reference.kind.clone(),
                        model: model.clone(),
                        searched: all.len(),
                    });
                }
                Match::Several(names) => {
                    return Err(ScaleError::AmbiguousModel {
                        namespace: namespace.to_owned(),
                        kind: reference.kind.clone(),
                        model: model.clone(),
                        names,
                    });
                }
            }
        };
        Ok(ScaleTarget {
            namespace: namespace.to_owned(),
            target: ResolvedTarget { api_version, kind: reference.kind.clone(), name },
            resource: ar,
        })
    }

    async fn resolve_by_annotation(&self, namespace: &str, policy: &str) -> Result<ScaleTarget, ScaleError> {
        let mut found: Vec<ScaleTarget> = Vec::new();
        for (api_version, kind) in ANNOTATION_KINDS {
            let KindLookup::Scalable(ar) = self.lookup_kind(api_version, kind).await else { continue };
            let list = self.cached_list(namespace, &ar).await.map_err(|source| ScaleError::ListWorkloads {
                namespace: namespace.to_owned(),
                plural: ar.plural.clone(),
                source,
            })?;
            let Some(list) = list else { continue };
            let names = match match_annotation(list.iter(), policy) {
                Match::One(n) => vec![n],
                Match::Several(names) => names,
                Match::None => Vec::new(),
            };
            for name in names {
                found.push(ScaleTarget {
                    namespace: namespace.to_owned(),
                    target: ResolvedTarget { api_version: api_version.to_owned(), kind: kind.to_owned(), name },
                    resource: ar.clone(),
                });
            }
        }
        match found.len() {
            1 => Ok(found.remove(0)),
            0 => Err(ScaleError::NoTarget { namespace: namespace.to_owned(), policy: policy.to_owned() }),
            _ => Err(ScaleError::AmbiguousTarget {
                policy: policy.to_owned(),
                found: found.iter().map(|t| format!("{}/{}", t.target.kind, t.target.name)).collect(),
            }),
        }
    }

    /// The resolved object itself (as JSON), from the cached list of its kind; `None` when
    /// it is not (or no longer) listed.
    ///
    /// # Errors
    /// When listing fails.
    pub async fn workload(&self, target: &ScaleTarget) -> Result<Option<Value>, ScaleError> {
        let list = self.cached_list(&target.namespace, &target.resource).await.map_err(|source| {
            ScaleError::ListWorkloads {
                namespace: target.namespace.clone(),
                plural: target.resource.plural.clone(),
                source,
            }
        })?;
        Ok(list.and_then(|l| l.iter().find(|o| o["metadata"]["name"].as_str() == Some(&target.target.name)).cloned()))
    }

    /// Reads the target's `/scale`.
    ///
    /// # Errors
    /// [`ScaleError::NotFound`] when the object does not exist, [`ScaleError::Request`]
    /// when the read fails.
    pub async fn read(&self, target: &ScaleTarget) -> Result<ScaleReading, ScaleError> {
        let t = &target.target;
        match timed(self.request_timeout, "reading the scale", target.api(&self.client).get_scale(&t.name)).await {
            Ok(scale) => Ok(ScaleReading {
                replicas: scale.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0),
                status_replicas: scale.status.as_ref().map(|s| s.replicas),
                selector: scale.status.as_ref().and_then(|s| s.selector.clone()).filter(|s| !s.is_empty()),
                resource_version: scale.metadata.resource_version,
            }),
            Err(e) if e.code() == Some(404) => Err(ScaleError::NotFound {
                namespace: target.namespace.clone(),
                kind: t.kind.clone(),
                name: t.name.clone(),
            }),
            Err(source) => Err(ScaleError::Request {
                step: "reading the scale",
                kind: t.kind.clone(),
                name: t.name.clone(),
                source,
            }),
        }
    }

    /// Merge-patches `/scale` to `to`, with `read`'s `resourceVersion` as a precondition.
    /// A `409` re-reads the scale: while the replicas are still `read.replicas` the patch
    /// is retried with the new version (something else in the object changed), up to the
    /// conflict retries; otherwise the write is abandoned with [`ScaleError::Moved`].
    ///
    /// # Errors
    /// [`ScaleError::Moved`], or [`ScaleError::Request`] when a request fails.
    pub async fn write(&self, target: &ScaleTarget, read: &ScaleReading, to: i32) -> Result<(), ScaleError> {
        let t = &target.target;
        let failed = |step, source| ScaleError::Request { step, kind: t.kind.clone(), name: t.name.clone(), source };
        let api = target.api(&self.client);
        let mut resource_version = read.resource_version.clone();
        let mut attempt = 0;
        loop {
            let patch = match &resource_version {
                Some(rv) => json!({"metadata": {"resourceVersion": rv}, "spec": {"replicas": to}}),
                None => json!({"spec": {"replicas": to}}),
            };
            let params = PatchParams::default();
            match timed(
                self.request_timeout,
                "writing the scale",
                api.patch_scale(&t.name, &params, &Patch::Merge(&patch)),
            )
            .await
            {
                Ok(_) => return Ok(()),
                Err(e) if e.code() == Some(409) && attempt < self.conflict_retries => {
                    attempt += 1;
                    let fresh = timed(self.request_timeout, "re-reading the scale", api.get_scale(&t.name))
                        .await
                        .map_err(|e| failed("re-reading the scale", e))?;
                    let replicas = fresh.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0);
                    if replicas != read.replicas {
                        return Err(ScaleError::Moved {
                            kind: t.kind.clone(),
                            name: t.name.clone(),
                            from: read.replicas,
                            now: replicas,
                            to,
                        });
                    }
                    resource_version = fresh.metadata.resource_version;
                }
                Err(e) => return Err(failed("writing the scale", e)),
            }
        }
    }

    /// The pods matched by the target's scale selector, as the core sees them.
    ///
    /// # Errors
    /// When listing fails. A target whose scale reports no selector has no pods.
    pub async fn pods(&self, namespace: &str, reading: &ScaleReading) -> Result<Vec<PodInfo>, RequestError> {
        let Some(selector) = reading.selector.as_deref() else { return Ok(Vec::new()) };
        let api: Api<Pod> = Api::namespaced(self.client.clone(), namespace);
        let list =
            timed(self.request_timeout, "listing the target's pods", api.list(&ListParams::default().labels(selector)))
                .await?;
        Ok(list.items.iter().map(pod_info).collect())
    }

    /// Resolves and reads a target in one step, remembering the reading as the
    /// precondition of the next [`AdjustReplicas::adjust_replicas`] on it.
    ///
    /// # Errors
    /// As [`resolve`](Self::resolve) and [`read`](Self::read).
    pub async fn resolve_and_read(
        &self,
        target: &TargetId,
        scale_ref: Option<&ScaleTargetRef>,
    ) -> Result<(ScaleTarget, ScaleReading), ScaleError> {
        let resolved = self.resolve(self.namespace_of(target), &target.name, scale_ref).await?;
        let reading = self.read(&resolved).await?;
        self.readings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .insert(target.clone(), (resolved.target.clone(), reading.clone()));
        Ok((resolved, reading))
    }
}

#[async_trait]
impl AdjustReplicas for KubeScale {
    type Error = ScaleError;

    async fn get_scale(
        &self,
        target: &TargetId,
        scale_ref: Option<&ScaleTargetRef>,
    ) -> Result<CurrentScale, ScaleError> {
        Ok(self.resolve_and_read(target, scale_ref).await?.1.current())
    }

    /// Patches the target's `/scale`, with the reading of the last
    /// [`get_scale`](AdjustReplicas::get_scale) on the same object as the precondition
    /// (or a fresh read when there was none).
    async fn adjust_replicas(
        &self,
        target: &TargetId,
        scale_ref: Option<&ScaleTargetRef>,
        replicas: i32,
    ) -> Result<(), ScaleError> {
        let resolved = self.resolve(self.namespace_of(target), &target.name, scale_ref).await?;
        let remembered = self
            .readings
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(target)
            .filter(|(t, _)| *t == resolved.target)
            .map(|(_, r)| r);
        let reading = match remembered {
            Some(r) => r,
            None => self.read(&resolved).await?,
        };
        self.write(&resolved, &reading, replicas).await
    }
}
