//! Checksummed framing of everything stored: a crc32c in front of every value, checked on every read.
//!
//! A framed value is `crc32c (4 bytes, LE) ‖ payload`. A user record in `data` is framed the same way
//! with payload `revision (8 bytes, BE) ‖ value`, and its checksum also covers the key, so a record
//! that ends up under another key is caught too. Damage is reported as [`StorageError::Corruption`]
//! with an `error` log line; the damaged bytes are never handed out.

use super::StorageError;

const CRC_LEN: usize = 4;
const REVISION_LEN: usize = 8;

/// Frames `payload` as `crc32c(payload) ‖ payload`.
pub fn frame(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CRC_LEN + payload.len());
    out.extend_from_slice(&crc32c::crc32c(payload).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// Checks a framed value and returns its payload. `what` names the value in the error.
pub fn unframe(what: impl FnOnce() -> String, stored: &[u8]) -> Result<&[u8], StorageError> {
    let Some((crc, payload)) = stored.split_first_chunk::<CRC_LEN>() else {
        return Err(corruption(what(), "shorter than its checksum".into()));
    };
    let (stored_crc, computed) = (u32::from_le_bytes(*crc), crc32c::crc32c(payload));
    if stored_crc != computed {
        return Err(corruption(what(), format!("stored crc32c {stored_crc:#010x}, computed {computed:#010x}")));
    }
    Ok(payload)
}

/// Encodes a user record: `crc32c(key ‖ revision ‖ value) ‖ revision ‖ value`.
pub fn encode_record(key: &[u8], revision: u64, value: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(CRC_LEN + REVISION_LEN + value.len());
    out.extend_from_slice(&[0; CRC_LEN]);
    out.extend_from_slice(&revision.to_be_bytes());
    out.extend_from_slice(value);
    let crc = crc32c::crc32c_append(crc32c::crc32c(key), &out[CRC_LEN..]);
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

/// Checks and decodes a user record stored under `key`.
pub fn decode_record<'a>(key: &[u8], stored: &'a [u8]) -> Result<Record<'a>, StorageError> {
    let describe = || format!("value of key {}", String::from_utf8_lossy(key));
    if stored.len() < CRC_LEN + REVISION_LEN {
        return Err(corruption(describe(), "shorter than its header".into()));
    }
    let (crc, body) = stored.split_at(CRC_LEN);
    let stored_crc = u32::from_le_bytes(crc.try_into().expect("split at CRC_LEN"));
    let computed = crc32c::crc32c_append(crc32c::crc32c(key), body);
    if stored_crc != computed {
        return Err(corruption(describe(), format!("stored crc32c {stored_crc:#010x}, computed {computed:#010x}")));
    }
    let (revision, value) = body.split_at(REVISION_LEN);
    let revision = u64::from_be_bytes(revision.try_into().expect("split at REVISION_LEN"));
    Ok(Record { revision, value })
}

fn corruption(what: String, detail: String) -> StorageError {
    tracing::error!(what = %what, detail = %detail, "checksum mismatch: stored data is damaged");
    StorageError::Corruption { what, detail }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn framed_values_round_trip() {
        let framed = frame(b"hello");
        assert_eq!(unframe(|| "x".into(), &framed).unwrap(), b"hello");
    }

    #[test]
    fn any_flipped_bit_in_a_frame_is_detected() {
        let framed = frame(b"hello world");
        for byte in 0..framed.len() {
            for bit in 0..8 {
                let mut damaged = framed.clone();
                damaged[byte] ^= 1 << bit;
                assert!(unframe(|| "x".into(), &damaged).is_err(), "flip of byte {byte} bit {bit} went unnoticed");
            }
        }
        assert!(unframe(|| "x".into(), &framed[..3]).is_err());
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
}
