//! What the simulator can answer for a user's `vLLMScalingPolicy`: every catalog metric
//! is modelled except `custom` PromQL, of which only the router's arrival rate is
//! answered. A policy is run unchanged; a rule the simulator cannot answer is reported
//! before the run instead of silently reading as missing.

use crate::metric::Metric;
use crate::policy::ResolvedPolicy;

use super::observe::arrival_rate_window;

/// A rule the simulator cannot answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnmodelledRule {
    /// Its position in `spec.scalingRules`.
    pub index: usize,
    /// Its key (name, else metric).
    pub key: String,
    /// Why, and what would be answered instead.
    pub reason: String,
}

impl std::fmt::Display for UnmodelledRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "spec.scalingRules[{}] (`{}`): {}", self.index, self.key, self.reason)
    }
}

/// How each catalog metric is modelled, for documentation and `--help`.
pub const SIMULATED_METRICS: [(&str, &str); 12] = [
    ("queue_length", "waiting requests of each replica, at the scrape"),
    ("running_requests", "requests in each replica's running batch, at the scrape"),
    ("kv_cache_usage", "KV tokens in use / the profile's kvCacheTokens, at the scrape"),
    ("gpu_utilization", "share of the last scrape interval a step was running (NVML's busy-time definition)"),
    (
        "gpu_memory_used",
        "90 % on every serving replica whatever the load: vLLM pre-allocates weights and the KV pool (--gpu-memory-utilization 0.9), so NVML's framebuffer use does not follow the load",
    ),
    ("latency", "histogram_quantile over vllm:e2e_request_latency_seconds buckets"),
    ("ttft", "histogram_quantile over vllm:time_to_first_token_seconds buckets"),
    ("itl", "histogram_quantile over vllm:inter_token_latency_seconds buckets"),
    ("queue_time", "histogram_quantile over vllm:request_queue_time_seconds buckets"),
    ("tokens_per_second", "rate of vllm:generation_tokens_total per pod over the rule's window"),
    ("requests_per_second", "rate of vllm:request_success_total per pod over the rule's window"),
    (
        "custom",
        "only a query over the router's counter, rate(vllm:num_incoming_requests_total[W]) (arrivals per second); any other PromQL is not answered",
    ),
];

/// The rules of `policy` the simulator cannot answer (empty: it runs as written).
///
/// ```
/// use vllm_scaling_core::parse_policy;
/// use vllm_scaling_core::sim::unmodelled_rules;
///
/// let (_, ok) = parse_policy("maxReplicas: 9\nscalingRules:\n- {metric: gpu_utilization, threshold: 75}\n- {metric: custom, query: 'sum(rate(vllm:num_incoming_requests_total[1m]))', threshold: 5}\n").unwrap();
/// assert!(unmodelled_rules(&ok).is_empty());
/// let (_, bad) = parse_policy("maxReplicas: 9\nscalingRules: [{metric: custom, name: q, query: 'sum(up)', threshold: 5}]").unwrap();
/// assert!(unmodelled_rules(&bad)[0].to_string().contains("spec.scalingRules[0] (`q`)"));
/// ```
#[must_use]
pub fn unmodelled_rules(policy: &ResolvedPolicy) -> Vec<UnmodelledRule> {
    policy
        .rules
        .iter()
        .enumerate()
        .filter(|(_, r)| r.metric == Metric::Custom)
        .filter_map(|(index, rule)| {
            let query = rule.query.as_deref().unwrap_or_default();
            arrival_rate_window(query, rule.window.as_secs_f64()).is_none().then(|| UnmodelledRule {
                index,
                key: rule.key.clone(),
                reason: format!(
                    "the simulator cannot answer the PromQL `{query}`: it answers only the router's arrival rate, a `rate(vllm:num_incoming_requests_total[W])` query"
                ),
            })
        })
        .collect()
}
