//! A store's peers come and go: started when a split creates their region, created empty by the
//! first message for a region this store was added to, and destroyed (data deleted, tombstone kept)
//! once removed. Also the checks that keep a store's regions from overlapping and stale peers from
//! lingering: snapshots that do not fit are refused, removed peers are told so.

use raft::eraftpb::MessageType;

use super::Store;
use crate::raftstore::error::Error;
use crate::raftstore::peer::Peer;
use crate::raftstore::region_map::ranges_overlap;
use crate::raftstore::transport::RaftEnvelope;

impl Store {
    /// Starts this store's peer of a region split off a local one (its state was written with the
    /// split). If this store led the parent, the new peer campaigns at once: the region's other
    /// peers are applying the same split, and a leader should not wait an election timeout.
    pub(super) fn start_split_peer(&mut self, region: crate::proto::Region, campaign: bool) {
        let region_id = region.region_id;
        match self.peers.get(&region_id) {
            // A message of the new region arrived before the split applied here and created an empty
            // peer; the split's state (written with the split, keeping that peer's vote) replaces it.
            Some(peer) if !peer.is_initialized() => {
                self.peers.remove(&region_id);
                self.activity.forget(region_id);
                self.status_changes.forget(region_id);
                let repaired = self.engine.write_txn().and_then(|mut txn| {
                    crate::raftstore::peer_storage::PeerStorage::repair_split_state(&self.engine, &mut txn, region_id)?;
                    self.engine.commit(txn)
                });
                if let Err(err) = repaired {
                    tracing::error!(region_id, error = %err, "cannot start the peer of a split-off region");
                    return;
                }
            }
            Some(_) => return,
            None => {}
        }
        match self.add_peer(region) {
            Ok(peer) if campaign => peer.campaign(),
            Ok(_) => {}
            Err(err) => tracing::error!(region_id, error = %err, "cannot start the peer of a split-off region"),
        }
    }

    /// Loads this store's peer of `region` (its state is in LMDB) and starts routing to it.
    fn add_peer(&mut self, region: crate::proto::Region) -> Result<&mut Peer, crate::storage::StorageError> {
        let region_id = region.region_id;
        let peer = Peer::load(
            self.engine.clone(),
            region.clone(),
            self.cfg.store_id,
            self.cfg.peer.clone(),
            self.metrics.clone(),
            &self.logger,
        )?;
        self.regions.insert(region);
        self.activity.add(region_id);
        Ok(self.peers.entry(region_id).or_insert(Box::new(peer)))
    }

    /// Writes a new region's initial state and starts its peer, unless this store already has it.
    /// A region this store destroyed its peer of is never created again from placement's table:
    /// a new peer of it would have a new id, and start empty.
    pub(super) fn create_peer(&mut self, region: crate::proto::Region) -> Result<(), Error> {
        let region_id = region.region_id;
        if self.peers.contains_key(&region_id) {
            return Ok(());
        }
        if !region.peers.iter().any(|p| p.store_id == self.cfg.store_id) {
            let reason = format!("region {region_id} lists no peer on store {}", self.cfg.store_id);
            return Err(Error::InvalidChange { reason });
        }
        let txn = self.engine.read_txn()?;
        let known = self.engine.region_state(&txn, region_id)?;
        drop(txn);
        match known {
            Some(state) if state.state == crate::proto::PeerState::Tombstone as i32 => {
                tracing::info!(store_id = self.cfg.store_id, region_id, "not re-creating a destroyed peer");
                return Ok(());
            }
            Some(_) => {}
            None => {
                let mut txn = self.engine.write_txn()?;
                crate::raftstore::peer_storage::PeerStorage::write_initial_state(&self.engine, &mut txn, &region)?;
                self.engine.commit(txn)?;
            }
        }
        self.add_peer(region)?;
        tracing::info!(store_id = self.cfg.store_id, region_id, "created a peer");
        Ok(())
    }

