//! Split checks, off the raftstore thread: measure a region from one LMDB read transaction, find the
//! key that halves it by size, and, when it should split, get the new region and peer ids (which may
//! mean a round trip to placement). The result goes back to the store as a message; the store
//! proposes the split only if the region's epoch is still the one that was measured.

use std::sync::Arc;

use crossbeam_channel::{Receiver, Sender};

pub use super::msg::SplitPlan;
use super::msg::StoreMsg;
pub use crate::ids::IdAllocator;
use crate::proto::Region;
use crate::storage::Engine;

/// What a split check should do.
pub struct SplitCheckTask {
    pub region: Region,
    /// Split when the region is larger than this.
    pub max_size: u64,
    /// Split even when smaller (an operator asked for it), at this key if given.
    pub forced: Option<Option<Vec<u8>>>,
}

/// Starts the split-check worker; its queue is unbounded but holds at most one task per region (the
/// peer tracks the check in flight). It stops once the queue's sender and the store's inbox are gone;
/// join it before reopening the environment (it holds a handle on it).
pub fn start(
    engine: Engine,
    ids: Arc<dyn IdAllocator>,
    store_inbox: Sender<StoreMsg>,
) -> std::io::Result<(Sender<SplitCheckTask>, std::thread::JoinHandle<()>)> {
    let (tx, rx) = crossbeam_channel::unbounded();
    let handle =
        std::thread::Builder::new().name("split-check".into()).spawn(move || run(engine, ids, store_inbox, rx))?;
    Ok((tx, handle))
}

fn run(engine: Engine, ids: Arc<dyn IdAllocator>, store_inbox: Sender<StoreMsg>, tasks: Receiver<SplitCheckTask>) {
    for task in tasks {
        let region_id = task.region.region_id;
        let epoch = task.region.epoch.unwrap_or_default();
        let result = check(&engine, &task, ids.as_ref());
        let (size, keys, plan) = match result {
            Ok(measured) => measured,
            Err(err) => {
                tracing::warn!(region_id, error = %err, "split check failed");
                (0, 0, None)
            }
        };
        // A blocking send: a lost result would leave the region's check in flight for good, and the
        // store drains its inbox every round.
        if store_inbox.send(StoreMsg::SplitCheckResult { region_id, epoch, size, keys, plan }).is_err() {
            return; // the store stopped
        }
    }
}

/// Measures the region and decides the split.
fn check(
    engine: &Engine,
    task: &SplitCheckTask,
    ids: &dyn IdAllocator,
) -> Result<(u64, u64, Option<SplitPlan>), String> {
    let region = &task.region;
    let txn = engine.read_txn().map_err(|e| e.to_string())?;
    let records = engine.scan_data(&txn, &region.start_key, &region.end_key, usize::MAX).map_err(|e| e.to_string())?;
    drop(txn);
    let sizes: Vec<u64> = records.iter().map(|(key, _, value)| (key.len() + value.len()) as u64).collect();
    let size: u64 = sizes.iter().sum();
    let keys = records.len() as u64;
    let split_key = match &task.forced {
        Some(Some(key)) => Some(key.clone()),
        Some(None) => middle_key(&records, &sizes, size),
        None if size > task.max_size => middle_key(&records, &sizes, size),
        None => None,
    };
    let Some(split_key) = split_key else { return Ok((size, keys, None)) };
    let mut allocated = ids.alloc(1 + region.peers.len())?;
    let new_peer_ids = allocated.split_off(1);
    Ok((size, keys, Some(SplitPlan { split_key, new_region_id: allocated[0], new_peer_ids })))
}

/// The first key at which the cumulative size passes half the region, never the region's first key
/// (the left part must not be empty).
fn middle_key(records: &[(Vec<u8>, u64, Vec<u8>)], sizes: &[u64], total: u64) -> Option<Vec<u8>> {
    let mut so_far = 0;
    for (i, (key, _, _)) in records.iter().enumerate() {
        if i > 0 && so_far * 2 >= total {
            return Some(key.clone());
        }
        so_far += sizes[i];
    }
    (records.len() >= 2).then(|| records[records.len() - 1].0.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_middle_key_halves_the_region_and_never_is_the_first() {
        let records: Vec<(Vec<u8>, u64, Vec<u8>)> =
            (0..10).map(|i| (format!("k{i}").into_bytes(), 1, vec![0; 8])).collect();
        let sizes: Vec<u64> = records.iter().map(|(k, _, v)| (k.len() + v.len()) as u64).collect();
        let total = sizes.iter().sum();
        assert_eq!(middle_key(&records, &sizes, total), Some(b"k5".to_vec()));
        assert_eq!(middle_key(&records[..2], &sizes[..2], sizes[0] + sizes[1]), Some(b"k1".to_vec()));
        assert_eq!(middle_key(&records[..1], &sizes[..1], sizes[0]), None);
    }
}
