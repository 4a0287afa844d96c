//! Checksummed framing of everything stored: a crc32c in front of every value, checked on every read.
//!
//! Every checksum covers the database's name, the LMDB key and the value, so damage to any of them
//! is caught, not only damage to the value: a flipped bit in a stored key (`key162` → `oey162`), in a
//! region id or in a log index can never make a value pass as another key's, another region's or
//! another index's, and a value of `raft_state` can never pass as one of `apply_state` (they share
//! their keys). The key is the whole LMDB key, as stored: a key that later carries more (an MVCC
//! version suffix) is covered without a change here.
//!
//! - A framed value (raft log entries, states, region metadata, meta) is `crc32c ‖ payload`.
//! - A user record in `data` is `crc32c ‖ revision (8 bytes, BE) ‖ value`.
//!
//! with `crc32c` = crc32c(table name ‖ key ‖ what follows the crc), little-endian. Damage is reported
//! as [`StorageError::Corruption`] with an `error` log line; the damaged bytes are never handed out.

use super::keys::display;
use super::StorageError;

const CRC_LEN: usize = 4;
const REVISION_LEN: usize = 8;

/// The named databases of the environment. A table's name is part of each of its checksums.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Table {
    RaftLog,
    RaftState,
    ApplyState,
    Region,
    Data,
    Meta,
}

impl Table {
    pub const ALL: [Table; 6] =
        [Table::Meta, Table::Region, Table::RaftState, Table::ApplyState, Table::RaftLog, Table::Data];

    /// The LMDB database name.
    pub fn name(self) -> &'static str {
        match self {
            Table::RaftLog => "raft_log",
            Table::RaftState => "raft_state",
            Table::ApplyState => "apply_state",
            Table::Region => "region",
            Table::Data => "data",
            Table::Meta => "meta",
        }
    }
}

fn checksum(table: Table, key: &[u8], body: &[u8]) -> u32 {
    let seeded = crc32c::crc32c_append(crc32c::crc32c(table.name().as_bytes()), key);
    crc32c::crc32c_append(seeded, body)
}

/// Frames the `payload` stored under `key` in `table` as `crc32c ‖ payload`.
pub fn frame(table: Table, key: &[u8], payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CRC_LEN + payload.len());
    out.extend_from_slice(&checksum(table, key, payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks a framed value stored under `key` in `table` and returns its payload. `what` names the
/// value in the error.
pub fn unframe<'a>(
    table: Table,
    key: &[u8],
    stored: &'a [u8],
    what: impl FnOnce() -> String,
) -> Result<&'a [u8], StorageError> {
    verify_frame(table, key, stored).map_err(|detail| corruption(what(), detail))
}

/// [`unframe`] without the error log: what is wrong, if anything (for the scrub, which reports
/// its findings itself).
pub fn verify_frame<'a>(table: Table, key: &[u8], stored: &'a [u8]) -> Result<&'a [u8], String> {
    let Some((crc, payload)) = stored.split_first_chunk::<CRC_LEN>() else {
        return Err("shorter than its checksum".into());
    };
    let (stored_crc, computed) = (u32::from_le_bytes(*crc), checksum(table, key, payload));
    if stored_crc != computed {
        return Err(mismatch(stored_crc, computed));
    }
    Ok(payload)
}

/// Encodes a user record: `crc32c ‖ revision ‖ value`.
pub fn encode_record(key: &[u8], revision: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CRC_LEN + REVISION_LEN + value.len());
    out.extend_from_slice(&[0; CRC_LEN]);
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(value);
    let crc = checksum(Table::Data, key, &out[CRC_LEN..]);
    out[..CRC_LEN].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A checked user record, borrowing the read transaction's memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Record<'a> {
    /// The raft index of the entry that wrote this value (the HTTP ETag).
    pub revision: u64,
    pub value: &'a [u8],
}

/// Whether `stored` is an intact record of `key`, without logging anything: used to tell which key
/// a damaged record really belongs to.
pub fn is_record_of(key: &[u8], stored: &[u8]) -> bool {
    verify_record(key, stored).is_ok()
}

