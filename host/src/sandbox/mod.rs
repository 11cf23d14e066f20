//! The wasm sandbox: compiles pipeline components once, keeps their
//! pre-instantiated form, and runs every invocation in a fresh `Store` with
//! the tenant's limits. A trap ends that invocation only.

mod cache;
mod classify;
mod compiler;
mod limits;
mod store;

pub use compiler::{CHILD_COMMAND, child_main};

pub use limits::{DeadlineExceeded, MemoryLimitExceeded};
pub use store::{EPOCH_TICK, StoreData, Usage};

use crate::capabilities::HostState;
use crate::capabilities::bindings::{self, BatchReport, Message, StreamReport};
use crate::capabilities::input_file::InputFile;
use crate::config::{ByteSize, PipelineKind, PipelinesConfig, SandboxLimits};
use crate::cpu_shares::{self, CpuShares};
use crate::failure::{Failure, FailureKind};
use crate::pipelines::{PipelineVersion, sha256_hex};
use anyhow::Context;
use cache::ArtifactCache;
use compiler::Compiler;
use std::collections::HashMap;
use std::io::Read;
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

/// A version's component file and the stack limit of its engine.
type CompileKey = (PathBuf, u64);

/// The wasm sandbox of the host: one engine per stack limit, the compiled
/// pipelines, and the thread that advances their epochs.
pub struct Sandbox {
    engines: Mutex<HashMap<u64, Arc<EngineSet>>>,
    /// One cell per component and stack size: concurrent loads compile once.
    compiled: Mutex<HashMap<CompileKey, Arc<tokio::sync::OnceCell<Arc<CompiledPipeline>>>>>,
    /// Components that did not compile, with the reason: not tried per file again.
    failed: Mutex<HashMap<CompileKey, String>>,
    /// Compiled artifacts on disk, so neither ingestions nor a restart recompile.
    cache: Option<Arc<ArtifactCache>>,
    compiler: Compiler,
    /// The largest component file loaded (`pipelines.max_upload_bytes`).
    max_component_bytes: u64,
    ticker: Arc<Ticker>,
    /// Each tenant's CPU slots: how many of its guests run at once, and
    /// which tenant gives way (the ticker samples the contention).
    cpu: Arc<CpuShares>,
}

/// Advances the epoch of every engine until the runtime is dropped.
struct Ticker {
    engines: Mutex<Vec<Engine>>,
    stop: AtomicBool,
}

/// Why a load failed, and whether trying again could help.
struct LoadFailure {
    error: anyhow::Error,
    /// The compiler refused the component: the same bytes fail again.
    lasting: bool,
}

impl From<anyhow::Error> for LoadFailure {
    fn from(error: anyhow::Error) -> Self {
        LoadFailure { error, lasting: false }
    }
}

