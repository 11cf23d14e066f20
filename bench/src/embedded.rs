//! The embedded store against tantivy used directly (issue 22, parts 1 and 5).
//!
//! `embedded-yardstick`: one orders CSV into a searchable collection, three
//! ways, round by round:
//!
//! - `host-embedded`: the host in-process (`ingest_path`) into the embedded
//!   store, in a fresh data directory each run (the compiled component is
//!   copied in, so no run compiles);
//! - `tantivy-<threads>t-<MiB>m`: a direct loader at its best, the yardstick.
//!   The retail-orders transform compiled natively (the same documents and
//!   ids as the guest makes), each order added to tantivy with typed fields
//!   for the collection's fields (keywords as raw strings, numbers and the
//!   date as fast indexed values, names and products as text), the JSON text
//!   stored once for retrieval, no delete of an earlier id (the loader knows
//!   its index is new), one commit at the end of the file. Swept over writer
//!   threads and memory; the best median is the yardstick;
//! - `tantivy-host-schema`: the same direct loader with the host's schema
//!   (one JSON field with every value as text and fast, `_id`, `_source`, a
//!   delete per id) and the host's writer (64 MiB, default threads), to part
//!   the schema's cost from the sandbox's.
//!
//! `query-latency`: a collection of about a million orders made by the host
//! (`orders-110mb.csv` into the embedded store, or OpenSearch), then queries
//! of five kinds through `Platform::search` (the API's path without HTTP),
//! interleaved, each asked `--queries` times: p50, p99 and max per kind;
//! then hostile queries within the API's limits (4 KiB of regex terms or of
//! phrase prefixes, and eight phrases of 32 terms in every document but
//! never in order), three of each: how long until the answer or the refusal
//! at the search time bound (`--search-timeout-ms`, 1 s), and how far past
//! the bound.

use crate::batch_core;
use crate::common::{self, BenchPlatform, describe, mb, median, percentile, secs, spread};
use clap::Args as ClapArgs;
use mysimbdp::backends::{MAX_PHRASE_TERMS, MAX_PHRASE_TERMS_IN_QUERY};
use mysimbdp::batch::identify;
use mysimbdp::pipelines::PipelineKind;
use mysimbdp_guest::{CsvReader, DocumentBatch, ReadSource, RowIds};
use retail_orders::{Columns, Order, Settings, order_document};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;
use tantivy::schema::{FAST, Field, INDEXED, JsonObjectOptions, OwnedValue, STORED, STRING, Schema, TEXT};
use tantivy::{DateTime, Index, IndexWriter, TantivyDocument, Term};

const TENANT: &str = "retail";
const PIPELINE: &str = "orders";
const GENERATE_20: &str = "python3 scripts/gen-data.py orders --mb 20 --seed 5 > bench/data/orders-20mb.csv";
const GENERATE_110: &str = "python3 scripts/gen-data.py orders --mb 110 --seed 1 > bench/data/orders-110mb.csv";
const MIB: usize = 1024 * 1024;

#[derive(ClapArgs)]
pub struct YardstickArgs {
    /// Rounds; each runs every variant once.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The orders CSV (default bench/data/orders-20mb.csv).
    #[arg(long)]
    file: Option<PathBuf>,
}

/// A direct loader's writer: indexing threads and the memory they share.
#[derive(Clone, Copy)]
struct Writer {
    threads: usize,
    mib: usize,
}

/// The sweep: one thread and both cores, from the host's 64 MiB to 1 GiB.
const SWEEP: [Writer; 6] = [
    Writer { threads: 1, mib: 64 },
    Writer { threads: 1, mib: 256 },
    Writer { threads: 1, mib: 1024 },
    Writer { threads: 2, mib: 64 },
    Writer { threads: 2, mib: 256 },
    Writer { threads: 2, mib: 1024 },
];

impl Writer {
    fn name(self) -> String {
        format!("tantivy-{}t-{}m", self.threads, self.mib)
    }
}

