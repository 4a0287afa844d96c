//! Test helpers: a real fekv node served in-process on `127.0.0.1:0`, and a small HTTP client.
//! The submodules hold the rest: waiting ([`wait`]), the in-process raft cluster ([`cluster`]), the
//! real binary as a process ([`process`]) and a cluster of them ([`process_cluster`]), background
//! writers ([`writers`]), hand-built raft messages ([`envelopes`]) and the linearizability checker.
#![allow(dead_code)] // each test binary uses its own part of this module

pub mod cluster;
pub mod envelopes;
pub mod linearizability;
pub mod process;
pub mod process_cluster;
pub mod wait;
pub mod writers;

use std::path::{Path, PathBuf};
use std::time::Duration;

use bytes::Bytes;
use fekv::config::Config;
use fekv::node::Node;
use http_body_util::{BodyExt, Full};
use hyper::header::HeaderMap;
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::sync::oneshot;
use wait::{eventually, try_eventually, Watchdog};

/// A node serving HTTP on an ephemeral port, with its data in a temporary directory.
pub struct TestNode {
    pub base: String,
    pub config: Config,
    node: Option<Node>,
    stop_serving: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<()>>,
    dir: Option<tempfile::TempDir>,
    _watchdog: Watchdog,
}

/// A config for tests: fast raft ticks, data in `dir`.
pub fn test_config(dir: &Path) -> Config {
    Config {
        data_dir: dir.to_path_buf(),
        http_addr: "127.0.0.1:0".parse().unwrap(),
        raft_tick_interval: Duration::from_millis(20),
        request_timeout: Duration::from_secs(5),
        ..Config::default()
    }
}

impl TestNode {
    /// Starts a node in a fresh temporary directory, with `tweak` applied to the test config.
    pub async fn start(tweak: impl FnOnce(&mut Config)) -> TestNode {
        let dir = tempfile::tempdir().unwrap();
        let mut config = test_config(dir.path());
        tweak(&mut config);
        Self::start_with(config, Some(dir)).await
    }

    pub async fn start_with(mut config: Config, dir: Option<tempfile::TempDir>) -> TestNode {
        let listener = tokio::net::TcpListener::bind(config.http_addr).await.unwrap();
        config.http_addr = listener.local_addr().unwrap();
        let node = start_node(&config).await;
        let (stop_serving, stopped) = oneshot::channel::<()>();
        let state = node.api_state();
        let server = tokio::spawn(async move {
            fekv::api::serve(listener, state, async {
                let _ = stopped.await;
            })
            .await
        });
        let test_node = TestNode {
            base: format!("http://{}", config.http_addr),
            config,
            node: Some(node),
            stop_serving: Some(stop_serving),
            server: Some(server),
            dir,
            _watchdog: Watchdog::default(),
        };
        test_node.wait_ready().await;
        test_node
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    pub fn node(&self) -> &Node {
        self.node.as_ref().expect("node is running")
    }

    pub fn data_dir(&self) -> PathBuf {
        self.config.data_dir.clone()
    }

    /// Polls `/ready` until it answers 200 (every region has a leader), for at most 10 s.
    pub async fn wait_ready(&self) {
        let url = self.url("/ready");
        eventually(Duration::from_secs(10), &format!("node at {} to be ready", self.base), || async {
            try_request(Method::GET, &url, Bytes::new(), &[]).await.map(|reply| reply.status == StatusCode::OK)
                == Ok(true)
        })
        .await;
    }

    /// Stops serving and stops the node; the LMDB environment is closed once every handle is gone.
    /// Returns the temporary directory so the data can be reopened.
    pub async fn stop(mut self) -> (Config, Option<tempfile::TempDir>) {
        if let Some(stop) = self.stop_serving.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            tokio::time::timeout(Duration::from_secs(10), server).await.expect("server stops within 10s").unwrap();
        }
        if let Some(node) = self.node.take() {
            tokio::task::spawn_blocking(move || node.stop()).await.unwrap();
        }
        (self.config.clone(), self.dir.take())
    }

    /// Stops the node and starts it again on the same data directory (a new port).
    pub async fn restart(self) -> TestNode {
        let (mut config, dir) = self.stop().await;
        config.http_addr = "127.0.0.1:0".parse().unwrap();
        TestNode::start_with(config, dir).await
    }
}

/// Starts a node, retrying for a while if its data directory is still open: the LMDB environment
/// closes when its last handle drops, and a stopped server's tasks may still be letting go of theirs.
async fn start_node(config: &Config) -> Node {
    let what = format!("{} to open", config.data_dir.display());
    eventually(Duration::from_secs(10), &what, || async { Node::start(config).map_err(|e| e.to_string()) }).await
}

/// A response, fully read.
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Reply {
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }
}

fn client() -> Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

pub async fn try_request(
    method: Method,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Result<Reply, String> {
    let mut builder = Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(Full::new(body.into())).map_err(|e| e.to_string())?;
    let response = tokio::time::timeout(Duration::from_secs(15), client().request(request))
        .await
        .map_err(|_| "no response within 15s".to_string())?
        .map_err(|e| e.to_string())?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok(Reply { status: parts.status, headers: parts.headers, body })
}

/// Sends a request and returns the reply; panics if there is none.
pub async fn request(method: Method, url: &str, body: impl Into<Bytes>, headers: &[(&str, &str)]) -> Reply {
    let body = body.into();
    try_request(method.clone(), url, body, headers).await.unwrap_or_else(|e| panic!("{method} {url}: {e}"))
}

pub async fn get(url: &str) -> Reply {
    request(Method::GET, url, Bytes::new(), &[]).await
}

pub async fn put(url: &str, value: impl Into<Bytes>) -> Reply {
    request(Method::PUT, url, value, &[]).await
}

pub async fn delete(url: &str) -> Reply {
    request(Method::DELETE, url, Bytes::new(), &[]).await
}

/// Sends a request and follows `307`/`308` redirects like `curl -L` (same method and body), at most
/// 5 hops. Returns the final reply and how many redirects were followed.
pub async fn request_following(
    method: Method,
    url: &str,
    body: impl Into<Bytes>,
    headers: &[(&str, &str)],
) -> Result<(Reply, usize), String> {
    let body = body.into();
    let mut url = url.to_string();
    for hops in 0..=5 {
        let reply = try_request(method.clone(), &url, body.clone(), headers).await?;
        if reply.status != StatusCode::TEMPORARY_REDIRECT && reply.status != StatusCode::PERMANENT_REDIRECT {
            return Ok((reply, hops));
        }
        url = reply.header("location").ok_or("a redirect without Location")?.to_string();
    }
    Err(format!("more than 5 redirects, last to {url}"))
}

/// PUTs through any of `bases` (node base URLs), following redirects, until one acknowledges it or
/// `timeout` passes; the error is the last answer seen.
pub async fn put_anywhere(bases: &[String], key: &str, value: &str, timeout: Duration) -> Result<(), String> {
    try_eventually(timeout, || async {
        let mut last = String::from("no node to ask");
        for base in bases {
            match request_following(Method::PUT, &format!("{base}/fekv/{key}"), value.to_string(), &[]).await {
                Ok((reply, _)) if reply.status == StatusCode::OK => return Ok(()),
                Ok((reply, _)) => last = format!("{}: {}", reply.status, reply.text()),
                Err(err) => last = err,
            }
        }
        Err(last)
    })
    .await
}
