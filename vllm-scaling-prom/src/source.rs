//! Per-rule source selection: the [`GetScalingMetrics`] that drivers plug in.

use async_trait::async_trait;
use vllm_scaling_core::{
    GetScalingMetrics, Metric, MetricSource, MetricsRequest, PodInfo, ResolvedRule, ScalingMetrics, Timestamp,
};

use crate::Error;
use crate::pods::PodScraper;
#[cfg(feature = "prometheus")]
use crate::prometheus::PrometheusMetrics;
use crate::reading::{RuleReading, to_scaling_metrics};

/// Reads each rule from the source it names: pods (direct scrape) or Prometheus.
///
/// `source: auto` resolves to pods when a pod scraper is configured and the request knows
/// at least one pod's metrics URL, else to Prometheus. Two exceptions: `custom` rules are
/// PromQL and always go to Prometheus, and GPU metrics go to Prometheus when it is
/// configured, because vLLM's own page carries no GPU series (dcgm-exporter runs per node).
/// In the Kubernetes controller, GPU `auto` rules are first read from the GPU exporter on
/// each pod's node (`vllm_scaling_kube::GpuExporters`) and reach this adapter only when no
/// exporter runs there. `source: nvml` is served by `vllm-scaling-nvml`, not here.
#[derive(Debug)]
pub struct VllmMetrics {
    pods: Option<PodScraper>,
    #[cfg(feature = "prometheus")]
    prometheus: Option<PrometheusMetrics>,
}

impl VllmMetrics {
    /// Reads only from pods.
    #[must_use]
    pub fn pods(scraper: PodScraper) -> Self {
        Self {
            pods: Some(scraper),
            #[cfg(feature = "prometheus")]
            prometheus: None,
        }
    }

    /// Reads from Prometheus, and from pods too when a scraper is given.
    #[cfg(feature = "prometheus")]
    #[must_use]
    pub fn prometheus(prometheus: PrometheusMetrics, pods: Option<PodScraper>) -> Self {
        Self { pods, prometheus: Some(prometheus) }
    }

    fn has_prometheus(&self) -> bool {
        #[cfg(feature = "prometheus")]
        {
            self.prometheus.is_some()
        }
        #[cfg(not(feature = "prometheus"))]
        {
            false
        }
    }

    /// The source a rule is read from for these pods.
    ///
    /// # Errors
    /// Why the rule cannot be read with what is configured.
    pub fn resolve(&self, rule: &ResolvedRule, pods: &[PodInfo]) -> Result<MetricSource, String> {
        let prometheus = self.has_prometheus();
        let scraper = self.pods.is_some();
        let no_prometheus = || {
            if cfg!(feature = "prometheus") {
                format!("rule `{}` needs Prometheus, and no Prometheus URL is configured", rule.key)
            } else {
                format!("rule `{}` needs Prometheus, and this build has no `prometheus` feature", rule.key)
            }
        };
        match rule.source {
            MetricSource::Nvml => Err(format!(
                "rule `{}` has source nvml: GPU readings come from vllm-scaling-nvml, not this adapter",
                rule.key
            )),
            MetricSource::Pods if scraper => Ok(MetricSource::Pods),
            MetricSource::Pods => {
                Err(format!("rule `{}` has source pods, and no pod scraping is configured", rule.key))
            }
            MetricSource::Prometheus if prometheus => Ok(MetricSource::Prometheus),
            MetricSource::Prometheus => Err(no_prometheus()),
            _ => {
                let pod_urls = pods.iter().any(|p| p.metrics_url.is_some());
                let gpu = matches!(rule.metric, Metric::GpuUtilization | Metric::GpuMemoryUsed);
                if rule.metric == Metric::Custom || (gpu && prometheus) {
                    return if prometheus { Ok(MetricSource::Prometheus) } else { Err(no_prometheus()) };
                }
                if scraper && (pod_urls || !prometheus) {
                    Ok(MetricSource::Pods)
                } else if prometheus {
                    Ok(MetricSource::Prometheus)
                } else {
                    Err(format!("rule `{}`: neither pods nor Prometheus is configured", rule.key))
                }
            }
        }
    }

