//! `raft::Storage` over the node's LMDB environment, for one region's peer.
//!
//! Raft reads its log through this. The raftstore plans a ready's log writes here
//! ([`PeerStorage::plan_append`]), the writer thread puts them into a transaction, and only once that
//! transaction has committed are the new durable states installed with [`PeerStorage::set_persisted`].
//! Meanwhile the planned entries are served from memory ([`unpersisted`]): raft-rs reads a ready's
//! entries from storage as soon as the ready is advanced. Log bounds and the hard state live in
//! memory as copies of `raft_state` / `apply_state`; durable entries are read from LMDB on demand.

use std::cell::RefCell;
use std::sync::mpsc;

use heed::RwTxn;
use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError as RaftStorageError};

use super::snapshot::{self, VerifiedSnapshot};
pub use plan::{AppendPlan, SnapshotPlan};
use unpersisted::Unpersisted;

mod plan;
mod unpersisted;
use crate::proto::{RaftApplyState, RaftLocalState, Region, RegionEpoch, SnapshotKv};
use crate::storage::{Engine, StorageError};

/// The log of a new region starts after this index, so the first real entry has index 6, as in TiKV.
/// Lets a peer created empty (issue: membership) be told apart from one that has a log.
pub const RAFT_INIT_LOG_INDEX: u64 = 5;
pub const RAFT_INIT_LOG_TERM: u64 = 5;

pub struct PeerStorage {
    engine: Engine,
    region: Region,
    /// What the last committed transaction holds of the raft state (see [`Self::load`]).
    raft_state: RaftLocalState,
    /// The raft state once every planned append is durable: the log's end raft sees.
    planned: RaftLocalState,
    /// Planned entries not yet durable.
    unpersisted: Unpersisted,
    apply_state: RaftApplyState,
    /// Snapshot generation runs off the raftstore thread; raft asks again until it is ready.
    snapshot: RefCell<SnapshotState>,
}

enum SnapshotState {
    Idle,
    Generating(mpsc::Receiver<Result<(Snapshot, RegionEpoch), StorageError>>),
    /// A snapshot made earlier, and the epoch of the region it holds.
    Ready(Snapshot, RegionEpoch),
}

/// The conf state raft starts from: every peer of the region is a voter.
pub fn conf_state_of(region: &Region) -> ConfState {
    ConfState { voters: region.peers.iter().map(|p| p.peer_id).collect(), ..Default::default() }
}

impl PeerStorage {
    /// Loads a region's persisted raft and apply state.
    ///
    /// The raft state record is written only when the term or the vote changes (format 3): keeping
    /// the log's end and the commit index in it cost one more B-tree page per region per round,
    /// which with thousands of regions was a quarter of every commit's pages. So at load:
    /// - the log's end is its last entry, or the truncated index when it holds none (every append,
    ///   conflict truncation and compaction changes the log in the transaction that decides it);
    /// - the commit index is at least the applied index (only committed entries are applied; raft
    ///   treats the commit index as volatile, and a new leader tells the rest).
    pub fn load(engine: Engine, region: Region) -> Result<PeerStorage, StorageError> {
        let region_id = region.region_id;
        let txn = engine.read_txn()?;
        let missing = |what: &str| StorageError::Decode {
            what: format!("{what} of region {region_id}"),
            detail: "missing".into(),
        };
        let recorded = engine.raft_state(&txn, region_id)?.ok_or_else(|| missing("raft state"))?;
        let apply_state = engine.apply_state(&txn, region_id)?.ok_or_else(|| missing("apply state"))?;
        let (last_index, last_term) = match engine.last_entry(&txn, region_id)? {
            Some((index, term)) if index > apply_state.truncated_index => (index, term),
            _ => (apply_state.truncated_index, apply_state.truncated_term),
        };
        drop(txn);
        let raft_state = RaftLocalState {
            commit: recorded.commit.max(apply_state.applied_index),
            last_index,
            last_term,
            ..recorded
        };
        check_consistent(region_id, &raft_state, &apply_state)?;
        Ok(Self::with_states(engine, region, raft_state, apply_state))
    }

