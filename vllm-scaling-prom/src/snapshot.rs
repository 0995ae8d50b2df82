//! The pure half of a direct pod scrape: one parsed page becomes a [`PodSnapshot`] of
//! catalog values; two snapshots of the same pod give rates and histogram deltas; summed
//! deltas give fleet quantiles exactly as PromQL's `histogram_quantile` computes them.
//!
//! No I/O and no clock: every snapshot carries the [`Timestamp`] it was taken at.
//!
//! ```
//! use vllm_scaling_core::{Metric, Timestamp};
//! use vllm_scaling_prom::snapshot::{PodSnapshot, SeriesFilter, fleet_quantile};
//!
//! let page = |count: u32| format!(
//!     "vllm:kv_cache_usage_perc{{engine=\"0\",model_name=\"m\"}} 0.5\n\
//!      vllm:time_to_first_token_seconds_bucket{{engine=\"0\",le=\"0.1\",model_name=\"m\"}} {count}\n\
//!      vllm:time_to_first_token_seconds_bucket{{engine=\"0\",le=\"+Inf\",model_name=\"m\"}} {count}\n");
//! let filter = SeriesFilter::default();
//! let before = PodSnapshot::from_text(&page(10), &filter, Timestamp::from_secs(0)).unwrap();
//! let after = PodSnapshot::from_text(&page(30), &filter, Timestamp::from_secs(15)).unwrap();
//! assert_eq!(after.instant(Metric::KvCacheUsage), Ok(50.0)); // percent
//! let delta = after.histogram_delta(&before, Metric::Ttft).unwrap();
//! assert_eq!(delta.total(), 20.0);
//! // All 20 requests took at most 100 ms: p50 interpolates to 50 ms.
//! assert_eq!(fleet_quantile(0.5, [&delta]), Ok(50.0));
//! ```

use std::collections::BTreeMap;

use serde::Serialize;
use vllm_scaling_core::{Metric, Timestamp};

use vllm_scaling_core::{MetricSource, ResolvedRule};

use crate::exposition::{Exposition, ParseError, ParseLimits, Sample, parse, parse_with_limits};
use crate::reading::{RuleReading, summarize_pod_failures};

/// Which vLLM series of a page count: pages can serve several models.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeriesFilter {
    /// Only series whose `model_name` label equals this (series without the label are kept).
    pub model_name: Option<String>,
}

impl SeriesFilter {
    fn keeps(&self, s: &Sample<'_, '_>) -> bool {
        match (&self.model_name, s.label("model_name")) {
            (Some(want), Some(have)) => want == have,
            _ => true,
        }
    }
}

/// A cumulative histogram summed over a pod's engines: `(upper bound, count)` pairs,
/// sorted by bound, the last one `+Inf` when the page had it.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Histogram {
    /// `(le, cumulative count)`, sorted by `le`.
    pub buckets: Vec<(f64, f64)>,
    /// The `_count` total, when the page had one.
    pub count: Option<f64>,
    /// The `_sum` total, when the page had one.
    pub sum: Option<f64>,
    /// The series family it was read from.
    pub series: &'static str,
}

impl Histogram {
    /// The number of observations: the `+Inf` bucket, else `_count`, else the last bucket.
    #[must_use]
    pub fn total(&self) -> f64 {
        match self.buckets.last() {
            Some(&(le, c)) if le == f64::INFINITY => c,
            last => self.count.unwrap_or_else(|| last.map_or(0.0, |b| b.1)),
        }
    }

    /// Sorts the buckets by bound and adds up those with equal bounds (engines of a pod,
    /// pods of a fleet): O(n log n), where a search per bucket was quadratic (100,000 `le`
    /// values took 14 CPU-seconds).
    fn sort_and_coalesce(&mut self) {
        self.buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
        self.buckets.dedup_by(|later, first| {
            // `==`, not bits: -0 and +0 are one bound, as they were for the search.
            if later.0 == first.0 {
                first.1 += later.1;
                true
            } else {
                false
            }
        });
    }
}

/// A catalog value read from one page, with the series it came from.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Value {
    /// The value, in the page's unit (vLLM's 0–1 fraction for KV usage).
    pub value: f64,
    /// The series it was read from.
    pub series: &'static str,
}

/// The catalog values of one pod at one time.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PodSnapshot {
    /// When the page was read.
    pub at: Timestamp,
    gauges: BTreeMap<Metric, Value>,
    counters: BTreeMap<Metric, Value>,
    histograms: BTreeMap<Metric, Result<Histogram, String>>,
    /// Notes worth logging: deprecated series in use, malformed buckets.
    pub warnings: Vec<String>,
}

