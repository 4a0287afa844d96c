//! The store loop: one thread per node that owns every local peer, with a writer thread beside it
//! that owns LMDB's write transactions (`raftstore::writer`).
//!
//! A poll round: block until a message arrives, a round comes back from the writer, or the next tick
//! is due; drain up to a batch of messages and hand each to its peer; then, for every peer with work,
//! make its log writes and its applies a task, and hand the round's tasks to the writer, which puts
//! them into **one** write transaction and commits it **once** (one fsync for all regions and all
//! clients of the round, and of every round queued behind it). The loop does not wait for that
//! commit: it steps the followers' acks, answers and builds the next round meanwhile, and finishes
//! each peer's ready when the writer reports the round durable. This group commit is what makes fekv
//! fast: `fekv_storage_proposals_per_commit` shows it working. A round that only applies committed
//! entries does not commit at all if it can wait: see [`durability`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use std::panic::AssertUnwindSafe;

use crossbeam_channel::{Receiver, Sender};
use raft::eraftpb::MessageType;

mod active;
mod changes;
mod durability;
mod empty_peers;
mod hibernate;
mod lifecycle;
mod messages;
mod pipeline;
mod round;

use super::batch_gate::{self, BatchGate};
use super::exit::{RaftstoreExit, RaftstoreHandle};

use durability::ApplyDeferral;
use pipeline::Woken;

use super::error::Error;
use super::msg::{ChangedStatus, StoreMsg};
use super::peer::{Peer, PeerConfig};
use super::region_map::RegionMap;
use super::router::Router;
use super::split_check::SplitCheckTask;
use super::writer::Writer;
use crate::ids::IdAllocator;
use crate::metrics::Metrics;
use crate::raftstore::transport::{RaftEnvelope, Transport};
use crate::storage::Engine;

/// Store-wide settings of the loop.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    pub store_id: u64,
    pub tick_interval: Duration,
    pub peer: PeerConfig,
    /// Messages handled per round at most.
    pub max_batch: usize,
    /// Bytes of the map kept free: writes that would dip into them are refused with `StorageFull`.
    pub write_reserve: u64,
    /// Bytes of disk kept free the same way: the filesystem can fill before the map does.
    pub disk_reserve: u64,
    /// Bound of the inbox; a full inbox refuses requests with `Busy` rather than queueing forever.
    pub inbox_capacity: usize,
    pub request_timeout: Duration,
    /// A region larger than this is split in two.
    pub region_max_size: u64,
    /// Ticks between a leader's split checks.
    pub split_check_ticks: u64,
    /// How long applies may wait for a durable round (see [`durability`]).
    pub apply_delay: Duration,
    /// Whether a round nobody waits behind is committed on this thread (see [`pipeline`]).
    pub inline_commit: bool,
}

pub struct Store {
    cfg: StoreConfig,
    engine: Engine,
    /// Boxed: a `Peer` is about 1.5 KiB, and the map's nodes hold their values inline, so a lookup
    /// among thousands of unboxed peers strode across megabytes (4% of a loaded store's samples).
    peers: BTreeMap<u64, Box<Peer>>,
    inbox: Receiver<StoreMsg>,
    metrics: Arc<Metrics>,
    logger: slog::Logger,
    /// Bytes in use after the last commit, for the write guard.
    used_bytes: u64,
    /// What the filesystem lets the environment still take (as of the last refresh), for the
    /// write guard: the disk can fill before the map does.
    disk_room: u64,
    transport: Box<dyn Transport>,
    regions: Arc<RegionMap>,
    split_checker: crossbeam_channel::Sender<SplitCheckTask>,
    split_worker: Option<JoinHandle<()>>,
    ticks: u64,
    /// Store-level messages (tombstone replies to stale peers), sent with the next flush.
    control_outbox: Vec<RaftEnvelope>,
    /// The regions of the snapshots let in this round: each is applied in the round's transaction and
    /// only then takes its range in `regions`, so until then a snapshot that overlaps one of them
    /// must be refused as if that range were held (see `Store::snapshot_fits`).
    snapshots_accepted: Vec<crate::proto::Region>,
    /// What reached each empty peer (by region), so one that stops hearing from a leader can ask
    /// whether it was removed (see [`empty_peers`]).
    empty_peers_heard: BTreeMap<u64, empty_peers::Heard>,
    /// How long a round that holds few writes waits for more (see [`batch_gate`]).
    batch_gate: BatchGate,
    /// Which peers the next round visits and which ones tick (see [`active`]).
    activity: active::Activity,
    /// Awake leaders' idle ticks, towards hibernation (see [`hibernate`]).
    idle_leaders: hibernate::IdleLeaders,
    /// Which peers rounds visited, for heartbeats that ask only for what may have changed.
    status_changes: changes::StatusChanges,
    /// Regions whose peer may be empty (created by a message, waiting for a snapshot): a superset,
    /// cleaned when read, so a round need not scan every peer to find them.
    maybe_empty: std::collections::BTreeSet<u64>,
    /// Test hook (debug builds only, see [`super::failpoint`]): the first write panics the loop.
    panic_on_write: bool,
    /// How long the peers' committed entries may wait to be applied (see [`durability`]).
    deferral: ApplyDeferral,
    /// A peer's pending applies are awaited (a read, a conditional write): the next round commits
    /// them without waiting for the deferral's deadline.
    apply_wanted: bool,
    /// The thread that writes and commits the rounds.
    writer: Writer,
    /// Rounds handed to the writer, oldest first, waiting for their outcome (see [`pipeline`]).
    in_flight: std::collections::VecDeque<pipeline::InFlight>,
    /// An error met where it cannot be returned (waiting for the writer before destroying a peer):
    /// the loop ends with it.
    fatal: Option<crate::storage::StorageError>,
}

