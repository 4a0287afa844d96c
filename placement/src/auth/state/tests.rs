use super::*;
use crate::auth::password::PasswordCost;

fn hash(password: &str) -> PasswordHash {
    PasswordHash::new(password, PasswordCost::Minimal).unwrap()
}

fn state() -> AuthState {
    AuthState::new(TokenKey::generate().unwrap())
}

/// A state with a root user holding the root role, and a reader role on `app/`.
fn with_root() -> AuthState {
    let mut auth = state();
    auth.user_add(ROOT, hash("rootpw")).unwrap();
    auth.user_grant_role(ROOT, ROOT).unwrap();
    auth.role_add("reader").unwrap();
    auth.role_grant("reader", KeyRange::prefix(b"app/"), Access::Read).unwrap();
    auth
}

#[test]
fn every_change_bumps_the_revision_and_a_no_op_does_not() {
    let mut auth = state();
    assert_eq!(auth.status(), AuthStatus { enabled: false, revision: 1 });
    auth.user_add("alice", hash("pw")).unwrap();
    assert_eq!(auth.revision(), 2);
    assert_eq!(auth.user("alice").unwrap().credential_revision, 2);
    auth.role_add("reader").unwrap();
    auth.user_grant_role("alice", "reader").unwrap();
    assert_eq!(auth.revision(), 4);
    auth.user_grant_role("alice", "reader").unwrap();
    auth.disable();
    assert_eq!(auth.revision(), 4, "granting a held role and disabling a disabled state change nothing");
    auth.role_grant("reader", KeyRange::prefix(b"a"), Access::Read).unwrap();
    auth.role_grant("reader", KeyRange::prefix(b"a"), Access::Read).unwrap();
    assert_eq!(auth.revision(), 5);
}

#[test]
fn users_are_added_listed_and_deleted() {
    let mut auth = state();
    auth.user_add("alice", hash("pw")).unwrap();
    auth.user_add("bob", hash("pw")).unwrap();
    assert_eq!(auth.user_add("alice", hash("pw")), Err(AuthAdminError::UserExists("alice".into())));
    assert_eq!(auth.users().keys().collect::<Vec<_>>(), ["alice", "bob"]);
    auth.user_delete("alice").unwrap();
    assert_eq!(auth.user_delete("alice"), Err(AuthAdminError::UnknownUser("alice".into())));
    assert_eq!(auth.users().keys().collect::<Vec<_>>(), ["bob"]);
}

#[test]
fn a_password_change_moves_the_credential_revision() {
    let mut auth = state();
    auth.user_add("alice", hash("old")).unwrap();
    let before = auth.user("alice").unwrap().credential_revision;
    auth.user_change_password("alice", hash("new")).unwrap();
    let user = auth.user("alice").unwrap();
    assert!(user.credential_revision > before);
    assert!(user.password_hash.verify("new") && !user.password_hash.verify("old"));
    assert!(auth.user_change_password("nobody", hash("x")).is_err());
}

#[test]
fn names_with_colons_spaces_or_nothing_are_refused() {
    let mut auth = state();
    for bad in ["", "a:b", "a b", "tab\t", &"x".repeat(65), "é"] {
        assert!(matches!(auth.user_add(bad, hash("pw")), Err(AuthAdminError::InvalidName { what: "user", .. })));
        assert!(matches!(auth.role_add(bad), Err(AuthAdminError::InvalidName { what: "role", .. })));
    }
    auth.user_add("svc-1.backup@dc_2", hash("pw")).unwrap();
}

#[test]
fn roles_are_granted_to_users_and_revoked() {
    let mut auth = with_root();
    auth.user_add("alice", hash("pw")).unwrap();
    assert_eq!(auth.user_grant_role("alice", "writer"), Err(AuthAdminError::UnknownRole("writer".into())));
    assert_eq!(auth.user_grant_role("bob", "reader"), Err(AuthAdminError::UnknownUser("bob".into())));
    auth.user_grant_role("alice", "reader").unwrap();
    assert!(auth.user("alice").unwrap().roles.contains("reader"));
    auth.user_revoke_role("alice", "reader").unwrap();
    assert_eq!(
        auth.user_revoke_role("alice", "reader"),
        Err(AuthAdminError::RoleNotGranted { user: "alice".into(), role: "reader".into() })
    );
}

