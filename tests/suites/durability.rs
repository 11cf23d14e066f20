//! The host's own records against crashes and full disks, with the real
//! host process: torn tails of the manifest and of the embedded message log
//! are cut off at the next start and nothing acknowledged is lost; a corrupt
//! offsets file is an error that names it; and a real ENOSPC (a small tmpfs
//! mounted under the manifests, the embedded store, the embedded log or a
//! tenant's staging) stops what cannot be written, says so, loses nothing,
//! and resumes by itself once there is space again.
//!
//! Mounting needs root (or CAP_SYS_ADMIN), which the project's machines give
//! the tests; elsewhere `MYSIMBDP_NO_MOUNT=1` leaves the tmpfs tests out
//! (they say so), and `file_size` makes the closest real failure without a
//! mount: a file-size limit on the running process (EFBIG).

#[path = "durability/file_size.rs"]
mod file_size;

use mysimbdp::pipelines::PipelineKind;
use mysimbdp_tests::{RunningHost, TestPlatform, artifacts, eventually, orders_csv, prometheus_value, read_log, readings_ndjson};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

const HOST: &str = env!("CARGO_BIN_EXE_mysimbdp-test-host");
const QUICK_SCANS: &str = "batch:\n  scan_interval_ms: 200\n  min_file_age_ms: 100\n";

/// A tmpfs of `size` mounted at `path` (created), unmounted when dropped.
struct SmallDisk {
    path: PathBuf,
}

