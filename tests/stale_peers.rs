//! Stale peers on the in-process cluster: a peer removed while its store could not hear of it is
//! destroyed on proof only, and nothing addressed to it afterwards (late raft messages, a snapshot,
//! a split of its old region applied late) brings it back under an id this store already had.
//!
//! Peer ids only grow and a re-added replica always gets a new id (as in TiKV), so a store that
//! destroyed peer N of a region drops every later message for that region addressed to a peer id
//! ≤ N. Without that, an empty peer created under an old id inherits the leader's memory of what
//! that id had acknowledged, and raft-rs panics (`to_commit N is out of range [last_index 0]`).

mod common;

use std::time::Duration;

use common::cluster::{seed, Cluster};
use common::envelopes::{heartbeat_envelope, raft_envelope, snapshot_envelope, snapshot_envelope_with};
use common::wait::eventually;
use fekv::metrics::Metrics;
use fekv::node::engine_options;
use fekv::proto::{Peer, PeerState, RegionEpoch, RegionLocalState};
use fekv::raftstore::inbox::store_msg;
use fekv::raftstore::peer_storage::PeerStorage;
use fekv::raftstore::transport::RaftEnvelope;
use fekv::raftstore::PeerStatus;
use fekv::storage::Engine;

/// Issue 14, fault 1: a follower is cut off (its links hold what is sent to it, as the gRPC
/// transport's queues do), a peer is added on a free store, the cut-off follower is removed, and
/// placement tells its store it is gone, which destroys it. When the cut heals, the messages the
/// leader sent it between the add and the removal arrive, addressed to the destroyed peer id with a
/// newer membership than the one it knew. They must be dropped: the store keeps no peer of the
/// region and its raftstore keeps running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn late_messages_for_a_destroyed_peer_do_not_recreate_it() {
    let cluster = Cluster::start(4, seed(), |_| {});
    cluster.network.hold_while_cut(true);
    cluster.must_transfer_leader(1, 1).await;
    // Region 1 on stores 1–3; store 4 is free.
    cluster.must_remove_peer(1, 4).await;
    cluster.wait_no_peer(4, 1).await;
    cluster.must_put(b"k", b"v").await;
    cluster.wait_local(3, b"k", Some(b"v")).await;

    let cut_off = 3;
    cluster.network.isolate(cut_off);
    cluster.must_add_peer(1, 4).await;
    // The leader keeps heartbeating the cut-off follower (with the commit index it acknowledged),
    // under the membership that now includes store 4; those heartbeats wait in the cut.
    let held_before = cluster.network.held_for(cut_off);
    eventually(Duration::from_secs(10), "heartbeats held for the cut-off store", || async {
        cluster.network.held_for(cut_off) > held_before + 5
    })
    .await;
    cluster.must_put(b"k2", b"v2").await;
    cluster.must_remove_peer(1, cut_off).await;
    // Placement (which it still reaches) tells the cut-off store its peer is gone.
    eventually(Duration::from_secs(10), "the cut-off store to destroy its removed peer", || async {
        cluster.report_stale_peers().await;
        cluster.router(cut_off).status().await.expect("the raftstore answers").is_empty()
    })
    .await;
    cluster.wait_local(cut_off, b"k", None).await;

    // The cut heals: everything it held arrives now, ahead of the status request below.
    let received = |store_id| received_messages(&cluster, store_id);
    let before_heal = received(cut_off);
    cluster.network.heal();
    let peers =
        cluster.router(cut_off).status().await.expect("the cut-off store's raftstore survives the late messages");
    assert!(received(cut_off) > before_heal + 5, "the held messages were not delivered");
    assert!(peers.is_empty(), "a late message re-created a destroyed peer: {peers:?}");

    // The region goes on without it, and it stays empty.
    cluster.must_put(b"k3", b"v3").await;
    cluster.wait_local(4, b"k3", Some(b"v3")).await;
    let peers = cluster.router(cut_off).status().await.expect("the cut-off store's raftstore is alive");
    assert!(peers.is_empty(), "{peers:?}");
    assert_eq!(cluster.read_local(cut_off, b"k3"), None);
}

