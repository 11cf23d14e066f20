//! The Elasticsearch/OpenSearch document store, through the official
//! `elasticsearch` crate. Only APIs both products share are used (`_bulk`,
//! `_search` with `query_string`, `_count`, `_refresh`, index create/delete,
//! `_cat/indices`), so OpenSearch 2.x and Elasticsearch 7/8 both work.
//!
//! `_bulk` is checked item by item: 429 and 5xx items are retried with
//! exponential backoff, 4xx items are reported back (the caller dead-letters
//! them: the document is bad). Items still refused for load after the
//! retries fail the whole write as a sink error: an overloaded cluster says
//! nothing about the data, so nothing is dead-lettered and the ingestion is
//! retried later. The document id is always set, so a retry or a re-run
//! overwrites instead of duplicating.
//!
//! About 400 lines, and whole on purpose: it is one [`DocumentStore`]
//! implementation on one client, and most of it is the `_bulk` retry and
//! verdict logic above, which splitting would separate from the one call
//! (`bulk_index`) that uses it.

use super::{BulkOutcome, Doc, Docs, DocumentStore, Hit, ItemFailure, SearchError, SearchRequest, SearchResult, SinkError};
use crate::config::ElasticsearchConfig;
use crate::retry::Backoff;
use crate::telemetry::events::SearchRunning;
use async_trait::async_trait;
use elasticsearch::auth::Credentials;
use elasticsearch::cat::CatIndicesParts;
use elasticsearch::http::StatusCode;
use elasticsearch::http::response::Response;
use elasticsearch::http::transport::{SingleNodeConnectionPool, TransportBuilder};
use elasticsearch::indices::{IndicesCreateParts, IndicesDeleteParts, IndicesExistsParts, IndicesRefreshParts};
use elasticsearch::{BulkParts, CountParts, Elasticsearch, SearchParts};
use serde_json::{Value, json};
use std::borrow::Cow;
use std::time::Duration;

const BACKEND: &str = "elasticsearch";
/// Waits before a `_bulk` request or its refused items are sent again.
const BULK_RETRY: Backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
/// How much longer than its own `timeout` a search may take to be answered:
/// the cluster checks its timeout between segments and still has to reply.
const SEARCH_ANSWER_GRACE: Duration = Duration::from_secs(2);

pub struct ElasticStore {
    client: Elasticsearch,
    url: String,
    max_retries: u32,
}

fn sink_error(context: &str, error: impl std::fmt::Display) -> SinkError {
    SinkError::new(BACKEND, format!("{context}: {error}"))
}

/// 429 and 5xx are worth another try; other statuses will not change.
fn retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

/// What becomes of one `_bulk` item, by its status, on attempt `attempt`
/// (1 for the first) when `max_retries` retries are allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ItemVerdict {
    Indexed,
    /// Refused for load (429, 5xx): sent again after a wait.
    Retry,
    /// Still refused for load after the retries: the write fails, retryable.
    Overloaded,
    /// Refused for good: a bad document (4xx).
    Refused,
}

fn item_verdict(status: u16, attempt: u32, max_retries: u32) -> ItemVerdict {
    match status {
        200..=299 => ItemVerdict::Indexed,
        status if retryable(status) && attempt <= max_retries => ItemVerdict::Retry,
        status if retryable(status) => ItemVerdict::Overloaded,
        _ => ItemVerdict::Refused,
    }
}

impl ElasticStore {
    pub fn connect(config: &ElasticsearchConfig) -> Result<Self, SinkError> {
        let url = elasticsearch::http::Url::parse(&config.url).map_err(|e| sink_error(&format!("url `{}`", config.url), e))?;
        let mut transport =
            TransportBuilder::new(SingleNodeConnectionPool::new(url)).timeout(Duration::from_millis(config.request_timeout_ms));
        if let (Some(user), Some(password)) = (&config.username, &config.password) {
            transport = transport.auth(Credentials::Basic(user.clone(), password.clone()));
        }
        let transport = transport.build().map_err(|e| sink_error("client", e))?;
        Ok(ElasticStore { client: Elasticsearch::new(transport), url: config.url.clone(), max_retries: config.max_retries })
    }

    fn unreachable(&self, context: &str, error: impl std::fmt::Display) -> SinkError {
        sink_error(&format!("{context} at {}", self.url), error)
    }

