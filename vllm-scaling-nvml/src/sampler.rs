//! The [`Sampler`]: polls a [`GpuDevices`], keeps each device's utilization samples for
//! a retention period, and answers windowed averages from them.
//!
//! NVML's driver buffer holds only the last few seconds of samples, so averaging over a
//! rule's window (a minute by default) needs someone to read the buffer regularly and
//! keep what it read: that is the sampler's job. Poll it every few seconds (the exporter
//! does; [`NvmlMetrics`](crate::NvmlMetrics) polls on every read and can be polled in
//! between), then ask for the average over any window up to the retention.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use vllm_scaling_core::Timestamp;

use crate::device::{DeviceError, DeviceInfo, DeviceRef, GpuDevices, GpuProcess, MemoryBytes, ProcessSample};
use crate::error_chain;
use crate::snapshot::{DeviceSnapshot, NodeSnapshot, ProcessUsage, Unavailable, WindowedUtilization};

/// How long the sampler keeps samples unless told otherwise: the longest window a rule
/// can usefully average over.
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(600);

#[derive(Debug)]
struct History {
    info: DeviceInfo,
    samples: VecDeque<(u64, f64)>,
    last_seen_us: Option<u64>,
    /// Set when the latest utilization read failed.
    utilization_error: Option<Unavailable>,
    process_samples: VecDeque<ProcessSample>,
    last_process_seen_us: Option<u64>,
    process_samples_error: Option<Unavailable>,
    memory: Result<MemoryBytes, Unavailable>,
    processes: Result<Vec<GpuProcess>, Unavailable>,
}

/// Polls GPUs and keeps their samples; see the [module docs](self).
///
/// ```
/// use std::time::Duration;
/// use vllm_scaling_core::Timestamp;
/// use vllm_scaling_nvml::{DeviceRef, FakeGpus, Sampler};
///
/// let gpus = FakeGpus::new();
/// gpus.add_gpu(0, "NVIDIA L4", 23_034);
/// let mut sampler = Sampler::default();
/// // Samples one second apart: 20 %, then 40 %, ...; the driver keeps only a few, so poll.
/// for s in 1..=4u64 {
///     gpus.push_utilization(DeviceRef::Gpu(0), s * 1_000_000, 20.0 * s as f64);
///     sampler.poll(&gpus, Timestamp::from_secs(s)).unwrap();
/// }
/// let snapshot = sampler.snapshot(Timestamp::from_secs(4), Duration::from_secs(60));
/// let utilization = snapshot.devices[0].utilization.as_ref().unwrap();
/// assert_eq!(utilization.mean_percent, 50.0); // (20 + 40 + 60 + 80) / 4
/// assert_eq!(utilization.samples, 4);
/// ```
#[derive(Debug)]
pub struct Sampler {
    retention: Duration,
    devices: BTreeMap<DeviceRef, History>,
    last_poll: Option<Timestamp>,
}

impl Default for Sampler {
    fn default() -> Self {
        Self::new(DEFAULT_RETENTION)
    }
}

impl Sampler {
    /// A sampler that keeps samples for `retention` (windows longer than that see only
    /// `retention` worth of samples).
    #[must_use]
    pub fn new(retention: Duration) -> Self {
        Self { retention, devices: BTreeMap::new(), last_poll: None }
    }

    /// How long samples are kept.
    #[must_use]
    pub const fn retention(&self) -> Duration {
        self.retention
    }

    /// When the last successful poll happened.
    #[must_use]
    pub const fn last_poll(&self) -> Option<Timestamp> {
        self.last_poll
    }

