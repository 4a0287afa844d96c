//! The placement service as `fekv ctl` calls it: through a [`PlacementLink`] over the
//! `--placement` list, so every call finds the leader and gives up after `--placement-timeout`; its
//! failures told apart (unreachable, or refused with placement's reason).
//!
//! Which calls are sent again after a failure that leaves unknown whether they took effect (see
//! [`Retry`]): the listings, and `scheduler enable|disable` (it sets a switch to a value). Not the
//! ones that start something (an operator, a drain) or change users and roles: those fail with
//! "may have taken effect", and the listing shows what happened.

use std::future::Future;
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::Channel;

use super::shared::CtlError;
use crate::cluster_link::{CallError, PlacementLink, Retry};
use crate::proto::placement_auth_client::PlacementAuthClient;
use crate::proto::placement_client::PlacementClient;
use crate::proto::{
    AddPeerRequest, GetOperatorsRequest, GetRegionByKeyRequest, GetRegionsRequest, GetSchedulersRequest,
    GetStoresRequest, OperatorInfo, RegionInfo, RemovePeerRequest, RemoveStoreRequest, SchedulerInfo,
    SetSchedulerRequest, SplitRegionRequest, StoreInfo, StoreState,
};

/// The placement group, every call bounded by the link's deadline.
pub(super) struct PlacementConn {
    pub(super) link: PlacementLink,
    /// The caller's credentials, on every call.
    header: AuthHeader,
}

impl PlacementConn {
    /// Placement at `list` (comma-separated `host:port`, or `http://` or `https://` URLs), over TLS
    /// with `tls`; `authorization`: the `Authorization` value every call carries, if any; `deadline`:
    /// how long one call may look for the leader.
    pub(super) fn new(
        list: &str,
        tls: Option<std::sync::Arc<crate::security::tls::ClientTls>>,
        authorization: Option<&str>,
        deadline: Duration,
    ) -> Result<PlacementConn, CtlError> {
        let members = crate::cluster_link::placement_link::parse_members(list, tls.is_some(), "--cacert")
            .map_err(|reason| CtlError::Address { addr: list.to_string(), reason })?;
        let link = PlacementLink::new(&members, tls, deadline)
            .map_err(|err| CtlError::Address { addr: list.to_string(), reason: err.to_string() })?;
        let value = authorization
            .map(|value| value.parse())
            .transpose()
            .map_err(|_| CtlError::Credentials("the user name or password cannot be sent (not ASCII?)".into()))?;
        Ok(PlacementConn { link, header: AuthHeader(value) })
    }

