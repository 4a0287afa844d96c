//! Placement's state in its LMDB environment, one record per thing, each framed with its crc32c:
//! - `meta`: the cluster id, the next id, whether the first region was bootstrapped, the schedulers
//!   switched off (a [`PlacementState`] without stores or regions);
//! - `auth`: the [`crate::proto::AuthState`] (users, roles, the token key);
//! - `store/<store_id>`: a [`StoreInfo`]; `region/<region_id>`: a [`RegionInfo`] (ids big-endian).
//!
//! A change writes only the records it touched: callers mark them dirty in [`Inner`] while they hold
//! placement's lock, and [`Placement::change`] hands them to one writer thread before it lets go of
//! the lock, so writes reach the disk in the order their changes were made. The caller then waits,
//! without the lock, until the writer reports them durable: an fsync never holds up readers or the
//! other stores' heartbeats, and the writes queued meanwhile share one commit.
//!
//! An older placement kept everything in one `state` record; [`load`] converts it on first open.

use std::collections::BTreeMap;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use super::ledger::{Failure, Ledger};
use super::*;

/// The single record of the old layout, converted at open.
pub(crate) const LEGACY_STATE_KEY: &[u8] = b"state";
pub(crate) const META_KEY: &[u8] = b"meta";
const STORE_PREFIX: &[u8] = b"store/";
const REGION_PREFIX: &[u8] = b"region/";
const AUTH_KEY: &[u8] = b"auth";

fn record_key(prefix: &[u8], id: u64) -> Vec<u8> {
    [prefix, &id.to_be_bytes()].concat()
}

/// Records changed in memory and not yet handed to the writer.
#[derive(Debug, Default)]
pub(super) struct Dirty {
    pub meta: bool,
    pub stores: BTreeSet<u64>,
    /// Written if the region is in the tree, deleted if it is not (replaced by a split's halves).
    pub regions: BTreeSet<u64>,
    pub auth: bool,
    /// The old single record is still there (converted, to be deleted).
    pub legacy: bool,
}

impl Dirty {
    pub(super) fn is_empty(&self) -> bool {
        !self.meta && !self.auth && !self.legacy && self.stores.is_empty() && self.regions.is_empty()
    }
}

/// `None` deletes the key.
pub(crate) type Write = (Vec<u8>, Option<Vec<u8>>);

fn frame(message: &impl prost::Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut framed = crc32c::crc32c(&payload).to_le_bytes().to_vec();
    framed.extend_from_slice(&payload);
    framed
}

/// A key as people read it: `meta`, `store/4`, `region/12`.
fn key_name(key: &[u8]) -> String {
    for prefix in [STORE_PREFIX, REGION_PREFIX] {
        if let Some(id) = key.strip_prefix(prefix).and_then(|id| <[u8; 8]>::try_from(id).ok()) {
            return format!("{}{}", String::from_utf8_lossy(prefix), u64::from_be_bytes(id));
        }
    }
    String::from_utf8_lossy(key).into_owned()
}

fn unframe<M: prost::Message + Default>(key: &[u8], stored: &[u8]) -> Result<M, PlacementError> {
    let what = key_name(key);
    let Some((crc, payload)) = stored.split_first_chunk::<4>() else {
        return Err(PlacementError::Corrupt(format!("record {what:?} is shorter than its checksum")));
    };
    if u32::from_le_bytes(*crc) != crc32c::crc32c(payload) {
        return Err(PlacementError::Corrupt(format!("record {what:?}: checksum mismatch")));
    }
    M::decode(payload).map_err(|e| PlacementError::Corrupt(format!("record {what:?}: {e}")))
}

