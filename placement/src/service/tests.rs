//! The RPC permission matrix, against a real placement server on loopback: who may call what once
//! auth is enabled, and how the stores are handed the auth state.

use std::sync::Arc;
use std::time::SystemTime;

use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use tonic::{Code, Request};

use super::*;
use crate::auth::{AuthState, Authenticator, AuthenticatorOptions, Credentials, KeyRange, PasswordCost};
use crate::proto::placement_auth_client::PlacementAuthClient;
use crate::proto::placement_client::PlacementClient;
use crate::state::PlacementOptions;

struct Server {
    addr: SocketAddr,
    group: crate::proto::placement_group_client::PlacementGroupClient<Channel>,
    placement: PlacementClient<Channel>,
    auth: PlacementAuthClient<Channel>,
    _stop: tokio::sync::oneshot::Sender<()>,
    _dir: tempfile::TempDir,
}

async fn start() -> Server {
    let dir = tempfile::tempdir().unwrap();
    let options = PlacementOptions { replicas: 1, password_cost: PasswordCost::Minimal, ..Default::default() };
    let placement = Arc::new(Placement::open(dir.path(), options).unwrap());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, placement, async move {
        let _ = stopped.await;
    }));
    let channel = Channel::from_shared(format!("http://{addr}")).unwrap().connect_lazy();
    Server {
        addr,
        group: crate::proto::placement_group_client::PlacementGroupClient::new(channel.clone()),
        placement: PlacementClient::new(channel.clone()),
        auth: PlacementAuthClient::new(channel),
        _stop: stop,
        _dir: dir,
    }
}

fn password(user: &str, password: &str) -> Option<Credentials> {
    Some(Credentials::Password { user: user.into(), password: password.into() })
}

/// A request carrying `credentials` as `authorization` metadata.
fn with<T>(message: T, credentials: &Option<Credentials>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(credentials) = credentials {
        let value: MetadataValue<_> = credentials.to_authorization().parse().unwrap();
        request.metadata_mut().insert("authorization", value);
    }
    request
}

fn code<T: std::fmt::Debug>(result: Result<T, tonic::Status>) -> Code {
    result.map_or_else(|status| status.code(), |_| Code::Ok)
}

/// A registered store, a root user, a reader `alice`, and auth enabled (all done without
/// credentials while auth is still off).
/// A registered store (its id and secret), and auth set up and enabled.
async fn cluster_with_auth(server: &mut Server) -> (u64, Vec<u8>) {
    let register =
        RegisterStoreRequest { raft_addr: "127.0.0.1:1".into(), http_addr: "127.0.0.1:2".into(), ..Default::default() };
    let registered = server.placement.register_store(register).await.unwrap().into_inner();
    let none = None;
    let auth = &mut server.auth;
    auth.user_add(with(UserAddRequest { name: "root".into(), password: "rootpw".into() }, &none)).await.unwrap();
    auth.user_grant_role(with(UserRoleRequest { user: "root".into(), role: "root".into() }, &none)).await.unwrap();
    auth.role_add(with(RoleRequest { name: "reader".into() }, &none)).await.unwrap();
    let grant = AuthGrant { start: b"app/".to_vec(), end: b"app0".to_vec(), access: AuthAccess::Read as i32 };
    auth.role_grant(with(RoleGrantRequest { role: "reader".into(), grant: Some(grant) }, &none)).await.unwrap();
    auth.user_add(with(UserAddRequest { name: "alice".into(), password: "alicepw".into() }, &none)).await.unwrap();
    auth.user_grant_role(with(UserRoleRequest { user: "alice".into(), role: "reader".into() }, &none)).await.unwrap();
    let enabled = auth.auth_enable(with(AuthListRequest {}, &none)).await.unwrap().into_inner();
    assert!(enabled.enabled);
    (registered.store_id, registered.store_secret)
}