pub async fn yardstick(args: YardstickArgs) -> anyhow::Result<()> {
    let file = match &args.file {
        Some(file) => file.clone(),
        None => common::input("orders-20mb.csv", GENERATE_20)?,
    };
    let bytes = std::fs::metadata(&file)?.len();
    let wasm = common::guest("retail_orders")?;
    println!("embedded-yardstick: {} ({:.1} MB), {} rounds, variants interleaved", file.display(), mb(bytes), args.runs);
    // Compiles the component once into a cache every fresh platform copies.
    let compiled = batch_core::compiled_platform(&wasm).await?;

    let mut seconds: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    let mut docs: BTreeMap<String, u64> = BTreeMap::new();
    for round in 1..=args.runs {
        eprintln!("  round {round}/{}", args.runs);
        let run = batch_core::embedded(&compiled, &file, &wasm).await?;
        seconds.entry("host-embedded".into()).or_default().push(run.seconds);
        docs.insert("host-embedded".into(), run.docs);
        let scratch = tempfile::Builder::new().prefix("yardstick-").tempdir_in(common::data_dir().join("runs"))?;
        for (i, writer) in SWEEP.iter().enumerate() {
            let (took, n) = direct(&file, &scratch.path().join(format!("typed-{i}")), Loader::Typed(*writer)).await?;
            seconds.entry(writer.name()).or_default().push(took);
            docs.insert(writer.name(), n);
        }
        let (took, n) = direct(&file, &scratch.path().join("host-schema"), Loader::HostSchema).await?;
        seconds.entry("tantivy-host-schema".into()).or_default().push(took);
        docs.insert("tantivy-host-schema".into(), n);
    }

    let expected = docs["host-embedded"];
    if let Some((name, n)) = docs.iter().find(|(_, n)| **n != expected) {
        anyhow::bail!("{name} indexed {n} documents, the host {expected}: not the same work");
    }
    let throughput = |name: &str| -> Vec<f64> { seconds[name].iter().map(|s| mb(bytes) / s).collect() };
    let mut variants = serde_json::Map::new();
    for name in seconds.keys() {
        println!("  {name:<20} {} MB/s", describe(&throughput(name)));
        variants.insert(name.clone(), json!({ "mb_per_s": spread(&throughput(name)), "seconds": seconds[name] }));
    }
    let best = SWEEP
        .iter()
        .map(|w| (w.name(), median(&throughput(&w.name()))))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("the sweep is not empty");
    let host = median(&throughput("host-embedded"));
    let host_schema = median(&throughput("tantivy-host-schema"));
    println!("\n  {expected} documents in each");
    println!("  yardstick: {} at {:.1} MB/s (median)", best.0, best.1);
    println!("  ratio host-embedded / yardstick:        {:.3}", host / best.1);
    println!("  ratio tantivy-host-schema / yardstick:  {:.3}", host_schema / best.1);
    println!("  ratio host-embedded / tantivy-host-schema: {:.3}", host / host_schema);
    common::write_result(
        "embedded-yardstick",
        json!({
            "input": { "file": file.display().to_string(), "bytes": bytes, "generate": GENERATE_20 },
            "rounds": args.runs,
            "documents": expected,
            "variants": variants,
            "yardstick": { "variant": best.0, "median_mb_per_s": best.1 },
            "ratio_host_over_yardstick": host / best.1,
            "ratio_host_schema_over_yardstick": host_schema / best.1,
            "ratio_host_over_host_schema": host / host_schema,
        }),
    )?;
    Ok(())
}

enum Loader {
    Typed(Writer),
    HostSchema,
}

/// The typed schema of the orders collection.
struct Typed {
    id: Field,
    source: Field,
    order_id: Field,
    order_date: Field,
    weekday: Field,
    month: Field,
    customer_id: Field,
    customer_name: Field,
    country: Field,
    sku: Field,
    product: Field,
    category: Field,
    quantity: Field,
    unit_price: Field,
    discount: Field,
    currency: Field,
    total: Field,
    total_eur: Field,
    size: Field,
}

impl Typed {
    fn schema() -> (Schema, Typed) {
        let mut b = Schema::builder();
        let fields = Typed {
            id: b.add_text_field("_id", STRING | STORED),
            source: b.add_text_field("_source", STORED),
            order_id: b.add_text_field("order_id", STRING),
            order_date: b.add_date_field("order_date", INDEXED | FAST),
            weekday: b.add_text_field("weekday", STRING),
            month: b.add_text_field("month", STRING),
            customer_id: b.add_text_field("customer.id", STRING),
            customer_name: b.add_text_field("customer.name", TEXT),
            country: b.add_text_field("customer.country", STRING | FAST),
            sku: b.add_text_field("item.sku", STRING),
            product: b.add_text_field("item.product", TEXT),
            category: b.add_text_field("item.category", STRING | FAST),
            quantity: b.add_u64_field("quantity", INDEXED | FAST),
            unit_price: b.add_f64_field("unit_price", INDEXED | FAST),
            discount: b.add_f64_field("discount", FAST),
            currency: b.add_text_field("currency", STRING),
            total: b.add_f64_field("total", FAST),
            total_eur: b.add_f64_field("total_eur", INDEXED | FAST),
            size: b.add_text_field("size", STRING | FAST),
        };
        (b.build(), fields)
    }

