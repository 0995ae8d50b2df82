//! Reaction benchmark: the time from a load step on the vLLM emulator to the controller's
//! `PATCH .../scale`, over many trials.
//!
//! ```sh
//! cargo run --release -p vllm-scaling-kube --features test-util --example reaction -- \
//!     [--trials 60] [--pods 2] [--sync-period-ms 1000] [--source pods|prometheus] [--scrape-interval-ms 5000]
//! ```
//!
//! Everything is real except the API server: `--pods` vLLM emulators on 127.0.0.1 (one per
//! pod), the controller (`vllm_scaling_kube::run`) with the direct pod-scrape adapter (or
//! the Prometheus adapter reading a real Prometheus that scrapes the emulators, with
//! `--source prometheus`), and the in-process API server whose request log timestamps the
//! patch. Each trial pins every emulator's queue at 2 (below the threshold of 10), waits
//! for the controller to see it, waits a random time within the evaluation period (and the
//! scrape interval, with Prometheus) so the step lands at any phase, pins the queue at 30, and measures until the scale patch arrives.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use serde_json::json;
use vllm_scaling_kube::fake_api::FakeApiServer;
use vllm_scaling_kube::{Context, ControllerConfig, run};
use vllm_scaling_prom::emulator::{ControlUpdate, Emulator, EmulatorOptions};
use vllm_scaling_prom::test_util::{PrometheusServer, ScrapeTarget};
use vllm_scaling_prom::{PodScrapeOptions, PodScraper, PrometheusMetrics, PrometheusOptions, VllmMetrics};

struct Options {
    trials: usize,
    pods: usize,
    sync_period: Duration,
    source: String,
    scrape_interval: Duration,
}

