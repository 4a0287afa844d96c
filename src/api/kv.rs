//! `/fekv/{key}`: GET, PUT, POST, DELETE.
//!
//! Writes are proposed to the key's region and answered once applied. Reads wait for a ReadIndex
//! barrier from the raftstore, then read LMDB here, on the handler's task, in a short read
//! transaction that is never held across an `.await`. A node whose peer is not the leader answers
//! `307` to the leader's HTTP address (`?hop=N` in the `Location` guards against redirect loops);
//! `?consistency=stale` reads the local replica without asking the leader.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE, ETAG};
use hyper::{Method, Request, Response, StatusCode};

use super::error::ApiError;
use super::query::Query;
use super::request::{decode_key, not_modified, read_body, write_precondition};
use super::state::{etag, ApiState};
use crate::config::MAX_KEY_SIZE;
use crate::proto::{self, request::Cmd};
use crate::security::auth::Principal;

pub const ALLOW: &str = "GET, HEAD, PUT, POST, DELETE";

/// How long a request waits for an election when its region has no known leader.
const LEADER_WAIT: Duration = Duration::from_secs(2);
/// Redirects a request may have followed before a node stops redirecting it (loop guard).
const MAX_HOPS: u32 = 2;

/// What the handlers of one request share: where it came in, and how to answer "not here".
pub(super) struct RequestCtx<'a> {
    pub state: &'a ApiState,
    pub path: String,
    pub query: Query,
}

impl RequestCtx<'_> {
    /// A raftstore error as this request's answer: `NotLeader` becomes a redirect when possible.
    pub fn answer(&self, err: crate::raftstore::Error) -> ApiError {
        redirect_or(self.state, &self.path, &self.query, err)
    }

    /// The local region of `key`, or a redirect (see [`locate`]).
    pub fn locate(&self, key: &[u8]) -> Result<crate::proto::Region, ApiError> {
        locate(self.state, &self.path, &self.query, key)
    }
}

pub async fn handle(
    state: &ApiState,
    req: Request<Incoming>,
    raw_key: &str,
    principal: &Principal,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let method = req.method().clone();
    if !matches!(method, Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::DELETE) {
        return Err(ApiError::MethodNotAllowed { method: method.to_string(), allow: ALLOW });
    }
    let key = decode_key(raw_key, MAX_KEY_SIZE)?;
    super::auth::allow(state, principal, &key, !matches!(method, Method::GET | Method::HEAD))?;
    let ctx = RequestCtx { state, path: req.uri().path().to_string(), query: Query::parse(req.uri().query())? };
    match method {
        Method::GET | Method::HEAD => get(&ctx, &req, key, method == Method::HEAD).await,
        Method::DELETE => {
            let precondition = write_precondition(req.headers())?;
            write(&ctx, Cmd::Delete(proto::DeleteRequest { key, precondition })).await
        }
        _ => {
            let precondition = write_precondition(req.headers())?;
            let (parts, body) = req.into_parts();
            let value = read_body(&parts.headers, body, state.max_value_size, state.http.body_timeout).await?;
            write(&ctx, Cmd::Put(proto::PutRequest { key, value: value.to_vec(), precondition })).await
        }
    }
}

/// What to answer when the local peer is not the leader: a `307` to the leader's HTTP address when it
/// is known (and the request has not bounced around already), else the error itself (`503`).
pub(super) fn redirect_or(state: &ApiState, path: &str, query: &Query, err: crate::raftstore::Error) -> ApiError {
    match err {
        crate::raftstore::Error::NotLeader { leader_store_id: Some(leader_store_id), .. } => {
            redirect_to(state, path, query, leader_store_id).unwrap_or_else(|| err.into())
        }
        err => err.into(),
    }
}

/// A `307` to `store_id`'s HTTP address, if it is known and is not this node.
fn redirect_to(state: &ApiState, path: &str, query: &Query, store_id: u64) -> Option<ApiError> {
    let leader = state.addresses.as_ref()?.get(store_id)?;
    if store_id == state.store_id {
        return None;
    }
    if query.hops >= MAX_HOPS {
        return Some(ApiError::RedirectLoop { hops: query.hops });
    }
    // The scheme of this node's own listener: a cluster's client listeners are all HTTPS or all plain.
    let leader_url = format!("{}://{}", state.url_scheme, leader.http_addr);
    let location = format!("{leader_url}{path}?{}", query.for_redirect());
    Some(ApiError::Redirect { location, leader_store_id: store_id, leader_url })
}

/// The local region holding `key`; for a key no local peer holds, a redirect to the leader of its
/// region as placement last reported it (cluster mode), else `NoRegion`.
pub(super) fn locate(
    state: &ApiState,
    path: &str,
    query: &Query,
    key: &[u8],
) -> Result<crate::proto::Region, ApiError> {
    if let Some(region) = state.router.locate(key) {
        return Ok(region);
    }
    let leader = state.region_cache.as_ref().and_then(|cache| cache.leader_store_for(key));
    Err(leader.and_then(|store_id| redirect_to(state, path, query, store_id)).unwrap_or(ApiError::NoRegion))
}

