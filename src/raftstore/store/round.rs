//! One round's ready handling across every peer of the store: every ready taken first, then how the
//! round commits decided (see [`super::durability`]), then the peers' writes put into **one** LMDB
//! transaction, committed once (or not at all when only applies that can wait are left), and each
//! peer's ready finished after the commit.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use super::durability::RoundKind;
use super::Store;
use crate::raftstore::apply::LocalStore;
use crate::raftstore::peer::PendingReady;
use crate::raftstore::Error;

impl Store {
    /// One round's ready handling across every peer, with a single LMDB commit, or none when the
    /// round only has applies that can wait (see [`durability`]).
    pub(super) fn handle_round(&mut self) {
        self.metrics.raftstore_rounds.inc();
        // Every snapshot let in this round is applied below (or lost with a failed transaction, and
        // then sent again): from here on `regions` is what the next round's checks go by.
        self.snapshots_accepted.clear();
        for peer in self.peers.values_mut() {
            peer.issue_reads();
        }
        let now = Instant::now();
        let flush = std::mem::take(&mut self.apply_wanted) || self.deferral.due(now);
        // 1. Every ready first: whether any must be synced decides how the round commits.
        let mut readies = Vec::new();
        for (region_id, peer) in self.peers.iter_mut() {
            if peer.has_ready() || (flush && peer.has_pending_apply()) {
                readies.push((*region_id, peer.take_ready()));
            }
        }
        if readies.is_empty() {
            // A due round that found nothing pending anywhere stops the deferral's clock.
            self.deferral.after_round(RoundKind::Deferred, false, flush, now);
            if !self.control_outbox.is_empty() {
                self.send_outboxes();
            }
            return;
        }
        let needs_sync = readies.iter().any(|(_, ready)| ready.must_sync());
        let urgent = readies.iter().any(|(id, _)| self.peers[id].apply_urgent());
        let applies = readies.iter().any(|(id, _)| self.peers[id].has_pending_apply());
        let kind = self.deferral.decide(needs_sync, urgent, applies, now);
        if kind == RoundKind::Deferred {
            if applies {
                self.metrics.raftstore_deferred_rounds.inc();
            }
        } else {
            // The round commits anyway: every peer's deferred applies go into it too.
            let taken: BTreeSet<u64> = readies.iter().map(|(id, _)| *id).collect();
            for (region_id, peer) in self.peers.iter_mut() {
                if peer.has_pending_apply() && !taken.contains(region_id) {
                    readies.push((*region_id, peer.take_ready()));
                }
            }
        }
        let apply = kind != RoundKind::Deferred;
        // Whether this round saw every peer holding applies (a committed one takes them all in).
        let complete = apply || flush;
        // Each of these peers' readies was taken: if the transaction fails, each is rebuilt.
        let region_ids: Vec<u64> = readies.iter().map(|(id, _)| *id).collect();
        let engine = self.engine.clone();
        let mut pending: Vec<(u64, PendingReady)> = Vec::new();
        // A split applied this round must not start a peer this store has replaced already.
        let empty_peers: BTreeMap<u64, u64> = self
            .peers
            .iter()
            .filter(|(_, p)| !p.is_initialized())
            .map(|(region_id, p)| (*region_id, p.peer_id()))
            .collect();
        let local = LocalStore { store_id: self.cfg.store_id, empty_peers: &empty_peers };
        let result = (|| {
            let mut txn = engine.write_txn()?;
            for (region_id, ready) in readies {
                let peer = self.peers.get_mut(&region_id).expect("peer of a ready");
                pending.push((region_id, peer.collect_ready(ready, &mut txn, &local, apply)?));
            }
            // Leaders' appends and heartbeats leave now, so followers write while we fsync.
            self.send_outboxes();
            if !pending.iter().any(|(_, p)| p.wrote) {
                // Only reads, messages and deferred applies this round: nothing to commit, no fsync.
                drop(txn);
                return Ok(None);
            }
            let started = Instant::now();
            match kind {
                RoundKind::Durable => engine.commit(txn)?,
                // Nothing here is a log entry, a hard state or a vote (no ready had to be synced):
                // a system crash may undo this commit, and the synced log replays it.
                RoundKind::ApplyOnly => engine.commit_without_meta_sync(txn)?,
                RoundKind::Deferred => unreachable!("a deferred round writes nothing"),
            }
            let took = started.elapsed();
            self.metrics.storage_commit_duration.observe(took.as_secs_f64());
            Ok::<_, crate::storage::StorageError>(Some(took))
        })();
        match result {
            Ok(committed) => {
                let proposals: usize = pending.iter().map(|(_, p)| p.proposals_persisted).sum();
                if let Some(took) = committed {
                    self.batch_gate.on_commit(proposals, took);
                    let entries: usize = pending.iter().map(|(_, p)| p.entries_persisted).sum();
                    self.metrics.storage_commits.inc();
                    if kind == RoundKind::ApplyOnly {
                        self.metrics.storage_apply_only_commits.inc();
                    }
                    self.metrics.storage_entries_per_commit.observe(entries as f64);
                    self.refresh_usage();
                }
                let mut removed = Vec::new();
                let mut split_off = Vec::new();
                if proposals > 0 {
                    self.metrics.storage_proposals_per_commit.observe(proposals as f64);
                }
                let (mut still_pending, mut wanted) = (false, false);
                for (region_id, ready) in pending {
                    let peer = self.peers.get_mut(&region_id).expect("peer of a pending ready");
                    let committed = peer.post_commit(ready);
                    self.metrics.raft_applied_entries.inc_by(committed.applied as u64);
                    if committed.region_changed {
                        self.regions.insert(peer.region().clone());
                    }
                    if committed.removed_self {
                        removed.push(region_id);
                    }
                    if peer.has_pending_apply() {
                        still_pending = true;
                        wanted |= peer.apply_urgent();
                    }
                    let led_parent = peer.is_leader();
                    split_off.extend(committed.new_regions.into_iter().map(|region| (region, led_parent)));
                }
                self.deferral.after_round(kind, still_pending, complete, Instant::now());
                self.apply_wanted = wanted;
                // After every peer finished its ready: starting a split-off region may replace a peer
                // (an empty one created by an early message) whose ready was in this round.
                for (region, led_parent) in split_off {
                    self.start_split_peer(region, led_parent);
                }
                // Messages first: a leader removing itself still tells the others what committed.
                self.send_outboxes();
                for region_id in removed {
                    tracing::info!(store_id = self.cfg.store_id, region_id, "this peer was removed from its region");
                    self.destroy_peer(region_id);
                }
            }
            Err(err) => {
                self.metrics.storage_commit_failures.inc();
                tracing::error!(store_id = self.cfg.store_id, error = %err, "the round's LMDB transaction failed; rebuilding raft state from disk");
                let error = Error::from(err);
                drop(pending);
                for region_id in region_ids {
                    let peer = self.peers.get_mut(&region_id).expect("peer of a pending ready");
                    peer.recover_after_failed_write(&error, &self.logger);
                }
                // What these peers deferred is gone with their rebuilt raft state (raft hands it out
                // again); others' may still wait, so the clock goes on.
                self.deferral.after_round(RoundKind::Deferred, true, false, Instant::now());
                self.refresh_usage();
            }
        }
    }
}
