//! The dead-letter topic, and the `dead-letter` import: every record a
//! tenant's pipeline or store refused goes to the tenant's own topic,
//! `<tenant>.dead-letter` on the platform's message bus, with headers that
//! say why and where it came from, so nothing is silently dropped.

use super::HostState;
use super::bindings::batch::mysimbdp::pipeline::dead_letter;
use super::bindings::{DeadRecord, GuestError};
use crate::backends::{Header, MessageBus, OutRecord, SinkError};
use crate::config::TenantId;

pub use crate::config::DEAD_LETTER_TOPIC as TOPIC;

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

const MAX_RECORDS_PER_CALL: usize = 10_000;

impl dead_letter::Host for HostState {
    async fn send(&mut self, records: Vec<DeadRecord>) -> wasmtime::Result<Result<(), GuestError>> {
        if records.len() > MAX_RECORDS_PER_CALL {
            return Ok(Err(GuestError::QuotaExceeded(format!(
                "{} dead records in one call; send at most {MAX_RECORDS_PER_CALL}",
                records.len()
            ))));
        }
        let letters: Vec<DeadLetter> = records
            .into_iter()
            .map(|record| self.letter(record.payload, "rejected", &record.reason).header(header::ORIGIN, record.origin))
            .collect();
        Ok(self.send_dead_letters(letters).await)
    }
}

impl HostState {
    /// A dead letter with this invocation's tenant and pipeline in its headers.
    pub(crate) fn letter(&self, payload: Vec<u8>, error_kind: &str, reason: &str) -> DeadLetter {
        DeadLetter::new(payload, error_kind, reason)
            .header(header::TENANT, &self.scope.tenant.id)
            .header(header::PIPELINE, &self.scope.pipeline)
            .header(header::PIPELINE_VERSION, self.scope.version)
    }

    /// Publishes dead letters; a failure is a sink error of the invocation.
    pub(crate) async fn send_dead_letters(&mut self, letters: Vec<DeadLetter>) -> Result<(), GuestError> {
        let count = letters.len() as u64;
        let services = self.scope.services.clone();
        let tenant = self.scope.tenant.id.clone();
        match send(services.messaging.as_ref(), &tenant, letters).await {
            Ok(()) => {
                self.effects.dead_lettered += count;
                Ok(())
            }
            Err(error) => {
                let message = format!("dead-letter topic: {error}");
                self.effects.sink_error.get_or_insert(message.clone());
                Err(GuestError::Unavailable(message))
            }
        }
    }
}
