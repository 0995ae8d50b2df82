//! The built-in metric catalog: what each `metric:` name in a scaling rule means.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// How a rule's observed value is compared with its threshold (HPA `target.type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[non_exhaustive]
pub enum TargetType {
    /// The threshold is per replica: the average over pods (HPA Pods metric, or an
    /// External/Object `AverageValue` target for fleet-level values). The default for
    /// per-pod metrics.
    AverageValue,
    /// The threshold is for the whole fleet (HPA Object/External `Value` target): the
    /// proposal is `ceil(observed / threshold × ready pods)`. The default for latency
    /// and other fleet-level metrics.
    Value,
}

impl fmt::Display for TargetType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::AverageValue => "AverageValue",
            Self::Value => "Value",
        })
    }
}

/// The metrics a scaling rule can name.
///
/// Per-pod metrics are read for every pod of the target and averaged like an HPA Pods
/// metric; fleet-level metrics (latency quantiles, rates) are one value for the target.
/// See [`Metric::info`] for each one's unit and source.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schemars", derive(schemars::JsonSchema))]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum Metric {
    /// Requests waiting to be scheduled (`vllm:num_requests_waiting`), per pod.
    QueueLength,
    /// Requests in the running batch (`vllm:num_requests_running`), per pod.
    RunningRequests,
    /// KV-cache blocks in use, percent 0–100 (`vllm:kv_cache_usage_perc`, formerly
    /// `vllm:gpu_cache_usage_perc`; vLLM exposes a 0–1 fraction, scaled here), per pod.
    KvCacheUsage,
    /// GPU utilization, percent 0–100 (NVML, or `DCGM_FI_DEV_GPU_UTIL`), per pod.
    GpuUtilization,
    /// GPU framebuffer used, percent of total (NVML, or DCGM `FB_USED / (FB_USED + FB_FREE)`), per pod.
    GpuMemoryUsed,
    /// End-to-end request latency at the rule's quantile, milliseconds
    /// (`vllm:e2e_request_latency_seconds`), fleet-level.
    Latency,
    /// Time to first token at the rule's quantile, milliseconds
    /// (`vllm:time_to_first_token_seconds`), fleet-level.
    Ttft,
    /// Inter-token latency at the rule's quantile, milliseconds
    /// (`vllm:inter_token_latency_seconds`, formerly `vllm:time_per_output_token_seconds`), fleet-level.
    Itl,
    /// Time spent waiting in the queue at the rule's quantile, milliseconds
    /// (`vllm:request_queue_time_seconds`), fleet-level.
    QueueTime,
    /// Generated tokens per second (`rate(vllm:generation_tokens_total)`), per pod.
    TokensPerSecond,
    /// Finished requests per second (`rate(vllm:request_success_total)`), per pod.
    RequestsPerSecond,
    /// A user-supplied PromQL query (`query:`), fleet-level unless the query keeps a `pod` label.
    Custom,
}

/// What the catalog says about one metric.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricInfo {
    /// The name used in policies.
    pub name: &'static str,
    /// The unit of observed values and thresholds.
    pub unit: &'static str,
    /// What the value means, in a sentence.
    pub meaning: &'static str,
    /// The target type a rule gets when it names none.
    pub default_target_type: TargetType,
    /// Whether the metric is read per pod (true) or once for the fleet (false).
    pub per_pod: bool,
    /// Whether the rule's `quantile` applies (latency histograms).
    pub quantile: bool,
    /// The exporter series it comes from, newest name first.
    pub sources: &'static [&'static str],
}

impl Metric {
    /// Every metric, in catalog order.
    pub const ALL: [Self; 12] = [
        Self::QueueLength,
        Self::RunningRequests,
        Self::KvCacheUsage,
        Self::GpuUtilization,
        Self::GpuMemoryUsed,
        Self::Latency,
        Self::Ttft,
        Self::Itl,
        Self::QueueTime,
        Self::TokensPerSecond,
        Self::RequestsPerSecond,
        Self::Custom,
    ];

