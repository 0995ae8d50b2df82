//! GPU metrics for vllm-scaling from NVML: the `gpu_utilization` and `gpu_memory_used`
//! rules per pod, and the text a DCGM-compatible node exporter serves.
//!
//! - [`NvmlMetrics`] implements core's [`GetScalingMetrics`](vllm_scaling_core::GetScalingMetrics)
//!   for the GPU rules: utilization averaged over the rule's window from NVML's samples
//!   (not one instantaneous reading), memory used as a percent, per pod, the pod's GPUs
//!   being those its processes run on (`/proc/<pid>/cgroup` → pod UID → the kubelet's
//!   pod directories). MIG devices are enumerated; NVML reports no utilization for
//!   them, and the rule says so instead of reading 0.
//! - Everything reads GPUs through the small [`GpuDevices`] trait: [`NvmlDevices`] on
//!   the real NVML (feature `nvml`, on by default), [`FakeGpus`] on scripted values.
//! - [`render_dcgm`] writes a [`NodeSnapshot`] in the Prometheus text format with
//!   DCGM's names and labels (`DCGM_FI_DEV_GPU_UTIL`, `DCGM_FI_DEV_FB_USED`, ...), for
//!   the `vllm-autoscaler gpu-exporter` DaemonSet. The exporter itself (`Exporter`: the
//!   HTTP server, and the re-export of the node's vLLM pods' own metrics) is behind the
//!   cargo feature `exporter`.
//!
//! Without `libnvidia-ml.so.1` NVML cannot start: every read returns
//! [`DeviceError::Unavailable`] naming the library and what to install, and the
//! adapter's rules become `missing`. Nothing panics.
//!
//! # Example
//! ```
//! use std::time::Duration;
//! use vllm_scaling_core::{parse_policy, MetricsRequest, PodInfo, PodPhase, TargetId, Timestamp};
//! use vllm_scaling_nvml::{DeviceRef, FakeGpus, GpuProcess, NvmlConfig, NvmlMetrics, PodDirectory, PodRef, PodSource};
//!
//! // One GPU, 70 % busy for the last seconds, half its memory in use by pid 4242.
//! let gpus = FakeGpus::new();
//! gpus.add_gpu(0, "NVIDIA L4", 23_034);
//! for s in 1..=5u64 {
//!     gpus.push_utilization(DeviceRef::Gpu(0), s * 1_000_000, 70.0);
//! }
//! gpus.set_memory_used_mib(DeviceRef::Gpu(0), 11_517);
//! gpus.set_processes(DeviceRef::Gpu(0), vec![GpuProcess { pid: 4242, used_memory_bytes: None, gpu_instance_id: None }]);
//!
//! // pid 4242 runs in pod `vllm-0` (a temp dir stands in for /proc).
//! let uid = "6f1d9c4e-2b7a-4c11-9d3e-0a1b2c3d4e5f";
//! let proc = tempfile::tempdir()?;
//! std::fs::create_dir(proc.path().join("4242"))?;
//! std::fs::write(proc.path().join("4242/cgroup"), format!("0::/kubepods/pod{uid}/\n"))?;
//! let mut pods = PodDirectory::new();
//! pods.insert_pod(PodRef { namespace: "llm".into(), name: "vllm-0".into(), uid: uid.into() });
//! let config = NvmlConfig { proc_root: proc.path().into(), pods: PodSource::Fixed(pods), ..NvmlConfig::default() };
//! let adapter = NvmlMetrics::new(gpus, config);
//!
//! let (_, policy) = parse_policy(r#"
//! apiVersion: autoscaler.production-stack/v1alpha1
//! kind: vLLMScalingPolicy
//! metadata: {name: llama}
//! spec:
//!   scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: llama}
//!   minReplicas: 1
//!   maxReplicas: 4
//!   scalingRules:
//!     - {metric: gpu_utilization, threshold: 60, source: nvml, window: 30s}
//!     - {metric: gpu_memory_used, threshold: 90, source: nvml}
//! "#)?;
//! let pod = PodInfo { name: "vllm-0".into(), phase: PodPhase::Running, ready: true, deleting: false, metrics_url: None, metrics_url_error: None };
//! let request = MetricsRequest { target: TargetId::new("llm", "llama"), scale_target_ref: None, rules: policy.rules, pods: vec![pod] };
//! let metrics = adapter.read(&request, Timestamp::from_secs(5))?;
//! assert_eq!(metrics.pods[0].metrics["gpu_utilization"], 70.0);
//! assert_eq!(metrics.pods[0].metrics["gpu_memory_used"], 50.0);
//! assert!(metrics.failures.is_empty());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

mod clock;
mod device;
#[cfg(feature = "exporter")]
mod exporter;
mod fake;
mod metrics;
#[cfg(feature = "nvml")]
mod nvml;
mod pods;
#[cfg(feature = "exporter")]
mod reexport;
mod render;
mod sampler;
mod snapshot;

pub use clock::SystemClock;
pub use device::{
    BoxError, DeviceError, DeviceInfo, DeviceRef, GpuDevices, GpuProcess, MemoryBytes, MigInfo, ProcessSample,
    UtilizationSample,
};
#[cfg(feature = "exporter")]
pub use exporter::{Exporter, ExporterConfig, InvalidTarget, VllmTarget, VllmTargets};
pub use fake::{FakeCall, FakeFailure, FakeGpus};
pub use metrics::{Error, NvmlConfig, NvmlMetrics, PodSource, serves};
#[cfg(feature = "nvml")]
pub use nvml::NvmlDevices;
pub use pods::{
    Attribution, CgroupIds, ContainerRef, PodDirectory, PodDirectoryError, PodRef, ProcCgroups, parse_cgroup,
    parse_cgroup_path,
};
#[cfg(feature = "exporter")]
pub use reexport::{AUTOSCALING_FAMILIES, FamilyFilter, Reexport};
pub use render::{DcgmLabels, render_dcgm};
pub use sampler::{DEFAULT_RETENTION, Sampler};
pub use snapshot::{DeviceSnapshot, NodeSnapshot, PodGpus, ProcessUsage, Unavailable, WindowedUtilization};

pub(crate) use vllm_scaling_core::error_chain;

/// The library NVML is loaded from.
pub const NVML_LIBRARY: &str = "libnvidia-ml.so.1";

/// What to install when [`NVML_LIBRARY`] cannot be loaded.
pub const NVML_INSTALL_HINT: &str = "install the NVIDIA driver on the node (NVML ships with it: `libnvidia-ml.so.1`, \
     Debian/Ubuntu package `libnvidia-ml1` or `libnvidia-compute-<version>`), and in Kubernetes run the pod with the \
     NVIDIA container toolkit (`runtimeClassName: nvidia`, `NVIDIA_DRIVER_CAPABILITIES=utility`)";
