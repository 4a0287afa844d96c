//! Each node asked directly over HTTP (`/status`, `/health`), all at once, each within
//! [`CALL_TIMEOUT`].

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use serde_json::Value;

use super::http::NodeHttp;
use super::shared::{CtlError, CALL_TIMEOUT};
use crate::proto::StoreInfo;

#[derive(Debug, Clone, Copy)]
pub(super) enum NodeProbe {
    Status,
    Health,
}

/// What one node said (or that it said nothing).
#[derive(Debug, Clone, Default, PartialEq)]
pub(super) struct NodeReport {
    pub(super) store_id: u64,
    pub(super) http_addr: String,
    /// From /status.
    pub(super) version: String,
    pub(super) region_count: u64,
    pub(super) leader_count: u64,
    pub(super) applied_index: u64,
    pub(super) used_bytes: u64,
    /// /status answered, or /health answered 200.
    pub(super) ok: bool,
    pub(super) took: Duration,
    pub(super) error: Option<String>,
}

impl NodeReport {
    /// Reads a node's `/status` JSON.
    pub(super) fn with_status(mut self, status: &Value) -> NodeReport {
        let regions = status["regions"].as_array().cloned().unwrap_or_default();
        self.version = status["version"].as_str().unwrap_or_default().to_string();
        self.region_count = regions.len() as u64;
        self.leader_count = regions.iter().filter(|r| r["role"] == "leader").count() as u64;
        self.applied_index = regions.iter().filter_map(|r| r["applied_index"].as_u64()).max().unwrap_or(0);
        self.used_bytes = status["storage"]["used_bytes"].as_u64().unwrap_or(0);
        self
    }
}

/// Asks every store's node at once; the reports come back in the stores' order.
pub(super) async fn probe_all(client: &NodeHttp, stores: &[StoreInfo], probe: NodeProbe) -> Vec<NodeReport> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, store) in stores.iter().enumerate() {
        let (client, store_id, http_addr) = (client.clone(), store.store_id, store.http_addr.clone());
        tasks.spawn(async move { (i, probe_node(&client, store_id, http_addr, probe).await) });
    }
    let mut reports = vec![NodeReport::default(); stores.len()];
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, report)) = done {
            reports[i] = report;
        }
    }
    reports
}

pub(super) async fn probe_node(client: &NodeHttp, store_id: u64, http_addr: String, probe: NodeProbe) -> NodeReport {
    let path = match probe {
        NodeProbe::Status => "/status",
        NodeProbe::Health => "/health",
    };
    let started = Instant::now();
    let answer = tokio::time::timeout(CALL_TIMEOUT, http_get(client, &client.url(&http_addr, path))).await;
    let report = NodeReport { store_id, http_addr, took: started.elapsed(), ..Default::default() };
    let (status, body) = match answer {
        Err(_) => return NodeReport { error: Some(format!("no answer within {CALL_TIMEOUT:?}")), ..report },
        Ok(Err(error)) => return NodeReport { error: Some(error), ..report },
        Ok(Ok(answer)) => answer,
    };
    match probe {
        NodeProbe::Status if status.is_success() => match serde_json::from_slice::<Value>(&body) {
            Ok(json) => NodeReport { ok: true, ..report.with_status(&json) },
            Err(err) => NodeReport { error: Some(format!("/status is not JSON: {err}")), ..report },
        },
        NodeProbe::Health if status.is_success() => NodeReport { ok: true, ..report },
        _ => {
            let body = String::from_utf8_lossy(&body);
            NodeReport { error: Some(format!("{path} answered {status}: {}", body.trim())), ..report }
        }
    }
}

pub(super) async fn http_get(client: &NodeHttp, url: &str) -> Result<(hyper::StatusCode, Bytes), String> {
    let request = hyper::Request::get(url).body(Empty::new()).map_err(|e| format!("invalid address {url}: {e}"))?;
    let response = client.request(request).await.map_err(|e| error_chain(&e))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body))
}

/// An error with its causes, which is where "Connection refused" lives.
pub(super) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

pub(super) fn fail_if_any(nodes: &[NodeReport], what: &'static str) -> Result<(), CtlError> {
    let failed = nodes.iter().filter(|n| !n.ok).count();
    match failed {
        0 => Ok(()),
        _ => Err(CtlError::Nodes { failed, total: nodes.len(), what }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn node_status_is_summarised_as_regions_leaders_and_the_highest_applied_index() {
        let status = json!({
            "version": "0.1.0",
            "regions": [
                { "role": "leader", "applied_index": 17 },
                { "role": "follower", "applied_index": 40 },
            ],
            "storage": { "used_bytes": 8192 },
        });
        let report = NodeReport::default().with_status(&status);
        assert_eq!(
            (
                report.version.as_str(),
                report.region_count,
                report.leader_count,
                report.applied_index,
                report.used_bytes
            ),
            ("0.1.0", 2, 1, 40, 8192)
        );
    }

    #[test]
    fn any_failed_node_fails_the_command() {
        let up = NodeReport { ok: true, ..Default::default() };
        assert!(fail_if_any(&[up.clone(), up.clone()], "are unhealthy").is_ok());
        let err = fail_if_any(&[up, NodeReport::default()], "are unhealthy").unwrap_err();
        assert_eq!(err.to_string(), "1 of 2 nodes are unhealthy");
    }
}
