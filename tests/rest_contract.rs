//! The REST contract, against the real server running in-process on 127.0.0.1:0: the seed's
//! transcript, every status code of the README's table, and the promise that bad input changes no
//! stored data and leaves the node serving.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use bytes::Bytes;
use bytesize::ByteSize;
use common::wait::eventually;
use common::{delete, get, put, request, TestNode};
use hyper::{Method, StatusCode};

/// Checks that `key` still holds `value` and that the node still takes writes.
async fn assert_unchanged_and_serving(node: &TestNode, key: &str, value: &[u8]) {
    let reply = get(&node.url(&format!("/fekv/{key}"))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
    assert_eq!(&reply.body[..], value);
    let reply = put(&node.url("/fekv/still-serving"), "yes").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seed_transcript_behaves_as_in_the_original_readme() {
    let node = TestNode::start(|_| {}).await;
    let url = node.url("/fekv/foo");
    assert_eq!(get(&url).await.status, StatusCode::NOT_FOUND);
    let reply = put(&url, "bar").await;
    assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "OK"));
    assert_eq!(get(&url).await.text(), "bar");
    let reply = delete(&url).await;
    assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "OK"));
    let reply = request(Method::POST, &url, "BAR", &[]).await;
    assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "OK"));
    assert_eq!(get(&url).await.text(), "BAR");
    assert_eq!(request(Method::POST, &url, "baz", &[]).await.text(), "OK");
    assert_eq!(get(&url).await.text(), "baz");
    assert_eq!(delete(&url).await.text(), "OK");
    assert_eq!(get(&url).await.status, StatusCode::NOT_FOUND);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn values_and_keys_are_arbitrary_bytes() {
    let node = TestNode::start(|_| {}).await;
    let value: Vec<u8> = (0..=255u8).cycle().take(4096).collect();
    // Key bytes 0x00, 0xff, '/', ' ' and a multi-byte character, percent-encoded in the URL.
    let url = node.url("/fekv/a%00%ff/b%20%E2%9C%93");
    assert_eq!(put(&url, value.clone()).await.status, StatusCode::OK);
    let reply = get(&url).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(&reply.body[..], &value[..]);
    assert_eq!(reply.header("content-type"), Some("application/octet-stream"));
    // A different encoding of the same bytes is the same key.
    assert_eq!(&get(&node.url("/fekv/a%00%FF%2Fb%20%e2%9c%93")).await.body[..], &value[..]);
    // An empty value is a value.
    assert_eq!(put(&node.url("/fekv/empty"), "").await.status, StatusCode::OK);
    let reply = get(&node.url("/fekv/empty")).await;
    assert_eq!((reply.status, reply.body.len()), (StatusCode::OK, 0));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleting_an_absent_key_is_ok() {
    let node = TestNode::start(|_| {}).await;
    let reply = delete(&node.url("/fekv/never-written")).await;
    assert_eq!((reply.status, reply.text().as_str()), (StatusCode::OK, "OK"));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn etag_is_the_revision_of_the_last_write() {
    let node = TestNode::start(|_| {}).await;
    let url = node.url("/fekv/k");
    let first = put(&url, "1").await;
    let second = put(&url, "2").await;
    let (first_tag, second_tag) = (first.header("etag").unwrap(), second.header("etag").unwrap());
    let revision = |tag: &str| tag.trim_matches('"').parse::<u64>().unwrap();
    assert!(revision(second_tag) > revision(first_tag), "{first_tag} then {second_tag}");
    assert_eq!(get(&url).await.header("etag"), Some(second_tag));
    // Revisions are store-wide raft indexes: a write to another key moves them on.
    let other = put(&node.url("/fekv/other"), "x").await;
    assert!(revision(other.header("etag").unwrap()) > revision(second_tag));
    assert_eq!(get(&url).await.header("etag"), Some(second_tag));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditional_writes_follow_if_match_and_if_none_match() {
    let node = TestNode::start(|_| {}).await;
    let url = node.url("/fekv/cas");
    // Create-only.
    let created = request(Method::PUT, &url, "v1", &[("if-none-match", "*")]).await;
    assert_eq!(created.status, StatusCode::OK);
    let tag = created.header("etag").unwrap().to_string();
    let again = request(Method::PUT, &url, "v2", &[("if-none-match", "*")]).await;
    assert_eq!(again.status, StatusCode::PRECONDITION_FAILED, "{}", again.text());
    assert_eq!(again.header("etag"), Some(tag.as_str()), "412 tells the current revision");
    assert!(again.text().contains("precondition"), "{}", again.text());
    assert_eq!(get(&url).await.text(), "v1");
    // Compare-and-set on the revision.
    let stale = request(Method::PUT, &url, "v2", &[("if-match", "\"1\"")]).await;
    assert_eq!(stale.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(get(&url).await.text(), "v1");
    let swapped = request(Method::POST, &url, "v2", &[("if-match", &tag)]).await;
    assert_eq!(swapped.status, StatusCode::OK, "{}", swapped.text());
    assert_eq!(get(&url).await.text(), "v2");
    // The old tag no longer matches, for a delete either.
    let stale_delete = request(Method::DELETE, &url, "", &[("if-match", &tag)]).await;
    assert_eq!(stale_delete.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(get(&url).await.text(), "v2");
    // If-Match: * needs the key to exist.
    let absent = request(Method::PUT, &node.url("/fekv/absent"), "x", &[("if-match", "*")]).await;
    assert_eq!(absent.status, StatusCode::PRECONDITION_FAILED);
    assert_eq!(get(&node.url("/fekv/absent")).await.status, StatusCode::NOT_FOUND);
    // A GET with the current tag is answered 304 without the body.
    let current = get(&url).await.header("etag").unwrap().to_string();
    let not_modified = request(Method::GET, &url, "", &[("if-none-match", &current)]).await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);
    assert!(not_modified.body.is_empty());
    // Malformed tags are a bad request.
    let bad = request(Method::PUT, &url, "v3", &[("if-match", "7")]).await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{}", bad.text());
    assert_unchanged_and_serving(&node, "cas", b"v2").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_over_the_limit_is_413_from_content_length() {
    let node = TestNode::start(|c| c.max_value_size = ByteSize::kib(1)).await;
    put(&node.url("/fekv/k"), "before").await;
    let at_limit = put(&node.url("/fekv/at-limit"), vec![b'x'; 1024]).await;
    assert_eq!(at_limit.status, StatusCode::OK);
    let reply = put(&node.url("/fekv/k"), vec![b'x'; 1025]).await;
    assert_eq!(reply.status, StatusCode::PAYLOAD_TOO_LARGE);
    let body = reply.json();
    assert_eq!(body["error"], "value_too_large");
    assert_eq!(body["limit"], 1024);
    assert!(body["message"].as_str().unwrap().contains("1025 bytes"), "{body}");
    assert_unchanged_and_serving(&node, "k", b"before").await;
    node.stop().await;
}

/// A chunked body has no Content-Length: the server must stop reading once it passes the limit,
/// without buffering the rest. Spoken over a raw socket to control the framing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn value_over_the_limit_is_413_while_streaming() {
    let node = TestNode::start(|c| c.max_value_size = ByteSize::kib(64)).await;
    put(&node.url("/fekv/k"), "before").await;
    let addr = node.config.http_addr;
    let response = tokio::task::spawn_blocking(move || {
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        stream.write_all(b"PUT /fekv/k HTTP/1.1\r\nHost: test\r\nTransfer-Encoding: chunked\r\n\r\n").unwrap();
        // Offer up to 64 MiB in 16 KiB chunks; the server answers long before.
        let chunk = vec![b'y'; 16 * 1024];
        for _ in 0..4096 {
            let header = format!("{:x}\r\n", chunk.len());
            if stream.write_all(header.as_bytes()).is_err()
                || stream.write_all(&chunk).is_err()
                || stream.write_all(b"\r\n").is_err()
            {
                break; // the server closed the connection after answering
            }
        }
        let mut response = Vec::new();
        let _ = stream.read_to_end(&mut response);
        String::from_utf8_lossy(&response).into_owned()
    })
    .await
    .unwrap();
    assert!(response.starts_with("HTTP/1.1 413"), "{response}");
    assert!(response.contains("limit of 65536 bytes"), "{response}");
    assert_unchanged_and_serving(&node, "k", b"before").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_keys_are_400_with_the_reason() {
    let node = TestNode::start(|_| {}).await;
    put(&node.url("/fekv/k"), "before").await;
    let cases = [
        ("/fekv/", "empty_key", "empty"),
        ("/fekv/bad%zzkey", "bad_key_encoding", "percent-encoding"),
        ("/fekv/bad%4", "bad_key_encoding", "percent-encoding"),
    ];
    for (path, code, words) in cases {
        for method in [Method::GET, Method::PUT, Method::DELETE] {
            let reply = request(method.clone(), &node.url(path), "v", &[]).await;
            assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{method} {path}: {}", reply.text());
            let body = reply.json();
            assert_eq!(body["error"], code, "{method} {path}");
            assert!(body["message"].as_str().unwrap().contains(words), "{body}");
        }
    }
    let longest = "k".repeat(511);
    assert_eq!(put(&node.url(&format!("/fekv/{longest}")), "ok").await.status, StatusCode::OK);
    let too_long = put(&node.url(&format!("/fekv/{longest}k")), "v").await;
    assert_eq!(too_long.status, StatusCode::BAD_REQUEST);
    assert_eq!(too_long.json()["limit"], 511);
    assert!(too_long.text().contains("512 bytes"), "{}", too_long.text());
    assert_unchanged_and_serving(&node, "k", b"before").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn other_methods_are_405_with_allow() {
    let node = TestNode::start(|_| {}).await;
    put(&node.url("/fekv/k"), "before").await;
    for method in [Method::PATCH, Method::OPTIONS, Method::from_bytes(b"BREW").unwrap()] {
        let reply = request(method.clone(), &node.url("/fekv/k"), "v", &[]).await;
        assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED, "{method}");
        assert_eq!(reply.header("allow"), Some("GET, HEAD, PUT, POST, DELETE"));
    }
    let reply = request(Method::POST, &node.url("/status"), "", &[]).await;
    assert_eq!(reply.status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(reply.header("allow"), Some("GET, HEAD"));
    assert_unchanged_and_serving(&node, "k", b"before").await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_paths_are_404() {
    let node = TestNode::start(|_| {}).await;
    for path in ["/", "/nope", "/fekvfoo", "/status/extra"] {
        let reply = get(&node.url(path)).await;
        assert_eq!(reply.status, StatusCode::NOT_FOUND, "{path}");
        assert_eq!(reply.json()["error"], "no_route");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_shows_the_node_its_region_and_storage() {
    let node = TestNode::start(|_| {}).await;
    for i in 0..10 {
        put(&node.url(&format!("/fekv/key{i}")), "value").await;
    }
    let status = get(&node.url("/status")).await;
    assert_eq!(status.status, StatusCode::OK);
    let status = status.json();
    assert_eq!(status["store_id"], 1);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert!(status["uptime_seconds"].as_f64().unwrap() >= 0.0);
    assert_eq!(status["data_dir"], node.data_dir().display().to_string());
    let regions = status["regions"].as_array().unwrap();
    assert_eq!(regions.len(), 1);
    let region = &regions[0];
    assert_eq!(region["region_id"], 1);
    assert_eq!((region["start_key"].as_str(), region["end_key"].as_str()), (Some(""), Some("")));
    assert_eq!(region["epoch"]["version"], 1);
    assert_eq!(region["role"], "leader");
    assert_eq!(region["leader_store_id"], 1);
    assert!(region["term"].as_u64().unwrap() > 0);
    assert_eq!(region["commit_index"], region["applied_index"]);
    // By default no key is walked: the leader's approximate measure (if it measured yet) and no counts.
    assert_eq!(status["counts"], "approximate");
    assert!(region.get("keys").is_none() && region.get("bytes").is_none(), "{region}");
    assert!(region["approximate_size"].is_u64() || region["approximate_size"].is_null(), "{region}");
    // Counted on request.
    let exact = get(&node.url("/status?counts=exact")).await.json();
    assert_eq!(exact["counts"], "exact");
    let counted = &exact["regions"][0];
    assert_eq!(counted["keys"], 10);
    assert!(counted["bytes"].as_u64().unwrap() >= 10 * ("key0".len() + "value".len()) as u64);
    assert_eq!(get(&node.url("/status?counts=some")).await.status, StatusCode::BAD_REQUEST);
    let storage = &status["storage"];
    assert_eq!(storage["map_size"], node.config.map_size.as_u64());
    assert!(storage["used_bytes"].as_u64().unwrap() > 0);
    assert!(storage["readers_max"].as_u64().unwrap() >= node.config.max_readers as u64);
    node.stop().await;
}

/// Reads a counter or gauge from the Prometheus text.
fn metric(text: &str, name_and_labels: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(name_and_labels).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("no metric {name_and_labels} in:\n{text}"))
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_show_requests_raft_and_group_commit() {
    let node = TestNode::start(|_| {}).await;
    let writes = (0..256).map(|i| {
        let url = node.url(&format!("/fekv/m{i}"));
        tokio::spawn(async move { put(&url, "v").await.status })
    });
    for write in writes {
        assert_eq!(write.await.unwrap(), StatusCode::OK);
    }
    assert_eq!(get(&node.url("/fekv/nothing")).await.status, StatusCode::NOT_FOUND);
    let reply = get(&node.url("/metrics")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.header("content-type").unwrap().starts_with("text/plain"));
    let text = reply.text();
    assert_eq!(metric(&text, r#"fekv_http_requests_total{code="200",method="PUT",route="kv"}"#), 256.0);
    assert_eq!(metric(&text, r#"fekv_http_requests_total{code="404",method="GET",route="kv"}"#), 1.0);
    assert!(metric(&text, r#"fekv_http_request_duration_seconds_count{method="PUT",route="kv"}"#) >= 256.0);
    let proposals = metric(&text, "fekv_raftstore_proposals_total");
    let commits = metric(&text, "fekv_storage_commits_total");
    assert!(proposals >= 256.0);
    // The leader's empty entry at election is committed too, so commits may be proposals + 1 here;
    // batching itself is checked by `writes_queued_during_a_commit_share_the_next_one`.
    assert!(commits > 0.0 && commits <= proposals + 1.0, "{proposals} proposals in {commits} commits");
    assert!(metric(&text, "fekv_storage_commit_duration_seconds_count") >= commits);
    assert!(metric(&text, "fekv_storage_entries_per_commit_sum") >= 256.0);
    assert!(metric(&text, "fekv_storage_proposals_per_commit_sum") >= 256.0);
    // A region whose only member is this node reads without a ReadIndex (`api::kv::read_barrier`);
    // that a 3-node region's read counts one is `replication.rs`'s test.
    assert_eq!(metric(&text, "fekv_raftstore_read_index_total"), 0.0);
    assert_eq!(metric(&text, "fekv_storage_checksum_failures_total"), 0.0);
    node.stop().await;
}

/// Takes LMDB's write lock on another thread (the writer thread then blocks in its next commit) and holds
/// it until the returned sender is used (or 20 s pass). Returns once the lock is held.
fn hold_write_lock(engine: fekv::storage::Engine) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let lock_holder = std::thread::spawn(move || {
        let txn = engine.write_txn().unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv_timeout(Duration::from_secs(20));
        drop(txn);
    });
    locked_rx.recv().unwrap();
    (release_tx, lock_holder)
}

/// Writes that reach the raftstore while a commit is being made are made durable together: the
/// raftstore goes on taking them into rounds, and the writer takes every round queued behind the
/// blocked commit into one transaction. Made deterministic by holding LMDB's write lock until all 64
/// writes are proposed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_queued_during_a_commit_share_the_next_one() {
    // Every round through the writer thread: a lone first write is otherwise committed inline.
    let node = TestNode::start(|c| c.raftstore_inline_commit = false).await;
    let (release_tx, lock_holder) = hold_write_lock(node.node().engine().clone());
    let text = get(&node.url("/metrics")).await.text();
    let commits_before = metric(&text, "fekv_storage_commits_total");
    // A first write's round blocks the writer on the lock; everything after it has to queue.
    let first = tokio::spawn({
        let url = node.url("/fekv/first");
        async move { put(&url, "v").await.status }
    });
    eventually(Duration::from_secs(10), "the first write to reach the raftstore", || async {
        metric(&get(&node.url("/metrics")).await.text(), "fekv_raftstore_proposals_total") >= 1.0
    })
    .await;
    let writes: Vec<_> = (0..64)
        .map(|i| {
            let url = node.url(&format!("/fekv/g{i}"));
            tokio::spawn(async move { put(&url, "v").await.status })
        })
        .collect();
    eventually(Duration::from_secs(10), "64 more writes proposed", || async {
        let proposed = metric(&get(&node.url("/metrics")).await.text(), "fekv_raftstore_proposals_total");
        if proposed >= 65.0 {
            Ok(())
        } else {
            Err(format!("{proposed} proposed"))
        }
    })
    .await;
    release_tx.send(()).unwrap();
    assert_eq!(first.await.unwrap(), StatusCode::OK);
    for write in writes {
        assert_eq!(write.await.unwrap(), StatusCode::OK);
    }
    lock_holder.join().unwrap();
    let text = get(&node.url("/metrics")).await.text();
    let commits = metric(&text, "fekv_storage_commits_total") - commits_before;
    // The first write's commit, then one for every round queued behind it; rounds past the writer's
    // limit (`MAX_ROUNDS_IN_FLIGHT`) wait in raft and may make one more.
    assert!((2.0..=3.0).contains(&commits), "1 + 64 queued writes took {commits} commits");
    assert!(metric(&text, "fekv_storage_proposals_per_commit_sum") >= 64.0);
    let commits_before = commits_before + commits;
    // After a commit of 64, a round holding one write waits for more writers (batch_gate), but only
    // while they keep coming: a lone write still gets a commit of its own. (How long the gate may wait
    // is batch_gate's unit tests' business; a wall-clock bound here would only measure the machine.)
    assert_eq!(put(&node.url("/fekv/lone"), "v").await.status, StatusCode::OK);
    let text = get(&node.url("/metrics")).await.text();
    assert_eq!(metric(&text, "fekv_storage_commits_total") - commits_before, 1.0);
    node.stop().await;
}

/// A raftstore whose writer cannot commit (here: LMDB's write lock is held elsewhere) makes a write
/// wait at most `request_timeout`, then `504` (its outcome is unknown). A read does not wait behind the
/// writer at all, nor does the raftstore thread: on a region whose only member is this node, LMDB already holds every acknowledged
/// write, so the read is answered at once (the stuck write was never acknowledged: 404). Nothing hangs,
/// and the write lands once the store moves again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_raftstore_answers_504_for_writes_and_reads_do_not_wait_behind_it() {
    let node = TestNode::start(|c| {
        c.request_timeout = Duration::from_millis(500);
        // Every round through the writer thread (a lone write is otherwise committed inline).
        c.raftstore_inline_commit = false;
    })
    .await;
    let (release_tx, lock_holder) = hold_write_lock(node.node().engine().clone());
    let started = std::time::Instant::now();
    let write = put(&node.url("/fekv/slow"), "v").await;
    assert_eq!(write.status, StatusCode::GATEWAY_TIMEOUT, "{}", write.text());
    assert_eq!(write.json()["error"], "proposal_timeout");
    assert!(write.text().contains("may or may not"), "{}", write.text());
    // The lock is still held here (released below), so a read that waited behind the stuck writer
    // could not have been answered at all: its answer is the proof, no wall-clock bound needed.
    let read = get(&node.url("/fekv/slow")).await;
    assert_eq!(read.status, StatusCode::NOT_FOUND, "{}", read.text());
    // Only the writer thread waits for the lock: the raftstore thread goes on (issue 15, item 3),
    // and answers what asks it, here the status of its regions.
    let status = get(&node.url("/status")).await;
    assert_eq!(status.status, StatusCode::OK, "{}", status.text());
    assert_eq!(status.json()["regions"][0]["region_id"], 1, "{}", status.text());
    // The write gave up after its 500 ms request timeout, long before the lock holder's 20 s.
    assert!(started.elapsed() < Duration::from_secs(10), "took {:?}", started.elapsed());
    release_tx.send(()).unwrap();
    lock_holder.join().unwrap();
    // The timed-out write was proposed; once the store moves, it is applied.
    let slow = eventually(Duration::from_secs(10), "the timed-out write applied", || async {
        let reply = get(&node.url("/fekv/slow")).await;
        if reply.status == StatusCode::OK {
            Ok(reply.text())
        } else {
            Err(reply.text())
        }
    })
    .await;
    assert_eq!(slow, "v");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_and_ready_answer() {
    let node = TestNode::start(|_| {}).await;
    let health = get(&node.url("/health")).await;
    assert_eq!((health.status, health.json()["health"].as_str()), (StatusCode::OK, Some("ok")));
    let ready = get(&node.url("/ready")).await;
    assert_eq!((ready.status, ready.json()["ready"].as_bool()), (StatusCode::OK, Some(true)));
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_map_is_507_and_reads_keep_working() {
    let node = TestNode::start(|c| {
        c.max_value_size = ByteSize::kib(64);
        c.map_size = ByteSize::mib(4);
        c.raft_log_gc_threshold = 8;
    })
    .await;
    let value = vec![b'v'; 60 * 1024];
    let mut stored = Vec::new();
    let full = loop {
        let key = format!("big{}", stored.len());
        let reply = put(&node.url(&format!("/fekv/{key}")), value.clone()).await;
        match reply.status {
            StatusCode::OK => stored.push(key),
            _ => break reply,
        }
        assert!(stored.len() < 200, "a 4 MiB map took 200 values of 60 KiB");
    };
    assert_eq!(full.status, StatusCode::INSUFFICIENT_STORAGE, "{}", full.text());
    assert_eq!(full.json()["error"], "storage_full");
    assert!(full.text().contains("map_size"), "{}", full.text());
    assert!(!stored.is_empty());
    for key in &stored {
        let reply = get(&node.url(&format!("/fekv/{key}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "{key}");
        assert_eq!(reply.body.len(), value.len());
    }
    // Deletes still work and make room again.
    for key in &stored {
        assert_eq!(delete(&node.url(&format!("/fekv/{key}"))).await.status, StatusCode::OK);
    }
    eventually(Duration::from_secs(10), "room after deleting everything", || async {
        let reply = put(&node.url("/fekv/after"), Bytes::from(value.clone())).await;
        if reply.status == StatusCode::OK {
            return Ok(());
        }
        // Log compaction (a tick away) frees the log's copies of the deleted values.
        put(&node.url("/fekv/tick"), "t").await;
        Err(reply.text())
    })
    .await;
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_a_restart_and_the_log_is_compacted() {
    let node = TestNode::start(|c| c.raft_log_gc_threshold = 16).await;
    for i in 0..100 {
        assert_eq!(put(&node.url(&format!("/fekv/r{i}")), format!("v{i}")).await.status, StatusCode::OK);
    }
    assert_eq!(delete(&node.url("/fekv/r7")).await.status, StatusCode::OK);
    let tag = get(&node.url("/fekv/r99")).await.header("etag").unwrap().to_string();
    // Idle, the leader compacts the log to within the threshold of what is applied.
    eventually(Duration::from_secs(10), "the log compacted", || async {
        let region = get(&node.url("/status")).await.json()["regions"][0].clone();
        let (applied, truncated) =
            (region["applied_index"].as_u64().unwrap(), region["truncated_index"].as_u64().unwrap());
        if applied - truncated <= 16 && truncated > 5 {
            Ok(())
        } else {
            Err(format!("applied {applied}, truncated {truncated}"))
        }
    })
    .await;
    let node = node.restart().await;
    for i in 0..100 {
        let reply = get(&node.url(&format!("/fekv/r{i}"))).await;
        if i == 7 {
            assert_eq!(reply.status, StatusCode::NOT_FOUND);
        } else {
            assert_eq!((reply.status, reply.text()), (StatusCode::OK, format!("v{i}")));
        }
    }
    assert_eq!(get(&node.url("/fekv/r99")).await.header("etag"), Some(tag.as_str()));
    assert_eq!(put(&node.url("/fekv/after-restart"), "x").await.status, StatusCode::OK);
    node.stop().await;
}

/// Decodes a scan response: (key as sent, value bytes) pairs and the `next` cursor.
fn scan_page(reply: &common::Reply) -> (Vec<(String, Vec<u8>)>, Option<String>) {
    use base64::Engine as _;
    let body = reply.json();
    let kvs = body["kvs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|kv| {
            let value = base64::engine::general_purpose::STANDARD.decode(kv["value"].as_str().unwrap()).unwrap();
            (kv["key"].as_str().unwrap().to_string(), value)
        })
        .collect();
    (kvs, body["next"].as_str().map(str::to_string))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scans_return_ranges_in_order_with_a_cursor() {
    let node = TestNode::start(|_| {}).await;
    for i in 0..25 {
        put(&node.url(&format!("/fekv/k{i:02}")), format!("v{i}")).await;
    }
    put(&node.url("/fekv/other"), "o").await;
    put(&node.url("/fekv/bin%00%ff"), vec![0u8, 1, 2]).await;
    // A prefix, page by page.
    let mut all = Vec::new();
    let mut url = node.url("/fekv?prefix=k&limit=10");
    let mut pages = 0;
    loop {
        let reply = get(&url).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text());
        let (kvs, next) = scan_page(&reply);
        assert!(kvs.len() <= 10);
        all.extend(kvs);
        pages += 1;
        match next {
            Some(next) => url = node.url(&format!("/fekv?start={next}&end=l&limit=10")),
            None => break,
        }
    }
    assert_eq!(pages, 3);
    let expected: Vec<(String, Vec<u8>)> =
        (0..25).map(|i| (format!("k{i:02}"), format!("v{i}").into_bytes())).collect();
    assert_eq!(all, expected);
    // start/end bounds; binary keys come back percent-encoded and values as bytes.
    let (kvs, next) = scan_page(&get(&node.url("/fekv?start=k05&end=k08")).await);
    assert_eq!(kvs.iter().map(|(k, _)| k.as_str()).collect::<Vec<_>>(), ["k05", "k06", "k07"]);
    assert_eq!(next, None);
    let (kvs, _) = scan_page(&get(&node.url("/fekv?prefix=bin")).await);
    assert_eq!(kvs, vec![("bin%00%FF".to_string(), vec![0u8, 1, 2])]);
    // The whole keyspace.
    let (kvs, _) = scan_page(&get(&node.url("/fekv?limit=1000")).await);
    assert_eq!(kvs.len(), 27);
    // Bad ranges and limits say what is wrong.
    for bad in ["/fekv?start=b&end=a", "/fekv?limit=0", "/fekv?limit=5000", "/fekv?prefix=a&start=b", "/fekv?start=%zz"]
    {
        let reply = get(&node.url(bad)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{bad}: {}", reply.text());
        assert_eq!(reply.json()["error"], "bad_query", "{bad}");
    }
    assert_eq!(request(Method::PUT, &node.url("/fekv"), "x", &[]).await.status, StatusCode::METHOD_NOT_ALLOWED);
    node.stop().await;
}
