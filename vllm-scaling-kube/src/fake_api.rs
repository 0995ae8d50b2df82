//! An in-process Kubernetes API server for tests and benchmarks: a real HTTP server on
//! 127.0.0.1 that serves the real REST paths and JSON, keeps objects in memory, and
//! records every request.
//!
//! No API server can run on the machines this project is built on, so this is the one
//! place a scripted fake is used. It speaks the wire format a kube `Client` expects:
//! discovery (`/api/v1`, `/apis/{group}/{version}`), list with label selectors, watch
//! (`?watch=true`, newline-delimited events, `410 Gone` for compacted resource versions),
//! get/create/replace/merge-patch/delete, the `status` and `scale` subresources with
//! `resourceVersion` preconditions (`409 Conflict`), and `Status` error bodies. Faults
//! (a status code, a delay, or both) can be injected for chosen requests, and the whole
//! server can play stopped ([`FakeApiServer::stop_serving`]).
//!
//! It runs no controllers: a Deployment's pods are whatever the test creates.
//!
//! ```
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! use vllm_scaling_kube::fake_api::FakeApiServer;
//! use k8s_openapi::api::apps::v1::Deployment;
//!
//! let server = FakeApiServer::start().await.unwrap();
//! server.apply(serde_json::json!({
//!     "apiVersion": "apps/v1", "kind": "Deployment",
//!     "metadata": {"name": "llama", "namespace": "default"},
//!     "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "llama"}}, "template": {}}
//! }));
//! let api: kube::Api<Deployment> = kube::Api::default_namespaced(server.client());
//! let scale = api.get_scale("llama").await.unwrap();
//! assert_eq!(scale.spec.unwrap().replicas, Some(2));
//! assert_eq!(server.requests().len(), 1);
//! # });
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::{Map, Value, json};
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

/// A kube `Client` for a plain-HTTP API server at `url` (this one, or one running in
/// another process), with `default` as its namespace.
///
/// kube's default connector leaves Nagle's algorithm on; on loopback that costs a
/// delayed-ACK round (40 ms) per request with a body, which would dominate the timings
/// this server is used to measure, so this client sets `TCP_NODELAY`.
///
/// # Errors
/// When `url` is not a valid URI.
pub fn client_for(url: &str) -> Result<kube::Client, hyper::http::uri::InvalidUri> {
    let uri: hyper::Uri = url.parse()?;
    let mut http = hyper_util::client::legacy::connect::HttpConnector::new();
    http.set_nodelay(true);
    let hyper_client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build::<_, kube::client::Body>(http);
    Ok(kube::client::ClientBuilder::new(hyper_client, "default")
        .with_layer(&kube::client::middleware::BaseUriLayer::new(uri))
        .build())
}

/// How many watch events are kept for watchers that resume; older resource versions get
/// `410 Gone`, as from a compacted etcd.
const EVENT_BACKLOG: usize = 50_000;

/// A kind the server serves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct KindInfo {
    /// API group (`""` for the core group).
    pub group: String,
    /// Version, such as `v1`.
    pub version: String,
    /// Kind, such as `Deployment`.
    pub kind: String,
    /// Plural resource name, such as `deployments`.
    pub plural: String,
    /// Whether objects live in namespaces.
    pub namespaced: bool,
    /// Whether a `status` subresource is served (main-resource writes then keep the status).
    pub status: bool,
    /// The scale subresource, if served.
    pub scale: Option<ScaleSpec>,
}

/// Where a kind keeps what its scale subresource shows.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScaleSpec {
    /// JSON pointer of the desired replicas (`/spec/replicas`).
    pub spec_replicas: String,
    /// JSON pointer of the observed replicas (`/status/replicas`).
    pub status_replicas: String,
    /// JSON pointer of the pod selector: a `LabelSelector` object or a selector string.
    pub selector: String,
}

impl ScaleSpec {
    /// The layout of Deployments, StatefulSets and ReplicaSets.
    #[must_use]
    pub fn apps() -> Self {
        Self {
            spec_replicas: "/spec/replicas".into(),
            status_replicas: "/status/replicas".into(),
            selector: "/spec/selector".into(),
        }
    }
}

impl KindInfo {
    /// A kind description.
    #[must_use]
    pub fn new(api_version: &str, kind: &str, plural: &str, namespaced: bool) -> Self {
        let (group, version) = split_api_version(api_version);
        Self {
            group: group.to_owned(),
            version: version.to_owned(),
            kind: kind.to_owned(),
            plural: plural.to_owned(),
            namespaced,
            status: false,
            scale: None,
        }
    }

    /// With a status subresource (builder style).
    #[must_use]
    pub fn with_status(mut self) -> Self {
        self.status = true;
        self
    }

    /// With a scale subresource (builder style).
    #[must_use]
    pub fn with_scale(mut self, scale: ScaleSpec) -> Self {
        self.scale = Some(scale);
        self
    }

    fn api_version(&self) -> String {
        if self.group.is_empty() { self.version.clone() } else { format!("{}/{}", self.group, self.version) }
    }

    fn key(&self) -> String {
        format!("{}/{}/{}", self.group, self.version, self.plural)
    }
}

fn split_api_version(api_version: &str) -> (&str, &str) {
    match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    }
}

/// The kinds served by default: pods, events (core and events.k8s.io), leases,
/// Deployments, StatefulSets, ReplicaSets, HPAs, and `vLLMScalingPolicy`.
#[must_use]
pub fn default_kinds() -> Vec<KindInfo> {
    vec![
        KindInfo::new("v1", "Pod", "pods", true).with_status(),
        KindInfo::new("v1", "Event", "events", true),
        KindInfo::new("events.k8s.io/v1", "Event", "events", true),
        KindInfo::new("coordination.k8s.io/v1", "Lease", "leases", true),
        KindInfo::new("apps/v1", "Deployment", "deployments", true).with_status().with_scale(ScaleSpec::apps()),
        KindInfo::new("apps/v1", "StatefulSet", "statefulsets", true).with_status().with_scale(ScaleSpec::apps()),
        KindInfo::new("apps/v1", "ReplicaSet", "replicasets", true).with_status().with_scale(ScaleSpec::apps()),
        KindInfo::new("apps/v1", "DaemonSet", "daemonsets", true).with_status(),
        KindInfo::new("autoscaling/v2", "HorizontalPodAutoscaler", "horizontalpodautoscalers", true).with_status(),
        KindInfo::new(
            &format!("{}/{}", crate::crd::GROUP, crate::crd::VERSION),
            "vLLMScalingPolicy",
            crate::crd::PLURAL,
            true,
        )
        .with_status(),
    ]
}

