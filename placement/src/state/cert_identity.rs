//! Stores bound to their certificate (issue 12, item 2): with mutual TLS on placement, the identity of
//! the client certificate a store first registers with (its CN, else its first SAN, read by the
//! listener: see `service::cert`) is kept in the store's record (`StoreInfo.cert_identity`), and a later
//! registration or heartbeat for that store id from a certificate of another identity is refused,
//! even with the store's secret: a stolen data directory is not enough to speak for the store from
//! another machine's certificate. Names rather than a fingerprint, so certificates can be rotated
//! (a new certificate with the same CN passes).
//!
//! A call without a certificate identity (placement without mutual TLS) is not checked: the secret
//! alone decides, as before. A store registered before the binding existed is bound at its next
//! registration over mutual TLS, after its secret has been checked.

use super::*;

impl Placement {
    /// Registers a store as [`Placement::register_store`] does, from a caller whose certificate has
    /// `identity`: a known store must come with the identity it is bound to (after its secret is
    /// checked), and a store not bound yet is bound to it, in the registration's own write.
    pub fn register_store_as(
        &self,
        req: &RegisterStoreRequest,
        identity: Option<&str>,
    ) -> Result<RegisterStoreResponse, PlacementError> {
        self.register_store_bound(req, identity)
    }

    /// Refuses a call for `store_id` whose certificate identity is not the one the store is bound to.
    /// An unbound or unknown store, or a call without an identity, passes.
    pub fn check_store_cert(&self, store_id: u64, identity: Option<&str>) -> Result<(), PlacementError> {
        let Some(identity) = identity else { return Ok(()) };
        let inner = self.inner.lock();
        match inner.stores.get(&store_id) {
            Some(store) if !store.cert_identity.is_empty() => check(store_id, &store.cert_identity, identity),
            _ => Ok(()),
        }
    }
}

/// Decides, under placement's lock and after the secret passed, the identity to record for a store
/// registering with `identity`: the one it is bound to (which `identity` must be), else `identity`
/// (empty without one).
pub(super) fn admit(inner: &Inner, store_id: u64, identity: Option<&str>) -> Result<String, PlacementError> {
    let bound = inner.stores.get(&store_id).map_or("", |store| store.cert_identity.as_str());
    match identity {
        Some(identity) if !bound.is_empty() => check(store_id, bound, identity).map(|()| bound.to_string()),
        Some(identity) => {
            tracing::info!(store_id, identity, "store bound to its certificate identity");
            Ok(identity.to_string())
        }
        None => Ok(bound.to_string()),
    }
}

fn check(store_id: u64, bound: &str, presented: &str) -> Result<(), PlacementError> {
    if bound == presented {
        return Ok(());
    }
    tracing::warn!(store_id, bound, presented, "refused a store call from a certificate of another identity");
    Err(PlacementError::StoreUnauthenticated {
        store_id,
        reason: "the client certificate is not of the identity the store registered with",
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::claim as request;
    use super::*;

    #[test]
    fn a_store_is_bound_to_the_certificate_identity_it_first_registered_with() {
        let dir = tempfile::tempdir().unwrap();
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let first = p.register_store_as(&request(0, &[], 0), Some("node-1")).unwrap();
        let (id, secret, cluster) = (first.store_id, first.store_secret.clone(), first.cluster_id);
        assert_eq!(p.stores()[0].cert_identity, "node-1");
        // Its holder comes back with its certificate; a rotated one of the same identity passes too.
        p.register_store_as(&request(id, &secret, cluster), Some("node-1")).unwrap();
        p.check_store_cert(id, Some("node-1")).unwrap();
        // Another certificate, even with the secret: refused, and nothing changes.
        let mut forged = request(id, &secret, cluster);
        forged.raft_addr = "127.0.0.1:39999".into();
        let refused = p.register_store_as(&forged, Some("node-2")).unwrap_err();
        assert!(matches!(refused, PlacementError::StoreUnauthenticated { .. }), "{refused}");
        assert!(refused.to_string().contains("identity"), "{refused}");
        assert_eq!(p.stores()[0].raft_addr, "127.0.0.1:20160");
        assert!(p.check_store_cert(id, Some("node-2")).is_err(), "its heartbeats too");
        // Without mutual TLS there is no identity to check: the secret decides.
        p.check_store_cert(id, None).unwrap();
        // The binding survives a restart of placement.
        drop(p);
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        assert!(p.register_store_as(&request(id, &secret, cluster), Some("node-2")).is_err());
        p.register_store_as(&request(id, &secret, cluster), Some("node-1")).unwrap();
    }

    #[test]
    fn an_unbound_store_is_bound_at_its_next_registration_over_mutual_tls_with_its_secret() {
        let dir = tempfile::tempdir().unwrap();
        let p = Placement::open(dir.path(), PlacementOptions::default()).unwrap();
        let first = p.register_store_as(&request(0, &[], 0), None).unwrap();
        let (id, secret, cluster) = (first.store_id, first.store_secret.clone(), first.cluster_id);
        assert_eq!(p.stores()[0].cert_identity, "", "no identity without mutual TLS");
        // A certified stranger without the secret binds nothing.
        assert!(p.register_store_as(&request(id, &[], cluster), Some("intruder")).is_err());
        assert_eq!(p.stores()[0].cert_identity, "");
        p.register_store_as(&request(id, &secret, cluster), Some("node-1")).unwrap();
        assert_eq!(p.stores()[0].cert_identity, "node-1");
        assert!(p.check_store_cert(id, Some("intruder")).is_err());
    }
}
