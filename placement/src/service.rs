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
pub mod guard;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use self::guard::{Guard, Need};
use crate::proto::placement_auth_server::PlacementAuthServer;
use crate::proto::placement_server::{Placement as PlacementRpc, PlacementServer};
use crate::proto::*;
use crate::state::{Placement, PlacementError};

fn status(err: PlacementError) -> Status {
    match err {
        PlacementError::UnknownStore(_) | PlacementError::UnknownRegion(_) | PlacementError::UnknownScheduler(_) => {
            Status::not_found(err.to_string())
        }
        PlacementError::Invalid(_) => Status::invalid_argument(err.to_string()),
        // A removed store must not come back as if nothing happened: its node sees this and stops.
        PlacementError::StoreRemoved(_) => Status::failed_precondition(err.to_string()),
        PlacementError::Auth(err) => auth::admin_status(&err),
        PlacementError::Storage(_)
        | PlacementError::Write(_)
        | PlacementError::Corrupt(_)
        | PlacementError::KeyGeneration(_) => Status::internal(err.to_string()),
    }
}

/// Runs a call that may wait for the disk on the blocking pool.
async fn durable<T: Send + 'static>(
    placement: &Arc<Placement>,
    call: impl FnOnce(&Placement) -> Result<T, PlacementError> + Send + 'static,
) -> Result<T, Status> {
    let placement = placement.clone();
    match tokio::task::spawn_blocking(move || call(&placement)).await {
        Ok(result) => result.map_err(status),
        Err(err) => Err(Status::internal(format!("placement call failed: {err}"))),
    }
}

pub struct PlacementService {
    placement: Arc<Placement>,
    guard: Arc<Guard>,
}

impl PlacementService {
    async fn durable<T: Send + 'static>(
        &self,
        call: impl FnOnce(&Placement) -> Result<T, PlacementError> + Send + 'static,
    ) -> Result<T, Status> {
        durable(&self.placement, call).await
    }
}

#[tonic::async_trait]
impl PlacementRpc for PlacementService {
    async fn register_store(
        &self,
        req: Request<RegisterStoreRequest>,
    ) -> Result<Response<RegisterStoreResponse>, Status> {
        let req = req.into_inner();
        let (raft_addr, http_addr) = (req.raft_addr.clone(), req.http_addr.clone());
        let auth_revision = req.auth_revision;
        let (store_id, cluster_id) = self.durable(move |p| p.register_store(&req)).await?;
        tracing::info!(store_id, %raft_addr, %http_addr, "store registered");
        let auth = self.placement.auth_newer_than(auth_revision);
        Ok(Response::new(RegisterStoreResponse { store_id, cluster_id, auth }))
    }

    async fn get_stores(&self, req: Request<GetStoresRequest>) -> Result<Response<GetStoresResponse>, Status> {
        self.guard.check(&req, Need::Member).await?;
        Ok(Response::new(GetStoresResponse { stores: self.placement.stores() }))
    }

    async fn get_regions(&self, req: Request<GetRegionsRequest>) -> Result<Response<GetRegionsResponse>, Status> {
        self.guard.check(&req, Need::Member).await?;
        Ok(Response::new(GetRegionsResponse { regions: self.placement.regions() }))
    }

    async fn store_heartbeat(
        &self,
        req: Request<StoreHeartbeatRequest>,
    ) -> Result<Response<StoreHeartbeatResponse>, Status> {
        let req = req.into_inner();
        let auth_revision = req.auth_revision;
        let (operators, stale_peers) =
            self.durable(move |p| Ok((p.store_heartbeat(&req)?, p.stale_peers(&req)))).await?;
        let auth = self.placement.auth_newer_than(auth_revision);
        Ok(Response::new(StoreHeartbeatResponse { operators, stale_peers, auth }))
    }

    async fn alloc_id(&self, req: Request<AllocIdRequest>) -> Result<Response<AllocIdResponse>, Status> {
        let count = req.get_ref().count.max(1) as usize;
        let ids = self.durable(move |p| p.alloc_ids(count)).await?;
        Ok(Response::new(AllocIdResponse { id: ids[0], ids }))
    }

