//! The user data (`data`): reads that check every record they meet, writes, range deletes.
//!
//! A checksum only speaks for a record that is read, and a record whose *key* is damaged is not found
//! by its key any more: LMDB's search for `key162` passes the record now stored as `oey162`. Both
//! kinds of read therefore also check the records next to where they looked:
//! - a point read that finds nothing checks the records just before and after the key (where a
//!   binary search over a page leaves a record whose key was damaged), and recognises the missing
//!   key's own record there by its checksum;
//! - a scan checks the record before its start and the first one past its end (which decides where
//!   it stops), and checks that keys come in order.

use std::ops::Bound;

use heed::{RoTxn, RwTxn};

use super::codec::{self, Record};
use super::keys::display;
use super::{key_range, Engine, OwnedRecord, Result};

impl Engine {
    /// Reads and checks the record of a user key, and only it (for apply, where every replica must
    /// decide alike: a neighbour's damage is no answer about this key).
    pub fn get_data<'t>(&self, txn: &'t RoTxn<'_>, key: &[u8]) -> Result<Option<Record<'t>>> {
        match self.dbs.data.get(txn, key).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(stored) => self.checked(codec::decode_record(key, stored)).map(Some),
        }
    }

    /// Reads a user key for a client: like [`Engine::get_data`], but an absent key is only reported
    /// absent once the records on either side of where it would be check out. A neighbour that
    /// fails its checksum is reported instead: it may be this key's record with more than its key
    /// damaged, and a damaged key out of order in its page also hides the intact keys after it from
    /// LMDB's search. A neighbour that is this key's own record under a damaged key is reported as
    /// this key's damage.
    pub fn read_data<'t>(&self, txn: &'t RoTxn<'_>, key: &[u8]) -> Result<Option<Record<'t>>> {
        if let Some(record) = self.get_data(txn, key)? {
            return Ok(Some(record));
        }
        let after = self.dbs.data.get_greater_than(txn, key).map_err(|e| self.err(e))?;
        let before = self.dbs.data.get_lower_than(txn, key).map_err(|e| self.err(e))?;
        for (stored_key, stored) in after.into_iter().chain(before) {
            if codec::is_record_of(stored_key, stored) {
                continue;
            }
            self.checksum_failures.inc();
            return Err(if codec::is_record_of(key, stored) {
                codec::corruption(
                    format!("key {}", display(key)),
                    format!("its record is stored under the damaged key {}", display(stored_key)),
                )
            } else {
                codec::corruption(
                    format!("value of key {}", display(stored_key)),
                    format!(
                        "stored where key {} would be; whether that key exists cannot be told until this is repaired",
                        display(key)
                    ),
                )
            });
        }
        Ok(None)
    }

    pub fn put_data(&self, txn: &mut RwTxn<'_>, key: &[u8], revision: u64, value: &[u8]) -> Result<()> {
        let record = codec::encode_record(key, revision, value);
        self.dbs.data.put(txn, key, &record).map_err(|e| self.err(e))
    }

    pub fn delete_data(&self, txn: &mut RwTxn<'_>, key: &[u8]) -> Result<()> {
        self.dbs.data.delete(txn, key).map(drop).map_err(|e| self.err(e))
    }

    /// The first `limit` checked records in `[start, end)` (empty `end` = unbounded), in key order.
    /// The record before `start` and the first one at or past `end` are checked too (see the module
    /// doc), and so is the order of the keys met.
    pub fn scan_data(&self, txn: &RoTxn<'_>, start: &[u8], end: &[u8], limit: usize) -> Result<Vec<OwnedRecord>> {
        if !start.is_empty() {
            if let Some((key, stored)) = self.dbs.data.get_lower_than(txn, start).map_err(|e| self.err(e))? {
                self.checked(codec::decode_record(key, stored))?;
            }
        }
        let lower = if start.is_empty() { Bound::Unbounded } else { Bound::Included(start) };
        let mut out: Vec<OwnedRecord> = Vec::new();
        for item in self.dbs.data.range(txn, &(lower, Bound::Unbounded)).map_err(|e| self.err(e))? {
            let (key, stored) = item.map_err(|e| self.err(e))?;
            let record = self.checked(codec::decode_record(key, stored))?;
            if let Some((previous, _, _)) = out.last() {
                if key <= previous.as_slice() {
                    self.checksum_failures.inc();
                    return Err(codec::corruption(
                        format!("key {}", display(key)),
                        format!("stored after key {}: the keys are out of order", display(previous)),
                    ));
                }
            }
            if out.len() == limit || (!end.is_empty() && key >= end) {
                break;
            }
            out.push((key.to_vec(), record.revision, record.value.to_vec()));
        }
        Ok(out)
    }

    /// Deletes every record in `[start, end)` (empty `end` = unbounded).
    pub fn delete_data_range(&self, txn: &mut RwTxn<'_>, start: &[u8], end: &[u8]) -> Result<usize> {
        self.dbs.data.delete_range(txn, &key_range(start, end)).map_err(|e| self.err(e))
    }

    /// Counts keys and value bytes in `[start, end)` (empty `end` = unbounded), for `/status`.
    pub fn range_stats(&self, txn: &RoTxn<'_>, start: &[u8], end: &[u8]) -> Result<(u64, u64)> {
        let (mut keys, mut bytes) = (0u64, 0u64);
        for item in self.dbs.data.range(txn, &key_range(start, end)).map_err(|e| self.err(e))? {
            let (key, stored) = item.map_err(|e| self.err(e))?;
            keys += 1;
            bytes += (key.len() + stored.len()) as u64;
        }
        Ok((keys, bytes))
    }
}
