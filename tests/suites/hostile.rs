//! Requests and files as a hostile tenant (or a web page) would send them,
//! against the real host process: query bombs and huge pages refused before
//! any parsing, searches stopped at their time bound, a link swapped under
//! an ingestion, a file appended after its claim, a Host header of another
//! name, the reserved dead-letter topic, and one tenant's flood of requests.

use mysimbdp::pipelines::PipelineKind;
use mysimbdp::telemetry::{IngestionRecord, Outcome};
use mysimbdp_tests::{RunningHost, TestPlatform, artifacts, eventually, orders_csv, profile_with, prometheus_value};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

const HOST: &str = env!("CARGO_BIN_EXE_mysimbdp-test-host");
const QUICK_SCANS: &str = "batch:\n  scan_interval_ms: 200\n  min_file_age_ms: 100\n";
const OPERATOR: &str = "operator-token-0123456789";
const RETAIL: &str = "retail-token-0123456789ab";

/// A client that gives up on a request the host never answers (a query
/// bomb on an unprotected host), so such a test fails instead of hanging.
fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap()
}

fn retail(api: &str) -> TestPlatform {
    let test = TestPlatform::builder().tenant("retail", "tenants/retail/profile.yaml").api(api).config(QUICK_SCANS).build();
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    test
}

async fn ingest(test: &TestPlatform, tenant: &str, path: &std::path::Path) -> IngestionRecord {
    let answer = client()
        .post(format!("{}/api/ingest", test.api()))
        .json(&serde_json::json!({ "tenant": tenant, "path": path }))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.text().await.unwrap());
    answer.json().await.unwrap()
}

/// `GET /api/query` with these parameters: the status and the JSON answer.
async fn query(test: &TestPlatform, params: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let answer = client().get(format!("{}/api/query", test.api())).query(params).send().await.unwrap();
    let status = answer.status().as_u16();
    (status, answer.json().await.unwrap_or(serde_json::Value::Null))
}

async fn searches_running(test: &TestPlatform) -> f64 {
    let text = client().get(format!("{}/metrics", test.api())).send().await.unwrap().text().await.unwrap();
    prometheus_value(&text, "mysimbdp_searches_running{backend=\"embedded\"}").expect("the gauge of running searches is exported")
}

/// The query bomb (25 and 30 nested parentheses pinned a core for minutes),
/// a query too long, a limit of 10^11 and a page too deep are each answered
/// 400 naming the limit, before any parsing; the host goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_bombs_and_huge_pages_are_refused_before_any_parsing() {
    let test = retail("");
    let _host = RunningHost::start(&test, HOST).await;
    let orders = test.dir.path().join("orders.csv");
    std::fs::write(&orders, orders_csv(1, 200)).unwrap();
    assert_eq!(ingest(&test, "retail", &orders).await.records_out, 200);

    let nested = |levels: usize| format!("{}fi{}", "(".repeat(levels), ")".repeat(levels));
    let refusals = [
        (nested(30), "10", "0", "query depth limit"),
        (nested(25), "10", "0", "query depth limit"),
        (format!("{}x", "(".repeat(40)), "10", "0", "query depth limit"),
        // 8 levels around 4 KiB of words took 0.2-0.3 s to parse; escaped `\)` hid 18 levels from a naive count.
        (format!("{}{}{}", "(".repeat(8), "a ".repeat(2040), ")".repeat(8)), "10", "0", "query depth limit"),
        (format!("{}x", r"\):(".repeat(18)), "10", "0", "query depth limit"),
        (format!("{}x", "NOT ".repeat(1000)), "10", "0", "query NOT limit"),
        ("a ".repeat(2100), "10", "0", "query length limit"),
        ("*".to_string(), "100000000000", "0", "limit cap"),
        ("*".to_string(), "1001", "0", "limit cap"),
        ("*".to_string(), "10", "9995", "result window cap"),
    ];
    for (q, limit, offset, limit_named) in &refusals {
        let (status, answer) =
            query(&test, &[("tenant", "retail"), ("collection", "orders"), ("q", q), ("limit", limit), ("offset", offset)]).await;
        assert_eq!(status, 400, "{:.30}… limit {limit} offset {offset}: {answer}", q);
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(limit_named), "{:.30}…: the answer names the limit: {error}", q);
    }

    // Tabs made tantivy's field-name parser quadratic (17 s at depth 8): they are
    // spaces to the stores. A `*` where a term was expected made the parser panic.
    let tabs = "a\t".repeat(1000);
    let (status, answer) = query(&test, &[("tenant", "retail"), ("collection", "orders"), ("q", &tabs), ("limit", "1")]).await;
    assert_eq!(status, 200, "{answer}");
    let (status, answer) = query(&test, &[("tenant", "retail"), ("collection", "orders"), ("q", "*^"), ("limit", "1")]).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap_or_default().contains("not valid query-string syntax"), "{answer}");

    // The host still answers, pages included, and no search is left running.
    let (status, answer) = query(&test, &[("tenant", "retail"), ("collection", "orders"), ("q", &nested(8)), ("limit", "1")]).await;
    assert_eq!((status, answer["total"].as_u64()), (200, Some(0)), "8 levels are within the limit: {answer}");
    let (status, page) =
        query(&test, &[("tenant", "retail"), ("collection", "orders"), ("q", "*"), ("limit", "5"), ("offset", "197")]).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!((page["total"].as_u64(), page["hits"].as_array().map(Vec::len)), (Some(200), Some(3)), "the last page: {page}");
    assert_eq!(searches_running(&test).await, 0.0);
}