impl SmallDisk {
    /// `None` when `MYSIMBDP_NO_MOUNT=1` says this machine cannot mount.
    fn mount(path: &Path, size: &str) -> Option<SmallDisk> {
        if std::env::var("MYSIMBDP_NO_MOUNT").is_ok_and(|v| v == "1") {
            eprintln!("MYSIMBDP_NO_MOUNT=1: the full-disk test is left out");
            return None;
        }
        std::fs::create_dir_all(path).unwrap();
        let output =
            std::process::Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"]).arg(path).output().unwrap();
        assert!(
            output.status.success(),
            "mounting a {size} tmpfs at {} failed ({}): the full-disk tests need root or CAP_SYS_ADMIN; MYSIMBDP_NO_MOUNT=1 leaves them out",
            path.display(),
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Some(SmallDisk { path: path.to_path_buf() })
    }

    /// Writes a filler file until the disk is full.
    fn fill(&self) {
        let mut filler = std::fs::File::create(self.path.join("filler")).unwrap();
        let chunk = vec![0u8; 64 * 1024];
        while filler.write_all(&chunk).is_ok() {}
        // What is left below a chunk.
        while filler.write_all(&[0u8; 512]).is_ok() {}
        let _ = filler.sync_all();
    }

    fn free(&self) {
        std::fs::remove_file(self.path.join("filler")).unwrap();
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg("-l").arg(&self.path).status();
    }
}

fn retail() -> TestPlatform {
    let test = TestPlatform::builder().tenant("retail", "tenants/retail/profile.yaml").config(QUICK_SCANS).build();
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    test
}

fn stage(test: &TestPlatform, name: &str, rows: usize, first: usize) {
    let staging = test.tenant_dir("retail").join("staging");
    let partial = staging.join(format!(".{name}.part"));
    std::fs::write(&partial, orders_csv(first, rows)).unwrap();
    std::fs::rename(partial, staging.join(name)).unwrap();
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

async fn get_json(test: &TestPlatform, path: &str) -> serde_json::Value {
    http().get(format!("{}{path}", test.api())).send().await.unwrap().json().await.unwrap()
}

async fn documents(test: &TestPlatform) -> u64 {
    get_json(test, "/api/query?tenant=retail&collection=orders&q=&limit=0").await["total"].as_u64().unwrap_or(0)
}

async fn writes_failing(test: &TestPlatform, what: &str) -> Option<f64> {
    let text = http().get(format!("{}/metrics", test.api())).send().await.unwrap().text().await.unwrap();
    prometheus_value(&text, &format!("mysimbdp_writes_failing{{tenant=\"retail\",what=\"{what}\"}}"))
}

fn manifest(test: &TestPlatform) -> Vec<serde_json::Value> {
    let path = test.dir.path().join("var/manifests/retail.jsonl");
    mysimbdp::batch::manifest::read_latest(&path).unwrap().into_values().map(|e| serde_json::to_value(e).unwrap()).collect()
}

fn state_of(test: &TestPlatform, file: &str) -> Option<String> {
    manifest(test).into_iter().find(|e| e["file"] == file).map(|e| e["state"].as_str().unwrap().to_string())
}

fn platform_log(test: &TestPlatform) -> Vec<serde_json::Value> {
    read_log(&test.dir.path().join("var/logs/platform.log"))
}

/// Stages `first.csv` (100 rows) and waits until it is done.
async fn first_file_done(test: &TestPlatform) {
    stage(test, "first.csv", 100, 1);
    all_done(test, &["first.csv".to_string()], "first.csv to be done", Duration::from_secs(60)).await;
}

/// Waits until the manifest's latest entry of every one of `files` is done.
async fn all_done(test: &TestPlatform, files: &[String], what: &str, within: Duration) {
    eventually(what, within, || {
        let done = files.iter().all(|name| state_of(test, name).as_deref() == Some("done"));
        async move { done.then_some(()) }
    })
    .await;
}

/// Waits until the health route says `degraded`, and returns what it says.
async fn degraded(test: &TestPlatform, what: &str) -> serde_json::Value {
    eventually(what, Duration::from_secs(60), || async move {
        let health = get_json(test, "/api/health").await;
        (health["status"] == "degraded").then_some(health)
    })
    .await
}

/// Publishes 200 messages (`{"n":from}` ...) to retail's `clicks` through the API.
async fn produce(test: &TestPlatform, from: usize) -> reqwest::Response {
    let messages: Vec<serde_json::Value> = (from..from + 200).map(|i| serde_json::json!({ "value": format!("{{\"n\":{i}}}") })).collect();
    http()
        .post(format!("{}/api/stream/produce", test.api()))
        .json(&serde_json::json!({ "tenant": "retail", "topic": "clicks", "messages": messages }))
        .send()
        .await
        .unwrap()
}

/// With the log's writes failing: publishes 200 messages at a time until
/// one publish is refused; the messages acknowledged meanwhile, and the
/// refusal's text.
async fn publish_until_refused(test: &TestPlatform, what: &str) -> (usize, String) {
    let mut acknowledged = 0;
    for round in 1..50 {
        let answer = produce(test, round * 200).await;
        if !answer.status().is_success() {
            return (acknowledged, answer.text().await.unwrap());
        }
        acknowledged += 200;
    }
    panic!("no publish was refused {what}");
}

/// Read back without the host: whole records only, every acknowledged one.
async fn assert_the_log_holds(test: &TestPlatform, acknowledged: usize) {
    let platform = test.open().await;
    let messages = platform.messaging().read_all("retail.clicks", 100_000, Duration::from_secs(5)).await.unwrap();
    assert_eq!(messages.len(), acknowledged, "every acknowledged message, and nothing of the refused publish");
}

/// `stage put` of a file over 1 MiB fails naming `error` and leaves nothing
/// in `staging`; a 100-row file is staged after it.
fn a_large_file_is_not_staged_and_a_small_one_is(
    test: &TestPlatform,
    staging: &Path,
    stage_put: impl Fn(&Path) -> std::process::Output,
    error: &str,
) {
    let big = test.dir.path().join("big.csv");
    std::fs::write(&big, orders_csv(1, 20_000)).unwrap();
    assert!(std::fs::metadata(&big).unwrap().len() > 1 << 20);
    let output = stage_put(&big);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains(error) && stderr.contains("nothing of it is in staging"), "{stderr}");
    assert_eq!(std::fs::read_dir(staging).unwrap().count(), 0, "no .part file left behind");

    let small = test.dir.path().join("small.csv");
    std::fs::write(&small, orders_csv(1, 100)).unwrap();
    let output = stage_put(&small);
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
}

/// With no space under the manifests, the host cannot record a claim: it
/// takes none of the tenant's files (they stay staged, nothing lost), says
/// why (health, metric, platform log), and once space returns it takes them
/// by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_manifests_stops_claims_until_space_returns() {
    let test = retail();
    let Some(disk) = SmallDisk::mount(&test.dir.path().join("var/manifests"), "1m") else { return };
    let _host = RunningHost::start(&test, HOST).await;
    first_file_done(&test).await;

