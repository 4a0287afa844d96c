//! The region tree: every region placement knows, keyed by start key, with an index by region id and
//! per-store counts of regions and leaders (tinykv 3C / PD's `RegionsInfo`).
//!
//! It owns the rule that decides whether a region heartbeat is news: a report whose epoch is older
//! than the region with its id, or than any region whose range it overlaps, is stale and ignored;
//! otherwise it replaces its old self, and takes its range from the regions it overlaps: one that
//! reaches beyond it keeps the rest (its part before the report's start, or else after its end)
//! until its own report, so a split's halves reported in either order never leave a hole in the
//! keyspace. It never persists anything and never talks to a store: the caller (`state.rs`) holds
//! the lock and decides what to write.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use crate::proto::{Region, RegionEpoch, RegionInfo};

/// Regions and leaders placement has recorded on one store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreCounts {
    pub region_count: u64,
    pub leader_count: u64,
}

/// What a region heartbeat did to the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeartbeatOutcome {
    /// Older than what is recorded (by epoch, or by term for the same epoch): ignored.
    Stale,
    /// Nothing new.
    Unchanged,
    /// Only the approximate size or key count moved: worth keeping in memory, not worth a disk write.
    StatsOnly,
    /// The region's range, epoch, peers or leader changed; these other regions were replaced or
    /// gave it part of their range (their records changed or went).
    Updated { touched: Vec<u64> },
}

/// One report of a region: from its leader, or, for a region not in the tree yet (a split's half
/// whose leader is still being elected), from any of its peers, with no leader.
#[derive(Debug, Clone, Default)]
pub struct RegionReport {
    pub region: Region,
    /// 0: no leader known (a peer's report, not its leader's).
    pub leader_store_id: u64,
    pub leader_peer_id: u64,
    pub term: u64,
    /// `None` until the leader has measured the region: the tree then keeps or estimates it.
    pub approximate_size: Option<u64>,
    pub approximate_keys: Option<u64>,
}

#[derive(Debug, Default, Clone)]
pub struct RegionTree {
    /// start key → region. Ranges never overlap: inserting a region removes every region it overlaps.
    by_start: BTreeMap<Vec<u8>, RegionInfo>,
    /// region id → start key, to find a region by id in O(log n).
    start_of: HashMap<u64, Vec<u8>>,
    stores: HashMap<u64, StoreCounts>,
}

fn region_of(info: &RegionInfo) -> &Region {
    // Every RegionInfo in the tree is inserted through `insert`, which requires a region.
    info.region.as_ref().expect("the region tree holds only RegionInfos with a region")
}

fn epoch_of(region: &Region) -> RegionEpoch {
    region.epoch.unwrap_or_default()
}

/// `a` is older than `b` in either dimension: PD's staleness rule (a split raises `version`, a
/// membership change raises `conf_ver`; a report behind on either has missed something).
fn is_older(a: RegionEpoch, b: RegionEpoch) -> bool {
    a.version < b.version || a.conf_ver < b.conf_ver
}

/// `[start, end)` holds `key` (an empty end is unbounded).
fn range_holds(region: &Region, key: &[u8]) -> bool {
    key >= region.start_key.as_slice() && (region.end_key.is_empty() || key < region.end_key.as_slice())
}

/// `a` ends after `b` does (an empty end is unbounded).
fn ends_after(a: &Region, b: &Region) -> bool {
    !b.end_key.is_empty() && (a.end_key.is_empty() || a.end_key > b.end_key)
}

/// What is left of `old` once `new` takes its range: the part before `new` starts or, if none, the
/// part after it ends (`old` keeps its id, so it can keep one part only: the left, as the left half
/// of a split keeps the region's id). `None` if `new` covers it all.
fn remainder(old: &RegionInfo, new: &Region) -> Option<RegionInfo> {
    let region = region_of(old);
    let range = if region.start_key < new.start_key {
        (region.start_key.clone(), new.start_key.clone())
    } else if ends_after(region, new) {
        (new.end_key.clone(), region.end_key.clone())
    } else {
        return None;
    };
    let mut kept = old.clone();
    let kept_region = kept.region.as_mut().expect("the region tree holds only RegionInfos with a region");
    (kept_region.start_key, kept_region.end_key) = range;
    // It gave part of its range away: half of its size and keys, until it is measured again.
    kept.approximate_size /= 2;
    kept.approximate_keys /= 2;
    Some(kept)
}

