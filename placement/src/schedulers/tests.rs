//! The schedulers' decisions on hand-made views of stores and regions.

use super::*;
use crate::proto::Peer;

fn up(ids: &[u64]) -> Vec<StoreView> {
    ids.iter().map(|&store_id| StoreView { store_id, down: false, removed: false, silent: false }).collect()
}

fn set_down(stores: &mut [StoreView], id: u64) {
    stores.iter_mut().find(|s| s.store_id == id).unwrap().down = true;
}

fn set_removed(stores: &mut [StoreView], id: u64) {
    stores.iter_mut().find(|s| s.store_id == id).unwrap().removed = true;
}

/// Region `id` with peers on `stores` (peer id = id * 100 + store id), led by `leader`.
fn region(id: u64, stores: &[u64], leader: u64, size: u64) -> RegionView {
    RegionView {
        region: Region {
            region_id: id,
            peers: stores.iter().map(|&s| Peer { peer_id: id * 100 + s, store_id: s }).collect(),
            ..Default::default()
        },
        leader_store_id: leader,
        approximate_size: size,
        pending_store_ids: Vec::new(),
        busy: false,
    }
}

fn pending(mut r: RegionView, store: u64) -> RegionView {
    r.pending_store_ids.push(store);
    r
}

fn moved(p: &Plan) -> (u64, u64) {
    let add = p.steps.iter().find_map(|s| match s {
        Step::AddPeer { store_id } => Some(*store_id),
        _ => None,
    });
    let remove = p.steps.iter().find_map(|s| match s {
        Step::RemovePeer { store_id } => Some(*store_id),
        _ => None,
    });
    (remove.unwrap(), add.unwrap())
}

#[test]
fn one_replica_moves_from_the_fullest_store_to_the_emptiest_suitable_one() {
    // Sizes: store 1 = 60, store 2 = 30, store 3 = 0, store 4 = 10.
    let mut stores = up(&[1, 2, 3, 4]);
    let regions = vec![
        region(1, &[1], 1, 10),
        region(2, &[1], 1, 20),
        region(3, &[1], 1, 30),
        region(4, &[2], 2, 30),
        region(5, &[4], 4, 10),
    ];
    // Region 3 does not fit (60 - 0 is not > 2 * 30); region 2 does. The source leads it and has no
    // other peer, so leadership goes to the new one.
    let plan = balance_region(&stores, &regions, 1).unwrap();
    assert_eq!(plan.region_id, 2);
    assert_eq!(
        plan.steps,
        vec![Step::AddPeer { store_id: 3 }, Step::TransferLeader { to_store_id: 3 }, Step::RemovePeer { store_id: 1 }]
    );
    // Store 3 down: the emptiest suitable store is 4 (60 - 10 > 40).
    set_down(&mut stores, 3);
    let plan = balance_region(&stores, &regions, 1).unwrap();
    assert_eq!((plan.region_id, moved(&plan)), (2, (1, 4)));
    // Store 4 removed too: store 2 holds 30, and the average region is 20: 60 - 30 is not more
    // than twice that, so even region 1 (10) stays.
    set_removed(&mut stores, 4);
    assert_eq!(balance_region(&stores, &regions, 1), None);
    // Store 1 down: nothing to move.
    set_down(&mut stores, 1);
    assert_eq!(balance_region(&stores, &regions, 1), None);
}

#[test]
fn three_replicas_move_only_to_a_store_lacking_the_region() {
    let mut stores = up(&[1, 2, 3, 4, 5]);
    // Region 9 has too few peers to move but counts in store 1's size.
    // Sizes: 1 = 120, 2 = 3 = 4 = 5 = 10.
    let regions = vec![region(1, &[1, 2, 3], 2, 10), region(2, &[1, 4, 5], 1, 10), region(9, &[1], 1, 100)];
    // Store 1 follows region 1 and leads region 2: region 1; stores 4 and 5 lack it (ties: lowest id).
    let plan = balance_region(&stores, &regions, 3).unwrap();
    assert_eq!(plan.region_id, 1);
    assert_eq!(plan.steps, vec![Step::AddPeer { store_id: 4 }, Step::RemovePeer { store_id: 1 }]);

    // With 4 and 5 down, every suitable store holds region 1: no move.
    set_down(&mut stores, 4);
    set_down(&mut stores, 5);
    assert_eq!(balance_region(&stores, &[regions[0].clone(), regions[2].clone()], 3), None);
}

