//! [`FakeGpus`]: a scripted [`GpuDevices`] for tests, demos and machines without a GPU.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use crate::device::{
    DeviceError, DeviceInfo, DeviceRef, GpuDevices, GpuProcess, MemoryBytes, MigInfo, ProcessSample, UtilizationSample,
};

/// The error a [`FakeGpus`] returns for a failure a test injected.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct FakeFailure(pub String);

/// The NVML calls a [`FakeGpus`] can be told to fail.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FakeCall {
    /// [`GpuDevices::memory`].
    Memory,
    /// [`GpuDevices::utilization_samples`].
    Utilization,
    /// [`GpuDevices::processes`].
    Processes,
    /// [`GpuDevices::process_samples`].
    ProcessSamples,
}

impl FakeCall {
    const fn nvml_name(self) -> &'static str {
        match self {
            Self::Memory => "nvmlDeviceGetMemoryInfo_v2",
            Self::Utilization => "nvmlDeviceGetSamples",
            Self::Processes => "nvmlDeviceGetComputeRunningProcesses",
            Self::ProcessSamples => "nvmlDeviceGetProcessUtilization",
        }
    }
}

#[derive(Debug, Default)]
struct FakeDevice {
    info: Option<DeviceInfo>,
    memory: MemoryBytes,
    samples: VecDeque<UtilizationSample>,
    processes: Vec<GpuProcess>,
    process_samples: VecDeque<ProcessSample>,
    not_supported: BTreeSet<FakeCall>,
    failing: BTreeMap<FakeCall, String>,
}

#[derive(Debug, Default)]
struct State {
    devices: BTreeMap<DeviceRef, FakeDevice>,
    unavailable: Option<String>,
    utilization_queries: Vec<(DeviceRef, Option<u64>)>,
}

/// A scripted node of GPUs: tests add devices, push samples and set memory and
/// processes, and the code under test reads them through [`GpuDevices`] exactly as it
/// would read NVML.
///
/// Like NVML's driver buffer, each device keeps only the newest
/// [`FakeGpus::BUFFER_CAPACITY`] samples, and a read returns the samples newer than the
/// timestamp given. MIG devices report no utilization (`NotSupported`), as NVML's do.
///
/// ```
/// use vllm_scaling_nvml::{DeviceRef, FakeGpus, GpuDevices};
///
/// let gpus = FakeGpus::new();
/// gpus.add_gpu(0, "NVIDIA H100 80GB HBM3", 80 * 1024);
/// gpus.push_utilization(DeviceRef::Gpu(0), 1_000_000, 40.0);
/// gpus.push_utilization(DeviceRef::Gpu(0), 2_000_000, 60.0);
/// let newer = gpus.utilization_samples(DeviceRef::Gpu(0), Some(1_000_000)).unwrap();
/// assert_eq!(newer.len(), 1);
/// assert_eq!(newer[0].percent, 60.0);
/// ```
#[derive(Debug, Default)]
pub struct FakeGpus {
    state: Mutex<State>,
}

const MIB: u64 = 1024 * 1024;

impl FakeGpus {
    /// How many samples of each kind a device keeps (NVML's buffer is bounded too).
    pub const BUFFER_CAPACITY: usize = 120;

    /// A node with no GPUs.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A panicking test thread must not hide the data from the others.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The UUID a fake GPU gets: `GPU-00000000-0000-0000-0000-00000000000<index>`.
    #[must_use]
    pub fn gpu_uuid(index: u32) -> String {
        format!("GPU-00000000-0000-0000-0000-{index:012}")
    }

    /// Adds GPU `index` with `total_mib` MiB of memory, all free.
    pub fn add_gpu(&self, index: u32, model_name: &str, total_mib: u64) {
        let device = DeviceRef::Gpu(index);
        let info = DeviceInfo {
            device,
            uuid: Self::gpu_uuid(index),
            model_name: model_name.to_owned(),
            pci_bus_id: Some(format!("00000000:{:02X}:00.0", 0x10 + index)),
            minor_number: Some(index),
            mig: None,
        };
        let memory = MemoryBytes { used: 0, free: total_mib * MIB, reserved: 0, total: total_mib * MIB };
        self.state().devices.insert(device, FakeDevice { info: Some(info), memory, ..FakeDevice::default() });
    }

