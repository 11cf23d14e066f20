//! Platform configuration, the tenant registry and tenants' service profiles.
//! Parsing is strict (unknown fields are errors) and every error names the
//! file and the field.

mod ids;
mod kind;
mod names;
mod platform_config;
mod profile;
#[cfg(test)]
mod reference;
mod registry;
mod units;

pub use ids::{Name, TenantId};
pub use kind::PipelineKind;
pub use names::{DEAD_LETTER_TOPIC, METRICS_COLLECTION};
pub use platform_config::{
    ApiConfig, ApiToken, BatchManagerConfig, CoredmsConfig, ElasticsearchConfig, KafkaConfig, MessagingConfig, PipelinesConfig,
    PlatformConfig, StreamManagerConfig, read_token_file,
};
pub use profile::{
    BatchPipelineSpec, CollectionSpec, FileConstraints, MAX_WASM_STACK_BYTES, OnSuccess, Profile, Quotas, RESERVED_COLLECTIONS,
    RESERVED_TOPICS, SandboxLimits, SandboxOverrides, Schedule, ServiceAgreement, StreamSpec, StreamThresholds,
};
pub use registry::{Registry, RegistryHandle, Tenant, TenantPaths};
pub use units::ByteSize;

use serde::de::DeserializeOwned;
use std::fmt;
use std::path::{Path, PathBuf};

/// A configuration problem: which file, which field, what is wrong.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub file: PathBuf,
    /// Dotted path of the field (`sandbox.memory_bytes`, `batch[0].files`);
    /// empty when the problem is the whole file.
    pub field: String,
    pub message: String,
}

impl ConfigError {
    pub fn new(file: &Path, field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError { file: file.to_path_buf(), field: field.into(), message: message.into() }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.field.is_empty() || self.field == "." {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}: {}: {}", self.file.display(), self.field, self.message)
        }
    }
}

impl std::error::Error for ConfigError {}

/// Reads a YAML file into `T`, reporting the path of the field that failed.
pub fn load_yaml<T: DeserializeOwned>(file: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(file).map_err(|e| ConfigError::new(file, "", format!("cannot read the file: {e}")))?;
    parse_yaml(file, &text)
}

pub fn parse_yaml<T: DeserializeOwned>(file: &Path, text: &str) -> Result<T, ConfigError> {
    let deserializer = serde_norway::Deserializer::from_str(text);
    serde_path_to_error::deserialize(deserializer).map_err(|error| {
        let field = error.path().to_string();
        let message = error.into_inner().to_string();
        // The YAML parser repeats the enclosing path (`sandbox: ...`); the
        // field already says it.
        let message = match message.split_once(": ") {
            Some((prefix, rest)) if field.starts_with(prefix) => rest.to_string(),
            _ => message,
        };
        ConfigError::new(file, field, message)
    })
}
