//! The real `fekv` binary as a child process on a 127.0.0.1 port, with its stderr captured.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

pub struct FekvProcess {
    child: Child,
    pub base: String,
    /// host:port it listens on (HTTP for a node, gRPC for placement).
    pub addr: String,
    pub data_dir: PathBuf,
    /// Every line the process wrote to stderr so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
}

impl FekvProcess {
    /// Starts `fekv` on an ephemeral port with its data in `data_dir`, plus `extra` flags, and waits
    /// for it to say where it serves (at most 20 s).
    pub fn start(data_dir: &Path, extra: &[&str]) -> FekvProcess {
        Self::start_with_env(data_dir, extra, &[])
    }

    /// Like [`Self::start`], with extra environment variables (`FEKV_FAILPOINT`, ...).
    pub fn start_with_env(data_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> FekvProcess {
        let mut args: Vec<String> = vec!["--http-addr".into(), "127.0.0.1:0".into(), "--data-dir".into()];
        args.push(data_dir.display().to_string());
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn_with(&args, data_dir, "fekv node serving", "http_addr=", |command| {
            command.envs(env.iter().copied());
        })
    }

    /// A cluster node: registers with the placement service at `placement`. Its raft log is compacted
    /// after 50 entries, so a node that was down catches up through a snapshot.
    pub fn start_node(data_dir: &Path, placement: &str) -> FekvProcess {
        Self::start_node_with(data_dir, placement, &[])
    }

    /// A cluster node with extra flags.
    pub fn start_node_with(data_dir: &Path, placement: &str, extra: &[&str]) -> FekvProcess {
        let mut args = vec!["--placement", placement, "--raft-addr", "127.0.0.1:0", "--raft-log-gc-threshold", "50"];
        args.extend_from_slice(extra);
        Self::start(data_dir, &args)
    }

    /// The placement service, with `replicas` per region.
    pub fn start_placement(data_dir: &Path, replicas: usize) -> FekvProcess {
        Self::start_placement_with(data_dir, replicas, &[])
    }

    /// The placement service with extra flags (`--max-store-down-time 3s`, ...).
    pub fn start_placement_with(data_dir: &Path, replicas: usize, extra: &[&str]) -> FekvProcess {
        let mut args: Vec<String> = vec![
            "placement".into(),
            "--addr".into(),
            "127.0.0.1:0".into(),
            "--data-dir".into(),
            data_dir.display().to_string(),
            "--replicas".into(),
            replicas.to_string(),
        ];
        args.extend(extra.iter().map(|s| s.to_string()));
        Self::spawn(&args, data_dir, "placement service serving", "addr=")
    }

    /// A node started with exactly `args` (no `--http-addr` or `--data-dir` added), with `prepare`
    /// applied to its command (limits in a `pre_exec`, environment), once it says it serves.
    pub fn start_node_as(args: &[String], data_dir: &Path, prepare: impl FnOnce(&mut Command)) -> FekvProcess {
        Self::spawn_with(args, data_dir, "fekv node serving", "http_addr=", prepare)
    }

    /// Runs `fekv args...` and waits (at most 20 s) for a stderr line containing `ready` with the
    /// listen address after `field`.
    fn spawn(args: &[String], data_dir: &Path, ready: &str, field: &str) -> FekvProcess {
        Self::spawn_with(args, data_dir, ready, field, |_| {})
    }

    fn spawn_with(
        args: &[String],
        data_dir: &Path,
        ready: &str,
        field: &str,
        prepare: impl FnOnce(&mut Command),
    ) -> FekvProcess {
        let mut command = Command::new(env!("CARGO_BIN_EXE_fekv"));
        command.args(args).env_remove("RUST_LOG").stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        prepare(&mut command);
        let mut child = command.spawn().expect("spawn fekv");
        let stderr = Arc::new(Mutex::new(Vec::new()));
        let lines = stderr.clone();
        let pipe = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let deadline = Instant::now() + Duration::from_secs(20);
        let addr = loop {
            let found = stderr.lock().unwrap().iter().find_map(|line| {
                line.contains(ready)
                    .then(|| line.split(field).nth(1)?.split_whitespace().next().map(str::to_string))
                    .flatten()
            });
            if let Some(addr) = found {
                break addr;
            }
            if let Ok(Some(status)) = child.try_wait() {
                panic!("fekv exited with {status}: {:#?}", stderr.lock().unwrap());
            }
            assert!(Instant::now() < deadline, "fekv did not start within 20s: {:#?}", stderr.lock().unwrap());
            std::thread::sleep(Duration::from_millis(20));
        };
        FekvProcess { child, base: format!("http://{addr}"), addr, data_dir: data_dir.to_path_buf(), stderr }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `kill -9`: no chance to flush or clean up anything.
    pub fn kill9(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reap");
    }

    /// Sends `signal` (e.g. "INT", "TERM") and waits for a clean exit (at most 15 s).
    pub fn stop_with(mut self, signal: &str) -> std::process::ExitStatus {
        let sent = Command::new("kill").args([&format!("-{signal}"), &self.child.id().to_string()]).status().unwrap();
        assert!(sent.success());
        let deadline = Instant::now() + Duration::from_secs(15);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "fekv ignored SIG{signal} for 15s");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Waits (at most `within`) for the process to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> std::process::ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < deadline, "fekv still running after {within:?}: {:#?}", self.stderr_lines());
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }
}

