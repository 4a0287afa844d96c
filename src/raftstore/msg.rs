//! The messages the raftstore thread receives, and the callbacks it answers them on.
//!
//! Every variant that carries a callback is answered exactly once: with the result, with an error, or
//! by dropping the callback (the waiting side then answers `Stopped`). A message lost on a full queue
//! is refused at the sender (`Error::Busy`), never silently dropped.

use raft::SnapshotStatus;
use tokio::sync::oneshot;

use super::error::Error;
use crate::proto::{Region, Request};
use crate::raftstore::snapshot::VerifiedSnapshot;
use crate::raftstore::transport::RaftEnvelope;

pub type Callback<T> = oneshot::Sender<Result<T, Error>>;

/// The result of an applied write: the raft index of its entry, which is the revision of every key it
/// wrote (the HTTP ETag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteResponse {
    pub revision: u64,
}

/// A proposed split, with its ids.
#[derive(Debug, Clone)]
pub struct SplitPlan {
    pub split_key: Vec<u8>,
    pub new_region_id: u64,
    pub new_peer_ids: Vec<u64>,
}

/// One local peer as `/status` shows it.
#[derive(Debug, Clone)]
pub struct PeerStatus {
    pub region: Region,
    pub peer_id: u64,
    /// leader, follower, candidate or precandidate
    pub role: String,
    pub leader_peer_id: u64,
    pub leader_store_id: Option<u64>,
    pub term: u64,
    pub commit_index: u64,
    pub applied_index: u64,
    pub truncated_index: u64,
    pub last_index: u64,
    pub pending_proposals: usize,
    /// Keys + values in the region, as of the last split check (leaders only).
    pub approximate_size: Option<u64>,
    pub approximate_keys: u64,
    /// Leaders only: peers still catching up (they need a snapshot, or are receiving one).
    pub pending_peers: Vec<crate::proto::Peer>,
    /// False for a peer created by a message and still waiting for its first snapshot: it holds no
    /// data and its region has no range yet.
    pub initialized: bool,
}

/// The answer to [`StoreMsg::ChangedStatus`].
#[derive(Debug, Clone)]
pub struct ChangedStatus {
    /// Ask with this as `since` next time for what changed after this answer.
    pub generation: u64,
    pub peers: Vec<PeerStatus>,
}

pub enum StoreMsg {
    /// Client writes to propose as one raft entry. Answered once the entry is applied (or fails).
    Write { region_id: u64, requests: Vec<Request>, callback: Callback<WriteResponse> },
    /// A linearizable-read barrier: answered once the region's applied index has reached the leader's
    /// commit index as of the message's arrival. The caller then reads LMDB itself.
    ReadIndex { region_id: u64, callback: Callback<()> },
    /// A snapshot of every local peer's raft state, for `/status` and `/ready`.
    Status { callback: Callback<Vec<PeerStatus>> },
    /// The status of every local peer a round visited after generation `since` (every peer for 0),
    /// plus those `include` picks: what a heartbeat needs, without building 10,000 statuses.
    ChangedStatus { since: u64, include: Box<dyn Fn(u64) -> bool + Send>, callback: Callback<ChangedStatus> },
    /// A raft message from a peer on another store. Lost on a full inbox, like on a network: raft
    /// retries.
    Raft(Box<RaftEnvelope>),
    /// A snapshot message from a peer on another store, with its data decoded and checksummed by the
    /// inbox (the message itself no longer carries the bytes). A `Raft` message holding a snapshot
    /// did not pass the inbox, and is refused.
    Snapshot(Box<RaftEnvelope>, Box<VerifiedSnapshot>),
    /// Whether a snapshot this store sent arrived, reported by the transport for every snapshot:
    /// raft keeps a follower paused in snapshot state until it hears the outcome.
    SnapshotStatus { region_id: u64, to_peer_id: u64, status: SnapshotStatus },
    /// Create this store's peer of a region placement bootstrapped (a no-op if it exists).
    CreatePeer { region: Region, callback: Callback<()> },
    /// A split check's measurement of a region (and the split to propose, with its ids).
    SplitCheckResult { region_id: u64, epoch: crate::proto::RegionEpoch, size: u64, keys: u64, plan: Option<SplitPlan> },
    /// Hand this region's leadership to its peer on `to_store_id` (answered at once; the transfer
    /// completes, or is abandoned after an election timeout, on its own).
    TransferLeader { region_id: u64, to_store_id: u64, callback: Callback<()> },
    /// Add or remove one peer of a region (this store must lead it). Answered once the change is
    /// applied; a change already made (the peer is there, or gone) is answered at once.
    ChangePeer { region_id: u64, change: crate::proto::ChangePeerRequest, callback: Callback<()> },
    /// Split a region now (an operator or an admin asked): at `split_key`, or in the middle.
    SplitRegion { region_id: u64, split_key: Option<Vec<u8>>, callback: Callback<()> },
    /// The transport could not deliver messages to this peer (its store is down or unknown).
    PeerUnreachable { region_id: u64, to_peer_id: u64 },
    /// Stop the raftstore loop after this round.
    Shutdown,
}

impl StoreMsg {
    /// The region this message is for, if any (a raft message is routed by the store itself).
    pub fn region_id(&self) -> Option<u64> {
        match self {
            StoreMsg::Write { region_id, .. }
            | StoreMsg::ReadIndex { region_id, .. }
            | StoreMsg::SplitCheckResult { region_id, .. }
            | StoreMsg::TransferLeader { region_id, .. }
            | StoreMsg::SplitRegion { region_id, .. }
            | StoreMsg::ChangePeer { region_id, .. }
            | StoreMsg::PeerUnreachable { region_id, .. }
            | StoreMsg::SnapshotStatus { region_id, .. } => Some(*region_id),
            StoreMsg::CreatePeer { region, .. } => Some(region.region_id),
            StoreMsg::Raft(_)
            | StoreMsg::Snapshot(..)
            | StoreMsg::Status { .. }
            | StoreMsg::ChangedStatus { .. }
            | StoreMsg::Shutdown => None,
        }
    }
}
