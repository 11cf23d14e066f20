//! Against the real Kafka and OpenSearch started by `scripts/services.sh`:
//! batch files into OpenSearch, messages from an independent Kafka client to
//! documents, poison messages to the dead-letter topic, at-least-once across
//! stops and crashes with no duplicates, namespaces that hold, and the API's
//! query limits and time bound on OpenSearch.
//!
//! Each test uses tenant ids of its own, so runs never see each other's data.

use mysimbdp::pipelines::PipelineKind;
use mysimbdp::telemetry::Outcome;
use mysimbdp_tests::{
    RunningHost, Search, Services, TestPlatform, artifacts, eventually, kcat, kcat_headers, kcat_produce, kcat_read, orders_csv,
    profile_with, prometheus_value, read_log, repo_root, start_stream, unique_tenant,
};
use std::time::Duration;

const HOST: &str = env!("CARGO_BIN_EXE_mysimbdp-test-host");

fn search() -> Search {
    Search::new(&Services::from_env().elasticsearch_url)
}

fn brokers() -> String {
    Services::from_env().brokers
}

/// A platform on the real services with one tenant using `profile`.
fn platform(tenant: &str, profile: &str) -> TestPlatform {
    TestPlatform::builder()
        .tenant_yaml(tenant, profile)
        .services()
        .config("batch:\n  scan_interval_ms: 200\n  min_file_age_ms: 100\nstream:\n  monitor_interval_ms: 1000\n")
        .build()
}