impl Inner {
    /// The records `dirty` names, as they are now; clears it.
    pub(super) fn take_writes(&mut self) -> Vec<Write> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut writes = Vec::new();
        if dirty.legacy {
            writes.push((LEGACY_STATE_KEY.to_vec(), None));
        }
        if dirty.meta {
            let meta = PlacementState {
                cluster_id: self.cluster_id,
                // Every id below the mark may have been handed out: a restart (or the next leader)
                // starts there.
                next_id: self.id_mark,
                bootstrapped: self.bootstrapped,
                disabled_schedulers: self.disabled_schedulers.iter().cloned().collect(),
                ..Default::default()
            };
            writes.push((META_KEY.to_vec(), Some(frame(&meta))));
        }
        if dirty.auth {
            writes.push((AUTH_KEY.to_vec(), Some(frame(&self.auth.to_proto()))));
        }
        for store_id in dirty.stores {
            let store = self.stores.get(&store_id).map(frame);
            writes.push((record_key(STORE_PREFIX, store_id), store));
        }
        for region_id in dirty.regions {
            self.region_log.touch(region_id);
            let region = self.regions.get(region_id).map(frame);
            writes.push((record_key(REGION_PREFIX, region_id), region));
        }
        writes
    }

    /// Marks every record dirty (a new environment, or one converted from the old layout).
    fn mark_all_dirty(&mut self) {
        self.dirty.meta = true;
        self.dirty.auth = true;
        self.dirty.stores.extend(self.stores.keys().copied());
        self.dirty.regions.extend(self.regions.iter().filter_map(|info| info.region.as_ref().map(|r| r.region_id)));
    }
}

/// The cluster id the meta record of `db` holds (a group's follower reports it).
pub(crate) fn stored_cluster_id(txn: &heed::RoTxn, db: Database<Bytes, Bytes>) -> Result<Option<u64>, PlacementError> {
    let Some(stored) = db.get(txn, META_KEY)? else { return Ok(None) };
    Ok(Some(unframe::<PlacementState>(META_KEY, stored)?.cluster_id))
}

/// The state the records hold, if there is a meta record.
pub(super) fn read_records(
    txn: &heed::RoTxn,
    db: Database<Bytes, Bytes>,
) -> Result<Option<PlacementState>, PlacementError> {
    let Some(stored) = db.get(txn, META_KEY)? else { return Ok(None) };
    let mut state: PlacementState = unframe(META_KEY, stored)?;
    if let Some(stored) = db.get(txn, AUTH_KEY)? {
        state.auth = Some(unframe(AUTH_KEY, stored)?);
    }
    for entry in db.prefix_iter(txn, STORE_PREFIX)? {
        let (key, value) = entry?;
        state.stores.push(unframe(key, value)?);
    }
    for entry in db.prefix_iter(txn, REGION_PREFIX)? {
        let (key, value) = entry?;
        state.regions.push(unframe(key, value)?);
    }
    Ok(Some(state))
}

/// Reads the state from `db`: the records, or the old single record (converted and deleted), or a
/// new cluster's first meta record, and writes what the disk lacks of it.
pub(super) fn load(env: &Env, db: Database<Bytes, Bytes>, operator_timeout: Duration) -> Result<Inner, PlacementError> {
    let mut txn = env.write_txn()?;
    let mut inner = read_inner(&txn, db, operator_timeout)?;
    for (key, value) in inner.take_writes() {
        match value {
            Some(value) => db.put(&mut txn, &key, &value)?,
            None => {
                db.delete(&mut txn, &key)?;
            }
        }
    }
    txn.commit()?;
    Ok(inner)
}

/// The state the records of `db` hold, or the old single record's (marked to be converted), or a
/// new cluster's (marked to be written): what is missing on disk is left dirty.
pub(super) fn read_inner(
    txn: &heed::RoTxn,
    db: Database<Bytes, Bytes>,
    operator_timeout: Duration,
) -> Result<Inner, PlacementError> {
    let legacy = db.get(txn, LEGACY_STATE_KEY)?.map(|stored| unframe::<PlacementState>(LEGACY_STATE_KEY, stored));
    Ok(if let Some(state) = legacy {
        let mut inner = Inner::from_state(state?, operator_timeout)?;
        inner.mark_all_dirty();
        inner.dirty.legacy = true;
        tracing::info!("placement state converted to one record per store and region");
        inner
    } else if let Some(state) = read_records(txn, db)? {
        Inner::from_state(state, operator_timeout)?
    } else {
        let state = PlacementState { cluster_id: rand::random(), next_id: 1, ..Default::default() };
        let mut inner = Inner::from_state(state, operator_timeout)?;
        inner.mark_all_dirty();
        inner
    })
}

