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
    assert!(err.contains("bad.yaml:spec.minReplicas: must not exceed maxReplicas (5 > 2)"), "{err}");
    assert!(err.contains("bad.yaml:spec.scalingRules[0].threshold: must be a finite number greater than 0"), "{err}");
    let missing = bin().args(["validate", "/nonexistent/policy.yaml"]).output().unwrap();
    assert_eq!(missing.status.code(), Some(1));
    assert!(text(&missing.stderr).contains("cannot read"));
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
