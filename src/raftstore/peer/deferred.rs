//! A peer's committed entries waiting to be applied, and the writes answered before their apply.
//!
//! Committed entries are not applied in the round raft hands them out unless that round commits a
//! transaction anyway (see `store::durability`): they wait here, in order, from the entry after the
//! durable applied index on. Meanwhile a plain write among them is answered as soon as its entry is
//! committed, when nothing before it can change its outcome ([`Peer::answer_at_commit`]), and the
//! peer says when someone waits on the apply itself ([`Peer::apply_urgent`]).

use raft::eraftpb::Entry;

use super::{Peer, TakenReady};
use crate::raftstore::apply::{self, Applied};

/// Entries pending beyond this many are applied without waiting: the wait saves fsyncs, not memory.
const MAX_PENDING: usize = 4096;

impl Peer {
    /// Takes raft's ready for this round: queues the leader's messages (they may leave before our own
    /// log is durable, raft thesis §10.2.1), notes leader changes and read states (releasing the reads
    /// whose index is applied already), adds the newly committed entries to those pending and answers
    /// the writes among them whose outcome is fixed. Then plans the ready's log writes and advances
    /// raft past them (`advance_append_async`): from here on raft reads those entries from storage,
    /// which serves them from memory until they are durable. A ready holding a snapshot is kept
    /// whole instead, until its commit. The store looks at `must_sync` of every ready to decide how
    /// the round commits, then calls `prepare_write`.
    pub fn take_ready(&mut self) -> TakenReady {
        let _span = self.span().entered();
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            self.on_soft_state(ss.leader_id, ss.raft_state);
        }
        self.queue_messages(ready.take_messages());
        for state in ready.take_read_states() {
            self.on_read_state(state);
        }
        // A read whose index is applied and committed already needs nothing this round writes.
        self.release_reads();
        let applied = self.applied_or_applying();
        let mut committed = ready.take_committed_entries();
        // A sole voter applied some with their append.
        committed.retain(|e| e.index > applied);
        self.defer_entries(committed);
        // Entries raft hands out committed are in a quorum's synced logs already: their plain writes
        // are answered now, not after this round's commit. A round that steps the followers' acks
        // usually also appends new proposals, and its commit would hold these answers up one fsync.
        self.answer_at_commit();
        let (number, must_sync) = (ready.number(), ready.must_sync());
        if !ready.snapshot().is_empty() {
            return TakenReady { number, must_sync, held: Some(ready), append: None, persisted_messages: Vec::new() };
        }
        let persisted_messages = ready.take_persisted_messages();
        let entries = ready.take_entries();
        let append = self.raw.mut_store().plan_append(entries, ready.hs(), number);
        self.raw.advance_append_async(ready);
        TakenReady { number, must_sync, held: None, append: Some(append), persisted_messages }
    }

    /// Committed entries to apply, waiting for a round that commits.
    pub fn has_pending_apply(&self) -> bool {
        !self.pending_apply.is_empty()
    }

    /// Adds committed entries (in log order) to those waiting for their apply.
    pub(super) fn defer_entries(&mut self, entries: Vec<Entry>) {
        for entry in &entries {
            match apply::admin_effect(entry) {
                apply::AdminEffect::None => {}
                apply::AdminEffect::CompactsLog => self.pending_admin = true,
                apply::AdminEffect::ChangesRegion => {
                    self.pending_admin = true;
                    self.pending_region_change.get_or_insert(entry.index);
                }
            }
        }
        self.pending_apply.extend(entries);
    }

    /// The pending entries, now applied in the round's transaction.
    pub(super) fn take_pending_apply(&mut self) -> Vec<Entry> {
        self.pending_region_change = None;
        self.pending_admin = false;
        std::mem::take(&mut self.pending_apply)
    }

    /// Whether someone waits for this peer's pending entries to be applied and visible, so the round
    /// must commit them now rather than wait for a durable round:
    /// - a linearizable read whose read index is not applied yet;
    /// - a proposal answered only from its apply (a conditional write, a membership change, a write
    ///   whose outcome a split before it may change) whose entry is committed;
    /// - an entry that changes the region (a split or a membership change): the region's range,
    ///   members and the outcome of every write after it wait for it;
    /// - a leader that is its region's only voter: its writes are applied with their append, and a
    ///   read there trusts LMDB to hold every acknowledged write (see `api::kv::read_barrier`);
    /// - too many entries pending.
    pub fn apply_urgent(&self) -> bool {
        let Some(last) = self.pending_apply.last() else { return false };
        let applied = self.raw.store().apply_state().applied_index;
        self.pending_region_change.is_some()
            || self.pending_apply.len() >= MAX_PENDING
            || self.is_sole_voter_leader()
            || self.read_batches.iter().any(|b| b.read_index.is_some_and(|index| index > applied))
            || self.proposals.iter().any(|p| p.index <= last.index && !p.at_commit)
    }

    /// Answers the plain writes whose entries are committed (pending here, at the term they were
    /// proposed in) and whose outcome is fixed: no entry between the applied index and theirs may
    /// change the region, and [`apply::outcome_at_commit`] finds they will succeed. The entry is in a
    /// quorum's synced log, so it will be applied, here and on every replica, with that outcome —
    /// again after a crash, since the applied index on disk is below it.
    ///
    /// Not on a region whose only member is this peer: those writes are applied with their append
    /// anyway, and a read there skips the ReadIndex on the promise that LMDB holds every answered
    /// write.
    pub(super) fn answer_at_commit(&mut self) {
        let Some(first) = self.pending_apply.first() else { return };
        if self.region().peers.len() <= 1 || self.is_sole_voter_leader() {
            return;
        }
        let (first_index, last_index) = (first.index, self.pending_apply.last().map_or(0, |e| e.index));
        if first_index != self.applied_or_applying() + 1 {
            return; // not contiguous with the applied index (cannot happen): leave it to the apply
        }
        // Writes from the first entry that may change the region on wait for their apply.
        let fixed_below = self.pending_region_change.unwrap_or(u64::MAX);
        let region = self.raw.store().region();
        let mut i = 0;
        // Proposals are in (term, index) order, not always index order (see `Peer::answer`): each
        // is looked at.
        while let Some(proposal) = self.proposals.get(i) {
            if proposal.index >= fixed_below || proposal.index > last_index {
                i += 1;
                continue;
            }
            let entry = proposal.index.checked_sub(first_index).and_then(|at| self.pending_apply.get(at as usize));
            // An entry of another term took the proposal's slot: the apply answers StaleCommand.
            let outcome = entry
                .filter(|entry| proposal.at_commit && entry.index == proposal.index && entry.term == proposal.term)
                .and_then(|entry| apply::outcome_at_commit(region, entry));
            let Some(outcome) = outcome else {
                i += 1;
                continue;
            };
            let proposal = self.proposals.remove(i).expect("the proposal at i");
            self.answered_at_commit.push_back(proposal.index);
            self.metrics.raft_answered_at_commit.inc();
            proposal.callback.send(Ok(outcome));
        }
    }

    /// A write answered at commit must apply as answered (`apply::outcome_at_commit` makes the checks
    /// apply makes): one that did not is a bug, loud in debug builds.
    pub(super) fn check_answered_at_commit(&mut self, applied: &Applied) {
        while self.answered_at_commit.front().is_some_and(|&index| index <= applied.index) {
            let index = self.answered_at_commit.pop_front().expect("front exists");
            // An index below this one was applied by a snapshot: nothing to compare.
            let agrees = index != applied.index
                || matches!(&applied.result, Some(Ok(response)) if response.revision == applied.index);
            if !agrees {
                tracing::error!(region_id = self.region_id(), index, result = ?applied.result, "a write answered at commit applied otherwise");
                debug_assert!(agrees, "a write answered at commit applied otherwise: {:?}", applied.result);
            }
        }
    }
}
