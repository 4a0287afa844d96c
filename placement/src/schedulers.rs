//! Scheduling decisions (tinykv 3C / PD's checkers and balancers) as pure functions: they look at a
//! snapshot of stores and regions and say what should move, and never do any I/O. Nothing here
//! executes a plan: the caller (`state/scheduling.rs`, once a second) turns a [`Plan`] into an
//! operator (`operators.rs`).
//!
//! - [`replica_check`]: every region gets back to `max_replicas` peers, a peer on a down or removed
//!   store is replaced (add the new peer first, then remove the dead one), and a replica too many is
//!   removed.
//! - [`balance_region`]: move one peer from the store holding the most region size to the one holding
//!   the least, only when the source still holds more than the target after the move (PD compares
//!   the scores after the move), a region weighing at least the average region (PD's tolerance, so
//!   small or unmeasured regions are not moved back and forth on noise).
//! - [`balance_leader`]: move one leader from the store with the most leaders to a peer's store with
//!   the fewest, only when they differ by more than one, never to a peer still catching up.
//!
//! Stores that missed heartbeats take no new peer or leadership and are not balanced; regions whose
//! leader is not known yet (a split's half electing one) and regions marked busy (an operator runs
//! there, or an administrator just changed them) count, but are not moved. Every choice is
//! deterministic: ties go to the lowest store or region id.

use std::collections::{BTreeMap, HashMap};

use crate::operators::Priority;
use crate::proto::{Region, RegionInfo, StoreInfo, StoreState};

/// One step of a plan, executed in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Add a peer of the region on this store.
    AddPeer { store_id: u64 },
    /// Make the region's peer on this store its leader.
    TransferLeader { to_store_id: u64 },
    /// Remove the region's peer on this store.
    RemovePeer { store_id: u64 },
}

/// What one region should go through, why, and how much it matters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub region_id: u64,
    pub steps: Vec<Step>,
    pub reason: &'static str,
    pub priority: Priority,
}

/// A store as the schedulers see it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreView {
    pub store_id: u64,
    /// Silent for longer than the store down time (or reported down).
    pub down: bool,
    /// Taken out of the cluster for good (or being drained).
    pub removed: bool,
    /// Not down, but silent for several heartbeats: it may be dying.
    pub silent: bool,
}

impl StoreView {
    /// Up and not removed: its peers are healthy replicas.
    pub fn is_suitable(&self) -> bool {
        !self.down && !self.removed
    }

    /// Up, not removed, and heartbeating: may take a new peer or a leadership, and be balanced.
    pub fn is_fit(&self) -> bool {
        self.is_suitable() && !self.silent
    }
}

/// A region as the schedulers see it.
#[derive(Debug, Clone, PartialEq)]
pub struct RegionView {
    pub region: Region,
    /// 0 when unknown.
    pub leader_store_id: u64,
    pub approximate_size: u64,
    /// Stores whose peer of this region is still catching up (pending).
    pub pending_store_ids: Vec<u64>,
    /// An operator runs for it, or an administrator just changed it: it counts, but balancers and
    /// the trimming of extra replicas leave it alone.
    pub busy: bool,
}

impl RegionView {
    pub fn region_id(&self) -> u64 {
        self.region.region_id
    }

    pub fn store_ids(&self) -> impl Iterator<Item = u64> + '_ {
        self.region.peers.iter().map(|p| p.store_id)
    }

    pub fn has_store(&self, store_id: u64) -> bool {
        self.store_ids().any(|s| s == store_id)
    }

    fn is_pending_on(&self, store_id: u64) -> bool {
        self.pending_store_ids.contains(&store_id)
    }

    /// Its leader is known: an operator for it can be carried out.
    fn has_leader(&self) -> bool {
        self.leader_store_id != 0
    }
}

