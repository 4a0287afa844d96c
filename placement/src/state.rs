//! The placement state: stores, the region tree, the id allocator, the scheduler switches, and the
//! running operators. Every change that matters after a restart (a new store, new addresses, a store
//! drained or removed, an id, a region's range, epoch, peers or leader, a scheduler switched off) is
//! written to LMDB before the call returns. Heartbeat times, used bytes, approximate region sizes and
//! pending peers change on every beat, so they live in memory and reach the disk only with the next
//! write that matters: a restarted placement service waits for fresh heartbeats anyway. Operators are
//! not persisted either: after a restart the schedulers decide again from fresh heartbeats.

use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions};
use parking_lot::Mutex;
use prost::Message as _;

use crate::operators::{OpStep, Operators, RegionState};
use crate::proto::{
    Operator, OperatorInfo, Peer, PlacementState, Region, RegionEpoch, RegionInfo, RegisterStoreRequest, SchedulerInfo,
    StalePeer, StoreHeartbeatRequest, StoreInfo, StoreState,
};
use crate::region_tree::{HeartbeatOutcome, LeaderReport, RegionTree};
use crate::schedulers::{self, Plan, RegionView, Step};

#[derive(Debug, Clone)]
pub struct PlacementOptions {
    /// Replicas of each region: the replica checker adds peers until every region has this many.
    pub replicas: usize,
    /// A store silent for this long is down, and the replica checker replaces its peers.
    pub store_down_after: Duration,
    /// An operator whose current step makes no progress for this long ends as `timeout`.
    pub operator_timeout: Duration,
}

impl Default for PlacementOptions {
    fn default() -> Self {
        PlacementOptions {
            replicas: 3,
            store_down_after: Duration::from_secs(10),
            operator_timeout: Duration::from_secs(180),
        }
    }
}

/// The scheduler that keeps every region at `replicas` peers, away from down and offline stores.
pub const REPLICA_CHECK: &str = "replica-check";
/// The scheduler that evens out leader counts.
pub const BALANCE_LEADER: &str = "balance-leader";
/// The scheduler that evens out region sizes.
pub const BALANCE_REGION: &str = "balance-region";
/// Every scheduler, in the order a round runs them.
pub const SCHEDULERS: [&str; 3] = [REPLICA_CHECK, BALANCE_LEADER, BALANCE_REGION];
/// Operators made by an administrator's request.
pub const ADMIN: &str = "admin";

/// Running balance operators at once: moves are cheap to decide and costly to make (a snapshot
/// each), so a few at a time keeps a new store from being flooded and the views honest.
const MAX_BALANCE_REGION_OPS: usize = 1;
const MAX_BALANCE_LEADER_OPS: usize = 4;

#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("placement storage: {0}")]
    Storage(#[from] heed::Error),
    #[error("placement state is damaged: {0}")]
    Corrupt(String),
    #[error("store {0} is not registered")]
    UnknownStore(u64),
    #[error("store {0} was removed from the cluster")]
    StoreRemoved(u64),
    #[error("region {0} is not known")]
    UnknownRegion(u64),
    #[error("no scheduler is named {0:?} (there are: replica-check, balance-leader, balance-region)")]
    UnknownScheduler(String),
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// What the lock guards: the in-memory form of [`PlacementState`], and the operators.
struct Inner {
    cluster_id: u64,
    next_id: u64,
    bootstrapped: bool,
    /// By store id, so listings come out in id order. `state` holds what is persisted: up, offline or
    /// removed (down is computed from the last heartbeat when listed).
    stores: std::collections::BTreeMap<u64, StoreInfo>,
    regions: RegionTree,
    disabled_schedulers: BTreeSet<String>,
    /// Each region's pending peers, from its leader's last heartbeat.
    pending: HashMap<u64, Vec<Peer>>,
    operators: Operators,
}

impl Inner {
    fn from_state(state: PlacementState, operator_timeout: Duration) -> Inner {
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
            disabled_schedulers: state.disabled_schedulers.into_iter().collect(),
            pending: HashMap::new(),
            operators: Operators::new(operator_timeout),
        }
    }

    fn to_state(&self) -> PlacementState {
        PlacementState {
            cluster_id: self.cluster_id,
            next_id: self.next_id,
            stores: self.stores.values().cloned().collect(),
            regions: self.regions.iter().cloned().collect(),
            bootstrapped: self.bootstrapped,
            disabled_schedulers: self.disabled_schedulers.iter().cloned().collect(),
        }
    }

    fn alloc(&mut self) -> u64 {
        let id = self.next_id.max(1);
        self.next_id = id + 1;
        id
    }

    /// A region with the leader's pending peers (which the tree does not keep).
    fn region_info(&self, info: &RegionInfo) -> RegionInfo {
        let region_id = info.region.as_ref().map_or(0, |r| r.region_id);
        RegionInfo { pending_peers: self.pending.get(&region_id).cloned().unwrap_or_default(), ..info.clone() }
    }

    fn region_infos(&self) -> Vec<RegionInfo> {
        self.regions.iter().map(|info| self.region_info(info)).collect()
    }

    /// Every store with its state as of `now` and its counts from the region tree.
    fn store_infos(&self, now_ms: u64, down_after: Duration) -> Vec<StoreInfo> {
        let down_after = down_after.as_millis() as u64;
        self.stores
            .values()
            .map(|store| {
                let silent = now_ms.saturating_sub(store.last_heartbeat_ms) > down_after;
                let counts = self.regions.store_counts(store.store_id);
                let state = match StoreState::try_from(store.state).unwrap_or(StoreState::Up) {
                    StoreState::Up | StoreState::Down if silent => StoreState::Down,
                    StoreState::Up | StoreState::Down => StoreState::Up,
                    other => other,
                };
                StoreInfo {
                    state: state as i32,
                    region_count: counts.region_count,
                    leader_count: counts.leader_count,
                    ..store.clone()
                }
            })
            .collect()
    }

    fn scheduler_enabled(&self, name: &str) -> bool {
        !self.disabled_schedulers.contains(name)
    }

    /// The region and its recorded leader, or why an administrator's request cannot be made of it.
    fn region_for_admin(&self, region_id: u64) -> Result<(Region, u64), PlacementError> {
        let info = self.regions.get(region_id).ok_or(PlacementError::UnknownRegion(region_id))?;
        let region = info.region.clone().ok_or(PlacementError::UnknownRegion(region_id))?;
        Ok((region, info.leader_store_id))
    }

    /// Turns a scheduler's plan into an operator's steps, allocating the new peers' ids.
    fn steps_of(&mut self, plan: &Plan) -> Vec<OpStep> {
        plan.steps
            .iter()
            .map(|step| match *step {
                Step::AddPeer { store_id } => OpStep::AddPeer { store_id, peer_id: self.alloc() },
                Step::TransferLeader { to_store_id } => OpStep::TransferLeader { to_store_id },
                Step::RemovePeer { store_id } => OpStep::RemovePeer { store_id },
            })
            .collect()
    }
}

