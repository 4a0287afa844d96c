//! A really full disk, with the real binary: its data directory on a 24 MiB tmpfs while the LMDB
//! map may grow to 256 MiB, so the filesystem runs out long before the map. Filled by the node's
//! own writes, it refuses writes (`507 storage_full`) while the disk still has a reserve, so deletes
//! always have room; filled by someone else, the write the kernel refuses (ENOSPC, or EIO on a
//! tmpfs) fails its round's commit and is a `507` too, and the store takes writes again once space
//! is freed. Either way reads keep working, and after a `kill -9` every acknowledged write is there
//! with its revision: no raft state was left half-written. Needs root to mount the tmpfs; skipped
//! (with a message) where mounting is not permitted.

mod common;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::process::FekvProcess;
use common::wait::eventually;
use common::{delete, get, put, Reply};
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

fn start(data_dir: &Path) -> FekvProcess {
    FekvProcess::start(data_dir, &["--map-size", "256MiB", "--max-value-size", "64KiB", "--raft-log-gc-threshold", "8"])
}

/// Mounts the test's tmpfs, or returns None after saying why the test is skipped.
fn tmpfs_or_skip() -> Option<Tmpfs> {
    match Tmpfs::mount("24m") {
        Ok(tmpfs) => Some(tmpfs),
        Err(why) => {
            eprintln!("SKIPPED: cannot mount a tmpfs to fill ({why}); run as root to test a full disk");
            None
        }
    }
}

/// A 60 KiB value that says which it is.
fn value(i: usize) -> Vec<u8> {
    format!("{i:08}-").repeat(60 * 1024 / 9).into_bytes()
}

/// key → (value, revision) of every acknowledged write. A revision is the raft index that wrote
/// the value, so a log entry overwritten by a half-written round would show as a changed revision.
type Acked = BTreeMap<String, (Vec<u8>, String)>;

fn etag(reply: &Reply) -> String {
    reply.header("etag").unwrap_or_default().to_string()
}

/// Restarts the node after a `kill -9` and checks every acknowledged write and delete.
async fn check_after_kill9(node: FekvProcess, data_dir: &Path, acked: &Acked, deleted: &[String]) {
    node.kill9();
    let node = start(data_dir);
    for (key, (value, revision)) in acked {
        let reply = get(&node.url(&format!("/fekv/{key}"))).await;
        assert_eq!((reply.status, reply.body.len()), (StatusCode::OK, value.len()), "{key}: {}", reply.text());
        assert_eq!(&reply.body[..], &value[..], "{key}");
        assert_eq!(&etag(&reply), revision, "{key}");
    }
    for key in deleted {
        assert_eq!(get(&node.url(&format!("/fekv/{key}"))).await.status, StatusCode::NOT_FOUND, "{key}");
    }
    assert_eq!(put(&node.url("/fekv/small"), "v").await.status, StatusCode::OK);
    node.kill9();
}

/// PUTs `key` until it is acknowledged (at most 20 s), recording it; a 507 meanwhile is waited out.
async fn put_when_room(node: &FekvProcess, acked: &mut Acked, key: String, value: Vec<u8>) {
    let url = node.url(&format!("/fekv/{key}"));
    let reply = eventually(Duration::from_secs(20), &format!("room for {key}"), || async {
        let reply = put(&url, value.clone()).await;
        match reply.status {
            StatusCode::OK => Ok(reply),
            StatusCode::INSUFFICIENT_STORAGE => Err(reply.text()),
            other => panic!("{key}: {other}: {}", reply.text()),
        }
    })
    .await;
    acked.insert(key, (value, etag(&reply)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filled_by_writes_is_507_while_reads_and_deletes_keep_working() {
    let Some(tmpfs) = tmpfs_or_skip() else { return };
    let data_dir = tmpfs.path().join("node");
    let node = start(&data_dir);
    let mut acked = Acked::new();
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
    assert!(full.text().contains(&data_dir.display().to_string()), "{}", full.text());
    assert!(acked.len() > 10, "full after {} values", acked.len());
    for (key, (value, _)) in acked.iter().take(20) {
        let reply = get(&node.url(&format!("/fekv/{key}"))).await;
        assert_eq!((reply.status, &reply.body[..]), (StatusCode::OK, &value[..]), "{key}");
    }
    // Every delete goes through: the node stopped adding data while the disk had room left.
    let deleted: Vec<String> = acked.keys().take(acked.len() / 2).cloned().collect();
    for key in &deleted {
        let reply = delete(&node.url(&format!("/fekv/{key}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{key}: {}", reply.text());
        acked.remove(key);
    }
    // And make room (once log compaction drops the log's copies of the deleted values).
    for i in 0..5 {
        put_when_room(&node, &mut acked, format!("after{i}"), value(i)).await;
    }
    check_after_kill9(node, &data_dir, &acked, &deleted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disk_filled_by_someone_else_fails_the_write_with_507_and_recovers_when_freed() {
    let Some(tmpfs) = tmpfs_or_skip() else { return };
    let data_dir = tmpfs.path().join("node");
    let node = start(&data_dir);
    let mut acked = Acked::new();
    for i in 0..5 {
        put_when_room(&node, &mut acked, format!("before{i}"), value(i)).await;
    }
    // Someone else takes the rest of the filesystem.
    let filler = tmpfs.path().join("filler");
    let mut file = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while std::io::Write::write_all(&mut file, &chunk).is_ok() {}
    let _ = std::io::Write::write_all(&mut file, &chunk[..4096]);
    drop(file);
    // The next write needs pages the kernel refuses: its round's commit fails, and it is a 507.
    let refused = put(&node.url("/fekv/refused"), value(9)).await;
    assert_eq!(refused.status, StatusCode::INSUFFICIENT_STORAGE, "{}", refused.text());
    assert_eq!(refused.json()["error"], "storage_full", "{}", refused.text());
    let metrics = get(&node.url("/metrics")).await.text();
    assert!(
        metrics.lines().any(|l| l.starts_with("fekv_storage_commit_failures_total ") && !l.ends_with(" 0")),
        "the refusal did not come from a failed commit: {metrics}"
    );
    for (key, (value, _)) in &acked {
        assert_eq!(&get(&node.url(&format!("/fekv/{key}"))).await.body[..], &value[..], "{key}");
    }
    // Space freed: writes go through again, on raft state rebuilt from disk after the failure.
    std::fs::remove_file(&filler).unwrap();
    for i in 0..5 {
        put_when_room(&node, &mut acked, format!("after{i}"), value(i)).await;
    }
    check_after_kill9(node, &data_dir, &acked, &[]).await;
}
