//! GPU metrics without configuration: the seed example, applied verbatim, with the
//! controller's defaults (`vllm-autoscaler run`'s pod scraper, no flag), scales up on GPU
//! utilization and back down to `minReplicas`, its `gpu_utilization` rule read from the
//! `gpu-exporter` on each pod's node, found through the (in-process) API server. Real
//! exporters serve fake GPUs (`FakeGpus`) on loopback; real vLLM emulators serve the
//! pods' own metrics. The same through a real Prometheus scraping the exporters.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{MODEL, NS, POLICY, T0_MS, deployment, seed_json};
use serde_json::{Value, json};
use vllm_scaling_core::{Clock, FakeClock, GetScalingMetrics, Timestamp};
use vllm_scaling_kube::fake_api::FakeApiServer;
use vllm_scaling_kube::{Context, ControllerConfig, reconcile};
use vllm_scaling_nvml::{
    DeviceRef, Exporter, ExporterConfig, FakeGpus, GpuProcess, NvmlConfig, NvmlMetrics, PodDirectory, PodRef,
    PodSource, VllmTarget,
};
use vllm_scaling_prom::emulator::{Emulator, EmulatorOptions};
use vllm_scaling_prom::test_util::{PrometheusServer, ScrapeTarget, require};
use vllm_scaling_prom::{PodScrapeOptions, PodScraper, PrometheusMetrics, PrometheusOptions, VllmMetrics};

/// One GPU node: its exporter on 127.0.0.1 over one fake GPU used by one vLLM pod.
struct GpuNode {
    name: String,
    exporter: Arc<Exporter<FakeGpus>>,
    port: u16,
    _proc: tempfile::TempDir,
    _server: tokio::task::JoinHandle<()>,
}

impl GpuNode {
    async fn start(name: &str, pod: &str, uid: &str, pid: u32, clock: Arc<FakeClock>) -> Self {
        let proc = tempfile::tempdir().unwrap();
        std::fs::create_dir(proc.path().join(pid.to_string())).unwrap();
        std::fs::write(proc.path().join(format!("{pid}/cgroup")), format!("0::/kubepods/pod{uid}/\n")).unwrap();
        let gpus = FakeGpus::new();
        gpus.add_gpu(0, "NVIDIA H100 80GB HBM3", 81_920);
        gpus.set_memory_used_mib(DeviceRef::Gpu(0), 40_960);
        gpus.set_processes(DeviceRef::Gpu(0), vec![GpuProcess { pid, used_memory_bytes: None, gpu_instance_id: None }]);
        let mut pods = PodDirectory::new();
        pods.insert_pod(PodRef { namespace: NS.into(), name: pod.into(), uid: uid.into() });
        let config =
            NvmlConfig { proc_root: proc.path().into(), pods: PodSource::Fixed(pods), ..NvmlConfig::default() };
        let exporter = Arc::new(Exporter::new(
            Some(NvmlMetrics::new(gpus, config)),
            Box::new(Vec::<VllmTarget>::new()),
            ExporterConfig::default(),
            clock,
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(exporter.clone().serve(listener, std::future::pending()));
        Self { name: name.into(), exporter, port, _proc: proc, _server: server }
    }

    /// The GPU was `percent` busy for each second of the last `secs` seconds.
    fn busy(&self, now: Timestamp, secs: u64, percent: f64) {
        let now_s = now.as_millis() / 1000;
        for s in (now_s + 1).saturating_sub(secs)..=now_s {
            self.exporter.gpus().unwrap().devices().push_utilization(DeviceRef::Gpu(0), s * 1_000_000, percent);
        }
    }

    /// The exporter's page now.
    async fn page(&self) -> String {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await.unwrap();
        stream.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).await.unwrap();
        response.split_once("\r\n\r\n").unwrap().1.to_owned()
    }

    /// The exporter's pod, as its DaemonSet would create it: the port from the
    /// `prometheus.io/port` annotation (`by_annotation`) or the container port `metrics`.
    fn pod(&self, by_annotation: bool) -> Value {
        let mut pod = json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("vllm-gpu-exporter-{}", self.name), "namespace": "vllm-autoscaler",
                         "labels": {"app.kubernetes.io/name": "vllm-gpu-exporter"}},
            "spec": {"nodeName": self.name, "containers": [{"name": "gpu-exporter",
                     "ports": [{"name": "metrics", "containerPort": if by_annotation { 9400 } else { self.port }}]}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
        });
        if by_annotation {
            pod["metadata"]["annotations"] = json!({"prometheus.io/port": self.port.to_string()});
        }
        pod
    }
}

