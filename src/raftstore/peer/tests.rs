//! A peer driven by hand: messages stepped straight into its raft, no store loop around it.

use std::sync::Arc;

use raft::eraftpb::{Message, MessageType};

use super::{Peer, PeerConfig};
use crate::metrics::Metrics;
use crate::proto::{request, PutRequest, RaftApplyState, Region, RegionEpoch, Request};
use crate::raftstore::error::Error;
use crate::raftstore::peer_storage::{self, PeerStorage};
use crate::raftstore::snapshot::VerifiedSnapshot;
use crate::raftstore::transport::RaftEnvelope;
use crate::raftstore::write_task::LocalWrite;
use crate::storage::{Engine, EngineOptions};

/// Where a write's answer arrives.
type Answer = tokio::sync::oneshot::Receiver<Result<crate::raftstore::msg::WriteResponse, Error>>;

fn region_of_two() -> Region {
    let peers = vec![crate::proto::Peer { peer_id: 1, store_id: 1 }, crate::proto::Peer { peer_id: 2, store_id: 2 }];
    Region { region_id: 1, epoch: Some(RegionEpoch { conf_ver: 1, version: 1 }), peers, ..Default::default() }
}

/// An environment holding the region's initial state.
fn engine_with_region(dir: &std::path::Path) -> Engine {
    let engine = Engine::open(dir, &EngineOptions::for_tests()).expect("an engine");
    let mut txn = engine.write_txn().expect("a transaction");
    PeerStorage::write_initial_state(&engine, &mut txn, &region_of_two()).expect("the initial state");
    engine.commit(txn).expect("a commit");
    engine
}

/// Store 1's peer (peer 1) of a region whose other member is peer 2 on store 2.
fn peer_of_two(dir: &std::path::Path) -> Peer {
    let engine = engine_with_region(dir);
    let cfg = PeerConfig { election_ticks: 10, heartbeat_ticks: 2, log_gc_threshold: 1000 };
    let logger = crate::logging::raft_logger();
    Peer::load(engine, region_of_two(), 1, cfg, Arc::new(Metrics::new()), &logger).expect("a peer")
}

/// One store round for the peer alone: its ready into one transaction, committed, then finished.
fn round(peer: &mut Peer) {
    let ready = peer.take_ready();
    let engine = peer.raw.store().engine().clone();
    let local = LocalWrite { store_id: 1, empty_peers: Default::default() };
    let (task, pending) = peer.prepare_write(ready, true, &local).expect("the ready's writes");
    let mut txn = engine.write_txn().expect("a transaction");
    let written = task.map(|task| task.write(&engine, &mut txn).expect("the task's writes"));
    engine.commit(txn).expect("a commit");
    peer.finish_ready(pending, written);
}

fn from_peer_2(msg_type: MessageType, term: u64) -> Message {
    let mut m = Message::default();
    m.set_msg_type(msg_type);
    m.from = 2;
    m.to = 1;
    m.term = term;
    m
}

/// Peer 2 tells the leader its log holds everything up to `index`.
fn ack_from_peer_2(peer: &mut Peer, index: u64) {
    let mut ack = from_peer_2(MessageType::MsgAppendResponse, peer.raw.raft.term);
    ack.index = index;
    peer.raw.step(ack).expect("the ack");
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
    round(peer);
    assert_eq!(peer.leader_id, 1, "the ready told the peer it leads");
}

