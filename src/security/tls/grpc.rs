//! gRPC channels with or without TLS, one way for every client of fekv's gRPC services (a node to
//! other stores and to placement, `fekv ctl`, `fekv cluster`): `http://host:port` over plain TCP
//! when no TLS is configured, `https://host:port` through a [`TlsConnector`] when it is.

use std::sync::Arc;

use tonic::transport::{Channel, Endpoint};

use crate::security::tls::{ClientTls, TlsConnector};

/// The endpoint for `addr` (`host:port`), with the scheme TLS calls for (set its timeouts on it).
/// An address that is no valid URI authority is an error.
pub fn endpoint(addr: &str, tls: Option<&Arc<ClientTls>>) -> Result<Endpoint, tonic::transport::Error> {
    let scheme = if tls.is_some() { "https" } else { "http" };
    Endpoint::from_shared(format!("{scheme}://{addr}"))
}

/// A channel that connects on first use.
pub fn lazy_channel(endpoint: &Endpoint, tls: Option<&Arc<ClientTls>>) -> Channel {
    match tls {
        None => endpoint.connect_lazy(),
        Some(tls) => endpoint.connect_with_connector_lazy(TlsConnector::new(tls.clone())),
    }
}

/// A channel, connected now.
pub async fn connect(endpoint: &Endpoint, tls: Option<&Arc<ClientTls>>) -> Result<Channel, tonic::transport::Error> {
    match tls {
        None => endpoint.connect().await,
        Some(tls) => endpoint.connect_with_connector(TlsConnector::new(tls.clone())).await,
    }
}
