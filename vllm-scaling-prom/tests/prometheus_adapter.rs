//! The Prometheus adapter against a real Prometheus server scraping emulated vLLM pods, all
//! on 127.0.0.1. Needs the `prometheus` binary (Debian's package); with `CI=true` a missing
//! binary fails the tests.

mod common;

use std::time::Duration;

use vllm_scaling_core::{CurrentScale, Engine, GetScalingMetrics, MetricSource, MetricsRequest, RuleStatus, TargetId};
use vllm_scaling_prom::emulator::{Emulator, EmulatorOptions, Load};
use vllm_scaling_prom::test_util::{PrometheusServer, ScrapeTarget, require};
use vllm_scaling_prom::{PodScrapeOptions, PodScraper, PrometheusMetrics, PrometheusOptions, VllmMetrics};

const SCRAPE: Duration = Duration::from_millis(250);

async fn emulator(options: EmulatorOptions) -> Emulator {
    Emulator::start("127.0.0.1:0".parse().unwrap(), options).await.unwrap()
}

fn target(e: &Emulator, pod: &str) -> ScrapeTarget {
    ScrapeTarget::new(e.addr().to_string()).label("pod", pod).label("namespace", "llm")
}

fn adapter(prometheus: &PrometheusServer) -> PrometheusMetrics {
    let mut o = PrometheusOptions::new(prometheus.url());
    o.http.timeout = Duration::from_secs(2);
    PrometheusMetrics::new(o).unwrap()
}

fn pinned(queue: f64, kv: f64) -> EmulatorOptions {
    EmulatorOptions {
        engines: 2,
        load: Load {
            request_rate: 8.0,
            queue_length: Some(queue),
            kv_cache_usage: Some(kv),
            ttft_ms: Some(900.0),
            e2e_ms: Some(4000.0),
            ..Load::default()
        },
        ..EmulatorOptions::default()
    }
}

