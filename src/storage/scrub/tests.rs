//! The scrub on damaged environments: each kind of damage it exists for, made by hand.

use protobuf::Message as _;
use raft::eraftpb::Entry;

use super::{scrub, Finding, ScrubOptions, ScrubReport};
use crate::proto::{PeerState, RaftApplyState, RaftLocalState, Region, RegionLocalState, StoreIdent};
use crate::storage::codec::{self, Table};
use crate::storage::{keys, Engine, EngineOptions, StorageError};

fn open(dir: &std::path::Path) -> Engine {
    Engine::open(dir, &EngineOptions::for_tests()).unwrap()
}

fn region(region_id: u64, start: &[u8], end: &[u8]) -> Region {
    Region { region_id, start_key: start.to_vec(), end_key: end.to_vec(), ..Default::default() }
}

fn entry(index: u64, term: u64) -> Entry {
    Entry { index, term, ..Default::default() }
}

/// A healthy store: region 1 `["", "m")` with log entries 6..=8 (applied), region 2 `["m", "")` with
/// an empty log, five user keys.
fn healthy(dir: &std::path::Path) -> Engine {
    let engine = open(dir);
    let mut txn = engine.write_txn().unwrap();
    engine
        .put_store_ident(&mut txn, &StoreIdent { cluster_id: 1, store_id: 1, format_version: 2, ..Default::default() })
        .unwrap();
    engine.put_format_version(&mut txn, 2).unwrap();
    for (r, last, last_term, applied) in [(region(1, b"", b"m"), 8, 6, 8), (region(2, b"m", b""), 5, 5, 5)] {
        engine
            .put_region_state(
                &mut txn,
                &RegionLocalState { region: Some(r.clone()), state: PeerState::Normal as i32, ..Default::default() },
            )
            .unwrap();
        let raft_state = RaftLocalState { term: 6, vote: 1, commit: applied, last_index: last, last_term };
        engine.put_raft_state(&mut txn, r.region_id, &raft_state).unwrap();
        let apply_state = RaftApplyState { applied_index: applied, truncated_index: 5, truncated_term: 5 };
        engine.put_apply_state(&mut txn, r.region_id, &apply_state).unwrap();
    }
    for index in 6..=8 {
        engine.put_entry(&mut txn, 1, &entry(index, 6)).unwrap();
    }
    for key in [&b"a"[..], b"b", b"c", b"x", b"y"] {
        engine.put_data(&mut txn, key, 7, b"value").unwrap();
    }
    engine.commit(txn).unwrap();
    engine
}

fn check(engine: &Engine) -> ScrubReport {
    scrub(engine, &ScrubOptions { batch: 2, ..Default::default() }, &|| false).unwrap()
}

fn has(report: &ScrubReport, table: &str, key: &str, problem: &str) -> bool {
    report.findings.iter().any(|f| f.table == table && f.key == key && f.problem.contains(problem))
}

#[test]
fn a_healthy_store_checks_clean_across_batches() {
    let dir = tempfile::tempdir().unwrap();
    let engine = healthy(dir.path());
    let report = check(&engine);
    assert_eq!(report.findings, Vec::<Finding>::new());
    assert!(report.complete);
    assert_eq!((report.damaged, report.regions_checked), (0, 2));
    assert_eq!(report.records_by_table["data"], 5);
    assert_eq!(report.records_by_table["raft_log"], 3);
    assert_eq!(report.records_checked, 5 + 3 + 2 + 2 + 2 + 2);
}

