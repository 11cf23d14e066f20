//! Sandbox budgets and tenant quotas that hold, against the real host
//! process, with the neighbour tenant `retail` ingesting meanwhile: one
//! memory budget for all of an invocation's memories, every guest text
//! capped, quotas that outlive an invocation (counter series, collections,
//! topics, guest log bytes with rotation), dead letters per invocation (and
//! their headers cut), saturating counters, and a guest that
//! says `unavailable` forever tried a bounded number of times; the
//! neighbour's files ingested while every hostile fixture runs at once; a
//! tenant suspended and resumed by the operator without a restart.

use mysimbdp::failure::FailureKind;
use mysimbdp::pipelines::PipelineKind;
use mysimbdp::telemetry::{IngestionRecord, Outcome};
use mysimbdp_tests::{RunningHost, TestPlatform, artifacts, eventually, ingestions, orders_csv, prometheus_value, read_log, stage};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

const HOST: &str = env!("CARGO_BIN_EXE_mysimbdp-test-host");
const MIB: u64 = 1024 * 1024;

/// A hostile tenant: the `floods` and `many-memories` fixtures, with small
/// quotas so a few invocations reach them.
const HOSTILE: &str = "description: Floods the host on purpose.
constraints: { allowed_types: [txt], max_file_bytes: 1MiB, max_files_per_run: 10, max_staging_bytes: 10MiB }
agreement: { max_concurrent_ingestions: 2, priority: 1 }
sandbox: { fuel_per_invocation: 100000000000, memory_bytes: 64MiB, deadline_ms: 60000 }
quotas: { collections: 5, topics: 3, counter_series: 150, guest_log_bytes: 256KiB, guest_log_files: 2, dead_letters_per_invocation: 10 }
batch:
  - name: many-memories
    files: 'many-memories*'
    sandbox: { memory_bytes: 48MiB }
  - name: floods
    files: 'flood*'
  - name: nine-memories
    files: 'nine-memories*'
    sandbox: { memory_bytes: 320MiB }
";

fn platform() -> TestPlatform {
    let test = TestPlatform::builder().tenant_yaml("hostile", HOSTILE).tenant("retail", "tenants/retail/profile.yaml").build();
    test.upload("hostile", PipelineKind::Batch, "many-memories", artifacts::MANY_MEMORIES);
    test.upload("hostile", PipelineKind::Batch, "floods", artifacts::FLOODS);
    test.upload("hostile", PipelineKind::Batch, "nine-memories", artifacts::NINE_MEMORIES);
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

/// Nine memories of one page each, under a budget of 320 MiB: the bytes
/// fit, the count does not (8 per invocation). The invocation fails as
/// `memory-limit` naming the caps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn more_memories_than_the_cap_fail_as_memory_limit() {
    let test = platform();
    let _host = RunningHost::start(&test, HOST).await;
    let record = beside_the_neighbour(&test, "nine-memories.txt", "x\n", 0).await;
    assert_eq!((record.outcome, record.failure), (Outcome::Failed, Some(FailureKind::MemoryLimit)), "{:?}", record.reason);
    let reason = record.reason.unwrap_or_default();
    assert!(reason.contains("at most 64 core instances, 8 memories and 32 tables"), "{reason}");
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

/// Topics the tenant created on the embedded broker, its dead-letter topic aside.
fn topics_of(test: &TestPlatform, prefix: &str) -> Vec<String> {
    let dir = test.dir.path().join("var/messaging/topics");
    let mut topics: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| entries.flatten().map(|e| e.file_name().to_string_lossy().to_string()).collect())
        .unwrap_or_default();
    topics.retain(|t| t.starts_with(prefix) && !t.ends_with("dead-letter"));
    topics.sort();
    topics
}

