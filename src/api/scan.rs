//! `GET /fekv?start=A&end=B&limit=N` (or `?prefix=P`): the keys and values of a range, in key order,
//! as JSON, **one region per response**. Keys are sent percent-encoded (as in URLs), values base64.
//!
//! A response holds at most `limit` records from the region that holds `start`, and a `next` cursor
//! when there is more: the key to pass as `start` of the next request (the range may continue in the
//! same region or in the next). A node that does not lead that region redirects, like for a single
//! key, so a client walks a scan across regions by following redirects and `next`. Each response is
//! linearizable for its region (ReadIndex, then one LMDB read transaction); `consistency=stale`
//! reads the local replica. With auth on, a scan returns only the keys its user may read.

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Method, Request, Response};

use super::error::ApiError;
use super::kv::{on_region, RequestCtx};
use super::query::Query;
use super::state::ApiState;
use crate::security::auth::{KeyRange, Principal};
use crate::storage::keys::display as display_key;

pub const DEFAULT_LIMIT: usize = 100;
pub const MAX_LIMIT: usize = 1000;

/// The smallest key greater than every key with this prefix; empty (unbounded) for an empty or
/// all-0xff prefix.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    Vec::new()
}

/// `(start, end, limit)` from the query.
fn range(query: &Query) -> Result<(Vec<u8>, Vec<u8>, usize), ApiError> {
    let (start, end) = match query.get("prefix") {
        Some(prefix) => {
            if query.get("start").is_some() || query.get("end").is_some() {
                return Err(ApiError::BadQuery {
                    name: "prefix",
                    reason: "give prefix, or start and end, not both".into(),
                });
            }
            (prefix.to_vec(), prefix_end(prefix))
        }
        None => (query.get("start").unwrap_or_default().to_vec(), query.get("end").unwrap_or_default().to_vec()),
    };
    if !end.is_empty() && end <= start {
        return Err(ApiError::BadQuery {
            name: "end",
            reason: "must be greater than start (or empty for no end)".into(),
        });
    }
    let limit = match query.get("limit") {
        None => DEFAULT_LIMIT,
        Some(raw) => std::str::from_utf8(raw)
            .ok()
            .and_then(|s| s.parse::<usize>().ok())
            .filter(|n| (1..=MAX_LIMIT).contains(n))
            .ok_or_else(|| ApiError::BadQuery { name: "limit", reason: format!("must be 1 to {MAX_LIMIT}") })?,
    };
    Ok((start, end, limit))
}

pub async fn handle(
    state: &ApiState,
    req: Request<Incoming>,
    principal: &Principal,
) -> Result<Response<Full<Bytes>>, ApiError> {
    if req.method() != Method::GET {
        return Err(ApiError::MethodNotAllowed { method: req.method().to_string(), allow: "GET" });
    }
    let ctx = RequestCtx { state, path: req.uri().path().to_string(), query: Query::parse(req.uri().query())? };
    let (start, end, limit) = range(&ctx.query)?;
    let region = if ctx.query.stale {
        ctx.locate(&start)?
    } else {
        let region = on_region(&ctx, &start, |region, deadline| async move {
            super::kv::read_barrier(state, &region, deadline).await.map(|()| region)
        })
        .await?;
        // A split applied while we waited may have moved part of the range to another region.
        if ctx.locate(&start)?.epoch != region.epoch {
            return Err(crate::raftstore::Error::EpochNotMatch { current_regions: vec![region] }.into());
        }
        region
    };
    let upper = if region.end_key.is_empty() || (!end.is_empty() && end < region.end_key) {
        end.clone()
    } else {
        region.end_key.clone()
    };
    // Only what the principal may read (everything while auth is off): each readable part in turn.
    let readable = KeyRange::from_wire(&start, &upper)
        .map(|range| state.auth.authenticator().view().readable_ranges(principal, &range))
        .unwrap_or_default();
    let mut records = Vec::new();
    {
        let txn = state.engine.read_txn()?;
        for part in readable {
            if records.len() > limit {
                break;
            }
            records.extend(state.engine.scan_data(&txn, &part.start, part.end_bytes(), limit + 1 - records.len())?);
        }
    }
    // More in this region: continue at the first record not returned. Else, more in the next region.
    let next = if records.len() > limit {
        records.pop().map(|(key, _, _)| key)
    } else if upper == region.end_key && !region.end_key.is_empty() {
        Some(region.end_key.clone())
    } else {
        None
    };
    let kvs: Vec<serde_json::Value> = records
        .iter()
        .map(|(key, revision, value)| {
            serde_json::json!({
                "key": display_key(key),
                "value": base64::engine::general_purpose::STANDARD.encode(value),
                "revision": revision,
            })
        })
        .collect();
    let body = serde_json::json!({
        "region_id": region.region_id,
        "count": kvs.len(),
        "kvs": kvs,
        "next": next.as_deref().map(display_key),
    });
    let mut text = body.to_string();
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_end_is_the_first_key_past_the_prefix() {
        assert_eq!(prefix_end(b"abc"), b"abd");
        assert_eq!(prefix_end(b"a\xff"), b"b");
        assert_eq!(prefix_end(b"\xff\xff"), b"");
        assert_eq!(prefix_end(b""), b"");
    }
}