fn sensors_stream_profile(changes: &[(&str, &str)]) -> String {
    profile_with("tenants/sensors/profile.yaml", changes)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_file_lands_in_the_tenants_opensearch_index() {
    let tenant = unique_tenant("retail");
    let test = platform(&tenant, &profile_with("tenants/retail/profile.yaml", &[]));
    test.upload(&tenant, PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let platform = test.open().await;
    let sample = repo_root().join("data/retail/orders-2026-11-20.csv");
    let record = platform.ingest_path(&tenant, None, &sample, None).await.unwrap();
    assert_eq!(record.outcome, Outcome::Ok, "{record:?}");

    let search = search();
    let index = format!("{tenant}-orders");
    assert_eq!(search.count(&index).await, record.records_out);
    assert_eq!(record.records_out + record.records_rejected, 2000);
    // Fields as the pipeline built them, read back through OpenSearch's own API.
    let first = std::fs::read_to_string(&sample).unwrap().lines().nth(1).unwrap().to_string();
    let fields: Vec<&str> = first.split(',').collect();
    let (total, hits) = search.search(&index, &format!("order_id:\"{}\"", fields[0]), 1).await;
    assert_eq!(total, 1);
    let doc = &hits[0]["_source"];
    assert_eq!(doc["customer"]["country"], fields[4]);
    assert_eq!(doc["item"]["sku"], fields[5]);
    assert_eq!(doc["quantity"], fields[8].parse::<u64>().unwrap());
    // The profile's mapping was applied: `size` is a keyword, so a term query matches exactly.
    let (large, _) = search.search(&index, "size:large AND total_eur:>=500", 0).await;
    assert!(large > 0);
    // And rejected rows are in the tenant's dead-letter topic.
    let dead = kcat_read(&brokers(), &format!("{tenant}.dead-letter"));
    assert_eq!(dead.len() as u64, record.records_rejected);
    assert!(dead.iter().all(|m| kcat_headers(m)["origin"].starts_with("orders-2026-11-20.csv:row ")));
    search.delete(&format!("{tenant}-*")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_from_a_kafka_client_become_documents() {
    let tenant = unique_tenant("sensors");
    let test = platform(&tenant, &sensors_stream_profile(&[]));
    test.upload(&tenant, PipelineKind::Stream, "live", artifacts::SENSOR_STREAM);
    let platform = test.open().await;
    let manager = platform.stream_manager();
    manager.start(&tenant, Some(2)).await.unwrap();

    let readings = mysimbdp_tests::readings_ndjson(0, 300);
    let lines: Vec<String> = readings
        .lines()
        .map(|l| format!("{}|{l}", serde_json::from_str::<serde_json::Value>(l).unwrap()["sensor_id"].as_str().unwrap()))
        .collect();
    kcat_produce(&brokers(), &format!("{tenant}.readings"), &lines);

    let search = search();
    let index = format!("{tenant}-readings");
    eventually("300 readings to be searchable", Duration::from_secs(60), || {
        let search = &search;
        let index = &index;
        async move { (search.count(index).await == 300).then_some(()) }
    })
    .await;
    let (total, hits) = search.search(&index, "sensor_id:\"s-007\"", 100).await;
    assert!(total > 0);
    for hit in &hits {
        let source = &hit["_source"];
        let c = source["temperature"]["c"].as_f64().unwrap();
        assert_eq!(source["temperature"]["f"].as_f64().unwrap(), ((c * 9.0 / 5.0 + 32.0) * 10.0).round() / 10.0);
        assert!(hit["_id"].as_str().unwrap().starts_with("readings-"), "ids come from topic, partition and offset");
    }
    // Searchable is not yet committed: when the second instance joins, the
    // rebalance can refuse the first one's commit. It retries that commit at
    // its next poll for the partitions it keeps; a moved partition's new
    // owner reads those messages again (same ids: overwritten, not doubled)
    // and commits them.
    let group = format!("mysimbdp.{tenant}.live");
    let topics = [format!("{tenant}.readings")];
    let messaging = &platform.messaging();
    eventually("every offset to be committed", Duration::from_secs(60), || {
        let (group, topics) = (&group, &topics);
        async move { (messaging.lag(group, topics).await.unwrap() == 0).then_some(()) }
    })
    .await;
    manager.stop(&tenant).await.unwrap();
    assert_eq!(messaging.lag(&group, &topics).await.unwrap(), 0, "stopping keeps every commit");
    assert_eq!(search.count(&index).await, 300, "messages read again were overwritten, not doubled");
    search.delete(&format!("{tenant}-*")).await;
}

/// A message that traps the guest lands in the dead-letter topic with its
/// headers; the messages around it are ingested. A politely rejected one too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_message_goes_to_the_dead_letter_topic_and_the_rest_is_ingested() {
    let tenant = unique_tenant("events");
    let profile = sensors_stream_profile(&[("stream.name", "events"), ("stream.topics", "[events]"), ("stream.partitions", "1")]);
    let test = platform(&tenant, &profile);
    test.upload(&tenant, PipelineKind::Stream, "events", artifacts::POISON_STREAM);
    let platform = test.open().await;
    let manager = platform.stream_manager();
    manager.start(&tenant, Some(1)).await.unwrap();

    let mut lines: Vec<String> = (0..40).map(|i| format!("k{i}|event {i}")).collect();
    lines[17] = "k17|poison pill".into();
    lines[29] = "k29|please reject me".into();
    kcat_produce(&brokers(), &format!("{tenant}.events"), &lines);

    let search = search();
    let index = format!("{tenant}-events");
    eventually("38 events to be searchable", Duration::from_secs(60), || {
        let (search, index) = (&search, &index);
        async move { (search.count(index).await == 38).then_some(()) }
    })
    .await;
    let (poisoned, _) = search.search(&index, "text:poison", 0).await;
    assert_eq!(poisoned, 0);
    let (neighbours, _) = search.search(&index, "offset:16 OR offset:18", 0).await;
    assert_eq!(neighbours, 2, "the messages around the poison are ingested");

    let dead_topic = format!("{tenant}.dead-letter");
    let dead = eventually("two dead letters", Duration::from_secs(30), || {
        let messages = kcat_read(&brokers(), &dead_topic);
        async move { (messages.len() >= 2).then_some(messages) }
    })
    .await;
    assert_eq!(dead.len(), 2, "{dead:?}");
    let poison = dead.iter().find(|m| m["payload"] == "poison pill").expect("the poison message");
    let headers = kcat_headers(poison);
    assert_eq!(headers["error-kind"], "guest-panic");
    assert!(headers["error-reason"].contains("poison message at offset 17"), "{headers:?}");
    assert_eq!(headers["source-topic"], format!("{tenant}.events"));
    assert_eq!(headers["source-partition"], "0");
    assert_eq!(headers["source-offset"], "17");
    assert_eq!(headers["pipeline-version"], "1");
    assert_eq!(poison["key"], "k17", "the original key is kept");
    let rejected = dead.iter().find(|m| m["payload"] == "please reject me").expect("the rejected message");
    assert_eq!(kcat_headers(rejected)["error-kind"], "rejected");
    assert_eq!(kcat_headers(rejected)["source-offset"], "29");
    manager.stop(&tenant).await.unwrap();
    search.delete(&format!("{tenant}-*")).await;
}

/// Stop the stream mid-way, start it again: every message is indexed once
/// (OpenSearch counts documents by `_id`). Then the same across a SIGKILL of
/// the whole host, where a batch is cut off before its offsets are committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_or_killing_mid_stream_loses_and_duplicates_nothing() {
    let tenant = unique_tenant("sensors");
    // Small batches make "mid-stream" long enough to hit.
    let test = platform(&tenant, &sensors_stream_profile(&[("stream.batch_max_messages", "50")]));
    test.upload(&tenant, PipelineKind::Stream, "live", artifacts::SENSOR_STREAM);
    let total = 6000;
    let lines: Vec<String> = mysimbdp_tests::readings_ndjson(0, total).lines().map(|l| format!("k|{l}")).collect();
    kcat_produce(&brokers(), &format!("{tenant}.readings"), &lines);
    let search = search();
    let index = format!("{tenant}-readings");
    let count = || {
        let (search, index) = (&search, &index);
        async move { search.count(index).await }
    };

    // A graceful stop and start, in-process.
    let platform = test.open().await;
    let manager = platform.stream_manager();
    manager.start(&tenant, Some(1)).await.unwrap();
    eventually("some documents", Duration::from_secs(60), || async { (count().await > 0).then_some(()) }).await;
    manager.stop(&tenant).await.unwrap();
    let after_stop = count().await;
    assert!(after_stop < total as u64, "stopped mid-stream ({after_stop} of {total})");
    drop(manager);
    drop(platform);

    // Then a whole host, killed with SIGKILL mid-stream, and restarted.
    let mut host = test.command(HOST).args(["host", "run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    eventually("the host to accept a stream start", Duration::from_secs(60), || async {
        start_stream(&test.api(), &tenant).await.then_some(())
    })
    .await;
    eventually("more documents", Duration::from_secs(60), || async { (count().await > after_stop).then_some(()) }).await;
    host.kill().unwrap();
    host.wait().unwrap();
    let after_kill = count().await;
    assert!(after_kill < total as u64, "killed mid-stream ({after_kill} of {total})");

    let mut host = test.command(HOST).args(["host", "run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    eventually("the restarted host to accept a stream start", Duration::from_secs(60), || async {
        start_stream(&test.api(), &tenant).await.then_some(())
    })
    .await;
    eventually("all documents", Duration::from_secs(120), || async { (count().await >= total as u64).then_some(()) }).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    host.kill().unwrap();
    host.wait().unwrap();
    assert_eq!(count().await, total as u64, "each message once, by _id");
    // Redelivery happened (a batch was cut off) yet created nothing twice.
    let batches = read_log(&test.tenant_dir(&tenant).join("logs/stream.log"))
        .into_iter()
        .filter(|l| l["type"] == "ingestion" && l["outcome"] == "ok")
        .map(|l| l["records_in"].as_u64().unwrap())
        .sum::<u64>();
    assert!(batches >= total as u64, "{batches} messages processed for {total} produced");
    search.delete(&format!("{tenant}-*")).await;
}

/// A guest writing to names outside its namespace is denied against the real
/// services too: no index or topic appears outside `<tenant>-*` / `<tenant>.*`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_reach_another_tenants_index_or_topic() {
    let attacker = unique_tenant("sandbox");
    let victim = unique_tenant("sensors");
    let test = TestPlatform::builder()
        .tenant_yaml(&attacker, &std::fs::read_to_string(repo_root().join("tests/tenants/sandbox.yaml")).unwrap())
        .tenant_yaml(&victim, &sensors_stream_profile(&[]))
        .services()
        .build();
    test.upload(&attacker, PipelineKind::Batch, "escape-namespace", artifacts::ESCAPE_NAMESPACE);
    let platform = test.open().await;
    let staged = test.dir.path().join("escape.txt");
    std::fs::write(&staged, "x\n").unwrap();
    let record = platform.ingest_path(&attacker, None, &staged, None).await.unwrap();
    assert_eq!(record.outcome, Outcome::Ok, "every attempt denied: {:?}", record.reason);
    let denials = read_log(&test.tenant_dir(&attacker).join("logs/batch-guest.log"))
        .into_iter()
        .filter(|l| l["type"] == "event" && l["message"].as_str().is_some_and(|m| m.contains("denied")))
        .count();
    assert_eq!(denials, 11);
    let search = search();
    assert!(search.indices(&format!("{victim}*")).await.is_empty());
    assert!(search.indices("*escape*").await.is_empty());
    let topics = kcat(&brokers()).args(["-L", "-J"]).output().unwrap();
    let metadata: serde_json::Value = serde_json::from_slice(&topics.stdout).unwrap();
    let names: Vec<&str> = metadata["topics"].as_array().unwrap().iter().filter_map(|t| t["topic"].as_str()).collect();
    // Every publish was refused, so the attacker has no topic at all, and the victim none either.
    assert!(!names.iter().any(|t| t.starts_with(&attacker) || t.starts_with(&victim)), "{names:?}");
}

/// SIGKILL during a batch ingestion into OpenSearch, where part of the file
/// is already indexed: after the restart every row is there exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_ingestion_into_opensearch_ends_with_each_row_once() {
    let tenant = unique_tenant("retail");
    let test = platform(&tenant, &profile_with("tenants/retail/profile.yaml", &[("agreement.schedule", "on-arrival")]));
    test.upload(&tenant, PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let rows = 200_000;
    let staging = test.tenant_dir(&tenant).join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    std::fs::write(staging.join(".big.csv.part"), orders_csv(1, rows)).unwrap();
    std::fs::rename(staging.join(".big.csv.part"), staging.join("big.csv")).unwrap();
    let search = search();
    let index = format!("{tenant}-orders");

    let mut host = test.command(HOST).args(["host", "run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    eventually("part of the file in OpenSearch", Duration::from_secs(120), || {
        let (search, index) = (&search, &index);
        async move { (search.count(index).await > 0).then_some(()) }
    })
    .await;
    host.kill().unwrap();
    host.wait().unwrap();
    let partial = search.count(&index).await;
    assert!(partial < rows as u64, "killed mid-ingestion ({partial} of {rows})");

    let mut host = test.command(HOST).args(["host", "run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let archived = test.tenant_dir(&tenant).join("archive/big.csv");
    eventually("big.csv archived", Duration::from_secs(300), || {
        let done = archived.exists();
        async move { done.then_some(()) }
    })
    .await;
    host.kill().unwrap();
    host.wait().unwrap();
    assert_eq!(search.count(&index).await, rows as u64);
    search.delete(&format!("{tenant}-*")).await;
}

/// A busy cluster answers whole `_bulk` requests with 429/503 and single items
/// with 429: the backend retries with backoff until everything is indexed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_requests_and_items_refused_for_load_are_retried_until_indexed() {
    let tenant = unique_tenant("retail");
    let proxy = mysimbdp_tests::FaultProxy::start(&Services::from_env().elasticsearch_url, 3, 5).await;
    let test = TestPlatform::builder()
        .tenant_yaml(&tenant, &profile_with("tenants/retail/profile.yaml", &[]))
        .services_through(&proxy.url)
        .build();
    test.upload(&tenant, PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let platform = test.open().await;
    let sample = repo_root().join("data/retail/orders-2026-11-20.csv");
    let record = platform.ingest_path(&tenant, None, &sample, None).await.unwrap();
    assert_eq!(record.outcome, Outcome::Ok, "{record:?}");
    assert_eq!(record.dead_lettered, 21, "only the rows the pipeline rejected; nothing was refused for good");
    let requests = proxy.bulk_requests.load(std::sync::atomic::Ordering::SeqCst);
    assert!(requests >= 6, "3 refused requests, the one with refused items, its retry, the second batch: {requests}");
    assert_eq!(search().count(&format!("{tenant}-orders")).await, 1979);
    search().delete(&format!("{tenant}-*")).await;
}

/// Documents the store refuses (400: they break the index mapping) are
/// reported back to the guest, counted as rejected and dead-lettered with the
/// store's reason; the others are indexed. Nothing is dropped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn documents_the_store_refuses_are_dead_lettered_with_the_reason() {
    let tenant = unique_tenant("retail");
    let strict = r#"{orders: {mappings: {properties: {total_eur: {type: integer, coerce: false}}}}}"#;
    let test = platform(&tenant, &profile_with("tenants/retail/profile.yaml", &[("collections", strict)]));
    test.upload(&tenant, PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let platform = test.open().await;
    let sample = repo_root().join("data/retail/orders-2026-11-20.csv");
    let record = platform.ingest_path(&tenant, None, &sample, None).await.unwrap();
    let indexed = search().count(&format!("{tenant}-orders")).await;
    let dead = kcat_read(&brokers(), &format!("{tenant}.dead-letter"));
    let refused: Vec<&serde_json::Value> = dead.iter().filter(|m| kcat_headers(m)["error-kind"] == "document-refused").collect();
    assert!(!refused.is_empty() && indexed > 0, "some refused ({}), some indexed ({indexed})", refused.len());
    assert_eq!(indexed + refused.len() as u64, 1979, "every document the pipeline produced is indexed or dead-lettered");
    assert_eq!(record.records_out, indexed);
    assert_eq!(record.records_rejected, 21 + refused.len() as u64);
    assert_eq!(record.dead_lettered, dead.len() as u64);
    for message in &refused {
        let headers = kcat_headers(message);
        assert!(headers["error-reason"].contains("mapper_parsing_exception"), "{headers:?}");
        let doc: serde_json::Value = serde_json::from_str(message["payload"].as_str().unwrap()).unwrap();
        assert!(doc["total_eur"].as_f64().unwrap().fract() != 0.0, "only fractional totals break the mapping");
        assert!(message["key"].as_str().unwrap().starts_with(&format!("{tenant}:")), "the key is the document id");
    }
    search().delete(&format!("{tenant}-*")).await;
}

/// A field name with a control character is refused by the host before
/// the write on OpenSearch too (the embedded store's test is in hostile.rs):
/// the document is dead-lettered to the Kafka topic naming the field, its
/// neighbours in the same call are indexed, and a query naming such a field
/// is refused naming the rule as on the embedded store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_character_in_a_field_name_is_refused_on_opensearch_as_on_the_embedded_store() {
    let tenant = unique_tenant("sandbox");
    let sandbox = std::fs::read_to_string(repo_root().join("tests/tenants/sandbox.yaml")).unwrap();
    let test = platform(&tenant, &sandbox);
    test.upload(&tenant, PipelineKind::Batch, "record-documents", artifacts::RECORD_DOCUMENTS);
    let notes = test.dir.path().join("notes.txt");
    std::fs::write(&notes, "n-1 {\"n\":1}\nn-2 {\"curr\\u0000ency\":\"eur\"}\nn-3 {\"a\":{\"b\\nc\":1}}\nn-4 {\"n\":4}\n").unwrap();
    let platform = test.open().await;
    let record = platform.ingest_path(&tenant, Some("record-documents"), &notes, None).await.unwrap();
    assert_eq!((record.outcome, record.dead_lettered), (Outcome::Ok, 2), "{record:?}");
    assert_eq!(search().count(&format!("{tenant}-notes")).await, 2);
    let dead = kcat_read(&brokers(), &format!("{tenant}.dead-letter"));
    let mut reasons: Vec<String> = dead.iter().map(|m| kcat_headers(m)["error-reason"].clone()).collect();
    reasons.sort();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("\"curr\\0ency\" holds the control character U+0000") && r.contains("field name rule")),
        "{reasons:?}"
    );
    assert!(reasons.iter().any(|r| r.contains("\"b\\nc\" holds the control character U+000A")), "{reasons:?}");
    let refused = format!("{:#}", platform.search(&tenant, "notes", "curr\u{0}ency:eur", 10).await.expect_err("refused"));
    assert!(refused.contains("control character U+0000"), "{refused}");
    platform.close().await;
    search().delete(&format!("{tenant}-*")).await;
}