#[test]
fn a_record_under_another_key_and_a_damaged_state_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let engine = healthy(dir.path());
    let mut txn = engine.write_txn().unwrap();
    // The record of "e" stored as "d": what a flipped bit in a stored key leaves.
    engine.dbs.data.put(&mut txn, b"d", &codec::encode_record(b"e", 9, b"v")).unwrap();
    let key = keys::region_key(2);
    let mut framed = engine.dbs.raft_state.get(&txn, &key).unwrap().unwrap().to_vec();
    *framed.last_mut().unwrap() ^= 0x10;
    engine.dbs.raft_state.put(&mut txn, &key, &framed).unwrap();
    engine.commit(txn).unwrap();
    let report = check(&engine);
    assert!(has(&report, "data", "d", "checksum mismatch"), "{:#?}", report.findings);
    assert!(has(&report, "raft_state", "region 2", "checksum mismatch"), "{:#?}", report.findings);
    assert_eq!(report.damaged, 2, "{:#?}", report.findings);
    assert_eq!(engine.checksum_failures.get(), 2);
    // Each names the region whose replica to rebuild: "d" sits after "c", in region 1.
    let regions: Vec<_> = report.findings.iter().map(|f| (f.key.as_str(), f.region_id)).collect();
    assert_eq!(regions, vec![("region 2", Some(2)), ("d", Some(1))]);
}

#[test]
fn a_log_entry_under_another_index_and_a_gap_in_a_log_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let engine = healthy(dir.path());
    let mut txn = engine.write_txn().unwrap();
    // Entry 9 framed for key (1, 7), as if written there: its checksum matches, its index does not.
    let key = keys::raft_log_key(1, 7);
    engine
        .dbs
        .raft_log
        .put(&mut txn, &key, &codec::frame(Table::RaftLog, &key, &entry(9, 6).write_to_bytes().unwrap()))
        .unwrap();
    engine.commit(txn).unwrap();
    let report = check(&engine);
    assert!(has(&report, "raft_log", "region 1 index 7", "holds entry 9"), "{:#?}", report.findings);

    let mut txn = engine.write_txn().unwrap();
    engine.delete_entries(&mut txn, 1, 7, 8).unwrap();
    engine.commit(txn).unwrap();
    let report = check(&engine);
    assert!(has(&report, "raft_log", "region 1", "entries 7 to 7 are missing"), "{:#?}", report.findings);
}

#[test]
fn inconsistent_states_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let engine = healthy(dir.path());
    let mut txn = engine.write_txn().unwrap();
    // A recorded commit index behind the applied one is normal (format 3 records it only with a new
    // term or vote), and the record's log end means nothing: the log's last entry is the end.
    let lagging = RaftLocalState { term: 6, vote: 1, commit: 6, last_index: 2, last_term: 1 };
    engine.put_raft_state(&mut txn, 1, &lagging).unwrap();
    engine.commit(txn).unwrap();
    let report = check(&engine);
    assert!(report.findings.is_empty(), "{:#?}", report.findings);
    // A commit index past the log's end, or an applied one, is not.
    let mut txn = engine.write_txn().unwrap();
    let ahead = RaftLocalState { commit: 9, ..lagging };
    engine.put_raft_state(&mut txn, 1, &ahead).unwrap();
    let applied_ahead = RaftApplyState { applied_index: 6, truncated_index: 5, truncated_term: 5 };
    engine.put_apply_state(&mut txn, 2, &applied_ahead).unwrap();
    engine.commit(txn).unwrap();
    let report = check(&engine);
    assert!(has(&report, "apply_state", "region 1", "applied 8, commit 9, last 8"), "{:#?}", report.findings);
    assert!(has(&report, "apply_state", "region 2", "applied 6, commit 5, last 5"), "{:#?}", report.findings);
}

#[test]
fn data_outside_every_held_region_and_a_destroyed_peers_leftovers_are_found() {
    let dir = tempfile::tempdir().unwrap();
    let engine = healthy(dir.path());
    let mut txn = engine.write_txn().unwrap();
    let tombstone = RegionLocalState {
        region: Some(region(1, b"", b"m")),
        state: PeerState::Tombstone as i32,
        ..Default::default()
    };
    engine.put_region_state(&mut txn, &tombstone).unwrap();
    engine.commit(txn).unwrap();
    let report = check(&engine);
    for key in ["a", "b", "c"] {
        assert!(has(&report, "data", key, "outside every region"), "{:#?}", report.findings);
    }
    assert!(!has(&report, "data", "x", "outside"), "{:#?}", report.findings);
    assert!(
        has(&report, "raft_log", "region 1", "raft log entries (from 6) of a destroyed peer"),
        "{:#?}",
        report.findings
    );
    assert!(has(&report, "apply_state", "region 1", "an apply state of a destroyed peer"), "{:#?}", report.findings);
}

