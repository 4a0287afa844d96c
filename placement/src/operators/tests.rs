//! Operators against the heartbeats a test plays.

use super::*;

const TIMEOUT: Duration = Duration::from_secs(10);

fn region(conf_ver: u64, version: u64, peers: &[(u64, u64)]) -> Region {
    Region {
        region_id: 7,
        epoch: Some(RegionEpoch { conf_ver, version }),
        peers: peers.iter().map(|&(peer_id, store_id)| Peer { peer_id, store_id }).collect(),
        ..Default::default()
    }
}

fn state<'a>(region: &'a Region, leader: u64, pending: &'a [Peer]) -> RegionState<'a> {
    RegionState { region, leader_store_id: leader, pending_peers: pending }
}

fn kind(op: Option<Operator>) -> Option<operator::Kind> {
    op.map(|o| o.kind.unwrap())
}

fn last(ops: &Operators) -> OperatorInfo {
    ops.infos().1.last().cloned().unwrap()
}

/// Move the peer on store 1 (the leader) to store 4: add, wait for the catch-up, transfer, remove.
#[test]
fn a_move_adds_waits_for_catch_up_transfers_then_removes() {
    let mut ops = Operators::new(TIMEOUT);
    let r0 = region(3, 1, &[(11, 1), (12, 2), (13, 3)]);
    let steps = vec![
        OpStep::AddPeer { store_id: 4, peer_id: 14 },
        OpStep::TransferLeader { to_store_id: 2 },
        OpStep::RemovePeer { store_id: 1 },
    ];
    ops.add(&r0, "balance-region", Priority::Low, "test", steps, 0).unwrap();
    let new_peer = Peer { peer_id: 14, store_id: 4 };
    assert_eq!(
        kind(ops.on_heartbeat(&state(&r0, 1, &[]), 1)),
        Some(operator::Kind::AddPeer(AddPeerOperator { peer: Some(new_peer) }))
    );
    // Asked again until the heartbeat shows the peer.
    assert!(ops.on_heartbeat(&state(&r0, 1, &[]), 2).is_some());
    // Added but still catching up: nothing to do, and no removal yet.
    let r1 = region(4, 1, &[(11, 1), (12, 2), (13, 3), (14, 4)]);
    assert_eq!(ops.on_heartbeat(&state(&r1, 1, &[new_peer]), 3), None);
    assert_eq!(ops.get(7).unwrap().current, 0);
    // Caught up: the leader is the one leaving, so leadership goes first.
    assert_eq!(
        kind(ops.on_heartbeat(&state(&r1, 1, &[]), 4)),
        Some(operator::Kind::TransferLeader(TransferLeaderOperator { to_store_id: 2 }))
    );
    assert_eq!(
        kind(ops.on_heartbeat(&state(&r1, 2, &[]), 5)),
        Some(operator::Kind::RemovePeer(RemovePeerOperator { peer: Some(Peer { peer_id: 11, store_id: 1 }) }))
    );
    let r2 = region(5, 1, &[(12, 2), (13, 3), (14, 4)]);
    assert_eq!(ops.on_heartbeat(&state(&r2, 2, &[]), 6), None);
    assert!(!ops.is_busy(7));
    let done = last(&ops);
    assert_eq!((done.state, done.current_step, done.finished_ms), (OperatorState::Success as i32, 3, 6));
}

#[test]
fn removing_the_leader_hands_leadership_to_a_caught_up_peer_first() {
    let mut ops = Operators::new(TIMEOUT);
    let r = region(3, 1, &[(11, 1), (12, 2), (13, 3)]);
    ops.add(&r, "admin", Priority::Admin, "test", vec![OpStep::RemovePeer { store_id: 1 }], 0).unwrap();
    // Store 2's peer is pending: store 3 gets the leadership.
    let pending = [Peer { peer_id: 12, store_id: 2 }];
    assert_eq!(
        kind(ops.on_heartbeat(&state(&r, 1, &pending), 1)),
        Some(operator::Kind::TransferLeader(TransferLeaderOperator { to_store_id: 3 }))
    );
}

