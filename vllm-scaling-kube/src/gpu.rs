//! GPU metrics without configuration: the `gpu_utilization` and `gpu_memory_used` rules
//! with `source: auto` read from the GPU exporter on each target pod's node.
//!
//! vLLM's own `/metrics` page has no GPU series, so the controller looks, for every node a
//! target pod runs on (`spec.nodeName`), for an exporter pod on that node through the
//! Kubernetes API. Exporter pods are recognised by label ([`EXPORTER_SELECTORS`]):
//!
//! | label | exporter |
//! | --- | --- |
//! | `app.kubernetes.io/name=vllm-gpu-exporter` | this project's `vllm-autoscaler gpu-exporter` DaemonSet (`deploy/gpu-exporter/`, the Helm chart's `gpuExporter`) |
//! | `app.kubernetes.io/name=dcgm-exporter` | NVIDIA's dcgm-exporter Helm chart |
//! | `app=nvidia-dcgm-exporter` | the NVIDIA GPU Operator's dcgm-exporter DaemonSet |
//!
//! An exporter pod counts when it is Running and Ready and has an IP; its page is
//! `http://<pod IP>:<port>/metrics` with the port from the `prometheus.io/port` annotation,
//! else the container port named `metrics`, else its first container port, else 9400
//! (dcgm-exporter's and the gpu-exporter's default). Where both kinds run on one node, the
//! project's exporter is read. From the page, the DCGM series whose `namespace` and `pod`
//! labels name a target pod give that pod's values: `gpu_utilization` is the mean of
//! `DCGM_FI_DEV_GPU_UTIL` over the pod's GPUs, `gpu_memory_used` is
//! `100 × Σ DCGM_FI_DEV_FB_USED / Σ (DCGM_FI_DEV_FB_USED + DCGM_FI_DEV_FB_FREE)` (the
//! formulas of the Prometheus adapter and the NVML adapter, so every source reads the same).
//!
//! When no exporter runs on any of the pods' nodes, the rules go to the metrics backend as
//! before (DCGM series in Prometheus when `--prometheus-url` is set). The rule's status
//! (`reason`) says which exporter, or which fallback, was used.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client as HttpClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::ListParams;
use vllm_scaling_core::{Metric, MetricSource, ResolvedRule, ScalingMetrics, error_chain};
use vllm_scaling_prom::exposition;

use crate::discovery::PORT_ANNOTATION;

/// The label selectors exporter pods are listed by (cluster-wide).
pub const EXPORTER_SELECTORS: [&str; 2] =
    ["app.kubernetes.io/name in (vllm-gpu-exporter,dcgm-exporter)", "app=nvidia-dcgm-exporter"];

/// The label value of this project's exporter (`app.kubernetes.io/name`), which the
/// manifests in `deploy/gpu-exporter/` and the Helm chart set.
pub const GPU_EXPORTER_NAME: &str = "vllm-gpu-exporter";

/// The port an exporter pod is read on when it names none (dcgm-exporter's default, and the
/// gpu-exporter's in `deploy/`).
pub const DEFAULT_EXPORTER_PORT: u16 = 9400;

/// The largest exporter page read (a node's page is a few KiB).
const MAX_PAGE_BYTES: usize = 8 << 20;

/// Which kind of node exporter a pod is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[non_exhaustive]
pub enum ExporterKind {
    /// This project's `vllm-autoscaler gpu-exporter`.
    GpuExporter,
    /// NVIDIA's dcgm-exporter.
    DcgmExporter,
}

impl std::fmt::Display for ExporterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::GpuExporter => "gpu-exporter",
            Self::DcgmExporter => "dcgm-exporter",
        })
    }
}

/// The exporter pod of one node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeExporter {
    /// Its kind.
    pub kind: ExporterKind,
    /// Its namespace.
    pub namespace: String,
    /// Its pod name.
    pub name: String,
    /// The node it runs on.
    pub node: String,
    /// Its page (`http://10.0.0.5:9400/metrics`).
    pub url: String,
}

