//! The embedded message log: Kafka's model on local files, for one host.
//!
//! `<root>/topics/<topic>/<partition>.log` holds one framed record per
//! message (a JSON line with its length and checksum, [`storage`]); its
//! position is the offset; `meta.json` beside them holds the partition
//! count, one framed record written atomically when the topic is created.
//! Consumer groups keep their committed offsets in
//! `<root>/groups/<group>.json`, a log of snapshots synced at each commit.
//! Members of a group split the partitions (partition `p` goes to member
//! `p % members`); when a member joins or leaves the others resume from the
//! committed offsets, as after a Kafka rebalance.

mod consumer;
mod meta;
mod storage;

use super::{Consumer, Header, InRecord, MessageBus, OutRecord, Published, SinkError};
use async_trait::async_trait;
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use consumer::EmbeddedConsumer;
use meta::{read_meta, write_meta};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
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

/// A partition: its file, appended under its own lock, and the offset of
/// its next message, readable without that lock (by `lag`) while an append
/// syncs.
struct Partition {
    file: Mutex<PartitionFile>,
    end: AtomicI64,
}

struct Topic {
    partitions: Vec<Partition>,
    round_robin: AtomicUsize,
}

/// A topic's place in the log: loaded (its files opened, a torn tail cut
/// off) under this slot's own lock, so opening a large topic never holds
/// the others up.
#[derive(Default)]
struct TopicSlot {
    loaded: Mutex<Option<Arc<Topic>>>,
}

#[derive(Default)]
struct Group {
    members: Vec<u64>,
    /// Bumped when members change, so consumers know to re-seek.
    generation: u64,
    committed: Committed,
}

/// What every topic and group shares, held only to find or add an entry:
/// never across a file's I/O (each topic and group has its own lock).
struct State {
    topics: HashMap<String, Arc<TopicSlot>>,
    groups: HashMap<String, Arc<Mutex<Group>>>,
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

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().expect("log poisoned")
    }

    /// The topic, opened on first use (or created with `create_partitions`;
    /// `None` when it does not exist and is not to be created). Blocking
    /// file I/O, under the topic's own lock only.
    fn topic(&self, topic: &str, create_partitions: Option<i32>) -> Result<Option<Arc<Topic>>, SinkError> {
        let slot = self.state().topics.entry(topic.to_string()).or_default().clone();
        let mut loaded = slot.loaded.lock().expect("topic poisoned");
        if let Some(open) = loaded.as_ref() {
            return Ok(Some(open.clone()));
        }
        let meta_file = self.topic_dir(topic).join("meta.json");
        let partitions = match read_meta(&meta_file)? {
            Some(partitions) => partitions,
            None => match create_partitions {
                Some(partitions) => {
                    write_meta(&meta_file, partitions)?;
                    partitions
                }
                None => return Ok(None),
            },
        };
        let mut opened = Vec::new();
        for p in 0..partitions {
            let file = PartitionFile::open(&self.partition_file(topic, p))?;
            opened.push(Partition { end: AtomicI64::new(file.end), file: Mutex::new(file) });
        }
        let open = Arc::new(Topic { partitions: opened, round_robin: AtomicUsize::new(0) });
        *loaded = Some(open.clone());
        Ok(Some(open))
    }

    fn group_file(&self, group: &str) -> PathBuf {
        self.root.join("groups").join(format!("{group}.json"))
    }

    /// The group, its committed offsets read on first use; a file of offsets
    /// that cannot be read is an error naming it, never a silent reset.
    fn group(&self, group: &str) -> Result<Arc<Mutex<Group>>, SinkError> {
        if let Some(loaded) = self.state().groups.get(group) {
            return Ok(loaded.clone());
        }
        let committed = storage::read_offsets(&self.group_file(group))?;
        let mut state = self.state();
        // Another member may have loaded it meanwhile: its entry stands.
        Ok(state.groups.entry(group.to_string()).or_insert_with(|| Arc::new(Mutex::new(Group { committed, ..Group::default() }))).clone())
    }

    /// Appends `records` to `topic` (created with one partition if new),
    /// each partition synced: blocking, so the async side runs it apart.
    fn publish_blocking(&self, topic: &str, records: &[OutRecord]) -> Result<(), SinkError> {
        let loaded = self.topic(topic, Some(1))?.expect("created");
        let now = chrono::Utc::now().timestamp_millis();
        let count = loaded.partitions.len();
        let mut per_partition: Vec<Vec<Vec<u8>>> = vec![Vec::new(); count];
        for record in records {
            let p = partition_for(record.key.as_deref(), count, &loaded.round_robin);
            let line = Line {
                timestamp_ms: Some(now),
                key: record.key.as_deref().map(|k| B64.encode(k)),
                value: B64.encode(&record.value),
                headers: record.headers.iter().map(|(k, v)| (k.clone(), B64.encode(v))).collect(),
            };
            per_partition[p].push(serde_json::to_vec(&line).expect("serializable"));
        }
        // Acknowledged means on disk (each partition synced): a dead letter must survive a crash.
        for (partition, payloads) in loaded.partitions.iter().zip(per_partition) {
            if !payloads.is_empty() {
                let mut file = partition.file.lock().expect("partition poisoned");
                file.append(&payloads)?;
                partition.end.store(file.end, Ordering::Release);
            }
        }
        Ok(())
    }
}

