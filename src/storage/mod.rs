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

/// A read transaction that may be used from any thread.
pub type ReadTxn<'e> = RoTxn<'e, WithoutTls>;

/// Errors of the storage layer. Each says what was being read or written.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("storage is full: the LMDB map size of {map_size} bytes is used up (raise map_size)")]
    Full { map_size: u64 },
    #[error(
        "the filesystem holding {dir} refused a write ({source}): it is full, or failing; free space \
         there (deleting keys also makes room), reads still work"
    )]
    NoSpace { dir: String, source: std::io::Error },
    #[error("checksum mismatch in {what}: {detail}")]
    Corruption { what: String, detail: String },
    #[error("cannot decode {what}: {detail}")]
    Decode { what: String, detail: String },
    /// Persisted state that passed its checksums but does not hold together.
    #[error("inconsistent {what}: {detail}")]
    Inconsistent { what: String, detail: String },
    /// The OS refused something the storage layer needs (a thread, a file).
    #[error("{what}: {source}")]
    Io { what: String, source: std::io::Error },
    #[error("LMDB error: {0}")]
    Lmdb(heed::Error),
}

impl StorageError {
    /// LMDB's errors, with the two ways of running out of room told apart from the rest: the map
    /// (`MDB_MAP_FULL`), and the filesystem under it. A full filesystem fails LMDB's page writes
    /// with ENOSPC or EDQUOT, and its msync/fsync with EIO (a tmpfs or an overlay reports a full
    /// disk that way), so all three mean "no room" to a client, never an internal error.
    fn lmdb(err: heed::Error, map_size: u64, dir: &Path) -> Self {
        match err {
            heed::Error::Mdb(heed::MdbError::MapFull) => StorageError::Full { map_size },
            heed::Error::Io(source) if is_out_of_space(&source) => {
                StorageError::NoSpace { dir: dir.display().to_string(), source }
            }
            other => StorageError::Lmdb(other),
        }
    }
}