    /// A storage whose durable states are these, with nothing planned in flight.
    fn with_states(engine: Engine, region: Region, raft_state: RaftLocalState, apply_state: RaftApplyState) -> Self {
        PeerStorage {
            engine,
            region,
            raft_state,
            planned: raft_state,
            unpersisted: Unpersisted::default(),
            apply_state,
            snapshot: RefCell::new(SnapshotState::Idle),
        }
    }

    /// The storage of a peer created by a message before this store held its region: no range, no
    /// log, no data. Its term and vote are read back if it persisted any (it voted before a restart).
    pub fn uninitialized(engine: Engine, region_id: u64) -> Result<PeerStorage, StorageError> {
        let txn = engine.read_txn()?;
        let persisted = engine.raft_state(&txn, region_id)?;
        drop(txn);
        let raft_state =
            persisted.map(|s| RaftLocalState { term: s.term, vote: s.vote, ..Default::default() }).unwrap_or_default();
        let region = Region { region_id, ..Default::default() };
        Ok(Self::with_states(engine, region, raft_state, RaftApplyState::default()))
    }

    /// Writes the initial state of a brand-new region into `txn` (bootstrap).
    pub fn write_initial_state(engine: &Engine, txn: &mut RwTxn<'_>, region: &Region) -> Result<(), StorageError> {
        Self::write_initial_state_at(engine, txn, region, RAFT_INIT_LOG_INDEX)
    }

    /// Like [`Self::write_initial_state`], with the log starting after `index`. A region split off
    /// another starts after the split's own index: every replica applies the split at that index, so
    /// they agree, and the new region's indexes (the revisions of its writes) continue above every
    /// revision its keys had in the parent. A key's revision therefore only grows, across splits too.
    pub fn write_initial_state_at(
        engine: &Engine,
        txn: &mut RwTxn<'_>,
        region: &Region,
        index: u64,
    ) -> Result<(), StorageError> {
        let index = index.max(RAFT_INIT_LOG_INDEX);
        // An uninitialized peer of this region (created by an early message) may have voted: keep its
        // term and vote, so no term ever sees two votes from this store.
        let voted = engine.raft_state(txn, region.region_id)?.filter(|s| s.term > RAFT_INIT_LOG_TERM);
        let raft_state = RaftLocalState {
            term: voted.map_or(RAFT_INIT_LOG_TERM, |s| s.term),
            vote: voted.map_or(0, |s| s.vote),
            commit: index,
            last_index: index,
            last_term: RAFT_INIT_LOG_TERM,
        };
        let apply_state =
            RaftApplyState { applied_index: index, truncated_index: index, truncated_term: RAFT_INIT_LOG_TERM };
        engine.put_raft_state(txn, region.region_id, &raft_state)?;
        engine.put_apply_state(txn, region.region_id, &apply_state)?;
        engine.put_region_state(txn, &crate::proto::RegionLocalState::normal(region.clone()))
    }

