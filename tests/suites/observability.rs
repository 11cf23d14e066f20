//! Observability and control: a real Prometheus scraping a host, the shipped
//! rules checked by promtool, the stream monitor scaling a slow pipeline up
//! and an idle one down, `mysimbdp stats` against what was ingested, and the
//! operator page in headless Chromium.

use mysimbdp::pipelines::PipelineKind;
use mysimbdp::stream::monitor;
use mysimbdp::telemetry::{IngestionRecord, Outcome};
use mysimbdp_tests::{TestPlatform, artifacts, eventually, orders_csv, profile_with, read_log, readings_ndjson, repo_root};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

const HOST: &str = env!("CARGO_BIN_EXE_mysimbdp-test-host");

/// Kills a child process when dropped, so a failed assertion leaves no server behind.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn two_tenants() -> TestPlatform {
    let test = TestPlatform::builder()
        .tenant("retail", "tenants/retail/profile.yaml")
        .tenant_yaml("sensors", &profile_with("tenants/sensors/profile.yaml", &[("agreement.schedule", "on-arrival")]))
        .config("batch:\n  scan_interval_ms: 200\n  min_file_age_ms: 100\n")
        .build();
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    test.upload("sensors", PipelineKind::Batch, "readings", artifacts::SENSOR_READINGS);
    test
}

async fn start_host(test: &TestPlatform) -> Running {
    let host = Running(test.command(HOST).args(["host", "run"]).stderr(Stdio::null()).spawn().unwrap());
    let health = format!("{}/api/health", test.api());
    eventually("the host to answer", Duration::from_secs(60), || {
        let health = health.clone();
        async move { reqwest::get(&health).await.ok().filter(|r| r.status().is_success()).map(drop) }
    })
    .await;
    host
}