/// 236 refused calls in one invocation: the first 100 are written to the
/// guest log, one line counts the rest, the metric counts them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_first_hundred_refusals_of_an_invocation_are_logged() {
    let test = platform();
    let _host = RunningHost::start(&test, HOST).await;
    floods_succeed(&test, "refusals", 1).await;
    let lines = read_log(&test.tenant_dir("hostile").join("logs/batch-guest.log"));
    let messages: Vec<&str> = lines.iter().filter_map(|l| l["message"].as_str()).collect();
    assert_eq!(messages.iter().filter(|m| m.starts_with("counter denied")).count(), 100);
    assert!(messages.contains(&"136 more refused calls beyond the first 100 were not logged"), "{messages:?}");
    let sample = "mysimbdp_denied_calls_total{tenant=\"hostile\",pipeline=\"floods\",kind=\"batch\"}";
    assert_eq!(prometheus_value(&metrics(&test).await, sample), Some(236.0));
}

/// Twenty topics asked for, three times, under a quota of 3: three exist,
/// the rest are refused (`quota-exceeded`, a metric, a guest-log line) and
/// the guest goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn topics_stop_at_the_tenants_quota() {
    let test = platform();
    let _host = RunningHost::start(&test, HOST).await;
    floods_succeed(&test, "topics", 3).await;
    assert_eq!(topics_of(&test, "hostile."), ["hostile.t0", "hostile.t1", "hostile.t2"]);
    let sample = "mysimbdp_quota_exceeded_total{tenant=\"hostile\",quota=\"topics\"}";
    assert_eq!(prometheus_value(&metrics(&test).await, sample), Some(51.0), "17 refused in each of 3 invocations");
}

/// Twenty dead letters under a quota of 10 per invocation: the invocation
/// fails as a (retryable) sink error naming the quota, after the ten it was
/// allowed; each letter's reason header is cut to 1 KiB with the marker.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_beyond_the_quota_fail_the_invocation_and_headers_are_cut() {
    use base64::Engine;
    let test = platform();
    let _host = RunningHost::start(&test, HOST).await;
    let record = beside_the_neighbour(&test, "flood-dead-letters.txt", "dead-letters\n", 0).await;
    assert_eq!((record.outcome, record.failure), (Outcome::Failed, Some(FailureKind::SinkError)), "{:?}", record.reason);
    let reason = record.reason.unwrap_or_default();
    assert!(reason.contains("quotas.dead_letters_per_invocation") && reason.contains("nothing is dropped"), "{reason}");
    let log = test.dir.path().join("var/messaging/topics/hostile.dead-letter/0.log");
    let letters: Vec<serde_json::Value> = std::fs::read_to_string(&log)
        .unwrap_or_else(|e| panic!("{}: {e}", log.display()))
        .lines()
        .map(|line| serde_json::from_str(&line[line.find('{').expect("a framed JSON record")..]).unwrap())
        .collect();
    assert_eq!(letters.len(), 10, "the letters within the quota, no more");
    for letter in &letters {
        let headers = letter["h"].as_array().unwrap();
        let reason = headers.iter().find(|h| h[0] == "error-reason").unwrap_or_else(|| panic!("no reason header: {letter}"));
        let value = base64::engine::general_purpose::STANDARD.decode(reason[1].as_str().unwrap()).unwrap();
        let value = String::from_utf8(value).unwrap();
        assert!(value.len() <= 1024 && value.ends_with("bytes cut]"), "a reason header of {} bytes", value.len());
    }
}

/// The hostile tenant at its worst, all at once: an endless loop, a memory
/// bomb that keeps what it got, several memories kept, and log, counter and
/// collection floods that never stop; each runs until its deadline.
const NOISY: &str = "description: Runs every hostile fixture at once.
constraints: { allowed_types: [txt], max_file_bytes: 1MiB, max_files_per_run: 10, max_staging_bytes: 10MiB }
agreement: { max_concurrent_ingestions: 6, priority: 9 }
sandbox: { fuel_per_invocation: 1000000000000, memory_bytes: 64MiB, deadline_ms: 120000 }
quotas: { collections: 5, counter_series: 150, guest_log_bytes: 4MiB, guest_log_files: 2 }
batch:
  - name: spin
    files: 'spin*'
  - name: many-memories
    files: 'many-memories*'
    sandbox: { memory_bytes: 320MiB }
  - name: floods
    files: 'flood*'
