//! The shared services behind the `coredms` and `messaging` imports. Each has
//! an embedded implementation (the default, nothing to install) and a
//! distributed one (Elasticsearch/OpenSearch, Kafka).

mod deadline;
pub(crate) mod elasticsearch;
pub(crate) mod embedded_bus;
pub(crate) mod embedded_store;
pub(crate) mod kafka;
pub(crate) mod null_store;
pub(crate) use mysimbdp_foundation::query;

use async_trait::async_trait;
pub use query::{MAX_PHRASE_TERMS, MAX_PHRASE_TERMS_IN_QUERY, QueryRefused, SearchRequest};
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Runs a synchronous client call (tantivy, librdkafka's metadata and offset
/// calls) off the async workers.
pub(crate) async fn blocking<R: Send + 'static>(
    backend: &'static str,
    f: impl FnOnce() -> Result<R, SinkError> + Send + 'static,
) -> Result<R, SinkError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| SinkError::new(backend, format!("worker: {e}")))?
}

/// A document as the host writes it: the id is always set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Doc<'a> {
    pub id: &'a str,
    /// A JSON object.
    pub source: &'a str,
}

/// The documents of one bulk write: every id and JSON text one after the
/// other in one text, as the guest SDK packs them (`bulk-index-packed`), so a
/// batch from a guest costs one copy and no allocation per document.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Docs {
    text: String,
    /// Two per document: where its id ends and where its JSON text ends in `text`.
    ends: Vec<u32>,
}

impl Docs {
    /// Empty, with room for `docs` documents of `bytes` bytes in all.
    pub fn with_capacity(docs: usize, bytes: usize) -> Docs {
        Docs { text: String::with_capacity(bytes), ends: Vec::with_capacity(docs * 2) }
    }

    /// Documents packed as `bulk-index-packed` receives them, or what is
    /// wrong with the packing.
    pub fn from_packed(text: Vec<u8>, ends: Vec<u32>) -> Result<Docs, String> {
        let text = String::from_utf8(text).map_err(|e| format!("the text is not UTF-8: {}", e.utf8_error()))?;
        if !ends.len().is_multiple_of(2) {
            return Err(format!("{} offsets: two per document expected", ends.len()));
        }
        let mut previous = 0;
        for (i, &end) in ends.iter().enumerate() {
            let at = end as usize;
            if at < previous || at > text.len() || !text.is_char_boundary(at) {
                return Err(format!(
                    "offset {i} ({end}) is not a character boundary after offset {previous} in the {} bytes of text",
                    text.len()
                ));
            }
            previous = at;
        }
        if previous != text.len() {
            return Err(format!("the documents end at byte {previous} of {}", text.len()));
        }
        Ok(Docs { text, ends })
    }

    pub fn push(&mut self, id: &str, source: &str) {
        let offset = |text: &String| u32::try_from(text.len()).expect("a bulk write under 4 GiB");
        self.text.push_str(id);
        self.ends.push(offset(&self.text));
        self.text.push_str(source);
        self.ends.push(offset(&self.text));
    }

    pub fn len(&self) -> usize {
        self.ends.len() / 2
    }

    pub fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }

    /// The document at position `index` (in the order pushed).
    pub fn get(&self, index: usize) -> Option<Doc<'_>> {
        let id_end = *self.ends.get(2 * index)? as usize;
        let end = self.ends[2 * index + 1] as usize;
        let start = match index {
            0 => 0,
            _ => self.ends[2 * index - 1] as usize,
        };
        Some(Doc { id: &self.text[start..id_end], source: &self.text[id_end..end] })
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = Doc<'_>> {
        (0..self.len()).map(|i| self.get(i).expect("in range"))
    }
}

/// A document the store refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ItemFailure {
    /// Position in the list passed to `bulk_index`.
    pub index: usize,
    /// 400 for a bad document; 429/5xx when retries ran out.
    pub status: u16,
    pub reason: String,
}

#[derive(Debug, Clone, Default)]
pub struct BulkOutcome {
    pub indexed: usize,
    pub failed: Vec<ItemFailure>,
}

/// What a [`MessageBus::publish`] did: every record not named in `refused`
/// was acknowledged.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Published {
    /// Records the broker refused as bad, by position in the call, with why.
    pub refused: Vec<(usize, String)>,
}

impl Published {
    /// Fails with the first refusal: for callers that cannot dead-letter
    /// (the dead letters themselves, `stream produce`).
    pub fn all_or_refused(self, backend: &'static str, topic: &str) -> Result<(), SinkError> {
        match self.refused.first() {
            None => Ok(()),
            Some((index, reason)) => Err(SinkError::new(
                backend,
                format!("{} of the records to {topic} refused as bad, the first (#{index}): {reason}", self.refused.len()),
            )),
        }
    }
}

/// The store as a whole failed (unreachable, refused the request).
#[derive(Debug, Clone, thiserror::Error)]
#[error("{backend}: {message}")]
pub struct SinkError {
    pub backend: &'static str,
    pub message: String,
}

impl SinkError {
    pub fn new(backend: &'static str, message: impl Into<String>) -> Self {
        SinkError { backend, message: message.into() }
    }
}

