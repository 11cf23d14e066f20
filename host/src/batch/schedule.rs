//! When batch work runs, as pure decisions with their unit tests: which cron
//! ticks are due (a host that wakes late runs once for the ticks it missed,
//! under the earliest of them, and never before a tick), and which tenant's
//! file a free worker takes (the highest `priority + waited / aging` among
//! tenants below their concurrency cap, so a low priority is never starved;
//! a tenant whose files are still being claimed takes part, so a claim that
//! takes longer does not lose its tenant its turn).

use super::manager::DueCron;
use crate::config::{Profile, Schedule};
use chrono::{DateTime, Utc};
use std::collections::HashMap;
use std::time::Duration;

/// The cron pipelines of `profile` whose tick has come at `now`, each with
/// the tick it is due at; `next` (each pipeline's next tick, kept between
/// calls) moves on to the first tick after `now`. A pipeline seen for the
/// first time gets its first tick after `now`.
pub(super) fn due_ticks(profile: &Profile, next: &mut HashMap<String, DateTime<Utc>>, now: DateTime<Utc>) -> DueCron {
    let mut due = DueCron::new();
    for pipeline in &profile.batch {
        let Schedule::Cron(cron) = pipeline.schedule.as_ref().unwrap_or(&profile.agreement.schedule) else { continue };
        let name = pipeline.name.to_string();
        let tick = *next.entry(name.clone()).or_insert_with(|| cron.after(&now).next().unwrap_or(now));
        if tick <= now {
            due.insert(name.clone(), tick);
            next.insert(name, cron.after(&now).next().unwrap_or(now + chrono::Duration::days(365)));
        }
    }
    due
}

/// A tenant with a file waiting for a worker.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Waiting<K> {
    pub tenant: K,
    pub priority: u8,
    /// Its ingestions running now, and how many it may run at once.
    pub running: usize,
    pub cap: u32,
    /// Since its first waiting file was queued, or since it was last served
    /// if that was later: a tenant served again and again does not age.
    pub waited: Duration,
    /// Whether a file is queued; `false` while its files are still being
    /// claimed (hashed, recorded).
    pub queued: bool,
}

/// What a free worker does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Next<K> {
    /// Takes this tenant's next file.
    Run(K),
    /// Waits: the tenant that goes next is still claiming its files.
    WaitFor(K),
}

/// How long a tenant's head file counts as having waited at `now`: since it
/// was queued, or since the tenant was last served if that was later, so a
/// tenant served again and again does not age.
pub(super) fn waited_since<T: Copy + Ord>(queued_at: T, last_served: Option<T>) -> T {
    match last_served {
        Some(served) => served.max(queued_at),
        None => queued_at,
    }
}

