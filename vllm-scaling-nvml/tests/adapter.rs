//! The `NvmlMetrics` adapter on fake GPUs: windowed averaging, memory percent,
//! process-to-pod mapping through cgroup v1/v2 files, MIG, and the error paths.

mod common;

use std::time::Duration;

use common::{Cgroup, MIB, Node, request, rules};
use vllm_scaling_core::{
    Engine, InMemoryPolicies, InMemoryReplicas, RuleStatus, TargetId, Timestamp, error_chain, parse_policy, reconcile,
};
use vllm_scaling_nvml::{
    DeviceError, DeviceRef, Error, FakeCall, FakeGpus, GpuProcess, MemoryBytes, NVML_LIBRARY, ProcessSample, Sampler,
    Unavailable,
};

fn process(pid: u32) -> GpuProcess {
    GpuProcess { pid, used_memory_bytes: Some(1024 * MIB), gpu_instance_id: None }
}

#[test]
fn utilization_is_the_mean_over_the_rule_window_not_the_last_reading() {
    let mut node = Node::new();
    node.add_pod("llm", "vllm-0", "vllm", &[100], Cgroup::V2Systemd);
    let gpus = FakeGpus::new();
    gpus.add_gpu(0, "NVIDIA H100 80GB HBM3", 81_559);
    gpus.set_processes(DeviceRef::Gpu(0), vec![process(100)]);
    let adapter = node.adapter(gpus);
    // One sample a second: 20 % for the first half minute, 80 % for the second.
    for t in 1..=60u64 {
        adapter.devices().push_utilization(DeviceRef::Gpu(0), t * 1_000_000, if t <= 30 { 20.0 } else { 80.0 });
        if t % 5 == 0 {
            adapter.poll(Timestamp::from_secs(t)).unwrap();
        }
    }
    let rules = rules(
        "    - {name: util_1m, metric: gpu_utilization, threshold: 50, source: nvml, window: 1m}
    - {name: util_30s, metric: gpu_utilization, threshold: 50, source: nvml, window: 30s}
    - {name: util_5s, metric: gpu_utilization, threshold: 50, source: nvml, window: 5s}
",
    );
    let now = Timestamp::from_millis(60_500);
    let got = adapter.read(&request("llm", rules, &["vllm-0"]), now).unwrap();
    assert!(got.failures.is_empty(), "{:?}", got.failures);
    let m = &got.pods[0].metrics;
    assert_eq!(m["util_1m"], 50.0, "a minute of samples: half at 20 %, half at 80 %");
    assert_eq!(m["util_30s"], 80.0);
    assert_eq!(m["util_5s"], 80.0);
    // The sampler asked the driver only for samples newer than those it already held.
    let queries = adapter.devices().utilization_queries();
    assert_eq!(queries[0], (DeviceRef::Gpu(0), None));
    assert_eq!(queries[1], (DeviceRef::Gpu(0), Some(5_000_000)));
}

#[test]
fn polling_keeps_samples_that_the_driver_buffer_drops() {
    let gpus = FakeGpus::new();
    gpus.add_gpu(0, "NVIDIA L4", 23_034);
    let mut polled = Sampler::new(Duration::from_secs(600));
    let mut unpolled = Sampler::new(Duration::from_secs(600));
    // 300 samples, 100 ms apart (NVML's buffer keeps 120): 0 % for 10 s, then 100 % for 20 s.
    for i in 1..=300u64 {
        gpus.push_utilization(DeviceRef::Gpu(0), i * 100_000, if i <= 100 { 0.0 } else { 100.0 });
        if i % 50 == 0 {
            polled.poll(&gpus, Timestamp::from_millis(i * 100)).unwrap();
        }
    }
    unpolled.poll(&gpus, Timestamp::from_secs(30)).unwrap();
    let window = Duration::from_secs(60);
    let p = polled.snapshot(Timestamp::from_secs(30), window).devices[0].utilization.clone().unwrap();
    let u = unpolled.snapshot(Timestamp::from_secs(30), window).devices[0].utilization.clone().unwrap();
    assert_eq!(p.samples, 300);
    assert!((p.mean_percent - 200.0 / 3.0).abs() < 1e-9, "{}", p.mean_percent);
    assert_eq!(p.oldest, Timestamp::from_millis(100));
    assert_eq!(u.samples, FakeGpus::BUFFER_CAPACITY, "without polling only the driver's buffer is seen");
    assert_eq!(u.mean_percent, 100.0);
}