/// Raft messages a store has received so far (its `fekv_raft_messages_received_total`, all types).
fn received_messages(cluster: &Cluster, store_id: u64) -> u64 {
    cluster
        .metrics(store_id)
        .render()
        .lines()
        .filter(|l| l.starts_with("fekv_raft_messages_received_total"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// Hands `envelope` to its store as the transport would, and returns the store's peers once it has
/// handled it (the status request queues behind it on the same inbox).
async fn deliver(cluster: &Cluster, envelope: RaftEnvelope) -> Vec<PeerStatus> {
    let store_id = envelope.to_peer.store_id;
    let router = cluster.router(store_id);
    router.raft_inbox().deliver(envelope).expect("the store's inbox takes the message");
    router.status().await.expect("the store's raftstore is alive")
}

/// A snapshot addressed to a peer id this store destroyed is dropped, even one that lists that peer
/// under a newer membership: a re-added replica always gets a new id, so it can only be late. Nor
/// does placement's bootstrap table bring the peer back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_for_a_destroyed_peer_id_is_dropped() {
    let cluster = Cluster::start(3, seed(), |_| {});
    cluster.must_transfer_leader(1, 1).await;
    cluster.must_put(b"k", b"v").await;
    cluster.wait_local(3, b"k", Some(b"v")).await;
    let (_, leader) = cluster.region_leader(1).await.expect("a leader");
    let destroyed = *leader.region.peers.iter().find(|p| p.store_id == 3).unwrap();
    let leader_peer = *leader.region.peers.iter().find(|p| p.store_id == 1).unwrap();
    cluster.must_remove_peer(1, 3).await;
    cluster.wait_no_peer(3, 1).await;

    let (_, leader) = cluster.region_leader(1).await.expect("a leader");
    let mut listing_it_again = leader.region.clone();
    listing_it_again.peers.push(destroyed);
    let epoch = listing_it_again.epoch.as_mut().unwrap();
    epoch.conf_ver += 1;
    let snapshot = snapshot_envelope(listing_it_again, leader_peer, destroyed, leader.applied_index, leader.term);
    let peers = deliver(&cluster, snapshot).await;
    assert!(peers.is_empty(), "a snapshot for the destroyed peer re-created it: {peers:?}");
    assert_eq!(cluster.read_local(3, b"k"), None);

    let bootstrapped =
        fekv::proto::Region { epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }), ..leader.region.clone() };
    let bootstrapped = fekv::proto::Region { peers: vec![leader_peer, destroyed], ..bootstrapped };
    cluster.router(3).create_peer(bootstrapped).await.expect("a destroyed peer is not created, and that is no error");
    let peers = cluster.router(3).status().await.expect("the raftstore answers");
    assert!(peers.is_empty(), "placement's table re-created a destroyed peer: {peers:?}");
}

/// A split applied late, on a store that meanwhile got a newer peer of the split-off region (its
/// own peer of the new region was replaced while it was cut off, and the new region's leader
/// created the newer one empty), does not start the split's older peer there: the newer peer stays
/// and is filled by a snapshot once the split has made room for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_split_does_not_replace_a_newer_peer_of_the_new_region() {
    let cluster = Cluster::start(3, seed(), |_| {});
    cluster.must_transfer_leader(1, 1).await;
    cluster.must_put(b"a", b"left").await;
    cluster.must_put(b"z", b"right").await;
    let late = 3;
    cluster.wait_local(late, b"z", Some(b"right")).await;
    cluster.network.isolate(late);
    cluster.router(1).split_region(1, Some(b"m".to_vec())).await.expect("the split starts");
    let right = eventually_region_from(&cluster, b"m").await;
    cluster.must_remove_peer(right.region_id, late).await;
    let newer = cluster.must_add_peer(right.region_id, late).await;
    // The new region's leader reaches the late store before region 1 does (its first heartbeat,
    // handed over directly): the newer peer is created empty.
    let (_, leader) = cluster.region_leader(right.region_id).await.expect("the new region has a leader");
    let leader_peer = Peer { peer_id: leader.peer_id, store_id: 1 };
    let heartbeat = heartbeat_envelope(&leader.region, leader_peer, newer, leader.term, 0);
    let peers = deliver(&cluster, heartbeat).await;
    assert!(peers.iter().any(|p| p.region.region_id == right.region_id && p.peer_id == newer.peer_id), "{peers:?}");

    // Region 1 reaches the late store again, which applies the split.
    cluster.network.heal();
    eventually(Duration::from_secs(15), "the late store to catch up", || async {
        let peers = cluster.router(late).status().await.expect("the late store's raftstore is alive");
        let right_peer = peers.iter().find(|p| p.region.region_id == right.region_id);
        if let Some(peer) = right_peer {
            assert_eq!(peer.peer_id, newer.peer_id, "the late split started an older peer of the new region");
        }
        let split_applied = peers.iter().any(|p| p.region.region_id == 1 && p.region.end_key == b"m");
        if split_applied && right_peer.is_some_and(|p| p.initialized) {
            Ok(())
        } else {
            Err(format!("{peers:?}"))
        }
    })
    .await;
    cluster.wait_local(late, b"z", Some(b"right")).await;
    cluster.wait_local(late, b"a", Some(b"left")).await;
}

