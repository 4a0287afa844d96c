//! The node's side of the placement service: registering the store, keeping the address book of
//! the other stores fresh, creating this store's peer of the region placement bootstrapped, the
//! heartbeat that tells placement which leaders this store holds, and carrying out the operators its
//! replies bring (split, leader transfer, add or remove a peer).
//!
//! Nodes keep serving while placement is down: the address book and the regions they hold are
//! theirs already; only what is new (a store, a region) waits for placement to come back.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use tonic::transport::Channel;

use crate::proto::placement_client::PlacementClient;
use crate::proto::{GetRegionsRequest, GetStoresRequest, PeerReport, RegisterStoreRequest, StoreHeartbeatRequest};
use crate::raftstore::Router;
use crate::security::node_auth::NodeAuth;
use crate::transport::grpc::AddressBook;

/// How often a node heartbeats placement and refreshes its address book.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("invalid placement address {addr}: {reason}")]
    Address { addr: String, reason: String },
    #[error("placement service at {addr} did not answer within {waited:?}: {status}")]
    Unavailable { addr: String, waited: Duration, status: String },
    #[error("placement service at {addr} refused this store: {message}")]
    Refused { addr: String, message: String },
}

/// A client of the placement service at `addr` (`host:port`); connects on first use.
pub fn client(addr: &str) -> Result<PlacementClient<Channel>, LinkError> {
    let channel = Channel::from_shared(format!("http://{addr}"))
        .map_err(|e| LinkError::Address { addr: addr.to_string(), reason: e.to_string() })?
        .connect_timeout(Duration::from_secs(2))
        .timeout(Duration::from_secs(5))
        .connect_lazy();
    Ok(PlacementClient::new(channel))
}

/// Registers this store (store_id 0 = a new one), retrying while placement is unreachable for up to
/// `wait`. Returns (store_id, cluster_id). The reply's auth state, if newer than `auth`'s, is
/// installed before any replica can arrive.
pub async fn register(
    client: &mut PlacementClient<Channel>,
    addr: &str,
    store_id: u64,
    (raft_addr, http_addr): (&str, &str),
    auth: &Arc<NodeAuth>,
    wait: Duration,
) -> Result<(u64, u64), LinkError> {
    let started = Instant::now();
    let mut retry_in = Duration::from_millis(200);
    let request = RegisterStoreRequest {
        store_id,
        raft_addr: raft_addr.to_string(),
        http_addr: http_addr.to_string(),
        version: crate::VERSION.to_string(),
        auth_revision: auth.revision(),
    };
    loop {
        match client.register_store(request.clone()).await {
            Ok(reply) => {
                let reply = reply.into_inner();
                receive_auth(auth, reply.auth).await;
                return Ok((reply.store_id, reply.cluster_id));
            }
            // An answer, and a no (a store removed from the cluster may not come back): waiting
            // will not change it.
            Err(status) if matches!(status.code(), tonic::Code::FailedPrecondition | tonic::Code::InvalidArgument) => {
                return Err(LinkError::Refused { addr: addr.to_string(), message: status.message().to_string() })
            }
            // Said at warn each time: a node that cannot register serves nothing, and the operator
            // should see at once which address it is trying.
            Err(status) if started.elapsed() < wait => {
                let left = wait.saturating_sub(started.elapsed());
                tracing::warn!(
                    placement = addr,
                    code = ?status.code(),
                    error = status.message(),
                    ?retry_in,
                    ?left,
                    "cannot register with the placement service; retrying"
                );
                tokio::time::sleep(retry_in.min(left)).await;
                retry_in = (retry_in * 2).min(Duration::from_secs(2));
            }
            Err(status) => {
                return Err(LinkError::Unavailable { addr: addr.to_string(), waited: wait, status: status.to_string() })
            }
        }
    }
}

/// Stores and installs an auth state placement sent (an LMDB write: on the blocking pool). A state
/// that cannot be used is logged; the node keeps the one it has, and placement sends it again.
async fn receive_auth(auth: &Arc<NodeAuth>, state: Option<crate::proto::AuthState>) {
    let Some(state) = state else { return };
    let auth = auth.clone();
    match tokio::task::spawn_blocking(move || auth.receive(&state)).await {
        Ok(Ok(_)) => {}
        Ok(Err(err)) => tracing::error!(error = %err, "cannot install the auth state placement sent"),
        Err(err) => tracing::error!(error = %err, "installing the auth state failed"),
    }
}

/// A call to one of placement's listings, with the store token it needs while auth is on.
fn as_member<T>(message: T, auth: &NodeAuth, store_id: u64) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = auth.store_authorization(store_id).and_then(|value| value.parse().ok()) {
        request.metadata_mut().insert("authorization", value);
    }
    request
}

