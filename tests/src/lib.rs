//! Helpers of the integration tests: the guest components built from source
//! by `build.rs`, and throw-away platforms (a temporary directory with its own
//! registry, profiles, data directory and API port).

use mysimbdp::config::PlatformConfig;
use mysimbdp::pipelines::{self, PipelineKind, PipelineVersion};
use mysimbdp::platform::Platform;
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

/// A tenant id no other test (or earlier run) uses, for shared clusters:
/// the time, the test process (nextest runs each test in a process of its
/// own, two at once) and a count within it. It has no `_`, so its topics are
/// `<id>.<topic>` (an id with `_` has them under the id with `-` for `_`:
/// `mysimbdp::config::TenantId::topic`).
pub fn unique_tenant(base: &str) -> String {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let stamp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() % 100_000_000;
    format!("{base}{stamp}p{}x{n}", std::process::id())
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
    search_url: Option<String>,
    api_token: Option<String>,
    tenant_tokens: Vec<(String, String)>,
    api: String,
    coredms_options: String,
    messaging_options: String,
    pipelines_options: String,
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

    /// Like [`Builder::services`], with OpenSearch reached through `url` (a proxy).
    pub fn services_through(mut self, url: &str) -> Self {
        self.services = true;
        self.search_url = Some(url.to_string());
        self
    }

    /// Adds `key: value` lines to the `coredms:` section of [`Builder::services`].
    pub fn coredms_option(mut self, line: &str) -> Self {
        self.coredms_options.push_str(&format!("  {line}\n"));
        self
    }

    /// Adds `key: value` lines to the `pipelines:` section (which names the
    /// test host as the compiler).
    pub fn pipelines_option(mut self, line: &str) -> Self {
        self.pipelines_options.push_str(&format!("  {line}\n"));
        self
    }

    /// Adds `key: value` lines to the `messaging:` section of [`Builder::services`].
    pub fn messaging_option(mut self, line: &str) -> Self {
        self.messaging_options.push_str(&format!("  {line}\n"));
        self
    }

    /// Appends YAML to the platform configuration.
    /// Guards the host's API with `token` (written to `api-token`, named by
    /// `api.token_file`).
    pub fn api_token(mut self, token: &str) -> Self {
        self.api_token = Some(token.to_string());
        self
    }

    /// Gives tenant `id` its own API token (written to `tenants/<id>-token`,
    /// named by `api_token_file` in the registry).
    pub fn tenant_token(mut self, id: &str, token: &str) -> Self {
        self.tenant_tokens.push((id.to_string(), token.to_string()));
        self
    }

    /// Adds `key: value` lines to the platform config's `api:` section.
    pub fn api(mut self, lines: &str) -> Self {
        for line in lines.lines().filter(|l| !l.trim().is_empty()) {
            self.api.push_str(&format!("  {}\n", line.trim()));
        }
        self
    }

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
            if let Some((_, token)) = self.tenant_tokens.iter().find(|(tenant, _)| tenant == id) {
                std::fs::write(tenants_dir.join(format!("{id}-token")), format!("{token}\n")).unwrap();
                registry.push_str(&format!("    api_token_file: {id}-token\n"));
            }
        }
        std::fs::write(tenants_dir.join("tenants.yaml"), registry).unwrap();
        let port = free_port();
        let mut config = format!("tenants: tenants/tenants.yaml\ndata_dir: var\napi:\n  listen: 127.0.0.1:{port}\n");
        if let Some(token) = &self.api_token {
            std::fs::write(dir.path().join("api-token"), format!("{token}\n")).unwrap();
            config.push_str("  token_file: api-token\n");
        }
        config.push_str(&self.api);
        if self.services {
            let services = Services::from_env();
            config.push_str(&format!(
                "coredms:\n  kind: elasticsearch\n  url: {}\n{}messaging:\n  kind: kafka\n  brokers: {}\n{}",
                self.search_url.as_deref().unwrap_or(&services.elasticsearch_url),
                self.coredms_options,
                services.brokers,
                self.messaging_options
            ));
        }
        // Test binaries cannot be the compiler child; the test host can.
        config.push_str(&format!("pipelines:\n  compiler: {}\n{}", test_host_exe().display(), self.pipelines_options));
        config.push_str(&self.extra);
        let config_file = dir.path().join("mysimbdp.yaml");
        std::fs::write(&config_file, config).unwrap();
        TestPlatform { dir, config_file, port }
    }
}

