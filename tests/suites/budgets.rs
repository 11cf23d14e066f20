//! Sandbox budgets and tenant quotas that hold, against the real host
//! process, with the neighbour tenant `retail` ingesting meanwhile: one
//! memory budget for all of an invocation's memories, every guest text
//! capped, quotas that outlive an invocation (counter series, collections,
//! guest log bytes with rotation), saturating counters, and a guest that
//! says `unavailable` forever tried a bounded number of times.

use mysimbdp::failure::FailureKind;
use mysimbdp::pipelines::PipelineKind;
use mysimbdp::telemetry::{IngestionRecord, Outcome};
use mysimbdp_tests::{RunningHost, TestPlatform, artifacts, orders_csv, read_log};
use std::path::Path;
use std::time::Duration;

const HOST: &str = env!("CARGO_BIN_EXE_mysimbdp-test-host");
const MIB: u64 = 1024 * 1024;

/// A hostile tenant: the `floods` and `many-memories` fixtures, with small
/// quotas so a few invocations reach them.
const HOSTILE: &str = "description: Floods the host on purpose.
constraints: { allowed_types: [txt], max_file_bytes: 1MiB, max_files_per_run: 10, max_staging_bytes: 10MiB }
agreement: { max_concurrent_ingestions: 2, priority: 1 }
sandbox: { fuel_per_invocation: 100000000000, memory_bytes: 64MiB, deadline_ms: 60000 }
quotas: { collections: 5, counter_series: 150, guest_log_bytes: 256KiB, guest_log_files: 2 }
batch:
  - name: many-memories
    files: 'many-memories*'
    sandbox: { memory_bytes: 48MiB }
  - name: floods
    files: 'flood*'
";

fn platform() -> TestPlatform {
    let test = TestPlatform::builder().tenant_yaml("hostile", HOSTILE).tenant("retail", "tenants/retail/profile.yaml").build();
    test.upload("hostile", PipelineKind::Batch, "many-memories", artifacts::MANY_MEMORIES);
    test.upload("hostile", PipelineKind::Batch, "floods", artifacts::FLOODS);
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    test
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(120)).build().unwrap()
}

/// `POST /api/ingest` of `text` written as `name` for `tenant`.
async fn ingest(test: &TestPlatform, tenant: &str, name: &str, text: &str) -> IngestionRecord {
    let path = test.dir.path().join(name);
    std::fs::write(&path, text).unwrap();
    let answer = client()
        .post(format!("{}/api/ingest", test.api()))
        .json(&serde_json::json!({ "tenant": tenant, "path": path }))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{tenant} {name}: the host did not answer: {e}"));
    assert!(answer.status().is_success(), "{tenant} {name}: {}", answer.text().await.unwrap());
    answer.json().await.unwrap()
}

/// The hostile file and a neighbour's file at once; the neighbour's must succeed.
async fn beside_the_neighbour(test: &TestPlatform, name: &str, text: &str, n: usize) -> IngestionRecord {
    let (orders, orders_name) = (orders_csv(n * 100, 100), format!("orders-{n}.csv"));
    let (hostile, neighbour) = tokio::join!(ingest(test, "hostile", name, text), ingest(test, "retail", &orders_name, &orders));
    assert_eq!(neighbour.outcome, Outcome::Ok, "retail ingested beside {name}: {:?}", neighbour.reason);
    hostile
}

/// `times` floods of `mode`, each beside a neighbour's file; each ends `ok`
/// (the host refused what went beyond its caps, the guest went on).
async fn floods_succeed(test: &TestPlatform, mode: &str, times: usize) {
    for n in 0..times {
        let record = beside_the_neighbour(test, &format!("flood-{mode}-{n}.txt"), &format!("{mode}\n"), n).await;
        assert_eq!(record.outcome, Outcome::Ok, "flood {mode} {n}: {:?}", record.reason);
    }
}

/// `VmRSS` or `VmHWM` of process `pid`, in bytes.
fn memory_of(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status.lines().find(|l| l.starts_with(field)).unwrap_or_else(|| panic!("no {field}"));
    line.split_whitespace().nth(1).unwrap().parse::<u64>().unwrap() * 1024
}

