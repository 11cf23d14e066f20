//! For the fuzz targets (`fuzz/`), not for the host's users: the parsers a
//! tenant (or whoever writes the host's files) can reach, each fed raw
//! bytes. Each returns normally whatever the bytes are; a panic, a hang or
//! an unbounded allocation is a bug the fuzzers look for.

use crate::backends::{Docs, SearchRequest};
use std::path::Path;
use std::time::Duration;

/// A service profile (`profile.yaml`), parsed and validated as the registry does.
pub fn profile(bytes: &[u8]) {
    let Ok(text) = std::str::from_utf8(bytes) else { return };
    let file = Path::new("fuzz/profile.yaml");
    if let Ok(profile) = crate::config::parse_yaml::<crate::config::Profile>(file, text) {
        let _ = profile.validate(file);
    }
}

/// The query pre-check of `GET /api/query`: the first bytes are the limit
/// and offset, the rest the query. A query it passes is within every limit.
pub fn query(bytes: &[u8]) {
    if bytes.len() < 4 {
        return;
    }
    let limit = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
    let offset = u16::from_le_bytes([bytes[2], bytes[3]]) as usize;
    let query = String::from_utf8_lossy(&bytes[4..]).into_owned();
    let request = SearchRequest { query, limit, offset, timeout: Duration::from_secs(1) };
    if let Ok(checked) = request.checked() {
        let depth = crate::backends::query::nesting_depth(&checked.query);
        assert!(depth <= crate::backends::query::MAX_QUERY_DEPTH, "a query {depth} deep passed");
        assert!(checked.query.len() <= crate::backends::query::MAX_QUERY_BYTES);
        assert!(!checked.query.chars().any(|c| c.is_whitespace() && c != ' '), "whitespace other than spaces passed");
    }
}

/// Documents packed as a guest's `bulk-index-packed` sends them: the first
/// byte says how many of the following little-endian u32s are the offsets,
/// the rest is the text. Packings it accepts can be read back.
pub fn packed_documents(bytes: &[u8]) {
    let Some((&count, rest)) = bytes.split_first() else { return };
    let count = (count as usize).min(rest.len() / 4);
    let (offsets, text) = rest.split_at(count * 4);
    let ends = offsets.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
    if let Ok(docs) = Docs::from_packed(text.to_vec(), ends) {
        let read: usize = docs.iter().map(|doc| doc.id.len() + doc.source.len()).sum();
        assert_eq!((docs.iter().len(), read), (count / 2, text.len()), "the documents are the text, cut where the offsets say");
    }
}

/// `bytes` as they are, and each of their lines framed as a sound record,
/// so the payload parsers are reached past the checksums too.
fn as_is_and_framed(bytes: &[u8]) -> [Vec<u8>; 2] {
    let framed = bytes.split(|b| *b == b'\n').flat_map(crate::framed::frame).collect();
    [bytes.to_vec(), framed]
}

/// A batch manifest (`<data_dir>/manifests/<tenant>.jsonl`) as the host reads it.
pub fn manifest(bytes: &[u8]) {
    for content in as_is_and_framed(bytes) {
        let _ = crate::batch::manifest::parse_entries(Path::new("fuzz/manifest.jsonl"), &content);
    }
}

/// A partition file of the embedded message log, read through as a
/// consumer would, from a file in `scratch` (a directory of the caller's).
pub fn message_log(bytes: &[u8], scratch: &Path) {
    let file = scratch.join(format!("partition-{}-{:?}.log", std::process::id(), std::thread::current().id()));
    for content in as_is_and_framed(bytes) {
        if std::fs::write(&file, content).is_ok() {
            let _ = crate::backends::embedded_bus::read_partition_file(&file);
        }
    }
}
