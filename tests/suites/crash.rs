//! SIGKILL of the real host process at 20 points (random ones, and for the
//! batch some as soon as a file is being ingested), restarting it each
//! time, on the embedded default and on the real Kafka and OpenSearch:
//! - during batch ingestion of 40 files (each with some invalid rows) under
//!   `max_files_per_run: 5`: every file ends done exactly once and nothing
//!   else, the distinct documents are the valid rows and the distinct dead
//!   letters the invalid rows;
//! - during a stream (with some invalid messages): the distinct documents are
//!   the valid messages, the distinct dead letters the invalid ones, and each
//!   restart resumed from the committed offsets (at most one uncommitted
//!   batch per partition was handled again).
//!
//! The kill points come from a seed, printed; `MYSIMBDP_CRASH_SEED=<seed>`
//! replays a run. Delivery is at least once; the documents' ids (from the
//! row or message) make it effectively once, which is what is counted here.

use mysimbdp::pipelines::PipelineKind;
use mysimbdp_tests::{
    RunningHost, Search, Services, TestPlatform, artifacts, eventually, orders_csv, profile_with, read_log, start_stream, unique_tenant,
};
use std::collections::BTreeSet;
use std::time::Duration;

const HOST: &str = env!("CARGO_BIN_EXE_mysimbdp-test-host");
const QUICK: &str = "batch:\n  scan_interval_ms: 200\n  min_file_age_ms: 100\nstream:\n  monitor_interval_ms: 1000\n";
const KILLS: usize = 20;

/// The kill points, reproducible from the seed (fastrand's generator).
struct Points(fastrand::Rng);