/// A search that runs past `api.search_timeout_ms` is answered 503 naming
/// the bound, and its thread has stopped by then: the gauge of running
/// searches is back to 0 when the answer arrives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_search_past_its_time_bound_is_stopped_with_its_thread() {
    let test = retail("search_timeout_ms: 1");
    let _host = RunningHost::start(&test, HOST).await;
    let orders = test.dir.path().join("orders.csv");
    std::fs::write(&orders, orders_csv(1, 100_000)).unwrap();
    assert_eq!(ingest(&test, "retail", &orders).await.records_out, 100_000);

    // The token `o` of every order id, 300 times over (900 terms, within the query
    // limits): 300 posting lists of 100,000 documents intersected, far more than 1 ms of work.
    let heavy = vec!["order_id:o"; 300].join(" ");
    let (status, answer) = query(&test, &[("tenant", "retail"), ("collection", "orders"), ("q", &heavy), ("limit", "10")]).await;
    assert_eq!(status, 503, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("time bound of 1 ms") && error.contains("api.search_timeout_ms"), "{error}");
    assert_eq!(searches_running(&test).await, 0.0, "no search thread outlives its answer");
    // The host goes on serving.
    let health = client().get(format!("{}/api/tenants", test.api())).send().await.unwrap();
    assert_eq!(health.status(), 200);
}

/// A NUL in a field name reached an assertion of tantivy's JSON paths (a 502
/// naming a panicked worker); a phrase of 2,030 terms took 3.5 s of a core.
/// Each is answered 400 naming its rule, before any parsing. A query within
/// every limit that matches nothing but makes the store scan every document
/// is stopped at its bound (503) with its thread.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_characters_and_long_phrases_are_refused_and_a_search_that_finds_nothing_stops_at_its_bound() {
    let test = retail("search_timeout_ms: 10");
    let _host = RunningHost::start(&test, HOST).await;
    // Names of 100 words, `Test Customer` 50 times over.
    let orders = test.dir.path().join("orders.csv");
    std::fs::write(&orders, orders_csv(1, 40_000).replace("Test Customer ", &"Test Customer ".repeat(50))).unwrap();
    assert_eq!(ingest(&test, "retail", &orders).await.records_out, 40_000);

    let phrase = |words: usize| format!("order_id:\"{}\"", vec!["o"; words].join(" "));
    let refusals = [
        ("curr\u{0}ency:eur".to_string(), "control character U+0000"),
        ("\u{0}:eur".to_string(), "control character U+0000"),
        ("customer.\u{1}country:fi".to_string(), "control character U+0001"),
        (phrase(2030), "query term limit"),
        (phrase(33), "phrase term limit"),
        (vec![phrase(30); 9].join(" "), "phrase term limit"),
    ];
    for (q, rule) in &refusals {
        let (status, answer) = query(&test, &[("tenant", "retail"), ("collection", "orders"), ("q", q), ("limit", "10")]).await;
        assert_eq!(status, 400, "{:.40?}…: {answer}", q);
        let error = answer["error"].as_str().unwrap_or_default();
        assert!(error.contains(rule), "{:.40?}…: the answer names the rule: {error}", q);
    }

    // Two phrases of 32 words each that no name holds (never `test test`),
    // each checked at the 50 positions of its word in all 40,000 names:
    // within every limit, matching nothing, 45-80 ms of work on the
    // project's machines, several times the 10 ms bound.
    let never = |word: &str| format!("customer.name:\"{}\"", vec![word; 32].join(" "));
    let nothing = format!("{} {}", never("test"), never("customer"));
    let (status, answer) = query(&test, &[("tenant", "retail"), ("collection", "orders"), ("q", &nothing), ("limit", "10")]).await;
    assert_eq!(status, 503, "{answer}");
    let error = answer["error"].as_str().unwrap_or_default();
    assert!(error.contains("time bound of 10 ms") && error.contains("api.search_timeout_ms"), "{error}");
    assert_eq!(searches_running(&test).await, 0.0, "no search thread outlives its answer");
    // The same host answers a search within its bound.
    let (status, answer) =
        query(&test, &[("tenant", "retail"), ("collection", "orders"), ("q", "order_id:\"O-00000007\""), ("limit", "1")]).await;
    assert_eq!((status, answer["total"].as_u64()), (200, Some(1)), "{answer}");
}

