//! The direct pod-scrape adapter against emulated vLLM pods on 127.0.0.1, and against
//! endpoints that hang, return garbage, fail or drop the connection.

mod common;

use std::time::{Duration, Instant};

use vllm_scaling_core::{CurrentScale, Engine, GetScalingMetrics, MetricsRequest, RuleStatus, TargetId};
use vllm_scaling_prom::emulator::{ControlUpdate, Emulator, EmulatorOptions, Fault, Load};
use vllm_scaling_prom::{HttpOptions, PodScrapeOptions, PodScraper};

async fn emulator(options: EmulatorOptions) -> Emulator {
    Emulator::start("127.0.0.1:0".parse().unwrap(), options).await.unwrap()
}

fn scraper(timeout: Duration) -> PodScraper {
    PodScraper::new(PodScrapeOptions { http: HttpOptions::with_timeout(timeout), ..PodScrapeOptions::default() })
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_match_what_the_emulators_serve() {
    let pinned = |queue: f64, kv: f64| EmulatorOptions {
        engines: 2,
        load: Load {
            request_rate: 6.0,
            queue_length: Some(queue),
            kv_cache_usage: Some(kv),
            ttft_ms: Some(900.0),
            ..Load::default()
        },
        ..EmulatorOptions::default()
    };
    let a = emulator(pinned(4.0, 0.25)).await;
    let b = emulator(pinned(10.0, 0.5)).await;
    let pods = vec![common::pod("vllm-a", &a.metrics_url()), common::pod("vllm-b", &b.metrics_url())];
    let rules = common::rules(
        "    - {metric: queue_length, threshold: 5}\n    - {metric: kv_cache_usage, threshold: 80}\n    - {metric: ttft, threshold: 500, window: 1s}\n    - {metric: tokens_per_second, threshold: 1000, window: 1s}\n",
    );
    let s = scraper(Duration::from_secs(2));

    let first = s.read(&rules, &pods, common::now()).await;
    assert_eq!(first[0].per_pod["vllm-a"], 4.0, "{first:?}");
    assert_eq!(first[0].per_pod["vllm-b"], 10.0);
    assert_eq!(first[1].per_pod["vllm-a"], 25.0, "KV usage is percent");
    assert_eq!(first[0].detail.as_deref(), Some("vllm:num_requests_waiting"));
    // The first scrape has nothing to difference against.
    assert!(first[2].failure.as_deref().unwrap().contains("second one"), "{:?}", first[2]);

    tokio::time::sleep(Duration::from_millis(1500)).await;
    let second = s.read(&rules, &pods, common::now()).await;
    let p95 = second[2].fleet.unwrap_or_else(|| panic!("{:?}", second[2]));
    let (lo, hi) = common::ttft_bucket(900.0);
    assert!((lo..=hi).contains(&p95), "p95 {p95} outside the bucket ({lo}, {hi}] holding 900 ms");
    assert!(second[2].age_secs.unwrap() >= 1.0);
    // 6 req/s x 128 tokens: about 768 tokens/s per pod once the pipeline is full.
    for pod in ["vllm-a", "vllm-b"] {
        let tps = second[3].per_pod[pod];
        assert!((100.0..2000.0).contains(&tps), "{pod}: {tps}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_endpoints_become_pod_failures_and_never_stall_the_rest() {
    let healthy = emulator(EmulatorOptions {
        load: Load { queue_length: Some(3.0), ..Load::default() },
        ..EmulatorOptions::default()
    })
    .await;
    let mut bad = Vec::new();
    for fault in [Fault::Hang, Fault::Garbage, Fault::ServerError, Fault::Drop] {
        let e = emulator(EmulatorOptions::default()).await;
        e.control(ControlUpdate { fault: Some(fault), ..ControlUpdate::default() }).unwrap();
        bad.push(e);
    }
    // A port nobody listens on.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}/metrics", l.local_addr().unwrap())
    };
    let mut pods = vec![common::pod("healthy", &healthy.metrics_url())];
    for (name, e) in ["hang", "garbage", "error", "drop"].iter().zip(&bad) {
        pods.push(common::pod(name, &e.metrics_url()));
    }
    pods.push(common::pod("closed", &closed));
    let rules = common::rules("    - {metric: queue_length, threshold: 5}\n");
    let s = scraper(Duration::from_millis(400));

    let started = Instant::now();
    let readings = s.read(&rules, &pods, common::now()).await;
    let took = started.elapsed();
    assert!(took < Duration::from_millis(1500), "the hung pod held everyone up: {took:?}");
    let r = &readings[0];
    assert_eq!(r.per_pod.len(), 1, "{r:?}");
    assert_eq!(r.per_pod["healthy"], 3.0);
    assert_eq!(r.failure, None, "one good pod keeps the rule alive");
    let why = |pod: &str| r.pod_failures[pod].clone();
    assert!(why("hang").contains("timed out after 400ms"), "{}", why("hang"));
    assert!(why("garbage").contains("invalid exposition page: line 1"), "{}", why("garbage"));
    assert!(why("error").contains("HTTP 500"), "{}", why("error"));
    assert!(!why("drop").is_empty());
    assert!(why("closed").contains("connection"), "{}", why("closed"));

    // Through the port and the engine: pods without values never pull the average down.
    let policy = common::policy("    - {metric: queue_length, threshold: 5}\n");
    let request =
        MetricsRequest { target: TargetId::new("", "test"), scale_target_ref: None, rules: policy.rules.clone(), pods };
    let metrics = s.get_scaling_metrics(&request, common::now()).await.unwrap();
    let mut engine = Engine::new(policy);
    let decision = engine.evaluate(common::now(), CurrentScale::new(6), &metrics);
    assert!(decision.desired_replicas >= 6, "{}", decision.explanation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_pod_answering_is_a_missing_rule_with_reasons() {
    let e = emulator(EmulatorOptions::default()).await;
    e.control(ControlUpdate { fault: Some(Fault::ServerError), ..ControlUpdate::default() }).unwrap();
    let policy = common::policy("    - {metric: queue_length, threshold: 5}\n    - {metric: ttft, threshold: 500}\n");
    let pods = vec![common::pod("vllm-0", &e.metrics_url()), common::pod("vllm-1", &e.metrics_url())];
    let request =
        MetricsRequest { target: TargetId::new("", "test"), scale_target_ref: None, rules: policy.rules.clone(), pods };
    let s = scraper(Duration::from_secs(1));
    let metrics = s.get_scaling_metrics(&request, common::now()).await.unwrap();
    let why = &metrics.failures["queue_length"];
    assert!(why.starts_with("no pod gave a value (2 pods: vllm-0: HTTP 500"), "{why}");
    let mut engine = Engine::new(policy);
    let decision = engine.evaluate(common::now(), CurrentScale::new(4), &metrics);
    assert_eq!(decision.desired_replicas, 4, "{}", decision.explanation);
    assert!(decision.rules.iter().all(|r| r.status == RuleStatus::Missing));
    assert!(decision.explanation.contains("HTTP 500"), "{}", decision.explanation);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unready_and_urlless_pods_are_not_scraped() {
    let e = emulator(EmulatorOptions::default()).await;
    let mut unready = common::pod("unready", &e.metrics_url());
    unready.ready = false;
    let mut no_url = common::pod("no-url", "");
    no_url.metrics_url = None;
    let pods = vec![common::pod("ok", &e.metrics_url()), unready, no_url];
    let readings = scraper(Duration::from_secs(1))
        .read(&common::rules("    - {metric: running_requests, threshold: 5}\n"), &pods, common::now())
        .await;
    assert_eq!(readings[0].per_pod.keys().collect::<Vec<_>>(), ["ok"]);
    assert_eq!(readings[0].pod_failures["unready"], "not ready: not scraped");
    assert_eq!(readings[0].pod_failures["no-url"], "no metrics URL known");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn v0_pages_fall_back_to_old_names() {
    let e = emulator(EmulatorOptions {
        v0_names: true,
        load: Load { request_rate: 8.0, itl_ms: Some(30.0), kv_cache_usage: Some(0.4), ..Load::default() },
        ..EmulatorOptions::default()
    })
    .await;
    let pods = vec![common::pod("v0", &e.metrics_url())];
    let rules = common::rules(
        "    - {metric: kv_cache_usage, threshold: 80}\n    - {metric: itl, threshold: 50, window: 1s}\n",
    );
    let s = scraper(Duration::from_secs(1));
    let _ = s.read(&rules, &pods, common::now()).await;
    tokio::time::sleep(Duration::from_millis(1200)).await;
    let r = s.read(&rules, &pods, common::now()).await;
    assert_eq!(r[0].per_pod["v0"], 40.0);
    assert_eq!(r[0].detail.as_deref(), Some("vllm:gpu_cache_usage_perc"));
    let itl = r[1].fleet.unwrap_or_else(|| panic!("{:?}", r[1]));
    assert!((25.0..=50.0).contains(&itl), "30 ms lies in the (25, 50] ms bucket: {itl}");
    assert_eq!(r[1].detail.as_deref(), Some("vllm:time_per_output_token_seconds"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_pod_makes_a_latency_rule_idle_and_a_stalled_one_does_not() {
    // Neither emulator finishes requests; the stalled one holds 2 running.
    let idle = emulator(EmulatorOptions::default()).await;
    let stalled =
        emulator(EmulatorOptions { load: Load { running: Some(2.0), ..Load::default() }, ..Default::default() }).await;
    let rules = common::rules("    - {metric: ttft, threshold: 2000, window: 1s}\n");
    let read_twice = |pods: Vec<vllm_scaling_core::PodInfo>| {
        let rules = rules.clone();
        async move {
            let s = scraper(Duration::from_secs(1));
            let _ = s.read(&rules, &pods, common::now()).await;
            tokio::time::sleep(Duration::from_millis(1200)).await;
            s.read(&rules, &pods, common::now()).await.remove(0)
        }
    };

    let r = read_twice(vec![common::pod("idle", &idle.metrics_url())]).await;
    assert!(r.idle && r.failure.is_none() && r.fleet.is_none(), "{r:?}");
    let r = read_twice(vec![common::pod("idle", &idle.metrics_url()), common::pod("stalled", &stalled.metrics_url())])
        .await;
    assert!(!r.idle, "a pod with requests running is not idle: {r:?}");
    assert!(r.failure.as_deref().is_some_and(|f| f.contains("no requests finished")), "{r:?}");
}
