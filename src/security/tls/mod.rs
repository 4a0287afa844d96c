//! TLS for every fekv listener and connection, on rustls with the ring provider (no OpenSSL).
//!
//! - [`settings`]: what the operator writes, with etcd's names ([`ServerTlsSettings`],
//!   [`PeerTlsSettings`], [`ClientTlsSettings`]), and `validate()`;
//! - [`reload`]: [`ServerTls`] / [`ClientTls`], the rustls configs built from those files, reloaded on
//!   demand ([`Reloadable::reload`], for SIGHUP) or when the files change ([`Reloadable::watch`]);
//! - [`acceptor`]: [`TlsIncoming`], a `TcpListener` as a stream of TLS streams for hyper and tonic;
//! - [`connector`]: [`TlsConnector`], outgoing TLS (mutual when a client certificate is set) for
//!   tonic's `Endpoint::connect_with_connector` and hyper-util's client;
//! - [`grpc`]: tonic channels over plain TCP or that connector, for every gRPC client;
//! - [`names`]: the names a certificate carries, and the allowed ones a listener may require;
//! - [`local_ca`]: a CA made on the spot (`fekv cluster --tls-dir`, tests).
//!
//! How a listener is meant to use it (the node's REST API, its raft port, placement):
//! ```ignore
//! let tls = Arc::new(ServerTls::load(settings, AppProtocol::Http1)?); // fatal at start if bad
//! tokio::spawn(tls.clone().watch(DEFAULT_WATCH_PERIOD, stopped.clone())); // reload on file change
//! // on SIGHUP: tls.reload() (errors are logged, the old config stays)
//! let mut incoming = TlsIncoming::new(listener, tls, AcceptorOptions::default());
//! // hyper: while let Some(Ok(stream)) = incoming.next().await { serve_connection(TokioIo::new(stream), svc) }
//! // tonic: Server::builder().add_service(svc).serve_with_incoming_shutdown(incoming, stopped)
//! ```
//! gRPC listeners and clients use [`AppProtocol::Grpc`] (ALPN `h2`), the REST API
//! [`AppProtocol::Http1`]. Each connection's [`PeerInfo`] (address, client certificates) is in every
//! tonic request's extensions and on [`TlsConn::peer`] for hyper, for identity checks.

pub mod acceptor;
pub mod connector;
pub mod grpc;
mod load;
pub mod local_ca;
pub mod names;
pub mod reload;
pub mod settings;

use std::path::PathBuf;

pub use acceptor::{AcceptorOptions, HandshakeEvent, HandshakeHook, PeerInfo, ServerTlsStream, TlsConn, TlsIncoming};
pub use connector::{ClientTlsStream, TlsConnector, TlsIo};
pub use load::{provider, FileSet};
pub use names::{AllowedNames, CertNames};
pub use reload::{ClientTls, Reloadable, Reloaded, ServerTls, DEFAULT_WATCH_PERIOD};
pub use settings::{ClientTlsSettings, PeerTlsSettings, ServerTlsSettings};

/// The application protocol a TLS connection carries, announced with ALPN so that a client of the
/// wrong kind fails the handshake instead of sending garbage to the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppProtocol {
    /// The REST API: HTTP/1.1.
    Http1,
    /// tonic: HTTP/2.
    Grpc,
}

impl AppProtocol {
    fn alpn(self) -> Vec<Vec<u8>> {
        match self {
            AppProtocol::Http1 => vec![b"http/1.1".to_vec()],
            AppProtocol::Grpc => vec![b"h2".to_vec()],
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("{path}: not a usable PEM {expected}: {reason}")]
    Pem { path: PathBuf, expected: &'static str, reason: String },
    #[error("the private key {key} does not match the certificate {cert}")]
    KeyMismatch { cert: PathBuf, key: PathBuf },
    #[error("TLS settings: {0}")]
    Settings(String),
    #[error("TLS configuration: {0}")]
    Config(String),
}

#[cfg(test)]
#[path = "../../../tests/common/certs.rs"]
pub(crate) mod test_certs;
