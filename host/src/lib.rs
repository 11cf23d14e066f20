//! mysimbdp: the host runtime and CLI of a multi-tenant ingestion platform
//! whose tenants bring their pipelines as WebAssembly components.

pub mod api;
pub mod backends;
pub mod batch;
pub mod capabilities;
pub mod cli;
pub mod config;
pub mod deadletter;
pub mod pipelines;
pub mod platform;
pub mod runtime;
pub mod stream;
pub mod telemetry;
