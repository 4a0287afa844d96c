//! A background write load over HTTP: writers that PUT new keys through a set of nodes (following
//! redirects) and record every write that was acknowledged, so a test can read them all back after
//! kills, restarts and membership changes.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::put_anywhere;
use super::wait::eventually;

/// The node base URLs the writers go through; a test (or the cluster fixture) edits it as nodes
/// die and return.
pub type Targets = Arc<parking_lot::Mutex<Vec<String>>>;

/// What load to make.
#[derive(Clone, Debug)]
pub struct Load {
    /// Concurrent writers, each with its own keys.
    pub writers: usize,
    /// Values are padded to at least this many bytes (so small regions split after a few writes).
    pub value_len: usize,
    /// A pause after each write.
    pub pace: Duration,
    /// Each writer stops at its first failed write (the node it writes to is gone), instead of
    /// retrying a write for 10 s and then moving on to a new key (its outcome unknown).
    pub until_first_failure: bool,
}

impl Default for Load {
    fn default() -> Load {
        Load { writers: 1, value_len: 0, pace: Duration::ZERO, until_first_failure: false }
    }
}

pub struct Writers {
    stop: Arc<AtomicBool>,
    acked: Arc<parking_lot::Mutex<BTreeMap<String, String>>>,
    count: Arc<AtomicUsize>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    pub fn start(targets: Targets, load: Load) -> Writers {
        let stop = Arc::new(AtomicBool::new(false));
        let acked = Arc::new(parking_lot::Mutex::new(BTreeMap::new()));
        let count = Arc::new(AtomicUsize::new(0));
        let patience = if load.until_first_failure { Duration::ZERO } else { Duration::from_secs(10) };
        let tasks = (0..load.writers)
            .map(|w| {
                let (stop, acked, count, targets) = (stop.clone(), acked.clone(), count.clone(), targets.clone());
                tokio::spawn(async move {
                    let mut i = 0u64;
                    while !stop.load(Ordering::Relaxed) {
                        // Spread over the keyspace, so every region takes writes.
                        let key = format!("w{:05}-{w}-{i:06}", (i * 7919) % 100_000);
                        let mut value = format!("value-{w}-{i}");
                        if value.len() < load.value_len {
                            value.push_str(&".".repeat(load.value_len - value.len()));
                        }
                        let nodes = targets.lock().clone();
                        if put_anywhere(&nodes, &key, &value, patience).await.is_ok() {
                            acked.lock().insert(key, value);
                            count.fetch_add(1, Ordering::Relaxed);
                        } else if load.until_first_failure {
                            return;
                        }
                        i += 1;
                        tokio::time::sleep(load.pace).await;
                    }
                })
            })
            .collect();
        Writers { stop, acked, count, tasks }
    }

    /// How many writes were acknowledged so far.
    pub fn count(&self) -> usize {
        self.count.load(Ordering::Relaxed)
    }

    /// Waits until at least `at_least` writes are acknowledged (at most 60 s).
    pub async fn wait_count(&self, at_least: usize) {
        let what = format!("{at_least} acknowledged writes");
        eventually(Duration::from_secs(60), &what, || async {
            let count = self.count();
            if count >= at_least {
                Ok(())
            } else {
                Err(format!("{count} acknowledged"))
            }
        })
        .await
    }

    /// Waits until `more` writes beyond the current count are acknowledged (at most 60 s).
    pub async fn wait_more(&self, more: usize) {
        self.wait_count(self.count() + more).await
    }

    /// Stops the writers and returns every acknowledged write.
    pub async fn finish(self) -> BTreeMap<String, String> {
        self.stop.store(true, Ordering::Relaxed);
        self.join().await
    }

    /// Waits (at most 30 s) for the writers to stop on their own (with `until_first_failure`, once
    /// their node is gone) and returns every acknowledged write.
    pub async fn join(self) -> BTreeMap<String, String> {
        for task in self.tasks {
            tokio::time::timeout(Duration::from_secs(30), task).await.expect("the writers stop").unwrap();
        }
        let acked = self.acked.lock().clone();
        acked
    }
}
