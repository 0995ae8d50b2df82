//! [`NvmlMetrics`]: the [`GetScalingMetrics`] adapter for `gpu_utilization` and
//! `gpu_memory_used`, per pod, from this node's GPUs.

use std::path::PathBuf;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use vllm_scaling_core::{
    GetScalingMetrics, Metric, MetricsRequest, PodMetrics, ResolvedRule, ScalingMetrics, Timestamp,
};

use crate::device::{DeviceError, GpuDevices};
use crate::pods::{PodDirectory, PodDirectoryError, ProcCgroups};
use crate::sampler::{DEFAULT_RETENTION, Sampler};
use crate::snapshot::{NodeSnapshot, PodGpus};

/// The errors of this crate's adapter.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The node's GPUs could not be read at all (NVML unavailable, for one).
    #[error("reading the node's GPUs failed")]
    Devices(#[source] DeviceError),
    /// The kubelet's pod directories could not be read.
    #[error("reading the kubelet's pod directories failed")]
    PodDirectory(#[source] PodDirectoryError),
}

/// Where pod names come from.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PodSource {
    /// The kubelet's log directories, read on every poll (see [`PodDirectory::from_kubelet_logs`]).
    KubeletLogs {
        /// `/var/log/pods`.
        pods_dir: PathBuf,
        /// `/var/log/containers`.
        containers_dir: PathBuf,
    },
    /// A fixed directory (tests, or a driver that knows its pods).
    Fixed(PodDirectory),
}

impl Default for PodSource {
    fn default() -> Self {
        Self::KubeletLogs { pods_dir: "/var/log/pods".into(), containers_dir: "/var/log/containers".into() }
    }
}

impl PodSource {
    /// The directory as of now.
    ///
    /// # Errors
    /// When the kubelet's directories cannot be listed.
    pub fn read(&self) -> Result<PodDirectory, PodDirectoryError> {
        match self {
            Self::KubeletLogs { pods_dir, containers_dir } => PodDirectory::from_kubelet_logs(pods_dir, containers_dir),
            Self::Fixed(d) => Ok(d.clone()),
        }
    }
}

/// How [`NvmlMetrics`] finds pods and how long it keeps samples.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NvmlConfig {
    /// Where `/proc/<pid>/cgroup` is read (`/proc`, or a mount of the host's).
    pub proc_root: PathBuf,
    /// Where pod names come from.
    pub pods: PodSource,
    /// How long utilization samples are kept: the longest window a rule can average over.
    pub retention: Duration,
}

impl Default for NvmlConfig {
    fn default() -> Self {
        Self { proc_root: "/proc".into(), pods: PodSource::default(), retention: DEFAULT_RETENTION }
    }
}

/// Reads `gpu_utilization` and `gpu_memory_used` for the target's pods from this node's
/// GPUs, through any [`GpuDevices`] (NVML in production, [`FakeGpus`](crate::FakeGpus)
/// in tests).
///
/// Each read polls the devices, then answers every GPU rule of the request per pod: the
/// pod's GPUs are those its processes run on; utilization is averaged over the rule's
/// `window` from NVML's samples. Rules for other metrics are left to other backends
/// (not reported as failures). Call [`NvmlMetrics::poll`] every few seconds between
/// reads so that the window is covered: NVML's own buffer holds only seconds of samples.
///
/// A pod whose GPU does not report a value (a MIG device's utilization, a stale
/// device) makes the rule fail with the pod, the device and the reason, so the engine
/// reports the rule `missing` instead of reading 0.
#[derive(Debug)]
pub struct NvmlMetrics<D> {
    gpus: D,
    config: NvmlConfig,
    sampler: Mutex<Sampler>,
}

impl<D: GpuDevices> NvmlMetrics<D> {
    /// An adapter over `gpus`.
    #[must_use]
    pub fn new(gpus: D, config: NvmlConfig) -> Self {
        let sampler = Mutex::new(Sampler::new(config.retention));
        Self { gpus, config, sampler }
    }

    /// The devices it reads.
    pub const fn devices(&self) -> &D {
        &self.gpus
    }

    fn sampler(&self) -> MutexGuard<'_, Sampler> {
        self.sampler.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reads new samples from the devices.
    ///
    /// # Errors
    /// When the device list cannot be read.
    pub fn poll(&self, now: Timestamp) -> Result<(), Error> {
        self.sampler().poll(&self.gpus, now).map_err(Error::Devices)
    }

