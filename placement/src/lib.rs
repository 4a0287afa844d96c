//! fekv's placement service (a small PD): it allocates ids, keeps the address book of stores and the
//! table of regions with their leaders, bootstraps the first region on the first store, and keeps the
//! cluster repaired and balanced by itself: schedulers decide, operators carry the decisions out
//! through the region leaders' heartbeats. Its state lives in its own LMDB environment.
//!
//! - [`proto`]: the protobuf messages and gRPC services shared by every fekv component (with
//!   `PlacementGroup`, the members of a replicated placement);
//! - [`auth`]: users, roles, tokens and permission checks, shared by placement and the nodes;
//! - [`region_tree`]: regions by start key, the stale-heartbeat rule, per-store counts;
//! - [`schedulers`]: pure scheduling decisions (replica check, region and leader balance);
//! - [`operators`]: one region's change as steps, judged against its leader's heartbeats;
//! - [`state`]: the placement state machine and its persistence (no networking);
//! - [`group`]: N replicas of that state agreeing through raft (`--peers`), only the leader serving;
//! - [`service`]: the gRPC face of it, and the scheduling loop ([`service::run_schedulers`]).

pub mod auth;
pub mod group;
pub mod operators;
pub mod region_tree;
pub mod schedulers;
pub mod service;
pub mod state;

/// fekv's protobuf messages and gRPC services (`proto/fekv.proto`, `proto/auth.proto`).
#[allow(clippy::all)]
pub mod proto {
    include!(concat!(env!("OUT_DIR"), "/fekv.rs"));

    mod helpers;
}

pub use state::{Placement, PlacementError, PlacementOptions};

/// The response metadata key in which a placement follower names the leader's client address
/// (`host:port`) when it refuses a leader-only call with UNAVAILABLE (`proto/placement_group.proto`).
pub const LEADER_METADATA: &str = "fekv-placement-leader";
