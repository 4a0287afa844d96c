//! tinykv's part 2 test matrix (`kv/test_raftstore/test_test.go`) on the in-process cluster: five
//! stores, clients writing their own keys while the network partitions, drops messages and stores
//! crash, and after every round each client's acknowledged writes must all be there, exactly as
//! written, in the order they were acknowledged (their revisions grow).
//!
//! Rounds are short by default so the suite fits CI; `FEKV_SOAK=1` runs tinykv's full 3 × 5 s.
//! Each test prints its seed; `FEKV_SEED=<seed>` replays a failure's network and chaos schedule.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::cluster::{seed, Cluster};
use common::linearizability::{self, Event};
use common::wait::eventually;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

#[derive(Clone, Copy, Default)]
struct Spec {
    clients: usize,
    unreliable: bool,
    crash: bool,
    partitions: bool,
    /// Log GC threshold; also checks that idle stores keep applied − truncated ≤ 2 × this.
    max_raft_log: Option<u64>,
    /// Tiny regions (300 bytes, as in tinykv), so the keyspace splits many times.
    split: bool,
    /// A conf changer adds and removes random peers of random regions while the clients run.
    confchange: bool,
}

/// tinykv's confchanger: every 0–200 ms, a random store's peer of a random region is removed if it
/// has one (never the last peer), else one is added there. Requests go to the region's leader, like
/// placement's operators; a refused one (another change in flight, no leader) is simply dropped.
async fn confchanger(cluster: Arc<Cluster>, stop: Arc<AtomicBool>, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let stores = cluster.store_ids();
    let mut changes = 0;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(rng.gen_range(0..200))).await;
        let Some(region) = cluster.random_region(&mut rng).await else { continue };
        let store_id = stores[rng.gen_range(0..stores.len())];
        if cluster.flip_peer(&region, store_id, 1).await {
            changes += 1;
        }
    }
    changes
}

fn soak() -> bool {
    std::env::var_os("FEKV_SOAK").is_some()
}

fn key(client: usize, j: u64) -> Vec<u8> {
    format!("{client:02} {j:08}").into_bytes()
}

fn value(client: usize, j: u64) -> Vec<u8> {
    format!("x {client} {j} y").into_bytes()
}

/// Keys every client reads and writes (in the partition tests), whose histories are checked for
/// linearizability.
const SHARED_KEYS: usize = 3;

fn shared_key(k: usize) -> Vec<u8> {
    format!("shared {k}").into_bytes()
}

/// What one client did in a round.
#[derive(Default)]
struct ClientLog {
    /// Revisions of its acknowledged writes to its own keys, in order.
    revisions: Vec<u64>,
    /// Its operations on the shared keys: (key, event).
    shared: Vec<(usize, Event)>,
}

/// One client: writes its own keys in sequence, and half of the time reads one of them back instead.
/// With `shared`, a quarter of its operations are puts and gets of the shared keys, recorded with
/// their call and return times.
async fn client(cluster: Arc<Cluster>, client: usize, stop: Arc<AtomicBool>, seed: u64, shared: bool) -> ClientLog {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut log = ClientLog::default();
    let mut shared_puts = 0u64;
    while !stop.load(Ordering::Relaxed) {
        if shared && rng.gen_bool(0.25) {
            let (k, timeout) = (rng.gen_range(0..SHARED_KEYS), Duration::from_secs(10));
            let key = shared_key(k);
            if rng.gen_bool(0.5) {
                let value = format!("c{client} s{seed} n{shared_puts}").into_bytes();
                shared_puts += 1;
                log.shared.push((k, linearizability::recorded_put(&cluster, client, &key, value, timeout).await));
            } else if let Ok(get) = linearizability::recorded_get(&cluster, client, &key, timeout).await {
                log.shared.push((k, get));
            }
            continue;
        }
        let revisions = &mut log.revisions;
        let j = revisions.len() as u64;
        if j == 0 || rng.gen_bool(0.5) {
            match cluster.put(&key(client, j), &value(client, j), Duration::from_secs(10)).await {
                Ok(revision) => revisions.push(revision),
                Err(err) => panic!("client {client}: put {j} failed for 10s: {err}"),
            }
        } else {
            let j = rng.gen_range(0..j);
            match cluster.get(&key(client, j), Duration::from_secs(10)).await {
                Ok(Some((read, _))) => assert_eq!(read, value(client, j), "client {client} read back key {j}"),
                Ok(None) => panic!("client {client}: acknowledged key {j} is missing"),
                Err(err) => panic!("client {client}: get {j} failed for 10s: {err}"),
            }
        }
    }
    log
}

