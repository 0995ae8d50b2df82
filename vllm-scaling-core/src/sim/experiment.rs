//! The comparison `vllm-autoscaler simulate` runs: the recommended policy against the
//! HPA-on-queue-depth setup, a KPA-like policy, fixed fleets and an offline oracle, on the
//! same arrivals and the same fleet model.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::engine::EngineConfig;
use crate::policy::{ResolvedPolicy, parse_policy};

use super::autoscalers::{EngineAutoscaler, FixedAutoscaler, KpaAutoscaler, KpaConfig, ScheduleAutoscaler};
use super::burst::{self, Burstiness};
use super::fleet::{Autoscaler, FleetConfig, RunResult, SimError, simulate, simulate_with_ledger};
use super::model::ReplicaModel;
use super::rng::SimRng;
use super::trace::{Trace, TraceRequest};

/// The policies of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum PolicyKind {
    /// The project's recommended policy, run by the engine (`vllm-scaling`).
    VllmScaling,
    /// The HPA on `vllm:num_requests_waiting` with an average target of 5, the GKE
    /// guide's and production-stack's default (`hpa-queue`).
    HpaQueue,
    /// A Knative-KPA-like policy on concurrency (`kpa`).
    Kpa,
    /// A fixed fleet sized for the peak interval (`fixed-peak`).
    FixedPeak,
    /// The smallest fixed fleet meeting the attainment target (`fixed-99`).
    Fixed99,
    /// The offline oracle: each interval's smallest sufficient fleet, started a cold start
    /// ahead (`oracle`).
    Oracle,
}

impl PolicyKind {
    /// Every policy, in report order.
    pub const ALL: [Self; 6] =
        [Self::VllmScaling, Self::HpaQueue, Self::Kpa, Self::FixedPeak, Self::Fixed99, Self::Oracle];

    /// The name in reports and on the command line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::VllmScaling => "vllm-scaling",
            Self::HpaQueue => "hpa-queue",
            Self::Kpa => "kpa",
            Self::FixedPeak => "fixed-peak",
            Self::Fixed99 => "fixed-99",
            Self::Oracle => "oracle",
        }
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown policy name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("unknown policy `{0}`: expected one of vllm-scaling, hpa-queue, kpa, fixed-peak, fixed-99, oracle")]
pub struct UnknownPolicy(pub String);

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| UnknownPolicy(s.to_owned()))
    }
}

/// Settings of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ExperimentConfig {
    /// The fleet model (its `initial_replicas` is set per policy).
    pub fleet: FleetConfig,
    /// The share of requests that must meet the TTFT objective (0.99).
    pub attainment_target: f64,
    /// The oracle's interval, seconds (60: one fleet size per minute).
    pub oracle_interval_secs: f64,
    /// Fewest replicas for the scaling policies (and the oracle's floor).
    pub min_replicas: i32,
    /// Most replicas for the scaling policies (`maxReplicas`). `None`: twice the
    /// oracle's peak, the GPU quota a capacity planner would grant.
    pub max_replicas: Option<i32>,
    /// The load, as a share of the calibrated sustainable rate, that the recommended
    /// policy and the KPA aim each replica at.
    pub target_utilization: f64,
    /// The engine's sync period, seconds (the HPA's 15 s).
    pub sync_period_secs: f64,
    /// Seed of the calibration load.
    pub seed: u64,
    /// Adaptive policies (`vllm-scaling`, `hpa-queue`, `kpa`) replay the trace twice and
    /// are measured on the second pass, so they enter the measured hour in the state
    /// their own policy left them in, not in an arbitrary starting fleet.
    pub warm_up_pass: bool,
}

impl Default for ExperimentConfig {
    fn default() -> Self {
        Self {
            fleet: FleetConfig::default(),
            attainment_target: 0.99,
            oracle_interval_secs: 60.0,
            min_replicas: 1,
            max_replicas: None,
            target_utilization: 0.85,
            sync_period_secs: 15.0,
            seed: 1,
            warm_up_pass: true,
        }
    }
}

impl ExperimentConfig {
    fn validate(&self) -> Result<(), SimError> {
        self.fleet.validate()?;
        let cfg = |field: &'static str, reason: String| Err(SimError::Config { field, reason });
        if !(self.attainment_target > 0.0 && self.attainment_target <= 1.0) {
            return cfg("attainment_target", format!("must be in (0, 1], got {}", self.attainment_target));
        }
        if !(self.oracle_interval_secs.is_finite() && self.oracle_interval_secs >= 1.0) {
            return cfg("oracle_interval_secs", format!("must be at least 1, got {}", self.oracle_interval_secs));
        }
        if self.min_replicas < 1 || self.max_replicas.is_some_and(|max| max < self.min_replicas) {
            return cfg(
                "min_replicas",
                format!("need 1 <= minReplicas <= maxReplicas, got {} and {:?}", self.min_replicas, self.max_replicas),
            );
        }
        if !(self.target_utilization > 0.0 && self.target_utilization <= 1.0) {
            return cfg("target_utilization", format!("must be in (0, 1], got {}", self.target_utilization));
        }
        if !(self.sync_period_secs.is_finite() && self.sync_period_secs >= 1.0) {
            return cfg("sync_period_secs", format!("must be at least 1, got {}", self.sync_period_secs));
        }
        Ok(())
    }
}

