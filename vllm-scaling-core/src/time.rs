//! Time as a type: the core never reads a clock, every entry point takes `now`.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// A point in time, in whole milliseconds since an epoch the driver chooses.
///
/// The core only ever compares and subtracts timestamps, so any epoch works for a single
/// run. Drivers that persist engine state (the Kubernetes controller writes it into the
/// policy's status) must use the Unix epoch so that a restarted process reads it back
/// correctly. Arithmetic saturates instead of overflowing.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(u64);

impl Timestamp {
    /// The epoch itself.
    pub const ZERO: Self = Self(0);

    /// A timestamp `millis` milliseconds after the epoch.
    #[must_use]
    pub const fn from_millis(millis: u64) -> Self {
        Self(millis)
    }

    /// A timestamp `secs` whole seconds after the epoch (saturating).
    #[must_use]
    pub const fn from_secs(secs: u64) -> Self {
        Self(secs.saturating_mul(1000))
    }

    /// A timestamp from fractional seconds, rounded to the millisecond.
    ///
    /// Returns `None` for negative, NaN or infinite input.
    #[must_use]
    pub fn from_secs_f64(secs: f64) -> Option<Self> {
        if !secs.is_finite() || secs < 0.0 {
            return None;
        }
        let millis = (secs * 1000.0).round();
        if millis >= u64::MAX as f64 {
            return None;
        }
        Some(Self(millis as u64))
    }

    /// Milliseconds since the epoch.
    #[must_use]
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// Seconds since the epoch, fractional.
    #[must_use]
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// `self + d`, saturating at the far future.
    #[must_use]
    pub fn saturating_add(self, d: Duration) -> Self {
        Self(self.0.saturating_add(duration_millis(d)))
    }

    /// `self - d`, saturating at the epoch.
    #[must_use]
    pub fn saturating_sub(self, d: Duration) -> Self {
        Self(self.0.saturating_sub(duration_millis(d)))
    }

    /// How long after `earlier` this is; zero if `earlier` is later.
    #[must_use]
    pub fn saturating_duration_since(self, earlier: Self) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:03}s", self.0 / 1000, self.0 % 1000)
    }
}

fn duration_millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// `now - window` for window comparisons, without saturating at the epoch: with a
/// driver whose clock starts at 0 (scenarios, the simulator), an event at 0 must still be
/// inside a 60 s window at 10 s, exactly as the HPA's wall-clock arithmetic has it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Cutoff(i128);

impl Cutoff {
    /// The instant `window` before `now` (possibly before the epoch).
    pub(crate) fn new(now: Timestamp, window: Duration) -> Self {
        Self(i128::from(now.0) - i128::try_from(window.as_millis()).unwrap_or(i128::MAX / 2))
    }

    /// `ts` is strictly before the cutoff (Go's `ts.Before(cutoff)`).
    pub(crate) fn is_older(self, ts: Timestamp) -> bool {
        i128::from(ts.0) < self.0
    }

    /// `ts` is strictly after the cutoff (Go's `ts.After(cutoff)`).
    pub(crate) fn is_newer(self, ts: Timestamp) -> bool {
        i128::from(ts.0) > self.0
    }
}

/// A source of [`Timestamp`]s, for drivers only: the engine itself never asks for the time.
pub trait Clock: Send + Sync {
    /// The current time.
    fn now(&self) -> Timestamp;
}

/// A clock that moves only when told to, for tests and the simulator.
///
/// Clones share the same time, so a test can hold one and hand another to a driver.
///
/// ```
/// use std::time::Duration;
/// use vllm_scaling_core::{Clock, FakeClock, Timestamp};
///
/// let clock = FakeClock::new(Timestamp::from_secs(10));
/// clock.advance(Duration::from_secs(5));
/// assert_eq!(clock.now(), Timestamp::from_secs(15));
/// ```
#[derive(Clone, Debug, Default)]
pub struct FakeClock {
    millis: Arc<AtomicU64>,
}

impl FakeClock {
    /// A fake clock standing at `start`.
    #[must_use]
    pub fn new(start: Timestamp) -> Self {
        Self { millis: Arc::new(AtomicU64::new(start.as_millis())) }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let step = duration_millis(d);
        // `fetch_update` with saturation: the clock never wraps around.
        let _ = self.millis.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |m| Some(m.saturating_add(step)));
    }

    /// Sets the clock to `t` (which may be earlier: tests of clock skew use that).
    pub fn set(&self, t: Timestamp) {
        self.millis.store(t.as_millis(), Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.millis.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_secs(1);
        assert_eq!(t.saturating_sub(Duration::from_secs(5)), Timestamp::ZERO);
        assert_eq!(Timestamp::from_millis(u64::MAX).saturating_add(Duration::from_secs(1)).as_millis(), u64::MAX);
        assert_eq!(Timestamp::from_secs(3).saturating_duration_since(Timestamp::from_secs(5)), Duration::ZERO);
    }

    #[test]
    fn cutoffs_do_not_saturate_at_the_epoch() {
        let c = Cutoff::new(Timestamp::from_secs(10), Duration::from_secs(60));
        assert!(c.is_newer(Timestamp::ZERO), "an event at 0 is inside a 60 s window at 10 s");
        assert!(!c.is_older(Timestamp::ZERO));
        let c = Cutoff::new(Timestamp::from_secs(300), Duration::from_secs(300));
        assert!(!c.is_newer(Timestamp::ZERO) && !c.is_older(Timestamp::ZERO), "exactly on the cutoff");
    }

    #[test]
    fn from_secs_f64_rejects_bad_values() {
        assert_eq!(Timestamp::from_secs_f64(1.2345), Some(Timestamp::from_millis(1235)));
        assert_eq!(Timestamp::from_secs_f64(-1.0), None);
        assert_eq!(Timestamp::from_secs_f64(f64::NAN), None);
        assert_eq!(Timestamp::from_secs_f64(f64::INFINITY), None);
    }
}
