//! The built-in load generator: a daily shape compressed into the run, Poisson or Gamma
//! arrivals, bursts, and log-normal token lengths. It is the embedded default of
//! `vllm-autoscaler simulate`, so a plain clone runs without any trace file.

use serde::{Deserialize, Serialize};
use statrs::distribution::{ContinuousCDF, LogNormal};

use super::rng::SimRng;
use super::trace::{Trace, TraceError, TraceRequest};

/// What the generator produces.
///
/// The arrival rate is `mean_rps × (1 + daily_amplitude × sin(2π t / daily_period − π/2))`
/// (a trough at the start, the peak half a period later), multiplied by
/// `burst_multiplier` inside each burst. Bursts start as a Poisson process. Arrivals are
/// a renewal process with Gamma inter-arrival times of coefficient of variation
/// `arrival_cv` (1 is Poisson; above 1 is burstier), time-warped to follow the rate.
///
/// ```
/// use vllm_scaling_core::sim::GeneratorConfig;
///
/// let config =
///     GeneratorConfig { duration_secs: 600.0, daily_period_secs: 600.0, mean_rps: 20.0, ..GeneratorConfig::default() };
/// let trace = config.generate(7).unwrap();
/// let stats = trace.stats();
/// assert!((stats.mean_rps - 20.0).abs() < 6.0, "{stats:?}");
/// assert_eq!(trace, config.generate(7).unwrap()); // seeded
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GeneratorConfig {
    /// Length of the run, seconds.
    pub duration_secs: f64,
    /// Mean arrival rate before bursts, requests per second.
    pub mean_rps: f64,
    /// Relative swing of the daily shape, in [0, 1).
    pub daily_amplitude: f64,
    /// Period of the daily shape, seconds (the whole run by default: a day compressed).
    pub daily_period_secs: f64,
    /// Coefficient of variation of inter-arrival times (1: Poisson).
    pub arrival_cv: f64,
    /// Expected bursts per hour.
    pub bursts_per_hour: f64,
    /// Rate multiplier inside a burst.
    pub burst_multiplier: f64,
    /// Length of a burst, seconds.
    pub burst_secs: f64,
    /// Median prompt length, tokens.
    pub input_median_tokens: f64,
    /// Log-normal shape (σ of the log) of prompt lengths.
    pub input_sigma: f64,
    /// Median output length, tokens.
    pub output_median_tokens: f64,
    /// Log-normal shape of output lengths.
    pub output_sigma: f64,
    /// Longest prompt, tokens.
    pub max_input_tokens: u32,
    /// Longest output, tokens.
    pub max_output_tokens: u32,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            duration_secs: 3600.0,
            mean_rps: 80.0,
            daily_amplitude: 0.6,
            daily_period_secs: 3600.0,
            arrival_cv: 1.2,
            bursts_per_hour: 3.0,
            burst_multiplier: 1.2,
            burst_secs: 240.0,
            input_median_tokens: 900.0,
            input_sigma: 0.8,
            output_median_tokens: 150.0,
            output_sigma: 0.8,
            max_input_tokens: 16_000,
            max_output_tokens: 2_000,
        }
    }
}

impl GeneratorConfig {
    fn check(&self) -> Result<(), TraceError> {
        let bad = |what: &'static str, expected: &'static str, value: f64| {
            Err(TraceError::BadTransform { what, expected, value })
        };
        let positive = |v: f64| v.is_finite() && v > 0.0;
        if !(positive(self.duration_secs) && self.duration_secs <= 30.0 * 86_400.0) {
            return bad("the generator duration", "in (0, 30 days] seconds", self.duration_secs);
        }
        if !(positive(self.mean_rps) && self.mean_rps <= 100_000.0) {
            return bad("the generator mean rate", "in (0, 100000] requests/s", self.mean_rps);
        }
        if !(self.daily_amplitude.is_finite() && (0.0..1.0).contains(&self.daily_amplitude)) {
            return bad("the daily amplitude", "in [0, 1)", self.daily_amplitude);
        }
        if !positive(self.daily_period_secs) {
            return bad("the daily period", "a positive number of seconds", self.daily_period_secs);
        }
        if !(positive(self.arrival_cv) && self.arrival_cv <= 10.0) {
            return bad("the arrival CV", "in (0, 10]", self.arrival_cv);
        }
        if !(self.bursts_per_hour.is_finite() && self.bursts_per_hour >= 0.0) {
            return bad("bursts per hour", "a number >= 0", self.bursts_per_hour);
        }
        if !(self.burst_multiplier.is_finite() && self.burst_multiplier >= 1.0) {
            return bad("the burst multiplier", "a number >= 1", self.burst_multiplier);
        }
        if !positive(self.burst_secs) {
            return bad("the burst length", "a positive number of seconds", self.burst_secs);
        }
        for (what, v) in [
            ("the median prompt length", self.input_median_tokens),
            ("the median output length", self.output_median_tokens),
        ] {
            if !(v.is_finite() && v >= 1.0) {
                return bad(what, "at least 1 token", v);
            }
        }
        for (what, v) in [("the prompt-length sigma", self.input_sigma), ("the output-length sigma", self.output_sigma)]
        {
            if !(v.is_finite() && v > 0.0 && v <= 5.0) {
                return bad(what, "in (0, 5]", v);
            }
        }
        if self.max_input_tokens == 0 || self.max_output_tokens == 0 {
            return bad("the longest prompt/output", "at least 1 token", 0.0);
        }
        Ok(())
    }

