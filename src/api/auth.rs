//! Who a REST request runs as, and whether it may touch a key: the `Authorization` header (`Basic`,
//! what `curl -u` sends, or `Bearer` with a token from `POST /auth/token`) checked against the auth
//! state placement last sent this node. While auth is disabled nothing is checked.
//!
//! A password costs an argon2 hash (tens of milliseconds), so it is checked on the blocking pool;
//! a token is an HMAC, checked here. Failures become `401`/`403`/`429` in `api::error`.

use std::net::{IpAddr, Ipv4Addr};
use std::time::UNIX_EPOCH;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::header::{HeaderValue, AUTHORIZATION, CONTENT_TYPE};
use hyper::{Method, Request, Response};

use super::error::ApiError;
use super::state::ApiState;
use crate::security::auth::{AuthenticationError, Credentials, Now, Principal};

/// The client's address, put in each request's extensions by the server loop (the failed-login
/// limiter keeps a bucket per address).
#[derive(Debug, Clone, Copy)]
pub struct ClientIp(pub IpAddr);

fn client_ip<B>(req: &Request<B>) -> IpAddr {
    req.extensions().get::<ClientIp>().map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |ip| ip.0)
}

fn credentials<B>(req: &Request<B>) -> Result<Option<Credentials>, ApiError> {
    match req.headers().get(AUTHORIZATION) {
        None => Ok(None),
        Some(value) => Ok(Some(Credentials::from_authorization(value.as_bytes())?)),
    }
}

/// Who makes the request; `Unchecked` while auth is disabled.
pub(super) async fn principal<B>(state: &ApiState, req: &Request<B>) -> Result<Principal, ApiError> {
    if !state.auth.authenticator().view().enabled() {
        return Ok(Principal::Unchecked);
    }
    let credentials = credentials(req)?;
    let (ip, now) = (client_ip(req), Now::current());
    let principal = match credentials {
        Some(password @ Credentials::Password { .. }) => {
            let auth = state.auth.clone();
            tokio::task::spawn_blocking(move || auth.authenticator().authenticate(Some(&password), ip, now))
                .await
                .map_err(|err| ApiError::Internal(format!("the password check failed: {err}")))?
        }
        token => state.auth.authenticator().authenticate(token.as_ref(), ip, now),
    };
    Ok(principal?)
}

/// Refuses (`403`) a request outside the principal's grants: reads need read access to the key,
/// writes read-write access.
pub(super) fn allow(state: &ApiState, principal: &Principal, key: &[u8], write: bool) -> Result<(), ApiError> {
    let view = state.auth.authenticator().view();
    let allowed = if write { view.can_write(principal, key) } else { view.can_read(principal, key) };
    if allowed {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        who: describe(principal),
        action: if write { "write" } else { "read" },
        what: format!("key {}", crate::storage::keys::display(key)),
    })
}

/// Refuses (`403`) anyone but `root` (operator endpoints that change things, like `POST /scrub`).
pub(super) fn allow_admin(state: &ApiState, principal: &Principal, what: &str) -> Result<(), ApiError> {
    if state.auth.authenticator().view().can_admin(principal) {
        return Ok(());
    }
    Err(ApiError::Forbidden {
        who: describe(principal),
        action: "use",
        what: format!("{what} (it needs the root role)"),
    })
}

fn describe(principal: &Principal) -> String {
    match principal {
        Principal::User(user) => format!("user {user:?}"),
        Principal::Store(store_id) => format!("store {store_id}"),
        Principal::Unchecked => "an unauthenticated client".into(),
    }
}

/// `POST /auth/token` with Basic credentials: `{"token": …, "user": …, "expires_at": …}`.
pub(super) async fn token(state: &ApiState, req: Request<Incoming>) -> Result<Response<Full<Bytes>>, ApiError> {
    if req.method() != Method::POST {
        return Err(ApiError::MethodNotAllowed { method: req.method().to_string(), allow: "POST" });
    }
    let Some(credentials) = credentials(&req)? else {
        return Err(AuthenticationError::Missing.into());
    };
    let (ip, now, auth) = (client_ip(&req), Now::current(), state.auth.clone());
    let issued = tokio::task::spawn_blocking(move || auth.authenticator().issue_token(&credentials, ip, now))
        .await
        .map_err(|err| ApiError::Internal(format!("the password check failed: {err}")))??;
    let expires_ms = issued.expires_at.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64);
    let body = serde_json::json!({
        "token": issued.token,
        "user": issued.user,
        "expires_at": humantime::format_rfc3339_millis(issued.expires_at).to_string(),
        "expires_at_unix_ms": expires_ms,
    });
    let mut text = body.to_string();
    text.push('\n');
    let mut response = Response::new(Full::new(Bytes::from(text)));
    response.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(response)
}
