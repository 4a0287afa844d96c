//! The `fekv` subcommands besides `serve`: `placement` (the placement service), `cluster` (a local
//! cluster on loopback for trying replication on one machine) and `ctl` (the admin CLI).

pub mod cluster;
pub mod cluster_tls;
pub mod ctl;
pub mod placement;
