//! The scrub's per-region checks: a region's record, raft state, apply state and raft log must
//! agree, in one read transaction (every raftstore round writes them in one transaction, so any
//! committed view is consistent).
//!
//! - A region this store holds (`Normal`) has both states, `truncated ≤ applied ≤ last` and
//!   `commit ≤ last` (the recorded commit index may lag the applied one: format 3 records it only
//!   with a new term or vote), and a log of exactly the entries `(truncated, last]`, contiguous,
//!   where `last` is the log's last entry or, when it holds none, the truncated index.
//! - A destroyed peer (`Tombstone`) has no log and no apply state left; it may keep its raft state
//!   (term and vote), as may an empty peer that has no region record yet; nothing else may exist
//!   without a region record.
//!
//! The raftstore repairs one state of its own right after writing it (an empty peer's vote written in
//! the round that applied its region's split), so a region that fails is checked again a moment
//! later, and reported only if it still fails.

use std::ops::Bound;
use std::time::Duration;

use super::{Pass, Table};
use crate::proto::{PeerState, RaftApplyState, RaftLocalState, RegionLocalState};
use crate::storage::codec;
use crate::storage::keys;
use crate::storage::{ReadTxn, Result};

/// How long a region that failed waits before its second look.
const SECOND_LOOK_AFTER: Duration = Duration::from_millis(200);

impl Pass<'_> {
    pub(super) fn check_region(&mut self, region_id: u64) -> Result<()> {
        self.report.regions_checked += 1;
        let first = self.region_problems(region_id)?;
        if first.is_empty() {
            return Ok(());
        }
        std::thread::sleep(SECOND_LOOK_AFTER);
        for (table, problem) in self.region_problems(region_id)? {
            self.found(table, format!("region {region_id}"), Some(region_id), problem);
        }
        Ok(())
    }

    /// What is wrong with a region, read in one transaction. Damaged records are left out: the walk
    /// over their table reported them.
    fn region_problems(&self, region_id: u64) -> Result<Vec<(Table, String)>> {
        let txn = self.engine.read_txn()?;
        let key = keys::region_key(region_id);
        let (Ok(region), Ok(raft_state), Ok(apply_state)) = (
            load::<RegionLocalState>(self, &txn, Table::Region, &key),
            load::<RaftLocalState>(self, &txn, Table::RaftState, &key),
            load::<RaftApplyState>(self, &txn, Table::ApplyState, &key),
        ) else {
            return Ok(Vec::new());
        };
        let log = log_indexes(self, &txn, region_id);
        let mut problems = Vec::new();
        let state = region.as_ref().map(|r| r.state());
        match (state, raft_state, apply_state) {
            (Some(PeerState::Normal), Some(raft_state), Some(apply_state)) => {
                let Some(region) = region.and_then(|r| r.region) else {
                    problems.push((Table::Region, "a region record without its region".into()));
                    return Ok(problems);
                };
                if !region.end_key.is_empty() && region.start_key >= region.end_key {
                    problems.push((Table::Region, "its range is empty or reversed".into()));
                }
                let (truncated, applied) = (apply_state.truncated_index, apply_state.applied_index);
                // The log's end is its last entry (the raft state does not keep it, see
                // `PeerStorage::load`); the recorded commit index may lag, never lead.
                let last =
                    log.iter().rev().find_map(|index| index.as_ref().ok()).map_or(truncated, |i| (*i).max(truncated));
                let commit = raft_state.commit;
                if !(truncated <= applied && applied <= last && commit <= last) {
                    let order = format!("truncated {truncated}, applied {applied}, commit {commit}, last {last}");
                    problems.push((Table::ApplyState, format!("indexes out of order: {order}")));
                }
                if let Some(gap) = log_gap(&log, truncated, last) {
                    problems.push((Table::RaftLog, gap));
                }
            }
            (Some(PeerState::Normal), raft_state, apply_state) => {
                if raft_state.is_none() {
                    problems.push((Table::RaftState, "a region this store holds has no raft state".into()));
                }
                if apply_state.is_none() {
                    problems.push((Table::ApplyState, "a region this store holds has no apply state".into()));
                }
            }
            (held, _, apply_state) => {
                let whose = match held {
                    Some(_) => "a destroyed peer",
                    None => "a region this store has no record of",
                };
                if apply_state.is_some() {
                    problems.push((Table::ApplyState, format!("an apply state of {whose}")));
                }
                if let Some(Ok(first)) = log.first() {
                    problems.push((Table::RaftLog, format!("raft log entries (from {first}) of {whose}")));
                }
            }
        }
        Ok(problems)
    }
}

