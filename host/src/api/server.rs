//! Routes of the host's HTTP server.

use super::guard::{Caller, InFlight, require_host, require_token};
use super::{ApiError, IngestRequest, ProduceAnswer, ProduceRequest, QueryRequest, RetryRequest, StreamRequest, TenantRequest};
use crate::backends::{SearchError, SearchResult};
use crate::config::RESERVED_TOPICS;
use crate::opened_file::OpenRefused;
use crate::platform::Platform;
use crate::stream::{StreamManager, StreamStatus};
use crate::telemetry::IngestionRecord;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Extension, Json, Router};
use serde::Serialize;
use std::sync::Arc;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub platform: Arc<Platform>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub batch: Option<Arc<crate::batch::BatchManager>>,
    pub stream: Option<Arc<StreamManager>>,
    /// Requests in flight per tenant.
    pub(super) requests: Arc<InFlight>,
}

impl AppState {
    pub fn new(
        platform: Arc<Platform>,
        metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
        batch: Option<Arc<crate::batch::BatchManager>>,
        stream: Option<Arc<StreamManager>>,
    ) -> AppState {
        AppState { platform, metrics, batch, stream, requests: Arc::default() }
    }

    fn stream(&self) -> Result<&Arc<StreamManager>, HttpError> {
        self.stream.as_ref().ok_or_else(|| HttpError(StatusCode::SERVICE_UNAVAILABLE, "this process runs no stream manager".into()))
    }
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/", get(operator_page))
        .route("/api/overview", get(overview))
        .route("/api/tenants", get(tenants))
        .route("/api/ingest", post(ingest))
        .route("/api/query", get(query))
        .route("/api/batch/retry", post(batch_retry))
        .route("/api/stream/start", post(stream_start))
        .route("/api/stream/stop", post(stream_stop))
        .route("/api/stream/status", get(stream_status))
        .route("/api/stream/produce", post(stream_produce))
        .route("/api/reload", post(reload))
        .route("/api/tenant/suspend", post(tenant_suspend))
        .route("/api/tenant/resume", post(tenant_resume))
        .route("/metrics", get(prometheus))
        // Innermost: a body is read (whole, in time, or answered 408) only
        // for a request the guards let through.
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::new(state.platform.config.api.clone()),
            super::connections::read_body_in_time,
        ))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_host))
        // After the layers: a liveness probe (and the CLI looking for a host) needs no token.
        .route("/api/health", get(health))
        .with_state(state)
}

/// An error answered as `{"error": "..."}`.
pub struct HttpError(pub(super) StatusCode, pub(super) String);

