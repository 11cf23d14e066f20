//! `concurrency`: the curve of concurrent ingestions (issue 22, part 4).
//! 1, 2, 4 and 8 orders files ingested at once (`ingest_path`, as that many
//! `POST /api/ingest` would), by one tenant and by two (the files shared out
//! in turn), into the embedded store and into OpenSearch. Each point runs on
//! a fresh copy of one prepared platform (components uploaded and compiled,
//! no collection yet), so no point inherits an index from another; the
//! points of a round run one after the other, round by round.
//!
//! Reported per point: the total MB/s (all bytes over the wall time from the
//! first start to the last end) and the median per-ingestion MB/s.

use crate::common::{self, BenchPlatform, describe, mb, median, secs, spread};
use clap::Args as ClapArgs;
use mysimbdp::pipelines::PipelineKind;
use mysimbdp::telemetry::Outcome;
use serde_json::json;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Instant;

const PIPELINE: &str = "orders";
/// The input files: `orders-5mb-s<seed>.csv` for these seeds.
const SEEDS: [u32; 8] = [21, 22, 23, 24, 25, 26, 27, 28];

#[derive(ClapArgs)]
pub struct Args {
    /// Rounds; each measures every point once.
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Concurrent ingestions (at most 8: one file each).
    #[arg(long, value_delimiter = ',', default_value = "1,2,4,8")]
    levels: Vec<usize>,
    /// `embedded`, `opensearch` or both.
    #[arg(long, value_delimiter = ',', default_value = "embedded,opensearch")]
    backends: Vec<String>,
    #[arg(long, env = "MYSIMBDP_ELASTICSEARCH_URL", default_value = "http://127.0.0.1:9200")]
    opensearch: String,
}

/// One measured point.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Point {
    backend: usize,
    tenants: usize,
    level: usize,
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    anyhow::ensure!(args.levels.iter().all(|&l| (1..=SEEDS.len()).contains(&l)), "--levels: 1 to {} ingestions", SEEDS.len());
    let most = args.levels.iter().copied().max().unwrap_or(1);
    let files: Vec<PathBuf> = SEEDS
        .iter()
        .take(most)
        .map(|seed| common::input(&format!("orders-5mb-s{seed}.csv"), &format!("python3 scripts/gen-data.py orders --mb 5 --seed {seed}")))
        .collect::<anyhow::Result<_>>()?;
    let wasm = common::guest("retail_orders")?;
    let search = crate::search::Search::new(&args.opensearch);
    // Every tenant may run all 8 at once.
    let profile = common::profile_with("tenants/retail/profile.yaml", &[("agreement.max_concurrent_ingestions", "8")])?;
    let mut templates = Vec::new();
    for backend in &args.backends {
        let config = match backend.as_str() {
            "embedded" => String::new(),
            "opensearch" => format!("coredms:\n  kind: elasticsearch\n  url: {}", args.opensearch),
            other => anyhow::bail!("--backends: no backend `{other}` (embedded, opensearch)"),
        };
        // Ids unique to the run: OpenSearch is shared with earlier runs.
        let tenants = [common::unique_tenant("cca"), common::unique_tenant("ccb")];
        let template = BenchPlatform::builder()
            .tenant(&tenants[0], profile.clone())
            .tenant(&tenants[1], profile.clone())
            .config(&config)
            .build("concurrency")?;
        for tenant in &tenants {
            template.upload(tenant, PipelineKind::Batch, PIPELINE, &wasm)?;
        }
        let platform = template.open().await?;
        for tenant in &tenants {
            common::warm(&platform, tenant, PipelineKind::Batch, PIPELINE).await?;
        }
        platform.close().await;
        templates.push((backend.clone(), tenants, template));
    }
    let mut points = Vec::new();
    for backend in 0..templates.len() {
        for tenants in [1, 2] {
            for &level in &args.levels {
                if level >= tenants {
                    points.push(Point { backend, tenants, level });
                }
            }
        }
    }
    println!(
        "concurrency: {} points ({} backends), files of {:.1} MB, {} rounds",
        points.len(),
        templates.len(),
        mb(std::fs::metadata(&files[0])?.len()),
        args.runs
    );

    let mut total: BTreeMap<Point, Vec<f64>> = BTreeMap::new();
    let mut each: BTreeMap<Point, Vec<f64>> = BTreeMap::new();
    for round in 1..=args.runs {
        eprintln!("  round {round}/{}", args.runs);
        for &point in &points {
            let (backend, tenants, template) = &templates[point.backend];
            let fresh = template.fresh_copy("concurrency-point")?;
            let platform = fresh.open().await?;
            let started = Instant::now();
            let mut tasks = Vec::new();
            for (i, file) in files.iter().take(point.level).enumerate() {
                let (platform, tenant, file) = (platform.clone(), tenants[i % point.tenants].clone(), file.clone());
                tasks.push(tokio::spawn(async move {
                    let began = Instant::now();
                    let record = platform.ingest_path(&tenant, Some(PIPELINE), &file, None).await?;
                    anyhow::ensure!(record.outcome == Outcome::Ok, "{tenant}: {} failed: {:?}", file.display(), record.reason);
                    anyhow::Ok((record.bytes, secs(began.elapsed())))
                }));
            }
            let mut bytes = 0;
            for task in tasks {
                let (b, took) = task.await??;
                bytes += b;
                each.entry(point).or_default().push(mb(b) / took);
            }
            total.entry(point).or_default().push(mb(bytes) / secs(started.elapsed()));
            platform.close().await;
            if backend == "opensearch" {
                for tenant in tenants {
                    search.delete(&format!("{tenant}-*")).await;
                }
            }
        }
    }

    let mut results = Vec::new();
    println!("\n  {:<10} {:>7} {:>5}  {:<34} per ingestion (median)", "backend", "tenants", "at", "total MB/s: median (min-max, spread)");
    for point in &points {
        let backend = &templates[point.backend].0;
        println!("  {backend:<10} {:>7} {:>5}  {:<34} {:.1}", point.tenants, point.level, describe(&total[point]), median(&each[point]));
        results.push(json!({
            "backend": backend, "tenants": point.tenants, "concurrent": point.level,
            "total_mb_per_s": spread(&total[point]), "per_ingestion_mb_per_s_median": median(&each[point]),
        }));
    }
    common::write_result(
        "concurrency",
        json!({
            "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
            "rounds": args.runs,
            "points": results,
        }),
    )?;
    Ok(())
}
