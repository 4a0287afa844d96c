//! The link against fake placement members on 127.0.0.1:0: each answers `GetMembers` as a leader,
//! as a follower naming the leader, as a follower that knows none, or as a placement without the
//! group service (a single placement before replication).

use std::sync::atomic::{AtomicUsize, Ordering};

use super::*;
use crate::proto::placement_group_client::PlacementGroupClient;
use crate::proto::placement_group_server::{PlacementGroup, PlacementGroupServer};
use crate::proto::{
    GetMembersRequest, GetMembersResponse, TransferPlacementLeaderRequest, TransferPlacementLeaderResponse,
};

#[derive(Clone)]
enum Role {
    Leader(u64),
    /// Names this address as the leader.
    Follower(String),
    /// Knows no leader.
    Lost,
    Unimplemented,
}

struct Fake {
    role: Role,
    calls: Arc<AtomicUsize>,
}

#[tonic::async_trait]
impl PlacementGroup for Fake {
    async fn get_members(
        &self,
        _: tonic::Request<GetMembersRequest>,
    ) -> Result<tonic::Response<GetMembersResponse>, tonic::Status> {
        self.calls.fetch_add(1, Ordering::SeqCst);
        match &self.role {
            Role::Leader(member_id) => Ok(tonic::Response::new(GetMembersResponse {
                member_id: *member_id,
                leader_id: *member_id,
                ..Default::default()
            })),
            Role::Follower(leader) => {
                let mut status = tonic::Status::unavailable("not the placement leader");
                status.metadata_mut().insert(fekv_placement::LEADER_METADATA, leader.parse().unwrap());
                Err(status)
            }
            Role::Lost => Err(tonic::Status::unavailable("no placement leader known")),
            Role::Unimplemented => Err(tonic::Status::unimplemented("no PlacementGroup")),
        }
    }

    async fn transfer_placement_leader(
        &self,
        _: tonic::Request<TransferPlacementLeaderRequest>,
    ) -> Result<tonic::Response<TransferPlacementLeaderResponse>, tonic::Status> {
        Err(tonic::Status::unimplemented("not faked"))
    }
}

/// A fake member; returns its address and how many calls it answered.
async fn member(role: Role) -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let calls = Arc::new(AtomicUsize::new(0));
    let service = PlacementGroupServer::new(Fake { role, calls: calls.clone() });
    let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(incoming));
    (addr, calls)
}

/// An address nothing listens on (bound, then closed).
async fn dead_addr() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    listener.local_addr().unwrap().to_string()
}

async fn get_members(link: &PlacementLink, retry: Retry) -> Result<GetMembersResponse, CallError> {
    link.call(
        retry,
        |channel| async move { PlacementGroupClient::new(channel).get_members(GetMembersRequest {}).await },
    )
    .await
}

