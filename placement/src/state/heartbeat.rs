//! The stores' side: registration (and bootstrapping the first region), store heartbeats with their
//! region reports, and the peers a store reports that their regions no longer have.
//!
//! A store reports a region when something about it changed since it last reported it, plus a slow
//! rotation of all of them (see the node's `cluster_link::reports`), so a heartbeat costs what
//! changed, not what exists: a report that changes nothing writes nothing and wakes no scheduling
//! round, and operators are found by the regions they run on, not by the reports. A store that has
//! not sent a full report since this process opened the state is asked for one
//! ([`Placement::wants_full_report`]): after a restart, sizes and pending peers are unknown.

use super::*;

impl Placement {
    /// Registers a new store (store_id 0) or updates a known one's addresses. The first store to
    /// register bootstraps the first region, with one peer on it: the replica checker grows it to
    /// `replicas` as more stores join. A known store id must come with its secret (see `identity`).
    pub fn register_store(&self, req: &RegisterStoreRequest) -> Result<RegisterStoreResponse, PlacementError> {
        self.register_store_bound(req, None)
    }

    /// [`Placement::register_store`] from a caller whose client certificate has `identity` (see
    /// `cert_identity`): checked against the store's binding, or recorded as it, in the same write.
    pub(super) fn register_store_bound(
        &self,
        req: &RegisterStoreRequest,
        identity: Option<&str>,
    ) -> Result<RegisterStoreResponse, PlacementError> {
        if req.raft_addr.is_empty() || req.http_addr.is_empty() {
            return Err(PlacementError::Invalid("a store needs a raft and an HTTP address".into()));
        }
        self.change(|inner| {
            // A retry of a first registration whose reply was lost: the store its first attempt made.
            let retried = identity::earlier_attempt(inner, req);
            let store_id = match retried {
                Some(store_id) => store_id,
                None if req.store_id == 0 => inner.alloc(),
                None => req.store_id,
            };
            let known = inner.stores.get(&store_id);
            if known.is_some_and(|s| s.state == StoreState::Removed as i32) {
                return Err(PlacementError::StoreRemoved(store_id));
            }
            let admitted = identity::admit(inner, store_id, req, retried.is_some())?;
            let registration_token_sha256 = identity::token_sha256(inner, store_id, req);
            let cert_identity = cert_identity::admit(inner, store_id, identity)?;
            let known = inner.stores.get(&store_id);
            let used_bytes = known.map_or(0, |s| s.used_bytes);
            // A draining store stays offline across restarts.
            let state = known.map_or(StoreState::Up as i32, |s| s.state);
            let info = StoreInfo {
                store_id,
                raft_addr: req.raft_addr.clone(),
                http_addr: req.http_addr.clone(),
                last_heartbeat_ms: now_ms(),
                state,
                version: req.version.clone(),
                used_bytes,
                secret_sha256: admitted.secret_sha256,
                cert_identity,
                registration_token_sha256,
                ..Default::default()
            };
            inner.stores.insert(store_id, info);
            inner.dirty.stores.insert(store_id);
            if !inner.bootstrapped {
                let region_id = inner.alloc();
                let peer_id = inner.alloc();
                let region = Region {
                    region_id,
                    start_key: Vec::new(),
                    end_key: Vec::new(),
                    epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
                    peers: vec![Peer { peer_id, store_id }],
                };
                tracing::info!(region_id, store_id, "bootstrapping the first region");
                inner.regions.insert(RegionInfo { region: Some(region), ..Default::default() });
                inner.dirty.regions.insert(region_id);
                inner.bootstrapped = true;
                inner.dirty.meta = true;
            }
            Ok(RegisterStoreResponse {
                store_id,
                cluster_id: inner.cluster_id,
                store_secret: admitted.new_secret,
                // The service adds the auth state (see `auth_newer_than`).
                auth: None,
            })
        })
    }

