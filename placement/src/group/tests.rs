//! Three replicas in one process over an in-memory network that can cut members off: a random
//! sequence of placement commands with leader changes (a partition, a transfer) in the middle must
//! leave every replica with the same records, and no id handed out twice, also across a restart.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use raft::eraftpb::Message;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use super::*;
use crate::auth::{PasswordCost, PasswordHash};
use crate::proto::{Peer, PeerReport, Region, RegionEpoch, RegisterStoreRequest, StoreHeartbeatRequest};

/// Delivers messages between the members' inboxes, except to or from a member that is cut off.
#[derive(Default)]
struct Net {
    inboxes: Mutex<HashMap<u64, Inbox>>,
    cut: Mutex<HashSet<u64>>,
}

struct MemTransport {
    from: u64,
    net: Arc<Net>,
}

impl RaftTransport for MemTransport {
    fn send(&mut self, messages: Vec<Message>) {
        let cut = self.net.cut.lock().clone();
        let inboxes = self.net.inboxes.lock();
        for message in messages {
            let to = message.to;
            if cut.contains(&self.from) || cut.contains(&to) {
                continue;
            }
            if let Some(inbox) = inboxes.get(&to) {
                inbox.send(Input::Step(message));
            }
        }
    }
}

fn logger() -> slog::Logger {
    slog::Logger::root(slog::Discard, slog::o!())
}

struct Cluster {
    net: Arc<Net>,
    dirs: Vec<tempfile::TempDir>,
    groups: Vec<Option<Group>>,
}

fn config(member_id: u64) -> GroupConfig {
    let members = (1..=3).map(|i| format!("member-{i}:1")).collect();
    let options = PlacementOptions { replicas: 3, password_cost: PasswordCost::Minimal, ..Default::default() };
    GroupConfig { tick: Duration::from_millis(20), compact_every: 20, ..GroupConfig::new(member_id, members, options) }
}

impl Cluster {
    fn new() -> Cluster {
        let mut cluster = Cluster {
            net: Arc::default(),
            dirs: (0..3).map(|_| tempfile::tempdir().unwrap()).collect(),
            groups: (0..3).map(|_| None).collect(),
        };
        for id in 1..=3 {
            cluster.start(id);
        }
        cluster
    }

    fn start(&mut self, id: u64) {
        let net = self.net.clone();
        let group = Group::start(self.dirs[id as usize - 1].path(), config(id), logger(), |inbox| {
            net.inboxes.lock().insert(id, inbox);
            MemTransport { from: id, net: net.clone() }
        })
        .unwrap();
        self.groups[id as usize - 1] = Some(group);
    }

    fn stop_all(&mut self) {
        self.net.inboxes.lock().clear();
        for group in &mut self.groups {
            group.take();
        }
    }

    fn group(&self, id: u64) -> &Group {
        self.groups[id as usize - 1].as_ref().unwrap()
    }

    /// The member that serves, other than `not` (waits for one).
    fn leader(&self, not: Option<u64>) -> (u64, Arc<Placement>) {
        wait_for("a serving placement leader", || {
            (1..=3u64).filter(|id| Some(*id) != not).find_map(|id| self.group(id).live().map(|l| (id, l.placement)))
        })
    }

    /// Every member's records, once they all applied the same index.
    fn converged(&self) -> Vec<Records> {
        wait_for("every replica at the same applied index", || {
            let read: Vec<(u64, Records)> = (1..=3).map(|id| self.group(id).records().unwrap()).collect();
            let commit = self.group(1).status().commit;
            read.iter().all(|(applied, _)| *applied == commit).then(|| read.into_iter().map(|(_, r)| r).collect())
        })
    }
}