impl Drop for FekvProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A placement service (3 replicas) and `count` nodes started with `extra` flags, in `dir`'s
/// `placement` and `node-N` subdirectories.
pub fn start_cluster(dir: &Path, count: usize, extra: &[&str]) -> (FekvProcess, Vec<FekvProcess>) {
    let placement = FekvProcess::start_placement(&dir.join("placement"), 3);
    let nodes = (0..count)
        .map(|i| FekvProcess::start_node_with(&dir.join(format!("node-{i}")), &placement.addr, extra))
        .collect();
    (placement, nodes)
}

/// Runs `fekv ctl --placement <placement> <args>` to completion.
pub fn ctl_output(placement: &str, args: &[&str]) -> Result<std::process::Output, String> {
    Command::new(env!("CARGO_BIN_EXE_fekv"))
        .args(["ctl", "--placement", placement])
        .args(args)
        .env_remove("FEKV_PLACEMENT")
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("spawn fekv ctl: {e}"))
}

/// `fekv ctl --placement <placement> -o json <args>`: its stdout as JSON, or why not.
pub fn ctl_json(placement: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let output = ctl_output(placement, &[&["-o", "json"], args].concat())?;
    if !output.status.success() {
        return Err(format!("fekv ctl {args:?}: {}", String::from_utf8_lossy(&output.stderr)));
    }
    serde_json::from_slice(&output.stdout).map_err(|e| format!("fekv ctl {args:?} printed no JSON: {e}"))
}

/// Polls `fekv ctl region list` until every region has exactly `replicas` peers, none of them still
/// catching up, and a leader; returns the regions. Panics with the last listing after `within`. The
/// first region starts with one peer: the replica checker grows it as stores join.
pub fn wait_replicated(placement: &str, replicas: usize, within: Duration) -> Vec<serde_json::Value> {
    wait_regions(
        placement,
        within,
        &format!("every region at {replicas} caught-up replicas with a leader"),
        |regions| {
            !regions.is_empty()
                && regions.iter().all(|r| {
                    r["peers"].as_array().is_some_and(|p| p.len() == replicas)
                        && r["pending_peers"].as_array().is_some_and(|p| p.is_empty())
                        && r["leader_store_id"].as_u64().unwrap_or(0) != 0
                })
        },
    )
}

/// Polls `fekv ctl region list` until `done` accepts the regions (at most `within`, then panics
/// saying what was awaited and what was last seen).
pub fn wait_regions(
    placement: &str,
    within: Duration,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + within;
    loop {
        let last = match ctl_json(placement, &["region", "list"]) {
            Ok(serde_json::Value::Array(regions)) if done(&regions) => return regions,
            Ok(other) => other.to_string(),
            Err(err) => err,
        };
        assert!(Instant::now() < deadline, "no {what} within {within:?}; last seen: {last}");
        std::thread::sleep(Duration::from_millis(200));
    }
}
