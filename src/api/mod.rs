//! The REST API (hyper, HTTP/1.1): routing, per-request metrics, and the server loop.
//!
//! [`serve`] takes a bound listener and a shutdown future (mini-redis style), so tests run the real
//! server in-process on `127.0.0.1:0`. Handlers never block: they await the raftstore with a deadline
//! and do their own short LMDB reads. Nothing is logged per request above `debug`. Connections are
//! capped and their reads bounded in time (`connections`, `conn_io`), so no client can hold the
//! node's descriptors or a connection forever.

pub mod auth;
mod conn_io;
pub mod connections;
pub mod error;
mod kv;
mod metrics_listener;
mod query;
pub mod request;
mod scan;
mod scrub;
mod server;
mod status;

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::HeaderValue;
use hyper::{Method, Request, Response};

pub use connections::Limits;
pub use error::ApiError;
pub use metrics_listener::serve_metrics;
pub use server::{serve, Acceptor};
pub use status::region_json;

use crate::metrics::Metrics;
use crate::raftstore::Router;
use crate::security::auth as security_auth;
use crate::storage::Engine;

/// What the handlers share.
pub struct ApiState {
    pub router: Router,
    /// The store's scrub: `GET /scrub` shows its last pass, `POST /scrub` runs one.
    pub scrubber: crate::storage::scrub::background::Scrubber,
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    pub max_value_size: u64,
    pub store_id: u64,
    /// The address this node's REST API is reached at (advertised, else bound).
    pub http_addr: String,
    /// `https` when the REST API listens with TLS, else `http`: the scheme of redirects.
    pub url_scheme: &'static str,
    pub started: Instant,
    /// The other stores' addresses (cluster mode), for redirecting to a leader.
    pub addresses: Option<Arc<crate::cluster_link::AddressBook>>,
    /// Placement's view of every region (cluster mode), for keys no local peer holds.
    pub region_cache: Option<Arc<crate::cluster_link::RegionCache>>,
    pub request_timeout: Duration,
    /// Connection cap and read deadlines.
    pub http: Limits,
    /// Users and roles: what requests are checked against (auth off until placement says otherwise).
    pub auth: Arc<crate::security::node_auth::NodeAuth>,
}

/// The ETag of a revision: the raft index of the entry that wrote the value, quoted.
pub fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).expect("digits are a valid header value")
}

/// Routes a request and records its metrics.
async fn handle(state: &ApiState, req: Request<Incoming>) -> Response<Full<Bytes>> {
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
fn route_name(path: &str) -> &'static str {
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
async fn operational<B>(state: &ApiState, req: &Request<B>, route: &str) -> Result<Response<Full<Bytes>>, ApiError> {
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
