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
    /// The HPA (the engine with Kubernetes' default `behavior`) on the same arrival-rate
    /// rule, at the same calibrated target, as the recommended policy (`hpa-rate`).
    HpaRate,
    /// The HPA on `vllm:num_requests_waiting` per pod, its target tuned by a grid search
    /// on the training window (`hpa-queue`).
    HpaQueue,
    /// The HPA on `vllm:num_requests_running` per pod, tuned the same way (`hpa-running`).
    HpaRunning,
    /// The HPA on `vllm:kv_cache_usage_perc` per pod, tuned the same way (`hpa-kv`).
    HpaKv,
    /// A Knative-KPA-like policy on concurrency, windows scaled to the cold start (`kpa`).
    Kpa,
    /// A fixed fleet at the oracle's largest interval (`fixed-peak`; it knows the future).
    FixedPeak,
    /// The smallest fixed fleet meeting the attainment target on the training window
    /// (`fixed-99`).
    Fixed99,
    /// The offline oracle: the cheapest per-interval plan of the lower-bound relaxation
    /// that meets the overall target, replayed (`oracle`).
    Oracle,
}

impl PolicyKind {
    /// Every policy, in report order.
    pub const ALL: [Self; 9] = [
        Self::VllmScaling,
        Self::HpaRate,
        Self::HpaQueue,
        Self::HpaRunning,
        Self::HpaKv,
        Self::Kpa,
        Self::FixedPeak,
        Self::Fixed99,
        Self::Oracle,
    ];

    /// The HPA baselines.
    pub const HPA: [Self; 4] = [Self::HpaRate, Self::HpaQueue, Self::HpaRunning, Self::HpaKv];

    /// The name in reports and on the command line.
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            Self::VllmScaling => "vllm-scaling",
            Self::HpaRate => "hpa-rate",
            Self::HpaQueue => "hpa-queue",
            Self::HpaRunning => "hpa-running",
            Self::HpaKv => "hpa-kv",
            Self::Kpa => "kpa",
            Self::FixedPeak => "fixed-peak",
            Self::Fixed99 => "fixed-99",
            Self::Oracle => "oracle",
        }
    }

    /// Whether the policy reacts to what it sees (the engine policies and the KPA).
    #[must_use]
    pub const fn is_adaptive(self) -> bool {
        !matches!(self, Self::FixedPeak | Self::Fixed99 | Self::Oracle)
    }

    /// Whether the policy is one of the HPA baselines.
    #[must_use]
    pub const fn is_hpa(self) -> bool {
        matches!(self, Self::HpaRate | Self::HpaQueue | Self::HpaRunning | Self::HpaKv)
    }
}

impl fmt::Display for PolicyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An unknown policy name.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error(
    "unknown policy `{0}`: expected one of vllm-scaling, hpa-rate, hpa-queue, hpa-running, hpa-kv, kpa, fixed-peak, fixed-99, oracle"
)]
pub struct UnknownPolicy(pub String);

impl FromStr for PolicyKind {
    type Err = UnknownPolicy;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| UnknownPolicy(s.to_owned()))
    }
}

/// What the recommender (calibration, burst analysis, the baselines' tuning and the
/// `fixed-99` size) learns from, and what is scored.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind")]
#[non_exhaustive]
pub enum Learning {
    /// Out of sample: the trace's first `fraction` (cut at a whole oracle interval)
    /// learns, the rest is scored.
    Split {
        /// The share of the trace's span that learns, in (0, 1).
        fraction: f64,
    },
    /// Out of sample: a separate training trace learns, the whole trace is scored.
    TrainFile,
    /// In sample: the scored trace itself learns (the policies are tuned on what they
    /// are scored on; every report labels it `IN-SAMPLE`).
    InSample,
}

impl Default for Learning {
    fn default() -> Self {
        Self::Split { fraction: 0.5 }
    }
}

/// How every policy enters the scored window.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Start {
    /// Every policy replays the training window first (adaptive ones from the
    /// training-window `fixed-99` size), so each enters the scored window with the fleet
    /// and the history its own decisions left; only the scored window is measured.
    #[default]
    Warm,
    /// Adaptive policies start the scored window with `minReplicas` ready and no
    /// history; fixed fleets at their size; the oracle at its first interval's fleet.
    Cold,
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
    /// Most replicas for the scaling policies (`maxReplicas`, the user's GPU quota).
    /// `None`: twice what the training window's busiest minute needs at the calibrated
    /// capacity (never derived from the scored window or the oracle).
    pub max_replicas: Option<i32>,
    /// The load, as a share of the calibrated sustainable rate, that the recommended
    /// policy and the KPA aim each replica at.
    pub target_utilization: f64,
    /// The engine's sync period, seconds (the HPA's 15 s).
    pub sync_period_secs: f64,
    /// Seed of the calibration load.
    pub seed: u64,
    /// What learns and what is scored (default: the first half learns).
    pub learning: Learning,
    /// How every policy enters the scored window (default: warmed on the training window).
    pub start: Start,
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
            learning: Learning::default(),
            start: Start::default(),
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
        if let Learning::Split { fraction } = self.learning
            && !(fraction > 0.0 && fraction < 1.0)
        {
            return cfg("split", format!("the learned share must be in (0, 1), got {fraction}"));
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

/// The oracle's plan on the scored window: one fleet size per interval, the cheapest
/// allocation of the lower-bound relaxation (see [`LowerBound`]) that meets the overall
/// target on the interval capacity curves.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OraclePlan {
    /// The interval, seconds.
    pub interval_secs: f64,
    /// Replicas per interval.
    pub replicas: Vec<i32>,
    /// Intervals whose capacity curve never reached the target share of their feasible
    /// requests within the largest fleet measured.
    pub infeasible_intervals: usize,
    /// How many times the plan was re-solved for a higher total because its replay
    /// (where backlogs carry over between intervals) fell short of the target.
    pub repair_rounds: usize,
    /// The share of the feasible requests the curves predict the plan serves.
    pub planned_attainment: f64,
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

/// One interval's capacity curve: how many of its feasible requests meet the objective
/// with `n` replicas serving it, measured with the replica model on a warm fleet of `n`
/// (the [`ORACLE_WARMUP_SECS`] before the interval replayed first, not counted).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IntervalCurve {
    /// The interval's length inside the scored window, seconds (the last one may be short).
    pub len_secs: f64,
    /// Feasible requests arriving in the interval.
    pub feasible: usize,
    /// `(replicas, requests within the objective)`, replicas increasing; the counts are
    /// made non-decreasing (each is the largest measured at or below its fleet size).
    pub points: Vec<(i32, usize)>,
}

impl IntervalCurve {
    /// `(fewest replicas, most replicas, requests within the objective)` choices for the
    /// relaxation: any fleet in the range is credited with the count. Measured points are
    /// exact ranges; for the bound the gaps are read optimistically (any fleet above a
    /// measured point serves what the next point does; below the first point, from
    /// `min_replicas` on, what it does; above the last, every feasible request).
    fn options(&self, min_replicas: i32, optimistic: bool) -> Vec<(i32, i32, usize)> {
        if self.feasible == 0 || self.points.is_empty() {
            return vec![(min_replicas, if optimistic { UNBOUNDED } else { min_replicas }, self.feasible)];
        }
        if !optimistic {
            return self.points.iter().map(|&(n, g)| (n, n, g)).collect();
        }
        let mut out = Vec::with_capacity(self.points.len() + 1);
        let mut below = min_replicas;
        for &(n, good) in &self.points {
            out.push((below.min(n), n, good));
            below = n + 1;
        }
        let last = self.points[self.points.len() - 1];
        if last.1 < self.feasible {
            out.push((last.0 + 1, UNBOUNDED, self.feasible));
        } else if let Some(top) = out.last_mut() {
            // Every feasible request is served from here on: any larger fleet too.
            top.1 = UNBOUNDED;
        }
        out
    }
}

