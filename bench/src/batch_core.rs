//! `batch-core`: what the sandbox costs on the batch path. One large CSV
//! goes through the retail-orders component three ways:
//!
//! - `wasm-null`: the host in-process (`ingest_path`) with the null store,
//!   so only the sandbox, the host calls and the guest's work remain;
//! - `wasm-embedded`: the same into the embedded (tantivy) store, fresh each run;
//! - `native`: the same transform compiled natively, doing the same work
//!   minus the sandbox: SHA-256 of the file (the ids need it), CSV parsing,
//!   the order documents, their JSON text and ids, batches of 1000.

use crate::ablation::{EngineSettings, Replica};
use crate::common::{self, BenchPlatform, mb, median, secs};
use clap::Args as ClapArgs;
use mysimbdp::batch::identify;
use mysimbdp::pipelines::PipelineKind;
use mysimbdp::telemetry::{IngestionRecord, Outcome};
use mysimbdp_guest::{CsvReader, DocumentBatch, ReadSource, RowIds};
use retail_orders::{Columns, Settings, order_document};
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

const TENANT: &str = "retail";
const PIPELINE: &str = "orders";
const GENERATE: &str = "python3 scripts/gen-data.py orders --mb 110 --seed 1 > bench/data/orders-110mb.csv";

#[derive(ClapArgs)]
pub struct Args {
    /// Timed runs of each variant (after one untimed warm-up of the wasm path).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The CSV to ingest (default bench/data/orders-110mb.csv).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Only these variants (sha256, wasm-null, wasm-embedded, native, replicas or one replica by name); all by
    /// default. `sha256` is the file's hash alone, which every variant also computes.
    #[arg(long, value_delimiter = ',')]
    only: Vec<String>,
}

/// One timed run.
pub(crate) struct Run {
    pub(crate) seconds: f64,
    pub(crate) docs: u64,
    rejected: u64,
    fuel: u64,
    peak_memory: u64,
}

impl Run {
    fn from_record(record: &IngestionRecord, took: Duration) -> anyhow::Result<Run> {
        anyhow::ensure!(
            record.outcome == Outcome::Ok,
            "the ingestion failed: {:?} {}",
            record.failure,
            record.reason.clone().unwrap_or_default()
        );
        Ok(Run {
            seconds: secs(took),
            docs: record.records_out,
            rejected: record.records_rejected,
            fuel: record.fuel_consumed,
            peak_memory: record.peak_memory_bytes,
        })
    }
}

