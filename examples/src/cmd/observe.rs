//! `vllm-autoscaler observe POLICY [--prometheus-url URL | --pods URL...]`: what the
//! autoscaler sees right now, rule by rule.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use serde::Serialize;
use vllm_scaling_core::{
    CurrentScale, Decision, Engine, MetricsRequest, PodInfo, PodPhase, ResolvedPolicy, TargetId, Timestamp,
    parse_policy,
};
use vllm_scaling_prom::{
    HttpOptions, PodScrapeOptions, PodScraper, PrometheusMetrics, PrometheusOptions, RuleReading, VllmMetrics,
    snapshot::SeriesFilter, to_scaling_metrics,
};

/// Arguments of `observe`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// The vLLMScalingPolicy file (YAML or JSON). Comes before the options.
    policy: PathBuf,
    /// Prometheus base URL (rules with source prometheus, custom rules, GPU metrics, and
    /// `auto` rules when no pods are given).
    #[arg(long, env = "VLLM_AUTOSCALER_PROMETHEUS_URL")]
    prometheus_url: Option<String>,
    /// A pod metrics endpoint to scrape directly, as URL or NAME=URL: one per `--pods`
    /// (repeat the flag), or several comma-separated.
    #[arg(long, value_name = "URL", action = clap::ArgAction::Append, value_delimiter = ',')]
    pods: Vec<String>,
    /// Time between the two scrapes that pod rates and quantiles need.
    #[arg(long, default_value = "2s", value_parser = crate::cli::duration)]
    interval: Duration,
    /// Per-request timeout (each pod, each Prometheus query).
    #[arg(long, default_value = "5s", value_parser = crate::cli::duration)]
    timeout: Duration,
    /// File holding a bearer token for Prometheus.
    #[arg(long)]
    bearer_token_file: Option<PathBuf>,
    /// Basic-auth user for Prometheus (the password is read from
    /// VLLM_AUTOSCALER_PROMETHEUS_PASSWORD).
    #[arg(long)]
    basic_auth_user: Option<String>,
    /// PEM file with the CA that signed Prometheus' certificate.
    #[arg(long)]
    ca_file: Option<PathBuf>,
    /// The pods' namespace (Prometheus `namespace` label).
    #[arg(long)]
    namespace: Option<String>,
    /// Only series of this served model (`model_name` label).
    #[arg(long)]
    model: Option<String>,
    /// Extra label matcher for vLLM series in Prometheus, NAME=VALUE (repeatable).
    #[arg(long = "matcher")]
    matchers: Vec<String>,
    /// Prometheus values older than this are stale (missing).
    #[arg(long, default_value = "2m", value_parser = crate::cli::duration)]
    max_age: Duration,
    /// Also show the engine's decision for this many current replicas.
    #[arg(long)]
    replicas: Option<i32>,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

#[derive(Serialize)]
struct Report<'a> {
    policy: &'a str,
    at: Timestamp,
    rules: &'a [RuleReading],
    #[serde(skip_serializing_if = "Option::is_none")]
    decision: Option<&'a Decision>,
}