/// Converts placement's view (`Placement::stores`, `Placement::regions`) for the schedulers. A store is
/// down when it is reported down or has been silent for more than `max_store_down_time_ms`, silent
/// after `silent_after_ms`; an offline store (being drained) counts as removed, like a removed one:
/// neither takes replicas, and the replica checker moves theirs away. A region's pending stores come
/// from its leader's pending peers; none is busy. A `RegionInfo` without a region is skipped.
pub fn views_from(
    stores: &[StoreInfo],
    regions: &[RegionInfo],
    now_ms: u64,
    max_store_down_time_ms: u64,
    silent_after_ms: u64,
) -> (Vec<StoreView>, Vec<RegionView>) {
    let stores = stores
        .iter()
        .map(|s| {
            let silence = now_ms.saturating_sub(s.last_heartbeat_ms);
            StoreView {
                store_id: s.store_id,
                down: s.state == StoreState::Down as i32 || silence > max_store_down_time_ms,
                removed: s.state == StoreState::Offline as i32 || s.state == StoreState::Removed as i32,
                silent: silence > silent_after_ms,
            }
        })
        .collect();
    let regions = regions
        .iter()
        .filter_map(|r| {
            Some(RegionView {
                region: r.region.clone()?,
                leader_store_id: r.leader_store_id,
                approximate_size: r.approximate_size,
                pending_store_ids: r.pending_peers.iter().map(|p| p.store_id).collect(),
                busy: false,
            })
        })
        .collect();
    (stores, regions)
}

fn ids_where(stores: &[StoreView], keep: impl Fn(&StoreView) -> bool) -> Vec<u64> {
    let mut ids: Vec<u64> = stores.iter().filter(|s| keep(s)).map(|s| s.store_id).collect();
    ids.sort_unstable();
    ids.dedup();
    ids
}

fn suitable_ids(stores: &[StoreView]) -> Vec<u64> {
    ids_where(stores, StoreView::is_suitable)
}

fn fit_ids(stores: &[StoreView]) -> Vec<u64> {
    ids_where(stores, StoreView::is_fit)
}

/// The peer that should lead once `leaving` goes: the lowest-id caught-up peer on a fit store other
/// than `leaving`, or `fallback` (the peer just added, caught up by then) when there is none.
fn new_leader(region: &RegionView, leaving: u64, stores: &[StoreView], fallback: Option<u64>) -> Option<u64> {
    let fit = fit_ids(stores);
    let may_lead = |p: &crate::proto::Peer| fit.binary_search(&p.store_id).is_ok() && !region.is_pending_on(p.store_id);
    region.region.lowest_store_to_lead(leaving, may_lead).or(fallback.filter(|&s| s != leaving))
}

/// Whether the region needs a repair: fewer than `max_replicas` peers, or a peer on a down or
/// removed store.
pub fn needs_repair(region: &RegionView, stores: &[StoreView], max_replicas: usize) -> bool {
    let suitable = suitable_ids(stores);
    region.region.peers.len() < max_replicas || region.store_ids().any(|s| suitable.binary_search(&s).is_err())
}