impl std::fmt::Display for NodeExporter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{} on node {} ({})", self.kind, self.namespace, self.name, self.node, self.url)
    }
}

/// The kind of an exporter pod, from its labels.
#[must_use]
pub fn exporter_kind(pod: &Pod) -> Option<ExporterKind> {
    let labels = pod.metadata.labels.as_ref()?;
    match (labels.get("app.kubernetes.io/name").map(String::as_str), labels.get("app").map(String::as_str)) {
        (Some(GPU_EXPORTER_NAME), _) => Some(ExporterKind::GpuExporter),
        (Some("dcgm-exporter"), _) | (_, Some("nvidia-dcgm-exporter")) => Some(ExporterKind::DcgmExporter),
        _ => None,
    }
}

/// The port an exporter pod serves its page on: the `prometheus.io/port` annotation, else
/// the container port named `metrics`, else the first container port, else
/// [`DEFAULT_EXPORTER_PORT`].
#[must_use]
pub fn exporter_port(pod: &Pod) -> u16 {
    if let Some(port) = pod
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(PORT_ANNOTATION))
        .and_then(|p| p.trim().parse::<u16>().ok())
        .filter(|p| *p != 0)
    {
        return port;
    }
    let ports: Vec<_> =
        pod.spec.iter().flat_map(|s| s.containers.iter()).flat_map(|c| c.ports.iter().flatten()).collect();
    ports
        .iter()
        .find(|p| p.name.as_deref() == Some("metrics"))
        .or_else(|| ports.first())
        .and_then(|p| u16::try_from(p.container_port).ok())
        .filter(|p| *p != 0)
        .unwrap_or(DEFAULT_EXPORTER_PORT)
}

/// The exporter of each node among `pods`: pods recognised by [`exporter_kind`] that are
/// Running and Ready, not being deleted, scheduled on a node and with an IP. The project's
/// exporter wins over a dcgm-exporter on the same node; among equals, the first by
/// namespace and name.
#[must_use]
pub fn node_exporters(pods: &[Pod]) -> BTreeMap<String, NodeExporter> {
    let mut candidates: Vec<NodeExporter> = pods
        .iter()
        .filter_map(|pod| {
            let kind = exporter_kind(pod)?;
            let status = pod.status.as_ref()?;
            let running = status.phase.as_deref() == Some("Running");
            let ready = status.conditions.iter().flatten().any(|c| c.type_ == "Ready" && c.status == "True");
            if !running || !ready || pod.metadata.deletion_timestamp.is_some() {
                return None;
            }
            let node = pod.spec.as_ref()?.node_name.clone().filter(|n| !n.is_empty())?;
            let ip = status.pod_ip.clone().filter(|ip| !ip.is_empty())?;
            let host = if ip.contains(':') { format!("[{ip}]") } else { ip };
            Some(NodeExporter {
                kind,
                namespace: pod.metadata.namespace.clone().unwrap_or_default(),
                name: pod.metadata.name.clone().unwrap_or_default(),
                node,
                url: format!("http://{host}:{}/metrics", exporter_port(pod)),
            })
        })
        .collect();
    candidates.sort_by(|a, b| (a.kind, &a.namespace, &a.name).cmp(&(b.kind, &b.namespace, &b.name)));
    let mut out = BTreeMap::new();
    for exporter in candidates {
        out.entry(exporter.node.clone()).or_insert(exporter);
    }
    out
}

/// One pod's GPU values on an exporter page.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PodGpu {
    /// The mean `DCGM_FI_DEV_GPU_UTIL` over the pod's GPUs, percent.
    pub utilization_percent: Option<f64>,
    /// `100 × Σ used / Σ (used + free)` of the pod's GPUs' framebuffers.
    pub memory_used_percent: Option<f64>,
    /// How many GPUs (or MIG instances) the page attributes to the pod.
    pub devices: usize,
}

