//! The placement state: stores, the region tree, the id allocator, and pending operators. Every change
//! that matters after a restart (a new store, new addresses, an id, a region's range, epoch, peers or
//! leader) is written to LMDB before the call returns. Heartbeat times, used bytes and approximate
//! region sizes change on every beat, so they live in memory and reach the disk only with the next
//! write that matters: a restarted placement service waits for fresh heartbeats anyway.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions};
use parking_lot::Mutex;
use prost::Message as _;

use crate::proto::{
    operator, Operator, Peer, PlacementState, Region, RegionEpoch, RegionInfo, RegisterStoreRequest, SplitOperator,
    StoreHeartbeatRequest, StoreInfo, StoreState,
};
use crate::region_tree::{HeartbeatOutcome, LeaderReport, RegionTree};

#[derive(Debug, Clone)]
pub struct PlacementOptions {
    /// Replicas of each region; the first region is created once this many stores registered.
    pub replicas: usize,
    /// A store silent for this long is reported down.
    pub store_down_after: Duration,
}

impl Default for PlacementOptions {
    fn default() -> Self {
        PlacementOptions { replicas: 3, store_down_after: Duration::from_secs(10) }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("placement storage: {0}")]
    Storage(#[from] heed::Error),
    #[error("placement state is damaged: {0}")]
    Corrupt(String),
    #[error("store {0} is not registered")]
    UnknownStore(u64),
    #[error("region {0} is not known")]
    UnknownRegion(u64),
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// What the lock guards: the in-memory form of [`PlacementState`].
struct Inner {
    cluster_id: u64,
    next_id: u64,
    bootstrapped: bool,
    /// By store id, so listings come out in id order.
    stores: BTreeMap<u64, StoreInfo>,
    regions: RegionTree,
}

impl Inner {
    fn from_state(state: PlacementState) -> Inner {
        let mut regions = RegionTree::new();
        for info in state.regions.into_iter().filter(|info| info.region.is_some()) {
            regions.insert(info);
        }
        Inner {
            cluster_id: state.cluster_id,
            next_id: state.next_id,
            bootstrapped: state.bootstrapped,
            stores: state.stores.into_iter().map(|s| (s.store_id, s)).collect(),
            regions,
        }
    }

    fn to_state(&self) -> PlacementState {
        PlacementState {
            cluster_id: self.cluster_id,
            next_id: self.next_id,
            stores: self.stores.values().cloned().collect(),
            regions: self.regions.iter().cloned().collect(),
            bootstrapped: self.bootstrapped,
        }
    }

    fn alloc(&mut self) -> u64 {
        let id = self.next_id.max(1);
        self.next_id = id + 1;
        id
    }
}

pub struct Placement {
    inner: Mutex<Inner>,
    /// Operators waiting for the next heartbeat of their region's leader (not persisted: an operator
    /// lost in a restart is asked for again).
    operators: Mutex<Vec<Operator>>,
    env: Env,
    db: Database<Bytes, Bytes>,
    options: PlacementOptions,
}

const STATE_KEY: &[u8] = b"state";

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Placement {
    /// Opens (or creates) the placement state in `dir`.
    pub fn open(dir: &Path, options: PlacementOptions) -> Result<Placement, PlacementError> {
        if options.replicas == 0 {
            return Err(PlacementError::Invalid("replicas must be at least 1".into()));
        }
        std::fs::create_dir_all(dir).map_err(|e| PlacementError::Storage(heed::Error::Io(e)))?;
        // SAFETY: the directory is this service's own and is opened once per process.
        let env = unsafe { EnvOpenOptions::new().map_size(1 << 30).max_dbs(2).open(dir)? };
        let mut txn = env.write_txn()?;
        let db: Database<Bytes, Bytes> = env.create_database(&mut txn, Some("placement"))?;
        let state = match db.get(&txn, STATE_KEY)? {
            Some(stored) => decode_state(stored)?,
            None => PlacementState { cluster_id: rand::random(), next_id: 1, ..Default::default() },
        };
        txn.commit()?;
        let inner = Inner::from_state(state);
        Ok(Placement { inner: Mutex::new(inner), operators: Mutex::new(Vec::new()), env, db, options })
    }

    /// Rewrites the whole state. Called with the lock held, so writes reach the disk in the order
    /// their changes were made.
    fn persist(&self, inner: &Inner) -> Result<(), PlacementError> {
        let payload = inner.to_state().encode_to_vec();
        let mut framed = crc32c::crc32c(&payload).to_le_bytes().to_vec();
        framed.extend_from_slice(&payload);
        let mut txn = self.env.write_txn()?;
        self.db.put(&mut txn, STATE_KEY, &framed)?;
        txn.commit()?;
        Ok(())
    }

    pub fn cluster_id(&self) -> u64 {
        self.inner.lock().cluster_id
    }

    /// A new unique id (stores, regions and peers share the space).
    pub fn alloc_id(&self) -> Result<u64, PlacementError> {
        Ok(self.alloc_ids(1)?[0])
    }

    /// `count` new unique ids, persisted before they are handed out.
    pub fn alloc_ids(&self, count: usize) -> Result<Vec<u64>, PlacementError> {
        if count == 0 || count > 10_000 {
            return Err(PlacementError::Invalid(format!("cannot allocate {count} ids at once")));
        }
        let mut inner = self.inner.lock();
        let ids = (0..count).map(|_| inner.alloc()).collect();
        self.persist(&inner)?;
        Ok(ids)
    }

    /// The region whose range holds `key`.
    pub fn region_by_key(&self, key: &[u8]) -> Option<RegionInfo> {
        self.inner.lock().regions.search(key).cloned()
    }

    /// The region with this id.
    pub fn region(&self, region_id: u64) -> Option<RegionInfo> {
        self.inner.lock().regions.get(region_id).cloned()
    }

    /// Queues a split of `region_id` (at `split_key`, or in the middle if empty) for its leader.
    pub fn split_region(&self, region_id: u64, split_key: Vec<u8>) -> Result<(), PlacementError> {
        let info = self.region(region_id).ok_or(PlacementError::UnknownRegion(region_id))?;
        let region = info.region.unwrap_or_default();
        if !split_key.is_empty()
            && (split_key.as_slice() <= region.start_key.as_slice()
                || (!region.end_key.is_empty() && split_key.as_slice() >= region.end_key.as_slice()))
        {
            return Err(PlacementError::Invalid("the split key must lie strictly inside the region".into()));
        }
        let operator =
            Operator { region_id, epoch: region.epoch, kind: Some(operator::Kind::Split(SplitOperator { split_key })) };
        tracing::info!(region_id, leader_store_id = info.leader_store_id, "split requested");
        let mut operators = self.operators.lock();
        operators.retain(|o| o.region_id != region_id);
        operators.push(operator);
        Ok(())
    }

    /// Queues a leader transfer of `region_id` to its peer on `to_store_id`, for the current leader.
    pub fn transfer_leader(&self, region_id: u64, to_store_id: u64) -> Result<(), PlacementError> {
        let info = self.region(region_id).ok_or(PlacementError::UnknownRegion(region_id))?;
        let region = info.region.unwrap_or_default();
        if !region.peers.iter().any(|p| p.store_id == to_store_id) {
            return Err(PlacementError::Invalid(format!("region {region_id} has no peer on store {to_store_id}")));
        }
        let operator = Operator {
            region_id,
            epoch: region.epoch,
            kind: Some(operator::Kind::TransferLeader(crate::proto::TransferLeaderOperator { to_store_id })),
        };
        tracing::info!(region_id, to_store_id, leader_store_id = info.leader_store_id, "leader transfer requested");
        let mut operators = self.operators.lock();
        operators.retain(|o| o.region_id != region_id);
        operators.push(operator);
        Ok(())
    }

    /// Registers a new store (store_id 0) or updates a known one's addresses; bootstraps the first
    /// region once `replicas` stores have registered. Returns (store_id, cluster_id).
    pub fn register_store(&self, req: &RegisterStoreRequest) -> Result<(u64, u64), PlacementError> {
        if req.raft_addr.is_empty() || req.http_addr.is_empty() {
            return Err(PlacementError::Invalid("a store needs a raft and an HTTP address".into()));
        }
        let mut inner = self.inner.lock();
        let store_id = if req.store_id == 0 { inner.alloc() } else { req.store_id };
        let used_bytes = inner.stores.get(&store_id).map_or(0, |s| s.used_bytes);
        let info = StoreInfo {
            store_id,
            raft_addr: req.raft_addr.clone(),
            http_addr: req.http_addr.clone(),
            last_heartbeat_ms: now_ms(),
            state: StoreState::Up as i32,
            version: req.version.clone(),
            used_bytes,
            ..Default::default()
        };
        inner.stores.insert(store_id, info);
        if !inner.bootstrapped && inner.stores.len() >= self.options.replicas {
            let store_ids: Vec<u64> = inner.stores.keys().copied().take(self.options.replicas).collect();
            let region_id = inner.alloc();
            let peers = store_ids.iter().map(|&store_id| Peer { peer_id: inner.alloc(), store_id }).collect();
            let region = Region {
                region_id,
                start_key: Vec::new(),
                end_key: Vec::new(),
                epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
                peers,
            };
            tracing::info!(region_id, stores = ?store_ids, "bootstrapping the first region");
            inner.regions.insert(RegionInfo { region: Some(region), ..Default::default() });
            inner.bootstrapped = true;
        }
        self.persist(&inner)?;
        Ok((store_id, inner.cluster_id))
    }

    /// Every store in id order, with its state as of now and its counts from the region tree.
    pub fn stores(&self) -> Vec<StoreInfo> {
        let now = now_ms();
        let down_after = self.options.store_down_after.as_millis() as u64;
        let inner = self.inner.lock();
        inner
            .stores
            .values()
            .map(|store| {
                let silent = now.saturating_sub(store.last_heartbeat_ms);
                let counts = inner.regions.store_counts(store.store_id);
                StoreInfo {
                    state: if silent > down_after { StoreState::Down as i32 } else { StoreState::Up as i32 },
                    region_count: counts.region_count,
                    leader_count: counts.leader_count,
                    ..store.clone()
                }
            })
            .collect()
    }

    /// Every region, in key order.
    pub fn regions(&self) -> Vec<RegionInfo> {
        self.inner.lock().regions.iter().cloned().collect()
    }

    /// A store is alive and reports its peers. Each report of a leader is a region heartbeat for the
    /// region tree (stale ones are ignored; see `region_tree`). Returns the operators queued for the
    /// regions this store leads.
    pub fn store_heartbeat(&self, req: &StoreHeartbeatRequest) -> Result<Vec<Operator>, PlacementError> {
        let store_id = req.store_id;
        let mut inner = self.inner.lock();
        let store = inner.stores.get_mut(&store_id).ok_or(PlacementError::UnknownStore(store_id))?;
        store.last_heartbeat_ms = now_ms();
        store.used_bytes = req.used_bytes;
        let mut changed = false;
        for report in req.peers.iter().filter(|p| p.is_leader) {
            let Some(region) = &report.region else { continue };
            let report = LeaderReport {
                region: region.clone(),
                leader_store_id: store_id,
                leader_peer_id: report.leader_peer_id,
                term: report.term,
                approximate_size: report.approximate_size,
                approximate_keys: report.approximate_keys,
            };
            let region_id = region.region_id;
            match inner.regions.heartbeat(&report) {
                HeartbeatOutcome::Stale => {
                    tracing::debug!(region_id, store_id, epoch = ?region.epoch, "stale region heartbeat ignored")
                }
                HeartbeatOutcome::Unchanged | HeartbeatOutcome::StatsOnly => {}
                HeartbeatOutcome::Updated { replaced } => {
                    tracing::debug!(region_id, store_id, epoch = ?region.epoch, ?replaced, "region updated");
                    changed = true;
                }
            }
        }
        if changed {
            self.persist(&inner)?;
        }
        // Hand over the operators for regions this store leads now. An operator decided for an epoch
        // the region has since left is dropped: its leader would ignore it anyway.
        let led: Vec<u64> = req
            .peers
            .iter()
            .filter(|p| p.is_leader)
            .filter_map(|p| p.region.as_ref().map(|r| r.region_id))
            .filter(|&region_id| inner.regions.get(region_id).is_some_and(|info| info.leader_store_id == store_id))
            .collect();
        let mut operators = self.operators.lock();
        operators.retain(|o| {
            inner.regions.get(o.region_id).and_then(|info| info.region.as_ref()).is_some_and(|r| r.epoch == o.epoch)
        });
        drop(inner);
        let (mine, rest): (Vec<Operator>, Vec<Operator>) =
            operators.drain(..).partition(|o| led.contains(&o.region_id));
        *operators = rest;
        Ok(mine)
    }
}

fn decode_state(stored: &[u8]) -> Result<PlacementState, PlacementError> {
    let Some((crc, payload)) = stored.split_first_chunk::<4>() else {
        return Err(PlacementError::Corrupt("state shorter than its checksum".into()));
    };
    if u32::from_le_bytes(*crc) != crc32c::crc32c(payload) {
        return Err(PlacementError::Corrupt("state checksum mismatch".into()));
    }
    PlacementState::decode(payload).map_err(|e| PlacementError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::proto::PeerReport;

    fn register(p: &Placement, store_id: u64, port: u16) -> u64 {
        let req = RegisterStoreRequest {
            store_id,
            raft_addr: format!("127.0.0.1:{port}"),
            http_addr: format!("127.0.0.1:{}", port + 1000),
            version: "test".into(),
        };
        p.register_store(&req).unwrap().0
    }

    /// A placement with three registered stores and the bootstrapped region; returns it, the store
    /// ids and the region.
    fn three_stores(dir: &Path) -> (Placement, Vec<u64>, Region) {
        let p = Placement::open(dir, PlacementOptions::default()).unwrap();
        let stores = (0..3).map(|i| register(&p, 0, 20160 + i)).collect();
        let region = p.regions()[0].region.clone().unwrap();
        (p, stores, region)
    }

    /// `store_id`'s peer of `region` reports that it leads it.
    fn leader_report(region: &Region, store_id: u64, term: u64) -> PeerReport {
        let leader_peer_id = region.peers.iter().find(|p| p.store_id == store_id).unwrap().peer_id;
        PeerReport { region: Some(region.clone()), leader_peer_id, term, is_leader: true, ..Default::default() }
    }

    fn beat(p: &Placement, store_id: u64, peers: Vec<PeerReport>) -> Vec<Operator> {
        p.store_heartbeat(&StoreHeartbeatRequest { store_id, peers, used_bytes: 0 }).unwrap()
    }

    /// What is on disk right now.
    fn stored(p: &Placement) -> PlacementState {
        let txn = p.env.read_txn().unwrap();
        decode_state(p.db.get(&txn, STATE_KEY).unwrap().unwrap()).unwrap()
    }

    fn split(region: &Region, at: &str, new_region_id: u64) -> (Region, Region) {
        let epoch = region.epoch.map(|e| RegionEpoch { version: e.version + 1, ..e });
        let left = Region { end_key: at.as_bytes().to_vec(), epoch, ..region.clone() };
        let right = Region {
            region_id: new_region_id,
            start_key: at.as_bytes().to_vec(),
            epoch,
            peers: region.peers.iter().map(|p| Peer { peer_id: p.peer_id + 1000, store_id: p.store_id }).collect(),
            ..region.clone()
        };
        (left, right)
    }

    #[test]
    fn the_first_region_is_bootstrapped_once_enough_stores_registered() {
        let dir = tempfile::tempdir().unwrap();
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let a = register(&p, 0, 20160);
        let b = register(&p, 0, 20161);
        assert!(p.regions().is_empty());
        let c = register(&p, 0, 20162);
        assert_eq!(p.stores().len(), 3);
        let regions = p.regions();
        assert_eq!(regions.len(), 1);
        let region = regions[0].region.clone().unwrap();
        let mut stores: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
        stores.sort_unstable();
        assert_eq!(stores, vec![a, b, c]);
        // Ids never repeat.
        let mut ids: Vec<u64> = vec![a, b, c, region.region_id];
        ids.extend(region.peers.iter().map(|p| p.peer_id));
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 7);
        // A fourth store does not bootstrap another region.
        register(&p, 0, 20163);
        assert_eq!(p.regions().len(), 1);
    }

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
    fn re_registering_updates_addresses_without_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let id = register(&p, 0, 20160);
        assert_eq!(register(&p, id, 30000), id);
        let stores = p.stores();
        assert_eq!(stores.len(), 1);
        assert_eq!(stores[0].raft_addr, "127.0.0.1:30000");
    }

    #[test]
    fn leaders_are_recorded_from_heartbeats_and_stale_reports_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        beat(&p, stores[0], vec![leader_report(&region, stores[0], 7)]);
        assert_eq!((p.regions()[0].leader_store_id, p.regions()[0].term), (stores[0], 7));
        // An older term does not take the leadership back.
        beat(&p, stores[1], vec![leader_report(&region, stores[1], 6)]);
        assert_eq!((p.regions()[0].leader_store_id, p.regions()[0].term), (stores[0], 7));
        // Followers' reports are not region heartbeats.
        beat(&p, stores[1], vec![PeerReport { is_leader: false, ..leader_report(&region, stores[1], 8) }]);
        assert_eq!(p.regions()[0].leader_store_id, stores[0]);
        assert!(matches!(
            p.store_heartbeat(&StoreHeartbeatRequest { store_id: 999, ..Default::default() }),
            Err(PlacementError::UnknownStore(999))
        ));
    }