    /// Reads a response body, turning an error status into a `SinkError`.
    async fn json(&self, context: &str, response: Response) -> Result<Value, SinkError> {
        let status = response.status_code();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            let reason = body.pointer("/error/reason").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| body.to_string());
            return Err(sink_error(context, format!("HTTP {status}: {reason}")));
        }
        Ok(body)
    }

    /// One `_bulk` request for the documents at `positions`; returns the
    /// outcome of each position.
    /// `sources` are the documents' JSON texts made one line each.
    async fn bulk_once(
        &self,
        index: &str,
        docs: &Docs,
        sources: &[Cow<'_, str>],
        positions: &[usize],
    ) -> Result<Vec<(usize, u16, Option<String>)>, SinkError> {
        let mut lines: Vec<String> = Vec::with_capacity(positions.len() * 2);
        for &i in positions {
            let id = docs.get(i).expect("positions are documents of `docs`").id;
            lines.push(json!({ "index": { "_id": id } }).to_string());
            lines.push(sources[i].to_string());
        }
        let response = self
            .client
            .bulk(BulkParts::Index(index))
            .filter_path(&["errors", "items.*.status", "items.*.error.type", "items.*.error.reason"])
            .body(lines)
            .send()
            .await
            .map_err(|e| self.unreachable("bulk", e))?;
        let status = response.status_code();
        if retryable(status.as_u16()) {
            return Err(sink_error("bulk", format!("HTTP {status}")));
        }
        let body = self.json(&format!("bulk into {index}"), response).await?;
        let items = body.get("items").and_then(Value::as_array).cloned().unwrap_or_default();
        if items.len() != positions.len() {
            return Err(sink_error("bulk", format!("{} items answered for {} sent", items.len(), positions.len())));
        }
        Ok(positions
            .iter()
            .zip(items)
            .map(|(&i, item)| {
                let result = item.get("index").cloned().unwrap_or(Value::Null);
                let status = result.get("status").and_then(Value::as_u64).unwrap_or(500) as u16;
                let error = result.get("error").map(|e| {
                    let kind = e.get("type").and_then(Value::as_str).unwrap_or("error");
                    let reason = e.get("reason").and_then(Value::as_str).unwrap_or("");
                    format!("{kind}: {reason}")
                });
                (i, status, error)
            })
            .collect())
    }
}

