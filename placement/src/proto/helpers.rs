//! Small helpers on the generated messages, for the logic both the placement service and the
//! nodes need said once.

use super::{request, PeerState, Precondition, Region, RegionLocalState, Request};

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
