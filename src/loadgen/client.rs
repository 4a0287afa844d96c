//! A worker's keep-alive HTTP/1.1 connections, and the redirects fekv's followers answer with.
//!
//! hyper's low-level client neither pools nor follows redirects, which is what we want here: a
//! [`Client`] keeps one request in flight and one connection per node it talks to (against a single
//! node, `--connections` is the number of sockets the server sees), reconnects after an error, and
//! follows `307 Temporary Redirect` itself, re-sending the same method and body. Where requests should go is kept in the shared [`LeaderMap`]: per key
//! range, from the regions each node's `/status` says it leads (asked at the start and again after a
//! redirect), and per endpoint, from the redirects themselves. So a steady run does not pay a
//! redirect per request, also when the regions of a cluster have their leaders on different nodes.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fmt;
use std::ops::Bound;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderValue, AUTHORIZATION, HOST, LOCATION};
use hyper::{Method, Request, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use parking_lot::RwLock;
use tokio::net::TcpStream;

use crate::security::tls::TlsConnector;

/// Redirects followed for one request before it counts as an error.
pub const MAX_REDIRECTS: u32 = 3;

/// A node's base URL, `http://host:port` or `https://host:port`. Two endpoints are the same node
/// when their authorities (`host:port`) and schemes are equal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Endpoint {
    authority: String,
    /// `https://`: connections are TLS, verified with `--cacert`.
    secure: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EndpointError {
    #[error("'{0}' is not a URL")]
    NotAUrl(String),
    #[error("'{0}': only http:// and https:// are supported")]
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
        let secure = match uri.scheme_str() {
            Some("http") => false,
            Some("https") => true,
            Some(_) => return Err(EndpointError::Scheme(text.into())),
            None => return Err(EndpointError::NotAUrl(text.into())),
        };
        let host = uri.host().filter(|h| !h.is_empty()).ok_or_else(|| EndpointError::NoHost(text.into()))?;
        let port = uri.port_u16().unwrap_or(if secure { 443 } else { 80 });
        Ok(Endpoint { authority: format!("{host}:{port}"), secure })
    }

    /// An `https://` endpoint.
    pub fn is_secure(&self) -> bool {
        self.secure
    }

    fn scheme(&self) -> &'static str {
        if self.secure {
            "https"
        } else {
            "http"
        }
    }

    /// `host:port`, as connected to and sent in `Host`.
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// `http://host:port` (or `https://`)
    pub fn url(&self) -> String {
        format!("{}://{}", self.scheme(), self.authority)
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.scheme(), self.authority)
    }
}

/// Where requests really go. Shared by every worker: one worker's redirect saves the others theirs.
#[derive(Default)]
pub struct LeaderMap {
    /// The regions' leaders, from `/status`.
    ranges: RwLock<RangeLeaders>,
    /// The endpoint a request was first sent to → where its last redirect led, for keys no known
    /// range holds (and for a node that does not answer `/status`).
    leaders: RwLock<HashMap<Endpoint, Endpoint>>,
    /// Nodes whose `/status` is asked: the endpoints given, and every node a redirect named.
    nodes: RwLock<BTreeSet<Endpoint>>,
    /// When the ranges were last asked for, so a burst of redirects asks once.
    last_refresh: parking_lot::Mutex<Option<Instant>>,
    /// The `Authorization` every request carries (`fekv bench --user`), resent after redirects.
    authorization: Option<HeaderValue>,
    /// How `https://` nodes are connected to (`--cacert`, `--cert`, `--key`).
    tls: Option<TlsConnector>,
}

/// A region's start key → its end key (empty: unbounded) and the node that leads it.
type RangeLeaders = BTreeMap<Vec<u8>, (Vec<u8>, Endpoint)>;

/// Ranges are asked for at most this often.
const REFRESH_INTERVAL: Duration = Duration::from_millis(500);

impl LeaderMap {
    pub fn new() -> Arc<LeaderMap> {
        Arc::new(LeaderMap::default())
    }

    /// A map whose clients reach `https://` nodes with `tls` and send `authorization` with every
    /// request.
    pub fn with(tls: Option<TlsConnector>, authorization: Option<HeaderValue>) -> Arc<LeaderMap> {
        Arc::new(LeaderMap { tls, authorization, ..LeaderMap::default() })
    }

