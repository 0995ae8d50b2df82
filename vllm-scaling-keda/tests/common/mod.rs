//! A cluster for the scaler's tests: the in-process API server with a vLLM Deployment
//! whose pods are real vLLM emulators on loopback, a router emulator scraped by a real
//! Prometheus (the signal that exists at zero replicas), and the scaler itself served
//! over TLS on loopback, with KEDA's side played by a gRPC client.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::{Value, json};
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity, ServerTlsConfig};
use vllm_scaling_core::{FakeClock, Timestamp};
use vllm_scaling_keda::proto::external_scaler_client::ExternalScalerClient;
use vllm_scaling_keda::proto::{GetMetricsRequest, ScaledObjectRef};
use vllm_scaling_keda::{KedaScaler, METRIC_NAME, serve};
use vllm_scaling_kube::fake_api::{FakeApiServer, keda_scaled_object_kind};
use vllm_scaling_kube::{Context, ControllerConfig, DecisionBoard, Outcome, reconcile};
use vllm_scaling_prom::emulator::{ControlUpdate, Emulator, EmulatorOptions};
use vllm_scaling_prom::test_util::{PrometheusServer, ScrapeTarget, require};
use vllm_scaling_prom::{PodScrapeOptions, PodScraper, PrometheusMetrics, PrometheusOptions, VllmMetrics};

pub const NS: &str = "default";
pub const APP: &str = "llama";
pub const SO: &str = "llama";
pub const POLICY: &str = "llama";
/// 2023-11-14T22:13:20Z.
pub const T0_MS: u64 = 1_700_000_000_000;
pub const MAX_PODS: usize = 6;
/// The router's queue in Prometheus: what activates the policy at zero replicas.
pub const ROUTER_QUERY: &str = r#"sum(vllm:num_requests_waiting{role="router"})"#;

/// The policy the load script runs: a queue rule on the pods, the router's queue (which
/// exists at zero), and scale to zero after a minute of an idle router.
pub fn policy_spec() -> Value {
    json!({
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": APP},
        "minReplicas": 0,
        "maxReplicas": MAX_PODS,
        "scalingRules": [
            {"metric": "queue_length", "threshold": 5, "source": "pods"},
            {"name": "router_queue", "metric": "custom", "query": ROUTER_QUERY, "targetType": "AverageValue", "threshold": 5}
        ],
        "scaleToZero": {"activationRule": "router_queue", "idleSeconds": 60},
        "behavior": {
            "scaleDown": {"stabilizationWindowSeconds": 30, "policies": [{"type": "Pods", "value": 2, "periodSeconds": 15}]}
        }
    })
}

pub fn scaled_object(metadata: Value) -> Value {
    json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject",
        "metadata": {"name": SO, "namespace": NS},
        "spec": {
            "scaleTargetRef": {"name": APP},
            "minReplicaCount": 0,
            "maxReplicaCount": MAX_PODS,
            "triggers": [{"type": "external-push", "metadata": metadata}]
        }
    })
}

pub fn named_metadata() -> std::collections::HashMap<String, String> {
    [("scalerAddress", "vllm-keda-scaler:9443"), ("policy", POLICY)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

pub fn reference(metadata: std::collections::HashMap<String, String>) -> ScaledObjectRef {
    ScaledObjectRef { name: SO.to_owned(), namespace: NS.to_owned(), scaler_metadata: metadata }
}

pub fn metrics_request(metadata: std::collections::HashMap<String, String>) -> GetMetricsRequest {
    GetMetricsRequest { scaled_object_ref: Some(reference(metadata)), metric_name: format!("s0-{METRIC_NAME}") }
}

fn deployment(replicas: usize) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": APP, "namespace": NS},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": APP}},
                 "template": {"metadata": {"labels": {"app": APP}}, "spec": {"containers": [{"name": "vllm"}]}}},
        "status": {"replicas": replicas, "readyReplicas": replicas}
    })
}

