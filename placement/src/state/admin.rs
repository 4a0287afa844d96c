//! The administrator's requests: splits, leader transfers, peer changes, draining a store, and the
//! scheduler switches. Each request that changes a region becomes an operator of the highest
//! priority: it replaces whatever runs for the region, and nothing replaces it. Once it ends the
//! schedulers leave the region alone for [`ADMIN_HOLD`] (repairs excepted), so a change made in two
//! commands (add a peer, then remove another) is not undone halfway.

use super::*;

impl Inner {
    /// The region and its recorded leader, or why an administrator's request cannot be made of it.
    fn region_for_admin(&self, region_id: u64) -> Result<(Region, u64), PlacementError> {
        let info = self.regions.get(region_id).ok_or(PlacementError::UnknownRegion(region_id))?;
        let region = info.region.clone().ok_or(PlacementError::UnknownRegion(region_id))?;
        Ok((region, info.leader_store_id))
    }
}

impl Placement {
    /// An administrator's operator for `region_id`: it replaces whatever runs for the region.
    fn admin_operator(
        &self,
        inner: &mut Inner,
        region: &Region,
        reason: String,
        steps: Vec<OpStep>,
    ) -> Result<OperatorInfo, PlacementError> {
        let info = inner
            .operators
            .add(region, ADMIN, Priority::Admin, reason, steps, now_ms())
            .expect("an administrator's operator replaces any other");
        Ok(info)
    }

    /// Has the region's leader split it (at `split_key`, or in the middle if empty).
    pub fn split_region(&self, region_id: u64, split_key: Vec<u8>) -> Result<OperatorInfo, PlacementError> {
        self.change(|inner| {
            let (region, leader_store_id) = inner.region_for_admin(region_id)?;
            if !split_key.is_empty()
                && (split_key.as_slice() <= region.start_key.as_slice()
                    || (!region.end_key.is_empty() && split_key.as_slice() >= region.end_key.as_slice()))
            {
                return Err(PlacementError::Invalid("the split key must lie strictly inside the region".into()));
            }
            tracing::info!(region_id, leader_store_id, "split requested");
            self.admin_operator(inner, &region, "split requested".into(), vec![OpStep::Split { split_key }])
        })
    }

    /// Has the region's leader hand leadership to its peer on `to_store_id`.
    pub fn transfer_leader(&self, region_id: u64, to_store_id: u64) -> Result<OperatorInfo, PlacementError> {
        self.change(|inner| {
            let (region, leader_store_id) = inner.region_for_admin(region_id)?;
            if !region.peers.iter().any(|p| p.store_id == to_store_id) {
                return Err(PlacementError::Invalid(format!("region {region_id} has no peer on store {to_store_id}")));
            }
            tracing::info!(region_id, to_store_id, leader_store_id, "leader transfer requested");
            let steps = vec![OpStep::TransferLeader { to_store_id }];
            self.admin_operator(inner, &region, "leader transfer requested".into(), steps)
        })
    }

    /// Adds a peer of `region_id` on `store_id` (an up store without one).
    pub fn add_peer(&self, region_id: u64, store_id: u64) -> Result<OperatorInfo, PlacementError> {
        self.change(|inner| {
            let (region, _) = inner.region_for_admin(region_id)?;
            let store = inner
                .store_infos(now_ms(), self.options.store_down_after)
                .into_iter()
                .find(|s| s.store_id == store_id)
                .ok_or(PlacementError::UnknownStore(store_id))?;
            if store.state != StoreState::Up as i32 {
                let state = StoreState::try_from(store.state).map_or("unknown", |s| s.as_str_name()).to_lowercase();
                return Err(PlacementError::Invalid(format!("store {store_id} is {state}: it cannot take a new peer")));
            }
            if region.peers.iter().any(|p| p.store_id == store_id) {
                return Err(PlacementError::Invalid(format!(
                    "region {region_id} already has a peer on store {store_id}"
                )));
            }
            let peer_id = inner.alloc();
            let steps = vec![OpStep::AddPeer { store_id, peer_id }];
            self.admin_operator(inner, &region, format!("add a peer on store {store_id}"), steps)
        })
    }

