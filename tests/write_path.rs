//! The write path (issue 15): a plain write is answered once its entry is committed, and applying
//! costs no fsync of its own — applies wait (in memory) for the next round that syncs the log anyway.
//!
//! The tests set `raft_apply_delay` long (30 s) so that applies are deferred for the whole test
//! unless something needs them: what they check does not depend on timing. They crash stores while
//! applies are deferred, restart them, and check every acknowledged write and its revision; that a
//! linearizable read and a conditional write never wait for the delay; that a write racing a
//! leader change is answered OK only if it is applied with the revision it was answered with; and
//! that a leader makes at most one LMDB commit per sequential write.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{seed, Cluster, REGION_ID};
use fekv::proto::{request::Cmd, Precondition, PutRequest, Request};
use fekv::raftstore::Error;

/// Applies wait for a durable round for the whole test unless something needs them.
const LONG_DELAY: Duration = Duration::from_secs(30);

fn deferring(count: u64) -> Cluster {
    Cluster::start(count, seed(), |config| config.raft_apply_delay = LONG_DELAY)
}

fn key(i: usize) -> Vec<u8> {
    format!("key {i:04}").into_bytes()
}

fn value(i: usize) -> Vec<u8> {
    format!("value {i}").into_bytes()
}

/// A write of `key` on the leader `store_id`, with a precondition.
async fn put_if(
    cluster: &Cluster,
    store_id: u64,
    key: &[u8],
    value: &[u8],
    precondition: Precondition,
) -> Result<u64, Error> {
    let put = PutRequest { key: key.to_vec(), value: value.to_vec(), precondition: Some(precondition) };
    let router = cluster.router(store_id);
    let write = router.write(REGION_ID, vec![Request { cmd: Some(Cmd::Put(put)) }]);
    tokio::time::timeout(Duration::from_secs(5), write).await.unwrap_or(Err(Error::Stopped)).map(|w| w.revision)
}