/// KEDA's `ScaledObject` (not served unless added with [`FakeApiServer::add_kind`]).
#[must_use]
pub fn keda_scaled_object_kind() -> KindInfo {
    KindInfo::new("keda.sh/v1alpha1", "ScaledObject", "scaledobjects", true).with_status()
}

/// LeaderWorkerSet (`leaderworkerset.x-k8s.io/v1`), whose scale subresource reads its
/// selector from `status.hpaPodSelector`.
#[must_use]
pub fn leader_worker_set_kind() -> KindInfo {
    KindInfo::new("leaderworkerset.x-k8s.io/v1", "LeaderWorkerSet", "leaderworkersets", true).with_status().with_scale(
        ScaleSpec {
            spec_replicas: "/spec/replicas".into(),
            status_replicas: "/status/replicas".into(),
            selector: "/status/hpaPodSelector".into(),
        },
    )
}

/// One request as the server received it.
#[derive(Clone, Debug, PartialEq)]
pub struct RecordedRequest {
    /// `GET`, `PATCH`, ...
    pub method: String,
    /// The path, without the query.
    pub path: String,
    /// The raw query string.
    pub query: String,
    /// The `Content-Type` header.
    pub content_type: Option<String>,
    /// The body, parsed as JSON when it is JSON.
    pub body: Option<Value>,
    /// When it arrived, relative to the server's start.
    pub at: Duration,
}

impl RecordedRequest {
    /// Whether this is a `method` request whose path ends with `suffix`.
    #[must_use]
    pub fn is(&self, method: &str, suffix: &str) -> bool {
        self.method == method && self.path.ends_with(suffix)
    }

    /// Whether this is a watch request.
    #[must_use]
    pub fn is_watch(&self) -> bool {
        self.query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1")
    }
}

/// An injected failure: for requests matching `method` and a path containing
/// `path_contains`, wait `delay`, then answer `status` (or serve normally when `None`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Fault {
    method: Option<String>,
    path_contains: String,
    status: Option<u16>,
    delay: Duration,
    remaining: usize,
}

impl Fault {
    /// Answer `status` (with a Kubernetes `Status` body).
    #[must_use]
    pub fn status(code: u16) -> Self {
        Self { method: None, path_contains: String::new(), status: Some(code), delay: Duration::ZERO, remaining: 1 }
    }

    /// Wait `delay` before answering normally (a slow or hung API server).
    #[must_use]
    pub fn delay(delay: Duration) -> Self {
        Self { method: None, path_contains: String::new(), status: None, delay, remaining: 1 }
    }

    /// Also wait `delay` before answering (builder style): `Fault::status(504).after(..)`
    /// is an API server that hangs and then gives up without applying the request.
    #[must_use]
    pub fn after(mut self, delay: Duration) -> Self {
        self.delay = delay;
        self
    }

    /// Only for `method` requests whose path contains `path_contains`.
    #[must_use]
    pub fn on(mut self, method: &str, path_contains: &str) -> Self {
        self.method = Some(method.to_owned());
        self.path_contains = path_contains.to_owned();
        self
    }

    /// For the next `n` matching requests (default 1; `usize::MAX` for all).
    #[must_use]
    pub fn times(mut self, n: usize) -> Self {
        self.remaining = n;
        self
    }
}

#[derive(Clone, Debug)]
struct WatchEvent {
    rv: u64,
    resource: String,
    namespace: String,
    kind: &'static str,
    object: Arc<Value>,
}

#[derive(Default)]
struct Inner {
    kinds: Vec<KindInfo>,
    /// resource key -> namespace -> name -> object
    objects: BTreeMap<String, BTreeMap<String, BTreeMap<String, Value>>>,
    rv: u64,
    uid: u64,
    events: VecDeque<WatchEvent>,
    /// The newest resource version that was dropped from `events`.
    compacted_rv: u64,
    requests: Vec<RecordedRequest>,
    request_counts: BTreeMap<String, u64>,
    record_bodies: bool,
    faults: Vec<Fault>,
}

struct Shared {
    inner: Mutex<Inner>,
    changed: Notify,
    started: Instant,
    /// True while the server plays stopped ([`FakeApiServer::stop_serving`]).
    down: watch::Sender<bool>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        // A test that panicked while holding the lock must not hide the state from others.
        self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// The running fake API server. Stops when dropped.
pub struct FakeApiServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    shutdown: watch::Sender<bool>,
}

impl std::fmt::Debug for FakeApiServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeApiServer").field("addr", &self.addr).finish_non_exhaustive()
    }
}

impl Drop for FakeApiServer {
    fn drop(&mut self) {
        let _ = self.shutdown.send(true);
    }
}

type Body = BoxBody<Bytes, Infallible>;

impl FakeApiServer {
    /// Starts a server on a free port of 127.0.0.1 with [`default_kinds`].
    ///
    /// # Errors
    /// When the port cannot be bound.
    pub async fn start() -> std::io::Result<Self> {
        Self::start_on("127.0.0.1:0".parse().map_err(std::io::Error::other)?).await
    }

