//! Rendering: tables for people, JSON with stable field names for scripts. Pure functions of what
//! placement and the nodes said, so tests check every field name.

use std::time::Duration;

use serde_json::{json, Value};

use super::shared::Output;
use crate::proto::{OperatorInfo, OperatorState, RegionInfo, SchedulerInfo, StepKind, StoreInfo, StoreState};
use crate::storage::keys::display as display_key;

use super::probe::NodeReport;

/// Aligned columns, two spaces apart, no trailing spaces.
pub(super) struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    pub(super) fn new(header: Vec<&'static str>) -> Table {
        Table { header, rows: Vec::new() }
    }

    pub(super) fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    pub(super) fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut line = String::new();
            for (cell, width) in cells.iter().zip(&widths) {
                line.push_str(cell);
                line.push_str(&" ".repeat(width - cell.chars().count() + 2));
            }
            format!("{}\n", line.trim_end())
        };
        let mut text = line(self.header.clone());
        for row in &self.rows {
            text.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        text
    }
}

/// A list for people or for scripts: a table of `row`'s cells under `header`, or a JSON array of
/// `json`'s objects.
fn render_list<T>(
    items: &[T],
    output: Output,
    header: &[&'static str],
    json: impl Fn(&T) -> Value,
    row: impl Fn(&T) -> Vec<String>,
) -> String {
    if output == Output::Json {
        return pretty(&Value::Array(items.iter().map(json).collect()));
    }
    let mut table = Table::new(header.to_vec());
    for item in items {
        table.row(row(item));
    }
    table.render()
}

pub(super) fn pretty(value: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(value).expect("JSON values serialize"))
}

pub(super) fn state_name(store: &StoreInfo) -> &'static str {
    match StoreState::try_from(store.state) {
        Ok(StoreState::Up) => "up",
        Ok(StoreState::Down) => "down",
        Ok(StoreState::Offline) => "offline",
        Ok(StoreState::Removed) => "removed",
        Err(_) => "unknown",
    }
}

/// "350ms ago", "4.2s ago", "3m 12s ago"; "never" for a store that never beat.
pub(super) fn age(last_ms: u64, now_ms: u64) -> String {
    if last_ms == 0 {
        return "never".into();
    }
    let ms = now_ms.saturating_sub(last_ms);
    match ms {
        0..1000 => format!("{ms}ms ago"),
        1000..60_000 => format!("{:.1}s ago", ms as f64 / 1000.0),
        _ => format!("{} ago", humantime::format_duration(Duration::from_secs(ms / 1000))),
    }
}

pub(super) fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).to_string()
}

pub(super) fn store_json(s: &StoreInfo, now_ms: u64) -> Value {
    json!({
        "store_id": s.store_id,
        "raft_addr": s.raft_addr,
        "http_addr": s.http_addr,
        "state": state_name(s),
        "version": s.version,
        "last_heartbeat_ms": s.last_heartbeat_ms,
        "last_heartbeat_age_ms": now_ms.saturating_sub(s.last_heartbeat_ms),
        "region_count": s.region_count,
        "leader_count": s.leader_count,
        "used_bytes": s.used_bytes,
    })
}

pub(super) fn render_stores(stores: &[StoreInfo], now_ms: u64, output: Output) -> String {
    let header = ["STORE", "RAFT ADDR", "HTTP ADDR", "STATE", "LAST HEARTBEAT", "REGIONS", "LEADERS", "USED"];
    let row = |s: &StoreInfo| {
        vec![
            s.store_id.to_string(),
            s.raft_addr.clone(),
            s.http_addr.clone(),
            state_name(s).into(),
            age(s.last_heartbeat_ms, now_ms),
            s.region_count.to_string(),
            s.leader_count.to_string(),
            bytes(s.used_bytes),
        ]
    };
    render_list(stores, output, &header, |s| store_json(s, now_ms), row)
}

pub(super) fn region_json(info: &RegionInfo) -> Value {
    let mut value = crate::api::region_json(&info.region.clone().unwrap_or_default());
    let extra = json!({
        "leader_store_id": info.leader_store_id,
        "leader_peer_id": info.leader_peer_id,
        "term": info.term,
        "approximate_size": info.approximate_size,
        "approximate_keys": info.approximate_keys,
        "pending_peers": info.pending_peers.iter().map(|p| json!({ "peer_id": p.peer_id, "store_id": p.store_id })).collect::<Vec<_>>(),
    });
    if let (Some(object), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        object.extend(extra.clone());
    }
    value
}

