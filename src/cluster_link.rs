//! The node's side of the placement service: registering the store, keeping the address book of
//! the other stores fresh, creating this store's peer of the region placement bootstrapped, the
//! heartbeat that tells placement which leaders this store holds, and carrying out the operators its
//! replies bring (split, leader transfer, add or remove a peer).
//!
//! The heartbeat carries only the region reports that changed (see [`reports`]), and the region
//! cache fetches only the regions placement changed since its last answer: neither costs placement
//! anything that grows with the regions that exist.
//!
//! A store proves who it is with the secret placement gave it at its first registration
//! ([`StoreIdentity`], kept in the data dir's `meta` database), on every registration and heartbeat.
//! Over peer TLS the connection to placement is mutual TLS with the node's peer certificate.
//!
//! Nodes keep serving while placement is down: the address book and the regions they hold are
//! theirs already; only what is new (a store, a region) waits for placement to come back.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use rand::RngCore as _;

use crate::security::tls::ClientTls;

use crate::proto::placement_client::PlacementClient;
use crate::proto::{
    GetRegionsRequest, GetStoresRequest, PeerReport, RegisterStoreRequest, StoreHeartbeatRequest, StoreInfo,
};
use crate::raftstore::Router;
use crate::security::node_auth::NodeAuth;

pub mod ids;
pub mod placement_link;
pub mod reports;

pub use placement_link::{CallError, PlacementLink, Retry};

/// How often a node heartbeats placement and refreshes its address book.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_millis(500);

/// Where every store of the cluster listens, refreshed from the placement service.
#[derive(Default)]
pub struct AddressBook {
    stores: RwLock<HashMap<u64, StoreInfo>>,
}

impl AddressBook {
    pub fn update(&self, stores: Vec<StoreInfo>) {
        let mut map = self.stores.write();
        for store in stores {
            map.insert(store.store_id, store);
        }
    }

    pub fn get(&self, store_id: u64) -> Option<StoreInfo> {
        self.stores.read().get(&store_id).cloned()
    }

    pub fn all(&self) -> Vec<StoreInfo> {
        let mut stores: Vec<StoreInfo> = self.stores.read().values().cloned().collect();
        stores.sort_by_key(|s| s.store_id);
        stores
    }
}

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("invalid placement address {addr}: {reason}")]
    Address { addr: String, reason: String },
    #[error("placement service at {addr} refused this store: {message}")]
    Refused { addr: String, message: String },
    /// Shutdown was asked for before the store could register.
    #[error("stopped before registering with the placement service")]
    Stopped,
    #[error("no randomness for the registration token: {0}")]
    NoRandomness(String),
}

/// The placement group at `list` (comma-separated `host:port`, `http://` or `https://` URLs), over
/// TLS when `tls` is given (the node's peer certificate); every call retried within
/// [`NODE_CALL_DEADLINE`]. Connects on first use.
pub fn link(list: &str, tls: Option<&Arc<ClientTls>>) -> Result<PlacementLink, LinkError> {
    let flags = "peer_cert_file, peer_key_file and peer_trusted_ca_file in [tls]";
    let members = placement_link::parse_members(list, tls.is_some(), flags)
        .map_err(|reason| LinkError::Address { addr: list.to_string(), reason })?;
    PlacementLink::new(&members, tls.cloned(), NODE_CALL_DEADLINE)
}

/// How long a node's call to placement may look for the leader before it fails (a heartbeat that
/// fails is only logged, and the next one tries again).
pub const NODE_CALL_DEADLINE: Duration = Duration::from_secs(5);

/// How long one registration attempt looks for the leader before it is logged and tried again.
const REGISTER_ATTEMPT: Duration = Duration::from_secs(2);

/// Who this store is to placement: its id, its cluster, and the secret that proves it.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreIdentity {
    /// 0 before the first registration.
    pub store_id: u64,
    /// 0 before the first registration.
    pub cluster_id: u64,
    /// Empty before the first registration (or for a store registered before secrets existed).
    pub secret: Vec<u8>,
}

