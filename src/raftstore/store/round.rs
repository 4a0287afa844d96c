//! One round's ready handling across the peers with work (see [`super::active`]): every ready taken
//! first, then how the round commits decided (see [`super::durability`]), then the peers' writes put
//! into **one** LMDB transaction, committed once (or not at all when only applies that can wait are
//! left), and each peer's ready finished after the commit.
//!
//! A round visits the active peers, plus, when it commits or the deferral is due or wanted, every
//! peer holding deferred applies (`Activity::applying`, kept by this module): never a scan of all.

use std::collections::BTreeSet;
use std::time::Instant;

use super::durability::RoundKind;
use super::Store;
use crate::raftstore::apply::LocalStore;
use crate::raftstore::error::Error;
use crate::raftstore::peer::PendingReady;

impl Store {
    /// One round's ready handling across the peers with work, with a single LMDB commit, or none
    /// when the round only has applies that can wait (see [`durability`]). An error is a peer that
    /// cannot rebuild its raft state after a failed transaction: the loop ends with it.
    pub(super) fn handle_round(&mut self) -> Result<(), crate::storage::StorageError> {
        self.metrics.raftstore_rounds.inc();
        // Every snapshot let in this round is applied below (or lost with a failed transaction, and
        // then sent again): from here on `regions` is what the next round's checks go by.
        self.snapshots_accepted.clear();
        let round = self.activity.take_round();
        self.status_changes.record(round.iter().copied());
        self.metrics.raftstore_peers_per_round.observe(round.len() as f64);
        for region_id in &round {
            if let Some(peer) = self.peers.get_mut(region_id) {
                peer.issue_reads();
            }
        }
        let now = Instant::now();
        let flush = std::mem::take(&mut self.apply_wanted) || self.deferral.due(now);
        // 1. Every ready first: whether any must be synced decides how the round commits. A due or
        //    wanted deferral takes in every peer holding applies, visited or not.
        let mut readies = Vec::new();
        for region_id in &round {
            let Some(peer) = self.peers.get_mut(region_id) else { continue };
            if peer.has_ready() || (flush && peer.has_pending_apply()) {
                readies.push((*region_id, peer.take_ready()));
            }
        }
        if flush {
            self.take_applying_readies(&mut readies);
        }
        if readies.is_empty() {
            // A due round that found nothing pending anywhere stops the deferral's clock.
            self.deferral.after_round(RoundKind::Deferred, false, flush, now);
            // Messages queued outside a ready (hibernation's signals) and the store's own.
            self.send_outboxes(&round);
            return Ok(());
        }
        let needs_sync = readies.iter().any(|(_, ready)| ready.must_sync());
        let urgent = readies.iter().any(|(id, _)| self.peers[id].apply_urgent());
        let applies = readies.iter().any(|(id, _)| self.peers[id].has_pending_apply());
        let kind = self.deferral.decide(needs_sync, urgent, applies, now);
        if kind == RoundKind::Deferred {
            if applies {
                self.metrics.raftstore_deferred_rounds.inc();
            }
        } else if !flush {
            // The round commits anyway: every peer's deferred applies go into it too.
            self.take_applying_readies(&mut readies);
        }
        let apply = kind != RoundKind::Deferred;
        // Whether this round saw every peer holding applies (a committed one takes them all in).
        let complete = apply || flush;
        // Each of these peers' readies was taken: if the transaction fails, each is rebuilt.
        let region_ids: Vec<u64> = readies.iter().map(|(id, _)| *id).collect();
        // Peers applying deferred entries were not in the round, and may change (a split, a member).
        self.status_changes.record(region_ids.iter().copied());
        // Every peer this round visited may have queued messages (a ready's, or hibernation's
        // signals outside one): each one's outbox is sent.
        let visited: Vec<u64> =
            round.iter().chain(&region_ids).copied().collect::<BTreeSet<u64>>().into_iter().collect();
        let engine = self.engine.clone();
        let mut pending: Vec<(u64, PendingReady)> = Vec::new();
        // A split applied this round must not start a peer this store has replaced already.
        let empty_peers = self.empty_peers();
        let local = LocalStore { store_id: self.cfg.store_id, empty_peers: &empty_peers };
        let result = (|| {
            let mut txn = engine.write_txn()?;
            for (region_id, ready) in readies {
                let peer = self.peers.get_mut(&region_id).expect("peer of a ready");
                pending.push((region_id, peer.collect_ready(ready, &mut txn, &local, apply)?));
            }
            // Leaders' appends and heartbeats leave now, so followers write while we fsync.
            self.send_outboxes(&visited);
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
                    let holds = peer.has_pending_apply();
                    if holds {
                        still_pending = true;
                        wanted |= peer.apply_urgent();
                    }
                    self.activity.set_applying(region_id, holds);
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
                self.send_outboxes(&region_ids);
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
                for region_id in &region_ids {
                    let peer = self.peers.get_mut(region_id).expect("peer of a pending ready");
                    peer.recover_after_failed_write(&error, &self.logger)?;
                    // Its pending applies are gone with the rebuilt raft state.
                    self.activity.set_applying(*region_id, peer.has_pending_apply());
                }
                // What these peers deferred is gone with their rebuilt raft state (raft hands it out
                // again); others' may still wait, so the clock goes on.
                self.deferral.after_round(RoundKind::Deferred, true, false, Instant::now());
                self.refresh_usage();
            }
        }
        // Work left (a ready raft made meanwhile, or rebuilt after a failed transaction): the next
        // round visits it again. Deferred applies alone are not work: `applying` holds those.
        for region_id in region_ids {
            if self.peers.get(&region_id).is_some_and(|peer| peer.has_ready()) {
                self.activity.touch(region_id);
            }
        }
        Ok(())
    }

    /// Takes the ready of every peer holding deferred applies whose ready `readies` lacks: the
    /// round commits them (or, due, decides to), so none may be left behind.
    fn take_applying_readies(&mut self, readies: &mut Vec<(u64, raft::Ready)>) {
        let taken: BTreeSet<u64> = readies.iter().map(|(id, _)| *id).collect();
        let holding: Vec<u64> = self.activity.applying().filter(|id| !taken.contains(id)).collect();
        for region_id in holding {
            match self.peers.get_mut(&region_id) {
                Some(peer) if peer.has_pending_apply() => readies.push((region_id, peer.take_ready())),
                // Stale: the peer applied meanwhile or is gone.
                _ => self.activity.set_applying(region_id, false),
            }
        }
    }
}
