//! Storage: one LMDB environment per node (heed), holding every region's raft log, raft and apply
//! state, region metadata and the user data, each in its own named database.
//!
//! This module owns the on-disk format (keys in [`keys`], checksummed framing in [`codec`]; user data
//! in `data`, framed state and the raft log in `state`) and the check of a whole store against it
//! ([`scrub`]), and nothing else: it does not know about raft's rules or about HTTP. Only the raftstore thread opens
//! write transactions; readers use their own short read transactions from any thread (the env is
//! opened without thread-local reader slots, so a read transaction may move between tokio workers).

pub mod codec;
mod data;
pub mod keys;
pub mod scrub;
mod state;

use std::path::{Path, PathBuf};

use heed::types::Bytes;
use heed::{Database, Env, EnvOpenOptions, RoTxn, RwTxn, WithoutTls};

pub use codec::Record;

/// A read transaction that may be used from any thread.
pub type ReadTxn<'e> = RoTxn<'e, WithoutTls>;

/// Errors of the storage layer. Each says what was being read or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage is full: the LMDB map size of {map_size} bytes is used up (raise map_size)")]
    Full { map_size: u64 },
    #[error("checksum mismatch in {what}: {detail}")]
    Corruption { what: String, detail: String },
    #[error("cannot decode {what}: {detail}")]
    Decode { what: String, detail: String },
    #[error("LMDB error: {0}")]
    Lmdb(heed::Error),
}

impl StorageError {
    fn lmdb(err: heed::Error, map_size: u64) -> Self {
        match err {
            heed::Error::Mdb(heed::MdbError::MapFull) => StorageError::Full { map_size },
            other => StorageError::Lmdb(other),
        }
    }
}

pub type Result<T, E = StorageError> = std::result::Result<T, E>;

/// How to open the environment.
#[derive(Debug, Clone)]
pub struct EngineOptions {
    /// Counted whenever a checksum does not match (the node's `fekv_storage_checksum_failures_total`).
    pub checksum_failures: prometheus::IntCounter,
    /// Upper bound of the memory map, i.e. of the database file. Only address space until used.
    pub map_size: u64,
    /// Concurrent read transactions allowed (one per in-flight GET, plus the raftstore's).
    pub max_readers: u32,
}

/// The named databases. See DESIGN.md §4.
#[derive(Clone, Copy)]
struct Databases {
    /// region_id ‖ index → framed eraftpb::Entry
    raft_log: Database<Bytes, Bytes>,
    /// region_id → framed RaftLocalState
    raft_state: Database<Bytes, Bytes>,
    /// region_id → framed RaftApplyState
    apply_state: Database<Bytes, Bytes>,
    /// region_id → framed RegionLocalState
    region: Database<Bytes, Bytes>,
    /// user key → record (crc32c ‖ revision ‖ value)
    data: Database<Bytes, Bytes>,
    /// store identity and format version
    meta: Database<Bytes, Bytes>,
}

/// `[from, to)` in the form heed's range calls take for unsized keys.
fn log_range<'k>(from: &'k [u8], to: &'k [u8]) -> (std::ops::Bound<&'k [u8]>, std::ops::Bound<&'k [u8]>) {
    (std::ops::Bound::Included(from), std::ops::Bound::Excluded(to))
}

/// The user-key range `[start, end)`. LMDB refuses zero-length keys, even as range bounds, so an
/// empty start or end means unbounded (which is also what it means for a region).
fn key_range<'k>(start: &'k [u8], end: &'k [u8]) -> (std::ops::Bound<&'k [u8]>, std::ops::Bound<&'k [u8]>) {
    use std::ops::Bound;
    let lower = if start.is_empty() { Bound::Unbounded } else { Bound::Included(start) };
    let upper = if end.is_empty() { Bound::Unbounded } else { Bound::Excluded(end) };
    (lower, upper)
}

/// A handle on the node's LMDB environment. Cheap to clone; every clone shares the one environment.
#[derive(Clone)]
pub struct Engine {
    env: Env<WithoutTls>,
    dbs: Databases,
    map_size: u64,
    path: PathBuf,
    checksum_failures: prometheus::IntCounter,
}

