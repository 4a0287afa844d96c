//! The server's connections, against the real server in-process on 127.0.0.1:0, spoken to over raw
//! sockets to control every byte: a request that never finishes is answered `408` and closed, an
//! idle connection is closed after its own timeout, a slowloris is cut off at the header timeout,
//! the connection cap makes room by closing idle connections (and says `503` when it cannot), and
//! the errors hyper answers itself carry the same JSON bodies as every other error.

mod common;

use std::time::{Duration, Instant};

use common::wait::eventually;
use common::{get, put, try_request, TestNode};
use hyper::{Method, StatusCode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A response read off a raw socket.
#[derive(Debug)]
struct RawReply {
    status: u16,
    head: String,
    body: Vec<u8>,
}

impl RawReply {
    fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {} {}", self.head, String::from_utf8_lossy(&self.body)))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().skip(1).find_map(|line| {
            let (key, value) = line.split_once(':')?;
            key.trim().eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// Checks that this is a one-line JSON error with `code`, as every error of the API is.
    fn assert_json_error(&self, status: u16, code: &str) {
        assert_eq!(self.status, status, "{} {}", self.head, String::from_utf8_lossy(&self.body));
        assert_eq!(self.header("content-type"), Some("application/json"), "{}", self.head);
        assert_eq!(self.json()["error"], code, "{}", self.head);
        assert!(self.body.ends_with(b"\n") && self.body.iter().filter(|&&b| b == b'\n').count() == 1);
    }
}

/// A raw client connection, with what was read past the last response.
struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl Conn {
    async fn open(node: &TestNode) -> Conn {
        Conn::open_at(node.config.http_addr).await
    }

    async fn open_at(addr: std::net::SocketAddr) -> Conn {
        Conn { stream: TcpStream::connect(addr).await.unwrap(), buf: Vec::new() }
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).await.unwrap();
    }

    /// Reads more bytes; false at end of stream.
    async fn fill(&mut self) -> Result<bool, String> {
        let mut chunk = [0u8; 16 * 1024];
        let n = self.stream.read(&mut chunk).await.map_err(|e| e.to_string())?;
        self.buf.extend_from_slice(&chunk[..n]);
        Ok(n > 0)
    }

    /// Reads one response (head, then a `Content-Length` body unless it answers a HEAD or is a
    /// 304), or fails after [`WAIT`].
    async fn reply(&mut self, head_request: bool) -> Result<RawReply, String> {
        tokio::time::timeout(WAIT, async {
            let head_end = loop {
                if let Some(at) = self.buf.windows(4).position(|w| w == b"\r\n\r\n") {
                    break at + 4;
                }
                if !self.fill().await? {
                    return Err(format!("closed before a response head: {:?}", String::from_utf8_lossy(&self.buf)));
                }
            };
            let head = String::from_utf8_lossy(&self.buf[..head_end]).into_owned();
            let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).ok_or("no status")?;
            let mut reply = RawReply { status, head, body: Vec::new() };
            let length: usize = reply.header("content-length").and_then(|v| v.parse().ok()).unwrap_or(0);
            let length = if head_request || status == 304 { 0 } else { length };
            while self.buf.len() < head_end + length {
                if !self.fill().await? {
                    return Err("closed in a response body".into());
                }
            }
            reply.body = self.buf[head_end..head_end + length].to_vec();
            self.buf.drain(..head_end + length);
            Ok(reply)
        })
        .await
        .map_err(|_| format!("no response within {WAIT:?}"))?
    }

    /// Waits (at most [`WAIT`]) for the server to close the connection; returns how long it took.
    async fn closed(&mut self) -> Result<Duration, String> {
        let started = Instant::now();
        tokio::time::timeout(WAIT, async {
            loop {
                match self.fill().await {
                    Ok(false) | Err(_) => return started.elapsed(),
                    Ok(true) => {}
                }
            }
        })
        .await
        .map_err(|_| format!("still open after {WAIT:?}"))
    }
}

const WAIT: Duration = Duration::from_secs(10);
const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: t\r\n\r\n";

