//! Apply: executes committed raft entries against the user data, inside the round's LMDB transaction.
//!
//! Apply never touches the network and never answers a client: it returns one [`Applied`] per entry,
//! and the peer matches those to waiting proposals after the transaction has committed. The data
//! written and the new applied index always share one transaction, so a crash can neither lose an
//! applied write nor apply one twice.
//!
//! Everything here is deterministic given the entry and the data: every replica reaches the same
//! state (conditional writes are decided here, not when proposed).

use std::collections::BTreeMap;

use heed::RwTxn;
use prost::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeType as RaftChangeType, Entry, EntryType};

use super::error::Error;
use super::msg::WriteResponse;
use super::region_map::region_contains;
use crate::proto::{
    admin_request, request, AdminRequest, ConfChangeType, Peer, Precondition, RaftApplyState, RaftCmdRequest, Region,
    RegionEpoch, RegionLocalState,
};
use crate::storage::{Engine, StorageError};

/// What applying one entry produced, for the proposal waiting on (index, term), if any.
pub struct Applied {
    pub index: u64,
    pub term: u64,
    /// `None` for entries no client waits on (raft's empty entries, admin commands).
    pub result: Option<Result<WriteResponse, Error>>,
}

/// What applying produced, for the peer to act on after the commit (beyond the apply state).
#[derive(Default)]
pub struct ApplyEffects {
    /// One outcome per entry applied, in order.
    pub applied: Vec<Applied>,
    pub log_compacted: bool,
    /// Regions split off this one (their initial state is already in the transaction): the store
    /// starts their peers once it has committed.
    pub new_regions: Vec<Region>,
    /// Bytes of user data written (keys + values), for the region's approximate size.
    pub bytes_written: u64,
    /// Membership changes applied to the region (already in its state in the transaction): raft
    /// learns of them after the commit, in order.
    pub conf_changes: Vec<ConfChange>,
    /// This store's peer was removed from the region: nothing after its removal is applied here,
    /// and the store destroys the peer once the transaction is durable.
    pub removed_self: bool,
}

/// What apply must know of the store it runs on, beyond the region it applies to.
pub struct LocalStore<'a> {
    pub store_id: u64,
    /// Peers this store runs that hold no data yet (created by a message, waiting for a snapshot):
    /// region id → peer id.
    pub empty_peers: &'a BTreeMap<u64, u64>,
}

/// Applies `entries` in order on top of `apply_state`, skipping any already applied.
///
/// A storage error (the map is full, LMDB failed) aborts the whole round: the caller drops the
/// transaction, so nothing of it becomes visible. Per-command failures (a precondition, a key outside
/// the region) are results, not errors.
/// `region` is this replica's view of the region; a split applied here changes it for the entries
/// after it. Once this store's own removal is applied, the rest is for the other members.
pub fn apply_entries(
    engine: &Engine,
    txn: &mut RwTxn<'_>,
    local: &LocalStore<'_>,
    region: &mut Region,
    apply_state: &mut RaftApplyState,
    entries: &[Entry],
    effects: &mut ApplyEffects,
) -> Result<(), StorageError> {
    for entry in entries {
        if entry.index <= apply_state.applied_index || effects.removed_self {
            continue;
        }
        assert_eq!(
            entry.index,
            apply_state.applied_index + 1,
            "region {}: entries must be applied in order without gaps",
            region.region_id
        );
        let result = match entry.get_entry_type() {
            EntryType::EntryNormal if entry.data.is_empty() => None, // a new leader's empty entry
            EntryType::EntryNormal => apply_command(engine, txn, local, region, apply_state, entry, effects)?,
            EntryType::EntryConfChange => Some(apply_conf_change(engine, txn, local, region, entry, effects)?),
            EntryType::EntryConfChangeV2 => {
                // fekv proposes single-peer changes only (v1); joint consensus is never used.
                tracing::error!(
                    region_id = region.region_id,
                    index = entry.index,
                    "ignoring a joint conf change entry"
                );
                Some(Err(Error::InvalidChange { reason: "joint membership changes are not supported".into() }))
            }
        };
        apply_state.applied_index = entry.index;
        effects.applied.push(Applied { index: entry.index, term: entry.term, result });
    }
    Ok(())
}

