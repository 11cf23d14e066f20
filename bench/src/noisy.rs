//! `noisy-neighbour`: what a hostile tenant costs its neighbour. Tenant
//! `retail` ingests one CSV file into the embedded store (`ingest_path`, in
//! process) alone, and again while tenant `hostile` runs its hostile
//! fixtures at once: an endless loop, a memory hoard kept just below its
//! budget, and log, counter and collection floods that never stop (each
//! until its deadline, far beyond the run; stopped when the neighbour's
//! ingestion is done). Alone and beside the hostile tenant alternate round
//! by round; the result is the neighbour's median MB/s beside the hostile
//! tenant divided by its median alone (the target: at least 0.9).
//! `--no-give-way` measures the same with `pipelines.cpu_give_way: false`.
//!
//! The fixtures come from tests/fixtures (`scripts/build-guests.sh --all`).
//! The `many-memories` fixture is left out: its extra memories are added by
//! the test crate's build script, not by the guest build.

use crate::common::{self, BenchPlatform, mb, median};
use clap::Args as ClapArgs;
use mysimbdp::pipelines::PipelineKind;
use mysimbdp::platform::Platform;
use mysimbdp::telemetry::Outcome;
use serde_json::json;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

const GENERATE: &str = "python3 scripts/gen-data.py orders --mb 20 --seed 5";

/// The hostile tenant: each fixture runs until its deadline (10 minutes).
const HOSTILE: &str = "description: Runs every hostile fixture at once.
constraints: { allowed_types: [txt], max_file_bytes: 1MiB, max_files_per_run: 10, max_staging_bytes: 10MiB }
agreement: { max_concurrent_ingestions: 8, priority: 9 }
sandbox: { fuel_per_invocation: 100000000000000, memory_bytes: 64MiB, deadline_ms: 600000 }
quotas: { collections: 5, counter_series: 150, guest_log_bytes: 256KiB, guest_log_files: 2 }
batch:
  - name: spin
    files: 'spin*'
  - name: floods
    files: 'flood*'
";

/// The hostile files: (pipeline, name, first line).
const HOSTILE_FILES: [(&str, &str, &str); 5] = [
    ("spin", "spin-forever.txt", "spin"),
    ("floods", "flood-hoard.txt", "hoard"),
    ("floods", "flood-log.txt", "log forever"),
    ("floods", "flood-counters-1.txt", "counters forever"),
    ("floods", "flood-collections.txt", "collections forever"),
];

#[derive(ClapArgs)]
pub struct Args {
    /// Rounds (each: the neighbour alone, then beside the hostile tenant).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// The neighbour's CSV file (default: bench/data/orders-20mb.csv).
    #[arg(long)]
    file: Option<std::path::PathBuf>,
    /// Runs with `pipelines.cpu_give_way: false`: the hostile tenant keeps
    /// its slot's share of the cores even when it is ahead (the platform
    /// before that setting).
    #[arg(long)]
    no_give_way: bool,
}

/// The neighbour's MB/s, and the cores the whole process used meanwhile
/// (its CPU time over the wall time: alone, what the neighbour's ingestion
/// takes of the machine, guest, store threads and all).
async fn neighbour(platform: &Platform, file: &Path) -> anyhow::Result<(f64, f64)> {
    let (started, cpu) = (Instant::now(), cpu_secs());
    let record = platform.ingest_path("retail", Some("orders"), file, None).await?;
    anyhow::ensure!(record.outcome == Outcome::Ok, "the neighbour's ingestion failed: {:?}", record.reason);
    let wall = started.elapsed().as_secs_f64();
    Ok((mb(record.bytes) / wall, (cpu_secs() - cpu) / wall))
}

/// The CPU time of this process so far, all threads (`/proc/self/stat`
/// utime + stime, in clock ticks of 1/100 s).
fn cpu_secs() -> f64 {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // The fields after the command name, which is in parentheses.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or("", |(_, rest)| rest).split_whitespace().collect();
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of the line, 12 and 13 after the name.
    (ticks(11) + ticks(12)) / 100.0
}