/// The host's CLI built as `mysimbdp-test-host`, beside the test binaries
/// (`target/<profile>/deps/<test>` → `target/<profile>/`), as cargo builds
/// a package's binaries before its integration tests.
pub fn test_host_exe() -> PathBuf {
    let exe = std::env::current_exe().expect("the test binary");
    let mut dir = exe.parent().expect("a directory").to_path_buf();
    if dir.ends_with("deps") {
        dir.pop();
    }
    dir.join("mysimbdp-test-host")
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
        let registry = self.config().registry().expect("registry");
        let tenant = registry.require(tenant).expect("tenant");
        let name = pipelines::resolve_name(tenant, kind, Some(name)).expect("declared pipeline");
        let bytes = std::fs::read(wasm).unwrap_or_else(|e| panic!("{wasm}: {e}"));
        mysimbdp::platform::PipelineUpload::new(&self.config())
            .and_then(|upload| upload.upload(tenant, kind, &name, &bytes))
            .unwrap_or_else(|e| panic!("{wasm} rejected: {e:#}"))
    }

    /// A config of this platform (same tenants, same data directory) whose
    /// API address is one where no host answers: the CLI with it works locally.
    pub fn config_with_the_api_elsewhere(&self) -> PathBuf {
        let config = std::fs::read_to_string(&self.config_file).unwrap();
        let moved = config.replace(&format!("listen: 127.0.0.1:{}", self.port), &format!("listen: 127.0.0.1:{}", free_port()));
        assert_ne!(moved, config);
        let path = self.dir.path().join("api-elsewhere.yaml");
        std::fs::write(&path, moved).unwrap();
        path
    }

    /// `POST /api/batch/retry` for the tenant's failed files: the files moved back to staging.
    pub async fn retry_failed(&self, tenant: &str) -> Vec<String> {
        let answer = reqwest::Client::new()
            .post(format!("{}/api/batch/retry", self.api()))
            .json(&serde_json::json!({ "tenant": tenant }))
            .send()
            .await
            .unwrap();
        answer.json().await.unwrap()
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

/// A host process (`host run`) of a test platform, killed when dropped so a
/// failed assertion leaves no server behind.
pub struct RunningHost(pub std::process::Child);

impl RunningHost {
    /// Starts `exe host run` (the test crate's `mysimbdp-test-host`) on
    /// `test`'s config and waits until it answers.
    pub async fn start(test: &TestPlatform, exe: &str) -> RunningHost {
        let mut command = test.command(exe);
        command.args(["host", "run"]).stderr(std::process::Stdio::null());
        Self::spawned(test, command).await
    }

    /// As [`RunningHost::start`], with the host's own log (its stderr) in `log`.
    pub async fn start_logging_to(test: &TestPlatform, exe: &str, log: &Path) -> RunningHost {
        let mut command = test.command(exe);
        command.args(["host", "run"]).stderr(std::fs::File::create(log).expect("the host's log file"));
        Self::spawned(test, command).await
    }

    /// The host `command` starts (`host run` on `test`'s config, say under
    /// `prlimit`), once it answers.
    pub async fn spawned(test: &TestPlatform, mut command: std::process::Command) -> RunningHost {
        let child = command.spawn().expect("start the host");
        let host = RunningHost(child);
        let health = format!("{}/api/health", test.api());
        eventually("the host to answer", std::time::Duration::from_secs(60), || {
            let health = health.clone();
            async move { reqwest::get(&health).await.ok().filter(|r| r.status().is_success()).map(drop) }
        })
        .await;
        host
    }
}

impl Drop for RunningHost {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The value of a Prometheus sample (`name{labels}`, as rendered) in `text`.
pub fn prometheus_value(text: &str, sample: &str) -> Option<f64> {
    text.lines().find_map(|line| line.strip_prefix(sample).and_then(|rest| rest.trim().parse().ok()))
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// Lines of a JSON-lines log file, parsed.
pub fn read_log(path: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(path).unwrap_or_default().lines().filter_map(|line| serde_json::from_str(line).ok()).collect()
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

/// A profile of the repository with fields replaced, e.g.
/// `("constraints.max_file_bytes", "100KiB")` (values are YAML).
pub fn profile_with(profile: &str, changes: &[(&str, &str)]) -> String {
    let text = std::fs::read_to_string(repo_root().join(profile)).unwrap_or_else(|e| panic!("{profile}: {e}"));
    let mut value: serde_norway::Value = serde_norway::from_str(&text).unwrap();
    for (key, new) in changes {
        let parts: Vec<&str> = key.split('.').collect();
        let mut cursor = &mut value;
        for part in &parts[..parts.len() - 1] {
            cursor = cursor.get_mut(*part).unwrap_or_else(|| panic!("{profile} has no `{key}`"));
        }
        cursor[*parts.last().unwrap()] = serde_norway::from_str(new).unwrap();
    }
    serde_norway::to_string(&value).unwrap()
}

/// `rows` valid order lines in the retail tenant's CSV format, ids from `first`.
pub fn orders_csv(first: usize, rows: usize) -> String {
    let mut text =
        String::from("order_id,order_date,customer_id,customer_name,country,sku,product,category,quantity,unit_price,discount,currency\n");
    for i in first..first + rows {
        text.push_str(&format!(
            "O-{i:08},2026-{:02}-{:02},C-{:06},Test Customer {},FI,SKU-{},Product {},Gear,{},{}.50,0.1,EUR\n",
            i % 12 + 1,
            i % 28 + 1,
            i % 5000,
            i % 97,
            1000 + i % 8,
            i % 8,
            i % 5 + 1,
            10 + i % 90
        ));
    }
    text
}

/// `rows` valid readings in the sensors tenant's NDJSON format.
pub fn readings_ndjson(first: usize, rows: usize) -> String {
    (first..first + rows)
        .map(|i| {
            format!(
                "{{\"sensor_id\":\"s-{:03}\",\"site\":\"oulu\",\"ts\":\"2026-11-20T{:02}:{:02}:{:02}Z\",\"temperature_c\":{}.5,\"humidity_pct\":60,\"pressure_hpa\":1001,\"battery_v\":3.6}}\n",
                i % 40,
                i % 24,
                i % 60,
                (i / 60) % 60,
                (i % 30) as i64 - 15
            )
        })
        .collect()
}

/// Stages `content` as `name` the way a tenant would (atomic rename).
pub fn stage(test: &TestPlatform, tenant: &str, name: &str, content: &str) {
    let target = test.tenant_dir(tenant).join("staging").join(name);
    let dir = target.parent().unwrap();
    std::fs::create_dir_all(dir).unwrap();
    let partial = dir.join(format!(".{}.part", target.file_name().unwrap().to_string_lossy()));
    std::fs::write(&partial, content).unwrap();
    std::fs::rename(partial, &target).unwrap();
}

/// Waits until the tenant has nothing staged, queued or running.
pub async fn settled(platform: &Platform, tenant: &str, timeout: std::time::Duration) -> mysimbdp::batch::status::TenantStatus {
    let tenant = platform.tenant(tenant).unwrap();
    eventually(&format!("tenant {} to finish its staged files", tenant.id), timeout, || {
        let status = mysimbdp::batch::status::tenant_status(&tenant, 1000).unwrap();
        async move { (status.staged.is_empty() && status.queued.is_empty() && status.running.is_empty()).then_some(status) }
    })
    .await
}

/// Ingestion records of a tenant's batch log.
pub fn ingestions(test: &TestPlatform, tenant: &str) -> Vec<mysimbdp::telemetry::IngestionRecord> {
    read_log(&test.tenant_dir(tenant).join("logs/batch.log"))
        .into_iter()
        .filter(|l| l["type"] == "ingestion")
        .map(|l| serde_json::from_value(l).unwrap())
        .collect()
}

/// OpenSearch/Elasticsearch through its REST API, independently of the host.
pub struct Search {
    pub url: String,
    http: reqwest::Client,
}

impl Search {
    pub fn new(url: &str) -> Search {
        Search { url: url.trim_end_matches('/').to_string(), http: reqwest::Client::new() }
    }

    /// Documents in `index` after a refresh (0 when it does not exist).
    pub async fn count(&self, index: &str) -> u64 {
        let _ = self.http.post(format!("{}/{index}/_refresh", self.url)).send().await;
        let answer: serde_json::Value = self.http.get(format!("{}/{index}/_count", self.url)).send().await.unwrap().json().await.unwrap();
        answer["count"].as_u64().unwrap_or(0)
    }

    /// Hits of a query-string search (sources), up to `size`.
    pub async fn search(&self, index: &str, query: &str, size: usize) -> (u64, Vec<serde_json::Value>) {
        let _ = self.http.post(format!("{}/{index}/_refresh", self.url)).send().await;
        let body = serde_json::json!({ "query": { "query_string": { "query": query } }, "size": size, "track_total_hits": true });
        let answer: serde_json::Value =
            self.http.post(format!("{}/{index}/_search", self.url)).json(&body).send().await.unwrap().json().await.unwrap();
        let total = answer["hits"]["total"]["value"].as_u64().unwrap_or(0);
        let hits = answer["hits"]["hits"].as_array().cloned().unwrap_or_default();
        (total, hits)
    }

    pub async fn indices(&self, pattern: &str) -> Vec<String> {
        let answer: serde_json::Value = self
            .http
            .get(format!("{}/_cat/indices/{pattern}?format=json", self.url))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap_or(serde_json::Value::Null);
        answer.as_array().map(|a| a.iter().filter_map(|i| i["index"].as_str().map(str::to_string)).collect()).unwrap_or_default()
    }

    pub async fn delete(&self, pattern: &str) {
        let _ = self.http.delete(format!("{}/{pattern}", self.url)).send().await;
    }
}

/// `kcat`, a Kafka client independent of the host (Debian package `kcat`).
pub fn kcat(brokers: &str) -> std::process::Command {
    let mut command = std::process::Command::new("kcat");
    command.args(["-b", brokers]);
    command
}

/// Produces `key|value` lines (or bare values) with kcat and waits for acks.
pub fn kcat_produce(brokers: &str, topic: &str, lines: &[String]) {
    use std::io::Write;
    let mut child = kcat(brokers)
        .args(["-P", "-t", topic, "-K", "|", "-X", "acks=all"])
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("kcat is installed (scripts/services.sh install)");
    {
        let stdin = child.stdin.as_mut().unwrap();
        for line in lines {
            writeln!(stdin, "{line}").unwrap();
        }
    }
    assert!(child.wait().unwrap().success(), "kcat could not produce to {topic}");
}

/// Every message of `topic` as kcat's JSON envelopes (headers included).
pub fn kcat_read(brokers: &str, topic: &str) -> Vec<serde_json::Value> {
    let output = kcat(brokers).args(["-C", "-t", topic, "-o", "beginning", "-e", "-J", "-q"]).output().expect("kcat is installed");
    String::from_utf8_lossy(&output.stdout).lines().filter_map(|l| serde_json::from_str(l).ok()).collect()
}

/// kcat's headers (`["k1","v1","k2","v2"]`) as a map.
pub fn kcat_headers(message: &serde_json::Value) -> std::collections::BTreeMap<String, String> {
    let flat = message["headers"].as_array().cloned().unwrap_or_default();
    flat.chunks(2).filter_map(|pair| Some((pair.first()?.as_str()?.to_string(), pair.get(1)?.as_str().unwrap_or("").to_string()))).collect()
}

/// An HTTP proxy in front of the real OpenSearch that injects the failures a
/// busy cluster produces: it answers the first `reject_requests` `_bulk`
/// requests with 429 (then 503), and in the next `_bulk` answers it marks the
/// first `reject_items` items as 429 even though OpenSearch indexed them.
/// While `overloaded` is set it answers every item of every `_bulk` with 429
/// and forwards nothing; while `bulk_delay_ms` is above 0 it holds each
/// `_bulk` that long first (a slow cluster). Everything else passes through
/// unchanged.
pub struct FaultProxy {
    pub url: String,
    pub bulk_requests: Arc<AtomicU32>,
    pub overloaded: Arc<std::sync::atomic::AtomicBool>,
    pub bulk_delay_ms: Arc<std::sync::atomic::AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl FaultProxy {
    pub async fn start(upstream: &str, reject_requests: u32, reject_items: usize) -> FaultProxy {
        use axum::body::Bytes;
        use axum::extract::{Request, State};
        use axum::http::StatusCode;
        use axum::response::{IntoResponse, Response};

        #[derive(Clone)]
        struct Proxy {
            upstream: String,
            http: reqwest::Client,
            bulk_requests: Arc<AtomicU32>,
            reject_requests: u32,
            reject_items: usize,
            overloaded: Arc<std::sync::atomic::AtomicBool>,
            bulk_delay_ms: Arc<std::sync::atomic::AtomicU64>,
        }

        async fn forward(State(proxy): State<Proxy>, request: Request) -> Response {
            let method = request.method().clone();
            let path_and_query = request.uri().path_and_query().map(|p| p.to_string()).unwrap_or_default();
            let content_type = request.headers().get("content-type").cloned();
            let body: Bytes = axum::body::to_bytes(request.into_body(), usize::MAX).await.unwrap_or_default();
            let is_bulk = request_is_bulk(&path_and_query);
            let n = if is_bulk { proxy.bulk_requests.fetch_add(1, Ordering::SeqCst) } else { u32::MAX };
            if is_bulk && n < proxy.reject_requests {
                let status = if n % 2 == 0 { StatusCode::TOO_MANY_REQUESTS } else { StatusCode::SERVICE_UNAVAILABLE };
                let error = serde_json::json!({"error": {"type": "es_rejected_execution_exception", "reason": "injected by the test proxy"}, "status": status.as_u16()});
                return (status, axum::Json(error)).into_response();
            }
            let delay = proxy.bulk_delay_ms.load(Ordering::SeqCst);
            if is_bulk && delay > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            }
            if is_bulk && proxy.overloaded.load(Ordering::SeqCst) {
                // One item per action line (`index` actions carry a source line each).
                let items = body.split(|&b| b == b'\n').filter(|line| !line.is_empty()).count() / 2;
                let item = serde_json::json!({"index": {"status": 429, "error": {"type": "es_rejected_execution_exception", "reason": "overloaded, injected by the test proxy"}}});
                let answer = serde_json::json!({"took": 1, "errors": true, "items": vec![item; items]});
                return (StatusCode::OK, axum::Json(answer)).into_response();
            }
            let mut upstream = proxy.http.request(method, format!("{}{path_and_query}", proxy.upstream)).body(body);
            if let Some(content_type) = content_type {
                upstream = upstream.header("content-type", content_type);
            }
            let answer = match upstream.send().await {
                Ok(answer) => answer,
                Err(error) => return (StatusCode::BAD_GATEWAY, error.to_string()).into_response(),
            };
            let status = StatusCode::from_u16(answer.status().as_u16()).unwrap();
            let bytes = answer.bytes().await.unwrap_or_default();
            if is_bulk && n == proxy.reject_requests && proxy.reject_items > 0 {
                let mut body: serde_json::Value = serde_json::from_slice(&bytes).unwrap_or_default();
                if let Some(items) = body.get_mut("items").and_then(|i| i.as_array_mut()) {
                    for item in items.iter_mut().take(proxy.reject_items) {
                        item["index"]["status"] = 429.into();
                        item["index"]["error"] =
                            serde_json::json!({"type": "es_rejected_execution_exception", "reason": "injected by the test proxy"});
                    }
                    body["errors"] = true.into();
                }
                return (status, axum::Json(body)).into_response();
            }
            (status, [("content-type", "application/json")], bytes).into_response()
        }

        fn request_is_bulk(path: &str) -> bool {
            path.split('?').next().is_some_and(|p| p.ends_with("/_bulk"))
        }

        let bulk_requests = Arc::new(AtomicU32::new(0));
        let proxy = Proxy {
            upstream: upstream.trim_end_matches('/').to_string(),
            http: reqwest::Client::new(),
            bulk_requests: bulk_requests.clone(),
            reject_requests,
            reject_items,
            overloaded: Arc::new(std::sync::atomic::AtomicBool::new(false)),
            bulk_delay_ms: Arc::new(std::sync::atomic::AtomicU64::new(0)),
        };
        let (overloaded, bulk_delay_ms) = (proxy.overloaded.clone(), proxy.bulk_delay_ms.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward).with_state(proxy);
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        FaultProxy { url, bulk_requests, overloaded, bulk_delay_ms, task }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A component made to be costly to compile, as a hostile tenant would
/// upload it: one core module of `functions` copies of a function with
/// `locals` i64 locals, all live to its end, and `blocks` blocks that each
/// add locals together and branch. Small on disk, large in Cranelift's
/// work and memory. It imports and exports nothing: the compiler never
/// reaches the world check.
pub fn compile_bomb(functions: u32, locals: u32, blocks: u32) -> Vec<u8> {
    fn leb(mut n: u64, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }
    fn section(id: u8, payload: &[u8], out: &mut Vec<u8>) {
        out.push(id);
        leb(payload.len() as u64, out);
        out.extend_from_slice(payload);
    }
    let get = |i: u32, code: &mut Vec<u8>| {
        code.push(0x20);
        leb(i.into(), code);
    };
    let mut code = Vec::new();
    for b in 0..blocks {
        code.extend_from_slice(&[0x02, 0x40]); // block
        for k in 0..4 {
            get((b * 7 + k * 131) % locals, &mut code);
            get((b * 13 + k * 17) % locals, &mut code);
            code.extend_from_slice(&[0x7c, 0x21]); // i64.add, local.set
            leb(((b * 3 + k) % locals).into(), &mut code);
        }
        get(b % locals, &mut code);
        code.extend_from_slice(&[0xa7, 0x0d, 0x00, 0x0b]); // i32.wrap_i64, br_if 0, end
    }
    code.extend_from_slice(&[0x42, 0x00]); // i64.const 0
    for i in 0..locals {
        get(i, &mut code);
        code.push(0x7c); // i64.add
    }
    code.push(0x0b);
    let mut body = vec![0x01]; // one group of locals
    leb(locals.into(), &mut body);
    body.push(0x7e);
    body.extend_from_slice(&code);
    let mut module = b"\0asm\x01\0\0\0".to_vec();
    section(1, &[0x01, 0x60, 0x00, 0x01, 0x7e], &mut module); // type () -> i64
    let mut declared = Vec::new();
    leb(functions.into(), &mut declared);
    declared.extend(std::iter::repeat_n(0u8, functions as usize));
    section(3, &declared, &mut module);
    let mut bodies = Vec::new();
    leb(functions.into(), &mut bodies);
    for _ in 0..functions {
        leb(body.len() as u64, &mut bodies);
        bodies.extend_from_slice(&body);
    }
    section(10, &bodies, &mut module);
    let mut component = b"\0asm\x0d\0\x01\0".to_vec();
    section(1, &module, &mut component); // a core module of the component
    component
}

/// Asks the host at `api` to run one instance of the tenant's stream; false
/// while it does not answer yes (not up yet, or refusing).
pub async fn start_stream(api: &str, tenant: &str) -> bool {
    let answer = reqwest::Client::new()
        .post(format!("{api}/api/stream/start"))
        .json(&serde_json::json!({ "tenant": tenant, "instances": 1 }))
        .send()
        .await;
    answer.is_ok_and(|a| a.status().is_success())
}
