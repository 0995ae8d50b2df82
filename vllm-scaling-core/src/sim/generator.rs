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

    /// The log-normal prompt and output length distributions.
    fn length_distributions(&self) -> Result<(LogNormal, LogNormal), TraceError> {
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
        Ok((input, output))
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
        let (input, output) = self.length_distributions()?;
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

/// One window of a rate profile.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateWindow {
    /// Start, seconds from the profile's start.
    pub start_secs: f64,
    /// Length, seconds.
    pub length_secs: f64,
    /// Arrival rate in the window, requests per second.
    pub rps: f64,
    /// Coefficient of variation of inter-arrival times in the window (1: Poisson).
    pub arrival_cv: f64,
}

/// A long-horizon arrival-rate profile, one rate per window (ServeGen's aggregate
/// layout, `../shared/traces/servegen_rate_profiles.csv`:
/// `model,window_start_seconds,window_seconds,total_rps,active_clients,rate_weighted_client_cv`),
/// from which multi-day traces are drawn.
///
/// ```
/// use vllm_scaling_core::sim::{GeneratorConfig, RateProfile};
///
/// let csv = "model,window_start_seconds,window_seconds,total_rps,active_clients,rate_weighted_client_cv\n\
///            m,0,600,10,3,1.0\nm,600,600,30,5,1.5\n";
/// let profile = RateProfile::parse_csv(csv, Some("m")).unwrap();
/// assert_eq!(profile.mean_rps(), 20.0);
/// // Scaled to a mean of 2 req/s: ~1200 + ~3600 / 10 requests.
/// let trace = profile.generate(2.0, &GeneratorConfig::default(), 7).unwrap();
/// assert!((trace.len() as f64 - 2400.0).abs() < 300.0, "{}", trace.len());
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RateProfile {
    /// The `model` the windows belong to.
    pub model: String,
    /// The windows, sorted by start.
    pub windows: Vec<RateWindow>,
}

const RATE_HEADER: [&str; 6] =
    ["model", "window_start_seconds", "window_seconds", "total_rps", "active_clients", "rate_weighted_client_cv"];

