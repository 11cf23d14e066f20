//! The host side of every WIT import, with the bindings generated from
//! `wit/pipeline.wit` beside the implementations that answer them (one file
//! per interface). Each invocation gets a fresh [`HostState`]; its [`Scope`]
//! says which tenant and pipeline the guest acts for, and every name the
//! guest passes is checked and prefixed here.

pub mod bindings;
mod coredms;
pub mod dead_letter;
mod guest_counters;
mod guest_log;
pub mod input_file;
mod messaging;
mod params;
mod quotas;

use crate::backends::{DocumentStore, MessageBus};
use crate::config::{Name, PipelineKind, Tenant};
use crate::config::{RESERVED_COLLECTIONS, RESERVED_TOPICS};
use crate::cpu_shares::Turn;
use crate::telemetry::events;
use crate::telemetry::logs::LogSink;
use guest_log::OutputCapture;
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

/// The shared services every pipeline reaches through its imports.
pub struct Services {
    pub coredms: Arc<dyn DocumentStore>,
    pub messaging: Arc<dyn MessageBus>,
    /// Indices and topics already created, so each is checked once per process.
    ensured: Mutex<HashSet<String>>,
    /// What each tenant has, for its quotas.
    usage: quotas::Usage,
}

impl Services {
    pub fn new(coredms: Arc<dyn DocumentStore>, messaging: Arc<dyn MessageBus>) -> Self {
        Services { coredms, messaging, ensured: Mutex::new(HashSet::new()), usage: quotas::Usage::default() }
    }

    /// Creates the index once per process, with the profile's mappings.
    pub async fn ensure_index(&self, index: &str, mappings: Option<&serde_json::Value>) -> Result<(), crate::backends::SinkError> {
        let key = format!("index:{index}");
        if self.ensured.lock().expect("poisoned").contains(&key) {
            return Ok(());
        }
        self.coredms.ensure_index(index, mappings).await?;
        self.ensured.lock().expect("poisoned").insert(key);
        Ok(())
    }

    /// Creates the topic once per process.
    pub async fn ensure_topic(&self, topic: &str, partitions: i32) -> Result<(), crate::backends::SinkError> {
        let key = format!("topic:{topic}");
        if self.ensured.lock().expect("poisoned").contains(&key) {
            return Ok(());
        }
        self.messaging.ensure_topic(topic, partitions).await?;
        self.ensured.lock().expect("poisoned").insert(key);
        Ok(())
    }
}

/// Who a guest acts for. Shared by the invocations of one pipeline version.
pub struct Scope {
    pub tenant: Arc<Tenant>,
    pub kind: PipelineKind,
    pub pipeline: Name,
    pub version: u32,
    pub parameters: BTreeMap<String, String>,
    pub services: Arc<Services>,
    /// The tenant's batch or stream log.
    pub log: LogSink,
    /// The tenant's guest log: what the guest logs and prints, the calls
    /// refused to it.
    pub guest_log: LogSink,
}

impl Scope {
    /// Who runs, as the telemetry events name it.
    pub fn invocation(&self) -> events::Invocation<'_> {
        events::Invocation { tenant: &self.tenant.id, kind: self.kind, pipeline: self.pipeline.as_str(), version: self.version }
    }

    /// `<tenant>-<collection>`, or why the guest may not use `collection`.
    pub fn index_name(&self, collection: &str) -> Result<String, String> {
        let name = Name::parse(collection).map_err(|e| format!("collection {e}"))?;
        if RESERVED_COLLECTIONS.contains(&name.as_str()) {
            return Err(format!("collection `{name}` is reserved for the host"));
        }
        Ok(self.tenant.id.index(&name))
    }

    /// `<tenant>.<topic>`, or why the guest may not use `topic`.
    pub fn topic_name(&self, topic: &str) -> Result<String, String> {
        let name = Name::parse(topic).map_err(|e| format!("topic {e}"))?;
        if RESERVED_TOPICS.contains(&name.as_str()) {
            return Err(format!("topic `{name}` is reserved for the host; use the dead-letter import"));
        }
        Ok(self.tenant.id.topic(&name))
    }
}

/// Longest refusal message (it names what the guest asked for), marker included.
pub const MAX_DENIAL_BYTES: usize = 512;
/// Refused calls of one invocation written to the tenant's log; the rest are counted.
pub const MAX_DENIALS_LOGGED: u32 = 100;

