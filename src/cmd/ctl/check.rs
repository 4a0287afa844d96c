//! `fekv ctl check`: has every node check its whole store now (`POST /scrub` on each, at once) and
//! prints what they found. Exits non-zero if a node found damage or could not be checked.
//!
//! The nodes come from placement (every store not removed), or from `--node` for a node that runs
//! alone. A check reads the whole store at full speed, so it takes as long as reading it takes:
//! `--timeout` bounds the wait.

use std::time::Duration;

use http_body_util::{BodyExt, Empty};
use serde_json::{json, Value};

use super::http::NodeHttp;
use super::shared::{CtlError, Output};

#[derive(Debug, Clone, clap::Args)]
pub struct CheckArgs {
    /// Check only this node (host:port of its HTTP API; repeat for more), without asking placement
    #[arg(long = "node", value_name = "ADDR")]
    pub nodes: Vec<String>,
    /// How long to wait for the nodes' checks
    #[arg(long, default_value = "10m", value_parser = humantime::parse_duration)]
    pub timeout: Duration,
}

/// What one node answered.
struct NodeCheck {
    store_id: u64,
    http_addr: String,
    /// The node's report (`last` of `POST /scrub`), or why there is none.
    report: Result<Value, String>,
}

impl NodeCheck {
    fn damaged(&self) -> u64 {
        self.report.as_ref().map_or(0, |r| r["damaged"].as_u64().unwrap_or(0))
    }
}

/// Runs the check on `nodes` (store id, 0 if unknown, and HTTP address) and prints the result.
pub(super) async fn run(
    client: &NodeHttp,
    nodes: Vec<(u64, String)>,
    args: &CheckArgs,
    output: Output,
) -> Result<(), CtlError> {
    let mut tasks = tokio::task::JoinSet::new();
    for (i, (store_id, http_addr)) in nodes.iter().cloned().enumerate() {
        let (client, timeout) = (client.clone(), args.timeout);
        tasks.spawn(async move {
            let checked = check_node(&client, &http_addr);
            let (store_id, report) = match tokio::time::timeout(timeout, checked).await {
                // A node given by address says which store it is.
                Ok(Ok((answered_id, report))) => (answered_id, Ok(report)),
                Ok(Err(error)) => (store_id, Err(error)),
                Err(_) => (store_id, Err(format!("no report within {timeout:?}"))),
            };
            (i, NodeCheck { store_id, http_addr, report })
        });
    }
    let mut checks: Vec<Option<NodeCheck>> = (0..nodes.len()).map(|_| None).collect();
    while let Some(Ok((i, check))) = tasks.join_next().await {
        checks[i] = Some(check);
    }
    let checks: Vec<NodeCheck> = checks.into_iter().flatten().collect();
    let text = match output {
        Output::Json => format!("{}\n", serde_json::to_string_pretty(&render_json(&checks)).unwrap_or_default()),
        Output::Table => render_table(&checks),
    };
    super::shared::print(&text)?;
    let failed = checks.iter().filter(|c| c.report.is_err() || c.damaged() > 0).count();
    match failed {
        0 => Ok(()),
        _ => Err(CtlError::Nodes { failed, total: checks.len(), what: "found damage or could not be checked" }),
    }
}

async fn check_node(client: &NodeHttp, http_addr: &str) -> Result<(u64, Value), String> {
    let request = hyper::Request::post(client.url(http_addr, "/scrub"))
        .body(Empty::new())
        .map_err(|e| format!("invalid address {http_addr}: {e}"))?;
    let response = client.request(request).await.map_err(|e| super::probe::error_chain(&e))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    if !status.is_success() {
        return Err(format!("/scrub answered {status}: {}", String::from_utf8_lossy(&body).trim()));
    }
    let answer: Value = serde_json::from_slice(&body).map_err(|e| format!("/scrub is not JSON: {e}"))?;
    Ok((answer["store_id"].as_u64().unwrap_or(0), answer["last"].clone()))
}

