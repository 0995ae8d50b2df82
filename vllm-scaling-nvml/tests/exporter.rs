//! The exporter: its page parsed back with the project's exposition parser and checked
//! against DCGM's names and labels, served on 127.0.0.1 with re-exported vLLM metrics,
//! and scraped by a real Prometheus.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::{Cgroup, MIB, Node, request, rules};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vllm_scaling_core::{FakeClock, GetScalingMetrics, Timestamp};
use vllm_scaling_nvml::{
    DcgmLabels, DeviceRef, Exporter, ExporterConfig, FakeGpus, FamilyFilter, GpuProcess, NvmlMetrics, ProcessSample,
    VllmTarget, render_dcgm,
};
use vllm_scaling_prom::emulator::{Emulator, EmulatorOptions, Load};
use vllm_scaling_prom::exposition::{self, MetricType};
use vllm_scaling_prom::test_util::{PrometheusServer, ScrapeTarget, require};
use vllm_scaling_prom::{PrometheusMetrics, PrometheusOptions};

/// The clock the fake node's samples are timed against.
const NOW_SECS: u64 = 1_000;

/// A node with:
/// - GPU 0 (H100) shared by two containers of pod `llm/vllm-0`, 50 % → 70 % over the window;
/// - GPU 1 (A100) in MIG mode with MIG devices 0 (3g.20gb, idle) and 1 (1g.5gb, pod `llm/vllm-mig`);
/// - GPU 2 (L4), idle.
fn fake_node() -> (Node, FakeGpus) {
    let mut node = Node::new();
    node.add_pod("llm", "vllm-0", "vllm", &[100], Cgroup::V2Systemd);
    // A second container of the same pod on the same GPU (a sidecar with a CUDA context).
    node.add_process(
        101,
        &std::fs::read_to_string(node.proc_root().join("100/cgroup"))
            .unwrap()
            .replace(&format!("{:064x}", 0x1234_5678_9abc_u128), &format!("{:064x}", 0xdead_beef_u128)),
    );
    let sidecar_log = node.dir.path().join(format!("containers/vllm-0_llm_sidecar-{:064x}.log", 0xdead_beef_u128));
    std::fs::write(sidecar_log, "").unwrap();
    node.add_pod("llm", "vllm-mig", "vllm", &[200], Cgroup::V1Cgroupfs);

    let gpus = FakeGpus::new();
    gpus.add_gpu(0, "NVIDIA H100 80GB HBM3", 81_920);
    gpus.add_gpu(1, "NVIDIA A100-SXM4-40GB", 40_960);
    gpus.add_mig(1, 0, "3g.20gb", None, 20_480);
    gpus.add_mig(1, 1, "1g.5gb", None, 5_120);
    gpus.add_gpu(2, "NVIDIA L4", 23_040);
    let g0 = DeviceRef::Gpu(0);
    for s in 0..30u64 {
        let t = NOW_SECS - 29 + s;
        gpus.push_utilization(g0, t * 1_000_000, if s < 15 { 50.0 } else { 70.0 });
        gpus.push_utilization(DeviceRef::Gpu(2), t * 1_000_000, 0.0);
        gpus.push_process_sample(
            g0,
            ProcessSample { pid: 100, timestamp_us: t * 1_000_000, sm_percent: 40, mem_percent: 10 },
        );
    }
    gpus.set_memory_used_mib(g0, 61_440);
    gpus.set_processes(
        g0,
        vec![
            GpuProcess { pid: 100, used_memory_bytes: Some(60_000 * MIB), gpu_instance_id: None },
            GpuProcess { pid: 101, used_memory_bytes: Some(500 * MIB), gpu_instance_id: None },
        ],
    );
    let mig = DeviceRef::Mig { gpu: 1, index: 1 };
    gpus.set_memory_used_mib(mig, 3_840);
    let on_mig = GpuProcess { pid: 200, used_memory_bytes: Some(3_500 * MIB), gpu_instance_id: Some(7) };
    gpus.set_processes(mig, vec![on_mig]);
    gpus.set_processes(DeviceRef::Gpu(1), vec![on_mig]); // NVML's aggregate on the MIG parent
    (node, gpus)
}

