//! The nodes' REST APIs as `fekv ctl` reaches them: plain HTTP, or HTTPS with the CA (and client
//! certificate) of `--cacert` (`--cert`, `--key`).

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use crate::security::tls::{ClientTls, TlsConnector};

#[derive(Clone)]
pub(super) enum NodeHttp {
    Plain(Client<HttpConnector, Empty<Bytes>>),
    Tls(Client<TlsConnector, Empty<Bytes>>),
}

impl NodeHttp {
    pub(super) fn new(tls: Option<Arc<ClientTls>>) -> NodeHttp {
        let builder = Client::builder(TokioExecutor::new());
        match tls {
            None => NodeHttp::Plain(builder.build_http()),
            Some(tls) => NodeHttp::Tls(builder.build(TlsConnector::new(tls))),
        }
    }

    /// The URL of `path` on the node at `http_addr` (`host:port`, or a URL as people paste them).
    pub(super) fn url(&self, http_addr: &str, path: &str) -> String {
        let addr = http_addr.strip_prefix("https://").or_else(|| http_addr.strip_prefix("http://")).unwrap_or(http_addr);
        let scheme = match self {
            NodeHttp::Plain(_) => "http",
            NodeHttp::Tls(_) => "https",
        };
        format!("{scheme}://{}{path}", addr.trim_end_matches('/'))
    }

    pub(super) async fn request(
        &self,
        request: hyper::Request<Empty<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error> {
        match self {
            NodeHttp::Plain(client) => client.request(request).await,
            NodeHttp::Tls(client) => client.request(request).await,
        }
    }
}
