//! The placement service over gRPC, and the loop that runs its schedulers. Its errors become gRPC
//! statuses here, in one place.
//!
//! A call that changes placement's state returns once the change is durable (an fsync, see
//! `state/persist.rs`): it runs on tokio's blocking pool, never on an async worker. Listings only
//! read memory under a short lock and answer on the worker.
//!
//! Once auth is enabled, the calls that change the cluster need the root role and the listings an
//! authenticated user or store ([`guard`]); users, roles and the switch are the `PlacementAuth`
//! service ([`auth`]), on the same server.

mod auth;
pub mod cert;
pub mod guard;
mod serving;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio_stream::Stream;
use tonic::transport::server::Connected;
use tonic::{Extensions, Request, Response, Status};

use self::guard::Need;
pub use self::serving::Source;
use self::serving::{GroupService, Serving};
use crate::proto::placement_auth_server::PlacementAuthServer;
use crate::proto::placement_group_server::PlacementGroupServer;
use crate::proto::placement_server::{Placement as PlacementRpc, PlacementServer};
use crate::proto::*;
use crate::state::{Placement, PlacementError};

fn status(err: PlacementError) -> Status {
    match err {
        PlacementError::UnknownStore(_) | PlacementError::UnknownRegion(_) | PlacementError::UnknownScheduler(_) => {
            Status::not_found(err.to_string())
        }
        PlacementError::Invalid(_) => Status::invalid_argument(err.to_string()),
        PlacementError::Unavailable(_) => Status::unavailable(err.to_string()),
        // A removed store must not come back as if nothing happened: its node sees this and stops.
        PlacementError::StoreRemoved(_) => Status::failed_precondition(err.to_string()),
        PlacementError::Auth(err) => auth::admin_status(&err),
        PlacementError::Storage(_)
        | PlacementError::Write(_)
        | PlacementError::Corrupt(_)
        | PlacementError::KeyGeneration(_) => Status::internal(err.to_string()),
        PlacementError::StoreUnauthenticated { .. } => Status::unauthenticated(err.to_string()),
        PlacementError::WrongCluster { .. } => Status::permission_denied(err.to_string()),
    }
}

/// Runs a call that may wait for the disk (or the group's raft) on the blocking pool.
async fn durable<T: Send + 'static>(
    serving: &Serving,
    placement: &Arc<Placement>,
    call: impl FnOnce(&Placement) -> Result<T, PlacementError> + Send + 'static,
) -> Result<T, Status> {
    let placement = placement.clone();
    match tokio::task::spawn_blocking(move || call(&placement)).await {
        Ok(result) => result.map_err(|err| serving.hinted(status(err))),
        Err(err) => Err(Status::internal(format!("placement call failed: {err}"))),
    }
}

/// The time the caller gives a call (its `grpc-timeout`), if it said.
fn deadline_of<T>(req: &Request<T>) -> Option<Duration> {
    let value = req.metadata().get("grpc-timeout")?.to_str().ok()?;
    let (amount, unit) = value.split_at(value.len().checked_sub(1)?);
    let amount: u64 = amount.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount * 3600),
        "M" => Duration::from_secs(amount * 60),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

/// Finds the caller's address in a request's extensions (where tonic puts the connection's info).
pub type PeerAddrOf = fn(&Extensions) -> Option<SocketAddr>;

/// The caller's address as the interceptor of [`serve_incoming`] recorded it.
#[derive(Debug, Clone, Copy)]
struct CallerAddr(SocketAddr);

/// The caller's address: the one the interceptor recorded, else tonic's own.
fn caller_addr<T>(req: &Request<T>) -> Option<SocketAddr> {
    req.extensions().get::<CallerAddr>().map(|caller| caller.0).or_else(|| req.remote_addr())
}

fn caller<T>(req: &Request<T>) -> String {
    caller_addr(req).map_or_else(|| "unknown".to_string(), |addr| addr.to_string())
}

/// Logs a refused store identity (someone tried to speak for a store) at `warn`.
fn log_refusal(result: &Result<impl Sized, Status>, rpc: &str, store_id: u64, peer: &str) {
    if let Err(status) = result {
        if matches!(status.code(), tonic::Code::Unauthenticated | tonic::Code::PermissionDenied) {
            tracing::warn!(rpc, store_id, peer, reason = status.message(), "refused a store's claim");
        }
    }
}

pub struct PlacementService {
    serving: Arc<Serving>,
}

impl PlacementService {
    async fn durable<T: Send + 'static>(
        &self,
        placement: &Arc<Placement>,
        call: impl FnOnce(&Placement) -> Result<T, PlacementError> + Send + 'static,
    ) -> Result<T, Status> {
        durable(&self.serving, placement, call).await
    }
}

