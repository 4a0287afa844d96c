//! The real `fekv` binary as a child process: a server on a 127.0.0.1 port with its stderr captured
//! ([`FekvProcess`]), or a command run to completion ([`run_fekv`], [`ctl`]). Every child is killed
//! when its handle drops, and by the [`Watchdog`](super::wait::Watchdog) when a test hangs.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::wait::{eventually_sync, forget_child, watch_child, Watchdog};

/// A child that is killed and reaped when dropped (also when a test panics).
struct Reaped(Child);

impl Reaped {
    fn spawn(command: &mut Command) -> Reaped {
        let child = command.spawn().unwrap_or_else(|e| panic!("spawn {command:?}: {e}"));
        watch_child(child.id());
        Reaped(child)
    }

    /// Waits (at most `within`) for the child to exit on its own; `what` names it in the panic.
    fn wait_exit(&mut self, within: Duration, what: impl Fn() -> String) -> ExitStatus {
        let child = &mut self.0;
        eventually_sync(within, &what(), || match child.try_wait() {
            Ok(Some(status)) => Ok(status),
            Ok(None) => Err("still running".to_string()),
            Err(err) => Err(err.to_string()),
        })
    }

    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
        forget_child(self.0.id());
    }
}

impl Drop for Reaped {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a pipe to its end on a thread, line by line into `lines`, so the child never blocks on it.
pub fn collect_lines(pipe: impl Read + Send + 'static) -> Arc<Mutex<Vec<String>>> {
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            sink.lock().unwrap().push(line);
        }
    });
    lines
}

pub struct FekvProcess {
    child: Reaped,
    pub base: String,
    /// host:port it listens on (HTTP for a node, gRPC for placement).
    pub addr: String,
    pub data_dir: PathBuf,
    /// Every line the process wrote to stderr so far.
    pub stderr: Arc<Mutex<Vec<String>>>,
    _watchdog: Watchdog,
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

    /// One member of a placement group (`--peers`), at its fixed `addr` (the members know each other
    /// by the addresses in `peers`), with extra flags.
    pub fn start_placement_member(
        data_dir: &Path,
        addr: &str,
        peers: &str,
        replicas: usize,
        extra: &[&str],
    ) -> FekvProcess {
        let mut args: Vec<String> =
            ["placement", "--addr", addr, "--peers", peers, "--data-dir"].iter().map(|s| s.to_string()).collect();
        args.extend([data_dir.display().to_string(), "--replicas".into(), replicas.to_string()]);
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
        let mut process = Self::launch_with(args, data_dir, prepare);
        let addr = eventually_sync(Duration::from_secs(20), &format!("fekv {args:?} to serve"), || {
            let lines = process.stderr.lock().unwrap();
            let found = lines.iter().find_map(|line| {
                line.contains(ready)
                    .then(|| line.split(field).nth(1)?.split_whitespace().next().map(str::to_string))
                    .flatten()
            });
            if let Ok(Some(status)) = process.child.0.try_wait() {
                panic!("fekv exited with {status}: {lines:#?}");
            }
            found.ok_or_else(|| format!("{lines:#?}"))
        });
        process.base = format!("http://{addr}");
        process.addr = addr;
        process
    }

    /// Starts `fekv args...` without waiting for it to serve (a node that retries placement, or one
    /// that is to fail at start): `addr` and `base` stay empty.
    pub fn launch(args: &[&str], data_dir: &Path) -> FekvProcess {
        Self::launch_with(args, data_dir, |_| {})
    }

