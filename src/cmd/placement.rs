//! `fekv placement`: runs the placement service, alone (`--addr`) or as one replica of a group
//! (`--peers A,B,C`: raft between the members over the same gRPC listener, see
//! `fekv_placement::group`).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fekv_placement::group::grpc::{Connect, GrpcTransport};
use fekv_placement::group::{Group, GroupConfig};
use fekv_placement::service::Source;
use fekv_placement::{Placement, PlacementOptions};

use crate::security::config::PlacementTlsArgs;
use crate::security::runtime::TlsSet;
use crate::security::tls::settings::ClientTlsSettings;
use crate::security::tls::{AcceptorOptions, AppProtocol, CertNames, PeerInfo, TlsError, TlsIncoming};

#[derive(Debug, Clone, clap::Args)]
pub struct PlacementArgs {
    /// gRPC listen address of the placement service
    #[arg(long, env = "FEKV_PLACEMENT_ADDR", default_value = "127.0.0.1:2379")]
    pub addr: SocketAddr,
    /// Every member of the placement group, comma-separated host:port (--addr among them, as written
    /// here); this process is the member at --addr's position. 3 or 5 are recommended; the list is
    /// fixed at start. Without it, a single placement service
    #[arg(long, env = "FEKV_PLACEMENT_PEERS", value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Directory of placement's own LMDB environment
    #[arg(long, env = "FEKV_PLACEMENT_DATA_DIR", default_value = "./fekv-placement")]
    pub data_dir: PathBuf,
    /// Replicas per region: the first region starts with one peer on the first store, and the replica
    /// checker adds peers as stores join until every region has this many
    #[arg(long, env = "FEKV_REPLICAS", default_value_t = 3)]
    pub replicas: usize,
    /// A store silent for this long is down: its replicas are re-created on other stores
    #[arg(long, env = "FEKV_MAX_STORE_DOWN_TIME", default_value = "10s", value_parser = humantime::parse_duration)]
    pub max_store_down_time: Duration,
    /// An operator (add/remove a peer, move a leader) whose current step makes no progress for this
    /// long is given up as `timeout`
    #[arg(long, env = "FEKV_OPERATOR_TIMEOUT", default_value = "3m", value_parser = humantime::parse_duration)]
    pub operator_timeout: Duration,
    /// How often the schedulers (replica check, balance-leader, balance-region) look at the cluster
    #[arg(long, env = "FEKV_SCHEDULE_INTERVAL", default_value = "1s", value_parser = humantime::parse_duration)]
    pub schedule_interval: Duration,
    /// Log level, or filter (info,fekv_placement=debug), used when RUST_LOG is unset
    #[arg(long, env = "FEKV_LOG_LEVEL", default_value = "info", value_parser = log_filter)]
    pub log_level: String,
    /// argon2id cost of the password hashes `fekv ctl user add` stores: interactive, or minimal (for tests
    /// only: cheap to guess)
    #[arg(long, env = "FEKV_PASSWORD_COST", default_value = "interactive", value_parser = crate::security::node_auth::parse_password_cost)]
    pub password_cost: fekv_placement::auth::PasswordCost,
    #[command(flatten)]
    pub tls: PlacementTlsArgs,
}

/// The identity (CN, else first SAN) of a caller's verified client certificate, which placement binds
/// a store to; `None` without one (placement without mutual TLS).
fn cert_identity_of(ext: &tonic::Extensions) -> Option<String> {
    let certificates = ext.get::<PeerInfo>()?.certificates.clone()?;
    CertNames::of_leaf(Some(&certificates)).ok()?.identity()
}

fn log_filter(text: &str) -> Result<String, String> {
    crate::logging::check_filter(text).map(|()| text.to_string())
}

