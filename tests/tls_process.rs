//! A real cluster with TLS everywhere: a placement process and three nodes on 127.0.0.1, each with an
//! HTTPS REST API and mutual TLS on its raft port and to placement, certificates made by rcgen for
//! the test (never checked in). What TLS and store secrets must stop, tried as an attacker would:
//! plain HTTP to the HTTPS listener, raft and placement connections without a certificate or with
//! one of another CA, a forged `MsgTimeoutNow`, and a registration that claims an existing store.

#[path = "common/certs.rs"]
mod certs;
mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use certs::{CertFiles, TestPki};
use common::process::FekvProcess;
use fekv::proto::placement_client::PlacementClient;
use fekv::proto::raft_transport_client::RaftTransportClient;
use fekv::proto::{Peer, RaftMessage, RaftMessageBatch, RegisterStoreRequest, StoreHeartbeatRequest};
use fekv::security::tls::{AppProtocol, ClientTls, ClientTlsSettings, TlsConnector};
use http_body_util::{BodyExt, Full};
use hyper::{Method, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use protobuf::Message as _;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

struct TlsCluster {
    pki: TestPki,
    _dir: tempfile::TempDir,
    placement: FekvProcess,
    nodes: Vec<FekvProcess>,
}

fn path(p: &Path) -> String {
    p.display().to_string()
}

impl TlsCluster {
    fn start() -> TlsCluster {
        TlsCluster::start_with(&[], &[])
    }

    /// [`TlsCluster::start`] with more flags for placement and for every node.
    fn start_with(placement_extra: &[&str], node_extra: &[&str]) -> TlsCluster {
        let pki = TestPki::new();
        let dir = tempfile::tempdir().unwrap();
        let (cert, key, ca) = (path(&pki.server_files.cert), path(&pki.server_files.key), path(&pki.ca_file));
        let placement = FekvProcess::start_placement_with(
            &dir.path().join("placement"),
            3,
            &[&["--cert-file", &cert, "--key-file", &key, "--trusted-ca-file", &ca], placement_extra].concat(),
        );
        let node_flags = [
            "--cert-file",
            &cert,
            "--key-file",
            &key,
            "--peer-cert-file",
            &cert,
            "--peer-key-file",
            &key,
            "--peer-trusted-ca-file",
            &ca,
        ];
        let node_flags = [&node_flags[..], node_extra].concat();
        let nodes = (0..3)
            .map(|i| FekvProcess::start_node_with(&dir.path().join(format!("node-{i}")), &placement.addr, &node_flags))
            .collect();
        let cluster = TlsCluster { pki, _dir: dir, placement, nodes };
        cluster.wait_replicated();
        cluster
    }

    /// `fekv ctl -o json` over mutual TLS with the test client's certificate.
    fn ctl(&self, args: &[&str]) -> Result<Value, String> {
        self.ctl_as(&self.pki.client_files, args)
    }

    /// `fekv ctl -o json` over mutual TLS with the certificate `client`.
    fn ctl_as(&self, client: &CertFiles, args: &[&str]) -> Result<Value, String> {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_fekv"))
            .args(["ctl", "--placement", &format!("https://{}", self.placement.addr), "-o", "json"])
            .args(["--cacert", &path(&self.pki.ca_file)])
            .args(["--cert", &path(&client.cert), "--key", &path(&client.key)])
            .args(args)
            .env_remove("FEKV_PLACEMENT")
            .output()
            .map_err(|e| e.to_string())?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).into_owned());
        }
        serde_json::from_slice(&output.stdout).map_err(|e| e.to_string())
    }

    fn wait_replicated(&self) {
        let deadline = Instant::now() + Duration::from_secs(40);
        loop {
            let last = match self.ctl(&["region", "list"]) {
                Ok(Value::Array(regions))
                    if !regions.is_empty()
                        && regions.iter().all(|r| {
                            r["peers"].as_array().is_some_and(|p| p.len() == 3)
                                && r["pending_peers"].as_array().is_some_and(|p| p.is_empty())
                                && r["leader_store_id"].as_u64().unwrap_or(0) != 0
                        }) =>
                {
                    return
                }
                other => format!("{other:?}"),
            };
            assert!(Instant::now() < deadline, "not replicated over TLS within 40s: {last}");
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    /// The only region, as placement lists it.
    fn region(&self) -> Value {
        self.ctl(&["region", "list"]).unwrap()[0].clone()
    }

    fn client_tls(&self, client: Option<&CertFiles>, ca: &Path, protocol: AppProtocol) -> Arc<ClientTls> {
        let settings = ClientTlsSettings {
            cacert: ca.to_path_buf(),
            cert: client.map(|c| c.cert.clone()),
            key: client.map(|c| c.key.clone()),
        };
        Arc::new(ClientTls::load(settings, protocol).unwrap())
    }

    fn https(&self) -> Client<TlsConnector, Full<Bytes>> {
        let tls = self.client_tls(None, &self.pki.ca_file, AppProtocol::Http1);
        Client::builder(TokioExecutor::new()).build(TlsConnector::new(tls))
    }

    fn https_base(&self, i: usize) -> String {
        format!("https://{}", self.nodes[i].addr)
    }

    /// The raft address of store `store_id`, from placement.
    fn store(&self, store_id: u64) -> Value {
        let stores = self.ctl(&["store", "list"]).unwrap();
        stores.as_array().unwrap().iter().find(|s| s["store_id"] == store_id).cloned().unwrap()
    }
}

async fn send(
    client: &Client<TlsConnector, Full<Bytes>>,
    method: Method,
    url: &str,
    body: &'static str,
) -> Result<(StatusCode, hyper::HeaderMap, String), String> {
    let request = hyper::Request::builder().method(method).uri(url).body(Full::new(Bytes::from(body))).unwrap();
    let response = tokio::time::timeout(Duration::from_secs(5), client.request(request))
        .await
        .map_err(|_| "timed out".to_string())?
        .map_err(|e| format!("{e:?}"))?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((parts.status, parts.headers, String::from_utf8_lossy(&body).into_owned()))
}

/// Polls `attempt` until it returns `Some` (at most `within`).
async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    within: Duration,
    what: &str,
    mut attempt: impl FnMut() -> F,
) -> T {
    let deadline = Instant::now() + within;
    loop {
        if let Some(done) = attempt().await {
            return done;
        }
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// What a plain-TCP client gets from a TLS port after sending an HTTP request: no HTTP answer.
async fn plain_answer(addr: &str) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut answer)).await;
    answer
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cluster_with_tls_everywhere_serves_https_and_refuses_every_unauthenticated_peer() {
    let cluster = TlsCluster::start();
    let https = cluster.https();

    // A write through any node lands; a follower's redirect says https.
    let mut redirected = None;
    for i in 0..3 {
        let url = format!("{}/fekv/greeting", cluster.https_base(i));
        let (status, headers, _) = send(&https, Method::PUT, &url, "hello").await.unwrap();
        if status == StatusCode::TEMPORARY_REDIRECT {
            redirected = headers.get("location").map(|l| l.to_str().unwrap().to_string());
        }
    }
    let location = redirected.expect("two of three nodes are followers and redirect");
    assert!(location.starts_with("https://127.0.0.1:"), "{location}");
    let (status, _, _) = send(&https, Method::PUT, &location, "hello").await.unwrap();
    assert!(status.is_success(), "the leader takes the redirected write: {status}");
    for i in 0..3 {
        let url = format!("{}/fekv/greeting", cluster.https_base(i));
        let answer = eventually(Duration::from_secs(10), "a GET over HTTPS", || async {
            let (status, headers, body) = send(&https, Method::GET, &url, "").await.ok()?;
            match status {
                StatusCode::OK => Some(body),
                StatusCode::TEMPORARY_REDIRECT => {
                    let (_, _, body) =
                        send(&https, Method::GET, headers.get("location")?.to_str().ok()?, "").await.ok()?;
                    Some(body)
                }
                _ => None,
            }
        })
        .await;
        assert_eq!(answer, "hello");
    }

    // Plain HTTP to the HTTPS listener: no HTTP answer, and a failed handshake counted.
    let answer = plain_answer(&cluster.nodes[0].addr).await;
    assert!(!String::from_utf8_lossy(&answer).contains("HTTP/1.1"), "{answer:?}");
    // The failure is counted once the handshake task has finished, which may be after the
    // connection closed: polled (a single read raced it once).
    let metrics_url = format!("{}/metrics", cluster.https_base(0));
    eventually(Duration::from_secs(10), "the failed handshake counted", || async {
        let (_, _, metrics) = send(&https, Method::GET, &metrics_url, "").await.ok()?;
        (metrics.contains("fekv_tls_handshakes_total{listener=\"client\",outcome=\"completed\"}")
            && metrics.contains("fekv_tls_handshakes_total{listener=\"client\",outcome=\"failed\"}"))
        .then_some(())
    })
    .await;

    // The forged MsgTimeoutNow of issue 12, to a follower's raft port: without a certificate (plain
    // gRPC, TLS with no client certificate, one from another CA) it never gets through.
    let region = cluster.region();
    let leader_store = region["leader_store_id"].as_u64().unwrap();
    let peers = region["peers"].as_array().unwrap().clone();
    let peer_of = |store_id: u64| {
        let p = peers.iter().find(|p| p["store_id"] == store_id).unwrap();
        Peer { peer_id: p["peer_id"].as_u64().unwrap(), store_id }
    };
    let follower_store = peers.iter().map(|p| p["store_id"].as_u64().unwrap()).find(|s| *s != leader_store).unwrap();
    let follower_raft = cluster.store(follower_store)["raft_addr"].as_str().unwrap().to_string();
    let mut timeout_now = raft::eraftpb::Message::default();
    timeout_now.set_msg_type(raft::eraftpb::MessageType::MsgTimeoutNow);
    timeout_now.from = peer_of(leader_store).peer_id;
    timeout_now.to = peer_of(follower_store).peer_id;
    timeout_now.term = 1_000;
    let forged = RaftMessageBatch {
        msgs: vec![RaftMessage {
            region_id: region["region_id"].as_u64().unwrap(),
            from_peer: Some(peer_of(leader_store)),
            to_peer: Some(peer_of(follower_store)),
            region_epoch: Some(fekv::proto::RegionEpoch {
                conf_ver: region["epoch"]["conf_ver"].as_u64().unwrap(),
                version: region["epoch"]["version"].as_u64().unwrap(),
            }),
            message: timeout_now.write_to_bytes().unwrap(),
            is_tombstone: false,
        }],
    };
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{follower_raft}")).unwrap();
    if let Ok(channel) = plain.connect().await {
        let sent = RaftTransportClient::new(channel).raft(tokio_stream::iter(vec![forged.clone()])).await;
        assert!(sent.is_err(), "plain gRPC to the raft port must fail");
    }
    let pki = &cluster.pki;
    for (who, tls) in [
        ("no client certificate", cluster.client_tls(None, &pki.ca_file, AppProtocol::Grpc)),
        (
            "another CA's certificate",
            cluster.client_tls(Some(&pki.other_client_files), &pki.ca_file, AppProtocol::Grpc),
        ),
    ] {
        let endpoint = fekv::security::tls::grpc::endpoint(&follower_raft, Some(&tls)).unwrap();
        let sent = match fekv::security::tls::grpc::connect(&endpoint, Some(&tls)).await {
            Err(_) => Err(()),
            Ok(channel) => RaftTransportClient::new(channel)
                .raft(tokio_stream::iter(vec![forged.clone()]))
                .await
                .map(drop)
                .map_err(drop),
        };
        assert!(sent.is_err(), "raft port with {who}: the handshake must fail");
    }
    // Three election timeouts (1 s each at the default tick): had it been delivered, the follower
    // would have campaigned at once and won.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(cluster.region()["leader_store_id"].as_u64(), Some(leader_store), "the leader did not change");

    // Placement: plain gRPC gets no answer; no certificate, or another CA's, fails the handshake.
    let placement = &cluster.placement.addr;
    let plain = tonic::transport::Endpoint::from_shared(format!("http://{placement}")).unwrap();
    if let Ok(channel) = plain.connect().await {
        let listed = PlacementClient::new(channel).get_stores(fekv::proto::GetStoresRequest {}).await;
        assert!(listed.is_err(), "plain gRPC to placement must fail: {listed:?}");
    }
    for (who, tls) in [
        ("no client certificate", cluster.client_tls(None, &pki.ca_file, AppProtocol::Grpc)),
        (
            "another CA's certificate",
            cluster.client_tls(Some(&pki.other_client_files), &pki.ca_file, AppProtocol::Grpc),
        ),
    ] {
        let endpoint = fekv::security::tls::grpc::endpoint(placement, Some(&tls)).unwrap();
        let listed = match fekv::security::tls::grpc::connect(&endpoint, Some(&tls)).await {
            Err(_) => Err(()),
            Ok(channel) => {
                PlacementClient::new(channel).get_stores(fekv::proto::GetStoresRequest {}).await.map(drop).map_err(drop)
            }
        };
        assert!(listed.is_err(), "placement with {who}: the handshake must fail");
    }

    // A certified client claiming an existing store id without its secret is refused, logged, and
    // changes nothing.
    let before = cluster.store(follower_store);
    let tls = cluster.client_tls(Some(&pki.client_files), &pki.ca_file, AppProtocol::Grpc);
    let endpoint = fekv::security::tls::grpc::endpoint(placement, Some(&tls)).unwrap();
    let mut client = PlacementClient::new(fekv::security::tls::grpc::connect(&endpoint, Some(&tls)).await.unwrap());
    let claim = RegisterStoreRequest {
        store_id: follower_store,
        raft_addr: "127.0.0.1:39999".into(),
        http_addr: "127.0.0.1:39998".into(),
        version: "forged".into(),
        ..Default::default()
    };
    let refused = client.register_store(claim).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("secret"), "{refused:?}");
    let after = cluster.store(follower_store);
    assert_eq!((&after["raft_addr"], &after["http_addr"]), (&before["raft_addr"], &before["http_addr"]));
    let logged = cluster.placement.stderr_lines();
    assert!(logged.iter().any(|l| l.contains("WARN") && l.contains("refused a store's claim")), "{logged:#?}");

    // fekv ctl reaches the nodes over HTTPS, and fekv bench loads them over HTTPS.
    let health = cluster.ctl(&["cluster", "health"]).unwrap();
    assert_eq!(health.as_array().map(Vec::len), Some(3), "{health}");
    let endpoints: Vec<String> = (0..3).map(|i| cluster.https_base(i)).collect();
    let bench = std::process::Command::new(env!("CARGO_BIN_EXE_fekv"))
        .args(["bench", "--endpoints", &endpoints.join(","), "--cacert", &path(&pki.ca_file)])
        .args(["-c", "4", "-n", "200", "--keys", "50", "--workload", "mixed:0.5"])
        .output()
        .unwrap();
    assert!(bench.status.success(), "bench over HTTPS: {}", String::from_utf8_lossy(&bench.stderr));

    // SIGHUP reloads the certificates; the node keeps serving.
    let pid = cluster.nodes[0].pid().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    eventually(Duration::from_secs(10), "the SIGHUP reload logged", || async {
        cluster.nodes[0].stderr_lines().iter().any(|l| l.contains("SIGHUP: reloading TLS certificates")).then_some(())
    })
    .await;
    let health = format!("{}/health", cluster.https_base(0));
    assert_eq!(send(&https, Method::GET, &health, "").await.unwrap().0, StatusCode::OK);
}