/// Kafka treats `.` and `_` alike when it checks a new topic's name. Under
/// plain `<tenant>.<topic>` names, tenant `shop` publishing to its topic
/// `eu_dead-letter` took the name of tenant `shop_eu`'s dead-letter topic
/// (`shop.eu_dead-letter` against `shop_eu.dead-letter`), and `shop_eu`'s
/// stream could no longer start. Each tenant's names are its own now.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_whose_ids_differ_by_an_underscore_cannot_take_each_others_topics() {
    use mysimbdp::config::{Name, TenantId};
    let shop = unique_tenant("shop");
    let shop_eu = format!("{shop}_eu");
    let profile = sensors_stream_profile(&[("stream.name", "events"), ("stream.topics", "[events]"), ("stream.partitions", "1")]);
    let test = TestPlatform::builder().tenant_yaml(&shop, &profile).tenant_yaml(&shop_eu, &profile).services().build();
    test.upload(&shop_eu, PipelineKind::Stream, "events", artifacts::POISON_STREAM);
    let platform = test.open().await;

    // `shop` creates its topic `eu_dead-letter` first (a guest could, by publishing to it).
    let record = mysimbdp::backends::OutRecord { key: None, value: b"shop's own message".to_vec(), headers: Vec::new() };
    let squatted = platform.produce(&shop, "eu_dead-letter", vec![record]).await.unwrap();
    // `shop_eu`'s stream starts, with its dead-letter topic, and its dead letters arrive there.
    let manager = platform.stream_manager();
    manager.start(&shop_eu, Some(1)).await.expect("the stream of shop_eu starts beside shop's topic");
    let eu = TenantId::parse(&shop_eu).unwrap();
    let events = eu.topic(&Name::parse("events").unwrap());
    kcat_produce(&brokers(), &events, &["k1|event 1".to_string(), "k2|poison pill".to_string(), "k3|event 3".to_string()]);
    let dead = eventually("shop_eu's dead letter", Duration::from_secs(60), || {
        let messages = kcat_read(&brokers(), &eu.dead_letter_topic());
        async move { (!messages.is_empty()).then_some(messages) }
    })
    .await;
    manager.stop(&shop_eu).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0]["payload"], "poison pill");
    assert_eq!(kcat_headers(&dead[0])["tenant"], shop_eu);
    let own: Vec<String> = kcat_read(&brokers(), &squatted).iter().map(|m| m["payload"].as_str().unwrap_or_default().to_string()).collect();
    assert_eq!(own, ["shop's own message"], "{squatted} holds shop's message only");
    assert_ne!(squatted.replace('.', "_"), eu.dead_letter_topic().replace('.', "_"), "apart also as Kafka compares names");
    search().delete(&format!("{shop}*")).await;
}

