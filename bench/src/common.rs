//! What the benchmarks share: throw-away platforms, the built guests, the
//! data and results directories, statistics and the machine description.

use anyhow::Context;
use mysimbdp::config::PlatformConfig;
use mysimbdp::pipelines::{self, PipelineKind, PipelineVersion};
use mysimbdp::platform::Platform;
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("bench/ is in the repository").to_path_buf()
}

/// Generated inputs, results and run directories (git-ignored).
pub fn data_dir() -> PathBuf {
    repo_root().join("bench/data")
}

/// A component built by `scripts/build-guests.sh`, e.g. `retail_orders`.
pub fn guest(name: &str) -> anyhow::Result<PathBuf> {
    let path = repo_root().join("target/guests/wasm32-wasip2/release").join(format!("{name}.wasm"));
    anyhow::ensure!(path.exists(), "{} is missing: run scripts/build-guests.sh (or scripts/bench.sh)", path.display());
    Ok(path)
}

/// An input under bench/data, with the command that generates it when missing.
pub fn input(name: &str, generate: &str) -> anyhow::Result<PathBuf> {
    let path = data_dir().join(name);
    anyhow::ensure!(path.exists(), "{} is missing: generate it with `{generate}` (scripts/bench.sh does)", path.display());
    Ok(path)
}

/// MB as in `gen-data.py --mb`: 10^6 bytes.
pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

pub fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

/// Median, least and greatest of a variant's runs, and the spread
/// (greatest - least) / median: what a round-to-round difference is worth.
pub fn spread(values: &[f64]) -> Value {
    let least = values.iter().copied().fold(f64::INFINITY, f64::min);
    let greatest = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let med = median(values);
    json!({ "median": med, "min": least, "max": greatest, "spread": (greatest - least) / med, "runs": values })
}

/// `median (min-max, spread %)` of a variant's runs, for the summaries.
pub fn describe(values: &[f64]) -> String {
    let s = spread(values);
    let f = |k: &str| s[k].as_f64().unwrap_or(f64::NAN);
    format!("{:.1} ({:.1}-{:.1}, spread {:.0}%)", f("median"), f("min"), f("max"), f("spread") * 100.0)
}

/// The peak resident memory of this process so far (`VmHWM`), in MiB: the
/// host runs in the bench process, so this is the host's and the harness's.
pub fn peak_rss_mib() -> f64 {
    status_kib("VmHWM:") as f64 / 1024.0
}

/// The resident memory of this process now (`VmRSS`), in MiB.
pub fn rss_mib() -> f64 {
    status_kib("VmRSS:") as f64 / 1024.0
}

fn status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

/// Nearest-rank percentile (`p` in 0..=100) of unsorted values.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return f64::NAN;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil().max(1.0) as usize;
    sorted[rank.min(sorted.len()) - 1]
}

/// A tenant id no earlier run used, for the shared Kafka and OpenSearch
/// (ids are at most 32 characters; without `_`, as the tests', so their
/// topics are `<id>.<topic>`).
pub fn unique_tenant(base: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock after 1970").as_secs() % 100_000_000;
    format!("{base}{stamp}x{n}")
}

/// nproc, memory, CPU model and load, so numbers can be read in context.
pub fn machine() -> Value {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, m)| m.trim().to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kib: u64 = meminfo
        .lines()
        .find(|l| l.starts_with("MemTotal:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    json!({
        "nproc": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": (mem_kib as f64 / 1024.0 / 1024.0 * 10.0).round() / 10.0,
        "cpu_model": model,
        "kernel": kernel.trim(),
        "loadavg_at_start": load.split_whitespace().take(3).collect::<Vec<_>>().join(" "),
    })
}