    /// Starts a server on `addr` (a loopback address) with [`default_kinds`].
    ///
    /// # Errors
    /// When the address cannot be bound.
    pub async fn start_on(addr: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner { kinds: default_kinds(), record_bodies: true, ..Inner::default() }),
            changed: Notify::new(),
            started: Instant::now(),
            down: watch::channel(false).0,
        });
        let (shutdown, mut stop) = watch::channel(false);
        let accept_shared = shared.clone();
        let accept_stop = shutdown.subscribe();
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    a = listener.accept() => a,
                    _ = stop.changed() => break,
                };
                let Ok((stream, _)) = accepted else { continue };
                if *accept_shared.down.borrow() {
                    // A stopped server: the connection is closed before a byte is read.
                    drop(stream);
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let shared = accept_shared.clone();
                let stop = accept_stop.clone();
                tokio::spawn(async move {
                    let mut down = shared.down.subscribe();
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        let stop = stop.clone();
                        async move { Ok::<_, Infallible>(handle(shared, stop, req).await) }
                    });
                    let connection =
                        hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    // Stopping closes open connections too (requests in flight and watches).
                    tokio::select! {
                        _ = connection => {}
                        _ = down.wait_for(|d| *d) => {}
                    }
                });
            }
        });
        Ok(Self { addr, shared, shutdown })
    }

    /// The server's address.
    #[must_use]
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Time since the server started, on the clock [`RecordedRequest::at`] uses.
    #[must_use]
    pub fn elapsed(&self) -> Duration {
        self.shared.started.elapsed()
    }

    /// `http://127.0.0.1:PORT`.
    #[must_use]
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// A kube `Client` pointed at this server, with `default` as its namespace.
    ///
    /// # Panics
    /// Never for a running server (the URL is always valid).
    #[must_use]
    pub fn client(&self) -> kube::Client {
        client_for(&self.url()).expect("a loopback URL is a valid URI")
    }

    /// Serves another kind (a CRD such as KEDA's ScaledObject).
    pub fn add_kind(&self, kind: KindInfo) {
        let mut inner = self.shared.lock();
        inner.kinds.retain(|k| k.key() != kind.key());
        inner.kinds.push(kind);
    }

    /// Stops serving a kind (its discovery entry disappears and its paths return 404).
    pub fn remove_kind(&self, api_version: &str, kind: &str) {
        let (group, version) = split_api_version(api_version);
        self.shared.lock().kinds.retain(|k| !(k.group == group && k.version == version && k.kind == kind));
    }

    /// Creates or replaces an object (by its `apiVersion`, `kind`, namespace and name), as an
    /// administrator would, filling in uid, resourceVersion, generation and
    /// creationTimestamp. Returns the stored object.
    ///
    /// # Panics
    /// When the object's kind is not served or it has no name: a test set-up error.
    pub fn apply(&self, object: Value) -> Value {
        let mut inner = self.shared.lock();
        let api_version = object["apiVersion"].as_str().unwrap_or_default().to_owned();
        let kind_name = object["kind"].as_str().unwrap_or_default().to_owned();
        let (group, version) = split_api_version(&api_version);
        let kind = inner
            .kinds
            .iter()
            .find(|k| k.group == group && k.version == version && k.kind == kind_name)
            .cloned()
            .unwrap_or_else(|| panic!("fake API server: kind {api_version} {kind_name} is not served"));
        let ns = if kind.namespaced {
            object["metadata"]["namespace"].as_str().unwrap_or("default").to_owned()
        } else {
            String::new()
        };
        let name = object["metadata"]["name"].as_str().expect("fake API server: object without a name").to_owned();
        let existing = inner.get(&kind.key(), &ns, &name).cloned();
        let stored = match existing {
            None => inner.create(&kind, &ns, object),
            Some(old) => {
                let mut obj = object;
                obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
                inner.replace(&kind, &ns, &name, old, obj, Sub::Admin)
            }
        };
        drop(inner);
        self.shared.changed.notify_waiters();
        stored
    }

    /// Applies a JSON merge patch to an object as an administrator (no preconditions;
    /// status included). Returns the result, or `None` when the object does not exist.
    pub fn merge(&self, api_version: &str, kind: &str, namespace: &str, name: &str, patch: &Value) -> Option<Value> {
        let mut inner = self.shared.lock();
        let kind = inner.kind_by_name(api_version, kind)?;
        let old = inner.get(&kind.key(), namespace, name)?.clone();
        let mut obj = old.clone();
        merge_patch(&mut obj, patch);
        obj["metadata"]["resourceVersion"] = old["metadata"]["resourceVersion"].clone();
        let out = inner.replace(&kind, namespace, name, old, obj, Sub::Admin);
        drop(inner);
        self.shared.changed.notify_waiters();
        Some(out)
    }

    /// Deletes an object as an administrator; returns whether it existed.
    pub fn delete(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> bool {
        let mut inner = self.shared.lock();
        let Some(kind) = inner.kind_by_name(api_version, kind) else { return false };
        let removed = inner.remove(&kind, namespace, name).is_some();
        drop(inner);
        self.shared.changed.notify_waiters();
        removed
    }

    /// An object, if it exists.
    #[must_use]
    pub fn get(&self, api_version: &str, kind: &str, namespace: &str, name: &str) -> Option<Value> {
        let inner = self.shared.lock();
        let kind = inner.kind_by_name(api_version, kind)?;
        inner.get(&kind.key(), namespace, name).cloned()
    }

    /// Every object of a kind in a namespace (`None`: all namespaces).
    #[must_use]
    pub fn list(&self, api_version: &str, kind: &str, namespace: Option<&str>) -> Vec<Value> {
        let inner = self.shared.lock();
        let Some(kind) = inner.kind_by_name(api_version, kind) else { return Vec::new() };
        inner.list(&kind.key(), namespace, &[]).into_iter().cloned().collect()
    }

    /// Every request received so far (with bodies unless [`Self::record_bodies`] turned
    /// them off).
    #[must_use]
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.shared.lock().requests.clone()
    }

    /// Requests with `method` whose path ends with `suffix`.
    #[must_use]
    pub fn requests_to(&self, method: &str, suffix: &str) -> Vec<RecordedRequest> {
        self.shared.lock().requests.iter().filter(|r| r.is(method, suffix)).cloned().collect()
    }

    /// Forgets the recorded requests.
    pub fn clear_requests(&self) {
        self.shared.lock().requests.clear();
    }

    /// Whether to keep every request (default) or only count them by method and
    /// resource (for long benchmark runs, see [`Self::request_counts`]).
    pub fn record_bodies(&self, keep: bool) {
        self.shared.lock().record_bodies = keep;
    }

    /// Requests counted by `METHOD resource[/subresource]`, watches as `WATCH`.
    #[must_use]
    pub fn request_counts(&self) -> BTreeMap<String, u64> {
        self.shared.lock().request_counts.clone()
    }

    /// Injects a fault.
    pub fn inject(&self, fault: Fault) {
        self.shared.lock().faults.push(fault);
    }

    /// Removes every injected fault.
    pub fn clear_faults(&self) {
        self.shared.lock().faults.clear();
    }

    /// Plays a stopped API server until [`Self::resume_serving`]: open connections (watches
    /// and requests in flight included) are closed, and new ones are closed as soon as they
    /// are accepted, so clients see connection errors. The objects are kept.
    pub fn stop_serving(&self) {
        self.shared.down.send_replace(true);
    }

    /// Serves again after [`Self::stop_serving`], on the same address.
    pub fn resume_serving(&self) {
        self.shared.down.send_replace(false);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Sub {
    /// A write to the main resource: keeps the status of kinds with a status subresource.
    Main,
    /// A write to the status subresource: keeps everything but the status.
    Status,
    /// A set-up write: takes the object as given.
    Admin,
}

impl Inner {
    fn kind_by_name(&self, api_version: &str, kind: &str) -> Option<KindInfo> {
        let (group, version) = split_api_version(api_version);
        self.kinds.iter().find(|k| k.group == group && k.version == version && k.kind == kind).cloned()
    }

    fn kind_by_plural(&self, group: &str, version: &str, plural: &str) -> Option<KindInfo> {
        self.kinds.iter().find(|k| k.group == group && k.version == version && k.plural == plural).cloned()
    }

    fn get(&self, resource: &str, ns: &str, name: &str) -> Option<&Value> {
        self.objects.get(resource)?.get(ns)?.get(name)
    }

    fn list(&self, resource: &str, ns: Option<&str>, selector: &[Requirement]) -> Vec<&Value> {
        let Some(by_ns) = self.objects.get(resource) else { return Vec::new() };
        let matches = |o: &&Value| selector.iter().all(|r| r.matches(&o["metadata"]["labels"]));
        match ns {
            Some(ns) => by_ns.get(ns).map(|m| m.values().filter(matches).collect()).unwrap_or_default(),
            None => by_ns.values().flat_map(|m| m.values()).filter(matches).collect(),
        }
    }

    fn next_rv(&mut self) -> u64 {
        self.rv += 1;
        self.rv
    }

    fn emit(&mut self, kind: &KindInfo, ns: &str, type_: &'static str, object: &Value) {
        let event = WatchEvent {
            rv: self.rv,
            resource: kind.key(),
            namespace: ns.to_owned(),
            kind: type_,
            object: Arc::new(object.clone()),
        };
        self.events.push_back(event);
        while self.events.len() > EVENT_BACKLOG {
            if let Some(old) = self.events.pop_front() {
                self.compacted_rv = old.rv;
            }
        }
    }

    fn create(&mut self, kind: &KindInfo, ns: &str, mut obj: Value) -> Value {
        let rv = self.next_rv();
        self.uid += 1;
        obj["apiVersion"] = json!(kind.api_version());
        obj["kind"] = json!(kind.kind);
        let meta = obj["metadata"].as_object_mut().map(std::mem::take).unwrap_or_default();
        let mut meta = Value::Object(meta);
        if kind.namespaced {
            meta["namespace"] = json!(ns);
        }
        meta["uid"] = json!(format!("00000000-0000-0000-0000-{:012}", self.uid));
        meta["resourceVersion"] = json!(rv.to_string());
        meta["generation"] = json!(1);
        if meta.get("creationTimestamp").is_none_or(Value::is_null) {
            meta["creationTimestamp"] = json!(now_rfc3339());
        }
        obj["metadata"] = meta;
        let name = obj["metadata"]["name"].as_str().unwrap_or_default().to_owned();
        self.objects.entry(kind.key()).or_default().entry(ns.to_owned()).or_default().insert(name, obj.clone());
        self.emit(kind, ns, "ADDED", &obj);
        obj
    }

    fn replace(&mut self, kind: &KindInfo, ns: &str, name: &str, old: Value, mut new: Value, sub: Sub) -> Value {
        match sub {
            Sub::Main if kind.status => {
                if let Some(status) = old.get("status") {
                    new["status"] = status.clone();
                } else if let Some(m) = new.as_object_mut() {
                    m.remove("status");
                }
            }
            Sub::Status => {
                let status = new.get("status").cloned();
                new = old.clone();
                match status {
                    Some(s) => new["status"] = s,
                    None => {
                        if let Some(m) = new.as_object_mut() {
                            m.remove("status");
                        }
                    }
                }
            }
            Sub::Main | Sub::Admin => {}
        }
        // Immutable metadata survives every write.
        for key in ["uid", "creationTimestamp", "namespace", "name"] {
            if let Some(v) = old["metadata"].get(key) {
                new["metadata"][key] = v.clone();
            }
        }
        new["apiVersion"] = json!(kind.api_version());
        new["kind"] = json!(kind.kind);
        let spec_changed = strip(&old) != strip(&new);
        let generation = old["metadata"]["generation"].as_i64().unwrap_or(1);
        new["metadata"]["generation"] = json!(if spec_changed { generation + 1 } else { generation });
        if new == old {
            return old;
        }
        let rv = self.next_rv();
        new["metadata"]["resourceVersion"] = json!(rv.to_string());
        self.objects
            .entry(kind.key())
            .or_default()
            .entry(ns.to_owned())
            .or_default()
            .insert(name.to_owned(), new.clone());
        self.emit(kind, ns, "MODIFIED", &new);
        new
    }

    fn remove(&mut self, kind: &KindInfo, ns: &str, name: &str) -> Option<Value> {
        let removed = self.objects.get_mut(&kind.key())?.get_mut(ns)?.remove(name)?;
        self.next_rv();
        let mut shown = removed.clone();
        shown["metadata"]["resourceVersion"] = json!(self.rv.to_string());
        self.emit(kind, ns, "DELETED", &shown);
        Some(removed)
    }
}

/// The object without metadata and status: what `generation` counts changes of.
fn strip(obj: &Value) -> Value {
    let mut o = obj.clone();
    if let Some(m) = o.as_object_mut() {
        m.remove("metadata");
        m.remove("status");
    }
    o
}

fn now_rfc3339() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    serde_json::to_value(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(now))
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_default()
}

