//! [`AuthView`]: what a node (or placement) checks requests against, built once from an
//! [`AuthState`] each time a new revision arrives, so a check is a hash lookup and a binary search
//! instead of a walk over roles and grants (etcd's `range_perm_cache`, built eagerly).

use std::collections::HashMap;

use crate::auth::keyrange::{KeyRange, RangeSet};
use crate::auth::password::PasswordHash;
use crate::auth::state::{Access, AuthState, ROOT};
use crate::auth::token::TokenKey;

/// Who a request runs as, once [`super::Authenticator::authenticate`] has looked at it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// Auth is disabled: nothing was checked and everything is allowed.
    Unchecked,
    /// An authenticated user.
    User(String),
    /// A cluster member, by a store token (see [`super::Authenticator::store_token`]): placement's
    /// read RPCs only, no keys and no administration.
    Store(u64),
}

impl Principal {
    pub fn user(&self) -> Option<&str> {
        match self {
            Principal::Unchecked | Principal::Store(_) => None,
            Principal::User(user) => Some(user),
        }
    }
}

/// One user's merged permissions.
#[derive(Debug, Clone)]
pub(crate) struct UserView {
    pub(crate) password_hash: PasswordHash,
    pub(crate) credential_revision: u64,
    root: bool,
    read: RangeSet,
    write: RangeSet,
}

/// An immutable snapshot of the auth state, for checks. Swap in a new one (an `Arc`) when a newer
/// revision arrives; requests in flight finish against the one they started with.
#[derive(Debug, Clone)]
pub struct AuthView {
    enabled: bool,
    revision: u64,
    token_key: TokenKey,
    users: HashMap<String, UserView>,
}

impl AuthView {
    pub fn new(state: &AuthState) -> AuthView {
        let users = state
            .users()
            .iter()
            .map(|(name, user)| {
                let grants =
                    || user.roles.iter().filter_map(|role| state.roles().get(role)).flat_map(|role| role.grants.iter());
                let read = RangeSet::from_ranges(grants().map(|(range, _)| range.clone()));
                let write = RangeSet::from_ranges(
                    grants().filter(|(_, access)| **access == Access::ReadWrite).map(|(range, _)| range.clone()),
                );
                let view = UserView {
                    password_hash: user.password_hash.clone(),
                    credential_revision: user.credential_revision,
                    root: user.roles.contains(ROOT),
                    read,
                    write,
                };
                (name.clone(), view)
            })
            .collect();
        AuthView { enabled: state.enabled(), revision: state.revision(), token_key: state.token_key().clone(), users }
    }

    pub fn enabled(&self) -> bool {
        self.enabled
    }

    pub fn revision(&self) -> u64 {
        self.revision
    }

    pub(crate) fn token_key(&self) -> &TokenKey {
        &self.token_key
    }

    pub(crate) fn user(&self, name: &str) -> Option<&UserView> {
        self.users.get(name)
    }

    pub fn can_read(&self, who: &Principal, key: &[u8]) -> bool {
        self.check(who, |user| user.read.contains(key))
    }

    pub fn can_write(&self, who: &Principal, key: &[u8]) -> bool {
        self.check(who, |user| user.write.contains(key))
    }

    /// Cluster administration (placement's changing RPCs, users and roles): the `root` role only.
    pub fn can_admin(&self, who: &Principal) -> bool {
        self.check(who, |_| false)
    }

    /// The parts of a scan of `range` that `who` may read, in key order: scan each and concatenate.
    /// A scan inside one of the user's prefixes comes back whole; one reaching outside them returns
    /// only the readable keys (never an error, as etcd's range with a partial permission would be:
    /// fekv's scans filter, so `GET /fekv?prefix=` works for a user granted a sub-prefix).
    pub fn readable_ranges(&self, who: &Principal, range: &KeyRange) -> Vec<KeyRange> {
        if self.check(who, |_| false) {
            return vec![range.clone()];
        }
        match who.user().and_then(|user| self.users.get(user)) {
            Some(user) => user.read.intersection(range),
            None => Vec::new(),
        }
    }

    /// Everything is allowed while auth is off; once it is on, to root, or where `granted` says so. A
    /// request let in unchecked while auth was off is refused if the view it meets has auth on.
    fn check(&self, who: &Principal, granted: impl Fn(&UserView) -> bool) -> bool {
        match who {
            _ if !self.enabled => true,
            Principal::Unchecked | Principal::Store(_) => false,
            Principal::User(name) => self.users.get(name).is_some_and(|user| user.root || granted(user)),
        }
    }
}