/// etcd's `--peer-cert-allowed-cn` on the raft port and `--client-cert-allowed-cn` on placement: the
/// cluster runs with the allowed names (the nodes' "fekv server", ctl's "fekv client"), and a
/// certificate of the same CA with another name is refused at both, logged at warn with its subject.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_allowed_certificate_names_reach_placement_and_the_raft_port() {
    let cluster = TlsCluster::start_with(
        &["--client-cert-allowed-cn", "fekv server,fekv client"],
        &["--peer-cert-allowed-cn", "fekv server"],
    );
    let pki = &cluster.pki;
    let intruder = pki.ca.issue("intruder").write(pki.dir.path(), "intruder");

    // Placement: ctl with the intruder's certificate gets nothing; with an allowed one it works.
    let refused = cluster.ctl_as(&intruder, &["store", "list"]);
    assert!(refused.is_err(), "{refused:?}");
    assert_eq!(cluster.ctl(&["store", "list"]).unwrap().as_array().map(Vec::len), Some(3));
    let logged = cluster.placement.wait_stderr(Duration::from_secs(10), "the refusal logged", |lines| {
        lines.iter().any(|l| l.contains("WARN") && l.contains("refused a client certificate") && l.contains("intruder"))
    });
    let refusal = logged.iter().find(|l| l.contains("refused a client certificate")).unwrap();
    assert!(refusal.contains("peer=127.0.0.1:"), "the remote address is logged: {refusal}");

    // The raft port: ctl's certificate is allowed on placement, not between stores.
    let raft_addr =
        cluster.store(cluster.region()["leader_store_id"].as_u64().unwrap())["raft_addr"].as_str().unwrap().to_string();
    let tls = cluster.client_tls(Some(&pki.client_files), &pki.ca_file, AppProtocol::Grpc);
    let endpoint = fekv::security::tls::grpc::endpoint(&raft_addr, Some(&tls)).unwrap();
    let sent = match fekv::security::tls::grpc::connect(&endpoint, Some(&tls)).await {
        Err(_) => Err(()),
        Ok(channel) => {
            let batch = RaftMessageBatch { msgs: vec![] };
            RaftTransportClient::new(channel).raft(tokio_stream::iter(vec![batch])).await.map(drop).map_err(drop)
        }
    };
    assert!(sent.is_err(), "a raft connection with CN \"fekv client\" must be refused");
    let logged = eventually(Duration::from_secs(10), "a node logs the refused raft peer", || async {
        cluster.nodes.iter().find_map(|node| {
            let lines = node.stderr_lines();
            lines.iter().any(|l| l.contains("WARN") && l.contains("refused a client certificate")).then_some(lines)
        })
    })
    .await;
    assert!(logged.iter().any(|l| l.contains("CN=fekv client")), "{logged:#?}");
    // Writes still replicate between the allowed stores.
    let https = cluster.https();
    let url = format!("{}/fekv/allowed", cluster.https_base(0));
    let (status, headers, _) = send(&https, Method::PUT, &url, "yes").await.unwrap();
    let status = match headers.get("location") {
        Some(location) => send(&https, Method::PUT, location.to_str().unwrap(), "yes").await.unwrap().0,
        None => status,
    };
    assert!(status.is_success(), "{status}");
}