/// Replica checker. For each region with a known leader, in region id order, at most one plan:
/// - fewer than `max_replicas` peers: AddPeer on a fit (up, not removed, heartbeating) store lacking
///   the region, the one with the fewest regions, then the lowest id (high priority);
/// - otherwise, a peer on a down or removed store (the lowest such store id): AddPeer on a fit store
///   chosen the same way (skipped when the healthy peers already reach `max_replicas`), then, if the
///   region's recorded leader is on that store and the store is alive (offline: being drained),
///   TransferLeader to a caught-up peer, then RemovePeer of it (high priority). A dead leader needs
///   no transfer: the survivors elect a new one by themselves, and removing a peer that leads hands
///   the leadership over first anyway (see `operators.rs`). Without a store to add to, the dead peer
///   stays (never shrink below the target);
/// - otherwise, more than `max_replicas` peers and not busy: RemovePeer of one follower, a pending
///   one if any (it holds nothing yet), else the one on the store with the most regions (low
///   priority: PD's "remove extra replica").
///
/// The region counts used to choose a store include the peers added by earlier plans of the same call,
/// so several under-replicated regions spread over the emptiest stores.
pub fn replica_check(stores: &[StoreView], regions: &[RegionView], max_replicas: usize) -> Vec<Plan> {
    let suitable = suitable_ids(stores);
    let fit = fit_ids(stores);
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for r in regions {
        for s in r.store_ids() {
            *counts.entry(s).or_default() += 1;
        }
    }
    let mut order: Vec<&RegionView> = regions.iter().filter(|r| r.has_leader()).collect();
    order.sort_by_key(|r| r.region_id());

    let mut plans = Vec::new();
    for r in order {
        let count = |counts: &BTreeMap<u64, usize>, s: u64| counts.get(&s).copied().unwrap_or(0);
        let target = fit.iter().copied().filter(|&s| !r.has_store(s)).min_by_key(|&s| (count(&counts, s), s));
        let plan = |steps, reason| Plan { region_id: r.region_id(), steps, reason, priority: Priority::High };
        if r.region.peers.len() < max_replicas {
            if let Some(t) = target {
                *counts.entry(t).or_default() += 1;
                plans.push(plan(vec![Step::AddPeer { store_id: t }], "replica-check: fewer peers than max_replicas"));
            }
            continue;
        }
        if let Some(dead) = r.store_ids().filter(|s| suitable.binary_search(s).is_err()).min() {
            let healthy = r.store_ids().filter(|s| suitable.binary_search(s).is_ok()).count();
            let mut steps = Vec::new();
            let mut added = None;
            if healthy < max_replicas {
                let Some(t) = target else { continue };
                *counts.entry(t).or_default() += 1;
                steps.push(Step::AddPeer { store_id: t });
                added = Some(t);
            }
            let alive = stores.iter().any(|s| s.store_id == dead && !s.down);
            if r.leader_store_id == dead && alive {
                if let Some(to) = new_leader(r, dead, stores, added) {
                    steps.push(Step::TransferLeader { to_store_id: to });
                }
            }
            steps.push(Step::RemovePeer { store_id: dead });
            plans.push(plan(steps, "replica-check: replace a peer on a down or offline store"));
            continue;
        }
        if r.region.peers.len() > max_replicas && !r.busy {
            let followers = r.store_ids().filter(|&s| s != r.leader_store_id);
            let Some(extra) = followers.max_by_key(|&s| (r.is_pending_on(s), count(&counts, s), std::cmp::Reverse(s)))
            else {
                continue;
            };
            if let Some(c) = counts.get_mut(&extra) {
                *c -= 1;
            }
            plans.push(Plan {
                priority: Priority::Low,
                ..plan(vec![Step::RemovePeer { store_id: extra }], "replica-check: more peers than max_replicas")
            });
        }
    }
    plans
}

