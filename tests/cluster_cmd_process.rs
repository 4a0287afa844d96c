//! `fekv cluster` as a user runs it: a taken port fails at once, naming it; a child that dies is
//! reported with the end of its log and started again; one that dies too often stops the cluster.

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::process::collect_lines;
use common::wait::{eventually, eventually_sync, try_eventually_sync, Watchdog};
use hyper::StatusCode;

/// Ports for node-1's HTTP and raft and for placement, free right now. `fekv cluster` restarts a
/// child on its port, so they come from below the ephemeral range: one picked by binding `:0` was
/// once taken meanwhile by a concurrent test's outgoing connection ("Address already in use").
fn free_ports() -> [u16; 3] {
    let ports = common::process::fixed_port_runs(3, 1);
    [ports[0], ports[1], ports[2]]
}

/// A running `fekv cluster`, its stdout and stderr captured line by line.
struct ClusterCmd {
    child: Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
    _watchdog: Watchdog,
}

impl ClusterCmd {
    fn start(ports: [u16; 3], extra: &[&str]) -> ClusterCmd {
        let dir = tempfile::tempdir().unwrap();
        let [http, raft, placement] = ports.map(|p| p.to_string());
        let mut child = Command::new(env!("CARGO_BIN_EXE_fekv"))
            .args(["cluster", "--nodes", "1", "--http-port", &http, "--raft-port", &raft])
            .args(["--placement-port", &placement, "--data-dir"])
            .arg(dir.path())
            .args(extra)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        common::wait::watch_child(child.id());
        let stdout = collect_lines(child.stdout.take().unwrap());
        let stderr = collect_lines(child.stderr.take().unwrap());
        ClusterCmd { child, stdout, stderr, _dir: dir, _watchdog: Watchdog::default() }
    }

