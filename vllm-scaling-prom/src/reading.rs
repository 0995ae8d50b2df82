//! What an adapter saw for each rule, before it is folded into the engine's input: the
//! values per pod and for the fleet, their source and age, and why anything is missing.
//! `vllm-autoscaler observe` prints these.

use std::collections::BTreeMap;

use serde::Serialize;
use vllm_scaling_core::{Metric, MetricSource, PodInfo, PodMetrics, ScalingMetrics};

/// One rule's observation.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct RuleReading {
    /// The rule key (the engine files values under it).
    pub key: String,
    /// The catalog metric.
    pub metric: Metric,
    /// Where the values came from: `pods` or `prometheus` (`auto` resolved).
    pub source: MetricSource,
    /// Values per pod, in the catalog's unit.
    pub per_pod: BTreeMap<String, f64>,
    /// The fleet value, in the catalog's unit (latency quantiles, custom queries).
    pub fleet: Option<f64>,
    /// How old the data behind the values is, seconds: the newest sample's age for
    /// Prometheus; for direct scrapes 0 for gauges, and the span between the two scrapes
    /// that rates and quantiles were computed from.
    pub age_secs: Option<f64>,
    /// Why the rule has no usable value (the engine then treats it as missing).
    pub failure: Option<String>,
    /// The rule's signal is undefined because the fleet is idle: a latency quantile over a
    /// window in which no request finished, with no request waiting or running now. The
    /// engine reads it as zero ([`vllm_scaling_core::ScalingMetrics::idle`]).
    pub idle: bool,
    /// Pods without a value, and why.
    pub pod_failures: BTreeMap<String, String>,
    /// What was read: the PromQL query, or the series of the pods' pages.
    pub detail: Option<String>,
}

impl RuleReading {
    /// An empty reading for a rule, to fill in.
    #[must_use]
    pub fn new(key: impl Into<String>, metric: Metric, source: MetricSource) -> Self {
        Self {
            key: key.into(),
            metric,
            source,
            per_pod: BTreeMap::new(),
            fleet: None,
            age_secs: None,
            failure: None,
            idle: false,
            pod_failures: BTreeMap::new(),
            detail: None,
        }
    }

    /// A reading that failed as a whole.
    #[must_use]
    pub fn failed(key: impl Into<String>, metric: Metric, source: MetricSource, why: impl Into<String>) -> Self {
        Self { failure: Some(why.into()), ..Self::new(key, metric, source) }
    }
}

/// Folds readings into what the engine takes.
///
/// Every pod of `pods` is listed with its phase and readiness; a pod gets a value for each
/// rule that read one for it. When `pods` is empty (Prometheus found the pods itself), the
/// pods named in the readings are listed as running and ready.
#[must_use]
pub fn to_scaling_metrics(readings: &[RuleReading], pods: &[PodInfo]) -> ScalingMetrics {
    let mut out = ScalingMetrics::default();
    if pods.is_empty() {
        let mut names: Vec<&String> = readings.iter().flat_map(|r| r.per_pod.keys()).collect();
        names.sort();
        names.dedup();
        out.pods = names.into_iter().map(PodMetrics::running).collect();
    } else {
        out.pods = pods
            .iter()
            .map(|p| PodMetrics {
                name: p.name.clone(),
                phase: p.phase,
                ready: p.ready,
                deleting: p.deleting,
                metrics: BTreeMap::new(),
            })
            .collect();
    }
    for r in readings {
        if let Some(why) = &r.failure {
            out.failures.insert(r.key.clone(), why.clone());
            continue;
        }
        if r.idle {
            out.idle.insert(r.key.clone());
            continue;
        }
        if let Some(v) = r.fleet {
            out.fleet.insert(r.key.clone(), v);
        }
        for pod in &mut out.pods {
            if let Some(&v) = r.per_pod.get(&pod.name) {
                pod.metrics.insert(r.key.clone(), v);
            }
        }
    }
    out
}

/// A one-line summary of per-pod failures, for a rule that got nothing at all.
pub(crate) fn summarize_pod_failures(what: &str, failures: &BTreeMap<String, String>) -> String {
    const SHOWN: usize = 3;
    let mut parts: Vec<String> = failures.iter().take(SHOWN).map(|(pod, why)| format!("{pod}: {why}")).collect();
    if failures.len() > SHOWN {
        parts.push(format!("and {} more", failures.len() - SHOWN));
    }
    format!("{what} ({} pods: {})", failures.len(), parts.join("; "))
}

#[cfg(test)]
mod tests {
    use super::*;
    use vllm_scaling_core::PodPhase;

    fn pod(name: &str, ready: bool) -> PodInfo {
        PodInfo {
            name: name.into(),
            phase: PodPhase::Running,
            ready,
            deleting: false,
            metrics_url: None,
            metrics_url_error: None,
        }
    }

    #[test]
    fn readings_fold_into_pods_fleet_and_failures() {
        let mut q = RuleReading::new("queue_length", Metric::QueueLength, MetricSource::Pods);
        q.per_pod.insert("a".into(), 3.0);
        q.per_pod.insert("stranger".into(), 9.0);
        let mut ttft = RuleReading::new("ttft", Metric::Ttft, MetricSource::Pods);
        ttft.fleet = Some(250.0);
        let kv = RuleReading::failed("kv_cache_usage", Metric::KvCacheUsage, MetricSource::Prometheus, "down");
        let m = to_scaling_metrics(&[q, ttft, kv], &[pod("a", true), pod("b", false)]);
        assert_eq!(m.pods.len(), 2, "pods outside the request are not invented");
        assert_eq!(m.pods[0].metrics["queue_length"], 3.0);
        assert!(m.pods[1].metrics.is_empty());
        assert!(!m.pods[1].ready);
        assert_eq!(m.fleet["ttft"], 250.0);
        assert_eq!(m.failures["kv_cache_usage"], "down");
    }

    #[test]
    fn discovered_pods_are_listed_when_the_request_has_none() {
        let mut q = RuleReading::new("queue_length", Metric::QueueLength, MetricSource::Prometheus);
        q.per_pod.insert("b".into(), 1.0);
        q.per_pod.insert("a".into(), 2.0);
        let m = to_scaling_metrics(&[q], &[]);
        assert_eq!(m.pods.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(), ["a", "b"]);
        assert!(m.pods.iter().all(|p| p.ready));
    }

    #[test]
    fn pod_failure_summary_is_bounded() {
        let f: BTreeMap<String, String> = (0..5).map(|i| (format!("p{i}"), "timed out".to_owned())).collect();
        let s = summarize_pod_failures("no pod answered", &f);
        assert!(s.starts_with("no pod answered (5 pods: p0: timed out;"), "{s}");
        assert!(s.ends_with("and 2 more)"), "{s}");
    }
}