    /// Whether a snapshot may be applied here: it must list its recipient as a member, and its range
    /// must not overlap another region this store holds (that region would have to split or move
    /// first; the leader will offer the snapshot again), nor that of another snapshot let in this
    /// round. A snapshot that fits is counted as let in.
    ///
    /// The second rule matters when a store catches up on a parent region and the region split off
    /// it, both empty here: the parent's snapshot may predate the split (made before it, delivered
    /// after) and cover the new region's range. Were both applied in one round, the parent would then apply its
    /// own log over the new region's keys and, at the split, write the new region's initial state
    /// over the state its snapshot gave it (a raft state behind the applied index: raft-rs refuses
    /// to restart on it).
    pub(super) fn snapshot_fits(&mut self, envelope: &RaftEnvelope, region: &crate::proto::Region) -> bool {
        if !region.peers.iter().any(|p| p.peer_id == envelope.to_peer.peer_id) {
            tracing::info!(region_id = region.region_id, "refusing a snapshot that does not list its recipient");
            return false;
        }
        let overlapping = self.regions.overlapping(region);
        if !overlapping.is_empty() {
            tracing::info!(
                region_id = region.region_id,
                overlapping = ?overlapping.iter().map(|r| r.region_id).collect::<Vec<_>>(),
                "refusing a snapshot that overlaps regions this store holds"
            );
            return false;
        }
        let accepted = |r: &&crate::proto::Region| r.region_id != region.region_id && ranges_overlap(r, region);
        if let Some(other) = self.snapshots_accepted.iter().find(accepted) {
            tracing::info!(
                region_id = region.region_id,
                overlapping = other.region_id,
                "refusing a snapshot that overlaps another snapshot being applied"
            );
            return false;
        }
        self.snapshots_accepted.push(region.clone());
        true
    }

    /// Creates the empty peer a message is addressed to, unless this store's record of the region
    /// shows the message is stale: addressed to the peer this store destroyed, or an older one (a
    /// late message; peer ids only grow, and a re-added replica gets a new id), or sent under a
    /// membership no newer than the one the destroyed peer knew.
    pub(super) fn create_peer_for(&mut self, envelope: &RaftEnvelope) -> bool {
        let region_id = envelope.region_id;
        let known = self.engine.read_txn().and_then(|txn| self.engine.region_state(&txn, region_id));
        match known {
            Ok(Some(state)) if state.state == crate::proto::PeerState::Tombstone as i32 => {
                if is_for_destroyed_peer(&state, self.cfg.store_id, envelope) {
                    // The sender may be stale too: removed before our own removal, when every member
                    // it knows may have left since. If our record shows it was no longer a member, say
                    // so, or it could wait forever for an answer from members that are all gone.
                    let region = state.region.unwrap_or_default();
                    if is_stale_sender(&region, envelope) {
                        self.reply_tombstone(region, envelope.to_peer.peer_id, envelope);
                    }
                    tracing::debug!(
                        region_id,
                        to_peer_id = envelope.to_peer.peer_id,
                        "dropping a message for a destroyed peer"
                    );
                    return false;
                }
            }
            Ok(Some(_)) => {
                // A live record without a running peer: a split that is still being applied.
                return false;
            }
            Ok(None) => {}
            Err(err) => {
                tracing::error!(region_id, error = %err, "cannot read a region's state");
                return false;
            }
        }
        match Peer::replicate(
            self.engine.clone(),
            region_id,
            envelope.to_peer,
            self.cfg.peer.clone(),
            self.metrics.clone(),
            &self.logger,
        ) {
            Ok(peer) => {
                tracing::info!(
                    store_id = self.cfg.store_id,
                    region_id,
                    peer_id = envelope.to_peer.peer_id,
                    "created an empty peer; waiting for a snapshot"
                );
                self.peers.insert(region_id, Box::new(peer));
                self.activity.add(region_id);
                self.maybe_empty.insert(region_id);
                true
            }
            Err(err) => {
                tracing::error!(region_id, error = %err, "cannot create a peer");
                false
            }
        }
    }

    /// Answers a message this store has no peer to hand to (a response, or an empty peer's probe,
    /// see [`super::empty_peers`]) with a tombstone if this store destroyed its own peer of the region
    /// under a membership that no longer listed the sender, newer than the sender's: the sender was
    /// removed, and the members it knows may all have left since.
    pub(super) fn reply_if_removed_before_destroyed(&mut self, envelope: &RaftEnvelope) {
        let known = self.engine.read_txn().and_then(|txn| self.engine.region_state(&txn, envelope.region_id));
        let Ok(Some(state)) = known else { return };
        if state.state != crate::proto::PeerState::Tombstone as i32 {
            return;
        }
        let region = state.region.unwrap_or_default();
        if is_stale_sender(&region, envelope) {
            self.reply_tombstone(region, envelope.to_peer.peer_id, envelope);
        }
    }