fn is_out_of_space(err: &std::io::Error) -> bool {
    matches!(err.raw_os_error(), Some(libc::ENOSPC | libc::EDQUOT | libc::EIO))
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

#[cfg(test)]
impl EngineOptions {
    /// A unit test's environment: 64 MiB, 16 readers, checksum failures counted on a counter of its own.
    pub(crate) fn for_tests() -> EngineOptions {
        EngineOptions {
            checksum_failures: prometheus::IntCounter::new("checksum_failures", "test").expect("a valid metric name"),
            map_size: 64 << 20,
            max_readers: 16,
        }
    }
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
    /// Held around every commit: a commit without the meta flush sets an environment-wide flag,
    /// and another thread's commit must not run while it is set (the raftstore's writer thread and
    /// the raftstore thread both commit).
    commit_lock: std::sync::Arc<parking_lot::Mutex<()>>,
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
    /// Bytes the filesystem holding the environment still gives this process (`statvfs`).
    pub disk_available_bytes: u64,
}

impl EngineStats {
    /// Bytes the environment can still take without the filesystem refusing: what the
    /// filesystem has left, plus the free pages inside the file, which LMDB reuses first.
    pub fn disk_room(&self) -> u64 {
        let file_bytes = (self.last_page_number + 1) * u64::from(self.page_size);
        self.disk_available_bytes.saturating_add(file_bytes.saturating_sub(self.used_bytes))
    }
}

/// What the filesystem holding `dir` still gives an unprivileged writer; unknown (no statvfs) is
/// unlimited, so a failed probe never refuses writes.
fn disk_available(dir: &Path) -> u64 {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else { return u64::MAX };
    let mut stat = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: statvfs reads the NUL-terminated path and writes only the struct it is given; the
    // struct is read only if it succeeded.
    if unsafe { libc::statvfs(path.as_ptr(), stat.as_mut_ptr()) } != 0 {
        return u64::MAX;
    }
    let stat = unsafe { stat.assume_init() };
    stat.f_bavail.saturating_mul(stat.f_frsize)
}

impl Engine {
    /// Opens (creating if needed) the environment in `dir`.
    pub fn open(dir: &Path, options: &EngineOptions) -> Result<Engine> {
        std::fs::create_dir_all(dir).map_err(|e| StorageError::lmdb(heed::Error::Io(e), options.map_size, dir))?;
        let map_size = options.map_size;
        let lmdb = |e| StorageError::lmdb(e, map_size, dir);
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
        Ok(Engine {
            env,
            dbs,
            map_size,
            path: dir.to_path_buf(),
            checksum_failures: options.checksum_failures.clone(),
            commit_lock: Default::default(),
        })
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

    /// Commits `txn`: one fsync. `MDB_MAP_FULL` becomes [`StorageError::Full`], a full filesystem
    /// [`StorageError::NoSpace`]; either way nothing of the transaction is on disk.
    pub fn commit(&self, txn: RwTxn<'_>) -> Result<()> {
        let _commit = self.commit_lock.lock();
        txn.commit().map_err(|e| self.err(e))
    }

    /// Commits `txn` with one flush instead of two: the data pages are synced, the meta page that
    /// points at them is written but not synced (LMDB's `MDB_NOMETASYNC`, for this commit only).
    ///
    /// What that promises: after a process crash (kill -9) the transaction is there, as with
    /// [`Self::commit`] (the page cache has it). After a system crash it may be undone, and only
    /// it: the database stays intact, and the next synced commit (or [`Self::force_sync`]) makes it
    /// durable too. Never `MDB_NOSYNC`: unsynced data pages under a later synced meta page can be
    /// torn by a system crash.
    ///
    /// The caller must write nothing here whose loss a system crash may not undo: fekv uses it for
    /// transactions that only apply committed raft entries (their log is synced, so they are
    /// applied again after a restart), never for log entries, hard state or votes.
    pub fn commit_without_meta_sync(&self, txn: RwTxn<'_>) -> Result<()> {
        // SAFETY: LMDB requires that one thread at a time changes the flags; only the thread that
        // holds the environment's one write transaction (`txn`) calls this, and LMDB reads the flag
        // only while committing. The commit lock keeps any other commit out until it is restored.
        let _commit = self.commit_lock.lock();
        unsafe { self.env.set_flags(heed::EnvFlags::NO_META_SYNC, heed::FlagSetMode::Enable) }
            .map_err(|e| self.err(e))?;
        let committed = txn.commit().map_err(|e| self.err(e));
        // SAFETY: as above. Restored whatever the commit did: every other commit syncs its meta page.
        let restored = unsafe { self.env.set_flags(heed::EnvFlags::NO_META_SYNC, heed::FlagSetMode::Disable) };
        committed?;
        restored.map_err(|e| self.err(e))
    }

    /// Flushes everything committed so far, meta page included.
    pub fn force_sync(&self) -> Result<()> {
        self.env.force_sync().map_err(|e| self.err(e))
    }

    fn err(&self, e: heed::Error) -> StorageError {
        StorageError::lmdb(e, self.map_size, &self.path)
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
            disk_available_bytes: disk_available(&self.path),
        })
    }

    pub fn map_size(&self) -> u64 {
        self.map_size
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mapped(err: heed::Error) -> StorageError {
        StorageError::lmdb(err, 1 << 20, Path::new("/data"))
    }

    #[test]
    fn a_full_filesystem_is_no_space_and_other_io_errors_stay_errors() {
        for errno in [libc::ENOSPC, libc::EDQUOT, libc::EIO] {
            let err = mapped(heed::Error::Io(std::io::Error::from_raw_os_error(errno)));
            assert!(matches!(err, StorageError::NoSpace { .. }), "{errno}: {err}");
            assert!(err.to_string().contains("/data"), "{err}");
        }
        // How heed reports an errno from LMDB's own calls (MdbError::Other becomes an io error).
        let from_lmdb: heed::Error = heed::MdbError::Other(libc::ENOSPC).into();
        assert!(matches!(mapped(from_lmdb), StorageError::NoSpace { .. }));
        assert!(matches!(mapped(heed::Error::Mdb(heed::MdbError::MapFull)), StorageError::Full { .. }));
        let denied = mapped(heed::Error::Io(std::io::Error::from_raw_os_error(libc::EACCES)));
        assert!(matches!(denied, StorageError::Lmdb(_)), "{denied}");
    }

    #[test]
    fn a_commit_without_meta_sync_is_kept_and_leaves_the_flag_off() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(dir.path(), &EngineOptions::for_tests()).unwrap();
        let mut txn = engine.write_txn().unwrap();
        engine.put_data(&mut txn, b"k", 7, b"v").unwrap();
        engine.commit_without_meta_sync(txn).unwrap();
        let flags = engine.env.get_flags().unwrap();
        assert_eq!(flags & heed::EnvFlags::NO_META_SYNC.bits(), 0, "flags {flags:#x}");
        // The next commit syncs as usual, and both survive closing and reopening.
        let mut txn = engine.write_txn().unwrap();
        engine.put_data(&mut txn, b"l", 8, b"w").unwrap();
        engine.commit(txn).unwrap();
        engine.close();
        let engine = Engine::open(dir.path(), &EngineOptions::for_tests()).unwrap();
        let txn = engine.read_txn().unwrap();
        assert_eq!(engine.get_data(&txn, b"k").unwrap().map(|r| r.revision), Some(7));
        assert_eq!(engine.get_data(&txn, b"l").unwrap().map(|r| r.revision), Some(8));
    }

    #[test]
    fn disk_room_counts_the_free_pages_inside_the_file() {
        let stats = EngineStats {
            map_size: 1 << 30,
            page_size: 4096,
            last_page_number: 99,
            used_bytes: 60 * 4096,
            readers_used: 0,
            readers_max: 8,
            last_txn_id: 1,
            data_keys: 0,
            raft_log_entries: 0,
            disk_available_bytes: 1000,
        };
        assert_eq!(stats.disk_room(), 1000 + 40 * 4096);
        let unknown = EngineStats { disk_available_bytes: u64::MAX, ..stats };
        assert_eq!(unknown.disk_room(), u64::MAX);
    }
}