async fn eventually_region_from(cluster: &Cluster, start_key: &[u8]) -> fekv::proto::Region {
    eventually(Duration::from_secs(15), &format!("a region starting at {start_key:?}"), || async {
        let regions = cluster.regions().await;
        regions.iter().find(|r| r.start_key == start_key).cloned().ok_or_else(|| format!("{regions:?}"))
    })
    .await
}

/// Placement's word that a peer was removed is acted on only if it names that very peer and carries
/// a newer membership than the peer's own; an equal or older one, or one for another id, is ignored.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_destroys_a_peer_only_with_a_newer_membership_that_names_it() {
    let cluster = Cluster::start(3, seed(), |_| {});
    cluster.must_put(b"k", b"v").await;
    cluster.wait_local(3, b"k", Some(b"v")).await;
    let own = cluster.router(3).status().await.unwrap().remove(0);
    let own_epoch = own.region.epoch.unwrap();
    let newer = RegionEpoch { conf_ver: own_epoch.conf_ver + 1, ..own_epoch };
    let reports = [
        (Peer { peer_id: own.peer_id, store_id: 3 }, own_epoch),
        (Peer { peer_id: own.peer_id, store_id: 3 }, RegionEpoch { conf_ver: own_epoch.conf_ver, version: 9 }),
        (Peer { peer_id: own.peer_id + 100, store_id: 3 }, newer),
    ];
    for (peer, epoch) in reports {
        let stale = fekv::proto::StalePeer { region_id: 1, peer: Some(peer), epoch: Some(epoch) };
        fekv::cluster_link::destroy_stale_peer(&cluster.router(3), stale);
        let peers = cluster.router(3).status().await.unwrap();
        assert_eq!(peers.len(), 1, "placement's word for {peer:?} at {epoch:?} destroyed the peer");
    }
    let stale = fekv::proto::StalePeer {
        region_id: 1,
        peer: Some(Peer { peer_id: own.peer_id, store_id: 3 }),
        epoch: Some(newer),
    };
    fekv::cluster_link::destroy_stale_peer(&cluster.router(3), stale);
    cluster.wait_no_peer(3, 1).await;
}

/// A store that stopped after applying its own removal, before destroying its peer, destroys it at
/// the next start knowing the peer's id: a late heartbeat for that id (under a newer membership,
/// with the commit index the peer had acknowledged) is dropped, not handed to an empty peer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_applied_just_before_a_stop_is_remembered_at_restart() {
    let mut cluster = Cluster::start(3, seed(), |_| {});
    cluster.must_transfer_leader(1, 1).await;
    cluster.must_put(b"k", b"v").await;
    cluster.wait_local(3, b"k", Some(b"v")).await;
    let own = cluster.router(3).status().await.unwrap().remove(0);
    let (_, leader) = cluster.region_leader(1).await.unwrap();
    cluster.crash(3);
    // What applying its own removal leaves on disk, had the node stopped right after that commit.
    let mut removed = own.region.clone();
    removed.peers.retain(|p| p.store_id != 3);
    removed.epoch.as_mut().unwrap().conf_ver += 1;
    let engine = Engine::open(cluster.data_dir(3), &engine_options(&cluster.config, &Metrics::new())).unwrap();
    let mut txn = engine.write_txn().unwrap();
    let state = RegionLocalState {
        region: Some(removed.clone()),
        state: PeerState::Normal as i32,
        removed_peer_id: own.peer_id,
    };
    engine.put_region_state(&mut txn, &state).unwrap();
    engine.commit(txn).unwrap();
    engine.close();
    cluster.start_store(3);
    assert!(cluster.router(3).status().await.unwrap().is_empty(), "the removed peer was started again");
    assert_eq!(cluster.read_local(3, b"k"), None, "the removed peer's data is still there");

    let mut later = removed.clone();
    later.epoch.as_mut().unwrap().conf_ver += 1;
    let leader_peer = Peer { peer_id: leader.peer_id, store_id: 1 };
    let to = Peer { peer_id: own.peer_id, store_id: 3 };
    let peers = deliver(&cluster, heartbeat_envelope(&later, leader_peer, to, leader.term, own.commit_index)).await;
    assert!(peers.is_empty(), "a late heartbeat re-created the removed peer: {peers:?}");
}

