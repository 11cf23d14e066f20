//! Good data is never marked bad, against the real host process, Kafka and
//! OpenSearch (reached through the fault proxy):
//! - an OpenSearch that refuses every item for load past the retries fails
//!   the file retryably (to `failed/` with the reason, not one dead letter),
//!   and `batch retry` ingests it exactly once when the cluster recovers;
//! - a store slower than the stream's deadline is a sink error: the batch is
//!   retried with backoff, nothing is dead-lettered, and the consumer stays
//!   in its group past `max.poll.interval.ms`, so each message is handled once;
//! - the same overloaded OpenSearch under a stream: nothing is committed or
//!   dead-lettered, and after it recovers each message is indexed once;
//! - `messaging.publish`: a message the broker refuses for what it is (too
//!   large for its topic) becomes a `message-refused` dead letter and the
//!   others are delivered; a broker that is down fails the file retryably,
//!   dead-lettering nothing.
//!
//! Each test uses tenant ids of its own, so runs never see each other's data.

use mysimbdp::failure::FailureKind;
use mysimbdp::pipelines::PipelineKind;
use mysimbdp::telemetry::{IngestionRecord, Outcome};
use mysimbdp_tests::{
    FaultProxy, RunningHost, Search, Services, TestPlatform, artifacts, eventually, ingestions, kcat_headers, kcat_produce, kcat_read,
    orders_csv, profile_with, read_log, stage, unique_tenant,
};
use std::sync::atomic::Ordering;
use std::time::Duration;

const HOST: &str = env!("CARGO_BIN_EXE_mysimbdp-test-host");
const QUICK: &str = "batch:\n  scan_interval_ms: 200\n  min_file_age_ms: 100\nstream:\n  monitor_interval_ms: 1000\n";

fn search() -> Search {
    Search::new(&Services::from_env().elasticsearch_url)
}