fn wait_for<T>(what: &str, mut probe: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(value) = probe() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Ids handed out, each checked to be new.
#[derive(Default)]
struct Ids(BTreeSet<u64>);

impl Ids {
    fn take(&mut self, id: u64) {
        assert!(self.0.insert(id), "id {id} handed out twice");
    }
}

/// One random command on the leader's state; false if it was refused as unavailable (the leader
/// changed under it), anything else fails the test.
fn command(rng: &mut StdRng, p: &Placement, ids: &mut Ids, step: usize) -> bool {
    let result: Result<(), PlacementError> = (|| {
        match rng.gen_range(0..10) {
            0 | 1 => {
                let req = RegisterStoreRequest {
                    raft_addr: format!("10.0.0.{step}:20160"),
                    http_addr: format!("10.0.0.{step}:8080"),
                    version: "test".into(),
                    ..Default::default()
                };
                ids.take(p.register_store(&req)?.store_id);
            }
            2 | 3 => p.alloc_ids(rng.gen_range(1..50))?.into_iter().for_each(|id| ids.take(id)),
            4..=6 => split_by_report(rng, p, ids)?,
            7 => {
                // (replica-check cannot be switched off)
                let name = crate::state::SCHEDULERS[rng.gen_range(1..3)];
                p.set_scheduler(name, rng.gen_bool(0.5))?;
            }
            8 => {
                let hash = PasswordHash::new("secret", PasswordCost::Minimal).unwrap();
                let name = format!("user{step}");
                p.change_auth(move |auth| auth.user_add(&name, hash))?;
            }
            _ => {
                if let Some(region) = p.regions().into_iter().filter_map(|r| r.region).next() {
                    let key = format!("{}x", String::from_utf8_lossy(&region.start_key)).into_bytes();
                    match p.split_region(region.region_id, key) {
                        Ok(_) | Err(PlacementError::Invalid(_)) => {}
                        Err(err) => return Err(err),
                    }
                }
            }
        }
        Ok(())
    })();
    match result {
        Ok(()) => true,
        Err(PlacementError::Unavailable(_)) => false,
        Err(err) => panic!("command {step} failed: {err}"),
    }
}

/// The leader of a random region reports it split at a random key, with new ids from placement.
fn split_by_report(rng: &mut StdRng, p: &Placement, ids: &mut Ids) -> Result<(), PlacementError> {
    let key: Vec<u8> = (0..4).map(|_| rng.gen_range(b'a'..=b'z')).collect();
    let Some(region) = p.region_by_key(&key).and_then(|info| info.region) else { return Ok(()) };
    if region.start_key == key || region.peers.is_empty() {
        return Ok(());
    }
    let new_ids = p.alloc_ids(1 + region.peers.len())?;
    new_ids.iter().for_each(|&id| ids.take(id));
    let epoch = region.epoch.map(|e| RegionEpoch { version: e.version + 1, ..e });
    let left = Region { end_key: key.clone(), epoch, ..region.clone() };
    let peers = region.peers.iter().zip(&new_ids[1..]).map(|(peer, &id)| Peer { peer_id: id, store_id: peer.store_id });
    let right = Region { region_id: new_ids[0], start_key: key, epoch, peers: peers.collect(), ..region.clone() };
    let store_id = region.peers[0].store_id;
    let report = |r: &Region| PeerReport {
        leader_peer_id: r.peers[0].peer_id,
        term: 1,
        is_leader: true,
        region: Some(r.clone()),
        ..Default::default()
    };
    let req = StoreHeartbeatRequest { store_id, peers: vec![report(&left), report(&right)], ..Default::default() };
    p.store_heartbeat(&req)?;
    Ok(())
}

fn assert_same(records: &[Records]) {
    for (i, other) in records.iter().enumerate().skip(1) {
        let differ: Vec<String> = records[0]
            .keys()
            .chain(other.keys())
            .filter(|k| records[0].get(*k) != other.get(*k))
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        assert!(differ.is_empty(), "replica {} differs from replica 1 in {differ:?}", i + 1);
    }
}

#[test]
fn replicas_agree_through_leader_changes_and_ids_are_never_handed_out_twice() {
    let seed: u64 = std::env::var("FEKV_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(13);
    eprintln!("seed {seed} (FEKV_SEED)");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut cluster = Cluster::new();
    let mut ids = Ids::default();
    let (mut leader, mut p) = cluster.leader(None);
    for step in 0..240 {
        if step == 80 {
            // Cut the leader off: the others elect one of them, and the old one stops serving.
            cluster.net.cut.lock().insert(leader);
            let old = leader;
            (leader, p) = cluster.leader(Some(old));
            wait_for("the cut-off leader to stop serving", || cluster.group(old).live().is_none().then_some(()));
            let refusal = cluster.group(old).refusal();
            assert!(refusal.contains("no leader") || refusal.contains("follower"), "{refusal}");
        }
        if step == 160 {
            let isolated = *cluster.net.cut.lock().iter().next().expect("a member is cut off");
            // Heal (the cut-off member catches up, by snapshot: the others compacted), then move
            // leadership by hand.
            cluster.net.cut.lock().clear();
            let to = (leader % 3) + 1;
            wait_for("the leader transfer", || {
                cluster.group(leader).transfer_leader(to);
                std::thread::sleep(Duration::from_millis(50));
                cluster.group(to).live().map(|_| ())
            });
            (leader, p) = cluster.leader(None);
            assert_eq!(leader, to);
            // The others compacted their logs past what the cut-off member had: it caught up from a
            // snapshot of every record.
            wait_for("the cut-off member to install a snapshot", || {
                (cluster.group(isolated).status().snapshots_installed > 0).then_some(())
            });
        }
        if !command(&mut rng, &p, &mut ids, step) {
            (leader, p) = cluster.leader(None);
        }
    }
    let records = cluster.converged();
    assert_same(&records);
    // The leader's memory is what the records hold.
    let stores: BTreeSet<u64> = p.stores().iter().map(|s| s.store_id).collect();
    let stored: BTreeSet<u64> = records[0].keys().filter_map(|k| k.strip_prefix(b"store/")).map(be).collect();
    assert_eq!(stores, stored);
    let regions: BTreeSet<u64> = p.regions().iter().filter_map(|r| r.region.as_ref()).map(|r| r.region_id).collect();
    let stored: BTreeSet<u64> = records[0].keys().filter_map(|k| k.strip_prefix(b"region/")).map(be).collect();
    assert_eq!(regions, stored);
    assert!(regions.len() > 5 && stores.len() > 5, "the commands did something: {regions:?} {stores:?}");
    drop(p);

    // A restart of every member: the same records, and ids carry on above every one handed out.
    cluster.stop_all();
    for id in 1..=3 {
        cluster.start(id);
    }
    let (_, p) = cluster.leader(None);
    let id = p.alloc_id().unwrap();
    assert!(id > *ids.0.last().unwrap(), "id {id} after the restart was handed out before");
    drop(p);
    let after = cluster.converged();
    assert_same(&after);
    for (key, value) in &records[0] {
        if key.as_slice() != b"meta" {
            assert_eq!(after[0].get(key), Some(value), "{} changed across the restart", String::from_utf8_lossy(key));
        }
    }
}

fn be(bytes: &[u8]) -> u64 {
    u64::from_be_bytes(bytes.try_into().unwrap())
}

#[test]
fn a_member_without_a_quorum_refuses_and_names_the_reachable_count() {
    let cluster = Cluster::new();
    let (leader, p) = cluster.leader(None);
    p.alloc_id().unwrap();
    let others: Vec<u64> = (1..=3).filter(|id| *id != leader).collect();
    cluster.net.cut.lock().extend(others);
    // check_quorum: the leader steps down within an election timeout or so, and its pending
    // changes fail as unavailable instead of hanging.
    wait_for("the leader to step down", || cluster.group(leader).live().is_none().then_some(()));
    match p.alloc_ids(2) {
        Err(PlacementError::Unavailable(_)) => {}
        other => panic!("a change without a quorum: {other:?}"),
    }
    wait_for("the refusal to name the one reachable member", || {
        let refusal = cluster.group(leader).refusal();
        refusal.contains("placement has no leader: 1 of 3 members reachable").then_some(())
    });
    cluster.net.cut.lock().clear();
    let (_, p) = cluster.leader(None);
    p.alloc_id().unwrap();
}

#[test]
fn a_new_leader_gives_every_store_the_down_time_to_be_heard_from() {
    let down_after = Duration::from_secs(2);
    let net: Arc<Net> = Arc::default();
    let dirs: Vec<tempfile::TempDir> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    let groups: Vec<Group> = (1..=3u64)
        .map(|id| {
            let mut config = config(id);
            config.options.store_down_after = down_after;
            let net = net.clone();
            Group::start(dirs[id as usize - 1].path(), config, logger(), |inbox| {
                net.inboxes.lock().insert(id, inbox);
                MemTransport { from: id, net: net.clone() }
            })
            .unwrap()
        })
        .collect();
    let serving = || groups.iter().enumerate().find_map(|(i, g)| g.live().map(|l| (i as u64 + 1, l.placement)));
    let (leader, p) = wait_for("a leader", serving);
    let req =
        RegisterStoreRequest { raft_addr: "10.0.0.1:1".into(), http_addr: "10.0.0.1:2".into(), ..Default::default() };
    p.register_store(&req).unwrap();
    let down = |p: &Placement| p.stores().iter().all(|s| s.state == crate::proto::StoreState::Down as i32);
    // Silent for the down time: down, on the leader that saw it register.
    wait_for("the silent store to be down", || down(&p).then_some(()));
    let to = leader % 3 + 1;
    let p = wait_for("the leader transfer", || {
        groups[leader as usize - 1].transfer_leader(to);
        std::thread::sleep(Duration::from_millis(50));
        groups[to as usize - 1].live().map(|l| l.placement)
    });
    // The new leader has heard from nobody yet: it waits the down time before it calls anyone down.
    assert!(!down(&p), "{:?}", p.stores());
}

#[test]
fn a_first_registration_retried_on_a_new_leader_gets_the_same_store() {
    let cluster = Cluster::new();
    let (leader, p) = cluster.leader(None);
    let req = RegisterStoreRequest {
        raft_addr: "10.0.0.1:1".into(),
        http_addr: "10.0.0.1:2".into(),
        registration_token: vec![9; 32],
        ..Default::default()
    };
    let first = p.register_store(&req).unwrap();
    // The reply was lost and the leader changed: the retry reaches another member.
    let to = leader % 3 + 1;
    let p = wait_for("the leader transfer", || {
        cluster.group(leader).transfer_leader(to);
        std::thread::sleep(Duration::from_millis(50));
        cluster.group(to).live().map(|l| l.placement)
    });
    let retry = p.register_store(&req).unwrap();
    assert_eq!(retry.store_id, first.store_id);
    assert!(p.authenticate_store(first.store_id, &retry.store_secret).is_ok());
    let other = p.register_store(&RegisterStoreRequest { registration_token: vec![8; 32], ..req.clone() }).unwrap();
    assert_ne!(other.store_id, first.store_id);
    assert_eq!(p.stores().len(), 2, "{:?}", p.stores());
}
