//! The thread that drives one replica's `RawNode`: it ticks it, steps the other members' messages
//! into it, proposes the live placement's changes, and handles its readies in raft-rs's order
//! (leader messages at once; snapshot, committed entries, new entries and hard state in one LMDB
//! transaction; the messages that promise them only after it committed). Then it decides whether
//! this replica serves: it loads the live placement once it leads and has applied everything in its
//! log (an entry of its own term included), and drops it when it stops leading.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Instant;

use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions, RwTxn};
use prost::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};

use super::storage::LogStore;
use super::{GroupConfig, GroupError, Inbox, Input, Live, RaftTransport, Shared};
use crate::proto::PlacementRaftEntry;
use crate::state::ledger::{Failure, Ledger};
use crate::state::sink::{GroupSink, Proposal, Propose};
use crate::state::{Placement, PlacementOptions};

/// The environment, the records and the log.
pub(super) type Storage = (Env, Database<Bytes, Bytes>, Database<Bytes, Bytes>);

/// The live placement and how its proposals are answered.
struct Serving {
    instance: u64,
    ledger: Arc<Ledger>,
}

pub(super) struct Driver {
    raw: RawNode<LogStore>,
    env: Env,
    config: GroupConfig,
    options: PlacementOptions,
    inbox: Inbox,
    shared: Arc<Shared>,
    stop: Arc<AtomicBool>,
    serving: Option<Serving>,
    /// When each other member was last heard from.
    heard: HashMap<u64, Instant>,
    /// Why the last attempt to load the state failed (retried every tick).
    load_error: Option<String>,
}

impl Driver {
    pub(super) fn open(
        dir: &Path,
        config: &GroupConfig,
        logger: slog::Logger,
        inbox: Inbox,
        shared: Arc<Shared>,
        stop: Arc<AtomicBool>,
    ) -> Result<Driver, GroupError> {
        std::fs::create_dir_all(dir).map_err(|e| GroupError::Storage(heed::Error::Io(e)))?;
        // SAFETY: the directory is this replica's own and is opened once per process.
        let env = unsafe { EnvOpenOptions::new().map_size(1 << 30).max_dbs(4).open(dir)? };
        let mut txn = env.write_txn()?;
        let records: Database<Bytes, Bytes> = env.create_database(&mut txn, Some("placement"))?;
        let raft_db: Database<Bytes, Bytes> = env.create_database(&mut txn, Some("placement-raft"))?;
        txn.commit()?;
        let voters: Vec<u64> = (1..=config.members.len() as u64).collect();
        let store = LogStore::open(env.clone(), raft_db, records, &voters)?;
        let txn = env.read_txn()?;
        let single = store.applied().0 == 0 && !records.is_empty(&txn)?;
        drop(txn);
        if single {
            // Records no entry wrote: a single placement's directory. Joining it to a group would
            // let the group's first leader write a new cluster over part of it.
            return Err(GroupError::Invalid(format!(
                "{} holds the state of a single placement (run without --peers); a placement group starts from empty \
                 data directories, and turning a single placement into a group is not supported",
                dir.display()
            )));
        }
        let raft_config = raft::Config {
            id: config.member_id,
            election_tick: config.election_ticks,
            heartbeat_tick: 2,
            check_quorum: true,
            pre_vote: true,
            applied: store.applied().0,
            max_size_per_msg: 1 << 20,
            max_inflight_msgs: 256,
            ..Default::default()
        };
        let mut raw = RawNode::new(&raft_config, store, &logger)?;
        if voters.len() == 1 {
            // Alone, it need not wait an election timeout to lead.
            raw.campaign()?;
        }
        Ok(Driver {
            raw,
            env,
            config: config.clone(),
            options: config.options.clone(),
            inbox,
            shared,
            stop,
            serving: None,
            heard: HashMap::new(),
            load_error: None,
        })
    }

    pub(super) fn shared(&self) -> Arc<Shared> {
        self.shared.clone()
    }

    fn ledger(&self) -> Arc<Ledger> {
        self.serving.as_ref().map(|s| s.ledger.clone()).unwrap_or_default()
    }

    pub(super) fn storage(&self) -> Storage {
        (self.env.clone(), self.raw.store().records(), self.raw.store().raft_db())
    }

