//! The placement state: stores, regions, the id allocator. Every change that matters after a restart
//! (a new store, new addresses, a region, a leader) is written to LMDB before the call returns;
//! heartbeat times live in memory only (a restarted placement service waits for fresh ones).

use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions};
use parking_lot::Mutex;
use prost::Message as _;

use crate::proto::{
    operator, Operator, Peer, PeerReport, PlacementState, Region, RegionEpoch, RegionInfo, RegisterStoreRequest,
    SplitOperator, StoreInfo, StoreState,
};

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

pub struct Placement {
    state: Mutex<PlacementState>,
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
        Ok(Placement { state: Mutex::new(state), operators: Mutex::new(Vec::new()), env, db, options })
    }

    fn persist(&self, state: &PlacementState) -> Result<(), PlacementError> {
        let payload = state.encode_to_vec();
        let mut framed = crc32c::crc32c(&payload).to_le_bytes().to_vec();
        framed.extend_from_slice(&payload);
        let mut txn = self.env.write_txn()?;
        self.db.put(&mut txn, STATE_KEY, &framed)?;
        txn.commit()?;
        Ok(())
    }

    pub fn cluster_id(&self) -> u64 {
        self.state.lock().cluster_id
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
        let mut state = self.state.lock();
        let ids = (0..count).map(|_| alloc(&mut state)).collect();
        self.persist(&state)?;
        Ok(ids)
    }

    /// The region whose range holds `key`.
    pub fn region_by_key(&self, key: &[u8]) -> Option<RegionInfo> {
        let state = self.state.lock();
        state
            .regions
            .iter()
            .find(|info| {
                info.region.as_ref().is_some_and(|r| {
                    key >= r.start_key.as_slice() && (r.end_key.is_empty() || key < r.end_key.as_slice())
                })
            })
            .cloned()
    }

    /// Queues a split of `region_id` (at `split_key`, or in the middle if empty) for its leader.
    pub fn split_region(&self, region_id: u64, split_key: Vec<u8>) -> Result<(), PlacementError> {
        let info = self
            .regions()
            .into_iter()
            .find(|r| r.region.as_ref().map(|r| r.region_id) == Some(region_id))
            .ok_or(PlacementError::UnknownRegion(region_id))?;
        let region = info.region.unwrap_or_default();
        if !split_key.is_empty()
            && (split_key.as_slice() <= region.start_key.as_slice()
                || (!region.end_key.is_empty() && split_key.as_slice() >= region.end_key.as_slice()))
        {
            return Err(PlacementError::Invalid("the split key must lie strictly inside the region".into()));
        }
        let operator =
            Operator { region_id, epoch: region.epoch, kind: Some(operator::Kind::Split(SplitOperator { split_key })) };
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
        let mut state = self.state.lock();
        let store_id = if req.store_id == 0 { alloc(&mut state) } else { req.store_id };
        let info = StoreInfo {
            store_id,
            raft_addr: req.raft_addr.clone(),
            http_addr: req.http_addr.clone(),
            last_heartbeat_ms: now_ms(),
            state: StoreState::Up as i32,
            version: req.version.clone(),
            ..Default::default()
        };
        match state.stores.iter_mut().find(|s| s.store_id == store_id) {
            Some(existing) => *existing = info,
            None => state.stores.push(info),
        }
        if !state.bootstrapped && state.stores.len() >= self.options.replicas {
            let mut store_ids: Vec<u64> = state.stores.iter().map(|s| s.store_id).collect();
            store_ids.sort_unstable();
            let region_id = alloc(&mut state);
            let peers = store_ids[..self.options.replicas]
                .iter()
                .map(|&store_id| Peer { peer_id: alloc(&mut state), store_id })
                .collect();
            let region = Region {
                region_id,
                start_key: Vec::new(),
                end_key: Vec::new(),
                epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
                peers,
            };
            tracing::info!(region_id, stores = ?store_ids, "bootstrapping the first region");
            state.regions.push(RegionInfo { region: Some(region), ..Default::default() });
            state.bootstrapped = true;
        }
        self.persist(&state)?;
        Ok((store_id, state.cluster_id))
    }

    /// Every store, with its state as of now.
    pub fn stores(&self) -> Vec<StoreInfo> {
        let now = now_ms();
        let down_after = self.options.store_down_after.as_millis() as u64;
        let mut stores = self.state.lock().stores.clone();
        for store in &mut stores {
            let silent = now.saturating_sub(store.last_heartbeat_ms);
            store.state = if silent > down_after { StoreState::Down as i32 } else { StoreState::Up as i32 };
        }
        stores
    }

    pub fn regions(&self) -> Vec<RegionInfo> {
        self.state.lock().regions.clone()
    }

    /// A store is alive; the peers it reports as leaders lead their regions. A report about an older
    /// epoch than the one recorded is stale and ignored.
    pub fn store_heartbeat(&self, store_id: u64, peers: &[PeerReport]) -> Result<Vec<Operator>, PlacementError> {
        let mut state = self.state.lock();
        let store =
            state.stores.iter_mut().find(|s| s.store_id == store_id).ok_or(PlacementError::UnknownStore(store_id))?;
        store.last_heartbeat_ms = now_ms();
        let mut changed = false;
        for report in peers.iter().filter(|p| p.is_leader) {
            let Some(reported) = &report.region else { continue };
            let Some(info) =
                state.regions.iter_mut().find(|r| r.region.as_ref().map(|r| r.region_id) == Some(reported.region_id))
            else {
                continue;
            };
            let known_epoch = info.region.as_ref().and_then(|r| r.epoch).unwrap_or_default();
            let reported_epoch = reported.epoch.unwrap_or_default();
            if reported_epoch.version < known_epoch.version
                || reported_epoch.conf_ver < known_epoch.conf_ver
                || report.term < info.term
            {
                continue;
            }
            if info.leader_store_id != store_id || info.term != report.term || reported_epoch != known_epoch {
                info.region = Some(reported.clone());
                info.leader_store_id = store_id;
                info.leader_peer_id = report.leader_peer_id;
                info.term = report.term;
                changed = true;
            }
        }
        if changed {
            self.persist(&state)?;
        }
        drop(state);
        // Hand over the operators for regions this store leads.
        let led: Vec<u64> =
            peers.iter().filter(|p| p.is_leader).filter_map(|p| p.region.as_ref().map(|r| r.region_id)).collect();
        let mut operators = self.operators.lock();
        let (mine, rest): (Vec<Operator>, Vec<Operator>) =
            operators.drain(..).partition(|o| led.contains(&o.region_id));
        *operators = rest;
        Ok(mine)
    }
}

