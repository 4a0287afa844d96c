//! The group's raft log in placement's own LMDB environment, next to the records it replicates:
//! database `placement-raft` holds the entries (`e` + index, big-endian), the hard state, the conf
//! state, the truncated index and term, and the applied index and term; database `placement` holds
//! the records (`state/persist.rs`).
//!
//! The invariants the node's raft storage keeps, kept here: the driver writes the entries and hard
//! state of a ready in one transaction and sends the messages that promise them only after it
//! committed; an applied entry's records and the applied index go in one transaction. Raft reads
//! the log from the in-memory copy this keeps (the log is short: it is compacted every few hundred
//! entries), which the driver changes only along with the transaction that writes it.

use heed::types::Bytes;
use heed::{Database, Env, RwTxn};
use prost::Message as _;
use raft::eraftpb::{ConfState, Entry, EntryType, HardState, Snapshot};
use raft::{GetEntriesContext, RaftState, StorageError};

use super::GroupError;
use crate::proto::{PlacementRaftEntry, PlacementRaftSnapshot, PlacementRecord};

const HARD_STATE_KEY: &[u8] = b"hard_state";
const CONF_STATE_KEY: &[u8] = b"conf_state";
const TRUNCATED_KEY: &[u8] = b"truncated";
const APPLIED_KEY: &[u8] = b"applied";
const ENTRY_PREFIX: &[u8] = b"e";

fn entry_key(index: u64) -> Vec<u8> {
    [ENTRY_PREFIX, &index.to_be_bytes()].concat()
}

fn pair(index: u64, term: u64) -> Vec<u8> {
    [index.to_be_bytes(), term.to_be_bytes()].concat()
}

fn unpair(what: &str, bytes: &[u8]) -> Result<(u64, u64), GroupError> {
    let (Some(index), Some(term)) = (bytes.get(..8), bytes.get(8..16)) else {
        return Err(GroupError::Corrupt(format!("{what} is {} bytes, not 16", bytes.len())));
    };
    let number = |b: &[u8]| u64::from_be_bytes(b.try_into().unwrap_or_default());
    Ok((number(index), number(term)))
}

fn decode<M: protobuf::Message>(what: &str, bytes: &[u8]) -> Result<M, GroupError> {
    M::parse_from_bytes(bytes).map_err(|e| GroupError::Corrupt(format!("{what}: {e}")))
}

fn encode(what: &str, message: &impl protobuf::Message) -> Result<Vec<u8>, GroupError> {
    message.write_to_bytes().map_err(|e| GroupError::Corrupt(format!("cannot encode {what}: {e}")))
}

/// The applied index and term the log database holds.
pub(super) fn applied_in(txn: &heed::RoTxn, raft: Database<Bytes, Bytes>) -> Result<(u64, u64), GroupError> {
    Ok(raft.get(txn, APPLIED_KEY)?.map(|b| unpair("the applied state", b)).transpose()?.unwrap_or((0, 0)))
}

pub(super) struct LogStore {
    env: Env,
    raft: Database<Bytes, Bytes>,
    records: Database<Bytes, Bytes>,
    hard_state: HardState,
    conf_state: ConfState,
    /// The last entry compacted away (or the snapshot installed): index and term.
    truncated: (u64, u64),
    /// The entries after `truncated`, in order.
    entries: Vec<Entry>,
    /// The last entry whose records are in `records`: index and term.
    applied: (u64, u64),
}

