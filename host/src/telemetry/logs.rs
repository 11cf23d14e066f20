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
    file: Arc<Mutex<File>>,
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
        let mut file = self.file.lock().expect("log file poisoned");
        if let Err(error) = file.write_all(text.as_bytes()) {
            tracing::error!(file = %self.path.display(), %error, "Cannot write to a log file.");
        }
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
        let mut open = self.open.lock().expect("log registry poisoned");
        if let Some(sink) = open.get(path) {
            return Ok(sink.clone());
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let file = OpenOptions::new().create(true).append(true).open(path)?;
        let sink = LogSink { path: path.to_path_buf(), file: Arc::new(Mutex::new(file)) };
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

    /// The platform's own log.
    pub fn platform(&self) -> LogSink {
        self.files.sink(&self.platform).unwrap_or_else(|error| panic!("cannot open the log {}: {error}", self.platform.display()))
    }
}

/// The log of one tenant's batch or stream pipelines.
pub fn tenant_log_path(logs_dir: &Path, kind: PipelineKind) -> PathBuf {
    logs_dir.join(format!("{kind}.log"))
}