fn render_json(checks: &[NodeCheck]) -> Value {
    let nodes: Vec<Value> = checks
        .iter()
        .map(|c| match &c.report {
            Ok(report) => json!({ "store_id": c.store_id, "http_addr": c.http_addr, "report": report }),
            Err(error) => json!({ "store_id": c.store_id, "http_addr": c.http_addr, "error": error }),
        })
        .collect();
    json!(nodes)
}

fn render_table(checks: &[NodeCheck]) -> String {
    let mut out = String::new();
    for check in checks {
        let node = format!("store {} at {}", check.store_id, check.http_addr);
        let report = match &check.report {
            Err(error) => {
                out.push_str(&format!("{node}: not checked: {error}\n"));
                continue;
            }
            Ok(report) => report,
        };
        let count = |field: &str| report[field].as_u64().unwrap_or(0);
        out.push_str(&format!(
            "{node}: checked {} records of {} region(s) in {:.1} s: {}\n",
            count("records_checked"),
            count("regions_checked"),
            count("took_ms") as f64 / 1000.0,
            match count("damaged") {
                0 => "clean".to_string(),
                n => format!("{n} problem(s)"),
            }
        ));
        for finding in report["findings"].as_array().into_iter().flatten() {
            let field = |name: &str| finding[name].as_str().unwrap_or_default().to_string();
            let region = finding["region_id"].as_u64().map_or("-".to_string(), |r| format!("region {r}"));
            out.push_str(&format!("  {:<11} {:<24} {region:<12} {}\n", field("table"), field("key"), field("problem")));
        }
        let listed = report["findings"].as_array().map_or(0, Vec::len) as u64;
        if count("damaged") > listed {
            out.push_str(&format!("  ... and {} more (see the node's log)\n", count("damaged") - listed));
        }
    }
    if checks.iter().any(|c| c.damaged() > 0) {
        out.push_str(
            "Damaged data stays damaged. In a cluster, rebuild each damaged replica from its peers (fekv ctl \
             region remove-peer; the replica checker adds a new one); if LMDB's own index is damaged (keys out \
             of order, lookups that find nothing), drain the store (fekv ctl store remove) and start it again \
             empty. On a lone node, restore from a backup. See the README, \"Damaged data\".\n",
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(report: Result<Value, String>) -> NodeCheck {
        NodeCheck { store_id: 2, http_addr: "127.0.0.1:3001".into(), report }
    }

    #[test]
    fn the_table_lists_each_finding_and_says_what_to_do() {
        let damaged = json!({
            "records_checked": 120, "regions_checked": 3, "took_ms": 1500, "damaged": 2,
            "findings": [{ "table": "data", "key": "oey162", "region_id": 7, "problem": "checksum mismatch: stored ..." }],
        });
        let text = render_table(&[check(Ok(damaged)), check(Err("connection refused".into()))]);
        assert!(text.contains("store 2 at 127.0.0.1:3001: checked 120 records of 3 region(s) in 1.5 s: 2 problem(s)"));
        assert!(
            text.contains("  data        oey162                   region 7     checksum mismatch: stored ..."),
            "{text}"
        );
        assert!(text.contains("... and 1 more"), "{text}");
        assert!(text.contains("not checked: connection refused"), "{text}");
        assert!(text.contains("remove-peer"), "{text}");
        let clean = json!({ "records_checked": 5, "regions_checked": 1, "took_ms": 2, "damaged": 0, "findings": [] });
        let text = render_table(&[check(Ok(clean))]);
        assert!(text.ends_with(": clean\n"), "{text}");
    }

    #[test]
    fn json_has_the_report_or_the_error_of_each_node() {
        let value = render_json(&[check(Ok(json!({ "damaged": 0 }))), check(Err("down".into()))]);
        assert_eq!(value[0]["report"]["damaged"], 0);
        assert_eq!((value[1]["store_id"].as_u64(), value[1]["error"].as_str()), (Some(2), Some("down")));
    }
}