/// The store's inbox: bounded, so a store that falls behind refuses requests (`Busy`) instead of
/// queueing them without limit. Created before the store so a transport can report into it.
pub fn inbox(cfg: &StoreConfig) -> (Sender<StoreMsg>, Receiver<StoreMsg>) {
    crossbeam_channel::bounded(cfg.inbox_capacity)
}

/// Starts the store loop on its own thread over every region this store holds (read from LMDB).
/// The handle tells its owner when the thread ends and how: a panic there is a broken invariant,
/// and the node cannot go on without its raftstore.
pub fn start(
    cfg: StoreConfig,
    engine: Engine,
    metrics: Arc<Metrics>,
    transport: Box<dyn Transport>,
    (tx, inbox): (Sender<StoreMsg>, Receiver<StoreMsg>),
    ids: Arc<dyn IdAllocator>,
) -> Result<(Router, RaftstoreHandle), crate::storage::StorageError> {
    let logger = crate::logging::raft_logger();
    let regions = Arc::new(RegionMap::default());
    let mut peers = BTreeMap::new();
    let txn = engine.read_txn()?;
    let region_states = engine.region_states(&txn)?;
    drop(txn);
    let mut removed_while_down = Vec::new();
    for state in region_states {
        let Some(region) = state.region else { continue };
        if state.state != crate::proto::PeerState::Normal as i32 {
            continue;
        }
        if !region.peers.iter().any(|p| p.store_id == cfg.store_id) {
            // Its removal was applied, but the node stopped before destroying the peer.
            removed_while_down.push((region, state.removed_peer_id));
            continue;
        }
        regions.insert(region.clone());
        let peer = Peer::load(engine.clone(), region, cfg.store_id, cfg.peer.clone(), metrics.clone(), &logger)?;
        peers.insert(peer.region_id(), Box::new(peer));
    }
    let split_results = tx.clone();
    let cfg_apply_delay = cfg.apply_delay;
    let damaged_snapshots = metrics.raft_snapshots.with_label_values(&["rejected"]);
    let router = Router::new(tx, regions.clone(), cfg.request_timeout, damaged_snapshots);
    let (used_bytes, disk_room) = engine.stats().map_or((0, u64::MAX), |s| (s.used_bytes, s.disk_room()));
    let (split_checker, split_worker) = super::split_check::start(engine.clone(), ids, split_results)
        .map_err(|e| crate::storage::StorageError::Io { what: "spawning the split-check thread".into(), source: e })?;
    let writer = Writer::start(engine.clone(), cfg.store_id)
        .map_err(|e| crate::storage::StorageError::Io { what: "spawning the writer thread".into(), source: e })?;
    let mut store = Store {
        cfg,
        engine,
        peers,
        inbox,
        metrics,
        logger,
        used_bytes,
        disk_room,
        transport,
        regions,
        split_checker,
        split_worker: Some(split_worker),
        ticks: 0,
        control_outbox: Vec::new(),
        snapshots_accepted: Vec::new(),
        empty_peers_heard: BTreeMap::new(),
        batch_gate: BatchGate::default(),
        activity: active::Activity::default(),
        idle_leaders: Default::default(),
        maybe_empty: Default::default(),
        status_changes: Default::default(),
        panic_on_write: super::failpoint::enabled("raftstore_panic_on_write"),
        deferral: ApplyDeferral::new(cfg_apply_delay),
        apply_wanted: false,
        writer,
        in_flight: Default::default(),
        fatal: None,
    };
    for region_id in store.peers.keys() {
        store.activity.add(*region_id);
    }
    for (region, peer_id) in removed_while_down {
        store.write_tombstone(&region, true, peer_id)?;
    }
    let (exit_tx, exit_rx) = tokio::sync::watch::channel(None);
    let store_id = store.cfg.store_id;
    let thread = std::thread::Builder::new()
        .name("raftstore".into())
        .spawn(move || {
            // A panic ends the loop, not the report: the store is dropped all the same (its LMDB
            // transaction, if one was open, is aborted), and the owner is told why.
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| store.run()));
            let exit = match ran {
                Ok(Ok(())) => RaftstoreExit::Stopped,
                Ok(Err(err)) => RaftstoreExit::Panicked(crate::panics::PanicReport {
                    message: format!("the raftstore cannot go on: {err}"),
                    location: None,
                }),
                Err(payload) => RaftstoreExit::Panicked(crate::panics::PanicReport::caught(payload.as_ref())),
            };
            // Dropping the store closes the worker's queue and the inbox it reports to, so it ends;
            // joining it means every handle on the environment is gone when this thread is.
            let worker = store.split_worker.take();
            drop(store);
            if let Some(worker) = worker {
                let _ = worker.join();
            }
            if let RaftstoreExit::Panicked(report) = &exit {
                tracing::error!(store_id, %report, "the raftstore thread died");
            }
            let _ = exit_tx.send(Some(exit));
        })
        .map_err(|e| crate::storage::StorageError::Io { what: "spawning the raftstore thread".into(), source: e })?;
    Ok((router, RaftstoreHandle::new(thread, exit_rx)))
}

