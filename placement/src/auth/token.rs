//! Bearer tokens for `POST /auth/token`: `fekv1.<claims>.<mac>`, where `<claims>` is the base64url of a
//! [`TokenClaims`] message (user, credential revision, expiry) and `<mac>` the base64url HMAC-SHA256 of
//! `fekv1.<claims>` under the cluster's [`TokenKey`]. Any node holding the auth state verifies a token
//! without a round trip; rotating the key (or a user's password) invalidates the tokens issued before.
//! Tokens are signed, not encrypted: they name a user and an expiry, nothing secret.

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine as _;
use hmac::{Hmac, Mac as _};
use prost::Message as _;
use rand::RngCore as _;
use sha2::Sha256;

use crate::proto::TokenClaims;

const VERSION_PREFIX: &str = "fekv1.";
/// Tokens longer than this are refused before any decoding (a user name is at most 64 bytes).
const MAX_TOKEN_LEN: usize = 512;

/// The cluster-wide secret that signs tokens.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenKey([u8; 32]);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the token is malformed")]
    Malformed,
    #[error("the token's signature does not match (tampered, or signed with another key)")]
    BadSignature,
    #[error("the token expired {0:?} ago")]
    Expired(Duration),
}

impl TokenKey {
    /// A fresh random key, from the OS.
    pub fn generate() -> Result<TokenKey, rand::Error> {
        let mut key = [0u8; 32];
        rand::rngs::OsRng.try_fill_bytes(&mut key)?;
        Ok(TokenKey(key))
    }

    pub fn from_bytes(bytes: &[u8]) -> Option<TokenKey> {
        Some(TokenKey(bytes.try_into().ok()?))
    }

    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// A signed token for `user`, valid until `expires_at`.
    pub fn issue(&self, user: &str, credential_revision: u64, expires_at: SystemTime) -> String {
        let claims =
            TokenClaims { user: user.to_string(), credential_revision, expires_at_unix_ms: unix_ms(expires_at) };
        let signed = format!("{VERSION_PREFIX}{}", URL_SAFE_NO_PAD.encode(claims.encode_to_vec()));
        let mac = URL_SAFE_NO_PAD.encode(self.mac(signed.as_bytes()).finalize().into_bytes());
        format!("{signed}.{mac}")
    }

    /// The claims of a token this key signed that has not expired at `now`. The signature is checked
    /// (in constant time) before the claims are even decoded.
    pub fn verify(&self, token: &str, now: SystemTime) -> Result<TokenClaims, TokenError> {
        if token.len() > MAX_TOKEN_LEN {
            return Err(TokenError::Malformed);
        }
        let rest = token.strip_prefix(VERSION_PREFIX).ok_or(TokenError::Malformed)?;
        let (claims, mac) = rest.split_once('.').ok_or(TokenError::Malformed)?;
        if claims.is_empty() || mac.is_empty() {
            return Err(TokenError::Malformed);
        }
        let signed = &token[..VERSION_PREFIX.len() + claims.len()];
        let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| TokenError::Malformed)?;
        self.mac(signed.as_bytes()).verify_slice(&mac).map_err(|_| TokenError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD.decode(claims).map_err(|_| TokenError::Malformed)?;
        let claims = TokenClaims::decode(payload.as_slice()).map_err(|_| TokenError::Malformed)?;
        let now_ms = unix_ms(now);
        if now_ms >= claims.expires_at_unix_ms {
            return Err(TokenError::Expired(Duration::from_millis(now_ms - claims.expires_at_unix_ms)));
        }
        Ok(claims)
    }

    fn mac(&self, message: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256>>::new_from_slice(&self.0)
            .unwrap_or_else(|err| panic!("HMAC takes a key of any length: {err}"));
        mac.update(message);
        mac
    }
}

impl fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TokenKey(..)")
    }
}

/// Milliseconds since the Unix epoch; times before it count as the epoch.
fn unix_ms(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> TokenKey {
        TokenKey::generate().unwrap()
    }

    fn at(secs: u64) -> SystemTime {
        UNIX_EPOCH + Duration::from_secs(secs)
    }

    #[test]
    fn a_token_verifies_until_it_expires() {
        let key = key();
        let token = key.issue("alice", 7, at(1_000));
        let claims = key.verify(&token, at(999)).unwrap();
        assert_eq!((claims.user.as_str(), claims.credential_revision), ("alice", 7));
        assert_eq!(key.verify(&token, at(1_000)), Err(TokenError::Expired(Duration::ZERO)));
        assert_eq!(key.verify(&token, at(1_060)), Err(TokenError::Expired(Duration::from_secs(60))));
    }

    #[test]
    fn a_token_signed_with_another_key_is_refused() {
        let token = key().issue("alice", 1, at(1_000));
        assert_eq!(key().verify(&token, at(0)), Err(TokenError::BadSignature));
    }

    #[test]
    fn tampered_claims_are_refused() {
        let key = key();
        let token = key.issue("alice", 1, at(1_000));
        let (_, mac) = token.rsplit_once('.').unwrap();
        // The same signature over claims naming root, and over a later expiry.
        for forged in [key.issue("root", 1, at(1_000)), key.issue("alice", 1, at(9_999))] {
            let (signed, _) = forged.rsplit_once('.').unwrap();
            assert_eq!(key.verify(&format!("{signed}.{mac}"), at(0)), Err(TokenError::BadSignature));
        }
        // One flipped character anywhere.
        for i in VERSION_PREFIX.len()..token.len() {
            let mut bytes = token.clone().into_bytes();
            bytes[i] = if bytes[i] == b'A' { b'B' } else { b'A' };
            let tampered = String::from_utf8(bytes).unwrap();
            if tampered != token {
                assert!(key.verify(&tampered, at(0)).is_err(), "byte {i}");
            }
        }
    }

    #[test]
    fn garbage_is_malformed() {
        let key = key();
        for garbage in
            ["", "fekv1.", "fekv1.abc", "fekv1.abc.", "fekv1..abc", "fekv2.abc.def", "fekv1.!!.??", &"x".repeat(600)]
        {
            assert_eq!(key.verify(garbage, at(0)), Err(TokenError::Malformed), "{garbage:?}");
        }
    }

    #[test]
    fn the_key_is_not_printed() {
        assert_eq!(format!("{:?}", key()), "TokenKey(..)");
        assert!(TokenKey::from_bytes(&[1; 31]).is_none());
        assert_eq!(TokenKey::from_bytes(&[1; 32]).unwrap().as_bytes(), &[1; 32]);
    }
}