/// A user record copied out of LMDB: (key, revision, value).
pub type OwnedRecord = (Vec<u8>, u64, Vec<u8>);

/// Space and reader figures for `/status` and the metrics.
#[derive(Debug, Clone, serde::Serialize)]
pub struct EngineStats {
    pub map_size: u64,
    pub page_size: u32,
    /// Pages up to the highest one ever used (the file's high-water mark).
    pub last_page_number: u64,
    /// Bytes in pages that hold data now (excluding LMDB's free list).
    pub used_bytes: u64,
    pub readers_used: u32,
    pub readers_max: u32,
    pub last_txn_id: u64,
    pub data_keys: u64,
    pub raft_log_entries: u64,
}

impl Engine {
    /// Opens (creating if needed) the environment in `dir`.
    pub fn open(dir: &Path, options: &EngineOptions) -> Result<Engine> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::Lmdb(heed::Error::Io(e)))?;
        let map_size = options.map_size;
        let lmdb = |e| StorageError::lmdb(e, map_size);
        let mut open = EnvOpenOptions::new().read_txn_without_tls();
        open.map_size(map_size as usize).max_dbs(8).max_readers(options.max_readers);
        // SAFETY: heed requires that the same file is not opened twice in one process with different
        // options and that it is not modified by other programs while open; a node opens its data dir
        // once and tests close an env before reopening it.
        let env = unsafe { open.open(dir) }.map_err(lmdb)?;
        let mut txn = env.write_txn().map_err(lmdb)?;
        let mut create = |name| env.create_database::<Bytes, Bytes>(&mut txn, Some(name)).map_err(lmdb);
        let dbs = Databases {
            raft_log: create("raft_log")?,
            raft_state: create("raft_state")?,
            apply_state: create("apply_state")?,
            region: create("region")?,
            data: create("data")?,
            meta: create("meta")?,
        };
        txn.commit().map_err(lmdb)?;
        Ok(Engine { env, dbs, map_size, path: dir.to_path_buf(), checksum_failures: options.checksum_failures.clone() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Closes the environment and waits until it is really closed, so the same directory can be
    /// opened again in this process (in-process restarts). Every other clone must be dropped first.
    pub fn close(self) {
        let closing = self.env.prepare_for_closing();
        closing.wait();
    }

    pub fn write_txn(&self) -> Result<RwTxn<'_>> {
        self.env.write_txn().map_err(|e| self.err(e))
    }

    pub fn read_txn(&self) -> Result<ReadTxn<'_>> {
        self.env.read_txn().map_err(|e| self.err(e))
    }

    /// Commits `txn`: one fsync. `MDB_MAP_FULL` becomes [`StorageError::Full`].
    pub fn commit(&self, txn: RwTxn<'_>) -> Result<()> {
        txn.commit().map_err(|e| self.err(e))
    }

    fn err(&self, e: heed::Error) -> StorageError {
        StorageError::lmdb(e, self.map_size)
    }

    /// Counts a checksum failure on its way out.
    fn checked<T>(&self, result: Result<T>) -> Result<T> {
        if let Err(StorageError::Corruption { .. }) = &result {
            self.checksum_failures.inc();
        }
        result
    }

    // ---- statistics ----

    pub fn stats(&self) -> Result<EngineStats> {
        let info = self.env.info();
        let stat = self.env.stat();
        let txn = self.read_txn()?;
        let used_bytes = self.env.non_free_pages_size().map_err(|e| self.err(e))?;
        Ok(EngineStats {
            map_size: info.map_size as u64,
            page_size: stat.page_size,
            last_page_number: info.last_page_number as u64,
            used_bytes,
            readers_used: info.number_of_readers,
            readers_max: info.maximum_number_of_readers,
            last_txn_id: info.last_txn_id as u64,
            data_keys: self.dbs.data.len(&txn).map_err(|e| self.err(e))?,
            raft_log_entries: self.dbs.raft_log.len(&txn).map_err(|e| self.err(e))?,
        })
    }

    pub fn map_size(&self) -> u64 {
        self.map_size
    }
}