    /// Tells a peer that is no longer a member of `region` (as of its current epoch) to destroy itself.
    pub(super) fn reply_tombstone(&mut self, region: crate::proto::Region, local_peer_id: u64, stale: &RaftEnvelope) {
        tracing::debug!(
            region_id = region.region_id,
            stale_peer = stale.from_peer.peer_id,
            "telling a removed peer it is gone"
        );
        let from_peer = crate::proto::Peer { peer_id: local_peer_id, store_id: self.cfg.store_id };
        let reply =
            RaftEnvelope::tombstone(region.region_id, from_peer, stale.from_peer, region.epoch.unwrap_or_default());
        self.control_outbox.push(reply);
    }

    /// A member of the region (or placement, on its behalf) says our peer was removed: destroy it if
    /// the message is addressed to it and its own membership is really older. The sender sends this
    /// only when its membership, newer than the one our peer's message carried, no longer lists our
    /// peer; since a removed peer id is never added back, that is proof the peer was removed.
    pub(super) fn on_tombstone_message(&mut self, envelope: &RaftEnvelope) {
        let Some(peer) = self.peers.get(&envelope.region_id) else { return };
        let local_conf_ver = peer.region().epoch.map_or(0, |e| e.conf_ver);
        if peer.peer_id() != envelope.to_peer.peer_id || envelope.region_epoch.conf_ver <= local_conf_ver {
            return;
        }
        tracing::info!(
            region_id = envelope.region_id,
            peer_id = peer.peer_id(),
            conf_ver = local_conf_ver,
            their_conf_ver = envelope.region_epoch.conf_ver,
            "removed from the region while away"
        );
        self.destroy_peer(envelope.region_id);
    }

    /// Destroys this store's peer of a region it is no longer a member of: its range's data, log and
    /// raft state are deleted and the region is recorded as a tombstone, in one transaction.
    pub(super) fn destroy_peer(&mut self, region_id: u64) {
        if !self.peers.contains_key(&region_id) {
            return;
        }
        // Nothing of the peer may be written after its tombstone: the rounds in flight go first.
        if let Err(err) = self.drain() {
            self.fatal = Some(err);
            return;
        }
        let Some(mut peer) = self.peers.remove(&region_id) else { return };
        self.activity.forget(region_id);
        peer.fail_all();
        let initialized = peer.is_initialized();
        let (region, peer_id) = (peer.region().clone(), peer.peer_id());
        drop(peer);
        if initialized {
            self.regions.remove(region_id);
        }
        if let Err(err) = self.write_tombstone(&region, initialized, peer_id) {
            tracing::error!(region_id, error = %err, "cannot destroy a removed peer; it will be retried at restart");
            return;
        }
        self.metrics.raft_peers_destroyed.inc();
        self.refresh_usage();
    }

    /// Deletes a removed peer's data (if it held any), log and states; records the region as a
    /// tombstone with the destroyed peer's id, which no message may bring back (`0`: unknown, for a
    /// removal applied by an older fekv).
    ///
    /// An empty peer has no data or log, and its raft state (term and vote) is kept: a newer peer of
    /// the region on this store starts from it, so this store never votes twice in one term.
    pub(super) fn write_tombstone(
        &self,
        region: &crate::proto::Region,
        initialized: bool,
        peer_id: u64,
    ) -> Result<(), crate::storage::StorageError> {
        let region_id = region.region_id;
        let mut txn = self.engine.write_txn()?;
        let mut deleted = 0;
        if initialized {
            deleted = self.engine.delete_data_range(&mut txn, &region.start_key, &region.end_key)?;
            self.engine.delete_entries(&mut txn, region_id, 0, u64::MAX)?;
            self.engine.delete_peer_states(&mut txn, region_id)?;
        }
        // Ids only grow, but an older record may know a later one (this is defensive: the store never
        // creates a peer at or below a recorded id).
        let recorded = self.engine.region_state(&txn, region_id)?.map_or(0, |s| s.removed_peer_id);
        let state = crate::proto::RegionLocalState {
            region: Some(region.clone()),
            state: crate::proto::PeerState::Tombstone as i32,
            removed_peer_id: peer_id.max(recorded),
        };
        self.engine.put_region_state(&mut txn, &state)?;
        self.engine.commit(txn)?;
        tracing::info!(store_id = self.cfg.store_id, region_id, peer_id, deleted_records = deleted, "peer destroyed");
        Ok(())
    }
}

