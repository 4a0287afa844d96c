//! Runs scrub passes on a thread of their own: on a schedule at a limited byte rate (so a pass costs
//! the node a known share of its disk), and on demand at full speed (an operator asked and waits).
//!
//! Only one pass runs at a time. Passes only read, in short transactions, so they never hold up the
//! raftstore. Each completed pass updates the `fekv_storage_scrub_*` metrics and the report
//! `GET /scrub` shows; damage is logged at `error`.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crossbeam_channel::{RecvTimeoutError, Sender, TrySendError};
use parking_lot::Mutex;

use super::{scrub, ScrubOptions, ScrubReport};
use crate::storage::Engine;

/// The first background pass starts this long after the node (or one interval, if shorter): soon
/// enough that a node restarted often is still checked, late enough not to slow its start.
const FIRST_PASS_AFTER: Duration = Duration::from_secs(300);
/// On-demand checks that may wait behind a running pass; more are refused.
const QUEUED_CHECKS: usize = 4;

/// What the scrub reports to Prometheus (created with the node's registry).
#[derive(Clone)]
pub struct ScrubMetrics {
    /// Passes completed.
    pub runs: prometheus::IntCounter,
    /// When the last pass finished, in seconds since the Unix epoch.
    pub last_run_timestamp: prometheus::IntGauge,
    pub last_run_duration: prometheus::Gauge,
    pub records_checked: prometheus::IntCounter,
    /// Problems the last completed pass found: 0 means the store checked clean.
    pub damaged: prometheus::IntGauge,
}

/// When background passes run, and how fast.
#[derive(Debug, Clone)]
pub struct ScrubSchedule {
    /// Time between the starts of two background passes; `None`: no background passes.
    pub interval: Option<Duration>,
    /// Bytes per second a background pass reads at most.
    pub rate: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum ScrubError {
    #[error("the scrub is not running (the node is stopping)")]
    Stopped,
    #[error("{QUEUED_CHECKS} checks are already waiting; retry once they are done")]
    Busy,
    #[error("the check could not read the store: {0}")]
    Failed(String),
}

type Reply = tokio::sync::oneshot::Sender<Result<ScrubReport, String>>;

struct Shared {
    stop: AtomicBool,
    last: Mutex<Option<ScrubReport>>,
}

/// The handle on the scrub thread. Dropping it stops the pass under way (within one batch) and
/// waits for the thread, so the engine it holds is released.
pub struct Scrubber {
    requests: Option<Sender<Reply>>,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl Scrubber {
    pub fn start(engine: Engine, schedule: ScrubSchedule, metrics: ScrubMetrics) -> Scrubber {
        let (requests, inbox) = crossbeam_channel::bounded::<Reply>(QUEUED_CHECKS);
        let shared = Arc::new(Shared { stop: AtomicBool::new(false), last: Mutex::new(None) });
        let worker = Worker { engine, schedule, metrics, shared: shared.clone() };
        let thread = std::thread::Builder::new().name("scrub".into()).spawn(move || worker.run(inbox));
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(err) => {
                tracing::error!(error = %err, "cannot start the scrub thread; stored data will not be scrubbed");
                None
            }
        };
        Scrubber { requests: Some(requests), shared, thread }
    }

    /// Runs a pass now, at full speed, and returns its report (after the pass under way, if any).
    pub async fn check_now(&self) -> Result<ScrubReport, ScrubError> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        match self.requests.as_ref().filter(|_| self.thread.is_some()).map(|r| r.try_send(reply)) {
            Some(Ok(())) => {}
            Some(Err(TrySendError::Full(_))) => return Err(ScrubError::Busy),
            Some(Err(TrySendError::Disconnected(_))) | None => return Err(ScrubError::Stopped),
        }
        answer.await.map_err(|_| ScrubError::Stopped)?.map_err(ScrubError::Failed)
    }

    /// The report of the last completed pass, if one completed since the node started.
    pub fn last_report(&self) -> Option<ScrubReport> {
        self.shared.last.lock().clone()
    }
}

impl Drop for Scrubber {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.requests.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the scrub thread panicked");
            }
        }
    }
}

struct Worker {
    engine: Engine,
    schedule: ScrubSchedule,
    metrics: ScrubMetrics,
    shared: Arc<Shared>,
}

impl Worker {
    fn run(self, inbox: crossbeam_channel::Receiver<Reply>) {
        let mut next = self.schedule.interval.map(|interval| Instant::now() + interval.min(FIRST_PASS_AFTER));
        loop {
            let request = match next {
                Some(at) => inbox.recv_timeout(at.saturating_duration_since(Instant::now())),
                None => inbox.recv().map_err(|_| RecvTimeoutError::Disconnected),
            };
            match request {
                Ok(reply) => {
                    let _ = reply.send(self.pass(None));
                }
                Err(RecvTimeoutError::Timeout) => {
                    let started = Instant::now();
                    let _ = self.pass(Some(self.schedule.rate));
                    next = self.schedule.interval.map(|interval| (started + interval).max(Instant::now()));
                }
                Err(RecvTimeoutError::Disconnected) => return,
            }
            if self.shared.stop.load(Ordering::Relaxed) {
                return;
            }
        }
    }

    fn pass(&self, rate: Option<u64>) -> Result<ScrubReport, String> {
        let options = ScrubOptions { rate, ..ScrubOptions::default() };
        let stop = || self.shared.stop.load(Ordering::Relaxed);
        let report = scrub(&self.engine, &options, &stop).map_err(|err| {
            tracing::warn!(error = %err, "the scrub could not read the store");
            err.to_string()
        })?;
        if !report.complete {
            return Ok(report);
        }
        let m = &self.metrics;
        m.runs.inc();
        m.last_run_timestamp.set(SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs() as i64));
        m.last_run_duration.set(report.took_ms as f64 / 1000.0);
        m.records_checked.inc_by(report.records_checked);
        m.damaged.set(report.damaged as i64);
        if report.damaged > 0 {
            tracing::error!(
                damaged = report.damaged,
                records = report.records_checked,
                "scrub found damaged data (see GET /scrub, and the README on what to do)"
            );
        } else {
            tracing::info!(records = report.records_checked, took_ms = report.took_ms, "scrub checked the store clean");
        }
        *self.shared.last.lock() = Some(report.clone());
        Ok(report)
    }
}
