//! The raft listener's plain (non-TLS) connections, each with a deadline for its first byte.
//!
//! A store's gRPC client sends the HTTP/2 preface as soon as it connects, but hyper's HTTP/2 server
//! waits for it without a limit: a connection that sends nothing (a port scanner, a stuck or
//! hostile client) held a descriptor for as long as it stayed open, and enough of them starve the
//! node of files the way idle HTTP clients did (issue 14, fault 6). Under peer TLS the handshake
//! timeout bounds this already; here a connection whose first byte does not arrive in time ends
//! with `TimedOut`, which closes it. Once a byte has arrived the deadline is gone: an idle raft
//! stream between two stores is normal.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio_stream::Stream;
use tonic::transport::server::{Connected, TcpConnectInfo};

use crate::accept::accept_retrying;

/// How long a plain raft connection may stay silent after it is accepted.
pub const FIRST_BYTE_TIMEOUT: Duration = Duration::from_secs(10);

/// The accepted connections of `listener`, each closed if it sends nothing within `within`: what
/// `tonic`'s `serve_with_incoming` takes. Never yields an error: a failed accept (out of
/// descriptors, most likely) is logged and retried after a pause, where tonic would ask again at
/// once and spin on the same error. The listener closes once the stream is dropped.
pub fn incoming(listener: TcpListener, within: Duration) -> impl Stream<Item = io::Result<FirstByteDeadline>> {
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                accepted = accept_retrying(&listener, "raft") => accepted,
                () = tx.closed() => return,
            };
            if tx.send(Ok(FirstByteDeadline::new(stream, within))).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// A TCP connection that fails its reads once `within` has passed without a byte read.
pub struct FirstByteDeadline {
    inner: TcpStream,
    /// Until the first byte arrives.
    deadline: Option<Pin<Box<tokio::time::Sleep>>>,
}

impl FirstByteDeadline {
    fn new(inner: TcpStream, within: Duration) -> FirstByteDeadline {
        FirstByteDeadline { inner, deadline: Some(Box::pin(tokio::time::sleep(within))) }
    }
}

impl AsyncRead for FirstByteDeadline {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.deadline = None;
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(err)) => Poll::Ready(Err(err)),
            // Still nothing: the deadline's timer wakes the reader when it passes.
            Poll::Pending => match this.deadline.as_mut().map(|deadline| deadline.as_mut().poll(cx)) {
                Some(Poll::Ready(())) => {
                    tracing::debug!(peer = ?this.inner.peer_addr().ok(), "closing a raft connection that sent nothing");
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "no byte within the first-byte timeout")))
                }
                _ => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for FirstByteDeadline {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

impl Connected for FirstByteDeadline {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}
