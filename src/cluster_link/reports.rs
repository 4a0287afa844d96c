//! Which of this store's peers a heartbeat reports to placement (issue 15, item 5; TiKV's region
//! heartbeat on change, plus a slow periodic one). Reporting every peer every heartbeat made
//! placement's cost grow with the regions that exist: with 10,000 regions it was half a core.
//!
//! A peer is reported when something placement keeps about it changed since the report placement
//! last acknowledged: a region new to this store, its range, epoch or peers, whether this store
//! leads it, and for a leader its term, its pending peers, and its size or key count once either
//! moved by more than a tenth (or the size by [`SIZE_STEP`]); and a leader while placement sends it an
//! operator, and for [`OPERATOR_BEATS`] heartbeats after, so placement judges the operator's steps
//! against a fresh report whatever the step changes. Every peer is also reported once per
//! rotation of [`ROTATION_BEATS`] heartbeats, a slice at each beat (so not all at once), which
//! repairs anything missed; and all of them in a full report: the first heartbeat, and the one after
//! placement asks for it (it restarted). A heartbeat that fails confirms nothing, and what it carried
//! is sent again with the next one, whatever it says then: placement may have applied the failed
//! heartbeat (its answer was lost), so what it holds of those regions is unknown.

use std::collections::{HashMap, HashSet};

use crate::proto::{Peer, PeerReport, Region};

/// Every peer is reported at least once per this many heartbeats (a minute at 500 ms), changed or not.
pub const ROTATION_BEATS: u64 = 120;

/// A size change this big is reported even when it is less than a tenth of the region.
pub const SIZE_STEP: u64 = 1 << 20;

/// A region is reported in every heartbeat for this many heartbeats after its last operator came.
pub const OPERATOR_BEATS: u64 = 4;

/// What placement was last told of one peer.
#[derive(Debug, Clone, PartialEq)]
struct Reported {
    region: Region,
    is_leader: bool,
    term: u64,
    leader_peer_id: u64,
    approximate_size: Option<u64>,
    approximate_keys: Option<u64>,
    pending_peers: Vec<Peer>,
}

impl Reported {
    fn of(report: &PeerReport, region: &Region) -> Reported {
        Reported {
            region: region.clone(),
            is_leader: report.is_leader,
            term: report.term,
            leader_peer_id: report.leader_peer_id,
            approximate_size: report.approximate_size,
            approximate_keys: report.approximate_keys,
            pending_peers: report.pending_peers.clone(),
        }
    }

    /// Whether `report` says something placement should hear. A follower's term and leader do not
    /// count: placement learns them from the leader.
    fn differs(&self, report: &PeerReport, region: &Region) -> bool {
        if self.region != *region || self.is_leader != report.is_leader {
            return true;
        }
        report.is_leader
            && ((self.term, self.leader_peer_id) != (report.term, report.leader_peer_id)
                || self.pending_peers != report.pending_peers
                || moved(self.approximate_size, report.approximate_size, SIZE_STEP)
                || moved(self.approximate_keys, report.approximate_keys, u64::MAX))
    }
}

/// A measure moved enough to report: by more than a tenth of the last reported one, or by `step`.
/// An unmeasured region (`None`, after a split or a snapshot) says nothing new: placement keeps
/// the last value until the next measure.
fn moved(reported: Option<u64>, now: Option<u64>, step: u64) -> bool {
    match (reported, now) {
        (_, None) => false,
        (None, Some(_)) => true,
        (Some(before), Some(now)) => {
            let delta = before.abs_diff(now);
            delta > before / 10 || delta >= step
        }
    }
}

/// Where a region falls in the rotation: spread by a hash, as region ids come in runs.
fn rotation_slot(region_id: u64) -> u64 {
    (region_id.wrapping_mul(0x9e37_79b9_7f4a_7c15) >> 32) % ROTATION_BEATS
}

/// One heartbeat's reports, and what confirming them records.
#[derive(Debug)]
pub struct Batch {
    pub peers: Vec<PeerReport>,
    /// Every peer the store holds is in `peers`.
    pub full: bool,
    sent: Vec<(u64, Reported)>,
    /// The raftstore's generation the statuses were taken at (see [`Wanted`]), if it said.
    generation: Option<u64>,
}

