//! The writer thread: it owns LMDB's write transactions, so the raftstore thread goes on stepping
//! messages, answering and building the next round while a round is made durable (issue 15, item 3;
//! TiKV's async-io StoreWriter is the model).
//!
//! The raftstore hands it each round's tasks as a [`Job`], in round order. It takes every job queued
//! into one transaction (group commit across rounds as well as regions), commits it once, and
//! reports each job's outcome, in order, as a [`Done`]. Applies happen here too: LMDB write
//! transactions are bound to the thread that opened them, and an apply must see the writes before
//! it in the same transaction.
//!
//! A failed transaction fails every job in it, and every job after it, until the raftstore has
//! rebuilt the peers concerned from disk and sends [`Writer::reset`]: a later job builds on the
//! failed one's entries, and writing it alone would leave a hole in the log.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use super::error::Error;
use super::write_task::{WriteTask, Written};
use crate::storage::{Engine, StorageError};

/// Jobs taken into one transaction at most: a bound on what one failure takes down.
const MAX_JOBS_PER_COMMIT: usize = 64;

/// One round's writes.
pub struct Job {
    pub tasks: Vec<WriteTask>,
    /// Whether they hold log entries, a snapshot, a term or a vote: committed with both flushes.
    /// Otherwise they only apply committed entries, and one flush is enough (see `store::durability`).
    pub durable: bool,
}

/// A job's outcome: what each of its tasks wrote (in task order), or why none of it is durable.
pub struct Done {
    pub result: Result<Vec<Written>, Error>,
    /// Set on the last job of a transaction that was committed.
    pub commit: Option<CommitStats>,
}

/// One commit, for the metrics and the batch gate.
pub struct CommitStats {
    pub took: Duration,
    pub proposals: usize,
    pub entries: usize,
    pub apply_only: bool,
}

enum Order {
    Job(Job),
    Reset,
}

pub struct Writer {
    orders: Option<Sender<Order>>,
    done: Receiver<Done>,
    /// Why the thread died, if it panicked (read once its channel closed).
    died: Arc<parking_lot::Mutex<Option<String>>>,
    thread: Option<JoinHandle<()>>,
}

impl Writer {
    pub fn start(engine: Engine, store_id: u64) -> std::io::Result<Writer> {
        let (orders, inbox) = crossbeam_channel::unbounded();
        let (report, done) = crossbeam_channel::unbounded();
        let died = Arc::new(parking_lot::Mutex::new(None));
        let cause = died.clone();
        let thread = std::thread::Builder::new().name("raft-writer".into()).spawn(move || {
            let _span = tracing::info_span!("raft-writer", store_id).entered();
            let ran = std::panic::catch_unwind(AssertUnwindSafe(|| run(&engine, &inbox, &report)));
            if let Err(payload) = ran {
                let report = crate::panics::PanicReport::caught(payload.as_ref());
                tracing::error!(store_id, %report, "the writer thread died");
                *cause.lock() = Some(report.to_string());
            }
        })?;
        Ok(Writer { orders: Some(orders), done, died, thread: Some(thread) })
    }

    /// Queues a round's writes; its [`Done`] comes after those of every job queued before.
    pub fn submit(&self, job: Job) {
        // A writer that died closes its report channel too: the store learns of it there.
        if let Some(orders) = &self.orders {
            let _ = orders.send(Order::Job(job));
        }
    }

    /// The peers of a failed transaction are rebuilt from disk: jobs queued from now on are written.
    pub fn reset(&self) {
        if let Some(orders) = &self.orders {
            let _ = orders.send(Order::Reset);
        }
    }

    pub fn done(&self) -> &Receiver<Done> {
        &self.done
    }

    /// Waits for the next job's outcome; the thread's death is an error the store cannot go on with.
    pub fn next_done(&self) -> Result<Done, StorageError> {
        self.done.recv().map_err(|_| self.death())
    }

