//! `fekv ctl placement list|transfer-leader`: the placement replicas themselves. `list` asks every
//! member directly for its own view (`GetMembers`), so it shows each one's term, applied index and
//! health, and which are unreachable; `transfer-leader` asks the leader to hand over.
//!
//! A placement without the `PlacementGroup` service (a single placement from before replication)
//! answers UNIMPLEMENTED: it is shown as a group of one, that address, leading.

use std::future::Future;
use std::time::Duration;

use serde_json::{json, Value};

use super::client::PlacementConn;
use super::render::{pretty, Table};
use super::shared::{print, CtlError, Output};
use crate::cluster_link::{CallError, Retry};
use crate::proto::placement_group_client::PlacementGroupClient;
use crate::proto::{GetMembersRequest, GetMembersResponse, TransferPlacementLeaderRequest};

#[derive(Debug, Clone, clap::Subcommand)]
pub enum PlacementCommand {
    /// One row per placement replica, each asked directly: member id, leader, term, applied index, health;
    /// exits non-zero if any is unreachable
    List,
    /// Ask the placement leader to hand leadership to another replica (and wait until it has)
    TransferLeader {
        /// The member to lead next (see `placement list`) [default: the most caught-up other one]
        #[arg(long)]
        to: Option<u64>,
    },
}

/// One member as `placement list` shows it.
struct Row {
    addr: String,
    /// 0 when not known (unreachable, and not listed by any member that answered).
    member_id: u64,
    /// Its own answer, or why there is none.
    view: Result<GetMembersResponse, String>,
}

pub(super) async fn run(placement: &PlacementConn, command: PlacementCommand, output: Output) -> Result<(), CtlError> {
    match command {
        PlacementCommand::List => {
            let rows = list(placement).await?;
            print(&render(&rows, output))?;
            let failed = rows.iter().filter(|row| row.view.is_err()).count();
            match failed {
                0 => Ok(()),
                failed => Err(CtlError::PlacementMembers { failed, total: rows.len() }),
            }
        }
        PlacementCommand::TransferLeader { to } => {
            let request = TransferPlacementLeaderRequest { to_member_id: to.unwrap_or(0) };
            let called = placement.link.call(Retry::Once, |channel| async move {
                PlacementGroupClient::new(channel).transfer_placement_leader(request).await
            });
            let reply = match called.await {
                Ok(reply) => reply,
                Err(CallError::Answered { addr, status }) if status.code() == tonic::Code::Unimplemented => {
                    let message = "a single placement (no --peers): there is no other replica to lead".to_string();
                    return Err(CtlError::PlacementRefused { addr, message });
                }
                Err(err) => return Err(placement.error(err)),
            };
            match output {
                Output::Json => {
                    print(&pretty(&json!({ "leader_id": reply.leader_id, "leader_addr": reply.leader_addr })))
                }
                Output::Table => {
                    print(&format!("placement leader: member {} at {}\n", reply.leader_id, reply.leader_addr))
                }
            }
        }
    }
}

/// Every member: the configured addresses and those the answering members list, each asked directly.
async fn list(placement: &PlacementConn) -> Result<Vec<Row>, CtlError> {
    let given = placement.link.addrs();
    let mut views = ask_all(placement, &given).await;
    let listed: Vec<(String, u64)> = views
        .iter()
        .filter_map(|(_, view)| view.as_ref().ok())
        .flat_map(|view| view.members.iter().map(|m| (m.addr.clone(), m.member_id)))
        // A single placement lists itself without an address: it is the one asked.
        .filter(|(addr, _)| !addr.is_empty())
        .collect();
    // Members one of them lists that were not given on the command line are asked too.
    let mut more: Vec<String> = listed.iter().map(|(addr, _)| addr.clone()).filter(|a| !given.contains(a)).collect();
    more.dedup();
    views.extend(ask_all(placement, &more).await);
    let mut rows: Vec<Row> = views
        .into_iter()
        .map(|(addr, view)| {
            let listed_id = listed.iter().find(|(known, _)| *known == addr).map_or(0, |m| m.1);
            let member_id = view.as_ref().map_or(listed_id, |v| v.member_id);
            Row { addr, member_id, view }
        })
        .collect();
    rows.sort_by_key(|row| (row.member_id == 0, row.member_id));
    Ok(rows)
}

