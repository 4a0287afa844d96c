//! An in-process network for cluster tests and benches: stores exchange raft messages through it,
//! and the test controls it — partition the stores into groups, isolate one, drop messages with a
//! probability, delay them, heal. Randomness comes from a seed, so a failing run can be replayed.
//!
//! Like a real network it loses messages silently; only a store that is down (unregistered) makes
//! `send` fail, as a refused connection would. A snapshot's fate is reported back to its sender.
//!
//! A cut drops what crosses it, unless [`SimNetwork::hold_while_cut`] is on: then messages wait in a
//! bounded queue per pair of stores and arrive, late and in order, once the pair is connected again.
//! That is what the gRPC transport does with its per-store stream queue while a link is down, and
//! what makes a healed partition deliver messages written under a membership that has moved on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use parking_lot::Mutex;
use raft::eraftpb::MessageType;
use raft::SnapshotStatus;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::raftstore::inbox::RaftInbox;
use crate::raftstore::transport::{RaftEnvelope, Transport, TransportError};

#[derive(Clone)]
pub struct SimNetwork {
    state: Arc<Mutex<NetState>>,
    delay_line: Sender<Delayed>,
}

struct NetState {
    inboxes: HashMap<u64, RaftInbox>,
    /// When set, messages only flow within a group.
    groups: Option<Vec<HashSet<u64>>>,
    isolated: HashSet<u64>,
    drop_rate: f64,
    delay: Duration,
    rng: StdRng,
    delivered: u64,
    dropped: u64,
    /// Whether a cut holds messages (see [`SimNetwork::hold_while_cut`]) instead of dropping them.
    hold_while_cut: bool,
    /// Messages waiting for their (from store, to store) pair to be connected again, oldest first.
    held: HashMap<(u64, u64), VecDeque<RaftEnvelope>>,
}

/// Messages held per pair of stores at most (the gRPC transport's stream queue is bounded too);
/// later ones are dropped.
const HELD_PER_PAIR: usize = 4096;

impl NetState {
    fn connected(&self, from: u64, to: u64) -> bool {
        if self.isolated.contains(&from) || self.isolated.contains(&to) {
            return false;
        }
        match &self.groups {
            None => true,
            Some(groups) => groups.iter().any(|g| g.contains(&from) && g.contains(&to)),
        }
    }

    /// Delivers, oldest first, what was held for every pair of stores connected again.
    fn release_reconnected(&mut self) {
        let pairs: Vec<(u64, u64)> = self.held.keys().copied().filter(|&(from, to)| self.connected(from, to)).collect();
        for pair in pairs {
            let Some(queue) = self.held.remove(&pair) else { continue };
            for msg in queue {
                let delivered = self.inboxes.get(&pair.1).is_some_and(|inbox| inbox.deliver(msg).is_ok());
                if delivered {
                    self.delivered += 1;
                } else {
                    self.dropped += 1;
                }
            }
        }
    }
}

struct Delayed {
    due: Instant,
    seq: u64,
    to_store: u64,
    msg: RaftEnvelope,
}

impl PartialEq for Delayed {
    fn eq(&self, other: &Self) -> bool {
        (self.due, self.seq) == (other.due, other.seq)
    }
}
impl Eq for Delayed {}
impl PartialOrd for Delayed {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Delayed {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (self.due, self.seq).cmp(&(other.due, other.seq))
    }
}

impl SimNetwork {
    pub fn new(seed: u64) -> SimNetwork {
        let state = Arc::new(Mutex::new(NetState {
            inboxes: HashMap::new(),
            groups: None,
            isolated: HashSet::new(),
            drop_rate: 0.0,
            delay: Duration::ZERO,
            rng: StdRng::seed_from_u64(seed),
            delivered: 0,
            dropped: 0,
            hold_while_cut: false,
            held: HashMap::new(),
        }));
        let (delay_line, delayed) = crossbeam_channel::unbounded();
        let weak = Arc::downgrade(&state);
        std::thread::Builder::new()
            .name("sim-network-delay".into())
            .spawn(move || run_delay_line(delayed, weak))
            .expect("spawning the delay line");
        SimNetwork { state, delay_line }
    }

