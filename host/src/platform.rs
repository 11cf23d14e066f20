//! The composition root: the platform assembled from its configuration (the
//! registry in force, the stores and broker, the sandbox, the invocation
//! layer) and the control operations on it. The host process, the CLI in
//! local mode and the tests start from [`Platform::open`]; the managers get
//! only the parts they use from here.
//!
//! About 430 lines, and whole on purpose: besides wiring the layers it keeps
//! the operator and tenant control operations the API and the CLI call
//! (reload, suspend and resume, `ingest_path`, `search_page`, `produce`,
//! pipeline upload), each a few lines over the layers below; split up, the
//! one place where the layers meet would be several.

use crate::backends::embedded_bus::EmbeddedBus;
use crate::backends::embedded_store::EmbeddedStore;
use crate::backends::null_store::NullStore;
use crate::backends::{DocumentStore, MessageBus, OutRecord, SearchError, SearchRequest, SearchResult};
use crate::batch::BatchManager;
use crate::capabilities::Services;
use crate::config::{
    CoredmsConfig, MessagingConfig, Name, PipelineKind, PlatformConfig, RESERVED_TOPICS, Registry, RegistryHandle, Tenant, TenantId,
};
use crate::invocation::Invoker;
use crate::pipelines::PipelineVersion;
use crate::sandbox::Sandbox;
use crate::stream::StreamManager;
use crate::telemetry::IngestionRecord;
use crate::telemetry::events::{RegistryReloaded, TenantControlled};
use crate::telemetry::logs::Logs;
use anyhow::Context;
use std::io::Read;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;

fn create_dirs(tenant: &Tenant) -> anyhow::Result<()> {
    tenant
        .paths
        .create()
        .with_context(|| format!("cannot create the directories of tenant `{}` under {}", tenant.id, tenant.paths.root.display()))
}

pub struct Platform {
    pub config: PlatformConfig,
    /// The registry in force: replaced whole by [`Platform::reload`].
    registry: RegistryHandle,
    invoker: Arc<Invoker>,
}

/// What a [`Platform::reload`] changed.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub struct Reloaded {
    /// Tenants new in the registry.
    pub added: Vec<String>,
    /// Tenants whose profile changed.
    pub changed: Vec<String>,
    /// Tenants as they were.
    pub unchanged: Vec<String>,
}

impl Platform {
    pub async fn open(config: PlatformConfig) -> anyhow::Result<Arc<Platform>> {
        let registry = config.registry()?;
        for tenant in registry.tenants() {
            create_dirs(tenant)?;
        }
        std::fs::create_dir_all(&config.data_dir)
            .with_context(|| format!("cannot create the data directory {}", config.data_dir.display()))?;
        let coredms: Arc<dyn DocumentStore> = match &config.coredms {
            CoredmsConfig::Embedded => Arc::new(EmbeddedStore::open(&config.data_dir.join("coredms"))?),
            CoredmsConfig::Null => Arc::new(NullStore::default()),
            CoredmsConfig::Elasticsearch(es) => Arc::new(crate::backends::elasticsearch::ElasticStore::connect(es)?),
        };
        let messaging: Arc<dyn MessageBus> = match &config.messaging {
            MessagingConfig::Embedded => Arc::new(EmbeddedBus::open(&config.data_dir.join("messaging"))?),
            MessagingConfig::Kafka(kafka) => Arc::new(crate::backends::kafka::KafkaBus::connect(kafka)?),
        };
        let sandbox = Sandbox::new(Some(&config.data_dir.join("compiled")), &config.pipelines)?;
        let logs = Arc::new(Logs::new(&config.data_dir));
        let suspended = crate::invocation::Suspensions::open(&config.data_dir)?;
        let invoker = Arc::new(Invoker::new(sandbox, Arc::new(Services::new(coredms, messaging)), logs, &registry, suspended));
        for tenant in registry.tenants() {
            crate::telemetry::events::TenantSuspended { tenant: &tenant.id, suspended: invoker.suspended().is_suspended(&tenant.id) }
                .emit();
        }
        Ok(Arc::new(Platform { registry: RegistryHandle::new(registry), invoker, config }))
    }

