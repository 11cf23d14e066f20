//! Pipeline upload and the compile cache, against the real CLI and host
//! processes (`mysimbdp-test-host`) and components built from this
//! repository:
//! - an upload over `pipelines.max_upload_bytes` is refused naming the limit,
//!   before anything is kept;
//! - a compile bomb is refused naming the CPU-time or the memory limit of the
//!   compiler's child process, while the host goes on ingesting a neighbour's
//!   files;
//! - the artifact compiled at upload is the one ingestions load (they do not
//!   compile again); a tampered or truncated cache file is refused and the
//!   component compiled again; a `vN.json` whose sha256 was changed to
//!   another component's does not load that component's artifact;
//! - a version that does not compile is not compiled again for each file.

use mysimbdp::pipelines::PipelineKind;
use mysimbdp_tests::{RunningHost, TestPlatform, artifacts, compile_bomb, eventually, orders_csv, profile_with};
use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

const HOST: &str = env!("CARGO_BIN_EXE_mysimbdp-test-host");
const QUICK_SCANS: &str = "batch:\n  scan_interval_ms: 200\n  min_file_age_ms: 100\n";

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// `mysimbdp pipeline upload` of `file` as tenant's batch pipeline `orders`.
fn upload_with_cli(test: &TestPlatform, tenant: &str, file: &Path) -> Output {
    test.command(HOST)
        .args(["pipeline", "upload", "--tenant", tenant, "--kind", "batch", "--name", "orders"])
        .arg(file)
        .output()
        .expect("run the CLI")
}

/// `mysimbdp ingest` of `file` (no host running: the CLI loads the pipeline itself).
fn ingest_with_cli(test: &TestPlatform, tenant: &str, file: &Path) -> Output {
    test.command(HOST).args(["ingest", "--tenant", tenant]).arg(file).output().expect("run the CLI")
}

fn versions_dir(test: &TestPlatform, tenant: &str) -> PathBuf {
    test.tenant_dir(tenant).join("pipelines/batch/orders")
}

fn stored_versions(test: &TestPlatform, tenant: &str) -> usize {
    std::fs::read_dir(versions_dir(test, tenant))
        .map(|entries| entries.flatten().filter(|e| e.path().extension().is_some_and(|x| x == "json")).count())
        .unwrap_or(0)
}

/// The compiled artifacts in the platform's cache.
fn artifacts_in_cache(test: &TestPlatform) -> Vec<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir(test.dir.path().join("var/compiled"))
        .map(|entries| entries.flatten().map(|e| e.path()).filter(|p| p.extension().is_some_and(|x| x == "cwasm")).collect())
        .unwrap_or_default();
    found.sort();
    found
}

fn write_orders(test: &TestPlatform, name: &str, rows: usize) -> PathBuf {
    let file = test.dir.path().join(name);
    std::fs::write(&file, orders_csv(1, rows)).unwrap();
    file
}

#[test]
fn an_upload_over_the_size_cap_is_refused_naming_the_limit_and_nothing_is_kept() {
    let test = TestPlatform::builder().tenant("retail", "tenants/retail/profile.yaml").pipelines_option("max_upload_bytes: 64KiB").build();
    let size = std::fs::metadata(artifacts::RETAIL_ORDERS).unwrap().len();
    assert!(size > 64 * 1024, "the guest ({size} bytes) is over the cap of this test");
    let output = upload_with_cli(&test, "retail", Path::new(artifacts::RETAIL_ORDERS));
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("pipelines.max_upload_bytes: 64KiB") && error.contains("retail_orders.wasm"), "{error}");
    assert!(!error.contains("Compiling"), "refused before compiling: {error}");
    assert_eq!(stored_versions(&test, "retail"), 0);
    assert!(artifacts_in_cache(&test).is_empty());
}

