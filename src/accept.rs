//! Accepting TCP connections in a process that may run out of file descriptors.
//!
//! `accept(2)` fails with `EMFILE` once the process holds as many descriptors as its limit allows
//! (see [`crate::fd_limit`]), and keeps failing until one is closed. Asking again at once, as tonic's
//! and hyper's own loops do, spins a core on the same error; so every listener of fekv accepts through
//! [`accept_retrying`], which logs the failure and waits a moment before it asks again.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// The pause after a failed accept: long enough not to spin, short enough that a freed descriptor
/// is used soon.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(50);

/// The next connection of `listener`. A failed accept is logged (naming the listener, `what`) and
/// retried after [`ACCEPT_RETRY`], so this never returns an error. Cancel-safe, like
/// `TcpListener::accept`: dropped in a `select!`, it loses no connection.
pub async fn accept_retrying(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok(accepted) => return accepted,
            Err(err) => {
                tracing::warn!(error = %err, "{what} listener: accept failed; retrying after a pause");
                tokio::time::sleep(ACCEPT_RETRY).await;
            }
        }
    }
}