/// The retail profile as shipped, its id and parameters included.
fn profile() -> anyhow::Result<String> {
    common::profile_with("tenants/retail/profile.yaml", &[])
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let file = match &args.file {
        Some(file) => file.clone(),
        None => common::input("orders-110mb.csv", GENERATE)?,
    };
    let bytes = std::fs::metadata(&file)?.len();
    let known: Vec<&str> =
        ["sha256", "wasm-null", "wasm-embedded", "native", "replicas"].into_iter().chain(REPLICAS.iter().map(|s| s.name())).collect();
    if let Some(unknown) = args.only.iter().find(|o| !known.contains(&o.as_str())) {
        anyhow::bail!("--only: no variant `{unknown}` (variants: {})", known.join(", "));
    }
    let wanted = |name: &str| args.only.is_empty() || args.only.iter().any(|o| o == name);
    let wasm = common::guest("retail_orders")?;
    println!("batch-core: {} ({:.1} MB), {} runs per variant, interleaved", file.display(), mb(bytes), args.runs);

    // The null-sink platform; its warm-up fills the disk cache of compiled
    // components that the fresh embedded-store platforms reuse.
    let null = BenchPlatform::builder().tenant(TENANT, profile()?).config("coredms:\n  kind: null").build("batch-core-null")?;
    null.upload(TENANT, PipelineKind::Batch, PIPELINE, &wasm)?;
    let platform = null.open().await?;
    let started = Instant::now();
    let warm = Run::from_record(&platform.ingest_path(TENANT, Some(PIPELINE), &file, None).await?, started.elapsed())?;
    println!("  warm-up (compiles the component): {:.2} s", warm.seconds);
    // `replicas` runs them all; each can also be named alone.
    let replicas = REPLICAS
        .iter()
        .filter(|s| wanted("replicas") || wanted(s.name()))
        .map(|&s| Replica::new(s, &wasm, STACK))
        .collect::<anyhow::Result<Vec<_>>>()?;

    // Round by round, so the machine's drift hits every variant alike.
    let mut hash_runs = Vec::new();
    let mut timings: BTreeMap<&'static str, Vec<Run>> = BTreeMap::new();
    for round in 1..=args.runs {
        eprintln!("  round {round}/{}", args.runs);
        // Every variant hashes the file (ingest_path identifies it; the ids need
        // the checksum): measured alone to show its share.
        if wanted("sha256") {
            let started = Instant::now();
            identify(&file).await?;
            hash_runs.push(secs(started.elapsed()));
        }
        if wanted("wasm-null") {
            let started = Instant::now();
            let record = platform.ingest_path(TENANT, Some(PIPELINE), &file, None).await?;
            timings.entry("wasm-null").or_default().push(Run::from_record(&record, started.elapsed())?);
        }
        if wanted("native") {
            let started = Instant::now();
            let (docs, rejected) = native(&file).await?;
            timings.entry("native").or_default().push(Run { seconds: secs(started.elapsed()), docs, rejected, fuel: 0, peak_memory: 0 });
        }
        for replica in &replicas {
            let (report, seconds) = replica.ingest(&platform, TENANT, PIPELINE, &file).await?;
            let run = Run { seconds, docs: report.records_out, rejected: report.records_rejected, fuel: 0, peak_memory: 0 };
            timings.entry(replica.name()).or_default().push(run);
        }
        if wanted("wasm-embedded") {
            timings.entry("wasm-embedded").or_default().push(embedded(&null, &file, &wasm).await?);
        }
    }
    platform.close().await;

    if !hash_runs.is_empty() {
        println!("  sha256 alone   {}", describe_secs(&hash_runs, bytes));
    }
    let mut variants = serde_json::Map::new();
    let mut medians: HashMap<&'static str, f64> = HashMap::new();
    for name in ["wasm-null", "wasm-embedded", "native"].into_iter().chain(REPLICAS.iter().map(|s| s.name())) {
        if let Some(runs) = timings.get(name) {
            if name.starts_with("replica") && !medians.keys().any(|k| k.starts_with("replica")) {
                println!("  experiment, not the host: the host's invocation replicated with engine settings changed");
            }
            medians.insert(name, report(name, runs, bytes, &mut variants));
        }
    }

    let mut result = json!({
        "input": { "file": file.display().to_string(), "bytes": bytes, "generate": GENERATE },
        "runs_per_variant": args.runs,
        "warm_up_seconds": warm.seconds,
        "sha256_seconds": hash_runs,
        "variants": variants,
    });
    if let (Some(wasm), Some(native)) = (medians.get("wasm-null"), medians.get("native")) {
        // Medians of seconds, so the ratio of throughputs is native / wasm.
        let ratio = native / wasm;
        println!("\n  ratio wasm-null / native throughput: {ratio:.3} (target >= 0.5: {})", if ratio >= 0.5 { "met" } else { "MISSED" });
        result["ratio_wasm_null_over_native"] = json!(ratio);
        if !hash_runs.is_empty() {
            let hash = median(&hash_runs);
            let transform_ratio = (native - hash) / (wasm - hash);
            println!("  without the shared sha256 pass:      {transform_ratio:.3}");
            result["ratio_excluding_sha256"] = json!(transform_ratio);
        }
        result["target"] = json!({ "ratio_at_least": 0.5, "met": ratio >= 0.5 });
    }
    if let (Some(embedded), Some(null)) = (medians.get("wasm-embedded"), medians.get("wasm-null")) {
        println!("  ratio wasm-embedded / wasm-null:     {:.3}", null / embedded);
        result["ratio_wasm_embedded_over_wasm_null"] = json!(null / embedded);
    }
    if let Some(native) = medians.get("native") {
        let mut ratios = serde_json::Map::new();
        for settings in REPLICAS {
            if let Some(seconds) = medians.get(settings.name()) {
                println!("  ratio {} / native: {:.3}", settings.name(), native / seconds);
                ratios.insert(settings.name().to_string(), json!(native / seconds));
            }
        }
        result["ratio_replicas_over_native"] = Value::Object(ratios);
    }
    common::write_result("batch-core", result)?;
    Ok(())
}

/// The engine settings of the experiment: the host's (fuel and epochs) as a
/// check that the replica matches `wasm-null`, then each alone, then neither.
const REPLICAS: [EngineSettings; 4] = [
    EngineSettings { fuel: true, epochs: true },
    EngineSettings { fuel: false, epochs: true },
    EngineSettings { fuel: true, epochs: false },
    EngineSettings { fuel: false, epochs: false },
];
/// `max_wasm_stack_bytes` of the retail profile.
const STACK: usize = 512 * 1024;

/// A null-store platform with the retail-orders component uploaded and
/// compiled: the cache of compiled components that [`embedded`] copies.
pub(crate) async fn compiled_platform(wasm: &Path) -> anyhow::Result<BenchPlatform> {
    let null = BenchPlatform::builder().tenant(TENANT, profile()?).config("coredms:\n  kind: null").build("compiled")?;
    null.upload(TENANT, PipelineKind::Batch, PIPELINE, wasm)?;
    let platform = null.open().await?;
    common::warm(&platform, TENANT, PipelineKind::Batch, PIPELINE).await?;
    platform.close().await;
    Ok(null)
}

