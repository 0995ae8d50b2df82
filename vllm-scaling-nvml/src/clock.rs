//! [`SystemClock`]: Unix time for drivers.

use vllm_scaling_core::{Clock, Timestamp};

/// A clock on the Unix epoch, for drivers: NVML timestamps its samples in Unix
/// microseconds, so the sampler must be given Unix time.
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
        Timestamp::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }
}