#[test]
fn three_replicas_move_to_the_emptiest_and_keep_leadership_off_the_source() {
    let stores = up(&[1, 2, 3, 4]);
    // Store 1 leads everything; store 4 is empty. Region 3 has fewer than 3 peers: skipped.
    let regions = vec![region(1, &[1, 2, 3], 1, 10), region(2, &[1, 2, 3], 1, 10), region(3, &[1], 1, 50)];
    let plan = balance_region(&stores, &regions, 3).unwrap();
    // Both candidates are led by 1 and equal in size: the lowest id.
    assert_eq!(plan.region_id, 1);
    assert_eq!(
        plan.steps,
        vec![Step::AddPeer { store_id: 4 }, Step::TransferLeader { to_store_id: 2 }, Step::RemovePeer { store_id: 1 }]
    );
}

#[test]
fn five_replicas_move_to_the_only_store_lacking_the_region() {
    let stores = up(&[1, 2, 3, 4, 5, 6]);
    let regions = vec![
        region(1, &[1, 2, 3, 4, 5], 2, 10),
        region(2, &[1, 2, 3, 4, 5], 2, 10),
        // Fewer than 5 peers: never chosen, but it makes stores 1-4 the fullest.
        region(3, &[1, 2, 3, 4], 2, 100),
    ];
    let plan = balance_region(&stores, &regions, 5).unwrap();
    assert_eq!(plan.region_id, 1);
    assert_eq!(plan.steps, vec![Step::AddPeer { store_id: 6 }, Step::RemovePeer { store_id: 1 }]);

    // A region on every store has nowhere to go.
    let everywhere = vec![region(1, &[1, 2, 3, 4, 5, 6], 2, 10), region(3, &[1, 2, 3, 4], 2, 100)];
    assert_eq!(balance_region(&stores, &everywhere, 5), None);
}

#[test]
fn pending_regions_are_chosen_first_then_followers_then_leaders() {
    let stores = up(&[1, 2, 3, 4]);
    let leader = region(1, &[1, 2, 3], 1, 30);
    let follower = region(2, &[1, 2, 3], 2, 20);
    let filler = region(9, &[1], 1, 100);
    // The smallest region, but its peer on store 1 is pending.
    let pend = pending(region(3, &[1, 2, 3], 3, 5), 1);
    let all = vec![leader.clone(), follower.clone(), pend, filler.clone()];
    assert_eq!(balance_region(&stores, &all, 3).unwrap().region_id, 3);
    // A region pending on another store is just a follower region of store 1.
    let elsewhere = pending(region(3, &[1, 2, 3], 3, 5), 2);
    let all = vec![leader.clone(), follower, elsewhere, filler.clone()];
    assert_eq!(balance_region(&stores, &all, 3).unwrap().region_id, 2);
    // Only a led region left (and two single-peer ones that cannot move): it moves, leadership
    // first.
    let fillers = [region(9, &[1], 1, 30), region(10, &[1], 1, 30)];
    let plan = balance_region(&stores, &[leader, fillers[0].clone(), fillers[1].clone()], 3).unwrap();
    assert_eq!(plan.region_id, 1);
    assert_eq!(
        plan.steps,
        vec![Step::AddPeer { store_id: 4 }, Step::TransferLeader { to_store_id: 2 }, Step::RemovePeer { store_id: 1 }]
    );
}

#[test]
fn no_move_without_more_than_twice_the_region_size_of_difference() {
    let stores = up(&[1, 2]);
    // 30 - 10 = 20 = 2 * 10: no move.
    let mut regions =
        vec![region(1, &[1], 1, 10), region(2, &[1], 1, 10), region(3, &[1], 1, 10), region(4, &[2], 2, 10)];
    assert_eq!(balance_region(&stores, &regions, 1), None);
    // 31 - 10 = 21 > 20: move.
    regions.push(region(5, &[1], 1, 1));
    let plan = balance_region(&stores, &regions, 1).unwrap();
    assert_eq!((plan.region_id, moved(&plan)), (1, (1, 2)));
}

