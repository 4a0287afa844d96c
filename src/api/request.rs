//! Decoding what a client sends: the key in the path, the conditional-request headers, the body
//! within its size limit. Nothing here trusts its input.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::header::{HeaderMap, CONTENT_LENGTH, IF_MATCH, IF_NONE_MATCH};

use super::error::ApiError;
use crate::proto::Precondition;

/// Percent-decodes `raw` strictly: a '%' not followed by two hex digits is an error (its byte offset).
pub fn decode_bytes(raw: &str) -> Result<Vec<u8>, usize> {
    let bytes = raw.as_bytes();
    if let Some(at) = bytes.iter().enumerate().position(|(i, &b)| {
        b == b'%' && !(bytes.len() > i + 2 && bytes[i + 1].is_ascii_hexdigit() && bytes[i + 2].is_ascii_hexdigit())
    }) {
        return Err(at);
    }
    Ok(percent_encoding::percent_decode(bytes).collect())
}

/// Decodes a percent-encoded key from the path. Unlike lenient decoders, a '%' that does not start a
/// valid escape is an error: a client that sent it meant something else than what we would store.
pub fn decode_key(raw: &str, max: usize) -> Result<Vec<u8>, ApiError> {
    let key = decode_bytes(raw).map_err(|at| ApiError::BadPercentEncoding { at })?;
    if key.is_empty() {
        return Err(ApiError::EmptyKey { max });
    }
    if key.len() > max {
        return Err(ApiError::KeyTooLong { len: key.len(), max });
    }
    Ok(key)
}

/// Reads a body of at most `limit` bytes within `timeout`. A declared `Content-Length` over the limit
/// is refused before reading anything; a body without one is cut off as soon as it passes the limit.
/// A body that does not arrive in time (a client that declared 1000 bytes and sent 5) is a `408`,
/// never a connection held open forever.
pub async fn read_body(headers: &HeaderMap, body: Incoming, limit: u64, timeout: Duration) -> Result<Bytes, ApiError> {
    if let Some(length) = headers.get(CONTENT_LENGTH) {
        let length: u64 = length
            .to_str()
            .ok()
            .and_then(|s| s.trim().parse().ok())
            .ok_or_else(|| ApiError::BadHeader { name: "Content-Length", reason: "not a number".into() })?;
        if length > limit {
            return Err(ApiError::ValueTooLarge { size: Some(length), limit });
        }
    }
    let Ok(collected) = tokio::time::timeout(timeout, Limited::new(body, limit as usize).collect()).await else {
        return Err(ApiError::BodyTimeout { waited: timeout });
    };
    match collected {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(err) if err.downcast_ref::<http_body_util::LengthLimitError>().is_some() => {
            Err(ApiError::ValueTooLarge { size: None, limit })
        }
        Err(err) => Err(ApiError::BodyRead(err.to_string())),
    }
}

/// One entity tag of `If-Match` / `If-None-Match`: `*`, or the revisions listed.
enum TagList {
    Any,
    Revisions(Vec<u64>),
}

/// Parses `"12", W/"13"` or `*`. A tag that is not one of ours can never match; it is kept as
/// revision 0, which no write ever has (raft indexes start above it).
fn parse_tags(
    headers: &HeaderMap,
    name: &'static str,
    header: hyper::header::HeaderName,
) -> Result<Option<TagList>, ApiError> {
    let values: Vec<&str> = headers
        .get_all(header)
        .iter()
        .map(|v| v.to_str().map_err(|_| ApiError::BadHeader { name, reason: "not ASCII".into() }))
        .collect::<Result<_, _>>()?;
    if values.is_empty() {
        return Ok(None);
    }
    let tags: Vec<&str> = values.iter().flat_map(|v| v.split(',')).map(str::trim).filter(|t| !t.is_empty()).collect();
    if tags == ["*"] {
        return Ok(Some(TagList::Any));
    }
    let mut revisions = Vec::with_capacity(tags.len());
    for tag in tags {
        let quoted = tag.strip_prefix("W/").unwrap_or(tag);
        let inner = quoted
            .strip_prefix('"')
            .and_then(|t| t.strip_suffix('"'))
            .ok_or_else(|| ApiError::BadHeader { name, reason: format!("{tag} is not a quoted entity tag or *") })?;
        revisions.push(inner.parse().unwrap_or(0));
    }
    Ok(Some(TagList::Revisions(revisions)))
}

