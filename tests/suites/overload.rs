//! Good data is never marked bad, against the real host process, Kafka and
//! OpenSearch (reached through the fault proxy):
//! - an OpenSearch that refuses every item for load past the retries fails
//!   the file retryably (to `failed/` with the reason, not one dead letter),
//!   and `batch retry` ingests it exactly once when the cluster recovers;
//! - a store slower than the stream's deadline is a sink error: the batch is
//!   retried with backoff, nothing is dead-lettered, and the consumer stays
//!   in its group past `max.poll.interval.ms`, so each message is handled once.
//!
//! Each test uses tenant ids of its own, so runs never see each other's data.

use mysimbdp::pipelines::PipelineKind;
use mysimbdp_tests::{
    FaultProxy, RunningHost, Search, Services, TestPlatform, artifacts, eventually, kcat_produce, kcat_read, orders_csv, profile_with,
    read_log, unique_tenant,
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
    let retried: Vec<String> = http()
        .post(format!("{}/api/batch/retry", test.api()))
        .json(&serde_json::json!({ "tenant": tenant }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
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
