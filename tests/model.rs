//! A model test of the state machine: random operations go through the real node (router → raft →
//! apply → LMDB) and through a `BTreeMap`, with `Reopen` steps that stop the node and open its data
//! directory again. After every step, every key's value and revision must agree with the model.

#[allow(dead_code)] // this binary waits, it starts no fixture
#[path = "common/wait.rs"]
mod wait;

use std::collections::BTreeMap;
use std::time::Duration;

use fekv::config::Config;
use fekv::node::Node;
use fekv::proto::{request::Cmd, DeleteRequest, Precondition, PutRequest, Request};
use fekv::raftstore::Error;
use proptest::prelude::*;
use wait::eventually;

const KEYS: u8 = 6;

#[derive(Debug, Clone)]
enum Op {
    Put {
        key: u8,
        value: Vec<u8>,
    },
    Delete {
        key: u8,
    },
    /// If-Match with the model's current revision (`stale = false`) or a wrong one.
    CompareAndSet {
        key: u8,
        value: Vec<u8>,
        stale: bool,
    },
    /// If-None-Match: *
    CreateOnly {
        key: u8,
        value: Vec<u8>,
    },
    Reopen,
}

fn op() -> impl Strategy<Value = Op> {
    let key = 0..KEYS;
    let value = proptest::collection::vec(any::<u8>(), 0..48);
    prop_oneof![
        4 => (key.clone(), value.clone()).prop_map(|(key, value)| Op::Put { key, value }),
        2 => key.clone().prop_map(|key| Op::Delete { key }),
        2 => (key.clone(), value.clone(), any::<bool>()).prop_map(|(key, value, stale)| Op::CompareAndSet { key, value, stale }),
        1 => (key, value).prop_map(|(key, value)| Op::CreateOnly { key, value }),
        1 => Just(Op::Reopen),
    ]
}

fn key_bytes(key: u8) -> Vec<u8> {
    format!("key-{key}").into_bytes()
}

struct Harness {
    config: Config,
    node: Option<Node>,
    runtime: tokio::runtime::Runtime,
    _watchdog: wait::Watchdog,
}

impl Harness {
    fn new(dir: &std::path::Path) -> Harness {
        let config = Config {
            data_dir: dir.to_path_buf(),
            raft_tick_interval: Duration::from_millis(10),
            // Tiny, so compaction happens inside a case and reopening after it is covered too.
            raft_log_gc_threshold: 4,
            ..Config::default()
        };
        let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        let node = Some(Node::start(&config).unwrap());
        Harness { config, node, runtime, _watchdog: wait::Watchdog::default() }
    }

    fn node(&self) -> &Node {
        self.node.as_ref().unwrap()
    }

    fn reopen(&mut self) {
        self.node.take().unwrap().stop();
        self.node = Some(Node::start(&self.config).expect("reopen after stop"));
    }

    fn write(&self, cmd: Cmd) -> Result<u64, Error> {
        let router = self.node().router().clone();
        // A freshly (re)started node elects itself at once, but give raft a bounded moment.
        self.runtime.block_on(eventually(Duration::from_secs(5), "a leader to take the write", || async {
            match router.write(1, vec![Request { cmd: Some(cmd.clone()) }]).await {
                Err(err @ Error::NotLeader { .. }) => Err(err),
                other => Ok(other.map(|w| w.revision)),
            }
        }))
    }

    /// A linearizable read, as the REST handler does it.
    fn read(&self, key: &[u8]) -> Option<(Vec<u8>, u64)> {
        let router = self.node().router().clone();
        self.runtime.block_on(eventually(Duration::from_secs(5), "a leader to read from", || async {
            match router.read_index(1).await {
                Ok(()) => Ok(()),
                Err(err @ Error::NotLeader { .. }) => Err(err),
                Err(err) => panic!("read index: {err}"),
            }
        }));
        let engine = self.node().engine();
        let txn = engine.read_txn().unwrap();
        engine.get_data(&txn, key).unwrap().map(|r| (r.value.to_vec(), r.revision))
    }
}

fn check_all(harness: &Harness, model: &BTreeMap<u8, (Vec<u8>, u64)>) {
    for key in 0..KEYS {
        assert_eq!(harness.read(&key_bytes(key)), model.get(&key).cloned(), "key {key}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, max_shrink_iters: 64, ..ProptestConfig::default() })]

    #[test]
    fn the_store_behaves_like_a_map_across_reopens(ops in proptest::collection::vec(op(), 1..40)) {
        let dir = tempfile::tempdir().unwrap();
        let mut harness = Harness::new(dir.path());
        let mut model: BTreeMap<u8, (Vec<u8>, u64)> = BTreeMap::new();
        let mut last_revision = 0;
        for op in ops {
            match op {
                Op::Put { key, value } => {
                    let cmd = Cmd::Put(PutRequest { key: key_bytes(key), value: value.clone(), precondition: None });
                    let revision = harness.write(cmd).unwrap();
                    prop_assert!(revision > last_revision);
                    last_revision = revision;
                    model.insert(key, (value, revision));
                }
                Op::Delete { key } => {
                    let revision = harness.write(Cmd::Delete(DeleteRequest { key: key_bytes(key), precondition: None })).unwrap();
                    prop_assert!(revision > last_revision);
                    last_revision = revision;
                    model.remove(&key);
                }
                Op::CompareAndSet { key, value, stale } => {
                    let current = model.get(&key).map(|(_, rev)| *rev);
                    let expected = if stale { current.unwrap_or(0) + 1_000_000 } else { current.unwrap_or(1) };
                    let precondition = Some(Precondition { if_match: vec![expected], ..Default::default() });
                    let result = harness.write(Cmd::Put(PutRequest { key: key_bytes(key), value: value.clone(), precondition }));
                    match (current, stale) {
                        (Some(_), false) => {
                            let revision = result.unwrap();
                            last_revision = revision;
                            model.insert(key, (value, revision));
                        }
                        _ => match result {
                            Err(Error::PreconditionFailed { current_revision }) => prop_assert_eq!(current_revision, current),
                            other => prop_assert!(false, "expected 412, got {:?}", other),
                        },
                    }
                }
                Op::CreateOnly { key, value } => {
                    let precondition = Some(Precondition { if_absent: true, ..Default::default() });
                    let result = harness.write(Cmd::Put(PutRequest { key: key_bytes(key), value: value.clone(), precondition }));
                    match model.get(&key) {
                        None => {
                            let revision = result.unwrap();
                            last_revision = revision;
                            model.insert(key, (value, revision));
                        }
                        Some((_, rev)) => match result {
                            Err(Error::PreconditionFailed { current_revision }) => prop_assert_eq!(current_revision, Some(*rev)),
                            other => prop_assert!(false, "expected 412, got {:?}", other),
                        },
                    }
                }
                Op::Reopen => harness.reopen(),
            }
            check_all(&harness, &model);
        }
        harness.reopen();
        check_all(&harness, &model);
    }
}