#[test]
fn retention_caps_the_window_and_drops_old_samples() {
    let gpus = FakeGpus::new();
    gpus.add_gpu(0, "NVIDIA L4", 23_034);
    let mut sampler = Sampler::new(Duration::from_secs(10));
    for t in 1..=30u64 {
        gpus.push_utilization(DeviceRef::Gpu(0), t * 1_000_000, t as f64);
        sampler.poll(&gpus, Timestamp::from_secs(t)).unwrap();
    }
    let u =
        sampler.snapshot(Timestamp::from_secs(30), Duration::from_secs(3600)).devices[0].utilization.clone().unwrap();
    assert_eq!(u.window, Duration::from_secs(10));
    assert_eq!(u.samples, 11, "samples 20..=30");
    assert_eq!(u.mean_percent, 25.0);
}

#[test]
fn stale_utilization_is_missing_and_never_scales_down() {
    let mut node = Node::new();
    node.add_pod("llm", "vllm-0", "vllm", &[100], Cgroup::V1Cgroupfs);
    let gpus = FakeGpus::new();
    gpus.add_gpu(0, "NVIDIA H100 80GB HBM3", 81_559);
    gpus.set_processes(DeviceRef::Gpu(0), vec![process(100)]);
    for t in 1..=10u64 {
        gpus.push_utilization(DeviceRef::Gpu(0), t * 1_000_000, 5.0);
    }
    let adapter = node.adapter(gpus);
    let rules = rules("    - {metric: gpu_utilization, threshold: 60, source: nvml, window: 1m}\n");
    // At t=100 s the newest sample is 90 s old.
    let got = adapter.read(&request("llm", rules.clone(), &["vllm-0"]), Timestamp::from_secs(100)).unwrap();
    let why = &got.failures["gpu_utilization"];
    assert!(why.contains("pod vllm-0") && why.contains("no sample in the last 60s"), "{why}");
    assert!(why.contains("newest: 10.000s"), "{why}");
    assert!(got.pods[0].metrics.is_empty(), "a stale device reads as no value, not 0");
    // At t=30 s the same samples are inside the window: 5 %.
    let got = adapter.read(&request("llm", rules, &["vllm-0"]), Timestamp::from_secs(30)).unwrap();
    assert_eq!(got.pods[0].metrics["gpu_utilization"], 5.0);
}

#[test]
fn memory_is_a_percent_of_the_pod_gpus() {
    let mut node = Node::new();
    // A tensor-parallel pod on GPUs 0 and 1, another pod alone on GPU 2.
    node.add_pod("llm", "vllm-tp", "vllm", &[100, 101], Cgroup::V2Systemd);
    node.add_pod("llm", "vllm-1", "vllm", &[200], Cgroup::V2Systemd);
    let gpus = FakeGpus::new();
    for i in 0..3 {
        gpus.add_gpu(i, "NVIDIA A100-SXM4-80GB", 80_000);
        gpus.push_utilization(DeviceRef::Gpu(i), 1_000_000, [90.0, 50.0, 30.0][i as usize]);
    }
    gpus.set_memory_used_mib(DeviceRef::Gpu(0), 60_000);
    gpus.set_memory_used_mib(DeviceRef::Gpu(1), 20_000);
    gpus.set_memory(
        DeviceRef::Gpu(2),
        MemoryBytes { used: 64_000 * MIB, free: 16_000 * MIB, reserved: 500 * MIB, total: 80_500 * MIB },
    );
    gpus.set_processes(DeviceRef::Gpu(0), vec![process(100)]);
    gpus.set_processes(DeviceRef::Gpu(1), vec![process(101)]);
    gpus.set_processes(DeviceRef::Gpu(2), vec![process(200)]);
    let adapter = node.adapter(gpus);
    let rules = rules(
        "    - {metric: gpu_utilization, threshold: 60, source: nvml}
    - {metric: gpu_memory_used, threshold: 90, source: nvml}
",
    );
    let got = adapter.read(&request("llm", rules, &["vllm-tp", "vllm-1"]), Timestamp::from_secs(2)).unwrap();
    assert!(got.failures.is_empty(), "{:?}", got.failures);
    let tp = &got.pods[0].metrics;
    assert_eq!(tp["gpu_memory_used"], 50.0, "(60 000 + 20 000) / (80 000 + 80 000)");
    assert_eq!(tp["gpu_utilization"], 70.0, "mean of 90 % and 50 %");
    let one = &got.pods[1].metrics;
    assert_eq!(one["gpu_memory_used"], 80.0, "used / (used + free): reserved memory is not usable");
    assert_eq!(one["gpu_utilization"], 30.0);
}

