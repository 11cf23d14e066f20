//! The embedded document store: one tantivy index per tenant collection under
//! `<data_dir>/coredms/<index>`. Documents are kept as their JSON text and
//! indexed as a JSON field, so `customer.country:fi` or `total_eur:[500 TO *]`
//! queries work as with Elasticsearch's query string. A collection unused
//! for a minute is closed (its writer's threads and memory, its files) and
//! opened again on its next use, so collections a tenant created once do not
//! keep their writers for good.
//!
//! About 400 lines, and whole on purpose: it is one [`DocumentStore`]
//! implementation, its collections' lifecycle (open, idle close) and their
//! tantivy indexing and search, which share the one schema and the open
//! collections' map; the unit tests exercise that lifecycle.

use super::deadline::{Deadline, WithDeadline};
use super::{BulkOutcome, Docs, DocumentStore, Hit, ItemFailure, SearchError, SearchRequest, SearchResult, SinkError, blocking};
use crate::telemetry::events::SearchRunning;
use async_trait::async_trait;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tantivy::collector::{Count, TopDocs};
use tantivy::query::{AllQuery, Query, QueryParser};
use tantivy::query_grammar::{UserInputAst, UserInputLeaf};
use tantivy::schema::{Field, JsonObjectOptions, OwnedValue, STORED, STRING, Schema, TEXT, Value};
use tantivy::{Index, IndexReader, IndexWriter, ReloadPolicy, TantivyDocument, Term};

const BACKEND: &str = "embedded store";
/// The `backend` label of its metrics.
const BACKEND_LABEL: &str = "embedded";
/// Indexing memory of one writer; tantivy needs at least 15 MB per thread.
const WRITER_BYTES: usize = 64 * 1024 * 1024;

/// A collection nobody used for this long is closed.
const IDLE_CLOSE: Duration = Duration::from_secs(60);
/// How often idle collections are looked for.
const IDLE_SWEEP: Duration = Duration::from_secs(10);

pub struct EmbeddedStore {
    root: PathBuf,
    indices: Arc<Mutex<HashMap<String, OpenCollection>>>,
}

/// A collection held open, with when it was last used.
struct OpenCollection {
    collection: Arc<Collection>,
    used: Instant,
}

/// Takes out of `indices` the collections unused for `idle` at `now`, with
/// nothing uncommitted and no one holding them (an ingestion between two
/// calls holds none; its next call opens the collection again); returns
/// them, to be dropped (which closes them) outside the lock.
fn take_idle(indices: &Mutex<HashMap<String, OpenCollection>>, idle: Duration, now: Instant) -> Vec<Arc<Collection>> {
    let mut indices = indices.lock().expect("index map poisoned");
    let closing: Vec<String> = indices
        .iter()
        .filter(|(_, open)| {
            now.saturating_duration_since(open.used) >= idle
                && Arc::strong_count(&open.collection) == 1
                && !open.collection.dirty.load(Ordering::Acquire)
        })
        .map(|(name, _)| name.clone())
        .collect();
    let closed = closing.iter().filter_map(|name| indices.remove(name)).map(|open| open.collection).collect();
    crate::telemetry::events::EmbeddedCollectionsOpen { open: indices.len() }.emit();
    closed
}

/// Closes idle collections every [`IDLE_SWEEP`] until the store is dropped.
fn sweep_idle(indices: Weak<Mutex<HashMap<String, OpenCollection>>>) {
    loop {
        std::thread::sleep(IDLE_SWEEP);
        let Some(indices) = indices.upgrade() else { return };
        drop(take_idle(&indices, IDLE_CLOSE, Instant::now()));
    }
}

struct Collection {
    /// The index's directory.
    dir: PathBuf,
    index: Index,
    reader: IndexReader,
    /// Opened on first write, so reading processes never take the writer lock.
    writer: Mutex<Option<IndexWriter>>,
    dirty: AtomicBool,
    id: Field,
    source: Field,
    body: Field,
}