fn labels_of(s: &exposition::Sample<'_, '_>) -> BTreeMap<String, String> {
    s.labels.iter().map(|l| (l.name.to_string(), l.value.to_string())).collect()
}

#[test]
fn the_page_parses_and_matches_dcgm_names_labels_and_units() {
    let (node, gpus) = fake_node();
    let adapter = NvmlMetrics::new(gpus, node.config());
    let snapshot = adapter.snapshot(Timestamp::from_secs(NOW_SECS), Duration::from_secs(30)).unwrap();
    let text = render_dcgm(&snapshot, &DcgmLabels { hostname: "gpu-node-\"a\"\\1".into() });
    let page = exposition::parse(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    // Same names and types as a real dcgm-exporter page, and its identity labels.
    let fixture_path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../shared/fixtures/dcgm/dcgm-exporter-datadog.prom");
    let fixture_text = std::fs::read_to_string(fixture_path)
        .unwrap_or_else(|e| panic!("{fixture_path}: {e} (the shared fixtures live next to the repo, as in CI)"));
    let fixture = exposition::parse(&fixture_text).unwrap();
    for family in ["DCGM_FI_DEV_GPU_UTIL", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"] {
        assert_eq!(page.metric_type(family), fixture.metric_type(family), "{family}");
        assert_eq!(page.metric_type(family), Some(MetricType::Gauge));
        let theirs = fixture.samples_named(family).next().unwrap();
        let ours = page.samples_named(family).next().unwrap();
        for label in ["gpu", "UUID", "device", "modelName", "Hostname"] {
            assert!(theirs.label(label).is_some() && ours.label(label).is_some(), "{family} lacks {label}");
        }
    }

    // GPU 0: the 30 s mean (15 × 50 % + 15 × 70 %), once per container of the pod on it.
    let util: Vec<_> = page.samples_named("DCGM_FI_DEV_GPU_UTIL").collect();
    let gpu0: Vec<_> = util.iter().filter(|s| s.label("gpu") == Some("0")).collect();
    assert_eq!(gpu0.len(), 2);
    let containers: Vec<_> = gpu0.iter().map(|s| s.label("container").unwrap()).collect();
    assert_eq!(containers, ["sidecar", "vllm"]);
    for s in &gpu0 {
        assert_eq!(s.value, 60.0);
        assert_eq!((s.label("namespace"), s.label("pod")), (Some("llm"), Some("vllm-0")));
        assert_eq!(s.label("UUID"), Some(FakeGpus::gpu_uuid(0).as_str()));
        assert_eq!(s.label("device"), Some("nvidia0"));
        assert_eq!(s.label("modelName"), Some("NVIDIA H100 80GB HBM3"));
        assert_eq!(s.label("Hostname"), Some("gpu-node-\"a\"\\1"), "label values survive escaping");
    }
    // GPU 2: idle, empty pod labels (the 2.x/3.x dcgm-exporter shape), 0 % (it reported 0).
    let gpu2 = util.iter().find(|s| s.label("gpu") == Some("2")).unwrap();
    assert_eq!((gpu2.value, gpu2.label("pod"), gpu2.label("container")), (0.0, Some(""), Some("")));
    // No utilization for the MIG GPU or its MIG devices: absent, not 0.
    assert!(util.iter().all(|s| s.label("gpu") != Some("1")), "{text}");
    assert_eq!(util.len(), 3);

    // Memory in MiB.
    let used = |gpu: &str, profile: Option<&str>| -> Vec<f64> {
        page.samples_named("DCGM_FI_DEV_FB_USED")
            .filter(|s| s.label("gpu") == Some(gpu) && s.label("GPU_I_PROFILE") == profile)
            .map(|s| s.value)
            .collect()
    };
    assert_eq!(used("0", None), [61_440.0, 61_440.0]);
    let free0 = page.samples_named("DCGM_FI_DEV_FB_FREE").find(|s| s.label("gpu") == Some("0")).unwrap();
    assert_eq!(free0.value, 81_920.0 - 61_440.0);

    // MIG devices: the parent's gpu/UUID/modelName, the profile and the instance id.
    assert_eq!(used("1", Some("1g.5gb")), [3_840.0]);
    assert_eq!(used("1", Some("3g.20gb")), [0.0]);
    let parent_pods: Vec<&str> = page
        .samples_named("DCGM_FI_DEV_FB_USED")
        .filter(|s| s.label("gpu") == Some("1") && s.label("GPU_I_PROFILE").is_none())
        .map(|s| s.label("pod").unwrap())
        .collect();
    assert_eq!(parent_pods, [""], "the MIG parent's aggregate process list is not a pod's GPU");
    let mig = page.samples_named("DCGM_FI_DEV_FB_USED").find(|s| s.label("GPU_I_PROFILE") == Some("1g.5gb")).unwrap();
    let l = labels_of(&mig);
    assert_eq!(l["UUID"], FakeGpus::gpu_uuid(1));
    assert_eq!(l["modelName"], "NVIDIA A100-SXM4-40GB");
    assert_eq!(l["GPU_I_ID"], "7", "taken from the processes when the device handle cannot tell");
    assert_eq!((l["namespace"].as_str(), l["pod"].as_str(), l["container"].as_str()), ("llm", "vllm-mig", "vllm"));
    let names: Vec<&str> = mig.labels.iter().map(|l| &*l.name).collect();
    assert_eq!(
        names,
        [
            "gpu",
            "UUID",
            "pci_bus_id",
            "device",
            "modelName",
            "GPU_I_PROFILE",
            "GPU_I_ID",
            "Hostname",
            "container",
            "namespace",
            "pod"
        ],
        "dcgm-exporter's label order"
    );

    // Which devices report utilization.
    let reported: Vec<(String, f64)> = page
        .samples_named("vllm_scaling_gpu_util_reported")
        .map(|s| (format!("{}/{}", s.label("gpu").unwrap(), s.label("GPU_I_PROFILE").unwrap_or("-")), s.value))
        .collect();
    assert_eq!(
        reported,
        [
            ("0/-".into(), 1.0),
            ("1/-".into(), 0.0),
            ("1/3g.20gb".into(), 0.0),
            ("1/1g.5gb".into(), 0.0),
            ("2/-".into(), 1.0)
        ]
    );
    // GPU 1 itself has samples in no window (none were pushed): stale, so 0 above.

    // Per-container process figures.
    let mem: BTreeMap<String, f64> = page
        .samples_named("vllm_scaling_gpu_process_memory_used_bytes")
        .map(|s| (format!("{}/{}", s.label("pod").unwrap(), s.label("container").unwrap()), s.value))
        .collect();
    assert_eq!(mem["vllm-0/vllm"], (60_000 * MIB) as f64);
    assert_eq!(mem["vllm-0/sidecar"], (500 * MIB) as f64);
    assert_eq!(mem["vllm-mig/vllm"], (3_500 * MIB) as f64);
    let sm: BTreeMap<String, f64> = page
        .samples_named("vllm_scaling_gpu_process_sm_utilization_percent")
        .map(|s| (s.label("container").unwrap().to_owned(), s.value))
        .collect();
    assert_eq!(sm["vllm"], 40.0);
    assert_eq!(sm["sidecar"], 0.0, "listed on the GPU, never in a sample: idle");
    assert_eq!(sm.len(), 2, "MIG devices have no per-process samples");
}

/// `GET path` over a plain TCP connection; returns (status, body).
async fn get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, body.to_owned())
}

