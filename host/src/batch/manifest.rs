//! The durable record of what happened to each staged file, per tenant:
//! `<data_dir>/manifests/<tenant>.jsonl`, one framed record (a JSON entry
//! with its length and checksum, [`crate::framed`]) per state change, fsync'd
//! before the host acts on it. After a crash the host replays it: claimed or
//! ingesting files are ingested again (document ids are deterministic, so a
//! re-run overwrites), and done checksums are never ingested twice.

use crate::framed;
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
    writer: Mutex<Writer>,
}

struct Writer {
    file: File,
    /// Bytes of whole records: a failed append is cut back to this.
    len: u64,
}

impl Manifest {
    /// Opens the manifest: a record cut by a crash or a full disk at its end
    /// is cut off (it was never acknowledged), a manifest of JSON lines (as
    /// written before records were framed) read and migrated, damage with
    /// records after it an error naming the file. Then compacts it to the
    /// latest entry per file, and returns those entries.
    pub fn open(path: &Path) -> std::io::Result<(Manifest, Vec<Entry>)> {
        let entries: Vec<Entry> = read(path, Read::Recover)?.into_values().collect();
        // Rewritten compacted and framed, atomically: a crash leaves the old file in place.
        let payloads: Vec<Vec<u8>> = entries.iter().map(|e| serde_json::to_vec(e).expect("serializable")).collect();
        framed::rewrite(path, payloads.iter().map(Vec::as_slice))?;
        let file = OpenOptions::new().append(true).open(path)?;
        let len = file.metadata()?.len();
        Ok((Manifest { path: path.to_path_buf(), writer: Mutex::new(Writer { file, len }) }, entries))
    }

    /// Appends entries, one framed record each; with `durable`, returns only
    /// once they are on disk. A failed write (a full disk) is undone, so the
    /// manifest holds only whole records and the next append follows them.
    pub fn record(&self, entries: &[Entry], durable: bool) -> std::io::Result<()> {
        let mut bytes = Vec::new();
        for entry in entries {
            bytes.extend_from_slice(&framed::frame(&serde_json::to_vec(entry).expect("serializable")));
        }
        let mut writer = self.writer.lock().expect("manifest poisoned");
        let writer = &mut *writer;
        let written = writer.file.write_all(&bytes).and_then(|()| if durable { writer.file.sync_data() } else { Ok(()) });
        if let Err(error) = written {
            if let Err(undo) = writer.file.set_len(writer.len) {
                tracing::error!(file = %self.path.display(), %undo, "Cannot undo a failed manifest write; it is cut off at the next start.");
            }
            return Err(error);
        }
        writer.len += bytes.len() as u64;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// How [`read`] treats what is no whole record at the end of the file.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Read {
    /// The host opening its manifest: cut it off (and say so).
    Recover,
    /// Anyone else (`batch status`): leave it, it may be a write in progress.
    Look,
}

/// Every entry of the manifest, in the order written (a record being
/// written at the end is not read), for tools and tests.
pub fn read_entries(path: &Path) -> std::io::Result<Vec<Entry>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error),
    };
    parse_entries(path, &bytes)
}

/// The entries in `bytes`, the content of the manifest at `path`
/// (framed records, or the JSON lines of an older host).
pub fn parse_entries(path: &Path, bytes: &[u8]) -> std::io::Result<Vec<Entry>> {
    if !framed::is_framed(bytes) {
        return Ok(legacy_lines(path, bytes));
    }
    let records = framed::read(path, bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
    records
        .payloads
        .iter()
        .map(|p| serde_json::from_slice::<Entry>(p).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)))
        .collect()
}

/// The latest entry of each file id, oldest first. A record being written
/// (or cut by a crash) at the end is not read: its state change had not
/// been acted on.
pub fn read_latest(path: &Path) -> std::io::Result<BTreeMap<String, Entry>> {
    read(path, Read::Look)
}

fn read(path: &Path, how: Read) -> std::io::Result<BTreeMap<String, Entry>> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(error),
    };
    let entries = if framed::is_framed(&bytes) {
        let records = match how {
            Read::Recover => framed::recover(path)?,
            Read::Look => framed::read(path, &bytes).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?,
        };
        let parsed: Result<Vec<Entry>, _> = records.payloads.iter().map(|p| serde_json::from_slice::<Entry>(p)).collect();
        parsed.map_err(|e| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, format!("{}: a manifest record is not an entry: {e}", path.display()))
        })?
    } else {
        let entries = legacy_lines(path, &bytes);
        if how == Read::Recover {
            tracing::info!(file = %path.display(), entries = entries.len(), "Manifest of JSON lines read; it is rewritten as framed records.");
        }
        entries
    };
    let mut latest: BTreeMap<String, Entry> = BTreeMap::new();
    for entry in entries {
        latest.insert(entry.id.clone(), entry);
    }
    Ok(latest)
}

