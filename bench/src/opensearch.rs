//! `batch-opensearch`: one orders CSV into OpenSearch, the host against a
//! direct `_bulk` loader of the same documents (issue 22, part 2).
//!
//! - `host`: `ingest_path` with `coredms: elasticsearch`, a fresh tenant each
//!   round (so a fresh index, created with the profile's mappings). Its only
//!   setting: the guest's batches of 1000 documents, one `_bulk` at a time
//!   (more parallelism comes from concurrent files: `concurrency`).
//! - `bulk-<docs>x<parallel>`: the retail-orders transform compiled natively
//!   (the same documents and ids), `_bulk` requests of `<docs>` documents,
//!   `<parallel>` of them in flight, into a fresh index created with the same
//!   mappings. Swept over both; the best median is the direct loader at its
//!   best.
//!
//! Every variant's clock runs from the start (the index created, the file
//! hashed: the ids need it) until a refresh after the last write, so the
//! documents are searchable; the count is checked after each run. Indices
//! are deleted after their run.

use crate::common::{self, BenchPlatform, describe, mb, median, secs, spread};
use crate::search::Search;
use anyhow::Context;
use clap::Args as ClapArgs;
use mysimbdp::batch::identify;
use mysimbdp::pipelines::PipelineKind;
use mysimbdp::telemetry::Outcome;
use mysimbdp_guest::{CsvReader, DocumentBatch, ReadSource, RowIds};
use retail_orders::{Columns, Settings, order_document};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

const PIPELINE: &str = "orders";
const GENERATE: &str = "python3 scripts/gen-data.py orders --mb 10 --seed 6 > bench/data/orders-10mb.csv";

#[derive(ClapArgs)]
pub struct Args {
    /// Rounds; each runs every variant once.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The orders CSV (default bench/data/orders-10mb.csv).
    #[arg(long)]
    file: Option<PathBuf>,
    /// Documents per `_bulk` request of the direct loader.
    #[arg(long, value_delimiter = ',', default_value = "500,2000,5000")]
    bulk_docs: Vec<usize>,
    /// `_bulk` requests in flight at once of the direct loader.
    #[arg(long, value_delimiter = ',', default_value = "1,2,4")]
    parallel: Vec<usize>,
    #[arg(long, env = "MYSIMBDP_ELASTICSEARCH_URL", default_value = "http://127.0.0.1:9200")]
    opensearch: String,
}

/// The retail profile's mappings of its `orders` collection, as the host
/// creates the index with them.
pub fn orders_mappings() -> anyhow::Result<Value> {
    let text = std::fs::read_to_string(common::repo_root().join("tenants/retail/profile.yaml"))?;
    let profile: Value = serde_norway::from_str(&text)?;
    Ok(profile["collections"]["orders"]["mappings"].clone())
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let file = match &args.file {
        Some(file) => file.clone(),
        None => common::input("orders-10mb.csv", GENERATE)?,
    };
    let bytes = std::fs::metadata(&file)?.len();
    let search = Search::new(&args.opensearch);
    search.health().await.with_context(|| format!("OpenSearch at {} (scripts/services.sh up)", args.opensearch))?;
    let mappings = orders_mappings()?;
    let wasm = common::guest("retail_orders")?;

    // One tenant per round, so each host run writes a new index.
    let tenants: Vec<String> = (0..args.runs).map(|_| common::unique_tenant("bo")).collect();
    let mut builder = BenchPlatform::builder().config(&format!("coredms:\n  kind: elasticsearch\n  url: {}", args.opensearch));
    for tenant in &tenants {
        builder = builder.tenant(tenant, common::profile_with("tenants/retail/profile.yaml", &[])?);
    }
    let bench = builder.build("batch-opensearch")?;
    for tenant in &tenants {
        bench.upload(tenant, PipelineKind::Batch, PIPELINE, &wasm)?;
    }
    let platform = bench.open().await?;
    for tenant in &tenants {
        common::warm(&platform, tenant, PipelineKind::Batch, PIPELINE).await?;
    }
    let variants: Vec<(usize, usize)> = args.bulk_docs.iter().flat_map(|&d| args.parallel.iter().map(move |&p| (d, p))).collect();
    println!(
        "batch-opensearch: {} ({:.1} MB), {} rounds; the host and the direct loader at {} settings, interleaved",
        file.display(),
        mb(bytes),
        args.runs,
        variants.len()
    );

    let mut seconds: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut documents = None;
    for (round, tenant) in tenants.iter().enumerate() {
        eprintln!("  round {}/{}", round + 1, args.runs);
        let started = Instant::now();
        let record = platform.ingest_path(tenant, Some(PIPELINE), &file, None).await?;
        let took = secs(started.elapsed());
        anyhow::ensure!(record.outcome == Outcome::Ok, "the host's ingestion failed: {:?}", record.reason);
        let index = format!("{tenant}-orders");
        let counted = search.refresh_count(&index).await?;
        anyhow::ensure!(counted == record.records_out, "{index}: {counted} documents, the host reported {}", record.records_out);
        search.delete(&index).await;
        documents = Some(counted);
        seconds.entry("host".into()).or_default().push(took);
        for &(docs, parallel) in &variants {
            let index = format!("{}-direct", common::unique_tenant("bd"));
            let (took, n) = direct(&search, &file, &index, &mappings, docs, parallel).await?;
            anyhow::ensure!(Some(n) == documents, "the direct loader indexed {n} documents, the host {documents:?}");
            search.delete(&index).await;
            seconds.entry(format!("bulk-{docs}x{parallel}")).or_default().push(took);
        }
    }
    platform.close().await;

    let throughput = |name: &str| -> Vec<f64> { seconds[name].iter().map(|s| mb(bytes) / s).collect() };
    let mut results = serde_json::Map::new();
    for name in seconds.keys() {
        println!("  {name:<14} {} MB/s", describe(&throughput(name)));
        results.insert(name.clone(), json!({ "mb_per_s": spread(&throughput(name)), "seconds": seconds[name] }));
    }
    let (best, best_mb) = seconds
        .keys()
        .filter(|name| name.starts_with("bulk-"))
        .map(|name| (name.clone(), median(&throughput(name))))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .context("no direct loader variant")?;
    let host = median(&throughput("host"));
    println!("\n  {} documents in each", documents.unwrap_or(0));
    println!("  direct loader at its best: {best} at {best_mb:.1} MB/s (median)");
    println!("  ratio host / best direct loader: {:.3}", host / best_mb);
    if let Some(same) = seconds.keys().find(|n| n.as_str() == "bulk-500x1").or(seconds.keys().find(|n| n.ends_with("x1"))) {
        println!("  ratio host / {same} (one request in flight, as one host ingestion): {:.3}", host / median(&throughput(same)));
    }
    common::write_result(
        "batch-opensearch",
        json!({
            "input": { "file": file.display().to_string(), "bytes": bytes, "generate": GENERATE },
            "rounds": args.runs,
            "documents": documents,
            "variants": results,
            "best_direct": { "variant": best, "median_mb_per_s": best_mb },
            "ratio_host_over_best_direct": host / best_mb,
        }),
    )?;
    Ok(())
}

