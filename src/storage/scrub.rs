//! The scrub: a check of a whole store against its on-disk format, to find damage no read touches.
//!
//! One pass walks every database in key order, in batches of short read transactions (a long one
//! would keep LMDB from reusing pages, and the file would grow while it runs), and checks that:
//! - every record's checksum matches its table, key and value, and the value decodes;
//! - keys come in order, and each record is found again by a lookup of its own key (damage to
//!   LMDB's index pages would otherwise only show as keys that silently went missing);
//! - every user key lies inside the range of a region this store holds;
//! - each region's states agree with each other and with its raft log, which is contiguous from
//!   the truncated index to the last index ([`regions`]).
//!
//! A pass only reads. What to do with what it finds is the operator's (see the README: rebuild the
//! replica from its peers, or restore the key). [`background`] runs passes on a schedule with a rate
//! limit, and on demand.

pub mod background;
mod regions;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet};
use std::ops::Bound;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use heed::types::Bytes;
use heed::Database;
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::Entry;
use serde::Serialize;

use super::codec::{self, Table};
use super::keys::{self, display};
use super::{Engine, ReadTxn, Result};
use crate::proto::{RaftApplyState, RaftLocalState, RegionLocalState, StoreIdent};

/// How a pass reads.
#[derive(Debug, Clone)]
pub struct ScrubOptions {
    /// Records read per read transaction.
    pub batch: usize,
    /// Bytes read per second at most (`None`: as fast as it goes).
    pub rate: Option<u64>,
    /// Findings listed (and logged) in a report; all are counted.
    pub max_listed: usize,
}

impl Default for ScrubOptions {
    fn default() -> Self {
        ScrubOptions { batch: 1024, rate: None, max_listed: 100 }
    }
}

/// One problem a pass found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// The database it is in.
    pub table: &'static str,
    /// The record's key as text: a user key percent-encoded, `region R` or `region R index I`.
    pub key: String,
    /// The region whose replica holds the damage, when known: the one to rebuild. A damaged user
    /// key is placed by the intact key stored before it.
    pub region_id: Option<u64>,
    pub problem: String,
}

/// What a pass checked and found.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ScrubReport {
    /// When the pass started (ms since the Unix epoch).
    pub started_unix_ms: u64,
    pub took_ms: u64,
    /// False if the pass was stopped before it had checked everything.
    pub complete: bool,
    pub records_checked: u64,
    pub bytes_checked: u64,
    /// Records checked per database.
    pub records_by_table: BTreeMap<&'static str, u64>,
    pub regions_checked: u64,
    /// Problems found (every one counts, the first `max_listed` are listed).
    pub damaged: u64,
    pub findings: Vec<Finding>,
}

/// Runs one pass over `engine`. `stop` is asked between batches; once it says yes the pass ends
/// early, with `complete: false`.
pub fn scrub(engine: &Engine, options: &ScrubOptions, stop: &dyn Fn() -> bool) -> Result<ScrubReport> {
    let started_unix_ms = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let mut pass = Pass {
        engine,
        options,
        stop,
        report: ScrubReport { started_unix_ms, ..Default::default() },
        pacer: Pacer { rate: options.rate, started: Instant::now(), bytes: 0 },
        seen: Seen::default(),
        ranges: Vec::new(),
        last_intact_key: None,
    };
    for table in Table::ALL {
        pass.walk(table)?;
        if stop() {
            return Ok(pass.finish(false));
        }
    }
    let region_ids: BTreeSet<u64> = pass.seen.region_ids();
    for region_id in region_ids {
        if stop() {
            return Ok(pass.finish(false));
        }
        pass.check_region(region_id)?;
    }
    Ok(pass.finish(true))
}

/// The range `[start, end)` (empty end: unbounded) of a region this store holds.
struct HeldRange {
    start: Vec<u8>,
    end: Vec<u8>,
    region_id: u64,
}

/// Region ids met in the per-region databases, for the region checks.
#[derive(Default)]
struct Seen {
    regions: BTreeSet<u64>,
    raft_states: BTreeSet<u64>,
    apply_states: BTreeSet<u64>,
    logs: BTreeSet<u64>,
}

impl Seen {
    fn region_ids(&self) -> BTreeSet<u64> {
        [&self.regions, &self.raft_states, &self.apply_states, &self.logs].into_iter().flatten().copied().collect()
    }
}

struct Pass<'a> {
    engine: &'a Engine,
    options: &'a ScrubOptions,
    stop: &'a dyn Fn() -> bool,
    report: ScrubReport,
    pacer: Pacer,
    seen: Seen,
    /// The ranges of the regions this store holds, as last read (refreshed when a key falls outside).
    ranges: Vec<HeldRange>,
    /// The last user key the walk found intact: where a damaged one sits.
    last_intact_key: Option<Vec<u8>>,
}

