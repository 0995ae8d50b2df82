//! `vllm-autoscaler run`: the Kubernetes controller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use vllm_scaling_kube::{
    Context, ControllerConfig, ControllerMetrics, LeaderElector, Leadership, LeaseConfig, SystemClock, bind_http,
    run as run_controller,
};
use vllm_scaling_prom::{HttpOptions, PodScrapeOptions, PodScraper, PrometheusMetrics, PrometheusOptions, VllmMetrics};

/// Arguments of `run`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// A kubeconfig file (default: the in-cluster service account, else $KUBECONFIG or
    /// ~/.kube/config).
    #[arg(long)]
    kubeconfig: Option<PathBuf>,
    /// The kubeconfig context (default: its current context).
    #[arg(long)]
    context: Option<String>,
    /// Watch policies in this namespace only (default: all namespaces).
    #[arg(long, env = "VLLM_AUTOSCALER_NAMESPACE")]
    namespace: Option<String>,
    /// Prometheus base URL, for rules with `source: prometheus` (and `auto` rules whose
    /// pods have no reachable endpoint). Without it, metrics are scraped from the pods.
    #[arg(long, env = "VLLM_AUTOSCALER_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// Bearer token for Prometheus.
    #[arg(long, env = "VLLM_AUTOSCALER_PROMETHEUS_TOKEN", hide_env_values = true)]
    prometheus_token: Option<String>,
    /// How often each policy is evaluated (15s, 1m).
    #[arg(long, default_value = "15s", value_parser = crate::cli::duration)]
    sync_period: Duration,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080", env = "VLLM_AUTOSCALER_METRICS_ADDR")]
    metrics_addr: SocketAddr,
    /// Run leader election on a coordination.k8s.io Lease: only the leader acts.
    #[arg(long)]
    leader_elect: bool,
    /// The Lease's name.
    #[arg(long, default_value = "vllm-autoscaler")]
    lease_name: String,
    /// The Lease's namespace (default: the pod's namespace, which the manifests pass as
    /// VLLM_AUTOSCALER_LEASE_NAMESPACE, else `default`).
    #[arg(long, env = "VLLM_AUTOSCALER_LEASE_NAMESPACE")]
    lease_namespace: Option<String>,
    /// This replica's identity (default: the pod's name, which the manifests pass as
    /// VLLM_AUTOSCALER_IDENTITY, else the host name and process id).
    #[arg(long, env = "VLLM_AUTOSCALER_IDENTITY")]
    identity: Option<String>,
    /// Decide, report and record, but never write /scale.
    #[arg(long)]
    dry_run: bool,
    /// The longest an API request or a metrics read may take.
    #[arg(long, default_value = "10s", value_parser = crate::cli::duration)]
    request_timeout: Duration,
    /// Per-pod timeout of direct scrapes.
    #[arg(long, default_value = "2s", value_parser = crate::cli::duration)]
    scrape_timeout: Duration,
    /// The longest a policy's status goes unwritten when nothing a user reads changed
    /// (`0s`: write it at every evaluation).
    #[arg(long, default_value = "60s", value_parser = crate::cli::duration)]
    status_interval: Duration,
    /// Policies evaluated at once.
    #[arg(long, default_value_t = 256)]
    concurrency: u16,
    /// Log format: `text` (coloured only on a terminal) or `json` (one object per line;
    /// what deploy/ and the Helm chart set).
    #[arg(long, value_enum, default_value = "text", env = super::logs::LOG_FORMAT_ENV)]
    log_format: super::logs::LogFormat,
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub(crate) fn run(args: Args) -> ExitCode {
    super::logs::init(args.log_format);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("vllm-autoscaler run: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(controller(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = super::logs::chain(&e), "vllm-autoscaler run failed");
            ExitCode::from(1)
        }
    }
}

