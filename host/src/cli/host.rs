//! `mysimbdp host run`.

use crate::api::{AppState, router};
use crate::config::PlatformConfig;
use crate::batch::BatchManager;
use crate::platform::Platform;
use std::sync::Arc;
use anyhow::Context;
use std::process::ExitCode;

pub async fn run(config: PlatformConfig) -> anyhow::Result<ExitCode> {
    let metrics = crate::telemetry::metrics::install_recorder()?;
    let platform = Platform::open(config.clone()).await?;
    let listener = tokio::net::TcpListener::bind(config.api.listen)
        .await
        .with_context(|| format!("cannot listen on {} (api.listen); is another host running?", config.api.listen))?;
    tracing::info!(
        api = %config.api.listen,
        tenants = platform.registry.tenants().count(),
        coredms = platform.services.coredms.kind(),
        messaging = platform.services.messaging.kind(),
        "Host started."
    );
    let batch = Arc::new(BatchManager::start(platform.clone()).await?);
    let app = router(AppState { platform: platform.clone(), metrics: Some(metrics), batch: Some(batch.clone()) });
    axum::serve(listener, app).with_graceful_shutdown(shutdown_signal()).await?;
    batch.shutdown().await;
    tracing::info!("Host stopped.");
    Ok(ExitCode::SUCCESS)
}

async fn shutdown_signal() {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
    tracing::info!("Shutting down.");
}
