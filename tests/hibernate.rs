//! Hibernating regions on the in-process cluster: an idle region stops sending raft messages, a
//! request wakes it, a dead leader of a sleeping region is replaced about an election timeout after
//! the first request, and many regions waking at once keep their leaders.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::cluster::{seed, Cluster};
use common::wait::eventually;

/// Test ticks are 20 ms; a leader sleeps after 2 idle election timeouts.
const WITHIN: Duration = Duration::from_secs(15);

/// A 3-store cluster with elections after 25 ticks (500 ms): long enough that a starved thread on a
/// busy machine does not make a quorum check depose a leader, which a test of "no election" would
/// blame on hibernation.
fn start() -> Cluster {
    Cluster::start(3, seed(), |config| config.raft_election_ticks = 25)
}

/// How many local peers of `store_id` sleep.
fn hibernated(cluster: &Cluster, store_id: u64) -> i64 {
    cluster.metrics(store_id).raftstore_hibernated_regions.get()
}

async fn wait_all_hibernated(cluster: &Cluster, regions: i64) {
    for store_id in cluster.store_ids().into_iter().filter(|s| cluster.is_running(*s)) {
        eventually(WITHIN, &format!("store {store_id}'s {regions} regions to hibernate"), || async {
            hibernated(cluster, store_id) == regions
        })
        .await;
    }
}

