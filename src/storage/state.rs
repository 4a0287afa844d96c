//! Framed values: the store's identity and format version (`meta`), each region's metadata
//! (`region`), raft state (`raft_state`), apply state (`apply_state`) and raft log (`raft_log`).
//! Every value is checked against its table and key on the way out (see [`super::codec`]).

use heed::types::Bytes;
use heed::{Database, RoTxn, RwTxn};
use prost::Message as _;
use protobuf::Message as _;
use raft::eraftpb::Entry;

use super::codec::{self, Table};
use super::{keys, log_range, Engine, Result, StorageError};
use crate::proto::{RaftApplyState, RaftLocalState, RegionLocalState, StoreIdent};

/// The only format whose version is not in `meta`'s `format_version` record.
const FIRST_FORMAT_VERSION: u32 = 1;

impl Engine {
    fn get_msg<M: prost::Message + Default>(
        &self,
        txn: &RoTxn<'_>,
        table: Table,
        key: &[u8],
        what: impl Fn() -> String,
    ) -> Result<Option<M>> {
        let Some(stored) = self.db(table).get(txn, key).map_err(|e| self.err(e))? else {
            return Ok(None);
        };
        let payload = self.checked(codec::unframe(table, key, stored, &what))?;
        M::decode(payload).map(Some).map_err(|e| StorageError::Decode { what: what(), detail: e.to_string() })
    }

    fn put_msg<M: prost::Message>(&self, txn: &mut RwTxn<'_>, table: Table, key: &[u8], msg: &M) -> Result<()> {
        self.db(table).put(txn, key, &codec::frame(table, key, &msg.encode_to_vec())).map_err(|e| self.err(e))
    }

    /// The format version the environment was written in: `None` for a fresh one. A store of the
    /// first format (which kept its version only inside the store identity, under a checksum this
    /// build no longer reads) has a store identity and no version record.
    pub fn format_version(&self, txn: &RoTxn<'_>) -> Result<Option<u32>> {
        let key = keys::FORMAT_VERSION_KEY;
        let meta = self.db(Table::Meta);
        if let Some(stored) = meta.get(txn, key).map_err(|e| self.err(e))? {
            let payload = self.checked(codec::unframe(Table::Meta, key, stored, || "format version".into()))?;
            let version = payload.try_into().map(u32::from_be_bytes).map_err(|_| StorageError::Decode {
                what: "format version".into(),
                detail: format!("{} bytes, not 4", payload.len()),
            })?;
            return Ok(Some(version));
        }
        let old_ident = meta.get(txn, keys::STORE_IDENT_KEY).map_err(|e| self.err(e))?;
        Ok(old_ident.map(|_| FIRST_FORMAT_VERSION))
    }

    pub fn put_format_version(&self, txn: &mut RwTxn<'_>, version: u32) -> Result<()> {
        let key = keys::FORMAT_VERSION_KEY;
        let framed = codec::frame(Table::Meta, key, &version.to_be_bytes());
        self.db(Table::Meta).put(txn, key, &framed).map_err(|e| self.err(e))
    }

    pub fn store_ident(&self, txn: &RoTxn<'_>) -> Result<Option<StoreIdent>> {
        self.get_msg(txn, Table::Meta, keys::STORE_IDENT_KEY, || "store identity".into())
    }

    pub fn put_store_ident(&self, txn: &mut RwTxn<'_>, ident: &StoreIdent) -> Result<()> {
        self.put_msg(txn, Table::Meta, keys::STORE_IDENT_KEY, ident)
    }

    /// The auth state this node last received from placement (`None`: never; auth is then off).
    pub fn auth_state(&self, txn: &RoTxn<'_>) -> Result<Option<crate::proto::AuthState>> {
        self.get_msg(txn, Table::Meta, keys::AUTH_STATE_KEY, || "auth state".into())
    }

    pub fn put_auth_state(&self, txn: &mut RwTxn<'_>, state: &crate::proto::AuthState) -> Result<()> {
        self.put_msg(txn, Table::Meta, keys::AUTH_STATE_KEY, state)
    }

    pub fn raft_state(&self, txn: &RoTxn<'_>, region_id: u64) -> Result<Option<RaftLocalState>> {
        self.get_msg(txn, Table::RaftState, &keys::region_key(region_id), || {
            format!("raft state of region {region_id}")
        })
    }

    pub fn put_raft_state(&self, txn: &mut RwTxn<'_>, region_id: u64, state: &RaftLocalState) -> Result<()> {
        self.put_msg(txn, Table::RaftState, &keys::region_key(region_id), state)
    }

    pub fn apply_state(&self, txn: &RoTxn<'_>, region_id: u64) -> Result<Option<RaftApplyState>> {
        self.get_msg(txn, Table::ApplyState, &keys::region_key(region_id), || {
            format!("apply state of region {region_id}")
        })
    }

    pub fn put_apply_state(&self, txn: &mut RwTxn<'_>, region_id: u64, state: &RaftApplyState) -> Result<()> {
        self.put_msg(txn, Table::ApplyState, &keys::region_key(region_id), state)
    }

    /// Forgets a region's raft and apply state (its peer here was destroyed).
    pub fn delete_peer_states(&self, txn: &mut RwTxn<'_>, region_id: u64) -> Result<()> {
        let key = keys::region_key(region_id);
        self.dbs.raft_state.delete(txn, &key).map_err(|e| self.err(e))?;
        self.dbs.apply_state.delete(txn, &key).map_err(|e| self.err(e))?;
        Ok(())
    }

    pub fn region_state(&self, txn: &RoTxn<'_>, region_id: u64) -> Result<Option<RegionLocalState>> {
        self.get_msg(txn, Table::Region, &keys::region_key(region_id), || format!("region state of region {region_id}"))
    }

