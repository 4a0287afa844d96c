//! A linearizability checker for per-key histories of puts and gets (Wing & Gong's search, with
//! Lowe's memoization of visited states).
//!
//! Each operation has the time it was called and the time its answer came back. A history is
//! linearizable if the operations can be put in one order that respects real time (an operation
//! that returned before another was called comes first) and in which every get returns the value of
//! the latest put before it (or nothing, before any put). A put whose outcome is unknown (it timed
//! out) may take effect at any point after its call, or never.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use super::cluster::Cluster;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    Put(Vec<u8>),
    /// What the get returned.
    Get(Option<Vec<u8>>),
}

#[derive(Debug, Clone)]
pub struct Event {
    pub client: usize,
    pub op: Op,
    pub call: Instant,
    /// `None`: no answer (a put that may or may not have been applied).
    pub ret: Option<Instant>,
}

/// A put on the in-process cluster, recorded with its call and return times. One whose outcome is
/// unknown (it timed out after being proposed, its store stopped, or its peer was destroyed) is
/// recorded without a return: it may or may not have taken effect. Any other failure for `timeout`
/// panics.
pub async fn recorded_put(cluster: &Cluster, client: usize, key: &[u8], value: Vec<u8>, timeout: Duration) -> Event {
    use fekv::raftstore::Error;
    let call = Instant::now();
    let ret = match cluster.put_once(key, &value, timeout).await {
        Ok(_) => Some(Instant::now()),
        Err(Error::Timeout { proposed: true, .. } | Error::Stopped | Error::OutcomeUnknown { .. }) => None,
        Err(err) => panic!("client {client}: a put failed for {timeout:?}: {err}"),
    };
    Event { client, op: Op::Put(value), call, ret }
}

/// A linearizable get on the in-process cluster, recorded with its call and return times (a get
/// that failed has no effect, so it has no event).
pub async fn recorded_get(
    cluster: &Cluster,
    client: usize,
    key: &[u8],
    timeout: Duration,
) -> Result<Event, fekv::raftstore::Error> {
    let call = Instant::now();
    let read = cluster.get(key, timeout).await?;
    Ok(Event { client, op: Op::Get(read.map(|(v, _)| v)), call, ret: Some(Instant::now()) })
}

/// Checks one key's history, starting from an absent key.
pub fn check(history: &[Event]) -> Result<(), String> {
    let n = history.len();
    if n > 10_000 {
        return Err(format!("history of {n} operations is too long to check"));
    }
    let words = n.div_ceil(64);
    let mut done = vec![0u64; words];
    let mut seen: HashSet<(Vec<u64>, Option<Vec<u8>>)> = HashSet::new();
    let mut stack: Vec<(usize, Option<Vec<u8>>)> = Vec::new(); // (op index, state before it)
    let mut state: Option<Vec<u8>> = None;
    let mut remaining = n;
    let is_done = |done: &[u64], i: usize| done[i / 64] & (1 << (i % 64)) != 0;
    // Candidates are tried in index order; `next` is where to resume after backtracking.
    let mut next = 0;
    // The furthest the search got: what was placed then and the value it left, for the report.
    let mut deepest: (usize, Vec<u64>, Option<Vec<u8>>) = (0, done.clone(), None);
    loop {
        if n - remaining > deepest.0 {
            deepest = (n - remaining, done.clone(), state.clone());
        }
        // Every operation that must come next has no pending operation that returned before it began.
        if remaining == 0 || (0..n).all(|i| is_done(&done, i) || history[i].ret.is_none()) {
            return Ok(());
        }
        let earliest_return = (0..n).filter(|&i| !is_done(&done, i)).filter_map(|i| history[i].ret).min();
        let mut advanced = false;
        let first_candidate = next;
        for i in first_candidate..n {
            if is_done(&done, i) {
                continue;
            }
            let event = &history[i];
            if earliest_return.is_some_and(|r| event.call > r) {
                continue; // something that returned before this was called must go first
            }
            let new_state = match &event.op {
                Op::Put(value) => Some(Some(value.clone())),
                Op::Get(read) => (read == &state).then(|| state.clone()),
            };
            let Some(new_state) = new_state else { continue };
            let mut new_done = done.clone();
            new_done[i / 64] |= 1 << (i % 64);
            if !seen.insert((new_done.clone(), new_state.clone())) {
                continue;
            }
            stack.push((i, state.clone()));
            done = new_done;
            state = new_state;
            remaining -= 1;
            next = 0;
            advanced = true;
            break;
        }
        if !advanced {
            // Backtrack: undo the last choice and try the next candidate after it.
            let Some((i, previous)) = stack.pop() else {
                return Err(describe_failure(history, &deepest));
            };
            done[i / 64] &= !(1 << (i % 64));
            state = previous;
            remaining += 1;
            next = i + 1;
        }
    }
}

/// The whole history, and where it stops making sense: the furthest the search got (how many
/// operations it could place, the value they left), and the operations that were due next there
/// and could not follow (those called before the earliest return among the unplaced ones), which is
/// usually where to look.
fn describe_failure(history: &[Event], deepest: &(usize, Vec<u64>, Option<Vec<u8>>)) -> String {
    let start = history.iter().map(|e| e.call).min().unwrap_or_else(Instant::now);
    let line = |e: &Event| {
        let ret = e.ret.map_or("?".to_string(), |r| format!("{:.3}", (r - start).as_secs_f64() * 1e3));
        let op = match &e.op {
            Op::Put(v) => format!("put {}", String::from_utf8_lossy(v)),
            Op::Get(v) => format!("get -> {:?}", v.as_ref().map(|v| String::from_utf8_lossy(v).into_owned())),
        };
        format!("  client {} [{:.3} ms, {ret} ms] {op}", e.client, (e.call - start).as_secs_f64() * 1e3)
    };
    let mut lines: Vec<String> = history.iter().map(line).collect();
    lines.sort();
    let (placed, done, value) = deepest;
    let is_done = |i: usize| done[i / 64] & (1 << (i % 64)) != 0;
    let earliest_return = (0..history.len()).filter(|&i| !is_done(i)).filter_map(|i| history[i].ret).min();
    let mut due: Vec<String> = (0..history.len())
        .filter(|&i| !is_done(i) && earliest_return.is_none_or(|r| history[i].call <= r))
        .map(|i| line(&history[i]))
        .collect();
    due.sort();
    let value = value.as_ref().map(|v| String::from_utf8_lossy(v).into_owned());
    format!(
        "history is not linearizable: at most {placed} of {} operations can be ordered, leaving the value \
         {value:?}; none of these, due next, can follow:\n{}\nthe whole history:\n{}",
        history.len(),
        due.join("\n"),
        lines.join("\n")
    )
}