/// What one replica sustains on a request mix: measured by replaying the mix with
/// Poisson arrivals against a fleet of [`CALIBRATION_REPLICAS`] behind the router, the
/// way a `vllm bench serve` sweep finds the knee, divided by the fleet size.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Calibration {
    /// The highest arrival rate one replica serves with the attainment target met, req/s.
    pub sustainable_rps: f64,
    /// The load the policies aim at: `target_utilization × sustainable_rps`.
    pub target_rps: f64,
    /// Mean running requests per replica at the target load.
    pub running_at_target: f64,
    /// Mean waiting plus running requests per replica at the target load.
    pub in_flight_at_target: f64,
}

/// The fleet size the calibration measures.
pub const CALIBRATION_REPLICAS: i32 = 8;

/// Measures [`Calibration`] for the token mix of `mix` (arrival times ignored).
///
/// # Errors
/// An invalid model or an empty mix.
pub fn calibrate(
    mix: &[TraceRequest],
    model: &ReplicaModel,
    slo_ttft_secs: f64,
    attainment_target: f64,
    target_utilization: f64,
    seed: u64,
) -> Result<Calibration, SimError> {
    model.validate().map_err(SimError::Model)?;
    if mix.is_empty() {
        return Err(SimError::NoRequests);
    }
    // A small fleet rather than one replica: with heavy-tailed prompts one replica is
    // blocked by every long prefill, while a routed fleet spreads them.
    let replicas = CALIBRATION_REPLICAS;
    let fleet = FleetConfig {
        model: *model,
        slo_ttft_secs,
        initial_replicas: replicas as u32,
        cold_start_secs: 0.0,
        scrape_interval_secs: 60.0,
        sample_interval_secs: 60.0,
        ..FleetConfig::default()
    };
    // Poisson arrivals at `rps` per replica, token pairs drawn from the mix; the same seed
    // for every rate (common random numbers), so attainment falls with the rate without noise.
    let load = |rps: f64| -> Vec<TraceRequest> {
        let mut rng = SimRng::stream(seed, 0x0063_616c);
        let n = 1000 * replicas as usize;
        let fleet_rps = rps * f64::from(replicas);
        let mut t = 0.0;
        (0..n)
            .map(|_| {
                t += rng.exponential(1.0 / fleet_rps);
                let pick = mix[rng.below(mix.len())];
                TraceRequest { arrival_secs: t, ..pick }
            })
            .collect()
    };
    let run = |rps: f64| -> Result<(f64, f64, f64), SimError> {
        let reqs = load(rps);
        let mut fixed = FixedAutoscaler::new("calibration", replicas);
        let (run, ledger) = simulate_with_ledger(&reqs, &fleet, &mut fixed, &mut |_| {})?;
        // Skip the first tenth: the replica starts empty.
        let skip = reqs.len() / 10;
        let kept = &reqs[skip..];
        let ok = feasible_attainment(&reqs, &run.ttft_secs, skip, &fleet);
        let span = kept[kept.len() - 1].arrival_secs - kept[0].arrival_secs;
        let (mut running, mut in_flight) = (0.0, 0.0);
        for (i, r) in kept.iter().enumerate() {
            let j = skip + i;
            if ledger.finished[j].is_finite() {
                running += ledger.finished[j] - ledger.admitted[j];
                in_flight += ledger.finished[j] - r.arrival_secs;
            }
        }
        // Little's law: mean number in the system = rate × mean time in it.
        let per_replica = span.max(1e-9) * f64::from(replicas);
        Ok((ok, running / per_replica, in_flight / per_replica))
    };
    let (mut lo, mut hi) = (0.01, 1.0);
    while run(hi)?.0 >= attainment_target && hi < 10_000.0 {
        lo = hi;
        hi *= 2.0;
    }
    for _ in 0..10 {
        let mid = 0.5 * (lo + hi);
        if run(mid)?.0 >= attainment_target {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    let target_rps = lo * target_utilization;
    let (_, running_at_target, in_flight_at_target) = run(target_rps)?;
    Ok(Calibration { sustainable_rps: lo, target_rps, running_at_target, in_flight_at_target })
}

/// The oracle's plan: the smallest fleet for each interval, found by search with the
/// interval's requests alone on a warm fleet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OraclePlan {
    /// The interval, seconds.
    pub interval_secs: f64,
    /// Replicas per interval.
    pub replicas: Vec<i32>,
    /// Intervals where even many more replicas could not meet the target (requests
    /// longer than the objective allows), so the plan holds the best reachable attainment.
    pub infeasible_intervals: usize,
    /// How many times the whole plan was replayed to repair intervals that a backlog
    /// carried over from the interval before broke (see [`Plan::prepare`]).
    pub repair_rounds: usize,
}

impl OraclePlan {
    /// The largest interval fleet.
    #[must_use]
    pub fn peak(&self) -> i32 {
        self.replicas.iter().copied().max().unwrap_or(1)
    }

    /// The timetable: each interval's fleet is asked for `cold_start_secs` before the
    /// interval starts (so it is ready in time) and kept until it ends; overlapping asks
    /// take the larger.
    #[must_use]
    pub fn schedule(&self, cold_start_secs: f64) -> Vec<(f64, i32)> {
        let len = self.interval_secs;
        let mut points: Vec<f64> = Vec::with_capacity(self.replicas.len() * 2 + 1);
        points.push(0.0);
        for m in 0..self.replicas.len() {
            let start = m as f64 * len;
            points.push((start - cold_start_secs).max(0.0));
            points.push(start);
        }
        points.sort_by(f64::total_cmp);
        points.dedup();
        let mut steps: Vec<(f64, i32)> = Vec::with_capacity(points.len());
        for p in points {
            let need = self
                .replicas
                .iter()
                .enumerate()
                .filter(|(m, _)| {
                    let start = *m as f64 * len;
                    start - cold_start_secs <= p + 1e-9 && p < start + len - 1e-9
                })
                .map(|(_, &n)| n)
                .max()
                .unwrap_or(0);
            if steps.last().is_none_or(|s| s.1 != need) {
                steps.push((p, need));
            }
        }
        steps
    }
}

/// The result of a search for a fixed fleet.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FixedSearch {
    /// The fleet size found.
    pub replicas: i32,
    /// Its attainment.
    pub attainment: f64,
    /// Whether it meets the target (false: no fleet size does; this is the smallest at
    /// the plateau of what more replicas can reach).
    pub target_met: bool,
}

