//! TLS building blocks against real sockets on 127.0.0.1, with certificates made by the test: an
//! HTTPS round trip over hyper and a gRPC one over tonic (both mutual), the handshakes that must
//! fail (no client certificate, one from another CA, a server the client does not trust, a name the
//! certificate does not hold), plain HTTP to a TLS port, a silent client, and certificate reloads.

#[path = "common/certs.rs"]
mod certs;
#[allow(dead_code)] // this binary waits, it starts no fixture
#[path = "common/wait.rs"]
mod wait;

use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use certs::{CertFiles, TestPki};
use fekv::proto::raft_transport_client::RaftTransportClient;
use fekv::proto::raft_transport_server::{RaftTransport, RaftTransportServer};
use fekv::proto::{Done, RaftMessage, RaftMessageBatch, SnapshotChunk};
use fekv::security::tls::{
    AcceptorOptions, AllowedNames, AppProtocol, ClientTls, ClientTlsSettings, HandshakeEvent, HandshakeHook, PeerInfo,
    ServerTls, ServerTlsSettings, TlsConnector, TlsIncoming,
};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_stream::StreamExt;
use wait::eventually;

const DEADLINE: Duration = Duration::from_secs(20);

/// Handshake outcomes seen by a listener's hook.
#[derive(Default)]
struct Handshakes([AtomicU64; 4]);

impl Handshakes {
    fn hook(self: &Arc<Self>) -> HandshakeHook {
        let counts = self.clone();
        Arc::new(move |event| {
            counts.0[event as usize].fetch_add(1, Ordering::Relaxed);
        })
    }

    fn count(&self, event: HandshakeEvent) -> u64 {
        self.0[event as usize].load(Ordering::Relaxed)
    }

    /// Waits until `event` has been seen `at_least` times.
    async fn wait_for(&self, event: HandshakeEvent, at_least: u64) {
        let what = format!("{at_least} handshake(s) {}", event.as_str());
        eventually(DEADLINE, &what, || async { self.count(event) >= at_least }).await;
    }
}

fn server_tls(files: &CertFiles, ca: Option<&Path>, client_cert_auth: bool, protocol: AppProtocol) -> Arc<ServerTls> {
    let settings = ServerTlsSettings {
        cert_file: files.cert.clone(),
        key_file: files.key.clone(),
        trusted_ca_file: ca.map(Path::to_path_buf),
        client_cert_auth,
    };
    Arc::new(ServerTls::load(settings, protocol).expect("server TLS config"))
}

fn connector(ca: &Path, client: Option<&CertFiles>, protocol: AppProtocol) -> TlsConnector {
    let settings = ClientTlsSettings {
        cacert: ca.to_path_buf(),
        cert: client.map(|files| files.cert.clone()),
        key: client.map(|files| files.key.clone()),
    };
    TlsConnector::new(Arc::new(ClientTls::load(settings, protocol).expect("client TLS config")))
}

/// The certificates (leaf DER) clients presented, one entry per established connection.
type SeenPeers = Arc<Mutex<Vec<Option<Vec<u8>>>>>;

/// An HTTPS server on 127.0.0.1 answering every request `200 hello over TLS`.
async fn https_server(tls: Arc<ServerTls>, options: AcceptorOptions) -> (SocketAddr, SeenPeers) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = SeenPeers::default();
    let mut incoming = TlsIncoming::new(listener, tls, options);
    let recorded = seen.clone();
    tokio::spawn(async move {
        while let Some(Ok(stream)) = incoming.next().await {
            let leaf = stream.peer().certificates.as_ref().map(|certs| certs[0].to_vec());
            recorded.lock().push(leaf);
            let service = hyper::service::service_fn(|_req: Request<hyper::body::Incoming>| async {
                Ok::<_, std::convert::Infallible>(Response::new(Full::new(Bytes::from_static(b"hello over TLS"))))
            });
            tokio::spawn(hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service));
        }
    });
    (addr, seen)
}

/// `GET https://127.0.0.1:port/` through hyper-util's client over `connector`.
async fn get(connector: &TlsConnector, addr: SocketAddr) -> Result<(StatusCode, String), String> {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build(connector.clone());
    let uri = format!("https://127.0.0.1:{}/", addr.port()).parse::<hyper::Uri>().unwrap();
    let response = tokio::time::timeout(DEADLINE, client.get(uri)).await.map_err(|_| "timed out".to_string())?;
    let response = response.map_err(|err| format!("{err:?}"))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|err| err.to_string())?.to_bytes();
    Ok((status, String::from_utf8_lossy(&body).into_owned()))
}

/// The leaf certificate a new connection to `addr` is shown.
async fn presented_certificate(connector: &TlsConnector, addr: SocketAddr) -> Vec<u8> {
    let io = connector.connect("127.0.0.1", addr.port()).await.expect("TLS connect");
    io.server_certificates().expect("the server presents a certificate")[0].to_vec()
}

