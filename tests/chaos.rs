//! Chaos on the in-process cluster (issue 14): one store at a time is cut off and let back in while a
//! membership changer adds and removes peers (the cut-off store's peers half of the time: the case
//! that broke), placement tells stores about peers removed behind their backs, and clients read and
//! write a few shared keys. A cut holds what crosses it and delivers it late, as the gRPC transport's
//! queues do. No raftstore may die, every key's history must be linearizable, and once the network
//! is whole again no store keeps a peer its region has removed.
//!
//! CI runs a few seeds with short rounds (well under a minute in a debug build). `FEKV_SOAK=1` runs
//! more seeds with longer rounds (minutes). Each seed is printed; `FEKV_SEED=<seed>` replays that one.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{seed, Cluster};
use common::linearizability::{self, Event};
use common::wait::eventually;
use fekv::raftstore::PeerStatus;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const STORES: u64 = 5;
const CLIENTS: usize = 3;
const SHARED_KEYS: usize = 8;
/// No isolated store: the changer picks any store.
const NONE: u64 = 0;

/// The seeds to run and how long each one's chaos lasts.
fn plan() -> (Vec<u64>, Duration) {
    let first = seed();
    if std::env::var_os("FEKV_SEED").is_some() {
        return (vec![first], round_time());
    }
    let count = if soak() { 12 } else { 3 };
    let seeds = (0..count).map(|i| first.wrapping_add(0x9e37_79b9_7f4a_7c15u64.wrapping_mul(i))).collect();
    (seeds, round_time())
}

fn soak() -> bool {
    std::env::var_os("FEKV_SOAK").is_some()
}

fn round_time() -> Duration {
    if soak() {
        Duration::from_secs(20)
    } else {
        Duration::from_millis(2500)
    }
}

