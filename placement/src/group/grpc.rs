//! Raft between the members over gRPC (`PlacementRaft.Step` in `proto/placement_group.proto`), on
//! the placement's own listener and with its TLS. Outgoing: one task per other member sends its
//! messages in batches, in order, over one channel; what cannot be sent is dropped (raft sends it
//! again) and reported to the driver, so the leader probes that member instead of streaming to it.
//! Incoming: [`RaftService`] steps every message into the driver.

use std::collections::HashMap;
use std::sync::Arc;

use protobuf::Message as _;
use raft::eraftpb::{Message, MessageType};
use tokio::sync::mpsc;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use super::{Inbox, Input, RaftTransport};
use crate::proto::placement_raft_client::PlacementRaftClient;
use crate::proto::placement_raft_server::{PlacementRaft, PlacementRaftServer};
use crate::proto::{PlacementRaftAck, PlacementRaftBatch};

/// Snapshots carry every record: allow them well past tonic's 4 MiB default.
const MAX_MESSAGE: usize = 256 << 20;
/// Messages queued for one member before more are dropped (it is down or slow).
const QUEUE: usize = 4096;
/// Messages sent in one call.
const BATCH: usize = 256;

/// Makes the channel to a member's address (`host:port`), with or without TLS, connecting on first
/// use.
pub type Connect = Arc<dyn Fn(&str) -> Result<Channel, String> + Send + Sync>;

/// A plain-TCP channel to `addr`.
pub fn plain(addr: &str) -> Result<Channel, String> {
    let endpoint = tonic::transport::Endpoint::from_shared(format!("http://{addr}")).map_err(|e| e.to_string())?;
    Ok(endpoint
        .connect_timeout(std::time::Duration::from_secs(1))
        .timeout(std::time::Duration::from_secs(5))
        .connect_lazy())
}

pub struct GrpcTransport {
    queues: HashMap<u64, mpsc::Sender<Message>>,
    inbox: Inbox,
}

impl GrpcTransport {
    /// Starts a sender task per other member on `runtime`.
    pub fn start(
        runtime: &tokio::runtime::Handle,
        member_id: u64,
        members: &[String],
        connect: &Connect,
        inbox: Inbox,
    ) -> GrpcTransport {
        let mut queues = HashMap::new();
        for (index, addr) in members.iter().enumerate() {
            let id = index as u64 + 1;
            if id == member_id {
                continue;
            }
            let channel = match connect(addr) {
                Ok(channel) => channel,
                Err(err) => {
                    // Nothing will reach it: it counts as down, and the others can still form a quorum.
                    tracing::error!(member = id, %addr, error = %err, "cannot address a placement member");
                    continue;
                }
            };
            let client = PlacementRaftClient::new(channel)
                .max_decoding_message_size(MAX_MESSAGE)
                .max_encoding_message_size(MAX_MESSAGE);
            let (tx, rx) = mpsc::channel(QUEUE);
            runtime.spawn(send_loop(id, client, rx, inbox.clone()));
            queues.insert(id, tx);
        }
        GrpcTransport { queues, inbox }
    }
}

impl RaftTransport for GrpcTransport {
    fn send(&mut self, messages: Vec<Message>) {
        for message in messages {
            let to = message.to;
            let Some(queue) = self.queues.get(&to) else { continue };
            if queue.try_send(message).is_err() {
                self.inbox.send(Input::Unreachable(to));
            }
        }
    }
}

async fn send_loop(to: u64, mut client: PlacementRaftClient<Channel>, mut rx: mpsc::Receiver<Message>, inbox: Inbox) {
    let mut batch = Vec::with_capacity(BATCH);
    while rx.recv_many(&mut batch, BATCH).await > 0 {
        let snapshots = batch.iter().filter(|m| m.get_msg_type() == MessageType::MsgSnapshot).count();
        let mut messages = Vec::with_capacity(batch.len());
        for message in batch.drain(..) {
            match message.write_to_bytes() {
                Ok(bytes) => messages.push(bytes),
                Err(err) => tracing::error!(error = %err, "cannot encode a placement raft message"),
            }
        }
        let sent = client.step(PlacementRaftBatch { messages }).await;
        if let Err(status) = &sent {
            tracing::debug!(to, error = %status.message(), "placement raft messages not delivered");
            if !inbox.send(Input::Unreachable(to)) {
                return;
            }
        }
        for _ in 0..snapshots {
            inbox.send(Input::Snapshot { to, sent: sent.is_ok() });
        }
    }
}

/// The receiving end: steps what other members send into this replica's driver.
pub struct RaftService {
    inbox: Inbox,
}

impl RaftService {
    pub fn server(inbox: Inbox) -> PlacementRaftServer<RaftService> {
        PlacementRaftServer::new(RaftService { inbox })
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE)
    }
}

#[tonic::async_trait]
impl PlacementRaft for RaftService {
    async fn step(&self, req: Request<PlacementRaftBatch>) -> Result<Response<PlacementRaftAck>, Status> {
        for bytes in req.into_inner().messages {
            let message: Message = Message::parse_from_bytes(&bytes)
                .map_err(|e| Status::invalid_argument(format!("not a raft message: {e}")))?;
            if !self.inbox.send(Input::Step(message)) {
                return Err(Status::unavailable("this placement replica has stopped"));
            }
        }
        Ok(Response::new(PlacementRaftAck {}))
    }
}
