//! A client connection's socket as hyper sees it, doing what hyper does not do for us.
//!
//! **Deadlines while reading.** Between requests the reader enforces `http_idle_timeout` (a
//! keep-alive connection with no byte of a next request: closed, as an idle keep-alive connection
//! is anywhere) and `http_header_timeout` (a request's head started but is not complete: the reader
//! answers `408` itself, then closes; a new connection that sends nothing at all is closed at the
//! header timeout of its accept, without an answer). hyper's own `header_read_timeout` cannot tell
//! the two apart (its clock starts when it begins waiting, so an idle connection would get the
//! header deadline) and closes without an answer. While a request is being served, the handler's
//! deadlines apply instead (`http_body_timeout`, `request_timeout`).
//!
//! **A deadline while writing.** A write that makes no progress for `http_body_timeout` (a client
//! that asked for responses and stopped reading them, once the socket buffers are full) fails the
//! connection: otherwise it would hold its descriptor forever, and no idle timeout can see it.
//!
//! **JSON bodies on hyper's own error responses.** A request line or header hyper cannot parse
//! never reaches the service: hyper answers `400`, `414` or `431` itself, with an empty body, and
//! has no hook to change it (`on_error` in hyper's `proto/h1/role.rs` is fixed). So the writer
//! follows the response framing — each response the service produced is announced with the
//! number of body bytes hyper will write after its head — and a response head that starts where
//! no announced response is due is one of hyper's own. That head is replaced by the same JSON
//! error the service would have sent ([`ApiError::into_parts`]), keeping hyper's status and `Date`.
//! Anything unexpected in the stream (a byte at a response boundary that does not start a status
//! line) stops the rewriting for the connection; bytes then pass through untouched.

use std::future::Future;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use hyper::header::HeaderMap;
use hyper::StatusCode;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use super::connections::{Activity, Limits, Waiting};
use super::error::ApiError;
use crate::metrics::Metrics;

/// The longest request target hyper accepts (`MAX_URI_LEN` in hyper's `proto/h1/role.rs`).
const MAX_URI_LEN: usize = u16::MAX as usize - 1;
/// The most a request head may take in hyper's read buffer (its default `max_buf_size`).
const MAX_HEAD_LEN: usize = 8192 + 4096 * 100;

/// Over any byte stream: a `TcpStream`, or a TLS connection of the HTTPS listener.
pub struct ConnIo<S = TcpStream> {
    inner: S,
    activity: Arc<Activity>,
    limits: Limits,
    metrics: Arc<Metrics>,
    /// The reader's deadline (idle or header), re-armed as the connection's phase changes.
    timer: Pin<Box<Sleep>>,
    /// The writer's deadline, armed while a write makes no progress.
    write_timer: Pin<Box<Sleep>>,
    write_stalled: bool,
    /// Bytes the connection layer is sending itself: a `408` before closing, or the JSON form of
    /// one of hyper's error responses. Sent before anything else is written.
    own: Option<Outgoing>,
    /// After the reader's own `408`: the read side reports end of stream.
    read_done: bool,
    frames: Frames,
}

impl<S: AsyncRead + AsyncWrite + Unpin> ConnIo<S> {
    pub fn new(inner: S, activity: Arc<Activity>, limits: Limits, metrics: Arc<Metrics>) -> ConnIo<S> {
        let timer = Box::pin(tokio::time::sleep_until(Instant::now() + limits.idle_timeout));
        let write_timer = Box::pin(tokio::time::sleep_until(Instant::now() + limits.body_timeout));
        ConnIo {
            inner,
            activity,
            limits,
            metrics,
            timer,
            write_timer,
            write_stalled: false,
            own: None,
            read_done: false,
            frames: Frames::Boundary,
        }
    }

