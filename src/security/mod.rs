//! Security for a cluster that leaves loopback (issue 12): TLS on every listener and connection, and
//! users, roles and tokens on the client API and on placement's admin RPCs. The threat model and the
//! wiring plan are in `docs/security.md`.
//!
//! - [`tls`]: settings with etcd's names, reloadable rustls configs, an acceptor and a connector;
//! - [`config`]: each command's TLS flags and the node's `[tls]` table;
//! - [`runtime`]: a process's loaded configs, watched and reloaded on SIGHUP;
//! - [`auth`]: the auth state, permission checks, passwords, tokens and credentials. It lives in the
//!   placement crate, which owns the replicated state, and is re-exported here for the node;
//! - [`node_auth`]: the node's authenticator, fed and persisted from placement's auth states.

pub mod config;
pub mod node_auth;
pub mod runtime;
pub mod tls;

pub use fekv_placement::auth;
