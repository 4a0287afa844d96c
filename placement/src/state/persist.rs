//! Placement's state in its LMDB environment: one record, checksummed, rewritten on every change
//! that matters.

use super::*;

pub(super) const STATE_KEY: &[u8] = b"state";

impl Placement {
    /// Rewrites the whole state. Called with the lock held, so writes reach the disk in the order
    /// their changes were made.
    pub(super) fn persist(&self, inner: &Inner) -> Result<(), PlacementError> {
        let payload = inner.to_state().encode_to_vec();
        let mut framed = crc32c::crc32c(&payload).to_le_bytes().to_vec();
        framed.extend_from_slice(&payload);
        let mut txn = self.env.write_txn()?;
        self.db.put(&mut txn, STATE_KEY, &framed)?;
        txn.commit()?;
        Ok(())
    }
}

pub(super) fn decode_state(stored: &[u8]) -> Result<PlacementState, PlacementError> {
    let Some((crc, payload)) = stored.split_first_chunk::<4>() else {
        return Err(PlacementError::Corrupt("state shorter than its checksum".into()));
    };
    if u32::from_le_bytes(*crc) != crc32c::crc32c(payload) {
        return Err(PlacementError::Corrupt("state checksum mismatch".into()));
    }
    PlacementState::decode(payload).map_err(|e| PlacementError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    #[test]
    fn state_survives_a_restart_and_ids_keep_growing() {
        let dir = tempfile::tempdir().unwrap();
        let (cluster_id, last_id) = {
            let p = Placement::open(dir.path(), PlacementOptions { replicas: 1, ..Default::default() }).unwrap();
            register(&p, 0, 20160);
            (p.cluster_id(), p.alloc_id().unwrap())
        };
        let p = Placement::open(dir.path(), PlacementOptions { replicas: 1, ..Default::default() }).unwrap();
        assert_eq!(p.cluster_id(), cluster_id);
        assert_eq!(p.stores().len(), 1);
        assert_eq!(p.regions().len(), 1);
        assert!(p.alloc_id().unwrap() > last_id);
    }
}