#[test]
fn deleting_a_role_takes_it_from_its_users() {
    let mut auth = with_root();
    auth.user_add("alice", hash("pw")).unwrap();
    auth.user_grant_role("alice", "reader").unwrap();
    auth.role_delete("reader").unwrap();
    assert!(auth.user("alice").unwrap().roles.is_empty());
    assert_eq!(auth.role_delete("reader"), Err(AuthAdminError::UnknownRole("reader".into())));
}

#[test]
fn grants_are_replaced_per_range_and_revoked_by_their_exact_range() {
    let mut auth = with_root();
    let app = KeyRange::prefix(b"app/");
    auth.role_grant("reader", app.clone(), Access::ReadWrite).unwrap();
    assert_eq!(auth.role("reader").unwrap().grants.get(&app), Some(&Access::ReadWrite));
    let narrower = KeyRange::prefix(b"app/x");
    assert_eq!(
        auth.role_revoke("reader", &narrower),
        Err(AuthAdminError::GrantNotFound { role: "reader".into(), range: narrower })
    );
    auth.role_revoke("reader", &app).unwrap();
    assert!(auth.role("reader").unwrap().grants.is_empty());
}

#[test]
fn the_root_role_is_built_in() {
    let mut auth = with_root();
    assert_eq!(auth.role_add(ROOT), Err(AuthAdminError::RoleExists(ROOT.into())));
    assert_eq!(auth.role_delete(ROOT), Err(AuthAdminError::RootRoleBuiltIn));
    assert_eq!(auth.role_grant(ROOT, KeyRange::all(), Access::Read), Err(AuthAdminError::RootRoleBuiltIn));
    assert_eq!(auth.role_revoke(ROOT, &KeyRange::all()), Err(AuthAdminError::RootRoleBuiltIn));
    assert!(!auth.roles().contains_key(ROOT));
}

#[test]
fn enable_needs_a_root_user_holding_the_root_role() {
    let mut auth = state();
    assert_eq!(auth.enable(), Err(AuthAdminError::RootMissing));
    auth.user_add(ROOT, hash("pw")).unwrap();
    assert_eq!(auth.enable(), Err(AuthAdminError::RootMissing), "a root user without the root role");
    auth.user_grant_role(ROOT, ROOT).unwrap();
    auth.enable().unwrap();
    assert!(auth.status().enabled);
    auth.disable();
    assert!(!auth.status().enabled);
}

#[test]
fn root_cannot_be_locked_out_while_auth_is_enabled() {
    let mut auth = with_root();
    auth.enable().unwrap();
    assert_eq!(auth.user_delete(ROOT), Err(AuthAdminError::WouldLockOutRoot));
    assert_eq!(auth.user_revoke_role(ROOT, ROOT), Err(AuthAdminError::WouldLockOutRoot));
    auth.disable();
    auth.user_revoke_role(ROOT, ROOT).unwrap();
    auth.user_delete(ROOT).unwrap();
}

#[test]
fn the_state_round_trips_through_its_proto() {
    use prost::Message as _;
    let mut auth = with_root();
    auth.user_add("alice", hash("pw")).unwrap();
    auth.user_grant_role("alice", "reader").unwrap();
    auth.role_grant("reader", KeyRange::new(b"m".to_vec(), None).unwrap(), Access::ReadWrite).unwrap();
    auth.enable().unwrap();
    let bytes = auth.to_proto().encode_to_vec();
    let decoded = AuthState::from_proto(&proto::AuthState::decode(bytes.as_slice()).unwrap()).unwrap();
    assert_eq!(decoded, auth);
    assert_eq!(decoded.to_proto().encode_to_vec(), bytes, "equal states encode to equal bytes");
}

#[test]
fn a_damaged_state_is_refused_whole() {
    let good = with_root().to_proto();
    type Damage = fn(&mut proto::AuthState);
    let damage: [(&str, Damage); 6] = [
        ("short key", |s| s.token_key.truncate(31)),
        ("bad hash", |s| s.users[0].password_hash = "plain".into()),
        ("unknown role", |s| s.users[0].roles.push("ghost".into())),
        ("duplicate user", |s| s.users.push(s.users[0].clone())),
        ("empty range", |s| s.roles[0].grants[0].end = b"a".to_vec()),
        ("unknown access", |s| s.roles[0].grants[0].access = 9),
    ];
    for (what, damage) in damage {
        let mut state = good.clone();
        damage(&mut state);
        assert!(matches!(AuthState::from_proto(&state), Err(AuthAdminError::Corrupt(_))), "{what}");
    }
}