fn apply_command(
    engine: &Engine,
    txn: &mut RwTxn<'_>,
    local: &LocalStore<'_>,
    region: &mut Region,
    apply_state: &mut RaftApplyState,
    entry: &Entry,
    effects: &mut ApplyEffects,
) -> Result<Option<Result<WriteResponse, Error>>, StorageError> {
    let cmd = match RaftCmdRequest::decode(entry.data.as_ref()) {
        Ok(cmd) => cmd,
        Err(err) => {
            // Only this node's own code proposes entries; a command that does not decode is a bug or
            // damage that the log's checksum did not catch. Skip it identically on every replica.
            tracing::error!(region_id = region.region_id, index = entry.index, error = %err, "skipping an undecodable command");
            return Ok(Some(Err(Error::ProposalDropped { reason: "undecodable command" })));
        }
    };
    if let Some(admin) = cmd.admin {
        return apply_admin(engine, txn, local, region, apply_state, entry.index, &cmd.header, admin, effects);
    }
    if let Err(err) = check_data_epoch(region, &cmd) {
        return Ok(Some(Err(err)));
    }
    let result = apply_requests(engine, txn, region, entry.index, &cmd.requests)?;
    if result.is_ok() {
        effects.bytes_written += cmd
            .requests
            .iter()
            .map(|r| match &r.cmd {
                Some(request::Cmd::Put(put)) => (put.key.len() + put.value.len()) as u64,
                _ => 0,
            })
            .sum::<u64>();
    }
    Ok(Some(result))
}

/// Data commands carry the epoch they were proposed under; a split in between makes them stale.
fn check_data_epoch(region: &Region, cmd: &RaftCmdRequest) -> Result<(), Error> {
    let header = cmd.header.as_ref();
    let proposed_version = header.and_then(|h| h.epoch.as_ref()).map_or(0, |e| e.version);
    let current_version = region.epoch.as_ref().map_or(0, |e| e.version);
    if header.map(|h| h.region_id) != Some(region.region_id) || proposed_version != current_version {
        return Err(Error::EpochNotMatch { current_regions: vec![region.clone()] });
    }
    Ok(())
}

/// Applies a command's requests all-or-nothing: every key is checked and every precondition is
/// evaluated before anything is written.
fn apply_requests(
    engine: &Engine,
    txn: &mut RwTxn<'_>,
    region: &Region,
    revision: u64,
    requests: &[crate::proto::Request],
) -> Result<Result<WriteResponse, Error>, StorageError> {
    for req in requests {
        let Some(cmd) = &req.cmd else { continue };
        let key = cmd.key();
        if !region_contains(region, key) {
            return Ok(Err(Error::KeyNotInRegion { key: key.to_vec(), region_id: region.region_id }));
        }
        if let Some(precondition) = cmd.precondition() {
            let current = match engine.get_data(txn, key) {
                Ok(record) => record.map(|r| r.revision),
                Err(err @ StorageError::Corruption { .. }) => return Ok(Err(err.into())),
                Err(err) => return Err(err),
            };
            if !precondition_holds(precondition, current) {
                return Ok(Err(Error::PreconditionFailed { current_revision: current }));
            }
        }
    }
    for req in requests {
        match &req.cmd {
            Some(request::Cmd::Put(put)) => engine.put_data(txn, &put.key, revision, &put.value)?,
            Some(request::Cmd::Delete(delete)) => engine.delete_data(txn, &delete.key)?,
            None => {}
        }
    }
    Ok(Ok(WriteResponse { revision }))
}

