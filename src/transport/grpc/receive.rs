//! The receiving end of snapshot streams, bounded so that no sender (slow, stalled, broken or too
//! big) can make this store hold more than it decided to:
//!
//! - at most `max_receiving` streams at once; another one is refused at once with
//!   `RESOURCE_EXHAUSTED`, which its sender reports to raft as a failed snapshot (raft offers it
//!   again later);
//! - the first chunk announces the snapshot's total length, checked against `max_size` before a
//!   byte is buffered; no stream may send more than it announced;
//! - a stream that sends no chunk for `idle_timeout` is dropped (`DEADLINE_EXCEEDED`);
//! - the first [`MEMORY_CAP`] bytes of a stream stay in memory (most snapshots are small); the rest
//!   goes to a file in the data directory, deleted when the stream ends, however it ends.
//!
//! So an incomplete stream holds at most a few MiB of memory. A complete one is read back and
//! decoded into the raft message whole: raft-rs keeps a snapshot in memory, which `max_size` and
//! `max_receiving` bound.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::Semaphore;
use tonic::{Status, Streaming};

use crate::proto::{RaftMessage, SnapshotChunk};

/// Bytes of one stream kept in memory before the rest spills to a file.
pub const MEMORY_CAP: usize = 4 << 20;
/// The name spill files end with (leftovers of a crash are deleted at start).
const SPILL_SUFFIX: &str = ".snap-part";

/// How much a store accepts from snapshot senders.
#[derive(Debug, Clone)]
pub struct SnapshotLimits {
    /// Largest snapshot (the encoded raft message) accepted.
    pub max_size: u64,
    /// Streams received at once.
    pub max_receiving: usize,
    /// Longest wait for a stream's next chunk.
    pub idle_timeout: Duration,
    /// Where spill files go (created when first needed).
    pub spill_dir: PathBuf,
}

/// Receives snapshot streams within [`SnapshotLimits`].
pub struct SnapshotReceiver {
    limits: SnapshotLimits,
    permits: Arc<Semaphore>,
    next_file: AtomicU64,
}

impl SnapshotReceiver {
    /// Deletes spill files a crash left behind (a failure to is logged: they are only disk space).
    pub fn new(limits: SnapshotLimits) -> SnapshotReceiver {
        remove_leftovers(&limits.spill_dir);
        let permits = Arc::new(Semaphore::new(limits.max_receiving));
        SnapshotReceiver { limits, permits, next_file: AtomicU64::new(0) }
    }

    /// Receives one stream to its end and decodes the message it carries.
    pub async fn receive(&self, stream: &mut Streaming<SnapshotChunk>) -> Result<RaftMessage, Status> {
        let Ok(_permit) = self.permits.clone().try_acquire_owned() else {
            return Err(Status::resource_exhausted(format!(
                "this store is receiving {} snapshots already (snapshot_max_receiving); retry later",
                self.limits.max_receiving
            )));
        };
        let mut spool: Option<Spool> = None;
        loop {
            let idle = self.limits.idle_timeout;
            let chunk = match tokio::time::timeout(idle, stream.message()).await {
                Err(_) => return Err(Status::deadline_exceeded(format!("no snapshot chunk for {idle:?}"))),
                Ok(Err(status)) => return Err(status),
                Ok(Ok(None)) => return Err(Status::data_loss("snapshot stream ended before its last chunk")),
                Ok(Ok(Some(chunk))) => chunk,
            };
            if crc32c::crc32c(&chunk.data) != chunk.chunk_crc {
                return Err(Status::data_loss("snapshot chunk checksum mismatch"));
            }
            let spool = match &mut spool {
                Some(spool) => spool,
                None => spool.insert(self.start(chunk.total_len)?),
            };
            if chunk.total_len != spool.total_len {
                return Err(Status::data_loss("snapshot chunks disagree on the total length"));
            }
            if spool.len + chunk.data.len() as u64 > spool.total_len {
                return Err(Status::data_loss(format!(
                    "snapshot stream sends more than its {} bytes",
                    spool.total_len
                )));
            }
            spool.push(&chunk.data).await.map_err(|e| spill_failed(&spool.path, e))?;
            if chunk.last {
                if spool.len != spool.total_len || spool.crc != chunk.total_crc {
                    return Err(Status::data_loss("snapshot checksum or length mismatch"));
                }
                let path = spool.path.clone();
                let bytes = spool.take_all().await.map_err(|e| spill_failed(&path, e))?;
                return RaftMessage::decode(bytes.as_slice()).map_err(|e| Status::data_loss(e.to_string()));
            }
        }
    }

