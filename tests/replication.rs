//! Replication on the in-process cluster: what a 3- or 5-store region does under crashes and
//! partitions, checked through the raftstore's own API (the REST layer is tested elsewhere).

mod common;

use std::time::Duration;

use common::cluster::{seed, Cluster};
use common::envelopes::snapshot_envelope;
use common::wait::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_is_replicated_to_every_store() {
    let cluster = Cluster::start(3, seed(), |_| {});
    cluster.must_put(b"k1", b"v1").await;
    assert_eq!(cluster.must_get(b"k1").await.as_deref(), Some(&b"v1"[..]));
    for store_id in cluster.store_ids() {
        cluster.wait_local(store_id, b"k1", Some(b"v1")).await;
    }
    cluster.must_delete(b"k1").await;
    for store_id in cluster.store_ids() {
        cluster.wait_local(store_id, b"k1", None).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_leader_takes_over_when_the_leader_crashes() {
    let mut cluster = Cluster::start(3, seed(), |_| {});
    cluster.must_put(b"before", b"1").await;
    let old_leader = cluster.wait_leader().await;
    cluster.crash(old_leader);
    cluster.must_put(b"after", b"2").await;
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, old_leader);
    assert_eq!(cluster.must_get(b"before").await.as_deref(), Some(&b"1"[..]));
    // The old leader comes back and catches up from the log.
    cluster.start_store(old_leader);
    cluster.wait_local(old_leader, b"after", Some(b"2")).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minority_cannot_write_or_read() {
    let cluster = Cluster::start(3, seed(), |_| {});
    cluster.must_put(b"k", b"old").await;
    let leader = cluster.wait_leader().await;
    let others: Vec<u64> = cluster.store_ids().into_iter().filter(|s| *s != leader).collect();
    // The leader alone on one side: it cannot commit, and it refuses reads it cannot confirm.
    cluster.network.partition(&[vec![leader], others.clone()]);
    let router = cluster.router(leader);
    let write = router
        .write(
            1,
            vec![fekv::proto::Request {
                cmd: Some(fekv::proto::request::Cmd::Put(fekv::proto::PutRequest {
                    key: b"k".to_vec(),
                    value: b"minority".to_vec(),
                    precondition: None,
                })),
            }],
        )
        .await;
    assert!(write.is_err(), "a minority leader acknowledged a write: {write:?}");
    assert!(router.read_index(1).await.is_err(), "a minority leader served a linearizable read");
    // The majority elects a leader and goes on.
    cluster.must_put(b"k", b"new").await;
    cluster.network.heal();
    cluster.wait_local(leader, b"k", Some(b"new")).await;
    assert_eq!(cluster.must_get(b"k").await.as_deref(), Some(&b"new"[..]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_write_survives_crashing_all_stores() {
    let mut cluster = Cluster::start(3, seed(), |_| {});
    for i in 0..50 {
        cluster.must_put(format!("k{i}").as_bytes(), format!("v{i}").as_bytes()).await;
    }
    cluster.restart_all();
    for i in 0..50 {
        assert_eq!(cluster.must_get(format!("k{i}").as_bytes()).await, Some(format!("v{i}").into_bytes()));
    }
}

/// TestTransferLeader3B: leadership moves to each store in turn, and writes go on through it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_transfer_leader_3b() {
    let cluster = Cluster::start(5, seed(), |_| {});
    cluster.must_put(b"k", b"0").await;
    for target in cluster.store_ids() {
        // Asks whoever leads now; a transfer that times out (the target was behind) is asked again.
        cluster.must_transfer_leader(1, target).await;
        cluster.must_put(b"k", format!("{target}").as_bytes()).await;
        assert_eq!(cluster.must_get(b"k").await, Some(format!("{target}").into_bytes()));
    }
    // A transfer to a store without a peer of the region is refused.
    let leader = cluster.wait_leader().await;
    assert!(cluster.router(leader).transfer_leader(1, 99).await.is_err());
}

/// A peer removed while it was cut off learns it is gone from the first member it talks to again
/// (a tombstone reply to its campaign) and destroys itself: its data is deleted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_removed_while_cut_off_destroys_itself_when_it_returns() {
    let cluster = Cluster::start(3, seed(), |_| {});
    cluster.must_transfer_leader(1, 1).await;
    cluster.must_put(b"k", b"v").await;
    cluster.wait_local(3, b"k", Some(b"v")).await;
    cluster.network.isolate(3);
    cluster.must_remove_peer(1, 3).await;
    cluster.must_put(b"k2", b"v2").await;
    // Still cut off, store 3 cannot know: it keeps its data.
    assert!(cluster.read_local(3, b"k").is_some());
    cluster.network.heal();
    cluster.wait_local(3, b"k", None).await;
    cluster.wait_no_peer(3, 1).await;
    assert!(cluster.metrics(3).render().contains("fekv_raft_peers_destroyed_total 1"));
    // The rest of the region goes on.
    cluster.must_put(b"k3", b"v3").await;
    cluster.wait_local(2, b"k3", Some(b"v3")).await;
}

/// A snapshot whose range overlaps a region the store already holds is refused before it reaches
/// raft (the store must first split or drop that region), as is one that does not list its recipient.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_overlapping_a_held_region_is_refused() {
    use fekv::proto::{Peer, Region, RegionEpoch};
    let cluster = Cluster::start(1, seed(), |_| {});
    cluster.must_put(b"k", b"v").await;
    let from_peer = Peer { peer_id: 77, store_id: 2 };
    let to_peer = Peer { peer_id: 7, store_id: 1 };
    let overlapping = Region {
        region_id: 99,
        start_key: b"m".to_vec(),
        end_key: Vec::new(),
        epoch: Some(RegionEpoch { conf_ver: 2, version: 1 }),
        peers: vec![to_peer, from_peer],
    };
    let not_listing_recipient = Region { peers: vec![from_peer], ..overlapping.clone() };
    let inbox = cluster.router(1).raft_inbox();
    for region in [overlapping, not_listing_recipient] {
        inbox.deliver(snapshot_envelope(region, from_peer, to_peer, 100, 9)).unwrap();
    }
    eventually(Duration::from_secs(5), "both snapshots rejected", || async {
        let metrics = cluster.metrics(1).render();
        if metrics.contains("fekv_raft_snapshots_total{event=\"rejected\"} 2") {
            Ok(())
        } else {
            Err(metrics)
        }
    })
    .await;
    let held: Vec<u64> = cluster.all_statuses().await[&1].iter().map(|p| p.region.region_id).collect();
    assert_eq!(held, vec![1], "a refused snapshot must not create a peer");
    assert_eq!(cluster.must_get(b"k").await.as_deref(), Some(&b"v"[..]));
}

/// While leadership is being handed to a peer that cannot hear it (cut off), raft refuses proposals;
/// they get a retryable answer at once rather than hanging. Once the transfer is abandoned (after an
/// election timeout), the leader takes writes again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proposals_during_a_leader_transfer_get_a_retryable_answer() {
    let cluster = Cluster::start(3, seed(), |_| {});
    cluster.must_transfer_leader(1, 1).await;
    cluster.must_put(b"k", b"before").await;
    cluster.network.isolate(3);
    let router = cluster.router(1);
    router.transfer_leader(1, 3).await.expect("the transfer starts");
    let put = fekv::proto::Request {
        cmd: Some(fekv::proto::request::Cmd::Put(fekv::proto::PutRequest {
            key: b"k".to_vec(),
            value: b"during".to_vec(),
            precondition: None,
        })),
    };
    let during = router.write(1, vec![put.clone()]).await;
    assert!(matches!(during, Err(fekv::raftstore::Error::TransferringLeader)), "{during:?}");
    eventually(Duration::from_secs(10), "the leader to take writes again", || async {
        match router.write(1, vec![put.clone()]).await {
            Ok(_) => Ok(()),
            Err(err @ fekv::raftstore::Error::TransferringLeader) => Err(err),
            Err(err) => panic!("unexpected answer after the transfer was abandoned: {err}"),
        }
    })
    .await;
    assert_eq!(cluster.must_get(b"k").await.as_deref(), Some(&b"during"[..]));
}

/// A peer cut off while its region moved entirely to other stores still learns it is gone: the stores
/// it knows hold only tombstones of the region now, and they answer it with a tombstone too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_whose_whole_region_moved_away_still_learns_it_is_gone() {
    let cluster = Cluster::start(5, seed(), |_| {});
    cluster.must_transfer_leader(1, 1).await;
    for store_id in [4, 5] {
        cluster.must_remove_peer(1, store_id).await;
    }
    cluster.must_put(b"k", b"v").await;
    cluster.wait_local(3, b"k", Some(b"v")).await;
    cluster.network.isolate(3);
    // Region 1 moves from {1, 2, 3} to {4, 5}: none of the stores store 3 knows hold it any more.
    cluster.must_add_peer(1, 4).await;
    cluster.must_add_peer(1, 5).await;
    cluster.must_remove_peer(1, 3).await;
    cluster.must_transfer_leader(1, 4).await;
    cluster.must_remove_peer(1, 1).await;
    cluster.must_remove_peer(1, 2).await;
    cluster.must_put(b"k2", b"v2").await;
    cluster.wait_local(5, b"k", Some(b"v")).await;
    cluster.network.heal();
    cluster.wait_local(3, b"k", None).await;
    assert!(cluster.metrics(3).render().contains("fekv_raft_peers_destroyed_total 1"));
}

