//! What a round must make durable, and how long applying may wait for a round that must.
//!
//! A round is **durable** when any of its readies holds log entries, a snapshot, or a new term or
//! vote (raft-rs's `must_sync`): its transaction is committed with LMDB's full two flushes, and only
//! then do the messages that promise those writes leave (follower acks, votes). Every other round
//! with committed entries to apply is **apply-only**: nothing in it needs a flush of its own,
//! because the entries it applies are already synced in the log and are applied again after a
//! restart if their apply is lost. So apply-only work is *deferred*, kept in memory (the peers'
//! pending entries), and folded into the next durable round's transaction, for free.
//!
//! Deferring has a bound: when no durable round comes within [`ApplyDeferral::delay`], or someone is
//! waiting for the apply (a linearizable read, a conditional write, a membership change, a sole
//! voter's write: see `Peer::apply_urgent`), the applies are committed in a transaction of their
//! own, with `MDB_NOMETASYNC` (one flush; see `Engine::commit_without_meta_sync`).
//!
//! Invariants, enforced where the transactions are built and committed (`Store::handle_round`,
//! `Peer::prepare_write`, `WriteTask::write`, the writer thread):
//! - applied data and the applied index are written in one transaction;
//! - raft learns an applied index (`advance_apply_to`) only once the transaction holding it has
//!   committed; at restart raft-rs starts from the applied index on disk and the entries above it are
//!   applied again (revisions are entry indexes, so applying again writes the same records);
//! - the log is compacted only by a CompactLog entry applied in the same transaction as an applied
//!   index at or past it, so never past the applied index on disk;
//! - entries, hard state and votes are only ever in durable rounds, committed with both flushes,
//!   before any message that promises them leaves.

use std::time::{Duration, Instant};

/// How a round's transaction is committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RoundKind {
    /// Log entries, a snapshot, term or vote: both flushes, before the persisted messages leave.
    Durable,
    /// Applies only, and they cannot wait: one flush (`MDB_NOMETASYNC`).
    ApplyOnly,
    /// Applies only (or nothing at all), and they can wait: no transaction is committed; the
    /// entries stay pending for a later round.
    Deferred,
}

/// The clock of deferred applies: since when some are waiting, and how long they may.
#[derive(Debug)]
pub struct ApplyDeferral {
    delay: Duration,
    /// When the oldest applies still pending were deferred.
    since: Option<Instant>,
}

impl ApplyDeferral {
    pub fn new(delay: Duration) -> ApplyDeferral {
        ApplyDeferral { delay, since: None }
    }

    /// How a round is committed: `needs_sync` if any ready must be synced, `urgent` if anyone waits
    /// on an apply, `applies` if there is anything to apply at all.
    pub fn decide(&self, needs_sync: bool, urgent: bool, applies: bool, now: Instant) -> RoundKind {
        if needs_sync {
            RoundKind::Durable
        } else if applies && (urgent || self.due(now)) {
            RoundKind::ApplyOnly
        } else {
            RoundKind::Deferred
        }
    }

    /// Whether the applies pending now have waited their time (a zero delay never defers).
    pub fn due(&self, now: Instant) -> bool {
        self.delay.is_zero() || self.since.is_some_and(|since| now >= since + self.delay)
    }

    /// When the pending applies are due: the store loop sleeps no longer than this.
    pub fn deadline(&self) -> Option<Instant> {
        self.since.map(|since| since + self.delay)
    }

    /// After a round: `pending` tells whether a peer of the round still holds entries to apply, and
    /// `complete` whether the round took in every peer that held any. A committed round is complete
    /// and applied everything pending before it, so what is pending now is new and its clock starts
    /// now; a deferred round keeps the clock of the oldest, and stops it only if it saw every peer.
    pub fn after_round(&mut self, kind: RoundKind, pending: bool, complete: bool, now: Instant) {
        self.since = if kind != RoundKind::Deferred || (complete && !pending) {
            pending.then_some(now)
        } else if pending {
            Some(self.since.unwrap_or(now))
        } else {
            self.since
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn applies_wait_for_a_durable_round_until_due_or_needed() {
        let start = Instant::now();
        let ms = Duration::from_millis;
        let mut deferral = ApplyDeferral::new(ms(2));
        // Anything to sync makes the round durable, applies or not.
        assert_eq!(deferral.decide(true, false, false, start), RoundKind::Durable);
        assert_eq!(deferral.decide(true, true, true, start), RoundKind::Durable);
        // Applies alone wait, unless someone waits on them.
        assert_eq!(deferral.decide(false, false, true, start), RoundKind::Deferred);
        assert_eq!(deferral.decide(false, true, true, start), RoundKind::ApplyOnly);
        assert_eq!(deferral.decide(false, true, false, start), RoundKind::Deferred, "nothing to apply");
        deferral.after_round(RoundKind::Deferred, true, false, start);
        assert_eq!(deferral.deadline(), Some(start + ms(2)));
        // A later deferred round keeps the oldest clock; once due, the applies are committed.
        deferral.after_round(RoundKind::Deferred, true, false, start + ms(1));
        assert_eq!(deferral.decide(false, false, true, start + ms(1)), RoundKind::Deferred);
        assert_eq!(deferral.decide(false, false, true, start + ms(2)), RoundKind::ApplyOnly);
        // A deferred round without applies of its own leaves the others' clock running.
        deferral.after_round(RoundKind::Deferred, false, false, start + ms(2));
        assert_eq!(deferral.deadline(), Some(start + ms(2)));
        // One that saw every peer and found nothing pending stops it.
        let mut stopped = ApplyDeferral::new(ms(2));
        stopped.after_round(RoundKind::Deferred, true, false, start);
        stopped.after_round(RoundKind::Deferred, false, true, start + ms(2));
        assert_eq!(stopped.deadline(), None);
        // A committed round took them; new ones start a new clock, and none stops it.
        deferral.after_round(RoundKind::Durable, true, true, start + ms(3));
        assert_eq!(deferral.deadline(), Some(start + ms(5)));
        deferral.after_round(RoundKind::ApplyOnly, false, true, start + ms(4));
        assert_eq!(deferral.deadline(), None);
        assert!(!deferral.due(start + ms(100)));
        // A zero delay never defers.
        assert_eq!(ApplyDeferral::new(Duration::ZERO).decide(false, false, true, start), RoundKind::ApplyOnly);
    }
}