#[test]
fn down_and_removed_stores_are_neither_sources_nor_targets() {
    let mut stores = up(&[1, 2, 3, 4, 5]);
    // Sizes: 1 = 90, 2 = 45, 3 = 10, 4 = 5 = 0.
    let regions = vec![
        region(1, &[1], 1, 30),
        region(2, &[1], 1, 30),
        region(3, &[1], 1, 30),
        region(4, &[2], 2, 20),
        region(5, &[2], 2, 20),
        region(6, &[2], 2, 5),
        region(7, &[3], 3, 10),
    ];
    let plan = balance_region(&stores, &regions, 1).unwrap();
    assert_eq!((plan.region_id, moved(&plan)), (1, (1, 4)));
    // The fullest store is down and the emptiest removed: store 2 to store 5.
    set_down(&mut stores, 1);
    set_removed(&mut stores, 4);
    let plan = balance_region(&stores, &regions, 1).unwrap();
    assert_eq!((plan.region_id, moved(&plan)), (4, (2, 5)));
    // Store 5 down as well: store 2 against store 3 is 45 against 10, less than two average
    // regions (20) apart: the small region counts as an average one and stays.
    set_down(&mut stores, 5);
    assert_eq!(balance_region(&stores, &regions, 1), None);
}

#[test]
fn replica_checker_adds_to_the_emptiest_store_and_spreads_several_regions() {
    let stores = up(&[1, 2, 3, 4]);
    let regions = vec![
        region(1, &[1, 2], 1, 10),
        region(2, &[1, 2], 1, 10),
        region(3, &[1, 3, 4], 1, 10),
        region(4, &[1, 2, 3], 1, 10),
    ];
    // Counts: 1 = 4, 2 = 3, 3 = 2, 4 = 1.
    let plans = replica_check(&stores, &regions, 3);
    assert_eq!(plans.len(), 2);
    assert_eq!(
        plans[0],
        Plan {
            region_id: 1,
            steps: vec![Step::AddPeer { store_id: 4 }],
            reason: plans[0].reason,
            priority: Priority::High
        }
    );
    // Store 4 now has 2 regions, like store 3: ties by lowest id.
    assert_eq!(plans[1].steps, vec![Step::AddPeer { store_id: 3 }]);
    // Nothing to add to: a down store is no target.
    let mut stores = up(&[1, 2, 3]);
    set_down(&mut stores, 3);
    assert!(replica_check(&stores, &[region(1, &[1, 2], 1, 10)], 3).is_empty());
}

#[test]
fn replica_checker_replaces_a_peer_on_a_down_store() {
    let mut stores = up(&[1, 2, 3, 4, 5]);
    set_down(&mut stores, 3);
    let regions = vec![region(1, &[1, 2, 3], 1, 10), region(2, &[2, 3, 5], 3, 10)];
    let plans = replica_check(&stores, &regions, 3);
    assert_eq!(plans.len(), 2);
    // Counts: 1 = 1, 2 = 2, 4 = 0, 5 = 1: region 1 goes to store 4, region 2 to store 1 (tie with 4).
    assert_eq!(plans[0].region_id, 1);
    assert_eq!(plans[0].steps, vec![Step::AddPeer { store_id: 4 }, Step::RemovePeer { store_id: 3 }]);
    // Region 2 was led by the down store: its survivors elect a leader by themselves, and the
    // removal waits for one (no transfer to force).
    assert_eq!(plans[1].region_id, 2);
    assert_eq!(plans[1].steps, vec![Step::AddPeer { store_id: 1 }, Step::RemovePeer { store_id: 3 }]);
    assert!(plans.iter().all(|p| p.priority == Priority::High));
    // An offline store is alive: its leadership goes to a caught-up peer first (store 5's peer
    // is pending, so store 2).
    let mut stores = up(&[1, 2, 3, 4, 5]);
    set_removed(&mut stores, 3);
    let plans = replica_check(&stores, &[pending(region(2, &[2, 3, 5], 3, 10), 2)], 3);
    let pending_on_2 = plans[0].steps.clone();
    assert_eq!(pending_on_2[1], Step::TransferLeader { to_store_id: 5 });
    let plans = replica_check(&stores, &[region(2, &[2, 3, 5], 3, 10)], 3);
    assert_eq!(
        plans[0].steps,
        vec![Step::AddPeer { store_id: 1 }, Step::TransferLeader { to_store_id: 2 }, Step::RemovePeer { store_id: 3 }]
    );
    let mut stores = up(&[1, 2, 3, 4, 5]);
    set_down(&mut stores, 3);
    // With enough healthy peers already, only the removal.
    let plans = replica_check(&stores, &[region(1, &[1, 2, 3, 4], 1, 10)], 3);
    assert_eq!(plans[0].steps, vec![Step::RemovePeer { store_id: 3 }]);
    // A region short of peers and with a down peer gets one plan: the add.
    let plans = replica_check(&stores, &[region(1, &[1, 3], 1, 10)], 3);
    assert_eq!(plans.len(), 1);
    assert_eq!(plans[0].steps, vec![Step::AddPeer { store_id: 2 }]);
}

