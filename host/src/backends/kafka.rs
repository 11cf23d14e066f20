//! The Kafka message bus, through rdkafka (librdkafka built from source).
//!
//! Topics are created through the admin API with the tenant's partition
//! count. Producers wait for all in-sync replicas and are idempotent, so an
//! acknowledged publish is durable and not duplicated by librdkafka's own
//! retries. Consumers never auto-commit: the stream manager commits after the
//! documents of a batch were acknowledged.
//!
//! About 400 lines, and whole on purpose: it is one backend, the
//! [`MessageBus`] and [`Consumer`] traits answered on one rdkafka
//! configuration (`base`) and one error mapping (`sink_error`,
//! `refused_as_bad`); its consumer half is the commit and pause logic the
//! stream manager depends on, best read next to the bus that creates it.

use super::{Consumer, Header, InRecord, MessageBus, OutRecord, Published, SinkError, blocking};
use crate::config::KafkaConfig;
use async_trait::async_trait;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer as _, StreamConsumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header as KafkaHeader, Headers, Message, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, future_producer::OwnedDeliveryResult};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const BACKEND: &str = "kafka";
/// How long librdkafka may queue and retry one message.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(30);
/// Metadata, offsets and admin requests.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

fn sink_error(context: &str, error: impl std::fmt::Display) -> SinkError {
    SinkError::new(BACKEND, format!("{context}: {error}"))
}

pub struct KafkaBus {
    config: KafkaConfig,
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
    /// One offset reader per group, for lag (it never joins the group).
    lag_readers: Mutex<HashMap<String, Arc<BaseConsumer>>>,
}

impl KafkaBus {
    pub fn connect(config: &KafkaConfig) -> Result<Self, SinkError> {
        let producer: FutureProducer = base(config)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("message.timeout.ms", DELIVERY_TIMEOUT.as_millis().to_string())
            .create()
            .map_err(|e| sink_error(&format!("producer for {}", config.brokers), e))?;
        let admin = base(config).create().map_err(|e| sink_error(&format!("admin client for {}", config.brokers), e))?;
        Ok(KafkaBus { config: config.clone(), producer, admin, lag_readers: Mutex::new(HashMap::new()) })
    }

    /// Sends one record to `topic` and waits until the broker acknowledges or refuses it.
    async fn send(&self, topic: &str, record: &OutRecord) -> OwnedDeliveryResult {
        let mut headers = OwnedHeaders::new_with_capacity(record.headers.len());
        for (key, value) in &record.headers {
            headers = headers.insert(KafkaHeader { key, value: Some(value.as_slice()) });
        }
        let mut message = FutureRecord::<[u8], [u8]>::to(topic).payload(&record.value).headers(headers);
        if let Some(key) = &record.key {
            message = message.key(key.as_slice());
        }
        self.producer.send(message, DELIVERY_TIMEOUT).await
    }

    fn lag_reader(&self, group: &str) -> Result<Arc<BaseConsumer>, SinkError> {
        let mut readers = self.lag_readers.lock().expect("lag readers poisoned");
        if let Some(reader) = readers.get(group) {
            return Ok(reader.clone());
        }
        let reader: BaseConsumer = base(&self.config)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| sink_error("offset reader", e))?;
        let reader = Arc::new(reader);
        readers.insert(group.to_string(), reader.clone());
        Ok(reader)
    }
}

fn base(config: &KafkaConfig) -> ClientConfig {
    let mut client = ClientConfig::new();
    client.set("bootstrap.servers", &config.brokers);
    client
}

/// Partitions of each topic, from the cluster's metadata.
fn partitions(client: &BaseConsumer, topics: &[String]) -> Result<Vec<(String, i32)>, SinkError> {
    let mut found = Vec::new();
    for topic in topics {
        let metadata = client.fetch_metadata(Some(topic), REQUEST_TIMEOUT).map_err(|e| sink_error(&format!("metadata of {topic}"), e))?;
        for t in metadata.topics() {
            if t.error().is_none() {
                found.extend(t.partitions().iter().map(|p| (topic.clone(), p.id())));
            }
        }
    }
    Ok(found)
}

