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
}

impl Operators {
    pub fn new(timeout: Duration) -> Operators {
        Operators {
            running: BTreeMap::new(),
            history: VecDeque::new(),
            next_operator_id: 1,
            timeout_ms: timeout.as_millis() as u64,
            admin_ended: BTreeMap::new(),
        }
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
        Ok(info)
    }

    /// A heartbeat from the region's leader: moves its operator on and returns what the leader should
    /// do next, if anything.
    pub fn on_heartbeat(&mut self, state: &RegionState, now_ms: u64) -> Option<Operator> {
        let region_id = state.region.region_id;
        let op = self.running.get_mut(&region_id)?;
        if let Some(note) = op.advance(state, now_ms) {
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
        self.admin_ended.retain(|_, ended| now_ms.saturating_sub(*ended) < within);
    }

    fn finish(&mut self, region_id: u64, state: OperatorState, note: String, now_ms: u64) {
        let Some(mut op) = self.running.remove(&region_id) else { return };
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
mod tests {
    use super::*;

    const TIMEOUT: Duration = Duration::from_secs(10);

    fn region(conf_ver: u64, version: u64, peers: &[(u64, u64)]) -> Region {
        Region {
            region_id: 7,
            epoch: Some(RegionEpoch { conf_ver, version }),
            peers: peers.iter().map(|&(peer_id, store_id)| Peer { peer_id, store_id }).collect(),
            ..Default::default()
        }
    }

    fn state<'a>(region: &'a Region, leader: u64, pending: &'a [Peer]) -> RegionState<'a> {
        RegionState { region, leader_store_id: leader, pending_peers: pending }
    }

    fn kind(op: Option<Operator>) -> Option<operator::Kind> {
        op.map(|o| o.kind.unwrap())
    }

    fn last(ops: &Operators) -> OperatorInfo {
        ops.infos().1.last().cloned().unwrap()
    }

    /// Move the peer on store 1 (the leader) to store 4: add, wait for the catch-up, transfer, remove.
    #[test]
    fn a_move_adds_waits_for_catch_up_transfers_then_removes() {
        let mut ops = Operators::new(TIMEOUT);
        let r0 = region(3, 1, &[(11, 1), (12, 2), (13, 3)]);
        let steps = vec![
            OpStep::AddPeer { store_id: 4, peer_id: 14 },
            OpStep::TransferLeader { to_store_id: 2 },
            OpStep::RemovePeer { store_id: 1 },
        ];
        ops.add(&r0, "balance-region", Priority::Low, "test", steps, 0).unwrap();
        let new_peer = Peer { peer_id: 14, store_id: 4 };
        assert_eq!(
            kind(ops.on_heartbeat(&state(&r0, 1, &[]), 1)),
            Some(operator::Kind::AddPeer(AddPeerOperator { peer: Some(new_peer) }))
        );
        // Asked again until the heartbeat shows the peer.
        assert!(ops.on_heartbeat(&state(&r0, 1, &[]), 2).is_some());
        // Added but still catching up: nothing to do, and no removal yet.
        let r1 = region(4, 1, &[(11, 1), (12, 2), (13, 3), (14, 4)]);
        assert_eq!(ops.on_heartbeat(&state(&r1, 1, &[new_peer]), 3), None);
        assert_eq!(ops.get(7).unwrap().current, 0);
        // Caught up: the leader is the one leaving, so leadership goes first.
        assert_eq!(
            kind(ops.on_heartbeat(&state(&r1, 1, &[]), 4)),
            Some(operator::Kind::TransferLeader(TransferLeaderOperator { to_store_id: 2 }))
        );
        assert_eq!(
            kind(ops.on_heartbeat(&state(&r1, 2, &[]), 5)),
            Some(operator::Kind::RemovePeer(RemovePeerOperator { peer: Some(Peer { peer_id: 11, store_id: 1 }) }))
        );
        let r2 = region(5, 1, &[(12, 2), (13, 3), (14, 4)]);
        assert_eq!(ops.on_heartbeat(&state(&r2, 2, &[]), 6), None);
        assert!(!ops.is_busy(7));
        let done = last(&ops);
        assert_eq!((done.state, done.current_step, done.finished_ms), (OperatorState::Success as i32, 3, 6));
    }

    #[test]
    fn removing_the_leader_hands_leadership_to_a_caught_up_peer_first() {
        let mut ops = Operators::new(TIMEOUT);
        let r = region(3, 1, &[(11, 1), (12, 2), (13, 3)]);
        ops.add(&r, "admin", Priority::Admin, "test", vec![OpStep::RemovePeer { store_id: 1 }], 0).unwrap();
        // Store 2's peer is pending: store 3 gets the leadership.
        let pending = [Peer { peer_id: 12, store_id: 2 }];
        assert_eq!(
            kind(ops.on_heartbeat(&state(&r, 1, &pending), 1)),
            Some(operator::Kind::TransferLeader(TransferLeaderOperator { to_store_id: 3 }))
        );
    }

    #[test]
    fn one_operator_per_region_and_an_admin_one_replaces_it() {
        let mut ops = Operators::new(TIMEOUT);
        let r = region(1, 1, &[(11, 1)]);
        let first =
            ops.add(&r, "replica-check", Priority::High, "a", vec![OpStep::AddPeer { store_id: 2, peer_id: 20 }], 0);
        let first = first.unwrap();
        let busy =
            ops.add(&r, "balance-leader", Priority::Low, "b", vec![OpStep::TransferLeader { to_store_id: 1 }], 1);
        assert_eq!(busy, Err(Busy { region_id: 7, operator_id: first.operator_id }));
        let admin =
            ops.add(&r, "admin", Priority::Admin, "c", vec![OpStep::AddPeer { store_id: 3, peer_id: 30 }], 2).unwrap();
        assert_eq!(ops.get(7).unwrap().operator_id, admin.operator_id);
        let replaced = last(&ops);
        assert_eq!((replaced.operator_id, replaced.state), (first.operator_id, OperatorState::Replaced as i32));
        assert!(replaced.note.contains(&admin.operator_id.to_string()));
    }

    #[test]
    fn a_stalled_step_times_out_and_progress_resets_the_clock() {
        let mut ops = Operators::new(TIMEOUT);
        let r = region(1, 1, &[(11, 1), (12, 2)]);
        let steps = vec![OpStep::TransferLeader { to_store_id: 2 }, OpStep::RemovePeer { store_id: 1 }];
        ops.add(&r, "admin", Priority::Admin, "test", steps, 0).unwrap();
        ops.check(|_| true, |_| StoreHealth::Up, 9_000);
        assert!(ops.is_busy(7));
        // The transfer happens at 9 s: the removal has its own 10 s.
        ops.on_heartbeat(&state(&r, 2, &[]), 9_000);
        ops.check(|_| true, |_| StoreHealth::Up, 18_000);
        assert!(ops.is_busy(7));
        ops.check(|_| true, |_| StoreHealth::Up, 19_001);
        assert!(!ops.is_busy(7));
        let done = last(&ops);
        assert_eq!((done.state, done.current_step), (OperatorState::Timeout as i32, 1));
        assert!(done.note.contains("RemovePeer"), "{}", done.note);
    }

    #[test]
    fn someone_elses_membership_change_cancels_it_but_a_split_does_not() {
        let mut ops = Operators::new(TIMEOUT);
        let r = region(3, 1, &[(11, 1), (12, 2), (13, 3)]);
        ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::AddPeer { store_id: 4, peer_id: 14 }], 0).unwrap();
        // Its own change (conf_ver 4, the peer pending) is fine.
        let added = region(4, 1, &[(11, 1), (12, 2), (13, 3), (14, 4)]);
        let pending = [Peer { peer_id: 14, store_id: 4 }];
        assert_eq!(ops.on_heartbeat(&state(&added, 1, &pending), 1), None);
        assert!(ops.is_busy(7));
        // One more change it did not make: cancelled.
        let more = region(5, 1, &[(11, 1), (12, 2), (13, 3), (14, 4), (15, 5)]);
        ops.on_heartbeat(&state(&more, 1, &pending), 2);
        assert_eq!(last(&ops).state, OperatorState::Cancelled as i32);

        // The region splits while the peer is being added: the add goes on, and finishes once the
        // peer shows up caught up.
        ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::AddPeer { store_id: 4, peer_id: 16 }], 3).unwrap();
        let split = region(3, 2, &[(11, 1), (12, 2), (13, 3)]);
        assert!(ops.on_heartbeat(&state(&split, 1, &[]), 4).is_some(), "the add is still asked for");
        assert!(ops.is_busy(r.region_id));
        let split_and_added = region(4, 2, &[(11, 1), (12, 2), (13, 3), (16, 4)]);
        ops.on_heartbeat(&state(&split_and_added, 1, &[]), 5);
        assert_eq!(last(&ops).state, OperatorState::Success as i32);

