//! The data directory's on-disk format: which versions this fekv reads, and the one upgrade it makes
//! in place.

use crate::storage::{Engine, StorageError};

/// Bumped when the on-disk layout or what a record promises changes incompatibly.
/// - 2: every checksum covers its record's table and key too (1 covered the value only).
/// - 3: a region's raft state record is written only when its term or vote changes; the log's end
///   is read from the log, and the applied index counts as committed (`PeerStorage::load`). A
///   fekv of format 2 would trust the record's stale log end, so it must refuse such a directory.
pub const FORMAT_VERSION: u32 = 3;

/// The format that [`upgrade`] turns into [`FORMAT_VERSION`]. Its records are all valid in format 3
/// (3 only promises less), so the upgrade rewrites nothing but the version.
const UPGRADES_FROM: u32 = 2;

/// What the directory holds, as far as the format goes.
pub enum Found {
    /// A new directory (no identity yet), or one of this format.
    Current,
    /// Another format, which this fekv does not read.
    Other(u32),
}

/// Marks a format-2 directory as format 3, in one transaction (the version record and the store
/// identity, which also carries it), before anything else reads it; returns what was found then.
pub fn upgrade(engine: &Engine) -> Result<Found, StorageError> {
    let txn = engine.read_txn()?;
    let found = engine.format_version(&txn)?;
    let ident = engine.store_ident(&txn)?;
    drop(txn);
    match found {
        None => Ok(Found::Current),
        Some(FORMAT_VERSION) => Ok(Found::Current),
        Some(UPGRADES_FROM) => {
            let mut txn = engine.write_txn()?;
            engine.put_format_version(&mut txn, FORMAT_VERSION)?;
            if let Some(ident) = ident {
                let ident = crate::proto::StoreIdent { format_version: FORMAT_VERSION, ..ident };
                engine.put_store_ident(&mut txn, &ident)?;
            }
            engine.commit(txn)?;
            tracing::info!(from = UPGRADES_FROM, to = FORMAT_VERSION, "upgraded the data directory's format");
            Ok(Found::Current)
        }
        Some(other) => Ok(Found::Other(other)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::StoreIdent;
    use crate::storage::EngineOptions;

    fn engine_of_format(dir: &std::path::Path, version: u32) -> Engine {
        let engine = Engine::open(dir, &EngineOptions::for_tests()).expect("an engine");
        let mut txn = engine.write_txn().expect("a transaction");
        let ident = StoreIdent { cluster_id: 1, store_id: 4, format_version: version, ..Default::default() };
        engine.put_store_ident(&mut txn, &ident).expect("the identity");
        engine.put_format_version(&mut txn, version).expect("the version");
        engine.commit(txn).expect("a commit");
        engine
    }

    #[test]
    fn a_format_2_directory_is_marked_3_and_others_are_left_alone() {
        let dir = tempfile::tempdir().expect("a dir");
        let engine = engine_of_format(dir.path(), 2);
        assert!(matches!(upgrade(&engine), Ok(Found::Current)));
        let txn = engine.read_txn().expect("a read");
        assert_eq!(engine.format_version(&txn).expect("the version"), Some(FORMAT_VERSION));
        let ident = engine.store_ident(&txn).expect("the identity").expect("kept");
        assert_eq!((ident.store_id, ident.format_version), (4, FORMAT_VERSION));
        drop(txn);

        let dir = tempfile::tempdir().expect("a dir");
        let engine = engine_of_format(dir.path(), 9);
        assert!(matches!(upgrade(&engine), Ok(Found::Other(9))));
        let txn = engine.read_txn().expect("a read");
        assert_eq!(engine.format_version(&txn).expect("the version"), Some(9));
    }
}