    /// The arrival rate at `t` without bursts.
    #[must_use]
    pub fn base_rate(&self, t: f64) -> f64 {
        let phase = std::f64::consts::TAU * t / self.daily_period_secs - std::f64::consts::FRAC_PI_2;
        self.mean_rps * (1.0 + self.daily_amplitude * phase.sin())
    }

    /// Generates a trace, seeded.
    ///
    /// # Errors
    /// [`TraceError::BadTransform`] for a setting out of range, [`TraceError::Empty`] if
    /// no request arrives.
    pub fn generate(&self, seed: u64) -> Result<Trace, TraceError> {
        self.check()?;
        let mut rng = SimRng::stream(seed, 0x0067_656e);
        // Bursts: Poisson starts over the run.
        let mut bursts = Vec::new();
        if self.bursts_per_hour > 0.0 {
            let mut t = rng.exponential(3600.0 / self.bursts_per_hour);
            while t < self.duration_secs {
                bursts.push(t);
                t += rng.exponential(3600.0 / self.bursts_per_hour);
            }
        }
        // The cumulative rate Λ on a 1-second grid, to warp a unit-rate renewal process.
        let seconds = self.duration_secs.ceil() as usize;
        let mut cumulative = Vec::with_capacity(seconds + 1);
        cumulative.push(0.0);
        let mut total = 0.0;
        for s in 0..seconds {
            let mid = s as f64 + 0.5;
            let in_burst = bursts.iter().any(|&b| mid >= b && mid < b + self.burst_secs);
            total += self.base_rate(mid) * if in_burst { self.burst_multiplier } else { 1.0 };
            cumulative.push(total);
        }
        let shape = 1.0 / (self.arrival_cv * self.arrival_cv);
        let input =
            LogNormal::new(self.input_median_tokens.ln(), self.input_sigma).map_err(|_| TraceError::BadTransform {
                what: "the prompt-length distribution",
                expected: "valid",
                value: self.input_sigma,
            })?;
        let output = LogNormal::new(self.output_median_tokens.ln(), self.output_sigma).map_err(|_| {
            TraceError::BadTransform {
                what: "the output-length distribution",
                expected: "valid",
                value: self.output_sigma,
            }
        })?;
        let mut requests = Vec::with_capacity(total as usize + 16);
        let mut operational = rng.gamma(shape, 1.0 / shape);
        let mut second = 0usize;
        while operational < total {
            while cumulative[second + 1] < operational {
                second += 1;
            }
            let (lo, hi) = (cumulative[second], cumulative[second + 1]);
            let arrival_secs = (second as f64 + (operational - lo) / (hi - lo).max(1e-12)).min(self.duration_secs);
            let tokens = |d: &LogNormal, max: u32, u: f64| -> u32 {
                d.inverse_cdf(u.clamp(1e-9, 1.0 - 1e-9)).round().clamp(1.0, f64::from(max)) as u32
            };
            requests.push(TraceRequest {
                arrival_secs,
                input_tokens: tokens(&input, self.max_input_tokens, rng.uniform()),
                output_tokens: tokens(&output, self.max_output_tokens, rng.uniform()),
            });
            operational += rng.gamma(shape, 1.0 / shape);
        }
        Trace::from_requests(requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_daily_shape() {
        let c = GeneratorConfig { bursts_per_hour: 0.0, arrival_cv: 1.0, ..GeneratorConfig::default() };
        let t = c.generate(3).unwrap();
        let count = |from: f64, to: f64| {
            t.requests().iter().filter(|r| r.arrival_secs >= from && r.arrival_secs < to).count() as f64
        };
        // Trough at the start, peak in the middle.
        let trough = count(0.0, 300.0) / 300.0;
        let peak = count(1650.0, 1950.0) / 300.0;
        assert!(trough < 0.6 * c.mean_rps, "trough {trough}");
        assert!(peak > 1.4 * c.mean_rps, "peak {peak}");
        assert!(t.requests().iter().all(|r| r.input_tokens >= 1 && r.output_tokens >= 1));
    }

    #[test]
    fn bad_settings_are_named() {
        let e = GeneratorConfig { mean_rps: -1.0, ..GeneratorConfig::default() }.generate(1).unwrap_err();
        assert!(e.to_string().contains("mean rate"), "{e}");
        let e = GeneratorConfig { daily_amplitude: 1.0, ..GeneratorConfig::default() }.generate(1).unwrap_err();
        assert!(e.to_string().contains("amplitude"), "{e}");
    }
}