#[test]
fn balance_leader_moves_one_leader_when_counts_differ_by_more_than_one() {
    let stores = up(&[1, 2, 3]);
    let three_on_one = vec![
        region(1, &[1, 2, 3], 1, 1),
        region(2, &[1, 2, 3], 1, 1),
        region(3, &[1, 2, 3], 1, 1),
        region(4, &[1, 2, 3], 2, 1),
    ];
    // 3 / 1 / 0 → store 3.
    let plan = balance_leader(&stores, &three_on_one).unwrap();
    assert_eq!(
        plan,
        Plan {
            region_id: 1,
            steps: vec![Step::TransferLeader { to_store_id: 3 }],
            reason: plan.reason,
            priority: Priority::Low
        }
    );
}

#[test]
fn balance_leader_does_not_flap_when_counts_differ_by_one() {
    let stores = up(&[1, 2]);
    let regions = vec![region(1, &[1, 2], 1, 1), region(2, &[1, 2], 1, 1), region(3, &[1, 2], 2, 1)];
    assert_eq!(balance_leader(&stores, &regions), None);
    // Only peer stores are targets: store 3 has no leader but holds none of store 1's regions.
    let stores = up(&[1, 2, 3]);
    let regions = vec![region(1, &[1, 2], 1, 1), region(2, &[1, 2], 1, 1), region(3, &[2, 3], 2, 1)];
    // Store 1: 2, store 2: 1, store 3: 0. Store 1 → store 2 is 2 vs 1: no; store 2 → store 3 is 1 vs 0: no.
    assert_eq!(balance_leader(&stores, &regions), None);
}

#[test]
fn balance_leader_ignores_down_stores() {
    let mut stores = up(&[1, 2, 3]);
    let regions = vec![region(1, &[1, 2, 3], 1, 1), region(2, &[1, 2, 3], 1, 1), region(3, &[1, 2, 3], 1, 1)];
    set_down(&mut stores, 2);
    let plan = balance_leader(&stores, &regions).unwrap();
    assert_eq!(plan.steps, vec![Step::TransferLeader { to_store_id: 3 }]);
    set_down(&mut stores, 1);
    assert_eq!(balance_leader(&stores, &regions), None);
}

#[test]
fn views_from_marks_silent_and_down_stores_and_skips_regionless_infos() {
    let stores = vec![
        StoreInfo { store_id: 1, last_heartbeat_ms: 10_000, ..Default::default() },
        StoreInfo { store_id: 2, last_heartbeat_ms: 1_000, ..Default::default() },
        StoreInfo { store_id: 3, last_heartbeat_ms: 10_000, state: StoreState::Down as i32, ..Default::default() },
    ];
    let regions = vec![
        RegionInfo {
            region: Some(region(7, &[1, 2], 1, 0).region),
            leader_store_id: 1,
            approximate_size: 42,
            ..Default::default()
        },
        RegionInfo::default(),
    ];
    let (s, r) = views_from(&stores, &regions, 11_000, 5_000, 2_000);
    assert_eq!(s.iter().map(|s| s.down).collect::<Vec<_>>(), vec![false, true, true]);
    assert!(s.iter().all(|s| !s.removed));
    assert_eq!(r.len(), 1);
    assert_eq!((r[0].region_id(), r[0].leader_store_id, r[0].approximate_size), (7, 1, 42));
}

