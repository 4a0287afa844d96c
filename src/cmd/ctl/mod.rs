//! `fekv ctl`: the admin CLI. It asks the placement service (gRPC) about stores and regions, and each
//! node (HTTP `/status`, `/health`) about itself, then prints a table or JSON.
//!
//! It reads, and it asks placement for changes: `region split|transfer-leader|add-peer|remove-peer`
//! become operators placement hands to the region's leader; `store remove` drains a store; `scheduler
//! enable|disable` switches a scheduler. It never talks raft and never touches data. Every call has a
//! deadline, so an unreachable placement service or node is an error within seconds, never a hang;
//! `--wait` polls placement until the request's operator ends and the change shows, up to
//! `--wait-timeout`, and fails unless the operator succeeded.
//!
//! - this file: the command line, and which command does what;
//! - `shared`: what every command shares: the error, the output format, a node call's deadline, printing;
//! - `client`: the placement service, every call bounded and carrying the caller's credentials;
//! - `actions`: the commands that change something, and their `--wait`;
//! - `auth`: users, roles and the auth switch, and the credential flags;
//! - `check`: `ctl check`, every node checking its whole store;
//! - `placement`: the placement replicas themselves (`placement list|transfer-leader`);
//! - `probe`: the nodes, asked directly (`http`: over HTTP or HTTPS);
//! - `render`: tables and JSON.

use std::time::Duration;

mod actions;
mod auth;
mod check;
mod client;
mod http;
mod placement;
mod probe;
mod render;
mod shared;

use actions::{finish_operator, remove_store, split, transfer_leader};
pub use auth::{AuthCommand, CredentialArgs, RoleCommand, UserCommand};
use client::PlacementConn;
use http::NodeHttp;
use probe::{fail_if_any, probe_all, NodeProbe};
use render::*;
use shared::{now_ms, parse_key, print};
pub use shared::{CtlError, Output};

