//! How bursty a trace's arrivals are, as a capacity planner would measure it from the
//! history of the traffic the policy is for: the recommended policy keeps burst
//! headroom only for traffic whose bursts outgrow what the target utilization leaves.

use serde::{Deserialize, Serialize};

use super::fleet::SimError;
use super::trace::TraceRequest;

/// The shortest scale-down hold the analysis considers (the recommended policy's window
/// for smooth traffic), seconds.
pub const MIN_HOLD_SECS: f64 = 120.0;
/// The longest scale-down hold the analysis considers, seconds.
pub const MAX_HOLD_SECS: f64 = 900.0;
/// The step between the holds the analysis tries, seconds.
pub const HOLD_STEP_SECS: f64 = 60.0;

/// How fast a trace's bursts outgrow the largest burst of the minutes before them.
///
/// The arrivals are counted in windows of the policy's sync period (every arrival falls
/// in exactly one evaluation's rate window). A window's *growth* is its count over the
/// largest count of the windows in the `hold_secs` before it: what a policy that keeps
/// the fleet of the largest recent burst for `hold_secs` sees coming. The trace is read as
/// one period of traffic that repeats (the day before looked like this one; the
/// simulator's warm-up pass replays it the same way), so the first windows have history
/// too.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Burstiness {
    /// The counting window (the sync period), seconds.
    pub window_secs: f64,
    /// The hold that makes the kept fleet cheapest (see [`analyze`]), seconds.
    pub hold_secs: f64,
    /// The growth that at most the miss share of the requests exceed with that hold
    /// (1 or more).
    pub growth: f64,
    /// The mean over the period of the largest window count in the hold before each
    /// window, in requests per second: what keeping the largest recent burst costs.
    pub held_rps: f64,
}

impl Burstiness {
    /// Smooth traffic: no growth beyond the largest recent window, the shortest hold.
    #[must_use]
    pub const fn smooth(window_secs: f64) -> Self {
        Self { window_secs, hold_secs: MIN_HOLD_SECS, growth: 1.0, held_rps: 0.0 }
    }

    /// Whether the bursts outgrow what aiming replicas at `target_utilization` of their
    /// capacity leaves (growth above `1 / target_utilization`): such traffic needs burst
    /// headroom kept for it.
    #[must_use]
    pub fn is_bursty(&self, target_utilization: f64) -> bool {
        self.growth * target_utilization > 1.0 + 1e-9
    }
}

/// Measures [`Burstiness`] of `requests` (sorted by arrival) over a period of
/// `period_secs`, counting in windows of `window_secs`. For each hold from
/// [`MIN_HOLD_SECS`] to [`MAX_HOLD_SECS`] it finds the growth that the windows holding at
/// most `miss_share` of the requests exceed, and keeps the hold for which growth × the
/// mean held rate (the fleet a policy holding growth × the largest recent burst keeps,
/// on average) is smallest.
///
/// # Errors
/// [`SimError::Config`] for a window under one second, a period shorter than a window,
/// or a miss share outside `[0, 1)`; [`SimError::NoRequests`] for no requests.
pub fn analyze(
    requests: &[TraceRequest],
    period_secs: f64,
    window_secs: f64,
    miss_share: f64,
) -> Result<Burstiness, SimError> {
    let cfg = |field: &'static str, reason: String| Err(SimError::Config { field, reason });
    if !(window_secs.is_finite() && window_secs >= 1.0) {
        return cfg("burst_window_secs", format!("must be at least 1, got {window_secs}"));
    }
    if !(period_secs.is_finite() && period_secs >= window_secs) {
        return cfg("burst_period_secs", format!("must be at least the window {window_secs}, got {period_secs}"));
    }
    if !(0.0..1.0).contains(&miss_share) {
        return cfg("burst_miss_share", format!("must be in [0, 1), got {miss_share}"));
    }
    if requests.is_empty() {
        return Err(SimError::NoRequests);
    }
    let windows = (period_secs / window_secs).ceil() as usize;
    let mut counts = vec![0u64; windows];
    for r in requests {
        let w = ((r.arrival_secs.max(0.0) / window_secs) as usize).min(windows - 1);
        counts[w] += 1;
    }
    let total: u64 = counts.iter().sum();
    let budget = miss_share * total as f64;
    let mut best: Option<Burstiness> = None;
    let mut hold = MIN_HOLD_SECS;
    while hold <= MAX_HOLD_SECS + 1e-9 {
        let k = ((hold / window_secs).round() as usize).max(1);
        let held = held_max(&counts, k);
        let growth = growth_quantile(&counts, &held, budget);
        let held_rps = held.iter().sum::<u64>() as f64 / windows as f64 / window_secs;
        if growth.is_finite() {
            let candidate = Burstiness { window_secs, hold_secs: hold, growth, held_rps };
            let cost = |b: &Burstiness| b.growth * b.held_rps;
            if best.as_ref().is_none_or(|b| cost(&candidate) < cost(b) - 1e-9) {
                best = Some(candidate);
            }
        }
        hold += HOLD_STEP_SECS;
    }
    // Every hold sees some burst after a stretch longer than the longest hold with no
    // arrivals at all: treat the traffic as unpredictable at the longest hold.
    Ok(best.unwrap_or(Burstiness { window_secs, hold_secs: MAX_HOLD_SECS, growth: f64::INFINITY, held_rps: 0.0 }))
}

