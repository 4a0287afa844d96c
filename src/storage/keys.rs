//! Every key fekv writes to LMDB is built here, so the on-disk layout can be read in one place.
//!
//! Integers are big-endian so LMDB's byte order is their numeric order: the raft log of one region
//! is one contiguous, index-ordered run of `raft_log`, and deleting a prefix of it is one range delete.
//! User keys are stored as they are in `data`: regions are ranges of that one keyspace.

/// `raft_log`: region_id ‖ index.
pub fn raft_log_key(region_id: u64, index: u64) -> [u8; 16] {
    let mut key = [0u8; 16];
    key[..8].copy_from_slice(&region_id.to_be_bytes());
    key[8..].copy_from_slice(&index.to_be_bytes());
    key
}

/// `raft_state`, `apply_state` and `region`: region_id.
pub fn region_key(region_id: u64) -> [u8; 8] {
    region_id.to_be_bytes()
}

/// Decodes a `region_key` back to its region id (used when loading every region at start-up).
pub fn decode_region_key(key: &[u8]) -> Option<u64> {
    Some(u64::from_be_bytes(key.try_into().ok()?))
}

/// `meta`: the store's identity.
pub const STORE_IDENT_KEY: &[u8] = b"store_ident";

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
    fn region_key_round_trips() {
        assert_eq!(decode_region_key(&region_key(42)), Some(42));
        assert_eq!(decode_region_key(b"short"), None);
    }
}
