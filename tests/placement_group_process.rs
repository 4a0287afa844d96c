//! Three placement replicas as real processes (`fekv placement --peers A,B,C`, issue 13): the
//! members agree on a leader, followers refuse leader-only calls with the leader's address, a
//! `kill -9` of the leader is survived within seconds with nothing acknowledged lost and no id
//! handed out twice, a lone member refuses writes with the clear error, and restarted members carry
//! on. With mutual TLS, the members speak raft to each other with the cluster's certificates.

#[path = "common/certs.rs"]
mod certs;
mod common;

use std::collections::BTreeSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{ctl, FekvProcess};
use common::wait::{eventually, eventually_sync};
use fekv::proto::placement_client::PlacementClient;
use fekv::proto::placement_group_client::PlacementGroupClient;
use fekv::proto::{
    AllocIdRequest, GetMembersRequest, GetRegionsRequest, GetStoresRequest, RegisterStoreRequest,
    StoreHeartbeatRequest, TransferPlacementLeaderRequest,
};
use tonic::transport::Channel;

/// Three loopback addresses free right now (bound and let go: the members need each other's
/// addresses before any of them listens).
fn free_addrs() -> Vec<String> {
    // Members restart on their addresses: a port from the ephemeral range could meanwhile be taken
    // by an outgoing connection (CI saw "Address already in use" at a restart).
    common::process::fixed_addrs(3)
}

fn start_member(dir: &Path, addr: &str, peers: &[String], extra: &[&str]) -> FekvProcess {
    let data_dir = dir.display().to_string();
    let peers = peers.join(",");
    let mut args = vec!["placement", "--addr", addr, "--peers", &peers, "--data-dir", &data_dir, "--replicas", "3"];
    args.extend_from_slice(extra);
    let mut member = FekvProcess::launch(&args, dir);
    member.wait_stderr(Duration::from_secs(20), "the placement member to listen", |lines| {
        lines.iter().any(|l| l.contains("placement service serving"))
    });
    member.addr = addr.to_string();
    member
}

fn channel(addr: &str) -> Channel {
    Channel::from_shared(format!("http://{addr}"))
        .expect("an address")
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(3))
        .connect_lazy()
}

/// The leader every answering member names (they must agree), by its index in `addrs`.
async fn agreed_leader(addrs: &[String], alive: &[usize]) -> Result<usize, String> {
    let mut named = BTreeSet::new();
    for &i in alive {
        let reply = PlacementGroupClient::new(channel(&addrs[i])).get_members(GetMembersRequest {}).await;
        let reply = reply.map_err(|s| format!("member {}: {}", i + 1, s.message()))?.into_inner();
        if reply.members.len() != 3 || reply.member_id != i as u64 + 1 {
            return Err(format!("member {} says {reply:?}", i + 1));
        }
        named.insert(reply.leader_id);
    }
    match named.into_iter().collect::<Vec<_>>()[..] {
        [leader] if leader != 0 => Ok(leader as usize - 1),
        ref other => Err(format!("members name leaders {other:?}")),
    }
}

/// Ids from `addr`, once it serves writes.
async fn alloc(addr: &str, count: u32) -> Result<Vec<u64>, tonic::Status> {
    let reply = PlacementClient::new(channel(addr)).alloc_id(AllocIdRequest { count }).await?;
    Ok(reply.into_inner().ids)
}