/// Makes peer 1 the leader and has it propose and append a PUT in one round: the index the PUT got,
/// and where its answer will arrive.
fn elected_with_a_put(peer: &mut Peer) -> (u64, Answer) {
    elect(peer);
    let put = Request {
        cmd: Some(request::Cmd::Put(PutRequest { key: b"k".to_vec(), value: b"v".to_vec(), precondition: None })),
    };
    let (callback, answer) = tokio::sync::oneshot::channel();
    peer.on_write(vec![put], callback);
    round(peer);
    (peer.raw.raft.raft_log.last_index(), answer)
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

/// A leader proposes a write and is cut off before it hears it committed; the other peer, leading
/// now, commits it, compacts its log and sends a snapshot that covers it. The old leader cannot tell
/// whether its write made it: the snapshot holds the result, not the entries. Its client must hear
/// "outcome unknown", never "stale command", which clients retry (a retry would apply it twice).
#[tokio::test]
async fn a_proposal_a_snapshot_covers_is_answered_as_unknown() {
    let dir = tempfile::tempdir().expect("a dir");
    let mut peer = peer_of_two(dir.path());
    let (proposed_at, mut answer) = elected_with_a_put(&mut peer);
    let term = peer.raw.raft.term;

    // Peer 2's side: the write applied there, and its log compacted past it.
    let other_dir = tempfile::tempdir().expect("a dir");
    let other = engine_with_region(other_dir.path());
    let mut txn = other.write_txn().expect("a transaction");
    other.put_data(&mut txn, b"k", proposed_at, b"v").expect("the write");
    let covered = proposed_at + 2;
    let apply_state = RaftApplyState { applied_index: covered, truncated_index: covered, truncated_term: term + 1 };
    other.put_apply_state(&mut txn, 1, &apply_state).expect("its apply state");
    other.commit(txn).expect("a commit");
    let (snapshot, epoch) = peer_storage::generate_snapshot(&other, 1).expect("a snapshot");
    let verified = VerifiedSnapshot::verify(&snapshot).expect("a verified snapshot");

    let mut message = from_peer_2(MessageType::MsgSnapshot, term + 1);
    message.set_snapshot(snapshot);
    let envelope = RaftEnvelope {
        region_id: 1,
        from_peer: crate::proto::Peer { peer_id: 2, store_id: 2 },
        to_peer: crate::proto::Peer { peer_id: 1, store_id: 1 },
        region_epoch: epoch,
        message,
        is_tombstone: false,
    };
    peer.on_raft_message(envelope, Some(Box::new(verified)));
    assert!(answer.try_recv().is_err(), "answered before the snapshot was installed");
    round(&mut peer);
    assert_eq!(peer.raw.store().apply_state().applied_index, covered, "the snapshot was installed");
    let answered = answer.try_recv().expect("answered once the snapshot is installed");
    assert!(
        matches!(answered, Err(Error::OutcomeUnknown { region_id: 1 })),
        "the covered write was answered {:?}",
        answered.map(|_| ())
    );
}

/// A write is answered in the round whose ready hands its entry out committed, before that round's
/// transaction commits: the entry is in a quorum's synced logs already. Under load that round also
/// appends new proposals and fsyncs them; the answer must not wait for that fsync.
#[tokio::test]
async fn a_committed_write_is_answered_before_the_rounds_commit() {
    let dir = tempfile::tempdir().expect("a dir");
    let mut peer = peer_of_two(dir.path());
    let (proposed_at, mut answer) = elected_with_a_put(&mut peer);
    assert!(answer.try_recv().is_err(), "answered before peer 2 has the entry");

    ack_from_peer_2(&mut peer, proposed_at);
    assert!(peer.has_ready(), "the entry committed");
    let _ready = peer.take_ready();
    let answered = answer.try_recv().expect("answered once its ready is taken, before any commit");
    assert_eq!(answered.expect("the write succeeded").revision, proposed_at);
}

/// A linearizable read whose read index is applied and committed already is released in the round
/// whose ready confirms that index, before that round's transaction commits: nothing the round
/// writes is needed for it, and under a mixed load the round fsyncs other regions' or its own new
/// writes.
#[tokio::test]
async fn a_read_whose_index_is_applied_is_released_before_the_rounds_commit() {
    let dir = tempfile::tempdir().expect("a dir");
    let mut peer = peer_of_two(dir.path());
    elect(&mut peer);
    // Peer 2 acks the leader's first entry: it commits and is applied, so reads may be served.
    let last = peer.raw.raft.raft_log.last_index();
    ack_from_peer_2(&mut peer, last);
    round(&mut peer);
    assert_eq!(peer.raw.store().apply_state().applied_index, peer.raw.raft.raft_log.last_index());

    let (callback, mut released) = tokio::sync::oneshot::channel();
    peer.on_read_index(callback);
    peer.issue_reads();
    let heartbeat_context = peer.raw.raft.msgs.iter().find(|m| m.get_msg_type() == MessageType::MsgHeartbeat);
    let context = heartbeat_context.map(|m| m.context.clone()).expect("a heartbeat carrying the read");
    round(&mut peer);
    assert!(released.try_recv().is_err(), "released before peer 2 confirmed the leadership");
    let mut response = from_peer_2(MessageType::MsgHeartbeatResponse, peer.raw.raft.term);
    response.context = context;
    peer.raw.step(response).expect("the heartbeat response");
    let _ready = peer.take_ready();
    released.try_recv().expect("released once its ready is taken, before any commit").expect("the read");
}

/// The raftstore does not wait for a round's commit before the next: a peer takes and prepares its
/// next ready while the last one's writes are still in flight. raft-rs reads the first ready's
/// entries from storage once it is advanced, before they are in LMDB: the storage serves them from
/// memory, and the second ready's apply starts where the first's ends. Written in order and
/// finished in order, both writes are durable, applied and answered.
#[tokio::test]
async fn a_ready_is_prepared_while_the_last_ones_writes_are_in_flight() {
    let dir = tempfile::tempdir().expect("a dir");
    let mut peer = peer_of_two(dir.path());
    elect(&mut peer);
    let engine = peer.raw.store().engine().clone();
    let local = LocalWrite { store_id: 1, empty_peers: Default::default() };
    let mut in_flight = Vec::new();
    let mut answers = Vec::new();
    for key in [b"a", b"b"] {
        let put = Request {
            cmd: Some(request::Cmd::Put(PutRequest { key: key.to_vec(), value: b"v".to_vec(), precondition: None })),
        };
        let (callback, answer) = tokio::sync::oneshot::channel();
        peer.on_write(vec![put], callback);
        answers.push(answer);
        let ready = peer.take_ready();
        in_flight.push(peer.prepare_write(ready, true, &local).expect("the ready's writes"));
    }
    let last = peer.raw.raft.raft_log.last_index();
    let storage = peer.raw.store();
    let from_memory = raft::Storage::entries(storage, last - 1, last + 1, None, raft::GetEntriesContext::empty(false))
        .expect("entries in flight");
    assert_eq!(from_memory.iter().map(|e| e.index).collect::<Vec<_>>(), [last - 1, last]);
    let txn = engine.read_txn().expect("a read transaction");
    assert!(engine.entries(&txn, 1, last - 1, last + 1, u64::MAX).is_err(), "not in LMDB yet");
    drop(txn);

    let mut txn = engine.write_txn().expect("a transaction");
    let written: Vec<_> = in_flight
        .iter()
        .map(|(task, _)| task.as_ref().map(|task| task.write(&engine, &mut txn).expect("the task's writes")))
        .collect();
    engine.commit(txn).expect("a commit");
    for ((_, pending), written) in in_flight.into_iter().zip(written) {
        peer.finish_ready(pending, written);
    }
    assert_eq!(raft::Storage::last_index(peer.raw.store()).expect("the log's end"), last);
    ack_from_peer_2(&mut peer, last);
    round(&mut peer);
    round(&mut peer);
    assert_eq!(peer.raw.store().apply_state().applied_index, last, "both applied, in order");
    for (answer, revision) in answers.iter_mut().zip([last - 1, last]) {
        assert_eq!(answer.try_recv().expect("answered").expect("the write succeeded").revision, revision);
    }
    let txn = engine.read_txn().expect("a read transaction");
    assert_eq!(engine.entries(&txn, 1, last - 1, last + 1, u64::MAX).expect("durable entries").len(), 2);
}