/// The smallest `n` in `[lo, cap]` with `f(n) >= target`, assuming `f` grows with `n`
/// until it plateaus below `ceiling` (the share of requests that can meet the objective
/// at all); starts from `guess`. When the target is out of reach it returns the smallest
/// `n` within 0.05 % of the plateau.
fn smallest_meeting(
    f: &mut dyn FnMut(i32) -> Result<f64, SimError>,
    lo: i32,
    guess: i32,
    cap: i32,
    target: f64,
    ceiling: f64,
) -> Result<FixedSearch, SimError> {
    const PLATEAU: f64 = 0.001;
    const SLACK: f64 = 0.0005;
    let mut memo: BTreeMap<i32, f64> = BTreeMap::new();
    let mut eval = |n: i32, memo: &mut BTreeMap<i32, f64>| -> Result<f64, SimError> {
        if let Some(&v) = memo.get(&n) {
            return Ok(v);
        }
        let v = f(n)?;
        memo.insert(n, v);
        Ok(v)
    };
    let floor = lo.max(1);
    let mut hi = guess.clamp(floor, cap.max(floor));
    let mut goal = target;
    loop {
        let a = eval(hi, &mut memo)?;
        if a >= goal {
            break;
        }
        if hi >= cap {
            goal = a - SLACK;
            break;
        }
        let next = (hi.saturating_mul(2)).clamp(hi + 1, cap);
        let b = eval(next, &mut memo)?;
        hi = next;
        // Doubling the fleet no longer helps, and most of what is reachable is reached.
        if b < goal && b - a < PLATEAU && b >= 0.5 * ceiling {
            goal = b - SLACK;
            break;
        }
    }
    // `hi` meets `goal`; start the bisection above the largest probe that fails it (the
    // goal may have been lowered after some probes were made).
    let mut lo = memo.range(..hi).filter(|(_, v)| **v < goal).map(|(n, _)| n + 1).max().unwrap_or(floor).min(hi);
    while lo < hi {
        let mid = lo + (hi - lo) / 2;
        if eval(mid, &mut memo)? >= goal {
            hi = mid;
        } else {
            lo = mid + 1;
        }
    }
    let attainment = eval(hi, &mut memo)?;
    Ok(FixedSearch { replicas: hi, attainment, target_met: attainment >= target })
}

/// Replays the oracle's plan on the whole trace and, while some interval misses the
/// target (a backlog carried over from the interval before, which the per-interval
/// search cannot see), grows that interval's fleet by 10 % (at least one replica).
fn repair_oracle(
    requests: &[TraceRequest],
    config: &ExperimentConfig,
    oracle: &mut OraclePlan,
) -> Result<(), SimError> {
    const MAX_ROUNDS: usize = 12;
    let fleet = &config.fleet;
    let len = oracle.interval_secs;
    for round in 0..MAX_ROUNDS {
        let schedule = oracle.schedule(fleet.cold_start_secs);
        let initial = schedule.first().map_or(1, |s| s.1);
        let mut autoscaler = ScheduleAutoscaler::new("oracle", schedule);
        let run = simulate(
            requests,
            &FleetConfig { initial_replicas: initial as u32, ..*fleet },
            &mut autoscaler,
            &mut |_| {},
        )?;
        let mut ok = vec![0usize; oracle.replicas.len()];
        let mut n = vec![0usize; oracle.replicas.len()];
        for (r, &t) in requests.iter().zip(&run.ttft_secs) {
            if fleet.model.idle_ttft_secs(r.input_tokens) > fleet.slo_ttft_secs {
                continue;
            }
            let m = ((r.arrival_secs / len) as usize).min(n.len() - 1);
            n[m] += 1;
            ok[m] += usize::from(t <= fleet.slo_ttft_secs);
        }
        let mut changed = false;
        for m in 0..n.len() {
            if n[m] > 0 && (ok[m] as f64) < config.attainment_target * n[m] as f64 - 1e-9 {
                let grown = oracle.replicas[m] + (oracle.replicas[m] / 10).max(1);
                oracle.replicas[m] = grown.min(fleet.max_fleet as i32);
                changed = true;
            }
        }
        oracle.repair_rounds = round;
        if !changed {
            return Ok(());
        }
        oracle.repair_rounds = round + 1;
    }
    Ok(())
}

