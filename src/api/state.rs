//! What every handler shares ([`ApiState`]), and the ETag of a revision.

use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper::header::HeaderValue;

use super::connections::Limits;
use crate::metrics::Metrics;
use crate::raftstore::Router;
use crate::storage::Engine;

/// What the handlers share.
pub struct ApiState {
    pub router: Router,
    /// The store's scrub: `GET /scrub` shows its last pass, `POST /scrub` runs one.
    pub scrubber: crate::storage::scrub::background::Scrubber,
    pub engine: Engine,
    pub metrics: Arc<Metrics>,
    pub max_value_size: u64,
    pub store_id: u64,
    /// The address this node's REST API is reached at (advertised, else bound).
    pub http_addr: String,
    /// `https` when the REST API listens with TLS, else `http`: the scheme of redirects.
    pub url_scheme: &'static str,
    pub started: Instant,
    /// The other stores' addresses (cluster mode), for redirecting to a leader.
    pub addresses: Option<Arc<crate::cluster_link::AddressBook>>,
    /// Placement's view of every region (cluster mode), for keys no local peer holds.
    pub region_cache: Option<Arc<crate::cluster_link::RegionCache>>,
    pub request_timeout: Duration,
    /// Connection cap and read deadlines.
    pub http: Limits,
    /// Users and roles: what requests are checked against (auth off until placement says otherwise).
    pub auth: Arc<crate::security::node_auth::NodeAuth>,
}

/// The ETag of a revision: the raft index of the entry that wrote the value, quoted.
pub fn etag(revision: u64) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{revision}\"")).expect("digits are a valid header value")
}