/// `GET /api/query` of the host at `api` with these parameters: the status and the JSON answer.
async fn api_query(api: &str, params: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let http = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let answer = http.get(format!("{api}/api/query")).query(params).send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(serde_json::Value::Null))
}

/// The host's gauge of searches still being worked on by OpenSearch.
async fn searches_running(api: &str) -> f64 {
    let text = reqwest::get(format!("{api}/metrics")).await.unwrap().text().await.unwrap();
    prometheus_value(&text, "mysimbdp_searches_running{backend=\"elasticsearch\"}").expect("the gauge of running searches is exported")
}

/// The API's query limits hold on OpenSearch as on the embedded store
/// (`hostile.rs`), through the real host: a query nested beyond the limit,
/// one too long and a `limit` or window above the cap are answered 400
/// naming the limit (OpenSearch itself would run the nested query and
/// return the huge page); a search past `api.search_timeout_ms` is answered
/// 503 naming the bound, not passed on as complete, and no search is
/// counted as running afterwards; the neighbour tenant is served under the
/// same bound.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_on_opensearch_are_bounded_like_on_the_embedded_store() {
    let (tenant, neighbour) = (unique_tenant("retail"), unique_tenant("retail"));
    let profile = profile_with("tenants/retail/profile.yaml", &[]);
    // OpenSearch measures a search's time on a clock it updates every 200 ms:
    // under a bound of 1 ms a tick during even the neighbour's tiny search
    // would stop it. 250 ms needs two ticks; the heavy search below takes seconds.
    let test = TestPlatform::builder()
        .tenant_yaml(&tenant, &profile)
        .tenant_yaml(&neighbour, &profile)
        .services()
        .api("search_timeout_ms: 250")
        .build();
    test.upload(&tenant, PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    test.upload(&neighbour, PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let _host = RunningHost::start(&test, HOST).await;
    let api = test.api();
    let http = reqwest::Client::new();
    // Names of 100 words: a sloppy phrase query has 100 positions to try in each document.
    let long_names = orders_csv(1, 20_000).replace("Test Customer ", &"Test Customer ".repeat(50));
    for (who, content) in [(&tenant, long_names), (&neighbour, orders_csv(1, 100))] {
        let file = test.dir.path().join(format!("{who}.csv"));
        std::fs::write(&file, content).unwrap();
        let answer = http.post(format!("{api}/api/ingest")).json(&serde_json::json!({ "tenant": who, "path": file })).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{}", answer.text().await.unwrap());
    }
    let search = search();
    assert_eq!(search.count(&format!("{tenant}-orders")).await, 20_000);
    assert_eq!(search.count(&format!("{neighbour}-orders")).await, 100);

    let nested = |levels: usize| format!("{}fi{}", "(".repeat(levels), ")".repeat(levels));
    let refusals = [
        (nested(25), "10", "0", "query depth limit"),
        (nested(9), "10", "0", "query depth limit"),
        ("a ".repeat(2100), "10", "0", "query length limit"),
        ("*".to_string(), "100000000000", "0", "limit cap"),
        ("*".to_string(), "1001", "0", "limit cap"),
        ("*".to_string(), "10", "9995", "result window cap"),
    ];
    for (q, limit, offset, limit_named) in &refusals {
        let params = [("tenant", tenant.as_str()), ("collection", "orders"), ("q", q), ("limit", limit), ("offset", offset)];
        let (status, answer) = api_query(&api, &params).await;
        assert_eq!(status, 400, "{:.30}… limit {limit} offset {offset}: {answer}", q);
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(limit_named), "{:.30}…: the answer names the limit: {error}", q);
    }
    let (status, answer) = api_query(&api, &[("tenant", &tenant), ("collection", "orders"), ("q", &nested(8)), ("limit", "1")]).await;
    assert_eq!((status, answer["total"].as_u64()), (200, Some(0)), "8 levels are within the limit: {answer}");
    assert_eq!(searches_running(&api).await, 0.0);

    // 115 sloppy phrases (3.8 KiB, within the limits) over 20,000 names of 100
    // words: seconds of OpenSearch's work, stopped at the bound.
    let heavy: Vec<String> = (1..=115).map(|slop| format!("customer.name:\"test customer\"~{slop}")).collect();
    let heavy = heavy.join(" ");
    let (status, answer) = api_query(&api, &[("tenant", &tenant), ("collection", "orders"), ("q", &heavy), ("limit", "10")]).await;
    assert_eq!(status, 503, "a partial answer is no answer: {:.300}", answer.to_string());
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("time bound of 250 ms") && error.contains("api.search_timeout_ms"), "{error}");
    assert_eq!(searches_running(&api).await, 0.0, "no search outlives its answer");

    // The neighbour's search, under the same bound, is answered in full.
    let (status, answer) =
        api_query(&api, &[("tenant", &neighbour), ("collection", "orders"), ("q", "order_id:\"O-00000007\""), ("limit", "5")]).await;
    assert_eq!((status, answer["total"].as_u64()), (200, Some(1)), "{answer}");
    let (status, answer) = api_query(&api, &[("tenant", &neighbour), ("collection", "orders"), ("q", ""), ("limit", "0")]).await;
    assert_eq!((status, answer["total"].as_u64()), (200, Some(100)), "{answer}");
    assert_eq!(searches_running(&api).await, 0.0);
    search.delete(&format!("{tenant}-*")).await;
    search.delete(&format!("{neighbour}-*")).await;
}