/// The share of requests whose prompt alone, on an idle replica, meets the objective:
/// the most any fleet can reach.
#[must_use]
pub fn feasible_share(requests: &[TraceRequest], model: &ReplicaModel, slo_ttft_secs: f64) -> f64 {
    if requests.is_empty() {
        return 1.0;
    }
    requests.iter().filter(|r| model.idle_ttft_secs(r.input_tokens) <= slo_ttft_secs).count() as f64
        / requests.len() as f64
}

/// The share of the *feasible* requests among `reqs[skip..]` (those that can meet the
/// objective at all, see [`ReplicaModel::idle_ttft_secs`]) whose time to first token met
/// it: what the searches size fleets for, since no fleet helps the others.
fn feasible_attainment(reqs: &[TraceRequest], ttft_secs: &[f64], skip: usize, fleet: &FleetConfig) -> f64 {
    let slo = fleet.slo_ttft_secs;
    let (mut ok, mut n) = (0usize, 0usize);
    for (r, &t) in reqs.iter().zip(ttft_secs).skip(skip) {
        if fleet.model.idle_ttft_secs(r.input_tokens) <= slo {
            n += 1;
            ok += usize::from(t <= slo);
        }
    }
    if n == 0 { 1.0 } else { ok as f64 / n as f64 }
}

/// The attainment (over feasible requests) of a fixed fleet of `n` over `reqs[skip..]`
/// (the first `skip` requests only warm the fleet up).
fn fixed_attainment(reqs: &[TraceRequest], skip: usize, fleet: &FleetConfig, n: i32) -> Result<f64, SimError> {
    let fleet = FleetConfig { initial_replicas: n.max(0) as u32, ..*fleet };
    let mut fixed = FixedAutoscaler::new("probe", n);
    let run = simulate(reqs, &fleet, &mut fixed, &mut |_| {})?;
    Ok(feasible_attainment(reqs, &run.ttft_secs, skip, &fleet))
}

/// How much of the previous interval the oracle replays before each interval it sizes.
const ORACLE_WARMUP_SECS: f64 = 30.0;

/// Everything a comparison needs before the policies run: the calibration, the oracle's
/// plan and the fixed fleet sizes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The settings.
    pub config: ExperimentConfig,
    /// One replica's capacity on this mix.
    pub calibration: Calibration,
    /// The oracle's per-interval fleet.
    pub oracle: OraclePlan,
    /// The `fixed-peak` size: the oracle's largest interval fleet.
    pub fixed_peak: i32,
    /// The `fixed-99` search.
    pub fixed_99: FixedSearch,
    /// `maxReplicas` of the scaling policies.
    pub max_replicas: i32,
    /// How bursty the arrivals are (what decides the recommended policy's burst headroom).
    pub burstiness: Burstiness,
    /// The recommended policy, as YAML.
    pub recommended_policy: String,
}

/// What the plan stage is doing, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Measuring one replica.
    Calibrate,
    /// Searching each interval's fleet for the oracle.
    Oracle,
    /// Searching the `fixed-99` fleet.
    Fixed99,
    /// Running a policy.
    Run(PolicyKind),
}