async fn metrics(test: &TestPlatform) -> String {
    client().get(format!("{}/metrics", test.api())).send().await.unwrap().text().await.unwrap()
}

fn lines_of(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path).unwrap_or_default().lines().map(str::to_string).collect()
}

/// 6 extra core instances with a 40 MiB memory each, under a budget of
/// 48 MiB: each memory alone fits, together they do not. The invocation
/// fails as `memory-limit` and the host's resident memory stays near the
/// budget (it would grow by 240 MiB if the limit were per memory).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_memories_share_one_budget_and_the_host_stays_small() {
    let test = platform();
    let host = RunningHost::start(&test, HOST).await;
    let pid = host.0.id();
    let before = memory_of(pid, "VmRSS:");
    let record = beside_the_neighbour(&test, "many-memories.txt", "x\n", 0).await;
    let peak = memory_of(pid, "VmHWM:");
    assert_eq!(record.outcome, Outcome::Failed, "{record:?}");
    assert_eq!(record.failure, Some(FailureKind::MemoryLimit), "{:?}", record.reason);
    let reason = record.reason.unwrap_or_default();
    assert!(reason.contains("sandbox.memory_bytes") && reason.contains("memories and tables"), "{reason}");
    assert!(
        peak < before + 160 * MIB,
        "the host's peak resident memory {} MiB stays near its {} MiB before the invocation",
        peak / MIB,
        before / MIB
    );
}

/// Counters over three invocations: the series stop at the tenant's quota
/// (not 64 more per invocation), `u64::MAX` added twice saturates, and
/// each refusal is a metric and a line in the guest log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn counter_series_stop_at_the_tenants_quota_and_counters_saturate() {
    let test = platform();
    let _host = RunningHost::start(&test, HOST).await;
    let big = |text: &str| {
        text.lines().find(|l| l.starts_with("mysimbdp_guest_big_total") && l.contains("tenant=\"hostile\"")).map(str::to_string)
    };
    for n in 0..3 {
        let record = beside_the_neighbour(&test, &format!("flood-counters-{n}.txt"), "counters\n", n).await;
        assert_eq!(record.outcome, Outcome::Ok, "invocation {n}: {:?}", record.reason);
        let big = big(&metrics(&test).await).expect("the counter `big`");
        assert!(big.ends_with(&format!(" {}", u64::MAX)), "invocation {n}: u64::MAX added twice saturates, never wraps: {big}");
    }
    let text = metrics(&test).await;
    let series: Vec<&str> =
        text.lines().filter(|l| l.starts_with("mysimbdp_guest_") && l.contains("_total{") && l.contains("tenant=\"hostile\"")).collect();
    assert_eq!(series.len(), 150, "quotas.counter_series of the hostile tenant, over three invocations of 64 counters each");
    let refused =
        read_log(&test.tenant_dir("hostile").join("logs/batch-guest.log")).into_iter().filter(|l| l["quota"] == "counter_series").count();
    // 64 series after the first (the per-invocation cap), 127 after the
    // second, 150 during the third: 23 of its 100 admitted, 77 refused.
    assert_eq!(refused, 77, "each counter beyond the quota refused");
    assert!(text.contains("mysimbdp_quota_exceeded_total{tenant=\"hostile\",quota=\"counter_series\"}"), "the quota's metric");
}

/// 20 collections asked for, 5 allowed; the refusals are `quota-exceeded`
/// to the guest, and the count holds in a second invocation too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collections_stop_at_the_tenants_quota() {
    let test = platform();
    let host = RunningHost::start(&test, HOST).await;
    floods_succeed(&test, "collections", 2).await;
    drop(host);
    let said: Vec<String> = read_log(&test.tenant_dir("hostile").join("logs/batch-guest.log"))
        .into_iter()
        .filter(|l| l["type"] == "guest-log")
        .map(|l| l["message"].as_str().unwrap_or_default().to_string())
        .collect();
    let refused = said.iter().filter(|m| m.contains("quota exceeded") && m.contains("quotas.collections")).count();
    assert_eq!(refused, 2 * 15, "c5 to c19 refused in both invocations: {said:?}");
    let platform = test.open().await;
    let mut indices = platform.coredms().indices("hostile-").await.unwrap();
    indices.retain(|i| i != "hostile-metrics");
    assert_eq!(indices.len(), 5, "{indices:?}");
}

