//! The fleet: replicas with cold starts and draining, a router, scrapes, and the policy
//! loop, stepped through simulated time.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use serde::{Deserialize, Serialize};

use crate::observation::PodPhase;
use crate::time::Timestamp;

use super::ledger::Ledger;
use super::model::{ModelError, ReplicaModel};
use super::observe::{FleetView, PodSample, PodStatus, Snapshot};
use super::replica::{Phase, Replica};
use super::report::{FleetTotals, PolicyReport, ScaleChange, SeriesPoint, summarize};
use super::trace::TraceRequest;

/// How the gateway spreads requests over ready replicas.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
#[non_exhaustive]
pub enum Router {
    /// To the replica with the fewest waiting plus running requests (the Gateway API
    /// inference extension's queue-aware scoring; lowest replica id on ties).
    #[default]
    LeastOutstanding,
    /// In turn (production-stack's default router).
    RoundRobin,
}

/// The fleet model shared by every policy of a comparison.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FleetConfig {
    /// One replica's performance.
    pub model: ReplicaModel,
    /// From the scale decision to a ready replica, seconds.
    pub cold_start_secs: f64,
    /// How often pods are scraped, seconds (a policy may ask for its own interval).
    pub scrape_interval_secs: f64,
    /// How far behind Prometheus answers, seconds (rules with `source: pods` do not wait).
    pub prometheus_lag_secs: f64,
    /// The time-to-first-token objective, seconds.
    pub slo_ttft_secs: f64,
    /// The gateway's routing.
    pub router: Router,
    /// Resolution of the replica/arrival time series, seconds.
    pub sample_interval_secs: f64,
    /// Replicas ready at time 0.
    pub initial_replicas: u32,
    /// A hard cap on replicas, whatever a policy asks (a cluster's GPU quota).
    pub max_fleet: u32,
    /// Arrivals before this time only warm the fleet and the policy up: they are not
    /// measured, GPU time counts from it, and the time series and scale log start at it
    /// (shifted to 0).
    #[serde(default)]
    pub warmup_secs: f64,
}

impl Default for FleetConfig {
    fn default() -> Self {
        Self {
            model: ReplicaModel::default(),
            cold_start_secs: 60.0,
            scrape_interval_secs: 15.0,
            prometheus_lag_secs: 0.0,
            slo_ttft_secs: 2.0,
            router: Router::default(),
            sample_interval_secs: 10.0,
            initial_replicas: 1,
            max_fleet: 2000,
            warmup_secs: 0.0,
        }
    }
}

/// Why a simulation cannot run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum SimError {
    /// The replica model is impossible.
    #[error("invalid fleet configuration")]
    Model(#[source] ModelError),
    /// A fleet setting is out of range.
    #[error("invalid fleet configuration: {field} {reason}")]
    Config {
        /// The setting.
        field: &'static str,
        /// Why.
        reason: String,
    },
    /// No requests to simulate.
    #[error("nothing to simulate: the arrivals are empty")]
    NoRequests,
    /// A policy could not be built.
    #[error("policy `{name}` is invalid: {reason}")]
    Policy {
        /// The policy's name.
        name: String,
        /// Why.
        reason: String,
    },
}

impl FleetConfig {
    /// Checks every setting.
    ///
    /// # Errors
    /// The first impossible one.
    pub fn validate(&self) -> Result<(), SimError> {
        self.model.validate().map_err(SimError::Model)?;
        let secs = |field: &'static str, v: f64, min: f64| {
            if v.is_finite() && v >= min && v <= 86_400.0 {
                Ok(())
            } else {
                Err(SimError::Config {
                    field,
                    reason: format!("must be a number of seconds in [{min}, 86400], got {v}"),
                })
            }
        };
        secs("cold_start_secs", self.cold_start_secs, 0.0)?;
        secs("scrape_interval_secs", self.scrape_interval_secs, 0.1)?;
        secs("prometheus_lag_secs", self.prometheus_lag_secs, 0.0)?;
        secs("slo_ttft_secs", self.slo_ttft_secs, 0.001)?;
        secs("sample_interval_secs", self.sample_interval_secs, 0.1)?;
        if !(self.warmup_secs.is_finite() && self.warmup_secs >= 0.0) {
            return Err(SimError::Config {
                field: "warmup_secs",
                reason: format!("must be >= 0, got {}", self.warmup_secs),
            });
        }
        if self.max_fleet == 0 || self.max_fleet > 100_000 {
            return Err(SimError::Config {
                field: "max_fleet",
                reason: format!("must be in [1, 100000], got {}", self.max_fleet),
            });
        }
        if self.initial_replicas > self.max_fleet {
            return Err(SimError::Config {
                field: "initial_replicas",
                reason: format!("must not exceed max_fleet ({} > {})", self.initial_replicas, self.max_fleet),
            });
        }
        Ok(())
    }
}