fn to_record(message: &impl Message) -> InRecord {
    let headers = message
        .headers()
        .map(|headers| {
            headers.iter().map(|h| (h.key.to_string(), h.value.map(<[u8]>::to_vec).unwrap_or_default())).collect::<Vec<Header>>()
        })
        .unwrap_or_default();
    InRecord {
        topic: message.topic().to_string(),
        partition: message.partition(),
        offset: message.offset(),
        key: message.key().map(<[u8]>::to_vec),
        value: message.payload().map(<[u8]>::to_vec).unwrap_or_default(),
        timestamp_ms: message.timestamp().to_millis(),
        headers,
    }
}

/// Whether the broker refused a record for what it is (size, format),
/// rather than for load or failure: only then may it be dead-lettered.
fn refused_as_bad(error: &KafkaError) -> bool {
    use RDKafkaErrorCode::*;
    matches!(
        error.rdkafka_error_code(),
        Some(MessageSizeTooLarge | InvalidMessageSize | InvalidMessage | InvalidRecord | InvalidTimestamp | BadMessage | PolicyViolation)
    )
}

#[async_trait]
impl MessageBus for KafkaBus {
    fn kind(&self) -> &'static str {
        "kafka"
    }

    async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), SinkError> {
        let new_topic = NewTopic::new(topic, partitions, TopicReplication::Fixed(self.config.replication_factor));
        let options = AdminOptions::new().request_timeout(Some(REQUEST_TIMEOUT)).operation_timeout(Some(REQUEST_TIMEOUT));
        let results = self
            .admin
            .create_topics([&new_topic], &options)
            .await
            .map_err(|e| sink_error(&format!("create topic {topic} at {}", self.config.brokers), e))?;
        for result in results {
            match result {
                Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
                Err((name, code)) => return Err(sink_error(&format!("create topic {name}"), code)),
            }
        }
        Ok(())
    }

    async fn publish(&self, topic: &str, records: &[OutRecord]) -> Result<Published, SinkError> {
        let deliveries = futures::future::join_all(records.iter().map(|record| self.send(topic, record))).await;
        let mut refused = Vec::new();
        for (index, delivery) in deliveries.into_iter().enumerate() {
            match delivery {
                Ok(_) => {}
                Err((error, _)) if refused_as_bad(&error) => refused.push((index, error)),
                Err((error, _)) => return Err(sink_error(&format!("publish to {topic}"), error)),
            }
        }
        let mut published = Published::default();
        if records.len() == 1 {
            published.refused = refused.into_iter().map(|(index, error)| (index, error.to_string())).collect();
            return Ok(published);
        }
        // librdkafka sends the records of a call in batches, and a batch the
        // broker refuses (too large, say) refuses every record in it: each
        // refused record is sent again alone, and only one refused alone is
        // bad. (Records sent again land after the others of the call.)
        for (index, _) in refused {
            match self.send(topic, &records[index]).await {
                Ok(_) => {}
                Err((error, _)) if refused_as_bad(&error) => published.refused.push((index, error.to_string())),
                Err((error, _)) => return Err(sink_error(&format!("publish to {topic}"), error)),
            }
        }
        Ok(published)
    }

    async fn consumer(&self, group: &str, topics: &[String]) -> Result<Box<dyn Consumer>, SinkError> {
        let consumer: StreamConsumer = base(&self.config)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest")
            // A stopped instance's partitions move to the others within seconds.
            .set("session.timeout.ms", "6000")
            .set("heartbeat.interval.ms", "1000")
            .set("max.poll.interval.ms", self.config.max_poll_interval_ms.to_string())
            .set("partition.assignment.strategy", "cooperative-sticky")
            .create()
            .map_err(|e| sink_error(&format!("consumer of group {group}"), e))?;
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        consumer.subscribe(&names).map_err(|e| sink_error(&format!("subscribe to {}", topics.join(", ")), e))?;
        Ok(Box::new(KafkaConsumer {
            consumer: Arc::new(consumer),
            uncommitted: BTreeMap::new(),
            held: Arc::new(Mutex::new(Vec::new())),
            keepalive: None,
        }))
    }

    async fn lag(&self, group: &str, topics: &[String]) -> Result<u64, SinkError> {
        let reader = self.lag_reader(group)?;
        let topics = topics.to_vec();
        blocking(BACKEND, move || {
            let mut list = TopicPartitionList::new();
            for (topic, partition) in partitions(&reader, &topics)? {
                list.add_partition(&topic, partition);
            }
            let committed = reader.committed_offsets(list.clone(), REQUEST_TIMEOUT).map_err(|e| sink_error("committed offsets", e))?;
            let mut lag = 0;
            for element in committed.elements() {
                let (low, high) = reader
                    .fetch_watermarks(element.topic(), element.partition(), REQUEST_TIMEOUT)
                    .map_err(|e| sink_error("watermarks", e))?;
                let position = match element.offset() {
                    Offset::Offset(offset) => offset,
                    _ => low,
                };
                lag += (high - position).max(0) as u64;
            }
            Ok(lag)
        })
        .await
    }

    async fn read_all(&self, topic: &str, max: usize, wait: Duration) -> Result<Vec<InRecord>, SinkError> {
        let config = self.config.clone();
        let topic = topic.to_string();
        blocking(BACKEND, move || {
            let reader: BaseConsumer = base(&config)
                .set("group.id", format!("mysimbdp-reader-{}", std::process::id()))
                .set("enable.auto.commit", "false")
                .create()
                .map_err(|e| sink_error("reader", e))?;
            let mut list = TopicPartitionList::new();
            let mut ends = BTreeMap::new();
            for (topic, partition) in partitions(&reader, std::slice::from_ref(&topic))? {
                let (low, high) = reader.fetch_watermarks(&topic, partition, REQUEST_TIMEOUT).map_err(|e| sink_error("watermarks", e))?;
                if high > low {
                    list.add_partition_offset(&topic, partition, Offset::Offset(low)).map_err(|e| sink_error("assign", e))?;
                    ends.insert(partition, high);
                }
            }
            let mut records = Vec::new();
            if ends.is_empty() {
                return Ok(records);
            }
            reader.assign(&list).map_err(|e| sink_error("assign", e))?;
            let deadline = std::time::Instant::now() + wait;
            while records.len() < max && !ends.is_empty() && std::time::Instant::now() < deadline {
                match reader.poll(Duration::from_millis(100)) {
                    Some(Ok(message)) => {
                        let record = to_record(&message);
                        if ends.get(&record.partition).is_some_and(|&end| record.offset + 1 >= end) {
                            ends.remove(&record.partition);
                        }
                        records.push(record);
                    }
                    Some(Err(error)) => return Err(sink_error(&format!("read {topic}"), error)),
                    None => {}
                }
            }
            Ok(records)
        })
        .await
    }
}

