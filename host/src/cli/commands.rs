//! The one-shot commands (ingest, query, stage, batch, tenant control,
//! reload). About 400 lines and whole on purpose: one short function per
//! command, each the same shape (through the running host, or locally under
//! the data directory's lock), and the helpers they share.

use super::output::{Output, bytes_bar, spinner};
use super::{IngestArgs, QueryArgs};
use crate::api::{ApiClient, IngestRequest, RetryRequest};
use crate::backends::SearchResult;
use crate::batch::constraints::human_bytes;
use crate::config::{PlatformConfig, Schedule};
use crate::pipelines::{self, PipelineKind};
use crate::platform::{PipelineUpload, Platform};
use crate::telemetry::{IngestionRecord, Outcome};
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

pub async fn ingest(config: &PlatformConfig, out: &Output, args: IngestArgs) -> anyhow::Result<ExitCode> {
    let path = args.file.canonicalize().with_context(|| format!("cannot find {}", args.file.display()))?;
    let record: IngestionRecord = if let Some(client) = ApiClient::connect(&config.api).await {
        let bar = spinner(format!("Ingesting {} through the host at {}", path.display(), client.base()));
        let request = IngestRequest { tenant: args.tenant, pipeline: args.pipeline, path };
        let record = client.post("/api/ingest", &request).await;
        bar.finish_and_clear();
        record?
    } else {
        let _lock = lock_data_dir(config, "`ingest`")?;
        let platform = Platform::open(config.clone()).await?;
        let size = std::fs::metadata(&path)?.len();
        let progress = Arc::new(AtomicU64::new(0));
        let bar = bytes_bar(size, format!("{} ->", path.file_name().unwrap_or_default().to_string_lossy()));
        let watched = progress.clone();
        let ticker_bar = bar.clone();
        let ticker = tokio::spawn(async move {
            loop {
                ticker_bar.set_position(watched.load(Ordering::Relaxed));
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
        });
        let record = platform.ingest_path(&args.tenant, args.pipeline.as_deref(), &path, Some(progress)).await;
        platform.close().await;
        ticker.abort();
        bar.finish_and_clear();
        record?
    };
    out.ingestion(&record);
    Ok(if record.outcome == Outcome::Ok { ExitCode::SUCCESS } else { ExitCode::FAILURE })
}

pub async fn upload(
    config: &PlatformConfig,
    out: &Output,
    tenant: &str,
    kind: PipelineKind,
    name: Option<&str>,
    file: &Path,
) -> anyhow::Result<ExitCode> {
    let registry = config.registry()?;
    let tenant = registry.require(tenant)?;
    let name = pipelines::resolve_name(tenant, kind, name)?;
    let upload = Arc::new(PipelineUpload::new(config)?);
    let bytes = upload.read(file)?;
    let bar = spinner(format!("Compiling {} and checking it against {}", file.display(), kind.world()));
    let stored = {
        let (upload, tenant, name) = (upload.clone(), tenant.clone(), name.clone());
        tokio::task::spawn_blocking(move || upload.upload(&tenant, kind, &name, &bytes)).await?
    };
    bar.finish_and_clear();
    let version = stored.with_context(|| format!("{} was not uploaded", file.display()))?;
    if out.json {
        out.json(&version);
    } else {
        println!(
            "Uploaded {}/{kind}/{} v{} ({}, sha256 {}). It is now the active version.",
            tenant.id,
            name,
            version.version,
            human_bytes(version.bytes),
            &version.sha256[..16]
        );
    }
    Ok(ExitCode::SUCCESS)
}

pub fn list_pipelines(config: &PlatformConfig, out: &Output, tenant: Option<&str>) -> anyhow::Result<ExitCode> {
    let registry = config.registry()?;
    let tenants = match tenant {
        Some(id) => vec![registry.require(id)?.clone()],
        None => registry.tenants().cloned().collect(),
    };
    let mut versions = Vec::new();
    for tenant in &tenants {
        for kind in [PipelineKind::Batch, PipelineKind::Stream] {
            for name in pipelines::declared(tenant, kind) {
                versions.extend(pipelines::versions(tenant, kind, &name)?);
            }
        }
    }
    if out.json {
        out.json(&versions);
    } else {
        let rows: Vec<Vec<String>> = versions
            .iter()
            .map(|v| {
                vec![
                    v.tenant.clone(),
                    v.kind.to_string(),
                    v.name.clone(),
                    format!("v{}", v.version),
                    human_bytes(v.bytes),
                    v.sha256[..12].to_string(),
                    v.uploaded_at.format("%Y-%m-%d %H:%M:%S").to_string(),
                ]
            })
            .collect();
        out.table(&["tenant", "kind", "pipeline", "version", "size", "sha256", "uploaded (UTC)"], &rows);
    }
    Ok(ExitCode::SUCCESS)
}

fn schedule_text(schedule: &Schedule) -> String {
    match schedule {
        Schedule::OnArrival => "on-arrival".into(),
        Schedule::Cron(cron) => format!("cron {}", cron.source()),
    }
}

pub fn list_tenants(config: &PlatformConfig, out: &Output) -> anyhow::Result<ExitCode> {
    let registry = config.registry()?;
    let suspensions = crate::invocation::Suspensions::open(&config.data_dir)?;
    let state = |t: &crate::config::Tenant| if suspensions.is_suspended(&t.id) { "suspended" } else { "active" };
    if out.json {
        let ids: Vec<_> = registry.tenants().map(|t| serde_json::json!({"id": t.id, "state": state(t), "profile": t.profile})).collect();
        out.json(&ids);
        return Ok(ExitCode::SUCCESS);
    }
    let rows: Vec<Vec<String>> = registry
        .tenants()
        .map(|t| {
            let p = &t.profile;
            vec![
                t.id.to_string(),
                state(t).to_string(),
                p.agreement.priority.to_string(),
                schedule_text(&p.agreement.schedule),
                p.agreement.max_concurrent_ingestions.to_string(),
                p.constraints.allowed_types.join(","),
                p.batch.iter().map(|b| b.name.to_string()).collect::<Vec<_>>().join(","),
                p.stream.as_ref().map_or("-".into(), |s| s.name.to_string()),
                p.description.clone(),
            ]
        })
        .collect();
    out.table(&["tenant", "state", "priority", "schedule", "concurrency", "types", "batch", "stream", "description"], &rows);
    Ok(ExitCode::SUCCESS)
}

pub fn show_tenant(config: &PlatformConfig, out: &Output, tenant: &str) -> anyhow::Result<ExitCode> {
    let registry = config.registry()?;
    let tenant = registry.require(tenant)?;
    if out.json {
        out.json(&serde_json::json!({"id": tenant.id, "profile": tenant.profile, "root": tenant.paths.root}));
        return Ok(ExitCode::SUCCESS);
    }
    println!("tenant {}  ({})", tenant.id, tenant.profile_file.display());
    println!("  directories under {}: staging, quarantine, archive, failed, logs, pipelines", tenant.paths.root.display());
    for kind in [PipelineKind::Batch, PipelineKind::Stream] {
        for name in pipelines::declared(tenant, kind) {
            let versions = pipelines::versions(tenant, kind, &name)?;
            match versions.last() {
                Some(v) => println!("  {kind} pipeline {name}: v{} active ({} versions)", v.version, versions.len()),
                None => println!("  {kind} pipeline {name}: not uploaded yet"),
            }
        }
    }
    println!("profile:");
    for line in serde_norway::to_string(&tenant.profile)?.lines() {
        println!("  {line}");
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn query(config: &PlatformConfig, out: &Output, args: QueryArgs) -> anyhow::Result<ExitCode> {
    let result: SearchResult = match ApiClient::connect(&config.api).await {
        Some(client) => {
            let query = [
                ("tenant", args.tenant.clone()),
                ("collection", args.collection.clone()),
                ("q", args.query.clone()),
                ("limit", args.limit.to_string()),
                ("offset", args.offset.to_string()),
            ];
            client.get("/api/query", &query).await?
        }
        None => {
            let platform = Platform::open(config.clone()).await?;
            platform.search_page(&args.tenant, &args.collection, &args.query, args.limit, args.offset).await?
        }
    };
    if out.json {
        out.json(&result);
    } else {
        let shown = if result.hits.is_empty() {
            String::new()
        } else {
            format!(", showing {} to {}", args.offset + 1, args.offset + result.hits.len())
        };
        println!("{} documents match in {}-{}{shown}", result.total, args.tenant, args.collection);
        for hit in &result.hits {
            println!("{}  {}", hit.id, hit.source);
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub fn stage_put(
    config: &PlatformConfig,
    out: &Output,
    tenant: &str,
    into: Option<&Path>,
    files: &[std::path::PathBuf],
) -> anyhow::Result<ExitCode> {
    let registry = config.registry()?;
    let tenant = registry.require(tenant)?;
    tenant.paths.create()?;
    let total: u64 = files.iter().filter_map(|f| std::fs::metadata(f).ok()).map(|m| m.len()).sum();
    let bar = (files.len() > 1 || total > 64 << 20).then(|| bytes_bar(total, "staging"));
    let mut staged = Vec::new();
    for file in files {
        let target = crate::batch::staging::put(tenant, file, into)?;
        if let Some(bar) = &bar {
            bar.inc(std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0));
        }
        staged.push(target);
    }
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    if out.json {
        out.json(&staged);
    } else {
        for target in &staged {
            println!("staged {}", target.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}

pub async fn batch_status(config: &PlatformConfig, out: &Output, tenant: Option<&str>, recent: usize) -> anyhow::Result<ExitCode> {
    let registry = config.registry()?;
    let statuses = crate::batch::status::status(&registry, tenant, recent)?;
    if out.json {
        out.json(&statuses);
        return Ok(ExitCode::SUCCESS);
    }
    if ApiClient::connect(&config.api).await.is_none() {
        println!("(no host is running at {}: queued and running files wait for `mysimbdp host run`)", config.api.listen);
    }
    for status in statuses {
        println!(
            "tenant {}: {} staged, {} queued, {} running, {} failed, {} quarantined",
            status.tenant,
            status.staged.len(),
            status.queued.len(),
            status.running.len(),
            status.failed.len(),
            status.quarantined.len()
        );
        let rows: Vec<Vec<String>> = [
            ("staged", &status.staged),
            ("queued", &status.queued),
            ("running", &status.running),
            ("done", &status.done),
            ("failed", &status.failed),
            ("quarantined", &status.quarantined),
        ]
        .into_iter()
        .flat_map(|(section, files)| {
            files.iter().map(move |f| {
                vec![
                    section.to_string(),
                    f.file.clone(),
                    f.state.clone(),
                    f.at.format("%Y-%m-%d %H:%M:%S").to_string(),
                    f.tick.map(|t| t.format("%H:%M:%S").to_string()).unwrap_or_default(),
                    f.reason.clone().unwrap_or_default(),
                ]
            })
        })
        .collect();
        if !rows.is_empty() {
            out.table(&["", "file", "state/rule", "at (UTC)", "cron tick", "reason"], &rows);
        }
        println!();
    }
    Ok(ExitCode::SUCCESS)
}

/// `batch retry`: through the running host (the one writer of its
/// manifests), or, with no host, under the data directory's lock.
pub async fn batch_retry(
    config: &PlatformConfig,
    out: &Output,
    tenant: &str,
    quarantined: bool,
    files: &[String],
) -> anyhow::Result<ExitCode> {
    let registry = config.registry()?;
    let tenant = registry.require(tenant)?;
    let moved: Vec<String> = match ApiClient::connect(&config.api).await {
        Some(client) => {
            let request = RetryRequest { tenant: tenant.id.to_string(), files: files.to_vec(), quarantined };
            client.post("/api/batch/retry", &request).await?
        }
        None => {
            let _lock = lock_data_dir(config, "`batch retry`")?;
            let path = &tenant.paths.manifest;
            let (manifest, _) = crate::batch::manifest::Manifest::open(path)
                .with_context(|| format!("cannot open the manifest {} of tenant `{}`", path.display(), tenant.id))?;
            crate::batch::status::retry(tenant, &manifest, files, quarantined)?
        }
    };
    if out.json {
        out.json(&moved);
    } else if moved.is_empty() {
        println!("nothing to retry for tenant {}", tenant.id);
    } else {
        for file in &moved {
            println!("back in staging: {file}");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tenant suspend` and `tenant resume`: through the running host, which
/// acts at once; with no host, written under the data directory's lock for
/// the next host to start with.
pub async fn suspend_tenant(config: &PlatformConfig, out: &Output, tenant: &str, suspend: bool) -> anyhow::Result<ExitCode> {
    let registry = config.registry()?;
    let tenant = registry.require(tenant)?;
    let answer: crate::platform::SuspendAnswer = match ApiClient::connect(&config.api).await {
        Some(client) => {
            let path = if suspend { "/api/tenant/suspend" } else { "/api/tenant/resume" };
            client.post(path, &crate::api::TenantRequest { tenant: tenant.id.to_string() }).await?
        }
        None => {
            let _lock = lock_data_dir(config, if suspend { "`tenant suspend`" } else { "`tenant resume`" })?;
            let suspensions = crate::invocation::Suspensions::open(&config.data_dir)?;
            let (changed, since) = if suspend {
                let changed = suspensions.suspend(&tenant.id, crate::invocation::Suspension::now())?;
                (changed, suspensions.of(&tenant.id).map(|s| s.since))
            } else {
                let resumed = suspensions.resume(&tenant.id)?;
                (resumed.is_some(), resumed.map(|s| s.since))
            };
            crate::platform::SuspendAnswer { tenant: tenant.id.to_string(), suspended: suspend, changed, since, stream_instances: 0 }
        }
    };
    if out.json {
        out.json(&answer);
        return Ok(ExitCode::SUCCESS);
    }
    let since = answer.since.as_deref().unwrap_or("-");
    match (suspend, answer.changed) {
        (true, true) => println!("tenant {} suspended (since {since}): its ingestions wait and its API calls are refused", answer.tenant),
        (true, false) => println!("tenant {} was suspended already (since {since})", answer.tenant),
        (false, true) => println!("tenant {} resumed (suspended since {since}): its waiting files are taken again", answer.tenant),
        (false, false) => println!("tenant {} was not suspended", answer.tenant),
    }
    if answer.stream_instances > 0 {
        let done = if suspend { "stopped" } else { "started again" };
        println!("  {} stream instance(s) {done}", answer.stream_instances);
    }
    Ok(ExitCode::SUCCESS)
}

/// `host reload`: the running host reads the registry and profiles again.
pub async fn reload(config: &PlatformConfig, out: &Output) -> anyhow::Result<ExitCode> {
    let client = require_host(config, "`host reload`").await?;
    let reloaded: crate::platform::Reloaded = client.post("/api/reload", &serde_json::json!({})).await?;
    if out.json {
        out.json(&reloaded);
        return Ok(ExitCode::SUCCESS);
    }
    let list = |ids: &[String]| if ids.is_empty() { "none".to_string() } else { ids.join(", ") };
    println!("registry reloaded by the host at {}", client.base());
    println!("  added:     {}", list(&reloaded.added));
    println!("  changed:   {}", list(&reloaded.changed));
    println!("  unchanged: {}", list(&reloaded.unchanged));
    Ok(ExitCode::SUCCESS)
}

/// The data directory's lock, for a command that writes the host's files
/// itself because no host answers at `api.listen`: held while it writes, so
/// it and a host on the same data directory (its API elsewhere, or not
/// answering yet) never write the same manifest or message log.
pub(super) fn lock_data_dir(config: &PlatformConfig, what: &str) -> anyhow::Result<crate::host_lock::HostLock> {
    crate::host_lock::HostLock::acquire(&config.data_dir).with_context(|| {
        format!("{what} found no host answering at {} (api.listen) and cannot write the data directory itself", config.api.listen)
    })
}

/// The running host, or an error that says how to start one.
pub(super) async fn require_host(config: &PlatformConfig, what: &str) -> anyhow::Result<ApiClient> {
    ApiClient::connect(&config.api).await.with_context(|| {
        format!("{what} needs a running host, and none answers at {} (api.listen): start one with `mysimbdp host run`", config.api.listen)
    })
}