impl std::fmt::Debug for StoreIdentity {
    // Never the secret itself: identities end up in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreIdentity")
            .field("store_id", &self.store_id)
            .field("cluster_id", &self.cluster_id)
            .field("has_secret", &!self.secret.is_empty())
            .finish()
    }
}

/// Registers this store (`known.store_id` 0 = a new one) with the placement leader, retrying while
/// no member serves it, until `shutdown` is set. Returns the store's identity: placement's secret
/// replaces the known one when it sends one (a first registration, or the first since secrets
/// existed). The reply's auth state, if newer than `auth`'s, is installed before any replica can
/// arrive.
pub async fn register(
    link: &PlacementLink,
    known: &StoreIdentity,
    (raft_addr, http_addr): (&str, &str),
    auth: &Arc<NodeAuth>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> Result<StoreIdentity, LinkError> {
    let mut retry_in = Duration::from_millis(200);
    let request = RegisterStoreRequest {
        store_id: known.store_id,
        raft_addr: raft_addr.to_string(),
        http_addr: http_addr.to_string(),
        version: crate::VERSION.to_string(),
        cluster_id: known.cluster_id,
        store_secret: known.secret.clone(),
        auth_revision: auth.revision(),
        registration_token: if known.store_id == 0 { registration_token()? } else { Vec::new() },
    };
    // Retried even when the answer was lost: a known store registering again only refreshes its
    // addresses, and a new store's attempts all carry one random token, so placement answers a
    // repeat with the store the first attempt made instead of making another (a ghost store would be
    // counted and given replicas until declared down). A restart before any reply arrived still
    // makes a new store: the token lives only as long as this process.
    // A short deadline per attempt: each failed one is said at warn, so the operator sees it early.
    let attempts = link.with_deadline(REGISTER_ATTEMPT);
    let call = || {
        attempts.call(Retry::Idempotent, |channel| {
            let request = request.clone();
            async move { PlacementClient::new(channel).register_store(request).await }
        })
    };
    loop {
        let result = tokio::select! {
            result = call() => result,
            _ = shutdown.wait_for(|stop| *stop) => return Err(LinkError::Stopped),
        };
        match result {
            Ok(reply) => {
                receive_auth(auth, reply.auth).await;
                let secret = if reply.store_secret.is_empty() { known.secret.clone() } else { reply.store_secret };
                return Ok(StoreIdentity { store_id: reply.store_id, cluster_id: reply.cluster_id, secret });
            }
            // An answer, and a no (a store removed from the cluster may not come back, a store
            // without its secret or of another cluster is not let in): waiting will not change it.
            Err(CallError::Answered { addr, status })
                if matches!(
                    status.code(),
                    tonic::Code::FailedPrecondition
                        | tonic::Code::InvalidArgument
                        | tonic::Code::Unauthenticated
                        | tonic::Code::PermissionDenied
                ) =>
            {
                return Err(LinkError::Refused { addr, message: status.message().to_string() })
            }
            // Said at warn each time: a node that cannot register serves nothing, and the operator
            // should see at once which addresses it is trying.
            Err(err) => {
                tracing::warn!(placement = %link.addrs_text(), error = %err, ?retry_in, "cannot register with the placement service; retrying");
                tokio::select! {
                    () = tokio::time::sleep(retry_in) => {}
                    _ = shutdown.wait_for(|stop| *stop) => return Err(LinkError::Stopped),
                }
                retry_in = (retry_in * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// A new store's registration token: random, one per `register` call (one per process start).
fn registration_token() -> Result<Vec<u8>, LinkError> {
    let mut token = vec![0u8; 32];
    rand::rngs::OsRng.try_fill_bytes(&mut token).map_err(|err| LinkError::NoRandomness(err.to_string()))?;
    Ok(token)
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

/// The cluster's regions as placement last reported them: where to send a request for a key no local
/// peer holds. Possibly stale; a stale route only costs another redirect (or a 503). Kept up to date
/// by asking placement for what changed since its last answer.
#[derive(Default)]
pub struct RegionCache {
    cached: parking_lot::RwLock<CachedRegions>,
}

#[derive(Default)]
struct CachedRegions {
    by_id: std::collections::HashMap<u64, crate::proto::RegionInfo>,
    /// Of placement's last answer: the next request asks for what changed since.
    incarnation: u64,
    version: u64,
}

impl RegionCache {
    /// The request for the regions changed since the last answer applied.
    pub fn request(&self) -> GetRegionsRequest {
        let cached = self.cached.read();
        GetRegionsRequest { since_version: cached.version, incarnation: cached.incarnation }
    }

    /// Applies placement's answer to [`Self::request`]: every region, or what changed.
    pub fn apply(&self, reply: crate::proto::GetRegionsResponse) {
        let mut cached = self.cached.write();
        if reply.complete {
            cached.by_id.clear();
        }
        for region_id in &reply.removed_region_ids {
            cached.by_id.remove(region_id);
        }
        for info in reply.regions {
            let Some(region_id) = info.region.as_ref().map(|r| r.region_id) else { continue };
            cached.by_id.insert(region_id, info);
        }
        (cached.incarnation, cached.version) = (reply.incarnation, reply.version);
    }

    /// Every cached region.
    pub fn regions(&self) -> Vec<crate::proto::RegionInfo> {
        self.cached.read().by_id.values().cloned().collect()
    }

    /// The store leading the region that holds `key`, if placement knows one.
    pub fn leader_store_for(&self, key: &[u8]) -> Option<u64> {
        self.cached
            .read()
            .by_id
            .values()
            .find(|info| info.region.as_ref().is_some_and(|r| crate::raftstore::region_map::region_contains(r, key)))
            .map(|info| info.leader_store_id)
            .filter(|store_id| *store_id != 0)
    }
}

/// Runs until `shutdown` is set: every heartbeat interval, refresh the address book, create the
/// peers of regions placement assigned to this store, and report this store's leaders.
#[allow(clippy::too_many_arguments)]
pub async fn run(
    link: PlacementLink,
    identity: StoreIdentity,
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
    let mut reports = reports::Reports::new();
    // A refusal is said at warn once, then at debug until a heartbeat is accepted again.
    let mut refused = false;
    // Since when no placement member has served a heartbeat.
    let mut unreachable_since: Option<std::time::Instant> = None;
    loop {
        // Every interval, and right after a local region changed (a split's leader reports both
        // halves at once, so routers learn of the new region without waiting).
        tokio::select! {
            _ = ticker.tick() => {}
            _ = router.regions_changed() => {}
            _ = shutdown.changed() => return,
        }
        let local = Local {
            identity: &identity,
            router: &router,
            addresses: &addresses,
            cache: &regions,
            engine: &engine,
            auth: &auth,
        };
        match beat(&link, &local, &mut reports, &changing).await {
            Ok(()) => {
                refused = false;
                if let Some(since) = unreachable_since.take() {
                    let store_id = identity.store_id;
                    tracing::info!(store_id, leader = %link.leader(), down_for = ?since.elapsed(), "placement answers heartbeats again");
                }
            }
            Err(status) if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) => {
                let status = status.message();
                let store_id = identity.store_id;
                if !std::mem::replace(&mut refused, true) {
                    tracing::warn!(store_id, %status, "placement refused this store's heartbeat");
                } else {
                    tracing::debug!(store_id, %status, "placement refused this store's heartbeat");
                }
            }
            // Said at warn once (placement lost its quorum, or every replica is down), then at debug
            // until it answers again.
            Err(error) => {
                let store_id = identity.store_id;
                if unreachable_since.is_none() {
                    unreachable_since = Some(std::time::Instant::now());
                    tracing::warn!(store_id, placement = %link.addrs_text(), %error, "placement heartbeat failed; serving from what we know");
                } else {
                    tracing::debug!(store_id, %error, "placement heartbeat failed; serving from what we know");
                }
            }
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

/// What a heartbeat reads and updates on this node.
struct Local<'a> {
    identity: &'a StoreIdentity,
    router: &'a Router,
    addresses: &'a AddressBook,
    cache: &'a RegionCache,
    engine: &'a crate::storage::Engine,
    auth: &'a Arc<NodeAuth>,
}

/// One heartbeat. Every call in it is retried within the link's deadline: listings change nothing,
/// and a heartbeat sent twice only reports the same state twice.
async fn beat(
    link: &PlacementLink,
    local: &Local<'_>,
    reports: &mut reports::Reports,
    changing: &Changing,
) -> Result<(), CallError> {
    let Local { identity, router, addresses, cache, engine, auth } = *local;
    let store_id = identity.store_id;
    let listed = async {
        let stores = link
            .call(Retry::Idempotent, |channel| async move {
                PlacementClient::new(channel).get_stores(as_member(GetStoresRequest {}, auth, store_id)).await
            })
            .await?
            .stores;
        let regions = link
            .call(Retry::Idempotent, |channel| async move {
                PlacementClient::new(channel).get_regions(as_member(cache.request(), auth, store_id)).await
            })
            .await?;
        Ok::<_, CallError>((stores, regions))
    };
    match listed.await {
        Ok((stores, regions)) => {
            addresses.update(stores);
            cache.apply(regions);
        }
        // Auth was enabled after this node's last state: the heartbeat below brings the new one
        // (and its key for the store token); the listings wait for the next round.
        Err(error) if error.code() == tonic::Code::Unauthenticated => {
            tracing::debug!(store_id, %error, "placement's listings need a newer auth state; heartbeating for it");
        }
        Err(error) => return Err(error),
    }
    if router.holds_no_region() {
        // A new store waits for the first region; later regions arrive by splits and raft messages.
        for info in cache.regions() {
            let Some(region) = info.region else { continue };
            if region.epoch == Some(BOOTSTRAP_EPOCH) && region.peers.iter().any(|p| p.store_id == store_id) {
                if let Err(err) = router.create_peer(region).await {
                    tracing::warn!(store_id, error = %err, "cannot create a bootstrapped peer");
                }
            }
        }
    }
    // Without the raftstore's answer (busy), the heartbeat still says the store is alive. Only the
    // statuses of peers that may have changed, or are due, are asked for: building every one of
    // 10,000 was most of an idle node's CPU.
    let wanted = reports.wanted();
    let since = wanted.since;
    let changed = router.changed_status(since, move |region_id| wanted.includes(region_id)).await.ok();
    let current = changed.map(|changed| {
        let reports = changed
            .peers
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
            .collect();
        (reports, changed.generation)
    });
    let used_bytes = engine.stats().map(|s| s.used_bytes).unwrap_or(0);
    // Only what changed (or is due in the rotation); confirmed once placement answered, so a report
    // a failed heartbeat carried goes again with the next one.
    let mut batch = current.map(|(current, generation)| reports.select_changed(current, generation));
    let mut request = StoreHeartbeatRequest {
        store_id,
        used_bytes,
        store_secret: identity.secret.clone(),
        auth_revision: auth.revision(),
        ..Default::default()
    };
    if let Some(batch) = &mut batch {
        (request.peers, request.full_report) = (std::mem::take(&mut batch.peers), batch.full);
    }
    let sent = link.call(Retry::Idempotent, |channel| {
        let request = request.clone();
        async move { PlacementClient::new(channel).store_heartbeat(request).await }
    });
    let reply = match sent.await {
        Ok(reply) => reply,
        Err(status) => {
            if let Some(batch) = batch {
                reports.failed(batch);
            }
            return Err(status);
        }
    };
    if let Some(batch) = batch {
        reports.confirm(batch);
    }
    receive_auth(auth, reply.auth).await;
    if reply.send_full_report {
        tracing::debug!(store_id, "placement asks for a full report");
        reports.want_full();
    }
    for stale in reply.stale_peers {
        destroy_stale_peer(router, stale);
    }
    for operator in reply.operators {
        let region_id = operator.region_id;
        reports.operator_came(region_id);
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
    let envelope = crate::raftstore::transport::RaftEnvelope::tombstone(
        stale.region_id,
        crate::proto::Peer::default(),
        peer,
        stale.epoch.unwrap_or_default(),
    );
    // Lost on a full inbox like any raft message; placement says it again next heartbeat.
    let _ = router.store_inbox().try_send(crate::raftstore::msg::StoreMsg::Raft(Box::new(envelope)));
}

#[cfg(test)]
#[path = "cluster_link/register_tests.rs"]
mod register_tests;
