//! Reconnection delays: exponential with full jitter, reset after a stable period.

use std::time::Duration;

/// Reconnect backoff settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    /// The first retry's ceiling.
    pub min: Duration,
    /// The largest delay.
    pub max: Duration,
    /// A connection that stayed up this long resets the attempt count.
    pub reset_after: Duration,
}

impl Default for Backoff {
    fn default() -> Backoff {
        Backoff {
            min: Duration::from_millis(200),
            max: Duration::from_secs(10),
            reset_after: Duration::from_secs(30),
        }
    }
}

impl Backoff {
    /// The delay before retry number `attempt` (0-based): uniform in `[0, min(max, min·2^attempt)]`
    /// ("full jitter", so a crowd of clients spreads out instead of reconnecting in waves).
    pub fn delay(&self, attempt: u32) -> Duration {
        let min = self.min.as_millis() as u64;
        let cap = min
            .saturating_mul(1u64 << attempt.min(30))
            .min(self.max.as_millis() as u64);
        Duration::from_millis(fastrand::u64(0..=cap))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_jitter_stays_under_a_growing_cap() {
        let b = Backoff {
            min: Duration::from_millis(100),
            max: Duration::from_millis(3000),
            reset_after: Duration::from_secs(1),
        };
        for attempt in 0..50 {
            let cap = (100u64 << attempt.min(30)).min(3000);
            for _ in 0..20 {
                assert!(b.delay(attempt).as_millis() as u64 <= cap);
            }
        }
        let spread: Vec<u64> = (0..500).map(|_| b.delay(8).as_millis() as u64).collect();
        assert!(spread.iter().any(|d| *d < 750) && spread.iter().any(|d| *d > 2250));
    }
}
