//! `fekv placement`: runs the placement service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fekv_placement::{Placement, PlacementOptions};

use crate::security::config::PlacementTlsArgs;
use crate::security::runtime::TlsSet;
use crate::security::tls::{AcceptorOptions, AppProtocol, PeerInfo, TlsError, TlsIncoming};

#[derive(Debug, Clone, clap::Args)]
pub struct PlacementArgs {
    /// gRPC listen address of the placement service
    #[arg(long, env = "FEKV_PLACEMENT_ADDR", default_value = "127.0.0.1:2379")]
    pub addr: SocketAddr,
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
    // One placement process per data directory, held until this function returns.
    let _dir_lock = crate::dir_lock::DirLock::acquire(&args.data_dir)?;
    let placement = Arc::new(Placement::open(&args.data_dir, options)?);
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|source| PlacementCmdError::Listen { addr: args.addr, source })?;
    let addr = listener.local_addr().map_err(|source| PlacementCmdError::Listen { addr: args.addr, source })?;
    tracing::info!(
        %addr,
        cluster_id = placement.cluster_id(),
        replicas = args.replicas,
        max_store_down_time = ?args.max_store_down_time,
        operator_timeout = ?args.operator_timeout,
        data_dir = %args.data_dir.display(),
        tls = tls.is_some(),
        mutual_tls = args.tls.trusted_ca_file.is_some(),
        "placement service serving"
    );
    let (stop_tls, tls_stopped) = tokio::sync::watch::channel(false);
    tls_set.keep_fresh(tls_stopped);
    let (stop_schedulers, schedulers_stopped) = tokio::sync::oneshot::channel::<()>();
    let schedulers =
        tokio::spawn(fekv_placement::service::run_schedulers(placement.clone(), args.schedule_interval, async {
            let _ = schedulers_stopped.await;
        }));
    let served = match tls {
        None => {
            // Silent connections are closed, failed accepts retried after a pause, as on a node's
            // raft port (tonic's own listener keeps the first forever and spins on the second).
            let incoming = crate::transport::grpc::incoming(listener, crate::transport::grpc::FIRST_BYTE_TIMEOUT);
            fekv_placement::service::serve_incoming(incoming, placement, |_| None, shutdown).await
        }
        Some(tls) => {
            let incoming = TlsIncoming::new(listener, tls, AcceptorOptions::default());
            let peer_addr_of = |ext: &tonic::Extensions| ext.get::<PeerInfo>().map(|peer| peer.remote_addr);
            fekv_placement::service::serve_incoming(incoming, placement, peer_addr_of, shutdown).await
        }
    };
    let _ = stop_tls.send(true);
    let _ = stop_schedulers.send(());
    let _ = schedulers.await;
    served?;
    tracing::info!("placement service stopped");
    Ok(())
}