    /// Passes on a write-side poll's outcome, failing it once writes have made no progress for the
    /// body timeout. Only bytes written count as progress (`progressed`): a flush of a socket is
    /// always ready and says nothing about the client.
    fn write_deadline<T>(
        &mut self,
        cx: &mut Context<'_>,
        polled: Poll<io::Result<T>>,
        progressed: impl FnOnce(&T) -> bool,
    ) -> Poll<io::Result<T>> {
        if let Poll::Ready(result) = &polled {
            if result.as_ref().is_ok_and(progressed) {
                self.write_stalled = false;
            }
            return polled;
        }
        if !self.write_stalled {
            self.write_stalled = true;
            self.write_timer.as_mut().reset(Instant::now() + self.limits.body_timeout);
        }
        ready!(self.write_timer.as_mut().poll(cx));
        self.closed("send_timeout");
        Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, "the client read nothing for the body timeout")))
    }

    fn closed(&self, reason: &str) {
        self.metrics.http_connections_closed.with_label_values(&[reason]).inc();
    }

    /// Writes out `self.own`, if any.
    /// Our own answer goes out before the inner stream is flushed or shut (`op`), both under the
    /// write deadline.
    fn poll_after_own(
        &mut self,
        cx: &mut Context<'_>,
        op: impl FnOnce(Pin<&mut S>, &mut Context<'_>) -> Poll<io::Result<()>>,
    ) -> Poll<io::Result<()>> {
        let own = self.poll_own(cx);
        ready!(self.write_deadline(cx, own, |_| false))?;
        let done = op(Pin::new(&mut self.inner), cx);
        self.write_deadline(cx, done, |_| false)
    }

    fn poll_own(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(out) = &mut self.own {
            if out.written == out.bytes.len() {
                self.own = None;
                break;
            }
            let n = ready!(Pin::new(&mut self.inner).poll_write(cx, &out.bytes[out.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            out.written += n;
        }
        Poll::Ready(Ok(()))
    }

    /// The deadline of the connection's current wait, if the reader owns one.
    fn deadline(&self) -> Option<(Instant, Expiry)> {
        match self.activity.waiting() {
            Waiting::InService => None,
            Waiting::Idle(since) => Some((since + self.limits.idle_timeout, Expiry::Idle)),
            Waiting::Head { since, started } => Some((since + self.limits.header_timeout, Expiry::Header { started })),
        }
    }
}

#[derive(Clone, Copy)]
enum Expiry {
    Idle,
    /// `started`: some of the head arrived, so a client is waiting for an answer.
    Header {
        started: bool,
    },
}

struct Outgoing {
    bytes: Vec<u8>,
    written: usize,
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncRead for ConnIo<S> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if this.read_done {
            // End of stream, once our own answer is out and the write side is shut.
            let _ = ready!(this.poll_own(cx));
            let _ = ready!(Pin::new(&mut this.inner).poll_shutdown(cx));
            return Poll::Ready(Ok(()));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    this.activity.on_bytes(Instant::now());
                }
                return Poll::Ready(Ok(()));
            }
            Poll::Ready(Err(err)) => return Poll::Ready(Err(err)),
            Poll::Pending => {}
        }
        let Some((deadline, expiry)) = this.deadline() else { return Poll::Pending };
        if this.timer.deadline() != deadline {
            this.timer.as_mut().reset(deadline);
        }
        ready!(this.timer.as_mut().poll(cx));
        match expiry {
            // End of stream between requests: hyper closes the connection quietly.
            Expiry::Idle => {
                this.closed("idle_timeout");
                this.read_done = true;
                Poll::Ready(Ok(()))
            }
            // A connection that never sent a byte gets no answer (a browser's preconnect would
            // show a 408 it never asked for), just the close.
            Expiry::Header { started: false } => {
                this.closed("header_timeout");
                this.read_done = true;
                Pin::new(this).poll_read(cx, buf)
            }
            Expiry::Header { started: true } => {
                this.closed("header_timeout");
                let (status, headers, body) =
                    ApiError::HeaderTimeout { waited: this.limits.header_timeout }.into_parts();
                this.own = Some(Outgoing { bytes: encode_response(status, &headers, &body, None), written: 0 });
                this.read_done = true;
                Pin::new(this).poll_read(cx, buf)
            }
        }
    }
}

