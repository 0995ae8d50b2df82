//! `vllm-autoscaler simulate`: replays a trace (or the built-in generator) against a
//! modelled vLLM fleet under every policy of the comparison, prints the table, and writes
//! `report.json`, the plots and the recommended policy into `--out`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use vllm_scaling_core::sim::{
    ExperimentConfig, FleetConfig, GeneratorConfig, Plan, PolicyKind, PolicyReport, ReplicaModel, Router, RunResult,
    Stage, Trace, TraceOptions, TraceStats,
};

mod plot;

/// Arguments of `simulate`.
#[derive(clap::Args, Debug)]
pub(crate) struct Args {
    /// Trace CSV files (`timestamp_seconds,input_tokens,output_tokens`), e.g.
    /// `../shared/traces/azure2023_conv.csv`. Several run one after the other. Without
    /// one, the built-in generator (a compressed day of chat traffic with bursts) runs.
    #[arg(long = "trace", value_name = "CSV")]
    traces: Vec<PathBuf>,
    /// Policies to compare (comma-separated): vllm-scaling, hpa-queue, kpa, fixed-peak,
    /// fixed-99, oracle. Default: all.
    #[arg(long = "policy", value_delimiter = ',', value_name = "NAME")]
    policies: Vec<PolicyKind>,
    /// Cold start, seconds from the scale decision to a ready replica. Several values
    /// (comma-separated) sweep them.
    #[arg(long = "cold-start", value_delimiter = ',', default_value = "60", value_name = "SECS")]
    cold_starts: Vec<f64>,
    /// Replay each request this many times (a fraction adds one more copy with that
    /// probability), each copy jittered by up to `--jitter`.
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// Largest shift of a replayed copy, seconds (uniform in ±jitter, seeded).
    #[arg(long, default_value_t = 0.5)]
    jitter: f64,
    /// Play the trace this many times faster.
    #[arg(long, default_value_t = 1.0)]
    time_compression: f64,
    /// Skip malformed trace rows (and say how many) instead of stopping at the first.
    #[arg(long)]
    skip_bad_rows: bool,
    /// The time-to-first-token objective, seconds.
    #[arg(long, default_value_t = 2.0)]
    slo_ttft: f64,
    /// Share of requests that must meet the objective (fixed-99 and the oracle size for it).
    #[arg(long, default_value_t = 0.99)]
    attainment_target: f64,
    /// Seed of the replay jitter, the generator and the calibration.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Output folder.
    #[arg(long, default_value = "sim-out")]
    out: PathBuf,
    /// Skip the SVG/PNG plots.
    #[arg(long)]
    no_plots: bool,
    /// No progress bars.
    #[arg(long, short)]
    quiet: bool,
    /// Policies simulated at once (default: the number of CPUs).
    #[arg(long)]
    jobs: Option<usize>,

    /// Step cost `a`, milliseconds.
    #[arg(long, default_value_t = ReplicaModel::default().step_base_ms, help_heading = "Replica model")]
    step_base_ms: f64,
    /// Step cost `b` per prompt token, milliseconds.
    #[arg(long, default_value_t = ReplicaModel::default().prefill_ms_per_token, help_heading = "Replica model")]
    prefill_ms_per_token: f64,
    /// Step cost `c` per sequence in the batch, milliseconds.
    #[arg(long, default_value_t = ReplicaModel::default().decode_ms_per_seq, help_heading = "Replica model")]
    decode_ms_per_seq: f64,
    /// KV-cache capacity, tokens.
    #[arg(long, default_value_t = ReplicaModel::default().kv_cache_tokens, help_heading = "Replica model")]
    kv_cache_tokens: u64,
    /// Most sequences in a batch (`--max-num-seqs`).
    #[arg(long, default_value_t = ReplicaModel::default().max_num_seqs, help_heading = "Replica model")]
    max_num_seqs: u32,
    /// Token budget of a step (`--max-num-batched-tokens`).
    #[arg(long, default_value_t = ReplicaModel::default().max_batched_tokens, help_heading = "Replica model")]
    max_batched_tokens: u32,

