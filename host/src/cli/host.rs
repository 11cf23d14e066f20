//! `mysimbdp host run`.

use crate::api::{AppState, router};
use crate::batch::BatchManager;
use crate::config::PlatformConfig;
use crate::platform::Platform;
use crate::stream::monitor;
use crate::telemetry::events::{HostStarted, HostStopped};
use anyhow::Context;
use std::process::ExitCode;
use std::sync::Arc;

pub async fn run(config: PlatformConfig) -> anyhow::Result<ExitCode> {
    // Clients' connections count against the open-files limit; a soft limit
    // below the hard one (systemd's 1,024) is raised first.
    let (soft, hard) = crate::api::connections::raise_open_files_limit();
    tracing::debug!(soft, hard, "Open-files limit.");
    // One host per data directory: its manifests, store and log have one writer.
    let lock = crate::host_lock::HostLock::acquire(&config.data_dir)?;
    tracing::debug!(lock = %lock.path().display(), "Data directory locked.");
    let metrics = crate::telemetry::prometheus::install_recorder()?;
    let platform = Platform::open(config.clone()).await?;
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot listen on {} (api.listen); is another host running?", config.api.listen))?;
    HostStarted {
        api: config.api.listen,
        tenants: platform.registry().tenants().count(),
        coredms: platform.coredms().kind(),
        messaging: platform.messaging().kind(),
    }
    .emit(&platform.logs().platform());
    if config.api.token.is_none() && !config.api.listen.ip().is_loopback() {
        tracing::warn!(
            api = %config.api.listen,
            "The control API listens beyond this machine with no token: anyone who reaches it can ingest, query and \
             start or stop streams. Set api.token_file in the config."
        );
    }
    let batch = Arc::new(platform.start_batch_manager().await?);
    let stream = platform.stream_manager();
    let monitor = monitor::spawn_monitor(stream.clone());
    let listener_task = monitor::spawn_alert_listener(stream.clone());
    let reload_task = spawn_reload_on_hangup(platform.clone(), batch.clone())?;
    let app = router(AppState::new(platform.clone(), Some(metrics), Some(batch.clone()), Some(stream.clone())));
    crate::api::connections::serve(listener, app, config.api.clone(), shutdown_signal()).await;
    monitor.abort();
    listener_task.abort();
    reload_task.abort();
    stream.shutdown().await;
    batch.shutdown().await;
    platform.close().await;
    HostStopped.emit(&platform.logs().platform());
    Ok(ExitCode::SUCCESS)
}

/// SIGHUP reloads the tenant registry (as `mysimbdp host reload` does).
fn spawn_reload_on_hangup(platform: Arc<Platform>, batch: Arc<BatchManager>) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    let mut hangup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("cannot handle SIGHUP")?;
    Ok(tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            // Reported in the host's log and the platform log either way.
            let _ = platform.reload_all(Some(&batch)).await;
        }
    }))
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("Shutting down.");
}