/// A document whose field name holds a NUL (tantivy asserted on it) is
/// dead-lettered naming the field; its neighbours in the same call are
/// written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_document_with_a_control_character_in_a_field_name_is_dead_lettered_naming_it() {
    let test = TestPlatform::builder().tenant("sandbox", "tests/tenants/sandbox.yaml").config(QUICK_SCANS).build();
    test.upload("sandbox", PipelineKind::Batch, "record-documents", artifacts::RECORD_DOCUMENTS);
    let host = RunningHost::start(&test, HOST).await;
    let notes = test.dir.path().join("notes.txt");
    std::fs::write(&notes, "n-1 {\"n\":1}\nn-2 {\"curr\\u0000ency\":\"eur\"}\nn-3 {\"a\":{\"b\\nc\":1}}\nn-4 {\"n\":4}\n").unwrap();
    let record = ingest(&test, "sandbox", &notes).await;
    assert_eq!((record.outcome, record.dead_lettered), (Outcome::Ok, 2), "{record:?}");
    let (status, answer) = query(&test, &[("tenant", "sandbox"), ("collection", "notes"), ("q", ""), ("limit", "10")]).await;
    assert_eq!((status, answer["total"].as_u64()), (200, Some(2)), "{answer}");
    drop(host);
    let platform = test.open().await;
    let letters = platform.messaging().read_all("sandbox.dead-letter", 100, Duration::from_secs(5)).await.unwrap();
    let reasons: Vec<String> = letters
        .iter()
        .map(|letter| {
            let (_, reason) = letter.headers.iter().find(|(key, _)| key == "error-reason").expect("a reason header");
            String::from_utf8_lossy(reason).into_owned()
        })
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert!(
        reasons[0].contains("\"curr\\0ency\" holds the control character U+0000") && reasons[0].contains("field name rule"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("\"b\\nc\" holds the control character U+000A"), "{reasons:?}");
}