    /// Pod scrape interval of the baselines, seconds (the recommended policy scrapes pods every 5 s).
    #[arg(long, default_value_t = 15.0, help_heading = "Fleet")]
    scrape_interval: f64,
    /// Prometheus lag, seconds (rules read from Prometheus see data this old).
    #[arg(long, default_value_t = 0.0, help_heading = "Fleet")]
    prometheus_lag: f64,
    /// The engine's sync period, seconds.
    #[arg(long, default_value_t = 15.0, help_heading = "Fleet")]
    sync_period: f64,
    /// Routing: least-outstanding or round-robin.
    #[arg(long, default_value = "least-outstanding", value_parser = parse_router, help_heading = "Fleet")]
    router: Router,
    /// Fewest replicas of the scaling policies.
    #[arg(long, default_value_t = 1, help_heading = "Fleet")]
    min_replicas: i32,
    /// Most replicas of the scaling policies (default: twice the oracle's peak, the GPU
    /// quota a capacity planner would grant).
    #[arg(long, help_heading = "Fleet")]
    max_replicas: Option<i32>,
    /// Load per replica the recommended policy and the KPA aim at, as a share of the
    /// calibrated sustainable rate.
    #[arg(long, default_value_t = ExperimentConfig::default().target_utilization, help_heading = "Fleet")]
    target_utilization: f64,
    /// Measure adaptive policies from their first pass over the trace (default: they
    /// replay it twice and are measured on the second pass, starting in their own state).
    #[arg(long, help_heading = "Fleet")]
    no_warm_up_pass: bool,

    /// Generator: length of the run, seconds.
    #[arg(long, default_value_t = GeneratorConfig::default().duration_secs, help_heading = "Built-in generator")]
    gen_duration: f64,
    /// Generator: mean arrival rate, requests per second.
    #[arg(long, default_value_t = GeneratorConfig::default().mean_rps, help_heading = "Built-in generator")]
    gen_mean_rps: f64,
    /// Generator: coefficient of variation of inter-arrival times (1 = Poisson).
    #[arg(long, default_value_t = GeneratorConfig::default().arrival_cv, help_heading = "Built-in generator")]
    gen_arrival_cv: f64,
    /// Generator: expected bursts per hour.
    #[arg(long, default_value_t = GeneratorConfig::default().bursts_per_hour, help_heading = "Built-in generator")]
    gen_bursts_per_hour: f64,
    /// Generator: rate multiplier inside a burst.
    #[arg(long, default_value_t = GeneratorConfig::default().burst_multiplier, help_heading = "Built-in generator")]
    gen_burst_multiplier: f64,
}

fn parse_router(s: &str) -> Result<Router, String> {
    match s {
        "least-outstanding" => Ok(Router::LeastOutstanding),
        "round-robin" => Ok(Router::RoundRobin),
        other => Err(format!("unknown router `{other}`: expected least-outstanding or round-robin")),
    }
}