/// What one invocation did, measured by the host.
#[derive(Debug, Default)]
pub struct Effects {
    pub docs_indexed: u64,
    pub docs_failed: u64,
    pub dead_lettered: u64,
    pub published: u64,
    pub bytes_read: u64,
    /// The first failure of a sink, which makes the invocation a sink error.
    pub sink_error: Option<String>,
    /// The platform call the guest waits in right now, if any: set while a
    /// store or bus is awaited, so a timeout there is the store's, not the
    /// guest's.
    pub waiting_in: Option<&'static str>,
    /// Time spent waiting for the platform's stores and buses, in all calls.
    pub sink_wait: std::time::Duration,
    /// Calls refused because they left the tenant's namespace (the first
    /// [`MAX_DENIALS_LOGGED`] are logged).
    pub denied: u32,
    /// Indices written, to be flushed before the invocation counts as done.
    pub indices: BTreeSet<String>,
    /// The guest's own counters.
    pub counters: BTreeMap<String, u64>,
    pub log_lines: u32,
    pub log_bytes: u64,
    pub log_lines_dropped: u32,
}

/// What the imports of one invocation work with: its scope, what it did,
/// its WASI context (with nothing granted) and resource table. The sandbox
/// keeps it in the invocation's `Store`, beside the memory limiter.
pub struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) scope: Arc<Scope>,
    pub(crate) effects: Effects,
    pub(crate) stdout: OutputCapture,
    pub(crate) stderr: OutputCapture,
    /// The tenant's CPU turn the guest runs in, given back while a call waits.
    turn: Option<Turn>,
}

impl HostState {
    /// A sandbox with no files, no environment, no network: only our imports.
    pub fn new(scope: Arc<Scope>) -> Self {
        let stdout = OutputCapture::default();
        let stderr = OutputCapture::default();
        let wasi = wasmtime_wasi::WasiCtxBuilder::new()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        HostState { wasi, table: ResourceTable::new(), scope, effects: Effects::default(), stdout, stderr, turn: None }
    }

    /// Runs the guest in `turn`: [`HostState::waiting`] gives it back while a call waits.
    pub(crate) fn runs_in(&mut self, turn: Turn) {
        self.turn = Some(turn);
    }

    /// Lets go of the turn once the guest is done: its invocation is no
    /// longer in flight for the tenants' shares.
    pub(crate) fn leaves_turn(&mut self) {
        self.turn = None;
    }

    pub fn table(&mut self) -> &mut ResourceTable {
        &mut self.table
    }

    /// What the invocation did so far.
    pub fn effects(&self) -> &Effects {
        &self.effects
    }

    /// Awaits `work` (a call into a store or bus) as `call`, so the time it
    /// takes counts as the platform's, not the guest's. When the invocation
    /// is cut off inside, `waiting_in` still names the call.
    pub(crate) async fn waiting<T>(&mut self, call: &'static str, work: impl Future<Output = T>) -> T {
        self.effects.waiting_in = Some(call);
        let started = std::time::Instant::now();
        // Waiting takes no core: the tenant's other guests may run meanwhile.
        if let Some(turn) = &self.turn {
            turn.give_back();
        }
        let outcome = work.await;
        // The store's time alone; waiting for the turn again is the tenant's.
        self.effects.sink_wait += started.elapsed();
        if let Some(turn) = &self.turn {
            turn.take().await;
        }
        self.effects.waiting_in = None;
        outcome
    }

    /// Records and logs a refused call; returns the error for the guest.
    /// The reason, which names what the guest asked for, is cut to
    /// [`MAX_DENIAL_BYTES`]; only the first [`MAX_DENIALS_LOGGED`] refusals
    /// of an invocation are logged, the rest counted.
    pub(crate) fn deny(&mut self, what: &str, reason: String) -> bindings::GuestError {
        let message = crate::failure::capped(&format!("{what} denied: {reason}"), MAX_DENIAL_BYTES).into_owned();
        let logged = self.refusal_is_logged();
        let event = events::CallDenied { by: self.scope.invocation(), message: &message };
        if logged {
            event.emit(&self.scope.guest_log);
        } else {
            event.count();
        }
        bindings::GuestError::Denied(message)
    }

    /// Counts one refused call (a denial or a quota) of this invocation;
    /// whether it is among the first [`MAX_DENIALS_LOGGED`], which are logged.
    pub(crate) fn refusal_is_logged(&mut self) -> bool {
        self.effects.denied = self.effects.denied.saturating_add(1);
        self.effects.denied <= MAX_DENIALS_LOGGED
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl bindings::batch::mysimbdp::pipeline::types::Host for HostState {}