/// A range's open upper end.
const UNBOUNDED: i32 = i32::MAX / 4;

/// The oracle's lower bound on GPU-hours for the attainment target.
///
/// **The relaxation.** The scored window is cut into intervals; a policy is credited, in
/// each interval, with what a fleet of `n` ready, warm replicas serving that interval
/// alone would serve ([`IntervalCurve`]), and charged `n` replicas for the interval plus
/// one cold start of GPU time for each replica added between intervals (the first
/// interval's fleet is free). Between measured fleet sizes the credit is rounded up to
/// the next measured point and above the last one every feasible request counts as
/// served, so the curves overstate what each size achieves; the fleet of each choice is
/// a range, charged at its low end, and the cold starts between two intervals at the
/// least increase the two ranges allow, so no fleet sequence is charged more than it
/// costs. The bound is the Lagrangian
/// dual of "fewest GPU-hours such that the requests served reach the target", maximized
/// over the multiplier: by weak duality every value of it is at most the cost of every
/// allocation of the relaxation that meets the target.
///
/// **Why it bounds a policy from below, and where it may not.** A real policy pays at
/// least its ready replicas' time, and pays a cold start for every replica it adds; it
/// also carries backlogs between intervals and changes its fleet inside an interval,
/// which the relaxation ignores. It is a lower bound for every policy whose per-interval
/// service is at most what a constant warm fleet of its mean size would give. That holds
/// when more replicas never serve fewer requests and a backlog never helps; it is not a
/// theorem for every conceivable policy (a policy that moves its fleet within an
/// interval could in principle beat it), so the tests check it against every policy of
/// the comparison on generated traces.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct LowerBound {
    /// The attainment (share of feasible requests within the objective) it is for.
    pub attainment: f64,
    /// The bound, GPU-hours; `None` when even the relaxation cannot reach the target.
    pub gpu_hours: Option<f64>,
}

/// Solves `min Σ cost(n_m) + cold · Σ (n_m − n_{m−1})⁺ − λ · Σ good_m(n_m)` over the
/// interval choices `(lo, hi, good)` (a fleet anywhere in `lo..=hi`, charged `lo`, the
/// cold starts at the least increase `lo_m − hi_{m−1}`); returns `(gpu_hours, good,
/// choice per interval)`.
fn oracle_dp(options: &[Vec<(i32, i32, usize)>], lens: &[f64], cold_secs: f64, lambda: f64) -> (f64, f64, Vec<usize>) {
    let m = options.len();
    let mut back: Vec<Vec<usize>> = Vec::with_capacity(m);
    let mut best: Vec<f64> = Vec::new();
    for (k, opts) in options.iter().enumerate() {
        let here = |&(n, _, good): &(i32, i32, usize)| f64::from(n) * lens[k] / 3600.0 - lambda * good as f64;
        if k == 0 {
            best = opts.iter().map(here).collect();
            back.push(vec![0; opts.len()]);
            continue;
        }
        let prev = &options[k - 1];
        let mut next = Vec::with_capacity(opts.len());
        let mut from = Vec::with_capacity(opts.len());
        for opt in opts {
            let (mut v, mut arg) = (f64::INFINITY, 0);
            for (j, p) in prev.iter().enumerate() {
                let up = f64::from((opt.0 - p.1).max(0)) * cold_secs / 3600.0;
                let c = best[j] + up;
                if c < v {
                    (v, arg) = (c, j);
                }
            }
            next.push(v + here(opt));
            from.push(arg);
        }
        best = next;
        back.push(from);
    }
    let mut choice = vec![0usize; m];
    if m == 0 {
        return (0.0, 0.0, choice);
    }
    let mut arg = (0..best.len()).min_by(|&a, &b| best[a].total_cmp(&best[b])).unwrap_or(0);
    for k in (0..m).rev() {
        choice[k] = arg;
        arg = back[k][arg];
    }
    let (mut hours, mut good) = (0.0, 0.0);
    for k in 0..m {
        let (n, _, g) = options[k][choice[k]];
        hours += f64::from(n) * lens[k] / 3600.0;
        if k > 0 {
            hours += f64::from((n - options[k - 1][choice[k - 1]].1).max(0)) * cold_secs / 3600.0;
        }
        good += g as f64;
    }
    (hours, good, choice)
}

/// Searches the multiplier: the best dual value (a lower bound on the cost of reaching
/// `need` served requests) and the cheapest allocation found that reaches it (`None`
/// when no choice of the options does).
fn oracle_solve(
    options: &[Vec<(i32, i32, usize)>],
    lens: &[f64],
    cold_secs: f64,
    need: f64,
) -> (Option<f64>, Option<Vec<usize>>) {
    let dual = |lambda: f64| {
        let (hours, good, choice) = oracle_dp(options, lens, cold_secs, lambda);
        (hours - lambda * good + lambda * need, good, hours, choice)
    };
    let mut best_bound = f64::NEG_INFINITY;
    let mut best_plan: Option<(f64, Vec<usize>)> = None;
    let mut consider = |lambda: f64, best_bound: &mut f64| -> bool {
        let (value, good, hours, choice) = dual(lambda);
        *best_bound = best_bound.max(value);
        let meets = good >= need - 1e-9;
        if meets && best_plan.as_ref().is_none_or(|(h, _)| hours < *h) {
            best_plan = Some((hours, choice));
        }
        meets
    };
    if consider(0.0, &mut best_bound) {
        return (Some(best_bound.max(0.0)), best_plan.map(|p| p.1));
    }
    let (mut lo, mut hi) = (0.0, 1e-6);
    while !consider(hi, &mut best_bound) {
        lo = hi;
        hi *= 4.0;
        if hi > 1e6 {
            // Even the most generous choice in every interval does not reach the target.
            return (None, None);
        }
    }
    for _ in 0..50 {
        let mid = 0.5 * (lo + hi);
        if consider(mid, &mut best_bound) {
            hi = mid;
        } else {
            lo = mid;
        }
    }
    (Some(best_bound.max(0.0)), best_plan.map(|p| p.1))
}

/// Measures one interval's capacity curve: from well below the fleet its arrivals need
/// at the calibrated capacity, one replica at a time up to 8 and then in 8 % steps, until
/// 99.95 % of its feasible requests are served, nothing more is gained for three steps
/// at 90 %, or `cap`.
fn interval_curve(
    window: &[TraceRequest],
    skip: usize,
    fleet: &FleetConfig,
    min_replicas: i32,
    estimate: i32,
    cap: i32,
    len_secs: f64,
) -> Result<IntervalCurve, SimError> {
    let slo = fleet.slo_ttft_secs;
    let feasible = window[skip..].iter().filter(|r| fleet.model.idle_ttft_secs(r.input_tokens) <= slo).count();
    if feasible == 0 {
        return Ok(IntervalCurve { len_secs, feasible, points: Vec::new() });
    }
    let good = |n: i32| -> Result<usize, SimError> {
        let a = fixed_attainment(window, skip, fleet, n)?;
        Ok((a * feasible as f64).round() as usize)
    };
    let floor = min_replicas.max(1);
    let mut points: BTreeMap<i32, usize> = BTreeMap::new();
    let mut lo = ((0.6 * f64::from(estimate)).floor() as i32).clamp(floor, cap.max(floor));
    loop {
        let g = good(lo)?;
        points.insert(lo, g);
        if lo <= floor || 2 * g <= feasible {
            break;
        }
        lo = (lo / 2).max(floor);
    }
    let mut n = lo;
    let (mut stall, mut prev) = (0, 0usize);
    loop {
        let g = match points.get(&n) {
            Some(&g) => g,
            None => {
                let g = good(n)?;
                points.insert(n, g);
                g
            }
        };
        if g >= feasible || n >= cap || g as f64 >= 0.9995 * feasible as f64 {
            break;
        }
        if g <= prev && g as f64 >= 0.9 * feasible as f64 {
            stall += 1;
            if stall >= 3 {
                break;
            }
        } else {
            stall = 0;
        }
        prev = prev.max(g);
        n = if n < 8 { n + 1 } else { n + (f64::from(n) * 0.08).ceil() as i32 }.min(cap);
    }
    let mut running = 0usize;
    let points = points
        .into_iter()
        .map(|(n, g)| {
            running = running.max(g);
            (n, running)
        })
        .collect();
    Ok(IntervalCurve { len_secs, feasible, points })
}

