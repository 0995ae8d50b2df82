//! The whole controller loop (kube-runtime's watch, the requeue schedule, the sweeper,
//! the HTTP endpoint) against the in-process API server, in real time.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use vllm_scaling_core::{InMemoryMetrics, PodMetrics, ScalingMetrics};
use vllm_scaling_kube::fake_api::FakeApiServer;
use vllm_scaling_kube::{Context, ControllerConfig, bind_http, run};

async fn http_get(addr: std::net::SocketAddr, path: &str) -> (u16, String) {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes()).await.unwrap();
    let mut out = String::new();
    stream.read_to_string(&mut out).await.unwrap();
    let code = out.split_whitespace().nth(1).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b.to_owned()).unwrap_or_default();
    (code, body)
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..100 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn the_controller_watches_evaluates_serves_metrics_and_shuts_down() {
    let server = FakeApiServer::start().await.unwrap();
    server.apply(deployment("llama-70b", MODEL, 2));
    for i in 0..2 {
        server.apply(pod("llama-70b", i, true));
    }
    let config =
        ControllerConfig::default().with_sync_period(Duration::from_millis(300)).with_namespace(Some(NS.into()));
    let ctx = Arc::new(Context::new(server.client(), InMemoryMetrics::default(), config));
    let ready = Arc::new(AtomicBool::new(false));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let (addr, serve) =
        bind_http("127.0.0.1:0".parse().unwrap(), ctx.telemetry().clone(), ready.clone(), stopped(stop_rx.clone()))
            .await
            .unwrap();
    let http = tokio::spawn(serve);
    let controller = tokio::spawn(run(ctx.clone(), ready.clone(), stopped(stop_rx)));

    wait_for("readiness", || ready.load(Ordering::SeqCst)).await;
    assert_eq!(http_get(addr, "/readyz").await.0, 200);
    assert_eq!(http_get(addr, "/healthz").await.0, 200);

    // A policy created now is picked up from the watch and evaluated.
    ctx.metrics_source().set(
        &Harness::target(),
        ScalingMetrics {
            pods: (0..2)
                .map(|i| {
                    PodMetrics::running(format!("llama-70b-{i}"))
                        .with("queue_length", 15.0)
                        .with("gpu_utilization", 80.0)
                })
                .collect(),
            fleet: [("latency".to_owned(), 500.0)].into(),
            ..ScalingMetrics::default()
        },
    );
    server.apply(seed_json());
    wait_for("the scale patch", || !server.requests_to("PATCH", "/deployments/llama-70b/scale").is_empty()).await;
    assert_eq!(server.get("apps/v1", "Deployment", NS, "llama-70b").unwrap()["spec"]["replicas"], 3);
    assert!(
        server.requests().iter().any(|r| r.is_watch() && r.path.ends_with("/vllmscalingpolicies")),
        "the policies are watched"
    );

    // Evaluations continue on the sync period, not on our own status writes (each
    // evaluation reads the scale; the status is written only when it changes).
    let evaluations = || server.requests_to("GET", "/deployments/llama-70b/scale").len();
    let before = evaluations();
    tokio::time::sleep(Duration::from_millis(1000)).await;
    let during = evaluations() - before;
    assert!((2..=5).contains(&during), "{during} evaluations in 1 s with a 300 ms period");

    let (code, body) = http_get(addr, "/metrics").await;
    assert_eq!(code, 200);
    assert!(body.contains("vllm_autoscaler_decisions_total{"), "{body}");
    assert!(body.contains("vllm_autoscaler_reconcile_duration_seconds_bucket"), "{body}");
    assert!(body.contains("vllm_autoscaler_policies 1"), "{body}");

    // A deleted policy's series disappear.
    server.delete("autoscaler.production-stack/v1alpha1", "vLLMScalingPolicy", NS, POLICY);
    wait_for("the sweep", || !ctx.telemetry().encode().contains("vllm_autoscaler_desired_replicas{")).await;

    // Clean shutdown.
    stop_tx.send(true).unwrap();
    tokio::time::timeout(Duration::from_secs(5), controller).await.expect("the controller stops").unwrap();
    tokio::time::timeout(Duration::from_secs(5), http).await.expect("the endpoint stops").unwrap();
}
