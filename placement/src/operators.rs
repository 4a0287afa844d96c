//! Operators: what placement wants done to one region, as a list of steps its leader carries out in
//! order (tinykv 3C / PD's operator controller, smaller).
//!
//! - At most one operator runs per region. Each has a [`Priority`]: one of a higher priority replaces
//!   a running one of a lower priority (the old one ends `replaced`): a repair replaces a balancer's
//!   operator, an administrator's replaces any (even an earlier administrator's); otherwise the new
//!   decision waits for the region to be free.
//! - A step is done when the leader's heartbeat shows it: a new peer present *and caught up* (not in
//!   the leader's pending peers, so an old peer is never removed before its replacement holds the
//!   data), the leader on the chosen store, a removed peer gone, a split's epoch version grown.
//! - Until then, every heartbeat reply to the region's leader carries the current step (a split only
//!   once: sending it again after it happened would split the left half). The node may refuse a step
//!   (another change in flight, a transfer under way): it gets it again with the next heartbeat.
//! - An operator ends `cancelled` when the region moved on in a way it did not cause (a membership
//!   change it did not make, or another split while its own split is pending) or a step became
//!   impossible: a peer to add on a store that is down, offline or removed; a leadership to hand to
//!   such a store, to one that stopped heartbeating, or to a peer still catching up (raft can only
//!   hand leadership to a caught-up peer, and refuses writes while it tries). PD cancels such
//!   operators the same way; without it a region waits for the operator timeout (minutes) before
//!   anything else, its repair included, may touch it. A split does not cancel a membership
//!   operator: the region keeps its id and its peers, so its steps still apply (the split-off region
//!   gets operators of its own if it needs them). The operator ends `timeout` when a step makes no
//!   progress for the operator timeout. Finished operators are kept in a bounded history.
//!
//! Nothing here does I/O or reads a clock: callers pass the time, so tests drive it.

use std::collections::{BTreeMap, VecDeque};
use std::time::Duration;

use crate::proto::{
    operator, AddPeerOperator, Operator, OperatorInfo, OperatorState, OperatorStep, Peer, Region, RegionEpoch,
    RemovePeerOperator, SplitOperator, StepKind, TransferLeaderOperator,
};

/// Finished operators kept for `fekv ctl operator list`.
pub const HISTORY_LEN: usize = 100;

/// How much an operator matters (PD's priority levels, fewer): a decision of a higher priority
/// replaces a running operator of a lower one for the same region.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Priority {
    /// Balancing, and trimming a replica too many: worth doing, never urgent.
    Low,
    /// Repairing a region: a peer on a down or offline store, fewer peers than it should have.
    High,
    /// An administrator's request: deliberate and watched (`--wait` reports its outcome), and it ends
    /// by itself like any operator (done, cancelled, or timed out). It replaces any operator, an
    /// earlier administrator's too; nothing replaces it. PD ranks them the same way.
    Admin,
}

/// A store as a running operator's steps need it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StoreHealth {
    Up,
    /// Up, but silent for several heartbeats: no leadership is handed to it.
    Silent,
    Down,
    /// Being drained: no new peer and no leadership.
    Offline,
    Removed,
    /// Not registered at all.
    Unknown,
}

impl StoreHealth {
    fn as_str(self) -> &'static str {
        match self {
            StoreHealth::Up => "up",
            StoreHealth::Silent => "not heartbeating",
            StoreHealth::Down => "down",
            StoreHealth::Offline => "offline",
            StoreHealth::Removed => "removed",
            StoreHealth::Unknown => "not registered",
        }
    }
}

/// One step of an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpStep {
    /// Add `peer_id` (allocated by placement when the operator was made) on `store_id`.
    AddPeer { store_id: u64, peer_id: u64 },
    /// Make the region's peer on this store its leader.
    TransferLeader { to_store_id: u64 },
    /// Remove the region's peer on this store.
    RemovePeer { store_id: u64 },
    /// Split the region at `split_key` (empty: in the middle).
    Split { split_key: Vec<u8> },
}