    disk.fill();
    // Files keep coming; once a manifest write fails (the last page of the
    // file may still take a record or two), the tenant takes no more.
    let mut staged = Vec::new();
    let mut rows = 100;
    let health = eventually("the host to report the manifest write failing", Duration::from_secs(60), || {
        let name = format!("more-{}.csv", staged.len());
        stage(&test, &name, 50, 1000 * (staged.len() + 1));
        staged.push(name);
        rows += 50;
        let test = &test;
        async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            let health = get_json(test, "/api/health").await;
            (health["status"] == "degraded").then_some(health)
        }
    })
    .await;
    assert_eq!(health["writes_failing"][0]["what"], "manifest", "{health}");
    assert!(health["writes_failing"][0]["error"].as_str().unwrap().contains("No space left on device"), "{health}");
    assert_eq!(writes_failing(&test, "manifest").await, Some(1.0));
    assert!(platform_log(&test).iter().any(|l| l["message"] == "writes failing: claiming stopped" && l["tenant"] == "retail"));
    assert!(test.tenant_dir("retail").join("failed").read_dir().unwrap().next().is_none(), "nothing failed for it");
    // Staged now, it is not taken while the manifest cannot be written.
    stage(&test, "after-stop.csv", 50, 900_000);
    staged.push("after-stop.csv".into());
    rows += 50;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(test.tenant_dir("retail").join("staging/after-stop.csv").exists(), "it waits in staging");
    assert_eq!(state_of(&test, "after-stop.csv"), None, "not claimed");

    disk.free();
    all_done(&test, &staged, "every staged file to be done once space returns", Duration::from_secs(120)).await;
    assert_eq!(documents(&test).await, rows as u64, "every row of every file, once");
    assert_eq!(get_json(&test, "/api/health").await["status"], "ok");
    assert_eq!(writes_failing(&test, "manifest").await, Some(0.0));
    assert!(platform_log(&test).iter().any(|l| l["message"] == "writes succeed again: claiming resumed"));
}

/// With no space under the embedded store, the file being ingested fails as
/// a sink error (kept in `failed/` with the reason), the tenant takes no
/// more files, and once space returns that file is staged again and
/// ingested, with the files that waited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_embedded_store_fails_the_file_retryably_and_resumes() {
    let test = retail();
    let Some(disk) = SmallDisk::mount(&test.dir.path().join("var/coredms"), "16m") else { return };
    let _host = RunningHost::start(&test, HOST).await;
    first_file_done(&test).await;

    disk.fill();
    stage(&test, "big.csv", 20_000, 100_000);
    let health = degraded(&test, "the host to report the store write failing").await;
    assert_eq!(health["writes_failing"][0]["what"], "store", "{health}");
    let reason =
        std::fs::read_to_string(test.tenant_dir("retail").join("failed/big.csv.reason.json")).expect("big.csv failed with its reason");
    assert!(reason.contains("sink-error") && reason.contains("No space left on device"), "{reason}");
    stage(&test, "later.csv", 30, 500_000);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(test.tenant_dir("retail").join("staging/later.csv").exists(), "a file staged meanwhile waits in staging");

    disk.free();
    eventually("big.csv and later.csv to be done once space returns", Duration::from_secs(120), || {
        let done =
            ["big.csv", "later.csv"].iter().all(|f| manifest(&test).iter().filter(|e| e["file"] == *f).any(|e| e["state"] == "done"));
        async move { done.then_some(()) }
    })
    .await;
    assert_eq!(documents(&test).await, 100 + 20_000 + 30, "every row once");
    assert_eq!(get_json(&test, "/api/health").await["status"], "ok");
}