struct Batch {
    seq: u64,
    writes: Vec<Write>,
}

/// The writer thread and the way to it.
pub(crate) struct Writer {
    /// For tests that look at the records (the thread holds the handle that writes).
    #[cfg(test)]
    storage: (Env, Database<Bytes, Bytes>),
    /// The queue and the last sequence number given out, together so numbers follow queue order.
    queue: Mutex<(Option<mpsc::Sender<Batch>>, u64)>,
    ledger: Arc<Ledger>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub(super) fn start(env: Env, db: Database<Bytes, Bytes>) -> Result<Writer, PlacementError> {
        // Unbounded: every batch is a few records, queued by a caller that then waits for it, so the
        // queue never holds more than one batch per waiting caller.
        let (tx, rx) = mpsc::channel::<Batch>();
        let ledger = Arc::new(Ledger::default());
        let shared = ledger.clone();
        #[cfg(test)]
        let storage = (env.clone(), db);
        let thread = std::thread::Builder::new()
            .name("placement-writer".into())
            .spawn(move || write_loop(&env, db, &rx, &shared))
            .map_err(|e| PlacementError::Storage(heed::Error::Io(e)))?;
        Ok(Writer {
            #[cfg(test)]
            storage,
            queue: Mutex::new((Some(tx), 0)),
            ledger,
            thread: Some(thread),
        })
    }

    #[cfg(test)]
    pub(super) fn storage(&self) -> (&Env, Database<Bytes, Bytes>) {
        (&self.storage.0, self.storage.1)
    }

    /// Queues `writes` (none: nothing new) and returns the sequence number to wait for: the last one
    /// queued, so a caller also waits for earlier changes its answer may depend on.
    pub(super) fn queue(&self, writes: Vec<Write>) -> u64 {
        let mut queue = self.queue.lock();
        if writes.is_empty() {
            return queue.1;
        }
        queue.1 += 1;
        let seq = queue.1;
        let sent = queue.0.as_ref().is_some_and(|tx| tx.send(Batch { seq, writes }).is_ok());
        if !sent {
            // The writer is gone (it only stops when placement is dropped): nothing will be durable.
            self.ledger.fail(seq, Failure::Write("the placement writer has stopped".into()));
        }
        seq
    }

    pub(super) fn ledger(&self) -> &Ledger {
        &self.ledger
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue lets the writer commit what is left and stop; joining it releases its
        // handle on the environment, so the directory can be opened again.
        self.queue.lock().0.take();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Commits the queued batches, as many at once as have arrived. A failed commit keeps its records
/// and tries them again with the next batch (or at shutdown).
fn write_loop(env: &Env, db: Database<Bytes, Bytes>, rx: &mpsc::Receiver<Batch>, ledger: &Ledger) {
    // However the loop ends (the queue closed, or a panic), nobody may wait for it any more.
    struct Stopped<'a>(&'a Ledger);
    impl Drop for Stopped<'_> {
        fn drop(&mut self) {
            let durable = self.0.safe();
            let message = format!("the placement writer has stopped (durable up to change {durable})");
            self.0.fail(u64::MAX, Failure::Write(message));
        }
    }
    let _stopped = Stopped(ledger);
    let mut pending: BTreeMap<Vec<u8>, Option<Vec<u8>>> = BTreeMap::new();
    let mut through = 0;
    let mut take = |batch: Batch, pending: &mut BTreeMap<Vec<u8>, Option<Vec<u8>>>| {
        through = through.max(batch.seq);
        // A later write of the same record replaces an earlier one.
        pending.extend(batch.writes);
        through
    };
    while let Ok(batch) = rx.recv() {
        let mut upto = take(batch, &mut pending);
        while let Ok(more) = rx.try_recv() {
            upto = take(more, &mut pending);
        }
        match commit(env, db, &pending) {
            Ok(()) => {
                pending.clear();
                ledger.done(upto);
            }
            Err(err) => {
                tracing::error!(error = %err, records = pending.len(), "placement state not written; retried with the next change");
                ledger.fail(upto, Failure::Write(err.to_string()));
            }
        }
    }
    if !pending.is_empty() {
        if let Err(err) = commit(env, db, &pending) {
            tracing::error!(error = %err, records = pending.len(), "placement state not written at shutdown");
        }
    }
}