    pub(super) fn run(mut self, inputs: mpsc::Receiver<Input>, mut transport: impl RaftTransport) {
        let mut next_tick = Instant::now() + self.config.tick;
        let outcome = loop {
            if self.stop.load(Ordering::SeqCst) {
                break Ok(());
            }
            match inputs.recv_timeout(next_tick.saturating_duration_since(Instant::now())) {
                Ok(input) => {
                    self.handle(input);
                    while let Ok(more) = inputs.try_recv() {
                        self.handle(more);
                    }
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break Ok(()),
            }
            let ticked = Instant::now() >= next_tick;
            if ticked {
                self.raw.tick();
                next_tick = Instant::now() + self.config.tick;
            }
            if let Err(err) = self.on_ready(&mut transport) {
                break Err(err);
            }
            self.decide(ticked);
            self.publish(None);
        };
        self.stop_serving("this placement replica is stopping");
        let reason = match outcome {
            Ok(()) => "stopped".to_string(),
            Err(err) => {
                tracing::error!(error = %err, "placement group driver stopped");
                err.to_string()
            }
        };
        self.publish(Some(reason));
    }

    fn handle(&mut self, input: Input) {
        match input {
            Input::Step(message) => {
                self.heard.insert(message.from, Instant::now());
                if let Err(err) = self.raw.step(message) {
                    tracing::debug!(error = %err, "placement raft message not stepped");
                }
            }
            Input::Propose(proposal) => self.propose(proposal),
            Input::Unreachable(to) => self.raw.report_unreachable(to),
            Input::Snapshot { to, sent } => {
                let status = if sent { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
                self.raw.report_snapshot(to, status);
            }
            Input::Transfer(0) => {
                // The most caught-up other member.
                let me = self.config.member_id;
                let best = self.raw.raft.prs().iter().filter(|(id, _)| **id != me).max_by_key(|(_, pr)| pr.matched);
                if let Some((&to, _)) = best {
                    self.raw.transfer_leader(to);
                }
            }
            Input::Transfer(to) => self.raw.transfer_leader(to),
        }
    }

    fn propose(&mut self, proposal: Proposal) {
        // A proposal of an earlier live state: its ledger failed when that state was dropped.
        if self.serving.as_ref().is_none_or(|s| s.instance != proposal.instance) {
            return;
        }
        let entry = PlacementRaftEntry {
            records: proposal.records,
            proposer: self.config.member_id,
            instance: proposal.instance,
            seq: proposal.seq,
        };
        if let Err(err) = self.raw.propose(Vec::new(), entry.encode_to_vec()) {
            // The change is in memory and will not be in the log: the state must be reloaded.
            self.stop_serving(&format!("placement could not propose the change ({err}); try again"));
        }
    }

    fn on_ready(&mut self, transport: &mut impl RaftTransport) -> Result<(), GroupError> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        let mut ready = self.raw.ready();
        self.send(transport, ready.take_messages());
        let env = self.env.clone();
        let mut txn = env.write_txn()?;
        if !ready.snapshot().is_empty() {
            self.raw.mut_store().install(&mut txn, ready.snapshot())?;
            tracing::info!(index = ready.snapshot().get_metadata().index, "placement snapshot installed");
            self.shared.status.lock().snapshots_installed += 1;
        }
        let mut answered = self.apply(&mut txn, ready.take_committed_entries())?;
        self.raw.mut_store().append(&mut txn, ready.entries())?;
        if let Some(hard_state) = ready.hs() {
            self.raw.mut_store().set_hard_state(&mut txn, hard_state)?;
        }
        txn.commit()?;
        self.answer(&mut answered);
        self.send(transport, ready.take_persisted_messages());
        let mut light = self.raw.advance(ready);
        let committed = light.take_committed_entries();
        if light.commit_index().is_some() || !committed.is_empty() {
            let mut txn = env.write_txn()?;
            if let Some(commit) = light.commit_index() {
                self.raw.mut_store().set_commit(&mut txn, commit)?;
            }
            let mut answered = self.apply(&mut txn, committed)?;
            txn.commit()?;
            self.answer(&mut answered);
        }
        self.send(transport, light.take_messages());
        self.raw.advance_apply();
        self.compact()
    }

    /// Applies committed entries in `txn`; returns the highest sequence number of the live state's
    /// own changes among them (answered once `txn` commits).
    fn apply(&mut self, txn: &mut RwTxn, entries: Vec<Entry>) -> Result<u64, GroupError> {
        let mut answered = 0;
        for entry in entries {
            if let Some(change) = self.raw.mut_store().apply(txn, &entry)? {
                let mine = change.proposer == self.config.member_id;
                if mine && self.serving.as_ref().is_some_and(|s| s.instance == change.instance) {
                    answered = answered.max(change.seq);
                }
            }
        }
        Ok(answered)
    }

    fn answer(&self, answered: &mut u64) {
        if let (Some(serving), seq @ 1..) = (&self.serving, *answered) {
            serving.ledger.done(seq);
        }
    }

    fn compact(&mut self) -> Result<(), GroupError> {
        let (applied, _) = self.raw.store().applied();
        if applied < self.raw.store().first() + self.config.compact_every {
            return Ok(());
        }
        let env = self.env.clone();
        let mut txn = env.write_txn()?;
        self.raw.mut_store().compact(&mut txn, applied)?;
        txn.commit()?;
        tracing::debug!(applied, "placement raft log compacted");
        Ok(())
    }

    fn send(&self, transport: &mut impl RaftTransport, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        for message in &messages {
            if message.get_msg_type() == MessageType::MsgSnapshot {
                tracing::info!(
                    to = message.to,
                    index = message.get_snapshot().get_metadata().index,
                    "sending a placement snapshot"
                );
            }
        }
        transport.send(messages);
    }

    /// Starts serving once this replica leads with everything in its log applied; stops when it
    /// no longer leads.
    fn decide(&mut self, ticked: bool) {
        let leading = self.raw.raft.state == StateRole::Leader;
        if !leading {
            if self.serving.is_some() {
                self.stop_serving("this placement replica is no longer the leader");
            }
            return;
        }
        let (applied, applied_term) = self.raw.store().applied();
        let caught_up = applied_term == self.raw.raft.term && applied == self.raw.raft.raft_log.last_index();
        // A failed load is retried on the next tick, not in a tight loop.
        if self.serving.is_some() || !caught_up || (self.load_error.is_some() && !ticked) {
            return;
        }
        match self.load() {
            Ok(live) => {
                tracing::info!(term = self.raw.raft.term, applied, "placement leader serving");
                self.load_error = None;
                *self.shared.live.write() = Some(live);
            }
            Err(err) => {
                if self.load_error.is_none() {
                    tracing::error!(error = %err, "placement leader cannot load its state");
                }
                self.load_error = Some(err.to_string());
            }
        }
    }

    fn load(&mut self) -> Result<Live, GroupError> {
        let instance = rand::random::<u64>();
        let ledger = Arc::new(Ledger::default());
        let inbox = self.inbox.clone();
        let propose: Propose = Box::new(move |proposal| inbox.send(Input::Propose(proposal)));
        let txn = self.env.read_txn()?;
        // Set before the state proposes what its records lack (a new cluster's first records).
        self.serving = Some(Serving { instance, ledger: ledger.clone() });
        let sink = GroupSink::new(instance, propose, ledger);
        match Placement::for_group(&txn, self.raw.store().records(), self.options.clone(), sink) {
            Ok(placement) => Ok(Live { instance, placement: Arc::new(placement), ledger: self.ledger() }),
            Err(err) => {
                self.serving = None;
                Err(err.into())
            }
        }
    }

    fn stop_serving(&mut self, reason: &str) {
        self.shared.live.write().take();
        if let Some(serving) = self.serving.take() {
            tracing::info!(reason, "placement replica stops serving");
            serving.ledger.close(Failure::Unavailable(reason.to_string()));
        }
    }

    fn publish(&self, stopped: Option<String>) {
        // Without a leader, a live member is heard from once per (randomized, up to twice the)
        // election timeout, when it asks for votes.
        let recent = self.config.election_timeout() * 5 / 2;
        let reachable = 1 + self.heard.values().filter(|at| at.elapsed() < recent).count();
        let raft = &self.raw.raft;
        let mut status = self.shared.status.lock();
        status.member_id = self.config.member_id;
        status.leader_id = raft.leader_id;
        status.term = raft.term;
        status.commit = raft.raft_log.committed;
        status.applied = self.raw.store().applied().0;
        status.serving = self.serving.is_some();
        status.reachable = reachable;
        if stopped.is_some() {
            status.stopped = stopped;
            status.serving = false;
        }
    }
}