    /// A store is alive and reports the peers that changed. Each report of a leader is a region
    /// heartbeat for the region tree (stale ones are ignored; see `region_tree`); so is a follower's
    /// report of a region placement does not know yet. Returns, for each region placement records
    /// this store leading, the current step of its operator.
    pub fn store_heartbeat(&self, req: &StoreHeartbeatRequest) -> Result<Vec<Operator>, PlacementError> {
        let now = now_ms();
        self.change(|inner| self.on_store_heartbeat(inner, req, now))
    }

    fn on_store_heartbeat(
        &self,
        inner: &mut Inner,
        req: &StoreHeartbeatRequest,
        now: u64,
    ) -> Result<Vec<Operator>, PlacementError> {
        let store_id = req.store_id;
        let store = inner.stores.get_mut(&store_id).ok_or(PlacementError::UnknownStore(store_id))?;
        if store.state == StoreState::Removed as i32 {
            return Err(PlacementError::StoreRemoved(store_id));
        }
        store.last_heartbeat_ms = now;
        store.used_bytes = req.used_bytes;
        if req.full_report {
            inner.full_reported.insert(store_id);
        }
        // A split's leader reports both halves at once (PD's ReportSplit): the left one as their
        // leader, the right one as a peer still electing its leader, unknown to placement. Unknown
        // regions go first: the right half takes its part of the parent's range before the left half
        // shrinks it, so no key is ever without a region, and it gets half the parent's size.
        let mut reports: Vec<(&PeerReport, &Region)> =
            req.peers.iter().filter_map(|report| Some((report, report.region.as_ref()?))).collect();
        reports.sort_by_key(|(_, region)| inner.regions.get(region.region_id).is_some());
        for (peer, region) in reports {
            let region_id = region.region_id;
            let known = inner.regions.get(region_id).is_some();
            let report = match (peer.is_leader, known) {
                (true, _) => RegionReport {
                    region: region.clone(),
                    leader_store_id: store_id,
                    leader_peer_id: peer.leader_peer_id,
                    term: peer.term,
                    approximate_size: peer.approximate_size,
                    approximate_keys: peer.approximate_keys,
                },
                // Recorded without a leader (and term 0, so its leader's first report, whatever
                // its term, takes over); its stale-peer check is `stale_peers`'s job.
                (false, false) => RegionReport { region: region.clone(), ..Default::default() },
                (false, true) => continue,
            };
            match inner.regions.heartbeat(&report) {
                HeartbeatOutcome::Stale => {
                    tracing::debug!(region_id, store_id, epoch = ?region.epoch, "stale region heartbeat ignored");
                    continue;
                }
                HeartbeatOutcome::Unchanged => {}
                // Sizes weigh in the region balancer (a node reports them only when they moved enough).
                HeartbeatOutcome::StatsOnly => inner.round.changed(),
                HeartbeatOutcome::Updated { touched } => {
                    tracing::debug!(region_id, store_id, epoch = ?region.epoch, ?touched, "region updated");
                    for gone in touched.iter().filter(|&&r| inner.regions.get(r).is_none()) {
                        inner.pending.remove(gone);
                    }
                    inner.dirty.regions.extend(touched);
                    inner.dirty.regions.insert(region_id);
                }
            }
            if peer.is_leader && inner.pending.get(&region_id) != Some(&peer.pending_peers) {
                inner.pending.insert(region_id, peer.pending_peers.clone());
                inner.round.changed();
            }
        }
        // Move each operator of a region this store leads (as recorded now) along, and hand over
        // its current step: every heartbeat, whether the region was reported or not (it is reported
        // when it changes, and an operator's step is judged against what placement knows of it).
        let led: Vec<u64> = inner
            .operators
            .running()
            .map(|op| op.region_id)
            .filter(|&region_id| inner.regions.get(region_id).is_some_and(|info| info.leader_store_id == store_id))
            .collect();
        let mut operators = Vec::new();
        for region_id in led {
            let Some(region) = inner.regions.get(region_id).and_then(|info| info.region.as_ref()) else { continue };
            let pending = inner.pending.get(&region_id).map_or(&[][..], Vec::as_slice);
            let state = RegionState { region, leader_store_id: store_id, pending_peers: pending };
            operators.extend(inner.operators.on_heartbeat(&state, now));
        }
        Ok(operators)
    }