/// A tenant names a file in its directory while something swaps it, again
/// and again, for a link to a file outside (another tenant's data, the
/// operator's token). Each request is refused or reads the regular file;
/// nothing of the file outside is ever ingested.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_link_swapped_under_an_ingestion_never_reads_outside_the_tenant() {
    let test =
        TestPlatform::builder().tenant("retail", "tenants/retail/profile.yaml").api_token(OPERATOR).tenant_token("retail", RETAIL).build();
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let _host = RunningHost::start(&test, HOST).await;
    let secret = test.dir.path().join("secret.csv");
    std::fs::write(&secret, orders_csv(900_000, 30)).unwrap();
    let uploads = test.tenant_dir("retail").join("uploads");
    std::fs::create_dir_all(&uploads).unwrap();
    let own = uploads.join("own.csv");
    std::fs::write(&own, orders_csv(1, 30)).unwrap();
    let named = uploads.join("orders.csv");
    std::fs::hard_link(&own, &named).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let swapper = {
        let (stop, own, named, secret, uploads) = (stop.clone(), own.clone(), named.clone(), secret.clone(), uploads.clone());
        std::thread::spawn(move || {
            let (link, file) = (uploads.join(".link"), uploads.join(".file"));
            while !stop.load(Ordering::Relaxed) {
                let _ = std::fs::remove_file(&link);
                std::os::unix::fs::symlink(&secret, &link).unwrap();
                std::fs::rename(&link, &named).unwrap();
                std::thread::sleep(Duration::from_micros(300));
                let _ = std::fs::remove_file(&file);
                std::fs::hard_link(&own, &file).unwrap();
                std::fs::rename(&file, &named).unwrap();
                std::thread::sleep(Duration::from_micros(300));
            }
        })
    };
    let http = client();
    let (mut ingested, mut refused) = (0, 0);
    for _ in 0..40 {
        let answer = http
            .post(format!("{}/api/ingest", test.api()))
            .bearer_auth(RETAIL)
            .json(&serde_json::json!({ "tenant": "retail", "path": named }))
            .send()
            .await
            .unwrap();
        match answer.status().as_u16() {
            200 => {
                let record: IngestionRecord = answer.json().await.unwrap();
                assert_eq!((record.outcome, record.records_out), (Outcome::Ok, 30), "{record:?}");
                ingested += 1;
            }
            403 => {
                let error = answer.text().await.unwrap();
                assert!(error.contains("symbolic link"), "{error}");
                refused += 1;
            }
            status => panic!("answered {status}: {}", answer.text().await.unwrap()),
        }
    }
    stop.store(true, Ordering::Relaxed);
    swapper.join().unwrap();
    assert_eq!(ingested + refused, 40);

    // Only the tenant's own 30 rows (ids come from the content, so re-ingesting
    // overwrites); the secret file's 30 would make 60.
    let answer: serde_json::Value = http
        .get(format!("{}/api/query", test.api()))
        .bearer_auth(RETAIL)
        .query(&[("tenant", "retail"), ("collection", "orders"), ("q", ""), ("limit", "0")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let expected = if ingested > 0 { 30 } else { 0 };
    assert_eq!(answer["total"], expected, "nothing of {} was read ({ingested} ingested, {refused} refused)", secret.display());
}

/// A file claimed by the batch manager and appended to while it waits for a
/// worker is ingested at the size that was checked when it was claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_appended_after_its_claim_is_ingested_at_its_checked_size() {
    let profile = profile_with(
        "tenants/retail/profile.yaml",
        &[
            ("agreement.max_concurrent_ingestions", "1"),
            ("batch", "[{name: slow, files: 'slow-*.csv', sandbox: {deadline_ms: 5000}}, {name: orders, files: '*.csv'}]"),
        ],
    );
    let test = TestPlatform::builder().tenant_yaml("retail", &profile).config(QUICK_SCANS).build();
    test.upload("retail", PipelineKind::Batch, "slow", artifacts::BUSY_WAIT);
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    let _host = RunningHost::start(&test, HOST).await;
    let staging = test.tenant_dir("retail").join("staging");
    let manifest = test.dir.path().join("var/manifests/retail.jsonl");
    let entry = |file: &str, state: &str| {
        let entries = mysimbdp::batch::manifest::read_entries(&manifest).unwrap_or_default();
        let state = serde_json::Value::from(state);
        entries.into_iter().find(|e| e.file == file && serde_json::to_value(e.state).unwrap() == state).map(|e| e.id)
    };

    // The one slot is busy with a slow pipeline, so the next file waits in work/.
    std::fs::write(staging.join("slow-1.csv"), "spin\n").unwrap();
    eventually("slow-1.csv to be ingesting", Duration::from_secs(60), || {
        let found = entry("slow-1.csv", "ingesting");
        async move { found }
    })
    .await;
    let original = orders_csv(1, 100);
    std::fs::write(staging.join("orders.csv"), &original).unwrap();
    let id = eventually("orders.csv to be claimed", Duration::from_secs(30), || {
        let found = entry("orders.csv", "claimed");
        async move { found }
    })
    .await;
    assert!(entry("orders.csv", "ingesting").is_none(), "still waiting for the slot");
    let waiting = test.tenant_dir("retail").join("work").join(format!("{id}-orders.csv"));
    let mut appended = std::fs::OpenOptions::new().append(true).open(&waiting).unwrap();
    std::io::Write::write_all(&mut appended, orders_csv(5000, 50).split_once('\n').unwrap().1.as_bytes()).unwrap();
    drop(appended);

    eventually("orders.csv to be done", Duration::from_secs(60), || {
        let found = entry("orders.csv", "done");
        async move { found }
    })
    .await;
    let records = mysimbdp_tests::ingestions(&test, "retail");
    let record = records.iter().find(|r| r.source == "orders.csv").expect("an ingestion record of orders.csv");
    assert_eq!((record.records_in, record.bytes), (100, original.len() as u64), "read up to the claimed size only: {record:?}");
    let (_, answer) = query(&test, &[("tenant", "retail"), ("collection", "orders"), ("q", ""), ("limit", "0")]).await;
    assert_eq!(answer["total"], 100, "the 50 appended rows were not ingested");
}

