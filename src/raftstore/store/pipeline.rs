//! The raftstore's side of the writer thread (`raftstore::writer`): rounds handed to it wait here,
//! oldest first, and are finished in that order when their outcome comes back: each peer's ready
//! finished ([`crate::raftstore::peer::Peer::finish_ready`]), the persisted messages sent, split-off
//! peers started and removed ones destroyed. After a failed transaction, the peers of it and of
//! every round after it (the writer refuses those until reset) are rebuilt from disk.
//!
//! A round nobody waits behind (nothing in flight, no message queued) is committed on the raftstore
//! thread instead (`raftstore_inline_commit`), and finished at once: a lone writer would otherwise pay
//! two thread hops per write for an overlap it has no use for.

use std::time::{Duration, Instant};

use crossbeam_channel::RecvTimeoutError;

use super::durability::RoundKind;
use super::Store;
use crate::raftstore::msg::StoreMsg;
use crate::raftstore::peer::PendingReady;
use crate::raftstore::write_task::Written;
use crate::raftstore::writer::{CommitStats, Done};
use crate::storage::StorageError;

/// Rounds handed to the writer and not finished yet, at most: past it the loop steps messages but
/// takes no more readies until one comes back.
pub(super) const MAX_ROUNDS_IN_FLIGHT: usize = 8;

/// A round handed to the writer.
pub(super) struct InFlight {
    /// Each peer's ready, and whether it gave the job a task (tasks are in this order).
    pub(super) pending: Vec<(u64, PendingReady, bool)>,
    pub(super) kind: RoundKind,
    /// Whether the round saw every peer holding applies (a committed one takes them all in).
    pub(super) complete: bool,
    /// The peers whose readies were taken: if the transaction fails, each is rebuilt.
    pub(super) region_ids: Vec<u64>,
}

impl Store {
    /// Blocks until a message arrives, the writer reports a round, or `wait` has passed.
    pub(super) fn wait(&self, wait: Duration) -> Woken {
        if self.in_flight.is_empty() {
            return match self.inbox.recv_timeout(wait) {
                Ok(msg) => Woken::Msg(msg),
                Err(RecvTimeoutError::Timeout) => Woken::Timeout,
                Err(RecvTimeoutError::Disconnected) => Woken::Closed,
            };
        }
        crossbeam_channel::select! {
            recv(self.inbox) -> msg => msg.map_or(Woken::Closed, Woken::Msg),
            recv(self.writer.done()) -> done => done.map_or(Woken::WriterDied, Woken::Done),
            default(wait) => Woken::Timeout,
        }
    }

    /// Finishes every round whose outcome the writer has reported, without waiting.
    pub(super) fn finish_done(&mut self) -> Result<(), crate::storage::StorageError> {
        while !self.in_flight.is_empty() {
            match self.writer.done().try_recv() {
                Ok(done) => self.on_done(done)?,
                Err(crossbeam_channel::TryRecvError::Empty) => break,
                Err(crossbeam_channel::TryRecvError::Disconnected) => return Err(self.writer.death()),
            }
        }
        Ok(())
    }

    /// Waits for every round in flight and finishes each.
    pub(super) fn drain(&mut self) -> Result<(), StorageError> {
        while let Some(round) = self.in_flight.pop_front() {
            let done = self.writer.next_done()?;
            self.finish_round(round, done)?;
        }
        Ok(())
    }

    /// The writer's outcome of the oldest round in flight.
    pub(super) fn on_done(&mut self, done: Done) -> Result<(), StorageError> {
        let round = self.in_flight.pop_front().expect("a round in flight for each outcome");
        self.finish_round(round, done)
    }

    /// Finishes each peer's ready of a round once its job is durable; after a failed transaction,
    /// rebuilds the peers of it and of every round after it (the writer refused those) from disk.
    pub(super) fn finish_round(&mut self, round: InFlight, done: Done) -> Result<(), StorageError> {
        let InFlight { pending, kind, complete, mut region_ids } = round;
        match done.result {
            Ok(written) => {
                if let Some(commit) = done.commit {
                    self.on_commit(&commit);
                }
                self.finish_readies(pending, written, kind, complete);
            }
            Err(error) => {
                self.metrics.storage_commit_failures.inc();
                tracing::error!(store_id = self.cfg.store_id, error = %error, "the round's LMDB transaction failed; rebuilding raft state from disk");
                drop(pending);
                // Every round after it fails too: the writer refuses them until it is reset.
                while let Some(later) = self.in_flight.pop_front() {
                    let _ = self.writer.next_done()?;
                    region_ids.extend(later.region_ids);
                }
                region_ids.sort_unstable();
                region_ids.dedup();
                for region_id in &region_ids {
                    let Some(peer) = self.peers.get_mut(region_id) else { continue };
                    peer.recover_after_failed_write(&error, &self.logger)?;
                    // Its pending applies are gone with the rebuilt raft state.
                    self.activity.set_applying(*region_id, peer.has_pending_apply());
                }
                self.writer.reset();
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

    fn on_commit(&mut self, commit: &CommitStats) {
        self.metrics.storage_commit_duration.observe(commit.took.as_secs_f64());
        self.batch_gate.on_commit(commit.proposals, commit.took);
        self.metrics.storage_commits.inc();
        if commit.apply_only {
            self.metrics.storage_apply_only_commits.inc();
        }
        self.metrics.storage_entries_per_commit.observe(commit.entries as f64);
        if commit.proposals > 0 {
            self.metrics.storage_proposals_per_commit.observe(commit.proposals as f64);
        }
        self.refresh_usage();
    }

    fn finish_readies(
        &mut self,
        pending: Vec<(u64, PendingReady, bool)>,
        written: Vec<Written>,
        kind: RoundKind,
        complete: bool,
    ) {
        let mut written = written.into_iter();
        let mut removed = Vec::new();
        let mut split_off = Vec::new();
        let mut finished = Vec::with_capacity(pending.len());
        let (mut still_pending, mut wanted) = (false, false);
        for (region_id, ready, has_task) in pending {
            let written = if has_task { written.next() } else { None };
            let Some(peer) = self.peers.get_mut(&region_id) else { continue };
            let committed = peer.finish_ready(ready, written);
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
            finished.push(region_id);
        }
        self.deferral.after_round(kind, still_pending, complete, Instant::now());
        self.apply_wanted |= wanted;
        // After every peer finished its ready: starting a split-off region may replace a peer (an
        // empty one created by an early message) whose ready was in this round.
        for (region, led_parent) in split_off {
            self.start_split_peer(region, led_parent);
        }
        // Messages first: a leader removing itself still tells the others what committed.
        self.send_outboxes(&finished);
        for region_id in removed {
            tracing::info!(store_id = self.cfg.store_id, region_id, "this peer was removed from its region");
            self.destroy_peer(region_id);
        }
    }
}

/// What ended the loop's wait.
pub(super) enum Woken {
    Msg(StoreMsg),
    Done(Done),
    Timeout,
    /// The inbox closed: every router is gone.
    Closed,
    WriterDied,
}
