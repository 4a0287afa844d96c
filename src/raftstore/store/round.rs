//! One round's ready handling across the peers with work (see [`super::active`]): every ready taken
//! first, then how the round commits decided (see [`super::durability`]), then each peer's writes
//! made a task, and the round's tasks handed to the writer thread as one job
//! (`raftstore::writer`), which commits them once (or not at all when only applies that can wait
//! are left). The loop goes on meanwhile; each peer's ready is finished when the job's outcome comes
//! back ([`Store::finish_round`]), in round order.
//!
//! A round that installs a snapshot or applies an admin command (a split, a membership change, a log
//! compaction) runs alone: it waits for the rounds in flight before it and is finished before the
//! loop goes on. Such a round changes what later rounds are checked against (ranges, members, the
//! peers that exist), or deletes log entries raft reads until it learns of the compaction.
//!
//! A round visits the active peers, plus, when it commits or the deferral is due or wanted, every
//! peer holding deferred applies (`Activity::applying`, kept by this module): never a scan of all.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use super::durability::RoundKind;
use super::pipeline::{InFlight, MAX_ROUNDS_IN_FLIGHT};
use super::Store;
use crate::raftstore::error::Error;
use crate::raftstore::peer::{PendingReady, TakenReady};
use crate::raftstore::write_task::LocalWrite;
use crate::raftstore::writer::{Done, Job};
use crate::storage::StorageError;

impl Store {
    /// One round's ready handling across the peers with work. An error is a peer that cannot rebuild
    /// its raft state after a failed transaction, or a dead writer: the loop ends with it.
    pub(super) fn handle_round(&mut self) -> Result<(), StorageError> {
        if self.in_flight.len() >= MAX_ROUNDS_IN_FLIGHT {
            return Ok(());
        }
        self.metrics.raftstore_rounds.inc();
        // Every snapshot let in before this round is applied by it (or lost with a failed
        // transaction, and then sent again), and the round runs alone: from here on `regions` is
        // what the next round's checks go by.
        self.snapshots_accepted.clear();
        let round = self.activity.take_round();
        self.status_changes.record(round.iter().copied());
        self.metrics.raftstore_peers_per_round.observe(round.len() as f64);
        for region_id in &round {
            if let Some(peer) = self.peers.get_mut(region_id) {
                peer.issue_reads();
            }
        }
        // A snapshot's ready is held until its commit, and raft must not be stepped meanwhile, nor
        // anything be in flight under it: such a round waits for the others first.
        if round.iter().any(|id| self.peers.get(id).is_some_and(|peer| peer.has_pending_snapshot())) {
            self.drain()?;
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
        let complete = apply || flush;
        let region_ids: Vec<u64> = readies.iter().map(|(id, _)| *id).collect();
        // Peers applying deferred entries were not in the round, and may change (a split, a member).
        self.status_changes.record(region_ids.iter().copied());
        let alone =
            readies.iter().any(|(id, ready)| ready.holds_snapshot() || (apply && self.peers[id].applies_admin(ready)));
        if alone {
            self.drain()?;
        }
        // Every peer this round visited may have queued messages (a ready's, or hibernation's
        // signals outside one): each one's outbox is sent.
        let visited: Vec<u64> =
            round.iter().chain(&region_ids).copied().collect::<BTreeSet<u64>>().into_iter().collect();
        // A split applied this round must not start a peer this store has replaced already.
        let local = LocalWrite { store_id: self.cfg.store_id, empty_peers: Arc::new(self.empty_peers()) };
        let prepared = self.prepare_writes(readies, apply, &local);
        // Leaders' appends and heartbeats leave now, so followers write while we fsync.
        self.send_outboxes(&visited);
        let (tasks, pending) = match prepared {
            Ok(prepared) => prepared,
            Err(err) => {
                // Only a snapshot's ready fails here, in a round that runs alone.
                let round = InFlight { pending: Vec::new(), kind, complete, region_ids };
                return self.finish_round(round, Done { result: Err(Error::from(err)), commit: None });
            }
        };
        let round = InFlight { pending, kind, complete, region_ids };
        if tasks.is_empty() && self.in_flight.is_empty() {
            // Nothing to write and nothing before it: reads, messages and deferred applies only.
            return self.finish_round(round, Done { result: Ok(Vec::new()), commit: None });
        }
        let job = Job { tasks, durable: kind == RoundKind::Durable };
        if self.cfg.inline_commit && self.in_flight.is_empty() && self.inbox.is_empty() {
            // Nobody waits behind this commit: made here, it saves a lone writer the two thread
            // hops (about 10% of a sequential PUT on 3 nodes, `benches/README.md`).
            let done = crate::raftstore::writer::write_now(&self.engine, job);
            return self.finish_round(round, done);
        }
        self.writer.submit(job);
        self.in_flight.push_back(round);
        if alone {
            self.drain()?;
        }
        Ok(())
    }

    #[allow(clippy::type_complexity)]
    fn prepare_writes(
        &mut self,
        readies: Vec<(u64, TakenReady)>,
        apply: bool,
        local: &LocalWrite,
    ) -> Result<(Vec<crate::raftstore::write_task::WriteTask>, Vec<(u64, PendingReady, bool)>), StorageError> {
        let mut tasks = Vec::new();
        let mut pending = Vec::new();
        for (region_id, ready) in readies {
            let peer = self.peers.get_mut(&region_id).expect("peer of a ready");
            let (task, ready) = peer.prepare_write(ready, apply, local)?;
            pending.push((region_id, ready, task.is_some()));
            tasks.extend(task);
        }
        Ok((tasks, pending))
    }

    /// Takes the ready of every peer holding deferred applies whose ready `readies` lacks: the
    /// round commits them (or, due, decides to), so none may be left behind.
    fn take_applying_readies(&mut self, readies: &mut Vec<(u64, TakenReady)>) {
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
