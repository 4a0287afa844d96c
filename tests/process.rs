//! The real `fekv` binary on 127.0.0.1: the seed's transcript byte for byte, durability across
//! `kill -9`, clean stops on signals, checksums catching a damaged file, and a quiet console.

mod common;

use std::time::Duration;

use common::process::{idle_connections, open_file_limit, run_fekv, run_fekv_with, run_to_end, FekvProcess};
use common::writers::{Load, Writers};
use common::{get, put};
use hyper::StatusCode;

#[test]
fn seed_transcript_output_is_byte_for_byte_the_original() {
    let dir = tempfile::tempdir().unwrap();
    let node = FekvProcess::start(dir.path(), &[]);
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/seed/example.sh");
    // One pipe for stdout and stderr, as on a terminal: curl's error lines land in order.
    let mut bash = std::process::Command::new("bash");
    bash.args(["-c", "bash \"$0\" 2>&1", script]).env("FEKV_URL", &node.base);
    let output = run_to_end(bash, Duration::from_secs(60));
    let expected = include_str!("seed/expected.txt").replace("http://localhost:3000", &node.base);
    assert_eq!(output.stdout, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_writes_loses_no_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let node = FekvProcess::start(dir.path(), &[]);
    // 8 writers, 1000+ acknowledged writes; the kill lands while more are in flight.
    let load = Load { writers: 8, until_first_failure: true, ..Load::default() };
    let writers = Writers::start(std::sync::Arc::new(vec![node.base.clone()].into()), load);
    writers.wait_count(1000).await;
    node.kill9();
    let acked = writers.join().await;
    assert!(acked.len() >= 1000);
    let node = FekvProcess::start(dir.path(), &[]);
    let mut missing = Vec::new();
    for (key, value) in &acked {
        let reply = get(&node.url(&format!("/fekv/{key}"))).await;
        if reply.status != StatusCode::OK || reply.text() != *value {
            missing.push((key.clone(), reply.status));
        }
    }
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged writes lost: {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(10)]
    );
    // And the restarted node takes writes.
    assert_eq!(put(&node.url("/fekv/after"), "x").await.status, StatusCode::OK);
    node.kill9();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_and_sigterm_stop_cleanly_and_keep_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let node = FekvProcess::start(dir.path(), &[]);
    assert_eq!(put(&node.url("/fekv/a"), "1").await.status, StatusCode::OK);
    let status = tokio::task::spawn_blocking(move || node.stop_with("INT")).await.unwrap();
    assert!(status.success(), "{status}");
    let node = FekvProcess::start(dir.path(), &[]);
    assert_eq!(get(&node.url("/fekv/a")).await.text(), "1");
    assert_eq!(put(&node.url("/fekv/b"), "2").await.status, StatusCode::OK);
    let lines = node.stderr_lines();
    let status = tokio::task::spawn_blocking(move || node.stop_with("TERM")).await.unwrap();
    assert!(status.success(), "{status}: {lines:#?}");
    let node = FekvProcess::start(dir.path(), &[]);
    assert_eq!(get(&node.url("/fekv/b")).await.text(), "2");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_record_is_reported_never_returned() {
    let dir = tempfile::tempdir().unwrap();
    let node = FekvProcess::start(dir.path(), &[]);
    let secret = b"DAMAGE-ME-0123456789-abcdefghij";
    let written = put(&node.url("/fekv/victim"), &secret[..]).await;
    assert_eq!(written.status, StatusCode::OK);
    let revision: u64 = written.header("etag").unwrap().trim_matches('"').parse().unwrap();
    assert_eq!(put(&node.url("/fekv/bystander"), "fine").await.status, StatusCode::OK);
    node.kill9();

    // Flip one bit of the value inside the user record (revision ‖ value), not in the raft log's
    // copy of the command, wherever LMDB's pages hold it.
    let path = dir.path().join("data.mdb");
    let mut file = std::fs::read(&path).unwrap();
    let mut pattern = revision.to_be_bytes().to_vec();
    pattern.extend_from_slice(secret);
    let mut flipped = 0;
    let mut at = 0;
    while let Some(pos) = file[at..].windows(pattern.len()).position(|w| w == pattern) {
        let start = at + pos;
        file[start + 8 + 3] ^= 0x01; // 'A' → '@'
        flipped += 1;
        at = start + pattern.len();
    }
    assert!(flipped >= 1, "record not found in data.mdb");
    std::fs::write(&path, &file).unwrap();

    let node = FekvProcess::start(dir.path(), &[]);
    let reply = get(&node.url("/fekv/victim")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{}", reply.text());
    let text = reply.text();
    assert!(text.contains("checksum mismatch") && text.contains("victim"), "{text}");
    assert!(!text.contains("DAMAGE"), "damaged bytes leaked: {text}");
    assert_eq!(get(&node.url("/fekv/bystander")).await.text(), "fine");
    let metrics = get(&node.url("/metrics")).await.text();
    assert!(
        metrics.lines().any(|l| l.starts_with("fekv_storage_checksum_failures_total ") && !l.ends_with(" 0")),
        "{metrics}"
    );
    node.wait_stderr(Duration::from_secs(5), "the checksum error's log line", |lines| {
        lines.iter().any(|l| l.contains("ERROR") && l.contains("checksum mismatch") && l.contains("victim"))
    });
    // Overwriting the damaged key repairs it.
    assert_eq!(put(&node.url("/fekv/victim"), "new").await.status, StatusCode::OK);
    assert_eq!(get(&node.url("/fekv/victim")).await.text(), "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn info_level_logs_nothing_per_request() {
    let dir = tempfile::tempdir().unwrap();
    let node = FekvProcess::start(dir.path(), &[]);
    let before = node.stderr_lines().len();
    for i in 0..300 {
        assert_eq!(put(&node.url(&format!("/fekv/q{i}")), "v").await.status, StatusCode::OK);
        assert_eq!(get(&node.url(&format!("/fekv/q{i}"))).await.status, StatusCode::OK);
        assert_eq!(get(&node.url("/fekv/absent")).await.status, StatusCode::NOT_FOUND);
    }
    let new_lines: Vec<String> = node.stderr_lines().split_off(before);
    assert!(new_lines.len() < 5, "900 requests logged {} lines at info: {new_lines:#?}", new_lines.len());
}

/// A node whose raftstore thread dies does not linger half alive (answering `503 the raftstore has
/// stopped` forever): it exits non-zero, so a supervisor restarts it, and its last log line says
/// why and where. The death is a debug build's failpoint: the raftstore panics on the first write.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_raftstore_dies_exits_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = FekvProcess::start_with_env(dir.path(), &[], &[("FEKV_FAILPOINT", "raftstore_panic_on_write")]);
    assert_eq!(get(&node.url("/health")).await.status, StatusCode::OK);
    let lines = node.write_until_the_raftstore_dies().await;
    let last = lines.last().unwrap();
    assert!(last.contains("src/raftstore/store.rs:"), "the last line does not say where: {last}");
    let panic_logged = lines.iter().any(|l| l.contains("ERROR") && l.contains("panic: failpoint"));
    assert!(panic_logged, "the panic did not reach the log: {lines:#?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_node_on_a_data_dir_in_use_refuses_at_once_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first = FekvProcess::start(dir.path(), &[]);
    assert_eq!(put(&first.url("/fekv/mine"), "first").await.status, StatusCode::OK);
    let data_dir = dir.path().display().to_string();
    let dir_arg = data_dir.clone();
    let second = tokio::task::spawn_blocking(move || {
        run_fekv(&["--http-addr", "127.0.0.1:0", "--data-dir", &dir_arg], Duration::from_secs(10))
    })
    .await
    .unwrap();
    let stderr = &second.stderr;
    assert!(!second.success, "{stderr}");
    assert!(stderr.contains(&data_dir) && stderr.contains(&format!("pid {}", first.pid())), "{stderr}");
    // The first keeps running with its data, and takes writes.
    assert_eq!(get(&first.url("/fekv/mine")).await.text(), "first");
    assert_eq!(put(&first.url("/fekv/more"), "2").await.status, StatusCode::OK);
    // kill -9 releases the lock: the next start gets the directory and the data.
    first.kill9();
    let third = FekvProcess::start(dir.path(), &[]);
    assert_eq!(get(&third.url("/fekv/more")).await.text(), "2");
}

#[test]
fn a_second_placement_on_a_data_dir_in_use_refuses_at_once_naming_the_holder() {
    let dir = tempfile::tempdir().unwrap();
    let first = FekvProcess::start_placement(dir.path(), 1);
    let data_dir = dir.path().display().to_string();
    let args = ["placement", "--addr", "127.0.0.1:0", "--data-dir", data_dir.as_str()];
    let second = run_fekv(&args, Duration::from_secs(10));
    let stderr = &second.stderr;
    assert!(!second.success, "{stderr}");
    assert!(stderr.contains(&data_dir) && stderr.contains(&format!("pid {}", first.pid())), "{stderr}");
    first.kill9();
    let again = FekvProcess::start_placement(dir.path(), 1);
    drop(again);
}

/// Placement closes a connection that sends nothing at the first-byte deadline (10 s), as a node's
/// raft port does: tonic's own listener kept it open for as long as the client liked. A client
/// that speaks (`fekv ctl`) is served meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_closes_a_connection_that_sends_nothing() {
    use tokio::io::AsyncReadExt;
    let dir = tempfile::tempdir().unwrap();
    let placement = FekvProcess::start_placement(dir.path(), 1);
    let mut silent = tokio::net::TcpStream::connect(&placement.addr).await.unwrap();
    let opened = std::time::Instant::now();
    let addr = placement.addr.clone();
    let listed = tokio::task::spawn_blocking(move || common::process::ctl(&addr, &["store", "list"])).await.unwrap();
    assert!(listed.success, "{}", listed.stderr);
    let mut seen = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(30), silent.read_to_end(&mut seen)).await;
    assert!(read.is_ok(), "a silent connection to placement still open after 30 s");
    assert!(opened.elapsed() >= Duration::from_secs(9), "closed after {:?}, before the deadline", opened.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_start_at_info_prints_none_of_raft_rs_internals() {
    let dir = tempfile::tempdir().unwrap();
    let node = FekvProcess::start(dir.path(), &[]);
    assert_eq!(put(&node.url("/fekv/k"), "v").await.status, StatusCode::OK);
    let lines = node.stderr_lines();
    assert!(
        !lines.iter().any(|l| l.contains("slog") || l.contains("raft-0.7") || l.contains(" raft:")),
        "raft-rs's own log at info: {lines:#?}"
    );
    assert!(lines.len() <= 8, "{} lines to start a node: {lines:#?}", lines.len());
    node.kill9();
    // It is all there at debug, under the target `raft`, with its fields and without source paths.
    let node = FekvProcess::start(dir.path(), &["--log-level", "info,raft=debug"]);
    assert_eq!(put(&node.url("/fekv/k"), "v2").await.status, StatusCode::OK);
    let lines = node.stderr_lines();
    let became_leader = lines.iter().find(|l| l.contains("DEBUG raft:") && l.contains("became leader"));
    let line = became_leader.unwrap_or_else(|| panic!("no raft line at debug: {lines:#?}"));
    assert!(line.contains("region_id=1") && !line.contains(".cargo"), "{line}");
}

#[test]
fn a_log_level_that_is_no_level_is_an_error_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();
    let node = ["--log-level", "nonsense", "--http-addr", "127.0.0.1:0", "--data-dir", &data_dir];
    let placement = ["placement", "--log-level", "nonsense", "--addr", "127.0.0.1:0", "--data-dir", &data_dir];
    for args in [&node[..], &placement[..]] {
        let output = run_fekv(args, Duration::from_secs(10));
        let stderr = &output.stderr;
        assert!(!output.success, "{args:?}: {stderr}");
        assert!(stderr.contains("log") && stderr.contains("\"nonsense\" is not a level"), "{args:?}: {stderr}");
    }
    // RUST_LOG, which replaces the setting, too: it logged nothing at all, not even a failed start.
    let node = ["--http-addr", "127.0.0.1:0", "--data-dir", &data_dir];
    let placement = ["placement", "--addr", "127.0.0.1:0", "--data-dir", &data_dir];
    for args in [&node[..], &placement[..]] {
        let output = run_fekv_with(args, Duration::from_secs(10), |command| {
            command.env("RUST_LOG", "nonsense");
        });
        let stderr = &output.stderr;
        assert!(!output.success, "{args:?}: {stderr}");
        assert!(stderr.contains("invalid RUST_LOG: \"nonsense\" is not a level"), "{args:?}: {stderr}");
    }
}

/// Runs a node whose open-file limit starts at `soft` (hard: `hard`), opens `idle` keep-alive
/// connections to it that stay open, then checks that new clients are still served and writes
/// still work (the node's own files are not starved).
async fn serves_new_clients_past_many_idle_connections(soft: u64, hard: u64, idle: usize) {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = ["--http-addr", "127.0.0.1:0", "--data-dir"]
        .iter()
        .map(|s| s.to_string())
        .chain([dir.path().display().to_string()])
        .collect();
    let node = FekvProcess::start_node_as(&args, dir.path(), open_file_limit(soft, hard));
    let connections = idle_connections(&node, idle).await;
    for i in 0..20 {
        let reply = put(&node.url(&format!("/fekv/after-{i}")), "v").await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        assert_eq!(get(&node.url(&format!("/fekv/after-{i}"))).await.text(), "v");
    }
    let lines = node.stderr_lines();
    assert!(!lines.iter().any(|l| l.contains("accept failed")), "{lines:#?}");
    drop(connections);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_low_soft_open_file_limit_is_raised_to_the_hard_one() {
    serves_new_clients_past_many_idle_connections(256, 4096, 600).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_a_low_hard_open_file_limit_idle_connections_make_room_for_new_clients() {
    serves_new_clients_past_many_idle_connections(300, 300, 400).await;
}
