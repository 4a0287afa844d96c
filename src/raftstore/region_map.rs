//! The node's routing table: which local region holds a key, shared between the raftstore (writer)
//! and the REST handlers (readers). A stale answer is harmless: the raftstore re-checks the key and
//! epoch when it proposes and when it applies.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;

use parking_lot::RwLock;

use crate::proto::Region;

#[derive(Default)]
pub struct RegionMap {
    table: RwLock<Table>,
    /// Woken when a region changes (a split, a snapshot), so placement hears of it at once.
    changed: tokio::sync::Notify,
}

#[derive(Default)]
struct Table {
    /// start_key → region. Regions on one store never overlap.
    by_start: BTreeMap<Vec<u8>, Region>,
    /// region id → its key in `by_start`, so replacing a region costs O(log n), not a scan of every
    /// region (a restart inserts them all: quadratic with a scan).
    start_of: HashMap<u64, Vec<u8>>,
}

/// Whether `key` falls in `[start_key, end_key)` (an empty end key is unbounded).
pub fn region_contains(region: &Region, key: &[u8]) -> bool {
    key >= region.start_key.as_slice() && (region.end_key.is_empty() || key < region.end_key.as_slice())
}

/// Whether two regions' ranges share a key (an empty end key is unbounded).
pub fn ranges_overlap(a: &Region, b: &Region) -> bool {
    let a_starts_before_b_ends = b.end_key.is_empty() || a.start_key < b.end_key;
    let a_ends_after_b_starts = a.end_key.is_empty() || a.end_key > b.start_key;
    a_starts_before_b_ends && a_ends_after_b_starts
}

impl RegionMap {
    /// The local region whose range holds `key`.
    pub fn locate(&self, key: &[u8]) -> Option<Region> {
        let table = self.table.read();
        let (_, region) = table.by_start.range::<[u8], _>((Bound::Unbounded, Bound::Included(key))).next_back()?;
        region_contains(region, key).then(|| region.clone())
    }

    pub fn insert(&self, region: Region) {
        let mut table = self.table.write();
        let (region_id, start_key) = (region.region_id, region.start_key.clone());
        if let Some(old_start) = table.start_of.remove(&region_id) {
            table.by_start.remove(&old_start);
        }
        if let Some(displaced) = table.by_start.insert(start_key.clone(), region) {
            table.start_of.remove(&displaced.region_id);
        }
        table.start_of.insert(region_id, start_key);
        drop(table);
        self.changed.notify_one();
    }

    /// Stops routing to a region (its peer here was destroyed).
    pub fn remove(&self, region_id: u64) {
        let mut table = self.table.write();
        if let Some(start_key) = table.start_of.remove(&region_id) {
            table.by_start.remove(&start_key);
        }
        drop(table);
        self.changed.notify_one();
    }

    /// The regions whose ranges overlap `region`'s, other than `region` itself.
    pub fn overlapping(&self, region: &Region) -> Vec<Region> {
        let table = self.table.read();
        table
            .by_start
            .values()
            .filter(|r| r.region_id != region.region_id && ranges_overlap(r, region))
            .cloned()
            .collect()
    }

    /// Resolves after the next change of a region (or at once if one happened since the last call).
    pub async fn changed(&self) {
        self.changed.notified().await;
    }

    pub fn regions(&self) -> Vec<Region> {
        self.table.read().by_start.values().cloned().collect()
    }

    /// Whether no region is held (without copying the table, as [`Self::regions`] does).
    pub fn is_empty(&self) -> bool {
        self.table.read().by_start.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn region(region_id: u64, start: &[u8], end: &[u8]) -> Region {
        Region { region_id, start_key: start.to_vec(), end_key: end.to_vec(), ..Default::default() }
    }

    #[test]
    fn locate_finds_the_region_whose_range_holds_the_key() {
        let map = RegionMap::default();
        map.insert(region(1, b"", b"m"));
        map.insert(region(2, b"m", b""));
        assert_eq!(map.locate(b"").unwrap().region_id, 1);
        assert_eq!(map.locate(b"lzzz").unwrap().region_id, 1);
        assert_eq!(map.locate(b"m").unwrap().region_id, 2);
        assert_eq!(map.locate(b"\xff\xff").unwrap().region_id, 2);
    }

    #[test]
    fn locate_misses_keys_in_a_gap() {
        let map = RegionMap::default();
        map.insert(region(2, b"c", b"f"));
        assert!(map.locate(b"a").is_none());
        assert!(map.locate(b"f").is_none());
        assert_eq!(map.locate(b"d").unwrap().region_id, 2);
    }

    #[test]
    fn overlapping_finds_other_regions_sharing_part_of_a_range() {
        let map = RegionMap::default();
        map.insert(region(1, b"", b"c"));
        map.insert(region(2, b"c", b"f"));
        map.insert(region(3, b"f", b""));
        let ids = |r: Region| map.overlapping(&r).iter().map(|r| r.region_id).collect::<Vec<_>>();
        assert_eq!(ids(region(9, b"d", b"e")), vec![2]);
        assert_eq!(ids(region(9, b"b", b"g")), vec![1, 2, 3]);
        assert_eq!(ids(region(9, b"", b"")), vec![1, 2, 3]);
        assert_eq!(ids(region(2, b"c", b"f")), Vec::<u64>::new());
        assert_eq!(ids(region(9, b"f", b"")), vec![3]);
        map.remove(3);
        assert_eq!(ids(region(9, b"f", b"")), Vec::<u64>::new());
    }

    #[test]
    fn reinserting_a_region_replaces_its_old_range() {
        let map = RegionMap::default();
        assert!(map.is_empty());
        map.insert(region(1, b"", b""));
        map.insert(region(1, b"", b"k"));
        assert_eq!(map.regions().len(), 1);
        assert!(!map.is_empty());
        assert!(map.locate(b"z").is_none());
        // A region moved to a new start key leaves no entry at its old one.
        map.insert(region(1, b"b", b"k"));
        assert!(map.locate(b"a").is_none());
        assert_eq!(map.locate(b"c").unwrap().region_id, 1);
        // One that takes another's start key displaces it for good.
        map.insert(region(2, b"b", b"k"));
        map.remove(1);
        assert_eq!(map.locate(b"c").unwrap().region_id, 2);
        assert_eq!(map.regions().len(), 1);
        map.remove(2);
        assert!(map.is_empty());
    }
}