/// The documents of a multi-document YAML manifest (nulls between `---` dropped), for the
/// manifest tests; panics naming the file on a read or parse error.
///
/// # Panics
/// When the file cannot be read or a document does not parse.
#[must_use]
pub fn manifest_documents(path: &std::path::Path) -> Vec<serde_yaml_ng::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|d| {
            <serde_yaml_ng::Value as serde::Deserialize>::deserialize(d)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        })
        .filter(|v| !v.is_null())
        .collect()
}

/// The first of `docs` of `kind`.
///
/// # Panics
/// When none is.
#[must_use]
pub fn document_of_kind<'a>(docs: &'a [serde_yaml_ng::Value], kind: &str) -> &'a serde_yaml_ng::Value {
    docs.iter().find(|d| d["kind"].as_str() == Some(kind)).unwrap_or_else(|| panic!("no {kind}"))
}

/// What RBAC sees in a recorded request: (apiGroup, resource[/subresource], verb,
/// namespace); `None` for discovery, which every authenticated user may read.
#[must_use]
pub fn rbac_view(r: &RecordedRequest) -> Option<(String, String, String, Option<String>)> {
    let segs: Vec<&str> = r.path.trim_matches('/').split('/').collect();
    let (group, rest) = match segs.as_slice() {
        ["api", _, rest @ ..] if !rest.is_empty() => ("", rest),
        ["apis", g, _, rest @ ..] if !rest.is_empty() => (*g, rest),
        _ => return None, // discovery: allowed to every authenticated user
    };
    let (namespace, rest) = match rest {
        ["namespaces", ns, rest @ ..] if !rest.is_empty() => (Some((*ns).to_owned()), rest),
        other => (None, other),
    };
    let resource = match rest {
        [plural] | [plural, _] => (*plural).to_owned(),
        [plural, _, sub] => format!("{plural}/{sub}"),
        _ => return None,
    };
    let verb = match (r.method.as_str(), rest.len()) {
        ("GET", 1) if r.is_watch() => "watch",
        ("GET", 1) => "list",
        ("GET", _) => "get",
        ("POST", _) => "create",
        ("PUT", _) => "update",
        ("PATCH", _) => "patch",
        ("DELETE", _) => "delete",
        _ => return None,
    };
    Some((group.to_owned(), resource, verb.to_owned(), namespace))
}

