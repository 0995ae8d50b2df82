//! The KEDA scaler's figures in BENCHMARKS.md ("KEDA scaler"):
//!
//! 1. `GetMetrics` latency with 1,000 ScaledObjects (10 namespaces × 100), each naming its
//!    own policy, all evaluated every sync period by the scaler's controller loop against
//!    the in-process API server, with in-memory metrics (so the figure is the scaler's
//!    own: gRPC, metadata, lookup, answer);
//! 2. load step -> `StreamIsActive` push: a policy at zero replicas whose activation rule
//!    jumps above its threshold; the time until the open stream says `true`.
//!
//! `cargo run --release -p vllm-scaling-keda --example keda_bench [-- OBJECTS CALLS]`

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use serde_json::json;
use tonic::transport::Channel;
use vllm_scaling_core::{InMemoryMetrics, ScalingMetrics, TargetId};
use vllm_scaling_keda::proto::external_scaler_client::ExternalScalerClient;
use vllm_scaling_keda::proto::{GetMetricsRequest, ScaledObjectRef};
use vllm_scaling_keda::{KedaScaler, METRIC_NAME, serve};
use vllm_scaling_kube::fake_api::{FakeApiServer, keda_scaled_object_kind};
use vllm_scaling_kube::{Context, ControllerConfig, DecisionBoard};

const NAMESPACES: usize = 10;

