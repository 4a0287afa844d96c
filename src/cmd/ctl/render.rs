//! Rendering: tables for people, JSON with stable field names for scripts. Pure functions of what
//! placement and the nodes said, so tests check every field name.

use super::probe::NodeReport;
use super::*;

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
    if output == Output::Json {
        return pretty(&Value::Array(stores.iter().map(|s| store_json(s, now_ms)).collect()));
    }
    let mut table =
        Table::new(vec!["STORE", "RAFT ADDR", "HTTP ADDR", "STATE", "LAST HEARTBEAT", "REGIONS", "LEADERS", "USED"]);
    for s in stores {
        table.row(vec![
            s.store_id.to_string(),
            s.raft_addr.clone(),
            s.http_addr.clone(),
            state_name(s).into(),
            age(s.last_heartbeat_ms, now_ms),
            s.region_count.to_string(),
            s.leader_count.to_string(),
            bytes(s.used_bytes),
        ]);
    }
    table.render()
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
    if output == Output::Json {
        return pretty(&Value::Array(regions.iter().map(region_json).collect()));
    }
    let mut table = Table::new(REGION_HEADER.to_vec());
    for info in regions {
        table.row(region_row(info));
    }
    table.render()
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

/// How long the operator ran (so far, while it runs).
pub(super) fn took(op: &OperatorInfo, now_ms: u64) -> String {
    let end = if op.finished_ms == 0 { now_ms } else { op.finished_ms };
    let ms = end.saturating_sub(op.created_ms);
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

pub(super) fn operator_json(op: &OperatorInfo, now_ms: u64) -> Value {
    let end = if op.finished_ms == 0 { now_ms } else { op.finished_ms };
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
        "took_ms": end.saturating_sub(op.created_ms),
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
    if output == Output::Json {
        return pretty(&Value::Array(
            schedulers
                .iter()
                .map(|s| json!({ "name": s.name, "enabled": s.enabled, "can_disable": s.can_disable }))
                .collect(),
        ));
    }
    let mut table = Table::new(vec!["SCHEDULER", "STATE"]);
    for s in schedulers {
        let state = match (s.enabled, s.can_disable) {
            (true, false) => "enabled (always)",
            (true, true) => "enabled",
            (false, _) => "disabled",
        };
        table.row(vec![s.name.clone(), state.into()]);
    }
    table.render()
}

pub(super) fn up_or_down(ok: bool) -> &'static str {
    if ok {
        "up"
    } else {
        "down"
    }
}

pub(super) fn render_cluster_status(nodes: &[NodeReport], output: Output) -> String {
    if output == Output::Json {
        return pretty(&Value::Array(
            nodes
                .iter()
                .map(|n| {
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
                })
                .collect(),
        ));
    }
    let mut table = Table::new(vec![
        "STORE",
        "ADDRESS",
        "VERSION",
        "REGIONS",
        "LEADERS",
        "APPLIED INDEX",
        "DB SIZE",
        "STATE",
        "ERROR",
    ]);
    for n in nodes {
        let known = |value: String| if n.ok { value } else { "-".into() };
        table.row(vec![
            n.store_id.to_string(),
            n.http_addr.clone(),
            known(n.version.clone()),
            known(n.region_count.to_string()),
            known(n.leader_count.to_string()),
            known(n.applied_index.to_string()),
            known(bytes(n.used_bytes)),
            up_or_down(n.ok).into(),
            n.error.clone().unwrap_or_default(),
        ]);
    }
    table.render()
}