    fn document(&self, order: &Order) -> anyhow::Result<TantivyDocument> {
        let date = chrono::NaiveDate::parse_from_str(order.order_date, "%Y-%m-%d")?;
        let seconds = date.and_hms_opt(0, 0, 0).expect("midnight exists").and_utc().timestamp();
        let mut doc = TantivyDocument::default();
        doc.add_text(self.order_id, order.order_id);
        doc.add_date(self.order_date, DateTime::from_timestamp_secs(seconds));
        doc.add_text(self.weekday, order.weekday);
        doc.add_text(self.month, order.month);
        doc.add_text(self.customer_id, order.customer.id);
        doc.add_text(self.customer_name, order.customer.name);
        doc.add_text(self.country, &order.customer.country);
        doc.add_text(self.sku, order.item.sku);
        doc.add_text(self.product, order.item.product);
        doc.add_text(self.category, order.item.category.to_cow());
        doc.add_u64(self.quantity, order.quantity.into());
        doc.add_f64(self.unit_price, order.unit_price);
        doc.add_f64(self.discount, order.discount);
        doc.add_text(self.currency, order.currency);
        doc.add_f64(self.total, order.total);
        doc.add_f64(self.total_eur, order.total_eur);
        doc.add_text(self.size, order.size);
        Ok(doc)
    }
}

/// The host's schema (`backends/embedded_store.rs`): `_id`, `_source` and
/// every value in one JSON field, indexed as text and fast.
fn host_schema() -> (Schema, Field, Field, Field) {
    let mut b = Schema::builder();
    let id = b.add_text_field("_id", STRING | STORED);
    let source = b.add_text_field("_source", STORED);
    let body = b.add_json_field("doc", JsonObjectOptions::from(TEXT).set_fast(None));
    (b.build(), id, source, body)
}

/// The host's writer memory (`WRITER_BYTES` of the embedded store).
const HOST_WRITER_MIB: usize = 64;

/// Loads `file` into a new index in `dir`; returns the seconds from the
/// start (the file's SHA-256 included: the ids need it) to the commit, and
/// the documents indexed.
async fn direct(file: &Path, dir: &Path, loader: Loader) -> anyhow::Result<(f64, u64)> {
    let started = Instant::now();
    let identity = identify(file).await?;
    let (file, dir) = (file.to_path_buf(), dir.to_path_buf());
    let docs = tokio::task::spawn_blocking(move || -> anyhow::Result<u64> {
        std::fs::create_dir_all(&dir)?;
        let name = file.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let ids = RowIds::new(TENANT, &identity.sha256);
        let settings = Settings::default();
        let mut rows = CsvReader::new(name, ReadSource(std::fs::File::open(&file)?))?;
        let columns = Columns::resolve(&rows)?;
        let mut batch = DocumentBatch::with_capacity(1000);
        let mut typed_docs: Vec<TantivyDocument> = Vec::with_capacity(1000);
        let mut docs = 0u64;
        match loader {
            Loader::Typed(writer) => {
                let (schema, fields) = Typed::schema();
                let index = Index::create_in_dir(&dir, schema)?;
                let mut w: IndexWriter = index.writer_with_num_threads(writer.threads, writer.mib * MIB)?;
                // The same batches of 1000 as the guest's writer, so the
                // JSON texts and ids are made the same way.
                let send = |batch: &mut DocumentBatch, typed: &mut Vec<TantivyDocument>, w: &mut IndexWriter| -> anyhow::Result<()> {
                    for ((id, source), mut doc) in batch.iter().zip(typed.drain(..)) {
                        doc.add_text(fields.id, id);
                        doc.add_text(fields.source, source);
                        w.add_document(doc)?;
                    }
                    batch.clear();
                    Ok(())
                };
                while let Some(row) = rows.next_row()? {
                    if let Ok(order) = order_document(&row, &columns, &settings) {
                        typed_docs.push(fields.document(&order)?);
                        batch.push_serialize(ids.row(row.number()), &order)?;
                        docs += 1;
                        if batch.len() >= 1000 {
                            send(&mut batch, &mut typed_docs, &mut w)?;
                        }
                    }
                }
                send(&mut batch, &mut typed_docs, &mut w)?;
                w.commit()?;
            }
            Loader::HostSchema => {
                let (schema, id, source, body) = host_schema();
                let index = Index::create_in_dir(&dir, schema)?;
                let mut w: IndexWriter = index.writer(HOST_WRITER_MIB * MIB)?;
                let send = |batch: &mut DocumentBatch, w: &mut IndexWriter| -> anyhow::Result<()> {
                    for (doc_id, text) in batch.iter() {
                        let value: serde_json::Value = serde_json::from_str(text)?;
                        let mut doc = TantivyDocument::default();
                        doc.add_text(id, doc_id);
                        doc.add_text(source, text);
                        doc.add_field_value(body, &OwnedValue::from(value));
                        w.delete_term(Term::from_field_text(id, doc_id));
                        w.add_document(doc)?;
                    }
                    batch.clear();
                    Ok(())
                };
                while let Some(row) = rows.next_row()? {
                    if let Ok(order) = order_document(&row, &columns, &settings) {
                        batch.push_serialize(ids.row(row.number()), &order)?;
                        docs += 1;
                        if batch.len() >= 1000 {
                            send(&mut batch, &mut w)?;
                        }
                    }
                }
                send(&mut batch, &mut w)?;
                w.commit()?;
            }
        }
        Ok(docs)
    })
    .await??;
    Ok((secs(started.elapsed()), docs))
}