fn brokers() -> String {
    Services::from_env().brokers
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

/// An OpenSearch that answers every bulk item with 429, past the host's
/// retries: the file fails as a sink error and waits in `failed/` with the
/// reason; no document is dead-lettered. Once the cluster recovers, `batch
/// retry` ingests every row once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_opensearch_leaves_the_file_retryable_not_dead_lettered() {
    let tenant = unique_tenant("retail");
    let proxy = FaultProxy::start(&Services::from_env().elasticsearch_url, 0, 0).await;
    proxy.overloaded.store(true, Ordering::SeqCst);
    let test = TestPlatform::builder()
        .tenant_yaml(&tenant, &profile_with("tenants/retail/profile.yaml", &[]))
        .services_through(&proxy.url)
        .coredms_option("max_retries: 2")
        .config(QUICK)
        .build();
    test.upload(&tenant, PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let _host = RunningHost::start(&test, HOST).await;
    let rows = 500;
    let staging = test.tenant_dir(&tenant).join("staging");
    std::fs::write(staging.join(".orders.csv.part"), orders_csv(1, rows)).unwrap();
    std::fs::rename(staging.join(".orders.csv.part"), staging.join("orders.csv")).unwrap();

    let reason_file = test.tenant_dir(&tenant).join("failed/orders.csv.reason.json");
    let reason = eventually("orders.csv to fail retryably", Duration::from_secs(120), || {
        let reason = std::fs::read_to_string(&reason_file).ok();
        async move { reason }
    })
    .await;
    assert!(reason.contains("sink-error") && reason.contains("refused for load"), "{reason}");
    assert!(test.tenant_dir(&tenant).join("failed/orders.csv").exists(), "the file is kept whole in failed/");
    assert!(proxy.bulk_requests.load(Ordering::SeqCst) >= 3, "the first try and its 2 retries");
    let dead_topic = format!("{tenant}.dead-letter");
    assert_eq!(kcat_read(&brokers(), &dead_topic).len(), 0, "nothing refused for load is dead-lettered");
    let index = format!("{tenant}-orders");
    assert_eq!(search().count(&index).await, 0, "the overloaded cluster took nothing");

    proxy.overloaded.store(false, Ordering::SeqCst);
    let retried = test.retry_failed(&tenant).await;
    assert_eq!(retried, ["orders.csv"]);
    let archived = test.tenant_dir(&tenant).join("archive/orders.csv");
    eventually("orders.csv to be ingested after the retry", Duration::from_secs(120), || {
        let done = archived.exists();
        async move { done.then_some(()) }
    })
    .await;
    assert_eq!(search().count(&index).await, rows as u64, "every row once");
    assert_eq!(kcat_read(&brokers(), &dead_topic).len(), 0, "valid rows make no dead letters");
    assert!(!reason_file.exists(), "the reason went with the file");
    search().delete(&format!("{tenant}-*")).await;
}

/// OpenSearch answers each bulk later than the stream's deadline for a
/// while: each try of the batch is a sink error ("slow store"), retried with
/// backoff; not one message is dead-lettered (the old rule bisected the batch
/// and dead-lettered healthy messages as `deadline`). The slow spell outlasts
/// `max.poll.interval.ms` (7 s here); the paused consumer kept polling, so it
/// stayed in its group: no poll or commit failed and each message was
/// ingested by exactly one successful batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_slower_than_the_stream_deadline_is_retried_and_nothing_is_dead_lettered() {
    let tenant = unique_tenant("sensors");
    let proxy = FaultProxy::start(&Services::from_env().elasticsearch_url, 0, 0).await;
    proxy.bulk_delay_ms.store(3000, Ordering::SeqCst);
    let profile = profile_with(
        "tenants/sensors/profile.yaml",
        &[("stream.partitions", "1"), ("stream.batch_max_messages", "100"), ("stream.sandbox.deadline_ms", "2000")],
    );
    let test = TestPlatform::builder()
        .tenant_yaml(&tenant, &profile)
        .services_through(&proxy.url)
        .messaging_option("max_poll_interval_ms: 7000")
        .config(QUICK)
        .build();
    test.upload(&tenant, PipelineKind::Stream, "live", artifacts::SENSOR_STREAM);
    let _host = RunningHost::start(&test, HOST).await;
    let total = 300;
    let lines: Vec<String> = mysimbdp_tests::readings_ndjson(0, total).lines().map(|l| format!("k|{l}")).collect();
    kcat_produce(&brokers(), &format!("{tenant}.readings"), &lines);
    let started = http()
        .post(format!("{}/api/stream/start", test.api()))
        .json(&serde_json::json!({ "tenant": tenant, "instances": 1 }))
        .send()
        .await
        .unwrap();
    assert!(started.status().is_success(), "{}", started.text().await.unwrap());

    let log_file = test.tenant_dir(&tenant).join("logs/stream.log");
    let events = |log: &[serde_json::Value], text: &str| {
        log.iter().filter(|l| l["type"] == "event" && l["message"].as_str().unwrap_or("").contains(text)).count()
    };
    // Four slow tries with their backoff take longer than the poll interval.
    eventually("four tries of the batch failing on the slow store", Duration::from_secs(120), || {
        let slow = events(&read_log(&log_file), "slow store");
        async move { (slow >= 4).then_some(()) }
    })
    .await;
    proxy.bulk_delay_ms.store(0, Ordering::SeqCst);
    let index = format!("{tenant}-readings");
    eventually("every reading to be indexed once the store is fast again", Duration::from_secs(120), || async {
        (search().count(&index).await >= total as u64).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(search().count(&index).await, total as u64);
    assert_eq!(kcat_read(&brokers(), &format!("{tenant}.dead-letter")).len(), 0, "a slow store dead-letters nothing");
    let log = read_log(&log_file);
    let messages: Vec<&str> = log.iter().filter(|l| l["type"] == "event").filter_map(|l| l["message"].as_str()).collect();
    for problem in ["poll failed", "offset commit failed", "cannot pause", "cannot resume"] {
        assert_eq!(events(&log, problem), 0, "`{problem}`: the consumer stayed in its group: {messages:?}");
    }
    let ingested: u64 =
        log.iter().filter(|l| l["type"] == "ingestion" && l["outcome"] == "ok").map(|l| l["records_in"].as_u64().unwrap()).sum();
    assert_eq!(ingested, total as u64, "each message handled by exactly one successful batch: none was delivered again");
    let trapped = log.iter().filter(|l| l["type"] == "ingestion" && l["failure"] == "deadline").count();
    assert_eq!(trapped, 0, "no try was taken for the guest's fault");
    search().delete(&format!("{tenant}-*")).await;
}

/// OpenSearch answers every bulk item with 429 for a while, past the host's
/// retries: each try of the stream's batch is a sink error, retried with
/// backoff. Meanwhile no offset is committed (the group's lag stays the whole
/// topic), nothing is indexed and nothing is dead-lettered. Once the proxy
/// lets writes through, every message is indexed, by exactly one successful
/// batch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_overloaded_opensearch_holds_the_stream_back_without_committing_or_dead_lettering() {
    let tenant = unique_tenant("sensors");
    let proxy = FaultProxy::start(&Services::from_env().elasticsearch_url, 0, 0).await;
    proxy.overloaded.store(true, Ordering::SeqCst);
    let profile = profile_with("tenants/sensors/profile.yaml", &[("stream.partitions", "1"), ("stream.batch_max_messages", "100")]);
    let test = TestPlatform::builder()
        .tenant_yaml(&tenant, &profile)
        .services_through(&proxy.url)
        .coredms_option("max_retries: 2")
        .config(QUICK)
        .build();
    test.upload(&tenant, PipelineKind::Stream, "live", artifacts::SENSOR_STREAM);
    let _host = RunningHost::start(&test, HOST).await;
    // Reads the group's committed offsets on a platform of its own (it never joins the group).
    let observer_dir = TestPlatform::builder().tenant_yaml(&tenant, &profile).services().build();
    let observer = observer_dir.open().await;
    let messaging = observer.messaging();
    let (group, topics) = (format!("mysimbdp.{tenant}.live"), [format!("{tenant}.readings")]);
    let total = 300;
    let lines: Vec<String> = mysimbdp_tests::readings_ndjson(0, total).lines().map(|l| format!("k|{l}")).collect();
    kcat_produce(&brokers(), &topics[0], &lines);
    let started = http()
        .post(format!("{}/api/stream/start", test.api()))
        .json(&serde_json::json!({ "tenant": tenant, "instances": 1 }))
        .send()
        .await
        .unwrap();
    assert!(started.status().is_success(), "{}", started.text().await.unwrap());

    let log_file = test.tenant_dir(&tenant).join("logs/stream.log");
    let events = |log: &[serde_json::Value], text: &str| {
        log.iter().filter(|l| l["type"] == "event" && l["message"].as_str().unwrap_or("").contains(text)).count()
    };
    let ok_batches = |log: &[serde_json::Value]| {
        log.iter()
            .filter(|l| l["type"] == "ingestion" && l["outcome"] == "ok")
            .map(|l| l["records_in"].as_u64().unwrap())
            .collect::<Vec<_>>()
    };
    eventually("three tries of the batch refused for load (or a batch ingested)", Duration::from_secs(120), || {
        let log = read_log(&log_file);
        let over = events(&log, "refused for load") >= 3 || !ok_batches(&log).is_empty();
        async move { over.then_some(()) }
    })
    .await;
    let dead_topic = format!("{tenant}.dead-letter");
    assert_eq!(kcat_read(&brokers(), &dead_topic).len(), 0, "nothing refused for load is dead-lettered");
    assert_eq!(messaging.lag(&group, &topics).await.unwrap(), total as u64, "not one offset committed while overloaded");
    assert_eq!(ok_batches(&read_log(&log_file)), Vec::<u64>::new(), "no batch succeeded");
    let index = format!("{tenant}-readings");
    assert_eq!(search().count(&index).await, 0, "the overloaded cluster took nothing");
    assert!(proxy.bulk_requests.load(Ordering::SeqCst) >= 9, "each try is the first bulk and its 2 retries");

    proxy.overloaded.store(false, Ordering::SeqCst);
    eventually("every reading to be indexed once the cluster recovers", Duration::from_secs(120), || async {
        (search().count(&index).await >= total as u64).then_some(())
    })
    .await;
    eventually("every offset to be committed", Duration::from_secs(60), || {
        let (messaging, group, topics) = (&messaging, &group, &topics);
        async move { (messaging.lag(group, topics).await.unwrap() == 0).then_some(()) }
    })
    .await;
    assert_eq!(search().count(&index).await, total as u64, "every message once");
    assert_eq!(kcat_read(&brokers(), &dead_topic).len(), 0, "valid messages make no dead letters");
    let log = read_log(&log_file);
    assert_eq!(ok_batches(&log).iter().sum::<u64>(), total as u64, "each message handled by exactly one successful batch");
    let failures: Vec<&str> =
        log.iter().filter(|l| l["type"] == "ingestion" && l["outcome"] == "failed").filter_map(|l| l["failure"].as_str()).collect();
    assert!(failures.len() >= 3 && failures.iter().all(|f| *f == "sink-error"), "every failed try is a sink error: {failures:?}");
    search().delete(&format!("{tenant}-*")).await;
}

/// A tenant whose `floods` pipeline publishes the messages its files
/// describe (`publish` and `publish-each`).
const PUBLISHER: &str = "description: Publishes the messages its files describe.
constraints: { allowed_types: [txt], max_file_bytes: 1MiB, max_files_per_run: 10, max_staging_bytes: 10MiB }
agreement: { max_concurrent_ingestions: 1, priority: 1 }
sandbox: { fuel_per_invocation: 100000000000, memory_bytes: 64MiB, deadline_ms: 60000 }
quotas: { collections: 5, topics: 3, counter_series: 150, guest_log_bytes: 256KiB, guest_log_files: 2, dead_letters_per_invocation: 10 }
batch:
  - name: floods
    files: 'flood*'
";

/// A platform on the real Kafka for a new `PUBLISHER` tenant, with the
/// `floods` fixture uploaded.
fn publisher(tenant: &str) -> TestPlatform {
    let test = TestPlatform::builder().tenant_yaml(tenant, PUBLISHER).services().config(QUICK).build();
    test.upload(tenant, PipelineKind::Batch, "floods", artifacts::FLOODS);
    test
}

/// Kafka's own topic tool (`scripts/services.sh kafka-topics`) against the
/// test's broker, e.g. to make a topic with a configuration of its own
/// before the host creates it.
fn kafka_topics(args: &[&str]) {
    let brokers = brokers();
    let port = brokers.split(',').next().and_then(|b| b.rsplit(':').next()).unwrap_or("9092").to_string();
    let output = std::process::Command::new(mysimbdp_tests::repo_root().join("scripts/services.sh"))
        .arg("kafka-topics")
        .args(args)
        .env("KAFKA_PORT", port)
        .output()
        .expect("run scripts/services.sh");
    assert!(output.status.success(), "kafka-topics {args:?}: {}", String::from_utf8_lossy(&output.stderr));
}

/// Keys of the messages of `topic`, in order, with their value's length.
fn keys_and_sizes(topic: &str) -> Vec<(String, usize)> {
    kcat_read(&brokers(), topic)
        .iter()
        .map(|m| (m["key"].as_str().unwrap_or("").to_string(), m["payload"].as_str().map_or(0, str::len)))
        .collect()
}

/// The first ingestion record of the tenant's batch log, once there is one.
async fn first_ingestion(test: &TestPlatform, tenant: &str) -> IngestionRecord {
    eventually("the file to be ingested", Duration::from_secs(120), || {
        let records = ingestions(test, tenant);
        async move { records.into_iter().next() }
    })
    .await
}

/// The tenant's output topic takes messages of at most 1 KiB: the broker
/// refuses one of 4 KiB for what it is, so it becomes a `message-refused`
/// dead letter with the broker's reason, and the file is done; the good
/// messages published around it (each in a call of its own) are delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_broker_refuses_as_too_large_is_dead_lettered_and_the_others_are_delivered() {
    let tenant = unique_tenant("publisher");
    let out = format!("{tenant}.out");
    kafka_topics(&["--create", "--topic", &out, "--partitions", "1", "--config", "max.message.bytes=1024"]);
    let test = publisher(&tenant);
    let _host = RunningHost::start(&test, HOST).await;
    stage(&test, &tenant, "flood-publish.txt", "publish-each\ngood-1 10\ntoo-large 4096\ngood-2 10\n");

    let record = first_ingestion(&test, &tenant).await;
    assert_eq!(record.outcome, Outcome::Ok, "a refused message is the message's fault, not the file's: {:?}", record.reason);
    assert_eq!(record.dead_lettered, 1);
    let archived = test.tenant_dir(&tenant).join("archive/flood-publish.txt");
    eventually("the file to be archived", Duration::from_secs(30), || {
        let done = archived.exists();
        async move { done.then_some(()) }
    })
    .await;
    assert_eq!(keys_and_sizes(&out), [("good-1".to_string(), 10), ("good-2".to_string(), 10)], "the good messages, in order");
    let dead = kcat_read(&brokers(), &format!("{tenant}.dead-letter"));
    assert_eq!(dead.len(), 1, "only the refused message is dead-lettered");
    assert_eq!(dead[0]["key"], "too-large");
    assert_eq!(dead[0]["payload"].as_str().map(str::len), Some(4096), "the message as the guest sent it");
    let headers = kcat_headers(&dead[0]);
    assert_eq!(headers["error-kind"], "message-refused");
    assert!(headers["error-reason"].contains("MessageSizeTooLarge"), "the broker's reason: {headers:?}");
    assert_eq!(headers["origin"], "out#0", "the topic the guest named and the message's place in its call");
    assert_eq!(headers["tenant"], tenant);
    assert_eq!(headers["pipeline"], "floods");
}