impl Plan {
    /// Calibrates, plans the oracle, and searches the fixed fleets.
    ///
    /// # Errors
    /// An invalid configuration or empty arrivals.
    pub fn prepare(
        requests: &[TraceRequest],
        config: &ExperimentConfig,
        progress: &mut dyn FnMut(Stage, f64),
    ) -> Result<Self, SimError> {
        config.validate()?;
        if requests.is_empty() {
            return Err(SimError::NoRequests);
        }
        let fleet = &config.fleet;
        progress(Stage::Calibrate, 0.0);
        let calibration = calibrate(
            requests,
            &fleet.model,
            fleet.slo_ttft_secs,
            config.attainment_target,
            config.target_utilization,
            config.seed,
        )?;
        progress(Stage::Calibrate, 1.0);
        let trace = Trace::from_requests(requests.to_vec()).map_err(|_| SimError::NoRequests)?;
        let len = config.oracle_interval_secs;
        let intervals = (trace.duration_secs() / len).floor() as usize + 1;
        let mut replicas = Vec::with_capacity(intervals);
        let mut infeasible_intervals = 0;
        let mut guess = config.min_replicas;
        // Each interval is searched with the requests of the moments before it replayed
        // first (not counted), so the fleet enters the interval busy as it would.
        let warmup = ORACLE_WARMUP_SECS.min(len);
        for m in 0..intervals {
            progress(Stage::Oracle, m as f64 / intervals as f64);
            let start = m as f64 * len;
            let counted = trace.window(start, start + len);
            if counted.is_empty() {
                replicas.push(config.min_replicas);
                continue;
            }
            let window = trace.window((start - warmup).max(0.0), start + len);
            let skip = window.len() - counted.len();
            let cap = (window.len() as i32).clamp(config.min_replicas, fleet.max_fleet as i32);
            let estimate = (counted.len() as f64 / len / calibration.sustainable_rps).ceil() as i32;
            let found = smallest_meeting(
                &mut |n| fixed_attainment(&window, skip, fleet, n),
                config.min_replicas,
                estimate.max(guess / 2).max(1),
                cap,
                config.attainment_target,
                1.0,
            )?;
            if !found.target_met {
                infeasible_intervals += 1;
            }
            guess = found.replicas;
            replicas.push(found.replicas.max(config.min_replicas));
        }
        let mut oracle = OraclePlan { interval_secs: len, replicas, infeasible_intervals, repair_rounds: 0 };
        repair_oracle(requests, config, &mut oracle)?;
        progress(Stage::Oracle, 1.0);
        let fixed_peak = oracle.peak();
        let max_replicas = config.max_replicas.unwrap_or(2 * fixed_peak).max(config.min_replicas);
        progress(Stage::Fixed99, 0.0);
        let fixed_99 = smallest_meeting(
            &mut |n| fixed_attainment(requests, 0, fleet, n),
            1,
            fixed_peak,
            (4 * fixed_peak).clamp(8, fleet.max_fleet as i32),
            config.attainment_target,
            1.0,
        )?;
        progress(Stage::Fixed99, 1.0);
        // The planner's view of the traffic's bursts: the trace as one period of traffic
        // that repeats (the warm-up pass replays it the same way), half the miss budget
        // left to bursts that outgrow the kept fleet.
        let period = warm_up_shift(requests, len);
        let burstiness =
            burst::analyze(requests, period, config.sync_period_secs, 0.5 * (1.0 - config.attainment_target))?;
        let recommended_policy = recommended_policy_yaml(
            &calibration,
            &burstiness,
            config.min_replicas,
            max_replicas,
            fleet.cold_start_secs,
        );
        Ok(Self {
            config: *config,
            calibration,
            oracle,
            fixed_peak,
            fixed_99,
            max_replicas,
            burstiness,
            recommended_policy,
        })
    }

    /// The fleet model a policy runs on. Adaptive policies start warm at the `fixed-99`
    /// size (the fleet a static planner would have been running when autoscaling is
    /// switched on; the engine, like the HPA, seeds its history with it); fixed fleets and
    /// the oracle start at their own size.
    #[must_use]
    pub fn fleet_for(&self, kind: PolicyKind) -> FleetConfig {
        let initial = match kind {
            PolicyKind::FixedPeak => self.fixed_peak,
            PolicyKind::Fixed99 => self.fixed_99.replicas,
            PolicyKind::Oracle => self.oracle.schedule(self.config.fleet.cold_start_secs).first().map_or(1, |s| s.1),
            _ => self.fixed_99.replicas.clamp(self.config.min_replicas, self.max_replicas),
        };
        FleetConfig { initial_replicas: initial.max(0) as u32, ..self.config.fleet }
    }

    /// Builds a policy of the comparison.
    ///
    /// # Errors
    /// [`SimError::Policy`] if a built-in policy does not validate (a bug).
    pub fn autoscaler(&self, kind: PolicyKind) -> Result<Box<dyn Autoscaler + Send>, SimError> {
        let c = &self.config;
        let sync = EngineConfig::default().with_sync_period(Duration::from_secs_f64(c.sync_period_secs));
        Ok(match kind {
            PolicyKind::VllmScaling => {
                let policy = parse(kind, &self.recommended_policy)?;
                Box::new(EngineAutoscaler::new(kind.name(), policy, sync).with_scrape_interval(RECOMMENDED_SCRAPE_SECS))
            }
            PolicyKind::HpaQueue => {
                let policy = parse(kind, &hpa_queue_policy_yaml(c.min_replicas, self.max_replicas))?;
                Box::new(EngineAutoscaler::new(kind.name(), policy, sync))
            }
            PolicyKind::Kpa => Box::new(KpaAutoscaler::new(
                kind.name(),
                KpaConfig {
                    target_concurrency: self.calibration.in_flight_at_target.max(1.0),
                    min_replicas: c.min_replicas,
                    max_replicas: self.max_replicas,
                    ..KpaConfig::default()
                },
            )),
            PolicyKind::FixedPeak => Box::new(FixedAutoscaler::new(kind.name(), self.fixed_peak)),
            PolicyKind::Fixed99 => Box::new(FixedAutoscaler::new(kind.name(), self.fixed_99.replicas)),
            PolicyKind::Oracle => {
                Box::new(ScheduleAutoscaler::new(kind.name(), self.oracle.schedule(c.fleet.cold_start_secs)))
            }
        })
    }