    #[test]
    fn stores_report_their_region_and_leader_counts_and_used_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        p.store_heartbeat(&StoreHeartbeatRequest {
            store_id: stores[1],
            peers: vec![leader_report(&region, stores[1], 2)],
            used_bytes: 12345,
        })
        .unwrap();
        let listed = p.stores();
        assert_eq!(listed.iter().map(|s| s.store_id).collect::<Vec<_>>(), stores);
        assert!(listed.iter().all(|s| s.region_count == 1));
        assert_eq!(listed.iter().map(|s| s.leader_count).collect::<Vec<_>>(), vec![0, 1, 0]);
        assert_eq!(listed[1].used_bytes, 12345);
        // A split doubles every store's region count; the leader of both leads two.
        let (left, right) = split(&region, "m", 100);
        beat(&p, stores[1], vec![leader_report(&left, stores[1], 2), leader_report(&right, stores[1], 2)]);
        let listed = p.stores();
        assert!(listed.iter().all(|s| s.region_count == 2));
        assert_eq!(listed.iter().map(|s| s.leader_count).collect::<Vec<_>>(), vec![0, 2, 0]);
    }

    #[test]
    fn a_split_reported_by_heartbeat_is_found_by_key_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (left, right) = {
            let (p, stores, region) = three_stores(dir.path());
            beat(&p, stores[0], vec![leader_report(&region, stores[0], 2)]);
            let (left, right) = split(&region, "m", p.alloc_id().unwrap());
            beat(&p, stores[0], vec![leader_report(&left, stores[0], 2), leader_report(&right, stores[0], 2)]);
            assert_eq!(p.region_by_key(b"a").unwrap().region, Some(left.clone()));
            assert_eq!(p.region_by_key(b"m").unwrap().region, Some(right.clone()));
            assert_eq!(p.region_by_key(b"\xff").unwrap().region, Some(right.clone()));
            // A late report of the parent as it was before the split is stale.
            beat(&p, stores[0], vec![leader_report(&region, stores[0], 2)]);
            assert_eq!(p.regions().len(), 2);
            (left, right)
        };
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let regions: Vec<Region> = p.regions().into_iter().filter_map(|r| r.region).collect();
        assert_eq!(regions, vec![left, right.clone()]);
        assert_eq!(p.region_by_key(b"z").unwrap().region, Some(right));
    }

    #[test]
    fn size_changes_stay_in_memory_and_leader_changes_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        beat(&p, stores[0], vec![leader_report(&region, stores[0], 2)]);
        assert_eq!(stored(&p).regions[0].leader_store_id, stores[0]);
        let bigger =
            PeerReport { approximate_size: 1 << 20, approximate_keys: 10, ..leader_report(&region, stores[0], 2) };
        beat(&p, stores[0], vec![bigger]);
        assert_eq!(p.regions()[0].approximate_size, 1 << 20);
        assert_eq!(stored(&p).regions[0].approximate_size, 0, "a size change alone is not worth a write");
        beat(&p, stores[2], vec![leader_report(&region, stores[2], 3)]);
        assert_eq!(stored(&p).regions[0].leader_store_id, stores[2]);
    }

    #[test]
    fn a_split_operator_goes_once_to_the_store_leading_the_region() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        beat(&p, stores[0], vec![leader_report(&region, stores[0], 2)]);
        assert!(matches!(p.split_region(999, vec![]), Err(PlacementError::UnknownRegion(999))));
        p.split_region(region.region_id, b"k".to_vec()).unwrap();
        // Another store, even one that claims leadership with a stale term, does not get it.
        assert!(beat(&p, stores[1], vec![leader_report(&region, stores[1], 1)]).is_empty());
        let operators = beat(&p, stores[0], vec![leader_report(&region, stores[0], 2)]);
        assert_eq!(operators.len(), 1);
        assert_eq!(operators[0].region_id, region.region_id);
        assert_eq!(operators[0].epoch, region.epoch);
        assert_eq!(operators[0].kind, Some(operator::Kind::Split(SplitOperator { split_key: b"k".to_vec() })));
        assert!(beat(&p, stores[0], vec![leader_report(&region, stores[0], 2)]).is_empty());
    }

    #[test]
    fn a_split_key_outside_the_region_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let (left, right) = split(&region, "m", 100);
        beat(&p, stores[0], vec![leader_report(&left, stores[0], 2), leader_report(&right, stores[0], 2)]);
        assert!(matches!(p.split_region(left.region_id, b"m".to_vec()), Err(PlacementError::Invalid(_))));
        assert!(matches!(p.split_region(right.region_id, b"m".to_vec()), Err(PlacementError::Invalid(_))));
        assert!(matches!(p.split_region(right.region_id, b"a".to_vec()), Err(PlacementError::Invalid(_))));
        p.split_region(right.region_id, b"x".to_vec()).unwrap();
        p.split_region(left.region_id, vec![]).unwrap();
    }

    #[test]
    fn an_operator_overtaken_by_a_new_epoch_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        beat(&p, stores[0], vec![leader_report(&region, stores[0], 2)]);
        p.split_region(region.region_id, b"k".to_vec()).unwrap();
        // The region splits elsewhere before its leader heard of the operator.
        let (left, right) = split(&region, "c", 100);
        let operators =
            beat(&p, stores[0], vec![leader_report(&left, stores[0], 2), leader_report(&right, stores[0], 2)]);
        assert!(operators.is_empty());
    }

    #[test]
    fn concurrent_heartbeats_keep_the_tree_consistent() {
        // Eight threads report the pieces of a 64-way split of the first region, each in its own
        // order and with a stale pre-split view mixed in; whatever the interleaving, placement ends
        // with exactly the final regions, in key order, and counts that match them.
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let p = Arc::new(p);
        let finals: Vec<Region> = (0..64u64)
            .map(|i| {
                let key = |i: u64| if i == 0 || i == 64 { Vec::new() } else { format!("k{i:02}").into_bytes() };
                let region_id = if i == 0 { region.region_id } else { 1000 + i };
                Region {
                    region_id,
                    start_key: key(i),
                    end_key: key(i + 1),
                    epoch: Some(RegionEpoch { conf_ver: 1, version: 2 }),
                    peers: region.peers.iter().map(|p| Peer { peer_id: p.peer_id + 100 * i, ..*p }).collect(),
                }
            })
            .collect();
        std::thread::scope(|scope| {
            for t in 0..8usize {
                let (p, stores, finals, region) = (&p, &stores, &finals, &region);
                scope.spawn(move || {
                    let mut order: Vec<usize> = (0..finals.len()).collect();
                    order.sort_by_key(|i| (i * 37 + t * 11) % 67);
                    for (n, i) in order.into_iter().enumerate() {
                        let store_id = stores[i % 3];
                        let mut peers = vec![leader_report(&finals[i], store_id, 2)];
                        if n == t * 5 {
                            peers.push(leader_report(region, store_id, 2));
                        }
                        p.store_heartbeat(&StoreHeartbeatRequest { store_id, peers, used_bytes: t as u64 }).unwrap();
                        p.inner.lock().regions.check_invariants();
                    }
                });
            }
        });
        let regions: Vec<Region> = p.regions().into_iter().filter_map(|r| r.region).collect();
        assert_eq!(regions, finals);
        let listed = p.stores();
        assert!(listed.iter().all(|s| s.region_count == 64));
        assert_eq!(listed.iter().map(|s| s.leader_count).sum::<u64>(), 64);
        assert_eq!(stored(&p).regions.len(), 64);
    }

    #[test]
    fn silent_stores_are_reported_down() {
        let dir = tempfile::tempdir().unwrap();
        let p =
            Placement::open(dir.path(), PlacementOptions { replicas: 3, store_down_after: Duration::from_millis(0) })
                .unwrap();
        register(&p, 0, 20160);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(p.stores()[0].state, StoreState::Down as i32);
    }

    #[test]
    fn a_leader_transfer_goes_to_the_leader_and_only_to_a_store_with_a_peer() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        assert!(matches!(p.transfer_leader(999, stores[1]), Err(PlacementError::UnknownRegion(999))));
        assert!(matches!(p.transfer_leader(region.region_id, 4242), Err(PlacementError::Invalid(_))));
        beat(&p, stores[0], vec![leader_report(&region, stores[0], 7)]);
        p.transfer_leader(region.region_id, stores[1]).unwrap();
        // A follower's heartbeat does not take it; the leader's does, once.
        assert!(beat(&p, stores[2], vec![]).is_empty());
        let operators = beat(&p, stores[0], vec![leader_report(&region, stores[0], 7)]);
        assert_eq!(operators.len(), 1);
        assert_eq!(
            operators[0].kind,
            Some(operator::Kind::TransferLeader(crate::proto::TransferLeaderOperator { to_store_id: stores[1] }))
        );
        assert!(beat(&p, stores[0], vec![leader_report(&region, stores[0], 7)]).is_empty());
    }
}
