//! mysimbdp: the host runtime and CLI of a multi-tenant ingestion platform
//! whose tenants bring their pipelines as WebAssembly components.

//!
//! The modules form layers, each importing only from those below it (README,
//! "Architecture"; `scripts/check-layers.py` checks it):
//! config, failure, framed, host_lock, opened_file, retry → telemetry → backends, pipelines →
//! capabilities → sandbox → invocation → batch, stream → platform → api, experiment, fuzzing → cli.
//! What the benchmarks and the integration tests use is `pub`; the rest
//! is the crate's own.

pub(crate) mod api;
pub mod backends;
pub mod batch;
pub(crate) mod capabilities;
pub mod cli;
pub mod config;
pub(crate) mod cpu_shares;
pub mod experiment;
pub mod failure;
pub(crate) mod framed;
pub mod fuzzing;
pub(crate) mod host_lock;
pub(crate) mod invocation;
pub mod opened_file;
pub mod pipelines;
pub mod platform;
pub(crate) mod retry;
pub(crate) mod sandbox;
pub mod stream;
pub mod telemetry;

/// The host's allocator, here rather than in `main.rs` so that everything
/// built on this crate (the binary, the tests, the benchmarks) measures the
/// same host. Lifting a batch out of a guest allocates two strings per
/// document and frees them once the sink has them: glibc's malloc spent about
/// 7% of a sandboxed batch ingestion on that (docs/benchmarks.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