/// Whether a message comes from a peer that `region` (this store's initialized view) no longer lists,
/// sent under an older membership: the sender was removed and has not heard. An empty peer's messages
/// carry no membership at all (conf_ver 0): it may be a new member this store has not heard of yet,
/// so it is never judged stale from them.
pub(super) fn is_stale_sender(region: &crate::proto::Region, envelope: &RaftEnvelope) -> bool {
    let local_conf_ver = region.epoch.map_or(0, |e| e.conf_ver);
    !region.peers.is_empty()
        && envelope.region_epoch.conf_ver > 0
        && envelope.region_epoch.conf_ver < local_conf_ver
        && !region.peers.iter().any(|p| p.peer_id == envelope.from_peer.peer_id)
}

/// Whether a message for a region this store holds a tombstone of is addressed to the destroyed peer
/// or an older one, or sent under a membership no newer than the destroyed peer's own view: either
/// way it predates the destruction and must not create a peer. A record without the destroyed id
/// (written by an older fekv) falls back on the peer it lists on this store.
pub(super) fn is_for_destroyed_peer(
    tombstone: &crate::proto::RegionLocalState,
    store_id: u64,
    envelope: &RaftEnvelope,
) -> bool {
    let region = tombstone.region.as_ref();
    let destroyed_peer_id = match tombstone.removed_peer_id {
        0 => region.and_then(|r| r.peers.iter().find(|p| p.store_id == store_id)).map_or(0, |p| p.peer_id),
        peer_id => peer_id,
    };
    let tombstone_conf_ver = region.and_then(|r| r.epoch).map_or(0, |e| e.conf_ver);
    envelope.to_peer.peer_id <= destroyed_peer_id || envelope.region_epoch.conf_ver <= tombstone_conf_ver
}

/// Messages that may create an empty peer here: ones a leader or a candidate sends to a member.
pub(super) fn may_create_peer(msg_type: MessageType) -> bool {
    use MessageType::*;
    matches!(msg_type, MsgAppend | MsgHeartbeat | MsgSnapshot | MsgRequestVote | MsgRequestPreVote)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Peer, PeerState, Region, RegionEpoch, RegionLocalState};

    fn tombstone(conf_ver: u64, peers: Vec<Peer>, removed_peer_id: u64) -> RegionLocalState {
        let epoch = Some(RegionEpoch { conf_ver, version: 1 });
        let region = Region { region_id: 1, epoch, peers, ..Default::default() };
        RegionLocalState { region: Some(region), state: PeerState::Tombstone as i32, removed_peer_id }
    }

    fn message_to(peer_id: u64, conf_ver: u64) -> RaftEnvelope {
        let from = Peer { peer_id: 1, store_id: 1 };
        let to = Peer { peer_id, store_id: 3 };
        RaftEnvelope::new(1, from, to, RegionEpoch { conf_ver, version: 1 }, raft::eraftpb::Message::default())
    }

    #[test]
    fn messages_for_the_destroyed_id_or_an_older_one_are_stale_whatever_their_epoch() {
        let state = tombstone(4, vec![Peer { peer_id: 1, store_id: 1 }], 13);
        assert!(is_for_destroyed_peer(&state, 3, &message_to(13, 9)));
        assert!(is_for_destroyed_peer(&state, 3, &message_to(12, 9)));
        // A newer peer of the region on this store, under a newer membership: a real addition.
        assert!(!is_for_destroyed_peer(&state, 3, &message_to(20, 6)));
        // Sent under a membership no newer than the tombstone's: late, whatever the id.
        assert!(is_for_destroyed_peer(&state, 3, &message_to(20, 4)));
    }

    #[test]
    fn a_record_without_the_destroyed_id_falls_back_on_the_peer_it_lists_here() {
        let listed = tombstone(4, vec![Peer { peer_id: 1, store_id: 1 }, Peer { peer_id: 13, store_id: 3 }], 0);
        assert!(is_for_destroyed_peer(&listed, 3, &message_to(13, 9)));
        assert!(!is_for_destroyed_peer(&listed, 3, &message_to(20, 9)));
        // Nothing known but the epoch (an empty peer's tombstone from an older fekv).
        let unknown = tombstone(0, Vec::new(), 0);
        assert!(!is_for_destroyed_peer(&unknown, 3, &message_to(13, 9)));
    }
}