/// Which peers' statuses the next [`Reports::select`] needs from the raftstore: those a round
/// visited after generation `since` (every peer when 0) and those [`Wanted::includes`] names. Any
/// other peer is unchanged since placement last acknowledged it and not due in the rotation.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub since: u64,
    slot: u64,
    /// Regions with an operator under way, and those a failed heartbeat carried.
    extra: HashSet<u64>,
}

impl Wanted {
    /// Whether the next batch needs this peer's status whether it changed or not.
    pub fn includes(&self, region_id: u64) -> bool {
        rotation_slot(region_id) == self.slot || self.extra.contains(&region_id)
    }
}

/// What placement has acknowledged of this store's peers.
#[derive(Debug)]
pub struct Reports {
    acknowledged: HashMap<u64, Reported>,
    full_wanted: bool,
    beat: u64,
    /// Regions with an operator under way: reported in every heartbeat up to this one.
    operated: HashMap<u64, u64>,
    /// The raftstore generation of the last acknowledged batch: peers no round visited after it
    /// are as placement acknowledged them (see [`Wanted`]). 0: none yet.
    since: u64,
    /// What a failed heartbeat carried, sent again with the next one.
    resend: HashSet<u64>,
}

impl Default for Reports {
    fn default() -> Self {
        Reports::new()
    }
}

impl Reports {
    /// Nothing acknowledged yet: the first batch is a full report.
    pub fn new() -> Reports {
        Reports {
            acknowledged: HashMap::new(),
            full_wanted: true,
            beat: 0,
            operated: HashMap::new(),
            since: 0,
            resend: HashSet::new(),
        }
    }

    /// Placement asked for a full report: the next batch holds every peer.
    pub fn want_full(&mut self) {
        self.full_wanted = true;
    }

    /// Placement sent an operator for `region_id`: report it in the next heartbeats.
    pub fn operator_came(&mut self, region_id: u64) {
        self.operated.insert(region_id, self.beat + OPERATOR_BEATS);
    }

    /// The statuses the next [`Reports::select_changed`] needs. A full report, and the beat that
    /// starts a rotation (it forgets the peers the store no longer holds), need every peer.
    pub fn wanted(&self) -> Wanted {
        let slot = (self.beat + 1) % ROTATION_BEATS;
        let since = if self.full_wanted || slot == 0 { 0 } else { self.since };
        let extra = self.operated.keys().chain(&self.resend).copied().collect();
        Wanted { since, slot, extra }
    }

    /// The reports of this heartbeat from the statuses [`Reports::wanted`] asked for, taken at the
    /// raftstore's `generation`.
    pub fn select_changed(&mut self, current: Vec<PeerReport>, generation: u64) -> Batch {
        let mut batch = self.select(current);
        batch.generation = Some(generation);
        batch
    }

    /// The reports of this heartbeat, from `current`: one report for every peer the store holds.
    pub fn select(&mut self, current: Vec<PeerReport>) -> Batch {
        self.beat += 1;
        let full = self.full_wanted;
        let slot = self.beat % ROTATION_BEATS;
        if slot == 0 {
            // Once a rotation, forget the peers this store no longer holds.
            let held: std::collections::HashSet<u64> =
                current.iter().filter_map(|r| r.region.as_ref().map(|r| r.region_id)).collect();
            self.acknowledged.retain(|region_id, _| held.contains(region_id));
        }
        let beat = self.beat;
        self.operated.retain(|_, until| *until >= beat);
        let mut batch = Batch { peers: Vec::new(), full, sent: Vec::new(), generation: None };
        for report in current {
            let Some(region) = &report.region else { continue };
            let region_id = region.region_id;
            let due = full
                || rotation_slot(region_id) == slot
                || (report.is_leader && self.operated.contains_key(&region_id))
                || self.acknowledged.get(&region_id).is_none_or(|known| known.differs(&report, region));
            if due {
                batch.sent.push((region_id, Reported::of(&report, region)));
                batch.peers.push(report);
            }
        }
        batch
    }

    /// The heartbeat that carried `batch` failed: its regions go in the next one, changed or not.
    pub fn failed(&mut self, batch: Batch) {
        for (region_id, _) in batch.sent {
            self.acknowledged.remove(&region_id);
            self.resend.insert(region_id);
        }
    }