/// With no token, a request whose Host header names another host (a web
/// page that rebound its name to 127.0.0.1) is refused 421 saying what to
/// do; the listen address, localhost and `api.allowed_hosts` are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_token_only_requests_naming_this_host_are_served() {
    let test = retail("allowed_hosts: [mysimbdp.internal]");
    let _host = RunningHost::start(&test, HOST).await;
    let port = test.port;
    let http = client();
    let with_host = |path: &str, host: String| http.get(format!("{}{path}", test.api())).header("host", host).send();

    let refused = with_host("/api/tenants", format!("attacker.example:{port}")).await.unwrap();
    assert_eq!(refused.status(), 421);
    let error = refused.text().await.unwrap();
    assert!(error.contains("api.allowed_hosts") && error.contains("api.token_file"), "{error}");
    let orders = test.dir.path().join("orders.csv");
    std::fs::write(&orders, orders_csv(1, 10)).unwrap();
    let ingest = http
        .post(format!("{}/api/ingest", test.api()))
        .header("host", format!("attacker.example:{port}"))
        .json(&serde_json::json!({ "tenant": "retail", "path": orders }))
        .send()
        .await
        .unwrap();
    assert_eq!(ingest.status(), 421, "a rebound page cannot make the host read a file");
    assert!(mysimbdp_tests::ingestions(&test, "retail").is_empty());

    for host in [format!("127.0.0.1:{port}"), format!("localhost:{port}"), format!("mysimbdp.internal:{port}")] {
        assert_eq!(with_host("/api/tenants", host.clone()).await.unwrap().status(), 200, "Host {host}");
    }
    assert_eq!(with_host("/api/health", "anything.example".into()).await.unwrap().status(), 200, "a probe needs no name");
}

/// The dead-letter topic is the host's: `stream produce` to it is refused
/// and nothing is written there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn produce_to_the_reserved_dead_letter_topic_is_refused() {
    let test = retail("");
    let _host = RunningHost::start(&test, HOST).await;
    let produce = |topic: &str| {
        client()
            .post(format!("{}/api/stream/produce", test.api()))
            .json(&serde_json::json!({ "tenant": "retail", "topic": topic, "messages": [{ "value": "{\"forged\": true}" }] }))
            .send()
    };
    let refused = produce("dead-letter").await.unwrap();
    assert_eq!(refused.status(), 403);
    assert!(refused.text().await.unwrap().contains("reserved for the host"));
    assert!(!test.dir.path().join("var/messaging/topics/retail.dead-letter").exists(), "nothing was written to it");
    assert_eq!(produce("clicks").await.unwrap().status(), 200, "other topics are the tenant's");
}