impl Pass<'_> {
    fn finish(mut self, complete: bool) -> ScrubReport {
        self.report.complete = complete;
        self.report.took_ms = self.pacer.started.elapsed().as_millis() as u64;
        self.report
    }

    fn found(&mut self, table: Table, key: String, region_id: Option<u64>, problem: String) {
        self.report.damaged += 1;
        if self.report.findings.len() < self.options.max_listed {
            tracing::error!(table = table.name(), key = %key, region_id, problem = %problem, "scrub: stored data is damaged");
            self.report.findings.push(Finding { table: table.name(), key, region_id, problem });
        }
    }

    /// A problem with the record stored under `key` in `table`.
    fn found_record(&mut self, txn: &ReadTxn<'_>, table: Table, key: &[u8], problem: String) {
        let region_id = match table {
            Table::Data => {
                let placed_by = self.last_intact_key.clone().unwrap_or_else(|| key.to_vec());
                self.region_holding(txn, keys::user_key_of(&placed_by))
            }
            _ => region_of_key(table, key),
        };
        self.found(table, describe_key(table, key), region_id, problem);
    }

    /// Walks one database in batches, each in its own read transaction, resuming after the last key.
    fn walk(&mut self, table: Table) -> Result<()> {
        let db = self.engine.db(table);
        let mut resume: Option<Vec<u8>> = None;
        loop {
            let txn = self.engine.read_txn()?;
            let lower = resume.as_deref().map_or(Bound::Unbounded, Bound::Excluded);
            let (mut count, mut bytes) = (0usize, 0u64);
            let mut previous = resume.clone();
            let mut broken = false;
            let iter = match db.range(&txn, &(lower, Bound::Unbounded)) {
                Ok(iter) => iter,
                Err(err) => {
                    self.found(table, "-".into(), None, format!("LMDB cannot walk the database: {err}"));
                    return Ok(());
                }
            };
            for item in iter {
                let (key, stored) = match item {
                    Ok(item) => item,
                    Err(err) => {
                        let at = previous.as_deref().map_or("its start".to_string(), |k| describe_key(table, k));
                        let region_id = previous.as_deref().and_then(|k| region_of_key(table, k));
                        self.found(table, at, region_id, format!("LMDB cannot read past this record: {err}"));
                        broken = true;
                        break;
                    }
                };
                if previous.as_deref().is_some_and(|p| key <= p) {
                    let after = previous.as_deref().map(|p| describe_key(table, p)).unwrap_or_default();
                    self.found_record(&txn, table, key, format!("stored after {after}: keys out of order"));
                }
                self.check_lookup(&txn, db, table, key, stored);
                self.check_record(&txn, table, key, stored);
                previous = Some(key.to_vec());
                count += 1;
                bytes += (key.len() + stored.len()) as u64;
                if count == self.options.batch {
                    break;
                }
            }
            drop(txn);
            *self.report.records_by_table.entry(table.name()).or_default() += count as u64;
            self.report.records_checked += count as u64;
            self.report.bytes_checked += bytes;
            if broken || count < self.options.batch || (self.stop)() {
                return Ok(());
            }
            self.pacer.pace(bytes, self.stop);
            resume = previous;
        }
    }

    /// A record must be found again by a lookup of its own key.
    fn check_lookup(&mut self, txn: &ReadTxn<'_>, db: Database<Bytes, Bytes>, table: Table, key: &[u8], stored: &[u8]) {
        let problem = match db.get(txn, key) {
            Ok(Some(found)) if found == stored => return,
            Ok(Some(_)) => "a lookup of its key finds another record".to_string(),
            Ok(None) => "a lookup of its key finds nothing: LMDB's index of the database is damaged".to_string(),
            Err(err) => format!("a lookup of its key fails: {err}"),
        };
        self.found_record(txn, table, key, problem);
    }

    fn check_record(&mut self, txn: &ReadTxn<'_>, table: Table, key: &[u8], stored: &[u8]) {
        let checked = match table {
            Table::Data => codec::verify_record(key, stored).map(drop).map_err(checksum),
            _ => codec::verify_frame(table, key, stored)
                .map_err(checksum)
                .and_then(|payload| self.decode(table, key, payload)),
        };
        match checked {
            Err(problem) => {
                if problem.starts_with("checksum") {
                    self.engine.checksum_failures.inc();
                }
                self.found_record(txn, table, key, problem);
            }
            Ok(()) if table == Table::Data => {
                self.check_in_region(txn, key);
                self.last_intact_key = Some(key.to_vec());
            }
            Ok(()) => {}
        }
    }

    /// Decodes a framed payload as what its table holds, noting region ids for the region checks.
    fn decode(&mut self, table: Table, key: &[u8], payload: &[u8]) -> Result<(), String> {
        let undecodable = |e: &dyn std::fmt::Display| format!("does not decode: {e}");
        let region_id = || keys::decode_region_key(key).ok_or_else(|| "malformed key (not a region id)".to_string());
        match table {
            Table::Meta if key == keys::STORE_IDENT_KEY => {
                StoreIdent::decode(payload).map(drop).map_err(|e| undecodable(&e))
            }
            Table::Meta if key == keys::AUTH_STATE_KEY => {
                crate::proto::AuthState::decode(payload).map(drop).map_err(|e| undecodable(&e))
            }
            Table::Meta if key == keys::FORMAT_VERSION_KEY => match payload.len() {
                4 => Ok(()),
                n => Err(format!("does not decode: {n} bytes, not 4")),
            },
            Table::Meta => Err("not a record this format has".into()),
            Table::Region => {
                let region_id = region_id()?;
                let state = RegionLocalState::decode(payload).map_err(|e| undecodable(&e))?;
                let recorded = state.region.map_or(0, |r| r.region_id);
                if recorded != region_id {
                    return Err(format!("holds region {recorded}"));
                }
                self.seen.regions.insert(region_id);
                Ok(())
            }
            Table::RaftState => {
                self.seen.raft_states.insert(region_id()?);
                RaftLocalState::decode(payload).map(drop).map_err(|e| undecodable(&e))
            }
            Table::ApplyState => {
                self.seen.apply_states.insert(region_id()?);
                RaftApplyState::decode(payload).map(drop).map_err(|e| undecodable(&e))
            }
            Table::RaftLog => {
                let (region_id, index) = keys::decode_raft_log_key(key)
                    .ok_or_else(|| "malformed key (not region id ‖ index)".to_string())?;
                self.seen.logs.insert(region_id);
                let entry = Entry::parse_from_bytes(payload).map_err(|e| undecodable(&e))?;
                match entry.index == index {
                    true => Ok(()),
                    false => Err(format!("holds entry {}", entry.index)),
                }
            }
            Table::Data => Ok(()),
        }
    }

    /// A user key must lie in the range of a region this store holds.
    fn check_in_region(&mut self, txn: &ReadTxn<'_>, data_key: &[u8]) {
        if self.region_holding(txn, keys::user_key_of(data_key)).is_none() {
            self.found(Table::Data, display(data_key), None, "outside every region this store holds".into());
        }
    }

    /// The region this store holds whose range has `key`. The ranges are re-read, in the
    /// transaction that read the key, before a key is said to be in none: a split or a new region
    /// may have come after the last read.
    fn region_holding(&mut self, txn: &ReadTxn<'_>, key: &[u8]) -> Option<u64> {
        if let Some(region_id) = range_holding(&self.ranges, key) {
            return Some(region_id);
        }
        // A damaged region record is reported on its own; the ranges stay as they were.
        if let Ok(ranges) = held_ranges(self.engine, txn) {
            self.ranges = ranges;
        }
        range_holding(&self.ranges, key)
    }
}

