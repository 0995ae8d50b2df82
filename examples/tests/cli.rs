//! The `validate` and `replay` commands, run as a user runs them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vllm-autoscaler"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn run(args: &[&str]) -> Output {
    bin().args(args).current_dir(root()).output().expect("the binary runs")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn validate_accepts_the_seed_example_and_bundled_policies() {
    let out = run(&["validate", "policies/example-policy.yaml", "policies/behavior-policy.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("example-policy.yaml: ok (example-policy)"));
}

#[test]
fn validate_reports_every_error_with_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(
        &bad,
        "apiVersion: autoscaler.production-stack/v1alpha1\nkind: vLLMScalingPolicy\nmetadata: {name: x}\nspec:\n  minReplicas: 5\n  maxReplicas: 2\n  scalingRules: [{metric: queue_length, threshold: -1}]\n",
    )
    .unwrap();
    let good = root().join("policies/example-policy.yaml");
    let out = bin().arg("validate").arg(&good).arg(&bad).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    // Every error at once, with its line and column: the schema's and core's.
    assert!(err.contains("bad.yaml:5:3: spec.minReplicas: must not exceed maxReplicas (5 > 2)"), "{err}");
    assert!(err.contains("bad.yaml:7:41: spec.scalingRules[0].threshold: must be greater than 0, got -1"), "{err}");
    let missing = bin().args(["validate", "/nonexistent/policy.yaml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("cannot read"));
}

fn run_with_stdin(args: &[&str], stdin: &str) -> Output {
    use std::io::Write as _;
    let mut child = bin()
        .args(args)
        .current_dir(root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn validate_walks_a_directory_and_reads_stdin() {
    // deploy/ holds the seed policy beside RBAC, the CRD, monitoring and a Helm chart.
    let out = run(&["validate", "../deploy"]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("example-policy.yaml: ok (example-policy)"), "{stdout}");
    assert!(stderr.contains("crd.yaml:3:1: note: skipped: a CustomResourceDefinition"), "{stderr}");
    assert!(stderr.contains("vllm-autoscaler: note: skipped: a Helm chart"), "{stderr}");
    assert!(
        stderr.contains("grafana-dashboard.json: note: skipped: neither a Kubernetes object nor a policy spec"),
        "{stderr}"
    );
    let out =
        run_with_stdin(&["validate", "-"], "maxReplicas: 3\nscalingRules: [{metric: queue_length, threshold: 0}]\n");
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stderr), "-:2:39: scalingRules[0].threshold: must be greater than 0, got 0\n");
}

#[test]
fn import_converts_an_hpa_into_a_policy_that_validates() {
    let hpa = "apiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata: {name: llama}\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: llama}\n  minReplicas: 1\n  maxReplicas: 6\n  metrics:\n  - type: Pods\n    pods:\n      metric: {name: vllm:num_requests_waiting}\n      target: {type: AverageValue, averageValue: \"5\"}\n  - type: Resource\n    resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}\n";
    // validate points at import.
    let out = run_with_stdin(&["validate", "-"], hpa);
    assert!(out.status.success());
    assert!(text(&out.stderr).contains("this is a HorizontalPodAutoscaler: `vllm-autoscaler import FILE` converts it"));
    let out = run_with_stdin(&["import", "-"], hpa);
    let policy = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(policy.starts_with("# note: metrics[1]: the Resource metric `cpu`"), "{policy}");
    let out = run_with_stdin(&["validate", "-"], &policy);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "-: ok (llama)\n");
    let out = run_with_stdin(&["import", "-"], "apiVersion: v1\nkind: Service\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("neither an autoscaling/v2 HorizontalPodAutoscaler nor a KEDA ScaledObject"));
}

#[test]
fn replay_reproduces_every_hpa_vector() {
    let dir = root().join("scenarios/hpa");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        let out = bin().arg("replay").arg(&path).output().unwrap();
        assert!(out.status.success(), "{}: {}", path.display(), text(&out.stderr));
        for line in text(&out.stdout).lines() {
            let v: serde_json::Value = serde_json::from_str(line).expect("each line is JSON");
            for key in ["at", "currentReplicas", "desiredReplicas", "rules", "limitedBy", "explanation"] {
                assert!(v.get(key).is_some(), "{}: no `{key}` in {line}", path.display());
            }
        }
        n += 1;
    }
    assert!(n >= 5, "expected the HPA vector scenarios, found {n}");
}

#[test]
fn replay_reports_unmet_expectations_with_exit_1() {
    let scenario = "policy: {maxReplicas: 10, scalingRules: [{metric: queue_length, threshold: 10}]}\nsteps:\n  - {at: 0, currentReplicas: 2, metrics: {queue_length: 60}, expect: {desiredReplicas: 3}}\n";
    let mut child = bin()
        .args(["replay", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write as _;
    child.stdin.take().unwrap().write_all(scenario.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("steps[0]: expected desiredReplicas 3, got 4"), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_str(text(&out.stdout).trim()).unwrap();
    assert_eq!(v["desiredReplicas"], 4);
}

#[test]
fn replay_rejects_malformed_scenarios_with_the_step_index() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("steps:\n  - {at: 0, currentReplicas: 1}\n", "policy"),
        (
            "policy: {maxReplicas: 3, scalingRules: [{metric: queue_length, threshold: 1}]}\nsteps:\n  - {at: 0, currentReplicas: 1}\n  - {at: 5, pods: [{name: a, redy: true}]}\n",
            "steps[1].pods[0]",
        ),
        (
            "policy: {maxReplicas: 3, scalingRules: [{metric: queue_length, threshold: 1}]}\nsteps:\n  - {at: 10, currentReplicas: 1}\n  - {at: 5}\n",
            "steps[1].at",
        ),
        ("policy: {maxReplicas: 0, scalingRules: []}\nsteps: []\n", "maxReplicas"),
    ];
    for (i, (scenario, needle)) in cases.iter().enumerate() {
        let path = dir.path().join(format!("s{i}.yaml"));
        std::fs::write(&path, scenario).unwrap();
        let out = bin().arg("replay").arg(&path).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "case {i}");
        assert!(text(&out.stderr).contains(needle), "case {i}: {}", text(&out.stderr));
        assert!(out.stdout.is_empty(), "case {i}: nothing is printed for a malformed scenario");
    }
}

#[test]
fn bundled_demo_scenario_replays() {
    let out = run(&["replay", "scenarios/queue-burst.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<serde_json::Value> = text(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 8);
    assert_eq!(lines[1]["desiredReplicas"], 4, "the burst doubles 2 replicas (legacy cap)");
    assert!(lines.iter().any(|l| l["limitedBy"] == "scaleDownStabilization"));
}

/// The `--flag`s a manifest (or a chart template) passes, checked against `command`'s help.
fn manifest_flags(command: &str, paths: &[&str]) -> Vec<String> {
    let help = text(&run(&[command, "--help"]).stdout);
    let mut flags = Vec::new();
    for path in paths {
        let manifest = std::fs::read_to_string(root().join(path)).unwrap();
        for line in manifest.lines() {
            let Some(arg) = line.trim().strip_prefix("- --") else { continue };
            let flag = arg.split(['=', ' ']).next().unwrap();
            assert!(help.contains(&format!("--{flag}")), "{path}: `--{flag}` is not a flag of `{command}`:\n{help}");
            flags.push(flag.to_owned());
        }
    }
    flags
}

#[test]
fn every_flag_the_deploy_manifests_pass_to_run_exists() {
    // The chart's shared engine arguments live in _helpers.tpl (both the controller and
    // the KEDA scaler include them).
    let flags = manifest_flags(
        "run",
        &[
            "../deploy/helm/vllm-autoscaler/templates/controller.yaml",
            "../deploy/helm/vllm-autoscaler/templates/_helpers.tpl",
            "../deploy/controller/deployment.yaml",
        ],
    );
    let keda = manifest_flags(
        "keda-scaler",
        &[
            "../deploy/helm/vllm-autoscaler/templates/keda-scaler.yaml",
            "../deploy/helm/vllm-autoscaler/templates/_helpers.tpl",
            "../deploy/keda/scaler.yaml",
        ],
    );
    assert!(keda.iter().any(|f| f == "tls-cert-file") && !keda.iter().any(|f| f == "insecure-no-tls"), "{keda:?}");
    for expected in [
        "prometheus-token-file",
        "prometheus-basic-auth-file",
        "prometheus-ca-file",
        "prometheus-matcher",
        "shutdown-timeout",
        "http-max-connections",
    ] {
        assert!(flags.iter().any(|f| f == expected), "the chart does not pass --{expected}: {flags:?}");
    }
}