#[test]
fn an_empty_peers_kept_raft_state_is_no_damage() {
    let dir = tempfile::tempdir().unwrap();
    let engine = healthy(dir.path());
    let mut txn = engine.write_txn().unwrap();
    engine.put_raft_state(&mut txn, 9, &RaftLocalState { term: 7, vote: 3, ..Default::default() }).unwrap();
    engine.commit(txn).unwrap();
    let report = check(&engine);
    assert_eq!((report.damaged, report.regions_checked), (0, 3), "{:#?}", report.findings);
}

#[test]
fn a_stopped_pass_says_it_is_incomplete() {
    let dir = tempfile::tempdir().unwrap();
    let engine = healthy(dir.path());
    let report = scrub(&engine, &ScrubOptions { batch: 1, ..Default::default() }, &|| true).unwrap();
    assert!(!report.complete);
    assert!(report.records_checked < 16, "{report:?}");
}

#[test]
fn a_pass_keeps_to_its_byte_rate() {
    let mut pacer = super::Pacer { rate: Some(1000), started: std::time::Instant::now(), bytes: 0 };
    pacer.pace(100, &|| false);
    assert!(pacer.started.elapsed() >= std::time::Duration::from_millis(100));
}

/// Flips a bit of the first byte of `key` where the file holds it as the key of its user record.
fn flip_key_in_file(dir: &std::path::Path, key: &[u8], value: &[u8]) {
    let path = dir.join("data.mdb");
    let mut file = std::fs::read(&path).unwrap();
    let at = (0..file.len() - key.len() - 12 - value.len())
        .find(|&i| file[i..].starts_with(key) && file[i + key.len() + 12..].starts_with(value))
        .expect("the record is in the file");
    file[at] ^= 0x04;
    std::fs::write(&path, &file).unwrap();
}

#[test]
fn a_flipped_key_byte_in_the_file_is_found_by_reads_scans_and_the_scrub() {
    let dir = tempfile::tempdir().unwrap();
    let engine = healthy(dir.path());
    let mut txn = engine.write_txn().unwrap();
    for i in 150..175 {
        engine.put_data(&mut txn, format!("key{i}").as_bytes(), 7, format!("value-{i}").as_bytes()).unwrap();
    }
    engine.commit(txn).unwrap();
    engine.close();
    flip_key_in_file(dir.path(), b"key162", b"value-162"); // 'k' → 'o'
    let engine = open(dir.path());
    let txn = engine.read_txn().unwrap();
    let err = engine.read_data(&txn, b"key162").unwrap_err();
    assert!(
        matches!(&err, StorageError::Corruption { what, detail } if what == "key key162" && detail.contains("oey162")),
        "{err}"
    );
    assert!(engine.get_data(&txn, b"key161").unwrap().is_some());
    let scanned = engine.scan_data(&txn, b"key", b"kez", 100).unwrap_err();
    assert!(scanned.to_string().contains("oey162"), "{scanned}");
    drop(txn);
    let report = check(&engine);
    assert!(has(&report, "data", "oey162", "checksum mismatch"), "{:#?}", report.findings);
    assert!(has(&report, "data", "oey162", "a lookup of its key finds nothing"), "{:#?}", report.findings);
}

#[test]
fn format_version_is_none_fresh_one_for_the_first_format_and_recorded_after() {
    let dir = tempfile::tempdir().unwrap();
    let engine = open(dir.path());
    let mut txn = engine.write_txn().unwrap();
    assert_eq!(engine.format_version(&txn).unwrap(), None);
    // The first format kept the version inside the store identity only.
    engine.dbs.meta.put(&mut txn, keys::STORE_IDENT_KEY, b"\0\0\0\0old").unwrap();
    assert_eq!(engine.format_version(&txn).unwrap(), Some(1));
    engine.put_format_version(&mut txn, 2).unwrap();
    assert_eq!(engine.format_version(&txn).unwrap(), Some(2));
}
