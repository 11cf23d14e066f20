//! The wasm sandbox: compiles pipeline components once, keeps their
//! pre-instantiated form, and runs every invocation in a fresh `Store` with
//! the tenant's limits. A trap ends that invocation only.

pub mod bindings;
mod failure;
mod limits;

pub use failure::{Failure, FailureKind};
pub use limits::{DeadlineExceeded, MemoryLimitExceeded, MemoryLimiter};

use crate::capabilities::HostState;
use crate::capabilities::staging::InputFile;
use crate::config::SandboxLimits;
use crate::pipelines::{PipelineKind, PipelineVersion};
use anyhow::Context;
use bindings::{BatchReport, Message, StreamReport};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, Store, UpdateDeadline};

/// The deepest wasm stack a profile may ask for.
pub const MAX_WASM_STACK_BYTES: u64 = 2 * 1024 * 1024;
/// Host calls run on the guest's fiber, below its wasm stack.
const HOST_STACK_BYTES: usize = 2 * 1024 * 1024;
/// How often epochs advance; the deadline is checked at this granularity and
/// a running guest yields to other tasks this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Bytes a guest may pass to the host in one call (documents, messages).
const MAX_HOSTCALL_BYTES: usize = 64 * 1024 * 1024;

/// An engine and the linkers of both worlds. `max_wasm_stack` is an engine
/// setting, so there is one per distinct stack limit in the profiles.
struct EngineSet {
    engine: Engine,
    batch: Linker<HostState>,
    stream: Linker<HostState>,
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
pub fn linker(engine: &Engine, kind: PipelineKind) -> anyhow::Result<Linker<HostState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)?;
    match kind {
        PipelineKind::Batch => bindings::batch::BatchPipeline::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?,
        PipelineKind::Stream => bindings::stream::StreamPipeline::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)?,
    }
    Ok(linker)
}

/// A component compiled and linked, ready to instantiate.
#[derive(Clone)]
pub enum Prepared {
    Batch(bindings::batch::BatchPipelinePre<HostState>),
    Stream(bindings::stream::StreamPipelinePre<HostState>),
}

/// A pipeline version ready to run under one stack limit.
pub struct CompiledPipeline {
    pub version: PipelineVersion,
    engine: Engine,
    prepared: Prepared,
}

/// What an invocation used, measured by the host.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub fuel_consumed: u64,
    pub peak_memory_bytes: u64,
    pub duration: Duration,
}

/// A component (by SHA-256), the stack limit of its engine, and its world.
type CompileKey = (String, u64, PipelineKind);

pub struct Runtime {
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

impl Runtime {
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
        Runtime {
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
        let component = tokio::task::spawn_blocking(move || compile_cached(&engine, &path, cache_file.as_deref()))
            .await
            .context("compiler thread")??;
        let prepared = prepare(&set, version.kind, &component)?;
        Ok(Arc::new(CompiledPipeline { version: version.clone(), engine: set.engine.clone(), prepared }))
    }

    /// Runs the batch pipeline on one file.
    pub async fn run_batch(
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
        invoke(&pipeline.engine, limits, state, async move |store| {
            let instance = pre.instantiate_async(&mut *store).await?;
            let handle = store.data_mut().table().push(file)?;
            let borrowed = wasmtime::component::Resource::<InputFile>::new_borrow(handle.rep());
            let result = instance.call_ingest(&mut *store, borrowed).await;
            store.data_mut().table().delete(handle)?;
            result
        })
        .await
    }