/// What a policy answers at an evaluation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Verdict {
    /// The replicas to run (`scale.spec.replicas`).
    pub desired_replicas: i32,
    /// When to evaluate again.
    pub next_evaluation: Timestamp,
}

/// A scaling policy the simulator can drive: the project's engine, a baseline, or yours.
pub trait Autoscaler {
    /// The name used in reports.
    fn name(&self) -> &str;

    /// The scrape interval this policy's metrics pipeline uses, seconds (`None`: the
    /// fleet's).
    fn scrape_interval_secs(&self) -> Option<f64> {
        None
    }

    /// When the first evaluation happens, seconds after the start.
    fn first_evaluation_secs(&self) -> f64 {
        15.0
    }

    /// Decides, from what the policy can see.
    fn evaluate(&mut self, view: &FleetView<'_>) -> Verdict;

    /// Why each rescale happened, `(seconds, explanation)`, handed over once at the end
    /// of a run (empty for policies that do not explain themselves).
    fn take_explanations(&mut self) -> Vec<(f64, String)> {
        Vec::new()
    }
}

/// The outcome of one simulated run.
#[derive(Clone, Debug, PartialEq)]
pub struct RunResult {
    /// The summary table row.
    pub report: PolicyReport,
    /// Arrival rate and replicas over time (from the end of the warm-up).
    pub series: Vec<SeriesPoint>,
    /// Every rescale after the warm-up.
    pub scale_log: Vec<ScaleChange>,
    /// Each request's time to first token, seconds (`INFINITY`: never served), in arrival
    /// order (warm-up requests included).
    pub ttft_secs: Vec<f64>,
    /// The policy's explanation of each rescale, `(seconds, text)`.
    pub explanations: Vec<(f64, String)>,
}

/// How many seconds of snapshots are kept for rate windows and KPA averages.
const SNAPSHOT_HISTORY_SECS: f64 = 900.0;

struct Fleet<'a> {
    cfg: &'a FleetConfig,
    reqs: &'a [TraceRequest],
    ledger: Ledger,
    replicas: Vec<Replica>,
    /// Indices of replicas not yet stopped.
    live: Vec<usize>,
    starting: BinaryHeap<Reverse<(u64, usize)>>,
    gateway: VecDeque<u32>,
    rr_cursor: usize,
    snapshots: VecDeque<Snapshot>,
    last_scrape: (f64, Vec<f64>),
    arrivals_total: u64,
    spec: i32,
    scale_log: Vec<ScaleChange>,
}

fn millis(t: f64) -> u64 {
    (t * 1000.0).round().max(0.0) as u64
}

impl<'a> Fleet<'a> {
    fn new(cfg: &'a FleetConfig, reqs: &'a [TraceRequest]) -> Self {
        let mut fleet = Self {
            cfg,
            reqs,
            ledger: Ledger::new(reqs.len()),
            replicas: Vec::new(),
            live: Vec::new(),
            starting: BinaryHeap::new(),
            gateway: VecDeque::new(),
            rr_cursor: 0,
            snapshots: VecDeque::new(),
            last_scrape: (0.0, Vec::new()),
            arrivals_total: 0,
            spec: 0,
            scale_log: Vec::new(),
        };
        for _ in 0..cfg.initial_replicas {
            fleet.add_replica(0.0, 0.0);
        }
        fleet.spec = cfg.initial_replicas as i32;
        fleet
    }