fn shared_key(k: usize) -> Vec<u8> {
    format!("shared key {k}").into_bytes()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_with_membership_changes_stays_linearizable() {
    let (seeds, round) = plan();
    for (i, seed) in seeds.iter().enumerate() {
        eprintln!("chaos run {}/{}: FEKV_SEED={seed}", i + 1, seeds.len());
        run(*seed, round, false).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn isolation_with_membership_changes_and_splits_stays_linearizable() {
    let (seeds, round) = plan();
    for (i, seed) in seeds.iter().enumerate() {
        eprintln!("chaos run {}/{} with splits: FEKV_SEED={seed}", i + 1, seeds.len());
        run(*seed, round, true).await;
    }
}

async fn run(seed: u64, round: Duration, splits: bool) {
    let cluster = Arc::new(Cluster::start(STORES, seed, |c| {
        if splits {
            c.region_max_size = bytesize::ByteSize::b(300);
        }
    }));
    cluster.network.hold_while_cut(true);
    let stop = Arc::new(AtomicBool::new(false));
    let isolated = Arc::new(AtomicU64::new(NONE));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| tokio::spawn(client(cluster.clone(), c, stop.clone(), seed.wrapping_add(c as u64 + 1))))
        .collect();
    let changer = tokio::spawn(changer(cluster.clone(), stop.clone(), isolated.clone(), seed ^ 0xc4a0_5eed));
    let placement = tokio::spawn(placement(cluster.clone(), stop.clone()));

    // One store at a time is cut off for a while (long enough for a few membership changes), then
    // let back in for a shorter while.
    let mut rng = StdRng::seed_from_u64(seed ^ 0x1501_a7ed);
    let (mut cuts, round_end) = (0, Instant::now() + round);
    while Instant::now() < round_end {
        let pause = if isolated.load(Ordering::Relaxed) == NONE { 50..300 } else { 200..800 };
        tokio::time::sleep(Duration::from_millis(rng.gen_range(pause))).await;
        match isolated.load(Ordering::Relaxed) {
            NONE => {
                let store_id = rng.gen_range(1..=STORES);
                cluster.network.isolate(store_id);
                isolated.store(store_id, Ordering::Relaxed);
                cuts += 1;
            }
            store_id => {
                cluster.network.rejoin(store_id);
                isolated.store(NONE, Ordering::Relaxed);
            }
        }
    }
    cluster.network.heal();
    isolated.store(NONE, Ordering::Relaxed);
    stop.store(true, Ordering::Relaxed);

    let changes = tokio::time::timeout(Duration::from_secs(30), changer).await.expect("the changer stops").unwrap();
    let reports = tokio::time::timeout(Duration::from_secs(30), placement).await.expect("placement stops").unwrap();
    let mut histories: Vec<Vec<Event>> = vec![Vec::new(); SHARED_KEYS];
    for task in clients {
        let log = tokio::time::timeout(Duration::from_secs(30), task).await.expect("a client stops").unwrap();
        for (k, event) in log {
            histories[k].push(event);
        }
    }
    let dead = cluster.dead_raftstores();
    assert!(dead.is_empty(), "seed {seed}: raftstores died: {dead:?}");
    for (k, history) in histories.iter().enumerate() {
        if let Err(err) = linearizability::check(history) {
            panic!("seed {seed}: shared key {k}: {err}");
        }
    }
    let operations: usize = histories.iter().map(Vec::len).sum();
    assert!(operations > 0, "seed {seed}: no client operation was recorded");
    assert!(changes > 0, "seed {seed}: the changer never changed anything");
    // With the network whole, every removed peer learns it is gone (from a member or placement).
    eventually(Duration::from_secs(20), "every store to drop the peers its regions removed", || async {
        cluster.report_stale_peers().await;
        no_stale_peers(&cluster).await
    })
    .await;
    let regions = cluster.regions().await.len();
    eprintln!(
        "seed {seed}: {cuts} cuts, {changes} membership changes, {reports} stale-peer reports, \
         {operations} linearizable operations, {regions} regions"
    );
}

/// Whether every initialized peer on every store is listed by its region's leader (the one of the
/// highest term; a region without a leader right now does not count as settled).
async fn no_stale_peers(cluster: &Cluster) -> bool {
    let statuses = cluster.all_statuses().await;
    let mut leaders: BTreeMap<u64, &PeerStatus> = BTreeMap::new();
    for peer in statuses.values().flatten().filter(|p| p.role == "leader") {
        let known = leaders.entry(peer.region.region_id).or_insert(peer);
        if peer.term > known.term {
            *known = peer;
        }
    }
    statuses.values().flatten().filter(|p| p.initialized).all(|peer| {
        leaders.get(&peer.region.region_id).is_some_and(|l| l.region.peers.iter().any(|p| p.peer_id == peer.peer_id))
    })
}

/// Placement's stale-peer word, every heartbeat (100 ms here). Returns how many peers it reported.
async fn placement(cluster: Arc<Cluster>, stop: Arc<AtomicBool>) -> usize {
    let mut reports = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        reports += cluster.report_stale_peers().await;
    }
    reports
}

/// Every 0–200 ms, adds or removes one peer of a random region, as placement's operators would: on
/// the cut-off store half of the time, else on a random one. A region keeps 2 to 5 peers. A refused
/// or timed-out change is simply dropped.
async fn changer(cluster: Arc<Cluster>, stop: Arc<AtomicBool>, isolated: Arc<AtomicU64>, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut changes = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..200))).await;
        let Some(region) = cluster.random_region(&mut rng).await else { continue };
        let cut_off = isolated.load(Ordering::Relaxed);
        let store_id = if cut_off != NONE && rng.gen_bool(0.5) { cut_off } else { rng.gen_range(1..=STORES) };
        if cluster.flip_peer(&region, store_id, 2).await {
            changes += 1;
        }
    }
    changes
}

/// Puts and gets of the shared keys, each recorded with its call and return times (a put whose
/// outcome is unknown has no return). Every get must succeed within 10 s.
async fn client(cluster: Arc<Cluster>, client: usize, stop: Arc<AtomicBool>, seed: u64) -> Vec<(usize, Event)> {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = Vec::new();
    let mut puts = 0u64;
    while !stop.load(Ordering::Relaxed) {
        let k = rng.gen_range(0..SHARED_KEYS);
        let event = if rng.gen_bool(0.5) {
            // Long values fill a tiny region with two keys, so the split variant splits between them.
            let value = format!("client {client} seed {seed} put {puts} {}", "x".repeat(150)).into_bytes();
            puts += 1;
            linearizability::recorded_put(&cluster, client, &shared_key(k), value, Duration::from_secs(10)).await
        } else {
            match linearizability::recorded_get(&cluster, client, &shared_key(k), Duration::from_secs(10)).await {
                Ok(get) => get,
                Err(err) => panic!("client {client}: a get failed for 10 s: {err}"),
            }
        };
        log.push((k, event));
    }
    log
}
