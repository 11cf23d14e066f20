//! Ingestion records into each tenant's `<tenant>-metrics` collection, so
//! they can be searched like any data. Written in batches by a background
//! task: once a second, or sooner when many arrive.

use crate::backends::{Docs, DocumentStore};
use crate::config::TenantId;
use crate::telemetry::IngestionRecord;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::mpsc;

const FLUSH_EVERY: Duration = Duration::from_secs(1);
const FLUSH_AT: usize = 500;

pub(super) struct MetricsCollection {
    sender: Mutex<Option<mpsc::UnboundedSender<IngestionRecord>>>,
    task: Mutex<Option<tokio::task::JoinHandle<()>>>,
}

impl MetricsCollection {
    pub fn start(store: Arc<dyn DocumentStore>) -> MetricsCollection {
        let (sender, receiver) = mpsc::unbounded_channel();
        let task = tokio::spawn(write_loop(store, receiver));
        MetricsCollection { sender: Mutex::new(Some(sender)), task: Mutex::new(Some(task)) }
    }

    pub fn push(&self, record: &IngestionRecord) {
        if let Some(sender) = self.sender.lock().expect("poisoned").as_ref() {
            let _ = sender.send(record.clone());
        }
    }

    /// Writes what is pending and stops.
    pub async fn close(&self) {
        self.sender.lock().expect("poisoned").take();
        let task = self.task.lock().expect("poisoned").take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn write_loop(store: Arc<dyn DocumentStore>, mut receiver: mpsc::UnboundedReceiver<IngestionRecord>) {
    let mut pending: Vec<IngestionRecord> = Vec::new();
    loop {
        let next = tokio::time::timeout(FLUSH_EVERY, receiver.recv()).await;
        let closed = matches!(next, Ok(None));
        if let Ok(Some(record)) = next {
            pending.push(record);
            if pending.len() < FLUSH_AT {
                continue;
            }
        }
        if !pending.is_empty() {
            write(store.as_ref(), std::mem::take(&mut pending)).await;
        }
        if closed {
            return;
        }
    }
}

async fn write(store: &dyn DocumentStore, records: Vec<IngestionRecord>) {
    let mut by_tenant: BTreeMap<String, Docs> = BTreeMap::new();
    for record in records {
        // The same ingestion always gets the same id.
        let id = format!("{}-{}-{}-{}", record.kind, record.pipeline, record.started_at.timestamp_micros(), record.source);
        let source = serde_json::to_string(&record).expect("serializable");
        by_tenant.entry(record.tenant.clone()).or_default().push(&id, &source);
    }
    for (tenant, docs) in by_tenant {
        let Ok(id) = TenantId::parse(&tenant) else { continue };
        let index = id.metrics_collection();
        let written = async {
            store.ensure_index(&index, None).await?;
            store.bulk_index(&index, &docs).await?;
            store.flush(&index, true).await
        };
        if let Err(error) = written.await {
            // The same records are in the tenant's log; `mysimbdp stats` reads those.
            tracing::warn!(%tenant, %error, records = docs.len(), "Cannot write ingestion records to the metrics collection.");
        }
    }
}
