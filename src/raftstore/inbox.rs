//! The raftstore's inbound port: where a transport delivers what it receives for this store, without
//! knowing the store's own message type.

use crossbeam_channel::Sender;
use raft::SnapshotStatus;

use super::msg::StoreMsg;
use super::transport::RaftEnvelope;

/// Where a transport delivers what it receives for this store, and what it learns about sends.
/// Everything is best effort: a full inbox drops, as a congested network would, and raft resends.
#[derive(Clone)]
pub struct RaftInbox(Sender<StoreMsg>);

impl From<Sender<StoreMsg>> for RaftInbox {
    fn from(sender: Sender<StoreMsg>) -> Self {
        RaftInbox(sender)
    }
}

impl RaftInbox {
    /// A raft message from a peer on another store; `false` if the inbox is full or closed.
    pub fn deliver(&self, envelope: RaftEnvelope) -> bool {
        self.0.try_send(StoreMsg::Raft(Box::new(envelope))).is_ok()
    }

    /// Whether a snapshot this store sent arrived: raft keeps a follower paused in snapshot state
    /// until it hears the outcome, so a transport reports it for every snapshot.
    pub fn snapshot_status(&self, region_id: u64, to_peer_id: u64, status: SnapshotStatus) {
        let _ = self.0.try_send(StoreMsg::SnapshotStatus { region_id, to_peer_id, status });
    }

    /// Messages to this peer could not be delivered (its store is down or unknown).
    pub fn peer_unreachable(&self, region_id: u64, to_peer_id: u64) {
        let _ = self.0.try_send(StoreMsg::PeerUnreachable { region_id, to_peer_id });
    }
}