impl LogStore {
    /// Opens the log of member `voters`' group; a new one starts empty with every member a voter. A
    /// log written by a group of other members is refused: membership is fixed at start.
    pub(super) fn open(
        env: Env,
        raft: Database<Bytes, Bytes>,
        records: Database<Bytes, Bytes>,
        voters: &[u64],
    ) -> Result<LogStore, GroupError> {
        let txn = env.read_txn()?;
        let hard_state = match raft.get(&txn, HARD_STATE_KEY)? {
            Some(bytes) => decode("the hard state", bytes)?,
            None => HardState::default(),
        };
        let conf_state = match raft.get(&txn, CONF_STATE_KEY)? {
            Some(bytes) => decode::<ConfState>("the conf state", bytes)?,
            None => ConfState { voters: voters.to_vec(), ..Default::default() },
        };
        if conf_state.voters != voters {
            return Err(GroupError::Membership { stored: conf_state.voters.len(), given: voters.len() });
        }
        let truncated = raft.get(&txn, TRUNCATED_KEY)?.map(|b| unpair("the truncated state", b)).transpose()?;
        let applied = applied_in(&txn, raft)?;
        let mut entries = Vec::new();
        for item in raft.prefix_iter(&txn, ENTRY_PREFIX)? {
            let (_, bytes) = item?;
            entries.push(decode::<Entry>("a log entry", bytes)?);
        }
        drop(txn);
        let store = LogStore {
            env,
            raft,
            records,
            hard_state,
            conf_state,
            truncated: truncated.unwrap_or((0, 0)),
            entries,
            applied,
        };
        let mut txn = store.env.write_txn()?;
        let conf = encode("the conf state", &store.conf_state)?;
        store.raft.put(&mut txn, CONF_STATE_KEY, &conf)?;
        txn.commit()?;
        let expected = store.truncated.0 + 1;
        if store.entries.first().is_some_and(|e| e.index != expected) {
            return Err(GroupError::Corrupt(format!("the log starts at {expected} but holds no entry there")));
        }
        Ok(store)
    }

    pub(super) fn records(&self) -> Database<Bytes, Bytes> {
        self.records
    }

    pub(super) fn raft_db(&self) -> Database<Bytes, Bytes> {
        self.raft
    }

    pub(super) fn applied(&self) -> (u64, u64) {
        self.applied
    }

    pub(super) fn first(&self) -> u64 {
        self.truncated.0 + 1
    }

    fn last(&self) -> u64 {
        self.entries.last().map_or(self.truncated.0, |e| e.index)
    }

    /// Appends `entries`, replacing the entries from the first one's index on.
    pub(super) fn append(&mut self, txn: &mut RwTxn, entries: &[Entry]) -> Result<(), GroupError> {
        let Some(first) = entries.first() else { return Ok(()) };
        for index in first.index..=self.last() {
            self.raft.delete(txn, &entry_key(index))?;
        }
        for entry in entries {
            self.raft.put(txn, &entry_key(entry.index), &encode("a log entry", entry)?)?;
        }
        let keep = first.index.saturating_sub(self.first()) as usize;
        self.entries.truncate(keep);
        self.entries.extend_from_slice(entries);
        Ok(())
    }

    pub(super) fn set_hard_state(&mut self, txn: &mut RwTxn, hard_state: &HardState) -> Result<(), GroupError> {
        self.raft.put(txn, HARD_STATE_KEY, &encode("the hard state", hard_state)?)?;
        self.hard_state = hard_state.clone();
        Ok(())
    }

    pub(super) fn set_commit(&mut self, txn: &mut RwTxn, commit: u64) -> Result<(), GroupError> {
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = commit;
        self.set_hard_state(txn, &hard_state)
    }

    /// Applies a committed entry: its records and the applied index, in `txn`. Returns the entry's
    /// change, if it carried one.
    pub(super) fn apply(&mut self, txn: &mut RwTxn, entry: &Entry) -> Result<Option<PlacementRaftEntry>, GroupError> {
        let change = if entry.get_entry_type() == EntryType::EntryNormal && !entry.data.is_empty() {
            let change = PlacementRaftEntry::decode(&entry.data[..])
                .map_err(|e| GroupError::Corrupt(format!("entry {}: {e}", entry.index)))?;
            self.write_records(txn, &change.records)?;
            Some(change)
        } else {
            None
        };
        self.applied = (entry.index, entry.term);
        self.raft.put(txn, APPLIED_KEY, &pair(entry.index, entry.term))?;
        Ok(change)
    }

