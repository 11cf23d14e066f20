//! The batch ingest manager: decides which tenant pipeline runs on which
//! staged file, and when.
//!
//! - Staging directories are watched (inotify) and rescanned periodically;
//!   files younger than `min_file_age_ms` or still named `.<name>.part` are
//!   left alone.
//! - Every scan checks each file's type and size; a file breaking a rule is
//!   quarantined with a reason file. Files beyond the staging quota wait in
//!   staging (the oldest fit first), and each *run* (every scan for
//!   on-arrival pipelines, each cron tick for scheduled ones) takes at most
//!   `max_files_per_run` files, oldest first; the others wait for the next
//!   run, never quarantined (`admission.rs`).
//! - A taken file is recorded as claimed in the manifest (fsync) and moved to
//!   `work/`; a worker ingests it and records done (fsync) before moving it to
//!   `archive/`, or failed, moving it to `failed/` with the classified reason.
//! - Workers share the host's `max_parallel_ingestions`. Each tenant has at
//!   most `max_concurrent_ingestions` running; when the host is saturated the
//!   highest `priority + waiting time / priority_aging_ms` goes first, so
//!   nobody starves.

use super::manifest::{self, Entry, Manifest};
use super::write_stop::{Unrecorded, WriteStop};
use crate::config::{BatchManagerConfig, Registry, RegistryHandle, Tenant, TenantId};
use crate::invocation::Invoker;
use crate::opened_file::{FileIdentity, OpenedFile};
use crate::telemetry::logs::Logs;
use chrono::Utc;
use futures::FutureExt;
use notify::Watcher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, watch};

/// A worker's share of its tenant's and the host's running counts and of the
/// host's capacity, given back when the worker ends, however it ends (a
/// panic too): a tenant's slot is never lost.
struct Working {
    counts: Vec<Arc<AtomicUsize>>,
    _permit: OwnedSemaphorePermit,
}