fn schema() -> (Schema, Field, Field, Field) {
    let mut builder = Schema::builder();
    let id = builder.add_text_field("_id", STRING | STORED);
    let source = builder.add_text_field("_source", STORED);
    // Fast (columnar) too, so range queries such as `total_eur:[500 TO *]` work.
    let body = builder.add_json_field("doc", JsonObjectOptions::from(TEXT).set_fast(None));
    (builder.build(), id, source, body)
}

fn sink_error(context: &str, error: impl std::fmt::Display) -> SinkError {
    SinkError::new(BACKEND, format!("{context}: {error}"))
}

impl EmbeddedStore {
    pub fn open(root: &Path) -> Result<Self, SinkError> {
        std::fs::create_dir_all(root).map_err(|e| sink_error(&format!("cannot create {}", root.display()), e))?;
        let indices = Arc::new(Mutex::new(HashMap::new()));
        let weak = Arc::downgrade(&indices);
        std::thread::Builder::new()
            .name("embedded-store-idle".into())
            .spawn(move || sweep_idle(weak))
            .map_err(|e| sink_error("cannot start the thread that closes idle collections", e))?;
        Ok(EmbeddedStore { root: root.to_path_buf(), indices })
    }

    /// Collections open now.
    #[cfg(test)]
    fn open_collections(&self) -> usize {
        self.indices.lock().expect("index map poisoned").len()
    }

    fn collection(&self, index: &str, create: bool) -> Result<Option<Arc<Collection>>, SinkError> {
        let mut indices = self.indices.lock().expect("index map poisoned");
        if let Some(open) = indices.get_mut(index) {
            open.used = Instant::now();
            return Ok(Some(open.collection.clone()));
        }
        let dir = self.root.join(index);
        if !dir.exists() && !create {
            return Ok(None);
        }
        std::fs::create_dir_all(&dir).map_err(|e| sink_error(&format!("cannot create {}", dir.display()), e))?;
        let (schema, id, source, body) = schema();
        let directory = tantivy::directory::MmapDirectory::open(&dir).map_err(|e| sink_error(index, e))?;
        let tantivy_index = Index::open_or_create(directory, schema).map_err(|e| sink_error(index, e))?;
        let reader = tantivy_index.reader_builder().reload_policy(ReloadPolicy::Manual).try_into().map_err(|e| sink_error(index, e))?;
        let collection = Arc::new(Collection {
            dir: dir.clone(),
            index: tantivy_index,
            reader,
            writer: Mutex::new(None),
            dirty: AtomicBool::new(false),
            id,
            source,
            body,
        });
        indices.insert(index.to_string(), OpenCollection { collection: collection.clone(), used: Instant::now() });
        crate::telemetry::events::EmbeddedCollectionsOpen { open: indices.len() }.emit();
        Ok(Some(collection))
    }
}

impl Collection {
    fn with_writer<R>(&self, f: impl FnOnce(&mut IndexWriter) -> Result<R, SinkError>) -> Result<R, SinkError> {
        let mut slot = self.writer.lock().expect("writer poisoned");
        if slot.is_none() {
            let writer = self
                .index
                .writer(WRITER_BYTES)
                .map_err(|e| sink_error("cannot open the index for writing (is another mysimbdp process writing to it?)", e))?;
            *slot = Some(writer);
        }
        let result = f(slot.as_mut().expect("writer just opened"));
        if let Err(error) = result {
            // A writer that failed (a full disk) is dropped with what it had
            // not committed: the ingestion fails and is done again, by a new
            // one. tantivy's error rarely names the cause: a write here does.
            slot.take();
            return Err(match crate::framed::probe_dir(&self.dir) {
                Err(cause) => SinkError::new(BACKEND, format!("{}; writing to the store's directory fails: {cause}", error.message)),
                Ok(()) => error,
            });
        }
        result
    }

