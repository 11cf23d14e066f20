//! `stream`: the stream path through the real services, Kafka → sensor-stream
//! component → OpenSearch, with the host's StreamManager in-process.
//!
//! - `host-<n>`: N readings are produced first, then n instances start; the
//!   clock stops when OpenSearch counts N documents (refresh + `_count` every
//!   ~250 ms), so consumer-group join, the guest, `_bulk` and the offset
//!   commits are all inside.
//! - `bulk`: the baseline. The same readings, transformed natively with
//!   `sensor_model::reading_document` and `_bulk`-ed 500 at a time, one
//!   request after the other (as one instance does), with the same ids.
//! - `native-consumer`: for context, a hand-written rdkafka consumer doing
//!   what an instance does (poll ≤ 500 / 200 ms, transform, `_bulk`, commit)
//!   without the sandbox and the host's bookkeeping.
//! - latency: with one instance running, probe messages are produced every
//!   100 ms, with background messages to make up each `--rates` (messages
//!   per second in all, the probes' 10 included), and searched for
//!   (query_string, no forced refresh) until found: produce → searchable as
//!   a user sees it, p50 and p99 at each rate.
//!
//! Every index and topic is unique to the run and deleted at the end.

use crate::common::{self, BenchPlatform, median, percentile, secs};
use crate::search::Search;
use anyhow::Context;
use clap::Args as ClapArgs;
use mysimbdp::config::{Name, TenantId};
use mysimbdp::pipelines::PipelineKind;
use mysimbdp::platform::Platform;
use rdkafka::ClientConfig;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::{Offset, TopicPartitionList};
use sensor_model::{Limits, reading_document};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

const PARTITIONS: i32 = 3;
const BULK_DOCS: usize = 500;
const GENERATE: &str = "python3 scripts/gen-data.py readings --rows 200000 --bad-every 0 --seed 1 > bench/data/readings-200k.ndjson";
/// A run that has not finished by then is reported as failed.
const TIMEOUT: Duration = Duration::from_secs(900);

#[derive(ClapArgs)]
pub struct Args {
    /// Readings per throughput run.
    #[arg(long, default_value_t = 200_000)]
    messages: usize,
    /// Instance counts of the host's stream pipeline to measure.
    #[arg(long, value_delimiter = ',', default_value = "1,3")]
    instances: Vec<u32>,
    /// Rounds of the throughput variants (each round runs every variant once).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Probe messages of the latency measurement (one every 100 ms).
    #[arg(long, default_value_t = 150)]
    probes: usize,
    /// Messages per second during each latency measurement, the probes' 10
    /// included (the rest is background load).
    #[arg(long, value_delimiter = ',', default_value = "10,100")]
    rates: Vec<u32>,
    #[arg(long)]
    skip_latency: bool,
    #[arg(long)]
    skip_throughput: bool,
    /// Only these throughput variants (bulk, host, native-consumer); all by default.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
    #[arg(long, env = "MYSIMBDP_KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    #[arg(long, env = "MYSIMBDP_ELASTICSEARCH_URL", default_value = "http://127.0.0.1:9200")]
    opensearch: String,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let search = Search::new(&args.opensearch);
    search.health().await.with_context(|| format!("OpenSearch at {} (scripts/services.sh up)", args.opensearch))?;
    let kafka = Kafka::new(&args.brokers)?;
    let lines = readings(args.messages)?;
    println!(
        "stream: {} readings, {PARTITIONS} partitions, host instances {:?}, {} rounds; Kafka {}, OpenSearch {}",
        lines.len(),
        args.instances,
        args.runs,
        args.brokers,
        args.opensearch
    );

    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let mut runs: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    if !args.skip_throughput {
        // Round by round, so the machine's drift hits every variant alike.
        for round in 1..=args.runs {
            println!("\nround {round}/{}", args.runs);
            if wanted("bulk") {
                let bulk = bulk_loader(&search, &lines).await?;
                runs.entry("bulk".into()).or_default().push(bulk);
            }
            for &n in args.instances.iter().filter(|_| wanted("host")) {
                let host = host_stream(&args, &search, &kafka, &lines, n).await?;
                runs.entry(format!("host-{n}")).or_default().push(host);
            }
            if wanted("native-consumer") {
                let native = native_consumer(&args, &search, &kafka, &lines).await?;
                runs.entry("native-consumer".into()).or_default().push(native);
            }
        }
    }

