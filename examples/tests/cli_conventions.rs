//! The conventions every subcommand shares, run as a user runs the binary: durations with
//! units (plain numbers keep their old unit), the `VLLM_AUTOSCALER_` environment prefix,
//! `observe`'s policy before `--pods`, camelCase JSON, examples in every `--help`, and
//! shell completions.

use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_vllm-autoscaler"));
    // The variables under test come only from the test itself.
    for (k, _) in std::env::vars() {
        if k.starts_with("VLLM_AUTOSCALER_") || k == "PROMETHEUS_URL" {
            c.env_remove(k);
        }
    }
    c
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn policy(dir: &tempfile::TempDir) -> std::path::PathBuf {
    let path = dir.path().join("policy.yaml");
    std::fs::write(
        &path,
        "apiVersion: autoscaler.production-stack/v1alpha1\nkind: vLLMScalingPolicy\nmetadata: {name: demo}\nspec:\n  maxReplicas: 4\n  scalingRules:\n    - {metric: queue_length, threshold: 5}\n",
    )
    .unwrap();
    path
}

/// A port on 127.0.0.1 that nothing listens on.
fn closed_url() -> String {
    let addr = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    format!("http://{addr}/metrics")
}

fn usage_error(out: &Output) -> String {
    assert_eq!(out.status.code(), Some(2), "a usage error exits 2: {}", text(&out.stderr));
    text(&out.stderr)
}

#[test]
fn every_time_flag_takes_units_and_plain_numbers_keep_their_unit() {
    let dir = tempfile::tempdir().unwrap();
    // 500ms between the two scrapes, a 1 s timeout given as a plain number, 2m max age.
    let started = std::time::Instant::now();
    let out = bin()
        .arg("observe")
        .arg(policy(&dir))
        .args(["--pods", &closed_url(), "--interval", "500ms", "--timeout", "1", "--max-age", "2m", "--json"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(started.elapsed() < std::time::Duration::from_secs(30));
    // Every time flag, with a bad value, names the accepted forms.
    let cases: &[&[&str]] = &[
        &["observe", "p.yaml", "--interval", "5x"],
        &["observe", "p.yaml", "--timeout", "soon"],
        &["observe", "p.yaml", "--max-age", "1m-"],
        &["run", "--sync-period", "fast"],
        &["run", "--request-timeout", "10 s"],
        &["run", "--scrape-timeout", "s"],
        &["run", "--status-interval", "1 m"],
        &["gpu-exporter", "--window", "30x"],
        &["gpu-exporter", "--poll-interval=-2s"],
        &["gpu-exporter", "--scrape-timeout", "x"],
        &["simulate", "--cold-start", "30s,later"],
        &["simulate", "--jitter", "x"],
        &["simulate", "--slo-ttft", "x"],
        &["simulate", "--scrape-interval", "x"],
        &["simulate", "--prometheus-lag", "x"],
        &["simulate", "--sync-period", "x"],
        &["simulate", "--gen-duration", "x"],
        &["simulate", "--step-base-ms", "x"],
        &["simulate", "--rate-profile-days", "x"],
    ];
    for args in cases {
        let err = usage_error(&bin().args(*args).output().unwrap());
        assert!(err.contains("is not a duration") && err.contains("500ms, 15s or 1m"), "{args:?}: {err}");
    }
}

#[test]
fn simulate_takes_durations_for_its_times() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    // A 5-minute generated run with a 30 s cold start, an SLO of 1500 ms.
    let run = bin()
        .args(["simulate", "--quiet", "--no-plots", "--policy", "fixed-peak", "--gen-duration", "5m"])
        .args(["--cold-start", "30s", "--slo-ttft", "1500ms", "--gen-mean-rps", "2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(run.status.success(), "{}", text(&run.stderr));
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).unwrap()).unwrap();
    assert_eq!(report["coldStartSecs"], 30.0, "{report:#}");
    assert_eq!(report["config"]["fleet"]["sloTtftSecs"], 1.5, "{:#}", report["config"]);
    assert_eq!(report["config"]["fleet"]["coldStartSecs"], 30.0, "{:#}", report["config"]);
    let span = report["source"]["stats"]["durationSecs"].as_f64().unwrap();
    assert!(span > 200.0 && span <= 300.0, "a 5-minute trace: {span}");
}

#[test]
fn env_backed_flags_read_the_vllm_autoscaler_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let prometheus = closed_url().replace("/metrics", "");
    let out = bin()
        .arg("observe")
        .arg(policy(&dir))
        .args(["--timeout", "1s"])
        .env("VLLM_AUTOSCALER_PROMETHEUS_URL", &prometheus)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("queue_length [prometheus]"), "{}", text(&out.stdout));
    // The unprefixed name is not read.
    let out = bin().arg("observe").arg(policy(&dir)).env("PROMETHEUS_URL", &prometheus).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("give --prometheus-url URL"), "{}", text(&out.stderr));
    // The help names the variables.
    let help = text(&bin().args(["run", "--help"]).output().unwrap().stdout);
    for var in ["VLLM_AUTOSCALER_NAMESPACE", "VLLM_AUTOSCALER_LEASE_NAMESPACE", "VLLM_AUTOSCALER_IDENTITY"] {
        assert!(help.contains(&format!("[env: {var}")), "{var} in {help}");
    }
}