";

const QUICK_SCANS: &str = "batch:\n  scan_interval_ms: 200\n  min_file_age_ms: 100\n  max_parallel_ingestions: 8\n";

/// The hostile files, each of a fixture that runs until its deadline.
const HOSTILE_FILES: [(&str, &str); 6] = [
    ("spin-forever.txt", "spin\n"),
    ("flood-hoard.txt", "hoard\n"),
    ("many-memories-kept.txt", "spin\n"),
    ("flood-log.txt", "log forever\n"),
    ("flood-counters-1.txt", "counters forever\n"),
    ("flood-collections.txt", "collections forever\n"),
];

fn noisy_platform() -> TestPlatform {
    let test = TestPlatform::builder()
        .tenant_yaml("hostile", NOISY)
        .tenant("retail", "tenants/retail/profile.yaml")
        .config(QUICK_SCANS)
        // One CPU slot per tenant: the hostile tenant's guests compute one at a time.
        .pipelines_option("cpu_slots_per_tenant: 1")
        .build();
    test.upload("hostile", PipelineKind::Batch, "spin", artifacts::SPIN_FOREVER);
    test.upload("hostile", PipelineKind::Batch, "many-memories", artifacts::MANY_MEMORIES);
    test.upload("hostile", PipelineKind::Batch, "floods", artifacts::FLOODS);
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    test
}

fn status_of(test: &TestPlatform, tenant: &str) -> mysimbdp::batch::status::TenantStatus {
    let registry = test.config().registry().unwrap();
    mysimbdp::batch::status::tenant_status(registry.require(tenant).unwrap(), 100).unwrap()
}

/// Tenant `hostile` runs every hostile fixture at once (each until its
/// deadline, far beyond the test); while all six run, the neighbour's staged
/// files are ingested, whole. Then all six are still running: none finished
/// (or was stopped) before the neighbour's ingestions did. With one CPU slot
/// per tenant, the hostile tenant's guests computed one at a time, the
/// others waiting for their turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_neighbour_ingests_while_every_hostile_fixture_runs() {
    let test = noisy_platform();
    let host = RunningHost::start(&test, HOST).await;
    let before = memory_of(host.0.id(), "VmRSS");
    for (name, text) in HOSTILE_FILES {
        stage(&test, "hostile", name, text);
    }
    let running = eventually("every hostile file to be running", Duration::from_secs(120), || {
        let status = status_of(&test, "hostile");
        async move { (status.running.len() == HOSTILE_FILES.len()).then_some(status.running) }
    })
    .await;
    let mut names: Vec<&str> = running.iter().map(|f| f.file.as_str()).collect();
    names.sort();
    let mut expected: Vec<&str> = HOSTILE_FILES.iter().map(|(name, _)| *name).collect();
    expected.sort();
    assert_eq!(names, expected);

    for n in 0..3 {
        stage(&test, "retail", &format!("orders-{n}.csv"), &orders_csv(n * 100, 100));
    }
    let done = eventually("the neighbour's three files to be ingested", Duration::from_secs(120), || {
        let records = ingestions(&test, "retail");
        async move { (records.len() == 3).then_some(records) }
    })
    .await;
    for record in &done {
        assert_eq!(record.outcome, Outcome::Ok, "{}: {:?}", record.source, record.reason);
        assert_eq!(record.records_out, 100, "{}", record.source);
    }
    let hostile = status_of(&test, "hostile");
    assert_eq!(hostile.running.len(), HOSTILE_FILES.len(), "still running after the neighbour's files: {:?}", hostile.running);
    assert!(ingestions(&test, "hostile").is_empty(), "no hostile invocation ended while the neighbour's ran");
    // They run their guests, not wait before them: the floods reach their
    // quotas and caps (six guests on one slot: maybe only after the
    // neighbour's files are done), and the host holds the hoard's 48 MiB.
    let reached = [
        "mysimbdp_quota_exceeded_total{tenant=\"hostile\",quota=\"collections\"}",
        "mysimbdp_denied_calls_total{tenant=\"hostile\",pipeline=\"floods\",kind=\"batch\"}",
    ];
    // One hostile guest computes at a time (its one slot) and the others
    // wait for their turn: at some scrape, since a guest in a host call
    // neither computes nor waits for a turn; never two computing at once.
    eventually("the floods at their quotas, one hostile guest computing and the others waiting", Duration::from_secs(120), || {
        let test = &test;
        async move {
            let scraped = metrics(test).await;
            let computing = prometheus_value(&scraped, "mysimbdp_guests_computing{tenant=\"hostile\"}");
            let waiting = prometheus_value(&scraped, "mysimbdp_guests_waiting_for_cpu{tenant=\"hostile\"}");
            assert!(computing.is_none_or(|n| n <= 1.0), "one slot, yet {computing:?} hostile guests compute");
            let quotas = reached.iter().all(|sample| prometheus_value(&scraped, sample).is_some_and(|n| n > 0.0));
            (quotas && computing == Some(1.0) && waiting.is_some_and(|n| n >= 1.0)).then_some(())
        }
    })
    .await;
    assert_eq!(status_of(&test, "hostile").running.len(), HOSTILE_FILES.len(), "all six still run");
    let flooded = read_log(&test.tenant_dir("hostile").join("logs/batch-guest.log"));
    assert!(flooded.iter().any(|l| l["message"].as_str().is_some_and(|m| m.starts_with("llll"))), "the log flood's lines");
    let resident = memory_of(host.0.id(), "VmRSS");
    assert!(resident > before + 48 * MIB, "the host holds {} MiB, {} MiB before", resident / MIB, before / MIB);
}

