//! A peer's half of the round around the store's single LMDB commit: [`Peer::take_ready`] (in
//! `deferred`) takes raft's ready, [`Peer::collect_ready`] puts its log writes and applied data into
//! the shared transaction, [`Peer::post_commit`] finishes the ready once that transaction is durable;
//! and the recovery when the transaction failed.

use std::collections::VecDeque;

use heed::RwTxn;
use raft::eraftpb::{Entry, EntryType};
use raft::{Ready, StateRole};

use super::{Committed, Peer, PendingReady, Proposal};
use crate::raftstore::apply::{self, Applied, ApplyEffects, LocalStore};
use crate::raftstore::error::Error;
use crate::raftstore::peer_storage::PeerStorage;
use crate::storage::StorageError;

impl Peer {
    /// Whether raft has a ready for this round (committed entries waiting to be applied are
    /// [`Self::has_pending_apply`]).
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// First half of ready handling, before the commit, on the ready [`Self::take_ready`] took (it
    /// queued the leader's messages). Order (an invariant, see DESIGN.md §3): snapshot → entries +
    /// hard state → apply committed entries, all into the round's one transaction. The store sends
    /// the queued messages before it commits.
    ///
    /// With `apply` false the round commits nothing (no ready of it must be synced, and the
    /// applies can wait): nothing is written, and the committed entries stay pending. A hard state
    /// that only moved the commit index is not written then; the commit index on disk may lag (raft
    /// learns it again), and is raised to the applied index in the transaction that applies.
    pub fn collect_ready(
        &mut self,
        ready: Ready,
        txn: &mut RwTxn<'_>,
        local: &LocalStore<'_>,
        apply: bool,
    ) -> Result<PendingReady, StorageError> {
        let _span = self.span().entered();
        if !apply {
            assert!(!ready.must_sync(), "a ready that must be synced in a round that commits nothing");
            return Ok(self.unwritten(ready));
        }
        let pending_apply = self.take_pending_apply();
        let storage = self.raw.store();
        let engine = storage.engine();
        // 1. A snapshot replaces the data, the log and the states before anything else is written.
        let (base_raft_state, mut apply_state, region) = if ready.snapshot().is_empty() {
            (*storage.raft_state(), *storage.apply_state(), None)
        } else {
            let snapshot =
                self.incoming_snapshot.as_deref().filter(|s| s.is_of(ready.snapshot())).ok_or_else(|| {
                    StorageError::Inconsistent {
                        what: format!("snapshot of region {}", storage.region().region_id),
                        detail: format!(
                            "raft applies one at index {} that no inbox verified",
                            ready.snapshot().get_metadata().index
                        ),
                    }
                })?;
            let (raft_state, apply_state, region) = storage.apply_snapshot(txn, snapshot)?;
            tracing::info!(region_id = region.region_id, index = apply_state.applied_index, "applying a snapshot");
            (raft_state, apply_state, Some(region))
        };
        let snapshot_applied = region.is_some();
        let mut region_now = region.unwrap_or_else(|| storage.region().clone());
        // 2. Entries and hard state, in the same transaction.
        let raft_state = storage.append(txn, base_raft_state, ready.entries(), ready.hs())?;
        // 3. Apply what is committed and pending (this ready's committed entries included), all
        //    already durable in the log. The applied data and the applied index share this
        //    transaction.
        let before_apply = apply_state;
        let mut effects = ApplyEffects::default();
        apply::apply_entries(engine, txn, local, &mut region_now, &mut apply_state, &pending_apply, &mut effects)?;
        // 4. A leader that is the region's only voter commits an entry the moment it is durable, and
        //    it becomes durable in this very transaction; applying it here too saves a second commit
        //    (and a second fsync) per write. If the transaction fails, neither happens.
        if self.is_sole_voter_leader() {
            let early = self.early_appliable(ready.entries(), apply_state.applied_index);
            apply::apply_entries(engine, txn, local, &mut region_now, &mut apply_state, early, &mut effects)?;
        }
        if apply_state != before_apply {
            engine.put_apply_state(txn, region_now.region_id, &apply_state)?;
        }
        if effects.log_compacted {
            self.metrics.raft_log_compactions.inc();
        }
        // A commit learnt after the last write (a light ready's, or a sole voter's append) covers what
        // this applies. Nothing records it: a restart takes the applied index as committed.
        let mut raft_state = raft_state;
        raft_state.commit = raft_state.commit.max(apply_state.applied_index);
        let wrote =
            snapshot_applied || !ready.entries().is_empty() || ready.hs().is_some() || apply_state != before_apply;
        let proposals_persisted = ready.entries().iter().filter(|e| !e.data.is_empty()).count();
        let entries_persisted = ready.entries().len();
        let region_changed = snapshot_applied || region_now != *storage.region();
        Ok(PendingReady {
            ready,
            raft_state,
            apply_state,
            applied: std::mem::take(&mut effects.applied),
            proposals_persisted,
            entries_persisted,
            wrote,
            region: region_changed.then_some(region_now),
            new_regions: effects.new_regions,
            conf_changes: effects.conf_changes,
            bytes_written: effects.bytes_written,
            snapshot_applied,
            removed_self: effects.removed_self,
        })
    }

