//! `vllm-autoscaler gpu-exporter`: the node's GPUs in DCGM's names, plus (optionally)
//! the node's vLLM pods' metrics, on `/metrics`. Runs as the DaemonSet in
//! `deploy/gpu-exporter/`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use vllm_scaling_core::{error_chain, parse_prom_duration};
use vllm_scaling_nvml::{
    DcgmLabels, Exporter, ExporterConfig, FamilyFilter, NvmlConfig, NvmlDevices, NvmlMetrics, PodSource, SystemClock,
    VllmTarget,
};

/// Arguments of `gpu-exporter`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Address to serve `/metrics` and `/healthz` on (9400 is dcgm-exporter's port).
    #[arg(long, default_value = "0.0.0.0:9400")]
    listen: SocketAddr,
    /// The window `DCGM_FI_DEV_GPU_UTIL` averages NVML's samples over.
    #[arg(long, default_value = "30s", value_parser = parse_prom_duration)]
    window: Duration,
    /// How often NVML's sample buffer is read (it holds only seconds of samples).
    #[arg(long, default_value = "2s", value_parser = parse_prom_duration)]
    poll_interval: Duration,
    /// The node's name, for the `Hostname` label (the DaemonSet passes spec.nodeName).
    #[arg(long, env = "NODE_NAME")]
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
    /// Re-export every `vllm:` family instead of the autoscaling ones.
    #[arg(long)]
    vllm_all_families: bool,
    /// The time limit for scraping one vLLM server.
    #[arg(long, default_value = "3s", value_parser = parse_prom_duration)]
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

fn node_name(given: Option<String>) -> String {
    given
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok().map(|h| h.trim().to_owned()))
        .unwrap_or_default()
}

/// Runs the exporter until SIGINT/SIGTERM. Exit status 2 when NVML cannot be loaded and
/// `--allow-no-gpu` is not given; 1 on other start-up failures.
pub(crate) fn run(args: Args) -> ExitCode {
    let _ = tracing_subscriber::fmt().with_env_filter(env_filter()).with_writer(std::io::stderr).try_init();
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
            eprintln!("gpu-exporter: {e:#}");
            ExitCode::from(1)
        }
    }
}

fn env_filter() -> tracing_subscriber::EnvFilter {
    tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
}

fn serve(args: Args, devices: Option<NvmlDevices>) -> anyhow::Result<()> {
    if args.poll_interval.is_zero() || args.window.is_zero() {
        bail!("--window and --poll-interval must be longer than zero");
    }
    let config = NvmlConfig {
        proc_root: args.proc_root,
        pods: PodSource::KubeletLogs { pods_dir: args.pod_logs_dir, containers_dir: args.container_logs_dir },
        retention: args.window.max(Duration::from_secs(60)),
    };
    let exporter_config = ExporterConfig {
        window: args.window,
        poll_interval: args.poll_interval,
        labels: DcgmLabels { hostname: node_name(args.node_name) },
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
        let exporter =
            Arc::new(Exporter::new(gpus, Box::new(args.vllm_targets), exporter_config, Arc::new(SystemClock)));
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
}
