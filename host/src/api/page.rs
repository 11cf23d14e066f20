//! The operator page (`GET /`) and the data behind it (`GET /api/overview`):
//! tenants, pipelines and versions, stream instances, recent ingestions and
//! failures, quarantined files. Rendered on the server, refreshed every 5 s.

use crate::batch::status::{FileStatus, tenant_status};
use crate::pipelines::{self, PipelineKind};
use crate::platform::Platform;
use crate::stream::{StreamManager, StreamStatus};
use crate::telemetry::IngestionRecord;
use crate::telemetry::logs::tenant_log_path;
use serde::{Deserialize, Serialize};
use std::fmt::Write as _;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;

const RECENT: usize = 10;
/// The tail of a log read for recent ingestions.
const TAIL_BYTES: u64 = 512 * 1024;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineSummary {
    pub kind: PipelineKind,
    pub name: String,
    pub active_version: Option<u32>,
    pub versions: usize,
    pub files: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TenantOverview {
    pub id: String,
    pub description: String,
    pub priority: u8,
    pub schedule: String,
    pub max_concurrent_ingestions: u32,
    pub pipelines: Vec<PipelineSummary>,
    pub stream: Option<StreamStatus>,
    pub staged: usize,
    pub queued: usize,
    pub running: usize,
    pub failed: Vec<FileStatus>,
    pub quarantined: Vec<FileStatus>,
    pub recent: Vec<IngestionRecord>,
    pub recent_failures: Vec<IngestionRecord>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overview {
    pub generated_at: chrono::DateTime<chrono::Utc>,
    pub coredms: String,
    pub messaging: String,
    pub tenants: Vec<TenantOverview>,
}

/// The last ingestion records of a log, newest first.
fn recent_records(path: &Path, limit: usize) -> Vec<IngestionRecord> {
    let Ok(mut file) = std::fs::File::open(path) else { return Vec::new() };
    let size = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(size.saturating_sub(TAIL_BYTES)));
    let mut text = String::new();
    let _ = file.read_to_string(&mut text);
    let mut records: Vec<IngestionRecord> =
        text.lines().filter(|l| l.contains("\"type\":\"ingestion\"")).filter_map(|l| serde_json::from_str(l).ok()).collect();
    records.reverse();
    records.truncate(limit);
    records
}

pub async fn overview(platform: &Platform, stream: Option<&StreamManager>) -> Overview {
    let streams = match stream {
        Some(manager) => manager.status(None).await.unwrap_or_default(),
        None => Vec::new(),
    };
    let mut tenants = Vec::new();
    for tenant in platform.registry().tenants() {
        let mut pipelines_list = Vec::new();
        for kind in [PipelineKind::Batch, PipelineKind::Stream] {
            for name in pipelines::declared(tenant, kind) {
                let versions = pipelines::versions(tenant, kind, &name).unwrap_or_default();
                pipelines_list.push(PipelineSummary {
                    kind,
                    files: tenant.profile.batch_pipeline(name.as_str()).filter(|_| kind == PipelineKind::Batch).map(|p| p.files.clone()),
                    name: name.to_string(),
                    active_version: versions.last().map(|v| v.version),
                    versions: versions.len(),
                });
            }
        }
        let status = tenant_status(tenant, 0).ok();
        let mut recent: Vec<IngestionRecord> = [PipelineKind::Batch, PipelineKind::Stream]
            .iter()
            .flat_map(|kind| recent_records(&tenant_log_path(&tenant.paths.logs, *kind), RECENT * 5))
            .collect();
        recent.sort_by_key(|r| std::cmp::Reverse(r.started_at));
        let recent_failures: Vec<IngestionRecord> =
            recent.iter().filter(|r| r.outcome == crate::telemetry::Outcome::Failed).take(RECENT).cloned().collect();
        recent.truncate(RECENT);
        let agreement = &tenant.profile.agreement;
        tenants.push(TenantOverview {
            id: tenant.id.to_string(),
            description: tenant.profile.description.clone(),
            priority: agreement.priority,
            schedule: serde_json::to_value(&agreement.schedule).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default(),
            max_concurrent_ingestions: agreement.max_concurrent_ingestions,
            pipelines: pipelines_list,
            stream: streams.iter().find(|s| s.tenant == tenant.id.as_str()).cloned(),
            staged: status.as_ref().map_or(0, |s| s.staged.len()),
            queued: status.as_ref().map_or(0, |s| s.queued.len()),
            running: status.as_ref().map_or(0, |s| s.running.len()),
            failed: status.as_ref().map(|s| s.failed.clone()).unwrap_or_default(),
            quarantined: status.as_ref().map(|s| s.quarantined.clone()).unwrap_or_default(),
            recent,
            recent_failures,
        });
    }
    Overview {
        generated_at: chrono::Utc::now(),
        coredms: platform.coredms().kind().to_string(),
        messaging: platform.messaging().kind().to_string(),
        tenants,
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('"', "&quot;")
}

const STYLE: &str = "body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}h1{margin:0 0 .2rem}\
section.tenant{border:1px solid #ccc;border-radius:6px;padding:.8rem 1rem;margin:1rem 0}\
table{border-collapse:collapse;margin:.4rem 0 .8rem;font-size:.9rem}td,th{border-bottom:1px solid #eee;padding:.2rem .6rem;text-align:left}\
.ok{color:#17692b}.failed{color:#b00020;font-weight:600}.muted{color:#777}.pill{background:#eef;border-radius:4px;padding:0 .4rem;margin-right:.3rem}";

pub fn render(overview: &Overview) -> String {
    let mut html = String::new();
    let _ = write!(
        html,
        "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><meta http-equiv=\"refresh\" content=\"5\">\
         <title>mysimbdp operator</title><style>{STYLE}</style></head><body>\
         <h1>mysimbdp</h1><p class=\"muted\">coredms: {} · messaging: {} · {} tenants · updated {}</p>",
        escape(&overview.coredms),
        escape(&overview.messaging),
        overview.tenants.len(),
        overview.generated_at.format("%Y-%m-%d %H:%M:%S UTC")
    );
    for tenant in &overview.tenants {
        let _ = write!(
            html,
            "<section class=\"tenant\" id=\"tenant-{id}\"><h2>{id}</h2><p>{desc}</p><p>\
             <span class=\"pill\">priority {}</span><span class=\"pill\">schedule {}</span><span class=\"pill\">max {} at once</span>\
             <span class=\"pill\">{} staged · {} queued · {} running</span></p>",
            tenant.priority,
            escape(&tenant.schedule),
            tenant.max_concurrent_ingestions,
            tenant.staged,
            tenant.queued,
            tenant.running,
            id = escape(&tenant.id),
            desc = escape(&tenant.description),
        );
        html.push_str("<h3>Pipelines</h3><table><tr><th>kind</th><th>name</th><th>files</th><th>active version</th><th>versions</th></tr>");
        for p in &tenant.pipelines {
            let _ = write!(
                html,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                p.kind,
                escape(&p.name),
                escape(p.files.as_deref().unwrap_or("")),
                p.active_version.map_or("not uploaded".into(), |v| format!("v{v}")),
                p.versions
            );
        }
        html.push_str("</table>");
        if let Some(stream) = &tenant.stream {
            let _ = write!(
                html,
                "<h3>Stream</h3><p class=\"stream\">{} instances running (min {}, max {}) · lag {} · topics {}</p>",
                stream.instances.len(),
                stream.min_instances,
                stream.max_instances,
                stream.lag.map_or("?".into(), |l| l.to_string()),
                escape(&stream.topics.join(", "))
            );
        }
        html.push_str("<h3>Recent ingestions</h3>");
        if tenant.recent.is_empty() {
            html.push_str("<p class=\"muted\">none yet</p>");
        } else {
            html.push_str("<table><tr><th>started (UTC)</th><th>kind</th><th>pipeline</th><th>source</th><th>in/out/rejected</th><th>ms</th><th>outcome</th></tr>");
            for r in &tenant.recent {
                let outcome = match r.failure {
                    Some(kind) => format!("<span class=\"failed\">{kind}</span>"),
                    None => "<span class=\"ok\">ok</span>".into(),
                };
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{} v{}</td><td>{}</td><td>{}/{}/{}</td><td>{:.0}</td><td>{outcome}</td></tr>",
                    r.started_at.format("%H:%M:%S"),
                    r.kind,
                    escape(&r.pipeline),
                    r.version,
                    escape(&r.source),
                    r.records_in,
                    r.records_out,
                    r.records_rejected,
                    r.duration_ms
                );
            }
            html.push_str("</table>");
        }
        if !tenant.recent_failures.is_empty() {
            html.push_str("<h3>Recent failures</h3><table><tr><th>started (UTC)</th><th>source</th><th>kind</th><th>reason</th></tr>");
            for r in &tenant.recent_failures {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td class=\"failed\">{}</td><td>{}</td></tr>",
                    r.started_at.format("%Y-%m-%d %H:%M:%S"),
                    escape(&r.source),
                    r.failure.map_or("?", |k| k.as_str()),
                    escape(r.reason.as_deref().unwrap_or(""))
                );
            }
            html.push_str("</table>");
        }
        for (title, files) in [("Failed files", &tenant.failed), ("Quarantined files", &tenant.quarantined)] {
            if files.is_empty() {
                continue;
            }
            let _ = write!(html, "<h3>{title}</h3><table><tr><th>file</th><th>rule</th><th>reason</th></tr>");
            for f in files {
                let _ = write!(
                    html,
                    "<tr><td>{}</td><td>{}</td><td>{}</td></tr>",
                    escape(&f.file),
                    escape(&f.state),
                    escape(f.reason.as_deref().unwrap_or(""))
                );
            }
            html.push_str("</table>");
        }
        html.push_str("</section>");
    }
    html.push_str("<p class=\"muted\">JSON: <a href=\"/api/overview\">/api/overview</a> · metrics: <a href=\"/metrics\">/metrics</a></p></body></html>");
    html
}