/// Issue 14, fault 2: balance-leader moved a leadership to a store whose peer was still receiving
/// its snapshot (a transfer raft cannot make until it has caught up).
#[test]
fn balance_leader_never_targets_a_pending_peer() {
    let stores = up(&[1, 2, 3]);
    let regions = vec![
        pending(region(1, &[1, 2, 3], 1, 1), 3),
        pending(region(2, &[1, 2, 3], 1, 1), 3),
        region(3, &[1, 2, 3], 1, 1),
        region(4, &[1, 2], 2, 1),
    ];
    // Store 3 has no leader, but its peers of regions 1 and 2 are pending: region 3 goes.
    let plan = balance_leader(&stores, &regions).unwrap();
    assert_eq!((plan.region_id, plan.steps.clone()), (3, vec![Step::TransferLeader { to_store_id: 3 }]));
    // With every peer of store 3 pending, store 2 is the only target, and 3 / 1 is a move.
    let regions = vec![
        pending(region(1, &[1, 2, 3], 1, 1), 3),
        pending(region(2, &[1, 2, 3], 1, 1), 3),
        pending(region(3, &[1, 2, 3], 1, 1), 3),
        region(4, &[1, 2], 2, 1),
    ];
    let plan = balance_leader(&stores, &regions).unwrap();
    assert_eq!(plan.steps, vec![Step::TransferLeader { to_store_id: 2 }]);
}

/// Issue 14, item 10: a region whose size is unknown (a new leader, a split's half) counted as
/// empty, so balance-region moved it for any difference at all, and again the next round.
#[test]
fn balance_region_judges_a_small_or_unmeasured_region_as_an_average_one() {
    let stores = up(&[1, 2, 3, 4]);
    // Sizes: stores 1, 2 and 3 hold 31, store 4 holds 30; region 6 is unmeasured (0).
    let regions = vec![
        region(1, &[1, 2, 3], 1, 11),
        region(2, &[1, 2, 3], 2, 10),
        region(3, &[1, 3, 4], 3, 10),
        region(4, &[2, 4], 4, 10),
        region(5, &[4], 4, 10),
        region(6, &[1, 2, 3], 1, 0),
    ];
    // Store 1 (31) against store 4 (30): nothing to gain, whatever the unmeasured region weighs.
    assert_eq!(balance_region(&stores, &regions, 3), None);
    // A store emptier by more than two average regions takes one.
    let mut stores = up(&[1, 2, 3, 4, 5]);
    assert_eq!(balance_region(&stores, &regions, 3).map(|p| moved(&p).1), Some(5));
    set_down(&mut stores, 5);
    assert_eq!(balance_region(&stores, &regions, 3), None);
}

#[test]
fn replica_checker_trims_an_extra_replica_preferring_a_pending_one_then_the_fullest_store() {
    let stores = up(&[1, 2, 3, 4]);
    // Counts: 1 = 3, 2 = 2, 3 = 3, 4 = 1. Region 1's followers are on 2, 3 and 4.
    let regions = vec![region(1, &[1, 2, 3, 4], 1, 10), region(2, &[1, 3], 1, 10), region(3, &[1, 2, 3], 2, 10)];
    let plans = replica_check(&stores, &regions, 3);
    let trim: Vec<&Plan> = plans.iter().filter(|p| p.region_id == 1).collect();
    assert_eq!(trim.len(), 1, "{plans:?}");
    assert_eq!(trim[0].steps, vec![Step::RemovePeer { store_id: 3 }]);
    // A follower still catching up goes first: it holds nothing yet.
    let regions = vec![pending(region(1, &[1, 2, 3, 4], 1, 10), 4), region(2, &[1, 3], 1, 10)];
    let plans = replica_check(&stores, &regions, 3);
    assert_eq!(plans.iter().find(|p| p.region_id == 1).unwrap().steps, vec![Step::RemovePeer { store_id: 4 }]);
}
