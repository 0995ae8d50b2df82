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
        // `rate(h_bucket[w])` at the lagged instant `q` reads the scrapes in `(q - w, q]`:
        // the observations between the first and the last of them, and nothing with
        // fewer than two (PromQL returns no sample).
        let (first, last) = self.window_bounds(window_secs, lag_secs)?;
        self.hist.quantile(hist, quantile, last, last - first).map(|s| s * 1000.0)
    }

    /// The first and last scrape times in the range `(q - window, q]` of a PromQL range
    /// selector evaluated at the lagged instant `q = now - lag`; `None` with fewer than
    /// two scrapes in it (a `rate()` over it returns nothing).
    #[must_use]
    pub fn window_bounds(&self, window_secs: f64, lag_secs: f64) -> Option<(f64, f64)> {
        let q = self.now_secs - lag_secs;
        let mut inside = self.visible_snapshots(lag_secs).rev().take_while(|s| s.at_secs > q - window_secs + 1e-9);
        let last = inside.next()?.at_secs;
        let first = inside.last()?.at_secs;
        (last > first).then_some((first, last))
    }

    /// The scrapes in the range `(now - lag - window, now - lag]`, oldest first.
    fn window_snapshots(&self, window_secs: f64, lag_secs: f64) -> Vec<&'a Snapshot> {
        let q = self.now_secs - lag_secs;
        self.visible_snapshots(lag_secs).filter(|s| s.at_secs > q - window_secs + 1e-9).collect()
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
                    let in_window = self.window_snapshots(window, lag);
                    if in_window.len() < 2 {
                        out.failures
                            .insert(key, format!("fewer than two scrapes in the last {window:.0}s (rate() is empty)"));
                        continue;
                    }
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
                        // Nothing finished in the window: idle when the newest scrape shows
                        // nothing waiting or running (what the real adapters check too).
                        None if self
                            .latest(lag)
                            .is_some_and(|l| l.pods.iter().all(|s| s.queue_length == 0 && s.running == 0)) =>
                        {
                            out.idle.insert(key);
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
pub(crate) fn arrival_rate_window(query: &str, rule_window_secs: f64) -> Option<f64> {
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
    /// counter as scraped, seen with `lag_secs` of lag: `rate()` over the scrapes in
    /// `(now - lag - window, now - lag]`, the increase between the first and the last of
    /// them over the time between them (no extrapolation to the window's edges); `None`
    /// with fewer than two scrapes in that range, as PromQL returns nothing.
    #[must_use]
    pub fn arrival_rate(&self, window_secs: f64, lag_secs: f64) -> Option<f64> {
        let in_window = self.window_snapshots(window_secs, lag_secs);
        let (first, last) = (in_window.first()?, in_window.last()?);
        (last.at_secs > first.at_secs)
            .then(|| (last.arrivals_total - first.arrivals_total) as f64 / (last.at_secs - first.at_secs))
    }
}

/// The pod name of a replica.
#[must_use]
pub fn pod_name(replica: u32) -> String {
    format!("vllm-{replica}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse_policy;

    fn sample(replica: u32, queue: u32, completed: u64) -> PodSample {
        PodSample {
            replica,
            queue_length: queue,
            running: 2,
            kv_usage_percent: 10.0,
            gpu_utilization_percent: 50.0,
            completed_total: completed,
            generated_tokens_total: 10 * completed,
        }
    }

    fn rules(yaml: &str) -> Vec<ResolvedRule> {
        parse_policy(yaml).unwrap_or_else(|e| panic!("{e}")).1.rules
    }

    #[test]
    fn a_policy_sees_scrapes_pods_and_the_router_as_they_would_be() {
        // Scrapes at 5, 10, 15 and 20 s; replica 1 appears at 15 s; replica 2 is still starting.
        let snapshots: VecDeque<Snapshot> = [(5.0, 10), (10.0, 40), (15.0, 70), (20.0, 100)]
            .into_iter()
            .map(|(at, arrivals)| Snapshot {
                at_secs: at,
                pods: if at < 15.0 {
                    vec![sample(0, 1, at as u64)]
                } else {
                    vec![sample(0, 3, at as u64), sample(1, 5, 1)]
                },
                arrivals_total: arrivals,
            })
            .collect();
        let pods = [
            PodStatus { replica: 0, phase: PodPhase::Running, ready: true, deleting: false },
            PodStatus { replica: 1, phase: PodPhase::Running, ready: true, deleting: false },
            PodStatus { replica: 2, phase: PodPhase::Pending, ready: false, deleting: false },
        ];
        let mut hist = Histograms::default();
        hist.observe_for_test(Hist::Ttft, 18.0, 0.3);
        let view = FleetView {
            now_secs: 20.0,
            spec_replicas: 3,
            pods: &pods,
            snapshots: &snapshots,
            hist: &hist,
            lag_secs: 10.0,
        };
        let m = view.scaling_metrics(&rules(
            "maxReplicas: 9\nscalingRules:\n\
             - {metric: queue_length, threshold: 5, source: pods}\n\
             - {metric: queue_length, name: queue_prom, threshold: 5, source: prometheus}\n\
             - {metric: requests_per_second, threshold: 5, window: 15s, source: pods}\n\
             - {metric: custom, name: arrivals, query: 'sum(rate(vllm:num_incoming_requests_total[10s]))', threshold: 5, targetType: AverageValue}\n\
             - {metric: custom, name: other, query: 'sum(up)', threshold: 5}\n\
             - {metric: ttft, threshold: 2000, source: pods}\n\
             - {metric: itl, threshold: 50, source: pods}\n",
        ));
        // Direct scrapes see the newest values; the starting pod has none (missing).
        assert_eq!(m.pods[0].metrics["queue_length"], 3.0);
        assert_eq!(m.pods[1].metrics["queue_length"], 5.0);
        assert!(m.pods[2].metrics.is_empty());
        assert_eq!(m.pods[2].phase, PodPhase::Pending);
        // Prometheus answers 10 s late: the scrape at 10 s, before replica 1 existed.
        assert_eq!(m.pods[0].metrics["queue_prom"], 1.0);
        assert!(!m.pods[1].metrics.contains_key("queue_prom"));
        // Counter rates over the window: (20 - 5) / (20 - 5) for replica 0; replica 1 has
        // two samples 5 s apart with no completions.
        assert!((m.pods[0].metrics["requests_per_second"] - 1.0).abs() < 1e-9);
        assert_eq!(m.pods[1].metrics["requests_per_second"], 0.0);
        // The router's arrival rate over the query's 10 s window, from Prometheus, so 10 s
        // late: the scrapes at 5 and 10 s, (40 - 10) / 5.
        assert!((m.fleet["arrivals"] - 6.0).abs() < 1e-9, "{:?}", m.fleet);
        let now = FleetView { lag_secs: 0.0, ..view };
        assert!((now.arrival_rate(10.0, 0.0).unwrap() - 6.0).abs() < 1e-9, "the scrapes in (10, 20]: (100 - 70) / 5");
        // A window holding one scrape has no rate, as in PromQL: (15, 20] holds only 20 s.
        assert_eq!(now.arrival_rate(5.0, 0.0), None);
        assert_eq!(now.window_bounds(5.0, 0.0), None);
        assert_eq!(now.window_bounds(10.0, 0.0), Some((15.0, 20.0)));
        assert!(m.failures["other"].contains("not simulated"));
        // A quantile from vLLM's buckets; no observation in the window is a failure.
        assert!(m.fleet["ttft"] > 250.0 && m.fleet["ttft"] <= 500.0, "{:?}", m.fleet);
        assert!(m.failures["itl"].contains("no request observed"), "{:?}", m.failures);

        // The same quantile over an idle fleet (nothing waiting or running) is idle, not
        // missing, so it does not hold the fleet.
        let quiet: VecDeque<Snapshot> = [Snapshot {
            at_secs: 20.0,
            pods: vec![PodSample { queue_length: 0, running: 0, ..sample(0, 0, 20) }],
            arrivals_total: 100,
        }]
        .into();
        let idle = FleetView { snapshots: &quiet, lag_secs: 0.0, ..view };
        let m = idle.scaling_metrics(&rules("maxReplicas: 9\nscalingRules: [{metric: itl, threshold: 50}]\n"));
        assert!(m.idle.contains("itl") && m.failures.is_empty(), "{m:?}");
    }

    #[test]
    fn arrival_rate_queries_are_recognized_by_the_counter_name() {
        assert_eq!(arrival_rate_window("sum(rate(vllm:num_incoming_requests_total[1m]))", 30.0), Some(60.0));
        assert_eq!(arrival_rate_window("rate(vllm:num_incoming_requests_total{model=\"x\"}[30s])", 5.0), Some(30.0));
        assert_eq!(arrival_rate_window("sum(rate(vllm:num_incoming_requests_total))", 15.0), Some(15.0));
        assert_eq!(arrival_rate_window("vllm:num_incoming_requests_total", 15.0), None);
        assert_eq!(arrival_rate_window("sum(rate(vllm:request_success_total[1m]))", 15.0), None);
    }
}
