//! Batch ingestion: constraints on staged files, and one file through a
//! tenant's batch pipeline.

pub mod constraints;
mod ingest;

pub use ingest::{FileIdentity, identify, ingest_file, ingest_file_with_progress, ingest_path};