/// Exit 0 after printing (missing values are data), 1 when the policy or options are bad.
pub(crate) fn run(args: Args) -> ExitCode {
    let rt = match tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("observe: starting the tokio runtime failed: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(observe(args)) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("observe: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn now() -> Timestamp {
    let ms = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis());
    Timestamp::from_millis(u64::try_from(ms).unwrap_or(u64::MAX))
}

fn pod_infos(specs: &[String]) -> anyhow::Result<Vec<PodInfo>> {
    specs
        .iter()
        .map(|spec| {
            let (name, url) = match spec.split_once('=') {
                Some((name, url)) if !name.contains('/') => (name.to_owned(), url.to_owned()),
                _ => {
                    let host = spec.split("://").nth(1).unwrap_or(spec).split('/').next().unwrap_or(spec);
                    (host.to_owned(), spec.clone())
                }
            };
            anyhow::ensure!(
                url.starts_with("http://") || url.starts_with("https://"),
                "--pods {spec}: expected URL or NAME=URL with an http(s) URL"
            );
            Ok(PodInfo {
                name,
                phase: PodPhase::Running,
                ready: true,
                deleting: false,
                metrics_url: Some(url),
                metrics_url_error: None,
            })
        })
        .collect()
}

async fn observe(args: Args) -> anyhow::Result<String> {
    let shown = args.policy.display().to_string();
    let text = std::fs::read_to_string(&args.policy).with_context(|| format!("cannot read {shown}"))?;
    let (object, policy) = parse_policy(&text).map_err(|e| anyhow::anyhow!("{shown}: {e}"))?;
    let name = object.metadata.name.clone().unwrap_or_else(|| "(unnamed)".to_owned());
    let pods = pod_infos(&args.pods)?;
    anyhow::ensure!(
        args.prometheus_url.is_some() || !pods.is_empty(),
        "give --prometheus-url URL, --pods URL..., or both"
    );

    let mut http = HttpOptions::with_timeout(args.timeout);
    if let Some(path) = &args.ca_file {
        http.ca_pem = Some(std::fs::read(path).with_context(|| format!("cannot read --ca-file {}", path.display()))?);
    }
    let scraper = if pods.is_empty() {
        None
    } else {
        let filter = SeriesFilter { model_name: args.model.clone() };
        let options = PodScrapeOptions {
            http: HttpOptions { ca_pem: http.ca_pem.clone(), ..HttpOptions::with_timeout(args.timeout) },
            filter,
            ..PodScrapeOptions::default()
        };
        Some(PodScraper::new(options).context("setting up the pod scraper")?)
    };
    let metrics = match &args.prometheus_url {
        Some(url) => {
            let mut o = PrometheusOptions::new(url.clone());
            o.http = http;
            if let Some(path) = &args.bearer_token_file {
                let token = std::fs::read_to_string(path)
                    .with_context(|| format!("cannot read --bearer-token-file {}", path.display()))?;
                o.http.bearer_token = Some(token.trim().to_owned());
            }
            if let Some(user) = &args.basic_auth_user {
                let var = format!("{}PROMETHEUS_PASSWORD", crate::cli::ENV_PREFIX);
                let password =
                    std::env::var(&var).with_context(|| format!("--basic-auth-user needs the password in {var}"))?;
                o.http.basic_auth = Some((user.clone(), password));
            }
            o.namespace = args.namespace.clone();
            o.model_name = args.model.clone();
            o.max_age = args.max_age;
            for m in &args.matchers {
                let (k, v) = m.split_once('=').with_context(|| format!("--matcher {m}: expected NAME=VALUE"))?;
                o.extra_matchers.push((k.to_owned(), v.to_owned()));
            }
            let prom = PrometheusMetrics::new(o).context("setting up the Prometheus client")?;
            VllmMetrics::prometheus(prom, scraper)
        }
        None => VllmMetrics::pods(scraper.context("no pods to scrape")?),
    };

    let request = MetricsRequest {
        target: TargetId::new(args.namespace.clone().unwrap_or_default(), name.clone()),
        scale_target_ref: policy.scale_target_ref.clone(),
        rules: policy.rules.clone(),
        pods: pods.clone(),
    };
    let mut readings = metrics.read(&request, now()).await;
    // Pod rates and quantiles are differences of two scrapes: take the second one.
    let needs_second = readings.iter().any(|r| {
        r.source == vllm_scaling_core::MetricSource::Pods
            && r.failure.as_deref().is_some_and(|f| f.contains("second one") || f.contains("histogram delta"))
    });
    if needs_second {
        tokio::time::sleep(args.interval).await;
        readings = metrics.read(&request, now()).await;
    }
    let at = now();
    let decision = args.replicas.map(|replicas| decide(&policy, &readings, &pods, replicas, at));
    if args.json {
        let report = Report { policy: &name, at, rules: &readings, decision: decision.as_ref() };
        return Ok(serde_json::to_string_pretty(&report)? + "\n");
    }
    Ok(render(&name, &policy, &readings, decision.as_ref()))
}

fn decide(
    policy: &ResolvedPolicy,
    readings: &[RuleReading],
    pods: &[PodInfo],
    replicas: i32,
    at: Timestamp,
) -> Decision {
    let metrics = to_scaling_metrics(readings, pods);
    Engine::new(policy.clone()).evaluate(at, CurrentScale::new(replicas), &metrics)
}

fn fmt_value(v: f64) -> String {
    if v.is_finite() && v.fract() == 0.0 && v.abs() < 1e12 { format!("{v:.0}") } else { format!("{v:.3}") }
}

fn render(name: &str, policy: &ResolvedPolicy, readings: &[RuleReading], decision: Option<&Decision>) -> String {
    let mut out = format!("policy {name}: {} rules\n", readings.len());
    for (r, rule) in readings.iter().zip(&policy.rules) {
        let unit = r.metric.info().unit;
        let quantile = if r.metric.info().quantile {
            format!(" p{} over {}s", fmt_value(rule.quantile * 100.0), rule.window.as_secs())
        } else {
            String::new()
        };
        let source =
            serde_json::to_value(r.source).ok().and_then(|v| v.as_str().map(str::to_owned)).unwrap_or_default();
        let age = r.age_secs.map_or_else(String::new, |a| format!(", age {a:.1}s"));
        let _ = writeln!(out, "\n{}{quantile} [{source}{age}] threshold {} {unit}", r.key, fmt_value(rule.threshold));
        if let Some(why) = &r.failure {
            let _ = writeln!(out, "  MISSING: {why}");
        }
        if r.idle {
            let _ = writeln!(out, "  IDLE: no request finished in the window and none in flight (reads as 0)");
        }
        if let Some(v) = r.fleet {
            let _ = writeln!(out, "  fleet: {} {unit}", fmt_value(v));
        }
        if !r.per_pod.is_empty() {
            let mean = r.per_pod.values().sum::<f64>() / r.per_pod.len() as f64;
            let _ = writeln!(out, "  average over {} pods: {} {unit}", r.per_pod.len(), fmt_value(mean));
            for (pod, v) in &r.per_pod {
                let _ = writeln!(out, "    {pod}: {}", fmt_value(*v));
            }
        }
        for (pod, why) in &r.pod_failures {
            let _ = writeln!(out, "    {pod}: no value ({why})");
        }
        if let Some(d) = &r.detail {
            let _ = writeln!(out, "  read: {d}");
        }
    }
    if let Some(d) = decision {
        let _ =
            writeln!(out, "\ndecision: {} -> {} replicas: {}", d.current_replicas, d.desired_replicas, d.explanation);
    }
    out
}
