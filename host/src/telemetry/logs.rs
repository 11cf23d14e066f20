//! Per-tenant logs as JSON lines: `tenants/<id>/logs/batch.log` and
//! `stream.log`, and the platform's own `<data_dir>/logs/platform.log`.
//! Every ingestion writes one `"type":"ingestion"` record; `mysimbdp stats`
//! reads them back.

use crate::config::{PipelineKind, Tenant};
use serde::Serialize;
use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// One log file; clones append to the same file.
#[derive(Clone)]
pub struct LogSink {
    path: PathBuf,
    file: Arc<Mutex<Open>>,
    rotation: Option<Rotation>,
}

struct Open {
    file: File,
    bytes: u64,
}

/// Size-based rotation: past `max_bytes` the file becomes `<name>.1` (the
/// older ones `<name>.2` ...) and `keep` rotated files are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rotation {
    pub max_bytes: u64,
    pub keep: u32,
}

/// The path of rotated file `n` of `path`.
pub fn rotated(path: &Path, n: u32) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(format!(".{n}"));
    PathBuf::from(name)
}

impl LogSink {
    /// Appends `record` as one line, with `ts` (RFC 3339, UTC) first.
    pub fn write<T: Serialize>(&self, record: &T) {
        let mut value = serde_json::to_value(record).unwrap_or(serde_json::Value::Null);
        let mut line = serde_json::Map::new();
        line.insert("ts".into(), chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true).into());
        if let serde_json::Value::Object(fields) = &mut value {
            line.extend(std::mem::take(fields));
        }
        let mut text = serde_json::Value::Object(line).to_string();
        text.push('\n');
        let mut open = self.file.lock().expect("log file poisoned");
        if let Some(rotation) = self.rotation
            && open.bytes > 0
            && open.bytes + text.len() as u64 > rotation.max_bytes
            && let Err(error) = self.rotate(&mut open, rotation)
        {
            tracing::error!(file = %self.path.display(), %error, "Cannot rotate a log file; it grows on.");
        }
        match open.file.write_all(text.as_bytes()) {
            Ok(()) => open.bytes += text.len() as u64,
            Err(error) => {
                // A part of the line may be written (a full disk, a file-size
                // limit): cut it off, or the next line would merge with it.
                let undo = open.file.set_len(open.bytes).err().map(|e| e.to_string());
                tracing::error!(file = %self.path.display(), %error, ?undo, "Cannot write to a log file; the line is dropped.");
            }
        }
    }

    /// `<name>.{keep-1}` to `<name>.{keep}` ... `<name>` to `<name>.1`, and a
    /// new empty `<name>`.
    fn rotate(&self, open: &mut Open, rotation: Rotation) -> std::io::Result<()> {
        for n in (1..rotation.keep).rev() {
            match std::fs::rename(rotated(&self.path, n), rotated(&self.path, n + 1)) {
                Err(error) if error.kind() != std::io::ErrorKind::NotFound => return Err(error),
                _ => {}
            }
        }
        std::fs::rename(&self.path, rotated(&self.path, 1))?;
        open.file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        open.bytes = 0;
        Ok(())
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Opens each log file once per process.
#[derive(Default)]
pub struct LogFiles {
    open: Mutex<HashMap<PathBuf, LogSink>>,
}

impl LogFiles {
    pub fn sink(&self, path: &Path) -> std::io::Result<LogSink> {
        self.sink_rotated(path, None)
    }

    /// The sink of `path`, rotated as `rotation` says (as the first caller
    /// said: the file is opened once).
    pub fn sink_rotated(&self, path: &Path, rotation: Option<Rotation>) -> std::io::Result<LogSink> {
        let mut open = self.open.lock().expect("log registry poisoned");
        if let Some(sink) = open.get(path) {
            return Ok(sink.clone());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let bytes = file.metadata()?.len();
        let sink = LogSink { path: path.to_path_buf(), file: Arc::new(Mutex::new(Open { file, bytes })), rotation };
        open.insert(path.to_path_buf(), sink.clone());
        Ok(sink)
    }
}

/// Every log of the host: the tenants' batch and stream logs and the
/// platform's own, each file opened once.
pub struct Logs {
    files: LogFiles,
    platform: PathBuf,
}

impl Logs {
    /// Logs whose platform log is `<data_dir>/logs/platform.log`.
    pub fn new(data_dir: &Path) -> Logs {
        Logs { files: LogFiles::default(), platform: data_dir.join("logs").join("platform.log") }
    }

    /// The tenant's batch or stream log.
    pub fn tenant(&self, tenant: &Tenant, kind: PipelineKind) -> LogSink {
        let path = tenant_log_path(&tenant.paths.logs, kind);
        self.files.sink(&path).unwrap_or_else(|error| panic!("cannot open the log {} of tenant `{}`: {error}", path.display(), tenant.id))
    }

    /// The tenant's guest log (`<kind>-guest.log`): what its pipelines log
    /// and print, and the calls refused to them, rotated at
    /// `quotas.guest_log_bytes`; apart from the ingestion records, so a
    /// flood cannot push those out.
    pub fn tenant_guest(&self, tenant: &Tenant, kind: PipelineKind) -> LogSink {
        let path = guest_log_path(&tenant.paths.logs, kind);
        let quotas = &tenant.profile.quotas;
        let rotation = Rotation { max_bytes: quotas.guest_log_bytes.bytes(), keep: quotas.guest_log_files };
        self.files
            .sink_rotated(&path, Some(rotation))
            .unwrap_or_else(|error| panic!("cannot open the log {} of tenant `{}`: {error}", path.display(), tenant.id))
    }

    /// The platform's own log.
    pub fn platform(&self) -> LogSink {
        self.files.sink(&self.platform).unwrap_or_else(|error| panic!("cannot open the log {}: {error}", self.platform.display()))
    }
}

/// The log of one tenant's batch or stream pipelines.
pub fn tenant_log_path(logs_dir: &Path, kind: PipelineKind) -> PathBuf {
    logs_dir.join(format!("{kind}.log"))
}

/// The log of what one tenant's batch or stream pipelines logged and printed.
pub fn guest_log_path(logs_dir: &Path, kind: PipelineKind) -> PathBuf {
    logs_dir.join(format!("{kind}-guest.log"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_rotated_log_keeps_its_newest_lines_within_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("batch-guest.log");
        let files = LogFiles::default();
        let sink = files.sink_rotated(&path, Some(Rotation { max_bytes: 1000, keep: 2 })).unwrap();
        for n in 0..100 {
            sink.write(&serde_json::json!({ "n": n, "pad": "x".repeat(60) }));
        }
        let numbers = |path: &Path| -> Vec<i64> {
            std::fs::read_to_string(path)
                .unwrap_or_default()
                .lines()
                .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["n"].as_i64().unwrap())
                .collect()
        };
        let (now, one, two) = (numbers(&path), numbers(&rotated(&path, 1)), numbers(&rotated(&path, 2)));
        assert!(!rotated(&path, 3).exists(), "only 2 rotated files are kept");
        for file in [&path, &rotated(&path, 1), &rotated(&path, 2)] {
            assert!(std::fs::metadata(file).unwrap().len() <= 1000, "{} within its size", file.display());
        }
        // Oldest first across the files, ending with the last line written.
        let kept: Vec<i64> = two.iter().chain(&one).chain(&now).copied().collect();
        assert_eq!(kept.last(), Some(&99));
        assert!(kept.windows(2).all(|w| w[1] == w[0] + 1), "{kept:?}");
        // About 8 lines of ~120 bytes fit in a file of 1000 bytes: two full rotated files and the current one.
        assert!(kept.len() < 100 && kept.len() > 16, "{} lines kept", kept.len());
    }
}
