//! One invocation's `Store`: its data (the memory limiter and the host state
//! the imports work with), the limits it runs under, and how its outcome is
//! classified.

use super::classify;
use super::limits::{DeadlineExceeded, MemoryLimiter};
use crate::capabilities::HostState;
use crate::capabilities::bindings::GuestError;
use crate::config::SandboxLimits;
use crate::cpu_shares::Turn;
use crate::failure::{Failure, FailureKind};
use crate::telemetry::events;
use std::time::{Duration, Instant};
use wasmtime::{Engine, Store, UpdateDeadline};
use wasmtime_wasi::{WasiCtxView, WasiView};

/// How often epochs advance; the deadline is checked at this granularity and
/// a running guest yields to other tasks this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);
/// Bytes a guest may pass to the host in one call (documents, messages).
const MAX_HOSTCALL_BYTES: usize = 64 * 1024 * 1024;

/// The data of one invocation's `Store`: what limits the guest's memory, and
/// the host state its imports work with.
pub struct StoreData {
    limiter: MemoryLimiter,
    pub host: HostState,
}

impl StoreData {
    pub fn new(host: HostState, memory_bytes: u64) -> StoreData {
        StoreData { limiter: MemoryLimiter::new(memory_bytes), host }
    }
}

impl WasiView for StoreData {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        self.host.ctx()
    }
}

/// What an invocation used, measured by the host.
#[derive(Debug, Clone, Default)]
pub struct Usage {
    pub fuel_consumed: u64,
    pub peak_memory_bytes: u64,
    pub duration: Duration,
}

/// Runs `call` in a fresh store with `limits`, in `turn` (its tenant's CPU
/// slot, taken first and passed on at every epoch tick), then classifies the
/// outcome.
pub(super) async fn invoke<R, F>(
    engine: &Engine,
    limits: &SandboxLimits,
    host: HostState,
    turn: Turn,
    call: F,
) -> (Result<R, Failure>, Usage, HostState)
where
    F: AsyncFnOnce(&mut Store<StoreData>) -> wasmtime::Result<Result<R, GuestError>>,
{
    let started = Instant::now();
    let deadline = Duration::from_millis(limits.deadline_ms);
    let mut host = host;
    host.runs_in(turn.clone());
    let host_tenant = host.scope.tenant.id.to_string();
    let mut store = Store::new(engine, StoreData::new(host, limits.memory_bytes.bytes()));
    store.limiter(|state| &mut state.limiter);
    store.set_hostcall_fuel(MAX_HOSTCALL_BYTES);
    if let Err(error) = store.set_fuel(limits.fuel_per_invocation) {
        let failure = Failure::new(FailureKind::GuestTrap, format!("cannot set fuel: {error}"));
        return (Err(failure), Usage::default(), store.into_data().host);
    }
    // Every tick while the guest computes: pass the tenant's turn on (to the
    // tenant's next guest waiting for it, and to other tasks) and take it
    // again; trap once the deadline has passed.
    store.set_epoch_deadline(1);
    let passing = turn.clone();
    let tenant = host_tenant.clone();
    store.epoch_deadline_callback(move |_| {
        if started.elapsed() >= deadline {
            return Err(wasmtime::Error::new(DeadlineExceeded { deadline_ms: deadline.as_millis() as u64 }));
        }
        let (turn, tenant) = (passing.clone(), tenant.clone());
        Ok(UpdateDeadline::YieldCustom(
            1,
            Box::pin(async move {
                if turn.pass(deadline.saturating_sub(started.elapsed())).await {
                    events::GaveWay { tenant: &tenant }.emit();
                }
                let (computing, waiting) = turn.load();
                events::GuestsComputing { tenant: &tenant, computing, waiting }.emit();
            }),
        ))
    });

    // Epochs stop a guest that computes; the timeout also stops one that
    // waits in a host call (a sleep, a slow sink) or for its tenant's turn.
    let outcome = tokio::time::timeout(deadline + EPOCH_TICK * 5, async {
        turn.take().await;
        call(&mut store).await
    })
    .await;
    turn.give_back();
    let (computing, waiting) = turn.load();
    events::GuestsComputing { tenant: &host_tenant, computing, waiting }.emit();
    drop(turn);
    let fuel_left = store.get_fuel().unwrap_or(0);
    let usage = Usage {
        fuel_consumed: limits.fuel_per_invocation.saturating_sub(fuel_left),
        peak_memory_bytes: store.data().limiter.peak_bytes(),
        duration: started.elapsed(),
    };
    let mut state = store.into_data().host;
    state.leaves_turn();
    let stderr = state.flush_output();
    let effects = state.effects();
    let result = match outcome {
        Err(_elapsed) => Err(classify::past_deadline(
            deadline,
            effects,
            &format!("the invocation ran past its deadline of {} ms while waiting in a host call", limits.deadline_ms),
        )),
        Ok(Err(error)) => Err(classify::classify(&error, effects, &stderr)),
        Ok(Ok(Err(guest_error))) => Err(classify::from_guest_error(guest_error, effects)),
        Ok(Ok(Ok(report))) => match &effects.sink_error {
            // The guest went on after a sink failed: the data did not all land.
            Some(error) => Err(Failure::new(FailureKind::SinkError, error.clone())),
            None => Ok(report),
        },
    };
    (result, usage, state)
}