    /// Connects a (re)started store.
    pub fn register(&self, store_id: u64, inbox: impl Into<RaftInbox>) {
        self.state.lock().inboxes.insert(store_id, inbox.into());
    }

    /// Disconnects a store that went down: messages to it now fail.
    pub fn unregister(&self, store_id: u64) {
        self.state.lock().inboxes.remove(&store_id);
    }

    pub fn transport(&self, store_id: u64) -> SimTransport {
        SimTransport { store_id, network: self.clone(), queue: Vec::new() }
    }

    /// Lets messages flow only within each group.
    pub fn partition(&self, groups: &[Vec<u64>]) {
        let mut state = self.state.lock();
        state.groups = Some(groups.iter().map(|g| g.iter().copied().collect()).collect());
        state.release_reconnected();
    }

    /// Cuts one store off from every other.
    pub fn isolate(&self, store_id: u64) {
        self.state.lock().isolated.insert(store_id);
    }

    /// With `hold` on, a cut holds the raft messages that cross it (up to a bound per pair of stores)
    /// and delivers them, in order, once the pair is connected again, as a transport's queue would.
    /// Snapshots are never held: their stream fails, and the sender is told. Turning it off drops
    /// what is held.
    pub fn hold_while_cut(&self, hold: bool) {
        let mut state = self.state.lock();
        state.hold_while_cut = hold;
        if !hold {
            let held: usize = state.held.drain().map(|(_, queue)| queue.len()).sum();
            state.dropped += held as u64;
        }
    }

    /// Messages held by cuts right now on their way to `to_store`.
    pub fn held_for(&self, to_store: u64) -> usize {
        self.state.lock().held.iter().filter(|((_, to), _)| *to == to_store).map(|(_, queue)| queue.len()).sum()
    }

    /// Drops each message with probability `rate`.
    pub fn set_drop_rate(&self, rate: f64) {
        self.state.lock().drop_rate = rate.clamp(0.0, 1.0);
    }

    /// Delivers every message `delay` late.
    pub fn set_delay(&self, delay: Duration) {
        self.state.lock().delay = delay;
    }

    /// Removes every partition, isolation, drop rate and delay; held messages are delivered now.
    pub fn heal(&self) {
        let mut state = self.state.lock();
        state.groups = None;
        state.isolated.clear();
        state.drop_rate = 0.0;
        state.delay = Duration::ZERO;
        state.release_reconnected();
    }

    /// Ends one store's isolation; what was held for its links is delivered now (if they are up).
    pub fn rejoin(&self, store_id: u64) {
        let mut state = self.state.lock();
        state.isolated.remove(&store_id);
        state.release_reconnected();
    }

    /// (delivered, dropped) message counts so far.
    pub fn counts(&self) -> (u64, u64) {
        let state = self.state.lock();
        (state.delivered, state.dropped)
    }

    fn deliver(&self, from_store: u64, msg: RaftEnvelope) {
        let to_store = msg.to_peer.store_id;
        let is_snapshot = msg.message.get_msg_type() == MessageType::MsgSnapshot;
        let mut state = self.state.lock();
        let lost = !state.connected(from_store, to_store) || {
            let rate = state.drop_rate;
            rate > 0.0 && state.rng.gen_bool(rate)
        };
        let delay = state.delay;
        let (region_id, to_peer_id) = (msg.region_id, msg.to_peer.peer_id);
        if lost && !is_snapshot && state.hold_while_cut && !state.connected(from_store, to_store) {
            let queue = state.held.entry((from_store, to_store)).or_default();
            if queue.len() < HELD_PER_PAIR {
                queue.push_back(msg);
                return;
            }
        }
        let delivered = if lost {
            false
        } else if !delay.is_zero() {
            let seq = state.delivered;
            let _ = self.delay_line.send(Delayed { due: Instant::now() + delay, seq, to_store, msg });
            true
        } else {
            match state.inboxes.get(&to_store) {
                Some(inbox) => inbox.deliver(msg).is_ok(),
                None => false,
            }
        };
        if delivered {
            state.delivered += 1;
        } else {
            state.dropped += 1;
        }
        if is_snapshot {
            // The sender learns whether its snapshot arrived, as a streaming RPC would tell it.
            let status = if delivered { SnapshotStatus::Finish } else { SnapshotStatus::Failure };
            if let Some(inbox) = state.inboxes.get(&from_store) {
                inbox.snapshot_status(region_id, to_peer_id, status);
            }
        }
    }
}

