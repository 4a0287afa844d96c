//! `fekv cluster`: a placement service and N nodes on loopback, as child processes of this one, for
//! trying replication on one machine. Prints where each node listens; Ctrl-C stops them all.

use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, clap::Args)]
pub struct ClusterArgs {
    /// Nodes to start
    #[arg(long, default_value_t = 3)]
    pub nodes: u16,
    /// HTTP port of the first node; node i listens on this + i - 1
    #[arg(long, default_value_t = 3000)]
    pub http_port: u16,
    /// Raft port of the first node; node i listens on this + i - 1
    #[arg(long, default_value_t = 20160)]
    pub raft_port: u16,
    /// Port of the placement service
    #[arg(long, default_value_t = 2379)]
    pub placement_port: u16,
    /// Directory for every node's data (node-1, node-2, ...), placement's, and their logs
    #[arg(long, default_value = "./fekv-cluster")]
    pub data_dir: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--nodes must be between 1 and 64")]
    Nodes,
    #[error("cannot start {what}: {source}")]
    Spawn { what: String, source: std::io::Error },
    #[error("{what} did not become healthy within 30s (see {log})")]
    NotHealthy { what: String, log: String },
    #[error("the regions did not reach {replicas} replicas within 30s (see the logs in {dir})")]
    NotReplicated { replicas: u16, dir: String },
}

struct Process {
    name: String,
    child: Child,
}

impl Drop for Process {
    fn drop(&mut self) {
        // SIGTERM first: nodes stop cleanly after their current round.
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        tracing::warn!(name = %self.name, "did not stop on SIGTERM; killing");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn(name: &str, args: &[String], log: &PathBuf) -> Result<Process, ClusterError> {
    let exe = std::env::current_exe().map_err(|source| ClusterError::Spawn { what: name.into(), source })?;
    let log_file = File::create(log).map_err(|source| ClusterError::Spawn { what: name.into(), source })?;
    let child = Command::new(exe)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .map_err(|source| ClusterError::Spawn { what: name.into(), source })?;
    Ok(Process { name: name.into(), child })
}

/// Polls `url` until it answers 200 (at most 30 s).
async fn wait_healthy(url: &str) -> Option<String> {
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http::<http_body_util::Empty<bytes::Bytes>>();
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(uri) = url.parse::<hyper::Uri>() {
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), client.get(uri)).await {
                if response.status().is_success() {
                    use http_body_util::BodyExt;
                    let body = response.into_body().collect().await.ok()?.to_bytes();
                    return Some(String::from_utf8_lossy(&body).into_owned());
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

/// Polls placement until every region has `replicas` peers, none still catching up, and a leader (at
/// most 30 s).
async fn wait_replicated(placement_addr: &str, replicas: u16) -> bool {
    let Ok(mut client) = crate::cluster_link::client(placement_addr) else { return false };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok(reply) = client.get_regions(crate::proto::GetRegionsRequest {}).await {
            let regions = reply.into_inner().regions;
            let replicated = |info: &crate::proto::RegionInfo| {
                info.region.as_ref().is_some_and(|r| r.peers.len() == replicas as usize)
                    && info.pending_peers.is_empty()
                    && info.leader_store_id != 0
            };
            if !regions.is_empty() && regions.iter().all(replicated) {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    false
}

pub async fn run(args: ClusterArgs, shutdown: impl std::future::Future<Output = ()>) -> Result<(), ClusterError> {
    if args.nodes == 0 || args.nodes > 64 {
        return Err(ClusterError::Nodes);
    }
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|source| ClusterError::Spawn { what: "data dir".into(), source })?;
    let dir = |name: &str| args.data_dir.join(name);
    let placement_addr = format!("127.0.0.1:{}", args.placement_port);
    let replicas = args.nodes.min(3);
    let mut processes = vec![spawn(
        "placement",
        &[
            "placement".into(),
            "--addr".into(),
            placement_addr.clone(),
            "--data-dir".into(),
            dir("placement").display().to_string(),
            "--replicas".into(),
            replicas.to_string(),
        ],
        &dir("placement.log"),
    )?];
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        let name = format!("node-{}", i + 1);
        let http_addr = format!("127.0.0.1:{}", args.http_port + i);
        let raft_addr = format!("127.0.0.1:{}", args.raft_port + i);
        let process = spawn(
            &name,
            &[
                "serve".into(),
                "--placement".into(),
                placement_addr.clone(),
                "--http-addr".into(),
                http_addr.clone(),
                "--raft-addr".into(),
                raft_addr.clone(),
                "--data-dir".into(),
                dir(&name).display().to_string(),
            ],
            &dir(&format!("{name}.log")),
        )?;
        nodes.push((name, http_addr, raft_addr, process.child.id()));
        processes.push(process);
    }
    println!("placement  pid {:<7} {placement_addr}  log {}", processes[0].child.id(), dir("placement.log").display());
    println!("{:<7} {:>5} {:>7}  {:<16} {:<16} log", "node", "store", "pid", "http", "raft");
    for (name, http_addr, raft_addr, pid) in &nodes {
        let status = wait_healthy(&format!("http://{http_addr}/status")).await.ok_or_else(|| {
            ClusterError::NotHealthy { what: name.clone(), log: dir(&format!("{name}.log")).display().to_string() }
        })?;
        let store_id =
            serde_json::from_str::<serde_json::Value>(&status).ok().and_then(|s| s["store_id"].as_u64()).unwrap_or(0);
        println!(
            "{name:<7} {store_id:>5} {pid:>7}  {http_addr:<16} {raft_addr:<16} {}",
            dir(&format!("{name}.log")).display()
        );
    }
    // The first region starts with one peer on the first store to register; the replica checker adds
    // the others within seconds. "Up" means replicated.
    if !wait_replicated(&placement_addr, replicas).await {
        return Err(ClusterError::NotReplicated { replicas, dir: args.data_dir.display().to_string() });
    }
    println!(
        "cluster is up; try: curl -L -X PUT http://127.0.0.1:{}/fekv/hello -d world   (Ctrl-C stops it)",
        args.http_port
    );
    shutdown.await;
    println!("stopping the cluster");
    drop(processes);
    Ok(())
}
