//! Damaged data on disk, on the real `fekv` binary: a flipped bit in a stored key is reported by the
//! reads that meet it and by the scrub, never served as another key; a data directory of an older
//! format is refused with a message saying what to do.

mod common;

use std::path::Path;
use std::time::Duration;

use common::process::{ctl, ctl_json, run_fekv, FekvProcess};
use common::process_cluster::ProcessCluster;
use common::{get, put, request};
use hyper::{Method, StatusCode};

/// Flips `mask` in the first byte of `key` wherever data.mdb holds it as the key of its user record
/// (the key directly followed by the record: crc32c ‖ revision ‖ value), not in the raft log's copy.
fn flip_stored_key(data_dir: &Path, key: &[u8], revision: u64, value: &[u8], mask: u8) {
    let path = data_dir.join("data.mdb");
    let mut file = std::fs::read(&path).unwrap();
    let mut record_tail = revision.to_be_bytes().to_vec();
    record_tail.extend_from_slice(value);
    let mut flipped = 0;
    for start in 0..file.len().saturating_sub(key.len() + 4 + record_tail.len()) {
        if file[start..].starts_with(key) && file[start + key.len() + 4..].starts_with(&record_tail) {
            file[start] ^= mask;
            flipped += 1;
        }
    }
    assert!(flipped >= 1, "record of {} not found in data.mdb", String::from_utf8_lossy(key));
    std::fs::write(&path, &file).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_key_byte_is_reported_by_reads_and_the_check_not_served_as_another_key() {
    let dir = tempfile::tempdir().unwrap();
    let node = FekvProcess::start(dir.path(), &[]);
    let mut revision_of_162 = 0;
    for i in 150..175 {
        let written = put(&node.url(&format!("/fekv/key{i}")), format!("value-{i}")).await;
        assert_eq!(written.status, StatusCode::OK);
        if i == 162 {
            revision_of_162 = written.header("etag").unwrap().trim_matches('"').parse().unwrap();
        }
    }
    node.kill9();
    flip_stored_key(dir.path(), b"key162", revision_of_162, b"value-162", 0x04); // 'k' → 'o'

    let node = FekvProcess::start(dir.path(), &[]);
    // The key's own read names it (it was a silent 404), and says where its record went.
    let reply = get(&node.url("/fekv/key162")).await;
    assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "GET key162: {}", reply.text());
    assert_eq!(reply.json()["error"], "checksum_mismatch");
    let message = reply.json()["message"].as_str().unwrap().to_string();
    assert!(message.contains("key key162") && message.contains("oey162"), "{message}");
    assert!(!reply.text().contains("value-162"), "damaged bytes leaked: {}", reply.text());
    assert_eq!(get(&node.url("/fekv/key161")).await.text(), "value-161");
    // Out of order in its page, the damaged key hides the keys after it from LMDB's search: their
    // reads fail loudly too, never a 404.
    let hidden = get(&node.url("/fekv/key170")).await;
    assert_eq!(hidden.status, StatusCode::INTERNAL_SERVER_ERROR, "GET key170: {}", hidden.text());
    assert!(
        hidden.text().contains("oey162") && hidden.text().contains("where key key170 would be"),
        "{}",
        hidden.text()
    );
    // A scan of the keys' prefix meets it (it silently stopped before key163), and so does a wider one.
    for scan in ["/fekv?prefix=key", "/fekv?start=key&end=z", "/fekv?prefix=key&consistency=stale"] {
        let reply = get(&node.url(scan)).await;
        assert_eq!(reply.status, StatusCode::INTERNAL_SERVER_ERROR, "{scan}: {}", reply.text());
        assert!(reply.text().contains("oey162"), "{scan}: {}", reply.text());
    }
    node.wait_stderr(Duration::from_secs(5), "the checksum error's log line", |lines| {
        lines.iter().any(|l| l.contains("ERROR") && l.contains("checksum mismatch") && l.contains("key162"))
    });

    // The check finds it without any read asking.
    let checked = request(Method::POST, &node.url("/scrub"), "", &[]).await;
    assert_eq!(checked.status, StatusCode::OK, "{}", checked.text());
    let last = &checked.json()["last"];
    assert_eq!(last["complete"], true, "{last}");
    assert!(last["damaged"].as_u64().unwrap() >= 1, "{last}");
    let findings = last["findings"].as_array().unwrap();
    assert!(
        findings.iter().any(|f| f["table"] == "data"
            && f["key"] == "oey162"
            && f["problem"].as_str().unwrap().contains("checksum mismatch")),
        "{last}"
    );
    assert_eq!(&get(&node.url("/scrub")).await.json()["last"], last);
    let metrics = get(&node.url("/metrics")).await.text();
    let value = |name: &str| {
        metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse::<f64>().ok()).unwrap_or(-1.0)
    };
    assert!(value("fekv_storage_scrub_damaged_records") >= 1.0, "{metrics}");
    assert!(value("fekv_storage_scrub_runs_total") >= 1.0, "{metrics}");
    assert!(value("fekv_storage_scrub_records_checked_total") >= 25.0, "{metrics}");
    assert!(value("fekv_storage_scrub_last_run_timestamp_seconds") > 0.0, "{metrics}");
    assert!(value("fekv_storage_checksum_failures_total") >= 1.0, "{metrics}");
    node.wait_stderr(Duration::from_secs(5), "the scrub's log line", |lines| {
        lines.iter().any(|l| l.contains("ERROR") && l.contains("scrub") && l.contains("oey162"))
    });
    // So does `fekv ctl check`, which fails and says what to do.
    let run = tokio::task::block_in_place(|| ctl("127.0.0.1:1", &["check", "--node", &node.addr]));
    let stdout = &run.stdout;
    assert!(!run.success, "{stdout}");
    assert!(stdout.contains("store 1 at") && stdout.contains("problem(s)") && stdout.contains("oey162"), "{stdout}");
    assert!(stdout.contains("remove-peer"), "{stdout}");
    assert!(run.stderr.contains("1 of 1 nodes found damage"), "{run:?}");

    // Writing the key again serves it again (the damaged copy stays until the replica is rebuilt).
    assert_eq!(put(&node.url("/fekv/key162"), "new").await.status, StatusCode::OK);
    assert_eq!(get(&node.url("/fekv/key162")).await.text(), "new");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clean_store_checks_clean() {
    let dir = tempfile::tempdir().unwrap();
    let node = FekvProcess::start(dir.path(), &[]);
    for i in 0..50 {
        assert_eq!(put(&node.url(&format!("/fekv/k{i}")), "v").await.status, StatusCode::OK);
    }
    let checked = request(Method::POST, &node.url("/scrub"), "", &[]).await.json();
    let last = &checked["last"];
    assert_eq!((last["complete"].as_bool(), last["damaged"].as_u64()), (Some(true), Some(0)), "{checked}");
    assert!(last["records_by_table"]["data"].as_u64().unwrap() >= 50, "{checked}");
    assert_eq!(last["regions_checked"], 1, "{checked}");
}

