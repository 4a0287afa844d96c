//! The raftstore's inbound port: where a transport delivers what it receives for this store, without
//! knowing the store's own message type.
//!
//! An incoming snapshot is verified here, on the delivering transport's thread (see
//! [`super::snapshot`]): the raftstore thread never decodes or checksums one.

use crossbeam_channel::Sender;
use prometheus::IntCounter;
use raft::eraftpb::MessageType;
use raft::SnapshotStatus;

use super::msg::StoreMsg;
use super::snapshot::VerifiedSnapshot;
use super::transport::RaftEnvelope;
use crate::storage::StorageError;

/// Where a transport delivers what it receives for this store, and what it learns about sends.
/// Everything is best effort: a full inbox drops, as a congested network would, and raft resends.
#[derive(Clone)]
pub struct RaftInbox {
    sender: Sender<StoreMsg>,
    /// Counts snapshots refused as damaged (`fekv_raft_snapshots_total{event="rejected"}`), if the
    /// inbox belongs to a node with metrics.
    damaged_snapshots: Option<IntCounter>,
}

/// Why a delivery did not reach the store.
#[derive(Debug, thiserror::Error)]
pub enum Refused {
    #[error("the store's inbox is full or closed")]
    Full,
    #[error("damaged snapshot for region {region_id}: {source}")]
    DamagedSnapshot { region_id: u64, source: StorageError },
}

impl From<Sender<StoreMsg>> for RaftInbox {
    fn from(sender: Sender<StoreMsg>) -> Self {
        RaftInbox { sender, damaged_snapshots: None }
    }
}

impl RaftInbox {
    /// An inbox that counts the damaged snapshots it refuses on `damaged_snapshots`.
    pub fn counting(sender: Sender<StoreMsg>, damaged_snapshots: IntCounter) -> Self {
        RaftInbox { sender, damaged_snapshots: Some(damaged_snapshots) }
    }

    /// A raft message from a peer on another store. A snapshot is verified first, and refused if it
    /// is damaged.
    pub fn deliver(&self, envelope: RaftEnvelope) -> Result<(), Refused> {
        let region_id = envelope.region_id;
        let msg = store_msg(envelope).map_err(|source| {
            if let Some(counter) = &self.damaged_snapshots {
                counter.inc();
            }
            tracing::error!(region_id, error = %source, "refusing a damaged snapshot");
            Refused::DamagedSnapshot { region_id, source }
        })?;
        self.sender.try_send(msg).map_err(|_| Refused::Full)
    }

    /// Whether a snapshot this store sent arrived: raft keeps a follower paused in snapshot state
    /// until it hears the outcome, so a transport reports it for every snapshot.
    pub fn snapshot_status(&self, region_id: u64, to_peer_id: u64, status: SnapshotStatus) {
        let _ = self.sender.try_send(StoreMsg::SnapshotStatus { region_id, to_peer_id, status });
    }

    /// Messages to this peer could not be delivered (its store is down or unknown).
    pub fn peer_unreachable(&self, region_id: u64, to_peer_id: u64) {
        let _ = self.sender.try_send(StoreMsg::PeerUnreachable { region_id, to_peer_id });
    }
}

/// The store's message for an incoming raft message: a snapshot's data decoded and checksummed (an
/// error if it is damaged), and then dropped from the raft message, which raft needs only for its
/// metadata.
pub fn store_msg(mut envelope: RaftEnvelope) -> Result<StoreMsg, StorageError> {
    if envelope.message.get_msg_type() != MessageType::MsgSnapshot {
        return Ok(StoreMsg::Raft(Box::new(envelope)));
    }
    let snapshot = VerifiedSnapshot::verify(envelope.message.get_snapshot())?;
    envelope.message.mut_snapshot().data = Default::default();
    Ok(StoreMsg::Snapshot(Box::new(envelope), Box::new(snapshot)))
}