async fn generic_test(spec: Spec) {
    let histories = run_generic_test(spec).await;
    // Every shared key's history, across all rounds, has a linearization.
    for (k, history) in histories.iter().enumerate() {
        if let Err(err) = linearizability::check(history) {
            panic!("shared key {k}: {err}");
        }
    }
    if spec.partitions {
        let (operations, unknown) = (
            histories.iter().map(Vec::len).sum::<usize>(),
            histories.iter().flatten().filter(|e| e.ret.is_none()).count(),
        );
        eprintln!(
            "linearizable: {operations} operations on {SHARED_KEYS} shared keys ({unknown} with unknown outcome)"
        );
        assert!(operations > 0, "no shared-key operations were recorded");
    }
}

/// Runs the rounds; returns the histories of the shared keys.
async fn run_generic_test(spec: Spec) -> Vec<Vec<Event>> {
    let seed = seed();
    let (rounds, round_time) = if soak() { (3, Duration::from_secs(5)) } else { (3, Duration::from_millis(1500)) };
    let mut cluster = Arc::new(Cluster::start(5, seed, |c| {
        if let Some(limit) = spec.max_raft_log {
            c.raft_log_gc_threshold = limit;
        }
        if spec.split {
            c.region_max_size = bytesize::ByteSize::b(300);
        }
    }));
    let mut rng = StdRng::seed_from_u64(seed ^ 0x5eed);
    let mut histories: Vec<Vec<Event>> = vec![Vec::new(); SHARED_KEYS];
    let mut membership_changes = 0;
    for round in 0..rounds {
        let shared = cluster.clone();
        let stop = Arc::new(AtomicBool::new(false));
        let clients: Vec<_> = (0..spec.clients)
            .map(|c| {
                let client_seed = seed.wrapping_add((round * 100 + c) as u64);
                tokio::spawn(client(shared.clone(), c, stop.clone(), client_seed, spec.partitions))
            })
            .collect();
        let changer = spec
            .confchange
            .then(|| tokio::spawn(confchanger(shared.clone(), stop.clone(), seed.wrapping_add(round as u64 * 7919))));
        // Chaos, every 100–200 ms, until the round ends.
        let round_end = Instant::now() + round_time;
        while Instant::now() < round_end {
            tokio::time::sleep(Duration::from_millis(rng.gen_range(100..200))).await;
            if spec.partitions {
                let (mut left, mut right) = (Vec::new(), Vec::new());
                for store_id in shared.store_ids() {
                    if rng.gen_bool(0.5) {
                        left.push(store_id)
                    } else {
                        right.push(store_id)
                    }
                }
                shared.network.partition(&[left, right]);
            }
            if spec.unreliable {
                shared.network.set_drop_rate(0.1);
            }
        }
        stop.store(true, Ordering::Relaxed);
        shared.network.heal();
        if let Some(changer) = changer {
            let changes = tokio::time::timeout(Duration::from_secs(30), changer).await.expect("changer stops").unwrap();
            eprintln!("round {round}: {changes} membership changes");
            membership_changes += changes;
        }
        let mut all_revisions = Vec::new();
        for task in clients {
            let log = tokio::time::timeout(Duration::from_secs(30), task).await.expect("client stops").unwrap();
            for (k, event) in log.shared {
                histories[k].push(event);
            }
            all_revisions.push(log.revisions);
        }
        drop(shared);
        if spec.crash {
            Arc::get_mut(&mut cluster).expect("clients have stopped").restart_all();
        }
        // Every acknowledged write is there, as written; revisions grow in acknowledgement order.
        for (c, revisions) in all_revisions.iter().enumerate() {
            // Revisions are raft indexes of the key's region: comparable only while the keys share one.
            if !spec.split {
                assert!(revisions.windows(2).all(|w| w[0] < w[1]), "client {c}: revisions out of order: {revisions:?}");
            }
            for (j, revision) in revisions.iter().enumerate() {
                let got = cluster.get(&key(c, j as u64), Duration::from_secs(15)).await.expect("read after the round");
                let (read, read_revision) =
                    got.unwrap_or_else(|| panic!("round {round}: client {c} lost acknowledged key {j}"));
                assert_eq!(read, value(c, j as u64), "round {round}: client {c} key {j}");
                assert_eq!(read_revision, *revision, "round {round}: client {c} key {j} was written again");
            }
        }
        // A scan of each client's keys (across however many regions they now span) returns exactly
        // what it wrote, in order.
        for (c, revisions) in all_revisions.iter().enumerate() {
            let n = revisions.len() as u64;
            let scanned =
                cluster.scan(&key(c, 0), &key(c, n), Duration::from_secs(15)).await.expect("scan after the round");
            let expected: Vec<(Vec<u8>, Vec<u8>)> = (0..n).map(|j| (key(c, j), value(c, j))).collect();
            assert_eq!(
                scanned.len(),
                expected.len(),
                "round {round}: client {c} scanned {} of {n} keys",
                scanned.len()
            );
            assert!(scanned == expected, "round {round}: client {c}'s scan differs from what it wrote");
        }
        if let Some(limit) = spec.max_raft_log {
            wait_log_compacted(&cluster, limit, !spec.confchange).await;
        }
        // Clean up, as tinykv does, so the next round starts from empty keys.
        for (c, revisions) in all_revisions.iter().enumerate() {
            for j in 0..revisions.len() {
                cluster.must_delete(&key(c, j as u64)).await;
            }
        }
    }
    if spec.confchange {
        assert!(membership_changes > 0, "the conf changer never changed anything");
    }
    if spec.split {
        let regions = cluster.regions().await;
        assert!(regions.len() > 1, "the keyspace never split: {regions:?}");
        assert!(!regions[0].end_key.is_empty(), "the first region still covers everything");
        eprintln!("split into {} regions", regions.len());
    }
    histories
}

