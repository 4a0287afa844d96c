//! fekv: a replicated, range-sharded key-value store with a REST API, on raft-rs and LMDB.
//!
//! A map of the crate, from the outside in:
//! - [`api`]: the REST API (hyper): `/fekv/{key}`, `/status`, `/metrics`, `/health`, `/ready`;
//! - [`raftstore`]: every local region's raft peer, driven by the one thread that writes LMDB;
//! - [`storage`]: the LMDB environment, its key layout and checksummed records;
//! - [`node`]: wiring: open storage, bootstrap, start the raftstore and the API;
//! - [`config`], [`metrics`], [`logging`]: the node's settings, Prometheus metrics and tracing;
//! - [`loadgen`]: `fekv bench`, a closed-loop HTTP load generator; a client of the REST API only.

pub mod api;
pub mod config;
pub mod loadgen;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod raftstore;
pub mod storage;

/// fekv's own protobuf messages (`proto/fekv.proto`).
#[allow(clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/fekv.rs"));
}

/// The version `/status` reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
