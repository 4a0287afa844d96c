//! The nodes' REST APIs as `fekv ctl` reaches them: plain HTTP, or HTTPS with the CA (and client
//! certificate) of `--cacert` (`--cert`, `--key`), every request with the caller's credentials
//! (`--user`) once auth is on.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Empty;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::shared::CtlError;
use crate::security::tls::{ClientTls, TlsConnector};

#[derive(Clone)]
enum Connection {
    Plain(Client<HttpConnector, Empty<Bytes>>),
    Tls(Client<TlsConnector, Empty<Bytes>>),
}

#[derive(Clone)]
pub(super) struct NodeHttp {
    connection: Connection,
    /// The `Authorization` every request carries, if a user was given.
    authorization: Option<HeaderValue>,
}

impl NodeHttp {
    pub(super) fn new(tls: Option<Arc<ClientTls>>, authorization: Option<&str>) -> Result<NodeHttp, CtlError> {
        let builder = Client::builder(TokioExecutor::new());
        let connection = match tls {
            None => Connection::Plain(builder.build_http()),
            Some(tls) => Connection::Tls(builder.build(TlsConnector::new(tls))),
        };
        let authorization = authorization
            .map(HeaderValue::from_str)
            .transpose()
            .map_err(|_| CtlError::Credentials("the user name or password cannot be sent (not ASCII?)".into()))?;
        Ok(NodeHttp { connection, authorization })
    }

    /// The URL of `path` on the node at `http_addr` (`host:port`, or a URL as people paste them).
    pub(super) fn url(&self, http_addr: &str, path: &str) -> String {
        let addr =
            http_addr.strip_prefix("https://").or_else(|| http_addr.strip_prefix("http://")).unwrap_or(http_addr);
        let scheme = match self.connection {
            Connection::Plain(_) => "http",
            Connection::Tls(_) => "https",
        };
        format!("{scheme}://{}{path}", addr.trim_end_matches('/'))
    }

    pub(super) async fn request(
        &self,
        mut request: hyper::Request<Empty<Bytes>>,
    ) -> Result<hyper::Response<Incoming>, hyper_util::client::legacy::Error> {
        if let Some(value) = &self.authorization {
            request.headers_mut().insert(AUTHORIZATION, value.clone());
        }
        match &self.connection {
            Connection::Plain(client) => client.request(request).await,
            Connection::Tls(client) => client.request(request).await,
        }
    }
}