    let mut result = json!({
        "input": { "messages": lines.len(), "partitions": PARTITIONS, "generate": GENERATE },
        "rounds": args.runs,
    });
    if !runs.is_empty() {
        let mut summary = serde_json::Map::new();
        println!("\nthroughput (median of {} rounds; from start / after the first document)", args.runs);
        for (name, list) in &runs {
            let rates: Vec<f64> = list.iter().map(|r| r["msgs_per_s"].as_f64().unwrap_or(f64::NAN)).collect();
            let steady: Vec<f64> = list.iter().map(|r| r["steady_msgs_per_s"].as_f64().unwrap_or(f64::NAN)).collect();
            let all: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
            println!("  {name:<16} {:>8.0} msg/s  steady {:>8.0} msg/s  (runs: {})", median(&rates), median(&steady), all.join(", "));
            summary.insert(
                name.clone(),
                json!({ "median_msgs_per_s": median(&rates), "median_steady_msgs_per_s": median(&steady), "runs": list }),
            );
        }
        let mut ratios = serde_json::Map::new();
        let rate_of = |name: &str, key: &str| -> Option<f64> { summary.get(name).and_then(|s| s[key].as_f64()) };
        if let Some(bulk) = rate_of("bulk", "median_msgs_per_s") {
            for &n in &args.instances {
                let name = format!("host-{n}");
                if let Some(host) = rate_of(&name, "median_msgs_per_s") {
                    let ratio = host / bulk;
                    println!("  ratio {name} / bulk: {ratio:.3} (target >= 0.8: {})", if ratio >= 0.8 { "met" } else { "MISSED" });
                    ratios.insert(format!("{name}_over_bulk"), json!(ratio));
                    if let Some(steady) = rate_of(&name, "median_steady_msgs_per_s") {
                        ratios.insert(format!("{name}_steady_over_bulk"), json!(steady / bulk));
                        println!("  ratio {name} (steady) / bulk: {:.3}", steady / bulk);
                    }
                    if let Some(native) = rate_of("native-consumer", "median_msgs_per_s") {
                        ratios.insert(format!("{name}_over_native_consumer"), json!(host / native));
                        println!("  ratio {name} / native-consumer: {:.3}", host / native);
                    }
                }
            }
            if let Some(native) = rate_of("native-consumer", "median_msgs_per_s") {
                ratios.insert("native_consumer_over_bulk".into(), json!(native / bulk));
                println!("  ratio native-consumer / bulk: {:.3}", native / bulk);
            }
        }
        result["throughput"] = Value::Object(summary);
        result["ratios"] = Value::Object(ratios);
        result["target"] = json!({ "host_over_bulk_at_least": 0.8 });
    }
    if !args.skip_latency {
        // A failure here keeps the throughput numbers above.
        let mut at_rates = serde_json::Map::new();
        for &rate in &args.rates {
            let measured = match latency(&args, rate, &search, &kafka, &lines).await {
                Ok(latency) => latency,
                Err(error) => {
                    eprintln!("latency measurement at {rate} msg/s failed: {error:#}");
                    json!({ "error": format!("{error:#}") })
                }
            };
            at_rates.insert(format!("{rate}_msgs_per_s"), measured);
        }
        result["latency"] = Value::Object(at_rates);
    }
    common::write_result("stream", result)?;
    Ok(())
}

/// The first `n` readings of the generated file (all valid).
fn readings(n: usize) -> anyhow::Result<Vec<String>> {
    let path = common::input("readings-200k.ndjson", GENERATE)?;
    let lines: Vec<String> = std::fs::read_to_string(&path)?.lines().take(n).map(str::to_string).collect();
    anyhow::ensure!(lines.len() == n, "{} has {} readings, {n} wanted: generate more", path.display(), lines.len());
    Ok(lines)
}

fn services_config(args: &Args) -> String {
    format!("coredms:\n  kind: elasticsearch\n  url: {}\nmessaging:\n  kind: kafka\n  brokers: {}", args.opensearch, args.brokers)
}

/// The sensors profile with the run's partitions and instances.
fn profile() -> anyhow::Result<String> {
    common::profile_with(
        "tenants/sensors/profile.yaml",
        &[("stream.partitions", &PARTITIONS.to_string()), ("stream.max_instances", "3"), ("stream.min_instances", "1")],
    )
}

