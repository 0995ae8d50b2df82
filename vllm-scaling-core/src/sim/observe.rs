//! What a policy sees: scraped samples of every pod, the latency histograms, and the
//! pod list, with the scrape interval and the Prometheus lag of a real deployment.

use std::collections::VecDeque;

use crate::metric::Metric;
use crate::observation::{PodMetrics, PodPhase, ScalingMetrics};
use crate::policy::{MetricSource, ResolvedRule};
use crate::time::Timestamp;

use super::ledger::{Hist, Histograms};

/// One pod's values at one scrape: the vLLM gauges and counters the catalog reads.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PodSample {
    /// The replica (pod `vllm-<replica>`).
    pub replica: u32,
    /// `vllm:num_requests_waiting`.
    pub queue_length: u32,
    /// `vllm:num_requests_running`.
    pub running: u32,
    /// `vllm:kv_cache_usage_perc`, as a percentage.
    pub kv_usage_percent: f64,
    /// NVML `utilization.gpu`: percent of the last scrape interval a step was running.
    pub gpu_utilization_percent: f64,
    /// `vllm:request_success_total`.
    pub completed_total: u64,
    /// `vllm:generation_tokens_total`.
    pub generated_tokens_total: u64,
}

impl PodSample {
    /// Requests in the replica: waiting plus running (Knative's "concurrency").
    #[must_use]
    pub fn in_flight(&self) -> u32 {
        self.queue_length + self.running
    }
}

/// Everything scraped at one instant.
#[derive(Clone, Debug, PartialEq)]
pub struct Snapshot {
    /// When, seconds since the start of the run.
    pub at_secs: f64,
    /// The serving pods (ready or draining) at that instant.
    pub pods: Vec<PodSample>,
    /// Requests that had reached the gateway by then (a router counter such as
    /// production-stack's incoming-requests total).
    pub arrivals_total: u64,
}

/// A pod as the Kubernetes API lists it right now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PodStatus {
    /// The replica (pod `vllm-<replica>`).
    pub replica: u32,
    /// `Pending` while the replica cold-starts, `Running` after.
    pub phase: PodPhase,
    /// Whether it passes its readiness probe.
    pub ready: bool,
    /// Whether it is being deleted (draining).
    pub deleting: bool,
}

/// The fleet as a policy sees it at one evaluation.
#[derive(Clone, Copy, Debug)]
pub struct FleetView<'a> {
    pub(crate) now_secs: f64,
    pub(crate) spec_replicas: i32,
    pub(crate) pods: &'a [PodStatus],
    pub(crate) snapshots: &'a VecDeque<Snapshot>,
    pub(crate) hist: &'a Histograms,
    pub(crate) lag_secs: f64,
}

/// vLLM pre-allocates this share of GPU memory (`--gpu-memory-utilization` 0.9): what
/// `gpu_memory_used` reads on a serving replica whatever the load.
const GPU_MEMORY_USED_PERCENT: f64 = 90.0;

impl<'a> FleetView<'a> {
    /// The evaluation time.
    #[must_use]
    pub fn now(&self) -> Timestamp {
        Timestamp::from_secs_f64(self.now_secs).unwrap_or(Timestamp::ZERO)
    }

    /// The evaluation time in seconds since the start of the run.
    #[must_use]
    pub fn now_secs(&self) -> f64 {
        self.now_secs
    }

    /// `scale.spec.replicas`: starting plus ready replicas (draining ones excluded).
    #[must_use]
    pub fn spec_replicas(&self) -> i32 {
        self.spec_replicas
    }

