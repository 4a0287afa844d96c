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
mod routes;
mod scan;
mod scrub;
mod server;
mod state;
mod status;

pub use connections::Limits;
pub use error::ApiError;
pub use metrics_listener::serve_metrics;
pub use server::{serve, Acceptor};
pub use state::{etag, ApiState};
pub use status::region_json;