async fn kube_config(args: &Args) -> anyhow::Result<kube::Config> {
    let options = kube::config::KubeConfigOptions { context: args.context.clone(), ..Default::default() };
    if let Some(path) = &args.kubeconfig {
        let file = kube::config::Kubeconfig::read_from(path)
            .with_context(|| format!("reading kubeconfig {}", path.display()))?;
        return kube::Config::from_custom_kubeconfig(file, &options)
            .await
            .with_context(|| format!("loading kubeconfig {}", path.display()));
    }
    match kube::Config::incluster() {
        Ok(config) => Ok(config),
        Err(in_cluster) => kube::Config::from_kubeconfig(&options).await.with_context(|| {
            format!(
                "no cluster configuration: not in a cluster ({in_cluster}), and no usable $KUBECONFIG or ~/.kube/config"
            )
        }),
    }
}

/// The shutdown signal: SIGTERM (what the kubelet sends) or Ctrl-C.
async fn terminated() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn controller(args: Args) -> anyhow::Result<()> {
    let config = kube_config(&args).await?;
    tracing::info!(cluster = %config.cluster_url, "connecting to the API server");
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;

    let scraper = PodScraper::new(PodScrapeOptions {
        http: HttpOptions::with_timeout(args.scrape_timeout),
        ..PodScrapeOptions::default()
    })
    .context("building the pod scraper")?;
    let metrics = match &args.prometheus_url {
        Some(url) => {
            let mut options = PrometheusOptions::new(url.clone());
            options.http.bearer_token.clone_from(&args.prometheus_token);
            let prometheus =
                PrometheusMetrics::new(options).with_context(|| format!("configuring Prometheus at {url}"))?;
            VllmMetrics::prometheus(prometheus, Some(scraper))
        }
        None => VllmMetrics::pods(scraper),
    };

    let identity = args.identity.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/etc/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "vllm-autoscaler".into());
        format!("{host}-{}", std::process::id())
    });
    let telemetry = Arc::new(ControllerMetrics::new());
    let leadership = if args.leader_elect { Leadership::candidate() } else { Leadership::always() };
    let controller_config = ControllerConfig::default()
        .with_sync_period(args.sync_period)
        .with_dry_run(args.dry_run)
        .with_request_timeout(args.request_timeout)
        .with_namespace(args.namespace.clone())
        .with_identity(identity.clone())
        .with_concurrency(args.concurrency)
        .with_status_interval(args.status_interval);
    let ctx = Arc::new(
        Context::new(client.clone(), metrics, controller_config)
            .with_leadership(leadership.clone())
            .with_telemetry(telemetry.clone()),
    );

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        terminated().await;
        tracing::info!("shutting down");
        let _ = stop_tx.send(true);
    });

    let ready = Arc::new(AtomicBool::new(false));
    let (addr, serve) = bind_http(args.metrics_addr, telemetry.clone(), ready.clone(), stopped())
        .await
        .with_context(|| format!("serving metrics on {}", args.metrics_addr))?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let http = tokio::spawn(serve);

    let elector = if args.leader_elect {
        let namespace = args.lease_namespace.clone().unwrap_or_else(|| "default".to_owned());
        let lease = LeaseConfig::new(args.lease_name.clone(), namespace, identity.clone());
        let gauge = telemetry.clone();
        let elector = LeaderElector::new(client, lease, Arc::new(SystemClock), leadership).on_change(move |leading| {
            gauge.leader.set(i64::from(leading));
        });
        Some(tokio::spawn(elector.run(stopped())))
    } else {
        telemetry.leader.set(1);
        None
    };

    tracing::info!(
        identity,
        sync_period = ?args.sync_period,
        namespace = args.namespace.as_deref().unwrap_or("(all)"),
        prometheus = args.prometheus_url.as_deref().unwrap_or("(none: pods only)"),
        dry_run = args.dry_run,
        leader_elect = args.leader_elect,
        "vllm-autoscaler controller starting"
    );
    run_controller(ctx, ready, stopped()).await;
    if let Some(elector) = elector {
        // Releases the lease so a standby takes over at once.
        let _ = elector.await;
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), http).await;
    tracing::info!("stopped");
    Ok(())
}
