//! The platform configuration (`--config FILE`): where the shared services
//! are. Without a file, everything is embedded and kept under `var/`.

use super::{ByteSize, ConfigError};
use serde::{Deserialize, Serialize};
use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct PlatformConfig {
    /// The tenant registry.
    #[serde(default = "default_registry")]
    pub tenants: PathBuf,
    /// Where the host keeps its own state (embedded store and log, compiled pipelines, manifests).
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    #[serde(default)]
    pub api: ApiConfig,
    #[serde(default)]
    pub coredms: CoredmsConfig,
    #[serde(default)]
    pub messaging: MessagingConfig,
    #[serde(default)]
    pub batch: BatchManagerConfig,
    #[serde(default)]
    pub stream: StreamManagerConfig,
    #[serde(default)]
    pub pipelines: PipelinesConfig,
}

fn default_registry() -> PathBuf {
    PathBuf::from("tenants/tenants.yaml")
}
fn default_data_dir() -> PathBuf {
    PathBuf::from("var")
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ApiConfig {
    /// Control API, `/metrics` and the operator page.
    pub listen: SocketAddr,
    /// A file holding the API token (one line). With it, every request but
    /// `/api/health` must carry the token, as `Authorization: Bearer TOKEN`
    /// or as the password of HTTP basic authentication (a browser asks for
    /// it); the CLI reads the same file from the same config. Without it the
    /// API is open to whoever can reach `listen`, which by default is this
    /// machine only. Relative to the config file.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// The token read from `token_file` when the config was loaded.
    #[serde(skip)]
    pub token: Option<ApiToken>,
    /// The token this process sends to a host, when not the one above (the
    /// CLI's `--token-file`, e.g. a tenant's own).
    #[serde(skip)]
    pub client_token: Option<ApiToken>,
    /// Without a token, requests must name the host in their `Host` header:
    /// `listen` (and `localhost:<port>` when it is a loopback address), or
    /// one of these `name[:port]` entries. A web page a browser on this
    /// machine runs cannot reach the API by DNS rebinding that way.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_hosts: Vec<String>,
    /// How long one search may take before it is stopped (both stores).
    #[serde(default = "default_search_timeout")]
    pub search_timeout_ms: u64,
    /// API requests one tenant may have in flight at once; more are answered 429.
    #[serde(default = "default_requests_per_tenant")]
    pub max_requests_per_tenant: usize,
    /// A connection must send a whole request header within this long after
    /// it opens, and after each answer; else it is closed (an idle
    /// keep-alive connection too).
    #[serde(default = "default_header_read_timeout")]
    pub header_read_timeout_ms: u64,
    /// A request body may take this long before it must keep arriving at
    /// `body_min_bytes_per_second`; a slower one is answered 408.
    #[serde(default = "default_body_timeout")]
    pub body_timeout_ms: u64,
    /// Each second of this many bytes of a body gives it a second more.
    #[serde(default = "default_body_min_rate")]
    pub body_min_bytes_per_second: u64,
    /// Connections open at once, from every client; the open-files limit
    /// lowers it, keeping 256 descriptors for the host's own work. A
    /// connection past the cap is closed at once.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Connections open at once from one client address; past it, closed at once.
    #[serde(default = "default_max_connections_per_client")]
    pub max_connections_per_client: usize,
}

fn default_search_timeout() -> u64 {
    10_000
}
fn default_requests_per_tenant() -> usize {
    8
}
fn default_header_read_timeout() -> u64 {
    10_000
}
fn default_body_timeout() -> u64 {
    10_000
}
fn default_body_min_rate() -> u64 {
    500
}
fn default_max_connections() -> usize {
    1024
}
fn default_max_connections_per_client() -> usize {
    64
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8780)),
            token_file: None,
            token: None,
            client_token: None,
            allowed_hosts: Vec::new(),
            search_timeout_ms: default_search_timeout(),
            max_requests_per_tenant: default_requests_per_tenant(),
            header_read_timeout_ms: default_header_read_timeout(),
            body_timeout_ms: default_body_timeout(),
            body_min_bytes_per_second: default_body_min_rate(),
            max_connections: default_max_connections(),
            max_connections_per_client: default_max_connections_per_client(),
        }
    }
}

/// The API token; `Debug` does not show it, so printing a config cannot leak it.
#[derive(Clone)]
pub struct ApiToken(pub Arc<str>);

impl fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ApiToken(..)")
    }
}

impl ApiConfig {
    /// Reads the token of `token_file`, if there is one.
    fn read_token(&self) -> Result<Option<ApiToken>, ConfigError> {
        self.token_file.as_deref().map(|file| read_token_file(file, "api.token_file")).transpose()
    }
}

