//! The API's door, against the real host process, as anonymous clients
//! would knock (no token is needed to open a connection): idle connections
//! beyond the host's file descriptors, one address holding more than its
//! share, a body sent a byte at a time, and the open-files limit raised at
//! start. The host answers health throughout and a neighbour's file is
//! ingested meanwhile.

use mysimbdp::pipelines::PipelineKind;
use mysimbdp_tests::{RunningHost, TestPlatform, artifacts, eventually, ingestions, orders_csv, stage};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

const HOST: &str = env!("CARGO_BIN_EXE_mysimbdp-test-host");
const QUICK_SCANS: &str = "batch:\n  scan_interval_ms: 200\n  min_file_age_ms: 100\n";

fn retail(api: &str) -> TestPlatform {
    let test = TestPlatform::builder().tenant("retail", "tenants/retail/profile.yaml").api(api).config(QUICK_SCANS).build();
    test.upload("retail", PipelineKind::Batch, "orders", artifacts::RETAIL_ORDERS);
    test
}

fn address(test: &TestPlatform) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], test.port))
}

/// A connection to the host from `from` (any address of 127.0.0.0/8).
async fn connect_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::from((from, 0)))?;
    socket.connect(to).await
}

/// Whether the server has closed `stream` (end of file or a reset) within `wait`.
async fn closed_by_the_server(mut stream: TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(tokio::time::timeout(wait, stream.read(&mut byte)).await, Ok(Ok(0)) | Ok(Err(_)))
}

/// `GET /api/health` answered 200 within a 5 s client timeout, from 127.0.0.1.
async fn healthy(test: &TestPlatform) -> bool {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    client.get(format!("{}/api/health", test.api())).send().await.is_ok_and(|r| r.status().is_success())
}

/// The test process's own soft open-files limit raised to its hard one, so
/// it can hold more connections than the host may.
fn raise_own_open_files_limit() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit and setrlimit read and write the struct they are given.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit), 0);
        limit.rlim_cur = limit.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &limit), 0);
    }
    assert!(limit.rlim_cur >= 4096, "the test needs 4096 descriptors of its own; the hard limit is {}", limit.rlim_max);
}

fn set_open_files_limit(pid: u32, soft: u64, hard: u64) {
    let status = std::process::Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={soft}:{hard}")])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "prlimit --pid {pid} --nofile={soft}:{hard}");
}

/// 1,100 idle connections (no byte sent, no token needed) against a host
/// whose open-files limits were lowered to 1,024 while it runs, so raising
/// its soft limit cannot be what passes this: the host keeps descriptors
/// for its own work, answers health, ingests the neighbour's file staged
/// meanwhile, logs no `Too many open files`, and closes every idle
/// connection once its header-read timeout (3 s here: long enough that the
/// host holds all it admits at once) has passed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_beyond_the_hosts_descriptors_are_closed_and_the_host_keeps_serving() {
    raise_own_open_files_limit();
    let test = retail("header_read_timeout_ms: 3000\nmax_connections_per_client: 100");
    let log = test.dir.path().join("host.log");
    let host = RunningHost::start_logging_to(&test, HOST, &log).await;
    set_open_files_limit(host.0.id(), 1024, 1024);

    // From 127.0.0.2 to 127.0.0.31, so no per-client cap is what refuses them.
    let mut idle = Vec::new();
    for n in 0..1100 {
        let from = [127, 0, 0, 2 + (n % 30) as u8];
        if let Ok(stream) = connect_from(from, address(&test)).await {
            idle.push(stream);
        }
    }
    stage(&test, "retail", "orders-neighbour.csv", &orders_csv(1, 500));
    eventually("health answered within a 5 s client timeout", Duration::from_secs(30), || async { healthy(&test).await.then_some(()) })
        .await;
    let done = eventually("the neighbour's file to be ingested", Duration::from_secs(60), || {
        let records = ingestions(&test, "retail");
        async move { records.into_iter().find(|r| r.source.ends_with("orders-neighbour.csv")) }
    })
    .await;
    assert_eq!((done.outcome, done.records_out), (mysimbdp::telemetry::Outcome::Ok, 500), "{done:?}");

    // Every idle connection is closed by the server: at once past a cap,
    // after the header-read timeout otherwise.
    let opened = idle.len();
    let closed = futures_closed(idle, Duration::from_secs(10)).await;
    assert_eq!(closed, opened, "{closed} of {opened} idle connections closed by the server");
    assert!(healthy(&test).await);
    drop(host);
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("Too many open files"), "the host ran out of descriptors:\n{}", &text[..text.len().min(4000)]);
}