    /// Reads every device once: memory, new utilization samples, processes, new
    /// per-process samples. Per-device failures are kept and reported by
    /// [`Sampler::snapshot`]; samples older than the retention are dropped.
    ///
    /// # Errors
    /// When the device list itself cannot be read (NVML unavailable, for one). The
    /// samples kept so far stay, and go stale.
    pub fn poll(&mut self, gpus: &dyn GpuDevices, now: Timestamp) -> Result<(), DeviceError> {
        let infos = gpus.devices()?;
        let horizon_us = now.saturating_sub(self.retention).as_millis().saturating_mul(1000);
        // Devices that are gone (a MIG reconfiguration, a GPU that fell off the bus) are dropped.
        self.devices.retain(|d, _| infos.iter().any(|i| i.device == *d));
        for info in infos {
            let device = info.device;
            let history = self.devices.entry(device).or_insert_with(|| History {
                info: info.clone(),
                samples: VecDeque::new(),
                last_seen_us: None,
                utilization_error: None,
                process_samples: VecDeque::new(),
                last_process_seen_us: None,
                process_samples_error: None,
                memory: Err(Unavailable::NotYetRead { device }),
                processes: Err(Unavailable::NotYetRead { device }),
            });
            history.info = info;
            history.memory = gpus.memory(device).map_err(|e| Unavailable::from_device(device, &e));
            history.processes = gpus.processes(device).map_err(|e| Unavailable::from_device(device, &e));

            match gpus.utilization_samples(device, history.last_seen_us) {
                Ok(mut new) => {
                    history.utilization_error = None;
                    // Oldest first, whatever order the driver hands them in.
                    new.sort_by_key(|s| s.timestamp_us);
                    for s in new {
                        // The driver's buffer is a ring: only take what is newer than what we hold.
                        if history.last_seen_us.is_some_and(|last| s.timestamp_us <= last) {
                            continue;
                        }
                        history.last_seen_us = Some(s.timestamp_us);
                        if !s.percent.is_finite() || !(0.0..=100.0).contains(&s.percent) {
                            history.utilization_error = Some(Unavailable::ReadFailed {
                                device,
                                reason: format!("NVML returned a utilization sample of {} %, outside 0–100", s.percent),
                            });
                            continue;
                        }
                        history.samples.push_back((s.timestamp_us, s.percent));
                    }
                }
                Err(e) => history.utilization_error = Some(Unavailable::from_utilization_error(device, &e)),
            }
            while history.samples.front().is_some_and(|(t, _)| *t < horizon_us) {
                history.samples.pop_front();
            }

            match gpus.process_samples(device, history.last_process_seen_us) {
                Ok(mut new) => {
                    history.process_samples_error = None;
                    new.sort_by_key(|s| s.timestamp_us);
                    // Several processes share a sample time: compare with what was held
                    // before this batch, not with the batch's own samples.
                    let held = history.last_process_seen_us;
                    for s in new {
                        if held.is_some_and(|last| s.timestamp_us <= last) {
                            continue;
                        }
                        history.last_process_seen_us = Some(s.timestamp_us);
                        history.process_samples.push_back(s);
                    }
                }
                Err(e) => history.process_samples_error = Some(Unavailable::from_device(device, &e)),
            }
            while history.process_samples.front().is_some_and(|s| s.timestamp_us < horizon_us) {
                history.process_samples.pop_front();
            }
        }
        self.last_poll = Some(now);
        Ok(())
    }