    /// The pods the API server lists now.
    #[must_use]
    pub fn pods(&self) -> &'a [PodStatus] {
        self.pods
    }

    /// Ready pods (not draining).
    #[must_use]
    pub fn ready_replicas(&self) -> usize {
        self.pods.iter().filter(|p| p.ready && !p.deleting).count()
    }

    /// The Prometheus lag of this run, seconds.
    #[must_use]
    pub fn lag_secs(&self) -> f64 {
        self.lag_secs
    }

    /// Snapshots scraped at or before `now - lag_secs`, oldest first.
    pub fn visible_snapshots(&self, lag_secs: f64) -> impl DoubleEndedIterator<Item = &'a Snapshot> + 'a {
        let horizon = self.now_secs - lag_secs;
        let end = self.snapshots.partition_point(|s| s.at_secs <= horizon + 1e-9);
        self.snapshots.range(..end)
    }

    /// The newest snapshot visible with `lag_secs` of lag.
    #[must_use]
    pub fn latest(&self, lag_secs: f64) -> Option<&'a Snapshot> {
        self.visible_snapshots(lag_secs).next_back()
    }

    /// A latency quantile over the fleet, milliseconds, as
    /// `histogram_quantile(q, sum(rate(<metric>_bucket[window])))` would give it from
    /// vLLM's buckets, seen with `lag_secs` of lag; `None` when no request was observed in
    /// the window. Only `ttft`, `latency`, `itl` and `queue_time` have histograms.
    #[must_use]
    pub fn latency_quantile_ms(&self, metric: Metric, quantile: f64, window_secs: f64, lag_secs: f64) -> Option<f64> {
        let hist = match metric {
            Metric::Ttft => Hist::Ttft,
            Metric::Latency => Hist::E2e,
            Metric::Itl => Hist::Itl,
            Metric::QueueTime => Hist::QueueTime,
            _ => return None,
        };
        // Prometheus answers from the newest scrape at or before the lagged instant.
        let at = self.latest(lag_secs)?.at_secs;
        self.hist.quantile(hist, quantile, at, window_secs).map(|s| s * 1000.0)
    }

    /// The metrics a policy with these rules would be fed, keyed by rule key: per-pod
    /// gauges from the newest visible scrape, rates over each rule's window, fleet
    /// latency quantiles from the histograms. Rules read from Prometheus (`prometheus` or
    /// `auto`) see the run's lag; `pods` rules see the newest scrape. Pods not yet scraped
    /// have no values (missing, as for real); `custom` rules fail (PromQL is not simulated).
    #[must_use]
    pub fn scaling_metrics(&self, rules: &[ResolvedRule]) -> ScalingMetrics {
        let mut out = ScalingMetrics {
            pods: self
                .pods
                .iter()
                .map(|p| PodMetrics {
                    name: pod_name(p.replica),
                    phase: p.phase,
                    ready: p.ready,
                    deleting: p.deleting,
                    metrics: Default::default(),
                })
                .collect(),
            ..ScalingMetrics::default()
        };
        for rule in rules {
            let lag = if rule.source == MetricSource::Pods { 0.0 } else { self.lag_secs };
            let key = rule.key.clone();
            let window = rule.window.as_secs_f64();
            let gauge: Option<fn(&PodSample) -> f64> = match rule.metric {
                Metric::QueueLength => Some(|s| f64::from(s.queue_length)),
                Metric::RunningRequests => Some(|s| f64::from(s.running)),
                Metric::KvCacheUsage => Some(|s| s.kv_usage_percent),
                Metric::GpuUtilization => Some(|s| s.gpu_utilization_percent),
                Metric::GpuMemoryUsed => Some(|_| GPU_MEMORY_USED_PERCENT),
                _ => None,
            };
            if let Some(read) = gauge {
                let Some(latest) = self.latest(lag) else {
                    out.failures.insert(key, "no scrape yet".to_owned());
                    continue;
                };
                for (pod, sample) in out.pods.iter_mut().zip(self.pods) {
                    if let Some(s) = latest.pods.iter().find(|s| s.replica == sample.replica) {
                        pod.metrics.insert(key.clone(), read(s));
                    }
                }
                continue;
            }
            match rule.metric {
                Metric::RequestsPerSecond | Metric::TokensPerSecond => {
                    let counter: fn(&PodSample) -> u64 = if rule.metric == Metric::RequestsPerSecond {
                        |s| s.completed_total
                    } else {
                        |s| s.generated_tokens_total
                    };
                    let Some(latest) = self.latest(lag) else {
                        out.failures.insert(key, "no scrape yet".to_owned());
                        continue;
                    };
                    let from = latest.at_secs - window;
                    let in_window: Vec<&Snapshot> = self.visible_snapshots(lag).filter(|s| s.at_secs > from).collect();
                    for (pod, status) in out.pods.iter_mut().zip(self.pods) {
                        let samples: Vec<(f64, u64)> = in_window
                            .iter()
                            .filter_map(|s| {
                                s.pods.iter().find(|p| p.replica == status.replica).map(|p| (s.at_secs, counter(p)))
                            })
                            .collect();
                        if let (Some(first), Some(last)) = (samples.first(), samples.last())
                            && last.0 > first.0
                        {
                            pod.metrics.insert(key.clone(), (last.1 - first.1) as f64 / (last.0 - first.0));
                        }
                    }
                }
                Metric::Ttft | Metric::Latency | Metric::Itl | Metric::QueueTime => {
                    match self.latency_quantile_ms(rule.metric, rule.quantile, window, lag) {
                        Some(v) => {
                            out.fleet.insert(key, v);
                        }
                        None => {
                            out.failures.insert(
                                key,
                                format!("no request observed in the last {window:.0}s (histogram_quantile is NaN)"),
                            );
                        }
                    }
                }
                Metric::Custom => match rule.query.as_deref().map(|q| arrival_rate_window(q, window)) {
                    Some(Some(w)) => match self.arrival_rate(w, lag) {
                        Some(rate) => {
                            out.fleet.insert(key, rate);
                        }
                        None => {
                            out.failures.insert(key, format!("fewer than two router scrapes in the last {w:.0}s"));
                        }
                    },
                    _ => {
                        out.failures.insert(
                            key,
                            format!("custom PromQL is not simulated, except the router's arrival rate `{ARRIVAL_RATE_QUERY}`"),
                        );
                    }
                },
                _ => {
                    out.failures.insert(key, "this metric is not simulated".to_owned());
                }
            }
        }
        out
    }
}

