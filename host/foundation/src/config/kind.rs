//! The two kinds of pipeline a tenant writes, each a world of `wit/pipeline.wit`.

use serde::{Deserialize, Serialize};
use std::fmt;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PipelineKind {
    /// Ingests staged files (world `batch-pipeline`).
    Batch,
    /// Processes batches of messages (world `stream-pipeline`).
    Stream,
}

impl PipelineKind {
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineKind::Batch => "batch",
            PipelineKind::Stream => "stream",
        }
    }

    pub fn world(self) -> &'static str {
        match self {
            PipelineKind::Batch => "mysimbdp:pipeline/batch-pipeline@0.1.0",
            PipelineKind::Stream => "mysimbdp:pipeline/stream-pipeline@0.1.0",
        }
    }
}

impl fmt::Display for PipelineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
