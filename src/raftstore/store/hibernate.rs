//! Hibernating regions (as in TiKV): a region with nothing to do stops ticking and heartbeating, so
//! an idle store costs nothing per region. The store decides who sleeps; the peer answers from its
//! raft state (`peer/hibernate.rs`).
//!
//! - **Sleep.** A leader idle for [`IDLE_ELECTIONS`] election timeouts ([`SOLE_MEMBER_IDLE_TICKS`]
//!   ticks if it is the region's only member; never while its region is past the split size; see
//!   `Peer::is_idle_leader`: every follower holds the whole log, nothing is in flight) sends its
//!   followers a going-to-sleep heartbeat and stops ticking. A follower that steps it and is caught
//!   up stops ticking too: it knows the leader went quiet on purpose, so it starts no election. A
//!   follower that is not caught up stays awake, times out, and its (pre-)vote wakes the leader.
//! - **Wake.** Any raft message but the going-to-sleep ones, any request and any operator wakes the
//!   peer it reaches. A leader that wakes restarts its election clock and pings its followers; a
//!   follower woken by a request tells the others, so if the leader is dead they all start counting
//!   towards an election at once and the first request is served about an election timeout later.
//!   Waking never moves a term or a vote: a region whose leader lives keeps it (no election storm
//!   when thousands wake together).
//!
//! A sleeping region is still listed by `/status` and reported to placement like any other.

use std::collections::HashMap;

use super::Store;
use crate::raftstore::peer::hibernate::{signal_of, Signal};
use crate::raftstore::snapshot::VerifiedSnapshot;
use crate::raftstore::transport::RaftEnvelope;

/// Election timeouts a leader must stay idle before its region sleeps: long enough that its followers
/// have heard the final commit index in ordinary heartbeats.
pub(super) const IDLE_ELECTIONS: u64 = 2;

/// Idle ticks before a leader that is its region's only member sleeps. It has no follower to hear
/// anything, so one tick is enough: on a node whose writes spread over thousands of such regions,
/// waiting two election timeouts kept nearly every written region awake and ticking (16,384 regions
/// at 12k PUT/s: 373 peers visited per round for 32 writes, a tenth of the server's CPU in ticks and
/// round scans).
pub(super) const SOLE_MEMBER_IDLE_TICKS: u64 = 1;

/// Per awake leader: consecutive ticks it was idle.
#[derive(Default)]
pub(super) struct IdleLeaders(HashMap<u64, u64>);

impl Store {
    /// Before a tick of an awake peer (so the state is the one the last round left, not one the tick
    /// is about to change): a leader idle for long enough puts its region to sleep, and is not ticked.
    pub(super) fn hibernates_now(&mut self, region_id: u64) -> bool {
        let Some(peer) = self.peers.get_mut(&region_id) else { return false };
        // A region known to be past its split size stays awake for the split check, which reaches
        // awake peers only (`Store::on_tick`); one that cannot split (a single key larger than the
        // size) stays awake as every region did before hibernation.
        let wants_split = peer.approximate_size().is_some_and(|size| size > self.cfg.region_max_size);
        if !peer.is_idle_leader() || wants_split {
            self.idle_leaders.0.remove(&region_id);
            return false;
        }
        let needed = if peer.is_sole_member() {
            SOLE_MEMBER_IDLE_TICKS
        } else {
            IDLE_ELECTIONS * (self.cfg.peer.election_ticks as u64).max(1)
        };
        let idle = self.idle_leaders.0.entry(region_id).or_default();
        *idle += 1;
        if *idle < needed {
            return false;
        }
        self.idle_leaders.0.remove(&region_id);
        peer.send_hibernate();
        self.activity.sleep(region_id);
        tracing::debug!(region_id, "region hibernates");
        true
    }

    /// A request or an operator reached this region's peer: it wakes (see the module doc).
    pub(super) fn wake_for_request(&mut self, region_id: u64) {
        self.wake(region_id, true);
    }

    fn wake(&mut self, region_id: u64, by_request: bool) {
        self.activity.touch(region_id);
        // Only a peer this store holds is awake or asleep (a request may name an unknown region).
        let Some(peer) = self.peers.get_mut(&region_id) else { return };
        if self.activity.wake(region_id) {
            peer.on_wake(by_request);
        }
    }

    /// Hands a raft message to its (existing) peer, applying what it means for hibernation.
    pub(super) fn step_raft_message(&mut self, envelope: RaftEnvelope, snapshot: Option<Box<VerifiedSnapshot>>) {
        let region_id = envelope.region_id;
        self.activity.touch(region_id);
        match signal_of(&envelope.message) {
            Signal::None => self.wake(region_id, false),
            // The peer told us nothing raft needs to hear.
            Signal::WakeUp => return self.wake(region_id, false),
            // The leader went to sleep after sending the heartbeat it answers.
            Signal::HibernateAck if !self.activity.is_awake(region_id) => return,
            Signal::HibernateAck => {}
            Signal::Hibernate => {
                let hibernate = envelope.message.clone();
                let Some(peer) = self.peers.get_mut(&region_id) else { return };
                peer.on_raft_message(envelope, None);
                if peer.may_sleep_after(&hibernate) {
                    self.activity.sleep(region_id);
                } else {
                    // Not caught up: the leader must not sleep on it (it would time out and call an
                    // election). Waking as for a request tells the leader and the others at once.
                    peer.on_wake(true);
                    self.activity.wake(region_id);
                }
                return;
            }
        }
        if let Some(peer) = self.peers.get_mut(&region_id) {
            peer.on_raft_message(envelope, snapshot);
        }
    }
}
