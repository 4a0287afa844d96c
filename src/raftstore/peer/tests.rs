//! A peer driven by hand: messages stepped straight into its raft, no store loop around it.

use std::sync::Arc;

use raft::eraftpb::{Message, MessageType};

use super::{Peer, PeerConfig};
use crate::metrics::Metrics;
use crate::proto::{Region, RegionEpoch};
use crate::raftstore::error::Error;
use crate::raftstore::peer_storage::PeerStorage;
use crate::storage::{Engine, EngineOptions};

/// Store 1's peer (peer 1) of a region whose other member is peer 2 on store 2.
fn peer_of_two(dir: &std::path::Path) -> Peer {
    let engine = Engine::open(dir, &EngineOptions::for_tests()).expect("an engine");
    let peers = vec![crate::proto::Peer { peer_id: 1, store_id: 1 }, crate::proto::Peer { peer_id: 2, store_id: 2 }];
    let region =
        Region { region_id: 1, epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }), peers, ..Default::default() };
    let mut txn = engine.write_txn().expect("a transaction");
    PeerStorage::write_initial_state(&engine, &mut txn, &region).expect("the initial state");
    engine.commit(txn).expect("a commit");
    let cfg = PeerConfig { election_ticks: 10, heartbeat_ticks: 2, log_gc_threshold: 1000 };
    Peer::load(engine, region, 1, cfg, Arc::new(Metrics::new()), &crate::logging::raft_logger()).expect("a peer")
}

fn from_peer_2(msg_type: MessageType, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(msg_type);
    m.from = 2;
    m.to = 1;
    m.term = term;
    m
}

/// Makes peer 1 the leader (peer 2 grants the pre-vote and the vote), and lets the peer see it in a
/// ready, as a store round would.
fn elect(peer: &mut Peer) {
    peer.raw.campaign().expect("a campaign");
    let term = peer.raw.raft.term;
    peer.raw.step(from_peer_2(MessageType::MsgRequestPreVoteResponse, term + 1)).expect("the pre-vote");
    let term = peer.raw.raft.term;
    peer.raw.step(from_peer_2(MessageType::MsgRequestVoteResponse, term)).expect("the vote");
    assert!(peer.is_leader());
    drop(peer.take_ready());
    assert_eq!(peer.leader_id, 1, "the ready told the peer it leads");
}

/// A leader that hears of a higher term steps down at once, before the round's ready tells the peer:
/// a write in the same round must name the new leader, not this store, or the API answers `503`
/// "the leader is on this store" instead of redirecting.
#[tokio::test]
async fn a_leader_that_just_stepped_down_names_the_new_leader() {
    let dir = tempfile::tempdir().expect("a dir");
    let mut peer = peer_of_two(dir.path());
    elect(&mut peer);
    let term = peer.raw.raft.term;
    peer.raw.step(from_peer_2(MessageType::MsgHeartbeat, term + 1)).expect("the heartbeat");
    assert!(!peer.is_leader());
    let (callback, answer) = tokio::sync::oneshot::channel();
    peer.on_write(Vec::new(), callback);
    let answer = answer.await.expect("an answer");
    assert!(
        matches!(answer, Err(Error::NotLeader { leader_store_id: Some(2), .. })),
        "the write was answered {:?}",
        answer.map(|_| ())
    );
}
