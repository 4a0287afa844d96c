//! Wiring of one node: open the LMDB environment, bootstrap it on first start, start the raftstore
//! thread, and serve the REST API until shut down.
//!
//! In this single-node form the node is store 1 and bootstraps region 1 (the whole keyspace) with
//! itself as its only peer; it is an ordinary one-voter raft group, so adding peers later changes the
//! membership, not the code path.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use tokio::net::TcpListener;

use crate::api::connections::{default_max_connections, fd_reserve};
use crate::api::{self, ApiState};
use crate::cluster_link::{self, AddressBook, LinkError, PlacementLink, StoreIdentity};
use crate::config::{Config, ConfigError};
use crate::dir_lock::{DirLock, LockError};
use crate::ids::FileIdAllocator;
use crate::metrics::Metrics;
use crate::panics::PanicReport;
use crate::proto::{Peer, Region, RegionEpoch, StoreIdent};
use crate::raftstore::peer::PeerConfig;
use crate::raftstore::peer_storage::PeerStorage;
use crate::raftstore::store::{self, StoreConfig};
use crate::raftstore::{RaftstoreExit, RaftstoreHandle, Router};
use crate::security::node_auth::{self, NodeAuth, NodeAuthError, NodeAuthOptions};
use crate::security::runtime::TlsSet;
use crate::security::tls::{AcceptorOptions, AppProtocol, ClientTls, ServerTls, TlsError, TlsIncoming};
use crate::storage::scrub::background::{ScrubSchedule, Scrubber};
use crate::storage::{Engine, EngineOptions, StorageError};
use crate::transport::grpc::{GrpcTransport, RaftTransportService, SnapshotLimits, FIRST_BYTE_TIMEOUT};

mod format;
pub use format::FORMAT_VERSION;