/// The gauge series per metric, newest name first (core's catalog `sources`).
const KV_SERIES: &[&str] = &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"];
const HISTOGRAMS: &[(Metric, &[&str])] = &[
    (Metric::Latency, &["vllm:e2e_request_latency_seconds"]),
    (Metric::Ttft, &["vllm:time_to_first_token_seconds"]),
    (Metric::Itl, &["vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"]),
    (Metric::QueueTime, &["vllm:request_queue_time_seconds"]),
];
const COUNTERS: &[(Metric, &str)] = &[
    (Metric::TokensPerSecond, "vllm:generation_tokens_total"),
    (Metric::RequestsPerSecond, "vllm:request_success_total"),
];

impl PodSnapshot {
    /// Parses a page and reads the catalog values from it.
    ///
    /// # Errors
    /// When the page is not valid exposition text.
    pub fn from_text(text: &str, filter: &SeriesFilter, at: Timestamp) -> Result<Self, ParseError> {
        Ok(Self::from_exposition(&parse(text)?, filter, at))
    }

    /// [`Self::from_text`] within `limits`.
    ///
    /// # Errors
    /// When the page is not valid exposition text or holds more than `limits` allow.
    pub fn from_text_with_limits(
        text: &str,
        filter: &SeriesFilter,
        at: Timestamp,
        limits: ParseLimits,
    ) -> Result<Self, ParseError> {
        Ok(Self::from_exposition(&parse_with_limits(text, limits)?, filter, at))
    }