async fn futures_closed(streams: Vec<TcpStream>, wait: Duration) -> usize {
    let tasks: Vec<_> = streams.into_iter().map(|s| tokio::spawn(closed_by_the_server(s, wait))).collect();
    let mut closed = 0;
    for task in tasks {
        closed += usize::from(task.await.unwrap());
    }
    closed
}

/// One address holds at most `api.max_connections_per_client` connections:
/// the rest are closed at once, while another address is served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_beyond_the_per_client_cap_are_closed_while_another_client_is_served() {
    let test = retail("max_connections_per_client: 8\nheader_read_timeout_ms: 30000");
    let _host = RunningHost::start(&test, HOST).await;
    let mut held = Vec::new();
    for _ in 0..20 {
        held.push(connect_from([127, 0, 0, 2], address(&test)).await.unwrap());
    }
    // The first 8 are held open (the timeout is far off); the other 12 closed.
    let mut open = 0;
    let mut refused = 0;
    for stream in held {
        if closed_by_the_server(stream, Duration::from_secs(2)).await {
            refused += 1;
        } else {
            open += 1;
        }
    }
    assert_eq!((open, refused), (8, 12));
    assert!(healthy(&test).await, "127.0.0.1 is served meanwhile");
    let metrics = reqwest::get(format!("{}/metrics", test.api())).await.unwrap().text().await.unwrap();
    let refused_metric = mysimbdp_tests::prometheus_value(&metrics, "mysimbdp_api_connections_refused_total{reason=\"per_client\"}");
    assert_eq!(refused_metric, Some(12.0), "{metrics:.2000}");
}

/// A body sent slower than `api.body_min_bytes_per_second` after its grace
/// is answered 408 naming the setting; the same request sent at once is
/// served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_sent_too_slowly_is_answered_408() {
    let test = retail("body_timeout_ms: 1000\nbody_min_bytes_per_second: 100");
    let _host = RunningHost::start(&test, HOST).await;
    let body = serde_json::json!({ "tenant": "retail", "topic": "clicks", "messages": [{ "value": "x" }] }).to_string();
    let head = format!(
        "POST /api/stream/produce HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        test.port,
        body.len()
    );
    let mut stream = TcpStream::connect(address(&test)).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    // Ten bytes, then a byte every 400 ms: 2.5 bytes a second.
    stream.write_all(&body.as_bytes()[..10]).await.unwrap();
    let mut answer = Vec::new();
    for byte in &body.as_bytes()[10..] {
        tokio::time::sleep(Duration::from_millis(400)).await;
        if stream.write_all(&[*byte]).await.is_err() {
            break;
        }
        let mut chunk = [0u8; 4096];
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(1), stream.read(&mut chunk)).await {
            answer.extend_from_slice(&chunk[..n]);
            if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(answer.contains("api.body_min_bytes_per_second"), "{answer}");

    // Sent at once, the same request is not refused for its pace.
    let quick = reqwest::Client::new()
        .post(format!("{}/api/stream/produce", test.api()))
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_ne!(quick.status().as_u16(), 408, "{}", quick.text().await.unwrap());
}

/// Started with a soft open-files limit below its hard one (systemd's
/// 1,024), the host raises the soft limit to the hard one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_raises_its_soft_open_files_limit_to_the_hard_one() {
    let test = retail("");
    let mut command = std::process::Command::new("prlimit");
    command.args(["--nofile=1024:4096", "--", HOST, "--config"]).arg(&test.config_file).args(["host", "run"]);
    command.stderr(std::process::Stdio::null());
    let host = RunningHost::spawned(&test, command).await;
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", host.0.id())).unwrap();
    let line = limits.lines().find(|l| l.starts_with("Max open files")).unwrap();
    let numbers: Vec<&str> = line.split_whitespace().filter(|w| w.chars().all(|c| c.is_ascii_digit())).collect();
    assert_eq!(numbers, ["4096", "4096"], "{line}");
}
