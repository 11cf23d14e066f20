//! Batch ingestion: constraints on staged files, one file through a tenant's
//! batch pipeline, and the manager that schedules staged files.

pub(crate) mod constraints;
mod ingest;
mod manager;
pub mod manifest;
mod scan;
pub mod staging;
pub mod status;
mod worker;

pub use ingest::{FileIdentity, identify, ingest_path};
pub use manager::BatchManager;
