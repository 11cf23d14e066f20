//! Routes of the host's HTTP server.

use super::{ApiError, IngestRequest, ProduceAnswer, ProduceRequest, QueryRequest, StreamRequest};
use crate::backends::{SearchError, SearchResult};
use crate::config::{RESERVED_TOPICS, TenantId};
use crate::opened_file::OpenRefused;
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
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub platform: Arc<Platform>,
    pub metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    pub batch: Option<Arc<crate::batch::BatchManager>>,
    pub stream: Option<Arc<StreamManager>>,
    /// Requests in flight per tenant.
    requests: Arc<InFlight>,
}

/// Counts each tenant's requests in flight, so that one tenant's flood of
/// requests cannot take every worker of the API from the others.
#[derive(Default)]
struct InFlight {
    per_tenant: Mutex<HashMap<String, usize>>,
}

/// One request of a tenant, in flight until dropped.
struct InFlightRequest {
    requests: Arc<InFlight>,
    tenant: String,
}

impl Drop for InFlightRequest {
    fn drop(&mut self) {
        let mut counts = self.requests.per_tenant.lock().expect("in-flight counts poisoned");
        if let Some(count) = counts.get_mut(&self.tenant) {
            *count -= 1;
            if *count == 0 {
                counts.remove(&self.tenant);
            }
        }
    }
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

    /// Admits one more request for `tenant`, or answers 429 when it has
    /// `api.max_requests_per_tenant` in flight already.
    fn admit(&self, tenant: &str) -> Result<InFlightRequest, HttpError> {
        let cap = self.platform.config.api.max_requests_per_tenant;
        let mut counts = self.requests.per_tenant.lock().expect("in-flight counts poisoned");
        let count = counts.entry(tenant.to_string()).or_default();
        if *count >= cap {
            metrics::counter!(crate::telemetry::metrics::API_REQUESTS_REFUSED, "tenant" => tenant.to_string()).increment(1);
            return Err(HttpError(
                StatusCode::TOO_MANY_REQUESTS,
                format!(
                    "tenant `{tenant}` has {cap} API requests in flight already (api.max_requests_per_tenant): wait for one to \
                     finish and try again"
                ),
            ));
        }
        *count += 1;
        Ok(InFlightRequest { requests: self.requests.clone(), tenant: tenant.to_string() })
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
        .route("/api/stream/start", post(stream_start))
        .route("/api/stream/stop", post(stream_stop))
        .route("/api/stream/status", get(stream_status))
        .route("/api/stream/produce", post(stream_produce))
        .route("/api/reload", post(reload))
        .route("/metrics", get(prometheus))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_token))
        .route_layer(axum::middleware::from_fn_with_state(state.clone(), require_host))
        // After the layers: a liveness probe (and the CLI looking for a host) needs no token.
        .route("/api/health", get(health))
        .with_state(state)
}

/// Without a token, answers only requests whose `Host` names this host
/// (`api.listen`, `localhost:<port>` on a loopback address, or an entry of
/// `api.allowed_hosts`): a web page in a browser on this machine could
/// otherwise reach the API by DNS rebinding (its requests name the page's
/// own host). With a token, the token is the guard.
async fn require_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let api = &state.platform.config.api;
    if api.token.is_some() {
        return next.run(request).await;
    }
    let host = request.headers().get(header::HOST).and_then(|value| value.to_str().ok()).unwrap_or("");
    if host_allowed(host, api) {
        return next.run(request).await;
    }
    let shown = if host.is_empty() { "no Host header".to_string() } else { format!("Host `{host}`") };
    HttpError(
        StatusCode::MISDIRECTED_REQUEST,
        format!(
            "{shown} does not name this host: without an API token it answers only requests addressed to {} (a web page \
             cannot reach it by DNS rebinding that way); use http://{}/, add the name to api.allowed_hosts, or set \
             api.token_file",
            api.listen, api.listen
        ),
    )
    .into_response()
}

/// Whether `host` (a `Host` header) names the API's listen address.
fn host_allowed(host: &str, api: &crate::config::ApiConfig) -> bool {
    let port = api.listen.port();
    // A Host without a port is the default port of http.
    let host = with_port(&host.trim().to_ascii_lowercase(), 80);
    let mut allowed = vec![api.listen.to_string()];
    if api.listen.ip().is_loopback() {
        allowed.extend([format!("localhost:{port}"), format!("127.0.0.1:{port}"), format!("[::1]:{port}")]);
    }
    // An entry without a port allows the listen port.
    allowed.extend(api.allowed_hosts.iter().map(|entry| with_port(&entry.to_ascii_lowercase(), port)));
    allowed.contains(&host)
}

/// `name:port` as it is, or `name` (`[v6]`) with `port` added.
fn with_port(name: &str, port: u16) -> String {
    let has_port = name.rsplit_once(':').is_some_and(|(before, digits)| {
        !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) && (!before.contains(':') || before.ends_with(']'))
    });
    if has_port { name.to_string() } else { format!("{name}:{port}") }
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
    let _in_flight = state.admit(&request.tenant)?;
    // The path is on the host's machine: a tenant may name its own files
    // only. The file is opened once, never through a link, and the open file
    // is what is checked (inside the tenant's directory), hashed and read.
    let within = match &caller {
        Caller::Tenant(id) => Some(state.platform.tenant(id.as_str())?.paths.root.clone()),
        Caller::Operator => None,
    };
    let ingested = crate::batch::ingest_path_within(
        &state.platform,
        &request.tenant,
        request.pipeline.as_deref(),
        &request.path,
        within.as_deref(),
        None,
    )
    .await;
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

#[cfg(test)]
mod tests {
    use super::host_allowed;
    use crate::config::ApiConfig;

    #[test]
    fn only_hosts_naming_the_listen_address_are_allowed() {
        let mut api = ApiConfig::default(); // 127.0.0.1:8780
        api.allowed_hosts = vec!["ingest.example.org".into(), "gw.example.org:443".into(), "[fd00::1]".into()];
        let cases = [
            ("127.0.0.1:8780", true),
            ("localhost:8780", true),
            ("LOCALHOST:8780", true),
            ("[::1]:8780", true),
            ("ingest.example.org:8780", true),
            ("gw.example.org:443", true),
            ("[fd00::1]:8780", true),
            ("", false),
            ("127.0.0.1", false),
            ("127.0.0.1:8781", false),
            ("attacker.example:8780", false),
            ("ingest.example.org", false),
            ("gw.example.org:8780", false),
            ("localhost.attacker.example:8780", false),
            ("127.0.0.1:8780.attacker.example", false),
        ];
        for (host, expected) in cases {
            assert_eq!(host_allowed(host, &api), expected, "Host `{host}`");
        }
        api.listen = "0.0.0.0:80".parse().unwrap();
        assert!(host_allowed("ingest.example.org", &api), "port 80 may be left out");
        assert!(!host_allowed("localhost", &api), "localhost only for a loopback listen address");
    }
}