/// A hostile tenant with one endless loop, running until its deadline.
const SPINNER: &str = "description: Spins.
constraints: { allowed_types: [txt], max_file_bytes: 1MiB, max_files_per_run: 10, max_staging_bytes: 10MiB }
agreement: { max_concurrent_ingestions: 2, priority: 9 }
sandbox: { fuel_per_invocation: 1000000000000, memory_bytes: 64MiB, deadline_ms: 120000 }
batch:
  - name: spin
    files: 'spin*'
";

/// One thread spinning on each core until dropped: a machine where every
/// task waits for a core, whatever its size.
struct BusyCores(Arc<std::sync::atomic::AtomicBool>, Vec<std::thread::JoinHandle<()>>);

impl BusyCores {
    fn start() -> BusyCores {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let threads = (0..cores)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        BusyCores(stop, threads)
    }
}

impl Drop for BusyCores {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
        for thread in self.1.drain(..) {
            let _ = thread.join();
        }
    }
}

/// On a machine whose every core is busy, tenant `hostile`'s endless loop
/// computes ahead of the neighbour's ingestion, so it gives way while the
/// neighbour's file is in flight (`mysimbdp_cpu_gave_way_ticks_total`);
/// with `pipelines.cpu_give_way: false` it never does. The neighbour's
/// file is ingested whole either way, and the loop still runs after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_ahead_gives_way_to_its_neighbour_on_a_busy_machine_unless_turned_off() {
    for give_way in [true, false] {
        let test = TestPlatform::builder()
            .tenant_yaml("hostile", SPINNER)
            .tenant("retail", "tenants/retail/profile.yaml")
            .config(QUICK_SCANS)
            .pipelines_option("cpu_slots_per_tenant: 1")
            .pipelines_option(&format!("cpu_give_way: {give_way}"))
            .build();
        test.upload("hostile", PipelineKind::Batch, "spin", artifacts::SPIN_FOREVER);
        test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
        let _host = RunningHost::start(&test, HOST).await;
        let busy = BusyCores::start();
        stage(&test, "hostile", "spin-forever.txt", "spin\n");
        eventually("the endless loop to be running", Duration::from_secs(120), || {
            let running = status_of(&test, "hostile").running.len();
            async move { (running == 1).then_some(()) }
        })
        .await;
        stage(&test, "retail", "orders-0.csv", &orders_csv(0, 50_000));
        let done = eventually("the neighbour's file to be ingested", Duration::from_secs(120), || {
            let records = ingestions(&test, "retail");
            async move { (!records.is_empty()).then_some(records) }
        })
        .await;
        drop(busy);
        assert_eq!((done[0].outcome, done[0].records_out), (Outcome::Ok, 50_000), "give way {give_way}: {:?}", done[0].reason);
        assert_eq!(status_of(&test, "hostile").running.len(), 1, "give way {give_way}: the loop still runs");
        let scraped = metrics(&test).await;
        let gave_way = prometheus_value(&scraped, "mysimbdp_cpu_gave_way_ticks_total{tenant=\"hostile\"}");
        if give_way {
            assert!(gave_way.is_some_and(|ticks| ticks > 0.0), "the hostile tenant gave way: {gave_way:?}");
        } else {
            assert_eq!(gave_way, None, "turned off, nobody gives way");
        }
    }
}