/// Ids from the placement service, for splits. Called from the split-check thread (not a tokio
/// worker), so it may block on the call.
pub struct PlacementIds {
    client: PlacementClient<Channel>,
    runtime: tokio::runtime::Handle,
}

impl PlacementIds {
    pub fn new(client: PlacementClient<Channel>, runtime: tokio::runtime::Handle) -> PlacementIds {
        PlacementIds { client, runtime }
    }
}

impl crate::raftstore::split_check::IdAllocator for PlacementIds {
    fn alloc(&self, count: usize) -> Result<Vec<u64>, String> {
        let mut client = self.client.clone();
        let request = crate::proto::AllocIdRequest { count: count as u32 };
        let reply = self.runtime.block_on(async move { client.alloc_id(request).await }).map_err(|s| s.to_string())?;
        let ids = reply.into_inner().ids;
        if ids.len() != count {
            return Err(format!("placement returned {} ids for {count}", ids.len()));
        }
        Ok(ids)
    }
}

/// The cluster's regions as placement last reported them: where to send a request for a key no local
/// peer holds. Possibly stale; a stale route only costs another redirect (or a 503).
#[derive(Default)]
pub struct RegionCache {
    regions: parking_lot::RwLock<Vec<crate::proto::RegionInfo>>,
}

impl RegionCache {
    pub fn update(&self, regions: Vec<crate::proto::RegionInfo>) {
        *self.regions.write() = regions;
    }

    /// The store leading the region that holds `key`, if placement knows one.
    pub fn leader_store_for(&self, key: &[u8]) -> Option<u64> {
        self.regions
            .read()
            .iter()
            .find(|info| info.region.as_ref().is_some_and(|r| crate::raftstore::region_map::region_contains(r, key)))
            .map(|info| info.leader_store_id)
            .filter(|store_id| *store_id != 0)
    }
}

/// Runs until `shutdown` is set: every heartbeat interval, refresh the address book, create the
/// peers of regions placement assigned to this store, and report this store's leaders.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    mut client: PlacementClient<Channel>,
    store_id: u64,
    router: Router,
    addresses: Arc<AddressBook>,
    regions: Arc<RegionCache>,
    engine: crate::storage::Engine,
    auth: Arc<NodeAuth>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(HEARTBEAT_INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let changing = Changing::default();
    loop {
        // Every interval, and right after a local region changed (a split's leader reports both
        // halves at once, so routers learn of the new region without waiting).
        tokio::select! {
            _ = ticker.tick() => {}
            _ = router.regions_changed() => {}
            _ = shutdown.changed() => return,
        }
        let link =
            Link { store_id, router: &router, addresses: &addresses, cache: &regions, engine: &engine, auth: &auth };
        if let Err(status) = beat(&mut client, &link, &changing).await {
            tracing::debug!(store_id, %status, "placement heartbeat failed; serving from what we know");
        }
    }
}

/// Regions with a membership change under way from this node. A change resolves only once applied
/// (or fails), which can take a snapshot's time: it runs on its own task so heartbeats go on, and
/// placement's repeats of the same step meanwhile are not proposed again.
#[derive(Default, Clone)]
struct Changing(Arc<Mutex<HashSet<u64>>>);

impl Changing {
    /// Claims `region_id`; false if a change of it is already under way.
    fn claim(&self, region_id: u64) -> bool {
        self.0.lock().insert(region_id)
    }

    fn release(&self, region_id: u64) {
        self.0.lock().remove(&region_id);
    }
}

/// The epoch placement gives the first region it bootstraps. Only a region still at it may be created
/// from placement's table: a store placement lists in a region that has changed since got there by a
/// membership change, and its peer must start empty and be filled by the leader's snapshot, never be
/// created as if it held the region's data.
const BOOTSTRAP_EPOCH: crate::proto::RegionEpoch = crate::proto::RegionEpoch { conf_ver: 1, version: 1 };

/// What a heartbeat round reads and updates.
struct Link<'a> {
    store_id: u64,
    router: &'a Router,
    addresses: &'a AddressBook,
    cache: &'a RegionCache,
    engine: &'a crate::storage::Engine,
    auth: &'a Arc<NodeAuth>,
}