/// Docs per second from the start and after the first document was visible.
struct Progress {
    seconds: f64,
    first_visible: f64,
    count_at_first: u64,
}

impl Progress {
    fn json(&self, messages: usize, extra: Value) -> Value {
        let steady = (messages as u64 - self.count_at_first) as f64 / (self.seconds - self.first_visible);
        let mut value = json!({
            "seconds": self.seconds,
            "msgs_per_s": messages as f64 / self.seconds,
            "first_visible_s": self.first_visible,
            "steady_msgs_per_s": steady,
        });
        if let (Value::Object(into), Value::Object(from)) = (&mut value, extra) {
            into.extend(from);
        }
        value
    }
}

/// Refreshes and counts `index` every ~250 ms until it holds `target` documents.
async fn wait_for_count(search: &Search, index: &str, target: u64, started: Instant) -> anyhow::Result<Progress> {
    let mut first: Option<(f64, u64)> = None;
    loop {
        let count = search.refresh_count(index).await?;
        let now = secs(started.elapsed());
        if count > 0 && first.is_none() {
            first = Some((now, count));
        }
        if count >= target {
            let (first_visible, count_at_first) = first.expect("count > 0");
            return Ok(Progress { seconds: now, first_visible, count_at_first });
        }
        anyhow::ensure!(now < TIMEOUT.as_secs_f64(), "{index}: {count} of {target} documents after {now:.0} s");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// (b) The baseline: native transform and sequential `_bulk` of 500.
async fn bulk_loader(search: &Search, lines: &[String]) -> anyhow::Result<Value> {
    let index = format!("{}-bulk", common::unique_tenant("bb"));
    let limits = Limits::default();
    let started = Instant::now();
    search.create(&index, &json!({})).await?;
    for (c, chunk) in lines.chunks(BULK_DOCS).enumerate() {
        let mut body = String::with_capacity(chunk.len() * 512);
        for (j, line) in chunk.iter().enumerate() {
            let i = c * BULK_DOCS + j;
            let reading: Value = serde_json::from_str(line)?;
            let doc = reading_document(&reading, &limits).map_err(anyhow::Error::msg)?;
            // The ids an instance gives: topic-partition-offset.
            let id = format!("readings-{}-{}", i % PARTITIONS as usize, i / PARTITIONS as usize);
            body.push_str(&json!({ "index": { "_id": id } }).to_string());
            body.push('\n');
            body.push_str(&doc.to_string());
            body.push('\n');
        }
        search.bulk(&index, body).await?;
    }
    let acknowledged = secs(started.elapsed());
    let count = search.refresh_count(&index).await?;
    let seconds = secs(started.elapsed());
    anyhow::ensure!(count == lines.len() as u64, "{index}: {count} documents, {} written", lines.len());
    search.delete(&index).await;
    println!("  bulk             {seconds:>6.2} s  {:>8.0} msg/s", lines.len() as f64 / seconds);
    Ok(
        json!({ "seconds": seconds, "acknowledged_s": acknowledged, "msgs_per_s": lines.len() as f64 / seconds, "steady_msgs_per_s": lines.len() as f64 / seconds }),
    )
}

/// A fresh tenant (named from `prefix`) on a platform against the real
/// services, with the sensor-stream component uploaded as `live` and
/// compiled, and its `readings` topic created: (tenant, its platform files,
/// the open platform, the topic).
async fn stream_tenant(args: &Args, prefix: &str, run: &str) -> anyhow::Result<(String, BenchPlatform, Arc<Platform>, String)> {
    let tenant = common::unique_tenant(prefix);
    let bench = BenchPlatform::builder().tenant(&tenant, profile()?).config(&services_config(args)).build(run)?;
    bench.upload(&tenant, PipelineKind::Stream, "live", &common::guest("sensor_stream")?)?;
    let platform = bench.open().await?;
    common::warm(&platform, &tenant, PipelineKind::Stream, "live").await?;
    let topic = tenant_id(&tenant)?.topic(&Name::parse("readings").map_err(anyhow::Error::msg)?);
    platform.ensure_topic(&topic, PARTITIONS).await?;
    Ok((tenant, bench, platform, topic))
}

/// (a) The host's stream manager with `instances` instances on pre-produced readings.
async fn host_stream(args: &Args, search: &Search, kafka: &Kafka, lines: &[String], instances: u32) -> anyhow::Result<Value> {
    let (tenant, bench, platform, topic) = stream_tenant(args, "bs", "stream").await?;
    let produced = kafka.produce_all(&topic, lines).await?;

    let manager = platform.stream_manager();
    let index = format!("{tenant}-readings");
    let started = Instant::now();
    manager.start(&tenant, Some(instances)).await?;
    let progress = wait_for_count(search, &index, lines.len() as u64, started).await;
    manager.stop(&tenant).await?;
    platform.close().await;
    let records = common::ingestion_records(&bench.tenant_dir(&tenant), PipelineKind::Stream);
    search.delete(&format!("{tenant}-*")).await;
    kafka.delete_topics(&[topic, tenant_id(&tenant)?.dead_letter_topic()]).await;
    let progress = progress?;

    // Where the time went, from the host's own records of each batch.
    let batches = records.len();
    let busy_ms: f64 = records.iter().map(|r| r.duration_ms).sum();
    let fuel: u64 = records.iter().map(|r| r.fuel_consumed).sum();
    let messages: u64 = records.iter().map(|r| r.records_in).sum();
    let durations: Vec<f64> = records.iter().map(|r| r.duration_ms).collect();
    println!(
        "  host-{instances:<11} {:>6.2} s  {:>8.0} msg/s  (first doc after {:.2} s; {batches} batches, median {:.0} ms, busy {:.1} s; produced at {:.0} msg/s)",
        progress.seconds,
        lines.len() as f64 / progress.seconds,
        progress.first_visible,
        median(&durations),
        busy_ms / 1000.0,
        lines.len() as f64 / produced
    );
    Ok(progress.json(
        lines.len(),
        json!({
            "instances": instances,
            "batches": batches,
            "messages_in_records": messages,
            "batch_ms_median": median(&durations),
            "batch_ms_p99": percentile(&durations, 99.0),
            "busy_s": busy_ms / 1000.0,
            "fuel_per_message": fuel as f64 / messages.max(1) as f64,
            "peak_memory_bytes": records.iter().map(|r| r.peak_memory_bytes).max().unwrap_or(0),
            "produce_s": produced,
        }),
    ))
}

/// (c) What one instance does, written by hand with rdkafka and reqwest.
async fn native_consumer(args: &Args, search: &Search, kafka: &Kafka, lines: &[String]) -> anyhow::Result<Value> {
    let base = common::unique_tenant("bn");
    let topic = format!("{base}.readings");
    let index = format!("{base}-readings");
    kafka.create_topic(&topic, PARTITIONS).await?;
    kafka.produce_all(&topic, lines).await?;

    let stop = Arc::new(AtomicBool::new(false));
    let started = Instant::now();
    let task = {
        let (brokers, topic, index, stop, search) = (args.brokers.clone(), topic.clone(), index.clone(), stop.clone(), search.clone());
        tokio::spawn(async move { consume(&brokers, &topic, &index, &search, &stop).await })
    };
    let progress = wait_for_count(search, &index, lines.len() as u64, started).await;
    stop.store(true, Ordering::Release);
    let consumed = task.await?;
    search.delete(&index).await;
    kafka.delete_topics(&[topic]).await;
    let progress = progress?;
    consumed?;
    println!(
        "  native-consumer  {:>6.2} s  {:>8.0} msg/s  (first doc after {:.2} s)",
        progress.seconds,
        lines.len() as f64 / progress.seconds,
        progress.first_visible
    );
    Ok(progress.json(lines.len(), json!({})))
}

/// The loop of a stream instance, without the sandbox: same consumer
/// settings, same poll (≤ 500 messages, ≤ 200 ms), same ids, commit after `_bulk`.
async fn consume(brokers: &str, topic: &str, index: &str, search: &Search, stop: &AtomicBool) -> anyhow::Result<()> {
    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}.native"))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "1000")
        .set("partition.assignment.strategy", "cooperative-sticky")
        .create()?;
    consumer.subscribe(&[topic])?;
    let consumer = Arc::new(consumer);
    let limits = Limits::default();
    let short = topic.split_once('.').map_or(topic, |(_, t)| t).to_string();
    let mut created = false;
    while !stop.load(Ordering::Acquire) {
        let deadline = tokio::time::Instant::now() + Duration::from_millis(200);
        let mut body = String::new();
        let mut next: HashMap<i32, i64> = HashMap::new();
        let mut polled = 0;
        while polled < BULK_DOCS {
            let Ok(message) = tokio::time::timeout_at(deadline, consumer.recv()).await else {
                break;
            };
            let message = message?;
            polled += 1;
            next.insert(message.partition(), message.offset() + 1);
            let reading: Value = serde_json::from_slice(message.payload().unwrap_or_default())?;
            let doc = reading_document(&reading, &limits).map_err(anyhow::Error::msg)?;
            body.push_str(&json!({ "index": { "_id": format!("{short}-{}-{}", message.partition(), message.offset()) } }).to_string());
            body.push('\n');
            body.push_str(&doc.to_string());
            body.push('\n');
        }
        if polled == 0 {
            continue;
        }
        if !created {
            // As the host does on the first write of an index.
            search.create(index, &json!({})).await?;
            created = true;
        }
        search.bulk(index, body).await?;
        let mut offsets = TopicPartitionList::new();
        for (partition, offset) in next {
            offsets.add_partition_offset(topic, partition, Offset::Offset(offset))?;
        }
        let committer = consumer.clone();
        tokio::task::spawn_blocking(move || committer.commit(&offsets, CommitMode::Sync)).await??;
    }
    Ok(())
}

/// (d) Produce → searchable with one instance under background load.
async fn latency(args: &Args, rate: u32, search: &Search, kafka: &Kafka, lines: &[String]) -> anyhow::Result<Value> {
    let (tenant, _bench, platform, topic) = stream_tenant(args, "bl", "stream-latency").await?;
    let index = format!("{tenant}-readings");
    let manager = platform.stream_manager();
    manager.start(&tenant, Some(1)).await?;
    println!("\nlatency: 1 instance, {rate} msg/s in all, {} probes every 100 ms among them", args.probes);

    let result = measure_latency(args, rate, search, kafka, lines, &topic, &index).await;
    manager.stop(&tenant).await?;
    platform.close().await;
    search.delete(&format!("{tenant}-*")).await;
    kafka.delete_topics(&[topic, tenant_id(&tenant)?.dead_letter_topic()]).await;
    result
}

fn tenant_id(tenant: &str) -> anyhow::Result<TenantId> {
    TenantId::parse(tenant).map_err(anyhow::Error::msg)
}

async fn measure_latency(
    args: &Args,
    rate: u32,
    search: &Search,
    kafka: &Kafka,
    lines: &[String],
    topic: &str,
    index: &str,
) -> anyhow::Result<Value> {
    // Wait until the instance has joined and the index exists: one message through.
    let warmup = probe_reading("warmup-0");
    kafka.producer.send(FutureRecord::<(), str>::to(topic).payload(warmup.as_str()), Duration::from_secs(30)).await.map_err(|(e, _)| e)?;
    let deadline = Instant::now() + Duration::from_secs(120);
    while search.find(index, &["warmup-0".to_string()]).await?.is_empty() {
        anyhow::ensure!(Instant::now() < deadline, "the warm-up message never became searchable in {index}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let outstanding: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let sending = Arc::new(AtomicBool::new(true));
    let sender = {
        let (producer, topic, outstanding, sending) = (kafka.producer.clone(), topic.to_string(), outstanding.clone(), sending.clone());
        let (lines, probes, per_tick) = (lines.to_vec(), args.probes, (rate.saturating_sub(10) / 10) as usize);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            let mut background = lines.iter().cycle();
            let mut deliveries = Vec::new();
            for n in 0..probes {
                tick.tick().await;
                for _ in 0..per_tick {
                    let line = background.next().expect("cycle");
                    if let Ok(delivery) = producer.send_result(FutureRecord::<(), str>::to(&topic).payload(line.as_str())) {
                        deliveries.push(delivery);
                    }
                }
                let id = format!("probe-{n}");
                let probe = probe_reading(&id);
                outstanding.lock().expect("poisoned").insert(id, Instant::now());
                if let Ok(delivery) = producer.send_result(FutureRecord::<(), str>::to(&topic).payload(probe.as_str())) {
                    deliveries.push(delivery);
                }
            }
            sending.store(false, Ordering::Release);
            futures::future::join_all(deliveries).await.into_iter().filter(|d| !matches!(d, Ok(Ok(_)))).count()
        })
    };

    // Search for every outstanding probe at once, every 25 ms.
    let mut latencies = Vec::new();
    let mut query_ms = Vec::new();
    let mut last_probe_sent = Instant::now();
    loop {
        let wanted: Vec<String> = outstanding.lock().expect("poisoned").keys().cloned().collect();
        if wanted.is_empty() && !sending.load(Ordering::Acquire) {
            break;
        }
        if sending.load(Ordering::Acquire) {
            last_probe_sent = Instant::now();
        }
        anyhow::ensure!(last_probe_sent.elapsed() < Duration::from_secs(60), "{} probes never became searchable", wanted.len());
        if !wanted.is_empty() {
            let asked = Instant::now();
            let found = search.find(index, &wanted).await?;
            let now = Instant::now();
            query_ms.push((now - asked).as_secs_f64() * 1000.0);
            let mut outstanding = outstanding.lock().expect("poisoned");
            for id in found {
                if let Some(sent) = outstanding.remove(&id) {
                    latencies.push((now - sent).as_secs_f64() * 1000.0);
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    let failed_deliveries = sender.await?;
    let stats = json!({
        "probes": latencies.len(),
        "msgs_per_s": rate,
        "background_msgs_per_s": rate.saturating_sub(10),
        "p50_ms": percentile(&latencies, 50.0),
        "p90_ms": percentile(&latencies, 90.0),
        "p99_ms": percentile(&latencies, 99.0),
        "max_ms": percentile(&latencies, 100.0),
        "min_ms": percentile(&latencies, 0.0),
        "mean_ms": latencies.iter().sum::<f64>() / latencies.len() as f64,
        "query_ms_median": median(&query_ms),
        "failed_deliveries": failed_deliveries,
        "process_rss_mib_at_end": common::rss_mib(),
        "latencies_ms": latencies,
    });
    println!(
        "  produce → searchable over {} probes: p50 {:.0} ms, p90 {:.0} ms, p99 {:.0} ms, max {:.0} ms (search round trip {:.0} ms)",
        stats["probes"],
        stats["p50_ms"].as_f64().unwrap_or(0.0),
        stats["p90_ms"].as_f64().unwrap_or(0.0),
        stats["p99_ms"].as_f64().unwrap_or(0.0),
        stats["max_ms"].as_f64().unwrap_or(0.0),
        median(&query_ms)
    );
    Ok(stats)
}

/// A valid reading whose sensor id marks it.
fn probe_reading(sensor_id: &str) -> String {
    let ts = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ");
    json!({ "sensor_id": sensor_id, "site": "oulu", "ts": ts.to_string(), "temperature_c": 1.5, "humidity_pct": 60.0, "pressure_hpa": 1001.0, "battery_v": 3.6 })
        .to_string()
}

/// Kafka seen from outside the host: producing inputs, topics of the baselines.
struct Kafka {
    producer: FutureProducer,
    admin: AdminClient<DefaultClientContext>,
}

impl Kafka {
    fn new(brokers: &str) -> anyhow::Result<Kafka> {
        // As durable as the host's own producer.
        let producer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "1000000")
            .create()?;
        let admin = ClientConfig::new().set("bootstrap.servers", brokers).create()?;
        Ok(Kafka { producer, admin })
    }

    async fn create_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        let options = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
        for result in self.admin.create_topics([&NewTopic::new(topic, partitions, TopicReplication::Fixed(1))], &options).await? {
            result.map_err(|(topic, code)| anyhow::anyhow!("create topic {topic}: {code}"))?;
        }
        Ok(())
    }

    async fn delete_topics(&self, topics: &[String]) {
        let names: Vec<&str> = topics.iter().map(String::as_str).collect();
        let _ = self.admin.delete_topics(&names, &AdminOptions::new()).await;
    }

    /// Produces the lines spread evenly over the partitions; returns the seconds it took.
    async fn produce_all(&self, topic: &str, lines: &[String]) -> anyhow::Result<f64> {
        let started = Instant::now();
        for (c, chunk) in lines.chunks(20_000).enumerate() {
            let sends = chunk.iter().enumerate().map(|(j, line)| {
                let partition = ((c * 20_000 + j) % PARTITIONS as usize) as i32;
                self.producer.send(FutureRecord::<(), str>::to(topic).payload(line.as_str()).partition(partition), Duration::from_secs(60))
            });
            for delivery in futures::future::join_all(sends).await {
                delivery.map_err(|(error, _)| anyhow::anyhow!("produce to {topic}: {error}"))?;
            }
        }
        Ok(secs(started.elapsed()))
    }
}
