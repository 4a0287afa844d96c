//! `fekv ctl`: the admin CLI. It asks the placement service (gRPC) about stores and regions, and each
//! node (HTTP `/status`, `/health`) about itself, then prints a table or JSON.
//!
//! It reads, and it asks placement for changes: `region split|transfer-leader|add-peer|remove-peer`
//! become operators placement hands to the region's leader; `store remove` drains a store; `scheduler
//! enable|disable` switches a scheduler. It never talks raft and never touches data. Every call has a
//! deadline, so an unreachable placement service or node is an error within seconds, never a hang;
//! `--wait` polls placement until the change shows, up to its own deadline.

use std::future::Future;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use tonic::transport::Channel;

use crate::api::display_key;
use crate::proto::placement_client::PlacementClient;
use crate::proto::{
    AddPeerRequest, GetOperatorsRequest, GetRegionByKeyRequest, GetRegionsRequest, GetSchedulersRequest,
    GetStoresRequest, OperatorInfo, OperatorState, RegionInfo, RemovePeerRequest, RemoveStoreRequest, SchedulerInfo,
    SetSchedulerRequest, SplitRegionRequest, StepKind, StoreInfo, StoreState,
};

/// How long one call to placement or to a node may take, connecting included.
const CALL_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `region split --wait` waits for the region's epoch version to grow.
const SPLIT_WAIT: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, clap::Args)]
pub struct CtlArgs {
    /// Address of the placement service (host:port)
    #[arg(long, env = "FEKV_PLACEMENT", default_value = "127.0.0.1:2379", global = true)]
    pub placement: String,
    /// Output format
    #[arg(short = 'o', long = "output", value_enum, default_value_t = Output::Table, global = true)]
    pub output: Output,
    #[command(subcommand)]
    pub command: CtlCommand,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people
    Table,
    /// JSON with stable field names, for scripts
    Json,
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
    Check(super::check::CheckArgs),
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum StoreCommand {
    /// Every registered store
    List,
    /// Drain a store: it goes offline, its replicas move to other stores, then it is removed for good
    /// (a removed store may not rejoin; wipe its data directory to bring the machine back as a new store)
    Remove {
        /// The store's id (see `store list`)
        store_id: u64,
        /// Wait until the store is drained and removed
        #[arg(long)]
        wait: bool,
        /// How long --wait waits
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
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
    Split {
        /// The region's id (see `region list`)
        region_id: u64,
        /// Split key, percent-encoded; the right part starts at it
        #[arg(long)]
        key: Option<String>,
        /// Wait (up to 10 s) until placement sees the region's epoch version grow
        #[arg(long)]
        wait: bool,
    },
    /// Ask placement to have the region's leader hand leadership to its peer on a store
    TransferLeader {
        /// The region's id (see `region list`)
        region_id: u64,
        /// The store that should lead it (it must hold a peer of the region)
        store_id: u64,
        /// Wait (up to 10 s) until placement sees that store leading the region
        #[arg(long)]
        wait: bool,
    },
    /// Add a peer of the region on a store (it is filled by a snapshot from the leader)
    AddPeer {
        /// The region's id (see `region list`)
        region_id: u64,
        /// The store to hold the new peer (up, without a peer of the region)
        store_id: u64,
        /// Wait until the new peer has caught up
        #[arg(long)]
        wait: bool,
        /// How long --wait waits
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
    },
    /// Remove the region's peer on a store (if it leads, leadership moves to another peer first)
    RemovePeer {
        /// The region's id (see `region list`)
        region_id: u64,
        /// The store whose peer goes
        store_id: u64,
        /// Wait until the peer is gone
        #[arg(long)]
        wait: bool,
        /// How long --wait waits
        #[arg(long, default_value = "60s", value_parser = humantime::parse_duration)]
        wait_timeout: Duration,
    },
}

#[derive(Debug, Clone, clap::Subcommand)]
pub enum ClusterCommand {
    /// One line per node from its /status: version, regions, leaders, applied index; down if silent
    Status,
    /// Each node's /health, with how long it took; exits non-zero if any node is unhealthy
    Health,
}

#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    #[error("invalid placement address {addr}: {reason}")]
    Address { addr: String, reason: String },
    #[error("cannot reach the placement service at {addr}: {reason}")]
    PlacementUnreachable { addr: String, reason: String },
    #[error("the placement service at {addr} refused the request: {message}")]
    PlacementRefused { addr: String, message: String },
    #[error("region {0} is not known to placement")]
    NoSuchRegion(u64),
    #[error("no known region holds the key {0:?}")]
    NoRegionForKey(String),
    #[error("invalid key {key:?}: {reason}")]
    BadKey { key: String, reason: String },
    #[error("region {region_id} was not seen split within {waited:?} (its epoch version is still {version})")]
    SplitTimeout { region_id: u64, waited: Duration, version: u64 },
    #[error("region {region_id} was still led by store {leader_store_id} after {waited:?}")]
    TransferTimeout { region_id: u64, waited: Duration, leader_store_id: u64 },
    #[error("operator {operator_id} on region {region_id} ended {state}: {note}")]
    OperatorFailed { operator_id: u64, region_id: u64, state: String, note: String },
    #[error("operator {operator_id} on region {region_id} was still running after {waited:?} (see `fekv ctl operator list`)")]
    OperatorTimeout { operator_id: u64, region_id: u64, waited: Duration },
    #[error("operator {operator_id} is no longer tracked by placement (restarted?); check `fekv ctl region show {region_id}`")]
    OperatorLost { operator_id: u64, region_id: u64 },
    #[error("store {store_id} still held {region_count} regions after {waited:?}; it stays offline and keeps draining (see `fekv ctl operator list`)")]
    DrainTimeout { store_id: u64, region_count: u64, waited: Duration },
    #[error("store {0} is not registered")]
    NoSuchStore(u64),
    #[error("{failed} of {total} nodes {what}")]
    Nodes { failed: usize, total: usize, what: &'static str },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
}

/// Runs one `fekv ctl` command, printing its result on stdout.
pub async fn run(args: CtlArgs) -> Result<(), CtlError> {
    let placement = PlacementConn::new(&args.placement)?;
    let output = args.output;
    match args.command {
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
            split(&placement, region_id, key.as_deref(), wait, output).await
        }
        CtlCommand::Region(RegionCommand::TransferLeader { region_id, store_id, wait }) => {
            transfer_leader(&placement, region_id, store_id, wait, output).await
        }
        CtlCommand::Region(RegionCommand::AddPeer { region_id, store_id, wait, wait_timeout }) => {
            let operator = placement.add_peer(region_id, store_id).await?;
            finish_operator(&placement, operator, wait.then_some(wait_timeout), output).await
        }
        CtlCommand::Region(RegionCommand::RemovePeer { region_id, store_id, wait, wait_timeout }) => {
            let operator = placement.remove_peer(region_id, store_id).await?;
            finish_operator(&placement, operator, wait.then_some(wait_timeout), output).await
        }
        CtlCommand::Store(StoreCommand::Remove { store_id, wait, wait_timeout }) => {
            remove_store(&placement, store_id, wait.then_some(wait_timeout), output).await
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
            let nodes = probe_all(&stores, NodeProbe::Status).await;
            print(&render_cluster_status(&nodes, output))?;
            fail_if_any(&nodes, "did not answer")
        }
        CtlCommand::Check(check) => {
            let nodes = match check.nodes.is_empty() {
                true => placement.live_stores().await?.into_iter().map(|s| (s.store_id, s.http_addr)).collect(),
                false => check.nodes.iter().map(|addr| (0, addr.clone())).collect(),
            };
            super::check::run(nodes, &check, output).await
        }
        CtlCommand::Cluster(ClusterCommand::Health) => {
            let stores = placement.live_stores().await?;
            let nodes = probe_all(&stores, NodeProbe::Health).await;
            print(&render_cluster_health(&nodes, output))?;
            fail_if_any(&nodes, "are unhealthy")
        }
    }
}

pub(crate) fn print(text: &str) -> Result<(), CtlError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        // `fekv ctl ... | head` closing the pipe early is not an error of ours.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Keys on the command line take the REST API's form: percent-encoded, strictly.
fn parse_key(raw: &str) -> Result<Vec<u8>, CtlError> {
    crate::api::request::decode_key(raw, crate::config::MAX_KEY_SIZE)
        .map_err(|err| CtlError::BadKey { key: raw.to_string(), reason: err.to_string() })
}

// ---- placement ----

/// The placement service, every call bounded by [`CALL_TIMEOUT`].
struct PlacementConn {
    addr: String,
    client: PlacementClient<Channel>,
}

impl PlacementConn {
    fn new(addr: &str) -> Result<PlacementConn, CtlError> {
        let invalid = |reason: String| CtlError::Address { addr: addr.to_string(), reason };
        // Take a URL too, as people paste them.
        let addr = addr.strip_prefix("http://").unwrap_or(addr).trim_end_matches('/');
        if addr.is_empty() || addr.contains('/') {
            return Err(invalid("expected host:port".into()));
        }
        let channel = Channel::from_shared(format!("http://{addr}"))
            .map_err(|e| invalid(e.to_string()))?
            .connect_timeout(CALL_TIMEOUT)
            .timeout(CALL_TIMEOUT)
            .connect_lazy();
        Ok(PlacementConn { addr: addr.to_string(), client: PlacementClient::new(channel) })
    }