/// Every store holds exactly `acked` (key → (value, revision)) locally, waiting (bounded) for
/// followers to apply. A follower applies what it learns is committed with its next append (the
/// apply delay is long): one more write brings them one.
async fn every_store_holds(cluster: &Cluster, acked: &BTreeMap<Vec<u8>, (Vec<u8>, u64)>) {
    cluster.must_put(b"one more", b"write").await;
    for store_id in cluster.store_ids() {
        for (key, (value, revision)) in acked {
            cluster.wait_local(store_id, key, Some(value)).await;
            let (_, local_revision) = cluster.read_local(store_id, key).unwrap();
            assert_eq!(local_revision, *revision, "store {store_id}, {}", String::from_utf8_lossy(key));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_answered_before_their_apply_survive_a_crash_of_every_store() {
    let mut cluster = deferring(3);
    let leader = cluster.wait_leader().await;
    let mut acked = BTreeMap::new();
    let mut last_revision = 0;
    for i in 0..20 {
        let revision = cluster.must_put(&key(i), &value(i)).await;
        assert!(revision > last_revision, "revisions grow: {revision} after {last_revision}");
        last_revision = revision;
        acked.insert(key(i), (value(i), revision));
    }
    // The last write was answered at commit, and nothing has needed its apply since: the leader
    // has not applied it (no round has synced the log since its commit).
    let leader_now = cluster.wait_leader().await;
    if leader_now == leader {
        assert_eq!(cluster.read_local(leader, &key(19)), None, "applied before anything needed it");
        assert!(cluster.metrics(leader).raft_answered_at_commit.get() >= 19);
    }
    // Crash every store with applies deferred; the log has them.
    cluster.crash_all();
    for store_id in cluster.store_ids() {
        cluster.start_store(store_id);
    }
    cluster.wait_leader().await;
    for (key, (value, revision)) in &acked {
        let read = cluster.get(key, Duration::from_secs(15)).await.unwrap();
        assert_eq!(read, Some((value.clone(), *revision)), "{}", String::from_utf8_lossy(key));
    }
    every_store_holds(&cluster, &acked).await;
    // Applied once, at the revision it was answered with: a write conditioned on that revision
    // succeeds, one conditioned on any other fails.
    let leader = cluster.wait_leader().await;
    let (_, revision) = acked[&key(3)];
    let stale = Precondition { if_match: vec![revision + 1], ..Default::default() };
    assert!(matches!(
        put_if(&cluster, leader, &key(3), b"never", stale).await,
        Err(Error::PreconditionFailed { current_revision: Some(r) }) if r == revision
    ));
    let current = Precondition { if_match: vec![revision], ..Default::default() };
    assert!(put_if(&cluster, leader, &key(3), b"cas", current).await.unwrap() > last_revision);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_and_conditional_writes_never_wait_for_the_apply_delay() {
    let cluster = deferring(3);
    let leader = cluster.wait_leader().await;
    let started = Instant::now();
    let revision = cluster.must_put(b"k", b"v1").await;
    // A linearizable read waits for the apply, and makes it happen now (not in 30 s).
    let read = cluster.get(b"k", Duration::from_secs(5)).await.unwrap();
    assert_eq!(read, Some((b"v1".to_vec(), revision)));
    // A conditional write is answered from its apply, which is committed before the answer: the
    // leader's LMDB holds it when the answer arrives.
    let cas = Precondition { if_match: vec![revision], ..Default::default() };
    let cas_revision = put_if(&cluster, leader, b"k", b"v2", cas).await.unwrap();
    assert_eq!(cluster.read_local(leader, b"k"), Some((b"v2".to_vec(), cas_revision)));
    let failed = Precondition { if_match: vec![revision], ..Default::default() };
    assert!(matches!(
        put_if(&cluster, leader, b"k", b"v3", failed).await,
        Err(Error::PreconditionFailed { current_revision: Some(r) }) if r == cas_revision
    ));
    assert!(started.elapsed() < LONG_DELAY / 2, "took {:?}", started.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_leader_commits_once_per_sequential_write() {
    let cluster = deferring(3);
    let leader = cluster.wait_leader().await;
    cluster.must_put(b"warm up", b"x").await;
    let metrics = cluster.metrics(leader);
    let (commits_before, proposals_before) = (metrics.storage_commits.get(), metrics.raft_proposals.get());
    const WRITES: usize = 40;
    for i in 0..WRITES {
        cluster.must_put(&key(i), &value(i)).await;
    }
    if cluster.wait_leader().await != leader {
        return; // an election in between (a loaded machine) commits more; nothing to count
    }
    let commits = metrics.storage_commits.get() - commits_before;
    let proposals = metrics.raft_proposals.get() - proposals_before;
    assert_eq!(proposals, WRITES as u64);
    // One durable commit per write (its entry), each carrying the previous write's apply. Before
    // applies were deferred it was two (the append, then the apply).
    assert!(commits <= WRITES as u64 + 1, "{commits} commits for {WRITES} writes");
}

/// A plain write and a conditional one, each on a fresh key, proposed on whichever store leads
/// while leadership moves around: every one answered OK is applied, with the revision it was
/// answered with (never a revision the log gave to another entry), on every store.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_racing_leader_changes_are_answered_ok_only_as_applied() {
    let cluster = Arc::new(deferring(3));
    cluster.wait_leader().await;
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mover = {
        let (cluster, stop) = (cluster.clone(), stop.clone());
        tokio::spawn(async move {
            let mut to = 1;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                to = to % 3 + 1;
                if let Some((leader, _)) = cluster.region_leader(REGION_ID).await {
                    let _ = cluster.router(leader).transfer_leader(REGION_ID, to).await;
                }
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        })
    };
    let mut acked: BTreeMap<Vec<u8>, (Vec<u8>, u64)> = BTreeMap::new();
    let deadline = Instant::now() + Duration::from_secs(4);
    let mut i = 0;
    while Instant::now() < deadline {
        i += 1;
        let Some((leader, _)) = cluster.region_leader(REGION_ID).await else { continue };
        let (plain, cas) = (key(2 * i), key(2 * i + 1));
        let router = cluster.router(leader);
        let write = router.write(
            REGION_ID,
            vec![Request {
                cmd: Some(Cmd::Put(PutRequest { key: plain.clone(), value: value(i), precondition: None })),
            }],
        );
        if let Ok(Ok(written)) = tokio::time::timeout(Duration::from_secs(5), write).await {
            acked.insert(plain, (value(i), written.revision));
        }
        let absent = Precondition { if_absent: true, ..Default::default() };
        if let Ok(revision) = put_if(&cluster, leader, &cas, &value(i), absent).await {
            acked.insert(cas, (value(i), revision));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    mover.await.unwrap();
    assert!(acked.len() >= 10, "only {} writes answered OK", acked.len());
    let mut revisions: Vec<u64> = acked.values().map(|(_, r)| *r).collect();
    revisions.sort_unstable();
    revisions.dedup();
    assert_eq!(revisions.len(), acked.len(), "two writes answered with one revision");
    let leader = cluster.wait_leader().await;
    for (key, (value, revision)) in &acked {
        let read = cluster.get(key, Duration::from_secs(15)).await.unwrap();
        assert_eq!(read, Some((value.clone(), *revision)), "{} (leader {leader})", String::from_utf8_lossy(key));
    }
    every_store_holds(&cluster, &acked).await;
}
