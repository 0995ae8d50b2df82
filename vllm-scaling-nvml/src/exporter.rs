//! The node exporter behind `vllm-autoscaler gpu-exporter` (feature `exporter`): serves
//! `/metrics` with the node's GPUs in DCGM's names ([`render_dcgm`]) and, optionally,
//! the node's vLLM pods' own metrics re-exported ([`Reexport`]).

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http_body_util::{Empty, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use vllm_scaling_core::{Clock, error_chain};

use crate::device::{BoxError, GpuDevices};
use crate::metrics::NvmlMetrics;
use crate::reexport::{FamilyFilter, Reexport, format_value};
use crate::render::{DcgmLabels, render_dcgm};

/// The largest vLLM page the exporter reads (a vLLM page is tens of KiB).
const MAX_PAGE_BYTES: usize = 16 * 1024 * 1024;

/// One vLLM server to scrape, and the labels its series get.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VllmTarget {
    /// Its metrics URL (`http://10.0.0.7:8000/metrics`; plain HTTP, as vLLM serves it).
    pub url: String,
    /// Labels added to its series (`namespace`, `pod`, `container`).
    pub labels: Vec<(String, String)>,
}

/// A vLLM target URL that cannot be scraped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("`{url}` is not a vLLM metrics URL: {reason}")]
pub struct InvalidTarget {
    /// The URL given.
    pub url: String,
    /// What is wrong.
    pub reason: String,
}

impl VllmTarget {
    /// A target, checked: vLLM serves plain HTTP, so the URL is `http://HOST:PORT/PATH`.
    ///
    /// # Errors
    /// When the URL is not a plain-HTTP URL with a host.
    pub fn new(url: &str, labels: Vec<(String, String)>) -> Result<Self, InvalidTarget> {
        let bad = |reason: String| InvalidTarget { url: url.to_owned(), reason };
        let uri: hyper::Uri = url.parse().map_err(|e: hyper::http::uri::InvalidUri| bad(e.to_string()))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad("vLLM targets are plain-HTTP URLs (http://HOST:PORT/metrics)".into()));
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("the URL has no host".into()));
        }
        Ok(Self { url: url.to_owned(), labels })
    }
}

/// Where the exporter learns which vLLM pods to scrape; asked on every `/metrics` request.
#[async_trait]
pub trait VllmTargets: Send + Sync {
    /// The current targets.
    ///
    /// # Errors
    /// When they cannot be listed (the series are then left out and
    /// `vllm_scaling_exporter_vllm_discovery_up` reads 0).
    async fn targets(&self) -> Result<Vec<VllmTarget>, BoxError>;
}

#[async_trait]
impl VllmTargets for Vec<VllmTarget> {
    async fn targets(&self) -> Result<Vec<VllmTarget>, BoxError> {
        Ok(self.clone())
    }
}

/// How the exporter runs.
#[derive(Clone, Debug)]
pub struct ExporterConfig {
    /// The window `DCGM_FI_DEV_GPU_UTIL` averages over.
    pub window: Duration,
    /// How often the GPUs are polled in the background ([`Exporter::poll_forever`]).
    pub poll_interval: Duration,
    /// The node-wide labels.
    pub labels: DcgmLabels,
    /// Which vLLM families are re-exported.
    pub families: FamilyFilter,
    /// The time limit for scraping one vLLM pod.
    pub scrape_timeout: Duration,
}

impl Default for ExporterConfig {
    fn default() -> Self {
        Self {
            window: Duration::from_secs(30),
            poll_interval: Duration::from_secs(2),
            labels: DcgmLabels::default(),
            families: FamilyFilter::Autoscaling,
            scrape_timeout: Duration::from_secs(3),
        }
    }
}

/// The exporter: GPUs (unless started without them) plus vLLM targets.
pub struct Exporter<D> {
    gpus: Option<NvmlMetrics<D>>,
    targets: Box<dyn VllmTargets>,
    config: ExporterConfig,
    clock: Arc<dyn Clock>,
    client: Client<HttpConnector, Empty<Bytes>>,
}

impl<D> std::fmt::Debug for Exporter<D> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exporter")
            .field("gpus", &self.gpus.is_some())
            .field("config", &self.config)
            .finish_non_exhaustive()
    }
}