async fn beat(
    client: &mut PlacementClient<Channel>,
    link: &Link<'_>,
    changing: &Changing,
) -> Result<(), tonic::Status> {
    let Link { store_id, router, addresses, cache, engine, auth } = *link;
    let listed = async {
        let stores = client.get_stores(as_member(GetStoresRequest {}, auth, store_id)).await?.into_inner().stores;
        let regions = client.get_regions(as_member(GetRegionsRequest {}, auth, store_id)).await?.into_inner().regions;
        Ok::<_, tonic::Status>((stores, regions))
    };
    let all_regions = match listed.await {
        Ok((stores, regions)) => {
            addresses.update(stores);
            cache.update(regions.clone());
            regions
        }
        // Auth was enabled after this node's last state: the heartbeat below brings the new one
        // (and its key for the store token); the listings wait for the next round.
        Err(status) if status.code() == tonic::Code::Unauthenticated => {
            tracing::debug!(store_id, %status, "placement's listings need a newer auth state; heartbeating for it");
            Vec::new()
        }
        Err(status) => return Err(status),
    };
    let held: Vec<u64> = router.regions().iter().map(|r| r.region_id).collect();
    if held.is_empty() {
        // A new store waits for the first region; later regions arrive by splits and raft messages.
        for info in all_regions {
            let Some(region) = info.region else { continue };
            if region.epoch == Some(BOOTSTRAP_EPOCH) && region.peers.iter().any(|p| p.store_id == store_id) {
                if let Err(err) = router.create_peer(region).await {
                    tracing::warn!(store_id, error = %err, "cannot create a bootstrapped peer");
                }
            }
        }
    }
    let peers = match router.status().await {
        Ok(peers) => peers
            .into_iter()
            .filter(|p| p.initialized)
            .map(|p| PeerReport {
                is_leader: p.role == "leader",
                leader_peer_id: p.leader_peer_id,
                term: p.term,
                // Unset until the leader has measured its region: placement keeps the last size.
                approximate_size: p.approximate_size,
                approximate_keys: p.approximate_size.map(|_| p.approximate_keys),
                pending_peers: p.pending_peers,
                region: Some(p.region),
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    let used_bytes = engine.stats().map(|s| s.used_bytes).unwrap_or(0);
    let request = StoreHeartbeatRequest { store_id, peers, used_bytes, auth_revision: auth.revision() };
    let reply = client.store_heartbeat(request).await?.into_inner();
    receive_auth(auth, reply.auth).await;
    for stale in reply.stale_peers {
        destroy_stale_peer(router, stale);
    }
    for operator in reply.operators {
        let region_id = operator.region_id;
        let started = match operator.kind {
            Some(crate::proto::operator::Kind::Split(split)) => {
                let key = (!split.split_key.is_empty()).then_some(split.split_key);
                router.split_region(region_id, key).await
            }
            Some(crate::proto::operator::Kind::TransferLeader(transfer)) => {
                router.transfer_leader(region_id, transfer.to_store_id).await
            }
            Some(crate::proto::operator::Kind::AddPeer(add)) => {
                change_peer(router, changing, region_id, crate::proto::ConfChangeType::AddNode, add.peer);
                Ok(())
            }
            Some(crate::proto::operator::Kind::RemovePeer(remove)) => {
                change_peer(router, changing, region_id, crate::proto::ConfChangeType::RemoveNode, remove.peer);
                Ok(())
            }
            None => Ok(()),
        };
        if let Err(err) = started {
            tracing::info!(region_id, error = %err, "operator not started");
        }
    }
    Ok(())
}

/// Starts one membership change of `region_id` on its own task, unless one is under way. Failures are
/// expected now and then (another change in flight, a leader transfer, lost leadership): placement
/// sends the step again with the next heartbeat reply, so they are only logged.
fn change_peer(
    router: &Router,
    changing: &Changing,
    region_id: u64,
    change_type: crate::proto::ConfChangeType,
    peer: Option<crate::proto::Peer>,
) {
    let Some(peer) = peer else {
        tracing::warn!(region_id, "placement sent a membership change without a peer");
        return;
    };
    if !changing.claim(region_id) {
        return;
    }
    let (router, changing) = (router.clone(), changing.clone());
    tokio::spawn(async move {
        match router.change_peer(region_id, change_type, peer).await {
            Ok(()) => tracing::debug!(region_id, ?change_type, ?peer, "membership change applied"),
            Err(err) => tracing::info!(region_id, ?change_type, ?peer, error = %err, "membership change not made"),
        }
        changing.release(region_id);
    });
}

/// Placement says this store's peer of a region was removed (the region's newer membership does not
/// list it). Delivered to the raftstore as the tombstone message a region member would send, so it is
/// checked the same way: destroyed only if the epoch really is newer than the peer's own.
pub fn destroy_stale_peer(router: &Router, stale: crate::proto::StalePeer) {
    let Some(peer) = stale.peer else { return };
    let envelope = crate::transport::RaftEnvelope::tombstone(
        stale.region_id,
        crate::proto::Peer::default(),
        peer,
        stale.epoch.unwrap_or_default(),
    );
    // Lost on a full inbox like any raft message; placement says it again next heartbeat.
    let _ = router.store_inbox().try_send(crate::raftstore::msg::StoreMsg::Raft(Box::new(envelope)));
}
