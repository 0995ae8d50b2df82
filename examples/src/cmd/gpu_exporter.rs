//! `vllm-autoscaler gpu-exporter`: the node's GPUs in DCGM's names, plus (optionally)
//! the node's vLLM pods' metrics, on `/metrics`. Runs as the DaemonSet in
//! `deploy/gpu-exporter/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use vllm_scaling_core::error_chain;
use vllm_scaling_nvml::{
    BoxError, DcgmLabels, Exporter, ExporterConfig, FamilyFilter, NvmlConfig, NvmlDevices, NvmlMetrics, PodSource,
    SystemClock, VllmTarget, VllmTargets,
};

/// Arguments of `gpu-exporter`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Log format: `text` (coloured only on a terminal) or `json` (one object per line).
    #[arg(long, value_enum, default_value = "text", env = super::logs::LOG_FORMAT_ENV)]
    log_format: super::logs::LogFormat,
    /// Address to serve `/metrics` and `/healthz` on (9400 is dcgm-exporter's port).
    #[arg(long, default_value = "0.0.0.0:9400")]
    listen: SocketAddr,
    /// The window `DCGM_FI_DEV_GPU_UTIL` averages NVML's samples over.
    #[arg(long, default_value = "30s", value_parser = crate::cli::duration)]
    window: Duration,
    /// How often NVML's sample buffer is read (it holds only seconds of samples).
    #[arg(long, default_value = "2s", value_parser = crate::cli::duration)]
    poll_interval: Duration,
    /// The node's name, for the `Hostname` label (the DaemonSet passes spec.nodeName).
    #[arg(long, env = "VLLM_AUTOSCALER_NODE_NAME")]
    node_name: Option<String>,
    /// Start even when NVML cannot be loaded, and serve only the vLLM metrics.
    #[arg(long)]
    allow_no_gpu: bool,
    /// Load NVML from this file instead of `libnvidia-ml.so.1`.
    #[arg(long)]
    nvml_library: Option<PathBuf>,
    /// Where to read `/proc/<pid>/cgroup` (a mount of the host's /proc, or /proc with hostPID).
    #[arg(long, default_value = "/proc")]
    proc_root: PathBuf,
    /// The kubelet's pod log directories (`<namespace>_<pod>_<uid>`).
    #[arg(long, default_value = "/var/log/pods")]
    pod_logs_dir: PathBuf,
    /// The kubelet's container log links (`<pod>_<namespace>_<container>-<id>.log`).
    #[arg(long, default_value = "/var/log/containers")]
    container_logs_dir: PathBuf,
    /// A vLLM server to scrape and re-export: `URL`, or `NAMESPACE/POD=URL` to label
    /// its series with the pod. Repeatable.
    #[arg(long = "vllm-target", value_parser = parse_target)]
    vllm_targets: Vec<VllmTarget>,
    /// Discover the vLLM pods on this node through the Kubernetes API: pods matching this
    /// label selector (`app.kubernetes.io/name=vllm`) with `spec.nodeName` = `--node-name`,
    /// scraped at `http://POD_IP:--vllm-port--vllm-path`. Needs `list` on pods.
    #[arg(long)]
    vllm_selector: Option<String>,
    /// The port vLLM serves `/metrics` on, for discovered pods.
    #[arg(long, default_value_t = 8000)]
    vllm_port: u16,
    /// The metrics path, for discovered pods.
    #[arg(long, default_value = "/metrics")]
    vllm_path: String,
    /// Re-export every `vllm:` family instead of the autoscaling ones.
    #[arg(long)]
    vllm_all_families: bool,
    /// The time limit for scraping one vLLM server.
    #[arg(long, default_value = "3s", value_parser = crate::cli::duration)]
    scrape_timeout: Duration,
}

/// `NAMESPACE/POD=URL` or `URL`.
fn parse_target(text: &str) -> Result<VllmTarget, String> {
    let (labels, url) = match text.split_once('=') {
        Some((who, url)) if !who.contains("://") => {
            let (namespace, pod) =
                who.split_once('/').filter(|(n, p)| !n.is_empty() && !p.is_empty()).ok_or_else(|| {
                    format!("`{text}`: write NAMESPACE/POD=URL, like llm/vllm-0=http://10.0.0.7:8000/metrics")
                })?;
            (vec![("namespace".to_owned(), namespace.to_owned()), ("pod".to_owned(), pod.to_owned())], url)
        }
        _ => (Vec::new(), text),
    };
    VllmTarget::new(url, labels).map_err(|e| e.to_string())
}