fn commit(env: &Env, db: Database<Bytes, Bytes>, writes: &BTreeMap<Vec<u8>, Option<Vec<u8>>>) -> heed::Result<()> {
    let mut txn = env.write_txn()?;
    for (key, value) in writes {
        match value {
            Some(value) => db.put(&mut txn, key, value)?,
            None => {
                db.delete(&mut txn, key)?;
            }
        }
    }
    txn.commit()
}

impl Placement {
    /// Runs `change` on the state under the lock, queues the records it touched for the writer before
    /// letting go, then waits (without the lock) until they, and every change queued before them,
    /// are durable. Its result is returned only then: nothing it hands out (an id, an operator's new
    /// peer) can be lost by a crash.
    pub(super) fn change<T>(
        &self,
        change: impl FnOnce(&mut Inner) -> Result<T, PlacementError>,
    ) -> Result<T, PlacementError> {
        let (result, seq) = {
            let mut inner = self.inner.lock();
            // Queued even when the change failed halfway: what it did to the memory must reach the disk.
            let result = change(&mut inner);
            let writes = if inner.dirty.is_empty() {
                Vec::new()
            } else {
                // Anything worth a record is worth a scheduling round.
                inner.round.changed();
                inner.take_writes()
            };
            (result, self.sink.queue(writes))
        };
        self.sink.wait(seq)?;
        result
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn state_survives_a_restart_and_ids_keep_growing() {
        let dir = tempfile::tempdir().unwrap();
        let (cluster_id, last_id) = {
            let p = Placement::open(dir.path(), PlacementOptions { replicas: 1, ..Default::default() }).unwrap();
            register(&p, 0, 20160);
            (p.cluster_id(), p.alloc_id().unwrap())
        };
        let p = Placement::open(dir.path(), PlacementOptions { replicas: 1, ..Default::default() }).unwrap();
        assert_eq!(p.cluster_id(), cluster_id);
        assert_eq!(p.stores().len(), 1);
        assert_eq!(p.regions().len(), 1);
        assert!(p.alloc_id().unwrap() > last_id);
    }

    #[test]
    fn ids_allocated_by_many_threads_at_once_are_unique_and_durable() {
        // Each caller waits for its own write while others queue theirs: the writer commits them in
        // order (often several at once), so the id record on disk is always the newest.
        let dir = tempfile::tempdir().unwrap();
        let handed_out: Vec<u64> = {
            let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
            std::thread::scope(|scope| {
                let threads: Vec<_> = (0..8)
                    .map(|_| scope.spawn(|| (0..50).flat_map(|_| p.alloc_ids(3).unwrap()).collect::<Vec<u64>>()))
                    .collect();
                threads.into_iter().flat_map(|t| t.join().unwrap()).collect()
            })
        };
        let unique: BTreeSet<u64> = handed_out.iter().copied().collect();
        assert_eq!(unique.len(), handed_out.len(), "an id was handed out twice");
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        assert!(p.alloc_id().unwrap() > *unique.last().unwrap(), "an id handed out before the restart comes again");
    }

    #[test]
    fn a_change_writes_only_the_records_it_touched() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let (left, right) = split(&region, "m", p.alloc_id().unwrap());
        beat(&p, stores[0], vec![leader_report(&left, stores[0], 2), leader_report(&right, stores[0], 2)]);
        let before = records(&p);
        // An id of the reserved batch: nothing.
        p.alloc_id().unwrap();
        assert_eq!(changed(&before, &records(&p)), Vec::<Vec<u8>>::new());
        // The first id past the batch: the meta record only, with the next mark.
        let mark = stored(&p).next_id;
        let past = (mark - p.alloc_id().unwrap()) as usize;
        p.alloc_ids(past).unwrap();
        let after = records(&p);
        assert_eq!(changed(&before, &after), vec![META_KEY.to_vec()]);
        assert_eq!(stored(&p).next_id, mark + ID_BATCH);
        // A new leader for the right half: its record only.
        beat(&p, stores[1], vec![leader_report(&right, stores[1], 3)]);
        assert_eq!(changed(&after, &records(&p)), vec![record_key(REGION_PREFIX, right.region_id)]);
    }