/// Applies a membership change: one peer added or removed, `conf_ver + 1`. A change decided for an
/// older membership (another change came first), a duplicate, or one that makes no sense is ignored
/// the same way on every replica, and raft is not told of it.
fn apply_conf_change(
    engine: &Engine,
    txn: &mut RwTxn<'_>,
    local: &LocalStore<'_>,
    region: &mut Region,
    entry: &Entry,
    effects: &mut ApplyEffects,
) -> Result<Result<WriteResponse, Error>, StorageError> {
    let rejected = |reason: String| {
        tracing::info!(region_id = region.region_id, index = entry.index, %reason, "membership change ignored");
        Ok(Err(Error::InvalidChange { reason }))
    };
    let decoded = <ConfChange as protobuf::Message>::parse_from_bytes(&entry.data)
        .ok()
        .and_then(|cc| RaftCmdRequest::decode(cc.context.as_ref()).ok().map(|cmd| (cc, cmd)));
    let Some((cc, cmd)) = decoded else {
        return rejected("the entry does not decode".into());
    };
    let Some(admin_request::Cmd::ChangePeer(change)) = cmd.admin.and_then(|a| a.cmd) else {
        return rejected("the entry carries no peer change".into());
    };
    let proposed = cmd.header.and_then(|h| h.epoch).unwrap_or_default();
    let current = region.epoch.unwrap_or_default();
    if proposed.conf_ver != current.conf_ver {
        return Ok(Err(Error::EpochNotMatch { current_regions: vec![region.clone()] }));
    }
    let Some(peer) = change.peer else {
        return rejected("no peer given".into());
    };
    let adding = change.change_type == ConfChangeType::AddNode as i32;
    let on_store = region.peers.iter().position(|p| p.store_id == peer.store_id);
    let expected_type = if adding { RaftChangeType::AddNode } else { RaftChangeType::RemoveNode };
    if cc.node_id != peer.peer_id || cc.get_change_type() != expected_type {
        return rejected("the raft change and the peer change disagree".into());
    }
    match (adding, on_store) {
        (true, Some(i)) if region.peers[i].peer_id == peer.peer_id => {
            return rejected("the peer is already a member".into())
        }
        (true, Some(_)) => return rejected(format!("store {} already holds a peer of the region", peer.store_id)),
        (true, None) => region.peers.push(peer),
        (false, Some(i)) if region.peers[i].peer_id == peer.peer_id => {
            region.peers.remove(i);
        }
        (false, _) => return rejected("the peer is not a member".into()),
    }
    region.epoch = Some(RegionEpoch { conf_ver: current.conf_ver + 1, ..current });
    // This store's own removal records the peer's id with the region, so that the id is never taken
    // back, even if the node stops before it destroys the peer.
    let removed_self = !adding && peer.store_id == local.store_id;
    let removed_peer_id = if removed_self { peer.peer_id } else { 0 };
    engine.put_region_state(txn, &RegionLocalState { removed_peer_id, ..RegionLocalState::normal(region.clone()) })?;
    effects.removed_self |= removed_self;
    tracing::info!(
        region_id = region.region_id,
        peer_id = peer.peer_id,
        store_id = peer.store_id,
        change = if adding { "add" } else { "remove" },
        conf_ver = current.conf_ver + 1,
        "membership changed"
    );
    effects.conf_changes.push(cc);
    Ok(Ok(WriteResponse { revision: 0 }))
}

/// The outcome applying `entry` will have, if it is already fixed now, without looking at any data:
/// a plain write (puts and deletes without preconditions) under the current epoch whose keys all
/// lie in `region` succeeds with the entry's index as its revision, whatever the keys hold. This is
/// what lets a write be answered once its entry is committed (see DESIGN.md, the write path).
///
/// `region` must be the region as it will be when `entry` applies: the caller checks that no entry
/// between the applied index and this one can change it ([`may_change_region`]). Every check here
/// is one [`apply_entries`] makes, on the same inputs, so the answer cannot differ from the apply.
pub fn outcome_at_commit(region: &Region, entry: &Entry) -> Option<WriteResponse> {
    if entry.get_entry_type() != EntryType::EntryNormal || entry.data.is_empty() {
        return None;
    }
    let cmd = RaftCmdRequest::decode(entry.data.as_ref()).ok()?;
    if cmd.admin.is_some() || cmd.requests.is_empty() || check_data_epoch(region, &cmd).is_err() {
        return None;
    }
    let plain = cmd.requests.iter().all(|req| match &req.cmd {
        Some(request::Cmd::Put(put)) => put.precondition.is_none() && region_contains(region, &put.key),
        Some(request::Cmd::Delete(delete)) => delete.precondition.is_none() && region_contains(region, &delete.key),
        None => true,
    });
    plain.then_some(WriteResponse { revision: entry.index })
}

