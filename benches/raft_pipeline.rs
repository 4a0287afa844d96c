//! The write path below HTTP: `Router::write` — propose, commit to the raft log and apply, all in the
//! raftstore's LMDB transaction for the round — measured one write at a time, and as batches of 64
//! concurrent writes (which the raftstore group-commits into few rounds). Once on a single node
//! (`raft_pipeline`), once on the leader of three stores replicating over the in-process transport
//! (`raft_pipeline_3_nodes`: each store a real raftstore with its own LMDB environment, the network
//! a `SimNetwork` with no loss and no delay).
//!
//! `cargo bench --bench raft_pipeline`. Keys are drawn with a fixed seed.

use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fekv::config::Config;
use fekv::node::Node;
use fekv::proto::{self, request::Cmd};
use fekv::raftstore::Router;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

// Each user of the test helpers takes the part it needs.
#[allow(dead_code)]
#[path = "../tests/common/cluster.rs"]
mod cluster;
#[allow(dead_code)]
#[path = "../tests/common/wait.rs"]
mod wait;

use cluster::Cluster;

const KEYS: u64 = 10_000;
const VALUE_SIZE: usize = 100;
const BATCH: u64 = 64;
const SEED: u64 = 42;

fn put(rng: &mut StdRng) -> Vec<proto::Request> {
    let key = format!("k{:08}", rng.gen_range(0..KEYS)).into_bytes();
    vec![proto::Request {
        cmd: Some(Cmd::Put(proto::PutRequest { key, value: vec![b'v'; VALUE_SIZE], precondition: None })),
    }]
}

/// Waits for the node's single region to elect itself, within 10 s.
async fn must_have_leader(router: &Router) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Ok(peers) = router.status().await {
            if peers.iter().any(|peer| peer.role == "leader") {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no leader within 10s");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

fn bench_config(data_dir: &std::path::Path) -> Config {
    Config { data_dir: data_dir.to_path_buf(), raft_tick_interval: Duration::from_millis(20), ..Config::default() }
}

/// Both measurements against `router`'s region 1.
fn bench_writes(c: &mut Criterion, name: &str, runtime: &tokio::runtime::Runtime, router: &Router) {
    let region_id = router.locate(b"k").expect("region 1 holds every key").region_id;
    let mut rng = StdRng::seed_from_u64(SEED);
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(1));
    group.bench_function("write_one_at_a_time", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    router.write(region_id, put(&mut rng)).await.expect("the write applies");
                }
                started.elapsed()
            })
        })
    });
    group.throughput(Throughput::Elements(BATCH));
    group.bench_function("write_64_concurrent", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let started = Instant::now();
                for _ in 0..iters {
                    let mut writes = tokio::task::JoinSet::new();
                    for _ in 0..BATCH {
                        let (router, requests) = (router.clone(), put(&mut rng));
                        writes.spawn(async move { router.write(region_id, requests).await });
                    }
                    while let Some(result) = writes.join_next().await {
                        result.expect("the write task ran").expect("the write applies");
                    }
                }
                started.elapsed()
            })
        })
    });
    group.finish();
}

fn one_node(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let node = Node::start(&bench_config(dir.path())).expect("the node starts");
    let router = node.router().clone();
    runtime.block_on(must_have_leader(&router));
    bench_writes(c, "raft_pipeline", &runtime, &router);
    drop(router);
    node.stop();
}

fn three_nodes(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    // The replication tests' in-process cluster: three stores holding region 1, over a SimNetwork
    // that neither drops nor delays. Dropping it stops the stores.
    let cluster = Cluster::start(3, SEED, |_| {});
    let leader = runtime.block_on(cluster.wait_leader());
    bench_writes(c, "raft_pipeline_3_nodes", &runtime, &cluster.router(leader));
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = one_node, three_nodes
}
criterion_main!(benches);
