//! The placement group: N replicas of placement's state that agree through raft (`fekv placement
//! --peers A,B,C`). Membership is fixed at start: member ids are positions in the list of peers.
//!
//! What is replicated is what a single placement persists: each change's write set of records
//! (`meta`, `auth`, `store/<id>`, `region/<id>`) is one raft entry, which every replica applies by
//! writing those records and its applied index in one LMDB transaction ([`storage`]). Only the leader
//! keeps a live [`Placement`]: it loads it from its applied records once it has applied an entry of
//! its own term (exactly what a restart does), and drops it, with its operators, when it stops
//! leading or when raft refuses one of its proposals; so nothing unacknowledged stays in memory.
//! A caller's change returns once its entry is applied on the leader (`state/sink.rs`).
//!
//! - this file: the configuration, the handle ([`Group`]) and what it reports;
//! - [`driver`]: the thread that owns the `RawNode`, its ticks, readies and proposals;
//! - [`storage`]: the raft log next to the records;
//! - [`grpc`]: the raft messages between members, over the placement's own gRPC listener.

mod driver;
pub mod grpc;
mod storage;
#[cfg(test)]
mod tests;

use std::path::Path;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use raft::eraftpb::Message;

use crate::state::sink::Proposal;
use crate::state::{Placement, PlacementError, PlacementOptions};

#[derive(Debug, thiserror::Error)]
pub enum GroupError {
    #[error("placement group storage: {0}")]
    Storage(#[from] heed::Error),
    #[error("placement group log is damaged: {0}")]
    Corrupt(String),
    #[error(
        "this placement data directory belongs to a group of {stored} members, and --peers names {given}: \
         membership is fixed at start"
    )]
    Membership { stored: usize, given: usize },
    #[error("invalid placement group: {0}")]
    Invalid(String),
    #[error("raft: {0}")]
    Raft(#[from] raft::Error),
    #[error(transparent)]
    Placement(#[from] PlacementError),
    #[error("cannot start the placement group's driver: {0}")]
    Thread(std::io::Error),
}

#[derive(Debug, Clone)]
pub struct GroupConfig {
    /// This replica's id: its 1-based position in `members`.
    pub member_id: u64,
    /// Every member's client address (`host:port`), in member id order.
    pub members: Vec<String>,
    /// One raft tick; elections time out after 10 to 20 of them, leaders heartbeat every 2.
    pub tick: Duration,
    pub election_ticks: usize,
    /// Compacts the log once this many applied entries are behind its first one.
    pub compact_every: u64,
    pub options: PlacementOptions,
}

impl GroupConfig {
    pub fn new(member_id: u64, members: Vec<String>, options: PlacementOptions) -> GroupConfig {
        GroupConfig {
            member_id,
            members,
            tick: Duration::from_millis(100),
            election_ticks: 10,
            compact_every: 500,
            options,
        }
    }

    /// The election timeout raft starts from (the randomized one is up to twice as long).
    pub fn election_timeout(&self) -> Duration {
        self.tick * self.election_ticks as u32
    }
}

/// What the driver is told.
pub enum Input {
    /// A raft message from another member.
    Step(Message),
    /// A change of the live placement (`state/sink.rs`).
    Propose(Proposal),
    /// A message to this member could not be sent.
    Unreachable(u64),
    /// A snapshot to this member was sent, or failed.
    Snapshot { to: u64, sent: bool },
    /// Hand leadership to this member.
    Transfer(u64),
}

/// The way into the driver.
#[derive(Clone)]
pub struct Inbox(mpsc::Sender<Input>);

impl Inbox {
    /// False once the driver has stopped.
    pub fn send(&self, input: Input) -> bool {
        self.0.send(input).is_ok()
    }
}

/// Sends raft messages to the other members (gRPC in a process, a router in tests). Sending never
/// blocks the driver: a message that cannot be delivered is dropped (raft sends again), and the
/// transport tells the driver with [`Input::Unreachable`].
pub trait RaftTransport: Send + 'static {
    fn send(&mut self, messages: Vec<Message>);
}

/// Records by key.
pub type Records = std::collections::BTreeMap<Vec<u8>, Vec<u8>>;

/// A replica's view of the group, as `GetMembers` reports it.
#[derive(Debug, Clone, Default)]
pub struct GroupStatus {
    pub member_id: u64,
    /// 0: none known.
    pub leader_id: u64,
    pub term: u64,
    pub commit: u64,
    pub applied: u64,
    /// This replica leads and serves (its state is loaded).
    pub serving: bool,
    /// Snapshots from the leader this replica installed since it started.
    pub snapshots_installed: u64,
    /// Members heard from recently, this one included.
    pub reachable: usize,
    /// Why the driver stopped, if it did.
    pub stopped: Option<String>,
}

/// The leader's live state: `instance` tells it apart from the one before and after it.
#[derive(Clone)]
pub struct Live {
    pub instance: u64,
    pub placement: Arc<Placement>,
    /// Where its callers wait for their changes (closed if the driver dies under them).
    ledger: Arc<crate::state::ledger::Ledger>,
}

