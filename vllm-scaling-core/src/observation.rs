//! What the engine is fed: the target's scale and the metrics gathered for it.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// The target's `/scale` subresource, as read at the start of an evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentScale {
    /// `scale.spec.replicas`: what the HPA calls the current replica count.
    pub replicas: i32,
    /// `scale.status.replicas`: the observed count, used by fleet-level `AverageValue`
    /// rules as the HPA does for External metrics. `None` means "same as `replicas`".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_replicas: Option<i32>,
}

impl CurrentScale {
    /// A scale whose spec and status agree.
    #[must_use]
    pub const fn new(replicas: i32) -> Self {
        Self { replicas, status_replicas: None }
    }

    /// `status_replicas`, or `replicas` when unset.
    #[must_use]
    pub fn status_replicas(&self) -> i32 {
        self.status_replicas.unwrap_or(self.replicas)
    }
}

/// A pod's lifecycle phase, as Kubernetes reports it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum PodPhase {
    /// Scheduled or starting: counts as not ready, like the HPA.
    Pending,
    /// Running.
    #[default]
    Running,
    /// Finished successfully.
    Succeeded,
    /// Failed: ignored entirely.
    Failed,
    /// Unknown.
    Unknown,
}

/// One pod of the target, with the metric values read for it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PodMetrics {
    /// The pod's name.
    pub name: String,
    /// Its phase (default `Running`).
    #[serde(default)]
    pub phase: PodPhase,
    /// Whether its `Ready` condition is true (default true). Only fleet-level `Value`
    /// rules look at it (they count Running-and-Ready pods), as the HPA does.
    #[serde(default = "yes")]
    pub ready: bool,
    /// Whether it is being deleted (`deletionTimestamp` set): such pods are ignored.
    #[serde(default)]
    pub deleting: bool,
    /// Values by rule key (the metric name, or the rule's `name`). A rule whose key is
    /// absent treats the pod as missing.
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
}

const fn yes() -> bool {
    true
}

impl PodMetrics {
    /// A running, ready pod with no values yet.
    #[must_use]
    pub fn running(name: impl Into<String>) -> Self {
        Self { name: name.into(), ready: true, ..Self::default() }
    }

    /// Adds a value (builder style).
    #[must_use]
    pub fn with(mut self, key: impl Into<String>, value: f64) -> Self {
        self.metrics.insert(key.into(), value);
        self
    }
}

/// Everything a metrics backend returned for one target at one time.
///
/// Missing data is data: a rule with no value at all is reported as `missing` and can
/// never cause a scale-down.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ScalingMetrics {
    /// The target's pods, with per-pod values.
    #[serde(default)]
    pub pods: Vec<PodMetrics>,
    /// Fleet-level values by rule key (latency quantiles, custom queries). For a per-pod
    /// metric a fleet value is a total over the fleet, treated like an HPA External metric.
    /// Given both for one key, a per-pod metric uses the pods' values and a fleet-level
    /// metric (latency quantiles, custom queries) the fleet value.
    #[serde(default)]
    pub fleet: BTreeMap<String, f64>,
    /// Rules the backend could not serve, by rule key, with the reason (unreachable,
    /// stale, empty result...). A failure makes the rule `missing` even if some values
    /// arrived.
    #[serde(default)]
    pub failures: BTreeMap<String, String>,
    /// Rules whose signal has no value because the fleet is idle: nothing was served in
    /// the rule's window and no request is waiting or running. A latency quantile of an
    /// idle fleet is undefined (PromQL's `histogram_quantile` gives NaN) but says that
    /// there is no latency pressure, so the engine reads such a rule as observing zero
    /// (it proposes no replicas and lets the other rules, or `minReplicas`, decide),
    /// where a rule without data for any other reason is `missing` and holds the fleet.
    /// Backends must only report a rule idle when they saw the fleet's in-flight
    /// requests at zero; a failure for the same key wins.
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub idle: BTreeSet<String>,
}

impl ScalingMetrics {
    /// Metrics where every given rule failed for the same reason.
    #[must_use]
    pub fn all_failed<'a>(keys: impl IntoIterator<Item = &'a str>, reason: &str) -> Self {
        Self { failures: keys.into_iter().map(|k| (k.to_owned(), reason.to_owned())).collect(), ..Self::default() }
    }

    /// Merges another backend's results into this one: pods are matched by name, and a
    /// fleet value, failure or idle mark from `other` replaces this one's for the same key.
    pub fn merge(&mut self, other: Self) {
        for pod in other.pods {
            match self.pods.iter_mut().find(|p| p.name == pod.name) {
                Some(mine) => mine.metrics.extend(pod.metrics),
                None => self.pods.push(pod),
            }
        }
        for key in other.failures.keys().chain(other.fleet.keys()) {
            self.idle.remove(key);
        }
        self.fleet.extend(other.fleet);
        for key in &other.idle {
            self.failures.remove(key);
            self.fleet.remove(key);
        }
        self.failures.extend(other.failures);
        self.idle.extend(other.idle);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_matches_pods_by_name() {
        let mut a =
            ScalingMetrics { pods: vec![PodMetrics::running("p0").with("queue_length", 1.0)], ..Default::default() };
        let b = ScalingMetrics {
            pods: vec![PodMetrics::running("p0").with("gpu_utilization", 50.0), PodMetrics::running("p1")],
            failures: [("latency".to_owned(), "down".to_owned())].into(),
            ..Default::default()
        };
        a.merge(b);
        assert_eq!(a.pods.len(), 2);
        assert_eq!(a.pods[0].metrics.len(), 2);
        assert_eq!(a.failures["latency"], "down");
        // An idle reading replaces a failure for the same key, and a failure an idle one.
        a.merge(ScalingMetrics { idle: ["latency".to_owned()].into(), ..Default::default() });
        assert!(a.idle.contains("latency") && !a.failures.contains_key("latency"));
        a.merge(ScalingMetrics { failures: [("latency".to_owned(), "down".to_owned())].into(), ..Default::default() });
        assert!(!a.idle.contains("latency") && a.failures.contains_key("latency"));
    }
}