#[tokio::test]
async fn https_round_trip_over_hyper_with_mutual_tls() {
    let pki = TestPki::new();
    let tls = server_tls(&pki.server_files, Some(&pki.ca_file), true, AppProtocol::Http1);
    let (addr, seen) = https_server(tls, AcceptorOptions::default()).await;
    let client = connector(&pki.ca_file, Some(&pki.client_files), AppProtocol::Http1);
    assert_eq!(get(&client, addr).await, Ok((StatusCode::OK, "hello over TLS".into())));
    // The server saw the client's certificate: what a later step binds a store's identity to.
    let client_cert = der_of_pem(&std::fs::read(&pki.client_files.cert).unwrap());
    assert_eq!(seen.lock().as_slice(), &[Some(client_cert)]);
}

/// The DER inside a one-certificate PEM file.
fn der_of_pem(pem: &[u8]) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::from_pem_slice(pem).unwrap().to_vec()
}

/// A raft transport that counts the messages it is sent and remembers each caller's certificate.
#[derive(Default, Clone)]
struct CountingTransport {
    messages: Arc<AtomicU64>,
    peers: SeenPeers,
}

#[tonic::async_trait]
impl RaftTransport for CountingTransport {
    async fn raft(
        &self,
        request: tonic::Request<tonic::Streaming<RaftMessageBatch>>,
    ) -> Result<tonic::Response<Done>, tonic::Status> {
        let peer = request.extensions().get::<PeerInfo>().expect("a TLS connection's requests carry its PeerInfo");
        let leaf = peer.certificates.as_ref().map(|certs| certs[0].to_vec());
        self.peers.lock().push(leaf);
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            self.messages.fetch_add(batch.msgs.len() as u64, Ordering::Relaxed);
        }
        Ok(tonic::Response::new(Done {}))
    }

    async fn snapshot(
        &self,
        _: tonic::Request<tonic::Streaming<SnapshotChunk>>,
    ) -> Result<tonic::Response<Done>, tonic::Status> {
        Err(tonic::Status::unimplemented("not in this test"))
    }
}

#[tokio::test]
async fn grpc_round_trip_over_tonic_with_mutual_tls_and_the_peer_certificate_in_the_request() {
    let pki = TestPki::new();
    let tls = server_tls(&pki.server_files, Some(&pki.ca_file), true, AppProtocol::Grpc);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let transport = CountingTransport::default();
    let incoming = TlsIncoming::new(listener, tls, AcceptorOptions::default());
    let service = RaftTransportServer::new(transport.clone());
    tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming));

    let endpoint = tonic::transport::Endpoint::from_shared(format!("https://127.0.0.1:{port}")).unwrap();
    let channel = endpoint
        .connect_with_connector(connector(&pki.ca_file, Some(&pki.client_files), AppProtocol::Grpc))
        .await
        .expect("gRPC over TLS connects");
    let batch = RaftMessageBatch { msgs: vec![RaftMessage { region_id: 7, ..Default::default() }; 3] };
    RaftTransportClient::new(channel).raft(tokio_stream::iter(vec![batch.clone(), batch])).await.expect("raft RPC");
    assert_eq!(transport.messages.load(Ordering::Relaxed), 6);
    let client_cert = der_of_pem(&std::fs::read(&pki.client_files.cert).unwrap());
    assert_eq!(transport.peers.lock().as_slice(), &[Some(client_cert)]);
}

#[tokio::test]
async fn a_client_without_a_certificate_or_with_another_cas_fails_the_handshake_when_client_auth_is_required() {
    let pki = TestPki::new();
    let handshakes = Arc::new(Handshakes::default());
    let tls = server_tls(&pki.server_files, Some(&pki.ca_file), true, AppProtocol::Http1);
    let options = AcceptorOptions { hook: Some(handshakes.hook()), ..AcceptorOptions::default() };
    let (addr, seen) = https_server(tls, options).await;
    let anonymous = connector(&pki.ca_file, None, AppProtocol::Http1);
    let stranger = connector(&pki.ca_file, Some(&pki.other_client_files), AppProtocol::Http1);
    for (who, client) in [("no certificate", anonymous), ("another CA's certificate", stranger)] {
        let result = get(&client, addr).await;
        assert!(result.is_err(), "{who}: {result:?}");
    }
    handshakes.wait_for(HandshakeEvent::Failed, 2).await;
    assert_eq!(handshakes.count(HandshakeEvent::Completed), 0);
    assert!(seen.lock().is_empty(), "no connection reached the server");
    // A proper client still gets in.
    let client = connector(&pki.ca_file, Some(&pki.client_files), AppProtocol::Http1);
    assert_eq!(get(&client, addr).await.map(|(status, _)| status), Ok(StatusCode::OK));
}

