//! The scheduling round: ends stalled operators, runs the replica checker and the balancers over the
//! current view (with running operators foreseen as done), and turns their plans into operators.

use super::*;

/// Running balance operators at once: moves are cheap to decide and costly to make (a snapshot
/// each), so a few at a time keeps a new store from being flooded and the views honest.
const MAX_BALANCE_REGION_OPS: usize = 1;
const MAX_BALANCE_LEADER_OPS: usize = 4;

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
    /// One scheduling round (every second or so): ends stalled operators, then runs the replica
    /// checker and the enabled balancers over the current view, each creating operators for regions
    /// that have none; finally marks drained offline stores removed. Returns the operators created.
    pub fn schedule(&self) -> Result<Vec<OperatorInfo>, PlacementError> {
        self.schedule_at(now_ms())
    }

    fn schedule_at(&self, now: u64) -> Result<Vec<OperatorInfo>, PlacementError> {
        self.change(|inner| Ok(self.schedule_round(inner, now)))
    }

    fn schedule_round(&self, inner: &mut Inner, now: u64) -> Vec<OperatorInfo> {
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
        let regions_by_id: HashMap<u64, Region> =
            inner.regions.iter().filter_map(|i| i.region.clone()).map(|r| (r.region_id, r)).collect();
        let mut start = |inner: &mut Inner, plan: &Plan, source: &'static str| -> Option<Vec<OpStep>> {
            let region = regions_by_id.get(&plan.region_id)?;
            if inner.operators.is_busy(plan.region_id) {
                return None;
            }
            let steps = inner.steps_of(plan);
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
                    inner.dirty.stores.insert(store.store_id);
                }
            }
        }
        created
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::proto::{operator, OperatorState};

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