    /// Reads the catalog values from a parsed page.
    ///
    /// Queue and running counts are summed over `engine` (data-parallel ranks), KV usage is
    /// the max over engines, counters and histogram buckets are summed over all series.
    #[must_use]
    pub fn from_exposition(e: &Exposition<'_>, filter: &SeriesFilter, at: Timestamp) -> Self {
        let mut snap = Self { at, ..Self::default() };
        let keep = |s: &Sample<'_, '_>| filter.keeps(s);
        let sum_of = |name: &'static str| -> Option<Value> {
            let mut found = false;
            let mut total = 0.0;
            for s in e.samples_named(name).filter(keep) {
                found = true;
                total += s.value;
            }
            found.then_some(Value { value: total, series: name })
        };
        for (metric, name) in
            [(Metric::QueueLength, "vllm:num_requests_waiting"), (Metric::RunningRequests, "vllm:num_requests_running")]
        {
            if let Some(v) = sum_of(name) {
                snap.gauges.insert(metric, v);
            }
        }
        if let Some(v) = KV_SERIES.iter().find_map(|&name| {
            e.samples_named(name)
                .filter(keep)
                .map(|s| s.value)
                .reduce(f64_max)
                .map(|value| Value { value, series: name })
        }) {
            snap.gauges.insert(Metric::KvCacheUsage, v);
        }
        snap.read_gpu(e);
        for &(metric, name) in COUNTERS {
            if let Some(v) = sum_of(name) {
                snap.counters.insert(metric, v);
            }
        }
        for &(metric, names) in HISTOGRAMS {
            if let Some(h) = names.iter().find_map(|&name| read_histogram(e, name, &keep)) {
                snap.histograms.insert(metric, h);
            }
        }
        for v in snap.gauges.values().chain(snap.counters.values()) {
            note_deprecated(e, v.series, v.series, &mut snap.warnings);
        }
        for h in snap.histograms.values().flatten() {
            note_deprecated(e, h.series, h.series, &mut snap.warnings);
        }
        snap
    }

    /// dcgm-exporter series, when a pod's page carries them (a sidecar exporter): mean
    /// utilization over the pod's GPUs, and framebuffer used as a percent of used + free.
    fn read_gpu(&mut self, e: &Exposition<'_>) {
        let util: Vec<f64> = e.samples_named("DCGM_FI_DEV_GPU_UTIL").map(|s| s.value).collect();
        if !util.is_empty() {
            let mean = util.iter().sum::<f64>() / util.len() as f64;
            self.gauges.insert(Metric::GpuUtilization, Value { value: mean, series: "DCGM_FI_DEV_GPU_UTIL" });
        }
        let used: f64 = e.samples_named("DCGM_FI_DEV_FB_USED").map(|s| s.value).sum();
        let free: f64 = e.samples_named("DCGM_FI_DEV_FB_FREE").map(|s| s.value).sum();
        if e.samples_named("DCGM_FI_DEV_FB_USED").next().is_some() && used + free > 0.0 {
            // Stored as a 0–1 fraction like KV usage, so `instant` scales both the same way.
            self.gauges
                .insert(Metric::GpuMemoryUsed, Value { value: used / (used + free), series: "DCGM_FI_DEV_FB_USED" });
        }
    }

    /// A gauge metric in the catalog's unit (KV usage and GPU memory as percent).
    ///
    /// # Errors
    /// Why there is no value: the series is absent from the page, or the metric is not a
    /// gauge a page carries (rates and quantiles need two scrapes).
    pub fn instant(&self, metric: Metric) -> Result<f64, String> {
        match metric {
            Metric::QueueLength
            | Metric::RunningRequests
            | Metric::KvCacheUsage
            | Metric::GpuUtilization
            | Metric::GpuMemoryUsed => {
                let v = self.gauges.get(&metric).ok_or_else(|| missing_series(metric))?;
                Ok(match metric {
                    // vLLM and our GPU-memory ratio are 0–1 fractions; the catalog is percent.
                    Metric::KvCacheUsage | Metric::GpuMemoryUsed => v.value * 100.0,
                    _ => v.value,
                })
            }
            _ => Err(format!("`{metric}` is not a gauge of the pod's page")),
        }
    }

    /// The series an instant value was read from.
    #[must_use]
    pub fn series(&self, metric: Metric) -> Option<&'static str> {
        self.gauges
            .get(&metric)
            .or_else(|| self.counters.get(&metric))
            .map(|v| v.series)
            .or_else(|| self.histograms.get(&metric).and_then(|h| h.as_ref().ok()).map(|h| h.series))
    }

    /// The histogram a latency metric is read from, summed over engines.
    ///
    /// # Errors
    /// Absent from the page, or malformed (a bad `le`).
    pub fn histogram(&self, metric: Metric) -> Result<&Histogram, String> {
        match self.histograms.get(&metric) {
            Some(Ok(h)) => Ok(h),
            Some(Err(e)) => Err(e.clone()),
            None => Err(missing_series(metric)),
        }
    }

    /// The per-second rate of a counter metric between `earlier` and this snapshot.
    ///
    /// A counter that went down means the pod restarted; as PromQL's `rate` does, the
    /// increase is then this snapshot's whole value.
    ///
    /// # Errors
    /// Absent counter, or no time between the snapshots.
    pub fn rate(&self, earlier: &Self, metric: Metric) -> Result<f64, String> {
        let now = self.counters.get(&metric).ok_or_else(|| missing_series(metric))?;
        let then = earlier.counters.get(&metric).ok_or_else(|| missing_series(metric))?;
        let secs = self.at.saturating_duration_since(earlier.at).as_secs_f64();
        if secs <= 0.0 {
            return Err("the two scrapes have the same time".to_owned());
        }
        let increase = if now.value >= then.value { now.value - then.value } else { now.value };
        Ok(increase / secs)
    }

    /// The histogram observations made between `earlier` and this snapshot.
    ///
    /// A reset (the total or any bucket went down, or the bucket boundaries changed) means
    /// the pod restarted: the delta is then this snapshot's whole histogram.
    ///
    /// # Errors
    /// Absent or malformed histogram in either snapshot.
    pub fn histogram_delta(&self, earlier: &Self, metric: Metric) -> Result<Histogram, String> {
        let now = self.histogram(metric)?;
        let then = match earlier.histogram(metric) {
            Ok(h) => h,
            // The pod started exposing the family since: everything is new.
            Err(_) => return Ok(now.clone()),
        };
        let same_bounds =
            now.buckets.len() == then.buckets.len() && now.buckets.iter().zip(&then.buckets).all(|(a, b)| a.0 == b.0);
        let reset =
            !same_bounds || now.total() < then.total() || now.buckets.iter().zip(&then.buckets).any(|(a, b)| a.1 < b.1);
        if reset {
            return Ok(now.clone());
        }
        Ok(Histogram {
            buckets: now.buckets.iter().zip(&then.buckets).map(|(a, b)| (a.0, a.1 - b.1)).collect(),
            count: now.count.zip(then.count).map(|(a, b)| a - b),
            sum: now.sum.zip(then.sum).map(|(a, b)| a - b),
            series: now.series,
        })
    }
}

fn f64_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b > a { b } else { a }
}

fn missing_series(metric: Metric) -> String {
    let sources = metric.info().sources;
    match metric {
        Metric::GpuUtilization | Metric::GpuMemoryUsed => format!(
            "the pod's /metrics has no {} series (vLLM does not export GPU metrics: use source nvml, or prometheus with dcgm-exporter)",
            sources.iter().filter(|s| s.starts_with("DCGM")).copied().collect::<Vec<_>>().join("/")
        ),
        Metric::Custom => "custom rules run a PromQL query: use source prometheus".to_owned(),
        _ => format!("the pod's /metrics has no {} series", sources.join(" or ")),
    }
}

