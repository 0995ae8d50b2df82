//! The small device trait the rest of the crate reads GPUs through, and the values it
//! returns. [`NvmlDevices`](crate::NvmlDevices) implements it on the real NVML;
//! [`FakeGpus`](crate::FakeGpus) implements it on scripted values for tests.
//!
//! The trait mirrors the NVML calls one to one and holds no logic: averaging, percent,
//! pod attribution and MIG handling live above it, where the fakes test them.

use std::fmt;

/// A boxed error from a device backend.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Which device a call is about: a whole GPU, or one MIG device on a GPU.
///
/// Ordered as NVML enumerates: each GPU, then its MIG devices, then the next GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DeviceRef {
    /// A physical GPU, by its NVML index.
    Gpu(u32),
    /// A MIG device: the parent GPU's NVML index and the MIG device's index on it.
    Mig {
        /// The parent GPU's NVML index.
        gpu: u32,
        /// The MIG device's index on the parent (`nvmlDeviceGetMigDeviceHandleByIndex`).
        index: u32,
    },
}

impl DeviceRef {
    /// The NVML index of the physical GPU (the parent, for a MIG device).
    #[must_use]
    pub const fn gpu_index(self) -> u32 {
        match self {
            Self::Gpu(i) | Self::Mig { gpu: i, .. } => i,
        }
    }
}

impl DeviceRef {
    const fn order_key(self) -> (u32, Option<u32>) {
        match self {
            Self::Gpu(i) => (i, None),
            Self::Mig { gpu, index } => (gpu, Some(index)),
        }
    }
}

impl Ord for DeviceRef {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.order_key().cmp(&other.order_key())
    }
}

impl PartialOrd for DeviceRef {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl fmt::Display for DeviceRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Gpu(i) => write!(f, "GPU {i}"),
            Self::Mig { gpu, index } => write!(f, "GPU {gpu} MIG device {index}"),
        }
    }
}

/// What identifies a device, read once per poll.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceInfo {
    /// Where the device is.
    pub device: DeviceRef,
    /// NVML's UUID: `GPU-…` for a GPU, `MIG-…` for a MIG device.
    pub uuid: String,
    /// The product name (`NVIDIA H100 80GB HBM3`; for a MIG device NVML appends the
    /// profile, `NVIDIA A100-SXM4-40GB MIG 1g.5gb`).
    pub model_name: String,
    /// The PCI bus id (`00000000:3B:00.0`), when known.
    pub pci_bus_id: Option<String>,
    /// The `/dev/nvidiaN` minor number, when known (DCGM's `device="nvidiaN"` label).
    pub minor_number: Option<u32>,
    /// Set for MIG devices.
    pub mig: Option<MigInfo>,
}

/// What is known about a MIG device beyond its [`DeviceInfo`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MigInfo {
    /// The parent GPU's UUID (DCGM labels MIG series with the parent's `UUID`).
    pub parent_uuid: String,
    /// The parent GPU's product name.
    pub parent_model_name: String,
    /// The GPU instance profile (`1g.5gb`), parsed from the MIG device's name.
    pub profile: Option<String>,
    /// The GPU instance id (DCGM's `GPU_I_ID`), when the backend can tell.
    pub gpu_instance_id: Option<u32>,
}

impl MigInfo {
    /// The profile in a MIG device name: the word after ` MIG ` (`... MIG 1g.5gb` →
    /// `1g.5gb`), as NVML names MIG devices.
    #[must_use]
    pub fn profile_from_name(name: &str) -> Option<String> {
        let (_, rest) = name.rsplit_once(" MIG ")?;
        let profile = rest.split_whitespace().next()?;
        Some(profile.to_owned())
    }
}

/// Framebuffer memory of a device, in bytes (NVML's `nvmlMemory_v2_t`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct MemoryBytes {
    /// Allocated.
    pub used: u64,
    /// Unallocated.
    pub free: u64,
    /// Set aside by the driver.
    pub reserved: u64,
    /// Installed.
    pub total: u64,
}

impl MemoryBytes {
    /// Memory used as a percent of what can be allocated, `used / (used + free) × 100`.
    ///
    /// This is DCGM's `FB_USED / (FB_USED + FB_FREE)`, so a `gpu_memory_used` rule reads
    /// the same value from NVML as from the Prometheus adapter's DCGM query. `None`
    /// when the device reports no memory at all.
    #[must_use]
    pub fn used_percent(&self) -> Option<f64> {
        let usable = self.used.checked_add(self.free)?;
        if usable == 0 {
            return None;
        }
        Some(self.used as f64 / usable as f64 * 100.0)
    }
}

/// One of NVML's utilization samples (`nvmlDeviceGetSamples`, `NVML_GPU_UTILIZATION_SAMPLES`):
/// the percent of the driver's sample period during which a kernel was running.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct UtilizationSample {
    /// When the driver took it, in microseconds since the Unix epoch (NVML's CPU timestamp).
    pub timestamp_us: u64,
    /// The value, percent 0–100.
    pub percent: f64,
}

/// A process with a compute context on a device (`nvmlDeviceGetComputeRunningProcesses`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuProcess {
    /// The host PID (NVML reports PIDs in the host's PID namespace).
    pub pid: u32,
    /// The device memory it holds, when NVML can tell (not in some containers).
    pub used_memory_bytes: Option<u64>,
    /// The GPU instance it runs on, when MIG is enabled.
    pub gpu_instance_id: Option<u32>,
}

