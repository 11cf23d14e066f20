//! The wasm sandbox: compiles pipeline components once, keeps their
//! pre-instantiated form, and runs every invocation in a fresh `Store` with
//! the tenant's limits. A trap ends that invocation only.

mod cache;
mod classify;
mod limits;
mod store;

pub use limits::{DeadlineExceeded, MemoryLimitExceeded};
pub use store::{EPOCH_TICK, StoreData, Usage};

use crate::capabilities::HostState;
use crate::capabilities::bindings::{self, BatchReport, Message, StreamReport};
use crate::capabilities::input_file::InputFile;
use crate::config::{PipelineKind, SandboxLimits};
use crate::failure::{Failure, FailureKind};
use crate::pipelines::PipelineVersion;
use anyhow::Context;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine};

/// Host calls run on the guest's fiber, below its wasm stack.
pub const HOST_STACK_BYTES: usize = 2 * 1024 * 1024;

/// An engine and the linkers of both worlds. `max_wasm_stack` is an engine
/// setting, so there is one per distinct stack limit in the profiles.
struct EngineSet {
    engine: Engine,
    batch: Linker<StoreData>,
    stream: Linker<StoreData>,
}

impl EngineSet {
    fn new(stack_bytes: u64) -> anyhow::Result<Self> {
        let mut config = Config::new();
        config.consume_fuel(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(stack_bytes as usize);
        config.async_stack_size(stack_bytes as usize + HOST_STACK_BYTES);
        config.cranelift_opt_level(wasmtime::OptLevel::Speed);
        let engine = Engine::new(&config)?;

        Ok(EngineSet { batch: linker(&engine, PipelineKind::Batch)?, stream: linker(&engine, PipelineKind::Stream)?, engine })
    }
}

/// What a pipeline of `kind` may import: WASI (with nothing granted by
/// `HostState`) and the imports of its world.
pub fn linker(engine: &Engine, kind: PipelineKind) -> anyhow::Result<Linker<StoreData>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    match kind {
        PipelineKind::Batch => bindings::batch::BatchPipeline::add_to_linker::<StoreData, HasSelf<HostState>>(&mut linker, host_state)?,
        PipelineKind::Stream => bindings::stream::StreamPipeline::add_to_linker::<StoreData, HasSelf<HostState>>(&mut linker, host_state)?,
    }
    Ok(linker)
}

/// The imports' view of the store's data.
fn host_state(data: &mut StoreData) -> &mut HostState {
    &mut data.host
}

/// A component compiled and linked, ready to instantiate.
#[derive(Clone)]
enum Prepared {
    Batch(bindings::batch::BatchPipelinePre<StoreData>),
    Stream(bindings::stream::StreamPipelinePre<StoreData>),
}

/// A pipeline version ready to run under one stack limit.
pub struct CompiledPipeline {
    pub version: PipelineVersion,
    engine: Engine,
    prepared: Prepared,
}

/// A component (by SHA-256), the stack limit of its engine, and its world.
type CompileKey = (String, u64, PipelineKind);

/// The wasm sandbox of the host: one engine per stack limit, the compiled
/// pipelines, and the thread that advances their epochs.
pub struct Sandbox {
    engines: Mutex<HashMap<u64, Arc<EngineSet>>>,
    /// One cell per component and stack size: concurrent loads compile once.
    compiled: Mutex<HashMap<CompileKey, Arc<tokio::sync::OnceCell<Arc<CompiledPipeline>>>>>,
    /// Compiled artifacts on disk, so a restart does not recompile.
    cache_dir: Option<PathBuf>,
    ticker: Arc<Ticker>,
}

/// Advances the epoch of every engine until the runtime is dropped.
struct Ticker {
    engines: Mutex<Vec<Engine>>,
    stop: AtomicBool,
}