#[test]
fn ctl_check_asks_every_store_placement_knows() {
    let cluster = ProcessCluster::start(1, 1, &[], &[]);
    let nodes = ctl_json(cluster.placement(), &["check"]).unwrap();
    assert_eq!(nodes.as_array().map(Vec::len), Some(1), "{nodes}");
    assert_eq!(nodes[0]["report"]["damaged"], 0, "{nodes}");
    assert_eq!(nodes[0]["report"]["complete"], true, "{nodes}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_data_directory_of_the_first_format_is_refused_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let node = FekvProcess::start(dir.path(), &[]);
    node.stop_with("TERM");
    // The first format had no format_version record (its version sat inside the store identity).
    {
        // SAFETY: the node that had the environment open has exited; nothing else opens it meanwhile.
        let env = unsafe { heed::EnvOpenOptions::new().max_dbs(8).open(dir.path()) }.unwrap();
        let mut txn = env.write_txn().unwrap();
        let meta: heed::Database<heed::types::Bytes, heed::types::Bytes> =
            env.open_database(&txn, Some("meta")).unwrap().unwrap();
        assert!(meta.delete(&mut txn, b"format_version").unwrap());
        txn.commit().unwrap();
        env.prepare_for_closing().wait();
    }
    let data_dir = dir.path().display().to_string();
    let run = tokio::task::block_in_place(|| {
        run_fekv(&["--http-addr", "127.0.0.1:0", "--data-dir", &data_dir], Duration::from_secs(10))
    });
    assert!(!run.success);
    let stderr = &run.stderr;
    assert!(stderr.contains("has format version 1; this fekv reads version 3 only"), "{stderr}");
    assert!(stderr.contains(&dir.path().display().to_string()), "{stderr}");
}
