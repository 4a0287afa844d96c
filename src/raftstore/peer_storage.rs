//! `raft::Storage` over the node's LMDB environment, for one region's peer.
//!
//! Raft reads its log through this; the raftstore writes it (inside the round's transaction) and, only
//! once that transaction has committed, installs the new states here with [`PeerStorage::set_persisted`].
//! So what raft reads is always what is durable. Log bounds and the hard state live in memory as copies
//! of `raft_state` / `apply_state`; entries are read from LMDB on demand.

use heed::RwTxn;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};

use crate::proto::{RaftApplyState, RaftLocalState, Region};
use crate::storage::{Engine, StorageError};

/// The log of a new region starts after this index, so the first real entry has index 6, as in TiKV.
/// Lets a peer created empty (issue: membership) be told apart from one that has a log.
pub const RAFT_INIT_LOG_INDEX: u64 = 5;
pub const RAFT_INIT_LOG_TERM: u64 = 5;

pub struct PeerStorage {
    engine: Engine,
    region: Region,
    raft_state: RaftLocalState,
    apply_state: RaftApplyState,
}

/// The conf state raft starts from: every peer of the region is a voter.
pub fn conf_state_of(region: &Region) -> ConfState {
    ConfState { voters: region.peers.iter().map(|p| p.peer_id).collect(), ..Default::default() }
}

impl PeerStorage {
    /// Loads a region's persisted raft and apply state.
    pub fn load(engine: Engine, region: Region) -> Result<PeerStorage, StorageError> {
        let region_id = region.region_id;
        let txn = engine.read_txn()?;
        let missing = |what: &str| StorageError::Decode {
            what: format!("{what} of region {region_id}"),
            detail: "missing".into(),
        };
        let raft_state = engine.raft_state(&txn, region_id)?.ok_or_else(|| missing("raft state"))?;
        let apply_state = engine.apply_state(&txn, region_id)?.ok_or_else(|| missing("apply state"))?;
        drop(txn);
        Ok(PeerStorage { engine, region, raft_state, apply_state })
    }

    /// Writes the initial state of a brand-new region into `txn` (bootstrap).
    pub fn write_initial_state(engine: &Engine, txn: &mut RwTxn<'_>, region: &Region) -> Result<(), StorageError> {
        let raft_state = RaftLocalState {
            term: RAFT_INIT_LOG_TERM,
            vote: 0,
            commit: RAFT_INIT_LOG_INDEX,
            last_index: RAFT_INIT_LOG_INDEX,
            last_term: RAFT_INIT_LOG_TERM,
        };
        let apply_state = RaftApplyState {
            applied_index: RAFT_INIT_LOG_INDEX,
            truncated_index: RAFT_INIT_LOG_INDEX,
            truncated_term: RAFT_INIT_LOG_TERM,
        };
        engine.put_raft_state(txn, region.region_id, &raft_state)?;
        engine.put_apply_state(txn, region.region_id, &apply_state)?;
        engine.put_region_state(txn, &crate::proto::RegionLocalState { region: Some(region.clone()), state: 0 })
    }

    pub fn region(&self) -> &Region {
        &self.region
    }

    pub fn set_region(&mut self, region: Region) {
        self.region = region;
    }

    pub fn raft_state(&self) -> &RaftLocalState {
        &self.raft_state
    }

    pub fn apply_state(&self) -> &RaftApplyState {
        &self.apply_state
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Adds a ready's new entries and hard state to the round's transaction and returns the raft
    /// state they make durable; install it with [`Self::set_persisted`] after the commit.
    ///
    /// Entries and hard state always go into the same transaction: a crash can never leave a commit
    /// index that points past the durable log.
    pub fn append(
        &self,
        txn: &mut RwTxn<'_>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<RaftLocalState, StorageError> {
        let region_id = self.region.region_id;
        let mut state = self.raft_state;
        for entry in entries {
            self.engine.put_entry(txn, region_id, entry)?;
        }
        if let Some(last) = entries.last() {
            // A new leader may overwrite a suffix of our log: drop what lies past the new end.
            if last.index < state.last_index {
                self.engine.delete_entries(txn, region_id, last.index + 1, state.last_index + 1)?;
            }
            state.last_index = last.index;
            state.last_term = last.term;
        }
        if let Some(hs) = hard_state {
            state.term = hs.term;
            state.vote = hs.vote;
            state.commit = hs.commit;
        }
        if entries.is_empty() && hard_state.is_none() {
            return Ok(state);
        }
        self.engine.put_raft_state(txn, region_id, &state)?;
        Ok(state)
    }

    /// Installs states that a committed transaction made durable.
    pub fn set_persisted(&mut self, raft_state: RaftLocalState, apply_state: RaftApplyState) {
        self.raft_state = raft_state;
        self.apply_state = apply_state;
    }

    fn check_range(&self, low: u64, high: u64) -> raft::Result<()> {
        if low > high {
            return Err(raft::Error::Store(RaftStorageError::Other(
                format!("invalid log range [{low}, {high})").into(),
            )));
        }
        if low <= self.apply_state.truncated_index {
            return Err(raft::Error::Store(RaftStorageError::Compacted));
        }
        if high > self.raft_state.last_index + 1 {
            return Err(raft::Error::Store(RaftStorageError::Unavailable));
        }
        Ok(())
    }
}

fn raft_err(err: StorageError) -> raft::Error {
    raft::Error::Store(RaftStorageError::Other(Box::new(err)))
}

impl raft::Storage for PeerStorage {
    fn initial_state(&self) -> raft::Result<RaftState> {
        let hard_state = HardState {
            term: self.raft_state.term,
            vote: self.raft_state.vote,
            commit: self.raft_state.commit,
            ..Default::default()
        };
        Ok(RaftState::new(hard_state, conf_state_of(&self.region)))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        self.check_range(low, high)?;
        if low == high {
            return Ok(Vec::new());
        }
        let max_size = max_size.into().unwrap_or(u64::MAX);
        let txn = self.engine.read_txn().map_err(raft_err)?;
        self.engine.entries(&txn, self.region.region_id, low, high, max_size).map_err(raft_err)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.apply_state.truncated_index {
            return Ok(self.apply_state.truncated_term);
        }
        self.check_range(idx, idx + 1)?;
        if idx == self.raft_state.last_index {
            return Ok(self.raft_state.last_term);
        }
        let txn = self.engine.read_txn().map_err(raft_err)?;
        let entries = self.engine.entries(&txn, self.region.region_id, idx, idx + 1, u64::MAX).map_err(raft_err)?;
        entries.first().map(|e| e.term).ok_or(raft::Error::Store(RaftStorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.apply_state.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.raft_state.last_index)
    }

    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        // Snapshots are only asked for on behalf of a lagging follower; a single-peer region has none.
        // Generating and streaming them comes with replication.
        Err(raft::Error::Store(RaftStorageError::SnapshotTemporarilyUnavailable))
    }
}
