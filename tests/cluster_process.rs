//! A real cluster: a placement process and three `fekv serve --placement` processes on 127.0.0.1,
//! talking gRPC. Redirects to the leader, `kill -9` of the leader under a write load, `kill -9` of
//! every node, and a lone survivor that answers `503` rather than hanging or serving stale data.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::FekvProcess;
use common::{put_anywhere, request_following, try_request};
use hyper::{Method, StatusCode};

struct ProcessCluster {
    dir: tempfile::TempDir,
    placement: FekvProcess,
    nodes: Vec<Option<FekvProcess>>,
}

impl ProcessCluster {
    fn start(count: usize) -> ProcessCluster {
        let dir = tempfile::tempdir().unwrap();
        let placement = FekvProcess::start_placement(&dir.path().join("placement"), 3);
        let nodes = (0..count)
            .map(|i| Some(FekvProcess::start_node(&dir.path().join(format!("node-{i}")), &placement.addr)))
            .collect();
        // The first region starts on the first node alone; the replica checker grows it.
        common::process::wait_replicated(&placement.addr, count.min(3), Duration::from_secs(30));
        ProcessCluster { dir, placement, nodes }
    }

    fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        self.nodes[i] = Some(FekvProcess::start_node(&self.dir.path().join(format!("node-{i}")), &self.placement.addr));
    }

    fn kill9(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.kill9();
        }
    }

    fn bases(&self) -> Vec<String> {
        self.nodes.iter().flatten().map(|n| n.base.clone()).collect()
    }

    /// The index of the node whose peer leads the (only) region, waiting for one (at most 20 s).
    async fn wait_leader(&self) -> usize {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            for (i, node) in self.nodes.iter().enumerate() {
                let Some(node) = node else { continue };
                if let Ok(reply) = try_request(Method::GET, &node.url("/status"), "", &[]).await {
                    let status = reply.json();
                    if status["regions"].as_array().is_some_and(|r| r.iter().any(|r| r["role"] == "leader")) {
                        return i;
                    }
                }
            }
            assert!(Instant::now() < deadline, "no leader within 20s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// GETs through `base`, following redirects and retrying while the cluster elects a leader.
async fn get_via(base: &str, key: &str) -> (StatusCode, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok((reply, _)) = request_following(Method::GET, &format!("{base}/fekv/{key}"), "", &[]).await {
            if reply.status == StatusCode::OK || reply.status == StatusCode::NOT_FOUND || Instant::now() > deadline {
                return (reply.status, reply.text());
            }
        }
        assert!(Instant::now() < deadline, "no answer for {key} via {base}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn followers_redirect_to_the_leader_and_curl_l_follows() {
    let cluster = ProcessCluster::start(3);
    let leader = cluster.wait_leader().await;
    let leader_base = cluster.nodes[leader].as_ref().unwrap().base.clone();
    let follower = cluster.nodes.iter().flatten().find(|n| n.base != leader_base).unwrap();
    // A follower answers 307 with the leader's address, keeping the path and query.
    let deadline = Instant::now() + Duration::from_secs(10);
    let reply = loop {
        let reply = try_request(Method::PUT, &follower.url("/fekv/hello?x=1"), "world", &[]).await.unwrap();
        if reply.status == StatusCode::TEMPORARY_REDIRECT || Instant::now() > deadline {
            break reply;
        }
        tokio::time::sleep(Duration::from_millis(50)).await; // the follower may not know its leader yet
    };
    assert_eq!(reply.status, StatusCode::TEMPORARY_REDIRECT, "{}", reply.text());
    let location = reply.header("location").unwrap();
    assert!(location.starts_with(&format!("{leader_base}/fekv/hello?")), "{location}");
    assert!(location.contains("x=1"), "{location}");
    assert_eq!(reply.header("x-fekv-leader"), Some(leader_base.as_str()));
    // Following it (as curl -L does, same method and body) writes the value.
    let (reply, hops) = request_following(Method::PUT, &follower.url("/fekv/hello"), "world", &[]).await.unwrap();
    assert_eq!((reply.status, reply.text().as_str(), hops), (StatusCode::OK, "OK", 1));
    // Every node serves it, linearizably through the leader, and from its own replica when asked.
    for base in cluster.bases() {
        assert_eq!(get_via(&base, "hello").await, (StatusCode::OK, "world".to_string()));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let stale =
                try_request(Method::GET, &format!("{base}/fekv/hello?consistency=stale"), "", &[]).await.unwrap();
            if stale.status == StatusCode::OK {
                assert_eq!(stale.text(), "world");
                break;
            }
            assert!(Instant::now() < deadline, "{base} never replicated hello: {}", stale.text());
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Writers that go through every live node, following redirects, recording what was acknowledged.
struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<parking_lot::Mutex<BTreeMap<String, String>>>,
    count: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    fn start(bases: Arc<parking_lot::Mutex<Vec<String>>>, writers: usize) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(parking_lot::Mutex::new(BTreeMap::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let tasks = (0..writers)
            .map(|w| {
                let (stop, acked, count, bases) = (stop.clone(), acked.clone(), count.clone(), bases.clone());
                tokio::spawn(async move {
                    let mut i = 0;
                    while !stop.load(Ordering::Relaxed) {
                        let (key, value) = (format!("w{w}-{i:06}"), format!("v{w}-{i}"));
                        let targets = bases.lock().clone();
                        // A write that fails for a while is abandoned (its outcome is unknown); the
                        // next one is a new key.
                        if put_anywhere(&targets, &key, &value, Duration::from_secs(10)).await.is_ok() {
                            acked.lock().insert(key, value);
                            count.fetch_add(1, Ordering::Relaxed);
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        Writers { stop, acked, count, tasks }
    }

    /// Stops the writers and returns every acknowledged write.
    async fn finish(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(30), task).await.expect("writers stop").unwrap();
        }
        let acked = self.acked.lock().clone();
        acked
    }
}

async fn wait_count(count: &AtomicUsize, at_least: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while count.load(Ordering::Relaxed) < at_least {
        assert!(Instant::now() < deadline, "only {} writes acknowledged", count.load(Ordering::Relaxed));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_the_leader_during_writes_loses_no_acknowledged_write() {
    let mut cluster = ProcessCluster::start(3);
    let leader = cluster.wait_leader().await;
    let bases = Arc::new(parking_lot::Mutex::new(cluster.bases()));
    let writers = Writers::start(bases.clone(), 4);
    let count = writers.count.clone();
    wait_count(&count, 200).await;
    let killed_at = Instant::now();
    let dead_base = cluster.nodes[leader].as_ref().unwrap().base.clone();
    cluster.kill9(leader);
    bases.lock().retain(|b| *b != dead_base);
    // Writes go on through the survivors once they elect a leader.
    let before = count.load(Ordering::Relaxed);
    wait_count(&count, before + 200).await;
    eprintln!(
        "writes resumed; {} more acknowledged {:?} after the kill",
        count.load(Ordering::Relaxed) - before,
        killed_at.elapsed()
    );
    let new_leader = cluster.wait_leader().await;
    assert_ne!(new_leader, leader);
    // The old leader comes back and catches up.
    cluster.restart(leader);
    let restarted = cluster.nodes[leader].as_ref().unwrap().base.clone();
    bases.lock().push(restarted.clone());
    wait_count(&count, count.load(Ordering::Relaxed) + 100).await;
    let acked = writers.finish().await;
    for (key, value) in &acked {
        assert_eq!(get_via(&restarted, key).await, (StatusCode::OK, value.clone()), "{key}");
    }
    // It was down for hundreds of writes past the log's 50-entry threshold: it caught up through a
    // snapshot streamed over gRPC.
    let metrics = try_request(Method::GET, &format!("{restarted}/metrics"), "", &[]).await.unwrap().text();
    let received = metrics
        .lines()
        .find_map(|l| l.strip_prefix("fekv_raft_snapshots_total{event=\"received\"} "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(received >= 1.0, "the restarted node received no snapshot:\n{metrics}");
    // The restarted node's own replica has everything too.
    let last = acked.keys().last().unwrap().clone();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let stale =
            try_request(Method::GET, &format!("{restarted}/fekv/{last}?consistency=stale"), "", &[]).await.unwrap();
        if stale.status == StatusCode::OK {
            break;
        }
        assert!(Instant::now() < deadline, "the restarted node did not catch up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_every_node_keeps_every_acknowledged_write() {
    let mut cluster = ProcessCluster::start(3);
    cluster.wait_leader().await;
    let bases = Arc::new(parking_lot::Mutex::new(cluster.bases()));
    let writers = Writers::start(bases, 4);
    wait_count(&writers.count, 300).await;
    for i in 0..3 {
        cluster.kill9(i);
    }
    let acked = writers.finish().await;
    for i in 0..3 {
        cluster.restart(i);
    }
    cluster.wait_leader().await;
    let base = cluster.bases()[0].clone();
    for (key, value) in &acked {
        assert_eq!(get_via(&base, key).await, (StatusCode::OK, value.clone()), "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lone_survivor_answers_503_and_never_serves_stale_reads_as_linearizable() {
    let mut cluster = ProcessCluster::start(3);
    cluster.wait_leader().await;
    let bases = cluster.bases();
    put_anywhere(&bases, "k", "v1", Duration::from_secs(20)).await.unwrap();
    // Make sure every replica has it, then leave one node alone.
    for base in &bases {
        let deadline = Instant::now() + Duration::from_secs(10);
        while try_request(Method::GET, &format!("{base}/fekv/k?consistency=stale"), "", &[]).await.unwrap().status
            != StatusCode::OK
        {
            assert!(Instant::now() < deadline);
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    cluster.kill9(1);
    cluster.kill9(2);
    let survivor = cluster.nodes[0].as_ref().unwrap();
    // Give a leader on the survivor time to notice it lost its quorum (check-quorum steps it down).
    tokio::time::sleep(Duration::from_secs(2)).await;
    let started = Instant::now();
    let write = try_request(Method::PUT, &survivor.url("/fekv/k"), "v2", &[]).await.unwrap();
    assert!(
        matches!(write.status, StatusCode::SERVICE_UNAVAILABLE | StatusCode::GATEWAY_TIMEOUT),
        "{}: {}",
        write.status,
        write.text()
    );
    let read = try_request(Method::GET, &survivor.url("/fekv/k"), "", &[]).await.unwrap();
    assert_eq!(read.status, StatusCode::SERVICE_UNAVAILABLE, "{}", read.text());
    assert!(read.header("retry-after").is_some());
    assert!(started.elapsed() < Duration::from_secs(15), "answers took {:?}", started.elapsed());
    // Its own replica is still readable for those who ask for it.
    let stale = try_request(Method::GET, &survivor.url("/fekv/k?consistency=stale"), "", &[]).await.unwrap();
    assert_eq!((stale.status, stale.text().as_str()), (StatusCode::OK, "v1"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_transfer_leader_moves_leadership_to_the_chosen_store() {
    let cluster = ProcessCluster::start(3);
    let leader = cluster.wait_leader().await;
    let follower = cluster.nodes.iter().enumerate().find(|(i, _)| *i != leader).map(|(i, _)| i).unwrap();
    let follower_node = cluster.nodes[follower].as_ref().unwrap();
    let status = try_request(Method::GET, &follower_node.url("/status"), "", &[]).await.unwrap().json();
    let (store_id, region_id) =
        (status["store_id"].as_u64().unwrap(), status["regions"][0]["region_id"].as_u64().unwrap());
    // Placement must have heard of the leader before it can hand the operator over.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_fekv"))
            .args(["ctl", "--placement", &cluster.placement.addr, "region", "transfer-leader"])
            .args([region_id.to_string(), store_id.to_string(), "--wait".to_string()])
            .output()
            .unwrap();
        if output.status.success() {
            assert!(String::from_utf8_lossy(&output.stdout).contains(&format!("led by store {store_id}")));
            break;
        }
        assert!(Instant::now() < deadline, "transfer-leader: {}", String::from_utf8_lossy(&output.stderr));
    }
    let status = try_request(Method::GET, &follower_node.url("/status"), "", &[]).await.unwrap().json();
    assert_eq!(status["regions"][0]["role"], "leader", "{status}");
    // Writes now land on it directly.
    let (reply, hops) = request_following(Method::PUT, &follower_node.url("/fekv/moved"), "yes", &[]).await.unwrap();
    assert_eq!((reply.status, hops), (StatusCode::OK, 0));
}