/// Whether RBAC `rules` (a ClusterRole's or Role's `rules`, as YAML) grant `verb` on
/// `group`/`resource`.
#[must_use]
pub fn rbac_allows(rules: &serde_yaml_ng::Value, group: &str, resource: &str, verb: &str) -> bool {
    let has = |list: &serde_yaml_ng::Value, item: &str| {
        list.as_sequence().is_some_and(|s| s.iter().any(|v| v.as_str() == Some(item) || v.as_str() == Some("*")))
    };
    rules
        .as_sequence()
        .into_iter()
        .flatten()
        .any(|rule| has(&rule["apiGroups"], group) && has(&rule["resources"], resource) && has(&rule["verbs"], verb))
}

/// Every (apiGroup, resource, verb) a list of RBAC rules grants.
#[must_use]
pub fn rbac_grants(rules: &serde_yaml_ng::Value) -> Vec<(String, String, String)> {
    let strings = |v: &serde_yaml_ng::Value| -> Vec<String> {
        v.as_sequence().into_iter().flatten().filter_map(|s| s.as_str().map(str::to_owned)).collect()
    };
    let mut out = Vec::new();
    for rule in rules.as_sequence().into_iter().flatten() {
        for group in strings(&rule["apiGroups"]) {
            for resource in strings(&rule["resources"]) {
                for verb in strings(&rule["verbs"]) {
                    out.push((group.clone(), resource.clone(), verb));
                }
            }
        }
    }
    out
}

/// RFC 7386 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(p) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(t) = target {
                for (k, v) in p {
                    if v.is_null() {
                        t.remove(k);
                    } else {
                        merge_patch(t.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

/// One requirement of a label selector.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Requirement {
    Eq(String, String),
    NotEq(String, String),
    In(String, Vec<String>),
    NotIn(String, Vec<String>),
    Exists(String),
    NotExists(String),
}

impl Requirement {
    fn matches(&self, labels: &Value) -> bool {
        let get = |k: &str| labels.get(k).and_then(Value::as_str);
        match self {
            Self::Eq(k, v) => get(k) == Some(v.as_str()),
            Self::NotEq(k, v) => get(k) != Some(v.as_str()),
            Self::In(k, vs) => get(k).is_some_and(|x| vs.iter().any(|v| v == x)),
            Self::NotIn(k, vs) => get(k).is_none_or(|x| vs.iter().all(|v| v != x)),
            Self::Exists(k) => get(k).is_some(),
            Self::NotExists(k) => get(k).is_none(),
        }
    }
}

/// Parses a label selector string (`a=b,c!=d,e in (f,g),!h`).
fn parse_selector(text: &str) -> Result<Vec<Requirement>, String> {
    let mut out = Vec::new();
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        let set = |rest: &str| -> Result<Vec<String>, String> {
            let inner = rest
                .trim()
                .strip_prefix('(')
                .and_then(|r| r.strip_suffix(')'))
                .ok_or(format!("bad set in `{part}`"))?;
            Ok(inner.split(',').map(|s| s.trim().to_owned()).collect())
        };
        let req = if let Some((k, v)) = part.split_once("!=") {
            Requirement::NotEq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once("==") {
            Requirement::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, v)) = part.split_once('=') {
            Requirement::Eq(k.trim().into(), v.trim().into())
        } else if let Some((k, rest)) = part.split_once(" notin ") {
            Requirement::NotIn(k.trim().into(), set(rest)?)
        } else if let Some((k, rest)) = part.split_once(" in ") {
            Requirement::In(k.trim().into(), set(rest)?)
        } else if let Some(k) = part.strip_prefix('!') {
            Requirement::NotExists(k.trim().into())
        } else {
            Requirement::Exists(part.into())
        };
        out.push(req);
    }
    Ok(out)
}

/// Renders a `LabelSelector` object as a selector string, the way the scale subresource
/// reports it.
fn selector_string(selector: &Value) -> String {
    if let Some(s) = selector.as_str() {
        return s.to_owned();
    }
    let mut parts = Vec::new();
    if let Some(m) = selector.get("matchLabels").and_then(Value::as_object) {
        for (k, v) in m {
            parts.push(format!("{k}={}", v.as_str().unwrap_or_default()));
        }
    }
    if let Some(exprs) = selector.get("matchExpressions").and_then(Value::as_array) {
        for e in exprs {
            let key = e["key"].as_str().unwrap_or_default();
            let values: Vec<&str> =
                e["values"].as_array().map(|a| a.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
            match e["operator"].as_str().unwrap_or_default() {
                "In" => parts.push(format!("{key} in ({})", values.join(","))),
                "NotIn" => parts.push(format!("{key} notin ({})", values.join(","))),
                "Exists" => parts.push(key.to_owned()),
                "DoesNotExist" => parts.push(format!("!{key}")),
                _ => {}
            }
        }
    }
    parts.join(",")
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == key).map(|(_, v)| v))
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).ok().and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(b) => {
                        out.push(b);
                        i += 3;
                    }
                    None => {
                        out.push(b'%');
                        i += 1;
                    }
                }
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn full(status: StatusCode, body: &Value) -> Response<Body> {
    let bytes = serde_json::to_vec(body).unwrap_or_default();
    let mut resp = Response::new(Full::new(Bytes::from(bytes)).boxed());
    *resp.status_mut() = status;
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    resp
}

