//! Operational endpoints: `/status` (JSON: what this node is and holds; `?counts=exact` also counts
//! each region's keys and bytes by walking them), `/health` (liveness),
//! `/ready` (readiness, 503 with reasons), `/metrics` (Prometheus text).

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::{Response, StatusCode};
use serde_json::{json, Value};

use super::error::ApiError;
use super::state::ApiState;
use crate::proto::Region;
use crate::raftstore::PeerStatus;

fn json_response(status: StatusCode, body: &Value) -> Response<Full<Bytes>> {
    let mut text = serde_json::to_string_pretty(body).expect("JSON values serialize");
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    *response.status_mut() = status;
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Keys are bytes; JSON shows them as text, percent-encoding anything that is not printable ASCII
/// (the same form the URL takes). Storage names keys in its errors the same way.
use crate::storage::keys::display as display_key;

/// A region as JSON (shared by `/status` and `fekv ctl`): id, percent-encoded range, epoch, peers.
pub fn region_json(region: &Region) -> Value {
    let epoch = region.epoch.unwrap_or_default();
    json!({
        "region_id": region.region_id,
        "start_key": display_key(&region.start_key),
        "end_key": display_key(&region.end_key),
        "epoch": { "conf_ver": epoch.conf_ver, "version": epoch.version },
        "peers": region.peers.iter().map(|p| json!({ "peer_id": p.peer_id, "store_id": p.store_id })).collect::<Vec<_>>(),
    })
}

/// `counts=exact` walks every key of every region to count them; by default (`approximate`) a
/// region shows what its leader's split checker last measured, which costs nothing.
fn exact_counts(raw_query: Option<&str>) -> Result<bool, ApiError> {
    match super::query::Query::parse(raw_query)?.get("counts") {
        None | Some(b"approximate") => Ok(false),
        Some(b"exact") => Ok(true),
        Some(other) => Err(ApiError::BadQuery {
            name: "counts",
            reason: format!("{} is neither exact nor approximate", String::from_utf8_lossy(other)),
        }),
    }
}

pub async fn status(state: &ApiState, raw_query: Option<&str>) -> Result<Response<Full<Bytes>>, ApiError> {
    let exact = exact_counts(raw_query)?;
    let peers = state.router.status().await?;
    let engine = state.engine.clone();
    // Counting keys walks each region's range, and the storage stats ask the disk: off the async workers.
    let counted = tokio::task::spawn_blocking(move || -> Result<_, ApiError> {
        let mut counts = Vec::new();
        if exact {
            let txn = engine.read_txn()?;
            for peer in &peers {
                // An empty peer (waiting for its first snapshot) has no range yet.
                let stats = if peer.initialized {
                    engine.range_stats(&txn, &peer.region.start_key, &peer.region.end_key)?
                } else {
                    Default::default()
                };
                counts.push(stats);
            }
        }
        Ok((peers, counts, engine.stats()?))
    })
    .await
    .map_err(|e| ApiError::Internal(format!("status task failed: {e}")))?;
    let (peers, counts, storage) = counted?;
    let mut counts = counts.into_iter();
    let regions: Vec<Value> = peers
        .iter()
        .map(|peer| {
            let mut region = region_json(&peer.region);
            let extra = json!({
                "peer_id": peer.peer_id,
                "initialized": peer.initialized,
                "role": peer.role,
                "leader_peer_id": peer.leader_peer_id,
                "leader_store_id": peer.leader_store_id,
                "term": peer.term,
                "commit_index": peer.commit_index,
                "applied_index": peer.applied_index,
                "truncated_index": peer.truncated_index,
                "last_index": peer.last_index,
                "pending_proposals": peer.pending_proposals,
                // The leader's last measure; null on a follower and before the first measure.
                "approximate_size": peer.approximate_size,
                "approximate_keys": peer.approximate_size.map(|_| peer.approximate_keys),
            });
            let object = region.as_object_mut().expect("object");
            object.extend(extra.as_object().expect("object").clone());
            if let Some((keys, bytes)) = counts.next() {
                object.extend([("keys".to_string(), json!(keys)), ("bytes".to_string(), json!(bytes))]);
            }
            region
        })
        .collect();
    let body = json!({
        "store_id": state.store_id,
        "counts": if exact { "exact" } else { "approximate" },
        "version": crate::VERSION,
        "uptime_seconds": state.started.elapsed().as_secs_f64(),
        "data_dir": state.engine.path().display().to_string(),
        "http_addr": state.http_addr,
        "regions": regions,
        "storage": storage,
    });
    Ok(json_response(StatusCode::OK, &body))
}

/// Liveness: the raftstore thread answers.
pub async fn health(state: &ApiState) -> Response<Full<Bytes>> {
    match state.router.status().await {
        Ok(_) => json_response(StatusCode::OK, &json!({ "health": "ok" })),
        Err(err) => {
            json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({ "health": "down", "reason": err.to_string() }))
        }
    }
}

/// Readiness: the raftstore answers, the store holds a region, and every local region has a leader.
pub async fn ready(state: &ApiState) -> Response<Full<Bytes>> {
    let reasons: Vec<String> = match state.router.status().await {
        Err(err) => vec![format!("raftstore: {err}")],
        Ok(peers) if peers.is_empty() => vec!["this store holds no region yet (waiting for placement)".to_string()],
        Ok(peers) => peers
            .iter()
            .filter(|p: &&PeerStatus| p.initialized && p.leader_peer_id == 0)
            .map(|p| format!("region {} has no leader", p.region.region_id))
            .collect(),
    };
    if reasons.is_empty() {
        json_response(StatusCode::OK, &json!({ "ready": true }))
    } else {
        let mut response =
            json_response(StatusCode::SERVICE_UNAVAILABLE, &json!({ "ready": false, "reasons": reasons }));
        response.headers_mut().insert(hyper::header::RETRY_AFTER, HeaderValue::from_static("1"));
        response
    }
}

pub fn metrics(state: &ApiState) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(state.metrics.render())));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4"));
    response
}
