//! Stores prove who they are. A store's first registration gets a fresh 32-byte random secret; the
//! store keeps it in its data directory and placement keeps only its SHA-256 (the secret has full
//! entropy, so a slow hash would add nothing). Every later registration and heartbeat for that store
//! id must present it, compared in constant time, so a stranger can no longer rewrite a store's
//! addresses or speak for it. A store of another cluster (another cluster id) is refused outright.
//!
//! Upgrades: a store registered before secrets existed has none on either side. Its next
//! registration is trusted once and handed a secret (trust on first use, logged at `warn`); its
//! heartbeats are accepted without one until then. A node that loses its data directory registers
//! as a new store, as before.
//!
//! A new store's first registration is idempotent: every attempt carries the same random token, and
//! placement keeps its SHA-256 in the store record (replicated like the rest of it). An attempt whose
//! token matches a store gets that store back, with a fresh secret replacing the one the node never
//! received, so a reply lost to a timeout or a leader change leaves no ghost store for placement to
//! count and place replicas on.

use rand::RngCore as _;
use sha2::{Digest as _, Sha256};

use super::*;

/// Bytes of a store secret.
pub const SECRET_LEN: usize = 32;

/// What a registration's identity check decided.
pub(super) struct Admitted {
    /// The SHA-256 to keep for the store.
    pub secret_sha256: Vec<u8>,
    /// The secret to hand back: a new one, or empty when the store already has it.
    pub new_secret: Vec<u8>,
}

impl Placement {
    /// Checks that a store RPC (a heartbeat) comes from `store_id`'s holder. A store that has no
    /// secret yet (registered before secrets existed) passes, as does an unknown one (the call
    /// itself then says so).
    pub fn authenticate_store(&self, store_id: u64, secret: &[u8]) -> Result<(), PlacementError> {
        let inner = self.inner.lock();
        match inner.stores.get(&store_id) {
            Some(store) if !store.secret_sha256.is_empty() => check_secret(store_id, &store.secret_sha256, secret),
            _ => Ok(()),
        }
    }
}

/// The store an earlier attempt of this first registration (store_id 0) made, found by its token;
/// None for a known store id, an attempt without a token, or a token no live store has.
pub(super) fn earlier_attempt(inner: &Inner, req: &RegisterStoreRequest) -> Option<u64> {
    if req.store_id != 0 || req.registration_token.is_empty() {
        return None;
    }
    let token_sha256 = Sha256::digest(&req.registration_token);
    // A scan: registrations are rare and stores few.
    inner
        .stores
        .values()
        .find(|s| {
            s.state != StoreState::Removed as i32 && constant_time_eq(&token_sha256, &s.registration_token_sha256)
        })
        .map(|s| s.store_id)
}

/// The token digest to keep in `store_id`'s record: a first registration's own, else the known one.
pub(super) fn token_sha256(inner: &Inner, store_id: u64, req: &RegisterStoreRequest) -> Vec<u8> {
    match inner.stores.get(&store_id) {
        Some(known) => known.registration_token_sha256.clone(),
        None if req.registration_token.is_empty() => Vec::new(),
        None => Sha256::digest(&req.registration_token).to_vec(),
    }
}

/// Decides whether `req` may register as the store it names, under placement's lock. `retried`: the
/// store is the one an earlier attempt of this first registration made (see [`earlier_attempt`]);
/// the node never got that attempt's secret, so it gets a fresh one.
pub(super) fn admit(
    inner: &Inner,
    store_id: u64,
    req: &RegisterStoreRequest,
    retried: bool,
) -> Result<Admitted, PlacementError> {
    if req.cluster_id != 0 && req.cluster_id != inner.cluster_id {
        return Err(PlacementError::WrongCluster { theirs: req.cluster_id, ours: inner.cluster_id });
    }
    match inner.stores.get(&store_id) {
        Some(known) if !known.secret_sha256.is_empty() && !retried => {
            check_secret(store_id, &known.secret_sha256, &req.store_secret)?;
            Ok(Admitted { secret_sha256: known.secret_sha256.clone(), new_secret: Vec::new() })
        }
        known => {
            if retried {
                tracing::info!(store_id, raft_addr = %req.raft_addr, "a first registration was retried: the same store, a fresh secret");
            } else if known.is_some() {
                tracing::warn!(
                    store_id,
                    raft_addr = %req.raft_addr,
                    "store registered before store secrets existed: trusting this registration once and giving \
                     it a secret (trust on first use)"
                );
            }
            let mut secret = vec![0u8; SECRET_LEN];
            rand::rngs::OsRng
                .try_fill_bytes(&mut secret)
                .map_err(|err| PlacementError::Invalid(format!("no randomness for a store secret: {err}")))?;
            Ok(Admitted { secret_sha256: Sha256::digest(&secret).to_vec(), new_secret: secret })
        }
    }
}

fn check_secret(store_id: u64, expected_sha256: &[u8], presented: &[u8]) -> Result<(), PlacementError> {
    if presented.is_empty() {
        return Err(PlacementError::StoreUnauthenticated { store_id, reason: "no store secret was presented" });
    }
    if !constant_time_eq(&Sha256::digest(presented), expected_sha256) {
        return Err(PlacementError::StoreUnauthenticated { store_id, reason: "the store secret does not match" });
    }
    Ok(())
}

