//! When the host cannot write (a full disk, a quota, a read-only or failing
//! device), it stops, loudly, instead of going on as if it had: a tenant
//! whose manifest or store write failed takes no more files (they wait in
//! staging), an outcome it could not record waits in `work/` with its file,
//! and the health route, a metric (`mysimbdp_writes_failing`), the platform
//! log and the host's own log say why. At every scan the host probes the
//! directory that failed; once a write succeeds there it records what
//! waited, moves those files on, and takes files again by itself.

use super::manifest::Entry;
use chrono::{DateTime, Utc};
use std::path::{Path, PathBuf};

/// What could not be written, for one tenant.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct WriteStop {
    /// `manifest` or `store`.
    pub what: String,
    /// The error, without paths (it goes to the health route too).
    pub error: String,
    pub since: DateTime<Utc>,
    /// The directory probed to know when writes succeed again.
    #[serde(skip)]
    pub probe: PathBuf,
}

/// Where a file goes once the outcome recorded for it is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Then {
    Archive,
    Fail,
}

/// An outcome that could not be recorded yet: its entry, and what to do with
/// the file (kept in `work/` until then) once it is.
#[derive(Debug, Clone)]
pub(super) struct Unrecorded {
    pub entry: Entry,
    pub then: Then,
    /// For a failure: its kind and message (the reason file's).
    pub failure: Option<(String, String)>,
}

/// Whether an error (an `io::Error`'s text, or a sink error's) means the
/// host could not write to its own disk: no space, a quota, a read-only or
/// failing device. Those stop a tenant's claims; other errors do not.
pub(super) fn is_disk_write_failure(error: &str) -> bool {
    const SIGNS: [&str; 8] = [
        "No space left on device",
        "os error 28",
        "Disk quota exceeded",
        "os error 122",
        "Read-only file system",
        "os error 30",
        "Input/output error",
        "os error 5)",
    ];
    SIGNS.iter().any(|sign| error.contains(sign))
}

/// The error as the health route may show it: the operating system's words
/// without the path before them.
pub(super) fn without_paths(error: &str) -> String {
    match error.rfind(": ") {
        Some(at) if error[..at].contains('/') => error[at + 2..].to_string(),
        _ => error.to_string(),
    }
}

/// Tries a write in `dir`: whether the host can write there again.
pub(super) fn probe(dir: &Path) -> std::io::Result<()> {
    crate::framed::probe_dir(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn disk_write_failures_are_told_from_other_errors() {
        let cases = [
            ("cannot write /var/manifests/retail.jsonl: No space left on device (os error 28)", true),
            ("embedded store: commit: An IO error occurred: 'No space left on device (os error 28)'", true),
            ("Disk quota exceeded (os error 122)", true),
            ("Read-only file system (os error 30)", true),
            ("Input/output error (os error 5)", true),
            ("elasticsearch: bulk at http://127.0.0.1:9200: HTTP 429 Too Many Requests", false),
            ("kafka: publish to t.readings: Message timed out", false),
            ("Permission denied (os error 13)", false),
            ("os error 55)", false),
        ];
        for (error, expected) in cases {
            assert_eq!(is_disk_write_failure(error), expected, "{error}");
        }
    }

    #[test]
    fn paths_are_left_out_of_what_the_health_route_shows() {
        assert_eq!(
            without_paths("/var/manifests/retail.jsonl: No space left on device (os error 28)"),
            "No space left on device (os error 28)"
        );
        assert_eq!(without_paths("No space left on device (os error 28)"), "No space left on device (os error 28)");
        assert_eq!(without_paths("embedded store: commit: failed"), "embedded store: commit: failed");
    }

    #[test]
    fn a_probe_writes_and_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        probe(dir.path()).unwrap();
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(probe(&dir.path().join("missing")).is_err());
    }
}
