//! `vllm-autoscaler simulate` with the user's own policies, profiles and traces, run as
//! a user runs it: the binary, its exit status and its files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vllm-autoscaler"))
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A short generated load: a few seconds of simulation in a debug build.
const SMALL: [&str; 5] = ["--gen-duration", "240", "--no-plots", "--quiet", "--no-robustness"];

fn simulate(out: &Path, extra: &[&str]) -> Output {
    bin()
        .arg("simulate")
        .args(SMALL)
        .args(if extra.contains(&"--gen-mean-rps") { &[][..] } else { &["--gen-mean-rps", "8"][..] })
        .arg("--out")
        .arg(out)
        .args(extra)
        .current_dir(root())
        .output()
        .expect("the binary runs")
}

fn report(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report.json")).expect("JSON")
}

fn policy<'a>(report: &'a serde_json::Value, name: &str) -> &'a serde_json::Value {
    report["policies"]
        .as_array()
        .expect("policies")
        .iter()
        .find(|p| p["name"] == name)
        .unwrap_or_else(|| panic!("no policy {name} in {report}"))
}

#[test]
fn the_seed_example_and_the_bundled_policy_run_on_a_shipped_profile() {
    let dir = tempfile::tempdir().unwrap();
    let out = simulate(
        dir.path(),
        &[
            "--profile",
            "a100-80gb-llama3-8b",
            "--policy-file",
            "policies/example-policy.yaml",
            "--policy-file",
            "policies/behavior-policy.yaml",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = report(dir.path());
    let names: Vec<&str> = r["policies"].as_array().unwrap().iter().filter_map(|p| p["name"].as_str()).collect();
    // Without --recommend the derived policy stays out; the baselines stay in.
    assert_eq!(
        names,
        [
            "hpa-rate",
            "hpa-queue",
            "hpa-running",
            "hpa-kv",
            "kpa",
            "fixed-peak",
            "fixed-99",
            "oracle",
            "example-policy",
            "llama3-8b"
        ]
    );
    for name in ["example-policy", "llama3-8b"] {
        let p = policy(&r, name);
        assert_eq!(p["requests"], policy(&r, "oracle")["requests"], "{p}");
        assert!(p["gpuHours"].as_f64().unwrap() > 0.0, "{p}");
    }
    assert_eq!(r["profile"]["name"], "a100-80gb-llama3-8b");
    assert!(dir.path().join("example-policy-policy.yaml").is_file());
    assert!(text(&out.stdout).contains("$1.80 per GPU-hour"), "{}", text(&out.stdout));
    // --recommend brings the derived policy back, first.
    let dir2 = tempfile::tempdir().unwrap();
    let out =
        simulate(dir2.path(), &["--policy", "oracle", "--recommend", "--policy-file", "policies/example-policy.yaml"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let names: Vec<String> = report(dir2.path())["policies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(names, ["vllm-scaling", "oracle", "example-policy"]);
}

#[test]
fn a_policy_file_gets_the_same_decisions_as_the_built_in_engine_policy() {
    // hpa-queue is the engine running this policy at the target tuned on the training
    // window (maxReplicas from --max-replicas): the same document from a file must make
    // the same decisions on the same arrivals.
    let dir = tempfile::tempdir().unwrap();
    let common = ["--policy", "hpa-queue", "--max-replicas", "6", "--gen-mean-rps", "30"];
    let first = dir.path().join("first");
    let out = simulate(&first, &common);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let tuned = report(&first)["tuning"]
        .as_array()
        .expect("tuning")
        .iter()
        .find(|t| t["policy"] == "hpa-queue")
        .and_then(|t| t["threshold"].as_f64())
        .expect("hpa-queue was tuned");
    let file = dir.path().join("mine.yaml");
    std::fs::write(
        &file,
        format!("apiVersion: autoscaler.production-stack/v1alpha1\nkind: vLLMScalingPolicy\nmetadata:\n  name: mine\nspec:\n  minReplicas: 1\n  maxReplicas: 6\n  scalingRules:\n    - metric: queue_length\n      threshold: {tuned}\n      source: prometheus\n  behavior: {{}}\n"),
    )
    .unwrap();
    let out_dir = dir.path().join("out");
    let mut args = common.to_vec();
    args.extend(["--policy-file", file.to_str().unwrap()]);
    let out = simulate(&out_dir, &args);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = report(&out_dir);
    let (theirs, mine) = (policy(&r, "hpa-queue"), policy(&r, "mine"));
    assert!(theirs["scaleEvents"].as_u64().unwrap() > 0, "the load makes it scale: {theirs}");
    for field in ["sloAttainment", "gpuHours", "scaleEvents", "peakReplicas", "ttftP99S", "directionChanges"] {
        assert_eq!(theirs[field], mine[field], "{field}: {theirs} vs {mine}");
    }
}

fn assert_bad_input(out: &Output, needles: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn bad_profiles_and_policies_exit_2_naming_the_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let out = simulate(dir.path(), &["--profile", "h200-141gb"]);
    assert_bad_input(&out, &["unknown profile `h200-141gb`", "h100-tp8-llama3-70b"]);

    let h100 = std::fs::read_to_string(root().join("../profiles/h100-80gb-llama3-8b.yaml")).unwrap();
    let broken = dir.path().join("broken.yaml");
    std::fs::write(&broken, h100.replace("kvCacheTokens: 420000", "kvCacheTokens: 0")).unwrap();
    let out = simulate(dir.path(), &["--profile", broken.to_str().unwrap()]);
    assert_bad_input(&out, &["broken.yaml", "field kvCacheTokens", "at least 1"]);
    std::fs::write(&broken, h100.replace("stepBaseMs: 6.0", "stepBaseMs: -6.0")).unwrap();
    assert_bad_input(&simulate(dir.path(), &["--profile", broken.to_str().unwrap()]), &["field stepBaseMs"]);
    std::fs::write(&broken, h100.replace("stepBaseMs: 6.0", "stepBase: 6.0")).unwrap();
    assert_bad_input(
        &simulate(dir.path(), &["--profile", broken.to_str().unwrap()]),
        &["unknown field `stepBase`", "line"],
    );
    assert_bad_input(&simulate(dir.path(), &["--kv-cache-tokens", "0"]), &["kv_cache_tokens", "--kv-cache-tokens"]);

    let policy = dir.path().join("bad-policy.yaml");
    std::fs::write(&policy, "minReplicas: 5\nmaxReplicas: 2\nscalingRules: [{metric: queue_length, threshold: -1}]\n")
        .unwrap();
    let out = simulate(dir.path(), &["--policy-file", policy.to_str().unwrap()]);
    assert_bad_input(
        &out,
        &["bad-policy.yaml:spec.minReplicas", "bad-policy.yaml:spec.scalingRules[0].threshold", "does not validate"],
    );

    std::fs::write(
        &policy,
        "maxReplicas: 8\nscalingRules:\n  - {metric: queue_length, threshold: 5}\n  - {metric: custom, name: up, query: 'sum(up)', threshold: 3}\n",
    )
    .unwrap();
    let out = simulate(dir.path(), &["--policy-file", policy.to_str().unwrap()]);
    assert_bad_input(&out, &["bad-policy.yaml:spec.scalingRules[1] (`up`)", "sum(up)", "--allow-unmodelled"]);
    let out =
        simulate(dir.path(), &["--policy", "oracle", "--allow-unmodelled", "--policy-file", policy.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("reads as missing"), "{}", text(&out.stderr));
}

/// The `vLLMScalingPolicy` examples of the README (whole documents, `spec:` fragments
/// and bare rule lists), each as a complete document.
fn readme_policies() -> Vec<(usize, String)> {
    let readme = std::fs::read_to_string(root().join("../README.md")).expect("README.md");
    let mut out = Vec::new();
    let mut block: Option<(usize, String)> = None;
    for (i, line) in readme.lines().enumerate() {
        match &mut block {
            None if line.trim_start() == "```yaml" => block = Some((i + 1, String::new())),
            Some((_, b)) if line.trim_start() == "```" => {
                let (at, body) = block.take().unwrap_or_default();
                if !body.contains("scalingRules") || body.contains("steps:") {
                    continue; // a replay scenario or no policy
                }
                let doc = if body.starts_with("apiVersion") {
                    body
                } else if body.starts_with("spec:") {
                    format!(
                        "apiVersion: autoscaler.production-stack/v1alpha1\nkind: vLLMScalingPolicy\nmetadata: {{name: readme-line-{at}}}\n{body}"
                    )
                } else {
                    let rules: Vec<&str> = body.lines().map(|l| l.strip_prefix("  ").unwrap_or(l)).collect();
                    format!("maxReplicas: 10\n{}\n", rules.join("\n"))
                };
                out.push((at, doc));
            }
            Some((_, b)) => {
                b.push_str(line);
                b.push('\n');
            }
            None => {}
        }
    }
    out
}

#[test]
fn every_policy_of_the_readme_runs() {
    let dir = tempfile::tempdir().unwrap();
    let policies = readme_policies();
    assert!(policies.len() >= 4, "{policies:?}");
    let mut args: Vec<String> = ["--policy", "oracle", "--allow-unmodelled"].map(String::from).to_vec();
    for (at, doc) in &policies {
        let file = dir.path().join(format!("readme-{at}.yaml"));
        std::fs::write(&file, doc).unwrap();
        args.push("--policy-file".to_owned());
        args.push(file.to_str().unwrap().to_owned());
    }
    let out_dir = dir.path().join("out");
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = simulate(&out_dir, &refs);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = report(&out_dir);
    assert_eq!(r["policies"].as_array().unwrap().len(), policies.len() + 1, "{r}");
    // The README's custom queries that name no router arrival counter are the only
    // unmodelled rules, and the run says so; its arrival-rate rules (production-stack's
    // router counter) are modelled.
    let err = text(&out.stderr);
    assert!(err.contains("router_queue"), "{err}");
    assert!(!err.contains("PromQL `sum(rate(vllm:num_incoming_requests_total"), "{err}");
}

#[test]
fn traces_in_their_own_layout_and_rate_profiles_run() {
    let dir = tempfile::tempdir().unwrap();
    // The Azure dataset's own columns and wall-clock times, unsorted, with an extra column.
    let mut csv = String::from("GeneratedTokens,TIMESTAMP,Extra,ContextTokens\n");
    for i in (0..900).rev() {
        let (m, s) = (15 + i / 240, f64::from(i % 240) / 4.0);
        csv.push_str(&format!("{},2023-11-16 18:{m:02}:{s:09.6},\"a,b\",{}\n", 20 + i % 50, 300 + i));
    }
    let trace = dir.path().join("azure-raw.csv");
    std::fs::write(&trace, &csv).unwrap();
    let columns = "ts=TIMESTAMP,in=ContextTokens,out=GeneratedTokens";
    let out_dir = dir.path().join("out");
    let out = simulate(&out_dir, &["--policy", "oracle", "--trace", trace.to_str().unwrap(), "--columns", columns]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = report(&out_dir);
    assert_eq!(r["source"]["stats"]["requests"], 900);
    assert!((r["source"]["stats"]["durationSecs"].as_f64().unwrap() - 224.75).abs() < 1e-6, "{r}");

    // Columns that do not map, a time that does not parse: exit 2 with the line and column.
    let wrong = "ts=TIME,in=ContextTokens,out=GeneratedTokens";
    let out = simulate(&out_dir, &["--trace", trace.to_str().unwrap(), "--columns", wrong]);
    assert_bad_input(&out, &["azure-raw.csv", "line 1: no column `TIME` for ts=", "TIMESTAMP, Extra"]);
    let out = simulate(&out_dir, &["--trace", trace.to_str().unwrap(), "--columns", "ts=TIMESTAMP,in=ContextTokens"]);
    assert_bad_input(&out, &["--columns", "needs all of ts=, in= and out="]);
    let out =
        simulate(&out_dir, &["--trace", trace.to_str().unwrap(), "--columns", columns, "--time-format", "epoch-ms"]);
    assert_bad_input(&out, &["line 2: column `TIMESTAMP`", "not a number", "--skip-bad-rows"]);

    // A two-day rate profile (ServeGen's layout), rescaled.
    let mut profile =
        String::from("model,window_start_seconds,window_seconds,total_rps,active_clients,rate_weighted_client_cv\n");
    for w in 0..288 {
        let rps = 100.0 + 80.0 * (f64::from(w) / 144.0 * std::f64::consts::PI).sin();
        profile.push_str(&format!("m-test,{},600,{rps:.2},10,1.2\n", w * 600));
    }
    let rates = dir.path().join("rates.csv");
    std::fs::write(&rates, &profile).unwrap();
    let rp_dir = dir.path().join("rp");
    let out = simulate(
        &rp_dir,
        &[
            "--policy",
            "fixed-peak",
            "--rate-profile",
            rates.to_str().unwrap(),
            "--rate-profile-days",
            "2",
            "--rate-profile-mean-rps",
            "0.05",
        ],
    );
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = report(&rp_dir);
    assert!(r["source"]["name"].as_str().unwrap().ends_with("rates.csv:m-test"), "{r}");
    let stats = &r["source"]["stats"];
    assert!(stats["durationSecs"].as_f64().unwrap() > 1.9 * 86_400.0, "{stats}");
    assert!((stats["meanRps"].as_f64().unwrap() - 0.05).abs() < 0.005, "{stats}");
    let out = simulate(&rp_dir, &["--rate-profile", rates.to_str().unwrap(), "--rate-profile-model", "m-large"]);
    assert_bad_input(&out, &["rates.csv", "no windows for model `m-large`", "m-test"]);
}
