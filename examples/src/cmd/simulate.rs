//! `vllm-autoscaler simulate`: replays a trace (or the built-in generator) against a
//! modelled vLLM fleet under every policy of the comparison, prints the table, and writes
//! `report.json`, the plots and the recommended policy into `--out`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use vllm_scaling_core::sim::{
    ExperimentConfig, FleetConfig, GeneratorConfig, Plan, PolicyKind, PolicyReport, ReplicaProfile, Router, RunResult,
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
    /// Cold start, seconds from the scale decision to a ready replica (default: the
    /// profile's). Several values (comma-separated) sweep them.
    #[arg(long = "cold-start", value_delimiter = ',', value_name = "SECS")]
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
    /// A `vLLMScalingPolicy` file to simulate, run unchanged by the same engine as the
    /// controller (repeatable: several run side by side). With any, the comparison is
    /// your policies next to the baselines; add `--recommend` for the derived policy.
    #[arg(long = "policy-file", value_name = "FILE", help_heading = "Your policies")]
    policy_files: Vec<PathBuf>,
    /// Also run the recommended policy (`vllm-scaling`) the simulator derives from the
    /// trace (always in the default comparison without `--policy-file`).
    #[arg(long, help_heading = "Your policies")]
    recommend: bool,
    /// Run a policy file whose `custom` PromQL the simulator cannot answer, the rule
    /// reading as missing at every evaluation (as in a Prometheus outage: it can never
    /// scale down), instead of refusing it.
    #[arg(long, help_heading = "Your policies")]
    allow_unmodelled: bool,
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

    /// The replica profile: a built-in name (default, h100-80gb-llama3-8b,
    /// a100-80gb-llama3-8b, l4-24gb-llama3-8b, a10g-24gb-llama3-8b, h100-tp4-llama3-70b,
    /// h100-tp8-llama3-70b) or a profile YAML file. The flags below override its numbers.
    #[arg(long, default_value = "default", value_name = "NAME|FILE", help_heading = "Replica model")]
    profile: String,
    /// Step cost `a`, milliseconds (overrides the profile).
    #[arg(long, help_heading = "Replica model")]
    step_base_ms: Option<f64>,
    /// Step cost `b` per prompt token, milliseconds (overrides the profile).
    #[arg(long, help_heading = "Replica model")]
    prefill_ms_per_token: Option<f64>,
    /// Step cost `c` per sequence in the batch, milliseconds (overrides the profile).
    #[arg(long, help_heading = "Replica model")]
    decode_ms_per_seq: Option<f64>,
    /// Step cost `d` per KV token a decoding sequence attends to, milliseconds (overrides the profile).
    #[arg(long, help_heading = "Replica model")]
    attention_ms_per_context_token: Option<f64>,
    /// KV-cache capacity, tokens (overrides the profile).
    #[arg(long, help_heading = "Replica model")]
    kv_cache_tokens: Option<u64>,
    /// Most sequences in a batch (`--max-num-seqs`; overrides the profile).
    #[arg(long, help_heading = "Replica model")]
    max_num_seqs: Option<u32>,
    /// Token budget of a step (`--max-num-batched-tokens`; overrides the profile).
    #[arg(long, help_heading = "Replica model")]
    max_batched_tokens: Option<u32>,

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

