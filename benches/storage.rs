//! The storage engine under the raftstore's write pattern: one LMDB transaction per poll round holding,
//! for each of R regions, its new log entries, applied data and apply state (format 3 writes the raft
//! state only with a new term or vote), then one commit (one fsync). Shows what group commit buys: the
//! cost of a round is dominated by the commit, so entries per second grow with entries per commit.
//!
//! `cargo bench --bench storage`

use std::time::Duration;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use fekv::proto::RaftApplyState;
use fekv::storage::{Engine, EngineOptions};
use raft::eraftpb::Entry;

const VALUE_SIZE: usize = 100;

struct Region {
    region_id: u64,
    next_index: u64,
}

fn open(dir: &std::path::Path) -> Engine {
    let options = EngineOptions {
        map_size: 8 << 30,
        max_readers: 126,
        checksum_failures: prometheus::IntCounter::new("checksum_failures", "unused in benches").unwrap(),
    };
    Engine::open(dir, &options).unwrap()
}

/// One round: `per_region` entries for each region, all in one transaction, one commit.
fn round(engine: &Engine, regions: &mut [Region], per_region: usize, value: &[u8]) {
    let mut txn = engine.write_txn().unwrap();
    for region in regions.iter_mut() {
        for _ in 0..per_region {
            let index = region.next_index;
            region.next_index += 1;
            let key = format!("r{:04}-k{:08}", region.region_id, index % 10_000);
            let entry = Entry { index, term: 6, data: [key.as_bytes(), value].concat().into(), ..Default::default() };
            engine.put_entry(&mut txn, region.region_id, &entry).unwrap();
            engine.put_data(&mut txn, key.as_bytes(), index, value).unwrap();
        }
        // A round writes each region's entries, data and apply state; its raft state only with a new
        // term or vote (format 3), so not here.
        let last = region.next_index - 1;
        let apply_state = RaftApplyState { applied_index: last, truncated_index: 5, truncated_term: 5 };
        engine.put_apply_state(&mut txn, region.region_id, &apply_state).unwrap();
    }
    engine.commit(txn).unwrap();
}

fn group_commit(c: &mut Criterion) {
    let mut group = c.benchmark_group("lmdb_round");
    group.sample_size(20).measurement_time(Duration::from_secs(4)).warm_up_time(Duration::from_secs(1));
    let value = vec![b'v'; VALUE_SIZE];
    // (regions, entries per region): 1 entry per commit, then 64 entries per commit spread over
    // 1, 16 and 64 regions, then 1024 entries per commit over 64 regions.
    for (region_count, per_region) in [(1, 1), (1, 64), (16, 4), (64, 1), (64, 16)] {
        let dir = tempfile::tempdir().unwrap();
        let engine = open(dir.path());
        let mut regions: Vec<Region> =
            (1..=region_count).map(|region_id| Region { region_id, next_index: 6 }).collect();
        let entries = (region_count as usize * per_region) as u64;
        group.throughput(Throughput::Elements(entries));
        group.bench_with_input(
            BenchmarkId::new(format!("{region_count}_regions"), format!("{entries}_entries_per_commit")),
            &per_region,
            |b, &per_region| b.iter(|| round(&engine, &mut regions, per_region, &value)),
        );
    }
    group.finish();
}

criterion_group!(benches, group_commit);
criterion_main!(benches);