    /// Awaits one RPC with a deadline; transport failures mean unreachable, anything else is
    /// placement's answer.
    async fn call<T>(
        &self,
        rpc: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, CtlError> {
        match tokio::time::timeout(CALL_TIMEOUT, rpc).await {
            Err(_) => Err(CtlError::PlacementUnreachable {
                addr: self.addr.clone(),
                reason: format!("no answer within {CALL_TIMEOUT:?}"),
            }),
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            Ok(Err(status)) => Err(match status.code() {
                // The channel's own timeout ("Timeout expired") ends a call to something that
                // accepted the connection but never answered.
                tonic::Code::Cancelled | tonic::Code::DeadlineExceeded => CtlError::PlacementUnreachable {
                    addr: self.addr.clone(),
                    reason: format!("no answer within {CALL_TIMEOUT:?} ({})", status.message()),
                },
                tonic::Code::Unavailable | tonic::Code::Unknown => {
                    CtlError::PlacementUnreachable { addr: self.addr.clone(), reason: describe(&status) }
                }
                // Something answered, but not a placement service (tonic maps a plain HTTP 404 here).
                tonic::Code::Unimplemented => CtlError::PlacementUnreachable {
                    addr: self.addr.clone(),
                    reason: format!("it does not answer as a fekv placement service ({})", status.message()),
                },
                _ => CtlError::PlacementRefused { addr: self.addr.clone(), message: status.message().to_string() },
            }),
        }
    }

    async fn stores(&self) -> Result<Vec<StoreInfo>, CtlError> {
        Ok(self.call(self.client.clone().get_stores(GetStoresRequest {})).await?.stores)
    }

    /// Every store that has not been removed from the cluster.
    async fn live_stores(&self) -> Result<Vec<StoreInfo>, CtlError> {
        let mut stores = self.stores().await?;
        stores.retain(|s| s.state != StoreState::Removed as i32);
        Ok(stores)
    }

    async fn add_peer(&self, region_id: u64, store_id: u64) -> Result<OperatorInfo, CtlError> {
        let reply = self.call(self.client.clone().add_peer(AddPeerRequest { region_id, store_id })).await?;
        Ok(reply.operator.unwrap_or_default())
    }

    async fn remove_peer(&self, region_id: u64, store_id: u64) -> Result<OperatorInfo, CtlError> {
        let reply = self.call(self.client.clone().remove_peer(RemovePeerRequest { region_id, store_id })).await?;
        Ok(reply.operator.unwrap_or_default())
    }

    async fn operators(&self) -> Result<(Vec<OperatorInfo>, Vec<OperatorInfo>), CtlError> {
        let reply = self.call(self.client.clone().get_operators(GetOperatorsRequest {})).await?;
        Ok((reply.running, reply.history))
    }

    async fn remove_store(&self, store_id: u64) -> Result<StoreInfo, CtlError> {
        let reply = self.call(self.client.clone().remove_store(RemoveStoreRequest { store_id })).await?;
        Ok(reply.store.unwrap_or_default())
    }

    async fn schedulers(&self) -> Result<Vec<SchedulerInfo>, CtlError> {
        Ok(self.call(self.client.clone().get_schedulers(GetSchedulersRequest {})).await?.schedulers)
    }

    async fn set_scheduler(&self, name: String, enabled: bool) -> Result<Vec<SchedulerInfo>, CtlError> {
        let request = SetSchedulerRequest { name, enabled };
        Ok(self.call(self.client.clone().set_scheduler(request)).await?.schedulers)
    }

    async fn regions(&self) -> Result<Vec<RegionInfo>, CtlError> {
        Ok(self.call(self.client.clone().get_regions(GetRegionsRequest {})).await?.regions)
    }

    async fn region(&self, region_id: u64) -> Result<Option<RegionInfo>, CtlError> {
        Ok(self.regions().await?.into_iter().find(|info| info.region.as_ref().map(|r| r.region_id) == Some(region_id)))
    }

    async fn region_by_key(&self, key: Vec<u8>) -> Result<Option<RegionInfo>, CtlError> {
        Ok(self.call(self.client.clone().get_region_by_key(GetRegionByKeyRequest { key })).await?.region)
    }

    async fn transfer_leader(&self, region_id: u64, to_store_id: u64) -> Result<(), CtlError> {
        let request = crate::proto::TransferLeaderRequest { region_id, to_store_id };
        self.call(self.client.clone().transfer_leader(request)).await?;
        Ok(())
    }

    async fn split(&self, region_id: u64, split_key: Vec<u8>) -> Result<(), CtlError> {
        self.call(self.client.clone().split_region(SplitRegionRequest { region_id, split_key })).await?;
        Ok(())
    }
}

/// A gRPC status with the transport error underneath it ("tcp connect error: Connection refused").
fn describe(status: &tonic::Status) -> String {
    let mut text = status.message().to_string();
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        let more = err.to_string();
        if !text.contains(&more) {
            text = if text.is_empty() { more } else { format!("{text}: {more}") };
        }
        source = err.source();
    }
    if text.is_empty() {
        format!("{:?}", status.code())
    } else {
        text
    }
}

/// `region transfer-leader`: asks placement; with `wait`, polls until placement sees the new leader.
async fn transfer_leader(
    placement: &PlacementConn,
    region_id: u64,
    store_id: u64,
    wait: bool,
    output: Output,
) -> Result<(), CtlError> {
    placement.transfer_leader(region_id, store_id).await?;
    let mut leader_store_id = 0;
    if wait {
        let deadline = Instant::now() + SPLIT_WAIT;
        loop {
            let info = placement.region(region_id).await?.ok_or(CtlError::NoSuchRegion(region_id))?;
            leader_store_id = info.leader_store_id;
            if leader_store_id == store_id {
                break;
            }
            if Instant::now() >= deadline {
                return Err(CtlError::TransferTimeout { region_id, waited: SPLIT_WAIT, leader_store_id });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    print(&match output {
        Output::Json => pretty(&json!({
            "region_id": region_id,
            "to_store_id": store_id,
            "requested": true,
            "leader_store_id": wait.then_some(leader_store_id),
        })),
        Output::Table if wait => format!("region {region_id} is now led by store {store_id}\n"),
        Output::Table => {
            format!("leader transfer of region {region_id} to store {store_id} requested; its leader carries it out\n")
        }
    })
}

async fn split(
    placement: &PlacementConn,
    region_id: u64,
    key: Option<&str>,
    wait: bool,
    output: Output,
) -> Result<(), CtlError> {
    let split_key = key.map(parse_key).transpose()?.unwrap_or_default();
    // The epoch before the request, to tell when the split has happened.
    let before = match wait {
        true => Some(placement.region(region_id).await?.ok_or(CtlError::NoSuchRegion(region_id))?),
        false => None,
    };
    placement.split(region_id, split_key.clone()).await?;
    let at = if split_key.is_empty() { "in the middle".to_string() } else { format!("at {}", display_key(&split_key)) };
    let Some(before) = before else {
        return print(&match output {
            Output::Json => pretty(&json!({
                "region_id": region_id,
                "split_key": display_key(&split_key),
                "requested": true,
            })),
            Output::Table => format!("split of region {region_id} {at} requested; its leader carries it out\n"),
        });
    };
    let version = |info: &RegionInfo| info.region.as_ref().and_then(|r| r.epoch).unwrap_or_default().version;
    let old_version = version(&before);
    let deadline = Instant::now() + SPLIT_WAIT;
    let left = loop {
        // A region that vanished was replaced by newer ones: its split is done too.
        match placement.region(region_id).await? {
            Some(now) if version(&now) == old_version => {}
            Some(now) => break Some(now),
            None => break None,
        }
        if Instant::now() >= deadline {
            return Err(CtlError::SplitTimeout { region_id, waited: SPLIT_WAIT, version: old_version });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    // The right part starts where the left one now ends.
    let right = match left.as_ref().and_then(|l| l.region.as_ref()).map(|r| r.end_key.clone()) {
        Some(end) if !end.is_empty() => placement.region_by_key(end).await?,
        _ => None,
    };
    let parts: Vec<RegionInfo> = left.into_iter().chain(right).collect();
    print(&match output {
        Output::Json => pretty(&json!({
            "region_id": region_id,
            "split_key": display_key(&split_key),
            "requested": true,
            "regions": parts.iter().map(region_json).collect::<Vec<_>>(),
        })),
        Output::Table => format!("region {region_id} split {at}\n{}", render_regions(&parts, Output::Table)),
    })
}

/// Prints the operator placement made for a request; with a wait, polls until it finishes first and
/// fails unless it succeeded.
async fn finish_operator(
    placement: &PlacementConn,
    operator: OperatorInfo,
    wait: Option<Duration>,
    output: Output,
) -> Result<(), CtlError> {
    let Some(waited) = wait else {
        return print(&match output {
            Output::Json => pretty(&operator_json(&operator, now_ms())),
            Output::Table => format!(
                "operator {} created for region {}: {}\n",
                operator.operator_id,
                operator.region_id,
                steps_text(&operator)
            ),
        });
    };
    let deadline = Instant::now() + waited;
    let (operator_id, region_id) = (operator.operator_id, operator.region_id);
    let done = loop {
        let (running, history) = placement.operators().await?;
        if let Some(done) = history.into_iter().rev().find(|op| op.operator_id == operator_id) {
            break done;
        }
        if !running.iter().any(|op| op.operator_id == operator_id) {
            return Err(CtlError::OperatorLost { operator_id, region_id });
        }
        if Instant::now() >= deadline {
            return Err(CtlError::OperatorTimeout { operator_id, region_id, waited });
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    if done.state != OperatorState::Success as i32 {
        return Err(CtlError::OperatorFailed {
            operator_id,
            region_id,
            state: operator_state_name(done.state).to_string(),
            note: done.note,
        });
    }
    print(&match output {
        Output::Json => pretty(&operator_json(&done, now_ms())),
        Output::Table => format!(
            "operator {operator_id} on region {region_id} finished in {}: {}\n",
            took(&done, now_ms()),
            steps_text(&done)
        ),
    })
}

/// `store remove`: marks the store offline; with a wait, polls until placement marks it removed.
async fn remove_store(
    placement: &PlacementConn,
    store_id: u64,
    wait: Option<Duration>,
    output: Output,
) -> Result<(), CtlError> {
    let mut store = placement.remove_store(store_id).await?;
    if let Some(waited) = wait {
        let deadline = Instant::now() + waited;
        while store.state != StoreState::Removed as i32 {
            if Instant::now() >= deadline {
                return Err(CtlError::DrainTimeout { store_id, region_count: store.region_count, waited });
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
            store = placement
                .stores()
                .await?
                .into_iter()
                .find(|s| s.store_id == store_id)
                .ok_or(CtlError::NoSuchStore(store_id))?;
        }
    }
    print(&match output {
        Output::Json => pretty(&store_json(&store, now_ms())),
        Output::Table if store.state == StoreState::Removed as i32 => {
            format!("store {store_id} is removed: it holds no replica and may not rejoin\n")
        }
        Output::Table => format!(
            "store {store_id} is offline: its {} regions are moving to other stores; it is removed once empty\n",
            store.region_count
        ),
    })
}

// ---- nodes ----

#[derive(Debug, Clone, Copy)]
enum NodeProbe {
    Status,
    Health,
}

/// What one node said (or that it said nothing).
#[derive(Debug, Clone, Default, PartialEq)]
struct NodeReport {
    store_id: u64,
    http_addr: String,
    /// From /status.
    version: String,
    region_count: u64,
    leader_count: u64,
    applied_index: u64,
    used_bytes: u64,
    /// /status answered, or /health answered 200.
    ok: bool,
    took: Duration,
    error: Option<String>,
}

impl NodeReport {
    /// Reads a node's `/status` JSON.
    fn with_status(mut self, status: &Value) -> NodeReport {
        let regions = status["regions"].as_array().cloned().unwrap_or_default();
        self.version = status["version"].as_str().unwrap_or_default().to_string();
        self.region_count = regions.len() as u64;
        self.leader_count = regions.iter().filter(|r| r["role"] == "leader").count() as u64;
        self.applied_index = regions.iter().filter_map(|r| r["applied_index"].as_u64()).max().unwrap_or(0);
        self.used_bytes = status["storage"]["used_bytes"].as_u64().unwrap_or(0);
        self
    }
}

/// Asks every store's node at once; the reports come back in the stores' order.
async fn probe_all(stores: &[StoreInfo], probe: NodeProbe) -> Vec<NodeReport> {
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let mut tasks = tokio::task::JoinSet::new();
    for (i, store) in stores.iter().enumerate() {
        let (client, store_id, http_addr) = (client.clone(), store.store_id, store.http_addr.clone());
        tasks.spawn(async move { (i, probe_node(&client, store_id, http_addr, probe).await) });
    }
    let mut reports = vec![NodeReport::default(); stores.len()];
    while let Some(done) = tasks.join_next().await {
        if let Ok((i, report)) = done {
            reports[i] = report;
        }
    }
    reports
}

async fn probe_node(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    store_id: u64,
    http_addr: String,
    probe: NodeProbe,
) -> NodeReport {
    let path = match probe {
        NodeProbe::Status => "/status",
        NodeProbe::Health => "/health",
    };
    let started = Instant::now();
    let answer = tokio::time::timeout(CALL_TIMEOUT, http_get(client, &format!("http://{http_addr}{path}"))).await;
    let report = NodeReport { store_id, http_addr, took: started.elapsed(), ..Default::default() };
    let (status, body) = match answer {
        Err(_) => return NodeReport { error: Some(format!("no answer within {CALL_TIMEOUT:?}")), ..report },
        Ok(Err(error)) => return NodeReport { error: Some(error), ..report },
        Ok(Ok(answer)) => answer,
    };
    match probe {
        NodeProbe::Status if status.is_success() => match serde_json::from_slice::<Value>(&body) {
            Ok(json) => NodeReport { ok: true, ..report.with_status(&json) },
            Err(err) => NodeReport { error: Some(format!("/status is not JSON: {err}")), ..report },
        },
        NodeProbe::Health if status.is_success() => NodeReport { ok: true, ..report },
        _ => {
            let body = String::from_utf8_lossy(&body);
            NodeReport { error: Some(format!("{path} answered {status}: {}", body.trim())), ..report }
        }
    }
}

async fn http_get(
    client: &Client<hyper_util::client::legacy::connect::HttpConnector, Empty<Bytes>>,
    url: &str,
) -> Result<(hyper::StatusCode, Bytes), String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("invalid address {url}: {e}"))?;
    let response = client.get(uri).await.map_err(|e| error_chain(&e))?;
    let status = response.status();
    let body = response.into_body().collect().await.map_err(|e| e.to_string())?.to_bytes();
    Ok((status, body))
}

/// An error with its causes, which is where "Connection refused" lives.
pub(crate) fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text = format!("{text}: {cause}");
        source = cause.source();
    }
    text
}

fn fail_if_any(nodes: &[NodeReport], what: &'static str) -> Result<(), CtlError> {
    let failed = nodes.iter().filter(|n| !n.ok).count();
    match failed {
        0 => Ok(()),
        _ => Err(CtlError::Nodes { failed, total: nodes.len(), what }),
    }
}

// ---- rendering (pure, so tests check every field name) ----

/// Aligned columns, two spaces apart, no trailing spaces.
struct Table {
    header: Vec<&'static str>,
    rows: Vec<Vec<String>>,
}

impl Table {
    fn new(header: Vec<&'static str>) -> Table {
        Table { header, rows: Vec::new() }
    }

    fn row(&mut self, row: Vec<String>) {
        self.rows.push(row);
    }

    fn render(&self) -> String {
        let mut widths: Vec<usize> = self.header.iter().map(|h| h.chars().count()).collect();
        for row in &self.rows {
            for (width, cell) in widths.iter_mut().zip(row) {
                *width = (*width).max(cell.chars().count());
            }
        }
        let line = |cells: Vec<&str>| {
            let mut line = String::new();
            for (cell, width) in cells.iter().zip(&widths) {
                line.push_str(cell);
                line.push_str(&" ".repeat(width - cell.chars().count() + 2));
            }
            format!("{}\n", line.trim_end())
        };
        let mut text = line(self.header.clone());
        for row in &self.rows {
            text.push_str(&line(row.iter().map(String::as_str).collect()));
        }
        text
    }
}

fn pretty(value: &Value) -> String {
    format!("{}\n", serde_json::to_string_pretty(value).expect("JSON values serialize"))
}

fn state_name(store: &StoreInfo) -> &'static str {
    match StoreState::try_from(store.state) {
        Ok(StoreState::Up) => "up",
        Ok(StoreState::Down) => "down",
        Ok(StoreState::Offline) => "offline",
        Ok(StoreState::Removed) => "removed",
        Err(_) => "unknown",
    }
}

/// "350ms ago", "4.2s ago", "3m 12s ago"; "never" for a store that never beat.
fn age(last_ms: u64, now_ms: u64) -> String {
    if last_ms == 0 {
        return "never".into();
    }
    let ms = now_ms.saturating_sub(last_ms);
    match ms {
        0..1000 => format!("{ms}ms ago"),
        1000..60_000 => format!("{:.1}s ago", ms as f64 / 1000.0),
        _ => format!("{} ago", humantime::format_duration(Duration::from_secs(ms / 1000))),
    }
}

fn bytes(n: u64) -> String {
    bytesize::ByteSize(n).to_string()
}

fn store_json(s: &StoreInfo, now_ms: u64) -> Value {
    json!({
        "store_id": s.store_id,
        "raft_addr": s.raft_addr,
        "http_addr": s.http_addr,
        "state": state_name(s),
        "version": s.version,
        "last_heartbeat_ms": s.last_heartbeat_ms,
        "last_heartbeat_age_ms": now_ms.saturating_sub(s.last_heartbeat_ms),
        "region_count": s.region_count,
        "leader_count": s.leader_count,
        "used_bytes": s.used_bytes,
    })
}

fn render_stores(stores: &[StoreInfo], now_ms: u64, output: Output) -> String {
    if output == Output::Json {
        return pretty(&Value::Array(stores.iter().map(|s| store_json(s, now_ms)).collect()));
    }
    let mut table =
        Table::new(vec!["STORE", "RAFT ADDR", "HTTP ADDR", "STATE", "LAST HEARTBEAT", "REGIONS", "LEADERS", "USED"]);
    for s in stores {
        table.row(vec![
            s.store_id.to_string(),
            s.raft_addr.clone(),
            s.http_addr.clone(),
            state_name(s).into(),
            age(s.last_heartbeat_ms, now_ms),
            s.region_count.to_string(),
            s.leader_count.to_string(),
            bytes(s.used_bytes),
        ]);
    }
    table.render()
}

fn region_json(info: &RegionInfo) -> Value {
    let mut value = crate::api::region_json(&info.region.clone().unwrap_or_default());
    let extra = json!({
        "leader_store_id": info.leader_store_id,
        "leader_peer_id": info.leader_peer_id,
        "term": info.term,
        "approximate_size": info.approximate_size,
        "approximate_keys": info.approximate_keys,
        "pending_peers": info.pending_peers.iter().map(|p| json!({ "peer_id": p.peer_id, "store_id": p.store_id })).collect::<Vec<_>>(),
    });
    if let (Some(object), Some(extra)) = (value.as_object_mut(), extra.as_object()) {
        object.extend(extra.clone());
    }
    value
}

/// Table cells for a key: an empty start or end key is the unbounded edge of the keyspace.
fn key_cell(key: &[u8], empty: &str) -> String {
    if key.is_empty() {
        empty.to_string()
    } else {
        display_key(key)
    }
}

fn region_row(info: &RegionInfo) -> Vec<String> {
    let region = info.region.clone().unwrap_or_default();
    let epoch = region.epoch.unwrap_or_default();
    // A peer still catching up (receiving its snapshot) is marked.
    let peers: Vec<String> = region
        .peers
        .iter()
        .map(|p| {
            let pending = if info.pending_peers.contains(p) { "(pending)" } else { "" };
            format!("{}@{}{pending}", p.peer_id, p.store_id)
        })
        .collect();
    vec![
        region.region_id.to_string(),
        key_cell(&region.start_key, "-inf"),
        key_cell(&region.end_key, "+inf"),
        format!("{}/{}", epoch.conf_ver, epoch.version),
        peers.join(","),
        if info.leader_store_id == 0 { "-".into() } else { info.leader_store_id.to_string() },
        bytes(info.approximate_size),
    ]
}

const REGION_HEADER: [&str; 7] =
    ["REGION", "START", "END", "EPOCH (CONF_VER/VERSION)", "PEERS (PEER@STORE)", "LEADER STORE", "SIZE"];

fn render_regions(regions: &[RegionInfo], output: Output) -> String {
    if output == Output::Json {
        return pretty(&Value::Array(regions.iter().map(region_json).collect()));
    }
    let mut table = Table::new(REGION_HEADER.to_vec());
    for info in regions {
        table.row(region_row(info));
    }
    table.render()
}

fn render_region(info: &RegionInfo, output: Output) -> String {
    match output {
        Output::Json => pretty(&region_json(info)),
        Output::Table => render_regions(std::slice::from_ref(info), output),
    }
}

fn operator_state_name(state: i32) -> &'static str {
    match OperatorState::try_from(state) {
        Ok(OperatorState::Running) => "running",
        Ok(OperatorState::Success) => "success",
        Ok(OperatorState::Timeout) => "timeout",
        Ok(OperatorState::Cancelled) => "cancelled",
        Ok(OperatorState::Replaced) => "replaced",
        Err(_) => "unknown",
    }
}

fn step_kind_name(kind: i32) -> &'static str {
    match StepKind::try_from(kind) {
        Ok(StepKind::AddPeer) => "add-peer",
        Ok(StepKind::TransferLeader) => "transfer-leader",
        Ok(StepKind::RemovePeer) => "remove-peer",
        Ok(StepKind::Split) => "split",
        Err(_) => "unknown",
    }
}

fn step_text(step: &crate::proto::OperatorStep) -> String {
    match StepKind::try_from(step.kind) {
        Ok(StepKind::AddPeer) => format!("add peer {} on store {}", step.peer_id, step.store_id),
        Ok(StepKind::TransferLeader) => format!("transfer leader to store {}", step.store_id),
        Ok(StepKind::RemovePeer) => format!("remove peer on store {}", step.store_id),
        Ok(StepKind::Split) if step.split_key.is_empty() => "split in the middle".into(),
        Ok(StepKind::Split) => format!("split at {}", display_key(&step.split_key)),
        Err(_) => "unknown step".into(),
    }
}

/// The steps in order, the one under way in brackets while it runs.
fn steps_text(op: &OperatorInfo) -> String {
    let running = op.state == OperatorState::Running as i32;
    op.steps
        .iter()
        .enumerate()
        .map(|(i, step)| match running && i == op.current_step as usize {
            true => format!("[{}]", step_text(step)),
            false => step_text(step),
        })
        .collect::<Vec<_>>()
        .join(" → ")
}

/// How long the operator ran (so far, while it runs).
fn took(op: &OperatorInfo, now_ms: u64) -> String {
    let end = if op.finished_ms == 0 { now_ms } else { op.finished_ms };
    let ms = end.saturating_sub(op.created_ms);
    if ms < 1000 {
        format!("{ms}ms")
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

fn operator_json(op: &OperatorInfo, now_ms: u64) -> Value {
    let end = if op.finished_ms == 0 { now_ms } else { op.finished_ms };
    json!({
        "operator_id": op.operator_id,
        "region_id": op.region_id,
        "source": op.source,
        "reason": op.reason,
        "state": operator_state_name(op.state),
        "steps": op.steps.iter().map(|step| {
            let mut value = json!({ "kind": step_kind_name(step.kind), "store_id": step.store_id });
            if step.kind == StepKind::AddPeer as i32 {
                value["peer_id"] = json!(step.peer_id);
            }
            if step.kind == StepKind::Split as i32 {
                value["split_key"] = json!(display_key(&step.split_key));
                value.as_object_mut().map(|o| o.remove("store_id"));
            }
            value
        }).collect::<Vec<_>>(),
        "current_step": op.current_step,
        "created_ms": op.created_ms,
        "finished_ms": (op.finished_ms != 0).then_some(op.finished_ms),
        "took_ms": end.saturating_sub(op.created_ms),
        "note": op.note,
    })
}

fn render_operators(running: &[OperatorInfo], history: &[OperatorInfo], now_ms: u64, output: Output) -> String {
    if output == Output::Json {
        return pretty(&json!({
            "running": running.iter().map(|op| operator_json(op, now_ms)).collect::<Vec<_>>(),
            "history": history.iter().map(|op| operator_json(op, now_ms)).collect::<Vec<_>>(),
        }));
    }
    let mut table = Table::new(vec!["ID", "REGION", "SOURCE", "STATE", "TOOK", "STEPS", "NOTE"]);
    // Running first, then the finished ones newest first: what matters now is at the top.
    for op in running.iter().chain(history.iter().rev()) {
        table.row(vec![
            op.operator_id.to_string(),
            op.region_id.to_string(),
            op.source.clone(),
            operator_state_name(op.state).into(),
            took(op, now_ms),
            steps_text(op),
            op.note.clone(),
        ]);
    }
    table.render()
}

fn render_schedulers(schedulers: &[SchedulerInfo], output: Output) -> String {
    if output == Output::Json {
        return pretty(&Value::Array(
            schedulers
                .iter()
                .map(|s| json!({ "name": s.name, "enabled": s.enabled, "can_disable": s.can_disable }))
                .collect(),
        ));
    }
    let mut table = Table::new(vec!["SCHEDULER", "STATE"]);
    for s in schedulers {
        let state = match (s.enabled, s.can_disable) {
            (true, false) => "enabled (always)",
            (true, true) => "enabled",
            (false, _) => "disabled",
        };
        table.row(vec![s.name.clone(), state.into()]);
    }
    table.render()
}

fn up_or_down(ok: bool) -> &'static str {
    if ok {
        "up"
    } else {
        "down"
    }
}

fn render_cluster_status(nodes: &[NodeReport], output: Output) -> String {
    if output == Output::Json {
        return pretty(&Value::Array(
            nodes
                .iter()
                .map(|n| {
                    json!({
                        "store_id": n.store_id,
                        "http_addr": n.http_addr,
                        "state": up_or_down(n.ok),
                        "version": n.version,
                        "region_count": n.region_count,
                        "leader_count": n.leader_count,
                        "applied_index": n.applied_index,
                        "used_bytes": n.used_bytes,
                        "error": n.error,
                    })
                })
                .collect(),
        ));
    }
    let mut table = Table::new(vec![
        "STORE",
        "ADDRESS",
        "VERSION",
        "REGIONS",
        "LEADERS",
        "APPLIED INDEX",
        "DB SIZE",
        "STATE",
        "ERROR",
    ]);
    for n in nodes {
        let known = |value: String| if n.ok { value } else { "-".into() };
        table.row(vec![
            n.store_id.to_string(),
            n.http_addr.clone(),
            known(n.version.clone()),
            known(n.region_count.to_string()),
            known(n.leader_count.to_string()),
            known(n.applied_index.to_string()),
            known(bytes(n.used_bytes)),
            up_or_down(n.ok).into(),
            n.error.clone().unwrap_or_default(),
        ]);
    }
    table.render()
}

fn render_cluster_health(nodes: &[NodeReport], output: Output) -> String {
    if output == Output::Json {
        return pretty(&Value::Array(
            nodes
                .iter()
                .map(|n| {
                    json!({
                        "store_id": n.store_id,
                        "http_addr": n.http_addr,
                        "healthy": n.ok,
                        "took_ms": n.took.as_secs_f64() * 1000.0,
                        "error": n.error,
                    })
                })
                .collect(),
        ));
    }
    let mut table = Table::new(vec!["STORE", "ADDRESS", "HEALTH", "TOOK", "ERROR"]);
    for n in nodes {
        table.row(vec![
            n.store_id.to_string(),
            n.http_addr.clone(),
            if n.ok { "healthy" } else { "unhealthy" }.into(),
            format!("{:.1}ms", n.took.as_secs_f64() * 1000.0),
            n.error.clone().unwrap_or_default(),
        ]);
    }
    table.render()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::proto::{Peer, Region, RegionEpoch};

    fn info() -> RegionInfo {
        RegionInfo {
            region: Some(Region {
                region_id: 2,
                start_key: b"a\x00".to_vec(),
                end_key: Vec::new(),
                epoch: Some(RegionEpoch { conf_ver: 1, version: 3 }),
                peers: vec![Peer { peer_id: 4, store_id: 1 }, Peer { peer_id: 5, store_id: 7 }],
            }),
            leader_store_id: 7,
            leader_peer_id: 5,
            term: 6,
            approximate_size: 2048,
            approximate_keys: 9,
            pending_peers: vec![Peer { peer_id: 5, store_id: 7 }],
        }
    }

    #[test]
    fn region_json_has_the_documented_fields_and_percent_encodes_keys() {
        let json: Value = serde_json::from_str(&render_regions(&[info()], Output::Json)).unwrap();
        let region = &json[0];
        assert_eq!(region["region_id"], 2);
        assert_eq!(region["start_key"], "a%00");
        assert_eq!(region["end_key"], "");
        assert_eq!(region["epoch"], json!({ "conf_ver": 1, "version": 3 }));
        assert_eq!(region["peers"], json!([{ "peer_id": 4, "store_id": 1 }, { "peer_id": 5, "store_id": 7 }]));
        assert_eq!(region["leader_store_id"], 7);
        assert_eq!(region["approximate_size"], 2048);
        assert_eq!(region["pending_peers"], json!([{ "peer_id": 5, "store_id": 7 }]));
        let single: Value = serde_json::from_str(&render_region(&info(), Output::Json)).unwrap();
        assert_eq!(&single, region);
    }

    #[test]
    fn region_table_shows_unbounded_ends_and_peers_with_their_stores() {
        let text = render_regions(&[info()], Output::Table);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 2);
        assert!(lines[0].starts_with("REGION  START  END"), "{text}");
        let cells: Vec<&str> = lines[1].split_whitespace().collect();
        assert_eq!(&cells[..6], ["2", "a%00", "+inf", "1/3", "4@1,5@7(pending)", "7"]);
    }

    #[test]
    fn store_json_has_the_documented_fields() {
        let store = StoreInfo {
            store_id: 3,
            raft_addr: "127.0.0.1:20160".into(),
            http_addr: "127.0.0.1:3000".into(),
            last_heartbeat_ms: 10_000,
            state: StoreState::Down as i32,
            version: "0.1.0".into(),
            used_bytes: 4096,
            region_count: 2,
            leader_count: 1,
        };
        let json: Value = serde_json::from_str(&render_stores(&[store], 10_400, Output::Json)).unwrap();
        assert_eq!(
            json[0],
            json!({
                "store_id": 3, "raft_addr": "127.0.0.1:20160", "http_addr": "127.0.0.1:3000", "state": "down",
                "version": "0.1.0", "last_heartbeat_ms": 10_000, "last_heartbeat_age_ms": 400,
                "region_count": 2, "leader_count": 1, "used_bytes": 4096,
            })
        );
    }

    #[test]
    fn tables_are_aligned_without_trailing_spaces() {
        let mut table = Table::new(vec!["A", "LONG HEADER", "C"]);
        table.row(vec!["wide cell".into(), "x".into(), "".into()]);
        assert_eq!(table.render(), "A          LONG HEADER  C\nwide cell  x\n");
    }

    #[test]
    fn heartbeat_ages_read_naturally() {
        assert_eq!(age(0, 5_000), "never");
        assert_eq!(age(4_650, 5_000), "350ms ago");
        assert_eq!(age(1_000, 5_200), "4.2s ago");
        assert_eq!(age(1_000, 193_000), "3m 12s ago");
    }

    #[test]
    fn node_status_is_summarised_as_regions_leaders_and_the_highest_applied_index() {
        let status = json!({
            "version": "0.1.0",
            "regions": [
                { "role": "leader", "applied_index": 17 },
                { "role": "follower", "applied_index": 40 },
            ],
            "storage": { "used_bytes": 8192 },
        });
        let report = NodeReport::default().with_status(&status);
        assert_eq!(
            (
                report.version.as_str(),
                report.region_count,
                report.leader_count,
                report.applied_index,
                report.used_bytes
            ),
            ("0.1.0", 2, 1, 40, 8192)
        );
    }

    #[test]
    fn keys_on_the_command_line_are_percent_decoded_strictly() {
        assert_eq!(parse_key("a%2Fb%00").unwrap(), b"a/b\0");
        assert!(matches!(parse_key("bad%zz"), Err(CtlError::BadKey { .. })));
        assert!(matches!(parse_key(""), Err(CtlError::BadKey { .. })));
    }

    #[test]
    fn any_failed_node_fails_the_command() {
        let up = NodeReport { ok: true, ..Default::default() };
        assert!(fail_if_any(&[up.clone(), up.clone()], "are unhealthy").is_ok());
        let err = fail_if_any(&[up, NodeReport::default()], "are unhealthy").unwrap_err();
        assert_eq!(err.to_string(), "1 of 2 nodes are unhealthy");
    }

    fn move_operator(state: OperatorState, current_step: u32) -> OperatorInfo {
        use crate::proto::OperatorStep;
        OperatorInfo {
            operator_id: 12,
            region_id: 2,
            source: "replica-check".into(),
            reason: "replica-check: replace a peer on a down store".into(),
            steps: vec![
                OperatorStep { kind: StepKind::AddPeer as i32, store_id: 4, peer_id: 14, ..Default::default() },
                OperatorStep { kind: StepKind::TransferLeader as i32, store_id: 2, ..Default::default() },
                OperatorStep { kind: StepKind::RemovePeer as i32, store_id: 1, ..Default::default() },
            ],
            current_step,
            state: state as i32,
            created_ms: 10_000,
            finished_ms: if state == OperatorState::Running { 0 } else { 12_500 },
            note: if state == OperatorState::Timeout { "no progress for 3m".into() } else { String::new() },
        }
    }

    #[test]
    fn operator_json_has_the_documented_fields() {
        let running = move_operator(OperatorState::Running, 1);
        let done = move_operator(OperatorState::Timeout, 2);
        let json: Value = serde_json::from_str(&render_operators(&[running], &[done], 11_000, Output::Json)).unwrap();
        assert_eq!(
            json["running"][0],
            json!({
                "operator_id": 12, "region_id": 2, "source": "replica-check",
                "reason": "replica-check: replace a peer on a down store", "state": "running",
                "steps": [
                    { "kind": "add-peer", "store_id": 4, "peer_id": 14 },
                    { "kind": "transfer-leader", "store_id": 2 },
                    { "kind": "remove-peer", "store_id": 1 },
                ],
                "current_step": 1, "created_ms": 10_000, "finished_ms": null, "took_ms": 1000, "note": "",
            })
        );
        assert_eq!(json["history"][0]["state"], "timeout");
        assert_eq!(json["history"][0]["took_ms"], 2500);
        assert_eq!(json["history"][0]["note"], "no progress for 3m");
    }

    #[test]
    fn operator_table_marks_the_step_under_way_and_lists_running_first() {
        let running = move_operator(OperatorState::Running, 1);
        let mut older = move_operator(OperatorState::Success, 3);
        older.operator_id = 3;
        let mut newer = move_operator(OperatorState::Timeout, 2);
        newer.operator_id = 9;
        let text = render_operators(&[running], &[older, newer], 11_000, Output::Table);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[0].starts_with("ID  REGION  SOURCE"), "{text}");
        assert!(lines[1].starts_with("12 ") && lines[1].contains("running"), "{text}");
        assert!(
            lines[1].contains("add peer 14 on store 4 → [transfer leader to store 2] → remove peer on store 1"),
            "{text}"
        );
        assert!(lines[2].starts_with("9 ") && lines[2].contains("timeout") && lines[2].ends_with("no progress for 3m"));
        assert!(lines[3].starts_with("3 ") && lines[3].contains("success") && !lines[3].contains('['), "{text}");
    }

    #[test]
    fn store_states_and_schedulers_read_plainly() {
        let store = |state: StoreState| StoreInfo { state: state as i32, ..Default::default() };
        let names: Vec<&str> = [StoreState::Up, StoreState::Down, StoreState::Offline, StoreState::Removed]
            .map(store)
            .iter()
            .map(state_name)
            .collect();
        assert_eq!(names, ["up", "down", "offline", "removed"]);
        let schedulers = vec![
            SchedulerInfo { name: "replica-check".into(), enabled: true, can_disable: false },
            SchedulerInfo { name: "balance-leader".into(), enabled: false, can_disable: true },
        ];
        assert_eq!(
            render_schedulers(&schedulers, Output::Table),
            "SCHEDULER       STATE\nreplica-check   enabled (always)\nbalance-leader  disabled\n"
        );
        let json: Value = serde_json::from_str(&render_schedulers(&schedulers, Output::Json)).unwrap();
        assert_eq!(json[1], json!({ "name": "balance-leader", "enabled": false, "can_disable": true }));
    }
}