/// The lower bound of the relaxation for a share `attainment` of the feasible requests.
#[must_use]
pub fn lower_bound_gpu_hours(
    curves: &[IntervalCurve],
    min_replicas: i32,
    cold_start_secs: f64,
    attainment: f64,
) -> Option<f64> {
    let options: Vec<Vec<(i32, i32, usize)>> = curves.iter().map(|c| c.options(min_replicas, true)).collect();
    let lens: Vec<f64> = curves.iter().map(|c| c.len_secs).collect();
    let feasible: usize = curves.iter().map(|c| c.feasible).sum();
    let need = (attainment * feasible as f64 - 1e-6).ceil().max(0.0);
    oracle_solve(&options, &lens, cold_start_secs, need).0
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
pub const ORACLE_WARMUP_SECS: f64 = 30.0;

/// The learned and the scored requests of a comparison.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Windows {
    /// What the recommender and the baselines' tuning learn from (arrival times from 0).
    pub train: Vec<TraceRequest>,
    /// What is scored (arrival times from 0).
    pub scored: Vec<TraceRequest>,
    /// Where the scored window starts when the training window is replayed before it
    /// (the warm start), seconds.
    pub history_secs: f64,
    /// Where the scored window began in the original trace, seconds.
    pub scored_from_secs: f64,
    /// How the two were obtained.
    pub learning: Learning,
}

impl Windows {
    /// Splits `requests` (sorted) as `learning` says ([`Learning::Split`] cuts at a whole
    /// `interval_secs`; [`Learning::InSample`] scores what it learns from).
    ///
    /// # Errors
    /// [`SimError::NoRequests`] for no requests; [`SimError::Config`] (`split`) when a
    /// window would be empty or `learning` is [`Learning::TrainFile`] (use
    /// [`Windows::with_training`]).
    pub fn new(requests: &[TraceRequest], learning: Learning, interval_secs: f64) -> Result<Self, SimError> {
        let Some(last) = requests.last() else { return Err(SimError::NoRequests) };
        match learning {
            Learning::InSample => Ok(Self {
                train: requests.to_vec(),
                scored: requests.to_vec(),
                history_secs: warm_up_shift(requests, interval_secs),
                scored_from_secs: 0.0,
                learning,
            }),
            Learning::Split { fraction } => {
                let cut = (fraction * last.arrival_secs / interval_secs).round() * interval_secs;
                let at = requests.partition_point(|r| r.arrival_secs < cut);
                if !(fraction > 0.0 && fraction < 1.0) || at == 0 || at == requests.len() {
                    return Err(SimError::Config {
                        field: "split",
                        reason: format!(
                            "{fraction} of a {:.0} s trace cut at {cut:.0} s (a whole {interval_secs:.0} s interval) leaves {} requests to learn from and {} to score; both need some",
                            last.arrival_secs,
                            at,
                            requests.len() - at
                        ),
                    });
                }
                let scored =
                    requests[at..].iter().map(|r| TraceRequest { arrival_secs: r.arrival_secs - cut, ..*r }).collect();
                Ok(Self { train: requests[..at].to_vec(), scored, history_secs: cut, scored_from_secs: cut, learning })
            }
            Learning::TrainFile => Err(SimError::Config {
                field: "split",
                reason: "a separate training trace needs Windows::with_training".to_owned(),
            }),
        }
    }

    /// A separate training trace learns; all of `scored` is scored.
    ///
    /// # Errors
    /// [`SimError::NoRequests`] when either is empty.
    pub fn with_training(
        train: &[TraceRequest],
        scored: &[TraceRequest],
        interval_secs: f64,
    ) -> Result<Self, SimError> {
        if train.is_empty() || scored.is_empty() {
            return Err(SimError::NoRequests);
        }
        Ok(Self {
            train: train.to_vec(),
            scored: scored.to_vec(),
            history_secs: warm_up_shift(train, interval_secs),
            scored_from_secs: 0.0,
            learning: Learning::TrainFile,
        })
    }

    /// The training window, then the scored one from [`Windows::history_secs`]: what a
    /// warm start replays.
    #[must_use]
    pub fn replay(&self) -> Vec<TraceRequest> {
        self.train
            .iter()
            .copied()
            .chain(self.scored.iter().map(|r| TraceRequest { arrival_secs: r.arrival_secs + self.history_secs, ..*r }))
            .collect()
    }

    /// What a report says about the windows.
    #[must_use]
    pub fn info(&self) -> WindowInfo {
        let span = |r: &[TraceRequest]| r.last().map_or(0.0, |l| l.arrival_secs);
        let (train_secs, scored_secs) = (span(&self.train), span(&self.scored));
        let from = self.scored_from_secs;
        let label = match self.learning {
            Learning::InSample => format!(
                "IN-SAMPLE: learned on the scored trace itself (0-{:.0} s); the results overstate what a policy learned beforehand does",
                scored_secs
            ),
            Learning::Split { fraction } => format!(
                "out of sample: learned on 0-{from:.0} s of the trace (the first {:.0} %), scored on {from:.0}-{:.0} s",
                100.0 * fraction,
                from + scored_secs
            ),
            Learning::TrainFile => format!(
                "out of sample: learned on a separate training trace ({} requests over {train_secs:.0} s), scored on the whole trace (0-{scored_secs:.0} s)",
                self.train.len()
            ),
        };
        WindowInfo {
            learning: self.learning,
            in_sample: self.learning == Learning::InSample,
            train_requests: self.train.len(),
            train_span_secs: train_secs,
            scored_requests: self.scored.len(),
            scored_from_secs: from,
            scored_span_secs: scored_secs,
            label,
        }
    }
}

/// Which window was learned and which scored, as every report states it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct WindowInfo {
    /// How the windows were obtained.
    pub learning: Learning,
    /// Whether the scored window is the learned one.
    pub in_sample: bool,
    /// Requests in the training window.
    pub train_requests: usize,
    /// Its span, seconds.
    pub train_span_secs: f64,
    /// Requests scored.
    pub scored_requests: usize,
    /// Where the scored window begins in the trace, seconds.
    pub scored_from_secs: f64,
    /// Its span, seconds.
    pub scored_span_secs: f64,
    /// One line for tables and plots.
    pub label: String,
}

