//! Helpers of the integration tests: the guest components built from source
//! by `build.rs`, and throw-away platforms (a temporary directory with its own
//! registry, profiles, data directory and API port).

use mysimbdp::config::{PlatformConfig, Registry};
use mysimbdp::pipelines::{self, PipelineKind, PipelineVersion};
use mysimbdp::platform::Platform;
use mysimbdp::runtime::Runtime;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

/// Paths of the compiled guests, e.g. `artifacts::RETAIL_ORDERS`.
pub mod artifacts {
    include!(concat!(env!("OUT_DIR"), "/artifacts.rs"));
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is in the repository").to_path_buf()
}

/// A tenant id no other test (or earlier run) uses, for shared clusters.
pub fn unique_tenant(base: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 100_000_000;
    format!("{base}_{stamp}_{n}")
}

/// Where `scripts/services.sh up` runs Kafka and OpenSearch.
pub struct Services {
    pub brokers: String,
    pub elasticsearch_url: String,
}

impl Services {
    /// The running services, from `eval "$(scripts/services.sh env)"`.
    pub fn from_env() -> Services {
        let get = |name: &str| {
            std::env::var(name).unwrap_or_else(|_| {
                panic!("{name} is not set: start the services with `scripts/services.sh up` and `eval \"$(scripts/services.sh env)\"`, or run scripts/test.sh")
            })
        };
        Services { brokers: get("MYSIMBDP_KAFKA_BROKERS"), elasticsearch_url: get("MYSIMBDP_ELASTICSEARCH_URL") }
    }
}

#[derive(Default)]
pub struct Builder {
    tenants: Vec<(String, String)>,
    services: bool,
    extra: String,
}

impl Builder {
    /// Registers tenant `id` with the profile at `profile` (relative to the
    /// repository, e.g. `tenants/retail/profile.yaml`).
    pub fn tenant(self, id: &str, profile: &str) -> Self {
        let text = std::fs::read_to_string(repo_root().join(profile)).unwrap_or_else(|e| panic!("{profile}: {e}"));
        self.tenant_yaml(id, &text)
    }

    /// Registers tenant `id` with a profile given as text.
    pub fn tenant_yaml(mut self, id: &str, profile: &str) -> Self {
        self.tenants.push((id.to_string(), profile.to_string()));
        self
    }

    /// Uses the real Kafka and OpenSearch instead of the embedded backends.
    pub fn services(mut self) -> Self {
        self.services = true;
        self
    }

    /// Appends YAML to the platform configuration.
    pub fn config(mut self, yaml: &str) -> Self {
        self.extra.push_str(yaml);
        self.extra.push('\n');
        self
    }

    pub fn build(self) -> TestPlatform {
        let dir = tempfile::Builder::new().prefix("mysimbdp-test-").tempdir().expect("temporary directory");
        let tenants_dir = dir.path().join("tenants");
        std::fs::create_dir_all(&tenants_dir).unwrap();
        let mut registry = String::from("tenants:\n");
        for (id, profile) in &self.tenants {
            std::fs::create_dir_all(tenants_dir.join(id)).unwrap();
            std::fs::write(tenants_dir.join(id).join("profile.yaml"), profile).unwrap();
            registry.push_str(&format!("  - id: {id}\n    profile: {id}/profile.yaml\n"));
        }
        std::fs::write(tenants_dir.join("tenants.yaml"), registry).unwrap();
        let port = free_port();
        let mut config = format!(
            "tenants: tenants/tenants.yaml\ndata_dir: var\napi:\n  listen: 127.0.0.1:{port}\n"
        );
        if self.services {
            let services = Services::from_env();
            config.push_str(&format!(
                "coredms:\n  kind: elasticsearch\n  url: {}\nmessaging:\n  kind: kafka\n  brokers: {}\n",
                services.elasticsearch_url, services.brokers
            ));
        }
        config.push_str(&self.extra);
        let config_file = dir.path().join("mysimbdp.yaml");
        std::fs::write(&config_file, config).unwrap();
        TestPlatform { dir, config_file, port }
    }
}

/// A platform in a temporary directory, removed when dropped.
pub struct TestPlatform {
    pub dir: tempfile::TempDir,
    pub config_file: PathBuf,
    pub port: u16,
}

impl TestPlatform {
    pub fn builder() -> Builder {
        Builder::default()
    }

    pub fn config(&self) -> PlatformConfig {
        PlatformConfig::load(Some(&self.config_file)).expect("test config is valid")
    }

    pub async fn open(&self) -> Arc<Platform> {
        Platform::open(self.config()).await.expect("open the test platform")
    }

    /// Checks and stores `wasm` as the next version of a pipeline, as
    /// `mysimbdp pipeline upload` does.
    pub fn upload(&self, tenant: &str, kind: PipelineKind, name: &str, wasm: &str) -> PipelineVersion {
        let registry = Registry::load(&self.config().tenants).expect("registry");
        let tenant = registry.require(tenant).expect("tenant");
        let name = pipelines::resolve_name(tenant, kind, Some(name)).expect("declared pipeline");
        let bytes = std::fs::read(wasm).unwrap_or_else(|e| panic!("{wasm}: {e}"));
        Runtime::new(None).check(kind, &bytes).unwrap_or_else(|e| panic!("{wasm} rejected: {e:#}"));
        pipelines::store(tenant, kind, &name, &bytes).expect("store the pipeline")
    }

    pub fn tenant_dir(&self, tenant: &str) -> PathBuf {
        self.dir.path().join("tenants").join(tenant)
    }

    /// The CLI (built as `mysimbdp-test-host`) with this platform's config.
    pub fn command(&self, exe: &str) -> std::process::Command {
        let mut command = std::process::Command::new(exe);
        command.arg("--config").arg(&self.config_file).env("MYSIMBDP_LOG", "info");
        command
    }

    pub fn api(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Lines of a JSON-lines log file, parsed.
pub fn read_log(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .filter_map(|line| serde_json::from_str(line).ok())
        .collect()
}

/// Polls `check` until it returns `Some`, or panics with `what` after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: std::time::Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = std::time::Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(std::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for: {what}");
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
}
