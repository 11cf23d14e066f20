//! The assembled platform: configuration, tenants, the sandbox runtime and
//! the shared services. The host process, the CLI in local mode and the tests
//! all start from [`Platform::open`].

use crate::backends::embedded_log::EmbeddedLog;
use crate::backends::embedded_store::EmbeddedStore;
use crate::backends::null_store::NullStore;
use crate::backends::{DocumentStore, MessageBus};
use crate::capabilities::{Scope, Services};
use crate::config::{CoredmsConfig, MessagingConfig, Name, PlatformConfig, Registry, Tenant, TenantId};
use crate::pipelines::PipelineKind;
use crate::runtime::Runtime;
use crate::telemetry::IngestionRecord;
use crate::telemetry::index::MetricsIndex;
use crate::telemetry::logs::{LogSink, tenant_log_path};
use anyhow::Context;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use tokio::sync::Semaphore;

pub struct Platform {
    pub config: PlatformConfig,
    pub registry: Registry,
    pub runtime: Runtime,
    pub services: Arc<Services>,
    /// Caps each tenant's concurrent ingestions (`max_concurrent_ingestions`).
    tenant_slots: HashMap<TenantId, Arc<Semaphore>>,
    metrics_index: MetricsIndex,
}

impl Platform {
    pub async fn open(config: PlatformConfig) -> anyhow::Result<Arc<Platform>> {
        let registry = config.registry()?;
        for tenant in registry.tenants() {
            tenant.paths.create().with_context(|| {
                format!("cannot create the directories of tenant `{}` under {}", tenant.id, tenant.paths.root.display())
            })?;
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
        let tenant_slots = registry
            .tenants()
            .map(|t| (t.id.clone(), Arc::new(Semaphore::new(t.profile.agreement.max_concurrent_ingestions as usize))))
            .collect();
        Ok(Arc::new(Platform {
            runtime: Runtime::new(Some(&config.data_dir.join("compiled"))),
            metrics_index: MetricsIndex::start(coredms.clone()),
            services: Arc::new(Services::new(coredms, messaging)),
            registry,
            tenant_slots,
            config,
        }))
    }

    pub fn tenant(&self, id: &str) -> anyhow::Result<&Arc<Tenant>> {
        self.registry.require(id)
    }

    /// The semaphore of `tenant`'s concurrent ingestions.
    pub fn tenant_slots(&self, tenant: &TenantId) -> Arc<Semaphore> {
        self.tenant_slots.get(tenant).cloned().unwrap_or_else(|| Arc::new(Semaphore::new(1)))
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
    /// Searches a tenant's collection (its `metrics` collection included).
    pub async fn search(&self, tenant: &str, collection: &str, query: &str, limit: usize) -> anyhow::Result<crate::backends::SearchResult> {
        let tenant = self.tenant(tenant)?;
        let index = Platform::index_name(&tenant.id, collection)?;
        Ok(self.services.coredms.search(&index, query, limit).await?)
    }
}
