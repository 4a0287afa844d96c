//! `fekv ctl` against real processes: a placement service and three nodes, asked through the binary
//! as an operator would run it; and against addresses where nothing (or nothing useful) answers.

mod common;

use std::time::{Duration, Instant};

use common::process::{self, Run};
use common::process_cluster::ProcessCluster;
use common::wait::{eventually, eventually_sync, Watchdog};
use serde_json::Value;

/// Shows what a `fekv ctl` run printed, as on a terminal.
fn show(run: &Run, args: &[&str]) {
    let code = if run.success { "ok" } else { "failed" };
    println!("$ fekv ctl {}  # {code} in {:?}\n{}{}", args.join(" "), run.took, run.stdout, run.stderr);
}

/// Runs `fekv ctl --placement <placement> <args>`, waits for it and shows what it printed.
fn ctl(placement: &str, args: &[&str]) -> Run {
    let run = process::ctl(placement, args);
    show(&run, args);
    run
}

/// Runs `ctl` until `done` accepts its result (at most `within`).
fn ctl_until(placement: &str, args: &[&str], within: Duration, done: impl Fn(&Run) -> bool) -> Run {
    let run = eventually_sync(within, &format!("the expected answer of fekv ctl {args:?}"), || {
        let run = process::ctl(placement, args);
        if done(&run) {
            Ok(run)
        } else {
            Err(format!("{}{}", run.stdout, run.stderr))
        }
    });
    show(&run, args);
    run
}

fn sorted(mut items: Vec<String>) -> Vec<String> {
    items.sort();
    items
}

#[test]
fn ctl_lists_stores_and_regions_and_checks_every_node() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let mut cluster = runtime.block_on(ProcessCluster::three());
    let at = &cluster.placement().to_string();

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
    assert_eq!(http_addrs, sorted(cluster.running().iter().map(|n| n.addr.clone()).collect()));
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

    println!("-- a region's size survives a leader change (the new leader reports before it measures)");
    let bases = cluster.bases();
    for i in 0..20 {
        runtime
            .block_on(common::put_anywhere(&bases, &format!("key{i:02}"), "some value", Duration::from_secs(10)))
            .unwrap();
    }
    ctl_until(at, &["region", "list", "-o", "json"], Duration::from_secs(10), |run| {
        run.success && run.json()[0]["approximate_size"].as_u64().unwrap_or(0) > 0
    });
    let other = *peer_stores.iter().find(|&&s| s != leader_store).unwrap();
    let moved =
        ctl(at, &["region", "transfer-leader", &region_id.to_string(), &other.to_string(), "--wait", "-o", "json"]);
    assert!(moved.success, "{}", moved.stderr);
    assert_eq!(moved.json()["operator"]["state"], "success");
    let listed = ctl(at, &["region", "list", "-o", "json"]).json();
    assert_eq!(listed[0]["leader_store_id"], other);
    assert!(listed[0]["approximate_size"].as_u64().unwrap() > 0, "SIZE 0 B after a leader change: {listed}");

    println!("-- a split with --wait returns once both halves are known: no hole, every key found");
    let split = ctl(at, &["region", "split", &region_id.to_string(), "--key", "m", "--wait", "-o", "json"]);
    assert!(split.success, "{}", split.stderr);
    let halves = split.json()["regions"].clone();
    assert_eq!(halves.as_array().map(Vec::len), Some(2), "{halves}");
    let listed = ctl(at, &["region", "list", "-o", "json"]).json();
    let ranges: Vec<(&str, &str)> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|r| (r["start_key"].as_str().unwrap(), r["end_key"].as_str().unwrap()))
        .collect();
    assert_eq!(ranges, vec![("", "m"), ("m", "")], "a hole or an overlap right after the split");
    let found = ctl(at, &["region", "find", "z", "-o", "json"]);
    assert!(found.success, "{}", found.stderr);
    assert_eq!(found.json()["region_id"], halves[1]["region_id"]);
    println!("-- a split without --wait is only requested; one of an unknown region is refused");
    let split = ctl(at, &["region", "split", &region_id.to_string()]);
    assert!(split.success, "{}", split.stderr);
    assert!(split.stdout.contains("requested"), "{}", split.stdout);
    let refused = ctl(at, &["region", "split", "999999"]);
    assert!(!refused.success);
    assert!(refused.stderr.contains("region 999999 is not known"), "{}", refused.stderr);

    println!("-- a dead node is down in `cluster status` and unhealthy in `cluster health`, and both fail");
    let dead_addr = cluster.node(2).addr.clone();
    cluster.kill9(2);
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
    // (Below the ephemeral range: a connect to an ephemeral port nothing listens on can meet itself.)
    let refused = common::process::fixed_addrs(1).remove(0);
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

