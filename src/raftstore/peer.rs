//! A peer: this store's member of one region's raft group. It owns the `RawNode`, the proposals
//! waiting for their entries to apply, and the reads waiting for their read index.
//!
//! The store loop drives it in three steps around the round's single LMDB commit:
//! [`Peer::take_ready`] takes raft's ready, [`Peer::prepare_write`] turns its log writes and the
//! applies due into a task for the writer thread, and [`Peer::finish_ready`] finishes the ready once
//! that task's transaction is durable.
//!
//! This file holds the peer's state, construction, ticks and status; its parts live beside it:
//! `propose` (writes, membership changes, splits, leader transfers), `read` (ReadIndex batches) and
//! `ready` (the two halves of the round, and recovery after a failed commit), `hibernate` (whether an
//! idle region may sleep, and its sleep and wake-up signals).

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use prost::Message as _;
use raft::eraftpb::{Entry, Message, MessageType};
use raft::{RawNode, Ready, SnapshotStatus};

use super::error::Error;
use super::msg::{Callback, PeerStatus, WriteResponse};
use super::peer_storage::PeerStorage;
use super::snapshot::VerifiedSnapshot;
use crate::metrics::Metrics;
use crate::proto::{admin_request, CompactLogRequest, Region};
use crate::raftstore::transport::RaftEnvelope;
use crate::storage::{Engine, StorageError};

mod deferred;
pub mod hibernate;
mod propose;
mod read;
mod ready;
#[cfg(test)]
mod tests;

/// Raft settings the store applies to every peer.
#[derive(Debug, Clone)]
pub struct PeerConfig {
    pub election_ticks: usize,
    pub heartbeat_ticks: usize,
    pub log_gc_threshold: u64,
}

/// A client write or a membership change waiting for its entry, matched by (index, term).
struct Proposal {
    index: u64,
    term: u64,
    callback: ProposalCallback,
    /// A plain write (no precondition): it may be answered once its entry is committed.
    at_commit: bool,
}

enum ProposalCallback {
    Write(Callback<WriteResponse>),
    ChangePeer(Callback<()>),
}

impl ProposalCallback {
    fn send(self, result: Result<WriteResponse, Error>) {
        match self {
            ProposalCallback::Write(callback) => drop(callback.send(result)),
            ProposalCallback::ChangePeer(callback) => drop(callback.send(result.map(drop))),
        }
    }

    fn is_closed(&self) -> bool {
        match self {
            ProposalCallback::Write(callback) => callback.is_closed(),
            ProposalCallback::ChangePeer(callback) => callback.is_closed(),
        }
    }
}

/// The reads that arrived in one round, served by one ReadIndex request.
struct ReadBatch {
    id: u64,
    callbacks: Vec<Callback<()>>,
    /// The commit index raft confirmed; the batch is released once applied reaches it.
    read_index: Option<u64>,
    /// Tick of the last `read_index` call, to re-ask if raft dropped it.
    asked_at_tick: u64,
}

/// A ready taken from raft, its log writes planned ([`Peer::take_ready`]).
pub struct TakenReady {
    number: u64,
    must_sync: bool,
    /// The ready itself while it holds a snapshot: raft reads the snapshot's state from storage once
    /// the ready is advanced, so that waits for the commit (and nothing steps raft meanwhile).
    held: Option<Ready>,
    /// The entries and hard state to write, planned on top of the appends in flight (`None` while held:
    /// they are planned on top of the snapshot).
    append: Option<crate::raftstore::peer_storage::AppendPlan>,
    persisted_messages: Vec<Message>,
}

impl TakenReady {
    /// Whether the ready holds a snapshot, log entries, or a new term or vote (raft-rs's `must_sync`).
    pub fn must_sync(&self) -> bool {
        self.must_sync
    }

    pub fn holds_snapshot(&self) -> bool {
        self.held.is_some()
    }
}

/// A ready whose writes are in flight, to finish once they are durable ([`Peer::finish_ready`]).
pub struct PendingReady {
    number: u64,
    held: Option<Ready>,
    /// Messages that promise what the writes make durable (votes, a follower's acks).
    persisted_messages: Vec<Message>,
    /// Whether the task applies entries (the peer's apply in flight).
    applies: bool,
}

/// What finishing a ready changed, for the store.
pub struct Committed {
    pub applied: usize,
    pub region_changed: bool,
    /// Regions split off this one: the store starts their peers.
    pub new_regions: Vec<Region>,
    /// A membership change removed this peer from its region: the store destroys it.
    pub removed_self: bool,
}

