//! `messaging`: publish to the tenant's own topics. A message the broker
//! refuses as bad (too large, invalid) is dead-lettered and the rest are
//! published; a broker that fails or is overloaded fails the call as a sink
//! error, which says nothing about the messages.

use super::HostState;
use super::bindings::batch::mysimbdp::pipeline::messaging;
use super::bindings::{GuestError, Outgoing};
use super::dead_letter::DeadLetter;
use crate::backends::OutRecord;

/// Messages one call may publish.
const MAX_MESSAGES_PER_CALL: usize = 10_000;

impl messaging::Host for HostState {
    async fn publish(&mut self, topic: String, messages: Vec<Outgoing>) -> wasmtime::Result<Result<(), GuestError>> {
        let full = match self.scope.topic_name(&topic) {
            Ok(full) => full,
            Err(reason) => return Ok(Err(self.deny("publish", reason))),
        };
        if messages.len() > MAX_MESSAGES_PER_CALL {
            return Ok(Err(GuestError::QuotaExceeded(format!(
                "{} messages in one publish; send at most {MAX_MESSAGES_PER_CALL} per call",
                messages.len()
            ))));
        }
        if let Err(exceeded) = self.scope.services.admit_topic(&self.scope.tenant, &full) {
            return Ok(Err(self.quota_exceeded(exceeded)));
        }
        let partitions = self.scope.tenant.profile.stream.as_ref().map_or(1, |s| s.partitions);
        let services = self.scope.services.clone();
        let records: Vec<OutRecord> = messages.into_iter().map(|m| OutRecord { key: m.key, value: m.value, headers: Vec::new() }).collect();
        let result = self
            .waiting("messaging.publish", async {
                services.ensure_topic(&full, partitions).await?;
                services.messaging.publish(&full, &records).await
            })
            .await;
        let published = match result {
            Ok(published) => published,
            Err(error) => {
                self.effects.sink_error.get_or_insert(error.to_string());
                return Ok(Err(GuestError::Unavailable(error.to_string())));
            }
        };
        self.effects.published += (records.len() - published.refused.len()) as u64;
        let letters = published
            .refused
            .iter()
            .map(|(index, reason)| DeadLetter::unpublished(&self.scope, &topic, *index, &records[*index], reason))
            .collect();
        Ok(self.send_dead_letters(letters).await)
    }
}