    pub fn authorization(&self) -> Option<&HeaderValue> {
        self.authorization.as_ref()
    }

    /// An empty map that connects (and authenticates) as this one does, for a request that must not
    /// be redirected.
    pub fn fresh(&self) -> Arc<LeaderMap> {
        LeaderMap::with(self.tls.clone(), self.authorization.clone())
    }

    /// Where a request for `key` (if it has one) sent to `home` should go now. All locks here are
    /// read locks: this is on every request, and writes happen once per redirect.
    pub fn target(&self, home: &Endpoint, key: Option<&[u8]>) -> Endpoint {
        if let Some(key) = key {
            let ranges = self.ranges.read();
            if let Some((_, (end, leader))) =
                ranges.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back()
            {
                if end.is_empty() || key < end.as_slice() {
                    return leader.clone();
                }
            }
        }
        self.leaders.read().get(home).cloned().unwrap_or_else(|| home.clone())
    }

    pub fn remember(&self, home: &Endpoint, leader: &Endpoint) {
        self.nodes.write().insert(leader.clone());
        if home == leader {
            self.leaders.write().remove(home);
        } else {
            self.leaders.write().insert(home.clone(), leader.clone());
        }
    }

    /// Drops what points at `leader`: it failed, so ask `home` again.
    pub fn forget(&self, home: &Endpoint, leader: &Endpoint) {
        self.ranges.write().retain(|_, (_, node)| node != leader);
        let mut leaders = self.leaders.write();
        if leaders.get(home) == Some(leader) {
            leaders.remove(home);
        }
    }

    /// Adds nodes whose `/status` is asked for their ranges.
    pub fn add_nodes(&self, nodes: &[Endpoint]) {
        self.nodes.write().extend(nodes.iter().cloned());
    }

    /// Replaces the known ranges.
    pub fn set_ranges(&self, ranges: Vec<(Vec<u8>, Vec<u8>, Endpoint)>) {
        *self.ranges.write() = ranges.into_iter().map(|(start, end, leader)| (start, (end, leader))).collect();
    }

    /// Asks every known node's `/status` which regions it leads, unless that was done less than
    /// `REFRESH_INTERVAL` ago. A node that does not answer is skipped (its keys fall back to the
    /// per-endpoint map).
    pub async fn refresh(&self, timeout: Duration) {
        {
            let mut last = self.last_refresh.lock();
            if refreshed_recently(&last) {
                return;
            }
            *last = Some(Instant::now());
        }
        let nodes: Vec<Endpoint> = self.nodes.read().iter().cloned().collect();
        let mut ranges = Vec::new();
        for node in nodes {
            // A map of its own: /status is per node and must not be redirected elsewhere.
            let mut client = Client::new(node.clone(), self.fresh(), timeout);
            let Ok(reply) = client.send(&Method::GET, "/status", &Bytes::new()).await.result else { continue };
            if let Ok(status) = serde_json::from_slice::<serde_json::Value>(&reply.body) {
                ranges.extend(led_ranges(&status, &node));
            }
        }
        self.set_ranges(ranges);
    }

    /// [`refresh`](Self::refresh) on a task of its own, so the request that met a redirect is not
    /// kept waiting (its latency is being measured).
    pub fn refresh_soon(self: &Arc<Self>, timeout: Duration) {
        // Checked here too, so a burst of redirects does not spawn a task each.
        if refreshed_recently(&self.last_refresh.lock()) {
            return;
        }
        let map = self.clone();
        tokio::spawn(async move { map.refresh(timeout).await });
    }

    pub fn snapshot(&self) -> HashMap<Endpoint, Endpoint> {
        self.leaders.read().clone()
    }
}

fn refreshed_recently(last_refresh: &Option<Instant>) -> bool {
    last_refresh.is_some_and(|at| at.elapsed() < REFRESH_INTERVAL)
}

