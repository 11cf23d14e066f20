//! Batch ingestion: constraints on staged files, one file through a tenant's
//! batch pipeline, and the manager that schedules staged files.

pub mod constraints;
mod ingest;
pub mod manager;
pub mod manifest;
pub mod staging;
pub mod status;

pub use ingest::{FileIdentity, IngestOptions, identify, ingest_file, ingest_file_with, ingest_path, ingest_path_within};
pub use manager::BatchManager;