#[test]
fn observe_takes_the_policy_first_and_one_url_per_pods() {
    let dir = tempfile::tempdir().unwrap();
    let policy = policy(&dir);
    let policy = policy.to_str().unwrap();
    let (a, b) = (closed_url(), closed_url());
    // Two URLs after one --pods, then the policy: refused, not read as a third URL.
    let err = usage_error(&bin().args(["observe", "--pods", &a, &b, policy]).output().unwrap());
    assert!(err.contains("unexpected argument"), "{err}");
    // Repeated, comma-separated, and --pods before the policy: all read the same two pods.
    for args in
        [vec!["observe", policy, "--pods", &a, "--pods", &b], vec!["observe", policy, "--pods", &format!("{a},{b}")]]
    {
        let out = bin().args(&args).args(["--json", "--timeout", "1s", "--interval", "10ms"]).output().unwrap();
        assert!(out.status.success(), "{args:?}: {}", text(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        let failures = report["rules"][0]["podFailures"].as_object().expect("camelCase podFailures");
        assert_eq!(failures.len(), 2, "{args:?}: {report:#}");
    }
    let out = bin().args(["observe", "--pods", &a, policy, "--json", "--timeout", "1s"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
}

#[test]
fn machine_readable_output_is_camel_case() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .arg("observe")
        .arg(policy(&dir))
        .args(["--pods", &closed_url(), "--json", "--timeout", "1s", "--replicas", "2"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    fn keys(v: &serde_json::Value, path: &str, out: &mut Vec<String>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, v) in m {
                    // Maps keyed by pod or rule names are data, not field names.
                    if !matches!(path, "perPod" | "podFailures") {
                        out.push(k.clone());
                    }
                    keys(v, k, out);
                }
            }
            serde_json::Value::Array(a) => a.iter().for_each(|v| keys(v, path, out)),
            _ => {}
        }
    }
    let mut all = Vec::new();
    keys(&report, "", &mut all);
    assert!(all.iter().any(|k| k == "ageSecs"), "{all:?}");
    assert!(all.iter().any(|k| k == "currentReplicas"), "{all:?}");
    let snake: Vec<&String> = all.iter().filter(|k| k.contains('_')).collect();
    assert!(snake.is_empty(), "snake_case keys in observe --json: {snake:?}");
}

#[test]
fn every_help_has_examples() {
    let top = text(&bin().arg("--help").output().unwrap().stdout);
    assert!(top.contains("Examples:") && top.contains("Conventions:"), "{top}");
    for sub in [
        "validate",
        "import",
        "replay",
        "observe",
        "emulate-vllm",
        "simulate",
        "calibrate",
        "gpu-exporter",
        "crd",
        "run",
        "completions",
    ] {
        let out = bin().args([sub, "--help"]).output().unwrap();
        assert!(out.status.success(), "{sub}");
        let help = text(&out.stdout);
        assert!(help.contains("Examples:") && help.contains(&format!("vllm-autoscaler {sub}")), "{sub}: {help}");
    }
}

#[test]
fn completions_for_bash_zsh_and_fish() {
    for (shell, marker) in [
        ("bash", "complete -F _vllm__autoscaler"),
        ("zsh", "#compdef vllm-autoscaler"),
        ("fish", "complete -c vllm-autoscaler"),
    ] {
        let out = bin().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
        let script = text(&out.stdout);
        assert!(script.contains(marker), "{shell}: no {marker:?}");
        for word in ["observe", "simulate", "sync-period", "prometheus-url"] {
            assert!(script.contains(word), "{shell} completes {word}");
        }
    }
    // A reader that goes away early (`| head`) is not an error, and no panic.
    let mut child = bin()
        .args(["completions", "bash"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success() && !text(&out.stderr).contains("panicked"), "{}", text(&out.stderr));
    let err = usage_error(&bin().args(["completions", "tcsh"]).output().unwrap());
    assert!(err.contains("possible values") && err.contains("bash"), "{err}");
}
