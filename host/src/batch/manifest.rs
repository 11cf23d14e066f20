//! The durable record of what happened to each staged file, per tenant:
//! `<data_dir>/manifests/<tenant>.jsonl`, one JSON line per state change, fsync'd
//! before the host acts on it. After a crash the host replays it: claimed or
//! ingesting files are ingested again (document ids are deterministic, so a
//! re-run overwrites), and done checksums are never ingested twice.

use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileState {
    /// Taken from staging into `work/`, waiting for a worker.
    Claimed,
    Ingesting,
    /// Ingested; the file went to `archive/` (or was deleted).
    Done,
    /// The pipeline or a sink failed; the file is in `failed/`.
    Failed,
    /// Same checksum as a file already done; not ingested again.
    Duplicate,
    /// Sent back to staging by `mysimbdp batch retry`.
    Retried,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Entry {
    /// Unique per claim: the same name staged twice gets two ids.
    pub id: String,
    pub state: FileState,
    /// Path relative to the staging directory.
    pub file: String,
    pub pipeline: String,
    pub checksum: String,
    pub bytes: u64,
    pub ts: chrono::DateTime<chrono::Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The cron tick whose run took the file; none for on-arrival pipelines.
    /// A run the host started late (busy, suspended) still names the tick it
    /// was due at.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tick: Option<chrono::DateTime<chrono::Utc>>,
}

impl Entry {
    /// Where the file waits and is read from while claimed.
    pub fn work_path(&self, work_dir: &Path) -> PathBuf {
        let name = Path::new(&self.file).file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        work_dir.join(format!("{}-{name}", self.id))
    }
}

pub struct Manifest {
    path: PathBuf,
    file: Mutex<File>,
}

impl Manifest {
    /// Opens the manifest, compacting it to the latest entry per file; returns
    /// those entries.
    pub fn open(path: &Path) -> std::io::Result<(Manifest, Vec<Entry>)> {
        let latest = read_latest(path)?;
        let entries: Vec<Entry> = latest.into_values().collect();
        // Rewrite compacted: a crash mid-way leaves the old file in place.
        let temporary = path.with_extension("jsonl.tmp");
        {
            let mut out = File::create(&temporary)?;
            for entry in &entries {
                writeln!(out, "{}", serde_json::to_string(entry).expect("serializable"))?;
            }
            out.sync_all()?;
        }
        std::fs::rename(&temporary, path)?;
        let file = OpenOptions::new().append(true).open(path)?;
        Ok((Manifest { path: path.to_path_buf(), file: Mutex::new(file) }, entries))
    }

    /// Appends entries; with `durable`, returns only once they are on disk.
    pub fn record(&self, entries: &[Entry], durable: bool) -> std::io::Result<()> {
        let mut text = String::new();
        for entry in entries {
            text.push_str(&serde_json::to_string(entry).expect("serializable"));
            text.push('\n');
        }
        let mut file = self.file.lock().expect("manifest poisoned");
        file.write_all(text.as_bytes())?;
        if durable {
            file.sync_data()?;
        }
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// The latest entry of each file id, oldest first. A torn last line (a crash
/// while writing) is ignored: its state change had not been acted on.
pub fn read_latest(path: &Path) -> std::io::Result<BTreeMap<String, Entry>> {
    let text = match std::fs::read_to_string(path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(error) => return Err(error),
    };
    let mut latest: BTreeMap<String, Entry> = BTreeMap::new();
    for line in text.lines() {
        if let Ok(entry) = serde_json::from_str::<Entry>(line) {
            latest.insert(entry.id.clone(), entry);
        }
    }
    Ok(latest)
}

/// Pipelines and checksums of the files already ingested: the same content
/// is ingested once per pipeline.
pub fn done_checksums<'e>(entries: impl IntoIterator<Item = &'e Entry>) -> HashSet<(String, String)> {
    entries.into_iter().filter(|e| e.state == FileState::Done).map(|e| (e.pipeline.clone(), e.checksum.clone())).collect()
}

/// A new claim id: time-ordered and unique within the process.
pub fn new_id() -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed) % 10_000;
    format!("{}{n:04}{:05}", chrono::Utc::now().format("%Y%m%dT%H%M%S%3f"), std::process::id() % 100_000)
}
