//! Routing: which handler answers a path, what it needs (a user, or none), and the per-request
//! metrics and debug log.

use std::time::Instant;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response};

use super::error::ApiError;
use super::state::ApiState;
use super::{auth, kv, scan, scrub, status};
use crate::security::auth as security_auth;

/// Routes a request and records its metrics.
pub(super) async fn handle(state: &ApiState, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let started = Instant::now();
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let (route, result) = route(state, req, &path).await;
    let response = result.unwrap_or_else(ApiError::into_response);
    // Label only known methods: arbitrary ones would let clients grow the metric without bound.
    let method_label = match method {
        Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::DELETE => method.as_str(),
        _ => "other",
    };
    state.metrics.http_requests.with_label_values(&[route, method_label, response.status().as_str()]).inc();
    state
        .metrics
        .http_request_duration
        .with_label_values(&[route, method_label])
        .observe(started.elapsed().as_secs_f64());
    tracing::debug!(%method, path, status = response.status().as_u16(), micros = started.elapsed().as_micros() as u64, "request");
    response
}

/// The route's label, for metrics.
pub(super) fn route_name(path: &str) -> &'static str {
    match path {
        _ if path.starts_with("/fekv/") => "kv",
        "/fekv" => "scan",
        "/scrub" => "scrub",
        "/auth/token" => "auth_token",
        "/status" => "status",
        "/health" => "health",
        "/ready" => "ready",
        "/metrics" => "metrics",
        _ => "unknown",
    }
}

async fn route(
    state: &ApiState,
    req: Request<Incoming>,
    path: &str,
) -> (&'static str, Result<Response<Full<Bytes>>, ApiError>) {
    let route = route_name(path);
    // Liveness and readiness stay open (load balancers and supervisors ask them); a token request
    // authenticates itself.
    let principal = match route {
        "health" | "ready" => security_auth::Principal::Unchecked,
        "auth_token" => return (route, auth::token(state, req).await),
        _ => match auth::principal(state, &req).await {
            Ok(principal) => principal,
            Err(err) => return (route, Err(err)),
        },
    };
    let result = match route {
        "kv" => kv::handle(state, req, &path["/fekv/".len()..], &principal).await,
        "scan" => scan::handle(state, req, &principal).await,
        "scrub" => match auth::allow_admin(state, &principal, "/scrub") {
            Ok(()) => scrub::handle(state, req).await,
            Err(err) => Err(err),
        },
        "unknown" => Err(ApiError::NoRoute { path: path.to_string() }),
        _ => operational(state, &req, route).await,
    };
    (route, result)
}

/// `/status`, `/health`, `/ready`, `/metrics` (GET or HEAD); also what the metrics listener serves.
pub(super) async fn operational<B>(
    state: &ApiState,
    req: &Request<B>,
    route: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return Err(ApiError::MethodNotAllowed { method: req.method().to_string(), allow: "GET, HEAD" });
    }
    match route {
        "status" => status::status(state, req.uri().query()).await,
        "health" => Ok(status::health(state).await),
        "ready" => Ok(status::ready(state).await),
        "metrics" => Ok(status::metrics(state)),
        _ => Err(ApiError::NoRoute { path: req.uri().path().to_string() }),
    }
}
