//! [`TlsIncoming`]: a `TcpListener` turned into a stream of [`TlsConn`]s, for hyper's
//! `serve_connection` (wrap each in `hyper_util::rt::TokioIo`) and for tonic's
//! `Server::serve_with_incoming`: a `TlsConn` is tonic's `Connected`, so every request of it carries
//! a [`PeerInfo`] (the client's address and certificates) in its extensions, for identity checks.
//! (fekv's own type rather than tonic's `TlsConnectInfo`: naming that one needs tonic's TLS feature,
//! which then refuses `https://` endpoints on a custom connector such as [`super::TlsConnector`].)
//!
//! Handshakes run on their own tasks, each bounded by a timeout, at most `max_handshakes` at once, so
//! a slow or silent client delays nobody else. A failed or timed-out handshake drops that connection
//! only; it is logged at `debug` and reported to the hook (for a metric). A client certificate without
//! any of the [`AllowedNames`] set in the options is refused the same way after its handshake, logged at
//! `warn` with its subject and address (someone holds a certificate of our CA who should not speak
//! here). Dropping the stream stops
//! accepting and closes the listening socket.

use std::convert::Infallible;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use rustls_pki_types::CertificateDer;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;
use tokio_stream::Stream;
use tonic::transport::server::Connected;

use crate::accept::accept_retrying;
use crate::security::tls::{AllowedNames, CertNames, ServerTls};

/// A server-side TLS connection.
pub type ServerTlsStream = tokio_rustls::server::TlsStream<TcpStream>;

/// What happened to one handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandshakeEvent {
    Completed,
    Failed,
    TimedOut,
    /// The handshake passed but the certificate lacks every allowed name ([`AllowedNames`]).
    Refused,
}

impl HandshakeEvent {
    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            HandshakeEvent::Completed => "completed",
            HandshakeEvent::Failed => "failed",
            HandshakeEvent::TimedOut => "timed_out",
            HandshakeEvent::Refused => "refused",
        }
    }
}

/// Hears every handshake's outcome; `src/metrics.rs` passes one that increments a counter.
pub type HandshakeHook = Arc<dyn Fn(HandshakeEvent) + Send + Sync>;

#[derive(Clone)]
pub struct AcceptorOptions {
    /// A client that has not finished its handshake by then is dropped.
    pub handshake_timeout: Duration,
    /// Connections in their handshake, or established and not yet taken by the server, at once; the
    /// listener stops accepting while this many are.
    pub max_handshakes: usize,
    pub hook: Option<HandshakeHook>,
    /// Names a client certificate must carry one of (etcd's `--peer-cert-allowed-cn` and kin);
    /// `None` or empty: any certificate the CA signed.
    pub allowed: Option<Arc<AllowedNames>>,
}

impl Default for AcceptorOptions {
    fn default() -> Self {
        AcceptorOptions { handshake_timeout: Duration::from_secs(10), max_handshakes: 256, hook: None, allowed: None }
    }
}

/// A server-side TLS connection, accepted by [`TlsIncoming`].
pub struct TlsConn {
    stream: ServerTlsStream,
    peer: PeerInfo,
}

/// Who is at the other end of a [`TlsConn`]; in every tonic request's extensions
/// (`request.extensions().get::<PeerInfo>()`).
#[derive(Debug, Clone)]
pub struct PeerInfo {
    pub remote_addr: SocketAddr,
    /// The certificates the client presented, leaf first (`None` when it presented none, which a
    /// listener with `client_cert_auth` never lets through).
    pub certificates: Option<Arc<[CertificateDer<'static>]>>,
}

impl TlsConn {
    pub fn peer(&self) -> &PeerInfo {
        &self.peer
    }

    /// The rustls stream, for what else a caller wants to know (ALPN, cipher suite).
    pub fn get_ref(&self) -> &ServerTlsStream {
        &self.stream
    }
}

impl Connected for TlsConn {
    type ConnectInfo = PeerInfo;

