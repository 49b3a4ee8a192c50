//! The router: endpoints, the bearer token, and the answers to bad requests.

use std::collections::HashMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use flext_constants::ErrorCode;
use serde_json::{Value, json};

use crate::admin::Admin;
use crate::redact::{redact, redact_json};

/// The Prometheus text format's content type.
pub const PROMETHEUS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

const DASHBOARD: &str = include_str!("dashboard.html");

impl Admin {
    /// The admin endpoints as an axum router, to serve alone or to mount in an app
    /// (`Router::nest("/admin", admin.router())`):
    ///
    /// | endpoint | answer |
    /// |---|---|
    /// | `GET /` | the dashboard: one self-contained page (nothing fetched from elsewhere) |
    /// | `GET /health` | the health report as JSON; 200 when healthy, 503 otherwise (see [`Admin::with_degraded_ok`]) |
    /// | `GET /metrics` | every metric in the Prometheus text format (`?format=json` for JSON) |
    /// | `GET /handlers` | the registry's handlers with their metrics |
    /// | `GET /breakers` | each breaker's state, rates, counts and recent transitions |
    /// | `GET /projections` | each projection's position, head, lag, dead letters and owner |
    /// | `GET /sources` | the counters and gauges of every metrics source |
    /// | `GET /history?since=MS` | per-interval requests, failures and latency percentiles |
    ///
    /// Read-only: any other method is a 405, any other path a 404, each with a JSON error.
    /// With a token ([`Admin::with_token`]), every endpoint but `GET /` answers 401 without
    /// `Authorization: Bearer {token}`. Every string in a response passes through
    /// [`redact`](crate::redact), so a connection string in an error message shows no
    /// password. Calling it inside a tokio runtime starts a task sampling the handlers
    /// for the charts every interval while the admin surface lives (once per admin
    /// surface, however many routers are made); without one, `GET /history` samples when
    /// half an interval has passed.
    pub fn router(&self) -> Router {
        self.spawn_sampler();
        Router::new()
            .route("/", get(dashboard))
            .route("/health", get(health))
            .route("/metrics", get(metrics))
            .route("/handlers", get(handlers))
            .route("/breakers", get(breakers))
            .route("/projections", get(projections))
            .route("/sources", get(sources))
            .route("/history", get(history))
            .fallback(not_found)
            .method_not_allowed_fallback(method_not_allowed)
            .layer(middleware::from_fn_with_state(self.clone(), guard))
            .with_state(self.clone())
    }

    fn spawn_sampler(&self) {
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if self
            .inner
            .sampling
            .swap(true, std::sync::atomic::Ordering::SeqCst)
        {
            return;
        }
        let weak = std::sync::Arc::downgrade(&self.inner);
        let every = self.inner.settings.sample_every;
        // Clears the flag however the task ends (its runtime shut down, say), so a later
        // router starts another and `GET /history` samples meanwhile.
        struct Running(std::sync::Weak<crate::admin::Inner>);
        impl Drop for Running {
            fn drop(&mut self) {
                if let Some(inner) = self.0.upgrade() {
                    inner
                        .sampling
                        .store(false, std::sync::atomic::Ordering::SeqCst);
                }
            }
        }
        let running = Running(weak.clone());
        runtime.spawn(async move {
            let _running = running;
            let mut ticks = tokio::time::interval(every);
            ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = weak.upgrade() else { return };
                Admin { inner }.sample();
            }
        });
    }
}

/// Answers 401 to a request without the token, but for the dashboard's page.
async fn guard(State(admin): State<Admin>, request: Request, next: Next) -> Response {
    if admin.inner.settings.token.is_none()
        && let Some(host) = host_of(&request)
        && !host_allowed(&host, &admin.inner.settings.allowed_hosts)
    {
        return error(
            StatusCode::FORBIDDEN,
            ErrorCode::AuthorizationDenied,
            &format!(
                "Requests for host '{host}' are refused: without a token the admin surface \
                 answers only requests addressed to this machine by IP address or localhost \
                 (set a token, or allow the name with Admin::with_allowed_hosts)"
            ),
        );
    }
    let is_page = request.uri().path() == "/" || request.uri().path().is_empty();
    if let Some(token) = &admin.inner.settings.token
        && !is_page
        && !bearer_matches(&request, token)
    {
        let mut response = error(
            StatusCode::UNAUTHORIZED,
            ErrorCode::AuthorizationDenied,
            "This admin endpoint needs the header 'Authorization: Bearer <token>'",
        );
        response.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer realm=\"flext-admin\""),
        );
        return response;
    }
    next.run(request).await
}