const FIRST_STORE_ID: u64 = 1;
const FIRST_REGION_ID: u64 = 1;
const FIRST_PEER_ID: u64 = 1;
/// Ticks between a leader's split checks (1 s at the default tick).
const SPLIT_CHECK_TICKS: u64 = 10;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot open the data directory {dir}: {source}")]
    Open { dir: String, source: StorageError },
    #[error(
        "data directory {dir} has format version {found}; this fekv reads version {FORMAT_VERSION} only (it \
         upgrades version 2 in place): run the \
         fekv that wrote it, or move the directory away and start with an empty one (in a cluster, the store then \
         joins as a new one and its replicas are rebuilt from their peers)"
    )]
    Format { dir: String, found: u32 },
    #[error("cannot read {path}: {source}")]
    Io { path: String, source: std::io::Error },
    #[error(transparent)]
    Locked(#[from] LockError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(transparent)]
    Placement(#[from] LinkError),
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Auth(#[from] NodeAuthError),
    #[error("the raftstore thread died ({0}); exiting so that a supervisor can restart the node")]
    RaftstoreDied(PanicReport),
    #[error(transparent)]
    Tls(#[from] TlsError),
}

/// The node's loaded TLS configurations (see `docs/security.md`); all `None` without TLS flags.
#[derive(Default)]
pub struct NodeTls {
    /// The REST API's listener.
    pub api: Option<Arc<ServerTls>>,
    /// The raft listener's (client certificates required).
    pub peer_server: Option<Arc<ServerTls>>,
    /// Connections to other stores and to placement (presenting the peer certificate).
    pub peer_client: Option<Arc<ClientTls>>,
}

impl NodeTls {
    /// Loads every configuration `config` asks for into `set`, which keeps them fresh.
    pub fn load(config: &Config, set: &mut TlsSet) -> Result<NodeTls, TlsError> {
        let api = config.tls.client_listener()?.map(|s| set.server(s, AppProtocol::Http1)).transpose()?;
        let (peer_server, peer_client) = match config.tls.peer()? {
            None => (None, None),
            Some(peer) => (
                Some(set.server(peer.server(), AppProtocol::Grpc)?),
                Some(set.client(peer.client(), AppProtocol::Grpc)?),
            ),
        };
        Ok(NodeTls { api, peer_server, peer_client })
    }
}

/// A running node: the raftstore thread and what the API needs.
pub struct Node {
    state: Arc<ApiState>,
    raftstore: RaftstoreHandle,
    /// Held until the node is dropped, after its raftstore has stopped writing.
    _dir_lock: DirLock,
}

/// Writes store 1 and region 1 (the whole keyspace, with this store as its only peer) into a fresh
/// environment; reads the identity back on later starts.
pub fn bootstrap_if_needed(engine: &Engine) -> Result<StoreIdent, StorageError> {
    let region = Region {
        region_id: FIRST_REGION_ID,
        start_key: Vec::new(),
        end_key: Vec::new(),
        epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }),
        peers: vec![Peer { peer_id: FIRST_PEER_ID, store_id: FIRST_STORE_ID }],
    };
    bootstrap_store(engine, rand::random(), FIRST_STORE_ID, Some(&region))
}

/// Gives a fresh environment its identity and, if given, the first region (with its initial raft
/// state), in one transaction. An environment that already has an identity is left as it is: a
/// restarted store never bootstraps again.
pub fn bootstrap_store(
    engine: &Engine,
    cluster_id: u64,
    store_id: u64,
    initial_region: Option<&Region>,
) -> Result<StoreIdent, StorageError> {
    let txn = engine.read_txn()?;
    if let Some(ident) = engine.store_ident(&txn)? {
        return Ok(ident);
    }
    drop(txn);
    let ident = StoreIdent { cluster_id, store_id, format_version: FORMAT_VERSION, ..Default::default() };
    let mut txn = engine.write_txn()?;
    engine.put_store_ident(&mut txn, &ident)?;
    engine.put_format_version(&mut txn, FORMAT_VERSION)?;
    if let Some(region) = initial_region {
        PeerStorage::write_initial_state(engine, &mut txn, region)?;
    }
    engine.commit(txn)?;
    tracing::info!(store_id, cluster_id, region = ?initial_region.map(|r| r.region_id), "bootstrapped a new store");
    Ok(ident)
}

/// The raftstore's settings from the node's configuration.
pub fn store_config(config: &Config, store_id: u64) -> StoreConfig {
    StoreConfig {
        store_id,
        tick_interval: config.raft_tick_interval,
        peer: PeerConfig {
            election_ticks: config.raft_election_ticks,
            heartbeat_ticks: config.raft_heartbeat_ticks,
            log_gc_threshold: config.raft_log_gc_threshold,
        },
        max_batch: config.raftstore_max_batch,
        write_reserve: config.write_reserve(),
        disk_reserve: config.disk_reserve(),
        inbox_capacity: 4 * config.raftstore_max_batch,
        request_timeout: config.request_timeout,
        region_max_size: config.region_max_size.as_u64(),
        split_check_ticks: SPLIT_CHECK_TICKS,
        apply_delay: config.raft_apply_delay,
        inline_commit: config.raftstore_inline_commit,
    }
}

/// The LMDB options from the node's configuration.
pub fn engine_options(config: &Config, metrics: &Metrics) -> EngineOptions {
    EngineOptions {
        map_size: config.map_size.as_u64(),
        max_readers: config.max_readers,
        checksum_failures: metrics.storage_checksum_failures.clone(),
    }
}

impl Node {
    /// Opens storage and starts the raftstore of a single node: store 1, bootstrapping region 1 with
    /// itself as the only peer. The API is served separately with [`Node::serve`].
    pub fn start(config: &Config) -> Result<Node, NodeError> {
        let metrics = Arc::new(Metrics::new());
        let (dir_lock, engine) = open_engine(config, &metrics)?;
        let auth = open_auth(config, &engine, &metrics)?;
        let ident = check_format(config, bootstrap_if_needed(&engine)?)?;
        let store_cfg = store_config(config, ident.store_id);
        let inbox = store::inbox(&store_cfg);
        // A single node has no peers to talk to, and allocates its own ids (above the bootstrap's).
        let transport = Box::new(crate::raftstore::transport::Unconnected);
        let ids =
            FileIdAllocator::open(&config.data_dir, FIRST_PEER_ID.max(FIRST_REGION_ID) + 1).map_err(|source| {
                NodeError::Io { path: config.data_dir.join(crate::ids::ID_FILE).display().to_string(), source }
            })?;
        let (router, handle) =
            store::start(store_cfg, engine.clone(), metrics.clone(), transport, inbox, Arc::new(ids))?;
        let http_addr = config.advertise_http_addr.clone().unwrap_or_else(|| config.http_addr.to_string());
        Ok(Node::assemble(config, ident.store_id, (router, handle), (engine, auth), dir_lock, metrics, None, http_addr))
    }

    /// Opens storage and starts the raftstore of a cluster member: registers with the placement
    /// service at `placement` (a new store gets its id there), and talks to the other stores over gRPC.
    /// `raft_addr` and `http_addr` (`host:port`) are the addresses other stores and clients use to
    /// reach this one: registered with placement, and where other nodes redirect to.
    pub async fn start_clustered(
        config: &Config,
        link: &PlacementLink,
        raft_addr: &str,
        http_addr: &str,
        peer_tls: Option<Arc<ClientTls>>,
        shutdown: tokio::sync::watch::Receiver<bool>,
    ) -> Result<(Node, StoreIdentity), NodeError> {
        let metrics = Arc::new(Metrics::new());
        let (dir_lock, engine) = open_engine(config, &metrics)?;
        let auth = open_auth(config, &engine, &metrics)?;
        let txn = engine.read_txn()?;
        let known = engine.store_ident(&txn)?.map_or_else(StoreIdentity::default, |ident| StoreIdentity {
            store_id: ident.store_id,
            cluster_id: ident.cluster_id,
            secret: ident.store_secret,
        });
        drop(txn);
        let identity = cluster_link::register(link, &known, (raft_addr, http_addr), &auth, shutdown).await?;
        // A store bootstraps only its identity; its first region comes from placement.
        let ident = bootstrap_store(&engine, identity.cluster_id, identity.store_id, None)?;
        let ident = check_format(config, save_store_secret(&engine, ident, &identity.secret)?)?;
        let store_cfg = store_config(config, ident.store_id);
        let inbox = store::inbox(&store_cfg);
        let addresses = Arc::new(AddressBook::default());
        let transport = Box::new(
            GrpcTransport::new(tokio::runtime::Handle::current(), addresses.clone(), inbox.0.clone(), metrics.clone())
                .with_tls(peer_tls),
        );
        let ids =
            Arc::new(crate::cluster_link::ids::PlacementIds::new(link.clone(), tokio::runtime::Handle::current()));
        let (router, handle) = store::start(store_cfg, engine.clone(), metrics.clone(), transport, inbox, ids)?;
        let mut node = Node::assemble(
            config,
            ident.store_id,
            (router, handle),
            (engine, auth),
            dir_lock,
            metrics,
            Some(addresses),
            http_addr.to_string(),
        );
        Arc::get_mut(&mut node.state).expect("not shared yet").region_cache =
            Some(Arc::new(cluster_link::RegionCache::default()));
        Ok((node, identity))
    }

    #[allow(clippy::too_many_arguments)]
    fn assemble(
        config: &Config,
        store_id: u64,
        (router, handle): (Router, RaftstoreHandle),
        (engine, auth): (Engine, Arc<NodeAuth>),
        dir_lock: DirLock,
        metrics: Arc<Metrics>,
        addresses: Option<Arc<AddressBook>>,
        http_addr: String,
    ) -> Node {
        let scrubber = Scrubber::start(engine.clone(), scrub_schedule(config), metrics.storage_scrub.clone());
        let state = Arc::new(ApiState {
            router,
            scrubber,
            engine,
            metrics,
            max_value_size: config.max_value_size.as_u64(),
            store_id,
            http_addr,
            url_scheme: if config.tls.cert_file.is_some() { "https" } else { "http" },
            started: Instant::now(),
            addresses,
            region_cache: None,
            request_timeout: config.request_timeout,
            http: http_limits(config),
            auth,
        });
        Node { state, raftstore: handle, _dir_lock: dir_lock }
    }

    pub fn router(&self) -> &Router {
        &self.state.router
    }

    pub fn engine(&self) -> &Engine {
        &self.state.engine
    }

    pub fn store_id(&self) -> u64 {
        self.state.store_id
    }

    /// What the REST API serves from (for running [`api::serve`] on a task of one's own).
    pub fn api_state(&self) -> Arc<ApiState> {
        self.state.clone()
    }

    /// Serves the REST API on `listener` (a `TcpListener`, or a `TlsIncoming` for HTTPS) until
    /// `shutdown` resolves.
    pub async fn serve(&self, listener: impl api::Acceptor, shutdown: impl Future<Output = ()>) {
        api::serve(listener, self.state.clone(), shutdown).await;
    }

    /// Resolves once the raftstore thread has ended, saying how. A node without its raftstore
    /// serves nothing but errors: an owner that sees it die (`Panicked`) should stop the node and
    /// let the process end, so that a supervisor restarts it.
    pub fn raftstore_exited(&self) -> impl Future<Output = RaftstoreExit> + Send + 'static {
        self.raftstore.exited()
    }

    /// Stops the raftstore after its current round and says how it ended (it may have died
    /// before). Data already acknowledged is durable; nothing else needs flushing.
    pub fn stop(self) -> RaftstoreExit {
        self.state.router.shutdown();
        self.raftstore.join()
    }
}

