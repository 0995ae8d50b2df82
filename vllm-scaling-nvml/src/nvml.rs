//! [`NvmlDevices`]: [`GpuDevices`] on the real NVML, through `nvml-wrapper` (feature `nvml`).
//!
//! `nvml-wrapper` loads `libnvidia-ml.so.1` at run time, so this builds and runs on
//! machines without a GPU: there, every call returns [`DeviceError::Unavailable`] with
//! the library's name and what to install.

use std::ffi::OsString;
use std::sync::{Mutex, OnceLock, PoisonError};

use nvml_wrapper::Nvml;
use nvml_wrapper::enum_wrappers::device::Sampling;
use nvml_wrapper::enums::device::{SampleValue, UsedGpuMemory};
use nvml_wrapper::error::NvmlError;

use crate::device::{
    DeviceError, DeviceInfo, DeviceRef, GpuDevices, GpuProcess, MemoryBytes, MigInfo, ProcessSample, UtilizationSample,
};
use crate::{NVML_INSTALL_HINT, NVML_LIBRARY};

/// NVML's `NVML_DEVICE_MIG_ENABLE`.
const MIG_ENABLED: u32 = 1;

/// The real GPUs, through NVML. Initializes NVML on first use and retries on every
/// call until it works, so an adapter built on it reports "NVML unavailable" (and its
/// rules `missing`) instead of failing to start.
///
/// ```
/// use vllm_scaling_nvml::{DeviceError, GpuDevices, NvmlDevices};
///
/// let gpus = NvmlDevices::new();
/// match gpus.devices() {
///     Ok(devices) => println!("{} GPU devices", devices.len()),
///     // On a machine without the NVIDIA driver: which library, and what to install.
///     Err(DeviceError::Unavailable { library, hint, .. }) => println!("no NVML ({library}): {hint}"),
///     Err(other) => println!("NVML failed: {other}"),
/// }
/// ```
#[derive(Debug, Default)]
pub struct NvmlDevices {
    library: Option<OsString>,
    nvml: OnceLock<Nvml>,
    init: Mutex<()>,
}

impl NvmlDevices {
    /// NVML from `libnvidia-ml.so.1`, loaded on first use.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// NVML from another library file, loaded on first use.
    #[must_use]
    pub fn with_library(path: impl Into<OsString>) -> Self {
        Self { library: Some(path.into()), ..Self::default() }
    }

    /// Loads and initializes NVML now.
    ///
    /// # Errors
    /// [`DeviceError::Unavailable`] when the library is missing or the driver is not
    /// usable.
    pub fn init(self) -> Result<Self, DeviceError> {
        self.nvml()?;
        Ok(self)
    }

    /// The library it loads.
    #[must_use]
    pub fn library(&self) -> String {
        self.library.as_ref().map_or_else(|| NVML_LIBRARY.to_owned(), |p| p.to_string_lossy().into_owned())
    }

    fn nvml(&self) -> Result<&Nvml, DeviceError> {
        if let Some(n) = self.nvml.get() {
            return Ok(n);
        }
        let _guard = self.init.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = self.nvml.get() {
            return Ok(n);
        }
        let mut builder = Nvml::builder();
        if let Some(path) = &self.library {
            builder.lib_path(path);
        }
        let nvml = builder.init().map_err(|e| unavailable(&self.library(), e))?;
        Ok(self.nvml.get_or_init(|| nvml))
    }