/// The precondition a write carries, from `If-Match` and `If-None-Match` (RFC 9110 §13.1).
pub fn write_precondition(headers: &HeaderMap) -> Result<Option<Precondition>, ApiError> {
    let if_match = parse_tags(headers, "If-Match", IF_MATCH)?;
    let if_none_match = parse_tags(headers, "If-None-Match", IF_NONE_MATCH)?;
    if if_match.is_none() && if_none_match.is_none() {
        return Ok(None);
    }
    let mut p = Precondition::default();
    match if_match {
        Some(TagList::Any) => p.if_exists = true,
        Some(TagList::Revisions(revisions)) => p.if_match = revisions,
        None => {}
    }
    match if_none_match {
        Some(TagList::Any) => p.if_absent = true,
        Some(TagList::Revisions(revisions)) => p.if_none_match = revisions,
        None => {}
    }
    Ok(Some(p))
}

/// For GET: whether `If-None-Match` matches the current revision (answer `304 Not Modified`).
pub fn not_modified(headers: &HeaderMap, revision: u64) -> Result<bool, ApiError> {
    Ok(match parse_tags(headers, "If-None-Match", IF_NONE_MATCH)? {
        Some(TagList::Any) => true,
        Some(TagList::Revisions(revisions)) => revisions.contains(&revision),
        None => false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use hyper::header::HeaderValue;

    #[test]
    fn keys_are_percent_decoded_strictly() {
        assert_eq!(decode_key("foo", 511).unwrap(), b"foo");
        assert_eq!(decode_key("a%2Fb%20c", 511).unwrap(), b"a/b c");
        assert_eq!(decode_key("%ff%00", 511).unwrap(), vec![0xff, 0]);
        assert!(matches!(decode_key("", 511), Err(ApiError::EmptyKey { .. })));
        assert!(matches!(decode_key("bad%zz", 511), Err(ApiError::BadPercentEncoding { at: 3 })));
        assert!(matches!(decode_key("bad%4", 511), Err(ApiError::BadPercentEncoding { at: 3 })));
        assert!(matches!(decode_key("%", 511), Err(ApiError::BadPercentEncoding { at: 0 })));
        assert!(matches!(decode_key(&"k".repeat(512), 511), Err(ApiError::KeyTooLong { len: 512, max: 511 })));
        // The limit applies to the decoded key.
        assert_eq!(decode_key(&"%41".repeat(511), 511).unwrap().len(), 511);
    }

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for (name, value) in pairs {
            map.append(*name, HeaderValue::from_static(value));
        }
        map
    }

    #[test]
    fn conditional_headers_become_preconditions() {
        assert_eq!(write_precondition(&headers(&[])).unwrap(), None);
        let p =
            write_precondition(&headers(&[("if-match", "\"7\", W/\"9\""), ("if-match", "\"11\"")])).unwrap().unwrap();
        assert_eq!(p.if_match, vec![7, 9, 11]);
        let p = write_precondition(&headers(&[("if-none-match", "*")])).unwrap().unwrap();
        assert!(p.if_absent);
        let p = write_precondition(&headers(&[("if-match", "*")])).unwrap().unwrap();
        assert!(p.if_exists);
        let p = write_precondition(&headers(&[("if-match", "\"someone-else's\"")])).unwrap().unwrap();
        assert_eq!(p.if_match, vec![0]);
        assert!(write_precondition(&headers(&[("if-match", "7")])).is_err());
    }

    #[test]
    fn if_none_match_on_get() {
        assert!(not_modified(&headers(&[("if-none-match", "\"7\"")]), 7).unwrap());
        assert!(!not_modified(&headers(&[("if-none-match", "\"7\"")]), 8).unwrap());
        assert!(!not_modified(&headers(&[]), 8).unwrap());
    }
}
