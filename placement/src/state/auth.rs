//! Users, roles and the auth switch in placement's state (`fekv ctl user|role|auth`), and what the
//! stores are handed of it. The state is one value, replaced whole by each change and written as
//! its own record before the call returns; a change that fails leaves it untouched.

use super::*;
use crate::auth::{AuthAdminError, AuthState, TokenKey};

/// The state read from disk, or a new one (with a fresh token key) when there is none: a new
/// cluster, or one made before auth existed. The flag says it is new and must be written.
pub(super) fn from_stored(stored: Option<&crate::proto::AuthState>) -> Result<(AuthState, bool), PlacementError> {
    match stored {
        Some(wire) => AuthState::from_proto(wire)
            .map(|state| (state, false))
            .map_err(|err| PlacementError::Corrupt(format!("record \"auth\": {err}"))),
        None => {
            let key = TokenKey::generate().map_err(|err| PlacementError::KeyGeneration(err.to_string()))?;
            Ok((AuthState::new(key), true))
        }
    }
}

impl Placement {
    /// The current auth state (users, roles, grants, the token key).
    pub fn auth_state(&self) -> AuthState {
        self.inner.lock().auth.clone()
    }

    /// The state's wire form if it is newer than `revision` (what a store says it holds): what the
    /// registration and heartbeat replies carry.
    pub fn auth_newer_than(&self, revision: u64) -> Option<crate::proto::AuthState> {
        let inner = self.inner.lock();
        (inner.auth.revision() > revision).then(|| inner.auth.to_proto())
    }

    /// Applies one `ctl` operation to a copy of the state and, if it changed anything, installs and
    /// persists it; returns the state as it is after the call. Slow work (hashing a password) is the
    /// caller's, before: this holds placement's lock.
    pub fn change_auth(
        &self,
        operation: impl FnOnce(&mut AuthState) -> Result<(), AuthAdminError>,
    ) -> Result<AuthState, PlacementError> {
        self.change(|inner| {
            let mut next = inner.auth.clone();
            operation(&mut next)?;
            if next.revision() != inner.auth.revision() {
                inner.auth = next;
                inner.dirty.auth = true;
            }
            Ok(inner.auth.clone())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::*;
    use super::*;
    use crate::auth::{PasswordCost, PasswordHash, ROOT};

    fn hash(password: &str) -> PasswordHash {
        PasswordHash::new(password, PasswordCost::Minimal).unwrap()
    }

    #[test]
    fn the_auth_state_is_made_at_bootstrap_and_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let (key, revision) = {
            let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
            register(&p, 0, 20160);
            assert_eq!(p.auth_state().revision(), 1);
            p.change_auth(|auth| auth.user_add(ROOT, hash("pw"))).unwrap();
            p.change_auth(|auth| auth.user_grant_role(ROOT, ROOT)).unwrap();
            let state = p.change_auth(|auth| auth.enable()).unwrap();
            assert!(state.enabled());
            (state.token_key().clone(), state.revision())
        };
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let state = p.auth_state();
        assert_eq!((state.token_key(), state.revision(), state.enabled()), (&key, revision, true));
        assert!(state.user(ROOT).unwrap().password_hash.verify("pw"));
        assert_eq!(stored(&p).auth.map(|a| a.revision), Some(revision));
    }

    #[test]
    fn a_failed_change_leaves_the_state_alone_and_stores_get_only_newer_states() {
        let dir = tempfile::tempdir().unwrap();
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let err = p.change_auth(|auth| auth.enable()).unwrap_err();
        assert!(matches!(err, PlacementError::Auth(AuthAdminError::RootMissing)), "{err}");
        assert_eq!(p.auth_state().revision(), 1);
        assert_eq!(p.auth_newer_than(0).map(|a| a.revision), Some(1));
        assert!(p.auth_newer_than(1).is_none());
        p.change_auth(|auth| auth.role_add("reader")).unwrap();
        assert_eq!(p.auth_newer_than(1).map(|a| a.revision), Some(2));
    }
}