#[tonic::async_trait]
impl PlacementRpc for PlacementService {
    async fn register_store(
        &self,
        req: Request<RegisterStoreRequest>,
    ) -> Result<Response<RegisterStoreResponse>, Status> {
        let leader = self.serving.leader()?;
        let (peer, identity) = (caller(&req), cert::identity(&req));
        let req = req.into_inner();
        let (claimed, raft_addr, http_addr) = (req.store_id, req.raft_addr.clone(), req.http_addr.clone());
        let auth_revision = req.auth_revision;
        let registered = self.durable(&leader.placement, move |p| p.register_store_as(&req, identity.as_deref())).await;
        log_refusal(&registered, "RegisterStore", claimed, &peer);
        let registered = registered?;
        tracing::info!(store_id = registered.store_id, %raft_addr, %http_addr, %peer, "store registered");
        let auth = leader.placement.auth_newer_than(auth_revision);
        Ok(Response::new(RegisterStoreResponse { auth, ..registered }))
    }

    async fn get_stores(&self, req: Request<GetStoresRequest>) -> Result<Response<GetStoresResponse>, Status> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Member).await?;
        Ok(Response::new(GetStoresResponse { stores: leader.placement.stores() }))
    }

    async fn get_regions(&self, req: Request<GetRegionsRequest>) -> Result<Response<GetRegionsResponse>, Status> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Member).await?;
        Ok(Response::new(leader.placement.regions_since(req.get_ref())))
    }

    async fn store_heartbeat(
        &self,
        req: Request<StoreHeartbeatRequest>,
    ) -> Result<Response<StoreHeartbeatResponse>, Status> {
        let leader = self.serving.leader()?;
        let (peer, identity) = (caller(&req), cert::identity(&req));
        let req = req.into_inner();
        let authenticated = (leader.placement.authenticate_store(req.store_id, &req.store_secret))
            .and_then(|()| leader.placement.check_store_cert(req.store_id, identity.as_deref()))
            .map_err(status);
        log_refusal(&authenticated, "StoreHeartbeat", req.store_id, &peer);
        authenticated?;
        let auth_revision = req.auth_revision;
        let reply = self
            .durable(&leader.placement, move |p| {
                let operators = p.store_heartbeat(&req)?;
                let send_full_report = p.wants_full_report(req.store_id);
                Ok(StoreHeartbeatResponse { operators, stale_peers: p.stale_peers(&req), send_full_report, auth: None })
            })
            .await?;
        let auth = leader.placement.auth_newer_than(auth_revision);
        Ok(Response::new(StoreHeartbeatResponse { auth, ..reply }))
    }

    async fn alloc_id(&self, req: Request<AllocIdRequest>) -> Result<Response<AllocIdResponse>, Status> {
        let leader = self.serving.leader()?;
        let count = req.get_ref().count.max(1) as usize;
        let ids = self.durable(&leader.placement, move |p| p.alloc_ids(count)).await?;
        Ok(Response::new(AllocIdResponse { id: ids[0], ids }))
    }

    async fn get_region_by_key(
        &self,
        req: Request<GetRegionByKeyRequest>,
    ) -> Result<Response<GetRegionByKeyResponse>, Status> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Member).await?;
        Ok(Response::new(GetRegionByKeyResponse { region: leader.placement.region_by_key(&req.get_ref().key) }))
    }

    async fn transfer_leader(
        &self,
        req: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let req = req.into_inner();
        let operator =
            self.durable(&leader.placement, move |p| p.transfer_leader(req.region_id, req.to_store_id)).await?;
        Ok(Response::new(TransferLeaderResponse { operator: Some(operator) }))
    }

    async fn split_region(&self, req: Request<SplitRegionRequest>) -> Result<Response<SplitRegionResponse>, Status> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let req = req.into_inner();
        let operator = self.durable(&leader.placement, move |p| p.split_region(req.region_id, req.split_key)).await?;
        Ok(Response::new(SplitRegionResponse { operator: Some(operator) }))
    }

    async fn add_peer(&self, req: Request<AddPeerRequest>) -> Result<Response<OperatorResponse>, Status> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let req = req.into_inner();
        let operator = self.durable(&leader.placement, move |p| p.add_peer(req.region_id, req.store_id)).await?;
        Ok(Response::new(OperatorResponse { operator: Some(operator) }))
    }

    async fn remove_peer(&self, req: Request<RemovePeerRequest>) -> Result<Response<OperatorResponse>, Status> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let req = req.into_inner();
        let operator = self.durable(&leader.placement, move |p| p.remove_peer(req.region_id, req.store_id)).await?;
        Ok(Response::new(OperatorResponse { operator: Some(operator) }))
    }

    async fn get_operators(&self, req: Request<GetOperatorsRequest>) -> Result<Response<GetOperatorsResponse>, Status> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Member).await?;
        let (running, history) = leader.placement.operators();
        Ok(Response::new(GetOperatorsResponse { running, history }))
    }

    async fn remove_store(&self, req: Request<RemoveStoreRequest>) -> Result<Response<RemoveStoreResponse>, Status> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let store_id = req.get_ref().store_id;
        let store = self.durable(&leader.placement, move |p| p.remove_store(store_id)).await?;
        Ok(Response::new(RemoveStoreResponse { store: Some(store) }))
    }

    async fn get_schedulers(
        &self,
        req: Request<GetSchedulersRequest>,
    ) -> Result<Response<GetSchedulersResponse>, Status> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Member).await?;
        Ok(Response::new(GetSchedulersResponse { schedulers: leader.placement.schedulers() }))
    }

    async fn set_scheduler(
        &self,
        req: Request<SetSchedulerRequest>,
    ) -> Result<Response<GetSchedulersResponse>, Status> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let req = req.into_inner();
        let schedulers = self.durable(&leader.placement, move |p| p.set_scheduler(&req.name, req.enabled)).await?;
        Ok(Response::new(GetSchedulersResponse { schedulers }))
    }
}

