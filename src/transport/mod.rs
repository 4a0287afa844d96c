//! Transports: adapters that carry raft messages between stores, implementing the ports the raftstore
//! defines in [`crate::raftstore::transport`]. Outgoing, a
//! [`Transport`](crate::raftstore::transport::Transport) takes messages during a round
//! and sends them at `flush`; incoming, an adapter delivers into the store's
//! [`crate::raftstore::inbox::RaftInbox`], along with the fate of every snapshot it sent and the
//! peers it could not reach.
//!
//! Adapters: [`grpc::GrpcTransport`] (between processes, with [`grpc::RaftTransportService`] as its
//! receiving side), [`sim::SimNetwork`] (in-process, with partitions, drops and delays, for tests), and
//! [`Unconnected`](crate::raftstore::transport::Unconnected) (a store with no peers, defined with the port).

pub mod grpc;
pub mod sim;