/// Runs the command; prints the error chain and exits 2 on bad input (an unknown or
/// impossible profile, a policy file that does not validate or asks for what the
/// simulator cannot model, a trace whose columns do not map), 1 on any other failure.
pub(crate) fn run(args: Args) -> ExitCode {
    match execute(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("simulate: {e:#}");
            ExitCode::from(exit_code(&e))
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
    /// The replica profile the run used (after flag overrides).
    profile: &'a ReplicaProfile,
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
    let profile = replica_profile(args)?;
    let model = profile.model;
    let cold_starts =
        if args.cold_starts.is_empty() { vec![profile.cold_start_secs] } else { args.cold_starts.clone() };
    let user_policies = load_user_policies(args)?;
    let policies = builtin_policies(args);
    let sources = load_sources(args)?;
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create the output folder {}", args.out.display()))?;
    let many = sources.len() * cold_starts.len() > 1;
    let mut sweep = Vec::new();
    for (source, trace) in &sources {
        for &cold_start in &cold_starts {
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
            let one = run_one(
                args,
                source,
                trace,
                &config,
                &Lineup { builtins: &policies, users: &user_policies },
                &dir,
                &profile,
            )?;
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
    lineup: &Lineup<'_>,
    dir: &Path,
    profile: &ReplicaProfile,
) -> Result<SweepRow> {
    let (policies, user_policies) = (lineup.builtins, lineup.users);
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
    let names: Vec<String> =
        policies.iter().map(|k| k.name().to_owned()).chain(user_policies.iter().map(|u| u.name.clone())).collect();
    let bars: Vec<ProgressBar> = names
        .iter()
        .map(|n| multi.add(ProgressBar::new(1000).with_style(progress_style()).with_prefix(n.clone())))
        .collect();
    std::thread::scope(|scope| {
        for _ in 0..jobs.min(names.len()) {
            scope.spawn(|| {
                loop {
                    let i = {
                        let Ok(mut n) = next.lock() else { return };
                        let i = *n;
                        *n += 1;
                        i
                    };
                    let Some(bar) = bars.get(i) else { return };
                    let mut progress = |f: f64| bar.set_position((f * 1000.0) as u64);
                    let run = match policies.get(i) {
                        Some(&kind) => plan.run(requests, kind, &mut progress),
                        None => {
                            let user = &user_policies[i - policies.len()];
                            plan.run_policy(requests, &user.name, user.policy.clone(), &mut progress)
                        }
                    }
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
        runs.push(r.map_err(|e| anyhow::anyhow!("policy {}: {e}", names[i]))?);
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
        .sum::<usize>()
        + user_policies.len() * if config.warm_up_pass { 2 } else { 1 };
    let simulated = requests.len() * passes;
    let report = Report {
        source,
        profile,
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
    for user in user_policies {
        let file = dir.join(format!("{}-policy.yaml", user.name));
        std::fs::write(&file, &user.yaml).with_context(|| format!("cannot write {}", file.display()))?;
    }
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
    println!("{}", cost_line(&reports, profile));
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

/// Input the user must fix: exit status 2. Wrap the innermost error with it; the
/// context added around it is kept.
#[derive(Debug)]
pub(crate) struct BadInput(pub(crate) String);

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for BadInput {}

/// 2 when the chain holds a [`BadInput`], else 1.
pub(crate) fn exit_code(e: &anyhow::Error) -> u8 {
    if e.chain().any(|c| c.is::<BadInput>()) { 2 } else { 1 }
}

/// The profile named by `--profile` (a built-in name or a file), with the model flags
/// applied on top, validated.
fn replica_profile(args: &Args) -> Result<ReplicaProfile> {
    let spec = args.profile.as_str();
    let looks_like_file = spec.ends_with(".yaml") || spec.ends_with(".yml") || spec.contains('/');
    let mut profile = if looks_like_file || Path::new(spec).is_file() {
        let text = std::fs::read_to_string(spec)
            .map_err(|e| BadInput(format!("--profile {spec}: cannot read the profile file: {e}")))?;
        ReplicaProfile::parse(&text).map_err(|e| BadInput(format!("--profile {spec}: {e}")))?
    } else {
        ReplicaProfile::builtin(spec).map_err(|e| BadInput(format!("--profile: {e}")))?
    };
    let m = &mut profile.model;
    let mut overridden = Vec::new();
    macro_rules! set {
        ($field:ident) => {
            if let Some(v) = args.$field {
                m.$field = v;
                overridden.push(concat!("--", stringify!($field)).replace('_', "-"));
            }
        };
    }
    set!(step_base_ms);
    set!(prefill_ms_per_token);
    set!(decode_ms_per_seq);
    set!(attention_ms_per_context_token);
    set!(kv_cache_tokens);
    set!(max_num_seqs);
    set!(max_batched_tokens);
    for flag in &overridden {
        let field = flag.trim_start_matches("--");
        profile.sources.insert(camel(field), format!("overridden on the command line ({flag})"));
    }
    profile.model.validate().map_err(|e| {
        BadInput(format!(
            "{e} (profile `{}`{})",
            profile.name,
            if overridden.is_empty() { String::new() } else { format!(", with {}", overridden.join(" ")) }
        ))
    })?;
    Ok(profile)
}

/// The policies of a comparison: built-in kinds, then the user's files.
struct Lineup<'a> {
    builtins: &'a [PolicyKind],
    users: &'a [UserPolicy],
}

/// A user's policy file, parsed.
struct UserPolicy {
    /// The report name: `metadata.name`, else the file's stem (made unique).
    name: String,
    policy: vllm_scaling_core::ResolvedPolicy,
    /// The file as read, copied into `--out`.
    yaml: String,
}

/// The built-in policies to run: `--policy`, or all of them; with `--policy-file`, all
/// but the recommended policy unless `--recommend`.
fn builtin_policies(args: &Args) -> Vec<PolicyKind> {
    let mut kinds: Vec<PolicyKind> = if !args.policies.is_empty() {
        args.policies.clone()
    } else if args.policy_files.is_empty() {
        PolicyKind::ALL.to_vec()
    } else {
        PolicyKind::ALL.into_iter().filter(|k| *k != PolicyKind::VllmScaling).collect()
    };
    if args.recommend && !kinds.contains(&PolicyKind::VllmScaling) {
        kinds.insert(0, PolicyKind::VllmScaling);
    }
    kinds
}

/// Reads, validates and checks every `--policy-file`: a policy that does not validate,
/// or asks for a metric the simulator cannot answer, is bad input.
fn load_user_policies(args: &Args) -> Result<Vec<UserPolicy>> {
    let mut out: Vec<UserPolicy> = Vec::new();
    for path in &args.policy_files {
        let shown = path.display().to_string();
        let yaml =
            std::fs::read_to_string(path).map_err(|e| BadInput(format!("--policy-file {shown}: cannot read: {e}")))?;
        let (doc, policy) = vllm_scaling_core::parse_policy(&yaml).map_err(|errors| {
            let all: Vec<String> = errors.0.iter().map(|e| format!("{shown}:{}: {}", e.path, e.reason)).collect();
            BadInput(format!("--policy-file {shown} does not validate:\n  {}", all.join("\n  ")))
        })?;
        let unmodelled = vllm_scaling_core::sim::unmodelled_rules(&policy);
        if !unmodelled.is_empty() {
            let all: Vec<String> = unmodelled.iter().map(|u| format!("{shown}:{u}")).collect();
            if !args.allow_unmodelled {
                return Err(BadInput(format!(
                    "--policy-file {shown} asks for what the simulator cannot model:\n  {}\n(--allow-unmodelled runs it with those rules missing at every evaluation)",
                    all.join("\n  ")
                ))
                .into());
            }
            for line in &all {
                eprintln!("warning: {line}; it reads as missing at every evaluation (--allow-unmodelled)");
            }
        }
        if !policy.advanced.schedules.is_empty() {
            eprintln!(
                "warning: {shown}: schedules read simulated time as Unix time: the trace starts 1970-01-01T00:00:00Z (a Thursday)"
            );
        }
        let stem = path.file_stem().map_or_else(|| "policy".to_owned(), |s| s.to_string_lossy().into_owned());
        let mut name = doc.metadata.name.clone().unwrap_or(stem);
        let taken = |n: &str, out: &[UserPolicy]| n.parse::<PolicyKind>().is_ok() || out.iter().any(|u| u.name == n);
        if taken(&name, &out) {
            let base = name.clone();
            name = (2..).map(|i| format!("{base}-{i}")).find(|n| !taken(n, &out)).unwrap_or(base);
        }
        out.push(UserPolicy { name, policy, yaml });
    }
    Ok(out)
}

/// `kv-cache-tokens` as the profile's `kvCacheTokens`.
fn camel(flag: &str) -> String {
    let mut out = String::new();
    let mut upper = false;
    for c in flag.chars() {
        if c == '-' {
            upper = true;
        } else if upper {
            out.extend(c.to_uppercase());
            upper = false;
        } else {
            out.push(c);
        }
    }
    out
}

/// What each policy's GPU-hours cost at the profile's price.
fn cost_line(reports: &[&PolicyReport], profile: &ReplicaProfile) -> String {
    let mut s = format!(
        "profile {} ({} GPU{} per replica, ${:.2} per GPU-hour): cost",
        profile.name,
        profile.model.gpus_per_replica,
        if profile.model.gpus_per_replica == 1 { "" } else { "s" },
        profile.gpu_price_per_hour
    );
    for (i, r) in reports.iter().enumerate() {
        let _ =
            write!(s, "{} {} ${:.2}", if i == 0 { "" } else { "," }, r.name, r.gpu_hours * profile.gpu_price_per_hour);
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
