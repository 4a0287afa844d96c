//! The linearizability checker's own tests: it must accept what is linearizable and catch what is not.

mod common;

use std::time::{Duration, Instant};

use common::linearizability::{check, Event, Op};

fn at(base: Instant, ms: u64) -> Instant {
    base + Duration::from_millis(ms)
}

fn ev(client: usize, op: Op, call: u64, ret: Option<u64>, base: Instant) -> Event {
    Event { client, op, call: at(base, call), ret: ret.map(|r| at(base, r)) }
}

fn put(v: &str) -> Op {
    Op::Put(v.as_bytes().to_vec())
}

fn get(v: Option<&str>) -> Op {
    Op::Get(v.map(|v| v.as_bytes().to_vec()))
}

#[test]
fn sequential_and_overlapping_histories_check() {
    let b = Instant::now();
    assert!(check(&[ev(0, put("a"), 0, Some(1), b), ev(1, get(Some("a")), 2, Some(3), b)]).is_ok());
    // A get overlapping a put may see either value.
    assert!(check(&[ev(0, put("a"), 0, Some(10), b), ev(1, get(None), 1, Some(2), b)]).is_ok());
    assert!(check(&[ev(0, put("a"), 0, Some(10), b), ev(1, get(Some("a")), 1, Some(2), b)]).is_ok());
}

#[test]
fn a_stale_read_after_a_completed_put_is_caught() {
    let b = Instant::now();
    let history =
        [ev(0, put("a"), 0, Some(1), b), ev(0, put("b"), 2, Some(3), b), ev(1, get(Some("a")), 4, Some(5), b)];
    let report = check(&history).unwrap_err();
    // The report says where the history stops making sense, then gives all of it.
    assert!(report.contains("at most 2 of 3 operations can be ordered, leaving the value Some(\"b\")"), "{report}");
    let due = report.split("the whole history").next().unwrap_or_default();
    assert!(due.contains("get -> Some(\"a\")") && !due.contains("put"), "{report}");
}

#[test]
fn reads_going_back_in_time_are_caught() {
    let b = Instant::now();
    let history = [
        ev(0, put("a"), 0, Some(1), b),
        ev(0, put("b"), 2, Some(20), b),
        ev(1, get(Some("b")), 3, Some(4), b),
        ev(2, get(Some("a")), 5, Some(6), b),
    ];
    assert!(check(&history).is_err());
}

#[test]
fn a_put_with_unknown_outcome_may_or_may_not_apply() {
    let b = Instant::now();
    assert!(check(&[ev(0, put("a"), 0, None, b), ev(1, get(None), 5, Some(6), b)]).is_ok());
    assert!(check(&[ev(0, put("a"), 0, None, b), ev(1, get(Some("a")), 5, Some(6), b)]).is_ok());
    // But never before it was called.
    assert!(check(&[ev(1, get(Some("a")), 0, Some(1), b), ev(0, put("a"), 5, None, b)]).is_err());
}
