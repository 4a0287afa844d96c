//! End-to-end HTTP cost of one request: a real node served in-process on 127.0.0.1:0, one keep-alive
//! connection (the loadgen's own client), one request in flight. PUT includes raft propose → LMDB
//! commit (fsync) → apply; GET includes the ReadIndex barrier and the LMDB read.
//!
//! `cargo bench --bench http`. Keys are drawn with a fixed seed, so runs are comparable.

#[path = "../tests/common/mod.rs"]
mod common;

use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use fekv::loadgen::client::{Client, Endpoint, LeaderMap};
use fekv::loadgen::workload::KeySpace;
use hyper::Method;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

const KEYS: u64 = 1000;
const VALUE_SIZE: usize = 100;
const SEED: u64 = 42;

/// Sends `iters` requests from `client`, one after the other, and returns the time they took.
async fn send_sequentially(
    client: &mut Client,
    method: &Method,
    keys: &KeySpace,
    rng: &mut StdRng,
    body: &Bytes,
    iters: u64,
) -> Duration {
    let started = Instant::now();
    for _ in 0..iters {
        let path = keys.path(rng.gen_range(0..keys.count));
        let reply = client.send(method, &path, body).await.result.expect("the node answers");
        assert!(reply.status.is_success(), "{method} {path}: {}", reply.status);
    }
    started.elapsed()
}

fn http(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let node = runtime.block_on(common::TestNode::start(|_| {}));
    let endpoint = Endpoint::parse(&node.base).unwrap();
    let mut client = Client::new(endpoint, LeaderMap::new(), Duration::from_secs(5));
    let keys = KeySpace { prefix: "bench".into(), count: KEYS };
    let value = Bytes::from(vec![b'v'; VALUE_SIZE]);
    let mut rng = StdRng::seed_from_u64(SEED);
    // Every key exists before GETs are measured.
    runtime.block_on(async {
        for index in 0..KEYS {
            let reply = client.send(&Method::PUT, &keys.path(index), &value).await.result.expect("prefill");
            assert!(reply.status.is_success());
        }
    });

    let mut group = c.benchmark_group("http");
    group.throughput(Throughput::Elements(1));
    group.bench_function("put_100B_one_connection", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(send_sequentially(&mut client, &Method::PUT, &keys, &mut rng, &value, iters))
        })
    });
    let no_body = Bytes::new();
    group.bench_function("get_100B_one_connection", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(send_sequentially(&mut client, &Method::GET, &keys, &mut rng, &no_body, iters))
        })
    });
    group.finish();
    assert_eq!(client.connects, 1, "every request rode the same keep-alive connection");
    drop(client);
    runtime.block_on(node.stop());
}

criterion_group! {
    name = benches;
    config = Criterion::default().sample_size(20).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));
    targets = http
}
criterion_main!(benches);
