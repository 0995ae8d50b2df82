//! Fixtures shared by the controller tests: the in-process API server with a vLLM
//! Deployment, its pods, and the seed's example policy.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};
use vllm_scaling_core::{Clock, FakeClock, InMemoryMetrics, PodMetrics, ScalingMetrics, TargetId, Timestamp};
use vllm_scaling_kube::fake_api::{FakeApiServer, RecordedRequest};
use vllm_scaling_kube::{Context, ControllerConfig, Leadership, VllmScalingPolicyResource, reconcile};

pub const NS: &str = "default";
pub const POLICY: &str = "example-policy";
pub const MODEL: &str = "meta-llama/Llama-2-70b-hf";
/// 2023-11-14T22:13:20Z: the tests run at a Unix time, as the controller does.
pub const T0_MS: u64 = 1_700_000_000_000;

pub const SEED: &str = r#"apiVersion: autoscaler.production-stack/v1alpha1
kind: vLLMScalingPolicy
metadata:
  name: example-policy
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: meta-llama/Llama-2-70b-hf
  minReplicas: 1
  maxReplicas: 10
  scalingRules:
    - metric: "gpu_utilization"
      threshold: 75
    - metric: "queue_length"
      threshold: 10
    - metric: "latency"
      threshold: 1000
"#;

pub fn seed_json() -> Value {
    let mut v: Value = serde_yaml_ng::from_str(SEED).unwrap();
    v["metadata"]["namespace"] = json!(NS);
    v
}

pub fn deployment(name: &str, model: &str, replicas: i64) -> Value {
    json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {
                "metadata": {"labels": {"app": name}},
                "spec": {"containers": [{
                    "name": "vllm", "image": "vllm/vllm-openai:latest",
                    "command": ["vllm", "serve", model],
                    "args": ["--port", "8000"],
                    "ports": [{"name": "http", "containerPort": 8000}]
                }]}
            }
        },
        "status": {"replicas": replicas, "readyReplicas": replicas}
    })
}

pub fn pod(deployment: &str, i: usize, ready: bool) -> Value {
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("{deployment}-{i}"), "namespace": NS, "labels": {"app": deployment}},
        "spec": {"containers": [{"name": "vllm", "ports": [{"name": "http", "containerPort": 8000}]}]},
        "status": {
            "phase": "Running", "podIP": format!("10.0.0.{}", i + 10),
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }
    })
}

pub struct Harness {
    pub server: FakeApiServer,
    pub clock: FakeClock,
    pub ctx: Arc<Context<InMemoryMetrics>>,
}

impl Harness {
    /// The API server with the `llama-70b` Deployment serving the seed's model (2
    /// replicas, 2 ready pods), a decoy Deployment serving another model, and the seed
    /// policy.
    pub async fn seed() -> Self {
        let server = FakeApiServer::start().await.unwrap();
        server.apply(deployment("llama-70b", MODEL, 2));
        server.apply(deployment("mistral-7b", "mistralai/Mistral-7B-v0.1", 1));
        for i in 0..2 {
            server.apply(pod("llama-70b", i, true));
        }
        server.apply(pod("mistral-7b", 0, true));
        server.apply(seed_json());
        Self::with_server(server, ControllerConfig::default()).await
    }

    pub async fn with_server(server: FakeApiServer, config: ControllerConfig) -> Self {
        let clock = FakeClock::new(Timestamp::from_millis(T0_MS));
        let ctx = Arc::new(
            Context::new(
                server.client(),
                InMemoryMetrics::default(),
                config.with_request_timeout(Duration::from_millis(500)),
            )
            .with_clock(Arc::new(clock.clone())),
        );
        Self { server, clock, ctx }
    }

    /// A controller that lost its memory (a restart): a new context on the same server
    /// and clock.
    pub fn restarted(&self, config: ControllerConfig) -> Arc<Context<InMemoryMetrics>> {
        Arc::new(
            Context::new(
                self.server.client(),
                InMemoryMetrics::default(),
                config.with_request_timeout(Duration::from_millis(500)),
            )
            .with_clock(Arc::new(self.clock.clone()))
            .with_leadership(Leadership::always()),
        )
    }

    pub fn target() -> TargetId {
        TargetId::new(NS, POLICY)
    }

    /// Every listed pod of `llama-70b` reports these values; the fleet's latency is
    /// `latency_ms`.
    pub fn set_load(&self, ctx: &Context<InMemoryMetrics>, pods: usize, queue: f64, gpu: f64, latency_ms: f64) {
        let metrics = ScalingMetrics {
            pods: (0..pods)
                .map(|i| {
                    PodMetrics::running(format!("llama-70b-{i}"))
                        .with("queue_length", queue)
                        .with("gpu_utilization", gpu)
                })
                .collect(),
            fleet: [("latency".to_owned(), latency_ms)].into(),
            ..ScalingMetrics::default()
        };
        ctx.metrics_source().set(&Self::target(), metrics);
    }

    pub async fn policy(&self) -> Arc<VllmScalingPolicyResource> {
        self.policy_named(POLICY).await
    }

    pub async fn policy_named(&self, name: &str) -> Arc<VllmScalingPolicyResource> {
        let api: kube::Api<VllmScalingPolicyResource> = kube::Api::namespaced(self.server.client(), NS);
        Arc::new(api.get(name).await.unwrap())
    }

    /// Runs one evaluation of the named policy as stored now.
    pub async fn reconcile(&self, ctx: &Arc<Context<InMemoryMetrics>>) -> kube::runtime::controller::Action {
        reconcile(self.policy().await, ctx.clone()).await.unwrap()
    }

    pub fn replicas(&self, deployment: &str) -> i64 {
        self.server.get("apps/v1", "Deployment", NS, deployment).unwrap()["spec"]["replicas"].as_i64().unwrap()
    }

    pub fn status(&self) -> Value {
        self.server.get("autoscaler.production-stack/v1alpha1", "vLLMScalingPolicy", NS, POLICY).unwrap()["status"]
            .clone()
    }

    pub fn condition(&self, type_: &str) -> Value {
        self.status()["conditions"]
            .as_array()
            .and_then(|cs| cs.iter().find(|c| c["type"] == type_).cloned())
            .unwrap_or(Value::Null)
    }

    pub fn scale_patches(&self) -> Vec<RecordedRequest> {
        self.server.requests().into_iter().filter(|r| r.method == "PATCH" && r.path.ends_with("/scale")).collect()
    }

    /// Requests that would change a workload (anything but GETs on workloads and their scale).
    pub fn workload_writes(&self) -> Vec<RecordedRequest> {
        self.server.requests().into_iter().filter(|r| r.path.contains("/deployments") && r.method != "GET").collect()
    }

    pub fn events(&self) -> Vec<Value> {
        self.server.list("events.k8s.io/v1", "Event", Some(NS))
    }

    pub fn event_reasons(&self) -> Vec<String> {
        self.events().iter().filter_map(|e| e["reason"].as_str().map(str::to_owned)).collect()
    }

    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    pub fn advance(&self, secs: u64) {
        self.clock.advance(Duration::from_secs(secs));
    }
}
