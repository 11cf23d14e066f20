//! The embedded message log: Kafka's model on local files, for one host.
//!
//! `<root>/topics/<topic>/<partition>.log` holds one framed record per
//! message (a JSON line with its length and checksum, [`storage`]); its
//! position is the offset. Consumer groups keep their committed offsets in
//! `<root>/groups/<group>.json`, a log of snapshots synced at each commit.
//! Members of a group split the partitions (partition `p` goes to member
//! `p % members`); when a member joins or leaves the others resume from the
//! committed offsets, as after a Kafka rebalance.

mod storage;

use super::{Consumer, Header, InRecord, MessageBus, OutRecord, Published, SinkError};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use storage::{Committed, Next, PartitionFile, PartitionReader};
use tokio::sync::Notify;

const BACKEND: &str = "embedded log";

fn sink_error(context: &str, error: impl std::fmt::Display) -> SinkError {
    SinkError::new(BACKEND, format!("{context}: {error}"))
}

#[derive(Serialize, Deserialize)]
struct Line {
    #[serde(rename = "t", default)]
    timestamp_ms: Option<i64>,
    #[serde(rename = "k", default)]
    key: Option<String>,
    #[serde(rename = "v")]
    value: String,
    #[serde(rename = "h", default)]
    headers: Vec<(String, String)>,
}

#[derive(Serialize, Deserialize)]
struct TopicMeta {
    partitions: i32,
}

struct Topic {
    partitions: Vec<PartitionFile>,
    round_robin: usize,
}

#[derive(Default)]
struct Group {
    members: Vec<u64>,
    /// Bumped when members change, so consumers know to re-seek.
    generation: u64,
    committed: Committed,
}

struct State {
    topics: HashMap<String, Topic>,
    groups: HashMap<String, Group>,
    next_member: u64,
}

pub struct EmbeddedBus {
    root: PathBuf,
    state: Mutex<State>,
    appended: Notify,
}

impl EmbeddedBus {
    pub fn open(root: &Path) -> Result<Arc<Self>, SinkError> {
        std::fs::create_dir_all(root.join("topics")).map_err(|e| sink_error("create", e))?;
        std::fs::create_dir_all(root.join("groups")).map_err(|e| sink_error("create", e))?;
        Ok(Arc::new(EmbeddedBus {
            root: root.to_path_buf(),
            state: Mutex::new(State { topics: HashMap::new(), groups: HashMap::new(), next_member: 1 }),
            appended: Notify::new(),
        }))
    }

    fn topic_dir(&self, topic: &str) -> PathBuf {
        self.root.join("topics").join(topic)
    }

    fn partition_file(&self, topic: &str, partition: i32) -> PathBuf {
        self.topic_dir(topic).join(format!("{partition}.log"))
    }

    /// Opens (or creates with `create_partitions`) the topic in `state`.
    fn load_topic<'s>(
        &self,
        state: &'s mut State,
        topic: &str,
        create_partitions: Option<i32>,
    ) -> Result<Option<&'s mut Topic>, SinkError> {
        if !state.topics.contains_key(topic) {
            let dir = self.topic_dir(topic);
            let meta_file = dir.join("meta.json");
            let partitions = if meta_file.exists() {
                let text = std::fs::read_to_string(&meta_file).map_err(|e| sink_error(topic, e))?;
                serde_json::from_str::<TopicMeta>(&text).map_err(|e| sink_error(topic, e))?.partitions
            } else if let Some(partitions) = create_partitions {
                std::fs::create_dir_all(&dir).map_err(|e| sink_error(topic, e))?;
                let meta = serde_json::to_string(&TopicMeta { partitions }).expect("serializable");
                std::fs::write(&meta_file, meta).map_err(|e| sink_error(topic, e))?;
                partitions
            } else {
                return Ok(None);
            };
            let mut loaded = Vec::new();
            for p in 0..partitions {
                loaded.push(PartitionFile::open(&self.partition_file(topic, p))?);
            }
            state.topics.insert(topic.to_string(), Topic { partitions: loaded, round_robin: 0 });
        }
        Ok(state.topics.get_mut(topic))
    }

    fn group_file(&self, group: &str) -> PathBuf {
        self.root.join("groups").join(format!("{group}.json"))
    }

    /// The group, its committed offsets read on first use; a file of offsets
    /// that cannot be read is an error naming it, never a silent reset.
    fn load_group<'s>(&self, state: &'s mut State, group: &str) -> Result<&'s mut Group, SinkError> {
        if !state.groups.contains_key(group) {
            let committed = storage::read_offsets(&self.group_file(group))?;
            state.groups.insert(group.to_string(), Group { committed, ..Group::default() });
        }
        Ok(state.groups.get_mut(group).expect("inserted above"))
    }
}

