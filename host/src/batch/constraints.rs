//! The file constraints of a tenant's profile. A staged file that breaks a
//! rule of its own (its type or size, no pipeline for it, not a regular
//! file) is quarantined with a reason naming the rule, the limit and the
//! value. The staging quota (`max_staging_bytes`) quarantines nothing: a file
//! past it waits, with the same sentence as its reason, until earlier files
//! have left staging; files beyond `max_files_per_run` wait for the next run
//! (the scan's admission decides both).

use crate::config::{ByteSize, FileConstraints};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Which rule a file broke, with the limit and the file's own value.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Violation {
    /// `file-type`, `max-file-bytes`, `no-pipeline` or `not-a-regular-file`
    /// (the file is quarantined), or `max-staging-bytes` (it waits).
    pub rule: String,
    pub limit: String,
    pub actual: String,
}

impl Violation {
    pub fn new(rule: &str, limit: impl ToString, actual: impl ToString) -> Self {
        Violation { rule: rule.to_string(), limit: limit.to_string(), actual: actual.to_string() }
    }

    /// One sentence for logs and reason files.
    pub fn message(&self) -> String {
        match self.rule.as_str() {
            "file-type" => format!("file type `{}` is not allowed (allowed: {})", self.actual, self.limit),
            "max-file-bytes" => format!("the file has {} but the limit is {}", self.actual, self.limit),
            "max-staging-bytes" => {
                format!("staging would hold {} with this file but the limit is {}", self.actual, self.limit)
            }
            "no-pipeline" => format!("no batch pipeline takes `{}` (patterns: {})", self.actual, self.limit),
            "not-a-regular-file" => {
                format!("it is a {} and only regular files are ingested (links are never followed): stage the file itself", self.actual)
            }
            _ => format!("{}: limit {}, actual {}", self.rule, self.limit, self.actual),
        }
    }
}

/// The extension a file's type is judged by: `orders.csv` is `csv`, a file
/// without one is `(none)`.
pub fn file_type(path: &Path) -> String {
    path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase).unwrap_or_else(|| "(none)".into())
}

/// The rules one file can break on its own: type and size.
pub fn check_file(constraints: &FileConstraints, path: &Path, bytes: u64) -> Option<Violation> {
    let kind = file_type(path);
    if !constraints.allowed_types.contains(&kind) {
        return Some(Violation::new("file-type", constraints.allowed_types.join(", "), kind));
    }
    if bytes > constraints.max_file_bytes.bytes() {
        return Some(Violation::new("max-file-bytes", format!("{} bytes", constraints.max_file_bytes.bytes()), format!("{bytes} bytes")));
    }
    None
}

/// The total-bytes rule, for a file that would bring staging to `total`:
/// past the quota the file waits for room, it is not quarantined.
pub fn check_staging_total(constraints: &FileConstraints, total: u64) -> Option<Violation> {
    (total > constraints.max_staging_bytes.bytes())
        .then(|| Violation::new("max-staging-bytes", format!("{} bytes", constraints.max_staging_bytes.bytes()), format!("{total} bytes")))
}

/// Human-readable size, for CLI output.
pub fn human_bytes(bytes: u64) -> String {
    let units = [("GiB", ByteSize::GIB), ("MiB", ByteSize::MIB), ("KiB", ByteSize::KIB)];
    for (unit, size) in units {
        if bytes >= size {
            return format!("{:.1} {unit}", bytes as f64 / size as f64);
        }
    }
    format!("{bytes} B")
}