/// Placement in-process, with this test playing its one store and the store's regions' leader: it
/// takes the operators from its heartbeat replies and reports what it chooses, as the node's
/// raftstore would (or would not).
struct FakeLeader {
    client: fekv::proto::placement_client::PlacementClient<tonic::transport::Channel>,
    store_id: u64,
    /// The secret placement gave the store, presented with every heartbeat.
    secret: Vec<u8>,
    /// The first region, as placement bootstrapped it.
    region: fekv::proto::Region,
    addr: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    server: tokio::task::JoinHandle<Result<(), fekv_placement::service::ServeError>>,
    _dir: tempfile::TempDir,
    _watchdog: Watchdog,
}

impl FakeLeader {
    async fn start() -> FakeLeader {
        use fekv::proto::placement_client::PlacementClient;
        use fekv::proto::{GetRegionsRequest, RegisterStoreRequest};

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
        let request = RegisterStoreRequest {
            store_id: 0,
            raft_addr: "127.0.0.1:1".into(),
            http_addr: "127.0.0.1:2".into(),
            version: "test".into(),
            ..Default::default()
        };
        let registered = client.register_store(request).await.unwrap().into_inner();
        let (store_id, secret) = (registered.store_id, registered.store_secret);
        let regions = client.get_regions(GetRegionsRequest::default()).await.unwrap().into_inner().regions;
        let region = regions[0].region.clone().unwrap();
        let mut leader = FakeLeader {
            client,
            store_id,
            secret,
            region: region.clone(),
            addr,
            stop: Some(stop),
            server,
            _dir: dir,
            _watchdog: Watchdog::default(),
        };
        leader.beat(&[&region]).await;
        leader
    }

    /// Reports `regions` as their leader; returns the operators placement hands back.
    async fn beat(&mut self, regions: &[&fekv::proto::Region]) -> Vec<fekv::proto::Operator> {
        Self::beat_with(&mut self.client, self.store_id, &self.secret, regions).await
    }

    async fn beat_with(
        client: &mut fekv::proto::placement_client::PlacementClient<tonic::transport::Channel>,
        store_id: u64,
        secret: &[u8],
        regions: &[&fekv::proto::Region],
    ) -> Vec<fekv::proto::Operator> {
        let peers = regions
            .iter()
            .map(|region| fekv::proto::PeerReport {
                region: Some((*region).clone()),
                leader_peer_id: region.peers[0].peer_id,
                term: 2,
                is_leader: true,
                ..Default::default()
            })
            .collect();
        let request =
            fekv::proto::StoreHeartbeatRequest { store_id, peers, store_secret: secret.to_vec(), ..Default::default() };
        client.store_heartbeat(request).await.unwrap().into_inner().operators
    }

    /// Beats with the first region until placement hands over a split; returns its key.
    async fn split_operator(&mut self) -> Vec<u8> {
        let region = self.region.clone();
        let op = eventually(Duration::from_secs(10), "the split operator", || {
            let (mut client, store_id, secret) = (self.client.clone(), self.store_id, self.secret.clone());
            let region = region.clone();
            async move { Self::beat_with(&mut client, store_id, &secret, &[&region]).await.into_iter().next() }
        })
        .await;
        assert_eq!((op.region_id, op.epoch), (region.region_id, region.epoch));
        let Some(fekv::proto::operator::Kind::Split(split)) = &op.kind else { panic!("not a split: {op:?}") };
        split.split_key.clone()
    }