/// Reads an API token from `file` (named in the config as `field`): one word
/// of at least 16 visible ASCII characters, since it travels in an HTTP header.
pub fn read_token_file(file: &Path, field: &str) -> Result<ApiToken, ConfigError> {
    let text = std::fs::read_to_string(file)
        .map_err(|e| ConfigError::new(file, field, format!("cannot read the API token: {e}; create the file with one line of text")))?;
    let token = text.trim();
    if token.len() < 16 || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ConfigError::new(
            file,
            field,
            "the token must be one word of at least 16 characters, visible ASCII, e.g. `openssl rand -hex 32 > FILE`",
        ));
    }
    Ok(ApiToken(token.into()))
}

/// The document store behind the `coredms` import.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum CoredmsConfig {
    /// tantivy indices under `<data_dir>/coredms`.
    #[default]
    Embedded,
    Elasticsearch(ElasticsearchConfig),
    /// Accepts and discards documents: for benchmarks of the pipeline itself.
    Null,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ElasticsearchConfig {
    /// e.g. `http://127.0.0.1:9200`
    pub url: String,
    #[serde(default)]
    pub username: Option<String>,
    #[serde(default)]
    pub password: Option<String>,
    /// Retries of 429/5xx bulk items before they are reported as failed.
    #[serde(default = "default_retries")]
    pub max_retries: u32,
    /// Timeout of one request.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
}

fn default_retries() -> u32 {
    5
}
fn default_request_timeout() -> u64 {
    30_000
}

/// The message broker behind the `messaging` import and the stream path.
#[derive(Debug, Clone, Default, Deserialize, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum MessagingConfig {
    /// Append-only logs under `<data_dir>/messaging`.
    #[default]
    Embedded,
    Kafka(KafkaConfig),
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaConfig {
    /// Bootstrap servers, e.g. `127.0.0.1:9092`.
    pub brokers: String,
    /// Replication factor of topics the host creates.
    #[serde(default = "default_replication")]
    pub replication_factor: i32,
    /// librdkafka's `max.poll.interval.ms` for stream consumers: a member
    /// that does not poll this long leaves its group. A paused instance
    /// keeps polling, so this bounds nothing of the host's own work.
    #[serde(default = "default_max_poll_interval")]
    pub max_poll_interval_ms: u64,
}

fn default_max_poll_interval() -> u64 {
    300_000
}

