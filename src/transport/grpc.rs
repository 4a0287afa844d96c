//! The gRPC transport between stores (tonic): one long-lived client stream per remote store carrying
//! batches of raft messages of every region (one batch per store per raftstore round), and a separate
//! streaming RPC per snapshot, cut into checksummed chunks, so a big snapshot never delays heartbeats.
//!
//! Sending never blocks the raftstore: batches go into a bounded queue per store, drained by a tokio
//! task that (re)connects as needed. Messages that cannot be delivered are reported back to the
//! store (`PeerUnreachable`, `SnapshotStatus`), which tells raft.
//!
//! Trust boundary: without peer TLS this listens for any store of the cluster and authenticates
//! nothing; expose the raft address only to the cluster's own machines. With it (`--peer-*` flags),
//! the listener takes only connections with a certificate of the cluster's CA and connections go out
//! over the same mutual TLS ([`GrpcTransport::with_tls`]). What a snapshot sender can make the
//! receiver hold is bounded all the same ([`receive`]).

mod first_byte;
mod receive;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use prost::Message as _;
use raft::eraftpb::MessageType;
use raft::SnapshotStatus;
use tokio::sync::mpsc;
use tonic::{Request, Response, Status, Streaming};

pub use crate::cluster_link::AddressBook;
use crate::proto::raft_transport_client::RaftTransportClient;
use crate::proto::raft_transport_server::{RaftTransport, RaftTransportServer};
use crate::proto::{Done, RaftMessage, RaftMessageBatch, SnapshotChunk};
use crate::raftstore::inbox::{RaftInbox, Refused};
use crate::raftstore::transport::{RaftEnvelope, Transport, TransportError};
use crate::security::tls::{self, ClientTls};
pub use first_byte::{incoming, FirstByteDeadline, FIRST_BYTE_TIMEOUT};
pub use receive::{SnapshotLimits, SnapshotReceiver, MEMORY_CAP as SNAPSHOT_MEMORY_CAP};

/// Bytes of snapshot per chunk.
const SNAPSHOT_CHUNK: usize = 1 << 20;
/// Batches waiting for one store's stream; when full, the round's batch is dropped (raft resends).
const STREAM_QUEUE: usize = 256;

pub struct GrpcTransport {
    runtime: tokio::runtime::Handle,
    addresses: Arc<AddressBook>,
    /// This store's own inbox, for reporting failures back to raft.
    own_inbox: RaftInbox,
    streams: HashMap<u64, mpsc::Sender<RaftMessageBatch>>,
    pending: HashMap<u64, Vec<RaftMessage>>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Peer TLS for the connections to other stores; `None`: plain gRPC.
    tls: Option<Arc<ClientTls>>,
}

impl GrpcTransport {
    pub fn new(
        runtime: tokio::runtime::Handle,
        addresses: Arc<AddressBook>,
        own_inbox: impl Into<RaftInbox>,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> GrpcTransport {
        GrpcTransport {
            runtime,
            addresses,
            own_inbox: own_inbox.into(),
            streams: HashMap::new(),
            pending: HashMap::new(),
            metrics,
            tls: None,
        }
    }

    /// Connects to other stores over mutual TLS with this configuration.
    pub fn with_tls(self, tls: Option<Arc<ClientTls>>) -> GrpcTransport {
        GrpcTransport { tls, ..self }
    }
}

impl Transport for GrpcTransport {
    fn send(&mut self, msg: RaftEnvelope) -> Result<(), TransportError> {
        let to_store = msg.to_peer.store_id;
        let Some(store) = self.addresses.get(to_store) else {
            return Err(TransportError::UnknownStore(to_store));
        };
        if msg.message.get_msg_type() == MessageType::MsgSnapshot {
            let inbox = self.own_inbox.clone();
            self.runtime.spawn(send_snapshot(store.raft_addr, msg, inbox, self.tls.clone()));
            return Ok(());
        }
        self.pending.entry(to_store).or_default().push(msg.to_proto());
        Ok(())
    }