/// A component that takes Cranelift far more than a second of CPU time is
/// refused naming `pipelines.compile_cpu_seconds`; meanwhile the running
/// host ingests the neighbour's files, and answers its health check after.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_compile_bomb_is_refused_naming_the_cpu_limit_while_the_host_serves_the_neighbour() {
    let test = TestPlatform::builder()
        .tenant("retail", "tenants/retail/profile.yaml")
        .tenant("shop", "tenants/retail/profile.yaml")
        .config(QUICK_SCANS)
        .build();
    // The neighbour's component under the default limit (its compilation
    // took more than a second of CPU time beside the fuzz suite in one run),
    // then the 1 s limit for the bomb.
    test.upload("shop", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let config = std::fs::read_to_string(&test.config_file).unwrap();
    let limited = config.replacen("pipelines:\n", "pipelines:\n  compile_cpu_seconds: 1\n", 1);
    assert_ne!(config, limited, "the test's config has a pipelines section");
    std::fs::write(&test.config_file, limited).unwrap();
    let bomb = test.dir.path().join("bomb.wasm");
    std::fs::write(&bomb, compile_bomb(BOMB.0, BOMB.1, BOMB.2)).unwrap();
    let _host = RunningHost::start(&test, HOST).await;

    let uploading = {
        let (config, bomb) = (test.config_file.clone(), bomb.clone());
        std::thread::spawn(move || {
            std::process::Command::new(HOST)
                .arg("--config")
                .arg(config)
                .args(["pipeline", "upload", "--tenant", "retail", "--kind", "batch", "--name", "orders"])
                .arg(bomb)
                .output()
                .unwrap()
        })
    };
    let staging = test.tenant_dir("shop").join("staging");
    for i in 0..3 {
        std::fs::write(staging.join(format!(".orders-{i}.part")), orders_csv(1, 200)).unwrap();
        std::fs::rename(staging.join(format!(".orders-{i}.part")), staging.join(format!("orders-{i}.csv"))).unwrap();
    }
    let archive = test.tenant_dir("shop").join("archive");
    eventually("the neighbour's three files to be ingested", Duration::from_secs(120), || {
        let done = (0..3).all(|i| archive.join(format!("orders-{i}.csv")).exists());
        async move { done.then_some(()) }
    })
    .await;
    let output = tokio::task::spawn_blocking(move || uploading.join().unwrap()).await.unwrap();
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("more than 1 s of CPU time") && error.contains("pipelines.compile_cpu_seconds"), "{error}");
    assert!(error.contains("tenant `retail`"), "{error}");
    assert_eq!(stored_versions(&test, "retail"), 0, "nothing stored");
    let health = reqwest::get(format!("{}/api/health", test.api())).await.unwrap();
    assert!(health.status().is_success());
}

/// The same bomb under a CPU limit it fits in but a memory limit it does not.
#[test]
fn a_compile_bomb_is_refused_naming_the_memory_limit() {
    let test = TestPlatform::builder()
        .tenant("retail", "tenants/retail/profile.yaml")
        .pipelines_option("compile_cpu_seconds: 600")
        .pipelines_option("compile_memory_bytes: 256MiB")
        .build();
    let bomb = test.dir.path().join("bomb.wasm");
    std::fs::write(&bomb, compile_bomb(BOMB.0, BOMB.1, BOMB.2)).unwrap();
    let output = upload_with_cli(&test, "retail", &bomb);
    assert!(!output.status.success());
    let error = stderr(&output);
    assert!(error.contains("more than 256MiB of memory") && error.contains("pipelines.compile_memory_bytes"), "{error}");
    assert_eq!(stored_versions(&test, "retail"), 0);
}

/// The bomb's shape: functions, locals, blocks.
const BOMB: (u32, u32, u32) = (1, 1000, 20000);

/// Upload compiles once; ingestions load that artifact. A cache file changed
/// by one byte, or cut short, is refused (its MAC fails) and compiled again:
/// the ingestion still succeeds and the file is written anew, byte for byte
/// what the upload wrote.
#[test]
fn ingestions_load_the_artifact_of_the_upload_and_a_tampered_one_is_compiled_again() {
    let test = TestPlatform::builder().tenant("retail", "tenants/retail/profile.yaml").build();
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let cached = artifacts_in_cache(&test);
    assert_eq!(cached.len(), 1, "the upload kept its artifact: {cached:?}");
    let original = std::fs::read(&cached[0]).unwrap();

    let orders = write_orders(&test, "orders.csv", 50);
    let output = ingest_with_cli(&test, "retail", &orders);
    assert!(output.status.success(), "{}", stderr(&output));
    assert!(!stderr(&output).contains("Compiling the pipeline"), "the upload's artifact was loaded: {}", stderr(&output));

    let mut flipped = original.clone();
    let middle = flipped.len() / 2;
    flipped[middle] ^= 0x40;
    for (how, bytes) in [("one byte changed", flipped), ("cut short", original[..original.len() - 100].to_vec())] {
        std::fs::write(&cached[0], &bytes).unwrap();
        let orders = write_orders(&test, &format!("orders-{}.csv", how.len()), 50);
        let output = ingest_with_cli(&test, "retail", &orders);
        let said = stderr(&output);
        assert!(output.status.success(), "{how}: {said}");
        assert!(said.contains("Compiled pipeline refused") && said.contains("Compiling the pipeline"), "{how}: {said}");
        assert_eq!(std::fs::read(&cached[0]).unwrap(), original, "{how}: compiled and written again");
    }
}