impl Store {
    /// The loop; an error ends it (the state in memory can no longer be trusted) and is reported
    /// as the raftstore's exit.
    fn run(&mut self) -> Result<(), crate::storage::StorageError> {
        // One span for the thread's life: every event of the loop carries the store.
        let _span = tracing::info_span!("raftstore", store_id = self.cfg.store_id).entered();
        tracing::info!(store_id = self.cfg.store_id, regions = self.peers.len(), "raftstore started");
        let mut next_tick = Instant::now() + self.cfg.tick_interval;
        let mut batch = Vec::with_capacity(self.cfg.max_batch);
        let mut stopping = false;
        let mut outcome = Ok(());
        while !stopping {
            // Work left from the last round (a peer still active, or applies someone waits for)
            // means: do not sleep, unless the writer holds as many rounds as it may: then the next
            // one waits for an outcome. Deferred applies wake the loop when they are due.
            let room = self.in_flight.len() < pipeline::MAX_ROUNDS_IN_FLIGHT;
            let busy = room && (self.apply_wanted || self.activity.has_work());
            let wake = self.deferral.deadline().map_or(next_tick, |due| due.min(next_tick));
            let wait = if busy { Duration::ZERO } else { wake.saturating_duration_since(Instant::now()) };
            match self.wait(wait) {
                Woken::Msg(msg) => batch.push(msg),
                Woken::Done(done) => {
                    if let Err(err) = self.on_done(done) {
                        outcome = Err(err);
                        break;
                    }
                }
                Woken::Timeout => {}
                Woken::Closed => stopping = true,
                Woken::WriterDied => {
                    outcome = Err(self.writer.death());
                    break;
                }
            }
            let round_started = Instant::now();
            while batch.len() < self.cfg.max_batch {
                match self.inbox.try_recv() {
                    Ok(msg) => batch.push(msg),
                    Err(_) => break,
                }
            }
            // With rounds in flight the writer gathers them into one commit anyway, and waiting here
            // would hold their answers up.
            if !busy && !batch.is_empty() && self.in_flight.is_empty() {
                self.gather(&mut batch, round_started);
            }
            for msg in batch.drain(..) {
                match msg {
                    StoreMsg::Shutdown => stopping = true,
                    msg => self.on_msg(msg),
                }
            }
            // Rounds the writer finished meanwhile: their answers and acks first.
            let finished = self.finish_done().and_then(|()| self.fatal.take().map_or(Ok(()), Err));
            if let Err(err) = finished {
                outcome = Err(err);
                break;
            }
            let now = Instant::now();
            if now >= next_tick {
                self.on_tick();
                next_tick = (next_tick + self.cfg.tick_interval).max(now);
            }
            if let Err(err) = self.handle_round() {
                outcome = Err(err);
                break;
            }
        }
        // What the writer holds is finished first (an error ends that: what committed stands).
        if outcome.is_ok() {
            outcome = self.drain();
        }
        // Applies still deferred are not committed: like after a crash, they are applied again at
        // the next start (their entries are in the synced log). An apply-only commit's meta page
        // is flushed here, so a stop leaves nothing a power loss could undo (on an error too: what
        // committed before it stands).
        if let Err(err) = self.engine.force_sync() {
            tracing::warn!(store_id = self.cfg.store_id, error = %err, "final LMDB sync failed");
        }
        tracing::info!(store_id = self.cfg.store_id, "raftstore stopped");
        outcome
    }

