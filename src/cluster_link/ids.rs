//! The raftstore's [`IdAllocator`] port served by placement: a node in a cluster gets its split ids
//! from the placement service (a node alone uses `crate::ids::FileIdAllocator`).

use super::{PlacementLink, Retry};
use crate::ids::IdAllocator;
use crate::proto::placement_client::PlacementClient;

/// Ids from the placement service, for splits. Called from the split-check thread (not a tokio
/// worker), so it may block on the call.
pub struct PlacementIds {
    link: PlacementLink,
    runtime: tokio::runtime::Handle,
}

impl PlacementIds {
    pub fn new(link: PlacementLink, runtime: tokio::runtime::Handle) -> PlacementIds {
        PlacementIds { link, runtime }
    }
}

impl IdAllocator for PlacementIds {
    fn alloc(&self, count: usize) -> Result<Vec<u64>, String> {
        let request = crate::proto::AllocIdRequest { count: count as u32 };
        // Retried on a lost answer too: ids placement handed out in it are only a gap, never reused.
        let call = self
            .link
            .call(Retry::Idempotent, |channel| async move { PlacementClient::new(channel).alloc_id(request).await });
        let ids = self.runtime.block_on(call).map_err(|err| err.to_string())?.ids;
        if ids.len() != count {
            return Err(format!("placement returned {} ids for {count}", ids.len()));
        }
        Ok(ids)
    }
}