/// The one `custom` query the simulator answers: the router's arrival rate
/// (production-stack's router counts every request it receives in
/// `vllm:num_incoming_requests_total`). Any query naming that counter inside `rate(...)`
/// is answered with the gateway's arrivals per second over the query's `[window]` (or
/// the rule's window).
pub const ARRIVAL_RATE_QUERY: &str = "sum(rate(vllm:num_incoming_requests_total[30s]))";

/// The window of an arrival-rate query, seconds; `None` when the query is something else.
fn arrival_rate_window(query: &str, rule_window_secs: f64) -> Option<f64> {
    if !(query.contains("num_incoming_requests_total") && query.contains("rate(")) {
        return None;
    }
    let window = query
        .split_once('[')
        .and_then(|(_, rest)| rest.split_once(']'))
        .and_then(|(w, _)| crate::policy::parse_prom_duration(w.trim()).ok())
        .map_or(rule_window_secs, |d| d.as_secs_f64());
    Some(window.max(0.001))
}

impl FleetView<'_> {
    /// Requests per second reaching the gateway over `window_secs`, from the router's
    /// counter as scraped, seen with `lag_secs` of lag (`None` with fewer than two scrapes
    /// in the window).
    #[must_use]
    pub fn arrival_rate(&self, window_secs: f64, lag_secs: f64) -> Option<f64> {
        let latest = self.latest(lag_secs)?;
        let from = latest.at_secs - window_secs - 1e-9;
        let first = self.visible_snapshots(lag_secs).find(|s| s.at_secs >= from)?;
        (latest.at_secs > first.at_secs)
            .then(|| (latest.arrivals_total - first.arrivals_total) as f64 / (latest.at_secs - first.at_secs))
    }
}

/// The pod name of a replica.
#[must_use]
pub fn pod_name(replica: u32) -> String {
    format!("vllm-{replica}")
}
