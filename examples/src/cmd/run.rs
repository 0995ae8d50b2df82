//! `vllm-autoscaler run`: the Kubernetes controller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use anyhow::Context as _;
use vllm_scaling_core::redact_credentials;
use vllm_scaling_kube::{
    Context, ControllerConfig, ControllerMetrics, LeaderElector, Leadership, LeaseConfig, ServeOptions, SystemClock,
    bind_http_with, run as run_controller,
};
use vllm_scaling_prom::{
    CredentialFile, HttpOptions, PodScrapeOptions, PodScraper, PrometheusMetrics, PrometheusOptions, VllmMetrics,
};

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
    /// Bearer token for Prometheus (visible in `ps` as a flag: prefer
    /// --prometheus-token-file).
    #[arg(long, env = "VLLM_AUTOSCALER_PROMETHEUS_TOKEN", hide_env_values = true)]
    prometheus_token: Option<String>,
    /// File holding the bearer token for Prometheus, re-read when it changes (a mounted
    /// Secret or projected token rotates without a restart).
    #[arg(long, env = "VLLM_AUTOSCALER_PROMETHEUS_TOKEN_FILE", conflicts_with_all = ["prometheus_token", "prometheus_basic_auth_file"])]
    prometheus_token_file: Option<PathBuf>,
    /// File holding HTTP basic auth for Prometheus: `user:password` on one line, or the
    /// user on the first line and the password on the second; re-read when it changes.
    #[arg(long, env = "VLLM_AUTOSCALER_PROMETHEUS_BASIC_AUTH_FILE", conflicts_with = "prometheus_token")]
    prometheus_basic_auth_file: Option<PathBuf>,
    /// PEM file with the CA that signed Prometheus' certificate (added to the system's).
    #[arg(long, env = "VLLM_AUTOSCALER_PROMETHEUS_CA_FILE")]
    prometheus_ca_file: Option<PathBuf>,
    /// The pods' namespace in Prometheus (`namespace` label; default: each policy's own).
    #[arg(long, env = "VLLM_AUTOSCALER_PROMETHEUS_NAMESPACE")]
    prometheus_namespace: Option<String>,
    /// Only Prometheus series of this served model (`model_name` label).
    #[arg(long, env = "VLLM_AUTOSCALER_PROMETHEUS_MODEL")]
    prometheus_model: Option<String>,
    /// Extra label matcher for vLLM series in Prometheus, NAME=VALUE (repeatable).
    #[arg(long = "prometheus-matcher", value_name = "NAME=VALUE")]
    prometheus_matchers: Vec<String>,
    /// How often each policy is evaluated (15s, 1m).
    #[arg(long, default_value = "15s", value_parser = crate::cli::duration)]
    sync_period: Duration,
    /// Where /metrics, /healthz and /readyz are served.
    #[arg(long, default_value = "0.0.0.0:8080", env = "VLLM_AUTOSCALER_METRICS_ADDR")]
    metrics_addr: SocketAddr,
    /// Run leader election on a coordination.k8s.io Lease: only the leader acts.
    #[arg(long)]
    pub(crate) leader_elect: bool,
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
    pub(crate) dry_run: bool,
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
    /// The longest the shutdown after SIGTERM may take, whatever the API server does:
    /// in-flight evaluations finish, the lease is released (best effort, within half of
    /// this) and the process exits; what is left is abandoned (an unreleased lease expires
    /// on its own).
    #[arg(long, default_value = "10s", value_parser = crate::cli::duration, env = "VLLM_AUTOSCALER_SHUTDOWN_TIMEOUT")]
    shutdown_timeout: Duration,
    /// How long a client of /metrics, /healthz and /readyz has to send its request
    /// headers before the connection is closed.
    #[arg(long, default_value = "5s", value_parser = crate::cli::duration, env = "VLLM_AUTOSCALER_HTTP_HEADER_TIMEOUT")]
    http_header_timeout: Duration,
    /// The most connections to /metrics, /healthz and /readyz open at once; a new one
    /// closes the oldest, so slow or idle clients cannot starve the kubelet's probes.
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u16).range(1..), env = "VLLM_AUTOSCALER_HTTP_MAX_CONNECTIONS")]
    http_max_connections: u16,
    /// Log format: `text` (coloured only on a terminal) or `json` (one object per line;
    /// what deploy/ and the Helm chart set).
    #[arg(long, value_enum, default_value = "text", env = super::logs::LOG_FORMAT_ENV)]
    log_format: super::logs::LogFormat,
}

