//! `/fekv/{key}`: GET, PUT, POST, DELETE.
//!
//! Writes are proposed to the key's region and answered once applied. Reads wait for a ReadIndex
//! barrier from the raftstore, then read LMDB here, on the handler's task, in a short read
//! transaction that is never held across an `.await`.

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
    match method {
        Method::GET | Method::HEAD => get(state, &req, key, method == Method::HEAD).await,
        Method::DELETE => {
            let precondition = write_precondition(req.headers())?;
            write(state, Cmd::Delete(proto::DeleteRequest { key, precondition })).await
        }
        _ => {
            let precondition = write_precondition(req.headers())?;
            let (parts, body) = req.into_parts();
            let value = read_body(&parts.headers, body, state.max_value_size).await?;
            write(state, Cmd::Put(proto::PutRequest { key, value: value.to_vec(), precondition })).await
        }
    }
}

async fn write(state: &ApiState, cmd: Cmd) -> Result<Response<Full<Bytes>>, ApiError> {
    let key = match &cmd {
        Cmd::Put(put) => &put.key,
        Cmd::Delete(delete) => &delete.key,
    };
    let region = state.router.locate(key).ok_or(ApiError::NoRegion)?;
    let written = state.router.write(region.region_id, vec![proto::Request { cmd: Some(cmd) }]).await?;
    let mut response = Response::new(Full::new(Bytes::from_static(b"OK")));
    response.headers_mut().insert(ETAG, etag(written.revision));
    Ok(response)
}

async fn get(
    state: &ApiState,
    req: &Request<Incoming>,
    key: Vec<u8>,
    head: bool,
) -> Result<Response<Full<Bytes>>, ApiError> {
    let region = state.router.locate(&key).ok_or(ApiError::NoRegion)?;
    state.router.read_index(region.region_id).await?;
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
