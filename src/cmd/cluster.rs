//! `fekv cluster`: a placement service and N nodes on loopback, as child processes of this one, for
//! trying replication on one machine. Prints where each node listens; Ctrl-C stops them all.
//!
//! It supervises its children as a Procfile runner or `tiup playground` would: a child that exits is
//! reported on stderr with the last lines of its log, and started again (same flags, same data
//! directory, its log appended to) after a backoff that doubles from 1 s up to 10 s. A child that has
//! exited more than `--max-restarts` times stops the whole cluster with an error. Before starting
//! anything, every port is checked: one already taken fails at once, naming the port and its user.
//! With `--tls-dir`, every listener and connection is TLS, with certificates made for the occasion
//! (`cluster_tls`).

use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use super::cluster_tls::{ClusterTls, HealthClient};

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
    /// Port of the placement service; replica j of --placement-replicas listens on this + j - 1
    #[arg(long, default_value_t = 2379)]
    pub placement_port: u16,
    /// Placement replicas to start (1, 3 or 5): more than one agree through raft, and the nodes get
    /// the list of them
    #[arg(long, default_value_t = 1, value_parser = placement_replicas)]
    pub placement_replicas: u16,
    /// Directory for every node's data (node-1, node-2, ...), placement's, and their logs
    #[arg(long, default_value = "./fekv-cluster")]
    pub data_dir: PathBuf,
    /// Times one process is restarted after it exits; once more, the whole cluster stops (0: stop
    /// at the first exit)
    #[arg(long, default_value_t = 5)]
    pub max_restarts: u32,
    /// TLS everywhere: make a CA and certificates for placement, every node and the tools into DIR
    /// (reused if complete), and print the curl and ctl flags to use
    #[arg(long, value_name = "DIR")]
    pub tls_dir: Option<PathBuf>,
}

#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("--nodes must be between 1 and 64")]
    Nodes,
    #[error("the ports of {nodes} nodes from {first} go past 65535")]
    PortRange { nodes: u16, first: u16 },
    #[error(
        "port {port} ({what}) is not free: {source}; pick other ports (--http-port, --raft-port, --placement-port)"
    )]
    PortTaken { port: u16, what: String, source: std::io::Error },
    #[error("cannot start {what}: {source}")]
    Spawn { what: String, source: std::io::Error },
    #[error("{what} exited ({status}) before it was up; the end of {log}:\n{tail}")]
    ExitedEarly { what: String, status: String, log: String, tail: String },
    #[error("{what} did not become healthy within 30s (see {log})")]
    NotHealthy { what: String, log: String },
    #[error("the regions did not reach {replicas} replicas within 30s (see the logs in {dir})")]
    NotReplicated { replicas: u16, dir: String },
    #[error(transparent)]
    Tls(#[from] super::cluster_tls::ClusterTlsError),
    #[error("{what} exited {exits} times (--max-restarts {max_restarts}); stopped the cluster (see {log})")]
    TooManyRestarts { what: String, exits: u32, max_restarts: u32, log: String },
}

/// Lines of a child's log shown when it exits.
const LOG_TAIL_LINES: usize = 10;
const FIRST_BACKOFF: Duration = Duration::from_secs(1);
const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How often the children are checked.
const SUPERVISE_EVERY: Duration = Duration::from_millis(200);

/// One supervised child: how to start it again, and its state.
struct Process {
    name: String,
    args: Vec<String>,
    log: PathBuf,
    child: Option<Child>,
    exits: u32,
    /// When a child that exited is to be started again.
    restart_at: Option<Instant>,
}

impl Process {
    /// Starts `fekv args...` with stderr into `log` (truncated at first start).
    fn start(name: &str, args: Vec<String>, log: PathBuf) -> Result<Process, ClusterError> {
        let mut process = Process { name: name.into(), args, log, child: None, exits: 0, restart_at: None };
        process.spawn(false)?;
        Ok(process)
    }

