//! A peer: this store's member of one region's raft group. It owns the `RawNode`, the proposals
//! waiting for their entries to apply, and the reads waiting for their read index.
//!
//! The store loop drives it in two halves around the round's single LMDB commit:
//! [`Peer::collect_ready`] adds its log writes and applied data to the shared transaction, and
//! [`Peer::post_commit`] finishes the ready once that transaction is durable.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

use heed::RwTxn;
use prost::Message as _;
use raft::eraftpb::{Entry, EntryType, Message, MessageType};
use raft::{RawNode, ReadState, Ready, SnapshotStatus, StateRole};

use super::apply::{self, Applied, ApplyEffects, LocalStore};
use super::msg::Callback;
use super::peer_storage::PeerStorage;
use super::{Error, PeerStatus, WriteResponse};
use crate::metrics::Metrics;
use crate::proto::{
    admin_request, AdminRequest, ChangePeerRequest, CmdHeader, CompactLogRequest, ConfChangeType, RaftApplyState,
    RaftCmdRequest, RaftLocalState, Region, Request,
};
use crate::storage::{Engine, StorageError};
use crate::transport::RaftEnvelope;

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

/// What a peer put into the round's transaction, to finish after the commit.
pub struct PendingReady {
    ready: Ready,
    raft_state: RaftLocalState,
    apply_state: RaftApplyState,
    applied: Vec<Applied>,
    /// Client commands made durable by this commit (for the group-commit metric).
    pub proposals_persisted: usize,
    pub entries_persisted: usize,
    /// Whether this ready put anything into the transaction (a read-only round commits nothing).
    pub wrote: bool,
    /// The region as a snapshot or a split in this ready changed it.
    region: Option<Region>,
    /// Regions split off, to be started by the store after the commit.
    new_regions: Vec<Region>,
    /// Membership changes applied, for raft to learn after the commit.
    conf_changes: Vec<raft::eraftpb::ConfChange>,
    bytes_written: u64,
    snapshot_applied: bool,
    removed_self: bool,
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
    /// Committed, durable entries raft handed out after the last commit; applied next round.
    pending_apply: Vec<Entry>,
    leader_id: u64,
    ticks: u64,
    /// Index of the last CompactLog proposal, so one is not proposed every tick while it applies.
    compact_proposed_index: u64,
    metrics: Arc<Metrics>,
    /// Messages for other stores, taken by the store loop (which owns the transport).
    outbox: Vec<RaftEnvelope>,
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
        let peer_id = region
            .peers
            .iter()
            .find(|p| p.store_id == store_id)
            .map(|p| p.peer_id)
            .unwrap_or_else(|| panic!("region {} has no peer on store {store_id}", region.region_id));
        let storage = PeerStorage::load(engine, region)?;
        Ok(Self::new(peer_id, store_id, storage, cfg, metrics, logger))
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
        Ok(Self::new(peer.peer_id, peer.store_id, storage, cfg, metrics, logger))
    }

    fn new(
        peer_id: u64,
        store_id: u64,
        storage: PeerStorage,
        cfg: PeerConfig,
        metrics: Arc<Metrics>,
        logger: &slog::Logger,
    ) -> Peer {
        let raw = Self::raw_node(peer_id, storage, &cfg, logger);
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
            leader_id: 0,
            ticks: 0,
            compact_proposed_index: 0,
            metrics,
            outbox: Vec::new(),
        };
        peer.campaign_if_alone();
        peer
    }

    fn raw_node(peer_id: u64, storage: PeerStorage, cfg: &PeerConfig, logger: &slog::Logger) -> RawNode<PeerStorage> {
        let applied = storage.apply_state().applied_index;
        let region_id = storage.region().region_id;
        let logger = logger.new(slog::o!("region_id" => region_id, "peer_id" => peer_id));
        RawNode::new(&raft_config(peer_id, applied, cfg), storage, &logger)
            .unwrap_or_else(|e| panic!("region {region_id}: persisted raft state is inconsistent: {e}"))
    }

    /// A region whose only voter is this peer need not wait an election timeout for a leader.
    fn campaign_if_alone(&mut self) {
        let voters = self.raw.raft.prs().conf().voters().ids();
        if voters.len() == 1 && voters.contains(self.peer_id) {
            let _ = self.raw.campaign();
        }
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

    /// Starts handing leadership to the peer on `to_store_id`: raft catches it up, then tells it to
    /// campaign at once. Only the leader can; a transfer to itself is a no-op.
    pub fn transfer_leader(&mut self, to_store_id: u64) -> Result<(), Error> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let region = self.region();
        let Some(target) = region.peers.iter().find(|p| p.store_id == to_store_id) else {
            return Err(Error::RegionNotFound { region_id: region.region_id });
        };
        if target.peer_id != self.peer_id {
            tracing::info!(
                region_id = region.region_id,
                to_peer_id = target.peer_id,
                to_store_id,
                "transferring leadership"
            );
            let to_peer_id = target.peer_id;
            self.raw.transfer_leader(to_peer_id);
        }
        Ok(())
    }

    /// Proposes adding or removing one peer; answered once the change is applied. A change already
    /// made is answered at once. Refused (retryable) while another change is in flight; refused for
    /// good when it cannot be made safely.
    pub fn on_change_peer(&mut self, change: ChangePeerRequest, callback: Callback<()>) {
        match self.check_change_peer(&change) {
            Ok(true) => {}
            Ok(false) => {
                let _ = callback.send(Ok(()));
                return;
            }
            Err(err) => {
                let _ = callback.send(Err(err));
                return;
            }
        }
        let peer = change.peer.expect("checked");
        let (region_id, epoch) = (self.region_id(), self.region().epoch);
        let cmd = RaftCmdRequest {
            header: Some(CmdHeader { region_id, peer_id: self.peer_id, epoch }),
            requests: Vec::new(),
            admin: Some(AdminRequest { cmd: Some(admin_request::Cmd::ChangePeer(change)) }),
        };
        let mut cc = raft::eraftpb::ConfChange {
            node_id: peer.peer_id,
            context: cmd.encode_to_vec().into(),
            ..Default::default()
        };
        cc.set_change_type(if change.change_type == ConfChangeType::AddNode as i32 {
            raft::eraftpb::ConfChangeType::AddNode
        } else {
            raft::eraftpb::ConfChangeType::RemoveNode
        });
        let last_before = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose_conf_change(Vec::new(), cc);
        match self.appended(last_before, proposed, EntryType::EntryConfChange) {
            Ok((index, term)) => {
                tracing::info!(region_id, ?change, index, "proposed a membership change");
                self.proposals.push_back(Proposal { index, term, callback: ProposalCallback::ChangePeer(callback) });
            }
            Err(err) => {
                let _ = callback.send(Err(err));
            }
        }
    }

    /// Whether `change` must be proposed (`Ok(false)`: it is already in effect).
    fn check_change_peer(&self, change: &ChangePeerRequest) -> Result<bool, Error> {
        let invalid = |reason: String| Err(Error::InvalidChange { reason });
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let Some(peer) = change.peer else {
            return invalid("no peer given".into());
        };
        if peer.peer_id == 0 || peer.store_id == 0 {
            return invalid("the peer needs a peer id and a store id".into());
        }
        let region = self.region();
        let on_store = region.peers.iter().find(|p| p.store_id == peer.store_id);
        let with_id = region.peers.iter().find(|p| p.peer_id == peer.peer_id);
        let adding = match ConfChangeType::try_from(change.change_type) {
            Ok(ConfChangeType::AddNode) => true,
            Ok(ConfChangeType::RemoveNode) => false,
            Err(_) => return invalid(format!("unknown change type {}", change.change_type)),
        };
        if adding {
            match (on_store, with_id) {
                (Some(p), _) if *p == peer => return Ok(false),
                (Some(p), _) => {
                    return invalid(format!("store {} already holds peer {} of the region", p.store_id, p.peer_id))
                }
                (None, Some(p)) => return invalid(format!("peer id {} is taken by store {}", p.peer_id, p.store_id)),
                (None, None) => {}
            }
        } else {
            match with_id {
                None => return Ok(false),
                Some(p) if p.store_id != peer.store_id => {
                    return invalid(format!("peer {} is on store {}, not {}", p.peer_id, p.store_id, peer.store_id))
                }
                Some(_) if region.peers.len() == 1 => return invalid("cannot remove the region's last peer".into()),
                // The leader leaving a 2-peer group could leave the other peer unable to learn that the
                // change committed, and unable to win an election without the leader's vote.
                Some(_) if peer.peer_id == self.peer_id && region.peers.len() == 2 => {
                    return invalid(
                        "the leader of a 2-peer region cannot remove itself; transfer leadership first".into(),
                    )
                }
                Some(_) => {}
            }
        }
        if self.raw.raft.has_pending_conf() {
            return Err(Error::ProposalDropped { reason: "another membership change is in progress" });
        }
        Ok(true)
    }

    /// Proposes splitting this region at `split_key` into itself and a new region with the given ids.
    /// Refused unless this peer leads the region, the epoch is the one the split was decided for, and
    /// the key lies strictly inside the range.
    pub fn propose_split(
        &mut self,
        epoch: crate::proto::RegionEpoch,
        split_key: Vec<u8>,
        new_region_id: u64,
        new_peer_ids: Vec<u64>,
    ) -> Result<(), Error> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let region = self.region();
        if region.epoch != Some(epoch) {
            return Err(Error::EpochNotMatch { current_regions: vec![region.clone()] });
        }
        let inside = split_key.as_slice() > region.start_key.as_slice()
            && (region.end_key.is_empty() || split_key.as_slice() < region.end_key.as_slice());
        if !inside || new_peer_ids.len() != region.peers.len() {
            return Err(Error::KeyNotInRegion { key: split_key, region_id: region.region_id });
        }
        let cmd = RaftCmdRequest {
            header: Some(CmdHeader { region_id: region.region_id, peer_id: self.peer_id, epoch: Some(epoch) }),
            requests: Vec::new(),
            admin: Some(AdminRequest {
                cmd: Some(admin_request::Cmd::Split(crate::proto::SplitRequest {
                    split_key,
                    new_region_id,
                    new_peer_ids,
                })),
            }),
        };
        self.propose(cmd.encode_to_vec()).map(drop)
    }

    pub fn region_id(&self) -> u64 {
        self.region().region_id
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    fn leader_store_id(&self) -> Option<u64> {
        self.region().peers.iter().find(|p| p.peer_id == self.leader_id).map(|p| p.store_id)
    }

    /// `NotLeader`, with the leader this peer knows of (for the client to go to).
    pub(crate) fn not_leader(&self) -> Error {
        Error::NotLeader { region_id: self.region_id(), leader_store_id: self.leader_store_id() }
    }

    // ---- events ----

    /// A client write: checked, then proposed as one entry. Answered after apply.
    pub fn on_write(&mut self, requests: Vec<Request>, callback: Callback<WriteResponse>) {
        if let Err(err) = self.check_write(&requests) {
            let _ = callback.send(Err(err));
            return;
        }
        let region = self.region();
        let cmd = RaftCmdRequest {
            header: Some(CmdHeader { region_id: region.region_id, peer_id: self.peer_id, epoch: region.epoch }),
            requests,
            admin: None,
        };
        match self.propose(cmd.encode_to_vec()) {
            Ok((index, term)) => {
                self.proposals.push_back(Proposal { index, term, callback: ProposalCallback::Write(callback) })
            }
            Err(err) => {
                let _ = callback.send(Err(err));
            }
        }
    }

    fn check_write(&self, requests: &[Request]) -> Result<(), Error> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let region = self.region();
        for req in requests {
            let key = match &req.cmd {
                Some(crate::proto::request::Cmd::Put(put)) => &put.key,
                Some(crate::proto::request::Cmd::Delete(delete)) => &delete.key,
                None => continue,
            };
            if !super::region_map::region_contains(region, key) {
                return Err(Error::KeyNotInRegion { key: key.clone(), region_id: region.region_id });
            }
        }
        Ok(())
    }

    /// Proposes `data` and returns the (index, term) its entry got. raft-rs reports some drops as
    /// `Ok`, so the log's growth is what proves the entry exists.
    fn propose(&mut self, data: Vec<u8>) -> Result<(u64, u64), Error> {
        let last_before = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose(Vec::new(), data);
        self.appended(last_before, proposed, EntryType::EntryNormal)
    }

    /// The (index, term) of the entry a proposal just appended, or why there is none. raft-rs reports
    /// some drops as `Ok`, and turns a conf change it will not take into an empty normal entry: only a
    /// new last entry of the `expected` type proves the proposal is in the log.
    fn appended(&self, last_before: u64, proposed: raft::Result<()>, expected: EntryType) -> Result<(u64, u64), Error> {
        match proposed {
            Err(raft::Error::ProposalDropped) => {
                return Err(Error::ProposalDropped { reason: "leadership is being transferred" })
            }
            Err(err) => {
                tracing::warn!(region_id = self.region_id(), error = %err, "proposal failed");
                return Err(Error::ProposalDropped { reason: "raft refused the proposal" });
            }
            Ok(()) => {}
        }
        let index = self.raw.raft.raft_log.last_index();
        // A new entry is not persisted yet, so it is still in raft's unstable part.
        let last = self.raw.raft.raft_log.unstable.entries.last();
        if index == last_before || last.is_none_or(|e| e.index != index || e.get_entry_type() != expected) {
            return Err(Error::ProposalDropped { reason: "raft did not append the entry" });
        }
        Ok((index, self.raw.raft.term))
    }

    /// A linearizable-read barrier; batched with the other reads of this round.
    pub fn on_read_index(&mut self, callback: Callback<()>) {
        if !self.is_leader() {
            let _ = callback.send(Err(self.not_leader()));
            return;
        }
        self.new_reads.push(callback);
    }

    /// Issues one ReadIndex for the reads that arrived this round. raft-rs silently drops a ReadIndex
    /// until the leader has committed an entry of its own term, so the batch waits for that here.
    pub fn issue_reads(&mut self) {
        if self.new_reads.is_empty() || !self.is_leader() || !self.raw.raft.commit_to_current_term() {
            return;
        }
        let id = self.next_read_id;
        self.next_read_id += 1;
        self.raw.read_index(id.to_be_bytes().to_vec());
        let callbacks = std::mem::take(&mut self.new_reads);
        self.read_batches.push_back(ReadBatch { id, callbacks, read_index: None, asked_at_tick: self.ticks });
    }

    fn on_read_state(&mut self, state: ReadState) {
        let Ok(id) = <[u8; 8]>::try_from(state.request_ctx.as_slice()).map(u64::from_be_bytes) else {
            return;
        };
        if let Some(batch) = self.read_batches.iter_mut().find(|b| b.id == id) {
            batch.read_index = Some(state.index);
        }
    }

    /// Answers the reads whose read index has been applied.
    fn release_reads(&mut self) {
        let applied = self.raw.store().apply_state().applied_index;
        self.read_batches.retain_mut(|batch| match batch.read_index {
            Some(index) if index <= applied => {
                for callback in batch.callbacks.drain(..) {
                    let _ = callback.send(Ok(()));
                }
                false
            }
            _ => true,
        });
    }

    fn fail_reads(&mut self, err: &Error) {
        for callback in self.new_reads.drain(..).chain(self.read_batches.drain(..).flat_map(|b| b.callbacks)) {
            let _ = callback.send(Err(err.clone()));
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
            self.raw.read_index(id.to_be_bytes().to_vec());
        }
        self.proposals.retain(|p| !p.callback.is_closed());
        self.maybe_compact_log();
    }

    /// Log GC: once more than the threshold of applied entries sit in the log, the leader proposes
    /// to drop them. Applying that on every replica deletes the entries in the same transaction.
    fn maybe_compact_log(&mut self) {
        if !self.is_leader() {
            return;
        }
        let apply_state = self.raw.store().apply_state();
        let (applied, truncated) = (apply_state.applied_index, apply_state.truncated_index);
        if applied - truncated <= self.cfg.log_gc_threshold || self.compact_proposed_index > truncated {
            return;
        }
        let Ok(compact_term) = raft::Storage::term(self.raw.store(), applied) else {
            return;
        };
        let cmd = RaftCmdRequest {
            header: Some(CmdHeader { region_id: self.region_id(), peer_id: self.peer_id, epoch: self.region().epoch }),
            requests: Vec::new(),
            admin: Some(AdminRequest {
                cmd: Some(admin_request::Cmd::CompactLog(CompactLogRequest { compact_index: applied, compact_term })),
            }),
        };
        if self.propose(cmd.encode_to_vec()).is_ok() {
            self.compact_proposed_index = applied;
        }
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

    /// A message from another peer of this region.
    pub fn on_raft_message(&mut self, envelope: RaftEnvelope) {
        // Only peers the region does not list yet are worth remembering (on every message: keep it cheap).
        if !self.region().peers.contains(&envelope.from_peer) {
            self.peer_cache.insert(envelope.from_peer.peer_id, envelope.from_peer);
        }
        let msg_type = envelope.message.get_msg_type();
        if let Err(err) = self.raw.step(envelope.message) {
            tracing::debug!(region_id = self.region_id(), ?msg_type, error = %err, "raft refused a message");
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
            self.outbox.push(RaftEnvelope {
                region_id: region.region_id,
                from_peer,
                to_peer,
                region_epoch: region.epoch.unwrap_or_default(),
                message,
                is_tombstone: false,
            });
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

    // ---- the ready, around the round's commit ----

    /// Whether this peer has anything for the round's transaction.
    pub fn has_ready(&self) -> bool {
        self.raw.has_ready() || !self.pending_apply.is_empty()
    }

    /// First half of ready handling, before the commit. Order (an invariant, see DESIGN.md §3):
    /// queue the leader's messages → snapshot → entries + hard state → apply committed entries, all
    /// into the round's one transaction. The store sends the queued messages before it commits.
    pub fn collect_ready(&mut self, txn: &mut RwTxn<'_>, local: &LocalStore<'_>) -> Result<PendingReady, StorageError> {
        let mut ready = self.raw.ready();
        if let Some(ss) = ready.ss() {
            self.on_soft_state(ss.leader_id, ss.raft_state);
        }
        // 1. A leader's messages may go out before its own log is durable (raft thesis §10.2.1).
        self.queue_messages(ready.take_messages());
        for state in ready.take_read_states() {
            self.on_read_state(state);
        }
        let storage = self.raw.store();
        let engine = storage.engine();
        // 2. A snapshot replaces the data, the log and the states before anything else is written.
        let (base_raft_state, mut apply_state, region) = if ready.snapshot().is_empty() {
            (*storage.raft_state(), *storage.apply_state(), None)
        } else {
            let (raft_state, apply_state, region) = storage.apply_snapshot(txn, ready.snapshot())?;
            tracing::info!(region_id = region.region_id, index = apply_state.applied_index, "applying a snapshot");
            (raft_state, apply_state, Some(region))
        };
        let snapshot_applied = region.is_some();
        let mut region_now = region.unwrap_or_else(|| storage.region().clone());
        // 3. Entries and hard state, in the same transaction.
        let raft_state = storage.append(txn, base_raft_state, ready.entries(), ready.hs())?;
        // 4. Apply what is committed: first what was handed out after the last commit, then this
        //    ready's committed entries (both already durable in the log).
        let before_apply = apply_state;
        let mut effects = ApplyEffects::default();
        let committed = ready.take_committed_entries();
        for entries in [std::mem::take(&mut self.pending_apply).as_slice(), committed.as_slice()] {
            apply::apply_entries(engine, txn, local, &mut region_now, &mut apply_state, entries, &mut effects)?;
        }
        // 5. A leader that is the region's only voter commits an entry the moment it is durable, and
        //    it becomes durable in this very transaction; applying it here too saves a second commit
        //    (and a second fsync) per write. If the transaction fails, neither happens.
        if self.is_sole_voter_leader() {
            let early = self.early_appliable(ready.entries(), apply_state.applied_index);
            apply::apply_entries(engine, txn, local, &mut region_now, &mut apply_state, early, &mut effects)?;
        }
        if apply_state != before_apply {
            engine.put_apply_state(txn, region_now.region_id, &apply_state)?;
        }
        if effects.log_compacted {
            self.metrics.raft_log_compactions.inc();
        }
        // raft-rs restarts only if the durable commit index covers what is applied. A commit learnt
        // after the last write (a light ready's, or a sole voter's append) is recorded here, in the
        // transaction that applies it.
        let mut raft_state = raft_state;
        let mut wrote =
            snapshot_applied || !ready.entries().is_empty() || ready.hs().is_some() || apply_state != before_apply;
        if raft_state.commit < apply_state.applied_index {
            wrote = true;
            raft_state.commit = apply_state.applied_index;
            engine.put_raft_state(txn, region_now.region_id, &raft_state)?;
        }
        let proposals_persisted = ready.entries().iter().filter(|e| !e.data.is_empty()).count();
        let entries_persisted = ready.entries().len();
        let region_changed = snapshot_applied || region_now != *storage.region();
        Ok(PendingReady {
            ready,
            raft_state,
            apply_state,
            applied: std::mem::take(&mut effects.applied),
            proposals_persisted,
            entries_persisted,
            wrote,
            region: region_changed.then_some(region_now),
            new_regions: effects.new_regions,
            conf_changes: effects.conf_changes,
            bytes_written: effects.bytes_written,
            snapshot_applied,
            removed_self: effects.removed_self,
        })
    }

    fn is_sole_voter_leader(&self) -> bool {
        let voters = self.raw.raft.prs().conf().voters().ids();
        self.is_leader() && voters.len() == 1 && voters.contains(self.peer_id)
    }

    /// The prefix of `entries` that can be applied along with being persisted: contiguous with what is
    /// applied, of the leader's current term, and plain commands (a conf change must go through raft's
    /// own commit path, as it changes who counts for the quorum).
    fn early_appliable<'e>(&self, entries: &'e [Entry], applied: u64) -> &'e [Entry] {
        let term = self.raw.raft.term;
        let Some(first) = entries.first() else {
            return &[];
        };
        if first.index != applied + 1 {
            return &[];
        }
        let len = entries.iter().take_while(|e| e.term == term && e.get_entry_type() == EntryType::EntryNormal).count();
        &entries[..len]
    }

    /// Second half, after the round's transaction is durable: install the new state, queue the
    /// messages that had to wait for it, advance raft, answer the applied proposals and the reads.
    pub fn post_commit(&mut self, pending: PendingReady) -> Committed {
        let PendingReady { mut ready, raft_state, apply_state, applied, region, new_regions, conf_changes, .. } =
            pending;
        let applied_index = apply_state.applied_index;
        let region_changed = region.is_some();
        if pending.snapshot_applied || !new_regions.is_empty() {
            // A new range: its size is unknown until the next check.
            self.approximate_size = None;
        } else if let Some(size) = &mut self.approximate_size {
            *size += pending.bytes_written;
        }
        if let Some(region) = region {
            self.raw.mut_store().set_region(region);
        }
        self.raw.mut_store().set_persisted(raft_state, apply_state);
        // Votes and a follower's acks promise durability: only now may they leave.
        self.queue_messages(ready.take_persisted_messages());
        let mut light = self.raw.advance_append(ready);
        self.queue_messages(light.take_messages());
        // Entries this advance committed are durable; they are applied in the next round's transaction
        // unless they already were (a sole voter applies them with the append).
        self.pending_apply.extend(light.take_committed_entries().into_iter().filter(|e| e.index > applied_index));
        self.raw.advance_apply_to(applied_index);
        // Raft counts the new membership from here on (the region's state already has it). After
        // the advances: a leader that removed itself is no longer in its own progress table.
        for cc in &conf_changes {
            if let Err(err) = self.raw.apply_conf_change(cc) {
                tracing::error!(region_id = self.region_id(), error = %err, "raft refused an applied membership change");
            }
        }
        let answered = applied.len();
        for outcome in applied {
            self.answer(outcome);
        }
        self.release_reads();
        Committed { applied: answered, region_changed, new_regions, removed_self: pending.removed_self }
    }

    /// Matches an applied entry to the proposal waiting on its index. Proposals at lower indexes lost
    /// their slot (a new leader overwrote it), as does one whose term differs.
    fn answer(&mut self, applied: Applied) {
        while let Some(front) = self.proposals.front() {
            if front.index > applied.index {
                break;
            }
            let proposal = self.proposals.pop_front().expect("front exists");
            let result = match (&applied.result, proposal.index == applied.index && proposal.term == applied.term) {
                (Some(result), true) => result.clone(),
                _ => Err(Error::StaleCommand),
            };
            proposal.callback.send(result);
        }
    }

    fn on_soft_state(&mut self, leader_id: u64, role: StateRole) {
        if leader_id != self.leader_id {
            self.leader_id = leader_id;
            self.metrics.raft_leader_changes.inc();
            tracing::info!(region_id = self.region_id(), peer_id = self.peer_id, leader_id, role = ?role, term = self.raw.raft.term, "leader changed");
        }
        if role != StateRole::Leader {
            let err = self.not_leader();
            self.fail_reads(&err);
        }
    }

    /// The round's transaction failed (the map is full, or LMDB failed): nothing of it is durable, so
    /// this peer's raft state in memory is ahead of the disk. Rebuild it from the disk, as a restart
    /// would, and fail the requests whose entries were lost.
    pub fn recover_after_failed_write(&mut self, error: &Error, logger: &slog::Logger) {
        let region = self.region().clone();
        let engine = self.raw.store().engine().clone();
        let storage = if self.is_initialized() {
            PeerStorage::load(engine, region)
        } else {
            PeerStorage::uninitialized(engine, region.region_id)
        };
        let storage = storage.unwrap_or_else(|e| {
            panic!("region {}: cannot reload raft state after a failed write: {e}", self.region_id())
        });
        let durable_last_index = storage.raft_state().last_index;
        self.raw = Self::raw_node(self.peer_id, storage, &self.cfg, logger);
        self.pending_apply.clear();
        let lost: Vec<_> = std::mem::take(&mut self.proposals).into_iter().collect();
        for proposal in lost {
            // Durable entries will still apply after the new election; only lost ones fail here.
            if proposal.index > durable_last_index {
                proposal.callback.send(Err(error.clone()));
            } else {
                self.proposals.push_back(proposal);
            }
        }
        self.fail_reads(error);
        self.leader_id = 0;
        self.campaign_if_alone();
    }
}