    /// Adds MIG device `index` on GPU `gpu` (which must have been added) with `profile`
    /// (`1g.10gb`) and `total_mib` MiB. Its utilization is not supported, as on NVML.
    ///
    /// # Panics
    /// When GPU `gpu` was not added first (a mistake in the test).
    pub fn add_mig(&self, gpu: u32, index: u32, profile: &str, gpu_instance_id: Option<u32>, total_mib: u64) {
        let mut state = self.state();
        let parent = state.devices.get(&DeviceRef::Gpu(gpu)).and_then(|d| d.info.clone());
        let Some(parent) = parent else { panic!("FakeGpus::add_mig: add GPU {gpu} before its MIG devices") };
        let device = DeviceRef::Mig { gpu, index };
        let info = DeviceInfo {
            device,
            uuid: format!("MIG-00000000-0000-0000-{gpu:04}-{index:012}"),
            model_name: format!("{} MIG {profile}", parent.model_name),
            pci_bus_id: parent.pci_bus_id.clone(),
            minor_number: parent.minor_number,
            mig: Some(MigInfo {
                parent_uuid: parent.uuid.clone(),
                parent_model_name: parent.model_name.clone(),
                profile: MigInfo::profile_from_name(&format!("x MIG {profile}")),
                gpu_instance_id,
            }),
        };
        let memory = MemoryBytes { used: 0, free: total_mib * MIB, reserved: 0, total: total_mib * MIB };
        let not_supported = [FakeCall::Utilization, FakeCall::ProcessSamples].into();
        state.devices.insert(device, FakeDevice { info: Some(info), memory, not_supported, ..FakeDevice::default() });
    }

    fn with_device<T>(&self, device: DeviceRef, f: impl FnOnce(&mut FakeDevice) -> T) -> T {
        let mut state = self.state();
        let Some(d) = state.devices.get_mut(&device) else { panic!("FakeGpus: {device} was not added") };
        f(d)
    }

    /// Appends a utilization sample (the oldest is dropped past the buffer capacity).
    ///
    /// # Panics
    /// When the device was not added.
    pub fn push_utilization(&self, device: DeviceRef, timestamp_us: u64, percent: f64) {
        self.with_device(device, |d| {
            d.samples.push_back(UtilizationSample { timestamp_us, percent });
            while d.samples.len() > Self::BUFFER_CAPACITY {
                d.samples.pop_front();
            }
        });
    }

    /// Sets the memory used, in MiB; free becomes total minus used.
    ///
    /// # Panics
    /// When the device was not added.
    pub fn set_memory_used_mib(&self, device: DeviceRef, used_mib: u64) {
        self.with_device(device, |d| {
            d.memory.used = used_mib * MIB;
            d.memory.free = d.memory.total.saturating_sub(d.memory.used + d.memory.reserved);
        });
    }

    /// Sets the memory exactly.
    ///
    /// # Panics
    /// When the device was not added.
    pub fn set_memory(&self, device: DeviceRef, memory: MemoryBytes) {
        self.with_device(device, |d| d.memory = memory);
    }

    /// Sets the processes running on the device.
    ///
    /// # Panics
    /// When the device was not added.
    pub fn set_processes(&self, device: DeviceRef, processes: Vec<GpuProcess>) {
        self.with_device(device, |d| d.processes = processes);
    }

    /// Appends a per-process utilization sample.
    ///
    /// # Panics
    /// When the device was not added.
    pub fn push_process_sample(&self, device: DeviceRef, sample: ProcessSample) {
        self.with_device(device, |d| {
            d.process_samples.push_back(sample);
            while d.process_samples.len() > Self::BUFFER_CAPACITY {
                d.process_samples.pop_front();
            }
        });
    }

    /// Makes `call` fail on `device` with `why` until [`FakeGpus::heal`].
    ///
    /// # Panics
    /// When the device was not added.
    pub fn fail(&self, device: DeviceRef, call: FakeCall, why: &str) {
        self.with_device(device, |d| {
            d.failing.insert(call, why.to_owned());
        });
    }

    /// Makes `call` answer `NotSupported` on `device`.
    ///
    /// # Panics
    /// When the device was not added.
    pub fn not_supported(&self, device: DeviceRef, call: FakeCall) {
        self.with_device(device, |d| {
            d.not_supported.insert(call);
        });
    }

    /// Clears every injected failure on `device`.
    ///
    /// # Panics
    /// When the device was not added.
    pub fn heal(&self, device: DeviceRef) {
        self.with_device(device, |d| d.failing.clear());
    }

    /// Makes every call fail as if NVML could not be loaded (`None` undoes it).
    pub fn set_unavailable(&self, why: Option<&str>) {
        self.state().unavailable = why.map(str::to_owned);
    }

    /// Every `utilization_samples` call so far: the device and the `after_us` it passed.
    #[must_use]
    pub fn utilization_queries(&self) -> Vec<(DeviceRef, Option<u64>)> {
        self.state().utilization_queries.clone()
    }

