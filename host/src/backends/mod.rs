//! The shared services behind the `coredms` and `messaging` imports. Each has
//! an embedded implementation (the default, nothing to install) and a
//! distributed one (Elasticsearch/OpenSearch, Kafka).

pub mod elasticsearch;
pub mod embedded_log;
pub mod embedded_store;
pub mod kafka;
pub mod null_store;

use async_trait::async_trait;
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
#[derive(Debug, Clone)]
pub struct Doc {
    pub id: String,
    /// A JSON object.
    pub source: String,
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
    async fn bulk_index(&self, index: &str, docs: &[Doc]) -> Result<BulkOutcome, SinkError>;

    /// Makes everything written so far durable, and searchable too when
    /// `searchable` (a refresh costs the cluster, so the stream path skips it).
    async fn flush(&self, index: &str, searchable: bool) -> Result<(), SinkError>;

    /// `query` in the store's query-string syntax; empty matches all.
    async fn search(&self, index: &str, query: &str, limit: usize) -> Result<SearchResult, SinkError>;

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
    /// and returns once the broker acknowledged them.
    async fn publish(&self, topic: &str, records: Vec<OutRecord>) -> Result<(), SinkError>;

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

    /// Leaves the group cleanly.
    async fn close(self: Box<Self>);
}
