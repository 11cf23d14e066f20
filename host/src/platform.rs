//! The assembled platform: configuration, tenants, the sandbox runtime and
//! the shared services. The host process, the CLI in local mode and the tests
//! all start from [`Platform::open`].

use crate::backends::embedded_log::EmbeddedLog;
use crate::backends::embedded_store::EmbeddedStore;
use crate::backends::null_store::NullStore;
use crate::backends::{DocumentStore, MessageBus, SearchError, SearchRequest, SearchResult};
use crate::capabilities::{Scope, Services};
use crate::config::{CoredmsConfig, MessagingConfig, Name, PlatformConfig, Registry, Tenant, TenantId};
use crate::pipelines::PipelineKind;
use crate::runtime::Runtime;
use crate::telemetry::IngestionRecord;
use crate::telemetry::index::MetricsIndex;
use crate::telemetry::logs::{LogSink, tenant_log_path};
use anyhow::Context;
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, RwLock};
use tokio::sync::Semaphore;

fn create_dirs(tenant: &Tenant) -> anyhow::Result<()> {
    tenant
        .paths
        .create()
        .with_context(|| format!("cannot create the directories of tenant `{}` under {}", tenant.id, tenant.paths.root.display()))
}

fn slots_for(tenant: &Tenant) -> (u32, Arc<Semaphore>) {
    let cap = tenant.profile.agreement.max_concurrent_ingestions;
    (cap, Arc::new(Semaphore::new(cap as usize)))
}

pub struct Platform {
    pub config: PlatformConfig,
    /// The registry in force: replaced whole by [`Platform::reload`].
    registry: RwLock<Arc<Registry>>,
    pub runtime: Runtime,
    pub services: Arc<Services>,
    /// Caps each tenant's concurrent ingestions (`max_concurrent_ingestions`),
    /// with the cap each semaphore was made for.
    tenant_slots: Mutex<HashMap<TenantId, (u32, Arc<Semaphore>)>>,
    metrics_index: MetricsIndex,
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
            MessagingConfig::Embedded => Arc::new(EmbeddedLog::open(&config.data_dir.join("messaging"))?),
            MessagingConfig::Kafka(kafka) => Arc::new(crate::backends::kafka::KafkaBus::connect(kafka)?),
        };
        let tenant_slots = registry.tenants().map(|t| (t.id.clone(), slots_for(t))).collect();
        Ok(Arc::new(Platform {
            runtime: Runtime::new(Some(&config.data_dir.join("compiled"))),
            metrics_index: MetricsIndex::start(coredms.clone()),
            services: Arc::new(Services::new(coredms, messaging)),
            registry: RwLock::new(Arc::new(registry)),
            tenant_slots: Mutex::new(tenant_slots),
            config,
        }))
    }

    /// The registry in force (a snapshot: a reload does not change it).
    pub fn registry(&self) -> Arc<Registry> {
        self.registry.read().expect("registry poisoned").clone()
    }

    pub fn tenant(&self, id: &str) -> anyhow::Result<Arc<Tenant>> {
        self.registry().require(id).cloned()
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
        {
            let mut slots = self.tenant_slots.lock().expect("tenant slots poisoned");
            for tenant in new.tenants() {
                let cap = tenant.profile.agreement.max_concurrent_ingestions;
                // A new cap gets a new semaphore: ingestions holding the old
                // one finish under the old cap.
                if slots.get(&tenant.id).is_none_or(|(old_cap, _)| *old_cap != cap) {
                    slots.insert(tenant.id.clone(), slots_for(tenant));
                }
            }
        }
        *self.registry.write().expect("registry poisoned") = new.clone();
        Ok((new, reloaded))
    }

    /// [`Platform::reload`], then the batch manager (if this process runs
    /// one) takes in the new tenants and profiles. Written to the platform
    /// log either way.
    pub async fn reload_all(&self, batch: Option<&crate::batch::BatchManager>) -> anyhow::Result<Reloaded> {
        let result = async {
            let (registry, reloaded) = self.reload()?;
            if let Some(batch) = batch {
                batch.adopt(&registry, &reloaded.changed).await?;
            }
            anyhow::Ok(reloaded)
        }
        .await;
        match &result {
            Ok(reloaded) => {
                tracing::info!(added = ?reloaded.added, changed = ?reloaded.changed, "Tenant registry reloaded.");
                self.platform_log().write(&serde_json::json!({
                    "type": "event", "level": "info", "message": "registry reloaded",
                    "added": reloaded.added, "changed": reloaded.changed,
                }));
            }
            Err(error) => {
                tracing::error!(error = %format!("{error:#}"), "Reloading the tenant registry failed; the one in force is kept.");
                self.platform_log().write(&serde_json::json!({
                    "type": "event", "level": "error", "message": "registry reload failed", "error": format!("{error:#}"),
                }));
            }
        }
        result
    }

    /// The semaphore of `tenant`'s concurrent ingestions.
    pub fn tenant_slots(&self, tenant: &TenantId) -> Arc<Semaphore> {
        let slots = self.tenant_slots.lock().expect("tenant slots poisoned");
        slots.get(tenant).map(|(_, semaphore)| semaphore.clone()).unwrap_or_else(|| Arc::new(Semaphore::new(1)))
    }

    /// The tenant's batch or stream log.
    pub fn tenant_log(&self, tenant: &Tenant, kind: PipelineKind) -> LogSink {
        let path = tenant_log_path(&tenant.paths.logs, kind);
        self.services
            .logs
            .sink(&path)
            .unwrap_or_else(|error| panic!("cannot open the log {} of tenant `{}`: {error}", path.display(), tenant.id))
    }

    /// The platform's own log.
    pub fn platform_log(&self) -> LogSink {
        let path = self.config.data_dir.join("logs").join("platform.log");
        self.services.logs.sink(&path).unwrap_or_else(|error| panic!("cannot open the log {}: {error}", path.display()))
    }

    /// Who an invocation acts for.
    pub fn scope(
        &self,
        tenant: &Arc<Tenant>,
        kind: PipelineKind,
        pipeline: &Name,
        version: u32,
        parameters: &BTreeMap<String, String>,
    ) -> Arc<Scope> {
        Arc::new(Scope {
            tenant: tenant.clone(),
            kind,
            pipeline: pipeline.clone(),
            version,
            parameters: tenant.profile.parameters_for(parameters),
            services: self.services.clone(),
            log: self.tenant_log(tenant, kind),
        })
    }

    /// Records the result of an ingestion: the tenant's log, the metrics, and
    /// the tenant's `metrics` collection.
    pub fn record_ingestion(&self, scope: &Scope, record: &IngestionRecord) {
        scope.log.write(record);
        crate::telemetry::metrics::record_ingestion(record);
        self.metrics_index.push(record);
    }

    /// Writes what is buffered (ingestion records) before the process ends.
    pub async fn close(&self) {
        self.metrics_index.close().await;
    }

    /// The index of a tenant's collection.
    pub fn index_name(tenant: &TenantId, collection: &str) -> anyhow::Result<String> {
        let name = Name::parse(collection).map_err(anyhow::Error::msg)?;
        Ok(format!("{tenant}-{name}"))
    }
}

impl Platform {
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
        };
        crate::backends::query::check(&request).map_err(SearchError::from)?;
        Ok(self.services.coredms.search(&index, &request).await?)
    }
}
