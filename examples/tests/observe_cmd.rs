//! `emulate-vllm` and `observe`, run as a user runs them: a real emulator process on
//! 127.0.0.1, observed through the binary.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vllm-autoscaler"))
}

/// Kills the emulator even when an assertion fails.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `emulate-vllm` on free ports and returns the replicas' metrics URLs.
fn emulate(args: &[&str], replicas: usize) -> (Running, Vec<String>) {
    let mut child = bin()
        .args(["emulate-vllm", "--listen", "127.0.0.1:0"])
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the binary runs");
    let stdout = child.stdout.take().expect("piped stdout");
    let running = Running(child);
    let mut urls = Vec::new();
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("readable stdout");
        if let Some(rest) = line.strip_prefix("replica ") {
            let url = rest.split_whitespace().nth(1).expect("a URL after `replica N:`");
            urls.push(url.to_owned());
            if urls.len() == replicas {
                break;
            }
        }
    }
    assert_eq!(urls.len(), replicas, "emulate-vllm printed {urls:?}");
    (running, urls)
}

fn policy(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("policy.yaml");
    std::fs::write(
        &path,
        "apiVersion: autoscaler.production-stack/v1alpha1\nkind: vLLMScalingPolicy\nmetadata: {name: demo}\nspec:\n  maxReplicas: 8\n  scalingRules:\n    - {metric: queue_length, threshold: 5}\n    - {metric: kv_cache_usage, threshold: 80}\n    - {metric: tokens_per_second, threshold: 1000, window: 1s}\n",
    )
    .unwrap();
    path
}

#[test]
fn observe_reads_emulated_pods_as_json() {
    let (_emulator, urls) = emulate(&["--replicas", "2", "--load", "4"], 2);
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("observe")
        .arg(policy(&dir))
        .args(["--json", "--interval", "1s", "--replicas", "2"])
        .arg("--pods")
        .arg(format!("a={}", urls[0]))
        .arg("--pods")
        .arg(format!("b={}", urls[1]))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
    assert_eq!(report["policy"], "demo");
    let rules = report["rules"].as_array().unwrap();
    assert_eq!(rules.len(), 3);
    assert_eq!(rules[0]["source"], "pods");
    assert!(rules[0]["perPod"]["a"].is_number(), "{report:#}");
    let kv = rules[1]["perPod"]["b"].as_f64().unwrap();
    assert!((0.0..=100.0).contains(&kv) && kv >= 2.0, "KV usage in percent: {kv}");
    // The rate needed the second scrape `--interval` later (its size depends on when the
    // emulator's first requests finish; pods_scrape.rs checks the arithmetic).
    assert!(rules[2]["perPod"]["a"].as_f64().is_some_and(|v| v >= 0.0), "{report:#}");
    assert_eq!(report["decision"]["currentReplicas"], 2, "{report:#}");
}

#[test]
fn observe_reports_why_values_are_missing() {
    let dir = tempfile::tempdir().unwrap();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let out = bin()
        .arg("observe")
        .arg(policy(&dir))
        .args(["--timeout", "1s", "--prometheus-url"])
        .arg(format!("http://{closed}"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("queue_length [prometheus] threshold 5 requests"), "{stdout}");
    assert!(stdout.contains("MISSING: prometheus query failed"), "{stdout}");
}

#[test]
fn observe_rejects_bad_input_clearly() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin().arg("observe").arg(policy(&dir)).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("--prometheus-url URL, --pods URL..."));
    let out = bin().arg("observe").arg(policy(&dir)).args(["--pods", "not-a-url"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("expected URL or NAME=URL"));
    let out =
        bin().args(["observe", "/nonexistent/policy.yaml", "--pods", "http://127.0.0.1:1/metrics"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent/policy.yaml"));
}

/// The README's quick start: three emulated replicas at a light load (4 req/s each, an
/// eighth of what they serve) observed with the seed example, verbatim. No queue, and
/// answers well under the seed's `latency: 1000`: the engine does not scale up (today's
/// GPU rule is missing here, so it holds at 3; with the load raised it scales up).
#[test]
fn the_quick_start_fleet_does_not_look_loaded_until_it_is() {
    let (_emulator, urls) = emulate(&["--replicas", "3", "--load", "4"], 3);
    let seed = concat!(env!("CARGO_MANIFEST_DIR"), "/policies/example-policy.yaml");
    let observe = || {
        let out = bin()
            .args(["observe", seed, "--json", "--interval", "2s", "--replicas", "3", "--pods"])
            .arg(urls.join(","))
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON on stdout");
        report
    };
    // Requests take 0.5 s: within a second every replica has finished some.
    std::thread::sleep(std::time::Duration::from_secs(1));
    let report = observe();
    let rule = |name: &str| report["rules"].as_array().unwrap().iter().find(|r| r["key"] == name).unwrap().clone();
    let latency = rule("latency")["fleet"].as_f64().unwrap_or_else(|| panic!("{report:#}"));
    assert!(latency > 0.0 && latency < 1000.0, "p95 end-to-end latency {latency} ms at light load: {report:#}");
    let queue: Vec<f64> =
        rule("queue_length")["perPod"].as_object().unwrap().values().filter_map(|v| v.as_f64()).collect();
    assert_eq!(queue, [0.0, 0.0, 0.0], "{report:#}");
    assert_eq!(report["decision"]["desiredReplicas"], 3, "{report:#}");

    // Overloaded (60 req/s against 32 on each): the latency and the queue ask for more.
    for url in &urls {
        let control = url.replace("/metrics", "/control");
        let addr = control.trim_start_matches("http://").split('/').next().unwrap().to_owned();
        let body = r#"{"request_rate": 60}"#;
        let mut stream = std::net::TcpStream::connect(&addr).unwrap();
        std::io::Write::write_all(
            &mut stream,
            format!("POST /control HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len()).as_bytes(),
        )
        .unwrap();
        let mut reply = String::new();
        std::io::Read::read_to_string(&mut stream, &mut reply).unwrap();
        assert!(reply.starts_with("HTTP/1.1 200"), "{reply}");
    }
    std::thread::sleep(std::time::Duration::from_secs(2));
    let report = observe();
    let desired = report["decision"]["desiredReplicas"].as_i64().unwrap();
    assert!(desired > 3, "an overloaded fleet scales up: {report:#}");
}
