//! `vllm-autoscaler simulate`: replays a trace (or the built-in generator) against a
//! modelled vLLM fleet under every policy of the comparison, prints the table, and writes
//! `report.json`, the plots and the recommended policy into `--out`.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::Serialize;
use vllm_scaling_core::sim::{
    ColumnMap, ExperimentConfig, FleetConfig, GeneratorConfig, Learning, Parallel, Plan, PolicyKind, PolicyReport,
    RateProfile, ReplicaModel, ReplicaProfile, Router, RunResult, SimError, Stage, Start, Trace, TraceError,
    TraceOptions, TraceStats, Windows,
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
    /// Policies to compare (comma-separated): vllm-scaling, hpa-rate, hpa-queue,
    /// hpa-running, hpa-kv, kpa, fixed-peak, fixed-99, oracle. Default: all.
    #[arg(long = "policy", value_delimiter = ',', value_name = "NAME")]
    policies: Vec<PolicyKind>,
    /// Cold start, from the scale decision to a ready replica (60, 30s, 2m; a plain
    /// number is seconds; default: the profile's). Several values (comma-separated) sweep
    /// them.
    #[arg(long = "cold-start", value_delimiter = ',', value_name = "TIME", value_parser = crate::cli::seconds)]
    cold_starts: Vec<f64>,
    /// Replay each request this many times (a fraction adds one more copy with that
    /// probability), each copy jittered by up to `--jitter`.
    #[arg(long, default_value_t = 1.0)]
    rate_scale: f64,
    /// Largest shift of a replayed copy (uniform in ±jitter, seeded; a plain number is
    /// seconds).
    #[arg(long, default_value_t = 0.5, value_parser = crate::cli::seconds)]
    jitter: f64,
    /// Play the trace this many times faster.
    #[arg(long, default_value_t = 1.0)]
    time_compression: f64,
    /// Skip malformed trace rows (and say how many) instead of stopping at the first.
    #[arg(long)]
    skip_bad_rows: bool,
    /// The time-to-first-token objective (2, 2s, 1500ms; a plain number is seconds).
    #[arg(long, default_value_t = 2.0, value_parser = crate::cli::seconds)]
    slo_ttft: f64,
    /// Share of requests that must meet the objective (fixed-99 and the oracle size for it).
    #[arg(long, default_value_t = 0.99)]
    attainment_target: f64,
    /// Seed of the replay jitter, the generator and the calibration.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Read `--trace` files in their own layout: which columns hold the arrival time, the
    /// prompt and the output lengths (`ts=TIMESTAMP,in=ContextTokens,out=GeneratedTokens`).
    /// Times become seconds from the first request; rows are sorted.
    #[arg(long, value_name = "ts=COL,in=COL,out=COL", help_heading = "Traces")]
    columns: Option<String>,
    /// How `--columns` timestamps are written: auto, seconds, epoch-s, epoch-ms or
    /// iso8601 (`2023-11-16T18:15:46Z`; without an offset, UTC).
    #[arg(long, default_value = "auto", help_heading = "Traces")]
    time_format: String,
    /// A multi-day rate profile to draw arrivals from (ServeGen's layout,
    /// `../shared/traces/servegen_rate_profiles.csv`): Gamma arrivals per window with its CV.
    #[arg(long, value_name = "CSV", help_heading = "Traces")]
    rate_profile: Option<PathBuf>,
    /// The profile's `model` to use (needed when the file holds several).
    #[arg(long, value_name = "NAME", help_heading = "Traces")]
    rate_profile_model: Option<String>,
    /// How much of the rate profile to replay, from its start (2d, 36h; a plain number is
    /// days).
    #[arg(long, default_value_t = 1.0, value_parser = crate::cli::days, help_heading = "Traces")]
    rate_profile_days: f64,
    /// The profile's rates rescaled to this mean, requests per second.
    #[arg(long, default_value_t = 10.0, help_heading = "Traces")]
    rate_profile_mean_rps: f64,
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
    /// Step cost `a` (a plain number is milliseconds; overrides the profile).
    #[arg(long, value_parser = crate::cli::millis, help_heading = "Replica model")]
    step_base_ms: Option<f64>,
    /// Step cost `b` per prompt token (a plain number is milliseconds; overrides the profile).
    #[arg(long, value_parser = crate::cli::millis, help_heading = "Replica model")]
    prefill_ms_per_token: Option<f64>,
    /// Step cost `c` per sequence in the batch (a plain number is milliseconds; overrides
    /// the profile).
    #[arg(long, value_parser = crate::cli::millis, help_heading = "Replica model")]
    decode_ms_per_seq: Option<f64>,
    /// Step cost `d` per KV token a decoding sequence attends to (a plain number is
    /// milliseconds; overrides the profile).
    #[arg(long, value_parser = crate::cli::millis, help_heading = "Replica model")]
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

    /// Scrape interval of the modelled Prometheus, the same for every policy (`source:
    /// pods` rules read the same scrapes without the Prometheus lag; a plain number is
    /// seconds).
    #[arg(long, default_value_t = 15.0, value_parser = crate::cli::seconds, help_heading = "Fleet")]
    scrape_interval: f64,
    /// Prometheus query lag (rules read from Prometheus see scrapes this old; a plain
    /// number is seconds).
    #[arg(long, default_value_t = 0.0, value_parser = crate::cli::seconds, help_heading = "Fleet")]
    prometheus_lag: f64,
    /// The engine's sync period (a plain number is seconds).
    #[arg(long, default_value_t = 15.0, value_parser = crate::cli::seconds, help_heading = "Fleet")]
    sync_period: f64,
    /// Routing: least-outstanding or round-robin.
    #[arg(long, default_value = "least-outstanding", value_parser = parse_router, help_heading = "Fleet")]
    router: Router,
    /// Fewest replicas of the scaling policies.
    #[arg(long, default_value_t = 1, help_heading = "Fleet")]
    min_replicas: i32,
    /// Most replicas of the scaling policies, your GPU quota (default: twice the
    /// `fixed-99` fleet sized on the training window).
    #[arg(long, help_heading = "Fleet")]
    max_replicas: Option<i32>,
    /// Load per replica the recommended policy and the KPA aim at, as a share of the
    /// calibrated sustainable rate.
    #[arg(long, default_value_t = ExperimentConfig::default().target_utilization, help_heading = "Fleet")]
    target_utilization: f64,

    /// Share of the trace's span that learns (calibration, burst analysis, the
    /// baselines' tuning, `fixed-99`); the rest is scored. Cut at a whole minute.
    #[arg(long, default_value_t = 0.5, help_heading = "Scoring")]
    split: f64,
    /// A separate training trace to learn from (same format and transforms); the whole
    /// `--trace` is then scored.
    #[arg(long, value_name = "CSV", conflicts_with = "in_sample", help_heading = "Scoring")]
    train: Option<PathBuf>,
    /// Learn on the scored trace itself (the old behaviour; every table says IN-SAMPLE).
    #[arg(long, help_heading = "Scoring")]
    in_sample: bool,
    /// How every policy enters the scored window: `warm` (replays the training window
    /// first, its own decisions) or `cold` (adaptive policies at --min-replicas).
    #[arg(long, default_value = "warm", value_parser = parse_start, help_heading = "Scoring")]
    start: Start,
    /// Skip the robustness table (profile constants, lag, routers, seeds, cold starts).
    #[arg(long, help_heading = "Scoring")]
    no_robustness: bool,

    /// Generator: length of the run (3h, 90m; a plain number is seconds).
    #[arg(long, default_value_t = GeneratorConfig::default().duration_secs, value_parser = crate::cli::seconds, help_heading = "Built-in generator")]
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

fn parse_start(s: &str) -> Result<Start, String> {
    match s {
        "warm" => Ok(Start::Warm),
        "cold" => Ok(Start::Cold),
        other => Err(format!("unknown start `{other}`: expected warm or cold")),
    }
}

/// What one job of a plan gives back.
type JobResult = Result<Vec<f64>, SimError>;

/// Runs a plan's independent jobs on `0` threads.
struct Threads(usize);

impl Parallel for Threads {
    fn map(
        &self,
        n: usize,
        job: &(dyn Fn(usize) -> Result<Vec<f64>, SimError> + Sync),
    ) -> Vec<Result<Vec<f64>, SimError>> {
        let next = AtomicUsize::new(0);
        let out: Vec<Mutex<Option<JobResult>>> = (0..n).map(|_| Mutex::new(None)).collect();
        std::thread::scope(|scope| {
            for _ in 0..self.0.clamp(1, n.max(1)) {
                scope.spawn(|| {
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= n {
                            return;
                        }
                        let r = job(i);
                        if let Ok(mut slot) = out[i].lock() {
                            *slot = Some(r);
                        }
                    }
                });
            }
        });
        out.into_iter()
            .map(|m| {
                m.into_inner().ok().flatten().unwrap_or_else(|| {
                    Err(SimError::Policy { name: "plan".to_owned(), reason: "a worker thread panicked".to_owned() })
                })
            })
            .collect()
    }
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
#[serde(rename_all = "camelCase")]
struct Source {
    /// The file, or `generator`.
    name: String,
    /// Stats after rate scaling and compression.
    stats: TraceStats,
    rate_scale: f64,
    jitter_secs: f64,
    time_compression: f64,
    skipped_rows: usize,
    /// The trace before the transforms (the robustness table replays it with other seeds).
    #[serde(skip)]
    raw: Option<Trace>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Ratios {
    /// vllm-scaling GPU-hours over the oracle's lower bound at the attainment target.
    vllm_scaling_vs_lower_bound_gpu_hours: Option<f64>,
    /// vllm-scaling GPU-hours over the oracle plan's (replayed).
    vllm_scaling_vs_oracle_gpu_hours: Option<f64>,
    /// vllm-scaling GPU-hours over fixed-99's.
    vllm_scaling_vs_fixed_99_gpu_hours: Option<f64>,
    /// vllm-scaling GPU-hours over hpa-queue's.
    vllm_scaling_vs_hpa_gpu_hours: Option<f64>,
    /// vllm-scaling attainment minus hpa-queue's.
    vllm_scaling_minus_hpa_attainment: Option<f64>,
    /// fixed-99 GPU-hours over the oracle's lower bound.
    fixed_99_vs_lower_bound_gpu_hours: Option<f64>,
    /// The HPA baseline with the best attainment on the scored window.
    best_hpa: Option<String>,
    /// vllm-scaling GPU-hours over the best HPA baseline's.
    vllm_scaling_vs_best_hpa_gpu_hours: Option<f64>,
    /// vllm-scaling attainment minus the best HPA baseline's.
    vllm_scaling_minus_best_hpa_attainment: Option<f64>,
    /// Whether vllm-scaling is better than the best HPA baseline in attainment at no more
    /// GPU-hours.
    vllm_scaling_beats_best_hpa: Option<bool>,
}

/// The best HPA baseline of a run: the highest attainment (fewer GPU-hours on ties).
fn best_hpa<'a>(reports: &[&'a PolicyReport]) -> Option<&'a PolicyReport> {
    reports
        .iter()
        .copied()
        .filter(|r| PolicyKind::HPA.iter().any(|k| k.name() == r.name))
        .max_by(|a, b| a.slo_attainment.total_cmp(&b.slo_attainment).then(b.gpu_hours.total_cmp(&a.gpu_hours)))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Report<'a> {
    source: &'a Source,
    /// The replica profile the run used (after flag overrides).
    profile: &'a ReplicaProfile,
    cold_start_secs: f64,
    /// Which window was learned and which scored.
    windows: &'a vllm_scaling_core::sim::WindowInfo,
    config: &'a ExperimentConfig,
    calibration: &'a vllm_scaling_core::sim::Calibration,
    burstiness: &'a vllm_scaling_core::sim::Burstiness,
    oracle: &'a vllm_scaling_core::sim::OraclePlan,
    lower_bound: &'a vllm_scaling_core::sim::LowerBound,
    fixed_peak: i32,
    fixed_99: &'a vllm_scaling_core::sim::FixedSearch,
    max_replicas: i32,
    tuning: &'a [vllm_scaling_core::sim::Tuning],
    kpa: &'a vllm_scaling_core::sim::KpaConfig,
    policies: Vec<&'a PolicyReport>,
    /// Each policy's GPU-hours over the lower bound at its own attainment.
    vs_lower_bound_at_own_attainment: Vec<(String, Option<f64>)>,
    robustness: Vec<RobustRow>,
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
    let train = match &args.train {
        Some(path) => Some(load_trace(args, path)?.1),
        None => None,
    };
    let learning = if args.in_sample {
        Learning::InSample
    } else if args.train.is_some() {
        Learning::TrainFile
    } else {
        Learning::Split { fraction: args.split }
    };
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
                learning,
                start: args.start,
                ..ExperimentConfig::default()
            };
            let one = run_one(
                args,
                source,
                (trace, train.as_ref()),
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
    if args.traces.is_empty() && args.rate_profile.is_none() {
        let generator = generator_config(args);
        let trace = generator.generate(args.seed).context("cannot generate the built-in load")?;
        out.push(transform(args, "generator".to_owned(), trace, 0)?);
    }
    for path in &args.traces {
        out.push(load_trace(args, path)?);
    }
    if let Some(path) = &args.rate_profile {
        let (name, trace) = rate_profile_trace(args, path)?;
        out.push(transform(args, name, trace, 0)?);
    }
    Ok(out)
}

