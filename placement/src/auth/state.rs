//! [`AuthState`]: users, roles, the enabled switch and the token key, with the operations `fekv ctl`
//! drives (etcd's model: a user holds roles, a role holds grants of key ranges with read or readwrite,
//! and the built-in `root` role may do everything, including admin). Every change bumps `revision`.
//!
//! The state is a plain value: placement applies an operation under its lock, persists
//! [`AuthState::to_proto`] with the rest of its state, and sends it to the nodes, which rebuild an
//! [`super::AuthView`] from it. Password hashing is slow, so operations take a ready
//! [`PasswordHash`]: hash before taking any lock.

use std::collections::{BTreeMap, BTreeSet};

use crate::auth::keyrange::KeyRange;
use crate::auth::password::PasswordHash;
use crate::auth::token::TokenKey;
use crate::proto;

/// The name of the built-in role that may do everything, and of the user `auth enable` requires.
pub const ROOT: &str = "root";
const MAX_NAME_LEN: usize = 64;

/// What a grant allows on its keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Access {
    Read,
    ReadWrite,
}

#[derive(Debug, Clone, PartialEq)]
pub struct User {
    pub password_hash: PasswordHash,
    pub roles: BTreeSet<String>,
    /// The revision that added this user or last changed its password (tokens carry it).
    pub credential_revision: u64,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct Role {
    pub grants: BTreeMap<KeyRange, Access>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AuthState {
    enabled: bool,
    revision: u64,
    users: BTreeMap<String, User>,
    /// Every role but the built-in `root`, which is never stored.
    roles: BTreeMap<String, Role>,
    token_key: TokenKey,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthAdminError {
    #[error("invalid {what} name {name:?}: use 1 to {MAX_NAME_LEN} letters, digits, '-', '_', '.' or '@'")]
    InvalidName { what: &'static str, name: String },
    #[error("user {0:?} already exists")]
    UserExists(String),
    #[error("no user is named {0:?}")]
    UnknownUser(String),
    #[error("role {0:?} already exists")]
    RoleExists(String),
    #[error("no role is named {0:?}")]
    UnknownRole(String),
    #[error("user {user:?} does not hold role {role:?}")]
    RoleNotGranted { user: String, role: String },
    #[error("role {role:?} has no grant on {range}")]
    GrantNotFound { role: String, range: KeyRange },
    #[error("the root role is built in: it may do everything and cannot be changed or deleted")]
    RootRoleBuiltIn,
    #[error("auth enable needs a user named root holding the root role (user add root; user grant-role root root)")]
    RootMissing,
    #[error("while auth is enabled the root user cannot be deleted or lose the root role (auth disable first)")]
    WouldLockOutRoot,
    #[error("the auth state is damaged: {0}")]
    Corrupt(String),
}

/// `enabled` and `revision`, for `fekv ctl auth status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AuthStatus {
    pub enabled: bool,
    pub revision: u64,
}

impl AuthState {
    /// A new cluster's state: no users, no roles, disabled, revision 1 (0 means "none yet").
    pub fn new(token_key: TokenKey) -> AuthState {
        AuthState { enabled: false, revision: 1, users: BTreeMap::new(), roles: BTreeMap::new(), token_key }
    }

    pub fn status(&self) -> AuthStatus {
        AuthStatus { enabled: self.enabled, revision: self.revision }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub fn token_key(&self) -> &TokenKey {
        &self.token_key
    }

    pub fn users(&self) -> &BTreeMap<String, User> {
        &self.users
    }

    /// Every role but `root`, which holds no grants: it may do everything.
    pub fn roles(&self) -> &BTreeMap<String, Role> {
        &self.roles
    }

    pub fn user(&self, name: &str) -> Result<&User, AuthAdminError> {
        self.users.get(name).ok_or_else(|| AuthAdminError::UnknownUser(name.to_string()))
    }

    pub fn role(&self, name: &str) -> Result<&Role, AuthAdminError> {
        self.roles.get(name).ok_or_else(|| AuthAdminError::UnknownRole(name.to_string()))
    }

    /// Turns auth on: from now on every request needs credentials. Refused without a `root` user that
    /// holds the `root` role, which would leave nobody able to turn it off again.
    pub fn enable(&mut self) -> Result<(), AuthAdminError> {
        let root_is_root = self.users.get(ROOT).is_some_and(|user| user.roles.contains(ROOT));
        if !root_is_root {
            return Err(AuthAdminError::RootMissing);
        }
        if !self.enabled {
            self.enabled = true;
            self.bump();
        }
        Ok(())
    }

    pub fn disable(&mut self) {
        if self.enabled {
            self.enabled = false;
            self.bump();
        }
    }

    pub fn user_add(&mut self, name: &str, password_hash: PasswordHash) -> Result<(), AuthAdminError> {
        check_name("user", name)?;
        if self.users.contains_key(name) {
            return Err(AuthAdminError::UserExists(name.to_string()));
        }
        let revision = self.bump();
        self.users
            .insert(name.to_string(), User { password_hash, roles: BTreeSet::new(), credential_revision: revision });
        Ok(())
    }

    pub fn user_delete(&mut self, name: &str) -> Result<(), AuthAdminError> {
        self.user(name)?;
        if self.enabled && name == ROOT {
            return Err(AuthAdminError::WouldLockOutRoot);
        }
        self.users.remove(name);
        self.bump();
        Ok(())
    }

    /// A new password; the user's older tokens stop working.
    pub fn user_change_password(&mut self, name: &str, password_hash: PasswordHash) -> Result<(), AuthAdminError> {
        self.user(name)?;
        let revision = self.bump();
        if let Some(user) = self.users.get_mut(name) {
            user.password_hash = password_hash;
            user.credential_revision = revision;
        }
        Ok(())
    }

    /// Gives `user` the role (`root` included). Granting a role the user holds changes nothing.
    pub fn user_grant_role(&mut self, user: &str, role: &str) -> Result<(), AuthAdminError> {
        self.user(user)?;
        if role != ROOT {
            self.role(role)?;
        }
        let granted = self.users.get_mut(user).is_some_and(|held| held.roles.insert(role.to_string()));
        if granted {
            self.bump();
        }
        Ok(())
    }

    pub fn user_revoke_role(&mut self, user: &str, role: &str) -> Result<(), AuthAdminError> {
        if !self.user(user)?.roles.contains(role) {
            return Err(AuthAdminError::RoleNotGranted { user: user.to_string(), role: role.to_string() });
        }
        if self.enabled && user == ROOT && role == ROOT {
            return Err(AuthAdminError::WouldLockOutRoot);
        }
        if let Some(held) = self.users.get_mut(user) {
            held.roles.remove(role);
        }
        self.bump();
        Ok(())
    }

    pub fn role_add(&mut self, name: &str) -> Result<(), AuthAdminError> {
        check_name("role", name)?;
        if name == ROOT || self.roles.contains_key(name) {
            return Err(AuthAdminError::RoleExists(name.to_string()));
        }
        self.roles.insert(name.to_string(), Role::default());
        self.bump();
        Ok(())
    }

    /// Deletes the role and takes it from every user who held it.
    pub fn role_delete(&mut self, name: &str) -> Result<(), AuthAdminError> {
        if name == ROOT {
            return Err(AuthAdminError::RootRoleBuiltIn);
        }
        self.role(name)?;
        self.roles.remove(name);
        for user in self.users.values_mut() {
            user.roles.remove(name);
        }
        self.bump();
        Ok(())
    }

    /// Grants `access` on `range` (e.g. [`KeyRange::prefix`]); a grant on the same range is replaced,
    /// so `--readwrite` after `--read` upgrades it.
    pub fn role_grant(&mut self, role: &str, range: KeyRange, access: Access) -> Result<(), AuthAdminError> {
        let grants = &mut self.role_mut(role)?.grants;
        if grants.insert(range, access) != Some(access) {
            self.bump();
        }
        Ok(())
    }

    /// Takes back the grant on exactly `range`.
    pub fn role_revoke(&mut self, role: &str, range: &KeyRange) -> Result<(), AuthAdminError> {
        if self.role_mut(role)?.grants.remove(range).is_none() {
            return Err(AuthAdminError::GrantNotFound { role: role.to_string(), range: range.clone() });
        }
        self.bump();
        Ok(())
    }

    /// A new signing key: every token issued before stops working.
    pub fn rotate_token_key(&mut self, token_key: TokenKey) {
        self.token_key = token_key;
        self.bump();
    }

    fn role_mut(&mut self, name: &str) -> Result<&mut Role, AuthAdminError> {
        if name == ROOT {
            return Err(AuthAdminError::RootRoleBuiltIn);
        }
        self.roles.get_mut(name).ok_or_else(|| AuthAdminError::UnknownRole(name.to_string()))
    }

    /// Records a change; returns the new revision.
    fn bump(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    /// The wire and disk form (sorted, so equal states encode to equal bytes).
    pub fn to_proto(&self) -> proto::AuthState {
        proto::AuthState {
            enabled: self.enabled,
            revision: self.revision,
            users: self
                .users
                .iter()
                .map(|(name, user)| proto::AuthUser {
                    name: name.clone(),
                    password_hash: user.password_hash.as_str().to_string(),
                    roles: user.roles.iter().cloned().collect(),
                    credential_revision: user.credential_revision,
                })
                .collect(),
            roles: self
                .roles
                .iter()
                .map(|(name, role)| proto::AuthRole {
                    name: name.clone(),
                    grants: role
                        .grants
                        .iter()
                        .map(|(range, access)| proto::AuthGrant {
                            start: range.start.clone(),
                            end: range.end_bytes().to_vec(),
                            access: match access {
                                Access::Read => proto::AuthAccess::Read,
                                Access::ReadWrite => proto::AuthAccess::ReadWrite,
                            } as i32,
                        })
                        .collect(),
                })
                .collect(),
            token_key: self.token_key.as_bytes().to_vec(),
        }
    }

    /// A state read from disk or the wire, checked whole: a damaged state is refused, never half used.
    pub fn from_proto(wire: &proto::AuthState) -> Result<AuthState, AuthAdminError> {
        let corrupt = |what: String| AuthAdminError::Corrupt(what);
        let token_key = TokenKey::from_bytes(&wire.token_key)
            .ok_or_else(|| corrupt(format!("the token key has {} bytes, not 32", wire.token_key.len())))?;
        let mut roles = BTreeMap::new();
        for role in &wire.roles {
            check_name("role", &role.name).map_err(|err| corrupt(err.to_string()))?;
            let mut grants = BTreeMap::new();
            for grant in &role.grants {
                let range = KeyRange::from_wire(&grant.start, &grant.end).map_err(|err| corrupt(err.to_string()))?;
                let access = match proto::AuthAccess::try_from(grant.access) {
                    Ok(proto::AuthAccess::Read) => Access::Read,
                    Ok(proto::AuthAccess::ReadWrite) => Access::ReadWrite,
                    _ => return Err(corrupt(format!("role {:?} has a grant of unknown access", role.name))),
                };
                grants.insert(range, access);
            }
            if role.name == ROOT || roles.insert(role.name.clone(), Role { grants }).is_some() {
                return Err(corrupt(format!("role {:?} is stored twice", role.name)));
            }
        }
        let mut users = BTreeMap::new();
        for user in &wire.users {
            check_name("user", &user.name).map_err(|err| corrupt(err.to_string()))?;
            let password_hash = PasswordHash::parse(&user.password_hash)
                .map_err(|err| corrupt(format!("user {:?}: {err}", user.name)))?;
            if let Some(role) = user.roles.iter().find(|role| *role != ROOT && !roles.contains_key(*role)) {
                return Err(corrupt(format!("user {:?} holds the unknown role {role:?}", user.name)));
            }
            let roles = user.roles.iter().cloned().collect();
            let entry = User { password_hash, roles, credential_revision: user.credential_revision };
            if users.insert(user.name.clone(), entry).is_some() {
                return Err(corrupt(format!("user {:?} is stored twice", user.name)));
            }
        }
        Ok(AuthState { enabled: wire.enabled, revision: wire.revision, users, roles, token_key })
    }
}

/// Names are short and plain: no ':' (Basic auth splits there), no spaces or control characters.
fn check_name(what: &'static str, name: &str) -> Result<(), AuthAdminError> {
    let plain = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@');
    if name.is_empty() || name.len() > MAX_NAME_LEN || !name.chars().all(plain) {
        return Err(AuthAdminError::InvalidName { what, name: name.to_string() });
    }
    Ok(())
}

#[cfg(test)]
mod tests;
