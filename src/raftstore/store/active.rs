//! Which peers a round visits and which ones tick, so that a round costs what its regions with work
//! cost, not what all regions cost (with 20,000 regions, a scan of every peer per round was most of
//! the round).
//!
//! - A peer is **active** once something reached it (a raft message, a client request, an operator,
//!   a tick) and for as long as its last ready left work (entries to apply next round). A round visits
//!   the active peers only, and afterwards keeps those that still have a ready.
//! - A peer is **awake** unless its region hibernates (see [`super::hibernate`]). Only awake peers
//!   tick, so an idle store's ticks cost nothing per hibernating region either.
//! - A peer is **applying** while it holds committed entries whose apply is deferred (see
//!   [`super::durability`]). Those are not active (a deferral must let the loop sleep), but a round
//!   that commits, or a due or wanted deferral, takes in every one of them: this set, not a scan.
//!
//! Invariant (the store keeps it): raft-rs only gains a ready through `step`, `tick`, `propose`,
//! `campaign` and the like, and every one of them is called on a peer the store touches here in the
//! same round, so no ready is ever left unvisited. Likewise a peer's pending applies only grow in a
//! round that visits it (`take_ready`, `finish_ready`), which records it as applying then.

use std::collections::BTreeSet;

#[derive(Default)]
pub(super) struct Activity {
    /// Regions whose peer the next round visits (ordered: rounds stay deterministic).
    active: BTreeSet<u64>,
    /// Regions whose peer ticks: every local peer but those of hibernating regions.
    awake: BTreeSet<u64>,
    /// Regions whose peer holds deferred applies (as of the last round that visited it).
    applying: BTreeSet<u64>,
}

impl Activity {
    /// The next round visits this region's peer.
    pub(super) fn touch(&mut self, region_id: u64) {
        self.active.insert(region_id);
    }

    /// A new (or reloaded) peer: awake, and visited by the next round.
    pub(super) fn add(&mut self, region_id: u64) {
        self.awake.insert(region_id);
        self.active.insert(region_id);
    }

    /// The peer ticks again and the next round visits it. True if it was asleep.
    pub(super) fn wake(&mut self, region_id: u64) -> bool {
        self.active.insert(region_id);
        self.awake.insert(region_id)
    }

    /// The peer stops ticking (its region hibernates).
    pub(super) fn sleep(&mut self, region_id: u64) {
        self.awake.remove(&region_id);
    }

    pub(super) fn is_awake(&self, region_id: u64) -> bool {
        self.awake.contains(&region_id)
    }

    /// The peer is gone (destroyed or replaced).
    pub(super) fn forget(&mut self, region_id: u64) {
        self.active.remove(&region_id);
        self.awake.remove(&region_id);
        self.applying.remove(&region_id);
    }

    /// After a round visited the peer: whether it still holds deferred applies.
    pub(super) fn set_applying(&mut self, region_id: u64, pending: bool) {
        if pending {
            self.applying.insert(region_id);
        } else {
            self.applying.remove(&region_id);
        }
    }

    /// The peers holding deferred applies, which a committing or due round takes in.
    pub(super) fn applying(&self) -> impl Iterator<Item = u64> + '_ {
        self.applying.iter().copied()
    }

    /// Whether a round is due without waiting for a message or a tick.
    pub(super) fn has_work(&self) -> bool {
        !self.active.is_empty()
    }

    /// The peers this round visits; from here on, touches are for the next round.
    pub(super) fn take_round(&mut self) -> Vec<u64> {
        std::mem::take(&mut self.active).into_iter().collect()
    }

    /// The peers a tick reaches (all awake ones), each touched for this round.
    pub(super) fn tick_awake(&mut self) -> Vec<u64> {
        self.active.extend(self.awake.iter().copied());
        self.awake.iter().copied().collect()
    }

    pub(super) fn awake_count(&self) -> usize {
        self.awake.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_round_takes_the_touched_peers_once_and_a_tick_reaches_only_awake_ones() {
        let mut activity = Activity::default();
        for region_id in [1, 2, 3] {
            activity.add(region_id);
        }
        assert_eq!(activity.take_round(), vec![1, 2, 3]);
        assert!(!activity.has_work());
        activity.sleep(2);
        assert_eq!(activity.tick_awake(), vec![1, 3]);
        assert_eq!(activity.take_round(), vec![1, 3]);
        activity.touch(2);
        assert_eq!(activity.take_round(), vec![2], "a message reaches a sleeping peer");
        assert!(activity.wake(2), "it was asleep");
        assert!(!activity.wake(2));
        activity.forget(3);
        assert_eq!(activity.tick_awake(), vec![1, 2]);
        assert_eq!(activity.awake_count(), 2);
    }

    #[test]
    fn peers_holding_applies_are_listed_apart_from_the_round() {
        let mut activity = Activity::default();
        activity.add(1);
        activity.add(2);
        assert_eq!(activity.take_round(), vec![1, 2]);
        activity.set_applying(2, true);
        activity.set_applying(1, false);
        assert!(!activity.has_work(), "deferred applies alone let the loop sleep");
        assert_eq!(activity.applying().collect::<Vec<_>>(), vec![2]);
        activity.set_applying(2, false);
        assert_eq!(activity.applying().count(), 0);
        activity.set_applying(1, true);
        activity.forget(1);
        assert_eq!(activity.applying().count(), 0, "a gone peer holds nothing");
    }
}