/// A framed record, silently: `Err` if damaged (the table walk reports it), `Ok(None)` if absent.
fn load<M: prost::Message + Default>(
    pass: &Pass<'_>,
    txn: &ReadTxn<'_>,
    table: Table,
    key: &[u8],
) -> Result<Option<M>, ()> {
    match pass.engine.db(table).get(txn, key) {
        Ok(None) => Ok(None),
        Ok(Some(stored)) => {
            let payload = codec::verify_frame(table, key, stored).map_err(drop)?;
            M::decode(payload).map(Some).map_err(drop)
        }
        Err(_) => Err(()),
    }
}

/// The indexes of a region's log, in key order (an `Err` where LMDB could not go on).
fn log_indexes(pass: &Pass<'_>, txn: &ReadTxn<'_>, region_id: u64) -> Vec<Result<u64, String>> {
    let (from, to) = (keys::raft_log_key(region_id, 0), keys::raft_log_key(region_id + 1, 0));
    let range = (Bound::Included(&from[..]), Bound::Excluded(&to[..]));
    let iter = match pass.engine.db(Table::RaftLog).range(txn, &range) {
        Ok(iter) => iter,
        Err(err) => return vec![Err(err.to_string())],
    };
    let mut out = Vec::new();
    for item in iter {
        match item {
            Ok((key, _)) => out.push(Ok(keys::decode_raft_log_key(key).map_or(0, |(_, index)| index))),
            Err(err) => {
                out.push(Err(err.to_string()));
                break;
            }
        }
    }
    out
}

/// Why a log is not exactly the entries `(truncated, last]`, if it is not.
fn log_gap(log: &[Result<u64, String>], truncated: u64, last: u64) -> Option<String> {
    let mut expected = truncated + 1;
    for index in log {
        let index = match index {
            Ok(index) => *index,
            Err(err) => return Some(format!("LMDB cannot read the log past index {}: {err}", expected - 1)),
        };
        if index <= truncated {
            return Some(format!("entry {index} is at or below the truncated index {truncated}"));
        }
        if index > last {
            return Some(format!("entry {index} is past the last index {last}"));
        }
        if index != expected {
            return Some(format!("entries {expected} to {} are missing", index - 1));
        }
        expected += 1;
    }
    (expected <= last).then(|| format!("entries {expected} to {last} are missing"))
}

#[cfg(test)]
mod tests {
    use super::log_gap;

    #[test]
    fn a_log_must_be_exactly_its_bounds() {
        let log = |indexes: &[u64]| indexes.iter().map(|i| Ok(*i)).collect::<Vec<_>>();
        assert_eq!(log_gap(&log(&[6, 7, 8]), 5, 8), None);
        assert_eq!(log_gap(&log(&[]), 5, 5), None);
        assert_eq!(log_gap(&log(&[6, 8]), 5, 8).unwrap(), "entries 7 to 7 are missing");
        assert_eq!(log_gap(&log(&[6, 7]), 5, 8).unwrap(), "entries 8 to 8 are missing");
        assert_eq!(log_gap(&log(&[5, 6]), 5, 6).unwrap(), "entry 5 is at or below the truncated index 5");
        assert_eq!(log_gap(&log(&[6, 7, 9]), 5, 7).unwrap(), "entry 9 is past the last index 7");
    }
}
