//! [`PlacementLink`]: the one client of the placement group, used by the node (registration,
//! heartbeats, listings, ids), `fekv ctl` and `fekv cluster`. It holds the members' addresses,
//! remembers which one leads, and follows the leader:
//!
//! - a member that answers UNAVAILABLE with the leader's address in `fekv-placement-leader`
//!   metadata ([`fekv_placement::LEADER_METADATA`]) is a follower: the call goes to that address
//!   (added to the list if it was not in it);
//! - a member that cannot be reached, or answers UNAVAILABLE without a hint (a follower that knows
//!   no leader, e.g. without quorum), is skipped for the next one;
//! - after a round of every member, it backs off briefly; it gives up at the call's deadline, saying
//!   what every member answered last.
//!
//! What may be retried is the caller's to say ([`Retry`]): a call whose effect may have happened
//! is sent again only when idempotent. A follower's refusal and a connection that never opened are
//! sure not to have reached the leader, so every call is retried after those.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use tonic::transport::Channel;

use crate::security::tls::{self, ClientTls};

/// Whether a call may be sent again after a failure that leaves unknown whether it took effect
/// (sent, then the connection broke or the answer did not come in time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Doing it twice is doing it once (listings, heartbeats, a registration with the store's id
    /// and secret, id allocation: ids lost to a lost answer are only a gap).
    Idempotent,
    /// Doing it twice may do something twice (a new operator, a new store, a user added): sent
    /// again only when surely not applied (a follower refused it, or the connection never opened).
    Once,
}

/// Why a call through the link failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// A member answered (the leader, or a follower whose refusal is final), and that answer is
    /// not one to retry: placement's own error.
    #[error("placement at {addr}: {}", describe(status))]
    Answered { addr: String, status: tonic::Status },
    /// No member served the call within the deadline. `tried`: each member's last failure.
    #[error("no placement leader answered within {waited:?} ({})", tried_text(tried))]
    NoLeader { waited: Duration, tried: Vec<(String, String)> },
    /// The call was sent and may have taken effect, but no answer came; not retried (see [`Retry`]).
    #[error("placement at {addr} did not answer, and the call may have taken effect: {}", describe(status))]
    Uncertain { addr: String, status: tonic::Status },
}

impl CallError {
    /// The code to judge the failure by: a final answer's own, UNAVAILABLE for the rest.
    pub fn code(&self) -> tonic::Code {
        match self {
            CallError::Answered { status, .. } => status.code(),
            CallError::NoLeader { .. } | CallError::Uncertain { .. } => tonic::Code::Unavailable,
        }
    }

    /// Placement's message for a final answer; the whole story otherwise.
    pub fn message(&self) -> String {
        match self {
            CallError::Answered { status, .. } => status.message().to_string(),
            other => other.to_string(),
        }
    }
}

fn tried_text(tried: &[(String, String)]) -> String {
    tried.iter().map(|(addr, why)| format!("{addr}: {why}")).collect::<Vec<_>>().join("; ")
}

/// The placement addresses of a `--placement` value: comma-separated `host:port`, `http://host:port`
/// or `https://host:port`. `tls`: whether TLS to placement is configured (`tls_flags` names how, for
/// the error). https:// without TLS, or http:// with it, is an error: said at start, not at the
/// first failed call.
pub fn parse_members(list: &str, tls: bool, tls_flags: &str) -> Result<Vec<String>, String> {
    let mut members = Vec::new();
    for raw in list.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let rest = match (raw.strip_prefix("https://"), raw.strip_prefix("http://")) {
            (Some(_), _) if !tls => return Err(format!("{raw}: https:// needs TLS to placement ({tls_flags})")),
            (None, Some(_)) if tls => {
                return Err(format!(
                    "{raw}: http:// while TLS to placement is configured ({tls_flags}); write https://"
                ))
            }
            (Some(rest), _) | (None, Some(rest)) => rest,
            (None, None) => raw,
        };
        let addr = rest.trim_end_matches('/');
        let valid = addr.rsplit_once(':').is_some_and(|(host, port)| !host.is_empty() && port.parse::<u16>().is_ok());
        if !valid || addr.contains('/') {
            return Err(format!("{raw}: expected host:port"));
        }
        if !members.iter().any(|m| m == addr) {
            members.push(addr.to_string());
        }
    }
    if members.is_empty() {
        return Err(format!("{list:?}: no address (expected host:port[,host:port...])"));
    }
    Ok(members)
}

struct Member {
    addr: String,
    channel: Channel,
}

struct Members {
    list: Vec<Member>,
    /// The member believed to lead: the first one tried.
    leader: usize,
}