#[derive(ClapArgs)]
pub struct QueryArgs {
    /// Times each kind of query is asked (interleaved with the other kinds).
    #[arg(long, default_value_t = 200)]
    queries: usize,
    /// The orders CSV the collection is made of (default bench/data/orders-110mb.csv, about 1.2 million rows).
    #[arg(long)]
    file: Option<PathBuf>,
    /// `embedded`, or `opensearch` (at --opensearch).
    #[arg(long, default_value = "embedded")]
    backend: String,
    #[arg(long, env = "MYSIMBDP_ELASTICSEARCH_URL", default_value = "http://127.0.0.1:9200")]
    opensearch: String,
    /// The search time bound (`api.search_timeout_ms`) of the whole run: the
    /// hostile queries report how far past it their answer came.
    #[arg(long, default_value_t = 1000)]
    search_timeout_ms: u64,
}

/// The i-th query of a kind.
type QueryOf = fn(usize) -> String;

/// The kinds of query: a name and the query of the i-th ask.
const QUERY_KINDS: [(&str, QueryOf); 5] = [
    ("term", |i| ["customer.country:FI", "customer.country:SE", "customer.country:DE"][i % 3].to_string()),
    ("range", |i| format!("total_eur:[{} TO *]", 400 + (i % 5) * 100)),
    ("conjunction", |i| format!("item.category:{} AND size:large", ["outerwear", "footwear", "gear"][i % 3])),
    ("match-all", |_| String::new()),
    ("id-lookup", |i| format!("order_id:\"O-{:08}\"", 1 + (i * 7919) % 1_000_000)),
];

