//! Which staged files a scan takes, and which it quarantines, decided from
//! the files as listed and the tenant's profile alone (no I/O), so every rule
//! has a unit test here:
//!
//! 1. a settled file (older than `min_file_age_ms`) that is not a regular
//!    file, has a type or size the constraints refuse, or that no pipeline
//!    takes, is quarantined with the rule: these are the only quarantines;
//! 2. the staging quota, oldest files first: a settled file that would bring
//!    staging past `max_staging_bytes` waits until earlier files have left
//!    staging (files still being written count towards it, but are not
//!    judged yet); `mysimbdp stage put` refuses a file beyond the quota;
//! 3. this run takes the settled files of pipelines that run now (on-arrival
//!    ones at every scan, cron ones when their tick is due), oldest first,
//!    at most `max_files_per_run`; the others wait for a later run. Nothing
//!    in them is wrong: they only arrived together.

use super::constraints::{Violation, check_file, check_staging_total};
use super::manager::DueCron;
use super::staging::StagedFile;
use crate::config::{Profile, Schedule};
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// What one scan does with a tenant's staged files.
#[derive(Debug, Default)]
pub(crate) struct Admission {
    /// Files breaking a rule, with the rule; never ingested.
    pub quarantine: Vec<(StagedFile, Violation)>,
    /// Files this run takes, oldest first.
    pub take: Vec<StagedFile>,
    /// Settled files that pass every rule but wait (for a later run, a cron
    /// tick, room in the quota), with the reason.
    pub waiting: Vec<(StagedFile, String)>,
}

/// Decides on `files` (oldest first, as [`super::staging::list`] gives them)
/// at `now`, with the cron pipelines `due` in this run. Files in `claiming`
/// (an earlier run's claim still works on them) count towards the quota,
/// but are neither judged nor taken again.
pub(crate) fn admit(
    profile: &Profile,
    files: Vec<StagedFile>,
    now: SystemTime,
    min_age: Duration,
    due: &DueCron,
    claiming: &HashSet<PathBuf>,
) -> Admission {
    let mut admission = Admission::default();

    // Rules each file can break alone.
    let mut kept = Vec::new();
    for file in files {
        let settled = now.duration_since(file.modified).unwrap_or_default() >= min_age;
        if !settled || claiming.contains(&file.path) {
            kept.push((file, false));
            continue;
        }
        match file_violation(profile, &file) {
            Some(violation) => admission.quarantine.push((file, violation)),
            None => kept.push((file, true)),
        }
    }

    // The staging quota: oldest files fit first; the others wait for room.
    let mut total = 0;
    let mut within = Vec::new();
    for (file, settled) in kept {
        total += file.bytes;
        match check_staging_total(&profile.constraints, total) {
            Some(violation) if settled => {
                total -= file.bytes;
                let reason = format!("{}: it waits until earlier files leave staging (max_staging_bytes)", violation.message());
                admission.waiting.push((file, reason));
            }
            _ => within.push((file, settled)),
        }
    }

    // This run: settled files of pipelines that run now, up to the run limit.
    let limit = profile.constraints.max_files_per_run as usize;
    for file in within.into_iter().filter(|(_, settled)| *settled).map(|(file, _)| file) {
        if let Some(pipeline) = cron_not_due(profile, &file, due) {
            admission.waiting.push((file, format!("pipeline `{pipeline}` runs at its cron ticks: it waits for the next one")));
        } else if admission.take.len() < limit {
            admission.take.push(file);
        } else {
            let reason = format!("this run took {limit} files (max_files_per_run): it waits for the next run, oldest first");
            admission.waiting.push((file, reason));
        }
    }
    admission
}

/// The rule a settled file breaks on its own, if any.
fn file_violation(profile: &Profile, file: &StagedFile) -> Option<Violation> {
    if let Some(kind) = file.special {
        return Some(Violation::new("not-a-regular-file", "a regular file", kind));
    }
    let relative = Path::new(&file.relative);
    check_file(&profile.constraints, relative, file.bytes).or_else(|| {
        profile.batch_pipeline_for(relative).is_none().then(|| {
            let patterns: Vec<&str> = profile.batch.iter().map(|p| p.files.as_str()).collect();
            Violation::new("no-pipeline", if patterns.is_empty() { "none".into() } else { patterns.join(", ") }, &file.relative)
        })
    })
}

