//! A peer's half of hibernation, answered from its raft state: whether its region may sleep, the
//! messages that put a region to sleep and wake it, and what waking does to raft's clocks. The store
//! decides who sleeps and who ticks (`store/hibernate.rs`).
//!
//! The signals are raft messages raft-rs handles harmlessly, told apart by their `context`:
//! - a leader going to sleep sends each follower a real heartbeat (its term, the commit it may
//!   know, and in `index` the leader's last index) with [`HIBERNATE_CONTEXT`]; raft echoes the
//!   context in the follower's response, which a sleeping leader drops instead of waking;
//! - a follower woken by a request tells the region's other peers with a term-0 heartbeat response
//!   carrying [`WAKE_UP_CONTEXT`], which the store consumes (never stepped).

use raft::eraftpb::{Message, MessageType};
use raft::{ProgressState, StateRole};

use super::Peer;

/// The context of a leader's last heartbeat before it sleeps (echoed in the followers' responses).
pub const HIBERNATE_CONTEXT: &[u8] = b"fekv:hibernate";
/// The context of the message a peer woken by a request sends the other peers of its region.
pub const WAKE_UP_CONTEXT: &[u8] = b"fekv:wake-up";

/// What an incoming raft message means for hibernation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// An ordinary raft message: it wakes the peer.
    None,
    /// The leader is going to sleep; the follower may follow once it has stepped it.
    Hibernate,
    /// A follower's response to [`Signal::Hibernate`]: a sleeping leader need not wake for it.
    HibernateAck,
    /// Another peer of the region was woken by a request: wake, and tick.
    WakeUp,
}

/// The hibernation meaning of `message`.
pub fn signal_of(message: &Message) -> Signal {
    let context = message.get_context();
    match message.get_msg_type() {
        MessageType::MsgHeartbeat if context == HIBERNATE_CONTEXT => Signal::Hibernate,
        MessageType::MsgHeartbeatResponse if context == HIBERNATE_CONTEXT => Signal::HibernateAck,
        MessageType::MsgHeartbeatResponse if context == WAKE_UP_CONTEXT => Signal::WakeUp,
        _ => Signal::None,
    }
}

impl Peer {
    /// Whether this peer leads a region that has nothing to do: no proposal, read or apply waiting,
    /// no membership change, leader transfer or snapshot under way, every entry committed and applied
    /// here, every follower holding the whole log, the region's size known (a split check needs the
    /// leader awake), and the log compacted (compaction is proposed on a tick).
    pub fn is_idle_leader(&self) -> bool {
        let raft = &self.raw.raft;
        if !self.is_leader()
            || raft.lead_transferee.is_some()
            || raft.has_pending_conf()
            || raft.pending_read_count() > 0
            || !raft.commit_to_current_term()
            || !self.proposals.is_empty()
            || !self.new_reads.is_empty()
            || !self.read_batches.is_empty()
            // Deferred applies (see `deferred`): the store's deferral must reach this peer awake.
            || self.has_pending_apply()
            || self.raw.has_ready()
            || self.split_check_in_flight
            || self.approximate_size.is_none()
            || self.log_wants_compaction()
        {
            return false;
        }
        let last = raft.raft_log.last_index();
        raft.raft_log.committed == last
            && self.raw.store().apply_state().applied_index == last
            && raft
                .prs()
                .iter()
                .all(|(id, pr)| *id == self.peer_id || (pr.matched == last && pr.state == ProgressState::Replicate))
    }

    /// Whether raft tracks no peer but this one (no other voter, no learner): a leader with nobody to
    /// tell its final commit index may sleep as soon as it is idle.
    pub fn is_sole_member(&self) -> bool {
        self.raw.raft.prs().iter().all(|(id, _)| *id == self.peer_id)
    }

    /// Queues the leader's going-to-sleep heartbeat to every follower.
    pub fn send_hibernate(&mut self) {
        let raft = &self.raw.raft;
        let (term, committed, last) = (raft.term, raft.raft_log.committed, raft.raft_log.last_index());
        let messages = raft
            .prs()
            .iter()
            .filter(|(id, _)| **id != self.peer_id)
            .map(|(id, pr)| {
                let mut message = Message::default();
                message.set_msg_type(MessageType::MsgHeartbeat);
                (message.from, message.to, message.term) = (self.peer_id, *id, term);
                // As raft does: never a commit beyond what the follower holds.
                message.commit = committed.min(pr.matched);
                message.index = last;
                message.context = HIBERNATE_CONTEXT.to_vec().into();
                message
            })
            .collect();
        self.queue_messages(messages);
    }

    /// Whether this follower, having stepped its leader's going-to-sleep heartbeat, may sleep too:
    /// it follows that leader in that term, holds the leader's whole log and has applied it.
    pub fn may_sleep_after(&self, hibernate: &Message) -> bool {
        let raft = &self.raw.raft;
        let last = raft.raft_log.last_index();
        raft.state == StateRole::Follower
            && raft.term == hibernate.term
            && raft.leader_id == hibernate.from
            && last == hibernate.index
            && raft.raft_log.committed == last
            && !self.has_pending_apply()
            && self.raw.store().apply_state().applied_index == last
    }

    /// The peer wakes after sleeping. A leader restarts its election clock (its followers' activity
    /// is counted afresh, so the next quorum check does not depose it for the quiet it chose) and
    /// pings, which wakes its followers; a follower woken by a request tells the region's other peers,
    /// so that if the leader is dead they all count towards an election together.
    pub fn on_wake(&mut self, by_request: bool) {
        if self.is_leader() {
            self.raw.raft.election_elapsed = 0;
            self.raw.raft.ping();
            return;
        }
        if !by_request {
            return;
        }
        let messages = self
            .region()
            .peers
            .iter()
            .filter(|p| p.peer_id != self.peer_id)
            .map(|p| {
                let mut message = Message::default();
                message.set_msg_type(MessageType::MsgHeartbeatResponse);
                (message.from, message.to) = (self.peer_id, p.peer_id);
                message.context = WAKE_UP_CONTEXT.to_vec().into();
                message
            })
            .collect();
        self.queue_messages(messages);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_told_apart_by_type_and_context() {
        let message = |msg_type, context: &[u8]| {
            let mut m = Message::default();
            m.set_msg_type(msg_type);
            m.context = context.to_vec().into();
            m
        };
        assert_eq!(signal_of(&message(MessageType::MsgHeartbeat, HIBERNATE_CONTEXT)), Signal::Hibernate);
        assert_eq!(signal_of(&message(MessageType::MsgHeartbeatResponse, HIBERNATE_CONTEXT)), Signal::HibernateAck);
        assert_eq!(signal_of(&message(MessageType::MsgHeartbeatResponse, WAKE_UP_CONTEXT)), Signal::WakeUp);
        // A read index's heartbeat carries its 8-byte id: an ordinary message.
        assert_eq!(signal_of(&message(MessageType::MsgHeartbeat, &7u64.to_be_bytes())), Signal::None);
        assert_eq!(signal_of(&message(MessageType::MsgAppend, HIBERNATE_CONTEXT)), Signal::None);
    }
}
