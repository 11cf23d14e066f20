//! `dead-letter`: records the guest rejects go to the tenant's dead-letter
//! topic with the reason, so nothing is silently dropped.

use super::HostState;
use crate::deadletter::{self, DeadLetter, header};
use crate::runtime::bindings::batch::mysimbdp::pipeline::dead_letter;
use crate::runtime::bindings::{DeadRecord, GuestError};

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
        match deadletter::send(services.messaging.as_ref(), &tenant, letters).await {
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