fn reference(namespace: &str, name: &str) -> ScaledObjectRef {
    ScaledObjectRef {
        name: name.to_owned(),
        namespace: namespace.to_owned(),
        scaler_metadata: [("policy".to_owned(), name.to_owned())].into_iter().collect(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn apply_target(server: &FakeApiServer, ns: &str, name: &str, replicas: i64, spec: serde_json::Value) {
    server.apply(json!({
        "apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": name, "namespace": ns},
        "spec": {"replicas": replicas, "selector": {"matchLabels": {"app": name}}, "template": {"metadata": {"labels": {"app": name}}}},
        "status": {"replicas": replicas}
    }));
    server.apply(json!({
        "apiVersion": "keda.sh/v1alpha1", "kind": "ScaledObject", "metadata": {"name": name, "namespace": ns},
        "spec": {"scaleTargetRef": {"name": name}, "triggers": [{"type": "external-push", "metadata": {"policy": name}}]}
    }));
    server.apply(json!({
        "apiVersion": "autoscaler.production-stack/v1alpha1", "kind": "vLLMScalingPolicy",
        "metadata": {"name": name, "namespace": ns}, "spec": spec
    }));
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let objects: usize = args.next().map_or(1000, |a| a.parse().expect("OBJECTS"));
    let calls: usize = args.next().map_or(20_000, |a| a.parse().expect("CALLS"));
    let per_ns = objects.div_ceil(NAMESPACES);

    let server = FakeApiServer::start().await.expect("API server");
    server.add_kind(keda_scaled_object_kind());
    let metrics = InMemoryMetrics::default();
    let queue_rule =
        json!([{"name": "queue", "metric": "custom", "query": "q", "targetType": "AverageValue", "threshold": 5}]);
    for n in 0..NAMESPACES {
        let ns = format!("ns-{n}");
        for p in 0..per_ns {
            let name = format!("model-{p}");
            let spec = json!({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                              "minReplicas": 1, "maxReplicas": 20, "scalingRules": queue_rule});
            apply_target(&server, &ns, &name, 2, spec);
            let fleet = [("queue".to_owned(), 10.0 + (p % 7) as f64)].into();
            metrics.set(&TargetId::new(&ns, &name), ScalingMetrics { fleet, ..ScalingMetrics::default() });
        }
    }
    // The activation trials: policies at zero with scale to zero on the same rule.
    let trials = 20;
    for t in 0..trials {
        let name = format!("idle-{t}");
        let spec = json!({"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": name},
                          "minReplicas": 0, "maxReplicas": 20, "scalingRules": queue_rule,
                          "scaleToZero": {"activationRule": "queue", "idleSeconds": 60}});
        apply_target(&server, "ns-0", &name, 0, spec);
        metrics.set(
            &TargetId::new("ns-0", &name),
            ScalingMetrics { fleet: [("queue".to_owned(), 0.0)].into(), ..ScalingMetrics::default() },
        );
    }

    let board = Arc::new(DecisionBoard::new());
    let ctx = Arc::new(
        Context::new(
            server.client(),
            metrics,
            ControllerConfig::default().with_activation_period(Duration::from_secs(1)),
        )
        .without_gpu_exporters()
        .publishing_to(board.clone()),
    );
    let ready = Arc::new(AtomicBool::new(false));
    tokio::spawn(vllm_scaling_kube::run(ctx.clone(), ready.clone(), std::future::pending()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(serve(listener, KedaScaler::new(ctx.clone()), None, std::future::pending()));
    let channel = Channel::from_shared(format!("http://{addr}")).expect("uri").connect().await.expect("connect");
    let client = ExternalScalerClient::new(channel);

    // Every policy decided once.
    let started = Instant::now();
    loop {
        let decided = (0..NAMESPACES)
            .flat_map(|n| (0..per_ns).map(move |p| (format!("ns-{n}"), format!("model-{p}"))))
            .filter(|(ns, name)| matches!(board.latest(ns, name), Some(vllm_scaling_kube::Outcome::Decided(_))))
            .count();
        if decided == NAMESPACES * per_ns {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(300), "only {decided} policies decided");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "{} ScaledObjects, every policy decided {:.1} s after start",
        NAMESPACES * per_ns,
        started.elapsed().as_secs_f64()
    );

    // 1. GetMetrics, 8 callers at once, round robin over the ScaledObjects.
    let callers = 8;
    let mut tasks = Vec::new();
    let wall = Instant::now();
    for c in 0..callers {
        let mut client = client.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(calls / callers);
            for i in (c..calls).step_by(callers) {
                let (n, p) = (i % NAMESPACES, (i / NAMESPACES) % per_ns);
                let request = GetMetricsRequest {
                    scaled_object_ref: Some(reference(&format!("ns-{n}"), &format!("model-{p}"))),
                    metric_name: format!("s0-{METRIC_NAME}"),
                };
                let t = Instant::now();
                let answer = client.get_metrics(request).await.expect("GetMetrics answers");
                lat.push(t.elapsed());
                assert!(answer.into_inner().metric_values[0].metric_value_float >= 2.0);
            }
            lat
        }));
    }
    let mut lat: Vec<Duration> = Vec::new();
    for t in tasks {
        lat.extend(t.await.expect("caller"));
    }
    let wall = wall.elapsed();
    lat.sort();
    println!(
        "GetMetrics x{}: p50 {:?}, p90 {:?}, p99 {:?}, max {:?}; {:.0} calls/s with {callers} callers",
        lat.len(),
        percentile(&lat, 0.5),
        percentile(&lat, 0.9),
        percentile(&lat, 0.99),
        lat[lat.len() - 1],
        lat.len() as f64 / wall.as_secs_f64()
    );

    // 2. Load step -> StreamIsActive push.
    let mut pushes = Vec::new();
    for t in 0..trials {
        let name = format!("idle-{t}");
        let mut client = client.clone();
        let mut stream = client.stream_is_active(reference("ns-0", &name)).await.expect("stream").into_inner();
        let first = stream.message().await.expect("open").expect("first").result;
        assert!(!first, "{name} starts inactive");
        // Desynchronise from the evaluation schedule.
        tokio::time::sleep(Duration::from_millis(137 * (t as u64 % 7))).await;
        let step = Instant::now();
        ctx.metrics_source().set(
            &TargetId::new("ns-0", &name),
            ScalingMetrics { fleet: [("queue".to_owned(), 12.0)].into(), ..ScalingMetrics::default() },
        );
        let active = tokio::time::timeout(Duration::from_secs(30), stream.message())
            .await
            .expect("a push")
            .expect("ok")
            .expect("msg");
        assert!(active.result);
        pushes.push(step.elapsed());
    }
    pushes.sort();
    println!(
        "load step -> StreamIsActive push x{trials} (activation period 1 s): p50 {:?}, p90 {:?}, max {:?}",
        percentile(&pushes, 0.5),
        percentile(&pushes, 0.9),
        pushes[pushes.len() - 1]
    );
}