const RULES: &str = "    - {metric: queue_length, threshold: 5}\n    - {metric: kv_cache_usage, threshold: 80}\n    - {metric: ttft, threshold: 500, window: 3s}\n    - {metric: latency, threshold: 3000, quantile: 0.5, window: 3s}\n    - {metric: requests_per_second, threshold: 10, window: 3s}\n    - {metric: custom, name: waiting_total, threshold: 100, query: 'sum(vllm:num_requests_waiting)'}\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_match_the_emulators_and_stopping_prometheus_gives_missing() {
    let a = emulator(pinned(4.0, 0.25)).await;
    let b = emulator(pinned(10.0, 0.5)).await;
    let Some(mut prometheus) =
        require(PrometheusServer::start(&[target(&a, "vllm-a"), target(&b, "vllm-b")], SCRAPE).await)
    else {
        return;
    };
    // Wait until the rate window holds enough scrapes for both pods.
    prometheus
        .wait_for("count(count_over_time(vllm:num_requests_waiting[3s]) >= 10) == 4", Duration::from_secs(30))
        .await
        .unwrap();
    let policy = common::policy(RULES);
    let pods = vec![common::pod("vllm-a", "http://unused/metrics"), common::pod("vllm-b", "http://unused/metrics")];
    let prom = adapter(&prometheus);
    let r = prom.read(&policy.rules, &TargetId::new("llm", "test"), &pods).await;

    assert_eq!(r[0].per_pod["vllm-a"], 4.0, "{:?}", r[0]);
    assert_eq!(r[0].per_pod["vllm-b"], 10.0, "summed over both engines");
    assert_eq!(r[0].source, MetricSource::Prometheus);
    assert!(r[0].age_secs.unwrap() < 5.0, "{:?}", r[0]);
    assert_eq!(r[1].per_pod["vllm-a"], 25.0, "KV usage in percent");
    assert_eq!(r[1].per_pod["vllm-b"], 50.0);
    let p95 = r[2].fleet.unwrap_or_else(|| panic!("{:?}", r[2]));
    let (lo, hi) = common::ttft_bucket(900.0);
    assert!((lo..=hi).contains(&p95), "TTFT p95 {p95} outside ({lo}, {hi}]");
    let p50 = r[3].fleet.unwrap_or_else(|| panic!("{:?}", r[3]));
    assert!((2500.0..=5000.0).contains(&p50), "e2e p50 {p50} outside the (2.5 s, 5 s] bucket");
    for pod in ["vllm-a", "vllm-b"] {
        let rps = r[4].per_pod[pod];
        assert!((2.0..=16.0).contains(&rps), "{pod} finishes ~8 req/s, read {rps}");
    }
    assert_eq!(r[5].fleet, Some(14.0), "custom query: {:?}", r[5]);
    assert!(r[0].detail.as_deref().unwrap().contains("namespace=\"llm\""));

    // The adapter's values drive the engine: 7 waiting per pod vs 5 scales 2 pods up to 3.
    let request = MetricsRequest {
        target: TargetId::new("llm", "test"),
        scale_target_ref: None,
        rules: policy.rules.clone(),
        pods: pods.clone(),
    };
    let metrics = prom.get_scaling_metrics(&request, common::now()).await.unwrap();
    assert!(metrics.failures.is_empty(), "{:?}", metrics.failures);
    let mut engine = Engine::new(policy.clone());
    let up = engine.evaluate(common::now(), CurrentScale::new(2), &metrics);
    assert!(up.desired_replicas >= 3, "{}", up.explanation);

    // Prometheus goes away: every rule is missing, with the reason, and nothing scales down.
    prometheus.stop();
    let metrics = prom.get_scaling_metrics(&request, common::now()).await.unwrap();
    assert_eq!(metrics.failures.len(), policy.rules.len(), "{metrics:?}");
    assert!(metrics.failures["queue_length"].contains("prometheus query failed"), "{:?}", metrics.failures);
    let mut engine = Engine::new(policy);
    let held = engine.evaluate(common::now(), CurrentScale::new(5), &metrics);
    assert_eq!(held.desired_replicas, 5, "{}", held.explanation);
    assert!(held.rules.iter().all(|o| o.status == RuleStatus::Missing));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v0_names_idle_histograms_and_a_vanished_pod() {
    let v0 = emulator(EmulatorOptions {
        v0_names: true,
        load: Load { kv_cache_usage: Some(0.7), ..Load::default() },
        ..EmulatorOptions::default()
    })
    .await;
    let Some(prometheus) = require(PrometheusServer::start(&[target(&v0, "vllm-old")], SCRAPE).await) else {
        return;
    };
    prometheus.wait_for("count_over_time(vllm:gpu_cache_usage_perc[3s]) >= 6", Duration::from_secs(30)).await.unwrap();
    let rules = common::rules(
        "    - {metric: kv_cache_usage, threshold: 80}\n    - {metric: itl, threshold: 50, window: 3s}\n    - {metric: queue_time, threshold: 50, window: 3s}\n",
    );
    let prom = adapter(&prometheus);
    let target = TargetId::new("llm", "test");
    let r = prom.read(&rules, &target, &[]).await;
    assert_eq!(r[0].per_pod["vllm-old"], 70.0, "old KV name, in percent: {:?}", r[0]);
    // No requests at all and none in flight: the quantile is undefined, the fleet idle.
    assert!(r[1].idle && r[1].failure.is_none() && r[1].fleet.is_none(), "{:?}", r[1]);
    assert!(r[1].detail.as_deref().unwrap().contains("vllm:time_per_output_token_seconds_bucket"));
    // V0 has no queue-time histogram at all.
    assert!(r[2].failure.as_deref().unwrap().contains("no series"), "{:?}", r[2]);

    // The pod goes away: Prometheus marks its series stale and the rule goes missing.
    v0.shutdown().await;
    let mut last = None;
    for _ in 0..40 {
        let r = prom.read(&rules[..1], &target, &[]).await;
        if r[0].failure.is_some() {
            last = r[0].failure.clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    assert!(last.as_deref().is_some_and(|w| w.contains("no series")), "{last:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_fleet_scales_down_and_a_stalled_one_holds() {
    // Neither emulator finishes requests; the stalled one has 3 waiting.
    let idle = emulator(EmulatorOptions::default()).await;
    let stalled =
        emulator(EmulatorOptions { load: Load { queue_length: Some(3.0), ..Load::default() }, ..Default::default() })
            .await;
    let Some(prometheus) =
        require(PrometheusServer::start(&[target(&idle, "vllm-idle"), target(&stalled, "vllm-stalled")], SCRAPE).await)
    else {
        return;
    };
    prometheus
        .wait_for("count(count_over_time(vllm:num_requests_waiting[3s]) >= 6) == 2", Duration::from_secs(30))
        .await
        .unwrap();
    let policy = common::policy(
        "    - {metric: running_requests, threshold: 10}\n    - {metric: ttft, threshold: 2000, window: 3s}\n  behavior: {scaleDown: {stabilizationWindowSeconds: 0}}\n",
    );
    let prom = adapter(&prometheus);
    let read = |pod: &'static str, url: String| {
        let request = MetricsRequest {
            target: TargetId::new("llm", "test"),
            scale_target_ref: None,
            rules: policy.rules.clone(),
            pods: vec![common::pod(pod, &url)],
        };
        let prom = prom.clone();
        async move { prom.get_scaling_metrics(&request, common::now()).await.unwrap() }
    };

    let m = read("vllm-idle", idle.metrics_url()).await;
    assert!(m.idle.contains("ttft") && m.failures.is_empty(), "{m:?}");
    let down = Engine::new(policy.clone()).evaluate(common::now(), CurrentScale::new(4), &m);
    assert_eq!(down.desired_replicas, 1, "an idle fleet goes to minReplicas: {}", down.explanation);

    let m = read("vllm-stalled", stalled.metrics_url()).await;
    assert!(!m.idle.contains("ttft"), "{m:?}");
    assert!(m.failures["ttft"].contains("no requests finished"), "{:?}", m.failures);
    let held = Engine::new(policy.clone()).evaluate(common::now(), CurrentScale::new(4), &m);
    assert_eq!(held.desired_replicas, 4, "a stalled fleet is not idle: {}", held.explanation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auto_reads_pods_directly_and_custom_rules_from_prometheus() {
    let e = emulator(pinned(6.0, 0.3)).await;
    let Some(prometheus) = require(PrometheusServer::start(&[target(&e, "vllm-0")], SCRAPE).await) else {
        return;
    };
    prometheus.wait_for("vllm:num_requests_waiting", Duration::from_secs(30)).await.unwrap();
    let pods = vec![common::pod("vllm-0", &e.metrics_url())];
    let both =
        VllmMetrics::prometheus(adapter(&prometheus), Some(PodScraper::new(PodScrapeOptions::default()).unwrap()));
    let policy = common::policy(
        "    - {metric: queue_length, threshold: 5}\n    - {metric: kv_cache_usage, threshold: 80, source: prometheus}\n    - {metric: custom, name: waiting_total, threshold: 100, query: 'sum(vllm:num_requests_waiting)'}\n",
    );
    let request =
        MetricsRequest { target: TargetId::new("llm", "test"), scale_target_ref: None, rules: policy.rules, pods };
    let r = both.read(&request, common::now()).await;
    assert_eq!((r[0].source, r[0].per_pod["vllm-0"]), (MetricSource::Pods, 6.0));
    assert_eq!((r[1].source, r[1].per_pod["vllm-0"]), (MetricSource::Prometheus, 30.0));
    assert_eq!((r[2].source, r[2].fleet), (MetricSource::Prometheus, Some(6.0)));
    let m = both.get_scaling_metrics(&request, common::now()).await.unwrap();
    assert_eq!(m.pods[0].metrics["queue_length"], 6.0);
    assert_eq!(m.fleet["waiting_total"], 6.0);
}

#[tokio::test]
async fn unreachable_prometheus_is_a_failure_not_an_error() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let mut o = PrometheusOptions::new(format!("http://{closed}"));
    o.http.timeout = Duration::from_millis(500);
    let prom = PrometheusMetrics::new(o).unwrap();
    let policy = common::policy("    - {metric: queue_length, threshold: 5}\n");
    let request =
        MetricsRequest { target: TargetId::new("", "t"), scale_target_ref: None, rules: policy.rules, pods: vec![] };
    let m = prom.get_scaling_metrics(&request, common::now()).await.unwrap();
    assert!(m.failures["queue_length"].contains("prometheus query failed"), "{:?}", m.failures);
}
