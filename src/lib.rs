//! fekv: a replicated, range-sharded key-value store with a REST API, on raft-rs and LMDB.
//!
//! A map of the crate, from the outside in:
//! - [`api`]: the REST API (hyper): `/fekv/{key}`, `/status`, `/metrics`, `/health`, `/ready`;
//! - [`raftstore`]: every local region's raft peer, driven by the one thread that writes LMDB;
//! - [`security`]: TLS (settings, reloadable configs, acceptor, connector) and users/roles/tokens;
//! - [`storage`]: the LMDB environment, its key layout and checksummed records;
//! - [`transport`]: adapters carrying raft messages between stores (gRPC, and a simulated network for
//!   tests), behind the ports the raftstore defines;
//! - [`node`]: wiring: open storage, bootstrap, start the raftstore and the API;
//! - [`cluster_link`]: the node's side of the placement service (registration, heartbeats);
//! - [`cmd`]: the `placement`, `cluster` and `ctl` subcommands (`ctl`: the operator's CLI over
//!   placement's admin API and the nodes' HTTP);
//! - [`ids`]: region and peer id allocation (from placement, or a file for a lone node);
//! - [`config`], [`metrics`], [`logging`]: the node's settings, Prometheus metrics and tracing;
//! - [`panics`]: every panic logged through tracing, and reported by the thread it ended;
//! - [`dir_lock`], [`fd_limit`]: what a node asks of the OS: its data directory to itself, and file descriptors;
//! - [`loadgen`]: `fekv bench`, a closed-loop HTTP load generator; a client of the REST API only.

// The crate's own name for itself, so that `tests/common/certs.rs` (also compiled into the unit
// tests, through `#[path]`) names fekv's items the same way in both places.
extern crate self as fekv;

pub mod accept;
pub mod api;
pub mod cluster_link;
pub mod cmd;
pub mod config;
pub mod dir_lock;
pub mod fd_limit;
pub mod ids;
pub mod loadgen;
pub mod logging;
pub mod metrics;
pub mod node;
pub mod panics;
pub mod raftstore;
pub mod security;
pub mod storage;
pub mod transport;

/// fekv's protobuf messages and gRPC services (`proto/fekv.proto`), generated once in the placement
/// crate because the node and the placement service share them.
pub use fekv_placement::proto;

/// The version `/status` reports.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");