/// One run into the embedded store, in a fresh data directory that gets the
/// compiled component of `compiled`'s warm-up.
pub(crate) async fn embedded(compiled: &BenchPlatform, file: &Path, wasm: &Path) -> anyhow::Result<Run> {
    let fresh = BenchPlatform::builder().tenant(TENANT, profile()?).build("batch-core-embedded")?;
    fresh.upload(TENANT, PipelineKind::Batch, PIPELINE, wasm)?;
    copy_dir(&compiled.data_dir().join("compiled"), &fresh.data_dir().join("compiled"))?;
    let platform = fresh.open().await?;
    let started = Instant::now();
    let record = platform.ingest_path(TENANT, Some(PIPELINE), file, None).await?;
    let took = started.elapsed();
    let indexed = platform.coredms().count(&format!("{TENANT}-orders")).await?;
    anyhow::ensure!(indexed == record.records_out, "{indexed} documents in the index, {} reported", record.records_out);
    platform.close().await;
    Run::from_record(&record, took)
}

fn describe_secs(runs: &[f64], bytes: u64) -> String {
    let all: Vec<String> = runs.iter().map(|s| format!("{s:.2}")).collect();
    let (least, most) = runs.iter().fold((f64::INFINITY, 0f64), |(l, m), &s| (l.min(s), m.max(s)));
    format!(
        "median {:.2} s = {:.1} MB/s (runs: {} s; spread {:.0}%)",
        median(runs),
        mb(bytes) / median(runs),
        all.join(", "),
        (most - least) / median(runs) * 100.0
    )
}

/// Prints and records a variant; returns its median seconds.
fn report(name: &str, runs: &[Run], bytes: u64, into: &mut serde_json::Map<String, Value>) -> f64 {
    let seconds: Vec<f64> = runs.iter().map(|r| r.seconds).collect();
    let med = median(&seconds);
    let docs = runs[0].docs;
    let fuel = runs.iter().map(|r| r.fuel).max().unwrap_or(0);
    let peak = runs.iter().map(|r| r.peak_memory).max().unwrap_or(0);
    println!(
        "  {name:<14} {} | {:.0} docs/s ({docs} docs, {} rejected)",
        describe_secs(&seconds, bytes),
        docs as f64 / med,
        runs[0].rejected
    );
    if fuel > 0 {
        println!(
            "  {:<14} fuel {fuel} ({:.0} per doc), peak guest memory {:.1} MiB",
            "",
            fuel as f64 / docs as f64,
            peak as f64 / 1048576.0
        );
    }
    into.insert(
        name.to_string(),
        json!({
            "seconds": seconds,
            "median_seconds": med,
            "median_mb_per_s": mb(bytes) / med,
            "median_docs_per_s": docs as f64 / med,
            "mb_per_s": seconds.iter().map(|s| mb(bytes) / s).collect::<Vec<_>>(),
            "docs": docs,
            "rejected": runs[0].rejected,
            "fuel_consumed": runs.iter().map(|r| r.fuel).collect::<Vec<_>>(),
            "peak_memory_bytes": runs.iter().map(|r| r.peak_memory).collect::<Vec<_>>(),
        }),
    );
    med
}

/// The retail-orders transform without the sandbox: what the component does
/// per row, down to the JSON text and the id (with the SDK's own
/// `DocumentBatch` and `RowIds`, as its `DocumentWriter` uses them) and the
/// batches handed to the store, which are dropped here.
/// Rejected rows are turned into the same dead records (origin, raw row,
/// reason), also dropped.
async fn native(path: &Path) -> anyhow::Result<(u64, u64)> {
    let identity = identify(path).await?;
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || -> anyhow::Result<(u64, u64)> {
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let ids = RowIds::new(TENANT, &identity.sha256);
        let settings = Settings::default();
        let mut rows = CsvReader::new(name.clone(), ReadSource(std::fs::File::open(&path)?))?;
        let columns = Columns::resolve(&rows)?;
        let mut batch = DocumentBatch::with_capacity(1000);
        let mut dead: Vec<(String, Vec<u8>, String)> = Vec::new();
        let (mut docs, mut rejected, mut large) = (0u64, 0u64, 0u64);
        while let Some(row) = rows.next_row()? {
            match order_document(&row, &columns, &settings) {
                Ok(doc) => {
                    if doc.size == "large" {
                        large += 1;
                    }
                    batch.push_serialize(ids.row(row.number()), &doc)?;
                    if batch.len() >= 1000 {
                        docs += batch.len() as u64;
                        // As the SDK's writer: the batch is handed over as
                        // it is (`bulk-index-packed`), then emptied.
                        std::hint::black_box(batch.packed());
                        batch.clear();
                    }
                }
                Err(reason) => {
                    rejected += 1;
                    dead.push((format!("{name}:row {}", row.number()), row.raw().to_vec(), reason));
                    if dead.len() >= 256 {
                        drop(std::hint::black_box(std::mem::take(&mut dead)));
                    }
                }
            }
        }
        docs += batch.len() as u64;
        std::hint::black_box((batch, dead, large));
        Ok((docs, rejected))
    })
    .await?
}

fn copy_dir(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        std::fs::copy(entry.path(), to.join(entry.file_name()))?;
    }
    Ok(())
}