    fn index_docs(&self, docs: &Docs) -> Result<BulkOutcome, SinkError> {
        let mut outcome = BulkOutcome::default();
        self.with_writer(|writer| {
            for (i, doc) in docs.iter().enumerate() {
                let value: serde_json::Value = match serde_json::from_str(doc.source) {
                    Ok(value @ serde_json::Value::Object(_)) => value,
                    Ok(_) => {
                        outcome.failed.push(ItemFailure { index: i, status: 400, reason: "the document is not a JSON object".into() });
                        continue;
                    }
                    Err(e) => {
                        outcome.failed.push(ItemFailure { index: i, status: 400, reason: format!("the document is not valid JSON: {e}") });
                        continue;
                    }
                };
                if let Some(reason) = super::refused_field_name(doc.source) {
                    outcome.failed.push(ItemFailure { index: i, status: 400, reason });
                    continue;
                }
                let mut document = TantivyDocument::default();
                document.add_text(self.id, doc.id);
                document.add_text(self.source, doc.source);
                document.add_field_value(self.body, &OwnedValue::from(value));
                writer.delete_term(Term::from_field_text(self.id, doc.id));
                writer.add_document(document).map_err(|e| sink_error("add document", e))?;
                outcome.indexed += 1;
            }
            Ok(())
        })?;
        self.dirty.store(true, Ordering::Release);
        Ok(outcome)
    }

    fn commit(&self) -> Result<(), SinkError> {
        if self.dirty.swap(false, Ordering::AcqRel) {
            self.with_writer(|writer| writer.commit().map(drop).map_err(|e| sink_error("commit", e)))?;
        }
        self.reader.reload().map_err(|e| sink_error("reload", e))
    }

    /// Runs `request` under its deadline, on the calling (blocking) thread.
    fn search(&self, request: &SearchRequest) -> Result<SearchResult, SearchError> {
        let _running = SearchRunning::start(BACKEND_LABEL);
        let deadline = Deadline::new(Instant::now() + request.timeout);
        let timed_out = || SearchError::TimedOut { timeout_ms: request.timeout.as_millis() as u64 };
        self.reader.reload().map_err(|e| sink_error("reload", e))?;
        let searcher = self.reader.searcher();
        let text = &request.query;
        let query: Box<dyn Query> = if text.trim().is_empty() {
            Box::new(AllQuery)
        } else {
            let mut parser = QueryParser::for_index(&self.index, vec![self.body]);
            parser.set_conjunction_by_default();
            let invalid = |reason: String| SearchError::Invalid { query: text.clone(), reason };
            // The grammar panics on some inputs (`*^`, `*(`, `a - *`): an invalid query, not a host failure.
            let parsed = std::panic::catch_unwind(|| tantivy::query_grammar::parse_query(text));
            let ast = match parsed {
                Ok(Ok(ast)) => ast,
                Ok(Err(_)) => return Err(invalid("not valid query-string syntax".into())),
                Err(_) => return Err(invalid("not valid query-string syntax (a `*` where a term was expected)".into())),
            };
            let built = std::panic::catch_unwind(|| parser.build_query_from_user_input_ast(into_document_paths(ast)));
            match built {
                Ok(built) => built.map_err(|e| invalid(e.to_string()))?,
                Err(_) => return Err(cannot_run(text)),
            }
        };
        // tantivy asserts on some queries its parser builds (a range on a
        // date field whose other bound is no date panicked while scoring, a
        // 502 found by the fuzz suite): the query is refused as invalid, and
        // the search, which changes nothing, leaves the collection as it was.
        let searched = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            if request.limit == 0 {
                searcher.search(&query, &WithDeadline { inner: Count, deadline: &deadline }).map(|total| (total, Vec::new()))
            } else {
                let top = TopDocs::with_limit(request.limit).and_offset(request.offset).order_by_score();
                searcher.search(&query, &WithDeadline { inner: (Count, top), deadline: &deadline })
            }
        }))
        .map_err(|_| cannot_run(text))?;
        let (total, top) = match searched {
            Ok(found) => found,
            Err(_) if deadline.passed() => return Err(timed_out()),
            Err(error) => return Err(sink_error("search", error).into()),
        };
        let mut hits = Vec::with_capacity(top.len());
        for (score, address) in top {
            let document: TantivyDocument = searcher.doc(address).map_err(|e| sink_error("read", e))?;
            let id = document.get_first(self.id).and_then(|v| v.as_str()).unwrap_or_default().to_string();
            let source = document.get_first(self.source).and_then(|v| v.as_str()).unwrap_or("{}");
            let source = serde_json::from_str(source).unwrap_or(serde_json::Value::Null);
            hits.push(Hit { id, score, source });
        }
        Ok(SearchResult { total: total as u64, hits })
    }
}