    /// The registry in force (a snapshot: a reload does not change it).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.current()
    }

    pub fn tenant(&self, id: &str) -> anyhow::Result<Arc<Tenant>> {
        self.registry.tenant(id)
    }

    /// The document store every tenant's collections are in.
    pub fn coredms(&self) -> &Arc<dyn DocumentStore> {
        &self.invoker.services().coredms
    }

    /// The message broker of the tenants' topics.
    pub fn messaging(&self) -> &Arc<dyn MessageBus> {
        &self.invoker.services().messaging
    }

    pub(crate) fn logs(&self) -> &Arc<Logs> {
        self.invoker.logs()
    }

    #[cfg(feature = "test-support")]
    pub(crate) fn services(&self) -> &Arc<Services> {
        self.invoker.services()
    }

    /// Starts a batch manager on this platform's tenants (recovering their
    /// manifests first).
    pub async fn start_batch_manager(&self) -> anyhow::Result<BatchManager> {
        let store_dir = matches!(self.config.coredms, CoredmsConfig::Embedded).then(|| self.config.data_dir.join("coredms"));
        BatchManager::start(self.invoker.clone(), self.registry.clone(), self.config.batch.clone(), self.logs().clone(), store_dir).await
    }

    /// A stream manager for this platform's tenants (nothing runs until a
    /// stream is started).
    pub fn stream_manager(&self) -> Arc<StreamManager> {
        StreamManager::new(self.invoker.clone(), self.registry.clone(), self.config.stream.clone())
    }

    /// Reads the registry and every profile again and puts them in force.
    /// Tenants may be added and profiles changed; what starts afterwards
    /// (ingestions, stream instances) uses the new profiles, what runs keeps
    /// its own. On any error (an invalid profile, a tenant removed) the
    /// registry in force stays as it was.
    pub fn reload(&self) -> anyhow::Result<(Arc<Registry>, Reloaded)> {
        let new = self.config.registry()?;
        let old = self.registry();
        let removed: Vec<&str> = old.tenants().filter(|t| new.get(t.id.as_str()).is_none()).map(|t| t.id.as_str()).collect();
        anyhow::ensure!(
            removed.is_empty(),
            "tenant(s) {} are no longer in {}: removing a tenant needs a host restart; the registry in force is unchanged",
            removed.iter().map(|id| format!("`{id}`")).collect::<Vec<_>>().join(", "),
            new.file.display()
        );
        let mut reloaded = Reloaded::default();
        for tenant in new.tenants() {
            let id = tenant.id.to_string();
            match old.get(tenant.id.as_str()) {
                None => {
                    create_dirs(tenant)?;
                    reloaded.added.push(id);
                }
                Some(before) if serde_json::to_value(&before.profile)? != serde_json::to_value(&tenant.profile)? => {
                    reloaded.changed.push(id)
                }
                Some(_) => reloaded.unchanged.push(id),
            }
        }
        let new = Arc::new(new);
        self.invoker.update_slots(&new);
        self.registry.replace(new.clone());
        Ok((new, reloaded))
    }

    /// [`Platform::reload`], then the batch manager (if this process runs
    /// one) takes in the new tenants and profiles. Written to the platform
    /// log either way.
    pub async fn reload_all(&self, batch: Option<&BatchManager>) -> anyhow::Result<Reloaded> {
        let result = async {
            let (registry, reloaded) = self.reload()?;
            if let Some(batch) = batch {
                batch.adopt(&registry, &reloaded.changed).await?;
            }
            anyhow::Ok(reloaded)
        }
        .await;
        let outcome = result.as_ref().map(|reloaded| (reloaded.added.as_slice(), reloaded.changed.as_slice()));
        RegistryReloaded { outcome }.emit(&self.logs().platform());
        result
    }

    /// Writes what is buffered (ingestion records) before the process ends.
    pub async fn close(&self) {
        self.invoker.close().await;
    }

    /// The index of a tenant's collection.
    pub fn index_name(tenant: &TenantId, collection: &str) -> anyhow::Result<String> {
        let name = Name::parse(collection).map_err(anyhow::Error::msg)?;
        Ok(tenant.index(&name))
    }

    /// Compiles the active version of a tenant's pipeline now (it is kept),
    /// so that the first invocation does not wait for it.
    pub async fn load_pipeline(&self, tenant: &str, kind: PipelineKind, name: &str) -> anyhow::Result<()> {
        let tenant = self.tenant(tenant)?;
        match kind {
            PipelineKind::Batch => {
                let spec = tenant
                    .profile
                    .batch_pipeline(name)
                    .with_context(|| format!("tenant `{}` has no batch pipeline `{name}`", tenant.id))?;
                self.invoker.load_batch(&tenant, spec).await.map(drop)
            }
            PipelineKind::Stream => {
                let spec = tenant.profile.stream.as_ref().with_context(|| format!("tenant `{}` has no stream pipeline", tenant.id))?;
                self.invoker.load_stream(&tenant, spec).await.map(drop)
            }
        }
    }
}

/// What `tenant suspend` or `tenant resume` did.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct SuspendAnswer {
    pub tenant: String,
    /// Whether the tenant is suspended now.
    pub suspended: bool,
    /// Whether this call changed it (`false`: it was so already).
    pub changed: bool,
    /// Since when it is (or was) suspended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub since: Option<String>,
    /// Stream instances stopped by the suspension, or started again by the resumption.
    pub stream_instances: u32,
}

