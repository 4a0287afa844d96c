//! Who may call which placement RPC once auth is enabled: the `authorization` metadata (the same
//! `Basic …` / `Bearer …` as HTTP) becomes a [`Principal`], checked against what the call needs.
//! While auth is disabled every call is let through unchecked, as before.
//!
//! - [`Need::Admin`]: everything that changes the cluster, and every user/role/auth call but
//!   `AuthStatus`: the `root` role;
//! - [`Need::Member`]: the listings (stores, regions, operators, schedulers): any authenticated user,
//!   or a store with its store token;
//! - the store calls (`RegisterStore`, `StoreHeartbeat`, `AllocId`) are not checked here: they are
//!   authorised by the store's identity, not by a user.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;

use tonic::{Request, Status};

use crate::auth::{
    AuthState, AuthView, AuthenticationError, Authenticator, AuthenticatorOptions, Credentials, PasswordCost,
    PasswordError, Principal,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Need {
    Admin,
    Member,
}

pub struct Guard {
    authenticator: Arc<Authenticator>,
}

impl Guard {
    pub fn new(state: &AuthState, password_cost: PasswordCost) -> Result<Guard, PasswordError> {
        let options = AuthenticatorOptions { password_cost, ..AuthenticatorOptions::default() };
        Ok(Guard { authenticator: Arc::new(Authenticator::new(state, options, None)?) })
    }

    /// Installs the state a change produced.
    pub fn update(&self, state: &AuthState) {
        self.authenticator.update(state);
    }

    pub fn view(&self) -> Arc<AuthView> {
        self.authenticator.view()
    }

    /// Who makes the call, if they may make it. A password costs an argon2 hash: checked on the
    /// blocking pool.
    pub async fn check<T>(&self, request: &Request<T>, need: Need) -> Result<Principal, Status> {
        let view = self.authenticator.view();
        if !view.enabled() {
            return Ok(Principal::Unchecked);
        }
        let credentials = match request.metadata().get("authorization") {
            None => None,
            Some(value) => Some(
                Credentials::from_authorization(value.as_bytes())
                    .map_err(|err| Status::unauthenticated(err.to_string()))?,
            ),
        };
        let ip = super::caller_addr(request).map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |addr| addr.ip());
        let authenticator = self.authenticator.clone();
        let now = crate::auth::Now::current();
        let principal = match credentials {
            Some(credentials @ Credentials::Password { .. }) => {
                tokio::task::spawn_blocking(move || authenticator.authenticate(Some(&credentials), ip, now))
                    .await
                    .map_err(|err| Status::internal(format!("the password check failed: {err}")))?
            }
            credentials => authenticator.authenticate(credentials.as_ref(), ip, now),
        }
        .map_err(status)?;
        let allowed = match need {
            Need::Admin => view.can_admin(&principal),
            Need::Member => matches!(principal, Principal::User(_) | Principal::Store(_) | Principal::Unchecked),
        };
        if !allowed {
            let who = principal.user().map_or_else(|| format!("{principal:?}"), |user| format!("user {user:?}"));
            return Err(Status::permission_denied(format!("{who} may not do this: it needs the root role")));
        }
        Ok(principal)
    }
}

/// An authentication failure as gRPC reports it (the HTTP mapping is the node's, `api::error`).
fn status(err: AuthenticationError) -> Status {
    match err {
        AuthenticationError::Throttled(_) => Status::resource_exhausted(err.to_string()),
        AuthenticationError::StateBehind => Status::unavailable(err.to_string()),
        AuthenticationError::NotEnabled => Status::failed_precondition(err.to_string()),
        _ => Status::unauthenticated(err.to_string()),
    }
}