    /// An empty peer of a split-off region that wrote its vote in the same round as the split wrote
    /// the region's initial state may have overwritten that state's log bounds. Restores them (the log
    /// starts at the split's index, kept as the truncated index) and keeps the vote.
    pub fn repair_split_state(engine: &Engine, txn: &mut RwTxn<'_>, region_id: u64) -> Result<(), StorageError> {
        let (Some(raft_state), Some(apply_state)) =
            (engine.raft_state(txn, region_id)?, engine.apply_state(txn, region_id)?)
        else {
            return Ok(());
        };
        if raft_state.last_index >= apply_state.truncated_index {
            return Ok(());
        }
        let repaired = RaftLocalState {
            term: raft_state.term.max(apply_state.truncated_term),
            vote: if raft_state.term >= apply_state.truncated_term { raft_state.vote } else { 0 },
            commit: apply_state.truncated_index,
            last_index: apply_state.truncated_index,
            last_term: apply_state.truncated_term,
        };
        engine.put_raft_state(txn, region_id, &repaired)
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

    /// Plans a ready's new entries and hard state on top of every append planned before (the writer
    /// commits them in order), and serves the entries from memory until [`Self::set_persisted`] is
    /// told their ready (`ready_number`) is durable.
    pub fn plan_append(
        &mut self,
        entries: Vec<Entry>,
        hard_state: Option<&HardState>,
        ready_number: u64,
    ) -> AppendPlan {
        self.unpersisted.append(&entries, ready_number);
        let plan = AppendPlan::on(self.region.region_id, self.planned, entries, hard_state);
        self.planned = plan.raft_state;
        plan
    }

    /// Replaces this peer's data, log and states with a snapshot's (verified when it arrived), in the
    /// round's transaction. Returns the durable states and region to install after the commit.
    /// Plans replacing this peer's data, log and states with a snapshot's.
    pub fn plan_snapshot(&self, snapshot: Box<VerifiedSnapshot>) -> SnapshotPlan {
        let old_range = self.is_initialized().then(|| (self.region.start_key.clone(), self.region.end_key.clone()));
        // The log starts after the snapshot; the durable term and vote are kept.
        let (index, term) = (snapshot.index, snapshot.term);
        let raft_state = RaftLocalState { commit: index, last_index: index, last_term: term, ..self.raft_state };
        SnapshotPlan::new(self.region.region_id, old_range, raft_state, snapshot)
    }

    /// Whether this peer holds data (a peer created empty waits for a snapshot).
    pub fn is_initialized(&self) -> bool {
        self.raft_state.last_index > 0
    }

    /// Installs states that a committed transaction made durable, with the readies up to
    /// `ready_number` in it: their entries are read from LMDB from now on.
    pub fn set_persisted(&mut self, raft_state: RaftLocalState, apply_state: RaftApplyState, ready_number: u64) {
        self.raft_state = raft_state;
        self.apply_state = apply_state;
        self.unpersisted.persisted(ready_number);
        if self.unpersisted.is_empty() {
            // Nothing planned is in flight: what raft sees is what is durable (a snapshot set both).
            self.planned = raft_state;
        }
    }

    /// Starts generating a snapshot on a background thread, from one LMDB read transaction: the
    /// region's records and its applied index are read at one point in time.
    fn start_generating(&self) -> mpsc::Receiver<Result<(Snapshot, RegionEpoch), StorageError>> {
        let (tx, rx) = mpsc::channel();
        let (engine, region_id) = (self.engine.clone(), self.region.region_id);
        let spawned = std::thread::Builder::new().name(format!("snap-gen-{region_id}")).spawn(move || {
            let _ = tx.send(generate_snapshot(&engine, region_id));
        });
        if let Err(err) = spawned {
            tracing::error!(region_id, error = %err, "cannot start snapshot generation");
        }
        rx
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
        if high > self.planned.last_index + 1 {
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
        // Below the first unpersisted entry the log is in LMDB; from it on, in memory.
        let split = self.unpersisted.first_index().map_or(high, |first| first.clamp(low, high));
        let mut entries = if low < split {
            let txn = self.engine.read_txn().map_err(raft_err)?;
            self.engine.entries(&txn, self.region.region_id, low, split, max_size).map_err(raft_err)?
        } else {
            Vec::new()
        };
        if split < high && entries.len() as u64 == split - low {
            entries.extend(self.unpersisted.slice(split, high));
            raft::util::limit_size(&mut entries, Some(max_size));
        }
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        if idx == self.apply_state.truncated_index {
            return Ok(self.apply_state.truncated_term);
        }
        self.check_range(idx, idx + 1)?;
        if let Some(term) = self.unpersisted.term(idx) {
            return Ok(term);
        }
        if idx == self.planned.last_index {
            return Ok(self.planned.last_term);
        }
        let txn = self.engine.read_txn().map_err(raft_err)?;
        let entries = self.engine.entries(&txn, self.region.region_id, idx, idx + 1, u64::MAX).map_err(raft_err)?;
        entries.first().map(|e| e.term).ok_or(raft::Error::Store(RaftStorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.apply_state.truncated_index + 1)
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.planned.last_index)
    }

    /// A snapshot for a follower whose next entries were compacted away. Generated in the background;
    /// until it is ready raft hears "temporarily unavailable" and asks again on a later heartbeat.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let unavailable = || raft::Error::Store(RaftStorageError::SnapshotTemporarilyUnavailable);
        let mut state = self.snapshot.borrow_mut();
        if let SnapshotState::Generating(rx) = &*state {
            match rx.try_recv() {
                Ok(Ok((snapshot, epoch))) => *state = SnapshotState::Ready(snapshot, epoch),
                Ok(Err(err)) => {
                    tracing::error!(region_id = self.region.region_id, error = %err, "snapshot generation failed");
                    *state = SnapshotState::Idle;
                }
                Err(mpsc::TryRecvError::Empty) => return Err(unavailable()),
                Err(mpsc::TryRecvError::Disconnected) => *state = SnapshotState::Idle,
            }
        }
        if let SnapshotState::Ready(snapshot, epoch) = &*state {
            // Good for any follower while it is not older than what was asked for and still covers
            // the log's start (entries after it are still in the log).
            let index = snapshot.get_metadata().index;
            // A snapshot older than the follower's addition would not list it as a member.
            let conf = snapshot.get_metadata().get_conf_state();
            let lists_follower = conf.get_voters().contains(&to) || conf.get_learners().contains(&to);
            // Nor one from before a split or a membership change: it would hand the follower a range
            // or members the region no longer has, and a store that holds a region split off since
            // refuses it as overlapping. An idle region's leader (its log never compacted past the
            // cached snapshot) would offer that one forever, and the follower never catch up.
            let current = Some(*epoch) == self.region.epoch;
            if index >= request_index && index >= self.apply_state.truncated_index && lists_follower && current {
                tracing::info!(region_id = self.region.region_id, to, index, "sending a snapshot");
                return Ok(snapshot.clone());
            }
        }
        *state = SnapshotState::Generating(self.start_generating());
        Err(unavailable())
    }
}

/// States that passed their checksums must still hold together: truncated ≤ applied ≤ commit ≤ last
/// index. raft-rs would otherwise panic deep in its start (naming neither the region nor the record);
/// this names both, for the node to exit with.
fn check_consistent(region_id: u64, raft: &RaftLocalState, apply: &RaftApplyState) -> Result<(), StorageError> {
    let (applied, truncated) = (apply.applied_index, apply.truncated_index);
    let detail = if applied < truncated {
        format!("its apply state's applied index {applied} is below its truncated index {truncated}")
    } else if applied > raft.last_index {
        format!("its apply state's applied index {applied} is past its last log index {}", raft.last_index)
    } else if raft.commit > raft.last_index {
        format!("its raft state's commit index {} is past its last log index {}", raft.commit, raft.last_index)
    } else if applied > raft.commit {
        format!("its apply state's applied index {applied} is past its commit index {}", raft.commit)
    } else {
        return Ok(());
    };
    Err(StorageError::Inconsistent { what: format!("persisted state of region {region_id}"), detail })
}

/// Builds the snapshot of a region as of the last committed write transaction; returns it with the
/// epoch of the region it holds.
pub fn generate_snapshot(engine: &Engine, region_id: u64) -> Result<(Snapshot, RegionEpoch), StorageError> {
    let txn = engine.read_txn()?;
    let missing =
        |what: &str| StorageError::Decode { what: format!("{what} of region {region_id}"), detail: "missing".into() };
    let region = engine.region_state(&txn, region_id)?.and_then(|s| s.region).ok_or_else(|| missing("region state"))?;
    let apply_state = engine.apply_state(&txn, region_id)?.ok_or_else(|| missing("apply state"))?;
    let index = apply_state.applied_index;
    let term = if index == apply_state.truncated_index {
        apply_state.truncated_term
    } else {
        engine
            .entries(&txn, region_id, index, index + 1, u64::MAX)?
            .first()
            .map(|e| e.term)
            .ok_or_else(|| missing("applied entry"))?
    };
    let kvs: Vec<SnapshotKv> = engine
        .scan_data(&txn, &region.start_key, &region.end_key, usize::MAX)?
        .into_iter()
        .map(|(key, revision, value)| SnapshotKv { key, value, revision })
        .collect();
    drop(txn);
    let conf_state = conf_state_of(&region);
    let epoch = region.epoch.unwrap_or_default();
    let mut snapshot = Snapshot { data: snapshot::encode(region, kvs).into(), ..Default::default() };
    snapshot.set_metadata(SnapshotMetadata { index, term, conf_state: Some(conf_state).into(), ..Default::default() });
    Ok((snapshot, epoch))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The snapshot `storage` hands raft for peer `to`, once generated (at most 10 s).
    fn snapshot_for(storage: &PeerStorage, to: u64) -> Snapshot {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            match raft::Storage::snapshot(storage, 0, to) {
                Ok(snapshot) => return snapshot,
                Err(raft::Error::Store(RaftStorageError::SnapshotTemporarilyUnavailable)) => {}
                Err(err) => panic!("{err}"),
            }
            assert!(std::time::Instant::now() < deadline, "no snapshot within 10 s");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    fn region_of(snapshot: &Snapshot) -> Region {
        VerifiedSnapshot::verify(snapshot).unwrap().region
    }

    #[test]
    fn a_cached_snapshot_is_not_offered_after_the_region_split() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &crate::storage::EngineOptions::for_tests()).unwrap();
        let peers =
            vec![crate::proto::Peer { peer_id: 1, store_id: 1 }, crate::proto::Peer { peer_id: 2, store_id: 2 }];
        let epoch = Some(RegionEpoch { conf_ver: 1, version: 1 });
        let whole = Region { region_id: 1, epoch, peers, ..Default::default() };
        let mut txn = engine.write_txn().unwrap();
        PeerStorage::write_initial_state(&engine, &mut txn, &whole).unwrap();
        engine.commit(txn).unwrap();
        let mut storage = PeerStorage::load(engine.clone(), whole.clone()).unwrap();
        let before = snapshot_for(&storage, 2);
        assert_eq!(region_of(&before), whole);
        // Offered again while the region is unchanged...
        assert_eq!(region_of(&raft::Storage::snapshot(&storage, 0, 2).unwrap()), whole);

        // ...but not once it has split: the follower gets the region as it is now.
        let left =
            Region { end_key: b"m".to_vec(), epoch: Some(RegionEpoch { conf_ver: 1, version: 2 }), ..whole.clone() };
        let mut txn = engine.write_txn().unwrap();
        engine.put_region_state(&mut txn, &crate::proto::RegionLocalState::normal(left.clone())).unwrap();
        engine.commit(txn).unwrap();
        storage.set_region(left.clone());
        assert_eq!(region_of(&snapshot_for(&storage, 2)), left);
    }

