//! Users, roles and tokens with the real binary: a placement service and two nodes, auth set up and
//! switched on with `fekv ctl`, then the client API as curl would use it (Basic, Bearer), the admin
//! RPCs through `fekv ctl` as root and as a reader, a token's expiry, a restart that keeps enforcing
//! the last state, and `auth disable` opening everything again. Passwords are hashed at the minimal
//! cost (argon2 at its real cost takes about a second per check in a debug build).

mod common;

use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use common::process::{FekvProcess, Run};
use common::wait::eventually;
use common::{put_anywhere, try_request, Reply};
use hyper::{Method, StatusCode};

const ROOT: &str = "root:rootpw";
const ALICE: &str = "alice:alicepw";

fn basic(user_password: &str) -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(user_password))
}

async fn send(method: Method, url: &str, body: &str, authorization: Option<&str>) -> Reply {
    let headers: Vec<(&str, &str)> = authorization.map(|value| ("authorization", value)).into_iter().collect();
    try_request(method.clone(), url, Bytes::from(body.to_string()), &headers)
        .await
        .unwrap_or_else(|err| panic!("{method} {url}: {err}"))
}

/// `fekv ctl` as `user` (NAME:PASSWORD), if any; panics unless it succeeds.
fn ctl(placement: &str, user: Option<&str>, args: &[&str]) -> String {
    let run = ctl_as(placement, user, args);
    assert!(run.success, "fekv ctl {args:?}: {}", run.stderr);
    run.stdout
}

fn ctl_as(placement: &str, user: Option<&str>, args: &[&str]) -> Run {
    let mut all: Vec<&str> = user.map(|user| vec!["--user", user]).unwrap_or_default();
    all.extend_from_slice(args);
    common::process::ctl(placement, &all)
}

/// Polls `GET url` (with `authorization`) until it answers `status`; panics with the last answer.
async fn wait_status(url: &str, authorization: Option<&str>, status: StatusCode, what: &str) -> Reply {
    eventually(Duration::from_secs(20), &format!("{what}: GET {url} to answer {status}"), || async {
        let reply = send(Method::GET, url, "", authorization).await;
        if reply.status == status {
            Ok(reply)
        } else {
            Err(format!("{}: {}", reply.status, reply.text()))
        }
    })
    .await
}