    /// Runs one policy of the comparison (adaptive policies on two passes of the trace,
    /// measured on the second, when [`ExperimentConfig::warm_up_pass`] is on).
    ///
    /// # Errors
    /// As [`simulate`].
    pub fn run(
        &self,
        requests: &[TraceRequest],
        kind: PolicyKind,
        progress: &mut dyn FnMut(f64),
    ) -> Result<RunResult, SimError> {
        let mut autoscaler = self.autoscaler(kind)?;
        let fleet = self.fleet_for(kind);
        let adaptive = matches!(kind, PolicyKind::VllmScaling | PolicyKind::HpaQueue | PolicyKind::Kpa);
        self.run_autoscaler(requests, autoscaler.as_mut(), fleet, adaptive, progress)
    }

    /// Runs a user's `vLLMScalingPolicy` through the same engine and the same path as
    /// the built-in adaptive policies: started like them (the `fixed-99` fleet, clamped
    /// to the policy's own bounds), scraped at the fleet's interval, warmed up the same way.
    ///
    /// # Errors
    /// As [`simulate`].
    pub fn run_policy(
        &self,
        requests: &[TraceRequest],
        name: &str,
        policy: ResolvedPolicy,
        progress: &mut dyn FnMut(f64),
    ) -> Result<RunResult, SimError> {
        let sync = EngineConfig::default().with_sync_period(Duration::from_secs_f64(self.config.sync_period_secs));
        let (lo, hi) = (policy.min_replicas.max(1), policy.max_replicas.max(1));
        let mut autoscaler = EngineAutoscaler::new(name, policy, sync);
        let initial = self.fixed_99.replicas.clamp(lo.min(hi), hi);
        let fleet = FleetConfig { initial_replicas: initial.max(0) as u32, ..self.config.fleet };
        self.run_autoscaler(requests, &mut autoscaler, fleet, true, progress)
    }

    /// The one path every policy of the comparison is run through: adaptive policies on
    /// two passes of the trace, measured on the second, when
    /// [`ExperimentConfig::warm_up_pass`] is on.
    ///
    /// # Errors
    /// As [`simulate`].
    pub fn run_autoscaler(
        &self,
        requests: &[TraceRequest],
        autoscaler: &mut dyn Autoscaler,
        fleet: FleetConfig,
        adaptive: bool,
        progress: &mut dyn FnMut(f64),
    ) -> Result<RunResult, SimError> {
        if !(adaptive && self.config.warm_up_pass) {
            return simulate(requests, &fleet, autoscaler, progress);
        }
        // The second pass starts on the first whole interval after the last arrival, so
        // the trace's minutes line up with the oracle's.
        let shift = warm_up_shift(requests, self.config.oracle_interval_secs);
        let twice: Vec<TraceRequest> = requests
            .iter()
            .copied()
            .chain(requests.iter().map(|r| TraceRequest { arrival_secs: r.arrival_secs + shift, ..*r }))
            .collect();
        let mut run = simulate(&twice, &FleetConfig { warmup_secs: shift, ..fleet }, autoscaler, progress)?;
        run.ttft_secs.drain(..requests.len());
        Ok(run)
    }
}

/// Where the warm-up pass's second copy of the trace starts: the first whole interval
/// after the last arrival, so the trace's minutes line up with the oracle's.
fn warm_up_shift(requests: &[TraceRequest], interval_secs: f64) -> f64 {
    let last = requests.last().map_or(0.0, |r| r.arrival_secs);
    ((last / interval_secs).floor() + 1.0) * interval_secs
}

fn parse(kind: PolicyKind, yaml: &str) -> Result<ResolvedPolicy, SimError> {
    parse_policy(yaml)
        .map(|(_, p)| p)
        .map_err(|e| SimError::Policy { name: kind.name().to_owned(), reason: e.to_string() })
}

/// The recommended policy scrapes pods directly every 5 s.
pub const RECOMMENDED_SCRAPE_SECS: f64 = 5.0;

/// How much of the fleet the recommended policy gives back per minute once the hold of
/// bursty traffic has passed, percent.
pub const BURSTY_GIVE_BACK_PERCENT: i32 = 50;