    pub fn death(&self) -> StorageError {
        let detail = self.died.lock().clone().unwrap_or_else(|| "it stopped".into());
        StorageError::Inconsistent { what: "the raftstore's writer thread".into(), detail }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        // Closing the queue ends the thread once it has written what was queued.
        drop(self.orders.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn run(engine: &Engine, inbox: &Receiver<Order>, report: &Sender<Done>) {
    // The failure every job is refused with until the raftstore resets the writer.
    let mut failed: Option<Error> = None;
    while let Ok(first) = inbox.recv() {
        let mut jobs = Vec::new();
        let mut next = Some(first);
        while let Some(order) = next.take() {
            match order {
                // The raftstore resets only with no job in flight: nothing queued before it.
                Order::Reset => failed = None,
                Order::Job(job) => jobs.push(job),
            }
            if jobs.len() < MAX_JOBS_PER_COMMIT {
                next = inbox.try_recv().ok();
            }
        }
        if jobs.is_empty() {
            continue;
        }
        if let Some(err) = &failed {
            for _ in &jobs {
                let _ = report.send(Done { result: Err(err.clone()), commit: None });
            }
            continue;
        }
        let dones = outcomes(engine, &jobs);
        // One job's failure is every job's: they shared the transaction.
        failed = dones.first().and_then(|done| done.result.as_ref().err().cloned());
        for done in dones {
            let _ = report.send(done);
        }
    }
}

/// Writes one job on the calling thread (the raftstore's, when nothing is in flight: see
/// `Store::handle_round`), as the writer thread would.
pub fn write_now(engine: &Engine, job: Job) -> Done {
    outcomes(engine, std::slice::from_ref(&job)).pop().expect("one outcome per job")
}

/// Writes `jobs` in one transaction ([`write`]) and tells each job how it went, in order; the
/// commit's figures go with the last.
fn outcomes(engine: &Engine, jobs: &[Job]) -> Vec<Done> {
    match write(engine, jobs) {
        Ok((written, mut commit)) => {
            let last = written.len().saturating_sub(1);
            let with_commit =
                |(i, result)| Done { result: Ok(result), commit: if i == last { commit.take() } else { None } };
            written.into_iter().enumerate().map(with_commit).collect()
        }
        Err(err) => {
            let err = Error::from(err);
            jobs.iter().map(|_| Done { result: Err(err.clone()), commit: None }).collect()
        }
    }
}

/// Writes every job's tasks into one transaction and commits it the way the strongest job needs (see
/// `store::durability`), or not at all when nothing was written.
#[allow(clippy::type_complexity)]
fn write(engine: &Engine, jobs: &[Job]) -> Result<(Vec<Vec<Written>>, Option<CommitStats>), StorageError> {
    let mut txn = engine.write_txn()?;
    let mut written = Vec::with_capacity(jobs.len());
    let (mut wrote, mut proposals, mut entries) = (false, 0, 0);
    for job in jobs {
        let mut results = Vec::with_capacity(job.tasks.len());
        for task in &job.tasks {
            let result = task.write(engine, &mut txn)?;
            wrote |= result.wrote;
            proposals += task.proposals();
            entries += task.entries();
            results.push(result);
        }
        written.push(results);
    }
    if !wrote {
        // Only reads, messages and deferred applies: nothing to commit, no fsync.
        drop(txn);
        return Ok((written, None));
    }
    let durable = jobs.iter().any(|job| job.durable);
    let started = Instant::now();
    if durable {
        engine.commit(txn)?;
    } else {
        // Nothing here is a log entry, a hard state or a vote (no ready had to be synced): a system
        // crash may undo this commit, and the synced log replays it.
        engine.commit_without_meta_sync(txn)?;
    }
    let took = started.elapsed();
    Ok((written, Some(CommitStats { took, proposals, entries, apply_only: !durable })))
}

#[cfg(test)]
mod tests {
    use raft::eraftpb::Entry;

    use super::*;
    use crate::proto::RaftLocalState;
    use crate::raftstore::peer_storage::AppendPlan;
    use crate::storage::EngineOptions;

    /// A job appending one entry of `bytes` bytes at `index` to region 1's log.
    fn append_job(index: u64, bytes: usize) -> Job {
        let entry = Entry { index, term: 6, data: vec![7; bytes].into(), ..Default::default() };
        let base = RaftLocalState { term: 6, last_index: index - 1, last_term: 6, ..Default::default() };
        let append = AppendPlan::on(1, base, vec![entry], None);
        Job { tasks: vec![WriteTask { region_id: 1, snapshot: None, append, apply: None }], durable: true }
    }

    fn in_log(engine: &Engine, index: u64) -> bool {
        let txn = engine.read_txn().expect("a read transaction");
        engine.entries(&txn, 1, index, index + 1, u64::MAX).is_ok()
    }

    /// A job queued after a failed transaction builds on the failed one's entries: writing it would
    /// leave a hole in the log. The writer refuses every job until the raftstore, having rebuilt the
    /// peers from disk, resets it.
    #[test]
    fn after_a_failed_commit_jobs_are_refused_until_a_reset() {
        let dir = tempfile::tempdir().expect("a dir");
        let options = EngineOptions { map_size: 1 << 20, ..EngineOptions::for_tests() };
        let engine = Engine::open(dir.path(), &options).expect("an engine");
        let writer = Writer::start(engine.clone(), 1).expect("a writer");
        // An entry larger than the map: the transaction fails (MDB_MAP_FULL).
        writer.submit(append_job(6, 2 << 20));
        let failed = writer.next_done().expect("an outcome");
        assert!(matches!(failed.result, Err(Error::StorageFull { .. })), "{:?}", failed.result.err());
        writer.submit(append_job(7, 10));
        let refused = writer.next_done().expect("an outcome");
        assert!(refused.result.is_err(), "a job after a failure was written");
        assert!(!in_log(&engine, 7), "entry 7 would sit after a hole");
        writer.reset();
        writer.submit(append_job(6, 10));
        let done = writer.next_done().expect("an outcome");
        assert!(done.result.is_ok() && done.commit.is_some(), "written and committed after the reset");
        assert!(in_log(&engine, 6));
    }
}
