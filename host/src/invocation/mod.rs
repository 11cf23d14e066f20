//! One invocation layer for batch and stream. Given a tenant's pipeline
//! version (loaded: compiled, scoped, with its limits) and an input (a staged
//! file or a batch of messages), [`Invoker::invoke`] runs the invocation in
//! the sandbox, flushes what it wrote, classifies the outcome, and records it
//! (the tenant's log, the metrics, the tenant's `metrics` collection, the
//! guest's counters). The batch manager, the API and the stream instances all
//! come through here; none of them runs the sandbox or flushes a store itself.

mod file;
mod messages;
mod metrics_collection;
mod record;
mod slots;
mod suspended;

pub use suspended::{Suspension, Suspensions};

use crate::backends::InRecord;
use crate::capabilities::{Scope, Services};
use crate::config::{BatchPipelineSpec, Name, PipelineKind, Registry, SandboxLimits, StreamSpec, Tenant};
use crate::failure::Failure;
use crate::opened_file::{FileIdentity, OpenedFile};
use crate::pipelines;
use crate::sandbox::{CompiledPipeline, Sandbox};
use crate::telemetry::IngestionRecord;
use crate::telemetry::logs::Logs;
use anyhow::Context;
use metrics_collection::MetricsCollection;
use slots::TenantSlots;
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

/// Runs invocations and records their outcomes.
pub struct Invoker {
    sandbox: Sandbox,
    services: Arc<Services>,
    logs: Arc<Logs>,
    metrics_collection: MetricsCollection,
    /// Caps each tenant's concurrent file ingestions (`max_concurrent_ingestions`).
    slots: TenantSlots,
    /// Tenants the operator suspended: none of their invocations starts.
    suspended: Suspensions,
}

/// A tenant's pipeline version, ready to be invoked: compiled for its stack
/// limit, with the scope its imports act in and the limits it runs under.
pub struct Loaded {
    compiled: Arc<CompiledPipeline>,
    scope: Arc<Scope>,
    limits: SandboxLimits,
}

impl Loaded {
    /// The version loaded.
    pub fn version(&self) -> u32 {
        self.scope.version
    }
}

/// What an invocation is given.
pub enum Input<'a> {
    /// A file, opened and checked by the caller; read through that
    /// descriptor, never past its checked size.
    File(FileInput),
    /// A polled batch of the tenant's messages.
    Messages(&'a [InRecord]),
}

/// A file for a batch pipeline.
pub struct FileInput {
    pub file: OpenedFile,
    /// The name the guest sees.
    pub name: String,
    /// Size and checksum, when the caller hashed the file already (through
    /// the same descriptor); hashed here otherwise.
    pub identity: Option<FileIdentity>,
    /// Counts the bytes the guest has read, for a progress bar.
    pub progress: Option<Arc<AtomicU64>>,
}

impl FileInput {
    pub fn new(file: OpenedFile, name: &str) -> FileInput {
        FileInput { file, name: name.to_string(), identity: None, progress: None }
    }
}

/// The outcome of one invocation, as recorded.
#[derive(Debug)]
pub struct Invoked {
    pub record: IngestionRecord,
    /// Why it failed; `None` when it succeeded.
    pub failure: Option<Failure>,
}

impl Invoker {
    /// Starts the writer of the tenants' `metrics` collections (it needs a
    /// tokio runtime).
    pub fn new(sandbox: Sandbox, services: Arc<Services>, logs: Arc<Logs>, registry: &Registry, suspended: Suspensions) -> Invoker {
        let metrics_collection = MetricsCollection::start(services.coredms.clone());
        Invoker { sandbox, services, logs, metrics_collection, slots: TenantSlots::new(registry), suspended }
    }

    /// The tenants the operator suspended.
    pub fn suspended(&self) -> &Suspensions {
        &self.suspended
    }

    /// An error if the operator suspended `tenant`: what starts an
    /// ingestion or a stream asks first.
    pub fn ensure_not_suspended(&self, tenant: &crate::config::TenantId) -> anyhow::Result<()> {
        anyhow::ensure!(
            !self.suspended.is_suspended(tenant),
            "tenant `{tenant}` is suspended by the platform operator: none of its ingestions starts until `mysimbdp tenant resume {tenant}`"
        );
        Ok(())
    }

    /// The services the imports reach (stores, broker).
    pub fn services(&self) -> &Arc<Services> {
        &self.services
    }

    pub fn logs(&self) -> &Arc<Logs> {
        &self.logs
    }

    /// Takes in the concurrency caps of a reloaded registry: a changed cap
    /// gets a new semaphore, ingestions holding the old one finish under it.
    pub fn update_slots(&self, registry: &Registry) {
        self.slots.update(registry);
    }

    /// Loads the active version of a tenant's batch pipeline.
    pub async fn load_batch(&self, tenant: &Arc<Tenant>, spec: &BatchPipelineSpec) -> anyhow::Result<Loaded> {
        let limits = tenant.profile.sandbox.with(&spec.sandbox);
        self.load(tenant, PipelineKind::Batch, &spec.name, limits, &spec.parameters).await
    }

    /// Loads the active version of a tenant's stream pipeline.
    pub async fn load_stream(&self, tenant: &Arc<Tenant>, spec: &StreamSpec) -> anyhow::Result<Loaded> {
        let limits = tenant.profile.sandbox.with(&spec.sandbox);
        self.load(tenant, PipelineKind::Stream, &spec.name, limits, &spec.parameters).await
    }

    async fn load(
        &self,
        tenant: &Arc<Tenant>,
        kind: PipelineKind,
        pipeline: &Name,
        limits: SandboxLimits,
        parameters: &BTreeMap<String, String>,
    ) -> anyhow::Result<Loaded> {
        let version = pipelines::active(tenant, kind, pipeline)?;
        let compiled = self
            .sandbox
            .load(&version, limits.max_wasm_stack_bytes.bytes())
            .await
            .with_context(|| format!("cannot load {kind} pipeline `{pipeline}` v{} of tenant `{}`", version.version, tenant.id))?;
        let scope = Arc::new(Scope {
            tenant: tenant.clone(),
            kind,
            pipeline: pipeline.clone(),
            version: version.version,
            parameters: tenant.profile.parameters_for(parameters),
            services: self.services.clone(),
            log: self.logs.tenant(tenant, kind),
            guest_log: self.logs.tenant_guest(tenant, kind),
        });
        Ok(Loaded { compiled, scope, limits })
    }

    /// Runs `loaded` on `input` and records the outcome. An `Err` means the
    /// invocation could not start (a file that cannot be read, a pipeline of
    /// the other kind); a pipeline or sink failure is an `Ok` with the
    /// failure in [`Invoked::failure`] and in its record.
    pub async fn invoke(&self, loaded: &Loaded, input: Input<'_>) -> anyhow::Result<Invoked> {
        let invoked = match input {
            Input::File(file) => self.file(loaded, file).await?,
            Input::Messages(batch) => self.messages(loaded, batch).await,
        };
        self.record(loaded, &invoked.record);
        Ok(invoked)
    }

    /// The tenant's log, the metrics, and the tenant's `metrics` collection.
    fn record(&self, loaded: &Loaded, record: &IngestionRecord) {
        crate::telemetry::events::Ingested(record).emit(&loaded.scope.log);
        self.metrics_collection.push(record);
    }

    /// Writes what is buffered (ingestion records) before the process ends.
    pub async fn close(&self) {
        self.metrics_collection.close().await;
    }
}
