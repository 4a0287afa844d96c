//! The placement state: stores, the region tree, the id allocator, the scheduler switches, and the
//! running operators. Every change that matters after a restart (a new store, new addresses, a store
//! drained or removed, an id, a region's range, epoch, peers or leader, a scheduler switched off) is
//! durable in LMDB before the call returns; only the records it touched are written. Heartbeat times,
//! used bytes, approximate region sizes and pending peers change on every beat, so they live in
//! memory and reach the disk only when their record is written for another reason: a restarted
//! placement service waits for fresh heartbeats anyway. Operators are not persisted either: after a
//! restart the schedulers decide again from fresh heartbeats.
//!
//! One type, [`Placement`], its concerns in submodules of one `impl`:
//! - this file: the options, the errors, the in-memory state behind the lock, ids and listings;
//! - `heartbeat`: what stores say (registration, heartbeats with the region reports that changed);
//! - `region_log`: which region records changed, for the nodes' region caches;
//! - `admin`: what administrators ask for (splits, transfers, peer changes, drains, switches);
//! - `scheduling`: the scheduling round that repairs and balances the cluster;
//! - `auth`: users, roles and the auth switch (`fekv ctl user|role|auth`), and handing the state on;
//! - `persist`: how the state reaches LMDB.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions};
use parking_lot::Mutex;

use crate::operators::{OpStep, Operators, Priority, RegionState, StoreHealth};
use crate::proto::{
    Operator, OperatorInfo, Peer, PeerReport, PlacementState, Region, RegionEpoch, RegionInfo, RegisterStoreRequest,
    RegisterStoreResponse, SchedulerInfo, StalePeer, StoreHeartbeatRequest, StoreInfo, StoreState,
};
use crate::region_tree::{HeartbeatOutcome, RegionReport, RegionTree};
use crate::schedulers::{self, Plan, RegionView, Step};

mod admin;
mod auth;
mod cert_identity;
mod heartbeat;
mod identity;
pub(crate) mod ledger;
pub(crate) mod persist;
mod region_log;
mod scheduling;
pub(crate) mod sink;
#[cfg(test)]
mod testing;

use persist::{Dirty, Writer};
use region_log::RegionLog;
use scheduling::RoundState;
use sink::Sink;

#[derive(Debug, Clone)]
pub struct PlacementOptions {
    /// Replicas of each region: the replica checker adds peers until every region has this many.
    pub replicas: usize,
    /// A store silent for this long is down, and the replica checker replaces its peers.
    pub store_down_after: Duration,
    /// An operator whose current step makes no progress for this long ends as `timeout`.
    pub operator_timeout: Duration,
    /// The cost of the argon2id hash of every password `user add` sets (tests: `Minimal`).
    pub password_cost: crate::auth::PasswordCost,
}

