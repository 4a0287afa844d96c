//! Membership and scheduling with real processes: a placement service and nodes on 127.0.0.1 that
//! grow from one replica to three, rebuild the replicas of a node killed with `kill -9` and destroy
//! its stale peers when it returns, repair every region when a node dies while the balancers are
//! moving replicas and leaders to it, and drain a store with `fekv ctl store remove`; each with a
//! write load running and every acknowledged write read back afterwards through every node.

mod common;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::process::{ctl_json, ctl_output, wait_regions, wait_replicated, FekvProcess};
use common::{put_anywhere, request_following, try_request};
use hyper::{Method, StatusCode};
use serde_json::Value;

/// One writer going through every live node, recording what was acknowledged.
struct Writer {
    stop: Arc<AtomicBool>,
    acked: Arc<parking_lot::Mutex<BTreeMap<String, String>>>,
    count: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Writer {
    fn start(bases: Arc<parking_lot::Mutex<Vec<String>>>) -> Writer {
        Self::start_with(bases, 0, Duration::ZERO)
    }

    /// A writer whose values are padded to at least `value_len` bytes (so small regions split after
    /// a few writes) and that waits `pace` between writes.
    fn start_with(bases: Arc<parking_lot::Mutex<Vec<String>>>, value_len: usize, pace: Duration) -> Writer {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(parking_lot::Mutex::new(BTreeMap::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let (s, a, c) = (stop.clone(), acked.clone(), count.clone());
        let task = tokio::spawn(async move {
            let mut i = 0u64;
            while !s.load(Ordering::Relaxed) {
                // Spread over the keyspace, so every region takes writes.
                let (key, mut value) = (format!("w{:05}-{i:06}", (i * 7919) % 100_000), format!("value-{i}"));
                if value.len() < value_len {
                    value.push_str(&".".repeat(value_len - value.len()));
                }
                let targets = bases.lock().clone();
                // A write that fails for a while is abandoned (its outcome is unknown); the next one
                // is a new key.
                if put_anywhere(&targets, &key, &value, Duration::from_secs(10)).await.is_ok() {
                    a.lock().insert(key, value);
                    c.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
                tokio::time::sleep(pace).await;
            }
        });
        Writer { stop, acked, count, task }
    }

    /// Waits until `more` writes beyond the current count are acknowledged (at most 30 s).
    async fn wait_more(&self, more: usize) {
        let target = self.count.load(Ordering::Relaxed) + more;
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.count.load(Ordering::Relaxed) < target {
            assert!(Instant::now() < deadline, "writes stalled at {}", self.count.load(Ordering::Relaxed));
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn finish(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        tokio::time::timeout(Duration::from_secs(30), self.task).await.expect("the writer stops").unwrap();
        let acked = self.acked.lock().clone();
        acked
    }
}

/// What went wrong inside the nodes, for a failure message: every panic and error line they logged.
fn node_trouble(nodes: &[&FekvProcess]) -> String {
    let mut trouble = String::new();
    for node in nodes {
        let lines = node.stderr_lines();
        for (i, line) in lines.iter().enumerate() {
            if line.contains("panicked") || line.contains("ERROR") {
                let next = lines.get(i + 1).map_or("", String::as_str);
                trouble.push_str(&format!("\n{}: {line}\n    {next}", node.base));
            }
        }
    }
    trouble
}

/// Every acknowledged write reads back: all of them through the first node, a sample through each of
/// the others (redirects to each key's leader are followed, so every node must route every key).
async fn check_acked(nodes: &[&FekvProcess], acked: &BTreeMap<String, String>) {
    assert!(!acked.is_empty());
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    for (n, base) in bases.iter().enumerate() {
        for (key, value) in acked.iter().enumerate().filter(|(i, _)| n == 0 || i % 7 == n % 7).map(|(_, kv)| kv) {
            let deadline = Instant::now() + Duration::from_secs(20);
            loop {
                let got = request_following(Method::GET, &format!("{base}/fekv/{key}"), "", &[]).await;
                match got {
                    Ok((reply, _)) if reply.status == StatusCode::OK => {
                        assert_eq!(reply.text(), *value, "{key} via {base}");
                        break;
                    }
                    Ok((reply, _)) if reply.status == StatusCode::NOT_FOUND => {
                        panic!("acknowledged write {key} is missing via {base}")
                    }
                    other => {
                        assert!(Instant::now() < deadline, "{key} via {base}: {other:?}{}", node_trouble(nodes))
                    }
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    eprintln!("{} acknowledged writes read back through {} nodes", acked.len(), bases.len());
    let trouble = node_trouble(nodes);
    assert!(!trouble.contains("panicked"), "a node panicked:{trouble}");
}

/// A node's store id, from its /status.
async fn store_id_of(node: &FekvProcess) -> u64 {
    let status = try_request(Method::GET, &node.url("/status"), "", &[]).await.unwrap().json();
    status["store_id"].as_u64().expect("/status has a store_id")
}

/// `fekv ctl ... -o json`, off the async workers (it is a child process we wait for).
async fn ctl(placement: &str, args: &[&str]) -> Value {
    let (placement, args): (String, Vec<String>) = (placement.into(), args.iter().map(|s| s.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        ctl_json(&placement, &args).unwrap_or_else(|err| panic!("{err}"))
    })
    .await
    .unwrap()
}

/// `fekv ctl <args>` expected to fail: its stderr.
fn ctl_fails(placement: &str, args: &[&str]) -> String {
    let output = ctl_output(placement, args).expect("run fekv ctl");
    assert!(!output.status.success(), "fekv ctl {args:?} succeeded: {}", String::from_utf8_lossy(&output.stdout));
    String::from_utf8_lossy(&output.stderr).into_owned()
}

fn store_state(stores: &Value, store_id: u64) -> String {
    let store = stores.as_array().unwrap().iter().find(|s| s["store_id"] == store_id).expect("store listed");
    store["state"].as_str().unwrap().to_string()
}

fn holds(region: &Value, store_id: u64) -> bool {
    region["peers"].as_array().unwrap().iter().any(|p| p["store_id"] == store_id)
}

/// A node's counter from /metrics (0 when absent).
async fn metric(node: &FekvProcess, name: &str) -> f64 {
    let text = try_request(Method::GET, &node.url("/metrics"), "", &[]).await.map(|r| r.text()).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix(name).and_then(|rest| rest.trim().parse::<f64>().ok())).unwrap_or(0.0)
}

/// The regions as placement lists them, once `done` accepts them (off the async workers).
async fn regions_when(
    placement: &str,
    within: Duration,
    what: &'static str,
    done: impl Fn(&[Value]) -> bool + Send + 'static,
) -> Vec<Value> {
    let placement = placement.to_string();
    tokio::task::spawn_blocking(move || wait_regions(&placement, within, what, done)).await.unwrap()
}

async fn replicated(placement: &str, replicas: usize, within: Duration) -> Vec<Value> {
    let placement = placement.to_string();
    tokio::task::spawn_blocking(move || wait_replicated(&placement, replicas, within)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_grows_to_three_replicas_under_a_write_load() {
    let dir = tempfile::tempdir().unwrap();
    let placement = FekvProcess::start_placement(&dir.path().join("placement"), 3);
    let at = placement.addr.clone();
    // Small regions, so the keyspace splits while it grows.
    let node = |i: usize| {
        FekvProcess::start_node_with(&dir.path().join(format!("node-{i}")), &at, &["--region-max-size", "4KiB"])
    };
    let mut nodes = vec![node(0)];
    println!("-- one node: the first region has one peer, and it serves");
    let regions = replicated(&at, 1, Duration::from_secs(20)).await;
    assert_eq!(regions.len(), 1);
    let bases = Arc::new(parking_lot::Mutex::new(vec![nodes[0].base.clone()]));
    let writer = Writer::start(bases.clone());
    writer.wait_more(150).await;

    println!("-- two more nodes: the replica checker adds their peers, filled by snapshots");
    let started = Instant::now();
    nodes.push(node(1));
    nodes.push(node(2));
    bases.lock().extend(nodes[1..].iter().map(|n| n.base.clone()));
    let regions = replicated(&at, 3, Duration::from_secs(40)).await;
    let grown_in = started.elapsed();
    eprintln!("{} regions at 3 caught-up replicas {grown_in:?} after the two nodes started", regions.len());
    let mut ids = Vec::new();
    for node in &nodes {
        ids.push(store_id_of(node).await);
    }
    for region in &regions {
        assert!(ids.iter().all(|&store_id| holds(region, store_id)), "{region}");
    }
    // The growth is the replica checker's work, recorded as operators.
    let operators = ctl(&at, &["operator", "list"]).await;
    let adds = operators["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| op["source"] == "replica-check" && op["state"] == "success")
        .count();
    assert!(adds >= 2, "{operators}");

    writer.wait_more(100).await;
    let acked = writer.finish().await;
    check_acked(&nodes.iter().collect::<Vec<_>>(), &acked).await;
    // Every node holds a replica of every region now: each answers a stale (local) read of a key.
    let (key, value) = acked.iter().next().unwrap();
    for node in &nodes {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let url = node.url(&format!("/fekv/{key}?consistency=stale"));
            let reply = try_request(Method::GET, &url, "", &[]).await.unwrap();
            if reply.status == StatusCode::OK {
                assert_eq!(reply.text(), *value);
                break;
            }
            assert!(Instant::now() < deadline, "{} has no local copy of {key}", node.base);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    println!("-- balance-leader spreads the leaders: no store leads more than one region above another");
    let spread = regions_when(&at, Duration::from_secs(30), "leaders spread over the stores", move |regions| {
        let led = |store_id: u64| regions.iter().filter(|r| r["leader_store_id"] == store_id).count();
        let counts: Vec<usize> = ids.iter().map(|&id| led(id)).collect();
        counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1
    })
    .await;
    eprintln!("leaders of {} regions spread over 3 stores", spread.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_s_replicas_are_rebuilt_and_its_stale_peers_destroyed_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let placement = FekvProcess::start_placement_with(
        &dir.path().join("placement"),
        3,
        &["--max-store-down-time", "3s", "--operator-timeout", "30s"],
    );
    let at = placement.addr.clone();
    let start = |i: usize| FekvProcess::start_node(&dir.path().join(format!("node-{i}")), &at);
    let mut nodes: Vec<Option<FekvProcess>> = (0..4).map(|i| Some(start(i))).collect();
    let regions = replicated(&at, 3, Duration::from_secs(30)).await;
    let mut ids = Vec::new();
    for node in nodes.iter().flatten() {
        ids.push(store_id_of(node).await);
    }
    // The victim: the store leading the first region (the worst case: its region loses its leader too).
    let leader = regions[0]["leader_store_id"].as_u64().unwrap();
    let victim = ids.iter().position(|&id| id == leader).unwrap();
    let bases = Arc::new(parking_lot::Mutex::new(nodes.iter().flatten().map(|n| n.base.clone()).collect::<Vec<_>>()));
    let writer = Writer::start(bases.clone());
    writer.wait_more(100).await;

    println!("-- kill -9 of store {leader}, the leader");
    let killed_at = Instant::now();
    let dead = nodes[victim].take().unwrap();
    let (dead_base, dead_dir) = (dead.base.clone(), dead.data_dir.clone());
    dead.kill9();
    bases.lock().retain(|b| *b != dead_base);
    let rebuilt =
        regions_when(&at, Duration::from_secs(40), "every region rebuilt off the dead store", move |regions| {
            !regions.is_empty()
                && regions.iter().all(|r| {
                    !holds(r, leader)
                        && r["peers"].as_array().unwrap().len() == 3
                        && r["pending_peers"].as_array().unwrap().is_empty()
                        && r["leader_store_id"].as_u64().unwrap_or(0) != 0
                })
        })
        .await;
    let repaired_in = killed_at.elapsed();
    eprintln!("{} regions back at 3 replicas {repaired_in:?} after the kill (down after 3s)", rebuilt.len());
    let stores = ctl(&at, &["store", "list"]).await;
    assert_eq!(store_state(&stores, leader), "down", "{stores}");
    writer.wait_more(100).await;

    println!("-- the dead node returns: placement says up, and its stale peers destroy themselves");
    let returned_at = Instant::now();
    let back = FekvProcess::start_node(&dead_dir, &at);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let destroyed = metric(&back, "fekv_raft_peers_destroyed_total").await;
        let status = try_request(Method::GET, &back.url("/status"), "", &[]).await.unwrap().json();
        // It held a peer of every region placement rebuilt elsewhere (balance-region may hand it new
        // ones later, but not before these are gone: they block its store from taking a replica).
        if destroyed >= 1.0 {
            eprintln!(
                "store {leader} destroyed {destroyed} stale peers {:?} after it returned; it now holds {} regions",
                returned_at.elapsed(),
                status["regions"].as_array().map_or(0, Vec::len)
            );
            break;
        }
        assert!(Instant::now() < deadline, "no stale peer destroyed on the returning node: {status}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let stores = ctl(&at, &["store", "list"]).await;
    assert_eq!(store_state(&stores, leader), "up", "{stores}");
    bases.lock().push(back.base.clone());
    nodes[victim] = Some(back);
    writer.wait_more(50).await;
    let acked = writer.finish().await;
    check_acked(&nodes.iter().flatten().collect::<Vec<_>>(), &acked).await;
    // The repair is on record: a replica-check operator added a peer and removed the dead one.
    let operators = ctl(&at, &["operator", "list"]).await;
    assert!(
        operators["history"].as_array().unwrap().iter().any(|op| op["source"] == "replica-check"
            && op["state"] == "success"
            && op["steps"].as_array().unwrap().iter().any(|s| s["kind"] == "remove-peer" && s["store_id"] == leader)),
        "{operators}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_moves_a_replica_by_hand_and_store_remove_drains_a_store() {
    let dir = tempfile::tempdir().unwrap();
    let placement = FekvProcess::start_placement_with(&dir.path().join("placement"), 3, &["--operator-timeout", "30s"]);
    let at = placement.addr.clone();
    let nodes: Vec<FekvProcess> =
        (0..4).map(|i| FekvProcess::start_node(&dir.path().join(format!("node-{i}")), &at)).collect();
    let regions = replicated(&at, 3, Duration::from_secs(30)).await;
    let region = &regions[0];
    let region_id = region["region_id"].as_u64().unwrap().to_string();
    let mut ids = Vec::new();
    for node in &nodes {
        ids.push(store_id_of(node).await);
    }
    let spare = *ids.iter().find(|&&id| !holds(region, id)).expect("a store without the region");
    let leader = region["leader_store_id"].as_u64().unwrap();
    let bases = Arc::new(parking_lot::Mutex::new(nodes.iter().map(|n| n.base.clone()).collect::<Vec<_>>()));
    let writer = Writer::start(bases.clone());
    writer.wait_more(50).await;

    println!("-- bad requests fail with the reason");
    let err = ctl_fails(&at, &["region", "add-peer", &region_id, &leader.to_string()]);
    assert!(err.contains(&format!("already has a peer on store {leader}")), "{err}");
    let err = ctl_fails(&at, &["region", "remove-peer", &region_id, &spare.to_string()]);
    assert!(err.contains(&format!("has no peer on store {spare}")), "{err}");
    let err = ctl_fails(&at, &["region", "add-peer", "999999", &spare.to_string()]);
    assert!(err.contains("region 999999 is not known"), "{err}");
    let err = ctl_fails(&at, &["store", "remove", "999999"]);
    assert!(err.contains("store 999999 is not registered"), "{err}");
    let err = ctl_fails(&at, &["scheduler", "disable", "replica-check"]);
    assert!(err.contains("cannot be disabled"), "{err}");
    let err = ctl_fails(&at, &["scheduler", "enable", "balance-hotspot"]);
    assert!(err.contains("no scheduler is named"), "{err}");

    println!("-- move the leader's replica to the spare store by hand: add, then remove");
    let schedulers = ctl(&at, &["scheduler", "disable", "balance-region"]).await;
    assert_eq!(schedulers[2], serde_json::json!({ "name": "balance-region", "enabled": false, "can_disable": true }));
    let added =
        ctl(&at, &["region", "add-peer", &region_id, &spare.to_string(), "--wait", "--wait-timeout", "20s"]).await;
    assert_eq!(added["state"], "success", "{added}");
    let shown = ctl(&at, &["region", "show", &region_id]).await;
    assert_eq!(shown["peers"].as_array().unwrap().len(), 4, "{shown}");
    let removed =
        ctl(&at, &["region", "remove-peer", &region_id, &leader.to_string(), "--wait", "--wait-timeout", "20s"]).await;
    assert_eq!(removed["state"], "success", "{removed}");
    let kinds: Vec<&str> = removed["steps"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["transfer-leader", "remove-peer"], "the leader's own peer: leadership moves first");
    let shown = ctl(&at, &["region", "show", &region_id]).await;
    assert!(!holds(&shown, leader) && holds(&shown, spare), "{shown}");
    assert_ne!(shown["leader_store_id"], leader);

    println!("-- drain store {spare}: offline, its replicas move away, then removed");
    let offline = ctl(&at, &["store", "remove", &spare.to_string()]).await;
    assert!(["offline", "removed"].contains(&offline["state"].as_str().unwrap()), "{offline}");
    let drained_at = Instant::now();
    let removed = ctl(&at, &["store", "remove", &spare.to_string(), "--wait", "--wait-timeout", "30s"]).await;
    assert_eq!(removed["state"], "removed", "{removed}");
    eprintln!("store {spare} drained and removed {:?} after `store remove`", drained_at.elapsed());
    let regions = replicated(&at, 3, Duration::from_secs(20)).await;
    assert!(regions.iter().all(|r| !holds(r, spare)), "{regions:?}");
    let stores = ctl(&at, &["store", "list"]).await;
    assert_eq!(store_state(&stores, spare), "removed");
    let err = ctl_fails(&at, &["region", "add-peer", &region_id, &spare.to_string()]);
    assert!(err.contains(&format!("store {spare} is removed")), "{err}");
    // The drained node destroyed its peer; nothing routes to it any more.
    let drained = &nodes[ids.iter().position(|&id| id == spare).unwrap()];
    let deadline = Instant::now() + Duration::from_secs(20);
    while metric(drained, "fekv_raft_peers_destroyed_total").await < 1.0 {
        assert!(Instant::now() < deadline, "the drained node never destroyed its peer");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bases.lock().retain(|b| *b != drained.base);
    writer.wait_more(50).await;
    let acked = writer.finish().await;
    let live: Vec<&FekvProcess> = nodes.iter().filter(|n| n.base != drained.base).collect();
    check_acked(&live, &acked).await;

    println!("-- the removed store may not come back: its node refuses to start, saying why");
    let drained_dir = drained.data_dir.clone();
    let mut nodes = nodes;
    nodes.retain(|n| n.data_dir != drained_dir);
    let mut again = std::process::Command::new(env!("CARGO_BIN_EXE_fekv"))
        .args(["--placement", &at, "--raft-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir"])
        .arg(&drained_dir)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(15);
    let status = loop {
        if let Some(status) = again.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = again.kill();
            panic!("the removed store's node kept trying to start");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut again.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains(&format!("store {spare} was removed from the cluster")), "{stderr}");

    let operators = ctl(&at, &["operator", "list"]).await;
    let history = operators["history"].as_array().unwrap();
    assert!(history.iter().any(|op| op["source"] == "admin" && op["state"] == "success"));
    assert!(
        history.iter().any(|op| op["source"] == "replica-check"
            && op["steps"].as_array().unwrap().iter().any(|s| s["kind"] == "remove-peer" && s["store_id"] == spare)),
        "{operators}"
    );
}

/// Issue 14, fault 2: a node joins, the balancers start moving replicas and leaders to it, and it
/// dies while an operator's step still targets it (a peer it is receiving, or a leadership it is to
/// take). Such an operator can never finish; placement must give it up once the store is down and
/// repair the region, not wait for the operator timeout (3 minutes here) with the replica checker
/// locked out. Every region is repaired within `--max-store-down-time` + 25 s of the kill.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_while_the_balancers_fill_it_has_every_region_repaired_at_once() {
    use fekv::proto::placement_client::PlacementClient;
    use fekv::proto::{GetOperatorsRequest, GetRegionsRequest, StepKind};

    const DOWN_AFTER: Duration = Duration::from_secs(5);
    let dir = tempfile::tempdir().unwrap();
    let placement = FekvProcess::start_placement_with(
        &dir.path().join("placement"),
        3,
        &["--max-store-down-time", "5s", "--operator-timeout", "3m"],
    );
    let at = placement.addr.clone();
    let start = |i: usize| {
        FekvProcess::start_node_with(&dir.path().join(format!("node-{i}")), &at, &["--region-max-size", "4KiB"])
    };
    let mut nodes: Vec<FekvProcess> = (0..3).map(start).collect();
    let bases = Arc::new(parking_lot::Mutex::new(nodes.iter().map(|n| n.base.clone()).collect::<Vec<_>>()));
    println!("-- three nodes, and the keyspace split into several regions by half-KiB values");
    let filler = Writer::start_with(bases.clone(), 512, Duration::ZERO);
    regions_when(&at, Duration::from_secs(60), "6 regions", |regions| regions.len() >= 6).await;
    let mut acked = filler.finish().await;
    let regions = replicated(&at, 3, Duration::from_secs(30)).await;
    eprintln!("{} regions at 3 replicas", regions.len());
    // From here on, a steady load of small writes (not enough to split much).
    let writer = Writer::start_with(bases.clone(), 0, Duration::from_millis(20));

    println!("-- a fourth node joins; it dies while an operator still targets it");
    let joining = FekvProcess::start_node_with(&dir.path().join("node-3"), &at, &["--region-max-size", "4KiB"]);
    let newcomer = store_id_of(&joining).await;
    let mut client = PlacementClient::connect(format!("http://{at}")).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    // An operator whose step under way adds a peer the new store holds but is still receiving, or
    // hands it a leadership: either can only finish with the store alive.
    let caught = loop {
        let running = client.get_operators(GetOperatorsRequest {}).await.unwrap().into_inner().running;
        let regions = client.get_regions(GetRegionsRequest::default()).await.unwrap().into_inner().regions;
        let in_flight = running.iter().find(|op| {
            let Some(step) = op.steps.get(op.current_step as usize) else { return false };
            let Some(info) = regions.iter().find(|r| r.region.as_ref().is_some_and(|r| r.region_id == op.region_id))
            else {
                return false;
            };
            let receiving = step.kind == StepKind::AddPeer as i32
                && info.pending_peers.iter().any(|p| p.store_id == newcomer && p.peer_id == step.peer_id);
            let leading = step.kind == StepKind::TransferLeader as i32;
            step.store_id == newcomer && (receiving || leading)
        });
        if let Some(op) = in_flight {
            break op.clone();
        }
        assert!(Instant::now() < deadline, "no operator was seen in flight to store {newcomer}: {running:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let killed_at = Instant::now();
    joining.kill9();
    eprintln!("store {newcomer} killed during operator {} ({}): {:?}", caught.operator_id, caught.source, caught.steps);

    let within = DOWN_AFTER + Duration::from_secs(25);
    let repaired = regions_when(&at, within, "every region repaired off the dead store", move |regions| {
        regions.iter().all(|r| {
            !holds(r, newcomer)
                && r["peers"].as_array().unwrap().len() == 3
                && r["pending_peers"].as_array().unwrap().is_empty()
                && r["leader_store_id"].as_u64().unwrap_or(0) != 0
        })
    })
    .await;
    eprintln!(
        "{} regions repaired {:?} after the kill (down after {DOWN_AFTER:?})",
        repaired.len(),
        killed_at.elapsed()
    );
    let operators = ctl(&at, &["operator", "list"]).await;
    let ended = operators["history"].as_array().unwrap().iter().find(|op| op["operator_id"] == caught.operator_id);
    assert!(
        ended.is_some_and(|op| ["cancelled", "replaced", "success"].contains(&op["state"].as_str().unwrap())),
        "operator {} did not end: {operators}",
        caught.operator_id
    );

    writer.wait_more(30).await;
    acked.extend(writer.finish().await);
    check_acked(&nodes.iter().collect::<Vec<_>>(), &acked).await;
    nodes.clear();
}