    fn spawn(&mut self, append: bool) -> Result<(), ClusterError> {
        let spawn_error = |source| ClusterError::Spawn { what: self.name.clone(), source };
        let exe = std::env::current_exe().map_err(spawn_error)?;
        let log_file = match append {
            true => OpenOptions::new().create(true).append(true).open(&self.log),
            false => File::create(&self.log),
        }
        .map_err(spawn_error)?;
        let child = Command::new(exe)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .map_err(spawn_error)?;
        self.child = Some(child);
        Ok(())
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// The child's exit status, if it has exited (it is then reaped and forgotten).
    fn exited(&mut self) -> Option<ExitStatus> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status)
    }

    /// The child's exit, as an error, if it exited while the cluster was starting.
    fn check_alive(&mut self) -> Result<(), ClusterError> {
        match self.exited() {
            None => Ok(()),
            Some(status) => Err(ClusterError::ExitedEarly {
                what: self.name.clone(),
                status: status.to_string(),
                log: self.log.display().to_string(),
                tail: log_tail(&self.log),
            }),
        }
    }

    /// One look at a running cluster's child: reports an exit and schedules the restart, restarts
    /// when it is due, or gives up once the child has exited too often.
    fn supervise(&mut self, max_restarts: u32) -> Result<(), ClusterError> {
        if let Some(at) = self.restart_at {
            if Instant::now() >= at {
                self.restart_at = None;
                self.spawn(true)?;
                eprintln!("{} restarted, pid {}", self.name, self.pid());
            }
            return Ok(());
        }
        let Some(status) = self.exited() else { return Ok(()) };
        self.exits += 1;
        eprintln!("{} exited ({status}); the end of {}:", self.name, self.log.display());
        for line in log_tail(&self.log).lines() {
            eprintln!("  {line}");
        }
        if self.exits > max_restarts {
            return Err(ClusterError::TooManyRestarts {
                what: self.name.clone(),
                exits: self.exits,
                max_restarts,
                log: self.log.display().to_string(),
            });
        }
        let backoff = FIRST_BACKOFF.saturating_mul(1 << (self.exits - 1).min(4)).min(MAX_BACKOFF);
        eprintln!("restarting {} in {backoff:?} (restart {} of at most {max_restarts})", self.name, self.exits);
        self.restart_at = Some(Instant::now() + backoff);
        Ok(())
    }
}

