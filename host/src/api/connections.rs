//! The door of the API: the host's own accept loop, so that no client can
//! hold it open or take the host's file descriptors. Every connection must
//! send a whole request header within `api.header_read_timeout_ms` of
//! opening, and again within that long after each answer (an idle
//! keep-alive connection is closed then); a request body must keep arriving
//! at `api.body_min_bytes_per_second` after `api.body_timeout_ms` (408); at
//! most `api.max_connections` are open at once, `api.max_connections_per_client`
//! of them from one address, and never more than the open-files limit
//! leaves after [`RESERVED_FDS`] for the host's own work (staging scans,
//! stores, logs); a connection past a cap is closed at once. Accept errors
//! (the process out of descriptors) are backed off, not spun on.

use crate::config::ApiConfig;
use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use http_body_util::BodyExt;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::HashMap;
use std::future::Future;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::TcpListener;

/// File descriptors kept for the host's own work whatever clients do: its
/// stores' segments, the manifests and logs, staging scans, broker sockets.
pub const RESERVED_FDS: u64 = 256;

/// The most a request body may hold (as axum's default for JSON bodies).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// Why a new connection is closed at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// `api.max_connections` are open, or as many as the open-files limit leaves.
    Total { cap: u64 },
    /// `api.max_connections_per_client` are open from the same address.
    PerClient { cap: usize },
}

impl Refusal {
    pub fn label(self) -> &'static str {
        match self {
            Refusal::Total { .. } => "total",
            Refusal::PerClient { .. } => "per_client",
        }
    }
}

/// Whether one more connection may open: `open` are open in all,
/// `from_client` of them from its address; `fd_limit` is the process's soft
/// open-files limit now (the operator may lower it while the host runs).
pub fn admit(config: &ApiConfig, open: u64, from_client: usize, fd_limit: u64) -> Result<(), Refusal> {
    let cap = (config.max_connections as u64).min(fd_limit.saturating_sub(RESERVED_FDS));
    if open >= cap {
        return Err(Refusal::Total { cap });
    }
    if from_client >= config.max_connections_per_client {
        return Err(Refusal::PerClient { cap: config.max_connections_per_client });
    }
    Ok(())
}

/// When a request body that began at `started` must be whole, `received`
/// bytes in: the grace period, plus a second per `min_rate` bytes received
/// (as Apache's mod_reqtimeout `body=20,MinRate=500`).
pub fn body_deadline(started: Instant, received: u64, grace: Duration, min_rate: u64) -> Instant {
    let earned = if min_rate == 0 { Duration::MAX } else { Duration::from_secs_f64(received as f64 / min_rate as f64) };
    started.checked_add(grace.saturating_add(earned)).unwrap_or(started + Duration::from_secs(86_400 * 365))
}

/// The process's soft and hard open-files limits.
pub fn open_files_limit() -> (u64, u64) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes the struct it is given and reads nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return (1024, 1024);
    }
    (limit.rlim_cur, limit.rlim_max)
}

/// Raises the soft open-files limit to the hard one (systemd's default soft
/// limit is 1,024); returns the limits in force after it.
pub fn raise_open_files_limit() -> (u64, u64) {
    let (soft, hard) = open_files_limit();
    if soft < hard {
        let raised = libc::rlimit { rlim_cur: hard, rlim_max: hard };
        // SAFETY: setrlimit reads the struct it is given.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            tracing::warn!(soft, hard, error = %std::io::Error::last_os_error(), "Cannot raise the open-files limit.");
        }
    }
    open_files_limit()
}

/// Connections open, in all and per client address.
#[derive(Default)]
struct Open {
    counts: Mutex<(u64, HashMap<IpAddr, usize>)>,
}

/// One open connection, counted until dropped.
struct Counted {
    open: Arc<Open>,
    client: IpAddr,
}

impl Drop for Counted {
    fn drop(&mut self) {
        let mut counts = self.open.counts.lock().expect("connection counts poisoned");
        counts.0 -= 1;
        if let Some(n) = counts.1.get_mut(&self.client) {
            *n -= 1;
            if *n == 0 {
                counts.1.remove(&self.client);
            }
        }
        metrics::gauge!("mysimbdp_api_connections").set(counts.0 as f64);
    }
}

impl Open {
    fn admit(self: &Arc<Self>, config: &ApiConfig, client: IpAddr) -> Result<Counted, Refusal> {
        let mut counts = self.counts.lock().expect("connection counts poisoned");
        let from_client = counts.1.get(&client).copied().unwrap_or(0);
        admit(config, counts.0, from_client, open_files_limit().0)?;
        counts.0 += 1;
        *counts.1.entry(client).or_default() += 1;
        metrics::gauge!("mysimbdp_api_connections").set(counts.0 as f64);
        Ok(Counted { open: self.clone(), client })
    }
}