pub(super) fn render_cluster_health(nodes: &[NodeReport], output: Output) -> String {
    if output == Output::Json {
        return pretty(&Value::Array(
            nodes
                .iter()
                .map(|n| {
                    json!({
                        "store_id": n.store_id,
                        "http_addr": n.http_addr,
                        "healthy": n.ok,
                        "took_ms": n.took.as_secs_f64() * 1000.0,
                        "error": n.error,
                    })
                })
                .collect(),
        ));
    }
    let mut table = Table::new(vec!["STORE", "ADDRESS", "HEALTH", "TOOK", "ERROR"]);
    for n in nodes {
        table.row(vec![
            n.store_id.to_string(),
            n.http_addr.clone(),
            if n.ok { "healthy" } else { "unhealthy" }.into(),
            format!("{:.1}ms", n.took.as_secs_f64() * 1000.0),
            n.error.clone().unwrap_or_default(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Peer, Region, RegionEpoch};

    fn info() -> RegionInfo {
        RegionInfo {
            region: Some(Region {
                region_id: 2,
                start_key: b"a\x00".to_vec(),
                end_key: Vec::new(),
                epoch: Some(RegionEpoch { conf_ver: 1, version: 3 }),
                peers: vec![Peer { peer_id: 4, store_id: 1 }, Peer { peer_id: 5, store_id: 7 }],
            }),
            leader_store_id: 7,
            leader_peer_id: 5,
            term: 6,
            approximate_size: 2048,
            approximate_keys: 9,
            pending_peers: vec![Peer { peer_id: 5, store_id: 7 }],
        }
    }

    #[test]
    fn region_json_has_the_documented_fields_and_percent_encodes_keys() {
        let json: Value = serde_json::from_str(&render_regions(&[info()], Output::Json)).unwrap();
        let region = &json[0];
        assert_eq!(region["region_id"], 2);
        assert_eq!(region["start_key"], "a%00");
        assert_eq!(region["end_key"], "");
        assert_eq!(region["epoch"], json!({ "conf_ver": 1, "version": 3 }));
        assert_eq!(region["peers"], json!([{ "peer_id": 4, "store_id": 1 }, { "peer_id": 5, "store_id": 7 }]));
        assert_eq!(region["leader_store_id"], 7);
        assert_eq!(region["approximate_size"], 2048);
        assert_eq!(region["pending_peers"], json!([{ "peer_id": 5, "store_id": 7 }]));
        let single: Value = serde_json::from_str(&render_region(&info(), Output::Json)).unwrap();
        assert_eq!(&single, region);
    }

    #[test]
    fn region_table_shows_unbounded_ends_and_peers_with_their_stores() {
        let text = render_regions(&[info()], Output::Table);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("REGION  START  END"), "{text}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(&cells[..6], ["2", "a%00", "+inf", "1/3", "4@1,5@7(pending)", "7"]);
    }

    #[test]
    fn store_json_has_the_documented_fields() {
        let store = StoreInfo {
            store_id: 3,
            raft_addr: "127.0.0.1:20160".into(),
            http_addr: "127.0.0.1:3000".into(),
            last_heartbeat_ms: 10_000,
            state: StoreState::Down as i32,
            version: "0.1.0".into(),
            used_bytes: 4096,
            region_count: 2,
            leader_count: 1,
            ..Default::default()
        };
        let json: Value = serde_json::from_str(&render_stores(&[store], 10_400, Output::Json)).unwrap();
        assert_eq!(
            json[0],
            json!({
                "store_id": 3, "raft_addr": "127.0.0.1:20160", "http_addr": "127.0.0.1:3000", "state": "down",
                "version": "0.1.0", "last_heartbeat_ms": 10_000, "last_heartbeat_age_ms": 400,
                "region_count": 2, "leader_count": 1, "used_bytes": 4096,
            })
        );
    }

    #[test]
    fn tables_are_aligned_without_trailing_spaces() {
        let mut table = Table::new(vec!["A", "LONG HEADER", "C"]);
        table.row(vec!["wide cell".into(), "x".into(), "".into()]);
        assert_eq!(table.render(), "A          LONG HEADER  C\nwide cell  x\n");
    }

    #[test]
    fn heartbeat_ages_read_naturally() {
        assert_eq!(age(0, 5_000), "never");
        assert_eq!(age(4_650, 5_000), "350ms ago");
        assert_eq!(age(1_000, 5_200), "4.2s ago");
        assert_eq!(age(1_000, 193_000), "3m 12s ago");
    }

    fn move_operator(state: OperatorState, current_step: u32) -> OperatorInfo {
        use crate::proto::OperatorStep;
        OperatorInfo {
            operator_id: 12,
            region_id: 2,
            source: "replica-check".into(),
            reason: "replica-check: replace a peer on a down store".into(),
            steps: vec![
                OperatorStep { kind: StepKind::AddPeer as i32, store_id: 4, peer_id: 14, ..Default::default() },
                OperatorStep { kind: StepKind::TransferLeader as i32, store_id: 2, ..Default::default() },
                OperatorStep { kind: StepKind::RemovePeer as i32, store_id: 1, ..Default::default() },
            ],
            current_step,
            state: state as i32,
            created_ms: 10_000,
            finished_ms: if state == OperatorState::Running { 0 } else { 12_500 },
            note: if state == OperatorState::Timeout { "no progress for 3m".into() } else { String::new() },
        }
    }

    #[test]
    fn operator_json_has_the_documented_fields() {
        let running = move_operator(OperatorState::Running, 1);
        let done = move_operator(OperatorState::Timeout, 2);
        let json: Value = serde_json::from_str(&render_operators(&[running], &[done], 11_000, Output::Json)).unwrap();
        assert_eq!(
            json["running"][0],
            json!({
                "operator_id": 12, "region_id": 2, "source": "replica-check",
                "reason": "replica-check: replace a peer on a down store", "state": "running",
                "steps": [
                    { "kind": "add-peer", "store_id": 4, "peer_id": 14 },
                    { "kind": "transfer-leader", "store_id": 2 },
                    { "kind": "remove-peer", "store_id": 1 },
                ],
                "current_step": 1, "created_ms": 10_000, "finished_ms": null, "took_ms": 1000, "note": "",
            })
        );
        assert_eq!(json["history"][0]["state"], "timeout");
        assert_eq!(json["history"][0]["took_ms"], 2500);
        assert_eq!(json["history"][0]["note"], "no progress for 3m");
    }

    #[test]
    fn operator_table_marks_the_step_under_way_and_lists_running_first() {
        let running = move_operator(OperatorState::Running, 1);
        let mut older = move_operator(OperatorState::Success, 3);
        older.operator_id = 3;
        let mut newer = move_operator(OperatorState::Timeout, 2);
        newer.operator_id = 9;
        let text = render_operators(&[running], &[older, newer], 11_000, Output::Table);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID  REGION  SOURCE"), "{text}");
        assert!(lines[1].starts_with("12 ") && lines[1].contains("running"), "{text}");
        assert!(
            lines[1].contains("add peer 14 on store 4 → [transfer leader to store 2] → remove peer on store 1"),
            "{text}"
        );
        assert!(lines[2].starts_with("9 ") && lines[2].contains("timeout") && lines[2].ends_with("no progress for 3m"));
        assert!(lines[3].starts_with("3 ") && lines[3].contains("success") && !lines[3].contains('['), "{text}");
    }

    #[test]
    fn store_states_and_schedulers_read_plainly() {
        let store = |state: StoreState| StoreInfo { state: state as i32, ..Default::default() };
        let names: Vec<&str> = [StoreState::Up, StoreState::Down, StoreState::Offline, StoreState::Removed]
            .map(store)
            .iter()
            .map(state_name)
            .collect();
        assert_eq!(names, ["up", "down", "offline", "removed"]);
        let schedulers = vec![
            SchedulerInfo { name: "replica-check".into(), enabled: true, can_disable: false },
            SchedulerInfo { name: "balance-leader".into(), enabled: false, can_disable: true },
        ];
        assert_eq!(
            render_schedulers(&schedulers, Output::Table),
            "SCHEDULER       STATE\nreplica-check   enabled (always)\nbalance-leader  disabled\n"
        );
        let json: Value = serde_json::from_str(&render_schedulers(&schedulers, Output::Json)).unwrap();
        assert_eq!(json[1], json!({ "name": "balance-leader", "enabled": false, "can_disable": true }));
    }
}