impl From<anyhow::Error> for HttpError {
    /// 400, except for what the error says is not the request's fault: a
    /// search stopped at its time bound (503), a store that failed (502).
    fn from(error: anyhow::Error) -> Self {
        let status = match error.downcast_ref::<SearchError>() {
            Some(SearchError::TimedOut { .. }) => StatusCode::SERVICE_UNAVAILABLE,
            Some(SearchError::Store(_)) => StatusCode::BAD_GATEWAY,
            _ => StatusCode::BAD_REQUEST,
        };
        HttpError(status, format!("{error:#}"))
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

/// `ok`, or `degraded` with each write that is failing (what, the error,
/// since when, how many tenants): the host is alive either way (the CLI
/// finds it by this route), but takes no files of those tenants until the
/// writes succeed again. Tenant ids stay out of it: this route needs no token.
async fn health(State(state): State<AppState>) -> Json<serde_json::Value> {
    let stops = state.batch.as_ref().map(|batch| batch.write_stops()).unwrap_or_default();
    if stops.is_empty() {
        return Json(serde_json::json!({ "status": "ok" }));
    }
    let mut failing: Vec<serde_json::Value> = Vec::new();
    for (_, stop) in &stops {
        let known = failing.iter_mut().find(|f| f["what"] == stop.what.as_str() && f["error"] == stop.error.as_str());
        match known {
            Some(entry) => entry["tenants"] = (entry["tenants"].as_u64().unwrap_or(0) + 1).into(),
            None => failing.push(serde_json::json!({ "what": stop.what, "error": stop.error, "since": stop.since, "tenants": 1 })),
        }
    }
    Json(serde_json::json!({
        "status": "degraded",
        "writes_failing": failing,
        "what_to_do": "free space (or fix the device) where the host writes; it takes files again by itself once a write succeeds",
    }))
}

#[derive(Serialize)]
struct TenantSummary {
    id: String,
    description: String,
    batch_pipelines: Vec<String>,
    stream_pipeline: Option<String>,
}

async fn tenants(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Result<Json<Vec<TenantSummary>>, HttpError> {
    let _in_flight = state.admit_caller(&caller)?;
    Ok(Json(
        state
            .platform
            .registry()
            .tenants()
            .filter(|t| caller.may_act_for(t.id.as_str()).is_ok())
            .map(|t| TenantSummary {
                id: t.id.to_string(),
                description: t.profile.description.clone(),
                batch_pipelines: t.profile.batch.iter().map(|p| p.name.to_string()).collect(),
                stream_pipeline: t.profile.stream.as_ref().map(|s| s.name.to_string()),
            })
            .collect(),
    ))
}

async fn reload(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Result<Json<crate::platform::Reloaded>, HttpError> {
    caller.operator_only("reloading the registry")?;
    Ok(Json(state.platform.reload_all(state.batch.as_deref()).await?))
}

async fn tenant_suspend(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<TenantRequest>,
) -> Result<Json<crate::platform::SuspendAnswer>, HttpError> {
    caller.operator_only("suspending a tenant")?;
    Ok(Json(state.platform.suspend(&request.tenant, state.stream.as_deref()).await?))
}

async fn tenant_resume(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<TenantRequest>,
) -> Result<Json<crate::platform::SuspendAnswer>, HttpError> {
    caller.operator_only("resuming a tenant")?;
    Ok(Json(state.platform.resume(&request.tenant, state.batch.as_deref(), state.stream.as_deref()).await?))
}

async fn ingest(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<IngestRequest>,
) -> Result<Json<IngestionRecord>, HttpError> {
    caller.may_act_for(&request.tenant)?;
    let _in_flight = state.admit(&request.tenant)?;
    // The path is on the host's machine: a tenant may name its own files
    // only. The file is opened once, never through a link, and the open file
    // is what is checked (inside the tenant's directory), hashed and read.
    let within = match &caller {
        Caller::Tenant(id) => Some(state.platform.tenant(id.as_str())?.paths.root.clone()),
        Caller::Operator => None,
    };
    let ingested =
        state.platform.ingest_path_within(&request.tenant, request.pipeline.as_deref(), &request.path, within.as_deref(), None).await;
    match ingested {
        Ok(record) => Ok(Json(record)),
        Err(error) => match (error.downcast_ref::<OpenRefused>(), &caller) {
            (Some(refused @ OpenRefused::Outside { within, .. }), Caller::Tenant(id)) => Err(HttpError(
                StatusCode::FORBIDDEN,
                format!(
                    "tenant `{id}`'s token may ingest files under {} only ({refused}); stage other files with `mysimbdp stage put`",
                    within.display()
                ),
            )),
            (Some(refused @ (OpenRefused::Link { .. } | OpenRefused::NotRegular { .. })), _) => {
                Err(HttpError(StatusCode::FORBIDDEN, refused.to_string()))
            }
            _ => Err(error.into()),
        },
    }
}

async fn batch_retry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<RetryRequest>,
) -> Result<Json<Vec<String>>, HttpError> {
    caller.may_act_for(&request.tenant)?;
    let _in_flight = state.admit(&request.tenant)?;
    let batch =
        state.batch.as_ref().ok_or_else(|| HttpError(StatusCode::SERVICE_UNAVAILABLE, "this process runs no batch manager".into()))?;
    let tenant = state.platform.tenant(&request.tenant)?;
    Ok(Json(batch.retry(&tenant.id, &request.files, request.quarantined)?))
}

async fn query(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(request): Query<QueryRequest>,
) -> Result<Json<SearchResult>, HttpError> {
    caller.may_act_for(&request.tenant)?;
    let _in_flight = state.admit(&request.tenant)?;
    let result = state.platform.search_page(&request.tenant, &request.collection, &request.q, request.limit, request.offset).await?;
    Ok(Json(result))
}

async fn prometheus(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Response {
    if let Err(error) = caller.operator_only("/metrics") {
        return error.into_response();
    }
    match &state.metrics {
        Some(handle) => ([(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], handle.render()).into_response(),
        None => (StatusCode::NOT_FOUND, "metrics are not enabled in this process").into_response(),
    }
}

async fn stream_start(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<StreamRequest>,
) -> Result<Json<StreamStatus>, HttpError> {
    caller.may_act_for(&request.tenant)?;
    let _in_flight = state.admit(&request.tenant)?;
    Ok(Json(state.stream()?.start(&request.tenant, request.instances).await?))
}

async fn stream_stop(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<StreamRequest>,
) -> Result<Json<StreamStatus>, HttpError> {
    caller.may_act_for(&request.tenant)?;
    let _in_flight = state.admit(&request.tenant)?;
    Ok(Json(state.stream()?.stop(&request.tenant).await?))
}

#[derive(serde::Deserialize)]
struct TenantFilter {
    #[serde(default)]
    tenant: Option<String>,
}

async fn stream_status(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(filter): Query<TenantFilter>,
) -> Result<Json<Vec<StreamStatus>>, HttpError> {
    let tenant = match (&caller, filter.tenant) {
        (Caller::Tenant(id), None) => Some(id.to_string()),
        (_, tenant) => tenant,
    };
    if let Some(tenant) = &tenant {
        caller.may_act_for(tenant)?;
    }
    // All tenants' streams (the operator's question) count against no one tenant.
    let _in_flight = tenant.as_deref().map(|tenant| state.admit(tenant)).transpose()?;
    Ok(Json(state.stream()?.status(tenant.as_deref()).await?))
}

async fn stream_produce(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<ProduceRequest>,
) -> Result<Json<ProduceAnswer>, HttpError> {
    caller.may_act_for(&request.tenant)?;
    let _in_flight = state.admit(&request.tenant)?;
    if RESERVED_TOPICS.contains(&request.topic.as_str()) {
        return Err(HttpError(
            StatusCode::FORBIDDEN,
            format!(
                "topic `{}` is reserved for the host (it writes the tenant's dead letters there); produce to another topic",
                request.topic
            ),
        ));
    }
    let topic = state.platform.produce(&request.tenant, &request.topic, request.records()).await?;
    Ok(Json(ProduceAnswer { topic, count: request.messages.len() }))
}

async fn operator_page(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<axum::response::Html<String>, HttpError> {
    caller.operator_only("the operator page")?;
    let overview = super::page::overview(&state.platform, state.stream.as_deref()).await;
    Ok(axum::response::Html(super::page::render(&overview)))
}

async fn overview(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Result<Json<super::page::Overview>, HttpError> {
    caller.operator_only("/api/overview")?;
    Ok(Json(super::page::overview(&state.platform, state.stream.as_deref()).await))
}
