//! Multi-raft with real processes: a placement service and three nodes with tiny regions. A write
//! load splits the keyspace into many regions; every key stays readable through every node, a scan
//! walks all regions (following redirects and `next`), `fekv ctl` lists contiguous regions
//! covering the keyspace, `fekv bench` against every node sends each key to its region's leader,
//! and none of raft-rs's own log reaches the nodes' `info` output.

mod common;

use std::time::Duration;

use clap::Parser;
use common::process_cluster::ProcessCluster;
use common::wait::eventually;
use common::{request_following, try_request};
use fekv::loadgen::BenchArgs;
use hyper::{Method, StatusCode};

/// PUTs through `base`, following redirects, until it is acknowledged (at most 20 s).
async fn put_via(base: &str, key: &str, value: &str) {
    eventually(Duration::from_secs(20), &format!("put {key} via {base}"), || async {
        match request_following(Method::PUT, &format!("{base}/fekv/{key}"), value.to_string(), &[]).await {
            Ok((reply, _)) if reply.status == StatusCode::OK => Ok(()),
            Ok((reply, _)) => Err(format!("{}: {}", reply.status, reply.text())),
            Err(err) => Err(err),
        }
    })
    .await
}

/// Whether the regions, sorted by start key, cover the keyspace without gaps or overlaps.
fn contiguous(regions: &[serde_json::Value]) -> bool {
    let mut ranges: Vec<(String, String)> = regions
        .iter()
        .map(|r| (r["start_key"].as_str().unwrap_or("?").to_string(), r["end_key"].as_str().unwrap_or("?").to_string()))
        .collect();
    ranges.sort();
    !ranges.is_empty()
        && ranges[0].0.is_empty()
        && ranges.last().unwrap().1.is_empty()
        && ranges.windows(2).all(|w| w[0].1 == w[1].0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_load_splits_the_keyspace_and_every_node_still_serves_every_key() {
    let mut cluster = ProcessCluster::start(3, 3, &[], &["--region-max-size", "1KiB"]);
    let bases = cluster.bases();
    // 600 keys of ~40 bytes: about 24 KiB, far past 1 KiB regions.
    let keys: Vec<String> = (0..600).map(|i| format!("user{:05}", (i * 7919) % 100_000)).collect();
    for (i, key) in keys.iter().enumerate() {
        put_via(&bases[i % 3], key, &format!("value-of-{key}")).await;
    }
    // Wait for the splits to settle in placement's view: at least 8 contiguous regions, each with its
    // three replicas caught up (the first region started on the first node alone).
    let regions = cluster
        .regions_when(Duration::from_secs(60), "8 contiguous replicated regions", |regions| {
            regions.len() >= 8
                && contiguous(regions)
                && regions.iter().all(|r| {
                    r["peers"].as_array().is_some_and(|p| p.len() == 3)
                        && r["pending_peers"].as_array().is_some_and(|p| p.is_empty())
                })
        })
        .await;
    eprintln!("{} regions", regions.len());
    for region in &regions {
        assert_eq!(region["peers"].as_array().unwrap().len(), 3, "{region}");
        assert!(region["region_id"].as_u64().is_some() && region["epoch"]["version"].as_u64().is_some());
    }
    // Every key through every node (redirects to each key's leader are followed).
    for base in &bases {
        for key in keys.iter().step_by(7) {
            let (reply, _) = request_following(Method::GET, &format!("{base}/fekv/{key}"), "", &[]).await.unwrap();
            assert_eq!((reply.status, reply.text()), (StatusCode::OK, format!("value-of-{key}")), "{key} via {base}");
        }
    }
    // A scan of everything, region by region, through one node.
    let mut scanned: Vec<String> = Vec::new();
    let mut start = String::new();
    let mut pages = 0;
    loop {
        let url = format!("{}/fekv?start={start}&limit=50", bases[0]);
        let (reply, _) = request_following(Method::GET, &url, "", &[]).await.unwrap();
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let body = reply.json();
        scanned.extend(body["kvs"].as_array().unwrap().iter().map(|kv| kv["key"].as_str().unwrap().to_string()));
        pages += 1;
        match body["next"].as_str() {
            Some(next) => start = next.to_string(),
            None => break,
        }
        assert!(pages < 1000, "the scan does not end");
    }
    let mut expected = keys.clone();
    expected.sort();
    expected.dedup();
    assert_eq!(scanned, expected, "scan across {pages} pages");
    // Every node's /status shows its peers of the many regions.
    let status = try_request(Method::GET, &format!("{}/status", bases[1]), "", &[]).await.unwrap().json();
    assert!(status["regions"].as_array().unwrap().len() >= 8);

    // A fourth node holds no peer of any region (3 replicas are placed already, and the balancers
    // are switched off so none moves to it), yet answers for every key by redirecting to its
    // region's leader, as placement reported it.
    for scheduler in ["balance-region", "balance-leader"] {
        cluster.ctl(&["scheduler", "disable", scheduler]).await;
    }
    let fourth = cluster.add_node();
    let fourth = cluster.node(fourth);
    for key in keys.iter().step_by(37) {
        // Until its first heartbeat it knows no region: 503, then it routes.
        let url = fourth.url(&format!("/fekv/{key}"));
        let (value, hops) = eventually(Duration::from_secs(10), &format!("{key} via the fourth node"), || async {
            let (reply, hops) = request_following(Method::GET, &url, "", &[]).await.unwrap();
            if reply.status == StatusCode::OK {
                Ok((reply.text(), hops))
            } else {
                Err(format!("{} {}", reply.status, reply.text()))
            }
        })
        .await;
        assert_eq!(value, format!("value-of-{key}"));
        assert!(hops >= 1, "the fourth node holds no region, it must redirect");
    }

    // `fekv bench` against every node: it learns each region's leader from the nodes' `/status` and
    // sends each key straight there, so a run over many regions pays no redirect per request and no
    // reconnect per leader switch. Keys `user` + 8 digits, uniform over 10^8, spread over all regions.
    let endpoints = cluster.bases().join(",");
    let flags = ["--endpoints", &endpoints, "--workload", "get", "--requests", "2000", "--connections", "8"];
    let args = BenchArgs::try_parse_from(["bench"].iter().chain(&flags).chain(&[
        "--key-prefix",
        "user",
        "--keys",
        "100000000",
    ]))
    .unwrap();
    let mut out = Vec::new();
    let report = fekv::loadgen::run(&args, &mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    eprintln!("fekv bench over every node: {} redirects, {} connections opened", report.redirects, report.connects);
    assert_eq!((report.successes + report.misses, report.errors.total), (2000, 0), "{text}");
    // A leader may still move (an election on a busy machine): a few redirects, never one per request.
    assert!(report.redirects <= 16, "{text}");
    assert!(report.connects <= 8 * 4, "at most a connection per worker and node: {text}");

    // `fekv ctl region split` by hand: placement hands the operator to the leader, which splits.
    let first = cluster.ctl(&["region", "list"]).await[0]["region_id"].to_string();
    let split = cluster.ctl(&["region", "split", &first, "--wait"]).await;
    assert!(split["regions"].as_array().is_some_and(|halves| halves.len() == 2), "ctl region split: {split}");

    // After elections, membership changes and splits in every region, raft-rs's own log is still
    // not at info (it printed slog lines with the cargo registry's source paths at every start).
    for node in cluster.running() {
        let lines = node.stderr_lines();
        let raft_rs: Vec<&String> = lines
            .iter()
            .filter(|l| l.contains("slog") || l.contains(".cargo/registry") || l.contains("INFO raft:"))
            .collect();
        assert!(raft_rs.is_empty(), "raft-rs's log at info on {}: {raft_rs:#?}", node.base);
    }

    // With placement down, the cluster keeps serving reads and writes from what it knows.
    cluster.kill_placement();
    put_via(&bases[1], "after-placement-died", "still here").await;
    for base in &bases {
        let (reply, _) =
            request_following(Method::GET, &format!("{base}/fekv/after-placement-died"), "", &[]).await.unwrap();
        assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "still here"), "via {base}");
    }
}