impl Platform {
    /// The tenants the operator suspended.
    pub fn suspensions(&self) -> &crate::invocation::Suspensions {
        self.invoker.suspended()
    }

    /// Suspends a tenant (`mysimbdp tenant suspend`), durably and at once:
    /// none of its ingestions starts (its files wait, staged or claimed),
    /// its stream instances stop after their batch in progress, and the API
    /// refuses its calls. Ingestions running now finish (within their
    /// deadline).
    pub async fn suspend(&self, tenant: &str, stream: Option<&StreamManager>) -> anyhow::Result<SuspendAnswer> {
        let tenant = self.tenant(tenant)?;
        let changed = self.suspensions().suspend(&tenant.id, crate::invocation::Suspension::now())?;
        let mut stopped = 0;
        if let Some(stream) = stream.filter(|_| tenant.profile.stream.is_some()) {
            let running = stream.status(Some(tenant.id.as_str())).await?.into_iter().map(|s| s.instances.len() as u32).sum::<u32>();
            if running > 0 {
                stream.stop(tenant.id.as_str()).await?;
                self.suspensions().stopped_stream(&tenant.id, running)?;
                stopped = running;
            }
        }
        let since = self.suspensions().of(&tenant.id).map(|s| s.since);
        self.control_event(&tenant.id, changed, stopped);
        Ok(SuspendAnswer { tenant: tenant.id.to_string(), suspended: true, changed, since, stream_instances: stopped })
    }

    /// Ends a tenant's suspension (`mysimbdp tenant resume`): its files are
    /// taken again, and the stream instances the suspension stopped start.
    pub async fn resume(
        &self,
        tenant: &str,
        batch: Option<&BatchManager>,
        stream: Option<&StreamManager>,
    ) -> anyhow::Result<SuspendAnswer> {
        let tenant = self.tenant(tenant)?;
        let suspension = self.suspensions().resume(&tenant.id)?;
        let mut started = 0;
        if let (Some(stream), Some(instances)) = (stream, suspension.as_ref().and_then(|s| s.stream_instances)) {
            stream.start(tenant.id.as_str(), Some(instances)).await?;
            started = instances;
        }
        if let Some(batch) = batch {
            batch.rescan();
        }
        self.control_event(&tenant.id, suspension.is_some(), started);
        let since = suspension.map(|s| s.since);
        Ok(SuspendAnswer { tenant: tenant.id.to_string(), suspended: false, changed: since.is_some(), since, stream_instances: started })
    }

    fn control_event(&self, tenant: &TenantId, changed: bool, stream_instances: u32) {
        let suspended = self.suspensions().is_suspended(tenant);
        TenantControlled { tenant, suspended, changed, stream_instances }.emit(&self.logs().platform());
    }

    /// Ingests the file at `path` for `tenant`, with the named batch pipeline
    /// or the first whose `files` pattern matches: [`crate::batch::ingest_path`].
    pub async fn ingest_path(
        &self,
        tenant: &str,
        pipeline: Option<&str>,
        path: &Path,
        progress: Option<Arc<AtomicU64>>,
    ) -> anyhow::Result<IngestionRecord> {
        self.ingest_path_within(tenant, pipeline, path, None, progress).await
    }

    /// [`Platform::ingest_path`] of a file that must be inside `within`.
    pub async fn ingest_path_within(
        &self,
        tenant: &str,
        pipeline: Option<&str>,
        path: &Path,
        within: Option<&Path>,
        progress: Option<Arc<AtomicU64>>,
    ) -> anyhow::Result<IngestionRecord> {
        let tenant = self.tenant(tenant)?;
        crate::batch::ingest_path(&self.invoker, &tenant, pipeline, path, within, progress).await
    }

    /// The first `limit` documents of a tenant's collection (its `metrics`
    /// collection included) that match `query`.
    pub async fn search(&self, tenant: &str, collection: &str, query: &str, limit: usize) -> anyhow::Result<SearchResult> {
        self.search_page(tenant, collection, query, limit, 0).await
    }

    /// A page of a search, checked against the query limits (length,
    /// depth, result window) before any store parses it, and bounded in time
    /// by `api.search_timeout_ms`. A refusal or a timeout is a
    /// [`SearchError`] in the error.
    pub async fn search_page(
        &self,
        tenant: &str,
        collection: &str,
        query: &str,
        limit: usize,
        offset: usize,
    ) -> anyhow::Result<SearchResult> {
        let tenant = self.tenant(tenant)?;
        let index = Platform::index_name(&tenant.id, collection)?;
        let request = SearchRequest {
            query: query.to_string(),
            limit,
            offset,
            timeout: std::time::Duration::from_millis(self.config.api.search_timeout_ms),
        }
        .checked()
        .map_err(SearchError::from)?;
        Ok(self.coredms().search(&index, &request).await?)
    }