impl Default for PlacementOptions {
    fn default() -> Self {
        PlacementOptions {
            replicas: 3,
            store_down_after: Duration::from_secs(10),
            operator_timeout: Duration::from_secs(180),
            password_cost: crate::auth::PasswordCost::Interactive,
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
/// How many ids one meta write reserves.
pub const ID_BATCH: u64 = 1_000;
/// Operators made by an administrator's request.
pub const ADMIN: &str = "admin";
/// How long the schedulers leave a region alone after an administrator's operator on it ends.
pub const ADMIN_HOLD: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum PlacementError {
    #[error("placement storage: {0}")]
    Storage(#[from] heed::Error),
    /// The writer thread could not commit a change (it is retried with the next one).
    #[error("placement storage: cannot write the state: {0}")]
    Write(String),
    /// This replica of the placement group is not (or no longer) its leader: the change was not
    /// applied, or its outcome is unknown.
    #[error("{0}")]
    Unavailable(String),
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
    #[error(transparent)]
    Auth(#[from] crate::auth::AuthAdminError),
    #[error("cannot generate the cluster's token key: {0}")]
    KeyGeneration(String),
    /// A registration or heartbeat for a store id without that store's secret.
    #[error("refused to act as store {store_id}: {reason}")]
    StoreUnauthenticated { store_id: u64, reason: &'static str },
    #[error("this store belongs to cluster {theirs}, and this placement service runs cluster {ours}")]
    WrongCluster { theirs: u64, ours: u64 },
}

/// What the lock guards: the in-memory form of [`PlacementState`], and the operators.
struct Inner {
    cluster_id: u64,
    next_id: u64,
    /// Ids below this are reserved by the meta record on disk (or in the group's log): `alloc` hands
    /// them out without a write, and writes a new mark before it hands out the first id past it.
    id_mark: u64,
    bootstrapped: bool,
    /// By store id, so listings come out in id order. `state` holds what is persisted: up, offline or
    /// removed (down is computed from the last heartbeat when listed).
    stores: std::collections::BTreeMap<u64, StoreInfo>,
    regions: RegionTree,
    disabled_schedulers: BTreeSet<String>,
    /// Each region's pending peers, from its leader's last heartbeat.
    pending: HashMap<u64, Vec<Peer>>,
    operators: Operators,
    /// Users, roles, grants and the token key; replaced whole by each change (see `auth`).
    auth: crate::auth::AuthState,
    /// Records changed since they were last handed to the writer.
    dirty: Dirty,
    /// Region records changed, in order, for the nodes' region caches.
    region_log: RegionLog,
    /// Stores that sent a full report since this process opened the state: the others are asked to.
    full_reported: HashSet<u64>,
    /// What the last scheduling round saw, to skip the next one when nothing changed.
    round: RoundState,
}

impl Inner {
    /// The in-memory state; a state without auth (a new cluster, or one from before auth) gets a
    /// fresh one, marked to be written.
    fn from_state(state: PlacementState, operator_timeout: Duration) -> Result<Inner, PlacementError> {
        let (auth, auth_is_new) = auth::from_stored(state.auth.as_ref())?;
        let mut regions = RegionTree::new();
        for info in state.regions.into_iter().filter(|info| info.region.is_some()) {
            regions.insert(info);
        }
        Ok(Inner {
            cluster_id: state.cluster_id,
            next_id: state.next_id,
            id_mark: state.next_id,
            bootstrapped: state.bootstrapped,
            stores: state.stores.into_iter().map(|s| (s.store_id, s)).collect(),
            regions,
            disabled_schedulers: state.disabled_schedulers.into_iter().collect(),
            pending: HashMap::new(),
            operators: Operators::new(operator_timeout),
            auth,
            dirty: Dirty { auth: auth_is_new, ..Dirty::default() },
            region_log: RegionLog::new(),
            full_reported: HashSet::new(),
            round: RoundState::default(),
        })
    }

    fn alloc(&mut self) -> u64 {
        let id = self.next_id.max(1);
        self.next_id = id + 1;
        if id >= self.id_mark {
            // The caller returns only once this mark is safe, so no id of the batch is handed out
            // before it: after a crash (or a leader change) the next ids start above it.
            self.id_mark = id + ID_BATCH;
            self.dirty.meta = true;
        }
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
                    // Placement's to keep; no listing shows it.
                    secret_sha256: Vec::new(),
                    registration_token_sha256: Vec::new(),
                    ..store.clone()
                }
            })
            .collect()
    }

    fn scheduler_enabled(&self, name: &str) -> bool {
        !self.disabled_schedulers.contains(name)
    }
}

pub struct Placement {
    inner: Mutex<Inner>,
    /// Where changes go: the writer thread (which owns the LMDB environment of a single placement:
    /// dropping it finishes the queued writes and closes it), or the group's raft.
    sink: Sink,
    options: PlacementOptions,
}

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
        txn.commit()?;
        let inner = persist::load(&env, db, options.operator_timeout)?;
        let writer = Writer::start(env, db)?;
        Ok(Placement { inner: Mutex::new(inner), sink: Sink::Local(writer), options })
    }

    /// The state a group's new leader serves: what the applied records hold (or a new cluster's,
    /// or the old single record's, proposed at once). Its changes go to raft through `sink`.
    pub(crate) fn for_group(
        txn: &heed::RoTxn,
        db: Database<Bytes, Bytes>,
        options: PlacementOptions,
        sink: sink::GroupSink,
    ) -> Result<Placement, PlacementError> {
        let mut inner = persist::read_inner(txn, db, options.operator_timeout)?;
        // A new leader has heard from no store yet, and the times in the records are whenever each
        // record was last written: each store gets the down time from now to be heard from, as if
        // it had just beaten, instead of looking down at once and having its replicas moved.
        let now = now_ms();
        for store in inner.stores.values_mut() {
            store.last_heartbeat_ms = store.last_heartbeat_ms.max(now);
        }
        let placement = Placement { inner: Mutex::new(inner), sink: Sink::Group(sink), options };
        placement.queue_unwritten();
        Ok(placement)
    }

    /// Queues what the state holds and the records lack, without waiting for it.
    fn queue_unwritten(&self) {
        let mut inner = self.inner.lock();
        if !inner.dirty.is_empty() {
            let writes = inner.take_writes();
            self.sink.queue(writes);
        }
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
        self.change(|inner| Ok((0..count).map(|_| inner.alloc()).collect()))
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

    /// Running operators, and the recent finished ones (oldest first).
    pub fn operators(&self) -> (Vec<OperatorInfo>, Vec<OperatorInfo>) {
        self.inner.lock().operators.infos()
    }

    /// Every store in id order, with its state as of now and its counts from the region tree.
    pub fn stores(&self) -> Vec<StoreInfo> {
        self.inner.lock().store_infos(now_ms(), self.options.store_down_after)
    }

    /// Every region, in key order, with its pending peers.
    pub fn regions(&self) -> Vec<RegionInfo> {
        self.inner.lock().region_infos()
    }

    /// Every region, or only the regions whose record changed since the version the request names
    /// (see `region_log`).
    pub fn regions_since(&self, req: &crate::proto::GetRegionsRequest) -> crate::proto::GetRegionsResponse {
        self.inner.lock().regions_since(req)
    }
}