/// The vLLM pods on this node, listed from the Kubernetes API on every scrape (plus the
/// static `--vllm-target`s).
struct KubeDiscovery {
    pods: kube::Api<Pod>,
    node: String,
    selector: String,
    port: u16,
    path: String,
    fixed: Vec<VllmTarget>,
}

#[async_trait::async_trait]
impl VllmTargets for KubeDiscovery {
    async fn targets(&self) -> Result<Vec<VllmTarget>, BoxError> {
        // The field selector keeps the answer to this node's pods; the filter below keeps
        // it so should an API server (or proxy) ignore the selector.
        let params = ListParams::default().labels(&self.selector).fields(&format!("spec.nodeName={}", self.node));
        let list = self.pods.list(&params).await?;
        let mut out = self.fixed.clone();
        for pod in list.items {
            let spec_node = pod.spec.as_ref().and_then(|s| s.node_name.as_deref());
            let status = pod.status.as_ref();
            let running = status.and_then(|s| s.phase.as_deref()) == Some("Running");
            let (Some(ip), Some(name)) = (status.and_then(|s| s.pod_ip.as_deref()), pod.metadata.name.as_deref())
            else {
                continue;
            };
            if spec_node != Some(self.node.as_str()) || !running || pod.metadata.deletion_timestamp.is_some() {
                continue;
            }
            let host = if ip.contains(':') { format!("[{ip}]") } else { ip.to_owned() };
            let labels = vec![
                ("namespace".to_owned(), pod.metadata.namespace.clone().unwrap_or_default()),
                ("pod".to_owned(), name.to_owned()),
            ];
            out.push(VllmTarget::new(&format!("http://{host}:{}{}", self.port, self.path), labels)?);
        }
        Ok(out)
    }
}

fn node_name(given: Option<String>) -> String {
    given
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_default()
}

/// Runs the exporter until SIGINT/SIGTERM. Exit status 2 when NVML cannot be loaded and
/// `--allow-no-gpu` is not given; 1 on other start-up failures.
pub(crate) fn run(args: Args) -> ExitCode {
    super::logs::init(args.log_format);
    let devices = match &args.nvml_library {
        Some(path) => NvmlDevices::with_library(path),
        None => NvmlDevices::new(),
    };
    let gpus = match devices.init() {
        Ok(d) => Some(d),
        Err(e) if args.allow_no_gpu => {
            eprintln!("gpu-exporter: {}; serving only the vLLM metrics (--allow-no-gpu)", error_chain(&e));
            None
        }
        Err(e) => {
            eprintln!("gpu-exporter: {}", error_chain(&e));
            eprintln!("gpu-exporter: pass --allow-no-gpu to serve only the vLLM metrics on a node without GPUs");
            return ExitCode::from(2);
        }
    };
    match serve(args, gpus) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gpu-exporter: {}", super::logs::chain(&e));
            ExitCode::from(1)
        }
    }
}