    fn output(&self) -> String {
        format!(
            "stdout:\n{}\nstderr:\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// Waits (at most `within`) until a line of stdout or stderr satisfies `accept`; returns it.
    fn wait_line(&self, within: Duration, accept: impl Fn(&str) -> bool) -> String {
        eventually_sync(within, "a line of fekv cluster's output", || {
            let lines: Vec<String> =
                [&self.stdout, &self.stderr].iter().flat_map(|l| l.lock().unwrap().clone()).collect();
            lines.into_iter().find(|l| accept(l)).ok_or_else(|| self.output())
        })
    }

    /// Waits (at most `within`) for `fekv cluster` to exit.
    fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let (stdout, stderr) = (self.stdout.clone(), self.stderr.clone());
        let child = &mut self.child;
        eventually_sync(within, "fekv cluster to exit", || {
            child.try_wait().unwrap().ok_or_else(|| format!("{stdout:?}\n{stderr:?}"))
        })
    }

    fn signal(&self, pid: u32, signal: i32) {
        // SAFETY: kill(2) on a process this test started (the cluster or one of its children).
        assert_eq!(unsafe { libc::kill(pid as i32, signal) }, 0, "kill {pid}");
    }

    /// The pid in a node's line of the cluster's table (name, store id, pid, ...).
    fn pid_of(&self, line: &str) -> u32 {
        line.split_whitespace().nth(2).and_then(|p| p.parse().ok()).unwrap_or_else(|| panic!("no pid in {line:?}"))
    }
}

impl Drop for ClusterCmd {
    fn drop(&mut self) {
        // SIGTERM, so `fekv cluster` stops its children before it exits.
        if let Ok(None) = self.child.try_wait() {
            self.signal(self.child.id(), libc::SIGTERM);
            let child = &mut self.child;
            let _ = try_eventually_sync(Duration::from_secs(15), || !matches!(child.try_wait(), Ok(None)));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        common::wait::forget_child(self.child.id());
    }
}

async fn health(port: u16) -> Option<StatusCode> {
    common::try_request(hyper::Method::GET, &format!("http://127.0.0.1:{port}/health"), "", &[])
        .await
        .ok()
        .map(|r| r.status)
}

#[test]
fn a_taken_port_fails_at_once_naming_it() {
    let ports = free_ports();
    let _taken = std::net::TcpListener::bind(("127.0.0.1", ports[0])).unwrap();
    let started = Instant::now();
    let mut cluster = ClusterCmd::start(ports, &[]);
    let status = cluster.wait_exit(Duration::from_secs(10));
    assert!(!status.success(), "{}", cluster.output());
    let output = cluster.output();
    assert!(output.contains(&format!("port {} (node-1's HTTP) is not free", ports[0])), "{output}");
    assert!(started.elapsed() < Duration::from_secs(10));
    // Nothing was started: placement's port is still free.
    std::net::TcpListener::bind(("127.0.0.1", ports[2])).expect("placement never started");
}

/// `fekv cluster --tls-dir`: TLS everywhere, with certificates made into the directory; the curl and
/// ctl command lines it prints work as printed, and plain HTTP gets nothing from the node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tls_cluster_prints_curl_and_ctl_lines_that_work() {
    let ports = free_ports();
    let tls_dir = tempfile::tempdir().unwrap();
    let tls_path = tls_dir.path().display().to_string();
    let cluster = ClusterCmd::start(ports, &["--tls-dir", &tls_path]);
    cluster.wait_line(Duration::from_secs(60), |l| l.starts_with("cluster is up"));
    let curl = cluster.wait_line(Duration::from_secs(10), |l| l.starts_with("  curl "));
    let ctl = cluster.wait_line(Duration::from_secs(10), |l| l.starts_with("  fekv ctl "));
    let run = |line: &str, program: &str| {
        let mut words = line.split_whitespace().skip(1);
        let output = Command::new(program).args(&mut words).output().unwrap();
        assert!(output.status.success(), "{line}: {}", String::from_utf8_lossy(&output.stderr));
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    run(&curl, "curl");
    let ca = tls_dir.path().join("ca.crt");
    let read = Command::new("curl")
        .args(["-sS", "--cacert"])
        .arg(&ca)
        .arg(format!("https://127.0.0.1:{}/fekv/hello", ports[0]))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&read.stdout), "world", "{}", String::from_utf8_lossy(&read.stderr));
    let stores = run(&ctl, env!("CARGO_BIN_EXE_fekv"));
    assert!(stores.contains(&format!("127.0.0.1:{}", ports[1])), "ctl lists the node's raft address: {stores}");
    // Plain HTTP to the node's HTTPS port gets no HTTP answer.
    assert_eq!(health(ports[0]).await, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_that_dies_is_reported_with_its_log_and_restarted() {
    let ports = free_ports();
    let mut cluster = ClusterCmd::start(ports, &[]);
    cluster.wait_line(Duration::from_secs(60), |l| l.starts_with("cluster is up"));
    let node = cluster.wait_line(Duration::from_secs(10), |l| l.starts_with("node-1 "));
    let pid = cluster.pid_of(&node);
    cluster.signal(pid, libc::SIGKILL);
    cluster.wait_line(Duration::from_secs(10), |l| l.starts_with("node-1 exited (signal: 9"));
    // The end of its log comes with it: the node's own last lines, indented.
    cluster.wait_line(Duration::from_secs(10), |l| l.starts_with("  ") && l.contains(" INFO "));
    cluster.wait_line(Duration::from_secs(10), |l| l.contains("restarting node-1 in 1s (restart 1 of at most 5)"));
    let restarted = cluster.wait_line(Duration::from_secs(10), |l| l.starts_with("node-1 restarted, pid "));
    assert!(!restarted.ends_with(&format!(" {pid}")), "{restarted}");
    eventually(Duration::from_secs(30), "node-1 healthy again", || async {
        health(ports[0]).await.filter(|s| *s == StatusCode::OK).ok_or_else(|| cluster.output())
    })
    .await;
    cluster.signal(cluster.child.id(), libc::SIGTERM);
    let status = cluster.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}:\n{}", cluster.output());
    assert_eq!(health(ports[0]).await, None, "the node was stopped with the cluster");
}

#[test]
fn a_node_that_dies_more_than_max_restarts_stops_the_cluster() {
    let ports = free_ports();
    let mut cluster = ClusterCmd::start(ports, &["--max-restarts", "0"]);
    cluster.wait_line(Duration::from_secs(60), |l| l.starts_with("cluster is up"));
    let node = cluster.wait_line(Duration::from_secs(10), |l| l.starts_with("node-1 "));
    cluster.signal(cluster.pid_of(&node), libc::SIGKILL);
    let status = cluster.wait_exit(Duration::from_secs(20));
    assert!(!status.success(), "{}", cluster.output());
    let output = cluster.output();
    assert!(output.contains("node-1 exited 1 times (--max-restarts 0); stopped the cluster"), "{output}");
    // Placement was stopped with it.
    eventually_sync(Duration::from_secs(10), "placement's port free", || {
        std::net::TcpListener::bind(("127.0.0.1", ports[2])).map(drop)
    });
}

#[test]
fn a_stop_while_the_cluster_starts_stops_every_child() {
    let ports = free_ports();
    let mut cluster = ClusterCmd::start(ports, &[]);
    let placement = cluster.wait_line(Duration::from_secs(30), |l| l.starts_with("placement  pid "));
    let placement_pid: i32 = placement.split_whitespace().nth(2).unwrap().parse().unwrap();
    cluster.signal(cluster.child.id(), libc::SIGTERM);
    let status = cluster.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}:\n{}", cluster.output());
    // SAFETY: kill(2) with signal 0 only asks whether the process exists.
    assert_ne!(unsafe { libc::kill(placement_pid, 0) }, 0, "placement outlived the cluster:\n{}", cluster.output());
}

