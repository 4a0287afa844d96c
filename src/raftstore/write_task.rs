//! One peer's share of a round's transaction, as plain data the writer thread can take: its planned
//! log writes (a snapshot, entries, hard state) and the committed entries it applies, with the region
//! and apply state they apply on. [`WriteTask::write`] puts them into the transaction in the order
//! DESIGN.md §3 fixes (snapshot → entries + hard state → apply); what it did comes back as
//! [`Written`], for the peer to finish its ready with (`Peer::finish_ready`).

use std::collections::BTreeMap;
use std::sync::Arc;

use heed::RwTxn;
use raft::eraftpb::{ConfChange, Entry};

use super::apply::{self, Applied, ApplyEffects, LocalStore};
use super::peer_storage::{AppendPlan, SnapshotPlan};
use crate::proto::{RaftApplyState, RaftLocalState, Region};
use crate::storage::{Engine, StorageError};

pub struct WriteTask {
    pub region_id: u64,
    pub snapshot: Option<SnapshotPlan>,
    pub append: AppendPlan,
    pub apply: Option<ApplyPlan>,
}

/// Committed entries to apply, on the region and apply state they apply on (a snapshot in the same
/// task replaces both).
pub struct ApplyPlan {
    pub region: Region,
    pub apply_state: RaftApplyState,
    /// In log order, from the entry after the applied index.
    pub entries: Vec<Entry>,
    pub store_id: u64,
    /// This store's empty peers (region id → peer id): a split must not start over one it replaced.
    pub empty_peers: Arc<BTreeMap<u64, u64>>,
}

/// What a round's tasks must know of the store they write on.
pub struct LocalWrite {
    pub store_id: u64,
    /// This store's empty peers (region id → peer id), for the splits applied this round.
    pub empty_peers: Arc<BTreeMap<u64, u64>>,
}

/// What a task wrote.
pub struct Written {
    /// The raft state the task leaves durable.
    pub raft_state: RaftLocalState,
    /// The apply state it leaves, if it applied anything (or installed a snapshot).
    pub apply_state: Option<RaftApplyState>,
    /// One outcome per entry applied, in order.
    pub applied: Vec<Applied>,
    /// The region, if a snapshot or an applied entry changed it.
    pub region: Option<Region>,
    pub new_regions: Vec<Region>,
    pub conf_changes: Vec<ConfChange>,
    pub bytes_written: u64,
    pub snapshot_applied: bool,
    pub removed_self: bool,
    pub log_compacted: bool,
    /// Whether the task put anything into the transaction.
    pub wrote: bool,
}

impl WriteTask {
    /// Client commands among the task's new entries, for the group-commit metric.
    pub fn proposals(&self) -> usize {
        self.append.entries().iter().filter(|e| !e.data.is_empty()).count()
    }

    pub fn entries(&self) -> usize {
        self.append.entries().len()
    }

    pub fn write(&self, engine: &Engine, txn: &mut RwTxn<'_>) -> Result<Written, StorageError> {
        // 1. A snapshot replaces the data, the log and the states before anything else is written.
        let installed = match &self.snapshot {
            Some(plan) => {
                let (apply_state, region) = plan.write(engine, txn)?;
                tracing::info!(region_id = self.region_id, index = apply_state.applied_index, "applying a snapshot");
                Some((apply_state, region))
            }
            None => None,
        };
        // 2. Entries and hard state, in the same transaction.
        self.append.write(engine, txn)?;
        let mut written = Written {
            raft_state: self.append.raft_state,
            apply_state: installed.as_ref().map(|(state, _)| *state),
            applied: Vec::new(),
            region: installed.as_ref().map(|(_, region)| region.clone()),
            new_regions: Vec::new(),
            conf_changes: Vec::new(),
            bytes_written: 0,
            snapshot_applied: installed.is_some(),
            removed_self: false,
            log_compacted: false,
            wrote: installed.is_some() || self.append.writes(),
        };
        // 3. Apply committed entries, all already durable in the log. The applied data and the
        //    applied index share this transaction.
        let Some(plan) = &self.apply else { return Ok(written) };
        let (mut region, mut apply_state) = match installed {
            Some((state, region)) => (region, state),
            None => (plan.region.clone(), plan.apply_state),
        };
        let (region_before, before) = (region.clone(), apply_state);
        let mut effects = ApplyEffects::default();
        let local = LocalStore { store_id: plan.store_id, empty_peers: &plan.empty_peers };
        apply::apply_entries(engine, txn, &local, &mut region, &mut apply_state, &plan.entries, &mut effects)?;
        if apply_state != before {
            engine.put_apply_state(txn, self.region_id, &apply_state)?;
            written.wrote = true;
        }
        if region != region_before {
            written.region = Some(region);
        }
        written.apply_state = Some(apply_state);
        written.applied = effects.applied;
        written.new_regions = effects.new_regions;
        written.conf_changes = effects.conf_changes;
        written.bytes_written = effects.bytes_written;
        written.removed_self = effects.removed_self;
        written.log_compacted = effects.log_compacted;
        Ok(written)
    }
}
