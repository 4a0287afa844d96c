//! A peer's proposals: client writes, membership changes, splits and leader transfers, checked
//! against the region before they enter the log.

use prost::Message as _;
use raft::eraftpb::EntryType;
use raft::StateRole;

use super::{Peer, Proposal, ProposalCallback};
use crate::proto::{
    admin_request, AdminRequest, ChangePeerRequest, CmdHeader, ConfChangeType, RaftCmdRequest, Request,
};
use crate::raftstore::error::Error;
use crate::raftstore::msg::Callback;
use crate::raftstore::msg::WriteResponse;

impl Peer {
    /// Starts handing leadership to the peer on `to_store_id`: raft catches it up, then tells it to
    /// campaign at once. Only the leader can; a transfer to itself is a no-op.
    pub fn transfer_leader(&mut self, to_store_id: u64) -> Result<(), Error> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let region = self.region();
        let Some(target) = region.peers.iter().find(|p| p.store_id == to_store_id) else {
            return Err(Error::RegionNotFound { region_id: region.region_id });
        };
        if target.peer_id != self.peer_id {
            tracing::info!(
                region_id = region.region_id,
                to_peer_id = target.peer_id,
                to_store_id,
                "transferring leadership"
            );
            let to_peer_id = target.peer_id;
            self.raw.transfer_leader(to_peer_id);
        }
        Ok(())
    }

    /// Proposes adding or removing one peer; answered once the change is applied. A change already
    /// made is answered at once. Refused (retryable) while another change is in flight; refused for
    /// good when it cannot be made safely.
    pub fn on_change_peer(&mut self, change: ChangePeerRequest, callback: Callback<()>) {
        match self.check_change_peer(&change) {
            Ok(true) => {}
            Ok(false) => {
                let _ = callback.send(Ok(()));
                return;
            }
            Err(err) => {
                let _ = callback.send(Err(err));
                return;
            }
        }
        let peer = change.peer.expect("checked");
        let region_id = self.region_id();
        let cmd = self.command(Vec::new(), Some(admin_request::Cmd::ChangePeer(change)));
        let mut cc = raft::eraftpb::ConfChange {
            node_id: peer.peer_id,
            context: cmd.encode_to_vec().into(),
            ..Default::default()
        };
        cc.set_change_type(if change.change_type == ConfChangeType::AddNode as i32 {
            raft::eraftpb::ConfChangeType::AddNode
        } else {
            raft::eraftpb::ConfChangeType::RemoveNode
        });
        let last_before = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose_conf_change(Vec::new(), cc);
        match self.appended(last_before, proposed, EntryType::EntryConfChange) {
            Ok((index, term)) => {
                tracing::info!(region_id, ?change, index, "proposed a membership change");
                let callback = ProposalCallback::ChangePeer(callback);
                self.proposals.push_back(Proposal { index, term, callback, at_commit: false });
            }
            Err(err) => {
                let _ = callback.send(Err(err));
            }
        }
    }

    /// Whether `change` must be proposed (`Ok(false)`: it is already in effect).
    pub(super) fn check_change_peer(&self, change: &ChangePeerRequest) -> Result<bool, Error> {
        let invalid = |reason: String| Err(Error::InvalidChange { reason });
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let Some(peer) = change.peer else {
            return invalid("no peer given".into());
        };
        if peer.peer_id == 0 || peer.store_id == 0 {
            return invalid("the peer needs a peer id and a store id".into());
        }
        let region = self.region();
        let on_store = region.peers.iter().find(|p| p.store_id == peer.store_id);
        let with_id = region.peers.iter().find(|p| p.peer_id == peer.peer_id);
        let adding = match ConfChangeType::try_from(change.change_type) {
            Ok(ConfChangeType::AddNode) => true,
            Ok(ConfChangeType::RemoveNode) => false,
            Err(_) => return invalid(format!("unknown change type {}", change.change_type)),
        };
        if adding {
            match (on_store, with_id) {
                (Some(p), _) if *p == peer => return Ok(false),
                (Some(p), _) => {
                    return invalid(format!("store {} already holds peer {} of the region", p.store_id, p.peer_id))
                }
                (None, Some(p)) => return invalid(format!("peer id {} is taken by store {}", p.peer_id, p.store_id)),
                (None, None) => {}
            }
        } else {
            match with_id {
                None => return Ok(false),
                Some(p) if p.store_id != peer.store_id => {
                    return invalid(format!("peer {} is on store {}, not {}", p.peer_id, p.store_id, peer.store_id))
                }
                Some(_) if region.peers.len() == 1 => return invalid("cannot remove the region's last peer".into()),
                // The leader leaving a 2-peer group could leave the other peer unable to learn that the
                // change committed, and unable to win an election without the leader's vote.
                Some(_) if peer.peer_id == self.peer_id && region.peers.len() == 2 => {
                    return invalid(
                        "the leader of a 2-peer region cannot remove itself; transfer leadership first".into(),
                    )
                }
                Some(_) => {}
            }
        }
        if self.raw.raft.has_pending_conf() {
            return Err(Error::ProposalDropped { reason: "another membership change is in progress" });
        }
        Ok(true)
    }

    /// Proposes splitting this region at `split_key` into itself and a new region with the given ids.
    /// Refused unless this peer leads the region, the epoch is the one the split was decided for, and
    /// the key lies strictly inside the range.
    pub fn propose_split(
        &mut self,
        epoch: crate::proto::RegionEpoch,
        split_key: Vec<u8>,
        new_region_id: u64,
        new_peer_ids: Vec<u64>,
    ) -> Result<(), Error> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let region = self.region();
        if region.epoch != Some(epoch) {
            return Err(Error::EpochNotMatch { current_regions: vec![region.clone()] });
        }
        if !region.can_split_at(&split_key) || new_peer_ids.len() != region.peers.len() {
            return Err(Error::KeyNotInRegion { key: split_key, region_id: region.region_id });
        }
        // The epoch was just checked to be the region's: the command carries it.
        let split = crate::proto::SplitRequest { split_key, new_region_id, new_peer_ids };
        let cmd = self.command(Vec::new(), Some(admin_request::Cmd::Split(split)));
        self.propose(cmd.encode_to_vec()).map(drop)
    }

    pub fn region_id(&self) -> u64 {
        self.region().region_id
    }

    pub(crate) fn is_leader(&self) -> bool {
        self.raw.raft.state == StateRole::Leader
    }

    /// The store of the leader raft knows of now, never this store while this peer does not lead:
    /// a redirect there would come straight back. Raft's own field, not the one the last ready
    /// reported: a message stepped earlier in this round may have ended this peer's leadership, and
    /// a write in the same round must not be told "the leader is on this store" (it was, as a `503`,
    /// while regions split and balanced under load).
    pub(super) fn leader_store_id(&self) -> Option<u64> {
        let leader_id = self.raw.raft.leader_id;
        if leader_id == self.peer_id && !self.is_leader() {
            return None;
        }
        self.region().peers.iter().find(|p| p.peer_id == leader_id).map(|p| p.store_id)
    }

    /// `NotLeader`, with the leader this peer knows of (for the client to go to).
    pub(crate) fn not_leader(&self) -> Error {
        Error::NotLeader { region_id: self.region_id(), leader_store_id: self.leader_store_id() }
    }

    // ---- events ----

    /// A client write: checked, then proposed as one entry. Answered once committed if it is a plain
    /// write (see [`super::deferred`]), else after its apply.
    pub fn on_write(&mut self, requests: Vec<Request>, callback: Callback<WriteResponse>) {
        if let Err(err) = self.check_write(&requests) {
            let _ = callback.send(Err(err));
            return;
        }
        let at_commit = requests.iter().all(|r| match &r.cmd {
            Some(crate::proto::request::Cmd::Put(put)) => put.precondition.is_none(),
            Some(crate::proto::request::Cmd::Delete(delete)) => delete.precondition.is_none(),
            None => true,
        });
        let cmd = self.command(requests, None);
        match self.propose(cmd.encode_to_vec()) {
            Ok((index, term)) => {
                let callback = ProposalCallback::Write(callback);
                self.proposals.push_back(Proposal { index, term, callback, at_commit })
            }
            Err(err) => {
                let _ = callback.send(Err(err));
            }
        }
    }

    pub(super) fn check_write(&self, requests: &[Request]) -> Result<(), Error> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let region = self.region();
        for req in requests {
            let Some(key) = req.key() else { continue };
            if !crate::raftstore::region_map::region_contains(region, key) {
                return Err(Error::KeyNotInRegion { key: key.to_vec(), region_id: region.region_id });
            }
        }
        Ok(())
    }

    /// A command of this peer at the region's current epoch (apply refuses it if the epoch moved
    /// before it applies).
    pub(super) fn command(&self, requests: Vec<Request>, admin: Option<admin_request::Cmd>) -> RaftCmdRequest {
        let region = self.region();
        RaftCmdRequest {
            header: Some(CmdHeader { region_id: region.region_id, peer_id: self.peer_id, epoch: region.epoch }),
            requests,
            admin: admin.map(|cmd| AdminRequest { cmd: Some(cmd) }),
        }
    }

    /// Proposes `data` and returns the (index, term) its entry got. raft-rs reports some drops as
    /// `Ok`, so the log's growth is what proves the entry exists.
    pub(super) fn propose(&mut self, data: Vec<u8>) -> Result<(u64, u64), Error> {
        let last_before = self.raw.raft.raft_log.last_index();
        let proposed = self.raw.propose(Vec::new(), data);
        self.appended(last_before, proposed, EntryType::EntryNormal)
    }

    /// The (index, term) of the entry a proposal just appended, or why there is none. raft-rs reports
    /// some drops as `Ok`, and turns a conf change it will not take into an empty normal entry: only a
    /// new last entry of the `expected` type proves the proposal is in the log.
    pub(super) fn appended(
        &self,
        last_before: u64,
        proposed: raft::Result<()>,
        expected: EntryType,
    ) -> Result<(u64, u64), Error> {
        match proposed {
            // raft-rs drops proposals only while its leadership is being transferred.
            Err(raft::Error::ProposalDropped) => return Err(Error::TransferringLeader),
            Err(err) => {
                tracing::warn!(region_id = self.region_id(), error = %err, "proposal failed");
                return Err(Error::ProposalDropped { reason: "raft refused the proposal" });
            }
            Ok(()) => {}
        }
        let index = self.raw.raft.raft_log.last_index();
        // A new entry is not persisted yet, so it is still in raft's unstable part.
        let last = self.raw.raft.raft_log.unstable.entries.last();
        if index == last_before || last.is_none_or(|e| e.index != index || e.get_entry_type() != expected) {
            return Err(Error::ProposalDropped { reason: "raft did not append the entry" });
        }
        Ok((index, self.raw.raft.term))
    }
}