pub struct Peer {
    peer_id: u64,
    store_id: u64,
    /// Peers of the region met in messages. An uninitialized peer's region lists no peers yet, and a
    /// new member may write before this peer applies its addition: replies still find their way.
    peer_cache: HashMap<u64, crate::proto::Peer>,
    /// Bytes of keys and values in the region, as of the last split check plus what was written
    /// since; `None` until the first check.
    approximate_size: Option<u64>,
    approximate_keys: u64,
    /// A split check is running for this region (at most one at a time).
    split_check_in_flight: bool,
    raw: RawNode<PeerStorage>,
    cfg: PeerConfig,
    proposals: VecDeque<Proposal>,
    /// Reads that arrived since the last ReadIndex was issued.
    new_reads: Vec<Callback<()>>,
    read_batches: VecDeque<ReadBatch>,
    next_read_id: u64,
    /// Committed, durable entries raft handed out and not yet applied, in order from the applied
    /// index on; applied with the next round that commits (see [`deferred`]).
    pending_apply: Vec<Entry>,
    /// The first pending entry that may change the region (a split, a membership change).
    pending_region_change: Option<u64>,
    /// A pending entry is an admin command (see [`Peer::applies_admin`]).
    pending_admin: bool,
    /// The index the applies in flight reach: the next apply starts from it.
    apply_in_flight: Option<u64>,
    /// Indexes of the writes answered at commit and not yet applied, to check their apply.
    answered_at_commit: VecDeque<u64>,
    leader_id: u64,
    ticks: u64,
    /// Index of the last CompactLog proposal, so one is not proposed every tick while it applies.
    compact_proposed_index: u64,
    metrics: Arc<Metrics>,
    /// Messages for other stores, taken by the store loop (which owns the transport).
    outbox: Vec<RaftEnvelope>,
    /// The records of the snapshot raft accepted and has not applied yet (raft keeps at most one),
    /// as the inbox verified them: raft hands back only the snapshot's metadata in a ready.
    incoming_snapshot: Option<Box<VerifiedSnapshot>>,
}

fn raft_config(peer_id: u64, applied: u64, cfg: &PeerConfig) -> raft::Config {
    raft::Config {
        id: peer_id,
        election_tick: cfg.election_ticks,
        heartbeat_tick: cfg.heartbeat_ticks,
        applied,
        max_size_per_msg: 1024 * 1024,
        max_inflight_msgs: 256,
        check_quorum: true,
        pre_vote: true,
        ..Default::default()
    }
}

impl Peer {
    /// Creates the peer of a region this store already holds (its state is in LMDB).
    pub fn load(
        engine: Engine,
        region: Region,
        store_id: u64,
        cfg: PeerConfig,
        metrics: Arc<Metrics>,
        logger: &slog::Logger,
    ) -> Result<Peer, StorageError> {
        let peer_id = region.peers.iter().find(|p| p.store_id == store_id).map(|p| p.peer_id).ok_or_else(|| {
            StorageError::Inconsistent {
                what: format!("region {} state", region.region_id),
                detail: format!("it lists no peer on this store ({store_id})"),
            }
        })?;
        let storage = PeerStorage::load(engine, region)?;
        Self::new(peer_id, store_id, storage, cfg, metrics, logger)
    }

    /// Creates an empty, uninitialized peer of a region this store does not hold yet, because a message
    /// for it arrived (the region's leader added it). It has no range and no data until a snapshot
    /// fills it; its term and vote survive a restart so it can never vote twice in one term.
    pub fn replicate(
        engine: Engine,
        region_id: u64,
        peer: crate::proto::Peer,
        cfg: PeerConfig,
        metrics: Arc<Metrics>,
        logger: &slog::Logger,
    ) -> Result<Peer, StorageError> {
        let storage = PeerStorage::uninitialized(engine, region_id)?;
        Self::new(peer.peer_id, peer.store_id, storage, cfg, metrics, logger)
    }

    fn new(
        peer_id: u64,
        store_id: u64,
        storage: PeerStorage,
        cfg: PeerConfig,
        metrics: Arc<Metrics>,
        logger: &slog::Logger,
    ) -> Result<Peer, StorageError> {
        let raw = Self::raw_node(peer_id, storage, &cfg, logger)?;
        let mut peer = Peer {
            peer_id,
            store_id,
            peer_cache: HashMap::new(),
            approximate_size: None,
            approximate_keys: 0,
            split_check_in_flight: false,
            raw,
            cfg,
            proposals: VecDeque::new(),
            new_reads: Vec::new(),
            read_batches: VecDeque::new(),
            next_read_id: 1,
            pending_apply: Vec::new(),
            pending_region_change: None,
            apply_in_flight: None,
            pending_admin: false,
            answered_at_commit: VecDeque::new(),
            leader_id: 0,
            ticks: 0,
            compact_proposed_index: 0,
            metrics,
            outbox: Vec::new(),
            incoming_snapshot: None,
        };
        peer.campaign_if_alone();
        Ok(peer)
    }