/// The built-in generator as the flags set it.
fn generator_config(args: &Args) -> GeneratorConfig {
    GeneratorConfig {
        duration_secs: args.gen_duration,
        daily_period_secs: args.gen_duration,
        mean_rps: args.gen_mean_rps,
        arrival_cv: args.gen_arrival_cv,
        bursts_per_hour: args.gen_bursts_per_hour,
        burst_multiplier: args.gen_burst_multiplier,
        ..GeneratorConfig::default()
    }
}

/// Reads one trace file and applies `--rate-scale`, `--jitter` and `--time-compression`.
fn load_trace(args: &Args, path: &Path) -> Result<(Source, Trace)> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the trace {shown}"))?;
    let parsed = parse_trace(args, &text).map_err(|e| {
        let row = matches!(e.downcast_ref(), Some(TraceError::BadRow { .. } | TraceError::Unsorted { .. }));
        let hint = if row { " (use --skip-bad-rows to skip malformed rows)" } else { "" };
        BadInput(format!("{shown}: invalid trace: {e:#}{hint}"))
    })?;
    if parsed.skipped_rows > 0 {
        let first = parsed.first_skipped.as_ref().map(ToString::to_string).unwrap_or_default();
        eprintln!("{shown}: skipped {} bad rows (first: {first})", parsed.skipped_rows);
    }
    transform(args, shown, parsed.trace, parsed.skipped_rows)
}