/// Idle, every store keeps its raft log within twice the GC threshold. With `everywhere`, every store
/// must hold region 1 (no membership changes moved it).
async fn wait_log_compacted(cluster: &Cluster, limit: u64, everywhere: bool) {
    // A write makes the leader tick over its compaction check with everything applied.
    cluster.must_put(b"gc-nudge", b"x").await;
    eventually(Duration::from_secs(10), &format!("raft logs within 2 × {limit}"), || async {
        let statuses = cluster.statuses().await;
        let over: Vec<_> = cluster
            .all_statuses()
            .await
            .into_iter()
            .flat_map(|(store_id, peers)| peers.into_iter().map(move |s| (store_id, s)))
            .filter(|(_, s)| s.applied_index - s.truncated_index > 2 * limit)
            .map(|(store_id, s)| (store_id, s.region.region_id, s.applied_index, s.truncated_index))
            .collect();
        if over.is_empty() && (!everywhere || statuses.len() == cluster.store_ids().len()) {
            Ok(())
        } else {
            Err(format!("(store, region, applied, truncated) over: {over:?}; {} stores hold region 1", statuses.len()))
        }
    })
    .await;
}

macro_rules! generic {
    ($name:ident, $($field:ident : $value:expr),*) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        #[allow(clippy::needless_update)] // some tests set every field
        async fn $name() {
            generic_test(Spec { $($field: $value,)* ..Spec::default() }).await;
        }
    };
}

// ---- 2B ----
generic!(test_basic_2b, clients: 1);
generic!(test_concurrent_2b, clients: 5);
generic!(test_unreliable_2b, clients: 5, unreliable: true);
generic!(test_many_partitions_one_client_2b, clients: 1, partitions: true);
generic!(test_many_partitions_many_clients_2b, clients: 5, partitions: true);
generic!(test_persist_one_client_2b, clients: 1, crash: true);
generic!(test_persist_concurrent_2b, clients: 5, crash: true);
generic!(test_persist_concurrent_unreliable_2b, clients: 5, unreliable: true, crash: true);
generic!(test_persist_partition_2b, clients: 5, crash: true, partitions: true);
generic!(test_persist_partition_unreliable_2b, clients: 5, unreliable: true, crash: true, partitions: true);

