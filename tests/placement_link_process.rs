//! The clients of placement take a list of addresses and find the one that serves: `fekv ctl` and
//! nodes given a dead address first, `http://` URLs (once a "dns error"), `FEKV_PLACEMENT` with a
//! list; a node that starts while placement is down waits for it (and stops on SIGTERM meanwhile);
//! `fekv ctl placement list` against a single placement (a group of one).

mod common;

use std::time::{Duration, Instant};

use common::process::{ctl, ctl_json, FekvProcess};
use common::wait::eventually;

/// An address nothing listens on, below the ephemeral range: a port from it could be taken by an
/// outgoing connection (placement started on it later would fail to bind), and a retried connect
/// to it could meet itself (TCP simultaneous open) instead of being refused.
fn dead_addr() -> String {
    common::process::fixed_addrs(1).remove(0)
}

fn show(run: &common::process::Run, args: &str) {
    println!("$ fekv ctl {args}  # exit {:?} in {:?}\n{}{}", run.status.code(), run.took, run.stdout, run.stderr);
}

#[test]
fn ctl_placement_list_shows_a_single_placement_as_a_group_of_one_and_a_dead_member_as_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let placement = FekvProcess::start_placement(&dir.path().join("placement"), 1);
    let at = placement.addr.as_str();

    let table = ctl(at, &["placement", "list"]);
    show(&table, "placement list");
    assert!(table.success, "{}", table.stderr);
    let lines: Vec<&str> = table.stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{}", table.stdout);
    for column in ["ADDR", "MEMBER ID", "LEADER", "TERM", "APPLIED", "HEALTH"] {
        assert!(lines[0].contains(column), "{}", lines[0]);
    }
    assert!(
        lines[1].starts_with(at) && lines[1].contains(" yes ") && !lines[1].contains("unreachable"),
        "{}",
        lines[1]
    );

    let rows = ctl_json(at, &["placement", "list"]).unwrap();
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(rows[0]["addr"], at);
    assert_eq!(rows[0]["member_id"], 1);
    assert_eq!(rows[0]["leader"], true);
    assert!(rows[0]["term"].is_u64() && rows[0]["applied_index"].is_u64(), "{rows:?}");
    assert_eq!(rows[0]["healthy"], true, "{rows:?}");
    assert!(!rows[0]["health"].as_str().unwrap().starts_with("unreachable"), "{rows:?}");

    // A second, dead address: listed as unreachable, the exit says one did not answer.
    let dead = dead_addr();
    let both = format!("{dead},http://{at}");
    let run = ctl(&both, &["-o", "json", "placement", "list"]);
    show(&run, &format!("--placement {both} -o json placement list"));
    assert!(!run.success);
    assert!(run.stderr.contains("1 of 2 placement replicas did not answer"), "{}", run.stderr);
    let rows = run.json();
    let dead_row = rows.as_array().unwrap().iter().find(|r| r["addr"] == dead.as_str()).unwrap().clone();
    assert_eq!(dead_row["leader"], false);
    assert!(dead_row["health"].as_str().unwrap().starts_with("unreachable: "), "{dead_row}");

    // Every other command goes past the dead member to the one that serves.
    let run = ctl(&both, &["store", "list"]);
    show(&run, &format!("--placement {both} store list"));
    assert!(run.success, "{}", run.stderr);
    // Not a group: there is no one to hand leadership to.
    let run = ctl(at, &["placement", "transfer-leader"]);
    show(&run, "placement transfer-leader");
    assert!(!run.success && run.stderr.contains("single placement"), "{}", run.stderr);
}

#[test]
fn ctl_with_only_dead_members_names_each_within_its_deadline() {
    let (a, b) = (dead_addr(), dead_addr());
    let list = format!("{a},{b}");
    let run = ctl(&list, &["--placement-timeout", "1s", "region", "list"]);
    show(&run, &format!("--placement {list} region list"));
    assert!(!run.success);
    assert!(run.stderr.contains(&a) && run.stderr.contains(&b) && run.stderr.contains("no leader"), "{}", run.stderr);
    assert!(run.took < Duration::from_secs(5), "took {:?}", run.took);
    let mixed = ctl(&format!("https://{a}"), &["store", "list"]);
    assert!(!mixed.success && mixed.stderr.contains("--cacert"), "{}", mixed.stderr);
}