/// Four log floods of 20,000 lines of 16 KiB (and 4 MiB printed) each: the
/// guest log rotates within its quota, lines are cut with a marker, and the
/// ingestion records stay whole in the tenant's batch log.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_floods_stay_within_the_guest_log_quota_and_records_are_kept() {
    let test = platform();
    let _host = RunningHost::start(&test, HOST).await;
    floods_succeed(&test, "log", 4).await;
    let logs = test.tenant_dir("hostile").join("logs");
    let mut guest_bytes = 0;
    for entry in std::fs::read_dir(&logs).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().to_string();
        if name.starts_with("batch-guest.log") {
            guest_bytes += entry.metadata().unwrap().len();
            assert!(name == "batch-guest.log" || name == "batch-guest.log.1" || name == "batch-guest.log.2", "{name}");
        }
        for line in lines_of(&entry.path()) {
            assert!(line.len() < 6 * 1024, "{name}: a line of {} bytes", line.len());
        }
    }
    assert!(guest_bytes <= 3 * 256 * 1024 + 8 * 1024, "{guest_bytes} bytes of guest log: the file and 2 rotated ones of 256 KiB");
    let guest = read_log(&logs.join("batch-guest.log"));
    assert!(
        guest.iter().any(|l| l["message"].as_str().is_some_and(|m| m.contains("beyond the invocation's budget"))),
        "the lines beyond the budget are counted"
    );
    assert!(
        guest.iter().any(|l| l["message"].as_str().is_some_and(|m| m.starts_with("lll") && m.ends_with("bytes cut]"))),
        "a long line is cut with its marker"
    );
    let records = read_log(&logs.join("batch.log")).into_iter().filter(|l| l["type"] == "ingestion").count();
    assert_eq!(records, 4, "every ingestion record is kept");
}

/// A collection name of 1 MiB and an error text of 1 MiB: the refusal and
/// the failure are cut with a marker wherever they are written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn long_names_and_error_texts_are_cut_wherever_they_are_kept() {
    let test = platform();
    let _host = RunningHost::start(&test, HOST).await;
    let record = beside_the_neighbour(&test, "flood-names.txt", "names\n", 0).await;
    assert_eq!(record.failure, Some(FailureKind::GuestError), "{record:?}");
    let reason = record.reason.unwrap_or_default();
    assert!(reason.len() <= 4096 && reason.starts_with("RRR") && reason.ends_with("bytes cut]"), "{} bytes", reason.len());
    let logs = test.tenant_dir("hostile").join("logs");
    let denial = read_log(&logs.join("batch-guest.log"))
        .into_iter()
        .find(|l| l["type"] == "event" && l["message"].as_str().is_some_and(|m| m.contains("denied")))
        .expect("the refused collection is logged");
    assert!(denial["message"].as_str().unwrap().len() <= 512, "{denial}");
    for line in lines_of(&logs.join("batch.log")) {
        assert!(line.len() < 8 * 1024, "a line of {} bytes in batch.log", line.len());
    }
}

/// A guest that says `unavailable` every time is tried four times, then the
/// file fails as `unavailable`, kept for `batch retry`; never tried forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_guest_unavailable_forever_is_tried_four_times_then_fails_retryably() {
    let test = platform();
    let _host = RunningHost::start(&test, HOST).await;
    let record = beside_the_neighbour(&test, "flood-unavailable.txt", "unavailable\n", 0).await;
    assert_eq!(record.outcome, Outcome::Failed);
    assert_eq!(record.failure, Some(FailureKind::Unavailable), "{:?}", record.reason);
    let reason = record.reason.unwrap_or_default();
    assert!(reason.contains("tried 4 times") && reason.contains("batch retry"), "{reason}");
}