// ---- 2C ----
generic!(test_snapshot_recover_2c, clients: 1, crash: true, max_raft_log: Some(100));
generic!(test_snapshot_recover_many_clients_2c, clients: 20, crash: true, max_raft_log: Some(100));
generic!(test_snapshot_unreliable_2c, clients: 5, unreliable: true, max_raft_log: Some(100));
generic!(test_snapshot_unreliable_recover_2c, clients: 5, unreliable: true, crash: true, max_raft_log: Some(100));
generic!(
    test_snapshot_unreliable_recover_concurrent_partition_2c,
    clients: 5, unreliable: true, crash: true, partitions: true, max_raft_log: Some(100)
);

/// TestOnePartition2B: a minority keeps its old value and cannot change it; after healing, the old
/// leader has the majority's values.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_one_partition_2b() {
    let cluster = Cluster::start(5, seed(), |_| {});
    cluster.must_put(b"k1", b"v1").await;
    // Answered once committed on a majority: wait until every store has applied it, so the minority
    // cut off next holds it.
    for store_id in cluster.store_ids() {
        cluster.wait_local(store_id, b"k1", Some(b"v1")).await;
    }
    let leader = cluster.wait_leader().await;
    // Every store applied v1 before the cut (a follower learns the commit from the leader's next
    // message, which a partition right after the write can stop).
    for store_id in cluster.store_ids() {
        cluster.wait_local(store_id, b"k1", Some(b"v1")).await;
    }
    let others: Vec<u64> = cluster.store_ids().into_iter().filter(|s| *s != leader).collect();
    // The leader with a majority of three: writes go on, the two cut off lag behind.
    let (minority, majority_rest) = (others[..2].to_vec(), others[2..].to_vec());
    let mut majority = vec![leader];
    majority.extend(&majority_rest);
    cluster.network.partition(&[majority.clone(), minority.clone()]);
    cluster.must_put(b"k1", b"changed").await;
    for store_id in &minority {
        assert_eq!(cluster.read_local(*store_id, b"k1").map(|(v, _)| v), Some(b"v1".to_vec()));
    }
    // Now the old leader is cut off with one other store: the remaining three elect a leader and
    // overwrite k1, while the two keep the old value and cannot change it.
    let new_minority = vec![leader, minority[0]];
    let mut new_majority = majority_rest.clone();
    new_majority.push(minority[1]);
    cluster.network.partition(&[new_minority.clone(), new_majority.clone()]);
    let router = cluster.router(leader);
    let put = |value: &[u8]| fekv::proto::Request {
        cmd: Some(fekv::proto::request::Cmd::Put(fekv::proto::PutRequest {
            key: b"k1".to_vec(),
            value: value.to_vec(),
            precondition: None,
        })),
    };
    let stale = router.write(1, vec![put(b"stale")]).await;
    assert!(stale.is_err(), "a leader cut off from its majority acknowledged a write: {stale:?}");
    cluster.must_put(b"k1", b"changed twice").await;
    for store_id in &new_minority {
        assert_ne!(cluster.read_local(*store_id, b"k1").map(|(v, _)| v), Some(b"changed twice".to_vec()));
    }
    cluster.network.heal();
    for store_id in cluster.store_ids() {
        cluster.wait_local(store_id, b"k1", Some(b"changed twice")).await;
    }
}