    /// Raft refuses persisted state that passed its checksums but does not hold together (say, a
    /// commit index past the last entry): a typed error, for the store to report.
    fn raw_node(
        peer_id: u64,
        storage: PeerStorage,
        cfg: &PeerConfig,
        logger: &slog::Logger,
    ) -> Result<RawNode<PeerStorage>, StorageError> {
        let applied = storage.apply_state().applied_index;
        let region_id = storage.region().region_id;
        let logger = logger.new(slog::o!("region_id" => region_id, "peer_id" => peer_id));
        RawNode::new(&raft_config(peer_id, applied, cfg), storage, &logger).map_err(|e| StorageError::Inconsistent {
            what: format!("region {region_id} raft state"),
            detail: e.to_string(),
        })
    }

    /// A region whose only voter is this peer need not wait an election timeout for a leader.
    fn campaign_if_alone(&mut self) {
        let voters = self.raw.raft.prs().conf().voters().ids();
        if voters.len() == 1 && voters.contains(self.peer_id) {
            let _ = self.raw.campaign();
        }
    }

    /// The span of this peer's work (ready, apply), so one region's story can be filtered out of a
    /// busy log. Integer fields only: entering it allocates nothing per entry.
    pub(crate) fn span(&self) -> tracing::Span {
        tracing::info_span!("peer", store_id = self.store_id, region_id = self.region_id(), peer_id = self.peer_id)
    }

    pub fn region(&self) -> &Region {
        self.raw.store().region()
    }

    /// Starts an election now (the new region of a split whose parent this store led).
    pub fn campaign(&mut self) {
        let _ = self.raw.campaign();
    }

    pub fn approximate_size(&self) -> Option<u64> {
        self.approximate_size
    }

    pub fn approximate_keys(&self) -> u64 {
        self.approximate_keys
    }

    /// Whether the leader should measure its region now: its size is unknown, or past `max`. Marks a
    /// check as running; [`Self::on_split_check`] clears it.
    pub fn wants_split_check(&mut self, max: u64) -> bool {
        if !self.is_leader() || self.split_check_in_flight {
            return false;
        }
        if self.approximate_size.is_none_or(|size| size > max) {
            self.split_check_in_flight = true;
            return true;
        }
        false
    }

    /// A split check measured the region (at the epoch it was started for).
    pub fn on_split_check(&mut self, epoch: crate::proto::RegionEpoch, size: u64, keys: u64) {
        self.split_check_in_flight = false;
        if self.region().epoch == Some(epoch) {
            self.approximate_size = Some(size);
            self.approximate_keys = keys;
        }
    }

    /// Raft's logical clock, plus the periodic chores: re-asking dropped reads, compacting the log,
    /// and forgetting proposals whose client has given up.
    pub fn on_tick(&mut self) {
        self.ticks += 1;
        self.raw.tick();
        let election_ticks = self.cfg.election_ticks as u64;
        let ticks = self.ticks;
        let mut reask = Vec::new();
        for batch in self.read_batches.iter_mut() {
            if batch.read_index.is_none() && ticks - batch.asked_at_tick >= election_ticks {
                batch.asked_at_tick = ticks;
                reask.push(batch.id);
            }
        }
        for id in reask {
            self.ask_read_index(id);
        }
        self.proposals.retain(|p| !p.callback.is_closed());
        self.maybe_compact_log();
    }

    /// Log GC: once more than the threshold of applied entries sit in the log, the leader proposes
    /// to drop them. Applying that on every replica deletes the entries in the same transaction.
    fn maybe_compact_log(&mut self) {
        if !self.log_wants_compaction() {
            return;
        }
        let apply_state = self.raw.store().apply_state();
        let (applied, truncated) = (apply_state.applied_index, apply_state.truncated_index);
        if self.compact_proposed_index > truncated {
            return;
        }
        let Ok(compact_term) = raft::Storage::term(self.raw.store(), applied) else {
            return;
        };
        let compact = CompactLogRequest { compact_index: applied, compact_term };
        let cmd = self.command(Vec::new(), Some(admin_request::Cmd::CompactLog(compact)));
        if self.propose(cmd.encode_to_vec()).is_ok() {
            self.compact_proposed_index = applied;
        }
    }

    /// Whether this leader's log holds more applied entries than the threshold: it compacts on its
    /// next tick (and does not hibernate before, or it would never compact).
    pub(super) fn log_wants_compaction(&self) -> bool {
        let apply_state = self.raw.store().apply_state();
        self.is_leader() && apply_state.applied_index - apply_state.truncated_index > self.cfg.log_gc_threshold
    }

