//! Helpers for the state tests: a placement with stores, and the reports its stores send.

use std::path::Path;

use super::*;
use crate::proto::{operator, PeerReport};

pub(super) fn register(p: &Placement, store_id: u64, port: u16) -> u64 {
    let req = RegisterStoreRequest {
        store_id,
        raft_addr: format!("127.0.0.1:{port}"),
        http_addr: format!("127.0.0.1:{}", port + 1000),
        version: "test".into(),
        ..Default::default()
    };
    p.register_store(&req).unwrap().store_id
}

/// A registration claiming `store_id` (0: a new store) with `secret`, in `cluster_id` (0: unknown).
pub(super) fn claim(store_id: u64, secret: &[u8], cluster_id: u64) -> RegisterStoreRequest {
    RegisterStoreRequest {
        store_id,
        raft_addr: "127.0.0.1:20160".into(),
        http_addr: "127.0.0.1:3000".into(),
        version: "test".into(),
        cluster_id,
        store_secret: secret.to_vec(),
        auth_revision: 0,
        registration_token: Vec::new(),
    }
}

/// A placement with three registered stores and the bootstrapped region grown to a peer on each
/// (as the replica checker would have it, reported by store 0 leading at term 1); returns it, the
/// store ids and the region.
pub(super) fn three_stores(dir: &Path) -> (Placement, Vec<u64>, Region) {
    let p = Placement::open(dir, PlacementOptions::default()).unwrap();
    let stores: Vec<u64> = (0..3).map(|i| register(&p, 0, 20160 + i)).collect();
    let mut region = p.regions()[0].region.clone().unwrap();
    for &store_id in &stores[1..] {
        region.peers.push(Peer { peer_id: p.alloc_id().unwrap(), store_id });
    }
    region.epoch = Some(RegionEpoch { conf_ver: 3, version: 1 });
    beat(&p, stores[0], vec![leader_report(&region, stores[0], 1)]);
    (p, stores, region)
}

/// `store_id`'s peer of `region` reports that it leads it.
pub(super) fn leader_report(region: &Region, store_id: u64, term: u64) -> PeerReport {
    let leader_peer_id = region.peers.iter().find(|p| p.store_id == store_id).unwrap().peer_id;
    PeerReport { region: Some(region.clone()), leader_peer_id, term, is_leader: true, ..Default::default() }
}

pub(super) fn beat(p: &Placement, store_id: u64, peers: Vec<PeerReport>) -> Vec<Operator> {
    p.store_heartbeat(&StoreHeartbeatRequest { store_id, peers, ..Default::default() }).unwrap()
}

/// What is on disk right now.
pub(super) fn stored(p: &Placement) -> PlacementState {
    let (env, db) = p.sink.storage();
    let txn = env.read_txn().unwrap();
    super::persist::read_records(&txn, db).unwrap().unwrap()
}

pub(super) fn split(region: &Region, at: &str, new_region_id: u64) -> (Region, Region) {
    let epoch = region.epoch.map(|e| RegionEpoch { version: e.version + 1, ..e });
    let left = Region { end_key: at.as_bytes().to_vec(), epoch, ..region.clone() };
    let right = Region {
        region_id: new_region_id,
        start_key: at.as_bytes().to_vec(),
        epoch,
        peers: region.peers.iter().map(|p| Peer { peer_id: p.peer_id + 1000, store_id: p.store_id }).collect(),
        ..region.clone()
    };
    (left, right)
}

/// `region` as its leader on `store_id` reports it, with `pending` peers; returns the operators.
pub(super) fn lead(p: &Placement, store_id: u64, region: &Region, pending: &[Peer]) -> Vec<Operator> {
    let report = PeerReport { pending_peers: pending.to_vec(), ..leader_report(region, store_id, 5) };
    beat(p, store_id, vec![report])
}

pub(super) fn with_peer(region: &Region, peer: Peer) -> Region {
    let mut grown = region.clone();
    grown.peers.push(peer);
    let epoch = grown.epoch.unwrap();
    grown.epoch = Some(RegionEpoch { conf_ver: epoch.conf_ver + 1, ..epoch });
    grown
}

pub(super) fn without(region: &Region, store_id: u64) -> Region {
    let mut shrunk = region.clone();
    shrunk.peers.retain(|p| p.store_id != store_id);
    let epoch = shrunk.epoch.unwrap();
    shrunk.epoch = Some(RegionEpoch { conf_ver: epoch.conf_ver + 1, ..epoch });
    shrunk
}

pub(super) fn added_peer(ops: &[Operator]) -> Peer {
    match ops {
        [Operator { kind: Some(operator::Kind::AddPeer(add)), .. }] => add.peer.unwrap(),
        other => panic!("expected one add-peer operator: {other:?}"),
    }
}

/// The store silent since the epoch: down for any store down time.
pub(super) fn silence(p: &Placement, store_id: u64) {
    p.inner.lock().stores.get_mut(&store_id).unwrap().last_heartbeat_ms = 1;
}

/// Replaces the bootstrapped region with `layouts.len()` regions tiling the keyspace (`k01`, `k02`,
/// ... as split keys), each on the stores given, led by the store given, as their leaders report
/// them (after splits and membership changes: version and conf_ver 10). Returns the regions.
pub(super) fn regions_on(p: &Placement, layouts: &[(&[u64], u64)]) -> Vec<Region> {
    let first = p.regions()[0].region.clone().unwrap();
    let key = |i: usize| if i == 0 || i == layouts.len() { Vec::new() } else { format!("k{i:02}").into_bytes() };
    let regions: Vec<Region> = layouts
        .iter()
        .enumerate()
        .map(|(i, (stores, _))| Region {
            region_id: if i == 0 { first.region_id } else { p.alloc_id().unwrap() },
            start_key: key(i),
            end_key: key(i + 1),
            epoch: Some(RegionEpoch { conf_ver: 10, version: 10 }),
            peers: stores.iter().map(|&store_id| Peer { peer_id: p.alloc_id().unwrap(), store_id }).collect(),
        })
        .collect();
    for (region, (_, leader)) in regions.iter().zip(layouts) {
        beat(p, *leader, vec![leader_report(region, *leader, 1)]);
    }
    regions
}

/// The operators created by a round whose source is `source`, as (region id, step kinds and stores).
pub(super) fn plans_of(created: &[OperatorInfo], source: &str) -> Vec<(u64, Vec<(i32, u64)>)> {
    created
        .iter()
        .filter(|op| op.source == source)
        .map(|op| (op.region_id, op.steps.iter().map(|s| (s.kind, s.store_id)).collect()))
        .collect()
}

/// Splits `region` at "h" and "p" (new ids 100 and 101), each piece reported by `leader`; returns the
/// three regions in key order.
pub(super) fn split_in_three(p: &Placement, region: &Region, leader: u64) -> Vec<Region> {
    let mut regions = vec![region.clone()];
    for (i, at) in ["h", "p"].iter().enumerate() {
        let last = regions.pop().unwrap();
        let (left, right) = split(&last, at, 100 + i as u64);
        regions.extend([left, right]);
        beat(p, leader, regions.iter().map(|r| leader_report(r, leader, 1)).collect());
    }
    regions
}