impl<S: AsyncRead + AsyncWrite + Unpin> AsyncWrite for ConnIo<S> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.poll_write_vectored(cx, &[IoSlice::new(buf)])
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let own = this.poll_own(cx);
        ready!(this.write_deadline(cx, own, |_| false))?;
        if let Frames::Boundary = this.frames {
            if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
                if let Some((head_len, replacement)) = replace_automatic_error(first, &this.activity) {
                    this.closed("malformed_request");
                    this.frames = Frames::Lost; // hyper closes the connection after it
                    this.own = Some(Outgoing { bytes: replacement, written: 0 });
                    return Poll::Ready(Ok(head_len));
                }
            }
        }
        let written = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        let n = ready!(this.write_deadline(cx, written, |n| *n > 0))?;
        this.frames.advance(bufs, n, &this.activity);
        Poll::Ready(Ok(n))
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_after_own(cx, |inner, cx| inner.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.get_mut().poll_after_own(cx, |inner, cx| inner.poll_shutdown(cx))
    }
}

/// Where the writer is in the stream of responses.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Frames {
    /// Between responses: the next byte starts a status line.
    Boundary,
    /// In a response head, `matched` bytes into its closing blank line, with `body` bytes to follow.
    Head { matched: usize, body: u64 },
    /// In a response body.
    Body { left: u64 },
    /// Lost track of the framing: nothing is rewritten any more.
    Lost,
}