    fn with_handle<T>(
        &self,
        call: &'static str,
        device: DeviceRef,
        f: impl FnOnce(&nvml_wrapper::Device<'_>) -> Result<T, NvmlError>,
    ) -> Result<T, DeviceError> {
        let nvml = self.nvml()?;
        let handle = match device {
            DeviceRef::Gpu(i) => nvml.device_by_index(i),
            DeviceRef::Mig { gpu, index } => nvml.device_by_index(gpu).and_then(|p| p.mig_device_by_index(index)),
        }
        .map_err(|e| failed("nvmlDeviceGetHandleByIndex", Some(device), e))?;
        f(&handle).map_err(|e| failed(call, Some(device), e))
    }
}

/// What to do about an init failure.
fn unavailable(library: &str, e: NvmlError) -> DeviceError {
    let hint = match &e {
        NvmlError::LibloadingError(_) | NvmlError::LibraryNotFound => NVML_INSTALL_HINT.to_owned(),
        NvmlError::DriverNotLoaded => {
            "the NVIDIA kernel driver is not loaded: check `nvidia-smi` on the node".to_owned()
        }
        NvmlError::NoPermission => {
            "no permission to use the GPUs: the process needs access to /dev/nvidiactl and /dev/nvidia*".to_owned()
        }
        NvmlError::FailedToLoadSymbol(_) | NvmlError::FunctionNotFound | NvmlError::LibRmVersionMismatch => {
            "the NVIDIA driver's NVML does not match what nvml-wrapper 0.13 needs: upgrade the driver".to_owned()
        }
        _ => "NVML failed to initialize: check `nvidia-smi` on the node".to_owned(),
    };
    // NVML's error already prints its own cause ("a libloading error occurred: <dlopen
    // message>"); keeping only that text stops error chains from repeating the message.
    DeviceError::Unavailable { library: library.to_owned(), hint, source: Box::new(InitFailure(e.to_string())) }
}

/// NVML's initialization error, as text.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct InitFailure(String);

fn failed(call: &'static str, device: Option<DeviceRef>, e: NvmlError) -> DeviceError {
    match (e, device) {
        (NvmlError::NotSupported, Some(device)) => DeviceError::NotSupported { call, device },
        (e, device) => DeviceError::call(call, device, e),
    }
}

fn info(device: DeviceRef, handle: &nvml_wrapper::Device<'_>) -> Result<DeviceInfo, NvmlError> {
    Ok(DeviceInfo {
        device,
        uuid: handle.uuid()?,
        model_name: handle.name()?,
        // Optional facts: a device that cannot tell still gets its main series.
        pci_bus_id: handle.pci_info().ok().map(|p| p.bus_id),
        minor_number: handle.minor_number().ok(),
        mig: None,
    })
}

fn sample_percent(v: &SampleValue) -> f64 {
    match *v {
        SampleValue::F64(x) => x,
        SampleValue::U32(x) => f64::from(x),
        SampleValue::U64(x) => x as f64,
        SampleValue::I64(x) => x as f64,
    }
}

impl GpuDevices for NvmlDevices {
    fn devices(&self) -> Result<Vec<DeviceInfo>, DeviceError> {
        let nvml = self.nvml()?;
        let count = nvml.device_count().map_err(|e| failed("nvmlDeviceGetCount", None, e))?;
        let mut out = Vec::new();
        for i in 0..count {
            let device = DeviceRef::Gpu(i);
            let handle = nvml.device_by_index(i).map_err(|e| failed("nvmlDeviceGetHandleByIndex", Some(device), e))?;
            let gpu = info(device, &handle).map_err(|e| failed("nvmlDeviceGetUUID/Name", Some(device), e))?;
            // GPUs without MIG support answer NotSupported: that is "not in MIG mode".
            let mig_on = handle.mig_mode().is_ok_and(|m| m.current == MIG_ENABLED);
            let slots = if mig_on { handle.mig_device_count().unwrap_or(0) } else { 0 };
            let (parent_uuid, parent_model_name) = (gpu.uuid.clone(), gpu.model_name.clone());
            out.push(gpu);
            for index in 0..slots {
                let device = DeviceRef::Mig { gpu: i, index };
                // Empty slots answer NotFound: MIG devices are numbered up to the maximum.
                let Ok(mig) = handle.mig_device_by_index(index) else { continue };
                let mut m = info(device, &mig).map_err(|e| failed("nvmlDeviceGetUUID/Name", Some(device), e))?;
                m.mig = Some(MigInfo {
                    parent_uuid: parent_uuid.clone(),
                    parent_model_name: parent_model_name.clone(),
                    profile: MigInfo::profile_from_name(&m.model_name),
                    // nvml-wrapper 0.13 has no nvmlDeviceGetGpuInstanceId; processes carry it.
                    gpu_instance_id: None,
                });
                out.push(m);
            }
        }
        Ok(out)
    }