struct Shared {
    status: Mutex<GroupStatus>,
    live: RwLock<Option<Live>>,
}

/// A running replica of the placement group.
pub struct Group {
    config: GroupConfig,
    /// The environment, the records and the log databases (read by [`Group::records`]).
    storage: driver::Storage,
    inbox: Inbox,
    shared: Arc<Shared>,
    driver: Option<JoinHandle<()>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Group {
    /// Opens the replica's state in `dir` and starts its driver; `transport` is made with the inbox
    /// it reports to.
    pub fn start<T: RaftTransport>(
        dir: &Path,
        config: GroupConfig,
        logger: slog::Logger,
        transport: impl FnOnce(Inbox) -> T,
    ) -> Result<Group, GroupError> {
        let count = config.members.len() as u64;
        if config.member_id == 0 || config.member_id > count {
            return Err(GroupError::Invalid(format!("member {} of a group of {count}", config.member_id)));
        }
        let (tx, inputs) = mpsc::channel();
        let inbox = Inbox(tx);
        let shared = Arc::new(Shared { status: Mutex::new(GroupStatus::default()), live: RwLock::new(None) });
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let driver = driver::Driver::open(dir, &config, logger, inbox.clone(), shared.clone(), stop.clone())?;
        let storage = driver.storage();
        let transport = transport(inbox.clone());
        let thread = std::thread::Builder::new()
            .name(format!("placement-raft-{}", config.member_id))
            .spawn(move || {
                let shared = driver.shared();
                let run = std::panic::AssertUnwindSafe(move || driver.run(inputs, transport));
                if let Err(panic) = std::panic::catch_unwind(run) {
                    // Nobody may wait on a dead driver: the callers fail, and the replica says why.
                    let message = panic
                        .downcast_ref::<&str>()
                        .map(|s| s.to_string())
                        .or_else(|| panic.downcast_ref::<String>().cloned())
                        .unwrap_or_default();
                    let reason = format!("the placement raft driver panicked: {message}");
                    if let Some(live) = shared.live.write().take() {
                        live.ledger.close(crate::state::ledger::Failure::Unavailable(reason.clone()));
                    }
                    let mut status = shared.status.lock();
                    status.serving = false;
                    status.stopped = Some(reason);
                }
            })
            .map_err(GroupError::Thread)?;
        Ok(Group { config, storage, inbox, shared, driver: Some(thread), stop })
    }

    pub fn config(&self) -> &GroupConfig {
        &self.config
    }

    pub fn inbox(&self) -> &Inbox {
        &self.inbox
    }

    pub fn status(&self) -> GroupStatus {
        self.shared.status.lock().clone()
    }

    /// The live state, while this replica leads and serves.
    pub fn live(&self) -> Option<Live> {
        self.shared.live.read().clone()
    }

    /// The leader's client address, when another member is known to lead.
    pub fn leader_hint(&self) -> Option<String> {
        let status = self.status();
        if status.leader_id == 0 || status.leader_id == self.config.member_id {
            return None;
        }
        self.config.members.get(status.leader_id as usize - 1).cloned()
    }

    /// Why this replica refuses a leader-only call, in words.
    pub fn refusal(&self) -> String {
        let status = self.status();
        let members = self.config.members.len();
        if let Some(reason) = &status.stopped {
            return format!("this placement replica has stopped: {reason}");
        }
        match self.leader_hint() {
            Some(addr) => {
                format!("this placement replica is a follower; the leader is member {} at {addr}", status.leader_id)
            }
            None if status.leader_id == self.config.member_id => {
                "this placement replica was just elected and is loading its state; try again".to_string()
            }
            None => format!(
                "placement has no leader: {} of {members} members reachable; writes are refused until a quorum is back",
                status.reachable
            ),
        }
    }

    /// Every record this replica has applied, by key (what a snapshot of it holds), and the index
    /// they were applied up to.
    pub fn records(&self) -> Result<(u64, Records), GroupError> {
        let (env, records_db, raft_db) = &self.storage;
        let txn = env.read_txn()?;
        let mut records = std::collections::BTreeMap::new();
        for item in records_db.iter(&txn)? {
            let (key, value) = item?;
            records.insert(key.to_vec(), value.to_vec());
        }
        Ok((storage::applied_in(&txn, *raft_db)?.0, records))
    }

    /// The cluster id in this replica's applied records (0 before the first leader wrote them).
    pub fn cluster_id(&self) -> u64 {
        let (env, records_db, _) = &self.storage;
        let read = env.read_txn().map_err(PlacementError::from);
        read.and_then(|txn| crate::state::persist::stored_cluster_id(&txn, *records_db)).ok().flatten().unwrap_or(0)
    }

    /// Asks raft to hand leadership to `to` (the caller watches [`Group::status`] for the outcome).
    pub fn transfer_leader(&self, to: u64) -> bool {
        self.inbox.send(Input::Transfer(to))
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        if let Some(thread) = self.driver.take() {
            let _ = thread.join();
        }
    }
}