    pub(super) fn is_sole_voter_leader(&self) -> bool {
        let voters = self.raw.raft.prs().conf().voters().ids();
        self.is_leader() && voters.len() == 1 && voters.contains(self.peer_id)
    }

    /// The prefix of `entries` that can be applied along with being persisted: contiguous with what is
    /// applied, of the leader's current term, and plain commands (a conf change must go through raft's
    /// own commit path, as it changes who counts for the quorum).
    pub(super) fn early_appliable<'e>(&self, entries: &'e [Entry], applied: u64) -> &'e [Entry] {
        let term = self.raw.raft.term;
        let Some(first) = entries.first() else {
            return &[];
        };
        if first.index != applied + 1 {
            return &[];
        }
        let len = entries.iter().take_while(|e| e.term == term && e.get_entry_type() == EntryType::EntryNormal).count();
        &entries[..len]
    }

    /// Second half, after the round's transaction is durable: install the new state, queue the
    /// messages that had to wait for it, advance raft, answer the applied proposals and the reads.
    pub fn post_commit(&mut self, pending: PendingReady) -> Committed {
        let _span = self.span().entered();
        let PendingReady { mut ready, raft_state, apply_state, applied, region, new_regions, conf_changes, .. } =
            pending;
        let applied_index = apply_state.applied_index;
        let region_changed = region.is_some();
        if pending.snapshot_applied || !new_regions.is_empty() {
            // A new range: its size is unknown until the next check.
            self.approximate_size = None;
        } else if let Some(size) = &mut self.approximate_size {
            *size += pending.bytes_written;
        }
        if let Some(region) = region {
            self.raw.mut_store().set_region(region);
        }
        if pending.snapshot_applied {
            self.incoming_snapshot = None;
            self.fail_proposals_covered_by_snapshot(apply_state.applied_index);
        }
        self.raw.mut_store().set_persisted(raft_state, apply_state);
        // Votes and a follower's acks promise durability: only now may they leave.
        self.queue_messages(ready.take_persisted_messages());
        let mut light = self.raw.advance_append(ready);
        self.queue_messages(light.take_messages());
        // Entries this advance committed are durable; they are applied with the next round that
        // commits unless they already were (a sole voter applies them with the append).
        let committed = light.take_committed_entries().into_iter().filter(|e| e.index > applied_index).collect();
        self.defer_entries(committed);
        // Only what a committed transaction applied: raft must not count an apply a crash can lose.
        self.raw.advance_apply_to(applied_index);
        // Raft counts the new membership from here on (the region's state already has it). After
        // the advances: a leader that removed itself is no longer in its own progress table.
        for cc in &conf_changes {
            if let Err(err) = self.raw.apply_conf_change(cc) {
                tracing::error!(region_id = self.region_id(), error = %err, "raft refused an applied membership change");
            }
        }
        let answered = applied.len();
        for outcome in applied {
            self.answer(outcome);
        }
        self.answer_at_commit();
        self.release_reads();
        Committed { applied: answered, region_changed, new_regions, removed_self: pending.removed_self }
    }

    /// Matches an applied entry to the proposal waiting on it. Proposals are queued in (term, index)
    /// order, which is not index order: a leader that lost its uncommitted tail and leads again
    /// proposes below the indexes of the lost entries. Every proposal before the applied entry in
    /// that order lost its slot and is answered `StaleCommand` (never applied, safe to retry):
    /// - an earlier term at an index at or above this entry's: that index now holds an entry of a
    ///   later term;
    /// - any lower index: had it applied, its apply would have answered it before this one (a
    ///   snapshot that covers it answers it as unknown instead, see
    ///   `fail_proposals_covered_by_snapshot`).
    pub(super) fn answer(&mut self, applied: Applied) {
        self.check_answered_at_commit(&applied);
        while let Some(front) = self.proposals.front() {
            if (front.term, front.index) > (applied.term, applied.index) {
                break;
            }
            let proposal = self.proposals.pop_front().expect("front exists");
            let result = match (&applied.result, proposal.index == applied.index && proposal.term == applied.term) {
                (Some(result), true) => result.clone(),
                _ => Err(Error::StaleCommand),
            };
            proposal.callback.send(result);
        }
    }

    /// A snapshot installed up to `snapshot_index`: the entries it covers were applied elsewhere, so
    /// this peer cannot tell whether a proposal of its own among them made it. Their outcome is
    /// unknown (never "retry": that could apply a write twice).
    fn fail_proposals_covered_by_snapshot(&mut self, snapshot_index: u64) {
        let region_id = self.region_id();
        let (covered, rest): (VecDeque<Proposal>, VecDeque<Proposal>) =
            std::mem::take(&mut self.proposals).into_iter().partition(|p| p.index <= snapshot_index);
        self.proposals = rest;
        for proposal in covered {
            proposal.callback.send(Err(Error::OutcomeUnknown { region_id }));
        }
    }

    pub(super) fn on_soft_state(&mut self, leader_id: u64, role: StateRole) {
        if leader_id != self.leader_id {
            self.leader_id = leader_id;
            self.metrics.raft_leader_changes.inc();
            tracing::info!(region_id = self.region_id(), peer_id = self.peer_id, leader_id, role = ?role, term = self.raw.raft.term, "leader changed");
        }
        if role != StateRole::Leader {
            let err = self.not_leader();
            self.fail_reads(&err);
        }
    }

    /// The round's transaction failed (the map is full, or LMDB failed): nothing of it is durable, so
    /// this peer's raft state in memory is ahead of the disk. Rebuild it from the disk, as a restart
    /// would, and fail the requests whose entries were lost.
    /// A failure to reload is returned: the peer's state in memory can no longer be trusted, and
    /// the store ends (reported as its exit).
    pub fn recover_after_failed_write(&mut self, error: &Error, logger: &slog::Logger) -> Result<(), StorageError> {
        let region = self.region().clone();
        let engine = self.raw.store().engine().clone();
        let storage = if self.is_initialized() {
            PeerStorage::load(engine, region)
        } else {
            PeerStorage::uninitialized(engine, region.region_id)
        };
        let storage = storage?;
        let durable_last_index = storage.raft_state().last_index;
        self.raw = Self::raw_node(self.peer_id, storage, &self.cfg, logger)?;
        // Raft hands the committed entries above the applied index on disk out again.
        self.take_pending_apply();
        let lost: Vec<_> = std::mem::take(&mut self.proposals).into_iter().collect();
        for proposal in lost {
            // Durable entries will still apply after the new election; only lost ones fail here.
            if proposal.index > durable_last_index {
                proposal.callback.send(Err(error.clone()));
            } else {
                self.proposals.push_back(proposal);
            }
        }
        self.fail_reads(error);
        self.leader_id = 0;
        self.campaign_if_alone();
        Ok(())
    }
}