/// Each id is new.
fn take(seen: &mut BTreeSet<u64>, ids: Vec<u64>) {
    for id in ids {
        assert!(seen.insert(id), "id {id} handed out twice");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_placement_group_survives_its_leader_and_refuses_writes_without_a_quorum() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let addrs = free_addrs();
    let dirs: Vec<_> = (1..=3).map(|i| dir.path().join(format!("placement-{i}"))).collect();
    let mut members: Vec<Option<FekvProcess>> =
        dirs.iter().zip(&addrs).map(|(d, a)| Some(start_member(d, a, &addrs, &[]))).collect();
    let everyone = [0, 1, 2];
    let leader =
        eventually(Duration::from_secs(10), "the members to agree on a leader", || agreed_leader(&addrs, &everyone))
            .await;

    // A follower refuses a leader-only call and names the leader's address.
    let follower = (leader + 1) % 3;
    let refused = PlacementClient::new(channel(&addrs[follower])).get_regions(GetRegionsRequest::default()).await;
    let status = refused.expect_err("a follower does not answer GetRegions");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    let hint = |status: &tonic::Status| {
        status.metadata().get(fekv_placement::LEADER_METADATA).map(|v| v.to_str().unwrap_or("").to_string())
    };
    assert_eq!(hint(&status).as_deref(), Some(addrs[leader].as_str()), "{status:?}");
    // So does a store's heartbeat.
    let beat = StoreHeartbeatRequest { store_id: 1, ..Default::default() };
    let refused = PlacementClient::new(channel(&addrs[follower])).store_heartbeat(beat).await;
    let status = refused.expect_err("a follower does not take heartbeats");
    assert_eq!((status.code(), hint(&status).as_deref()), (tonic::Code::Unavailable, Some(addrs[leader].as_str())));

    let mut seen = BTreeSet::new();
    let ids = eventually(Duration::from_secs(10), "the leader to serve AllocId", || alloc(&addrs[leader], 10)).await;
    take(&mut seen, ids);
    // (after a write: the cluster id is in the records the first leader wrote)
    let view = PlacementGroupClient::new(channel(&addrs[leader])).get_members(GetMembersRequest {}).await;
    let view = view.expect("the leader answers GetMembers").into_inner();
    assert!(view.healthy && view.cluster_id != 0 && view.term > 0, "{view:?}");
    let register = RegisterStoreRequest {
        raft_addr: "127.0.0.1:1".into(),
        http_addr: "127.0.0.1:2".into(),
        version: "test".into(),
        ..Default::default()
    };
    let store = PlacementClient::new(channel(&addrs[leader])).register_store(register.clone()).await;
    let store_id = store.expect("the leader registers a store").into_inner().store_id;
    take(&mut seen, vec![store_id]);

    // kill -9 the leader: another member serves reads and writes within seconds.
    members[leader].take().expect("running").kill9();
    let killed_at = Instant::now();
    let alive: Vec<usize> = everyone.into_iter().filter(|&i| i != leader).collect();
    let second = eventually(Duration::from_secs(10), "a new leader after the kill", || async {
        for &i in &alive {
            let regions = PlacementClient::new(channel(&addrs[i])).get_regions(GetRegionsRequest::default()).await;
            if regions.is_ok() {
                if let Ok(ids) = alloc(&addrs[i], 5).await {
                    return Ok((i, ids));
                }
            }
        }
        Err("no surviving member serves yet")
    })
    .await;
    let failover = killed_at.elapsed();
    eprintln!("failover: kill -9 of the leader to GetRegions + AllocId on member {}: {failover:?}", second.0 + 1);
    assert!(failover < Duration::from_secs(5), "failover took {failover:?}");
    let (second, ids) = second;
    take(&mut seen, ids);
    assert!(*seen.first().unwrap_or(&0) > 0);
    // Nothing acknowledged is lost: the store registered with the old leader is there.
    let stores = PlacementClient::new(channel(&addrs[second])).get_stores(GetStoresRequest {}).await;
    let stores = stores.expect("the new leader lists stores").into_inner().stores;
    assert!(stores.iter().any(|s| s.store_id == store_id), "store {store_id} lost: {stores:?}");
    let again = PlacementClient::new(channel(&addrs[second])).register_store(register.clone()).await;
    take(&mut seen, vec![again.expect("the new leader registers a store").into_inner().store_id]);

    // Two of three down: the last one refuses writes with the clear error.
    members[second].take().expect("running").kill9();
    let last = alive.into_iter().find(|&i| i != second).expect("a third member");
    let status = eventually(Duration::from_secs(10), "the lone member to refuse for want of a quorum", || async {
        match alloc(&addrs[last], 1).await {
            // Members it heard from lately count as reachable for a few election timeouts.
            Err(status) if status.message().contains("placement has no leader: 1 of 3 members reachable") => Ok(status),
            Err(status) => Err(format!("{status:?}")),
            Ok(ids) => {
                // It may still have led for an election timeout: those ids count too.
                Err(format!("it still handed out {ids:?}"))
            }
        }
    })
    .await;
    assert_eq!(status.code(), tonic::Code::Unavailable);
    assert!(status.message().contains("writes are refused until a quorum is back"), "{}", status.message());

    // Restart both: the group carries on, ids above every one handed out before.
    for i in [leader, second] {
        members[i] = Some(start_member(&dirs[i], &addrs[i], &addrs, &[]));
    }
    let leader =
        eventually(Duration::from_secs(10), "a leader after the restarts", || agreed_leader(&addrs, &everyone)).await;
    let ids =
        eventually(Duration::from_secs(10), "the group to serve AllocId again", || alloc(&addrs[leader], 10)).await;
    assert!(ids[0] > *seen.last().unwrap_or(&0), "ids {ids:?} after the restart; handed out before up to {seen:?}");
    take(&mut seen, ids);
    let stores = PlacementClient::new(channel(&addrs[leader])).get_stores(GetStoresRequest {}).await;
    assert_eq!(stores.expect("stores").into_inner().stores.len(), 2);

    // Leadership moves by hand, and the call returns once it moved.
    let to = (leader + 1) % 3;
    let request = TransferPlacementLeaderRequest { to_member_id: to as u64 + 1 };
    let moved = PlacementGroupClient::new(channel(&addrs[leader])).transfer_placement_leader(request).await;
    let moved = moved.expect("the leader transfers leadership").into_inner();
    assert_eq!((moved.leader_id, moved.leader_addr.as_str()), (to as u64 + 1, addrs[to].as_str()));
    let ids = eventually(Duration::from_secs(10), "the new leader to serve", || alloc(&addrs[to], 1)).await;
    take(&mut seen, ids);
}

#[test]
fn a_member_whose_address_is_not_in_the_peers_is_refused_at_start() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let addrs = free_addrs();
    let data_dir = dir.path().display().to_string();
    for (peers, expected) in [
        (format!("{},{}", addrs[1], addrs[2]), "is not in the list"),
        (format!("{},{},{}", addrs[0], addrs[1], addrs[1]), "listed twice"),
    ] {
        let args = ["placement", "--addr", &addrs[0], "--peers", &peers, "--data-dir", &data_dir];
        let mut process = FekvProcess::launch(&args, dir.path());
        let status = process.wait_exit(Duration::from_secs(20));
        assert!(!status.success());
        let lines = process.stderr_lines().join("\n");
        assert!(lines.contains(expected), "{lines}");
    }
    // A single placement's directory cannot become a member: the group would write a new cluster
    // over part of it.
    let single = FekvProcess::start_placement(dir.path(), 3);
    assert!(single.stop_with("TERM").success());
    let peers = addrs.join(",");
    let args = ["placement", "--addr", &addrs[0], "--peers", &peers, "--data-dir", &data_dir];
    let mut process = FekvProcess::launch(&args, dir.path());
    assert!(!process.wait_exit(Duration::from_secs(20)).success());
    let lines = process.stderr_lines().join("\n");
    assert!(lines.contains("holds the state of a single placement"), "{lines}");
}