#[test]
fn placement_replicas_3_starts_a_placement_group_and_gives_the_node_the_list() {
    // The replicas take --placement-port and the two after it: a run of three free ports, apart
    // from the node's.
    let [http, raft, _] = free_ports();
    let ports = [http, raft, common::process::fixed_port_runs(1, 3)[0]];
    let mut cluster = ClusterCmd::start(ports, &["--placement-replicas", "3"]);
    cluster.wait_line(Duration::from_secs(60), |l| l.starts_with("cluster is up"));
    let members: Vec<String> = (0..3).map(|j| format!("127.0.0.1:{}", ports[2] + j)).collect();
    let mut pids = Vec::new();
    for (j, addr) in members.iter().enumerate() {
        let line = cluster.wait_line(Duration::from_secs(10), |l| l.starts_with(&format!("placement-{} ", j + 1)));
        assert!(line.contains(addr.as_str()), "{line}");
        pids.push(line.split_whitespace().nth(2).and_then(|p| p.parse::<i32>().ok()).unwrap());
    }
    let list = members.join(",");
    let run = common::process::ctl(&list, &["-o", "json", "placement", "list"]);
    assert!(run.success, "{}{}", run.stdout, run.stderr);
    let rows = run.json();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows.iter().filter(|r| r["leader"] == true).count(), 1, "{rows:?}");
    let stores = common::process::ctl_json(&list, &["store", "list"]).unwrap();
    assert_eq!(stores.as_array().unwrap().len(), 1, "{stores}");
    cluster.signal(cluster.child.id(), libc::SIGTERM);
    let status = cluster.wait_exit(Duration::from_secs(20));
    assert!(status.success(), "{status}:\n{}", cluster.output());
    for pid in pids {
        // SAFETY: kill(2) with signal 0 only asks whether the process exists.
        assert_ne!(unsafe { libc::kill(pid, 0) }, 0, "placement {pid} outlived the cluster");
    }
}
