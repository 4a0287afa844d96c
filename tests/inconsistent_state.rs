//! Persisted raft state that passes its checksums but does not hold together, on the real `fekv`
//! binary: the node refuses to start, exits non-zero and says which record of which region is wrong
//! (raft-rs used to panic on it, naming neither).

mod common;

use std::path::Path;
use std::time::Duration;

use common::process::{run_fekv, FekvProcess};
use common::{get, put};
use fekv::metrics::Metrics;
use fekv::node::engine_options;
use fekv::proto::{RaftApplyState, RaftLocalState};
use fekv::storage::Engine;
use hyper::StatusCode;

/// The single node's region.
const REGION: u64 = 1;

fn open(dir: &Path) -> Engine {
    Engine::open(dir, &engine_options(&common::test_config(dir), &Metrics::new())).unwrap()
}

/// The region's two state records, and the index of its log's last entry (the raft state records
/// only the term and vote: a node finds the log's end in the log).
fn states(dir: &Path) -> (RaftLocalState, RaftApplyState, u64) {
    let engine = open(dir);
    let txn = engine.read_txn().unwrap();
    let raft = engine.raft_state(&txn, REGION).unwrap().expect("the region has a raft state");
    let apply = engine.apply_state(&txn, REGION).unwrap().expect("the region has an apply state");
    let last = engine.last_entry(&txn, REGION).unwrap().map_or(apply.truncated_index, |(index, _)| index);
    (raft, apply, last)
}

/// Writes both states of the region, checksummed as the node writes them.
fn write_states(dir: &Path, raft: &RaftLocalState, apply: &RaftApplyState) {
    let engine = open(dir);
    let mut txn = engine.write_txn().unwrap();
    engine.put_raft_state(&mut txn, REGION, raft).unwrap();
    engine.put_apply_state(&mut txn, REGION, apply).unwrap();
    engine.commit(txn).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_with_inconsistent_persisted_state_exits_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let node = FekvProcess::start(dir.path(), &[]);
    for i in 0..5 {
        assert_eq!(put(&node.url(&format!("/fekv/k{i}")), "v").await.status, StatusCode::OK);
    }
    assert!(node.stop_with("TERM").success());
    let (raft, apply, last) = states(dir.path());
    assert!(apply.truncated_index < apply.applied_index && apply.applied_index <= last, "{raft:?} {apply:?} {last}");

    let cases = [
        (
            raft,
            RaftApplyState { applied_index: apply.truncated_index - 1, ..apply },
            format!("applied index {} is below its truncated index", apply.truncated_index - 1),
        ),
        (
            raft,
            RaftApplyState { applied_index: last + 3, ..apply },
            format!("applied index {} is past its last log index {last}", last + 3),
        ),
        (
            RaftLocalState { commit: last + 1, ..raft },
            apply,
            format!("commit index {} is past its last log index {last}", last + 1),
        ),
    ];
    let args = ["--http-addr", "127.0.0.1:0", "--data-dir", dir.path().to_str().unwrap()];
    for (broken_raft, broken_apply, says) in cases {
        write_states(dir.path(), &broken_raft, &broken_apply);
        let run = tokio::task::block_in_place(|| run_fekv(&args, Duration::from_secs(15)));
        assert!(!run.success, "started on {broken_raft:?} {broken_apply:?}: {}", run.stderr);
        assert!(run.stderr.contains(&format!("inconsistent persisted state of region {REGION}")), "{}", run.stderr);
        assert!(run.stderr.contains(&says), "expected {says:?} in: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{}", run.stderr);
    }

    // The states as they were: the node starts and serves its data again.
    write_states(dir.path(), &raft, &apply);
    let node = FekvProcess::start(dir.path(), &[]);
    assert_eq!(get(&node.url("/fekv/k4")).await.text(), "v");
}
