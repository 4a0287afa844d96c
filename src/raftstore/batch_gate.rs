//! Whether a round should wait for more writes before it commits.
//!
//! The store commits whatever it holds as soon as it can. With many writers that is often the wrong
//! moment: the writers one commit answered come back a few microseconds apart over a few hundred (on
//! two shared cores, each one's HTTP round trip is CPU work queued behind everyone else's), and a
//! round that starts while they trickle in spends a whole fsync on a handful of them while the rest
//! queue for the next. Traced on one node at 64 connections (PUT) before this existed, the store fell
//! into a cycle of *idle ~450 µs, commit 7, commit 56, commit 7*: a third of its time idle, two of
//! every three fsyncs nearly empty, 24–27 writes per commit.
//!
//! So a round that holds only writes, fewer than half of what the last two commits carried, keeps
//! taking writes while they keep coming (no gap longer than [`MAX_GAP`]) until it holds that half,
//! for at most half a recent commit's duration. Half is the share that settles the writers into two
//! batches that alternate: one commits while the other is being answered and comes back. On the same
//! load: 31–32 writes per commit, and more PUTs per second than without waiting (`benches/README.md`).
//! A lone writer never waits (half of one is nothing to wait for); a round with raft messages, reads
//! or admin work in it never waits either (the store checks that): those are someone else's latency.

use std::time::{Duration, Instant};

/// The round stops gathering when no write arrived for this long: the writers it expected are not
/// coming (the load dropped), or not soon.
pub const MAX_GAP: Duration = Duration::from_micros(50);

/// No round waits longer than this, whatever the commits cost.
pub const MAX_WAIT: Duration = Duration::from_millis(1);

/// How a gathering round should proceed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Gather {
    /// Writes the round wants in hand before it commits.
    pub want: usize,
    /// When it commits regardless.
    pub until: Instant,
}

/// The recent commits a gathering round is sized from.
#[derive(Debug, Default)]
pub struct BatchGate {
    /// Writes persisted by the last two commits that carried any, newest first.
    last_two: [usize; 2],
    /// Moving average of a commit's duration.
    commit_time: Duration,
}

impl BatchGate {
    /// Records a commit that persisted `proposals` client writes and took `took`.
    pub fn on_commit(&mut self, proposals: usize, took: Duration) {
        if proposals == 0 {
            return;
        }
        self.last_two = [proposals, self.last_two[0]];
        // An eighth of the newest: smooth enough that one slow fsync does not double the next wait.
        self.commit_time = if self.commit_time.is_zero() { took } else { (self.commit_time * 7 + took) / 8 };
    }

    /// For a round that started at `started` holding `writes` writes (and nothing else): how long to
    /// gather, or `None` to commit at once.
    pub fn plan(&self, writes: usize, started: Instant) -> Option<Gather> {
        let want = (self.last_two[0] + self.last_two[1]) / 2;
        if writes == 0 || writes >= want {
            return None;
        }
        let wait = (self.commit_time / 2).min(MAX_WAIT);
        (!wait.is_zero()).then_some(Gather { want, until: started + wait })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate(commits: &[(usize, u64)]) -> BatchGate {
        let mut gate = BatchGate::default();
        for &(proposals, micros) in commits {
            gate.on_commit(proposals, Duration::from_micros(micros));
        }
        gate
    }

    #[test]
    fn a_store_that_has_committed_nothing_never_waits() {
        assert_eq!(BatchGate::default().plan(1, Instant::now()), None);
    }

    #[test]
    fn a_small_round_gathers_half_the_recent_writers_for_half_a_commit() {
        let gate = gate(&[(56, 400), (8, 400)]);
        let woke = Instant::now();
        assert_eq!(gate.plan(3, woke), Some(Gather { want: 32, until: woke + Duration::from_micros(200) }));
        // Already holding its share: commit now.
        assert_eq!(gate.plan(32, woke), None);
    }

    #[test]
    fn a_lone_writer_and_a_round_without_writes_never_wait() {
        let woke = Instant::now();
        assert_eq!(gate(&[(1, 400), (1, 400)]).plan(1, woke), None);
        assert_eq!(gate(&[(56, 400), (8, 400)]).plan(0, woke), None);
    }

    #[test]
    fn commits_without_writes_do_not_shrink_the_estimate_and_the_wait_is_capped() {
        let gate = gate(&[(40, 5_000), (40, 5_000), (0, 10)]);
        let woke = Instant::now();
        assert_eq!(gate.plan(1, woke), Some(Gather { want: 40, until: woke + MAX_WAIT }));
    }

    #[test]
    fn one_slow_commit_moves_the_wait_by_an_eighth() {
        let gate = gate(&[(20, 400), (20, 400), (20, 1_200)]);
        // (400 * 7 + 1200) / 8 = 500 µs per commit, so 250 µs of gathering.
        let woke = Instant::now();
        assert_eq!(gate.plan(1, woke).map(|g| g.until - woke), Some(Duration::from_micros(250)));
    }
}