/// Runs a scheduling round every `interval` until `shutdown` resolves, while `source` serves (a
/// group's follower does not schedule). A round that fails (placement's storage refused a write, or
/// the replica stopped leading) is logged and the next one tries again.
pub async fn run_schedulers(source: impl Into<Source>, interval: Duration, shutdown: impl Future<Output = ()>) {
    let source = source.into();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut shutdown => return,
        }
        // The round holds placement's lock and may write LMDB: off the async workers.
        let Some(round) = source.placement() else { continue };
        match tokio::task::spawn_blocking(move || round.schedule()).await {
            Ok(Ok(_)) => {}
            Ok(Err(err)) => tracing::error!(error = %err, "scheduling round failed"),
            Err(err) => tracing::error!(error = %err, "scheduling round panicked"),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Transport(#[from] tonic::transport::Error),
    #[error("cannot prepare the login checks: {0}")]
    Auth(#[from] crate::auth::PasswordError),
}

/// Serves the placement service (and its auth service) on `listener` (plain TCP) until `shutdown`
/// resolves.
pub async fn serve(
    listener: TcpListener,
    placement: impl Into<Source>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    serve_incoming(incoming, placement, |_| None, |_| None, shutdown).await
}

/// Serves the placement service (and its auth service) on the connections of `incoming` until
/// `shutdown` resolves; `peer_addr_of` finds a caller's address for the logs (and the login
/// limits) where tonic's own `remote_addr` cannot, and `cert_identity_of` the identity of its client
/// certificate (mutual TLS), which stores are bound to.
pub async fn serve_incoming<I, IO, IE>(
    incoming: I,
    source: impl Into<Source>,
    peer_addr_of: PeerAddrOf,
    cert_identity_of: cert::CertIdentityOf,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError>
where
    I: Stream<Item = Result<IO, IE>>,
    IO: AsyncRead + AsyncWrite + Connected + Unpin + Send + 'static,
    IO::ConnectInfo: Clone + Send + Sync + 'static,
    IE: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let record_caller = move |mut req: Request<()>| {
        if let Some(addr) = peer_addr_of(req.extensions()) {
            req.extensions_mut().insert(CallerAddr(addr));
        }
        cert::record(&mut req, cert_identity_of);
        Ok(req)
    };
    let source = source.into();
    let password_cost = match &source {
        Source::Single(placement) => placement.options().password_cost,
        Source::Group(group) => group.config().options.password_cost,
    };
    let raft = match &source {
        Source::Group(group) => Some(crate::group::grpc::RaftService::server(group.inbox().clone())),
        Source::Single(_) => None,
    };
    let serving = Arc::new(Serving::new(source, password_cost)?);
    let auth = auth::AuthService { serving: serving.clone() };
    tonic::transport::Server::builder()
        .add_service(PlacementServer::with_interceptor(PlacementService { serving: serving.clone() }, record_caller))
        .add_service(PlacementAuthServer::with_interceptor(auth, record_caller))
        .add_service(PlacementGroupServer::new(GroupService { serving }))
        .add_optional_service(raft)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