/// Tenant `retail`'s `v1.json` is changed to claim the sha256 of tenant
/// `sensors`' component, whose artifact is in the cache. The host hashes the
/// bytes itself: retail's own component runs (its orders are indexed), the
/// mismatch is reported, and the other tenant's artifact is not loaded.
#[test]
fn a_version_record_claiming_another_components_hash_does_not_load_its_artifact() {
    let test = TestPlatform::builder()
        .tenant("retail", "tenants/retail/profile.yaml")
        // The engine settings of retail's pipeline: their artifacts would be interchangeable.
        .tenant_yaml("sensors", &profile_with("tenants/sensors/profile.yaml", &[("sandbox.max_wasm_stack_bytes", "512KiB")]))
        .build();
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let theirs = test.upload("sensors", PipelineKind::Batch, "readings", artifacts::SENSOR_READINGS);
    let record_file = versions_dir(&test, "retail").join("v1.json");
    let mut record: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&record_file).unwrap()).unwrap();
    record["sha256"] = theirs.sha256.clone().into();
    std::fs::write(&record_file, serde_json::to_vec_pretty(&record).unwrap()).unwrap();

    let orders = write_orders(&test, "orders.csv", 50);
    let output = test.command(HOST).args(["--json", "ingest", "--tenant", "retail"]).arg(&orders).output().unwrap();
    let said = stderr(&output);
    assert!(output.status.success(), "{said}");
    assert!(said.contains("does not match its component"), "{said}");
    assert!(!said.contains("Compiling the pipeline"), "retail's own artifact, from its upload, was loaded: {said}");
    let ingestion: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(ingestion["records_out"], 50, "retail's orders pipeline ran: {ingestion}");
    assert_eq!(ingestion["records_rejected"], 0, "{ingestion}");
}

/// A version whose component file no longer compiles (replaced after its
/// upload, its artifact gone) fails its first file with the compiler's
/// reason; the next files fail at once, saying it is not compiled again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_version_that_does_not_compile_is_not_compiled_again_for_each_file() {
    let test = TestPlatform::builder().tenant("retail", "tenants/retail/profile.yaml").config(QUICK_SCANS).build();
    let version = test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    std::fs::write(&version.path, b"\0asm\x0d\0\x01\0 not a component any more").unwrap();
    for artifact in artifacts_in_cache(&test) {
        std::fs::remove_file(artifact).unwrap();
    }
    let _host = RunningHost::start(&test, HOST).await;
    let staging = test.tenant_dir("retail").join("staging");
    let failed = test.tenant_dir("retail").join("failed");
    for i in 0..3 {
        std::fs::write(staging.join(format!(".orders-{i}.part")), orders_csv(1, 20)).unwrap();
        std::fs::rename(staging.join(format!(".orders-{i}.part")), staging.join(format!("orders-{i}.csv"))).unwrap();
        let reason_file = failed.join(format!("orders-{i}.csv.reason.json"));
        let reason = eventually("the file to fail", Duration::from_secs(60), || {
            let reason = std::fs::read_to_string(&reason_file).ok();
            async move { reason }
        })
        .await;
        assert!(reason.contains("not a valid WebAssembly component"), "orders-{i}: {reason}");
        let marked = reason.contains("not tried again");
        assert_eq!(marked, i > 0, "orders-{i}: compiled once, then the mark: {reason}");
    }
}