/// Waits until reading `region`'s data from this node's LMDB is linearizable: a ReadIndex through
/// the raftstore, except where the region's only member is this store's peer. Then nothing can be
/// committed, let alone acknowledged, anywhere else, and every acknowledged write is already in LMDB
/// (such a region's writes are answered only after they are applied and committed, never at commit:
/// see `raftstore::peer::deferred`), so there is nothing to wait for. A removed peer cannot lead such a region either: its messages get tombstone replies and never
/// reach raft here.
pub(super) async fn read_barrier(
    state: &ApiState,
    region: &crate::proto::Region,
    deadline: Instant,
) -> Result<(), crate::raftstore::Error> {
    if matches!(region.peers.as_slice(), [only] if only.store_id == state.store_id) {
        return Ok(());
    }
    state.router.read_index_by(region.region_id, deadline).await
}

/// Runs `attempt` on the key's region, waiting (bounded) through an election with no leader, a
/// leader transfer under way, and a split that moved the key. `attempt` gets the request's deadline:
/// whatever it waits for, the request as a whole takes at most its timeout.
pub(super) async fn on_region<T, F, Fut>(ctx: &RequestCtx<'_>, key: &[u8], attempt: F) -> Result<T, ApiError>
where
    F: Fn(crate::proto::Region, Instant) -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::raftstore::Error>>,
{
    let started = Instant::now();
    let deadline = started + LEADER_WAIT.min(ctx.state.request_timeout);
    // A transfer to a peer that does not answer holds proposals back for a whole election timeout,
    // and a scheduler may start it again right after: wait for it as long as the request may take.
    let request_deadline = started + ctx.state.request_timeout;
    loop {
        let region = match ctx.locate(key) {
            Ok(region) => region,
            // Between the two halves of a split being registered, a key can briefly have no local
            // region; so can a new node before its first heartbeat. Look again until the deadline.
            Err(ApiError::NoRegion) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Err(err) => return Err(err),
        };
        match attempt(region, request_deadline).await {
            Ok(value) => return Ok(value),
            // What timed out is the request, however its time was spent.
            Err(crate::raftstore::Error::Timeout { proposed, .. }) => {
                return Err(ctx.answer(crate::raftstore::Error::Timeout { waited: started.elapsed(), proposed }))
            }
            // No leader known yet (an election), or only this store's own peer, which just stopped
            // leading: a redirect needs another store to send the client to.
            Err(crate::raftstore::Error::NotLeader { leader_store_id, .. })
                if leader_store_id.is_none_or(|store_id| store_id == ctx.state.store_id)
                    && Instant::now() < deadline =>
            {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            // raft refuses proposals while the leader hands over (the balancers do it all the time):
            // the command never reached the log, so asking again cannot apply it twice. Once the
            // transfer ends, the next attempt is the write itself or a redirect to the new leader.
            Err(crate::raftstore::Error::TransferringLeader) if Instant::now() < request_deadline => {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            // The local route was stale (a split moved the key): look the key up again. The command
            // was refused before it could apply, so retrying cannot apply it twice.
            Err(
                crate::raftstore::Error::EpochNotMatch { .. }
                | crate::raftstore::Error::KeyNotInRegion { .. }
                | crate::raftstore::Error::RegionNotFound { .. },
            ) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            Err(err) => return Err(ctx.answer(err)),
        }
    }
}

async fn write(ctx: &RequestCtx<'_>, cmd: Cmd) -> Result<Response<Full<Bytes>>, ApiError> {
    let key = cmd.key().to_vec();
    let written = on_region(ctx, &key, |region, deadline| {
        let requests = vec![proto::Request { cmd: Some(cmd.clone()) }];
        async move { ctx.state.router.write_by(region.region_id, requests, deadline).await }
    })
    .await?;
    let mut response = Response::new(Full::new(Bytes::from_static(b"OK")));
    response.headers_mut().insert(ETAG, etag(written.revision));
    Ok(response)
}

async fn get(
    ctx: &RequestCtx<'_>,
    req: &Request<Incoming>,
    key: Vec<u8>,
    head: bool,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let state = ctx.state;
    if ctx.query.stale {
        // The local replica as it is: possibly behind the leader, never ahead of what was committed.
        ctx.locate(&key)?;
    } else {
        on_region(ctx, &key, |region, deadline| async move { read_barrier(state, &region, deadline).await }).await?;
    } // The barrier passed: LMDB now holds every write acknowledged before this request arrived.
    let (value, revision) = {
        let txn = state.engine.read_txn()?;
        let record = state.engine.read_data(&txn, &key)?.ok_or(ApiError::KeyNotFound)?;
        (if head { Bytes::new() } else { Bytes::copy_from_slice(record.value) }, record.revision)
    };
    if not_modified(req.headers(), revision)? {
        let mut response = Response::new(Full::new(Bytes::new()));
        *response.status_mut() = StatusCode::NOT_MODIFIED;
        response.headers_mut().insert(ETAG, etag(revision));
        return Ok(response);
    }
    let mut response = Response::new(Full::new(value));
    let headers = response.headers_mut();
    headers.insert(ETAG, etag(revision));
    headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/octet-stream"));
    Ok(response)
}