/// The cron pipeline that takes `file`, when it is not due in this scan.
fn cron_not_due<'p>(profile: &'p Profile, file: &StagedFile, due: &DueCron) -> Option<&'p str> {
    let pipeline = profile.batch_pipeline_for(Path::new(&file.relative))?;
    match pipeline.schedule.as_ref().unwrap_or(&profile.agreement.schedule) {
        Schedule::OnArrival => None,
        Schedule::Cron(_) => (!due.contains_key(pipeline.name.as_str())).then_some(pipeline.name.as_str()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    const PROFILE: &str = "
constraints: { allowed_types: [csv, ndjson], max_file_bytes: 1000, max_files_per_run: 3, max_staging_bytes: 2500 }
agreement: { max_concurrent_ingestions: 1 }
sandbox: { fuel_per_invocation: 1000000000, memory_bytes: 16MiB, deadline_ms: 1000 }
batch:
  - { name: orders, files: '*.csv' }
  - { name: nightly, files: 'nightly/*.csv', schedule: '0 0 2 * * *' }
";

    fn profile() -> Profile {
        let profile: Profile = crate::config::parse_yaml(Path::new("profile.yaml"), PROFILE).unwrap();
        profile.validate(Path::new("profile.yaml")).unwrap();
        profile
    }

    /// A listed file of `bytes`, modified `age_ms` before [`now`].
    fn file(relative: &str, bytes: u64, age_ms: u64) -> StagedFile {
        StagedFile {
            path: PathBuf::from("/staging").join(relative),
            relative: relative.to_string(),
            bytes,
            modified: now() - Duration::from_millis(age_ms),
            special: None,
        }
    }

    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000)
    }

    const MIN_AGE: Duration = Duration::from_millis(1000);

    /// (file, rule) quarantined and the files taken, by name; the waiting ones are checked apart.
    fn decide(files: Vec<StagedFile>, due: &[&str]) -> (Vec<(String, String)>, Vec<String>) {
        decide_claiming(files, due, &HashSet::new())
    }

    fn decide_claiming(files: Vec<StagedFile>, due: &[&str], claiming: &HashSet<PathBuf>) -> (Vec<(String, String)>, Vec<String>) {
        let due: DueCron = due.iter().map(|name| (name.to_string(), chrono::DateTime::<chrono::Utc>::from(now()))).collect();
        let admission = admit(&profile(), files, now(), MIN_AGE, &due, claiming);
        (
            admission.quarantine.into_iter().map(|(f, v)| (f.relative, v.rule)).collect(),
            admission.take.into_iter().map(|f| f.relative).collect(),
        )
    }

    fn names(names: &[&str]) -> Vec<String> {
        names.iter().map(|n| n.to_string()).collect()
    }

    fn rules(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(f, r)| (f.to_string(), r.to_string())).collect()
    }

    #[test]
    fn each_file_rule_quarantines_with_its_rule() {
        let mut link = file("link.csv", 10, 5000);
        link.special = Some("symbolic link");
        let cases: Vec<(StagedFile, Option<&str>)> = vec![
            (file("a.csv", 100, 5000), None),
            (file("notes.txt", 100, 5000), Some("file-type")),
            (file("NOEXT", 100, 5000), Some("file-type")),
            (file("big.csv", 1001, 5000), Some("max-file-bytes")),
            (file("limit.csv", 1000, 5000), None),
            (file("readings.ndjson", 100, 5000), Some("no-pipeline")),
            (file("sub/a.csv", 100, 5000), Some("no-pipeline")),
            (link, Some("not-a-regular-file")),
        ];
        for (staged, rule) in cases {
            let name = staged.relative.clone();
            let (quarantined, taken) = decide(vec![staged], &[]);
            match rule {
                Some(rule) => assert_eq!((quarantined, taken), (rules(&[(&name, rule)]), vec![]), "{name}"),
                None => assert_eq!((quarantined, taken), (vec![], names(&[&name])), "{name}"),
            }
        }
    }

    #[test]
    fn files_still_being_written_are_neither_judged_nor_taken() {
        let (quarantined, taken) = decide(vec![file("young.txt", 5000, 999), file("young.csv", 10, 0)], &[]);
        assert_eq!((quarantined, taken), (vec![], vec![]));
        let (_, taken) = decide(vec![file("settled.csv", 10, 1000)], &[]);
        assert_eq!(taken, names(&["settled.csv"]), "settled at exactly min_file_age_ms");
    }

    /// The files that wait, by name, and a word of each reason.
    fn waiting(files: Vec<StagedFile>, due: &[&str]) -> Vec<(String, String)> {
        let due: DueCron = due.iter().map(|name| (name.to_string(), chrono::DateTime::<chrono::Utc>::from(now()))).collect();
        let admission = admit(&profile(), files, now(), MIN_AGE, &due, &HashSet::new());
        admission.waiting.into_iter().map(|(f, reason)| (f.relative, reason)).collect()
    }

    #[test]
    fn the_staging_quota_lets_the_oldest_files_fit_first_and_the_others_wait() {
        // 2500 bytes allowed: 900 + 900 fit, the third would make 2700.
        let files = || vec![file("1.csv", 900, 9000), file("2.csv", 900, 8000), file("3.csv", 900, 7000), file("4.csv", 600, 6000)];
        let (quarantined, taken) = decide(files(), &[]);
        assert_eq!(quarantined, vec![], "passing every file rule, nothing is quarantined");
        assert_eq!(taken, names(&["1.csv", "2.csv", "4.csv"]), "a smaller later file still fits");
        let waiting = waiting(files(), &[]);
        assert_eq!(waiting.len(), 1);
        assert_eq!(waiting[0].0, "3.csv");
        assert!(waiting[0].1.contains("max_staging_bytes") && waiting[0].1.contains("2700 bytes"), "{}", waiting[0].1);
        // A file still being written (the newest, so the last listed) counts
        // towards the quota but is not quarantined for it.
        let files = vec![file("old.csv", 900, 9000), file("late.csv", 900, 5000), file("writing.csv", 900, 10)];
        assert_eq!(decide(files, &[]), (vec![], names(&["old.csv", "late.csv"])));
    }

    #[test]
    fn a_run_takes_at_most_max_files_per_run_oldest_first_and_the_rest_wait() {
        let files = || (1..=5).map(|i| file(&format!("{i}.csv"), 10, 10_000 - i * 100)).collect::<Vec<StagedFile>>();
        let (quarantined, taken) = decide(files(), &[]);
        assert_eq!(taken, names(&["1.csv", "2.csv", "3.csv"]));
        assert_eq!(quarantined, vec![], "files that only arrived together are never quarantined");
        let waiting = waiting(files(), &[]);
        assert_eq!(waiting.iter().map(|(f, _)| f.as_str()).collect::<Vec<_>>(), ["4.csv", "5.csv"]);
        assert!(waiting.iter().all(|(_, r)| r.contains("max_files_per_run") && r.contains("next run")), "{waiting:?}");
    }

    #[test]
    fn files_an_earlier_claim_works_on_count_for_the_quota_and_are_not_taken_again() {
        let files = || vec![file("1.csv", 900, 9000), file("2.csv", 900, 8000), file("3.csv", 900, 7000)];
        let claiming: HashSet<PathBuf> = [PathBuf::from("/staging/1.csv")].into_iter().collect();
        let (quarantined, taken) = decide_claiming(files(), &[], &claiming);
        assert_eq!(taken, names(&["2.csv"]), "1.csv still counts: 3.csv does not fit");
        assert_eq!(quarantined, vec![]);
    }

    #[test]
    fn cron_pipelines_take_their_files_only_when_due() {
        let files = || vec![file("nightly/a.csv", 10, 5000), file("b.csv", 10, 5000)];
        assert_eq!(decide(files(), &[]), (vec![], names(&["b.csv"])), "not due: the file waits");
        assert!(waiting(files(), &[])[0].1.contains("cron tick"));
        assert_eq!(decide(files(), &["nightly"]), (vec![], names(&["nightly/a.csv", "b.csv"])));
        assert_eq!(decide(files(), &["orders"]).1, names(&["b.csv"]), "another pipeline's tick does not take it");
    }
}
