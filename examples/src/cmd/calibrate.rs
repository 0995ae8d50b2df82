//! `vllm-autoscaler calibrate`: fits a replica profile's step-time constants to a
//! `vllm bench serve` sweep (the JSON files `--save-result` writes), and with
//! `--synthesize` writes such a sweep from a profile.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use vllm_scaling_core::sim::{BenchLoad, BenchPoint, Fit, constant_errors, emulate_bench, fit_step_constants};

use super::simulate::{BadInput, exit_code, load_profile};

/// Arguments of `calibrate`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// `vllm bench serve --save-result` JSON files: one object per file, a JSON array,
    /// or one object per line; together, a sweep over request rates.
    #[arg(value_name = "BENCH_JSON", required_unless_present = "synthesize")]
    files: Vec<PathBuf>,
    /// The profile the fit starts from: its KV capacity, batch limits, cold start and
    /// price are kept (a built-in name or a file).
    #[arg(long, default_value = "h100-80gb-llama3-8b", value_name = "NAME|FILE")]
    base_profile: String,
    /// The fitted profile's name.
    #[arg(long, default_value = "calibrated")]
    name: String,
    /// Write the fitted profile here (YAML, for `simulate --profile`); default: print it.
    #[arg(long, value_name = "FILE")]
    out: Option<PathBuf>,
    /// Also print how far each fitted constant is from this profile's (a known truth,
    /// e.g. the profile a `--synthesize` sweep was written from).
    #[arg(long, value_name = "NAME|FILE")]
    compare_to: Option<String>,
    /// Seed of the emulated benchmark's arrivals.
    #[arg(long, default_value_t = 1)]
    seed: u64,

    /// Write a `vllm bench serve`-format sweep for `--profile` instead of fitting.
    #[arg(long, help_heading = "Synthesize")]
    synthesize: bool,
    /// The profile to write the sweep for.
    #[arg(long, default_value = "h100-80gb-llama3-8b", value_name = "NAME|FILE", help_heading = "Synthesize")]
    profile: String,
    /// Request rates of the sweep (`inf`: every request at once).
    #[arg(long, value_delimiter = ',', default_value = "1,4,16,inf", help_heading = "Synthesize")]
    rates: Vec<String>,
    /// Prompt lengths (`--random-input-len`); each length is swept over every rate.
    #[arg(long, value_delimiter = ',', default_value = "512,3072", help_heading = "Synthesize")]
    input_len: Vec<u32>,
    /// Output length (`--random-output-len`).
    #[arg(long, default_value_t = 128, help_heading = "Synthesize")]
    output_len: u32,
    /// Requests per point (`--num-prompts`).
    #[arg(long, default_value_t = 200, help_heading = "Synthesize")]
    num_prompts: u32,
    /// Client concurrency cap (`--max-concurrency`).
    #[arg(long, help_heading = "Synthesize")]
    max_concurrency: Option<u32>,
    /// Folder for the sweep's JSON files.
    #[arg(long, default_value = "bench-sweep", help_heading = "Synthesize")]
    out_dir: PathBuf,
}

/// Runs the command: exit 2 on bad input, 1 on other failures.
pub(crate) fn run(args: Args) -> ExitCode {
    let result = if args.synthesize { synthesize(&args) } else { calibrate(&args) };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("calibrate: {e:#}");
            ExitCode::from(exit_code(&e))
        }
    }
}

fn rate_name(rate: Option<f64>) -> String {
    rate.map_or_else(|| "inf".to_owned(), |r| format!("{r}"))
}

fn synthesize(args: &Args) -> Result<()> {
    let profile = load_profile(&args.profile, "--profile")?;
    let mut rates = Vec::new();
    for r in &args.rates {
        let rate = if r.trim() == "inf" {
            None
        } else {
            Some(
                r.trim()
                    .parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v > 0.0)
                    .ok_or_else(|| BadInput(format!("--rates: `{r}` is not a positive number or inf")))?,
            )
        };
        rates.push(rate);
    }
    if args.num_prompts == 0 || args.output_len == 0 || args.input_len.contains(&0) {
        return Err(BadInput("--num-prompts, --input-len and --output-len must be at least 1".to_owned()).into());
    }
    std::fs::create_dir_all(&args.out_dir)
        .with_context(|| format!("cannot create the folder {}", args.out_dir.display()))?;
    let mut written = 0;
    for &input_len in &args.input_len {
        for &rate in &rates {
            let load = BenchLoad {
                request_rate: rate,
                burstiness: 1.0,
                max_concurrency: args.max_concurrency,
                num_prompts: args.num_prompts,
                input_len,
                output_len: args.output_len,
            };
            let point = emulate_bench(&profile.model, &load, args.seed).map_err(|e| BadInput(e.to_string()))?;
            // vLLM's own layout: setup fields, then the results.
            let mut json = serde_json::json!({
                "date": "simulated",
                "backend": "vllm-autoscaler-simulator",
                "model_id": profile.served_model,
                "tokenizer_id": profile.served_model,
                "num_prompts": args.num_prompts,
                "dataset_name": "random",
                "random_input_len": input_len,
                "random_output_len": args.output_len,
                "profile": profile.name,
            });
            let results = serde_json::to_value(&point).context("cannot encode the point")?;
            if let (Some(obj), Some(extra)) = (json.as_object_mut(), results.as_object()) {
                obj.extend(extra.iter().map(|(k, v)| (k.clone(), v.clone())));
            }
            let file = args.out_dir.join(format!(
                "vllm-{}qps{}-in{input_len}-{}.json",
                rate_name(rate),
                args.max_concurrency.map_or_else(String::new, |c| format!("-concurrency{c}")),
                profile.name
            ));
            std::fs::write(&file, serde_json::to_string_pretty(&json).context("cannot encode the point")?)
                .with_context(|| format!("cannot write {}", file.display()))?;
            println!(
                "{}: rate {} in {input_len} out {}: mean TTFT {:.1} ms, mean TPOT {:.2} ms, {:.2} req/s",
                file.display(),
                rate_name(rate),
                args.output_len,
                point.mean_ttft_ms,
                point.mean_tpot_ms,
                point.request_throughput
            );
            written += 1;
        }
    }
    eprintln!("wrote {written} sweep points for profile {} into {}", profile.name, args.out_dir.display());
    Ok(())
}