    pub fn put_region_state(&self, txn: &mut RwTxn<'_>, state: &RegionLocalState) -> Result<()> {
        let region_id = state.region.as_ref().map_or(0, |r| r.region_id);
        self.put_msg(txn, Table::Region, &keys::region_key(region_id), state)
    }

    /// Every region this store has a record of, tombstones included.
    pub fn region_states(&self, txn: &RoTxn<'_>) -> Result<Vec<RegionLocalState>> {
        let mut out = Vec::new();
        for item in self.dbs.region.iter(txn).map_err(|e| self.err(e))? {
            let (key, stored) = item.map_err(|e| self.err(e))?;
            out.push(decode_region_state(self, key, stored)?);
        }
        Ok(out)
    }

    // ---- raft log ----

    pub fn put_entry(&self, txn: &mut RwTxn<'_>, region_id: u64, entry: &Entry) -> Result<()> {
        let bytes = entry.write_to_bytes().expect("encoding an in-memory raft entry cannot fail");
        let key = keys::raft_log_key(region_id, entry.index);
        self.dbs.raft_log.put(txn, &key, &codec::frame(Table::RaftLog, &key, &bytes)).map_err(|e| self.err(e))
    }

    /// Reads the checked entries `[low, high)` of a region, stopping early once `max_bytes` is passed
    /// (at least one entry is returned). A missing entry in the range is an error: the durable log of
    /// a region is contiguous.
    pub fn entries(&self, txn: &RoTxn<'_>, region_id: u64, low: u64, high: u64, max_bytes: u64) -> Result<Vec<Entry>> {
        let (from, to) = (keys::raft_log_key(region_id, low), keys::raft_log_key(region_id, high));
        let mut out = Vec::with_capacity((high - low).min(1024) as usize);
        let mut size = 0u64;
        let mut expected = low;
        let describe = |index: u64| format!("raft log entry {index} of region {region_id}");
        for item in self.dbs.raft_log.range(txn, &log_range(&from, &to)).map_err(|e| self.err(e))? {
            let (key, stored) = item.map_err(|e| self.err(e))?;
            let entry = decode_entry(self, key, stored)?;
            if entry.index != expected {
                break;
            }
            size += stored.len() as u64;
            if !out.is_empty() && size > max_bytes {
                return Ok(out);
            }
            out.push(entry);
            expected += 1;
        }
        if expected < high {
            return Err(StorageError::Decode { what: describe(expected), detail: "missing from the log".into() });
        }
        Ok(out)
    }

    /// The (index, term) of a region's last log entry, checked, if its log holds any. The raft state
    /// record does not keep the log's end (see `PeerStorage::load`): the log itself says it.
    pub fn last_entry(&self, txn: &RoTxn<'_>, region_id: u64) -> Result<Option<(u64, u64)>> {
        let (from, to) = (keys::raft_log_key(region_id, 0), keys::raft_log_key(region_id, u64::MAX));
        let range = (std::ops::Bound::Included(&from[..]), std::ops::Bound::Included(&to[..]));
        let mut last = self.dbs.raft_log.rev_range(txn, &range).map_err(|e| self.err(e))?;
        match last.next() {
            None => Ok(None),
            Some(item) => {
                let (key, stored) = item.map_err(|e| self.err(e))?;
                let entry = decode_entry(self, key, stored)?;
                Ok(Some((entry.index, entry.term)))
            }
        }
    }

    /// Deletes the log entries `[low, high)` of a region.
    pub fn delete_entries(&self, txn: &mut RwTxn<'_>, region_id: u64, low: u64, high: u64) -> Result<usize> {
        let (from, to) = (keys::raft_log_key(region_id, low), keys::raft_log_key(region_id, high));
        self.dbs.raft_log.delete_range(txn, &log_range(&from, &to)).map_err(|e| self.err(e))
    }

    pub(super) fn db(&self, table: Table) -> Database<Bytes, Bytes> {
        match table {
            Table::RaftLog => self.dbs.raft_log,
            Table::RaftState => self.dbs.raft_state,
            Table::ApplyState => self.dbs.apply_state,
            Table::Region => self.dbs.region,
            Table::Data => self.dbs.data,
            Table::Meta => self.dbs.meta,
        }
    }
}

/// Checks and decodes a stored `region` record.
pub(super) fn decode_region_state(engine: &Engine, key: &[u8], stored: &[u8]) -> Result<RegionLocalState> {
    let what = || match keys::decode_region_key(key) {
        Some(region_id) => format!("region state of region {region_id}"),
        None => format!("region state under the malformed key {}", keys::display(key)),
    };
    let payload = engine.checked(codec::unframe(Table::Region, key, stored, what))?;
    RegionLocalState::decode(payload).map_err(|e| StorageError::Decode { what: what(), detail: e.to_string() })
}

/// Checks and decodes a stored `raft_log` record; its index must be the one its key names.
pub(super) fn decode_entry(engine: &Engine, key: &[u8], stored: &[u8]) -> Result<Entry> {
    let what = || match keys::decode_raft_log_key(key) {
        Some((region_id, index)) => format!("raft log entry {index} of region {region_id}"),
        None => format!("raft log entry under the malformed key {}", keys::display(key)),
    };
    let payload = engine.checked(codec::unframe(Table::RaftLog, key, stored, what))?;
    let entry =
        Entry::parse_from_bytes(payload).map_err(|e| StorageError::Decode { what: what(), detail: e.to_string() })?;
    match keys::decode_raft_log_key(key) {
        Some((_, index)) if index == entry.index => Ok(entry),
        _ => Err(StorageError::Decode { what: what(), detail: format!("the entry says it is index {}", entry.index) }),
    }
}