/// Runs independent jobs of a plan; the driver may run them on threads, the core runs
/// them one after the other ([`Sequential`]). Results come back in job order, so a plan
/// is the same however it is run.
pub trait Parallel: Sync {
    /// `[job(0), job(1), .., job(n - 1)]`.
    fn map(
        &self,
        n: usize,
        job: &(dyn Fn(usize) -> Result<Vec<f64>, SimError> + Sync),
    ) -> Vec<Result<Vec<f64>, SimError>>;
}

/// Runs jobs one after the other.
#[derive(Clone, Copy, Debug, Default)]
pub struct Sequential;

impl Parallel for Sequential {
    fn map(
        &self,
        n: usize,
        job: &(dyn Fn(usize) -> Result<Vec<f64>, SimError> + Sync),
    ) -> Vec<Result<Vec<f64>, SimError>> {
        (0..n).map(job).collect()
    }
}

/// One HPA or KPA baseline's tuning on the training window.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Tuning {
    /// The baseline.
    pub policy: PolicyKind,
    /// The target chosen: the cheapest candidate meeting the attainment target on the
    /// training window, or the best attainment when none does.
    pub threshold: f64,
    /// Whether the chosen target met the attainment target on the training window.
    pub target_met: bool,
    /// Every candidate: `(target, attainment over feasible requests, GPU-hours)` on the
    /// training window.
    pub candidates: Vec<(f64, f64, f64)>,
}

/// Everything a comparison needs before the policies run: the windows, the calibration,
/// the baselines' tuning and `fixed-99` (learned on the training window), the oracle's
/// plan and lower bound (on the scored window).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// The settings.
    pub config: ExperimentConfig,
    /// Which window was learned and which scored.
    pub windows: WindowInfo,
    /// One replica's capacity on the training window's mix.
    pub calibration: Calibration,
    /// The oracle's per-interval fleet on the scored window.
    pub oracle: OraclePlan,
    /// The oracle's lower bound on GPU-hours at the attainment target.
    pub lower_bound: LowerBound,
    /// The scored window's interval capacity curves (what the oracle and the bound use).
    pub curves: Vec<IntervalCurve>,
    /// The `fixed-peak` size: the oracle's largest interval fleet.
    pub fixed_peak: i32,
    /// The `fixed-99` search on the training window.
    pub fixed_99: FixedSearch,
    /// `maxReplicas` of the scaling policies.
    pub max_replicas: i32,
    /// How bursty the training window's arrivals are.
    pub burstiness: Burstiness,
    /// The recommended policy, as YAML.
    pub recommended_policy: String,
    /// The tuned baselines.
    pub tuning: Vec<Tuning>,
    /// The KPA's settings (windows from the cold start, target tuned).
    pub kpa: KpaConfig,
    #[serde(skip)]
    data: Windows,
}

/// What the plan stage is doing, for progress reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Stage {
    /// Measuring one replica.
    Calibrate,
    /// Measuring the scored window's capacity curves and solving the oracle.
    Oracle,
    /// Searching the `fixed-99` fleet.
    Fixed99,
    /// Tuning the baselines on the training window.
    Tune,
    /// Running a policy.
    Run(PolicyKind),
}

/// The fleet of the training window's busiest minute at the calibrated capacity.
fn busiest_minute_need(requests: &[TraceRequest], sustainable_rps: f64) -> i32 {
    let mut counts: BTreeMap<i64, usize> = BTreeMap::new();
    for r in requests {
        *counts.entry((r.arrival_secs / 60.0).floor() as i64).or_default() += 1;
    }
    let peak = counts.values().copied().max().unwrap_or(0) as f64 / 60.0;
    (peak / sustainable_rps.max(1e-9)).ceil().max(1.0) as i32
}

fn job_error(results: Vec<Result<Vec<f64>, SimError>>) -> Result<Vec<Vec<f64>>, SimError> {
    results.into_iter().collect()
}

impl Plan {
    /// Splits `requests` as [`ExperimentConfig::learning`] says and prepares the plan
    /// (jobs run one after the other).
    ///
    /// # Errors
    /// An invalid configuration, empty arrivals or an empty window.
    pub fn prepare(
        requests: &[TraceRequest],
        config: &ExperimentConfig,
        progress: &mut dyn FnMut(Stage, f64),
    ) -> Result<Self, SimError> {
        config.validate()?;
        let windows = Windows::new(requests, config.learning, config.oracle_interval_secs)?;
        Self::prepare_windows(windows, config, &Sequential, progress)
    }

    /// Calibrates, analyses the bursts, sizes `fixed-99` and tunes the baselines on the
    /// training window; measures the scored window's capacity curves for the oracle and
    /// its lower bound.
    ///
    /// # Errors
    /// An invalid configuration or an empty window.
    pub fn prepare_windows(
        windows: Windows,
        config: &ExperimentConfig,
        parallel: &dyn Parallel,
        progress: &mut dyn FnMut(Stage, f64),
    ) -> Result<Self, SimError> {
        config.validate()?;
        if windows.train.is_empty() || windows.scored.is_empty() {
            return Err(SimError::NoRequests);
        }
        let fleet = &config.fleet;
        let train = &windows.train;
        progress(Stage::Calibrate, 0.0);
        let calibration = calibrate(
            train,
            &fleet.model,
            fleet.slo_ttft_secs,
            config.attainment_target,
            config.target_utilization,
            config.seed,
        )?;
        progress(Stage::Calibrate, 1.0);

        progress(Stage::Fixed99, 0.0);
        let guess = busiest_minute_need(train, calibration.sustainable_rps);
        let fixed_99 = smallest_meeting(
            &mut |n| fixed_attainment(train, 0, fleet, n),
            1,
            guess,
            (4 * guess).clamp(8, fleet.max_fleet as i32),
            config.attainment_target,
            1.0,
        )?;
        progress(Stage::Fixed99, 1.0);
        let max_replicas = config.max_replicas.unwrap_or(2 * fixed_99.replicas).max(config.min_replicas);

        // The planner's view of the training window's bursts, read as one period of
        // traffic that repeats; half the miss budget left to bursts that outgrow the
        // kept fleet.
        let period = warm_up_shift(train, config.oracle_interval_secs);
        let burstiness =
            burst::analyze(train, period, config.sync_period_secs, 0.5 * (1.0 - config.attainment_target))?;
        let recommended_policy = recommended_policy_yaml_for(
            &calibration,
            &burstiness,
            config.min_replicas,
            max_replicas,
            fleet.cold_start_secs,
            fleet.scrape_interval_secs,
        );

        progress(Stage::Oracle, 0.0);
        let (curves, oracle, lower_bound) = oracle_plan(&windows.scored, config, &calibration, parallel)?;
        progress(Stage::Oracle, 1.0);
        let fixed_peak = oracle.peak();

        let mut plan = Self {
            config: *config,
            windows: windows.info(),
            calibration,
            oracle,
            lower_bound,
            curves,
            fixed_peak,
            fixed_99,
            max_replicas,
            burstiness,
            recommended_policy,
            tuning: Vec::new(),
            kpa: kpa_for(config, &calibration, max_replicas, fleet.cold_start_secs, 1.0),
            data: windows,
        };
        progress(Stage::Tune, 0.0);
        plan.tune(parallel)?;
        progress(Stage::Tune, 1.0);
        Ok(plan)
    }

