//! `instantiation`: what one invocation costs before the guest does any
//! work. A trivial batch guest (the `many-memories` fixture as the guest
//! build makes it, before tests/build.rs adds its memories: it reads 4 bytes
//! and returns) is invoked again and again on a 2-byte file, each time on a
//! fresh `Store` from the cached `InstancePre`, as the host does:
//!
//! - `on-demand+cow`: the host's engine settings (wasmtime's on-demand
//!   allocator, copy-on-write memory initialisation, fuel and epochs);
//! - `on-demand-no-cow`: the same without copy-on-write;
//! - `pooling+cow`, `pooling-no-cow`: the pooling allocator (slots for 16
//!   instances of up to 64 MiB of memory), with and without copy-on-write;
//! - `host`: the whole host path, `ingest_path` (opening and hashing the
//!   file, loading the version, the scope, the limiter, the ingestion record
//!   in the tenant's log and metrics collection).
//!
//! Variants alternate round by round; each round times `--invocations`
//! calls of each; medians of microseconds per invocation are reported with
//! their spread over the rounds.

use crate::ablation::{EngineSettings, Replica, host_config};
use crate::common::{self, BenchPlatform, median};
use clap::Args as ClapArgs;
use mysimbdp::experiment::{HOST_STACK_BYTES, InputFile, batch_store_data};
use mysimbdp::opened_file::OpenedFile;
use mysimbdp::pipelines::{self, PipelineKind};
use mysimbdp::telemetry::Outcome;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Instant;
use wasmtime::{Config, InstanceAllocationStrategy, PoolingAllocationConfig};

const TENANT: &str = "trivial";
const PIPELINE: &str = "returns";
const STACK: usize = 512 * 1024;
const PROFILE: &str = "description: A guest that returns at once.
constraints: { allowed_types: [txt], max_file_bytes: 1MiB, max_files_per_run: 10, max_staging_bytes: 10MiB }
agreement: { max_concurrent_ingestions: 1, priority: 1 }
sandbox: { fuel_per_invocation: 1000000000, memory_bytes: 64MiB, deadline_ms: 10000 }
batch:
  - name: returns
    files: '*.txt'
";

#[derive(ClapArgs)]
pub struct Args {
    /// Rounds (each: every variant once).
    #[arg(long, default_value_t = 7)]
    runs: usize,
    /// Invocations per variant per round.
    #[arg(long, default_value_t = 2000)]
    invocations: usize,
}

/// An engine variant: the allocator and copy-on-write.
struct Variant {
    name: &'static str,
    pooling: bool,
    cow: bool,
}

const VARIANTS: [Variant; 4] = [
    Variant { name: "on-demand+cow", pooling: false, cow: true },
    Variant { name: "on-demand-no-cow", pooling: false, cow: false },
    Variant { name: "pooling+cow", pooling: true, cow: true },
    Variant { name: "pooling-no-cow", pooling: true, cow: false },
];

const HOST_SETTINGS: EngineSettings = EngineSettings { fuel: true, epochs: true };

fn config(variant: &Variant) -> Config {
    let mut config = host_config(HOST_SETTINGS, STACK);
    config.memory_init_cow(variant.cow);
    if variant.pooling {
        let mut pooling = PoolingAllocationConfig::default();
        pooling
            .total_component_instances(16)
            .total_core_instances(64)
            .total_memories(32)
            .total_tables(64)
            .total_stacks(16)
            .max_memory_size(64 << 20);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling));
    }
    config
}

pub async fn run(args: Args) -> anyhow::Result<()> {
    let wasm = common::guest("many_memories")?;
    let bench = BenchPlatform::builder().tenant(TENANT, PROFILE.to_string()).config("coredms:\n  kind: null").build("instantiation")?;
    bench.upload(TENANT, PipelineKind::Batch, PIPELINE, &wasm)?;
    let platform = bench.open().await?;
    common::warm(&platform, TENANT, PipelineKind::Batch, PIPELINE).await?;
    let file = bench.dir.path().join("tiny.txt");
    std::fs::write(&file, "x\n")?;
    let identity = mysimbdp::batch::identify(&file).await?;
    let tenant = platform.tenant(TENANT)?;
    let spec = tenant.profile.batch_pipeline(PIPELINE).expect("declared").clone();
    let version = pipelines::active(&tenant, PipelineKind::Batch, &spec.name)?.version;
    let fuel = tenant.profile.sandbox.with(&spec.sandbox).fuel_per_invocation;
    let replicas = VARIANTS
        .iter()
        .map(|v| Replica::with_config(HOST_SETTINGS, &config(v), &wasm).map(|r| (v.name, r)))
        .collect::<anyhow::Result<Vec<_>>>()?;
    println!(
        "instantiation: a guest that returns at once, {} invocations per variant per round, {} rounds (stack {} KiB + host {} KiB)",
        args.invocations,
        args.runs,
        STACK / 1024,
        HOST_STACK_BYTES / 1024
    );
    let mut micros: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    for round in 1..=args.runs {
        for (name, replica) in &replicas {
            let started = Instant::now();
            for _ in 0..args.invocations {
                let input = InputFile::new("tiny.txt", &identity.sha256, OpenedFile::open(&file, None)?);
                let data = batch_store_data(&platform, &tenant, &spec, version);
                replica.call(data, fuel, input).await?;
            }
            micros.entry(name).or_default().push(started.elapsed().as_secs_f64() * 1e6 / args.invocations as f64);
        }
        // The whole host path is slower (a log line and a record each): a tenth as many.
        let host_invocations = (args.invocations / 10).max(1);
        let started = Instant::now();
        for _ in 0..host_invocations {
            let record = platform.ingest_path(TENANT, Some(PIPELINE), &file, None).await?;
            anyhow::ensure!(record.outcome == Outcome::Ok, "the trivial guest failed: {:?}", record.reason);
        }
        micros.entry("host").or_default().push(started.elapsed().as_secs_f64() * 1e6 / host_invocations as f64);
        eprintln!("  round {round}/{}", args.runs);
    }
    let spread = |values: &[f64]| {
        let (min, max) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
        (min, max)
    };
    let baseline = median(&micros["on-demand+cow"]);
    println!("  {:<18} {:>12} {:>20} {:>16}", "variant", "µs/call", "rounds (min-max)", "÷ on-demand+cow");
    let mut results = serde_json::Map::new();
    for name in VARIANTS.iter().map(|v| v.name).chain(["host"]) {
        let values = &micros[name];
        let (min, max) = spread(values);
        let m = median(values);
        println!("  {name:<18} {m:>12.1} {:>20} {:>16.2}", format!("{min:.1}-{max:.1}"), m / baseline);
        results.insert(name.to_string(), json!({ "median_us": m, "rounds_us": values }));
    }
    platform.close().await;
    common::write_result(
        "instantiation",
        json!({ "invocations_per_round": args.invocations, "rounds": args.runs, "guest": wasm.display().to_string(), "variants": results }),
    )?;
    Ok(())
}
