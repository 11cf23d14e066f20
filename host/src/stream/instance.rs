//! One stream instance: a member of the tenant's consumer group that polls a
//! batch, hands it to the guest in one call, and commits the offsets only
//! after the documents (and any dead letters) were acknowledged. Delivery is
//! at least once; with ids derived from topic, partition and offset the
//! effect is once.
//!
//! A message the guest rejects goes to the dead-letter topic with its reason.
//! When a batch traps the guest, the host halves it until the message that
//! traps alone is found, dead-letters that one and ingests the rest.

use super::StreamStats;
use crate::backends::{Consumer, InRecord};
use crate::capabilities::{HostState, Scope};
use crate::config::{SandboxLimits, StreamSpec, Tenant};
use crate::deadletter::{self, DeadLetter, header};
use crate::pipelines::{self, PipelineKind};
use crate::platform::Platform;
use crate::runtime::bindings::Message;
use crate::runtime::{CompiledPipeline, Failure, FailureKind};
use crate::telemetry::{IngestionRecord, Outcome, metrics as telemetry};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often an instance looks for a newly uploaded version.
const VERSION_CHECK: Duration = Duration::from_secs(5);
const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

pub(super) struct Instance {
    pub platform: Arc<Platform>,
    pub tenant: Arc<Tenant>,
    pub spec: StreamSpec,
    pub number: u32,
    pub stats: Arc<StreamStats>,
}

/// What handling one polled batch amounted to.
#[derive(Default)]
struct Handled {
    ingested: u64,
    rejected: u64,
    dead_lettered: u64,
    fuel: u64,
    peak_memory: u64,
    traps: u32,
}

struct Loaded {
    compiled: Arc<CompiledPipeline>,
    scope: Arc<Scope>,
    checked: Instant,
}

impl Instance {
    pub fn group(tenant: &Tenant, spec: &StreamSpec) -> String {
        format!("mysimbdp.{}.{}", tenant.id, spec.name)
    }

    pub fn topics(tenant: &Tenant, spec: &StreamSpec) -> Vec<String> {
        spec.topics.iter().map(|t| format!("{}.{t}", tenant.id)).collect()
    }

    fn limits(&self) -> SandboxLimits {
        self.tenant.profile.sandbox.with(&self.spec.sandbox)
    }

    /// Loads the active version, again when one was uploaded since.
    async fn load(&self, current: Option<Loaded>) -> anyhow::Result<Loaded> {
        if let Some(loaded) = current
            && loaded.checked.elapsed() < VERSION_CHECK
        {
            return Ok(loaded);
        }
        let version = pipelines::active(&self.tenant, PipelineKind::Stream, &self.spec.name)?;
        let compiled = self.platform.runtime.load(&version, self.limits().max_wasm_stack_bytes.bytes()).await?;
        let scope = self.platform.scope(&self.tenant, PipelineKind::Stream, &self.spec.name, version.version, &self.spec.parameters);
        Ok(Loaded { compiled, scope, checked: Instant::now() })
    }