/// What `view` will look like once `steps` are done, so a scheduling round does not decide again
/// what a running operator is already doing (PD's operator influence).
fn foresee(view: &mut RegionView, steps: &[OpStep]) {
    for step in steps {
        match *step {
            OpStep::AddPeer { store_id, peer_id } => {
                if !view.has_store(store_id) {
                    view.region.peers.push(Peer { peer_id, store_id });
                }
            }
            OpStep::TransferLeader { to_store_id } => view.leader_store_id = to_store_id,
            OpStep::RemovePeer { store_id } => view.region.peers.retain(|p| p.store_id != store_id),
            OpStep::Split { .. } => {}
        }
    }
}

pub struct Placement {
    inner: Mutex<Inner>,
    env: Env,
    db: Database<Bytes, Bytes>,
    options: PlacementOptions,
}

const STATE_KEY: &[u8] = b"state";

pub fn now_ms() -> u64 {
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
        let inner = Inner::from_state(state, options.operator_timeout);
        Ok(Placement { inner: Mutex::new(inner), env, db, options })
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

    pub fn options(&self) -> &PlacementOptions {
        &self.options
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
        let inner = self.inner.lock();
        inner.regions.search(key).map(|info| inner.region_info(info))
    }

    /// The region with this id.
    pub fn region(&self, region_id: u64) -> Option<RegionInfo> {
        let inner = self.inner.lock();
        inner.regions.get(region_id).map(|info| inner.region_info(info))
    }

    /// An administrator's operator for `region_id`: it replaces whatever runs for the region.
    fn admin_operator(
        &self,
        inner: &mut Inner,
        region: &Region,
        reason: String,
        steps: Vec<OpStep>,
    ) -> Result<OperatorInfo, PlacementError> {
        let info = inner
            .operators
            .add(region, ADMIN, reason, steps, true, now_ms())
            .expect("an administrator's operator replaces any other");
        Ok(info)
    }

    /// Has the region's leader split it (at `split_key`, or in the middle if empty).
    pub fn split_region(&self, region_id: u64, split_key: Vec<u8>) -> Result<OperatorInfo, PlacementError> {
        let mut inner = self.inner.lock();
        let (region, leader_store_id) = inner.region_for_admin(region_id)?;
        if !split_key.is_empty()
            && (split_key.as_slice() <= region.start_key.as_slice()
                || (!region.end_key.is_empty() && split_key.as_slice() >= region.end_key.as_slice()))
        {
            return Err(PlacementError::Invalid("the split key must lie strictly inside the region".into()));
        }
        tracing::info!(region_id, leader_store_id, "split requested");
        self.admin_operator(&mut inner, &region, "split requested".into(), vec![OpStep::Split { split_key }])
    }

    /// Has the region's leader hand leadership to its peer on `to_store_id`.
    pub fn transfer_leader(&self, region_id: u64, to_store_id: u64) -> Result<OperatorInfo, PlacementError> {
        let mut inner = self.inner.lock();
        let (region, leader_store_id) = inner.region_for_admin(region_id)?;
        if !region.peers.iter().any(|p| p.store_id == to_store_id) {
            return Err(PlacementError::Invalid(format!("region {region_id} has no peer on store {to_store_id}")));
        }
        tracing::info!(region_id, to_store_id, leader_store_id, "leader transfer requested");
        let steps = vec![OpStep::TransferLeader { to_store_id }];
        self.admin_operator(&mut inner, &region, "leader transfer requested".into(), steps)
    }

    /// Adds a peer of `region_id` on `store_id` (an up store without one).
    pub fn add_peer(&self, region_id: u64, store_id: u64) -> Result<OperatorInfo, PlacementError> {
        let mut inner = self.inner.lock();
        let (region, _) = inner.region_for_admin(region_id)?;
        let store = inner
            .store_infos(now_ms(), self.options.store_down_after)
            .into_iter()
            .find(|s| s.store_id == store_id)
            .ok_or(PlacementError::UnknownStore(store_id))?;
        if store.state != StoreState::Up as i32 {
            let state = StoreState::try_from(store.state).map_or("unknown", |s| s.as_str_name()).to_lowercase();
            return Err(PlacementError::Invalid(format!("store {store_id} is {state}: it cannot take a new peer")));
        }
        if region.peers.iter().any(|p| p.store_id == store_id) {
            return Err(PlacementError::Invalid(format!("region {region_id} already has a peer on store {store_id}")));
        }
        let peer_id = inner.alloc();
        self.persist(&inner)?;
        let steps = vec![OpStep::AddPeer { store_id, peer_id }];
        self.admin_operator(&mut inner, &region, format!("add a peer on store {store_id}"), steps)
    }

    /// Removes `region_id`'s peer on `store_id`; if that peer leads, leadership moves to another peer
    /// first (a caught-up one, the lowest store id).
    pub fn remove_peer(&self, region_id: u64, store_id: u64) -> Result<OperatorInfo, PlacementError> {
        let mut inner = self.inner.lock();
        let (region, leader_store_id) = inner.region_for_admin(region_id)?;
        if !region.peers.iter().any(|p| p.store_id == store_id) {
            return Err(PlacementError::Invalid(format!("region {region_id} has no peer on store {store_id}")));
        }
        if region.peers.len() == 1 {
            return Err(PlacementError::Invalid(format!("store {store_id} holds region {region_id}'s only peer")));
        }
        let mut steps = Vec::new();
        if leader_store_id == store_id {
            let pending = inner.pending.get(&region_id).cloned().unwrap_or_default();
            let to = region
                .peers
                .iter()
                .filter(|p| p.store_id != store_id && !pending.iter().any(|q| q.peer_id == p.peer_id))
                .map(|p| p.store_id)
                .min()
                .ok_or_else(|| {
                    PlacementError::Invalid(format!(
                        "region {region_id} has no caught-up peer to take over the leadership from store {store_id}"
                    ))
                })?;
            steps.push(OpStep::TransferLeader { to_store_id: to });
        }
        steps.push(OpStep::RemovePeer { store_id });
        self.admin_operator(&mut inner, &region, format!("remove the peer on store {store_id}"), steps)
    }

    /// Running operators, and the recent finished ones (oldest first).
    pub fn operators(&self) -> (Vec<OperatorInfo>, Vec<OperatorInfo>) {
        self.inner.lock().operators.infos()
    }

    /// Starts draining `store_id`: it goes offline (no new replicas; the replica checker moves its
    /// replicas away) and is marked removed once it holds none. Refused when the other stores could
    /// not take its replicas.
    pub fn remove_store(&self, store_id: u64) -> Result<StoreInfo, PlacementError> {
        let mut inner = self.inner.lock();
        let now = now_ms();
        let stores = inner.store_infos(now, self.options.store_down_after);
        let store = stores.iter().find(|s| s.store_id == store_id).ok_or(PlacementError::UnknownStore(store_id))?;
        if store.state == StoreState::Removed as i32 || store.state == StoreState::Offline as i32 {
            return Ok(store.clone());
        }
        let others = stores.iter().filter(|s| s.store_id != store_id && s.state == StoreState::Up as i32).count();
        if store.region_count > 0 && others < self.options.replicas {
            return Err(PlacementError::Invalid(format!(
                "store {store_id} holds {} regions and only {others} other stores are up; regions need {} replicas",
                store.region_count, self.options.replicas
            )));
        }
        let stored = inner.stores.get_mut(&store_id).ok_or(PlacementError::UnknownStore(store_id))?;
        stored.state = StoreState::Offline as i32;
        tracing::info!(store_id, regions = store.region_count, "store going offline: its replicas move away");
        self.persist(&inner)?;
        let listed = inner.store_infos(now, self.options.store_down_after);
        Ok(listed.into_iter().find(|s| s.store_id == store_id).expect("the store was just found"))
    }

    pub fn schedulers(&self) -> Vec<SchedulerInfo> {
        let inner = self.inner.lock();
        SCHEDULERS
            .iter()
            .map(|&name| SchedulerInfo {
                name: name.to_string(),
                enabled: inner.scheduler_enabled(name),
                can_disable: name != REPLICA_CHECK,
            })
            .collect()
    }

    /// Switches a scheduler on or off; persisted. Switching one off does not stop its running
    /// operators (they finish or time out).
    pub fn set_scheduler(&self, name: &str, enabled: bool) -> Result<Vec<SchedulerInfo>, PlacementError> {
        if !SCHEDULERS.contains(&name) {
            return Err(PlacementError::UnknownScheduler(name.to_string()));
        }
        if name == REPLICA_CHECK && !enabled {
            return Err(PlacementError::Invalid(
                "replica-check cannot be disabled: it is what keeps every region at its replicas".into(),
            ));
        }
        {
            let mut inner = self.inner.lock();
            let changed = if enabled {
                inner.disabled_schedulers.remove(name)
            } else {
                inner.disabled_schedulers.insert(name.to_string())
            };
            if changed {
                tracing::info!(scheduler = name, enabled, "scheduler switched");
                self.persist(&inner)?;
            }
        }
        Ok(self.schedulers())
    }

    /// Registers a new store (store_id 0) or updates a known one's addresses. The first store to
    /// register bootstraps the first region, with one peer on it: the replica checker grows it to
    /// `replicas` as more stores join. Returns (store_id, cluster_id).
    pub fn register_store(&self, req: &RegisterStoreRequest) -> Result<(u64, u64), PlacementError> {
        if req.raft_addr.is_empty() || req.http_addr.is_empty() {
            return Err(PlacementError::Invalid("a store needs a raft and an HTTP address".into()));
        }
        let mut inner = self.inner.lock();
        let store_id = if req.store_id == 0 { inner.alloc() } else { req.store_id };
        let known = inner.stores.get(&store_id);
        if known.is_some_and(|s| s.state == StoreState::Removed as i32) {
            return Err(PlacementError::StoreRemoved(store_id));
        }
        let used_bytes = known.map_or(0, |s| s.used_bytes);
        // A draining store stays offline across restarts.
        let state = known.map_or(StoreState::Up as i32, |s| s.state);
        let info = StoreInfo {
            store_id,
            raft_addr: req.raft_addr.clone(),
            http_addr: req.http_addr.clone(),
            last_heartbeat_ms: now_ms(),
            state,
            version: req.version.clone(),
            used_bytes,
            ..Default::default()
        };
        inner.stores.insert(store_id, info);
        if !inner.bootstrapped {
            let region_id = inner.alloc();
            let peer_id = inner.alloc();
            let region = Region {
                region_id,
                start_key: Vec::new(),
                end_key: Vec::new(),
                epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
                peers: vec![Peer { peer_id, store_id }],
            };
            tracing::info!(region_id, store_id, "bootstrapping the first region");
            inner.regions.insert(RegionInfo { region: Some(region), ..Default::default() });
            inner.bootstrapped = true;
        }
        self.persist(&inner)?;
        Ok((store_id, inner.cluster_id))
    }

    /// Every store in id order, with its state as of now and its counts from the region tree.
    pub fn stores(&self) -> Vec<StoreInfo> {
        self.inner.lock().store_infos(now_ms(), self.options.store_down_after)
    }

    /// Every region, in key order, with its pending peers.
    pub fn regions(&self) -> Vec<RegionInfo> {
        self.inner.lock().region_infos()
    }

    /// A store is alive and reports its peers. Each report of a leader is a region heartbeat for the
    /// region tree (stale ones are ignored; see `region_tree`). Returns, for each region this store
    /// leads, the current step of its operator.
    pub fn store_heartbeat(&self, req: &StoreHeartbeatRequest) -> Result<Vec<Operator>, PlacementError> {
        let store_id = req.store_id;
        let now = now_ms();
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        let store = inner.stores.get_mut(&store_id).ok_or(PlacementError::UnknownStore(store_id))?;
        if store.state == StoreState::Removed as i32 {
            return Err(PlacementError::StoreRemoved(store_id));
        }
        store.last_heartbeat_ms = now;
        store.used_bytes = req.used_bytes;
        let mut changed = false;
        for report in req.peers.iter().filter(|p| p.is_leader) {
            let Some(region) = &report.region else { continue };
            let leader = LeaderReport {
                region: region.clone(),
                leader_store_id: store_id,
                leader_peer_id: report.leader_peer_id,
                term: report.term,
                approximate_size: report.approximate_size,
                approximate_keys: report.approximate_keys,
            };
            let region_id = region.region_id;
            match inner.regions.heartbeat(&leader) {
                HeartbeatOutcome::Stale => {
                    tracing::debug!(region_id, store_id, epoch = ?region.epoch, "stale region heartbeat ignored");
                    continue;
                }
                HeartbeatOutcome::Unchanged | HeartbeatOutcome::StatsOnly => {}
                HeartbeatOutcome::Updated { replaced } => {
                    tracing::debug!(region_id, store_id, epoch = ?region.epoch, ?replaced, "region updated");
                    for gone in replaced.into_iter().filter(|&r| r != region_id) {
                        inner.pending.remove(&gone);
                    }
                    changed = true;
                }
            }
            inner.pending.insert(region_id, report.pending_peers.clone());
        }
        if changed {
            self.persist(inner)?;
        }
        // Move each operator of a region this store leads (as recorded now) along, and hand over
        // its current step.
        let mut operators = Vec::new();
        for report in req.peers.iter().filter(|p| p.is_leader) {
            let Some(region_id) = report.region.as_ref().map(|r| r.region_id) else { continue };
            let Some(info) = inner.regions.get(region_id).filter(|info| info.leader_store_id == store_id) else {
                continue;
            };
            let Some(region) = &info.region else { continue };
            let pending = inner.pending.get(&region_id).map_or(&[][..], Vec::as_slice);
            let state = RegionState { region, leader_store_id: store_id, pending_peers: pending };
            operators.extend(inner.operators.on_heartbeat(&state, now));
        }
        Ok(operators)
    }

    /// The peers in a store's report that their regions no longer have: placement's record of the
    /// region (from its leader) has a newer `conf_ver` and does not list the peer. Such a peer was
    /// removed while its store was down or cut off; its own region members normally tell it so with a
    /// tombstone message, but if every member it knows has left too, only placement can.
    pub fn stale_peers(&self, req: &StoreHeartbeatRequest) -> Vec<StalePeer> {
        let inner = self.inner.lock();
        let mut stale = Vec::new();
        for report in req.peers.iter().filter(|p| !p.is_leader) {
            let Some(reported) = &report.region else { continue };
            let Some(peer) = reported.peers.iter().find(|p| p.store_id == req.store_id) else { continue };
            let Some(known) = inner.regions.get(reported.region_id).and_then(|info| info.region.as_ref()) else {
                continue;
            };
            let conf_ver = |r: &Region| r.epoch.map_or(0, |e| e.conf_ver);
            if conf_ver(known) > conf_ver(reported) && !known.peers.iter().any(|p| p.peer_id == peer.peer_id) {
                tracing::info!(
                    region_id = known.region_id,
                    peer_id = peer.peer_id,
                    store_id = req.store_id,
                    "telling a store its peer was removed"
                );
                stale.push(StalePeer { region_id: known.region_id, peer: Some(*peer), epoch: known.epoch });
            }
        }
        stale
    }

    /// One scheduling round (every second or so): ends stalled operators, then runs the replica
    /// checker and the enabled balancers over the current view, each creating operators for regions
    /// that have none; finally marks drained offline stores removed. Returns the operators created.
    pub fn schedule(&self) -> Result<Vec<OperatorInfo>, PlacementError> {
        self.schedule_at(now_ms())
    }

    fn schedule_at(&self, now: u64) -> Result<Vec<OperatorInfo>, PlacementError> {
        let mut guard = self.inner.lock();
        let inner = &mut *guard;
        {
            let regions = &inner.regions;
            inner.operators.check(|region_id| regions.get(region_id).is_some(), now);
        }
        let stores = inner.store_infos(now, self.options.store_down_after);
        let down_ms = self.options.store_down_after.as_millis() as u64;
        let (store_views, mut region_views) = schedulers::views_from(&stores, &inner.region_infos(), now, down_ms);
        for view in &mut region_views {
            if let Some(op) = inner.operators.get(view.region_id()) {
                foresee(view, op.remaining());
            }
        }
        let mut created = Vec::new();
        let mut dirty = false;
        let regions_by_id: HashMap<u64, Region> =
            inner.regions.iter().filter_map(|i| i.region.clone()).map(|r| (r.region_id, r)).collect();
        let mut start = |inner: &mut Inner, plan: &Plan, source: &'static str| -> Option<Vec<OpStep>> {
            let region = regions_by_id.get(&plan.region_id)?;
            if inner.operators.is_busy(plan.region_id) {
                return None;
            }
            let steps = inner.steps_of(plan);
            dirty |= steps.iter().any(|s| matches!(s, OpStep::AddPeer { .. }));
            let info = inner.operators.add(region, source, plan.reason, steps.clone(), false, now).ok()?;
            created.push(info);
            Some(steps)
        };
        for plan in schedulers::replica_check(&store_views, &region_views, self.options.replicas) {
            start(inner, &plan, REPLICA_CHECK);
        }
        // The balancers see the replica checker's new operators as done, and each other's.
        for view in &mut region_views {
            if let Some(op) = inner.operators.get(view.region_id()) {
                if op.source == REPLICA_CHECK {
                    foresee(view, op.remaining());
                }
            }
        }
        type Balancer = fn(&[schedulers::StoreView], &[RegionView], usize) -> Option<Plan>;
        let balancers: [(&'static str, usize, Balancer); 2] = [
            (BALANCE_LEADER, MAX_BALANCE_LEADER_OPS, |s, r, _| schedulers::balance_leader(s, r)),
            (BALANCE_REGION, MAX_BALANCE_REGION_OPS, schedulers::balance_region),
        ];
        for (name, limit, balance) in balancers {
            if !inner.scheduler_enabled(name) {
                continue;
            }
            while inner.operators.count(name) < limit {
                let Some(plan) = balance(&store_views, &region_views, self.options.replicas) else { break };
                // The best move is for a region that is busy: wait for it rather than pick a worse one.
                let Some(steps) = start(inner, &plan, name) else { break };
                if let Some(view) = region_views.iter_mut().find(|v| v.region_id() == plan.region_id) {
                    foresee(view, &steps);
                }
            }
        }
        // A drained store leaves the cluster for good.
        for store in &stores {
            if store.state == StoreState::Offline as i32 && store.region_count == 0 {
                if let Some(stored) = inner.stores.get_mut(&store.store_id) {
                    stored.state = StoreState::Removed as i32;
                    tracing::info!(store_id = store.store_id, "store drained: removed from the cluster");
                    dirty = true;
                }
            }
        }
        if dirty {
            self.persist(inner)?;
        }
        Ok(created)
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
    use crate::proto::{operator, OperatorState, PeerReport, SplitOperator};

    fn register(p: &Placement, store_id: u64, port: u16) -> u64 {
        let req = RegisterStoreRequest {
            store_id,
            raft_addr: format!("127.0.0.1:{port}"),
            http_addr: format!("127.0.0.1:{}", port + 1000),
            version: "test".into(),
        };
        p.register_store(&req).unwrap().0
    }

    /// A placement with three registered stores and the bootstrapped region grown to a peer on each
    /// (as the replica checker would have it, reported by store 0 leading at term 1); returns it, the
    /// store ids and the region.
    fn three_stores(dir: &Path) -> (Placement, Vec<u64>, Region) {
        let p = Placement::open(dir, PlacementOptions::default()).unwrap();
        let stores: Vec<u64> = (0..3).map(|i| register(&p, 0, 20160 + i)).collect();
        let mut region = p.regions()[0].region.clone().unwrap();
        for &store_id in &stores[1..] {
            region.peers.push(Peer { peer_id: p.alloc_id().unwrap(), store_id });
        }
        region.epoch = Some(RegionEpoch { conf_ver: 3, version: 1 });
        beat(&p, stores[0], vec![leader_report(&region, stores[0], 1)]);
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
    fn the_first_store_bootstraps_the_first_region_with_one_peer() {
        let dir = tempfile::tempdir().unwrap();
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let a = register(&p, 0, 20160);
        let regions = p.regions();
        assert_eq!(regions.len(), 1);
        let region = regions[0].region.clone().unwrap();
        assert_eq!(region.peers.len(), 1);
        assert_eq!(region.peers[0].store_id, a);
        assert_eq!(region.epoch, Some(RegionEpoch { conf_ver: 1, version: 1 }));
        // Ids never repeat.
        let mut ids = vec![a, region.region_id, region.peers[0].peer_id];
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 3);
        // More stores do not bootstrap another region.
        register(&p, 0, 20161);
        register(&p, 0, 20162);
        assert_eq!(p.regions().len(), 1);
        assert_eq!(p.stores().len(), 3);
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
                    epoch: Some(RegionEpoch { version: 2, ..region.epoch.unwrap() }),
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
        let options = PlacementOptions { store_down_after: Duration::from_millis(0), ..Default::default() };
        let p = Placement::open(dir.path(), options).unwrap();
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
        // A follower's heartbeat does not take it; the leader's does, until the transfer shows.
        assert!(beat(&p, stores[2], vec![]).is_empty());
        for _ in 0..2 {
            let operators = beat(&p, stores[0], vec![leader_report(&region, stores[0], 7)]);
            assert_eq!(operators.len(), 1);
            assert_eq!(
                operators[0].kind,
                Some(operator::Kind::TransferLeader(crate::proto::TransferLeaderOperator { to_store_id: stores[1] }))
            );
        }
        assert!(beat(&p, stores[1], vec![leader_report(&region, stores[1], 8)]).is_empty());
        assert_eq!(p.operators().1.last().unwrap().state, OperatorState::Success as i32);
    }

    // ---- scheduling ----

    /// `region` as its leader on `store_id` reports it, with `pending` peers; returns the operators.
    fn lead(p: &Placement, store_id: u64, region: &Region, pending: &[Peer]) -> Vec<Operator> {
        let report = PeerReport { pending_peers: pending.to_vec(), ..leader_report(region, store_id, 5) };
        beat(p, store_id, vec![report])
    }

    fn with_peer(region: &Region, peer: Peer) -> Region {
        let mut grown = region.clone();
        grown.peers.push(peer);
        let epoch = grown.epoch.unwrap();
        grown.epoch = Some(RegionEpoch { conf_ver: epoch.conf_ver + 1, ..epoch });
        grown
    }

    fn without(region: &Region, store_id: u64) -> Region {
        let mut shrunk = region.clone();
        shrunk.peers.retain(|p| p.store_id != store_id);
        let epoch = shrunk.epoch.unwrap();
        shrunk.epoch = Some(RegionEpoch { conf_ver: epoch.conf_ver + 1, ..epoch });
        shrunk
    }

    fn added_peer(ops: &[Operator]) -> Peer {
        match ops {
            [Operator { kind: Some(operator::Kind::AddPeer(add)), .. }] => add.peer.unwrap(),
            other => panic!("expected one add-peer operator: {other:?}"),
        }
    }

    /// The store silent since the epoch: down for any store down time.
    fn silence(p: &Placement, store_id: u64) {
        p.inner.lock().stores.get_mut(&store_id).unwrap().last_heartbeat_ms = 1;
    }

    #[test]
    fn a_one_peer_region_grows_to_three_replicas_one_caught_up_peer_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let a = register(&p, 0, 20160);
        let mut region = p.regions()[0].region.clone().unwrap();
        lead(&p, a, &region, &[]);
        // Alone: nothing to add to.
        assert!(p.schedule().unwrap().is_empty());
        let b = register(&p, 0, 20161);
        let c = register(&p, 0, 20162);
        for _ in 0..2 {
            let created = p.schedule().unwrap();
            assert_eq!(created.len(), 1, "{created:?}");
            assert_eq!(created[0].source, REPLICA_CHECK);
            // A second round does not add another operator while this one runs.
            assert!(p.schedule().unwrap().is_empty());
            let peer = added_peer(&lead(&p, a, &region, &[]));
            assert!([b, c].contains(&peer.store_id) && !region.peers.iter().any(|q| q.store_id == peer.store_id));
            // Added, still receiving its snapshot: no further step, and the operator keeps running.
            region = with_peer(&region, peer);
            assert!(lead(&p, a, &region, &[peer]).is_empty());
            assert_eq!(p.operators().0.len(), 1);
            assert_eq!(p.regions()[0].pending_peers, vec![peer]);
            // Caught up: done.
            assert!(lead(&p, a, &region, &[]).is_empty());
            assert!(p.operators().0.is_empty());
        }
        let mut stores: Vec<u64> = region.peers.iter().map(|p| p.store_id).collect();
        stores.sort_unstable();
        assert_eq!(stores, vec![a, b, c]);
        assert!(p.schedule().unwrap().is_empty(), "three replicas: nothing more to do");
        let history = p.operators().1;
        assert_eq!(history.len(), 2);
        assert!(history.iter().all(|op| op.state == OperatorState::Success as i32));
    }

    #[test]
    fn a_peer_reported_under_an_older_membership_that_drops_it_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        // The leader (store 0) reports the region after store 2's peer was removed.
        let removed = *region.peers.iter().find(|peer| peer.store_id == stores[2]).unwrap();
        let mut now = region.clone();
        now.peers.retain(|peer| peer.store_id != stores[2]);
        now.epoch = Some(RegionEpoch { conf_ver: 4, version: 1 });
        beat(&p, stores[0], vec![leader_report(&now, stores[0], 1)]);
        let follower = |region: &Region| PeerReport { region: Some(region.clone()), ..Default::default() };
        let req = |store_id, region: &Region| StoreHeartbeatRequest {
            store_id,
            peers: vec![follower(region)],
            used_bytes: 0,
        };
        // Store 2 comes back still holding the old membership: told its peer is stale.
        let stale = p.stale_peers(&req(stores[2], &region));
        assert_eq!(stale, vec![StalePeer { region_id: region.region_id, peer: Some(removed), epoch: now.epoch }]);
        // A member reporting the old epoch (it lags) is still a member; one up to date is fine too.
        assert!(p.stale_peers(&req(stores[1], &region)).is_empty());
        assert!(p.stale_peers(&req(stores[1], &now)).is_empty());
        // Leaders' reports are region heartbeats, never judged stale here; unknown regions neither.
        let mut unknown = region.clone();
        unknown.region_id = 9999;
        assert!(p.stale_peers(&req(stores[2], &unknown)).is_empty());
    }

    #[test]
    fn a_down_store_s_peer_is_replaced_and_a_removed_peer_comes_back_never() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let d = register(&p, 0, 20163);
        p.set_scheduler(BALANCE_REGION, false).unwrap();
        p.set_scheduler(BALANCE_LEADER, false).unwrap();
        assert!(p.schedule().unwrap().is_empty());
        silence(&p, stores[2]);
        assert_eq!(p.stores()[2].state, StoreState::Down as i32);
        let created = p.schedule().unwrap();
        assert_eq!(created.len(), 1);
        let kinds: Vec<i32> = created[0].steps.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, vec![crate::proto::StepKind::AddPeer as i32, crate::proto::StepKind::RemovePeer as i32]);
        assert_eq!(created[0].steps[0].store_id, d);
        assert_eq!(created[0].steps[1].store_id, stores[2]);
        let peer = added_peer(&lead(&p, stores[0], &region, &[]));
        let grown = with_peer(&region, peer);
        // Never removed before the new peer caught up.
        assert!(lead(&p, stores[0], &grown, &[peer]).is_empty());
        let removal = lead(&p, stores[0], &grown, &[]);
        let dead = region.peers.iter().find(|q| q.store_id == stores[2]).copied();
        assert_eq!(removal[0].kind, Some(operator::Kind::RemovePeer(crate::proto::RemovePeerOperator { peer: dead })));
        assert!(lead(&p, stores[0], &without(&grown, stores[2]), &[]).is_empty());
        assert_eq!(p.operators().1.last().unwrap().state, OperatorState::Success as i32);
        assert!(p.schedule().unwrap().is_empty());
    }

    #[test]
    fn a_stalled_operator_times_out_and_the_checker_tries_again() {
        let dir = tempfile::tempdir().unwrap();
        let options = PlacementOptions { operator_timeout: Duration::from_secs(30), ..Default::default() };
        let p = Placement::open(dir.path(), options).unwrap();
        let a = register(&p, 0, 20160);
        register(&p, 0, 20161);
        let region = p.regions()[0].region.clone().unwrap();
        lead(&p, a, &region, &[]);
        let now = now_ms();
        let first = p.schedule_at(now).unwrap();
        assert_eq!(first.len(), 1);
        // Nothing happens for longer than the timeout (the stores still beat, so none is down).
        p.inner.lock().stores.values_mut().for_each(|s| s.last_heartbeat_ms = now + 31_000);
        let second = p.schedule_at(now + 31_000).unwrap();
        let history = p.operators().1;
        assert_eq!(history[0].state, OperatorState::Timeout as i32);
        assert!(history[0].note.contains("no progress"), "{}", history[0].note);
        assert_eq!(second.len(), 1);
        assert_ne!(second[0].operator_id, first[0].operator_id);
    }

    #[test]
    fn admin_operators_check_their_request_and_removing_the_leader_moves_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let d = register(&p, 0, 20163);
        let id = region.region_id;
        assert!(matches!(p.add_peer(999, d), Err(PlacementError::UnknownRegion(999))));
        assert!(matches!(p.add_peer(id, 4242), Err(PlacementError::UnknownStore(4242))));
        assert!(
            matches!(p.add_peer(id, stores[1]), Err(PlacementError::Invalid(m)) if m.contains("already has a peer"))
        );
        assert!(matches!(p.remove_peer(id, d), Err(PlacementError::Invalid(m)) if m.contains("no peer on store")));
        silence(&p, d);
        assert!(matches!(p.add_peer(id, d), Err(PlacementError::Invalid(m)) if m.contains("is down")));

        let op = p.remove_peer(id, stores[0]).unwrap();
        assert_eq!(op.source, ADMIN);
        assert_eq!(op.steps.len(), 2);
        assert_eq!(
            (op.steps[0].kind, op.steps[0].store_id),
            (crate::proto::StepKind::TransferLeader as i32, stores[1])
        );
        // An administrator's next request replaces it.
        let op2 = p.remove_peer(id, stores[2]).unwrap();
        let (running, history) = p.operators();
        assert_eq!(running.iter().map(|o| o.operator_id).collect::<Vec<_>>(), vec![op2.operator_id]);
        assert_eq!((history[0].operator_id, history[0].state), (op.operator_id, OperatorState::Replaced as i32));
        assert!(matches!(
            lead(&p, stores[0], &region, &[]).as_slice(),
            [Operator { kind: Some(operator::Kind::RemovePeer(_)), .. }]
        ));
        let single = Region { peers: vec![region.peers[0]], ..region.clone() };
        let one = RegionEpoch { conf_ver: 10, version: 1 };
        beat(&p, stores[0], vec![leader_report(&Region { epoch: Some(one), ..single }, stores[0], 5)]);
        assert!(matches!(p.remove_peer(id, stores[0]), Err(PlacementError::Invalid(m)) if m.contains("only peer")));
    }

    #[test]
    fn store_remove_drains_the_store_then_marks_it_removed_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        // Only two other stores for three replicas: refused.
        assert!(matches!(p.remove_store(stores[0]), Err(PlacementError::Invalid(m)) if m.contains("only 2 other")));
        let d = register(&p, 0, 20163);
        p.set_scheduler(BALANCE_REGION, false).unwrap();
        // Store 0 leads the region: add on d, hand leadership over, remove.
        let offline = p.remove_store(stores[0]).unwrap();
        assert_eq!(offline.state, StoreState::Offline as i32);
        assert_eq!(p.stores()[0].state, StoreState::Offline as i32, "offline survives listing");
        let created = p.schedule().unwrap();
        assert_eq!(created.len(), 1);
        let kinds: Vec<i32> = created[0].steps.iter().map(|s| s.kind).collect();
        use crate::proto::StepKind;
        assert_eq!(kinds, vec![StepKind::AddPeer as i32, StepKind::TransferLeader as i32, StepKind::RemovePeer as i32]);
        let peer = added_peer(&lead(&p, stores[0], &region, &[]));
        assert_eq!(peer.store_id, d);
        let grown = with_peer(&region, peer);
        assert!(matches!(
            lead(&p, stores[0], &grown, &[]).as_slice(),
            [Operator { kind: Some(operator::Kind::TransferLeader(_)), .. }]
        ));
        let to = created[0].steps[1].store_id;
        let removal = lead(&p, to, &grown, &[]);
        assert!(matches!(removal.as_slice(), [Operator { kind: Some(operator::Kind::RemovePeer(_)), .. }]));
        lead(&p, to, &without(&grown, stores[0]), &[]);
        assert_eq!(p.stores()[0].region_count, 0);
        p.schedule().unwrap();
        assert_eq!(p.stores()[0].state, StoreState::Removed as i32);
        // A removed store may not come back, even after a restart of placement.
        drop(p);
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        assert_eq!(p.stores()[0].state, StoreState::Removed as i32);
        assert!(matches!(
            p.register_store(&RegisterStoreRequest {
                store_id: stores[0],
                raft_addr: "127.0.0.1:1".into(),
                http_addr: "127.0.0.1:2".into(),
                version: "test".into(),
            }),
            Err(PlacementError::StoreRemoved(_))
        ));
        let req = StoreHeartbeatRequest { store_id: stores[0], ..Default::default() };
        assert!(matches!(p.store_heartbeat(&req), Err(PlacementError::StoreRemoved(_))));
        assert_eq!(p.remove_store(stores[0]).unwrap().state, StoreState::Removed as i32, "removing twice is fine");
    }

    #[test]
    fn balance_leader_spreads_leaders_and_can_be_switched_off_persistently() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        // Three regions, all led by store 0.
        let mut regions = vec![region.clone()];
        for (i, at) in ["h", "p"].iter().enumerate() {
            let last = regions.pop().unwrap();
            let (left, right) = split(&last, at, 100 + i as u64);
            regions.extend([left, right]);
            let reports = regions.iter().map(|r| leader_report(r, stores[0], 1)).collect();
            beat(&p, stores[0], reports);
        }
        assert_eq!(p.regions().len(), 3);
        p.set_scheduler(BALANCE_LEADER, false).unwrap();
        p.set_scheduler(BALANCE_REGION, false).unwrap();
        assert!(p.schedule().unwrap().is_empty());
        drop(p);
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let listed = p.schedulers();
        assert_eq!(
            listed.iter().map(|s| (s.name.as_str(), s.enabled)).collect::<Vec<_>>(),
            vec![(REPLICA_CHECK, true), (BALANCE_LEADER, false), (BALANCE_REGION, false)]
        );
        assert!(p.set_scheduler(REPLICA_CHECK, false).is_err());
        assert!(matches!(p.set_scheduler("balance-hotspot", true), Err(PlacementError::UnknownScheduler(_))));
        // Fresh heartbeats after the restart (the stores' liveness is not persisted as "now").
        for &store_id in &stores {
            beat(&p, store_id, vec![]);
        }
        p.set_scheduler(BALANCE_LEADER, true).unwrap();
        // 3 / 0 / 0 → 2 / 1 / 0 → 1 / 1 / 1: two transfers in one round (each foreseen by the next
        // decision), then nothing while counts differ by at most one.
        let created = p.schedule().unwrap();
        assert_eq!(created.len(), 2, "{created:?}");
        assert!(created.iter().all(|op| op.source == BALANCE_LEADER));
        let mut targets: Vec<u64> = created.iter().map(|op| op.steps[0].store_id).collect();
        targets.sort_unstable();
        assert_eq!(targets, vec![stores[1], stores[2]]);
        assert!(p.schedule().unwrap().is_empty());
        for op in &created {
            let to = op.steps[0].store_id;
            let moved = regions.iter().find(|r| r.region_id == op.region_id).unwrap();
            beat(&p, to, vec![leader_report(moved, to, 2)]);
        }
        assert!(p.operators().0.is_empty());
        assert!(p.schedule().unwrap().is_empty());
    }
}
