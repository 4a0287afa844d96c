//! The auth pieces together, as a node uses them: credentials in, a principal out, then checks.

use std::net::{IpAddr, Ipv4Addr};
use std::time::Duration;

use super::*;

const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

fn hash(password: &str) -> PasswordHash {
    PasswordHash::new(password, PasswordCost::Minimal).unwrap()
}

fn basic(user: &str, password: &str) -> Credentials {
    Credentials::Password { user: user.into(), password: password.into() }
}

fn user(name: &str) -> Principal {
    Principal::User(name.into())
}

/// root; alice reads `app/`; bob reads and writes `app/bob/` and reads `cfg/`; carol has no role.
fn cluster_state() -> AuthState {
    let mut auth = AuthState::new(TokenKey::generate().unwrap());
    for (name, password) in [(ROOT, "rootpw"), ("alice", "alicepw"), ("bob", "bobpw"), ("carol", "carolpw")] {
        auth.user_add(name, hash(password)).unwrap();
    }
    auth.user_grant_role(ROOT, ROOT).unwrap();
    auth.role_add("app-reader").unwrap();
    auth.role_grant("app-reader", KeyRange::prefix(b"app/"), Access::Read).unwrap();
    auth.role_add("bob").unwrap();
    auth.role_grant("bob", KeyRange::prefix(b"app/bob/"), Access::ReadWrite).unwrap();
    auth.role_grant("bob", KeyRange::prefix(b"cfg/"), Access::Read).unwrap();
    auth.user_grant_role("alice", "app-reader").unwrap();
    auth.user_grant_role("bob", "bob").unwrap();
    auth.enable().unwrap();
    auth
}

fn authenticator(state: &AuthState) -> Authenticator {
    let options = AuthenticatorOptions { password_cost: PasswordCost::Minimal, ..AuthenticatorOptions::default() };
    Authenticator::new(state, options, None).unwrap()
}

#[test]
fn no_credentials_is_unauthenticated() {
    let auth = authenticator(&cluster_state());
    assert_eq!(auth.authenticate(None, CLIENT, Now::current()), Err(AuthenticationError::Missing));
    assert!(!auth.view().can_read(&Principal::Unchecked, b"app/x"));
}

#[test]
fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let auth = authenticator(&cluster_state());
    let now = Now::current();
    assert_eq!(auth.authenticate(Some(&basic("alice", "nope")), CLIENT, now), Err(AuthenticationError::WrongPassword));
    assert_eq!(auth.authenticate(Some(&basic("mallory", "x")), CLIENT, now), Err(AuthenticationError::WrongPassword));
    assert_eq!(auth.authenticate(Some(&basic("alice", "alicepw")), CLIENT, now), Ok(user("alice")));
}

#[test]
fn a_read_only_role_reads_and_cannot_write() {
    let view = authenticator(&cluster_state()).view();
    assert!(view.can_read(&user("alice"), b"app/config"));
    assert!(!view.can_write(&user("alice"), b"app/config"));
    assert!(!view.can_read(&user("alice"), b"other"));
    assert!(!view.can_admin(&user("alice")));
    // bob: readwrite on his prefix, read on cfg/, nothing else.
    assert!(view.can_write(&user("bob"), b"app/bob/1"));
    assert!(!view.can_write(&user("bob"), b"app/alice/1"));
    assert!(view.can_read(&user("bob"), b"cfg/x") && !view.can_write(&user("bob"), b"cfg/x"));
    // A user with no role, and a user the state does not know, may do nothing.
    assert!(!view.can_read(&user("carol"), b"app/x"));
    assert!(!view.can_read(&user("ghost"), b"app/x"));
}