    /// Takes more writes into a round that holds few while they keep coming (see [`batch_gate`]).
    /// Anything else in the round, or arriving meanwhile (raft messages, reads, admin), ends the wait:
    /// it is someone else's latency.
    fn gather(&mut self, batch: &mut Vec<StoreMsg>, round_started: Instant) {
        let is_write = |msg: &StoreMsg| matches!(msg, StoreMsg::Write { .. });
        if !batch.iter().all(is_write) {
            return;
        }
        let Some(plan) = self.batch_gate.plan(batch.len(), round_started) else { return };
        while batch.len() < plan.want.min(self.cfg.max_batch) {
            let left = plan.until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            match self.inbox.recv_timeout(left.min(batch_gate::MAX_GAP)) {
                Ok(msg) => {
                    let write = is_write(&msg);
                    batch.push(msg);
                    if !write {
                        break;
                    }
                }
                // A gap (the writers are not coming) or a closed inbox (the next receive sees it).
                Err(_) => break,
            }
        }
    }

    fn on_tick(&mut self) {
        self.ticks += 1;
        let check_sizes = self.ticks.is_multiple_of(self.cfg.split_check_ticks.max(1));
        if check_sizes {
            // The disk's free space changes without a commit here (another program freed some).
            self.refresh_usage();
        }
        for region_id in self.activity.tick_awake() {
            if self.hibernates_now(region_id) {
                continue;
            }
            let Some(peer) = self.peers.get_mut(&region_id) else { continue };
            peer.on_tick();
            if check_sizes && peer.wants_split_check(self.cfg.region_max_size) {
                let task =
                    SplitCheckTask { region: peer.region().clone(), max_size: self.cfg.region_max_size, forced: None };
                let _ = self.split_checker.send(task);
            }
        }
        self.probe_leaderless_empty_peers();
        let asleep = self.peers.len().saturating_sub(self.activity.awake_count());
        self.metrics.raftstore_hibernated_regions.set(asleep as i64);
    }

