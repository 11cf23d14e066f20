//! An experiment, not the host: the host's batch invocation (same component,
//! same `HostState` and host imports, same Cranelift settings) replicated with
//! one engine setting changed, to measure what fuel metering and epoch
//! interruption cost. The host's own engine settings cannot be changed from
//! outside (its sandbox fixes them), hence the replica, built from the
//! pieces `mysimbdp::experiment` lends benchmarks.
//!
//! What differs from the host's batch invocation besides the toggled
//! setting: no memory limiter (the guest stays far below its limit) and no
//! deadline.

use mysimbdp::batch::identify;
use mysimbdp::experiment::{BatchPipelinePre, BatchReport, HOST_STACK_BYTES, InputFile, StoreData, batch_store_data};
use mysimbdp::opened_file::OpenedFile;
use mysimbdp::pipelines::{self, PipelineKind};
use mysimbdp::platform::Platform;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, Resource};
use wasmtime::{Config, Engine, Store, UpdateDeadline};

const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Fuel between yields when fuel alone interrupts the guest: at the ~4·10^9
/// units per second measured here, about 5 ms.
const FUEL_YIELD_INTERVAL: u64 = 20_000_000;

#[derive(Clone, Copy, Debug)]
pub struct EngineSettings {
    pub fuel: bool,
    pub epochs: bool,
}

impl EngineSettings {
    pub fn name(self) -> &'static str {
        match (self.fuel, self.epochs) {
            (true, true) => "replica-fuel+epochs",
            (false, true) => "replica-epochs-only",
            (true, false) => "replica-fuel-only-yielding",
            (false, false) => "replica-no-fuel-no-epochs",
        }
    }
}

/// The host's engine settings (`sandbox/mod.rs`) with fuel and epochs as
/// `settings` say.
pub fn host_config(settings: EngineSettings, stack_bytes: usize) -> Config {
    let mut config = Config::new();
    config.consume_fuel(settings.fuel);
    config.epoch_interruption(settings.epochs);
    config.max_wasm_stack(stack_bytes);
    config.async_stack_size(stack_bytes + HOST_STACK_BYTES);
    config.cranelift_opt_level(wasmtime::OptLevel::Speed);
    if std::env::var_os("MYSIMBDP_BENCH_PERFMAP").is_some() {
        config.profiler(wasmtime::ProfilingStrategy::PerfMap);
    }
    config
}

/// A compiled component under `settings`, with an epoch ticker while it lives.
pub struct Replica {
    settings: EngineSettings,
    engine: Engine,
    pre: BatchPipelinePre<StoreData>,
    ticking: Arc<AtomicBool>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        self.ticking.store(false, Ordering::Relaxed);
    }
}

impl Replica {
    pub fn name(&self) -> &'static str {
        self.settings.name()
    }

    pub fn new(settings: EngineSettings, wasm: &Path, stack_bytes: usize) -> anyhow::Result<Replica> {
        Replica::with_config(settings, &host_config(settings, stack_bytes), wasm)
    }

    /// A replica on an engine of `config` (from [`host_config`], changed).
    pub fn with_config(settings: EngineSettings, config: &Config, wasm: &Path) -> anyhow::Result<Replica> {
        let engine = Engine::new(config)?;
        let linker = mysimbdp::experiment::linker(&engine, PipelineKind::Batch)?;
        let component = Component::from_file(&engine, wasm)?;
        let pre = BatchPipelinePre::new(linker.instantiate_pre(&component)?)?;
        let ticking = Arc::new(AtomicBool::new(true));
        if settings.epochs {
            let (engine, ticking) = (engine.clone(), ticking.clone());
            std::thread::spawn(move || {
                while ticking.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    engine.increment_epoch();
                }
            });
        }
        Ok(Replica { settings, engine, pre, ticking })
    }

    /// One invocation on a fresh store of `data`: instantiated from the
    /// `InstancePre`, `input` called, the store dropped.
    pub async fn call(&self, data: StoreData, fuel: u64, input: InputFile) -> anyhow::Result<BatchReport> {
        let mut store = Store::new(&self.engine, data);
        if self.settings.fuel {
            store.set_fuel(fuel)?;
        }
        if self.settings.fuel && !self.settings.epochs {
            // Without epochs, fuel is what makes a computing guest yield
            // (about every few ms), so a deadline could still be enforced there.
            store.fuel_async_yield_interval(Some(FUEL_YIELD_INTERVAL))?;
        }
        if self.settings.epochs {
            // As the host: yield to other tasks every tick.
            store.set_epoch_deadline(1);
            store.epoch_deadline_callback(|_| Ok(UpdateDeadline::Yield(1)));
        }
        let instance = self.pre.instantiate_async(&mut store).await?;
        let handle = store.data_mut().host.table().push(input)?;
        let borrowed = Resource::<InputFile>::new_borrow(handle.rep());
        let report = instance.call_ingest(&mut store, borrowed).await?;
        report.map_err(|e| anyhow::anyhow!("the pipeline failed: {e:?}"))
    }

    /// Ingests `path` as the tenant's batch pipeline `pipeline` would; returns
    /// the report and the seconds taken (hashing included, as in `ingest_path`).
    pub async fn ingest(&self, platform: &Platform, tenant: &str, pipeline: &str, path: &Path) -> anyhow::Result<(BatchReport, f64)> {
        let started = Instant::now();
        let tenant = &platform.tenant(tenant)?;
        let spec = tenant.profile.batch_pipeline(pipeline).ok_or_else(|| anyhow::anyhow!("no pipeline {pipeline}"))?;
        let version = pipelines::active(tenant, PipelineKind::Batch, &spec.name)?;
        let identity = identify(path).await?;
        let name = path.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
        let input = InputFile::new(&name, &identity.sha256, OpenedFile::open(path, None)?);
        let limits = tenant.profile.sandbox.with(&spec.sandbox);
        let data = batch_store_data(platform, tenant, spec, version.version);
        let report = self.call(data, limits.fuel_per_invocation, input).await?;
        Ok((report, started.elapsed().as_secs_f64()))
    }
}
