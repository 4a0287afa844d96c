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
use super::request::{decode_key, not_modified, read_body, write_precondition};
use super::{etag, ApiState};
use crate::config::MAX_KEY_SIZE;
use crate::proto::{self, request::Cmd};

pub const ALLOW: &str = "GET, HEAD, PUT, POST, DELETE";

/// How long a request waits for an election when its region has no known leader.
const LEADER_WAIT: Duration = Duration::from_secs(2);
/// Redirects a request may have followed before a node stops redirecting it (loop guard).
const MAX_HOPS: u32 = 2;

/// What the query string asks for.
struct Query {
    /// `consistency=stale`: serve the local replica's value, without asking the leader.
    stale: bool,
    /// `hop=N`: the redirects this request has followed.
    hops: u32,
    /// The rest of the query, kept in redirects.
    rest: Vec<(String, String)>,
}

fn parse_query(query: Option<&str>) -> Result<Query, ApiError> {
    let mut parsed = Query { stale: false, hops: 0, rest: Vec::new() };
    for (name, value) in form_urlencoded::parse(query.unwrap_or("").as_bytes()) {
        match name.as_ref() {
            "consistency" => match value.as_ref() {
                "stale" => parsed.stale = true,
                "linearizable" => parsed.stale = false,
                other => {
                    let reason = format!("{other} is neither stale nor linearizable");
                    return Err(ApiError::BadQuery { name: "consistency", reason });
                }
            },
            "hop" => {
                parsed.hops =
                    value.parse().map_err(|_| ApiError::BadQuery { name: "hop", reason: "not a number".into() })?
            }
            _ => parsed.rest.push((name.into_owned(), value.into_owned())),
        }
    }
    Ok(parsed)
}

type OnError<'a> = &'a (dyn Fn(crate::raftstore::Error) -> ApiError + Sync);

pub async fn handle(
    state: &ApiState,
    req: Request<Incoming>,
    raw_key: &str,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let method = req.method().clone();
    if !matches!(method, Method::GET | Method::HEAD | Method::PUT | Method::POST | Method::DELETE) {
        return Err(ApiError::MethodNotAllowed { method: method.to_string(), allow: ALLOW });
    }
    let key = decode_key(raw_key, MAX_KEY_SIZE)?;
    let query = parse_query(req.uri().query())?;
    let path = req.uri().path().to_string();
    let on_error = |err: crate::raftstore::Error| redirect_or(state, &path, &query, err);
    match method {
        Method::GET | Method::HEAD => get(state, &req, key, method == Method::HEAD, query.stale, &on_error).await,
        Method::DELETE => {
            let precondition = write_precondition(req.headers())?;
            write(state, Cmd::Delete(proto::DeleteRequest { key, precondition }), &on_error).await
        }
        _ => {
            let precondition = write_precondition(req.headers())?;
            let (parts, body) = req.into_parts();
            let value = read_body(&parts.headers, body, state.max_value_size).await?;
            write(state, Cmd::Put(proto::PutRequest { key, value: value.to_vec(), precondition }), &on_error).await
        }
    }
}

/// What to answer when the local peer is not the leader: a `307` to the leader's HTTP address when it
/// is known (and the request has not bounced around already), else the error itself (`503`).
fn redirect_or(state: &ApiState, path: &str, query: &Query, err: crate::raftstore::Error) -> ApiError {
    let crate::raftstore::Error::NotLeader { leader_store_id: Some(leader_store_id), .. } = err else {
        return err.into();
    };
    let Some(leader) = state.addresses.as_ref().and_then(|book| book.get(leader_store_id)) else {
        return err.into();
    };
    if leader_store_id == state.store_id {
        return err.into();
    }
    if query.hops >= MAX_HOPS {
        return ApiError::RedirectLoop { hops: query.hops };
    }
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (name, value) in &query.rest {
        serializer.append_pair(name, value);
    }
    serializer.append_pair("hop", &(query.hops + 1).to_string());
    let location = format!("http://{}{path}?{}", leader.http_addr, serializer.finish());
    ApiError::Redirect { location, leader_store_id, leader_http_addr: leader.http_addr }
}

/// Runs `attempt` on the key's region, waiting (bounded) through an election with no leader.
async fn on_region<T, F, Fut>(state: &ApiState, key: &[u8], on_error: OnError<'_>, attempt: F) -> Result<T, ApiError>
where
    F: Fn(u64) -> Fut,
    Fut: std::future::Future<Output = Result<T, crate::raftstore::Error>>,
{
    let deadline = Instant::now() + LEADER_WAIT.min(state.request_timeout);
    loop {
        let region = state.router.locate(key).ok_or(ApiError::NoRegion)?;
        match attempt(region.region_id).await {
            Ok(value) => return Ok(value),
            Err(crate::raftstore::Error::NotLeader { leader_store_id: None, .. }) if Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            Err(err) => return Err(on_error(err)),
        }
    }
}

async fn write(state: &ApiState, cmd: Cmd, on_error: OnError<'_>) -> Result<Response<Full<Bytes>>, ApiError> {
    let key = match &cmd {
        Cmd::Put(put) => put.key.clone(),
        Cmd::Delete(delete) => delete.key.clone(),
    };
    let written = on_region(state, &key, on_error, |region_id| {
        let requests = vec![proto::Request { cmd: Some(cmd.clone()) }];
        async move { state.router.write(region_id, requests).await }
    })
    .await?;
    let mut response = Response::new(Full::new(Bytes::from_static(b"OK")));
    response.headers_mut().insert(ETAG, etag(written.revision));
    Ok(response)
}

async fn get(
    state: &ApiState,
    req: &Request<Incoming>,
    key: Vec<u8>,
    head: bool,
    stale: bool,
    on_error: OnError<'_>,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if stale {
        // The local replica as it is: possibly behind the leader, never ahead of what was committed.
        state.router.locate(&key).ok_or(ApiError::NoRegion)?;
    } else {
        on_region(state, &key, on_error, |region_id| async move { state.router.read_index(region_id).await }).await?;
    }
    // The barrier passed: LMDB now holds every write acknowledged before this request arrived.
    let (value, revision) = {
        let txn = state.engine.read_txn()?;
        let record = state.engine.get_data(&txn, &key)?.ok_or(ApiError::KeyNotFound)?;
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
