//! Membership and scheduling with real processes: a placement service and nodes on 127.0.0.1 that
//! grow from one replica to three, rebuild the replicas of a node killed with `kill -9` and destroy
//! its stale peers when it returns, repair every region when a node dies while the balancers are
//! moving replicas and leaders to it, and drain a store with `fekv ctl store remove`; each with a
//! write load running and every acknowledged write read back afterwards through every node.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use common::process::{ctl as run_ctl, run_fekv, FekvProcess};
use common::process_cluster::{local_copy, ProcessCluster};
use common::wait::eventually;
use common::writers::{Load, Writers};
use common::{request_following, try_request};
use hyper::{Method, StatusCode};
use serde_json::Value;

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
            let what = format!("{key} via {base}");
            let got = common::wait::try_eventually(Duration::from_secs(20), || async {
                match request_following(Method::GET, &format!("{base}/fekv/{key}"), "", &[]).await {
                    Ok((reply, _)) if reply.status == StatusCode::OK => Ok(reply.text()),
                    Ok((reply, _)) if reply.status == StatusCode::NOT_FOUND => {
                        panic!("acknowledged write {key} is missing via {base}")
                    }
                    Ok((reply, _)) => Err(format!("{}: {}", reply.status, reply.text())),
                    Err(err) => Err(err),
                }
            })
            .await;
            let got = got.unwrap_or_else(|last| panic!("{what}: {last}{}", node_trouble(nodes)));
            assert_eq!(got, *value, "{what}");
        }
    }
    eprintln!("{} acknowledged writes read back through {} nodes", acked.len(), bases.len());
    let trouble = node_trouble(nodes);
    assert!(!trouble.contains("panicked"), "a node panicked:{trouble}");
}