    pub fn status(&self) -> PeerStatus {
        let raft = &self.raw.raft;
        let apply_state = self.raw.store().apply_state();
        PeerStatus {
            region: self.region().clone(),
            peer_id: self.peer_id,
            role: format!("{:?}", raft.state).to_lowercase(),
            leader_peer_id: self.leader_id,
            leader_store_id: self.leader_store_id(),
            term: raft.term,
            commit_index: raft.raft_log.committed,
            applied_index: apply_state.applied_index,
            truncated_index: apply_state.truncated_index,
            last_index: raft.raft_log.last_index(),
            pending_proposals: self.proposals.len(),
            approximate_size: self.approximate_size,
            approximate_keys: self.approximate_keys,
            pending_peers: self.pending_peers(),
            initialized: self.is_initialized(),
        }
    }

    // ---- raft messages ----

    /// A message from another peer of this region; a snapshot comes with its verified records.
    pub fn on_raft_message(&mut self, envelope: RaftEnvelope, snapshot: Option<Box<VerifiedSnapshot>>) {
        // Only peers the region does not list yet are worth remembering (on every message: keep it cheap).
        if !self.region().peers.contains(&envelope.from_peer) {
            self.peer_cache.insert(envelope.from_peer.peer_id, envelope.from_peer);
        }
        let msg_type = envelope.message.get_msg_type();
        if let Err(err) = self.raw.step(envelope.message) {
            tracing::debug!(region_id = self.region_id(), ?msg_type, error = %err, "raft refused a message");
        }
        // Kept only if raft took it as its pending snapshot (it ignores one it is already past).
        if let Some(snapshot) = snapshot {
            if self.raw.raft.raft_log.unstable.snapshot.as_ref().is_some_and(|pending| snapshot.is_of(pending)) {
                self.incoming_snapshot = Some(snapshot);
            }
        }
    }

    /// The transport could not send to `to_peer_id`: raft stops pipelining to it (and a snapshot to it
    /// counts as failed, so raft will offer another).
    pub fn on_send_failure(&mut self, to_peer_id: u64, msg_type: MessageType) {
        if msg_type == MessageType::MsgSnapshot {
            self.raw.report_snapshot(to_peer_id, SnapshotStatus::Failure);
        }
        self.raw.report_unreachable(to_peer_id);
    }

    pub fn on_snapshot_status(&mut self, to_peer_id: u64, status: SnapshotStatus) {
        self.raw.report_snapshot(to_peer_id, status);
    }

    /// Wraps raft's messages for the transport, addressed with the stores of their peers.
    fn queue_messages(&mut self, messages: Vec<Message>) {
        let region = self.raw.store().region();
        for message in messages {
            let member = region.peers.iter().find(|p| p.peer_id == message.to);
            let Some(to_peer) = member.or_else(|| self.peer_cache.get(&message.to)).copied() else {
                tracing::debug!(
                    region_id = region.region_id,
                    to = message.to,
                    "dropping a message to a peer not in the region"
                );
                continue;
            };
            let from_peer = crate::proto::Peer { peer_id: self.peer_id, store_id: self.store_id };
            self.outbox.push(RaftEnvelope::new(
                region.region_id,
                from_peer,
                to_peer,
                region.epoch.unwrap_or_default(),
                message,
            ));
        }
    }

    pub fn take_outbox(&mut self) -> Vec<RaftEnvelope> {
        std::mem::take(&mut self.outbox)
    }

    pub fn peer_id(&self) -> u64 {
        self.peer_id
    }

    /// Whether this peer holds its region's data (one created by a message waits for a snapshot).
    pub fn is_initialized(&self) -> bool {
        self.raw.store().is_initialized()
    }

    /// The peers a leader sees still catching up: ones that need a snapshot or are receiving one.
    fn pending_peers(&self) -> Vec<crate::proto::Peer> {
        if !self.is_leader() {
            return Vec::new();
        }
        let truncated = self.raw.store().apply_state().truncated_index;
        let progress = self.raw.raft.prs();
        self.region()
            .peers
            .iter()
            .filter(|p| p.peer_id != self.peer_id)
            .filter(|p| {
                progress
                    .get(p.peer_id)
                    .is_none_or(|pr| pr.state == raft::ProgressState::Snapshot || pr.matched < truncated)
            })
            .copied()
            .collect()
    }

    /// Fails everything waiting on this peer: it is being destroyed. Its proposals may still commit
    /// under the region's other peers, so their outcome is unknown (never "retry": that could apply a
    /// write twice); reads are safe to retry elsewhere.
    pub fn fail_all(&mut self) {
        let region_id = self.region_id();
        for proposal in std::mem::take(&mut self.proposals) {
            proposal.callback.send(Err(Error::OutcomeUnknown { region_id }));
        }
        self.fail_reads(&Error::RegionNotFound { region_id });
    }
}