/// Store 4 of a 4-store cluster once its peer of region 1 is removed: it holds no range. What the
/// tests below hand it comes from a "leader" on store 9, which does not exist: the store's answers
/// and campaigns go nowhere, so the test alone speaks for the region's leaders.
async fn store_4_holding_nothing() -> Cluster {
    let cluster = Cluster::start(4, seed(), |_| {});
    cluster.must_remove_peer(1, 4).await;
    cluster.wait_no_peer(4, 1).await;
    cluster
}

const FAR_STORE: u64 = 9;
const TERM: u64 = 6;

/// A region of two peers, one on the far store (its leader) and one on store 4.
struct FarRegion {
    region: fekv::proto::Region,
    leader: Peer,
    local: Peer,
}

impl FarRegion {
    fn new(cluster: &Cluster, start: &[u8], end: &[u8], version: u64) -> FarRegion {
        let leader = Peer { peer_id: cluster.alloc_id(), store_id: FAR_STORE };
        let local = Peer { peer_id: cluster.alloc_id(), store_id: 4 };
        let region = fekv::proto::Region {
            region_id: cluster.alloc_id(),
            start_key: start.to_vec(),
            end_key: end.to_vec(),
            epoch: Some(RegionEpoch { conf_ver: 1, version }),
            peers: vec![leader, local],
        };
        FarRegion { region, leader, local }
    }

    /// The leader's snapshot at `index`, holding `key` = `value` (written at `revision`).
    fn snapshot(&self, index: u64, (key, value, revision): (&[u8], &[u8], u64)) -> RaftEnvelope {
        let kv = fekv::proto::SnapshotKv { key: key.to_vec(), value: value.to_vec(), revision };
        snapshot_envelope_with(self.region.clone(), self.leader, self.local, (index, TERM), vec![kv])
    }

    /// The leader's append of one entry at `last + 1` (after an entry of term `last_term`) that
    /// splits the region at `split_key` off into `right`, with the entry committed.
    fn split_append(&self, last: u64, last_term: u64, split_key: &[u8], right: &FarRegion) -> RaftEnvelope {
        use prost::Message as _;
        let split = fekv::proto::SplitRequest {
            split_key: split_key.to_vec(),
            new_region_id: right.region.region_id,
            new_peer_ids: vec![right.leader.peer_id, right.local.peer_id],
        };
        let cmd = fekv::proto::RaftCmdRequest {
            header: Some(fekv::proto::CmdHeader {
                region_id: self.region.region_id,
                peer_id: self.leader.peer_id,
                epoch: self.region.epoch,
            }),
            requests: Vec::new(),
            admin: Some(fekv::proto::AdminRequest { cmd: Some(fekv::proto::admin_request::Cmd::Split(split)) }),
        };
        let mut entry = raft::eraftpb::Entry::default();
        (entry.index, entry.term, entry.data) = (last + 1, TERM, cmd.encode_to_vec().into());
        let mut message = raft::eraftpb::Message::default();
        message.set_msg_type(raft::eraftpb::MessageType::MsgAppend);
        (message.from, message.to, message.term) = (self.leader.peer_id, self.local.peer_id, TERM);
        (message.index, message.log_term, message.commit) = (last, last_term, last + 1);
        message.set_entries(vec![entry].into());
        raft_envelope(&self.region, self.leader, self.local, message)
    }
}

