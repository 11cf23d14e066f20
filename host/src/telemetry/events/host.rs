//! Events of the host as a whole: the platform log, operator suspensions,
//! API refusals, searches in flight and the embedded store's open
//! collections.

use crate::config::TenantId;
use crate::telemetry::logs::LogSink;

/// Collections the embedded store holds open (`mysimbdp_embedded_collections_open`);
/// idle ones are closed.
pub struct EmbeddedCollectionsOpen {
    pub open: usize,
}

impl EmbeddedCollectionsOpen {
    pub fn emit(&self) {
        metrics::gauge!("mysimbdp_embedded_collections_open").set(self.open as f64);
    }
}

/// Whether the operator suspended a tenant (`mysimbdp_tenant_suspended`, 1 or 0),
/// as the host finds it at start.
pub struct TenantSuspended<'a> {
    pub tenant: &'a TenantId,
    pub suspended: bool,
}

impl TenantSuspended<'_> {
    pub fn emit(&self) {
        metrics::gauge!("mysimbdp_tenant_suspended", "tenant" => self.tenant.to_string()).set(if self.suspended { 1.0 } else { 0.0 });
    }
}

/// A tenant's guests computing now, and waiting for one of its CPU slots
/// (`mysimbdp_guests_computing`, `mysimbdp_guests_waiting_for_cpu`), told
/// at every epoch tick of a guest and when an invocation ends.
pub struct GuestsComputing<'a> {
    pub tenant: &'a str,
    pub computing: usize,
    pub waiting: usize,
}

impl GuestsComputing<'_> {
    pub fn emit(&self) {
        metrics::gauge!("mysimbdp_guests_computing", "tenant" => self.tenant.to_string()).set(self.computing as f64);
        metrics::gauge!("mysimbdp_guests_waiting_for_cpu", "tenant" => self.tenant.to_string()).set(self.waiting as f64);
    }
}

/// A tick after which a guest of `tenant` held its turn idle, giving way to
/// a tenant that had computed less (`mysimbdp_cpu_gave_way_ticks_total`).
pub struct GaveWay<'a> {
    pub tenant: &'a str,
}

impl GaveWay<'_> {
    pub fn emit(&self) {
        metrics::counter!("mysimbdp_cpu_gave_way_ticks_total", "tenant" => self.tenant.to_string()).increment(1);
    }
}

/// A search being worked on (the search thread, the request in flight):
/// `mysimbdp_searches_running` counts it until the guard is dropped, so the
/// gauge falls back only once nothing works on the search any more.
pub struct SearchRunning(&'static str);

impl SearchRunning {
    pub fn start(backend: &'static str) -> SearchRunning {
        metrics::gauge!(SEARCHES_RUNNING, "backend" => backend).increment(1.0);
        SearchRunning(backend)
    }

    /// Present from the start, so a scrape can tell 0 from never measured.
    pub fn register(backend: &'static str) {
        metrics::gauge!(SEARCHES_RUNNING, "backend" => backend).set(0.0);
    }
}

impl Drop for SearchRunning {
    fn drop(&mut self) {
        metrics::gauge!(SEARCHES_RUNNING, "backend" => self.0).decrement(1.0);
    }
}

const SEARCHES_RUNNING: &str = "mysimbdp_searches_running";

/// An API request refused because its tenant had too many in flight.
pub struct RequestRefused<'a> {
    pub tenant: &'a str,
}

impl RequestRefused<'_> {
    pub fn emit(&self) {
        metrics::counter!("mysimbdp_api_requests_refused_total", "tenant" => self.tenant.to_string()).increment(1);
    }
}

/// An operator's `tenant suspend` or `tenant resume`: the platform log's
/// line and `mysimbdp_tenant_suspended`.
pub struct TenantControlled<'a> {
    pub tenant: &'a TenantId,
    /// Suspended now (after a suspend), or not (after a resume).
    pub suspended: bool,
    /// Whether the state changed (a second suspend changes nothing).
    pub changed: bool,
    /// Stream instances stopped (suspend) or started again (resume).
    pub stream_instances: u32,
}