/// Region balancer (tinykv 3C, with PD's tolerance):
/// 1. fit stores (up, not removed, heartbeating) sorted by region size — the sum of the approximate
///    sizes of the regions with a peer there — largest first (ties: lowest id);
/// 2. from each source in that order, pick a region with a known leader, not busy, with at least
///    `max_replicas` peers: one whose peer on the source is pending first, else one the source
///    follows, else one it leads; within a kind, the largest region, ties by lowest region id;
/// 3. the target is the smallest fit store not already holding the region;
/// 4. move only if the source still holds more than the target once the region has moved, the
///    region weighing at least the average region: `source - w > target + w` with
///    `w = max(region size, average region size)`. Counting small and unmeasured regions as average
///    ones keeps them from being moved back and forth between stores that differ by less than a
///    region (their sizes move with every write and every new leader). Nothing moves while no
///    region has been measured.
///
/// Where tinykv picks a region at random and retries, this walks the candidates in the order of 2
/// and takes the first one that has a target and passes 4, then moves on to the next source.
///
/// The plan is AddPeer(target), TransferLeader(another peer) if the source leads, RemovePeer(source).
pub fn balance_region(stores: &[StoreView], regions: &[RegionView], max_replicas: usize) -> Option<Plan> {
    let fit = fit_ids(stores);
    let mut sizes: HashMap<u64, u64> = fit.iter().map(|&s| (s, 0)).collect();
    for r in regions {
        for s in r.store_ids() {
            if let Some(size) = sizes.get_mut(&s) {
                *size += r.approximate_size;
            }
        }
    }
    let measured: Vec<u64> = regions.iter().map(|r| r.approximate_size).filter(|&size| size > 0).collect();
    let average = measured.iter().sum::<u64>().checked_div(measured.len() as u64)?;
    let mut by_size: Vec<(u64, u64)> = sizes.into_iter().collect();
    // Largest first, ties by lowest id.
    by_size.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));

    for &(source, source_size) in &by_size {
        // Pending on the source (0), then followed by it (1), then led by it (2); largest first.
        let kind = |r: &RegionView| {
            if r.is_pending_on(source) {
                0
            } else if r.leader_store_id != source {
                1
            } else {
                2
            }
        };
        let mut candidates: Vec<&RegionView> = regions
            .iter()
            .filter(|r| r.has_store(source) && r.region.peers.len() >= max_replicas && r.has_leader() && !r.busy)
            .collect();
        candidates.sort_by_key(|r| (kind(r), std::cmp::Reverse(r.approximate_size), r.region_id()));
        for region in candidates {
            // The smallest store not holding the region (ties: lowest id).
            let Some(&(target, target_size)) =
                by_size.iter().filter(|(s, _)| !region.has_store(*s)).min_by(|a, b| a.1.cmp(&b.1).then(a.0.cmp(&b.0)))
            else {
                continue;
            };
            let weight = region.approximate_size.max(average);
            if source_size.saturating_sub(weight) <= target_size + weight {
                continue;
            }
            let mut steps = vec![Step::AddPeer { store_id: target }];
            if region.leader_store_id == source {
                if let Some(to) = new_leader(region, source, stores, Some(target)) {
                    steps.push(Step::TransferLeader { to_store_id: to });
                }
            }
            steps.push(Step::RemovePeer { store_id: source });
            return Some(Plan {
                region_id: region.region_id(),
                steps,
                reason: "balance-region",
                priority: Priority::Low,
            });
        }
    }
    None
}

/// Leader balancer: the fit store with the most leaders (ties: lowest id) hands one leader to the
/// fit store with the fewest leaders among the caught-up peers of the regions it leads (ties: lowest
/// store id, then lowest region id), only if the two counts differ by more than 1 — a move between
/// counts differing by 1 would only swap them back and forth. A peer still catching up is never a
/// target (raft cannot hand it the leadership until it has the log, and refuses writes while it
/// tries), nor is a store that missed heartbeats. If the fullest store cannot give one away, the next
/// one is tried. Busy regions are left alone.
pub fn balance_leader(stores: &[StoreView], regions: &[RegionView]) -> Option<Plan> {
    let fit = fit_ids(stores);
    let mut leaders: BTreeMap<u64, usize> = fit.iter().map(|&s| (s, 0)).collect();
    for r in regions {
        if let Some(c) = leaders.get_mut(&r.leader_store_id) {
            *c += 1;
        }
    }
    let mut sources: Vec<(u64, usize)> = leaders.iter().map(|(&s, &c)| (s, c)).collect();
    sources.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    for (source, source_count) in sources {
        let mut led: Vec<&RegionView> = regions.iter().filter(|r| r.leader_store_id == source && !r.busy).collect();
        led.sort_by_key(|r| r.region_id());
        let best = led
            .iter()
            .flat_map(|r| r.store_ids().filter(|&s| s != source && !r.is_pending_on(s)).map(move |s| (s, *r)))
            .filter_map(|(s, r)| leaders.get(&s).map(|&c| (c, s, r.region_id())))
            .min();
        if let Some((target_count, target, region_id)) = best {
            if source_count > target_count + 1 {
                return Some(Plan {
                    region_id,
                    steps: vec![Step::TransferLeader { to_store_id: target }],
                    reason: "balance-leader",
                    priority: Priority::Low,
                });
            }
        }
    }
    None
}

#[cfg(test)]
mod tests;
