//! Who answers the leader-only calls: a single placement always; a replica of the group only while
//! it leads and serves. Everyone else gets UNAVAILABLE with why, and the leader's client address in
//! the `fekv-placement-leader` metadata when it is known ([`crate::LEADER_METADATA`]). Also the
//! `PlacementGroup` service (members and leader transfer), which every replica answers.

use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status};

use super::guard::{Guard, Need};
use crate::auth::{PasswordCost, PasswordError};
use crate::group::Group;
use crate::proto::placement_group_server::PlacementGroup;
use crate::proto::*;
use crate::state::Placement;

/// What a server serves.
#[derive(Clone)]
pub enum Source {
    /// A single placement (`--addr` alone): a group of one that always leads.
    Single(Arc<Placement>),
    /// One replica of a group.
    Group(Arc<Group>),
}

impl From<Arc<Placement>> for Source {
    fn from(placement: Arc<Placement>) -> Source {
        Source::Single(placement)
    }
}

impl From<Arc<Group>> for Source {
    fn from(group: Arc<Group>) -> Source {
        Source::Group(group)
    }
}

impl Source {
    /// The live placement, if this replica serves.
    pub fn placement(&self) -> Option<Arc<Placement>> {
        match self {
            Source::Single(placement) => Some(placement.clone()),
            Source::Group(group) => group.live().map(|live| live.placement),
        }
    }
}

/// The serving placement and the guard that checks calls against its users.
pub(super) struct Leader {
    pub placement: Arc<Placement>,
    pub guard: Arc<Guard>,
}

pub(crate) struct Serving {
    source: Source,
    password_cost: PasswordCost,
    /// The guard of the live state it was made for (a group's new leader makes a new one); none in
    /// a replica that has not led yet.
    guard: Mutex<Option<(u64, Arc<Guard>)>>,
}

impl Serving {
    pub(super) fn new(source: Source, password_cost: PasswordCost) -> Result<Serving, PasswordError> {
        let guard = match &source {
            Source::Single(placement) => Some((0, Arc::new(Guard::new(&placement.auth_state(), password_cost)?))),
            // A replica that does not lead yet checks nobody: it refuses every call first.
            Source::Group(_) => None,
        };
        Ok(Serving { source, password_cost, guard: Mutex::new(guard) })
    }

    pub(super) fn password_cost(&self) -> PasswordCost {
        self.password_cost
    }

    /// The placement to answer a leader-only call with, or the refusal.
    pub(super) fn leader(&self) -> Result<Leader, Status> {
        let (instance, placement) = match &self.source {
            Source::Single(placement) => (0, placement.clone()),
            Source::Group(group) => match group.live() {
                Some(live) => (live.instance, live.placement),
                None => return Err(self.hinted(Status::unavailable(group.refusal()))),
            },
        };
        let mut cached = self.guard.lock();
        let guard = match &*cached {
            Some((made_for, guard)) if *made_for == instance => guard.clone(),
            _ => {
                let guard = Guard::new(&placement.auth_state(), self.password_cost)
                    .map_err(|e| Status::internal(format!("cannot prepare the login checks: {e}")))?;
                let guard = Arc::new(guard);
                *cached = Some((instance, guard.clone()));
                guard
            }
        };
        Ok(Leader { placement, guard })
    }

    /// An UNAVAILABLE status with the leader's address, when this replica knows another leader.
    pub(super) fn hinted(&self, mut status: Status) -> Status {
        if status.code() != tonic::Code::Unavailable {
            return status;
        }
        let Source::Group(group) = &self.source else { return status };
        if let Some(value) = group.leader_hint().and_then(|addr| MetadataValue::try_from(addr).ok()) {
            status.metadata_mut().insert(crate::LEADER_METADATA, value);
        }
        status
    }
}

/// `PlacementGroup`: answered by every member.
pub(super) struct GroupService {
    pub(super) serving: Arc<Serving>,
}

/// How long `TransferPlacementLeader` waits when the caller set no deadline.
const TRANSFER_WAIT: Duration = Duration::from_secs(5);

#[tonic::async_trait]
impl PlacementGroup for GroupService {
    async fn get_members(&self, req: Request<GetMembersRequest>) -> Result<Response<GetMembersResponse>, Status> {
        let response = match &self.serving.source {
            Source::Single(placement) => GetMembersResponse {
                member_id: 1,
                // The address the call reached (known on plain TCP; empty behind TLS's acceptor).
                members: vec![PlacementMember {
                    member_id: 1,
                    addr: req.local_addr().map(|addr| addr.to_string()).unwrap_or_default(),
                }],
                leader_id: 1,
                term: 1,
                commit_index: 0,
                applied_index: 0,
                cluster_id: placement.cluster_id(),
                healthy: true,
                health: "ok".into(),
            },
            Source::Group(group) => {
                let status = group.status();
                let members = group.config().members.iter().enumerate();
                let members =
                    members.map(|(i, addr)| PlacementMember { member_id: i as u64 + 1, addr: addr.clone() }).collect();
                let leading = status.leader_id == status.member_id;
                let healthy = status.stopped.is_none() && (status.serving || (!leading && status.leader_id != 0));
                // Words only for what is wrong (`fekv ctl placement list` shows them as they are).
                let health = if healthy { "ok".to_string() } else { group.refusal() };
                GetMembersResponse {
                    member_id: status.member_id,
                    members,
                    leader_id: status.leader_id,
                    term: status.term,
                    commit_index: status.commit,
                    applied_index: status.applied,
                    cluster_id: group.cluster_id(),
                    healthy,
                    health,
                }
            }
        };
        Ok(Response::new(response))
    }

    async fn transfer_placement_leader(
        &self,
        req: Request<TransferPlacementLeaderRequest>,
    ) -> Result<Response<TransferPlacementLeaderResponse>, Status> {
        let leader = self.serving.leader()?;
        leader.guard.check(&req, Need::Admin).await?;
        let Source::Group(group) = &self.serving.source else {
            return Err(Status::failed_precondition("a single placement has no other member to lead"));
        };
        let to = req.get_ref().to_member_id;
        let me = group.config().member_id;
        if to == me {
            let addr = group.config().members[me as usize - 1].clone();
            return Ok(Response::new(TransferPlacementLeaderResponse { leader_id: me, leader_addr: addr }));
        }
        if to > group.config().members.len() as u64 {
            return Err(Status::invalid_argument(format!("there is no placement member {to}")));
        }
        let wait = super::deadline_of(&req).unwrap_or(TRANSFER_WAIT);
        drop(leader);
        let deadline = Instant::now() + wait;
        let mut asked = Instant::now() - Duration::from_secs(1);
        loop {
            let status = group.status();
            if status.leader_id != 0 && status.leader_id != me && (to == 0 || status.leader_id == to) {
                let addr = group.config().members[status.leader_id as usize - 1].clone();
                return Ok(Response::new(TransferPlacementLeaderResponse {
                    leader_id: status.leader_id,
                    leader_addr: addr,
                }));
            }
            if Instant::now() >= deadline {
                return Err(Status::deadline_exceeded(format!(
                    "leadership did not move to {} within {wait:?}",
                    if to == 0 { "another member".to_string() } else { format!("member {to}") }
                )));
            }
            // raft gives a transfer up after an election timeout: ask again until the deadline.
            if asked.elapsed() >= group.config().election_timeout() && status.leader_id == me {
                group.transfer_leader(to);
                asked = Instant::now();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