/// etcd's `--peer-cert-allowed-cn` / `--peer-cert-allowed-hostname`: a certificate the CA signed is
/// not enough when the listener names who may connect; the others are refused after the handshake,
/// before the first request.
#[tokio::test]
async fn with_allowed_names_only_a_certificate_carrying_one_gets_in() {
    let pki = TestPki::new();
    let dir = pki.dir.path();
    let node = pki.ca.issue_for("node-1", &["127.0.0.1", "node-1.fekv.internal"]).write(dir, "node-1");
    let intruder = pki.ca.issue_for("intruder", &["127.0.0.1", "intruder.fekv.internal"]).write(dir, "intruder");
    for allowed in [
        AllowedNames::new(&["node-1".into(), "node-2".into()], &[]),
        AllowedNames::new(&[], &["node-1.fekv.internal".into()]),
    ] {
        let handshakes = Arc::new(Handshakes::default());
        let tls = server_tls(&pki.server_files, Some(&pki.ca_file), true, AppProtocol::Http1);
        let options = AcceptorOptions {
            hook: Some(handshakes.hook()),
            allowed: Some(Arc::new(allowed.clone())),
            ..AcceptorOptions::default()
        };
        let (addr, seen) = https_server(tls, options).await;
        let refused = get(&connector(&pki.ca_file, Some(&intruder), AppProtocol::Http1), addr).await;
        assert!(refused.is_err(), "{allowed:?}: a certificate of the same CA without an allowed name: {refused:?}");
        handshakes.wait_for(HandshakeEvent::Refused, 1).await;
        assert!(seen.lock().is_empty(), "{allowed:?}: the refused connection never reached the server");
        let admitted = get(&connector(&pki.ca_file, Some(&node), AppProtocol::Http1), addr).await;
        assert_eq!(admitted.map(|(status, _)| status), Ok(StatusCode::OK), "{allowed:?}");
        assert_eq!(handshakes.count(HandshakeEvent::Refused), 1);
    }
}

#[tokio::test]
async fn without_client_auth_a_client_needs_no_certificate() {
    let pki = TestPki::new();
    let tls = server_tls(&pki.server_files, None, false, AppProtocol::Http1);
    let (addr, seen) = https_server(tls, AcceptorOptions::default()).await;
    let anonymous = connector(&pki.ca_file, None, AppProtocol::Http1);
    assert_eq!(get(&anonymous, addr).await.map(|(status, _)| status), Ok(StatusCode::OK));
    assert_eq!(seen.lock().as_slice(), &[None]);
}

#[tokio::test]
async fn a_client_refuses_a_server_its_ca_did_not_sign_or_whose_certificate_lacks_the_address() {
    let pki = TestPki::new();
    let (addr, _) =
        https_server(server_tls(&pki.server_files, None, false, AppProtocol::Http1), AcceptorOptions::default()).await;
    let distrustful = connector(&pki.other_ca_file, None, AppProtocol::Http1);
    let err = distrustful.connect("127.0.0.1", addr.port()).await.err().expect("an untrusted server is refused");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // A certificate for the name `localhost` only: good as `localhost`, refused as `127.0.0.1`.
    let named_only = pki.ca.issue_for("named", &["localhost"]).write(pki.dir.path(), "named");
    let (addr, _) =
        https_server(server_tls(&named_only, None, false, AppProtocol::Http1), AcceptorOptions::default()).await;
    let client = connector(&pki.ca_file, None, AppProtocol::Http1);
    let err = client.connect("127.0.0.1", addr.port()).await.err().expect("no IP SAN for 127.0.0.1");
    assert!(err.to_string().contains("not valid for name \"127.0.0.1\""), "{err}");
    client.connect("localhost", addr.port()).await.expect("the DNS SAN matches");
}

#[tokio::test]
async fn plain_http_to_the_tls_listener_gets_no_http_response() {
    let pki = TestPki::new();
    let handshakes = Arc::new(Handshakes::default());
    let tls = server_tls(&pki.server_files, None, false, AppProtocol::Http1);
    let options = AcceptorOptions { hook: Some(handshakes.hook()), ..AcceptorOptions::default() };
    let (addr, seen) = https_server(tls, options).await;
    let mut plain = tokio::net::TcpStream::connect(addr).await.unwrap();
    plain.write_all(b"GET /fekv/k HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n").await.unwrap();
    let mut answer = Vec::new();
    let read = tokio::time::timeout(DEADLINE, plain.read_to_end(&mut answer)).await.expect("the server closes");
    // Either a TLS alert and a close, or a reset: never an HTTP status line.
    assert!(read.is_err() || !answer.starts_with(b"HTTP/"), "{:?}", String::from_utf8_lossy(&answer));
    handshakes.wait_for(HandshakeEvent::Failed, 1).await;
    assert!(seen.lock().is_empty());
}

