//! Placement's view of the regions with change-driven reports (issue 15, item 5), with real
//! processes: nodes report a region only when it changed (and rarely otherwise), so after a split
//! storm placement must still know every region, find every key's, and name the right leaders; and a
//! new leader must reach placement within a heartbeat or two.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::process::FekvProcess;
use common::wait::eventually;
use common::{put_anywhere, try_request};
use fekv::proto::placement_client::PlacementClient;
use fekv::proto::{GetRegionByKeyRequest, GetRegionsRequest, RegionInfo, TransferLeaderRequest};
use hyper::Method;
use tonic::transport::Channel;

/// A region as the nodes' `/status` shows its leader: (store, epoch version, epoch conf_ver).
type Led = (u64, u64, u64);

/// Every region some node says it leads, by id.
async fn led_by_nodes(nodes: &[FekvProcess]) -> HashMap<u64, Led> {
    let mut led = HashMap::new();
    for node in nodes {
        let Ok(reply) = try_request(Method::GET, &node.url("/status"), "", &[]).await else { continue };
        let status = reply.json();
        let store_id = status["store_id"].as_u64().unwrap_or(0);
        for region in status["regions"].as_array().into_iter().flatten().filter(|r| r["role"] == "leader") {
            let epoch = |field: &str| region["epoch"][field].as_u64().unwrap_or(0);
            let region_id = region["region_id"].as_u64().unwrap_or(0);
            led.insert(region_id, (store_id, epoch("version"), epoch("conf_ver")));
        }
    }
    led
}

fn as_led(info: &RegionInfo) -> Option<(u64, Led)> {
    let region = info.region.as_ref()?;
    let epoch = region.epoch.unwrap_or_default();
    Some((region.region_id, (info.leader_store_id, epoch.version, epoch.conf_ver)))
}

async fn placement_view(client: &mut PlacementClient<Channel>) -> HashMap<u64, Led> {
    let regions = client.get_regions(GetRegionsRequest::default()).await.unwrap().into_inner().regions;
    regions.iter().filter_map(as_led).collect()
}

/// Polls until placement's regions, epochs and leaders are exactly what the nodes' leaders say.
async fn wait_views_agree(client: &PlacementClient<Channel>, nodes: &[FekvProcess], within: Duration) {
    eventually(within, "placement's view to be the nodes'", || async {
        let (nodes_say, placement_says) = (led_by_nodes(nodes).await, placement_view(&mut client.clone()).await);
        if nodes_say == placement_says {
            return Ok(());
        }
        let differ: Vec<_> = placement_says
            .iter()
            .filter(|(id, led)| nodes_say.get(id) != Some(led))
            .map(|(id, led)| (id, led, nodes_say.get(id)))
            .collect();
        Err(format!("{} vs {} regions, differing: {differ:?}", placement_says.len(), nodes_say.len()))
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_a_split_storm_placement_knows_every_region_and_hears_of_a_new_leader_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (placement, nodes) = common::process::start_cluster(dir.path(), 3, &["--region-max-size", "1KiB"]);
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    // About 16 KiB of keys: a storm of splits of 1 KiB regions, while the replica checker grows them.
    let keys: Vec<String> = (0..400).map(|i| format!("user{:05}", (i * 7919) % 100_000)).collect();
    for (i, key) in keys.iter().enumerate() {
        let via = &bases[i % 3..=i % 3];
        put_anywhere(via, key, &format!("value-of-{key}"), Duration::from_secs(20)).await.unwrap();
    }
    let at = placement.addr.clone();
    // Split checks run on a tick, after the writes: wait for the storm to have happened (CI once saw
    // 5 regions when only full replication was awaited), not for the first quiet moment.
    let split_and_replicated = |regions: &[serde_json::Value]| {
        regions.len() >= 8
            && regions.iter().all(|r| {
                r["peers"].as_array().is_some_and(|p| p.len() == 3)
                    && r["pending_peers"].as_array().is_some_and(|p| p.is_empty())
                    && r["leader_store_id"].as_u64().unwrap_or(0) != 0
            })
    };
    let regions = tokio::task::spawn_blocking(move || {
        let what = "at least 8 regions, each at 3 caught-up replicas with a leader";
        common::process::wait_regions(&at, Duration::from_secs(60), what, split_and_replicated);
        for scheduler in ["balance-region", "balance-leader"] {
            common::process::ctl_json(&at, &["scheduler", "disable", scheduler]).unwrap();
        }
        common::process::wait_regions(&at, Duration::from_secs(30), what, split_and_replicated)
    })
    .await
    .unwrap();
    let mut client = PlacementClient::connect(format!("http://{}", placement.addr)).await.unwrap();

    // Every region, its epoch and its leader, as the nodes' leaders have them.
    // A leader may change between the nodes' listing and placement's answer (elections on a loaded
    // machine): the whole comparison is retried until one pass agrees, within a deadline.
    wait_views_agree(&client, &nodes, Duration::from_secs(10)).await;
    let nodes_say = eventually(Duration::from_secs(20), "placement to place every key as the nodes do", || async {
        let nodes_say = led_by_nodes(&nodes).await;
        let mut client = client.clone();
        for key in &keys {
            let request = GetRegionByKeyRequest { key: key.as_bytes().to_vec() };
            let found = client.get_region_by_key(request).await.unwrap().into_inner().region;
            let info = found.unwrap_or_else(|| panic!("placement knows no region holding {key}"));
            let region = info.region.as_ref().unwrap();
            assert!(fekv::raftstore::region_map::region_contains(region, key.as_bytes()), "{key} not in {region:?}");
            let (region_id, led) = as_led(&info).unwrap();
            if nodes_say.get(&region_id) != Some(&led) {
                return Err(format!(
                    "{key}: region {region_id} led by {led:?} as placement has it, {:?} as the nodes",
                    nodes_say.get(&region_id)
                ));
            }
        }
        Ok(nodes_say)
    })
    .await;

    // A new leader: placement hears of it within a couple of heartbeats (500 ms each) of the node.
    let (&region_id, &(from, _, _)) = nodes_say.iter().min_by_key(|(id, _)| **id).unwrap();
    let region = regions.iter().find(|r| r["region_id"] == region_id).unwrap();
    let to = region["peers"].as_array().unwrap().iter().filter_map(|p| p["store_id"].as_u64()).find(|&s| s != from);
    let to = to.unwrap();
    client.transfer_leader(TransferLeaderRequest { region_id, to_store_id: to }).await.unwrap();
    eventually(Duration::from_secs(20), &format!("region {region_id}'s leadership to move to store {to}"), || async {
        let led = led_by_nodes(&nodes).await.get(&region_id).map(|led| led.0);
        if led == Some(to) {
            Ok(())
        } else {
            Err(format!("led by {led:?}"))
        }
    })
    .await;
    let moved = Instant::now();
    let what = format!("placement to name store {to} as region {region_id}'s leader, after the nodes moved it");
    // A couple of heartbeats on a quiet machine (the eprintln below says how long it took); the
    // deadline leaves room for a loaded CI machine.
    eventually(Duration::from_secs(10), &what, || async {
        let known = placement_view(&mut client.clone()).await.get(&region_id).map(|led| led.0);
        if known == Some(to) {
            Ok(())
        } else {
            Err(format!("placement names {known:?}"))
        }
    })
    .await;
    eprintln!("placement heard of the new leader {:?} after the node", moved.elapsed());
    wait_views_agree(&client, &nodes, Duration::from_secs(5)).await;
}