    /// Removes `region_id`'s peer on `store_id`; if that peer leads, leadership moves to another peer
    /// first (a caught-up one, the lowest store id).
    pub fn remove_peer(&self, region_id: u64, store_id: u64) -> Result<OperatorInfo, PlacementError> {
        self.change(|inner| {
            let (region, leader_store_id) = inner.region_for_admin(region_id)?;
            if !region.peers.iter().any(|p| p.store_id == store_id) {
                return Err(PlacementError::Invalid(format!("region {region_id} has no peer on store {store_id}")));
            }
            if region.peers.len() == 1 {
                return Err(PlacementError::Invalid(format!("store {store_id} holds region {region_id}'s only peer")));
            }
            let mut steps = Vec::new();
            if leader_store_id == store_id {
                let pending = inner.pending.get(&region_id).cloned().unwrap_or_default();
                let to = region
                    .peers
                    .iter()
                    .filter(|p| p.store_id != store_id && !pending.iter().any(|q| q.peer_id == p.peer_id))
                    .map(|p| p.store_id)
                    .min()
                    .ok_or_else(|| {
                        PlacementError::Invalid(format!(
                            "region {region_id} has no caught-up peer to take over the leadership from store {store_id}"
                        ))
                    })?;
                steps.push(OpStep::TransferLeader { to_store_id: to });
            }
            steps.push(OpStep::RemovePeer { store_id });
            self.admin_operator(inner, &region, format!("remove the peer on store {store_id}"), steps)
        })
    }

    /// Starts draining `store_id`: it goes offline (no new replicas; the replica checker moves its
    /// replicas away) and is marked removed once it holds none. Refused when the other stores could
    /// not take its replicas.
    pub fn remove_store(&self, store_id: u64) -> Result<StoreInfo, PlacementError> {
        self.change(|inner| {
            let now = now_ms();
            let stores = inner.store_infos(now, self.options.store_down_after);
            let store = stores.iter().find(|s| s.store_id == store_id).ok_or(PlacementError::UnknownStore(store_id))?;
            if store.state == StoreState::Removed as i32 || store.state == StoreState::Offline as i32 {
                return Ok(store.clone());
            }
            let others = stores.iter().filter(|s| s.store_id != store_id && s.state == StoreState::Up as i32).count();
            if store.region_count > 0 && others < self.options.replicas {
                return Err(PlacementError::Invalid(format!(
                    "store {store_id} holds {} regions and only {others} other stores are up; regions need {} replicas",
                    store.region_count, self.options.replicas
                )));
            }
            let stored = inner.stores.get_mut(&store_id).ok_or(PlacementError::UnknownStore(store_id))?;
            stored.state = StoreState::Offline as i32;
            inner.dirty.stores.insert(store_id);
            tracing::info!(store_id, regions = store.region_count, "store going offline: its replicas move away");
            let listed = inner.store_infos(now, self.options.store_down_after);
            Ok(listed.into_iter().find(|s| s.store_id == store_id).expect("the store was just found"))
        })
    }

    pub fn schedulers(&self) -> Vec<SchedulerInfo> {
        let inner = self.inner.lock();
        SCHEDULERS
            .iter()
            .map(|&name| SchedulerInfo {
                name: name.to_string(),
                enabled: inner.scheduler_enabled(name),
                can_disable: name != REPLICA_CHECK,
            })
            .collect()
    }