    /// Checks the announced length of a new stream and prepares to buffer it.
    fn start(&self, total_len: u64) -> Result<Spool, Status> {
        if total_len == 0 {
            return Err(Status::invalid_argument("the first snapshot chunk must announce the total length"));
        }
        if total_len > self.limits.max_size {
            return Err(Status::resource_exhausted(format!(
                "a snapshot of {total_len} bytes is over this store's snapshot_max_size of {} bytes",
                self.limits.max_size
            )));
        }
        let number = self.next_file.fetch_add(1, Ordering::Relaxed);
        let path = self.limits.spill_dir.join(format!("{}-{number}{SPILL_SUFFIX}", std::process::id()));
        Ok(Spool { total_len, len: 0, crc: 0, memory: Vec::new(), file: None, path })
    }
}

fn spill_failed(path: &Path, err: std::io::Error) -> Status {
    tracing::warn!(path = %path.display(), error = %err, "cannot spill a snapshot to disk");
    Status::unavailable(format!("cannot spill the snapshot to {}: {err}", path.display()))
}

fn remove_leftovers(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.to_string_lossy().ends_with(SPILL_SUFFIX) {
            if let Err(err) = std::fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %err, "cannot delete a snapshot spill file");
            }
        }
    }
}

/// One stream's bytes so far: in memory up to [`MEMORY_CAP`], then in a file.
struct Spool {
    total_len: u64,
    len: u64,
    /// crc32c of the bytes so far.
    crc: u32,
    memory: Vec<u8>,
    file: Option<tokio::fs::File>,
    path: PathBuf,
}

impl Spool {
    async fn push(&mut self, data: &[u8]) -> std::io::Result<()> {
        self.crc = crc32c::crc32c_append(self.crc, data);
        self.len += data.len() as u64;
        if self.file.is_none() && self.memory.len() + data.len() <= MEMORY_CAP {
            self.memory.extend_from_slice(data);
            return Ok(());
        }
        let file = match &mut self.file {
            Some(file) => file,
            None => {
                if let Some(dir) = self.path.parent() {
                    tokio::fs::create_dir_all(dir).await?;
                }
                let mut file =
                    tokio::fs::File::options().read(true).write(true).create_new(true).open(&self.path).await?;
                file.write_all(&std::mem::take(&mut self.memory)).await?;
                self.file.insert(file)
            }
        };
        file.write_all(data).await
    }

    /// Every byte received, in one buffer.
    async fn take_all(&mut self) -> std::io::Result<Vec<u8>> {
        let Some(file) = &mut self.file else { return Ok(std::mem::take(&mut self.memory)) };
        file.flush().await?;
        let mut bytes = Vec::with_capacity(self.len as usize);
        let mut reader = tokio::fs::File::open(&self.path).await?;
        reader.read_to_end(&mut bytes).await?;
        Ok(bytes)
    }

    /// Bytes held in memory now.
    #[cfg(test)]
    fn in_memory(&self) -> usize {
        self.memory.len()
    }
}

impl Drop for Spool {
    fn drop(&mut self) {
        if self.file.take().is_some() {
            if let Err(err) = std::fs::remove_file(&self.path) {
                tracing::warn!(path = %self.path.display(), error = %err, "cannot delete a snapshot spill file");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spool(dir: &Path) -> Spool {
        let path = dir.join(format!("test{SPILL_SUFFIX}"));
        Spool { total_len: 0, len: 0, crc: 0, memory: Vec::new(), file: None, path }
    }

    #[tokio::test]
    async fn a_spool_keeps_at_most_its_cap_in_memory_and_gives_everything_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = spool(&dir.path().join("spill"));
        let chunk: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        let mut sent = Vec::new();
        for _ in 0..10 {
            spool.push(&chunk).await.unwrap();
            sent.extend_from_slice(&chunk);
            assert!(spool.in_memory() <= MEMORY_CAP);
        }
        assert_eq!(spool.in_memory(), 0, "past the cap, everything is on disk");
        // tokio's file hands writes to a blocking thread: flushed, they are all in the file.
        spool.file.as_mut().unwrap().flush().await.unwrap();
        let on_disk = std::fs::metadata(&spool.path).unwrap().len();
        assert_eq!(on_disk, 10 << 20);
        assert_eq!(spool.crc, crc32c::crc32c(&sent));
        assert!(spool.take_all().await.unwrap() == sent);
        let path = spool.path.clone();
        drop(spool);
        assert!(!path.exists(), "the spill file is deleted with its stream");
    }

    #[tokio::test]
    async fn a_small_snapshot_never_touches_the_disk() {
        let dir = tempfile::tempdir().unwrap();
        let mut spool = spool(dir.path());
        spool.push(b"small").await.unwrap();
        assert!(!spool.path.exists());
        assert_eq!(spool.take_all().await.unwrap(), b"small");
    }

    #[test]
    fn leftover_spill_files_are_deleted_at_start() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(format!("1-0{SPILL_SUFFIX}")), b"x").unwrap();
        std::fs::write(dir.path().join("other"), b"y").unwrap();
        let limits = SnapshotLimits {
            max_size: 1,
            max_receiving: 1,
            idle_timeout: Duration::from_secs(1),
            spill_dir: dir.path().to_path_buf(),
        };
        SnapshotReceiver::new(limits);
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, vec![std::ffi::OsString::from("other")]);
    }
}