/// Starts every hostile ingestion and gives them 2 s to get into their
/// guests (compiled already: warmed); they run until aborted. A round in
/// which one ended meanwhile is an error, not a number.
async fn start_hostile(platform: &Arc<Platform>, dir: &Path) -> anyhow::Result<Vec<tokio::task::JoinHandle<()>>> {
    let mut tasks = Vec::new();
    for (pipeline, name, line) in HOSTILE_FILES {
        let path = dir.join(name);
        std::fs::write(&path, format!("{line}\n"))?;
        let platform = platform.clone();
        tasks.push(tokio::spawn(async move {
            let _ = platform.ingest_path("hostile", Some(pipeline), &path, None).await;
        }));
    }
    // Long enough for each to be compiled already (warmed) and running.
    tokio::time::sleep(std::time::Duration::from_secs(2)).await;
    anyhow::ensure!(tasks.iter().all(|t| !t.is_finished()), "a hostile ingestion ended before the neighbour started");
    Ok(tasks)
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let file = match &args.file {
        Some(file) => file.clone(),
        None => common::input("orders-20mb.csv", GENERATE)?,
    };
    let bench = BenchPlatform::builder()
        .tenant("retail", common::profile_with("tenants/retail/profile.yaml", &[])?)
        .tenant("hostile", HOSTILE.to_string())
        .config(&format!("pipelines:\n  cpu_give_way: {}", !args.no_give_way))
        .build("noisy-neighbour")?;
    bench.upload("retail", PipelineKind::Batch, "orders", &common::guest("retail_orders")?)?;
    bench.upload("hostile", PipelineKind::Batch, "spin", &common::guest("spin_forever")?)?;
    bench.upload("hostile", PipelineKind::Batch, "floods", &common::guest("floods")?)?;
    let platform = bench.open().await?;
    for (tenant, pipeline) in [("retail", "orders"), ("hostile", "spin"), ("hostile", "floods")] {
        common::warm(&platform, tenant, PipelineKind::Batch, pipeline).await?;
    }
    println!(
        "noisy-neighbour: {} ({:.1} MB), {} rounds, the tenant ahead gives way: {}",
        file.display(),
        mb(std::fs::metadata(&file)?.len()),
        args.runs,
        !args.no_give_way
    );
    neighbour(&platform, &file).await?; // warm-up
    let (mut alone, mut beside) = (Vec::new(), Vec::new());
    let (mut alone_cores, mut beside_cores) = (Vec::new(), Vec::new());
    for round in 1..=args.runs {
        let (mb_per_s, cores) = neighbour(&platform, &file).await?;
        alone.push(mb_per_s);
        alone_cores.push(cores);
        let hostile = start_hostile(&platform, bench.dir.path()).await?;
        let measured = neighbour(&platform, &file).await;
        let all_running = hostile.iter().all(|t| !t.is_finished());
        for task in &hostile {
            task.abort();
        }
        for task in hostile {
            let _ = task.await;
        }
        let (mb_per_s, cores) = measured?;
        beside.push(mb_per_s);
        beside_cores.push(cores);
        anyhow::ensure!(all_running, "a hostile ingestion ended before the neighbour's did: that round measured less than all of them");
        eprintln!(
            "  round {round}/{}: alone {:.1} MB/s ({:.2} cores), beside the hostile tenant {:.1} MB/s ({:.2} cores in all)",
            args.runs,
            alone[round - 1],
            alone_cores[round - 1],
            beside[round - 1],
            beside_cores[round - 1]
        );
    }
    let ratio = median(&beside) / median(&alone);
    println!("  alone:                    {:6.1} MB/s (median)", median(&alone));
    println!("  beside the hostile tenant: {:5.1} MB/s (median)", median(&beside));
    println!("  ratio: {ratio:.3} (target at least 0.9)");
    // What the neighbour takes of the machine alone (its guest, the store's
    // indexing threads), against what is left beside the hostile tenant.
    println!(
        "  cores used: the neighbour alone {:.2} (median), the whole host beside the hostile tenant {:.2}, of {}",
        median(&alone_cores),
        median(&beside_cores),
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    platform.close().await;
    common::write_result(
        "noisy-neighbour",
        json!({
            "file": file.display().to_string(),
            "hostile": HOSTILE_FILES.iter().map(|(_, name, line)| json!({"file": name, "mode": line})).collect::<Vec<_>>(),
            "alone_mb_per_s": alone,
            "beside_hostile_mb_per_s": beside,
            "ratio_of_medians": ratio,
            "cpu_give_way": !args.no_give_way,
            "alone_cores_used": alone_cores,
            "beside_hostile_cores_used": beside_cores,
        }),
    )?;
    Ok(())
}