/// Locks the data directory (one process per directory, see [`crate::dir_lock`]), then opens the
/// environment, refusing one written in another format before anything reads it.
fn open_engine(config: &Config, metrics: &Metrics) -> Result<(DirLock, Engine), NodeError> {
    let lock = DirLock::acquire(&config.data_dir)?;
    let engine = Engine::open(&config.data_dir, &engine_options(config, metrics))
        .map_err(|source| NodeError::Open { dir: config.data_dir.display().to_string(), source })?;
    match format::upgrade(&engine)? {
        format::Found::Other(found) => Err(NodeError::Format { dir: config.data_dir.display().to_string(), found }),
        format::Found::Current => Ok((lock, engine)),
    }
}

/// The node's auth state as it last received it (see [`crate::security::node_auth`]).
fn open_auth(config: &Config, engine: &Engine, metrics: &Arc<Metrics>) -> Result<Arc<NodeAuth>, NodeError> {
    Ok(Arc::new(NodeAuth::open(engine.clone(), auth_options(config)?, metrics.auth_logins.clone())?))
}

fn auth_options(config: &Config) -> Result<NodeAuthOptions, NodeError> {
    let password_cost = node_auth::parse_password_cost(&config.auth_password_cost)
        .map_err(|reason| ConfigError::Invalid { name: "auth_password_cost", reason })?;
    // The REST API listens with TLS exactly when these settings exist (`NodeTls::load`): without
    // them auth warns that passwords and tokens cross the network in the clear.
    let client_tls = config.tls.client_listener()?.is_some();
    Ok(NodeAuthOptions { token_ttl: config.auth_token_ttl, password_cost, client_tls })
}

