//! `--metrics-addr`: a second, plain listener that serves only `/metrics`, `/status`, `/health` and
//! `/ready`, without credentials (etcd's `--listen-metrics-urls`), so a Prometheus on the same host
//! scrapes the node while the client listener asks for a user. It has no connection cap and no
//! auth: keep it on loopback. A connection that sends no complete request head within
//! `http_header_timeout` (a silent or slowloris one, or a keep-alive one idle that long) is closed,
//! so one cannot hold the node's descriptors forever.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;

use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::{TcpListener, TcpStream};

use crate::accept::accept_retrying;

use super::error::ApiError;
use super::routes::{operational, route_name};
use super::state::ApiState;

/// Serves the operational endpoints on `listener` until `shutdown` resolves.
pub async fn serve_metrics(listener: TcpListener, state: Arc<ApiState>, shutdown: impl Future<Output = ()>) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            (stream, _) = accept_retrying(&listener, "metrics") => {
                tokio::spawn(serve_connection(stream, state.clone()));
            }
            _ = &mut shutdown => break,
        }
    }
}

/// One scraper's connection, until it closes or stays silent for `http_header_timeout`.
async fn serve_connection(stream: TcpStream, state: Arc<ApiState>) {
    let header_timeout = state.http.header_timeout;
    let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
        let state = state.clone();
        async move {
            let route = route_name(req.uri().path());
            let result = match route {
                "status" | "health" | "ready" | "metrics" => operational(&state, &req, route).await,
                _ => Err(ApiError::NoRoute { path: req.uri().path().to_string() }),
            };
            Ok::<_, Infallible>(result.unwrap_or_else(ApiError::into_response))
        }
    });
    // hyper's own header timer is enough here: no 408 to write (a scraper never needs one), only
    // the connection to close.
    let served = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout)
        .half_close(true)
        .serve_connection(TokioIo::new(stream), service)
        .await;
    if let Err(err) = served {
        tracing::debug!(error = %err, "metrics connection ended with an error");
    }
}
