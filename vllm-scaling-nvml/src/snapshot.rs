//! What a [`Sampler`](crate::Sampler) reports: each device with its memory, its
//! windowed utilization and its processes, and the per-pod view built from them.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use vllm_scaling_core::Timestamp;

use crate::device::{DeviceInfo, DeviceRef, MemoryBytes};
use crate::pods::{Attribution, PodDirectory, PodRef, ProcCgroups};

/// A device's utilization averaged over a window of NVML samples.
#[derive(Clone, Debug, PartialEq)]
pub struct WindowedUtilization {
    /// The mean of the samples, percent 0–100.
    pub mean_percent: f64,
    /// How many samples were averaged.
    pub samples: usize,
    /// The oldest sample's time.
    pub oldest: Timestamp,
    /// The newest sample's time.
    pub newest: Timestamp,
    /// The window asked for.
    pub window: Duration,
}

/// Why a device value is not available. Never read as 0.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Unavailable {
    /// NVML does not report this value for the device (utilization of a MIG device).
    #[error("{device} does not report it: {reason}")]
    NotReported {
        /// The device.
        device: DeviceRef,
        /// What NVML said.
        reason: String,
    },
    /// No sample in the window: the values are stale.
    #[error("{device} has no sample in the last {}s (newest: {})", window.as_secs(), newest.map_or_else(|| "none".to_owned(), |t| t.to_string()))]
    NoSamples {
        /// The device.
        device: DeviceRef,
        /// The window.
        window: Duration,
        /// The newest sample held, if any.
        newest: Option<Timestamp>,
    },
    /// The read failed.
    #[error("reading {device} failed: {reason}")]
    ReadFailed {
        /// The device.
        device: DeviceRef,
        /// The error chain.
        reason: String,
    },
    /// Not read yet.
    #[error("{device} has not been read yet")]
    NotYetRead {
        /// The device.
        device: DeviceRef,
    },
}

/// One GPU process with what NVML says about it and the pod it belongs to.
#[derive(Clone, Debug, PartialEq)]
pub struct ProcessUsage {
    /// The host PID.
    pub pid: u32,
    /// Device memory it holds, when NVML can tell.
    pub used_memory_bytes: Option<u64>,
    /// Its GPU instance, when MIG is on.
    pub gpu_instance_id: Option<u32>,
    /// Its mean SM utilization over the window, percent; `None` when NVML gives no
    /// per-process samples for the device.
    pub sm_percent: Option<f64>,
    /// Its pod.
    pub attribution: Attribution,
}

/// One device at one time.
#[derive(Clone, Debug, PartialEq)]
pub struct DeviceSnapshot {
    /// What it is.
    pub info: DeviceInfo,
    /// Its framebuffer memory.
    pub memory: Result<MemoryBytes, Unavailable>,
    /// Its utilization over the window.
    pub utilization: Result<WindowedUtilization, Unavailable>,
    /// Its processes.
    pub processes: Result<Vec<ProcessUsage>, Unavailable>,
    /// Why per-process samples are missing, if they are.
    pub process_samples_error: Option<Unavailable>,
}

impl DeviceSnapshot {
    /// The device's display name for messages: `GPU 0 (GPU-…)`.
    #[must_use]
    pub fn describe(&self) -> String {
        format!("{} ({})", self.info.device, self.info.uuid)
    }
}

/// Every device of the node at one time.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeSnapshot {
    /// When it was taken.
    pub taken_at: Timestamp,
    /// The devices, GPUs and MIG devices in NVML order.
    pub devices: Vec<DeviceSnapshot>,
}

/// What one pod holds on this node's GPUs.
#[derive(Clone, Debug, PartialEq)]
pub struct PodGpus {
    /// The pod.
    pub pod: PodRef,
    /// The containers seen using a GPU (names, when known).
    pub containers: BTreeSet<String>,
    /// The devices it has processes on.
    pub devices: Vec<DeviceRef>,
    /// The mean of its devices' windowed utilization, or why there is none.
    pub utilization_percent: Result<f64, String>,
    /// Its devices' memory used, `Σ used / Σ (used + free) × 100`, or why there is none.
    pub memory_used_percent: Result<f64, String>,
    /// The memory its own processes hold, when NVML gives it for every one of them.
    pub process_memory_bytes: Option<u64>,
    /// The SM utilization of its own processes, summed over processes and averaged over
    /// devices, when NVML gives per-process samples on all its devices.
    pub process_sm_percent: Option<f64>,
}