#[test]
fn scans_return_only_what_the_user_may_read() {
    let view = authenticator(&cluster_state()).view();
    let everything = KeyRange::all();
    // Inside a granted prefix: the whole scan.
    let inside = KeyRange::prefix(b"app/bob/");
    assert_eq!(view.readable_ranges(&user("bob"), &inside), vec![inside.clone()]);
    // Reaching outside: only the granted parts, in key order.
    assert_eq!(
        view.readable_ranges(&user("bob"), &everything),
        vec![KeyRange::prefix(b"app/bob/"), KeyRange::prefix(b"cfg/")]
    );
    assert_eq!(
        view.readable_ranges(&user("bob"), &KeyRange::new(b"app/bob/m".to_vec(), Some(b"d".to_vec())).unwrap()),
        vec![KeyRange::new(b"app/bob/m".to_vec(), Some(b"app/bob0".to_vec())).unwrap(), KeyRange::prefix(b"cfg/")]
    );
    assert!(view.readable_ranges(&user("carol"), &everything).is_empty());
    assert_eq!(view.readable_ranges(&user(ROOT), &everything), vec![everything]);
}

#[test]
fn root_may_do_everything() {
    let auth = authenticator(&cluster_state());
    let root = auth.authenticate(Some(&basic(ROOT, "rootpw")), CLIENT, Now::current()).unwrap();
    let view = auth.view();
    assert!(view.can_read(&root, b"any") && view.can_write(&root, b"\xff\xff") && view.can_admin(&root));
}

#[test]
fn disabled_auth_lets_everything_through() {
    let mut state = cluster_state();
    state.disable();
    let auth = authenticator(&state);
    let now = Now::current();
    let who = auth.authenticate(None, CLIENT, now).unwrap();
    assert_eq!(who, Principal::Unchecked);
    // Even wrong credentials are not looked at.
    assert_eq!(auth.authenticate(Some(&basic("alice", "wrong")), CLIENT, now), Ok(Principal::Unchecked));
    let view = auth.view();
    assert!(view.can_write(&who, b"anything") && view.can_admin(&who));
    assert!(view.can_write(&user("carol"), b"anything"));
    assert_eq!(auth.issue_token(&basic("alice", "alicepw"), CLIENT, now), Err(AuthenticationError::NotEnabled));
}

#[test]
fn a_token_works_until_it_expires() {
    let auth = authenticator(&cluster_state());
    let now = Now::current();
    let issued = auth.issue_token(&basic("alice", "alicepw"), CLIENT, now).unwrap();
    assert_eq!(issued.expires_at, now.wall + Duration::from_secs(300));
    let token = Credentials::Token(issued.token);
    assert_eq!(auth.authenticate(Some(&token), CLIENT, now), Ok(user("alice")));
    let later = Now { wall: issued.expires_at, ..now };
    assert!(matches!(
        auth.authenticate(Some(&token), CLIENT, later),
        Err(AuthenticationError::Token(TokenError::Expired(_)))
    ));
}

#[test]
fn a_token_needs_the_right_password_and_is_not_renewed_by_a_token() {
    let auth = authenticator(&cluster_state());
    let now = Now::current();
    assert_eq!(auth.issue_token(&basic("alice", "nope"), CLIENT, now), Err(AuthenticationError::WrongPassword));
    let token = Credentials::Token(auth.issue_token(&basic("alice", "alicepw"), CLIENT, now).unwrap().token);
    assert_eq!(auth.issue_token(&token, CLIENT, now), Err(AuthenticationError::PasswordRequired));
}

#[test]
fn a_password_change_or_a_delete_revokes_older_tokens_and_other_changes_do_not() {
    let mut state = cluster_state();
    let auth = authenticator(&state);
    let now = Now::current();
    let alice = Credentials::Token(auth.issue_token(&basic("alice", "alicepw"), CLIENT, now).unwrap().token);
    let bob = Credentials::Token(auth.issue_token(&basic("bob", "bobpw"), CLIENT, now).unwrap().token);

    state.role_grant("app-reader", KeyRange::prefix(b"more/"), Access::Read).unwrap();
    assert!(auth.update(&state));
    assert_eq!(auth.authenticate(Some(&alice), CLIENT, now), Ok(user("alice")), "an unrelated change");
    assert!(auth.view().can_read(&user("alice"), b"more/x"), "and it took effect");

    state.user_change_password("alice", hash("new")).unwrap();
    state.user_delete("bob").unwrap();
    assert!(auth.update(&state));
    assert_eq!(auth.authenticate(Some(&alice), CLIENT, now), Err(AuthenticationError::TokenRevoked));
    assert_eq!(auth.authenticate(Some(&bob), CLIENT, now), Err(AuthenticationError::TokenRevoked));
}

