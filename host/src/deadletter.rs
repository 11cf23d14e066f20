//! The dead-letter topic: every record a tenant's pipeline or store refused,
//! with headers that say why and where it came from. One topic per tenant,
//! `<tenant>.dead-letter`, on the platform's message bus.

use crate::backends::{Header, MessageBus, OutRecord, SinkError};
use crate::config::TenantId;

pub const TOPIC: &str = "dead-letter";

pub fn topic(tenant: &TenantId) -> String {
    format!("{tenant}.{TOPIC}")
}

/// Header names, stable for operators' tools.
pub mod header {
    pub const ERROR_KIND: &str = "error-kind";
    pub const REASON: &str = "error-reason";
    pub const TENANT: &str = "tenant";
    pub const PIPELINE: &str = "pipeline";
    pub const PIPELINE_VERSION: &str = "pipeline-version";
    pub const ORIGIN: &str = "origin";
    pub const SOURCE_TOPIC: &str = "source-topic";
    pub const SOURCE_PARTITION: &str = "source-partition";
    pub const SOURCE_OFFSET: &str = "source-offset";
}

/// A refused record and the headers that explain it.
pub struct DeadLetter {
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    pub headers: Vec<Header>,
}

impl DeadLetter {
    pub fn new(payload: Vec<u8>, error_kind: &str, reason: &str) -> Self {
        DeadLetter {
            key: None,
            payload,
            headers: vec![(header::ERROR_KIND.into(), error_kind.as_bytes().to_vec()), (header::REASON.into(), reason.as_bytes().to_vec())],
        }
    }

    pub fn header(mut self, name: &str, value: impl ToString) -> Self {
        self.headers.push((name.into(), value.to_string().into_bytes()));
        self
    }
}

/// Publishes `letters` to the tenant's dead-letter topic and waits for the
/// broker's acknowledgement.
pub async fn send(bus: &dyn MessageBus, tenant: &TenantId, letters: Vec<DeadLetter>) -> Result<(), SinkError> {
    if letters.is_empty() {
        return Ok(());
    }
    let records = letters.into_iter().map(|letter| OutRecord { key: letter.key, value: letter.payload, headers: letter.headers }).collect();
    bus.publish(&topic(tenant), records).await
}
