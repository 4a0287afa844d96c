//! A cluster of real processes on 127.0.0.1: a placement service and N `fekv` nodes registered with
//! it, each on ephemeral ports with its data under one temporary directory. Nodes are killed with
//! `kill -9` and restarted on their data; the waits ask placement (`fekv ctl region list`) or the
//! nodes (`/status`). [`ProcessCluster::targets`] follows the live nodes, for a [`Writers`] load.
//!
//! [`Writers`]: super::writers::Writers

use std::path::{Path, PathBuf};
use std::time::Duration;

use hyper::{Method, StatusCode};
use serde_json::Value;

use super::process::{ctl_json, wait_regions, wait_replicated, FekvProcess};
use super::try_request;
use super::wait::eventually;
use super::writers::Targets;

pub struct ProcessCluster {
    dir: tempfile::TempDir,
    /// The placement replicas: one, unless started by [`Self::start_group`]; `None` while killed.
    placements: Vec<Option<FekvProcess>>,
    /// Each replica's address (a group's are fixed: the members know each other by them).
    members: Vec<String>,
    /// How a group's member is started again: replicas per region, and the extra flags.
    placement_restart: (usize, Vec<String>),
    /// What nodes and ctl are given: every replica, comma-separated.
    placement_addr: String,
    nodes: Vec<Option<FekvProcess>>,
    node_flags: Vec<String>,
    targets: Targets,
}

impl ProcessCluster {
    /// Placement with `replicas` per region and `placement_flags`, then `nodes` nodes started with
    /// `node_flags`. Returns at once: the first region starts on the first node alone and the
    /// replica checker grows it ([`Self::wait_replicated`] waits for that).
    pub fn start(nodes: usize, replicas: usize, placement_flags: &[&str], node_flags: &[&str]) -> ProcessCluster {
        let dir = tempfile::tempdir().unwrap();
        let placement = FekvProcess::start_placement_with(&dir.path().join("placement"), replicas, placement_flags);
        let mut cluster = ProcessCluster {
            dir,
            placement_addr: placement.addr.clone(),
            members: vec![placement.addr.clone()],
            placements: vec![Some(placement)],
            placement_restart: (replicas, placement_flags.iter().map(|s| s.to_string()).collect()),
            nodes: Vec::new(),
            node_flags: node_flags.iter().map(|s| s.to_string()).collect(),
            targets: Default::default(),
        };
        for _ in 0..nodes {
            cluster.add_node();
        }
        cluster
    }

    /// Like [`Self::start`], with a placement group of `members` replicas (`fekv placement --peers`)
    /// on ports picked now; nodes and ctl get the list of all of them.
    pub fn start_group(
        members: usize,
        nodes: usize,
        replicas: usize,
        placement_flags: &[&str],
        node_flags: &[&str],
    ) -> ProcessCluster {
        let dir = tempfile::tempdir().unwrap();
        // Members restart on their addresses: below the ephemeral range (see fixed_addrs).
        let addrs = super::process::fixed_addrs(members);
        let mut cluster = ProcessCluster {
            dir,
            placement_addr: addrs.join(","),
            placements: addrs.iter().map(|_| None).collect(),
            members: addrs,
            placement_restart: (replicas, placement_flags.iter().map(|s| s.to_string()).collect()),
            nodes: Vec::new(),
            node_flags: node_flags.iter().map(|s| s.to_string()).collect(),
            targets: Default::default(),
        };
        for j in 0..members {
            cluster.restart_placement_member(j);
        }
        for _ in 0..nodes {
            cluster.add_node();
        }
        cluster
    }

    /// The address of placement replica `j`.
    pub fn placement_member(&self, j: usize) -> &str {
        &self.members[j]
    }

    /// `kill -9` of placement replica `j` (if it runs).
    pub fn kill9_placement_member(&mut self, j: usize) {
        if let Some(member) = self.placements[j].take() {
            member.kill9();
        }
    }

    /// Starts placement replica `j` of a group again on its data (it must be down).
    pub fn restart_placement_member(&mut self, j: usize) {
        assert!(self.placements[j].is_none(), "placement member {j} is running");
        let (replicas, flags) = &self.placement_restart;
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        let dir = self.dir.path().join(format!("placement-{}", j + 1));
        let peers = self.members.join(",");
        let member = FekvProcess::start_placement_member(&dir, &self.members[j], &peers, *replicas, &flags);
        self.placements[j] = Some(member);
    }

    /// Three nodes, three replicas, default flags; waits until the first region has its three.
    pub async fn three() -> ProcessCluster {
        let cluster = ProcessCluster::start(3, 3, &[], &[]);
        cluster.wait_replicated(3, Duration::from_secs(30)).await;
        cluster
    }

    /// The placement service's gRPC address, or a group's comma-separated list (what `fekv ctl
    /// --placement` takes).
    pub fn placement(&self) -> &str {
        &self.placement_addr
    }

