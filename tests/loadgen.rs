//! `fekv bench` against a real node running in-process, and against tiny HTTP servers that redirect:
//! what the report says must be what the servers saw.

mod common;

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use clap::Parser;
use common::{get, TestNode};
use fekv::loadgen::report::Report;
use fekv::loadgen::{run, BenchArgs, BenchError};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use parking_lot::Mutex;

/// No run in these tests should come near this; it only turns a hang into a failure.
const RUN_DEADLINE: Duration = Duration::from_secs(20);

fn args(flags: &[&str]) -> BenchArgs {
    BenchArgs::try_parse_from(std::iter::once("bench").chain(flags.iter().copied()))
        .unwrap_or_else(|err| panic!("{flags:?}: {err}"))
}

/// Runs the bench with `flags` and returns its report and printed output.
async fn must_bench(flags: &[&str]) -> (Report, String) {
    let mut out = Vec::new();
    let report = tokio::time::timeout(RUN_DEADLINE, run(&args(flags), &mut out))
        .await
        .unwrap_or_else(|_| panic!("bench {flags:?} did not finish within {RUN_DEADLINE:?}"))
        .unwrap_or_else(|err| panic!("bench {flags:?}: {err}"));
    (report, String::from_utf8(out).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn put_run_counts_every_request_and_the_keys_land_in_the_node() {
    let node = TestNode::start(|_| {}).await;
    let pid = std::process::id().to_string();
    // 500 PUTs over 20 keys: every key is written (missing one has odds of (19/20)^500).
    let flags = [
        "--endpoints",
        &node.base,
        "--requests",
        "500",
        "--connections",
        "8",
        "--workload",
        "put",
        "--keys",
        "20",
        "--server-pid",
        &pid,
    ];
    let (report, text) = must_bench(&flags).await;
    assert_eq!((report.requests, report.successes, report.errors.total), (500, 500, 0), "{text}");
    assert_eq!(report.ops["put"].requests, 500);
    assert_eq!(report.connects, 8, "one keep-alive connection per worker: {text}");
    assert_eq!(report.server.proposals, Some(500), "{text}");
    assert!(report.server.commits.is_some_and(|c| (1..=500).contains(&c)), "{text}");
    assert!(report.server.proposals_per_commit.is_some_and(|r| r >= 1.0), "{text}");
    assert!(report.server.cpu_us_per_request.is_some_and(|us| us > 0.0), "{text}");
    assert!(report.latency_ms.p50 > 0.0 && report.latency_ms.p50 <= report.latency_ms.max, "{text}");
    assert!(text.contains("Requests:      500"), "{text}");
    assert!(text.contains("proposals/commit"), "{text}");
    assert!(text.contains("µs/request"), "{text}");
    for index in [0, 7, 19] {
        let reply = get(&node.url(&format!("/fekv/k{index:08}"))).await;
        assert_eq!(reply.status, StatusCode::OK, "k{index:08}");
        assert_eq!(&reply.body[..], &[b'v'; 100][..]);
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_report_carries_the_server_group_commit_figures() {
    let node = TestNode::start(|_| {}).await;
    let flags =
        ["--endpoints", &node.base, "--requests", "100", "--connections", "4", "--json", "--value-size", "1KiB"];
    let (_, text) = must_bench(&flags).await;
    let json: serde_json::Value = serde_json::from_str(text.trim()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(text.trim().lines().count(), 1, "one JSON object: {text}");
    assert_eq!(json["requests"], 100);
    assert_eq!(json["settings"]["value_size"], 1024);
    assert_eq!(json["server"]["proposals"], 100);
    assert!(json["server"]["commits"].as_u64().is_some_and(|c| c >= 1), "{text}");
    assert!(json["server"]["proposals_per_commit"].as_f64().is_some(), "{text}");
    for field in ["p50", "p90", "p99", "p99_9", "max"] {
        assert!(json["latency_ms"][field].as_f64().is_some(), "{field}: {text}");
    }
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefilled_gets_never_miss_and_prefill_is_not_counted() {
    let node = TestNode::start(|_| {}).await;
    let flags = [
        "--endpoints",
        &node.base,
        "--prefill",
        "--workload",
        "get",
        "--keys",
        "300",
        "--requests",
        "400",
        "--connections",
        "4",
    ];
    let (report, text) = must_bench(&flags).await;
    assert_eq!((report.requests, report.successes, report.misses, report.errors.total), (400, 400, 0, 0), "{text}");
    assert_eq!(report.ops.keys().copied().collect::<Vec<_>>(), ["get"]);
    // The 300 prefill PUTs happened before the counters were first read.
    assert_eq!(report.server.proposals, Some(0), "{text}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gets_of_absent_keys_are_misses_not_errors() {
    let node = TestNode::start(|_| {}).await;
    let flags = ["--endpoints", &node.base, "--workload", "get", "--requests", "50", "--connections", "2"];
    let (report, text) = must_bench(&flags).await;
    assert_eq!((report.successes, report.misses, report.errors.total), (0, 50, 0), "{text}");
    assert!(report.throughput_rps > 0.0, "misses are answers: {text}");
    node.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mixed_half_splits_reads_and_writes_evenly() {
    let node = TestNode::start(|_| {}).await;
    let flags = [
        "--endpoints",
        &node.base,
        "--workload",
        "mixed:0.5",
        "--requests",
        "1000",
        "--connections",
        "4",
        "--keys",
        "50",
    ];
    let (report, text) = must_bench(&flags).await;
    let (puts, gets) = (report.ops["put"].requests, report.ops["get"].requests);
    assert_eq!(puts + gets, 1000);
    // Binomial(1000, 0.5) has a standard deviation of ~16: ±100 is six of them.
    assert!((400..=600).contains(&gets), "{gets} GETs of 1000: {text}");
    assert_eq!(report.errors.total, 0, "{text}");
    assert!(text.contains("  get ") && text.contains("  put "), "per-op lines: {text}");
    node.stop().await;
}

/// A tiny HTTP server: answers every request with `respond(own base URL, path)`, and records the `/fekv/` requests
/// it gets as (method, path, body length).
struct TinyServer {
    base: String,
    seen: Arc<Mutex<Vec<(String, String, usize)>>>,
    _watchdog: common::wait::Watchdog,
}

impl TinyServer {
    async fn start(respond: impl Fn(&str, &str) -> Response<Full<Bytes>> + Send + Sync + 'static) -> TinyServer {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let (respond, recorded, own_base) = (Arc::new(respond), seen.clone(), base.clone());
        // The accept loop ends with the test's runtime.
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (respond, recorded, own_base) = (respond.clone(), recorded.clone(), own_base.clone());
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (respond, recorded, own_base) = (respond.clone(), recorded.clone(), own_base.clone());
                    async move {
                        let (method, path) = (req.method().to_string(), req.uri().path().to_string());
                        let body = req.into_body().collect().await.map(|b| b.to_bytes().len()).unwrap_or(0);
                        if path.starts_with("/fekv/") {
                            recorded.lock().push((method, path.clone(), body));
                        }
                        Ok::<_, Infallible>(respond(&own_base, &path))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        TinyServer { base, seen, _watchdog: common::wait::Watchdog::default() }
    }

    /// A server that answers every request `200 OK`.
    async fn leader() -> TinyServer {
        TinyServer::start(|_, _| Response::new(Full::new(Bytes::from_static(b"OK")))).await
    }

    /// A server that sends every request on to `target` with `307` (keeping the path).
    async fn redirecting_to(target: &str) -> TinyServer {
        let target = target.to_string();
        TinyServer::start(move |_, path| redirect(&format!("{target}{path}"))).await
    }

    /// A server that redirects every request to itself.
    async fn redirect_loop() -> TinyServer {
        TinyServer::start(|own_base, path| redirect(&format!("{own_base}{path}"))).await
    }

    fn kv_requests(&self) -> Vec<(String, String, usize)> {
        self.seen.lock().clone()
    }
}

fn redirect(location: &str) -> Response<Full<Bytes>> {
    Response::builder()
        .status(StatusCode::TEMPORARY_REDIRECT)
        .header("location", location)
        .body(Full::new(Bytes::new()))
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirects_are_followed_once_per_endpoint_then_go_straight_to_the_leader() {
    let leader = TinyServer::leader().await;
    let (follower_a, follower_b) =
        (TinyServer::redirecting_to(&leader.base).await, TinyServer::redirecting_to(&leader.base).await);
    let endpoints = format!("{},{}", follower_a.base, follower_b.base);
    // Two connections over two endpoints: one worker per endpoint, so exactly one redirect each.
    let flags = ["--endpoints", &endpoints, "--requests", "100", "--connections", "2", "--value-size", "64"];
    let (report, text) = must_bench(&flags).await;
    assert_eq!((report.requests, report.successes, report.errors.total), (100, 100, 0), "{text}");
    assert_eq!(report.redirects, 2, "{text}");
    assert_eq!(follower_a.kv_requests().len(), 1);
    assert_eq!(follower_b.kv_requests().len(), 1);
    let at_leader = leader.kv_requests();
    assert_eq!(at_leader.len(), 100);
    assert!(
        at_leader.iter().all(|(method, path, body)| method == "PUT" && path.starts_with("/fekv/k") && *body == 64),
        "the redirected request keeps its method, path and body: {at_leader:?}"
    );
    // The followers' metrics were not fekv's: the report says so and the run still succeeded.
    assert!(report.server.metrics_error.is_some(), "{text}");
    assert!(text.contains("metrics not available"), "{text}");
}

/// A node of a two-node cluster split at `k00000050`, leading one half: its `/status` says which, it
/// answers keys of its half and redirects the others to the other node (whose base URL is filled in
/// once both are listening).
fn half_leader(lower: bool, other: Arc<Mutex<String>>) -> impl Fn(&str, &str) -> Response<Full<Bytes>> {
    move |_, path| {
        let (start, end) = if lower { ("", "k00000050") } else { ("k00000050", "") };
        if path == "/status" {
            let regions = serde_json::json!({ "regions": [{ "start_key": start, "end_key": end, "role": "leader" }] });
            return Response::new(Full::new(Bytes::from(regions.to_string())));
        }
        let key = path.trim_start_matches("/fekv/");
        if key >= start && (end.is_empty() || key < end) {
            Response::new(Full::new(Bytes::from_static(b"OK")))
        } else {
            redirect(&format!("{}{path}", other.lock()))
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_goes_to_the_leader_of_its_range_without_redirects() {
    let (to_b, to_a) = (Arc::new(Mutex::new(String::new())), Arc::new(Mutex::new(String::new())));
    let a = TinyServer::start(half_leader(true, to_b.clone())).await;
    let b = TinyServer::start(half_leader(false, to_a.clone())).await;
    (*to_b.lock(), *to_a.lock()) = (b.base.clone(), a.base.clone());
    let endpoints = format!("{},{}", a.base, b.base);
    let flags = ["--endpoints", &endpoints, "--requests", "300", "--connections", "4", "--keys", "100"];
    let (report, text) = must_bench(&flags).await;
    assert_eq!((report.successes, report.errors.total, report.redirects), (300, 0, 0), "{text}");
    let (at_a, at_b) = (a.kv_requests(), b.kv_requests());
    assert_eq!(at_a.len() + at_b.len(), 300);
    assert!(at_a.iter().all(|(_, path, _)| path.as_str() < "/fekv/k00000050"), "{at_a:?}");
    assert!(at_b.iter().all(|(_, path, _)| path.as_str() >= "/fekv/k00000050"), "{at_b:?}");
    // Each worker keeps a connection to each node it sends to, instead of reconnecting on every switch.
    assert!(report.connects <= 8, "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_workers_share_what_a_redirect_taught() {
    let leader = TinyServer::leader().await;
    let follower = TinyServer::redirecting_to(&leader.base).await;
    let flags = ["--endpoints", &follower.base, "--requests", "200", "--connections", "4"];
    let (report, text) = must_bench(&flags).await;
    assert_eq!((report.successes, report.errors.total), (200, 0), "{text}");
    // Workers that sent before the first redirect was remembered each pay one; nobody pays twice.
    assert!((1..=4).contains(&report.redirects), "{text}");
    assert_eq!(follower.kv_requests().len() as u64, report.redirects);
    assert_eq!(leader.kv_requests().len(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redirect_loops_stop_after_three_hops_and_count_as_errors() {
    let looping = TinyServer::redirect_loop().await;
    let flags = ["--endpoints", &looping.base, "--requests", "5", "--connections", "1", "--workload", "delete"];
    let flags = [&flags[..], &["--max-error-rate", "1"]].concat();
    let (report, text) = must_bench(&flags).await;
    assert_eq!((report.requests, report.errors.other, report.successes), (5, 5, 0), "{text}");
    assert_eq!(report.redirects, 15, "three hops per request: {text}");
}

#[test]
fn bad_arguments_are_refused_with_the_reason() {
    let parse = |flags: &[&str]| BenchArgs::try_parse_from(std::iter::once("bench").chain(flags.iter().copied()));
    let err = parse(&["--workload", "mixed:1.5"]).unwrap_err().to_string();
    assert!(err.contains("mixed:1.5") && err.contains("[0,1]"), "{err}");
    let err = parse(&["--workload", "scan"]).unwrap_err().to_string();
    assert!(err.contains("expected put, get, delete or mixed:R"), "{err}");
    let err = parse(&["--duration", "5s", "--requests", "10"]).unwrap_err().to_string();
    assert!(err.contains("--duration") && err.contains("--requests"), "{err}");
    assert!(parse(&["--duration", "soon"]).is_err());
    assert!(parse(&["--value-size", "lots"]).is_err());
    assert!(parse(&["--distribution", "pareto"]).is_err());

    let invalid = |flags: &[&str]| parse(flags).unwrap().validate().unwrap_err();
    assert!(matches!(invalid(&["--keys", "0"]), BenchError::InvalidArgument { flag: "keys", .. }));
    assert!(matches!(invalid(&["--connections", "0"]), BenchError::InvalidArgument { flag: "connections", .. }));
    assert!(matches!(invalid(&["--requests", "0"]), BenchError::InvalidArgument { flag: "requests", .. }));
    assert!(matches!(invalid(&["--duration", "0s"]), BenchError::InvalidArgument { flag: "duration", .. }));
    assert!(matches!(invalid(&["--timeout", "0s"]), BenchError::InvalidArgument { flag: "timeout", .. }));
    let err = invalid(&["--endpoints", "https://127.0.0.1:3000"]);
    assert!(err.to_string().contains("--cacert"), "https:// needs the CA: {err}");
    let err = invalid(&["--endpoints", "ftp://127.0.0.1:3000"]);
    assert!(err.to_string().contains("only http:// and https://"), "{err}");
    assert!(matches!(
        invalid(&["--key-prefix", &"p".repeat(600)]),
        BenchError::InvalidArgument { flag: "key-prefix", .. }
    ));
    // Built in code rather than parsed, both bounds slip past clap; validation still refuses them.
    let mut both = parse(&["--requests", "10"]).unwrap();
    both.duration = Some(Duration::from_secs(1));
    assert!(matches!(both.validate(), Err(BenchError::ConflictingBounds)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreadable_server_pid_is_a_usage_error() {
    let mut out = Vec::new();
    let flags = args(&["--server-pid", &u32::MAX.to_string(), "--requests", "1", "--endpoints", "http://127.0.0.1:1"]);
    let err = run(&flags, &mut out).await.unwrap_err();
    assert!(matches!(err, BenchError::InvalidArgument { flag: "server-pid", .. }), "{err}");
    assert!(out.is_empty());
}

/// Runs the built `fekv` binary with `args`; fails the test if it runs for more than 10 s.
fn run_binary(args: &[&str]) -> (std::process::ExitStatus, String) {
    let run = common::process::run_fekv_with(args, Duration::from_secs(10), |command| {
        command.env_remove("RUST_BACKTRACE");
    });
    (run.status, run.stderr)
}

#[test]
fn the_binary_exits_non_zero_on_bad_flags_and_says_why() {
    let (status, stderr) = run_binary(&["bench", "--workload", "mixed:1.5"]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("the read fraction of 'mixed:1.5' is outside [0,1]"), "{stderr}");
    let (status, stderr) = run_binary(&["bench", "--keys", "0"]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("invalid --keys"), "{stderr}");
}

/// A server that answers every request with `status` and a JSON error body.
async fn failing_with(status: StatusCode) -> TinyServer {
    TinyServer::start(move |_, _| {
        let body = format!("{{\"error\":\"nope\",\"message\":\"answered {}\"}}\n", status.as_u16());
        let mut response = Response::new(Full::new(Bytes::from(body)));
        *response.status_mut() = status;
        response
    })
    .await
}

#[test]
fn a_run_whose_requests_all_fail_exits_non_zero_and_says_so() {
    // Nothing listens on port 1: every request fails to connect.
    let (status, stderr) =
        run_binary(&["bench", "--endpoints", "http://127.0.0.1:1", "--requests", "20", "--connections", "2"]);
    assert!(!status.success(), "{stderr}");
    assert!(stderr.contains("20 of 20 requests failed (100.0%), over --max-error-rate 0.01"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_error_rate_is_held_to_max_error_rate() {
    let refusing = failing_with(StatusCode::PAYLOAD_TOO_LARGE).await;
    let flags = args(&["--endpoints", &refusing.base, "--requests", "7", "--connections", "1"]);
    let mut out = Vec::new();
    let err = run(&flags, &mut out).await.unwrap_err();
    assert!(matches!(err, BenchError::TooManyErrors { errors: 7, requests: 7, .. }), "{err}");
    // The report is printed all the same.
    assert!(String::from_utf8(out).unwrap().contains("Errors:        7 (4xx 7)"));
    // A run allowed that many errors passes.
    must_bench(&["--endpoints", &refusing.base, "--requests", "7", "--connections", "1", "--max-error-rate", "1"])
        .await;
    let invalid = args(&["--max-error-rate", "1.5"]).validate().unwrap_err();
    assert!(matches!(invalid, BenchError::InvalidArgument { flag: "max-error-rate", .. }), "{invalid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_report_prints_only_what_applies_and_why_requests_failed() {
    // A PUT run whose every value is refused (as 2 MiB values are by a node's 1 MiB limit).
    let refusing = failing_with(StatusCode::PAYLOAD_TOO_LARGE).await;
    let flags = ["--endpoints", &refusing.base, "--requests", "7", "--connections", "1", "--max-error-rate", "1"];
    let (report, text) = must_bench(&flags).await;
    assert_eq!((report.errors.client_4xx, report.successes), (7, 0), "{text}");
    assert!(!text.contains("misses"), "a PUT run has no GETs to miss: {text}");
    assert!(text.contains("Errors:        7 (4xx 7)\n"), "only the classes that occurred: {text}");
    assert!(
        text.contains("First error:   PUT /fekv/k") && text.contains("answered 413 Payload Too Large: {\"error\""),
        "{text}"
    );
    assert!(text.contains("Latency (ms):  - (no request succeeded)"), "{text}");
    assert!(report.first_error.as_deref().is_some_and(|e| e.contains("413")), "{text}");

    // A clean GET run says how many missed, and has no error lines.
    let node = TestNode::start(|_| {}).await;
    let (_, text) = must_bench(&["--endpoints", &node.base, "--requests", "10", "--workload", "get"]).await;
    assert!(text.contains("Successes:     0 (+ 10 misses: 404 on GET)"), "{text}");
    assert!(text.contains("Errors:        0\n") && !text.contains("First error"), "{text}");
    node.stop().await;
}
