//! A member of a consumer group of the embedded message log: the
//! partitions it holds (split among the members, rebuilt when they change),
//! read from the committed offsets, and its commits.

use super::storage::{self, Next, PartitionReader};
use super::{EmbeddedBus, parse_record};
use crate::backends::{Consumer, InRecord, SinkError};
use async_trait::async_trait;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

/// Where a consumer is in one partition.
struct Cursor {
    reader: PartitionReader,
    /// Offset of the next record `reader` returns.
    next: i64,
}

pub(super) struct EmbeddedConsumer {
    log: Arc<EmbeddedBus>,
    group: String,
    topics: Vec<String>,
    member: u64,
    /// The group generation `cursors` were built for.
    generation: u64,
    cursors: HashMap<(String, i32), Cursor>,
}

impl EmbeddedConsumer {
    /// Member `member` (already added to the group) of `group` on `topics`.
    pub(super) fn new(log: Arc<EmbeddedBus>, group: &str, topics: &[String], member: u64) -> EmbeddedConsumer {
        EmbeddedConsumer { log, group: group.to_string(), topics: topics.to_vec(), member, generation: 0, cursors: HashMap::new() }
    }

    /// Rebuilds the cursors when the group's members changed.
    fn rebalance(&mut self) -> Result<(), SinkError> {
        let mut partitions = Vec::new();
        for topic in &self.topics {
            if let Some(loaded) = self.log.topic(topic, None)? {
                partitions.push((topic.clone(), loaded.partitions.len() as i32));
            }
        }
        let group = self.log.group(&self.group)?;
        let group = group.lock().expect("group poisoned");
        if group.generation == self.generation {
            return Ok(());
        }
        self.generation = group.generation;
        let members = group.members.len().max(1);
        let position = group.members.iter().position(|m| *m == self.member).unwrap_or(0);
        self.cursors.clear();
        let mut slot = 0;
        for (topic, count) in partitions {
            for p in 0..count {
                if slot % members == position {
                    let committed = group.committed.get(&topic).and_then(|c| c.get(&p)).copied().unwrap_or(0);
                    let (reader, skipped) = PartitionReader::open_at(&self.log.partition_file(&topic, p), committed)?;
                    self.cursors.insert((topic.clone(), p), Cursor { reader, next: skipped });
                }
                slot += 1;
            }
        }
        Ok(())
    }

    fn read_available(&mut self, max: usize) -> Result<Vec<InRecord>, SinkError> {
        self.rebalance()?;
        let mut records = Vec::new();
        for ((topic, p), cursor) in self.cursors.iter_mut() {
            while records.len() < max {
                // A record still being appended is read at the next poll, once whole.
                let Next::Record(payload) = cursor.reader.next()? else { break };
                records.push(parse_record(topic, *p, cursor.next, &payload)?);
                cursor.next += 1;
            }
        }
        Ok(records)
    }
}

#[async_trait]
impl Consumer for EmbeddedConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<InRecord>, SinkError> {
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            let log = self.log.clone();
            let appended = log.appended.notified();
            let records = self.read_available(max)?;
            if !records.is_empty() || tokio::time::Instant::now() >= deadline {
                return Ok(records);
            }
            // Another process may append too, so do not wait on the notice alone.
            let nap = deadline.min(tokio::time::Instant::now() + Duration::from_millis(100));
            let _ = tokio::time::timeout_at(nap, appended).await;
        }
    }

    /// The new offsets synced on a blocking thread, under the group's own
    /// lock (so its snapshots are written in order), in force once written.
    async fn commit(&mut self, processed: &[(String, i32, i64)]) -> Result<(), SinkError> {
        let (log, group, processed) = (self.log.clone(), self.group.clone(), processed.to_vec());
        super::blocking(move || {
            let path = log.group_file(&group);
            let group = log.group(&group)?;
            let mut group = group.lock().expect("group poisoned");
            let mut committed = group.committed.clone();
            for (topic, partition, offset) in processed {
                let slot = committed.entry(topic).or_default().entry(partition).or_insert(0);
                *slot = (*slot).max(offset + 1);
            }
            storage::write_offsets(&path, &committed)?;
            group.committed = committed;
            Ok(())
        })
        .await
    }

    async fn close(self: Box<Self>) {
        // The group was loaded when this member joined.
        let group = self.log.state().groups.get(&self.group).cloned();
        if let Some(group) = group {
            let mut group = group.lock().expect("group poisoned");
            group.members.retain(|m| *m != self.member);
            group.generation += 1;
        }
    }
}