fn note_deprecated(e: &Exposition<'_>, family: &str, series: &str, warnings: &mut Vec<String>) {
    let family = family.strip_suffix("_total").unwrap_or(family);
    if let Some(help) = e.help(family).or_else(|| e.help(series))
        && help.contains("DEPRECATED")
    {
        let note = format!("{series} is deprecated by this vLLM: {help}");
        if !warnings.contains(&note) {
            warnings.push(note);
        }
    }
}

fn read_histogram(
    e: &Exposition<'_>,
    family: &'static str,
    keep: &dyn Fn(&Sample<'_, '_>) -> bool,
) -> Option<Result<Histogram, String>> {
    let bucket_name = format!("{family}_bucket");
    let mut h = Histogram { series: family, ..Histogram::default() };
    let mut any = false;
    for s in e.samples_named(&bucket_name).filter(|s| keep(s)) {
        any = true;
        let Some(le) = s.label("le") else {
            return Some(Err(format!("{bucket_name} on line {} has no `le` label", s.line)));
        };
        let Ok(bound) = le.parse::<f64>() else {
            return Some(Err(format!("{bucket_name} on line {} has le=\"{le}\", not a number", s.line)));
        };
        if bound.is_nan() {
            return Some(Err(format!("{bucket_name} on line {} has le=\"NaN\"", s.line)));
        }
        h.buckets.push((bound, s.value));
    }
    if !any {
        return None;
    }
    let sum_named = |suffix: &str| -> Option<f64> {
        let name = format!("{family}{suffix}");
        let mut values = e.samples_named(&name).filter(|s| keep(s)).map(|s| s.value).peekable();
        values.peek().is_some().then(|| values.sum())
    };
    h.count = sum_named("_count");
    h.sum = sum_named("_sum");
    h.sort_and_coalesce();
    Some(Ok(h))
}

/// Sums histograms bucket by bucket (PromQL `sum by (le)`): buckets with equal bounds add up.
#[must_use]
pub fn sum_histograms<'h>(histograms: impl IntoIterator<Item = &'h Histogram>) -> Histogram {
    let mut out = Histogram::default();
    let mut count = Some(0.0);
    let mut sum = Some(0.0);
    for h in histograms {
        out.series = h.series;
        for &(le, c) in &h.buckets {
            out.buckets.push((le, c));
        }
        count = count.zip(h.count).map(|(a, b)| a + b);
        sum = sum.zip(h.sum).map(|(a, b)| a + b);
    }
    out.sort_and_coalesce();
    out.count = count;
    out.sum = sum;
    out
}

/// Prometheus' `histogram_quantile(q, buckets)` (promql/quantile.go `bucketQuantile`),
/// in the histogram's unit. `None` where PromQL returns NaN: no `+Inf` bucket, fewer than
/// two buckets, or no observations.
#[must_use]
pub fn histogram_quantile(q: f64, buckets: &[(f64, f64)]) -> Option<f64> {
    if q.is_nan() {
        return None;
    }
    if q < 0.0 {
        return Some(f64::NEG_INFINITY);
    }
    if q > 1.0 {
        return Some(f64::INFINITY);
    }
    let mut b: Vec<(f64, f64)> = buckets.to_vec();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    if b.last().is_none_or(|l| l.0 != f64::INFINITY) {
        return None;
    }
    // coalesceBuckets: equal bounds add up.
    b.dedup_by(|later, first| {
        if later.0 == first.0 {
            first.1 += later.1;
            true
        } else {
            false
        }
    });
    // ensureMonotonic: a cumulative count never decreases.
    let mut max = f64::NEG_INFINITY;
    for x in &mut b {
        if x.1 > max {
            max = x.1;
        } else {
            x.1 = max;
        }
    }
    if b.len() < 2 {
        return None;
    }
    let observations = b[b.len() - 1].1;
    if observations == 0.0 {
        return None;
    }
    let mut rank = q * observations;
    let i = b.iter().position(|x| x.1 >= rank).unwrap_or(b.len() - 1);
    if i == b.len() - 1 {
        return Some(b[b.len() - 2].0);
    }
    if i == 0 && b[0].0 <= 0.0 {
        return Some(b[0].0);
    }
    let (mut start, end, mut count) = (0.0, b[i].0, b[i].1);
    if i > 0 {
        start = b[i - 1].0;
        count -= b[i - 1].1;
        rank -= b[i - 1].1;
    }
    Some(start + (end - start) * (rank / count))
}