impl PodGpu {
    /// The value for a GPU metric.
    #[must_use]
    pub fn value(&self, metric: Metric) -> Option<f64> {
        match metric {
            Metric::GpuUtilization => self.utilization_percent,
            Metric::GpuMemoryUsed => self.memory_used_percent,
            _ => None,
        }
    }
}

/// The GPU values of each pod of `namespace` on a DCGM-named exporter page: the series
/// whose `namespace` and `pod` labels name it. A GPU shared by several containers of one
/// pod (one series each) counts once.
///
/// # Errors
/// When the page is not a valid exposition page.
pub fn dcgm_pod_values(page: &str, namespace: &str) -> Result<BTreeMap<String, PodGpu>, exposition::ParseError> {
    let page = exposition::parse(page)?;
    // (pod, device) → value, so a device shared by two containers of a pod counts once.
    let read = |series: &str| -> BTreeMap<(String, String), f64> {
        page.samples_named(series)
            .filter(|s| s.label("namespace") == Some(namespace) && s.value.is_finite())
            .filter_map(|s| {
                let pod = s.label("pod").filter(|p| !p.is_empty())?;
                let device = format!(
                    "{}/{}/{}",
                    s.label("UUID").unwrap_or_default(),
                    s.label("GPU_I_ID").unwrap_or_default(),
                    s.label("gpu").unwrap_or_default()
                );
                Some(((pod.to_owned(), device), s.value))
            })
            .collect()
    };
    let util = read("DCGM_FI_DEV_GPU_UTIL");
    let used = read("DCGM_FI_DEV_FB_USED");
    let free = read("DCGM_FI_DEV_FB_FREE");
    let mut out: BTreeMap<String, PodGpu> = BTreeMap::new();
    let mut devices: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (pod, device) in util.keys().chain(used.keys()) {
        devices.entry(pod.clone()).or_default().insert(device.clone());
    }
    for (pod, devs) in devices {
        let utils: Vec<f64> = devs.iter().filter_map(|d| util.get(&(pod.clone(), d.clone())).copied()).collect();
        let (mut u, mut total) = (0.0, 0.0);
        for d in &devs {
            let key = (pod.clone(), d.clone());
            if let (Some(used), Some(free)) = (used.get(&key), free.get(&key)) {
                u += used;
                total += used + free;
            }
        }
        out.insert(
            pod,
            PodGpu {
                utilization_percent: (!utils.is_empty()).then(|| utils.iter().sum::<f64>() / utils.len() as f64),
                memory_used_percent: (total > 0.0).then(|| 100.0 * u / total),
                devices: devs.len(),
            },
        );
    }
    Ok(out)
}

/// Whether a rule is read from node exporters: a GPU metric with `source: auto`.
#[must_use]
pub fn reads_from_exporters(rule: &ResolvedRule) -> bool {
    rule.source == MetricSource::Auto && matches!(rule.metric, Metric::GpuUtilization | Metric::GpuMemoryUsed)
}

/// What the node exporters gave in one evaluation.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct GpuReading {
    /// The rules read from exporters: values per pod, or why none.
    handled: BTreeMap<String, Result<BTreeMap<String, f64>, String>>,
    /// Per handled rule: which exporters were read.
    notes: BTreeMap<String, String>,
    /// The GPU `auto` rules left to the metrics backend, and why.
    left: BTreeMap<String, String>,
}

impl GpuReading {
    /// Whether the rule `key` was read from exporters (and must not be asked of the
    /// metrics backend).
    #[must_use]
    pub fn handles(&self, key: &str) -> bool {
        self.handled.contains_key(key)
    }

    /// Files the exporters' values (and failures) into `metrics`, and for the rules left to
    /// the backend that failed there, says why no exporter was read either.
    pub fn apply(&self, metrics: &mut ScalingMetrics) {
        for (key, result) in &self.handled {
            metrics.fleet.remove(key);
            metrics.idle.remove(key);
            match result {
                Ok(per_pod) => {
                    metrics.failures.remove(key);
                    for pod in &mut metrics.pods {
                        if let Some(v) = per_pod.get(&pod.name) {
                            pod.metrics.insert(key.clone(), *v);
                        }
                    }
                }
                Err(why) => {
                    metrics.failures.insert(key.clone(), why.clone());
                }
            }
        }
        for (key, why) in &self.left {
            if let Some(failure) = metrics.failures.get_mut(key) {
                *failure = format!("no GPU node exporter to read: {why}; and the metrics backend: {failure}");
            }
        }
    }