/// A vLLM pod of `llama-70b` on `node`, served by an (idle) emulator.
fn vllm_pod(i: usize, node: &str, uid: &str, emulator: &Emulator) -> Value {
    let port = emulator.metrics_url().split(':').nth(2).unwrap().split('/').next().unwrap().to_owned();
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": format!("llama-70b-{i}"), "namespace": NS, "uid": uid, "labels": {"app": "llama-70b"},
                     "annotations": {"prometheus.io/port": port}},
        "spec": {"nodeName": node, "containers": [{"name": "vllm", "ports": [{"name": "http", "containerPort": 8000}]}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
    })
}

struct Cluster {
    server: FakeApiServer,
    clock: Arc<FakeClock>,
    nodes: Vec<GpuNode>,
    _emulators: Vec<Emulator>,
}

const UIDS: [&str; 2] = ["6f1d9c4e-2b7a-4c11-9d3e-0a1b2c3d4e5f", "7a2e0d5f-3c8b-4d22-8e4f-1b2c3d4e5f60"];

/// The seed's Deployment (2 replicas) with one pod on each of two GPU nodes, each node
/// with its exporter; `exporter_pods`: whether the exporters' pods are in the API.
async fn cluster(exporter_pods: bool) -> Cluster {
    let clock = Arc::new(FakeClock::new(Timestamp::from_millis(T0_MS)));
    let server = FakeApiServer::start().await.unwrap();
    server.apply(deployment("llama-70b", MODEL, 2));
    server.apply(seed_json());
    let mut nodes = Vec::new();
    let mut emulators = Vec::new();
    for (i, node) in ["gpu-node-a", "gpu-node-b"].into_iter().enumerate() {
        let gpu = GpuNode::start(node, &format!("llama-70b-{i}"), UIDS[i], 4242 + i as u32, clock.clone()).await;
        let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorOptions::default()).await.unwrap();
        server.apply(vllm_pod(i, node, UIDS[i], &emulator));
        if exporter_pods {
            server.apply(gpu.pod(i == 0));
        }
        nodes.push(gpu);
        emulators.push(emulator);
    }
    // A dcgm-exporter elsewhere, on a node without target pods: never read.
    server.apply(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": "dcgm-exporter-x", "namespace": "gpu-operator", "labels": {"app": "nvidia-dcgm-exporter"}},
        "spec": {"nodeName": "cpu-node", "containers": [{"name": "dcgm"}]},
        "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
    }));
    Cluster { server, clock, nodes, _emulators: emulators }
}

