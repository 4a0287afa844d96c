//! Where a change's records go, and how its caller learns they are safe: [`Sink::Local`] hands them
//! to the writer thread of a single placement (safe = durable in LMDB); [`Sink::Group`] proposes
//! them to the placement group's raft (safe = committed and applied on this replica, the leader).
//! Both number the changes in the order they were made under placement's lock, and a caller waits
//! on a [`Ledger`] (`ledger.rs`) until its number (and every earlier one) is safe, or has failed.

use std::sync::Arc;

use parking_lot::Mutex;

use super::ledger::{Failure, Ledger};
use super::persist::{Write, Writer};
use super::PlacementError;
use crate::proto::PlacementRecord;

/// One change of a group's leader, on its way to raft.
#[derive(Debug)]
pub struct Proposal {
    /// The in-memory state that made it (see [`crate::group`]): a later one never answers for it.
    pub instance: u64,
    pub seq: u64,
    pub records: Vec<PlacementRecord>,
}

/// Hands a proposal to the group's driver; false when the driver is gone.
pub type Propose = Box<dyn Fn(Proposal) -> bool + Send + Sync>;

pub(crate) struct GroupSink {
    pub(crate) instance: u64,
    /// The last sequence number given out, locked while a proposal is handed over so numbers follow
    /// the order of the proposals.
    seq: Mutex<u64>,
    propose: Propose,
    pub(crate) ledger: Arc<Ledger>,
}

pub(crate) enum Sink {
    Local(Writer),
    Group(GroupSink),
}

impl GroupSink {
    pub(crate) fn new(instance: u64, propose: Propose, ledger: Arc<Ledger>) -> GroupSink {
        GroupSink { instance, seq: Mutex::new(0), propose, ledger }
    }
}

impl Sink {
    /// Queues `writes` (none: nothing new) and returns the number to wait for: the last one queued,
    /// so a caller also waits for earlier changes its answer may depend on.
    pub(crate) fn queue(&self, writes: Vec<Write>) -> u64 {
        match self {
            Sink::Local(writer) => writer.queue(writes),
            Sink::Group(group) => {
                let mut seq = group.seq.lock();
                if writes.is_empty() {
                    return *seq;
                }
                *seq += 1;
                let records = writes
                    .into_iter()
                    .map(|(key, value)| PlacementRecord {
                        key,
                        delete: value.is_none(),
                        value: value.unwrap_or_default(),
                    })
                    .collect();
                if !(group.propose)(Proposal { instance: group.instance, seq: *seq, records }) {
                    group.ledger.close(Failure::Unavailable("the placement group has stopped".into()));
                }
                *seq
            }
        }
    }

    pub(crate) fn wait(&self, seq: u64) -> Result<(), PlacementError> {
        match self {
            Sink::Local(writer) => writer.ledger().wait(seq),
            Sink::Group(group) => group.ledger.wait(seq),
        }
    }
}

#[cfg(test)]
impl Sink {
    /// For tests that look at the records of a single placement.
    pub(crate) fn storage(&self) -> (&heed::Env, heed::Database<heed::types::Bytes, heed::types::Bytes>) {
        match self {
            Sink::Local(writer) => writer.storage(),
            Sink::Group(_) => unreachable!("tests read a group's records through its own environment"),
        }
    }
}