    fn write_records(&self, txn: &mut RwTxn, records: &[PlacementRecord]) -> Result<(), GroupError> {
        for record in records {
            if record.delete {
                self.records.delete(txn, &record.key)?;
            } else {
                self.records.put(txn, &record.key, &record.value)?;
            }
        }
        Ok(())
    }

    /// Drops the entries up to `index` (applied, so a snapshot of the records covers them).
    pub(super) fn compact(&mut self, txn: &mut RwTxn, index: u64) -> Result<(), GroupError> {
        if index <= self.truncated.0 || index > self.applied.0 {
            return Ok(());
        }
        let term = self.term_of(index).map_err(|e| GroupError::Corrupt(format!("compacting to {index}: {e}")))?;
        for i in self.first()..=index {
            self.raft.delete(txn, &entry_key(i))?;
        }
        let drop = (index + 1 - self.first()) as usize;
        self.entries.drain(..drop.min(self.entries.len()));
        self.truncated = (index, term);
        self.raft.put(txn, TRUNCATED_KEY, &pair(index, term))?;
        Ok(())
    }

    /// Installs a snapshot from the leader: every record replaced, the log empty after it.
    pub(super) fn install(&mut self, txn: &mut RwTxn, snapshot: &Snapshot) -> Result<(), GroupError> {
        let data = PlacementRaftSnapshot::decode(&snapshot.data[..])
            .map_err(|e| GroupError::Corrupt(format!("the snapshot from the leader: {e}")))?;
        self.records.clear(txn)?;
        self.write_records(txn, &data.records)?;
        let (index, term) = (snapshot.get_metadata().index, snapshot.get_metadata().term);
        for i in self.first()..=self.last() {
            self.raft.delete(txn, &entry_key(i))?;
        }
        self.entries.clear();
        self.truncated = (index, term);
        self.applied = (index, term);
        self.raft.put(txn, TRUNCATED_KEY, &pair(index, term))?;
        self.raft.put(txn, APPLIED_KEY, &pair(index, term))?;
        let mut hard_state = self.hard_state.clone();
        hard_state.commit = hard_state.commit.max(index);
        self.set_hard_state(txn, &hard_state)
    }

    fn term_of(&self, index: u64) -> raft::Result<u64> {
        if index == self.truncated.0 {
            return Ok(self.truncated.1);
        }
        if index < self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        match self.entries.get((index - self.first()) as usize) {
            Some(entry) => Ok(entry.term),
            None => Err(raft::Error::Store(StorageError::Unavailable)),
        }
    }
}

impl raft::Storage for LogStore {
    fn initial_state(&self) -> raft::Result<RaftState> {
        Ok(RaftState::new(self.hard_state.clone(), self.conf_state.clone()))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        if low <= self.truncated.0 {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > self.last() + 1 {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let from = (low - self.first()) as usize;
        let to = (high - self.first()) as usize;
        let mut entries = self.entries[from..to].to_vec();
        raft::util::limit_size(&mut entries, max_size.into());
        Ok(entries)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        self.term_of(idx)
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.first())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.last())
    }

    /// Every record as of the applied index (they are small: stores, regions, users).
    fn snapshot(&self, _request_index: u64, _to: u64) -> raft::Result<Snapshot> {
        let failed = |e: heed::Error| raft::Error::Store(StorageError::Other(Box::new(e)));
        let txn = self.env.read_txn().map_err(failed)?;
        let mut data = PlacementRaftSnapshot::default();
        for item in self.records.iter(&txn).map_err(failed)? {
            let (key, value) = item.map_err(failed)?;
            data.records.push(PlacementRecord { key: key.to_vec(), value: value.to_vec(), delete: false });
        }
        let mut snapshot = Snapshot { data: data.encode_to_vec().into(), ..Default::default() };
        let metadata = snapshot.mut_metadata();
        metadata.index = self.applied.0;
        metadata.term = self.applied.1;
        metadata.set_conf_state(self.conf_state.clone());
        Ok(snapshot)
    }
}