/// TestOneSnapshot2C: a store cut off while the log is compacted catches up through a snapshot,
/// which brings deletes too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_one_snapshot_2c() {
    let mut cluster = Cluster::start(3, seed(), |c| c.raft_log_gc_threshold = 10);
    cluster.must_put(b"k1", b"v1").await;
    cluster.must_put(b"k2", b"v2").await;
    for store_id in cluster.store_ids() {
        cluster.wait_local(store_id, b"k2", Some(b"v2")).await;
    }
    let isolated = 1;
    cluster.network.isolate(isolated);
    for i in 0..50 {
        cluster.must_put(format!("k{}", 100 + i).as_bytes(), b"v").await;
    }
    cluster.must_delete(b"k2").await;
    cluster.must_put(b"k100", b"v100").await;
    // The others compact their logs past what the isolated store has.
    eventually(Duration::from_secs(10), "the logs compacted past the isolated store", || async {
        let statuses = cluster.statuses().await;
        let behind = statuses[&isolated].applied_index;
        if statuses.iter().filter(|(s, _)| **s != isolated).all(|(_, st)| st.truncated_index > behind) {
            return Ok(());
        }
        cluster.must_put(b"nudge", b"x").await;
        Err(format!("{statuses:?}"))
    })
    .await;
    cluster.network.heal();
    cluster.wait_local(isolated, b"k100", Some(b"v100")).await;
    cluster.wait_local(isolated, b"k1", Some(b"v1")).await;
    cluster.wait_local(isolated, b"k2", None).await;
    let received = cluster.metrics(isolated).render();
    assert!(
        received.contains("fekv_raft_snapshots_total{event=\"received\"} 1")
            || received
                .lines()
                .any(|l| l.starts_with("fekv_raft_snapshots_total{event=\"received\"}") && !l.ends_with(" 0")),
        "no snapshot received:\n{received}"
    );
    // After a restart the store still has it, and its log stays short.
    cluster.restart(isolated);
    cluster.wait_local(isolated, b"k100", Some(b"v100")).await;
    wait_log_compacted(&cluster, 10, true).await;
}

// ---- 3B: splits ----
generic!(test_split_recover_3b, clients: 1, crash: true, split: true);
generic!(test_split_recover_many_clients_3b, clients: 20, crash: true, split: true);
generic!(test_split_unreliable_3b, clients: 5, unreliable: true, split: true);
generic!(test_split_unreliable_recover_3b, clients: 5, unreliable: true, crash: true, split: true);

/// TestOneSplit3B: a region past its size splits into two adjacent regions covering the original
/// range; a key sent to the wrong one is refused with KeyNotInRegion; a store cut off meanwhile
/// catches up after healing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_one_split_3b() {
    let cluster = Cluster::start(5, seed(), |c| c.region_max_size = bytesize::ByteSize::b(800));
    cluster.must_put(b"k1", b"v1").await;
    cluster.must_put(b"k2", b"v2").await;
    let leader = cluster.wait_leader().await;
    let isolated = cluster.store_ids().into_iter().find(|s| *s != leader).unwrap();
    cluster.network.isolate(isolated);
    let mut before_split = 0;
    for i in 100..200 {
        before_split = cluster.must_put(format!("k{i}").as_bytes(), b"some value to fill the region").await;
    }
    let regions = eventually(Duration::from_secs(15), "a split", || async {
        let regions = cluster.regions().await;
        if regions.len() >= 2 {
            Ok(regions)
        } else {
            Err(format!("{regions:?}"))
        }
    })
    .await;
    // Adjacent ranges covering everything.
    assert!(regions[0].start_key.is_empty() && regions.last().unwrap().end_key.is_empty(), "{regions:?}");
    for pair in regions.windows(2) {
        assert_eq!(pair[0].end_key, pair[1].start_key, "{regions:?}");
        assert!(pair[0].epoch.unwrap().version > 1 && pair[1].epoch.unwrap().version > 1);
    }
    // k1 (left) and k199 (right) are in different regions; a key sent to the wrong one is refused.
    let router = cluster.router(leader);
    let left = router.locate(b"k1").unwrap();
    let right_key = b"k199".to_vec();
    assert!(!fekv::raftstore::region_map::region_contains(&left, &right_key), "{regions:?}");
    let wrong = router
        .write(
            left.region_id,
            vec![fekv::proto::Request {
                cmd: Some(fekv::proto::request::Cmd::Put(fekv::proto::PutRequest {
                    key: right_key.clone(),
                    value: b"x".to_vec(),
                    precondition: None,
                })),
            }],
        )
        .await;
    assert!(
        matches!(
            wrong,
            Err(fekv::raftstore::Error::KeyNotInRegion { .. }) | Err(fekv::raftstore::Error::NotLeader { .. })
        ),
        "{wrong:?}"
    );
    assert_eq!(cluster.must_get(b"k1").await.as_deref(), Some(&b"v1"[..]));
    assert_eq!(cluster.must_get(b"k199").await.as_deref(), Some(&b"some value to fill the region"[..]));
    // k199 now lives in the new region, whose log continues above the parent's: its revision grows.
    let after_split = cluster.must_put(b"k199", b"some value to fill the region").await;
    assert!(after_split > before_split, "revision went from {before_split} to {after_split} across the split");
    // The isolated store applies the split and every write once it hears from the others again.
    cluster.network.heal();
    cluster.wait_local(isolated, b"k100", Some(b"some value to fill the region")).await;
    cluster.wait_local(isolated, b"k199", Some(b"some value to fill the region")).await;
}