#[test]
fn a_token_from_a_newer_state_is_not_mistaken_for_a_revoked_one() {
    let mut state = cluster_state();
    let behind = authenticator(&state);
    state.user_add("dave", hash("davepw")).unwrap();
    let ahead = authenticator(&state);
    let now = Now::current();
    let dave = Credentials::Token(ahead.issue_token(&basic("dave", "davepw"), CLIENT, now).unwrap().token);
    assert_eq!(behind.authenticate(Some(&dave), CLIENT, now), Err(AuthenticationError::StateBehind));
    behind.update(&state);
    assert_eq!(behind.authenticate(Some(&dave), CLIENT, now), Ok(user("dave")));
}

#[test]
fn tampered_and_foreign_tokens_are_refused() {
    let state = cluster_state();
    let auth = authenticator(&state);
    let now = Now::current();
    let token = auth.issue_token(&basic("alice", "alicepw"), CLIENT, now).unwrap().token;
    // Another cluster's key, same user and revision.
    let other_cluster = TokenKey::generate().unwrap().issue(
        "alice",
        state.user("alice").unwrap().credential_revision,
        now.wall + Duration::from_secs(60),
    );
    let mut tampered = token.clone().into_bytes();
    let middle = tampered.len() / 2;
    tampered[middle] ^= 1;
    for bad in [other_cluster, String::from_utf8(tampered).unwrap()] {
        assert!(matches!(
            auth.authenticate(Some(&Credentials::Token(bad)), CLIENT, now),
            Err(AuthenticationError::Token(TokenError::BadSignature | TokenError::Malformed))
        ));
    }
}

#[test]
fn rotating_the_token_key_revokes_every_token() {
    let mut state = cluster_state();
    let auth = authenticator(&state);
    let now = Now::current();
    let token = Credentials::Token(auth.issue_token(&basic("alice", "alicepw"), CLIENT, now).unwrap().token);
    state.rotate_token_key(TokenKey::generate().unwrap());
    auth.update(&state);
    assert_eq!(auth.authenticate(Some(&token), CLIENT, now), Err(AuthenticationError::Token(TokenError::BadSignature)));
}

#[test]
fn an_older_state_never_replaces_a_newer_one() {
    let old = cluster_state();
    let mut new = old.clone();
    new.user_add("dave", hash("pw")).unwrap();
    let auth = authenticator(&new);
    assert!(!auth.update(&old));
    assert_eq!(auth.view().revision(), new.revision());
}

#[test]
fn repeated_wrong_passwords_are_throttled_even_with_the_right_one() {
    let auth = authenticator(&cluster_state());
    let now = Now::current();
    let burst = auth_limiter_burst();
    for _ in 0..burst {
        assert_eq!(
            auth.authenticate(Some(&basic("alice", "guess")), CLIENT, now),
            Err(AuthenticationError::WrongPassword)
        );
    }
    assert!(matches!(
        auth.authenticate(Some(&basic("alice", "alicepw")), CLIENT, now),
        Err(AuthenticationError::Throttled(_))
    ));
    let later = Now { instant: now.instant + Duration::from_secs(2), ..now };
    assert_eq!(auth.authenticate(Some(&basic("alice", "alicepw")), CLIENT, later), Ok(user("alice")));
}

fn auth_limiter_burst() -> u32 {
    LimiterPolicy::default().per_user.burst
}
