//! [`Authenticator`]: a node's (or placement's) current [`AuthView`] and its failed-login limiter. It
//! turns a request's credentials into a [`Principal`] and issues the tokens of `POST /auth/token`.
//!
//! A password check costs an argon2 hash (tens of milliseconds): call [`Authenticator::authenticate`]
//! and [`Authenticator::issue_token`] from `spawn_blocking` when the credentials are a password.
//! Token checks are an HMAC and cheap, which is why clients under load should use tokens.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use parking_lot::RwLock;

use crate::auth::credentials::Credentials;
use crate::auth::limiter::{LimiterPolicy, LoginHook, LoginLimiter, Throttled};
use crate::auth::password::{PasswordCost, PasswordError, PasswordHash};
use crate::auth::state::AuthState;
use crate::auth::token::TokenError;
use crate::auth::view::{AuthView, Principal};

/// What a store token's user name starts with.
const STORE_TOKEN_PREFIX: &str = "store:";
/// A node makes a fresh store token for every round of calls; this only bounds a leaked one.
const STORE_TOKEN_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, Clone, Copy)]
pub struct AuthenticatorOptions {
    /// How long an issued token is valid. etcd's tokens last 5 minutes by default; so do fekv's.
    pub token_ttl: Duration,
    pub limiter: LimiterPolicy,
    /// The cost of the stand-in hash checked for unknown user names, so that a wrong name takes as
    /// long as a wrong password and timing does not tell which names exist. Match the cluster's.
    pub password_cost: PasswordCost,
}

impl Default for AuthenticatorOptions {
    fn default() -> Self {
        AuthenticatorOptions {
            token_ttl: Duration::from_secs(300),
            limiter: LimiterPolicy::default(),
            password_cost: PasswordCost::Interactive,
        }
    }
}

/// Why a request is not authenticated. Suggested HTTP mapping (done once, in `src/api/error.rs`):
/// `Throttled` → 429 + `Retry-After`; `StateBehind` → 503 + `Retry-After: 1`; `NotEnabled` → 409;
/// every other → 401 + `WWW-Authenticate: Basic realm="fekv"` (gRPC: `Unauthenticated`,
/// `ResourceExhausted`, `Unavailable`, `FailedPrecondition`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthenticationError {
    #[error("credentials required: Basic user:password, or a Bearer token from POST /auth/token")]
    Missing,
    /// The same answer for an unknown user and a wrong password.
    #[error("wrong user name or password")]
    WrongPassword,
    #[error(transparent)]
    Throttled(#[from] Throttled),
    #[error("invalid token: {0}")]
    Token(#[from] TokenError),
    #[error("the token was revoked (its user was deleted or changed password): get a new one")]
    TokenRevoked,
    #[error("this node has not yet seen the auth change the token was issued after: retry shortly")]
    StateBehind,
    #[error("a token is issued for a user name and password, not for another token")]
    PasswordRequired,
    #[error("auth is not enabled: requests need no token")]
    NotEnabled,
}

/// A token and what it says, for the `POST /auth/token` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IssuedToken {
    pub token: String,
    pub user: String,
    pub expires_at: SystemTime,
}

/// The two clocks a check reads: monotonic for the limiter, wall for token expiry (tokens are
/// checked on other nodes, whose monotonic clocks share nothing with this one's).
#[derive(Debug, Clone, Copy)]
pub struct Now {
    pub instant: Instant,
    pub wall: SystemTime,
}

impl Now {
    pub fn current() -> Now {
        Now { instant: Instant::now(), wall: SystemTime::now() }
    }
}

pub struct Authenticator {
    view: RwLock<Arc<AuthView>>,
    limiter: LoginLimiter,
    token_ttl: Duration,
    password_cost: PasswordCost,
    /// Checked in place of an unknown user's hash; made on the first such login, not at start (a
    /// node would pay a whole hash, about a second in a debug build, every time it opens).
    stand_in: std::sync::OnceLock<Option<PasswordHash>>,
}

impl Authenticator {
    /// Starts from `state`; `hook` hears every failed and throttled login (for a metric).
    pub fn new(
        state: &AuthState,
        options: AuthenticatorOptions,
        hook: Option<LoginHook>,
    ) -> Result<Authenticator, PasswordError> {
        Ok(Authenticator {
            view: RwLock::new(Arc::new(AuthView::new(state))),
            limiter: LoginLimiter::new(options.limiter, hook),
            token_ttl: options.token_ttl,
            password_cost: options.password_cost,
            stand_in: std::sync::OnceLock::new(),
        })
    }