/// With no space under the embedded message log, a publish is refused (not
/// acknowledged), the log keeps only whole records, and publishing works
/// again once space returns; every acknowledged message is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_the_embedded_log_refuses_publishes_and_keeps_the_log_whole() {
    let test = retail();
    let Some(disk) = SmallDisk::mount(&test.dir.path().join("var/messaging"), "1m") else { return };
    let host = RunningHost::start(&test, HOST).await;
    assert!(produce(&test, 0).await.status().is_success());
    disk.fill();
    let (meanwhile, refused) = publish_until_refused(&test, "on the full disk").await;
    assert!(refused.contains("No space left on device"), "{refused}");
    disk.free();
    assert!(produce(&test, 100_000).await.status().is_success(), "publishing works again");
    drop(host);
    assert_the_log_holds(&test, 200 + meanwhile + 200).await;
}

/// With no space under a tenant's staging, `stage put` fails saying so, and
/// leaves no half file that the host could take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_under_staging_fails_stage_put_and_leaves_no_half_file() {
    let test = retail();
    let staging = test.tenant_dir("retail").join("staging");
    let Some(disk) = SmallDisk::mount(&staging, "1m") else { return };
    let stage_put = |file: &Path| test.command(HOST).args(["stage", "put", "--tenant", "retail"]).arg(file).output().unwrap();
    a_large_file_is_not_staged_and_a_small_one_is(&test, &staging, stage_put, "No space left on device");
    drop(disk);
}

/// A host killed with a record half-written at the end of its manifest and
/// of a partition of its message log: at the next start both torn tails are
/// cut off (and logged), every acknowledged entry and message is there, and
/// both files take new records after the last whole one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn torn_tails_are_cut_off_at_start_and_nothing_acknowledged_is_lost() {
    let test = TestPlatform::builder().tenant("retail", "tenants/retail/profile.yaml").config(QUICK_SCANS).build();
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let host = RunningHost::start(&test, HOST).await;
    first_file_done(&test).await;
    let messages: Vec<serde_json::Value> = (0..30).map(|i| serde_json::json!({ "value": format!("{{\"n\":{i}}}") })).collect();
    let answer = http()
        .post(format!("{}/api/stream/produce", test.api()))
        .json(&serde_json::json!({ "tenant": "retail", "topic": "clicks", "messages": messages }))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    drop(host);

    // What a crash in the middle of two appends leaves.
    let manifest_path = test.dir.path().join("var/manifests/retail.jsonl");
    let partition = test.dir.path().join("var/messaging/topics/retail.clicks/0.log");
    for path in [&manifest_path, &partition] {
        std::fs::OpenOptions::new().append(true).open(path).unwrap().write_all(b"#0000004f 1a2b3c4d {\"id\":\"cut by a cr").unwrap();
    }
    let mut host = test.command(HOST).args(["host", "run"]).stderr(std::process::Stdio::piped()).spawn().unwrap();
    let stderr = host.stderr.take().unwrap();
    let log = std::thread::spawn(move || std::io::read_to_string(stderr).unwrap_or_default());
    let host = RunningHost(host);
    eventually("the host to answer", Duration::from_secs(60), || {
        let test = &test;
        async move { http().get(format!("{}/api/health", test.api())).send().await.ok().map(drop) }
    })
    .await;
    stage(&test, "second.csv", 50, 1000);
    eventually("second.csv to be done after the torn manifest tail", Duration::from_secs(60), || {
        let done = state_of(&test, "second.csv").as_deref() == Some("done");
        async move { done.then_some(()) }
    })
    .await;
    assert_eq!(state_of(&test, "first.csv").as_deref(), Some("done"), "the acknowledged entries are all there");
    assert_eq!(documents(&test).await, 150);
    let answer = http()
        .post(format!("{}/api/stream/produce", test.api()))
        .json(&serde_json::json!({ "tenant": "retail", "topic": "clicks", "messages": [{ "value": "{\"n\":30}" }] }))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success());
    drop(host);
    let log = log.join().unwrap();
    assert!(log.matches("A torn record at the end of the file").count() >= 2, "both torn tails are logged:\n{log}");

    let platform = test.open().await;
    let clicks = platform.messaging().read_all("retail.clicks", 1000, Duration::from_secs(5)).await.unwrap();
    assert_eq!(clicks.len(), 31, "the 30 acknowledged messages and the one after the cut");
    assert_eq!(clicks.last().unwrap().offset, 30);
}