impl TenantControlled<'_> {
    pub fn emit(&self, platform: &LogSink) {
        TenantSuspended { tenant: self.tenant, suspended: self.suspended }.emit();
        let message = if self.suspended { "tenant suspended" } else { "tenant resumed" };
        let fields = serde_json::json!({ "tenant": self.tenant, "changed": self.changed, "stream_instances": self.stream_instances });
        PlatformEvent { level: "info", message, fields }.emit(platform);
    }
}

/// The host started serving: where, and with which stores.
pub struct HostStarted<'a> {
    pub api: std::net::SocketAddr,
    pub tenants: usize,
    pub coredms: &'a str,
    pub messaging: &'a str,
}

impl HostStarted<'_> {
    pub fn emit(&self, platform: &LogSink) {
        let fields = serde_json::json!({ "api": self.api, "tenants": self.tenants, "coredms": self.coredms, "messaging": self.messaging });
        PlatformEvent { level: "info", message: "host started", fields }.emit(platform);
    }
}

/// The host stopped, after its managers finished.
pub struct HostStopped;

impl HostStopped {
    pub fn emit(&self, platform: &LogSink) {
        PlatformEvent { level: "info", message: "host stopped", fields: serde_json::json!({}) }.emit(platform);
    }
}

/// A reload of the tenant registry: the tenants added and changed, or why
/// it was refused (the registry in force is kept).
pub struct RegistryReloaded<'a> {
    pub outcome: Result<(&'a [String], &'a [String]), &'a anyhow::Error>,
}

impl RegistryReloaded<'_> {
    pub fn emit(&self, platform: &LogSink) {
        let event = match self.outcome {
            Ok((added, changed)) => PlatformEvent {
                level: "info",
                message: "registry reloaded",
                fields: serde_json::json!({ "added": added, "changed": changed }),
            },
            Err(error) => PlatformEvent {
                level: "error",
                message: "registry reload failed",
                fields: serde_json::json!({ "error": format!("{error:#}"), "kept": "the registry in force" }),
            },
        };
        event.emit(platform);
    }
}

/// A line of the platform log (and the host's own log), written by the
/// typed events above.
struct PlatformEvent<'a> {
    /// `info`, `warn` or `error`.
    level: &'a str,
    message: &'a str,
    /// More fields of the line.
    fields: serde_json::Value,
}

impl PlatformEvent<'_> {
    fn emit(&self, platform: &LogSink) {
        match self.level {
            "error" => tracing::error!(fields = %self.fields, "{}", self.message),
            "warn" => tracing::warn!(fields = %self.fields, "{}", self.message),
            _ => tracing::info!(fields = %self.fields, "{}", self.message),
        }
        let mut line = serde_json::json!({ "type": "event", "level": self.level, "message": self.message });
        if let (Some(line), serde_json::Value::Object(fields)) = (line.as_object_mut(), &self.fields) {
            line.extend(fields.clone());
        }
        platform.write(&line);
    }
}

/// A connection the API closed at once, past a cap
/// (`mysimbdp_api_connections_refused_total{reason}`: `total` or `per_client`).
pub struct ConnectionRefused {
    pub reason: &'static str,
}

impl ConnectionRefused {
    pub fn emit(&self) {
        metrics::counter!("mysimbdp_api_connections_refused_total", "reason" => self.reason).increment(1);
    }
}

/// Accepting a connection failed (the process out of descriptors, say): the
/// host's log, and the wait before it accepts again.
pub struct AcceptFailed<'a> {
    pub error: &'a std::io::Error,
    pub backoff: std::time::Duration,
}

impl AcceptFailed<'_> {
    pub fn emit(&self) {
        metrics::counter!("mysimbdp_api_accept_errors_total").increment(1);
        tracing::warn!(error = %self.error, backoff_ms = self.backoff.as_millis() as u64, "Accepting a connection failed; waiting before the next.");
    }
}