fn checksum(detail: String) -> String {
    format!("checksum mismatch: {detail}")
}

/// The ranges of the `Normal` regions of this store, sorted by start key.
fn held_ranges(engine: &Engine, txn: &ReadTxn<'_>) -> Result<Vec<HeldRange>, String> {
    let mut ranges = Vec::new();
    for item in engine.db(Table::Region).iter(txn).map_err(|e| e.to_string())? {
        let (key, stored) = item.map_err(|e| e.to_string())?;
        let payload = codec::verify_frame(Table::Region, key, stored)?;
        let state = RegionLocalState::decode(payload).map_err(|e| e.to_string())?;
        if let (crate::proto::PeerState::Normal, Some(region)) = (state.state(), state.region) {
            ranges.push(HeldRange { start: region.start_key, end: region.end_key, region_id: region.region_id });
        }
    }
    Ok(ranges)
}

fn range_holding(ranges: &[HeldRange], key: &[u8]) -> Option<u64> {
    let holds = |r: &&HeldRange| r.start.as_slice() <= key && (r.end.is_empty() || key < r.end.as_slice());
    ranges.iter().find(holds).map(|r| r.region_id)
}

/// The region a per-region record's key names.
fn region_of_key(table: Table, key: &[u8]) -> Option<u64> {
    match table {
        Table::RaftLog => keys::decode_raft_log_key(key).map(|(region_id, _)| region_id),
        Table::RaftState | Table::ApplyState | Table::Region => keys::decode_region_key(key),
        Table::Data | Table::Meta => None,
    }
}

/// A key as a finding names it.
fn describe_key(table: Table, key: &[u8]) -> String {
    match table {
        Table::Data | Table::Meta => display(key),
        Table::RaftLog => match keys::decode_raft_log_key(key) {
            Some((region_id, index)) => format!("region {region_id} index {index}"),
            None => display(key),
        },
        Table::RaftState | Table::ApplyState | Table::Region => match keys::decode_region_key(key) {
            Some(region_id) => format!("region {region_id}"),
            None => display(key),
        },
    }
}

/// Keeps a pass under its byte rate by sleeping between batches.
struct Pacer {
    rate: Option<u64>,
    started: Instant,
    bytes: u64,
}

impl Pacer {
    fn pace(&mut self, bytes: u64, stop: &dyn Fn() -> bool) {
        self.bytes += bytes;
        let Some(rate) = self.rate.filter(|r| *r > 0) else { return };
        let due = Duration::from_secs_f64(self.bytes as f64 / rate as f64);
        // Short sleeps, so a stop is noticed within moments.
        while self.started.elapsed() < due && !stop() {
            std::thread::sleep((due - self.started.elapsed()).min(Duration::from_millis(20)));
        }
    }
}