/// Table cells for a key: an empty start or end key is the unbounded edge of the keyspace.
pub(super) fn key_cell(key: &[u8], empty: &str) -> String {
    if key.is_empty() {
        empty.to_string()
    } else {
        display_key(key)
    }
}

pub(super) fn region_row(info: &RegionInfo) -> Vec<String> {
    let region = info.region.clone().unwrap_or_default();
    let epoch = region.epoch.unwrap_or_default();
    // A peer still catching up (receiving its snapshot) is marked.
    let peers: Vec<String> = region
        .peers
        .iter()
        .map(|p| {
            let pending = if info.pending_peers.contains(p) { "(pending)" } else { "" };
            format!("{}@{}{pending}", p.peer_id, p.store_id)
        })
        .collect();
    vec![
        region.region_id.to_string(),
        key_cell(&region.start_key, "-inf"),
        key_cell(&region.end_key, "+inf"),
        format!("{}/{}", epoch.conf_ver, epoch.version),
        peers.join(","),
        if info.leader_store_id == 0 { "-".into() } else { info.leader_store_id.to_string() },
        bytes(info.approximate_size),
    ]
}

pub(super) const REGION_HEADER: [&str; 7] =
    ["REGION", "START", "END", "EPOCH (CONF_VER/VERSION)", "PEERS (PEER@STORE)", "LEADER STORE", "SIZE"];

pub(super) fn render_regions(regions: &[RegionInfo], output: Output) -> String {
    render_list(regions, output, &REGION_HEADER, region_json, region_row)
}

pub(super) fn render_region(info: &RegionInfo, output: Output) -> String {
    match output {
        Output::Json => pretty(&region_json(info)),
        Output::Table => render_regions(std::slice::from_ref(info), output),
    }
}

pub(super) fn operator_state_name(state: i32) -> &'static str {
    match OperatorState::try_from(state) {
        Ok(OperatorState::Running) => "running",
        Ok(OperatorState::Success) => "success",
        Ok(OperatorState::Timeout) => "timeout",
        Ok(OperatorState::Cancelled) => "cancelled",
        Ok(OperatorState::Replaced) => "replaced",
        Err(_) => "unknown",
    }
}

pub(super) fn step_kind_name(kind: i32) -> &'static str {
    match StepKind::try_from(kind) {
        Ok(StepKind::AddPeer) => "add-peer",
        Ok(StepKind::TransferLeader) => "transfer-leader",
        Ok(StepKind::RemovePeer) => "remove-peer",
        Ok(StepKind::Split) => "split",
        Err(_) => "unknown",
    }
}

pub(super) fn step_text(step: &crate::proto::OperatorStep) -> String {
    match StepKind::try_from(step.kind) {
        Ok(StepKind::AddPeer) => format!("add peer {} on store {}", step.peer_id, step.store_id),
        Ok(StepKind::TransferLeader) => format!("transfer leader to store {}", step.store_id),
        Ok(StepKind::RemovePeer) => format!("remove peer on store {}", step.store_id),
        Ok(StepKind::Split) if step.split_key.is_empty() => "split in the middle".into(),
        Ok(StepKind::Split) => format!("split at {}", display_key(&step.split_key)),
        Err(_) => "unknown step".into(),
    }
}