#[derive(Debug, thiserror::Error)]
pub enum PlacementCmdError {
    #[error(transparent)]
    Locked(#[from] crate::dir_lock::LockError),
    #[error(transparent)]
    Placement(#[from] fekv_placement::PlacementError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("placement service failed: {0}")]
    Serve(#[from] fekv_placement::service::ServeError),
    #[error(transparent)]
    Tls(#[from] TlsError),
    #[error("--peers: {0}")]
    Peers(String),
    #[error(transparent)]
    Group(#[from] fekv_placement::group::GroupError),
    #[error("placement replica stopped: {0}")]
    Driver(String),
}

/// This member's id: its 1-based position in `peers`, which must name `addr` once and no address
/// twice.
pub fn member_id(addr: &SocketAddr, peers: &[String]) -> Result<u64, PlacementCmdError> {
    let same = |peer: &str| peer.parse::<SocketAddr>().map_or(peer == addr.to_string(), |p| p == *addr);
    for (i, peer) in peers.iter().enumerate() {
        if peer.is_empty() {
            return Err(PlacementCmdError::Peers("an empty address in the list".into()));
        }
        if peers[..i].contains(peer) {
            return Err(PlacementCmdError::Peers(format!("{peer} is listed twice")));
        }
    }
    let position = peers.iter().position(|peer| same(peer));
    let Some(position) = position else {
        return Err(PlacementCmdError::Peers(format!(
            "--addr {addr} is not in the list ({}): every member runs with the same --peers and its own --addr",
            peers.join(",")
        )));
    };
    Ok(position as u64 + 1)
}

pub async fn run(
    args: PlacementArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), PlacementCmdError> {
    if args.schedule_interval.is_zero() {
        return Err(PlacementCmdError::Placement(fekv_placement::PlacementError::Invalid(
            "--schedule-interval must be more than zero".into(),
        )));
    }
    let options = PlacementOptions {
        replicas: args.replicas,
        store_down_after: args.max_store_down_time,
        operator_timeout: args.operator_timeout,
        password_cost: args.password_cost,
    };
    // Certificates are read before anything listens: a bad file stops placement, naming it.
    let mut tls_set = TlsSet::default();
    let tls = args.tls.settings()?.map(|settings| tls_set.server(settings, AppProtocol::Grpc)).transpose()?;
    let member = if args.peers.is_empty() { None } else { Some(member_id(&args.addr, &args.peers)?) };
    // The members speak raft to each other as clients of each other's listener, with its TLS: the
    // same certificate, presented, and the trusted CA to verify theirs.
    let connect: Connect =
        match (&args.tls.server.cert_file, &args.tls.server.key_file, &args.tls.server.trusted_ca_file) {
            (None, None, None) => Arc::new(fekv_placement::group::grpc::plain),
            _ if member.is_none() => Arc::new(fekv_placement::group::grpc::plain),
            (Some(cert), Some(key), Some(ca)) => {
                let settings =
                    ClientTlsSettings { cacert: ca.clone(), cert: Some(cert.clone()), key: Some(key.clone()) };
                let client = tls_set.client(settings, AppProtocol::Grpc)?;
                Arc::new(move |addr: &str| {
                    let endpoint = crate::security::tls::grpc::endpoint(addr, Some(&client))
                        .map_err(|e| e.to_string())?
                        .connect_timeout(Duration::from_secs(1))
                        .timeout(Duration::from_secs(5));
                    Ok(crate::security::tls::grpc::lazy_channel(&endpoint, Some(&client)))
                })
            }
            _ => {
                return Err(PlacementCmdError::Peers(
                    "a placement group over TLS needs --trusted-ca-file too: the members verify each other with it"
                        .into(),
                ))
            }
        };
    // One placement process per data directory, held until this function returns.
    let _dir_lock = crate::dir_lock::DirLock::acquire(&args.data_dir)?;
    let source: Source = match member {
        None => Arc::new(Placement::open(&args.data_dir, options)?).into(),
        Some(member_id) => {
            let config = GroupConfig::new(member_id, args.peers.clone(), options);
            let runtime = tokio::runtime::Handle::current();
            let (peers, connect) = (args.peers.clone(), connect.clone());
            let group = Group::start(&args.data_dir, config, crate::logging::raft_logger(), move |inbox| {
                GrpcTransport::start(&runtime, member_id, &peers, &connect, inbox)
            })?;
            Arc::new(group).into()
        }
    };
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|source| PlacementCmdError::Listen { addr: args.addr, source })?;
    let addr = listener.local_addr().map_err(|source| PlacementCmdError::Listen { addr: args.addr, source })?;
    let cluster_id = source.placement().map_or(0, |p| p.cluster_id());
    tracing::info!(
        %addr,
        member_id = member.unwrap_or(1),
        members = args.peers.len().max(1),
        cluster_id,
        replicas = args.replicas,
        max_store_down_time = ?args.max_store_down_time,
        operator_timeout = ?args.operator_timeout,
        data_dir = %args.data_dir.display(),
        tls = tls.is_some(),
        mutual_tls = args.tls.mutual(),
        "placement service serving"
    );
    let (stop_tls, tls_stopped) = tokio::sync::watch::channel(false);
    tls_set.keep_fresh(tls_stopped);
    let (stop_schedulers, schedulers_stopped) = tokio::sync::oneshot::channel::<()>();
    let schedulers =
        tokio::spawn(fekv_placement::service::run_schedulers(source.clone(), args.schedule_interval, async {
            let _ = schedulers_stopped.await;
        }));
    // A replica whose raft driver died must not look alive: it stops, and its process fails.
    let died = Arc::new(parking_lot::Mutex::new(None::<String>));
    let group = match &source {
        Source::Group(group) => Some(group.clone()),
        Source::Single(_) => None,
    };
    let watch = died.clone();
    let shutdown = async move {
        let driver_stopped = async {
            let Some(group) = group else { return std::future::pending().await };
            loop {
                if let Some(reason) = group.status().stopped {
                    return reason;
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        };
        tokio::select! {
            _ = shutdown => {}
            reason = driver_stopped => *watch.lock() = Some(reason),
        }
    };
    let served = match tls {
        None => {
            // Silent connections are closed, failed accepts retried after a pause, as on a node's
            // raft port (tonic's own listener keeps the first forever and spins on the second).
            let incoming = crate::transport::grpc::incoming(listener, crate::transport::grpc::FIRST_BYTE_TIMEOUT);
            fekv_placement::service::serve_incoming(incoming, source, |_| None, |_| None, shutdown).await
        }
        Some(tls) => {
            let options = AcceptorOptions { allowed: Some(Arc::new(args.tls.allowed())), ..AcceptorOptions::default() };
            let incoming = TlsIncoming::new(listener, tls, options);
            let peer_addr_of = |ext: &tonic::Extensions| ext.get::<PeerInfo>().map(|peer| peer.remote_addr);
            fekv_placement::service::serve_incoming(incoming, source, peer_addr_of, cert_identity_of, shutdown).await
        }
    };
    let _ = stop_tls.send(true);
    let _ = stop_schedulers.send(());
    let _ = schedulers.await;
    served?;
    if let Some(reason) = died.lock().take() {
        return Err(PlacementCmdError::Driver(reason));
    }
    tracing::info!("placement service stopped");
    Ok(())
}
