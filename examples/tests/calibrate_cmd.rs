//! `vllm-autoscaler calibrate`: a sweep the simulator writes for a known profile, in
//! `vllm bench serve`'s format, is fitted back to that profile.

use std::path::Path;
use std::process::{Command, Output};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vllm-autoscaler"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("the binary runs")
}

/// The relative error (percent) the comparison table prints for `constant`.
fn relative_error(stdout: &str, constant: &str) -> f64 {
    let row = stdout
        .lines()
        .find(|l| l.starts_with(&format!("| {constant} |")))
        .unwrap_or_else(|| panic!("no row for {constant} in {stdout}"));
    let cell = row.split('|').nth(4).expect("4 columns").trim();
    cell.trim_end_matches('%').trim().parse().unwrap_or_else(|e| panic!("{cell}: {e}"))
}

#[test]
fn calibrate_recovers_the_profile_a_synthesized_sweep_was_written_from() {
    let dir = tempfile::tempdir().unwrap();
    let sweep = dir.path().join("sweep");
    let sweep_s = sweep.to_str().unwrap();
    let out = run(&[
        "calibrate",
        "--synthesize",
        "--profile",
        "h100-80gb-llama3-8b",
        "--rates",
        "1,4,16,inf",
        "--input-len",
        "512,3072",
        "--num-prompts",
        "150",
        "--seed",
        "7",
        "--out-dir",
        sweep_s,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let mut files: Vec<String> =
        std::fs::read_dir(&sweep).unwrap().map(|e| e.unwrap().path().to_str().unwrap().to_owned()).collect();
    files.sort();
    assert_eq!(files.len(), 8);
    // The files hold vLLM's own field names.
    let point: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&files[0]).unwrap()).unwrap();
    for field in [
        "request_rate",
        "max_concurrency",
        "completed",
        "total_input_tokens",
        "total_output_tokens",
        "duration",
        "request_throughput",
        "output_throughput",
        "mean_ttft_ms",
        "median_ttft_ms",
        "p99_ttft_ms",
        "mean_tpot_ms",
        "mean_itl_ms",
    ] {
        assert!(point.get(field).is_some(), "{field} missing in {point}");
    }
    assert!(files.iter().any(|f| f.contains("infqps")));
    let fitted = dir.path().join("fitted.yaml");
    let mut args = vec!["calibrate", "--compare-to", "h100-80gb-llama3-8b", "--out", fitted.to_str().unwrap()];
    args.extend(files.iter().map(String::as_str));
    let out = run(&args);
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{}", text(&out.stderr));
    // The stated error (docs/simulation.md): a and b within 5 %, d within 35 %, the
    // per-sequence decode cost c + d x context at each swept context within 20 %
    // (c alone is not identified: it trades off against d), every point's mean TTFT and
    // TPOT within 12 %.
    for (constant, bound) in [("stepBaseMs", 5.0), ("prefillMsPerToken", 5.0), ("attentionMsPerContextToken", 35.0)] {
        let e = relative_error(&stdout, constant);
        assert!(e.abs() < bound, "{constant}: {e} %\n{stdout}");
    }
    for context in ["576", "3136"] {
        let e = relative_error(&stdout, &format!("c + d x {context} (per-sequence decode cost)"));
        assert!(e.abs() < 20.0, "c + d x {context}: {e} %\n{stdout}");
    }
    let max = stdout
        .lines()
        .find_map(|l| l.strip_prefix("fit: RMS relative error "))
        .and_then(|l| l.split("max ").nth(1))
        .and_then(|l| l.split(" %").next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no fit line in {stdout}"));
    assert!(max < 12.0, "{stdout}");
    // The fitted profile is a profile simulate runs on, and says where its numbers came from.
    let yaml = std::fs::read_to_string(&fitted).unwrap();
    assert!(yaml.contains("fitted by vllm-autoscaler calibrate"), "{yaml}");
    let sim_out = dir.path().join("sim");
    let out = run(&[
        "simulate",
        "--quiet",
        "--no-plots",
        "--no-robustness",
        "--gen-duration",
        "240",
        "--gen-mean-rps",
        "5",
        "--policy",
        "fixed-99",
        "--profile",
        fitted.to_str().unwrap(),
        "--out",
        sim_out.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
}

fn assert_bad_input(out: &Output, needles: &[&str]) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for n in needles {
        assert!(err.contains(n), "`{n}` not in: {err}");
    }
}

#[test]
fn bad_sweeps_exit_2_naming_the_file_point_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let write = |name: &str, body: &str| {
        let p = dir.path().join(name);
        std::fs::write(&p, body).unwrap();
        p.to_str().unwrap().to_owned()
    };
    let good = r#"{"request_rate": 2.0, "max_concurrency": null, "duration": 50.0, "completed": 100,
        "total_input_tokens": 51200, "total_output_tokens": 12800, "request_throughput": 2.0,
        "output_throughput": 256.0, "mean_ttft_ms": 80.0, "mean_tpot_ms": 12.0}"#;
    let one = write("one.json", good);
    assert_bad_input(&run(&["calibrate", &one]), &["at least 2 sweep points"]);
    let broken =
        write("broken.json", &format!("[{good}, {}]", good.replace(r#""mean_tpot_ms": 12.0"#, r#""tpot": 12.0"#)));
    assert_bad_input(&run(&["calibrate", &broken]), &["broken.json", "point 1", "mean_tpot_ms"]);
    let not_json = write("text.json", "Successful requests: 100\n");
    assert_bad_input(&run(&["calibrate", &not_json]), &["text.json", "not a `vllm bench serve` result"]);
    assert_bad_input(&run(&["calibrate", &one, &one, "--base-profile", "tpu-v5"]), &["unknown profile `tpu-v5`"]);
    assert!(Path::new(&one).exists());
}
