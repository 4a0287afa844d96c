//! A ready's log writes, planned on the raftstore thread against the log raft sees, and put into a
//! transaction by the writer thread (`raftstore::writer`), which owns LMDB's write transactions.
//! Plans are written in the order they were made, so each one may build on those still in flight.

use heed::RwTxn;
use raft::eraftpb::{Entry, HardState};

use crate::proto::{RaftApplyState, RaftLocalState, Region, RegionLocalState};
use crate::raftstore::snapshot::VerifiedSnapshot;
use crate::storage::{Engine, StorageError};

/// New entries and hard state. Entries and hard state always go into the same transaction: a crash
/// can never leave a commit index that points past the durable log.
pub struct AppendPlan {
    region_id: u64,
    entries: Vec<Entry>,
    /// The suffix past the new entries that a new leader's log replaced: `[from, to)`.
    truncate: Option<(u64, u64)>,
    /// Only a new term or vote is recorded (see `PeerStorage::load`): a vote must never be forgotten.
    write_state: bool,
    /// The raft state these writes leave; installed with `PeerStorage::set_persisted` once durable.
    pub raft_state: RaftLocalState,
}

impl AppendPlan {
    /// Plans `entries` and `hard_state` on top of `base`.
    pub fn on(region_id: u64, base: RaftLocalState, entries: Vec<Entry>, hard_state: Option<&HardState>) -> AppendPlan {
        let mut state = base;
        let mut truncate = None;
        if let Some(last) = entries.last() {
            if last.index < state.last_index {
                truncate = Some((last.index + 1, state.last_index + 1));
            }
            state.last_index = last.index;
            state.last_term = last.term;
        }
        if let Some(hs) = hard_state {
            state.term = hs.term;
            state.vote = hs.vote;
            state.commit = hs.commit;
        }
        let write_state = (state.term, state.vote) != (base.term, base.vote);
        AppendPlan { region_id, entries, truncate, write_state, raft_state: state }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Whether the plan puts anything into the transaction.
    pub fn writes(&self) -> bool {
        !self.entries.is_empty() || self.write_state
    }

    pub fn write(&self, engine: &Engine, txn: &mut RwTxn<'_>) -> Result<(), StorageError> {
        for entry in &self.entries {
            engine.put_entry(txn, self.region_id, entry)?;
        }
        if let Some((from, to)) = self.truncate {
            engine.delete_entries(txn, self.region_id, from, to)?;
        }
        if self.write_state {
            engine.put_raft_state(txn, self.region_id, &self.raft_state)?;
        }
        Ok(())
    }
}

/// A snapshot replacing a peer's data, log and states (verified when it arrived).
pub struct SnapshotPlan {
    region_id: u64,
    /// The range the peer held before, if it was initialized: its data goes first.
    old_range: Option<(Vec<u8>, Vec<u8>)>,
    /// The raft state the snapshot leaves (the durable term and vote kept).
    pub raft_state: RaftLocalState,
    pub snapshot: Box<VerifiedSnapshot>,
}

impl SnapshotPlan {
    pub fn new(
        region_id: u64,
        old_range: Option<(Vec<u8>, Vec<u8>)>,
        raft_state: RaftLocalState,
        snapshot: Box<VerifiedSnapshot>,
    ) -> SnapshotPlan {
        SnapshotPlan { region_id, old_range, raft_state, snapshot }
    }

    /// Writes the snapshot; returns the apply state and region it leaves.
    pub fn write(&self, engine: &Engine, txn: &mut RwTxn<'_>) -> Result<(RaftApplyState, Region), StorageError> {
        let region_id = self.region_id;
        let snapshot = &self.snapshot;
        let region = snapshot.region.clone();
        let (index, term) = (snapshot.index, snapshot.term);
        if let Some((start, end)) = &self.old_range {
            engine.delete_data_range(txn, start, end)?;
        }
        engine.delete_data_range(txn, &region.start_key, &region.end_key)?;
        for kv in &snapshot.kvs {
            engine.put_data(txn, &kv.key, kv.revision, &kv.value)?;
        }
        engine.delete_entries(txn, region_id, 0, u64::MAX)?;
        let apply_state = RaftApplyState { applied_index: index, truncated_index: index, truncated_term: term };
        engine.put_raft_state(txn, region_id, &self.raft_state)?;
        engine.put_apply_state(txn, region_id, &apply_state)?;
        engine.put_region_state(txn, &RegionLocalState::normal(region.clone()))?;
        Ok((apply_state, region))
    }
}
