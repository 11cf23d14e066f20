//! The batch ingest manager: decides which tenant pipeline runs on which
//! staged file, and when.
//!
//! - Staging directories are watched (inotify) and rescanned periodically;
//!   files younger than `min_file_age_ms` or still named `.<name>.part` are
//!   left alone.
//! - Every scan checks type and size and the staging quota; a file breaking a
//!   rule is quarantined with a reason file. Each *run* (every scan for
//!   on-arrival pipelines, each cron tick for scheduled ones) takes at most
//!   `max_files_per_run` files; extra files are quarantined too.
//! - A taken file is recorded as claimed in the manifest (fsync) and moved to
//!   `work/`; a worker ingests it and records done (fsync) before moving it to
//!   `archive/`, or failed, moving it to `failed/` with the classified reason.
//! - Workers share the host's `max_parallel_ingestions`. Each tenant has at
//!   most `max_concurrent_ingestions` running; when the host is saturated the
//!   highest `priority + waiting time / priority_aging_ms` goes first, so
//!   nobody starves.

use super::constraints::{Violation, check_file, check_staging_total};
use super::manifest::{self, Entry, FileState, Manifest};
use super::staging::{self, Reason, StagedFile};
use super::{FileIdentity, IngestOptions, ingest_file_with};
use crate::config::{OnSuccess, Registry, Schedule, Tenant, TenantId};
use crate::opened_file::OpenedFile;
use crate::platform::Platform;
use crate::telemetry::{IngestionRecord, Outcome, metrics as telemetry};
use chrono::Utc;
use notify::Watcher;
use std::collections::{HashMap, HashSet, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::{Notify, Semaphore, watch};

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

struct Inner {
    platform: Arc<Platform>,
    /// Grows when a reload adds tenants; never shrinks.
    tenants: RwLock<HashMap<TenantId, Arc<TenantState>>>,
    queues: Mutex<HashMap<TenantId, VecDeque<Job>>>,
    capacity: Arc<Semaphore>,
    wake: Notify,
    running_total: AtomicUsize,
    scan_lock: tokio::sync::Mutex<()>,
}

struct TenantState {
    /// The tenant as the registry in force has it (replaced by a reload).
    tenant: Mutex<Arc<Tenant>>,
    manifest: Manifest,
    /// (pipeline, checksum) of files done.
    done: Mutex<HashSet<(String, String)>>,
    running: AtomicUsize,
    /// When a worker last took one of its files; aging counts from here.
    last_served: Mutex<Option<Instant>>,
    /// Next tick of each cron-scheduled pipeline.
    cron_next: Mutex<HashMap<String, chrono::DateTime<Utc>>>,
}

/// Cron pipelines of one tenant to run now, each with the tick it is due at.
type DueCron = HashMap<String, chrono::DateTime<Utc>>;

struct Job {
    entry: Entry,
    /// The file in `work/`, opened once when it was claimed (or recovered):
    /// the worker reads this descriptor, up to the size the claim checked.
    file: OpenedFile,
    identity: FileIdentity,
    queued_at: Instant,
}

impl BatchManager {
    /// Recovers every tenant's manifest, then starts watching, scheduling and
    /// ingesting.
    pub async fn start(platform: Arc<Platform>) -> anyhow::Result<BatchManager> {
        let inner = Arc::new(Inner {
            capacity: Arc::new(Semaphore::new(platform.config.batch.max_parallel_ingestions)),
            tenants: RwLock::new(HashMap::new()),
            queues: Mutex::new(HashMap::new()),
            wake: Notify::new(),
            running_total: AtomicUsize::new(0),
            scan_lock: tokio::sync::Mutex::new(()),
            platform,
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
        let registry = manager.inner.platform.registry();
        manager.adopt(&registry, &[]).await?;
        let inner = &manager.inner;
        manager.tasks.lock().expect("tasks poisoned").extend([
            tokio::spawn(inner.clone().schedule_loop(events_rx, shutdown_rx.clone())),
            tokio::spawn(inner.clone().dispatch_loop(shutdown_rx)),
        ]);
        Ok(manager)
    }

    /// Takes in the tenants of `registry` (the platform's, after
    /// [`Platform::reload`]): a new tenant's manifest is recovered and its
    /// staging directory watched; a known tenant gets its new profile, used
    /// from its next scan on; those in `changed` (their profile differs, as
    /// [`Platform::reload`] found) get their cron ticks computed again.
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
                running: AtomicUsize::new(0),
                last_served: Mutex::new(None),
                cron_next: Mutex::new(HashMap::new()),
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
        self.inner.scan_all(&HashMap::new()).await;
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
    fn tenant(&self) -> Arc<Tenant> {
        self.tenant.lock().expect("tenant poisoned").clone()
    }
}

impl Inner {
    /// The tenants known now.
    fn states(&self) -> Vec<(TenantId, Arc<TenantState>)> {
        self.tenants.read().expect("tenants poisoned").iter().map(|(id, state)| (id.clone(), state.clone())).collect()
    }

    fn state(&self, id: &TenantId) -> Arc<TenantState> {
        self.tenants.read().expect("tenants poisoned")[id].clone()
    }

    /// Resumes what a previous run left: claimed or ingesting files are queued
    /// again, finished ones moved where they belong.
    async fn recover(self: &Arc<Self>, tenant: &TenantId, entries: Vec<Entry>) {
        let state = &self.state(tenant);
        let work = &state.tenant().paths.work;
        let mut known = HashSet::new();
        for entry in entries {
            let path = entry.work_path(work);
            known.insert(path.clone());
            match entry.state {
                FileState::Claimed | FileState::Ingesting if path.exists() => {
                    tracing::info!(tenant = %tenant, file = %entry.file, "Resuming an ingestion interrupted by a stop.");
                    match reopen(&path, &state.tenant().paths.work, &entry).await {
                        Ok((file, identity)) => self.enqueue(tenant, Job { entry, file, identity, queued_at: Instant::now() }),
                        Err(message) => {
                            tracing::error!(tenant = %tenant, file = %entry.file, %message, "A claimed file cannot be resumed.");
                            let failed = Entry {
                                state: FileState::Failed,
                                ts: Utc::now(),
                                reason: Some(format!("not-started: {message}")),
                                ..entry.clone()
                            };
                            self.record(state, &[failed], true);
                            self.finish_failed(state, &entry, &path, "not-started", &message);
                        }
                    }
                }
                FileState::Claimed | FileState::Ingesting => {
                    // Stopped between the claim and the move: the file is still staged.
                    let retried = Entry {
                        state: FileState::Retried,
                        ts: Utc::now(),
                        reason: Some("claim interrupted; the file is still in staging".into()),
                        ..entry
                    };
                    self.record(state, &[retried], true);
                }
                FileState::Done if path.exists() => self.finish_done(state, &entry, &path),
                FileState::Failed if path.exists() => {
                    let reason = entry.reason.clone().unwrap_or_default();
                    self.finish_failed(state, &entry, &path, "interrupted", &reason);
                }
                _ => {}
            }
        }
        // A file in work/ the manifest does not know goes back to staging.
        for file in staging::list(work).unwrap_or_default() {
            if !known.contains(&file.path) {
                let name = file.relative.split_once('-').map_or(file.relative.as_str(), |(_, n)| n).to_string();
                if let Err(error) = staging::move_into(&file.path, &state.tenant().paths.staging, &name, &manifest::new_id()) {
                    tracing::error!(tenant = %tenant, file = %file.path.display(), %error, "Cannot return an unknown work file to staging.");
                }
            }
        }
        self.wake.notify_one();
    }

    fn record(&self, state: &TenantState, entries: &[Entry], durable: bool) {
        if let Err(error) = state.manifest.record(entries, durable) {
            // Without the manifest a crash could ingest twice or lose track.
            tracing::error!(tenant = %state.tenant().id, file = %state.manifest.path().display(), %error, "Cannot write the manifest.");
        }
    }

    fn enqueue(&self, tenant: &TenantId, job: Job) {
        self.queues.lock().expect("queues poisoned").entry(tenant.clone()).or_default().push_back(job);
    }

    async fn schedule_loop(self: Arc<Self>, mut events: tokio::sync::mpsc::UnboundedReceiver<()>, mut shutdown: watch::Receiver<bool>) {
        let scan_interval = Duration::from_millis(self.platform.config.batch.scan_interval_ms);
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

    /// Cron pipelines whose tick has come, per tenant, with that tick; advances
    /// their ticks. A host that wakes late (busy, suspended) runs a pipeline
    /// once for the ticks it missed, under the earliest of them.
    fn due_cron(&self, now: chrono::DateTime<Utc>) -> HashMap<TenantId, DueCron> {
        let mut due: HashMap<TenantId, DueCron> = HashMap::new();
        for (id, state) in self.states() {
            let tenant = state.tenant();
            let mut next = state.cron_next.lock().expect("cron poisoned");
            for pipeline in &tenant.profile.batch {
                let schedule = pipeline.schedule.as_ref().unwrap_or(&tenant.profile.agreement.schedule);
                let Schedule::Cron(cron) = schedule else { continue };
                let name = pipeline.name.to_string();
                let tick = *next.entry(name.clone()).or_insert_with(|| cron.after(&now).next().unwrap_or(now));
                if tick <= now {
                    due.entry(id.clone()).or_default().insert(name.clone(), tick);
                    next.insert(name, cron.after(&now).next().unwrap_or(now + chrono::Duration::days(365)));
                }
            }
        }
        due
    }

    fn next_cron(&self) -> Option<chrono::DateTime<Utc>> {
        self.states().into_iter().flat_map(|(_, s)| s.cron_next.lock().expect("cron poisoned").values().copied().collect::<Vec<_>>()).min()
    }

    async fn scan_all(self: &Arc<Self>, due_cron: &HashMap<TenantId, DueCron>) {
        let _one_scan_at_a_time = self.scan_lock.lock().await;
        let no_cron = DueCron::new();
        for (id, state) in self.states() {
            let cron = due_cron.get(&id).unwrap_or(&no_cron);
            if let Err(error) = self.scan_tenant(&state, cron).await {
                tracing::error!(tenant = %id, error = %format!("{error:#}"), "Scanning the staging directory failed.");
            }
        }
        self.publish_load();
        self.wake.notify_one();
    }

    fn quarantine(&self, state: &TenantState, file: &StagedFile, violation: &Violation) {
        let tenant = &state.tenant();
        match staging::quarantine(tenant, file, violation) {
            Ok(moved) => {
                tracing::warn!(tenant = %tenant.id, file = %file.relative, rule = %violation.rule, "File quarantined: {}.", violation.message());
                self.platform.tenant_log(tenant, crate::pipelines::PipelineKind::Batch).write(&serde_json::json!({
                    "type": "quarantine",
                    "tenant": tenant.id,
                    "file": file.relative,
                    "rule": violation.rule,
                    "limit": violation.limit,
                    "actual": violation.actual,
                    "message": violation.message(),
                    "moved_to": moved,
                }));
                telemetry::record_quarantine(tenant.id.as_str(), &violation.rule);
            }
            Err(error) => tracing::error!(tenant = %tenant.id, file = %file.relative, %error, "Cannot quarantine a file."),
        }
    }

    /// One scan of a tenant's staging directory: constraints, then the run of
    /// on-arrival pipelines and of the cron pipelines in `due`.
    async fn scan_tenant(self: &Arc<Self>, state: &TenantState, due: &DueCron) -> anyhow::Result<()> {
        let tenant = &state.tenant();
        let profile = &tenant.profile;
        let min_age = Duration::from_millis(self.platform.config.batch.min_file_age_ms);
        let now = SystemTime::now();
        let files = staging::list(&tenant.paths.staging)?;

        // Rules each file can break alone.
        let mut kept = Vec::new();
        for file in files {
            let settled = now.duration_since(file.modified).unwrap_or_default() >= min_age;
            if !settled {
                kept.push((file, false));
                continue;
            }
            if let Some(kind) = file.special {
                self.quarantine(state, &file, &Violation::new("not-a-regular-file", "a regular file", kind));
                continue;
            }
            let pipeline = profile.batch_pipeline_for(Path::new(&file.relative));
            let violation = check_file(&profile.constraints, Path::new(&file.relative), file.bytes).or_else(|| {
                pipeline.is_none().then(|| {
                    let patterns: Vec<&str> = profile.batch.iter().map(|p| p.files.as_str()).collect();
                    Violation::new("no-pipeline", if patterns.is_empty() { "none".into() } else { patterns.join(", ") }, &file.relative)
                })
            });
            match violation {
                Some(violation) => self.quarantine(state, &file, &violation),
                None => kept.push((file, true)),
            }
        }

        // The staging quota: oldest files fit first.
        let mut total = 0;
        let mut within = Vec::new();
        for (file, settled) in kept {
            total += file.bytes;
            match check_staging_total(&profile.constraints, total) {
                Some(violation) if settled => {
                    total -= file.bytes;
                    self.quarantine(state, &file, &violation);
                }
                _ => within.push((file, settled)),
            }
        }

        // This run: settled files of pipelines that run now.
        let mut run: Vec<StagedFile> = within
            .into_iter()
            .filter(|(_, settled)| *settled)
            .map(|(file, _)| file)
            .filter(|file| {
                let pipeline = profile.batch_pipeline_for(Path::new(&file.relative)).expect("checked above");
                match pipeline.schedule.as_ref().unwrap_or(&profile.agreement.schedule) {
                    Schedule::OnArrival => true,
                    Schedule::Cron(_) => due.contains_key(pipeline.name.as_str()),
                }
            })
            .collect();
        let limit = profile.constraints.max_files_per_run as usize;
        if run.len() > limit {
            let count = run.len();
            for file in run.split_off(limit) {
                self.quarantine(state, &file, &Violation::new("max-files-per-run", limit, count));
            }
        }
        if !run.is_empty() {
            self.claim(state, run, due).await;
        }
        Ok(())
    }

    /// Records the claims durably, each with the cron tick that took it, then
    /// moves the files to `work/` and queues them.
    async fn claim(self: &Arc<Self>, state: &TenantState, files: Vec<StagedFile>, due: &DueCron) {
        let tenant = &state.tenant();
        let mut claims = Vec::new();
        for file in files {
            // Opened once, here: the descriptor checked and hashed now is the
            // one the worker reads, whatever happens to the name afterwards.
            let (opened, identity) = match open_and_hash(&file.path, &tenant.paths.staging).await {
                Ok(opened) => opened,
                Err(OpenFailure::Refused(refused)) => {
                    let kind = match refused {
                        crate::opened_file::OpenRefused::Link { .. } => "symbolic link",
                        crate::opened_file::OpenRefused::NotRegular { kind, .. } => kind,
                        _ => "file outside the staging directory",
                    };
                    self.quarantine(state, &file, &Violation::new("not-a-regular-file", "a regular file", kind));
                    continue;
                }
                Err(OpenFailure::Unreadable(error)) => {
                    tracing::warn!(tenant = %tenant.id, file = %file.relative, %error, "Cannot read a staged file; will retry.");
                    continue;
                }
            };
            // Checked again on what was opened: it may have grown since the scan.
            if let Some(violation) = check_file(&tenant.profile.constraints, Path::new(&file.relative), opened.size()) {
                self.quarantine(state, &file, &violation);
                continue;
            }
            let pipeline = tenant.profile.batch_pipeline_for(Path::new(&file.relative)).expect("checked by the scan");
            let entry = Entry {
                id: manifest::new_id(),
                state: FileState::Claimed,
                file: file.relative.clone(),
                pipeline: pipeline.name.to_string(),
                checksum: identity.sha256.clone(),
                bytes: identity.bytes,
                ts: Utc::now(),
                reason: None,
                tick: due.get(pipeline.name.as_str()).copied(),
            };
            if state.done.lock().expect("done poisoned").contains(&(entry.pipeline.clone(), identity.sha256.clone())) {
                let entry =
                    Entry { state: FileState::Duplicate, reason: Some("a file with this checksum was already ingested".into()), ..entry };
                self.record(state, std::slice::from_ref(&entry), true);
                tracing::info!(tenant = %tenant.id, file = %file.relative, "File already ingested (same checksum); not ingested again.");
                self.platform.tenant_log(tenant, crate::pipelines::PipelineKind::Batch).write(&serde_json::json!({
                    "type": "duplicate", "tenant": tenant.id, "file": file.relative, "checksum": identity.sha256,
                }));
                self.dispose(state, &entry, &file.path, pipeline.on_success);
                continue;
            }
            claims.push((entry, file, opened, identity));
        }
        let entries: Vec<Entry> = claims.iter().map(|(entry, ..)| entry.clone()).collect();
        if entries.is_empty() {
            return;
        }
        self.record(state, &entries, true);
        for (entry, file, opened, identity) in claims {
            let work = entry.work_path(&tenant.paths.work);
            if let Err(error) = std::fs::rename(&file.path, &work) {
                tracing::warn!(tenant = %tenant.id, file = %file.relative, %error, "A claimed file vanished from staging.");
                let gone = Entry {
                    state: FileState::Retried,
                    ts: Utc::now(),
                    reason: Some(format!("vanished before ingestion: {error}")),
                    ..entry
                };
                self.record(state, &[gone], false);
                continue;
            }
            self.enqueue(&tenant.id, Job { entry, file: opened, identity, queued_at: Instant::now() });
        }
    }

    /// Archives (or deletes, per the profile) a file whose content is in the store.
    fn dispose(&self, state: &TenantState, entry: &Entry, path: &Path, on_success: OnSuccess) {
        let result = match on_success {
            OnSuccess::Archive => staging::move_into(path, &state.tenant().paths.archive, &entry.file, &entry.id).map(drop),
            OnSuccess::Delete => std::fs::remove_file(path),
        };
        if let Err(error) = result {
            tracing::error!(tenant = %state.tenant().id, file = %entry.file, %error, "Cannot archive an ingested file.");
        }
    }

    fn finish_done(&self, state: &TenantState, entry: &Entry, path: &Path) {
        let on_success = state.tenant().profile.batch_pipeline(&entry.pipeline).map_or(OnSuccess::Archive, |p| p.on_success);
        self.dispose(state, entry, path, on_success);
    }

    fn finish_failed(&self, state: &TenantState, entry: &Entry, path: &Path, kind: &str, message: &str) {
        let tenant = &state.tenant();
        let reason = Reason {
            tenant: tenant.id.to_string(),
            file: entry.file.clone(),
            rule: kind.to_string(),
            limit: None,
            actual: None,
            message: message.to_string(),
            at: Utc::now(),
            id: Some(entry.id.clone()),
            pipeline: Some(entry.pipeline.clone()),
        };
        if let Err(error) = staging::move_with_reason(path, &tenant.paths.failed, &entry.id, &reason) {
            tracing::error!(tenant = %tenant.id, file = %entry.file, %error, "Cannot move a failed file to failed/.");
        }
    }

    /// The next job: highest priority plus waiting time, among tenants below
    /// their concurrency cap.
    fn pick(&self) -> Option<(TenantId, Job)> {
        let aging = Duration::from_millis(self.platform.config.batch.priority_aging_ms.max(1));
        let mut queues = self.queues.lock().expect("queues poisoned");
        let best = queues
            .iter()
            .filter_map(|(id, queue)| {
                let head = queue.front()?;
                let state = &self.state(id);
                let agreement = &state.tenant().profile.agreement;
                (state.running.load(Ordering::Acquire) < agreement.max_concurrent_ingestions as usize).then(|| {
                    // Waiting counts from when the tenant was last served: a
                    // tenant served again and again does not age.
                    let since = match *state.last_served.lock().expect("poisoned") {
                        Some(served) => served.max(head.queued_at),
                        None => head.queued_at,
                    };
                    let waited = since.elapsed();
                    (f64::from(agreement.priority) + waited.as_secs_f64() / aging.as_secs_f64(), waited, id.clone())
                })
            })
            .max_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))?;
        let id = best.2;
        let job = queues.get_mut(&id)?.pop_front()?;
        let state = &self.state(&id);
        state.running.fetch_add(1, Ordering::AcqRel);
        *state.last_served.lock().expect("poisoned") = Some(Instant::now());
        Some((id, job))
    }

    async fn dispatch_loop(self: Arc<Self>, mut shutdown: watch::Receiver<bool>) {
        loop {
            while let Ok(permit) = self.capacity.clone().try_acquire_owned() {
                let Some((tenant, job)) = self.pick() else {
                    drop(permit);
                    break;
                };
                self.running_total.fetch_add(1, Ordering::AcqRel);
                let inner = self.clone();
                tokio::spawn(async move {
                    inner.work(&tenant, job).await;
                    inner.state(&tenant).running.fetch_sub(1, Ordering::AcqRel);
                    inner.running_total.fetch_sub(1, Ordering::AcqRel);
                    drop(permit);
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

    fn publish_load(&self) {
        let queues = self.queues.lock().expect("queues poisoned");
        for (id, state) in self.states() {
            let queued = queues.get(&id).map_or(0, VecDeque::len);
            metrics::gauge!("mysimbdp_batch_queued_files", "tenant" => id.to_string()).set(queued as f64);
            metrics::gauge!("mysimbdp_batch_running_ingestions", "tenant" => id.to_string())
                .set(state.running.load(Ordering::Acquire) as f64);
        }
    }

    /// Ingests one claimed file and moves it where its outcome says.
    async fn work(&self, tenant_id: &TenantId, job: Job) {
        let state = &self.state(tenant_id);
        let tenant = &state.tenant();
        let entry = job.entry;
        let path = entry.work_path(&tenant.paths.work);
        self.record(state, &[Entry { state: FileState::Ingesting, ts: Utc::now(), ..entry.clone() }], false);
        let outcome: Result<IngestionRecord, String> = match tenant.profile.batch_pipeline(&entry.pipeline) {
            None => Err(format!("the profile no longer declares batch pipeline `{}`", entry.pipeline)),
            Some(spec) => {
                let name = Path::new(&entry.file).file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_default();
                let options = IngestOptions { identity: Some(job.identity), progress: None };
                ingest_file_with(&self.platform, tenant, spec, job.file, &name, options).await.map_err(|e| format!("{e:#}"))
            }
        };
        match outcome {
            Ok(record) if record.outcome == Outcome::Ok => {
                self.record(state, &[Entry { state: FileState::Done, ts: Utc::now(), ..entry.clone() }], true);
                state.done.lock().expect("done poisoned").insert((entry.pipeline.clone(), entry.checksum.clone()));
                self.finish_done(state, &entry, &path);
            }
            Ok(record) => {
                let kind = record.failure.map_or("failed", |k| k.as_str());
                let message = record.reason.clone().unwrap_or_default();
                self.record(
                    state,
                    &[Entry { state: FileState::Failed, ts: Utc::now(), reason: Some(format!("{kind}: {message}")), ..entry.clone() }],
                    true,
                );
                self.finish_failed(state, &entry, &path, kind, &message);
            }
            Err(message) => {
                tracing::error!(tenant = %tenant.id, file = %entry.file, %message, "Ingestion could not start.");
                self.record(
                    state,
                    &[Entry { state: FileState::Failed, ts: Utc::now(), reason: Some(format!("not-started: {message}")), ..entry.clone() }],
                    true,
                );
                self.finish_failed(state, &entry, &path, "not-started", &message);
            }
        }
    }
}

enum OpenFailure {
    /// Not a file the host ingests (a link, a special file, outside).
    Refused(crate::opened_file::OpenRefused),
    /// Could not be read now; the next scan tries again.
    Unreadable(String),
}

/// Opens a staged file once (never through a link, inside `within`) and
/// hashes it through that descriptor, off the async workers.
async fn open_and_hash(path: &Path, within: &Path) -> Result<(OpenedFile, FileIdentity), OpenFailure> {
    use crate::opened_file::OpenRefused;
    let opened = match OpenedFile::open(path, Some(within)) {
        Ok(opened) => opened,
        Err(OpenRefused::Io { source, .. }) => return Err(OpenFailure::Unreadable(source.to_string())),
        Err(refused) => return Err(OpenFailure::Refused(refused)),
    };
    let hashed = opened.clone();
    match tokio::task::spawn_blocking(move || hashed.identify()).await {
        Ok(Ok(identity)) => Ok((opened, identity)),
        Ok(Err(error)) => Err(OpenFailure::Unreadable(error.to_string())),
        Err(error) => Err(OpenFailure::Unreadable(error.to_string())),
    }
}

/// Opens a claimed file again after a restart: the claim's size and
/// checksum must still be what the file holds (read up to that size).
async fn reopen(path: &Path, work: &Path, entry: &Entry) -> Result<(OpenedFile, FileIdentity), String> {
    let opened = OpenedFile::open(path, Some(work)).map_err(|e| e.to_string())?;
    let opened = opened.limited_to(entry.bytes).map_err(|e| e.to_string())?;
    let hashed = opened.clone();
    let identity = tokio::task::spawn_blocking(move || hashed.identify()).await.map_err(|e| e.to_string())?.map_err(|e| e.to_string())?;
    if identity.sha256 != entry.checksum {
        return Err(format!(
            "{} changed after it was claimed (checksum {} now, {} when claimed)",
            path.display(),
            &identity.sha256[..12],
            &entry.checksum[..entry.checksum.len().min(12)]
        ));
    }
    Ok((opened, identity))
}
