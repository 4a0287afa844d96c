//! One keep-alive HTTP/1.1 connection per worker, and the redirects fekv's followers answer with.
//!
//! hyper's low-level client neither pools nor follows redirects, which is what we want here: a
//! [`Client`] owns exactly one connection at a time (so `--connections` is the number of sockets the
//! server sees), reconnects after an error, and follows `307 Temporary Redirect` itself, re-sending
//! the same method and body. Where a redirect led is remembered in the shared [`LeaderMap`], so a
//! steady run pays one redirect per endpoint, not one per request.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HOST, LOCATION};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use tokio::net::TcpStream;

/// Redirects followed for one request before it counts as an error.
pub const MAX_REDIRECTS: u32 = 3;

/// A node's base URL, `http://host:port`. Two endpoints are the same node when their authorities
/// (`host:port`) are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Endpoint {
    authority: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("'{0}' is not a URL")]
    NotAUrl(String),
    #[error("'{0}': only http:// is supported")]
    Scheme(String),
    #[error("'{0}' has no host")]
    NoHost(String),
    #[error("'{0}' has a path; give the node's base URL, e.g. http://127.0.0.1:3000")]
    Path(String),
}

impl Endpoint {
    /// Parses a base URL; `host:port` alone means `http://host:port`, and a missing port is 80.
    pub fn parse(text: &str) -> Result<Endpoint, EndpointError> {
        let with_scheme = if text.contains("://") { text.to_string() } else { format!("http://{text}") };
        let uri: Uri = with_scheme.parse().map_err(|_| EndpointError::NotAUrl(text.into()))?;
        let endpoint = Endpoint::from_uri(&uri, text)?;
        if !matches!(uri.path(), "" | "/") || uri.query().is_some() {
            return Err(EndpointError::Path(text.into()));
        }
        Ok(endpoint)
    }

    /// The node an absolute URL points at (its path is the caller's business).
    fn from_uri(uri: &Uri, text: &str) -> Result<Endpoint, EndpointError> {
        match uri.scheme_str() {
            Some("http") => {}
            Some(_) => return Err(EndpointError::Scheme(text.into())),
            None => return Err(EndpointError::NotAUrl(text.into())),
        }
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| EndpointError::NoHost(text.into()))?;
        Ok(Endpoint { authority: format!("{host}:{}", uri.port_u16().unwrap_or(80)) })
    }

    /// `host:port`, as connected to and sent in `Host`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `http://host:port`
    pub fn url(&self) -> String {
        format!("http://{}", self.authority)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "http://{}", self.authority)
    }
}

/// Where each endpoint's requests really go: the endpoint a request was first sent to → the endpoint
/// its last redirect led to. Shared by every worker: one worker's redirect saves the others theirs.
#[derive(Default)]
pub struct LeaderMap {
    // Read on every request, written once per redirect: a read-mostly lock.
    leaders: RwLock<HashMap<Endpoint, Endpoint>>,
}

impl LeaderMap {
    pub fn new() -> Arc<LeaderMap> {
        Arc::new(LeaderMap::default())
    }

    /// Where a request for `home` should go now.
    pub fn target(&self, home: &Endpoint) -> Endpoint {
        self.leaders.read().get(home).cloned().unwrap_or_else(|| home.clone())
    }

    pub fn remember(&self, home: &Endpoint, leader: &Endpoint) {
        if home == leader {
            self.leaders.write().remove(home);
        } else {
            self.leaders.write().insert(home.clone(), leader.clone());
        }
    }

    /// Drops `home`'s leader if it is still `leader`: it failed, so ask `home` again.
    pub fn forget(&self, home: &Endpoint, leader: &Endpoint) {
        let mut leaders = self.leaders.write();
        if leaders.get(home) == Some(leader) {
            leaders.remove(home);
        }
    }

    pub fn snapshot(&self) -> HashMap<Endpoint, Endpoint> {
        self.leaders.read().clone()
    }
}

/// A response, body read in full (which is what lets the connection carry the next request).
#[derive(Debug)]
pub struct Reply {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// Why a request got no final response.
#[derive(Debug, Clone, thiserror::Error)]
pub enum RequestError {
    #[error("no response within {0:?}")]
    Timeout(Duration),
    #[error("connection to {endpoint} failed: {reason}")]
    Connection { endpoint: Endpoint, reason: String },
    #[error("more than {MAX_REDIRECTS} redirects")]
    TooManyRedirects,
    #[error("unusable redirect: {0}")]
    BadRedirect(String),
    #[error("cannot build a request for {path}: {reason}")]
    Build { path: String, reason: String },
}

/// What one request came to, and how many redirects it took to get there.
#[derive(Debug)]
pub struct Exchange {
    pub result: Result<Reply, RequestError>,
    pub redirects: u32,
}

struct Connection {
    endpoint: Endpoint,
    sender: SendRequest<Full<Bytes>>,
}

/// One worker's connection: requests go to its home endpoint, or to where the leader map says the
/// home endpoint's requests should go.
pub struct Client {
    home: Endpoint,
    leaders: Arc<LeaderMap>,
    timeout: Duration,
    connection: Option<Connection>,
    /// TCP connections opened so far (1 for a run with no errors and no redirects).
    pub connects: u64,
}

impl Client {
    pub fn new(home: Endpoint, leaders: Arc<LeaderMap>, timeout: Duration) -> Client {
        Client { home, leaders, timeout, connection: None, connects: 0 }
    }