impl Sandbox {
    pub fn new(cache_dir: Option<&Path>) -> Self {
        let ticker = Arc::new(Ticker { engines: Mutex::new(Vec::new()), stop: AtomicBool::new(false) });
        let thread_ticker = ticker.clone();
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                while !thread_ticker.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for engine in thread_ticker.engines.lock().expect("ticker poisoned").iter() {
                        engine.increment_epoch();
                    }
                }
            })
            .expect("spawn the epoch ticker");
        Sandbox {
            engines: Mutex::new(HashMap::new()),
            compiled: Mutex::new(HashMap::new()),
            cache_dir: cache_dir.map(Path::to_path_buf),
            ticker,
        }
    }

    fn engine_set(&self, stack_bytes: u64) -> anyhow::Result<Arc<EngineSet>> {
        let mut engines = self.engines.lock().expect("engines poisoned");
        if let Some(set) = engines.get(&stack_bytes) {
            return Ok(set.clone());
        }
        let set = Arc::new(EngineSet::new(stack_bytes)?);
        self.ticker.engines.lock().expect("ticker poisoned").push(set.engine.clone());
        engines.insert(stack_bytes, set.clone());
        Ok(set)
    }

    /// Compiles `bytes` and checks that they implement the world of `kind`:
    /// every import is one we provide and the export has the right type.
    pub fn check(&self, kind: PipelineKind, bytes: &[u8]) -> anyhow::Result<()> {
        let set = self.engine_set(512 * 1024)?;
        let component = Component::new(&set.engine, bytes).map_err(anyhow::Error::from).context("not a valid WebAssembly component")?;
        prepare(&set, kind, &component).map(drop)
    }

    /// The compiled form of `version` for `stack_bytes`, from memory, the
    /// disk cache, or compiled now.
    pub async fn load(&self, version: &PipelineVersion, stack_bytes: u64) -> anyhow::Result<Arc<CompiledPipeline>> {
        let key = (version.sha256.clone(), stack_bytes, version.kind);
        let cell = self.compiled.lock().expect("cache poisoned").entry(key).or_default().clone();
        let compiled = cell.get_or_try_init(|| self.compile(version, stack_bytes)).await?;
        Ok(compiled.clone())
    }

    async fn compile(&self, version: &PipelineVersion, stack_bytes: u64) -> anyhow::Result<Arc<CompiledPipeline>> {
        let set = self.engine_set(stack_bytes)?;
        let cache_file = self.cache_dir.as_ref().map(|dir| dir.join(format!("{}-{stack_bytes}.cwasm", version.sha256)));
        let path = version.path.clone();
        let engine = set.engine.clone();
        let component = tokio::task::spawn_blocking(move || cache::compile_cached(&engine, &path, cache_file.as_deref()))
            .await
            .context("compiler thread")??;
        let prepared = prepare(&set, version.kind, &component)?;
        Ok(Arc::new(CompiledPipeline { version: version.clone(), engine: set.engine.clone(), prepared }))
    }

    /// Runs the batch pipeline on one file.
    pub(crate) async fn run_batch(
        &self,
        pipeline: &CompiledPipeline,
        limits: &SandboxLimits,
        state: HostState,
        file: InputFile,
    ) -> (Result<BatchReport, Failure>, Usage, HostState) {
        let Prepared::Batch(pre) = &pipeline.prepared else {
            return mismatch(state, "batch");
        };
        let pre = pre.clone();
        store::invoke(&pipeline.engine, limits, state, async move |store| {
            let instance = pre.instantiate_async(&mut *store).await?;
            let handle = store.data_mut().host.table().push(file)?;
            let borrowed = wasmtime::component::Resource::<InputFile>::new_borrow(handle.rep());
            let result = instance.call_ingest(&mut *store, borrowed).await;
            store.data_mut().host.table().delete(handle)?;
            result
        })
        .await
    }

    /// Runs the stream pipeline on one batch of messages.
    pub(crate) async fn run_stream(
        &self,
        pipeline: &CompiledPipeline,
        limits: &SandboxLimits,
        state: HostState,
        batch: Vec<Message>,
    ) -> (Result<StreamReport, Failure>, Usage, HostState) {
        let Prepared::Stream(pre) = &pipeline.prepared else {
            return mismatch(state, "stream");
        };
        let pre = pre.clone();
        store::invoke(&pipeline.engine, limits, state, async move |store| {
            let instance = pre.instantiate_async(&mut *store).await?;
            instance.call_process(&mut *store, &batch).await
        })
        .await
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        self.ticker.stop.store(true, Ordering::Relaxed);
    }
}

fn mismatch<R>(state: HostState, wanted: &str) -> (Result<R, Failure>, Usage, HostState) {
    let failure = Failure::new(FailureKind::GuestTrap, format!("the component is not a {wanted} pipeline"));
    (Err(failure), Usage::default(), state)
}

fn prepare(set: &EngineSet, kind: PipelineKind, component: &Component) -> anyhow::Result<Prepared> {
    let world = kind.world();
    Ok(match kind {
        PipelineKind::Batch => {
            let pre = set.batch.instantiate_pre(component).map_err(anyhow::Error::from).with_context(|| imports_message(world))?;
            Prepared::Batch(
                bindings::batch::BatchPipelinePre::new(pre)
                    .map_err(anyhow::Error::from)
                    .with_context(|| exports_message(world, "ingest"))?,
            )
        }
        PipelineKind::Stream => {
            let pre = set.stream.instantiate_pre(component).map_err(anyhow::Error::from).with_context(|| imports_message(world))?;
            Prepared::Stream(
                bindings::stream::StreamPipelinePre::new(pre)
                    .map_err(anyhow::Error::from)
                    .with_context(|| exports_message(world, "process"))?,
            )
        }
    })
}

fn imports_message(world: &str) -> String {
    format!("the component imports something the world {world} does not provide (build it with the mysimbdp guest SDK for wasm32-wasip2)")
}

fn exports_message(world: &str, export: &str) -> String {
    format!("the component does not implement {world}: it must export `{export}` as declared in wit/pipeline.wit")
}