#[test]
fn one_operator_per_region_and_an_admin_one_replaces_it() {
    let mut ops = Operators::new(TIMEOUT);
    let r = region(1, 1, &[(11, 1)]);
    let first =
        ops.add(&r, "replica-check", Priority::High, "a", vec![OpStep::AddPeer { store_id: 2, peer_id: 20 }], 0);
    let first = first.unwrap();
    let busy = ops.add(&r, "balance-leader", Priority::Low, "b", vec![OpStep::TransferLeader { to_store_id: 1 }], 1);
    assert_eq!(busy, Err(Busy { region_id: 7, operator_id: first.operator_id }));
    let admin =
        ops.add(&r, "admin", Priority::Admin, "c", vec![OpStep::AddPeer { store_id: 3, peer_id: 30 }], 2).unwrap();
    assert_eq!(ops.get(7).unwrap().operator_id, admin.operator_id);
    let replaced = last(&ops);
    assert_eq!((replaced.operator_id, replaced.state), (first.operator_id, OperatorState::Replaced as i32));
    assert!(replaced.note.contains(&admin.operator_id.to_string()));
}

#[test]
fn a_stalled_step_times_out_and_progress_resets_the_clock() {
    let mut ops = Operators::new(TIMEOUT);
    let r = region(1, 1, &[(11, 1), (12, 2)]);
    let steps = vec![OpStep::TransferLeader { to_store_id: 2 }, OpStep::RemovePeer { store_id: 1 }];
    ops.add(&r, "admin", Priority::Admin, "test", steps, 0).unwrap();
    ops.check(|_| true, |_| StoreHealth::Up, 9_000);
    assert!(ops.is_busy(7));
    // The transfer happens at 9 s: the removal has its own 10 s.
    ops.on_heartbeat(&state(&r, 2, &[]), 9_000);
    ops.check(|_| true, |_| StoreHealth::Up, 18_000);
    assert!(ops.is_busy(7));
    ops.check(|_| true, |_| StoreHealth::Up, 19_001);
    assert!(!ops.is_busy(7));
    let done = last(&ops);
    assert_eq!((done.state, done.current_step), (OperatorState::Timeout as i32, 1));
    assert!(done.note.contains("RemovePeer"), "{}", done.note);
}

#[test]
fn someone_elses_membership_change_cancels_it_but_a_split_does_not() {
    let mut ops = Operators::new(TIMEOUT);
    let r = region(3, 1, &[(11, 1), (12, 2), (13, 3)]);
    ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::AddPeer { store_id: 4, peer_id: 14 }], 0).unwrap();
    // Its own change (conf_ver 4, the peer pending) is fine.
    let added = region(4, 1, &[(11, 1), (12, 2), (13, 3), (14, 4)]);
    let pending = [Peer { peer_id: 14, store_id: 4 }];
    assert_eq!(ops.on_heartbeat(&state(&added, 1, &pending), 1), None);
    assert!(ops.is_busy(7));
    // One more change it did not make: cancelled.
    let more = region(5, 1, &[(11, 1), (12, 2), (13, 3), (14, 4), (15, 5)]);
    ops.on_heartbeat(&state(&more, 1, &pending), 2);
    assert_eq!(last(&ops).state, OperatorState::Cancelled as i32);

    // The region splits while the peer is being added: the add goes on, and finishes once the
    // peer shows up caught up.
    ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::AddPeer { store_id: 4, peer_id: 16 }], 3).unwrap();
    let split = region(3, 2, &[(11, 1), (12, 2), (13, 3)]);
    assert!(ops.on_heartbeat(&state(&split, 1, &[]), 4).is_some(), "the add is still asked for");
    assert!(ops.is_busy(r.region_id));
    let split_and_added = region(4, 2, &[(11, 1), (12, 2), (13, 3), (16, 4)]);
    ops.on_heartbeat(&state(&split_and_added, 1, &[]), 5);
    assert_eq!(last(&ops).state, OperatorState::Success as i32);

    // A transfer to a store whose peer went away is impossible.
    ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::TransferLeader { to_store_id: 3 }], 5).unwrap();
    ops.on_heartbeat(&state(&region(3, 1, &[(11, 1), (12, 2)]), 1, &[]), 6);
    assert_eq!(last(&ops).state, OperatorState::Cancelled as i32);
    // So is one for a region that no longer exists.
    ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::TransferLeader { to_store_id: 3 }], 7).unwrap();
    ops.check(|_| false, |_| StoreHealth::Up, 8);
    assert_eq!(last(&ops).state, OperatorState::Cancelled as i32);
}

