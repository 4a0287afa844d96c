//! A peer's linearizable reads: the ReadIndex batches of each round, released once the applied index
//! reaches the index raft confirmed.

use raft::ReadState;

use super::{Peer, ReadBatch};
use crate::raftstore::error::Error;
use crate::raftstore::msg::Callback;

impl Peer {
    /// A linearizable-read barrier; batched with the other reads of this round.
    pub fn on_read_index(&mut self, callback: Callback<()>) {
        if !self.is_leader() {
            let _ = callback.send(Err(self.not_leader()));
            return;
        }
        self.new_reads.push(callback);
    }

    /// Issues one ReadIndex for the reads that arrived this round. raft-rs silently drops a ReadIndex
    /// until the leader has committed an entry of its own term, so the batch waits for that here.
    pub fn issue_reads(&mut self) {
        if self.new_reads.is_empty() || !self.is_leader() || !self.raw.raft.commit_to_current_term() {
            return;
        }
        let id = self.next_read_id;
        self.next_read_id += 1;
        self.ask_read_index(id);
        let callbacks = std::mem::take(&mut self.new_reads);
        self.read_batches.push_back(ReadBatch { id, callbacks, read_index: None, asked_at_tick: self.ticks });
    }

    pub(super) fn on_read_state(&mut self, state: ReadState) {
        let Ok(id) = <[u8; 8]>::try_from(state.request_ctx.as_slice()).map(u64::from_be_bytes) else {
            return;
        };
        if let Some(batch) = self.read_batches.iter_mut().find(|b| b.id == id) {
            batch.read_index = Some(state.index);
        }
    }

    /// Answers the reads whose read index has been applied.
    pub(super) fn release_reads(&mut self) {
        let applied = self.raw.store().apply_state().applied_index;
        self.read_batches.retain_mut(|batch| match batch.read_index {
            Some(index) if index <= applied => {
                for callback in batch.callbacks.drain(..) {
                    let _ = callback.send(Ok(()));
                }
                false
            }
            _ => true,
        });
    }

    /// One ReadIndex request to raft (counted: `fekv_raftstore_read_index_total`).
    pub(super) fn ask_read_index(&mut self, id: u64) {
        self.metrics.raft_read_index.inc();
        self.raw.read_index(id.to_be_bytes().to_vec());
    }

    pub(super) fn fail_reads(&mut self, err: &Error) {
        for callback in self.new_reads.drain(..).chain(self.read_batches.drain(..).flat_map(|b| b.callbacks)) {
            let _ = callback.send(Err(err.clone()));
        }
    }
}
