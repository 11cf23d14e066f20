//! Benchmarks of mysimbdp (see docs/benchmarks/journal.md for what each measures and
//! the numbers). Performance is measured here, never asserted in tests.
//!
//! Every subcommand prints a summary and writes
//! `bench/data/results/<name>.json` with all runs, the machine and the commit.
//! Ratios are always taken between variants measured in the same process, one
//! after the other, because the benchmark machines are small and noisy.

mod ablation;
mod batch_core;
mod batch_manager;
mod common;
mod concurrency;
mod embedded;
mod instantiation;
mod noisy;
mod opensearch;
mod search;
mod stream;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "mysimbdp-bench", about = "Benchmarks of mysimbdp; run through scripts/bench.sh")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// One large CSV through the retail-orders component (null sink, embedded
    /// store) against the same transform compiled natively.
    BatchCore(batch_core::Args),
    /// Real Kafka → wasm stream pipeline → OpenSearch: throughput against a
    /// plain bulk loader, and produce-to-searchable latency.
    Stream(stream::Args),
    /// Many small and a few large files of two tenants through the batch
    /// manager, against direct ingestion of the same files.
    BatchManager(batch_manager::Args),
    /// One tenant's CSV ingestion alone and beside a tenant running every
    /// hostile fixture at once: the ratio of its throughputs.
    NoisyNeighbour(noisy::Args),
    /// Microseconds per invocation of a guest that returns at once: a fresh
    /// store from the `InstancePre` with and without the pooling allocator
    /// and copy-on-write, and the whole host path.
    Instantiation(instantiation::Args),
    /// The host into the embedded store against tantivy used directly at its
    /// best (typed fields, a sweep of writer threads and memory): the yardstick.
    EmbeddedYardstick(embedded::YardstickArgs),
    /// Query latency (p50, p99) on a collection of about a million orders.
    QueryLatency(embedded::QueryArgs),
    /// One CSV into OpenSearch: the host against a direct `_bulk` loader
    /// swept over bulk size and requests in flight.
    BatchOpensearch(opensearch::Args),
    /// Total and per-ingestion MB/s at 1, 2, 4 and 8 concurrent ingestions of
    /// one tenant and of two, into the embedded store and OpenSearch.
    Concurrency(concurrency::Args),
}

fn main() -> anyhow::Result<()> {
    // The host compiles components in a child process: this binary.
    if let Some(code) = mysimbdp::cli::compiler_child() {
        std::process::exit(code.into());
    }
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("MYSIMBDP_LOG").unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(async move {
        match cli.command {
            Command::BatchCore(args) => batch_core::run(args).await,
            Command::Stream(args) => stream::run(args).await,
            Command::BatchManager(args) => batch_manager::run(args).await,
            Command::NoisyNeighbour(args) => noisy::run(args).await,
            Command::Instantiation(args) => instantiation::run(args).await,
            Command::EmbeddedYardstick(args) => embedded::yardstick(args).await,
            Command::QueryLatency(args) => embedded::query_latency(args).await,
            Command::BatchOpensearch(args) => opensearch::run(args).await,
            Command::Concurrency(args) => concurrency::run(args).await,
        }
    })
}