/// A query tantivy panicked on: invalid, never a failure of the store.
fn cannot_run(query: &str) -> SearchError {
    SearchError::Invalid {
        query: query.to_string(),
        reason: "the store cannot run this query (a range whose bounds are of different types, say): write it another way".into(),
    }
}

/// Field paths in a query are paths inside the document, as in
/// Elasticsearch's query string: `customer.country:fi` means
/// `doc.customer.country:fi`. `_id` stays the id field.
fn into_document_paths(ast: UserInputAst) -> UserInputAst {
    fn path(field: String) -> String {
        if field == "_id" || field.starts_with("doc.") { field } else { format!("doc.{field}") }
    }
    match ast {
        UserInputAst::Clause(clauses) => {
            UserInputAst::Clause(clauses.into_iter().map(|(occur, ast)| (occur, into_document_paths(ast))).collect())
        }
        UserInputAst::Boost(ast, boost) => UserInputAst::Boost(Box::new(into_document_paths(*ast)), boost),
        UserInputAst::Leaf(leaf) => UserInputAst::Leaf(Box::new(match *leaf {
            UserInputLeaf::Literal(mut literal) => {
                literal.field_name = literal.field_name.map(path);
                UserInputLeaf::Literal(literal)
            }
            UserInputLeaf::Range { field, lower, upper } => UserInputLeaf::Range { field: field.map(path), lower, upper },
            UserInputLeaf::Set { field, elements } => UserInputLeaf::Set { field: field.map(path), elements },
            UserInputLeaf::Exists { field } => UserInputLeaf::Exists { field: path(field) },
            UserInputLeaf::Regex { field, pattern } => UserInputLeaf::Regex { field: field.map(path), pattern },
            UserInputLeaf::All => UserInputLeaf::All,
        })),
    }
}

#[async_trait]
impl DocumentStore for EmbeddedStore {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn ensure_index(&self, index: &str, _mappings: Option<&serde_json::Value>) -> Result<(), SinkError> {
        self.collection(index, true).map(drop)
    }

    async fn bulk_index(&self, index: &str, docs: &Docs) -> Result<BulkOutcome, SinkError> {
        let collection = self.collection(index, true)?.expect("created");
        let docs = docs.clone();
        blocking(BACKEND, move || collection.index_docs(&docs)).await
    }

    /// A tantivy commit makes documents durable and searchable at once.
    async fn flush(&self, index: &str, _searchable: bool) -> Result<(), SinkError> {
        match self.collection(index, false)? {
            Some(collection) => blocking(BACKEND, move || collection.commit()).await,
            None => Ok(()),
        }
    }

    async fn search(&self, index: &str, request: &SearchRequest) -> Result<SearchResult, SearchError> {
        match self.collection(index, false)? {
            Some(collection) => {
                let request = request.clone();
                // The thread ends at the deadline: the answer waits for it, so
                // no search outlives its request.
                tokio::task::spawn_blocking(move || collection.search(&request))
                    .await
                    .map_err(|e| SearchError::Store(SinkError::new(BACKEND, format!("worker: {e}"))))?
            }
            None => Ok(SearchResult { total: 0, hits: Vec::new() }),
        }
    }

    async fn count(&self, index: &str) -> Result<u64, SinkError> {
        match self.collection(index, false)? {
            Some(collection) => {
                collection.reader.reload().map_err(|e| sink_error("reload", e))?;
                Ok(collection.reader.searcher().num_docs())
            }
            None => Ok(0),
        }
    }