/// Store 4's view of a region, once `condition` holds of it (at most 10 s).
async fn wait_peer(cluster: &Cluster, region_id: u64, what: &str, condition: impl Fn(&PeerStatus) -> bool) {
    eventually(Duration::from_secs(10), what, || async {
        let peers = cluster.router(4).status().await.expect("store 4's raftstore is alive");
        peers.iter().any(|p| p.region.region_id == region_id && condition(p))
    })
    .await;
}

/// Every region store 4 keeps on disk has a raft state that covers its apply state (raft-rs refuses
/// to restart otherwise), by the scrub's checks; and a restart brings every region back.
async fn assert_store_4_consistent(cluster: &mut Cluster) {
    let engine = cluster.engine(4);
    let report = tokio::task::spawn_blocking(move || {
        fekv::storage::scrub::scrub(&engine, &fekv::storage::scrub::ScrubOptions::default(), &|| false)
    })
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.damaged, 0, "{:#?}", report.findings);
    cluster.restart(4);
    cluster.router(4).status().await.expect("store 4 restarts on what it wrote");
}

/// Found by the scrub on a restarted store (issue 14's hardening): a store catching up on a region
/// and on the region split off it, holding neither yet, got both leaders' snapshots in one round.
/// The parent's snapshot (a leader's cached one) predated the split and covered the new region's
/// range; the new region's was newer. Each fitted the ranges the store held, so both were applied;
/// then the parent applied its split and wrote the new region's initial state (the split's index)
/// over the state its snapshot had given it: a raft state behind the applied index, which raft-rs
/// refuses at the next start. Only one of two overlapping snapshots may be let in per round; the
/// other is offered again and fits once the split has made room for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overlapping_snapshots_in_one_round_are_not_both_applied() {
    let mut cluster = store_4_holding_nothing().await;
    let parent = FarRegion::new(&cluster, b"", b"", 1);
    let child = FarRegion::new(&cluster, b"t", b"", 2);
    let parent_snapshot = parent.snapshot(10, (b"u", b"old", 9));
    let child_snapshot = || child.snapshot(30, (b"u", b"new", 25));
    cluster.crash(4);
    let both = vec![store_msg(parent_snapshot).unwrap(), store_msg(child_snapshot()).unwrap()];
    cluster.start_store_with(4, both);
    wait_peer(&cluster, parent.region.region_id, "the parent's snapshot to be applied", |p| p.initialized).await;
    let peers = cluster.router(4).status().await.unwrap();
    let held: Vec<u64> = peers.iter().filter(|p| p.initialized).map(|p| p.region.region_id).collect();
    assert_eq!(held, vec![parent.region.region_id], "two overlapping snapshots were applied: {peers:?}");

    // The parent applies its split; the new region starts at the split's index, and its leader's
    // snapshot, offered again, now fits.
    deliver(&cluster, parent.split_append(10, TERM, b"t", &child)).await;
    wait_peer(&cluster, parent.region.region_id, "the parent to split", |p| p.region.end_key == b"t").await;
    wait_peer(&cluster, child.region.region_id, "the split to start the new region", |p| p.initialized).await;
    deliver(&cluster, child_snapshot()).await;
    wait_peer(&cluster, child.region.region_id, "the new region's snapshot", |p| p.applied_index == 30).await;
    assert_eq!(cluster.read_local(4, b"u"), Some((b"new".to_vec(), 25)));
    assert_store_4_consistent(&mut cluster).await;
    wait_peer(&cluster, child.region.region_id, "the new region back at its snapshot", |p| p.applied_index == 30).await;
    assert_eq!(cluster.read_local(4, b"u"), Some((b"new".to_vec(), 25)));
}