/// What each kind of caller gets from one listing and the six changing calls.
async fn matrix(server: &mut Server, who: &Option<Credentials>) -> Vec<Code> {
    let p = &mut server.placement;
    vec![
        code(p.get_stores(with(GetStoresRequest {}, who)).await),
        code(p.split_region(with(SplitRegionRequest { region_id: 9999, split_key: b"m".to_vec() }, who)).await),
        code(p.transfer_leader(with(TransferLeaderRequest { region_id: 9999, to_store_id: 1 }, who)).await),
        code(p.add_peer(with(AddPeerRequest { region_id: 9999, store_id: 1 }, who)).await),
        code(p.remove_peer(with(RemovePeerRequest { region_id: 9999, store_id: 1 }, who)).await),
        code(p.remove_store(with(RemoveStoreRequest { store_id: 9999 }, who)).await),
        code(p.set_scheduler(with(SetSchedulerRequest { name: "nonesuch".into(), enabled: false }, who)).await),
        code(server.auth.user_list(with(AuthListRequest {}, who)).await),
        code(server.auth.role_add(with(RoleRequest { name: "x".into() }, who)).await),
    ]
}

#[tokio::test]
async fn with_auth_off_every_call_is_open() {
    let mut server = start().await;
    let codes = matrix(&mut server, &None).await;
    // Reached the handlers: the unknown region, store and scheduler are simply not found.
    assert_eq!(codes[0], Code::Ok);
    assert!(codes[1..7].iter().all(|c| *c == Code::NotFound), "{codes:?}");
    assert_eq!(&codes[7..], [Code::Ok, Code::Ok]);
}

#[tokio::test]
async fn once_enabled_changes_need_root_and_listings_a_user() {
    let mut server = start().await;
    cluster_with_auth(&mut server).await;
    let anonymous = matrix(&mut server, &None).await;
    assert!(anonymous.iter().all(|c| *c == Code::Unauthenticated), "{anonymous:?}");
    let wrong = server.placement.get_stores(with(GetStoresRequest {}, &password("alice", "guess"))).await;
    assert_eq!(code(wrong), Code::Unauthenticated);
    let alice = matrix(&mut server, &password("alice", "alicepw")).await;
    assert_eq!(alice[0], Code::Ok);
    assert!(alice[1..].iter().all(|c| *c == Code::PermissionDenied), "{alice:?}");
    let root = matrix(&mut server, &password("root", "rootpw")).await;
    assert_eq!(root[0], Code::Ok);
    assert!(root[1..7].iter().all(|c| *c == Code::NotFound), "root reaches the handlers: {root:?}");
    assert_eq!(&root[7..], [Code::Ok, Code::Ok]);
    // Anyone may ask whether auth is on.
    let status = server.auth.auth_status(with(AuthListRequest {}, &None)).await.unwrap().into_inner();
    assert!(status.enabled);
    // Failed logins are limited: after alice's burst of five, the next is refused unchecked.
    let mut codes = Vec::new();
    for _ in 0..5 {
        codes.push(code(server.placement.get_stores(with(GetStoresRequest {}, &password("alice", "guess"))).await));
    }
    assert_eq!(codes, [vec![Code::Unauthenticated; 4], vec![Code::ResourceExhausted]].concat());
}

