//! Password hashes: argon2id, stored as PHC strings (`$argon2id$v=19$m=19456,t=2,p=1$salt$hash`), so
//! each hash carries its own parameters and raising the cost later leaves old hashes verifiable.
//!
//! Hashing and verifying are deliberately slow (tens of milliseconds, see [`PasswordCost::Interactive`]):
//! call them off the async threads (`tokio::task::spawn_blocking`) and outside any lock, e.g. hash in
//! the placement RPC handler before applying `user add` to the state.

use std::fmt;

use argon2::password_hash::{PasswordHash as PhcString, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use rand::RngCore as _;

/// Largest memory cost a stored hash may ask for (KiB): a damaged or hostile state must not make
/// every node allocate gigabytes to check one password.
const MAX_MEMORY_KIB: u32 = 256 * 1024;
const MAX_TIME_COST: u32 = 16;
const MAX_LANES: u32 = 8;

#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("a password may not be empty")]
    Empty,
    #[error("not an argon2id password hash: {0}")]
    NotArgon2id(String),
    #[error("the password hash asks for more than the allowed cost (m ≤ {MAX_MEMORY_KIB} KiB, t ≤ {MAX_TIME_COST}, p ≤ {MAX_LANES}): {0}")]
    TooCostly(String),
    #[error("hashing failed: {0}")]
    Hashing(String),
}

/// How much work one hash costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordCost {
    /// OWASP's first recommended argon2id setting (m = 19 MiB, t = 2, p = 1), which is also the argon2
    /// crate's default: 53–80 ms per hash or verify in a release build on this 2-core machine while
    /// other builds kept its load average near 8 (the `hashing_costs_tens_of_milliseconds` test, run
    /// as its doc says), so tens of milliseconds on an idle core. Slow and memory-hard enough that a
    /// stolen state yields only tens of guesses per second per core, cheap enough for logins; bearer
    /// tokens avoid paying it on every request.
    Interactive,
    /// The cheapest argon2id allows (8 KiB, one pass), for tests only.
    Minimal,
}

impl PasswordCost {
    fn params(self) -> Params {
        let (m, t, p) = match self {
            PasswordCost::Interactive => (Params::DEFAULT_M_COST, Params::DEFAULT_T_COST, Params::DEFAULT_P_COST),
            PasswordCost::Minimal => (Params::MIN_M_COST, Params::MIN_T_COST, Params::MIN_P_COST),
        };
        Params::new(m, t, p, None).unwrap_or_else(|err| panic!("fixed argon2 parameters are valid: {err}"))
    }
}