/// The key ranges of the regions a node's `/status` says it leads (keys are percent-encoded there).
fn led_ranges(status: &serde_json::Value, node: &Endpoint) -> Vec<(Vec<u8>, Vec<u8>, Endpoint)> {
    let decode = |key: &serde_json::Value| key.as_str().map(|k| percent_encoding::percent_decode_str(k).collect());
    let Some(regions) = status["regions"].as_array() else { return Vec::new() };
    regions
        .iter()
        .filter(|region| region["role"] == "leader")
        .filter_map(|region| Some((decode(&region["start_key"])?, decode(&region["end_key"])?, node.clone())))
        .collect()
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

/// One worker's keep-alive connections, one request in flight at a time: requests go to its home
/// endpoint, or where the leader map says (the leader of the key's range, or where home redirected).
/// It keeps one connection per node it has talked to, as a cluster client keeps a connection per
/// node, so keys led by different nodes do not cost a reconnect each time the target changes.
pub struct Client {
    home: Endpoint,
    leaders: Arc<LeaderMap>,
    timeout: Duration,
    connections: HashMap<Endpoint, SendRequest<Full<Bytes>>>,
    /// TCP connections opened so far (1 for a single node and a run with no errors).
    pub connects: u64,
}

impl Client {
    pub fn new(home: Endpoint, leaders: Arc<LeaderMap>, timeout: Duration) -> Client {
        Client { home, leaders, timeout, connections: HashMap::new(), connects: 0 }
    }

    /// Sends one request, following redirects, within the client's timeout (connecting included).
    pub async fn send(&mut self, method: &Method, path: &str, body: &Bytes) -> Exchange {
        self.send_for_key(method, None, path, body).await
    }

    /// Like [`send`](Self::send), for a request about `key`: it goes to the node that leads the key's
    /// range, when the leader map knows it.
    pub async fn send_for_key(&mut self, method: &Method, key: Option<&[u8]>, path: &str, body: &Bytes) -> Exchange {
        let mut redirects = 0;
        let timeout = self.timeout;
        let result = match tokio::time::timeout(timeout, self.follow(method, key, path, body, &mut redirects)).await {
            Ok(result) => result,
            Err(_) => {
                // The connection may still carry the late response: it cannot take another request
                // (which one it was is not known here, so all go).
                self.connections.clear();
                Err(RequestError::Timeout(self.timeout))
            }
        };
        Exchange { result, redirects }
    }

    async fn follow(
        &mut self,
        method: &Method,
        key: Option<&[u8]>,
        path: &str,
        body: &Bytes,
        redirects: &mut u32,
    ) -> Result<Reply, RequestError> {
        let mut target = self.leaders.target(&self.home, key);
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
            // Leadership moved (or was never known): learn the ranges again.
            self.leaders.refresh_soon(self.timeout);
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
        if self.connections.get(target).is_none_or(SendRequest::is_closed) {
            self.connections.remove(target);
            let sender = connect(target, self.leaders.tls.as_ref()).await.map_err(failed)?;
            self.connections.insert(target.clone(), sender);
            self.connects += 1;
        }
        let sender = self.connections.get_mut(target).expect("connected above");
        if let Err(err) = sender.ready().await {
            self.connections.remove(target);
            return Err(failed(err.to_string()));
        }
        let mut request = Request::builder().method(method.clone()).uri(path).header(HOST, target.authority());
        if let Some(authorization) = self.leaders.authorization() {
            request = request.header(AUTHORIZATION, authorization.clone());
        }
        let request = request
            .body(Full::new(body.clone()))
            .map_err(|err| RequestError::Build { path: path.into(), reason: err.to_string() })?;
        let response = match sender.send_request(request).await {
            Ok(response) => response,
            Err(err) => {
                self.connections.remove(target);
                return Err(failed(err.to_string()));
            }
        };
        let (parts, body) = response.into_parts();
        match body.collect().await {
            Ok(collected) => Ok(Reply { status: parts.status, headers: parts.headers, body: collected.to_bytes() }),
            Err(err) => {
                self.connections.remove(target);
                Err(failed(format!("reading the response body: {err}")))
            }
        }
    }
}

async fn connect(endpoint: &Endpoint, tls: Option<&TlsConnector>) -> Result<SendRequest<Full<Bytes>>, String> {
    if endpoint.secure {
        let tls = tls.ok_or_else(|| format!("{endpoint}: https:// needs --cacert"))?;
        let (host, port) = endpoint.authority.rsplit_once(':').ok_or_else(|| format!("{endpoint} has no port"))?;
        let port = port.parse().map_err(|_| format!("{endpoint} has no valid port"))?;
        // The connector sets no-delay on its socket as below.
        let io = tls.connect(host, port).await.map_err(|err| err.to_string())?;
        return handshake(io).await;
    }
    let stream = TcpStream::connect(endpoint.authority()).await.map_err(|err| err.to_string())?;
    // Requests are small and answered one at a time: Nagle would hold each back for a round trip.
    let _ = stream.set_nodelay(true);
    handshake(TokioIo::new(stream)).await
}

async fn handshake<IO>(io: IO) -> Result<SendRequest<Full<Bytes>>, String>
where
    IO: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (sender, connection) = hyper::client::conn::http1::handshake(io).await.map_err(|err| err.to_string())?;
    // The connection task ends when the sender is dropped or the server hangs up.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
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
        assert!(Endpoint::parse("https://127.0.0.1:3000").unwrap().is_secure());
        assert_eq!(Endpoint::parse("https://node1").unwrap().url(), "https://node1:443");
        assert!(matches!(Endpoint::parse("ftp://127.0.0.1:3000"), Err(EndpointError::Scheme(_))));
        assert!(matches!(Endpoint::parse("http://127.0.0.1:3000/fekv"), Err(EndpointError::Path(_))));
        assert!(matches!(Endpoint::parse("http://"), Err(EndpointError::NotAUrl(_) | EndpointError::NoHost(_))));
        assert!(Endpoint::parse("not a url").is_err());
    }

    #[test]
    fn leader_map_forgets_only_the_leader_that_failed() {
        let leaders = LeaderMap::default();
        let (a, b, c) =
            (Endpoint::parse("a:1").unwrap(), Endpoint::parse("b:1").unwrap(), Endpoint::parse("c:1").unwrap());
        assert_eq!(leaders.target(&a, None), a);
        leaders.remember(&a, &b);
        assert_eq!(leaders.target(&a, None), b);
        leaders.forget(&a, &c);
        assert_eq!(leaders.target(&a, None), b);
        leaders.forget(&a, &b);
        assert_eq!(leaders.target(&a, None), a);
    }

    #[test]
    fn a_key_goes_to_the_leader_of_its_range_then_to_where_its_endpoint_was_redirected() {
        let leaders = LeaderMap::default();
        let (a, b, c) =
            (Endpoint::parse("a:1").unwrap(), Endpoint::parse("b:1").unwrap(), Endpoint::parse("c:1").unwrap());
        leaders.set_ranges(vec![(b"".to_vec(), b"m".to_vec(), a.clone()), (b"m".to_vec(), b"".to_vec(), b.clone())]);
        assert_eq!(leaders.target(&c, Some(b"k1")), a);
        assert_eq!(leaders.target(&c, Some(b"m")), b);
        assert_eq!(leaders.target(&c, Some(b"zz")), b);
        // Requests without a key (admin paths) only follow the per-endpoint map.
        assert_eq!(leaders.target(&c, None), c);
        // b failed: its range is forgotten, so its keys go home (or where home redirected).
        leaders.remember(&c, &a);
        leaders.forget(&c, &b);
        assert_eq!(leaders.target(&c, Some(b"zz")), a);
        leaders.set_ranges(vec![(b"c".to_vec(), b"f".to_vec(), b.clone())]);
        assert_eq!(leaders.target(&c, Some(b"a")), a, "a key in no known range");
        assert_eq!(leaders.target(&c, Some(b"f")), a, "end keys are exclusive");
    }

    #[test]
    fn led_ranges_come_from_the_regions_a_status_lists_as_leader() {
        let node = Endpoint::parse("n:1").unwrap();
        let status = serde_json::json!({"regions": [
            {"region_id": 1, "start_key": "", "end_key": "k%2000", "role": "leader"},
            {"region_id": 2, "start_key": "k%2000", "end_key": "", "role": "follower"},
        ]});
        assert_eq!(led_ranges(&status, &node), vec![(b"".to_vec(), b"k 00".to_vec(), node.clone())]);
        assert!(led_ranges(&serde_json::json!({"error": "x"}), &node).is_empty());
    }
}