    /// One `Placement` RPC on the leader: `rpc` is called with a client and `request` (again on
    /// another member when the link moves on).
    pub(super) async fn placement<Req: Clone, T, Fut>(
        &self,
        retry: Retry,
        request: Req,
        rpc: impl Fn(PlacementClient<Intercepted>, Req) -> Fut,
    ) -> Result<T, CtlError>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let header = &self.header;
        let called = self
            .link
            .call(retry, |channel| rpc(PlacementClient::with_interceptor(channel, header.clone()), request.clone()));
        called.await.map_err(|err| self.error(err))
    }

    /// One `PlacementAuth` RPC on the leader, as [`Self::placement`].
    pub(super) async fn auth<Req: Clone, T, Fut>(
        &self,
        retry: Retry,
        request: Req,
        rpc: impl Fn(PlacementAuthClient<Intercepted>, Req) -> Fut,
    ) -> Result<T, CtlError>
    where
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let header = &self.header;
        let called = self.link.call(retry, |channel| {
            rpc(PlacementAuthClient::with_interceptor(channel, header.clone()), request.clone())
        });
        called.await.map_err(|err| self.error(err))
    }

    /// A failed call as ctl says it: transport failures mean unreachable, anything else is
    /// placement's answer.
    pub(super) fn error(&self, err: CallError) -> CtlError {
        let (addr, status) = match err {
            CallError::Answered { addr, status } => (addr, status),
            CallError::NoLeader { waited, tried } => {
                let reason = match tried.as_slice() {
                    // One address: what it said, as before placement had replicas.
                    [(_, why)] => format!("no answer within {waited:?}: {why}"),
                    _ => {
                        let tried: Vec<String> = tried.iter().map(|(addr, why)| format!("{addr}: {why}")).collect();
                        format!("no leader answered within {waited:?} ({})", tried.join("; "))
                    }
                };
                return CtlError::PlacementUnreachable { addr: self.link.addrs_text(), reason };
            }
            uncertain @ CallError::Uncertain { .. } => {
                return CtlError::PlacementUnreachable { addr: self.link.addrs_text(), reason: uncertain.to_string() }
            }
        };
        match status.code() {
            // The channel's own timeout ("Timeout expired") ends a call to something that accepted
            // the connection but never answered.
            tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => CtlError::PlacementUnreachable {
                addr,
                reason: format!("no answer within {:?} ({})", self.link.deadline(), status.message()),
            },
            tonic::Code::Unavailable | tonic::Code::Unknown => {
                CtlError::PlacementUnreachable { addr, reason: crate::cluster_link::placement_link::describe(&status) }
            }
            // Something answered, but not a placement service (tonic maps a plain HTTP 404 here).
            tonic::Code::Unimplemented => CtlError::PlacementUnreachable {
                addr,
                reason: format!("it does not answer as a fekv placement service ({})", status.message()),
            },
            _ => CtlError::PlacementRefused { addr, message: status.message().to_string() },
        }
    }

    pub(super) async fn stores(&self) -> Result<Vec<StoreInfo>, CtlError> {
        let reply =
            self.placement(Retry::Idempotent, GetStoresRequest {}, |mut c, r| async move { c.get_stores(r).await });
        Ok(reply.await?.stores)
    }

    /// Every store that has not been removed from the cluster.
    pub(super) async fn live_stores(&self) -> Result<Vec<StoreInfo>, CtlError> {
        let mut stores = self.stores().await?;
        stores.retain(|s| s.state != StoreState::Removed as i32);
        Ok(stores)
    }

    pub(super) async fn add_peer(&self, region_id: u64, store_id: u64) -> Result<OperatorInfo, CtlError> {
        let request = AddPeerRequest { region_id, store_id };
        let reply = self.placement(Retry::Once, request, |mut c, r| async move { c.add_peer(r).await }).await?;
        Ok(reply.operator.unwrap_or_default())
    }

    pub(super) async fn remove_peer(&self, region_id: u64, store_id: u64) -> Result<OperatorInfo, CtlError> {
        let request = RemovePeerRequest { region_id, store_id };
        let reply = self.placement(Retry::Once, request, |mut c, r| async move { c.remove_peer(r).await }).await?;
        Ok(reply.operator.unwrap_or_default())
    }

    pub(super) async fn operators(&self) -> Result<(Vec<OperatorInfo>, Vec<OperatorInfo>), CtlError> {
        let request = GetOperatorsRequest {};
        let reply =
            self.placement(Retry::Idempotent, request, |mut c, r| async move { c.get_operators(r).await }).await?;
        Ok((reply.running, reply.history))
    }

    pub(super) async fn remove_store(&self, store_id: u64) -> Result<StoreInfo, CtlError> {
        let request = RemoveStoreRequest { store_id };
        let reply = self.placement(Retry::Once, request, |mut c, r| async move { c.remove_store(r).await }).await?;
        Ok(reply.store.unwrap_or_default())
    }

    pub(super) async fn schedulers(&self) -> Result<Vec<SchedulerInfo>, CtlError> {
        let request = GetSchedulersRequest {};
        let reply =
            self.placement(Retry::Idempotent, request, |mut c, r| async move { c.get_schedulers(r).await }).await?;
        Ok(reply.schedulers)
    }

    pub(super) async fn set_scheduler(&self, name: String, enabled: bool) -> Result<Vec<SchedulerInfo>, CtlError> {
        let request = SetSchedulerRequest { name, enabled };
        let reply =
            self.placement(Retry::Idempotent, request, |mut c, r| async move { c.set_scheduler(r).await }).await?;
        Ok(reply.schedulers)
    }

    pub(super) async fn regions(&self) -> Result<Vec<RegionInfo>, CtlError> {
        let request = GetRegionsRequest::default();
        let reply = self.placement(Retry::Idempotent, request, |mut c, r| async move { c.get_regions(r).await });
        Ok(reply.await?.regions)
    }

    pub(super) async fn region(&self, region_id: u64) -> Result<Option<RegionInfo>, CtlError> {
        Ok(self.regions().await?.into_iter().find(|info| info.region.as_ref().map(|r| r.region_id) == Some(region_id)))
    }

    pub(super) async fn region_by_key(&self, key: Vec<u8>) -> Result<Option<RegionInfo>, CtlError> {
        let request = GetRegionByKeyRequest { key };
        let reply =
            self.placement(Retry::Idempotent, request, |mut c, r| async move { c.get_region_by_key(r).await }).await?;
        Ok(reply.region)
    }

    pub(super) async fn transfer_leader(&self, region_id: u64, to_store_id: u64) -> Result<OperatorInfo, CtlError> {
        let request = crate::proto::TransferLeaderRequest { region_id, to_store_id };
        let reply = self.placement(Retry::Once, request, |mut c, r| async move { c.transfer_leader(r).await }).await?;
        Ok(reply.operator.unwrap_or_default())
    }

    pub(super) async fn split(&self, region_id: u64, split_key: Vec<u8>) -> Result<OperatorInfo, CtlError> {
        let request = SplitRegionRequest { region_id, split_key };
        let reply = self.placement(Retry::Once, request, |mut c, r| async move { c.split_region(r).await }).await?;
        Ok(reply.operator.unwrap_or_default())
    }
}

/// Adds the `authorization` metadata to every call on a channel.
#[derive(Clone)]
pub(super) struct AuthHeader(pub Option<MetadataValue<Ascii>>);

impl tonic::service::Interceptor for AuthHeader {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request.metadata_mut().insert("authorization", value.clone());
        }
        Ok(request)
    }
}

pub(super) type Intercepted = tonic::service::interceptor::InterceptedService<Channel, AuthHeader>;
