//! Empty peers that stop hearing from their region. A peer created by a message waits for its first
//! snapshot with no range and no members of its own, so it never campaigns and never sends anything
//! unasked. If its addition is undone before a snapshot reaches it, no member ever tells it, and
//! placement does not know of peers that hold no range: it would linger forever.
//!
//! So, like TiKV's stale-peer check, an empty peer that has heard from no leader for
//! [`PROBE_AFTER_ELECTIONS`] election timeouts asks the peers it heard from, once per election timeout,
//! under the newest membership their messages carried (one that listed it). A member whose newer
//! membership no longer lists it, or a store that destroyed its own peer of the region under such
//! a membership, answers with a tombstone, and the empty peer is destroyed: that is proof, since a
//! removed peer id is never added back. A member that still lists it ignores the probe (its type is
//! one raft-rs never steps from the network).

use std::collections::BTreeMap;

use raft::eraftpb::MessageType;

use super::Store;
use crate::proto::{Peer, RegionEpoch};
use crate::raftstore::transport::RaftEnvelope;

/// Election timeouts without a leader's message before an empty peer asks whether it was removed.
pub(super) const PROBE_AFTER_ELECTIONS: u64 = 10;

/// What reached one empty peer of this store.
pub(super) struct Heard {
    peer_id: u64,
    /// The newest epoch its messages carried: a membership that listed it.
    epoch: RegionEpoch,
    /// Who sent them (the region's leaders and candidates).
    senders: BTreeMap<u64, Peer>,
    /// Store ticks since a leader's message (append, heartbeat, snapshot) last reached it.
    ticks_without_leader: u64,
}

impl Store {
    /// This store's empty peers (region → peer id), from the regions that may hold one.
    pub(super) fn empty_peers(&mut self) -> BTreeMap<u64, u64> {
        let peers = &self.peers;
        self.maybe_empty.retain(|region_id| peers.get(region_id).is_some_and(|p| !p.is_initialized()));
        self.maybe_empty.iter().map(|region_id| (*region_id, peers[region_id].peer_id())).collect()
    }

    /// Notes a message for this store's empty peer of its region, before the peer handles it.
    pub(super) fn note_message_for_empty_peer(&mut self, envelope: &RaftEnvelope) {
        let to_peer_id = envelope.to_peer.peer_id;
        let heard = self.empty_peers_heard.entry(envelope.region_id).or_insert_with(|| Heard {
            peer_id: to_peer_id,
            epoch: RegionEpoch::default(),
            senders: BTreeMap::new(),
            ticks_without_leader: 0,
        });
        if heard.peer_id != to_peer_id {
            return;
        }
        let epoch = envelope.region_epoch;
        heard.epoch.conf_ver = heard.epoch.conf_ver.max(epoch.conf_ver);
        heard.epoch.version = heard.epoch.version.max(epoch.version);
        heard.senders.insert(envelope.from_peer.peer_id, envelope.from_peer);
        use MessageType::*;
        if matches!(envelope.message.get_msg_type(), MsgAppend | MsgHeartbeat | MsgSnapshot) {
            heard.ticks_without_leader = 0;
        }
    }

    /// Once a tick: forgets peers that were filled or destroyed, and has every empty peer that has
    /// gone without a leader for long enough ask the peers it heard from (sent with the next flush).
    pub(super) fn probe_leaderless_empty_peers(&mut self) {
        let peers = &self.peers;
        self.empty_peers_heard.retain(|region_id, heard| {
            peers.get(region_id).is_some_and(|p| !p.is_initialized() && p.peer_id() == heard.peer_id)
        });
        let election_ticks = (self.cfg.peer.election_ticks as u64).max(1);
        let store_id = self.cfg.store_id;
        for (region_id, heard) in &mut self.empty_peers_heard {
            heard.ticks_without_leader += 1;
            let waited = heard.ticks_without_leader;
            if waited < PROBE_AFTER_ELECTIONS * election_ticks || waited % election_ticks != 0 {
                continue;
            }
            if waited == PROBE_AFTER_ELECTIONS * election_ticks {
                tracing::info!(
                    region_id,
                    peer_id = heard.peer_id,
                    conf_ver = heard.epoch.conf_ver,
                    "an empty peer has heard from no leader for a while; asking whether it was removed"
                );
            }
            let from_peer = Peer { peer_id: heard.peer_id, store_id };
            for to_peer in heard.senders.values() {
                let mut message = raft::eraftpb::Message::default();
                message.set_msg_type(MessageType::MsgCheckQuorum);
                (message.from, message.to) = (from_peer.peer_id, to_peer.peer_id);
                self.control_outbox.push(RaftEnvelope::new(*region_id, from_peer, *to_peer, heard.epoch, message));
            }
        }
    }
}
