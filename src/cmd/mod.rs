//! The `fekv` subcommands besides `serve`: `placement` (the placement service) and `cluster` (a local
//! cluster on loopback for trying replication on one machine).

pub mod cluster;
pub mod placement;
