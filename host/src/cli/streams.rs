//! The stream commands (start, stop, status, produce) and `stats`.

use super::commands::{lock_data_dir, require_host};
use super::output::{Output, count_bar};
use crate::api::ApiClient;
use crate::batch::constraints::human_bytes;
use crate::config::PlatformConfig;
use crate::platform::Platform;
use anyhow::Context;
use std::path::Path;
use std::process::ExitCode;

fn print_streams(out: &Output, statuses: &[crate::stream::StreamStatus]) {
    if out.json {
        return out.json(&statuses);
    }
    let rows: Vec<Vec<String>> = statuses
        .iter()
        .map(|s| {
            vec![
                s.tenant.clone(),
                s.pipeline.clone(),
                format!("{} (min {}, max {})", s.instances.len(), s.min_instances, s.max_instances),
                s.lag.map_or("?".into(), |l| l.to_string()),
                s.topics.join(","),
                s.group.clone(),
            ]
        })
        .collect();
    out.table(&["tenant", "pipeline", "instances", "lag", "topics", "consumer group"], &rows);
}

pub async fn stream_start(config: &PlatformConfig, out: &Output, tenant: &str, instances: Option<u32>) -> anyhow::Result<ExitCode> {
    let client = require_host(config, "`stream start`").await?;
    let status: crate::stream::StreamStatus =
        client.post("/api/stream/start", &crate::api::StreamRequest { tenant: tenant.into(), instances }).await?;
    print_streams(out, &[status]);
    Ok(ExitCode::SUCCESS)
}

pub async fn stream_stop(config: &PlatformConfig, out: &Output, tenant: &str) -> anyhow::Result<ExitCode> {
    let client = require_host(config, "`stream stop`").await?;
    let status: crate::stream::StreamStatus =
        client.post("/api/stream/stop", &crate::api::StreamRequest { tenant: tenant.into(), instances: None }).await?;
    print_streams(out, &[status]);
    Ok(ExitCode::SUCCESS)
}

pub async fn stream_status(config: &PlatformConfig, out: &Output, tenant: Option<&str>) -> anyhow::Result<ExitCode> {
    let client = require_host(config, "`stream status`").await?;
    let query: Vec<(&str, String)> = tenant.map(|t| ("tenant", t.to_string())).into_iter().collect();
    let statuses: Vec<crate::stream::StreamStatus> = client.get("/api/stream/status", &query).await?;
    print_streams(out, &statuses);
    Ok(ExitCode::SUCCESS)
}

pub async fn stream_produce(
    config: &PlatformConfig,
    out: &Output,
    tenant: &str,
    topic: &str,
    key: Option<String>,
    key_field: Option<String>,
    file: Option<&Path>,
) -> anyhow::Result<ExitCode> {
    use crate::api::{ProduceAnswer, ProduceRequest, ProducedMessage};
    let text = match file {
        Some(path) if path != Path::new("-") => std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?,
        _ => std::io::read_to_string(std::io::stdin()).context("cannot read stdin")?,
    };
    let messages: Vec<ProducedMessage> = text
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|line| {
            let key = match &key_field {
                Some(field) => serde_json::from_str::<serde_json::Value>(line)
                    .ok()
                    .and_then(|v| v.get(field).map(|k| k.as_str().map_or_else(|| k.to_string(), str::to_string))),
                None => key.clone(),
            };
            ProducedMessage { key, value: line.to_string() }
        })
        .collect();
    let client = ApiClient::connect(&config.api).await;
    // Without a host, the messages are appended here, the data directory locked.
    let (platform, _lock) = match client {
        Some(_) => (None, None),
        None => {
            let lock = lock_data_dir(config, "`stream produce`")?;
            (Some(Platform::open(config.clone()).await?), Some(lock))
        }
    };
    let bar = count_bar(messages.len() as u64, "producing");
    let mut sent = 0;
    let mut full_topic = String::new();
    for chunk in messages.chunks(1000) {
        let request = ProduceRequest { tenant: tenant.to_string(), topic: topic.to_string(), messages: chunk.to_vec() };
        full_topic = match (&client, &platform) {
            (Some(client), _) => client.post::<_, ProduceAnswer>("/api/stream/produce", &request).await?.topic,
            (None, Some(platform)) => platform.produce(tenant, topic, request.records()).await?,
            (None, None) => unreachable!("a platform is opened when no host answers"),
        };
        sent += chunk.len();
        bar.set_position(sent as u64);
    }
    bar.finish_and_clear();
    if out.json {
        out.json(&ProduceAnswer { topic: full_topic, count: sent });
    } else {
        println!("sent {sent} messages to {full_topic}");
    }
    Ok(ExitCode::SUCCESS)
}

pub fn stats(config: &PlatformConfig, out: &Output, tenant: Option<&str>, since: Option<&str>) -> anyhow::Result<ExitCode> {
    use crate::telemetry::stats;
    let registry = config.registry()?;
    let since = since.map(stats::parse_since).transpose()?;
    let records = stats::read_records(&registry, tenant)?;
    let stats = stats::compute(&records, since);
    if out.json {
        out.json(&stats);
        return Ok(ExitCode::SUCCESS);
    }
    if let Some(since) = stats.since {
        println!("since {}", since.format("%Y-%m-%d %H:%M:%S UTC"));
    }
    let mut rows = Vec::new();
    for t in stats.tenants.iter().chain(std::iter::once(&stats.platform)) {
        for (kind, totals, unit) in [("batch", &t.batch, "files"), ("stream", &t.stream, "batches")] {
            if totals.ingested + totals.failed == 0 {
                continue;
            }
            rows.push(vec![
                t.tenant.clone(),
                kind.to_string(),
                format!("{} {unit}", totals.ingested),
                totals.failed.to_string(),
                totals.records_in.to_string(),
                totals.records_out.to_string(),
                format!("{} ({} dead-lettered)", totals.records_rejected, totals.dead_lettered),
                human_bytes(totals.bytes),
                format!("{:.0}", totals.avg_ms),
                format!("{:.0}", totals.p95_ms),
                format!("{}/s, {:.0} rec/s", human_bytes(totals.bytes_per_second as u64), totals.records_per_second),
            ]);
        }
    }
    if rows.is_empty() {
        println!("no ingestions recorded{}", if tenant.is_some() { " for this tenant" } else { "" });
        return Ok(ExitCode::SUCCESS);
    }
    out.table(&["tenant", "kind", "ingested", "failed", "records in", "out", "rejected", "bytes", "avg ms", "p95 ms", "throughput"], &rows);
    let failures: Vec<Vec<String>> = stats
        .tenants
        .iter()
        .flat_map(|t| t.failures.iter().map(move |(kind, n)| vec![t.tenant.clone(), kind.clone(), n.to_string()]))
        .collect();
    if !failures.is_empty() {
        println!();
        out.table(&["tenant", "failure", "count"], &failures);
    }
    Ok(ExitCode::SUCCESS)
}