    /// `kill -9` of the placement service (every replica).
    pub fn kill_placement(&mut self) {
        for j in 0..self.placements.len() {
            self.kill9_placement_member(j);
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn node_dir(&self, i: usize) -> PathBuf {
        self.dir.path().join(format!("node-{i}"))
    }

    /// Starts one more node (with the cluster's node flags); returns its index.
    pub fn add_node(&mut self) -> usize {
        self.nodes.push(None);
        let i = self.nodes.len() - 1;
        self.restart(i);
        i
    }

    /// Starts node `i` again on its data (it must be down).
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].is_none(), "node {i} is running");
        let flags: Vec<&str> = self.node_flags.iter().map(String::as_str).collect();
        let node = FekvProcess::start_node_with(&self.node_dir(i), &self.placement_addr, &flags);
        self.targets.lock().push(node.base.clone());
        self.nodes[i] = Some(node);
    }

    /// `kill -9` of node `i` (if it runs); it leaves the targets.
    pub fn kill9(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            self.targets.lock().retain(|b| *b != node.base);
            node.kill9();
        }
    }

    /// Node `i`, which must be running.
    pub fn node(&self, i: usize) -> &FekvProcess {
        self.nodes[i].as_ref().unwrap_or_else(|| panic!("node {i} is down"))
    }

    /// How many nodes were started (running or not).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// The running nodes.
    pub fn running(&self) -> Vec<&FekvProcess> {
        self.nodes.iter().flatten().collect()
    }

    /// The running nodes' base URLs.
    pub fn bases(&self) -> Vec<String> {
        self.running().iter().map(|n| n.base.clone()).collect()
    }

    /// The running nodes' base URLs, kept up to date as nodes are killed and restarted.
    pub fn targets(&self) -> Targets {
        self.targets.clone()
    }

    /// Node `i`'s store id, from its `/status`.
    pub async fn store_id(&self, i: usize) -> u64 {
        let status = try_request(Method::GET, &self.node(i).url("/status"), "", &[]).await.unwrap().json();
        status["store_id"].as_u64().expect("/status has a store_id")
    }

    /// The index of the running node whose peer leads a region, waiting for one (at most 20 s).
    pub async fn wait_leader(&self) -> usize {
        eventually(Duration::from_secs(20), "a node leading a region", || async {
            let mut seen = Vec::new();
            for (i, node) in self.nodes.iter().enumerate() {
                let Some(node) = node else { continue };
                match try_request(Method::GET, &node.url("/status"), "", &[]).await {
                    Ok(reply) if reply.status == StatusCode::OK => {
                        let status = reply.json();
                        if status["regions"].as_array().is_some_and(|r| r.iter().any(|r| r["role"] == "leader")) {
                            return Ok(i);
                        }
                        seen.push(format!("node {i}: {status}"));
                    }
                    Ok(reply) => seen.push(format!("node {i}: {}", reply.status)),
                    Err(err) => seen.push(format!("node {i}: {err}")),
                }
            }
            Err(seen.join("; "))
        })
        .await
    }

    /// Waits (at most `within`) until every region has `replicas` caught-up peers and a leader, as
    /// placement sees it; returns the regions.
    pub async fn wait_replicated(&self, replicas: usize, within: Duration) -> Vec<Value> {
        let placement = self.placement_addr.clone();
        tokio::task::spawn_blocking(move || wait_replicated(&placement, replicas, within)).await.unwrap()
    }

    /// The regions as placement lists them, once `done` accepts them (at most `within`).
    pub async fn regions_when(
        &self,
        within: Duration,
        what: &'static str,
        done: impl Fn(&[Value]) -> bool + Send + 'static,
    ) -> Vec<Value> {
        let placement = self.placement_addr.clone();
        tokio::task::spawn_blocking(move || wait_regions(&placement, within, what, done)).await.unwrap()
    }

    /// `fekv ctl -o json <args>` against this cluster's placement, off the async workers; panics if
    /// it fails.
    pub async fn ctl(&self, args: &[&str]) -> Value {
        let placement = self.placement_addr.clone();
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        tokio::task::spawn_blocking(move || {
            let args: Vec<&str> = args.iter().map(String::as_str).collect();
            ctl_json(&placement, &args).unwrap_or_else(|err| panic!("{err}"))
        })
        .await
        .unwrap()
    }
}

/// Waits (at most `within`) until the node at `base` serves `key` from its own replica (a stale
/// read); returns the value.
pub async fn local_copy(base: &str, key: &str, within: Duration) -> String {
    eventually(within, &format!("{base} to hold a copy of {key}"), || async {
        let url = format!("{base}/fekv/{key}?consistency=stale");
        match try_request(Method::GET, &url, "", &[]).await {
            Ok(reply) if reply.status == StatusCode::OK => Ok(reply.text()),
            Ok(reply) => Err(format!("{}: {}", reply.status, reply.text())),
            Err(err) => Err(err),
        }
    })
    .await
}
