//! `fekv placement`: runs the placement service.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fekv_placement::{Placement, PlacementOptions};

#[derive(Debug, Clone, clap::Args)]
pub struct PlacementArgs {
    /// gRPC listen address of the placement service
    #[arg(long, env = "FEKV_PLACEMENT_ADDR", default_value = "127.0.0.1:2379")]
    pub addr: SocketAddr,
    /// Directory of placement's own LMDB environment
    #[arg(long, env = "FEKV_PLACEMENT_DATA_DIR", default_value = "./fekv-placement")]
    pub data_dir: PathBuf,
    /// Replicas per region; the first region is created once this many stores registered
    #[arg(long, env = "FEKV_REPLICAS", default_value_t = 3)]
    pub replicas: usize,
    /// A store silent for this long is reported down
    #[arg(long, env = "FEKV_MAX_STORE_DOWN_TIME", default_value = "10s", value_parser = humantime::parse_duration)]
    pub max_store_down_time: Duration,
    /// Log filter used when RUST_LOG is unset
    #[arg(long, env = "FEKV_LOG_LEVEL", default_value = "info")]
    pub log_level: String,
}

#[derive(Debug, thiserror::Error)]
pub enum PlacementCmdError {
    #[error(transparent)]
    Placement(#[from] fekv_placement::PlacementError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: SocketAddr, source: std::io::Error },
    #[error("placement service failed: {0}")]
    Serve(#[from] tonic::transport::Error),
}

pub async fn run(
    args: PlacementArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> Result<(), PlacementCmdError> {
    let options = PlacementOptions { replicas: args.replicas, store_down_after: args.max_store_down_time };
    let placement = Arc::new(Placement::open(&args.data_dir, options)?);
    let listener = tokio::net::TcpListener::bind(args.addr)
        .await
        .map_err(|source| PlacementCmdError::Listen { addr: args.addr, source })?;
    let addr = listener.local_addr().map_err(|source| PlacementCmdError::Listen { addr: args.addr, source })?;
    tracing::info!(%addr, cluster_id = placement.cluster_id(), replicas = args.replicas, data_dir = %args.data_dir.display(), "placement service serving");
    fekv_placement::service::serve(listener, placement, shutdown).await?;
    tracing::info!("placement service stopped");
    Ok(())
}