impl Points {
    fn from_env(test: &str) -> Points {
        let seed = std::env::var("MYSIMBDP_CRASH_SEED")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64 | 1);
        println!("{test}: kill points from MYSIMBDP_CRASH_SEED={seed}");
        eprintln!("{test}: kill points from MYSIMBDP_CRASH_SEED={seed}");
        Points(fastrand::Rng::with_seed(seed))
    }

    /// A delay in `[low, high)` milliseconds.
    fn next_ms(&mut self, low: u64, high: u64) -> Duration {
        Duration::from_millis(self.0.u64(low..high))
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Backends {
    Embedded,
    Distributed,
}

fn build(tenant: &str, profile: &str, backends: Backends) -> TestPlatform {
    let builder = TestPlatform::builder().tenant_yaml(tenant, profile).config(QUICK);
    match backends {
        Backends::Embedded => builder.build(),
        Backends::Distributed => builder.services().build(),
    }
}

/// A host process, SIGKILLed when dropped (also when an assertion fails).
fn spawn(test: &TestPlatform) -> RunningHost {
    let mut command = test.command(HOST);
    command.args(["host", "run"]).stdout(std::process::Stdio::null()).stderr(std::process::Stdio::null());
    RunningHost(command.spawn().expect("start the host"))
}

fn kill(mut host: RunningHost) {
    host.0.kill().expect("SIGKILL the host");
    host.0.wait().unwrap();
}

async fn answers(test: &TestPlatform) -> bool {
    reqwest::get(format!("{}/api/health", test.api())).await.is_ok_and(|r| r.status().is_success())
}

/// Distinct values of header `name` over a tenant's dead letters, and how many
/// letters there were; read through the platform (embedded or Kafka alike).
async fn dead_letters(
    platform: &mysimbdp::platform::Platform,
    tenant: &str,
    key: impl Fn(&mysimbdp::backends::InRecord) -> String,
) -> (BTreeSet<String>, usize) {
    let tenant_id = mysimbdp::config::TenantId::parse(tenant).unwrap();
    let letters =
        platform.messaging().read_all(&tenant_id.dead_letter_topic(), 1_000_000, Duration::from_secs(10)).await.unwrap_or_default();
    for letter in &letters {
        let kind = header(letter, "error-kind");
        assert_eq!(kind, "rejected", "only the pipeline's rejections are dead letters, never a crash or the store's load");
    }
    (letters.iter().map(key).collect(), letters.len())
}

fn header(record: &mysimbdp::backends::InRecord, name: &str) -> String {
    record.headers.iter().find(|(k, _)| k == name).map(|(_, v)| String::from_utf8_lossy(v).into_owned()).unwrap_or_default()
}

async fn documents(platform: &mysimbdp::platform::Platform, tenant: &str, collection: &str) -> u64 {
    platform.search_page(tenant, collection, "", 0, 0).await.map(|r| r.total).unwrap_or(0)
}

/// `rows` orders, every `every`-th one with a date the pipeline rejects.
fn orders_with_invalid(first: usize, rows: usize, every: usize) -> (String, usize) {
    let valid = orders_csv(first, rows);
    let mut text = String::new();
    let mut invalid = 0;
    for (i, line) in valid.lines().enumerate() {
        if i > 0 && i % every == 0 {
            let mut fields: Vec<&str> = line.split(',').collect();
            fields[1] = "not-a-date";
            text.push_str(&fields.join(","));
            invalid += 1;
        } else {
            text.push_str(line);
        }
        text.push('\n');
    }
    (text, invalid)
}

/// Returns once some file's latest manifest state is claimed or ingesting
/// while it is in `work/` (what a restart resumes), at once when all `files`
/// are done already, or after 60 s.
async fn until_a_file_is_ingesting(manifest: &std::path::Path, work: &std::path::Path, files: usize) {
    use mysimbdp::batch::manifest::{FileState, read_latest};
    for _ in 0..30_000 {
        let latest = read_latest(manifest).unwrap_or_default();
        if latest.values().any(|e| matches!(e.state, FileState::Claimed | FileState::Ingesting) && e.work_path(work).exists()) {
            return;
        }
        if latest.values().filter(|e| e.state == FileState::Done).count() == files {
            return;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

async fn batch_survives_kills(backends: Backends) {
    let tenant = unique_tenant("retail");
    let mut points =
        Points::from_env(&format!("batch on {}", if backends == Backends::Embedded { "embedded" } else { "kafka+opensearch" }));
    let profile = profile_with("tenants/retail/profile.yaml", &[("constraints.max_files_per_run", "5")]);
    let test = build(&tenant, &profile, backends);
    test.upload(&tenant, PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let (files, rows_per_file, every) = (40, 400, 37);
    let staging = test.tenant_dir(&tenant).join("staging");
    std::fs::create_dir_all(&staging).unwrap();
    let (mut valid, mut invalid) = (0, 0);
    for n in 0..files {
        let (text, bad) = orders_with_invalid(n * rows_per_file, rows_per_file, every);
        let name = format!("orders-{n:02}.csv");
        std::fs::write(staging.join(format!(".{name}.part")), text).unwrap();
        std::fs::rename(staging.join(format!(".{name}.part")), staging.join(&name)).unwrap();
        valid += rows_per_file - bad;
        invalid += bad;
    }

    let manifest = test.dir.path().join("var/manifests").join(format!("{tenant}.jsonl"));
    let work = test.tenant_dir(&tenant).join("work");
    for kill_number in 0..KILLS {
        let host = spawn(&test);
        if kill_number % 4 == 3 {
            // Now and then during the start, while it recovers from the last kill.
            tokio::time::sleep(points.next_ms(0, 1000)).await;
        } else if kill_number % 4 == 0 {
            // First (while every file still waits: on a fast machine the
            // host may finish them all within a few kills) and now and then,
            // as soon as a file is claimed into work/, so that some kill
            // surely cuts an ingestion off, whatever the seed.
            until_a_file_is_ingesting(&manifest, &work, files).await;
        } else {
            eventually("the host to answer", Duration::from_secs(60), || async { answers(&test).await.then_some(()) }).await;
            tokio::time::sleep(points.next_ms(0, 2000)).await;
        }
        kill(host);
    }
    let host = spawn(&test);
    eventually("every file to be done after the kills", Duration::from_secs(600), || {
        let done = mysimbdp::batch::manifest::read_latest(&manifest)
            .map(|latest| latest.values().filter(|e| e.state == mysimbdp::batch::manifest::FileState::Done).count())
            .unwrap_or(0);
        async move { (done == files).then_some(()) }
    })
    .await;
    kill(host);

    let entries = mysimbdp::batch::manifest::read_entries(&manifest).unwrap();
    let recovered = read_log(&test.tenant_dir(&tenant).join("logs/batch.log"))
        .into_iter()
        .filter(|l| l["message"] == "interrupted file recovered" && l["how"] == "resumed")
        .count();
    println!("{recovered} ingestions cut off by a kill were resumed");
    assert!(recovered > 0, "some kills cut an ingestion off");
    for n in 0..files {
        let name = format!("orders-{n:02}.csv");
        let states: Vec<_> = entries.iter().filter(|e| e.file == name).map(|e| e.state).collect();
        let done = states.iter().filter(|s| **s == mysimbdp::batch::manifest::FileState::Done).count();
        assert_eq!(done, 1, "{name} is done exactly once: {states:?}");
        assert!(
            states
                .iter()
                .all(|s| !matches!(s, mysimbdp::batch::manifest::FileState::Failed | mysimbdp::batch::manifest::FileState::Duplicate)),
            "{name} was never recorded under another outcome: {states:?}"
        );
        assert!(test.tenant_dir(&tenant).join("archive").join(&name).exists(), "{name} archived");
    }
    for dir in ["staging", "quarantine", "failed"] {
        let left: Vec<_> = std::fs::read_dir(test.tenant_dir(&tenant).join(dir))
            .map(|d| d.filter_map(|e| e.ok()).map(|e| e.file_name()).filter(|n| !n.to_string_lossy().starts_with('.')).collect())
            .unwrap_or_default();
        assert!(left.is_empty(), "nothing left in {dir}/: {left:?}");
    }
    let platform = test.open().await;
    assert_eq!(documents(&platform, &tenant, "orders").await, valid as u64, "distinct documents are the valid rows");
    let (origins, letters) = dead_letters(&platform, &tenant, |r| header(r, "origin")).await;
    assert_eq!(origins.len(), invalid, "distinct dead letters are the invalid rows ({letters} letters with the redeliveries)");
    if backends == Backends::Distributed {
        Search::new(&Services::from_env().elasticsearch_url).delete(&format!("{tenant}-*")).await;
    }
}

async fn stream_survives_kills(backends: Backends) {
    let tenant = unique_tenant("sensors");
    let mut points =
        Points::from_env(&format!("stream on {}", if backends == Backends::Embedded { "embedded" } else { "kafka+opensearch" }));
    let batch = 20;
    let partitions = 2;
    let profile = profile_with(
        "tenants/sensors/profile.yaml",
        &[("stream.partitions", &partitions.to_string()), ("stream.batch_max_messages", &batch.to_string()), ("stream.max_instances", "1")],
    );
    let test = build(&tenant, &profile, backends);
    test.upload(&tenant, PipelineKind::Stream, "live", artifacts::SENSOR_STREAM);
    // A chunk of messages before the first start and one after each start, so
    // messages keep arriving while the host is killed again and again.
    let chunk = 500;
    let total = chunk * (KILLS + 1);
    let every = 97;
    let mut chunks: Vec<Vec<serde_json::Value>> = Vec::new();
    let mut invalid = 0;
    for (i, line) in mysimbdp_tests::readings_ndjson(0, total).lines().enumerate() {
        let value = if i % every == 0 {
            invalid += 1;
            format!("not a reading {i}")
        } else {
            line.to_string()
        };
        if i % chunk == 0 {
            chunks.push(Vec::new());
        }
        chunks.last_mut().unwrap().push(serde_json::json!({ "key": format!("k{i}"), "value": value }));
    }
    let mut chunks = chunks.into_iter();
    let produce = |test: &TestPlatform, messages: Vec<serde_json::Value>| {
        let (api, tenant) = (test.api(), tenant.clone());
        async move {
            let answer = reqwest::Client::new()
                .post(format!("{api}/api/stream/produce"))
                .json(&serde_json::json!({ "tenant": tenant, "topic": "readings", "messages": messages }))
                .send()
                .await
                .unwrap();
            assert!(answer.status().is_success(), "{}", answer.text().await.unwrap());
        }
    };
    // The first chunk through a first host (its API), which is then killed too.
    let first = spawn(&test);
    eventually("the host to answer", Duration::from_secs(60), || async { answers(&test).await.then_some(()) }).await;
    produce(&test, chunks.next().unwrap()).await;
    kill(first);

    let log_file = test.tenant_dir(&tenant).join("logs/stream.log");
    let batches_done = || read_log(&log_file).iter().filter(|l| l["type"] == "ingestion" && l["outcome"] == "ok").count();
    let mut kills = 0;
    for _ in 0..KILLS {
        let host = spawn(&test);
        let started = eventually("the host to start the stream", Duration::from_secs(60), || {
            let (api, tenant) = (test.api(), tenant.clone());
            async move { start_stream(&api, &tenant).await.then_some(()) }
        });
        started.await;
        produce(&test, chunks.next().expect("a chunk per start")).await;
        // Killed while it consumes: once a batch went through since this start.
        let before = batches_done();
        eventually("a batch to be ingested since the start", Duration::from_secs(120), || {
            let progressed = batches_done() > before;
            async move { progressed.then_some(()) }
        })
        .await;
        tokio::time::sleep(points.next_ms(0, 300)).await;
        kill(host);
        kills += 1;
    }
    let host = spawn(&test);
    eventually("the host to start the stream after the kills", Duration::from_secs(60), || {
        let (api, tenant) = (test.api(), tenant.clone());
        async move { start_stream(&api, &tenant).await.then_some(()) }
    })
    .await;
    let status_url = format!("{}/api/stream/status?tenant={tenant}", test.api());
    eventually("the stream to catch up (lag 0)", Duration::from_secs(600), || {
        let url = status_url.clone();
        async move {
            let status: serde_json::Value = reqwest::get(&url).await.ok()?.json().await.ok()?;
            let lag = status[0]["lag"].as_u64()?;
            (lag == 0).then_some(())
        }
    })
    .await;
    assert!(answers(&test).await);
    kill(host);

    let valid = total - invalid;
    let platform = test.open().await;
    assert_eq!(documents(&platform, &tenant, "readings").await, valid as u64, "distinct documents are the valid messages");
    let (offsets, letters) =
        dead_letters(&platform, &tenant, |r| format!("{}@{}", header(r, "source-partition"), header(r, "source-offset"))).await;
    assert_eq!(offsets.len(), invalid, "distinct dead letters are the invalid messages ({letters} letters with the redeliveries)");
    // Resumed from the committed offsets: per partition, each batch starts
    // at most one past what was handled before (nothing skipped), and all
    // restarts together handled at most one uncommitted batch per partition
    // again (not the topic from its start).
    let batches: Vec<(String, i64, i64)> = read_log(&log_file)
        .iter()
        .filter(|l| l["type"] == "ingestion" && l["outcome"] == "ok")
        .flat_map(|l| {
            l["source"].as_str().unwrap().split(", ").map(|range| {
                let (partition, offsets) = range.rsplit_once('@').unwrap();
                let (first, last) = offsets.split_once('-').unwrap();
                (partition.to_string(), first.parse().unwrap(), last.parse().unwrap())
            })
        })
        .collect();
    let mut handled_up_to: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    let mut again = 0;
    for (partition, first, last) in &batches {
        let next = handled_up_to.get(partition.as_str()).map_or(0, |up_to| up_to + 1);
        assert!(*first <= next, "{partition}: a batch from {first} after offsets up to {next} were handled: messages skipped");
        again += (next.min(last + 1) - first).max(0);
        let up_to = handled_up_to.entry(partition.as_str()).or_insert(-1);
        *up_to = (*up_to).max(*last);
    }
    let bound = (kills * batch * partitions) as i64;
    println!(
        "{} batches for {total} messages across {kills} kills; {again} messages handled again (at most {bound}); {letters} dead letters for {invalid} invalid messages",
        batches.len()
    );
    assert!(again <= bound, "{again} messages handled again across {kills} restarts: more than one batch per partition each");
    if backends == Backends::Distributed {
        Search::new(&Services::from_env().elasticsearch_url).delete(&format!("{tenant}-*")).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_files_survive_sigkill_at_random_points_on_the_embedded_default() {
    batch_survives_kills(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_files_survive_sigkill_at_random_points_on_kafka_and_opensearch() {
    batch_survives_kills(Backends::Distributed).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_survives_sigkill_at_random_points_on_the_embedded_default() {
    stream_survives_kills(Backends::Embedded).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_survives_sigkill_at_random_points_on_kafka_and_opensearch() {
    stream_survives_kills(Backends::Distributed).await;
}