/// Asks every one of `addrs` at once.
async fn ask_all(placement: &PlacementConn, addrs: &[String]) -> Vec<(String, Result<GetMembersResponse, String>)> {
    let deadline = placement.link.deadline();
    let asks: Vec<_> =
        addrs.iter().map(|addr| (addr.clone(), tokio::spawn(ask(placement, addr.clone(), deadline)))).collect();
    let mut views = Vec::new();
    for (addr, asked) in asks {
        views.push((addr, asked.await.unwrap_or_else(|err| Err(format!("unreachable: {err}")))));
    }
    views
}

/// A member's own view, asked on its own channel (not the leader's), within `deadline`.
fn ask(
    placement: &PlacementConn,
    addr: String,
    deadline: Duration,
) -> impl Future<Output = Result<GetMembersResponse, String>> + Send + 'static {
    let channel = placement.link.channel_to(&addr);
    async move {
        let channel = channel.map_err(|err| format!("unreachable: {err}"))?;
        let mut client = PlacementGroupClient::new(channel);
        let called = client.get_members(GetMembersRequest {});
        match tokio::time::timeout(deadline, called).await {
            Err(_) => Err(format!("unreachable: no answer within {deadline:?}")),
            Ok(Ok(reply)) => Ok(reply.into_inner()),
            // A single placement from before replication: a group of one, leading.
            Ok(Err(status)) if status.code() == tonic::Code::Unimplemented => Ok(GetMembersResponse {
                member_id: 1,
                members: vec![crate::proto::PlacementMember { member_id: 1, addr }],
                leader_id: 1,
                healthy: true,
                health: "ok (a single placement)".into(),
                ..Default::default()
            }),
            Ok(Err(status)) => Err(format!("unreachable: {}", crate::cluster_link::placement_link::describe(&status))),
        }
    }
}

fn render(rows: &[Row], output: Output) -> String {
    if output == Output::Json {
        let rows: Vec<Value> = rows
            .iter()
            .map(|row| match &row.view {
                Ok(view) => json!({
                    "addr": row.addr,
                    "member_id": row.member_id,
                    "leader": view.leader_id != 0 && view.leader_id == view.member_id,
                    "leader_id": view.leader_id,
                    "term": view.term,
                    "commit_index": view.commit_index,
                    "applied_index": view.applied_index,
                    "cluster_id": view.cluster_id,
                    "healthy": view.healthy,
                    "health": health(view),
                }),
                Err(why) => json!({
                    "addr": row.addr,
                    "member_id": row.member_id,
                    "leader": false,
                    "leader_id": null,
                    "term": null,
                    "commit_index": null,
                    "applied_index": null,
                    "cluster_id": null,
                    "healthy": false,
                    "health": why,
                }),
            })
            .collect();
        return pretty(&Value::Array(rows));
    }
    let mut table = Table::new(vec!["ADDR", "MEMBER ID", "LEADER", "TERM", "APPLIED", "HEALTH"]);
    for row in rows {
        let id = if row.member_id == 0 { "-".to_string() } else { row.member_id.to_string() };
        table.row(match &row.view {
            Ok(view) => {
                let leads = view.leader_id != 0 && view.leader_id == view.member_id;
                let leader = if leads { "yes" } else { "no" }.to_string();
                vec![row.addr.clone(), id, leader, view.term.to_string(), view.applied_index.to_string(), health(view)]
            }
            Err(why) => vec![row.addr.clone(), id, "no".into(), "-".into(), "-".into(), why.clone()],
        });
    }
    table.render()
}

/// The member's own word on its health.
fn health(view: &GetMembersResponse) -> String {
    match (view.healthy, view.health.is_empty()) {
        (_, false) => view.health.clone(),
        (true, true) => "ok".into(),
        (false, true) => "unhealthy".into(),
    }
}