/// A client of the placement group (see the module doc). Cheap to clone: clones share the members
/// and the remembered leader.
#[derive(Clone)]
pub struct PlacementLink {
    members: Arc<Mutex<Members>>,
    tls: Option<Arc<ClientTls>>,
    deadline: Duration,
}

/// How long one connection attempt may take: a dead host should cost a moment, not the deadline.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

impl PlacementLink {
    /// A link to `members` (`host:port`, as [`parse_members`] gives them), over TLS when `tls` is
    /// given; every call gives up after `deadline`. Connects on first use.
    pub fn new(
        members: &[String],
        tls: Option<Arc<ClientTls>>,
        deadline: Duration,
    ) -> Result<PlacementLink, super::LinkError> {
        let mut list = Vec::new();
        for addr in members {
            list.push(Member { addr: addr.clone(), channel: channel(addr, tls.as_ref(), deadline)? });
        }
        if list.is_empty() {
            return Err(super::LinkError::Address { addr: String::new(), reason: "no placement address".into() });
        }
        Ok(PlacementLink { members: Arc::new(Mutex::new(Members { list, leader: 0 })), tls, deadline })
    }

    /// The same members and leader, with another deadline per call.
    pub fn with_deadline(&self, deadline: Duration) -> PlacementLink {
        PlacementLink { deadline, ..self.clone() }
    }

    /// Every member's address, in order (with leaders learned from hints that were not in the list).
    pub fn addrs(&self) -> Vec<String> {
        self.members.lock().list.iter().map(|m| m.addr.clone()).collect()
    }

    /// The addresses as one string, for logs and errors.
    pub fn addrs_text(&self) -> String {
        self.addrs().join(",")
    }

    /// How long one call may look for the leader.
    pub fn deadline(&self) -> Duration {
        self.deadline
    }

    /// The member believed to lead.
    pub fn leader(&self) -> String {
        let members = self.members.lock();
        members.list[members.leader].addr.clone()
    }

    /// The channel to one member (for a call that must go to it, e.g. asking each its own view).
    pub fn channel_to(&self, addr: &str) -> Result<Channel, super::LinkError> {
        if let Some(member) = self.members.lock().list.iter().find(|m| m.addr == addr) {
            return Ok(member.channel.clone());
        }
        channel(addr, self.tls.as_ref(), self.deadline)
    }

    /// Runs `rpc` on the leader's channel, following hints and trying the other members until it
    /// gets an answer or the deadline passes; `retry` says whether a call that may have taken effect
    /// is sent again.
    pub async fn call<T, F, Fut>(&self, retry: Retry, mut rpc: F) -> Result<T, CallError>
    where
        F: FnMut(Channel) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let started = Instant::now();
        let mut tried: Vec<(String, String)> = Vec::new();
        let mut backoff = Duration::from_millis(50);
        // This round's members that could not serve it (a hint naming one of them is not followed:
        // a follower may name a dead leader until it notices), and the attempts made: once every
        // member failed, or hints went round in circles, wait a little and start a new round.
        let mut failed: Vec<String> = Vec::new();
        let mut attempts = 0usize;
        loop {
            let left = self.deadline.saturating_sub(started.elapsed());
            if left.is_zero() {
                return Err(CallError::NoLeader { waited: self.deadline, tried });
            }
            let (index, addr, channel) = {
                let members = self.members.lock();
                let member = &members.list[members.leader];
                (members.leader, member.addr.clone(), member.channel.clone())
            };
            let outcome = match tokio::time::timeout(left, rpc(channel)).await {
                Ok(Ok(reply)) => return Ok(reply.into_inner()),
                Ok(Err(status)) => judge(status, retry),
                Err(_) if retry == Retry::Idempotent => Outcome::Next(format!("no answer within {left:?}")),
                Err(_) => {
                    let status = tonic::Status::deadline_exceeded(format!("no answer within {left:?}"));
                    return Err(CallError::Uncertain { addr, status });
                }
            };
            match outcome {
                Outcome::Final(status) => return Err(CallError::Answered { addr, status }),
                Outcome::Uncertain(status) => return Err(CallError::Uncertain { addr, status }),
                Outcome::Follow(hint) if !failed.contains(&hint) => {
                    tracing::debug!(from = %addr, leader = %hint, "placement follower named the leader");
                    note(&mut tried, &addr, format!("follower; leader is {hint}"));
                    if self.follow(index, &hint).is_err() {
                        failed.push(addr);
                        self.skip(index, &failed);
                    }
                }
                Outcome::Follow(hint) => {
                    note(&mut tried, &addr, format!("follower; its leader {hint} did not answer"));
                    failed.push(addr);
                    self.skip(index, &failed);
                }
                Outcome::Next(why) => {
                    tracing::debug!(placement = %addr, %why, "placement member did not serve the call; trying the next");
                    note(&mut tried, &addr, why);
                    failed.push(addr);
                    self.skip(index, &failed);
                }
            }
            attempts += 1;
            let members = self.members.lock().list.len();
            if failed.len() >= members || attempts >= 2 * members {
                (failed, attempts) = (Vec::new(), 0);
                let left = self.deadline.saturating_sub(started.elapsed());
                tokio::time::sleep(backoff.min(left)).await;
                backoff = (backoff * 2).min(Duration::from_millis(500));
            }
        }
    }

    /// Makes the hinted address the leader (adding it to the members if new), unless `from` is no
    /// longer the leader (another call moved on meanwhile).
    fn follow(&self, from: usize, hint: &str) -> Result<(), super::LinkError> {
        let mut members = self.members.lock();
        if members.leader != from {
            return Ok(());
        }
        match members.list.iter().position(|m| m.addr == hint) {
            Some(index) => members.leader = index,
            None => {
                let channel = channel(hint, self.tls.as_ref(), self.deadline)?;
                members.list.push(Member { addr: hint.to_string(), channel });
                members.leader = members.list.len() - 1;
            }
        }
        Ok(())
    }

    /// Moves on from `from` (unless another call already did) to the next member not in `failed`
    /// (or simply the next, when all are).
    fn skip(&self, from: usize, failed: &[String]) {
        let mut members = self.members.lock();
        if members.leader != from {
            return;
        }
        let count = members.list.len();
        let next = (1..=count).map(|step| (from + step) % count).find(|&i| !failed.contains(&members.list[i].addr));
        members.leader = next.unwrap_or((from + 1) % count);
    }
}