/// Makes a document's JSON text one line, as `_bulk` needs; `None` if it is
/// not JSON.
fn one_line(doc: Doc<'_>) -> Option<Cow<'_, str>> {
    if !doc.source.contains('\n') {
        return Some(doc.source.into());
    }
    let value: Value = serde_json::from_str(doc.source).ok()?;
    Some(value.to_string().into())
}

#[async_trait]
impl DocumentStore for ElasticStore {
    fn kind(&self) -> &'static str {
        "elasticsearch"
    }

    async fn ensure_index(&self, index: &str, mappings: Option<&Value>) -> Result<(), SinkError> {
        let exists = self
            .client
            .indices()
            .exists(IndicesExistsParts::Index(&[index]))
            .send()
            .await
            .map_err(|e| self.unreachable("index exists", e))?;
        if exists.status_code() == StatusCode::OK {
            return Ok(());
        }
        let mut body = json!({});
        if let Some(mappings) = mappings {
            body["mappings"] = mappings.clone();
        }
        let response = self
            .client
            .indices()
            .create(IndicesCreateParts::Index(index))
            .body(body)
            .send()
            .await
            .map_err(|e| self.unreachable("create index", e))?;
        let status = response.status_code();
        let answer: Value = response.json().await.unwrap_or(Value::Null);
        let already = answer.pointer("/error/type").and_then(Value::as_str) == Some("resource_already_exists_exception");
        if status.is_success() || already {
            Ok(())
        } else {
            Err(sink_error(&format!("create index {index}"), format!("HTTP {status}: {answer}")))
        }
    }

    async fn bulk_index(&self, index: &str, docs: &Docs) -> Result<BulkOutcome, SinkError> {
        let mut outcome = BulkOutcome::default();
        let mut sources = Vec::with_capacity(docs.len());
        let mut pending = Vec::with_capacity(docs.len());
        for (i, doc) in docs.iter().enumerate() {
            if let Some(reason) = super::refused_field_name(doc.source) {
                sources.push(doc.source.into());
                outcome.failed.push(ItemFailure { index: i, status: 400, reason });
                continue;
            }
            match one_line(doc) {
                Some(line) => {
                    sources.push(line);
                    pending.push(i);
                }
                None => {
                    sources.push(doc.source.into());
                    outcome.failed.push(ItemFailure { index: i, status: 400, reason: "the document is not valid JSON".into() });
                }
            }
        }
        let mut waits = BULK_RETRY.waits();
        let mut attempt = 0;
        while !pending.is_empty() {
            attempt += 1;
            let last = attempt > self.max_retries;
            let answers = match self.bulk_once(index, docs, &sources, &pending).await {
                Ok(answers) => answers,
                Err(error) if last => return Err(error),
                Err(error) => {
                    tracing::warn!(%index, attempt, %error, "Bulk request failed; retrying.");
                    tokio::time::sleep(crate::retry::sleep_for(waits.next().unwrap_or(BULK_RETRY.max))).await;
                    continue;
                }
            };
            let mut retry = Vec::new();
            let mut overloaded = Vec::new();
            for (i, status, error) in answers {
                match item_verdict(status, attempt, self.max_retries) {
                    ItemVerdict::Indexed => outcome.indexed += 1,
                    ItemVerdict::Retry => {
                        tracing::debug!(%index, status, error = error.as_deref().unwrap_or(""), "Bulk item will be retried.");
                        retry.push(i);
                    }
                    ItemVerdict::Overloaded => overloaded.push((status, error.unwrap_or_else(|| format!("HTTP {status}")))),
                    ItemVerdict::Refused => {
                        outcome.failed.push(ItemFailure { index: i, status, reason: error.unwrap_or_else(|| format!("HTTP {status}")) })
                    }
                }
            }
            if let Some((status, reason)) = overloaded.first() {
                return Err(sink_error(
                    &format!("bulk into {index}"),
                    format!(
                        "{} of {} documents still refused for load after {} retries (HTTP {status}: {reason}); none is dead-lettered: \
                         the write fails and is retried",
                        overloaded.len(),
                        docs.len(),
                        self.max_retries
                    ),
                ));
            }
            if !retry.is_empty() {
                tokio::time::sleep(crate::retry::sleep_for(waits.next().unwrap_or(BULK_RETRY.max))).await;
            }
            pending = retry;
        }
        outcome.failed.sort_by_key(|f| f.index);
        Ok(outcome)
    }

    /// A `_bulk` answer already means durable (translog); a refresh makes it searchable.
    async fn flush(&self, index: &str, searchable: bool) -> Result<(), SinkError> {
        if !searchable {
            return Ok(());
        }
        let response =
            self.client.indices().refresh(IndicesRefreshParts::Index(&[index])).send().await.map_err(|e| self.unreachable("refresh", e))?;
        if response.status_code() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        self.json(&format!("refresh {index}"), response).await.map(drop)
    }

    /// Elasticsearch's own `timeout` bounds the search on the cluster (it
    /// answers with `timed_out` and what it found so far, which is refused
    /// here: a partial answer would look complete); the request's timeout
    /// bounds the wait for an answer, and dropping it closes the connection,
    /// which makes the cluster cancel the search.
    async fn search(&self, index: &str, request: &SearchRequest) -> Result<SearchResult, SearchError> {
        let _running = SearchRunning::start(BACKEND);
        let timeout_ms = request.timeout.as_millis() as u64;
        let text = request.query.as_str();
        let query = if text.trim().is_empty() { json!({ "match_all": {} }) } else { json!({ "query_string": { "query": text } }) };
        let body = json!({
            "query": query,
            "size": request.limit,
            "from": request.offset,
            "track_total_hits": true,
            "timeout": format!("{timeout_ms}ms"),
        });
        let indices = [index];
        let sent =
            self.client.search(SearchParts::Index(&indices)).body(body).request_timeout(request.timeout + SEARCH_ANSWER_GRACE).send();
        let response = match sent.await {
            Ok(response) => response,
            Err(error) if error.is_timeout() => return Err(SearchError::TimedOut { timeout_ms }),
            Err(error) => return Err(self.unreachable("search", error).into()),
        };
        match response.status_code() {
            StatusCode::NOT_FOUND => return Ok(SearchResult { total: 0, hits: Vec::new() }),
            StatusCode::BAD_REQUEST => {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                let reason = body.pointer("/error/root_cause/0/reason").or_else(|| body.pointer("/error/reason"));
                let reason = reason.and_then(Value::as_str).unwrap_or("refused by the cluster").to_string();
                return Err(SearchError::Invalid { query: text.to_string(), reason });
            }
            status if !status.is_success() => {
                let body: Value = response.json().await.unwrap_or(Value::Null);
                if stopped_at_time_bound(&body) {
                    return Err(SearchError::TimedOut { timeout_ms });
                }
                let reason = body.pointer("/error/reason").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| body.to_string());
                return Err(sink_error(&format!("search {index}"), format!("HTTP {status}: {reason}")).into());
            }
            _ => {}
        }
        let body = self.json(&format!("search {index}"), response).await?;
        if body.get("timed_out").and_then(Value::as_bool) == Some(true) {
            return Err(SearchError::TimedOut { timeout_ms });
        }
        let total = body.pointer("/hits/total/value").and_then(Value::as_u64).unwrap_or(0);
        let hits = body
            .pointer("/hits/hits")
            .and_then(Value::as_array)
            .map(|hits| {
                hits.iter()
                    .map(|hit| Hit {
                        id: hit.get("_id").and_then(Value::as_str).unwrap_or_default().to_string(),
                        score: hit.get("_score").and_then(Value::as_f64).unwrap_or(0.0) as f32,
                        source: hit.get("_source").cloned().unwrap_or(Value::Null),
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(SearchResult { total, hits })
    }

    async fn count(&self, index: &str) -> Result<u64, SinkError> {
        let response = self.client.count(CountParts::Index(&[index])).send().await.map_err(|e| self.unreachable("count", e))?;
        if response.status_code() == StatusCode::NOT_FOUND {
            return Ok(0);
        }
        let body = self.json(&format!("count {index}"), response).await?;
        Ok(body.get("count").and_then(Value::as_u64).unwrap_or(0))
    }

    async fn indices(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        let pattern = format!("{prefix}*");
        let response = self
            .client
            .cat()
            .indices(CatIndicesParts::Index(&[&pattern]))
            .format("json")
            .send()
            .await
            .map_err(|e| self.unreachable("list indices", e))?;
        let body = self.json("list indices", response).await?;
        let mut names: Vec<String> = body
            .as_array()
            .map(|rows| rows.iter().filter_map(|r| r.get("index").and_then(Value::as_str).map(str::to_string)).collect())
            .unwrap_or_default();
        names.sort();
        Ok(names)
    }

    async fn delete_index(&self, index: &str) -> Result<(), SinkError> {
        let response = self
            .client
            .indices()
            .delete(IndicesDeleteParts::Index(&[index]))
            .send()
            .await
            .map_err(|e| self.unreachable("delete index", e))?;
        if response.status_code() == StatusCode::NOT_FOUND {
            return Ok(());
        }
        self.json(&format!("delete {index}"), response).await.map(drop)
    }
}

/// Whether an error answer to a search says the cluster stopped it at its
/// `timeout`: OpenSearch 2.x answers HTTP 500 `time_exceeded_exception`
/// ("all shards failed") when the bound hits while it expands wildcard or
/// regexp terms, instead of `timed_out: true` with what it found.
fn stopped_at_time_bound(body: &Value) -> bool {
    const TIME_EXCEEDED: &str = "time_exceeded_exception";
    let is_time = |v: &Value| v.get("type").and_then(Value::as_str) == Some(TIME_EXCEEDED);
    let causes = body.pointer("/error/root_cause").and_then(Value::as_array).into_iter().flatten();
    let shards = body.pointer("/error/failed_shards").and_then(Value::as_array).into_iter().flatten().filter_map(|s| s.get("reason"));
    causes.chain(shards).any(is_time) || body.pointer("/error").is_some_and(is_time)
}

#[cfg(test)]
mod tests {
    use super::{ItemVerdict, Value, item_verdict, stopped_at_time_bound};

    #[test]
    fn only_a_time_exceeded_answer_is_a_search_stopped_at_its_bound() {
        let answers = [
            (
                serde_json::json!({ "error": { "root_cause": [{ "type": "time_exceeded_exception", "reason": "Time exceeded" }], "type": "search_phase_execution_exception", "reason": "all shards failed" }, "status": 500 }),
                true,
            ),
            (
                serde_json::json!({ "error": { "root_cause": [], "type": "search_phase_execution_exception", "failed_shards": [{ "shard": 0, "reason": { "type": "time_exceeded_exception" } }] }, "status": 500 }),
                true,
            ),
            (serde_json::json!({ "error": { "type": "time_exceeded_exception", "reason": "Time exceeded" }, "status": 500 }), true),
            (
                serde_json::json!({ "error": { "root_cause": [{ "type": "circuit_breaking_exception" }], "type": "search_phase_execution_exception" }, "status": 500 }),
                false,
            ),
            (serde_json::json!({ "error": { "failed_shards": [{ "reason": { "type": "node_not_connected_exception" } }] } }), false),
            (Value::Null, false),
        ];
        for (answer, stopped) in answers {
            assert_eq!(stopped_at_time_bound(&answer), stopped, "{answer}");
        }
    }

    #[test]
    fn bulk_items_are_retried_for_load_only_and_only_so_often() {
        // (status, attempt, max_retries) -> verdict
        let cases = [
            (200, 1, 5, ItemVerdict::Indexed),
            (201, 6, 5, ItemVerdict::Indexed),
            (429, 1, 5, ItemVerdict::Retry),
            (503, 5, 5, ItemVerdict::Retry),
            (500, 6, 5, ItemVerdict::Overloaded),
            (429, 6, 5, ItemVerdict::Overloaded),
            (429, 1, 0, ItemVerdict::Overloaded),
            (400, 1, 5, ItemVerdict::Refused),
            (409, 1, 5, ItemVerdict::Refused),
            (404, 1, 5, ItemVerdict::Refused),
            (400, 6, 5, ItemVerdict::Refused),
        ];
        for (status, attempt, max_retries, expected) in cases {
            assert_eq!(item_verdict(status, attempt, max_retries), expected, "status {status}, attempt {attempt} of 1 + {max_retries}");
        }
    }
}