#[test]
fn processes_map_to_pods_through_cgroup_v1_and_v2_files() {
    let mut node = Node::new();
    node.add_pod("llm", "v1-pod", "vllm", &[100], Cgroup::V1Cgroupfs);
    node.add_pod("llm", "v2-pod", "vllm", &[200], Cgroup::V2Systemd);
    node.add_pod("llm", "relative-pod", "vllm", &[300], Cgroup::V2Relative);
    // Same pod name in another namespace: not the target's.
    node.add_pod("other", "v1-pod-x", "vllm", &[400], Cgroup::V2Systemd);
    // A host process (not in a pod) and a pid whose /proc entry is gone.
    node.add_process(500, "0::/system.slice/nvidia-persistenced.service\n");
    let gpus = FakeGpus::new();
    for (i, pid) in [100u32, 200, 300, 400, 500].into_iter().enumerate() {
        let i = i as u32;
        gpus.add_gpu(i, "NVIDIA L40S", 46_068);
        gpus.push_utilization(DeviceRef::Gpu(i), 1_000_000, f64::from(10 * (i + 1)));
        let mut ps = vec![process(pid)];
        if i == 4 {
            ps.push(process(999));
        }
        gpus.set_processes(DeviceRef::Gpu(i), ps);
    }
    let adapter = node.adapter(gpus);
    let snapshot = adapter.snapshot(Timestamp::from_secs(2), Duration::from_secs(60)).unwrap();
    let pods = snapshot.pods();
    let names: Vec<String> = pods.iter().map(|p| format!("{}/{}", p.pod.namespace, p.pod.name)).collect();
    assert_eq!(names, ["llm/relative-pod", "llm/v1-pod", "llm/v2-pod", "other/v1-pod-x"]);
    assert!(pods.iter().all(|p| p.containers.iter().eq(["vllm"])), "container names come from /var/log/containers");
    assert_eq!(pods[1].devices, [DeviceRef::Gpu(0)]);
    assert_eq!(pods[1].process_memory_bytes, Some(1024 * MIB));
    let host = &snapshot.devices[4].processes.as_ref().unwrap();
    assert_eq!(host[0].attribution, vllm_scaling_nvml::Attribution::NotAPod);
    assert!(
        matches!(&host[1].attribution, vllm_scaling_nvml::Attribution::Unreadable { reason } if reason.contains("999"))
    );

    let rules = rules("    - {metric: gpu_utilization, threshold: 60, source: nvml}\n");
    let req = request("llm", rules, &["v1-pod", "v2-pod", "relative-pod", "v1-pod-x", "elsewhere"]);
    let got = adapter.read(&req, Timestamp::from_secs(2)).unwrap();
    assert!(got.failures.is_empty(), "{:?}", got.failures);
    let values: Vec<Option<f64>> = got.pods.iter().map(|p| p.metrics.get("gpu_utilization").copied()).collect();
    assert_eq!(values, [Some(10.0), Some(20.0), Some(30.0), None, None], "other namespaces and other nodes: no value");
}

#[test]
fn a_target_with_no_pod_on_this_node_fails_the_rule_with_what_was_seen() {
    let mut node = Node::new();
    node.add_pod("llm", "someone-else", "app", &[100], Cgroup::V2Systemd);
    let gpus = FakeGpus::new();
    gpus.add_gpu(0, "NVIDIA L4", 23_034);
    gpus.push_utilization(DeviceRef::Gpu(0), 1_000_000, 99.0);
    gpus.set_processes(DeviceRef::Gpu(0), vec![process(100)]);
    let adapter = node.adapter(gpus);
    let rules = rules("    - {metric: gpu_utilization, threshold: 60, source: nvml}\n");
    let got = adapter.read(&request("llm", rules.clone(), &["vllm-0", "vllm-1"]), Timestamp::from_secs(2)).unwrap();
    let why = &got.failures["gpu_utilization"];
    assert!(why.contains("none of the 2 pods of llm/llama") && why.contains("llm/someone-else"), "{why}");
    let got = adapter.read(&request("llm", rules, &[]), Timestamp::from_secs(2)).unwrap();
    assert!(got.failures["gpu_utilization"].contains("lists no pods"), "{:?}", got.failures);
}

