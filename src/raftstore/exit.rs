//! How the raftstore thread ended, told to whoever owns it. A node whose raftstore died must not go
//! on half alive (serving `503 the raftstore has stopped` forever): its owner learns of it here and
//! ends the process, so that a supervisor restarts it.

use std::thread::JoinHandle;

use tokio::sync::watch;

use crate::panics::PanicReport;

/// Why the raftstore thread ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RaftstoreExit {
    /// It was asked to stop (or every sender to its inbox went away).
    Stopped,
    /// It panicked: an invariant broke, and the store cannot go on.
    Panicked(PanicReport),
}

impl std::fmt::Display for RaftstoreExit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RaftstoreExit::Stopped => f.write_str("stopped"),
            RaftstoreExit::Panicked(report) => report.fmt(f),
        }
    }
}

/// The owner's end of the raftstore thread.
pub struct RaftstoreHandle {
    thread: JoinHandle<()>,
    exit: watch::Receiver<Option<RaftstoreExit>>,
}

impl RaftstoreHandle {
    pub(super) fn new(thread: JoinHandle<()>, exit: watch::Receiver<Option<RaftstoreExit>>) -> RaftstoreHandle {
        RaftstoreHandle { thread, exit }
    }

    /// How the thread ended, if it has.
    pub fn exit(&self) -> Option<RaftstoreExit> {
        self.exit.borrow().clone()
    }

    /// A future that resolves, with how, once the thread has ended.
    pub fn exited(&self) -> impl std::future::Future<Output = RaftstoreExit> + Send + 'static {
        let mut exit = self.exit.clone();
        async move {
            match exit.wait_for(Option::is_some).await {
                Ok(exit) => exit.clone().unwrap_or(RaftstoreExit::Stopped),
                // The thread is gone without a word: it cannot have finished its own report.
                Err(_) => RaftstoreExit::Panicked(PanicReport {
                    message: "the raftstore thread ended without reporting why".into(),
                    location: None,
                }),
            }
        }
    }

    /// Waits for the thread to end (ask it to stop first) and says how it did.
    pub fn join(self) -> RaftstoreExit {
        let joined = self.thread.join();
        match self.exit.borrow().clone() {
            Some(exit) => exit,
            None => RaftstoreExit::Panicked(PanicReport {
                message: match joined {
                    Ok(()) => "the raftstore thread ended without reporting why".into(),
                    Err(_) => "the raftstore thread panicked while reporting why it ended".into(),
                },
                location: None,
            }),
        }
    }
}