#[test]
fn a_split_is_sent_once_and_done_when_the_version_grows() {
    let mut ops = Operators::new(TIMEOUT);
    let r = region(1, 1, &[(11, 1)]);
    ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::Split { split_key: b"m".to_vec() }], 0).unwrap();
    assert_eq!(
        kind(ops.on_heartbeat(&state(&r, 1, &[]), 1)),
        Some(operator::Kind::Split(SplitOperator { split_key: b"m".to_vec() }))
    );
    assert_eq!(ops.on_heartbeat(&state(&r, 1, &[]), 2), None);
    assert!(ops.is_busy(7));
    let left = Region { end_key: b"m".to_vec(), ..region(1, 2, &[(11, 1)]) };
    ops.on_heartbeat(&state(&left, 1, &[]), 3);
    assert_eq!(last(&ops).state, OperatorState::Success as i32);
    // A split elsewhere (another key, by size) is not this one: it ends cancelled.
    ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::Split { split_key: b"m".to_vec() }], 4).unwrap();
    let elsewhere = Region { end_key: b"c".to_vec(), ..region(1, 2, &[(11, 1)]) };
    ops.on_heartbeat(&state(&elsewhere, 1, &[]), 5);
    assert_eq!(last(&ops).state, OperatorState::Cancelled as i32);
}

#[test]
fn steps_already_in_effect_finish_at_once() {
    let mut ops = Operators::new(TIMEOUT);
    let r = region(3, 1, &[(11, 1), (12, 2)]);
    let steps = vec![OpStep::AddPeer { store_id: 2, peer_id: 99 }, OpStep::RemovePeer { store_id: 5 }];
    ops.add(&r, "admin", Priority::Admin, "t", steps, 0).unwrap();
    assert_eq!(ops.on_heartbeat(&state(&r, 1, &[]), 1), None);
    assert_eq!(last(&ops).state, OperatorState::Success as i32);
}

#[test]
fn the_history_is_bounded_and_keeps_the_newest() {
    let mut ops = Operators::new(TIMEOUT);
    let r = region(1, 1, &[(11, 1)]);
    for i in 0..(HISTORY_LEN as u64 + 5) {
        ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::TransferLeader { to_store_id: 1 }], i).unwrap();
        ops.on_heartbeat(&state(&r, 1, &[]), i);
    }
    let (running, history) = ops.infos();
    assert!(running.is_empty());
    assert_eq!(history.len(), HISTORY_LEN);
    assert_eq!(history.last().unwrap().operator_id, HISTORY_LEN as u64 + 5);
    assert_eq!(history[0].operator_id, 6);
    assert!(ops.find(3).is_none() && ops.find(50).is_some());
}

#[test]
fn a_higher_priority_replaces_a_lower_one_never_the_reverse() {
    let mut ops = Operators::new(TIMEOUT);
    let r = region(3, 1, &[(11, 1), (12, 2), (13, 3)]);
    let transfer = vec![OpStep::TransferLeader { to_store_id: 2 }];
    let balance = ops.add(&r, "balance-leader", Priority::Low, "b", transfer.clone(), 0).unwrap();
    // Another balancer's decision waits.
    assert!(!ops.may_start(7, Priority::Low));
    assert!(ops.add(&r, "balance-region", Priority::Low, "b", transfer.clone(), 1).is_err());
    // A repair replaces it...
    let repair = vec![OpStep::AddPeer { store_id: 4, peer_id: 14 }, OpStep::RemovePeer { store_id: 3 }];
    let repair = ops.add(&r, "replica-check", Priority::High, "r", repair, 2).unwrap();
    let replaced = last(&ops);
    assert_eq!((replaced.operator_id, replaced.state), (balance.operator_id, OperatorState::Replaced as i32));
    // ...and is replaced by nothing but an administrator's request.
    assert!(ops.add(&r, "balance-leader", Priority::Low, "b", transfer.clone(), 3).is_err());
    assert!(ops.add(&r, "replica-check", Priority::High, "r", transfer.clone(), 3).is_err());
    assert_eq!(ops.get(7).unwrap().operator_id, repair.operator_id);
    let admin = ops.add(&r, "admin", Priority::Admin, "a", transfer.clone(), 4).unwrap();
    assert!(!ops.may_start(7, Priority::High));
    let again = ops.add(&r, "admin", Priority::Admin, "a", transfer, 5).unwrap();
    assert_eq!(last(&ops).operator_id, admin.operator_id, "an administrator's next request replaces the last");
    assert_eq!(ops.get(7).unwrap().operator_id, again.operator_id);
}