/// What the raft transport accepts from snapshot senders, from the node's configuration.
pub fn snapshot_limits(config: &Config) -> SnapshotLimits {
    SnapshotLimits {
        max_size: config.snapshot_max_size.as_u64(),
        max_receiving: config.snapshot_max_receiving,
        idle_timeout: config.snapshot_recv_timeout,
        spill_dir: config.data_dir.join("snapshots-incoming"),
    }
}

/// The background scrub's schedule from the node's configuration.
pub fn scrub_schedule(config: &Config) -> ScrubSchedule {
    ScrubSchedule {
        interval: (!config.scrub_interval.is_zero()).then_some(config.scrub_interval),
        rate: config.scrub_rate.as_u64(),
    }
}

/// Keeps the secret placement gave this store with its identity, when it is a new one.
fn save_store_secret(engine: &Engine, ident: StoreIdent, secret: &[u8]) -> Result<StoreIdent, StorageError> {
    if ident.store_secret == secret {
        return Ok(ident);
    }
    let ident = StoreIdent { store_secret: secret.to_vec(), ..ident };
    let mut txn = engine.write_txn()?;
    engine.put_store_ident(&mut txn, &ident)?;
    engine.commit(txn)?;
    tracing::info!(store_id = ident.store_id, "kept the store secret placement gave this store");
    Ok(ident)
}