/// Runs the controller until SIGTERM or Ctrl-C.
pub(crate) fn run(args: Args) -> ExitCode {
    run_with(args, None)
}

/// What `keda-scaler` adds to the controller: the gRPC listener, and decisions published
/// to it instead of written to `/scale`.
pub(crate) struct Keda {
    /// Where KEDA connects.
    pub(crate) listen: SocketAddr,
    /// The listener's TLS files (`None`: plaintext, only with `--insecure-no-tls`).
    pub(crate) tls: Option<vllm_scaling_keda::TlsFiles>,
    /// How often a policy at zero is evaluated.
    pub(crate) activation_period: Duration,
}

/// The command's name in messages.
fn command_name(keda: Option<&Keda>) -> &'static str {
    if keda.is_some() { "vllm-autoscaler keda-scaler" } else { "vllm-autoscaler run" }
}

/// Runs the controller, or with `keda` the KEDA external scaler, until SIGTERM or Ctrl-C.
pub(crate) fn run_with(args: Args, keda: Option<Keda>) -> ExitCode {
    super::logs::init(args.log_format);
    let name = command_name(keda.as_ref());
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("{name}: cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    let result = runtime.block_on(controller(args, keda));
    // Tasks still waiting on the API server are abandoned, not waited for: the shutdown
    // bound is already spent.
    runtime.shutdown_background();
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = redact_credentials(&super::logs::chain(&e)), "{name} failed");
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

/// The Prometheus adapter's options from the flags.
fn prometheus_options(args: &Args, url: &str) -> anyhow::Result<PrometheusOptions> {
    let mut options = PrometheusOptions::new(url.to_owned());
    options.http.bearer_token.clone_from(&args.prometheus_token);
    if let Some(path) = &args.prometheus_token_file {
        options.http.credential_file = Some(CredentialFile::BearerToken(path.clone()));
    }
    if let Some(path) = &args.prometheus_basic_auth_file {
        options.http.credential_file = Some(CredentialFile::BasicAuth(path.clone()));
    }
    if let Some(path) = &args.prometheus_ca_file {
        options.http.ca_pem =
            Some(std::fs::read(path).with_context(|| format!("cannot read --prometheus-ca-file {}", path.display()))?);
    }
    options.namespace.clone_from(&args.prometheus_namespace);
    options.model_name.clone_from(&args.prometheus_model);
    for m in &args.prometheus_matchers {
        let (k, v) = m.split_once('=').with_context(|| format!("--prometheus-matcher {m}: expected NAME=VALUE"))?;
        options.extra_matchers.push((k.to_owned(), v.to_owned()));
    }
    Ok(options)
}

async fn controller(args: Args, keda: Option<Keda>) -> anyhow::Result<()> {
    // Read before connecting: a bad certificate path fails at once.
    let keda_tls = match keda.as_ref().and_then(|k| k.tls.as_ref()) {
        Some(files) => Some(files.load().context("loading the gRPC listener's TLS files")?),
        None => None,
    };
    let config = kube_config(&args).await?;
    tracing::info!(cluster = redact_credentials(&config.cluster_url.to_string()), "connecting to the API server");
    let client = kube::Client::try_from(config).context("building the Kubernetes client")?;

    let scraper = PodScraper::new(PodScrapeOptions {
        http: HttpOptions::with_timeout(args.scrape_timeout),
        ..PodScrapeOptions::default()
    })
    .context("building the pod scraper")?;
    let metrics = match &args.prometheus_url {
        Some(url) => {
            let options = prometheus_options(&args, url)?;
            let prometheus = PrometheusMetrics::new(options)
                .with_context(|| format!("configuring Prometheus at {}", redact_credentials(url)))?;
            VllmMetrics::prometheus(prometheus, Some(scraper))
        }
        None => {
            let prometheus_only = [
                ("--prometheus-token", args.prometheus_token.is_some()),
                ("--prometheus-token-file", args.prometheus_token_file.is_some()),
                ("--prometheus-basic-auth-file", args.prometheus_basic_auth_file.is_some()),
                ("--prometheus-ca-file", args.prometheus_ca_file.is_some()),
                ("--prometheus-namespace", args.prometheus_namespace.is_some()),
                ("--prometheus-model", args.prometheus_model.is_some()),
                ("--prometheus-matcher", !args.prometheus_matchers.is_empty()),
            ];
            if let Some((flag, _)) = prometheus_only.iter().find(|(_, set)| *set) {
                anyhow::bail!("{flag} needs --prometheus-url");
            }
            VllmMetrics::pods(scraper)
        }
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
        .with_status_interval(args.status_interval)
        .with_activation_period(keda.as_ref().map_or(Duration::from_secs(1), |k| k.activation_period));
    let mut ctx = Context::new(client.clone(), metrics, controller_config)
        .with_leadership(leadership.clone())
        .with_telemetry(telemetry.clone());
    if keda.is_some() {
        ctx = ctx.publishing_to(Arc::new(vllm_scaling_kube::DecisionBoard::new()));
    }
    let ctx = Arc::new(ctx);

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let stop_on_signal = stop_tx.clone();
    let mut stop_seen = stop_rx.clone();
    let stopped = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };
    tokio::spawn(async move {
        terminated().await;
        tracing::info!("shutting down");
        let _ = stop_on_signal.send(true);
    });

    let ready = Arc::new(AtomicBool::new(false));
    let serve_options = ServeOptions::default()
        .with_header_read_timeout(args.http_header_timeout)
        .with_max_connections(usize::from(args.http_max_connections));
    let (addr, serve) = bind_http_with(args.metrics_addr, serve_options, telemetry.clone(), ready.clone(), stopped())
        .await
        .with_context(|| format!("serving metrics on {}", args.metrics_addr))?;
    tracing::info!(%addr, "serving /metrics, /healthz and /readyz");
    let http = tokio::spawn(serve);

    let grpc = match &keda {
        Some(keda) => {
            let listener = tokio::net::TcpListener::bind(keda.listen)
                .await
                .with_context(|| format!("listening for KEDA on {}", keda.listen))?;
            let addr = listener.local_addr().unwrap_or(keda.listen);
            tracing::info!(%addr, tls = keda_tls.is_some(), "serving KEDA's external scaler protocol");
            let scaler = vllm_scaling_keda::KedaScaler::new(ctx.clone());
            Some(tokio::spawn(vllm_scaling_keda::serve(listener, scaler, keda_tls, stopped())))
        }
        None => None,
    };

    let elector = if args.leader_elect {
        let namespace = args.lease_namespace.clone().unwrap_or_else(|| "default".to_owned());
        let mut lease = LeaseConfig::new(args.lease_name.clone(), namespace, identity.clone());
        lease.release_timeout = args.shutdown_timeout / 2;
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
        prometheus = args.prometheus_url.as_deref().map_or_else(|| "(none: pods only)".to_owned(), redact_credentials),
        dry_run = args.dry_run,
        leader_elect = args.leader_elect,
        keda = keda.as_ref().map_or_else(|| "(no: scales through /scale)".to_owned(), |k| k.listen.to_string()),
        "vllm-autoscaler controller starting"
    );
    let controller = run_controller(ctx, ready, stopped());
    tokio::pin!(controller);
    let ended_early = tokio::select! {
        () = &mut controller => true,
        _ = stop_seen.wait_for(|s| *s) => false,
    };
    if ended_early {
        tracing::warn!("the controller stopped on its own; shutting down");
        let _ = stop_tx.send(true);
    }
    // From the stop signal on, everything is bounded by --shutdown-timeout: in-flight
    // evaluations, the lease release and the HTTP server may all wait on an unreachable
    // API server.
    let shutdown_timeout = args.shutdown_timeout;
    let finish = async {
        if !ended_early {
            controller.await;
        }
        if let Some(elector) = elector {
            // Releases the lease so a standby takes over at once.
            let _ = elector.await;
        }
        let _ = http.await;
        if let Some(grpc) = grpc
            && let Ok(Err(e)) = grpc.await
        {
            tracing::warn!(error = %e, "the gRPC server stopped with an error");
        }
    };
    if tokio::time::timeout(shutdown_timeout, finish).await.is_err() {
        tracing::warn!(
            ?shutdown_timeout,
            "the shutdown did not finish in time (is the API server reachable?): exiting anyway"
        );
    }
    tracing::info!("stopped");
    Ok(())
}