fn git(args: &[&str]) -> String {
    std::process::Command::new("git")
        .args(args)
        .current_dir(repo_root())
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

/// Writes `bench/data/results/<name>.json` with the machine and the commit.
pub fn write_result(name: &str, mut result: Value) -> anyhow::Result<PathBuf> {
    let dir = data_dir().join("results");
    std::fs::create_dir_all(&dir)?;
    result["benchmark"] = json!(name);
    result["finished_at"] = json!(chrono::Utc::now().to_rfc3339());
    result["machine"] = machine();
    // The host runs in this process: its peak resident memory over the benchmark.
    result["process_peak_rss_mib"] = json!(peak_rss_mib());
    result["commit"] = json!(git(&["rev-parse", "--short", "HEAD"]));
    result["worktree_dirty"] = json!(!git(&["status", "--porcelain", "--untracked-files=no"]).is_empty());
    let path = dir.join(format!("{name}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&result)?)?;
    println!("\npeak resident memory of the bench process (host included): {:.0} MiB", peak_rss_mib());
    println!("results: {}", path.display());
    Ok(path)
}

/// A repository profile with fields replaced, e.g.
/// `("constraints.max_files_per_run", "2000")` (values are YAML), so the
/// benchmarks follow the real profiles and change only what they must.
pub fn profile_with(profile: &str, changes: &[(&str, &str)]) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(repo_root().join(profile)).with_context(|| format!("cannot read {profile}"))?;
    let mut value: serde_norway::Value = serde_norway::from_str(&text)?;
    for (key, new) in changes {
        let parts: Vec<&str> = key.split('.').collect();
        let mut cursor = &mut value;
        for part in &parts[..parts.len() - 1] {
            cursor = cursor.get_mut(*part).with_context(|| format!("{profile} has no `{key}`"))?;
        }
        cursor[*parts.last().expect("non-empty key")] = serde_norway::from_str(new)?;
    }
    Ok(serde_norway::to_string(&value)?)
}

/// A platform in its own directory under bench/data/runs (same file system
/// as the inputs, so they can be hard-linked into staging), removed on drop.
pub struct BenchPlatform {
    pub dir: tempfile::TempDir,
    config_file: PathBuf,
}

#[derive(Default)]
pub struct Builder {
    tenants: Vec<(String, String)>,
    config: String,
}

impl Builder {
    /// Registers tenant `id` with a profile given as YAML text.
    pub fn tenant(mut self, id: &str, profile: String) -> Self {
        self.tenants.push((id.to_string(), profile));
        self
    }

    /// Appends YAML to the platform configuration.
    pub fn config(mut self, yaml: &str) -> Self {
        self.config.push_str(yaml);
        self.config.push('\n');
        self
    }

    pub fn build(self, name: &str) -> anyhow::Result<BenchPlatform> {
        let runs = data_dir().join("runs");
        std::fs::create_dir_all(&runs)?;
        let dir = tempfile::Builder::new().prefix(&format!("{name}-")).tempdir_in(&runs)?;
        let tenants_dir = dir.path().join("tenants");
        let mut registry = String::from("tenants:\n");
        for (id, profile) in &self.tenants {
            std::fs::create_dir_all(tenants_dir.join(id))?;
            std::fs::write(tenants_dir.join(id).join("profile.yaml"), profile)?;
            registry.push_str(&format!("  - id: {id}\n    profile: {id}/profile.yaml\n"));
        }
        std::fs::write(tenants_dir.join("tenants.yaml"), registry)?;
        // The API never listens here; the port only has to be valid.
        let config = format!("tenants: tenants/tenants.yaml\ndata_dir: var\napi:\n  listen: 127.0.0.1:0\n{}", self.config);
        let config_file = dir.path().join("mysimbdp.yaml");
        std::fs::write(&config_file, config)?;
        Ok(BenchPlatform { dir, config_file })
    }
}

impl BenchPlatform {
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub fn config(&self) -> anyhow::Result<PlatformConfig> {
        Ok(PlatformConfig::load(Some(&self.config_file))?)
    }

    pub async fn open(&self) -> anyhow::Result<Arc<Platform>> {
        Platform::open(self.config()?).await
    }

    /// Checks and stores `wasm` as the next version of a pipeline, as
    /// `mysimbdp pipeline upload` does.
    pub fn upload(&self, tenant: &str, kind: PipelineKind, name: &str, wasm: &Path) -> anyhow::Result<PipelineVersion> {
        let registry = self.config()?.registry()?;
        let tenant = registry.require(tenant)?;
        let name = pipelines::resolve_name(tenant, kind, Some(name))?;
        let bytes = std::fs::read(wasm).with_context(|| format!("cannot read {}", wasm.display()))?;
        mysimbdp::platform::PipelineUpload::new(&self.config()?)?
            .upload(tenant, kind, &name, &bytes)
            .with_context(|| format!("{} rejected", wasm.display()))
    }

    /// A copy of this platform's files (tenants, configuration, data
    /// directory) in a directory of its own, removed on drop: the same
    /// uploaded and compiled pipelines, nothing shared afterwards.
    pub fn fresh_copy(&self, name: &str) -> anyhow::Result<BenchPlatform> {
        let dir = tempfile::Builder::new().prefix(&format!("{name}-")).tempdir_in(data_dir().join("runs"))?;
        copy_tree(self.dir.path(), dir.path())?;
        let config_file = dir.path().join(self.config_file.file_name().expect("the config file has a name"));
        Ok(BenchPlatform { dir, config_file })
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("var")
    }

    pub fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.dir.path().join("tenants").join(tenant)
    }
}

fn copy_tree(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let target = to.join(entry.file_name());
        if entry.file_type()?.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else {
            std::fs::copy(entry.path(), &target).with_context(|| format!("cannot copy {}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// Compiles (or loads from the disk cache) the active version of a tenant's
/// pipeline, so that the timed part never includes Cranelift.
pub async fn warm(platform: &Platform, tenant: &str, kind: PipelineKind, name: &str) -> anyhow::Result<()> {
    platform.load_pipeline(tenant, kind, name).await
}

/// The `"type":"ingestion"` records of a tenant's batch or stream log.
pub fn ingestion_records(tenant_dir: &Path, kind: PipelineKind) -> Vec<mysimbdp::telemetry::IngestionRecord> {
    let path = tenant_dir.join("logs").join(format!("{kind}.log"));
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .filter(|line| line["type"] == "ingestion")
        .filter_map(|line| serde_json::from_value(line).ok())
        .collect()
}