/// The recommended policy for a calibrated replica, as a `vLLMScalingPolicy` document.
///
/// Demand is the router's arrival rate (`vllm:num_incoming_requests_total`) against the
/// rate one replica serves at the target utilization: unlike completions or queue
/// length, it keeps growing when the fleet saturates and is linear in the load, so the
/// HPA's proportional rule sizes the fleet right in one step. The forecast of that rate
/// one cold start ahead pre-warms replicas before a ramp arrives; the queue rule catches
/// what the calibration got wrong; the survivors check and a slow scale-down (about a
/// replica a minute) keep capacity through quiet minutes between bursts, so a scale-down
/// is rarely undone at the price of a cold start.
///
/// For bursty traffic ([`Burstiness::is_bursty`]: bursts that outgrow the largest recent
/// one by more than the target utilization leaves), a second arrival-rate rule counts
/// each sync period's arrivals and asks for the burst grown by [`Burstiness::growth`],
/// and the scale-down stabilization window keeps the largest such ask for
/// [`Burstiness::hold_secs`] (the HPA's own max-over-the-window), after which
/// [`BURSTY_GIVE_BACK_PERCENT`] of the fleet goes back per minute.
#[must_use]
pub fn recommended_policy_yaml(
    calibration: &Calibration,
    burstiness: &Burstiness,
    min_replicas: i32,
    max_replicas: i32,
    cold_start_secs: f64,
) -> String {
    let rps = round_to(calibration.target_rps, 0.01).max(0.01);
    let horizon = (cold_start_secs.round() as i64 + 15).clamp(1, 3600);
    let utilization =
        if calibration.sustainable_rps > 0.0 { calibration.target_rps / calibration.sustainable_rps } else { 1.0 };
    let bursty = burstiness.is_bursty(utilization) && burstiness.growth.is_finite();
    let burst_rule = if bursty {
        let window = (burstiness.window_secs.round() as i64).max(1);
        let threshold = round_to(calibration.target_rps / burstiness.growth, 0.01).max(0.01);
        format!(
            "    # Bursty arrivals: the arrivals of each sync period, sized for a burst
    # {growth:.2}x the largest of the last {hold} s (what at most half the miss
    # budget of this traffic's history outgrew).
    - name: arrival_burst
      metric: custom
      query: sum(rate(vllm:num_incoming_requests_total[{window}s]))
      targetType: AverageValue
      threshold: {threshold}
",
            growth = burstiness.growth,
            hold = burstiness.hold_secs.round() as i64,
        )
    } else {
        String::new()
    };
    let scale_down = if bursty {
        format!(
            "    # Keep the largest recent ask for the hold that makes the kept fleet cheapest
    # on this traffic's history, then give back {pct} % a minute.
    scaleDown:
      stabilizationWindowSeconds: {hold}
      policies:
        - {{type: Percent, value: {pct}, periodSeconds: 60}}
",
            hold = burstiness.hold_secs.round() as i64,
            pct = BURSTY_GIVE_BACK_PERCENT,
        )
    } else {
        "    # Give replicas back slowly: the HPA truncates, so 1 % a minute is one replica a
    # minute below 100 replicas. Bursts that follow quiet minutes find the fleet still
    # there, and a cold start is not paid twice.
    scaleDown:
      stabilizationWindowSeconds: 120
      policies:
        - {type: Percent, value: 1, periodSeconds: 60}
"
        .to_owned()
    };
    format!(
        "apiVersion: autoscaler.production-stack/v1alpha1
kind: vLLMScalingPolicy
metadata:
  name: vllm-scaling
spec:
  minReplicas: {min_replicas}
  maxReplicas: {max_replicas}
  scalingRules:
    # Arrivals at the router per replica: {rps} req/s is the target share of the
    # {sustainable:.2} req/s one replica sustains on this mix at the TTFT objective.
    - name: arrival_rate
      metric: custom
      query: {query}
      targetType: AverageValue
      threshold: {rps}
{burst_rule}    # A backlog means the calibration is off: add replicas in proportion.
    - metric: queue_length
      threshold: 20
      source: pods
  tolerance: {{scaleUp: 0.05, scaleDown: 0.1}}
  # Pre-warm for the arrival rate forecast one cold start (+ one sync) ahead.
  predictive:
    rule: arrival_rate
    horizonSeconds: {horizon}
    historySeconds: 300
    confidence: 0.75
  # Remove a replica only if the rest stay 10 % under every threshold.
  survivorsCheck:
    headroomPercent: 10
  behavior:
    scaleUp:
      stabilizationWindowSeconds: 0
      policies:
        - {{type: Percent, value: 100, periodSeconds: 15}}
        - {{type: Pods, value: 10, periodSeconds: 15}}
{scale_down}",
        sustainable = calibration.sustainable_rps,
        query = super::observe::ARRIVAL_RATE_QUERY,
    )
}

/// The HPA-on-queue-depth baseline: `vllm:num_requests_waiting` averaged per pod with a
/// target of 5 (production-stack's default KEDA trigger, the GKE guide's HPA), read from
/// Prometheus, with Kubernetes' default behavior (300 s scale-down stabilization).
#[must_use]
pub fn hpa_queue_policy_yaml(min_replicas: i32, max_replicas: i32) -> String {
    format!(
        "apiVersion: autoscaler.production-stack/v1alpha1
kind: vLLMScalingPolicy
metadata:
  name: hpa-queue
spec:
  minReplicas: {min_replicas}
  maxReplicas: {max_replicas}
  scalingRules:
    - metric: queue_length
      threshold: 5
      source: prometheus
  behavior: {{}}
"
    )
}

fn round_to(v: f64, step: f64) -> f64 {
    (v / step).round() * step
}

/// Every policy's run, with the plan that set them up.
#[derive(Clone, Debug, PartialEq)]
pub struct Comparison {
    /// The calibration, oracle plan and fixed sizes.
    pub plan: Plan,
    /// One run per policy, in the order asked.
    pub runs: Vec<RunResult>,
}

