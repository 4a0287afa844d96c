//! The raftstore's ports to the network: what it hands a transport ([`Transport`], [`RaftEnvelope`],
//! [`TransportError`]) and what a transport hands back goes into
//! [`super::inbox::RaftInbox`] (incoming raft messages, the outcome of snapshots this store sent,
//! peers found unreachable). The adapters in `crate::transport`
//! implement them; the raftstore knows no network.
//!
//! The raftstore hands every outgoing message to a [`Transport`] during its round and calls
//! [`Transport::flush`] at the end of the round, so an implementation can batch all regions' messages
//! to one store into one write. Delivery is best effort, as on a network: raft retries what is lost.

use protobuf::Message as _;
use raft::eraftpb;

use crate::proto::{Peer, RaftMessage, RegionEpoch};

/// A raft message with its routing information.
#[derive(Debug, Clone)]
pub struct RaftEnvelope {
    pub region_id: u64,
    pub from_peer: Peer,
    pub to_peer: Peer,
    pub region_epoch: RegionEpoch,
    pub message: eraftpb::Message,
    /// A reply telling `to_peer` it is no longer a member of the region (as of `region_epoch`).
    pub is_tombstone: bool,
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum TransportError {
    #[error("no address known for store {0}")]
    UnknownStore(u64),
    #[error("store {0} is unreachable")]
    Unreachable(u64),
    #[error("malformed raft message: {0}")]
    Malformed(String),
}

pub trait Transport: Send {
    /// Queues `msg` for the store of its `to_peer`; it leaves no later than the next `flush`.
    fn send(&mut self, msg: RaftEnvelope) -> Result<(), TransportError>;
    /// Sends everything queued since the last flush. Called once per raftstore round.
    fn flush(&mut self) {}
}

/// The transport of a store that has no peers: every send fails as unreachable.
pub struct Unconnected;

impl Transport for Unconnected {
    fn send(&mut self, msg: RaftEnvelope) -> Result<(), TransportError> {
        Err(TransportError::UnknownStore(msg.to_peer.store_id))
    }
}

impl RaftEnvelope {
    /// `message` of region `region_id` from `from_peer` to `to_peer`, under `region_epoch`.
    pub fn new(
        region_id: u64,
        from_peer: Peer,
        to_peer: Peer,
        region_epoch: RegionEpoch,
        message: eraftpb::Message,
    ) -> RaftEnvelope {
        RaftEnvelope { region_id, from_peer, to_peer, region_epoch, message, is_tombstone: false }
    }

    /// A message telling `to_peer` it is no longer a member of `region_id`, as of `region_epoch`.
    pub fn tombstone(region_id: u64, from_peer: Peer, to_peer: Peer, region_epoch: RegionEpoch) -> RaftEnvelope {
        RaftEnvelope {
            is_tombstone: true,
            ..RaftEnvelope::new(region_id, from_peer, to_peer, region_epoch, eraftpb::Message::default())
        }
    }

    /// The wire form: our prost envelope around raft's rust-protobuf message.
    pub fn to_proto(&self) -> RaftMessage {
        RaftMessage {
            region_id: self.region_id,
            from_peer: Some(self.from_peer),
            to_peer: Some(self.to_peer),
            region_epoch: Some(self.region_epoch),
            message: self.message.write_to_bytes().expect("encoding an in-memory raft message cannot fail"),
            is_tombstone: self.is_tombstone,
        }
    }

    pub fn from_proto(msg: RaftMessage) -> Result<RaftEnvelope, TransportError> {
        let missing = |what: &str| TransportError::Malformed(format!("{what} missing"));
        Ok(RaftEnvelope {
            region_id: msg.region_id,
            from_peer: msg.from_peer.ok_or_else(|| missing("from_peer"))?,
            to_peer: msg.to_peer.ok_or_else(|| missing("to_peer"))?,
            region_epoch: msg.region_epoch.unwrap_or_default(),
            message: eraftpb::Message::parse_from_bytes(&msg.message)
                .map_err(|e| TransportError::Malformed(e.to_string()))?,
            is_tombstone: msg.is_tombstone,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message as _;

    #[test]
    fn envelopes_round_trip_through_the_wire_form() {
        let mut message = eraftpb::Message::default();
        message.set_msg_type(eraftpb::MessageType::MsgAppend);
        message.term = 7;
        message.entries =
            vec![eraftpb::Entry { index: 9, term: 7, data: b"cmd".to_vec().into(), ..Default::default() }].into();
        let envelope = RaftEnvelope::new(
            3,
            Peer { peer_id: 1, store_id: 1 },
            Peer { peer_id: 2, store_id: 2 },
            RegionEpoch { conf_ver: 1, version: 2 },
            message,
        );
        let back =
            RaftEnvelope::from_proto(RaftMessage::decode(envelope.to_proto().encode_to_vec().as_slice()).unwrap())
                .unwrap();
        assert_eq!(back.message, envelope.message);
        assert_eq!((back.region_id, back.from_peer, back.to_peer), (3, envelope.from_peer, envelope.to_peer));
        assert!(RaftEnvelope::from_proto(RaftMessage { message: vec![0xff, 0xff], ..envelope.to_proto() }).is_err());
    }
}