    /// Switches a scheduler on or off; persisted. Switching one off does not stop its running
    /// operators (they finish or time out).
    pub fn set_scheduler(&self, name: &str, enabled: bool) -> Result<Vec<SchedulerInfo>, PlacementError> {
        if !SCHEDULERS.contains(&name) {
            return Err(PlacementError::UnknownScheduler(name.to_string()));
        }
        if name == REPLICA_CHECK && !enabled {
            return Err(PlacementError::Invalid(
                "replica-check cannot be disabled: it is what keeps every region at its replicas".into(),
            ));
        }
        self.change(|inner| {
            let changed = if enabled {
                inner.disabled_schedulers.remove(name)
            } else {
                inner.disabled_schedulers.insert(name.to_string())
            };
            if changed {
                tracing::info!(scheduler = name, enabled, "scheduler switched");
                inner.dirty.meta = true;
            }
            Ok(())
        })?;
        Ok(self.schedulers())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::proto::{operator, OperatorState, SplitOperator};

    #[test]
    fn a_split_operator_goes_once_to_the_store_leading_the_region() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        beat(&p, stores[0], vec![leader_report(&region, stores[0], 2)]);
        assert!(matches!(p.split_region(999, vec![]), Err(PlacementError::UnknownRegion(999))));
        p.split_region(region.region_id, b"k".to_vec()).unwrap();
        // Another store, even one that claims leadership with a stale term, does not get it.
        assert!(beat(&p, stores[1], vec![leader_report(&region, stores[1], 1)]).is_empty());
        let operators = beat(&p, stores[0], vec![leader_report(&region, stores[0], 2)]);
        assert_eq!(operators.len(), 1);
        assert_eq!(operators[0].region_id, region.region_id);
        assert_eq!(operators[0].epoch, region.epoch);
        assert_eq!(operators[0].kind, Some(operator::Kind::Split(SplitOperator { split_key: b"k".to_vec() })));
        assert!(beat(&p, stores[0], vec![leader_report(&region, stores[0], 2)]).is_empty());
    }