/// The host the request is addressed to: its `Host` header, or its URI's authority.
fn host_of(request: &Request) -> Option<String> {
    request
        .headers()
        .get(header::HOST)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| request.uri().authority().map(|a| a.as_str().to_owned()))
}

/// Whether `host` (with or without a port) is an IP address, `localhost`, or one of
/// `allowed`: a web page elsewhere that rebinds its own name to this machine's address
/// sends its own name, and is refused.
pub(crate) fn host_allowed(host: &str, allowed: &[String]) -> bool {
    let name = if host.starts_with('[') {
        // An IPv6 literal, `[::1]:9180`.
        return host
            .split_once(']')
            .is_some_and(|(ip, _)| ip[1..].parse::<std::net::Ipv6Addr>().is_ok());
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host,
        }
    };
    name.eq_ignore_ascii_case("localhost")
        || name.parse::<std::net::IpAddr>().is_ok()
        || allowed.iter().any(|a| a.eq_ignore_ascii_case(name))
}

fn bearer_matches(request: &Request, token: &str) -> bool {
    let Some(given) = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, rest) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
    else {
        return false;
    };
    // Compared in time that depends on the lengths only.
    given.len() == token.len()
        && given
            .bytes()
            .zip(token.bytes())
            .fold(0u8, |diff, (a, b)| diff | (a ^ b))
            == 0
}

async fn dashboard() -> Response {
    let mut response = DASHBOARD.into_response();
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    // The page loads nothing from elsewhere and talks only to this surface.
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; img-src 'self' data:",
        ),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn health(State(admin): State<Admin>) -> Response {
    let (body, code) = admin.health().await;
    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    json_response(status, body)
}

async fn metrics(
    State(admin): State<Admin>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let format = query.get("format").map(String::as_str);
    if let Some(unknown) = query.keys().find(|key| key.as_str() != "format") {
        return bad_request(&format!(
            "Unknown query parameter '{unknown}' for /metrics; the only one is 'format'"
        ));
    }
    let sets = admin.metric_sets().await;
    match format {
        None | Some("prometheus") => {
            let text = flext_management::to_prometheus(&sets);
            let mut response = redact(&text).into_owned().into_response();
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(PROMETHEUS_CONTENT_TYPE),
            );
            no_store(response)
        }
        Some("json") => json_response(StatusCode::OK, flext_management::to_json(&sets)),
        Some(other) => bad_request(&format!(
            "Invalid format: {other}. Valid values: prometheus, json"
        )),
    }
}

async fn handlers(State(admin): State<Admin>) -> Response {
    json_response(StatusCode::OK, admin.handlers())
}

async fn breakers(State(admin): State<Admin>) -> Response {
    json_response(StatusCode::OK, admin.breakers())
}

async fn projections(State(admin): State<Admin>) -> Response {
    json_response(StatusCode::OK, admin.projections().await)
}

async fn sources(State(admin): State<Admin>) -> Response {
    json_response(StatusCode::OK, admin.sources())
}

async fn history(
    State(admin): State<Admin>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    if let Some(unknown) = query.keys().find(|key| key.as_str() != "since") {
        return bad_request(&format!(
            "Unknown query parameter '{unknown}' for /history; the only one is 'since'"
        ));
    }
    let since = match query.get("since").map(|since| since.parse::<i64>()) {
        None => 0,
        Some(Ok(since)) if since >= 0 => since,
        Some(_) => {
            return bad_request(
                "Invalid since: it must be a time in milliseconds since the Unix epoch",
            );
        }
    };
    json_response(StatusCode::OK, admin.history(since))
}

async fn not_found(request: Request) -> Response {
    error(
        StatusCode::NOT_FOUND,
        ErrorCode::NotFound,
        &format!("No admin endpoint at {}", request.uri().path()),
    )
}

async fn method_not_allowed(method: Method) -> Response {
    let mut response = error(
        StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::InvalidArgument,
        &format!("The admin surface is read-only: {method} is not allowed, only GET"),
    );
    response
        .headers_mut()
        .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
    response
}

fn bad_request(message: &str) -> Response {
    error(StatusCode::BAD_REQUEST, ErrorCode::InvalidArgument, message)
}

fn error(status: StatusCode, code: ErrorCode, message: &str) -> Response {
    let error = flext_types::FlextError::new(code, message.to_owned());
    json_response(status, json!({ "error": error }))
}

fn json_response(status: StatusCode, mut body: Value) -> Response {
    redact_json(&mut body);
    let bytes = serde_json::to_vec(&body).unwrap_or_else(|_| b"{}".to_vec());
    let mut response = Response::new(Body::from(bytes));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    no_store(response)
}

fn no_store(mut response: Response) -> Response {
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}