/// Checks and decodes a user record stored under `key`.
pub fn decode_record<'a>(key: &[u8], stored: &'a [u8]) -> Result<Record<'a>, StorageError> {
    verify_record(key, stored).map_err(|detail| corruption(format!("value of key {}", display(key)), detail))
}

/// [`decode_record`] without the error log: what is wrong, if anything.
pub fn verify_record<'a>(key: &[u8], stored: &'a [u8]) -> Result<Record<'a>, String> {
    let Some((crc, body)) = stored.split_first_chunk::<CRC_LEN>() else {
        return Err("shorter than its header".into());
    };
    let Some((revision, value)) = body.split_first_chunk::<REVISION_LEN>() else {
        return Err("shorter than its header".into());
    };
    let (stored_crc, computed) = (u32::from_le_bytes(*crc), checksum(Table::Data, key, body));
    if stored_crc != computed {
        return Err(mismatch(stored_crc, computed));
    }
    Ok(Record { revision: u64::from_be_bytes(*revision), value })
}

fn mismatch(stored_crc: u32, computed: u32) -> String {
    format!("stored crc32c {stored_crc:#010x}, computed {computed:#010x}")
}

/// A [`StorageError::Corruption`], logged at `error` where it is found.
pub fn corruption(what: String, detail: String) -> StorageError {
    tracing::error!(what = %what, detail = %detail, "checksum mismatch: stored data is damaged");
    StorageError::Corruption { what, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flips(bytes: &[u8]) -> impl Iterator<Item = Vec<u8>> + '_ {
        (0..bytes.len() * 8).map(move |bit| {
            let mut damaged = bytes.to_vec();
            damaged[bit / 8] ^= 1 << (bit % 8);
            damaged
        })
    }

    #[test]
    fn framed_values_round_trip() {
        let framed = frame(Table::Meta, b"k", b"hello");
        assert_eq!(unframe(Table::Meta, b"k", &framed, || "x".into()).unwrap(), b"hello");
    }

    #[test]
    fn any_flipped_bit_in_a_frame_is_detected() {
        let framed = frame(Table::RaftState, b"key", b"hello world");
        for damaged in flips(&framed) {
            assert!(unframe(Table::RaftState, b"key", &damaged, || "x".into()).is_err(), "{damaged:?} went unnoticed");
        }
        assert!(unframe(Table::RaftState, b"key", &framed[..3], || "x".into()).is_err());
    }

    #[test]
    fn any_flipped_bit_in_a_frames_key_is_detected() {
        // A log entry's key is region_id ‖ index: damage there must not pass as another region's or
        // another index's entry.
        let key = super::super::keys::raft_log_key(7, 42);
        let framed = frame(Table::RaftLog, &key, b"entry");
        for damaged_key in flips(&key) {
            assert!(unframe(Table::RaftLog, &damaged_key, &framed, || "x".into()).is_err());
        }
    }

    #[test]
    fn a_value_never_passes_as_another_tables() {
        let key = super::super::keys::region_key(3);
        let framed = frame(Table::RaftState, &key, b"state");
        assert!(unframe(Table::ApplyState, &key, &framed, || "x".into()).is_err());
    }

    #[test]
    fn records_round_trip_and_are_bound_to_their_key() {
        let stored = encode_record(b"foo", 7, b"bar");
        assert_eq!(decode_record(b"foo", &stored).unwrap(), Record { revision: 7, value: b"bar" });
        let err = decode_record(b"fop", &stored).unwrap_err();
        assert!(err.to_string().contains("key fop"), "{err}");
        let mut damaged = stored.clone();
        *damaged.last_mut().unwrap() ^= 0x20;
        assert!(matches!(decode_record(b"foo", &damaged), Err(StorageError::Corruption { .. })));
        assert!(decode_record(b"foo", &stored[..10]).is_err());
    }

    #[test]
    fn a_record_under_a_damaged_key_is_recognised_as_its_own_keys() {
        let stored = encode_record(b"key162", 9, b"v");
        assert!(decode_record(b"oey162", &stored).is_err());
        assert!(is_record_of(b"key162", &stored));
        assert!(!is_record_of(b"oey162", &stored));
        assert!(!is_record_of(b"key162", &stored[..5]));
    }
}
