//! The CLI's side of the control API.

use super::ApiError;
use anyhow::Context;
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::time::Duration;

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for the host at `addr` if one answers there.
    pub async fn connect(addr: SocketAddr) -> Option<ApiClient> {
        let http = reqwest::Client::builder().timeout(Duration::from_secs(24 * 3600)).build().ok()?;
        let client = ApiClient { base: format!("http://{addr}"), http };
        let health = client.http.get(format!("{}/api/health", client.base)).timeout(Duration::from_millis(700)).send().await;
        match health {
            Ok(response) if response.status().is_success() => Some(client),
            _ => None,
        }
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub async fn get<T: DeserializeOwned>(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<T> {
        let response = self.http.get(format!("{}{path}", self.base)).query(query).send().await;
        decode(path, response).await
    }

    pub async fn post<B: Serialize, T: DeserializeOwned>(&self, path: &str, body: &B) -> anyhow::Result<T> {
        let response = self.http.post(format!("{}{path}", self.base)).json(body).send().await;
        decode(path, response).await
    }
}

async fn decode<T: DeserializeOwned>(path: &str, response: reqwest::Result<reqwest::Response>) -> anyhow::Result<T> {
    let response = response.with_context(|| format!("the host did not answer {path}"))?;
    let status = response.status();
    let text = response.text().await.with_context(|| format!("reading the answer to {path}"))?;
    if !status.is_success() {
        let message = serde_json::from_str::<ApiError>(&text).map(|e| e.error).unwrap_or(text);
        anyhow::bail!("{message}");
    }
    serde_json::from_str(&text).with_context(|| format!("unexpected answer to {path}: {text}"))
}
