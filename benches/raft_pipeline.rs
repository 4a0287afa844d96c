//! The write path below HTTP: `Router::write` — propose, commit to the raft log and apply, all in the
//! raftstore's LMDB transaction for the round — measured one write at a time, and as batches of 64
//! concurrent writes (which the raftstore group-commits into few rounds). Once on a single node
//! (`raft_pipeline`), once on the leader of three stores replicating over the in-process transport
//! (`raft_pipeline_3_nodes`: each store a real raftstore with its own LMDB environment, the network
//! a `SimNetwork` with no loss and no delay).
//!
//! `cargo bench --bench raft_pipeline`. Keys are drawn with a fixed seed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fekv::config::Config;
use fekv::metrics::Metrics;
use fekv::node::{bootstrap_store, engine_options, store_config, Node};
use fekv::proto::{self, request::Cmd, Peer, Region, RegionEpoch};
use fekv::raftstore::split_check::IdAllocator;
use fekv::raftstore::{store, Router};
use fekv::storage::Engine;
use fekv::transport::sim::SimNetwork;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

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

/// The store whose peer of region 1 is leader, once there is one (within 10 s).
async fn wait_leader(routers: &[Router]) -> usize {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        for (i, router) in routers.iter().enumerate() {
            if let Ok(peers) = router.status().await {
                if peers.iter().any(|peer| peer.role == "leader") {
                    return i;
                }
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
    runtime.block_on(wait_leader(std::slice::from_ref(&router)));
    bench_writes(c, "raft_pipeline", &runtime, &router);
    drop(router);
    node.stop();
}

/// Region and peer ids for splits (placement's job in a real cluster); the bench's region never
/// grows big enough to split, but the raftstore needs an allocator.
struct CountingIds(AtomicU64);

impl IdAllocator for CountingIds {
    fn alloc(&self, count: usize) -> Result<Vec<u64>, String> {
        let first = self.0.fetch_add(count as u64, Ordering::Relaxed);
        Ok((first..first + count as u64).collect())
    }
}

fn three_nodes(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let region = Region {
        region_id: 1,
        start_key: Vec::new(),
        end_key: Vec::new(),
        epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
        peers: (1..=3).map(|store_id| Peer { peer_id: store_id, store_id }).collect(),
    };
    let network = SimNetwork::new(SEED);
    let ids: Arc<dyn IdAllocator> = Arc::new(CountingIds(AtomicU64::new(1000)));
    let mut dirs = Vec::new();
    let mut stores: Vec<(Router, JoinHandle<()>)> = Vec::new();
    for store_id in 1..=3 {
        let dir = tempfile::tempdir().unwrap();
        let config = bench_config(dir.path());
        let metrics = Arc::new(Metrics::new());
        let engine = Engine::open(dir.path(), &engine_options(&config, &metrics)).unwrap();
        bootstrap_store(&engine, 42, store_id, Some(&region)).unwrap();
        let cfg = store_config(&config, store_id);
        let inbox = store::inbox(&cfg);
        let transport = Box::new(network.transport(store_id));
        let (router, handle) = store::start(cfg, engine, metrics, transport, inbox, ids.clone()).unwrap();
        network.register(store_id, router.store_inbox());
        stores.push((router, handle));
        dirs.push(dir);
    }
    let routers: Vec<Router> = stores.iter().map(|(router, _)| router.clone()).collect();
    let leader = runtime.block_on(wait_leader(&routers));
    bench_writes(c, "raft_pipeline_3_nodes", &runtime, &routers[leader]);
    drop(routers);
    for (router, handle) in stores {
        router.shutdown();
        handle.join().expect("a raftstore thread panicked");
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = one_node, three_nodes
}
criterion_main!(benches);