async fn post(test: &TestPlatform, path: &str, body: serde_json::Value) -> reqwest::Response {
    http().post(format!("{}{path}", test.api())).json(&body).send().await.unwrap()
}

async fn stream_status(test: &TestPlatform, tenant: &str) -> serde_json::Value {
    get_json(test, &format!("/api/stream/status?tenant={tenant}")).await[0].clone()
}

/// Where each framed record of `bytes` starts (`#`, its payload's length in
/// 8 hex digits, its checksum, the payload, a line end).
fn record_starts(bytes: &[u8]) -> Vec<usize> {
    let mut starts = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        starts.push(at);
        let len = usize::from_str_radix(std::str::from_utf8(&bytes[at + 1..at + 9]).unwrap(), 16).unwrap();
        at += 19 + len + 1;
    }
    assert_eq!(at, bytes.len(), "whole records");
    starts
}

/// The committed offsets of the sensors tenant's stream, as the real host
/// wrote them (framed snapshots), damaged afterwards: one digit of the last
/// snapshot flipped, so it is still JSON and only its checksum fails. When
/// the stream is started on the host, the host says what happened, naming
/// the file, and nothing resets the offsets: the file stays as it is.
///
/// The start reads the group's offsets first, so `POST /api/stream/start`
/// is refused with the file named, and no instance runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_offsets_file_is_named_when_the_stream_starts_and_never_reset() {
    let test = TestPlatform::builder().tenant("sensors", "tenants/sensors/profile.yaml").build();
    test.upload("sensors", PipelineKind::Stream, "live", artifacts::SENSOR_STREAM);
    let host = RunningHost::start(&test, HOST).await;
    let started = post(&test, "/api/stream/start", serde_json::json!({ "tenant": "sensors", "instances": 1 })).await;
    assert!(started.status().is_success(), "{}", started.text().await.unwrap());
    let offsets = test.dir.path().join("var/messaging/groups/mysimbdp.sensors.live.json");
    // Two rounds of messages, each committed: two snapshots at least.
    for round in 0..2 {
        let messages: Vec<serde_json::Value> = readings_ndjson(round * 20, 20)
            .lines()
            .enumerate()
            .map(|(i, l)| serde_json::json!({ "key": format!("s-{i}"), "value": l }))
            .collect();
        let produced =
            post(&test, "/api/stream/produce", serde_json::json!({ "tenant": "sensors", "topic": "readings", "messages": messages })).await;
        assert!(produced.status().is_success(), "{}", produced.text().await.unwrap());
        eventually("the stream to commit every message", Duration::from_secs(60), || {
            let (test, offsets) = (&test, &offsets);
            async move { (stream_status(test, "sensors").await["lag"] == 0 && offsets.exists()).then_some(()) }
        })
        .await;
    }
    assert!(post(&test, "/api/stream/stop", serde_json::json!({ "tenant": "sensors" })).await.status().is_success());
    drop(host);

    // One bit of the last snapshot's payload flipped: a digit of an offset.
    // Taken for a torn tail, it would be cut off and the snapshot before it
    // put in force: a silent step back.
    let mut damaged = std::fs::read(&offsets).unwrap();
    let starts = record_starts(&damaged);
    assert!(starts.len() >= 2, "a snapshot per commit: {}", String::from_utf8_lossy(&damaged));
    let last = *starts.last().unwrap();
    let digit = last + 19 + damaged[last + 19..].iter().rposition(u8::is_ascii_digit).expect("an offset in the snapshot");
    damaged[digit] ^= 0x01;
    assert!(serde_json::from_slice::<serde_json::Value>(&damaged[last + 19..damaged.len() - 1]).is_ok(), "still JSON");
    std::fs::write(&offsets, &damaged).unwrap();

    let _host = RunningHost::start(&test, HOST).await;
    let started = post(&test, "/api/stream/start", serde_json::json!({ "tenant": "sensors", "instances": 1 })).await;
    let status_code = started.status();
    let answer = started.text().await.unwrap();
    assert!(!status_code.is_success(), "a stream on damaged offsets is refused: {status_code} {answer}");
    for said in ["cannot start", &offsets.display().to_string(), "the committed offsets cannot be read", "checksum"] {
        assert!(answer.contains(said), "the answer says `{said}`: {answer}");
    }
    let status = stream_status(&test, "sensors").await;
    assert!(status["running"] != true, "no instance runs: {status}");
    assert_eq!(std::fs::read(&offsets).unwrap(), damaged, "the offsets are not reset, cut or rewritten");
}

