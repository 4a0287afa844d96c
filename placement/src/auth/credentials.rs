//! What a client presents: the `Authorization` header of a REST request, or the `authorization`
//! metadata of a gRPC call to placement (same syntax): `Basic base64(user:password)` (RFC 7617, what
//! `curl -u` sends) or `Bearer <token>` (RFC 6750, a token from `POST /auth/token`).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;

/// Credentials, not yet checked against any state.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    Password { user: String, password: String },
    Token(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CredentialsError {
    #[error("the Authorization header's scheme must be Basic or Bearer")]
    UnsupportedScheme,
    #[error("Basic credentials must be base64 of user:password")]
    BadBasicEncoding,
    #[error("Basic credentials must be UTF-8 and contain a colon between user and password")]
    BadBasicFormat,
    #[error("the user name in Basic credentials is empty")]
    EmptyUser,
    #[error("the Bearer token is empty")]
    EmptyToken,
    #[error("the Authorization header is longer than {MAX_HEADER_LEN} bytes")]
    TooLong,
}

/// Longer headers are refused before decoding.
const MAX_HEADER_LEN: usize = 4096;

impl Credentials {
    /// Parses an `Authorization` value. The scheme is case-insensitive; one or more spaces follow it.
    pub fn from_authorization(value: &[u8]) -> Result<Credentials, CredentialsError> {
        if value.len() > MAX_HEADER_LEN {
            return Err(CredentialsError::TooLong);
        }
        let value = std::str::from_utf8(value).map_err(|_| CredentialsError::UnsupportedScheme)?.trim();
        let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
        let rest = rest.trim_start();
        if scheme.eq_ignore_ascii_case("basic") {
            let decoded = STANDARD.decode(rest).map_err(|_| CredentialsError::BadBasicEncoding)?;
            let decoded = String::from_utf8(decoded).map_err(|_| CredentialsError::BadBasicFormat)?;
            // The user name cannot hold a colon; the password may.
            let (user, password) = decoded.split_once(':').ok_or(CredentialsError::BadBasicFormat)?;
            if user.is_empty() {
                return Err(CredentialsError::EmptyUser);
            }
            Ok(Credentials::Password { user: user.to_string(), password: password.to_string() })
        } else if scheme.eq_ignore_ascii_case("bearer") {
            if rest.is_empty() {
                return Err(CredentialsError::EmptyToken);
            }
            Ok(Credentials::Token(rest.to_string()))
        } else {
            Err(CredentialsError::UnsupportedScheme)
        }
    }

    /// The `Authorization` value that carries these credentials (for clients: `fekv ctl`, tests).
    pub fn to_authorization(&self) -> String {
        match self {
            Credentials::Password { user, password } => {
                format!("Basic {}", STANDARD.encode(format!("{user}:{password}")))
            }
            Credentials::Token(token) => format!("Bearer {token}"),
        }
    }

    /// The user the credentials claim, when they name one (a token names its user inside, unverified).
    pub fn claimed_user(&self) -> Option<&str> {
        match self {
            Credentials::Password { user, .. } => Some(user),
            Credentials::Token(_) => None,
        }
    }
}

/// Never print a password or a token.
impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::Password { user, .. } => write!(f, "Password {{ user: {user:?}, .. }}"),
            Credentials::Token(_) => f.write_str("Token(..)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(value: &str) -> Result<Credentials, CredentialsError> {
        Credentials::from_authorization(value.as_bytes())
    }

    fn password(user: &str, password: &str) -> Credentials {
        Credentials::Password { user: user.into(), password: password.into() }
    }

    #[test]
    fn basic_credentials_are_what_curl_u_sends() {
        // curl -u alice:s3cret sends exactly this.
        assert_eq!(parse("Basic YWxpY2U6czNjcmV0"), Ok(password("alice", "s3cret")));
        assert_eq!(parse("basic   YWxpY2U6czNjcmV0 "), Ok(password("alice", "s3cret")));
        assert_eq!(parse(&password("bob", "a:b:c").to_authorization()), Ok(password("bob", "a:b:c")));
        assert_eq!(parse(&password("bob", "").to_authorization()), Ok(password("bob", "")));
    }

    #[test]
    fn bearer_tokens_are_taken_as_they_are() {
        assert_eq!(parse("Bearer fekv1.abc.def"), Ok(Credentials::Token("fekv1.abc.def".into())));
        assert_eq!(parse("BEARER t"), Ok(Credentials::Token("t".into())));
        assert_eq!(parse(&Credentials::Token("x".into()).to_authorization()), Ok(Credentials::Token("x".into())));
    }

    #[test]
    fn bad_headers_get_a_clear_error() {
        assert_eq!(parse("Digest abc"), Err(CredentialsError::UnsupportedScheme));
        assert_eq!(parse(""), Err(CredentialsError::UnsupportedScheme));
        assert_eq!(parse("Basic"), Err(CredentialsError::BadBasicFormat));
        assert_eq!(parse("Basic %%%"), Err(CredentialsError::BadBasicEncoding));
        assert_eq!(parse("Basic YWxpY2U="), Err(CredentialsError::BadBasicFormat)); // "alice", no colon
        assert_eq!(parse("Basic OnB3"), Err(CredentialsError::EmptyUser)); // ":pw"
        assert_eq!(parse("Bearer  "), Err(CredentialsError::EmptyToken));
        assert_eq!(parse(&format!("Bearer {}", "t".repeat(5000))), Err(CredentialsError::TooLong));
        assert_eq!(Credentials::from_authorization(b"Basic \xff"), Err(CredentialsError::UnsupportedScheme));
    }

    #[test]
    fn secrets_stay_out_of_debug_output() {
        assert_eq!(format!("{:?}", password("alice", "s3cret")), "Password { user: \"alice\", .. }");
        assert_eq!(format!("{:?}", Credentials::Token("t".into())), "Token(..)");
    }
}