fn pod(i: usize, emulator: &Emulator) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{APP}-{i}"), "namespace": NS, "labels": {"app": APP},
                     "annotations": {"prometheus.io/port": emulator.addr().port().to_string()}},
        "spec": {"containers": [{"name": "vllm", "ports": [{"name": "http", "containerPort": 8000}]}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

pub struct Cluster {
    pub server: FakeApiServer,
    pub clock: Arc<FakeClock>,
    pub ctx: Arc<Context<VllmMetrics>>,
    pub board: Arc<DecisionBoard>,
    pub client: ExternalScalerClient<Channel>,
    pub pods: Vec<Emulator>,
    pub router: Emulator,
    pub prometheus: Option<PrometheusServer>,
    stop: tokio::sync::watch::Sender<bool>,
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

/// A CA and a certificate for `localhost` it signed: (CA PEM, cert PEM, key PEM).
pub fn certificates() -> (String, String, String) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca = rcgen::CertifiedIssuer::self_signed(ca_params, ca_key).unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_owned()]).unwrap().signed_by(&key, &ca).unwrap();
    (ca.pem(), cert.pem(), key.serialize_pem())
}

impl Cluster {
    /// `replicas` pods up; with `prometheus`, a real Prometheus scrapes the router every
    /// 200 ms (the test fails under CI=true when it is not installed).
    pub async fn start(replicas: usize, prometheus: bool) -> Option<Self> {
        let server = FakeApiServer::start().await.unwrap();
        server.add_kind(keda_scaled_object_kind());
        let mut pods = Vec::new();
        for _ in 0..MAX_PODS {
            pods.push(Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorOptions::default()).await.unwrap());
        }
        let router = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorOptions::default()).await.unwrap();
        router.control(ControlUpdate { queue_length: Some(Some(0.0)), ..ControlUpdate::default() }).unwrap();
        let prometheus = if prometheus {
            let target = ScrapeTarget::new(router.addr().to_string()).label("role", "router");
            Some(require(PrometheusServer::start(&[target], Duration::from_millis(200)).await)?)
        } else {
            None
        };
        let scraper = PodScraper::new(PodScrapeOptions::default()).unwrap();
        let metrics = match &prometheus {
            Some(p) => {
                VllmMetrics::prometheus(PrometheusMetrics::new(PrometheusOptions::new(p.url())).unwrap(), Some(scraper))
            }
            None => VllmMetrics::pods(scraper),
        };
        let clock = Arc::new(FakeClock::new(Timestamp::from_millis(T0_MS)));
        let board = Arc::new(DecisionBoard::new());
        let config = ControllerConfig::default()
            .with_request_timeout(Duration::from_secs(2))
            .with_status_interval(Duration::ZERO)
            .with_activation_period(Duration::from_secs(1));
        let ctx = Arc::new(
            Context::new(server.client(), metrics, config)
                .with_clock(clock.clone())
                .without_gpu_exporters()
                .publishing_to(board.clone()),
        );
        let (stop, stopped) = tokio::sync::watch::channel(false);
        let ready = Arc::new(AtomicBool::new(false));
        let mut until = stopped.clone();
        tokio::spawn(vllm_scaling_kube::run(ctx.clone(), ready.clone(), async move {
            let _ = until.wait_for(|s| *s).await;
        }));
        let (ca, cert, key) = certificates();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let tls = ServerTlsConfig::new().identity(Identity::from_pem(cert, key));
        let mut until = stopped.clone();
        tokio::spawn(serve(listener, KedaScaler::new(ctx.clone()), Some(tls), async move {
            let _ = until.wait_for(|s| *s).await;
        }));
        let channel = Channel::from_shared(format!("https://localhost:{}", addr.port()))
            .unwrap()
            .tls_config(ClientTlsConfig::new().ca_certificate(Certificate::from_pem(ca)).domain_name("localhost"))
            .unwrap()
            .connect()
            .await
            .expect("the scaler serves TLS on loopback");
        let cluster = Self {
            server,
            clock,
            ctx,
            board,
            client: ExternalScalerClient::new(channel),
            pods,
            router,
            prometheus,
            stop,
        };
        cluster.server.apply(deployment(replicas));
        cluster.set_pods(replicas);
        while !ready.load(std::sync::atomic::Ordering::SeqCst) {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        cluster.router_seen(0.0).await;
        Some(cluster)
    }

    /// Makes the Deployment run `n` pods (what the HPA or KEDA writing /scale, and the
    /// Deployment controller, would do).
    pub fn set_pods(&self, n: usize) {
        let patch = json!({"spec": {"replicas": n}, "status": {"replicas": n, "readyReplicas": n}});
        self.server.merge("apps/v1", "Deployment", NS, APP, &patch).expect("the Deployment exists");
        for i in 0..MAX_PODS {
            if i < n {
                self.server.apply(pod(i, &self.pods[i]));
            } else {
                self.server.delete("v1", "Pod", NS, &format!("{APP}-{i}"));
            }
        }
    }

    pub fn clock_now(&self) -> Timestamp {
        vllm_scaling_core::Clock::now(&*self.clock)
    }

    pub fn replicas(&self) -> i32 {
        let d = self.server.get("apps/v1", "Deployment", NS, APP).unwrap();
        i32::try_from(d["spec"]["replicas"].as_i64().unwrap()).unwrap()
    }

    /// Spreads a total queue of `total` requests over the running pods, and sets the
    /// router's queue.
    pub fn set_load(&self, total: f64, router: f64) {
        let n = usize::try_from(self.replicas()).unwrap();
        for (i, e) in self.pods.iter().enumerate() {
            let q = if i < n { total / n as f64 } else { 0.0 };
            e.control(ControlUpdate { queue_length: Some(Some(q)), ..ControlUpdate::default() }).unwrap();
        }
        self.router.control(ControlUpdate { queue_length: Some(Some(router)), ..ControlUpdate::default() }).unwrap();
    }

    /// Waits until Prometheus has scraped the router's queue at `value`.
    pub async fn router_seen(&self, value: f64) {
        let Some(p) = &self.prometheus else { return };
        let started = std::time::Instant::now();
        loop {
            let got = p.query(ROUTER_QUERY).await.ok().and_then(|r| r.first().map(|s| s.1));
            if got == Some(value) {
                return;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "Prometheus never saw router queue {value}: {got:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Moves the clock and evaluates the named policy at the new time (the watch loop
    /// would, within its requeue).
    pub async fn step(&self, secs: u64) -> Outcome {
        self.clock.advance(Duration::from_secs(secs));
        self.evaluate().await
    }

    /// Evaluates the named policy now (a no-op if it was already evaluated at this time).
    pub async fn evaluate(&self) -> Outcome {
        let api: kube::Api<kube::api::DynamicObject> = kube::Api::namespaced_with(
            self.server.client(),
            NS,
            &kube::api::ApiResource::erase::<vllm_scaling_kube::VllmScalingPolicyResource>(&()),
        );
        let object = api.get(POLICY).await.unwrap();
        let policy = vllm_scaling_kube::decode_policy(&object).unwrap();
        reconcile(Arc::new(policy), self.ctx.clone()).await.unwrap();
        self.board.latest(NS, POLICY).expect("evaluated")
    }

    /// Applies the named policy and waits until the scaler's watch has it.
    pub async fn apply_policy(&self, spec: Value) {
        self.server.apply(json!({
            "apiVersion": "autoscaler.production-stack/v1alpha1", "kind": "vLLMScalingPolicy",
            "metadata": {"name": POLICY, "namespace": NS}, "spec": spec
        }));
        let started = std::time::Instant::now();
        while !matches!(self.ctx.watched_policy(NS, POLICY), Ok(Some(_))) {
            assert!(started.elapsed() < Duration::from_secs(10), "the watch never saw the policy");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
