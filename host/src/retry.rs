//! How the host waits before trying again: exponential backoff, doubling
//! from a first wait up to a cap. Used where a store, the broker or a
//! consumer group failed and the same work is tried again (the stream
//! instances, Elasticsearch's `_bulk`).

use std::time::Duration;

/// Waits that double from `first` and never exceed `max`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, max: Duration) -> Backoff {
        Backoff { first, max }
    }

    /// The wait after one of `current`.
    pub fn after(&self, current: Duration) -> Duration {
        current.saturating_mul(2).min(self.max)
    }

    /// The waits before the first, second, ... retry.
    pub fn waits(&self) -> impl Iterator<Item = Duration> + '_ {
        std::iter::successors(Some(self.first.min(self.max)), |wait| Some(self.after(*wait)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: fn(u64) -> Duration = Duration::from_millis;

    #[test]
    fn waits_double_up_to_the_cap_and_stay_there() {
        let cases: [(Backoff, &[u64]); 3] = [
            (Backoff::new(MS(500), MS(30_000)), &[500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000]),
            (Backoff::new(MS(100), MS(5000)), &[100, 200, 400, 800, 1600, 3200, 5000, 5000]),
            // A first wait above the cap is the cap.
            (Backoff::new(MS(9000), MS(5000)), &[5000, 5000, 5000]),
        ];
        for (backoff, expected) in cases {
            let waits: Vec<u64> = backoff.waits().take(expected.len()).map(|w| w.as_millis() as u64).collect();
            assert_eq!(waits, expected, "{backoff:?}");
        }
        assert_eq!(Backoff::new(MS(1), Duration::MAX).after(Duration::MAX), Duration::MAX, "no overflow");
    }
}
