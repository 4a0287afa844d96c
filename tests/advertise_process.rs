//! A node's addresses as the cluster sees them, with real processes: a node bound to every
//! interface registers the host names it is told to advertise (and redirects go there), refuses to
//! register `0.0.0.0` without one, and says at `warn`, with the address, that it cannot reach
//! placement while it retries (and stops at once when told to meanwhile).

mod common;

use std::time::Duration;

use common::process::{ctl_json, run_fekv, wait_replicated, FekvProcess};
use common::try_request;
use common::wait::eventually;
use hyper::{Method, StatusCode};

/// A port nothing listens on right now. The advertised addresses must name their port before the
/// node binds it, so this test cannot bind `:0`; the port comes from below the ephemeral range, so
/// a parallel test's outgoing connection cannot take it in between (nor a connection to it meet
/// itself while nothing listens there).
fn free_port() -> u16 {
    common::process::fixed_port_runs(1, 1)[0]
}

#[test]
fn a_node_bound_to_every_interface_refuses_to_register_without_an_advertised_address() {
    let dir = tempfile::tempdir().unwrap();
    let placement = FekvProcess::start_placement(&dir.path().join("placement"), 1);
    let data_dir = dir.path().join("node").display().to_string();
    let cases = [
        (["--http-addr", "0.0.0.0:0", "--raft-addr", "127.0.0.1:0"], "advertise_http_addr"),
        (["--http-addr", "127.0.0.1:0", "--raft-addr", "[::]:0"], "advertise_raft_addr"),
    ];
    for (addrs, setting) in cases {
        let mut args = vec!["--placement", &placement.addr, "--data-dir", &data_dir];
        args.extend(addrs);
        let run = run_fekv(&args, Duration::from_secs(10));
        let stderr = &run.stderr;
        assert!(!run.success, "{args:?}: {stderr}");
        assert!(stderr.contains(setting) && stderr.contains("every interface"), "{args:?}: {stderr}");
    }
    // Nothing was registered.
    assert_eq!(ctl_json(&placement.addr, &["store", "list"]).unwrap(), serde_json::json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn advertised_host_names_are_registered_and_redirects_point_at_them() {
    let dir = tempfile::tempdir().unwrap();
    let placement = FekvProcess::start_placement(&dir.path().join("placement"), 2);
    let mut nodes = Vec::new();
    for i in 0..2 {
        let (http, raft) = (free_port(), free_port());
        let data_dir = dir.path().join(format!("node-{i}"));
        let args: Vec<String> = [
            "--placement",
            &placement.addr,
            "--data-dir",
            &data_dir.display().to_string(),
            "--http-addr",
            &format!("0.0.0.0:{http}"),
            "--advertise-http-addr",
            &format!("localhost:{http}"),
            "--raft-addr",
            &format!("0.0.0.0:{raft}"),
            "--advertise-raft-addr",
            &format!("localhost:{raft}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        nodes.push((FekvProcess::start_node_as(&args, &data_dir, |_| {}), http, raft));
    }
    // Two replicas over raft connections made by host name.
    wait_replicated(&placement.addr, 2, Duration::from_secs(30));
    let stores = ctl_json(&placement.addr, &["store", "list"]).unwrap();
    let mut registered: Vec<(String, String)> = stores
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["http_addr"].as_str().unwrap().to_string(), s["raft_addr"].as_str().unwrap().to_string()))
        .collect();
    registered.sort();
    let mut expected: Vec<(String, String)> =
        nodes.iter().map(|(_, http, raft)| (format!("localhost:{http}"), format!("localhost:{raft}"))).collect();
    expected.sort();
    assert_eq!(registered, expected);
    // A write sent to the follower is redirected to the leader's advertised address.
    let location = eventually(Duration::from_secs(20), "a follower's redirect", || async {
        let mut seen = Vec::new();
        for (node, _, _) in &nodes {
            let url = format!("http://127.0.0.1:{}/fekv/k", node.addr.rsplit(':').next().unwrap());
            match try_request(Method::PUT, &url, "v", &[]).await {
                Ok(reply) if reply.status == StatusCode::TEMPORARY_REDIRECT => {
                    return Ok(reply.header("location").unwrap().to_string())
                }
                Ok(reply) => seen.push(format!("{url}: {}", reply.status)),
                Err(err) => seen.push(format!("{url}: {err}")),
            }
        }
        Err(seen.join("; "))
    })
    .await;
    assert!(nodes.iter().any(|(_, http, _)| location == format!("http://localhost:{http}/fekv/k?hop=1")), "{location}");
}

#[test]
fn a_node_that_cannot_reach_placement_says_so_at_warn_with_the_address() {
    let dir = tempfile::tempdir().unwrap();
    let nowhere = format!("127.0.0.1:{}", free_port());
    let data_dir = dir.path().display().to_string();
    let node = FekvProcess::launch(
        &["--placement", &nowhere, "--data-dir", &data_dir, "--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"],
        dir.path(),
    );
    // Each retry warns, not just the first.
    node.wait_stderr(Duration::from_secs(10), &format!("two warnings naming {nowhere}"), |lines| {
        lines.iter().filter(|l| l.contains("WARN") && l.contains(&nowhere)).count() >= 2
    });
    // A stop asked while it retries is obeyed at once, not after the minute of retries.
    let asked = std::time::Instant::now();
    let status = node.stop_with("TERM");
    assert!(status.success(), "{status}");
    assert!(asked.elapsed() < Duration::from_secs(5), "stopped {:?} after SIGTERM", asked.elapsed());
}