    #[test]
    fn a_split_deletes_nothing_and_a_replaced_region_s_record_goes() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let (left, right) = split(&region, "m", 100);
        beat(&p, stores[0], vec![leader_report(&left, stores[0], 2), leader_report(&right, stores[0], 2)]);
        assert_eq!(stored(&p).regions.len(), 2);
        // A newer region over both (as a merge would be) replaces them: the right one's record goes.
        let whole = Region { epoch: Some(RegionEpoch { conf_ver: 3, version: 3 }), ..region.clone() };
        beat(&p, stores[0], vec![leader_report(&whole, stores[0], 2)]);
        let on_disk = stored(&p);
        assert_eq!(on_disk.regions.iter().filter_map(|r| r.region.clone()).collect::<Vec<_>>(), vec![whole]);
        assert!(!records(&p).contains_key(&record_key(REGION_PREFIX, 100)));
    }

    #[test]
    fn the_old_single_record_is_converted_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let (region, stores) = {
            let (p, stores, region) = three_stores(dir.path());
            // Write the state as an older placement did, alone.
            let state = {
                let inner = p.inner.lock();
                PlacementState {
                    cluster_id: inner.cluster_id,
                    next_id: inner.next_id,
                    stores: inner.stores.values().cloned().collect(),
                    regions: inner.regions.iter().cloned().collect(),
                    bootstrapped: inner.bootstrapped,
                    disabled_schedulers: vec![BALANCE_REGION.to_string()],
                    auth: None,
                }
            };
            let (env, db) = p.sink.storage();
            let mut txn = env.write_txn().unwrap();
            db.clear(&mut txn).unwrap();
            db.put(&mut txn, LEGACY_STATE_KEY, &frame(&state)).unwrap();
            txn.commit().unwrap();
            (region, stores)
        };
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        assert_eq!(p.regions().into_iter().filter_map(|r| r.region).collect::<Vec<_>>(), vec![region]);
        assert_eq!(p.stores().iter().map(|s| s.store_id).collect::<Vec<_>>(), stores);
        assert!(!p.schedulers().iter().find(|s| s.name == BALANCE_REGION).unwrap().enabled);
        let keys = records(&p);
        assert!(!keys.contains_key(LEGACY_STATE_KEY) && keys.contains_key(META_KEY), "{keys:?}");
        assert_eq!(stored(&p).stores.len(), 3);
    }

    #[test]
    fn a_damaged_record_is_refused_at_open() {
        let dir = tempfile::tempdir().unwrap();
        let region_id = {
            let (p, _, region) = three_stores(dir.path());
            let key = record_key(REGION_PREFIX, region.region_id);
            let (env, db) = p.sink.storage();
            let mut txn = env.write_txn().unwrap();
            let mut value = db.get(&txn, &key).unwrap().unwrap().to_vec();
            *value.last_mut().unwrap() ^= 0x40;
            db.put(&mut txn, &key, &value).unwrap();
            txn.commit().unwrap();
            region.region_id
        };
        let err = Placement::open(dir.path(), PlacementOptions::default()).err().expect("refused");
        assert!(matches!(&err, PlacementError::Corrupt(m) if m.contains("checksum")), "{err}");
        assert!(err.to_string().contains("region/"), "names the record: {err} ({region_id})");
    }

    /// Every record on disk.
    fn records(p: &Placement) -> BTreeMap<Vec<u8>, Vec<u8>> {
        let (env, db) = p.sink.storage();
        let txn = env.read_txn().unwrap();
        db.iter(&txn).unwrap().map(|e| e.map(|(k, v)| (k.to_vec(), v.to_vec()))).collect::<Result<_, _>>().unwrap()
    }

    /// The keys whose records differ.
    fn changed(before: &BTreeMap<Vec<u8>, Vec<u8>>, after: &BTreeMap<Vec<u8>, Vec<u8>>) -> Vec<Vec<u8>> {
        let keys: BTreeSet<&Vec<u8>> = before.keys().chain(after.keys()).collect();
        keys.into_iter().filter(|k| before.get(*k) != after.get(*k)).cloned().collect()
    }
}