fn options() -> Options {
    let mut o = Options {
        trials: 60,
        pods: 2,
        sync_period: Duration::from_secs(1),
        source: "pods".into(),
        scrape_interval: Duration::from_secs(5),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        let number = || value.parse::<u64>().unwrap_or_else(|_| panic!("{} needs a number, got `{value}`", args[i]));
        match args[i].as_str() {
            "--trials" => o.trials = usize::try_from(number()).unwrap_or(60),
            "--pods" => o.pods = usize::try_from(number()).unwrap_or(2),
            "--sync-period-ms" => o.sync_period = Duration::from_millis(number()),
            "--scrape-interval-ms" => o.scrape_interval = Duration::from_millis(number()),
            "--source" => o.source.clone_from(&value),
            other => panic!("unknown argument {other}"),
        }
        i += 2;
    }
    o
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn queue(value: f64) -> ControlUpdate {
    ControlUpdate { queue_length: Some(Some(value)), ..ControlUpdate::default() }
}

#[tokio::main]
async fn main() {
    let o = options();
    let server = FakeApiServer::start().await.expect("the fake API server starts");
    server.record_bodies(true);
    let mut emulators = Vec::new();
    let mut targets = Vec::new();
    for i in 0..o.pods {
        let options = EmulatorOptions {
            model_name: "meta-llama/Llama-2-70b-hf".into(),
            seed: i as u64,
            ..EmulatorOptions::default()
        };
        let e = Emulator::start("127.0.0.1:0".parse().unwrap(), options).await.expect("the emulator starts");
        e.control(queue(2.0)).unwrap();
        let port = e.addr().port();
        server.apply(json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": {"name": format!("llama-{i}"), "namespace": "default", "labels": {"app": "llama"},
                         "annotations": {"prometheus.io/port": port.to_string()}},
            "spec": {"containers": [{"name": "vllm"}]},
            "status": {"phase": "Running", "podIP": "127.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}
        }));
        targets.push(
            ScrapeTarget::new(format!("127.0.0.1:{port}"))
                .label("pod", format!("llama-{i}"))
                .label("namespace", "default"),
        );
        emulators.push(e);
    }
    let replicas = o.pods as i64;
    server.apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "llama", "namespace": "default"},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": "llama"}}, "template": {}},
        "status": {"replicas": replicas}
    }));
    let source = if o.source == "prometheus" { "prometheus" } else { "pods" };
    server.apply(json!({
        "apiVersion": "autoscaler.production-stack/v1alpha1", "kind": "vLLMScalingPolicy",
        "metadata": {"name": "llama", "namespace": "default"},
        "spec": {
            "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "llama"},
            "minReplicas": replicas, "maxReplicas": 100,
            "scalingRules": [{"metric": "queue_length", "threshold": 10, "source": source}],
            // No windows and no rate limit: every trial starts from a clean slate.
            "behavior": {
                "scaleUp": {"stabilizationWindowSeconds": 0, "policies": [{"type": "Percent", "value": 1000, "periodSeconds": 1}]},
                "scaleDown": {"stabilizationWindowSeconds": 0}
            }
        }
    }));

    let scraper = PodScraper::new(PodScrapeOptions::default()).expect("the scraper builds");
    let _prometheus;
    let metrics = if source == "prometheus" {
        let p = PrometheusServer::start(&targets, o.scrape_interval)
            .await
            .expect("Prometheus starts (apt-get install prometheus)");
        let mut options = PrometheusOptions::new(p.url());
        options.max_age = o.scrape_interval * 3;
        let adapter = PrometheusMetrics::new(options).expect("the Prometheus adapter builds");
        _prometheus = Some(p);
        VllmMetrics::prometheus(adapter, Some(scraper))
    } else {
        _prometheus = None;
        VllmMetrics::pods(scraper)
    };
    let config = ControllerConfig::default().with_sync_period(o.sync_period).with_namespace(Some("default".into()));
    let ctx = Arc::new(Context::new(server.client(), metrics, config));
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(run(ctx, ready, std::future::pending()));

    let settle = o.sync_period * 2 + if source == "prometheus" { o.scrape_interval * 2 } else { Duration::ZERO };
    tokio::time::sleep(settle).await;
    let mut latencies_ms = Vec::new();
    let mut rng_state: u64 = 0x9E37_79B9_7F4A_7C15;
    for trial in 0..o.trials {
        // Back to the quiet state.
        for e in &emulators {
            e.control(queue(2.0)).unwrap();
        }
        server.merge("apps/v1", "Deployment", "default", "llama", &json!({"spec": {"replicas": replicas}}));
        tokio::time::sleep(settle).await;
        rng_state ^= rng_state << 13;
        rng_state ^= rng_state >> 7;
        rng_state ^= rng_state << 17;
        // A random phase against the evaluation period (and Prometheus' scrape interval).
        let spread = if source == "prometheus" { o.sync_period.max(o.scrape_interval) } else { o.sync_period };
        let spread_ms = u64::try_from(spread.as_millis()).unwrap_or(1000).max(1);
        tokio::time::sleep(Duration::from_millis(rng_state % spread_ms)).await;
        let before = server.requests_to("PATCH", "/deployments/llama/scale").len();
        // The load step.
        for e in &emulators {
            e.control(queue(30.0)).unwrap();
        }
        let stepped = server.elapsed();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
        let patch = loop {
            let patches = server.requests_to("PATCH", "/deployments/llama/scale");
            if patches.len() > before {
                break patches[before].clone();
            }
            assert!(tokio::time::Instant::now() < deadline, "trial {trial}: no scale patch within 120 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let ms = patch.at.saturating_sub(stepped).as_secs_f64() * 1000.0;
        eprintln!("trial {trial:3}: {ms:8.1} ms (patch {:?})", patch.body.as_ref().map(|b| &b["spec"]));
        latencies_ms.push(ms);
    }
    latencies_ms.sort_by(f64::total_cmp);
    let mean = latencies_ms.iter().sum::<f64>() / latencies_ms.len() as f64;
    println!(
        "{}",
        json!({
            "source": source, "pods": o.pods, "trials": o.trials,
            "sync_period_ms": o.sync_period.as_millis(), "scrape_interval_ms": if source == "prometheus" { o.scrape_interval.as_millis() } else { 0 },
            "p50_ms": percentile(&latencies_ms, 50.0), "p90_ms": percentile(&latencies_ms, 90.0),
            "p99_ms": percentile(&latencies_ms, 99.0), "max_ms": latencies_ms[latencies_ms.len() - 1],
            "min_ms": latencies_ms[0], "mean_ms": mean,
        })
    );
}
