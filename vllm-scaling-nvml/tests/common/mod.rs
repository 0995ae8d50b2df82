//! A fake node for the tests: fake GPUs, a temp `/proc` with cgroup files of the v1
//! and v2 shapes, and temp kubelet log directories naming the pods.

#![allow(dead_code, unreachable_pub)] // Each test binary uses a different part.

use std::fs;
use std::path::PathBuf;

use tempfile::TempDir;
use vllm_scaling_core::{MetricsRequest, PodInfo, PodPhase, ResolvedRule, TargetId, parse_policy};
use vllm_scaling_nvml::{FakeGpus, NvmlConfig, NvmlMetrics, PodSource};

/// How a pod's processes' cgroup files are written.
#[derive(Clone, Copy, Debug)]
pub enum Cgroup {
    /// cgroup v1, cgroupfs driver, several hierarchies.
    V1Cgroupfs,
    /// cgroup v2, systemd driver, containerd.
    V2Systemd,
    /// cgroup v2 as seen from inside another cgroup namespace (relative path).
    V2Relative,
}

pub struct Node {
    pub dir: TempDir,
    next_pod: u32,
}

impl Node {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        for d in ["proc", "pods", "containers"] {
            fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        Self { dir, next_pod: 0 }
    }

    pub fn proc_root(&self) -> PathBuf {
        self.dir.path().join("proc")
    }

    pub fn config(&self) -> NvmlConfig {
        NvmlConfig {
            proc_root: self.proc_root(),
            pods: PodSource::KubeletLogs {
                pods_dir: self.dir.path().join("pods"),
                containers_dir: self.dir.path().join("containers"),
            },
            ..NvmlConfig::default()
        }
    }

    /// Adds pod `namespace/name` with container `container` whose processes are `pids`.
    /// Returns the pod UID.
    pub fn add_pod(&mut self, namespace: &str, name: &str, container: &str, pids: &[u32], shape: Cgroup) -> String {
        self.next_pod += 1;
        let uid = format!("{:08x}-1111-2222-3333-{:012x}", self.next_pod, self.next_pod);
        let cid = format!("{:064x}", u128::from(self.next_pod) * 0x1234_5678_9abc);
        fs::create_dir_all(self.dir.path().join(format!("pods/{namespace}_{name}_{uid}/{container}"))).unwrap();
        fs::write(self.dir.path().join(format!("containers/{name}_{namespace}_{container}-{cid}.log")), "").unwrap();
        let under = uid.replace('-', "_");
        let text = match shape {
            Cgroup::V1Cgroupfs => format!(
                "12:hugetlb:/kubepods/burstable/pod{uid}/{cid}\n4:memory:/kubepods/burstable/pod{uid}/{cid}\n1:name=systemd:/kubepods/burstable/pod{uid}/{cid}\n0::/\n"
            ),
            Cgroup::V2Systemd => format!(
                "0::/kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod{under}.slice/cri-containerd-{cid}.scope\n"
            ),
            Cgroup::V2Relative => format!("0::/../../kubepods-pod{under}.slice/cri-containerd-{cid}.scope\n"),
        };
        for pid in pids {
            self.add_process(*pid, &text);
        }
        uid
    }

    /// A process with an arbitrary cgroup file.
    pub fn add_process(&self, pid: u32, cgroup: &str) {
        let d = self.proc_root().join(pid.to_string());
        fs::create_dir_all(&d).unwrap();
        fs::write(d.join("cgroup"), cgroup).unwrap();
    }

    pub fn adapter(&self, gpus: FakeGpus) -> NvmlMetrics<FakeGpus> {
        NvmlMetrics::new(gpus, self.config())
    }
}

pub const MIB: u64 = 1024 * 1024;

pub fn rules(yaml_rules: &str) -> Vec<ResolvedRule> {
    let text = format!(
        "apiVersion: autoscaler.production-stack/v1alpha1
kind: vLLMScalingPolicy
metadata: {{name: llama}}
spec:
  scaleTargetRef: {{apiVersion: apps/v1, kind: Deployment, name: llama}}
  minReplicas: 1
  maxReplicas: 8
  scalingRules:
{yaml_rules}"
    );
    parse_policy(&text).unwrap().1.rules
}

pub fn pod(name: &str) -> PodInfo {
    PodInfo {
        name: name.into(),
        phase: PodPhase::Running,
        ready: true,
        deleting: false,
        metrics_url: None,
        metrics_url_error: None,
    }
}

pub fn request(namespace: &str, rules: Vec<ResolvedRule>, pods: &[&str]) -> MetricsRequest {
    MetricsRequest {
        target: TargetId::new(namespace, "llama"),
        scale_target_ref: None,
        rules,
        pods: pods.iter().map(|p| pod(p)).collect(),
    }
}