/// Whether applying `entry` may change the region (its range, epoch or members) and with it the
/// outcome of the entries after it: a membership change, or an admin command other than a log
/// compaction. Raft's empty entries and data commands never do; an entry that does not decode is
/// counted as one that may (it is skipped at apply, but costs nothing to be careful about).
pub fn may_change_region(entry: &Entry) -> bool {
    admin_effect(entry) == AdminEffect::ChangesRegion
}

/// What an entry does beyond data, for the raftstore's ordering rules.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminEffect {
    /// Data, or raft's empty entry.
    None,
    /// A log compaction: it deletes log entries raft may still read until the apply is finished.
    CompactsLog,
    /// See [`may_change_region`].
    ChangesRegion,
}

pub fn admin_effect(entry: &Entry) -> AdminEffect {
    match entry.get_entry_type() {
        EntryType::EntryNormal if entry.data.is_empty() => AdminEffect::None,
        EntryType::EntryNormal => match RaftCmdRequest::decode(entry.data.as_ref()) {
            Ok(cmd) => match cmd.admin.map(|a| a.cmd) {
                None | Some(None) => AdminEffect::None,
                Some(Some(admin_request::Cmd::CompactLog(_))) => AdminEffect::CompactsLog,
                Some(Some(_)) => AdminEffect::ChangesRegion,
            },
            Err(_) => AdminEffect::ChangesRegion,
        },
        EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => AdminEffect::ChangesRegion,
    }
}

/// HTTP conditional-request semantics (RFC 9110 §13) on the key's current revision.
pub fn precondition_holds(p: &Precondition, current: Option<u64>) -> bool {
    if p.if_exists && current.is_none() {
        return false;
    }
    if !p.if_match.is_empty() && !current.is_some_and(|rev| p.if_match.contains(&rev)) {
        return false;
    }
    if p.if_absent && current.is_some() {
        return false;
    }
    if current.is_some_and(|rev| p.if_none_match.contains(&rev)) {
        return false;
    }
    true
}

#[allow(clippy::too_many_arguments)]
fn apply_admin(
    engine: &Engine,
    txn: &mut RwTxn<'_>,
    local: &LocalStore<'_>,
    region: &mut Region,
    apply_state: &mut RaftApplyState,
    entry_index: u64,
    header: &Option<crate::proto::CmdHeader>,
    admin: AdminRequest,
    effects: &mut ApplyEffects,
) -> Result<Option<Result<WriteResponse, Error>>, StorageError> {
    match admin.cmd {
        Some(admin_request::Cmd::CompactLog(compact)) => {
            // A compaction proposed twice, or overtaken by a newer one, is a no-op. It may never pass
            // what this replica has applied: the log below is what replays the data on restart.
            if compact.compact_index <= apply_state.truncated_index || compact.compact_index > apply_state.applied_index
            {
                return Ok(None);
            }
            engine.delete_entries(txn, region.region_id, apply_state.truncated_index + 1, compact.compact_index + 1)?;
            apply_state.truncated_index = compact.compact_index;
            apply_state.truncated_term = compact.compact_term;
            effects.log_compacted = true;
            Ok(None)
        }
        Some(admin_request::Cmd::Split(split)) => {
            // Checked again here, where every replica agrees: the region may have split since it was
            // proposed (same version needed), and the key must still fall strictly inside.
            let proposed = header.as_ref().and_then(|h| h.epoch).unwrap_or_default();
            let current = region.epoch.unwrap_or_default();
            if proposed.version != current.version || proposed.conf_ver != current.conf_ver {
                return Ok(Some(Err(Error::EpochNotMatch { current_regions: vec![region.clone()] })));
            }
            let key = split.split_key;
            if !region.can_split_at(&key) || split.new_peer_ids.len() != region.peers.len() {
                tracing::warn!(region_id = region.region_id, "ignoring an invalid split");
                return Ok(Some(Err(Error::KeyNotInRegion { key, region_id: region.region_id })));
            }
            let epoch = RegionEpoch { conf_ver: current.conf_ver, version: current.version + 1 };
            let right = Region {
                region_id: split.new_region_id,
                start_key: key.clone(),
                end_key: region.end_key.clone(),
                epoch: Some(epoch),
                peers: region
                    .peers
                    .iter()
                    .zip(&split.new_peer_ids)
                    .map(|(p, &peer_id)| Peer { peer_id, store_id: p.store_id })
                    .collect(),
            };
            region.end_key = key;
            region.epoch = Some(epoch);
            engine.put_region_state(txn, &RegionLocalState::normal(region.clone()))?;
            tracing::info!(
                region_id = region.region_id,
                new_region_id = right.region_id,
                split_key = %crate::storage::keys::display(&right.start_key),
                "region split"
            );
            match split_peer_here(engine, txn, local, &right)? {
                SplitPeer::Start => {
                    super::peer_storage::PeerStorage::write_initial_state_at(engine, txn, &right, entry_index)?;
                    effects.new_regions.push(right);
                }
                SplitPeer::Stale(reason) => {
                    // The right half's data is nobody's here now; a peer of it this store gets later
                    // is filled by a snapshot.
                    engine.delete_data_range(txn, &right.start_key, &right.end_key)?;
                    tracing::info!(
                        region_id = right.region_id,
                        reason,
                        "not starting this store's peer of a split-off region"
                    );
                }
                SplitPeer::AlreadyHeld => {
                    // The new region's state and data here are newer than the split's: leave both.
                    tracing::warn!(
                        region_id = right.region_id,
                        "a split-off region this store already holds: keeping the state it has"
                    );
                }
            }
            Ok(Some(Ok(WriteResponse { revision: 0 })))
        }
        // Membership changes travel as raft conf change entries, never as plain commands.
        Some(admin_request::Cmd::ChangePeer(_)) => {
            Ok(Some(Err(Error::InvalidChange { reason: "a peer change must be a conf change entry".into() })))
        }
        None => Ok(None),
    }
}

