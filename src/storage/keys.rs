//! Every key fekv writes to LMDB is built here, so the on-disk layout can be read in one place.
//!
//! Integers are big-endian so LMDB's byte order is their numeric order: the raft log of one region
//! is one contiguous, index-ordered run of `raft_log`, and deleting a prefix of it is one range delete.
//! User keys are stored as they are in `data`: regions are ranges of that one keyspace. (Multi-version
//! records will append a version to the user key; what reads a `data` key back as a user key goes
//! through [`user_key_of`], and every checksum covers the whole LMDB key, so that stays one change.)

/// `raft_log`: region_id ‖ index.
pub fn raft_log_key(region_id: u64, index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&region_id.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// Decodes a `raft_log` key back to (region_id, index).
pub fn decode_raft_log_key(key: &[u8]) -> Option<(u64, u64)> {
    let (region_id, index) = key.split_first_chunk::<8>()?;
    Some((u64::from_be_bytes(*region_id), u64::from_be_bytes(index.try_into().ok()?)))
}

/// `raft_state`, `apply_state` and `region`: region_id.
pub fn region_key(region_id: u64) -> [u8; 8] {
    region_id.to_be_bytes()
}

/// Decodes a `region_key` back to its region id (used when loading every region at start-up).
pub fn decode_region_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// The user key a `data` key holds (today the key itself).
pub fn user_key_of(data_key: &[u8]) -> &[u8] {
    data_key
}

/// `meta`: the store's identity.
pub const STORE_IDENT_KEY: &[u8] = b"store_ident";
/// `meta`: the on-disk format version, a u32 (big-endian). Absent in format 1, which kept it only
/// inside the store identity.
pub const FORMAT_VERSION_KEY: &[u8] = b"format_version";
/// In `meta`: the last auth state placement sent (users, roles, the token key), so a node restarted
/// while placement is down still checks requests.
pub const AUTH_STATE_KEY: &[u8] = b"auth_state";

/// A key as text for messages and JSON: printable ASCII as it is, anything else percent-encoded
/// (the form the key takes in a URL).
pub fn display(key: &[u8]) -> String {
    const ESCAPE: &percent_encoding::AsciiSet = &percent_encoding::CONTROLS.add(b'%').add(b' ').add(b'"');
    percent_encoding::percent_encode(key, ESCAPE).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn raft_log_keys_sort_by_region_then_index() {
        let mut keys = vec![raft_log_key(2, 1), raft_log_key(1, 256), raft_log_key(1, 2), raft_log_key(1, 1)];
        keys.sort();
        assert_eq!(keys, vec![raft_log_key(1, 1), raft_log_key(1, 2), raft_log_key(1, 256), raft_log_key(2, 1)]);
    }

    #[test]
    fn raft_log_key_round_trips() {
        assert_eq!(decode_raft_log_key(&raft_log_key(3, 1 << 40)), Some((3, 1 << 40)));
        assert_eq!(decode_raft_log_key(&[0; 15]), None);
    }

    #[test]
    fn region_key_round_trips() {
        assert_eq!(decode_region_key(&region_key(42)), Some(42));
        assert_eq!(decode_region_key(b"short"), None);
    }
}