/// `fekv ctl <args>` expected to fail: its stderr.
fn ctl_fails(placement: &str, args: &[&str]) -> String {
    let run = tokio::task::block_in_place(|| run_ctl(placement, args));
    assert!(!run.success, "fekv ctl {args:?} succeeded: {}", run.stdout);
    run.stderr
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

/// Waits (at most `within`) for `node`'s counter `name` to reach `at_least`.
async fn wait_metric(node: &FekvProcess, name: &str, at_least: f64, within: Duration) -> f64 {
    eventually(within, &format!("{name} >= {at_least} on {}", node.base), || async {
        let value = metric(node, name).await;
        if value >= at_least {
            Ok(value)
        } else {
            Err(value.to_string())
        }
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_grows_to_three_replicas_under_a_write_load() {
    // Small regions, so the keyspace splits while it grows.
    let mut cluster = ProcessCluster::start(1, 3, &[], &["--region-max-size", "4KiB"]);
    println!("-- one node: the first region has one peer, and it serves");
    let regions = cluster.wait_replicated(1, Duration::from_secs(20)).await;
    assert_eq!(regions.len(), 1);
    let writer = Writers::start(cluster.targets(), Load::default());
    writer.wait_more(150).await;

    println!("-- two more nodes: the replica checker adds their peers, filled by snapshots");
    let started = Instant::now();
    cluster.add_node();
    cluster.add_node();
    let regions = cluster.wait_replicated(3, Duration::from_secs(40)).await;
    let grown_in = started.elapsed();
    eprintln!("{} regions at 3 caught-up replicas {grown_in:?} after the two nodes started", regions.len());
    let mut ids = Vec::new();
    for i in 0..3 {
        ids.push(cluster.store_id(i).await);
    }
    for region in &regions {
        assert!(ids.iter().all(|&store_id| holds(region, store_id)), "{region}");
    }
    // The growth is the replica checker's work, recorded as operators.
    let operators = cluster.ctl(&["operator", "list"]).await;
    let adds = operators["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|op| op["source"] == "replica-check" && op["state"] == "success")
        .count();
    assert!(adds >= 2, "{operators}");

    writer.wait_more(100).await;
    let acked = writer.finish().await;
    check_acked(&cluster.running(), &acked).await;
    // Every node holds a replica of every region now: each answers a stale (local) read of a key.
    let (key, value) = acked.iter().next().unwrap();
    for base in cluster.bases() {
        assert_eq!(local_copy(&base, key, Duration::from_secs(10)).await, *value);
    }
    println!("-- balance-leader spreads the leaders: no store leads more than one region above another");
    let within = Duration::from_secs(30);
    let spread = cluster
        .regions_when(within, "leaders spread over the stores", move |regions| {
            let led = |store_id: u64| regions.iter().filter(|r| r["leader_store_id"] == store_id).count();
            let counts: Vec<usize> = ids.iter().map(|&id| led(id)).collect();
            counts.iter().max().unwrap() - counts.iter().min().unwrap() <= 1
        })
        .await;
    eprintln!("leaders of {} regions spread over 3 stores", spread.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_s_replicas_are_rebuilt_and_its_stale_peers_destroyed_when_it_returns() {
    let mut cluster = ProcessCluster::start(4, 3, &["--max-store-down-time", "3s", "--operator-timeout", "30s"], &[]);
    let regions = cluster.wait_replicated(3, Duration::from_secs(30)).await;
    let mut ids = Vec::new();
    for i in 0..cluster.len() {
        ids.push(cluster.store_id(i).await);
    }
    // The victim: the store leading the first region (the worst case: its region loses its leader too).
    let leader = regions[0]["leader_store_id"].as_u64().unwrap();
    let victim = ids.iter().position(|&id| id == leader).unwrap();
    let writer = Writers::start(cluster.targets(), Load::default());
    writer.wait_more(100).await;

    println!("-- kill -9 of store {leader}, the leader");
    let killed_at = Instant::now();
    cluster.kill9(victim);
    let within = Duration::from_secs(40);
    let rebuilt = cluster
        .regions_when(within, "every region rebuilt off the dead store", move |regions| {
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
    let stores = cluster.ctl(&["store", "list"]).await;
    assert_eq!(store_state(&stores, leader), "down", "{stores}");
    writer.wait_more(100).await;

    println!("-- the dead node returns: placement says up, and its stale peers destroy themselves");
    let returned_at = Instant::now();
    cluster.restart(victim);
    let back = cluster.node(victim);
    // It held a peer of every region placement rebuilt elsewhere (balance-region may hand it new
    // ones later, but not before these are gone: they block its store from taking a replica).
    let destroyed = wait_metric(back, "fekv_raft_peers_destroyed_total", 1.0, Duration::from_secs(30)).await;
    let status = try_request(Method::GET, &back.url("/status"), "", &[]).await.unwrap().json();
    eprintln!(
        "store {leader} destroyed {destroyed} stale peers {:?} after it returned; it now holds {} regions",
        returned_at.elapsed(),
        status["regions"].as_array().map_or(0, Vec::len)
    );
    let stores = cluster.ctl(&["store", "list"]).await;
    assert_eq!(store_state(&stores, leader), "up", "{stores}");
    writer.wait_more(50).await;
    let acked = writer.finish().await;
    check_acked(&cluster.running(), &acked).await;
    // The repair is on record: a replica-check operator added a peer and removed the dead one.
    let operators = cluster.ctl(&["operator", "list"]).await;
    assert!(
        operators["history"].as_array().unwrap().iter().any(|op| op["source"] == "replica-check"
            && op["state"] == "success"
            && op["steps"].as_array().unwrap().iter().any(|s| s["kind"] == "remove-peer" && s["store_id"] == leader)),
        "{operators}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctl_moves_a_replica_by_hand_and_store_remove_drains_a_store() {
    let mut cluster = ProcessCluster::start(4, 3, &["--operator-timeout", "30s"], &[]);
    let at = cluster.placement().to_string();
    let regions = cluster.wait_replicated(3, Duration::from_secs(30)).await;
    let region = &regions[0];
    let region_id = region["region_id"].as_u64().unwrap().to_string();
    let mut ids = Vec::new();
    for i in 0..cluster.len() {
        ids.push(cluster.store_id(i).await);
    }
    let spare = *ids.iter().find(|&&id| !holds(region, id)).expect("a store without the region");
    let leader = region["leader_store_id"].as_u64().unwrap();
    let writer = Writers::start(cluster.targets(), Load::default());
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
    let schedulers = cluster.ctl(&["scheduler", "disable", "balance-region"]).await;
    assert_eq!(schedulers[2], serde_json::json!({ "name": "balance-region", "enabled": false, "can_disable": true }));
    let added =
        cluster.ctl(&["region", "add-peer", &region_id, &spare.to_string(), "--wait", "--wait-timeout", "20s"]).await;
    assert_eq!(added["state"], "success", "{added}");
    let shown = cluster.ctl(&["region", "show", &region_id]).await;
    assert_eq!(shown["peers"].as_array().unwrap().len(), 4, "{shown}");
    let removed = cluster
        .ctl(&["region", "remove-peer", &region_id, &leader.to_string(), "--wait", "--wait-timeout", "20s"])
        .await;
    assert_eq!(removed["state"], "success", "{removed}");
    let kinds: Vec<&str> = removed["steps"].as_array().unwrap().iter().map(|s| s["kind"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["transfer-leader", "remove-peer"], "the leader's own peer: leadership moves first");
    let shown = cluster.ctl(&["region", "show", &region_id]).await;
    assert!(!holds(&shown, leader) && holds(&shown, spare), "{shown}");
    assert_ne!(shown["leader_store_id"], leader);

    println!("-- drain store {spare}: offline, its replicas move away, then removed");
    let offline = cluster.ctl(&["store", "remove", &spare.to_string()]).await;
    assert!(["offline", "removed"].contains(&offline["state"].as_str().unwrap()), "{offline}");
    let drained_at = Instant::now();
    let removed = cluster.ctl(&["store", "remove", &spare.to_string(), "--wait", "--wait-timeout", "30s"]).await;
    assert_eq!(removed["state"], "removed", "{removed}");
    eprintln!("store {spare} drained and removed {:?} after `store remove`", drained_at.elapsed());
    let regions = cluster.wait_replicated(3, Duration::from_secs(20)).await;
    assert!(regions.iter().all(|r| !holds(r, spare)), "{regions:?}");
    let stores = cluster.ctl(&["store", "list"]).await;
    assert_eq!(store_state(&stores, spare), "removed");
    let err = ctl_fails(&at, &["region", "add-peer", &region_id, &spare.to_string()]);
    assert!(err.contains(&format!("store {spare} is removed")), "{err}");
    // The drained node destroyed its peer; nothing routes to it any more.
    let drained = ids.iter().position(|&id| id == spare).unwrap();
    wait_metric(cluster.node(drained), "fekv_raft_peers_destroyed_total", 1.0, Duration::from_secs(20)).await;
    let drained_base = cluster.node(drained).base.clone();
    cluster.targets().lock().retain(|b| *b != drained_base);
    writer.wait_more(50).await;
    let acked = writer.finish().await;
    let live: Vec<&FekvProcess> = cluster.running().into_iter().filter(|n| n.base != drained_base).collect();
    check_acked(&live, &acked).await;

    println!("-- the removed store may not come back: its node refuses to start, saying why");
    let drained_dir = cluster.node(drained).data_dir.display().to_string();
    cluster.kill9(drained);
    let args =
        ["--placement", &at, "--raft-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0", "--data-dir", &drained_dir];
    let again = tokio::task::block_in_place(|| run_fekv(&args, Duration::from_secs(15)));
    assert!(!again.success);
    assert!(again.stderr.contains(&format!("store {spare} was removed from the cluster")), "{}", again.stderr);

    let operators = cluster.ctl(&["operator", "list"]).await;
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
    let placement_flags = ["--max-store-down-time", "5s", "--operator-timeout", "3m"];
    let mut cluster = ProcessCluster::start(3, 3, &placement_flags, &["--region-max-size", "4KiB"]);
    let at = cluster.placement().to_string();
    println!("-- three nodes, and the keyspace split into several regions by half-KiB values");
    let filler = Writers::start(cluster.targets(), Load { value_len: 512, ..Load::default() });
    cluster.regions_when(Duration::from_secs(60), "6 regions", |regions| regions.len() >= 6).await;
    let mut acked = filler.finish().await;
    let regions = cluster.wait_replicated(3, Duration::from_secs(30)).await;
    eprintln!("{} regions at 3 replicas", regions.len());
    // From here on, a steady load of small writes (not enough to split much).
    let writer = Writers::start(cluster.targets(), Load { pace: Duration::from_millis(20), ..Load::default() });

    println!("-- a fourth node joins; it dies while an operator still targets it");
    let joining = cluster.add_node();
    let newcomer = cluster.store_id(joining).await;
    let client = PlacementClient::connect(format!("http://{at}")).await.unwrap();
    // An operator whose step under way adds a peer the new store holds but is still receiving, or
    // hands it a leadership: either can only finish with the store alive.
    let what = format!("an operator in flight to store {newcomer}");
    let caught = eventually(Duration::from_secs(60), &what, || async {
        let running = client.clone().get_operators(GetOperatorsRequest {}).await.unwrap().into_inner().running;
        let regions = client.clone().get_regions(GetRegionsRequest::default()).await.unwrap().into_inner().regions;
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
        in_flight.cloned().ok_or_else(|| format!("{running:?}"))
    })
    .await;
    let killed_at = Instant::now();
    cluster.kill9(joining);
    eprintln!("store {newcomer} killed during operator {} ({}): {:?}", caught.operator_id, caught.source, caught.steps);

    let within = DOWN_AFTER + Duration::from_secs(25);
    let repaired = cluster
        .regions_when(within, "every region repaired off the dead store", move |regions| {
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
    let operators = cluster.ctl(&["operator", "list"]).await;
    let ended = operators["history"].as_array().unwrap().iter().find(|op| op["operator_id"] == caught.operator_id);
    assert!(
        ended.is_some_and(|op| ["cancelled", "replaced", "success"].contains(&op["state"].as_str().unwrap())),
        "operator {} did not end: {operators}",
        caught.operator_id
    );

    writer.wait_more(30).await;
    acked.extend(writer.finish().await);
    check_acked(&cluster.running(), &acked).await;
}