fn alloc(state: &mut PlacementState) -> u64 {
    let id = state.next_id.max(1);
    state.next_id = id + 1;
    id
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
    use super::*;

    fn register(p: &Placement, store_id: u64, port: u16) -> u64 {
        let req = RegisterStoreRequest {
            store_id,
            raft_addr: format!("127.0.0.1:{port}"),
            http_addr: format!("127.0.0.1:{}", port + 1000),
            version: "test".into(),
        };
        p.register_store(&req).unwrap().0
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
        let p = Placement::open(dir.path(), PlacementOptions { replicas: 1, ..Default::default() }).unwrap();
        let store = register(&p, 0, 20160);
        let region = p.regions()[0].region.clone().unwrap();
        let report = |term, version| PeerReport {
            region: Some(Region { epoch: Some(RegionEpoch { conf_ver: 1, version }), ..region.clone() }),
            leader_peer_id: region.peers[0].peer_id,
            term,
            is_leader: true,
            ..Default::default()
        };
        p.store_heartbeat(store, &[report(7, 1)]).unwrap();
        assert_eq!((p.regions()[0].leader_store_id, p.regions()[0].term), (store, 7));
        // An older term or epoch does not overwrite a newer one.
        p.store_heartbeat(store, &[report(6, 1)]).unwrap();
        assert_eq!(p.regions()[0].term, 7);
        assert!(p.store_heartbeat(999, &[]).is_err());
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
}