// ---- 3B: membership changes ----
generic!(test_conf_change_recover_3b, clients: 1, crash: true, confchange: true);
generic!(test_conf_change_recover_many_clients_3b, clients: 20, crash: true, confchange: true);
generic!(test_conf_change_unreliable_3b, clients: 5, unreliable: true, confchange: true);
generic!(test_conf_change_unreliable_recover_3b, clients: 5, unreliable: true, crash: true, confchange: true);
generic!(
    test_conf_change_snapshot_unreliable_recover_3b,
    clients: 5, unreliable: true, crash: true, max_raft_log: Some(100), confchange: true
);
generic!(
    test_conf_change_snapshot_unreliable_recover_concurrent_partition_3b,
    clients: 5, unreliable: true, crash: true, partitions: true, max_raft_log: Some(100), confchange: true
);
generic!(
    test_split_conf_change_snapshot_unreliable_recover_3b,
    clients: 5, unreliable: true, crash: true, max_raft_log: Some(100), confchange: true, split: true
);
generic!(
    test_split_conf_change_snapshot_unreliable_recover_concurrent_partition_3b,
    clients: 5, unreliable: true, crash: true, partitions: true, max_raft_log: Some(100), confchange: true, split: true
);

/// TestBasicConfChange3B: shrink region 1 to one peer, grow it back; a new peer gets everything by
/// snapshot, a removed one loses everything, and a peer re-added on a store that held one before
/// starts clean.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_basic_conf_change_3b() {
    let cluster = Cluster::start(5, seed(), |_| {});
    cluster.must_transfer_leader(1, 1).await;
    for store_id in 2..=5 {
        cluster.must_remove_peer(1, store_id).await;
    }
    // Region 1 is only (store 1) now: a write reaches no one else.
    cluster.must_put(b"k1", b"v1").await;
    for store_id in 2..=5 {
        cluster.wait_local(store_id, b"k1", None).await;
    }
    cluster.must_add_peer(1, 2).await;
    cluster.must_put(b"k2", b"v2").await;
    assert_eq!(cluster.must_get(b"k2").await.as_deref(), Some(&b"v2"[..]));
    cluster.wait_local(2, b"k1", Some(b"v1")).await;
    cluster.wait_local(2, b"k2", Some(b"v2")).await;
    let (_, leader_view) = cluster.region_leader(1).await.expect("a leader");
    assert!(leader_view.region.epoch.unwrap().conf_ver > 1, "{:?}", leader_view.region);
    cluster.wait_local(5, b"k1", None).await;

    cluster.must_add_peer(1, 3).await;
    cluster.must_remove_peer(1, 2).await;
    cluster.must_put(b"k3", b"v3").await;
    assert_eq!(cluster.must_get(b"k3").await.as_deref(), Some(&b"v3"[..]));
    for (key, value) in [(&b"k1"[..], &b"v1"[..]), (b"k2", b"v2"), (b"k3", b"v3")] {
        cluster.wait_local(3, key, Some(value)).await;
    }
    // Store 2's peer was destroyed with its data.
    cluster.wait_local(2, b"k1", None).await;
    cluster.wait_local(2, b"k2", None).await;

    // Back on store 2 (a new peer: fresh id), it gets everything again.
    cluster.must_add_peer(1, 2).await;
    cluster.wait_local(2, b"k1", Some(b"v1")).await;
    cluster.wait_local(2, b"k3", Some(b"v3")).await;
    cluster.must_remove_peer(1, 2).await;
    cluster.must_add_peer(1, 2).await;
    cluster.must_remove_peer(1, 3).await;
    cluster.must_put(b"k4", b"v4").await;
    cluster.wait_local(2, b"k1", Some(b"v1")).await;
    cluster.wait_local(2, b"k4", Some(b"v4")).await;
    cluster.wait_local(3, b"k1", None).await;
    cluster.wait_local(3, b"k4", None).await;
    let destroyed = cluster.metrics(3).render();
    assert!(
        destroyed.lines().any(|l| l.starts_with("fekv_raft_peers_destroyed_total ") && !l.ends_with(" 0")),
        "store 3 never destroyed its peer:\n{destroyed}"
    );
}

