//! The scheduling round: ends the operators that cannot finish, runs the replica checker and the
//! balancers over the current view (with running operators foreseen as done), and turns their plans
//! into operators: a plan of a higher priority replaces a running operator of a lower one.
//!
//! A round looks at every region, so it runs only when something it looks at changed since the last
//! one ([`RoundState`]): a record, a size, a pending peer, an operator, or a store's health (time
//! passing makes a silent store silent, then down, and ends operators that take too long; both are
//! checked every round, at the cost of the stores and the running operators only). With stable
//! regions, a round costs nothing that grows with them.

use super::*;

/// Running balance operators at once: moves are cheap to decide and costly to make (a snapshot
/// each), so a few at a time keeps a new store from being flooded and the views honest.
const MAX_BALANCE_REGION_OPS: usize = 1;
const MAX_BALANCE_LEADER_OPS: usize = 4;

/// A store silent for this long has missed six heartbeats (nodes beat every 500 ms): it may be
/// dying, so no leadership and no new peer go to it, and a leader transfer to it is given up, until
/// it beats again. (A store down for `--max-store-down-time` has its peers replaced.)
pub const STORE_SILENT_AFTER: Duration = Duration::from_secs(3);

/// How a store stands for the steps of a running operator.
fn health(stores: &[StoreInfo], store_id: u64, now: u64, silent_after: Duration) -> StoreHealth {
    let Some(store) = stores.iter().find(|s| s.store_id == store_id) else { return StoreHealth::Unknown };
    match StoreState::try_from(store.state) {
        Ok(StoreState::Down) => StoreHealth::Down,
        Ok(StoreState::Offline) => StoreHealth::Offline,
        Ok(StoreState::Removed) => StoreHealth::Removed,
        _ if now.saturating_sub(store.last_heartbeat_ms) > silent_after.as_millis() as u64 => StoreHealth::Silent,
        _ => StoreHealth::Up,
    }
}

/// What a round decides from, besides the regions themselves: equal inputs, equal decisions.
#[derive(Debug, Clone, PartialEq, Eq)]
struct RoundInputs {
    changes: u64,
    operators: u64,
    health: Vec<(u64, StoreHealth)>,
}

/// The scheduling rounds' bookkeeping.
#[derive(Debug, Default)]
pub(super) struct RoundState {
    /// Counts the changes to what rounds look at that [`RoundInputs::operators`] does not count.
    changes: u64,
    /// The inputs of the last round, if it decided nothing (a round that started operators runs
    /// again: its new operators may let it decide more).
    settled: Option<RoundInputs>,
    run: u64,
    skipped: u64,
}

impl RoundState {
    /// Something a round looks at changed: the next one runs.
    pub(super) fn changed(&mut self) {
        self.changes += 1;
    }
}

impl Inner {
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

impl Placement {
    /// One scheduling round (every second or so); returns the operators created. In order:
    /// 1. end the operators that cannot finish (see [`Operators::check`]);
    /// 2. the replica checker, over the regions as their running operators will leave them: a
    ///    region free (or left alone after an administrator's change, for repairs only) gets its
    ///    plan; so does one whose running operator is of a lower priority than the repair and would
    ///    leave it still in need of it (seen as it is now, the repair replaces the operator: a
    ///    balancer's transfer to a store that dies must not hold a region's repair back);
    /// 3. the enabled balancers, each up to its number of running operators, over that view with
    ///    the replica checker's new operators foreseen; busy regions are not moved;
    /// 4. drained offline stores are marked removed.
    pub fn schedule(&self) -> Result<Vec<OperatorInfo>, PlacementError> {
        self.schedule_at(now_ms())
    }

    pub(super) fn schedule_at(&self, now: u64) -> Result<Vec<OperatorInfo>, PlacementError> {
        self.change(|inner| Ok(self.schedule_round(inner, now)))
    }

    /// Scheduling rounds (run, skipped because nothing they look at changed) since the state opened.
    pub fn scheduling_rounds(&self) -> (u64, u64) {
        let inner = self.inner.lock();
        (inner.round.run, inner.round.skipped)
    }

