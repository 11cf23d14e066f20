//! A stream invocation: one polled batch of messages through the tenant's
//! stream pipeline, in one guest call. A message the guest rejects goes to
//! the dead-letter topic with its reason. When the batch traps the guest, the
//! halves go through separately, down to the single message that traps,
//! which is dead-lettered, and the rest is ingested. A failing sink fails the
//! whole batch, so nothing of it is committed.

use super::record::{Measured, record};
use super::{Invoked, Invoker, Loaded};
use crate::backends::InRecord;
use crate::capabilities::HostState;
use crate::capabilities::bindings::Message;
use crate::capabilities::dead_letter::{self, DeadLetter};
use crate::failure::{Failure, FailureKind};
use crate::telemetry::events;
use std::time::Instant;

/// What handling one polled batch amounted to, over all its guest calls.
#[derive(Default)]
struct Handled {
    ingested: u64,
    rejected: u64,
    dead_lettered: u64,
    fuel: u64,
    peak_memory: u64,
}

impl Invoker {
    pub(super) async fn messages(&self, loaded: &Loaded, batch: &[InRecord]) -> Invoked {
        let started_at = chrono::Utc::now();
        let started = Instant::now();
        let mut handled = Handled::default();
        let result = self.handle(loaded, batch, &mut handled).await;
        let measured = Measured {
            source: describe(batch),
            records_in: batch.len() as u64,
            records_out: handled.ingested,
            records_rejected: handled.rejected,
            dead_lettered: handled.dead_lettered,
            bytes: batch.iter().map(|r| r.value.len() as u64).sum(),
            started_at,
            duration: started.elapsed(),
            fuel_consumed: handled.fuel,
            peak_memory_bytes: handled.peak_memory,
        };
        let failure = result.err();
        Invoked { record: record(&loaded.scope, measured, failure.as_ref()), failure }
    }

    /// One guest call on `batch`; on a trap, the halves separately, down to
    /// the single message that traps, which is dead-lettered.
    async fn handle(&self, loaded: &Loaded, batch: &[InRecord], handled: &mut Handled) -> Result<(), Failure> {
        let scope = &loaded.scope;
        let messages: Vec<Message> = batch.iter().map(|r| message(loaded, r)).collect();
        let state = HostState::new(scope.clone());
        let (result, usage, state) = self.sandbox.run_stream(&loaded.compiled, &loaded.limits, state, messages).await;
        let effects = state.effects();
        handled.fuel += usage.fuel_consumed;
        handled.peak_memory = handled.peak_memory.max(usage.peak_memory_bytes);
        handled.dead_lettered += effects.dead_lettered;
        let totals = self.services.add_counters(&scope.tenant.id, scope.pipeline.as_str(), &effects.counters);
        events::GuestCounters { tenant: &scope.tenant.id, pipeline: scope.pipeline.as_str(), counters: &totals }.emit();
        for index in &effects.indices {
            self.services.coredms.flush(index, false).await.map_err(|e| Failure::new(FailureKind::SinkError, e.to_string()))?;
        }
        match result {
            Ok(report) => {
                let mut letters = Vec::new();
                for rejection in &report.rejected {
                    let Some(record) = batch.get(rejection.index as usize) else {
                        continue;
                    };
                    letters.push(letter(loaded, record, "rejected", &rejection.reason));
                }
                handled.rejected += letters.len() as u64;
                handled.ingested += effects.docs_indexed;
                self.dead_letter(loaded, letters, handled).await
            }
            Err(failure) if failure.kind.is_retried() => Err(failure),
            Err(failure) => {
                events::StreamTrapped { tenant: &scope.tenant.id, pipeline: scope.pipeline.as_str(), failure: failure.kind.as_str() }
                    .emit();
                if let [record] = batch {
                    handled.rejected += 1;
                    let letter = letter(loaded, record, failure.kind.as_str(), &failure.message);
                    return self.dead_letter(loaded, vec![letter], handled).await;
                }
                let (left, right) = batch.split_at(batch.len() / 2);
                Box::pin(self.handle(loaded, left, handled)).await?;
                Box::pin(self.handle(loaded, right, handled)).await
            }
        }
    }

    async fn dead_letter(&self, loaded: &Loaded, letters: Vec<DeadLetter>, handled: &mut Handled) -> Result<(), Failure> {
        let count = letters.len() as u64;
        dead_letter::send(self.services.messaging.as_ref(), &loaded.scope.tenant.id, letters)
            .await
            .map_err(|e| Failure::new(FailureKind::SinkError, format!("dead-letter topic: {e}")))?;
        handled.dead_lettered += count;
        Ok(())
    }
}

/// The original message, with headers saying why and where from.
fn letter(loaded: &Loaded, record: &InRecord, kind: &str, reason: &str) -> DeadLetter {
    DeadLetter::message(&loaded.scope, record, kind, reason)
}

/// The message as the guest sees it: topic without the tenant prefix.
fn message(loaded: &Loaded, record: &InRecord) -> Message {
    let prefix = loaded.scope.tenant.id.topic_prefix();
    Message {
        topic: record.topic.strip_prefix(&prefix).unwrap_or(&record.topic).to_string(),
        partition: record.partition,
        offset: record.offset,
        key: record.key.clone(),
        value: record.value.clone(),
        timestamp_ms: record.timestamp_ms,
    }
}

/// `readings/0@10-19, readings/2@4-9`
fn describe(batch: &[InRecord]) -> String {
    let mut ranges: std::collections::BTreeMap<(&str, i32), (i64, i64)> = std::collections::BTreeMap::new();
    for record in batch {
        let range = ranges.entry((&record.topic, record.partition)).or_insert((record.offset, record.offset));
        range.0 = range.0.min(record.offset);
        range.1 = range.1.max(record.offset);
    }
    ranges.iter().map(|((topic, p), (a, b))| format!("{topic}/{p}@{a}-{b}")).collect::<Vec<_>>().join(", ")
}