/// One per-process utilization sample (`nvmlDeviceGetProcessUtilization`). NVML returns
/// samples only for processes that used the engine during the sample.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ProcessSample {
    /// The host PID.
    pub pid: u32,
    /// When it was taken, in microseconds since the Unix epoch.
    pub timestamp_us: u64,
    /// SM (compute) utilization, percent.
    pub sm_percent: u32,
    /// Framebuffer memory-controller utilization, percent.
    pub mem_percent: u32,
}

/// Why a device call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeviceError {
    /// NVML itself cannot be used: the library is missing, the driver is not loaded, or
    /// the driver is too old.
    #[error("NVML is unavailable: {library} could not be used; {hint}")]
    Unavailable {
        /// The library that was loaded (`libnvidia-ml.so.1`).
        library: String,
        /// What to install or check.
        hint: String,
        /// What NVML said.
        #[source]
        source: BoxError,
    },
    /// The device does not support the call (NVML `NOT_SUPPORTED`): MIG devices do not
    /// report utilization, for one.
    #[error("{call} is not supported on {device}")]
    NotSupported {
        /// The NVML call.
        call: &'static str,
        /// The device.
        device: DeviceRef,
    },
    /// The call failed.
    #[error("{call} on {} failed", on(.device))]
    Call {
        /// The NVML call.
        call: &'static str,
        /// The device (or `None` for calls about the whole node, like the device count).
        device: Option<DeviceRef>,
        /// What the backend said.
        #[source]
        source: BoxError,
    },
}

impl DeviceError {
    /// A failed call on a device.
    #[must_use]
    pub fn call(call: &'static str, device: Option<DeviceRef>, source: impl Into<BoxError>) -> Self {
        Self::Call { call, device, source: source.into() }
    }
}

/// "GPU 0", or "the node" for calls about no device in particular.
fn on(device: &Option<DeviceRef>) -> String {
    device.map_or_else(|| "the node".to_owned(), |d| d.to_string())
}

/// Reads GPUs. Each method is one NVML call (or a small fixed group of them), with no
/// logic, so that everything above it can be tested on [`FakeGpus`](crate::FakeGpus).
///
/// Timestamps are NVML's: microseconds since the Unix epoch.
pub trait GpuDevices: Send + Sync {
    /// Every device on the node: each GPU, and each MIG device of a GPU in MIG mode.
    ///
    /// # Errors
    /// When the device list cannot be read at all (NVML unavailable, for one).
    fn devices(&self) -> Result<Vec<DeviceInfo>, DeviceError>;

    /// The device's framebuffer memory.
    ///
    /// # Errors
    /// When NVML cannot read it.
    fn memory(&self, device: DeviceRef) -> Result<MemoryBytes, DeviceError>;

    /// The GPU utilization samples the driver has buffered that are newer than
    /// `after_us` (all of them for `None`). An empty list means no new samples.
    ///
    /// # Errors
    /// [`DeviceError::NotSupported`] for devices that do not report utilization (MIG).
    fn utilization_samples(
        &self,
        device: DeviceRef,
        after_us: Option<u64>,
    ) -> Result<Vec<UtilizationSample>, DeviceError>;

    /// The processes with a compute context on the device.
    ///
    /// # Errors
    /// When NVML cannot list them.
    fn processes(&self, device: DeviceRef) -> Result<Vec<GpuProcess>, DeviceError>;

    /// Per-process utilization samples newer than `after_us`.
    ///
    /// # Errors
    /// [`DeviceError::NotSupported`] where the device has no per-process accounting.
    fn process_samples(&self, device: DeviceRef, after_us: Option<u64>) -> Result<Vec<ProcessSample>, DeviceError>;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_percent_is_used_over_used_plus_free() {
        let m = MemoryBytes { used: 30, free: 10, reserved: 5, total: 45 };
        assert_eq!(m.used_percent(), Some(75.0));
        assert_eq!(MemoryBytes::default().used_percent(), None);
        let full = MemoryBytes { used: u64::MAX, free: 1, reserved: 0, total: u64::MAX };
        assert_eq!(full.used_percent(), None, "overflowing sizes are not a value");
    }

    #[test]
    fn mig_profile_comes_from_the_name() {
        assert_eq!(MigInfo::profile_from_name("NVIDIA A100-SXM4-40GB MIG 1g.5gb").as_deref(), Some("1g.5gb"));
        assert_eq!(MigInfo::profile_from_name("NVIDIA H100 80GB HBM3 MIG 3g.40gb").as_deref(), Some("3g.40gb"));
        assert_eq!(MigInfo::profile_from_name("NVIDIA H100 80GB HBM3"), None);
    }

    #[test]
    fn errors_name_the_device_and_call() {
        let e = DeviceError::NotSupported { call: "nvmlDeviceGetSamples", device: DeviceRef::Mig { gpu: 0, index: 2 } };
        assert_eq!(e.to_string(), "nvmlDeviceGetSamples is not supported on GPU 0 MIG device 2");
        assert_eq!(DeviceRef::Mig { gpu: 3, index: 1 }.gpu_index(), 3);
        let mut refs = vec![
            DeviceRef::Gpu(1),
            DeviceRef::Mig { gpu: 0, index: 1 },
            DeviceRef::Gpu(0),
            DeviceRef::Mig { gpu: 0, index: 0 },
        ];
        refs.sort();
        assert_eq!(
            refs,
            [
                DeviceRef::Gpu(0),
                DeviceRef::Mig { gpu: 0, index: 0 },
                DeviceRef::Mig { gpu: 0, index: 1 },
                DeviceRef::Gpu(1)
            ],
            "NVML's order: each GPU, then its MIG devices"
        );
    }
}
