//! A store that accepts and discards documents, to measure a pipeline alone.

use super::{BulkOutcome, Docs, DocumentStore, SearchError, SearchRequest, SearchResult, SinkError};
use async_trait::async_trait;
use std::sync::atomic::{AtomicU64, Ordering};

#[derive(Default)]
pub struct NullStore {
    accepted: AtomicU64,
}

#[async_trait]
impl DocumentStore for NullStore {
    fn kind(&self) -> &'static str {
        "null"
    }

    async fn ensure_index(&self, _: &str, _: Option<&serde_json::Value>) -> Result<(), SinkError> {
        Ok(())
    }

    async fn bulk_index(&self, _: &str, docs: &Docs) -> Result<BulkOutcome, SinkError> {
        self.accepted.fetch_add(docs.len() as u64, Ordering::Relaxed);
        Ok(BulkOutcome { indexed: docs.len(), failed: Vec::new() })
    }

    async fn flush(&self, _: &str, _: bool) -> Result<(), SinkError> {
        Ok(())
    }

    async fn search(&self, _: &str, _: &SearchRequest) -> Result<SearchResult, SearchError> {
        Ok(SearchResult { total: 0, hits: Vec::new() })
    }

    /// Everything accepted so far, over all indices.
    async fn count(&self, _: &str) -> Result<u64, SinkError> {
        Ok(self.accepted.load(Ordering::Relaxed))
    }

    async fn indices(&self, _: &str) -> Result<Vec<String>, SinkError> {
        Ok(Vec::new())
    }

    async fn delete_index(&self, _: &str) -> Result<(), SinkError> {
        Ok(())
    }
}