/// Certificates rotate without a restart: new files are served to new connections after `SIGHUP`, and
/// after a plain file change too (the 5 s watch); the cluster keeps replicating across the rotation
/// (peers and placement accept the new certificates, of the same CN, so stores stay bound).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn certificates_rotate_on_sighup_and_on_file_change_without_a_restart() {
    let cluster = TlsCluster::start();
    let pki = &cluster.pki;
    let connector = TlsConnector::new(cluster.client_tls(None, &pki.ca_file, AppProtocol::Http1));
    let presented = |addr: String| {
        let connector = connector.clone();
        async move {
            let (host, port) = addr.rsplit_once(':').unwrap();
            let io = connector.connect(host, port.parse().unwrap()).await.ok()?;
            Some(io.server_certificates()?[0].to_vec())
        }
    };
    let node = cluster.nodes[0].addr.clone();
    assert_eq!(presented(node.clone()).await, Some(pki.server.der.clone()));

    // SIGHUP: every process shares these files; node 0 is told to reload.
    let rotated = pki.ca.issue("fekv server");
    rotated.write_to(&pki.server_files);
    let pid = cluster.nodes[0].pid().to_string();
    assert!(std::process::Command::new("kill").args(["-HUP", &pid]).status().unwrap().success());
    eventually(Duration::from_secs(10), "node 0 serves the certificate of after SIGHUP", || async {
        (presented(node.clone()).await == Some(rotated.der.clone())).then_some(())
    })
    .await;
    let logged = cluster.nodes[0].stderr_lines();
    assert!(logged.iter().any(|l| l.contains("SIGHUP: reloading TLS certificates")), "{logged:#?}");
    assert!(logged.iter().any(|l| l.contains("TLS certificates reloaded")), "{logged:#?}");

    // No signal: the file watch picks a new certificate up, on a node and on placement.
    let again = pki.ca.issue("fekv server");
    again.write_to(&pki.server_files);
    for (addr, protocol) in
        [(cluster.nodes[1].addr.clone(), AppProtocol::Http1), (cluster.placement.addr.clone(), AppProtocol::Grpc)]
    {
        let tls = cluster.client_tls(Some(&pki.client_files), &pki.ca_file, protocol);
        let grpc = TlsConnector::new(tls);
        eventually(Duration::from_secs(20), "the watched files reloaded", || async {
            let (host, port) = addr.rsplit_once(':').unwrap();
            let io = grpc.connect(host, port.parse().unwrap()).await.ok()?;
            (io.server_certificates()?[0].as_ref() == again.der.as_slice()).then_some(())
        })
        .await;
    }

    // The cluster still works across the rotation: a write lands, and placement still hears the stores.
    let https = cluster.https();
    let url = format!("{}/fekv/rotated", cluster.https_base(0));
    eventually(Duration::from_secs(20), "a write after the rotation", || async {
        let (status, headers, _) = send(&https, Method::PUT, &url, "yes").await.ok()?;
        let status = match headers.get("location") {
            Some(location) => send(&https, Method::PUT, location.to_str().ok()?, "yes").await.ok()?.0,
            None => status,
        };
        status.is_success().then_some(())
    })
    .await;
    let stores = cluster.ctl(&["store", "list"]).unwrap();
    assert!(stores.as_array().unwrap().iter().all(|s| s["state"] == "up"), "{stores}");
}

