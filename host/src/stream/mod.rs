//! Stream ingestion: the manager starts and stops instances of a tenant's
//! stream pipeline (each a consumer in the tenant's group), and the monitor
//! compares their measurements with the profile's thresholds and scales.

mod instance;
pub mod monitor;
pub(crate) mod scaling;

use crate::config::{RegistryHandle, StreamManagerConfig};
use crate::config::{StreamSpec, Tenant, TenantId};
use crate::invocation::Invoker;
use crate::telemetry::events;
use anyhow::Context;
use instance::Instance;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// Measurements of one tenant's stream since the monitor last looked.
#[derive(Default)]
pub struct StreamStats {
    window: Mutex<Window>,
}

#[derive(Debug, Clone, Default)]
pub struct Window {
    pub batches: u64,
    pub messages: u64,
    /// Messages rejected or dead-lettered.
    pub failed: u64,
    pub busy: Duration,
    pub idle_polls: u64,
    pub last_message: Option<Instant>,
}

impl StreamStats {
    fn record_batch(&self, messages: u64, failed: u64, took: Duration) {
        let mut window = self.window.lock().expect("stats poisoned");
        window.batches += 1;
        window.messages += messages;
        window.failed += failed;
        window.busy += took;
        window.last_message = Some(Instant::now());
    }

    fn idle_poll(&self) {
        self.window.lock().expect("stats poisoned").idle_polls += 1;
    }

    /// The window so far, starting a new one (the last message time is kept).
    pub fn take(&self) -> Window {
        let mut window = self.window.lock().expect("stats poisoned");
        let last_message = window.last_message;
        std::mem::replace(&mut *window, Window { last_message, ..Window::default() })
    }
}

struct Running {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    number: u32,
    started: chrono::DateTime<chrono::Utc>,
}