    /// Runs until `stop` says so; a batch being handled is finished first.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let log = self.platform.tenant_log(&self.tenant, PipelineKind::Stream);
        let group = Self::group(&self.tenant, &self.spec);
        let topics = Self::topics(&self.tenant, &self.spec);
        let mut consumer: Option<Box<dyn Consumer>> = None;
        let mut loaded: Option<Loaded> = None;
        let mut retry = FIRST_RETRY;
        let mut pending: Vec<InRecord> = Vec::new();
        while !*stop.borrow() {
            if consumer.is_none() {
                match self.platform.services.messaging.consumer(&group, &topics).await {
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
            match self.process(current, &pending).await {
                Ok(()) => {
                    let processed: Vec<(String, i32, i64)> = pending.iter().map(|r| (r.topic.clone(), r.partition, r.offset)).collect();
                    if let Err(error) = active.commit(&processed).await {
                        // The documents are in; the messages come again and overwrite them.
                        self.event(&log, "warn", &format!("offset commit failed, retried at the next poll (until then the batch may be delivered again after a restart): {error}"));
                    }
                    pending.clear();
                    retry = FIRST_RETRY;
                }
                Err(failure) => {
                    // Not committed: the same batch is retried here, or
                    // redelivered to another instance after a stop.
                    self.event(
                        &log,
                        "warn",
                        &format!("batch of {} messages not ingested ({failure}); retrying in {retry:?}", pending.len()),
                    );
                    back_off(&mut stop, &mut retry).await;
                }
            }
        }
        if let Some(consumer) = consumer {
            consumer.close().await;
        }
    }

    fn event(&self, log: &crate::telemetry::logs::LogSink, level: &str, message: &str) {
        match level {
            "error" => tracing::error!(tenant = %self.tenant.id, instance = self.number, "{message}"),
            _ => tracing::warn!(tenant = %self.tenant.id, instance = self.number, "{message}"),
        }
        log.write(&serde_json::json!({
            "type": "event", "level": level, "tenant": self.tenant.id, "pipeline": self.spec.name,
            "instance": self.number, "message": message,
        }));
    }

    /// Handles one polled batch completely, or fails with a sink error.
    async fn process(&self, loaded: &Loaded, batch: &[InRecord]) -> Result<(), Failure> {
        let started_at = chrono::Utc::now();
        let started = Instant::now();
        let mut handled = Handled::default();
        let result = self.handle(loaded, batch, &mut handled).await;
        let duration = started.elapsed();
        let bytes: u64 = batch.iter().map(|r| r.value.len() as u64).sum();
        let record = IngestionRecord {
            record_type: "ingestion".into(),
            tenant: self.tenant.id.to_string(),
            kind: PipelineKind::Stream,
            pipeline: self.spec.name.to_string(),
            version: loaded.scope.version,
            source: describe(batch),
            records_in: batch.len() as u64,
            records_out: handled.ingested,
            records_rejected: handled.rejected,
            dead_lettered: handled.dead_lettered,
            bytes,
            started_at,
            duration_ms: duration.as_secs_f64() * 1000.0,
            fuel_consumed: handled.fuel,
            peak_memory_bytes: handled.peak_memory,
            outcome: if result.is_ok() { Outcome::Ok } else { Outcome::Failed },
            failure: result.as_ref().err().map(|f| f.kind),
            reason: result.as_ref().err().map(|f| f.message.clone()),
        };
        self.platform.record_ingestion(&loaded.scope, &record);
        if result.is_ok() {
            metrics::counter!("mysimbdp_stream_messages_processed_total", "tenant" => self.tenant.id.to_string(), "pipeline" => self.spec.name.to_string())
                .increment(batch.len() as u64);
            self.stats.record_batch(batch.len() as u64, handled.dead_lettered, duration);
        }
        result
    }

    /// One guest call on `batch`; on a trap, the halves separately, down to
    /// the single message that traps, which is dead-lettered.
    async fn handle(&self, loaded: &Loaded, batch: &[InRecord], handled: &mut Handled) -> Result<(), Failure> {
        let messages: Vec<Message> = batch.iter().map(|r| self.message(r)).collect();
        let limits = self.limits();
        let state = HostState::new(loaded.scope.clone(), limits.memory_bytes.bytes());
        let (result, usage, state) = self.platform.runtime.run_stream(&loaded.compiled, &limits, state, messages).await;
        handled.fuel += usage.fuel_consumed;
        handled.peak_memory = handled.peak_memory.max(usage.peak_memory_bytes);
        handled.dead_lettered += state.effects.dead_lettered;
        telemetry::record_guest_counters(self.tenant.id.as_str(), self.spec.name.as_str(), &state.effects.counters);
        for index in &state.effects.indices {
            self.platform.services.coredms.flush(index, false).await.map_err(|e| Failure::new(FailureKind::SinkError, e.to_string()))?;
        }
        match result {
            Ok(report) => {
                let mut letters = Vec::new();
                for rejection in &report.rejected {
                    let Some(record) = batch.get(rejection.index as usize) else {
                        continue;
                    };
                    letters.push(self.letter(loaded, record, "rejected", &rejection.reason));
                }
                handled.rejected += letters.len() as u64;
                handled.ingested += state.effects.docs_indexed;
                self.dead_letter(letters, handled).await
            }
            Err(failure) if failure.kind == FailureKind::SinkError => Err(failure),
            Err(failure) => {
                handled.traps += 1;
                metrics::counter!(
                    "mysimbdp_failures_total",
                    "tenant" => self.tenant.id.to_string(),
                    "pipeline" => self.spec.name.to_string(),
                    "kind" => "stream",
                    "failure" => failure.kind.as_str()
                )
                .increment(1);
                if let [record] = batch {
                    handled.rejected += 1;
                    let letter = self.letter(loaded, record, failure.kind.as_str(), &failure.message);
                    return self.dead_letter(vec![letter], handled).await;
                }
                let (left, right) = batch.split_at(batch.len() / 2);
                Box::pin(self.handle(loaded, left, handled)).await?;
                Box::pin(self.handle(loaded, right, handled)).await
            }
        }
    }

    async fn dead_letter(&self, letters: Vec<DeadLetter>, handled: &mut Handled) -> Result<(), Failure> {
        let count = letters.len() as u64;
        deadletter::send(self.platform.services.messaging.as_ref(), &self.tenant.id, letters)
            .await
            .map_err(|e| Failure::new(FailureKind::SinkError, format!("dead-letter topic: {e}")))?;
        handled.dead_lettered += count;
        Ok(())
    }

    /// The original message, with headers saying why and where from.
    fn letter(&self, loaded: &Loaded, record: &InRecord, kind: &str, reason: &str) -> DeadLetter {
        let mut letter = DeadLetter::new(record.value.clone(), kind, reason)
            .header(header::TENANT, &self.tenant.id)
            .header(header::PIPELINE, &self.spec.name)
            .header(header::PIPELINE_VERSION, loaded.scope.version)
            .header(header::SOURCE_TOPIC, &record.topic)
            .header(header::SOURCE_PARTITION, record.partition)
            .header(header::SOURCE_OFFSET, record.offset);
        letter.key = record.key.clone();
        letter
    }

    /// The message as the guest sees it: topic without the tenant prefix.
    fn message(&self, record: &InRecord) -> Message {
        let prefix = format!("{}.", self.tenant.id);
        Message {
            topic: record.topic.strip_prefix(&prefix).unwrap_or(&record.topic).to_string(),
            partition: record.partition,
            offset: record.offset,
            key: record.key.clone(),
            value: record.value.clone(),
            timestamp_ms: record.timestamp_ms,
        }
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

/// Waits `retry` (or until stopped), then doubles it up to `MAX_RETRY`.
async fn back_off(stop: &mut watch::Receiver<bool>, retry: &mut Duration) {
    tokio::select! {
        _ = tokio::time::sleep(*retry) => {}
        _ = stop.changed() => {}
    }
    *retry = (*retry * 2).min(MAX_RETRY);
}