/// Runs the command; prints the error chain and exits 1 on failure.
pub(crate) fn run(args: Args) -> ExitCode {
    match execute(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simulate: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Where the arrivals came from.
#[derive(Serialize, Clone)]
struct Source {
    /// The file, or `generator`.
    name: String,
    /// Stats after rate scaling and compression.
    stats: TraceStats,
    rate_scale: f64,
    jitter_secs: f64,
    time_compression: f64,
    skipped_rows: usize,
}

#[derive(Serialize)]
struct Ratios {
    /// vllm-scaling GPU-hours over the oracle's.
    vllm_scaling_vs_oracle_gpu_hours: Option<f64>,
    /// vllm-scaling GPU-hours over fixed-99's.
    vllm_scaling_vs_fixed_99_gpu_hours: Option<f64>,
    /// vllm-scaling GPU-hours over hpa-queue's.
    vllm_scaling_vs_hpa_gpu_hours: Option<f64>,
    /// vllm-scaling attainment minus hpa-queue's.
    vllm_scaling_minus_hpa_attainment: Option<f64>,
    /// fixed-99 GPU-hours over the oracle's.
    fixed_99_vs_oracle_gpu_hours: Option<f64>,
}

#[derive(Serialize)]
struct Report<'a> {
    source: &'a Source,
    cold_start_secs: f64,
    config: &'a ExperimentConfig,
    calibration: &'a vllm_scaling_core::sim::Calibration,
    burstiness: &'a vllm_scaling_core::sim::Burstiness,
    oracle: &'a vllm_scaling_core::sim::OraclePlan,
    fixed_peak: i32,
    fixed_99: &'a vllm_scaling_core::sim::FixedSearch,
    policies: Vec<&'a PolicyReport>,
    ratios: Ratios,
    elapsed_secs: f64,
    simulated_requests: usize,
    simulated_requests_per_sec: f64,
}

fn execute(args: &Args) -> Result<()> {
    let started = Instant::now();
    let model = ReplicaModel {
        step_base_ms: args.step_base_ms,
        prefill_ms_per_token: args.prefill_ms_per_token,
        decode_ms_per_seq: args.decode_ms_per_seq,
        kv_cache_tokens: args.kv_cache_tokens,
        max_num_seqs: args.max_num_seqs,
        max_batched_tokens: args.max_batched_tokens,
    };
    model.validate().context("check the replica model flags")?;
    if args.cold_starts.is_empty() {
        bail!("--cold-start needs at least one value");
    }
    let policies: Vec<PolicyKind> =
        if args.policies.is_empty() { PolicyKind::ALL.to_vec() } else { args.policies.clone() };
    let sources = load_sources(args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the output folder {}", args.out.display()))?;
    let many = sources.len() * args.cold_starts.len() > 1;
    let mut sweep = Vec::new();
    for (source, trace) in &sources {
        for &cold_start in &args.cold_starts {
            let dir = if many {
                args.out.join(format!("{}-cold{}s", stem(&source.name), fmt_secs(cold_start)))
            } else {
                args.out.clone()
            };
            std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
            let config = ExperimentConfig {
                fleet: FleetConfig {
                    model,
                    cold_start_secs: cold_start,
                    scrape_interval_secs: args.scrape_interval,
                    prometheus_lag_secs: args.prometheus_lag,
                    slo_ttft_secs: args.slo_ttft,
                    router: args.router,
                    ..FleetConfig::default()
                },
                attainment_target: args.attainment_target,
                min_replicas: args.min_replicas,
                max_replicas: args.max_replicas,
                target_utilization: args.target_utilization,
                sync_period_secs: args.sync_period,
                seed: args.seed,
                warm_up_pass: !args.no_warm_up_pass,
                ..ExperimentConfig::default()
            };
            let one = run_one(args, source, trace, &config, &policies, &dir)?;
            sweep.push(one);
        }
    }
    if many {
        let table = sweep_table(&sweep);
        std::fs::write(args.out.join("sweep.md"), &table).context("cannot write sweep.md")?;
        println!("\n{table}");
    }
    eprintln!("done in {:.1}s; results in {}", started.elapsed().as_secs_f64(), args.out.display());
    Ok(())
}

fn stem(name: &str) -> String {
    Path::new(name).file_stem().map_or_else(|| name.to_owned(), |s| s.to_string_lossy().into_owned())
}

fn fmt_secs(v: f64) -> String {
    if v.fract() == 0.0 { format!("{v:.0}") } else { format!("{v}") }
}

fn load_sources(args: &Args) -> Result<Vec<(Source, Trace)>> {
    let mut out = Vec::new();
    let transform = |name: String, trace: Trace, skipped_rows: usize| -> Result<(Source, Trace)> {
        let trace = trace
            .replicate(args.rate_scale, if args.rate_scale == 1.0 { 0.0 } else { args.jitter }, args.seed)
            .and_then(|t| t.compress(args.time_compression))
            .with_context(|| format!("{name}: cannot apply --rate-scale/--jitter/--time-compression"))?;
        let source = Source {
            name,
            stats: trace.stats(),
            rate_scale: args.rate_scale,
            jitter_secs: args.jitter,
            time_compression: args.time_compression,
            skipped_rows,
        };
        Ok((source, trace))
    };
    if args.traces.is_empty() {
        let generator = GeneratorConfig {
            duration_secs: args.gen_duration,
            daily_period_secs: args.gen_duration,
            mean_rps: args.gen_mean_rps,
            arrival_cv: args.gen_arrival_cv,
            bursts_per_hour: args.gen_bursts_per_hour,
            burst_multiplier: args.gen_burst_multiplier,
            ..GeneratorConfig::default()
        };
        let trace = generator.generate(args.seed).context("cannot generate the built-in load")?;
        out.push(transform("generator".to_owned(), trace, 0)?);
    }
    for path in &args.traces {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the trace {shown}"))?;
        let parsed =
            vllm_scaling_core::sim::Trace::parse_csv(&text, TraceOptions { skip_bad_rows: args.skip_bad_rows })
                .with_context(|| format!("{shown}: invalid trace (use --skip-bad-rows to skip malformed rows)"))?;
        if parsed.skipped_rows > 0 {
            let first = parsed.first_skipped.as_ref().map(ToString::to_string).unwrap_or_default();
            eprintln!("{shown}: skipped {} bad rows (first: {first})", parsed.skipped_rows);
        }
        out.push(transform(shown, parsed.trace, parsed.skipped_rows)?);
    }
    Ok(out)
}

struct SweepRow {
    source: String,
    cold_start: f64,
    reports: Vec<PolicyReport>,
}

fn progress_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>14} [{bar:30}] {percent:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn run_one(
    args: &Args,
    source: &Source,
    trace: &Trace,
    config: &ExperimentConfig,
    policies: &[PolicyKind],
    dir: &Path,
) -> Result<SweepRow> {
    let started = Instant::now();
    let requests = trace.requests();
    eprintln!(
        "{}: {} requests over {:.0} s (mean {:.1} req/s, peak minute {:.1} req/s); cold start {} s",
        source.name,
        source.stats.requests,
        source.stats.duration_secs,
        source.stats.mean_rps,
        source.stats.peak_minute_rps,
        fmt_secs(config.fleet.cold_start_secs)
    );
    let multi = MultiProgress::with_draw_target(if args.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let plan_bar = multi.add(ProgressBar::new(1000).with_style(progress_style()).with_prefix("plan"));
    let plan = Plan::prepare(requests, config, &mut |stage, f| {
        let msg = match stage {
            Stage::Calibrate => "calibrating one replica",
            Stage::Oracle => "oracle: smallest fleet per minute",
            Stage::Fixed99 => "searching the fixed-99 fleet",
            _ => "",
        };
        plan_bar.set_message(msg);
        plan_bar.set_position((f * 1000.0) as u64);
    })
    .context("cannot prepare the comparison")?;
    plan_bar.finish_with_message(format!(
        "capacity {:.2} req/s per replica; bursts grow {:.2}x over {:.0} s; oracle peak {}; fixed-99 {}",
        plan.calibration.sustainable_rps,
        plan.burstiness.growth,
        plan.burstiness.hold_secs,
        plan.fixed_peak,
        plan.fixed_99.replicas
    ));
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)).max(1);
    let results: Mutex<Vec<(usize, Result<RunResult, String>)>> = Mutex::new(Vec::new());
    let next = Mutex::new(0usize);
    let bars: Vec<ProgressBar> = policies
        .iter()
        .map(|k| multi.add(ProgressBar::new(1000).with_style(progress_style()).with_prefix(k.name())))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(policies.len()) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let Ok(mut n) = next.lock() else { return };
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(&kind) = policies.get(i) else { return };
                    let bar = &bars[i];
                    let run = plan
                        .run(requests, kind, &mut |f| bar.set_position((f * 1000.0) as u64))
                        .map_err(|e| format!("{e:#}"));
                    bar.finish();
                    if let Ok(mut r) = results.lock() {
                        r.push((i, run));
                    }
                }
            });
        }
    });
    let mut results = results.into_inner().map_err(|_| anyhow::anyhow!("a simulation thread panicked"))?;
    results.sort_by_key(|(i, _)| *i);
    let mut runs = Vec::with_capacity(results.len());
    for (i, r) in results {
        runs.push(r.map_err(|e| anyhow::anyhow!("policy {}: {e}", policies[i]))?);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let reports: Vec<&PolicyReport> = runs.iter().map(|r| &r.report).collect();
    let find = |name: &str| reports.iter().find(|r| r.name == name).copied();
    let ratio = |a: Option<&PolicyReport>, b: Option<&PolicyReport>| match (a, b) {
        (Some(a), Some(b)) if b.gpu_hours > 0.0 => Some(a.gpu_hours / b.gpu_hours),
        _ => None,
    };
    let ours = find("vllm-scaling");
    let ratios = Ratios {
        vllm_scaling_vs_oracle_gpu_hours: ratio(ours, find("oracle")),
        vllm_scaling_vs_fixed_99_gpu_hours: ratio(ours, find("fixed-99")),
        vllm_scaling_vs_hpa_gpu_hours: ratio(ours, find("hpa-queue")),
        vllm_scaling_minus_hpa_attainment: ours
            .zip(find("hpa-queue"))
            .map(|(a, b)| a.slo_attainment - b.slo_attainment),
        fixed_99_vs_oracle_gpu_hours: ratio(find("fixed-99"), find("oracle")),
    };
    // Requests replayed by the policy runs (adaptive ones replay the trace twice); the
    // plan's calibration and searches come on top.
    let passes: usize = policies
        .iter()
        .map(|k| {
            let adaptive = matches!(k, PolicyKind::VllmScaling | PolicyKind::HpaQueue | PolicyKind::Kpa);
            if adaptive && config.warm_up_pass { 2 } else { 1 }
        })
        .sum();
    let simulated = requests.len() * passes;
    let report = Report {
        source,
        cold_start_secs: config.fleet.cold_start_secs,
        config,
        calibration: &plan.calibration,
        burstiness: &plan.burstiness,
        oracle: &plan.oracle,
        fixed_peak: plan.fixed_peak,
        fixed_99: &plan.fixed_99,
        policies: reports.clone(),
        ratios,
        elapsed_secs: elapsed,
        simulated_requests: simulated,
        simulated_requests_per_sec: simulated as f64 / elapsed.max(1e-9),
    };
    let json = serde_json::to_string_pretty(&report).context("cannot encode report.json")?;
    std::fs::write(dir.join("report.json"), json)
        .with_context(|| format!("cannot write {}", dir.join("report.json").display()))?;
    std::fs::write(dir.join("vllm-scaling-policy.yaml"), &plan.recommended_policy)
        .context("cannot write the policy")?;
    let mut explained = String::new();
    for run in &runs {
        for (at, why) in &run.explanations {
            let _ = writeln!(explained, "{} {at:>8.1}s {why}", run.report.name);
        }
    }
    std::fs::write(dir.join("decisions.log"), explained).context("cannot write decisions.log")?;
    let table = summary_table(&reports, config.fleet.slo_ttft_secs);
    std::fs::write(dir.join("summary.md"), &table).context("cannot write summary.md")?;
    println!(
        "\n{}  (cold start {} s, TTFT objective {} s)\n{table}",
        source.name,
        fmt_secs(config.fleet.cold_start_secs),
        args.slo_ttft
    );
    if let (Some(o), Some(x)) =
        (report.ratios.vllm_scaling_vs_oracle_gpu_hours, report.ratios.vllm_scaling_vs_hpa_gpu_hours)
    {
        println!("vllm-scaling uses {o:.2}x the oracle's GPU-hours and {x:.2}x hpa-queue's");
    }
    if !args.no_plots {
        let title = format!("{} — cold start {} s", stem(&source.name), fmt_secs(config.fleet.cold_start_secs));
        plot::write_plots(&runs, &title, dir).context("cannot write the plots")?;
    }
    eprintln!(
        "{} in {elapsed:.1}s ({} requests replayed by the policy runs, {:.0}/s including the plan)",
        dir.display(),
        report.simulated_requests,
        report.simulated_requests_per_sec
    );
    Ok(SweepRow {
        source: stem(&source.name),
        cold_start: config.fleet.cold_start_secs,
        reports: runs.into_iter().map(|r| r.report).collect(),
    })
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// The per-policy table, as Markdown.
fn summary_table(reports: &[&PolicyReport], slo: f64) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| policy | TTFT ≤ {slo} s | GPU-hours | mean replicas | peak | TTFT p50 s | TTFT p99 s | queue p50 s | queue p99 s | scale events | direction changes |"
    );
    let _ = writeln!(s, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in reports {
        let _ = writeln!(
            s,
            "| {} | {:.2} % | {:.2} | {:.1} | {} | {} | {} | {} | {} | {} | {} |",
            r.name,
            100.0 * r.slo_attainment,
            r.gpu_hours,
            r.mean_replicas,
            r.peak_replicas,
            opt(r.ttft_p50_s),
            opt(r.ttft_p99_s),
            opt(r.queue_time_p50_s),
            opt(r.queue_time_p99_s),
            r.scale_events,
            r.direction_changes
        );
    }
    s
}