    fn memory(&self, device: DeviceRef) -> Result<MemoryBytes, DeviceError> {
        self.with_handle("nvmlDeviceGetMemoryInfo_v2", device, |h| {
            h.memory_info().map(|m| MemoryBytes { used: m.used, free: m.free, reserved: m.reserved, total: m.total })
        })
    }

    fn utilization_samples(
        &self,
        device: DeviceRef,
        after_us: Option<u64>,
    ) -> Result<Vec<UtilizationSample>, DeviceError> {
        self.with_handle("nvmlDeviceGetSamples", device, |h| match h.samples(Sampling::GpuUtilization, after_us) {
            Ok(samples) => Ok(samples
                .iter()
                .map(|s| UtilizationSample { timestamp_us: s.timestamp, percent: sample_percent(&s.value) })
                .collect()),
            // NVML answers NOT_FOUND when there is no sample newer than `after_us`.
            Err(NvmlError::NotFound) => Ok(Vec::new()),
            Err(e) => Err(e),
        })
    }

    fn processes(&self, device: DeviceRef) -> Result<Vec<GpuProcess>, DeviceError> {
        self.with_handle("nvmlDeviceGetComputeRunningProcesses", device, |h| {
            h.running_compute_processes().map(|list| {
                list.into_iter()
                    .map(|p| GpuProcess {
                        pid: p.pid,
                        used_memory_bytes: match p.used_gpu_memory {
                            UsedGpuMemory::Used(b) => Some(b),
                            UsedGpuMemory::Unavailable => None,
                        },
                        gpu_instance_id: p.gpu_instance_id,
                    })
                    .collect()
            })
        })
    }

    fn process_samples(&self, device: DeviceRef, after_us: Option<u64>) -> Result<Vec<ProcessSample>, DeviceError> {
        self.with_handle("nvmlDeviceGetProcessUtilization", device, |h| match h.process_utilization_stats(after_us) {
            Ok(samples) => Ok(samples
                .into_iter()
                .map(|s| ProcessSample {
                    pid: s.pid,
                    timestamp_us: s.timestamp,
                    sm_percent: s.sm_util,
                    mem_percent: s.mem_util,
                })
                .collect()),
            Err(NvmlError::NotFound) => Ok(Vec::new()),
            Err(e) => Err(e),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// There is no NVIDIA driver on the build machines: the error must say which library
    /// and what to install, and nothing may panic. On a GPU machine this test is moot.
    #[test]
    fn missing_library_is_a_clear_unavailable_error() {
        let gpus = NvmlDevices::with_library("/nonexistent/libnvidia-ml.so.1");
        let err = gpus.devices().unwrap_err();
        let DeviceError::Unavailable { library, hint, .. } = &err else { panic!("expected Unavailable, got {err:?}") };
        assert_eq!(library, "/nonexistent/libnvidia-ml.so.1");
        assert_eq!(hint, NVML_INSTALL_HINT);
        let chain = crate::error_chain(&err);
        assert!(chain.contains("cannot open shared object file") || chain.contains("No such file"), "{chain}");
        // Every call fails the same way, and retries (no cached failure, no panic).
        assert!(matches!(gpus.memory(DeviceRef::Gpu(0)), Err(DeviceError::Unavailable { .. })));
        assert!(NvmlDevices::with_library("/nonexistent/lib.so").init().is_err());
    }
}