/// Why a search gave no result.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SearchError {
    /// Past a limit of [`query`]; nothing was parsed.
    #[error(transparent)]
    Refused(#[from] QueryRefused),
    /// The store's parser did not accept the query.
    #[error("query `{query}` is not valid query-string syntax: {reason}")]
    Invalid { query: String, reason: String },
    /// Stopped at its time bound; no work on it goes on.
    #[error("the search ran past its time bound of {timeout_ms} ms (api.search_timeout_ms) and was stopped: narrow the query")]
    TimedOut { timeout_ms: u64 },
    #[error(transparent)]
    Store(#[from] SinkError),
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hit {
    pub id: String,
    pub score: f32,
    pub source: serde_json::Value,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SearchResult {
    /// Documents matching the query (not only those returned).
    pub total: u64,
    pub hits: Vec<Hit>,
}

/// The document store (`coredms`). Index names are already namespaced by the
/// host (`<tenant>-<collection>`); backends never see guest-chosen names.
#[async_trait]
pub trait DocumentStore: Send + Sync {
    fn kind(&self) -> &'static str;

    /// Creates the index if needed, with `mappings` when given.
    async fn ensure_index(&self, index: &str, mappings: Option<&serde_json::Value>) -> Result<(), SinkError>;

    /// Writes `docs` (overwriting same ids). Returns once the store accepted
    /// them; per-document failures are in the outcome.
    async fn bulk_index(&self, index: &str, docs: &Docs) -> Result<BulkOutcome, SinkError>;

    /// Makes everything written so far durable, and searchable too when
    /// `searchable` (a refresh costs the cluster, so the stream path skips it).
    async fn flush(&self, index: &str, searchable: bool) -> Result<(), SinkError>;

    /// `request.query` in the store's query-string syntax (empty matches
    /// all), the page `offset..offset + limit`, within `request.timeout`.
    /// The caller has checked the request ([`SearchRequest::checked`]).
    async fn search(&self, index: &str, request: &SearchRequest) -> Result<SearchResult, SearchError>;

    /// Live documents in the index (0 when it does not exist).
    async fn count(&self, index: &str) -> Result<u64, SinkError>;

    /// Indices whose names start with `prefix`.
    async fn indices(&self, prefix: &str) -> Result<Vec<String>, SinkError>;

    async fn delete_index(&self, index: &str) -> Result<(), SinkError>;
}

/// A message header.
pub type Header = (String, Vec<u8>);

#[derive(Debug, Clone, Default)]
pub struct OutRecord {
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub headers: Vec<Header>,
}

/// A message read from a topic.
#[derive(Debug, Clone)]
pub struct InRecord {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Vec<u8>,
    pub timestamp_ms: Option<i64>,
    pub headers: Vec<Header>,
}

/// The message broker (`messaging`). Topic names are namespaced by the host.
#[async_trait]
pub trait MessageBus: Send + Sync {
    fn kind(&self) -> &'static str;

    /// Creates the topic with `partitions` if it does not exist.
    async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), SinkError>;

    /// Appends `records` to `topic` (created with one partition if missing)
    /// and returns once the broker acknowledged them, naming the records it
    /// refused as bad (too large, invalid). A broker that fails or is
    /// overloaded fails the whole call: that says nothing about the records.
    async fn publish(&self, topic: &str, records: &[OutRecord]) -> Result<Published, SinkError>;

    /// A member of consumer group `group` reading `topics`. Offsets are
    /// committed only through [`Consumer::commit`].
    async fn consumer(&self, group: &str, topics: &[String]) -> Result<Box<dyn Consumer>, SinkError>;

    /// Messages of `group` not yet committed, over all partitions of `topics`.
    async fn lag(&self, group: &str, topics: &[String]) -> Result<u64, SinkError>;

    /// Reads `topic` from the start, up to `max` records (for inspection and tests).
    async fn read_all(&self, topic: &str, max: usize, wait: Duration) -> Result<Vec<InRecord>, SinkError>;
}

#[async_trait]
pub trait Consumer: Send {
    /// Up to `max` records, waiting at most `wait` for the first one.
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<InRecord>, SinkError>;

    /// Marks everything up to and including these records as processed.
    async fn commit(&mut self, processed: &[(String, i32, i64)]) -> Result<(), SinkError>;

    /// Stops fetching while the records of the last poll are handled, for
    /// however long that takes (retries, backoff, bisection), and keeps the
    /// member in its group meanwhile. Records that still arrive are kept for
    /// the next poll. A bus without group timeouts has nothing to do.
    async fn pause(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Fetches again after [`Consumer::pause`].
    async fn resume(&mut self) -> Result<(), SinkError> {
        Ok(())
    }

    /// Leaves the group cleanly.
    async fn close(self: Box<Self>);
}

/// Why a document's field names cannot be written, the same on both stores
/// (each calls this before it writes a document): a control character in a
/// field name (tantivy separates the parts of a JSON path with control bytes
/// and asserted on a NUL; no store needs one). None for a document whose
/// names are fine, and for text that is no JSON (the store says so itself).
/// JSON holds a control character only escaped (`\u0000`, `\n`), or as
/// DEL and the C1 range raw, so a document with none of these is not
/// parsed here.
pub fn refused_field_name(source: &str) -> Option<String> {
    let bytes = source.as_bytes();
    let suspect = bytes
        .iter()
        .enumerate()
        .any(|(i, &b)| b == b'\\' || b == 0x7f || (b == 0xc2 && bytes.get(i + 1).is_some_and(|n| (0x80..0xa0).contains(n))));
    if !suspect {
        return None;
    }
    let value: serde_json::Value = serde_json::from_str(source).ok()?;
    control_in_names(&value)
}

fn control_in_names(value: &serde_json::Value) -> Option<String> {
    match value {
        serde_json::Value::Object(fields) => fields.iter().find_map(|(name, value)| match name.chars().find(|c| c.is_control()) {
            Some(c) => Some(format!(
                "the field name {name:?} holds the control character U+{:04X}; field names cannot hold control characters \
                 (field name rule): rename the field",
                u32::from(c)
            )),
            None => control_in_names(value),
        }),
        serde_json::Value::Array(items) => items.iter().find_map(control_in_names),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::{Doc, Docs, refused_field_name};

    #[test]
    fn a_control_character_in_any_field_name_refuses_the_document() {
        let cases = [
            (r#"{"currency":"eur"}"#, None),
            // In values, escaped or not, control characters are data.
            (r#"{"note":"a\u0000b\nc","path":"C:\\x"}"#, None),
            ("{\"note\":\"del \u{7f} and \u{85}\"}", None),
            (r#"{"curr\u0000ency":"eur"}"#, Some("\"curr\\0ency\" holds the control character U+0000")),
            (r#"{"\u0000":"eur"}"#, Some("U+0000")),
            (r#"{"a":{"b":[{"c\nd":1}]}}"#, Some("\"c\\nd\" holds the control character U+000A")),
            ("{\"de\u{7f}l\":1}", Some("U+007F")),
            ("{\"c1\u{85}\":1}", Some("U+0085")),
            // No JSON: the store refuses it as such.
            (r#"{"a\u0000"#, None),
        ];
        for (source, expected) in cases {
            let refused = refused_field_name(source);
            match expected {
                None => assert_eq!(refused, None, "{source}"),
                Some(part) => {
                    assert!(refused.as_deref().is_some_and(|r| r.contains(part) && r.contains("field name rule")), "{source}: {refused:?}")
                }
            }
        }
    }

    #[test]
    fn docs_give_back_each_document_as_pushed() {
        let pushed = [("a-1", r#"{"x":1}"#), ("", "{}"), ("é-2", r#"{"city":"Jyväskylä"}"#), ("z", "")];
        let mut docs = Docs::with_capacity(4, 0);
        for (id, source) in pushed {
            docs.push(id, source);
        }
        assert_eq!(docs.len(), 4);
        let back: Vec<(&str, &str)> = docs.iter().map(|d| (d.id, d.source)).collect();
        assert_eq!(back, pushed);
        assert_eq!(docs.get(2), Some(Doc { id: "é-2", source: r#"{"city":"Jyväskylä"}"# }));
        assert_eq!(docs.get(4), None);
        assert!(Docs::default().is_empty() && Docs::default().iter().next().is_none());
    }

    #[test]
    fn packed_documents_are_read_as_the_sdk_packs_them() {
        let text = "r-1{\"a\":1}r-é{\"b\":\"ü\"}".as_bytes().to_vec();
        let docs = Docs::from_packed(text.clone(), vec![3, 10, 14, 24]).unwrap();
        let back: Vec<(&str, &str)> = docs.iter().map(|d| (d.id, d.source)).collect();
        assert_eq!(back, [("r-1", r#"{"a":1}"#), ("r-é", r#"{"b":"ü"}"#)]);
        assert_eq!(Docs::from_packed(Vec::new(), Vec::new()).unwrap().len(), 0);
    }

    #[test]
    fn packing_that_does_not_fit_the_text_is_refused() {
        let text = || "r-1{}r-é{}".as_bytes().to_vec();
        let refused = |ends: Vec<u32>| Docs::from_packed(text(), ends).unwrap_err();
        assert!(Docs::from_packed(text(), vec![3, 5, 9, 11]).is_ok());
        assert_eq!(refused(vec![3, 5, 9]), "3 offsets: two per document expected");
        assert!(refused(vec![3, 5, 8, 11]).starts_with("offset 2 (8) is not a character boundary"), "inside é");
        assert!(refused(vec![5, 3, 9, 11]).starts_with("offset 1 (3) is not a character boundary after offset 5"));
        assert!(refused(vec![3, 5, 9, 12]).starts_with("offset 3 (12)"), "past the end");
        assert_eq!(refused(vec![3, 5, 9, 10]), "the documents end at byte 10 of 11");
        assert!(Docs::from_packed(vec![b'{', 0xff, b'}'], vec![0, 3]).unwrap_err().starts_with("the text is not UTF-8"));
    }
}