    /// The candidates of one baseline's grid.
    fn candidates(&self, kind: PolicyKind) -> Vec<f64> {
        let c = &self.calibration;
        let scaled = |base: f64, factors: &[f64]| -> Vec<f64> {
            let mut v: Vec<f64> = factors.iter().map(|f| round_to(base * f, 0.1).max(0.1)).collect();
            v.dedup();
            v
        };
        match kind {
            PolicyKind::HpaQueue => vec![1.0, 2.0, 3.0, 5.0, 10.0, 20.0],
            PolicyKind::HpaRunning => scaled(c.running_at_target.max(1.0), &[0.5, 0.75, 1.0, 1.25, 1.5]),
            PolicyKind::HpaKv => vec![20.0, 35.0, 50.0, 65.0, 80.0],
            PolicyKind::Kpa => vec![0.6, 0.8, 1.0, 1.2],
            _ => Vec::new(),
        }
    }

    /// Grid-searches the HPA and KPA targets on the training window.
    fn tune(&mut self, parallel: &dyn Parallel) -> Result<(), SimError> {
        let kinds = [PolicyKind::HpaQueue, PolicyKind::HpaRunning, PolicyKind::HpaKv, PolicyKind::Kpa];
        let jobs: Vec<(PolicyKind, f64)> =
            kinds.iter().flat_map(|&k| self.candidates(k).into_iter().map(move |t| (k, t))).collect();
        let train_fleet = FleetConfig {
            initial_replicas: self.fixed_99.replicas.clamp(self.config.min_replicas, self.max_replicas).max(0) as u32,
            ..self.config.fleet
        };
        let this = &*self;
        let results = job_error(parallel.map(jobs.len(), &|i| {
            let (kind, threshold) = jobs[i];
            let mut autoscaler = this.baseline(kind, threshold, this.config.fleet.cold_start_secs)?;
            let run = simulate(&this.data.train, &train_fleet, autoscaler.as_mut(), &mut |_| {})?;
            Ok(vec![run.report.slo_attainment_feasible, run.report.gpu_hours])
        }))?;
        let target = self.config.attainment_target;
        let mut tuning = Vec::new();
        for kind in kinds {
            let candidates: Vec<(f64, f64, f64)> = jobs
                .iter()
                .zip(&results)
                .filter(|((k, _), _)| *k == kind)
                .map(|((_, t), r)| (*t, r[0], r[1]))
                .collect();
            let meeting = candidates.iter().filter(|c| c.1 >= target).min_by(|a, b| a.2.total_cmp(&b.2));
            let best =
                meeting.or_else(|| candidates.iter().max_by(|a, b| a.1.total_cmp(&b.1).then(b.2.total_cmp(&a.2))));
            let Some(&(threshold, _, _)) = best else { continue };
            tuning.push(Tuning { policy: kind, threshold, target_met: meeting.is_some(), candidates });
        }
        if let Some(k) = tuning.iter().find(|t| t.policy == PolicyKind::Kpa) {
            self.kpa = kpa_for(
                &self.config,
                &self.calibration,
                self.max_replicas,
                self.config.fleet.cold_start_secs,
                k.threshold,
            );
        }
        self.tuning = tuning;
        Ok(())
    }

    /// The tuned target of a baseline (its grid's middle candidate before tuning).
    #[must_use]
    pub fn tuned(&self, kind: PolicyKind) -> Option<f64> {
        self.tuning.iter().find(|t| t.policy == kind).map(|t| t.threshold)
    }

    /// A baseline at a given target: an HPA's threshold, or the KPA's share of the
    /// calibrated concurrency.
    fn baseline(
        &self,
        kind: PolicyKind,
        threshold: f64,
        cold_start_secs: f64,
    ) -> Result<Box<dyn Autoscaler + Send>, SimError> {
        let c = &self.config;
        let sync = EngineConfig::default().with_sync_period(Duration::from_secs_f64(c.sync_period_secs));
        let engine = |yaml: String| -> Result<Box<dyn Autoscaler + Send>, SimError> {
            Ok(Box::new(EngineAutoscaler::new(kind.name(), parse(kind, &yaml)?, sync)))
        };
        match kind {
            PolicyKind::HpaRate => {
                engine(hpa_rate_policy_yaml(c.min_replicas, self.max_replicas, threshold, c.fleet.scrape_interval_secs))
            }
            PolicyKind::HpaQueue | PolicyKind::HpaRunning | PolicyKind::HpaKv => {
                let metric = match kind {
                    PolicyKind::HpaQueue => "queue_length",
                    PolicyKind::HpaRunning => "running_requests",
                    _ => "kv_cache_usage",
                };
                engine(hpa_policy_yaml(kind.name(), metric, threshold, c.min_replicas, self.max_replicas))
            }
            PolicyKind::Kpa => Ok(Box::new(KpaAutoscaler::new(
                kind.name(),
                kpa_for(c, &self.calibration, self.max_replicas, cold_start_secs, threshold),
            ))),
            _ => Err(SimError::Policy { name: kind.name().to_owned(), reason: "not a tunable baseline".to_owned() }),
        }
    }

    /// The windows the plan learned from and scores.
    #[must_use]
    pub fn data(&self) -> &Windows {
        &self.data
    }

    /// The fleet model a policy starts the run on (see [`Start`]).
    #[must_use]
    pub fn fleet_for(&self, kind: PolicyKind) -> FleetConfig {
        self.fleet_in(kind, &self.config.fleet)
    }

    fn fleet_in(&self, kind: PolicyKind, fleet: &FleetConfig) -> FleetConfig {
        let initial = match kind {
            PolicyKind::FixedPeak => self.fixed_peak,
            PolicyKind::Fixed99 => self.fixed_99.replicas,
            PolicyKind::Oracle => self.oracle.schedule(fleet.cold_start_secs).first().map_or(1, |s| s.1),
            _ if self.config.start == Start::Cold => self.config.min_replicas,
            _ => self.fixed_99.replicas.clamp(self.config.min_replicas, self.max_replicas),
        };
        FleetConfig { initial_replicas: initial.max(0) as u32, ..*fleet }
    }

    /// Builds a policy of the comparison for a cold start of `cold_start_secs` (the
    /// recommended policy's forecast horizon and the KPA's windows follow it; tuned
    /// targets stay).
    ///
    /// # Errors
    /// [`SimError::Policy`] if a built-in policy does not validate (a bug).
    pub fn autoscaler_for(
        &self,
        kind: PolicyKind,
        cold_start_secs: f64,
    ) -> Result<Box<dyn Autoscaler + Send>, SimError> {
        let c = &self.config;
        let sync = EngineConfig::default().with_sync_period(Duration::from_secs_f64(c.sync_period_secs));
        Ok(match kind {
            PolicyKind::VllmScaling => {
                let yaml = if (cold_start_secs - c.fleet.cold_start_secs).abs() < 1e-9 {
                    self.recommended_policy.clone()
                } else {
                    recommended_policy_yaml_for(
                        &self.calibration,
                        &self.burstiness,
                        c.min_replicas,
                        self.max_replicas,
                        cold_start_secs,
                        c.fleet.scrape_interval_secs,
                    )
                };
                Box::new(EngineAutoscaler::new(kind.name(), parse(kind, &yaml)?, sync))
            }
            PolicyKind::HpaRate => self.baseline(kind, self.calibration.target_rps, cold_start_secs)?,
            PolicyKind::HpaQueue | PolicyKind::HpaRunning | PolicyKind::HpaKv | PolicyKind::Kpa => {
                let threshold = self
                    .tuned(kind)
                    .or_else(|| {
                        let c = self.candidates(kind);
                        c.get(c.len() / 2).copied()
                    })
                    .unwrap_or(1.0);
                self.baseline(kind, threshold, cold_start_secs)?
            }
            PolicyKind::FixedPeak => Box::new(FixedAutoscaler::new(kind.name(), self.fixed_peak)),
            PolicyKind::Fixed99 => Box::new(FixedAutoscaler::new(kind.name(), self.fixed_99.replicas)),
            PolicyKind::Oracle => Box::new(ScheduleAutoscaler::new(kind.name(), self.oracle.schedule(cold_start_secs))),
        })
    }

