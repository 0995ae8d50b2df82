//! The per-policy summary: SLO attainment, latency percentiles, GPU-hours, scale events.

use serde::{Deserialize, Serialize};

use super::ledger::Ledger;
use super::trace::TraceRequest;

/// One row of the comparison table (and one entry of `report.json`'s `policies`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PolicyReport {
    /// The policy's name (`vllm-scaling`, `hpa-queue`, `kpa`, `fixed-peak`, `fixed-99`, `oracle`, ...).
    pub name: String,
    /// Requests replayed.
    pub requests: usize,
    /// Share of requests whose time to first token met the SLO, 0..1 (unserved and
    /// rejected requests count as misses).
    pub slo_attainment: f64,
    /// Replica-hours of GPU time, from each scale decision to each removal.
    pub gpu_hours: f64,
    /// Requests that can meet the objective at all: alone on an idle replica their
    /// prefill is shorter than the objective.
    pub feasible_requests: usize,
    /// Share of the feasible requests that met the objective, 0..1.
    pub slo_attainment_feasible: f64,
    /// Requests within the SLO per GPU-hour (goodput per GPU).
    pub good_requests_per_gpu_hour: f64,
    /// Number of rescales.
    pub scale_events: usize,
    /// Rescales in the opposite direction of the previous one.
    pub direction_changes: usize,
    /// Median time to first token, seconds (`null` if most requests were never served).
    pub ttft_p50_s: Option<f64>,
    /// 90th-percentile time to first token, seconds.
    pub ttft_p90_s: Option<f64>,
    /// 99th-percentile time to first token, seconds.
    pub ttft_p99_s: Option<f64>,
    /// Median time spent waiting for admission, seconds.
    pub queue_time_p50_s: Option<f64>,
    /// 99th-percentile time spent waiting for admission, seconds.
    pub queue_time_p99_s: Option<f64>,
    /// Median end-to-end latency, seconds.
    pub e2e_p50_s: Option<f64>,
    /// Median of each request's mean inter-token latency, milliseconds.
    pub itl_p50_ms: Option<f64>,
    /// Mean replicas over the run (GPU time / span).
    pub mean_replicas: f64,
    /// The most replicas asked for at once.
    pub peak_replicas: i32,
    /// Requests that never got a first token (still queued at the end, or rejected).
    pub unserved: usize,
}

/// One point of the time series plotted per policy.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SeriesPoint {
    /// End of the sample interval, seconds.
    pub t_secs: f64,
    /// Arrivals per second over the interval.
    pub arrival_rps: f64,
    /// Replicas asked for (`spec.replicas`).
    pub desired: i32,
    /// Replicas ready to serve.
    pub ready: i32,
    /// Requests waiting (in replicas' queues and at the gateway).
    pub waiting: u32,
}

/// One rescale.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScaleChange {
    /// When, seconds.
    pub at_secs: f64,
    /// Replicas before.
    pub from: i32,
    /// Replicas after.
    pub to: i32,
}

/// The number of times consecutive rescales go in opposite directions.
#[must_use]
pub fn direction_changes(log: &[ScaleChange]) -> usize {
    log.windows(2).filter(|w| (w[0].to > w[0].from) != (w[1].to > w[1].from)).count()
}

/// The `q` quantile (nearest rank) of sorted values; `None` if empty or infinite.
pub(crate) fn percentile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    let v = sorted[rank - 1];
    v.is_finite().then_some(v)
}

fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(f64::total_cmp);
    v
}

/// The fleet-side totals of a run.
pub(crate) struct FleetTotals<'a> {
    pub(crate) model: &'a super::model::ReplicaModel,
    pub(crate) gpu_secs: f64,
    pub(crate) horizon_secs: f64,
    pub(crate) initial_replicas: i32,
    pub(crate) log: &'a [ScaleChange],
}