    async fn indices(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let mut names = Vec::new();
        let entries = std::fs::read_dir(&self.root).map_err(|e| sink_error("list indices", e))?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(prefix) && entry.path().is_dir() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    async fn delete_index(&self, index: &str) -> Result<(), SinkError> {
        self.indices.lock().expect("index map poisoned").remove(index);
        let dir = self.root.join(index);
        if dir.exists() {
            std::fs::remove_dir_all(&dir).map_err(|e| sink_error("delete index", e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn write(store: &EmbeddedStore, index: &str, flush: bool) {
        let mut docs = Docs::with_capacity(3, 64);
        for i in 0..3 {
            docs.push(&format!("d{i}"), &format!("{{\"n\":{i}}}"));
        }
        store.bulk_index(index, &docs).await.unwrap();
        if flush {
            store.flush(index, true).await.unwrap();
        }
    }

    /// Queries tantivy panicked on while building or scoring them (found
    /// by the fuzz suite's search of an embedded collection) are invalid
    /// queries, and the collection answers the next one.
    #[tokio::test]
    async fn a_query_tantivy_panics_on_is_invalid_and_the_collection_answers_the_next() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        let mut docs = Docs::with_capacity(2, 128);
        docs.push("a", r#"{"at":"2026-11-01T10:00:00Z","n":1}"#);
        docs.push("b", r#"{"at":"2026-11-02T10:00:00Z","n":2}"#);
        store.bulk_index("t-dates", &docs).await.unwrap();
        store.flush("t-dates", true).await.unwrap();
        let request = |query: &str| SearchRequest { query: query.into(), limit: 10, offset: 0, timeout: Duration::from_secs(5) };
        // The lower bound is a date, so the upper must be one too (the
        // other way round, tantivy reads both as text and finds nothing).
        match store.search("t-dates", &request("at:[2026-11-01T00:00:00Z TO x]")).await {
            Err(SearchError::Invalid { reason, .. }) => assert!(reason.contains("cannot run this query"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert_eq!(store.search("t-dates", &request("at:[x TO 2026-11-01T00:00:00Z]")).await.unwrap().total, 0);
        let found = store.search("t-dates", &request("at:[2026-11-02T00:00:00Z TO *]")).await.unwrap();
        assert_eq!(found.total, 1);
    }

    #[tokio::test]
    async fn idle_collections_are_closed_and_open_again_on_use() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(dir.path()).unwrap();
        // Every collection below is used at or after this instant.
        let start = Instant::now();
        for index in ["t-a", "t-b", "t-c"] {
            write(&store, index, true).await;
        }
        write(&store, "t-dirty", false).await;
        let held = store.collection("t-c", false).unwrap().unwrap();
        assert_eq!(store.open_collections(), 4);

        let later = Instant::now() + IDLE_CLOSE;
        assert!(take_idle(&store.indices, IDLE_CLOSE, start).is_empty(), "none idle yet");
        let mut closed: Vec<PathBuf> = take_idle(&store.indices, IDLE_CLOSE, later).iter().map(|c| c.dir.clone()).collect();
        closed.sort();
        assert_eq!(closed, [dir.path().join("t-a"), dir.path().join("t-b")], "held and uncommitted collections stay open");
        assert_eq!(store.open_collections(), 2);

        // Opened again on use, with what was committed, and writable.
        assert_eq!(store.count("t-a").await.unwrap(), 3);
        write(&store, "t-a", true).await;
        assert_eq!(store.count("t-a").await.unwrap(), 3, "the same ids replaced");
        // A use starts the idle time again.
        store.indices.lock().unwrap().get_mut("t-a").unwrap().used -= IDLE_CLOSE;
        let before_use = Instant::now();
        assert_eq!(store.count("t-a").await.unwrap(), 3);
        assert!(take_idle(&store.indices, IDLE_CLOSE, before_use).is_empty(), "t-a was just used");
        drop(held);
        store.flush("t-dirty", true).await.unwrap();
        assert_eq!(take_idle(&store.indices, IDLE_CLOSE, later + IDLE_CLOSE).len(), 3);
        assert_eq!(store.open_collections(), 0);
        assert_eq!(store.count("t-dirty").await.unwrap(), 3);
    }
}