    /// Builds a policy of the comparison.
    ///
    /// # Errors
    /// [`SimError::Policy`] if a built-in policy does not validate (a bug).
    pub fn autoscaler(&self, kind: PolicyKind) -> Result<Box<dyn Autoscaler + Send>, SimError> {
        self.autoscaler_for(kind, self.config.fleet.cold_start_secs)
    }

    /// Runs one policy of the comparison on the scored window (after the training window
    /// with [`Start::Warm`]).
    ///
    /// # Errors
    /// As [`simulate`].
    pub fn run(&self, kind: PolicyKind, progress: &mut dyn FnMut(f64)) -> Result<RunResult, SimError> {
        let mut autoscaler = self.autoscaler(kind)?;
        self.run_in(kind, autoscaler.as_mut(), &self.config.fleet, &self.data, progress)
    }

    /// Runs any policy (for example a user's `vLLMScalingPolicy` in an
    /// [`EngineAutoscaler`]) the way the comparison runs its adaptive policies.
    ///
    /// # Errors
    /// As [`simulate`].
    pub fn run_autoscaler(
        &self,
        autoscaler: &mut dyn Autoscaler,
        progress: &mut dyn FnMut(f64),
    ) -> Result<RunResult, SimError> {
        self.run_in(PolicyKind::VllmScaling, autoscaler, &self.config.fleet, &self.data, progress)
    }

    /// Runs a user's `vLLMScalingPolicy` through the same engine and the same path as
    /// the built-in adaptive policies: started like them (with [`Start::Warm`] the
    /// `fixed-99` fleet clamped to the policy's own bounds, with [`Start::Cold`] its
    /// `minReplicas`), scraped at the fleet's interval, scored on the same window.
    ///
    /// # Errors
    /// As [`simulate`].
    pub fn run_policy(
        &self,
        name: &str,
        policy: ResolvedPolicy,
        progress: &mut dyn FnMut(f64),
    ) -> Result<RunResult, SimError> {
        let sync = EngineConfig::default().with_sync_period(Duration::from_secs_f64(self.config.sync_period_secs));
        let (lo, hi) = (policy.min_replicas.max(1), policy.max_replicas.max(1));
        let initial = match self.config.start {
            Start::Cold => lo.min(hi),
            Start::Warm => self.fixed_99.replicas.clamp(lo.min(hi), hi),
        };
        let mut autoscaler = EngineAutoscaler::new(name, policy, sync);
        let fleet = FleetConfig { initial_replicas: initial.max(0) as u32, ..self.config.fleet };
        self.run_with_fleet(&mut autoscaler, &fleet, &self.data, progress)
    }

    /// Runs one policy of the comparison in another world: another fleet model (profile
    /// constants, lag, router, cold start) and optionally other windows (another seed),
    /// with what the plan learned.
    ///
    /// # Errors
    /// As [`simulate`].
    pub fn run_variant(
        &self,
        kind: PolicyKind,
        fleet: &FleetConfig,
        windows: Option<&Windows>,
        progress: &mut dyn FnMut(f64),
    ) -> Result<RunResult, SimError> {
        let mut autoscaler = self.autoscaler_for(kind, fleet.cold_start_secs)?;
        self.run_in(kind, autoscaler.as_mut(), fleet, windows.unwrap_or(&self.data), progress)
    }

    fn run_in(
        &self,
        kind: PolicyKind,
        autoscaler: &mut dyn Autoscaler,
        fleet: &FleetConfig,
        data: &Windows,
        progress: &mut dyn FnMut(f64),
    ) -> Result<RunResult, SimError> {
        let fleet = self.fleet_in(kind, fleet);
        // The oracle is planned on the scored window alone and starts it warm at its
        // first interval's fleet.
        if kind == PolicyKind::Oracle {
            return simulate(&data.scored, &fleet, autoscaler, progress);
        }
        self.run_with_fleet(autoscaler, &fleet, data, progress)
    }

    /// The one path every policy but the oracle runs through: the training window, then
    /// the scored one, measured ([`Start::Warm`]), or the scored window alone
    /// ([`Start::Cold`]), from the fleet's `initial_replicas`.
    fn run_with_fleet(
        &self,
        autoscaler: &mut dyn Autoscaler,
        fleet: &FleetConfig,
        data: &Windows,
        progress: &mut dyn FnMut(f64),
    ) -> Result<RunResult, SimError> {
        let fleet = *fleet;
        if self.config.start == Start::Cold {
            return simulate(&data.scored, &fleet, autoscaler, progress);
        }
        let replay = data.replay();
        let mut run =
            simulate(&replay, &FleetConfig { warmup_secs: data.history_secs, ..fleet }, autoscaler, progress)?;
        run.ttft_secs.drain(..data.train.len());
        Ok(run)
    }

    /// The lower bound at another attainment (share of the feasible requests).
    #[must_use]
    pub fn lower_bound_at(&self, attainment: f64) -> Option<f64> {
        lower_bound_gpu_hours(&self.curves, self.config.min_replicas, self.config.fleet.cold_start_secs, attainment)
    }
}

/// The KPA tuned for the cold start: the stable window at least twice the cold start
/// (Knative's 60 s assumes pods ready in seconds), the panic window a tenth of it (the
/// default ratio), the per-pod concurrency target `share` × the calibrated concurrency
/// at the target load.
fn kpa_for(
    config: &ExperimentConfig,
    calibration: &Calibration,
    max_replicas: i32,
    cold_start_secs: f64,
    share: f64,
) -> KpaConfig {
    let stable = (2.0 * cold_start_secs).max(60.0);
    KpaConfig {
        target_concurrency: (share * calibration.in_flight_at_target).max(1.0),
        stable_window_secs: stable,
        panic_window_secs: (0.1 * stable).max(config.sync_period_secs.min(6.0)),
        min_replicas: config.min_replicas,
        max_replicas,
        ..KpaConfig::default()
    }
}

