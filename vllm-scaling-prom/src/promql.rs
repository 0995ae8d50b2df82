//! The PromQL each catalog metric maps to (pure: strings in, strings out).
//!
//! Written for real deployments:
//! - per-pod values are `sum by (pod)` (queue, running: summed over vLLM V1's data-parallel
//!   `engine` series) or `max by (pod)` (KV usage: the fullest engine);
//! - latency quantiles are `histogram_quantile(q, sum by (le) (rate(..._bucket[window])))`
//!   over the whole fleet, in milliseconds;
//! - renamed vLLM series fall back to their old names with `or`
//!   (`vllm:kv_cache_usage_perc` → `vllm:gpu_cache_usage_perc`,
//!   `vllm:inter_token_latency_seconds` → `vllm:time_per_output_token_seconds`);
//! - dcgm-exporter series scraped through a ServiceMonitor carry the workload's pod as
//!   `exported_pod`/`exported_namespace` (Prometheus keeps the exporter's own `pod`); those
//!   are relabelled to `pod` with `label_replace`, and series with a plain `pod` label are
//!   used as they are.
//!
//! ```
//! use vllm_scaling_prom::promql::{QueryScope, rule_queries};
//! # use vllm_scaling_core::parse_policy;
//! # let (_, policy) = parse_policy("apiVersion: autoscaler.production-stack/v1alpha1\nkind: vLLMScalingPolicy\nmetadata: {name: p}\nspec: {maxReplicas: 3, scalingRules: [{metric: ttft, threshold: 500, quantile: 0.9, window: 2m}]}").unwrap();
//! let scope = QueryScope { namespace: Some("llm".into()), ..QueryScope::default() };
//! let q = rule_queries(&policy.rules[0], &scope).unwrap();
//! assert_eq!(
//!     q.value,
//!     "1000 * (histogram_quantile(0.9, sum by (le) (rate(vllm:time_to_first_token_seconds_bucket{namespace=\"llm\"}[120s]))))"
//! );
//! ```

use std::fmt::Write as _;
use std::time::Duration;

use vllm_scaling_core::{Metric, ResolvedRule};

/// Which series the queries select.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct QueryScope {
    /// The namespace of the pods (`namespace`, or `exported_namespace` for DCGM).
    pub namespace: Option<String>,
    /// Only these pods (an anchored regex alternation); empty: every pod.
    pub pods: Vec<String>,
    /// Extra `label="value"` matchers for vLLM series (`model_name`, `job`...); not applied
    /// to DCGM series, whose `model_name` is a GPU model.
    pub vllm_matchers: Vec<(String, String)>,
}

/// The queries of one rule.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuleQueries {
    /// The value query, in the catalog's unit.
    pub value: String,
    /// `time() - timestamp(newest sample)`, seconds: the age of the data behind the value
    /// (`None` for custom queries, whose inputs are unknown).
    pub age: Option<String>,
    /// Whether the result is per pod (`by (pod)`) rather than one fleet value.
    pub per_pod: bool,
}