/// Summarizes the requests from index `first` on (the earlier ones only warmed the
/// fleet up).
pub(crate) fn summarize(
    name: &str,
    reqs: &[TraceRequest],
    ledger: &Ledger,
    first: usize,
    slo_ttft_secs: f64,
    totals: &FleetTotals<'_>,
) -> PolicyReport {
    let FleetTotals { model, gpu_secs, horizon_secs, initial_replicas, log } = *totals;
    let first = first.min(reqs.len());
    let reqs = &reqs[first..];
    let (first_token, admitted, finished) =
        (&ledger.first_token[first..], &ledger.admitted[first..], &ledger.finished[first..]);
    let n = reqs.len();
    let since = |at: &[f64]| -> Vec<f64> {
        reqs.iter()
            .zip(at)
            .map(|(r, &t)| if t.is_nan() { f64::INFINITY } else { (t - r.arrival_secs).max(0.0) })
            .collect()
    };
    let ttft = sorted(since(first_token));
    let queue = sorted(since(admitted));
    let e2e = sorted(since(finished));
    let itl = sorted(
        reqs.iter()
            .enumerate()
            .filter(|(i, r)| r.output_tokens > 1 && !finished[*i].is_nan())
            .map(|(i, r)| 1000.0 * (finished[i] - first_token[i]) / f64::from(r.output_tokens - 1))
            .collect(),
    );
    let (mut feasible, mut feasible_good) = (0usize, 0usize);
    for (r, &t) in reqs.iter().zip(first_token) {
        if model.idle_ttft_secs(r.input_tokens) <= slo_ttft_secs {
            feasible += 1;
            feasible_good += usize::from(!t.is_nan() && t - r.arrival_secs <= slo_ttft_secs);
        }
    }
    let good = ttft.partition_point(|&t| t <= slo_ttft_secs);
    // A tensor-parallel replica holds several GPUs.
    let gpu_hours = gpu_secs * f64::from(model.gpus_per_replica) / 3600.0;
    PolicyReport {
        name: name.to_owned(),
        requests: n,
        slo_attainment: if n == 0 { 0.0 } else { good as f64 / n as f64 },
        gpu_hours,
        feasible_requests: feasible,
        slo_attainment_feasible: if feasible == 0 { 1.0 } else { feasible_good as f64 / feasible as f64 },
        good_requests_per_gpu_hour: if gpu_hours > 0.0 { good as f64 / gpu_hours } else { 0.0 },
        scale_events: log.len(),
        direction_changes: direction_changes(log),
        ttft_p50_s: percentile(&ttft, 0.5),
        ttft_p90_s: percentile(&ttft, 0.9),
        ttft_p99_s: percentile(&ttft, 0.99),
        queue_time_p50_s: percentile(&queue, 0.5),
        queue_time_p99_s: percentile(&queue, 0.99),
        e2e_p50_s: percentile(&e2e, 0.5),
        itl_p50_ms: percentile(&itl, 0.5),
        mean_replicas: if horizon_secs > 0.0 { gpu_secs / horizon_secs } else { 0.0 },
        peak_replicas: log.iter().map(|c| c.to).fold(initial_replicas, i32::max),
        unserved: ttft.iter().filter(|t| !t.is_finite()).count(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn direction_changes_count_flips() {
        let c = |from, to| ScaleChange { at_secs: 0.0, from, to };
        assert_eq!(direction_changes(&[c(1, 2), c(2, 3), c(3, 1), c(1, 4), c(4, 5)]), 2);
        assert_eq!(direction_changes(&[]), 0);
    }

    #[test]
    fn percentile_nearest_rank() {
        let v = [1.0, 2.0, 3.0, 4.0];
        assert_eq!(percentile(&v, 0.5), Some(2.0));
        assert_eq!(percentile(&v, 0.99), Some(4.0));
        assert_eq!(percentile(&[1.0, f64::INFINITY], 0.99), None);
        assert_eq!(percentile(&[], 0.5), None);
    }
}