/// Runs blocking file work of the log off the runtime's workers.
async fn blocking<T: Send + 'static>(work: impl FnOnce() -> Result<T, SinkError> + Send + 'static) -> Result<T, SinkError> {
    tokio::task::spawn_blocking(work).await.map_err(|e| sink_error("worker", e))?
}

fn partition_for(key: Option<&[u8]>, partitions: usize, round_robin: &AtomicUsize) -> usize {
    match key {
        // FNV-1a: stable across runs, unlike std's hasher.
        Some(key) => {
            let mut hash: u64 = 0xcbf29ce484222325;
            for byte in key {
                hash = (hash ^ u64::from(*byte)).wrapping_mul(0x100000001b3);
            }
            (hash % partitions as u64) as usize
        }
        None => (round_robin.fetch_add(1, Ordering::Relaxed) + 1) % partitions,
    }
}

/// Reads every record of the partition file at `path` as a consumer
/// would: what a damaged or hostile log file gives (fuzz targets).
#[cfg(feature = "test-support")]
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
        let (bus, topic) = (self.clone(), topic.to_string());
        blocking(move || bus.topic(&topic, Some(partitions.max(1))).map(drop)).await
    }

    /// The records encoded and appended on a blocking thread, under their
    /// partitions' locks only: a large publish (or a slow disk) holds up its
    /// own topic, never another tenant's topics or the API.
    async fn publish(&self, topic: &str, records: &[OutRecord]) -> Result<Published, SinkError> {
        let (bus, topic, records) = (self.clone(), topic.to_string(), records.to_vec());
        blocking(move || bus.publish_blocking(&topic, &records)).await?;
        self.appended.notify_waiters();
        // No record is refused: the log takes any size the call may carry.
        Ok(Published::default())
    }

    async fn consumer(&self, group: &str, topics: &[String]) -> Result<Box<dyn Consumer>, SinkError> {
        let (bus, group_name, names) = (self.clone(), group.to_string(), topics.to_vec());
        let member = blocking(move || {
            for topic in &names {
                bus.topic(topic, Some(1))?;
            }
            let group = bus.group(&group_name)?;
            let member = {
                let mut state = bus.state();
                state.next_member += 1;
                state.next_member - 1
            };
            let mut entry = group.lock().expect("group poisoned");
            entry.members.push(member);
            entry.generation += 1;
            Ok(member)
        })
        .await?;
        Ok(Box::new(EmbeddedConsumer::new(self.clone(), group, topics, member)))
    }

    async fn lag(&self, group: &str, topics: &[String]) -> Result<u64, SinkError> {
        let (bus, group, topics) = (self.clone(), group.to_string(), topics.to_vec());
        blocking(move || {
            let mut ends = Vec::new();
            for topic in &topics {
                if let Some(loaded) = bus.topic(topic, None)? {
                    for (p, partition) in loaded.partitions.iter().enumerate() {
                        ends.push((topic.clone(), p as i32, partition.end.load(Ordering::Acquire)));
                    }
                }
            }
            let group = bus.group(&group)?;
            let entry = group.lock().expect("group poisoned");
            Ok(ends
                .into_iter()
                .map(|(topic, p, end)| {
                    let committed = entry.committed.get(&topic).and_then(|c| c.get(&p)).copied().unwrap_or(0);
                    (end - committed).max(0) as u64
                })
                .sum())
        })
        .await
    }

    async fn read_all(&self, topic: &str, max: usize, _wait: Duration) -> Result<Vec<InRecord>, SinkError> {
        let partitions = match self.topic(topic, None)? {
            Some(loaded) => loaded.partitions.len() as i32,
            None => return Ok(Vec::new()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::framed;

    fn message(value: &str) -> OutRecord {
        OutRecord { key: None, value: value.as_bytes().to_vec(), headers: Vec::new() }
    }

    async fn values(bus: &Arc<EmbeddedBus>, topic: &str) -> Result<Vec<String>, SinkError> {
        let records = bus.read_all(topic, 100, Duration::ZERO).await?;
        Ok(records.into_iter().map(|r| String::from_utf8(r.value).unwrap()).collect())
    }

    /// A topic a host built from ab84cb3 wrote (`host/testdata/ab84cb3`):
    /// its partition count and messages read the same after the switch to
    /// crc32fast, and a message published now lands beside them.
    /// A publish holds only its own partitions while it writes and syncs:
    /// another topic's publish, and the lag of the topic being written, go
    /// on meanwhile (a tenant's flood of dead letters once held one lock
    /// over the whole log across every sync, and a runtime worker with it).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    #[expect(clippy::await_holding_lock, reason = "the test holds a partition's lock across calls, as a long sync does")]
    async fn a_publish_holding_its_partition_holds_up_no_other_topic() {
        let dir = tempfile::tempdir().unwrap();
        let bus = EmbeddedBus::open(dir.path()).unwrap();
        bus.publish("a.dead-letter", &[message("first")]).await.unwrap();
        let topic = bus.topic("a.dead-letter", None).unwrap().expect("created");
        // As a long append's write and sync hold it.
        let held = topic.partitions[0].file.lock().unwrap();
        let bound = Duration::from_secs(10);
        let other = tokio::time::timeout(bound, bus.publish("b.readings", &[message("second")])).await;
        assert!(matches!(other, Ok(Ok(_))), "another topic's publish waited for the held partition");
        let lag = tokio::time::timeout(bound, bus.lag("a.group", &["a.dead-letter".to_string()])).await;
        assert!(matches!(lag, Ok(Ok(1))), "the lag of the topic being written waited for its partition: {lag:?}");
        drop(held);
        bus.publish("a.dead-letter", &[message("third")]).await.unwrap();
        assert_eq!(values(&bus, "a.dead-letter").await.unwrap(), ["first", "third"]);
        assert_eq!(values(&bus, "b.readings").await.unwrap(), ["second"]);
    }

    #[tokio::test]
    async fn a_topic_written_by_ab84cb3_opens_with_its_partitions_and_messages() {
        let dir = tempfile::tempdir().unwrap();
        let written = Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/ab84cb3/messaging/topics/sensors.readings");
        let topic = dir.path().join("topics/sensors.readings");
        std::fs::create_dir_all(&topic).unwrap();
        for file in ["meta.json", "0.log", "1.log", "2.log"] {
            std::fs::copy(written.join(file), topic.join(file)).unwrap();
        }
        assert_eq!(read_meta(&topic.join("meta.json")).unwrap(), Some(3));
        let bus = EmbeddedBus::open(dir.path()).unwrap();
        let readings = values(&bus, "sensors.readings").await.unwrap();
        assert_eq!(
            readings,
            [
                r#"{"sensor_id":"s1","t":"2026-12-07T10:00:00Z","v":1.5}"#,
                r#"{"sensor_id":"s2","t":"2026-12-07T10:00:01Z","v":2.5}"#,
                r#"{"sensor_id":"s1","t":"2026-12-07T10:00:02Z","v":-0.5}"#,
            ]
        );
        let keys: Vec<Option<Vec<u8>>> = read_partition_file(&topic.join("1.log")).unwrap().into_iter().map(|r| r.key).collect();
        assert_eq!(keys, [Some(b"s1".to_vec()), Some(b"s2".to_vec()), Some(b"s1".to_vec())]);
        bus.publish("sensors.readings", &[message("new")]).await.unwrap();
        assert_eq!(values(&bus, "sensors.readings").await.unwrap().len(), 4);
    }

    #[tokio::test]
    async fn a_topics_meta_json_is_one_framed_record_put_in_place_by_a_rename() {
        let dir = tempfile::tempdir().unwrap();
        let meta = dir.path().join("topics/t.a/meta.json");
        // A dangling link where meta.json goes: a write in place would follow
        // it and create its target; a rename replaces the link itself.
        std::fs::create_dir_all(meta.parent().unwrap()).unwrap();
        std::os::unix::fs::symlink(dir.path().join("elsewhere"), &meta).unwrap();
        let bus = EmbeddedBus::open(dir.path()).unwrap();
        bus.ensure_topic("t.a", 3).await.unwrap();
        assert!(!dir.path().join("elsewhere").exists(), "meta.json was written in place, not renamed into place");
        assert!(std::fs::symlink_metadata(&meta).unwrap().is_file());
        let bytes = std::fs::read(&meta).unwrap();
        let records = framed::read(&meta, &bytes).unwrap();
        assert_eq!((records.payloads, records.torn), (vec![br#"{"partitions":3}"#.to_vec()], 0));
        let leftovers: Vec<_> = std::fs::read_dir(meta.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");
        bus.publish("t.a", &[message("one"), message("two")]).await.unwrap();
        drop(bus);

        // Opened again, the topic has its three partitions and its messages.
        let bus = EmbeddedBus::open(dir.path()).unwrap();
        assert_eq!(values(&bus, "t.a").await.unwrap().len(), 2);
        assert_eq!(bus.lag("g", &["t.a".to_string()]).await.unwrap(), 2);
        assert_eq!((0..3).filter(|p| dir.path().join(format!("topics/t.a/{p}.log")).exists()).count(), 3);
        // As written before: plain JSON, read as it is.
        std::fs::create_dir_all(dir.path().join("topics/t.old")).unwrap();
        std::fs::write(dir.path().join("topics/t.old/meta.json"), r#"{"partitions":2}"#).unwrap();
        bus.publish("t.old", &[message("x")]).await.unwrap();
        assert_eq!((0..3).filter(|p| dir.path().join(format!("topics/t.old/{p}.log")).exists()).count(), 2);
    }

    #[tokio::test]
    async fn an_empty_or_damaged_meta_json_is_an_error_naming_it_never_a_new_topic() {
        let dir = tempfile::tempdir().unwrap();
        let bus = EmbeddedBus::open(dir.path()).unwrap();
        bus.ensure_topic("t.a", 2).await.unwrap();
        bus.publish("t.a", &[message("one"), message("two"), message("three")]).await.unwrap();
        drop(bus);
        let topic = dir.path().join("topics/t.a");
        let meta = topic.join("meta.json");
        let logs: Vec<Vec<u8>> = (0..2).map(|p| std::fs::read(topic.join(format!("{p}.log"))).unwrap()).collect();
        let whole = std::fs::read(&meta).unwrap();
        let mut flipped = whole.clone();
        flipped[framed::HEADER + 2] ^= 0x01;
        for (what, damaged) in [
            ("empty, as a crash after the create leaves it", Vec::new()),
            ("cut", whole[..whole.len() - 3].to_vec()),
            ("a flipped byte", flipped),
            ("plain JSON cut", br#"{"partit"#.to_vec()),
            ("no partitions", framed::frame(br#"{"partitions":0}"#)),
        ] {
            std::fs::write(&meta, &damaged).unwrap();
            let bus = EmbeddedBus::open(dir.path()).unwrap();
            for error in [
                bus.ensure_topic("t.a", 1).await.unwrap_err(),
                bus.publish("t.a", &[message("four")]).await.unwrap_err(),
                values(&bus, "t.a").await.unwrap_err(),
                bus.lag("g", &["t.a".to_string()]).await.unwrap_err(),
            ] {
                let error = error.to_string();
                assert!(error.contains(&meta.display().to_string()), "{what}: {error}");
                assert!(error.contains("partition count cannot be read") && error.contains("restore the file"), "{what}: {error}");
                assert!(error.contains("(2 there now)"), "{what}: {error}");
            }
            assert_eq!(std::fs::read(&meta).unwrap(), damaged, "{what}: meta.json is left as it is");
            let after: Vec<Vec<u8>> = (0..2).map(|p| std::fs::read(topic.join(format!("{p}.log"))).unwrap()).collect();
            assert_eq!(after, logs, "{what}: the partitions are untouched");
        }
        // Restored as the error says, the topic loads with every message.
        std::fs::write(&meta, r#"{"partitions":2}"#).unwrap();
        let bus = EmbeddedBus::open(dir.path()).unwrap();
        assert_eq!(values(&bus, "t.a").await.unwrap().len(), 3);
    }
}