/// For each window, the largest count of the `k` windows before it, the counts read as
/// a repeating period.
fn held_max(counts: &[u64], k: usize) -> Vec<u64> {
    let n = counts.len();
    (0..n).map(|i| (1..=k.min(n)).map(|d| counts[(i + n * k - d) % n]).max().unwrap_or(0)).collect()
}

/// The smallest growth such that the windows growing more hold at most `budget`
/// requests (at least 1; infinite when requests after an empty hold exceed the budget).
fn growth_quantile(counts: &[u64], held: &[u64], budget: f64) -> f64 {
    let mut ratios: Vec<(f64, u64)> = counts
        .iter()
        .zip(held)
        .filter(|(c, _)| **c > 0)
        .map(|(&c, &m)| (if m == 0 { f64::INFINITY } else { c as f64 / m as f64 }, c))
        .collect();
    ratios.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut above = 0.0;
    for (ratio, n) in ratios {
        if above + n as f64 > budget {
            return ratio.max(1.0);
        }
        above += n as f64;
    }
    1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(times: &[f64]) -> Vec<TraceRequest> {
        times.iter().map(|&t| TraceRequest { arrival_secs: t, input_tokens: 100, output_tokens: 10 }).collect()
    }

    /// `n` arrivals spread over the window starting at `start`.
    fn burst(start: f64, n: usize) -> Vec<f64> {
        (0..n).map(|i| start + 10.0 * i as f64 / n as f64).collect()
    }

    #[test]
    fn steady_traffic_is_smooth() {
        let times: Vec<f64> = (0..3600).map(f64::from).collect();
        let b = analyze(&at(&times), 3600.0, 15.0, 0.005).unwrap();
        assert!((b.growth - 1.0).abs() < 1e-9, "{b:?}");
        assert!((b.hold_secs - MIN_HOLD_SECS).abs() < 1e-9, "the shortest hold is the cheapest: {b:?}");
        assert!((b.held_rps - 1.0).abs() < 0.1, "{b:?}");
        assert!(!b.is_bursty(0.85));
    }

    #[test]
    fn a_burst_twice_the_one_before_is_bursty_and_sets_the_hold() {
        // Bursts every five minutes, the third twice the others; nothing in between.
        let mut times = Vec::new();
        for (i, n) in [100, 100, 200, 100, 100, 100, 100, 100, 100, 100, 100, 100].iter().enumerate() {
            times.extend(burst(300.0 * i as f64, *n));
        }
        let b = analyze(&at(&times), 3600.0, 15.0, 0.01).unwrap();
        // A hold under five minutes sees every burst after an empty hold: infinite growth.
        assert!(b.hold_secs >= 300.0, "{b:?}");
        // The doubled burst is 200 of 1,300 requests, far over a 1 % miss share.
        assert!((b.growth - 2.0).abs() < 1e-9, "{b:?}");
        assert!(b.is_bursty(0.85));
        // With a miss share that covers the doubled burst, growth is 1.
        let lax = analyze(&at(&times), 3600.0, 15.0, 0.2).unwrap();
        assert!((lax.growth - 1.0).abs() < 1e-9, "{lax:?}");
    }

    #[test]
    fn history_wraps_around_the_period() {
        // One burst a minute, the same size: the first one has the last one as history.
        let times: Vec<f64> = (0..60).flat_map(|m| burst(60.0 * f64::from(m), 50)).collect();
        let b = analyze(&at(&times), 3600.0, 15.0, 0.0).unwrap();
        assert!((b.growth - 1.0).abs() < 1e-9, "{b:?}");
    }

    #[test]
    fn bad_settings_are_refused_by_name() {
        let reqs = at(&[1.0]);
        for (period, window, share, field) in [
            (3600.0, 0.5, 0.01, "burst_window_secs"),
            (10.0, 15.0, 0.01, "burst_period_secs"),
            (3600.0, 15.0, 1.0, "burst_miss_share"),
            (3600.0, 15.0, f64::NAN, "burst_miss_share"),
        ] {
            match analyze(&reqs, period, window, share) {
                Err(SimError::Config { field: f, .. }) => assert_eq!(f, field),
                other => panic!("expected a config error for {field}, got {other:?}"),
            }
        }
        assert!(matches!(analyze(&[], 3600.0, 15.0, 0.01), Err(SimError::NoRequests)));
    }
}
