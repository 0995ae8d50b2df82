//! Scale run: 10,000 policies against the fake API server (in its own process, on the
//! other core), each evaluated every 15 s by one controller on one core.
//!
//! ```sh
//! cargo build --release -p vllm-scaling-kube --features test-util --examples
//! taskset -c 0 target/release/examples/scale [--namespaces 100] [--policies-per-namespace 100] \
//!     [--duration-secs 300] [--sync-period-secs 15] [--status-interval-secs 60]
//! ```
//!
//! The controller runs on a single-threaded tokio runtime; the API server is
//! `examples/fake_apiserver.rs`, started as a child process pinned to CPU 1 (with
//! `taskset`, when installed). Metrics come from a synthetic in-process backend (each
//! pod's queue oscillates around the threshold with a 10-minute period and a per-policy
//! phase, so policies do rescale), so the run measures the controller, not a metrics
//! backend. Reports: time to the first evaluation of every policy, the controller's CPU
//! share and peak RSS, the lateness of every evaluation against its period, and the API
//! requests per second by kind.

use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde_json::json;
use vllm_scaling_core::{GetScalingMetrics, MetricsRequest, PodMetrics, ScalingMetrics, TargetId, Timestamp};
use vllm_scaling_kube::fake_api::client_for;
use vllm_scaling_kube::{Context, ControllerConfig, run};

/// Queue lengths that oscillate around the threshold; records when each policy is evaluated.
struct Synthetic {
    period: Duration,
    last: Mutex<HashMap<TargetId, Timestamp>>,
    lateness_ms: Mutex<Vec<f64>>,
    evaluations: AtomicU64,
    measuring: AtomicBool,
}

#[derive(Debug, thiserror::Error)]
#[error("never")]
struct Never;

#[async_trait]
impl GetScalingMetrics for Synthetic {
    type Error = Never;

    async fn get_scaling_metrics(&self, request: &MetricsRequest, now: Timestamp) -> Result<ScalingMetrics, Never> {
        self.evaluations.fetch_add(1, Ordering::Relaxed);
        let previous = self.last.lock().unwrap().insert(request.target.clone(), now);
        if self.measuring.load(Ordering::Relaxed)
            && let Some(previous) = previous
        {
            let interval = now.as_millis().saturating_sub(previous.as_millis()) as f64;
            self.lateness_ms.lock().unwrap().push(interval - self.period.as_millis() as f64);
        }
        let phase = request
            .target
            .name
            .bytes()
            .chain(request.target.namespace.bytes())
            .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
        let phase = (phase % 1000) as f64 / 1000.0;
        let t = now.as_secs_f64() / 600.0 + phase;
        let queue = 10.0 * (1.0 + 0.6 * (2.0 * std::f64::consts::PI * t).sin());
        let pods = request
            .pods
            .iter()
            .map(|p| PodMetrics::running(p.name.clone()).with("queue_length", queue).with("kv_cache_usage", 50.0))
            .collect();
        Ok(ScalingMetrics { pods, ..ScalingMetrics::default() })
    }
}

fn proc_field(file: &str, key: &str) -> u64 {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(key).map(|v| v.trim().trim_end_matches(" kB").trim().parse().unwrap_or(0)))
        .unwrap_or(0)
}