    /// Where the rule `key`'s values came from, for its status: the exporters read, or why
    /// none was and the metrics backend was asked instead. `None` for other rules.
    #[must_use]
    pub fn source_note(&self, key: &str) -> Option<String> {
        if let Some(note) = self.notes.get(key) {
            return Some(note.clone());
        }
        self.left.get(key).map(|why| format!("source: the metrics backend (no GPU node exporter: {why})"))
    }

    fn left_to_backend(rules: &[&ResolvedRule], why: &str) -> Self {
        Self { left: rules.iter().map(|r| (r.key.clone(), why.to_owned())).collect(), ..Self::default() }
    }
}

type ExporterList = Result<Arc<BTreeMap<String, NodeExporter>>, String>;

/// Finds and reads the GPU node exporters of a target's pods (see the [module docs](self)).
pub struct GpuExporters {
    client: kube::Client,
    http: HttpClient<HttpConnector, Empty<Bytes>>,
    scrape_timeout: Duration,
    ttl: Duration,
    cache: Mutex<Option<(tokio::time::Instant, ExporterList)>>,
}

impl std::fmt::Debug for GpuExporters {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GpuExporters")
            .field("scrape_timeout", &self.scrape_timeout)
            .field("ttl", &self.ttl)
            .finish_non_exhaustive()
    }
}

impl GpuExporters {
    /// Lists exporter pods through `client` (the list is kept for `ttl`) and reads each
    /// page within `scrape_timeout`.
    #[must_use]
    pub fn new(client: kube::Client, ttl: Duration, scrape_timeout: Duration) -> Self {
        let http = HttpClient::builder(TokioExecutor::new()).build_http();
        Self { client, http, scrape_timeout, ttl, cache: Mutex::new(None) }
    }

    /// The exporter of every node, cached for the TTL.
    async fn exporters(&self) -> ExporterList {
        {
            let cache = self.cache.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some((at, list)) = cache.as_ref()
                && at.elapsed() < self.ttl
            {
                return list.clone();
            }
        }
        let api: Api<Pod> = Api::all(self.client.clone());
        let mut pods = Vec::new();
        let mut result: ExporterList = Ok(Arc::new(BTreeMap::new()));
        for selector in EXPORTER_SELECTORS {
            let list =
                tokio::time::timeout(self.scrape_timeout, api.list(&ListParams::default().labels(selector))).await;
            match list {
                Ok(Ok(list)) => pods.extend(list.items),
                Ok(Err(e)) => {
                    result = Err(format!("listing exporter pods ({selector}) failed: {}", error_chain(&e)));
                    break;
                }
                Err(_) => {
                    result =
                        Err(format!("listing exporter pods ({selector}) timed out after {:?}", self.scrape_timeout));
                    break;
                }
            }
        }
        if result.is_ok() {
            result = Ok(Arc::new(node_exporters(&pods)));
        }
        *self.cache.lock().unwrap_or_else(PoisonError::into_inner) =
            Some((tokio::time::Instant::now(), result.clone()));
        result
    }

    async fn fetch(&self, url: &str) -> Result<String, String> {
        vllm_scaling_prom::fetch_page(&self.http, url, MAX_PAGE_BYTES, self.scrape_timeout).await
    }