fn status_body(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": "Failure", "message": message, "reason": reason, "code": code
    })
}

fn error(code: u16, reason: &str, message: &str) -> Response<Body> {
    full(StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), &status_body(code, reason, message))
}

fn reason_for(code: u16) -> &'static str {
    match code {
        400 => "BadRequest",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "NotFound",
        409 => "Conflict",
        410 => "Expired",
        422 => "Invalid",
        429 => "TooManyRequests",
        500 => "InternalError",
        503 => "ServiceUnavailable",
        504 => "Timeout",
        _ => "Unknown",
    }
}

/// The parsed resource path.
struct Target {
    kind: KindInfo,
    namespace: Option<String>,
    name: Option<String>,
    sub: Option<String>,
}

enum Route {
    Discovery(String, String),
    Versions,
    Groups,
    Resource(Target),
    Unknown,
}

fn route(inner: &Inner, path: &str) -> Route {
    let segs: Vec<&str> = path.trim_matches('/').split('/').filter(|s| !s.is_empty()).collect();
    let (group, version, rest) = match segs.as_slice() {
        ["api"] => return Route::Versions,
        ["apis"] => return Route::Groups,
        ["api", v] => return Route::Discovery(String::new(), (*v).to_owned()),
        ["apis", g, v] => return Route::Discovery((*g).to_owned(), (*v).to_owned()),
        ["api", v, rest @ ..] => ("", *v, rest),
        ["apis", g, v, rest @ ..] => (*g, *v, rest),
        _ => return Route::Unknown,
    };
    let (namespace, plural, name, sub) = match rest {
        ["namespaces", ns, plural, tail @ ..] => (Some((*ns).to_owned()), *plural, tail.first(), tail.get(1)),
        [plural, tail @ ..] => (None, *plural, tail.first(), tail.get(1)),
        [] => return Route::Unknown,
    };
    match inner.kind_by_plural(group, version, plural) {
        Some(kind) => Route::Resource(Target {
            kind,
            namespace,
            name: name.map(|s| (*s).to_owned()),
            sub: sub.map(|s| (*s).to_owned()),
        }),
        None => Route::Unknown,
    }
}

fn count_key(method: &Method, path: &str, query: &str, inner: &Inner) -> String {
    let watch = query.split('&').any(|kv| kv == "watch=true" || kv == "watch=1");
    let verb = if watch { "WATCH".to_owned() } else { method.to_string() };
    match route(inner, path) {
        Route::Resource(t) => {
            let what = match (&t.name, &t.sub) {
                (None, _) => format!("{} (collection)", t.kind.plural),
                (Some(_), Some(s)) => format!("{}/{s}", t.kind.plural),
                (Some(_), None) => t.kind.plural.clone(),
            };
            format!("{verb} {what}")
        }
        Route::Discovery(..) | Route::Versions | Route::Groups => format!("{verb} discovery"),
        Route::Unknown => format!("{verb} unknown"),
    }
}

