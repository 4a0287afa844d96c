//! A really full disk, with the real binary: its data directory on a 24 MiB tmpfs while the LMDB
//! map may grow to 256 MiB, so the filesystem runs out long before the map (ENOSPC or EIO from the
//! kernel, not LMDB's MAP_FULL). Writes get `507 storage_full`, reads keep working, deletes make
//! room, and after a `kill -9` every acknowledged write is there: no raft state was left
//! half-written by the failed commits. Needs root to mount the tmpfs; skipped (with a message) where
//! mounting is not permitted.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::process::FekvProcess;
use common::{delete, get, put};
use hyper::StatusCode;

/// A small tmpfs, unmounted when dropped.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    /// Mounts a `size` tmpfs, or says why not.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let output = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !output.status.success() {
            return Err(String::from_utf8_lossy(&output.stderr).trim().to_string());
        }
        Ok(Tmpfs { dir })
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        // Lazy: a node still holding files cannot keep the mount alive.
        let _ = Command::new("umount").arg("-l").arg(self.dir.path()).status();
    }
}

fn start(data_dir: &PathBuf) -> FekvProcess {
    FekvProcess::start(data_dir, &["--map-size", "256MiB", "--max-value-size", "64KiB", "--raft-log-gc-threshold", "8"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_is_507_reads_keep_working_deletes_make_room_and_nothing_is_lost() {
    let tmpfs = match Tmpfs::mount("24m") {
        Ok(tmpfs) => tmpfs,
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a tmpfs to fill ({why}); run as root to test a full disk");
            return;
        }
    };
    let data_dir = tmpfs.path().join("node");
    let node = start(&data_dir);
    let value = |i: usize| format!("{i:08}-").repeat(60 * 1024 / 9).into_bytes();
    // key → (value, revision): a revision is the raft index that wrote the value, so a log entry
    // overwritten by a half-written round would show as a changed revision.
    let mut acked: BTreeMap<String, (Vec<u8>, String)> = BTreeMap::new();
    let etag = |reply: &common::Reply| reply.header("etag").unwrap_or_default().to_string();
    let full = loop {
        let key = format!("big{:04}", acked.len());
        let reply = put(&node.url(&format!("/fekv/{key}")), value(acked.len())).await;
        if reply.status != StatusCode::OK {
            break reply;
        }
        acked.insert(key, (value(acked.len()), etag(&reply)));
        assert!(acked.len() < 1000, "a 24 MiB filesystem took 1000 values of 60 KiB");
    };
    assert_eq!(full.status, StatusCode::INSUFFICIENT_STORAGE, "{}", full.text());
    assert_eq!(full.json()["error"], "storage_full", "{}", full.text());
    assert!(acked.len() > 10, "full after {} values", acked.len());
    // Reads keep working.
    for (key, (value, _)) in acked.iter().take(20) {
        let reply = get(&node.url(&format!("/fekv/{key}"))).await;
        assert_eq!((reply.status, &reply.body[..]), (StatusCode::OK, &value[..]), "{key}");
    }
    // Deletes make room (once the log's copies of the deleted values are compacted away).
    let deleted: Vec<String> = acked.keys().take(acked.len() / 2).cloned().collect();
    for key in &deleted {
        let reply = delete(&node.url(&format!("/fekv/{key}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{key}: {}", reply.text());
        acked.remove(key);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = String::new();
    let mut fits = 0;
    while fits < 5 {
        assert!(Instant::now() < deadline, "no room after deleting half: {last}");
        let key = format!("after{fits}");
        let reply = put(&node.url(&format!("/fekv/{key}")), value(fits)).await;
        match reply.status {
            StatusCode::OK => {
                acked.insert(key, (value(fits), etag(&reply)));
                fits += 1;
            }
            StatusCode::INSUFFICIENT_STORAGE => {
                last = reply.text();
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => panic!("{other}: {}", reply.text()),
        }
    }
    // Every acknowledged write survives a kill -9, and the store takes writes again.
    node.kill9();
    let node = start(&data_dir);
    for (key, (value, revision)) in &acked {
        let reply = get(&node.url(&format!("/fekv/{key}"))).await;
        assert_eq!((reply.status, reply.body.len()), (StatusCode::OK, value.len()), "{key}: {}", reply.text());
        assert_eq!(&reply.body[..], &value[..], "{key}");
        assert_eq!(&etag(&reply), revision, "{key}");
    }
    for key in &deleted {
        assert_eq!(get(&node.url(&format!("/fekv/{key}"))).await.status, StatusCode::NOT_FOUND, "{key}");
    }
    assert_eq!(put(&node.url("/fekv/small"), "v").await.status, StatusCode::OK);
    node.kill9();
}
