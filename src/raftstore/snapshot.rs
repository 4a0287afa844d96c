//! A region's snapshot data: how a leader encodes it ([`encode`]) and how a receiving store checks it,
//! once ([`VerifiedSnapshot::verify`]).
//!
//! An incoming snapshot is decoded and checksummed where a transport delivers it into the store's
//! [`super::inbox::RaftInbox`], on the transport's thread, not the raftstore's: a damaged one is
//! refused there (its sender hears that it failed), and an intact one reaches the store with its
//! decoded records beside the raft message, whose copy of the bytes is dropped. The store, the peer
//! and the peer storage then take the [`VerifiedSnapshot`] and never decode it again.

use prost::Message as _;
use raft::eraftpb;

use crate::proto::{Region, SnapshotData, SnapshotKv};
use crate::storage::StorageError;

/// A snapshot whose data decoded and matched its checksum: what the store may apply.
#[derive(Debug, Clone)]
pub struct VerifiedSnapshot {
    /// The region as of the snapshot (range, epoch, members).
    pub region: Region,
    /// The region's records, in key order.
    pub kvs: Vec<SnapshotKv>,
    /// The raft index and term the snapshot was taken at (from its metadata).
    pub index: u64,
    pub term: u64,
}

impl VerifiedSnapshot {
    /// Decodes and checks `snapshot`'s data: a damaged or truncated snapshot is an error.
    pub fn verify(snapshot: &eraftpb::Snapshot) -> Result<VerifiedSnapshot, StorageError> {
        let data = SnapshotData::decode(snapshot.get_data())
            .map_err(|e| StorageError::Decode { what: "snapshot".into(), detail: e.to_string() })?;
        let computed = checksum(&data.kvs);
        let Some(region) = data.region.filter(|_| computed == data.checksum) else {
            return Err(StorageError::Corruption {
                what: "snapshot".into(),
                detail: format!("stored crc32c {:#010x}, computed {computed:#010x}", data.checksum),
            });
        };
        let metadata = snapshot.get_metadata();
        Ok(VerifiedSnapshot { region, kvs: data.kvs, index: metadata.index, term: metadata.term })
    }

    /// Whether this is the snapshot raft's `snapshot` stands for (same index and term).
    pub fn is_of(&self, snapshot: &eraftpb::Snapshot) -> bool {
        (self.index, self.term) == (snapshot.get_metadata().index, snapshot.get_metadata().term)
    }
}

/// The data of a snapshot of `region` holding `kvs`, with their checksum.
pub fn encode(region: Region, kvs: Vec<SnapshotKv>) -> Vec<u8> {
    let checksum = checksum(&kvs);
    SnapshotData { region: Some(region), kvs, checksum }.encode_to_vec()
}

/// crc32c over the snapshot's records, in order.
pub fn checksum(kvs: &[SnapshotKv]) -> u32 {
    kvs.iter().fold(0, |crc, kv| crc32c::crc32c_append(crc, &kv.encode_to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kvs() -> Vec<SnapshotKv> {
        vec![
            SnapshotKv { key: b"a".to_vec(), value: b"1".to_vec(), revision: 7 },
            SnapshotKv { key: b"b".to_vec(), value: b"2".to_vec(), revision: 9 },
        ]
    }

    fn region() -> Region {
        Region { region_id: 1, ..Default::default() }
    }

    fn snapshot_of(data: Vec<u8>) -> eraftpb::Snapshot {
        let mut snapshot = eraftpb::Snapshot { data: data.into(), ..Default::default() };
        (snapshot.mut_metadata().index, snapshot.mut_metadata().term) = (12, 3);
        snapshot
    }

    #[test]
    fn intact_snapshot_data_verifies() {
        let snapshot = snapshot_of(encode(region(), kvs()));
        let verified = VerifiedSnapshot::verify(&snapshot).unwrap();
        assert_eq!((verified.region, verified.kvs.len(), verified.index, verified.term), (region(), 2, 12, 3));
    }

    #[test]
    fn damaged_or_truncated_snapshot_data_is_refused() {
        let mut tampered = SnapshotData::decode(encode(region(), kvs()).as_slice()).unwrap();
        tampered.kvs[1].value = b"3".to_vec();
        let refused = VerifiedSnapshot::verify(&snapshot_of(tampered.encode_to_vec()));
        assert!(matches!(refused, Err(StorageError::Corruption { .. })), "{refused:?}");
        let mut dropped = SnapshotData::decode(encode(region(), kvs()).as_slice()).unwrap();
        dropped.kvs.pop();
        assert!(VerifiedSnapshot::verify(&snapshot_of(dropped.encode_to_vec())).is_err());
        let bytes = encode(region(), kvs());
        assert!(VerifiedSnapshot::verify(&snapshot_of(bytes[..bytes.len() - 3].to_vec())).is_err());
        let without_region = SnapshotData { region: None, kvs: kvs(), checksum: checksum(&kvs()) };
        assert!(VerifiedSnapshot::verify(&snapshot_of(without_region.encode_to_vec())).is_err());
    }
}
