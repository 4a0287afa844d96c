//! Issue 13, the whole cluster: three placement replicas (`fekv placement --peers`) and three nodes
//! given the list, under a write load that splits small regions. `kill -9` of the placement leader:
//! within seconds `fekv ctl region list` answers again (ctl finds the new leader), a split by hand
//! succeeds, a fourth node registers, a killed node's regions are repaired; then a second failover.
//! Every region and peer id ever seen stays unique. With two of three replicas down the nodes keep
//! serving reads and writes on the regions they hold while ctl gets placement's clear refusal; the
//! replicas restarted, it carries on.

mod common;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use common::process::{self, ctl_json};
use common::process_cluster::ProcessCluster;
use common::request_following;
use common::wait::eventually;
use common::writers::{Load, Writers};
use hyper::{Method, StatusCode};
use serde_json::Value;

/// Every region and peer id seen, with what it named: a peer id always names the same peer (region
/// and store), no id is both a region's and a peer's, and a region keeps its start or its end key
/// (a split gives the other half a new id). An id handed out twice breaks one of these.
#[derive(Default)]
struct Ids {
    /// region id → (start key, end key) when first seen, and whether every sighting kept each.
    regions: HashMap<u64, (String, String, bool, bool)>,
    /// peer id → (region id, store id)
    peers: HashMap<u64, (u64, u64)>,
}

impl Ids {
    fn see(&mut self, regions: &[Value]) {
        for region in regions {
            let region_id = region["region_id"].as_u64().unwrap();
            let start = region["start_key"].as_str().unwrap().to_string();
            let end = region["end_key"].as_str().unwrap().to_string();
            let seen = self.regions.entry(region_id).or_insert_with(|| (start.clone(), end.clone(), true, true));
            seen.2 &= seen.0 == start;
            seen.3 &= seen.1 == end;
            assert!(
                seen.2 || seen.3,
                "region {region_id} was [{}, {}), now [{start}, {end}): an id reused",
                seen.0,
                seen.1
            );
            for peer in region["peers"].as_array().unwrap() {
                let (peer_id, store_id) = (peer["peer_id"].as_u64().unwrap(), peer["store_id"].as_u64().unwrap());
                let named = *self.peers.entry(peer_id).or_insert((region_id, store_id));
                assert_eq!(named, (region_id, store_id), "peer id {peer_id} named two peers");
            }
        }
        let both: Vec<_> = self.peers.keys().filter(|id| self.regions.contains_key(id)).collect();
        assert!(both.is_empty(), "ids both a region's and a peer's: {both:?}");
    }
}

/// `fekv ctl -o json <args>` off the async workers.
async fn ctl(at: &str, args: &[&str]) -> process::Run {
    let (at, args): (String, Vec<String>) = (at.to_string(), args.iter().map(|s| s.to_string()).collect());
    tokio::task::spawn_blocking(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        process::ctl(&at, &args)
    })
    .await
    .unwrap()
}

/// The placement member that leads, by index, once the members that answer agree on one (`ctl
/// placement list` exits 1 while a member is down, but still prints every row).
async fn placement_leader(cluster: &ProcessCluster, members: usize) -> usize {
    let at = cluster.placement().to_string();
    eventually(Duration::from_secs(15), "one placement leader", || async {
        let run = ctl(&at, &["-o", "json", "placement", "list"]).await;
        let rows: Value =
            serde_json::from_str(&run.stdout).map_err(|e| format!("{e}: {}{}", run.stdout, run.stderr))?;
        let leaders: Vec<&Value> =
            rows.as_array().unwrap().iter().filter(|r| r["leader"] == true && r["healthy"] == true).collect();
        match leaders[..] {
            [leader] => (0..members)
                .find(|&j| cluster.placement_member(j) == leader["addr"].as_str().unwrap())
                .ok_or_else(|| format!("{leader} is no member")),
            _ => Err(rows.to_string()),
        }
    })
    .await
}

/// Kills the placement leader; returns its index once `region list` answers again, and how long that took.
async fn fail_over(cluster: &mut ProcessCluster, ids: &mut Ids) -> (usize, Duration) {
    let leader = placement_leader(cluster, 3).await;
    println!("-- kill -9 of placement member {} (the leader, at {})", leader + 1, cluster.placement_member(leader));
    cluster.kill9_placement_member(leader);
    let killed = Instant::now();
    let regions =
        cluster.regions_when(Duration::from_secs(20), "a new placement leader's region list", |r| !r.is_empty()).await;
    let took = killed.elapsed();
    println!("   region list answered again {took:?} after the kill ({} regions)", regions.len());
    ids.see(&regions);
    (leader, took)
}

/// Splits the region holding the most keys by hand (`region split --wait`), trying again if the
/// region split by size first; returns how long it took.
async fn split_by_hand(cluster: &ProcessCluster, ids: &mut Ids) -> Duration {
    let at = cluster.placement().to_string();
    let started = Instant::now();
    let split = eventually(Duration::from_secs(30), "a split by hand", || async {
        let regions = ctl_json(&at, &["region", "list"])?;
        let region = regions
            .as_array()
            .unwrap()
            .iter()
            .max_by_key(|r| r["approximate_keys"].as_u64().unwrap_or(0))
            .ok_or("no region")?
            .clone();
        let id = region["region_id"].to_string();
        let run = ctl(&at, &["-o", "json", "region", "split", &id, "--wait", "--wait-timeout", "10s"]).await;
        if run.success {
            Ok(run.json())
        } else {
            Err(format!("{}{}", run.stdout, run.stderr))
        }
    })
    .await;
    let halves: Vec<Value> = split["regions"].as_array().unwrap().clone();
    ids.see(&halves);
    println!("   split region {} by hand in {:?}", split["region_id"], started.elapsed());
    started.elapsed()
}