/// The tenant whose file goes next: below its cap, with the highest
/// `priority + waited / aging`; on a tie, the one that waited longer, then
/// the one whose file is queued.
pub(super) fn pick<K: Clone>(waiting: &[Waiting<K>], aging: Duration) -> Option<Next<K>> {
    let aging = aging.max(Duration::from_millis(1)).as_secs_f64();
    waiting
        .iter()
        .filter(|w| w.running < w.cap as usize)
        .map(|w| (f64::from(w.priority) + w.waited.as_secs_f64() / aging, w.waited, w.queued, w))
        .max_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)).then(a.2.cmp(&b.2)))
        .map(|(_, _, queued, w)| if queued { Next::Run(w.tenant.clone()) } else { Next::WaitFor(w.tenant.clone()) })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    fn profile(schedule: &str) -> Profile {
        let text = format!(
            "constraints: {{ allowed_types: [csv], max_file_bytes: 1000, max_files_per_run: 3, max_staging_bytes: 2500 }}
agreement: {{ max_concurrent_ingestions: 1, schedule: '{schedule}' }}
sandbox: {{ fuel_per_invocation: 1000000000, memory_bytes: 16MiB, deadline_ms: 1000 }}
batch:
  - {{ name: orders, files: '*.csv' }}
  - {{ name: hourly, files: 'h/*.csv', schedule: '0 0 * * * *' }}
"
        );
        crate::config::parse_yaml(Path::new("profile.yaml"), &text).unwrap()
    }

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn cron_ticks_fire_at_their_time_and_a_late_host_runs_once_under_the_earliest() {
        let profile = profile("*/15 * * * * *"); // orders every 15 s; hourly at minute 0
        let mut next = HashMap::new();
        // (now, expected due pipelines with their ticks)
        let steps: Vec<(&str, Vec<(&str, &str)>)> = vec![
            ("2026-12-01T10:59:50Z", vec![]), // first look: ticks at 11:00:00 for both
            ("2026-12-01T10:59:59Z", vec![]), // never before the tick
            ("2026-12-01T11:00:00Z", vec![("orders", "11:00:00"), ("hourly", "11:00:00")]), // at the tick
            ("2026-12-01T11:00:01Z", vec![]), // done until the next one
            ("2026-12-01T11:00:16Z", vec![("orders", "11:00:15")]), // a second late: still that tick
            ("2026-12-01T11:02:07Z", vec![("orders", "11:00:30")]), // slept through 7 ticks: once, the earliest
            ("2026-12-01T11:02:10Z", vec![]), // the next tick is after the wake-up
            ("2026-12-01T11:02:15Z", vec![("orders", "11:02:15")]),
            ("2026-12-01T13:30:00Z", vec![("orders", "11:02:30"), ("hourly", "12:00:00")]), // hourly missed two: once
        ];
        for (now, expected) in steps {
            let due = due_ticks(&profile, &mut next, at(now));
            let mut got: Vec<(String, String)> = due.into_iter().map(|(p, t)| (p, t.format("%H:%M:%S").to_string())).collect();
            got.sort();
            let mut expected: Vec<(String, String)> = expected.into_iter().map(|(p, t)| (p.to_string(), t.to_string())).collect();
            expected.sort();
            assert_eq!(got, expected, "at {now}");
        }
    }

    #[test]
    fn on_arrival_pipelines_have_no_ticks() {
        let profile = profile("on-arrival");
        let mut next = HashMap::new();
        assert!(due_ticks(&profile, &mut next, at("2026-12-01T10:59:00Z")).is_empty());
        let due = due_ticks(&profile, &mut next, at("2026-12-01T11:00:00Z"));
        assert_eq!(due.keys().collect::<Vec<_>>(), ["hourly"], "only the pipeline with its own cron schedule");
    }

    fn waiting(tenant: &'static str, priority: u8, running: usize, cap: u32, waited_s: u64) -> Waiting<&'static str> {
        Waiting { tenant, priority, running, cap, waited: Duration::from_secs(waited_s), queued: true }
    }

    fn claiming(tenant: &'static str, priority: u8) -> Waiting<&'static str> {
        Waiting { queued: false, ..waiting(tenant, priority, 0, 1, 0) }
    }

    fn run(tenant: &'static str) -> Option<Next<&'static str>> {
        Some(Next::Run(tenant))
    }

    #[test]
    fn the_next_file_is_the_highest_priority_aged_by_waiting() {
        let aging = Duration::from_secs(30); // 30 s of waiting is one point of priority
        type Case = (Vec<Waiting<&'static str>>, Option<Next<&'static str>>);
        let cases: Vec<Case> = vec![
            (vec![], None),
            (vec![waiting("a", 5, 0, 1, 0)], run("a")),
            (vec![waiting("low", 3, 0, 1, 0), waiting("high", 8, 0, 1, 0)], run("high")),
            // 5 points of priority are 150 s of waiting: just under, just over.
            (vec![waiting("low", 3, 0, 1, 149), waiting("high", 8, 0, 1, 0)], run("high")),
            (vec![waiting("low", 3, 0, 1, 151), waiting("high", 8, 0, 1, 0)], run("low")),
            // At its cap a tenant waits, whatever its priority.
            (vec![waiting("low", 1, 0, 1, 0), waiting("high", 10, 2, 2, 999)], run("low")),
            (vec![waiting("full", 10, 1, 1, 0)], None),
            // Equal scores: the one that waited longer.
            (vec![waiting("a", 5, 0, 1, 30), waiting("b", 6, 0, 1, 0)], run("a")),
            (vec![waiting("a", 5, 0, 4, 10), waiting("b", 5, 3, 4, 20)], run("b")),
            // A higher priority still claiming its files goes next: the worker waits for it...
            (vec![waiting("low", 3, 0, 1, 0), claiming("high", 8)], Some(Next::WaitFor("high"))),
            // ...but not for a lower one, nor once the low one has aged past it.
            (vec![waiting("high", 8, 0, 1, 0), claiming("low", 3)], run("high")),
            (vec![waiting("low", 3, 0, 1, 151), claiming("high", 8)], run("low")),
            // Equal scores: the queued one.
            (vec![claiming("a", 5), waiting("b", 5, 0, 1, 0)], run("b")),
        ];
        for (candidates, expected) in cases {
            assert_eq!(pick(&candidates, aging), expected, "{candidates:?}");
        }
    }

    #[test]
    fn a_zero_aging_counts_as_a_millisecond() {
        let candidates = [waiting("low", 1, 0, 1, 1), waiting("high", 10, 0, 1, 0)];
        assert_eq!(pick(&candidates, Duration::ZERO), run("low"), "1 s of waiting is 1000 points");
    }

    #[test]
    fn waiting_counts_from_the_queueing_or_from_the_last_service_whichever_is_later() {
        // (queued at, last served, counts from)
        let cases = [(10, None, 10), (10, Some(4), 10), (10, Some(10), 10), (10, Some(15), 15)];
        for (queued_at, last_served, expected) in cases {
            assert_eq!(waited_since(queued_at, last_served), expected, "queued at {queued_at}, last served {last_served:?}");
        }
    }
}