impl Frames {
    /// Follows `n` bytes of `bufs` written to the socket.
    fn advance(&mut self, bufs: &[IoSlice<'_>], mut n: usize, activity: &Activity) {
        for buf in bufs {
            let mut at = 0;
            while at < buf.len() && n > 0 {
                let bytes = &buf[at..(at + n).min(buf.len())];
                let used = self.step(bytes, activity);
                at += used;
                n -= used;
            }
            if n == 0 {
                return;
            }
        }
    }

    /// Consumes a prefix of `bytes`; returns how much.
    fn step(&mut self, bytes: &[u8], activity: &Activity) -> usize {
        match *self {
            Frames::Lost => bytes.len(),
            Frames::Boundary => {
                *self = match status_of(bytes) {
                    // `100 Continue` is written while the request is in service: no body, and
                    // not the announced response.
                    Some(status) if status.is_informational() => Frames::Head { matched: 0, body: 0 },
                    Some(_) => match activity.take_announced() {
                        Some(body) => Frames::Head { matched: 0, body },
                        None => Frames::Lost,
                    },
                    None => Frames::Lost,
                };
                0
            }
            Frames::Head { mut matched, body } => {
                const END: &[u8] = b"\r\n\r\n";
                for (i, &byte) in bytes.iter().enumerate() {
                    matched = if byte == END[matched] {
                        matched + 1
                    } else if byte == b'\r' {
                        1
                    } else {
                        0
                    };
                    if matched == END.len() {
                        *self = if body == 0 { Frames::Boundary } else { Frames::Body { left: body } };
                        return i + 1;
                    }
                }
                *self = Frames::Head { matched, body };
                bytes.len()
            }
            Frames::Body { left } => {
                let used = (bytes.len() as u64).min(left);
                *self = if used == left { Frames::Boundary } else { Frames::Body { left: left - used } };
                used as usize
            }
        }
    }
}

/// The status of a response whose head starts `bytes`, if they start with a status line.
fn status_of(bytes: &[u8]) -> Option<StatusCode> {
    let rest = bytes.strip_prefix(b"HTTP/1.1 ").or_else(|| bytes.strip_prefix(b"HTTP/1.0 "))?;
    StatusCode::from_bytes(rest.get(..3)?).ok()
}

/// If `first` (the start of a write at a response boundary) is one of hyper's own error responses
/// (no response announced, a status hyper answers parse errors with, and the whole head here),
/// returns its length and the JSON response to send instead.
fn replace_automatic_error(first: &[u8], activity: &Activity) -> Option<(usize, Vec<u8>)> {
    let error = match status_of(first)? {
        StatusCode::BAD_REQUEST => ApiError::MalformedRequest,
        StatusCode::URI_TOO_LONG => ApiError::UriTooLong { limit: MAX_URI_LEN },
        StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE => ApiError::HeadersTooLarge { limit: MAX_HEAD_LEN },
        _ => return None,
    };
    if activity.has_announced() {
        return None;
    }
    let head_len = first.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = &first[..head_len];
    let date = head.split(|&b| b == b'\n').find(|line| line.len() > 5 && line[..5].eq_ignore_ascii_case(b"date:"));
    let (status, headers, body) = error.into_parts();
    Some((head_len, encode_response(status, &headers, &body, date)))
}

/// A complete HTTP/1.1 response; `date` is a `Date:` line to keep (from hyper's own head).
pub(super) fn encode_response(status: StatusCode, headers: &HeaderMap, body: &[u8], date: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(256 + body.len());
    out.extend_from_slice(
        format!("HTTP/1.1 {} {}\r\n", status.as_str(), status.canonical_reason().unwrap_or("")).as_bytes(),
    );
    match date {
        Some(line) => {
            out.extend_from_slice(line.strip_suffix(b"\r").unwrap_or(line));
            out.extend_from_slice(b"\r\n");
        }
        None => out.extend_from_slice(
            format!("date: {}\r\n", httpdate::fmt_http_date(std::time::SystemTime::now())).as_bytes(),
        ),
    }
    for (name, value) in headers {
        out.extend_from_slice(name.as_str().as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(value.as_bytes());
        out.extend_from_slice(b"\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::connections::Connections;

    fn activity() -> Arc<Activity> {
        match Connections::new(1).admit(Instant::now()) {
            crate::api::connections::Admission::Admitted(registration) => registration.activity.clone(),
            _ => unreachable!(),
        }
    }

    #[test]
    fn the_framing_follows_announced_responses_and_informational_heads() {
        let activity = activity();
        let mut frames = Frames::Boundary;
        let continue_head = b"HTTP/1.1 100 Continue\r\n\r\n";
        frames.advance(&[IoSlice::new(continue_head)], continue_head.len(), &activity);
        assert_eq!(frames, Frames::Boundary);
        activity.enter_service();
        activity.leave_service(Instant::now(), 5);
        let head = b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n";
        // A partial write: the head and two body bytes, then the rest.
        frames.advance(&[IoSlice::new(head), IoSlice::new(b"hello")], head.len() + 2, &activity);
        assert_eq!(frames, Frames::Body { left: 3 });
        frames.advance(&[IoSlice::new(b"llo")], 3, &activity);
        assert_eq!(frames, Frames::Boundary);
        // A body that looks like one of hyper's errors is a body, not a head.
        let tricky = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
        activity.leave_service(Instant::now(), tricky.len() as u64);
        let head = b"HTTP/1.1 200 OK\r\n\r\n";
        frames.advance(&[IoSlice::new(head)], head.len(), &activity);
        assert!(matches!(frames, Frames::Body { .. }));
        assert!(!activity.has_announced());
        // Nothing announced at a boundary and no status line: lost, so nothing is rewritten.
        let mut frames = Frames::Boundary;
        frames.advance(&[IoSlice::new(b"garbage")], 7, &activity);
        assert_eq!(frames, Frames::Lost);
    }

    #[test]
    fn hyper_error_heads_become_json_keeping_status_and_date() {
        let activity = activity();
        let head = b"HTTP/1.1 414 URI Too Long\r\ncontent-length: 0\r\ndate: Tue, 01 Dec 2026 10:00:00 GMT\r\n\r\n";
        let (used, replacement) = replace_automatic_error(head, &activity).unwrap();
        assert_eq!(used, head.len());
        let text = String::from_utf8(replacement).unwrap();
        assert!(text.starts_with("HTTP/1.1 414 URI Too Long\r\ndate: Tue, 01 Dec 2026 10:00:00 GMT\r\n"), "{text}");
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.contains("content-type: application/json") && head.contains("connection: close"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!((json["error"].as_str(), json["limit"].as_u64()), (Some("uri_too_long"), Some(65534)));
        // A status the service could have sent is not touched while a response is announced.
        activity.leave_service(Instant::now(), 0);
        assert!(replace_automatic_error(b"HTTP/1.1 400 Bad Request\r\n\r\n", &activity).is_none());
        assert!(replace_automatic_error(b"HTTP/1.1 200 OK\r\n\r\n", &activity).is_none());
    }
}