    /// Sends one request, following redirects, within the client's timeout (connecting included).
    pub async fn send(&mut self, method: &Method, path: &str, body: &Bytes) -> Exchange {
        let mut redirects = 0;
        let result = match tokio::time::timeout(self.timeout, self.follow(method, path, body, &mut redirects)).await {
            Ok(result) => result,
            Err(_) => {
                // The connection may still carry the late response: it cannot take another request.
                self.connection = None;
                Err(RequestError::Timeout(self.timeout))
            }
        };
        Exchange { result, redirects }
    }

    async fn follow(
        &mut self,
        method: &Method,
        path: &str,
        body: &Bytes,
        redirects: &mut u32,
    ) -> Result<Reply, RequestError> {
        let mut target = self.leaders.target(&self.home);
        let mut path = path.to_string();
        loop {
            let reply = match self.send_once(&target, method, &path, body).await {
                Ok(reply) => reply,
                Err(err) => {
                    // A leader we were sent to went away: the next request asks home again, which
                    // redirects to the new leader if there is one.
                    self.leaders.forget(&self.home, &target);
                    return Err(err);
                }
            };
            if reply.status != StatusCode::TEMPORARY_REDIRECT {
                return Ok(reply);
            }
            if *redirects == MAX_REDIRECTS {
                return Err(RequestError::TooManyRedirects);
            }
            *redirects += 1;
            let location = reply
                .headers
                .get(LOCATION)
                .and_then(|value| value.to_str().ok())
                .ok_or_else(|| RequestError::BadRedirect("307 without a Location header".into()))?;
            let uri: Uri = location.parse().map_err(|_| RequestError::BadRedirect(format!("Location '{location}'")))?;
            target = Endpoint::from_uri(&uri, location)
                .map_err(|err| RequestError::BadRedirect(format!("Location is not an absolute http URL: {err}")))?;
            path = uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
            self.leaders.remember(&self.home, &target);
        }
    }

    async fn send_once(
        &mut self,
        target: &Endpoint,
        method: &Method,
        path: &str,
        body: &Bytes,
    ) -> Result<Reply, RequestError> {
        let failed = |reason: String| RequestError::Connection { endpoint: target.clone(), reason };
        let reusable = self.connection.as_ref().is_some_and(|c| &c.endpoint == target && !c.sender.is_closed());
        if !reusable {
            self.connection = None;
            self.connection = Some(connect(target).await.map_err(failed)?);
            self.connects += 1;
        }
        let connection = self.connection.as_mut().expect("connected above");
        if let Err(err) = connection.sender.ready().await {
            self.connection = None;
            return Err(failed(err.to_string()));
        }
        let request = Request::builder()
            .method(method.clone())
            .uri(path)
            .header(HOST, target.authority())
            .body(Full::new(body.clone()))
            .map_err(|err| RequestError::Build { path: path.into(), reason: err.to_string() })?;
        let response = match connection.sender.send_request(request).await {
            Ok(response) => response,
            Err(err) => {
                self.connection = None;
                return Err(failed(err.to_string()));
            }
        };
        let (parts, body) = response.into_parts();
        match body.collect().await {
            Ok(collected) => Ok(Reply { status: parts.status, headers: parts.headers, body: collected.to_bytes() }),
            Err(err) => {
                self.connection = None;
                Err(failed(format!("reading the response body: {err}")))
            }
        }
    }
}

async fn connect(endpoint: &Endpoint) -> Result<Connection, String> {
    let stream = TcpStream::connect(endpoint.authority()).await.map_err(|err| err.to_string())?;
    // Requests are small and answered one at a time: Nagle would hold each back for a round trip.
    let _ = stream.set_nodelay(true);
    let (sender, connection) =
        hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|err| err.to_string())?;
    // The connection task ends when the sender is dropped or the server hangs up.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(Connection { endpoint: endpoint.clone(), sender })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_are_base_urls_with_a_port() {
        assert_eq!(Endpoint::parse("http://127.0.0.1:3000").unwrap().authority(), "127.0.0.1:3000");
        assert_eq!(Endpoint::parse("http://127.0.0.1:3000/").unwrap().authority(), "127.0.0.1:3000");
        assert_eq!(Endpoint::parse("localhost:3000").unwrap().url(), "http://localhost:3000");
        assert_eq!(Endpoint::parse("http://node1").unwrap().authority(), "node1:80");
    }

    #[test]
    fn endpoints_that_cannot_be_served_are_refused() {
        assert!(matches!(Endpoint::parse("https://127.0.0.1:3000"), Err(EndpointError::Scheme(_))));
        assert!(matches!(Endpoint::parse("http://127.0.0.1:3000/fekv"), Err(EndpointError::Path(_))));
        assert!(matches!(Endpoint::parse("http://"), Err(EndpointError::NotAUrl(_) | EndpointError::NoHost(_))));
        assert!(Endpoint::parse("not a url").is_err());
    }

    #[test]
    fn leader_map_forgets_only_the_leader_that_failed() {
        let leaders = LeaderMap::default();
        let (a, b, c) =
            (Endpoint::parse("a:1").unwrap(), Endpoint::parse("b:1").unwrap(), Endpoint::parse("c:1").unwrap());
        assert_eq!(leaders.target(&a), a);
        leaders.remember(&a, &b);
        assert_eq!(leaders.target(&a), b);
        leaders.forget(&a, &c);
        assert_eq!(leaders.target(&a), b);
        leaders.forget(&a, &b);
        assert_eq!(leaders.target(&a), a);
    }
}