/// The rule at the split itself, as in TiKV: a split applied on a store that already holds the new
/// region (filled by a snapshot, here one an older fekv let in next to the parent's) does not write
/// the new region's initial state over the state it has, nor drop its data.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_late_split_keeps_the_state_of_a_new_region_the_store_already_holds() {
    let mut cluster = store_4_holding_nothing().await;
    let parent = FarRegion::new(&cluster, b"", b"", 1);
    let child = FarRegion::new(&cluster, b"t", b"", 2);
    cluster.crash(4);
    let engine = Engine::open(cluster.data_dir(4), &engine_options(&cluster.config, &Metrics::new())).unwrap();
    let mut txn = engine.write_txn().unwrap();
    PeerStorage::write_initial_state_at(&engine, &mut txn, &parent.region, 10).unwrap();
    PeerStorage::write_initial_state_at(&engine, &mut txn, &child.region, 30).unwrap();
    engine.put_data(&mut txn, b"u", 25, b"new").unwrap();
    engine.commit(txn).unwrap();
    engine.close();
    cluster.start_store(4);

    let last_term = fekv::raftstore::peer_storage::RAFT_INIT_LOG_TERM;
    deliver(&cluster, parent.split_append(10, last_term, b"t", &child)).await;
    wait_peer(&cluster, parent.region.region_id, "the parent to split", |p| p.region.end_key == b"t").await;
    let engine = cluster.engine(4);
    let txn = engine.read_txn().unwrap();
    let child_id = child.region.region_id;
    let (raft_state, apply_state) =
        (engine.raft_state(&txn, child_id).unwrap().unwrap(), engine.apply_state(&txn, child_id).unwrap().unwrap());
    drop(txn);
    drop(engine);
    assert_eq!((apply_state.applied_index, raft_state.commit), (30, 30), "{raft_state:?} {apply_state:?}");
    assert_eq!(cluster.read_local(4, b"u"), Some((b"new".to_vec(), 25)));
    assert_store_4_consistent(&mut cluster).await;
    wait_peer(&cluster, child_id, "the new region back at its own index", |p| p.applied_index == 30).await;
}

/// Store 4's peer of region 1 is added while store 4 is cut off, created empty by the leader's first
/// heartbeat (handed over directly), and removed again before any snapshot reached it. Returns the
/// cluster (store 4 still cut off) and that peer.
async fn empty_peer_whose_addition_was_undone() -> (Cluster, Peer) {
    let cluster = store_4_holding_nothing().await;
    cluster.must_transfer_leader(1, 1).await;
    cluster.network.isolate(4);
    let added = cluster.must_add_peer(1, 4).await;
    let (_, leader) = cluster.region_leader(1).await.expect("region 1 has a leader");
    let leader_peer = Peer { peer_id: leader.peer_id, store_id: 1 };
    let peers = deliver(&cluster, heartbeat_envelope(&leader.region, leader_peer, added, leader.term, 0)).await;
    assert!(peers.iter().any(|p| p.peer_id == added.peer_id && !p.initialized), "{peers:?}");
    cluster.must_remove_peer(1, 4).await;
    (cluster, added)
}

/// Issue 14 (fault 1's follow-up): an empty peer whose addition was undone before it got a snapshot
/// heard from nobody again (its region's members had forgotten it, and placement knows nothing of
/// peers without a range), and lingered forever. After ten election timeouts without a leader it
/// asks the peers it heard from; the leader's newer membership does not list it, so the leader
/// answers with a tombstone and the empty peer is destroyed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_peer_whose_addition_was_undone_asks_and_is_destroyed() {
    let (cluster, _) = empty_peer_whose_addition_was_undone().await;
    cluster.network.heal();
    cluster.wait_no_peer(4, 1).await;
    // Nothing else was touched: the region goes on.
    cluster.must_put(b"k", b"v").await;
    cluster.wait_local(3, b"k", Some(b"v")).await;
}

/// The same, when the only member the empty peer heard from has left the region too: the store that
/// destroyed that member's peer answers from its tombstone, whose membership does not list the
/// empty peer either.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_peer_is_told_by_a_store_whose_peer_has_left_too() {
    let (cluster, _) = empty_peer_whose_addition_was_undone().await;
    cluster.must_transfer_leader(1, 2).await;
    cluster.must_remove_peer(1, 1).await;
    eventually(Duration::from_secs(10), "store 1 to destroy its removed peer", || async {
        cluster.report_stale_peers().await;
        cluster.router(1).status().await.expect("store 1's raftstore answers").is_empty()
    })
    .await;
    cluster.network.heal();
    cluster.wait_no_peer(4, 1).await;
}