fn default_replication() -> i32 {
    1
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct BatchManagerConfig {
    /// Ingestions the host runs at once, over all tenants.
    pub max_parallel_ingestions: usize,
    /// How often staging directories are rescanned besides file events.
    pub scan_interval_ms: u64,
    /// A staged file must be this old (unchanged) before it is picked up, so
    /// files still being written by plain copies are left alone.
    pub min_file_age_ms: u64,
    /// When the host is saturated, waiting this long counts as one point of
    /// priority, so a low-priority tenant is never starved.
    #[serde(default = "default_aging")]
    pub priority_aging_ms: u64,
}

fn default_aging() -> u64 {
    30_000
}

impl Default for BatchManagerConfig {
    fn default() -> Self {
        BatchManagerConfig {
            max_parallel_ingestions: std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2),
            scan_interval_ms: 2_000,
            min_file_age_ms: 1_000,
            priority_aging_ms: default_aging(),
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct StreamManagerConfig {
    /// How often the monitor compares measurements with thresholds.
    pub monitor_interval_ms: u64,
}

impl Default for StreamManagerConfig {
    fn default() -> Self {
        StreamManagerConfig { monitor_interval_ms: 5_000 }
    }
}

/// Uploading and compiling tenants' components.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelinesConfig {
    /// The largest component `pipeline upload` accepts, checked before the bytes are read.
    pub max_upload_bytes: ByteSize,
    /// CPU time (all threads together) one compilation of a component may use.
    pub compile_cpu_seconds: u64,
    /// Memory (heap and other private mappings) one compilation may use.
    pub compile_memory_bytes: ByteSize,
    /// The program that compiles components in a child process (it must be
    /// a `mysimbdp` binary: it runs its hidden `compile-component` command).
    /// This binary when omitted. Relative to the config file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub compiler: Option<PathBuf>,
    /// Guests of one tenant that run at once, however many of its
    /// invocations are in flight (the others wait for a turn, passed on
    /// every epoch tick): its share of the cores. Default: the cores but one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_slots_per_tenant: Option<usize>,
    /// Whether a tenant whose guests have computed more than another
    /// tenant in flight gives way to it while the CPU is contended
    /// (`cpu_shares.rs`). Default: true.
    pub cpu_give_way: bool,
}

impl Default for PipelinesConfig {
    fn default() -> Self {
        PipelinesConfig {
            max_upload_bytes: ByteSize(64 * ByteSize::MIB),
            compile_cpu_seconds: 120,
            compile_memory_bytes: ByteSize(4 * ByteSize::GIB),
            compiler: None,
            cpu_slots_per_tenant: None,
            cpu_give_way: true,
        }
    }
}

impl Default for PlatformConfig {
    fn default() -> Self {
        PlatformConfig {
            tenants: default_registry(),
            data_dir: default_data_dir(),
            api: ApiConfig::default(),
            coredms: CoredmsConfig::default(),
            messaging: MessagingConfig::default(),
            batch: BatchManagerConfig::default(),
            stream: StreamManagerConfig::default(),
            pipelines: PipelinesConfig::default(),
        }
    }
}

impl PlatformConfig {
    /// Loads `file`, or the embedded defaults when there is none. Relative
    /// paths are resolved against the file's directory (or the current one).
    pub fn load(file: Option<&Path>) -> Result<PlatformConfig, ConfigError> {
        let (mut config, base) = match file {
            Some(file) => {
                let config: PlatformConfig = super::load_yaml(file)?;
                (config, file.parent().map(Path::to_path_buf).unwrap_or_default())
            }
            None => (PlatformConfig::default(), PathBuf::new()),
        };
        let base = if base.as_os_str().is_empty() { PathBuf::from(".") } else { base };
        config.tenants = base.join(&config.tenants);
        config.data_dir = base.join(&config.data_dir);
        config.api.token_file = config.api.token_file.map(|token| base.join(token));
        config.pipelines.compiler = config.pipelines.compiler.map(|compiler| base.join(compiler));
        if let Some(file) = file {
            config.validate(file)?;
        }
        config.api.token = config.api.read_token()?;
        Ok(config)
    }

    /// The tenant registry of this platform.
    pub fn registry(&self) -> Result<super::Registry, ConfigError> {
        super::Registry::load(&self.tenants, &self.data_dir, self.api.token.as_ref())
    }

    fn validate(&self, file: &Path) -> Result<(), ConfigError> {
        if !(1..=600_000).contains(&self.api.search_timeout_ms) {
            return Err(ConfigError::new(file, "api.search_timeout_ms", "must be between 1 and 600000 (10 minutes)"));
        }
        if self.api.max_requests_per_tenant == 0 {
            return Err(ConfigError::new(file, "api.max_requests_per_tenant", "must be at least 1"));
        }
        for (field, value) in
            [("api.header_read_timeout_ms", self.api.header_read_timeout_ms), ("api.body_timeout_ms", self.api.body_timeout_ms)]
        {
            if !(1..=600_000).contains(&value) {
                return Err(ConfigError::new(file, field, "must be between 1 and 600000 (10 minutes)"));
            }
        }
        if self.api.max_connections == 0 || self.api.max_connections_per_client == 0 {
            return Err(ConfigError::new(file, "api.max_connections", "this and api.max_connections_per_client must be at least 1"));
        }
        for (i, host) in self.api.allowed_hosts.iter().enumerate() {
            if host.is_empty() || !host.bytes().all(|b| b.is_ascii_alphanumeric() || b".-:[]".contains(&b)) {
                return Err(ConfigError::new(
                    file,
                    format!("api.allowed_hosts[{i}]"),
                    format!("`{host}` is not a host name with an optional port, e.g. `ingest.example.org:8780`"),
                ));
            }
        }
        let pipelines = &self.pipelines;
        if !(ByteSize::KIB..=ByteSize::GIB).contains(&pipelines.max_upload_bytes.0) {
            return Err(ConfigError::new(file, "pipelines.max_upload_bytes", "must be between 1KiB and 1GiB"));
        }
        if !(1..=3_600).contains(&pipelines.compile_cpu_seconds) {
            return Err(ConfigError::new(file, "pipelines.compile_cpu_seconds", "must be between 1 and 3600 (an hour)"));
        }
        if pipelines.compile_memory_bytes.0 < 16 * ByteSize::MIB {
            return Err(ConfigError::new(file, "pipelines.compile_memory_bytes", "must be at least 16MiB"));
        }
        if pipelines.cpu_slots_per_tenant == Some(0) {
            return Err(ConfigError::new(
                file,
                "pipelines.cpu_slots_per_tenant",
                "must be at least 1 (leave it out for the cores but one)",
            ));
        }
        if self.batch.max_parallel_ingestions == 0 {
            return Err(ConfigError::new(file, "batch.max_parallel_ingestions", "must be at least 1"));
        }
        if let CoredmsConfig::Elasticsearch(es) = &self.coredms
            && !(es.url.starts_with("http://") || es.url.starts_with("https://"))
        {
            return Err(ConfigError::new(file, "coredms.url", format!("`{}` must start with http:// or https://", es.url)));
        }
        if let MessagingConfig::Kafka(kafka) = &self.messaging
            && !(6_000..=86_400_000).contains(&kafka.max_poll_interval_ms)
        {
            return Err(ConfigError::new(
                file,
                "messaging.max_poll_interval_ms",
                "must be between 6000 (the consumers' session timeout) and 86400000 (a day)",
            ));
        }
        Ok(())
    }
}