#[tokio::test]
async fn a_silent_client_is_dropped_at_the_handshake_timeout_and_delays_nobody() {
    let pki = TestPki::new();
    let handshakes = Arc::new(Handshakes::default());
    let tls = server_tls(&pki.server_files, None, false, AppProtocol::Http1);
    let options = AcceptorOptions {
        handshake_timeout: Duration::from_millis(300),
        hook: Some(handshakes.hook()),
        ..AcceptorOptions::default()
    };
    let (addr, _) = https_server(tls, options).await;
    let mut silent = tokio::net::TcpStream::connect(addr).await.unwrap();
    // Served while the silent one is still waiting.
    let client = connector(&pki.ca_file, None, AppProtocol::Http1);
    assert_eq!(get(&client, addr).await.map(|(status, _)| status), Ok(StatusCode::OK));
    handshakes.wait_for(HandshakeEvent::TimedOut, 1).await;
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(DEADLINE, silent.read_to_end(&mut rest)).await.expect("closed by the server");
    assert!(closed.is_err() || rest.is_empty());
}

#[tokio::test]
async fn a_changed_certificate_is_served_to_new_connections_and_open_ones_keep_working() {
    let pki = TestPki::new();
    let tls = server_tls(&pki.server_files, None, false, AppProtocol::Http1);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(tls.clone().watch(Duration::from_millis(100), async move {
        let _ = stop_rx.await;
    }));
    let (addr, _) = https_server(tls.clone(), AcceptorOptions::default()).await;
    let client = connector(&pki.ca_file, None, AppProtocol::Http1);
    assert_eq!(presented_certificate(&client, addr).await, pki.server.der);

    // A connection opened before the rotation.
    let io = client.connect("127.0.0.1", addr.port()).await.unwrap();
    let (mut open, conn) = hyper::client::conn::http1::handshake::<_, Empty<Bytes>>(io).await.unwrap();
    tokio::spawn(conn);

    let rotated = pki.ca.issue("rotated server");
    rotated.write_to(&pki.server_files);
    eventually(DEADLINE, "the watcher to serve the new certificate", || async {
        presented_certificate(&client, addr).await == rotated.der
    })
    .await;
    assert_eq!(tls.generation(), 2);
    let request = Request::get("/").header("host", "127.0.0.1").body(Empty::new()).unwrap();
    assert_eq!(open.send_request(request).await.expect("the open connection still works").status(), StatusCode::OK);
    stop_tx.send(()).unwrap();
}

#[tokio::test]
async fn a_broken_certificate_on_reload_keeps_the_old_one_in_service() {
    let pki = TestPki::new();
    let tls = server_tls(&pki.server_files, None, false, AppProtocol::Http1);
    let (addr, _) = https_server(tls.clone(), AcceptorOptions::default()).await;
    let client = connector(&pki.ca_file, None, AppProtocol::Http1);
    std::fs::write(&pki.server_files.cert, "-----BEGIN CERTIFICATE-----\ngarbage\n-----END CERTIFICATE-----\n")
        .unwrap();
    let err = tls.reload().expect_err("a broken certificate is refused");
    assert!(err.to_string().contains("server.crt"), "{err}");
    assert_eq!(presented_certificate(&client, addr).await, pki.server.der);
    assert_eq!(get(&client, addr).await.map(|(status, _)| status), Ok(StatusCode::OK));
}

#[tokio::test]
async fn a_reloaded_client_certificate_is_presented_from_the_next_connection() {
    let pki = TestPki::new();
    let tls = server_tls(&pki.server_files, Some(&pki.ca_file), true, AppProtocol::Http1);
    let (addr, seen) = https_server(tls, AcceptorOptions::default()).await;
    let settings = ClientTlsSettings {
        cacert: pki.ca_file.clone(),
        cert: Some(pki.client_files.cert.clone()),
        key: Some(pki.client_files.key.clone()),
    };
    let client_tls = Arc::new(ClientTls::load(settings, AppProtocol::Http1).unwrap());
    let client = TlsConnector::new(client_tls.clone());
    assert_eq!(get(&client, addr).await.map(|(status, _)| status), Ok(StatusCode::OK));
    let renewed = pki.ca.issue("fekv client, renewed");
    renewed.write_to(&pki.client_files);
    assert_eq!(client_tls.reload().unwrap(), fekv::security::tls::Reloaded::Applied);
    assert_eq!(get(&client, addr).await.map(|(status, _)| status), Ok(StatusCode::OK));
    let seen = seen.lock();
    assert_eq!(seen.len(), 2);
    assert_ne!(seen[0], seen[1], "the first connection showed the old certificate");
    assert_eq!(seen[1].as_deref(), Some(renewed.der.as_slice()));
}
