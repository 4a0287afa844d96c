//! A peer's half of the round around the writer's commit: [`Peer::take_ready`] (in `deferred`) takes
//! raft's ready and plans its log writes, [`Peer::prepare_write`] turns it into a [`WriteTask`] the
//! writer thread puts into a transaction, and [`Peer::finish_ready`] finishes the ready once that
//! transaction is durable; and the recovery when the transaction failed.

use std::collections::VecDeque;

use raft::eraftpb::{Entry, EntryType};
use raft::StateRole;

use super::{Committed, Peer, PendingReady, Proposal, TakenReady};
use crate::proto::RaftApplyState;
use crate::raftstore::apply::{admin_effect, AdminEffect, Applied};
use crate::raftstore::error::Error;
use crate::raftstore::peer_storage::{AppendPlan, PeerStorage};
use crate::raftstore::write_task::{ApplyPlan, LocalWrite, WriteTask, Written};
use crate::storage::StorageError;

impl Peer {
    /// Whether raft has a ready for this round (committed entries waiting to be applied are
    /// [`Self::has_pending_apply`]).
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready()
    }

    /// Whether raft holds a snapshot to install: the store installs it in a round of its own, with
    /// nothing else in flight (raft must not be stepped between that ready and its advance).
    pub fn has_pending_snapshot(&self) -> bool {
        self.raw.raft.raft_log.unstable.snapshot.is_some()
    }

    /// The applied index once the apply in flight (if any) is durable.
    pub(super) fn applied_or_applying(&self) -> u64 {
        self.apply_in_flight.unwrap_or(self.raw.store().apply_state().applied_index)
    }

    /// Whether the apply this round would make holds an admin command: the store runs such a round
    /// alone. A split or a membership change changes what later rounds are checked against (ranges,
    /// members, the peers that exist); a log compaction deletes entries raft reads from storage until
    /// it learns of the compaction, when the round is finished.
    pub fn applies_admin(&self, taken: &TakenReady) -> bool {
        let early = |plan: &AppendPlan| plan.entries().iter().any(|e| admin_effect(e) != AdminEffect::None);
        self.pending_admin || (self.is_sole_voter_leader() && taken.append.as_ref().is_some_and(early))
    }

    /// Second step, on the ready [`Self::take_ready`] took (it queued the leader's messages): what the
    /// writer must put into the round's transaction, in order (an invariant, see DESIGN.md §3):
    /// snapshot → entries + hard state → apply committed entries. `None` when there is nothing to write.
    ///
    /// With `apply` false the round commits nothing (no ready of it must be synced, and the applies
    /// can wait): nothing is written, and the committed entries stay pending.
    /// A hard state that only moved the commit index is not written; the commit index on disk may lag
    /// (raft learns it again), and is raised to the applied index when the apply is installed.
    pub fn prepare_write(
        &mut self,
        taken: TakenReady,
        apply: bool,
        local: &LocalWrite,
    ) -> Result<(Option<WriteTask>, PendingReady), StorageError> {
        let _span = self.span().entered();
        let TakenReady { number, must_sync, held, append, mut persisted_messages } = taken;
        let mut pending = PendingReady { number, held, persisted_messages: Vec::new(), applies: false };
        if !apply {
            assert!(!must_sync, "a ready that must be synced in a round that commits nothing");
            pending.persisted_messages = persisted_messages;
            return Ok((None, pending));
        }
        let region_id = self.region_id();
        // A held ready holds a snapshot: it replaces the data, the log and the states first, and the
        // ready's entries (if any) follow it.
        let (snapshot, append) = match pending.held.as_mut() {
            Some(ready) => {
                let meta_index = ready.snapshot().get_metadata().index;
                let snapshot =
                    self.incoming_snapshot.take().filter(|s| s.is_of(ready.snapshot())).ok_or_else(|| {
                        StorageError::Inconsistent {
                            what: format!("snapshot of region {region_id}"),
                            detail: format!("raft applies one at index {meta_index} that no inbox verified"),
                        }
                    })?;
                let plan = self.raw.store().plan_snapshot(snapshot);
                persisted_messages = ready.take_persisted_messages();
                let append = AppendPlan::on(region_id, plan.raft_state, ready.take_entries(), ready.hs());
                (Some(plan), append)
            }
            None => (None, append.expect("a ready not held was planned when taken")),
        };
        pending.persisted_messages = persisted_messages;
        // Applies chain: an apply in flight holds plain commands only (a round applying an admin
        // command runs alone), so the region and the truncated index stay, and this one starts
        // where that one ends. The writer commits them in order.
        let applied = self.applied_or_applying();
        let mut entries = self.take_pending_apply();
        // A leader that is the region's only voter commits an entry the moment it is durable, and it
        // becomes durable in this very transaction; applying it here too saves a second commit (and a
        // second fsync) per write. If the transaction fails, neither happens.
        if self.is_sole_voter_leader() && snapshot.is_none() {
            let applied = entries.last().map_or(applied, |e| e.index);
            entries.extend_from_slice(self.early_appliable(append.entries(), applied));
        }
        if let Some(last) = entries.last() {
            self.apply_in_flight = Some(last.index);
            pending.applies = true;
        }
        let mut apply_plan = None;
        if !entries.is_empty() || snapshot.is_some() {
            let storage = self.raw.store();
            apply_plan = Some(ApplyPlan {
                region: storage.region().clone(),
                apply_state: RaftApplyState { applied_index: applied, ..*storage.apply_state() },
                entries,
                store_id: local.store_id,
                empty_peers: local.empty_peers.clone(),
            });
        }
        if snapshot.is_none() && !append.writes() && apply_plan.is_none() {
            return Ok((None, pending));
        }
        Ok((Some(WriteTask { region_id, snapshot, append, apply: apply_plan }), pending))
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

    /// Last step, after the round's transaction is durable (or, with `written` `None`, when the ready
    /// wrote nothing): install the new state, queue the messages that had to wait for it, tell raft
    /// what is persisted and applied, answer the applied proposals and the reads. Entries raft
    /// commits now come with its next ready.
    pub fn finish_ready(&mut self, pending: PendingReady, written: Option<Written>) -> Committed {
        let _span = self.span().entered();
        let PendingReady { number, held, persisted_messages, applies } = pending;
        let storage = self.raw.store();
        let (mut raft_state, mut apply_state) = (*storage.raft_state(), *storage.apply_state());
        let mut committed =
            Committed { applied: 0, region_changed: false, new_regions: Vec::new(), removed_self: false };
        let mut conf_changes = Vec::new();
        let mut applied = Vec::new();
        if let Some(written) = written {
            if written.snapshot_applied || !written.new_regions.is_empty() {
                // A new range: its size is unknown until the next check.
                self.approximate_size = None;
            } else if let Some(size) = &mut self.approximate_size {
                *size += written.bytes_written;
            }
            if written.log_compacted {
                self.metrics.raft_log_compactions.inc();
            }
            if let Some(region) = written.region {
                self.raw.mut_store().set_region(region);
                committed.region_changed = true;
            }
            raft_state = written.raft_state;
            apply_state = written.apply_state.unwrap_or(apply_state);
            if written.snapshot_applied {
                self.fail_proposals_covered_by_snapshot(apply_state.applied_index);
            }
            committed.new_regions = written.new_regions;
            committed.removed_self = written.removed_self;
            conf_changes = written.conf_changes;
            applied = written.applied;
        }
        if applies && self.apply_in_flight.is_some_and(|index| index <= apply_state.applied_index) {
            // The last apply in flight is durable.
            self.apply_in_flight = None;
        }
        // A commit learnt after the last write covers what is applied. Nothing records it: a restart
        // takes the applied index as committed.
        raft_state.commit = raft_state.commit.max(apply_state.applied_index);
        self.raw.mut_store().set_persisted(raft_state, apply_state, number);
        // Votes and a follower's acks promise durability: only now may they leave.
        self.queue_messages(persisted_messages);
        if let Some(ready) = held {
            // Only now: raft reads the snapshot's state from storage once the ready is advanced.
            self.raw.advance_append_async(ready);
        }
        self.raw.on_persist_ready(number);
        // Only what a committed transaction applied: raft must not count an apply a crash can lose.
        self.raw.advance_apply_to(apply_state.applied_index);
        // Raft counts the new membership from here on (the region's state already has it). After
        // the advances: a leader that removed itself is no longer in its own progress table.
        for cc in &conf_changes {
            if let Err(err) = self.raw.apply_conf_change(cc) {
                tracing::error!(region_id = self.region_id(), error = %err, "raft refused an applied membership change");
            }
        }
        committed.applied = applied.len();
        for outcome in applied {
            self.answer(outcome);
        }
        self.answer_at_commit();
        self.release_reads();
        committed
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
        self.apply_in_flight = None;
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
