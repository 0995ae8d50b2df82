//! Direct scrape of 200 emulated vLLM pods on loopback: the wall time of one full read
//! (every pod's page fetched, parsed and turned into rule values).
//!
//! `cargo bench -p vllm-scaling-benches --bench scrape`

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, criterion_group, criterion_main};
use vllm_scaling_core::{PodInfo, PodPhase, Timestamp, parse_policy};
use vllm_scaling_prom::emulator::{Emulator, EmulatorOptions, Load};
use vllm_scaling_prom::{HttpOptions, PodScrapeOptions, PodScraper};

const PODS: usize = 200;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().expect("runtime");
    let emulators: Vec<Emulator> = rt.block_on(async {
        let mut v = Vec::with_capacity(PODS);
        for i in 0..PODS {
            let options = EmulatorOptions {
                engines: 2,
                seed: i as u64 + 1,
                load: Load { request_rate: 6.0, ..Load::default() },
                ..EmulatorOptions::default()
            };
            v.push(Emulator::start("127.0.0.1:0".parse().expect("addr"), options).await.expect("emulator"));
        }
        v
    });
    let pods: Vec<PodInfo> = emulators
        .iter()
        .enumerate()
        .map(|(i, e)| PodInfo {
            name: format!("vllm-{i}"),
            phase: PodPhase::Running,
            ready: true,
            deleting: false,
            metrics_url: Some(e.metrics_url()),
            metrics_url_error: None,
        })
        .collect();
    let (_, policy) = parse_policy(
        "apiVersion: autoscaler.production-stack/v1alpha1\nkind: vLLMScalingPolicy\nmetadata: {name: b}\nspec:\n  maxReplicas: 400\n  scalingRules:\n    - {metric: queue_length, threshold: 5}\n    - {metric: kv_cache_usage, threshold: 80}\n    - {metric: ttft, threshold: 500, window: 1s}\n    - {metric: tokens_per_second, threshold: 1000, window: 1s}\n",
    )
    .expect("policy");

    let mut group = c.benchmark_group("direct_scrape");
    group.sample_size(20).measurement_time(Duration::from_secs(20));
    for concurrency in [64, 200] {
        let scraper = PodScraper::new(PodScrapeOptions {
            http: HttpOptions::with_timeout(Duration::from_secs(5)),
            concurrency,
            ..PodScrapeOptions::default()
        })
        .expect("scraper");
        // Warm the connection pool and the per-pod history (rates need a previous scrape).
        rt.block_on(scraper.read(&policy.rules, &pods, Timestamp::from_secs(0)));
        let mut t = 1u64;
        group.bench_function(format!("{PODS}_pods_concurrency_{concurrency}"), |b| {
            b.iter(|| {
                t += 1;
                let readings = rt.block_on(scraper.read(&policy.rules, &pods, Timestamp::from_secs(t)));
                // Every pod answered. (Quantiles may be missing: between two iterations a
                // few milliseconds apart no request finishes, and the reading says so.)
                assert_eq!(readings[0].per_pod.len(), PODS, "{:?}", readings[0].pod_failures);
                assert_eq!(readings[3].per_pod.len(), PODS, "{:?}", readings[3].pod_failures);
                black_box(readings)
            })
        });
    }
    group.finish();
    drop(emulators);
}

criterion_group!(benches, bench);
criterion_main!(benches);