/// The same refusal with the good messages in the same call as the large
/// one. The broker refuses the record batch librdkafka made of all three;
/// the host sends each refused record again alone, so only the large one is
/// dead-lettered and its neighbours are delivered (after it in the call,
/// they may land in another order).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_the_broker_refuses_as_too_large_takes_no_neighbour_of_its_call_with_it() {
    let tenant = unique_tenant("publisher");
    let out = format!("{tenant}.out");
    kafka_topics(&["--create", "--topic", &out, "--partitions", "1", "--config", "max.message.bytes=1024"]);
    let test = publisher(&tenant);
    let _host = RunningHost::start(&test, HOST).await;
    stage(&test, &tenant, "flood-publish.txt", "publish\ngood-1 10\ntoo-large 4096\ngood-2 10\n");

    let record = first_ingestion(&test, &tenant).await;
    assert_eq!(record.outcome, Outcome::Ok, "{:?}", record.reason);
    let dead: Vec<(String, usize)> = keys_and_sizes(&format!("{tenant}.dead-letter"));
    assert_eq!(dead, [("too-large".to_string(), 4096)], "only the refused message is dead-lettered");
    let mut delivered = keys_and_sizes(&out);
    delivered.sort();
    assert_eq!(delivered, [("good-1".to_string(), 10), ("good-2".to_string(), 10)], "its neighbours are delivered");
}