fn read_points(files: &[PathBuf]) -> Result<Vec<BenchPoint>> {
    let mut points = Vec::new();
    for file in files {
        let shown = file.display();
        let text =
            std::fs::read_to_string(file).map_err(|e| BadInput(format!("{shown}: cannot read the sweep file: {e}")))?;
        let parsed = BenchPoint::parse_json(&text)
            .map_err(|e| BadInput(format!("{shown}: not a `vllm bench serve` result: {e}")))?;
        points.extend(parsed);
    }
    Ok(points)
}

fn calibrate(args: &Args) -> Result<()> {
    let base = load_profile(&args.base_profile, "--base-profile")?;
    let points = read_points(&args.files)?;
    let fit = fit_step_constants(&base.model, &points, args.seed).map_err(|e| BadInput(e.to_string()))?;
    print!("{}", fit_table(&fit));
    let mut profile = base.clone();
    profile.name = args.name.clone();
    profile.description = format!("{} refitted by vllm-autoscaler calibrate", base.description);
    profile.model = fit.model;
    let files: Vec<String> = args.files.iter().map(|f| display_name(f)).collect();
    let how = format!(
        "fitted by vllm-autoscaler calibrate to {} ({} points; mean TTFT/TPOT RMS relative error {:.1} %, max {:.1} %)",
        files.join(", "),
        points.len(),
        100.0 * fit.rms_rel_error,
        100.0 * fit.max_rel_error
    );
    for field in ["stepBaseMs", "prefillMsPerToken", "decodeMsPerSeq", "attentionMsPerContextToken"] {
        profile.sources.insert(field.to_owned(), how.clone());
    }
    profile.validate().map_err(|e| anyhow::anyhow!("the fitted profile does not validate: {e}"))?;
    if let Some(known) = &args.compare_to {
        let known = load_profile(known, "--compare-to")?;
        println!("\nfitted constants against {}:", known.name);
        println!("| constant | fitted | {} | relative error |\n|---|---:|---:|---:|", known.name);
        for (name, fitted, truth, err) in constant_errors(&fit.model, &known.model) {
            println!("| {name} | {fitted:.6} | {truth:.6} | {:+.1} % |", 100.0 * err);
        }
        // With one context length per point, c and d trade off; what the sweep pins down
        // is their sum at the contexts it ran.
        let mut contexts: Vec<u32> = fit.points.iter().map(|p| p.input_len + p.output_len / 2).collect();
        contexts.sort_unstable();
        contexts.dedup();
        for ctx in contexts {
            let per_seq = |m: &vllm_scaling_core::sim::ReplicaModel| {
                m.decode_ms_per_seq + m.attention_ms_per_context_token * f64::from(ctx)
            };
            let (f, k) = (per_seq(&fit.model), per_seq(&known.model));
            println!(
                "| c + d x {ctx} (per-sequence decode cost) | {f:.6} | {k:.6} | {:+.1} % |",
                100.0 * (f / k - 1.0)
            );
        }
    }
    let yaml = profile.to_yaml();
    match &args.out {
        Some(path) => {
            std::fs::write(path, &yaml).with_context(|| format!("cannot write {}", path.display()))?;
            eprintln!("wrote the fitted profile to {} (use: simulate --profile {})", path.display(), path.display());
        }
        None => println!("\n{yaml}"),
    }
    Ok(())
}

fn display_name(path: &Path) -> String {
    path.file_name().map_or_else(|| path.display().to_string(), |n| n.to_string_lossy().into_owned())
}

/// The per-point table of a fit, as Markdown.
fn fit_table(fit: &Fit) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| rate | concurrency | in | out | TTFT ms measured | model | error | TPOT ms measured | model | error |\n|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    );
    for p in &fit.points {
        let _ = writeln!(
            s,
            "| {} | {} | {} | {} | {:.1} | {:.1} | {:+.1} % | {:.2} | {:.2} | {:+.1} % |",
            rate_name(p.request_rate),
            p.max_concurrency.map_or_else(|| "-".to_owned(), |c| c.to_string()),
            p.input_len,
            p.output_len,
            p.ttft_ms.0,
            p.ttft_ms.1,
            100.0 * p.ttft_rel_error,
            p.tpot_ms.0,
            p.tpot_ms.1,
            100.0 * p.tpot_rel_error
        );
    }
    let m = &fit.model;
    let _ = writeln!(
        s,
        "\nfit: RMS relative error {:.2} %, max {:.2} % ({} model evaluations)\n\
         a stepBaseMs {:.4}, b prefillMsPerToken {:.6}, c decodeMsPerSeq {:.5}, d attentionMsPerContextToken {:.8}",
        100.0 * fit.rms_rel_error,
        100.0 * fit.max_rel_error,
        fit.evaluations,
        m.step_base_ms,
        m.prefill_ms_per_token,
        m.decode_ms_per_seq,
        m.attention_ms_per_context_token
    );
    s
}