pub async fn query_latency(args: QueryArgs) -> anyhow::Result<()> {
    let file = match &args.file {
        Some(file) => file.clone(),
        None => common::input("orders-110mb.csv", GENERATE_110)?,
    };
    let (mut config, tenant) = match args.backend.as_str() {
        "embedded" => (String::new(), TENANT.to_string()),
        "opensearch" => (format!("coredms:\n  kind: elasticsearch\n  url: {}\n", args.opensearch), common::unique_tenant("ql")),
        other => anyhow::bail!("--backend {other}: embedded or opensearch"),
    };
    let bound_ms = args.search_timeout_ms;
    config.push_str(&format!("api:\n  search_timeout_ms: {bound_ms}\n"));
    let bench = BenchPlatform::builder()
        .tenant(&tenant, common::profile_with("tenants/retail/profile.yaml", &[])?)
        .config(&config)
        .build("query-latency")?;
    bench.upload(&tenant, PipelineKind::Batch, PIPELINE, &common::guest("retail_orders")?)?;
    let platform = bench.open().await?;
    common::warm(&platform, &tenant, PipelineKind::Batch, PIPELINE).await?;
    println!("query-latency: {} into the {} store", file.display(), args.backend);
    let started = Instant::now();
    let record = platform.ingest_path(&tenant, Some(PIPELINE), &file, None).await?;
    anyhow::ensure!(record.outcome == mysimbdp::telemetry::Outcome::Ok, "the ingestion failed: {:?}", record.reason);
    let load_seconds = secs(started.elapsed());
    let rss_after_load = common::rss_mib();
    let all = platform.search(&tenant, "orders", "", 0).await?.total;
    println!("  {all} documents, loaded by the host in {load_seconds:.1} s; {} queries of each kind", args.queries);

    let mut latencies: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut hits: BTreeMap<&str, Vec<u64>> = BTreeMap::new();
    for i in 0..args.queries {
        for (kind, query) in QUERY_KINDS {
            let text = query(i);
            let asked = Instant::now();
            let found = platform.search(&tenant, "orders", &text, 10).await?;
            latencies.entry(kind).or_default().push(secs(asked.elapsed()) * 1000.0);
            hits.entry(kind).or_default().push(found.total);
        }
    }
    let mut kinds = serde_json::Map::new();
    for (kind, ms) in &latencies {
        let matched = median(&hits[kind].iter().map(|&h| h as f64).collect::<Vec<_>>());
        anyhow::ensure!(matched > 0.0, "the {kind} queries matched nothing: the benchmark measures nothing");
        println!(
            "  {kind:<12} p50 {:7.2} ms  p99 {:7.2} ms  max {:7.2} ms  (median {matched:.0} matches, 10 returned)",
            percentile(ms, 50.0),
            percentile(ms, 99.0),
            percentile(ms, 100.0)
        );
        kinds.insert(
            kind.to_string(),
            json!({
                "p50_ms": percentile(ms, 50.0), "p99_ms": percentile(ms, 99.0), "max_ms": percentile(ms, 100.0),
                "median_matches": matched, "example": QUERY_KINDS.iter().find(|(k, _)| k == kind).map(|(_, q)| q(0)),
            }),
        );
    }
    // Hostile queries within every limit of the pre-check: many regex terms
    // or phrase prefixes, each of which walks the term dictionary before the
    // first deadline check; and the most phrase work the caps let through
    // (eight phrases of 32 terms that every document holds but never in
    // order: the scorer works through every document without yielding one).
    // Measured: how long until the answer (or the refusal at the search time
    // bound) comes, and how far past the bound that is.
    let mut hostile = serde_json::Map::new();
    let capped_phrase = format!("order_id:\"{}\"", vec!["o"; MAX_PHRASE_TERMS].join(" "));
    let capped_phrases = [capped_phrase.as_str(); MAX_PHRASE_TERMS_IN_QUERY / MAX_PHRASE_TERMS].join(" OR ");
    let hostile_queries = [
        (
            "regex-terms",
            "customer.name:/.*a.*/".to_string(),
            std::iter::repeat_n("customer.name:/.*a.*/", 4000 / 25).collect::<Vec<_>>().join(" OR "),
        ),
        (
            "prefix-phrases",
            "customer.name:\"m\"*".to_string(),
            std::iter::repeat_n("customer.name:\"m\"*", 4000 / 21).collect::<Vec<_>>().join(" OR "),
        ),
        ("capped-phrases", capped_phrase.clone(), capped_phrases),
    ];
    for (kind, term, query) in hostile_queries {
        let mut runs = Vec::new();
        for _ in 0..3 {
            let asked = Instant::now();
            let answer = platform.search(&tenant, "orders", &query, 10).await;
            let ms = secs(asked.elapsed()) * 1000.0;
            let outcome = match &answer {
                Ok(found) => format!("answered, {} matches", found.total),
                Err(error) => {
                    let text = format!("{error:#}");
                    // The query is quoted first: the reason is at the end.
                    format!("refused: …{}", &text[text.len().saturating_sub(160)..])
                }
            };
            let past = ms - bound_ms as f64;
            println!("  hostile {kind:<14} {} bytes: {ms:8.0} ms ({past:+.0} ms from the {bound_ms} ms bound), {outcome}", query.len());
            runs.push(json!({ "ms": ms, "ms_past_the_bound": past, "outcome": outcome }));
        }
        hostile.insert(kind.to_string(), json!({ "query_bytes": query.len(), "example_term": term, "runs": runs }));
    }
    println!("  resident memory after loading: {rss_after_load:.0} MiB, now {:.0} MiB", common::rss_mib());
    platform.close().await;
    if args.backend == "opensearch" {
        crate::search::Search::new(&args.opensearch).delete(&format!("{tenant}-*")).await;
    }
    common::write_result(
        &format!("query-latency-{}", args.backend),
        json!({
            "input": { "file": file.display().to_string(), "generate": GENERATE_110 },
            "backend": args.backend,
            "documents": all,
            "load_seconds": load_seconds,
            "queries_per_kind": args.queries,
            "search_timeout_ms": bound_ms,
            "kinds": Value::Object(kinds),
            "hostile": Value::Object(hostile),
            "rss_mib_after_load": rss_after_load,
        }),
    )?;
    Ok(())
}