    #[test]
    fn a_split_key_outside_the_region_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let (left, right) = split(&region, "m", 100);
        beat(&p, stores[0], vec![leader_report(&left, stores[0], 2), leader_report(&right, stores[0], 2)]);
        assert!(matches!(p.split_region(left.region_id, b"m".to_vec()), Err(PlacementError::Invalid(_))));
        assert!(matches!(p.split_region(right.region_id, b"m".to_vec()), Err(PlacementError::Invalid(_))));
        assert!(matches!(p.split_region(right.region_id, b"a".to_vec()), Err(PlacementError::Invalid(_))));
        p.split_region(right.region_id, b"x".to_vec()).unwrap();
        p.split_region(left.region_id, vec![]).unwrap();
    }

    #[test]
    fn a_leader_transfer_goes_to_the_leader_and_only_to_a_store_with_a_peer() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        assert!(matches!(p.transfer_leader(999, stores[1]), Err(PlacementError::UnknownRegion(999))));
        assert!(matches!(p.transfer_leader(region.region_id, 4242), Err(PlacementError::Invalid(_))));
        beat(&p, stores[0], vec![leader_report(&region, stores[0], 7)]);
        p.transfer_leader(region.region_id, stores[1]).unwrap();
        // A follower's heartbeat does not take it; the leader's does, until the transfer shows.
        assert!(beat(&p, stores[2], vec![]).is_empty());
        for _ in 0..2 {
            let operators = beat(&p, stores[0], vec![leader_report(&region, stores[0], 7)]);
            assert_eq!(operators.len(), 1);
            assert_eq!(
                operators[0].kind,
                Some(operator::Kind::TransferLeader(crate::proto::TransferLeaderOperator { to_store_id: stores[1] }))
            );
        }
        assert!(beat(&p, stores[1], vec![leader_report(&region, stores[1], 8)]).is_empty());
        assert_eq!(p.operators().1.last().unwrap().state, OperatorState::Success as i32);
    }

    #[test]
    fn admin_operators_check_their_request_and_removing_the_leader_moves_it_first() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let d = register(&p, 0, 20163);
        let id = region.region_id;
        assert!(matches!(p.add_peer(999, d), Err(PlacementError::UnknownRegion(999))));
        assert!(matches!(p.add_peer(id, 4242), Err(PlacementError::UnknownStore(4242))));
        assert!(
            matches!(p.add_peer(id, stores[1]), Err(PlacementError::Invalid(m)) if m.contains("already has a peer"))
        );
        assert!(matches!(p.remove_peer(id, d), Err(PlacementError::Invalid(m)) if m.contains("no peer on store")));
        silence(&p, d);
        assert!(matches!(p.add_peer(id, d), Err(PlacementError::Invalid(m)) if m.contains("is down")));

        let op = p.remove_peer(id, stores[0]).unwrap();
        assert_eq!(op.source, ADMIN);
        assert_eq!(op.steps.len(), 2);
        assert_eq!(
            (op.steps[0].kind, op.steps[0].store_id),
            (crate::proto::StepKind::TransferLeader as i32, stores[1])
        );
        // An administrator's next request replaces it.
        let op2 = p.remove_peer(id, stores[2]).unwrap();
        let (running, history) = p.operators();
        assert_eq!(running.iter().map(|o| o.operator_id).collect::<Vec<_>>(), vec![op2.operator_id]);
        assert_eq!((history[0].operator_id, history[0].state), (op.operator_id, OperatorState::Replaced as i32));
        assert!(matches!(
            lead(&p, stores[0], &region, &[]).as_slice(),
            [Operator { kind: Some(operator::Kind::RemovePeer(_)), .. }]
        ));
        let single = Region { peers: vec![region.peers[0]], ..region.clone() };
        let one = RegionEpoch { conf_ver: 10, version: 1 };
        beat(&p, stores[0], vec![leader_report(&Region { epoch: Some(one), ..single }, stores[0], 5)]);
        assert!(matches!(p.remove_peer(id, stores[0]), Err(PlacementError::Invalid(m)) if m.contains("only peer")));
    }

    #[test]
    fn store_remove_drains_the_store_then_marks_it_removed_for_good() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        // Only two other stores for three replicas: refused.
        assert!(matches!(p.remove_store(stores[0]), Err(PlacementError::Invalid(m)) if m.contains("only 2 other")));
        let d = register(&p, 0, 20163);
        p.set_scheduler(BALANCE_REGION, false).unwrap();
        // Store 0 leads the region: add on d, hand leadership over, remove.
        let offline = p.remove_store(stores[0]).unwrap();
        assert_eq!(offline.state, StoreState::Offline as i32);
        assert_eq!(p.stores()[0].state, StoreState::Offline as i32, "offline survives listing");
        let created = p.schedule().unwrap();
        assert_eq!(created.len(), 1);
        let kinds: Vec<i32> = created[0].steps.iter().map(|s| s.kind).collect();
        use crate::proto::StepKind;
        assert_eq!(kinds, vec![StepKind::AddPeer as i32, StepKind::TransferLeader as i32, StepKind::RemovePeer as i32]);
        let peer = added_peer(&lead(&p, stores[0], &region, &[]));
        assert_eq!(peer.store_id, d);
        let grown = with_peer(&region, peer);
        assert!(matches!(
            lead(&p, stores[0], &grown, &[]).as_slice(),
            [Operator { kind: Some(operator::Kind::TransferLeader(_)), .. }]
        ));
        let to = created[0].steps[1].store_id;
        let removal = lead(&p, to, &grown, &[]);
        assert!(matches!(removal.as_slice(), [Operator { kind: Some(operator::Kind::RemovePeer(_)), .. }]));
        lead(&p, to, &without(&grown, stores[0]), &[]);
        assert_eq!(p.stores()[0].region_count, 0);
        p.schedule().unwrap();
        assert_eq!(p.stores()[0].state, StoreState::Removed as i32);
        // A removed store may not come back, even after a restart of placement.
        drop(p);
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        assert_eq!(p.stores()[0].state, StoreState::Removed as i32);
        assert!(matches!(
            p.register_store(&RegisterStoreRequest {
                store_id: stores[0],
                raft_addr: "127.0.0.1:1".into(),
                http_addr: "127.0.0.1:2".into(),
                version: "test".into(),
                ..Default::default()
            }),
            Err(PlacementError::StoreRemoved(_))
        ));
        let req = StoreHeartbeatRequest { store_id: stores[0], ..Default::default() };
        assert!(matches!(p.store_heartbeat(&req), Err(PlacementError::StoreRemoved(_))));
        assert_eq!(p.remove_store(stores[0]).unwrap().state, StoreState::Removed as i32, "removing twice is fine");
    }
}