    fn add_replica(&mut self, now: f64, ready_at: f64) {
        let idx = self.replicas.len();
        let replica = Replica::new(idx as u32, now, ready_at);
        if replica.phase == Phase::Starting {
            self.starting.push(Reverse((millis(ready_at), idx)));
        }
        self.replicas.push(replica);
        self.live.push(idx);
    }

    fn advance_all(&mut self, t: f64) {
        let model = &self.cfg.model;
        for &i in &self.live {
            self.replicas[i].advance_to(t, model, self.reqs, &mut self.ledger);
        }
        self.live.retain(|&i| self.replicas[i].phase != Phase::Stopped);
    }

    fn route(&mut self, id: u32, now: f64) {
        let model = &self.cfg.model;
        let chosen = match self.cfg.router {
            Router::LeastOutstanding => {
                let mut best: Option<(usize, usize)> = None;
                for &i in &self.live {
                    let r = &mut self.replicas[i];
                    if r.phase != Phase::Ready {
                        continue;
                    }
                    r.advance_to(now, model, self.reqs, &mut self.ledger);
                    let load = r.outstanding();
                    if best.is_none_or(|(_, b)| load < b) {
                        best = Some((i, load));
                    }
                }
                best.map(|(i, _)| i)
            }
            Router::RoundRobin => {
                let ready: Vec<usize> =
                    self.live.iter().copied().filter(|&i| self.replicas[i].phase == Phase::Ready).collect();
                if ready.is_empty() {
                    None
                } else {
                    self.rr_cursor = (self.rr_cursor + 1) % ready.len();
                    let i = ready[self.rr_cursor];
                    self.replicas[i].advance_to(now, model, self.reqs, &mut self.ledger);
                    Some(i)
                }
            }
        };
        match chosen {
            Some(i) => self.replicas[i].enqueue(id),
            None => self.gateway.push_back(id),
        }
    }

    fn on_ready(&mut self, idx: usize) {
        if self.replicas[idx].phase != Phase::Starting {
            return; // cancelled by a scale-down before it was ready
        }
        let now = self.replicas[idx].ready_at;
        self.replicas[idx].become_ready();
        while let Some(id) = self.gateway.pop_front() {
            self.route(id, now);
        }
    }

    fn scale_to(&mut self, now: f64, desired: i32) {
        let desired = desired.clamp(0, self.cfg.max_fleet as i32);
        if desired == self.spec {
            return;
        }
        self.scale_log.push(ScaleChange { at_secs: now, from: self.spec, to: desired });
        if desired > self.spec {
            for _ in self.spec..desired {
                self.add_replica(now, now + self.cfg.cold_start_secs);
            }
        } else {
            self.advance_all(now);
            let mut remove = (self.spec - desired) as usize;
            // The ReplicaSet controller deletes not-ready pods first, then the newest.
            let mut order: Vec<usize> = self
                .live
                .iter()
                .copied()
                .filter(|&i| matches!(self.replicas[i].phase, Phase::Starting | Phase::Ready))
                .collect();
            order.sort_by(|&a, &b| {
                let (ra, rb) = (&self.replicas[a], &self.replicas[b]);
                let rank = |r: &Replica| u8::from(r.phase == Phase::Ready);
                rank(ra).cmp(&rank(rb)).then(rb.ready_at.total_cmp(&ra.ready_at)).then(b.cmp(&a))
            });
            for i in order {
                if remove == 0 {
                    break;
                }
                let r = &mut self.replicas[i];
                if r.phase == Phase::Starting {
                    r.cancel(now);
                } else {
                    r.drain();
                    if !r.has_work() {
                        r.cancel(now);
                    }
                }
                remove -= 1;
            }
            self.live.retain(|&i| self.replicas[i].phase != Phase::Stopped);
        }
        self.spec = desired;
    }