    /// Creates `topic` (a full name, prefix included) with `partitions` if
    /// it does not exist yet.
    pub async fn ensure_topic(&self, topic: &str, partitions: i32) -> anyhow::Result<()> {
        Ok(self.invoker.services().ensure_topic(topic, partitions).await?)
    }

    /// Publishes messages to a tenant's topic (`mysimbdp stream produce`);
    /// returns the topic's full name. The host's own topics are refused.
    pub async fn produce(&self, tenant: &str, topic: &str, messages: Vec<OutRecord>) -> anyhow::Result<String> {
        let tenant = self.tenant(tenant)?;
        let name = Name::parse(topic).map_err(anyhow::Error::msg)?;
        anyhow::ensure!(
            !RESERVED_TOPICS.contains(&name.as_str()),
            "topic `{name}` of tenant `{}` is reserved for the host (it writes the tenant's dead letters there); produce to another topic",
            tenant.id
        );
        let full = tenant.id.topic(&name);
        let partitions = tenant.profile.stream.as_ref().map_or(1, |s| s.partitions);
        let services = self.invoker.services();
        services.ensure_topic(&full, partitions).await?;
        services.messaging.publish(&full, &messages).await?.all_or_refused("produce", &full)?;
        Ok(full)
    }
}

/// Uploads of tenants' components (`mysimbdp pipeline upload`): the size
/// cap checked before the bytes are kept, the component compiled in a child
/// process under the compile limits and checked against the world of its
/// kind, its artifact kept in the host's cache (so no ingestion compiles it
/// again), then stored as the next version.
pub struct PipelineUpload {
    sandbox: Sandbox,
    max_bytes: u64,
}

impl PipelineUpload {
    pub fn new(config: &PlatformConfig) -> anyhow::Result<PipelineUpload> {
        let sandbox = Sandbox::new(Some(&config.data_dir.join("compiled")), &config.pipelines)?;
        Ok(PipelineUpload { sandbox, max_bytes: config.pipelines.max_upload_bytes.bytes() })
    }

    fn too_large(&self, what: &str, bytes: u64) -> anyhow::Error {
        anyhow::anyhow!(
            "{what} is {}, more than this platform accepts (pipelines.max_upload_bytes: {}); build it smaller (a release build, `strip`) or ask the operator",
            crate::config::ByteSize(bytes),
            crate::config::ByteSize(self.max_bytes)
        )
    }

    /// Reads a component from `file`, refusing one over the size cap
    /// before reading it (and while reading, if it grows).
    pub fn read(&self, file: &Path) -> anyhow::Result<Vec<u8>> {
        let what = file.display().to_string();
        let opened = std::fs::File::open(file).with_context(|| format!("cannot read {what}"))?;
        let size = opened.metadata().with_context(|| format!("cannot read {what}"))?.len();
        if size > self.max_bytes {
            return Err(self.too_large(&what, size));
        }
        let mut bytes = Vec::new();
        opened.take(self.max_bytes + 1).read_to_end(&mut bytes).with_context(|| format!("cannot read {what}"))?;
        if bytes.len() as u64 > self.max_bytes {
            return Err(self.too_large(&what, bytes.len() as u64));
        }
        Ok(bytes)
    }

    /// Compiles `component` (in a child process) for the limits the
    /// tenant's pipeline runs under, checks it implements the world of
    /// `kind`, and caches the artifact.
    pub fn check(&self, tenant: &Tenant, kind: PipelineKind, name: &Name, component: &[u8]) -> anyhow::Result<()> {
        if component.len() as u64 > self.max_bytes {
            return Err(self.too_large("the component", component.len() as u64));
        }
        let limits = tenant.profile.limits_of(kind, name.as_str()).unwrap_or(tenant.profile.sandbox);
        self.sandbox
            .precompile(kind, limits.max_wasm_stack_bytes.bytes(), component)
            .with_context(|| format!("the component was not accepted as the {kind} pipeline `{name}` of tenant `{}`", tenant.id))
    }

    /// Checks `component`, then stores it as the next version of the
    /// tenant's pipeline `name`, which is then the active one.
    pub fn upload(&self, tenant: &Tenant, kind: PipelineKind, name: &Name, component: &[u8]) -> anyhow::Result<PipelineVersion> {
        self.check(tenant, kind, name, component)?;
        crate::pipelines::store(tenant, kind, name, component)
    }
}
