//! Users, roles and tokens on the client API and on placement's admin RPCs (issue 12), in etcd's
//! model. It lives in the placement crate because placement owns and replicates the state (and
//! checks admin rights on its own RPCs) while every node checks requests against it; both use the
//! same types, and the node crate re-exports this module as `fekv::security::auth`.
//!
//! - [`state`]: [`AuthState`], the replicated value (users, roles, grants, enabled, revision, token
//!   key) and the operations `fekv ctl user|role|auth` drive; [`AuthState::to_proto`] is its wire and
//!   disk form (`proto/auth.proto`).
//! - [`view`]: [`AuthView`], an immutable snapshot built from a state for cheap checks:
//!   [`AuthView::can_read`], [`AuthView::can_write`], [`AuthView::can_admin`] and, for scans,
//!   [`AuthView::readable_ranges`].
//! - [`authenticator`]: [`Authenticator`], the current view plus the failed-login limiter: credentials
//!   in, [`Principal`] out; issues tokens.
//! - [`credentials`]: parsing `Authorization: Basic …` / `Bearer …`.
//! - [`password`]: argon2id hashes. [`token`]: HMAC-SHA256-signed tokens. [`limiter`]: failed-login
//!   rate limiting. [`keyrange`]: key ranges and merged range sets.
//!
//! How the pieces are meant to be wired (the plan is in `docs/security.md`):
//! - placement keeps an `AuthState` in `PlacementState` (created with [`TokenKey::generate`] at
//!   bootstrap), runs each `ctl` operation under its lock (hashing the password with
//!   [`PasswordHash::new`] *before* taking it), persists, and hands the state's proto to the nodes in
//!   heartbeat replies when its revision is newer than the one the node reports;
//! - a node holds one [`Authenticator`], calls [`Authenticator::update`] with each state it receives,
//!   and per request: `Credentials::from_authorization(header)` → `authenticate` (in
//!   `spawn_blocking` for passwords) → `view.can_read/can_write(&principal, key)` → 401/403;
//! - placement's changing RPCs call `authenticate` on the `authorization` metadata and require
//!   `view.can_admin(&principal)`.

pub mod authenticator;
pub mod credentials;
pub mod keyrange;
pub mod limiter;
pub mod password;
pub mod state;
pub mod token;
pub mod view;

pub use authenticator::{AuthenticationError, Authenticator, AuthenticatorOptions, IssuedToken, Now};
pub use credentials::{Credentials, CredentialsError};
pub use keyrange::{KeyRange, RangeSet};
pub use limiter::{LimiterPolicy, LoginEvent, LoginHook, LoginLimiter, Throttled};
pub use password::{PasswordCost, PasswordError, PasswordHash};
pub use state::{Access, AuthAdminError, AuthState, AuthStatus, ROOT};
pub use token::{TokenError, TokenKey};
pub use view::{AuthView, Principal};

#[cfg(test)]
mod tests;