/// TestConfChangeRemoveLeader3B: the leader can remove itself from a region of three or more; the
/// others carry on and it sees none of the later writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_conf_change_remove_leader_3b() {
    let cluster = Cluster::start(5, seed(), |_| {});
    cluster.must_transfer_leader(1, 1).await;
    cluster.must_remove_peer(1, 1).await;
    cluster.must_put(b"k0", b"v0").await;
    cluster.wait_local(1, b"k0", None).await;
    // Rejoin and lead again: store 1 sees everything.
    cluster.must_add_peer(1, 1).await;
    cluster.must_transfer_leader(1, 1).await;
    cluster.must_put(b"k1", b"v1").await;
    cluster.wait_local(1, b"k0", Some(b"v0")).await;
    cluster.wait_local(1, b"k1", Some(b"v1")).await;
    cluster.must_remove_peer(1, 2).await;
    cluster.must_put(b"k2", b"v2").await;
    cluster.wait_local(2, b"k2", None).await;
    cluster.must_transfer_leader(1, 3).await;
    cluster.must_remove_peer(1, 1).await;
    cluster.must_put(b"k3", b"v3").await;
    for store_id in [3, 4, 5] {
        cluster.wait_local(store_id, b"k3", Some(b"v3")).await;
    }
    cluster.wait_local(1, b"k3", None).await;
}

/// The leader of a 2-peer region refuses to remove itself (it could leave the other peer unable to
/// learn the change committed and unable to win an election), and a second change while one is in
/// flight, or a duplicate, gets a defined answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn test_conf_change_guards() {
    use fekv::proto::ConfChangeType::{AddNode, RemoveNode};
    let cluster = Cluster::start(3, seed(), |_| {});
    cluster.must_transfer_leader(1, 1).await;
    cluster.must_remove_peer(1, 3).await;
    let (_, view) = cluster.region_leader(1).await.unwrap();
    let me = *view.region.peers.iter().find(|p| p.store_id == 1).unwrap();
    let router = cluster.router(1);
    let refused = router.change_peer(1, RemoveNode, me).await;
    assert!(matches!(refused, Err(fekv::raftstore::Error::InvalidChange { .. })), "{refused:?}");
    // A duplicate add of a member is answered at once; a second peer on one store is refused.
    let other = *view.region.peers.iter().find(|p| p.store_id == 2).unwrap();
    router.change_peer(1, AddNode, other).await.expect("a duplicate add is a no-op");
    let twice = router.change_peer(1, AddNode, fekv::proto::Peer { peer_id: cluster.alloc_id(), store_id: 2 }).await;
    assert!(matches!(twice, Err(fekv::raftstore::Error::InvalidChange { .. })), "{twice:?}");
    // Removing a peer that is gone is a no-op too.
    router.change_peer(1, RemoveNode, fekv::proto::Peer { peer_id: 3, store_id: 3 }).await.expect("already removed");
    cluster.must_put(b"k", b"v").await;
    cluster.wait_local(2, b"k", Some(b"v")).await;
}