struct KafkaConsumer {
    consumer: Arc<StreamConsumer>,
    /// Next offsets processed but not committed yet, per topic and partition:
    /// a commit refused during a rebalance is retried at the next poll (which
    /// is what lets the rebalance finish). With cooperative rebalancing a
    /// partition this consumer keeps is not read again, so without the retry
    /// its offsets would stay uncommitted until new messages arrive, and the
    /// lag would show messages that were long ingested.
    uncommitted: BTreeMap<(String, i32), i64>,
    /// Records that arrived while paused (from partitions assigned since),
    /// given out by the next poll.
    held: Arc<Mutex<Vec<InRecord>>>,
    /// While paused: the task that keeps polling, so the member stays in its
    /// group (`max.poll.interval.ms`) and rebalances are served.
    keepalive: Option<(tokio::task::JoinHandle<()>, tokio::sync::watch::Sender<bool>)>,
}

/// How often a paused consumer polls: well inside any poll interval.
const KEEPALIVE_POLL: Duration = Duration::from_secs(1);

impl KafkaConsumer {
    /// Commits `uncommitted` for the partitions this consumer still owns;
    /// the others' new owners read them again from the group's committed
    /// offset (and must not have theirs overwritten by older ones).
    async fn commit_uncommitted(&mut self) -> Result<(), SinkError> {
        let consumer = self.consumer.clone();
        let pending = self.uncommitted.clone();
        blocking(BACKEND, move || {
            let owned = consumer.assignment().map_err(|e| sink_error("assignment", e))?;
            let mut list = TopicPartitionList::new();
            for ((topic, partition), offset) in &pending {
                if owned.find_partition(topic, *partition).is_some() {
                    list.add_partition_offset(topic, *partition, Offset::Offset(*offset)).map_err(|e| sink_error("commit", e))?;
                }
            }
            if list.count() > 0 {
                consumer.commit(&list, CommitMode::Sync).map_err(|e| sink_error("commit offsets", e))?;
            }
            Ok(())
        })
        .await?;
        self.uncommitted.clear();
        Ok(())
    }
}

