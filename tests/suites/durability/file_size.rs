//! The closest real failure to a full disk where mounting is refused: a
//! file-size limit (RLIMIT_FSIZE, set on the running process with
//! `prlimit`) makes every write past it fail with EFBIG, which the host
//! takes as it takes ENOSPC (it ignores SIGXFSZ). These run on every
//! machine, whether or not `MYSIMBDP_NO_MOUNT=1` leaves the tmpfs tests out.
//!
//! Unlike a small tmpfs under one directory, the limit holds for every file
//! the process writes, as a whole full disk would: the platform log cannot
//! take the line that says a write is failing either, so while it holds
//! these tests read the health route and the metric, and the log only once
//! it is lifted.

use super::*;

/// The soft file-size limit of process `pid`, in bytes (`None`: no limit).
fn limit_file_size(pid: u32, bytes: Option<u64>) {
    let soft = bytes.map_or("unlimited".to_string(), |b| b.to_string());
    let output = std::process::Command::new("prlimit")
        .arg("--pid")
        .arg(pid.to_string())
        .arg(format!("--fsize={soft}:unlimited"))
        .output()
        .expect("prlimit (util-linux) runs");
    assert!(output.status.success(), "prlimit --fsize={soft} on {pid}: {}", String::from_utf8_lossy(&output.stderr));
}

/// With the manifest at the limit, a claim cannot be recorded: the tenant
/// takes no file (they wait in staging), the health route and the metric
/// say why, and once the limit is lifted every file is ingested once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_size_limit_on_the_manifest_stops_claims_until_it_is_lifted() {
    let test = retail();
    let host = RunningHost::start(&test, HOST).await;
    first_file_done(&test).await;

    // At most the manifest's size, so it cannot grow; and, when the
    // platform log is the smaller, a little above it, so that its next line
    // is cut off in the middle (and must be undone, or the line after it
    // would merge with the part written).
    let manifest_bytes = std::fs::metadata(test.dir.path().join("var/manifests/retail.jsonl")).unwrap().len();
    let log_bytes = std::fs::metadata(test.dir.path().join("var/logs/platform.log")).unwrap().len();
    limit_file_size(host.0.id(), Some(manifest_bytes.min(log_bytes + 20)));
    let mut staged = vec!["first.csv".to_string()];
    stage(&test, "more.csv", 50, 1000);
    staged.push("more.csv".into());
    let health = degraded(&test, "the host to report the manifest write failing").await;
    assert_eq!(health["writes_failing"][0]["what"], "manifest", "{health}");
    assert!(health["writes_failing"][0]["error"].as_str().unwrap().contains("File too large"), "{health}");
    assert_eq!(writes_failing(&test, "manifest").await, Some(1.0));
    stage(&test, "after-stop.csv", 30, 900_000);
    staged.push("after-stop.csv".into());
    tokio::time::sleep(Duration::from_secs(2)).await;
    for name in ["more.csv", "after-stop.csv"] {
        assert!(test.tenant_dir("retail").join("staging").join(name).exists(), "{name} waits in staging");
        assert_eq!(state_of(&test, name), None, "{name} is not claimed");
    }
    assert!(test.tenant_dir("retail").join("failed").read_dir().unwrap().next().is_none(), "nothing failed for it");

    limit_file_size(host.0.id(), None);
    all_done(&test, &staged, "every staged file to be done once the limit is lifted", Duration::from_secs(120)).await;
    assert_eq!(documents(&test).await, 100 + 50 + 30, "every row of every file, once");
    assert_eq!(get_json(&test, "/api/health").await["status"], "ok");
    assert_eq!(writes_failing(&test, "manifest").await, Some(0.0));
    assert!(platform_log(&test).iter().any(|l| l["message"] == "writes succeed again: claiming resumed" && l["tenant"] == "retail"));
    let text = std::fs::read_to_string(test.dir.path().join("var/logs/platform.log")).unwrap();
    for line in text.lines() {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "a whole JSON line, not one merged with a cut one: {line}");
    }
}

/// With the message log's partitions at the limit, a publish is refused
/// (not acknowledged), the log keeps only whole records, and publishing
/// works again once the limit is lifted; every acknowledged message is there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_size_limit_on_the_embedded_log_refuses_publishes_and_keeps_it_whole() {
    let test = retail();
    let host = RunningHost::start(&test, HOST).await;
    assert!(produce(&test, 0).await.status().is_success());
    let largest = walk(&test.dir.path().join("var/messaging")).into_iter().map(|f| f.metadata().unwrap().len()).max().unwrap();
    limit_file_size(host.0.id(), Some(largest));
    let (meanwhile, refused) = publish_until_refused(&test, "at the limit").await;
    assert!(refused.contains("File too large"), "{refused}");
    limit_file_size(host.0.id(), None);
    assert!(produce(&test, 100_000).await.status().is_success(), "publishing works again");
    drop(host);
    assert_the_log_holds(&test, 200 + meanwhile + 200).await;
}

/// `stage put` under a 1 MiB file-size limit fails saying so, and leaves no
/// half file that the host could take; a file below the limit is staged.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_size_limit_fails_stage_put_and_leaves_no_half_file() {
    let test = retail();
    let staging = test.tenant_dir("retail").join("staging");
    let stage_put = |file: &Path| {
        std::process::Command::new("prlimit")
            .arg("--fsize=1048576")
            .arg("--")
            .arg(HOST)
            .arg("--config")
            .arg(&test.config_file)
            .args(["stage", "put", "--tenant", "retail"])
            .arg(file)
            .output()
            .unwrap()
    };
    a_large_file_is_not_staged_and_a_small_one_is(&test, &staging, stage_put, "File too large");
    assert!(staging.join("small.csv").exists());
}

fn walk(dir: &Path) -> Vec<std::fs::DirEntry> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().map(Result::unwrap) {
        if entry.file_type().unwrap().is_dir() {
            files.extend(walk(&entry.path()));
        } else {
            files.push(entry);
        }
    }
    files
}