#[test]
fn a_placement_group_over_mutual_tls_elects_a_leader_that_serves() {
    let pki = certs::TestPki::new();
    let dir = tempfile::tempdir().expect("a temp dir");
    let addrs = free_addrs();
    let path = |p: &std::path::PathBuf| p.display().to_string();
    let (cert, key, ca) = (path(&pki.server_files.cert), path(&pki.server_files.key), path(&pki.ca_file));
    let tls = ["--cert-file", cert.as_str(), "--key-file", key.as_str(), "--trusted-ca-file", ca.as_str()];
    let _members: Vec<FekvProcess> = (0..3)
        .map(|i| start_member(&dir.path().join(format!("placement-{}", i + 1)), &addrs[i], &addrs, &tls))
        .collect();
    let (client_cert, client_key) = (path(&pki.client_files.cert), path(&pki.client_files.key));
    let client = ["--cacert", ca.as_str(), "--cert", client_cert.as_str(), "--key", client_key.as_str()];
    // A leader exists only if the members reached each other over mutual TLS; the followers name
    // it, and ctl given any one member follows that hint to the leader (over TLS too).
    let list: Vec<String> = addrs.iter().map(|addr| format!("https://{addr}")).collect();
    eventually_sync(Duration::from_secs(20), "a leader over mutual TLS", || {
        let run = ctl(&list.join(","), &[&client[..], &["-o", "json", "placement", "list"]].concat());
        let rows: serde_json::Value = serde_json::from_str(&run.stdout).map_err(|e| format!("{e}: {run:?}"))?;
        let rows = rows.as_array().cloned().unwrap_or_default();
        let leaders: Vec<&serde_json::Value> = rows.iter().filter(|r| r["leader"] == true).collect();
        let naming = |r: &&serde_json::Value| r["leader"] == false && r["leader_id"] == leaders[0]["member_id"];
        if run.status.success() && leaders.len() == 1 && rows.iter().filter(naming).count() == 2 {
            Ok(())
        } else {
            Err(format!("{run:?}"))
        }
    });
    for member in &list {
        let run = ctl(member, &[&client[..], &["store", "list"]].concat());
        assert!(run.status.success(), "ctl --placement {member}: {run:?}");
    }
}

/// Every id the region and store listings show (stores, regions and peers share one allocator).
fn listed_ids(list: &str) -> Vec<u64> {
    let regions = common::process::ctl_json(list, &["region", "list"]).expect("region list");
    let stores = common::process::ctl_json(list, &["store", "list"]).expect("store list");
    let mut ids = Vec::new();
    for region in regions.as_array().into_iter().flatten() {
        ids.extend(region["region_id"].as_u64());
        ids.extend(region["peers"].as_array().into_iter().flatten().filter_map(|p| p["peer_id"].as_u64()));
    }
    ids.extend(stores.as_array().into_iter().flatten().filter_map(|s| s["store_id"].as_u64()));
    ids
}

