//! `vllm-autoscaler run` as a user runs it: a kubeconfig pointing at the in-process API
//! server, pods scraped directly from the vLLM emulator, leader election, and a clean
//! shutdown on SIGTERM that releases the lease.

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use vllm_scaling_kube::fake_api::FakeApiServer;
use vllm_scaling_prom::emulator::Emulator;

mod common;

use common::{kubeconfig, seed_cluster};

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..200 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for {what}");
}

/// A cluster with one vLLM Deployment (its pod served by the emulator at queue 30) and
/// the seed policy, and `run` started against it with leader election.
struct Running {
    server: FakeApiServer,
    _emulator: Emulator,
    _dir: tempfile::TempDir,
    child: std::process::Child,
}

async fn start_run(extra: &[&str]) -> Running {
    let server = FakeApiServer::start().await.unwrap();
    let emulator = seed_cluster(&server).await;
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig(dir.path(), &server.url());
    let child = Command::new(env!("CARGO_BIN_EXE_vllm-autoscaler"))
        .args([
            "run",
            "--sync-period",
            "1s",
            "--metrics-addr",
            "127.0.0.1:0",
            "--leader-elect",
            "--identity",
            "replica-a",
        ])
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .env("VLLM_AUTOSCALER_LEASE_NAMESPACE", "default")
        .env_remove("KUBERNETES_SERVICE_HOST")
        .args(extra)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    Running { server, _emulator: emulator, _dir: dir, child }
}

fn sigterm(child: &std::process::Child) {
    let status = Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
    assert!(status.success());
}

/// Waits up to `limit` for the child to exit; its exit status and logs.
async fn exit_within(child: &mut std::process::Child, limit: Duration) -> Option<(std::process::ExitStatus, String)> {
    let start = std::time::Instant::now();
    while start.elapsed() < limit {
        if let Some(status) = child.try_wait().unwrap() {
            let mut logs = String::new();
            std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut logs).unwrap();
            return Some((status, logs));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    None
}

#[tokio::test]
async fn run_scales_through_scale_and_shuts_down_on_sigterm() {
    let Running { server, _emulator, _dir, mut child } = start_run(&[]).await;

    // 30 waiting against 10 on one replica: 3 replicas, written through /scale only.
    wait_for("the scale patch", || !server.requests_to("PATCH", "/deployments/llama-70b/scale").is_empty()).await;
    let patch = &server.requests_to("PATCH", "/deployments/llama-70b/scale")[0];
    assert_eq!(patch.body.as_ref().unwrap()["spec"], json!({"replicas": 3}));
    assert!(server.requests().iter().all(|r| !(r.path.ends_with("/deployments/llama-70b") && r.method != "GET")));
    let lease = server.get("coordination.k8s.io/v1", "Lease", "default", "vllm-autoscaler").expect("the lease");
    assert_eq!(lease["spec"]["holderIdentity"], "replica-a");

    // SIGTERM: the process stops on its own, releasing the lease.
    sigterm(&child);
    let Some((exit, logs)) = exit_within(&mut child, Duration::from_secs(5)).await else {
        let _ = child.kill();
        panic!("vllm-autoscaler run did not stop within 5 s of SIGTERM");
    };
    assert!(exit.success(), "exit {exit:?}\n{logs}");
    assert!(logs.contains("shutting down") && logs.contains("stopped"), "{logs}");
    // Giving the lease up on purpose is not a loss: no WARN says so.
    assert!(logs.contains("stepped down from the leadership"), "{logs}");
    assert!(!logs.contains("lost the leadership"), "a clean shutdown warned of a lost leadership: {logs}");
    let lease = server.get("coordination.k8s.io/v1", "Lease", "default", "vllm-autoscaler").unwrap();
    assert!(lease["spec"]["holderIdentity"].is_null(), "the lease is released: {lease}");
}

/// Logs read by a pipe (a container runtime, a log collector): no ANSI escapes in text,
/// one JSON object per line with `--log-format json` (or its environment variable), and
/// a start-up error said once, without its cause repeated.
#[test]
fn logs_on_a_pipe_are_plain_or_json_and_say_an_error_once() {
    let run = |args: &[&str], env: &[(&str, &str)]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_vllm-autoscaler"));
        cmd.arg("run").args(args).arg("--kubeconfig").arg("/nonexistent/kubeconfig");
        for (k, v) in env {
            cmd.env(k, v);
        }
        let out = cmd.env_remove("KUBERNETES_SERVICE_HOST").env_remove("NO_COLOR").output().unwrap();
        assert_eq!(out.status.code(), Some(1));
        String::from_utf8(out.stderr).unwrap()
    };
    let text = run(&[], &[]);
    assert!(!text.contains('\u{1b}'), "ANSI escapes on a pipe: {text:?}");
    assert_eq!(text.lines().count(), 1, "{text}");
    assert!(text.contains("ERROR") && text.contains("reading kubeconfig /nonexistent/kubeconfig"), "{text}");
    assert_eq!(text.matches("No such file or directory").count(), 1, "the cause is said once: {text}");

    for json in [run(&["--log-format", "json"], &[]), run(&[], &[("VLLM_AUTOSCALER_LOG_FORMAT", "json")])] {
        assert_eq!(json.lines().count(), 1, "{json}");
        for line in json.lines() {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
            assert_eq!(v["level"], "ERROR", "{v}");
            assert!(v["fields"]["error"].as_str().unwrap().contains("reading kubeconfig"), "{v}");
        }
    }
}

#[tokio::test]
async fn sigterm_exits_within_the_shutdown_timeout_while_the_api_server_hangs_or_is_gone() {
    for stopped in [false, true] {
        let Running { server, _emulator, _dir, mut child } = start_run(&["--shutdown-timeout", "2s"]).await;
        wait_for("the lease", || server.get("coordination.k8s.io/v1", "Lease", "default", "vllm-autoscaler").is_some())
            .await;
        let hanging = if stopped {
            drop(server);
            None
        } else {
            // Every request from now on hangs for an hour: evaluations, lease renewals and
            // the release all wait on it.
            server.inject(vllm_scaling_kube::fake_api::Fault::delay(Duration::from_secs(3600)).times(usize::MAX));
            Some(server)
        };
        // Let requests get stuck (a 1 s sync period, 2 s lease renewals).
        tokio::time::sleep(Duration::from_millis(2500)).await;
        let killed = std::time::Instant::now();
        sigterm(&child);
        let Some((exit, logs)) = exit_within(&mut child, Duration::from_secs(6)).await else {
            let _ = child.kill();
            panic!("stopped={stopped}: vllm-autoscaler run did not exit within 6 s of SIGTERM (shutdown timeout 2 s)");
        };
        let took = killed.elapsed();
        assert!(exit.success(), "stopped={stopped}: exit {exit:?}\n{logs}");
        assert!(took < Duration::from_millis(4000), "stopped={stopped}: took {took:?}\n{logs}");
        assert!(logs.contains("shutting down") && logs.contains("stopped"), "{logs}");
        drop(hanging);
    }
}