#[test]
fn mig_devices_are_enumerated_and_their_utilization_is_missing_not_zero() {
    let mut node = Node::new();
    node.add_pod("llm", "vllm-mig", "vllm", &[100], Cgroup::V2Systemd);
    let gpus = FakeGpus::new();
    gpus.add_gpu(0, "NVIDIA A100-SXM4-40GB", 40_960);
    gpus.add_mig(0, 0, "3g.20gb", Some(1), 20_096);
    gpus.add_mig(0, 1, "1g.5gb", Some(7), 4_864);
    let mig = DeviceRef::Mig { gpu: 0, index: 1 };
    gpus.set_memory_used_mib(mig, 3_648);
    let on_mig = GpuProcess { pid: 100, used_memory_bytes: Some(3_000 * MIB), gpu_instance_id: Some(7) };
    gpus.set_processes(mig, vec![on_mig]);
    // NVML lists the MIG device's processes on the parent too (an aggregate), and the
    // parent's memory is the whole GPU's.
    gpus.set_processes(DeviceRef::Gpu(0), vec![on_mig]);
    gpus.set_memory_used_mib(DeviceRef::Gpu(0), 40_000);
    let adapter = node.adapter(gpus);
    let snapshot = adapter.snapshot(Timestamp::from_secs(1), Duration::from_secs(60)).unwrap();
    assert_eq!(snapshot.devices.len(), 3, "the GPU and its two MIG devices");
    let parent = snapshot.device(DeviceRef::Gpu(0)).unwrap().processes.as_ref().unwrap();
    assert_eq!(parent[0].attribution, vllm_scaling_nvml::Attribution::MigAggregate);
    assert_eq!(snapshot.pods()[0].devices, [mig], "the pod's GPU is its MIG device, not the parent");
    let m = snapshot.device(mig).unwrap();
    assert_eq!(m.info.mig.as_ref().unwrap().profile.as_deref(), Some("1g.5gb"));
    assert!(
        matches!(&m.utilization, Err(Unavailable::NotReported { reason, .. }) if reason.contains("MIG")),
        "{:?}",
        m.utilization
    );

    let rules = rules(
        "    - {metric: gpu_utilization, threshold: 60, source: nvml}
    - {metric: gpu_memory_used, threshold: 90, source: nvml}
",
    );
    let got = adapter.read(&request("llm", rules, &["vllm-mig"]), Timestamp::from_secs(1)).unwrap();
    assert_eq!(got.pods[0].metrics["gpu_memory_used"], 75.0, "3 648 of 4 864 MiB of the MIG device");
    assert!(!got.pods[0].metrics.contains_key("gpu_utilization"), "never a made-up 0 %");
    let why = &got.failures["gpu_utilization"];
    assert!(
        why.contains("pod vllm-mig") && why.contains("MIG") && why.contains("DCGM_FI_PROF_GR_ENGINE_ACTIVE"),
        "{why}"
    );
}

#[test]
fn a_failing_device_call_fails_only_the_rules_that_need_it() {
    let mut node = Node::new();
    node.add_pod("llm", "vllm-0", "vllm", &[100], Cgroup::V2Systemd);
    let gpus = FakeGpus::new();
    gpus.add_gpu(0, "NVIDIA L4", 23_034);
    gpus.push_utilization(DeviceRef::Gpu(0), 1_000_000, 40.0);
    gpus.set_processes(DeviceRef::Gpu(0), vec![process(100)]);
    gpus.fail(DeviceRef::Gpu(0), FakeCall::Memory, "GPU has fallen off the bus");
    let adapter = node.adapter(gpus);
    let rules = rules(
        "    - {metric: gpu_utilization, threshold: 60, source: nvml}
    - {metric: gpu_memory_used, threshold: 90, source: nvml}
    - {metric: queue_length, threshold: 10}
",
    );
    let got = adapter.read(&request("llm", rules, &["vllm-0"]), Timestamp::from_secs(1)).unwrap();
    assert_eq!(got.pods[0].metrics["gpu_utilization"], 40.0);
    let why = &got.failures["gpu_memory_used"];
    assert!(why.contains("GPU 0") && why.contains("fallen off the bus"), "{why}");
    assert!(!got.failures.contains_key("queue_length"), "other metrics are other backends' business");
    assert_eq!(got.failures.len(), 1);
}