    /// Placement answered the heartbeat that carried `batch`.
    pub fn confirm(&mut self, batch: Batch) {
        if batch.full {
            self.full_wanted = false;
        }
        if let Some(generation) = batch.generation {
            self.since = generation;
        }
        for (region_id, _) in &batch.sent {
            self.resend.remove(region_id);
        }
        self.acknowledged.extend(batch.sent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::RegionEpoch;

    fn region(region_id: u64, version: u64) -> Region {
        Region {
            region_id,
            epoch: Some(RegionEpoch { conf_ver: 1, version }),
            peers: vec![Peer { peer_id: region_id * 10, store_id: 1 }],
            ..Default::default()
        }
    }

    fn leader(region_id: u64, term: u64, size: Option<u64>) -> PeerReport {
        PeerReport {
            region: Some(region(region_id, 1)),
            leader_peer_id: region_id * 10,
            term,
            is_leader: true,
            approximate_size: size,
            approximate_keys: size.map(|s| s / 100),
            ..Default::default()
        }
    }

    fn follower(region_id: u64, term: u64) -> PeerReport {
        PeerReport { is_leader: false, leader_peer_id: 99, ..leader(region_id, term, None) }
    }

    /// Selects from `current`, checks the batch holds exactly the `changed` regions plus this beat's
    /// slice of the rotation, and confirms it.
    fn beat(reports: &mut Reports, current: Vec<PeerReport>, changed: &[u64]) {
        let held: Vec<u64> = current.iter().map(|r| r.region.as_ref().unwrap().region_id).collect();
        let batch = reports.select(current);
        let slot = reports.beat % ROTATION_BEATS;
        let due: Vec<u64> = held.into_iter().filter(|id| changed.contains(id) || rotation_slot(*id) == slot).collect();
        assert_eq!(ids(&batch), due);
        assert!(!batch.full);
        reports.confirm(batch);
    }

    fn ids(batch: &Batch) -> Vec<u64> {
        batch.peers.iter().map(|r| r.region.as_ref().unwrap().region_id).collect()
    }

    #[test]
    fn the_first_report_is_full_then_only_what_changed_is_sent() {
        let mut reports = Reports::new();
        let current = |term_of_7: u64, size_of_8: u64, size_of_9: u64| -> Vec<PeerReport> {
            (1..=300)
                .map(|id| match id {
                    7 => leader(7, term_of_7, Some(1000)),
                    8 => leader(8, 1, Some(size_of_8)),
                    9 => leader(9, 1, Some(size_of_9)),
                    id => leader(id, 1, Some(1000)),
                })
                .collect()
        };
        let first = reports.select(current(1, 1000, 1000));
        assert!(first.full && first.peers.len() == 300);
        reports.confirm(first);
        beat(&mut reports, current(1, 1000, 1000), &[]);
        // A new term for region 7; 5% more bytes in region 8 (not enough), 20% in region 9; a new region.
        let mut now = current(2, 1050, 1200);
        now.push(leader(301, 1, None));
        beat(&mut reports, now.clone(), &[7, 9, 301]);
        beat(&mut reports, now, &[]);
    }

    #[test]
    fn a_report_placement_did_not_acknowledge_is_sent_again() {
        let mut reports = Reports::new();
        let first = reports.select(vec![leader(5, 1, Some(1000))]);
        reports.confirm(first);
        // Region 5's size doubles; the heartbeat carrying it fails.
        let lost = reports.select(vec![leader(5, 1, Some(2000))]);
        assert_eq!(ids(&lost), vec![5]);
        reports.failed(lost);
        beat(&mut reports, vec![leader(5, 1, Some(2000))], &[5]);
        beat(&mut reports, vec![leader(5, 1, Some(2000))], &[]);
        // Placement may have applied a heartbeat whose answer was lost: what it carried goes again
        // even when the region is back as placement last acknowledged it.
        let lost = reports.select(vec![leader(5, 1, Some(4000))]);
        reports.failed(lost);
        beat(&mut reports, vec![leader(5, 1, Some(2000))], &[5]);
    }

    #[test]
    fn leadership_epoch_size_and_pending_peers_are_changes_a_follower_s_term_is_not() {
        let mut reports = Reports::new();
        let first = reports.select(vec![follower(3, 1), leader(4, 1, Some(10 << 20))]);
        reports.confirm(first);
        // A follower seeing a new term: nothing. Region 4 grows by 1 MiB (under a tenth): reported.
        beat(&mut reports, vec![follower(3, 2), leader(4, 1, Some(11 << 20))], &[4]);
        // A size unknown again (a split, a snapshot) says nothing new.
        beat(&mut reports, vec![follower(3, 2), leader(4, 1, None)], &[]);
        // The follower becomes the leader; region 4 gets a pending peer, then a new epoch.
        let pending = PeerReport { pending_peers: vec![Peer { peer_id: 7, store_id: 2 }], ..leader(4, 1, None) };
        beat(&mut reports, vec![leader(3, 3, None), pending.clone()], &[3, 4]);
        let split = PeerReport { region: Some(region(4, 2)), ..pending };
        beat(&mut reports, vec![leader(3, 3, None), split], &[4]);
    }

    #[test]
    fn a_region_with_an_operator_is_reported_while_it_runs_and_a_few_beats_after() {
        let mut reports = Reports::new();
        let current = || vec![leader(1, 1, Some(1000)), leader(2, 1, Some(1000))];
        let first = reports.select(current());
        reports.confirm(first);
        reports.operator_came(2);
        for _ in 0..OPERATOR_BEATS {
            beat(&mut reports, current(), &[2]);
        }
        beat(&mut reports, current(), &[]);
    }

    #[test]
    fn every_peer_is_reported_within_a_rotation_and_all_at_once_when_placement_asks() {
        let mut reports = Reports::new();
        let current = || (1..=500).map(|id| leader(id, 1, Some(1000))).collect::<Vec<_>>();
        let first = reports.select(current());
        reports.confirm(first);
        let mut seen = std::collections::BTreeSet::new();
        let mut largest = 0;
        for _ in 0..ROTATION_BEATS {
            let batch = reports.select(current());
            largest = largest.max(batch.peers.len());
            seen.extend(ids(&batch));
            reports.confirm(batch);
        }
        assert_eq!(seen.len(), 500, "a rotation reports every peer");
        assert!(largest < 30, "spread over the rotation: {largest} in one beat");
        reports.want_full();
        let full = reports.select(current());
        assert!(full.full && full.peers.len() == 500);
        // Not acknowledged: asked again.
        drop(full);
        assert!(reports.select(current()).full);
    }

    #[test]
    fn the_raftstore_is_asked_only_for_what_changed_after_the_last_acknowledged_batch() {
        let mut reports = Reports::new();
        assert_eq!(reports.wanted().since, 0, "the first report is full");
        let first = reports.select_changed(vec![leader(5, 1, Some(1000)), leader(6, 1, Some(1000))], 7);
        reports.confirm(first);
        let wanted = reports.wanted();
        assert_eq!(wanted.since, 7);
        assert!(!wanted.includes(5) || rotation_slot(5) == (reports.beat + 1) % ROTATION_BEATS);
        // A batch that fails: the next one asks from the same generation, and for what it carried.
        let lost = reports.select_changed(vec![leader(5, 2, Some(1000))], 9);
        reports.failed(lost);
        let wanted = reports.wanted();
        assert_eq!(wanted.since, 7);
        assert!(wanted.includes(5));
        let again = reports.select_changed(vec![leader(5, 2, Some(1000))], 11);
        assert_eq!(ids(&again), vec![5]);
        reports.confirm(again);
        assert_eq!(reports.wanted().since, 11);
        assert!(!reports.wanted().extra.contains(&5), "sent again and acknowledged");
        // An operator's region is asked for whatever changed; placement asking for all, everything.
        reports.operator_came(6);
        assert!(reports.wanted().includes(6));
        reports.want_full();
        assert_eq!(reports.wanted().since, 0);
        // The beat that starts a rotation asks for every peer (it forgets those no longer held).
        let mut rotating = Reports::new();
        rotating.full_wanted = false;
        rotating.since = 3;
        rotating.beat = ROTATION_BEATS - 1;
        assert_eq!(rotating.wanted().since, 0);
    }
}
