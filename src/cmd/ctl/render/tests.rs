//! Every field name and column of what ctl renders.

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