    async fn get_region_by_key(
        &self,
        req: Request<GetRegionByKeyRequest>,
    ) -> Result<Response<GetRegionByKeyResponse>, Status> {
        self.guard.check(&req, Need::Member).await?;
        Ok(Response::new(GetRegionByKeyResponse { region: self.placement.region_by_key(&req.get_ref().key) }))
    }

    async fn transfer_leader(
        &self,
        req: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        self.guard.check(&req, Need::Admin).await?;
        let req = req.into_inner();
        let operator = self.durable(move |p| p.transfer_leader(req.region_id, req.to_store_id)).await?;
        Ok(Response::new(TransferLeaderResponse { operator: Some(operator) }))
    }

    async fn split_region(&self, req: Request<SplitRegionRequest>) -> Result<Response<SplitRegionResponse>, Status> {
        self.guard.check(&req, Need::Admin).await?;
        let req = req.into_inner();
        let operator = self.durable(move |p| p.split_region(req.region_id, req.split_key)).await?;
        Ok(Response::new(SplitRegionResponse { operator: Some(operator) }))
    }

    async fn add_peer(&self, req: Request<AddPeerRequest>) -> Result<Response<OperatorResponse>, Status> {
        self.guard.check(&req, Need::Admin).await?;
        let req = req.into_inner();
        let operator = self.durable(move |p| p.add_peer(req.region_id, req.store_id)).await?;
        Ok(Response::new(OperatorResponse { operator: Some(operator) }))
    }

    async fn remove_peer(&self, req: Request<RemovePeerRequest>) -> Result<Response<OperatorResponse>, Status> {
        self.guard.check(&req, Need::Admin).await?;
        let req = req.into_inner();
        let operator = self.durable(move |p| p.remove_peer(req.region_id, req.store_id)).await?;
        Ok(Response::new(OperatorResponse { operator: Some(operator) }))
    }

    async fn get_operators(&self, req: Request<GetOperatorsRequest>) -> Result<Response<GetOperatorsResponse>, Status> {
        self.guard.check(&req, Need::Member).await?;
        let (running, history) = self.placement.operators();
        Ok(Response::new(GetOperatorsResponse { running, history }))
    }

    async fn remove_store(&self, req: Request<RemoveStoreRequest>) -> Result<Response<RemoveStoreResponse>, Status> {
        self.guard.check(&req, Need::Admin).await?;
        let store_id = req.get_ref().store_id;
        let store = self.durable(move |p| p.remove_store(store_id)).await?;
        Ok(Response::new(RemoveStoreResponse { store: Some(store) }))
    }

    async fn get_schedulers(
        &self,
        req: Request<GetSchedulersRequest>,
    ) -> Result<Response<GetSchedulersResponse>, Status> {
        self.guard.check(&req, Need::Member).await?;
        Ok(Response::new(GetSchedulersResponse { schedulers: self.placement.schedulers() }))
    }

    async fn set_scheduler(
        &self,
        req: Request<SetSchedulerRequest>,
    ) -> Result<Response<GetSchedulersResponse>, Status> {
        self.guard.check(&req, Need::Admin).await?;
        let req = req.into_inner();
        let schedulers = self.durable(move |p| p.set_scheduler(&req.name, req.enabled)).await?;
        Ok(Response::new(GetSchedulersResponse { schedulers }))
    }
}

/// Runs a scheduling round every `interval` until `shutdown` resolves. A round that fails (placement's
/// storage refused a write) is logged and the next one tries again.
pub async fn run_schedulers(placement: Arc<Placement>, interval: Duration, shutdown: impl Future<Output = ()>) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = &mut shutdown => return,
        }
        // The round holds placement's lock and may write LMDB: off the async workers.
        let round = placement.clone();
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

/// Serves the placement service (and its auth service) on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    placement: Arc<Placement>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    let guard = Arc::new(Guard::new(&placement.auth_state(), placement.options().password_cost)?);
    let auth = auth::AuthService { placement: placement.clone(), guard: guard.clone() };
    tonic::transport::Server::builder()
        .add_service(PlacementServer::new(PlacementService { placement, guard }))
        .add_service(PlacementAuthServer::new(auth))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests;