fn partition_for(key: Option<&[u8]>, partitions: usize, round_robin: &mut usize) -> usize {
    match key {
        // FNV-1a: stable across runs, unlike std's hasher.
        Some(key) => {
            let mut hash: u64 = 0xcbf29ce484222325;
            for byte in key {
                hash = (hash ^ u64::from(*byte)).wrapping_mul(0x100000001b3);
            }
            (hash % partitions as u64) as usize
        }
        None => {
            *round_robin = (*round_robin + 1) % partitions;
            *round_robin
        }
    }
}

/// Reads every record of the partition file at `path` as a consumer
/// would: what a damaged or hostile log file gives (fuzz targets).
pub fn read_partition_file(path: &Path) -> Result<Vec<InRecord>, SinkError> {
    let (mut reader, _) = PartitionReader::open_at(path, 0)?;
    let mut records = Vec::new();
    while let Next::Record(payload) = reader.next()? {
        records.push(parse_record("fuzz", 0, records.len() as i64, &payload)?);
    }
    Ok(records)
}

fn decode(text: &str) -> Vec<u8> {
    B64.decode(text).unwrap_or_default()
}

fn parse_record(topic: &str, partition: i32, offset: i64, payload: &[u8]) -> Result<InRecord, SinkError> {
    let line: Line = serde_json::from_slice(payload).map_err(|e| sink_error(&format!("{topic}/{partition}@{offset}"), e))?;
    Ok(InRecord {
        topic: topic.to_string(),
        partition,
        offset,
        key: line.key.as_deref().map(decode),
        value: decode(&line.value),
        timestamp_ms: line.timestamp_ms,
        headers: line.headers.iter().map(|(k, v)| (k.clone(), decode(v))).collect::<Vec<Header>>(),
    })
}

