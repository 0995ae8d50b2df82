//! Properties of the sampler's windowed mean and of the cgroup parser.

use std::time::Duration;

use proptest::prelude::*;
use vllm_scaling_core::Timestamp;
use vllm_scaling_nvml::{DeviceRef, FakeGpus, Sampler, Unavailable, parse_cgroup};

#[derive(Clone, Debug)]
struct Trace {
    /// (gap since the previous sample in ms, value in percent)
    samples: Vec<(u64, u8)>,
    /// Samples pushed between two polls (at most the driver's buffer).
    poll_every: usize,
    /// How long after the last sample the snapshot is taken, ms.
    tail_ms: u64,
    window_secs: u64,
}

fn trace() -> impl Strategy<Value = Trace> {
    (
        prop::collection::vec((1u64..2_000, 0u8..=100), 1..400),
        1usize..=FakeGpus::BUFFER_CAPACITY,
        0u64..120_000,
        1u64..=600,
    )
        .prop_map(|(samples, poll_every, tail_ms, window_secs)| Trace {
            samples,
            poll_every,
            tail_ms,
            window_secs,
        })
}

proptest! {
    /// Polled at least once per driver buffer, the sampler's answer is exactly the mean of
    /// the samples inside the window, or "no samples" when there are none: never 0 for
    /// lack of data, never a sample from outside the window.
    #[test]
    fn the_window_mean_is_the_mean_of_the_samples_in_the_window(t in trace()) {
        let gpus = FakeGpus::new();
        gpus.add_gpu(0, "NVIDIA L4", 23_034);
        let mut sampler = Sampler::default();
        let start_ms = 1_700_000_000_000u64;
        let mut at_ms = start_ms;
        let mut pushed = Vec::new();
        for (i, (gap, value)) in t.samples.iter().enumerate() {
            at_ms += gap;
            gpus.push_utilization(DeviceRef::Gpu(0), at_ms * 1000, f64::from(*value));
            pushed.push((at_ms, f64::from(*value)));
            if (i + 1) % t.poll_every == 0 {
                sampler.poll(&gpus, Timestamp::from_millis(at_ms)).unwrap();
            }
        }
        let now_ms = at_ms + t.tail_ms;
        sampler.poll(&gpus, Timestamp::from_millis(now_ms)).unwrap();
        let window = Duration::from_secs(t.window_secs);
        let from_ms = now_ms - window.as_millis() as u64;
        let inside: Vec<f64> = pushed.iter().filter(|(ts, _)| *ts >= from_ms).map(|(_, v)| *v).collect();
        let got = sampler.snapshot(Timestamp::from_millis(now_ms), window).devices[0].utilization.clone();
        if inside.is_empty() {
            let is_stale = matches!(got, Err(Unavailable::NoSamples { .. }));
            prop_assert!(is_stale, "{:?}", got);
        } else {
            let want = inside.iter().sum::<f64>() / inside.len() as f64;
            let got = got.unwrap();
            prop_assert_eq!(got.samples, inside.len());
            prop_assert!((got.mean_percent - want).abs() < 1e-9, "{} vs {}", got.mean_percent, want);
        }
    }

    /// Every cgroup shape Kubernetes writes gives back the pod UID and container id.
    #[test]
    fn cgroup_paths_give_back_the_pod_and_container(
        uid in any::<u128>(),
        id in prop::collection::vec(any::<u8>(), 32),
        shape in 0usize..4,
        qos in 0usize..3,
        up in 0usize..3,
    ) {
        let hex = format!("{uid:032x}");
        let uid = format!("{}-{}-{}-{}-{}", &hex[..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..]);
        let under = uid.replace('-', "_");
        let cid: String = id.iter().map(|b| format!("{b:02x}")).collect();
        let (qos_dir, qos_slice) = [("", ""), ("burstable/", "-burstable"), ("besteffort/", "-besteffort")][qos];
        let prefix = "/..".repeat(up);
        let text = match shape {
            0 => format!("11:memory:{prefix}/kubepods/{qos_dir}pod{uid}/{cid}\n1:name=systemd:/kubepods/{qos_dir}pod{uid}/{cid}\n"),
            1 => format!("0::{prefix}/kubepods/{qos_dir}pod{uid}/{cid}\n"),
            2 => format!("0::{prefix}/kubepods.slice/kubepods{qos_slice}.slice/kubepods{qos_slice}-pod{under}.slice/cri-containerd-{cid}.scope\n"),
            _ => format!("0::{prefix}/kubepods{qos_slice}-pod{under}.slice/crio-{cid}.scope\n"),
        };
        let ids = parse_cgroup(&text).unwrap();
        prop_assert_eq!(ids.pod_uid, uid);
        prop_assert_eq!(ids.container_id, Some(cid));
    }

    /// Arbitrary text never panics the parser.
    #[test]
    fn arbitrary_cgroup_text_does_not_panic(text in ".{0,300}") {
        let _ = parse_cgroup(&text);
    }
}