impl NodeSnapshot {
    /// Fills in every process's pod: reads `/proc/<pid>/cgroup` through `proc` and looks
    /// the ids up in `directory`.
    ///
    /// Processes listed on a GPU that has MIG devices are NVML's aggregate over those
    /// devices; they are marked [`Attribution::MigAggregate`] there and attributed on the
    /// MIG device they run on, so a pod's GPUs are its MIG devices, not their parent.
    pub fn attribute(&mut self, proc: &ProcCgroups, directory: &PodDirectory) {
        let mig_parents: Vec<u32> = self
            .devices
            .iter()
            .filter_map(|d| match d.info.device {
                DeviceRef::Mig { gpu, .. } => Some(gpu),
                DeviceRef::Gpu(_) => None,
            })
            .collect();
        for device in &mut self.devices {
            let aggregate = matches!(device.info.device, DeviceRef::Gpu(i) if mig_parents.contains(&i));
            if let Ok(processes) = &mut device.processes {
                for p in processes {
                    p.attribution =
                        if aggregate { Attribution::MigAggregate } else { proc.attribute(p.pid, directory) };
                }
            }
        }
    }

    /// The device at `device`.
    #[must_use]
    pub fn device(&self, device: DeviceRef) -> Option<&DeviceSnapshot> {
        self.devices.iter().find(|d| d.info.device == device)
    }

    /// Every pod with at least one attributed process, with its values.
    ///
    /// A pod's GPUs are the devices its processes run on. Its utilization is the mean of
    /// those devices' windowed averages, its memory the devices' used over usable: the
    /// DCGM per-GPU figures a dashboard shows next to the pod. When any of its devices
    /// lacks the value (a MIG device's utilization, a stale device), the pod's value is
    /// an error that says which device and why, never a partial figure.
    #[must_use]
    pub fn pods(&self) -> Vec<PodGpus> {
        // For each pod: its container names, and its processes by device.
        type PerPod<'a> = (BTreeSet<String>, BTreeMap<DeviceRef, Vec<&'a ProcessUsage>>);
        let mut by_pod: BTreeMap<PodRef, PerPod<'_>> = BTreeMap::new();
        for device in &self.devices {
            let Ok(processes) = &device.processes else { continue };
            for p in processes {
                let Some(c) = p.attribution.container() else { continue };
                let entry = by_pod.entry(c.pod.clone()).or_default();
                if let Some(name) = &c.container {
                    entry.0.insert(name.clone());
                }
                entry.1.entry(device.info.device).or_default().push(p);
            }
        }
        by_pod
            .into_iter()
            .map(|(pod, (containers, per_device))| {
                let devices: Vec<DeviceRef> = per_device.keys().copied().collect();
                let snaps: Vec<&DeviceSnapshot> = devices.iter().filter_map(|d| self.device(*d)).collect();
                let utilization_percent = snaps
                    .iter()
                    .map(|d| {
                        d.utilization.as_ref().map(|u| u.mean_percent).map_err(|e| format!("{}: {e}", d.describe()))
                    })
                    .collect::<Result<Vec<f64>, String>>()
                    .map(|v| v.iter().sum::<f64>() / v.len() as f64);
                let memory_used_percent = snaps
                    .iter()
                    .map(|d| d.memory.as_ref().copied().map_err(|e| format!("{}: {e}", d.describe())))
                    .collect::<Result<Vec<MemoryBytes>, String>>()
                    .and_then(|mems| {
                        let used: u128 = mems.iter().map(|m| u128::from(m.used)).sum();
                        let usable: u128 = mems.iter().map(|m| u128::from(m.used) + u128::from(m.free)).sum();
                        if usable == 0 {
                            Err("its devices report no memory".to_owned())
                        } else {
                            Ok(used as f64 / usable as f64 * 100.0)
                        }
                    });
                let all: Vec<&&ProcessUsage> = per_device.values().flatten().collect();
                let process_memory_bytes =
                    all.iter().map(|p| p.used_memory_bytes).sum::<Option<u64>>().filter(|_| !all.is_empty());
                let per_device_sm: Option<Vec<f64>> =
                    per_device.values().map(|ps| ps.iter().map(|p| p.sm_percent).sum::<Option<f64>>()).collect();
                let process_sm_percent = per_device_sm.map(|v| v.iter().sum::<f64>() / v.len() as f64);
                PodGpus {
                    pod,
                    containers,
                    devices,
                    utilization_percent,
                    memory_used_percent,
                    process_memory_bytes,
                    process_sm_percent,
                }
            })
            .collect()
    }
}