    fn connect_info(&self) -> PeerInfo {
        self.peer.clone()
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.stream.is_write_vectored()
    }
}

/// `Err(subject)` when `allowed` restricts the names and the leaf of `chain` has none of them.
fn check_names(allowed: Option<&AllowedNames>, chain: Option<&[CertificateDer<'static>]>) -> Result<(), String> {
    let Some(allowed) = allowed.filter(|allowed| !allowed.is_empty()) else { return Ok(()) };
    match CertNames::of_leaf(chain) {
        Ok(names) if allowed.admits(&names) => Ok(()),
        Ok(names) => Err(names.subject),
        Err(reason) => Err(format!("(unreadable: {reason})")),
    }
}

/// Established TLS connections, in the order their handshakes finish. Never yields an error: accept
/// errors (out of file descriptors) are logged and retried after a pause, failed handshakes dropped.
pub struct TlsIncoming {
    established: mpsc::Receiver<TlsConn>,
    acceptor: JoinHandle<()>,
}

impl TlsIncoming {
    pub fn new(listener: TcpListener, tls: Arc<ServerTls>, options: AcceptorOptions) -> TlsIncoming {
        // A small queue: a connection waits here only while the server is busy taking the previous
        // one, and a full queue holds back the handshake tasks (and so, through the permits, accepts).
        let (tx, established) = mpsc::channel(16);
        let acceptor = tokio::spawn(accept_loop(listener, tls, options, tx));
        TlsIncoming { established, acceptor }
    }
}

impl Drop for TlsIncoming {
    fn drop(&mut self) {
        self.acceptor.abort();
    }
}

impl Stream for TlsIncoming {
    type Item = Result<TlsConn, Infallible>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.established.poll_recv(cx).map(|stream| stream.map(Ok))
    }
}

async fn accept_loop(
    listener: TcpListener,
    tls: Arc<ServerTls>,
    options: AcceptorOptions,
    established: mpsc::Sender<TlsConn>,
) {
    let permits = Arc::new(Semaphore::new(options.max_handshakes.max(1)));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else { return };
        let (tcp, peer) = tokio::select! {
            accepted = accept_retrying(&listener, "TLS") => accepted,
            // The stream was dropped: stop accepting (the listener closes with this task).
            _ = established.closed() => return,
        };
        let _ = tcp.set_nodelay(true);
        // Each connection takes the config current at its accept: a reload applies to the next one.
        let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
        let (options, established) = (options.clone(), established.clone());
        tokio::spawn(async move {
            let handshake = tokio::time::timeout(options.handshake_timeout, acceptor.accept(tcp)).await;
            let event = match handshake {
                Ok(Ok(stream)) => {
                    let certificates: Option<Arc<[CertificateDer<'static>]>> =
                        stream.get_ref().1.peer_certificates().map(Arc::from);
                    if let Err(subject) = check_names(options.allowed.as_deref(), certificates.as_deref()) {
                        tracing::warn!(%peer, subject, "refused a client certificate: it carries no allowed name");
                        if let Some(hook) = &options.hook {
                            hook(HandshakeEvent::Refused);
                        }
                        // Dropping the stream closes the connection before a byte of the protocol.
                        return;
                    }
                    let conn = TlsConn { stream, peer: PeerInfo { remote_addr: peer, certificates } };
                    // The receiver may be gone (shutting down): the connection just closes.
                    let _ = established.send(conn).await;
                    drop(permit);
                    HandshakeEvent::Completed
                }
                Ok(Err(err)) => {
                    tracing::debug!(%peer, error = %err, "TLS handshake failed");
                    HandshakeEvent::Failed
                }
                Err(_) => {
                    tracing::debug!(%peer, timeout = ?options.handshake_timeout, "TLS handshake timed out");
                    HandshakeEvent::TimedOut
                }
            };
            if let Some(hook) = &options.hook {
                hook(event);
            }
        });
    }
}