    /// Reads the GPU `auto` rules among `rules` for the target's `pods` (in `namespace`)
    /// from the exporters on the pods' nodes. Asks the API server nothing when no rule
    /// needs it.
    pub async fn read(&self, rules: &[ResolvedRule], pods: &[Pod], namespace: &str) -> GpuReading {
        let gpu_rules: Vec<&ResolvedRule> = rules.iter().filter(|r| reads_from_exporters(r)).collect();
        if gpu_rules.is_empty() {
            return GpuReading::default();
        }
        // The pods that can have values: scheduled, not being deleted.
        let pod_nodes: BTreeMap<String, String> = pods
            .iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .filter_map(|p| {
                let node = p.spec.as_ref()?.node_name.clone().filter(|n| !n.is_empty())?;
                Some((p.metadata.name.clone()?, node))
            })
            .collect();
        if pod_nodes.is_empty() {
            return GpuReading::left_to_backend(&gpu_rules, "no target pod is scheduled on a node");
        }
        let exporters = match self.exporters().await {
            Ok(e) => e,
            Err(why) => return GpuReading::left_to_backend(&gpu_rules, &why),
        };
        let nodes: BTreeSet<&String> = pod_nodes.values().collect();
        let used: BTreeMap<&String, &NodeExporter> =
            nodes.iter().filter_map(|n| exporters.get(*n).map(|e| (*n, e))).collect();
        if used.is_empty() {
            let names: Vec<&str> = nodes.iter().map(|n| n.as_str()).collect();
            let why = format!(
                "no Running and Ready exporter pod ({}) on node{} {}",
                EXPORTER_SELECTORS.join(" or "),
                if names.len() == 1 { "" } else { "s" },
                names.join(", ")
            );
            return GpuReading::left_to_backend(&gpu_rules, &why);
        }
        let urls: BTreeSet<&str> = used.values().map(|e| e.url.as_str()).collect();
        let pages = futures::future::join_all(urls.iter().map(|url| async move {
            let values = self.fetch(url).await.and_then(|page| {
                dcgm_pod_values(&page, namespace).map_err(|e| format!("{url} is not a valid exposition page: {e}"))
            });
            (*url, values)
        }))
        .await;
        let pages: BTreeMap<&str, Result<BTreeMap<String, PodGpu>, String>> = pages.into_iter().collect();

        let mut reading = GpuReading::default();
        let exporters_note = {
            const SHOWN: usize = 3;
            let mut shown: Vec<String> = used.values().take(SHOWN).map(ToString::to_string).collect();
            if used.len() > SHOWN {
                shown.push(format!("and {} more", used.len() - SHOWN));
            }
            format!("source: {}", shown.join(", "))
        };
        for rule in gpu_rules {
            let series = match rule.metric {
                Metric::GpuUtilization => "DCGM_FI_DEV_GPU_UTIL",
                _ => "DCGM_FI_DEV_FB_USED/DCGM_FI_DEV_FB_FREE",
            };
            let mut values = BTreeMap::new();
            let mut failures: BTreeMap<String, String> = BTreeMap::new();
            for (pod, node) in &pod_nodes {
                let Some(exporter) = used.get(node) else {
                    failures.insert(pod.clone(), format!("no exporter on node {node}"));
                    continue;
                };
                match &pages[exporter.url.as_str()] {
                    Err(why) => {
                        failures.insert(
                            pod.clone(),
                            format!("{} {}/{}: {why}", exporter.kind, exporter.namespace, exporter.name),
                        );
                    }
                    Ok(page) => match page.get(pod).and_then(|g| g.value(rule.metric)) {
                        Some(v) => {
                            values.insert(pod.clone(), v);
                        }
                        None => {
                            failures.insert(
                                pod.clone(),
                                format!(
                                    "{} {}/{} on node {node} has no {series} series for pod {namespace}/{pod} (no GPU process of the pod seen there)",
                                    exporter.kind, exporter.namespace, exporter.name
                                ),
                            );
                        }
                    },
                }
            }
            let result = if values.is_empty() {
                const SHOWN: usize = 3;
                let mut parts: Vec<String> = failures.values().take(SHOWN).cloned().collect();
                if failures.len() > SHOWN {
                    parts.push(format!("and {} more", failures.len() - SHOWN));
                }
                Err(format!("no pod has a GPU value from its node exporter ({})", parts.join("; ")))
            } else {
                Ok(values)
            };
            reading.handled.insert(rule.key.clone(), result);
            let mut note = exporters_note.clone();
            if !failures.is_empty() && reading.handled[&rule.key].is_ok() {
                note.push_str(&format!("; {} pod(s) without a value", failures.len()));
            }
            reading.notes.insert(rule.key.clone(), note);
        }
        reading
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn merge(target: &mut serde_json::Value, patch: &serde_json::Value) {
        match (target, patch) {
            (serde_json::Value::Object(t), serde_json::Value::Object(p)) => {
                for (k, v) in p {
                    merge(t.entry(k.clone()).or_insert(serde_json::Value::Null), v);
                }
            }
            (t, p) => *t = p.clone(),
        }
    }

    fn pod(value: serde_json::Value) -> Pod {
        serde_json::from_value(value).unwrap()
    }

    fn exporter_pod(name: &str, node: &str, labels: serde_json::Value, extra: serde_json::Value) -> Pod {
        let mut v = json!({
            "metadata": {"name": name, "namespace": "gpu", "labels": labels},
            "spec": {"nodeName": node, "containers": [{"name": "e"}]},
            "status": {"phase": "Running", "podIP": "10.0.0.5", "conditions": [{"type": "Ready", "status": "True"}]}
        });
        merge(&mut v, &extra);
        pod(v)
    }

    #[test]
    fn exporters_by_node_kind_and_port() {
        let ours = json!({"app.kubernetes.io/name": "vllm-gpu-exporter"});
        let dcgm = json!({"app.kubernetes.io/name": "dcgm-exporter"});
        let operator = json!({"app": "nvidia-dcgm-exporter"});
        let pods = [
            exporter_pod(
                "d-a",
                "a",
                dcgm.clone(),
                json!({"spec": {"containers": [{"name": "e", "ports": [{"name": "x", "containerPort": 9500}]}]}}),
            ),
            exporter_pod(
                "g-a",
                "a",
                ours.clone(),
                json!({"metadata": {"annotations": {"prometheus.io/port": "9411"}}}),
            ),
            exporter_pod(
                "o-b",
                "b",
                operator,
                json!({"spec": {"containers": [{"name": "e", "ports": [{"name": "x", "containerPort": 1}, {"name": "metrics", "containerPort": 9401}]}]}}),
            ),
            exporter_pod("d-c", "c", dcgm.clone(), json!({"status": {"podIP": "fd00::5"}})),
            exporter_pod(
                "not-ready",
                "d",
                ours.clone(),
                json!({"status": {"conditions": [{"type": "Ready", "status": "False"}]}}),
            ),
            exporter_pod("no-ip", "e", ours.clone(), json!({"status": {"podIP": ""}})),
            exporter_pod("other", "f", json!({"app": "nginx"}), json!({})),
        ];
        let found = node_exporters(&pods);
        assert_eq!(found.keys().collect::<Vec<_>>(), ["a", "b", "c"]);
        assert_eq!(found["a"].kind, ExporterKind::GpuExporter, "ours wins over dcgm-exporter on a node");
        assert_eq!(found["a"].url, "http://10.0.0.5:9411/metrics");
        assert_eq!(found["b"].kind, ExporterKind::DcgmExporter);
        assert_eq!(found["b"].url, "http://10.0.0.5:9401/metrics", "the port named metrics");
        assert_eq!(found["c"].url, "http://[fd00::5]:9400/metrics", "the default port");
        assert_eq!(exporter_port(&pods[0]), 9500, "else the first port");
        assert_eq!(found["a"].to_string(), "gpu-exporter gpu/g-a on node a (http://10.0.0.5:9411/metrics)");
    }

    #[test]
    fn pod_values_from_a_dcgm_page() {
        let page = r#"
# TYPE DCGM_FI_DEV_GPU_UTIL gauge
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-0",Hostname="n",container="vllm",namespace="llm",pod="vllm-0"} 80
DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-0",Hostname="n",container="sidecar",namespace="llm",pod="vllm-0"} 80
DCGM_FI_DEV_GPU_UTIL{gpu="1",UUID="GPU-1",Hostname="n",container="vllm",namespace="llm",pod="vllm-0"} 40
DCGM_FI_DEV_GPU_UTIL{gpu="2",UUID="GPU-2",Hostname="n",container="vllm",namespace="other",pod="vllm-0"} 5
DCGM_FI_DEV_GPU_UTIL{gpu="3",UUID="GPU-3",Hostname="n",container="",namespace="",pod=""} 0
DCGM_FI_DEV_FB_USED{gpu="0",UUID="GPU-0",container="vllm",namespace="llm",pod="vllm-0"} 30000
DCGM_FI_DEV_FB_FREE{gpu="0",UUID="GPU-0",container="vllm",namespace="llm",pod="vllm-0"} 10000
DCGM_FI_DEV_FB_USED{gpu="1",UUID="GPU-1",container="vllm",namespace="llm",pod="vllm-0"} 10000
DCGM_FI_DEV_FB_FREE{gpu="1",UUID="GPU-1",container="vllm",namespace="llm",pod="vllm-0"} 30000
DCGM_FI_DEV_FB_USED{gpu="4",UUID="GPU-4",GPU_I_ID="7",container="vllm",namespace="llm",pod="mig"} 1000
DCGM_FI_DEV_FB_FREE{gpu="4",UUID="GPU-4",GPU_I_ID="7",container="vllm",namespace="llm",pod="mig"} 3000
"#;
        let v = dcgm_pod_values(page, "llm").unwrap();
        assert_eq!(v.keys().collect::<Vec<_>>(), ["mig", "vllm-0"]);
        assert_eq!(v["vllm-0"].utilization_percent, Some(60.0), "the sidecar's series of GPU 0 counts once");
        assert_eq!(v["vllm-0"].memory_used_percent, Some(50.0));
        assert_eq!(v["vllm-0"].devices, 2);
        assert_eq!(v["mig"].utilization_percent, None, "no utilization for MIG: missing, not 0");
        assert_eq!(v["mig"].memory_used_percent, Some(25.0));
        assert_eq!(v["vllm-0"].value(Metric::GpuUtilization), Some(60.0));
        assert_eq!(v["vllm-0"].value(Metric::QueueLength), None);
        assert!(dcgm_pod_values("DCGM_FI_DEV_GPU_UTIL{", "llm").is_err());
    }

    #[test]
    fn applying_a_reading() {
        let mut reading = GpuReading::default();
        reading.handled.insert("gpu_utilization".into(), Ok(BTreeMap::from([("a".to_owned(), 70.0)])));
        reading.handled.insert("g2".into(), Err("down".into()));
        reading.notes.insert("gpu_utilization".into(), "source: gpu-exporter x".into());
        reading.left.insert("g3".into(), "no exporter on node n".into());
        let mut m = ScalingMetrics {
            pods: vec![vllm_scaling_core::PodMetrics::running("a"), vllm_scaling_core::PodMetrics::running("b")],
            failures: BTreeMap::from([("g3".to_owned(), "the pod's /metrics has no DCGM series".to_owned())]),
            ..ScalingMetrics::default()
        };
        reading.apply(&mut m);
        assert_eq!(m.pods[0].metrics["gpu_utilization"], 70.0);
        assert!(m.pods[1].metrics.is_empty());
        assert_eq!(m.failures["g2"], "down");
        assert!(
            m.failures["g3"]
                .starts_with("no GPU node exporter to read: no exporter on node n; and the metrics backend: the pod's")
        );
        assert!(reading.handles("g2") && !reading.handles("g3"));
        assert_eq!(reading.source_note("gpu_utilization").as_deref(), Some("source: gpu-exporter x"));
        assert!(reading.source_note("g3").unwrap().starts_with("source: the metrics backend (no GPU node exporter"));
        assert_eq!(reading.source_note("queue_length"), None);
    }
}
