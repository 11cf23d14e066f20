//! `messaging`: publish to the tenant's own topics.

use super::HostState;
use super::bindings::batch::mysimbdp::pipeline::messaging;
use super::bindings::{GuestError, Outgoing};
use crate::backends::OutRecord;

/// Messages one call may publish.
const MAX_MESSAGES_PER_CALL: usize = 10_000;

impl messaging::Host for HostState {
    async fn publish(&mut self, topic: String, messages: Vec<Outgoing>) -> wasmtime::Result<Result<(), GuestError>> {
        let topic = match self.scope.topic_name(&topic) {
            Ok(topic) => topic,
            Err(reason) => return Ok(Err(self.deny("publish", reason))),
        };
        if messages.len() > MAX_MESSAGES_PER_CALL {
            return Ok(Err(GuestError::QuotaExceeded(format!(
                "{} messages in one publish; send at most {MAX_MESSAGES_PER_CALL} per call",
                messages.len()
            ))));
        }
        let partitions = self.scope.tenant.profile.stream.as_ref().map_or(1, |s| s.partitions);
        let services = self.scope.services.clone();
        let count = messages.len() as u64;
        let records = messages.into_iter().map(|m| OutRecord { key: m.key, value: m.value, headers: Vec::new() }).collect();
        let result = async {
            services.ensure_topic(&topic, partitions).await?;
            services.messaging.publish(&topic, records).await
        }
        .await;
        match result {
            Ok(()) => {
                self.effects.published += count;
                Ok(Ok(()))
            }
            Err(error) => {
                self.effects.sink_error.get_or_insert(error.to_string());
                Ok(Err(GuestError::Unavailable(error.to_string())))
            }
        }
    }
}