impl Cluster {
    fn context<M: GetScalingMetrics + 'static>(&self, metrics: M) -> Arc<Context<M>> {
        // The defaults, with a shorter API timeout for the in-process server.
        let config = ControllerConfig::default().with_request_timeout(Duration::from_secs(3));
        Arc::new(Context::new(self.server.client(), metrics, config).with_clock(self.clock.clone()))
    }

    fn replicas(&self) -> i64 {
        self.server.get("apps/v1", "Deployment", NS, "llama-70b").unwrap()["spec"]["replicas"].as_i64().unwrap()
    }

    fn rule(&self, name: &str) -> Value {
        let status = self.server.get("autoscaler.production-stack/v1alpha1", "vLLMScalingPolicy", NS, POLICY).unwrap()
            ["status"]
            .clone();
        status["rules"].as_array().unwrap().iter().find(|r| r["name"] == name).cloned().unwrap_or(Value::Null)
    }

    /// Every GPU `percent` busy; the clock moves 15 s; one evaluation.
    async fn step<M: GetScalingMetrics + 'static>(
        &self,
        ctx: &Arc<Context<M>>,
        percent: f64,
        settle: Option<&PrometheusServer>,
    ) {
        self.clock.advance(Duration::from_secs(15));
        for node in &self.nodes {
            node.busy(self.clock.now(), 30, percent);
        }
        if let Some(prometheus) = settle {
            // Until Prometheus has scraped what the exporters serve now.
            for node in &self.nodes {
                let page = node.page().await;
                let values = vllm_scaling_kube::dcgm_pod_values(&page, NS).unwrap();
                let (pod, gpu) = values.iter().next().unwrap();
                let util = gpu.utilization_percent.unwrap();
                let q = format!("abs(DCGM_FI_DEV_GPU_UTIL{{namespace=\"{NS}\",pod=\"{pod}\"}} - {util}) < 0.001");
                prometheus.wait_for(&q, Duration::from_secs(20)).await.unwrap();
            }
        }
        let api: kube::Api<vllm_scaling_kube::VllmScalingPolicyResource> =
            kube::Api::namespaced(self.server.client(), NS);
        reconcile(Arc::new(api.get(POLICY).await.unwrap()), ctx.clone()).await.unwrap();
    }

    /// Busy GPUs scale 2 -> 3; idle ones scale back to minReplicas (1) once the 300 s
    /// scale-down stabilization has passed, never before.
    async fn up_and_down<M: GetScalingMetrics + 'static>(
        &self,
        ctx: &Arc<Context<M>>,
        prometheus: Option<&PrometheusServer>,
    ) {
        for _ in 0..4 {
            self.step(ctx, 95.0, prometheus).await;
            if self.replicas() == 3 {
                break;
            }
        }
        let gpu = self.rule("gpu_utilization");
        assert_eq!(self.replicas(), 3, "95 % busy GPUs on 2 pods with threshold 75 ask for 3: {gpu}");
        assert_eq!(gpu["status"], "ok", "{gpu}");
        assert_eq!(gpu["observed"], 95.0, "{gpu}");
        let mut steps = 0;
        while self.replicas() != 1 {
            steps += 1;
            assert!(steps <= 30, "no scale-down after {steps} idle steps: {}", self.rule("gpu_utilization"));
            self.step(ctx, 5.0, prometheus).await;
            if steps * 15 < 300 {
                assert_eq!(self.replicas(), 3, "scaled down inside the stabilization window");
            }
        }
        let gpu = self.rule("gpu_utilization");
        assert_eq!((gpu["status"].as_str(), gpu["observed"].as_f64()), (Some("ok"), Some(5.0)), "{gpu}");
        for rule in ["queue_length", "latency"] {
            assert_eq!(self.rule(rule)["status"], "ok", "{}", self.rule(rule));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scales_up_and_down_on_gpu_exporters_found_by_node() {
    let c = cluster(true).await;
    let ctx = c.context(VllmMetrics::pods(PodScraper::new(PodScrapeOptions::default()).unwrap()));
    c.up_and_down(&ctx, None).await;
    let reason = c.rule("gpu_utilization")["reason"].as_str().unwrap_or_default().to_owned();
    for expected in [
        "source: gpu-exporter vllm-autoscaler/vllm-gpu-exporter-gpu-node-a on node gpu-node-a",
        &format!("(http://127.0.0.1:{}/metrics)", c.nodes[0].port),
        "gpu-exporter vllm-autoscaler/vllm-gpu-exporter-gpu-node-b on node gpu-node-b",
        &format!("(http://127.0.0.1:{}/metrics)", c.nodes[1].port),
    ] {
        assert!(reason.contains(expected), "{expected} not in {reason}");
    }
    // The exporters are listed cluster-wide by label, at most once per cache period.
    let lists: Vec<_> =
        c.server.requests().into_iter().filter(|r| r.method == "GET" && r.path == "/api/v1/pods").collect();
    assert!(!lists.is_empty() && lists.len() <= 2 * 30, "{}", lists.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_an_exporter_the_gpu_rule_is_missing_and_says_why() {
    let c = cluster(false).await;
    let ctx = c.context(VllmMetrics::pods(PodScraper::new(PodScrapeOptions::default()).unwrap()));
    for _ in 0..3 {
        c.step(&ctx, 95.0, None).await;
    }
    assert_eq!(c.replicas(), 2, "a missing rule never scales down, and nothing else asks for more");
    let gpu = c.rule("gpu_utilization");
    assert_eq!(gpu["status"], "missing", "{gpu}");
    let reason = gpu["reason"].as_str().unwrap();
    assert!(
        reason.contains("no Running and Ready exporter pod") && reason.contains("gpu-node-a, gpu-node-b"),
        "{reason}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_scales_up_and_down_on_dcgm_series_in_prometheus() {
    let c = cluster(false).await;
    let targets: Vec<ScrapeTarget> =
        c.nodes.iter().map(|n| ScrapeTarget::new(format!("127.0.0.1:{}", n.port))).collect();
    let Some(prometheus) = require(PrometheusServer::start(&targets, Duration::from_millis(500)).await) else {
        return;
    };
    let metrics = VllmMetrics::prometheus(
        PrometheusMetrics::new(PrometheusOptions::new(prometheus.url())).unwrap(),
        Some(PodScraper::new(PodScrapeOptions::default()).unwrap()),
    );
    let ctx = c.context(metrics);
    c.up_and_down(&ctx, Some(&prometheus)).await;
    let reason = c.rule("gpu_utilization")["reason"].as_str().unwrap_or_default().to_owned();
    assert!(reason.starts_with("source: the metrics backend (no GPU node exporter"), "{reason}");
}