impl RateProfile {
    /// Reads the windows of `model` (which may be left out when the file holds one model).
    ///
    /// # Errors
    /// A header that is not ServeGen's, a bad row (by line), an unknown or missing model
    /// name (the file's models are listed), no windows.
    pub fn parse_csv(text: &str, model: Option<&str>) -> Result<Self, TraceError> {
        let mut lines = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty());
        let Some((_, header)) = lines.next() else { return Err(TraceError::Empty) };
        let header = header.trim().trim_start_matches('\u{feff}');
        let fields: Vec<&str> = header.split(',').map(str::trim).collect();
        if fields != RATE_HEADER {
            return Err(TraceError::BadRow {
                line: 1,
                reason: format!("expected the rate-profile header `{}`, found `{header}`", RATE_HEADER.join(",")),
            });
        }
        let mut models: Vec<String> = Vec::new();
        let mut windows = Vec::new();
        for (i, raw) in lines {
            let line = i + 1;
            let bad = |reason: String| TraceError::BadRow { line, reason };
            let f: Vec<&str> = raw.split(',').map(str::trim).collect();
            if f.len() != RATE_HEADER.len() {
                return Err(bad(format!("expected {} comma-separated fields, found {}", RATE_HEADER.len(), f.len())));
            }
            if !models.iter().any(|m| m == f[0]) {
                models.push(f[0].to_owned());
            }
            if model.is_some_and(|m| m != f[0]) {
                continue;
            }
            let num = |k: usize| -> Result<f64, TraceError> {
                f[k].parse::<f64>()
                    .ok()
                    .filter(|v| v.is_finite() && *v >= 0.0)
                    .ok_or_else(|| bad(format!("{} must be a finite number >= 0, got `{}`", RATE_HEADER[k], f[k])))
            };
            let (start_secs, length_secs, rps, cv) = (num(1)?, num(2)?, num(3)?, num(5)?);
            if length_secs <= 0.0 {
                return Err(bad("window_seconds must be greater than 0".to_owned()));
            }
            // A window without clients has no CV (0): arrivals are then Poisson.
            let arrival_cv = if cv > 0.0 { cv.clamp(0.1, 10.0) } else { 1.0 };
            windows.push((f[0].to_owned(), RateWindow { start_secs, length_secs, rps, arrival_cv }));
        }
        let chosen = match model {
            Some(m) => m.to_owned(),
            None if models.len() == 1 => models[0].clone(),
            None => {
                return Err(TraceError::BadRow {
                    line: 1,
                    reason: format!("the file holds several models ({}): choose one", models.join(", ")),
                });
            }
        };
        let mut windows: Vec<RateWindow> = windows.into_iter().filter(|(m, _)| *m == chosen).map(|(_, w)| w).collect();
        if windows.is_empty() {
            return Err(TraceError::BadRow {
                line: 1,
                reason: format!("no windows for model `{chosen}` (the file has: {})", models.join(", ")),
            });
        }
        windows.sort_by(|a, b| a.start_secs.total_cmp(&b.start_secs));
        Ok(Self { model: chosen, windows })
    }

    /// The time-weighted mean rate, requests per second.
    #[must_use]
    pub fn mean_rps(&self) -> f64 {
        let (n, secs) =
            self.windows.iter().fold((0.0, 0.0), |(n, s), w| (n + w.rps * w.length_secs, s + w.length_secs));
        if secs > 0.0 { n / secs } else { 0.0 }
    }

    /// The profile cut to its first `secs` seconds (windows starting later are dropped,
    /// one straddling the end is shortened).
    #[must_use]
    pub fn truncate(&self, secs: f64) -> Self {
        let origin = self.windows.first().map_or(0.0, |w| w.start_secs);
        let windows = self
            .windows
            .iter()
            .filter(|w| w.start_secs - origin < secs)
            .map(|w| RateWindow { length_secs: w.length_secs.min(secs - (w.start_secs - origin)), ..*w })
            .collect();
        Self { model: self.model.clone(), windows }
    }

    /// Draws a trace: in each window, a renewal process of Gamma inter-arrival times with
    /// the window's CV at its rate scaled so the whole profile's mean is `mean_rps`;
    /// token lengths from `lengths`' log-normal distributions. Time starts at the first
    /// window. Seeded.
    ///
    /// # Errors
    /// [`TraceError::BadTransform`] for a mean rate that is not positive or a profile
    /// without traffic, `lengths`' own errors, [`TraceError::Empty`] if nothing arrives.
    pub fn generate(&self, mean_rps: f64, lengths: &GeneratorConfig, seed: u64) -> Result<Trace, TraceError> {
        if !(mean_rps.is_finite() && mean_rps > 0.0 && mean_rps <= 100_000.0) {
            return Err(TraceError::BadTransform {
                what: "the rate profile's mean rate",
                expected: "in (0, 100000] requests/s",
                value: mean_rps,
            });
        }
        let own = self.mean_rps();
        if own <= 0.0 {
            return Err(TraceError::BadTransform {
                what: "the rate profile's own mean rate",
                expected: "> 0",
                value: own,
            });
        }
        lengths.check()?;
        let (input, output) = lengths.length_distributions()?;
        let scale = mean_rps / own;
        let origin = self.windows.first().map_or(0.0, |w| w.start_secs);
        let mut rng = SimRng::stream(seed, 0x7270_726f);
        let tokens = |d: &LogNormal, max: u32, u: f64| -> u32 {
            d.inverse_cdf(u.clamp(1e-9, 1.0 - 1e-9)).round().clamp(1.0, f64::from(max)) as u32
        };
        let expected: f64 = self.windows.iter().map(|w| w.rps * w.length_secs).sum::<f64>() * scale;
        let mut requests = Vec::with_capacity(expected as usize + 16);
        for w in &self.windows {
            let rate = w.rps * scale;
            if rate <= 0.0 {
                continue;
            }
            let shape = 1.0 / (w.arrival_cv * w.arrival_cv);
            let (start, end) = (w.start_secs - origin, w.start_secs - origin + w.length_secs);
            let mut t = start + rng.gamma(shape, 1.0 / (shape * rate));
            while t < end {
                requests.push(TraceRequest {
                    arrival_secs: t,
                    input_tokens: tokens(&input, lengths.max_input_tokens, rng.uniform()),
                    output_tokens: tokens(&output, lengths.max_output_tokens, rng.uniform()),
                });
                t += rng.gamma(shape, 1.0 / (shape * rate));
            }
        }
        Trace::from_requests(requests)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rate_profiles_are_followed_window_by_window() {
        let csv = "model,window_start_seconds,window_seconds,total_rps,active_clients,rate_weighted_client_cv\n\
                   a,0,600,5,1,1.0\nb,0,600,1,1,1.0\na,600,600,0,0,0\na,1200,600,20,9,2.0\n";
        let p = RateProfile::parse_csv(csv, Some("a")).unwrap();
        assert_eq!(p.windows.len(), 3);
        assert!((p.mean_rps() - 25.0 / 3.0).abs() < 1e-9);
        let t = p.generate(25.0 / 3.0, &GeneratorConfig::default(), 1).unwrap();
        let count = |from: f64, to: f64| {
            t.requests().iter().filter(|r| r.arrival_secs >= from && r.arrival_secs < to).count() as f64
        };
        assert!((count(0.0, 600.0) / 600.0 - 5.0).abs() < 0.6, "{}", count(0.0, 600.0));
        assert_eq!(count(600.0, 1200.0), 0.0, "an empty window stays empty");
        assert!((count(1200.0, 1800.0) / 600.0 - 20.0).abs() < 2.5, "{}", count(1200.0, 1800.0));
        // Rescaled: the same shape at a tenth of the rate.
        let tenth = p.generate(25.0 / 30.0, &GeneratorConfig::default(), 1).unwrap();
        assert!((tenth.len() as f64 / t.len() as f64 - 0.1).abs() < 0.02);
        assert_eq!(p.truncate(900.0).windows.len(), 2);
        assert_eq!(p.truncate(900.0).windows[1].length_secs, 300.0);
        // A multi-model file needs a model; unknown ones list what is there.
        let e = RateProfile::parse_csv(csv, None).unwrap_err().to_string();
        assert!(e.contains("several models (a, b)"), "{e}");
        let e = RateProfile::parse_csv(csv, Some("c")).unwrap_err().to_string();
        assert!(e.contains("no windows for model `c`") && e.contains("a, b"), "{e}");
        let e = RateProfile::parse_csv(&csv.replace("0,600,20", "0,600,-20"), Some("a")).unwrap_err().to_string();
        assert!(e.starts_with("line 5:") && e.contains("total_rps"), "{e}");
        assert!(RateProfile::parse_csv("a,b\n", None).unwrap_err().to_string().contains("rate-profile header"));
    }

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
