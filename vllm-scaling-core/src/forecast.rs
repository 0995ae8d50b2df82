//! Short-horizon forecasting of a rate (requests per second) for predictive scale-up:
//! an ordinary least-squares line through recent samples, with a one-sided Student-t
//! prediction bound.
//!
//! A line is the right tool for the horizon we need (one cold start: 30 s to a few
//! minutes): over such a span a diurnal curve is locally linear, and the prediction
//! interval widens by itself when the recent history is noisy or short. Seasonal models
//! (Holt-Winters) need whole periods of history (days) that a controller restarted an
//! hour ago does not have.

use statrs::distribution::{ContinuousCDF, StudentsT};

/// A forecast of a rate at some point ahead.
#[derive(Clone, Copy, Debug, PartialEq)]
#[non_exhaustive]
pub struct RateForecast {
    /// How many samples the line was fitted to.
    pub samples: usize,
    /// The fitted slope, in rate units per second.
    pub slope_per_sec: f64,
    /// The fitted line's value now.
    pub fitted_now: f64,
    /// How far ahead `expected` and `upper_bound` look, in seconds (0 or the horizon,
    /// whichever gives the larger bound).
    pub ahead_secs: f64,
    /// The line's value `ahead_secs` from now (never below 0).
    pub expected: f64,
    /// The one-sided upper prediction bound at the requested confidence (never below 0).
    pub upper_bound: f64,
}

/// Fits a line to `points` (`(seconds relative to now, value)`, at least 3 with two
/// distinct times) and returns the highest upper prediction bound over
/// `[now, now + horizon_secs]` at `confidence` (in `[0.5, 1)`).
///
/// The bound for a new observation at `x0` is
/// `ŷ(x0) + t(confidence; n-2) · s · sqrt(1 + 1/n + (x0 - x̄)² / Sxx)`; over an
/// interval its maximum is at one of the two ends, so both are tried.
///
/// `None` when there are too few points, all at one time, or a value is not finite.
///
/// ```
/// use vllm_scaling_core::linear_forecast;
///
/// // A rate climbing 1 request/s every 10 s, sampled every 15 s for 5 minutes.
/// let points: Vec<(f64, f64)> = (0..=20).map(|i| (-300.0 + 15.0 * f64::from(i), 50.0 + 0.1 * 15.0 * f64::from(i))).collect();
/// let f = linear_forecast(&points, 60.0, 0.9).unwrap();
/// assert!((f.expected - 86.0).abs() < 1e-6); // 80 now, +6 over the next minute
/// assert!((f.upper_bound - f.expected).abs() < 1e-6); // a perfect line: no spread
/// ```
#[must_use]
pub fn linear_forecast(points: &[(f64, f64)], horizon_secs: f64, confidence: f64) -> Option<RateForecast> {
    let n = points.len();
    if n < 3 || !horizon_secs.is_finite() || horizon_secs < 0.0 || !(0.5..1.0).contains(&confidence) {
        return None;
    }
    if points.iter().any(|(x, y)| !x.is_finite() || !y.is_finite()) {
        return None;
    }
    let nf = n as f64;
    let mean_x = points.iter().map(|p| p.0).sum::<f64>() / nf;
    let mean_y = points.iter().map(|p| p.1).sum::<f64>() / nf;
    let sxx: f64 = points.iter().map(|p| (p.0 - mean_x).powi(2)).sum();
    if sxx <= 0.0 {
        return None;
    }
    let sxy: f64 = points.iter().map(|p| (p.0 - mean_x) * (p.1 - mean_y)).sum();
    let slope = sxy / sxx;
    let intercept = mean_y - slope * mean_x;
    let sse: f64 = points.iter().map(|p| (p.1 - (intercept + slope * p.0)).powi(2)).sum();
    let dof = nf - 2.0;
    let s = (sse / dof).sqrt();
    let t = StudentsT::new(0.0, 1.0, dof).ok()?.inverse_cdf(confidence);
    let bound_at = |x0: f64| {
        let y = intercept + slope * x0;
        let se = s * (1.0 + 1.0 / nf + (x0 - mean_x).powi(2) / sxx).sqrt();
        (y, y + t * se)
    };
    let (now_y, now_upper) = bound_at(0.0);
    let (far_y, far_upper) = bound_at(horizon_secs);
    let (ahead_secs, expected, upper) =
        if far_upper >= now_upper { (horizon_secs, far_y, far_upper) } else { (0.0, now_y, now_upper) };
    if !upper.is_finite() {
        return None;
    }
    Some(RateForecast {
        samples: n,
        slope_per_sec: slope,
        fitted_now: intercept,
        ahead_secs,
        expected: expected.max(0.0),
        upper_bound: upper.max(0.0),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn too_little_data_gives_nothing() {
        assert_eq!(linear_forecast(&[(0.0, 1.0), (-1.0, 2.0)], 60.0, 0.9), None);
        assert_eq!(linear_forecast(&[(0.0, 1.0), (0.0, 2.0), (0.0, 3.0)], 60.0, 0.9), None);
        assert_eq!(linear_forecast(&[(0.0, f64::NAN), (-1.0, 2.0), (-2.0, 3.0)], 60.0, 0.9), None);
        assert_eq!(linear_forecast(&[(0.0, 1.0), (-1.0, 2.0), (-2.0, 3.0)], 60.0, 1.0), None);
    }

    #[test]
    fn noise_widens_the_bound_and_confidence_raises_it() {
        // Flat at 100 with ±5 alternating noise.
        let pts: Vec<(f64, f64)> =
            (0..40).map(|i| (-15.0 * f64::from(i), if i % 2 == 0 { 105.0 } else { 95.0 })).collect();
        let f90 = linear_forecast(&pts, 60.0, 0.9).unwrap();
        let f99 = linear_forecast(&pts, 60.0, 0.99).unwrap();
        assert!((f90.expected - 100.0).abs() < 2.0, "{f90:?}");
        assert!(f90.upper_bound > f90.expected + 5.0, "{f90:?}");
        assert!(f99.upper_bound > f90.upper_bound, "{f99:?} vs {f90:?}");
        // The median bound is the line itself.
        let f50 = linear_forecast(&pts, 60.0, 0.5).unwrap();
        assert!((f50.upper_bound - f50.expected).abs() < 1e-9);
    }

    #[test]
    fn a_falling_rate_is_bounded_by_now_not_the_future() {
        let pts: Vec<(f64, f64)> = (0..10).map(|i| (-10.0 * f64::from(i), 10.0 + f64::from(i))).collect();
        let f = linear_forecast(&pts, 120.0, 0.9).unwrap();
        assert_eq!(f.ahead_secs, 0.0);
        assert!((f.expected - 10.0).abs() < 1e-9, "{f:?}");
    }
}
