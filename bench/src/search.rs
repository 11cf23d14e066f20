//! OpenSearch through its REST API, as the benchmarks' direct loaders and
//! their checks see it, independently of the host.

use serde_json::{Value, json};

#[derive(Clone)]
pub struct Search {
    url: String,
    http: reqwest::Client,
}

impl Search {
    pub fn new(url: &str) -> Search {
        Search { url: url.trim_end_matches('/').to_string(), http: reqwest::Client::new() }
    }

    pub async fn health(&self) -> anyhow::Result<()> {
        self.http.get(format!("{}/_cluster/health", self.url)).send().await?.error_for_status()?;
        Ok(())
    }

    /// Creates `index` with `mappings` (`{}`: none), as the host does.
    pub async fn create(&self, index: &str, mappings: &Value) -> anyhow::Result<()> {
        self.http.put(format!("{}/{index}", self.url)).json(&json!({ "mappings": mappings })).send().await?.error_for_status()?;
        Ok(())
    }

    /// One `_bulk` request into `index`; any item refused is an error.
    pub async fn bulk(&self, index: &str, body: String) -> anyhow::Result<()> {
        let answer: Value = self
            .http
            .post(format!("{}/{index}/_bulk?filter_path=errors,items.*.error", self.url))
            .header("content-type", "application/x-ndjson")
            .body(body)
            .send()
            .await?
            .error_for_status()?
            .json()
            .await?;
        anyhow::ensure!(answer["errors"] == false, "bulk into {index} failed: {answer}");
        Ok(())
    }

    /// Makes what `index` holds searchable.
    pub async fn refresh(&self, index: &str) -> anyhow::Result<()> {
        self.http.post(format!("{}/{index}/_refresh", self.url)).send().await?.error_for_status()?;
        Ok(())
    }

    /// Documents in `index` after a refresh (0 while it does not exist).
    pub async fn refresh_count(&self, index: &str) -> anyhow::Result<u64> {
        let refreshed = self.http.post(format!("{}/{index}/_refresh", self.url)).send().await?;
        if refreshed.status() == reqwest::StatusCode::NOT_FOUND {
            return Ok(0);
        }
        let answer: Value = self.http.get(format!("{}/{index}/_count", self.url)).send().await?.json().await?;
        Ok(answer["count"].as_u64().unwrap_or(0))
    }

    /// Which of the sensor ids are searchable now (no refresh: what a user sees).
    pub async fn find(&self, index: &str, sensor_ids: &[String]) -> anyhow::Result<Vec<String>> {
        let query = sensor_ids.iter().map(|id| format!("sensor_id:\"{id}\"")).collect::<Vec<_>>().join(" OR ");
        let body = json!({ "query": { "query_string": { "query": query } }, "size": sensor_ids.len(), "_source": ["sensor_id"] });
        let response = self.http.post(format!("{}/{index}/_search", self.url)).json(&body).send().await?;
        // Not created yet, or created but its shard not started yet: nothing is searchable.
        if matches!(response.status(), reqwest::StatusCode::NOT_FOUND | reqwest::StatusCode::SERVICE_UNAVAILABLE) {
            return Ok(Vec::new());
        }
        let answer: Value = response.error_for_status()?.json().await?;
        Ok(answer["hits"]["hits"]
            .as_array()
            .map(|hits| hits.iter().filter_map(|h| h["_source"]["sensor_id"].as_str().map(str::to_string)).collect())
            .unwrap_or_default())
    }

    pub async fn delete(&self, pattern: &str) {
        let _ = self.http.delete(format!("{}/{pattern}", self.url)).send().await;
    }
}