#[tokio::test]
async fn a_token_from_the_cluster_key_works_and_root_can_disable_auth() {
    let mut server = start().await;
    let (store_id, store_secret) = cluster_with_auth(&mut server).await;
    // What a node holds: the state from its heartbeat reply, and tokens made with its key.
    let beat = StoreHeartbeatRequest { store_id, store_secret, ..Default::default() };
    let reply = server.placement.store_heartbeat(beat.clone()).await.unwrap().into_inner();
    let state = AuthState::from_proto(&reply.auth.expect("a node with no state is sent it")).unwrap();
    let revision = state.revision();
    let options = AuthenticatorOptions { password_cost: PasswordCost::Minimal, ..Default::default() };
    let node = Authenticator::new(&state, options, None).unwrap();
    let store = Some(Credentials::Token(node.store_token(store_id, SystemTime::now()).unwrap()));
    let codes = matrix(&mut server, &store).await;
    assert_eq!(codes[0], Code::Ok, "a store may list");
    assert!(codes[1..].iter().all(|c| *c == Code::PermissionDenied), "a store may not administer: {codes:?}");
    let beat = StoreHeartbeatRequest { auth_revision: revision, ..beat };
    assert!(server.placement.store_heartbeat(beat).await.unwrap().into_inner().auth.is_none(), "only newer states");
    // A user's token, as a node issues it for POST /auth/token.
    let alice = password("alice", "alicepw").unwrap();
    let token = node.issue_token(&alice, "127.0.0.1".parse().unwrap(), crate::auth::Now::current()).unwrap();
    let by_token = Some(Credentials::Token(token.token));
    assert_eq!(code(server.placement.get_regions(with(GetRegionsRequest::default(), &by_token)).await), Code::Ok);
    // A user may change their own password, not another's.
    let own = UserChangePasswordRequest { name: "alice".into(), password: "new".into() };
    assert_eq!(code(server.auth.user_change_password(with(own, &Some(alice.clone()))).await), Code::Ok);
    let alice = password("alice", "new");
    let other = UserChangePasswordRequest { name: "root".into(), password: "mine".into() };
    assert_eq!(code(server.auth.user_change_password(with(other, &alice)).await), Code::PermissionDenied);
    let root = password("root", "rootpw");
    let off = server.auth.auth_disable(with(AuthListRequest {}, &root)).await.unwrap().into_inner();
    assert!(!off.enabled);
    assert_eq!(code(server.placement.get_stores(with(GetStoresRequest {}, &None)).await), Code::Ok);
}

#[tokio::test]
async fn enable_is_refused_without_a_root_user_and_grants_are_checked() {
    let mut server = start().await;
    let none = None;
    let refused = server.auth.auth_enable(with(AuthListRequest {}, &none)).await.unwrap_err();
    assert_eq!(refused.code(), Code::FailedPrecondition, "{refused:?}");
    let empty = AuthGrant { start: b"b".to_vec(), end: b"a".to_vec(), access: AuthAccess::Read as i32 };
    server.auth.role_add(with(RoleRequest { name: "r".into() }, &none)).await.unwrap();
    let bad = server.auth.role_grant(with(RoleGrantRequest { role: "r".into(), grant: Some(empty) }, &none)).await;
    assert_eq!(code(bad), Code::InvalidArgument);
    let prefix = KeyRange::prefix(b"a/");
    let revoke = AuthGrant { start: prefix.start.clone(), end: prefix.end_bytes().to_vec(), access: 0 };
    let missing =
        server.auth.role_revoke(with(RoleGrantRequest { role: "r".into(), grant: Some(revoke) }, &none)).await;
    assert_eq!(code(missing), Code::NotFound);
    let roles = server.auth.role_list(with(AuthListRequest {}, &none)).await.unwrap().into_inner().roles;
    assert_eq!(roles.iter().map(|r| r.name.as_str()).collect::<Vec<_>>(), ["root", "r"]);
}

#[tokio::test]
async fn a_single_placement_is_a_group_of_one_that_always_leads() {
    let mut server = start().await;
    let members = server.group.get_members(GetMembersRequest {}).await.unwrap().into_inner();
    assert_eq!((members.member_id, members.leader_id, members.healthy), (1, 1, true), "{members:?}");
    assert_eq!(members.health, "ok");
    assert_eq!(members.members, vec![PlacementMember { member_id: 1, addr: server.addr.to_string() }]);
    assert_ne!(members.cluster_id, 0);
    // There is nobody to hand leadership to.
    let transfer = server.group.transfer_placement_leader(TransferPlacementLeaderRequest { to_member_id: 2 }).await;
    assert_eq!(code(transfer), Code::FailedPrecondition);
}