/// Measures the scored window's capacity curves, then solves the oracle's plan and its
/// lower bound on them.
fn oracle_plan(
    scored: &[TraceRequest],
    config: &ExperimentConfig,
    calibration: &Calibration,
    parallel: &dyn Parallel,
) -> Result<(Vec<IntervalCurve>, OraclePlan, LowerBound), SimError> {
    let fleet = &config.fleet;
    let trace = Trace::from_requests(scored.to_vec()).map_err(|_| SimError::NoRequests)?;
    let len = config.oracle_interval_secs;
    let horizon = trace.duration_secs();
    let intervals = (horizon / len).floor() as usize + 1;
    let warmup = ORACLE_WARMUP_SECS.min(len);
    let min = config.min_replicas;
    let results = job_error(parallel.map(intervals, &|m| {
        let start = m as f64 * len;
        let len_secs = (horizon - start).clamp(0.0, len);
        let counted = trace.window(start, start + len);
        let window = trace.window((start - warmup).max(0.0), start + len);
        let skip = window.len() - counted.len();
        let curve = if counted.is_empty() {
            IntervalCurve { len_secs, feasible: 0, points: Vec::new() }
        } else {
            let cap = (window.len() as i32).clamp(min, fleet.max_fleet as i32);
            let estimate = (counted.len() as f64 / len / calibration.sustainable_rps).ceil() as i32;
            interval_curve(&window, skip, fleet, min, estimate.max(1), cap, len_secs)?
        };
        let mut out = vec![curve.len_secs, curve.feasible as f64];
        for (n, g) in curve.points {
            out.extend([f64::from(n), g as f64]);
        }
        Ok(out)
    }))?;
    let curves: Vec<IntervalCurve> = results
        .into_iter()
        .map(|v| IntervalCurve {
            len_secs: v[0],
            feasible: v[1] as usize,
            points: v[2..].chunks(2).map(|p| (p[0] as i32, p[1] as usize)).collect(),
        })
        .collect();
    let target = config.attainment_target;
    let lower_bound = LowerBound {
        attainment: target,
        gpu_hours: lower_bound_gpu_hours(&curves, min, fleet.cold_start_secs, target),
    };
    // The plan: the cheapest allocation over the measured points meeting the target;
    // while its replay falls short (backlogs cross intervals), ask the curves for more.
    let options: Vec<Vec<(i32, i32, usize)>> = curves.iter().map(|c| c.options(min, false)).collect();
    let lens: Vec<f64> = curves.iter().map(|c| c.len_secs).collect();
    let feasible: usize = curves.iter().map(|c| c.feasible).sum();
    let infeasible_intervals = curves
        .iter()
        .filter(|c| c.feasible > 0 && c.points.last().is_none_or(|p| (p.1 as f64) < target * c.feasible as f64))
        .count();
    let most: f64 = options.iter().map(|o| o.iter().map(|p| p.2).max().unwrap_or(0) as f64).sum();
    let mut need = (target * feasible as f64).ceil().min(most);
    let mut best: Option<OraclePlan> = None;
    for round in 0..4 {
        let choice = oracle_solve(&options, &lens, fleet.cold_start_secs, need)
            .1
            .unwrap_or_else(|| options.iter().map(|o| o.len().saturating_sub(1)).collect());
        let replicas: Vec<i32> = choice.iter().zip(&options).map(|(&i, o)| o[i].0.max(min)).collect();
        let planned: usize = choice.iter().zip(&options).map(|(&i, o)| o[i].2).sum();
        let plan = OraclePlan {
            interval_secs: len,
            replicas,
            infeasible_intervals,
            repair_rounds: round,
            planned_attainment: if feasible == 0 { 1.0 } else { planned as f64 / feasible as f64 },
        };
        let schedule = plan.schedule(fleet.cold_start_secs);
        let initial = schedule.first().map_or(1, |s| s.1);
        let run = simulate(
            scored,
            &FleetConfig { initial_replicas: initial.max(0) as u32, ..*fleet },
            &mut ScheduleAutoscaler::new("oracle", schedule),
            &mut |_| {},
        )?;
        let achieved = run.report.slo_attainment_feasible * feasible as f64;
        best = Some(plan);
        if achieved >= target * feasible as f64 - 1e-9 || need >= most {
            break;
        }
        need = (need + (target * feasible as f64 - achieved).max(1.0)).min(most);
    }
    let oracle = best.unwrap_or(OraclePlan {
        interval_secs: len,
        replicas: vec![min],
        infeasible_intervals,
        repair_rounds: 0,
        planned_attainment: 1.0,
    });
    Ok((curves, oracle, lower_bound))
}

/// Where a replay of a window after another starts: the first whole interval after the
/// last arrival, so the trace's minutes line up with the oracle's.
fn warm_up_shift(requests: &[TraceRequest], interval_secs: f64) -> f64 {
    let last = requests.last().map_or(0.0, |r| r.arrival_secs);
    ((last / interval_secs).floor() + 1.0) * interval_secs
}

fn parse(kind: PolicyKind, yaml: &str) -> Result<ResolvedPolicy, SimError> {
    parse_policy(yaml)
        .map(|(_, p)| p)
        .map_err(|e| SimError::Policy { name: kind.name().to_owned(), reason: e.to_string() })
}

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
    recommended_policy_yaml_for(calibration, burstiness, min_replicas, max_replicas, cold_start_secs, 15.0)
}

/// The window of a `rate()` rule that holds at least two scrapes at every evaluation
/// (PromQL returns nothing with fewer): twice the scrape interval, at least `min_secs`.
#[must_use]
pub fn rate_window_secs(scrape_interval_secs: f64, min_secs: f64) -> i64 {
    (2.0 * scrape_interval_secs).max(min_secs).ceil() as i64
}

/// [`recommended_policy_yaml`] for pods scraped every `scrape_interval_secs`: every
/// `rate()` window holds at least two scrapes.
#[must_use]
pub fn recommended_policy_yaml_for(
    calibration: &Calibration,
    burstiness: &Burstiness,
    min_replicas: i32,
    max_replicas: i32,
    cold_start_secs: f64,
    scrape_interval_secs: f64,
) -> String {
    let rate_window = rate_window_secs(scrape_interval_secs, 30.0);
    let query = format!("sum(rate(vllm:num_incoming_requests_total[{rate_window}s]))");
    let rps = round_to(calibration.target_rps, 0.01).max(0.01);
    let horizon = (cold_start_secs.round() as i64 + 15).clamp(1, 3600);
    let utilization =
        if calibration.sustainable_rps > 0.0 { calibration.target_rps / calibration.sustainable_rps } else { 1.0 };
    let bursty = burstiness.is_bursty(utilization) && burstiness.growth.is_finite();
    let burst_rule = if bursty {
        let window = (burstiness.window_secs.round() as i64).max(rate_window_secs(scrape_interval_secs, 1.0));
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
    )
}

/// The HPA-on-queue-depth baseline at production-stack's default target of 5 waiting
/// requests per pod (the comparison tunes the target, see [`hpa_policy_yaml`]).
#[must_use]
pub fn hpa_queue_policy_yaml(min_replicas: i32, max_replicas: i32) -> String {
    hpa_policy_yaml("hpa-queue", "queue_length", 5.0, min_replicas, max_replicas)
}

/// An HPA baseline: one per-pod catalog metric (`queue_length`, `running_requests`,
/// `kv_cache_usage`, ...) averaged per pod against `threshold`, read from Prometheus,
/// with Kubernetes' default `behavior` (no scale-up window, +100 % or +4 pods per 15 s;
/// 300 s scale-down window, -100 % per 15 s).
#[must_use]
pub fn hpa_policy_yaml(name: &str, metric: &str, threshold: f64, min_replicas: i32, max_replicas: i32) -> String {
    format!(
        "apiVersion: autoscaler.production-stack/v1alpha1
kind: vLLMScalingPolicy
metadata:
  name: {name}
spec:
  minReplicas: {min_replicas}
  maxReplicas: {max_replicas}
  scalingRules:
    - metric: {metric}
      threshold: {threshold}
      source: prometheus
  behavior: {{}}
"
    )
}

