//! The receiving end of snapshot streams against the real gRPC service on 127.0.0.1: each bound a
//! receiver keeps (total length, concurrent streams, stalled streams, memory), and that a sender
//! refused by them tells raft its snapshot failed.

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;
use fekv::metrics::Metrics;
use fekv::proto::raft_transport_client::RaftTransportClient;
use fekv::proto::{Peer, Region, RegionEpoch, SnapshotChunk, SnapshotKv, StoreInfo};
use fekv::raftstore::inbox::RaftInbox;
use fekv::raftstore::msg::StoreMsg;
use fekv::raftstore::snapshot::VerifiedSnapshot;
use fekv::raftstore::transport::{RaftEnvelope, Transport};
use fekv::transport::grpc::{AddressBook, GrpcTransport, RaftTransportService, SnapshotLimits, SNAPSHOT_MEMORY_CAP};
use prost::Message as _;
use tokio::sync::mpsc;
use tonic::transport::Channel;

use common::wait::{eventually, eventually_sync, Watchdog};

const MIB: usize = 1 << 20;
const FIRST_BYTE_WITHIN: Duration = Duration::from_secs(1);

struct ReceivingStore {
    addr: String,
    inbox: Receiver<StoreMsg>,
    /// Damaged snapshots the inbox refused.
    refused: prometheus::IntCounter,
    spill_dir: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _watchdog: Watchdog,
}

/// A store's raft transport service on an ephemeral port, with these limits.
async fn serve(max_size: u64, max_receiving: usize, idle_timeout: Duration) -> ReceivingStore {
    let dir = tempfile::tempdir().unwrap();
    let spill_dir = dir.path().join("snapshots-incoming");
    let (inbox_tx, inbox) = crossbeam_channel::bounded(64);
    let limits = SnapshotLimits { max_size, max_receiving, idle_timeout, spill_dir: spill_dir.clone() };
    let refused = prometheus::IntCounter::new("refused", "damaged snapshots refused").unwrap();
    let service = RaftTransportService::new(RaftInbox::counting(inbox_tx, refused.clone()), limits);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // The node's own incoming, with a short first-byte deadline (real clients send at once).
    let incoming = fekv::transport::grpc::incoming(listener, FIRST_BYTE_WITHIN);
    tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming));
    ReceivingStore { addr, inbox, refused, spill_dir, _dir: dir, _watchdog: Watchdog::default() }
}

/// A snapshot message of region 7 for peer 2 on store 2, holding one record of `size` bytes.
fn snapshot_envelope(size: usize) -> RaftEnvelope {
    let (from, to) = (Peer { peer_id: 1, store_id: 1 }, Peer { peer_id: 2, store_id: 2 });
    let epoch = Some(RegionEpoch { conf_ver: 1, version: 1 });
    let region = Region { region_id: 7, epoch, peers: vec![from, to], ..Default::default() };
    let value = (0..size).map(|i| (i % 251) as u8).collect();
    let kv = SnapshotKv { key: b"k".to_vec(), value, revision: 9 };
    common::envelopes::snapshot_envelope_with(region, from, to, (12, 3), vec![kv])
}

/// `bytes` cut into 1 MiB chunks as a sender cuts them (every chunk announces the total length).
fn chunks(bytes: &[u8]) -> Vec<SnapshotChunk> {
    let pieces: Vec<&[u8]> = bytes.chunks(MIB).collect();
    pieces
        .iter()
        .enumerate()
        .map(|(i, data)| {
            let last = i + 1 == pieces.len();
            SnapshotChunk {
                data: data.to_vec(),
                chunk_crc: crc32c::crc32c(data),
                last,
                total_crc: if last { crc32c::crc32c(bytes) } else { 0 },
                total_len: bytes.len() as u64,
            }
        })
        .collect()
}

/// Opens a snapshot stream whose chunks the test feeds by hand; the call's outcome comes back on
/// the join handle.
async fn open_stream(addr: &str) -> (mpsc::Sender<SnapshotChunk>, tokio::task::JoinHandle<Result<(), tonic::Status>>) {
    let mut client: RaftTransportClient<Channel> =
        RaftTransportClient::connect(format!("http://{addr}")).await.unwrap();
    let (tx, rx) = mpsc::channel(16);
    let call =
        tokio::spawn(async move { client.snapshot(tokio_stream::wrappers::ReceiverStream::new(rx)).await.map(drop) });
    (tx, call)
}

async fn outcome(call: tokio::task::JoinHandle<Result<(), tonic::Status>>) -> Result<(), tonic::Status> {
    tokio::time::timeout(Duration::from_secs(10), call).await.expect("the call ends within 10s").unwrap()
}

fn dir_bytes(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| entries.flatten().map(|e| e.metadata().map_or(0, |m| m.len())).sum())
}

/// Waits (at most 10 s) until receives have spilled at least `bytes` into `dir`.
async fn wait_spilled(dir: &Path, bytes: u64) {
    eventually(Duration::from_secs(10), &format!("{bytes} bytes spilled"), || async {
        let spilled = dir_bytes(dir);
        if spilled >= bytes {
            Ok(())
        } else {
            Err(format!("{spilled} bytes spilled"))
        }
    })
    .await;
}

