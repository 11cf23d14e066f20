//! mysimbdp: the host runtime and CLI of a multi-tenant ingestion platform
//! whose tenants bring their pipelines as WebAssembly components.

//!
//! The modules form layers, each importing only from those below it (README,
//! "Architecture"; Cargo keeps the lowest, the crate `mysimbdp-foundation`,
//! below the rest, and `scripts/check-layers.py` checks the order above it):
//! foundation (config, failure, framed, host_lock, opened_file, retry, cpu_shares, query) → telemetry → backends, pipelines →
//! capabilities → sandbox → invocation → batch, stream → platform → api, experiment, fuzzing → cli.
//! What the benchmarks and the integration tests use is `pub`; the rest
//! is the crate's own.

// The lowest layer, a crate of its own (host/foundation), under its old paths.
pub use mysimbdp_foundation::{config, failure, opened_file};
pub(crate) use mysimbdp_foundation::{cpu_shares, framed, host_lock, retry};

pub(crate) mod api;
pub mod backends;
pub mod batch;
pub(crate) mod capabilities;
pub mod cli;
#[cfg(feature = "test-support")]
pub mod experiment;
#[cfg(feature = "test-support")]
pub mod fuzzing;
pub(crate) mod invocation;
pub mod pipelines;
pub mod platform;
pub(crate) mod sandbox;
pub mod stream;
pub mod telemetry;

/// The host's allocator, here rather than in `main.rs` so that everything
/// built on this crate (the binary, the tests, the benchmarks) measures the
/// same host. Lifting a batch out of a guest allocates two strings per
/// document and frees them once the sink has them: glibc's malloc spent about
/// 7% of a sandboxed batch ingestion on that (docs/benchmarks/journal.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;