    /// Whether placement wants `store_id`'s next heartbeat to report every peer it holds: it has not
    /// had a full report from it since it opened its state (a restart forgets sizes and pending
    /// peers, and misses what changed while it was down).
    pub fn wants_full_report(&self, store_id: u64) -> bool {
        !self.inner.lock().full_reported.contains(&store_id)
    }

    /// The peers in a store's report that their regions no longer have: placement's record of the
    /// region (from its leader) has a newer `conf_ver` and does not list the peer. Such a peer was
    /// removed while its store was down or cut off; its own region members normally tell it so with a
    /// tombstone message, but if every member it knows has left too, only placement can.
    pub fn stale_peers(&self, req: &StoreHeartbeatRequest) -> Vec<StalePeer> {
        let inner = self.inner.lock();
        let mut stale = Vec::new();
        for report in req.peers.iter().filter(|p| !p.is_leader) {
            let Some(reported) = &report.region else { continue };
            let Some(peer) = reported.peers.iter().find(|p| p.store_id == req.store_id) else { continue };
            let Some(known) = inner.regions.get(reported.region_id).and_then(|info| info.region.as_ref()) else {
                continue;
            };
            let conf_ver = |r: &Region| r.epoch.map_or(0, |e| e.conf_ver);
            if conf_ver(known) > conf_ver(reported) && !known.peers.iter().any(|p| p.peer_id == peer.peer_id) {
                tracing::info!(
                    region_id = known.region_id,
                    peer_id = peer.peer_id,
                    store_id = req.store_id,
                    "telling a store its peer was removed"
                );
                stale.push(StalePeer { region_id: known.region_id, peer: Some(*peer), epoch: known.epoch });
            }
        }
        stale
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use std::sync::Arc;

    use crate::proto::PeerReport;

    #[test]
    fn the_first_store_bootstraps_the_first_region_with_one_peer() {
        let dir = tempfile::tempdir().unwrap();
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let a = register(&p, 0, 20160);
        let regions = p.regions();
        assert_eq!(regions.len(), 1);
        let region = regions[0].region.clone().unwrap();
        assert_eq!(region.peers.len(), 1);
        assert_eq!(region.peers[0].store_id, a);
        assert_eq!(region.epoch, Some(RegionEpoch { conf_ver: 1, version: 1 }));
        // Ids never repeat.
        let mut ids = vec![a, region.region_id, region.peers[0].peer_id];
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids.len(), 3);
        // More stores do not bootstrap another region.
        register(&p, 0, 20161);
        register(&p, 0, 20162);
        assert_eq!(p.regions().len(), 1);
        assert_eq!(p.stores().len(), 3);
    }

    #[test]
    fn re_registering_updates_addresses_without_a_new_id() {
        let dir = tempfile::tempdir().unwrap();
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let at = |store_id, port: u16, store_secret: Vec<u8>| RegisterStoreRequest {
            store_id,
            raft_addr: format!("127.0.0.1:{port}"),
            http_addr: format!("127.0.0.1:{}", port + 1000),
            store_secret,
            ..Default::default()
        };
        let first = p.register_store(&at(0, 20160, Vec::new())).unwrap();
        // As a restarted node does: with the secret its first registration got.
        let again = p.register_store(&at(first.store_id, 30000, first.store_secret)).unwrap();
        assert_eq!(again.store_id, first.store_id);
        let stores = p.stores();
        assert_eq!(stores.len(), 1);
        assert_eq!(stores[0].raft_addr, "127.0.0.1:30000");
    }

