//! How far a sink's numbered changes got: a [`Ledger`] that writers mark (safe up to a number, or
//! failed through one) and callers wait on. Shared by the local writer (`persist.rs`) and the
//! group's sink and driver (`sink.rs`, `group/driver.rs`), below both.

use parking_lot::{Condvar, Mutex};

use super::PlacementError;

/// Why changes up to some number will never be safe.
#[derive(Debug, Clone)]
pub(crate) enum Failure {
    /// The local writer could not commit them (retried with the next change).
    Write(String),
    /// This replica stopped leading before they were applied (or raft dropped the proposal).
    Unavailable(String),
}

#[derive(Debug, Default)]
struct Progress {
    safe: u64,
    failed: Option<(u64, Failure)>,
    /// Set when the state this ledger answers for is dropped: nothing it says is safe any more.
    closed: Option<Failure>,
}

/// How far the changes got: every change up to `safe` is safe; the last failure covers the changes
/// up to its number.
#[derive(Debug, Default)]
pub(crate) struct Ledger {
    progress: Mutex<Progress>,
    changed: Condvar,
}

impl Ledger {
    /// Every change up to `seq` is safe.
    pub(crate) fn done(&self, seq: u64) {
        let mut progress = self.progress.lock();
        progress.safe = progress.safe.max(seq);
        self.changed.notify_all();
    }

    /// Every change up to `through` that is not safe yet has failed.
    pub(crate) fn fail(&self, through: u64, failure: Failure) {
        let mut progress = self.progress.lock();
        progress.failed = Some((through, failure));
        self.changed.notify_all();
    }

    /// Fails every change, also those already safe: the group's leader drops the state these
    /// changes were made on, and its answers (an id from a reserved batch) must not be given.
    pub(crate) fn close(&self, failure: Failure) {
        let mut progress = self.progress.lock();
        progress.closed = Some(failure);
        self.changed.notify_all();
    }

    pub(crate) fn safe(&self) -> u64 {
        self.progress.lock().safe
    }

    /// Blocks until every change up to `seq` is safe, or a failure covers it.
    pub(crate) fn wait(&self, seq: u64) -> Result<(), PlacementError> {
        let mut progress = self.progress.lock();
        let failed = |failure: &Failure| match failure {
            Failure::Write(message) => PlacementError::Write(message.clone()),
            Failure::Unavailable(message) => PlacementError::Unavailable(message.clone()),
        };
        loop {
            if let Some(failure) = &progress.closed {
                return Err(failed(failure));
            }
            if progress.safe >= seq {
                return Ok(());
            }
            if let Some((through, failure)) = &progress.failed {
                if *through >= seq {
                    return Err(failed(failure));
                }
            }
            self.changed.wait(&mut progress);
        }
    }
}