impl OpStep {
    fn is_conf_change(&self) -> bool {
        matches!(self, OpStep::AddPeer { .. } | OpStep::RemovePeer { .. })
    }

    fn to_proto(&self) -> OperatorStep {
        match self {
            OpStep::AddPeer { store_id, peer_id } => OperatorStep {
                kind: StepKind::AddPeer as i32,
                store_id: *store_id,
                peer_id: *peer_id,
                ..Default::default()
            },
            OpStep::TransferLeader { to_store_id } => {
                OperatorStep { kind: StepKind::TransferLeader as i32, store_id: *to_store_id, ..Default::default() }
            }
            OpStep::RemovePeer { store_id } => {
                OperatorStep { kind: StepKind::RemovePeer as i32, store_id: *store_id, ..Default::default() }
            }
            OpStep::Split { split_key } => {
                OperatorStep { kind: StepKind::Split as i32, split_key: split_key.clone(), ..Default::default() }
            }
        }
    }
}

/// A region as its leader last reported it: what steps are judged against.
#[derive(Debug, Clone, Copy)]
pub struct RegionState<'a> {
    pub region: &'a Region,
    pub leader_store_id: u64,
    /// Peers the leader sees still catching up.
    pub pending_peers: &'a [Peer],
}

impl RegionState<'_> {
    fn peer_on(&self, store_id: u64) -> Option<Peer> {
        self.region.peers.iter().find(|p| p.store_id == store_id).copied()
    }

    fn is_pending(&self, peer: &Peer) -> bool {
        self.pending_peers.iter().any(|p| p.peer_id == peer.peer_id)
    }

    fn epoch(&self) -> RegionEpoch {
        self.region.epoch.unwrap_or_default()
    }
}

/// One region's operator.
#[derive(Debug, Clone)]
pub struct RegionOperator {
    pub operator_id: u64,
    pub region_id: u64,
    /// "admin", "replica-check", "balance-region", "balance-leader".
    pub source: &'static str,
    pub priority: Priority,
    pub reason: String,
    pub steps: Vec<OpStep>,
    /// Index of the step being carried out.
    pub current: usize,
    /// The region's epoch when the operator was made.
    epoch: RegionEpoch,
    /// Membership changes made by the finished steps: the region's conf_ver may be ahead of `epoch`
    /// by these (and by one more while a membership step is under way) without anyone else's doing.
    conf_changes_done: u64,
    pub state: OperatorState,
    pub created_ms: u64,
    pub finished_ms: u64,
    /// When the current step began: the timeout counts from here.
    step_started_ms: u64,
    split_sent: bool,
    pub note: String,
}

impl RegionOperator {
    pub fn info(&self) -> OperatorInfo {
        OperatorInfo {
            operator_id: self.operator_id,
            region_id: self.region_id,
            source: self.source.to_string(),
            reason: self.reason.clone(),
            steps: self.steps.iter().map(OpStep::to_proto).collect(),
            current_step: self.current as u32,
            state: self.state as i32,
            created_ms: self.created_ms,
            finished_ms: self.finished_ms,
            note: self.note.clone(),
        }
    }

    /// The steps not finished yet (the current one included), to foresee the region's shape.
    pub fn remaining(&self) -> &[OpStep] {
        &self.steps[self.current.min(self.steps.len())..]
    }

    fn step_done(&self, step: &OpStep, state: &RegionState) -> bool {
        match step {
            OpStep::AddPeer { store_id, .. } => state.peer_on(*store_id).is_some_and(|p| !state.is_pending(&p)),
            OpStep::TransferLeader { to_store_id } => state.leader_store_id == *to_store_id,
            OpStep::RemovePeer { store_id } => state.peer_on(*store_id).is_none(),
            // The left half keeps the region's id and ends at the split key.
            OpStep::Split { split_key } => {
                state.epoch().version > self.epoch.version
                    && (split_key.is_empty() || state.region.end_key == *split_key)
            }
        }
    }