    #[test]
    fn persisted_states_that_do_not_hold_together_are_named() {
        let raft = RaftLocalState { term: 6, vote: 1, commit: 20, last_index: 25, last_term: 6 };
        let apply = RaftApplyState { applied_index: 18, truncated_index: 10, truncated_term: 5 };
        assert!(check_consistent(3, &raft, &apply).is_ok());
        let cases = [
            (raft, RaftApplyState { applied_index: 9, ..apply }, "applied index 9 is below its truncated index 10"),
            (raft, RaftApplyState { applied_index: 26, ..apply }, "applied index 26 is past its last log index 25"),
            (RaftLocalState { commit: 30, ..raft }, apply, "commit index 30 is past its last log index 25"),
            (RaftLocalState { commit: 15, ..raft }, apply, "applied index 18 is past its commit index 15"),
        ];
        for (raft, apply, says) in cases {
            let err = check_consistent(3, &raft, &apply).unwrap_err().to_string();
            assert!(err.contains("region 3") && err.contains(says), "{err}");
        }
    }

    /// Format 3: appends do not rewrite the raft state record unless the term or vote changed, and a
    /// reload finds the log's end in the log (after a conflict truncated it too) and counts what is
    /// applied as committed.
    #[test]
    fn a_reload_reads_the_logs_end_from_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &crate::storage::EngineOptions::for_tests()).unwrap();
        let peers =
            vec![crate::proto::Peer { peer_id: 1, store_id: 1 }, crate::proto::Peer { peer_id: 2, store_id: 2 }];
        let region =
            Region { region_id: 1, epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }), peers, ..Default::default() };
        let mut txn = engine.write_txn().unwrap();
        PeerStorage::write_initial_state(&engine, &mut txn, &region).unwrap();
        engine.commit(txn).unwrap();
        let entry = |index, term| Entry { index, term, ..Default::default() };
        let hs = |term, commit| HardState { term, vote: 1, commit, ..Default::default() };
        let append = |entries: &[Entry], hard_state: HardState| {
            let mut storage = PeerStorage::load(engine.clone(), region.clone()).unwrap();
            let plan = storage.plan_append(entries.to_vec(), Some(&hard_state), 1);
            let mut txn = engine.write_txn().unwrap();
            plan.write(&engine, &mut txn).unwrap();
            engine.commit(txn).unwrap();
            plan.raft_state
        };
        let recorded = || engine.raft_state(&engine.read_txn().unwrap(), 1).unwrap().unwrap();
        // A new term is recorded...
        append(&[entry(6, 6), entry(7, 6), entry(8, 6)], hs(6, 7));
        assert_eq!((recorded().term, recorded().commit), (6, 7));
        // ...a longer log and a new commit index are not.
        let state = append(&[entry(9, 6), entry(10, 6)], hs(6, 9));
        assert_eq!((state.last_index, state.commit), (10, 9));
        assert_eq!((recorded().last_index, recorded().commit), (8, 7));
        let mut txn = engine.write_txn().unwrap();
        engine
            .put_apply_state(&mut txn, 1, &RaftApplyState { applied_index: 9, truncated_index: 5, truncated_term: 5 })
            .unwrap();
        engine.commit(txn).unwrap();
        let loaded = PeerStorage::load(engine.clone(), region.clone()).unwrap();
        let state = loaded.raft_state();
        assert_eq!((state.last_index, state.last_term, state.commit, state.term), (10, 6, 9, 6));
        assert_eq!(raft::Storage::last_index(&loaded).unwrap(), 10);
        // A leader of term 7 overwrites entry 10: the reload ends the log at its entry.
        append(&[entry(10, 7)], hs(7, 9));
        let loaded = PeerStorage::load(engine.clone(), region.clone()).unwrap();
        let state = loaded.raft_state();
        assert_eq!((state.last_index, state.last_term, state.term), (10, 7, 7));
        // One of term 8 overwrites 11 of a longer log: what lay past it is gone on reload too.
        append(&[entry(11, 7), entry(12, 7), entry(13, 7)], hs(7, 9));
        append(&[entry(11, 8)], hs(8, 9));
        let loaded = PeerStorage::load(engine.clone(), region.clone()).unwrap();
        let state = loaded.raft_state();
        assert_eq!((state.last_index, state.last_term, state.term), (11, 8, 8));
        // A log compacted to empty ends at the truncated index.
        let mut txn = engine.write_txn().unwrap();
        engine.delete_entries(&mut txn, 1, 0, 12).unwrap();
        engine
            .put_apply_state(&mut txn, 1, &RaftApplyState { applied_index: 11, truncated_index: 11, truncated_term: 8 })
            .unwrap();
        engine.commit(txn).unwrap();
        let loaded = PeerStorage::load(engine.clone(), region).unwrap();
        let state = loaded.raft_state();
        assert_eq!((state.last_index, state.last_term, state.commit), (11, 8, 11));
    }
}
