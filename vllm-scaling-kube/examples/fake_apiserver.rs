//! The in-process API server as its own process, seeded with many policies, for the scale
//! run (`examples/scale.rs` starts it; it can also be run by hand):
//!
//! ```sh
//! cargo run --release -p vllm-scaling-kube --features test-util --example fake-apiserver -- \
//!     --listen 127.0.0.1:6443 --namespaces 100 --policies-per-namespace 100
//! ```
//!
//! Each policy targets its own Deployment (2 replicas, 2 ready pods). Prints `listening on
//! URL` once seeded; on SIGTERM or end of stdin prints the request counts as JSON and exits.

use std::time::Duration;

use serde_json::json;
use vllm_scaling_kube::fake_api::FakeApiServer;

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
    };
    let listen = arg("--listen", "127.0.0.1:0").parse().expect("--listen takes host:port");
    let namespaces: usize = arg("--namespaces", "100").parse().expect("--namespaces takes a number");
    let per_namespace: usize =
        arg("--policies-per-namespace", "100").parse().expect("--policies-per-namespace takes a number");
    let pods_per_target: usize = arg("--pods-per-target", "2").parse().expect("--pods-per-target takes a number");

    let server = FakeApiServer::start_on(listen).await.expect("the fake API server binds");
    server.record_bodies(false);
    for n in 0..namespaces {
        let ns = format!("team-{n:03}");
        for i in 0..per_namespace {
            let app = format!("vllm-{i:03}");
            server.apply(json!({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": app, "namespace": ns},
                "spec": {"replicas": pods_per_target, "selector": {"matchLabels": {"app": app}}, "template": {}},
                "status": {"replicas": pods_per_target}
            }));
            for p in 0..pods_per_target {
                server.apply(json!({
                    "apiVersion": "v1", "kind": "Pod",
                    "metadata": {"name": format!("{app}-{p}"), "namespace": ns, "labels": {"app": app}},
                    "spec": {"containers": [{"name": "vllm", "ports": [{"name": "http", "containerPort": 8000}]}]},
                    "status": {"phase": "Running", "podIP": format!("10.{}.{}.{}", n % 250, i % 250, p + 1),
                               "conditions": [{"type": "Ready", "status": "True"}]}
                }));
            }
            server.apply(json!({
                "apiVersion": "autoscaler.production-stack/v1alpha1", "kind": "vLLMScalingPolicy",
                "metadata": {"name": app, "namespace": ns},
                "spec": {
                    "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": app},
                    "minReplicas": 1, "maxReplicas": 10,
                    "scalingRules": [{"metric": "queue_length", "threshold": 10}, {"metric": "kv_cache_usage", "threshold": 80}]
                }
            }));
        }
    }
    println!("listening on {}", server.url());

    // End of stdin (the parent closed it) or SIGTERM ends the run.
    let (eof_tx, eof_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = [0u8; 64];
        while matches!(std::io::Read::read(&mut std::io::stdin(), &mut sink), Ok(n) if n > 0) {}
        let _ = eof_tx.send(());
    });
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = eof_rx => {}
    }
    println!("{}", json!({"request_counts": server.request_counts(), "uptime_secs": server.elapsed().as_secs_f64()}));
    tokio::time::sleep(Duration::from_millis(10)).await;
}