/// A node's owner learns when its raftstore thread dies, and why: here raft-rs panics on a heartbeat
/// whose commit index a brand-new peer cannot have (only a broken peer-id rule could send one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_tells_its_owner_that_its_raftstore_died() {
    use fekv::proto::{Peer, Region, RegionEpoch};
    use fekv::raftstore::RaftstoreExit;
    let dir = tempfile::tempdir().unwrap();
    let node = fekv::node::Node::start(&common::test_config(dir.path())).expect("the node starts");
    let exited = node.raftstore_exited();
    let region = Region { region_id: 77, epoch: Some(RegionEpoch { conf_ver: 3, version: 1 }), ..Default::default() };
    let (from, to) = (Peer { peer_id: 70, store_id: 2 }, Peer { peer_id: 71, store_id: node.store_id() });
    let heartbeat = common::envelopes::heartbeat_envelope(&region, from, to, 5, 10);
    node.router().store_inbox().send(fekv::raftstore::msg::StoreMsg::Raft(Box::new(heartbeat))).unwrap();
    let exit = tokio::time::timeout(std::time::Duration::from_secs(10), exited).await.expect("the death is told");
    let RaftstoreExit::Panicked(report) = exit else { panic!("the raftstore ended without a panic: {exit:?}") };
    assert!(report.message.contains("to_commit 10 is out of range"), "{report}");
    assert!(matches!(node.router().status().await, Err(fekv::raftstore::Error::Stopped)));
    let stopped = tokio::task::spawn_blocking(move || node.stop()).await.unwrap();
    assert_eq!(stopped, RaftstoreExit::Panicked(report));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_linearizable_read_on_a_three_node_region_is_counted_as_a_read_index() {
    let cluster = Cluster::start(3, seed(), |_| {});
    cluster.must_put(b"k", b"v").await;
    // Summed over the stores: whichever leads when the read arrives counts it.
    let read_indexes = |cluster: &Cluster| -> u64 {
        cluster.store_ids().into_iter().map(|s| cluster.metrics(s).raft_read_index.get()).sum()
    };
    let before = read_indexes(&cluster);
    assert_eq!(cluster.must_get(b"k").await.as_deref(), Some(&b"v"[..]));
    let after = read_indexes(&cluster);
    assert!(after > before, "fekv_raftstore_read_index_total stayed at {before} over a linearizable read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn creating_a_peer_of_a_region_that_lists_none_on_this_store_is_refused() {
    let cluster = Cluster::start(3, seed(), |_| {});
    cluster.wait_leader().await;
    let region = fekv::proto::Region {
        region_id: 9_999,
        peers: vec![fekv::proto::Peer { peer_id: 9_998, store_id: 2 }],
        ..Default::default()
    };
    let created = cluster.router(1).create_peer(region).await;
    assert!(matches!(created, Err(fekv::raftstore::Error::InvalidChange { .. })), "{created:?}");
    assert!(cluster.dead_raftstores().is_empty(), "the raftstore died: {:?}", cluster.dead_raftstores());
}

fn put_request(key: &[u8], value: &[u8]) -> Vec<fekv::proto::Request> {
    vec![fekv::proto::Request {
        cmd: Some(fekv::proto::request::Cmd::Put(fekv::proto::PutRequest {
            key: key.to_vec(),
            value: value.to_vec(),
            precondition: None,
        })),
    }]
}

/// A leader cut off with writes it could not commit, which leads again later, proposes its new
/// writes at indexes below those of the lost ones. Its proposals are then out of index order (they
/// are in (term, index) order): a new write must be answered as applied, and the lost ones as never
/// applied. Matching by index alone kept the new write waiting behind a lost one of a higher index,
/// then answered it "stale command" (a client retries that: it could apply twice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_that_lost_its_writes_answers_the_writes_of_its_next_term() {
    // Long enough that no caller gives up while its write waits: a caller that gives up takes its
    // proposal out of the queue, which would hide the ordering.
    let cluster = Cluster::start(3, seed(), |c| c.request_timeout = Duration::from_secs(60));
    cluster.must_transfer_leader(1, 1).await;
    cluster.must_put(b"k", b"before").await;
    let leader = cluster.router(1);
    let last_before = cluster.statuses().await[&1].last_index;
    cluster.network.isolate(1);
    // Eight writes the cut-off leader appends in its term and can never commit.
    let lost: Vec<_> = (0..8)
        .map(|i| {
            let router = leader.clone();
            tokio::spawn(async move { router.write(1, put_request(b"k", format!("lost{i}").as_bytes())).await })
        })
        .collect();
    eventually(Duration::from_secs(10), "store 1 to append the 8 writes", || async {
        let last = cluster.statuses().await[&1].last_index;
        if last >= last_before + 8 {
            Ok(())
        } else {
            Err(format!("last index {last}"))
        }
    })
    .await;
    // The other two elect a leader and commit one write of their own, at an index below the lost ones'.
    let majority_leader = eventually(Duration::from_secs(10), "a leader among stores 2 and 3", || async {
        let statuses = cluster.statuses().await;
        [2, 3].into_iter().find(|s| statuses[s].role == "leader").ok_or_else(|| format!("{statuses:?}"))
    })
    .await;
    cluster.router(majority_leader).write(1, put_request(b"k", b"majority")).await.expect("the majority writes");
    cluster.network.heal();
    cluster.wait_local(1, b"k", Some(b"majority")).await;
    cluster.must_transfer_leader(1, 1).await;
    // Store 1 leads again; its next write lands below the highest lost index.
    let next = leader.write(1, put_request(b"k", b"next"));
    let answered = tokio::time::timeout(Duration::from_secs(10), next).await;
    let revision = answered.expect("the write of the new term is answered").expect("and it succeeded").revision;
    assert!(revision < last_before + 8, "the write landed at {revision}, above the lost ones");
    assert_eq!(cluster.must_get(b"k").await.as_deref(), Some(&b"next"[..]));
    // Every lost write is answered as never applied, so a client may safely retry it.
    leader.write(1, put_request(b"k", b"after")).await.expect("a later write");
    for (i, write) in lost.into_iter().enumerate() {
        let answer = tokio::time::timeout(Duration::from_secs(10), write).await;
        let result = answer.expect("a lost write is answered").expect("its task");
        assert!(matches!(result, Err(fekv::raftstore::Error::StaleCommand)), "lost write {i} was answered {result:?}");
    }
    assert_eq!(cluster.must_get(b"k").await.as_deref(), Some(&b"after"[..]));
}
