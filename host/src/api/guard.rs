//! Who may call the API and how much: the Host check of an untokened host,
//! the operator's and tenants' tokens, and each tenant's requests in flight.

use super::server::{AppState, HttpError};
use crate::config::TenantId;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Counts each tenant's requests in flight, so that one tenant's flood of
/// requests cannot take every worker of the API from the others.
#[derive(Default)]
pub(super) struct InFlight {
    per_tenant: Mutex<HashMap<String, usize>>,
}

/// One request of a tenant, in flight until dropped.
pub(super) struct InFlightRequest {
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
    /// Admits one more request for `tenant`, or answers 429 when it has
    /// `api.max_requests_per_tenant` in flight already.
    pub(super) fn admit(&self, tenant: &str) -> Result<InFlightRequest, HttpError> {
        let cap = self.platform.config.api.max_requests_per_tenant;
        let mut counts = self.requests.per_tenant.lock().expect("in-flight counts poisoned");
        let count = counts.entry(tenant.to_string()).or_default();
        if *count >= cap {
            crate::telemetry::events::RequestRefused { tenant }.emit();
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

    /// Admits a request that names no tenant and acts for its caller: a
    /// tenant's token counts against that tenant's cap like its other
    /// requests; the operator's acts for no one tenant and is not counted.
    pub(super) fn admit_caller(&self, caller: &Caller) -> Result<Option<InFlightRequest>, HttpError> {
        match caller {
            Caller::Tenant(id) => self.admit(id.as_str()).map(Some),
            Caller::Operator => Ok(None),
        }
    }
}

/// Without a token, answers only requests whose `Host` names this host
/// (`api.listen`, `localhost:<port>` on a loopback address, or an entry of
/// `api.allowed_hosts`): a web page in a browser on this machine could
/// otherwise reach the API by DNS rebinding (its requests name the page's
/// own host). With a token, the token is the guard.
pub(super) async fn require_host(State(state): State<AppState>, request: Request, next: Next) -> Response {
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
    pub(super) fn operator_only(&self, what: &str) -> Result<(), HttpError> {
        match self {
            Caller::Operator => Ok(()),
            Caller::Tenant(id) => {
                Err(HttpError(StatusCode::FORBIDDEN, format!("{what} is for the platform operator; tenant `{id}`'s token cannot use it")))
            }
        }
    }

    pub(super) fn may_act_for(&self, tenant: &str) -> Result<(), HttpError> {
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
pub(super) async fn require_token(State(state): State<AppState>, mut request: Request, next: Next) -> Response {
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
            if let Caller::Tenant(id) = &caller
                && let Some(suspension) = state.platform.suspensions().of(id)
            {
                return HttpError(
                    StatusCode::FORBIDDEN,
                    format!(
                        "tenant `{id}` is suspended by the platform operator since {}: its API calls are refused and none of its \
                         ingestions starts until the operator runs `mysimbdp tenant resume {id}`",
                        suspension.since
                    ),
                )
                .into_response();
            }
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

#[cfg(test)]
mod tests {
    use super::host_allowed;
    use crate::config::ApiConfig;

    #[test]
    fn only_hosts_naming_the_listen_address_are_allowed() {
        let allowed_hosts = vec!["ingest.example.org".into(), "gw.example.org:443".into(), "[fd00::1]".into()];
        let mut api = ApiConfig { allowed_hosts, ..ApiConfig::default() }; // 127.0.0.1:8780
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