/// Raft messages delivered by the network so far.
fn delivered(cluster: &Cluster) -> u64 {
    cluster.network.counts().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_region_hibernates_and_a_write_wakes_it() {
    let cluster = start();
    cluster.must_put(b"k", b"1").await;
    wait_all_hibernated(&cluster, 1).await;
    // Asleep: no heartbeats for many heartbeat intervals (each 40 ms when awake).
    let before = delivered(&cluster);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(delivered(&cluster), before, "a hibernating region sent raft messages");
    let leader = cluster.wait_leader().await;
    let term = cluster.statuses().await[&leader].term;

    cluster.must_put(b"k", b"2").await;
    for store_id in cluster.store_ids() {
        cluster.wait_local(store_id, b"k", Some(b"2")).await;
    }
    assert_eq!(cluster.must_get(b"k").await.as_deref(), Some(&b"2"[..]));
    let statuses = cluster.statuses().await;
    assert_eq!(statuses[&leader].role, "leader", "waking moved the leadership: {statuses:?}");
    assert_eq!(statuses[&leader].term, term, "waking started an election");
    // And it goes back to sleep.
    wait_all_hibernated(&cluster, 1).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_wakes_a_hibernating_leader() {
    let cluster = start();
    cluster.must_put(b"k", b"1").await;
    wait_all_hibernated(&cluster, 1).await;
    let read = tokio::time::timeout(Duration::from_secs(2), cluster.get(b"k", Duration::from_secs(2))).await;
    assert!(matches!(read, Ok(Ok(Some((ref v, _)))) if v == b"1"), "{read:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_leader_of_a_hibernating_region_is_replaced_by_the_first_request() {
    let mut cluster = start();
    cluster.must_put(b"k", b"1").await;
    wait_all_hibernated(&cluster, 1).await;
    let old_leader = cluster.wait_leader().await;
    cluster.crash(old_leader);
    // The followers sleep and hear nothing: nobody campaigns until a request comes. A hibernating
    // follower does not tick, so without the wake-up this put could never succeed; that it does within
    // its deadline is the check (an election timeout is 500-1000 ms here; the rest is a busy machine).
    let started = Instant::now();
    cluster.put(b"k", b"2", Duration::from_secs(10)).await.expect("the first request after the crash");
    eprintln!("the first request after the leader's crash took {:?}", started.elapsed());
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, old_leader);
}

/// Splits region 1 at `k0001` .. `k{n-1}` (n regions in all), from whichever store leads it.
async fn split_into(cluster: &Cluster, n: usize) {
    for i in 1..n {
        let key = format!("k{i:04}").into_bytes();
        eventually(WITHIN, &format!("a split at {key:?}"), || async {
            let regions = cluster.regions().await;
            if regions.iter().any(|r| r.start_key == key) {
                return Ok(());
            }
            let last = regions.last().expect("a region").clone();
            if let Some((leader, _)) = cluster.region_leader(last.region_id).await {
                let _ = cluster.router(leader).split_region(last.region_id, Some(key.clone())).await;
            }
            Err(format!("region {} not split yet", last.region_id))
        })
        .await;
    }
}

/// Each region's (leader store, term).
async fn leaders(cluster: &Cluster) -> BTreeMap<u64, (u64, u64)> {
    let mut out = BTreeMap::new();
    for (store_id, peers) in cluster.all_statuses().await {
        for peer in peers.into_iter().filter(|p| p.role == "leader") {
            out.insert(peer.region.region_id, (store_id, peer.term));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_regions_wake_at_once_without_an_election_storm() {
    const REGIONS: usize = 200;
    let mut cluster = start();
    cluster.must_transfer_leader(1, 1).await;
    split_into(&cluster, REGIONS).await;
    // Store 3 leads a few regions; the other leaders are on stores 1 and 2.
    let regions = cluster.regions().await;
    assert_eq!(regions.len(), REGIONS);
    for (i, region) in regions.iter().enumerate() {
        match i % 10 {
            0 => cluster.must_transfer_leader(region.region_id, 3).await,
            1..=4 => cluster.must_transfer_leader(region.region_id, 2).await,
            _ => {}
        }
    }
    wait_all_hibernated(&cluster, REGIONS as i64).await;
    let before = leaders(&cluster).await;
    assert_eq!(before.len(), REGIONS, "every region has one leader");

    cluster.crash(3);
    let cluster = std::sync::Arc::new(cluster);
    let started = Instant::now();
    let mut writes = tokio::task::JoinSet::new();
    for region in &regions {
        let key = if region.start_key.is_empty() { b"k".to_vec() } else { region.start_key.clone() };
        let (cluster, region_id) = (cluster.clone(), region.region_id);
        writes.spawn(async move { (region_id, cluster.put(&key, b"woken", Duration::from_secs(10)).await) });
    }
    while let Some(done) = writes.join_next().await {
        let (region_id, written) = done.expect("a write task");
        written.unwrap_or_else(|e| panic!("the write to region {region_id} failed: {e}"));
    }
    eprintln!("{REGIONS} regions woke and took a write each in {:?}", started.elapsed());

    let after = leaders(&cluster).await;
    let mut reelected = Vec::new();
    for (region_id, (store_id, term)) in &before {
        let now = after.get(region_id).copied();
        if *store_id == 3 {
            assert!(now.is_some_and(|(s, _)| s != 3), "region {region_id} has no live leader: {now:?}");
            continue;
        }
        assert_eq!(now.map(|(s, _)| s), Some(*store_id), "region {region_id} changed leader on waking");
        if now != Some((*store_id, *term)) {
            reelected.push(*region_id);
        }
    }
    // A storm would be most of them; a thread starved on a busy machine may cost a region a quorum
    // check now and then (it re-elects the same leader).
    assert!(reelected.len() <= REGIONS / 20, "regions whose leader was elected again on waking: {reelected:?}");
}

/// A region whose only member is its leader has nobody to tell its final commit, so it sleeps at
/// its first idle tick instead of after two election timeouts. With elections after 5,000 ticks
/// (100 s), the two-election rule would keep it awake for 200 s; the deadline here is 15 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sole_member_region_sleeps_at_its_first_idle_tick() {
    let cluster = Cluster::start(1, seed(), |config| config.raft_election_ticks = 5000);
    cluster.must_put(b"k", b"1").await;
    wait_all_hibernated(&cluster, 1).await;
    // A write wakes it, is answered, and it sleeps again.
    cluster.must_put(b"k", b"2").await;
    assert_eq!(cluster.must_get(b"k").await.as_deref(), Some(&b"2"[..]));
    wait_all_hibernated(&cluster, 1).await;
}