fn start_node(dir: &std::path::Path, placement: &str) -> FekvProcess {
    FekvProcess::start_node_with(dir, placement, &["--auth-password-cost", "minimal", "--auth-token-ttl", "2s"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_roles_and_tokens_guard_the_client_api_and_the_admin_rpcs() {
    let dir = tempfile::tempdir().unwrap();
    let placement =
        FekvProcess::start_placement_with(&dir.path().join("placement"), 1, &["--password-cost", "minimal"]);
    let p = placement.addr.clone();
    let node_dir = dir.path().join("node");
    let node = start_node(&node_dir, &p);
    // A second node, holding no replica (one per region): it checks credentials, then redirects.
    let other = start_node(&dir.path().join("other"), &p);
    let bases = vec![node.base.clone()];
    for key in ["app%2Fa", "app%2Fb", "other%2Fx"] {
        put_anywhere(&bases, key, "v", Duration::from_secs(20)).await.unwrap();
    }

    // Set up while auth is off: no credentials needed yet.
    ctl(&p, None, &["user", "add", "root", "--new-password", "rootpw"]);
    ctl(&p, None, &["user", "grant-role", "root", "root"]);
    ctl(&p, None, &["role", "add", "reader"]);
    ctl(&p, None, &["role", "grant", "reader", "--prefix", "app/", "--read"]);
    let add_alice = std::process::Command::new(env!("CARGO_BIN_EXE_fekv"))
        .args(["ctl", "--placement", &p, "user", "add", "alice"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write as _;
            child.stdin.take().unwrap().write_all(b"alicepw\n")?;
            child.wait()
        })
        .unwrap();
    assert!(add_alice.success(), "user add reads the password from stdin");
    ctl(&p, None, &["user", "grant-role", "alice", "reader"]);
    let enabled = ctl(&p, None, &["auth", "enable"]);
    assert!(enabled.contains("auth enabled"), "{enabled}");

    // The node hears of it with its next heartbeat reply.
    let key = node.url("/fekv/app%2Fa");
    let refused = wait_status(&key, None, StatusCode::UNAUTHORIZED, "auth enabled").await;
    // Its client listener is plain HTTP: it says so.
    node.wait_stderr(Duration::from_secs(10), "the plain-HTTP warning", |lines| {
        lines.iter().any(|l| l.contains("WARN") && l.contains("client API is plain HTTP"))
    });
    assert_eq!(refused.header("www-authenticate"), Some("Basic realm=\"fekv\""));
    assert_eq!(refused.json()["error"], "unauthenticated");
    let elsewhere = other.url("/fekv/app%2Fa");
    wait_status(&elsewhere, None, StatusCode::UNAUTHORIZED, "the other node enforces auth too").await;
    let wrong = send(Method::GET, &key, "", Some(&basic("alice:guess"))).await;
    assert_eq!(wrong.status, StatusCode::UNAUTHORIZED, "{}", wrong.text());

    // A reader: reads its prefix, writes nothing, and scans see only its keys.
    let alice = basic(ALICE);
    assert_eq!(send(Method::GET, &key, "", Some(&alice)).await.status, StatusCode::OK);
    let put = send(Method::PUT, &key, "w", Some(&alice)).await;
    assert_eq!(
        (put.status, put.json()["error"].clone()),
        (StatusCode::FORBIDDEN, "forbidden".into()),
        "{}",
        put.text()
    );
    let outside = send(Method::GET, &node.url("/fekv/other%2Fx"), "", Some(&alice)).await;
    assert_eq!(outside.status, StatusCode::FORBIDDEN);
    let scan = send(Method::GET, &node.url("/fekv?prefix="), "", Some(&alice)).await.json();
    let keys: Vec<&str> = scan["kvs"].as_array().unwrap().iter().map(|kv| kv["key"].as_str().unwrap()).collect();
    assert_eq!(keys, ["app/a", "app/b"], "the scan is filtered to the readable keys");

    // Root may do everything.
    let root = basic(ROOT);
    assert_eq!(send(Method::PUT, &node.url("/fekv/other%2Fy"), "r", Some(&root)).await.status, StatusCode::OK);
    let scan = send(Method::GET, &node.url("/fekv?prefix="), "", Some(&root)).await.json();
    assert_eq!(scan["count"], 4);

    // A token works until it expires (the node was started with a 2 s TTL).
    let issued = send(Method::POST, &node.url("/auth/token"), "", Some(&alice)).await;
    assert_eq!(issued.status, StatusCode::OK, "{}", issued.text());
    let bearer = format!("Bearer {}", issued.json()["token"].as_str().unwrap());
    assert_eq!(send(Method::GET, &key, "", Some(&bearer)).await.status, StatusCode::OK);
    // Any node verifies a token by itself: the other node takes it and redirects to the leader.
    let redirected = send(Method::GET, &elsewhere, "", Some(&bearer)).await;
    assert_eq!(redirected.status, StatusCode::TEMPORARY_REDIRECT, "{}", redirected.text());
    let expired = wait_status(&key, Some(&bearer), StatusCode::UNAUTHORIZED, "the token expires").await;
    assert_eq!(expired.json()["error"], "token_expired");

    // Operational endpoints: liveness open, status and metrics need a user.
    assert_eq!(send(Method::GET, &node.url("/health"), "", None).await.status, StatusCode::OK);
    assert_eq!(send(Method::GET, &node.url("/status"), "", None).await.status, StatusCode::UNAUTHORIZED);
    let metrics = send(Method::GET, &node.url("/metrics"), "", Some(&alice)).await;
    assert!(metrics.text().contains("fekv_auth_logins_total{outcome=\"failed\"}"), "{}", metrics.text());

    // Admin RPCs through fekv ctl: root only; listings need a user.
    assert!(!ctl_as(&p, None, &["store", "list"]).status.success());
    ctl(&p, Some(ALICE), &["store", "list"]);
    // ctl sends the same credentials to the nodes' /status.
    assert!(ctl(&p, Some(ALICE), &["cluster", "status"]).contains("up"));
    let refused = ctl_as(&p, Some(ALICE), &["scheduler", "disable", "balance-region"]);
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("root role"), "{refused:?}");
    assert!(!ctl_as(&p, Some(ALICE), &["user", "list"]).status.success());
    ctl(&p, Some(ROOT), &["scheduler", "disable", "balance-region"]);
    assert!(ctl(&p, Some(ROOT), &["user", "list"]).contains("alice"));

    // fekv bench sends the credentials (Basic here) with every request.
    let bench = std::process::Command::new(env!("CARGO_BIN_EXE_fekv"))
        .args(["bench", "--endpoints", &node.base, "--requests", "20", "--connections", "2", "--keys", "10"])
        .args(["--key-prefix", "app/bench", "--user", ROOT, "--json"])
        .output()
        .unwrap();
    assert!(bench.status.success(), "{}", String::from_utf8_lossy(&bench.stderr));

    // A restarted node enforces the state it stored before it hears from placement again. Its
    // metrics listener needs no credentials.
    node.stop_with("TERM");
    let node = FekvProcess::start_node_with(
        &node_dir,
        &p,
        &["--auth-password-cost", "minimal", "--metrics-addr", "127.0.0.1:0"],
    );
    let metrics_addr = node
        .stderr_lines()
        .iter()
        .find_map(|line| {
            line.contains("metrics listener")
                .then(|| line.split("bound=").nth(1)?.split_whitespace().next().map(str::to_string))
                .flatten()
        })
        .expect("the metrics listener says where it listens");
    let open = send(Method::GET, &format!("http://{metrics_addr}/metrics"), "", None).await;
    assert_eq!(open.status, StatusCode::OK);
    assert!(open.text().contains("fekv_raftstore_rounds_total"), "{}", open.text());
    assert!(
        node.stderr_lines().iter().any(|line| line.contains("auth is enabled (the last state placement sent)")),
        "{:#?}",
        node.stderr_lines()
    );
    let key = node.url("/fekv/app%2Fa");
    assert_eq!(send(Method::GET, &key, "", None).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(send(Method::GET, &key, "", Some(&alice)).await.status, StatusCode::OK);

    // auth disable opens everything again.
    ctl(&p, Some(ROOT), &["auth", "disable"]);
    wait_status(&node.url("/fekv/other%2Fx"), None, StatusCode::OK, "auth disabled").await;
    assert!(ctl(&p, None, &["auth", "status"]).contains("auth disabled"));
}
