//! The host's HTTP side: the control API the CLI talks to, `/metrics` for
//! Prometheus, and the operator page.

pub mod client;
pub(crate) mod connections;
mod guard;
pub mod page;
mod server;

pub use client::ApiClient;
pub use server::{AppState, router};

use serde::{Deserialize, Serialize};
use std::path::PathBuf;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IngestRequest {
    pub tenant: String,
    #[serde(default)]
    pub pipeline: Option<String>,
    /// An absolute path on the host's machine.
    pub path: PathBuf,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryRequest {
    pub tenant: String,
    pub collection: String,
    #[serde(default)]
    pub q: String,
    #[serde(default = "default_limit")]
    pub limit: usize,
    /// Matching documents to skip, for paging (`offset + limit` at most 10,000).
    #[serde(default)]
    pub offset: usize,
}

fn default_limit() -> usize {
    10
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ApiError {
    pub error: String,
}

/// `POST /api/batch/retry`: failed (and with `quarantined`, quarantined)
/// files of a tenant back to staging; `files` narrows it down by staged name.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RetryRequest {
    pub tenant: String,
    #[serde(default)]
    pub files: Vec<String>,
    #[serde(default)]
    pub quarantined: bool,
}

/// `POST /api/tenant/suspend` and `/api/tenant/resume` (the operator's).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantRequest {
    pub tenant: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamRequest {
    pub tenant: String,
    #[serde(default)]
    pub instances: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProduceRequest {
    pub tenant: String,
    /// Without the tenant prefix.
    pub topic: String,
    pub messages: Vec<ProducedMessage>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProducedMessage {
    #[serde(default)]
    pub key: Option<String>,
    pub value: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProduceAnswer {
    /// The full topic name.
    pub topic: String,
    pub count: usize,
}

impl ProduceRequest {
    pub fn records(&self) -> Vec<crate::backends::OutRecord> {
        self.messages
            .iter()
            .map(|m| crate::backends::OutRecord {
                key: m.key.as_ref().map(|k| k.clone().into_bytes()),
                value: m.value.clone().into_bytes(),
                headers: Vec::new(),
            })
            .collect()
    }
}
