//! How the host waits before trying again: exponential backoff, doubling
//! from a first wait up to a cap, each wait jittered (slept for somewhere
//! between half of it and all of it), so that the hosts, instances and
//! files that failed in one outage do not all try again at the same moment.
//! Used where a store, the broker or a consumer group failed and the same
//! work is tried again (the stream instances, Elasticsearch's `_bulk`), and
//! when a file or a batch is tried again at all.

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

    /// The waits before the first, second, ... retry, before jitter.
    pub fn waits(&self) -> impl Iterator<Item = Duration> + '_ {
        std::iter::successors(Some(self.first.min(self.max)), |wait| Some(self.after(*wait)))
    }
}

/// How long to sleep for a wait of the schedule, given `unit`, a share in
/// `[0, 1]` drawn at random: between half of the wait and all of it
/// ("equal jitter"), `half + (wait - half) * unit`. Never less than half the
/// backoff, and spread so that the retries of one outage do not arrive in
/// lockstep.
pub fn jittered(wait: Duration, unit: f64) -> Duration {
    let half = wait / 2;
    half + (wait - half).mul_f64(unit.clamp(0.0, 1.0))
}

/// What the retry loops sleep for `wait`: [`jittered`] by a share from the
/// thread's generator.
pub fn sleep_for(wait: Duration) -> Duration {
    jittered(wait, fastrand::f64())
}

/// What a stream instance does after a batch failed in a way that is
/// retried (the batch is never committed meanwhile).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterRetried {
    /// Try again after the next wait of the backoff.
    Retry,
    /// The guest said `unavailable` more than `retries` times in a row:
    /// alert (once, when it starts) and wait the longest wait between tries.
    Stalled { alert: bool },
}

/// The decision after the `in_a_row`-th consecutive `unavailable` of the
/// same batch (0 for a failure of the platform's stores, which is retried
/// with backoff for as long as it lasts).
pub fn after_retried(in_a_row: u32, retries: u32) -> AfterRetried {
    if in_a_row <= retries { AfterRetried::Retry } else { AfterRetried::Stalled { alert: in_a_row == retries + 1 } }
}

/// Whether a file's invocation is run again after one that ended `unavailable`
/// (or not) with `retried` retries done: only a guest's `unavailable`, and
/// at most `retries` times; then the file fails retryably.
pub fn retry_file(unavailable: bool, retried: u32, retries: u32) -> bool {
    unavailable && retried < retries
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_run_again_only_after_an_unavailable_and_only_so_often() {
        let cases = [
            // (unavailable, retries done, retries allowed, run again)
            (true, 0, 3, true),
            (true, 2, 3, true),
            (true, 3, 3, false),
            (true, 7, 3, false),
            (false, 0, 3, false),
            (true, 0, 0, false),
        ];
        for (unavailable, retried, retries, again) in cases {
            assert_eq!(retry_file(unavailable, retried, retries), again, "unavailable {unavailable}, {retried} of {retries} retries");
        }
    }

    #[test]
    fn a_guest_unavailable_again_and_again_stalls_the_stream_and_alerts_once() {
        let cases = [
            // (unavailable in a row, retries allowed, decision)
            (0, 3, AfterRetried::Retry),
            (1, 3, AfterRetried::Retry),
            (3, 3, AfterRetried::Retry),
            (4, 3, AfterRetried::Stalled { alert: true }),
            (5, 3, AfterRetried::Stalled { alert: false }),
            (100, 3, AfterRetried::Stalled { alert: false }),
            (1, 0, AfterRetried::Stalled { alert: true }),
        ];
        for (in_a_row, retries, decision) in cases {
            assert_eq!(after_retried(in_a_row, retries), decision, "{in_a_row} in a row, {retries} retries");
        }
    }

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

    #[test]
    fn a_jittered_wait_is_between_half_and_all_of_it() {
        let cases = [
            // (wait ms, drawn share, slept ms)
            (1000, 0.0, 500),
            (1000, 0.5, 750),
            (1000, 1.0, 1000),
            (30_000, 0.25, 18_750),
            (200, 0.1, 110),
            (0, 0.7, 0),
            // A share out of range is clamped.
            (1000, -3.0, 500),
            (1000, 7.0, 1000),
        ];
        for (wait, unit, slept) in cases {
            assert_eq!(jittered(MS(wait), unit), MS(slept), "{wait} ms at {unit}");
        }
        assert_eq!(jittered(Duration::MAX, 1.0), Duration::MAX, "no overflow");
    }

    #[test]
    fn seeded_jitter_replays_and_spreads_the_retries_of_one_outage() {
        let schedule = Backoff::new(MS(200), MS(2000));
        let run = |seed: u64| -> Vec<Duration> {
            let mut rng = fastrand::Rng::with_seed(seed);
            schedule.waits().take(6).map(|wait| jittered(wait, rng.f64())).collect()
        };
        assert_eq!(run(7), run(7), "the same seed sleeps the same");
        for seed in 0..50 {
            for (slept, wait) in run(seed).into_iter().zip(schedule.waits()) {
                assert!(slept >= wait / 2 && slept <= wait, "seed {seed}: {slept:?} for a wait of {wait:?}");
            }
        }
        // A hundred retriers that failed together: their first retries spread
        // over the window instead of arriving at one instant.
        let first: std::collections::BTreeSet<Duration> = (0..100).map(|seed| run(seed)[0]).collect();
        assert!(first.len() > 90, "{} distinct first waits of 100", first.len());
        let (low, high) = (first.first().unwrap(), first.last().unwrap());
        assert!(*low < MS(120) && *high > MS(180), "spread over [100, 200] ms: {low:?}..{high:?}");
    }
}
