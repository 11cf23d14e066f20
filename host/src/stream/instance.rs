//! One stream instance: a member of the tenant's consumer group that polls a
//! batch, hands it to the guest in one call, and commits the offsets only
//! after the documents (and any dead letters) were acknowledged. Delivery is
//! at least once; with ids derived from topic, partition and offset the
//! effect is once.
//!
//! A message the guest rejects goes to the dead-letter topic with its reason.
//! When a batch traps the guest, the host halves it until the message that
//! traps alone is found, dead-letters that one and ingests the rest. A sink
//! error (a store down, overloaded or slower than the deadline) is never a
//! reason to dead-letter: the whole batch is retried with backoff, with
//! fetching paused so the member stays in its group however long it takes.

use super::StreamStats;
use crate::backends::{Consumer, InRecord};
use crate::config::{PipelineKind, StreamSpec, Tenant};
use crate::failure::{Failure, FailureKind, UNAVAILABLE_RETRIES};
use crate::invocation::{Input, Invoker, Loaded};
use crate::retry::{AfterRetried, Backoff, after_retried};
use crate::telemetry::events;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often an instance looks for a newly uploaded version.
const VERSION_CHECK: Duration = Duration::from_secs(5);
/// Waits before trying a failed batch, poll or join again.
const RETRY: Backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
/// A batch handled longer than this has fetching paused until it is done.
/// Not every batch: pausing and resuming a Kafka consumer costs the next
/// fetch up to a second (a stream at 900 msg/s instead of 17,000 when every
/// batch did), and a fast batch is done long before any poll interval
/// (`messaging.max_poll_interval_ms`, at least 6 s) runs out.
const PAUSE_AFTER: Duration = Duration::from_secs(1);

pub(super) struct Instance {
    pub invoker: Arc<Invoker>,
    pub tenant: Arc<Tenant>,
    pub spec: StreamSpec,
    pub number: u32,
    pub stats: Arc<StreamStats>,
}

/// The version the instance runs, and when it last looked for a newer one.
struct Current {
    loaded: Loaded,
    checked: Instant,
}

impl Instance {
    pub fn group(tenant: &Tenant, spec: &StreamSpec) -> String {
        tenant.id.consumer_group(&spec.name)
    }

    pub fn topics(tenant: &Tenant, spec: &StreamSpec) -> Vec<String> {
        spec.topics.iter().map(|t| tenant.id.topic(t)).collect()
    }

    /// Loads the active version, again when one was uploaded since.
    async fn load(&self, current: Option<Current>) -> anyhow::Result<Current> {
        if let Some(current) = current
            && current.checked.elapsed() < VERSION_CHECK
        {
            return Ok(current);
        }
        let loaded = self.invoker.load_stream(&self.tenant, &self.spec).await?;
        Ok(Current { loaded, checked: Instant::now() })
    }

