//! The placement service as `fekv ctl` calls it: every call bounded by [`CALL_TIMEOUT`], its
//! failures told apart (unreachable, or refused with placement's reason).

use super::*;

/// The placement service, every call bounded by [`CALL_TIMEOUT`].
pub(super) struct PlacementConn {
    addr: String,
    pub(super) channel: Channel,
    /// The caller's credentials, on every call.
    pub(super) header: super::auth::AuthHeader,
    client: PlacementClient<super::auth::Intercepted>,
}

impl PlacementConn {
    /// Placement at `addr` (`host:port`, or an `http://` or `https://` URL), over TLS with `tls`;
    /// `authorization`: the `Authorization` value every call carries, if any.
    pub(super) fn new(
        addr: &str,
        tls: Option<std::sync::Arc<crate::security::tls::ClientTls>>,
        authorization: Option<&str>,
    ) -> Result<PlacementConn, CtlError> {
        let invalid = |reason: String| CtlError::Address { addr: addr.to_string(), reason };
        // Take a URL too, as people paste them.
        let (addr, _) = crate::security::config::endpoint_scheme(addr, tls.is_some()).map_err(invalid)?;
        if addr.is_empty() || addr.contains('/') {
            return Err(invalid("expected host:port".into()));
        }
        let endpoint = crate::security::tls::grpc::endpoint(addr, tls.as_ref())
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT);
        let channel = crate::security::tls::grpc::lazy_channel(&endpoint, tls.as_ref());
        let value = authorization
            .map(|value| value.parse())
            .transpose()
            .map_err(|_| CtlError::Credentials("the user name or password cannot be sent (not ASCII?)".into()))?;
        let header = super::auth::AuthHeader(value);
        let client = PlacementClient::with_interceptor(channel.clone(), header.clone());
        Ok(PlacementConn { addr: addr.to_string(), channel, header, client })
    }

    /// Awaits one RPC with a deadline; transport failures mean unreachable, anything else is
    /// placement's answer.
    pub(super) async fn call<T>(
        &self,
        rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CtlError> {
        match tokio::time::timeout(CALL_TIMEOUT, rpc).await {
            Err(_) => Err(CtlError::PlacementUnreachable {
                addr: self.addr.clone(),
                reason: format!("no answer within {CALL_TIMEOUT:?}"),
            }),
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => Err(match status.code() {
                // The channel's own timeout ("Timeout expired") ends a call to something that
                // accepted the connection but never answered.
                tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => CtlError::PlacementUnreachable {
                    addr: self.addr.clone(),
                    reason: format!("no answer within {CALL_TIMEOUT:?} ({})", status.message()),
                },
                tonic::Code::Unavailable | tonic::Code::Unknown => {
                    CtlError::PlacementUnreachable { addr: self.addr.clone(), reason: describe(&status) }
                }
                // Something answered, but not a placement service (tonic maps a plain HTTP 404 here).
                tonic::Code::Unimplemented => CtlError::PlacementUnreachable {
                    addr: self.addr.clone(),
                    reason: format!("it does not answer as a fekv placement service ({})", status.message()),
                },
                _ => CtlError::PlacementRefused { addr: self.addr.clone(), message: status.message().to_string() },
            }),
        }
    }

    pub(super) async fn stores(&self) -> Result<Vec<StoreInfo>, CtlError> {
        Ok(self.call(self.client.clone().get_stores(GetStoresRequest {})).await?.stores)
    }

    /// Every store that has not been removed from the cluster.
    pub(super) async fn live_stores(&self) -> Result<Vec<StoreInfo>, CtlError> {
        let mut stores = self.stores().await?;
        stores.retain(|s| s.state != StoreState::Removed as i32);
        Ok(stores)
    }

    pub(super) async fn add_peer(&self, region_id: u64, store_id: u64) -> Result<OperatorInfo, CtlError> {
        let reply = self.call(self.client.clone().add_peer(AddPeerRequest { region_id, store_id })).await?;
        Ok(reply.operator.unwrap_or_default())
    }

    pub(super) async fn remove_peer(&self, region_id: u64, store_id: u64) -> Result<OperatorInfo, CtlError> {
        let reply = self.call(self.client.clone().remove_peer(RemovePeerRequest { region_id, store_id })).await?;
        Ok(reply.operator.unwrap_or_default())
    }

    pub(super) async fn operators(&self) -> Result<(Vec<OperatorInfo>, Vec<OperatorInfo>), CtlError> {
        let reply = self.call(self.client.clone().get_operators(GetOperatorsRequest {})).await?;
        Ok((reply.running, reply.history))
    }

    pub(super) async fn remove_store(&self, store_id: u64) -> Result<StoreInfo, CtlError> {
        let reply = self.call(self.client.clone().remove_store(RemoveStoreRequest { store_id })).await?;
        Ok(reply.store.unwrap_or_default())
    }

    pub(super) async fn schedulers(&self) -> Result<Vec<SchedulerInfo>, CtlError> {
        Ok(self.call(self.client.clone().get_schedulers(GetSchedulersRequest {})).await?.schedulers)
    }

    pub(super) async fn set_scheduler(&self, name: String, enabled: bool) -> Result<Vec<SchedulerInfo>, CtlError> {
        let request = SetSchedulerRequest { name, enabled };
        Ok(self.call(self.client.clone().set_scheduler(request)).await?.schedulers)
    }

    pub(super) async fn regions(&self) -> Result<Vec<RegionInfo>, CtlError> {
        Ok(self.call(self.client.clone().get_regions(GetRegionsRequest::default())).await?.regions)
    }

    pub(super) async fn region(&self, region_id: u64) -> Result<Option<RegionInfo>, CtlError> {
        Ok(self.regions().await?.into_iter().find(|info| info.region.as_ref().map(|r| r.region_id) == Some(region_id)))
    }

    pub(super) async fn region_by_key(&self, key: Vec<u8>) -> Result<Option<RegionInfo>, CtlError> {
        Ok(self.call(self.client.clone().get_region_by_key(GetRegionByKeyRequest { key })).await?.region)
    }

    pub(super) async fn transfer_leader(&self, region_id: u64, to_store_id: u64) -> Result<OperatorInfo, CtlError> {
        let request = crate::proto::TransferLeaderRequest { region_id, to_store_id };
        Ok(self.call(self.client.clone().transfer_leader(request)).await?.operator.unwrap_or_default())
    }

    pub(super) async fn split(&self, region_id: u64, split_key: Vec<u8>) -> Result<OperatorInfo, CtlError> {
        let request = SplitRegionRequest { region_id, split_key };
        Ok(self.call(self.client.clone().split_region(request)).await?.operator.unwrap_or_default())
    }
}

/// A gRPC status with the transport error underneath it ("tcp connect error: Connection refused").
pub(super) fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let more = err.to_string();
        if !text.contains(&more) {
            text = if text.is_empty() { more } else { format!("{text}: {more}") };
        }
        source = err.source();
    }
    if text.is_empty() {
        format!("{:?}", status.code())
    } else {
        text
    }
}