    fn flush(&mut self) {
        for (store_id, msgs) in self.pending.drain() {
            if msgs.is_empty() {
                continue;
            }
            self.metrics.transport_batch_messages.observe(msgs.len() as f64);
            self.metrics.transport_batch_bytes.observe(msgs.iter().map(|m| m.encoded_len()).sum::<usize>() as f64);
            let stream = self.streams.entry(store_id).or_insert_with(|| {
                let (tx, rx) = mpsc::channel(STREAM_QUEUE);
                let tls = self.tls.clone();
                self.runtime.spawn(run_stream(store_id, self.addresses.clone(), rx, self.own_inbox.clone(), tls));
                tx
            });
            if let Err(err) = stream.try_send(RaftMessageBatch { msgs }) {
                let batch = match err {
                    mpsc::error::TrySendError::Full(batch) => batch,
                    mpsc::error::TrySendError::Closed(batch) => {
                        self.streams.remove(&store_id);
                        batch
                    }
                };
                report_unreachable(&self.own_inbox, &batch);
            }
        }
    }
}

fn report_unreachable(inbox: &RaftInbox, batch: &RaftMessageBatch) {
    let mut reported = std::collections::HashSet::new();
    for msg in &batch.msgs {
        let to_peer_id = msg.to_peer.map_or(0, |p| p.peer_id);
        if reported.insert((msg.region_id, to_peer_id)) {
            inbox.peer_unreachable(msg.region_id, to_peer_id);
        }
    }
}

/// Keeps one client stream to `store_id` open, feeding it the batches queued for that store.
async fn run_stream(
    store_id: u64,
    addresses: Arc<AddressBook>,
    mut batches: mpsc::Receiver<RaftMessageBatch>,
    own_inbox: RaftInbox,
    tls: Option<Arc<ClientTls>>,
) {
    let mut backoff = Duration::from_millis(50);
    loop {
        // Wait for something to send before (re)connecting.
        let Some(first) = batches.recv().await else { return };
        let Some(addr) = addresses.get(store_id).map(|s| s.raft_addr) else {
            report_unreachable(&own_inbox, &first);
            continue;
        };
        let mut client = match connect(&addr, tls.as_ref()).await {
            Ok(client) => client,
            Err(err) => {
                tracing::debug!(store_id, %addr, error = %err, "cannot connect to store");
                report_unreachable(&own_inbox, &first);
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
                // Drop what queued up meanwhile: it is stale, and raft will resend.
                while let Ok(batch) = batches.try_recv() {
                    report_unreachable(&own_inbox, &batch);
                }
                continue;
            }
        };
        backoff = Duration::from_millis(50);
        let (conn_tx, conn_rx) = mpsc::channel::<RaftMessageBatch>(STREAM_QUEUE);
        let _ = conn_tx.send(first).await;
        let mut call =
            tokio::spawn(async move { client.raft(tokio_stream::wrappers::ReceiverStream::new(conn_rx)).await });
        loop {
            tokio::select! {
                batch = batches.recv() => match batch {
                    Some(batch) => {
                        if let Err(mpsc::error::SendError(batch)) = conn_tx.send(batch).await {
                            report_unreachable(&own_inbox, &batch);
                            break;
                        }
                    }
                    None => return,
                },
                ended = &mut call => {
                    tracing::debug!(store_id, result = ?ended.map(|r| r.map(drop)), "raft stream ended; reconnecting");
                    break;
                }
            }
        }
    }
}

/// A client of the raft transport at `addr`, plain or over peer TLS.
async fn connect(
    addr: &str,
    tls: Option<&Arc<ClientTls>>,
) -> Result<RaftTransportClient<tonic::transport::Channel>, tonic::transport::Error> {
    let endpoint = tls::grpc::endpoint(addr, tls)?;
    Ok(RaftTransportClient::new(tls::grpc::connect(&endpoint, tls).await?))
}

/// Sends one snapshot on its own stream and reports the outcome to raft.
async fn send_snapshot(addr: String, msg: RaftEnvelope, own_inbox: RaftInbox, tls: Option<Arc<ClientTls>>) {
    let (region_id, to_peer_id) = (msg.region_id, msg.to_peer.peer_id);
    let bytes = msg.to_proto().encode_to_vec();
    let total_crc = crc32c::crc32c(&bytes);
    let count = bytes.len().div_ceil(SNAPSHOT_CHUNK).max(1);
    let chunks: Vec<SnapshotChunk> = (0..count)
        .map(|i| {
            let data = bytes[i * SNAPSHOT_CHUNK..((i + 1) * SNAPSHOT_CHUNK).min(bytes.len())].to_vec();
            let last = i + 1 == count;
            SnapshotChunk {
                chunk_crc: crc32c::crc32c(&data),
                data,
                last,
                total_crc: if last { total_crc } else { 0 },
                // On every chunk: the receiver checks it against its limit before buffering anything.
                total_len: bytes.len() as u64,
            }
        })
        .collect();
    let result = tokio::time::timeout(Duration::from_secs(120), async {
        let mut client = connect(&addr, tls.as_ref()).await.map_err(|e| e.to_string())?;
        client.snapshot(tokio_stream::iter(chunks)).await.map_err(|e| e.to_string())
    })
    .await;
    let status = match result {
        Ok(Ok(_)) => SnapshotStatus::Finish,
        Ok(Err(err)) => {
            tracing::warn!(region_id, to_peer_id, %addr, error = %err, "snapshot send failed");
            SnapshotStatus::Failure
        }
        Err(_) => {
            tracing::warn!(region_id, to_peer_id, %addr, "snapshot send timed out");
            SnapshotStatus::Failure
        }
    };
    own_inbox.snapshot_status(region_id, to_peer_id, status);
}

/// The receiving side: hands every message to the local store's inbox.
pub struct RaftTransportService {
    inbox: RaftInbox,
    snapshots: SnapshotReceiver,
}

impl RaftTransportService {
    pub fn new(inbox: impl Into<RaftInbox>, limits: SnapshotLimits) -> RaftTransportServer<RaftTransportService> {
        let service = RaftTransportService { inbox: inbox.into(), snapshots: SnapshotReceiver::new(limits) };
        RaftTransportServer::new(service).max_decoding_message_size(64 << 20)
    }
}

/// Hands `msg` to the store. A full inbox drops it, as a congested network would (raft resends); the
/// error says why it did not arrive, for a snapshot's sender.
fn deliver(inbox: &RaftInbox, msg: RaftMessage) -> Result<(), Status> {
    let envelope = RaftEnvelope::from_proto(msg).map_err(|err| {
        tracing::warn!(error = %err, "dropping a malformed raft message");
        Status::invalid_argument(err.to_string())
    })?;
    inbox.deliver(envelope).map_err(|refused| match refused {
        Refused::Full => Status::unavailable(refused.to_string()),
        Refused::DamagedSnapshot { .. } => Status::data_loss(refused.to_string()),
    })
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    async fn raft(&self, request: Request<Streaming<RaftMessageBatch>>) -> Result<Response<Done>, Status> {
        let mut stream = request.into_inner();
        while let Some(batch) = stream.message().await? {
            for msg in batch.msgs {
                // Best effort, as on a network: what is lost here, raft sends again.
                let _ = deliver(&self.inbox, msg);
            }
        }
        Ok(Response::new(Done {}))
    }

    async fn snapshot(&self, request: Request<Streaming<SnapshotChunk>>) -> Result<Response<Done>, Status> {
        let msg = self.snapshots.receive(&mut request.into_inner()).await?;
        // Verifying a large snapshot takes a while: off the async workers. The sender hears whether
        // it arrived intact, and tells its raft.
        let inbox = self.inbox.clone();
        let delivered = tokio::task::spawn_blocking(move || deliver(&inbox, msg));
        delivered.await.map_err(|err| Status::internal(format!("snapshot delivery failed: {err}")))??;
        Ok(Response::new(Done {}))
    }
}