    /// Runs the stream pipeline on one batch of messages.
    pub async fn run_stream(
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
        invoke(&pipeline.engine, limits, state, async move |store| {
            let instance = pre.instantiate_async(&mut *store).await?;
            instance.call_process(&mut *store, &batch).await
        })
        .await
    }
}

impl Drop for Runtime {
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

fn compile_cached(engine: &Engine, wasm: &Path, cache_file: Option<&Path>) -> anyhow::Result<Component> {
    if let Some(cache_file) = cache_file
        && cache_file.exists()
    {
        // SAFETY: the file was written by `Component::serialize` of this
        // host into its own data directory; a stale or foreign artifact fails
        // the engine compatibility check instead of loading.
        match unsafe { Component::deserialize_file(engine, cache_file) } {
            Ok(component) => return Ok(component),
            Err(error) => tracing::warn!(file = %cache_file.display(), %error, "Compiled pipeline not reusable; compiling again."),
        }
    }
    let bytes = std::fs::read(wasm).with_context(|| format!("cannot read pipeline {}", wasm.display()))?;
    let component =
        Component::new(engine, &bytes).map_err(anyhow::Error::from).with_context(|| format!("cannot compile {}", wasm.display()))?;
    if let Some(cache_file) = cache_file {
        // Another host process may write the same artifact: a private temporary name.
        let temporary = cache_file.with_extension(format!("{}.tmp", std::process::id()));
        let written = cache_file
            .parent()
            .map_or(Ok(()), std::fs::create_dir_all)
            .and_then(|_| std::fs::write(&temporary, component.serialize().unwrap_or_default()))
            .and_then(|_| std::fs::rename(&temporary, cache_file));
        if let Err(error) = written {
            tracing::warn!(file = %cache_file.display(), %error, "Cannot cache the compiled pipeline.");
        }
    }
    Ok(component)
}

/// Runs `call` in a fresh store with `limits`, then classifies the outcome.
async fn invoke<R, F>(engine: &Engine, limits: &SandboxLimits, state: HostState, call: F) -> (Result<R, Failure>, Usage, HostState)
where
    F: AsyncFnOnce(&mut Store<HostState>) -> wasmtime::Result<Result<R, bindings::GuestError>>,
{
    let started = Instant::now();
    let deadline = Duration::from_millis(limits.deadline_ms);
    let mut store = Store::new(engine, state);
    store.limiter(|state| &mut state.limiter);
    store.set_hostcall_fuel(MAX_HOSTCALL_BYTES);
    if let Err(error) = store.set_fuel(limits.fuel_per_invocation) {
        let failure = Failure::new(FailureKind::GuestTrap, format!("cannot set fuel: {error}"));
        return (Err(failure), Usage::default(), store.into_data());
    }
    // Yield to other tasks every tick while the guest computes; trap once the
    // deadline has passed.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(move |_| {
        if started.elapsed() >= deadline {
            Err(wasmtime::Error::new(DeadlineExceeded { deadline_ms: deadline.as_millis() as u64 }))
        } else {
            Ok(UpdateDeadline::Yield(1))
        }
    });

    // Epochs stop a guest that computes; the timeout also stops one that
    // waits in a host call (a sleep, a slow sink).
    let outcome = tokio::time::timeout(deadline + EPOCH_TICK * 5, call(&mut store)).await;
    let fuel_left = store.get_fuel().unwrap_or(0);
    let usage = Usage {
        fuel_consumed: limits.fuel_per_invocation.saturating_sub(fuel_left),
        peak_memory_bytes: store.data().limiter.peak_bytes(),
        duration: started.elapsed(),
    };
    let mut state = store.into_data();
    let stderr = state.flush_output();
    let result = match outcome {
        Err(_elapsed) => Err(Failure::new(
            FailureKind::Deadline,
            format!("the invocation ran past its deadline of {} ms while waiting in a host call", limits.deadline_ms),
        )),
        Ok(Err(error)) => Err(failure::classify(&error, &state, &stderr)),
        Ok(Ok(Err(guest_error))) => Err(failure::from_guest_error(guest_error, &state)),
        Ok(Ok(Ok(report))) => match &state.effects.sink_error {
            // The guest went on after a sink failed: the data did not all land.
            Some(error) => Err(Failure::new(FailureKind::SinkError, error.clone())),
            None => Ok(report),
        },
    };
    (result, usage, state)
}