/// A message over the producer's own limit (about 1 MB, librdkafka refuses
/// it before sending): its dead letter would be refused the same way, and
/// the file would then fail on every retry. The letter carries the first
/// 512 KiB and a header with the whole length; the file is done and the
/// good message delivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_too_large_for_any_topic_is_dead_lettered_cut_to_a_size_that_can_be_published() {
    let tenant = unique_tenant("publisher");
    let test = publisher(&tenant);
    let _host = RunningHost::start(&test, HOST).await;
    stage(&test, &tenant, "flood-publish.txt", "publish-each\nhuge 2097152\ngood 10\n");

    let record = first_ingestion(&test, &tenant).await;
    assert_eq!((record.outcome, record.dead_lettered), (Outcome::Ok, 1), "{:?}", record.reason);
    assert_eq!(keys_and_sizes(&format!("{tenant}.out")), [("good".to_string(), 10)]);
    let dead = kcat_read(&brokers(), &format!("{tenant}.dead-letter"));
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["key"], "huge");
    assert_eq!(dead[0]["payload"].as_str().map(str::len), Some(512 * 1024), "the first 512 KiB");
    let headers = kcat_headers(&dead[0]);
    assert_eq!((headers["error-kind"].as_str(), headers["payload-bytes"].as_str()), ("message-refused", "2097152"));
}