async fn handle(shared: Arc<Shared>, stop: watch::Receiver<bool>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let query = req.uri().query().unwrap_or_default().to_owned();
    let content_type = req.headers().get(hyper::header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).map(str::to_owned);
    let body_bytes = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => return error(400, "BadRequest", "could not read the request body"),
    };
    let body: Option<Value> = if body_bytes.is_empty() { None } else { serde_json::from_slice(&body_bytes).ok() };

    let fault = {
        let mut inner = shared.lock();
        let key = count_key(&method, &path, &query, &inner);
        *inner.request_counts.entry(key).or_default() += 1;
        if inner.record_bodies {
            let at = shared.started.elapsed();
            inner.requests.push(RecordedRequest {
                method: method.to_string(),
                path: path.clone(),
                query: query.clone(),
                content_type: content_type.clone(),
                body: body.clone(),
                at,
            });
        }
        let m = method.as_str();
        let found = inner.faults.iter_mut().find(|f| {
            f.remaining > 0 && f.method.as_deref().is_none_or(|fm| fm == m) && path.contains(&f.path_contains)
        });
        found.map(|f| {
            f.remaining -= 1;
            f.clone()
        })
    };
    if let Some(fault) = fault {
        if !fault.delay.is_zero() {
            tokio::time::sleep(fault.delay).await;
        }
        if let Some(code) = fault.status {
            return error(code, reason_for(code), &format!("injected failure ({code}) for {method} {path}"));
        }
    }

    let is_watch = query_param(&query, "watch").is_some_and(|v| v == "true" || v == "1");
    let mut inner = shared.lock();
    let target = match route(&inner, &path) {
        Route::Versions => return full(StatusCode::OK, &json!({"kind": "APIVersions", "versions": ["v1"]})),
        Route::Groups => return full(StatusCode::OK, &groups(&inner)),
        Route::Discovery(group, version) => return discovery(&inner, &group, &version),
        Route::Unknown => {
            return error(404, "NotFound", &format!("the server could not find the requested resource ({path})"));
        }
        Route::Resource(t) => t,
    };
    let ns = target.namespace.clone().unwrap_or_default();
    let key = target.kind.key();
    let kind = target.kind.clone();
    let not_found = |name: &str| error(404, "NotFound", &format!("{} \"{name}\" not found", kind.plural));

    match (&method, target.name.as_deref(), target.sub.as_deref()) {
        (&Method::GET, None, _) if is_watch => {
            let selector = match parse_selector(&percent_decode(query_param(&query, "labelSelector").unwrap_or(""))) {
                Ok(s) => s,
                Err(e) => return error(400, "BadRequest", &e),
            };
            let from = query_param(&query, "resourceVersion").unwrap_or("").to_owned();
            let timeout = query_param(&query, "timeoutSeconds").and_then(|s| s.parse::<u64>().ok()).unwrap_or(1800);
            drop(inner);
            watch_stream(shared, stop, key, target.namespace, selector, from, Duration::from_secs(timeout))
        }
        (&Method::GET, None, _) => {
            let selector = match parse_selector(&percent_decode(query_param(&query, "labelSelector").unwrap_or(""))) {
                Ok(s) => s,
                Err(e) => return error(400, "BadRequest", &e),
            };
            let items: Vec<&Value> = inner.list(&key, target.namespace.as_deref(), &selector);
            let list = json!({
                "apiVersion": kind.api_version(),
                "kind": format!("{}List", kind.kind),
                "metadata": {"resourceVersion": inner.rv.to_string()},
                "items": items,
            });
            full(StatusCode::OK, &list)
        }
        (&Method::GET, Some(name), None | Some("status")) => match inner.get(&key, &ns, name) {
            Some(obj) => full(StatusCode::OK, obj),
            None => not_found(name),
        },
        (&Method::GET, Some(name), Some("scale")) => {
            let Some(spec) = kind.scale.clone() else {
                return error(404, "NotFound", "the server could not find the requested resource");
            };
            match inner.get(&key, &ns, name) {
                Some(obj) => full(StatusCode::OK, &scale_of(obj, &spec)),
                None => not_found(name),
            }
        }
        (&Method::POST, None, _) => {
            let Some(mut obj) = body else { return error(400, "BadRequest", "the body is not JSON") };
            let name = match obj["metadata"]["name"].as_str() {
                Some(n) => n.to_owned(),
                None => match obj["metadata"]["generateName"].as_str() {
                    Some(prefix) => {
                        let n = format!("{prefix}{:05}", inner.uid + 1);
                        obj["metadata"]["name"] = json!(n);
                        n
                    }
                    None => return error(422, "Invalid", "metadata.name: Required value"),
                },
            };
            if inner.get(&key, &ns, &name).is_some() {
                return error(409, "AlreadyExists", &format!("{} \"{name}\" already exists", kind.plural));
            }
            // The CRD's schema, defaults and CEL rules, as a real API server admits a write.
            if let Err(message) = crate::admission::admit_write(&kind.api_version(), &kind.kind, &mut obj) {
                return error(422, "Invalid", &message);
            }
            let created = inner.create(&kind, &ns, obj);
            drop(inner);
            shared.changed.notify_waiters();
            full(StatusCode::CREATED, &created)
        }
        (&Method::PUT | &Method::PATCH, Some(name), sub) => {
            let Some(body) = body else { return error(400, "BadRequest", "the body is not JSON") };
            let Some(old) = inner.get(&key, &ns, name).cloned() else { return not_found(name) };
            let current_rv = old["metadata"]["resourceVersion"].as_str().unwrap_or_default().to_owned();
            let wanted_rv = body["metadata"]["resourceVersion"].as_str().map(str::to_owned);
            if wanted_rv.as_ref().is_some_and(|rv| *rv != current_rv) {
                return error(
                    409,
                    "Conflict",
                    &format!(
                        "Operation cannot be fulfilled on {} \"{name}\": the object has been modified; please apply your changes to the latest version and try again",
                        kind.plural
                    ),
                );
            }
            if method == Method::PATCH
                && content_type.as_deref().is_some_and(|c| c.starts_with("application/json-patch+json"))
            {
                return error(415, "UnsupportedMediaType", "the fake API server supports merge patches only");
            }
            let result = match sub {
                Some("scale") => {
                    let Some(spec) = kind.scale.clone() else { return error(404, "NotFound", "no scale subresource") };
                    let replicas = if method == Method::PUT {
                        body["spec"]["replicas"].clone()
                    } else {
                        let mut scale = scale_of(&old, &spec);
                        merge_patch(&mut scale, &body);
                        scale["spec"]["replicas"].clone()
                    };
                    let Some(replicas) = replicas.as_i64() else {
                        return error(422, "Invalid", "spec.replicas: Required value");
                    };
                    if replicas < 0 {
                        return error(422, "Invalid", "spec.replicas: must be greater than or equal to 0");
                    }
                    let mut new = old.clone();
                    if let Some(slot) = pointer_slot(&mut new, &spec.spec_replicas) {
                        *slot = json!(replicas);
                    }
                    let stored = inner.replace(&kind, &ns, name, old, new, Sub::Admin);
                    scale_of(&stored, &spec)
                }
                Some("status") => {
                    let new = if method == Method::PUT {
                        body
                    } else {
                        let mut n = old.clone();
                        merge_patch(&mut n, &body);
                        n
                    };
                    inner.replace(&kind, &ns, name, old, new, Sub::Status)
                }
                None => {
                    let mut new = if method == Method::PUT {
                        body
                    } else {
                        let mut n = old.clone();
                        merge_patch(&mut n, &body);
                        n
                    };
                    if let Err(message) = crate::admission::admit_write(&kind.api_version(), &kind.kind, &mut new) {
                        return error(422, "Invalid", &message);
                    }
                    inner.replace(&kind, &ns, name, old, new, Sub::Main)
                }
                Some(other) => return error(404, "NotFound", &format!("no subresource {other}")),
            };
            drop(inner);
            shared.changed.notify_waiters();
            full(StatusCode::OK, &result)
        }
        (&Method::DELETE, Some(name), None) => match inner.remove(&kind, &ns, name) {
            Some(obj) => {
                drop(inner);
                shared.changed.notify_waiters();
                full(StatusCode::OK, &obj)
            }
            None => not_found(name),
        },
        _ => error(405, "MethodNotAllowed", &format!("{method} is not supported on {path}")),
    }
}

fn pointer_slot<'a>(obj: &'a mut Value, pointer: &str) -> Option<&'a mut Value> {
    let mut cur = obj;
    for part in pointer.trim_start_matches('/').split('/') {
        if !cur.is_object() {
            *cur = Value::Object(Map::new());
        }
        cur = cur.as_object_mut()?.entry(part.to_owned()).or_insert(Value::Null);
    }
    Some(cur)
}