    fn launch_with(
        args: &[impl AsRef<std::ffi::OsStr>],
        data_dir: &Path,
        prepare: impl FnOnce(&mut Command),
    ) -> FekvProcess {
        let mut command = fekv_command(args);
        command.stdout(Stdio::null()).stderr(Stdio::piped());
        prepare(&mut command);
        let mut child = Reaped::spawn(&mut command);
        let stderr = collect_lines(child.0.stderr.take().expect("stderr is piped"));
        FekvProcess {
            child,
            base: String::new(),
            addr: String::new(),
            data_dir: data_dir.to_path_buf(),
            stderr,
            _watchdog: Watchdog::default(),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn pid(&self) -> u32 {
        self.child.0.id()
    }

    /// `kill -9`: no chance to flush or clean up anything.
    pub fn kill9(mut self) {
        self.child.kill();
    }

    /// Sends `signal` (e.g. "INT", "TERM") and waits for a clean exit (at most 15 s).
    pub fn stop_with(mut self, signal: &str) -> ExitStatus {
        let sent = Command::new("kill").args([&format!("-{signal}"), &self.pid().to_string()]).status().unwrap();
        assert!(sent.success());
        self.child.wait_exit(Duration::from_secs(15), || format!("fekv to stop on SIG{signal}"))
    }

    /// Waits (at most `within`) for the process to exit on its own.
    pub fn wait_exit(&mut self, within: Duration) -> ExitStatus {
        let stderr = self.stderr.clone();
        self.child.wait_exit(within, || format!("fekv to exit: {:#?}", stderr.lock().unwrap()))
    }

    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits (at most `within`) until the stderr lines so far satisfy `accept`; returns them.
    pub fn wait_stderr(&self, within: Duration, what: &str, accept: impl Fn(&[String]) -> bool) -> Vec<String> {
        eventually_sync(within, what, || {
            let lines = self.stderr_lines();
            if accept(&lines) {
                Ok(lines)
            } else {
                Err(format!("{lines:#?}"))
            }
        })
    }

    /// Sends the write that trips the `raftstore_panic_on_write` failpoint the process was started
    /// with, and checks that the node then exits 1 with a last log line saying its raftstore died of
    /// that failpoint; returns the log lines.
    pub async fn write_until_the_raftstore_dies(&mut self) -> Vec<String> {
        // The write gets an answer (503), or the connection closes as the node exits.
        if let Ok(reply) = super::try_request(hyper::Method::PUT, &self.url("/fekv/k"), "v", &[]).await {
            assert_eq!(reply.status, hyper::StatusCode::SERVICE_UNAVAILABLE, "{}", reply.text());
        }
        let status = tokio::task::block_in_place(|| self.wait_exit(Duration::from_secs(20)));
        assert_eq!(status.code(), Some(1), "{status}");
        // The log's last line (once the pipe has drained) names the panic.
        let lines = self.wait_stderr(Duration::from_secs(5), "a last line saying why the node exited", |lines| {
            lines.last().is_some_and(|last| last.contains("raftstore thread died"))
        });
        let last = lines.last().unwrap();
        assert!(last.contains("failpoint raftstore_panic_on_write"), "{last}");
        lines
    }
}

/// `fekv args...` with no stdin and none of the caller's `RUST_LOG` or `FEKV_PLACEMENT`.
fn fekv_command(args: &[impl AsRef<std::ffi::OsStr>]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_fekv"));
    command.args(args).env_remove("RUST_LOG").env_remove("FEKV_PLACEMENT").stdin(Stdio::null());
    command
}

/// One finished run of the `fekv` binary.
#[derive(Debug)]
pub struct Run {
    pub status: ExitStatus,
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl Run {
    /// Its stdout as JSON; panics if it is none.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

/// Runs `fekv args...` to completion, at most `within` (then kills it and panics).
pub fn run_fekv(args: &[&str], within: Duration) -> Run {
    run_fekv_with(args, within, |_| {})
}

/// [`run_fekv`] with `prepare` applied to the command (environment, ...).
pub fn run_fekv_with(args: &[&str], within: Duration, prepare: impl FnOnce(&mut Command)) -> Run {
    let mut command = fekv_command(args);
    prepare(&mut command);
    run_to_end(command, within)
}

/// Runs `command` to completion with its output captured, at most `within` (then kills it and
/// panics).
pub fn run_to_end(mut command: Command, within: Duration) -> Run {
    let started = Instant::now();
    command.stdout(Stdio::piped()).stderr(Stdio::piped());
    let mut child = Reaped::spawn(&mut command);
    // Read both pipes to their end on threads, so a large output never blocks the child.
    let read_all = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            pipe.read_to_string(&mut text).map(|_| text).unwrap_or_else(|e| format!("<unreadable: {e}>"))
        })
    };
    let stdout = read_all(Box::new(child.0.stdout.take().expect("piped")));
    let stderr = read_all(Box::new(child.0.stderr.take().expect("piped")));
    let status = child.wait_exit(within, || format!("{command:?} to finish"));
    let (stdout, stderr) = (stdout.join().expect("reads stdout"), stderr.join().expect("reads stderr"));
    Run { status, success: status.success(), stdout, stderr, took: started.elapsed() }
}

/// Runs `fekv ctl --placement <placement> <args>` to completion (at most 20 s: ctl's own deadlines are
/// 3 s per call, 10 s for `--wait`).
pub fn ctl(placement: &str, args: &[&str]) -> Run {
    run_fekv(&[&["ctl", "--placement", placement], args].concat(), Duration::from_secs(20))
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

/// `fekv ctl --placement <placement> -o json <args>`: its stdout as JSON, or why not.
pub fn ctl_json(placement: &str, args: &[&str]) -> Result<serde_json::Value, String> {
    let run = ctl(placement, &[&["-o", "json"], args].concat());
    if !run.success {
        return Err(format!("fekv ctl {args:?}: {}", run.stderr));
    }
    serde_json::from_str(&run.stdout).map_err(|e| format!("fekv ctl {args:?} printed no JSON: {e}"))
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
    eventually_sync(within, what, || match ctl_json(placement, &["region", "list"]) {
        Ok(serde_json::Value::Array(regions)) if done(&regions) => Ok(regions),
        Ok(other) => Err(other.to_string()),
        Err(err) => Err(err),
    })
}

/// A `prepare` for [`FekvProcess::start_node_as`]: the child starts with an open-file limit of
/// `soft` (hard: `hard`), as under a default `ulimit -n` of 1,024.
pub fn open_file_limit(soft: u64, hard: u64) -> impl FnOnce(&mut Command) {
    move |command| {
        use std::os::unix::process::CommandExt;
        let limit = libc::rlimit { rlim_cur: soft as libc::rlim_t, rlim_max: hard as libc::rlim_t };
        // SAFETY: setrlimit is async-signal-safe and touches only the struct it is given.
        unsafe {
            command.pre_exec(move || match libc::setrlimit(libc::RLIMIT_NOFILE, &limit) {
                0 => Ok(()),
                _ => Err(std::io::Error::last_os_error()),
            });
        }
    }
}

/// Opens `count` keep-alive connections to `node`, one after another, each answered once (a
/// `GET /health`), and keeps them open on the client's side; panics with the node's log if one
/// is refused or not answered within 10 s (what 1,100 idle clients did to a node at 1,024 files).
pub async fn idle_connections(node: &FekvProcess, count: usize) -> Vec<tokio::net::TcpStream> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut connections = Vec::with_capacity(count);
    for i in 0..count {
        let opened = tokio::time::timeout(Duration::from_secs(10), async {
            let mut stream = tokio::net::TcpStream::connect(&node.addr).await.map_err(|e| e.to_string())?;
            stream.write_all(b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n").await.map_err(|e| e.to_string())?;
            let mut answer = [0u8; 256];
            let n = stream.read(&mut answer).await.map_err(|e| e.to_string())?;
            if !answer[..n].starts_with(b"HTTP/1.1 200") {
                return Err(format!("answered {:?}", String::from_utf8_lossy(&answer[..n])));
            }
            Ok::<_, String>(stream)
        })
        .await;
        match opened {
            Ok(Ok(stream)) => connections.push(stream),
            Ok(Err(err)) => panic!("connection {i} of {count}: {err}: {:#?}", node.stderr_lines()),
            Err(_) => panic!("connection {i} of {count} not answered within 10 s: {:#?}", node.stderr_lines()),
        }
    }
    connections
}

/// `count` loopback addresses free right now, for processes that must be told each other's
/// addresses before they start (placement `--peers`) and may be restarted on them. They come from
/// below the kernel's ephemeral range (see [`fixed_port_runs`]).
pub fn fixed_addrs(count: usize) -> Vec<String> {
    fixed_port_runs(count, 1).into_iter().map(|port| format!("127.0.0.1:{port}")).collect()
}

/// The first ports of `count` runs of `width` consecutive loopback ports, all free right now and
/// no two runs overlapping: for schemes that put process `i` on base+`i` (`fekv cluster`) and
/// restart it there. They come from below the kernel's ephemeral range (32768 up), so no outgoing
/// connection of this or another test takes one while its process is down (and a connection to
/// one nothing listens on cannot connect to itself); a process-wide counter keeps concurrent tests
/// apart, and the process id spreads test binaries run at once.
pub fn fixed_port_runs(count: usize, width: u16) -> Vec<u16> {
    use std::sync::atomic::{AtomicU32, Ordering};
    const FIRST: u32 = 12_000;
    const SPAN: u32 = 20_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let width = u32::from(width.max(1));
    let offset = std::process::id().wrapping_mul(7_919) % SPAN;
    let free = |port: u32| std::net::TcpListener::bind(("127.0.0.1", port as u16)).is_ok();
    let mut bases = Vec::with_capacity(count);
    for _ in 0..SPAN / width {
        if bases.len() == count {
            break;
        }
        // A run is taken from the counter whole, so a concurrent test never gets part of it.
        let start = (offset + NEXT.fetch_add(width, Ordering::Relaxed)) % SPAN;
        if start + width <= SPAN && (start..start + width).all(|i| free(FIRST + i)) {
            bases.push((FIRST + start) as u16);
        }
    }
    assert_eq!(bases.len(), count, "no {count} runs of {width} free loopback ports below the ephemeral range");
    bases
}
