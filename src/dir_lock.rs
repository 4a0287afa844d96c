//! One process per data directory: an exclusive `flock` on a `LOCK` file inside it, held for as
//! long as the process uses the directory.
//!
//! Two processes writing one LMDB environment would each run their own raft log over the same
//! pages (seen: two keys with one revision, log entries overwritten by another term's). LMDB's own
//! lock file does not prevent it: it coordinates readers and one writer *transaction*, not two
//! owners. `flock` is released by the kernel when the descriptor is closed, also when the process
//! is killed with `kill -9`, so a crash never leaves a stale lock behind. The file holds the
//! owner's pid, so the error can say who has the directory.

use std::fs::File;
use std::io::{Read, Seek, Write};
use std::os::fd::AsRawFd;
use std::path::{Path, PathBuf};

/// The lock file's name inside a data directory.
pub const LOCK_FILE: &str = "LOCK";

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error(
        "the data directory {dir} is in use by another fekv process ({}); stop it first or use another --data-dir",
        holder.map_or("pid unknown".to_string(), |pid| format!("pid {pid}"))
    )]
    InUse { dir: PathBuf, holder: Option<u32> },
    #[error(
        "the data directory {dir} is a file, not a directory; give --data-dir a directory (it is created if missing)"
    )]
    NotADirectory { dir: PathBuf },
    #[error("cannot lock the data directory {dir}: {source}")]
    Io { dir: PathBuf, source: std::io::Error },
}

/// Holds a data directory until dropped (or the process ends).
#[derive(Debug)]
pub struct DirLock {
    // Never read: the open descriptor is the lock.
    _file: File,
}

impl DirLock {
    /// Creates `dir` if needed and takes its lock without waiting: a directory held by another
    /// process (or by another `DirLock` in this one) is an error naming the holder's pid.
    pub fn acquire(dir: &Path) -> Result<DirLock, LockError> {
        let io = |source| LockError::Io { dir: dir.to_path_buf(), source };
        // create_dir_all's own error for a file in the way is EEXIST, "File exists": say what it is.
        if std::fs::metadata(dir).is_ok_and(|meta| !meta.is_dir()) {
            return Err(LockError::NotADirectory { dir: dir.to_path_buf() });
        }
        std::fs::create_dir_all(dir).map_err(io)?;
        let path = dir.join(LOCK_FILE);
        // Not truncated on open: the holder's pid must survive a failed attempt to read it.
        let mut file =
            std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(&path).map_err(io)?;
        // SAFETY: flock takes a descriptor we own (open for the duration of the call) and flags;
        // it touches no memory.
        let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if locked != 0 {
            let err = std::io::Error::last_os_error();
            if err.kind() == std::io::ErrorKind::WouldBlock {
                return Err(LockError::InUse { dir: dir.to_path_buf(), holder: read_pid(&mut file) });
            }
            return Err(io(err));
        }
        file.set_len(0).map_err(io)?;
        file.rewind().map_err(io)?;
        writeln!(file, "{}", std::process::id()).map_err(io)?;
        Ok(DirLock { _file: file })
    }
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_in_the_way_is_named_as_not_a_directory() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("data");
        std::fs::write(&file, "not a directory").unwrap();
        let err = DirLock::acquire(&file).unwrap_err();
        assert!(matches!(&err, LockError::NotADirectory { dir } if *dir == file), "{err}");
        assert!(err.to_string().contains("is a file, not a directory"), "{err}");
        assert_eq!(std::fs::read_to_string(&file).unwrap(), "not a directory", "the file was touched");
    }

    #[test]
    fn a_held_directory_is_refused_with_the_holders_pid_until_released() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let held = DirLock::acquire(&data).unwrap();
        let err = DirLock::acquire(&data).unwrap_err();
        match &err {
            LockError::InUse { dir, holder } => {
                assert_eq!(dir, &data);
                assert_eq!(*holder, Some(std::process::id()));
            }
            other => panic!("{other}"),
        }
        let text = err.to_string();
        assert!(text.contains(&data.display().to_string()) && text.contains("pid "), "{text}");
        drop(held);
        DirLock::acquire(&data).unwrap();
    }
}