    /// The view requests are checked against now.
    pub fn view(&self) -> Arc<AuthView> {
        self.view.read().clone()
    }

    /// Installs `state` if it is newer than the current view; says whether it was. States arrive
    /// from placement in any order (a heartbeat reply, a push), so an older one is ignored.
    pub fn update(&self, state: &AuthState) -> bool {
        let mut view = self.view.write();
        if state.revision() <= view.revision() {
            return false;
        }
        *view = Arc::new(AuthView::new(state));
        true
    }

    /// Who a request from `client_ip` runs as. While auth is disabled nothing is checked (even
    /// credentials that are present): [`Principal::Unchecked`].
    pub fn authenticate(
        &self,
        credentials: Option<&Credentials>,
        client_ip: IpAddr,
        now: Now,
    ) -> Result<Principal, AuthenticationError> {
        let view = self.view();
        if !view.enabled() {
            return Ok(Principal::Unchecked);
        }
        match credentials {
            None => Err(AuthenticationError::Missing),
            Some(Credentials::Password { user, password }) => {
                self.check_password(&view, user, password, client_ip, now.instant)?;
                Ok(Principal::User(user.clone()))
            }
            Some(Credentials::Token(token)) => self.check_token(&view, token, now.wall),
        }
    }

    /// A token for a user name and password (`POST /auth/token`), valid for the configured TTL.
    pub fn issue_token(
        &self,
        credentials: &Credentials,
        client_ip: IpAddr,
        now: Now,
    ) -> Result<IssuedToken, AuthenticationError> {
        let view = self.view();
        if !view.enabled() {
            return Err(AuthenticationError::NotEnabled);
        }
        let Credentials::Password { user, password } = credentials else {
            return Err(AuthenticationError::PasswordRequired);
        };
        let credential_revision = self.check_password(&view, user, password, client_ip, now.instant)?;
        let expires_at = now.wall + self.token_ttl;
        let token = view.token_key().issue(user, credential_revision, expires_at);
        Ok(IssuedToken { token, user: user.clone(), expires_at })
    }

    /// Checks a password under the limiter; returns the user's credential revision.
    fn check_password(
        &self,
        view: &AuthView,
        user: &str,
        password: &str,
        client_ip: IpAddr,
        now: Instant,
    ) -> Result<u64, AuthenticationError> {
        let known = view.user(user);
        // Only existing names get a bucket of their own (see the limiter's bound on memory).
        let bucket = known.map(|_| user);
        self.limiter.check(bucket, client_ip, now)?;
        let verified = match known {
            Some(known) => known.password_hash.verify(password).then_some(known.credential_revision),
            None => {
                let stand_in = self.stand_in.get_or_init(|| {
                    PasswordHash::new("not a password anyone has", self.password_cost)
                        .inspect_err(|err| tracing::error!(error = %err, "cannot make the stand-in password hash"))
                        .ok()
                });
                if let Some(stand_in) = stand_in {
                    stand_in.verify(password);
                }
                None
            }
        };
        if verified.is_some() {
            self.limiter.record_success();
        }
        verified.ok_or_else(|| {
            self.limiter.record_failure(bucket, client_ip, now);
            tracing::debug!(user, %client_ip, "failed login");
            AuthenticationError::WrongPassword
        })
    }

    /// A short-lived token saying "store `store_id`", for a node's calls to placement's read RPCs
    /// while auth is enabled (`None` while it is not). Only a holder of the cluster's token key, that
    /// is a member that received the auth state, can make one; its name holds a ':', which no user
    /// name may, so it can never pass for a user.
    pub fn store_token(&self, store_id: u64, now: SystemTime) -> Option<String> {
        let view = self.view();
        view.enabled()
            .then(|| view.token_key().issue(&format!("{STORE_TOKEN_PREFIX}{store_id}"), 0, now + STORE_TOKEN_TTL))
    }

    fn check_token(&self, view: &AuthView, token: &str, now: SystemTime) -> Result<Principal, AuthenticationError> {
        let claims = view.token_key().verify(token, now)?;
        if let Some(store_id) = claims.user.strip_prefix(STORE_TOKEN_PREFIX) {
            return store_id.parse().map(Principal::Store).map_err(|_| TokenError::Malformed.into());
        }
        if claims.credential_revision > view.revision() {
            return Err(AuthenticationError::StateBehind);
        }
        match view.user(&claims.user) {
            Some(user) if user.credential_revision == claims.credential_revision => Ok(Principal::User(claims.user)),
            _ => Err(AuthenticationError::TokenRevoked),
        }
    }
}