    /// Moves past every step the region shows done. Returns why the operator must stop, if it must.
    fn advance(&mut self, state: &RegionState, now_ms: u64) -> Option<String> {
        while let Some(step) = self.steps.get(self.current) {
            if !self.step_done(step, state) {
                break;
            }
            if step.is_conf_change() {
                self.conf_changes_done += 1;
            }
            self.current += 1;
            self.step_started_ms = now_ms;
        }
        let step = self.steps.get(self.current)?;
        let epoch = state.epoch();
        if epoch.version != self.epoch.version && matches!(step, OpStep::Split { .. }) {
            return Some(format!("the region split (epoch version {} → {})", self.epoch.version, epoch.version));
        }
        let allowed = self.epoch.conf_ver + self.conf_changes_done + u64::from(step.is_conf_change());
        if epoch.conf_ver > allowed {
            return Some(format!("the region's membership changed under it (conf_ver {})", epoch.conf_ver));
        }
        match step {
            OpStep::TransferLeader { to_store_id } => match state.peer_on(*to_store_id) {
                None => Some(format!("the region has no peer on store {to_store_id} to lead it")),
                Some(peer) if state.is_pending(&peer) => {
                    Some(format!("the peer on store {to_store_id} is catching up: it cannot take the leadership"))
                }
                Some(_) => None,
            },
            OpStep::AddPeer { store_id, peer_id }
                if state.region.peers.iter().any(|p| p.peer_id == *peer_id && p.store_id != *store_id) =>
            {
                Some(format!("peer id {peer_id} is taken by another store"))
            }
            _ => None,
        }
    }

    /// What the leader should do now for the current step, if anything.
    fn command(&mut self, state: &RegionState) -> Option<Operator> {
        let step = self.steps.get(self.current)?.clone();
        let kind = match step {
            // Present but still catching up: wait for the snapshot, do not ask again.
            OpStep::AddPeer { store_id, .. } if state.peer_on(store_id).is_some() => return None,
            OpStep::AddPeer { store_id, peer_id } => {
                operator::Kind::AddPeer(AddPeerOperator { peer: Some(Peer { peer_id, store_id }) })
            }
            OpStep::TransferLeader { to_store_id } => {
                operator::Kind::TransferLeader(TransferLeaderOperator { to_store_id })
            }
            // The leader itself is leaving: hand leadership to a caught-up peer first (raft would let
            // a leader of three remove itself, but its region would be leaderless for an election).
            OpStep::RemovePeer { store_id } if state.leader_store_id == store_id => {
                let to = state
                    .region
                    .peers
                    .iter()
                    .filter(|p| p.store_id != store_id && !state.is_pending(p))
                    .map(|p| p.store_id)
                    .min()?;
                operator::Kind::TransferLeader(TransferLeaderOperator { to_store_id: to })
            }
            OpStep::RemovePeer { store_id } => {
                operator::Kind::RemovePeer(RemovePeerOperator { peer: Some(state.peer_on(store_id)?) })
            }
            OpStep::Split { .. } if self.split_sent => return None,
            OpStep::Split { split_key } => {
                self.split_sent = true;
                operator::Kind::Split(SplitOperator { split_key })
            }
        };
        Some(Operator { region_id: self.region_id, epoch: state.region.epoch, kind: Some(kind) })
    }
}

/// A request for a region that already has an operator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("region {region_id} already has operator {operator_id} running")]
pub struct Busy {
    pub region_id: u64,
    pub operator_id: u64,
}

/// Every running operator, and the recent finished ones.
#[derive(Debug)]
pub struct Operators {
    running: BTreeMap<u64, RegionOperator>,
    history: VecDeque<RegionOperator>,
    next_operator_id: u64,
    timeout_ms: u64,
    /// When an administrator's operator last ended, by region (see [`Self::admin_ended_within`]).
    admin_ended: BTreeMap<u64, u64>,
    /// Counts every change a scheduling round could see (see [`Self::generation`]).
    generation: u64,
}

impl Operators {
    pub fn new(timeout: Duration) -> Operators {
        Operators {
            running: BTreeMap::new(),
            history: VecDeque::new(),
            next_operator_id: 1,
            timeout_ms: timeout.as_millis() as u64,
            admin_ended: BTreeMap::new(),
            generation: 0,
        }
    }