impl RegionTree {
    pub fn new() -> RegionTree {
        RegionTree::default()
    }

    pub fn len(&self) -> usize {
        self.by_start.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_start.is_empty()
    }

    pub fn get(&self, region_id: u64) -> Option<&RegionInfo> {
        self.by_start.get(self.start_of.get(&region_id)?)
    }

    /// The region whose range holds `key`: the last region starting at or before it, if it has not
    /// ended yet.
    pub fn search(&self, key: &[u8]) -> Option<&RegionInfo> {
        let (_, info) = self.by_start.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back()?;
        range_holds(region_of(info), key).then_some(info)
    }

    /// Every region in key order.
    pub fn iter(&self) -> impl Iterator<Item = &RegionInfo> {
        self.by_start.values()
    }

    /// Regions and leaders recorded on `store_id`.
    pub fn store_counts(&self, store_id: u64) -> StoreCounts {
        self.stores.get(&store_id).copied().unwrap_or_default()
    }

    /// The ids of the regions whose ranges intersect `region`'s, in key order.
    pub fn overlaps(&self, region: &Region) -> Vec<u64> {
        let mut found = Vec::new();
        // The region starting at or before our start overlaps if it has not ended by then.
        if let Some((_, info)) =
            self.by_start.range::<[u8], _>((Bound::Unbounded, Bound::Included(region.start_key.as_slice()))).next_back()
        {
            let before = region_of(info);
            if before.end_key.is_empty() || before.end_key.as_slice() > region.start_key.as_slice() {
                found.push(before.region_id);
            }
        }
        // Then every region starting strictly inside our range.
        let end = if region.end_key.is_empty() { Bound::Unbounded } else { Bound::Excluded(region.end_key.as_slice()) };
        for (_, info) in self.by_start.range::<[u8], _>((Bound::Excluded(region.start_key.as_slice()), end)) {
            found.push(region_of(info).region_id);
        }
        found
    }

    /// A report is stale when its epoch is older than the region with its id or than any region it
    /// overlaps, or when it has that region's epoch but an older term (a deposed leader still
    /// reporting).
    pub fn is_stale(&self, report: &RegionReport) -> bool {
        let epoch = epoch_of(&report.region);
        if let Some(known) = self.get(report.region.region_id) {
            let known_epoch = epoch_of(region_of(known));
            if is_older(epoch, known_epoch) || (epoch == known_epoch && report.term < known.term) {
                return true;
            }
        }
        self.overlaps(&report.region)
            .into_iter()
            .filter_map(|region_id| self.get(region_id))
            .any(|other| is_older(epoch, epoch_of(region_of(other))))
    }

