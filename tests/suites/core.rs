//! The core: example pipelines compiled from source run through the host
//! into the embedded store; adversarial guests are contained and classified;
//! names outside a tenant's namespace are denied; re-ingestion is idempotent.

use mysimbdp::failure::FailureKind;
use mysimbdp::pipelines::PipelineKind;
use mysimbdp::telemetry::Outcome;
use mysimbdp_tests::{TestPlatform, artifacts, read_log, repo_root};
use std::path::PathBuf;

fn sample(path: &str) -> PathBuf {
    repo_root().join("data").join(path)
}

fn platform() -> TestPlatform {
    let platform = TestPlatform::builder()
        .tenant("retail", "tenants/retail/profile.yaml")
        .tenant("sensors", "tenants/sensors/profile.yaml")
        .tenant("sandbox", "tests/tenants/sandbox.yaml")
        .build();
    platform.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    platform.upload("sensors", PipelineKind::Batch, "readings", artifacts::SENSOR_READINGS);
    platform
}

/// Valid rows of a sample CSV, judged independently of the pipeline: the
/// rows the generator did not break.
fn csv_rows(path: &PathBuf) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(path).unwrap();
    text.lines().skip(1).map(|l| l.split(',').map(str::to_string).collect()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn example_pipelines_fill_the_store_from_the_sample_data() {
    let test = platform();
    let platform = test.open().await;

    let orders = sample("retail/orders-2026-11-20.csv");
    let record = platform.ingest_path("retail", None, &orders, None).await.unwrap();
    assert_eq!(record.outcome, Outcome::Ok, "{record:?}");
    let rows = csv_rows(&orders);
    assert_eq!(record.records_in, rows.len() as u64);
    assert_eq!(record.records_out + record.records_rejected, record.records_in);
    assert!(record.records_rejected > 0, "the sample has broken rows on purpose");
    assert_eq!(record.dead_lettered, record.records_rejected, "every rejected row is dead-lettered");
    let stored = platform.search("retail", "orders", "", 0).await.unwrap();
    assert_eq!(stored.total, record.records_out);

    // A few field values, derived by the pipeline, checked against the input.
    let first = &rows[0];
    let hit = platform.search("retail", "orders", &format!("order_id:{}", first[0].to_lowercase()), 1).await.unwrap();
    assert_eq!(hit.total, 1, "order {} is searchable", first[0]);
    let doc = &hit.hits[0].source;
    assert_eq!(doc["order_id"], first[0].as_str());
    assert_eq!(doc["customer"]["country"], first[4].as_str());
    assert_eq!(doc["quantity"], first[8].parse::<u64>().unwrap());
    let quantity: f64 = first[8].parse().unwrap();
    let price: f64 = first[9].parse().unwrap();
    let discount: f64 = first[10].parse().unwrap_or(0.0);
    let total = ((quantity * price * (1.0 - discount)) * 100.0).round() / 100.0;
    assert_eq!(doc["total"].as_f64().unwrap(), total);

    let readings = sample("sensors/readings-2026-11-20.ndjson");
    let record = platform.ingest_path("sensors", None, &readings, None).await.unwrap();
    assert_eq!(record.outcome, Outcome::Ok, "{record:?}");
    let lines = std::fs::read_to_string(&readings).unwrap().lines().count() as u64;
    assert_eq!(record.records_in, lines);
    assert_eq!(record.records_out + record.records_rejected, lines);
    assert_eq!(platform.search("sensors", "readings", "", 0).await.unwrap().total, record.records_out);
    let cold = platform.search("sensors", "readings", "temperature.c:[* TO -20]", 3).await.unwrap();
    assert!(cold.total > 0);
    for hit in cold.hits {
        let c = hit.source["temperature"]["c"].as_f64().unwrap();
        assert!(c <= -20.0);
        assert_eq!(hit.source["temperature"]["f"].as_f64().unwrap(), ((c * 9.0 / 5.0 + 32.0) * 10.0).round() / 10.0);
    }

    // The result record of each ingestion is in the tenant's log.
    let log = read_log(&test.tenant_dir("retail").join("logs/batch.log"));
    assert!(log.iter().any(|l| l["type"] == "ingestion" && l["source"] == "orders-2026-11-20.csv" && l["outcome"] == "ok"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reingesting_a_file_creates_no_duplicates() {
    let test = platform();
    let platform = test.open().await;
    let orders = sample("retail/orders-2026-11-21.csv");
    let first = platform.ingest_path("retail", None, &orders, None).await.unwrap();
    let after_first = platform.search("retail", "orders", "", 0).await.unwrap().total;
    let second = platform.ingest_path("retail", None, &orders, None).await.unwrap();
    let after_second = platform.search("retail", "orders", "", 0).await.unwrap().total;
    assert_eq!(first.records_out, second.records_out);
    assert_eq!(after_first, first.records_out);
    assert_eq!(after_second, after_first, "the same rows got the same ids");
}

/// Each adversarial guest fails with its own kind, the host survives it, and
/// the other tenants keep being served: during and after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adversarial_guests_are_reported_by_kind_and_the_host_goes_on() {
    let test = platform();
    let cases = [
        ("spin-forever", artifacts::SPIN_FOREVER, FailureKind::OutOfFuel),
        ("memory-bomb", artifacts::MEMORY_BOMB, FailureKind::MemoryLimit),
        ("deep-recursion", artifacts::DEEP_RECURSION, FailureKind::StackOverflow),
        ("sleep-past-deadline", artifacts::SLEEP_PAST_DEADLINE, FailureKind::Deadline),
        ("busy-wait", artifacts::BUSY_WAIT, FailureKind::Deadline),
        ("panics", artifacts::PANICS, FailureKind::GuestPanic),
    ];
    for (name, wasm, _) in &cases {
        test.upload("sandbox", PipelineKind::Batch, name, wasm);
    }
    let platform = test.open().await;
    let input = test.dir.path().join("input.txt");
    std::fs::write(&input, "some input\n").unwrap();
    let orders = sample("retail/orders-2026-11-20.csv");

    for (name, _, expected) in cases {
        let staged = test.dir.path().join(format!("{name}.txt"));
        std::fs::copy(&input, &staged).unwrap();
        // The other tenant ingests while the bad guest runs.
        let (bad, good) =
            tokio::join!(platform.ingest_path("sandbox", None, &staged, None), platform.ingest_path("retail", None, &orders, None),);
        let bad = bad.unwrap();
        assert_eq!(bad.outcome, Outcome::Failed, "{name}: {bad:?}");
        assert_eq!(bad.failure, Some(expected), "{name}: {:?}", bad.reason);
        assert!(bad.reason.as_deref().is_some_and(|r| !r.is_empty()), "{name} has a reason");
        assert_eq!(good.unwrap().outcome, Outcome::Ok, "retail was served while {name} ran");
    }
    let log = read_log(&test.tenant_dir("sandbox").join("logs/batch.log"));
    let panic = log.iter().find(|l| l["type"] == "ingestion" && l["pipeline"] == "panics").unwrap();
    assert!(panic["reason"].as_str().unwrap().contains("fixture panic after reading"), "{panic}");

    // And right after all of them a normal ingestion still succeeds.
    let after = platform.ingest_path("sensors", None, &sample("sensors/readings-2026-11-20.ndjson"), None).await.unwrap();
    assert_eq!(after.outcome, Outcome::Ok);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_cannot_leave_its_namespace() {
    let test = platform();
    test.upload("sandbox", PipelineKind::Batch, "escape-namespace", artifacts::ESCAPE_NAMESPACE);
    let platform = test.open().await;
    platform.ingest_path("sensors", None, &sample("sensors/readings-2026-11-20.ndjson"), None).await.unwrap();
    let before = platform.search("sensors", "readings", "", 0).await.unwrap().total;

    let staged = test.dir.path().join("escape.txt");
    std::fs::write(&staged, "x\n").unwrap();
    let record = platform.ingest_path("sandbox", None, &staged, None).await.unwrap();
    assert_eq!(record.outcome, Outcome::Ok, "every attempt was denied: {:?}", record.reason);
    assert_eq!(platform.search("sensors", "readings", "", 0).await.unwrap().total, before);
    assert_eq!(platform.search("sensors", "readings", "escaped:true", 0).await.unwrap().total, 0);
    let indices = platform.coredms().indices("").await.unwrap();
    assert!(
        indices
            .iter()
            .all(|i| !i.contains("escape") && (i.starts_with("sensors-") || i.starts_with("retail-") || i.starts_with("sandbox-"))),
        "{indices:?}"
    );
    let denials = read_log(&test.tenant_dir("sandbox").join("logs/batch-guest.log"))
        .into_iter()
        .filter(|l| l["type"] == "event" && l["message"].as_str().is_some_and(|m| m.contains("denied")))
        .count();
    assert_eq!(denials, 11, "7 collections and 4 topics refused");
}

/// The record form of `bulk-index`, which the SDK no longer sends: a document
/// without an id gets one from its content, so the same content written again
/// overwrites it. And `bulk-index-packed` refuses offsets that run past its
/// text, as `invalid-input`, without failing the ingestion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn document_records_work_without_the_sdk_and_bad_packing_is_refused() {
    let test = platform();
    test.upload("sandbox", PipelineKind::Batch, "record-documents", artifacts::RECORD_DOCUMENTS);
    let platform = test.open().await;
    let staged = test.dir.path().join("notes.txt");
    std::fs::write(&staged, "n-1 {\"n\":1}\n- {\"n\":2}\n- {\"n\":3}\n- {\"n\":2}\n").unwrap();
    for _ in 0..2 {
        let record = platform.ingest_path("sandbox", None, &staged, None).await.unwrap();
        assert_eq!(record.outcome, Outcome::Ok, "{:?}", record.reason);
    }
    let found = platform.search("sandbox", "notes", "", 10).await.unwrap();
    assert_eq!(found.total, 3, "n-1 by its id, n:2 and n:3 by their content: {:?}", found.hits);
    let mut ids: Vec<(&str, i64)> = found.hits.iter().map(|h| (h.id.as_str(), h.source["n"].as_i64().unwrap())).collect();
    ids.sort_by_key(|&(_, n)| n);
    assert_eq!(ids[0], ("n-1", 1));
    for (id, _) in &ids[1..] {
        assert!(id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit()), "content id {id}");
    }
    let said: Vec<String> = read_log(&test.tenant_dir("sandbox").join("logs/batch-guest.log"))
        .into_iter()
        .filter(|l| l["type"] == "guest-log")
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .collect();
    assert_eq!(said.iter().filter(|m| m.as_str() == "bulk-index: 4 indexed, 0 failed").count(), 2, "{said:?}");
    let refused = said.iter().find(|m| m.starts_with("bulk-index-packed refused")).unwrap_or_else(|| panic!("{said:?}"));
    assert!(refused.contains("invalid input") && refused.contains("offset 1 (4)"), "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upload_checks_the_world_of_the_component() {
    let test = TestPlatform::builder().tenant("sensors", "tenants/sensors/profile.yaml").build();
    let upload = mysimbdp::platform::PipelineUpload::new(&test.config()).unwrap();
    let registry = test.config().registry().unwrap();
    let tenant = registry.require("sensors").unwrap();
    let (batch_name, stream_name) = (mysimbdp::config::Name::parse("readings").unwrap(), mysimbdp::config::Name::parse("live").unwrap());
    let stream = std::fs::read(artifacts::SENSOR_STREAM).unwrap();
    let batch = std::fs::read(artifacts::SENSOR_READINGS).unwrap();
    assert!(upload.check(tenant, PipelineKind::Stream, &stream_name, &stream).is_ok());
    assert!(upload.check(tenant, PipelineKind::Batch, &batch_name, &batch).is_ok());
    let error = format!("{:#}", upload.check(tenant, PipelineKind::Batch, &batch_name, &stream).unwrap_err());
    assert!(error.contains("batch-pipeline"), "{error}");
    let error = format!("{:#}", upload.check(tenant, PipelineKind::Stream, &stream_name, &batch).unwrap_err());
    assert!(error.contains("stream-pipeline") || error.contains("imports"), "{error}");
    let error = format!("{:#}", upload.check(tenant, PipelineKind::Batch, &batch_name, b"not wasm").unwrap_err());
    assert!(error.contains("not a valid WebAssembly component") && error.contains("tenant `sensors`"), "{error}");
}

#[test]
fn every_fixture_has_a_test() {
    // Every suite's source, the modules in its folder too.
    fn sources(dir: &std::path::Path) -> String {
        std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| if e.path().is_dir() { sources(&e.path()) } else { std::fs::read_to_string(e.path()).unwrap() })
            .collect()
    }
    let text = sources(&repo_root().join("tests/suites"));
    for fixture in artifacts::FIXTURES {
        assert!(text.contains(&format!("artifacts::{fixture}")), "fixture {fixture} is not used by any test");
    }
}