fn scale_of(obj: &Value, spec: &ScaleSpec) -> Value {
    let replicas = obj.pointer(&spec.spec_replicas).and_then(Value::as_i64).unwrap_or(1);
    let status_replicas = obj.pointer(&spec.status_replicas).and_then(Value::as_i64).unwrap_or(0);
    let selector = obj.pointer(&spec.selector).map(selector_string).unwrap_or_default();
    json!({
        "kind": "Scale",
        "apiVersion": "autoscaling/v1",
        "metadata": {
            "name": obj["metadata"]["name"],
            "namespace": obj["metadata"]["namespace"],
            "uid": obj["metadata"]["uid"],
            "resourceVersion": obj["metadata"]["resourceVersion"],
            "creationTimestamp": obj["metadata"]["creationTimestamp"],
        },
        "spec": {"replicas": replicas},
        "status": {"replicas": status_replicas, "selector": selector},
    })
}

fn groups(inner: &Inner) -> Value {
    let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for k in inner.kinds.iter().filter(|k| !k.group.is_empty()) {
        let versions = by_group.entry(&k.group).or_default();
        if !versions.contains(&k.version.as_str()) {
            versions.push(&k.version);
        }
    }
    let groups: Vec<Value> = by_group
        .into_iter()
        .map(|(g, vs)| {
            let versions: Vec<Value> =
                vs.iter().map(|v| json!({"groupVersion": format!("{g}/{v}"), "version": v})).collect();
            json!({"name": g, "versions": versions.clone(), "preferredVersion": versions[0]})
        })
        .collect();
    json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups})
}

fn discovery(inner: &Inner, group: &str, version: &str) -> Response<Body> {
    let kinds: Vec<&KindInfo> = inner.kinds.iter().filter(|k| k.group == group && k.version == version).collect();
    if kinds.is_empty() {
        return error(404, "NotFound", "the server could not find the requested resource");
    }
    let mut resources = Vec::new();
    for k in kinds {
        resources.push(json!({
            "name": k.plural, "singularName": k.kind.to_lowercase(), "namespaced": k.namespaced, "kind": k.kind,
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        }));
        if k.status {
            resources.push(json!({
                "name": format!("{}/status", k.plural), "singularName": "", "namespaced": k.namespaced,
                "kind": k.kind, "verbs": ["get", "patch", "update"],
            }));
        }
        if k.scale.is_some() {
            resources.push(json!({
                "name": format!("{}/scale", k.plural), "singularName": "", "namespaced": k.namespaced,
                "group": "autoscaling", "version": "v1", "kind": "Scale", "verbs": ["get", "patch", "update"],
            }));
        }
    }
    let gv = if group.is_empty() { version.to_owned() } else { format!("{group}/{version}") };
    full(
        StatusCode::OK,
        &json!({"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}),
    )
}

fn watch_line(type_: &str, object: &Value) -> Bytes {
    let mut line = serde_json::to_vec(&json!({"type": type_, "object": object})).unwrap_or_default();
    line.push(b'\n');
    Bytes::from(line)
}

fn watch_stream(
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
    resource: String,
    namespace: Option<String>,
    selector: Vec<Requirement>,
    from: String,
    timeout: Duration,
) -> Response<Body> {
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(256);
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + timeout;
        let in_scope = |e: &WatchEvent| {
            e.resource == resource
                && namespace.as_deref().is_none_or(|ns| ns == e.namespace)
                && selector.iter().all(|r| r.matches(&e.object["metadata"]["labels"]))
        };
        // Where to start: "" or "0" means "the current state, then changes".
        let mut last_rv = match from.parse::<u64>() {
            Ok(rv) if rv > 0 => rv,
            _ => {
                let (initial, rv) = {
                    let inner = shared.lock();
                    let items: Vec<Bytes> = inner
                        .list(&resource, namespace.as_deref(), &selector)
                        .into_iter()
                        .map(|o| watch_line("ADDED", o))
                        .collect();
                    (items, inner.rv)
                };
                for line in initial {
                    if tx.send(line).await.is_err() {
                        return;
                    }
                }
                rv
            }
        };
        loop {
            let notified = shared.changed.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            let batch: Result<Vec<Bytes>, ()> = {
                let inner = shared.lock();
                if last_rv < inner.compacted_rv {
                    Err(())
                } else {
                    let start = inner.events.partition_point(|e| e.rv <= last_rv);
                    let lines = inner
                        .events
                        .range(start..)
                        .filter(|e| in_scope(e))
                        .map(|e| watch_line(e.kind, &e.object))
                        .collect();
                    if let Some(last) = inner.events.back() {
                        last_rv = last_rv.max(last.rv);
                    }
                    Ok(lines)
                }
            };
            match batch {
                Err(()) => {
                    let gone = status_body(410, "Expired", &format!("too old resource version: {last_rv}"));
                    let _ = tx.send(watch_line("ERROR", &gone)).await;
                    return;
                }
                Ok(lines) => {
                    for line in lines {
                        if tx.send(line).await.is_err() {
                            return;
                        }
                    }
                }
            }
            tokio::select! {
                () = &mut notified => {}
                () = tokio::time::sleep_until(deadline) => return,
                _ = stop.changed() => return,
                () = tx.closed() => return,
            }
        }
    });
    let stream = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, Infallible>(Frame::data(bytes)), rx))
    });
    let mut resp = Response::new(StreamBody::new(stream).boxed());
    resp.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static("application/json"));
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_parse_and_match() {
        let labels = json!({"app": "llama", "tier": "gpu"});
        let sel = parse_selector("app=llama,tier in (gpu, cpu),!canary").unwrap();
        assert!(sel.iter().all(|r| r.matches(&labels)));
        let sel = parse_selector("app!=llama").unwrap();
        assert!(!sel[0].matches(&labels));
        assert_eq!(
            selector_string(
                &json!({"matchLabels": {"a": "b"}, "matchExpressions": [{"key": "c", "operator": "In", "values": ["d", "e"]}]})
            ),
            "a=b,c in (d,e)"
        );
    }

    #[test]
    fn merge_patch_follows_rfc_7386() {
        let mut doc = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut doc, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(doc, json!({"a": "z", "c": {"d": "e"}}));
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("app%3Dllama%2Ctier%21%3Dx"), "app=llama,tier!=x");
    }
}