fn holds(region: &Value, store_id: u64) -> bool {
    region["peers"].as_array().unwrap().iter().any(|p| p["store_id"] == store_id)
}

async fn read_back(cluster: &ProcessCluster, acked: &BTreeMap<String, String>) {
    let bases = cluster.bases();
    for (i, (key, value)) in acked.iter().enumerate().filter(|(i, _)| i % 5 == 0) {
        let base = &bases[i % bases.len()];
        let got = eventually(Duration::from_secs(20), &format!("{key} via {base}"), || async {
            match request_following(Method::GET, &format!("{base}/fekv/{key}"), "", &[]).await {
                Ok((reply, _)) if reply.status == StatusCode::OK => Ok(reply.text()),
                Ok((reply, _)) if reply.status == StatusCode::NOT_FOUND => {
                    panic!("acknowledged write {key} is missing")
                }
                Ok((reply, _)) => Err(format!("{}: {}", reply.status, reply.text())),
                Err(err) => Err(err),
            }
        })
        .await;
        assert_eq!(got, *value, "{key}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_failover_keeps_splits_repairs_and_registrations_going_and_ids_unique() {
    let started = Instant::now();
    let placement_flags = ["--max-store-down-time", "3s"];
    let mut cluster = ProcessCluster::start_group(3, 3, 3, &placement_flags, &["--region-max-size", "4KiB"]);
    let at = cluster.placement().to_string();
    let mut ids = Ids::default();
    println!("-- three placement replicas ({at}), three nodes, writes that split 4 KiB regions");
    let writers =
        Writers::start(cluster.targets(), Load { value_len: 256, pace: Duration::from_millis(5), ..Load::default() });
    let regions = cluster.regions_when(Duration::from_secs(40), "4 regions", |r| r.len() >= 4).await;
    ids.see(&regions);
    ids.see(&cluster.wait_replicated(3, Duration::from_secs(30)).await);

    let leader = placement_leader(&cluster, 3).await;
    let to = (leader + 1) % 3;
    println!("-- ctl placement transfer-leader --to {} (from member {})", to + 1, leader + 1);
    let moved = ctl(&at, &["-o", "json", "placement", "transfer-leader", "--to", &(to + 1).to_string()]).await;
    assert!(moved.success, "{}{}", moved.stdout, moved.stderr);
    assert_eq!(moved.json()["leader_id"], to as u64 + 1, "{}", moved.stdout);
    assert_eq!(moved.json()["leader_addr"], cluster.placement_member(to), "{}", moved.stdout);
    assert_eq!(placement_leader(&cluster, 3).await, to);

    let (first, took) = fail_over(&mut cluster, &mut ids).await;
    assert!(took < Duration::from_secs(8), "region list answered {took:?} after the leader's kill");
    split_by_hand(&cluster, &mut ids).await;
    println!("-- a fourth node registers with the new leader");
    let fourth = cluster.add_node();
    let fourth_store = cluster.store_id(fourth).await;
    println!("   store {fourth_store} registered");
    println!("-- kill -9 of node 2: the new leader repairs its regions (--max-store-down-time 3s)");
    let dead_store = cluster.store_id(1).await;
    cluster.kill9(1);
    let killed = Instant::now();
    let repaired = cluster
        .regions_when(Duration::from_secs(40), "every region repaired off the dead store", move |regions| {
            regions.iter().all(|r| {
                !holds(r, dead_store)
                    && r["peers"].as_array().unwrap().len() == 3
                    && r["pending_peers"].as_array().unwrap().is_empty()
                    && r["leader_store_id"].as_u64().unwrap_or(0) != 0
            })
        })
        .await;
    println!("   {} regions repaired {:?} after the kill", repaired.len(), killed.elapsed());
    ids.see(&repaired);

    println!("-- placement member {} back; the second failover", first + 1);
    cluster.restart_placement_member(first);
    let (second, took) = fail_over(&mut cluster, &mut ids).await;
    assert!(took < Duration::from_secs(8), "region list answered {took:?} after the second leader's kill");
    split_by_hand(&cluster, &mut ids).await;
    writers.wait_more(20).await;

    let third = (0..3).find(|j| ![first, second].contains(j)).unwrap();
    let lone = first;
    println!("-- placement member {} down too: only member {} is left", third + 1, lone + 1);
    cluster.kill9_placement_member(third);
    let refused = ctl(&at, &["region", "list"]).await;
    println!("$ fekv ctl region list  # {:?}\n{}", refused.took, refused.stderr);
    assert!(!refused.success);
    assert!(
        refused.stderr.contains("cannot reach the placement service")
            && refused.stderr.contains("placement has no leader"),
        "{}",
        refused.stderr
    );
    let split = ctl(&at, &["region", "split", &repaired[0]["region_id"].to_string()]).await;
    assert!(!split.success && split.stderr.contains("placement has no leader"), "{}", split.stderr);
    println!("   the nodes keep serving the regions they hold");
    writers.wait_more(30).await;

    println!("-- members {} and {} back: it carries on", second + 1, third + 1);
    cluster.restart_placement_member(second);
    cluster.restart_placement_member(third);
    placement_leader(&cluster, 3).await;
    split_by_hand(&cluster, &mut ids).await;
    ids.see(&cluster.wait_replicated(3, Duration::from_secs(30)).await);
    writers.wait_more(20).await;
    let acked = writers.finish().await;
    read_back(&cluster, &acked).await;
    println!(
        "{} acknowledged writes, {} region ids and {} peer ids seen, all unique; {:?} in all",
        acked.len(),
        ids.regions.len(),
        ids.peers.len(),
        started.elapsed()
    );
}