/// Waits (at most 10 s) for the store inbox to receive a message `accept` takes.
fn wait_inbox<T>(inbox: &Receiver<StoreMsg>, what: &str, accept: impl Fn(StoreMsg) -> Option<T>) -> T {
    eventually_sync(Duration::from_secs(10), what, || match inbox.try_recv() {
        Ok(msg) => accept(msg).ok_or_else(|| "another message".to_string()),
        Err(err) => Err(err.to_string()),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snapshot_over_the_size_limit_is_refused_before_anything_is_buffered() {
    let store = serve(8 * MIB as u64, 4, Duration::from_secs(10)).await;
    let (tx, call) = open_stream(&store.addr).await;
    let mut first = chunks(&vec![1u8; MIB])[0].clone();
    first.total_len = 200 * MIB as u64;
    first.last = false;
    tx.send(first).await.unwrap();
    let refused = outcome(call).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("snapshot_max_size"), "{refused}");
    assert_eq!(dir_bytes(&store.spill_dir), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_that_sends_more_than_it_announced_is_refused() {
    let store = serve(64 * MIB as u64, 4, Duration::from_secs(10)).await;
    let (tx, call) = open_stream(&store.addr).await;
    // Announces 1000 bytes, sends a MiB and says more is to come.
    let mut chunk = chunks(&vec![1u8; MIB])[0].clone();
    (chunk.total_len, chunk.last) = (1000, false);
    tx.send(chunk).await.unwrap();
    let refused = outcome(call).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::DataLoss, "{refused}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_stream_is_dropped_after_the_idle_timeout() {
    let store = serve(64 * MIB as u64, 1, Duration::from_millis(300)).await;
    let (tx, call) = open_stream(&store.addr).await;
    let bytes = vec![3u8; 3 * MIB];
    tx.send(chunks(&bytes)[0].clone()).await.unwrap();
    // The sender keeps the stream open and sends nothing more.
    let dropped = outcome(call).await.unwrap_err();
    assert_eq!(dropped.code(), tonic::Code::DeadlineExceeded, "{dropped}");
    drop(tx);
    // Its slot is free again: a whole snapshot now gets through.
    let envelope = snapshot_envelope(1000);
    let (tx, call) = open_stream(&store.addr).await;
    for chunk in chunks(&envelope.to_proto().encode_to_vec()) {
        tx.send(chunk).await.unwrap();
    }
    outcome(call).await.unwrap();
    wait_inbox(&store.inbox, "delivered snapshot", |msg| matches!(msg, StoreMsg::Snapshot(..)).then_some(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receives_beyond_the_limit_are_refused_and_their_sender_reports_a_failed_snapshot() {
    let store = serve(64 * MIB as u64, 1, Duration::from_secs(30)).await;
    // One stream under way holds the only slot. Which of two streams takes it is the order their
    // calls reach the service, not the order they were opened (each has its own connection), so the
    // second one is opened only once the first is seen receiving: it has spilled past the memory cap.
    let (held, held_call) = open_stream(&store.addr).await;
    let mut held_chunks = chunks(&vec![5u8; SNAPSHOT_MEMORY_CAP + 2 * MIB]);
    held_chunks.pop();
    for chunk in held_chunks {
        held.send(chunk).await.unwrap();
    }
    wait_spilled(&store.spill_dir, 1).await;
    let (tx, call) = open_stream(&store.addr).await;
    // The refusal may come before this chunk is sent, and close the stream it would go on: the
    // call's outcome says what happened either way.
    let _ = tx.send(chunks(&[6u8; 10])[0].clone()).await;
    let refused = outcome(call).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::ResourceExhausted, "{refused}");
    assert!(refused.message().contains("snapshot_max_receiving"), "{refused}");

    // A store sending a snapshot there hears that it failed, and tells raft.
    let (own_tx, own_inbox) = crossbeam_channel::bounded(16);
    let addresses = Arc::new(AddressBook::default());
    addresses.update(vec![StoreInfo { store_id: 2, raft_addr: store.addr.clone(), ..Default::default() }]);
    let mut sender = GrpcTransport::new(tokio::runtime::Handle::current(), addresses, own_tx, Arc::new(Metrics::new()));
    sender.send(snapshot_envelope(1000)).unwrap();
    sender.flush();
    let status = wait_inbox(&own_inbox, "snapshot status", |msg| match msg {
        StoreMsg::SnapshotStatus { region_id: 7, to_peer_id: 2, status } => Some(status),
        _ => None,
    });
    assert_eq!(status, raft::SnapshotStatus::Failure);

    // Once the held stream ends, the slot is free and the same send succeeds.
    drop(held);
    assert!(outcome(held_call).await.is_err());
    tokio::task::block_in_place(|| {
        eventually_sync(Duration::from_secs(10), "the snapshot to get through", || {
            sender.send(snapshot_envelope(1000)).unwrap();
            let status = wait_inbox(&own_inbox, "snapshot status", |msg| match msg {
                StoreMsg::SnapshotStatus { status, .. } => Some(status),
                _ => None,
            });
            if status == raft::SnapshotStatus::Finish {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        })
    });
    wait_inbox(&store.inbox, "delivered snapshot", |msg| matches!(msg, StoreMsg::Snapshot(..)).then_some(()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_big_snapshot_is_spilled_to_disk_while_it_streams_and_arrives_whole() {
    let store = serve(64 * MIB as u64, 4, Duration::from_secs(30)).await;
    let envelope = snapshot_envelope(12 * MIB);
    let encoded = envelope.to_proto().encode_to_vec();
    let mut pieces = chunks(&encoded);
    let last = pieces.pop().unwrap();
    let (tx, call) = open_stream(&store.addr).await;
    for chunk in pieces {
        tx.send(chunk).await.unwrap();
    }
    // Everything past the memory cap is on disk, not in the receiver's memory, while the stream is
    // incomplete.
    let beyond_cap = (encoded.len() - last.data.len() - SNAPSHOT_MEMORY_CAP) as u64;
    wait_spilled(&store.spill_dir, beyond_cap).await;
    tx.send(last).await.unwrap();
    outcome(call).await.unwrap();
    let delivered = wait_inbox(&store.inbox, "delivered snapshot", |msg| match msg {
        StoreMsg::Snapshot(_, snapshot) => Some(snapshot),
        _ => None,
    });
    let sent = VerifiedSnapshot::verify(envelope.message.get_snapshot()).unwrap();
    assert!(delivered.kvs == sent.kvs, "the snapshot's records arrive whole");
    assert_eq!(dir_bytes(&store.spill_dir), 0, "the spill file is deleted once the snapshot is delivered");
}

/// A snapshot damaged on the way (it passes the stream's checksums, not its own) is refused where it
/// is delivered: the store never sees it, the refusal is counted, and the sender hears it failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_snapshot_is_refused_at_the_inbox_and_its_sender_hears_it_failed() {
    let store = serve(64 * MIB as u64, 4, Duration::from_secs(10)).await;
    let mut damaged = snapshot_envelope(1000);
    let mut data = damaged.message.get_snapshot().get_data().to_vec();
    let middle = data.len() / 2;
    data[middle] ^= 0x5a;
    damaged.message.mut_snapshot().data = data.into();
    let (tx, call) = open_stream(&store.addr).await;
    for chunk in chunks(&damaged.to_proto().encode_to_vec()) {
        tx.send(chunk).await.unwrap();
    }
    drop(tx);
    let status = outcome(call).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::DataLoss, "{status}");
    assert_eq!(store.refused.get(), 1);
    assert!(store.inbox.try_recv().is_err(), "the store was handed a damaged snapshot");

    // An intact one on the same path reaches the store, verified.
    let (tx, call) = open_stream(&store.addr).await;
    for chunk in chunks(&snapshot_envelope(1000).to_proto().encode_to_vec()) {
        tx.send(chunk).await.unwrap();
    }
    drop(tx);
    outcome(call).await.unwrap();
    let snapshot = wait_inbox(&store.inbox, "delivered snapshot", |msg| match msg {
        StoreMsg::Snapshot(_, snapshot) => Some(snapshot),
        _ => None,
    });
    assert_eq!((snapshot.region.region_id, snapshot.index, snapshot.kvs[0].value.len()), (7, 12, 1000));
    assert_eq!(store.refused.get(), 1);
}

/// A connection to the raft port that sends nothing is closed at the first-byte deadline (it held a
/// descriptor for as long as it stayed open: enough of them starve the node), while a store's
/// connection, which speaks at once, carries its snapshot whole.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_sends_nothing_is_closed_at_the_first_byte_deadline() {
    use tokio::io::AsyncReadExt;
    let store = serve(64 * MIB as u64, 4, Duration::from_secs(30)).await;
    let mut silent: Vec<tokio::net::TcpStream> = Vec::new();
    for _ in 0..20 {
        silent.push(tokio::net::TcpStream::connect(&store.addr).await.unwrap());
    }
    let started = Instant::now();
    for stream in &mut silent {
        // The server speaks first (its HTTP/2 settings), then closes.
        let mut all = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut all)).await;
        assert!(read.is_ok(), "still open after 10 s, having sent {} bytes", all.len());
    }
    assert!(started.elapsed() < Duration::from_secs(5), "closed after {:?}", started.elapsed());
    let (tx, call) = open_stream(&store.addr).await;
    // Not a wait for anything: the stream deliberately outlives the deadline before its chunks go
    // (its preface went out at once, so the deadline no longer applies to it).
    tokio::time::sleep(FIRST_BYTE_WITHIN * 2).await;
    for chunk in chunks(&snapshot_envelope(1000).to_proto().encode_to_vec()) {
        tx.send(chunk).await.unwrap();
    }
    drop(tx);
    outcome(call).await.unwrap();
    wait_inbox(&store.inbox, "delivered snapshot", |msg| matches!(msg, StoreMsg::Snapshot(..)).then_some(()));
}
