//! The `fekv` subcommands besides `serve`: `placement` (the placement service), `cluster` (a local
//! cluster on loopback for trying replication on one machine) and `ctl` (the admin CLI, whose
//! `check` lives in `check`).

pub mod check;
pub mod cluster;
pub mod ctl;
pub mod placement;