#[test]
fn out_of_range_samples_are_rejected_not_averaged() {
    let gpus = FakeGpus::new();
    gpus.add_gpu(0, "NVIDIA L4", 23_034);
    gpus.push_utilization(DeviceRef::Gpu(0), 1_000_000, 250.0);
    gpus.push_utilization(DeviceRef::Gpu(0), 2_000_000, f64::NAN);
    let mut sampler = Sampler::default();
    sampler.poll(&gpus, Timestamp::from_secs(2)).unwrap();
    let u = sampler.snapshot(Timestamp::from_secs(2), Duration::from_secs(60)).devices[0].utilization.clone();
    assert!(matches!(&u, Err(Unavailable::ReadFailed { reason, .. }) if reason.contains("outside 0–100")), "{u:?}");
    gpus.push_utilization(DeviceRef::Gpu(0), 3_000_000, 30.0);
    sampler.poll(&gpus, Timestamp::from_secs(3)).unwrap();
    let u = sampler.snapshot(Timestamp::from_secs(3), Duration::from_secs(60)).devices[0].utilization.clone().unwrap();
    assert_eq!((u.samples, u.mean_percent), (1, 30.0));
}

#[test]
fn unreadable_pod_directories_are_an_error_naming_the_path() {
    let node = Node::new();
    let gpus = FakeGpus::new();
    gpus.add_gpu(0, "NVIDIA L4", 23_034);
    let mut config = node.config();
    let not_a_dir = node.dir.path().join("file");
    std::fs::write(&not_a_dir, "").unwrap();
    config.pods = vllm_scaling_nvml::PodSource::KubeletLogs {
        pods_dir: not_a_dir,
        containers_dir: node.dir.path().join("containers"),
    };
    let adapter = vllm_scaling_nvml::NvmlMetrics::new(gpus, config);
    let rules = rules("    - {metric: gpu_utilization, threshold: 60, source: nvml}\n");
    let err = adapter.read(&request("llm", rules, &["p"]), Timestamp::from_secs(1)).unwrap_err();
    assert!(matches!(err, Error::PodDirectory(_)));
    assert!(error_chain(&err).contains("/file failed"), "{}", error_chain(&err));
}

const POLICY: &str = "apiVersion: autoscaler.production-stack/v1alpha1
kind: vLLMScalingPolicy
metadata: {name: llama}
spec:
  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: llama}
  minReplicas: 1
  maxReplicas: 8
  scalingRules:
    - {metric: gpu_utilization, threshold: 60, source: nvml}
";

#[test]
fn without_nvml_the_adapter_errors_clearly_and_the_rule_is_missing() {
    let node = Node::new();
    let gpus = FakeGpus::new();
    gpus.set_unavailable(Some("libnvidia-ml.so.1: cannot open shared object file: No such file or directory"));
    let adapter = node.adapter(gpus);
    let (policy, resolved) = parse_policy(POLICY).unwrap();
    let err = adapter.read(&request("llm", resolved.rules.clone(), &["vllm-0"]), Timestamp::from_secs(1)).unwrap_err();
    assert!(matches!(&err, Error::Devices(DeviceError::Unavailable { library, .. }) if library == NVML_LIBRARY));
    let chain = error_chain(&err);
    assert!(chain.contains("libnvidia-ml.so.1") && chain.contains("install the NVIDIA driver"), "{chain}");

    // Through core's reconcile step: the rule is `missing` and three replicas stay three.
    let target = TargetId::new("llm", "llama");
    let policies = InMemoryPolicies::default();
    policies.insert(&target, policy);
    let replicas = InMemoryReplicas::default();
    replicas.set(&target, 3);
    let mut engine = Engine::new(resolved);
    let decision = futures::executor::block_on(reconcile(
        &mut engine,
        &target,
        Timestamp::from_secs(1),
        &policies,
        &replicas,
        &adapter,
        vec![common::pod("vllm-0")],
    ))
    .unwrap();
    assert_eq!(decision.rules[0].status, RuleStatus::Missing);
    assert!(decision.rules[0].reason.as_deref().unwrap_or("").contains("libnvidia-ml.so.1"), "{:?}", decision.rules[0]);
    assert_eq!(decision.desired_replicas, 3);
    assert!(replicas.writes().is_empty());
}

