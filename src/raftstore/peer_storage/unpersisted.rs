//! The tail of a peer's log that raft was handed as written while the writer thread has not yet
//! committed it (see `raftstore::writer`).
//!
//! raft-rs 0.7 drops entries from its own unstable log as soon as a ready is advanced
//! (`advance_append_async`, which the raftstore calls before handing the ready's writes to the
//! writer), and reads them through `raft::Storage` from then on. Until their transaction commits
//! they are not in LMDB: the storage serves them from here. Each entry is tagged with the number of
//! the ready that wrote it, and leaves once that ready is reported persisted.

use std::collections::VecDeque;

use raft::eraftpb::Entry;

#[derive(Default)]
pub struct Unpersisted {
    /// In index order, contiguous. A later ready that overwrites a suffix (a new leader's log won)
    /// replaces those entries, so the tags never decrease along the queue.
    entries: VecDeque<(Entry, u64)>,
}

impl Unpersisted {
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The first index served from here; below it, the log is read from LMDB.
    pub fn first_index(&self) -> Option<u64> {
        self.entries.front().map(|(e, _)| e.index)
    }

    /// The last entry's (index, term).
    #[cfg(test)]
    pub fn last(&self) -> Option<(u64, u64)> {
        self.entries.back().map(|(e, _)| (e.index, e.term))
    }

    fn position(&self, index: u64) -> Option<usize> {
        let first = self.first_index()?;
        let at = usize::try_from(index.checked_sub(first)?).ok()?;
        (at < self.entries.len()).then_some(at)
    }

    pub fn term(&self, index: u64) -> Option<u64> {
        self.position(index).map(|at| self.entries[at].0.term)
    }

    /// Entries `[low, high)`, all of which must be here (the caller splits the range at
    /// [`Self::first_index`]).
    pub fn slice(&self, low: u64, high: u64) -> Vec<Entry> {
        match self.position(low) {
            Some(from) => {
                let to = (from + (high - low) as usize).min(self.entries.len());
                self.entries.range(from..to).map(|(e, _)| e.clone()).collect()
            }
            None => Vec::new(),
        }
    }

    /// Adds a ready's new entries: those at and past the first one's index replace what was here.
    pub fn append(&mut self, entries: &[Entry], ready_number: u64) {
        let Some(first) = entries.first() else { return };
        while self.entries.back().is_some_and(|(e, _)| e.index >= first.index) {
            self.entries.pop_back();
        }
        self.entries.extend(entries.iter().map(|e| (e.clone(), ready_number)));
    }

    /// Readies up to `ready_number` are durable: their entries are read from LMDB from now on.
    pub fn persisted(&mut self, ready_number: u64) {
        while self.entries.front().is_some_and(|(_, number)| *number <= ready_number) {
            self.entries.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(index: u64, term: u64) -> Entry {
        Entry { index, term, ..Default::default() }
    }

    #[test]
    fn an_overwritten_suffix_stays_until_its_own_ready_is_durable() {
        let mut tail = Unpersisted::default();
        tail.append(&[entry(10, 2), entry(11, 2), entry(12, 2)], 1);
        // A new leader's entry 11 of term 3 replaces 11 and 12 before ready 1 is durable.
        tail.append(&[entry(11, 3)], 2);
        assert_eq!(tail.last(), Some((11, 3)));
        assert_eq!(tail.term(10), Some(2));
        assert_eq!(tail.slice(10, 12).iter().map(|e| (e.index, e.term)).collect::<Vec<_>>(), [(10, 2), (11, 3)]);
        // Ready 1 on disk holds 11 of term 2: the tail must keep serving ready 2's.
        tail.persisted(1);
        assert_eq!(tail.first_index(), Some(11));
        assert_eq!(tail.term(11), Some(3));
        assert_eq!(tail.term(10), None, "10 is read from LMDB now");
        tail.persisted(2);
        assert!(tail.is_empty());
    }
}