struct Running {
    addr: std::net::SocketAddr,
    emulator: Emulator,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) {
        let _ = self.stop.take().map(|s| s.send(()));
        let _ = (&mut self.server).await;
        self.emulator.shutdown().await;
    }
}

/// The exporter over the fake node, re-exporting one emulated vLLM pod (queue pinned at
/// 7) and one dead target, served on 127.0.0.1.
async fn start(node: &Node, gpus: FakeGpus) -> Running {
    let load = Load { queue_length: Some(7.0), request_rate: 2.0, ..Load::default() };
    let emulator =
        Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorOptions { load, ..EmulatorOptions::default() })
            .await
            .unwrap();
    let pod_labels = vec![("namespace".to_owned(), "llm".to_owned()), ("pod".to_owned(), "vllm-0".to_owned())];
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap(); // bound, then closed
    let targets = vec![
        VllmTarget::new(&emulator.metrics_url(), pod_labels).unwrap(),
        VllmTarget::new(&format!("http://{dead}/metrics"), vec![("pod".into(), "gone".into())]).unwrap(),
    ];
    let config = ExporterConfig {
        window: Duration::from_secs(30),
        labels: DcgmLabels { hostname: "gpu-node-a".into() },
        families: FamilyFilter::Autoscaling,
        scrape_timeout: Duration::from_secs(2),
        ..ExporterConfig::default()
    };
    let clock = Arc::new(FakeClock::new(Timestamp::from_secs(NOW_SECS)));
    let exporter =
        Arc::new(Exporter::new(Some(NvmlMetrics::new(gpus, node.config())), Box::new(targets), config, clock));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(exporter.serve(listener, async move {
        let _ = rx.await;
    }));
    Running { addr, emulator, stop: Some(tx), server }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn served_on_loopback_with_the_vllm_pods_metrics_reexported() {
    let (node, gpus) = fake_node();
    let running = start(&node, gpus).await;
    let (status, body) = get(running.addr, "/metrics").await;
    assert_eq!(status, 200);
    let page = exposition::parse(&body).unwrap_or_else(|e| panic!("{e}\n{body}"));

    let waiting: Vec<_> = page.samples_named("vllm:num_requests_waiting").collect();
    assert_eq!(waiting.len(), 1, "{body}");
    assert_eq!(waiting[0].value, 7.0);
    assert_eq!((waiting[0].label("namespace"), waiting[0].label("pod")), (Some("llm"), Some("vllm-0")));
    assert!(waiting[0].label("model_name").is_some(), "vLLM's own labels are kept");
    assert_eq!(page.metric_type("vllm:time_to_first_token_seconds"), Some(MetricType::Histogram));
    assert!(page.samples_named("vllm:time_to_first_token_seconds_bucket").any(|s| s.label("le") == Some("+Inf")));
    assert!(page.samples().all(|s| !s.name.starts_with("python_") && !s.name.ends_with("_created")));

    let up: BTreeMap<String, f64> = page
        .samples_named("vllm_scaling_exporter_vllm_up")
        .map(|s| (s.label("pod").unwrap().to_owned(), s.value))
        .collect();
    assert_eq!(up, BTreeMap::from([("gone".to_owned(), 0.0), ("vllm-0".to_owned(), 1.0)]));
    assert_eq!(page.samples_named("vllm_scaling_exporter_nvml_up").next().unwrap().value, 1.0);
    assert_eq!(page.samples_named("DCGM_FI_DEV_GPU_UTIL").count(), 3);

    assert_eq!(get(running.addr, "/healthz").await, (200, "ok\n".to_owned()));
    let (status, body) = get(running.addr, "/nope").await;
    assert_eq!(status, 404);
    assert!(body.contains("/metrics"));
    running.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_gpus_only_the_vllm_metrics_are_served() {
    let node = Node::new();
    let emulator = Emulator::start("127.0.0.1:0".parse().unwrap(), EmulatorOptions::default()).await.unwrap();
    let targets = vec![VllmTarget::new(&emulator.metrics_url(), vec![("pod".into(), "vllm-0".into())]).unwrap()];
    let clock = Arc::new(FakeClock::new(Timestamp::from_secs(NOW_SECS)));
    let exporter: Exporter<FakeGpus> = Exporter::new(None, Box::new(targets), ExporterConfig::default(), clock);
    let text = exporter.render().await;
    let page = exposition::parse(&text).unwrap();
    assert_eq!(page.samples_named("vllm_scaling_exporter_nvml_up").next().unwrap().value, 0.0);
    assert!(page.samples().all(|s| !s.name.starts_with("DCGM_")), "{text}");
    assert!(page.samples_named("vllm:num_requests_running").count() == 1, "{text}");
    drop(node);
    emulator.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gpu_read_failure_drops_the_gpu_series_instead_of_zeroing_them() {
    let (node, gpus) = fake_node();
    gpus.set_unavailable(Some("GPU driver unloaded"));
    let clock = Arc::new(FakeClock::new(Timestamp::from_secs(NOW_SECS)));
    let exporter = Exporter::new(
        Some(NvmlMetrics::new(gpus, node.config())),
        Box::new(Vec::new()),
        ExporterConfig::default(),
        clock,
    );
    let text = exporter.render().await;
    let page = exposition::parse(&text).unwrap();
    assert_eq!(page.samples_named("vllm_scaling_exporter_nvml_up").next().unwrap().value, 0.0);
    assert!(page.samples().all(|s| !s.name.starts_with("DCGM_")), "{text}");
}

/// A real Prometheus scrapes the exporter: the DCGM series arrive with their pod labels,
/// the DCGM queries give the same per-pod values as the NVML adapter, and the re-exported
/// queue length is what the emulator served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_real_prometheus_scrapes_the_exporter() {
    let (node, gpus) = fake_node();
    let running = start(&node, gpus).await;
    let Some(prometheus) = require(
        PrometheusServer::start(&[ScrapeTarget::new(running.addr.to_string())], Duration::from_millis(500)).await,
    ) else {
        running.stop().await;
        return;
    };
    let limit = Duration::from_secs(30);
    let util = prometheus.wait_for(r#"DCGM_FI_DEV_GPU_UTIL{pod="vllm-0"}"#, limit).await.unwrap();
    assert_eq!(util.len(), 2, "{util:?}");
    assert!(
        util.iter().all(|(l, v)| *v == 60.0 && l["namespace"] == "llm" && l["Hostname"] == "gpu-node-a"),
        "{util:?}"
    );

    // The project's Prometheus adapter, unchanged, reading the GPU rules from this
    // Prometheus, against the NVML adapter reading the same node directly.
    let rules = rules(
        "    - {metric: gpu_utilization, threshold: 60, window: 30s}
    - {metric: gpu_memory_used, threshold: 90}
",
    );
    let req = request("llm", rules, &["vllm-0", "vllm-mig"]);
    let via_prometheus = PrometheusMetrics::new(PrometheusOptions::new(prometheus.url()))
        .unwrap()
        .get_scaling_metrics(&req, Timestamp::from_secs(NOW_SECS))
        .await
        .unwrap();
    let (node2, gpus2) = fake_node();
    let direct = NvmlMetrics::new(gpus2, node2.config()).read(&req, Timestamp::from_secs(NOW_SECS)).unwrap();
    for i in 0..2 {
        let (p, n) = (&via_prometheus.pods[i], &direct.pods[i]);
        assert_eq!(p.name, n.name);
        for key in ["gpu_utilization", "gpu_memory_used"] {
            let (a, b) = (p.metrics.get(key), n.metrics.get(key));
            assert!(
                a.zip(b).is_some_and(|(a, b)| (a - b).abs() < 1e-9) || (a.is_none() && b.is_none()),
                "{} {key}: Prometheus {a:?}, NVML {b:?}",
                p.name
            );
        }
    }
    assert_eq!(direct.pods[0].metrics["gpu_utilization"], 60.0);
    assert_eq!(direct.pods[0].metrics["gpu_memory_used"], 75.0);
    assert!(!via_prometheus.pods[1].metrics.contains_key("gpu_utilization"), "MIG: missing both ways, never 0");
    assert_eq!(via_prometheus.pods[1].metrics["gpu_memory_used"], 75.0);

    let waiting = prometheus.wait_for(r#"vllm:num_requests_waiting{pod="vllm-0"}"#, limit).await.unwrap();
    assert_eq!(waiting[0].1, 7.0);
    let up = prometheus.query(r#"vllm_scaling_exporter_vllm_up{pod="gone"}"#).await.unwrap();
    assert_eq!(up[0].1, 0.0);
    drop(prometheus);
    running.stop().await;
}
