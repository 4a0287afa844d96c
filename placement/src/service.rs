//! The placement service over gRPC. Its errors become gRPC statuses here, in one place.

use std::future::Future;
use std::sync::Arc;

use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

use crate::proto::placement_server::{Placement as PlacementRpc, PlacementServer};
use crate::proto::*;
use crate::state::{Placement, PlacementError};

fn status(err: PlacementError) -> Status {
    match err {
        PlacementError::UnknownStore(_) | PlacementError::UnknownRegion(_) => Status::not_found(err.to_string()),
        PlacementError::Invalid(_) => Status::invalid_argument(err.to_string()),
        PlacementError::Storage(_) | PlacementError::Corrupt(_) => Status::internal(err.to_string()),
    }
}

pub struct PlacementService {
    placement: Arc<Placement>,
}

#[tonic::async_trait]
impl PlacementRpc for PlacementService {
    async fn register_store(
        &self,
        req: Request<RegisterStoreRequest>,
    ) -> Result<Response<RegisterStoreResponse>, Status> {
        let (store_id, cluster_id) = self.placement.register_store(req.get_ref()).map_err(status)?;
        tracing::info!(store_id, raft_addr = %req.get_ref().raft_addr, http_addr = %req.get_ref().http_addr, "store registered");
        Ok(Response::new(RegisterStoreResponse { store_id, cluster_id }))
    }

    async fn get_stores(&self, _: Request<GetStoresRequest>) -> Result<Response<GetStoresResponse>, Status> {
        Ok(Response::new(GetStoresResponse { stores: self.placement.stores() }))
    }

    async fn get_regions(&self, _: Request<GetRegionsRequest>) -> Result<Response<GetRegionsResponse>, Status> {
        Ok(Response::new(GetRegionsResponse { regions: self.placement.regions() }))
    }

    async fn store_heartbeat(
        &self,
        req: Request<StoreHeartbeatRequest>,
    ) -> Result<Response<StoreHeartbeatResponse>, Status> {
        let operators = self.placement.store_heartbeat(req.get_ref()).map_err(status)?;
        Ok(Response::new(StoreHeartbeatResponse { operators }))
    }

    async fn alloc_id(&self, req: Request<AllocIdRequest>) -> Result<Response<AllocIdResponse>, Status> {
        let ids = self.placement.alloc_ids(req.get_ref().count.max(1) as usize).map_err(status)?;
        Ok(Response::new(AllocIdResponse { id: ids[0], ids }))
    }

    async fn get_region_by_key(
        &self,
        req: Request<GetRegionByKeyRequest>,
    ) -> Result<Response<GetRegionByKeyResponse>, Status> {
        Ok(Response::new(GetRegionByKeyResponse { region: self.placement.region_by_key(&req.get_ref().key) }))
    }

    async fn transfer_leader(
        &self,
        req: Request<TransferLeaderRequest>,
    ) -> Result<Response<TransferLeaderResponse>, Status> {
        let req = req.into_inner();
        self.placement.transfer_leader(req.region_id, req.to_store_id).map_err(status)?;
        Ok(Response::new(TransferLeaderResponse {}))
    }

    async fn split_region(&self, req: Request<SplitRegionRequest>) -> Result<Response<SplitRegionResponse>, Status> {
        let req = req.into_inner();
        self.placement.split_region(req.region_id, req.split_key).map_err(status)?;
        Ok(Response::new(SplitRegionResponse {}))
    }
}

/// Serves the placement service on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    placement: Arc<Placement>,
    shutdown: impl Future<Output = ()>,
) -> Result<(), tonic::transport::Error> {
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tonic::transport::Server::builder()
        .add_service(PlacementServer::new(PlacementService { placement }))
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await
}