    /// Applies a report (tinykv's `processRegionHeartbeat`): ignored if stale; otherwise the reported
    /// region replaces its old self and takes its range from every region it overlaps, and the
    /// leader, term and approximate size are recorded. A size not measured yet is the old one for
    /// the same range, else an estimate: half of each region it took a part of, all of each region
    /// it took whole.
    pub fn heartbeat(&mut self, report: &RegionReport) -> HeartbeatOutcome {
        if self.is_stale(report) {
            return HeartbeatOutcome::Stale;
        }
        let region_id = report.region.region_id;
        let known = self.get(region_id);
        let same_range = known.is_some_and(|k| {
            let k = region_of(k);
            (&k.start_key, &k.end_key) == (&report.region.start_key, &report.region.end_key)
        });
        let (estimated_size, estimated_keys) = match known {
            Some(k) if same_range => (k.approximate_size, k.approximate_keys),
            _ => self.estimate(&report.region),
        };
        let new = RegionInfo {
            region: Some(report.region.clone()),
            leader_store_id: report.leader_store_id,
            leader_peer_id: report.leader_peer_id,
            term: report.term,
            approximate_size: report.approximate_size.unwrap_or(estimated_size),
            approximate_keys: report.approximate_keys.unwrap_or(estimated_keys),
            // Kept by the caller, in memory: the tree holds what is persisted.
            pending_peers: Vec::new(),
        };
        match known {
            Some(known) if *known == new => return HeartbeatOutcome::Unchanged,
            Some(known)
                if known.region == new.region
                    && (known.leader_store_id, known.leader_peer_id, known.term)
                        == (new.leader_store_id, new.leader_peer_id, new.term) =>
            {
                // Same region, same leader: only the size moved. Update in place: the range did not
                // change, so nothing else is replaced and no count moves.
                let start = report.region.start_key.clone();
                *self.by_start.get_mut(&start).expect("indexed region is in the tree") = new;
                return HeartbeatOutcome::StatsOnly;
            }
            _ => {}
        }
        let mut touched = self.insert(new);
        touched.retain(|&r| r != region_id);
        HeartbeatOutcome::Updated { touched }
    }

    /// The size and keys a region of `region`'s range has, by what the tree knows of that range.
    fn estimate(&self, region: &Region) -> (u64, u64) {
        let mut estimate = (0, 0);
        for other in self.overlaps(region).into_iter().filter_map(|region_id| self.get(region_id)) {
            let within = region_of(other).start_key >= region.start_key && !ends_after(region_of(other), region);
            let share = if within { 1 } else { 2 };
            estimate.0 += other.approximate_size / share;
            estimate.1 += other.approximate_keys / share;
        }
        estimate
    }

    /// Puts `info` in the tree: it replaces the region with its id, and every region its range
    /// overlaps either keeps its [`remainder`] or goes. Returns the ids of the regions that went or
    /// changed (its own id included if it was there). Panics if `info` has no region, a caller bug.
    pub fn insert(&mut self, info: RegionInfo) -> Vec<u64> {
        let region = info.region.clone().expect("RegionTree::insert needs a region");
        let mut touched = self.overlaps(&region);
        if self.start_of.contains_key(&region.region_id) && !touched.contains(&region.region_id) {
            touched.push(region.region_id);
        }
        for &region_id in &touched {
            let Some(old) = self.remove(region_id) else { continue };
            if region_id == region.region_id {
                continue;
            }
            if let Some(kept) = remainder(&old, &region) {
                self.put(kept);
            }
        }
        self.put(info);
        touched
    }

    /// Files `info` under its start key; its range overlaps nothing in the tree.
    fn put(&mut self, info: RegionInfo) {
        let region = region_of(&info);
        let (region_id, start) = (region.region_id, region.start_key.clone());
        self.count(&info, true);
        self.start_of.insert(region_id, start.clone());
        self.by_start.insert(start, info);
    }

    /// Removes a region from the tree.
    pub fn remove(&mut self, region_id: u64) -> Option<RegionInfo> {
        let start = self.start_of.remove(&region_id)?;
        let info = self.by_start.remove(&start).expect("indexed region is in the tree");
        self.count(&info, false);
        Some(info)
    }

    /// Adds (or takes away) a region's contribution to its stores' counts.
    fn count(&mut self, info: &RegionInfo, add: bool) {
        let apply = |value: &mut u64, by: u64| {
            *value = if add { *value + by } else { value.saturating_sub(by) };
        };
        for peer in &region_of(info).peers {
            apply(&mut self.stores.entry(peer.store_id).or_default().region_count, 1);
        }
        if info.leader_store_id != 0 {
            apply(&mut self.stores.entry(info.leader_store_id).or_default().leader_count, 1);
        }
    }