/// The entries of a manifest of JSON lines, as the host wrote them before its
/// records were framed. A line cut by a crash, with the next entry appended
/// right after it, is one line that does not parse: the entry after the cut
/// is recovered from its end (the cut one was never acted on).
fn legacy_lines(path: &Path, bytes: &[u8]) -> Vec<Entry> {
    let text = String::from_utf8_lossy(bytes);
    let mut entries = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if let Ok(entry) = serde_json::from_str::<Entry>(line) {
            entries.push(entry);
            continue;
        }
        let salvaged = line.rfind("{\"id\"").and_then(|at| serde_json::from_str::<Entry>(&line[at..]).ok());
        tracing::warn!(file = %path.display(), line = number + 1, salvaged = salvaged.is_some(), "A manifest line cut by a crash; the entry after the cut is kept.");
        entries.extend(salvaged);
    }
    entries
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

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, state: FileState) -> Entry {
        Entry {
            id: id.into(),
            state,
            file: format!("{id}.csv"),
            pipeline: "orders".into(),
            checksum: "c".repeat(64),
            bytes: 10,
            ts: chrono::DateTime::parse_from_rfc3339("2026-12-01T10:00:00Z").unwrap().into(),
            reason: None,
            tick: None,
        }
    }

    fn states(entries: &[Entry]) -> Vec<(String, FileState)> {
        entries.iter().map(|e| (e.id.clone(), e.state)).collect()
    }

    #[test]
    fn a_manifest_cut_at_every_byte_of_its_last_record_keeps_exactly_the_whole_ones() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole.jsonl");
        let (manifest, _) = Manifest::open(&whole).unwrap();
        manifest.record(&[entry("a", FileState::Claimed), entry("b", FileState::Claimed)], true).unwrap();
        manifest.record(&[entry("a", FileState::Done)], true).unwrap();
        let bytes = std::fs::read(&whole).unwrap();
        let last = framed::frame(&serde_json::to_vec(&entry("a", FileState::Done)).unwrap()).len();
        for cut in bytes.len() - last..=bytes.len() {
            let path = dir.path().join(format!("cut-{cut}.jsonl"));
            std::fs::write(&path, &bytes[..cut]).unwrap();
            let (reopened, entries) = Manifest::open(&path).unwrap();
            let a = if cut == bytes.len() { FileState::Done } else { FileState::Claimed };
            assert_eq!(states(&entries), [("a".into(), a), ("b".into(), FileState::Claimed)], "cut at byte {cut}");
            // The next record follows the whole ones.
            reopened.record(&[entry("b", FileState::Ingesting)], true).unwrap();
            let latest = read_latest(&path).unwrap();
            assert_eq!(latest["b"].state, FileState::Ingesting, "cut at byte {cut}");
        }
    }

    #[test]
    fn a_manifest_of_json_lines_is_read_and_migrated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("retail.jsonl");
        let line = |e: &Entry| serde_json::to_string(e).unwrap();
        // As today's main wrote it: a line cut by a crash merged with the next entry.
        let cut = &line(&entry("b", FileState::Ingesting))[..40];
        let text = format!(
            "{}\n{}{}\n{}\n",
            line(&entry("a", FileState::Claimed)),
            cut,
            line(&entry("c", FileState::Claimed)),
            line(&entry("a", FileState::Done))
        );
        std::fs::write(&path, text).unwrap();
        assert_eq!(
            states(&read_latest(&path).unwrap().into_values().collect::<Vec<_>>()),
            [("a".into(), FileState::Done), ("c".into(), FileState::Claimed)],
            "the entry after the cut is kept"
        );
        let (_, entries) = Manifest::open(&path).unwrap();
        assert_eq!(states(&entries), [("a".into(), FileState::Done), ("c".into(), FileState::Claimed)]);
        assert!(framed::is_framed(&std::fs::read(&path).unwrap()), "rewritten framed");
    }

    #[test]
    fn damage_before_whole_records_is_an_error_naming_the_manifest() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("retail.jsonl");
        let (manifest, _) = Manifest::open(&path).unwrap();
        manifest.record(&[entry("a", FileState::Claimed), entry("b", FileState::Claimed)], true).unwrap();
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[25] ^= 0x01;
        std::fs::write(&path, &bytes).unwrap();
        let error = Manifest::open(&path).err().expect("corrupt").to_string();
        assert!(error.contains("retail.jsonl") && error.contains("corrupt"), "{error}");
        assert!(read_latest(&path).is_err(), "batch status says so too");
    }

    /// A manifest a host built from ab84cb3 wrote (`host/testdata/ab84cb3`)
    /// reads the same after the switch to crc32fast.
    #[test]
    fn a_manifest_written_by_ab84cb3_reads_entry_by_entry() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/ab84cb3/manifests/retail.jsonl");
        let entries = read_entries(&path).unwrap();
        let states: Vec<FileState> = entries.iter().map(|e| e.state).collect();
        assert_eq!(states, [FileState::Claimed, FileState::Ingesting, FileState::Failed]);
        assert!(entries.iter().all(|e| e.file == "orders-x.csv" && e.bytes == 21 && e.id == "20261207T220314753000126143"));
        assert!(entries[2].reason.as_deref().is_some_and(|r| r.starts_with("not-started: tenant `retail` has no batch pipeline")));
        let latest = read_latest(&path).unwrap();
        assert_eq!(latest.values().map(|e| e.state).collect::<Vec<_>>(), [FileState::Failed]);
    }
}
