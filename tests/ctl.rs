//! `fekv ctl` against real processes: a placement service and three nodes, asked through the binary
//! as an operator would run it; and against addresses where nothing (or nothing useful) answers.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::process::FekvProcess;
use serde_json::Value;

/// One finished `fekv ctl` run.
struct CtlRun {
    success: bool,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl CtlRun {
    fn show(&self, args: &[&str]) {
        let code = if self.success { "ok" } else { "failed" };
        println!("$ fekv ctl {}  # {code} in {:?}\n{}{}", args.join(" "), self.took, self.stdout, self.stderr);
    }

    fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `fekv ctl --placement <placement> <args>`, waits for it and shows what it printed.
fn ctl(placement: &str, args: &[&str]) -> CtlRun {
    let run = run_ctl(placement, args);
    run.show(args);
    run
}

/// Runs `fekv ctl --placement <placement> <args>` and waits for it (at most 20 s: ctl's own deadlines
/// are 3 s per call, 10 s for `split --wait`).
fn run_ctl(placement: &str, args: &[&str]) -> CtlRun {
    let started = Instant::now();
    let mut child = Command::new(env!("CARGO_BIN_EXE_fekv"))
        .arg("ctl")
        .args(["--placement", placement])
        .args(args)
        .env_remove("FEKV_PLACEMENT")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn fekv ctl");
    // Drain both pipes on threads so a large output can never block the child.
    let mut out = child.stdout.take().unwrap();
    let mut err = child.stderr.take().unwrap();
    let stdout = std::thread::spawn(move || {
        let mut text = String::new();
        out.read_to_string(&mut text).map(|_| text).unwrap_or_default()
    });
    let stderr = std::thread::spawn(move || {
        let mut text = String::new();
        err.read_to_string(&mut text).map(|_| text).unwrap_or_default()
    });
    let deadline = started + Duration::from_secs(20);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("fekv ctl {args:?} did not finish within 20s");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    CtlRun {
        success: status.success(),
        stdout: stdout.join().unwrap(),
        stderr: stderr.join().unwrap(),
        took: started.elapsed(),
    }
}

/// Runs `ctl` until `done` accepts its result (at most `within`).
fn ctl_until(placement: &str, args: &[&str], within: Duration, done: impl Fn(&CtlRun) -> bool) -> CtlRun {
    let deadline = Instant::now() + within;
    loop {
        let run = run_ctl(placement, args);
        if done(&run) {
            run.show(args);
            return run;
        }
        if Instant::now() >= deadline {
            run.show(args);
            panic!("fekv ctl {args:?} never gave the expected answer within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn start_cluster(dir: &std::path::Path) -> (FekvProcess, Vec<FekvProcess>) {
    let placement = FekvProcess::start_placement(&dir.join("placement"), 3);
    let nodes = (0..3).map(|i| FekvProcess::start_node(&dir.join(format!("node-{i}")), &placement.addr)).collect();
    // The first region starts on the first node alone; the replica checker grows it.
    common::process::wait_replicated(&placement.addr, 3, Duration::from_secs(30));
    (placement, nodes)
}

fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items
}

#[test]
fn ctl_lists_stores_and_regions_and_checks_every_node() {
    let dir = tempfile::tempdir().unwrap();
    let (placement, mut nodes) = start_cluster(dir.path());
    let at = placement.addr.as_str();

    println!("-- the first region, with three peers and a leader once the leader has reported");
    let regions = ctl_until(at, &["region", "list", "-o", "json"], Duration::from_secs(20), |run| {
        run.success && run.json()[0]["leader_store_id"].as_u64().unwrap_or(0) != 0
    })
    .json();
    let regions = regions.as_array().unwrap();
    assert_eq!(regions.len(), 1, "{regions:?}");
    let region = &regions[0];
    assert_eq!((region["start_key"].as_str(), region["end_key"].as_str()), (Some(""), Some("")));
    // Bootstrapped with one peer, then two added by the replica checker: two membership changes.
    assert_eq!(region["epoch"]["conf_ver"], 3);
    assert_eq!(region["epoch"]["version"], 1);
    assert!(region["approximate_size"].is_u64());
    let peers = region["peers"].as_array().unwrap();
    assert_eq!(peers.len(), 3);
    let mut peer_stores: Vec<u64> = peers.iter().map(|p| p["store_id"].as_u64().unwrap()).collect();
    peer_stores.sort_unstable();
    assert!(peers.iter().all(|p| p["peer_id"].as_u64().unwrap() > 0));
    let leader_store = region["leader_store_id"].as_u64().unwrap();
    assert!(peer_stores.contains(&leader_store));
    let region_id = region["region_id"].as_u64().unwrap();

    println!("-- three up stores with their addresses and counts");
    let stores = ctl_until(at, &["store", "list", "-o", "json"], Duration::from_secs(10), |run| {
        run.success
            && run.json().as_array().unwrap().iter().map(|s| s["leader_count"].as_u64().unwrap()).sum::<u64>() == 1
    })
    .json();
    let stores = stores.as_array().unwrap();
    assert_eq!(stores.len(), 3);
    assert!(stores.iter().all(|s| s["state"] == "up"), "{stores:?}");
    assert!(stores.iter().all(|s| s["region_count"] == 1));
    assert!(stores.iter().all(|s| s["raft_addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:"))));
    let mut store_ids: Vec<u64> = stores.iter().map(|s| s["store_id"].as_u64().unwrap()).collect();
    store_ids.sort_unstable();
    assert_eq!(store_ids, peer_stores);
    let http_addrs = sorted(stores.iter().map(|s| s["http_addr"].as_str().unwrap().to_string()).collect());
    assert_eq!(http_addrs, sorted(nodes.iter().map(|n| n.addr.clone()).collect()));
    let leader = stores.iter().find(|s| s["store_id"] == leader_store).unwrap();
    assert_eq!(leader["leader_count"], 1);
    let table = ctl(at, &["store", "list"]);
    assert!(table.success && table.stdout.starts_with("STORE"), "{}", table.stdout);
    assert_eq!(table.stdout.lines().count(), 4);

    println!("-- a key's region, and the region by id");
    let found = ctl(at, &["region", "find", "somekey", "-o", "json"]);
    assert!(found.success, "{}", found.stderr);
    assert_eq!(found.json()["region_id"], region_id);
    let found = ctl(at, &["region", "find", "some%00key"]);
    assert!(found.success && found.stdout.lines().nth(1).unwrap().starts_with(&format!("{region_id} ")));
    let shown = ctl(at, &["-o", "json", "region", "show", &region_id.to_string()]);
    assert!(shown.success);
    assert_eq!(shown.json()["peers"].as_array().unwrap().len(), 3);
    let missing = ctl(at, &["region", "show", "999999"]);
    assert!(!missing.success);
    assert!(missing.stderr.contains("region 999999 is not known"), "{}", missing.stderr);

    println!("-- every node answers /status and /health");
    let status = ctl(at, &["cluster", "status", "-o", "json"]);
    assert!(status.success, "{}", status.stderr);
    let status = status.json();
    let status = status.as_array().unwrap();
    assert_eq!(status.len(), 3);
    for node in status {
        assert_eq!(node["state"], "up");
        assert_eq!(node["region_count"], 1);
        assert!(node["applied_index"].as_u64().unwrap() > 0, "{node}");
        assert!(!node["version"].as_str().unwrap().is_empty());
    }
    assert_eq!(status.iter().map(|n| n["leader_count"].as_u64().unwrap()).sum::<u64>(), 1);
    let health = ctl(at, &["cluster", "health"]);
    assert!(health.success, "{}", health.stderr);
    assert_eq!(health.stdout.lines().filter(|l| l.contains(" healthy ")).count(), 3, "{}", health.stdout);

    println!("-- a split is requested (its leader carries it out; not asserted here)");
    let split = ctl(at, &["region", "split", &region_id.to_string(), "--key", "m"]);
    assert!(split.success, "{}", split.stderr);
    assert!(split.stdout.contains("requested"), "{}", split.stdout);
    let split = ctl(at, &["region", "split", &region_id.to_string(), "-o", "json"]);
    assert!(split.success);
    assert_eq!(split.json()["requested"], true);
    let refused = ctl(at, &["region", "split", "999999"]);
    assert!(!refused.success);
    assert!(refused.stderr.contains("region 999999 is not known"), "{}", refused.stderr);

    println!("-- a dead node is down in `cluster status` and unhealthy in `cluster health`, and both fail");
    let dead = nodes.pop().unwrap();
    let dead_addr = dead.addr.clone();
    dead.kill9();
    let status = ctl(at, &["cluster", "status", "-o", "json"]);
    assert!(!status.success);
    assert!(status.stderr.contains("1 of 3 nodes did not answer"), "{}", status.stderr);
    let down: Vec<Value> = status.json().as_array().unwrap().iter().filter(|n| n["state"] == "down").cloned().collect();
    assert_eq!(down.len(), 1);
    assert_eq!(down[0]["http_addr"], dead_addr.as_str());
    assert!(down[0]["error"].is_string());
    let health = ctl(at, &["cluster", "health", "-o", "json"]);
    assert!(!health.success);
    assert!(health.stderr.contains("1 of 3 nodes are unhealthy"), "{}", health.stderr);
    let unhealthy: Vec<Value> =
        health.json().as_array().unwrap().iter().filter(|n| n["healthy"] == false).cloned().collect();
    assert_eq!(unhealthy.len(), 1);
    assert_eq!(unhealthy[0]["http_addr"], dead_addr.as_str());
    assert!(health.took < Duration::from_secs(10));
}

#[test]
fn ctl_fails_clearly_and_quickly_when_placement_is_unreachable() {
    // Nothing listens: the connection is refused.
    let refused = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().to_string()
    };
    // Something listens but never speaks: only ctl's own deadline ends the wait.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap().to_string();
    for addr in [&refused, &silent_addr] {
        for args in [&["store", "list"][..], &["region", "list", "-o", "json"], &["cluster", "health"]] {
            let run = ctl(addr, args);
            assert!(!run.success, "ctl {args:?} at {addr} succeeded");
            assert!(
                run.stderr.starts_with(&format!("error: cannot reach the placement service at {addr}: ")),
                "{}",
                run.stderr
            );
            assert!(run.stdout.is_empty(), "{}", run.stdout);
            assert!(run.took < Duration::from_secs(8), "took {:?}", run.took);
        }
    }
    let bad = ctl("not an address", &["store", "list"]);
    assert!(!bad.success);
    assert!(bad.stderr.contains("invalid placement address"), "{}", bad.stderr);
    drop(silent);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_wait_returns_once_placement_sees_the_split() {
    // Placement in-process, with this test playing the region's leader: it takes the split operator
    // from its heartbeat reply and reports the two halves, as the node's raftstore will.
    use fekv::proto::placement_client::PlacementClient;
    use fekv::proto::{
        operator, GetRegionsRequest, PeerReport, RegionEpoch, RegisterStoreRequest, StoreHeartbeatRequest,
    };
    use fekv::proto::{AllocIdRequest, Peer, Region};

    let dir = tempfile::tempdir().unwrap();
    let options = fekv_placement::PlacementOptions { replicas: 1, ..Default::default() };
    let placement = std::sync::Arc::new(fekv_placement::Placement::open(dir.path(), options).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(fekv_placement::service::serve(listener, placement, async {
        let _ = stopped.await;
    }));
    let mut client = PlacementClient::connect(format!("http://{addr}")).await.unwrap();
    let store_id = client
        .register_store(RegisterStoreRequest {
            store_id: 0,
            raft_addr: "127.0.0.1:1".into(),
            http_addr: "127.0.0.1:2".into(),
            version: "test".into(),
        })
        .await
        .unwrap()
        .into_inner()
        .store_id;
    let region =
        client.get_regions(GetRegionsRequest {}).await.unwrap().into_inner().regions[0].region.clone().unwrap();
    let report = |region: &Region| PeerReport {
        region: Some(region.clone()),
        leader_peer_id: region.peers[0].peer_id,
        term: 2,
        is_leader: true,
        ..Default::default()
    };
    let beat = |peers: Vec<PeerReport>| StoreHeartbeatRequest { store_id, peers, used_bytes: 0 };
    client.store_heartbeat(beat(vec![report(&region)])).await.unwrap();

    let region_id = region.region_id.to_string();
    let ctl_addr = addr.clone();
    let waiting = tokio::task::spawn_blocking(move || {
        ctl(&ctl_addr, &["region", "split", &region_id, "--key", "m", "--wait", "-o", "json"])
    });

    let deadline = Instant::now() + Duration::from_secs(10);
    let split_key = loop {
        let operators = client.store_heartbeat(beat(vec![report(&region)])).await.unwrap().into_inner().operators;
        if let Some(op) = operators.first() {
            assert_eq!((op.region_id, op.epoch), (region.region_id, region.epoch));
            let Some(operator::Kind::Split(split)) = &op.kind else { panic!("not a split: {op:?}") };
            break split.split_key.clone();
        }
        assert!(Instant::now() < deadline, "the split operator never came");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(split_key, b"m");
    let ids = client.alloc_id(AllocIdRequest { count: 2 }).await.unwrap().into_inner().ids;
    let epoch = Some(RegionEpoch { version: 2, conf_ver: 1 });
    let left = Region { end_key: split_key.clone(), epoch, ..region.clone() };
    let right = Region {
        region_id: ids[0],
        start_key: split_key,
        end_key: Vec::new(),
        epoch,
        peers: vec![Peer { peer_id: ids[1], store_id }],
    };
    client.store_heartbeat(beat(vec![report(&left), report(&right)])).await.unwrap();

    let run = waiting.await.unwrap();
    assert!(run.success, "{}", run.stderr);
    let halves = run.json()["regions"].clone();
    assert_eq!(halves[0]["region_id"], region.region_id);
    assert_eq!((halves[0]["start_key"].as_str(), halves[0]["end_key"].as_str()), (Some(""), Some("m")));
    assert_eq!(halves[1]["region_id"], ids[0]);
    assert_eq!((halves[1]["start_key"].as_str(), halves[1]["end_key"].as_str()), (Some("m"), Some("")));
    let _ = stop.send(());
    let _ = tokio::time::timeout(Duration::from_secs(5), server).await;
}
