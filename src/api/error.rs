//! Every way a REST request can fail, and the one function that turns each into an HTTP response.
//!
//! Bodies are short JSON objects: `{"error": "<code>", "message": "<what was wrong>", ...}` plus the
//! limit or hint that applies, so both people and scripts can act on them.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::header::{HeaderMap, HeaderValue, ALLOW, CONNECTION, CONTENT_TYPE, ETAG, RETRY_AFTER, WWW_AUTHENTICATE};
use hyper::{Response, StatusCode};

use crate::raftstore;
use crate::security::auth::{AuthenticationError, CredentialsError, TokenError};
use crate::storage::StorageError;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("the key is empty; keys are 1 to {max} bytes: /fekv/{{key}}")]
    EmptyKey { max: usize },
    #[error("the key is {len} bytes; the limit is {max} bytes")]
    KeyTooLong { len: usize, max: usize },
    #[error("the key is not valid percent-encoding: '%' at byte {at} is not followed by two hex digits")]
    BadPercentEncoding { at: usize },
    #[error("the value is {} the limit of {limit} bytes", size.map_or("over".to_string(), |s| format!("{s} bytes, over")))]
    ValueTooLarge { size: Option<u64>, limit: u64 },
    #[error("invalid {name} header: {reason}")]
    BadHeader { name: &'static str, reason: String },
    #[error("invalid query parameter {name}: {reason}")]
    BadQuery { name: &'static str, reason: String },
    #[error("cannot read the request body: {0}")]
    BodyRead(String),
    #[error("the request body did not arrive within {waited:?} of its headers")]
    BodyTimeout { waited: Duration },
    #[error("the request's headers did not arrive within {waited:?} of its first byte")]
    HeaderTimeout { waited: Duration },
    #[error(
        "the request line or a header is not valid HTTP/1.1; percent-encode spaces and bytes outside ASCII in the URL"
    )]
    MalformedRequest,
    #[error("the URL is longer than the limit of {limit} bytes")]
    UriTooLong { limit: usize },
    #[error("the request's headers are larger than the limit of {limit} bytes (or more than 100 headers)")]
    HeadersTooLarge { limit: usize },
    #[error("this node has its limit of {limit} client connections open and none of them is idle; retry shortly")]
    TooManyConnections { limit: usize },
    #[error("method {method} is not allowed here; allowed: {allow}")]
    MethodNotAllowed { method: String, allow: &'static str },
    #[error("no such resource: {path}")]
    NoRoute { path: String },
    #[error("key not found")]
    KeyNotFound,
    #[error("no region on this node holds the key; retry shortly")]
    NoRegion,
    #[error("this node does not lead the key's region; its leader is store {leader_store_id} at {location}")]
    Redirect { location: String, leader_store_id: u64, leader_url: String },
    #[error(
        "not redirecting again after {hops} redirects: the cluster's view of the leader is changing; retry shortly"
    )]
    RedirectLoop { hops: u32 },
    #[error(transparent)]
    Raft(#[from] raftstore::Error),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error(transparent)]
    Scrub(#[from] crate::storage::scrub::background::ScrubError),
    #[error("{0}")]
    Unauthenticated(#[from] AuthenticationError),
    #[error("invalid Authorization header: {0}")]
    BadCredentials(#[from] CredentialsError),
    #[error("{who} may not {action} {what}")]
    Forbidden { who: String, action: &'static str, what: String },
    /// A fault of this node, not of the request (a task it ran died, a check it ran failed).
    #[error("{0}")]
    Internal(String),
}

impl ApiError {
    /// The status, a stable machine-readable code, and any headers the client needs to act.
    fn classify(&self) -> (StatusCode, &'static str) {
        use raftstore::Error as R;
        match self {
            ApiError::EmptyKey { .. } => (StatusCode::BAD_REQUEST, "empty_key"),
            ApiError::KeyTooLong { .. } => (StatusCode::BAD_REQUEST, "key_too_long"),
            ApiError::BadPercentEncoding { .. } => (StatusCode::BAD_REQUEST, "bad_key_encoding"),
            ApiError::BadHeader { .. } => (StatusCode::BAD_REQUEST, "bad_header"),
            ApiError::BadQuery { .. } => (StatusCode::BAD_REQUEST, "bad_query"),
            ApiError::BodyRead(_) => (StatusCode::BAD_REQUEST, "bad_body"),
            ApiError::BodyTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "body_timeout"),
            ApiError::HeaderTimeout { .. } => (StatusCode::REQUEST_TIMEOUT, "header_timeout"),
            ApiError::MalformedRequest => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::UriTooLong { .. } => (StatusCode::URI_TOO_LONG, "uri_too_long"),
            ApiError::HeadersTooLarge { .. } => (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large"),
            ApiError::TooManyConnections { .. } => (StatusCode::SERVICE_UNAVAILABLE, "too_many_connections"),
            ApiError::ValueTooLarge { .. } => (StatusCode::PAYLOAD_TOO_LARGE, "value_too_large"),
            ApiError::MethodNotAllowed { .. } => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ApiError::NoRoute { .. } => (StatusCode::NOT_FOUND, "no_route"),
            ApiError::KeyNotFound => (StatusCode::NOT_FOUND, "key_not_found"),
            ApiError::NoRegion => (StatusCode::SERVICE_UNAVAILABLE, "no_region"),
            ApiError::Redirect { .. } => (StatusCode::TEMPORARY_REDIRECT, "not_leader"),
            ApiError::RedirectLoop { .. } => (StatusCode::SERVICE_UNAVAILABLE, "redirect_loop"),
            ApiError::Raft(err) => match err {
                R::PreconditionFailed { .. } => (StatusCode::PRECONDITION_FAILED, "precondition_failed"),
                R::StorageFull { .. } | R::DiskFull { .. } => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
                R::Timeout { proposed: true, .. } => (StatusCode::GATEWAY_TIMEOUT, "proposal_timeout"),
                R::OutcomeUnknown { .. } => (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown"),
                R::Timeout { proposed: false, .. } => (StatusCode::SERVICE_UNAVAILABLE, "timeout"),
                R::NotLeader { .. } => (StatusCode::SERVICE_UNAVAILABLE, "not_leader"),
                R::RegionNotFound { .. } | R::KeyNotInRegion { .. } | R::EpochNotMatch { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "stale_route")
                }
                R::StaleCommand | R::ProposalDropped { .. } | R::TransferringLeader => {
                    (StatusCode::SERVICE_UNAVAILABLE, "retry")
                }
                R::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
                R::InvalidChange { .. } => (StatusCode::BAD_REQUEST, "invalid_change"),
                R::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
                R::Storage(inner) => storage_class(inner),
            },
            ApiError::Storage(err) => storage_class(err),
            ApiError::Scrub(err) => scrub_class(err),
            ApiError::Unauthenticated(err) => match err {
                AuthenticationError::Throttled(_) => (StatusCode::TOO_MANY_REQUESTS, "too_many_failed_logins"),
                AuthenticationError::StateBehind => (StatusCode::SERVICE_UNAVAILABLE, "auth_state_behind"),
                AuthenticationError::NotEnabled => (StatusCode::CONFLICT, "auth_not_enabled"),
                AuthenticationError::Token(TokenError::Expired(_)) => (StatusCode::UNAUTHORIZED, "token_expired"),
                _ => (StatusCode::UNAUTHORIZED, "unauthenticated"),
            },
            ApiError::BadCredentials(_) => (StatusCode::BAD_REQUEST, "bad_credentials"),
            ApiError::Forbidden { .. } => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The one place errors become HTTP.
    pub fn into_response(self) -> Response<Full<Bytes>> {
        let (status, headers, body) = self.into_parts();
        let mut response = Response::new(Full::new(body));
        *response.status_mut() = status;
        *response.headers_mut() = headers;
        response
    }

    /// The status, headers and JSON body of the error's response; also for the responses the
    /// connection layer writes itself, where hyper's own would have had no body (`api::conn_io`).
    pub fn into_parts(self) -> (StatusCode, HeaderMap, Bytes) {
        let (status, code) = self.classify();
        let mut body = serde_json::json!({ "error": code, "message": self.to_string() });
        match &self {
            ApiError::ValueTooLarge { limit, .. } => body["limit"] = (*limit).into(),
            ApiError::KeyTooLong { max, .. } | ApiError::EmptyKey { max } => body["limit"] = (*max).into(),
            ApiError::UriTooLong { limit }
            | ApiError::HeadersTooLarge { limit }
            | ApiError::TooManyConnections { limit } => body["limit"] = (*limit).into(),
            ApiError::BodyTimeout { waited } | ApiError::HeaderTimeout { waited } => {
                body["limit_ms"] = (waited.as_millis() as u64).into()
            }
            ApiError::Redirect { location, leader_store_id, .. } => {
                body["leader"] = location.clone().into();
                body["leader_store_id"] = (*leader_store_id).into();
            }
            _ => {}
        }
        let mut text = body.to_string();
        text.push('\n');
        let mut headers = HeaderMap::new();
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        if status == StatusCode::SERVICE_UNAVAILABLE {
            headers.insert(RETRY_AFTER, HeaderValue::from_static("1"));
        }
        // After these the connection cannot carry another request: a body is left unread, or the
        // request could not be parsed, or the node has no room for the connection.
        if matches!(
            self,
            ApiError::BodyTimeout { .. }
                | ApiError::HeaderTimeout { .. }
                | ApiError::MalformedRequest
                | ApiError::UriTooLong { .. }
                | ApiError::HeadersTooLarge { .. }
                | ApiError::TooManyConnections { .. }
        ) {
            headers.insert(CONNECTION, HeaderValue::from_static("close"));
        }
        match &self {
            ApiError::MethodNotAllowed { allow, .. } => {
                headers.insert(ALLOW, HeaderValue::from_static(allow));
            }
            ApiError::Redirect { location, leader_store_id, leader_url } => {
                // Addresses come from placement's address book and paths from the request line, so
                // they are valid header values; if one is not, the client gets the JSON body alone.
                if let Ok(value) = HeaderValue::from_str(location) {
                    headers.insert(hyper::header::LOCATION, value);
                }
                if let Ok(value) = HeaderValue::from_str(leader_url) {
                    headers.insert("x-fekv-leader", value);
                }
                headers.insert("x-fekv-leader-store", HeaderValue::from(*leader_store_id));
            }
            ApiError::Raft(raftstore::Error::PreconditionFailed { current_revision: Some(rev) }) => {
                headers.insert(ETAG, super::state::etag(*rev));
            }
            ApiError::Unauthenticated(AuthenticationError::Throttled(throttled)) => {
                let secs = throttled.retry_after.as_secs_f64().ceil().max(1.0) as u64;
                headers.insert(RETRY_AFTER, HeaderValue::from(secs));
            }
            _ => {}
        }
        if status == StatusCode::UNAUTHORIZED {
            headers.insert(WWW_AUTHENTICATE, HeaderValue::from_static("Basic realm=\"fekv\""));
        }
        (status, headers, Bytes::from(text))
    }
}

fn scrub_class(err: &crate::storage::scrub::background::ScrubError) -> (StatusCode, &'static str) {
    use crate::storage::scrub::background::ScrubError as S;
    match err {
        S::Busy => (StatusCode::SERVICE_UNAVAILABLE, "busy"),
        S::Stopped => (StatusCode::SERVICE_UNAVAILABLE, "stopping"),
        S::Failed(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
    }
}

fn storage_class(err: &StorageError) -> (StatusCode, &'static str) {
    match err {
        StorageError::Full { .. } | StorageError::NoSpace { .. } => (StatusCode::INSUFFICIENT_STORAGE, "storage_full"),
        StorageError::Corruption { .. } => (StatusCode::INTERNAL_SERVER_ERROR, "checksum_mismatch"),
        StorageError::Decode { .. }
        | StorageError::Inconsistent { .. }
        | StorageError::Io { .. }
        | StorageError::Lmdb(_) => (StatusCode::INTERNAL_SERVER_ERROR, "storage_error"),
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::security::auth::Throttled;

    fn parts(err: ApiError) -> (StatusCode, HeaderMap, serde_json::Value) {
        let (status, headers, body) = err.into_parts();
        (status, headers, serde_json::from_slice(&body).unwrap())
    }

    #[test]
    fn a_fault_of_the_node_is_500_not_400() {
        let (status, _, body) = parts(ApiError::Internal("status task failed".into()));
        assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
        assert_eq!(body["error"], "internal");
    }

    #[test]
    fn auth_failures_map_to_401_403_429_with_the_headers_clients_act_on() {
        let (status, headers, body) = parts(AuthenticationError::Missing.into());
        assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("unauthenticated")));
        assert_eq!(headers.get(WWW_AUTHENTICATE).unwrap(), "Basic realm=\"fekv\"");
        let expired = AuthenticationError::Token(TokenError::Expired(Duration::from_secs(3)));
        let (status, headers, body) = parts(expired.into());
        assert_eq!((status, body["error"].as_str()), (StatusCode::UNAUTHORIZED, Some("token_expired")));
        assert!(headers.contains_key(WWW_AUTHENTICATE));
        let throttled = AuthenticationError::Throttled(Throttled { retry_after: Duration::from_millis(1200) });
        let (status, headers, _) = parts(throttled.into());
        assert_eq!(status, StatusCode::TOO_MANY_REQUESTS);
        assert_eq!(headers.get(RETRY_AFTER).unwrap(), "2", "rounded up to whole seconds");
        let forbidden = ApiError::Forbidden { who: "user \"alice\"".into(), action: "write", what: "key a".into() };
        let (status, headers, body) = parts(forbidden);
        assert_eq!(
            (status, body["message"].as_str()),
            (StatusCode::FORBIDDEN, Some("user \"alice\" may not write key a"))
        );
        assert!(!headers.contains_key(WWW_AUTHENTICATE), "a 403 asks for no other credentials");
        let (status, _, _) = parts(AuthenticationError::StateBehind.into());
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    }
}
