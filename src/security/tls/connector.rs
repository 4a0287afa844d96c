//! [`TlsConnector`]: outgoing TLS connections that verify the server against the CA and present the
//! client certificate when one is configured (mutual TLS). It is a `tower_service::Service<Uri>`, so:
//! - tonic: `Endpoint::from_shared("https://127.0.0.1:20160")?.connect_with_connector(connector)`;
//! - hyper-util: `Client::builder(TokioExecutor::new()).build(connector)`;
//! - a bare hyper connection (`fekv bench`): `connector.connect("127.0.0.1", port).await` then
//!   `hyper::client::conn::http1::handshake(io)`.
//!
//! The server's name comes from the URI's host: an IP address is checked against the certificate's
//! IP SANs (so `https://127.0.0.1:port` works with a certificate for 127.0.0.1), a name against its
//! DNS SANs. Each connection takes the latest [`ClientTls`] config, so a rotated client certificate
//! is presented from the next connection on. Connecting and the handshake share one timeout.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::rt::{Read, ReadBufCursor, Write};
use hyper::Uri;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::TokioIo;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::net::TcpStream;

use crate::security::tls::ClientTls;

/// A client-side TLS connection, as hyper and tonic want it.
pub type ClientTlsStream = tokio_rustls::client::TlsStream<TcpStream>;

#[derive(Clone)]
pub struct TlsConnector {
    tls: Arc<ClientTls>,
    timeout: Duration,
}

impl TlsConnector {
    /// Connects with `tls`, giving up on a connection (TCP and handshake) after 10 s.
    pub fn new(tls: Arc<ClientTls>) -> TlsConnector {
        TlsConnector { tls, timeout: Duration::from_secs(10) }
    }

    pub fn with_timeout(self, timeout: Duration) -> TlsConnector {
        TlsConnector { timeout, ..self }
    }

    /// A TLS connection to `host:port`, the server verified as `host`.
    pub async fn connect(&self, host: &str, port: u16) -> io::Result<TlsIo> {
        // `[::1]` in a URI is `::1` to the resolver and to the certificate check.
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let server_name = ServerName::try_from(host.clone())
            .map_err(|err| io::Error::new(io::ErrorKind::InvalidInput, format!("server name {host:?}: {err}")))?;
        let connector = tokio_rustls::TlsConnector::from(self.tls.current());
        let connecting = async move {
            let tcp = TcpStream::connect((host.as_str(), port)).await?;
            let _ = tcp.set_nodelay(true);
            connector.connect(server_name, tcp).await
        };
        match tokio::time::timeout(self.timeout, connecting).await {
            Ok(stream) => Ok(TlsIo(TokioIo::new(stream?))),
            Err(_) => {
                Err(io::Error::new(io::ErrorKind::TimedOut, format!("TLS connect timed out after {:?}", self.timeout)))
            }
        }
    }
}

impl tower_service::Service<Uri> for TlsConnector {
    type Response = TlsIo;
    type Error = io::Error;
    type Future = Pin<Box<dyn Future<Output = io::Result<TlsIo>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move {
            let host =
                uri.host().ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, format!("{uri} has no host")))?;
            let port = uri.port_u16().unwrap_or(if uri.scheme_str() == Some("http") { 80 } else { 443 });
            connector.connect(host, port).await
        })
    }
}

/// A client TLS connection for hyper and tonic (hyper's I/O traits, hyper-util's `Connection`).
pub struct TlsIo(TokioIo<ClientTlsStream>);

impl TlsIo {
    /// The certificates the server presented, leaf first.
    pub fn server_certificates(&self) -> Option<&[CertificateDer<'static>]> {
        self.0.inner().get_ref().1.peer_certificates()
    }

    /// The application protocol the server chose (ALPN), if any.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.0.inner().get_ref().1.alpn_protocol()
    }
}

impl Connection for TlsIo {
    fn connected(&self) -> Connected {
        let connected = Connected::new();
        if self.alpn_protocol() == Some(b"h2") {
            connected.negotiated_h2()
        } else {
            connected
        }
    }
}

impl Read for TlsIo {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: ReadBufCursor<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_read(cx, buf)
    }
}

impl Write for TlsIo {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.0).poll_shutdown(cx)
    }

    fn is_write_vectored(&self) -> bool {
        self.0.is_write_vectored()
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.0).poll_write_vectored(cx, bufs)
    }
}