    /// Checks the tree's invariants: ranges in order and disjoint, the id index and the store counts
    /// match the regions. For tests; panics naming the broken invariant.
    #[cfg(test)]
    pub(crate) fn check_invariants(&self) {
        assert_eq!(self.by_start.len(), self.start_of.len(), "id index and tree differ in size");
        let mut previous_end: Option<&[u8]> = None;
        let mut expected: HashMap<u64, StoreCounts> = HashMap::new();
        for (start, info) in &self.by_start {
            let region = region_of(info);
            assert_eq!(start, &region.start_key, "region {} is filed under another start key", region.region_id);
            assert_eq!(self.start_of.get(&region.region_id), Some(start), "id index of region {}", region.region_id);
            if let Some(end) = previous_end {
                assert!(
                    !end.is_empty() && end <= start.as_slice(),
                    "region {} overlaps its predecessor",
                    region.region_id
                );
            }
            previous_end = Some(region.end_key.as_slice());
            for peer in &region.peers {
                expected.entry(peer.store_id).or_default().region_count += 1;
            }
            if info.leader_store_id != 0 {
                expected.entry(info.leader_store_id).or_default().leader_count += 1;
            }
        }
        for (store_id, counts) in &self.stores {
            assert_eq!(expected.get(store_id).copied().unwrap_or_default(), *counts, "counts of store {store_id}");
        }
        for store_id in expected.keys() {
            assert!(self.stores.contains_key(store_id), "store {store_id} is missing from the counts");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::Peer;

    /// A region [start, end) on stores 1..=3 (peer id = region_id * 10 + store_id).
    fn region(region_id: u64, start: &str, end: &str, conf_ver: u64, version: u64) -> Region {
        Region {
            region_id,
            start_key: start.as_bytes().to_vec(),
            end_key: end.as_bytes().to_vec(),
            epoch: Some(RegionEpoch { conf_ver, version }),
            peers: (1..=3).map(|store_id| Peer { peer_id: region_id * 10 + store_id, store_id }).collect(),
        }
    }

    /// A report by the leader on `store_id`, term 5, size 0.
    fn led(region: Region, store_id: u64) -> RegionReport {
        let leader_peer_id = region.peers.iter().find(|p| p.store_id == store_id).map_or(0, |p| p.peer_id);
        RegionReport { region, leader_store_id: store_id, leader_peer_id, term: 5, ..Default::default() }
    }

    fn ids(tree: &RegionTree) -> Vec<u64> {
        tree.iter().map(|info| region_of(info).region_id).collect()
    }

    fn epoch(tree: &RegionTree, region_id: u64) -> (u64, u64) {
        let epoch = epoch_of(region_of(tree.get(region_id).unwrap()));
        (epoch.conf_ver, epoch.version)
    }

    fn updated(outcome: HeartbeatOutcome) -> bool {
        matches!(outcome, HeartbeatOutcome::Updated { .. })
    }

    #[test]
    fn an_identical_heartbeat_changes_nothing() {
        let mut tree = RegionTree::new();
        assert!(updated(tree.heartbeat(&led(region(1, "", "", 1, 1), 1))));
        let before = tree.get(1).cloned();
        assert_eq!(tree.heartbeat(&led(region(1, "", "", 1, 1), 1)), HeartbeatOutcome::Unchanged);
        assert_eq!(tree.get(1).cloned(), before);
        tree.check_invariants();
    }

    #[test]
    fn a_newer_version_is_accepted() {
        let mut tree = RegionTree::new();
        tree.heartbeat(&led(region(1, "", "", 1, 1), 1));
        assert!(updated(tree.heartbeat(&led(region(1, "", "m", 1, 2), 1))));
        assert_eq!(epoch(&tree, 1), (1, 2));
        assert_eq!(tree.get(1).unwrap().region.as_ref().unwrap().end_key, b"m");
    }

    #[test]
    fn a_stale_version_is_rejected() {
        let mut tree = RegionTree::new();
        tree.heartbeat(&led(region(1, "", "m", 1, 2), 1));
        assert_eq!(tree.heartbeat(&led(region(1, "", "", 1, 1), 1)), HeartbeatOutcome::Stale);
        assert_eq!(epoch(&tree, 1), (1, 2));
        // Stale even with a newer conf_ver: it has missed the split.
        assert_eq!(tree.heartbeat(&led(region(1, "", "", 2, 1), 1)), HeartbeatOutcome::Stale);
        assert_eq!(epoch(&tree, 1), (1, 2));
    }

    #[test]
    fn a_newer_version_and_conf_ver_are_accepted() {
        let mut tree = RegionTree::new();
        tree.heartbeat(&led(region(1, "", "", 1, 1), 1));
        assert!(updated(tree.heartbeat(&led(region(1, "", "", 2, 2), 1))));
        assert_eq!(epoch(&tree, 1), (2, 2));
    }

    #[test]
    fn a_stale_conf_ver_is_rejected() {
        let mut tree = RegionTree::new();
        tree.heartbeat(&led(region(1, "", "", 2, 1), 1));
        assert_eq!(tree.heartbeat(&led(region(1, "", "", 1, 1), 1)), HeartbeatOutcome::Stale);
        assert_eq!(tree.heartbeat(&led(region(1, "", "", 1, 3), 1)), HeartbeatOutcome::Stale);
        assert_eq!(epoch(&tree, 1), (2, 1));
    }

    #[test]
    fn removed_peers_and_peers_added_back_are_recorded_with_their_stores() {
        let mut tree = RegionTree::new();
        let full = region(1, "", "", 1, 1);
        tree.heartbeat(&led(full.clone(), 1));
        assert_eq!(tree.store_counts(3).region_count, 1);
        // Remove the peer on store 3 (conf_ver + 1).
        let mut two = full.clone();
        two.peers.retain(|p| p.store_id != 3);
        two.epoch = Some(RegionEpoch { conf_ver: 2, version: 1 });
        assert!(updated(tree.heartbeat(&led(two, 1))));
        assert_eq!(tree.get(1).unwrap().region.as_ref().unwrap().peers.len(), 2);
        assert_eq!(tree.store_counts(3).region_count, 0);
        // Add it back (conf_ver + 1 again).
        let mut back = full;
        back.epoch = Some(RegionEpoch { conf_ver: 3, version: 1 });
        assert!(updated(tree.heartbeat(&led(back, 1))));
        assert_eq!(tree.get(1).unwrap().region.as_ref().unwrap().peers.len(), 3);
        assert_eq!(tree.store_counts(3).region_count, 1);
        tree.check_invariants();
    }

    #[test]
    fn a_peer_change_with_the_same_epoch_still_updates() {
        // Peers are compared, not only epochs: a report must never be dropped just because its
        // epoch did not move.
        let mut tree = RegionTree::new();
        tree.heartbeat(&led(region(1, "", "", 1, 1), 1));
        let mut fewer = region(1, "", "", 1, 1);
        fewer.peers.pop();
        assert!(updated(tree.heartbeat(&led(fewer, 1))));
        assert_eq!(tree.store_counts(3).region_count, 0);
        tree.check_invariants();
    }

    #[test]
    fn a_leader_change_is_recorded_and_moves_the_leader_count() {
        let mut tree = RegionTree::new();
        tree.heartbeat(&led(region(1, "", "", 1, 1), 1));
        assert_eq!((tree.store_counts(1).leader_count, tree.store_counts(2).leader_count), (1, 0));
        let new_leader = RegionReport { term: 6, ..led(region(1, "", "", 1, 1), 2) };
        assert!(updated(tree.heartbeat(&new_leader)));
        let info = tree.get(1).unwrap();
        assert_eq!((info.leader_store_id, info.leader_peer_id, info.term), (2, 12, 6));
        assert_eq!((tree.store_counts(1).leader_count, tree.store_counts(2).leader_count), (0, 1));
        // The deposed leader, still reporting its old term, does not take it back.
        assert_eq!(tree.heartbeat(&led(region(1, "", "", 1, 1), 1)), HeartbeatOutcome::Stale);
        assert_eq!(tree.get(1).unwrap().leader_store_id, 2);
        tree.check_invariants();
    }

    #[test]
    fn an_approximate_size_change_is_recorded() {
        let mut tree = RegionTree::new();
        tree.heartbeat(&led(region(1, "", "", 1, 1), 1));
        let bigger = RegionReport {
            approximate_size: Some(4096),
            approximate_keys: Some(40),
            ..led(region(1, "", "", 1, 1), 1)
        };
        assert_eq!(tree.heartbeat(&bigger), HeartbeatOutcome::StatsOnly);
        let info = tree.get(1).unwrap();
        assert_eq!((info.approximate_size, info.approximate_keys), (4096, 40));
        // A report that has not measured it keeps what is known.
        assert_eq!(tree.heartbeat(&led(region(1, "", "", 1, 1), 1)), HeartbeatOutcome::Unchanged);
        assert_eq!(tree.get(1).unwrap().approximate_size, 4096);
        tree.check_invariants();
    }

    #[test]
    fn counts_per_store_follow_regions_and_leaders() {
        let mut tree = RegionTree::new();
        tree.heartbeat(&led(region(1, "", "g", 1, 2), 1));
        tree.heartbeat(&led(region(2, "g", "p", 1, 2), 2));
        tree.heartbeat(&led(region(3, "p", "", 1, 2), 2));
        for store_id in 1..=3 {
            assert_eq!(tree.store_counts(store_id).region_count, 3);
        }
        assert_eq!((1..=3).map(|s| tree.store_counts(s).leader_count).collect::<Vec<_>>(), vec![1, 2, 0]);
        assert_eq!(tree.store_counts(4), StoreCounts::default());
        tree.check_invariants();
    }

    #[test]
    fn regions_are_listed_in_key_order() {
        let mut tree = RegionTree::new();
        for (region_id, start, end) in [(7, "p", ""), (3, "", "c"), (9, "g", "p"), (5, "c", "g")] {
            tree.heartbeat(&led(region(region_id, start, end, 1, 2), 1));
        }
        assert_eq!(ids(&tree), vec![3, 5, 9, 7]);
        assert_eq!(tree.len(), 4);
        tree.check_invariants();
    }

    #[test]
    fn split_heartbeats_replace_the_parent_and_each_side_is_found_by_key() {
        let mut tree = RegionTree::new();
        tree.heartbeat(&led(region(1, "", "", 1, 1), 1));
        assert_eq!(region_of(tree.search(b"zzz").unwrap()).region_id, 1);
        // The new right region arrives first: it takes its part of the parent's (older) range.
        let outcome = tree.heartbeat(&led(region(2, "m", "", 1, 2), 1));
        assert_eq!(outcome, HeartbeatOutcome::Updated { touched: vec![1] });
        assert_eq!(region_of(tree.search(b"zzz").unwrap()).region_id, 2);
        assert_eq!(region_of(tree.search(b"a").unwrap()).region_id, 1, "the parent keeps the left part");
        // Then the left part, shrunk, with the same id as the parent.
        assert!(updated(tree.heartbeat(&led(region(1, "", "m", 1, 2), 1))));
        assert_eq!(ids(&tree), vec![1, 2]);
        assert_eq!(region_of(tree.search(b"").unwrap()).region_id, 1);
        assert_eq!(region_of(tree.search(b"l\xff").unwrap()).region_id, 1);
        assert_eq!(region_of(tree.search(b"m").unwrap()).region_id, 2);
        assert_eq!(region_of(tree.search(b"\xff\xff").unwrap()).region_id, 2);
        assert_eq!(tree.store_counts(2).region_count, 2);
        tree.check_invariants();
    }

    #[test]
    fn split_heartbeats_in_the_other_order_end_the_same() {
        let mut tree = RegionTree::new();
        tree.heartbeat(&led(region(1, "", "", 1, 1), 1));
        // The left part first: the parent shrinks, and [m, ..) is uncovered until the right reports
        // (the split's leader reports both at once, see `state/heartbeat.rs`).
        assert_eq!(tree.heartbeat(&led(region(1, "", "m", 1, 2), 1)), HeartbeatOutcome::Updated { touched: vec![] });
        assert!(tree.search(b"q").is_none());
        assert!(updated(tree.heartbeat(&led(region(2, "m", "", 1, 2), 2))));
        assert_eq!(ids(&tree), vec![1, 2]);
        assert_eq!(region_of(tree.search(b"q").unwrap()).region_id, 2);
        tree.check_invariants();
    }

    #[test]
    fn a_heartbeat_overlapping_a_newer_region_is_rejected() {
        let mut tree = RegionTree::new();
        tree.heartbeat(&led(region(1, "", "m", 1, 2), 1));
        tree.heartbeat(&led(region(2, "m", "", 1, 2), 1));
        // An unknown region with an old epoch over both (say, a lagging replica's view) changes nothing.
        assert_eq!(tree.heartbeat(&led(region(3, "a", "z", 1, 1), 1)), HeartbeatOutcome::Stale);
        // The parent's pre-split view, reported late, is stale too.
        assert_eq!(tree.heartbeat(&led(region(1, "", "", 1, 1), 1)), HeartbeatOutcome::Stale);
        assert_eq!(ids(&tree), vec![1, 2]);
        // A newer region that covers both (a merge) replaces them.
        assert_eq!(tree.heartbeat(&led(region(1, "", "", 1, 3), 1)), HeartbeatOutcome::Updated { touched: vec![2] });
        assert_eq!(ids(&tree), vec![1]);
        tree.check_invariants();
    }

    #[test]
    fn overlaps_respect_half_open_ranges() {
        let mut tree = RegionTree::new();
        tree.insert(RegionInfo { region: Some(region(1, "", "c", 1, 1)), ..Default::default() });
        tree.insert(RegionInfo { region: Some(region(2, "c", "g", 1, 1)), ..Default::default() });
        tree.insert(RegionInfo { region: Some(region(3, "g", "", 1, 1)), ..Default::default() });
        assert_eq!(tree.overlaps(&region(9, "c", "g", 1, 1)), vec![2]);
        assert_eq!(tree.overlaps(&region(9, "b", "c", 1, 1)), vec![1]);
        assert_eq!(tree.overlaps(&region(9, "b", "h", 1, 1)), vec![1, 2, 3]);
        assert_eq!(tree.overlaps(&region(9, "x", "", 1, 1)), vec![3]);
        assert_eq!(tree.overlaps(&region(9, "", "", 1, 1)), vec![1, 2, 3]);
        assert!(tree.search(b"c").is_some_and(|i| region_of(i).region_id == 2));
    }

    /// Issue 14, item 10: a split's right half reported before its left half wiped the parent out of
    /// the tree, leaving its left part uncovered. The parent keeps what the newer region leaves of it.
    #[test]
    fn a_newer_region_inside_an_older_one_trims_it_and_leaves_no_hole() {
        let mut tree = RegionTree::new();
        tree.heartbeat(&led(region(1, "", "", 1, 1), 1));
        tree.heartbeat(&led(region(2, "m", "", 1, 2), 2));
        assert_eq!(ids(&tree), vec![1, 2]);
        let parent = region_of(tree.get(1).unwrap());
        assert_eq!((parent.end_key.as_slice(), epoch_of(parent)), (&b"m"[..], RegionEpoch { conf_ver: 1, version: 1 }));
        assert_eq!(region_of(tree.search(b"a").unwrap()).region_id, 1);
        // A piece in the middle: the parent keeps its left part (a split's left half keeps its id).
        tree.heartbeat(&led(region(3, "c", "f", 1, 3), 1));
        assert_eq!(ids(&tree), vec![1, 3, 2]);
        assert_eq!(region_of(tree.get(1).unwrap()).end_key, b"c");
        // The parent's own newer report takes its place as usual.
        assert!(updated(tree.heartbeat(&led(region(1, "", "c", 1, 3), 1))));
        assert_eq!(ids(&tree), vec![1, 3, 2]);
        tree.check_invariants();
    }
}