/// Ingests a file through the running host's API, as `mysimbdp ingest` does.
async fn ingest(test: &TestPlatform, tenant: &str, path: &std::path::Path) -> IngestionRecord {
    let answer = reqwest::Client::new()
        .post(format!("{}/api/ingest", test.api()))
        .json(&serde_json::json!({ "tenant": tenant, "path": path }))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.text().await.unwrap());
    answer.json().await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_host_and_answers_per_tenant_counts() {
    let test = two_tenants();
    let _host = start_host(&test).await;
    let orders = test.dir.path().join("orders.csv");
    std::fs::write(&orders, orders_csv(1, 750)).unwrap();
    let readings = test.dir.path().join("readings.ndjson");
    std::fs::write(&readings, readings_ndjson(1, 420)).unwrap();
    let retail = ingest(&test, "retail", &orders).await;
    let sensors = ingest(&test, "sensors", &readings).await;
    assert_eq!((retail.records_in, sensors.records_in), (750, 420));

    // A real Prometheus, scraping the host every second.
    let prometheus_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let config = test.dir.path().join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\nscrape_configs:\n  - job_name: mysimbdp\n    static_configs:\n      - targets: ['127.0.0.1:{}']\n",
            test.port
        ),
    )
    .unwrap();
    let _prometheus = Running(
        Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", test.dir.path().join("tsdb").display()))
            .arg(format!("--web.listen-address=127.0.0.1:{prometheus_port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("prometheus is installed (Debian package prometheus)"),
    );
    for (tenant, expected) in [("retail", 750.0), ("sensors", 420.0)] {
        let query = format!("sum(mysimbdp_records_in_total{{tenant=\"{tenant}\"}})");
        let url = format!("http://127.0.0.1:{prometheus_port}/api/v1/query");
        let value = eventually(&format!("Prometheus to answer {query}"), Duration::from_secs(60), || {
            let (url, query) = (url.clone(), query.clone());
            async move {
                let answer: serde_json::Value =
                    reqwest::Client::new().get(&url).query(&[("query", &query)]).send().await.ok()?.json().await.ok()?;
                let value = answer["data"]["result"][0]["value"][1].as_str()?.parse::<f64>().ok()?;
                Some(value)
            }
        })
        .await;
        assert_eq!(value, expected, "{tenant}");
    }
}

#[test]
fn the_shipped_prometheus_files_pass_promtool() {
    let deploy = repo_root().join("deploy/prometheus");
    for args in [vec!["check", "config", "prometheus.yml"], vec!["check", "rules", "alerts.yml"], vec!["test", "rules", "alerts_test.yml"]]
    {
        let output = Command::new("promtool").args(&args).current_dir(&deploy).output().expect("promtool is installed");
        assert!(
            output.status.success(),
            "promtool {args:?}: {}{}",
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    let dashboard: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(repo_root().join("deploy/grafana/mysimbdp-dashboard.json")).unwrap()).unwrap();
    assert!(dashboard["panels"].as_array().is_some_and(|p| !p.is_empty()));
}

/// A fixture that burns fuel per message falls behind: the monitor alerts and
/// the manager adds instances up to the maximum, never past it. Once idle,
/// the manager removes them down to the minimum, never below it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_stream_is_scaled_up_to_its_maximum_and_down_when_idle() {
    let profile = profile_with(
        "tenants/sensors/profile.yaml",
        &[
            ("stream.name", "slow"),
            ("stream.topics", "[work]"),
            ("stream.partitions", "4"),
            ("stream.min_instances", "1"),
            ("stream.max_instances", "3"),
            ("stream.batch_max_messages", "20"),
            ("stream.parameters", "{spin_per_message: '300000'}"),
            ("stream.thresholds", "{max_avg_ingestion_ms: 50, max_consumer_lag: 100, idle_after_ms: 2000}"),
        ],
    );
    let test = TestPlatform::builder().tenant_yaml("sensors", &profile).config("stream:\n  monitor_interval_ms: 500\n").build();
    test.upload("sensors", PipelineKind::Stream, "slow", artifacts::SLOW_STREAM);
    let platform = test.open().await;
    let manager = platform.stream_manager();
    let monitor = monitor::spawn_monitor(manager.clone());
    let listener = monitor::spawn_alert_listener(manager.clone());
    manager.start("sensors", None).await.unwrap();
    let messages: Vec<mysimbdp::backends::OutRecord> = (0..3000)
        .map(|i| mysimbdp::backends::OutRecord {
            key: Some(format!("k{}", i % 16).into_bytes()),
            value: format!("job {i}").into_bytes(),
            headers: vec![],
        })
        .collect();
    platform.produce("sensors", "work", messages).await.unwrap();

    let instances = || {
        let manager = manager.clone();
        async move { manager.status(Some("sensors")).await.unwrap()[0].instances.len() }
    };
    eventually("the stream to be scaled up to 3 instances", Duration::from_secs(120), || async { (instances().await == 3).then_some(()) })
        .await;
    eventually("the stream to be scaled down to 1 instance once idle", Duration::from_secs(180), || async {
        (instances().await == 1).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(instances().await, 1, "never below the minimum");
    monitor.abort();
    listener.abort();
    manager.stop("sensors").await.unwrap();

    let log = read_log(&test.tenant_dir("sensors").join("logs/stream.log"));
    let scalings: Vec<(u64, u64)> = log
        .iter()
        .filter(|l| l["type"] == "scaling" && l["reason"].as_str().is_some_and(|r| !r.contains("operator")))
        .map(|l| (l["from"].as_u64().unwrap(), l["to"].as_u64().unwrap()))
        .collect();
    assert!(scalings.contains(&(1, 2)) && scalings.contains(&(2, 3)), "{scalings:?}");
    assert!(scalings.contains(&(3, 2)) && scalings.contains(&(2, 1)), "{scalings:?}");
    assert!(scalings.iter().all(|(from, to)| (1..=3).contains(from) && (1..=3).contains(to)), "within bounds: {scalings:?}");
    let decisions: Vec<&str> = log.iter().filter(|l| l["type"] == "decision").filter_map(|l| l["reason"].as_str()).collect();
    assert!(decisions.iter().any(|r| r.starts_with("scaled up")), "{decisions:?}");
    assert!(decisions.iter().any(|r| r.starts_with("scaled down")), "{decisions:?}");
    let alerts: Vec<&str> = log.iter().filter(|l| l["type"] == "alert").filter_map(|l| l["alert"]["alert"].as_str()).collect();
    assert!(alerts.iter().any(|a| *a == "slow-ingestion" || *a == "consumer-lag"), "{alerts:?}");
    assert!(alerts.contains(&"idle"), "{alerts:?}");
    // Alerts also went out on the platform topic, where the manager read them.
    let published = platform.messaging().read_all(monitor::ALERTS_TOPIC, 10_000, Duration::from_secs(5)).await.unwrap();
    assert!(!published.is_empty());
    assert_eq!(platform.search("sensors", "events", "", 0).await.unwrap().total, 3000, "every message was processed");
}

/// `mysimbdp stats` reports what went in and what failed, per tenant.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stats_match_what_was_ingested() {
    let test = TestPlatform::builder()
        .tenant("retail", "tenants/retail/profile.yaml")
        .tenant_yaml("sensors", &profile_with("tenants/sensors/profile.yaml", &[("agreement.schedule", "on-arrival")]))
        .tenant("sandbox", "tests/tenants/sandbox.yaml")
        .build();
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    test.upload("sensors", PipelineKind::Batch, "readings", artifacts::SENSOR_READINGS);
    test.upload("sandbox", PipelineKind::Batch, "spin-forever", artifacts::SPIN_FOREVER);
    let platform = test.open().await;
    let mut expected = std::collections::BTreeMap::new();
    let data = repo_root().join("data");
    for (tenant, file) in [
        ("retail", data.join("retail/orders-2026-11-20.csv")),
        ("retail", data.join("retail/orders-2026-11-21.csv")),
        ("sensors", data.join("sensors/readings-2026-11-20.ndjson")),
    ] {
        let record = platform.ingest_path(tenant, None, &file, None).await.unwrap();
        let entry = expected.entry(tenant).or_insert((0, 0, 0, 0));
        entry.0 += 1;
        entry.1 += record.records_in;
        entry.2 += record.records_rejected;
        entry.3 += record.bytes;
    }
    let spin = test.dir.path().join("spin-forever.txt");
    std::fs::write(&spin, "x\n").unwrap();
    let failed = platform.ingest_path("sandbox", None, &spin, None).await.unwrap();
    assert_eq!(failed.outcome, Outcome::Failed);
    platform.close().await;

    let output = test.command(HOST).args(["--json", "stats"]).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let stats: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    for (tenant, (files, records_in, rejected, bytes)) in &expected {
        let row = stats["tenants"].as_array().unwrap().iter().find(|t| t["tenant"] == *tenant).unwrap();
        assert_eq!(row["batch"]["ingested"], *files, "{tenant}");
        assert_eq!(row["batch"]["failed"], 0, "{tenant}");
        assert_eq!(row["batch"]["records_in"], *records_in, "{tenant}");
        assert_eq!(row["batch"]["records_rejected"], *rejected, "{tenant}");
        assert_eq!(row["batch"]["bytes"], *bytes, "{tenant}");
        assert!(row["batch"]["p95_ms"].as_f64().unwrap() >= row["batch"]["avg_ms"].as_f64().unwrap() * 0.5);
    }
    let sandbox = stats["tenants"].as_array().unwrap().iter().find(|t| t["tenant"] == "sandbox").unwrap();
    assert_eq!(sandbox["batch"]["failed"], 1);
    assert_eq!(sandbox["failures"]["out-of-fuel"], 1);
    assert_eq!(stats["platform"]["batch"]["ingested"], 3);
    assert_eq!(stats["platform"]["batch"]["failed"], 1);

    // The text form names the tenants and the failure.
    let text = String::from_utf8(test.command(HOST).args(["stats", "--tenant", "sandbox"]).output().unwrap().stdout).unwrap();
    assert!(text.contains("sandbox") && text.contains("out-of-fuel"), "{text}");
    // `--since` in the future leaves nothing.
    let later = test.command(HOST).args(["--json", "stats", "--since", "2999-01-01T00:00:00Z"]).output().unwrap();
    let later: serde_json::Value = serde_json::from_slice(&later.stdout).unwrap();
    assert!(later["tenants"].as_array().unwrap().is_empty());

    // The same records are searchable in the tenants' metrics collections.
    let platform = test.open().await;
    assert_eq!(platform.search("retail", "metrics", "", 0).await.unwrap().total, 2);
    assert_eq!(platform.search("sandbox", "metrics", "failure:\"out-of-fuel\"", 0).await.unwrap().total, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_operator_page_renders_in_headless_chromium() {
    let test = two_tenants();
    let _host = start_host(&test).await;
    let orders = test.dir.path().join("orders-for-the-page.csv");
    std::fs::write(&orders, orders_csv(1, 100)).unwrap();
    ingest(&test, "retail", &orders).await;
    std::fs::create_dir_all(test.tenant_dir("retail").join("staging")).unwrap();
    std::fs::write(test.tenant_dir("retail").join("staging/notes.txt"), "x").unwrap();
    let quarantine = test.tenant_dir("retail").join("quarantine/notes.txt.reason.json");
    eventually("notes.txt to be quarantined", Duration::from_secs(30), || {
        let exists = quarantine.exists();
        async move { exists.then_some(()) }
    })
    .await;

    let profile = test.dir.path().join("chromium-profile");
    let screenshot = test.dir.path().join("page.png");
    let chromium = |extra: &[String]| {
        let mut command = Command::new("chromium");
        command.args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--window-size=1280,1600",
        ]);
        command.arg(format!("--user-data-dir={}", profile.display())).args(extra).arg(format!("{}/", test.api()));
        command.output().expect("chromium is installed (Debian package chromium)")
    };
    let dom = chromium(&["--dump-dom".to_string()]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("id=\"tenant-retail\"") && dom.contains("id=\"tenant-sensors\""), "{dom}");
    assert!(dom.contains("orders-for-the-page.csv"), "the recent ingestion is listed");
    assert!(dom.contains("notes.txt") && dom.contains("file-type"), "the quarantined file and its rule are listed");
    assert!(dom.contains("v1"), "the active version is shown");
    chromium(&[format!("--screenshot={}", screenshot.display())]);
    let png = std::fs::read(&screenshot).expect("chromium wrote a screenshot");
    assert!(png.starts_with(b"\x89PNG") && png.len() > 10_000, "a real rendering, {} bytes", png.len());
    if let Ok(dir) = std::env::var("MYSIMBDP_SCREENSHOT_DIR") {
        let _ = std::fs::copy(&screenshot, std::path::Path::new(&dir).join("operator-page.png"));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_api_token_guards_every_route_but_health() {
    const TOKEN: &str = "0123456789abcdef-test-token";
    let test = TestPlatform::builder().tenant("retail", "tenants/retail/profile.yaml").api_token(TOKEN).build();
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let _host = start_host(&test).await; // polls /api/health without a token
    let http = reqwest::Client::new();
    let get = |path: &str, authorization: Option<String>| {
        let mut request = http.get(format!("{}{path}", test.api()));
        if let Some(value) = authorization {
            request = request.header("authorization", value);
        }
        request.send()
    };

    for path in ["/api/tenants", "/metrics", "/", "/api/overview"] {
        let refused = get(path, None).await.unwrap();
        assert_eq!(refused.status(), 401, "{path} without a token");
        assert_eq!(refused.headers()["www-authenticate"], "Basic realm=\"mysimbdp\"", "{path}: a browser asks for the token");
        let error: serde_json::Value = refused.json().await.unwrap();
        assert!(error["error"].as_str().unwrap().contains("api.token_file"), "{path}: {error}");

        let wrong = get(path, Some(format!("Bearer {TOKEN}x"))).await.unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
        assert!(wrong.text().await.unwrap().contains("wrong API token"), "{path}");

        let bearer = get(path, Some(format!("Bearer {TOKEN}"))).await.unwrap();
        assert_eq!(bearer.status(), 200, "{path} with the token");
    }
    let tenants: serde_json::Value = get("/api/tenants", Some(format!("Bearer {TOKEN}"))).await.unwrap().json().await.unwrap();
    assert_eq!(tenants[0]["id"], "retail");
    // Basic authentication, as a browser sends it: any user, the token as the password.
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("operator:{TOKEN}"));
    assert_eq!(get("/", Some(format!("Basic {basic}"))).await.unwrap().status(), 200);

    // The CLI sends the token of the config it is given...
    let orders = test.dir.path().join("orders.csv");
    std::fs::write(&orders, orders_csv(1, 40)).unwrap();
    let output = test.command(HOST).args(["--json", "ingest", "--tenant", "retail"]).arg(&orders).output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let record: IngestionRecord = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(record.records_in, 40);
    // ...and without the token it is refused by the host with what to do.
    let open_config = test.dir.path().join("no-token.yaml");
    let config = std::fs::read_to_string(&test.config_file).unwrap();
    std::fs::write(&open_config, config.replace("  token_file: api-token\n", "")).unwrap();
    let output = Command::new(HOST).arg("--config").arg(&open_config).args(["ingest", "--tenant", "retail"]).arg(&orders).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("requires an API token"), "{stderr}");

    // A token file that is too short is a config error naming the field.
    std::fs::write(test.dir.path().join("api-token"), "short\n").unwrap();
    let error = mysimbdp::config::PlatformConfig::load(Some(&test.config_file)).unwrap_err().to_string();
    assert!(error.contains("api.token_file") && error.contains("at least 16 characters"), "{error}");
}

/// The ingestion records of `tenant` once it has any.
async fn first_ingestions(test: &TestPlatform, tenant: &str) -> Vec<IngestionRecord> {
    eventually(&format!("a file of tenant {tenant} to be ingested"), Duration::from_secs(60), || {
        let records = mysimbdp_tests::ingestions(test, tenant);
        async move { (!records.is_empty()).then_some(records) }
    })
    .await
}

/// The control plane without a restart: a tenant added to the registry and a
/// changed profile are taken in by `mysimbdp host reload` (and by SIGHUP); an
/// invalid profile or a removed tenant is refused with the reason, and the
/// host goes on with the registry it had.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_reloads_its_registry_without_a_restart() {
    let test = TestPlatform::builder()
        .tenant("retail", "tenants/retail/profile.yaml")
        .config("batch:\n  scan_interval_ms: 200\n  min_file_age_ms: 100\n")
        .build();
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let host = start_host(&test).await;
    let tenants = test.dir.path().join("tenants");
    let registry = tenants.join("tenants.yaml");
    let both = "tenants:\n  - id: retail\n    profile: retail/profile.yaml\n  - id: sensors\n    profile: sensors/profile.yaml\n";
    let reload = || test.command(HOST).args(["--json", "host", "reload"]).output().unwrap();
    let reloaded = |output: std::process::Output| -> serde_json::Value {
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
        serde_json::from_slice(&output.stdout).unwrap()
    };
    let stage = |tenant: &str, name: &str, text: String| {
        let file = test.dir.path().join(name);
        std::fs::write(&file, text).unwrap();
        let output = test.command(HOST).args(["stage", "put", "--tenant", tenant]).arg(&file).output().unwrap();
        assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    };
    let files_in = |tenant: &str, dir: &str| -> Vec<String> {
        let Ok(entries) = std::fs::read_dir(test.tenant_dir(tenant).join(dir)) else { return Vec::new() };
        entries.map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect()
    };

    // A new tenant is served once the host reloads: its staged file is ingested.
    std::fs::create_dir_all(tenants.join("sensors")).unwrap();
    let sensors = profile_with("tenants/sensors/profile.yaml", &[("agreement.schedule", "on-arrival")]);
    std::fs::write(tenants.join("sensors/profile.yaml"), &sensors).unwrap();
    std::fs::write(&registry, both).unwrap();
    let answer = reloaded(reload());
    assert_eq!(answer["added"], serde_json::json!(["sensors"]), "{answer}");
    assert_eq!(answer["unchanged"], serde_json::json!(["retail"]), "{answer}");
    test.upload("sensors", PipelineKind::Batch, "readings", artifacts::SENSOR_READINGS);
    stage("sensors", "readings.ndjson", readings_ndjson(1, 120));
    let records = first_ingestions(&test, "sensors").await;
    assert_eq!((records[0].outcome, records[0].records_in), (Outcome::Ok, 120));

    // A changed profile applies to the next file: retail now takes files of at most 1 KiB.
    let small = profile_with("tenants/retail/profile.yaml", &[("constraints.max_file_bytes", "1KiB")]);
    std::fs::write(tenants.join("retail/profile.yaml"), &small).unwrap();
    let answer = reloaded(reload());
    assert_eq!((answer["changed"].clone(), answer["unchanged"].clone()), (serde_json::json!(["retail"]), serde_json::json!(["sensors"])));
    stage("retail", "orders.csv", orders_csv(1, 40));
    let quarantined = eventually("the too large file to be quarantined", Duration::from_secs(60), || {
        let found = mysimbdp::batch::staging::with_reasons(&test.tenant_dir("retail").join("quarantine"));
        async move { (!found.is_empty()).then_some(found) }
    })
    .await;
    let reason = quarantined[0].1.as_ref().expect("a reason beside the file");
    assert_eq!((reason.rule.as_str(), reason.limit.as_deref()), ("max-file-bytes", Some("1024 bytes")), "{reason:?}");
    assert!(mysimbdp_tests::ingestions(&test, "retail").is_empty(), "nothing of retail was ingested");

    // An invalid profile is refused with its file and field; the registry in force stays.
    std::fs::write(tenants.join("retail/profile.yaml"), format!("{small}surprise: 1\n")).unwrap();
    let output = reload();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("retail/profile.yaml") && stderr.contains("surprise"), "{stderr}");
    // Removing a tenant needs a restart: refused by the host, which names it.
    std::fs::write(tenants.join("retail/profile.yaml"), &small).unwrap();
    std::fs::write(&registry, "tenants:\n  - id: retail\n    profile: retail/profile.yaml\n").unwrap();
    let output = reload();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("`sensors`") && stderr.contains("restart"), "{stderr}");
    // Both tenants are still served, under the registry of the last good reload.
    std::fs::write(&registry, both).unwrap();
    stage("sensors", "more.ndjson", readings_ndjson(200, 30));
    eventually("the second file of the added tenant", Duration::from_secs(60), || {
        let count = mysimbdp_tests::ingestions(&test, "sensors").len();
        async move { (count == 2).then_some(()) }
    })
    .await;
    assert_eq!(files_in("retail", "quarantine").iter().filter(|f| !f.ends_with(".reason.json")).count(), 1);

    // SIGHUP reloads as well: retail's limit goes back to the shipped one and its next file is ingested.
    std::fs::copy(repo_root().join("tenants/retail/profile.yaml"), tenants.join("retail/profile.yaml")).unwrap();
    let hangup = Command::new("kill").arg("-HUP").arg(host.0.id().to_string()).status().unwrap();
    assert!(hangup.success());
    let platform_log = test.dir.path().join("var/logs/platform.log");
    eventually("the platform log to report the reload", Duration::from_secs(30), || {
        let reloads: Vec<_> = read_log(&platform_log).into_iter().filter(|l| l["message"] == "registry reloaded").collect();
        async move { reloads.iter().any(|l| l["changed"] == serde_json::json!(["retail"]) && reloads.len() == 3).then_some(()) }
    })
    .await;
    stage("retail", "orders-again.csv", orders_csv(1, 40));
    let records = first_ingestions(&test, "retail").await; // under the shipped profile
    assert_eq!((records[0].outcome, records[0].records_out), (Outcome::Ok, 40));
}

