//! Which peers a round visited since a given point, so a heartbeat can ask the store for the status
//! of the peers that may have changed instead of all of them (issue 15, item 5: with 13,000 idle
//! regions, building every peer's status twice a second was most of an idle node's CPU).
//!
//! Every change to what a status shows (region, role, term, leader, size, pending peers) is made
//! while a round visits the peer, or by a message that touches it into the next round (see
//! [`super::active`]): so "visited by a round after generation G" covers "changed after G". Each
//! round is one generation.

use std::collections::HashMap;

#[derive(Debug, Default)]
pub(super) struct StatusChanges {
    /// The current round's generation; 0 before the first round.
    generation: u64,
    /// The generation of the last round that visited each peer (by region).
    visited: HashMap<u64, u64>,
}

impl StatusChanges {
    /// A new round visits these peers.
    pub(super) fn record(&mut self, region_ids: impl IntoIterator<Item = u64>) {
        self.generation += 1;
        for region_id in region_ids {
            self.visited.insert(region_id, self.generation);
        }
    }

    /// The generation a status answered now is complete up to.
    pub(super) fn generation(&self) -> u64 {
        self.generation
    }

    /// Whether a round visited this peer after generation `since` (always, for `since` 0).
    pub(super) fn changed_since(&self, region_id: u64, since: u64) -> bool {
        since == 0 || self.visited.get(&region_id).is_none_or(|visited| *visited > since)
    }

    /// The peer is gone.
    pub(super) fn forget(&mut self, region_id: u64) {
        self.visited.remove(&region_id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_peer_counts_as_changed_after_the_generations_that_visited_it() {
        let mut changes = StatusChanges::default();
        changes.record([1, 2]);
        let first = changes.generation();
        changes.record([2]);
        assert!(changes.changed_since(1, 0) && changes.changed_since(3, first), "all, and an unknown peer");
        assert!(!changes.changed_since(1, first));
        assert!(changes.changed_since(2, first));
        assert!(!changes.changed_since(2, changes.generation()));
        changes.forget(2);
        assert!(changes.changed_since(2, changes.generation()), "a peer it does not know may have changed");
    }
}