/// Escapes a string for a PromQL double-quoted literal.
#[must_use]
pub fn quote(value: &str) -> String {
    let mut out = String::with_capacity(value.len() + 2);
    out.push('"');
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Escapes RE2 metacharacters, for an exact-match alternation.
#[must_use]
pub fn regex_escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        if "\\.+*?()|[]{}^$".contains(c) {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// A Prometheus duration for a window (`60s`, `1500ms`).
#[must_use]
pub fn duration(d: Duration) -> String {
    if d.subsec_millis() == 0 { format!("{}s", d.as_secs().max(1)) } else { format!("{}ms", d.as_millis()) }
}

fn is_label_name(s: &str) -> bool {
    let mut chars = s.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

impl QueryScope {
    /// Checks the extra matchers' label names.
    ///
    /// # Errors
    /// The first label name that is not a valid Prometheus label name.
    pub fn validate(&self) -> Result<(), String> {
        for (name, _) in &self.vllm_matchers {
            if !is_label_name(name) {
                return Err(format!("`{name}` is not a Prometheus label name ([a-zA-Z_][a-zA-Z0-9_]*)"));
            }
        }
        Ok(())
    }

    fn pod_regex(&self) -> String {
        self.pods.iter().map(|p| regex_escape(p)).collect::<Vec<_>>().join("|")
    }

    /// `{namespace="..",pod=~"..",model_name=".."}` for vLLM series (empty braces omitted).
    #[must_use]
    pub fn vllm_selector(&self) -> String {
        let mut m = Vec::new();
        if let Some(ns) = &self.namespace {
            m.push(format!("namespace={}", quote(ns)));
        }
        if !self.pods.is_empty() {
            m.push(format!("pod=~{}", quote(&self.pod_regex())));
        }
        for (k, v) in &self.vllm_matchers {
            m.push(format!("{k}={}", quote(v)));
        }
        if m.is_empty() { String::new() } else { format!("{{{}}}", m.join(",")) }
    }

    /// A DCGM series with the workload's pod in `pod`, whichever way it was labelled.
    fn dcgm(&self, series: &str) -> String {
        let pods = if self.pods.is_empty() { "!=\"\"".to_owned() } else { format!("=~{}", quote(&self.pod_regex())) };
        let (mut exported, mut direct) =
            (vec![format!("exported_pod{pods}")], vec!["exported_pod=\"\"".to_owned(), format!("pod{pods}")]);
        if let Some(ns) = &self.namespace {
            exported.push(format!("exported_namespace={}", quote(ns)));
            direct.push(format!("namespace={}", quote(ns)));
        }
        format!(
            "(label_replace({series}{{{}}}, \"pod\", \"$1\", \"exported_pod\", \"(.+)\") or {series}{{{}}})",
            exported.join(","),
            direct.join(",")
        )
    }
}

/// `agg by (pod) (name{sel}) or agg by (pod) (old{sel})`.
fn per_pod_or(agg: &str, names: &[&str], sel: &str, wrap: &dyn Fn(String) -> String) -> String {
    names.iter().map(|n| format!("{agg} by (pod) ({})", wrap(format!("{n}{sel}")))).collect::<Vec<_>>().join(" or ")
}

/// The requests in flight over the scope's vLLM pods (waiting plus running), one value;
/// an empty result when either series is absent. A latency quantile with no requests
/// finished in its window is idle only if this is zero.
#[must_use]
pub fn in_flight_query(scope: &QueryScope) -> String {
    let sel = scope.vllm_selector();
    let sum = |m: Metric| m.info().sources.iter().map(|n| format!("sum({n}{sel})")).collect::<Vec<_>>().join(" or ");
    format!("({}) + ({})", sum(Metric::QueueLength), sum(Metric::RunningRequests))
}

/// The queries for a rule.
///
/// # Errors
/// A custom rule without a query.
pub fn rule_queries(rule: &ResolvedRule, scope: &QueryScope) -> Result<RuleQueries, String> {
    let sel = scope.vllm_selector();
    let window = duration(rule.window);
    let sources = rule.metric.info().sources;
    let vllm: Vec<&str> = sources.iter().copied().filter(|s| s.starts_with("vllm:")).collect();
    let ts = |s: String| format!("timestamp({s})");
    let per_pod_age = |names: &[&str]| format!("time() - ({})", per_pod_or("max", names, &sel, &ts));
    let q = match rule.metric {
        Metric::QueueLength | Metric::RunningRequests => {
            RuleQueries { value: per_pod_or("sum", &vllm, &sel, &|s| s), age: Some(per_pod_age(&vllm)), per_pod: true }
        }
        Metric::KvCacheUsage => RuleQueries {
            // vLLM exposes a 0-1 fraction; the catalog is percent.
            value: format!("100 * ({})", per_pod_or("max", &vllm, &sel, &|s| s)),
            age: Some(per_pod_age(&vllm)),
            per_pod: true,
        },
        Metric::TokensPerSecond | Metric::RequestsPerSecond => RuleQueries {
            value: per_pod_or("sum", &vllm, &sel, &|s| format!("rate({s}[{window}])")),
            age: Some(per_pod_age(&vllm)),
            per_pod: true,
        },
        Metric::Latency | Metric::Ttft | Metric::Itl | Metric::QueueTime => {
            let q = rule.quantile;
            let value = vllm
                .iter()
                .map(|n| format!("(histogram_quantile({q}, sum by (le) (rate({n}_bucket{sel}[{window}]))))"))
                .collect::<Vec<_>>()
                .join(" or ");
            let age = vllm.iter().map(|n| format!("max(timestamp({n}_count{sel}))")).collect::<Vec<_>>().join(" or ");
            RuleQueries { value: format!("1000 * {value}"), age: Some(format!("time() - ({age})")), per_pod: false }
        }
        Metric::GpuUtilization => {
            let s = scope.dcgm("DCGM_FI_DEV_GPU_UTIL");
            RuleQueries {
                value: format!("avg by (pod) ({s})"),
                age: Some(format!("time() - max by (pod) (timestamp({s}))")),
                per_pod: true,
            }
        }
        Metric::GpuMemoryUsed => {
            let used = scope.dcgm("DCGM_FI_DEV_FB_USED");
            let free = scope.dcgm("DCGM_FI_DEV_FB_FREE");
            let mut value = String::new();
            let _ = write!(value, "100 * sum by (pod) ({used}) / (sum by (pod) ({used}) + sum by (pod) ({free}))");
            RuleQueries { value, age: Some(format!("time() - max by (pod) (timestamp({used}))")), per_pod: true }
        }
        Metric::Custom => RuleQueries {
            value: rule.query.clone().filter(|q| !q.trim().is_empty()).ok_or("a custom rule needs a `query`")?,
            age: None,
            per_pod: false,
        },
        other => return Err(format!("no PromQL is known for `{other}`")),
    };
    Ok(q)
}

#[cfg(test)]
mod tests {
    use super::*;
    use vllm_scaling_core::parse_policy;

    fn rule(yaml_rule: &str) -> ResolvedRule {
        let text = format!(
            "apiVersion: autoscaler.production-stack/v1alpha1\nkind: vLLMScalingPolicy\nmetadata: {{name: p}}\nspec: {{maxReplicas: 3, scalingRules: [{yaml_rule}]}}"
        );
        parse_policy(&text).unwrap_or_else(|e| panic!("{e}")).1.rules.remove(0)
    }

    fn scope() -> QueryScope {
        QueryScope {
            namespace: Some("llm".into()),
            pods: vec!["vllm-0".into(), "vllm.1".into()],
            vllm_matchers: vec![("model_name".into(), "meta/x \"y\"".into())],
        }
    }

    #[test]
    fn selectors_escape_and_anchor() {
        assert_eq!(scope().vllm_selector(), r#"{namespace="llm",pod=~"vllm-0|vllm\\.1",model_name="meta/x \"y\""}"#);
        assert_eq!(QueryScope::default().vllm_selector(), "");
        assert_eq!(quote("a\\b\nc"), r#""a\\b\nc""#);
        assert_eq!(regex_escape("a.b*c"), r"a\.b\*c");
        assert_eq!(duration(Duration::from_secs(60)), "60s");
        assert_eq!(duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn in_flight_sums_waiting_and_running_in_scope() {
        assert_eq!(
            in_flight_query(&scope()),
            r#"(sum(vllm:num_requests_waiting{namespace="llm",pod=~"vllm-0|vllm\\.1",model_name="meta/x \"y\""})) + (sum(vllm:num_requests_running{namespace="llm",pod=~"vllm-0|vllm\\.1",model_name="meta/x \"y\""}))"#
        );
    }

    #[test]
    fn gauges_sum_over_engines_per_pod() {
        let q = rule_queries(&rule("{metric: queue_length, threshold: 5}"), &QueryScope::default()).unwrap();
        assert_eq!(q.value, "sum by (pod) (vllm:num_requests_waiting)");
        assert_eq!(q.age.as_deref(), Some("time() - (max by (pod) (timestamp(vllm:num_requests_waiting)))"));
        assert!(q.per_pod);
    }

    #[test]
    fn kv_usage_is_percent_with_the_old_name_as_fallback() {
        let q = rule_queries(&rule("{metric: kv_cache_usage, threshold: 80}"), &QueryScope::default()).unwrap();
        assert_eq!(
            q.value,
            "100 * (max by (pod) (vllm:kv_cache_usage_perc) or max by (pod) (vllm:gpu_cache_usage_perc))"
        );
    }

    #[test]
    fn itl_quantile_falls_back_to_tpot() {
        let q = rule_queries(&rule("{metric: itl, threshold: 50, window: 30s}"), &QueryScope::default()).unwrap();
        assert_eq!(
            q.value,
            "1000 * (histogram_quantile(0.95, sum by (le) (rate(vllm:inter_token_latency_seconds_bucket[30s])))) or (histogram_quantile(0.95, sum by (le) (rate(vllm:time_per_output_token_seconds_bucket[30s]))))"
        );
        assert!(!q.per_pod);
        assert!(q.age.unwrap().contains("max(timestamp(vllm:time_per_output_token_seconds_count))"));
    }

    #[test]
    fn rates_are_per_pod() {
        let q = rule_queries(&rule("{metric: tokens_per_second, threshold: 500}"), &scope()).unwrap();
        assert!(
            q.value.starts_with("sum by (pod) (rate(vllm:generation_tokens_total{namespace=\"llm\""),
            "{}",
            q.value
        );
        assert!(q.value.ends_with("}[60s]))"), "{}", q.value);
    }

    #[test]
    fn dcgm_handles_exported_pod_and_skips_vllm_matchers() {
        let q = rule_queries(&rule("{metric: gpu_utilization, threshold: 70}"), &scope()).unwrap();
        assert_eq!(
            q.value,
            r#"avg by (pod) ((label_replace(DCGM_FI_DEV_GPU_UTIL{exported_pod=~"vllm-0|vllm\\.1",exported_namespace="llm"}, "pod", "$1", "exported_pod", "(.+)") or DCGM_FI_DEV_GPU_UTIL{exported_pod="",pod=~"vllm-0|vllm\\.1",namespace="llm"}))"#
        );
        assert!(!q.value.contains("model_name"));
        let all = rule_queries(&rule("{metric: gpu_memory_used, threshold: 70}"), &QueryScope::default()).unwrap();
        assert!(all.value.contains(r#"DCGM_FI_DEV_FB_FREE{exported_pod!=""}"#), "{}", all.value);
        assert!(all.value.contains(r#"DCGM_FI_DEV_FB_USED{exported_pod="",pod!=""}"#), "{}", all.value);
    }

    #[test]
    fn custom_rules_run_the_users_query() {
        let q = rule_queries(
            &rule("{metric: custom, name: backlog, threshold: 5, query: 'sum(my_backlog)'}"),
            &QueryScope::default(),
        )
        .unwrap();
        assert_eq!(q.value, "sum(my_backlog)");
        assert_eq!(q.age, None);
    }

    #[test]
    fn bad_matcher_names_are_rejected() {
        let s = QueryScope { vllm_matchers: vec![("model-name".into(), "x".into())], ..QueryScope::default() };
        assert!(s.validate().unwrap_err().contains("model-name"));
        assert!(scope().validate().is_ok());
    }
}