/// The fleet quantile of latency deltas, in milliseconds (vLLM histograms are in seconds).
///
/// # Errors
/// Why there is no value: no requests finished in the window, or no `+Inf` bucket.
pub fn fleet_quantile<'h>(q: f64, deltas: impl IntoIterator<Item = &'h Histogram>) -> Result<f64, String> {
    let total = sum_histograms(deltas);
    if total.buckets.is_empty() {
        return Err("no pod served the histogram".to_owned());
    }
    if total.buckets.last().is_none_or(|b| b.0 != f64::INFINITY) {
        return Err(format!("{} has no le=\"+Inf\" bucket, so its quantiles are undefined", total.series));
    }
    if total.total() <= 0.0 {
        return Err(format!("no requests finished in the window ({} did not grow)", total.series));
    }
    histogram_quantile(q, &total.buckets)
        .map(|secs| secs * 1000.0)
        .ok_or_else(|| format!("{} has too few buckets for a quantile", total.series))
}

/// Whether histogram deltas with a `+Inf` bucket saw no observation at all.
fn nothing_observed(deltas: &[Histogram]) -> bool {
    let total = sum_histograms(deltas);
    total.buckets.last().is_some_and(|b| b.0 == f64::INFINITY) && total.total() <= 0.0
}

/// Whether every pod's current scrape shows no request waiting and none running.
fn nothing_in_flight(pods: &[PodObservation<'_>]) -> bool {
    pods.iter().all(|p| {
        p.current
            .is_ok_and(|s| [Metric::QueueLength, Metric::RunningRequests].into_iter().all(|m| s.instant(m) == Ok(0.0)))
    })
}

/// One pod as the direct-scrape computation sees it.
#[derive(Clone, Debug)]
pub struct PodObservation<'a> {
    /// The pod's name.
    pub name: &'a str,
    /// This scrape, or why it failed.
    pub current: Result<&'a PodSnapshot, &'a str>,
    /// Earlier snapshots of the pod, oldest first.
    pub earlier: Vec<&'a PodSnapshot>,
}

/// The earlier snapshot a rate over `window` is computed from: the newest one at least
/// `window` old (so the span covers the window, as PromQL's `rate(x[window])` does) unless
/// it is more than twice the window old, else the oldest one inside the window. `None`
/// when there is no usable earlier scrape: a rate over a much longer span than the rule
/// asks for would describe the past, not now.
#[must_use]
pub fn baseline<'s>(
    earlier: &[&'s PodSnapshot],
    current: &PodSnapshot,
    window: std::time::Duration,
) -> Option<&'s PodSnapshot> {
    let cutoff = current.at.saturating_sub(window);
    let too_old = current.at.saturating_sub(window.saturating_mul(2));
    let before: Vec<&'s PodSnapshot> = earlier.iter().copied().filter(|s| s.at < current.at).collect();
    before
        .iter()
        .rev()
        .find(|s| s.at <= cutoff)
        .filter(|s| s.at >= too_old)
        .or_else(|| before.iter().find(|s| s.at > cutoff))
        .copied()
}