    fn schedule_round(&self, inner: &mut Inner, now: u64) -> Vec<OperatorInfo> {
        let down_after = self.options.store_down_after;
        let silent_after = STORE_SILENT_AFTER.min(down_after);
        let stores = inner.store_infos(now, down_after);
        {
            let regions = &inner.regions;
            let health = |store_id| health(&stores, store_id, now, silent_after);
            inner.operators.check(|region_id| regions.get(region_id).is_some(), health, now);
            inner.operators.forget_admin_ended(ADMIN_HOLD, now);
        }
        let inputs = RoundInputs {
            changes: inner.round.changes,
            operators: inner.operators.generation(),
            health: stores.iter().map(|s| (s.store_id, health(&stores, s.store_id, now, silent_after))).collect(),
        };
        if inner.round.settled.as_ref() == Some(&inputs) {
            inner.round.skipped += 1;
            return Vec::new();
        }
        inner.round.run += 1;
        let created = self.decide(inner, &stores, now);
        inner.round.settled = created.is_empty().then_some(inputs);
        created
    }

    /// The round itself (steps 2 to 4 of [`Self::schedule`]).
    fn decide(&self, inner: &mut Inner, stores: &[StoreInfo], now: u64) -> Vec<OperatorInfo> {
        let replicas = self.options.replicas;
        let down_after = self.options.store_down_after;
        let silent_after = STORE_SILENT_AFTER.min(down_after);
        let (store_views, mut views) = schedulers::views_from(
            stores,
            &inner.region_infos(),
            now,
            down_after.as_millis() as u64,
            silent_after.as_millis() as u64,
        );
        for view in &mut views {
            view.busy = inner.operators.admin_ended_within(view.region_id(), ADMIN_HOLD, now);
            if let Some(op) = inner.operators.get(view.region_id()) {
                view.busy = true;
                let mut foreseen = view.clone();
                foresee(&mut foreseen, op.remaining());
                let replaced =
                    op.priority < Priority::High && schedulers::needs_repair(&foreseen, &store_views, replicas);
                if !replaced {
                    *view = foreseen;
                }
            }
        }
        let regions_by_id: HashMap<u64, Region> =
            inner.regions.iter().filter_map(|i| i.region.clone()).map(|r| (r.region_id, r)).collect();
        let mut created = Vec::new();
        // Starts the plan's operator if the region is free or runs one of a lower priority; the view
        // then shows it done, and busy.
        let mut start = |inner: &mut Inner, views: &mut [RegionView], plan: &Plan, source: &'static str| -> bool {
            let Some(region) = regions_by_id.get(&plan.region_id) else { return false };
            if !inner.operators.may_start(plan.region_id, plan.priority) {
                return false;
            }
            let steps = inner.steps_of(plan);
            let Ok(info) = inner.operators.add(region, source, plan.priority, plan.reason, steps.clone(), now) else {
                return false;
            };
            created.push(info);
            if let Some(view) = views.iter_mut().find(|v| v.region_id() == plan.region_id) {
                foresee(view, &steps);
                view.busy = true;
            }
            true
        };
        for plan in schedulers::replica_check(&store_views, &views, replicas) {
            start(inner, &mut views, &plan, REPLICA_CHECK);
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
                let Some(plan) = balance(&store_views, &views, replicas) else { break };
                if !start(inner, &mut views, &plan, name) {
                    break;
                }
            }
        }
        // A drained store leaves the cluster for good.
        for store in stores {
            if store.state == StoreState::Offline as i32 && store.region_count == 0 {
                if let Some(stored) = inner.stores.get_mut(&store.store_id) {
                    stored.state = StoreState::Removed as i32;
                    tracing::info!(store_id = store.store_id, "store drained: removed from the cluster");
                    inner.dirty.stores.insert(store.store_id);
                }
            }
        }
        created
    }
}

#[cfg(test)]
mod tests;