/// Equal bytes, in a time that does not depend on where they differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |diff, (x, y)| diff | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::super::testing::claim as request;
    use super::*;

    #[test]
    fn a_store_id_is_claimed_only_with_its_secret_and_only_in_its_cluster() {
        let dir = tempfile::tempdir().unwrap();
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let first = p.register_store(&request(0, &[], 0)).unwrap();
        assert_eq!(first.store_secret.len(), SECRET_LEN);
        let cluster_id = first.cluster_id;
        let store_id = first.store_id;
        // Its holder comes back: no new secret.
        let again = p.register_store(&request(store_id, &first.store_secret, cluster_id)).unwrap();
        assert!(again.store_secret.is_empty());
        // A stranger claiming the id, with no secret or a wrong one, changes nothing.
        let mut forged = request(store_id, &[], cluster_id);
        forged.raft_addr = "127.0.0.1:39999".into();
        assert!(matches!(p.register_store(&forged), Err(PlacementError::StoreUnauthenticated { .. })));
        forged.store_secret = vec![7; SECRET_LEN];
        assert!(matches!(p.register_store(&forged), Err(PlacementError::StoreUnauthenticated { .. })));
        assert_eq!(p.stores()[0].raft_addr, "127.0.0.1:20160");
        // Another cluster's store.
        let other = request(store_id, &first.store_secret, cluster_id ^ 1);
        assert!(matches!(p.register_store(&other), Err(PlacementError::WrongCluster { .. })));
        // Heartbeats too; and the hash is never listed.
        assert!(p.authenticate_store(store_id, &first.store_secret).is_ok());
        assert!(p.authenticate_store(store_id, b"guess").is_err());
        assert!(p.authenticate_store(store_id, &[]).is_err());
        assert!(p.stores()[0].secret_sha256.is_empty());
        // The secret survives a restart of placement.
        drop(p);
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        assert!(p.authenticate_store(store_id, &first.store_secret).is_ok());
        assert!(p.register_store(&request(store_id, &[], cluster_id)).is_err());
    }

    #[test]
    fn a_retried_first_registration_gets_the_store_its_first_attempt_made() {
        let dir = tempfile::tempdir().unwrap();
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let with_token =
            |token: &[u8]| RegisterStoreRequest { registration_token: token.to_vec(), ..request(0, &[], 0) };
        let first = p.register_store(&with_token(&[1; 32])).unwrap();
        // Its reply was lost: the retry gets the same store, and a secret the node will hold.
        let retry = p.register_store(&with_token(&[1; 32])).unwrap();
        assert_eq!(retry.store_id, first.store_id);
        assert_eq!(retry.store_secret.len(), SECRET_LEN);
        assert_ne!(retry.store_secret, first.store_secret);
        assert!(p.authenticate_store(first.store_id, &retry.store_secret).is_ok());
        assert!(p.authenticate_store(first.store_id, &first.store_secret).is_err(), "the lost secret is replaced");
        assert_eq!(p.stores().len(), 1);
        assert!(p.stores()[0].registration_token_sha256.is_empty(), "never listed");
        // Another node's token is another store; so is every registration without a token.
        let other = p.register_store(&with_token(&[2; 32])).unwrap();
        assert_ne!(other.store_id, first.store_id);
        let (a, b) = (p.register_store(&request(0, &[], 0)).unwrap(), p.register_store(&request(0, &[], 0)).unwrap());
        assert_ne!(a.store_id, b.store_id);
        assert_eq!(p.stores().len(), 4);
        // The store coming back with its id keeps its token; the token survives a restart of placement.
        let known = request(first.store_id, &retry.store_secret, first.cluster_id);
        assert!(p.register_store(&known).unwrap().store_secret.is_empty());
        drop(p);
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        assert_eq!(p.register_store(&with_token(&[1; 32])).unwrap().store_id, first.store_id);
        assert_eq!(p.stores().len(), 4);
    }

    #[test]
    fn a_store_from_before_secrets_is_given_one_at_its_next_registration() {
        let dir = tempfile::tempdir().unwrap();
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let first = p.register_store(&request(0, &[], 0)).unwrap();
        // As an older placement left it: no hash.
        p.inner.lock().stores.get_mut(&first.store_id).unwrap().secret_sha256.clear();
        assert!(p.authenticate_store(first.store_id, &[]).is_ok(), "its heartbeats pass meanwhile");
        let upgraded = p.register_store(&request(first.store_id, &[], first.cluster_id)).unwrap();
        assert_eq!(upgraded.store_secret.len(), SECRET_LEN);
        assert!(p.authenticate_store(first.store_id, &[]).is_err());
        assert!(p.authenticate_store(first.store_id, &upgraded.store_secret).is_ok());
    }

    #[test]
    fn comparison_is_by_content() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd") && !constant_time_eq(b"abc", b"ab"));
    }
}