    /// The two halves of the first region split at `at` (new ids from placement), not reported yet.
    async fn halves(&mut self, at: &[u8]) -> (fekv::proto::Region, fekv::proto::Region) {
        use fekv::proto::{AllocIdRequest, Peer, Region, RegionEpoch};
        let ids = self.client.alloc_id(AllocIdRequest { count: 2 }).await.unwrap().into_inner().ids;
        let epoch = Some(RegionEpoch { version: 2, conf_ver: 1 });
        let left = Region { end_key: at.to_vec(), epoch, ..self.region.clone() };
        let right = Region {
            region_id: ids[0],
            start_key: at.to_vec(),
            end_key: Vec::new(),
            epoch,
            peers: vec![Peer { peer_id: ids[1], store_id: self.store_id }],
        };
        (left, right)
    }

    /// `fekv ctl <args>` against this placement, off the async workers.
    fn ctl(&self, args: &[&str]) -> tokio::task::JoinHandle<Run> {
        let (addr, args): (String, Vec<String>) = (self.addr.clone(), args.iter().map(|s| s.to_string()).collect());
        tokio::task::spawn_blocking(move || ctl(&addr, &args.iter().map(String::as_str).collect::<Vec<_>>()))
    }

    async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), self.server).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_wait_returns_once_placement_sees_the_split() {
    let mut leader = FakeLeader::start().await;
    let region_id = leader.region.region_id.to_string();
    let waiting = leader.ctl(&["region", "split", &region_id, "--key", "m", "--wait", "-o", "json"]);
    let split_key = leader.split_operator().await;
    assert_eq!(split_key, b"m");
    let (left, right) = leader.halves(&split_key).await;
    leader.beat(&[&left, &right]).await;

    let run = waiting.await.unwrap();
    assert!(run.success, "{}", run.stderr);
    let halves = run.json()["regions"].clone();
    assert_eq!(halves[0]["region_id"], left.region_id);
    assert_eq!((halves[0]["start_key"].as_str(), halves[0]["end_key"].as_str()), (Some(""), Some("m")));
    assert_eq!(halves[1]["region_id"], right.region_id);
    assert_eq!((halves[1]["start_key"].as_str(), halves[1]["end_key"].as_str()), (Some("m"), Some("")));
    leader.stop().await;
}

/// Issue 14, item 10: `region split --wait` returned before the right half was visible (a `region
/// list` right after showed a hole). It returns once both halves are known to placement.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_wait_returns_only_once_both_halves_are_known() {
    let mut leader = FakeLeader::start().await;
    let region_id = leader.region.region_id.to_string();
    let waiting = leader.ctl(&["region", "split", &region_id, "--key", "m", "--wait", "-o", "json"]);
    let split_key = leader.split_operator().await;
    let (left, right) = leader.halves(&split_key).await;
    // The left half's report alone: the split is done, but the right half is not known yet.
    leader.beat(&[&left]).await;
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        assert!(!waiting.is_finished(), "--wait returned with half of the split known: {:?}", waiting.await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    leader.beat(&[&left, &right]).await;
    let run = waiting.await.unwrap();
    assert!(run.success, "{}", run.stderr);
    let ids: Vec<u64> =
        run.json()["regions"].as_array().unwrap().iter().map(|r| r["region_id"].as_u64().unwrap()).collect();
    assert_eq!(ids, vec![left.region_id, right.region_id]);
    leader.stop().await;
}

/// Issue 14, item 10: `region split --key K --wait` exited 0 and printed the halves of another
/// split when its own operator was cancelled because the region split by size first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn split_wait_fails_when_the_region_split_elsewhere_first() {
    let mut leader = FakeLeader::start().await;
    let region_id = leader.region.region_id.to_string();
    let waiting = leader.ctl(&["region", "split", &region_id, "--key", "m", "--wait"]);
    assert_eq!(leader.split_operator().await, b"m");
    // The leader split the region by size, at "c", before it got to this one.
    let (left, right) = leader.halves(b"c").await;
    leader.beat(&[&left, &right]).await;
    let run = waiting.await.unwrap();
    assert!(!run.success, "succeeded: {}", run.stdout);
    assert!(run.stderr.contains("ended cancelled"), "{}", run.stderr);
    assert!(run.stderr.contains("split"), "says why: {}", run.stderr);
    leader.stop().await;
}
