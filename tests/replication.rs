//! Replication on the in-process cluster: what a 3- or 5-store region does under crashes and
//! partitions, checked through the raftstore's own API (the REST layer is tested elsewhere).

mod common;

use common::cluster::{seed, Cluster};

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
    use std::time::{Duration, Instant};
    let cluster = Cluster::start(5, seed(), |_| {});
    cluster.must_put(b"k", b"0").await;
    for target in cluster.store_ids() {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let leader = cluster.wait_leader().await;
            if leader == target {
                break;
            }
            // Ask whoever leads now; a transfer that times out (the target was behind) is asked again.
            let _ = cluster.router(leader).transfer_leader(1, target).await;
            assert!(Instant::now() < deadline, "leadership never reached store {target}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        cluster.must_put(b"k", format!("{target}").as_bytes()).await;
        assert_eq!(cluster.must_get(b"k").await, Some(format!("{target}").into_bytes()));
    }
    // A transfer to a store without a peer of the region is refused.
    let leader = cluster.wait_leader().await;
    assert!(cluster.router(leader).transfer_leader(1, 99).await.is_err());
}