/// The sweep table: one row per trace and cold start, attainment and GPU-hours per policy.
fn sweep_table(rows: &[SweepRow]) -> String {
    let mut s = String::new();
    let names: Vec<String> =
        rows.first().map(|r| r.reports.iter().map(|p| p.name.clone()).collect()).unwrap_or_default();
    let _ = write!(s, "| trace | cold start s |");
    for n in &names {
        let _ = write!(s, " {n} |");
    }
    let _ = write!(s, " ours / oracle | ours / fixed-99 | ours / hpa |\n|---|---:|");
    for _ in &names {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s, "---:|---:|---:|");
    for row in rows {
        let _ = write!(s, "| {} | {} |", row.source, fmt_secs(row.cold_start));
        for r in &row.reports {
            let _ = write!(s, " {:.2} % / {:.1} h |", 100.0 * r.slo_attainment, r.gpu_hours);
        }
        let gpu = |n: &str| row.reports.iter().find(|r| r.name == n).map(|r| r.gpu_hours);
        let ratio = |n: &str| match (gpu("vllm-scaling"), gpu(n)) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a / b),
            _ => "-".to_owned(),
        };
        let _ = writeln!(s, " {} | {} | {} |", ratio("oracle"), ratio("fixed-99"), ratio("hpa-queue"));
    }
    s
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(extra: &[&str], out: &Path) -> Args {
        let mut argv = vec!["simulate", "--quiet", "--out", out.to_str().expect("utf-8 path")];
        argv.extend_from_slice(extra);
        Cli::parse_from(argv).args
    }

    #[test]
    fn small_default_run_writes_the_report_and_the_plots() {
        let out = tempfile::tempdir().expect("temp dir");
        execute(&args(&["--gen-duration", "300", "--gen-mean-rps", "10"], out.path())).expect("runs");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.path().join("report.json")).expect("report.json"))
                .expect("valid JSON");
        let policies = report["policies"].as_array().expect("a policies array");
        let names: Vec<&str> = policies.iter().filter_map(|p| p["name"].as_str()).collect();
        assert_eq!(names, ["vllm-scaling", "hpa-queue", "kpa", "fixed-peak", "fixed-99", "oracle"]);
        for p in policies {
            let attainment = p["slo_attainment"].as_f64().expect("slo_attainment");
            assert!((0.0..=1.0).contains(&attainment), "{p}");
            for field in ["gpu_hours", "ttft_p50_s", "ttft_p99_s", "queue_time_p99_s"] {
                assert!(p[field].is_number(), "{field} missing in {p}");
            }
            for field in ["scale_events", "direction_changes"] {
                assert!(p[field].is_u64(), "{field} missing in {p}");
            }
        }
        for file in ["replicas.svg", "replicas.png", "summary.md", "vllm-scaling-policy.yaml", "decisions.log"] {
            let meta = std::fs::metadata(out.path().join(file)).unwrap_or_else(|e| panic!("{file}: {e}"));
            assert!(meta.len() > 0, "{file} is empty");
        }
        let svg = std::fs::read_to_string(out.path().join("replicas.svg")).expect("svg");
        assert!(svg.contains("vllm-scaling") && svg.contains("oracle"), "every policy has a panel");
        let png = std::fs::read(out.path().join("replicas.png")).expect("png");
        assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
        // The policy it ran is a valid vLLMScalingPolicy.
        let yaml = std::fs::read_to_string(out.path().join("vllm-scaling-policy.yaml")).expect("policy");
        vllm_scaling_core::parse_policy(&yaml).expect("the written policy validates");
    }

    #[test]
    fn bad_traces_name_the_line_or_are_skipped_on_request() {
        let dir = tempfile::tempdir().expect("temp dir");
        let trace = dir.path().join("bad.csv");
        let mut text = String::from("timestamp_seconds,input_tokens,output_tokens\n");
        for i in 0..400 {
            text.push_str(&format!("{}.0,{},{}\n", i / 4, 200 + i, 20));
        }
        text.push_str("99.5,-7,10\n");
        std::fs::write(&trace, &text).expect("write");
        let out = dir.path().join("out");
        let e = execute(&args(&["--trace", trace.to_str().expect("utf-8"), "--policy", "oracle"], &out)).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("line 402") && msg.contains("negative") && msg.contains("--skip-bad-rows"), "{msg}");
        execute(&args(
            &["--trace", trace.to_str().expect("utf-8"), "--policy", "oracle", "--skip-bad-rows", "--no-plots"],
            &out,
        ))
        .expect("runs with the bad row skipped");
        let report: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report")).expect("JSON");
        assert_eq!(report["source"]["skipped_rows"], 1);
        assert_eq!(report["policies"][0]["requests"], 400);
    }

    #[test]
    fn impossible_model_constants_are_refused() {
        let out = tempfile::tempdir().expect("temp dir");
        let e = execute(&args(&["--step-base-ms", "0"], out.path())).unwrap_err();
        let msg = format!("{e:#}");
        assert!(msg.contains("step_base_ms") && msg.contains("greater than 0"), "{msg}");
        let e = execute(&args(&["--max-batched-tokens", "16"], out.path())).unwrap_err();
        assert!(format!("{e:#}").contains("max_num_seqs"), "{e:#}");
        let e = execute(&args(&["--rate-scale", "0"], out.path())).unwrap_err();
        assert!(format!("{e:#}").contains("rate scale"), "{e:#}");
    }
}