fn check_format(config: &Config, ident: StoreIdent) -> Result<StoreIdent, NodeError> {
    if ident.format_version != FORMAT_VERSION {
        return Err(NodeError::Format { dir: config.data_dir.display().to_string(), found: ident.format_version });
    }
    Ok(ident)
}

/// The REST server's limits, with the connection cap resolved against the open-file limit.
fn http_limits(config: &Config) -> api::Limits {
    let open_files = crate::fd_limit::open_file_limit().map(|(soft, _)| soft).unwrap_or(1024);
    let max_connections = match config.http_max_connections {
        0 => default_max_connections(open_files),
        configured => {
            let room = open_files.saturating_sub(fd_reserve(open_files));
            if configured as u64 > room {
                tracing::warn!(
                    http_max_connections = configured,
                    open_file_limit = open_files,
                    room,
                    "http_max_connections leaves less than the descriptor reserve for the node's own files; \
                     raise the open-file limit (ulimit -n) or lower the setting"
                );
            }
            configured
        }
    };
    api::Limits {
        header_timeout: config.http_header_timeout,
        body_timeout: config.http_body_timeout,
        idle_timeout: config.http_idle_timeout,
        max_connections,
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, NodeError> {
    TcpListener::bind(addr).await.map_err(|source| NodeError::Listen { addr, source })
}

/// Runs a node with `config` until `shutdown` resolves, or until its raftstore dies (then the node
/// stops and the error says why): alone, or as a cluster member when `config.placement` is set.
pub async fn run(mut config: Config, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), NodeError> {
    // Every certificate is read before anything listens: a bad file stops the node, naming it.
    let mut tls_set = TlsSet::default();
    let tls = NodeTls::load(&config, &mut tls_set)?;
    let http_listener = bind(config.http_addr).await?;
    let http_addr =
        http_listener.local_addr().map_err(|source| NodeError::Listen { addr: config.http_addr, source })?;
    // The port really bound, when asked for port 0.
    config.http_addr = http_addr;
    // One shutdown signal, watched by every server and background task: the caller's, or the
    // raftstore's death (a node cannot serve without it).
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (raftstore_died, raftstore_death) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::select! {
            () = shutdown => {}
            _ = raftstore_death => {}
        }
        let _ = stop_tx.send(true);
    });
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|stop| *stop).await;
    };
    tls_set.keep_fresh(stop_rx.clone());
    let node = match &config.placement {
        None => Node::start(&config)?,
        Some(placement) => {
            let raft_listener = bind(config.raft_addr).await?;
            let raft_addr =
                raft_listener.local_addr().map_err(|source| NodeError::Listen { addr: config.raft_addr, source })?;
            // What others are told to connect to; never 0.0.0.0 or ::.
            let advertised_raft = config.advertised_raft_addr(raft_addr)?;
            let advertised_http = config.advertised_http_addr(http_addr)?;
            let link = cluster_link::link(placement, tls.peer_client.as_ref())?;
            let started = Node::start_clustered(
                &config,
                &link,
                &advertised_raft,
                &advertised_http,
                tls.peer_client.clone(),
                stop_rx.clone(),
            );
            let (node, identity) = match started.await {
                Ok(started) => started,
                // Ctrl-C or SIGTERM while placement could not be reached: a clean stop.
                Err(NodeError::Placement(LinkError::Stopped)) => {
                    tracing::info!(placement = %link.addrs_text(), "stopped before registering with placement");
                    return Ok(());
                }
                Err(err) => return Err(err),
            };
            let service = RaftTransportService::new(node.router().raft_inbox(), snapshot_limits(&config));
            let raft_stopped = stopped(stop_rx.clone());
            let server = tonic::transport::Server::builder().add_service(service);
            let served = match &tls.peer_server {
                // Mutual TLS: a connection without a certificate of the cluster's CA never gets
                // as far as a raft message.
                Some(peer_tls) => {
                    let options = AcceptorOptions {
                        hook: Some(node.state.metrics.handshake_hook("peer")),
                        allowed: Some(Arc::new(config.tls.peer_allowed())),
                        ..AcceptorOptions::default()
                    };
                    let incoming = TlsIncoming::new(raft_listener, peer_tls.clone(), options);
                    tokio::spawn(server.serve_with_incoming_shutdown(incoming, raft_stopped))
                }
                None => {
                    let incoming = crate::transport::grpc::incoming(raft_listener, FIRST_BYTE_TIMEOUT);
                    tokio::spawn(server.serve_with_incoming_shutdown(incoming, raft_stopped))
                }
            };
            tokio::spawn(async move {
                if let Ok(Err(err)) = served.await {
                    tracing::error!(error = %err, "the raft transport server failed");
                }
            });
            let addresses = node.state.addresses.clone().expect("a clustered node has an address book");
            let regions = node.state.region_cache.clone().expect("a clustered node has a region cache");
            let engine = node.engine().clone();
            tokio::spawn(cluster_link::run(
                link.clone(),
                identity,
                node.router().clone(),
                addresses,
                regions,
                engine,
                node.state.auth.clone(),
                stop_rx.clone(),
            ));
            tracing::info!(
                %raft_addr,
                advertised = %advertised_raft,
                store_id = node.store_id(),
                placement = %link.addrs_text(),
                peer_tls = tls.peer_server.is_some(),
                "raft transport listening"
            );
            node
        }
    };
    let raftstore_exited = node.raftstore_exited();
    tokio::spawn(async move {
        if let RaftstoreExit::Panicked(_) = raftstore_exited.await {
            let _ = raftstore_died.send(());
        }
    });
    if let Some(addr) = config.metrics_addr {
        let listener = bind(addr).await?;
        let bound = listener.local_addr().map_err(|source| NodeError::Listen { addr, source })?;
        tokio::spawn(api::serve_metrics(listener, node.api_state(), stopped(stop_rx.clone())));
        tracing::info!(%bound, "metrics listener serving /metrics, /status, /health and /ready without credentials");
    }
    // Tests and scripts that ask for port 0 read the real address from this line.
    let limits = node.state.http;
    tracing::info!(
        %http_addr,
        advertised = %node.state.http_addr,
        store_id = node.store_id(),
        data_dir = %config.data_dir.display(),
        max_connections = limits.max_connections,
        tls = tls.api.is_some(),
        "fekv node serving"
    );
    match &tls.api {
        Some(api_tls) => {
            let options = AcceptorOptions {
                hook: Some(node.state.metrics.handshake_hook("client")),
                ..AcceptorOptions::default()
            };
            node.serve(TlsIncoming::new(http_listener, api_tls.clone(), options), stopped(stop_rx)).await
        }
        None => node.serve(http_listener, stopped(stop_rx)).await,
    }
    match tokio::task::spawn_blocking(move || node.stop()).await {
        Ok(RaftstoreExit::Stopped) => {
            tracing::info!("fekv node stopped");
            Ok(())
        }
        Ok(RaftstoreExit::Panicked(report)) => Err(NodeError::RaftstoreDied(report)),
        Err(join_error) => Err(NodeError::RaftstoreDied(PanicReport {
            message: format!("stopping the raftstore failed: {join_error}"),
            location: None,
        })),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_damaged_id_file_at_start_is_an_io_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(crate::ids::ID_FILE), "not a number").unwrap();
        let config = Config { data_dir: dir.path().to_path_buf(), ..Config::default() };
        match Node::start(&config) {
            Err(NodeError::Io { path, .. }) => assert!(path.ends_with(crate::ids::ID_FILE), "{path}"),
            Err(other) => panic!("reported as {other:?}"),
            Ok(_) => panic!("a damaged id file was accepted"),
        }
    }

    #[test]
    fn auth_knows_whether_the_client_listener_is_tls() {
        let mut config = Config::default();
        assert!(!auth_options(&config).unwrap().client_tls, "no [tls]: plain HTTP");
        // Only the peer side: the REST API is still plain.
        config.tls.peer_cert_file = Some("peer.pem".into());
        config.tls.peer_key_file = Some("peer-key.pem".into());
        config.tls.peer_trusted_ca_file = Some("ca.pem".into());
        assert!(!auth_options(&config).unwrap().client_tls, "peer TLS only");
        config.tls.cert_file = Some("server.pem".into());
        config.tls.key_file = Some("server-key.pem".into());
        assert!(auth_options(&config).unwrap().client_tls, "cert_file and key_file: HTTPS");
    }
}