/// Prepares and runs `policies` one after the other.
///
/// # Errors
/// As [`Plan::prepare`] and [`simulate`].
pub fn compare(
    requests: &[TraceRequest],
    config: &ExperimentConfig,
    policies: &[PolicyKind],
    progress: &mut dyn FnMut(Stage, f64),
) -> Result<Comparison, SimError> {
    let plan = Plan::prepare(requests, config, progress)?;
    let mut runs = Vec::with_capacity(policies.len());
    for &kind in policies {
        runs.push(plan.run(requests, kind, &mut |f| progress(Stage::Run(kind), f))?);
    }
    Ok(Comparison { plan, runs })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_starts_a_cold_start_ahead_and_keeps_the_larger() {
        let plan = OraclePlan {
            interval_secs: 60.0,
            replicas: vec![2, 5, 3, 3, 1],
            infeasible_intervals: 0,
            repair_rounds: 0,
        };
        let s = plan.schedule(30.0);
        assert_eq!(s, vec![(0.0, 2), (30.0, 5), (120.0, 3), (240.0, 1)]);
        // A cold start longer than an interval reaches back further.
        let s = plan.schedule(90.0);
        assert_eq!(s[0], (0.0, 5));
    }

    #[test]
    fn search_finds_the_smallest_and_handles_plateaus() {
        let mut steps = |n: i32| Ok(if n >= 17 { 0.995 } else { 0.2 });
        let r = smallest_meeting(&mut steps, 1, 4, 1000, 0.99, 1.0).unwrap();
        assert_eq!((r.replicas, r.target_met), (17, true));
        // Attainment grows with the fleet until 12 replicas, then stays at 97 %.
        let mut plateau = |n: i32| Ok((0.5 + 0.04 * f64::from(n)).min(0.97));
        let r = smallest_meeting(&mut plateau, 1, 4, 1000, 0.99, 1.0).unwrap();
        assert_eq!((r.replicas, r.target_met), (12, false));
        // Far below the ceiling, a flat stretch is not a plateau.
        let mut slow = |n: i32| Ok(if n >= 40 { 0.995 } else { 0.01 });
        let r = smallest_meeting(&mut slow, 1, 4, 1000, 0.99, 1.0).unwrap();
        assert_eq!((r.replicas, r.target_met), (40, true));
    }

    fn calibration() -> Calibration {
        Calibration { sustainable_rps: 10.0, target_rps: 8.5, running_at_target: 8.0, in_flight_at_target: 9.0 }
    }

    fn down_window_secs(p: &ResolvedPolicy) -> u64 {
        p.behavior.as_ref().map(|b| b.scale_down.stabilization_window.as_secs()).unwrap_or_default()
    }

    #[test]
    fn smooth_traffic_gets_no_burst_rule_and_the_short_window() {
        // Growth up to 1 / utilization (here 1.18) is absorbed by the target's headroom.
        for growth in [1.0, 1.15, f64::INFINITY] {
            let b = Burstiness { window_secs: 15.0, hold_secs: 600.0, growth, held_rps: 50.0 };
            let yaml = recommended_policy_yaml(&calibration(), &b, 1, 40, 60.0);
            let (_, p) = parse_policy(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
            assert!(p.rules.iter().all(|r| r.key != "arrival_burst"), "growth {growth}: {yaml}");
            assert_eq!(down_window_secs(&p), 120, "growth {growth}");
        }
    }

    #[test]
    fn bursty_traffic_gets_headroom_and_the_measured_hold() {
        let b = Burstiness { window_secs: 15.0, hold_secs: 420.0, growth: 1.7, held_rps: 50.0 };
        let yaml = recommended_policy_yaml(&calibration(), &b, 1, 40, 60.0);
        let (_, p) = parse_policy(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let burst = p.rules.iter().find(|r| r.key == "arrival_burst").expect("a burst rule");
        // The target share of a replica, shrunk by the growth: 8.5 / 1.7.
        assert!((burst.threshold - 5.0).abs() < 1e-9, "{}", burst.threshold);
        assert_eq!(burst.query.as_deref(), Some("sum(rate(vllm:num_incoming_requests_total[15s]))"));
        assert_eq!(down_window_secs(&p), 420);
        let down = &p.behavior.as_ref().expect("behavior").scale_down.policies;
        assert_eq!(down.len(), 1);
        assert_eq!((down[0].value, down[0].period_seconds), (BURSTY_GIVE_BACK_PERCENT, 60));
        // The plain arrival-rate rule and the queue rule stay.
        assert!(p.rules.iter().any(|r| r.key == "arrival_rate" && (r.threshold - 8.5).abs() < 1e-9));
        assert!(p.rules.iter().any(|r| r.metric == crate::Metric::QueueLength));
    }

    #[test]
    fn policy_names_round_trip() {
        for k in PolicyKind::ALL {
            assert_eq!(k.name().parse::<PolicyKind>().unwrap(), k);
        }
        assert!("hpa".parse::<PolicyKind>().unwrap_err().to_string().contains("hpa-queue"));
    }
}