#[tokio::test]
async fn a_follower_s_hint_lands_the_call_on_the_leader_and_the_link_remembers_it() {
    let (leader, leader_calls) = member(Role::Leader(2)).await;
    let (follower, follower_calls) = member(Role::Follower(leader.clone())).await;
    let link = PlacementLink::new(&[follower.clone(), leader.clone()], None, Duration::from_secs(3)).unwrap();
    // Even a call that must not be repeated: the follower's refusal means it was not applied.
    let reply = get_members(&link, Retry::Once).await.unwrap();
    assert_eq!(reply.member_id, 2);
    assert_eq!(link.leader(), leader);
    get_members(&link, Retry::Once).await.unwrap();
    assert_eq!(follower_calls.load(Ordering::SeqCst), 1, "the second call went straight to the leader");
    assert_eq!(leader_calls.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn a_hint_outside_the_list_is_followed_and_added() {
    let (leader, _) = member(Role::Leader(3)).await;
    let (follower, _) = member(Role::Follower(leader.clone())).await;
    let link = PlacementLink::new(std::slice::from_ref(&follower), None, Duration::from_secs(3)).unwrap();
    assert_eq!(get_members(&link, Retry::Idempotent).await.unwrap().member_id, 3);
    assert_eq!(link.addrs(), vec![follower, leader]);
}

#[tokio::test]
async fn a_hint_naming_a_dead_leader_is_given_up_for_the_other_members() {
    // A follower that has not noticed yet that its leader died, and the member elected since.
    let dead = dead_addr().await;
    let (stale, _) = member(Role::Follower(dead.clone())).await;
    let (leader, _) = member(Role::Leader(3)).await;
    let link = PlacementLink::new(&[stale, leader.clone()], None, Duration::from_secs(3)).unwrap();
    let started = Instant::now();
    assert_eq!(get_members(&link, Retry::Once).await.unwrap().member_id, 3);
    assert_eq!(link.leader(), leader);
    assert!(started.elapsed() < Duration::from_secs(1), "took {:?}", started.elapsed());
}

#[tokio::test]
async fn a_dead_first_address_moves_the_call_to_the_next() {
    let dead = dead_addr().await;
    let (leader, _) = member(Role::Leader(1)).await;
    let link = PlacementLink::new(&[dead, leader.clone()], None, Duration::from_secs(3)).unwrap();
    // Refused connections never sent the request: retried even when not idempotent.
    assert_eq!(get_members(&link, Retry::Once).await.unwrap().member_id, 1);
    assert_eq!(link.leader(), leader);
}

#[tokio::test]
async fn without_a_leader_the_call_gives_up_at_its_deadline_naming_every_member() {
    let dead = dead_addr().await;
    let (lost, lost_calls) = member(Role::Lost).await;
    let deadline = Duration::from_millis(800);
    let link = PlacementLink::new(&[dead.clone(), lost.clone()], None, deadline).unwrap();
    let started = Instant::now();
    let err = get_members(&link, Retry::Idempotent).await.unwrap_err();
    let took = started.elapsed();
    assert!(took >= deadline && took < deadline + Duration::from_millis(700), "gave up after {took:?}");
    let CallError::NoLeader { tried, .. } = &err else { panic!("{err:?}") };
    assert_eq!(tried.len(), 2, "{tried:?}");
    let text = err.to_string();
    assert!(text.contains(&dead) && text.contains(&lost) && text.contains("no placement leader known"), "{text}");
    assert!(lost_calls.load(Ordering::SeqCst) >= 2, "retried within the deadline");
    assert_eq!(err.code(), tonic::Code::Unavailable);
}

#[tokio::test]
async fn an_answer_that_never_comes_is_not_repeated_unless_idempotent() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let silent = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let deadline = Duration::from_millis(600);
    let link = PlacementLink::new(std::slice::from_ref(&silent), None, deadline).unwrap();
    let started = Instant::now();
    let once = get_members(&link, Retry::Once).await.unwrap_err();
    assert!(started.elapsed() < deadline + Duration::from_millis(500), "{:?}", started.elapsed());
    assert!(matches!(once, CallError::Uncertain { .. }), "{once:?}");
    let again = get_members(&link, Retry::Idempotent).await.unwrap_err();
    assert!(matches!(again, CallError::NoLeader { .. }), "{again:?}");
}

#[tokio::test]
async fn placement_s_own_errors_are_returned_at_once() {
    let (single, calls) = member(Role::Unimplemented).await;
    let link = PlacementLink::new(std::slice::from_ref(&single), None, Duration::from_secs(3)).unwrap();
    let err = get_members(&link, Retry::Idempotent).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented, "{err:?}");
    assert_eq!(calls.load(Ordering::SeqCst), 1);
}

#[test]
fn lists_of_addresses_with_and_without_schemes() {
    let plain = |list| parse_members(list, false, "--cacert");
    assert_eq!(plain("127.0.0.1:2379").unwrap(), vec!["127.0.0.1:2379"]);
    assert_eq!(
        plain("http://127.0.0.1:2479, a:1 ,http://b:2/,a:1").unwrap(),
        vec!["127.0.0.1:2479", "a:1", "b:2"],
        "schemes dropped, spaces and repeats ignored"
    );
    assert!(plain("https://a:1").unwrap_err().contains("--cacert"));
    assert!(plain("a:1,nope").unwrap_err().contains("nope: expected host:port"));
    assert!(plain("a:1/x").is_err() && plain("a").is_err() && plain(":1").is_err() && plain("a:port").is_err());
    assert!(plain(" , ").unwrap_err().contains("no address"));
    let tls = |list| parse_members(list, true, "--cacert");
    assert_eq!(tls("https://a:1,b:2").unwrap(), vec!["a:1", "b:2"]);
    assert!(tls("http://a:1").unwrap_err().contains("write https://"));
}
