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
    let Some(request) = request_of(bytes) else { return };
    if let Ok(checked) = request.checked() {
        let depth = crate::backends::query::nesting_depth(&checked.query);
        assert!(depth <= crate::backends::query::MAX_QUERY_DEPTH, "a query {depth} deep passed");
        assert!(checked.query.len() <= crate::backends::query::MAX_QUERY_BYTES);
        assert!(!checked.query.chars().any(|c| c.is_whitespace() && c != ' '), "whitespace other than spaces passed");
        assert!(!checked.query.chars().any(char::is_control), "a control character passed");
        let terms = crate::backends::query::count_terms(&checked.query);
        assert!(terms.all <= crate::backends::query::MAX_QUERY_TERMS && terms.longest_phrase <= crate::backends::query::MAX_PHRASE_TERMS);
        assert!(terms.in_phrases <= crate::backends::query::MAX_PHRASE_TERMS_IN_QUERY);
    }
}

/// A small embedded collection that queries passing the pre-check are run
/// against ([`QueryStore::query`]): the pre-check alone could not find a
/// query that reaches a panic of the store (a NUL in a field name did).
pub struct QueryStore {
    store: crate::backends::embedded_store::EmbeddedStore,
    runtime: tokio::runtime::Runtime,
}

const FUZZ_INDEX: &str = "fuzz-notes";

impl QueryStore {
    /// A collection in `dir` of a few hundred documents of the shapes
    /// tenants write (nested objects, arrays, numbers, dates, text with
    /// repeated words, ids), committed.
    pub fn open(dir: &Path) -> QueryStore {
        use crate::backends::DocumentStore;
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("a runtime");
        let store = crate::backends::embedded_store::EmbeddedStore::open(dir).expect("an embedded store in the fuzz directory");
        let mut docs = Docs::with_capacity(300, 300 * 200);
        for n in 0..300 {
            let country = ["fi", "se", "de"][n % 3];
            let source = serde_json::json!({
                "order_id": format!("o-{n}"),
                "customer": { "country": country, "name": format!("Customer {} o o o", n % 17) },
                "total_eur": n as f64 * 1.25,
                "lines": [{ "sku": format!("s{}", n % 7), "qty": n % 5 }],
                "at": format!("2026-11-{:02}T10:00:00Z", 1 + n % 28),
                "note": "o o o the big lebowski o",
            });
            docs.push(&format!("n-{n}"), &source.to_string());
        }
        runtime.block_on(async {
            store.ensure_index(FUZZ_INDEX, None).await.expect("create the collection");
            let outcome = store.bulk_index(FUZZ_INDEX, &docs).await.expect("index");
            assert!(outcome.failed.is_empty(), "{:?}", outcome.failed);
            store.flush(FUZZ_INDEX, true).await.expect("commit");
        });
        QueryStore { store, runtime }
    }

    /// `bytes` read as [`query`] reads them; a query that passes the
    /// pre-check is searched, and the store answers it or finds it invalid:
    /// a store error (which is how a panic of the store comes back, a 502 of
    /// the API) or a time out on this small collection (a 503) fails.
    pub fn query(&self, bytes: &[u8]) {
        use crate::backends::{DocumentStore, SearchError};
        let Some(request) = request_of(bytes) else { return };
        let Ok(checked) = request.checked() else { return };
        match self.runtime.block_on(self.store.search(FUZZ_INDEX, &checked)) {
            Ok(_) | Err(SearchError::Invalid { .. }) => {}
            Err(error) => panic!("the store failed on a query within every limit ({:?}): {error}", checked.query),
        }
    }
}

fn request_of(bytes: &[u8]) -> Option<SearchRequest> {
    if bytes.len() < 4 {
        return None;
    }
    let limit = u16::from_le_bytes([bytes[0], bytes[1]]) as usize;
    let offset = u16::from_le_bytes([bytes[2], bytes[3]]) as usize;
    let query = String::from_utf8_lossy(&bytes[4..]).into_owned();
    Some(SearchRequest { query, limit, offset, timeout: Duration::from_secs(1) })
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
