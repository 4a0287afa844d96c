//! fekv's placement service (a small PD): it allocates ids, keeps the address book of stores and the
//! table of regions with their leaders, and bootstraps the first region once enough stores have
//! registered. Its state lives in its own LMDB environment.
//!
//! - [`proto`]: the protobuf messages and gRPC services shared by every fekv component;
//! - [`region_tree`]: regions by start key, the stale-heartbeat rule, per-store counts;
//! - [`schedulers`]: pure scheduling decisions (replica check, region and leader balance);
//! - [`state`]: the placement state machine and its persistence (no networking);
//! - [`service`]: the gRPC face of it.

pub mod region_tree;
pub mod schedulers;
pub mod service;
pub mod state;

/// fekv's protobuf messages and gRPC services (`proto/fekv.proto`).
#[allow(clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/fekv.rs"));
}

pub use state::{Placement, PlacementError, PlacementOptions};