/// Stops every child: SIGTERM to all at once (nodes stop cleanly after their current round), then
/// SIGKILL to any still running after 10 s.
fn stop_all(processes: &mut [Process]) {
    for child in processes.iter().filter_map(|p| p.child.as_ref()) {
        // SAFETY: kill(2) on our own child's pid, which is not reaped yet.
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline && processes.iter_mut().any(|p| p.child.is_some() && p.exited().is_none()) {
        std::thread::sleep(Duration::from_millis(20));
    }
    for process in processes.iter_mut() {
        if let Some(mut child) = process.child.take() {
            tracing::warn!(name = %process.name, "did not stop on SIGTERM; killing");
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    /// A child still running when its handle goes (an early error return) is killed, never left behind.
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The last [`LOG_TAIL_LINES`] lines of a log file.
fn log_tail(path: &Path) -> String {
    let Ok(file) = File::open(path) else { return format!("({} cannot be read)", path.display()) };
    let lines: Vec<String> = BufReader::new(file).lines().map_while(Result::ok).collect();
    lines[lines.len().saturating_sub(LOG_TAIL_LINES)..].join("\n")
}

/// Fails, naming the port, if any of `ports` cannot be bound on loopback now.
fn check_ports(ports: &[(u16, String)]) -> Result<(), ClusterError> {
    for (port, what) in ports {
        std::net::TcpListener::bind(("127.0.0.1", *port)).map(drop).map_err(|source| ClusterError::PortTaken {
            port: *port,
            what: what.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Polls `url` until it answers 200 (at most 30 s); fails at once if the process exits.
async fn wait_healthy(client: &HealthClient, url: &str, process: &mut Process) -> Result<Option<String>, ClusterError> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        process.check_alive()?;
        if let Ok(uri) = url.parse::<hyper::Uri>() {
            if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), client.get(uri)).await {
                if response.status().is_success() {
                    use http_body_util::BodyExt;
                    let Ok(body) = response.into_body().collect().await else { continue };
                    return Ok(Some(String::from_utf8_lossy(&body.to_bytes()).into_owned()));
                }
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Ok(None)
}

/// `--placement-replicas`: an odd group a majority of which survives one (or two) losses.
fn placement_replicas(value: &str) -> Result<u16, String> {
    match value.parse::<u16>() {
        Ok(count @ (1 | 3 | 5)) => Ok(count),
        _ => Err(format!("{value}: 1, 3 or 5")),
    }
}

/// The name (and data directory, log file) of placement replica `j` of `count`.
fn placement_name(count: u16, j: u16) -> String {
    if count == 1 {
        "placement".to_string()
    } else {
        format!("placement-{}", j + 1)
    }
}

/// Polls placement until every region has `replicas` peers, none still catching up, and a leader (at
/// most 30 s); fails at once if a process exits.
async fn wait_replicated(
    placement_addr: &str,
    tls: Option<&ClusterTls>,
    replicas: u16,
    processes: &mut [Process],
) -> Result<bool, ClusterError> {
    let Ok(link) = crate::cluster_link::link(placement_addr, tls.map(ClusterTls::grpc)) else { return Ok(false) };
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        for process in processes.iter_mut() {
            process.check_alive()?;
        }
        let listed = link.call(crate::cluster_link::Retry::Idempotent, |channel| async move {
            let request = crate::proto::GetRegionsRequest::default();
            crate::proto::placement_client::PlacementClient::new(channel).get_regions(request).await
        });
        if let Ok(reply) = listed.await {
            let regions = reply.regions;
            let replicated = |info: &crate::proto::RegionInfo| {
                info.region.as_ref().is_some_and(|r| r.peers.len() == replicas as usize)
                    && info.pending_peers.is_empty()
                    && info.leader_store_id != 0
            };
            if !regions.is_empty() && regions.iter().all(replicated) {
                return Ok(true);
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(false)
}

pub async fn run(args: ClusterArgs, shutdown: impl std::future::Future<Output = ()>) -> Result<(), ClusterError> {
    if args.nodes == 0 || args.nodes > 64 {
        return Err(ClusterError::Nodes);
    }
    // Every process started is in here, so a stop at any moment (even while starting) stops them all.
    let mut processes = Vec::new();
    // Biased, shutdown first: its first poll installs the signal handlers, before any child starts
    // (a SIGTERM in between would kill this process with default action and orphan the children).
    let result = tokio::select! {
        biased;
        _ = shutdown => Ok(()),
        failed = start_and_supervise(&args, &mut processes) => failed,
    };
    if !processes.is_empty() {
        println!("stopping the cluster");
    }
    stop_all(&mut processes);
    result
}

/// Starts placement and the nodes, waits until the cluster is up, then supervises it; returns only
/// on an error.
async fn start_and_supervise(args: &ClusterArgs, processes: &mut Vec<Process>) -> Result<(), ClusterError> {
    let port = |first: u16, i: u16| first.checked_add(i).ok_or(ClusterError::PortRange { nodes: args.nodes, first });
    let mut ports = Vec::new();
    for j in 0..args.placement_replicas {
        ports.push((port(args.placement_port, j)?, placement_name(args.placement_replicas, j)));
    }
    for i in 0..args.nodes {
        ports.push((port(args.http_port, i)?, format!("node-{}'s HTTP", i + 1)));
        ports.push((port(args.raft_port, i)?, format!("node-{}'s raft", i + 1)));
    }
    check_ports(&ports)?;
    std::fs::create_dir_all(&args.data_dir)
        .map_err(|source| ClusterError::Spawn { what: "data dir".into(), source })?;
    let dir = |name: &str| args.data_dir.join(name);
    let replicas = args.nodes.min(3);
    let tls = args.tls_dir.as_deref().map(|dir| ClusterTls::prepare(dir, args.nodes)).transpose()?;
    let placement_addrs: Vec<String> = (0..args.placement_replicas)
        .map(|j| port(args.placement_port, j).map(|p| format!("127.0.0.1:{p}")))
        .collect::<Result<_, _>>()?;
    // What the nodes (and ctl) are given: every replica.
    let placement_addr = placement_addrs.join(",");
    for (j, addr) in (0..).zip(&placement_addrs) {
        let name = placement_name(args.placement_replicas, j);
        let placement_dir = dir(&name).display().to_string();
        let mut placement_args: Vec<String> = ["placement", "--addr", addr, "--data-dir", &placement_dir, "--replicas"]
            .iter()
            .map(|s| s.to_string())
            .chain([replicas.to_string()])
            .chain(tls.iter().flat_map(ClusterTls::placement_flags))
            .collect();
        // One replica runs as a placement of its own (no --peers), as before replication existed.
        if args.placement_replicas > 1 {
            placement_args.extend(["--peers".to_string(), placement_addr.clone()]);
        }
        processes.push(Process::start(&name, placement_args, dir(&format!("{name}.log")))?);
    }
    let mut nodes = Vec::new();
    for i in 0..args.nodes {
        let name = format!("node-{}", i + 1);
        let http_addr = format!("127.0.0.1:{}", port(args.http_port, i)?);
        let raft_addr = format!("127.0.0.1:{}", port(args.raft_port, i)?);
        let data_dir = dir(&name).display().to_string();
        let node_args = ["serve", "--placement", &placement_addr, "--http-addr", &http_addr]
            .iter()
            .chain(&["--raft-addr", &raft_addr, "--data-dir", &data_dir])
            .map(|s| s.to_string())
            .chain(tls.iter().flat_map(|tls| tls.node_flags(i + 1)))
            .collect();
        processes.push(Process::start(&name, node_args, dir(&format!("{name}.log")))?);
        nodes.push((name, http_addr, raft_addr));
    }
    let placements = usize::from(args.placement_replicas);
    for (process, addr) in processes.iter().zip(&placement_addrs) {
        println!("{:<9}  pid {:<7} {addr}  log {}", process.name, process.pid(), process.log.display());
    }
    println!("{:<7} {:>5} {:>7}  {:<16} {:<16} log", "node", "store", "pid", "http", "raft");
    let health = HealthClient::new(tls.as_ref());
    for (i, (name, http_addr, raft_addr)) in nodes.iter().enumerate() {
        let process = &mut processes[i + placements];
        let log = process.log.display().to_string();
        let status = wait_healthy(&health, &format!("{}://{http_addr}/status", health.scheme()), process)
            .await?
            .ok_or_else(|| ClusterError::NotHealthy { what: name.clone(), log: log.clone() })?;
        let store_id =
            serde_json::from_str::<serde_json::Value>(&status).ok().and_then(|s| s["store_id"].as_u64()).unwrap_or(0);
        println!("{name:<7} {store_id:>5} {:>7}  {http_addr:<16} {raft_addr:<16} {log}", process.pid());
    }
    // The first region starts with one peer on the first store to register; the replica checker adds
    // the others within seconds. "Up" means replicated.
    if !wait_replicated(&placement_addr, tls.as_ref(), replicas, processes).await? {
        return Err(ClusterError::NotReplicated { replicas, dir: args.data_dir.display().to_string() });
    }
    match &tls {
        None => println!(
            "cluster is up; try: curl -L -X PUT http://127.0.0.1:{}/fekv/hello -d world   (Ctrl-C stops it)",
            args.http_port
        ),
        Some(tls) => println!("cluster is up; {}\n(Ctrl-C stops it)", tls.usage(args.http_port, &placement_addrs)),
    }
    let mut ticks = tokio::time::interval(SUPERVISE_EVERY);
    loop {
        ticks.tick().await;
        for process in processes.iter_mut() {
            process.supervise(args.max_restarts)?;
        }
    }
}
