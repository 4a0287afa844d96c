//! What a request to the raftstore can end in, besides success. Each variant carries what the caller
//! needs to act on it (the leader to redirect to, the region to refresh, whether to retry); the REST
//! layer turns them into HTTP statuses in one place (`api::error`).

use std::sync::Arc;
use std::time::Duration;

use crate::proto::Region;
use crate::storage::StorageError;

#[derive(Debug, Clone, thiserror::Error)]
pub enum Error {
    #[error("this node does not lead region {region_id}{}", leader_hint(*.leader_store_id))]
    NotLeader { region_id: u64, leader_store_id: Option<u64> },
    #[error("region {region_id} is not on this node")]
    RegionNotFound { region_id: u64 },
    #[error("key is outside region {region_id}")]
    KeyNotInRegion { key: Vec<u8>, region_id: u64 },
    #[error("the region's epoch changed (split or membership change); refresh and retry")]
    EpochNotMatch { current_regions: Vec<Region> },
    #[error("the command lost its place in the log to a leader change; retry")]
    StaleCommand,
    #[error("raft dropped the proposal ({reason}); retry")]
    ProposalDropped { reason: &'static str },
    /// Refused before it reached the log, so a retry cannot apply it twice: the API retries it
    /// until the transfer ends (then the answer is a redirect to the new leader, or the write).
    #[error("the region's leadership is being transferred; retry")]
    TransferringLeader,
    #[error("precondition failed: the key's current revision is {}", current_revision.map_or("absent".to_string(), |r| r.to_string()))]
    PreconditionFailed { current_revision: Option<u64> },
    #[error("storage is nearly full: {used_bytes} of the {map_size}-byte LMDB map is in use; writes are refused until data is deleted or map_size is raised, reads still work")]
    StorageFull { used_bytes: u64, map_size: u64 },
    #[error("the disk is nearly full: {room_bytes} bytes left for {dir}, under the reserve of {reserve_bytes} kept for deletes and log compaction; writes are refused until data is deleted or space is freed, reads still work")]
    DiskFull { dir: String, room_bytes: u64, reserve_bytes: u64 },
    #[error("storage error: {0}")]
    Storage(Arc<StorageError>),
    #[error("the raftstore queue is full; retry shortly")]
    Busy,
    #[error("this node's peer of region {region_id} was removed before the command's outcome was known; it may or may not have been applied")]
    OutcomeUnknown { region_id: u64 },
    #[error("invalid membership change: {reason}")]
    InvalidChange { reason: String },
    #[error("the raftstore has stopped")]
    Stopped,
    #[error("no answer from raft within {waited:?}{}", if *.proposed { "; the write may or may not have been applied" } else { "" })]
    Timeout { waited: Duration, proposed: bool },
}

fn leader_hint(leader_store_id: Option<u64>) -> String {
    match leader_store_id {
        Some(store_id) => format!(" (its leader is on store {store_id})"),
        None => " (its leader is unknown)".into(),
    }
}

impl From<StorageError> for Error {
    fn from(err: StorageError) -> Self {
        match err {
            StorageError::Full { map_size } => Error::StorageFull { used_bytes: map_size, map_size },
            other => Error::Storage(Arc::new(other)),
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