    /// The catalog entry for this metric.
    #[must_use]
    pub const fn info(self) -> MetricInfo {
        use TargetType::{AverageValue, Value};
        let (name, unit, meaning, default_target_type, per_pod, quantile, sources): (
            _,
            _,
            _,
            _,
            _,
            _,
            &'static [&'static str],
        ) = match self {
            Self::QueueLength => (
                "queue_length",
                "requests",
                "requests waiting to be scheduled, per replica",
                AverageValue,
                true,
                false,
                &["vllm:num_requests_waiting"],
            ),
            Self::RunningRequests => (
                "running_requests",
                "requests",
                "requests in the running batch, per replica",
                AverageValue,
                true,
                false,
                &["vllm:num_requests_running"],
            ),
            Self::KvCacheUsage => (
                "kv_cache_usage",
                "percent",
                "KV-cache blocks in use, 0-100, per replica",
                AverageValue,
                true,
                false,
                &["vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc"],
            ),
            Self::GpuUtilization => (
                "gpu_utilization",
                "percent",
                "GPU busy time over the sample window, 0-100, per replica",
                AverageValue,
                true,
                false,
                &["nvml:utilization.gpu", "DCGM_FI_DEV_GPU_UTIL"],
            ),
            Self::GpuMemoryUsed => (
                "gpu_memory_used",
                "percent",
                "GPU framebuffer in use, percent of total, per replica",
                AverageValue,
                true,
                false,
                &["nvml:memory.used", "DCGM_FI_DEV_FB_USED", "DCGM_FI_DEV_FB_FREE"],
            ),
            Self::Latency => (
                "latency",
                "milliseconds",
                "end-to-end request latency at the rule's quantile, for the fleet",
                Value,
                false,
                true,
                &["vllm:e2e_request_latency_seconds"],
            ),
            Self::Ttft => (
                "ttft",
                "milliseconds",
                "time to first token at the rule's quantile, for the fleet",
                Value,
                false,
                true,
                &["vllm:time_to_first_token_seconds"],
            ),
            Self::Itl => (
                "itl",
                "milliseconds",
                "inter-token latency at the rule's quantile, for the fleet",
                Value,
                false,
                true,
                &["vllm:inter_token_latency_seconds", "vllm:time_per_output_token_seconds"],
            ),
            Self::QueueTime => (
                "queue_time",
                "milliseconds",
                "time requests spent waiting at the rule's quantile, for the fleet",
                Value,
                false,
                true,
                &["vllm:request_queue_time_seconds"],
            ),
            Self::TokensPerSecond => (
                "tokens_per_second",
                "tokens/s",
                "generated tokens per second, per replica",
                AverageValue,
                true,
                false,
                &["vllm:generation_tokens_total"],
            ),
            Self::RequestsPerSecond => (
                "requests_per_second",
                "requests/s",
                "finished requests per second, per replica",
                AverageValue,
                true,
                false,
                &["vllm:request_success_total"],
            ),
            Self::Custom => ("custom", "query units", "the value of the rule's PromQL query", Value, false, false, &[]),
        };
        MetricInfo { name, unit, meaning, default_target_type, per_pod, quantile, sources }
    }

    /// The name used in policies (`queue_length`, ...).
    #[must_use]
    pub const fn name(self) -> &'static str {
        self.info().name
    }

    /// The names of every metric, for error messages.
    #[must_use]
    pub fn known_names() -> String {
        Self::ALL.iter().map(|m| m.name()).collect::<Vec<_>>().join(", ")
    }
}

impl fmt::Display for Metric {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The error for a metric name that is not in the catalog.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown metric `{name}`; known metrics: {}", Metric::known_names())]
pub struct UnknownMetric {
    /// The name that was given.
    pub name: String,
}

impl FromStr for Metric {
    type Err = UnknownMetric;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|m| m.name() == s).ok_or_else(|| UnknownMetric { name: s.to_owned() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_serde_and_from_str() {
        for m in Metric::ALL {
            let json = serde_json::to_string(&m).unwrap();
            assert_eq!(json, format!("\"{}\"", m.name()));
            assert_eq!(m.name().parse::<Metric>().unwrap(), m);
        }
        let err = "queue_len".parse::<Metric>().unwrap_err();
        assert!(err.to_string().contains("queue_length"), "{err}");
    }

    #[test]
    fn latency_metrics_are_fleet_level_value_targets() {
        for m in [Metric::Latency, Metric::Ttft, Metric::Itl, Metric::QueueTime] {
            assert!(!m.info().per_pod);
            assert!(m.info().quantile);
            assert_eq!(m.info().default_target_type, TargetType::Value);
        }
        assert_eq!(Metric::QueueLength.info().default_target_type, TargetType::AverageValue);
    }
}