fn assert_distinct(ids: &[u64]) {
    let distinct: BTreeSet<u64> = ids.iter().copied().collect();
    assert_eq!(distinct.len(), ids.len(), "an id is used twice: {ids:?}");
}

/// The member that leads, by its index in `addrs`, as `fekv ctl placement list` shows it.
fn listed_leader(list: &str, addrs: &[String]) -> Result<usize, String> {
    // (it exits non-zero while a member is down, and still lists the others)
    let run = ctl(list, &["-o", "json", "placement", "list"]);
    let rows: serde_json::Value = serde_json::from_str(&run.stdout).map_err(|e| format!("{run:?}: {e}"))?;
    let rows = rows.as_array().cloned().unwrap_or_default();
    let leader = rows.iter().find(|row| row["leader"] == true).ok_or_else(|| format!("no leader in {rows:?}"))?;
    let addr = leader["addr"].as_str().unwrap_or_default();
    addrs.iter().position(|a| a == addr).ok_or_else(|| format!("leader {addr} is not a member"))
}

/// Issue 13 end to end: nodes given the three members (`--placement A,B,C`) carry on through a kill -9
/// of the placement leader: within seconds the new leader lists the regions, splits one by hand and
/// registers a new node; ids stay unique; with two of three members down the data is still served;
/// restarted, the group carries on.
#[test]
fn nodes_carry_on_through_a_placement_failover() {
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    let dir = tempfile::tempdir().expect("a temp dir");
    let addrs = free_addrs();
    let list = addrs.join(",");
    let dirs: Vec<_> = (1..=3).map(|i| dir.path().join(format!("placement-{i}"))).collect();
    let mut members: Vec<Option<FekvProcess>> =
        dirs.iter().zip(&addrs).map(|(d, a)| Some(start_member(d, a, &addrs, &[]))).collect();
    let mut nodes: Vec<FekvProcess> =
        (1..=3).map(|i| FekvProcess::start_node(&dir.path().join(format!("node-{i}")), &list)).collect();
    common::process::wait_replicated(&list, 3, Duration::from_secs(60));
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    for i in 0..20 {
        let key = format!("k{i:02}");
        runtime.block_on(common::put_anywhere(&bases, &key, "v", Duration::from_secs(10))).expect("a put");
    }
    assert_distinct(&listed_ids(&list));

    let leader = eventually_sync(Duration::from_secs(10), "the placement leader", || listed_leader(&list, &addrs));
    members[leader].take().expect("running").kill9();
    let killed_at = Instant::now();
    // Within seconds a new leader serves the region list (ctl finds it among the members)...
    let region = eventually_sync(Duration::from_secs(10), "a new placement leader to find a key's region", || {
        common::process::ctl_json(&list, &["region", "find", "k10"])
    });
    eprintln!("failover with nodes: kill -9 of the placement leader to `region find`: {:?}", killed_at.elapsed());
    let second = listed_leader(&list, &addrs).expect("a new leader");
    assert_ne!(second, leader);
    // ... splits a region by hand ...
    let region_id = region["region_id"].as_u64().expect("a region id").to_string();
    let split = ctl(&list, &["region", "split", &region_id, "--key", "k10", "--wait"]);
    assert!(split.success, "{split:?}");
    // ... and registers a new node.
    nodes.push(FekvProcess::start_node(&dir.path().join("node-4"), &list));
    eventually_sync(Duration::from_secs(20), "the fourth store to register", || {
        let stores = common::process::ctl_json(&list, &["store", "list"])?;
        let count = stores.as_array().map_or(0, |s| s.len());
        if count == 4 {
            Ok(())
        } else {
            Err(format!("{count} stores: {stores}"))
        }
    });
    assert_distinct(&listed_ids(&list));

    // Two of three members down: placement refuses, the nodes still serve their data.
    members[second].take().expect("running").kill9();
    let bases: Vec<String> = nodes.iter().map(|n| n.base.clone()).collect();
    runtime.block_on(common::put_anywhere(&bases, "during", "no quorum", Duration::from_secs(10))).expect("a put");
    let refused = ctl(&list, &["region", "list"]);
    assert!(!refused.success, "{refused:?}");

    // Restarted, the group carries on: another split by hand, ids still unique.
    for i in [leader, second] {
        members[i] = Some(start_member(&dirs[i], &addrs[i], &addrs, &[]));
    }
    let region = eventually_sync(Duration::from_secs(20), "placement to serve again", || {
        common::process::ctl_json(&list, &["region", "find", "k15"])
    });
    let region_id = region["region_id"].as_u64().expect("a region id").to_string();
    // Its own bound, below the runner's 20 s: a slow split fails with what ctl saw of the operator.
    let split = ctl(&list, &["region", "split", &region_id, "--key", "k15", "--wait", "--wait-timeout", "15s"]);
    assert!(split.success, "{split:?}");
    assert_distinct(&listed_ids(&list));
}