/// The platform's broker is down (its address a closed port): the publish
/// is a sink error and the file fails retryably, to `failed/` with the
/// reason; nothing is dead-lettered. Once the host is started again on a
/// broker that is up, `batch retry` delivers every message, and the
/// dead-letter topic stays empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broker_that_is_down_leaves_the_file_retryable_not_dead_lettered() {
    let tenant = unique_tenant("publisher");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().to_string();
    let test = TestPlatform::builder()
        .tenant_yaml(&tenant, PUBLISHER)
        .config(&format!("messaging:\n  kind: kafka\n  brokers: {closed}\n"))
        .config(QUICK)
        .build();
    test.upload(&tenant, PipelineKind::Batch, "floods", artifacts::FLOODS);
    let host = RunningHost::start(&test, HOST).await;
    stage(&test, &tenant, "flood-publish.txt", "publish\ngood-1 10\ngood-2 10\n");

    let reason_file = test.tenant_dir(&tenant).join("failed/flood-publish.txt.reason.json");
    let reason = eventually("the file to fail retryably", Duration::from_secs(120), || {
        let reason = std::fs::read_to_string(&reason_file).ok();
        async move { reason }
    })
    .await;
    assert!(reason.contains("sink-error") && reason.contains(&closed), "a sink error that names the broker: {reason}");
    assert!(test.tenant_dir(&tenant).join("failed/flood-publish.txt").exists(), "the file is kept whole in failed/");
    let record = first_ingestion(&test, &tenant).await;
    assert_eq!((record.outcome, record.failure, record.dead_lettered), (Outcome::Failed, Some(FailureKind::SinkError), 0));

    // The same platform on a broker that is up.
    drop(host);
    let config = std::fs::read_to_string(&test.config_file).unwrap().replace(&closed, &brokers());
    std::fs::write(&test.config_file, config).unwrap();
    let _host = RunningHost::start(&test, HOST).await;
    let retried = test.retry_failed(&tenant).await;
    assert_eq!(retried, ["flood-publish.txt"]);
    let archived = test.tenant_dir(&tenant).join("archive/flood-publish.txt");
    eventually("the file to be ingested after the retry", Duration::from_secs(120), || {
        let done = archived.exists();
        async move { done.then_some(()) }
    })
    .await;
    assert_eq!(keys_and_sizes(&format!("{tenant}.out")), [("good-1".to_string(), 10), ("good-2".to_string(), 10)], "every message once");
    assert_eq!(kcat_read(&brokers(), &format!("{tenant}.dead-letter")).len(), 0, "nothing was dead-lettered");
    assert!(!reason_file.exists(), "the reason went with the file");
}