fn serve(args: Args, devices: Option<NvmlDevices>) -> anyhow::Result<()> {
    if args.poll_interval.is_zero() || args.window.is_zero() {
        bail!("--window and --poll-interval must be longer than zero");
    }
    if !args.vllm_path.starts_with('/') {
        bail!("--vllm-path must start with `/`, got `{}`", args.vllm_path);
    }
    let node = node_name(args.node_name);
    let config = NvmlConfig {
        proc_root: args.proc_root,
        pods: PodSource::KubeletLogs { pods_dir: args.pod_logs_dir, containers_dir: args.container_logs_dir },
        retention: args.window.max(Duration::from_secs(60)),
    };
    let exporter_config = ExporterConfig {
        window: args.window,
        poll_interval: args.poll_interval,
        labels: DcgmLabels { hostname: node.clone() },
        families: if args.vllm_all_families { FamilyFilter::AllVllm } else { FamilyFilter::Autoscaling },
        scrape_timeout: args.scrape_timeout,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    runtime.block_on(async move {
        let listener =
            tokio::net::TcpListener::bind(args.listen).await.with_context(|| format!("binding {}", args.listen))?;
        let local = listener.local_addr().context("reading the bound address")?;
        let gpus = devices.map(|d| NvmlMetrics::new(d, config));
        let targets: Box<dyn VllmTargets> = match args.vllm_selector {
            Some(selector) => {
                if node.is_empty() {
                    bail!("--vllm-selector needs the node's name: pass --node-name (or VLLM_AUTOSCALER_NODE_NAME)");
                }
                let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
                Box::new(KubeDiscovery {
                    pods: kube::Api::all(client),
                    node,
                    selector,
                    port: args.vllm_port,
                    path: args.vllm_path,
                    fixed: args.vllm_targets,
                })
            }
            None => Box::new(args.vllm_targets),
        };
        let exporter = Arc::new(Exporter::new(gpus, targets, exporter_config, Arc::new(SystemClock)));
        tokio::spawn(Arc::clone(&exporter).poll_forever());
        // One line on stdout with the address, for scripts that start it on port 0.
        println!("gpu-exporter: serving http://{local}/metrics");
        exporter.serve(listener, shutdown_signal()).await;
        Ok(())
    })
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[test]
    fn targets_parse_with_and_without_pod_labels() {
        let t = parse_target("llm/vllm-0=http://10.0.0.7:8000/metrics").unwrap();
        assert_eq!(t.url, "http://10.0.0.7:8000/metrics");
        assert_eq!(t.labels, [("namespace".to_owned(), "llm".to_owned()), ("pod".to_owned(), "vllm-0".to_owned())]);
        let t = parse_target("http://127.0.0.1:8000/metrics?x=1").unwrap();
        assert!(t.labels.is_empty(), "an `=` in the URL's query is not a pod prefix");
        assert!(parse_target("vllm-0=http://x/metrics").unwrap_err().contains("NAMESPACE/POD=URL"));
        assert!(parse_target("https://x/metrics").unwrap_err().contains("plain-HTTP"));
        assert!(parse_target("http:///metrics").is_err());
    }

    #[derive(Parser, Debug)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    #[test]
    fn no_nvml_exits_with_status_2_unless_allowed() {
        let cli =
            Cli::try_parse_from(["x", "--nvml-library", "/nonexistent/libnvidia-ml.so.1", "--listen", "127.0.0.1:0"])
                .unwrap();
        assert_eq!(run(cli.args), ExitCode::from(2));
    }

    fn manifests(file: &str) -> Vec<serde_yaml_ng::Value> {
        let path = format!("{}/../deploy/gpu-exporter/{file}", env!("CARGO_MANIFEST_DIR"));
        let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
        serde_yaml_ng::Deserializer::from_str(&text)
            .map(|d| serde::Deserialize::deserialize(d).unwrap_or_else(|e| panic!("{path}: {e}")))
            .collect()
    }

    /// The DaemonSet's arguments are ones this command accepts.
    #[test]
    fn the_daemonset_args_parse() {
        let path = "deploy/gpu-exporter/daemonset.yaml";
        let docs = manifests("daemonset.yaml");
        let ds = docs.iter().find(|d| d["kind"] == "DaemonSet").expect("a DaemonSet");
        let container = &ds["spec"]["template"]["spec"]["containers"][0];
        let args: Vec<&str> = container["args"].as_sequence().unwrap().iter().map(|a| a.as_str().unwrap()).collect();
        assert_eq!(args[0], "gpu-exporter");
        let cli = Cli::try_parse_from(std::iter::once("x").chain(args[1..].iter().copied()))
            .unwrap_or_else(|e| panic!("{path}: {e}"));
        assert_eq!(cli.args.listen.port(), 9400);
        assert!(cli.args.vllm_selector.is_some());
        assert_eq!(ds["spec"]["template"]["spec"]["hostPID"], true, "NVML reports host PIDs");
    }

    /// Service, RBAC and DaemonSet name the same pods, port, account and namespace.
    #[test]
    fn the_manifests_fit_together() {
        let ds = manifests("daemonset.yaml").into_iter().find(|d| d["kind"] == "DaemonSet").unwrap();
        let pod = &ds["spec"]["template"];
        let svc = manifests("service.yaml").into_iter().find(|d| d["kind"] == "Service").unwrap();
        let rbac = manifests("rbac.yaml");
        let namespace = &ds["metadata"]["namespace"];
        assert_eq!(&svc["metadata"]["namespace"], namespace);
        for (k, v) in svc["spec"]["selector"].as_mapping().unwrap() {
            assert_eq!(&pod["metadata"]["labels"][k], v, "the Service selects the exporter pods");
        }
        assert_eq!(ds["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"]);
        let ports = pod["spec"]["containers"][0]["ports"].as_sequence().unwrap();
        assert!(ports.iter().any(|p| p["name"] == svc["spec"]["ports"][0]["targetPort"] && p["containerPort"] == 9400));
        let account = rbac.iter().find(|d| d["kind"] == "ServiceAccount").unwrap();
        assert_eq!(account["metadata"]["name"], pod["spec"]["serviceAccountName"]);
        assert_eq!(&account["metadata"]["namespace"], namespace);
        let role = rbac.iter().find(|d| d["kind"] == "ClusterRole").unwrap();
        let binding = rbac.iter().find(|d| d["kind"] == "ClusterRoleBinding").unwrap();
        assert_eq!(binding["roleRef"]["name"], role["metadata"]["name"]);
        assert_eq!(binding["subjects"][0]["name"], account["metadata"]["name"]);
        // Exactly what discovery does: list pods, nothing else.
        let rules = role["rules"].as_sequence().unwrap();
        assert_eq!(rules.len(), 1);
        assert_eq!(rules[0]["resources"][0], "pods");
        assert_eq!(rules[0]["verbs"].as_sequence().unwrap().len(), 1);
        assert_eq!(rules[0]["verbs"][0], "list");
    }

    fn pod(name: &str, node: &str, phase: &str, ip: Option<&str>, app: &str) -> serde_json::Value {
        serde_json::json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": name, "namespace": "llm", "labels": {"app": app}},
            "spec": {"nodeName": node, "containers": [{"name": "vllm", "image": "vllm/vllm-openai"}]},
            "status": {"phase": phase, "podIP": ip},
        })
    }

    #[tokio::test]
    async fn discovery_lists_the_running_vllm_pods_of_this_node() {
        let server = vllm_scaling_kube::fake_api::FakeApiServer::start().await.unwrap();
        server.apply(pod("vllm-0", "node-a", "Running", Some("10.0.0.7"), "vllm"));
        server.apply(pod("vllm-1", "node-b", "Running", Some("10.0.1.8"), "vllm"));
        server.apply(pod("vllm-2", "node-a", "Pending", None, "vllm"));
        server.apply(pod("vllm-3", "node-a", "Running", Some("fd00::3"), "vllm"));
        server.apply(pod("router", "node-a", "Running", Some("10.0.0.9"), "router"));
        let fixed = VllmTarget::new("http://127.0.0.1:8001/metrics", Vec::new()).unwrap();
        let discovery = KubeDiscovery {
            pods: kube::Api::all(server.client()),
            node: "node-a".into(),
            selector: "app=vllm".into(),
            port: 8000,
            path: "/metrics".into(),
            fixed: vec![fixed],
        };
        let targets = discovery.targets().await.unwrap();
        let urls: Vec<&str> = targets.iter().map(|t| t.url.as_str()).collect();
        assert_eq!(
            urls,
            ["http://127.0.0.1:8001/metrics", "http://10.0.0.7:8000/metrics", "http://[fd00::3]:8000/metrics"]
        );
        assert_eq!(targets[1].labels, [("namespace".into(), "llm".into()), ("pod".into(), "vllm-0".into())]);
        let lists = server.requests_to("GET", "/api/v1/pods");
        assert_eq!(lists.len(), 1);
        let q = &lists[0].query;
        assert!(q.contains("fieldSelector=spec.nodeName%3Dnode-a") && q.contains("labelSelector=app%3Dvllm"), "{q}");
    }
}
