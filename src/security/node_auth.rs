//! A node's side of users and roles: the [`Authenticator`] its REST requests are checked against,
//! fed by the auth states placement sends (in the registration and heartbeat replies). Each newer
//! state is written to the node's `meta` database before it is installed, and loaded at start, so a
//! node restarted while placement is down still enforces the last state it had: starting "disabled"
//! would open it to anyone.
//!
//! Auth needs placement: a single node (no `--placement`) never receives a state and serves without
//! auth, as before.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use prometheus::IntCounterVec;

use crate::proto;
use crate::security::auth::{
    AuthAdminError, AuthState, Authenticator, AuthenticatorOptions, LoginHook, PasswordCost, PasswordError,
};
use crate::storage::{Engine, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum NodeAuthError {
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("the stored auth state is damaged: {0}")]
    Corrupt(#[from] AuthAdminError),
    #[error("cannot prepare the login checks: {0}")]
    Password(#[from] PasswordError),
}

/// The node's settings for checking logins.
#[derive(Debug, Clone, Copy)]
pub struct NodeAuthOptions {
    pub token_ttl: Duration,
    pub password_cost: PasswordCost,
    /// Whether the client listener is TLS; while it is not, a node with auth on warns (as etcd does)
    /// that passwords and tokens cross the network in clear text.
    pub client_tls: bool,
}

pub struct NodeAuth {
    authenticator: Authenticator,
    engine: Engine,
    client_tls: bool,
    /// The revision of the last state stored (0: none): what the node tells placement it holds.
    stored_revision: AtomicU64,
}

impl NodeAuth {
    /// The state stored in `engine`'s `meta`, or none (auth off) until placement sends one. Each
    /// login's outcome is counted in `logins` (the node's `fekv_auth_logins_total`), handed in so
    /// that security needs nothing of the node's metrics.
    pub fn open(engine: Engine, options: NodeAuthOptions, logins: IntCounterVec) -> Result<NodeAuth, NodeAuthError> {
        let stored = {
            let txn = engine.read_txn()?;
            engine.auth_state(&txn)?
        };
        let state = match &stored {
            Some(wire) => AuthState::from_proto(wire)?,
            None => none_yet(),
        };
        let hook: LoginHook = Arc::new(move |event| logins.with_label_values(&[event.as_str()]).inc());
        let client_tls = options.client_tls;
        let options = AuthenticatorOptions {
            token_ttl: options.token_ttl,
            password_cost: options.password_cost,
            ..AuthenticatorOptions::default()
        };
        let authenticator = Authenticator::new(&state, options, Some(hook))?;
        let auth = NodeAuth {
            authenticator,
            engine,
            client_tls,
            stored_revision: AtomicU64::new(stored.map_or(0, |s| s.revision)),
        };
        if state.enabled() {
            tracing::info!(revision = state.revision(), "auth is enabled (the last state placement sent)");
            auth.warn_if_plain();
        }
        Ok(auth)
    }

    pub fn authenticator(&self) -> &Authenticator {
        &self.authenticator
    }

    /// The revision to report to placement: it answers with a newer state, if it has one.
    pub fn revision(&self) -> u64 {
        self.stored_revision.load(Ordering::Relaxed)
    }

    /// A state from placement: stored, then installed, if newer than what the node has. Writes LMDB:
    /// call it off the async workers. A damaged one is refused whole and logged.
    pub fn receive(&self, wire: &proto::AuthState) -> Result<bool, NodeAuthError> {
        if wire.revision <= self.revision() {
            return Ok(false);
        }
        let state = AuthState::from_proto(wire)?;
        let mut txn = self.engine.write_txn()?;
        self.engine.put_auth_state(&mut txn, wire)?;
        self.engine.commit(txn)?;
        self.stored_revision.fetch_max(wire.revision, Ordering::Relaxed);
        let installed = self.authenticator.update(&state);
        if installed {
            tracing::info!(revision = state.revision(), enabled = state.enabled(), "auth state updated");
            if state.enabled() {
                self.warn_if_plain();
            }
        }
        Ok(installed)
    }

    fn warn_if_plain(&self) {
        if !self.client_tls {
            tracing::warn!(
                "auth is enabled but the client API is plain HTTP: passwords and tokens cross the network in \
                 clear text (turn on TLS, or keep the listener on loopback or a private network)"
            );
        }
    }

    /// The `authorization` value a node's calls to placement's listings carry while auth is on.
    pub fn store_authorization(&self, store_id: u64) -> Option<String> {
        self.authenticator.store_token(store_id, SystemTime::now()).map(|token| format!("Bearer {token}"))
    }
}

/// What a node checks against before placement sent any state: auth off, revision 0 (so the first
/// state, revision 1 or more, replaces it). Its key signs nothing: tokens exist only once enabled.
fn none_yet() -> AuthState {
    let wire = proto::AuthState { token_key: vec![0; 32], ..Default::default() };
    AuthState::from_proto(&wire).unwrap_or_else(|err| panic!("the empty auth state is valid: {err}"))
}

/// `interactive` or `minimal` (tests only), for the `--password-cost` settings.
pub fn parse_password_cost(text: &str) -> Result<PasswordCost, String> {
    match text {
        "interactive" => Ok(PasswordCost::Interactive),
        "minimal" => Ok(PasswordCost::Minimal),
        other => Err(format!("{other:?} is not a password cost: interactive, or minimal (for tests only)")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::auth::{PasswordHash, TokenKey, ROOT};

    fn options() -> NodeAuthOptions {
        NodeAuthOptions { token_ttl: Duration::from_secs(300), password_cost: PasswordCost::Minimal, client_tls: false }
    }

    fn enabled_state() -> AuthState {
        let mut state = AuthState::new(TokenKey::generate().unwrap());
        state.user_add(ROOT, PasswordHash::new("pw", PasswordCost::Minimal).unwrap()).unwrap();
        state.user_grant_role(ROOT, ROOT).unwrap();
        state.enable().unwrap();
        state
    }

    #[test]
    fn a_received_state_is_kept_across_a_restart_and_older_ones_are_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let engine_options = crate::storage::EngineOptions {
            checksum_failures: prometheus::IntCounter::new("failures", "test").unwrap(),
            map_size: 64 << 20,
            max_readers: 16,
        };
        let logins = || IntCounterVec::new(prometheus::Opts::new("logins", "test"), &["outcome"]).unwrap();
        let open = || Engine::open(dir.path(), &engine_options).unwrap();
        let state = enabled_state();
        {
            let auth = NodeAuth::open(open(), options(), logins()).unwrap();
            assert_eq!(auth.revision(), 0);
            assert!(!auth.authenticator().view().enabled());
            assert!(auth.receive(&state.to_proto()).unwrap());
            let older = AuthState::new(TokenKey::generate().unwrap()).to_proto();
            assert!(!auth.receive(&older).unwrap(), "an older state is ignored");
            assert!(auth.store_authorization(7).is_some_and(|value| value.starts_with("Bearer fekv1.")));
        }
        let auth = NodeAuth::open(open(), options(), logins()).unwrap();
        assert_eq!(auth.revision(), state.revision());
        assert!(auth.authenticator().view().enabled(), "a restarted node still enforces auth");
    }

    #[test]
    fn password_costs_parse() {
        assert_eq!(parse_password_cost("minimal"), Ok(PasswordCost::Minimal));
        assert!(parse_password_cost("cheap").is_err());
    }
}