impl<D: GpuDevices + 'static> Exporter<D> {
    /// An exporter over `gpus` (`None`: vLLM metrics only, as with `--allow-no-gpu` on a
    /// node without NVML) and `targets`.
    #[must_use]
    pub fn new(
        gpus: Option<NvmlMetrics<D>>,
        targets: Box<dyn VllmTargets>,
        config: ExporterConfig,
        clock: Arc<dyn Clock>,
    ) -> Self {
        let client = Client::builder(TokioExecutor::new()).build_http();
        Self { gpus, targets, config, clock, client }
    }

    /// The GPU adapter, if any.
    pub const fn gpus(&self) -> Option<&NvmlMetrics<D>> {
        self.gpus.as_ref()
    }

    /// Polls the GPUs every `poll_interval`, forever (spawn it). Errors are logged; the
    /// next poll retries.
    pub async fn poll_forever(self: Arc<Self>) {
        let Some(gpus) = &self.gpus else { return };
        let mut tick = tokio::time::interval(self.config.poll_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Err(e) = gpus.poll(self.clock.now()) {
                tracing::warn!(error = %error_chain(&e), "polling the GPUs failed");
            }
        }
    }

    /// The `/metrics` page as of now: the GPUs, the re-exported vLLM series, and the
    /// exporter's own health gauges.
    pub async fn render(&self) -> String {
        let mut out = String::new();
        let mut health = String::new();
        health.push_str("# HELP vllm_scaling_exporter_nvml_up 1 when the GPUs were read for this scrape.\n");
        health.push_str("# TYPE vllm_scaling_exporter_nvml_up gauge\n");
        match &self.gpus {
            Some(gpus) => match gpus.snapshot(self.clock.now(), self.config.window) {
                Ok(snapshot) => {
                    out.push_str(&render_dcgm(&snapshot, &self.config.labels));
                    health.push_str("vllm_scaling_exporter_nvml_up 1\n");
                }
                Err(e) => {
                    // No GPU series at all: absent, never a made-up 0.
                    tracing::warn!(error = %error_chain(&e), "reading the GPUs failed");
                    health.push_str("vllm_scaling_exporter_nvml_up 0\n");
                }
            },
            None => health.push_str("vllm_scaling_exporter_nvml_up 0\n"),
        }

        let mut reexport = Reexport::new(self.config.families);
        health.push_str("# HELP vllm_scaling_exporter_vllm_discovery_up 1 when the vLLM targets could be listed.\n");
        health.push_str("# TYPE vllm_scaling_exporter_vllm_discovery_up gauge\n");
        let targets = match self.targets.targets().await {
            Ok(t) => {
                health.push_str("vllm_scaling_exporter_vllm_discovery_up 1\n");
                t
            }
            Err(e) => {
                tracing::warn!(error = %error_chain(&*e), "listing the vLLM targets failed");
                health.push_str("vllm_scaling_exporter_vllm_discovery_up 0\n");
                Vec::new()
            }
        };
        let pages = futures::future::join_all(targets.iter().map(|t| self.scrape(&t.url))).await;
        health.push_str("# HELP vllm_scaling_exporter_vllm_up 1 when the vLLM target was scraped and parsed.\n");
        health.push_str("# TYPE vllm_scaling_exporter_vllm_up gauge\n");
        for (target, page) in targets.iter().zip(pages) {
            let up = match page.map(|p| reexport.add_page(&p, &target.labels).map_err(|e| e.to_string())) {
                Ok(Ok(_)) => true,
                Ok(Err(why)) | Err(why) => {
                    tracing::warn!(url = %target.url, error = %why, "scraping a vLLM target failed");
                    false
                }
            };
            let mut labels: Vec<(String, String)> = target.labels.clone();
            labels.push(("url".into(), target.url.clone()));
            health.push_str("vllm_scaling_exporter_vllm_up");
            health.push_str(&label_set(&labels));
            health.push(' ');
            health.push_str(&format_value(if up { 1.0 } else { 0.0 }));
            health.push('\n');
        }
        out.push_str(&reexport.render());
        out.push_str(&health);
        out
    }

    async fn scrape(&self, url: &str) -> Result<String, String> {
        vllm_scaling_prom::fetch_page(&self.client, url, MAX_PAGE_BYTES, self.config.scrape_timeout).await
    }

    async fn handle(&self, req: Request<Incoming>) -> Response<Full<Bytes>> {
        let reply = |status: StatusCode, body: String, content_type: &'static str| {
            let mut r = Response::new(Full::new(Bytes::from(body)));
            *r.status_mut() = status;
            r.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(content_type));
            r
        };
        match (req.method(), req.uri().path()) {
            (&Method::GET, "/metrics") => {
                reply(StatusCode::OK, self.render().await, "text/plain; version=0.0.4; charset=utf-8")
            }
            (&Method::GET, "/healthz") => reply(StatusCode::OK, "ok\n".into(), "text/plain; charset=utf-8"),
            (_, path) => reply(
                StatusCode::NOT_FOUND,
                format!("no such page: {path} (try /metrics)\n"),
                "text/plain; charset=utf-8",
            ),
        }
    }

    /// Serves `/metrics` and `/healthz` on `listener` until `shutdown` completes.
    pub async fn serve(self: Arc<Self>, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            let accepted = tokio::select! {
                () = &mut shutdown => return,
                a = listener.accept() => a,
            };
            let stream = match accepted {
                Ok((s, _)) => s,
                Err(e) => {
                    // Out of file descriptors, say: back off instead of spinning.
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let me = Arc::clone(&self);
            tokio::spawn(async move {
                let svc = service_fn(move |req| {
                    let me = Arc::clone(&me);
                    async move { Ok::<_, Infallible>(me.handle(req).await) }
                });
                if let Err(e) = http1::Builder::new().serve_connection(TokioIo::new(stream), svc).await {
                    tracing::debug!(error = %e, "a metrics connection failed");
                }
            });
        }
    }
}

fn label_set(labels: &[(String, String)]) -> String {
    let mut s = String::from("{");
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        s.push_str(k);
        s.push_str("=\"");
        s.push_str(&v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"));
        s.push('"');
    }
    s.push('}');
    s
}