/// Applies `--rate-scale`, `--jitter` (seeded by `seed`) and `--time-compression`.
fn transform_seeded(args: &Args, trace: &Trace, seed: u64) -> Result<Trace> {
    trace
        .replicate(args.rate_scale, if args.rate_scale == 1.0 { 0.0 } else { args.jitter }, seed)
        .and_then(|t| t.compress(args.time_compression))
        .context("cannot apply --rate-scale/--jitter/--time-compression")
}

fn transform(args: &Args, name: String, trace: Trace, skipped_rows: usize) -> Result<(Source, Trace)> {
    let raw = trace.clone();
    let trace = transform_seeded(args, &trace, args.seed).with_context(|| name.clone())?;
    let source = Source {
        name,
        stats: trace.stats(),
        rate_scale: args.rate_scale,
        jitter_secs: args.jitter,
        time_compression: args.time_compression,
        skipped_rows,
        raw: Some(raw),
    };
    Ok((source, trace))
}

/// A trace file in the shared layout, or with `--columns`, in the file's own.
fn parse_trace(args: &Args, text: &str) -> Result<vllm_scaling_core::sim::ParsedTrace> {
    let options = TraceOptions { skip_bad_rows: args.skip_bad_rows };
    let Some(spec) = &args.columns else {
        if args.time_format != "auto" {
            return Err(BadInput("--time-format needs --columns (the shared layout is in seconds)".to_owned()).into());
        }
        return Ok(Trace::parse_csv(text, options)?);
    };
    let mut columns: ColumnMap = spec.parse().map_err(|e| BadInput(format!("--columns: {e}")))?;
    columns.time_format = args.time_format.parse().map_err(|e: String| BadInput(format!("--time-format: {e}")))?;
    Ok(Trace::parse_csv_mapped(text, options, &columns)?)
}

