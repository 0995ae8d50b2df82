//! [`render_dcgm`]: a [`NodeSnapshot`] in the Prometheus text format, with the names,
//! units and labels NVIDIA's dcgm-exporter uses, so dashboards and the Prometheus
//! adapter's DCGM queries work on it unchanged.
//!
//! Series (gauges), per device:
//! - `DCGM_FI_DEV_GPU_UTIL`: utilization in percent, here the mean of NVML's samples over
//!   the exporter's window. Not written for devices that do not report it (MIG) or have
//!   no sample in the window: those get `vllm_scaling_gpu_util_reported 0` instead of a
//!   made-up 0 %.
//! - `DCGM_FI_DEV_FB_USED`, `DCGM_FI_DEV_FB_FREE`, `DCGM_FI_DEV_FB_RESERVED`: framebuffer
//!   memory in MiB (DCGM's unit; NVML reports bytes).
//!
//! Labels, in dcgm-exporter's order: `gpu` (NVML index), `UUID`, `pci_bus_id`,
//! `device` (`nvidiaN`), `modelName`, for MIG devices `GPU_I_PROFILE` and `GPU_I_ID`
//! (and the parent GPU's `UUID` and `modelName`, as DCGM does), `Hostname`, then the
//! Kubernetes `container`, `namespace`, `pod` of the processes on the device. A device
//! shared by several containers gets one series per container; an idle device one with
//! empty pod labels (the 2.x/3.x dcgm-exporter shape).
//!
//! Beyond DCGM, per device and container: `vllm_scaling_gpu_process_memory_used_bytes`
//! and `vllm_scaling_gpu_process_sm_utilization_percent` (what NVML reports for the
//! container's own processes, when it reports it).

use std::collections::BTreeSet;
use std::fmt::Write as _;

use crate::pods::ContainerRef;
use crate::snapshot::{DeviceSnapshot, NodeSnapshot, ProcessUsage};

const MIB: u64 = 1024 * 1024;

/// The node-wide labels of the exporter's series.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DcgmLabels {
    /// The node's name (DCGM's `Hostname` label).
    pub hostname: String,
}

/// One `name{labels} value` family being written.
struct Family<'a> {
    out: &'a mut String,
}

impl<'a> Family<'a> {
    fn start(out: &'a mut String, name: &str, help: &str) -> Self {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        Self { out }
    }

    fn sample(&mut self, name: &str, labels: &[(&str, String)], value: &str) {
        self.out.push_str(name);
        self.out.push('{');
        for (i, (k, v)) in labels.iter().enumerate() {
            if i > 0 {
                self.out.push(',');
            }
            self.out.push_str(k);
            self.out.push_str("=\"");
            escape_into(self.out, v);
            self.out.push('"');
        }
        self.out.push_str("} ");
        self.out.push_str(value);
        self.out.push('\n');
    }
}

/// Label values escape `\`, `"` and newlines (text format 0.0.4).
fn escape_into(out: &mut String, v: &str) {
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
}

/// A float as the text format wants it: finite values in Rust's shortest round-trip form.
fn number(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 { format!("{}", v as i64) } else { format!("{v}") }
}

/// The device's identity labels, DCGM order, without the pod labels.
fn device_labels(d: &DeviceSnapshot, node: &DcgmLabels) -> Labels {
    let info = &d.info;
    let (uuid, model) = match &info.mig {
        Some(m) => (m.parent_uuid.clone(), m.parent_model_name.clone()),
        None => (info.uuid.clone(), info.model_name.clone()),
    };
    let mut labels = vec![
        ("gpu", info.device.gpu_index().to_string()),
        ("UUID", uuid),
        ("pci_bus_id", info.pci_bus_id.clone().unwrap_or_default()),
        ("device", info.minor_number.map(|n| format!("nvidia{n}")).unwrap_or_default()),
        ("modelName", model),
    ];
    if let Some(m) = &info.mig {
        // nvml-wrapper cannot ask a MIG handle its GPU instance id; its processes carry it.
        let from_processes = d.processes.as_ref().ok().and_then(|ps| ps.iter().find_map(|p| p.gpu_instance_id));
        labels.push(("GPU_I_PROFILE", m.profile.clone().unwrap_or_default()));
        labels.push(("GPU_I_ID", m.gpu_instance_id.or(from_processes).map(|i| i.to_string()).unwrap_or_default()));
    }
    labels.push(("Hostname", node.hostname.clone()));
    labels
}

/// Identity labels, DCGM order.
type Labels = Vec<(&'static str, String)>;

/// A device with its identity labels and the containers on it.
struct Row<'a> {
    device: &'a DeviceSnapshot,
    labels: Labels,
    containers: Vec<Option<ContainerRef>>,
}

/// The containers with processes on the device; one `None` when there are none.
fn containers(d: &DeviceSnapshot) -> Vec<Option<ContainerRef>> {
    let set: BTreeSet<ContainerRef> = d
        .processes
        .as_ref()
        .map(|ps| ps.iter().filter_map(|p| p.attribution.container().cloned()).collect())
        .unwrap_or_default();
    if set.is_empty() { vec![None] } else { set.into_iter().map(Some).collect() }
}