/// A store is bound to the certificate identity it first registered with (issue 12, item 2): a caller
/// with another certificate of the same CA is refused for that store id even with its secret, in
/// registrations and heartbeats, and logged; the store's own certificate still works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_store_is_bound_to_its_certificate_and_its_secret_alone_does_not_speak_for_it() {
    let pki = TestPki::new();
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, ca) = (path(&pki.server_files.cert), path(&pki.server_files.key), path(&pki.ca_file));
    let placement = FekvProcess::start_placement_with(
        &dir.path().join("placement"),
        1,
        &["--cert-file", &cert, "--key-file", &key, "--trusted-ca-file", &ca],
    );
    let intruder = pki.ca.issue("intruder").write(pki.dir.path(), "intruder");
    let client = |files: &CertFiles| {
        let settings = ClientTlsSettings {
            cacert: pki.ca_file.clone(),
            cert: Some(files.cert.clone()),
            key: Some(files.key.clone()),
        };
        let tls = Arc::new(ClientTls::load(settings, AppProtocol::Grpc).unwrap());
        let addr = placement.addr.clone();
        async move {
            let endpoint = fekv::security::tls::grpc::endpoint(&addr, Some(&tls)).unwrap();
            PlacementClient::new(fekv::security::tls::grpc::connect(&endpoint, Some(&tls)).await.unwrap())
        }
    };
    let mut store = client(&pki.client_files).await;
    let registration = RegisterStoreRequest {
        raft_addr: "127.0.0.1:1".into(),
        http_addr: "127.0.0.1:2".into(),
        version: "test".into(),
        ..Default::default()
    };
    let first = store.register_store(registration.clone()).await.unwrap().into_inner();
    let claim = RegisterStoreRequest {
        store_id: first.store_id,
        cluster_id: first.cluster_id,
        store_secret: first.store_secret.clone(),
        ..registration
    };
    let heartbeat = StoreHeartbeatRequest {
        store_id: first.store_id,
        store_secret: first.store_secret.clone(),
        ..Default::default()
    };

    let mut stranger = client(&intruder).await;
    let refused = stranger.register_store(RegisterStoreRequest { raft_addr: "127.0.0.1:3".into(), ..claim.clone() });
    let refused = refused.await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    assert!(refused.message().contains("identity"), "{refused:?}");
    let refused = stranger.store_heartbeat(heartbeat.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::Unauthenticated, "{refused:?}");
    let logged = placement.wait_stderr(Duration::from_secs(10), "the refusal logged", |lines| {
        lines.iter().any(|l| l.contains("WARN") && l.contains("another identity") && l.contains("intruder"))
    });
    let refusal = logged.iter().find(|l| l.contains("another identity")).unwrap();
    assert!(refusal.contains("bound") && refusal.contains("fekv client"), "both identities are logged: {refusal}");

    // The store itself, with its certificate, still registers and heartbeats; its address is its own.
    store.register_store(claim).await.unwrap();
    store.store_heartbeat(heartbeat).await.unwrap();
    let stores = store.get_stores(fekv::proto::GetStoresRequest {}).await.unwrap().into_inner().stores;
    assert_eq!((stores[0].raft_addr.as_str(), stores[0].cert_identity.as_str()), ("127.0.0.1:1", "fekv client"));
}