/// Real NVML on a GPU machine: `VLLM_SCALING_NVML_TEST=1 cargo test -p vllm-scaling-nvml
/// --test adapter -- --ignored --nocapture real_nvml`. Prints what it read.
#[cfg(feature = "nvml")]
#[test]
#[ignore = "needs an NVIDIA GPU and driver; run with VLLM_SCALING_NVML_TEST=1 and --ignored"]
fn real_nvml() {
    use vllm_scaling_nvml::{GpuDevices, NvmlDevices, render_dcgm};
    if std::env::var("VLLM_SCALING_NVML_TEST").as_deref() != Ok("1") {
        panic!("set VLLM_SCALING_NVML_TEST=1 to run the real-NVML test on a GPU machine");
    }
    let gpus = NvmlDevices::new().init().unwrap_or_else(|e| panic!("{}", error_chain(&e)));
    let devices = gpus.devices().unwrap();
    assert!(!devices.is_empty(), "NVML sees no GPU");
    let mut sampler = Sampler::default();
    let start = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    for i in 0..6u64 {
        let now = Timestamp::from_millis(u64::try_from(start.as_millis()).unwrap() + i * 500);
        sampler.poll(&gpus, now).unwrap();
        std::thread::sleep(Duration::from_millis(500));
    }
    let now = Timestamp::from_millis(u64::try_from(start.as_millis()).unwrap() + 3_000);
    let snapshot = sampler.snapshot(now, Duration::from_secs(60));
    for d in &snapshot.devices {
        println!("{}: {} {:?}", d.describe(), d.info.model_name, d.info.mig);
        println!("  memory: {:?} -> {:?} %", d.memory, d.memory.as_ref().ok().and_then(MemoryBytes::used_percent));
        println!("  utilization: {:?}", d.utilization);
        println!("  processes: {:?}", d.processes);
        println!("  process samples: {:?}", d.process_samples_error);
        let m = d.memory.as_ref().expect("NVML reads memory on every device");
        assert!(m.total > 0 && m.used + m.free <= m.total);
        if d.info.mig.is_none() {
            let u = d.utilization.as_ref().expect("a whole GPU reports utilization samples");
            assert!((0.0..=100.0).contains(&u.mean_percent) && u.samples > 0);
        }
    }
    println!("{}", render_dcgm(&snapshot, &vllm_scaling_nvml::DcgmLabels { hostname: "gpu-test".into() }));
}

#[test]
fn samples_out_of_order_and_shared_sample_times_are_all_kept() {
    let gpus = FakeGpus::new();
    gpus.add_gpu(0, "NVIDIA L4", 23_034);
    let g = DeviceRef::Gpu(0);
    for (t, v) in [(3, 30.0), (1, 10.0), (2, 20.0)] {
        gpus.push_utilization(g, t * 1_000_000, v);
    }
    // Two processes sampled at the same instants, the second poll's batch included.
    gpus.set_processes(g, vec![process(1), process(2)]);
    let sample = |pid, t: u64, sm| ProcessSample { pid, timestamp_us: t * 1_000_000, sm_percent: sm, mem_percent: 0 };
    gpus.push_process_sample(g, sample(1, 1, 10));
    gpus.push_process_sample(g, sample(2, 1, 30));
    let mut sampler = Sampler::default();
    sampler.poll(&gpus, Timestamp::from_secs(3)).unwrap();
    gpus.push_process_sample(g, sample(2, 2, 50));
    gpus.push_process_sample(g, sample(1, 2, 70));
    sampler.poll(&gpus, Timestamp::from_secs(3)).unwrap();
    let snapshot = sampler.snapshot(Timestamp::from_secs(3), Duration::from_secs(60));
    let u = snapshot.devices[0].utilization.clone().unwrap();
    assert_eq!((u.samples, u.mean_percent), (3, 20.0));
    let sm: Vec<Option<f64>> = snapshot.devices[0].processes.as_ref().unwrap().iter().map(|p| p.sm_percent).collect();
    assert_eq!(sm, [Some(40.0), Some(40.0)], "pid 1: (10 + 70) / 2, pid 2: (30 + 50) / 2");
}