    /// Reads every rule from its source (both sources concurrently), in rule order.
    pub async fn read(&self, request: &MetricsRequest, now: Timestamp) -> Vec<RuleReading> {
        let mut from_pods = Vec::new();
        let mut from_prometheus = Vec::new();
        let mut failed = Vec::new();
        for (i, rule) in request.rules.iter().enumerate() {
            match self.resolve(rule, &request.pods) {
                Ok(MetricSource::Pods) => from_pods.push((i, rule.clone())),
                Ok(_) => from_prometheus.push((i, rule.clone())),
                Err(why) => failed.push((i, RuleReading::failed(rule.key.clone(), rule.metric, rule.source, why))),
            }
        }
        let pods_rules: Vec<ResolvedRule> = from_pods.iter().map(|(_, r)| r.clone()).collect();
        let prom_rules: Vec<ResolvedRule> = from_prometheus.iter().map(|(_, r)| r.clone()).collect();
        let pods_fut = async {
            match (&self.pods, pods_rules.is_empty()) {
                (Some(s), false) => s.read(&pods_rules, &request.pods, now).await,
                _ => Vec::new(),
            }
        };
        let prom_fut = async {
            #[cfg(feature = "prometheus")]
            if let (Some(p), false) = (&self.prometheus, prom_rules.is_empty()) {
                return p.read(&prom_rules, &request.target, &request.pods).await;
            }
            // Without the feature no rule resolves to Prometheus.
            #[cfg(not(feature = "prometheus"))]
            let _ = &prom_rules;
            Vec::new()
        };
        let (pod_readings, prom_readings) = futures::join!(pods_fut, prom_fut);
        let mut all: Vec<(usize, RuleReading)> = failed;
        all.extend(from_pods.iter().map(|(i, _)| *i).zip(pod_readings));
        all.extend(from_prometheus.iter().map(|(i, _)| *i).zip(prom_readings));
        all.sort_by_key(|(i, _)| *i);
        all.into_iter().map(|(_, r)| r).collect()
    }
}

#[async_trait]
impl GetScalingMetrics for VllmMetrics {
    type Error = Error;

    /// Never fails as a whole: what cannot be read becomes per-rule failures.
    async fn get_scaling_metrics(&self, request: &MetricsRequest, now: Timestamp) -> Result<ScalingMetrics, Error> {
        let readings = self.read(request, now).await;
        Ok(to_scaling_metrics(&readings, &request.pods))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::PodScrapeOptions;
    use vllm_scaling_core::{PodPhase, parse_policy};

    fn rules() -> Vec<ResolvedRule> {
        let text = "apiVersion: autoscaler.production-stack/v1alpha1\nkind: vLLMScalingPolicy\nmetadata: {name: p}\nspec:\n  maxReplicas: 3\n  scalingRules:\n    - {metric: queue_length, threshold: 5}\n    - {metric: gpu_utilization, threshold: 70}\n    - {metric: custom, name: c, threshold: 1, query: 'sum(x)'}\n    - {metric: ttft, threshold: 500, source: prometheus}\n    - {metric: gpu_utilization, name: g2, threshold: 70, source: nvml}\n";
        parse_policy(text).unwrap_or_else(|e| panic!("{e}")).1.rules
    }

    fn pod(url: Option<&str>) -> PodInfo {
        PodInfo {
            name: "p".into(),
            phase: PodPhase::Running,
            ready: true,
            deleting: false,
            metrics_url: url.map(str::to_owned),
            metrics_url_error: None,
        }
    }

    #[test]
    fn pods_only() {
        let m = VllmMetrics::pods(PodScraper::new(PodScrapeOptions::default()).unwrap());
        let r = rules();
        let with_url = [pod(Some("http://127.0.0.1:9/metrics"))];
        assert_eq!(m.resolve(&r[0], &with_url), Ok(MetricSource::Pods));
        assert_eq!(m.resolve(&r[0], &[]), Ok(MetricSource::Pods));
        assert_eq!(m.resolve(&r[1], &with_url), Ok(MetricSource::Pods), "a DCGM sidecar may serve it");
        assert!(m.resolve(&r[2], &with_url).unwrap_err().contains("needs Prometheus"));
        assert!(m.resolve(&r[3], &with_url).unwrap_err().contains("needs Prometheus"));
        assert!(m.resolve(&r[4], &with_url).unwrap_err().contains("vllm-scaling-nvml"));
    }

    #[cfg(feature = "prometheus")]
    #[test]
    fn auto_prefers_pods_with_urls_and_prometheus_for_gpu_and_custom() {
        use crate::{PrometheusMetrics, PrometheusOptions};
        let prom = PrometheusMetrics::new(PrometheusOptions::new("http://127.0.0.1:9")).unwrap();
        let both = VllmMetrics::prometheus(prom.clone(), Some(PodScraper::new(PodScrapeOptions::default()).unwrap()));
        let r = rules();
        let with_url = [pod(Some("http://127.0.0.1:9/metrics"))];
        assert_eq!(both.resolve(&r[0], &with_url), Ok(MetricSource::Pods));
        assert_eq!(both.resolve(&r[0], &[pod(None)]), Ok(MetricSource::Prometheus));
        assert_eq!(both.resolve(&r[1], &with_url), Ok(MetricSource::Prometheus));
        assert_eq!(both.resolve(&r[2], &with_url), Ok(MetricSource::Prometheus));
        assert_eq!(both.resolve(&r[3], &with_url), Ok(MetricSource::Prometheus));
        let prom_only = VllmMetrics::prometheus(prom, None);
        assert_eq!(prom_only.resolve(&r[0], &with_url), Ok(MetricSource::Prometheus));
        let mut pods_rule = r[0].clone();
        pods_rule.source = MetricSource::Pods;
        assert!(prom_only.resolve(&pods_rule, &with_url).unwrap_err().contains("no pod scraping"));
    }
}
