//! The server loop: accept, admit under the connection cap, serve each connection with hyper over
//! [`ConnIo`] (deadlines, JSON error bodies), and drain on shutdown. The listener is an [`Acceptor`]:
//! a `TcpListener` (plain HTTP) or a [`TlsIncoming`] (HTTPS: connections arrive once their
//! handshake is done, so the cap counts only clients that got through it).

use std::convert::Infallible;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Body as _;
use hyper::service::service_fn;
use hyper::{Method, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::Instant;
use tokio_stream::StreamExt as _;

use crate::accept::{accept_retrying, ACCEPT_RETRY};
use crate::security::tls::{TlsConn, TlsIncoming};

use super::auth::ClientIp;
use super::conn_io::{encode_response, ConnIo};
use super::connections::{Admission, Connections, Registration};
use super::error::ApiError;
use super::routes::handle;
use super::state::ApiState;

/// How long a stopping server lets in-flight requests finish.
const DRAIN: Duration = Duration::from_secs(5);
/// At most one `warn` line this often while the connection cap turns clients away.
const CAP_WARN_EVERY: Duration = Duration::from_secs(10);
/// How long a refused connection may take to read its `503` (see [`refuse`]).
const REFUSE_LINGER: Duration = Duration::from_secs(1);
/// Refused connections lingering at once, at most.
const MAX_REFUSING: usize = 64;

/// Where client connections come from.
pub trait Acceptor: Send {
    type Conn: AsyncRead + AsyncWrite + Unpin + Send + 'static;
    /// The next connection, ready for HTTP.
    fn next_conn(&mut self) -> impl Future<Output = std::io::Result<Self::Conn>> + Send;
    /// Where a connection comes from (for the login limits per address), if known.
    fn peer_addr(conn: &Self::Conn) -> Option<std::net::SocketAddr>;
}

impl Acceptor for TcpListener {
    type Conn = TcpStream;

    async fn next_conn(&mut self) -> std::io::Result<TcpStream> {
        let (stream, _) = accept_retrying(self, "client").await;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    fn peer_addr(conn: &TcpStream) -> Option<std::net::SocketAddr> {
        conn.peer_addr().ok()
    }
}

impl Acceptor for TlsIncoming {
    type Conn = TlsConn;

    async fn next_conn(&mut self) -> std::io::Result<TlsConn> {
        match self.next().await {
            Some(Ok(conn)) => Ok(conn),
            Some(Err(never)) => match never {},
            None => Err(std::io::Error::other("the TLS acceptor stopped")),
        }
    }

    fn peer_addr(conn: &TlsConn) -> Option<std::net::SocketAddr> {
        Some(tonic::transport::server::Connected::connect_info(conn).remote_addr)
    }
}

/// Serves HTTP on `listener` until `shutdown` resolves, then lets in-flight requests finish (for at
/// most a few seconds).
pub async fn serve<A: Acceptor>(mut listener: A, state: Arc<ApiState>, shutdown: impl Future<Output = ()>) {
    let connections = Connections::new(state.http.max_connections);
    let mut cap_warned: Option<Instant> = None;
    let refusing = Arc::new(AtomicUsize::new(0));
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            accepted = listener.next_conn() => match accepted {
                Ok(stream) => match connections.admit(Instant::now()) {
                    Admission::Admitted(registration) => {
                        spawn_connection(stream, A::peer_addr, &state, registration)
                    }
                    Admission::AdmittedByEvicting(registration) => {
                        state.metrics.http_connections_closed.with_label_values(&["evicted"]).inc();
                        spawn_connection(stream, A::peer_addr, &state, registration);
                    }
                    Admission::Full => {
                        state.metrics.http_connections_closed.with_label_values(&["over_cap"]).inc();
                        if cap_warned.is_none_or(|at| at.elapsed() > CAP_WARN_EVERY) {
                            cap_warned = Some(Instant::now());
                            tracing::warn!(
                                max_connections = state.http.max_connections,
                                "every client connection is in a request; answering new ones 503"
                            );
                        }
                        refuse(stream, state.http.max_connections, &refusing);
                    }
                },
                Err(err) => {
                    // A plain listener retries its failed accepts itself (see `crate::accept`); this
                    // is a TLS acceptor that stopped: back off instead of spinning.
                    tracing::warn!(error = %err, "accept failed");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            },
            _ = &mut shutdown => break,
        }
    }
    drop(listener);
    connections.close_all();
    let _ = tokio::time::timeout(DRAIN, connections.all_ended()).await;
}

fn spawn_connection<C>(
    stream: C,
    peer_addr: fn(&C) -> Option<std::net::SocketAddr>,
    state: &Arc<ApiState>,
    registration: Registration,
) where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    state.metrics.http_connections.inc();
    let client_ip = peer_addr(&stream).map(|addr| ClientIp(addr.ip()));
    tokio::spawn(serve_connection(stream, client_ip, state.clone(), registration));
}