fn closed_count(metrics: &str, reason: &str) -> usize {
    let prefix = format!("fekv_http_connections_closed_total{{reason=\"{reason}\"}} ");
    metrics.lines().find_map(|l| l.strip_prefix(&prefix)).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_that_never_arrives_is_408_and_changes_nothing() {
    let node = TestNode::start(|c| c.http_body_timeout = Duration::from_secs(1)).await;
    assert_eq!(put(&node.url("/fekv/k"), "before").await.status, StatusCode::OK);
    let mut conn = Conn::open(&node).await;
    conn.send(b"PUT /fekv/k HTTP/1.1\r\nHost: t\r\nContent-Length: 1000\r\n\r\nhello").await;
    let reply = conn.reply(false).await.unwrap();
    reply.assert_json_error(408, "body_timeout");
    assert_eq!(reply.header("connection"), Some("close"));
    conn.closed().await.unwrap();
    assert_eq!(get(&node.url("/fekv/k")).await.text(), "before");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn headers_that_never_end_are_408_at_the_header_timeout() {
    let node = TestNode::start(|c| c.http_header_timeout = Duration::from_secs(1)).await;
    let mut conn = Conn::open(&node).await;
    let started = Instant::now();
    conn.send(b"GET /fekv/k HTTP/1.1\r\nHost: t\r\n").await;
    let reply = conn.reply(false).await.unwrap();
    assert!(started.elapsed() >= Duration::from_secs(1), "answered before the timeout: {reply:?}");
    reply.assert_json_error(408, "header_timeout");
    conn.closed().await.unwrap();
    // A connection that sends nothing at all is closed at the header timeout too, unanswered.
    let mut silent = Conn::open(&node).await;
    assert!(silent.closed().await.unwrap() >= Duration::from_millis(900));
    assert!(silent.buf.is_empty(), "{:?}", String::from_utf8_lossy(&silent.buf));
    node.stop().await;
}

/// The idle timeout is its own: a keep-alive connection outlives the (shorter) header timeout
/// between requests, and is closed once idle for its own timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_keep_alive_connection_is_closed_after_the_idle_timeout() {
    let node = TestNode::start(|c| {
        c.http_header_timeout = Duration::from_secs(1);
        c.http_idle_timeout = Duration::from_secs(4);
    })
    .await;
    let mut conn = Conn::open(&node).await;
    conn.send(HEALTH).await;
    assert_eq!(conn.reply(false).await.unwrap().status, 200);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // The server's idle clock starts once it has answered, after this request left: timed from
    // here, never from when the answer was read (that was 1 ms short once on a loaded machine).
    let asked = Instant::now();
    conn.send(HEALTH).await;
    assert_eq!(conn.reply(false).await.unwrap().status, 200, "closed past the header timeout");
    conn.closed().await.unwrap();
    let idle = asked.elapsed();
    assert!(idle >= Duration::from_secs(4), "closed {idle:?} after the last request");
    assert_eq!(closed_count(&get(&node.url("/metrics")).await.text(), "idle_timeout"), 1);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_of_500_connections_is_cut_off_at_the_header_timeout_while_others_are_served() {
    const SLOW: usize = 500;
    let header_timeout = Duration::from_secs(2);
    let node = TestNode::start(|c| c.http_header_timeout = header_timeout).await;
    let addr = node.config.http_addr;
    let attackers: Vec<_> = (0..SLOW)
        .map(|i| {
            tokio::spawn(async move {
                let mut stream = TcpStream::connect(addr).await.map_err(|e| e.to_string())?;
                let started = Instant::now();
                stream.write_all(b"GET /fekv/k HTTP/1.1\r\n").await.map_err(|e| e.to_string())?;
                // One more header line every 300 ms, until the server hangs up.
                let mut sink = [0u8; 1024];
                let mut line = 0;
                loop {
                    line += 1;
                    tokio::select! {
                        read = stream.read(&mut sink) => match read {
                            Ok(0) | Err(_) => return Ok(started.elapsed()),
                            Ok(_) => {} // the 408
                        },
                        _ = tokio::time::sleep(Duration::from_millis(300)) => {
                            let header = format!("X-Slow-{i}-{line}: still sending\r\n");
                            if stream.write_all(header.as_bytes()).await.is_err() {
                                return Ok(started.elapsed());
                            }
                        }
                    }
                    if started.elapsed() > Duration::from_secs(30) {
                        return Err(format!("connection {i} still open after 30 s"));
                    }
                }
            })
        })
        .collect();
    // While they trickle (at least half of them connected), others are served.
    eventually(WAIT, "the slow connections open", || async {
        let metrics = get(&node.url("/metrics")).await.text();
        let open = metrics.lines().find_map(|l| l.strip_prefix("fekv_http_connections ")?.parse::<usize>().ok());
        if open.is_some_and(|open| open >= SLOW / 2) {
            Ok(())
        } else {
            Err(format!("{open:?} open"))
        }
    })
    .await;
    assert_eq!(put(&node.url("/fekv/k"), "v").await.status, StatusCode::OK);
    assert_eq!(get(&node.url("/fekv/k")).await.text(), "v");
    let mut longest = Duration::ZERO;
    for attacker in attackers {
        longest = longest.max(attacker.await.unwrap().unwrap());
    }
    // Each was cut off at the header timeout of its first byte; the slack is for a loaded machine.
    assert!(longest < header_timeout + Duration::from_secs(8), "a slow connection lasted {longest:?}");
    assert_eq!(closed_count(&get(&node.url("/metrics")).await.text(), "header_timeout"), SLOW);
    node.stop().await;
}

/// Opens a connection, has one request answered, and keeps it open: an idle keep-alive connection.
async fn idle_connection(node: &TestNode) -> Conn {
    let mut conn = Conn::open(node).await;
    conn.send(HEALTH).await;
    assert_eq!(conn.reply(false).await.unwrap().status, 200);
    conn
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_connection_cap_new_clients_are_served_by_closing_idle_connections() {
    let node = TestNode::start(|c| c.http_max_connections = 8).await;
    let mut old = Vec::new();
    for _ in 0..8 {
        old.push(idle_connection(&node).await);
    }
    // Eight more clients, each keeping its connection: every one is served, in the place of an
    // old idle one.
    let mut new = Vec::new();
    for _ in 0..8 {
        new.push(idle_connection(&node).await);
    }
    for conn in &mut old {
        conn.closed().await.unwrap();
    }
    // The new ones are still open: a request on each is answered.
    for conn in &mut new {
        conn.send(HEALTH).await;
        assert_eq!(conn.reply(false).await.unwrap().status, 200);
    }
    drop(new);
    assert!(closed_count(&get(&node.url("/metrics")).await.text(), "evicted") >= 8);
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn when_every_connection_is_in_a_request_a_new_one_is_503_until_one_ends() {
    let node = TestNode::start(|c| {
        c.http_max_connections = 4;
        c.http_body_timeout = Duration::from_secs(60);
    })
    .await;
    assert_eq!(put(&node.url("/fekv/k"), "before").await.status, StatusCode::OK);
    let mut busy = Vec::new();
    for _ in 0..4 {
        let mut conn = Conn::open(&node).await;
        conn.send(b"PUT /fekv/k HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nhalf").await;
        busy.push(conn);
    }
    // The four are in their handlers waiting for their bodies, or about to be: none is idle, so
    // none is closed for a newcomer.
    let mut conn = Conn::open(&node).await;
    conn.send(HEALTH).await;
    let refused = conn.reply(false).await.unwrap();
    refused.assert_json_error(503, "too_many_connections");
    assert_eq!(refused.json()["limit"], 4);
    assert_eq!(refused.header("retry-after"), Some("1"));
    drop(busy);
    eventually(WAIT, "room after the busy connections ended", || async {
        try_request(Method::GET, &node.url("/health"), "", &[]).await.is_ok_and(|r| r.status == StatusCode::OK)
    })
    .await;
    assert_eq!(get(&node.url("/fekv/k")).await.text(), "before");
    node.stop().await;
}

/// Sends `request` on a fresh connection and reads the answer.
async fn raw_exchange(node: &TestNode, request: &[u8]) -> RawReply {
    let mut conn = Conn::open(node).await;
    conn.send(request).await;
    conn.reply(false).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_hyper_cannot_parse_get_the_same_json_errors_as_any_other() {
    let node = TestNode::start(|_| {}).await;
    assert_eq!(put(&node.url("/fekv/k"), "before").await.status, StatusCode::OK);
    let long_url = format!("GET /fekv/{} HTTP/1.1\r\nHost: t\r\n\r\n", "x".repeat(100 * 1024));
    let reply = raw_exchange(&node, long_url.as_bytes()).await;
    reply.assert_json_error(414, "uri_too_long");
    assert_eq!(reply.json()["limit"], 65534);
    assert!(reply.header("date").is_some(), "{}", reply.head);
    raw_exchange(&node, b"GET /fekv/\xff\xfe HTTP/1.1\r\nHost: t\r\n\r\n").await.assert_json_error(400, "bad_request");
    raw_exchange(&node, b"PUT /fekv/a b HTTP/1.1\r\nHost: t\r\nContent-Length: 1\r\n\r\nx")
        .await
        .assert_json_error(400, "bad_request");
    raw_exchange(&node, b"HELLO\r\n\r\n").await.assert_json_error(400, "bad_request");
    let huge_header = format!("GET /fekv/k HTTP/1.1\r\nHost: t\r\nX-Big: {}\r\n\r\n", "y".repeat(500 * 1024));
    raw_exchange(&node, huge_header.as_bytes()).await.assert_json_error(431, "headers_too_large");
    assert_eq!(get(&node.url("/fekv/k")).await.text(), "before");
    assert_eq!(closed_count(&get(&node.url("/metrics")).await.text(), "malformed_request"), 5);
    node.stop().await;
}

/// The writer follows response framing to find hyper's own responses: pipelined requests whose
/// answers include a HEAD (no body), a 304 and a value that reads like one of hyper's error heads
/// all come through byte for byte, and only the malformed request at the end is rewritten.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_responses_pass_through_untouched_before_a_malformed_request() {
    let node = TestNode::start(|_| {}).await;
    let lookalike = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n";
    let stored = put(&node.url("/fekv/tricky"), lookalike).await;
    assert_eq!(stored.status, StatusCode::OK);
    let etag = stored.header("etag").unwrap().to_string();
    let mut conn = Conn::open(&node).await;
    let pipeline = format!(
        "HEAD /fekv/tricky HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /fekv/tricky HTTP/1.1\r\nHost: t\r\nIf-None-Match: {etag}\r\n\r\n\
         GET /fekv/tricky HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /fekv/absent HTTP/1.1\r\nHost: t\r\n\r\n\
         GET /fekv/a b HTTP/1.1\r\nHost: t\r\n\r\n"
    );
    conn.send(pipeline.as_bytes()).await;
    let head = conn.reply(true).await.unwrap();
    assert_eq!(head.status, 200, "{}", head.head);
    assert_eq!(conn.reply(false).await.unwrap().status, 304);
    let value = conn.reply(false).await.unwrap();
    assert_eq!((value.status, String::from_utf8_lossy(&value.body).as_ref()), (200, lookalike));
    conn.reply(false).await.unwrap().assert_json_error(404, "key_not_found");
    conn.reply(false).await.unwrap().assert_json_error(400, "bad_request");
    conn.closed().await.unwrap();
    assert!(conn.buf.is_empty(), "bytes after the last response: {:?}", String::from_utf8_lossy(&conn.buf));
    node.stop().await;
}

/// hyper's `100 Continue` is a head of its own, written while the request is in service: the writer
/// passes it through and still knows where the real response and the next ones start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_100_continue_passes_through_and_keeps_the_framing() {
    let node = TestNode::start(|_| {}).await;
    let mut conn = Conn::open(&node).await;
    conn.send(b"PUT /fekv/k HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: 5\r\n\r\n").await;
    assert_eq!(conn.reply(false).await.unwrap().status, 100);
    conn.send(b"hello").await;
    let stored = conn.reply(false).await.unwrap();
    assert_eq!((stored.status, &stored.body[..]), (200, &b"OK"[..]));
    conn.send(b"GET /fekv/k HTTP/1.1\r\nHost: t\r\n\r\nGET /a b HTTP/1.1\r\n\r\n").await;
    assert_eq!(&conn.reply(false).await.unwrap().body[..], b"hello");
    conn.reply(false).await.unwrap().assert_json_error(400, "bad_request");
    node.stop().await;
}

/// A client that asks for responses and never reads them would hold its connection (and a
/// descriptor) forever once the socket buffers are full: a write making no progress for
/// `http_body_timeout` ends the connection.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_disconnected_after_the_body_timeout() {
    let node = TestNode::start(|c| {
        c.max_value_size = bytesize::ByteSize::mib(8);
        c.http_body_timeout = Duration::from_secs(1);
    })
    .await;
    assert_eq!(put(&node.url("/fekv/big"), vec![b'b'; 8 << 20]).await.status, StatusCode::OK);
    let mut conn = Conn::open(&node).await;
    // 64 MiB of answers asked for, far past what loopback's socket buffers hold, and none read.
    conn.send(&b"GET /fekv/big HTTP/1.1\r\nHost: t\r\n\r\n".repeat(8)).await;
    eventually(WAIT, "the connection that reads nothing closed", || async {
        closed_count(&get(&node.url("/metrics")).await.text(), "send_timeout") > 0
    })
    .await;
    // What it does read ends early: the connection was closed mid-answer.
    let mut read = 0;
    let mut sink = vec![0u8; 1 << 20];
    while let Ok(Ok(n)) = tokio::time::timeout(WAIT, conn.stream.read(&mut sink)).await {
        if n == 0 {
            break;
        }
        read += n;
    }
    assert!(read < 8 * (8 << 20), "read all {read} bytes");
    node.stop().await;
}

/// A client that shuts its write side once its request is sent (`nc -N`, `shutdown(SHUT_WR)`) still
/// gets its answers, pipelined ones too, and its write is applied; a half-close inside a request is
/// the end of that request (a body cut short is `400`). hyper's default dropped the whole
/// connection unanswered at the end of the stream, the write with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_half_closes_after_its_requests_still_gets_the_answers() {
    let node = TestNode::start(|_| {}).await;
    let mut conn = Conn::open(&node).await;
    conn.send(b"PUT /fekv/k HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n\r\nhello").await;
    conn.send(b"GET /fekv/k HTTP/1.1\r\nHost: t\r\n\r\n").await;
    conn.stream.shutdown().await.unwrap();
    let written = conn.reply(false).await.unwrap();
    assert_eq!(written.status, 200, "{written:?}");
    let read = conn.reply(false).await.unwrap();
    assert_eq!((read.status, &read.body[..]), (200, &b"hello"[..]), "{read:?}");
    conn.closed().await.unwrap();
    assert_eq!(get(&node.url("/fekv/k")).await.text(), "hello");

    let mut cut = Conn::open(&node).await;
    cut.send(b"PUT /fekv/k HTTP/1.1\r\nHost: t\r\nContent-Length: 10\r\n\r\nabc").await;
    cut.stream.shutdown().await.unwrap();
    cut.reply(false).await.unwrap().assert_json_error(400, "bad_body");
    cut.closed().await.unwrap();
    assert_eq!(get(&node.url("/fekv/k")).await.text(), "hello");
    node.stop().await;
}

/// The `--metrics-addr` listener, which has no connection cap, still closes connections that hold
/// a descriptor without sending a request: a silent one, one whose headers never end, and a
/// keep-alive one gone idle, each at the header timeout (they stayed open forever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_metrics_listener_closes_silent_slow_and_idle_connections_at_the_header_timeout() {
    let node = TestNode::start(|c| c.http_header_timeout = Duration::from_secs(1)).await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let served = tokio::spawn(fekv::api::serve_metrics(listener, node.node().api_state(), async {
        let _ = stopped.await;
    }));
    let mut silent = Conn::open_at(addr).await;
    let mut slow = Conn::open_at(addr).await;
    slow.send(b"GET /metrics HTTP/1.1\r\nHost: t\r\n").await;
    let mut idle = Conn::open_at(addr).await;
    idle.send(HEALTH).await;
    assert_eq!(idle.reply(false).await.unwrap().status, 200);
    for (what, conn) in [("silent", &mut silent), ("slow", &mut slow), ("idle", &mut idle)] {
        let closed = conn.closed().await.unwrap_or_else(|e| panic!("the {what} connection: {e}"));
        assert!(closed < Duration::from_secs(5), "the {what} connection closed after {closed:?}");
    }
    // Closed, not refused: the listener keeps serving.
    let mut fresh = Conn::open_at(addr).await;
    fresh.send(HEALTH).await;
    assert_eq!(fresh.reply(false).await.unwrap().status, 200);
    let _ = stop.send(());
    served.await.unwrap();
    node.stop().await;
}