    fn check(state: &State, device: DeviceRef, call: FakeCall) -> Result<&FakeDevice, DeviceError> {
        if let Some(why) = &state.unavailable {
            return Err(unavailable(why));
        }
        let Some(d) = state.devices.get(&device) else {
            return Err(DeviceError::call(call.nvml_name(), Some(device), FakeFailure("no such device".into())));
        };
        if d.not_supported.contains(&call) {
            return Err(DeviceError::NotSupported { call: call.nvml_name(), device });
        }
        if let Some(why) = d.failing.get(&call) {
            return Err(DeviceError::call(call.nvml_name(), Some(device), FakeFailure(why.clone())));
        }
        Ok(d)
    }
}

fn unavailable(why: &str) -> DeviceError {
    DeviceError::Unavailable {
        library: crate::NVML_LIBRARY.to_owned(),
        hint: crate::NVML_INSTALL_HINT.to_owned(),
        source: Box::new(FakeFailure(why.to_owned())),
    }
}

impl GpuDevices for FakeGpus {
    fn devices(&self) -> Result<Vec<DeviceInfo>, DeviceError> {
        let state = self.state();
        if let Some(why) = &state.unavailable {
            return Err(unavailable(why));
        }
        Ok(state.devices.values().filter_map(|d| d.info.clone()).collect())
    }

    fn memory(&self, device: DeviceRef) -> Result<MemoryBytes, DeviceError> {
        let state = self.state();
        Self::check(&state, device, FakeCall::Memory).map(|d| d.memory)
    }

    fn utilization_samples(
        &self,
        device: DeviceRef,
        after_us: Option<u64>,
    ) -> Result<Vec<UtilizationSample>, DeviceError> {
        let mut state = self.state();
        state.utilization_queries.push((device, after_us));
        let d = Self::check(&state, device, FakeCall::Utilization)?;
        let after = after_us.unwrap_or(0);
        Ok(d.samples.iter().filter(|s| s.timestamp_us > after).copied().collect())
    }

    fn processes(&self, device: DeviceRef) -> Result<Vec<GpuProcess>, DeviceError> {
        let state = self.state();
        Self::check(&state, device, FakeCall::Processes).map(|d| d.processes.clone())
    }

    fn process_samples(&self, device: DeviceRef, after_us: Option<u64>) -> Result<Vec<ProcessSample>, DeviceError> {
        let state = self.state();
        let d = Self::check(&state, device, FakeCall::ProcessSamples)?;
        let after = after_us.unwrap_or(0);
        Ok(d.process_samples.iter().filter(|s| s.timestamp_us > after).copied().collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffer_is_bounded_like_nvml() {
        let gpus = FakeGpus::new();
        gpus.add_gpu(0, "T4", 16_000);
        for i in 0..(FakeGpus::BUFFER_CAPACITY as u64 + 10) {
            gpus.push_utilization(DeviceRef::Gpu(0), i + 1, 1.0);
        }
        let all = gpus.utilization_samples(DeviceRef::Gpu(0), None).unwrap();
        assert_eq!(all.len(), FakeGpus::BUFFER_CAPACITY);
        assert_eq!(all[0].timestamp_us, 11, "the oldest samples were dropped");
    }

    #[test]
    fn mig_devices_do_not_report_utilization() {
        let gpus = FakeGpus::new();
        gpus.add_gpu(0, "NVIDIA A100-SXM4-40GB", 40_000);
        gpus.add_mig(0, 1, "1g.5gb", Some(7), 5_000);
        let mig = DeviceRef::Mig { gpu: 0, index: 1 };
        let err = gpus.utilization_samples(mig, None).unwrap_err();
        assert!(matches!(err, DeviceError::NotSupported { .. }), "{err}");
        let info = gpus.devices().unwrap().into_iter().find(|d| d.device == mig).unwrap();
        assert_eq!(info.model_name, "NVIDIA A100-SXM4-40GB MIG 1g.5gb");
        let mig_info = info.mig.unwrap();
        assert_eq!(mig_info.profile.as_deref(), Some("1g.5gb"));
        assert_eq!(mig_info.parent_uuid, FakeGpus::gpu_uuid(0));
        assert_eq!(gpus.memory(mig).unwrap().total, 5_000 * MIB);
    }

    #[test]
    fn injected_failures_and_unavailability() {
        let gpus = FakeGpus::new();
        gpus.add_gpu(0, "T4", 16_000);
        gpus.fail(DeviceRef::Gpu(0), FakeCall::Memory, "GPU is lost");
        let err = gpus.memory(DeviceRef::Gpu(0)).unwrap_err();
        assert_eq!(crate::error_chain(&err), "nvmlDeviceGetMemoryInfo_v2 on GPU 0 failed: GPU is lost");
        gpus.heal(DeviceRef::Gpu(0));
        assert!(gpus.memory(DeviceRef::Gpu(0)).is_ok());
        gpus.set_unavailable(Some("libnvidia-ml.so.1: cannot open shared object file"));
        let err = gpus.devices().unwrap_err();
        assert!(err.to_string().contains("libnvidia-ml.so.1"), "{err}");
    }
}