/// Tenant tokens: a tenant's own token (`api_token_file` in the registry)
/// acts for that tenant only, on its own files; the operator's token acts for
/// all; the registry refuses tokens that would blur the two.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_token_acts_for_its_own_tenant_only() {
    const OPERATOR: &str = "operator-token-0123456789";
    const RETAIL: &str = "retail-token-0123456789ab";
    let test = TestPlatform::builder()
        // Not in alphabetical order, so errors must name the entry as the file has it.
        .tenant("sensors", "tenants/sensors/profile.yaml")
        .tenant("retail", "tenants/retail/profile.yaml")
        .api_token(OPERATOR)
        .tenant_token("retail", RETAIL)
        .build();
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let _host = start_host(&test).await;
    let http = reqwest::Client::new();
    let get = |path: &str, token: &str| http.get(format!("{}{path}", test.api())).bearer_auth(token).send();
    let post =
        |path: &str, token: &str, body: serde_json::Value| http.post(format!("{}{path}", test.api())).bearer_auth(token).json(&body).send();
    let refused = |answer: reqwest::Response, what: &'static str| async move {
        assert_eq!(answer.status(), 403, "{what}");
        answer.json::<serde_json::Value>().await.unwrap()["error"].as_str().unwrap().to_string()
    };

    // Its own tenant: listed alone, its files ingested, its collections searched.
    let listed: serde_json::Value = get("/api/tenants", RETAIL).await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().iter().map(|t| t["id"].as_str().unwrap()).collect::<Vec<_>>(), ["retail"]);
    let own = test.tenant_dir("retail").join("uploads/orders.csv");
    std::fs::create_dir_all(own.parent().unwrap()).unwrap();
    std::fs::write(&own, orders_csv(1, 40)).unwrap();
    let answer = post("/api/ingest", RETAIL, serde_json::json!({ "tenant": "retail", "path": own })).await.unwrap();
    assert!(answer.status().is_success(), "{}", answer.text().await.unwrap());
    assert_eq!(answer.json::<IngestionRecord>().await.unwrap().records_out, 40);
    let found = get("/api/query?tenant=retail&collection=orders&q=*&limit=1", RETAIL).await.unwrap();
    assert_eq!(found.status(), 200);

    // A file of the host's machine outside the tenant's directory is refused: the path is the host's.
    let outside = test.dir.path().join("orders.csv");
    std::fs::write(&outside, orders_csv(1, 5)).unwrap();
    let error =
        refused(post("/api/ingest", RETAIL, serde_json::json!({ "tenant": "retail", "path": outside })).await.unwrap(), "outside").await;
    assert!(error.contains("stage put"), "{error}");
    // So is a link in its directory to such a file.
    let link = test.tenant_dir("retail").join("uploads/link.csv");
    std::os::unix::fs::symlink(&outside, &link).unwrap();
    refused(post("/api/ingest", RETAIL, serde_json::json!({ "tenant": "retail", "path": link })).await.unwrap(), "link").await;
    // Another tenant is refused, by name.
    let error = refused(get("/api/query?tenant=sensors&collection=readings&q=*", RETAIL).await.unwrap(), "query sensors").await;
    assert!(error.contains("acts for tenant `retail` only, not for `sensors`"), "{error}");
    refused(post("/api/ingest", RETAIL, serde_json::json!({ "tenant": "sensors", "path": own })).await.unwrap(), "ingest sensors").await;
    refused(post("/api/stream/start", RETAIL, serde_json::json!({ "tenant": "sensors" })).await.unwrap(), "stream sensors").await;
    refused(get("/api/stream/status?tenant=sensors", RETAIL).await.unwrap(), "stream status sensors").await;
    // The operator's routes are refused.
    for path in ["/metrics", "/api/overview", "/"] {
        let error = refused(get(path, RETAIL).await.unwrap(), path).await;
        assert!(error.contains("for the platform operator"), "{path}: {error}");
    }
    refused(post("/api/reload", RETAIL, serde_json::json!({})).await.unwrap(), "reload").await;

    // The operator's token acts for every tenant.
    assert_eq!(get("/api/query?tenant=sensors&collection=readings&q=*", OPERATOR).await.unwrap().status(), 200);
    assert_eq!(get("/metrics", OPERATOR).await.unwrap().status(), 200);
    let listed: serde_json::Value = get("/api/tenants", OPERATOR).await.unwrap().json().await.unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // The CLI sends a tenant's token with --token-file.
    let token_file = test.dir.path().join("tenants/retail-token");
    let cli = |tenant: &str| {
        test.command(HOST)
            .arg("--token-file")
            .arg(&token_file)
            .args(["query", "--tenant", tenant, "--collection", "orders", "*"])
            .output()
            .unwrap()
    };
    let output = cli("retail");
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    let output = cli("sensors");
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("acts for tenant `retail` only"));
    let output = test.command(HOST).arg("--token-file").arg(&token_file).args(["host", "reload"]).output().unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("is for the platform operator"), "{stderr}");

    // Tokens that would blur who acts for whom are config errors naming the field.
    let config = || mysimbdp::config::PlatformConfig::load(Some(&test.config_file)).unwrap();
    std::fs::write(&token_file, format!("{OPERATOR}\n")).unwrap();
    let error = config().registry().unwrap_err().to_string();
    assert!(error.contains("tenants[1].api_token_file") && error.contains("operator's token"), "{error}");
    std::fs::write(&token_file, format!("{RETAIL}\n")).unwrap();
    let registry = test.dir.path().join("tenants/tenants.yaml");
    let shipped = std::fs::read_to_string(&registry).unwrap();
    std::fs::write(test.dir.path().join("tenants/sensors-token"), format!("{RETAIL}\n")).unwrap();
    let sensors = "profile: sensors/profile.yaml\n";
    std::fs::write(&registry, shipped.replace(sensors, &format!("{sensors}    api_token_file: sensors-token\n"))).unwrap();
    let error = config().registry().unwrap_err().to_string();
    assert!(error.contains("tenants[1].api_token_file") && error.contains("another tenant"), "{error}");
    std::fs::write(&registry, shipped).unwrap();
    let text = std::fs::read_to_string(&test.config_file).unwrap();
    std::fs::write(&test.config_file, text.replace("  token_file: api-token\n", "")).unwrap();
    let error = config().registry().unwrap_err().to_string();
    assert!(error.contains("need an operator token"), "{error}");
}