    #[test]
    fn leaders_are_recorded_from_heartbeats_and_stale_reports_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        beat(&p, stores[0], vec![leader_report(&region, stores[0], 7)]);
        assert_eq!((p.regions()[0].leader_store_id, p.regions()[0].term), (stores[0], 7));
        // An older term does not take the leadership back.
        beat(&p, stores[1], vec![leader_report(&region, stores[1], 6)]);
        assert_eq!((p.regions()[0].leader_store_id, p.regions()[0].term), (stores[0], 7));
        // Followers' reports are not region heartbeats.
        beat(&p, stores[1], vec![PeerReport { is_leader: false, ..leader_report(&region, stores[1], 8) }]);
        assert_eq!(p.regions()[0].leader_store_id, stores[0]);
        assert!(matches!(
            p.store_heartbeat(&StoreHeartbeatRequest { store_id: 999, ..Default::default() }),
            Err(PlacementError::UnknownStore(999))
        ));
    }

    #[test]
    fn stores_report_their_region_and_leader_counts_and_used_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        p.store_heartbeat(&StoreHeartbeatRequest {
            store_id: stores[1],
            peers: vec![leader_report(&region, stores[1], 2)],
            used_bytes: 12345,
            ..Default::default()
        })
        .unwrap();
        let listed = p.stores();
        assert_eq!(listed.iter().map(|s| s.store_id).collect::<Vec<_>>(), stores);
        assert!(listed.iter().all(|s| s.region_count == 1));
        assert_eq!(listed.iter().map(|s| s.leader_count).collect::<Vec<_>>(), vec![0, 1, 0]);
        assert_eq!(listed[1].used_bytes, 12345);
        // A split doubles every store's region count; the leader of both leads two.
        let (left, right) = split(&region, "m", 100);
        beat(&p, stores[1], vec![leader_report(&left, stores[1], 2), leader_report(&right, stores[1], 2)]);
        let listed = p.stores();
        assert!(listed.iter().all(|s| s.region_count == 2));
        assert_eq!(listed.iter().map(|s| s.leader_count).collect::<Vec<_>>(), vec![0, 2, 0]);
    }

    #[test]
    fn a_split_reported_by_heartbeat_is_found_by_key_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (left, right) = {
            let (p, stores, region) = three_stores(dir.path());
            beat(&p, stores[0], vec![leader_report(&region, stores[0], 2)]);
            let (left, right) = split(&region, "m", p.alloc_id().unwrap());
            beat(&p, stores[0], vec![leader_report(&left, stores[0], 2), leader_report(&right, stores[0], 2)]);
            assert_eq!(p.region_by_key(b"a").unwrap().region, Some(left.clone()));
            assert_eq!(p.region_by_key(b"m").unwrap().region, Some(right.clone()));
            assert_eq!(p.region_by_key(b"\xff").unwrap().region, Some(right.clone()));
            // A late report of the parent as it was before the split is stale.
            beat(&p, stores[0], vec![leader_report(&region, stores[0], 2)]);
            assert_eq!(p.regions().len(), 2);
            (left, right)
        };
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let regions: Vec<Region> = p.regions().into_iter().filter_map(|r| r.region).collect();
        assert_eq!(regions, vec![left, right.clone()]);
        assert_eq!(p.region_by_key(b"z").unwrap().region, Some(right));
    }

    #[test]
    fn size_changes_stay_in_memory_and_leader_changes_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        beat(&p, stores[0], vec![leader_report(&region, stores[0], 2)]);
        assert_eq!(stored(&p).regions[0].leader_store_id, stores[0]);
        let bigger = PeerReport {
            approximate_size: Some(1 << 20),
            approximate_keys: Some(10),
            ..leader_report(&region, stores[0], 2)
        };
        beat(&p, stores[0], vec![bigger]);
        assert_eq!(p.regions()[0].approximate_size, 1 << 20);
        assert_eq!(stored(&p).regions[0].approximate_size, 0, "a size change alone is not worth a write");
        beat(&p, stores[2], vec![leader_report(&region, stores[2], 3)]);
        assert_eq!(stored(&p).regions[0].leader_store_id, stores[2]);
    }

    #[test]
    fn an_operator_overtaken_by_a_new_epoch_is_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        beat(&p, stores[0], vec![leader_report(&region, stores[0], 2)]);
        p.split_region(region.region_id, b"k".to_vec()).unwrap();
        // The region splits elsewhere before its leader heard of the operator.
        let (left, right) = split(&region, "c", 100);
        let operators =
            beat(&p, stores[0], vec![leader_report(&left, stores[0], 2), leader_report(&right, stores[0], 2)]);
        assert!(operators.is_empty());
    }

    #[test]
    fn concurrent_heartbeats_keep_the_tree_consistent() {
        // Eight threads report the pieces of a 64-way split of the first region, each in its own
        // order and with a stale pre-split view mixed in; whatever the interleaving, placement ends
        // with exactly the final regions, in key order, and counts that match them.
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let p = Arc::new(p);
        let finals: Vec<Region> = (0..64u64)
            .map(|i| {
                let key = |i: u64| if i == 0 || i == 64 { Vec::new() } else { format!("k{i:02}").into_bytes() };
                let region_id = if i == 0 { region.region_id } else { 1000 + i };
                Region {
                    region_id,
                    start_key: key(i),
                    end_key: key(i + 1),
                    epoch: Some(RegionEpoch { version: 2, ..region.epoch.unwrap() }),
                    peers: region.peers.iter().map(|p| Peer { peer_id: p.peer_id + 100 * i, ..*p }).collect(),
                }
            })
            .collect();
        std::thread::scope(|scope| {
            for t in 0..8usize {
                let (p, stores, finals, region) = (&p, &stores, &finals, &region);
                scope.spawn(move || {
                    let mut order: Vec<usize> = (0..finals.len()).collect();
                    order.sort_by_key(|i| (i * 37 + t * 11) % 67);
                    for (n, i) in order.into_iter().enumerate() {
                        let store_id = stores[i % 3];
                        let mut peers = vec![leader_report(&finals[i], store_id, 2)];
                        if n == t * 5 {
                            peers.push(leader_report(region, store_id, 2));
                        }
                        let req = StoreHeartbeatRequest { store_id, peers, used_bytes: t as u64, ..Default::default() };
                        p.store_heartbeat(&req).unwrap();
                        p.inner.lock().regions.check_invariants();
                    }
                });
            }
        });
        let regions: Vec<Region> = p.regions().into_iter().filter_map(|r| r.region).collect();
        assert_eq!(regions, finals);
        let listed = p.stores();
        assert!(listed.iter().all(|s| s.region_count == 64));
        assert_eq!(listed.iter().map(|s| s.leader_count).sum::<u64>(), 64);
        assert_eq!(stored(&p).regions.len(), 64);
    }

    /// Issue 15, item 5: after a restart placement knows the regions' ranges, peers and leaders but
    /// not their sizes or pending peers, nor what changed while it was down: every store is asked
    /// for a full report once, and only until it sends one.
    #[test]
    fn a_full_report_is_asked_of_every_store_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (stores, region) = {
            let (p, stores, region) = three_stores(dir.path());
            assert!(stores.iter().all(|&s| p.wants_full_report(s)), "a new placement has no full view");
            let full = |store_id| StoreHeartbeatRequest { store_id, full_report: true, ..Default::default() };
            for &store_id in &stores {
                p.store_heartbeat(&full(store_id)).unwrap();
            }
            assert!(!stores.iter().any(|&s| p.wants_full_report(s)));
            (stores, region)
        };
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        assert!(stores.iter().all(|&s| p.wants_full_report(s)), "a restarted placement asks again");
        // A heartbeat reporting only what changed does not count.
        beat(&p, stores[0], vec![leader_report(&region, stores[0], 1)]);
        assert!(p.wants_full_report(stores[0]));
        let mut measured = leader_report(&region, stores[0], 1);
        measured.approximate_size = Some(1 << 20);
        let full = StoreHeartbeatRequest {
            store_id: stores[0],
            peers: vec![measured],
            full_report: true,
            ..Default::default()
        };
        p.store_heartbeat(&full).unwrap();
        assert!(!p.wants_full_report(stores[0]) && p.wants_full_report(stores[1]));
        assert_eq!(p.region(region.region_id).unwrap().approximate_size, 1 << 20);
    }

    #[test]
    fn silent_stores_are_reported_down() {
        let dir = tempfile::tempdir().unwrap();
        let options = PlacementOptions { store_down_after: Duration::from_millis(0), ..Default::default() };
        let p = Placement::open(dir.path(), options).unwrap();
        register(&p, 0, 20160);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(p.stores()[0].state, StoreState::Down as i32);
    }

    #[test]
    fn a_peer_reported_under_an_older_membership_that_drops_it_is_stale() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        // The leader (store 0) reports the region after store 2's peer was removed.
        let removed = *region.peers.iter().find(|peer| peer.store_id == stores[2]).unwrap();
        let mut now = region.clone();
        now.peers.retain(|peer| peer.store_id != stores[2]);
        now.epoch = Some(RegionEpoch { conf_ver: 4, version: 1 });
        beat(&p, stores[0], vec![leader_report(&now, stores[0], 1)]);
        let follower = |region: &Region| PeerReport { region: Some(region.clone()), ..Default::default() };
        let req = |store_id, region: &Region| StoreHeartbeatRequest {
            store_id,
            peers: vec![follower(region)],
            ..Default::default()
        };
        // Store 2 comes back still holding the old membership: told its peer is stale.
        let stale = p.stale_peers(&req(stores[2], &region));
        assert_eq!(stale, vec![StalePeer { region_id: region.region_id, peer: Some(removed), epoch: now.epoch }]);
        // A member reporting the old epoch (it lags) is still a member; one up to date is fine too.
        assert!(p.stale_peers(&req(stores[1], &region)).is_empty());
        assert!(p.stale_peers(&req(stores[1], &now)).is_empty());
        // Leaders' reports are region heartbeats, never judged stale here; unknown regions neither.
        let mut unknown = region.clone();
        unknown.region_id = 9999;
        assert!(p.stale_peers(&req(stores[2], &unknown)).is_empty());
    }

    /// Issue 14, item 10: `region list` showed `SIZE 0 B` for regions holding keys. A new leader (or a
    /// split's half) has not measured its region yet and says so; placement keeps the last size.
    #[test]
    fn a_leader_that_has_not_measured_its_region_keeps_its_last_known_size() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let mut measured = leader_report(&region, stores[0], 2);
        measured.approximate_size = 4096_u64.into();
        measured.approximate_keys = 40_u64.into();
        beat(&p, stores[0], vec![measured]);
        // Leadership moves to store 1, which reports before its first measure.
        beat(&p, stores[1], vec![leader_report(&region, stores[1], 3)]);
        let info = p.region(region.region_id).unwrap();
        assert_eq!((info.leader_store_id, info.approximate_size, info.approximate_keys), (stores[1], 4096, 40));
    }

    #[test]
    fn a_split_s_halves_share_the_parent_s_size_until_they_are_measured() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let mut measured = leader_report(&region, stores[0], 2);
        measured.approximate_size = 8000_u64.into();
        measured.approximate_keys = 80_u64.into();
        beat(&p, stores[0], vec![measured]);
        let (left, right) = split(&region, "m", p.alloc_id().unwrap());
        beat(&p, stores[0], vec![leader_report(&left, stores[0], 2), leader_report(&right, stores[0], 2)]);
        let sizes: Vec<(u64, u64)> = p.regions().iter().map(|r| (r.approximate_size, r.approximate_keys)).collect();
        assert_eq!(sizes, vec![(4000, 40), (4000, 40)]);
    }

    /// Issue 14, item 10: right after a split, `region find` for a key in the right half answered "no
    /// known region holds the key" until the right half's new leader reported. The split's leader
    /// reports both halves at once (as PD's ReportSplit): its peer of the right half, still electing
    /// its leader, is in the same heartbeat.
    #[test]
    fn both_halves_of_a_split_are_known_from_the_heartbeat_that_shows_it() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let (left, right) = split(&region, "m", p.alloc_id().unwrap());
        let electing = PeerReport { region: Some(right.clone()), term: 2, ..Default::default() };
        beat(&p, stores[0], vec![leader_report(&left, stores[0], 2), electing]);
        let found = p.region_by_key(b"z").expect("the right half is known");
        assert_eq!((found.region, found.leader_store_id), (Some(right.clone()), 0));
        assert_eq!(p.regions().iter().filter_map(|r| r.region.clone()).collect::<Vec<_>>(), vec![left, right.clone()]);
        assert!(p.stores().iter().all(|s| s.region_count == 2));
        // Its leader's first report then records the leader; a follower's report changes nothing.
        beat(&p, stores[1], vec![PeerReport { region: Some(right.clone()), term: 3, ..Default::default() }]);
        assert_eq!(p.region(right.region_id).unwrap().leader_store_id, 0);
        beat(&p, stores[1], vec![leader_report(&right, stores[1], 3)]);
        assert_eq!(p.region(right.region_id).unwrap().leader_store_id, stores[1]);
    }

    #[test]
    fn a_split_s_right_half_reported_first_by_another_store_leaves_no_hole() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let (left, right) = split(&region, "m", p.alloc_id().unwrap());
        // A follower store applied the split first and reports its peer of the right half.
        beat(&p, stores[2], vec![PeerReport { region: Some(right.clone()), term: 2, ..Default::default() }]);
        let parent = p.region_by_key(b"a").expect("the left part is still the parent's");
        assert_eq!((parent.region.as_ref().unwrap().region_id, parent.leader_store_id), (region.region_id, stores[0]));
        assert_eq!(parent.region.unwrap().end_key, b"m", "the parent keeps what the right half does not cover");
        assert_eq!(p.region_by_key(b"z").unwrap().region, Some(right.clone()));
        beat(&p, stores[0], vec![leader_report(&left, stores[0], 2)]);
        assert_eq!(p.regions().iter().filter_map(|r| r.region.clone()).collect::<Vec<_>>(), vec![left, right]);
    }

    #[test]
    fn a_follower_s_report_never_brings_back_a_region_placement_has_moved_past() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let (left, right) = split(&region, "m", p.alloc_id().unwrap());
        beat(&p, stores[0], vec![leader_report(&left, stores[0], 2), leader_report(&right, stores[0], 2)]);
        // The right half splits again; a lagging follower still reports it whole, and another one
        // reports a region id nobody knows over an older epoch.
        let (right_left, right_right) = split(&right, "t", p.alloc_id().unwrap());
        beat(&p, stores[0], vec![leader_report(&right_left, stores[0], 2), leader_report(&right_right, stores[0], 2)]);
        let lagging = |r: &Region| PeerReport { region: Some(r.clone()), term: 2, ..Default::default() };
        let ghost = Region { region_id: 9999, ..right.clone() };
        beat(&p, stores[2], vec![lagging(&right), lagging(&ghost), lagging(&region)]);
        let now: Vec<Region> = p.regions().into_iter().filter_map(|r| r.region).collect();
        assert_eq!(now, vec![left, right_left, right_right]);
    }
}
