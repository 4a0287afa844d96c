//! The scrub on live stores: while an in-process cluster takes writes, splits its regions, compacts
//! its logs and has a restarted store catch up through snapshots, every pass over every store must
//! check clean. A scrub that cries wolf is worse than none.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::cluster::{seed, Cluster};
use fekv::storage::scrub::{scrub, ScrubOptions, ScrubReport};

/// Scrubs every running store until `stop`; returns every report.
async fn scrub_until(cluster: Arc<Cluster>, stop: Arc<AtomicBool>) -> Vec<(u64, ScrubReport)> {
    let mut reports = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        for store_id in cluster.store_ids() {
            let engine = cluster.engine(store_id);
            let options = ScrubOptions { batch: 16, ..Default::default() };
            let report = tokio::task::spawn_blocking(move || scrub(&engine, &options, &|| false))
                .await
                .unwrap()
                .unwrap_or_else(|err| panic!("store {store_id}: the scrub failed: {err}"));
            reports.push((store_id, report));
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    reports
}

fn assert_clean(reports: &[(u64, ScrubReport)]) {
    for (store_id, report) in reports {
        assert!(report.complete);
        assert_eq!(report.damaged, 0, "store {store_id}: {:#?}", report.findings);
    }
}

async fn write(cluster: &Cluster, range: std::ops::Range<u32>) {
    for i in range {
        cluster.must_put(format!("key-{i:05}").as_bytes(), format!("value of key {i} ........").as_bytes()).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_live_cluster_scrubs_clean_through_splits_moves_compactions_and_restarts() {
    let mut cluster = Arc::new(Cluster::start(3, seed(), |c| {
        c.region_max_size = bytesize::ByteSize::b(2000);
        c.raft_log_gc_threshold = 10;
    }));
    cluster.wait_leader().await;

    // Writes that split the keyspace and compact the logs, scrubbed all along.
    let stop = Arc::new(AtomicBool::new(false));
    let scrubber = tokio::spawn(scrub_until(cluster.clone(), stop.clone()));
    write(&cluster, 0..300).await;
    stop.store(true, Ordering::Relaxed);
    let reports = scrubber.await.unwrap();
    assert!(reports.len() >= 3, "{} passes", reports.len());
    assert_clean(&reports);
    let regions = cluster.regions().await;
    assert!(regions.len() > 1, "no split: {regions:?}");

    // A store that was down catches up (through snapshots: its regions' logs were compacted
    // meanwhile), scrubbed all along.
    let owned = Arc::get_mut(&mut cluster).expect("the scrubber has stopped");
    owned.crash(2);
    write(owned, 300..450).await;
    owned.restart(2);
    let stop = Arc::new(AtomicBool::new(false));
    let scrubber = tokio::spawn(scrub_until(cluster.clone(), stop.clone()));
    write(&cluster, 450..500).await;
    stop.store(true, Ordering::Relaxed);
    assert_clean(&scrubber.await.unwrap());
    // Once every store holds every key, a last pass over each sees all of them.
    for store_id in cluster.store_ids() {
        for i in [0u32, 449, 499] {
            let key = format!("key-{i:05}");
            cluster.wait_local(store_id, key.as_bytes(), Some(format!("value of key {i} ........").as_bytes())).await;
        }
        let engine = cluster.engine(store_id);
        let report = tokio::task::spawn_blocking(move || scrub(&engine, &ScrubOptions::default(), &|| false))
            .await
            .unwrap()
            .unwrap();
        assert_clean(&[(store_id, report.clone())]);
        assert_eq!(report.records_by_table["data"], 500, "store {store_id}: {report:?}");
    }
}
