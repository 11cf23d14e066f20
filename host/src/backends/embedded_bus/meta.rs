//! A topic's `meta.json` in the embedded message log: its partition count,
//! one framed record written atomically and durably when the topic is
//! created, read back strictly.

use super::sink_error;
use crate::backends::SinkError;
use crate::framed;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Serialize, Deserialize)]
struct TopicMeta {
    partitions: i32,
}

/// The partition count in a topic's `meta.json` (none yet: `None`): one
/// framed record, or plain JSON as written before. An empty or damaged file
/// is an error naming it and what to do, never a topic made anew over its
/// partitions.
pub(super) fn read_meta(meta_file: &Path) -> Result<Option<i32>, SinkError> {
    let bytes = match std::fs::read(meta_file) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(sink_error(&meta_file.display().to_string(), error)),
    };
    let payload = if framed::is_framed(&bytes) {
        // Written by `write_meta` at once, renamed into place: one whole record.
        let records = framed::read(meta_file, &bytes)
            .map_err(|corrupt| damaged_meta(meta_file, format!("the record at byte {} is damaged: {}", corrupt.offset, corrupt.reason)))?;
        match (records.payloads.as_slice(), records.torn) {
            ([only], 0) => only.clone(),
            ([], 0) => return Err(damaged_meta(meta_file, "it is empty".into())),
            (whole, torn) => return Err(damaged_meta(meta_file, format!("{} whole records and {torn} bytes of none", whole.len()))),
        }
    } else {
        bytes
    };
    let meta = serde_json::from_slice::<TopicMeta>(&payload).map_err(|e| damaged_meta(meta_file, e.to_string()))?;
    if meta.partitions < 1 {
        return Err(damaged_meta(meta_file, format!("{} partitions", meta.partitions)));
    }
    Ok(Some(meta.partitions))
}

fn damaged_meta(meta_file: &Path, detail: String) -> SinkError {
    let dir = meta_file.parent().unwrap_or(Path::new("."));
    let logs = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .filter_map(Result::ok)
                .filter(|e| e.file_name().to_str().and_then(|n| n.strip_suffix(".log")).is_some_and(|p| p.parse::<u32>().is_ok()))
                .count()
        })
        .unwrap_or(0);
    sink_error(
        &meta_file.display().to_string(),
        format!(
            "the topic's partition count cannot be read ({detail}), so the topic does not load; restore the file: it holds \
             {{\"partitions\":N}}, N being the number of <partition>.log files beside it ({logs} there now)"
        ),
    )
}

/// Writes a new topic's `meta.json` (its directory created) atomically and
/// durably: a crash leaves no file or the whole one, never an empty one.
pub(super) fn write_meta(meta_file: &Path, partitions: i32) -> Result<(), SinkError> {
    let error = |e: std::io::Error| sink_error(&meta_file.display().to_string(), e);
    let dir = meta_file.parent().expect("meta.json is in its topic's directory");
    std::fs::create_dir_all(dir).map_err(error)?;
    // The topic's directory in `topics/`, then the file in it.
    framed::sync_dir(dir).map_err(error)?;
    let meta = serde_json::to_vec(&TopicMeta { partitions }).expect("serializable");
    framed::rewrite(meta_file, [meta.as_slice()]).map_err(error)
}