/// A checked argon2id PHC string; what [`super::AuthState`] stores for a user. Never the password.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn new(password: &str, cost: PasswordCost) -> Result<PasswordHash, PasswordError> {
        if password.is_empty() {
            return Err(PasswordError::Empty);
        }
        let mut salt = [0u8; 16];
        rand::rngs::OsRng.try_fill_bytes(&mut salt).map_err(|err| PasswordError::Hashing(err.to_string()))?;
        let salt = SaltString::encode_b64(&salt).map_err(|err| PasswordError::Hashing(err.to_string()))?;
        let phc = argon2id(cost.params())
            .hash_password(password.as_bytes(), &salt)
            .map_err(|err| PasswordError::Hashing(err.to_string()))?;
        Ok(PasswordHash(phc.to_string()))
    }

    /// A stored hash, checked to be argon2id with bounded parameters.
    pub fn parse(phc: &str) -> Result<PasswordHash, PasswordError> {
        let parsed = PhcString::new(phc).map_err(|err| PasswordError::NotArgon2id(err.to_string()))?;
        if parsed.algorithm != Algorithm::Argon2id.ident() || parsed.hash.is_none() || parsed.salt.is_none() {
            return Err(PasswordError::NotArgon2id(format!("algorithm {}", parsed.algorithm)));
        }
        let params = Params::try_from(&parsed).map_err(|err| PasswordError::NotArgon2id(err.to_string()))?;
        if params.m_cost() > MAX_MEMORY_KIB || params.t_cost() > MAX_TIME_COST || params.p_cost() > MAX_LANES {
            return Err(PasswordError::TooCostly(format!(
                "m={},t={},p={}",
                params.m_cost(),
                params.t_cost(),
                params.p_cost()
            )));
        }
        Ok(PasswordHash(phc.to_string()))
    }

    /// Whether `password` is the one hashed, compared in constant time (argon2's verify recomputes
    /// the hash with the stored parameters and compares the outputs without an early exit).
    pub fn verify(&self, password: &str) -> bool {
        let Ok(parsed) = PhcString::new(&self.0) else { return false };
        // The parameters come from the hash itself; the ones given here are only defaults.
        argon2id(Params::DEFAULT).verify_password(password.as_bytes(), &parsed).is_ok()
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// The PHC string names no secret, but it is what an offline guesser needs: keep it out of logs.
impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

fn argon2id(params: Params) -> Argon2<'static> {
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_right_password_verifies_and_a_wrong_one_does_not() {
        let hash = PasswordHash::new("correct horse", PasswordCost::Minimal).unwrap();
        assert!(hash.as_str().starts_with("$argon2id$v=19$m=8,t=1,p=1$"), "{}", hash.as_str());
        assert!(hash.verify("correct horse"));
        assert!(!hash.verify("correct horsE"));
        assert!(!hash.verify(""));
    }

    #[test]
    fn the_same_password_gets_a_new_salt_each_time() {
        let a = PasswordHash::new("pw", PasswordCost::Minimal).unwrap();
        let b = PasswordHash::new("pw", PasswordCost::Minimal).unwrap();
        assert_ne!(a, b);
        assert!(a.verify("pw") && b.verify("pw"));
    }

    #[test]
    fn a_stored_hash_round_trips_through_its_string() {
        let hash = PasswordHash::new("pw", PasswordCost::Minimal).unwrap();
        let stored = PasswordHash::parse(hash.as_str()).unwrap();
        assert!(stored.verify("pw"));
        assert_eq!(format!("{stored:?}"), "PasswordHash(..)");
    }

    #[test]
    fn hashes_that_are_not_bounded_argon2id_are_refused() {
        assert!(matches!(PasswordHash::new("", PasswordCost::Minimal), Err(PasswordError::Empty)));
        assert!(matches!(PasswordHash::parse("plain text"), Err(PasswordError::NotArgon2id(_))));
        let argon2i = "$argon2i$v=19$m=8,t=1,p=1$c2FsdHNhbHRzYWx0$ZqAWYVVC0GM+3ZsGpD/7SaEBXEyWDsnmI1LCy1dpx9g";
        assert!(matches!(PasswordHash::parse(argon2i), Err(PasswordError::NotArgon2id(_))));
        let huge = "$argon2id$v=19$m=4194304,t=1,p=1$c2FsdHNhbHRzYWx0$ZqAWYVVC0GM+3ZsGpD/7SaEBXEyWDsnmI1LCy1dpx9g";
        assert!(matches!(PasswordHash::parse(huge), Err(PasswordError::TooCostly(_))));
    }

    /// Run with `cargo test --release -p fekv-placement hashing_costs -- --ignored --nocapture` to see
    /// the interactive cost on this machine; ignored because a debug build takes about a second.
    #[test]
    #[ignore]
    fn hashing_costs_tens_of_milliseconds() {
        let started = std::time::Instant::now();
        let hash = PasswordHash::new("pw", PasswordCost::Interactive).unwrap();
        let hashed = started.elapsed();
        let started = std::time::Instant::now();
        assert!(hash.verify("pw"));
        println!("argon2id m=19MiB t=2 p=1: hash {hashed:?}, verify {:?}", started.elapsed());
    }
}