/// Auth over TLS: `fekv ctl` sends its TLS flags and its credentials together (to placement and to
/// the nodes' HTTPS `/status`), and a node whose client listener is HTTPS does not warn that
/// passwords cross the network in clear text (a plain one does: `tests/auth_process.rs`).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auth_over_tls_takes_credentials_over_https_and_does_not_warn_of_plain_http() {
    let cluster = TlsCluster::start_with(&["--password-cost", "minimal"], &["--auth-password-cost", "minimal"]);
    cluster.ctl(&["user", "add", "root", "--new-password", "rootpw"]).unwrap();
    cluster.ctl(&["user", "grant-role", "root", "root"]).unwrap();
    cluster.ctl(&["auth", "enable"]).unwrap();

    let https = cluster.https();
    for i in 0..3 {
        let status = format!("{}/status", cluster.https_base(i));
        eventually(Duration::from_secs(20), "every node enforces auth", || async {
            (send(&https, Method::GET, &status, "").await.ok()?.0 == StatusCode::UNAUTHORIZED).then_some(())
        })
        .await;
    }
    // Without --user, placement's listings are refused.
    assert!(cluster.ctl(&["store", "list"]).is_err());
    let nodes = cluster.ctl(&["--user", "root:rootpw", "cluster", "status"]).unwrap();
    let nodes = nodes.as_array().unwrap();
    assert_eq!(nodes.len(), 3, "{nodes:?}");
    assert!(nodes.iter().all(|n| n["state"] == "up" && n["error"].is_null()), "over HTTPS with credentials: {nodes:?}");

    for node in &cluster.nodes {
        let logged = node.wait_stderr(Duration::from_secs(10), "the enabled auth state installed", |lines| {
            lines.iter().any(|l| l.contains("auth state updated") && l.contains("enabled=true"))
        });
        assert!(!logged.iter().any(|l| l.contains("client API is plain HTTP")), "{logged:#?}");
    }
}
