//! Small helpers on the generated messages, for the logic both the placement service and the
//! nodes need said once.

use super::{request, Peer, PeerState, Precondition, Region, RegionLocalState, Request};

impl Request {
    /// The key a Put or Delete writes; `None` for an empty request.
    pub fn key(&self) -> Option<&[u8]> {
        self.cmd.as_ref().map(request::Cmd::key)
    }
}

impl request::Cmd {
    /// The key this command writes.
    pub fn key(&self) -> &[u8] {
        match self {
            request::Cmd::Put(put) => &put.key,
            request::Cmd::Delete(delete) => &delete.key,
        }
    }

    /// The condition the current revision must meet for the command to apply.
    pub fn precondition(&self) -> Option<&Precondition> {
        match self {
            request::Cmd::Put(put) => put.precondition.as_ref(),
            request::Cmd::Delete(delete) => delete.precondition.as_ref(),
        }
    }
}

impl RegionLocalState {
    /// The state of a live peer of `region` (not a tombstone).
    pub fn normal(region: Region) -> Self {
        RegionLocalState { region: Some(region), state: PeerState::Normal as i32, removed_peer_id: 0 }
    }
}

impl Region {
    /// Whether the region can split at `key`: it lies strictly inside the range (after the start key,
    /// before the end key, an empty end key being unbounded), so both halves are non-empty ranges.
    pub fn can_split_at(&self, key: &[u8]) -> bool {
        key > self.start_key.as_slice() && (self.end_key.is_empty() || key < self.end_key.as_slice())
    }

    /// The store whose peer should take the lead from the one on `leaving`: the lowest store id among
    /// the other peers that `may_lead` (caught up, on a store fit to lead). Ties go to the lowest id,
    /// so every caller chooses the same.
    pub fn lowest_store_to_lead(&self, leaving: u64, may_lead: impl Fn(&Peer) -> bool) -> Option<u64> {
        self.peers.iter().filter(|p| p.store_id != leaving && may_lead(p)).map(|p| p.store_id).min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_region_splits_only_strictly_inside_its_range() {
        let region = Region { start_key: b"b".to_vec(), end_key: b"d".to_vec(), ..Default::default() };
        assert!(region.can_split_at(b"c"));
        assert!(!region.can_split_at(b"b"), "the start key would leave the left half empty");
        assert!(!region.can_split_at(b"d") && !region.can_split_at(b"a") && !region.can_split_at(b"e"));
        let unbounded = Region { start_key: b"b".to_vec(), ..Default::default() };
        assert!(unbounded.can_split_at(b"zzz"));
    }

    #[test]
    fn the_lowest_fit_other_store_takes_the_lead() {
        let peer = |store_id| Peer { peer_id: store_id * 10, store_id };
        let region = Region { peers: vec![peer(3), peer(1), peer(2)], ..Default::default() };
        assert_eq!(region.lowest_store_to_lead(1, |_| true), Some(2));
        assert_eq!(region.lowest_store_to_lead(1, |p| p.store_id != 2), Some(3));
        assert_eq!(region.lowest_store_to_lead(1, |_| false), None);
    }
}