    /// What the devices look like at `now`, with utilization averaged over the samples
    /// of the last `window` (capped at the retention).
    ///
    /// A device with no sample in the window reports [`Unavailable::NoSamples`] (stale),
    /// one whose utilization NVML does not report (MIG) [`Unavailable::NotReported`]:
    /// never 0 %.
    #[must_use]
    pub fn snapshot(&self, now: Timestamp, window: Duration) -> NodeSnapshot {
        let window = window.min(self.retention);
        let from_us = now.saturating_sub(window).as_millis().saturating_mul(1000);
        let devices = self
            .devices
            .iter()
            .map(|(&device, h)| {
                let in_window: Vec<(u64, f64)> = h.samples.iter().filter(|(t, _)| *t >= from_us).copied().collect();
                let utilization = match (&h.utilization_error, in_window.as_slice()) {
                    // A device that does not report utilization says so, even if it once did.
                    (Some(e @ Unavailable::NotReported { .. }), _) => Err(e.clone()),
                    (_, []) => Err(h.utilization_error.clone().unwrap_or(Unavailable::NoSamples {
                        device,
                        window,
                        newest: h.samples.back().map(|(t, _)| Timestamp::from_millis(t / 1000)),
                    })),
                    (_, samples) => {
                        let sum: f64 = samples.iter().map(|(_, v)| v).sum();
                        Ok(WindowedUtilization {
                            mean_percent: sum / samples.len() as f64,
                            samples: samples.len(),
                            oldest: Timestamp::from_millis(samples[0].0 / 1000),
                            newest: Timestamp::from_millis(samples[samples.len() - 1].0 / 1000),
                            window,
                        })
                    }
                };
                let processes = h.processes.clone().map(|list| {
                    let sm = self.process_sm_means(h, from_us);
                    list.iter()
                        .map(|p| ProcessUsage {
                            pid: p.pid,
                            used_memory_bytes: p.used_memory_bytes,
                            gpu_instance_id: p.gpu_instance_id,
                            // No sample for a running process in a window that has samples means
                            // it was idle (NVML lists only active processes); no samples at all
                            // means NVML gives no per-process figures here.
                            sm_percent: sm.as_ref().map(|m| m.get(&p.pid).copied().unwrap_or(0.0)),
                            attribution: crate::pods::Attribution::NotLookedUp,
                        })
                        .collect()
                });
                DeviceSnapshot {
                    info: h.info.clone(),
                    memory: h.memory.clone(),
                    utilization,
                    processes,
                    process_samples_error: h.process_samples_error.clone(),
                }
            })
            .collect();
        NodeSnapshot { taken_at: now, devices }
    }

    /// Per-PID mean SM percent over the distinct sample times in the window, or `None`
    /// when the device has no per-process samples in it.
    fn process_sm_means(&self, h: &History, from_us: u64) -> Option<BTreeMap<u32, f64>> {
        if h.process_samples_error.is_some() {
            return None;
        }
        let in_window: Vec<&ProcessSample> = h.process_samples.iter().filter(|s| s.timestamp_us >= from_us).collect();
        let mut times: Vec<u64> = in_window.iter().map(|s| s.timestamp_us).collect();
        times.sort_unstable();
        times.dedup();
        if times.is_empty() {
            return None;
        }
        let mut sums: BTreeMap<u32, f64> = BTreeMap::new();
        for s in in_window {
            *sums.entry(s.pid).or_default() += f64::from(s.sm_percent);
        }
        let n = times.len() as f64;
        Some(sums.into_iter().map(|(pid, sum)| (pid, sum / n)).collect())
    }
}

impl Unavailable {
    /// Like [`Unavailable::from_device`], with the MIG case spelled out: NVML reports no
    /// utilization for MIG devices, and the way to get one is DCGM's profiling fields.
    fn from_utilization_error(device: DeviceRef, e: &DeviceError) -> Self {
        match (e, device) {
            (DeviceError::NotSupported { call, .. }, DeviceRef::Mig { .. }) => Self::NotReported {
                device,
                reason: format!(
                    "NVML reports no utilization for MIG devices ({call} is not supported); read \
                     DCGM_FI_PROF_GR_ENGINE_ACTIVE from dcgm-exporter through Prometheus for MIG"
                ),
            },
            _ => Self::from_device(device, e),
        }
    }

    /// Classifies a device error: `NotSupported` on utilization means "not reported".
    pub(crate) fn from_device(device: DeviceRef, e: &DeviceError) -> Self {
        match e {
            DeviceError::NotSupported { call, .. } => {
                Self::NotReported { device, reason: format!("NVML does not support {call} on this device") }
            }
            // NVML's message is external text: bounded like every reason.
            other => Self::ReadFailed {
                device,
                reason: vllm_scaling_core::excerpt(&error_chain(other), vllm_scaling_core::MAX_REASON_BYTES, 2)
                    .into_owned(),
            },
        }
    }
}
