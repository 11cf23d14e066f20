//! Routes of the host's HTTP server.

use super::{ApiError, IngestRequest, ProduceAnswer, ProduceRequest, QueryRequest, StreamRequest};
use crate::backends::SearchResult;
use crate::config::TenantId;
use crate::platform::Platform;
use crate::stream::{StreamManager, StreamStatus};
use crate::telemetry::IngestionRecord;
use axum::extract::{Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
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
}

impl AppState {
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
        .route("/api/stream/start", post(stream_start))
        .route("/api/stream/stop", post(stream_stop))
        .route("/api/stream/status", get(stream_status))
        .route("/api/stream/produce", post(stream_produce))
        .route("/api/reload", post(reload))
        .route("/metrics", get(prometheus))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
        // After the layer: a liveness probe (and the CLI looking for a host) needs no token.
        .route("/api/health", get(health))
        .with_state(state)
}

/// Who a request acts for, found by [`require_token`].
#[derive(Debug, Clone)]
pub enum Caller {
    /// The platform operator: the token of `api.token_file`, or anyone when
    /// the API has no token.
    Operator,
    /// A tenant, by its own token (`api_token_file` in the registry): it may
    /// act for itself only.
    Tenant(TenantId),
}

impl Caller {
    fn operator_only(&self, what: &str) -> Result<(), HttpError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Tenant(id) => {
                Err(HttpError(StatusCode::FORBIDDEN, format!("{what} is for the platform operator; tenant `{id}`'s token cannot use it")))
            }
        }
    }

    fn may_act_for(&self, tenant: &str) -> Result<(), HttpError> {
        match self {
            Caller::Tenant(id) if id.as_str() != tenant => {
                Err(HttpError(StatusCode::FORBIDDEN, format!("tenant `{id}`'s token acts for tenant `{id}` only, not for `{tenant}`")))
            }
            _ => Ok(()),
        }
    }
}

/// Lets a request through when the API has no token or the request carries
/// one, as a bearer token or as the password of basic authentication: the
/// operator's token, or a tenant's own (the request then acts for that
/// tenant only). The caller goes into the request's extensions.
async fn require_token(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
    // The operator's token (`api.token_file`); without one the API is open.
    let Some(token) = &state.platform.config.api.token else {
        request.extensions_mut().insert(Caller::Operator);
        return next.run(request).await;
    };
    let presented = request.headers().get(header::AUTHORIZATION).and_then(|value| value.to_str().ok()).and_then(presented_token);
    if let Some(presented) = presented.as_deref() {
        let operator = same_secret(presented.as_bytes(), token.0.as_bytes());
        // Every tenant's token is compared, so the time taken does not tell which matched.
        let tenant = state.platform.registry().tenants().fold(None, |found, tenant| {
            let matches = tenant.api_token.as_ref().is_some_and(|own| same_secret(presented.as_bytes(), own.0.as_bytes()));
            if matches { Some(tenant.id.clone()) } else { found }
        });
        let caller = match (operator, tenant) {
            (true, _) => Some(Caller::Operator),
            (false, Some(id)) => Some(Caller::Tenant(id)),
            (false, None) => None,
        };
        if let Some(caller) = caller {
            request.extensions_mut().insert(caller);
            return next.run(request).await;
        }
    }
    let message = if presented.is_some() {
        "wrong API token: use the token in the host's api.token_file, or a tenant's own (api_token_file in its registry)"
    } else {
        "this host requires an API token: send `Authorization: Bearer TOKEN` with the token in the host's api.token_file \
         (the CLI does when its --config names that file)"
    };
    let mut response = HttpError(StatusCode::UNAUTHORIZED, message.into()).into_response();
    response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"mysimbdp\""));
    response
}

/// The token of an `Authorization` header: `Bearer TOKEN`, or `Basic` with
/// the token as the password (any user name).
fn presented_token(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let decoded = String::from_utf8(base64::engine::general_purpose::STANDARD.decode(rest.trim()).ok()?).ok()?;
        return decoded.split_once(':').map(|(_user, password)| password.to_string());
    }
    None
}

/// Compares without stopping at the first difference, so the time taken
/// does not tell how much of a guess was right.
fn same_secret(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0, |diff, (x, y)| diff | (x ^ y)) == 0
}

/// An error answered as `{"error": "..."}`.
pub struct HttpError(StatusCode, String);

impl From<anyhow::Error> for HttpError {
    fn from(error: anyhow::Error) -> Self {
        HttpError(StatusCode::BAD_REQUEST, format!("{error:#}"))
    }
}

impl IntoResponse for HttpError {
    fn into_response(self) -> Response {
        (self.0, Json(ApiError { error: self.1 })).into_response()
    }
}

async fn health() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "ok" }))
}

#[derive(Serialize)]
struct TenantSummary {
    id: String,
    description: String,
    batch_pipelines: Vec<String>,
    stream_pipeline: Option<String>,
}

async fn tenants(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Json<Vec<TenantSummary>> {
    Json(
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
    )
}

async fn reload(State(state): State<AppState>, Extension(caller): Extension<Caller>) -> Result<Json<crate::platform::Reloaded>, HttpError> {
    caller.operator_only("reloading the registry")?;
    Ok(Json(state.platform.reload_all(state.batch.as_deref()).await?))
}

async fn ingest(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<IngestRequest>,
) -> Result<Json<IngestionRecord>, HttpError> {
    caller.may_act_for(&request.tenant)?;
    let mut path = request.path;
    if let Caller::Tenant(id) = &caller {
        // The path is on the host's machine: a tenant may name its own files
        // only, and the file ingested is the one checked (links resolved).
        let root = state.platform.tenant(id.as_str())?.paths.root.clone();
        match (std::fs::canonicalize(&path), std::fs::canonicalize(&root)) {
            (Ok(real), Ok(root)) if real.starts_with(&root) => path = real,
            _ => {
                return Err(HttpError(
                    StatusCode::FORBIDDEN,
                    format!(
                        "tenant `{id}`'s token may ingest files under {} only, and {} is not one; stage it with `mysimbdp stage put`",
                        root.display(),
                        path.display()
                    ),
                ));
            }
        }
    }
    let record = crate::batch::ingest_path(&state.platform, &request.tenant, request.pipeline.as_deref(), &path, None).await?;
    Ok(Json(record))
}

async fn query(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Query(request): Query<QueryRequest>,
) -> Result<Json<SearchResult>, HttpError> {
    caller.may_act_for(&request.tenant)?;
    let result = state.platform.search(&request.tenant, &request.collection, &request.q, request.limit).await?;
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
    Ok(Json(state.stream()?.start(&request.tenant, request.instances).await?))
}

async fn stream_stop(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<StreamRequest>,
) -> Result<Json<StreamStatus>, HttpError> {
    caller.may_act_for(&request.tenant)?;
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
    Ok(Json(state.stream()?.status(tenant.as_deref()).await?))
}

async fn stream_produce(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    Json(request): Json<ProduceRequest>,
) -> Result<Json<ProduceAnswer>, HttpError> {
    caller.may_act_for(&request.tenant)?;
    let topic = StreamManager::produce(&state.platform, &request.tenant, &request.topic, request.records()).await?;
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