    fn on_msg(&mut self, msg: StoreMsg) {
        if let Some(region_id) = msg.region_id() {
            self.wake_for_request(region_id);
        }
        match msg {
            StoreMsg::Write { region_id, requests, callback } => {
                if self.panic_on_write {
                    panic!("failpoint raftstore_panic_on_write: a write reached the raftstore");
                }
                let Some(peer) = self.peers.get_mut(&region_id) else {
                    let _ = callback.send(Err(Error::RegionNotFound { region_id }));
                    return;
                };
                // Deletes free space, so only writes that add data are refused near a full map or
                // disk: the reserve is what deletes and log compaction write with.
                let adds_data = requests.iter().any(|r| matches!(r.cmd, Some(crate::proto::request::Cmd::Put(_))));
                let map_size = self.engine.map_size();
                let full = if self.used_bytes + self.cfg.write_reserve > map_size {
                    Some(Error::StorageFull { used_bytes: self.used_bytes, map_size })
                } else if self.disk_room < self.cfg.disk_reserve {
                    let dir = self.engine.path().display().to_string();
                    Some(Error::DiskFull { dir, room_bytes: self.disk_room, reserve_bytes: self.cfg.disk_reserve })
                } else {
                    None
                };
                if let (true, Some(full)) = (adds_data, full) {
                    self.metrics.raft_proposals_rejected.with_label_values(&["storage_full"]).inc();
                    let _ = callback.send(Err(full));
                    return;
                }
                self.metrics.raft_proposals.inc();
                peer.on_write(requests, callback);
            }
            StoreMsg::ReadIndex { region_id, callback } => match self.peers.get_mut(&region_id) {
                Some(peer) => peer.on_read_index(callback),
                None => {
                    let _ = callback.send(Err(Error::RegionNotFound { region_id }));
                }
            },
            StoreMsg::Status { callback } => {
                let _ = callback.send(Ok(self.peers.values().map(|peer| peer.status()).collect()));
            }
            StoreMsg::ChangedStatus { since, include, callback } => {
                let changes = &self.status_changes;
                let peers = self
                    .peers
                    .iter()
                    .filter(|(region_id, _)| changes.changed_since(**region_id, since) || include(**region_id))
                    .map(|(_, peer)| peer.status())
                    .collect();
                let _ = callback.send(Ok(ChangedStatus { generation: changes.generation(), peers }));
            }
            StoreMsg::Raft(envelope) => self.on_raft_message(*envelope, None),
            StoreMsg::Snapshot(envelope, snapshot) => self.on_raft_message(*envelope, Some(snapshot)),
            StoreMsg::SplitCheckResult { region_id, epoch, size, keys, plan } => {
                let Some(peer) = self.peers.get_mut(&region_id) else { return };
                peer.on_split_check(epoch, size, keys);
                if let Some(plan) = plan {
                    if let Err(err) = peer.propose_split(epoch, plan.split_key, plan.new_region_id, plan.new_peer_ids) {
                        tracing::debug!(region_id, error = %err, "split not proposed");
                    }
                }
            }
            StoreMsg::TransferLeader { region_id, to_store_id, callback } => {
                let result = match self.peers.get_mut(&region_id) {
                    None => Err(Error::RegionNotFound { region_id }),
                    Some(peer) => peer.transfer_leader(to_store_id),
                };
                let _ = callback.send(result);
            }
            StoreMsg::SplitRegion { region_id, split_key, callback } => {
                let result = match self.peers.get_mut(&region_id) {
                    None => Err(Error::RegionNotFound { region_id }),
                    Some(peer) if !peer.is_leader() => Err(peer.not_leader()),
                    Some(peer) => {
                        let task = SplitCheckTask {
                            region: peer.region().clone(),
                            max_size: self.cfg.region_max_size,
                            forced: Some(split_key),
                        };
                        let _ = self.split_checker.send(task);
                        Ok(())
                    }
                };
                let _ = callback.send(result);
            }
            StoreMsg::ChangePeer { region_id, change, callback } => match self.peers.get_mut(&region_id) {
                Some(peer) => peer.on_change_peer(change, callback),
                None => {
                    let _ = callback.send(Err(Error::RegionNotFound { region_id }));
                }
            },
            StoreMsg::CreatePeer { region, callback } => {
                let _ = callback.send(self.create_peer(region));
            }
            StoreMsg::PeerUnreachable { region_id, to_peer_id } => {
                if let Some(peer) = self.peers.get_mut(&region_id) {
                    peer.on_send_failure(to_peer_id, MessageType::MsgAppend);
                }
            }
            StoreMsg::SnapshotStatus { region_id, to_peer_id, status } => {
                if let Some(peer) = self.peers.get_mut(&region_id) {
                    peer.on_snapshot_status(to_peer_id, status);
                }
            }
            StoreMsg::Shutdown => {}
        }
    }

    pub(super) fn refresh_usage(&mut self) {
        if let Ok(stats) = self.engine.stats() {
            self.used_bytes = stats.used_bytes;
            self.disk_room = stats.disk_room();
            self.metrics.storage_used_bytes.set(stats.used_bytes as i64);
            self.metrics.storage_map_size_bytes.set(stats.map_size as i64);
        }
    }
}
