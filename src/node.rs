//! Wiring of one node: open the LMDB environment, bootstrap it on first start, start the raftstore
//! thread, and serve the REST API until shut down.
//!
//! In this single-node form the node is store 1 and bootstraps region 1 (the whole keyspace) with
//! itself as its only peer; it is an ordinary one-voter raft group, so adding peers later changes the
//! membership, not the code path.

use std::future::Future;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Instant;

use tokio::net::TcpListener;

use crate::api::{self, ApiState};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::proto::{Peer, Region, RegionEpoch, StoreIdent};
use crate::raftstore::peer::PeerConfig;
use crate::raftstore::peer_storage::PeerStorage;
use crate::raftstore::store::{self, StoreConfig};
use crate::raftstore::Router;
use crate::storage::{Engine, EngineOptions, StorageError};

/// Bumped when the on-disk layout changes incompatibly.
pub const FORMAT_VERSION: u32 = 1;
const FIRST_STORE_ID: u64 = 1;
const FIRST_REGION_ID: u64 = 1;
const FIRST_PEER_ID: u64 = 1;

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error("cannot open the data directory {dir}: {source}")]
    Open { dir: String, source: StorageError },
    #[error("data directory {dir} has format version {found}; this fekv reads version {FORMAT_VERSION}")]
    Format { dir: String, found: u32 },
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("cannot listen on {addr}: {source}")]
    Listen { addr: std::net::SocketAddr, source: std::io::Error },
}

/// A running node: the raftstore thread and what the API needs.
pub struct Node {
    state: Arc<ApiState>,
    raftstore: Option<JoinHandle<()>>,
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
    let ident = StoreIdent { cluster_id, store_id, format_version: FORMAT_VERSION };
    let mut txn = engine.write_txn()?;
    engine.put_store_ident(&mut txn, &ident)?;
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
        inbox_capacity: 4 * config.raftstore_max_batch,
        request_timeout: config.request_timeout,
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
    /// Opens storage and starts the raftstore. The API is served separately with [`Node::serve`].
    pub fn start(config: &Config) -> Result<Node, NodeError> {
        let metrics = Arc::new(Metrics::new());
        let dir = config.data_dir.display().to_string();
        let options = EngineOptions {
            map_size: config.map_size.as_u64(),
            max_readers: config.max_readers,
            checksum_failures: metrics.storage_checksum_failures.clone(),
        };
        let engine =
            Engine::open(&config.data_dir, &options).map_err(|source| NodeError::Open { dir: dir.clone(), source })?;
        let ident = bootstrap_if_needed(&engine)?;
        if ident.format_version != FORMAT_VERSION {
            return Err(NodeError::Format { dir, found: ident.format_version });
        }
        let store_cfg = store_config(config, ident.store_id);
        // A single node has no peers to talk to.
        let (router, handle) =
            store::start(store_cfg, engine.clone(), metrics.clone(), Box::new(crate::transport::Unconnected))?;
        let state = Arc::new(ApiState {
            router,
            engine,
            metrics,
            max_value_size: config.max_value_size.as_u64(),
            store_id: ident.store_id,
            http_addr: config.http_addr,
            started: Instant::now(),
        });
        Ok(Node { state, raftstore: Some(handle) })
    }

    pub fn router(&self) -> &Router {
        &self.state.router
    }

    pub fn engine(&self) -> &Engine {
        &self.state.engine
    }

    /// What the REST API serves from (for running [`api::serve`] on a task of one's own).
    pub fn api_state(&self) -> Arc<ApiState> {
        self.state.clone()
    }

    /// Serves the REST API on `listener` until `shutdown` resolves.
    pub async fn serve(&self, listener: TcpListener, shutdown: impl Future<Output = ()>) {
        api::serve(listener, self.state.clone(), shutdown).await;
    }

    /// Stops the raftstore after its current round. Data already acknowledged is durable; nothing
    /// else needs flushing.
    pub fn stop(mut self) {
        self.state.router.shutdown();
        if let Some(handle) = self.raftstore.take() {
            if handle.join().is_err() {
                tracing::error!("the raftstore thread panicked");
            }
        }
    }
}

/// Runs a node with `config` until `shutdown` resolves.
pub async fn run(config: Config, shutdown: impl Future<Output = ()>) -> Result<(), NodeError> {
    let listener = TcpListener::bind(config.http_addr)
        .await
        .map_err(|source| NodeError::Listen { addr: config.http_addr, source })?;
    let node = Node::start(&config)?;
    let http_addr = listener.local_addr().map_err(|source| NodeError::Listen { addr: config.http_addr, source })?;
    // Tests and scripts that ask for port 0 read the real address from this line.
    tracing::info!(%http_addr, data_dir = %config.data_dir.display(), "fekv node serving");
    node.serve(listener, shutdown).await;
    node.stop();
    tracing::info!("fekv node stopped");
    Ok(())
}