    /// Polls, then returns the node as of `now` with utilization over `window` and every
    /// process attributed to its pod.
    ///
    /// # Errors
    /// When the devices or the pod directories cannot be read.
    pub fn snapshot(&self, now: Timestamp, window: Duration) -> Result<NodeSnapshot, Error> {
        let mut sampler = self.sampler();
        sampler.poll(&self.gpus, now).map_err(Error::Devices)?;
        let directory = self.config.pods.read().map_err(Error::PodDirectory)?;
        let mut snapshot = sampler.snapshot(now, window);
        snapshot.attribute(&ProcCgroups::new(&self.config.proc_root), &directory);
        Ok(snapshot)
    }

    /// [`GetScalingMetrics::get_scaling_metrics`], synchronously (NVML calls are short
    /// and blocking).
    ///
    /// # Errors
    /// When the devices or the pod directories cannot be read at all; every GPU rule is
    /// then missing.
    pub fn read(&self, request: &MetricsRequest, now: Timestamp) -> Result<ScalingMetrics, Error> {
        let rules: Vec<&ResolvedRule> = request.rules.iter().filter(|r| serves(r.metric)).collect();
        let mut out = ScalingMetrics {
            pods: request
                .pods
                .iter()
                .map(|p| PodMetrics {
                    name: p.name.clone(),
                    phase: p.phase,
                    ready: p.ready,
                    deleting: p.deleting,
                    metrics: Default::default(),
                })
                .collect(),
            ..ScalingMetrics::default()
        };
        if rules.is_empty() {
            return Ok(out);
        }
        if request.pods.is_empty() {
            for rule in &rules {
                out.failures.insert(
                    rule.key.clone(),
                    format!(
                        "the NVML source reads the GPUs of the target's pods, and the request for {} lists no pods",
                        request.target
                    ),
                );
            }
            return Ok(out);
        }
        let mut sampler = self.sampler();
        sampler.poll(&self.gpus, now).map_err(Error::Devices)?;
        let directory = self.config.pods.read().map_err(Error::PodDirectory)?;
        let proc = ProcCgroups::new(&self.config.proc_root);
        for rule in rules {
            let mut snapshot = sampler.snapshot(now, rule.window);
            snapshot.attribute(&proc, &directory);
            let pods = snapshot.pods();
            let namespace = request.target.namespace.as_str();
            let mut found = 0usize;
            let mut failed: Vec<String> = Vec::new();
            for pm in &mut out.pods {
                let Some(p) = pods.iter().find(|g| is_pod(g, namespace, &pm.name)) else { continue };
                found += 1;
                match value(rule.metric, p) {
                    Ok(v) => {
                        pm.metrics.insert(rule.key.clone(), v);
                    }
                    Err(why) => failed.push(format!("pod {}: {why}", pm.name)),
                }
            }
            if let Some(first) = failed.first() {
                let more =
                    if failed.len() > 1 { format!(" (and {} more pods)", failed.len() - 1) } else { String::new() };
                out.failures.insert(rule.key.clone(), bounded(&format!("{first}{more}")));
            } else if found == 0 {
                let seen: Vec<String> = pods.iter().map(|p| format!("{}/{}", p.pod.namespace, p.pod.name)).collect();
                out.failures.insert(
                    rule.key.clone(),
                    bounded(&format!(
                        "none of the {} pods of {} runs a process on this node's {} GPU devices (pods seen on them: {})",
                        request.pods.len(),
                        request.target,
                        snapshot.devices.len(),
                        if seen.is_empty() { "none".to_owned() } else { seen.join(", ") }
                    )),
                );
            }
        }
        Ok(out)
    }
}

/// Whether `g` is pod `name` of `namespace` (any namespace when it is empty, outside Kubernetes).
fn is_pod(g: &PodGpus, namespace: &str, name: &str) -> bool {
    g.pod.name == name && (namespace.is_empty() || g.pod.namespace == namespace)
}

/// Whether this adapter serves the metric.
#[must_use]
pub const fn serves(metric: Metric) -> bool {
    matches!(metric, Metric::GpuUtilization | Metric::GpuMemoryUsed)
}

fn value(metric: Metric, pod: &PodGpus) -> Result<f64, String> {
    match metric {
        Metric::GpuUtilization => pod.utilization_percent.clone(),
        Metric::GpuMemoryUsed => pod.memory_used_percent.clone(),
        other => Err(format!("the NVML source does not serve {other}")),
    }
}

#[async_trait]
impl<D: GpuDevices> GetScalingMetrics for NvmlMetrics<D> {
    type Error = Error;

    async fn get_scaling_metrics(
        &self,
        request: &MetricsRequest,
        now: Timestamp,
    ) -> Result<ScalingMetrics, Self::Error> {
        self.read(request, now)
    }
}

/// A rule failure quoting NVML's messages and pod names, cut by core's one `excerpt`.
fn bounded(text: &str) -> String {
    vllm_scaling_core::excerpt(text, vllm_scaling_core::MAX_REASON_BYTES, vllm_scaling_core::MAX_REASON_LINES)
        .into_owned()
}
