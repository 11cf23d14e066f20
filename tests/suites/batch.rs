//! The batch ingest manager: constraints and quarantine, concurrency, cron,
//! priority without starvation, duplicates, and a host killed mid-ingestion.

use mysimbdp::pipelines::PipelineKind;
use mysimbdp::telemetry::Outcome;
use mysimbdp_tests::{
    TestPlatform, artifacts, eventually, ingestions, orders_csv, profile_with, read_log, readings_ndjson, settled, stage,
};
use std::path::Path;
use std::time::Duration;

const HOST: &str = env!("CARGO_BIN_EXE_mysimbdp-test-host");
const QUICK_SCANS: &str = "batch:\n  scan_interval_ms: 200\n  min_file_age_ms: 100\n  max_parallel_ingestions: 4\n";

fn reason(test: &TestPlatform, tenant: &str, dir: &str, name: &str) -> serde_json::Value {
    let path = test.tenant_dir(tenant).join(dir).join(format!("{name}.reason.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|_| panic!("{} has no reason file", path.display()));
    serde_json::from_str(&text).unwrap()
}

struct Tenant {
    id: &'static str,
    profile: &'static str,
    pipeline: &'static str,
    wasm: &'static str,
    extension: &'static str,
    collection: &'static str,
    rows: fn(usize, usize) -> String,
    /// Bytes per row, about, to size files.
    row_bytes: usize,
}

const RETAIL: Tenant = Tenant {
    id: "retail",
    profile: "tenants/retail/profile.yaml",
    pipeline: "orders",
    wasm: artifacts::RETAIL_ORDERS,
    extension: "csv",
    collection: "orders",
    rows: orders_csv,
    row_bytes: 95,
};

const SENSORS: Tenant = Tenant {
    id: "sensors",
    profile: "tenants/sensors/profile.yaml",
    pipeline: "readings",
    wasm: artifacts::SENSOR_READINGS,
    extension: "ndjson",
    collection: "readings",
    rows: readings_ndjson,
    row_bytes: 150,
};

/// A platform with one example tenant whose limits are small enough to break.
async fn constrained(tenant: &Tenant, changes: &[(&str, &str)]) -> TestPlatform {
    let mut all = vec![
        ("constraints.max_file_bytes", "64KiB"),
        ("constraints.max_staging_bytes", "1MiB"),
        ("constraints.max_files_per_run", "20"),
        ("agreement.schedule", "on-arrival"),
    ];
    all.extend_from_slice(changes);
    let test = TestPlatform::builder().tenant_yaml(tenant.id, &profile_with(tenant.profile, &all)).config(QUICK_SCANS).build();
    test.upload(tenant.id, PipelineKind::Batch, tenant.pipeline, tenant.wasm);
    test
}

/// Starts a manager on what is staged, once every file is old enough to be
/// taken in the same first run, and waits until the tenant is done.
async fn run_manager(test: &TestPlatform, tenant: &Tenant) -> mysimbdp::batch::status::TenantStatus {
    tokio::time::sleep(Duration::from_millis(300)).await;
    let platform = test.open().await;
    let manager = platform.start_batch_manager().await.unwrap();
    let status = settled(&platform, tenant.id, Duration::from_secs(60)).await;
    manager.shutdown().await;
    status
}

async fn stored(test: &TestPlatform, tenant: &Tenant) -> u64 {
    let platform = test.open().await;
    platform.search(tenant.id, tenant.collection, "", 0).await.unwrap().total
}

/// Wrong type and too big: quarantined with the rule,
/// limit and value; the valid file next to them is ingested.
async fn file_rules_quarantine_bad_files_beside_good_ones(tenant: &Tenant) {
    let test = constrained(tenant, &[]).await;
    let rows = 200;
    stage(&test, tenant.id, &format!("good.{}", tenant.extension), &(tenant.rows)(1, rows));
    stage(&test, tenant.id, "notes.txt", "not data\n");
    let big_rows = 70 * 1024 / tenant.row_bytes;
    let big = (tenant.rows)(1000, big_rows);
    assert!(big.len() > 64 * 1024);
    stage(&test, tenant.id, &format!("big.{}", tenant.extension), &big);

    let status = run_manager(&test, tenant).await;
    let rules: Vec<(String, String)> = status.quarantined.iter().map(|q| (q.file.clone(), q.state.clone())).collect();
    assert!(rules.contains(&("notes.txt".into(), "file-type".into())), "{rules:?}");
    assert!(rules.contains(&(format!("big.{}", tenant.extension), "max-file-bytes".into())), "{rules:?}");
    let reason = reason(&test, tenant.id, "quarantine", &format!("big.{}", tenant.extension));
    assert_eq!(reason["limit"], "65536 bytes");
    assert_eq!(reason["actual"], format!("{} bytes", big.len()));
    assert!(test.tenant_dir(tenant.id).join("quarantine/notes.txt").exists(), "kept, not deleted");
    assert_eq!(status.done.len(), 1, "the good file is done: {:?}", status.done);
    assert!(test.tenant_dir(tenant.id).join(format!("archive/good.{}", tenant.extension)).exists());
    assert_eq!(stored(&test, tenant).await, rows as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retail_files_breaking_file_rules_are_quarantined() {
    file_rules_quarantine_bad_files_beside_good_ones(&RETAIL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_files_breaking_file_rules_are_quarantined() {
    file_rules_quarantine_bad_files_beside_good_ones(&SENSORS).await;
}

/// A file no pipeline pattern takes is quarantined as `no-pipeline`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn files_no_pipeline_takes_are_quarantined() {
    let profile =
        profile_with(RETAIL.profile, &[("batch", r#"[{name: orders, files: "shops/*.csv"}]"#), ("agreement.schedule", "on-arrival")]);
    let test = TestPlatform::builder().tenant_yaml("retail", &profile).config(QUICK_SCANS).build();
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    std::fs::create_dir_all(test.tenant_dir("retail").join("staging/shops")).unwrap();
    stage(&test, "retail", "shops/helsinki.csv", &orders_csv(1, 10));
    stage(&test, "retail", "loose.csv", &orders_csv(100, 10));
    let status = run_manager(&test, &RETAIL).await;
    assert_eq!(status.quarantined.len(), 1);
    assert_eq!(status.quarantined[0].file, "loose.csv");
    assert_eq!(status.quarantined[0].state, "no-pipeline");
    assert_eq!(status.done.len(), 1);
    assert!(test.tenant_dir("retail").join("archive/shops/helsinki.csv").exists());
}

/// More files than `max_files_per_run` staged at once: nothing in them is
/// wrong, they only arrived together. Each run takes the oldest, the others
/// wait (shown with the reason) and are taken by the next runs: 40 files
/// under a limit of 5 all end done, none quarantined.
async fn files_beyond_the_run_limit_wait_for_the_next_run(tenant: &Tenant) {
    let test = constrained(tenant, &[("constraints.max_files_per_run", "5")]).await;
    for i in 0..40 {
        // Distinct content: the same checksum would be a duplicate, done without ingestion.
        stage(&test, tenant.id, &format!("part-{i:02}.{}", tenant.extension), &(tenant.rows)(i * 20, 20));
    }
    // Before any host runs, status already says why the extra ones will wait.
    let registry = test.config().registry().unwrap();
    let before = mysimbdp::batch::status::tenant_status(registry.require(tenant.id).unwrap(), 10).unwrap();
    let waiting: Vec<&mysimbdp::batch::status::FileStatus> = before.staged.iter().filter(|f| f.state == "waiting").collect();
    assert_eq!(waiting.len(), 35, "{:?}", before.staged);
    assert!(waiting[0].reason.as_deref().unwrap().contains("max_files_per_run"), "{:?}", waiting[0]);
    let status = run_manager(&test, tenant).await;
    assert_eq!(status.done.len(), 40, "{:?}", status.done);
    assert!(status.quarantined.is_empty(), "{:?}", status.quarantined);
    let records = ingestions(&test, tenant.id);
    assert_eq!(records.len(), 40, "every file ingested once");
    assert!(records.iter().all(|r| r.outcome == Outcome::Ok));
    assert_eq!(stored(&test, tenant).await, 800);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retail_files_beyond_the_run_limit_wait_for_the_next_run() {
    files_beyond_the_run_limit_wait_for_the_next_run(&RETAIL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_files_beyond_the_run_limit_wait_for_the_next_run() {
    files_beyond_the_run_limit_wait_for_the_next_run(&SENSORS).await;
}

/// The staging quota is kept at the door: `stage put` refuses a file that
/// would bring staging past `max_staging_bytes`, naming it. A file that got
/// there anyway (another writer) waits until earlier files leave staging:
/// it passes every file rule, so it is never quarantined.
async fn files_beyond_the_staging_quota_wait_and_stage_put_refuses_them(tenant: &Tenant) {
    let test = constrained(tenant, &[("constraints.max_file_bytes", "40KiB"), ("constraints.max_staging_bytes", "100KiB")]).await;
    let rows = 30 * 1024 / tenant.row_bytes;
    for i in 0..4 {
        stage(&test, tenant.id, &format!("chunk-{i}.{}", tenant.extension), &(tenant.rows)(i * 1000, rows));
        std::thread::sleep(Duration::from_millis(20));
    }
    let extra = test.dir.path().join(format!("extra.{}", tenant.extension));
    std::fs::write(&extra, (tenant.rows)(9000, rows)).unwrap();
    let output = test.command(HOST).args(["stage", "put", "--tenant", tenant.id]).arg(&extra).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("max_staging_bytes") && stderr.contains("was not staged"), "{stderr}");

    let status = run_manager(&test, tenant).await;
    assert_eq!(status.done.len(), 4, "three files of ~30KiB fit in 100KiB; the fourth once they left: {:?}", status.done);
    assert!(status.quarantined.is_empty(), "{:?}", status.quarantined);
    assert_eq!(stored(&test, tenant).await, 4 * rows as u64);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retail_files_beyond_the_staging_quota_wait_and_stage_put_refuses_them() {
    files_beyond_the_staging_quota_wait_and_stage_put_refuses_them(&RETAIL).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sensors_files_beyond_the_staging_quota_wait_and_stage_put_refuses_them() {
    files_beyond_the_staging_quota_wait_and_stage_put_refuses_them(&SENSORS).await;
}

/// Recorded start and end times never show more than the tenant's cap running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_ingestions_stay_within_the_tenants_cap() {
    let test = constrained(
        &RETAIL,
        &[("agreement.max_concurrent_ingestions", "2"), ("constraints.max_file_bytes", "4MiB"), ("constraints.max_staging_bytes", "64MiB")],
    )
    .await;
    for i in 0..6 {
        stage(&test, "retail", &format!("batch-{i}.csv"), &orders_csv(i * 100_000, 20_000));
    }
    let status = run_manager(&test, &RETAIL).await;
    assert_eq!(status.done.len(), 6);
    let records = ingestions(&test, "retail");
    assert_eq!(records.len(), 6);
    let mut most = 0;
    for record in &records {
        let start = record.started_at;
        let running = records
            .iter()
            .filter(|other| {
                let other_end = other.started_at + chrono::Duration::microseconds((other.duration_ms * 1000.0) as i64);
                other.started_at <= start && start < other_end
            })
            .count();
        most = most.max(running);
    }
    assert!(most <= 2, "{most} ingestions of retail ran at once; its cap is 2");
    assert_eq!(most, 2, "the cap, not a lack of work, limited concurrency");
}

/// A cron pipeline takes files only at its ticks, however early they land:
/// each file is claimed by the run of the first tick after it landed, and the
/// manifest names that tick. Only orders are checked, never how late a run
/// was: a busy machine may start a run late, but never early, and a late run
/// is still the run of its tick.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cron_pipelines_start_only_at_their_ticks() {
    use mysimbdp::batch::manifest::{Entry, FileState};
    const TICK_MS: i64 = 3000;
    let test = constrained(&SENSORS, &[("agreement.schedule", "'*/3 * * * * *'")]).await;
    let platform = test.open().await;
    let manager = platform.start_batch_manager().await.unwrap();
    // The first tick at or after a time, in ms.
    let tick_after = |ms: i64| (ms + TICK_MS - 1) / TICK_MS * TICK_MS;
    let mut landed = Vec::new();
    for i in 0..3 {
        // Land 0.5 s after a tick, in the next interval each time: the file is
        // settled (min_file_age_ms 100) long before the following tick.
        let now = chrono::Utc::now().timestamp_millis();
        let land = (now / TICK_MS + 1) * TICK_MS + 500;
        tokio::time::sleep(Duration::from_millis((land - now) as u64)).await;
        let before = chrono::Utc::now().timestamp_millis();
        stage(&test, "sensors", &format!("tick-{i}.ndjson"), &readings_ndjson(i * 100, 10));
        landed.push((before, chrono::Utc::now().timestamp_millis() + 100));
    }
    settled(&platform, "sensors", Duration::from_secs(30)).await;
    manager.shutdown().await;
    let entries: Vec<Entry> = mysimbdp::batch::manifest::read_entries(&platform.tenant("sensors").unwrap().paths.manifest).unwrap();
    let records = ingestions(&test, "sensors");
    assert_eq!(records.len(), 3);
    for (i, &(staging, settled_by)) in landed.iter().enumerate() {
        let name = format!("tick-{i}.ndjson");
        let claim =
            entries.iter().find(|e| e.file == name && e.state == FileState::Claimed).unwrap_or_else(|| panic!("{name} never claimed"));
        let done = entries.iter().find(|e| e.id == claim.id && e.state == FileState::Done).unwrap_or_else(|| panic!("{name} not done"));
        let started = records.iter().find(|r| r.source == name).unwrap().started_at;
        let tick = claim.tick.unwrap_or_else(|| panic!("the claim of {name} names no cron tick: {claim:?}")).timestamp_millis();
        // Staged in the middle of an interval, both bounds are the same tick.
        let (first, last) = (tick_after(staging), tick_after(settled_by));
        assert!(first <= tick && tick <= last, "{name} was taken by the tick at {tick}, not the first after it landed ({first}..={last})");
        assert_eq!(done.tick, claim.tick, "{name}: the done entry keeps the tick of the claim");
        assert!(claim.ts.timestamp_millis() >= tick, "{name} was claimed {} ms before its tick", tick - claim.ts.timestamp_millis());
        assert!(started >= claim.ts, "{name} started before it was claimed");
    }
}

/// With one worker, the high-priority tenant goes first, yet the low one is
/// not starved: waiting raises its score (aging set to 100 ms a point).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priority_goes_first_without_starving_others() {
    let high = profile_with(RETAIL.profile, &[("agreement.priority", "9"), ("agreement.schedule", "on-arrival")]);
    let low = profile_with(RETAIL.profile, &[("agreement.priority", "1"), ("agreement.schedule", "on-arrival")]);
    let test = TestPlatform::builder()
        .tenant_yaml("high", &high)
        .tenant_yaml("low", &low)
        .config("batch:\n  scan_interval_ms: 200\n  min_file_age_ms: 100\n  max_parallel_ingestions: 1\n  priority_aging_ms: 100\n")
        .build();
    for tenant in ["high", "low"] {
        test.upload(tenant, PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    }
    for i in 0..16 {
        stage(&test, "high", &format!("h-{i:02}.csv"), &orders_csv(i * 10_000, 3_000));
    }
    for i in 0..2 {
        stage(&test, "low", &format!("l-{i}.csv"), &orders_csv(i * 10_000, 3_000));
    }
    let platform = test.open().await;
    let manager = platform.start_batch_manager().await.unwrap();
    settled(&platform, "high", Duration::from_secs(120)).await;
    settled(&platform, "low", Duration::from_secs(120)).await;
    manager.shutdown().await;
    let mut starts: Vec<(chrono::DateTime<chrono::Utc>, &str)> = Vec::new();
    let (high, low) = (ingestions(&test, "high"), ingestions(&test, "low"));
    starts.extend(high.iter().map(|r| (r.started_at, "high")));
    starts.extend(low.iter().map(|r| (r.started_at, "low")));
    starts.sort();
    let order: Vec<&str> = starts.iter().map(|(_, t)| *t).collect();
    assert_eq!(order[0], "high", "{order:?}");
    assert_eq!(order[1], "high", "{order:?}");
    let first_low = order.iter().position(|t| *t == "low").unwrap();
    let last_high = order.iter().rposition(|t| *t == "high").unwrap();
    assert!(first_low < last_high, "low was starved until high was done: {order:?}");
}

/// The same content staged again, under its name or another: no duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_file_staged_twice_yields_no_duplicates() {
    let test = constrained(&RETAIL, &[]).await;
    let content = orders_csv(1, 300);
    stage(&test, "retail", "day.csv", &content);
    stage(&test, "retail", "day-copy.csv", &content);
    let platform = test.open().await;
    let manager = platform.start_batch_manager().await.unwrap();
    settled(&platform, "retail", Duration::from_secs(30)).await;
    assert_eq!(platform.search("retail", "orders", "", 0).await.unwrap().total, 300);
    // Staged again after it was done: recognised by its checksum.
    stage(&test, "retail", "day.csv", &content);
    let status = eventually("the second day.csv to be handled", Duration::from_secs(30), || {
        let tenant = platform.tenant("retail").unwrap();
        async move {
            let status = mysimbdp::batch::status::tenant_status(&tenant, 100).unwrap();
            (status.done.iter().any(|d| d.state == "duplicate")).then_some(status)
        }
    })
    .await;
    manager.shutdown().await;
    assert!(status.done.iter().any(|d| d.file == "day.csv" && d.state == "duplicate"));
    assert_eq!(platform.search("retail", "orders", "", 0).await.unwrap().total, 300);
    assert_eq!(read_log(&test.tenant_dir("retail").join("logs/batch.log")).iter().filter(|l| l["type"] == "duplicate").count(), 1);
}

/// A failed file goes to `failed/` with its classified reason; `batch retry`
/// brings it back once the cause is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_files_keep_their_reason_and_can_be_retried() {
    let test = constrained(&RETAIL, &[]).await;
    // The active version panics; the file must land in failed/.
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::PANICS);
    stage(&test, "retail", "monday.csv", &orders_csv(1, 50));
    let platform = test.open().await;
    let manager = platform.start_batch_manager().await.unwrap();
    let status = settled(&platform, "retail", Duration::from_secs(30)).await;
    assert_eq!(status.failed.len(), 1, "{status:?}");
    assert_eq!(status.failed[0].state, "guest-panic");
    assert!(reason(&test, "retail", "failed", "monday.csv")["message"].as_str().unwrap().contains("fixture panic"));

    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let tenant = platform.tenant("retail").unwrap();
    // Through the running manager, the one writer of the tenant's manifest.
    let moved = manager.retry(&tenant.id, &[], false).unwrap();
    assert_eq!(moved, ["monday.csv"]);
    let status = settled(&platform, "retail", Duration::from_secs(30)).await;
    manager.shutdown().await;
    assert!(status.failed.is_empty());
    assert_eq!(platform.search("retail", "orders", "", 0).await.unwrap().total, 50);
}

/// Each file of `dir` with its contents.
fn contents(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let mut files: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap())
        .map(|e| (e.file_name().into_string().unwrap(), std::fs::read(e.path()).unwrap()))
        .collect();
    files.sort();
    files
}

/// `mysimbdp batch retry` from the CLI beside a running host (the one writer
/// of the tenant's manifest, holding the data directory's lock): pointed at
/// another API address, the CLI would write the manifest itself, so it
/// refuses, naming the lock, and nothing in `failed/` moves; pointed at the
/// host, it goes through the host's API (locally it could not have taken
/// the lock) and the failed file is ingested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_retry_from_the_cli_goes_through_the_host_and_refuses_beside_it() {
    let test = constrained(&RETAIL, &[]).await;
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::PANICS);
    let _host = mysimbdp_tests::RunningHost::start(&test, HOST).await;
    stage(&test, "retail", "monday.csv", &orders_csv(1, 50));
    let registry = test.config().registry().unwrap();
    let tenant = registry.require("retail").unwrap();
    let status = eventually("monday.csv to fail", Duration::from_secs(60), || {
        let status = mysimbdp::batch::status::tenant_status(tenant, 100).unwrap();
        async move { (!status.failed.is_empty()).then_some(status) }
    })
    .await;
    assert_eq!(status.failed.iter().map(|f| (f.file.as_str(), f.state.as_str())).collect::<Vec<_>>(), [("monday.csv", "guest-panic")]);
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let failed = contents(&tenant.paths.failed);
    assert!(failed.iter().any(|(name, _)| name == "monday.csv"), "{failed:?}");
    let manifest = std::fs::read(&tenant.paths.manifest).unwrap();

    let elsewhere = test.config_with_the_api_elsewhere();
    let output =
        std::process::Command::new(HOST).arg("--config").arg(&elsewhere).args(["batch", "retry", "--tenant", "retail"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success(), "{stderr}");
    let lock = test.dir.path().join("var/host.lock");
    assert!(stderr.contains("`batch retry` found no host answering") && stderr.contains(&format!("holds {}", lock.display())), "{stderr}");
    assert_eq!(contents(&tenant.paths.failed), failed, "nothing in failed/ moved");
    assert!(!tenant.paths.staging.join("monday.csv").exists());
    assert_eq!(std::fs::read(&tenant.paths.manifest).unwrap(), manifest, "the manifest has the host as its one writer");

    let output = test.command(HOST).args(["--json", "batch", "retry", "--tenant", "retail"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let moved: Vec<String> = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(moved, ["monday.csv"]);
    let status = eventually("monday.csv to be ingested after the retry", Duration::from_secs(60), || {
        let status = mysimbdp::batch::status::tenant_status(tenant, 100).unwrap();
        async move { status.done.iter().any(|d| d.file == "monday.csv" && d.state == "done").then_some(status) }
    })
    .await;
    assert!(status.failed.is_empty(), "{status:?}");
    let query = format!("http://127.0.0.1:{}/api/query?tenant=retail&collection=orders&q=&limit=0", test.port);
    let answer: serde_json::Value = reqwest::get(&query).await.unwrap().json().await.unwrap();
    assert_eq!(answer["total"], 50, "{answer}");
}

/// The manager records a file's outcome in the manifest before it moves the
/// file out of `work/`. In between, the status must still show the file as
/// running, and once the file is in `failed/` its reason must be there with it:
/// otherwise a status read in that window sees the file nowhere.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_between_its_outcome_and_its_move_is_still_running() {
    use mysimbdp::batch::manifest::{Entry, FileState, Manifest};
    use mysimbdp::batch::staging::{self, Reason};
    let test = constrained(&RETAIL, &[]).await;
    let platform = test.open().await;
    let tenant = platform.tenant("retail").unwrap();
    let entry = Entry {
        id: mysimbdp::batch::manifest::new_id(),
        state: FileState::Failed,
        file: "tuesday.csv".into(),
        pipeline: "orders".into(),
        checksum: "0".repeat(64),
        bytes: 10,
        ts: chrono::Utc::now(),
        reason: Some("guest-panic: boom".into()),
        tick: None,
    };
    let work = entry.work_path(&tenant.paths.work);
    std::fs::create_dir_all(work.parent().unwrap()).unwrap();
    std::fs::write(&work, "order_id\n").unwrap();
    let (manifest, _) = Manifest::open(&tenant.paths.manifest).unwrap();
    manifest.record(std::slice::from_ref(&entry), true).unwrap();

    let status = mysimbdp::batch::status::tenant_status(&tenant, 10).unwrap();
    assert_eq!(status.running.iter().map(|f| (f.file.as_str(), f.state.as_str())).collect::<Vec<_>>(), [("tuesday.csv", "failed")]);
    assert!(status.failed.is_empty(), "{status:?}");

    let reason = Reason {
        tenant: "retail".into(),
        file: entry.file.clone(),
        rule: "guest-panic".into(),
        limit: None,
        actual: None,
        message: "boom".into(),
        at: chrono::Utc::now(),
        id: Some(entry.id.clone()),
        pipeline: Some(entry.pipeline.clone()),
    };
    let moved = staging::move_with_reason(&work, &tenant.paths.failed, &entry.id, &reason).unwrap();
    assert_eq!(moved, tenant.paths.failed.join("tuesday.csv"));
    let status = mysimbdp::batch::status::tenant_status(&tenant, 10).unwrap();
    assert!(status.running.is_empty(), "{status:?}");
    assert_eq!(status.failed.len(), 1, "{status:?}");
    assert_eq!((status.failed[0].state.as_str(), status.failed[0].reason.as_deref()), ("guest-panic", Some("boom")));
}

fn process_is_running(child: &mut std::process::Child) -> bool {
    child.try_wait().unwrap().is_none()
}

/// SIGKILL the host while it ingests, start it again: every row is indexed
/// exactly once and the file ends in `archive/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_killed_mid_ingestion_finishes_the_file_exactly_once_after_restart() {
    let test = constrained(&RETAIL, &[("constraints.max_file_bytes", "256MiB"), ("constraints.max_staging_bytes", "1GiB")]).await;
    let rows = 400_000;
    stage(&test, "retail", "big.csv", &orders_csv(1, rows));

    let mut host = test.command(HOST).args(["host", "run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let manifest = test.dir.path().join("var/manifests/retail.jsonl");
    eventually("the host to start ingesting big.csv", Duration::from_secs(60), || {
        let entries = mysimbdp::batch::manifest::read_entries(&manifest).unwrap_or_default();
        let started = entries.iter().any(|e| e.state == mysimbdp::batch::manifest::FileState::Ingesting);
        async move { started.then_some(()) }
    })
    .await;
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert!(process_is_running(&mut host), "the host finished too soon to be killed mid-ingestion");
    host.kill().unwrap();
    host.wait().unwrap();
    assert!(!test.tenant_dir("retail").join("archive/big.csv").exists(), "killed before the end");
    assert!(ingestions(&test, "retail").is_empty(), "no ingestion had finished");

    let mut host = test.command(HOST).args(["host", "run"]).stderr(std::process::Stdio::null()).spawn().unwrap();
    let archived = test.tenant_dir("retail").join("archive/big.csv");
    eventually("big.csv to be archived after the restart", Duration::from_secs(180), || {
        let done = archived.exists();
        async move { done.then_some(()) }
    })
    .await;
    // Through the running host's API, as an operator would.
    let client = reqwest::Client::new();
    let answer: serde_json::Value = client
        .get(format!("{}/api/query", test.api()))
        .query(&[("tenant", "retail"), ("collection", "orders"), ("q", ""), ("limit", "0")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    host.kill().unwrap();
    host.wait().unwrap();
    assert_eq!(answer["total"], rows as u64, "every row once: documents are counted by id");
    let records = ingestions(&test, "retail");
    assert_eq!(records.len(), 1);
    assert_eq!((records[0].outcome, records[0].records_out), (Outcome::Ok, rows as u64));
    assert!(!Path::new(&test.tenant_dir("retail").join("work")).read_dir().unwrap().any(|_| true), "nothing stuck in work/");
}

/// Several batch pipelines per tenant, each bound to its files: the light
/// `orders` mapper takes top-level CSVs, the heavy `features` aggregation the
/// ones under `features/`; the same content goes through each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_pipeline_takes_the_files_its_pattern_matches() {
    let test = constrained(&RETAIL, &[("constraints.max_file_bytes", "1MiB")]).await;
    test.upload("retail", PipelineKind::Batch, "features", artifacts::RETAIL_FEATURES);
    let content = orders_csv(1, 900);
    stage(&test, "retail", "day.csv", &content);
    stage(&test, "retail", "features/day.csv", &content);
    let status = run_manager(&test, &RETAIL).await;
    assert_eq!(status.done.len(), 2, "{status:?}");
    let by_pipeline: Vec<(String, String)> = ingestions(&test, "retail").iter().map(|r| (r.pipeline.clone(), r.source.clone())).collect();
    assert!(by_pipeline.contains(&("orders".into(), "day.csv".into())), "{by_pipeline:?}");
    assert!(by_pipeline.contains(&("features".into(), "day.csv".into())), "{by_pipeline:?}");
    let platform = test.open().await;
    assert_eq!(platform.search("retail", "orders", "", 0).await.unwrap().total, 900);
    // orders_csv has 900 rows over customers C-000001..C-000900 (i % 5000).
    let features = platform.search("retail", "customer-features", "customer_id:\"C-000007\"", 1).await.unwrap();
    assert_eq!(features.total, 1);
    let customer = &features.hits[0].source;
    assert_eq!(customer["orders"], 1);
    assert_eq!(customer["window"], "day.csv");
    assert_eq!(platform.search("retail", "customer-features", "", 0).await.unwrap().total, 900);
    assert!(test.tenant_dir("retail").join("archive/features/day.csv").exists());
}

/// Claiming hashes each file, which takes a while for a large one. It runs
/// outside the scan lock, one task per tenant: a tenant's 1 GiB file delays
/// neither the other tenants' claims nor their next scans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_tenants_large_file_does_not_delay_the_others_claims() {
    let large = [("constraints.max_file_bytes", "2GiB"), ("constraints.max_staging_bytes", "4GiB"), ("agreement.schedule", "on-arrival")];
    let small = [("agreement.schedule", "on-arrival")];
    let neighbours = ["small_b", "small_c", "small_d"];
    let mut builder = TestPlatform::builder().tenant_yaml("big", &profile_with(RETAIL.profile, &large)).config(QUICK_SCANS);
    for id in neighbours {
        builder = builder.tenant_yaml(id, &profile_with(RETAIL.profile, &small));
    }
    let test = builder.build();
    // The large file's pipeline fails at once: only its claim matters here.
    test.upload("big", PipelineKind::Batch, "orders", artifacts::PANICS);
    std::fs::create_dir_all(test.tenant_dir("big").join("staging")).unwrap();
    std::fs::File::create(test.tenant_dir("big").join("staging/large.csv")).unwrap().set_len(1 << 30).unwrap();
    for id in neighbours {
        test.upload(id, PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
        stage(&test, id, "small.csv", &orders_csv(1, 10));
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let platform = test.open().await;
    let manager = platform.start_batch_manager().await.unwrap();
    let claimed_at = |tenant: &str| {
        let path = test.dir.path().join(format!("var/manifests/{tenant}.jsonl"));
        let entries = mysimbdp::batch::manifest::read_latest(&path).unwrap_or_default();
        entries.values().find(|e| e.state != mysimbdp::batch::manifest::FileState::Retried).map(|e| e.id.clone())
    };
    eventually("every tenant's file to be claimed", Duration::from_secs(120), || {
        let all = claimed_at("big").is_some() && neighbours.iter().all(|id| claimed_at(id).is_some());
        async move { all.then_some(()) }
    })
    .await;
    // Claim ids are time-ordered: each small file was claimed before the large one.
    let big = claimed_at("big").unwrap();
    for id in neighbours {
        let small = claimed_at(id).unwrap();
        assert!(small < big, "tenant {id}'s claim {small} waited for the large file's {big}");
    }
    for id in neighbours {
        settled(&platform, id, Duration::from_secs(60)).await;
    }
    manager.shutdown().await;
}
