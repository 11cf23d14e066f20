//! Batch ingestion: constraints on staged files, one file through a tenant's
//! batch pipeline, and the manager that schedules staged files.

mod admission;
pub(crate) mod constraints;
mod ingest;
mod lifecycle;
mod manager;
pub mod manifest;
mod scan;
mod schedule;
pub mod staging;
pub mod status;
mod worker;
pub(crate) mod write_stop;

pub use ingest::{FileIdentity, identify, ingest_path};
pub use manager::BatchManager;