/// The trace drawn from `--rate-profile`: its first `--rate-profile-days`, rescaled to
/// `--rate-profile-mean-rps`, token lengths from the built-in generator.
fn rate_profile_trace(args: &Args, path: &Path) -> Result<(String, Trace)> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read the rate profile {shown}"))?;
    let profile = RateProfile::parse_csv(&text, args.rate_profile_model.as_deref())
        .map_err(|e| BadInput(format!("{shown}: invalid rate profile: {e}")))?;
    if !(args.rate_profile_days.is_finite() && args.rate_profile_days > 0.0) {
        return Err(
            BadInput(format!("--rate-profile-days must be a positive number, got {}", args.rate_profile_days)).into()
        );
    }
    let profile = profile.truncate(args.rate_profile_days * 86_400.0);
    let trace = profile
        .generate(args.rate_profile_mean_rps, &GeneratorConfig::default(), args.seed)
        .map_err(|e| BadInput(format!("{shown}: cannot draw arrivals from the rate profile: {e}")))?;
    Ok((format!("{shown}:{}", profile.model), trace))
}

struct SweepRow {
    source: String,
    cold_start: f64,
    in_sample: bool,
    lower_bound: Option<f64>,
    reports: Vec<PolicyReport>,
}

fn progress_style() -> ProgressStyle {
    ProgressStyle::with_template("{prefix:>14} [{bar:30}] {percent:>3}% {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
}

fn run_one(
    args: &Args,
    source: &Source,
    (trace, train): (&Trace, Option<&Trace>),
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
    let windows = make_windows(requests, train, config).with_context(|| format!("{}: cannot split", source.name))?;
    let multi = MultiProgress::with_draw_target(if args.quiet {
        ProgressDrawTarget::hidden()
    } else {
        ProgressDrawTarget::stderr()
    });
    let jobs = args.jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from)).max(1);
    let plan_bar = multi.add(ProgressBar::new(1000).with_style(progress_style()).with_prefix("plan"));
    let plan = Plan::prepare_windows(windows, config, &Threads(jobs), &mut |stage, f| {
        let msg = match stage {
            Stage::Calibrate => "calibrating one replica on the training window",
            Stage::Oracle => "oracle: capacity curves of the scored window",
            Stage::Fixed99 => "sizing fixed-99 on the training window",
            Stage::Tune => "tuning the baselines on the training window",
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
                        Some(&kind) => plan.run(kind, &mut progress),
                        None => {
                            let user = &user_policies[i - policies.len()];
                            plan.run_policy(&user.name, user.policy.clone(), &mut progress)
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
    let reports: Vec<&PolicyReport> = runs.iter().map(|r| &r.report).collect();
    let robustness = if args.no_robustness {
        Vec::new()
    } else {
        robustness(args, source, train, &plan, &reports, jobs).context("cannot run the robustness table")?
    };
    let elapsed = started.elapsed().as_secs_f64();
    let find = |name: &str| reports.iter().find(|r| r.name == name).copied();
    let ratio = |a: Option<&PolicyReport>, b: Option<&PolicyReport>| match (a, b) {
        (Some(a), Some(b)) if b.gpu_hours > 0.0 => Some(a.gpu_hours / b.gpu_hours),
        _ => None,
    };
    let bound = plan.lower_bound.gpu_hours.filter(|b| *b > 0.0);
    let ours = find("vllm-scaling");
    let best = best_hpa(&reports);
    let ratios = Ratios {
        vllm_scaling_vs_lower_bound_gpu_hours: ours.zip(bound).map(|(a, b)| a.gpu_hours / b),
        vllm_scaling_vs_oracle_gpu_hours: ratio(ours, find("oracle")),
        vllm_scaling_vs_fixed_99_gpu_hours: ratio(ours, find("fixed-99")),
        vllm_scaling_vs_hpa_gpu_hours: ratio(ours, find("hpa-queue")),
        vllm_scaling_minus_hpa_attainment: ours
            .zip(find("hpa-queue"))
            .map(|(a, b)| a.slo_attainment - b.slo_attainment),
        fixed_99_vs_lower_bound_gpu_hours: find("fixed-99").zip(bound).map(|(a, b)| a.gpu_hours / b),
        best_hpa: best.map(|b| b.name.clone()),
        vllm_scaling_vs_best_hpa_gpu_hours: ratio(ours, best),
        vllm_scaling_minus_best_hpa_attainment: ours.zip(best).map(|(a, b)| a.slo_attainment - b.slo_attainment),
        vllm_scaling_beats_best_hpa: ours
            .zip(best)
            .map(|(a, b)| a.slo_attainment > b.slo_attainment && a.gpu_hours <= b.gpu_hours + 1e-9),
    };
    let vs_own: Vec<(String, Option<f64>)> = reports
        .iter()
        .map(|r| {
            let lb = plan.lower_bound_at(r.slo_attainment_feasible).filter(|b| *b > 0.0);
            (r.name.clone(), lb.map(|b| r.gpu_hours / b))
        })
        .collect();
    // Requests replayed by the policy runs (a warm start replays the training window
    // first); the plan's calibration, searches and tuning come on top.
    let data = plan.data();
    let passes: usize = policies
        .iter()
        .map(|k| {
            if *k == PolicyKind::Oracle || config.start == Start::Cold {
                data.scored.len()
            } else {
                data.train.len() + data.scored.len()
            }
        })
        .sum::<usize>()
        + user_policies.len()
            * if config.start == Start::Cold { data.scored.len() } else { data.train.len() + data.scored.len() };
    let simulated = passes;
    let report = Report {
        source,
        profile,
        cold_start_secs: config.fleet.cold_start_secs,
        windows: &plan.windows,
        config,
        calibration: &plan.calibration,
        burstiness: &plan.burstiness,
        oracle: &plan.oracle,
        lower_bound: &plan.lower_bound,
        fixed_peak: plan.fixed_peak,
        fixed_99: &plan.fixed_99,
        max_replicas: plan.max_replicas,
        tuning: &plan.tuning,
        kpa: &plan.kpa,
        policies: reports.clone(),
        vs_lower_bound_at_own_attainment: vs_own,
        robustness: robustness.clone(),
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
    let mut table = format!("{}\n\n", plan.windows.label);
    table.push_str(&summary_table(&reports, config.fleet.slo_ttft_secs, &plan));
    if let Some(line) = headline(&report.ratios, bound, plan.windows.in_sample) {
        let _ = writeln!(table, "\n{line}");
    }
    if !robustness.is_empty() {
        let _ = write!(table, "\n{}", robustness_table(&robustness, plan.windows.in_sample));
    } else {
        let _ = writeln!(table, "\nRobustness table skipped (--no-robustness); run without the flag to get it.");
    }
    std::fs::write(dir.join("summary.md"), &table).context("cannot write summary.md")?;
    println!(
        "\n{}  (cold start {} s, TTFT objective {} s)\n{table}",
        source.name,
        fmt_secs(config.fleet.cold_start_secs),
        args.slo_ttft
    );
    println!("{}", cost_line(&reports, profile));
    if !args.no_plots {
        let title = format!(
            "{} — cold start {} s — {}",
            stem(&source.name),
            fmt_secs(config.fleet.cold_start_secs),
            plot::short_label(&plan.windows)
        );
        let target = config.attainment_target;
        plot::write_plots(&runs, &plan.data().scored, &title, config.fleet.slo_ttft_secs, target, dir)
            .context("cannot write the plots")?;
        plot::write_pareto(&reports, &robustness, bound, target, &title, dir)
            .context("cannot write the Pareto plot")?;
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
        in_sample: plan.windows.in_sample,
        lower_bound: bound,
        reports: runs.into_iter().map(|r| r.report).collect(),
    })
}

/// The learned and the scored windows, as the flags say.
fn make_windows(
    requests: &[vllm_scaling_core::sim::TraceRequest],
    train: Option<&Trace>,
    config: &ExperimentConfig,
) -> Result<Windows> {
    Ok(match train {
        Some(t) => Windows::with_training(t.requests(), requests, config.oracle_interval_secs)?,
        None => Windows::new(requests, config.learning, config.oracle_interval_secs)?,
    })
}

/// One point of the robustness table.
#[derive(Serialize, Clone)]
#[serde(rename_all = "camelCase")]
pub(crate) struct RobustRow {
    /// What changed from the nominal run.
    pub(crate) variant: String,
    /// The policy.
    pub(crate) policy: String,
    /// Attainment on the scored window.
    pub(crate) slo_attainment: f64,
    /// GPU-hours on the scored window.
    pub(crate) gpu_hours: f64,
}

/// The recommended policy and the best HPA baseline, as learned by the nominal plan,
/// replayed in other worlds: profile constants ±25 %, Prometheus lag 0/15/30 s, the
/// other router, four more seeds, cold starts 30/60/120/300 s.
fn robustness(
    args: &Args,
    source: &Source,
    train: Option<&Trace>,
    plan: &Plan,
    reports: &[&PolicyReport],
    jobs: usize,
) -> Result<Vec<RobustRow>> {
    let mut kinds = vec![PolicyKind::VllmScaling];
    if let Some(best) = best_hpa(reports).and_then(|b| b.name.parse::<PolicyKind>().ok()) {
        kinds.push(best);
    }
    let base = plan.config.fleet;
    let mut variants: Vec<(String, FleetConfig, Option<Windows>)> = Vec::new();
    let scaled = |label: &str, f: &dyn Fn(&mut ReplicaModel)| {
        let mut fleet = base;
        f(&mut fleet.model);
        (label.to_owned(), fleet, None)
    };
    for (k, sign) in [(0.75, "-25 %"), (1.25, "+25 %")] {
        variants.push(scaled(&format!("step base {sign}"), &|m| m.step_base_ms *= k));
        variants.push(scaled(&format!("prefill cost {sign}"), &|m| m.prefill_ms_per_token *= k));
        variants.push(scaled(&format!("decode cost {sign}"), &|m| m.decode_ms_per_seq *= k));
        if base.model.attention_ms_per_context_token > 0.0 {
            variants.push(scaled(&format!("context cost {sign}"), &|m| m.attention_ms_per_context_token *= k));
        }
    }
    for lag in [0.0, 15.0, 30.0] {
        if (lag - base.prometheus_lag_secs).abs() > 1e-9 {
            variants.push((
                format!("Prometheus lag {lag:.0} s"),
                FleetConfig { prometheus_lag_secs: lag, ..base },
                None,
            ));
        }
    }
    let other = if base.router == Router::RoundRobin { Router::LeastOutstanding } else { Router::RoundRobin };
    let router_name = if other == Router::RoundRobin { "round-robin" } else { "least-outstanding" };
    variants.push((format!("router {router_name}"), FleetConfig { router: other, ..base }, None));
    for cold in [30.0, 60.0, 120.0, 300.0] {
        if (cold - base.cold_start_secs).abs() > 1e-9 {
            variants.push((format!("cold start {cold:.0} s"), FleetConfig { cold_start_secs: cold, ..base }, None));
        }
    }
    for k in 1..=4u64 {
        let seed = args.seed.wrapping_add(k);
        let trace = match &source.raw {
            Some(raw) if source.name != "generator" => transform_seeded(args, raw, seed)?,
            _ => {
                let generator = generator_config(args);
                let t = generator.generate(seed).context("cannot generate the built-in load")?;
                transform_seeded(args, &t, seed)?
            }
        };
        let windows = make_windows(trace.requests(), train, &plan.config)?;
        variants.push((format!("seed {seed}"), base, Some(windows)));
    }
    let work: Vec<(usize, PolicyKind)> = (0..variants.len()).flat_map(|v| kinds.iter().map(move |&k| (v, k))).collect();
    let results = Threads(jobs).map(work.len(), &|i| {
        let (v, kind) = work[i];
        let (_, fleet, windows) = &variants[v];
        let run = plan.run_variant(kind, fleet, windows.as_ref(), &mut |_| {})?;
        Ok(vec![run.report.slo_attainment, run.report.gpu_hours])
    });
    let mut rows = Vec::new();
    for &kind in &kinds {
        if let Some(r) = reports.iter().find(|r| r.name == kind.name()) {
            rows.push(RobustRow {
                variant: "nominal".to_owned(),
                policy: r.name.clone(),
                slo_attainment: r.slo_attainment,
                gpu_hours: r.gpu_hours,
            });
        }
    }
    for ((v, kind), r) in work.iter().zip(results) {
        let r = r.map_err(|e| anyhow::anyhow!("{} under {}: {e}", kind.name(), variants[*v].0))?;
        rows.push(RobustRow {
            variant: variants[*v].0.clone(),
            policy: kind.name().to_owned(),
            slo_attainment: r[0],
            gpu_hours: r[1],
        });
    }
    Ok(rows)
}

/// The robustness table: one row per variant, attainment / GPU-hours per policy.
fn robustness_table(rows: &[RobustRow], in_sample: bool) -> String {
    let mut policies: Vec<&str> = Vec::new();
    let mut variants: Vec<&str> = Vec::new();
    for r in rows {
        if !policies.contains(&r.policy.as_str()) {
            policies.push(&r.policy);
        }
        if !variants.contains(&r.variant.as_str()) {
            variants.push(&r.variant);
        }
    }
    let mut s = String::new();
    let _ = writeln!(
        s,
        "Robustness{}: what the plan learned, replayed with one thing changed (attainment / GPU-hours on the scored window)\n",
        if in_sample { " (IN-SAMPLE)" } else { "" }
    );
    let _ = write!(s, "| variant |");
    for p in &policies {
        let _ = write!(s, " {p} |");
    }
    let _ = write!(s, "\n|---|");
    for _ in &policies {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s);
    for v in &variants {
        let _ = write!(s, "| {v} |");
        for p in &policies {
            match rows.iter().find(|r| r.variant == *v && r.policy == *p) {
                Some(r) => {
                    let _ = write!(s, " {:.2} % / {:.2} h |", 100.0 * r.slo_attainment, r.gpu_hours);
                }
                None => {
                    let _ = write!(s, " - |");
                }
            }
        }
        let _ = writeln!(s);
    }
    s
}

/// One line with the headline ratios.
fn headline(r: &Ratios, bound: Option<f64>, in_sample: bool) -> Option<String> {
    let lb = r.vllm_scaling_vs_lower_bound_gpu_hours?;
    let mut line = format!(
        "{}vllm-scaling uses {lb:.2}x the oracle's lower bound ({:.2} GPU-h)",
        if in_sample { "IN-SAMPLE: " } else { "" },
        bound.unwrap_or(0.0)
    );
    if let Some(f) = r.vllm_scaling_vs_fixed_99_gpu_hours {
        let _ = write!(line, ", {f:.2}x fixed-99's");
    }
    if let (Some(name), Some(x), Some(d), Some(beats)) = (
        &r.best_hpa,
        r.vllm_scaling_vs_best_hpa_gpu_hours,
        r.vllm_scaling_minus_best_hpa_attainment,
        r.vllm_scaling_beats_best_hpa,
    ) {
        let _ = write!(
            line,
            "; against the best HPA baseline ({name}): {x:.2}x its GPU-hours, {:+.2} points of attainment ({})",
            100.0 * d,
            if beats { "better at no more GPU-hours" } else { "NOT better at no more GPU-hours" }
        );
    }
    Some(line)
}

fn opt(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"))
}

/// The per-policy table, as Markdown, with the oracle's lower bound and the baselines'
/// tuned targets.
fn summary_table(reports: &[&PolicyReport], slo: f64, plan: &Plan) -> String {
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
    let bound = plan.lower_bound.gpu_hours.map_or_else(|| "unreachable".to_owned(), |b| format!("{b:.2}"));
    let _ = writeln!(s, "| lower bound | ≥ {:.2} % | {bound} | | | | | | | | |", 100.0 * plan.lower_bound.attainment);
    let _ = writeln!(
        s,
        "
Lower bound: the oracle's relaxation (each minute served alone by a warm constant fleet, cold starts charged for scale-ups), Lagrangian dual at {:.0} % of the feasible requests. Tuned on the training window: {}; maxReplicas {}.",
        100.0 * plan.lower_bound.attainment,
        plan.tuning
            .iter()
            .map(|t| format!(
                "{} {}{}",
                t.policy.name(),
                if t.policy == PolicyKind::Kpa { format!("{:.1} in flight", plan.kpa.target_concurrency) } else { format!("{}", t.threshold) },
                if t.target_met { "" } else { " (no candidate met the target)" }
            ))
            .collect::<Vec<_>>()
            .join(", "),
        plan.max_replicas
    );
    s
}

/// The sweep table: one row per trace and cold start, attainment and GPU-hours per policy.
fn sweep_table(rows: &[SweepRow]) -> String {
    let mut s = String::new();
    if rows.iter().any(|r| r.in_sample) {
        let _ = writeln!(s, "IN-SAMPLE: every policy learned on the window it is scored on.\n");
    }
    let names: Vec<String> =
        rows.first().map(|r| r.reports.iter().map(|p| p.name.clone()).collect()).unwrap_or_default();
    let _ = write!(s, "| trace | cold start s |");
    for n in &names {
        let _ = write!(s, " {n} |");
    }
    let _ = write!(
        s,
        " lower bound h | ours / bound | ours / fixed-99 | best HPA | ours / best HPA | better than best HPA |\n|---|---:|"
    );
    for _ in &names {
        let _ = write!(s, "---:|");
    }
    let _ = writeln!(s, "---:|---:|---:|---|---:|---|");
    for row in rows {
        let _ = write!(s, "| {} | {} |", row.source, fmt_secs(row.cold_start));
        for r in &row.reports {
            let _ = write!(s, " {:.2} % / {:.1} h |", 100.0 * r.slo_attainment, r.gpu_hours);
        }
        let find = |n: &str| row.reports.iter().find(|r| r.name == n);
        let ours = find("vllm-scaling");
        let ratio = |b: Option<f64>| match (ours, b) {
            (Some(a), Some(b)) if b > 0.0 => format!("{:.2}", a.gpu_hours / b),
            _ => "-".to_owned(),
        };
        let refs: Vec<&PolicyReport> = row.reports.iter().collect();
        let best = best_hpa(&refs);
        let verdict = match (ours, best) {
            (Some(a), Some(b)) => {
                if a.slo_attainment > b.slo_attainment && a.gpu_hours <= b.gpu_hours + 1e-9 {
                    "yes"
                } else {
                    "no"
                }
            }
            _ => "-",
        };
        let _ = writeln!(
            s,
            " {} | {} | {} | {} | {} | {verdict} |",
            opt(row.lower_bound),
            ratio(row.lower_bound),
            ratio(find("fixed-99").map(|r| r.gpu_hours)),
            best.map_or("-", |b| b.name.as_str()),
            ratio(best.map(|b| b.gpu_hours)),
        );
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
    let mut profile = load_profile(&args.profile, "--profile")?;
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
        profile
            .sources
            .insert(vllm_scaling_core::sim::camel_case(field), format!("overridden on the command line ({flag})"));
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

/// A profile by built-in name or file (given with `flag`); refusals are bad input.
pub(crate) fn load_profile(spec: &str, flag: &str) -> Result<ReplicaProfile> {
    let looks_like_file = spec.ends_with(".yaml") || spec.ends_with(".yml") || spec.contains('/');
    if looks_like_file || Path::new(spec).is_file() {
        let text = std::fs::read_to_string(spec)
            .map_err(|e| BadInput(format!("{flag} {spec}: cannot read the profile file: {e}")))?;
        Ok(ReplicaProfile::parse(&text).map_err(|e| BadInput(format!("{flag} {spec}: {e}")))?)
    } else {
        Ok(ReplicaProfile::builtin(spec).map_err(|e| BadInput(format!("{flag}: {e}")))?)
    }
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
        assert_eq!(
            names,
            [
                "vllm-scaling",
                "hpa-rate",
                "hpa-queue",
                "hpa-running",
                "hpa-kv",
                "kpa",
                "fixed-peak",
                "fixed-99",
                "oracle"
            ]
        );
        // Out of sample by default, and every report says which window learned.
        assert_eq!(report["windows"]["inSample"], false);
        assert!(
            report["windows"]["label"].as_str().is_some_and(|l| l.starts_with("out of sample")),
            "{}",
            report["windows"]
        );
        assert!(report["lowerBound"]["gpuHours"].is_number(), "{}", report["lowerBound"]);
        assert!(!report["robustness"].as_array().expect("a robustness table").is_empty());
        for p in policies {
            let attainment = p["sloAttainment"].as_f64().expect("sloAttainment");
            assert!((0.0..=1.0).contains(&attainment), "{p}");
            for field in ["gpuHours", "ttftP50S", "ttftP99S", "queueTimeP99S"] {
                assert!(p[field].is_number(), "{field} missing in {p}");
            }
            for field in ["scaleEvents", "directionChanges"] {
                assert!(p[field].is_u64(), "{field} missing in {p}");
            }
        }
        for file in [
            "replicas.svg",
            "replicas.png",
            "pareto.svg",
            "pareto.png",
            "summary.md",
            "vllm-scaling-policy.yaml",
            "decisions.log",
        ] {
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
        assert_eq!(report["source"]["skippedRows"], 1);
        // The 100 s trace is cut at the whole minute nearest its middle: 60 s learn, the rest is scored.
        let windows = &report["windows"];
        assert_eq!(windows["trainRequests"].as_u64().zip(windows["scoredRequests"].as_u64()), Some((240, 160)));
        assert_eq!(report["policies"][0]["requests"], 160);
    }

    #[test]
    fn train_file_in_sample_and_cold_start_are_labelled() {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, rows: usize, tokens: u32| {
            let path = dir.path().join(name);
            let mut text = String::from("timestamp_seconds,input_tokens,output_tokens\n");
            for i in 0..rows {
                text.push_str(&format!("{}.{},{},{}\n", i / 4, 25 * (i % 4), tokens, 30));
            }
            std::fs::write(&path, text).expect("write");
            path
        };
        let (train, scored) = (write("train.csv", 600, 300), write("scored.csv", 480, 900));
        let read = |out: &Path| -> serde_json::Value {
            serde_json::from_str(&std::fs::read_to_string(out.join("report.json")).expect("report")).expect("JSON")
        };
        let common = [
            "--trace",
            scored.to_str().expect("utf-8"),
            "--no-plots",
            "--no-robustness",
            "--policy",
            "vllm-scaling,oracle",
        ];
        let out = dir.path().join("train");
        let mut argv = common.to_vec();
        argv.extend(["--train", train.to_str().expect("utf-8")]);
        execute(&args(&argv, &out)).expect("runs with a training file");
        let r = read(&out);
        assert_eq!(r["windows"]["learning"]["kind"], "train-file", "{}", r["windows"]);
        assert_eq!(r["windows"]["trainRequests"], 600);
        assert_eq!(r["policies"][0]["requests"], 480, "the whole --trace is scored");
        let summary = std::fs::read_to_string(out.join("summary.md")).expect("summary");
        assert!(summary.starts_with("out of sample: learned on a separate training trace"), "{summary}");

        let out = dir.path().join("inside");
        let mut argv = common.to_vec();
        argv.extend(["--in-sample", "--start", "cold"]);
        execute(&args(&argv, &out)).expect("runs in sample");
        let r = read(&out);
        assert_eq!(r["windows"]["inSample"], true);
        assert_eq!(r["config"]["start"], "cold");
        let summary = std::fs::read_to_string(out.join("summary.md")).expect("summary");
        assert!(summary.starts_with("IN-SAMPLE"), "{summary}");
        assert!(summary.contains("Robustness table skipped"), "{summary}");
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