    fn scrape(&mut self, now: f64) {
        self.advance_all(now);
        let (last_at, ref last_busy) = self.last_scrape;
        let interval = (now - last_at).max(1e-9);
        let mut busy_now = vec![0.0; self.replicas.len()];
        let mut pods = Vec::with_capacity(self.live.len());
        for &i in &self.live {
            let r = &self.replicas[i];
            busy_now[i] = r.busy_secs;
            if !matches!(r.phase, Phase::Ready | Phase::Draining) {
                continue;
            }
            let before = last_busy.get(i).copied().unwrap_or(0.0);
            let window = interval.min(now - r.ready_at).max(1e-9);
            pods.push(PodSample {
                replica: r.id,
                queue_length: r.waiting_len() as u32,
                running: r.running_len() as u32,
                kv_usage_percent: r.kv_usage_percent(&self.cfg.model),
                gpu_utilization_percent: (100.0 * (r.busy_secs - before) / window).clamp(0.0, 100.0),
                completed_total: r.completed,
                generated_tokens_total: r.generated_tokens,
            });
        }
        self.last_scrape = (now, busy_now);
        self.snapshots.push_back(Snapshot { at_secs: now, pods, arrivals_total: self.arrivals_total });
        while self.snapshots.front().is_some_and(|s| s.at_secs < now - SNAPSHOT_HISTORY_SECS) {
            self.snapshots.pop_front();
        }
    }

    fn pod_statuses(&self) -> Vec<PodStatus> {
        self.live
            .iter()
            .map(|&i| {
                let r = &self.replicas[i];
                PodStatus {
                    replica: r.id,
                    phase: if r.phase == Phase::Starting { PodPhase::Pending } else { PodPhase::Running },
                    ready: r.phase == Phase::Ready,
                    deleting: r.phase == Phase::Draining,
                }
            })
            .collect()
    }
}

/// Replays `requests` (sorted by arrival) against a fleet driven by `autoscaler`.
///
/// The run lasts until the last arrival (the *horizon*); the policy is evaluated up to it,
/// then the fleet finishes the requests it holds. GPU time counts every replica from the
/// scale decision that created it to its removal (a draining replica until it is empty),
/// cut at the horizon. `progress` is called with the fraction of requests dispatched.
///
/// # Errors
/// An invalid configuration or no requests.
pub fn simulate(
    requests: &[TraceRequest],
    config: &FleetConfig,
    autoscaler: &mut dyn Autoscaler,
    progress: &mut dyn FnMut(f64),
) -> Result<RunResult, SimError> {
    simulate_with_ledger(requests, config, autoscaler, progress).map(|(run, _)| run)
}