fn with_pod(mut labels: Labels, c: Option<&ContainerRef>) -> Labels {
    let (container, namespace, pod) = c.map_or_else(Default::default, |c| {
        (c.container.clone().unwrap_or_default(), c.pod.namespace.clone(), c.pod.name.clone())
    });
    labels.push(("container", container));
    labels.push(("namespace", namespace));
    labels.push(("pod", pod));
    labels
}

fn processes_of<'a>(d: &'a DeviceSnapshot, c: &'a ContainerRef) -> impl Iterator<Item = &'a ProcessUsage> + 'a {
    d.processes.iter().flatten().filter(move |p| p.attribution.container() == Some(c))
}

/// Writes the snapshot in the Prometheus text format (0.0.4) with DCGM's names and labels;
/// see the [module docs](self) for the series.
///
/// ```
/// use std::time::Duration;
/// use vllm_scaling_core::Timestamp;
/// use vllm_scaling_nvml::{render_dcgm, DcgmLabels, DeviceRef, FakeGpus, Sampler};
///
/// let gpus = FakeGpus::new();
/// gpus.add_gpu(0, "Tesla T4", 15_109);
/// gpus.push_utilization(DeviceRef::Gpu(0), 1_000_000, 42.0);
/// let mut sampler = Sampler::default();
/// sampler.poll(&gpus, Timestamp::from_secs(1)).unwrap();
/// let text = render_dcgm(&sampler.snapshot(Timestamp::from_secs(1), Duration::from_secs(60)), &DcgmLabels { hostname: "node-a".into() });
/// assert!(text.contains(r#"DCGM_FI_DEV_GPU_UTIL{gpu="0",UUID="GPU-00000000-0000-0000-0000-000000000000","#));
/// assert!(text.contains(r#"modelName="Tesla T4",Hostname="node-a",container="",namespace="",pod=""} 42"#));
/// assert!(text.contains("DCGM_FI_DEV_FB_FREE{"));
/// ```
#[must_use]
pub fn render_dcgm(snapshot: &NodeSnapshot, node: &DcgmLabels) -> String {
    let mut out = String::new();
    let rows: Vec<Row<'_>> = snapshot
        .devices
        .iter()
        .map(|d| Row { device: d, labels: device_labels(d, node), containers: containers(d) })
        .collect();

    let name = "DCGM_FI_DEV_GPU_UTIL";
    let mut f = Family::start(&mut out, name, "GPU utilization (in %).");
    for Row { device: d, labels, containers: cs } in &rows {
        if let Ok(u) = &d.utilization {
            for c in cs {
                f.sample(name, &with_pod(labels.clone(), c.as_ref()), &number(u.mean_percent));
            }
        }
    }

    type MemField = fn(&crate::device::MemoryBytes) -> u64;
    let memory: [(&str, &str, MemField); 3] = [
        ("DCGM_FI_DEV_FB_FREE", "Framebuffer memory free (in MiB).", |m| m.free),
        ("DCGM_FI_DEV_FB_USED", "Framebuffer memory used (in MiB).", |m| m.used),
        ("DCGM_FI_DEV_FB_RESERVED", "Framebuffer memory reserved (in MiB).", |m| m.reserved),
    ];
    for (name, help, field) in memory {
        let mut f = Family::start(&mut out, name, help);
        for Row { device: d, labels, containers: cs } in &rows {
            if let Ok(m) = &d.memory {
                for c in cs {
                    f.sample(name, &with_pod(labels.clone(), c.as_ref()), &(field(m) / MIB).to_string());
                }
            }
        }
    }

    let name = "vllm_scaling_gpu_util_reported";
    let mut f = Family::start(
        &mut out,
        name,
        "1 when DCGM_FI_DEV_GPU_UTIL is written for the device, 0 when NVML does not report it (MIG) or it is stale.",
    );
    for Row { device: d, labels, .. } in &rows {
        f.sample(name, labels, if d.utilization.is_ok() { "1" } else { "0" });
    }

    let name = "vllm_scaling_gpu_process_memory_used_bytes";
    let mut f = Family::start(&mut out, name, "Device memory held by the container's processes (in bytes), from NVML.");
    for Row { device: d, labels, containers: cs } in &rows {
        for c in cs.iter().flatten() {
            let used: Option<u64> = processes_of(d, c).map(|p| p.used_memory_bytes).sum();
            if let Some(used) = used {
                f.sample(name, &with_pod(labels.clone(), Some(c)), &used.to_string());
            }
        }
    }

    let name = "vllm_scaling_gpu_process_sm_utilization_percent";
    let mut f =
        Family::start(&mut out, name, "SM utilization of the container's processes over the window (in %), from NVML.");
    for Row { device: d, labels, containers: cs } in &rows {
        for c in cs.iter().flatten() {
            let sm: Option<f64> = processes_of(d, c).map(|p| p.sm_percent).sum();
            if let Some(sm) = sm {
                f.sample(name, &with_pod(labels.clone(), Some(c)), &number(sm));
            }
        }
    }
    out
}