/// The steps in order, the one under way in brackets while it runs.
pub(super) fn steps_text(op: &OperatorInfo) -> String {
    let running = op.state == OperatorState::Running as i32;
    op.steps
        .iter()
        .enumerate()
        .map(|(i, step)| match running && i == op.current_step as usize {
            true => format!("[{}]", step_text(step)),
            false => step_text(step),
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// Milliseconds the operator ran (so far, while it runs).
fn took_ms(op: &OperatorInfo, now_ms: u64) -> u64 {
    let end = if op.finished_ms == 0 { now_ms } else { op.finished_ms };
    end.saturating_sub(op.created_ms)
}

/// How long the operator ran (so far, while it runs).
pub(super) fn took(op: &OperatorInfo, now_ms: u64) -> String {
    let ms = took_ms(op, now_ms);
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

pub(super) fn operator_json(op: &OperatorInfo, now_ms: u64) -> Value {
    json!({
        "operator_id": op.operator_id,
        "region_id": op.region_id,
        "source": op.source,
        "reason": op.reason,
        "state": operator_state_name(op.state),
        "steps": op.steps.iter().map(|step| {
            let mut value = json!({ "kind": step_kind_name(step.kind), "store_id": step.store_id });
            if step.kind == StepKind::AddPeer as i32 {
                value["peer_id"] = json!(step.peer_id);
            }
            if step.kind == StepKind::Split as i32 {
                value["split_key"] = json!(display_key(&step.split_key));
                value.as_object_mut().map(|o| o.remove("store_id"));
            }
            value
        }).collect::<Vec<_>>(),
        "current_step": op.current_step,
        "created_ms": op.created_ms,
        "finished_ms": (op.finished_ms != 0).then_some(op.finished_ms),
        "took_ms": took_ms(op, now_ms),
        "note": op.note,
    })
}

pub(super) fn render_operators(
    running: &[OperatorInfo],
    history: &[OperatorInfo],
    now_ms: u64,
    output: Output,
) -> String {
    if output == Output::Json {
        return pretty(&json!({
            "running": running.iter().map(|op| operator_json(op, now_ms)).collect::<Vec<_>>(),
            "history": history.iter().map(|op| operator_json(op, now_ms)).collect::<Vec<_>>(),
        }));
    }
    let mut table = Table::new(vec!["ID", "REGION", "SOURCE", "STATE", "TOOK", "STEPS", "NOTE"]);
    // Running first, then the finished ones newest first: what matters now is at the top.
    for op in running.iter().chain(history.iter().rev()) {
        table.row(vec![
            op.operator_id.to_string(),
            op.region_id.to_string(),
            op.source.clone(),
            operator_state_name(op.state).into(),
            took(op, now_ms),
            steps_text(op),
            op.note.clone(),
        ]);
    }
    table.render()
}

pub(super) fn render_schedulers(schedulers: &[SchedulerInfo], output: Output) -> String {
    let json = |s: &SchedulerInfo| json!({ "name": s.name, "enabled": s.enabled, "can_disable": s.can_disable });
    let row = |s: &SchedulerInfo| {
        let state = match (s.enabled, s.can_disable) {
            (true, false) => "enabled (always)",
            (true, true) => "enabled",
            (false, _) => "disabled",
        };
        vec![s.name.clone(), state.into()]
    };
    render_list(schedulers, output, &["SCHEDULER", "STATE"], json, row)
}

pub(super) fn up_or_down(ok: bool) -> &'static str {
    if ok {
        "up"
    } else {
        "down"
    }
}

pub(super) fn render_cluster_status(nodes: &[NodeReport], output: Output) -> String {
    let json = |n: &NodeReport| {
        json!({
            "store_id": n.store_id,
            "http_addr": n.http_addr,
            "state": up_or_down(n.ok),
            "version": n.version,
            "region_count": n.region_count,
            "leader_count": n.leader_count,
            "applied_index": n.applied_index,
            "used_bytes": n.used_bytes,
            "error": n.error,
        })
    };
    let row = |n: &NodeReport| {
        let known = |value: String| if n.ok { value } else { "-".into() };
        vec![
            n.store_id.to_string(),
            n.http_addr.clone(),
            known(n.version.clone()),
            known(n.region_count.to_string()),
            known(n.leader_count.to_string()),
            known(n.applied_index.to_string()),
            known(bytes(n.used_bytes)),
            up_or_down(n.ok).into(),
            n.error.clone().unwrap_or_default(),
        ]
    };
    let header = ["STORE", "ADDRESS", "VERSION", "REGIONS", "LEADERS", "APPLIED INDEX", "DB SIZE", "STATE", "ERROR"];
    render_list(nodes, output, &header, json, row)
}

pub(super) fn render_cluster_health(nodes: &[NodeReport], output: Output) -> String {
    let json = |n: &NodeReport| {
        json!({
            "store_id": n.store_id,
            "http_addr": n.http_addr,
            "healthy": n.ok,
            "took_ms": n.took.as_secs_f64() * 1000.0,
            "error": n.error,
        })
    };
    let row = |n: &NodeReport| {
        vec![
            n.store_id.to_string(),
            n.http_addr.clone(),
            if n.ok { "healthy" } else { "unhealthy" }.into(),
            format!("{:.1}ms", n.took.as_secs_f64() * 1000.0),
            n.error.clone().unwrap_or_default(),
        ]
    };
    render_list(nodes, output, &["STORE", "ADDRESS", "HEALTH", "TOOK", "ERROR"], json, row)
}

#[cfg(test)]
mod tests;