/// What a split applied here does about this store's peer of `right`, the region split off.
enum SplitPeer {
    /// Write its initial state (as of the split) and start it.
    Start,
    /// Do not start it, and drop the right half's data: this store's peer of the region is gone or
    /// replaced (see [`split_peer_here`]).
    Stale(&'static str),
    /// This store already holds the region, filled by a snapshot before the split applied here:
    /// its state and data are newer than the split's, and stay.
    AlreadyHeld,
}

/// Whether this store starts its peer of `right`, a region split off here, as TiKV decides it: the
/// split's initial state is written only where the store has no record of the new region yet.
///
/// The split is applied late when this store's peer of the parent was cut off or stopped:
/// meanwhile the new region may have removed this store's peer (this store destroyed it: a
/// tombstone) or replaced it with a newer one (created empty by a message), so the split's peer
/// id here is stale, and starting it would bring back a peer under an id the region has moved past.
/// Or the new region's peer here got a snapshot first and has advanced past the split's index:
/// writing the split's state over it would leave a raft state behind its applied index (and forget
/// its log). An empty peer of the new region with the split's id holds no record but its term and
/// vote, which [`super::peer_storage::PeerStorage::write_initial_state_at`] keeps.
fn split_peer_here(
    engine: &Engine,
    txn: &RwTxn<'_>,
    local: &LocalStore<'_>,
    right: &Region,
) -> Result<SplitPeer, StorageError> {
    match engine.region_state(txn, right.region_id)? {
        Some(s) if s.state == crate::proto::PeerState::Tombstone as i32 => {
            return Ok(SplitPeer::Stale("this store already destroyed its peer of the region"))
        }
        Some(_) => return Ok(SplitPeer::AlreadyHeld),
        None => {}
    }
    let Some(split_peer_id) = right.peers.iter().find(|p| p.store_id == local.store_id).map(|p| p.peer_id) else {
        // Only a split applied after this store's own removal could do this, and nothing is applied
        // here after that; never start a peer its region does not list.
        return Ok(SplitPeer::Stale("the new region has no peer on this store"));
    };
    if local.empty_peers.get(&right.region_id).is_some_and(|&empty| empty != split_peer_id) {
        return Ok(SplitPeer::Stale("this store runs a newer peer of the region"));
    }
    Ok(SplitPeer::Start)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p() -> Precondition {
        Precondition::default()
    }

    fn region() -> Region {
        Region {
            region_id: 1,
            start_key: b"b".to_vec(),
            end_key: b"m".to_vec(),
            epoch: Some(RegionEpoch { conf_ver: 1, version: 3 }),
            peers: vec![Peer { peer_id: 1, store_id: 1 }],
        }
    }

    fn entry(index: u64, version: u64, requests: Vec<crate::proto::Request>, admin: Option<AdminRequest>) -> Entry {
        let cmd = RaftCmdRequest {
            header: Some(crate::proto::CmdHeader {
                region_id: 1,
                peer_id: 1,
                epoch: Some(RegionEpoch { conf_ver: 1, version }),
            }),
            requests,
            admin,
        };
        Entry { index, term: 2, data: cmd.encode_to_vec().into(), ..Default::default() }
    }

    fn put(key: &[u8], precondition: Option<Precondition>) -> crate::proto::Request {
        let put = crate::proto::PutRequest { key: key.to_vec(), value: b"v".to_vec(), precondition };
        crate::proto::Request { cmd: Some(request::Cmd::Put(put)) }
    }

    fn delete(key: &[u8]) -> crate::proto::Request {
        let delete = crate::proto::DeleteRequest { key: key.to_vec(), precondition: None };
        crate::proto::Request { cmd: Some(request::Cmd::Delete(delete)) }
    }

    #[test]
    fn only_plain_writes_under_the_current_epoch_are_decided_at_commit() {
        let r = region();
        let plain = entry(9, 3, vec![put(b"c", None), delete(b"d")], None);
        assert_eq!(outcome_at_commit(&r, &plain), Some(WriteResponse { revision: 9 }));
        // A precondition depends on the data; a stale epoch or a key outside fails at apply.
        assert_eq!(outcome_at_commit(&r, &entry(9, 3, vec![put(b"c", Some(p()))], None)), None);
        assert_eq!(outcome_at_commit(&r, &entry(9, 2, vec![put(b"c", None)], None)), None);
        assert_eq!(outcome_at_commit(&r, &entry(9, 3, vec![put(b"c", None), put(b"x", None)], None)), None);
        assert_eq!(outcome_at_commit(&r, &Entry { index: 9, ..Default::default() }), None);
        let compact = AdminRequest {
            cmd: Some(admin_request::Cmd::CompactLog(crate::proto::CompactLogRequest {
                compact_index: 5,
                compact_term: 1,
            })),
        };
        assert_eq!(outcome_at_commit(&r, &entry(9, 3, vec![], Some(compact.clone()))), None);
        // Log compactions, empty entries and data leave the region as it is; splits and
        // membership changes do not.
        assert!(!may_change_region(&plain));
        assert!(!may_change_region(&Entry::default()));
        assert!(!may_change_region(&entry(9, 3, vec![], Some(compact))));
        let split = AdminRequest {
            cmd: Some(admin_request::Cmd::Split(crate::proto::SplitRequest {
                split_key: b"f".to_vec(),
                new_region_id: 2,
                new_peer_ids: vec![2],
            })),
        };
        assert!(may_change_region(&entry(9, 3, vec![], Some(split))));
        let mut cc = Entry::default();
        cc.set_entry_type(EntryType::EntryConfChange);
        assert!(may_change_region(&cc));
    }

    #[test]
    fn preconditions_follow_http_semantics() {
        assert!(precondition_holds(&p(), None));
        assert!(precondition_holds(&p(), Some(3)));
        let if_exists = Precondition { if_exists: true, ..p() };
        assert!(!precondition_holds(&if_exists, None));
        assert!(precondition_holds(&if_exists, Some(3)));
        let if_match = Precondition { if_match: vec![3, 5], ..p() };
        assert!(precondition_holds(&if_match, Some(5)));
        assert!(!precondition_holds(&if_match, Some(4)));
        assert!(!precondition_holds(&if_match, None));
        let if_absent = Precondition { if_absent: true, ..p() };
        assert!(precondition_holds(&if_absent, None));
        assert!(!precondition_holds(&if_absent, Some(1)));
        let if_none_match = Precondition { if_none_match: vec![7], ..p() };
        assert!(precondition_holds(&if_none_match, None));
        assert!(precondition_holds(&if_none_match, Some(8)));
        assert!(!precondition_holds(&if_none_match, Some(7)));
    }
}
