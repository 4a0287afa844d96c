//! Which region records changed, in order: the nodes' region caches ask for the regions that changed
//! since their last answer instead of the whole table every heartbeat (with 10,000 regions the
//! table is a megabyte, asked for by every node twice a second).
//!
//! Every region record written (a new range, epoch, peers, leader; or gone) gets the next version
//! of this placement process. Versions start again at a restart, so each process has a random
//! incarnation: a cache of another incarnation, or one claiming a version not given out yet, gets
//! the whole table. Sizes and pending peers do not count: routing does not need them, and
//! `fekv ctl region list` asks for everything anyway.

use super::*;

use crate::proto::{GetRegionsRequest, GetRegionsResponse};

#[derive(Debug)]
pub(super) struct RegionLog {
    incarnation: u64,
    version: u64,
    /// region id → the version of its last change.
    changed_at: HashMap<u64, u64>,
    /// version → the region it changed (each region at its last version only).
    by_version: std::collections::BTreeMap<u64, u64>,
}

impl RegionLog {
    pub(super) fn new() -> RegionLog {
        RegionLog {
            // Never 0: a request that sets nothing (0) always gets the whole table.
            incarnation: rand::random::<u64>().max(1),
            version: 0,
            changed_at: HashMap::new(),
            by_version: std::collections::BTreeMap::new(),
        }
    }

    /// `region_id`'s record changed (or went).
    pub(super) fn touch(&mut self, region_id: u64) {
        self.version += 1;
        if let Some(old) = self.changed_at.insert(region_id, self.version) {
            self.by_version.remove(&old);
        }
        self.by_version.insert(self.version, region_id);
    }

    /// The regions changed after `version`, if the request can be answered with changes only.
    fn since(&self, req: &GetRegionsRequest) -> Option<impl Iterator<Item = u64> + '_> {
        let answerable = req.incarnation == self.incarnation && req.since_version <= self.version;
        answerable.then(|| self.by_version.range(req.since_version + 1..).map(|(_, &region_id)| region_id))
    }
}

impl Inner {
    /// Every region, or only those changed since the request's version (see the module doc).
    pub(super) fn regions_since(&self, req: &GetRegionsRequest) -> GetRegionsResponse {
        let log = &self.region_log;
        let mut reply = GetRegionsResponse { incarnation: log.incarnation, version: log.version, ..Default::default() };
        match log.since(req) {
            Some(changed) => {
                for region_id in changed {
                    match self.regions.get(region_id) {
                        Some(info) => reply.regions.push(self.region_info(info)),
                        None => reply.removed_region_ids.push(region_id),
                    }
                }
            }
            None => {
                reply.complete = true;
                reply.regions = self.region_infos();
            }
        }
        reply
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;

    fn ids(reply: &GetRegionsResponse) -> Vec<u64> {
        reply.regions.iter().filter_map(|r| r.region.as_ref().map(|r| r.region_id)).collect()
    }

    #[test]
    fn a_cache_gets_only_the_regions_changed_since_its_last_answer() {
        let dir = tempfile::tempdir().unwrap();
        let (p, stores, region) = three_stores(dir.path());
        let first = p.regions_since(&GetRegionsRequest::default());
        assert!(first.complete);
        assert_eq!(ids(&first), vec![region.region_id]);
        let next = |reply: &GetRegionsResponse| GetRegionsRequest {
            since_version: reply.version,
            incarnation: reply.incarnation,
        };
        // Nothing changed: nothing sent; the same report again changes nothing either.
        beat(&p, stores[0], vec![leader_report(&region, stores[0], 1)]);
        let idle = p.regions_since(&next(&first));
        assert!(!idle.complete && idle.regions.is_empty() && idle.removed_region_ids.is_empty(), "{idle:?}");
        assert_eq!(idle.version, first.version);
        // A split: both halves; then a leader change of the right one: that one only.
        let (left, right) = split(&region, "m", p.alloc_id().unwrap());
        beat(&p, stores[0], vec![leader_report(&left, stores[0], 1), leader_report(&right, stores[0], 1)]);
        let split_reply = p.regions_since(&next(&idle));
        assert_eq!(ids(&split_reply), vec![left.region_id, right.region_id]);
        beat(&p, stores[1], vec![leader_report(&right, stores[1], 2)]);
        let moved = p.regions_since(&next(&split_reply));
        assert_eq!(ids(&moved), vec![right.region_id]);
        assert_eq!(moved.regions[0].leader_store_id, stores[1]);
        // A region replaced by a newer one over both is reported gone.
        let whole = Region { epoch: Some(RegionEpoch { conf_ver: 9, version: 9 }), ..region.clone() };
        beat(&p, stores[0], vec![leader_report(&whole, stores[0], 3)]);
        let merged = p.regions_since(&next(&moved));
        assert_eq!((ids(&merged), merged.removed_region_ids.clone()), (vec![whole.region_id], vec![right.region_id]));
        // Another incarnation, or a version from the future: everything.
        let stranger = GetRegionsRequest { incarnation: merged.incarnation ^ 1, ..next(&merged) };
        assert!(p.regions_since(&stranger).complete);
        let future = GetRegionsRequest { since_version: merged.version + 1, ..next(&merged) };
        assert!(p.regions_since(&future).complete);
    }
}
