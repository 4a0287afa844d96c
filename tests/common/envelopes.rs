//! Raft messages built by hand, as a region's leader would send them: for tests that play a peer
//! the cluster does not run (a leader of a store that does not exist, a late or stale message).

use fekv::proto::{Peer, Region};
use fekv::raftstore::transport::RaftEnvelope;

/// A raft message of `region` as a peer would send it: from `from` to `to`, under `region`'s epoch.
pub fn raft_envelope(region: &Region, from: Peer, to: Peer, message: raft::eraftpb::Message) -> RaftEnvelope {
    RaftEnvelope::new(region.region_id, from, to, region.epoch.unwrap_or_default(), message)
}

/// A leader's snapshot of `region` (no keys) at (`index`, `term`), from `from` to `to`.
pub fn snapshot_envelope(region: Region, from: Peer, to: Peer, index: u64, term: u64) -> RaftEnvelope {
    snapshot_envelope_with(region, from, to, (index, term), Vec::new())
}

/// A leader's snapshot of `region` holding `kvs`, at `(index, term)`, from `from` to `to`.
pub fn snapshot_envelope_with(
    region: Region,
    from: Peer,
    to: Peer,
    (index, term): (u64, u64),
    kvs: Vec<fekv::proto::SnapshotKv>,
) -> RaftEnvelope {
    let voters = region.peers.iter().map(|p| p.peer_id).collect();
    let data = fekv::raftstore::snapshot::encode(region.clone(), kvs);
    let mut snapshot = raft::eraftpb::Snapshot { data: data.into(), ..Default::default() };
    snapshot.mut_metadata().index = index;
    snapshot.mut_metadata().term = term;
    snapshot.mut_metadata().mut_conf_state().voters = voters;
    let mut message = raft::eraftpb::Message::default();
    message.set_msg_type(raft::eraftpb::MessageType::MsgSnapshot);
    (message.from, message.to, message.term) = (from.peer_id, to.peer_id, term);
    message.set_snapshot(snapshot);
    raft_envelope(&region, from, to, message)
}

/// A leader's heartbeat of `region` in `term`, carrying `commit`, from `from` to `to`.
pub fn heartbeat_envelope(region: &Region, from: Peer, to: Peer, term: u64, commit: u64) -> RaftEnvelope {
    let mut message = raft::eraftpb::Message::default();
    message.set_msg_type(raft::eraftpb::MessageType::MsgHeartbeat);
    (message.from, message.to, message.term, message.commit) = (from.peer_id, to.peer_id, term, commit);
    raft_envelope(region, from, to, message)
}
