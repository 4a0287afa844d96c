//! The async face of the raftstore: what the REST handlers call. Each call sends one message on the
//! store's bounded inbox and awaits its answer with a deadline, so a handler never blocks a tokio
//! worker and never waits forever.

use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Sender, TrySendError};
use prometheus::IntCounter;
use tokio::sync::oneshot;

use super::error::{Error, Result};
use super::inbox::RaftInbox;
use super::msg::{ChangedStatus, PeerStatus, StoreMsg, WriteResponse};
use super::region_map::RegionMap;
use crate::proto::{Region, Request};

#[derive(Clone)]
pub struct Router {
    inbox: Sender<StoreMsg>,
    regions: Arc<RegionMap>,
    timeout: Duration,
    /// Where the store's [`RaftInbox`] counts the damaged snapshots it refuses.
    damaged_snapshots: IntCounter,
}

impl Router {
    pub(super) fn new(
        inbox: Sender<StoreMsg>,
        regions: Arc<RegionMap>,
        timeout: Duration,
        damaged_snapshots: IntCounter,
    ) -> Router {
        Router { inbox, regions, timeout, damaged_snapshots }
    }

    /// The local region whose range holds `key`.
    pub fn locate(&self, key: &[u8]) -> Option<Region> {
        self.regions.locate(key)
    }

    pub fn regions(&self) -> Vec<Region> {
        self.regions.regions()
    }

    /// Whether this store holds no region yet (cheap: asked by every heartbeat).
    pub fn holds_no_region(&self) -> bool {
        self.regions.is_empty()
    }

    /// Resolves when a local region changed (split, snapshot, new peer).
    pub async fn regions_changed(&self) {
        self.regions.changed().await;
    }

    /// Proposes `requests` as one entry of `region_id` and waits until it is applied.
    pub async fn write(&self, region_id: u64, requests: Vec<Request>) -> Result<WriteResponse> {
        self.write_by(region_id, requests, Instant::now() + self.timeout).await
    }

    /// [`Router::write`], waiting no later than `deadline` (a request that already waited for
    /// something else has only what is left of its own timeout).
    pub async fn write_by(&self, region_id: u64, requests: Vec<Request>, deadline: Instant) -> Result<WriteResponse> {
        self.call_by(deadline, true, |callback| StoreMsg::Write { region_id, requests, callback }).await
    }

    /// Waits until reading `region_id`'s data from LMDB is linearizable.
    pub async fn read_index(&self, region_id: u64) -> Result<()> {
        self.read_index_by(region_id, Instant::now() + self.timeout).await
    }

    /// [`Router::read_index`], waiting no later than `deadline`.
    pub async fn read_index_by(&self, region_id: u64, deadline: Instant) -> Result<()> {
        self.call_by(deadline, false, |callback| StoreMsg::ReadIndex { region_id, callback }).await
    }

    /// Asks the region's leader (this store's peer) to split it, at `split_key` or in the middle. The
    /// split happens asynchronously; the region's epoch version grows when it has.
    pub async fn split_region(&self, region_id: u64, split_key: Option<Vec<u8>>) -> Result<()> {
        self.call(false, |callback| StoreMsg::SplitRegion { region_id, split_key, callback }).await
    }

    /// Asks this store's leader peer of `region_id` to hand leadership to its peer on `to_store_id`.
    /// Proposals made while it happens are refused with a retryable error.
    pub async fn transfer_leader(&self, region_id: u64, to_store_id: u64) -> Result<()> {
        self.call(false, |callback| StoreMsg::TransferLeader { region_id, to_store_id, callback }).await
    }

    /// Asks this store's leader peer of `region_id` to add or remove `peer`, and waits until the change
    /// is applied. One change at a time per region: while one is in flight, others are refused with a
    /// retryable error.
    pub async fn change_peer(
        &self,
        region_id: u64,
        change_type: crate::proto::ConfChangeType,
        peer: crate::proto::Peer,
    ) -> Result<()> {
        let change = crate::proto::ChangePeerRequest { change_type: change_type as i32, peer: Some(peer) };
        self.call(true, |callback| StoreMsg::ChangePeer { region_id, change, callback }).await
    }

    /// Creates this store's peer of `region` (bootstrapped by placement) if it does not exist.
    pub async fn create_peer(&self, region: Region) -> Result<()> {
        self.call(false, |callback| StoreMsg::CreatePeer { region, callback }).await
    }

    pub async fn status(&self) -> Result<Vec<PeerStatus>> {
        self.call(false, |callback| StoreMsg::Status { callback }).await
    }

    /// The peers that may have changed after generation `since` (all for 0), plus those `include`
    /// picks (see [`StoreMsg::ChangedStatus`]).
    pub async fn changed_status(
        &self,
        since: u64,
        include: impl Fn(u64) -> bool + Send + 'static,
    ) -> Result<ChangedStatus> {
        self.call(false, |callback| StoreMsg::ChangedStatus { since, include: Box::new(include), callback }).await
    }

    /// The store's inbox, for the store's own messages (and tests that play the store's peers).
    pub fn store_inbox(&self) -> Sender<StoreMsg> {
        self.inbox.clone()
    }

    /// The store's inbox as a transport sees it: where incoming raft messages go, snapshots verified
    /// on the way (the damaged ones counted in the node's metrics).
    pub fn raft_inbox(&self) -> RaftInbox {
        RaftInbox::counting(self.inbox.clone(), self.damaged_snapshots.clone())
    }

    /// Messages waiting in the store's inbox.
    pub fn inbox_len(&self) -> usize {
        self.inbox.len()
    }

    /// Asks the store loop to stop after its current round.
    pub fn shutdown(&self) {
        let _ = self.inbox.send(StoreMsg::Shutdown);
    }

    async fn call<T>(&self, proposes: bool, msg: impl FnOnce(super::msg::Callback<T>) -> StoreMsg) -> Result<T> {
        self.call_by(Instant::now() + self.timeout, proposes, msg).await
    }

    async fn call_by<T>(
        &self,
        deadline: Instant,
        proposes: bool,
        msg: impl FnOnce(super::msg::Callback<T>) -> StoreMsg,
    ) -> Result<T> {
        let (tx, rx) = oneshot::channel();
        match self.inbox.try_send(msg(tx)) {
            Ok(()) => {}
            // The store is behind by a whole inbox: tell the client to come back rather than queue.
            Err(TrySendError::Full(_)) => return Err(Error::Busy),
            Err(TrySendError::Disconnected(_)) => return Err(Error::Stopped),
        }
        let asked = Instant::now();
        match tokio::time::timeout_at(deadline.into(), rx).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(Error::Stopped),
            Err(_) => Err(Error::Timeout { waited: asked.elapsed(), proposed: proposes }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A write given the rest of a request's time stops at that deadline, not one whole timeout
    /// later: a request that first waited out a leader transfer must not then wait a second timeout.
    #[tokio::test]
    async fn a_write_by_a_deadline_ends_there() {
        let (inbox, _nobody_reads) = crossbeam_channel::bounded(8);
        let counter = IntCounter::new("damaged", "damaged").expect("a counter");
        let router = Router::new(inbox, Arc::new(RegionMap::default()), Duration::from_secs(3600), counter);
        let deadline = Instant::now() + Duration::from_millis(50);
        let written = tokio::time::timeout(Duration::from_secs(30), router.write_by(1, Vec::new(), deadline)).await;
        assert!(
            matches!(written, Ok(Err(Error::Timeout { proposed: true, .. }))),
            "the write outlived its deadline: {:?}",
            written.map(|r| r.map(|_| ()))
        );
    }
}