/// Serves `app` on `listener` until `shutdown` completes, under the limits
/// of `config`; then waits up to 5 s for the requests in progress.
pub async fn serve(listener: TcpListener, app: axum::Router, config: ApiConfig, shutdown: impl Future<Output = ()>) {
    let open = Arc::new(Open::default());
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    let mut http = hyper::server::conn::http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(Duration::from_millis(config.header_read_timeout_ms)).keep_alive(true);
    let service = hyper_util::service::TowerToHyperService::new(app);
    let mut backoff = Duration::ZERO;
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, client) = match accepted {
            Ok(accepted) => {
                backoff = Duration::ZERO;
                accepted
            }
            Err(error) => {
                // Out of descriptors (or the like): wait, then accept again,
                // instead of spinning on the error.
                backoff = (backoff * 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
                crate::telemetry::events::AcceptFailed { error: &error, backoff }.emit();
                tokio::time::sleep(backoff).await;
                continue;
            }
        };
        let counted = match open.admit(&config, client.ip()) {
            Ok(counted) => counted,
            Err(refusal) => {
                crate::telemetry::events::ConnectionRefused { reason: refusal.label() }.emit();
                drop(stream);
                continue;
            }
        };
        let connection = http.serve_connection(TokioIo::new(stream), service.clone());
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
            drop(counted);
        });
    }
    drop(listener);
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
}

/// Middleware: reads a request's body whole before the handler, answering
/// 408 if it arrives slower than `api.body_min_bytes_per_second` after the
/// `api.body_timeout_ms` grace, and 413 past [`MAX_BODY_BYTES`].
pub async fn read_body_in_time(
    axum::extract::State(config): axum::extract::State<Arc<ApiConfig>>,
    request: Request,
    next: axum::middleware::Next,
) -> Response {
    let (parts, mut body) = request.into_parts();
    let started = Instant::now();
    let grace = Duration::from_millis(config.body_timeout_ms);
    let mut bytes = Vec::new();
    loop {
        let deadline = body_deadline(started, bytes.len() as u64, grace, config.body_min_bytes_per_second);
        let frame = match tokio::time::timeout_at(deadline.into(), body.frame()).await {
            Err(_) => {
                let text = format!(
                    "the request body arrived too slowly: {} bytes in {:.1} s, under {} bytes a second after a grace of {} ms \
                     (api.body_min_bytes_per_second, api.body_timeout_ms)",
                    bytes.len(),
                    started.elapsed().as_secs_f64(),
                    config.body_min_bytes_per_second,
                    config.body_timeout_ms
                );
                return (StatusCode::REQUEST_TIMEOUT, axum::Json(serde_json::json!({ "error": text }))).into_response();
            }
            Ok(None) => break,
            Ok(Some(Err(error))) => {
                let text = format!("the request body could not be read: {error}");
                return (StatusCode::BAD_REQUEST, axum::Json(serde_json::json!({ "error": text }))).into_response();
            }
            Ok(Some(Ok(frame))) => frame,
        };
        if let Ok(data) = frame.into_data() {
            if bytes.len() + data.len() > MAX_BODY_BYTES {
                let text = format!("the request body is over {MAX_BODY_BYTES} bytes, the most the API takes");
                return (StatusCode::PAYLOAD_TOO_LARGE, axum::Json(serde_json::json!({ "error": text }))).into_response();
            }
            bytes.extend_from_slice(&data);
        }
    }
    next.run(Request::from_parts(parts, Body::from(bytes))).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(max_connections: usize, per_client: usize) -> ApiConfig {
        ApiConfig { max_connections, max_connections_per_client: per_client, ..ApiConfig::default() }
    }

    #[test]
    fn connections_are_capped_in_all_per_client_and_by_the_descriptors_left() {
        let cases = [
            // (max, per client, open, from the client, soft limit, outcome)
            (1024, 64, 0, 0, 1_048_576, Ok(())),
            (1024, 64, 1023, 63, 1_048_576, Ok(())),
            (1024, 64, 1024, 0, 1_048_576, Err(Refusal::Total { cap: 1024 })),
            (1024, 64, 10, 64, 1_048_576, Err(Refusal::PerClient { cap: 64 })),
            // A soft limit of 1,024 leaves 768 for clients, whatever the config says.
            (1024, 64, 767, 0, 1024, Ok(())),
            (1024, 64, 768, 0, 1024, Err(Refusal::Total { cap: 768 })),
            // A limit below the reserve admits no client at all.
            (1024, 64, 0, 0, 200, Err(Refusal::Total { cap: 0 })),
            // The total cap is checked first.
            (5, 2, 5, 2, 1_048_576, Err(Refusal::Total { cap: 5 })),
        ];
        for (max, per_client, open, from_client, fd_limit, outcome) in cases {
            assert_eq!(
                admit(&config(max, per_client), open, from_client, fd_limit),
                outcome,
                "max {max}, per client {per_client}, {open} open, {from_client} from the client, limit {fd_limit}"
            );
        }
    }

    #[test]
    fn a_body_earns_a_second_per_min_rate_bytes_after_its_grace() {
        let start = Instant::now();
        let s = Duration::from_secs;
        let cases = [
            // (received, grace, min rate, deadline after the start)
            (0, s(20), 500, s(20)),
            (500, s(20), 500, s(21)),
            (5000, s(20), 500, s(30)),
            (250, s(1), 500, Duration::from_millis(1500)),
            (0, s(1), 1024, s(1)),
        ];
        for (received, grace, rate, after) in cases {
            assert_eq!(body_deadline(start, received, grace, rate), start + after, "{received} bytes, {grace:?}, {rate} B/s");
        }
        // No rate: no deadline that could pass.
        assert!(body_deadline(start, 0, s(1), 0) > start + s(86_400));
    }
}
