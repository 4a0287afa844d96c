//! The caller's certificate identity, for binding stores to it (`state/cert_identity.rs`). Only the
//! listener (the node crate's TLS acceptor) sees the client certificate: [`serve_incoming`]'s
//! [`CertIdentityOf`] reads its identity (CN, else first SAN) from a request's extensions, and the
//! interceptor records it as a [`CallerCert`] for the store RPCs.
//!
//! [`serve_incoming`]: super::serve_incoming

use tonic::{Extensions, Request};

/// Finds the identity of the caller's verified client certificate (mutual TLS only) in a request's
/// extensions.
pub type CertIdentityOf = fn(&Extensions) -> Option<String>;

#[derive(Debug, Clone)]
struct CallerCert(String);

/// Records the caller's certificate identity, if any, for [`identity`].
pub(super) fn record(req: &mut Request<()>, of: CertIdentityOf) {
    if let Some(identity) = of(req.extensions()) {
        req.extensions_mut().insert(CallerCert(identity));
    }
}

/// The identity of the caller's certificate; `None` without mutual TLS.
pub(super) fn identity<T>(req: &Request<T>) -> Option<String> {
    req.extensions().get::<CallerCert>().map(|cert| cert.0.clone())
}