#[tokio::test(flavor = "multi_thread")]
async fn nodes_take_lists_and_urls_from_the_flag_and_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let placement = FekvProcess::start_placement(&dir.path().join("placement"), 1);
    let list = format!("http://{},http://{}", dead_addr(), placement.addr);
    let flagged = FekvProcess::start_node(&dir.path().join("node-1"), &list);
    let args = ["--raft-addr", "127.0.0.1:0"];
    let from_env = FekvProcess::start_with_env(&dir.path().join("node-2"), &args, &[("FEKV_PLACEMENT", &list)]);
    eventually(Duration::from_secs(20), "both nodes registered", || async {
        let stores = ctl_json(&placement.addr, &["store", "list"])?;
        let count = stores.as_array().map_or(0, |s| s.len());
        if count == 2 {
            Ok(())
        } else {
            Err(format!("{stores}"))
        }
    })
    .await;
    drop((flagged, from_env));
}

#[test]
fn a_node_waits_for_placement_to_come_up_and_stops_on_sigterm_meanwhile() {
    let dir = tempfile::tempdir().unwrap();
    // Placement comes up on this address only after the nodes retried it for a while.
    let addr = dead_addr();
    let node_args = |data: &str| {
        ["--placement", &addr, "--data-dir", data, "--http-addr", "127.0.0.1:0", "--raft-addr", "127.0.0.1:0"]
            .map(str::to_string)
    };

    // Placement never comes for this one: SIGTERM ends the wait, cleanly and at once.
    let lonely_dir = dir.path().join("lonely").display().to_string();
    let args = node_args(&lonely_dir);
    let lonely = FekvProcess::launch(&args.iter().map(String::as_str).collect::<Vec<_>>(), dir.path());
    lonely.wait_stderr(Duration::from_secs(10), "a retry at warn", |lines| {
        lines.iter().any(|l| l.contains("WARN") && l.contains("cannot register") && l.contains(&addr))
    });
    let asked = Instant::now();
    let status = lonely.stop_with("TERM");
    assert!(status.success(), "{status}");
    assert!(asked.elapsed() < Duration::from_secs(3), "took {:?}", asked.elapsed());

    // This one waits, and registers once placement is there.
    let waiting_dir = dir.path().join("waiting").display().to_string();
    let args = node_args(&waiting_dir);
    let waiting = FekvProcess::launch(&args.iter().map(String::as_str).collect::<Vec<_>>(), dir.path());
    waiting.wait_stderr(Duration::from_secs(10), "a retry at warn", |lines| {
        lines.iter().any(|l| l.contains("WARN") && l.contains("cannot register"))
    });
    let placement_dir = dir.path().join("placement").display().to_string();
    let placement_args = ["placement", "--addr", &addr, "--data-dir", &placement_dir, "--replicas", "1"];
    let placement = FekvProcess::launch(&placement_args, dir.path());
    placement.wait_stderr(Duration::from_secs(20), "placement to serve", |lines| {
        lines.iter().any(|l| l.contains("placement service serving"))
    });
    waiting.wait_stderr(Duration::from_secs(20), "the node to serve", |lines| {
        lines.iter().any(|l| l.contains("fekv node serving"))
    });
}

#[test]
fn a_node_given_https_without_peer_tls_fails_at_start_saying_why() {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().display().to_string();
    let args = ["--placement", "https://127.0.0.1:1", "--data-dir", &data_dir, "--http-addr", "127.0.0.1:0"];
    let run =
        common::process::run_fekv(&[&args[..], &["--raft-addr", "127.0.0.1:0"]].concat(), Duration::from_secs(10));
    assert!(!run.success);
    assert!(run.stderr.contains("https:// needs TLS to placement"), "{}", run.stderr);
}