    /// Runs until `stop` says so; a batch being handled is finished first.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let log = self.invoker.logs().tenant(&self.tenant, PipelineKind::Stream);
        let group = Self::group(&self.tenant, &self.spec);
        let topics = Self::topics(&self.tenant, &self.spec);
        let mut consumer: Option<Box<dyn Consumer>> = None;
        let mut loaded: Option<Current> = None;
        let mut retry = RETRY.first;
        // The current batch's `unavailable` failures in a row, and whether
        // that stalled the stream.
        let (mut unavailable, mut stalled) = (0, false);
        let mut pending: Vec<InRecord> = Vec::new();
        while !*stop.borrow() {
            if consumer.is_none() {
                match self.invoker.services().messaging.consumer(&group, &topics).await {
                    Ok(c) => consumer = Some(c),
                    Err(error) => {
                        self.event(&log, "error", &format!("cannot join consumer group {group}: {error}"));
                        back_off(&mut stop, &mut retry).await;
                        continue;
                    }
                }
            }
            let active = consumer.as_mut().expect("joined above");
            if pending.is_empty() {
                let wait_for = Duration::from_millis(self.spec.batch_max_wait_ms);
                tokio::select! {
                    polled = active.poll(self.spec.batch_max_messages as usize, wait_for) => match polled {
                        Ok(records) => pending = records,
                        Err(error) => {
                            self.event(&log, "warn", &format!("poll failed: {error}"));
                            back_off(&mut stop, &mut retry).await;
                            continue;
                        }
                    },
                    _ = stop.changed() => break,
                }
                if pending.is_empty() {
                    self.stats.idle_poll();
                    continue;
                }
            }
            loaded = match self.load(loaded.take()).await {
                Ok(loaded) => Some(loaded),
                Err(error) => {
                    self.event(&log, "error", &format!("{error:#}; the batch waits"));
                    back_off(&mut stop, &mut retry).await;
                    continue;
                }
            };
            let current = loaded.as_ref().expect("loaded above");
            let outcome = {
                let processing = self.process(&current.loaded, &pending);
                tokio::pin!(processing);
                tokio::select! {
                    outcome = &mut processing => outcome,
                    () = tokio::time::sleep(PAUSE_AFTER) => {
                        // A slow batch (a slow store, bisection): the member
                        // keeps polling while it is handled, and stays in its group.
                        self.pause(active.as_mut(), &log).await;
                        processing.await
                    }
                }
            };
            match outcome {
                Ok(()) => {
                    let processed: Vec<(String, i32, i64)> = pending.iter().map(|r| (r.topic.clone(), r.partition, r.offset)).collect();
                    if let Err(error) = active.commit(&processed).await {
                        // The documents are in; the messages come again and overwrite them.
                        self.event(&log, "warn", &format!("offset commit failed, retried at the next poll (until then the batch may be delivered again after a restart): {error}"));
                    }
                    pending.clear();
                    retry = RETRY.first;
                    unavailable = 0;
                    if std::mem::take(&mut stalled) {
                        events::StreamStalled { tenant: &self.tenant.id, pipeline: self.spec.name.as_str(), stalled: false }.emit();
                    }
                    if let Err(error) = active.resume().await {
                        self.event(&log, "warn", &format!("cannot resume fetching: {error}"));
                    }
                }
                Err(failure) => {
                    // Not committed: the same batch is retried here, or
                    // redelivered to another instance after a stop.
                    unavailable = if failure.kind == FailureKind::Unavailable { unavailable + 1 } else { 0 };
                    match after_retried(unavailable, UNAVAILABLE_RETRIES) {
                        AfterRetried::Retry => self.event(
                            &log,
                            "warn",
                            &format!("batch of {} messages not ingested ({failure}); retrying in {retry:?}", pending.len()),
                        ),
                        AfterRetried::Stalled { alert } => {
                            retry = RETRY.max;
                            if alert {
                                stalled = true;
                                events::StreamStalled { tenant: &self.tenant.id, pipeline: self.spec.name.as_str(), stalled: true }.emit();
                                self.event(
                                    &log,
                                    "error",
                                    &format!(
                                        "stream stalled: the pipeline said unavailable {unavailable} times in a row for a batch of {} messages ({failure}); nothing is committed, it is tried every {:?} until it succeeds",
                                        pending.len(),
                                        RETRY.max
                                    ),
                                );
                            }
                        }
                    }
                    // However long the backoff, the member stays in its group.
                    self.pause(active.as_mut(), &log).await;
                    back_off(&mut stop, &mut retry).await;
                }
            }
        }
        if let Some(consumer) = consumer {
            consumer.close().await;
        }
    }

    /// Stops fetching while a batch is handled or retried (the consumer goes
    /// on polling for the group's sake); a paused consumer stays paused.
    async fn pause(&self, consumer: &mut dyn Consumer, log: &crate::telemetry::logs::LogSink) {
        if let Err(error) = consumer.pause().await {
            self.event(log, "warn", &format!("cannot pause fetching while the batch is handled: {error}"));
        }
    }

    fn event(&self, log: &crate::telemetry::logs::LogSink, level: &str, message: &str) {
        events::StreamProblem { tenant: &self.tenant.id, pipeline: self.spec.name.as_str(), instance: self.number, level, message }
            .emit(log);
    }

    /// Handles one polled batch completely (through the invocation layer),
    /// or fails with a sink error and nothing may be committed.
    async fn process(&self, loaded: &Loaded, batch: &[InRecord]) -> Result<(), Failure> {
        let invoked = self
            .invoker
            .invoke(loaded, Input::Messages(batch))
            .await
            .map_err(|error| Failure::new(FailureKind::SinkError, format!("{error:#}")))?;
        if let Some(failure) = invoked.failure {
            return Err(failure);
        }
        let record = &invoked.record;
        events::StreamBatchDone { tenant: &self.tenant.id, pipeline: self.spec.name.as_str(), messages: batch.len() as u64 }.emit();
        self.stats.record_batch(batch.len() as u64, record.dead_lettered, Duration::from_secs_f64(record.duration_ms / 1000.0));
        Ok(())
    }
}

/// Waits `retry` (or until stopped), then makes it the next wait of [`RETRY`].
async fn back_off(stop: &mut watch::Receiver<bool>, retry: &mut Duration) {
    tokio::select! {
        _ = tokio::time::sleep(crate::retry::sleep_for(*retry)) => {}
        _ = stop.changed() => {}
    }
    *retry = RETRY.after(*retry);
}