fn note(tried: &mut Vec<(String, String)>, addr: &str, why: String) {
    match tried.iter_mut().find(|(a, _)| a == addr) {
        Some(entry) => entry.1 = why,
        None => tried.push((addr.to_string(), why)),
    }
}

fn channel(addr: &str, tls: Option<&Arc<ClientTls>>, deadline: Duration) -> Result<Channel, super::LinkError> {
    let endpoint = tls::grpc::endpoint(addr, tls)
        .map_err(|e| super::LinkError::Address { addr: addr.to_string(), reason: e.to_string() })?
        .connect_timeout(CONNECT_TIMEOUT.min(deadline))
        .timeout(deadline);
    Ok(tls::grpc::lazy_channel(&endpoint, tls))
}

enum Outcome {
    /// Placement's answer: return it.
    Final(tonic::Status),
    /// Sent, and maybe applied: return it (not idempotent).
    Uncertain(tonic::Status),
    /// A follower named the leader.
    Follow(String),
    /// This member cannot serve it now: try the next.
    Next(String),
}

fn judge(status: tonic::Status, retry: Retry) -> Outcome {
    let answered = std::error::Error::source(&status).is_none();
    if answered && status.code() == tonic::Code::Unavailable {
        // A member's own refusal: leader-only calls reach only the leader, so nothing happened.
        let hint = status.metadata().get(fekv_placement::LEADER_METADATA).and_then(|v| v.to_str().ok());
        return match hint {
            Some(hint) if !hint.is_empty() => Outcome::Follow(hint.to_string()),
            _ => Outcome::Next(format!("unavailable: {}", status.message())),
        };
    }
    if answered {
        return Outcome::Final(status);
    }
    // A transport failure: before the request left (no connection), or after (broken, timed out).
    if never_sent(&status) || retry == Retry::Idempotent {
        Outcome::Next(format!("unreachable: {}", describe(&status)))
    } else {
        Outcome::Uncertain(status)
    }
}

/// Whether a transport failure happened while connecting, so the request never left.
fn never_sent(status: &tonic::Status) -> bool {
    let mut source = std::error::Error::source(status);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::*;
            if matches!(
                io.kind(),
                ConnectionRefused | AddrNotAvailable | NotConnected | HostUnreachable | NetworkUnreachable
            ) {
                return true;
            }
        }
        // hyper-util's connector says so for every failure to open the TCP connection (a refused
        // port, a name that does not resolve, the connect timeout).
        if err.to_string().starts_with("tcp connect error") || err.to_string().contains("dns error") {
            return true;
        }
        source = err.source();
    }
    false
}

/// A gRPC status with the transport error underneath it ("tcp connect error: Connection refused").
pub fn describe(status: &tonic::Status) -> String {
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

#[cfg(test)]
#[path = "placement_link_tests.rs"]
mod tests;