/// The HPA on the recommended policy's own signal: the router's arrival rate per replica
/// against `threshold` req/s, Kubernetes' default `behavior`, no forecast, no burst rule.
#[must_use]
pub fn hpa_rate_policy_yaml(min_replicas: i32, max_replicas: i32, threshold: f64, scrape_interval_secs: f64) -> String {
    let window = rate_window_secs(scrape_interval_secs, 30.0);
    let threshold = round_to(threshold, 0.01).max(0.01);
    format!(
        "apiVersion: autoscaler.production-stack/v1alpha1
kind: vLLMScalingPolicy
metadata:
  name: hpa-rate
spec:
  minReplicas: {min_replicas}
  maxReplicas: {max_replicas}
  scalingRules:
    - name: arrival_rate
      metric: custom
      query: sum(rate(vllm:num_incoming_requests_total[{window}s]))
      targetType: AverageValue
      threshold: {threshold}
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

/// Splits `requests` as [`ExperimentConfig::learning`] says, prepares the plan and runs
/// `policies` one after the other.
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
        runs.push(plan.run(kind, &mut |f| progress(Stage::Run(kind), f))?);
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
            planned_attainment: 1.0,
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
        p.scale_down_stabilization(crate::DEFAULT_DOWNSCALE_STABILIZATION).as_secs()
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
        // The burst window is the sync period, widened to two 15 s scrapes: a `rate()`
        // over one scrape is empty in PromQL.
        assert_eq!(burst.query.as_deref(), Some("sum(rate(vllm:num_incoming_requests_total[30s]))"));
        let yaml = recommended_policy_yaml_for(&calibration(), &b, 1, 40, 60.0, 5.0);
        let (_, p) = parse_policy(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
        let burst = p.rules.iter().find(|r| r.key == "arrival_burst").expect("a burst rule");
        assert_eq!(burst.query.as_deref(), Some("sum(rate(vllm:num_incoming_requests_total[15s]))"));
        let (_, p) = parse_policy(&recommended_policy_yaml_for(&calibration(), &b, 1, 40, 60.0, 30.0)).expect("valid");
        let rate = p.rules.iter().find(|r| r.key == "arrival_rate").expect("the rate rule");
        assert_eq!(rate.query.as_deref(), Some("sum(rate(vllm:num_incoming_requests_total[60s]))"));
        assert_eq!(down_window_secs(&p), 420);
        let down = &p.behavior.as_ref().expect("behavior").scale_down.policies;
        assert_eq!(down.len(), 1);
        assert_eq!((down[0].value, down[0].period_seconds), (BURSTY_GIVE_BACK_PERCENT, 60));
        // The plain arrival-rate rule and the queue rule stay.
        assert!(p.rules.iter().any(|r| r.key == "arrival_rate" && (r.threshold - 8.5).abs() < 1e-9));
        assert!(p.rules.iter().any(|r| r.metric == crate::Metric::QueueLength));
    }

    /// The cheapest real fleet sequence (one integer fleet per interval, `1..=top`) whose
    /// credited service reaches `need`, by brute force: `credit(k, n)` per interval,
    /// GPU-hours `n · len` plus a cold start per replica added.
    fn brute_force(
        intervals: usize,
        top: i32,
        credit: &dyn Fn(usize, i32) -> usize,
        lens: &[f64],
        cold: f64,
        need: f64,
    ) -> Option<f64> {
        let mut best: Option<f64> = None;
        let mut pick = vec![1i32; intervals];
        loop {
            let (mut cost, mut good) = (0.0, 0.0);
            for (k, &n) in pick.iter().enumerate() {
                cost += f64::from(n) * lens[k] / 3600.0;
                if k > 0 {
                    cost += f64::from((n - pick[k - 1]).max(0)) * cold / 3600.0;
                }
                good += credit(k, n) as f64;
            }
            if good >= need - 1e-9 && best.is_none_or(|b| cost < b) {
                best = Some(cost);
            }
            // The next sequence, like an odometer.
            let mut k = 0;
            loop {
                if k == pick.len() {
                    return best;
                }
                pick[k] += 1;
                if pick[k] <= top {
                    break;
                }
                pick[k] = 1;
                k += 1;
            }
        }
    }

    proptest::proptest! {
        /// For any service curve consistent with the measured points (more replicas never
        /// serve fewer), the cheapest real fleet sequence meeting the target costs at least
        /// the bound; so does the plan found on the measured points, which meets it.
        #[test]
        fn the_bound_is_below_every_fleet_sequence_meeting_the_target(
            raw in proptest::collection::vec(
                (1usize..40, proptest::collection::vec((1i32..4, 0usize..15), 1..4)), 1..4),
            share in 0.3f64..1.0,
            cold in 0.0f64..600.0,
            pessimism in 0.0f64..1.0,
        ) {
            let curves: Vec<IntervalCurve> = raw
                .into_iter()
                .map(|(feasible, steps)| {
                    let (mut n, mut g) = (0, 0usize);
                    let points = steps
                        .into_iter()
                        .map(|(dn, dg)| {
                            n += dn;
                            g = (g + dg).min(feasible);
                            (n, g)
                        })
                        .collect();
                    IntervalCurve { len_secs: 60.0, feasible, points }
                })
                .collect();
            let feasible: usize = curves.iter().map(|c| c.feasible).sum();
            let need = (share * feasible as f64 - 1e-6).ceil();
            let lens = vec![60.0; curves.len()];
            let bound = lower_bound_gpu_hours(&curves, 1, cold, share).expect("the optimistic curves serve everything");
            let top = curves.iter().flat_map(|c| c.points.last()).map(|p| p.0).max().unwrap_or(1) + 1;
            // A true curve between the measured points: at a measured size exactly what was
            // measured, between sizes something from the lower to the upper step (how far
            // is `pessimism`), above the last point up to every feasible request.
            let truth = |k: usize, n: i32| -> usize {
                let c = &curves[k];
                if c.points.is_empty() {
                    return c.feasible;
                }
                let below = c.points.iter().filter(|p| p.0 <= n).map(|p| p.1).max().unwrap_or(0);
                let above = c.points.iter().find(|p| p.0 >= n).map_or(c.feasible, |p| p.1);
                if c.points.iter().any(|p| p.0 == n) {
                    return below;
                }
                above - ((above - below) as f64 * pessimism).round() as usize
            };
            let optimum = brute_force(curves.len(), top, &truth, &lens, cold, need);
            if let Some(real) = optimum {
                proptest::prop_assert!(bound <= real + 1e-9, "bound {bound} above a real sequence's {real}");
            }
            // The plan on the measured points meets the target at no less than the bound.
            let measured: Vec<_> = curves.iter().map(|c| c.options(1, false)).collect();
            if let (_, Some(plan)) = oracle_solve(&measured, &lens, cold, need) {
                let (mut hours, mut good) = (0.0, 0.0);
                for (k, &i) in plan.iter().enumerate() {
                    let (n, _, g) = measured[k][i];
                    hours += f64::from(n) * lens[k] / 3600.0;
                    if k > 0 {
                        hours += f64::from((n - measured[k - 1][plan[k - 1]].0).max(0)) * cold / 3600.0;
                    }
                    good += g as f64;
                }
                proptest::prop_assert!(good >= need - 1e-9 && hours + 1e-9 >= bound, "plan {hours} h serving {good}");
            }
        }
    }

    /// The case that broke the first version: a constant fleet whose per-interval
    /// credit comes from different measured points must not be charged cold starts.
    #[test]
    fn a_constant_fleet_pays_no_cold_start_in_the_relaxation() {
        let curves = vec![
            IntervalCurve { len_secs: 60.0, feasible: 10, points: vec![(2, 4), (5, 10)] },
            IntervalCurve { len_secs: 60.0, feasible: 10, points: vec![(3, 2), (4, 10)] },
        ];
        // Five replicas all along serve everything: 10 replica-minutes, no scale-up.
        let constant = 2.0 * 5.0 * 60.0 / 3600.0;
        let bound = lower_bound_gpu_hours(&curves, 1, 3600.0, 1.0).expect("reachable");
        assert!(bound <= constant + 1e-9, "{bound} > {constant}");
    }

    #[test]
    fn policy_names_round_trip() {
        for k in PolicyKind::ALL {
            assert_eq!(k.name().parse::<PolicyKind>().unwrap(), k);
        }
        assert!("hpa".parse::<PolicyKind>().unwrap_err().to_string().contains("hpa-queue"));
    }
}