        // A transfer to a store whose peer went away is impossible.
        ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::TransferLeader { to_store_id: 3 }], 5).unwrap();
        ops.on_heartbeat(&state(&region(3, 1, &[(11, 1), (12, 2)]), 1, &[]), 6);
        assert_eq!(last(&ops).state, OperatorState::Cancelled as i32);
        // So is one for a region that no longer exists.
        ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::TransferLeader { to_store_id: 3 }], 7).unwrap();
        ops.check(|_| false, |_| StoreHealth::Up, 8);
        assert_eq!(last(&ops).state, OperatorState::Cancelled as i32);
    }

    #[test]
    fn a_split_is_sent_once_and_done_when_the_version_grows() {
        let mut ops = Operators::new(TIMEOUT);
        let r = region(1, 1, &[(11, 1)]);
        ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::Split { split_key: b"m".to_vec() }], 0).unwrap();
        assert_eq!(
            kind(ops.on_heartbeat(&state(&r, 1, &[]), 1)),
            Some(operator::Kind::Split(SplitOperator { split_key: b"m".to_vec() }))
        );
        assert_eq!(ops.on_heartbeat(&state(&r, 1, &[]), 2), None);
        assert!(ops.is_busy(7));
        let left = Region { end_key: b"m".to_vec(), ..region(1, 2, &[(11, 1)]) };
        ops.on_heartbeat(&state(&left, 1, &[]), 3);
        assert_eq!(last(&ops).state, OperatorState::Success as i32);
        // A split elsewhere (another key, by size) is not this one: it ends cancelled.
        ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::Split { split_key: b"m".to_vec() }], 4).unwrap();
        let elsewhere = Region { end_key: b"c".to_vec(), ..region(1, 2, &[(11, 1)]) };
        ops.on_heartbeat(&state(&elsewhere, 1, &[]), 5);
        assert_eq!(last(&ops).state, OperatorState::Cancelled as i32);
    }

    #[test]
    fn steps_already_in_effect_finish_at_once() {
        let mut ops = Operators::new(TIMEOUT);
        let r = region(3, 1, &[(11, 1), (12, 2)]);
        let steps = vec![OpStep::AddPeer { store_id: 2, peer_id: 99 }, OpStep::RemovePeer { store_id: 5 }];
        ops.add(&r, "admin", Priority::Admin, "t", steps, 0).unwrap();
        assert_eq!(ops.on_heartbeat(&state(&r, 1, &[]), 1), None);
        assert_eq!(last(&ops).state, OperatorState::Success as i32);
    }

    #[test]
    fn the_history_is_bounded_and_keeps_the_newest() {
        let mut ops = Operators::new(TIMEOUT);
        let r = region(1, 1, &[(11, 1)]);
        for i in 0..(HISTORY_LEN as u64 + 5) {
            ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::TransferLeader { to_store_id: 1 }], i).unwrap();
            ops.on_heartbeat(&state(&r, 1, &[]), i);
        }
        let (running, history) = ops.infos();
        assert!(running.is_empty());
        assert_eq!(history.len(), HISTORY_LEN);
        assert_eq!(history.last().unwrap().operator_id, HISTORY_LEN as u64 + 5);
        assert_eq!(history[0].operator_id, 6);
        assert!(ops.find(3).is_none() && ops.find(50).is_some());
    }

    #[test]
    fn a_higher_priority_replaces_a_lower_one_never_the_reverse() {
        let mut ops = Operators::new(TIMEOUT);
        let r = region(3, 1, &[(11, 1), (12, 2), (13, 3)]);
        let transfer = vec![OpStep::TransferLeader { to_store_id: 2 }];
        let balance = ops.add(&r, "balance-leader", Priority::Low, "b", transfer.clone(), 0).unwrap();
        // Another balancer's decision waits.
        assert!(!ops.may_start(7, Priority::Low));
        assert!(ops.add(&r, "balance-region", Priority::Low, "b", transfer.clone(), 1).is_err());
        // A repair replaces it...
        let repair = vec![OpStep::AddPeer { store_id: 4, peer_id: 14 }, OpStep::RemovePeer { store_id: 3 }];
        let repair = ops.add(&r, "replica-check", Priority::High, "r", repair, 2).unwrap();
        let replaced = last(&ops);
        assert_eq!((replaced.operator_id, replaced.state), (balance.operator_id, OperatorState::Replaced as i32));
        // ...and is replaced by nothing but an administrator's request.
        assert!(ops.add(&r, "balance-leader", Priority::Low, "b", transfer.clone(), 3).is_err());
        assert!(ops.add(&r, "replica-check", Priority::High, "r", transfer.clone(), 3).is_err());
        assert_eq!(ops.get(7).unwrap().operator_id, repair.operator_id);
        let admin = ops.add(&r, "admin", Priority::Admin, "a", transfer.clone(), 4).unwrap();
        assert!(!ops.may_start(7, Priority::High));
        let again = ops.add(&r, "admin", Priority::Admin, "a", transfer, 5).unwrap();
        assert_eq!(last(&ops).operator_id, admin.operator_id, "an administrator's next request replaces the last");
        assert_eq!(ops.get(7).unwrap().operator_id, again.operator_id);
    }

    #[test]
    fn an_operator_whose_target_store_cannot_serve_is_cancelled() {
        let r = region(3, 1, &[(11, 1), (12, 2), (13, 3)]);
        let steps = vec![
            OpStep::AddPeer { store_id: 4, peer_id: 14 },
            OpStep::TransferLeader { to_store_id: 4 },
            OpStep::RemovePeer { store_id: 1 },
        ];
        let outcome = |health: StoreHealth, target: u64| {
            let mut ops = Operators::new(TIMEOUT);
            ops.add(&r, "balance-region", Priority::Low, "m", steps.clone(), 0).unwrap();
            ops.check(|_| true, |s| if s == target { health } else { StoreHealth::Up }, 1);
            ops.get(7).map(|_| String::new()).unwrap_or_else(|| last(&ops).note)
        };
        for health in [StoreHealth::Down, StoreHealth::Offline, StoreHealth::Removed, StoreHealth::Unknown] {
            let note = outcome(health, 4);
            assert!(note.starts_with(&format!("store 4 is {}", health.as_str())), "{health:?}: {note}");
        }
        // A store that missed a few heartbeats may still get the peer (the transfer to it is later).
        assert_eq!(outcome(StoreHealth::Silent, 4), "");
        // The store losing its peer is no target: its death changes nothing here.
        assert_eq!(outcome(StoreHealth::Down, 1), "");

        // A transfer under way to a silent store is given up.
        let mut ops = Operators::new(TIMEOUT);
        ops.add(&r, "balance-leader", Priority::Low, "l", vec![OpStep::TransferLeader { to_store_id: 2 }], 0).unwrap();
        ops.check(|_| true, |s| if s == 2 { StoreHealth::Silent } else { StoreHealth::Up }, 1);
        assert!(last(&ops).note.contains("store 2 is not heartbeating"), "{}", last(&ops).note);
    }

    #[test]
    fn a_leader_transfer_to_a_peer_catching_up_is_cancelled() {
        let mut ops = Operators::new(TIMEOUT);
        let r = region(3, 1, &[(11, 1), (12, 2), (13, 3)]);
        ops.add(&r, "balance-leader", Priority::Low, "l", vec![OpStep::TransferLeader { to_store_id: 2 }], 0).unwrap();
        let behind = [Peer { peer_id: 12, store_id: 2 }];
        assert_eq!(ops.on_heartbeat(&state(&r, 1, &behind), 1), None);
        let done = last(&ops);
        assert_eq!(done.state, OperatorState::Cancelled as i32);
        assert!(done.note.contains("catching up"), "{}", done.note);
    }

    #[test]
    fn an_administrator_s_operator_holds_its_region_for_a_while_after_it_ends() {
        let mut ops = Operators::new(TIMEOUT);
        let r = region(1, 1, &[(11, 1)]);
        let hold = Duration::from_secs(30);
        ops.add(&r, "replica-check", Priority::High, "t", vec![OpStep::TransferLeader { to_store_id: 1 }], 0).unwrap();
        ops.on_heartbeat(&state(&r, 1, &[]), 10);
        assert!(!ops.admin_ended_within(7, hold, 10), "a scheduler's operator holds nothing");
        ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::TransferLeader { to_store_id: 1 }], 20).unwrap();
        ops.on_heartbeat(&state(&r, 1, &[]), 1_000);
        assert!(ops.admin_ended_within(7, hold, 30_999));
        assert!(!ops.admin_ended_within(7, hold, 31_000));
        ops.forget_admin_ended(hold, 31_000);
        assert!(ops.admin_ended.is_empty());
    }
}
