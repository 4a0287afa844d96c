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

use common::cluster::{eventually, seed, Cluster};

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
    let peers = cluster.router(cut_off).status().await.expect("the cut-off store's raftstore survives the late messages");
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