#[async_trait]
impl MessageBus for Arc<EmbeddedBus> {
    fn kind(&self) -> &'static str {
        "embedded"
    }

    async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), SinkError> {
        let mut state = self.state.lock().expect("log poisoned");
        self.load_topic(&mut state, topic, Some(partitions.max(1))).map(drop)
    }

    async fn publish(&self, topic: &str, records: &[OutRecord]) -> Result<Published, SinkError> {
        {
            let mut state = self.state.lock().expect("log poisoned");
            let loaded = self.load_topic(&mut state, topic, Some(1))?.expect("created");
            let now = chrono::Utc::now().timestamp_millis();
            let count = loaded.partitions.len();
            let mut per_partition: Vec<Vec<Vec<u8>>> = vec![Vec::new(); count];
            for record in records {
                let p = partition_for(record.key.as_deref(), count, &mut loaded.round_robin);
                let line = Line {
                    timestamp_ms: Some(now),
                    key: record.key.as_deref().map(|k| B64.encode(k)),
                    value: B64.encode(&record.value),
                    headers: record.headers.iter().map(|(k, v)| (k.clone(), B64.encode(v))).collect(),
                };
                per_partition[p].push(serde_json::to_vec(&line).expect("serializable"));
            }
            // Acknowledged means on disk (each partition synced): a dead letter must survive a crash.
            for (partition, payloads) in loaded.partitions.iter_mut().zip(per_partition) {
                if !payloads.is_empty() {
                    partition.append(&payloads)?;
                }
            }
        }
        self.appended.notify_waiters();
        // No record is refused: the log takes any size the call may carry.
        Ok(Published::default())
    }

    async fn consumer(&self, group: &str, topics: &[String]) -> Result<Box<dyn Consumer>, SinkError> {
        let mut state = self.state.lock().expect("log poisoned");
        for topic in topics {
            self.load_topic(&mut state, topic, Some(1))?;
        }
        let member = state.next_member;
        state.next_member += 1;
        let entry = self.load_group(&mut state, group)?;
        entry.members.push(member);
        entry.generation += 1;
        Ok(Box::new(EmbeddedConsumer {
            log: self.clone(),
            group: group.to_string(),
            topics: topics.to_vec(),
            member,
            generation: 0,
            cursors: HashMap::new(),
        }))
    }

    async fn lag(&self, group: &str, topics: &[String]) -> Result<u64, SinkError> {
        let mut state = self.state.lock().expect("log poisoned");
        let mut ends = Vec::new();
        for topic in topics {
            if let Some(loaded) = self.load_topic(&mut state, topic, None)? {
                for (p, partition) in loaded.partitions.iter().enumerate() {
                    ends.push((topic.clone(), p as i32, partition.end));
                }
            }
        }
        let entry = self.load_group(&mut state, group)?;
        Ok(ends
            .into_iter()
            .map(|(topic, p, end)| {
                let committed = entry.committed.get(&topic).and_then(|c| c.get(&p)).copied().unwrap_or(0);
                (end - committed).max(0) as u64
            })
            .sum())
    }

    async fn read_all(&self, topic: &str, max: usize, _wait: Duration) -> Result<Vec<InRecord>, SinkError> {
        let partitions = {
            let mut state = self.state.lock().expect("log poisoned");
            match self.load_topic(&mut state, topic, None)? {
                Some(loaded) => loaded.partitions.len() as i32,
                None => return Ok(Vec::new()),
            }
        };
        let mut records = Vec::new();
        for p in 0..partitions {
            let (mut reader, _) = PartitionReader::open_at(&self.partition_file(topic, p), 0)?;
            let mut offset = 0;
            while records.len() < max {
                match reader.next()? {
                    Next::Record(payload) => records.push(parse_record(topic, p, offset, &payload)?),
                    Next::Nothing => break,
                }
                offset += 1;
            }
        }
        Ok(records)
    }
}

/// Where a consumer is in one partition.
struct Cursor {
    reader: PartitionReader,
    /// Offset of the next record `reader` returns.
    next: i64,
}

struct EmbeddedConsumer {
    log: Arc<EmbeddedBus>,
    group: String,
    topics: Vec<String>,
    member: u64,
    /// The group generation `cursors` were built for.
    generation: u64,
    cursors: HashMap<(String, i32), Cursor>,
}

impl EmbeddedConsumer {
    /// Rebuilds the cursors when the group's members changed.
    fn rebalance(&mut self) -> Result<(), SinkError> {
        let mut state = self.log.state.lock().expect("log poisoned");
        let mut partitions = Vec::new();
        for topic in &self.topics {
            if let Some(loaded) = self.log.load_topic(&mut state, topic, None)? {
                partitions.push((topic.clone(), loaded.partitions.len() as i32));
            }
        }
        let group = self.log.load_group(&mut state, &self.group)?;
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

    async fn commit(&mut self, processed: &[(String, i32, i64)]) -> Result<(), SinkError> {
        let mut state = self.log.state.lock().expect("log poisoned");
        let path = self.log.group_file(&self.group);
        let group = self.log.load_group(&mut state, &self.group)?;
        let mut committed = group.committed.clone();
        for (topic, partition, offset) in processed {
            let slot = committed.entry(topic.clone()).or_default().entry(*partition).or_insert(0);
            *slot = (*slot).max(offset + 1);
        }
        // On disk first, under the lock, so snapshots are written in order;
        // in force only once written.
        storage::write_offsets(&path, &committed)?;
        group.committed = committed;
        Ok(())
    }

    async fn close(self: Box<Self>) {
        let mut state = self.log.state.lock().expect("log poisoned");
        // The group was loaded when this member joined.
        if let Some(group) = state.groups.get_mut(&self.group) {
            group.members.retain(|m| *m != self.member);
            group.generation += 1;
        }
    }
}