const OPERATOR_TOKEN: &str = "operator-secret-0123456789";
const RETAIL_TOKEN: &str = "retail-secret-0123456789";

/// `tenant suspend` with no host (under the data directory's lock), kept
/// when the host starts: the suspended tenant's staged file waits while the
/// neighbour's is ingested, and its token is refused. `tenant resume`
/// through the running host: the file is taken at once. Suspended again
/// through the host, without a restart: its token is refused again, and a
/// new file waits again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_tenant_waits_and_is_refused_until_resumed() {
    let test = TestPlatform::builder()
        .tenant("retail", "tenants/retail/profile.yaml")
        .tenant("market", "tenants/retail/profile.yaml")
        .api_token(OPERATOR_TOKEN)
        .tenant_token("retail", RETAIL_TOKEN)
        .config(QUICK_SCANS)
        .build();
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    test.upload("market", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let cli = |args: &[&str]| {
        let output = test.command(HOST).args(args).output().unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout).to_string();
        assert!(output.status.success(), "{args:?}: {stdout}{}", String::from_utf8_lossy(&output.stderr));
        stdout
    };
    assert!(cli(&["tenant", "suspend", "retail"]).contains("tenant retail suspended"));
    let listed = cli(&["tenant", "list"]);
    let state_of =
        |listed: &str, id: &str| listed.lines().find(|l| l.starts_with(id)).map(|l| l.split_whitespace().nth(1).unwrap().to_string());
    assert_eq!(state_of(&listed, "retail").as_deref(), Some("suspended"), "{listed}");
    assert_eq!(state_of(&listed, "market").as_deref(), Some("active"), "{listed}");

    let _host = RunningHost::start(&test, HOST).await;
    let as_retail = || async {
        let answer = client().get(format!("{}/api/tenants", test.api())).bearer_auth(RETAIL_TOKEN).send().await.unwrap();
        (answer.status().as_u16(), answer.text().await.unwrap())
    };
    let (status, text) = as_retail().await;
    assert_eq!(status, 403, "{text}");
    assert!(text.contains("suspended") && text.contains("tenant resume retail"), "{text}");

    stage(&test, "retail", "orders-0.csv", &orders_csv(0, 100));
    stage(&test, "market", "orders-0.csv", &orders_csv(0, 100));
    eventually("market's file to be ingested", Duration::from_secs(60), || {
        let records = ingestions(&test, "market");
        async move { (records.len() == 1).then_some(()) }
    })
    .await;
    // Staged before market's, so every scan that took market's saw it too.
    assert!(ingestions(&test, "retail").is_empty(), "a suspended tenant's file was ingested");
    let waiting = status_of(&test, "retail");
    assert_eq!(waiting.staged.iter().map(|f| f.file.as_str()).collect::<Vec<_>>(), ["orders-0.csv"], "{waiting:?}");

    assert!(cli(&["tenant", "resume", "retail"]).contains("tenant retail resumed"));
    let records = eventually("retail's file to be ingested after the resumption", Duration::from_secs(60), || {
        let records = ingestions(&test, "retail");
        async move { (records.len() == 1).then_some(records) }
    })
    .await;
    assert_eq!((records[0].outcome, records[0].records_out), (Outcome::Ok, 100), "{:?}", records[0].reason);
    assert_eq!(as_retail().await.0, 200);

    assert!(cli(&["tenant", "suspend", "retail"]).contains("tenant retail suspended"));
    assert_eq!(as_retail().await.0, 403, "suspended through the running host");
    stage(&test, "retail", "orders-1.csv", &orders_csv(100, 100));
    stage(&test, "market", "orders-1.csv", &orders_csv(100, 100));
    eventually("market's second file to be ingested", Duration::from_secs(60), || {
        let records = ingestions(&test, "market");
        async move { (records.len() == 2).then_some(()) }
    })
    .await;
    assert_eq!(ingestions(&test, "retail").len(), 1, "the file staged while suspended waits");
    let metrics = client().get(format!("{}/metrics", test.api())).bearer_auth(OPERATOR_TOKEN).send().await.unwrap().text().await.unwrap();
    assert_eq!(prometheus_value(&metrics, "mysimbdp_tenant_suspended{tenant=\"retail\"}"), Some(1.0), "{metrics}");
    assert_eq!(prometheus_value(&metrics, "mysimbdp_tenant_suspended{tenant=\"market\"}"), Some(0.0));
}