/// A tenant with `api.max_requests_per_tenant` requests in flight gets 429
/// for the next one, on every route it can call (its search, its tenant
/// list, its stream status), while its neighbour is served; once its request
/// is done it is served again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_over_its_request_cap_gets_429_and_its_neighbour_is_served() {
    const SANDBOX: &str = "sandbox-token-0123456789ab";
    let sandbox = std::fs::read_to_string(mysimbdp_tests::repo_root().join("tests/tenants/sandbox.yaml")).unwrap();
    // The busy-wait runs to its deadline: longer here, so the checks below all fall within its request.
    let busy_wait = "files: \"busy-wait*\"\n    sandbox: { deadline_ms: 1500 }";
    assert!(sandbox.contains(busy_wait), "tests/tenants/sandbox.yaml changed: {sandbox}");
    let sandbox = sandbox.replace(busy_wait, "files: \"busy-wait*\"\n    sandbox: { deadline_ms: 6000 }");
    let test = TestPlatform::builder()
        .tenant_yaml("sandbox", &sandbox)
        .tenant("retail", "tenants/retail/profile.yaml")
        .api("max_requests_per_tenant: 1")
        .api_token(OPERATOR)
        .tenant_token("sandbox", SANDBOX)
        .tenant_token("retail", RETAIL)
        .build();
    test.upload("sandbox", PipelineKind::Batch, "busy-wait", artifacts::BUSY_WAIT);
    let _host = RunningHost::start(&test, HOST).await;
    let busy = test.dir.path().join("busy-wait.csv");
    std::fs::write(&busy, "spin\n").unwrap();
    // The operator's request for the tenant counts against the tenant's cap.
    let long = tokio::spawn({
        let (api, busy) = (test.api(), busy.clone());
        async move {
            client()
                .post(format!("{api}/api/ingest"))
                .bearer_auth(OPERATOR)
                .json(&serde_json::json!({ "tenant": "sandbox", "path": busy }))
                .send()
                .await
                .unwrap()
        }
    });
    let http = client();
    let get = |path: &str, token: &str, params: &[(&str, &str)]| {
        let request = http.get(format!("{}{path}", test.api())).bearer_auth(token).query(params).send();
        async move {
            let answer = request.await.unwrap();
            let status = answer.status().as_u16();
            (status, answer.json::<serde_json::Value>().await.unwrap_or(serde_json::Value::Null))
        }
    };
    let params =
        |tenant: &'static str, collection: &'static str| [("tenant", tenant), ("collection", collection), ("q", ""), ("limit", "0")];
    let (status, answer) = eventually("the sandbox tenant's second request to be refused", Duration::from_secs(30), || {
        let refused = get("/api/query", SANDBOX, &params("sandbox", "anything"));
        async move {
            let (status, answer) = refused.await;
            (status == 429).then_some((status, answer))
        }
    })
    .await;
    assert!(answer["error"].as_str().unwrap_or_default().contains("api.max_requests_per_tenant"), "{status}: {answer}");
    // The routes that name no tenant act for the token's: refused alike.
    for path in ["/api/tenants", "/api/stream/status"] {
        let (status, answer) = get(path, SANDBOX, &[]).await;
        assert_eq!(status, 429, "{path}: {answer}");
        assert!(answer["error"].as_str().unwrap_or_default().contains("api.max_requests_per_tenant"), "{path}: {answer}");
    }
    let (status, answer) = get("/api/stream/status", SANDBOX, &[("tenant", "sandbox")]).await;
    assert_eq!(status, 429, "{answer}");
    assert_eq!(get("/api/query", RETAIL, &params("retail", "orders")).await.0, 200, "the neighbour is served meanwhile");
    assert_eq!(get("/api/tenants", RETAIL, &[]).await.0, 200, "the neighbour is served meanwhile");
    let first = long.await.unwrap();
    assert_eq!(first.status(), 200, "the long request itself was served");
    assert_eq!(get("/api/query", SANDBOX, &params("sandbox", "anything")).await.0, 200, "served again once it finished");
    let (status, tenants) = get("/api/tenants", SANDBOX, &[]).await;
    assert_eq!((status, tenants[0]["id"].as_str()), (200, Some("sandbox")), "{tenants}");
    // The sandbox tenant declares no stream: its status is refused for that, no longer for the cap.
    let (status, answer) = get("/api/stream/status", SANDBOX, &[]).await;
    assert_eq!(status, 400, "{answer}");
    assert!(answer["error"].as_str().unwrap_or_default().contains("no stream pipeline"), "{answer}");
}