/// The direct loader: transforms `file` natively and `_bulk`s it into a
/// new `index` (`docs` per request, `parallel` in flight); the seconds until
/// a refresh after the last write, and the documents written.
async fn direct(search: &Search, file: &Path, index: &str, mappings: &Value, docs: usize, parallel: usize) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    search.create(index, mappings).await?;
    let identity = identify(file).await?;
    let (sender, receiver) = tokio::sync::mpsc::channel::<String>(parallel);
    let file = file.to_path_buf();
    let producer = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        let name = file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let ids = RowIds::new("retail", &identity.sha256);
        let settings = Settings::default();
        let mut rows = CsvReader::new(name, ReadSource(std::fs::File::open(&file)?))?;
        let columns = Columns::resolve(&rows)?;
        let mut batch = DocumentBatch::with_capacity(docs);
        let mut written = 0u64;
        let send = |batch: &mut DocumentBatch| -> anyhow::Result<()> {
            let mut body = String::with_capacity(batch.bytes() + batch.len() * 64);
            for (id, source) in batch.iter() {
                body.push_str(&json!({ "index": { "_id": id } }).to_string());
                body.push('\n');
                body.push_str(source);
                body.push('\n');
            }
            batch.clear();
            sender.blocking_send(body).map_err(|_| anyhow::anyhow!("the senders stopped"))
        };
        while let Some(row) = rows.next_row()? {
            if let Ok(order) = order_document(&row, &columns, &settings) {
                batch.push_serialize(ids.row(row.number()), &order)?;
                written += 1;
                if batch.len() >= docs {
                    send(&mut batch)?;
                }
            }
        }
        if !batch.is_empty() {
            send(&mut batch)?;
        }
        Ok(written)
    });
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let mut senders = Vec::new();
    for _ in 0..parallel {
        let (search, receiver, index) = (search.clone(), receiver.clone(), index.to_string());
        senders.push(tokio::spawn(async move {
            loop {
                let body = receiver.lock().await.recv().await;
                match body {
                    Some(body) => search.bulk(&index, body).await?,
                    None => return anyhow::Ok(()),
                }
            }
        }));
    }
    // The senders hold the receiver now: if they all fail, the producer's next send fails.
    drop(receiver);
    let written = producer.await??;
    for sender in senders {
        sender.await??;
    }
    search.refresh(index).await?;
    let took = secs(started.elapsed());
    let counted = search.refresh_count(index).await?;
    anyhow::ensure!(counted == written, "{index}: {counted} documents, {written} written");
    Ok((took, written))
}