#[test]
fn an_operator_whose_target_store_cannot_serve_is_cancelled() {
    let r = region(3, 1, &[(11, 1), (12, 2), (13, 3)]);
    let steps = vec![
        OpStep::AddPeer { store_id: 4, peer_id: 14 },
        OpStep::TransferLeader { to_store_id: 4 },
        OpStep::RemovePeer { store_id: 1 },
    ];
    let outcome = |health: StoreHealth, target: u64| {
        let mut ops = Operators::new(TIMEOUT);
        ops.add(&r, "balance-region", Priority::Low, "m", steps.clone(), 0).unwrap();
        ops.check(|_| true, |s| if s == target { health } else { StoreHealth::Up }, 1);
        ops.get(7).map(|_| String::new()).unwrap_or_else(|| last(&ops).note)
    };
    for health in [StoreHealth::Down, StoreHealth::Offline, StoreHealth::Removed, StoreHealth::Unknown] {
        let note = outcome(health, 4);
        assert!(note.starts_with(&format!("store 4 is {}", health.as_str())), "{health:?}: {note}");
    }
    // A store that missed a few heartbeats may still get the peer (the transfer to it is later).
    assert_eq!(outcome(StoreHealth::Silent, 4), "");
    // The store losing its peer is no target: its death changes nothing here.
    assert_eq!(outcome(StoreHealth::Down, 1), "");

    // A transfer under way to a silent store is given up.
    let mut ops = Operators::new(TIMEOUT);
    ops.add(&r, "balance-leader", Priority::Low, "l", vec![OpStep::TransferLeader { to_store_id: 2 }], 0).unwrap();
    ops.check(|_| true, |s| if s == 2 { StoreHealth::Silent } else { StoreHealth::Up }, 1);
    assert!(last(&ops).note.contains("store 2 is not heartbeating"), "{}", last(&ops).note);
}

#[test]
fn a_leader_transfer_to_a_peer_catching_up_is_cancelled() {
    let mut ops = Operators::new(TIMEOUT);
    let r = region(3, 1, &[(11, 1), (12, 2), (13, 3)]);
    ops.add(&r, "balance-leader", Priority::Low, "l", vec![OpStep::TransferLeader { to_store_id: 2 }], 0).unwrap();
    let behind = [Peer { peer_id: 12, store_id: 2 }];
    assert_eq!(ops.on_heartbeat(&state(&r, 1, &behind), 1), None);
    let done = last(&ops);
    assert_eq!(done.state, OperatorState::Cancelled as i32);
    assert!(done.note.contains("catching up"), "{}", done.note);
}

#[test]
fn an_administrator_s_operator_holds_its_region_for_a_while_after_it_ends() {
    let mut ops = Operators::new(TIMEOUT);
    let r = region(1, 1, &[(11, 1)]);
    let hold = Duration::from_secs(30);
    ops.add(&r, "replica-check", Priority::High, "t", vec![OpStep::TransferLeader { to_store_id: 1 }], 0).unwrap();
    ops.on_heartbeat(&state(&r, 1, &[]), 10);
    assert!(!ops.admin_ended_within(7, hold, 10), "a scheduler's operator holds nothing");
    ops.add(&r, "admin", Priority::Admin, "t", vec![OpStep::TransferLeader { to_store_id: 1 }], 20).unwrap();
    ops.on_heartbeat(&state(&r, 1, &[]), 1_000);
    assert!(ops.admin_ended_within(7, hold, 30_999));
    assert!(!ops.admin_ended_within(7, hold, 31_000));
    ops.forget_admin_ended(hold, 31_000);
    assert!(ops.admin_ended.is_empty());
}