/// [`simulate`], also returning every request's timeline.
pub(crate) fn simulate_with_ledger(
    requests: &[TraceRequest],
    config: &FleetConfig,
    autoscaler: &mut dyn Autoscaler,
    progress: &mut dyn FnMut(f64),
) -> Result<(RunResult, Ledger), SimError> {
    config.validate()?;
    if requests.is_empty() {
        return Err(SimError::NoRequests);
    }
    let horizon = requests[requests.len() - 1].arrival_secs.max(config.sample_interval_secs);
    let scrape_every = autoscaler.scrape_interval_secs().unwrap_or(config.scrape_interval_secs).max(0.1);
    let mut fleet = Fleet::new(config, requests);
    let mut next_scrape = scrape_every;
    let mut next_eval = autoscaler.first_evaluation_secs().max(0.0);
    let mut next_sample = config.sample_interval_secs;
    let mut series = Vec::new();
    let mut arrivals_in_sample = 0u64;
    let mut next = 0usize;
    let report_every = (requests.len() / 100).max(1);
    // One loop over time-ordered events; at equal times: readiness, scrape, evaluation,
    // sample, then arrivals.
    loop {
        let t_arrival = requests.get(next).map_or(f64::INFINITY, |r| r.arrival_secs);
        let t_ready = fleet.starting.peek().map_or(f64::INFINITY, |Reverse((ms, _))| *ms as f64 / 1000.0);
        let t_scrape = if next_scrape <= horizon { next_scrape } else { f64::INFINITY };
        let t_eval = if next_eval <= horizon { next_eval } else { f64::INFINITY };
        let t_sample = if next_sample <= horizon + config.sample_interval_secs { next_sample } else { f64::INFINITY };
        let t = t_arrival.min(t_ready).min(t_scrape).min(t_eval).min(t_sample);
        if !t.is_finite() {
            break;
        }
        if t_ready <= t {
            let Some(Reverse((_, idx))) = fleet.starting.pop() else { break };
            fleet.on_ready(idx);
        } else if t_scrape <= t {
            fleet.scrape(t);
            next_scrape += scrape_every;
        } else if t_eval <= t {
            let pods = fleet.pod_statuses();
            let view = FleetView {
                now_secs: t,
                spec_replicas: fleet.spec,
                pods: &pods,
                snapshots: &fleet.snapshots,
                hist: &fleet.ledger.hist,
                lag_secs: config.prometheus_lag_secs,
            };
            let verdict = autoscaler.evaluate(&view);
            fleet.scale_to(t, verdict.desired_replicas);
            next_eval = (verdict.next_evaluation.as_millis() as f64 / 1000.0).max(t + 0.001);
        } else if t_sample <= t {
            fleet.advance_all(t);
            let ready = fleet.live.iter().filter(|&&i| fleet.replicas[i].phase == Phase::Ready).count();
            let waiting: usize =
                fleet.live.iter().map(|&i| fleet.replicas[i].waiting_len()).sum::<usize>() + fleet.gateway.len();
            series.push(SeriesPoint {
                t_secs: t,
                arrival_rps: arrivals_in_sample as f64 / config.sample_interval_secs,
                desired: fleet.spec,
                ready: ready as i32,
                waiting: waiting as u32,
            });
            arrivals_in_sample = 0;
            next_sample += config.sample_interval_secs;
        } else {
            fleet.arrivals_total += 1;
            arrivals_in_sample += 1;
            let req = &requests[next];
            let need = u64::from(req.input_tokens) + u64::from(req.output_tokens.max(1));
            if need > config.model.kv_cache_tokens {
                // vLLM rejects a request longer than its KV cache can ever hold.
                fleet.ledger.rejected[next] = true;
            } else {
                fleet.route(next as u32, t);
            }
            next += 1;
            if next.is_multiple_of(report_every) {
                progress(next as f64 / requests.len() as f64);
            }
        }
    }
    // Past the horizon: no more scaling; finish what is queued.
    while fleet.gateway.front().is_some() {
        let Some(Reverse((_, idx))) = fleet.starting.pop() else { break };
        fleet.on_ready(idx);
    }
    fleet.advance_all(f64::INFINITY);
    progress(1.0);
    // The measured span: from the end of the warm-up to the horizon.
    let start = config.warmup_secs.min(horizon);
    let gpu_secs: f64 = fleet
        .replicas
        .iter()
        .map(|r| {
            let (from, to) = (r.created_at.max(start), r.stopped_at.unwrap_or(f64::INFINITY).min(horizon));
            (to - from).max(0.0)
        })
        .sum();
    let first_measured = requests.partition_point(|r| r.arrival_secs < start);
    let spec_at_start = fleet
        .scale_log
        .iter()
        .take_while(|c| c.at_secs < start)
        .last()
        .map_or(config.initial_replicas as i32, |c| c.to);
    let scale_log: Vec<ScaleChange> = fleet
        .scale_log
        .iter()
        .filter(|c| c.at_secs >= start)
        .map(|c| ScaleChange { at_secs: c.at_secs - start, ..*c })
        .collect();
    let series: Vec<SeriesPoint> = series
        .into_iter()
        .filter(|p| p.t_secs > start)
        .map(|p| SeriesPoint { t_secs: p.t_secs - start, ..p })
        .collect();
    let totals = FleetTotals {
        model: &config.model,
        gpu_secs,
        horizon_secs: horizon - start,
        initial_replicas: spec_at_start,
        log: &scale_log,
    };
    let report = summarize(autoscaler.name(), requests, &fleet.ledger, first_measured, config.slo_ttft_secs, &totals);
    let ttft_secs = requests
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let f = fleet.ledger.first_token[i];
            if f.is_nan() { f64::INFINITY } else { f - r.arrival_secs }
        })
        .collect();
    let explanations = autoscaler
        .take_explanations()
        .into_iter()
        .filter(|(at, _)| *at >= start)
        .map(|(at, why)| (at - start, why))
        .collect();
    Ok((RunResult { report, series, scale_log, ttft_secs, explanations }, fleet.ledger))
}