#[derive(Debug, Clone, clap::Args)]
pub struct CtlArgs {
    /// Placement replicas, comma-separated (host:port, http:// or https:// URLs); ctl finds the leader
    #[arg(long, env = "FEKV_PLACEMENT", default_value = "127.0.0.1:2379", global = true)]
    pub placement: String,
    /// How long one call may look for the placement leader across the replicas
    #[arg(long, env = "FEKV_PLACEMENT_TIMEOUT", default_value = "3s", value_parser = humantime::parse_duration, global = true)]
    pub placement_timeout: Duration,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    #[command(flatten)]
    pub credentials: CredentialArgs,
    /// TLS to placement and the nodes (https://); mutual with --cert and --key
    #[command(flatten)]
    pub tls: crate::security::config::ClientTlsArgs,
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `--wait` and `--wait-timeout`, shared by every command that changes something. What `--wait`
/// waits for is each command's own (its help says).
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Wait {
    /// Wait until the change is done, and fail unless it succeeded
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits
    #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
    pub wait_timeout: Duration,
}

impl Wait {
    /// How long to wait, if at all.
    fn limit(self) -> Option<Duration> {
        self.wait.then_some(self.wait_timeout)
    }
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum CtlCommand {
    /// Stores: addresses, liveness, regions, leaders, used bytes (from placement)
    #[command(subcommand)]
    Store(StoreCommand),
    /// Regions: ranges, epochs, peers, leaders (from placement); ask for a split
    #[command(subcommand)]
    Region(RegionCommand),
    /// Every node, asked directly over HTTP
    #[command(subcommand)]
    Cluster(ClusterCommand),
    /// Operators: the changes placement is making to regions, and the recent ones
    #[command(subcommand)]
    Operator(OperatorCommand),
    /// The schedulers that repair and balance the cluster by themselves
    #[command(subcommand)]
    Scheduler(SchedulerCommand),
    /// Have every node check its whole store for damage now, and print what they found
    Check(check::CheckArgs),
    /// Users of the client API (once auth is enabled, every request needs one)
    #[command(subcommand)]
    User(UserCommand),
    /// Roles: which key prefixes their users may read or write
    #[command(subcommand)]
    Role(RoleCommand),
    /// Turn auth on or off, or see whether it is on
    #[command(subcommand)]
    Auth(AuthCommand),
    /// The placement replicas: who leads, their raft progress and health; hand leadership over
    #[command(subcommand)]
    Placement(placement::PlacementCommand),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum StoreCommand {
    /// Every registered store
    List,
    /// Drain a store: it goes offline, its replicas move to other stores, then it is removed for good
    /// (a removed store may not rejoin; wipe its data directory to bring the machine back as a new store)
    #[command(mut_arg("wait", |a| a.help("Wait until the store is drained and removed")))]
    Remove {
        /// The store's id (see `store list`)
        store_id: u64,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum OperatorCommand {
    /// Running operators and the most recent finished ones, with their steps and state
    List,
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum SchedulerCommand {
    /// Every scheduler and whether it runs
    List,
    /// Switch a scheduler on (balance-leader, balance-region)
    Enable {
        /// The scheduler's name (see `scheduler list`)
        name: String,
    },
    /// Switch a scheduler off; its running operators finish (replica-check cannot be switched off)
    Disable {
        /// The scheduler's name (see `scheduler list`)
        name: String,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum RegionCommand {
    /// Every region, in key order
    List,
    /// One region by id
    Show {
        /// The region's id (see `region list`)
        region_id: u64,
    },
    /// The region whose range holds a key
    Find {
        /// The key, percent-encoded as in the REST API's URLs (a%2Fb%00 is the key "a/b\0")
        key: String,
    },
    /// Ask placement to have the region's leader split it, at --key or in the middle
    #[command(mut_arg("wait", |a| a.help(
        "Wait until this split is done and placement knows both halves; fail if it was cancelled (the region \
         split elsewhere first) or timed out"
    )))]
    Split {
        /// The region's id (see `region list`)
        region_id: u64,
        /// Split key, percent-encoded; the right part starts at it
        #[arg(long)]
        key: Option<String>,
        #[command(flatten)]
        wait: Wait,
    },
    /// Ask placement to have the region's leader hand leadership to its peer on a store
    #[command(mut_arg("wait", |a| a.help("Wait until placement sees that store leading the region")))]
    TransferLeader {
        /// The region's id (see `region list`)
        region_id: u64,
        /// The store that should lead it (it must hold a peer of the region)
        store_id: u64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Add a peer of the region on a store (it is filled by a snapshot from the leader)
    #[command(mut_arg("wait", |a| a.help("Wait until the new peer has caught up")))]
    AddPeer {
        /// The region's id (see `region list`)
        region_id: u64,
        /// The store to hold the new peer (up, without a peer of the region)
        store_id: u64,
        #[command(flatten)]
        wait: Wait,
    },
    /// Remove the region's peer on a store (if it leads, leadership moves to another peer first)
    #[command(mut_arg("wait", |a| a.help("Wait until the peer is gone")))]
    RemovePeer {
        /// The region's id (see `region list`)
        region_id: u64,
        /// The store whose peer goes
        store_id: u64,
        #[command(flatten)]
        wait: Wait,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterCommand {
    /// One line per node from its /status: version, regions, leaders, applied index; down if silent
    Status,
    /// Each node's /health, with how long it took; exits non-zero if any node is unhealthy
    Health,
}

/// Runs one `fekv ctl` command, printing its result on stdout.
pub async fn run(args: CtlArgs) -> Result<(), CtlError> {
    use crate::security::tls::{AppProtocol, ClientTls};
    let authorization = args.credentials.authorization()?;
    let settings = args.tls.settings()?;
    let load = |protocol| settings.clone().map(|s| ClientTls::load(s, protocol).map(std::sync::Arc::new)).transpose();
    let placement = PlacementConn::new(
        &args.placement,
        load(AppProtocol::Grpc)?,
        authorization.as_deref(),
        args.placement_timeout,
    )?;
    let nodes_http = NodeHttp::new(load(AppProtocol::Http1)?, authorization.as_deref())?;
    let output = args.output;
    match args.command {
        CtlCommand::User(command) => auth::user(&placement, command, output).await,
        CtlCommand::Role(command) => auth::role(&placement, command, output).await,
        CtlCommand::Auth(command) => auth::auth(&placement, command, output).await,
        CtlCommand::Placement(command) => placement::run(&placement, command, output).await,
        CtlCommand::Store(StoreCommand::List) => {
            let stores = placement.stores().await?;
            print(&render_stores(&stores, now_ms(), output))
        }
        CtlCommand::Region(RegionCommand::List) => print(&render_regions(&placement.regions().await?, output)),
        CtlCommand::Region(RegionCommand::Show { region_id }) => {
            let info = placement.region(region_id).await?.ok_or(CtlError::NoSuchRegion(region_id))?;
            print(&render_region(&info, output))
        }
        CtlCommand::Region(RegionCommand::Find { key }) => {
            let decoded = parse_key(&key)?;
            let info = placement.region_by_key(decoded).await?.ok_or(CtlError::NoRegionForKey(key))?;
            print(&render_region(&info, output))
        }
        CtlCommand::Region(RegionCommand::Split { region_id, key, wait }) => {
            split(&placement, region_id, key.as_deref(), wait.limit(), output).await
        }
        CtlCommand::Region(RegionCommand::TransferLeader { region_id, store_id, wait }) => {
            transfer_leader(&placement, region_id, store_id, wait.limit(), output).await
        }
        CtlCommand::Region(RegionCommand::AddPeer { region_id, store_id, wait }) => {
            let operator = placement.add_peer(region_id, store_id).await?;
            finish_operator(&placement, operator, wait.limit(), output).await
        }
        CtlCommand::Region(RegionCommand::RemovePeer { region_id, store_id, wait }) => {
            let operator = placement.remove_peer(region_id, store_id).await?;
            finish_operator(&placement, operator, wait.limit(), output).await
        }
        CtlCommand::Store(StoreCommand::Remove { store_id, wait }) => {
            remove_store(&placement, store_id, wait.limit(), output).await
        }
        CtlCommand::Operator(OperatorCommand::List) => {
            let (running, history) = placement.operators().await?;
            print(&render_operators(&running, &history, now_ms(), output))
        }
        CtlCommand::Scheduler(command) => {
            let schedulers = match command {
                SchedulerCommand::List => placement.schedulers().await?,
                SchedulerCommand::Enable { name } => placement.set_scheduler(name, true).await?,
                SchedulerCommand::Disable { name } => placement.set_scheduler(name, false).await?,
            };
            print(&render_schedulers(&schedulers, output))
        }
        CtlCommand::Cluster(ClusterCommand::Status) => {
            let stores = placement.live_stores().await?;
            let nodes = probe_all(&nodes_http, &stores, NodeProbe::Status).await;
            print(&render_cluster_status(&nodes, output))?;
            fail_if_any(&nodes, "did not answer")
        }
        CtlCommand::Check(check) => {
            let nodes = match check.nodes.is_empty() {
                true => placement.live_stores().await?.into_iter().map(|s| (s.store_id, s.http_addr)).collect(),
                false => check.nodes.iter().map(|addr| (0, addr.clone())).collect(),
            };
            check::run(&nodes_http, nodes, &check, output).await
        }
        CtlCommand::Cluster(ClusterCommand::Health) => {
            let stores = placement.live_stores().await?;
            let nodes = probe_all(&nodes_http, &stores, NodeProbe::Health).await;
            print(&render_cluster_health(&nodes, output))?;
            fail_if_any(&nodes, "are unhealthy")
        }
    }
}