#[async_trait]
impl Consumer for KafkaConsumer {
    async fn poll(&mut self, max: usize, wait: Duration) -> Result<Vec<InRecord>, SinkError> {
        if !self.uncommitted.is_empty() {
            // Still refused: kept for the next poll; the caller was told when it failed.
            let _ = self.commit_uncommitted().await;
        }
        let mut records: Vec<InRecord> = {
            let mut held = self.held.lock().expect("poisoned");
            let take = held.len().min(max);
            held.drain(..take).collect()
        };
        if !records.is_empty() {
            return Ok(records);
        }
        let deadline = tokio::time::Instant::now() + wait;
        while records.len() < max {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Err(_elapsed) => break,
                Ok(Ok(message)) => records.push(to_record(&message)),
                Ok(Err(error)) => {
                    if records.is_empty() {
                        return Err(sink_error("poll", error));
                    }
                    break;
                }
            }
        }
        Ok(records)
    }

    async fn commit(&mut self, processed: &[(String, i32, i64)]) -> Result<(), SinkError> {
        for (topic, partition, offset) in processed {
            let slot = self.uncommitted.entry((topic.clone(), *partition)).or_insert(offset + 1);
            *slot = (*slot).max(offset + 1);
        }
        self.commit_uncommitted().await
    }

    async fn pause(&mut self) -> Result<(), SinkError> {
        if self.keepalive.is_some() {
            return Ok(());
        }
        let consumer = self.consumer.clone();
        blocking(BACKEND, move || {
            let assigned = consumer.assignment().map_err(|e| sink_error("assignment", e))?;
            consumer.pause(&assigned).map_err(|e| sink_error("pause", e))
        })
        .await?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        let (consumer, held) = (self.consumer.clone(), self.held.clone());
        let task = tokio::spawn(async move {
            while !*stopped.borrow() {
                tokio::select! {
                    received = tokio::time::timeout(KEEPALIVE_POLL, consumer.recv()) => {
                        if let Ok(Ok(message)) = received {
                            held.lock().expect("poisoned").push(to_record(&message));
                        }
                    }
                    _ = stopped.changed() => break,
                }
            }
        });
        self.keepalive = Some((task, stop));
        Ok(())
    }

    async fn resume(&mut self) -> Result<(), SinkError> {
        let Some((task, stop)) = self.keepalive.take() else {
            return Ok(());
        };
        let _ = stop.send(true);
        let _ = task.await;
        let consumer = self.consumer.clone();
        blocking(BACKEND, move || {
            let assigned = consumer.assignment().map_err(|e| sink_error("assignment", e))?;
            consumer.resume(&assigned).map_err(|e| sink_error("resume", e))
        })
        .await
    }

    async fn close(mut self: Box<Self>) {
        if let Some((task, stop)) = self.keepalive.take() {
            let _ = stop.send(true);
            let _ = task.await;
        }
        if !self.uncommitted.is_empty() {
            // A last try; what stays uncommitted is read again after a restart.
            let _ = self.commit_uncommitted().await;
        }
        let consumer = self.consumer.clone();
        let _ = tokio::task::spawn_blocking(move || consumer.unsubscribe()).await;
    }
}

#[cfg(test)]
mod tests {
    use super::refused_as_bad;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};

    #[test]
    fn only_records_refused_for_what_they_are_count_as_bad() {
        let cases = [
            (KafkaError::MessageProduction(RDKafkaErrorCode::MessageSizeTooLarge), true),
            (KafkaError::MessageProduction(RDKafkaErrorCode::InvalidRecord), true),
            (KafkaError::MessageProduction(RDKafkaErrorCode::InvalidMessage), true),
            (KafkaError::MessageProduction(RDKafkaErrorCode::MessageTimedOut), false),
            (KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), false),
            (KafkaError::MessageProduction(RDKafkaErrorCode::NotLeaderForPartition), false),
            (KafkaError::MessageProduction(RDKafkaErrorCode::BrokerTransportFailure), false),
            (KafkaError::MessageProduction(RDKafkaErrorCode::NotEnoughReplicas), false),
            (KafkaError::Canceled, false),
        ];
        for (error, bad) in cases {
            assert_eq!(refused_as_bad(&error), bad, "{error}");
        }
    }
}