/// A suspension stops the tenant's stream instances (after their batch in
/// progress), no start brings them back meanwhile, and the resumption starts
/// as many as it stopped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_suspended_tenants_stream_stops_and_starts_again_on_resume() {
    let test = TestPlatform::builder().tenant("sensors", "tenants/sensors/profile.yaml").build();
    test.upload("sensors", PipelineKind::Stream, "live", artifacts::SENSOR_STREAM);
    let _host = RunningHost::start(&test, HOST).await;
    let post = |path: &'static str, body: serde_json::Value| {
        let url = format!("{}{path}", test.api());
        async move {
            let answer = client().post(url).json(&body).send().await.unwrap();
            (answer.status().as_u16(), answer.json::<serde_json::Value>().await.unwrap())
        }
    };
    let instances = || async {
        let answer = client().get(format!("{}/api/stream/status?tenant=sensors", test.api())).send().await.unwrap();
        let status: serde_json::Value = answer.json().await.unwrap();
        status[0]["instances"].as_array().map_or(0, Vec::len)
    };
    let (status, started) = post("/api/stream/start", serde_json::json!({ "tenant": "sensors", "instances": 2 })).await;
    assert_eq!(status, 200, "{started}");
    assert_eq!(instances().await, 2);

    let (status, suspended) = post("/api/tenant/suspend", serde_json::json!({ "tenant": "sensors" })).await;
    assert_eq!((status, suspended["stream_instances"].as_u64()), (200, Some(2)), "{suspended}");
    assert_eq!(instances().await, 0, "stopped by the suspension");
    let (status, refused) = post("/api/stream/start", serde_json::json!({ "tenant": "sensors" })).await;
    assert_eq!(status, 400, "{refused}");
    assert!(refused["error"].as_str().unwrap().contains("suspended by the platform operator"), "{refused}");
    assert_eq!(instances().await, 0);

    let (status, resumed) = post("/api/tenant/resume", serde_json::json!({ "tenant": "sensors" })).await;
    assert_eq!((status, resumed["stream_instances"].as_u64()), (200, Some(2)), "{resumed}");
    assert_eq!(instances().await, 2, "started again by the resumption");
}