struct TenantStream {
    tenant: Arc<Tenant>,
    spec: StreamSpec,
    instances: Vec<Running>,
    stats: Arc<StreamStats>,
    next_number: u32,
    started: Instant,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct InstanceStatus {
    pub number: u32,
    pub started: chrono::DateTime<chrono::Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StreamStatus {
    pub tenant: String,
    pub pipeline: String,
    pub topics: Vec<String>,
    pub group: String,
    pub running: bool,
    pub instances: Vec<InstanceStatus>,
    pub min_instances: u32,
    pub max_instances: u32,
    /// Messages not yet committed by the group.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lag: Option<u64>,
}

pub struct StreamManager {
    invoker: Arc<Invoker>,
    /// The registry in force: a stream starting from nothing runs the profile it has.
    registry: RegistryHandle,
    config: StreamManagerConfig,
    streams: tokio::sync::Mutex<HashMap<TenantId, TenantStream>>,
}

impl StreamManager {
    pub fn new(invoker: Arc<Invoker>, registry: RegistryHandle, config: StreamManagerConfig) -> Arc<StreamManager> {
        Arc::new(StreamManager { invoker, registry, config, streams: tokio::sync::Mutex::new(HashMap::new()) })
    }

    fn services(&self) -> &crate::capabilities::Services {
        self.invoker.services()
    }

    fn spec(tenant: &Tenant) -> anyhow::Result<StreamSpec> {
        tenant.profile.stream.clone().with_context(|| {
            format!("tenant `{}` has no stream pipeline in {}; add a `stream:` section first", tenant.id, tenant.profile_file.display())
        })
    }

    /// Runs `instances` instances (default: the profile's minimum) of the
    /// tenant's stream pipeline, creating its topics first.
    pub async fn start(&self, tenant: &str, instances: Option<u32>) -> anyhow::Result<StreamStatus> {
        let tenant = self.registry.tenant(tenant)?;
        let spec = Self::spec(&tenant)?;
        crate::pipelines::active(&tenant, crate::config::PipelineKind::Stream, &spec.name)?;
        let wanted = instances.unwrap_or(spec.min_instances.max(1));
        anyhow::ensure!(
            (1..=spec.max_instances).contains(&wanted),
            "tenant `{}` may run 1 to {} stream instances (stream.max_instances in its profile), not {wanted}",
            tenant.id,
            spec.max_instances
        );
        let topics = Instance::topics(&tenant, &spec);
        for topic in &topics {
            self.services().ensure_topic(topic, spec.partitions).await?;
        }
        self.services().ensure_topic(&tenant.id.dead_letter_topic(), 1).await?;
        // The group's committed offsets must be readable: a damaged offsets
        // file is refused here, naming it, rather than by each instance
        // later where only its log would say so.
        let group = Instance::group(&tenant, &spec);
        self.services().messaging.lag(&group, &topics).await.with_context(|| format!("tenant `{}`'s stream cannot start", tenant.id))?;
        self.scale(&tenant.id, wanted, "started by an operator").await?;
        self.status_of(&tenant.id).await
    }

    /// Stops every instance of the tenant's stream; each finishes its batch.
    pub async fn stop(&self, tenant: &str) -> anyhow::Result<StreamStatus> {
        let tenant = self.registry.tenant(tenant)?;
        Self::spec(&tenant)?;
        self.scale(&tenant.id, 0, "stopped by an operator").await?;
        self.status_of(&tenant.id).await
    }

    /// Sets the number of running instances, logging why.
    pub async fn scale(&self, tenant: &TenantId, wanted: u32, reason: &str) -> anyhow::Result<()> {
        let tenant = self.registry.tenant(tenant.as_str())?;
        let spec = Self::spec(&tenant)?;
        if wanted > 0 {
            // Neither an operator nor the monitor starts a suspended tenant's instances.
            self.invoker.ensure_not_suspended(&tenant.id)?;
        }
        let mut stopping = Vec::new();
        let before;
        {
            let mut streams = self.streams.lock().await;
            let stream = streams.entry(tenant.id.clone()).or_insert_with(|| TenantStream {
                tenant: tenant.clone(),
                spec: spec.clone(),
                instances: Vec::new(),
                stats: Arc::new(StreamStats::default()),
                next_number: 1,
                started: Instant::now(),
            });
            before = stream.instances.len() as u32;
            if before == 0 {
                // A stream starting from nothing runs the profile in force
                // (after a reload); instances added to a running stream join
                // it with the profile its instances run.
                stream.tenant = tenant.clone();
                stream.spec = spec.clone();
                if wanted > 0 {
                    stream.started = Instant::now();
                }
            }
            while (stream.instances.len() as u32) < wanted {
                let number = stream.next_number;
                stream.next_number += 1;
                let (stop, stop_rx) = watch::channel(false);
                let instance = Instance {
                    invoker: self.invoker.clone(),
                    tenant: stream.tenant.clone(),
                    spec: stream.spec.clone(),
                    number,
                    stats: stream.stats.clone(),
                };
                let task = tokio::spawn(instance.run(stop_rx));
                stream.instances.push(Running { stop, task, number, started: chrono::Utc::now() });
            }
            while (stream.instances.len() as u32) > wanted {
                stopping.push(stream.instances.pop().expect("more than wanted"));
            }
            self.publish(stream);
        }
        for running in &stopping {
            let _ = running.stop.send(true);
        }
        for running in stopping {
            let _ = running.task.await;
        }
        if before != wanted {
            let scaled = events::StreamScaled { tenant: &tenant.id, pipeline: spec.name.as_str(), from: before, to: wanted, reason };
            scaled.emit(&self.invoker.logs().tenant(&tenant, crate::config::PipelineKind::Stream));
        }
        Ok(())
    }

    fn publish(&self, stream: &TenantStream) {
        events::StreamInstances {
            tenant: &stream.tenant.id,
            pipeline: stream.spec.name.as_str(),
            running: stream.instances.len(),
            min: stream.spec.min_instances,
            max: stream.spec.max_instances,
        }
        .emit();
    }

    async fn status_of(&self, tenant: &TenantId) -> anyhow::Result<StreamStatus> {
        Ok(self.status(Some(tenant.as_str())).await?.into_iter().next().expect("one tenant asked"))
    }

    /// Every tenant with a stream pipeline (or one), with its lag.
    pub async fn status(&self, tenant: Option<&str>) -> anyhow::Result<Vec<StreamStatus>> {
        let tenants: Vec<Arc<Tenant>> = match tenant {
            Some(id) => vec![self.registry.tenant(id)?],
            None => self.registry.current().tenants().filter(|t| t.profile.stream.is_some()).cloned().collect(),
        };
        let mut statuses = Vec::new();
        for tenant in tenants {
            let spec = Self::spec(&tenant)?;
            let instances = {
                let streams = self.streams.lock().await;
                streams
                    .get(&tenant.id)
                    .map(|s| s.instances.iter().map(|r| InstanceStatus { number: r.number, started: r.started }).collect())
                    .unwrap_or_default()
            };
            let group = Instance::group(&tenant, &spec);
            let topics = Instance::topics(&tenant, &spec);
            let lag = self.services().messaging.lag(&group, &topics).await.ok();
            statuses.push(StreamStatus {
                tenant: tenant.id.to_string(),
                pipeline: spec.name.to_string(),
                running: !Vec::<InstanceStatus>::is_empty(&instances),
                instances,
                topics,
                group,
                min_instances: spec.min_instances,
                max_instances: spec.max_instances,
                lag,
            });
        }
        Ok(statuses)
    }

    /// Running tenants with their stats and instance counts, for the monitor.
    pub(crate) async fn running(&self) -> Vec<(Arc<Tenant>, StreamSpec, Arc<StreamStats>, u32, Duration)> {
        let streams = self.streams.lock().await;
        streams
            .values()
            .filter(|s| !s.instances.is_empty())
            .map(|s| (s.tenant.clone(), s.spec.clone(), s.stats.clone(), s.instances.len() as u32, s.started.elapsed()))
            .collect()
    }

    /// Stops everything (host shutdown).
    pub async fn shutdown(&self) {
        let tenants: Vec<TenantId> = self.streams.lock().await.keys().cloned().collect();
        for tenant in tenants {
            let _ = self.scale(&tenant, 0, "host shutdown").await;
        }
    }
}
