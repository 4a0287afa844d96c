//! Raft messages between this store's peers and other stores': what arrives from the transport
//! (checked for staleness, snapshots checked to fit, empty peers created), and the peers' queued
//! messages handed to the transport after a round.

use raft::eraftpb::MessageType;

use super::lifecycle::{is_stale_sender, may_create_peer};
use super::Store;
use crate::raftstore::snapshot::VerifiedSnapshot;
use crate::raftstore::transport::RaftEnvelope;

impl Store {
    /// A message from a peer on another store; a snapshot comes with its data, verified by the inbox.
    pub(super) fn on_raft_message(&mut self, envelope: RaftEnvelope, snapshot: Option<Box<VerifiedSnapshot>>) {
        let msg_type = envelope.message.get_msg_type();
        self.metrics.raft_messages_received.with_label_values(&[msg_type_label(msg_type)]).inc();
        if envelope.to_peer.store_id != self.cfg.store_id {
            tracing::warn!(
                store_id = self.cfg.store_id,
                to_store = envelope.to_peer.store_id,
                "dropping a message for another store"
            );
            return;
        }
        // The inbox refused damaged snapshots already; one that did not come through it is unverified.
        let snapshot = match (msg_type == MessageType::MsgSnapshot, snapshot) {
            (true, None) => {
                self.metrics.raft_snapshots.with_label_values(&["rejected"]).inc();
                tracing::error!(region_id = envelope.region_id, "refusing a snapshot that did not pass the inbox");
                return;
            }
            (true, Some(snapshot)) => {
                self.metrics.raft_snapshots.with_label_values(&["received"]).inc();
                Some(snapshot)
            }
            (false, _) => None,
        };
        if envelope.is_tombstone {
            self.on_tombstone_message(&envelope);
            return;
        }
        let region_id = envelope.region_id;
        let to_peer_id = envelope.to_peer.peer_id;
        if let Some(peer) = self.peers.get(&region_id) {
            if peer.peer_id() < to_peer_id {
                // The region was given a new peer on this store: ours was removed while it could not
                // hear of it. That is proof: a region holds one peer per store, so the new one was
                // added after ours was removed, and a removed id is never added back.
                tracing::info!(region_id, stale_peer_id = peer.peer_id(), to_peer_id, "replacing a stale peer");
                self.destroy_peer(region_id);
            }
        }
        if let Some(peer) = self.peers.get(&region_id) {
            if is_stale_sender(peer.region(), &envelope) {
                self.reply_tombstone(peer.region().clone(), peer.peer_id(), &envelope);
                return;
            }
            // After the stale-sender check: an empty peer's probe may address a member's older id.
            if peer.peer_id() > to_peer_id {
                tracing::debug!(region_id, to_peer_id, "dropping a message for an older peer of this store");
                return;
            }
        }
        if snapshot.as_ref().is_some_and(|snapshot| !self.snapshot_fits(&envelope, &snapshot.region)) {
            self.metrics.raft_snapshots.with_label_values(&["rejected"]).inc();
            return;
        }
        if !self.peers.contains_key(&region_id) {
            if !may_create_peer(msg_type) {
                self.reply_if_removed_before_destroyed(&envelope);
                return;
            }
            if !self.create_peer_for(&envelope) {
                return;
            }
        }
        if self.peers.get(&region_id).is_some_and(|p| !p.is_initialized()) {
            self.note_message_for_empty_peer(&envelope);
        }
        if self.peers.contains_key(&region_id) {
            self.step_raft_message(envelope, snapshot);
        }
    }

    /// Hands the queued messages of these peers (the only ones a round gave any) and the store's own to
    /// the transport, and flushes it. Failures go back to raft.
    pub(super) fn send_outboxes(&mut self, region_ids: &[u64]) {
        for envelope in std::mem::take(&mut self.control_outbox) {
            if let Err(err) = self.transport.send(envelope) {
                tracing::debug!(error = %err, "tombstone reply not sent");
            }
        }
        for region_id in region_ids {
            let Some(peer) = self.peers.get_mut(region_id) else { continue };
            for envelope in peer.take_outbox() {
                let msg_type = envelope.message.get_msg_type();
                let to_peer_id = envelope.to_peer.peer_id;
                match self.transport.send(envelope) {
                    Ok(()) => {
                        self.metrics.raft_messages_sent.with_label_values(&[msg_type_label(msg_type)]).inc();
                        if msg_type == MessageType::MsgSnapshot {
                            self.metrics.raft_snapshots.with_label_values(&["sent"]).inc();
                        }
                    }
                    Err(err) => {
                        self.metrics.raft_messages_dropped.with_label_values(&[msg_type_label(msg_type)]).inc();
                        tracing::debug!(region_id = peer.region_id(), to_peer_id, error = %err, "raft message not sent");
                        peer.on_send_failure(to_peer_id, msg_type);
                    }
                }
            }
        }
        self.transport.flush();
    }
}

/// A bounded label for a raft message type.
fn msg_type_label(msg_type: MessageType) -> &'static str {
    use MessageType::*;
    match msg_type {
        MsgAppend => "append",
        MsgAppendResponse => "append_response",
        MsgHeartbeat => "heartbeat",
        MsgHeartbeatResponse => "heartbeat_response",
        MsgRequestVote | MsgRequestPreVote => "vote",
        MsgRequestVoteResponse | MsgRequestPreVoteResponse => "vote_response",
        MsgSnapshot => "snapshot",
        MsgReadIndex | MsgReadIndexResp => "read_index",
        MsgTransferLeader | MsgTimeoutNow => "transfer_leader",
        _ => "other",
    }
}