/// A host runs on the data directory, and the CLI is pointed at another API
/// address (or the host does not answer yet): the local commands that would
/// write the host's files themselves (`stream produce`, `ingest`) refuse,
/// naming the data directory's lock, and write nothing; pointed at the
/// host, the same produce goes through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn local_writes_beside_a_running_host_refuse_naming_its_lock() {
    let test = retail();
    let _host = RunningHost::start(&test, HOST).await;
    let lines = test.dir.path().join("clicks.jsonl");
    std::fs::write(&lines, "{\"n\":1}\n{\"n\":2}\n").unwrap();
    let produce = |config: &Path| {
        std::process::Command::new(HOST)
            .arg("--config")
            .arg(config)
            .args(["stream", "produce", "--tenant", "retail", "--topic", "clicks"])
            .arg(&lines)
            .output()
            .unwrap()
    };
    assert!(produce(&test.config_file).status.success(), "through the host");
    let partition = test.dir.path().join("var/messaging/topics/retail.clicks/0.log");
    let before = std::fs::read(&partition).unwrap();
    let orders = test.dir.path().join("orders.csv");
    std::fs::write(&orders, orders_csv(1, 20)).unwrap();

    let elsewhere = test.config_with_the_api_elsewhere();
    let lock = test.dir.path().join("var/host.lock").display().to_string();
    let produced = produce(&elsewhere);
    let ingested = std::process::Command::new(HOST)
        .arg("--config")
        .arg(&elsewhere)
        .args(["ingest", "--tenant", "retail"])
        .arg(&orders)
        .output()
        .unwrap();
    for (what, output) in [("stream produce", produced), ("ingest", ingested)] {
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(!output.status.success(), "{what} beside the host: {stderr}");
        assert!(
            stderr.contains(&format!("`{what}` found no host answering")) && stderr.contains(&format!("holds {lock}")),
            "{what}: {stderr}"
        );
    }
    assert_eq!(std::fs::read(&partition).unwrap(), before, "nothing appended behind the host's back");
    assert_eq!(documents(&test).await, 0, "nothing ingested");
    assert!(produce(&test.config_file).status.success(), "through the host again");
    assert!(std::fs::read(&partition).unwrap().len() > before.len());
}