impl Sandbox {
    /// A sandbox compiling with `config`'s compiler and limits, its
    /// artifacts kept in `cache_dir` (none: compiled again by each process).
    pub fn new(cache_dir: Option<&Path>, config: &PipelinesConfig) -> anyhow::Result<Self> {
        let ticker = Arc::new(Ticker { engines: Mutex::new(Vec::new()), stop: AtomicBool::new(false) });
        let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let slots = config.cpu_slots_per_tenant.unwrap_or_else(|| cpu_shares::default_slots(cores));
        let cpu = Arc::new(CpuShares::new(slots));
        let give_way = config.cpu_give_way;
        let (thread_ticker, thread_cpu) = (ticker.clone(), cpu.clone());
        std::thread::Builder::new()
            .name("epoch-ticker".into())
            .spawn(move || {
                // Also samples the machine's CPU contention, for the tenants' shares.
                let mut pressure = cpu_shares::Pressure::new(cores);
                let mut sampled = std::time::Instant::now();
                while !thread_ticker.stop.load(Ordering::Relaxed) {
                    std::thread::sleep(EPOCH_TICK);
                    for engine in thread_ticker.engines.lock().expect("ticker poisoned").iter() {
                        engine.increment_epoch();
                    }
                    if give_way && sampled.elapsed() >= cpu_shares::CONTENTION_SAMPLE {
                        thread_cpu.set_contended(pressure.sample());
                        sampled = std::time::Instant::now();
                    }
                }
            })
            .expect("spawn the epoch ticker");
        Ok(Sandbox {
            engines: Mutex::new(HashMap::new()),
            compiled: Mutex::new(HashMap::new()),
            failed: Mutex::new(HashMap::new()),
            cache: cache_dir.map(ArtifactCache::open).transpose()?.map(Arc::new),
            compiler: Compiler::new(config)?,
            max_component_bytes: config.max_upload_bytes.bytes(),
            cpu,
            ticker,
        })
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

    /// Compiles `component` in a child process under the compile limits,
    /// checks that it implements the world of `kind` (every import one we
    /// provide, the export of the right type) and keeps the artifact in the
    /// cache, so the ingestions that follow do not compile it again. What
    /// `mysimbdp pipeline upload` does before it stores a version.
    pub fn precompile(&self, kind: PipelineKind, stack_bytes: u64, component: &[u8]) -> anyhow::Result<()> {
        let set = self.engine_set(stack_bytes)?;
        let artifact = self.compiler.compile(kind, stack_bytes, component)?;
        if let Some(cache) = &self.cache {
            cache.put(&ArtifactCache::name(&set.engine, &sha256_hex(component), stack_bytes), &artifact)?;
        }
        Ok(())
    }

    /// The compiled form of `version` for `stack_bytes`, from memory, the
    /// disk cache, or compiled now (in a child process). A component that
    /// did not compile is not compiled again by this process.
    pub async fn load(&self, version: &PipelineVersion, stack_bytes: u64) -> anyhow::Result<Arc<CompiledPipeline>> {
        let key = (version.path.clone(), stack_bytes);
        if let Some(reason) = self.failed.lock().expect("failures poisoned").get(&key) {
            anyhow::bail!("{reason} (it did not compile before: not tried again until a new version is uploaded or the host restarts)");
        }
        let cell = self.compiled.lock().expect("cache poisoned").entry(key.clone()).or_default().clone();
        match cell.get_or_try_init(|| self.compile(version, stack_bytes)).await {
            Ok(compiled) => Ok(compiled.clone()),
            Err(LoadFailure { error, lasting }) => {
                if lasting {
                    self.failed.lock().expect("failures poisoned").insert(key, format!("{error:#}"));
                }
                Err(error)
            }
        }
    }

    async fn compile(&self, version: &PipelineVersion, stack_bytes: u64) -> Result<Arc<CompiledPipeline>, LoadFailure> {
        let set = self.engine_set(stack_bytes)?;
        let (cache, compiler, limit) = (self.cache.clone(), self.compiler.clone(), self.max_component_bytes);
        let (engine, blocking_version) = (set.engine.clone(), version.clone());
        let component = tokio::task::spawn_blocking(move || {
            compile_or_reuse(&engine, cache.as_deref(), &compiler, &blocking_version, stack_bytes, limit)
        })
        .await
        .map_err(|e| anyhow::anyhow!("compiler thread: {e}"))??;
        let prepared = prepare(&set, version.kind, &component).map_err(|error| LoadFailure { error, lasting: true })?;
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
        let turn = self.cpu.turn(state.scope.tenant.id.as_str());
        store::invoke(&pipeline.engine, limits, state, turn, async move |store| {
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
        let turn = self.cpu.turn(state.scope.tenant.id.as_str());
        store::invoke(&pipeline.engine, limits, state, turn, async move |store| {
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

/// The component of `version` as this host compiled it: its bytes read
/// (at most `limit`) and hashed here, the cached artifact of that hash
/// loaded if its MAC holds, else compiled in a child process and cached.
fn compile_or_reuse(
    engine: &Engine,
    cache: Option<&ArtifactCache>,
    compiler: &Compiler,
    version: &PipelineVersion,
    stack_bytes: u64,
    limit: u64,
) -> Result<Component, LoadFailure> {
    let path = &version.path;
    let mut bytes = Vec::new();
    std::fs::File::open(path)
        .and_then(|file| file.take(limit + 1).read_to_end(&mut bytes))
        .with_context(|| format!("cannot read pipeline {}", path.display()))?;
    if bytes.len() as u64 > limit {
        let error = anyhow::anyhow!("{} is larger than pipelines.max_upload_bytes ({})", path.display(), ByteSize(limit));
        return Err(LoadFailure { error, lasting: true });
    }
    // The record's hash is a claim; the cache is keyed by the bytes' own.
    let sha256 = sha256_hex(&bytes);
    if sha256 != version.sha256 {
        tracing::warn!(
            file = %path.display(),
            recorded = %version.sha256,
            actual = %sha256,
            "The pipeline record's sha256 does not match its component; the component's own hash is used."
        );
    }
    let name = ArtifactCache::name(engine, &sha256, stack_bytes);
    if let Some(cache) = cache {
        match cache.get(&name) {
            // SAFETY: the artifact carries a MAC made with this host's own
            // secret over its name and bytes, so it is an artifact this host
            // serialized for these very component bytes and engine settings.
            Ok(artifact) => match unsafe { Component::deserialize(engine, &artifact) } {
                Ok(component) => return Ok(component),
                Err(error) => tracing::warn!(%name, %error, "Compiled pipeline not reusable; compiling again."),
            },
            Err(cache::Refused::Tampered) => {
                tracing::warn!(%name, "Compiled pipeline refused: its MAC does not hold (changed or truncated); compiling again.")
            }
            Err(cache::Refused::Missing) => {}
        }
    }
    tracing::info!(file = %path.display(), "Compiling the pipeline in a child process.");
    let artifact = compiler
        .compile(version.kind, stack_bytes, &bytes)
        .map_err(|error| LoadFailure { error: error.context(format!("cannot compile {}", path.display())), lasting: true })?;
    if let Some(cache) = cache
        && let Err(error) = cache.put(&name, &artifact)
    {
        tracing::warn!(%name, error = format!("{error:#}"), "Cannot cache the compiled pipeline.");
    }
    // SAFETY: the artifact was serialized just now by our own compiler
    // child from these bytes, with this engine's settings.
    unsafe { Component::deserialize(engine, &artifact) }
        .map_err(anyhow::Error::from)
        .with_context(|| format!("cannot load the compiled {}", path.display()))
        .map_err(LoadFailure::from)
}
