//! The raftstore: every local region's raft peer, driven by one thread, with one writer thread beside
//! it that owns LMDB's write transactions and commits each poll round's log writes and applied data
//! (and those of the rounds queued behind it) in a single transaction.
//!
//! - [`store`]: the poll loop (rounds, and their outcomes from the writer) and store-wide settings; its `lifecycle`
//!   submodule starts, creates and destroys peers (splits, membership changes, tombstones);
//! - `batch_gate`: how long a round that holds few writes waits for more before it commits;
//! - [`peer`]: one region's `RawNode`, proposals and reads, and its half of the round;
//! - [`peer_storage`]: `raft::Storage` over LMDB (and the planned log writes not yet durable);
//! - `write_task` and `writer`: a round's writes as plain data, and the thread that commits them;
//! - [`snapshot`]: a region's snapshot data, encoded by its leader and verified once on arrival;
//! - [`apply`]: committed entries → user data (never touches the network);
//! - [`Router`] and [`msg`]: how the rest of the node talks to the loop;
//! - [`transport`] and [`inbox`]: the ports to the network: what the store hands a transport, and
//!   where a transport delivers what it receives (adapters in `crate::transport`);
//! - [`split_check`]: measuring regions off the raftstore thread, and getting a split's ids;
//! - [`region_map`]: which local region holds a key;
//! - [`exit`]: how the raftstore thread ended, for its owner (a node exits when it dies);
//! - `failpoint`: test hooks of debug builds (`FEKV_FAILPOINT`).

pub mod apply;
mod batch_gate;
mod error;
pub mod exit;
mod failpoint;
pub mod inbox;
pub mod msg;
pub mod peer;
pub mod peer_storage;
pub mod region_map;
mod router;
pub mod snapshot;
pub mod split_check;
pub mod store;
pub mod transport;
mod write_task;
mod writer;

pub use error::{Error, Result};
pub use exit::{RaftstoreExit, RaftstoreHandle};
pub use msg::{PeerStatus, WriteResponse};
pub use router::Router;
