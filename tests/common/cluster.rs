//! An in-process cluster for replication tests: N stores (each a real raftstore over its own LMDB
//! environment) talking through a [`SimNetwork`] the test controls, plus `crash`/`restart` of any
//! store, and a client that finds the leader the way a real one would (following `NotLeader` hints).
//!
//! Randomness (the network's drops, the chaos schedule) comes from one seed, printed at the start of
//! every test: rerun with `FEKV_SEED=<seed>` to replay a failure.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use fekv::config::Config;
use fekv::metrics::Metrics;
use fekv::node::{bootstrap_store, engine_options, store_config};
use fekv::proto::{request::Cmd, DeleteRequest, Peer, PutRequest, Region, RegionEpoch, Request};
use fekv::raftstore::{store, Error, PeerStatus, RaftstoreExit, RaftstoreHandle, Router};
use fekv::storage::Engine;
use fekv::transport::sim::SimNetwork;

use super::wait::{eventually, eventually_sync, Watchdog};

pub const REGION_ID: u64 = 1;

/// The seed of this test run: `FEKV_SEED` if set, else random (and printed).
pub fn seed() -> u64 {
    let seed = std::env::var("FEKV_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(rand::random);
    eprintln!("FEKV_SEED={seed}");
    seed
}

struct RunningStore {
    router: Router,
    handle: RaftstoreHandle,
    engine: Engine,
    metrics: Arc<Metrics>,
}

pub struct Cluster {
    pub network: SimNetwork,
    pub config: Config,
    dirs: BTreeMap<u64, tempfile::TempDir>,
    running: BTreeMap<u64, RunningStore>,
    /// The store that last answered as leader, tried first.
    leader_hint: parking_lot::Mutex<Option<u64>>,
    ids: Arc<SharedIds>,
    _watchdog: Watchdog,
}

/// Ids for splits, unique across the cluster's stores (placement's job in a real cluster).
pub struct SharedIds(std::sync::atomic::AtomicU64);

impl fekv::raftstore::split_check::IdAllocator for SharedIds {
    fn alloc(&self, count: usize) -> Result<Vec<u64>, String> {
        let first = self.0.fetch_add(count as u64, std::sync::atomic::Ordering::Relaxed);
        Ok((first..first + count as u64).collect())
    }
}

/// Fast raft settings for tests: 20 ms ticks, elections after 10 ticks.
pub fn cluster_config() -> Config {
    Config {
        raft_tick_interval: Duration::from_millis(20),
        raft_election_ticks: 10,
        raft_heartbeat_ticks: 2,
        request_timeout: Duration::from_secs(2),
        ..Config::default()
    }
}

impl Cluster {
    /// Bootstraps `count` stores holding region 1 (the whole keyspace) with one peer each, and starts
    /// them all.
    pub fn start(count: u64, seed: u64, tweak: impl FnOnce(&mut Config)) -> Cluster {
        let mut config = cluster_config();
        tweak(&mut config);
        let region = Region {
            region_id: REGION_ID,
            start_key: Vec::new(),
            end_key: Vec::new(),
            epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
            peers: (1..=count).map(|store_id| Peer { peer_id: store_id, store_id }).collect(),
        };
        let network = SimNetwork::new(seed);
        let mut cluster = Cluster {
            network,
            config,
            dirs: BTreeMap::new(),
            running: BTreeMap::new(),
            leader_hint: Default::default(),
            ids: Arc::new(SharedIds(std::sync::atomic::AtomicU64::new(1000))),
            _watchdog: Watchdog::default(),
        };
        for store_id in 1..=count {
            let dir = tempfile::tempdir().unwrap();
            let engine = Engine::open(dir.path(), &engine_options(&cluster.config, &Metrics::new())).unwrap();
            bootstrap_store(&engine, 42, store_id, Some(&region)).unwrap();
            engine.close();
            cluster.dirs.insert(store_id, dir);
            cluster.start_store(store_id);
        }
        cluster
    }

    pub fn store_ids(&self) -> Vec<u64> {
        self.dirs.keys().copied().collect()
    }

    /// Where `store_id` keeps its data (open it only while the store is down).
    pub fn data_dir(&self, store_id: u64) -> &std::path::Path {
        self.dirs[&store_id].path()
    }

    pub fn is_running(&self, store_id: u64) -> bool {
        self.running.contains_key(&store_id)
    }

    /// Starts (or restarts) a store from its data directory.
    pub fn start_store(&mut self, store_id: u64) {
        self.start_store_with(store_id, Vec::new());
    }

    /// Starts a store with `queued` already in its inbox: its first round handles them together (up
    /// to a batch), which a test cannot otherwise arrange on a running store.
    pub fn start_store_with(&mut self, store_id: u64, queued: Vec<fekv::raftstore::msg::StoreMsg>) {
        assert!(!self.running.contains_key(&store_id), "store {store_id} is already running");
        let dir = self.dirs[&store_id].path().to_path_buf();
        let metrics = Arc::new(Metrics::new());
        // The environment closes when its last handle drops; a snapshot being generated may still
        // hold one for a moment after a crash.
        let what = format!("store {store_id} to reopen");
        let engine = eventually_sync(Duration::from_secs(10), &what, || {
            Engine::open(&dir, &engine_options(&self.config, &metrics))
        });
        let transport = Box::new(self.network.transport(store_id));
        let cfg = store_config(&self.config, store_id);
        let inbox = store::inbox(&cfg);
        for msg in queued {
            inbox.0.try_send(msg).expect("the queued messages fit the inbox");
        }
        let ids = self.ids.clone();
        let (router, handle) = store::start(cfg, engine.clone(), metrics.clone(), transport, inbox, ids).unwrap();
        self.network.register(store_id, router.raft_inbox());
        self.running.insert(store_id, RunningStore { router, handle, engine, metrics });
    }

    /// Stops a store between two rounds. Every round is one LMDB transaction, so this is what a
    /// crash leaves on disk: what a committed round wrote, nothing of the round in flight.
    pub fn crash(&mut self, store_id: u64) {
        let Some(store) = self.running.remove(&store_id) else { return };
        self.network.unregister(store_id);
        store.router.shutdown();
        if let RaftstoreExit::Panicked(report) = store.handle.join() {
            if !std::thread::panicking() {
                panic!("the raftstore thread of store {store_id} died: {report}");
            }
        }
        drop(store.router);
        drop(store.engine);
    }

    pub fn restart(&mut self, store_id: u64) {
        self.crash(store_id);
        self.start_store(store_id);
    }

    pub fn crash_all(&mut self) {
        for store_id in self.store_ids() {
            self.crash(store_id);
        }
    }

    pub fn restart_all(&mut self) {
        self.crash_all();
        for store_id in self.store_ids() {
            self.start_store(store_id);
        }
    }

    /// The running stores whose raftstore thread has died, and how.
    pub fn dead_raftstores(&self) -> Vec<(u64, RaftstoreExit)> {
        self.running.iter().filter_map(|(store_id, store)| Some((*store_id, store.handle.exit()?))).collect()
    }

    pub fn router(&self, store_id: u64) -> Router {
        self.running[&store_id].router.clone()
    }

    pub fn metrics(&self, store_id: u64) -> Arc<Metrics> {
        self.running[&store_id].metrics.clone()
    }

    pub fn engine(&self, store_id: u64) -> Engine {
        self.running[&store_id].engine.clone()
    }

    /// Every running store's view of region 1 (the first region; a split's left part keeps its id).
    pub async fn statuses(&self) -> BTreeMap<u64, PeerStatus> {
        self.all_statuses()
            .await
            .into_iter()
            .filter_map(|(store_id, peers)| {
                peers.into_iter().find(|p| p.region.region_id == REGION_ID).map(|p| (store_id, p))
            })
            .collect()
    }

    /// Every running store's view of every region it holds.
    pub async fn all_statuses(&self) -> BTreeMap<u64, Vec<PeerStatus>> {
        let mut out = BTreeMap::new();
        for (store_id, store) in &self.running {
            if let Ok(Ok(peers)) = tokio::time::timeout(Duration::from_secs(2), store.router.status()).await {
                out.insert(*store_id, peers);
            }
        }
        out
    }

    /// The regions as their leaders see them, in key order.
    pub async fn regions(&self) -> Vec<Region> {
        let mut regions: BTreeMap<u64, Region> = BTreeMap::new();
        for peers in self.all_statuses().await.into_values() {
            for peer in peers.into_iter().filter(|p| p.role == "leader") {
                regions.insert(peer.region.region_id, peer.region);
            }
        }
        let mut regions: Vec<Region> = regions.into_values().collect();
        regions.sort_by(|a, b| a.start_key.cmp(&b.start_key));
        regions
    }

    /// One of the regions, picked with `rng` (for tests that disturb a random region); `None` while
    /// no region has a leader.
    pub async fn random_region(&self, rng: &mut impl rand::Rng) -> Option<Region> {
        let regions = self.regions().await;
        (!regions.is_empty()).then(|| regions[rng.gen_range(0..regions.len())].clone())
    }

    /// A fresh id for a peer (placement's job in a real cluster).
    pub fn alloc_id(&self) -> u64 {
        use fekv::raftstore::split_check::IdAllocator;
        self.ids.alloc(1).expect("ids")[0]
    }

    /// The store leading `region_id` and its view of the region, if some store leads it now.
    pub async fn region_leader(&self, region_id: u64) -> Option<(u64, PeerStatus)> {
        self.all_statuses()
            .await
            .into_iter()
            .flat_map(|(store_id, peers)| peers.into_iter().map(move |p| (store_id, p)))
            .filter(|(_, p)| p.region.region_id == region_id && p.role == "leader")
            .max_by_key(|(_, p)| p.term)
    }

    /// Adds a peer of `region_id` on `store_id` (as placement's operator would) and waits until the
    /// region's leader has applied it. Returns the peer.
    pub async fn must_add_peer(&self, region_id: u64, store_id: u64) -> Peer {
        let peer = Peer { peer_id: self.alloc_id(), store_id };
        self.must_change(region_id, store_id, fekv::proto::ConfChangeType::AddNode, peer).await
    }

    /// Removes `region_id`'s peer on `store_id` and waits until the leader has applied it. The leader
    /// of a 2-peer region hands leadership over first, as placement would.
    pub async fn must_remove_peer(&self, region_id: u64, store_id: u64) {
        self.must_change(region_id, store_id, fekv::proto::ConfChangeType::RemoveNode, Peer::default()).await;
    }

    async fn must_change(
        &self,
        region_id: u64,
        store_id: u64,
        change: fekv::proto::ConfChangeType,
        new_peer: Peer,
    ) -> Peer {
        let adding = change == fekv::proto::ConfChangeType::AddNode;
        let what = format!("{change:?} on store {store_id} of region {region_id}");
        eventually(Duration::from_secs(30), &what, || async {
            let Some((leader, status)) = self.region_leader(region_id).await else {
                return Err("no leader".to_string());
            };
            let member = status.region.peers.iter().find(|p| p.store_id == store_id).copied();
            let peer = match (adding, member) {
                (true, Some(peer)) => return Ok(peer),
                (false, None) => return Ok(new_peer),
                (true, None) => new_peer,
                (false, Some(peer)) => peer,
            };
            if !adding && leader == store_id && status.region.peers.len() == 2 {
                let other = status.region.peers.iter().find(|p| p.store_id != store_id).unwrap().store_id;
                let _ = self.router(leader).transfer_leader(region_id, other).await;
                return Err(format!("store {store_id} leads a 2-peer region: handing over to {other}"));
            }
            match self.router(leader).change_peer(region_id, change, peer).await {
                Ok(()) => Err("applied on the leader; waiting to see it".to_string()),
                Err(err) => Err(err.to_string()),
            }
        })
        .await
    }

    /// Placement's word on stale peers, as one heartbeat round of every store would bring it: a peer
    /// whose region's leader lists a newer membership (`conf_ver`) without it is reported to its
    /// store, which handles the report as a node does (`cluster_link::destroy_stale_peer`).
    /// Placement reaches every store whatever the raft network does. Returns how many were reported.
    pub async fn report_stale_peers(&self) -> usize {
        let statuses = self.all_statuses().await;
        let mut leaders: BTreeMap<u64, &PeerStatus> = BTreeMap::new();
        for peer in statuses.values().flatten().filter(|p| p.role == "leader") {
            let known = leaders.entry(peer.region.region_id).or_insert(peer);
            if peer.term > known.term {
                *known = peer;
            }
        }
        let conf_ver = |region: &Region| region.epoch.map_or(0, |e| e.conf_ver);
        let mut reported = 0;
        for (store_id, peers) in &statuses {
            for peer in peers.iter().filter(|p| p.initialized && p.role != "leader") {
                let Some(known) = leaders.get(&peer.region.region_id).map(|l| &l.region) else { continue };
                if conf_ver(known) > conf_ver(&peer.region) && !known.peers.iter().any(|p| p.peer_id == peer.peer_id) {
                    let stale = fekv::proto::StalePeer {
                        region_id: known.region_id,
                        peer: Some(Peer { peer_id: peer.peer_id, store_id: *store_id }),
                        epoch: known.epoch,
                    };
                    fekv::cluster_link::destroy_stale_peer(&self.router(*store_id), stale);
                    reported += 1;
                }
            }
        }
        reported
    }

    /// Waits until `store_id` holds no peer of `region_id` (at most 10 s).
    pub async fn wait_no_peer(&self, store_id: u64, region_id: u64) {
        eventually(
            Duration::from_secs(10),
            &format!("store {store_id} to drop its peer of region {region_id}"),
            || async {
                let peers = self.router(store_id).status().await.expect("the store's raftstore answers");
                peers.iter().all(|p| p.region.region_id != region_id)
            },
        )
        .await;
    }

    /// One membership change as a conf changer makes it: `store_id`'s peer of `region` is removed if
    /// it has one and the region keeps at least `min_peers` (the leader of a 2-peer region never
    /// removes itself), else a peer with a new id is added there. One attempt at the region's leader,
    /// bounded by 3 s; returns whether the change was applied (a refused one, with another change in
    /// flight or no leader, is simply not made).
    pub async fn flip_peer(&self, region: &Region, store_id: u64, min_peers: usize) -> bool {
        let Some((leader, _)) = self.region_leader(region.region_id).await else { return false };
        let (change, peer) = match region.peers.iter().find(|p| p.store_id == store_id) {
            Some(_) if region.peers.len() <= min_peers => return false,
            Some(_) if store_id == leader && region.peers.len() == 2 => return false,
            Some(peer) => (fekv::proto::ConfChangeType::RemoveNode, *peer),
            None => (fekv::proto::ConfChangeType::AddNode, Peer { peer_id: self.alloc_id(), store_id }),
        };
        let router = self.router(leader);
        let changed = router.change_peer(region.region_id, change, peer);
        matches!(tokio::time::timeout(Duration::from_secs(3), changed).await, Ok(Ok(())))
    }

    /// Makes `store_id`'s peer the leader of `region_id` (at most 15 s).
    pub async fn must_transfer_leader(&self, region_id: u64, store_id: u64) {
        let what = format!("store {store_id} to lead region {region_id}");
        eventually(Duration::from_secs(15), &what, || async {
            match self.region_leader(region_id).await {
                Some((leader, _)) if leader == store_id => Ok(()),
                Some((leader, _)) => {
                    let _ = self.router(leader).transfer_leader(region_id, store_id).await;
                    Err(format!("store {leader} leads"))
                }
                None => Err("no leader".to_string()),
            }
        })
        .await;
    }

    /// The store whose peer of region 1 is leader, waiting for one (at most 10 s).
    pub async fn wait_leader(&self) -> u64 {
        eventually(Duration::from_secs(10), "a leader of region 1", || async {
            let statuses = self.statuses().await;
            let leader = statuses.iter().find(|(_, s)| s.role == "leader").map(|(store_id, _)| *store_id);
            leader.ok_or_else(|| format!("{statuses:?}"))
        })
        .await
    }

    /// The stores to try, the last known leader first.
    fn candidates(&self) -> Vec<u64> {
        let mut stores: Vec<u64> = self.running.keys().copied().collect();
        if let Some(hint) = *self.leader_hint.lock() {
            if let Some(pos) = stores.iter().position(|s| *s == hint) {
                stores.remove(pos);
                stores.insert(0, hint);
            }
        }
        stores
    }

    /// Runs `attempt` against the leader, retrying on the errors a client retries on, until it
    /// succeeds, fails otherwise, or `timeout` passes.
    async fn with_leader<T, F, Fut>(&self, timeout: Duration, attempt: F) -> Result<T, Error>
    where
        F: Fn(u64, Router) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        self.with_leader_retrying(timeout, true, attempt).await
    }

    /// Like `with_leader`; with `retry_ambiguous` false, an error after which the command may still be
    /// applied (a proposal timed out, the store stopped) ends the attempt instead of being retried:
    /// retrying it could apply the command twice.
    async fn with_leader_retrying<T, F, Fut>(
        &self,
        timeout: Duration,
        retry_ambiguous: bool,
        attempt: F,
    ) -> Result<T, Error>
    where
        F: Fn(u64, Router) -> Fut,
        Fut: std::future::Future<Output = Result<T, Error>>,
    {
        let deadline = Instant::now() + timeout;
        let mut last_error = Error::Stopped;
        loop {
            let mut tried_leader_hint = None;
            for store_id in self.candidates() {
                let Some(store) = self.running.get(&store_id) else { continue };
                match attempt(store_id, store.router.clone()).await {
                    Ok(value) => {
                        *self.leader_hint.lock() = Some(store_id);
                        return Ok(value);
                    }
                    Err(Error::NotLeader { leader_store_id, .. }) => {
                        tried_leader_hint = leader_store_id.filter(|s| *s != store_id && self.running.contains_key(s));
                        last_error = Error::NotLeader { region_id: REGION_ID, leader_store_id };
                        if let Some(hint) = tried_leader_hint {
                            *self.leader_hint.lock() = Some(hint);
                            break;
                        }
                    }
                    Err(
                        err @ (Error::Timeout { proposed: true, .. } | Error::Stopped | Error::OutcomeUnknown { .. }),
                    ) if !retry_ambiguous => return Err(err),
                    Err(
                        err @ (Error::StaleCommand
                        | Error::ProposalDropped { .. }
                        | Error::TransferringLeader
                        | Error::Timeout { .. }
                        | Error::OutcomeUnknown { .. }
                        | Error::Busy
                        | Error::Stopped
                        | Error::RegionNotFound { .. }
                        | Error::KeyNotInRegion { .. }
                        | Error::EpochNotMatch { .. }),
                    ) => last_error = err,
                    Err(err) => return Err(err),
                }
                if Instant::now() >= deadline {
                    return Err(last_error);
                }
            }
            if Instant::now() >= deadline {
                return Err(last_error);
            }
            if tried_leader_hint.is_none() {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }

    pub async fn put(&self, key: &[u8], value: &[u8], timeout: Duration) -> Result<u64, Error> {
        let cmd = Cmd::Put(PutRequest { key: key.to_vec(), value: value.to_vec(), precondition: None });
        self.with_leader(timeout, |_, router| write_on(router, key, cmd.clone())).await
    }

    /// A put that is retried only while it certainly was not applied; `Err(Timeout { proposed: true })`
    /// or `Err(Stopped)` means its outcome is unknown.
    pub async fn put_once(&self, key: &[u8], value: &[u8], timeout: Duration) -> Result<u64, Error> {
        let cmd = Cmd::Put(PutRequest { key: key.to_vec(), value: value.to_vec(), precondition: None });
        self.with_leader_retrying(timeout, false, |_, router| write_on(router, key, cmd.clone())).await
    }

    pub async fn delete(&self, key: &[u8], timeout: Duration) -> Result<u64, Error> {
        let cmd = Cmd::Delete(DeleteRequest { key: key.to_vec(), precondition: None });
        self.with_leader(timeout, |_, router| write_on(router, key, cmd.clone())).await
    }

    /// A linearizable read: ReadIndex on the key's region's leader, then its LMDB.
    pub async fn get(&self, key: &[u8], timeout: Duration) -> Result<Option<(Vec<u8>, u64)>, Error> {
        self.with_leader(timeout, |store_id, router| async move {
            let region = locate(&router, key)?;
            router.read_index(region.region_id).await?;
            // A split applied meanwhile may have moved the key to a region this store does not lead.
            if locate(&router, key)?.epoch != region.epoch {
                return Err(Error::EpochNotMatch { current_regions: vec![] });
            }
            Ok(self.read_local(store_id, key))
        })
        .await
    }

    /// A linearizable scan of `[start, end)` across regions: each region's part is read from its
    /// leader after a ReadIndex.
    pub async fn scan(&self, start: &[u8], end: &[u8], timeout: Duration) -> Result<Vec<(Vec<u8>, Vec<u8>)>, Error> {
        let mut out = Vec::new();
        let mut cursor = start.to_vec();
        while cursor.as_slice() < end {
            let cursor_now = cursor.clone();
            let (part, region_end) = self
                .with_leader(timeout, |store_id, router| {
                    let cursor = cursor_now.clone();
                    async move {
                        let region = locate(&router, &cursor)?;
                        router.read_index(region.region_id).await?;
                        if locate(&router, &cursor)?.epoch != region.epoch {
                            return Err(Error::EpochNotMatch { current_regions: vec![] });
                        }
                        let upper = if region.end_key.is_empty() || end < region.end_key.as_slice() {
                            end.to_vec()
                        } else {
                            region.end_key.clone()
                        };
                        let engine = self.engine(store_id);
                        let txn = engine.read_txn().unwrap();
                        let part: Vec<(Vec<u8>, Vec<u8>)> = engine
                            .scan_data(&txn, &cursor, &upper, usize::MAX)
                            .unwrap()
                            .into_iter()
                            .map(|(k, _, v)| (k, v))
                            .collect();
                        Ok((part, region.end_key))
                    }
                })
                .await?;
            out.extend(part);
            if region_end.is_empty() {
                break;
            }
            cursor = region_end;
        }
        Ok(out)
    }

    /// What a store holds for `key` right now, without asking raft.
    pub fn read_local(&self, store_id: u64, key: &[u8]) -> Option<(Vec<u8>, u64)> {
        let engine = &self.running[&store_id].engine;
        let txn = engine.read_txn().unwrap();
        engine.get_data(&txn, key).unwrap().map(|r| (r.value.to_vec(), r.revision))
    }

    pub async fn must_put(&self, key: &[u8], value: &[u8]) -> u64 {
        self.put(key, value, Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("put {}: {e}", String::from_utf8_lossy(key)))
    }

    pub async fn must_get(&self, key: &[u8]) -> Option<Vec<u8>> {
        self.get(key, Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("get {}: {e}", String::from_utf8_lossy(key)))
            .map(|(value, _)| value)
    }

    pub async fn must_delete(&self, key: &[u8]) {
        self.delete(key, Duration::from_secs(15))
            .await
            .unwrap_or_else(|e| panic!("delete {}: {e}", String::from_utf8_lossy(key)));
    }

    /// Waits until `store_id` holds `value` for `key` locally (at most 10 s).
    pub async fn wait_local(&self, store_id: u64, key: &[u8], value: Option<&[u8]>) {
        let what = format!(
            "store {store_id} to hold {:?} for {}",
            value.map(String::from_utf8_lossy),
            String::from_utf8_lossy(key)
        );
        eventually(Duration::from_secs(10), &what, || async {
            let local = self.read_local(store_id, key);
            if local.as_ref().map(|(v, _)| v.as_slice()) == value {
                Ok(())
            } else {
                Err(format!("{:?}", local.map(|(v, _)| String::from_utf8_lossy(&v).into_owned())))
            }
        })
        .await;
    }
}

/// The region of `key` on this store, or a retryable error if the store does not hold it.
fn locate(router: &Router, key: &[u8]) -> Result<Region, Error> {
    router.locate(key).ok_or(Error::RegionNotFound { region_id: 0 })
}

async fn write_on(router: Router, key: &[u8], cmd: Cmd) -> Result<u64, Error> {
    let region = locate(&router, key)?;
    router.write(region.region_id, vec![Request { cmd: Some(cmd) }]).await.map(|w| w.revision)
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.network.heal();
        self.crash_all();
    }
}
