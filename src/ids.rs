//! Id allocation: regions and peers share one id space, and an id is never handed out twice, even
//! across restarts. The raftstore asks through [`IdAllocator`] (a split needs a region id and one
//! peer id per peer); a node in a cluster asks placement (`cluster_link::ids::PlacementIds`, an
//! adapter above the raftstore), a node alone keeps the high-water mark in its data directory
//! ([`FileIdAllocator`]).

use std::path::{Path, PathBuf};

use parking_lot::Mutex;

/// Hands out ids (regions and peers share the space) that are never handed out again.
pub trait IdAllocator: Send + Sync {
    fn alloc(&self, count: usize) -> Result<Vec<u64>, String>;
}

/// The ids of a node without a placement service: reserved in blocks, the high-water mark kept in a
/// small file of the data directory (written and synced before any id of a block is handed out), so
/// ids are never reused after a restart.
pub struct FileIdAllocator {
    path: PathBuf,
    /// (next id to hand out, first id not yet reserved)
    state: Mutex<(u64, u64)>,
}

const ID_BLOCK: u64 = 1000;

/// The file of the data directory that holds a lone node's id high-water mark.
pub const ID_FILE: &str = "id-alloc";

impl FileIdAllocator {
    /// `floor`: ids below it are taken (the store, region and peer ids of the bootstrap).
    pub fn open(dir: &Path, floor: u64) -> std::io::Result<FileIdAllocator> {
        let path = dir.join(ID_FILE);
        let reserved = match std::fs::read_to_string(&path) {
            Ok(text) => {
                text.trim().parse().map_err(|_| std::io::Error::other(format!("{} is damaged", path.display())))?
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(err) => return Err(err),
        };
        let next = reserved.max(floor);
        Ok(FileIdAllocator { path, state: Mutex::new((next, next)) })
    }

    fn reserve(&self, up_to: u64) -> std::io::Result<()> {
        let tmp = self.path.with_extension("tmp");
        {
            use std::io::Write;
            let mut file = std::fs::File::create(&tmp)?;
            file.write_all(up_to.to_string().as_bytes())?;
            file.sync_all()?;
        }
        std::fs::rename(&tmp, &self.path)?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

impl IdAllocator for FileIdAllocator {
    fn alloc(&self, count: usize) -> Result<Vec<u64>, String> {
        let mut state = self.state.lock();
        let (next, reserved) = *state;
        let end = next + count as u64;
        if end > reserved {
            let new_reserved = end + ID_BLOCK;
            self.reserve(new_reserved).map_err(|e| format!("cannot persist the id allocator: {e}"))?;
            state.1 = new_reserved;
        }
        state.0 = end;
        Ok((next..end).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_ids_never_repeat_across_reopens() {
        let dir = tempfile::tempdir().unwrap();
        let first = FileIdAllocator::open(dir.path(), 10).unwrap();
        let a = first.alloc(3).unwrap();
        assert_eq!(a, vec![10, 11, 12]);
        drop(first);
        let second = FileIdAllocator::open(dir.path(), 10).unwrap();
        let b = second.alloc(2).unwrap();
        assert!(b[0] > 12, "{b:?} repeats {a:?}");
    }
}