async fn serve_connection<C>(stream: C, client_ip: Option<ClientIp>, state: Arc<ApiState>, registration: Registration)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let activity = registration.activity.clone();
    let io = ConnIo::new(stream, activity.clone(), state.http, state.metrics.clone());
    let service_state = state.clone();
    let service_activity = activity.clone();
    let service = service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
        let (state, activity) = (service_state.clone(), service_activity.clone());
        if let Some(ip) = client_ip {
            req.extensions_mut().insert(ip);
        }
        async move {
            activity.enter_service();
            let head_only = req.method() == Method::HEAD;
            let response = handle(&state, req).await;
            activity.leave_service(Instant::now(), wire_body_len(head_only, response.status(), response.body()));
            Ok::<_, Infallible>(response)
        }
    });
    // No hyper timer: the header and idle deadlines are ConnIo's (see there why). Half-close: a
    // client that shuts its write side after its requests still gets their answers (hyper's
    // default dropped the connection unanswered at the end of the stream, a write with it).
    let conn = hyper::server::conn::http1::Builder::new()
        .header_read_timeout(None)
        .half_close(true)
        .serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let served = tokio::select! {
        served = conn.as_mut() => served,
        _ = activity.close_requested() => {
            // Closes at once if idle; otherwise after the request in progress is answered.
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(err) = served {
        tracing::debug!(error = %err, "connection ended with an error");
    }
    state.metrics.http_connections.dec();
    drop(registration);
}

/// The body bytes hyper writes for a response (none for HEAD, 1xx, 204 and 304, as in hyper's
/// `Server::can_have_body`).
fn wire_body_len(head_only: bool, status: StatusCode, body: &http_body_util::Full<bytes::Bytes>) -> u64 {
    if head_only || status.is_informational() || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED
    {
        return 0;
    }
    body.size_hint().exact().unwrap_or(0)
}

/// Answers a connection over the cap `503` and closes it. The answer goes out, the write side is
/// shut, and what the client sends meanwhile is read and dropped for up to [`REFUSE_LINGER`]:
/// closing a socket with unread bytes resets it, and a reset can destroy the answer before the
/// client reads it. At most [`MAX_REFUSING`] refusals linger at once (they hold descriptors too,
/// from the reserve); past that a connection is closed at once.
fn refuse<C>(stream: C, max_connections: usize, refusing: &Arc<AtomicUsize>)
where
    C: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    if refusing.fetch_add(1, Ordering::Relaxed) >= MAX_REFUSING {
        refusing.fetch_sub(1, Ordering::Relaxed);
        return;
    }
    let refusing = refusing.clone();
    tokio::spawn(async move {
        let (status, headers, body) = ApiError::TooManyConnections { limit: max_connections }.into_parts();
        let answer = encode_response(status, &headers, &body, None);
        let _ = tokio::time::timeout(REFUSE_LINGER, async {
            let mut stream = stream;
            stream.write_all(&answer).await?;
            stream.shutdown().await?;
            let mut sink = [0u8; 1024];
            while stream.read(&mut sink).await? > 0 {}
            Ok::<_, std::io::Error>(())
        })
        .await;
        refusing.fetch_sub(1, Ordering::Relaxed);
    });
}