impl Drop for Working {
    fn drop(&mut self) {
        for count in &self.counts {
            count.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// How long shutdown waits for running ingestions.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(30);

pub struct BatchManager {
    inner: Arc<Inner>,
    shutdown: watch::Sender<bool>,
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    watcher: Mutex<Option<notify::RecommendedWatcher>>,
    /// One reload at a time.
    adopting: tokio::sync::Mutex<()>,
}

pub(super) struct Inner {
    pub(super) invoker: Arc<Invoker>,
    /// The embedded store's directory, probed after it failed to write;
    /// none for a remote store.
    pub(super) store_dir: Option<PathBuf>,
    /// The registry in force, for new tenants on [`BatchManager::adopt`].
    registry: RegistryHandle,
    pub(super) config: BatchManagerConfig,
    pub(super) logs: Arc<Logs>,
    /// Grows when a reload adds tenants; never shrinks.
    pub(super) tenants: RwLock<HashMap<TenantId, Arc<TenantState>>>,
    pub(super) queues: Mutex<HashMap<TenantId, VecDeque<Job>>>,
    capacity: Arc<Semaphore>,
    pub(super) wake: Notify,
    running_total: Arc<AtomicUsize>,
    pub(super) scan_lock: tokio::sync::Mutex<()>,
}

pub(super) struct TenantState {
    /// The tenant as the registry in force has it (replaced by a reload).
    tenant: Mutex<Arc<Tenant>>,
    pub(super) manifest: Manifest,
    /// (pipeline, checksum) of files done.
    pub(super) done: Mutex<HashSet<(String, String)>>,
    pub(super) running: Arc<AtomicUsize>,
    /// When a worker last took one of its files; aging counts from here.
    pub(super) last_served: Mutex<Option<Instant>>,
    /// Next tick of each cron-scheduled pipeline.
    pub(super) cron_next: Mutex<HashMap<String, chrono::DateTime<Utc>>>,
    /// Set while a write failed: no file is claimed until a probe succeeds.
    pub(super) stop: Mutex<Option<WriteStop>>,
    /// Outcomes that could not be recorded, their files still in `work/`.
    pub(super) unrecorded: Mutex<Vec<Unrecorded>>,
    /// Files that failed because the store could not write: staged again
    /// once it can.
    pub(super) failed_for_disk: Mutex<Vec<String>>,
    /// Staged files a claim is working on (opening, hashing, recording).
    pub(super) claiming: Mutex<HashSet<PathBuf>>,
}

/// Cron pipelines of one tenant to run now, each with the tick it is due at.
pub(super) type DueCron = HashMap<String, chrono::DateTime<Utc>>;

pub(super) struct Job {
    pub(super) entry: Entry,
    /// The file in `work/`, opened once when it was claimed (or recovered):
    /// the worker reads this descriptor, up to the size the claim checked.
    pub(super) file: OpenedFile,
    pub(super) identity: FileIdentity,
    pub(super) queued_at: Instant,
}

impl BatchManager {
    /// Recovers the manifest of every tenant of `registry`, then starts
    /// watching, scheduling and ingesting through `invoker`.
    pub async fn start(
        invoker: Arc<Invoker>,
        registry: RegistryHandle,
        config: BatchManagerConfig,
        logs: Arc<Logs>,
        store_dir: Option<PathBuf>,
    ) -> anyhow::Result<BatchManager> {
        let inner = Arc::new(Inner {
            capacity: Arc::new(Semaphore::new(config.max_parallel_ingestions)),
            tenants: RwLock::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            running_total: Arc::new(AtomicUsize::new(0)),
            scan_lock: tokio::sync::Mutex::new(()),
            invoker,
            store_dir,
            registry,
            config,
            logs,
        });
        let (shutdown, shutdown_rx) = watch::channel(false);
        let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
        let watcher = match notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            if event.is_ok() {
                let _ = events_tx.send(());
            }
        }) {
            Ok(watcher) => Some(watcher),
            Err(error) => {
                tracing::warn!(%error, "File watching is unavailable; relying on rescans.");
                None
            }
        };
        let manager =
            BatchManager { inner, shutdown, tasks: Mutex::new(Vec::new()), watcher: Mutex::new(watcher), adopting: Default::default() };
        let registry = manager.inner.registry.current();
        manager.adopt(&registry, &[]).await?;
        let inner = &manager.inner;
        manager.tasks.lock().expect("tasks poisoned").extend([
            tokio::spawn(inner.clone().schedule_loop(events_rx, shutdown_rx.clone())),
            tokio::spawn(inner.clone().dispatch_loop(shutdown_rx)),
        ]);
        Ok(manager)
    }

    /// Takes in the tenants of `registry` (the one in force after a reload):
    /// a new tenant's manifest is recovered and its staging directory
    /// watched; a known tenant gets its new profile, used from its next scan
    /// on; those in `changed` (their profile differs, as the reload found)
    /// get their cron ticks computed again.
    pub async fn adopt(&self, registry: &Registry, changed: &[String]) -> anyhow::Result<()> {
        let _one_at_a_time = self.adopting.lock().await;
        for tenant in registry.tenants() {
            let known = self.inner.tenants.read().expect("tenants poisoned").get(&tenant.id).cloned();
            if let Some(state) = known {
                *state.tenant.lock().expect("tenant poisoned") = tenant.clone();
                if changed.iter().any(|id| id == tenant.id.as_str()) {
                    state.cron_next.lock().expect("cron poisoned").clear();
                }
                continue;
            }
            let path = &tenant.paths.manifest;
            let (manifest, entries) = Manifest::open(path)
                .map_err(|e| anyhow::anyhow!("cannot open the manifest {} of tenant `{}`: {e}", path.display(), tenant.id))?;
            let state = TenantState {
                tenant: Mutex::new(tenant.clone()),
                manifest,
                done: Mutex::new(manifest::done_checksums(&entries)),
                running: Arc::new(AtomicUsize::new(0)),
                last_served: Mutex::new(None),
                cron_next: Mutex::new(HashMap::new()),
                stop: Mutex::new(None),
                unrecorded: Mutex::new(Vec::new()),
                failed_for_disk: Mutex::new(Vec::new()),
                claiming: Mutex::new(HashSet::new()),
            };
            self.inner.tenants.write().expect("tenants poisoned").insert(tenant.id.clone(), Arc::new(state));
            self.inner.recover(&tenant.id, entries).await;
            if let Some(watcher) = self.watcher.lock().expect("watcher poisoned").as_mut()
                && let Err(error) = watcher.watch(&tenant.paths.staging, notify::RecursiveMode::Recursive)
            {
                tracing::warn!(tenant = %tenant.id, %error, "Cannot watch the staging directory; relying on rescans.");
            }
        }
        self.inner.wake.notify_one();
        Ok(())
    }

    /// Scans every tenant now, as if files had just arrived (tests, CLI).
    pub async fn scan_now(&self) {
        for claim in self.inner.scan_all(&HashMap::new()).await {
            let _ = claim.await;
        }
    }

    /// Scans every tenant soon, in a task of its own (after `tenant resume`).
    pub fn rescan(&self) {
        let inner = self.inner.clone();
        tokio::spawn(async move { inner.scan_all(&HashMap::new()).await });
    }

    /// Stops taking files, waits up to 30 s for running ingestions (a crash
    /// later is safe too: they resume at the next start).
    pub async fn shutdown(&self) {
        let _ = self.shutdown.send(true);
        for task in self.tasks.lock().expect("tasks poisoned").drain(..) {
            task.abort();
        }
        let deadline = Instant::now() + SHUTDOWN_GRACE;
        while self.inner.running_total.load(Ordering::Acquire) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// `mysimbdp batch retry` through the running host, whose manifest of the
    /// tenant is the one writer of it: [`super::status::retry`].
    pub fn retry(&self, tenant: &TenantId, files: &[String], quarantined: bool) -> anyhow::Result<Vec<String>> {
        let state = self.inner.tenants.read().expect("tenants poisoned").get(tenant).cloned();
        let state = state.ok_or_else(|| anyhow::anyhow!("the batch manager serves no tenant `{tenant}`"))?;
        let moved = super::status::retry(&state.tenant(), &state.manifest, files, quarantined)?;
        self.inner.wake.notify_one();
        Ok(moved)
    }

    /// The tenants whose writes failed, and why: they take no files until
    /// the host can write again.
    pub fn write_stops(&self) -> Vec<(TenantId, WriteStop)> {
        self.inner
            .states()
            .into_iter()
            .filter_map(|(id, state)| state.stop.lock().expect("stop poisoned").clone().map(|s| (id, s)))
            .collect()
    }

    /// Files queued and running now, per tenant.
    pub fn load(&self) -> HashMap<TenantId, (usize, usize)> {
        let queues = self.inner.queues.lock().expect("queues poisoned");
        self.inner
            .states()
            .into_iter()
            .map(|(id, state)| {
                let queued = queues.get(&id).map_or(0, VecDeque::len);
                (id, (queued, state.running.load(Ordering::Acquire)))
            })
            .collect()
    }
}

impl TenantState {
    pub(super) fn tenant(&self) -> Arc<Tenant> {
        self.tenant.lock().expect("tenant poisoned").clone()
    }
}

impl Inner {
    /// The tenants known now.
    pub(super) fn states(&self) -> Vec<(TenantId, Arc<TenantState>)> {
        self.tenants.read().expect("tenants poisoned").iter().map(|(id, state)| (id.clone(), state.clone())).collect()
    }

    pub(super) fn state(&self, id: &TenantId) -> Arc<TenantState> {
        self.tenants.read().expect("tenants poisoned")[id].clone()
    }

    async fn schedule_loop(self: Arc<Self>, mut events: tokio::sync::mpsc::UnboundedReceiver<()>, mut shutdown: watch::Receiver<bool>) {
        let scan_interval = Duration::from_millis(self.config.scan_interval_ms);
        let mut next_scan = tokio::time::Instant::now();
        loop {
            let now = Utc::now();
            let due = self.due_cron(now);
            let next_cron = self.next_cron();
            let until_cron = next_cron.map(|t| (t - Utc::now()).to_std().unwrap_or_default());
            if !due.is_empty() || tokio::time::Instant::now() >= next_scan {
                self.scan_all(&due).await;
                next_scan = tokio::time::Instant::now() + scan_interval;
                continue;
            }
            let sleep_for = until_cron.map_or(scan_interval, |c| c.min(scan_interval)).min(next_scan - tokio::time::Instant::now());
            tokio::select! {
                _ = shutdown.changed() => return,
                Some(()) = events.recv() => {
                    // Let a burst of events settle, then scan once.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    while events.try_recv().is_ok() {}
                    next_scan = tokio::time::Instant::now();
                }
                _ = tokio::time::sleep(sleep_for) => {}
            }
        }
    }

    async fn dispatch_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            while let Ok(permit) = self.capacity.clone().try_acquire_owned() {
                let Some((tenant, job)) = self.pick() else {
                    drop(permit);
                    break;
                };
                self.running_total.fetch_add(1, Ordering::AcqRel);
                let working = Working { counts: vec![self.state(&tenant).running.clone(), self.running_total.clone()], _permit: permit };
                let inner = self.clone();
                tokio::spawn(async move {
                    let file = job.entry.file.clone();
                    let worked = std::panic::AssertUnwindSafe(inner.work(&tenant, job)).catch_unwind().await;
                    if let Err(panic) = worked {
                        let message =
                            panic.downcast_ref::<&str>().map(|s| s.to_string()).or_else(|| panic.downcast_ref::<String>().cloned());
                        tracing::error!(tenant = %tenant, %file, panic = message.unwrap_or_default(), "A batch worker panicked; its slot is free again and the file is resumed at the next start.");
                    }
                    drop(working);
                    inner.publish_load();
                    inner.wake.notify_one();
                });
            }
            self.publish_load();
            tokio::select! {
                _ = shutdown.changed() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
        }
    }

    pub(super) fn publish_load(&self) {
        let queues = self.queues.lock().expect("queues poisoned");
        for (id, state) in self.states() {
            let queued = queues.get(&id).map_or(0, VecDeque::len);
            crate::telemetry::events::BatchLoad { tenant: &id, queued, running: state.running.load(Ordering::Acquire) }.emit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_panicking_worker_gives_its_slot_back() {
        let (running, total) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let capacity = Arc::new(Semaphore::new(1));
        let cases = [("ends", false), ("panics", true)];
        for (how, panics) in cases {
            running.fetch_add(1, Ordering::AcqRel);
            total.fetch_add(1, Ordering::AcqRel);
            let working = Working { counts: vec![running.clone(), total.clone()], _permit: capacity.clone().try_acquire_owned().unwrap() };
            assert_eq!(capacity.available_permits(), 0);
            let worker = tokio::spawn(async move {
                let _working = working;
                tokio::task::yield_now().await;
                assert!(!panics, "the worker panics");
            });
            assert_eq!(worker.await.is_err(), panics, "{how}");
            assert_eq!((running.load(Ordering::Acquire), total.load(Ordering::Acquire)), (0, 0), "the worker that {how} is not counted");
            assert_eq!(capacity.available_permits(), 1, "the worker that {how} gave its permit back");
        }
    }
}
