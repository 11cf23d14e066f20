//! The lowest layer of the mysimbdp host, a crate of its own so that Cargo
//! keeps it below the rest: nothing here can use the host's other modules.
//! The host re-exports each module under its old path (`mysimbdp::config`,
//! `crate::framed` inside the host).
//!
//! - `config`: the platform config, the tenant registry, service profiles,
//!   pipeline kinds and every tenant-scoped name;
//! - `failure`: every way an invocation can fail;
//! - `framed`: framed records of the host's own append-only files;
//! - `opened_file`: a file to ingest, opened once without following links;
//! - `retry`: the backoff policy of every retry, each wait jittered;
//! - `cpu_shares`: each tenant's CPU slots and its turn;
//! - `host_lock`: one writer per data directory;
//! - `query`: the limits every search is checked against before parsing.

pub mod config;
pub mod cpu_shares;
pub mod failure;
pub mod framed;
pub mod host_lock;
pub mod opened_file;
pub mod query;
pub mod retry;