    /// Grows whenever an operator starts, moves to its next step or ends, or an administrator's
    /// operator is forgotten: a scheduling round over the same regions and the same generation
    /// decides the same, so it can be skipped.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    pub fn get(&self, region_id: u64) -> Option<&RegionOperator> {
        self.running.get(&region_id)
    }

    pub fn is_busy(&self, region_id: u64) -> bool {
        self.running.contains_key(&region_id)
    }

    pub fn running(&self) -> impl Iterator<Item = &RegionOperator> {
        self.running.values()
    }

    /// Running operators made by `source`.
    pub fn count(&self, source: &str) -> usize {
        self.running.values().filter(|op| op.source == source).count()
    }

    /// Whether an operator of `priority` may start for the region now: it is free, or what runs
    /// there has a lower priority (an administrator's may replace anything).
    pub fn may_start(&self, region_id: u64, priority: Priority) -> bool {
        self.running.get(&region_id).is_none_or(|old| priority > old.priority || priority == Priority::Admin)
    }

    /// Starts an operator for `region`, replacing a running one of a lower priority (it ends
    /// `replaced`); see [`Self::may_start`].
    pub fn add(
        &mut self,
        region: &Region,
        source: &'static str,
        priority: Priority,
        reason: impl Into<String>,
        steps: Vec<OpStep>,
        now_ms: u64,
    ) -> Result<OperatorInfo, Busy> {
        let region_id = region.region_id;
        if let Some(old) = self.running.get(&region_id) {
            if !self.may_start(region_id, priority) {
                return Err(Busy { region_id, operator_id: old.operator_id });
            }
            let operator_id = self.next_operator_id;
            self.finish(region_id, OperatorState::Replaced, format!("replaced by operator {operator_id}"), now_ms);
        }
        let op = RegionOperator {
            operator_id: self.next_operator_id,
            region_id,
            source,
            priority,
            reason: reason.into(),
            steps,
            current: 0,
            epoch: region.epoch.unwrap_or_default(),
            conf_changes_done: 0,
            state: OperatorState::Running,
            created_ms: now_ms,
            finished_ms: 0,
            step_started_ms: now_ms,
            split_sent: false,
            note: String::new(),
        };
        self.next_operator_id += 1;
        tracing::info!(
            operator_id = op.operator_id,
            region_id,
            source,
            ?priority,
            reason = %op.reason,
            steps = ?op.steps,
            "operator created"
        );
        let info = op.info();
        self.running.insert(region_id, op);
        self.generation += 1;
        Ok(info)
    }

    /// A heartbeat from the region's leader: moves its operator on and returns what the leader should
    /// do next, if anything.
    pub fn on_heartbeat(&mut self, state: &RegionState, now_ms: u64) -> Option<Operator> {
        let region_id = state.region.region_id;
        let op = self.running.get_mut(&region_id)?;
        let step = op.current;
        let stop = op.advance(state, now_ms);
        if op.current != step {
            self.generation += 1;
        }
        if let Some(note) = stop {
            self.finish(region_id, OperatorState::Cancelled, note, now_ms);
            return None;
        }
        if op.current >= op.steps.len() {
            self.finish(region_id, OperatorState::Success, String::new(), now_ms);
            return None;
        }
        op.command(state)
    }

    /// Ends every operator that cannot finish: its region no longer exists (merged away or replaced
    /// by a split's halves); a step still to come adds a peer on a store that is not up, or hands
    /// the leadership to a store that is not up or not heartbeating; or its current step has made no
    /// progress for the timeout.
    pub fn check(&mut self, exists: impl Fn(u64) -> bool, health: impl Fn(u64) -> StoreHealth, now_ms: u64) {
        // A store that missed a few heartbeats only stops the step under way: it may be back soon.
        let blocked = |op: &RegionOperator| {
            op.remaining().iter().enumerate().find_map(|(i, step)| {
                let store_id = match *step {
                    OpStep::AddPeer { store_id, .. } => store_id,
                    OpStep::TransferLeader { to_store_id } => to_store_id,
                    OpStep::RemovePeer { .. } | OpStep::Split { .. } => return None,
                };
                let fit = match health(store_id) {
                    StoreHealth::Up => true,
                    StoreHealth::Silent => i > 0 || matches!(step, OpStep::AddPeer { .. }),
                    StoreHealth::Down | StoreHealth::Offline | StoreHealth::Removed | StoreHealth::Unknown => false,
                };
                let state = health(store_id).as_str();
                (!fit).then(|| format!("store {store_id} is {state}: {step:?} cannot happen"))
            })
        };
        let stalled: Vec<(u64, OperatorState, String)> = self
            .running
            .values()
            .filter_map(|op| {
                if !exists(op.region_id) {
                    Some((op.region_id, OperatorState::Cancelled, "the region no longer exists".to_string()))
                } else if let Some(why) = blocked(op) {
                    Some((op.region_id, OperatorState::Cancelled, why))
                } else if now_ms.saturating_sub(op.step_started_ms) > self.timeout_ms {
                    let step = op.steps.get(op.current).map_or(String::new(), |s| format!(" in step {s:?}"));
                    let waited = Duration::from_millis(now_ms.saturating_sub(op.step_started_ms));
                    Some((op.region_id, OperatorState::Timeout, format!("no progress for {waited:?}{step}")))
                } else {
                    None
                }
            })
            .collect();
        for (region_id, state, note) in stalled {
            self.finish(region_id, state, note, now_ms);
        }
    }

    /// Whether an administrator's operator on the region ended less than `within` ago: an
    /// administrator's change often comes in two commands (add a peer, then remove another), and the
    /// schedulers must not undo the first before the second comes.
    pub fn admin_ended_within(&self, region_id: u64, within: Duration, now_ms: u64) -> bool {
        self.admin_ended.get(&region_id).is_some_and(|&ended| now_ms.saturating_sub(ended) < within.as_millis() as u64)
    }

    /// Forgets the administrators' operators that ended before `within` ago.
    pub fn forget_admin_ended(&mut self, within: Duration, now_ms: u64) {
        let within = within.as_millis() as u64;
        let before = self.admin_ended.len();
        self.admin_ended.retain(|_, ended| now_ms.saturating_sub(*ended) < within);
        if self.admin_ended.len() != before {
            self.generation += 1;
        }
    }

    fn finish(&mut self, region_id: u64, state: OperatorState, note: String, now_ms: u64) {
        let Some(mut op) = self.running.remove(&region_id) else { return };
        self.generation += 1;
        if op.priority == Priority::Admin {
            self.admin_ended.insert(region_id, now_ms);
        }
        op.state = state;
        op.finished_ms = now_ms;
        op.note = note;
        let took = Duration::from_millis(now_ms.saturating_sub(op.created_ms));
        if state == OperatorState::Success {
            tracing::info!(operator_id = op.operator_id, region_id, source = op.source, ?took, "operator finished");
        } else {
            tracing::warn!(
                operator_id = op.operator_id,
                region_id,
                source = op.source,
                state = state.as_str_name(),
                note = %op.note,
                step = op.current,
                ?took,
                "operator ended without finishing"
            );
        }
        if self.history.len() == HISTORY_LEN {
            self.history.pop_front();
        }
        self.history.push_back(op);
    }

    /// (running by region id, finished oldest first).
    pub fn infos(&self) -> (Vec<OperatorInfo>, Vec<OperatorInfo>) {
        (
            self.running.values().map(RegionOperator::info).collect(),
            self.history.iter().map(RegionOperator::info).collect(),
        )
    }

    /// A finished or running operator by id.
    pub fn find(&self, operator_id: u64) -> Option<OperatorInfo> {
        self.running
            .values()
            .chain(self.history.iter())
            .find(|op| op.operator_id == operator_id)
            .map(RegionOperator::info)
    }
}

#[cfg(test)]
mod tests;