/// One rule's reading from the pods' snapshots: gauges per pod from the current scrape,
/// rates per pod and fleet quantiles from the difference with each pod's [`baseline`].
#[must_use]
pub fn rule_reading(rule: &ResolvedRule, pods: &[PodObservation<'_>]) -> RuleReading {
    let mut r = RuleReading::new(rule.key.clone(), rule.metric, MetricSource::Pods);
    let metric = rule.metric;
    if metric == Metric::Custom {
        r.failure = Some(
            "custom rules run a PromQL query: set `source: prometheus` (or `auto` with Prometheus configured)"
                .to_owned(),
        );
        return r;
    }
    if pods.is_empty() {
        r.failure = Some("no ready pod with a metrics URL to scrape".to_owned());
        return r;
    }
    let info = metric.info();
    let mut deltas = Vec::new();
    let mut span_secs: f64 = 0.0;
    let mut series = None;
    for pod in pods {
        let snap = match pod.current {
            Ok(s) => s,
            Err(why) => {
                r.pod_failures.insert(pod.name.to_owned(), why.to_owned());
                continue;
            }
        };
        let two_scrapes = info.quantile || matches!(metric, Metric::TokensPerSecond | Metric::RequestsPerSecond);
        if !two_scrapes {
            match snap.instant(metric) {
                Ok(v) => {
                    r.per_pod.insert(pod.name.to_owned(), v);
                    series = series.or(snap.series(metric));
                }
                Err(why) => {
                    r.pod_failures.insert(pod.name.to_owned(), why);
                }
            }
            continue;
        }
        let Some(base) = baseline(&pod.earlier, snap, rule.window) else {
            let why = if pod.earlier.is_empty() {
                "first scrape of this pod: rates and quantiles need a second one".to_owned()
            } else {
                format!(
                    "the previous scrape is more than twice the {}s window old: rates and quantiles need a second, recent one",
                    rule.window.as_secs()
                )
            };
            r.pod_failures.insert(pod.name.to_owned(), why);
            continue;
        };
        let span = snap.at.saturating_duration_since(base.at).as_secs_f64();
        let result = if info.quantile {
            snap.histogram_delta(base, metric).map(|d| deltas.push(d))
        } else {
            snap.rate(base, metric).map(|v| {
                r.per_pod.insert(pod.name.to_owned(), v);
            })
        };
        match result {
            Ok(()) => {
                span_secs = span_secs.max(span);
                series = series.or(snap.series(metric));
            }
            Err(why) => {
                r.pod_failures.insert(pod.name.to_owned(), why);
            }
        }
    }
    r.detail = series.map(str::to_owned);
    if info.quantile {
        if deltas.is_empty() {
            r.failure = Some(summarize_pod_failures("no pod gave a histogram delta", &r.pod_failures));
            return r;
        }
        match fleet_quantile(rule.quantile, &deltas) {
            Ok(ms) => r.fleet = Some(ms),
            // Nothing finished in the window: idle when every pod was read and none holds
            // a request (a stalled fleet with a queue is not idle, and stays missing).
            Err(_) if r.pod_failures.is_empty() && nothing_observed(&deltas) && nothing_in_flight(pods) => {
                r.idle = true;
            }
            Err(why) => r.failure = Some(why),
        }
        r.age_secs = Some(span_secs);
        return r;
    }
    if r.per_pod.is_empty() {
        r.failure = Some(summarize_pod_failures("no pod gave a value", &r.pod_failures));
        return r;
    }
    r.age_secs = Some(span_secs);
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    const PAGE: &str = "\
# HELP vllm:gpu_cache_usage_perc GPU KV-cache usage. 1 means 100 percent usage. (DEPRECATED: Use vllm:kv_cache_usage_perc instead.)
vllm:gpu_cache_usage_perc{engine=\"0\",model_name=\"a\"} 0.25
vllm:gpu_cache_usage_perc{engine=\"1\",model_name=\"a\"} 0.75
vllm:gpu_cache_usage_perc{engine=\"0\",model_name=\"b\"} 0.99
vllm:num_requests_waiting{engine=\"0\",model_name=\"a\"} 2
vllm:num_requests_waiting{engine=\"1\",model_name=\"a\"} 3
vllm:num_requests_waiting{engine=\"0\",model_name=\"b\"} 100
vllm:request_success_total{engine=\"0\",finished_reason=\"stop\",model_name=\"a\"} 10
vllm:request_success_total{engine=\"0\",finished_reason=\"length\",model_name=\"a\"} 5
vllm:time_per_output_token_seconds_bucket{engine=\"0\",le=\"0.1\",model_name=\"a\"} 4
vllm:time_per_output_token_seconds_bucket{engine=\"0\",le=\"+Inf\",model_name=\"a\"} 6
vllm:time_per_output_token_seconds_bucket{engine=\"1\",le=\"0.1\",model_name=\"a\"} 1
vllm:time_per_output_token_seconds_bucket{engine=\"1\",le=\"+Inf\",model_name=\"a\"} 2
vllm:time_per_output_token_seconds_count{engine=\"0\",model_name=\"a\"} 6
vllm:time_per_output_token_seconds_count{engine=\"1\",model_name=\"a\"} 2
";

    fn snap(text: &str, model: Option<&str>, secs: u64) -> PodSnapshot {
        let filter = SeriesFilter { model_name: model.map(str::to_owned) };
        PodSnapshot::from_text(text, &filter, Timestamp::from_secs(secs)).unwrap()
    }

    #[test]
    fn engines_sum_or_max_old_names_fall_back_and_models_filter() {
        let s = snap(PAGE, Some("a"), 0);
        assert_eq!(s.instant(Metric::QueueLength), Ok(5.0));
        assert_eq!(s.instant(Metric::KvCacheUsage), Ok(75.0));
        assert_eq!(s.series(Metric::KvCacheUsage), Some("vllm:gpu_cache_usage_perc"));
        assert!(s.warnings.iter().any(|w| w.contains("DEPRECATED")), "{:?}", s.warnings);
        let itl = s.histogram(Metric::Itl).unwrap();
        assert_eq!(itl.buckets, vec![(0.1, 5.0), (f64::INFINITY, 8.0)]);
        assert_eq!(itl.count, Some(8.0));
        assert_eq!(itl.series, "vllm:time_per_output_token_seconds");
        let all = snap(PAGE, None, 0);
        assert_eq!(all.instant(Metric::QueueLength), Ok(105.0));
        assert_eq!(all.instant(Metric::KvCacheUsage), Ok(99.0));
    }

    #[test]
    fn absent_series_say_what_is_missing() {
        let s = snap(PAGE, Some("a"), 0);
        let err = s.instant(Metric::RunningRequests).unwrap_err();
        assert!(err.contains("vllm:num_requests_running"), "{err}");
        assert!(s.instant(Metric::GpuUtilization).unwrap_err().contains("nvml"));
        assert!(s.histogram(Metric::Ttft).unwrap_err().contains("vllm:time_to_first_token_seconds"));
        assert!(s.instant(Metric::Ttft).is_err());
    }

    #[test]
    fn newest_name_wins_when_both_are_served() {
        let page = "vllm:kv_cache_usage_perc 0.1\nvllm:gpu_cache_usage_perc 0.9\n";
        assert_eq!(snap(page, None, 0).instant(Metric::KvCacheUsage), Ok(10.0));
    }

    #[test]
    fn rates_and_counter_resets() {
        let a = snap("vllm:generation_tokens_total 1000\n", None, 10);
        let b = snap("vllm:generation_tokens_total 1600\n", None, 20);
        assert_eq!(b.rate(&a, Metric::TokensPerSecond), Ok(60.0));
        let restarted = snap("vllm:generation_tokens_total 50\n", None, 20);
        assert_eq!(restarted.rate(&a, Metric::TokensPerSecond), Ok(5.0));
        assert!(a.rate(&a, Metric::TokensPerSecond).is_err());
        let s = snap(PAGE, Some("a"), 30);
        let e = snap(PAGE, Some("a"), 0);
        assert_eq!(s.rate(&e, Metric::RequestsPerSecond), Ok(0.0));
    }

    #[test]
    fn histogram_deltas_and_resets() {
        let h = |c1: u32, c2: u32| format!("x_bucket{{le=\"1\"}} {c1}\nx_bucket{{le=\"+Inf\"}} {c2}\n");
        let read = |t: &str, secs| {
            let e = parse(t).unwrap();
            let mut s = PodSnapshot { at: Timestamp::from_secs(secs), ..PodSnapshot::default() };
            s.histograms.insert(Metric::Latency, read_histogram(&e, "x", &|_| true).unwrap());
            s
        };
        let a = read(&h(5, 10), 0);
        let b = read(&h(8, 20), 10);
        assert_eq!(b.histogram_delta(&a, Metric::Latency).unwrap().buckets, vec![(1.0, 3.0), (f64::INFINITY, 10.0)]);
        let restarted = read(&h(1, 2), 10);
        assert_eq!(restarted.histogram_delta(&a, Metric::Latency).unwrap().total(), 2.0);
        let rebucketed = read("x_bucket{le=\"2\"} 30\nx_bucket{le=\"+Inf\"} 30\n", 10);
        assert_eq!(rebucketed.histogram_delta(&a, Metric::Latency).unwrap().buckets[0], (2.0, 30.0));
    }

    #[test]
    fn many_buckets_coalesce_across_engines_and_pods() {
        // 3 engines x 20,000 bounds, written in a shuffled order: one sorted histogram.
        let n = 20_000u32;
        let mut page = String::new();
        for i in 0..n {
            let k = (i * 7919) % n; // a permutation of 0..n (7919 is prime, n is not a multiple)
            for engine in 0..3 {
                page.push_str(&format!("x_bucket{{engine=\"{engine}\",le=\"{k}\"}} {k}\n"));
            }
        }
        page.push_str("x_bucket{le=\"+Inf\"} 1e9\n");
        let e = parse(&page).unwrap();
        let h = read_histogram(&e, "x", &|_| true).unwrap().unwrap();
        assert_eq!(h.buckets.len(), n as usize + 1);
        assert!(h.buckets.windows(2).all(|w| w[0].0 < w[1].0), "sorted, one per bound");
        assert_eq!(h.buckets[10], (10.0, 30.0));
        let twice = sum_histograms([&h, &h]);
        assert_eq!(twice.buckets.len(), n as usize + 1);
        assert_eq!(twice.buckets[10], (10.0, 60.0));
        assert_eq!(twice.total(), 2e9);
        // -0 and +0 are one bound.
        let e = parse("x_bucket{le=\"-0\"} 1\nx_bucket{le=\"0\"} 2\nx_bucket{le=\"+Inf\"} 3\n").unwrap();
        assert_eq!(read_histogram(&e, "x", &|_| true).unwrap().unwrap().buckets.len(), 2);
    }

    #[test]
    fn bad_le_is_reported() {
        let e = parse("x_bucket{le=\"fast\"} 1\n").unwrap();
        let err = read_histogram(&e, "x", &|_| true).unwrap().unwrap_err();
        assert!(err.contains("line 1") && err.contains("fast"), "{err}");
        let e = parse("x_bucket 1\n").unwrap();
        assert!(read_histogram(&e, "x", &|_| true).unwrap().is_err());
    }

    #[test]
    fn quantile_matches_promql() {
        // Values worked out from promql/quantile.go's algorithm by hand.
        let b = [(0.1, 10.0), (0.5, 30.0), (1.0, 40.0), (f64::INFINITY, 40.0)];
        assert_eq!(histogram_quantile(0.25, &b), Some(0.1));
        assert_eq!(histogram_quantile(0.5, &b), Some(0.1 + 0.4 * (10.0 / 20.0)));
        assert_eq!(histogram_quantile(0.95, &b), Some(0.5 + 0.5 * (8.0 / 10.0)));
        assert_eq!(histogram_quantile(0.1, &b), Some(0.1 * (4.0 / 10.0)));
        // Rank in the +Inf bucket: the highest finite bound.
        assert_eq!(histogram_quantile(0.99, &[(1.0, 1.0), (f64::INFINITY, 10.0)]), Some(1.0));
        // No +Inf bucket, no observations, out-of-range q.
        assert_eq!(histogram_quantile(0.5, &[(1.0, 3.0)]), None);
        assert_eq!(histogram_quantile(0.5, &[(1.0, 0.0), (f64::INFINITY, 0.0)]), None);
        assert_eq!(histogram_quantile(-1.0, &b), Some(f64::NEG_INFINITY));
        assert_eq!(histogram_quantile(2.0, &b), Some(f64::INFINITY));
        // Non-monotonic counts are evened out, unsorted input sorted.
        let messy = [(f64::INFINITY, 10.0), (1.0, 10.0), (0.5, 12.0)];
        assert_eq!(histogram_quantile(0.5, &messy), Some(0.5 * (6.0 / 12.0)));
        // A first bucket at or below zero.
        assert_eq!(histogram_quantile(0.1, &[(0.0, 5.0), (f64::INFINITY, 10.0)]), Some(0.0));
    }

    #[test]
    fn fleet_quantile_sums_pods_and_explains_gaps() {
        let a = Histogram {
            buckets: vec![(0.1, 10.0), (1.0, 10.0), (f64::INFINITY, 10.0)],
            series: "x",
            ..Histogram::default()
        };
        let b = Histogram {
            buckets: vec![(0.1, 0.0), (1.0, 10.0), (f64::INFINITY, 10.0)],
            series: "x",
            ..Histogram::default()
        };
        // 20 observations: 10 at <=0.1, 10 in (0.1, 1]. p75: rank 15 -> 0.1 + 0.9 * 5/10.
        let p75 = fleet_quantile(0.75, [&a, &b]).unwrap();
        assert!((p75 - 550.0).abs() < 1e-9, "{p75}");
        let idle = Histogram { buckets: vec![(0.1, 0.0), (f64::INFINITY, 0.0)], series: "x", ..Histogram::default() };
        assert!(fleet_quantile(0.5, [&idle]).unwrap_err().contains("no requests finished"));
        let no_inf = Histogram { buckets: vec![(0.1, 3.0)], series: "x", ..Histogram::default() };
        assert!(fleet_quantile(0.5, [&no_inf]).unwrap_err().contains("+Inf"));
        assert!(fleet_quantile(0.5, []).is_err());
    }

    #[test]
    fn baseline_covers_the_window_but_not_the_distant_past() {
        let at = |secs| PodSnapshot { at: Timestamp::from_secs(secs), ..PodSnapshot::default() };
        let (s0, s30, s50, s70, now) = (at(0), at(30), at(50), at(70), at(100));
        let w = std::time::Duration::from_secs(60);
        let pick = |earlier: &[&PodSnapshot]| baseline(earlier, &now, w).map(|s| s.at.as_millis() / 1000);
        assert_eq!(pick(&[&s0, &s30, &s50, &s70]), Some(30), "newest at least 60 s old");
        assert_eq!(pick(&[&s50, &s70]), Some(50), "nothing 60 s old: the oldest inside the window");
        assert_eq!(pick(&[&s70]), Some(70));
        let (far, late) = (at(0), at(200));
        assert_eq!(baseline(&[&far], &late, w).map(|s| s.at), None, "200 s ago is over twice the window");
        assert_eq!(baseline(&[], &now, w).map(|s| s.at), None);
    }

    #[test]
    fn dcgm_sidecar_series() {
        let page = "DCGM_FI_DEV_GPU_UTIL{gpu=\"0\"} 80\nDCGM_FI_DEV_GPU_UTIL{gpu=\"1\"} 40\nDCGM_FI_DEV_FB_USED{gpu=\"0\"} 30000\nDCGM_FI_DEV_FB_FREE{gpu=\"0\"} 10000\n";
        let s = snap(page, Some("a"), 0);
        assert_eq!(s.instant(Metric::GpuUtilization), Ok(60.0));
        assert_eq!(s.instant(Metric::GpuMemoryUsed), Ok(75.0));
    }
}