/// User + system CPU seconds of this process.
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = after.split_whitespace().collect();
    // Fields 14 and 15 of stat (utime, stime), counted after the `)`: indices 11 and 12.
    let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    ticks as f64 / 100.0 // USER_HZ, 100 on Linux
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |name: &str, default: &str| -> String {
        args.iter().position(|a| a == name).and_then(|i| args.get(i + 1)).cloned().unwrap_or_else(|| default.to_owned())
    };
    let namespaces = arg("--namespaces", "100");
    let per_namespace = arg("--policies-per-namespace", "100");
    let policies: u64 = namespaces.parse::<u64>().unwrap() * per_namespace.parse::<u64>().unwrap();
    let duration = Duration::from_secs(arg("--duration-secs", "300").parse().unwrap());
    let period = Duration::from_secs(arg("--sync-period-secs", "15").parse().unwrap());
    let status_interval = Duration::from_secs(arg("--status-interval-secs", "60").parse().unwrap());

    // The API server, in its own process on the other core.
    let server_bin = std::env::current_exe().unwrap().with_file_name("fake-apiserver");
    let server_args = ["--namespaces", namespaces.as_str(), "--policies-per-namespace", per_namespace.as_str()];
    let mut command = if Command::new("taskset").arg("--version").output().is_ok() {
        let mut c = Command::new("taskset");
        c.arg("-c").arg("1").arg(&server_bin);
        c
    } else {
        Command::new(&server_bin)
    };
    let mut server = command
        .args(server_args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start fake-apiserver (build the examples first)");
    let mut lines = std::io::BufReader::new(server.stdout.take().unwrap()).lines();
    let url = loop {
        let line = lines.next().expect("fake-apiserver exited").unwrap();
        if let Some(url) = line.strip_prefix("listening on ") {
            break url.to_owned();
        }
    };
    eprintln!("API server at {url} with {policies} policies");

    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let summary = runtime.block_on(async {
        let synthetic = Synthetic {
            period,
            last: Mutex::new(HashMap::new()),
            lateness_ms: Mutex::new(Vec::new()),
            evaluations: AtomicU64::new(0),
            measuring: AtomicBool::new(false),
        };
        let config = ControllerConfig::default().with_sync_period(period).with_status_interval(status_interval);
        let ctx = Arc::new(Context::new(client_for(&url).unwrap(), synthetic, config));
        let ready = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let cpu_start = cpu_secs();
        tokio::spawn(run(ctx.clone(), ready.clone(), std::future::pending()));

        // Start-up: every policy evaluated once.
        while ctx.metrics_source().last.lock().unwrap().len() < policies as usize {
            tokio::time::sleep(Duration::from_millis(100)).await;
            assert!(started.elapsed() < Duration::from_secs(600), "start-up took over 10 minutes");
        }
        let startup = started.elapsed();
        let startup_cpu = cpu_secs() - cpu_start;
        eprintln!("all {policies} policies evaluated once after {startup:?} ({startup_cpu:.1} s CPU)");
        // Let the start-up burst spread out, then measure.
        tokio::time::sleep(period * 2).await;
        let rss_before = proc_field("/proc/self/status", "VmRSS:");
        ctx.metrics_source().measuring.store(true, Ordering::Relaxed);
        let evaluations_start = ctx.metrics_source().evaluations.load(Ordering::Relaxed);
        let (t0, c0) = (Instant::now(), cpu_secs());
        tokio::time::sleep(duration).await;
        let (wall, cpu) = (t0.elapsed().as_secs_f64(), cpu_secs() - c0);
        let evaluations = ctx.metrics_source().evaluations.load(Ordering::Relaxed) - evaluations_start;
        let mut lateness = ctx.metrics_source().lateness_ms.lock().unwrap().clone();
        lateness.sort_by(f64::total_cmp);
        let telemetry = ctx.telemetry().encode();
        let sum_count = |name: &str| -> (f64, f64) {
            let get = |suffix: &str| {
                telemetry
                    .lines()
                    .find(|l| l.starts_with(&format!("{name}_{suffix} ")))
                    .and_then(|l| l.rsplit(' ').next())
                    .and_then(|v| v.parse::<f64>().ok())
                    .unwrap_or(0.0)
            };
            (get("sum"), get("count"))
        };
        let (reconcile_sum, reconcile_count) = sum_count("vllm_autoscaler_reconcile_duration_seconds");
        let scale_events: f64 = telemetry
            .lines()
            .filter(|l| l.starts_with("vllm_autoscaler_scale_events_total{"))
            .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
            .sum();
        json!({
            "policies": policies,
            "sync_period_secs": period.as_secs(),
            "startup_secs": startup.as_secs_f64(),
            "startup_cpu_secs": startup_cpu,
            "measured_secs": wall,
            "evaluations_per_sec": evaluations as f64 / wall,
            "expected_evaluations_per_sec": policies as f64 / period.as_secs_f64(),
            "cpu_share_of_one_core": cpu / wall,
            "cpu_ms_per_evaluation": cpu * 1000.0 / evaluations as f64,
            "reconcile_wall_ms_mean": reconcile_sum * 1000.0 / reconcile_count.max(1.0),
            "lateness_ms": {"p50": percentile(&lateness, 50.0), "p90": percentile(&lateness, 90.0), "p99": percentile(&lateness, 99.0),
                            "max": lateness.last().copied().unwrap_or(f64::NAN), "min": lateness.first().copied().unwrap_or(f64::NAN), "samples": lateness.len()},
            "rss_mb_steady": rss_before as f64 / 1024.0,
            "rss_mb_end": proc_field("/proc/self/status", "VmRSS:") as f64 / 1024.0,
            "peak_rss_mb": proc_field("/proc/self/status", "VmHWM:") as f64 / 1024.0,
            "scale_events_total": scale_events,
            "evaluations_total": ctx.metrics_source().evaluations.load(Ordering::Relaxed),
        })
    });
    // Closing stdin makes the server print its request counts and exit.
    drop(server.stdin.take());
    let counts: serde_json::Value =
        lines.map_while(Result::ok).find_map(|l| serde_json::from_str(&l).ok()).unwrap_or(serde_json::Value::Null);
    let _ = server.wait();
    let uptime = counts["uptime_secs"].as_f64().unwrap_or(1.0);
    let per_sec: serde_json::Map<String, serde_json::Value> = counts["request_counts"]
        .as_object()
        .map(|m| m.iter().map(|(k, v)| (k.clone(), json!(v.as_f64().unwrap_or(0.0) / uptime))).collect())
        .unwrap_or_default();
    // Every request but the watches, per evaluation, both over the whole run.
    let requests: f64 = counts["request_counts"]
        .as_object()
        .map(|m| m.iter().filter(|(k, _)| !k.starts_with("WATCH")).filter_map(|(_, v)| v.as_f64()).sum())
        .unwrap_or(0.0);
    let status_patches = counts["request_counts"]["PATCH vllmscalingpolicies/status"].as_f64().unwrap_or(0.0);
    let evaluations = summary["evaluations_total"].as_f64().unwrap_or(1.0).max(1.0);
    println!(
        "{}",
        json!({"controller": summary, "api_requests_per_sec_over_uptime": per_sec, "api_server_uptime_secs": uptime,
               "api_requests_per_evaluation": requests / evaluations, "status_patches_per_evaluation": status_patches / evaluations})
    );
}