fn run_delay_line(delayed: Receiver<Delayed>, state: std::sync::Weak<Mutex<NetState>>) {
    let mut pending: BinaryHeap<Reverse<Delayed>> = BinaryHeap::new();
    loop {
        let wait =
            pending.peek().map_or(Duration::from_secs(3600), |d| d.0.due.saturating_duration_since(Instant::now()));
        match delayed.recv_timeout(wait) {
            Ok(item) => pending.push(Reverse(item)),
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => return,
        }
        let now = Instant::now();
        while pending.peek().is_some_and(|d| d.0.due <= now) {
            let Reverse(item) = pending.pop().expect("peeked");
            let Some(state) = state.upgrade() else { return };
            let state = state.lock();
            if let Some(inbox) = state.inboxes.get(&item.to_store) {
                let _ = inbox.deliver(item.msg);
            }
        }
    }
}

/// One store's end of the [`SimNetwork`].
pub struct SimTransport {
    store_id: u64,
    network: SimNetwork,
    queue: Vec<RaftEnvelope>,
}

impl Transport for SimTransport {
    fn send(&mut self, msg: RaftEnvelope) -> Result<(), TransportError> {
        let to_store = msg.to_peer.store_id;
        if !self.network.state.lock().inboxes.contains_key(&to_store) {
            return Err(TransportError::Unreachable(to_store));
        }
        self.queue.push(msg);
        Ok(())
    }

    fn flush(&mut self) {
        for msg in self.queue.drain(..) {
            self.network.deliver(self.store_id, msg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Peer, RegionEpoch};
    use raft::eraftpb::Message;

    fn message(msg_type: MessageType, index: u64) -> RaftEnvelope {
        let mut message = Message::default();
        message.set_msg_type(msg_type);
        message.index = index;
        RaftEnvelope::new(
            1,
            Peer { peer_id: 1, store_id: 1 },
            Peer { peer_id: 2, store_id: 2 },
            RegionEpoch { conf_ver: 1, version: 1 },
            message,
        )
    }

    fn received(inbox: &Receiver<crate::raftstore::msg::StoreMsg>) -> Vec<(MessageType, u64)> {
        inbox
            .try_iter()
            .filter_map(|msg| match msg {
                crate::raftstore::msg::StoreMsg::Raft(envelope) => {
                    Some((envelope.message.get_msg_type(), envelope.message.index))
                }
                _ => None,
            })
            .collect()
    }

    #[test]
    fn a_cut_that_holds_delivers_late_and_in_order_once_healed() {
        let network = SimNetwork::new(7);
        let (to_store_2, inbox) = crossbeam_channel::unbounded();
        network.register(2, to_store_2);
        let (to_store_1, _sender_inbox) = crossbeam_channel::unbounded();
        network.register(1, to_store_1);
        let mut transport = network.transport(1);
        network.hold_while_cut(true);
        network.isolate(2);
        for index in 1..=3 {
            transport.send(message(MessageType::MsgHeartbeat, index)).unwrap();
        }
        transport.send(message(MessageType::MsgSnapshot, 9)).unwrap();
        transport.flush();
        assert!(received(&inbox).is_empty(), "a cut let messages through");
        assert_eq!(network.held_for(2), 3, "snapshots are not held");
        network.rejoin(2);
        assert_eq!(received(&inbox), (1..=3).map(|i| (MessageType::MsgHeartbeat, i)).collect::<Vec<_>>());
        assert_eq!(network.held_for(2), 0);
    }

    #[test]
    fn a_cut_that_does_not_hold_drops() {
        let network = SimNetwork::new(7);
        let (to_store_2, inbox) = crossbeam_channel::unbounded();
        network.register(2, to_store_2);
        let mut transport = network.transport(1);
        network.partition(&[vec![1], vec![2]]);
        transport.send(message(MessageType::MsgHeartbeat, 1)).unwrap();
        transport.flush();
        network.heal();
        assert!(received(&inbox).is_empty());
        assert_eq!(network.counts(), (0, 1));
    }
}
