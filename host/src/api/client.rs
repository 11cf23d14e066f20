//! The CLI's side of the control API.

use super::ApiError;
use crate::config::ApiConfig;
use anyhow::Context;
use reqwest::header::{AUTHORIZATION, HeaderMap, HeaderValue};
use serde::Serialize;
use serde::de::DeserializeOwned;
use std::time::Duration;

#[derive(Clone)]
pub struct ApiClient {
    base: String,
    http: reqwest::Client,
}

impl ApiClient {
    /// A client for the host at `api.listen` if one answers there; it sends
    /// the token of `api.token_file`, if any, with every request.
    pub async fn connect(api: &ApiConfig) -> Option<ApiClient> {
        let mut headers = HeaderMap::new();
        if let Some(token) = api.client_token.as_ref().or(api.token.as_ref()) {
            // Visible ASCII, checked when the config was loaded.
            let mut value = HeaderValue::from_str(&format!("Bearer {}", token.0)).ok()?;
            value.set_sensitive(true);
            headers.insert(AUTHORIZATION, value);
        }
        let http = reqwest::Client::builder().timeout(Duration::from_secs(24 * 3600)).default_headers(headers).build().ok()?;
        let client = ApiClient { base: format!("http://{}", api.listen), http };
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
