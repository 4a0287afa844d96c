//! The open client connections: how many there may be, what each is doing, and which to close when
//! a new one needs the room.
//!
//! Every connection costs a file descriptor, and a node out of descriptors cannot open its own files,
//! LMDB or raft connections. So connections are capped ([`Limits::max_connections`], derived from the
//! open-file limit by default). At the cap a new client is not turned away while others merely sit
//! idle: the keep-alive connection idle the longest is asked to close (as nginx reuses idle
//! keep-alive connections when it runs out), and hyper closes it at once since no request is in
//! progress. Only a connection that has been answered and sent nothing since is idle in this sense:
//! a new one may have its first request in flight, and one sending its headers is in a request.
//! When none is idle, the newcomer is answered `503`. A new connection that sends nothing is not
//! idle but late: its first request's headers are due within the header timeout of the accept.
//!
//! [`Activity`] is what a connection's reader ([`super::conn_io`]) and its service share: whether a
//! request is being served, and since when the connection has been waiting for the next one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use tokio::sync::Notify;
use tokio::time::Instant;

/// The server's connection settings (from the node's `http_*` settings).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// From a request's first byte to the end of its headers.
    pub header_timeout: Duration,
    /// From the end of a request's headers to the end of its body.
    pub body_timeout: Duration,
    /// Between requests on a keep-alive connection.
    pub idle_timeout: Duration,
    /// Open connections allowed (already resolved: never 0).
    pub max_connections: usize,
}

/// File descriptors kept back from client connections: the node's own files (LMDB's two, the
/// lock, the id file), its raft connections to every other store and their snapshot streams, the
/// placement client, the runtime's own (epoll, eventfds), and room for a few accepts in flight.
pub fn fd_reserve(open_file_limit: u64) -> u64 {
    (open_file_limit / 8).max(256)
}

/// The default connection cap under an open-file limit: the limit less [`fd_reserve`], and never
/// below 16 (a node under a limit that small serves a few clients and says so at start).
pub fn default_max_connections(open_file_limit: u64) -> usize {
    open_file_limit.saturating_sub(fd_reserve(open_file_limit)).max(16) as usize
}

/// What one connection is doing, shared by its reader, its service and the registry.
pub struct Activity {
    state: Mutex<Phase>,
    /// Set when the server wants the connection gone (at the cap, or shutting down).
    close: Notify,
}

#[derive(Debug, Clone, Copy)]
struct Phase {
    /// A request has reached the service and its response is not yet handed back.
    in_service: bool,
    /// At least one response was handed back: the connection is a keep-alive one.
    answered: bool,
    /// When the connection started waiting for its next request (accepted, or last response).
    waiting_since: Instant,
    /// When the first byte of the next request arrived, if one has.
    head_started: Option<Instant>,
    /// Asked to close; not chosen again.
    closing: bool,
    /// The body bytes hyper will write after the head of the response the service just handed
    /// back, until the writer reaches that head (see `conn_io`).
    announced: Option<u64>,
}

/// Where a connection is between requests, for the reader's deadlines.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Waiting {
    /// In a request: the handler's own deadlines apply (body, raft), not the reader's.
    InService,
    /// A keep-alive connection with no byte of a next request since this instant.
    Idle(Instant),
    /// A request's head is due, counted from `since`: its first byte (`started`), or the accept of
    /// a connection that has sent nothing yet.
    Head { since: Instant, started: bool },
}

impl Activity {
    fn new(now: Instant) -> Activity {
        Activity {
            state: Mutex::new(Phase {
                in_service: false,
                answered: false,
                waiting_since: now,
                head_started: None,
                closing: false,
                announced: None,
            }),
            close: Notify::new(),
        }
    }

    /// The reader got bytes: outside a request they start the next request's head.
    pub fn on_bytes(&self, now: Instant) {
        let mut phase = self.state.lock();
        if !phase.in_service && phase.head_started.is_none() {
            phase.head_started = Some(now);
        }
    }

    pub fn enter_service(&self) {
        let mut phase = self.state.lock();
        phase.in_service = true;
        phase.head_started = None;
    }

    /// The service handed back a response whose body hyper will write as `body_bytes` bytes.
    pub fn leave_service(&self, now: Instant, body_bytes: u64) {
        let mut phase = self.state.lock();
        phase.in_service = false;
        phase.answered = true;
        phase.waiting_since = now;
        phase.head_started = None;
        phase.announced = Some(body_bytes);
    }

    pub fn take_announced(&self) -> Option<u64> {
        self.state.lock().announced.take()
    }

    pub fn has_announced(&self) -> bool {
        self.state.lock().announced.is_some()
    }

    pub fn waiting(&self) -> Waiting {
        let phase = self.state.lock();
        match (phase.in_service, phase.head_started, phase.answered) {
            (true, _, _) => Waiting::InService,
            (false, Some(since), _) => Waiting::Head { since, started: true },
            (false, None, false) => Waiting::Head { since: phase.waiting_since, started: false },
            (false, None, true) => Waiting::Idle(phase.waiting_since),
        }
    }

    /// Resolves once the server asks this connection to close.
    pub async fn close_requested(&self) {
        self.close.notified().await;
    }

    /// Marks the connection as asked to close and tells its task; false if it already was.
    fn request_close(&self) -> bool {
        let first = !std::mem::replace(&mut self.state.lock().closing, true);
        // A stored permit: the connection's task sees it even if it is not waiting yet.
        self.close.notify_one();
        first
    }

    fn is_closing(&self) -> bool {
        self.state.lock().closing
    }
}

/// The registry of open connections.
pub struct Connections {
    max: usize,
    open: Mutex<Open>,
    next_id: AtomicU64,
    /// Woken whenever a connection ends (for a shutdown waiting for the last one).
    ended: Notify,
}

#[derive(Default)]
struct Open {
    by_id: HashMap<u64, Arc<Activity>>,
    /// How many of them were asked to close.
    closing: usize,
}

/// What becomes of a newly accepted connection.
pub enum Admission {
    /// Serve it; the registration ends (and frees its place) when dropped.
    Admitted(Registration),
    /// Serve it; the longest-idle connection was asked to close to make room.
    AdmittedByEvicting(Registration),
    /// Every place is taken by a connection in the middle of a request.
    Full,
}

/// A connection's place in the registry.
pub struct Registration {
    id: u64,
    pub activity: Arc<Activity>,
    connections: Arc<Connections>,
}

impl Drop for Registration {
    fn drop(&mut self) {
        let mut open = self.connections.open.lock();
        open.by_id.remove(&self.id);
        if self.activity.is_closing() {
            open.closing -= 1;
        }
        drop(open);
        self.connections.ended.notify_waiters();
    }
}

impl Connections {
    pub fn new(max: usize) -> Arc<Connections> {
        Arc::new(Connections {
            max: max.max(1),
            open: Mutex::default(),
            next_id: AtomicU64::new(0),
            ended: Notify::new(),
        })
    }

    pub fn len(&self) -> usize {
        self.open.lock().by_id.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Finds room for a new connection, closing the longest-idle one at the cap. Connections asked
    /// to close still count until they are gone, except against each other: each one asked makes
    /// room for one newcomer, so a burst at the cap cannot go past it by more than the idle
    /// connections it is closing (which close within a poll).
    pub fn admit(self: &Arc<Self>, now: Instant) -> Admission {
        let mut open = self.open.lock();
        let register = |open: &mut Open| {
            let id = self.next_id.fetch_add(1, Ordering::Relaxed);
            let activity = Arc::new(Activity::new(now));
            open.by_id.insert(id, activity.clone());
            Registration { id, activity, connections: self.clone() }
        };
        if open.by_id.len() - open.closing < self.max {
            return Admission::Admitted(register(&mut open));
        }
        // The keep-alive connection idle the longest.
        let victim = open
            .by_id
            .values()
            .filter_map(|activity| {
                let phase = *activity.state.lock();
                let idle = phase.answered && !phase.in_service && phase.head_started.is_none() && !phase.closing;
                idle.then_some((phase.waiting_since, activity))
            })
            .min_by_key(|(since, _)| *since)
            .map(|(_, activity)| activity.clone());
        match victim {
            Some(victim) => {
                if victim.request_close() {
                    open.closing += 1;
                }
                Admission::AdmittedByEvicting(register(&mut open))
            }
            None => Admission::Full,
        }
    }

    /// Asks every connection to close once its current request is answered.
    pub fn close_all(&self) {
        let mut open = self.open.lock();
        let newly = open.by_id.values().filter(|activity| activity.request_close()).count();
        open.closing += newly;
    }

    /// Waits until every connection has ended.
    pub async fn all_ended(&self) {
        loop {
            let ended = self.ended.notified();
            if self.is_empty() {
                return;
            }
            ended.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(admission: Admission) -> Registration {
        match admission {
            Admission::Admitted(registration) => registration,
            Admission::AdmittedByEvicting(_) => panic!("evicted where there was room"),
            Admission::Full => panic!("refused where there was room"),
        }
    }

    #[test]
    fn the_default_cap_keeps_a_reserve_of_descriptors() {
        assert_eq!(default_max_connections(1024), 768);
        assert_eq!(default_max_connections(1 << 20), (1 << 20) - (1 << 17));
        assert_eq!(default_max_connections(100), 16);
    }

    #[test]
    fn at_the_cap_the_longest_idle_keep_alive_connection_makes_room_and_no_other_does() {
        let connections = Connections::new(4);
        let at = |secs| Instant::now() + Duration::from_secs(secs);
        let (oldest, newer, busy, fresh) = (
            admitted(connections.admit(at(0))),
            admitted(connections.admit(at(1))),
            admitted(connections.admit(at(2))),
            admitted(connections.admit(at(3))),
        );
        for (keep_alive, answered_at) in [(&oldest, 4), (&newer, 5), (&busy, 6)] {
            keep_alive.activity.enter_service();
            keep_alive.activity.leave_service(at(answered_at), 0);
        }
        busy.activity.enter_service();
        // The one idle the longest goes first; `newer` then starts its next request's head.
        let Admission::AdmittedByEvicting(first) = connections.admit(at(7)) else { panic!("no room made") };
        assert!(oldest.activity.is_closing() && !newer.activity.is_closing());
        newer.activity.on_bytes(at(8));
        // Left: one sending a head, one in service, one that has sent nothing yet, and the
        // newcomer: none of them idle, whatever their age.
        assert!(matches!(connections.admit(at(9)), Admission::Full));
        assert_eq!(connections.len(), 5);
        drop(oldest);
        assert!(matches!(connections.admit(at(10)), Admission::Full));
        drop((fresh, first));
        admitted(connections.admit(at(11)));
    }

    #[test]
    fn a_connection_tells_a_due_head_from_idle_from_a_request() {
        let connections = Connections::new(1);
        let start = Instant::now();
        let registration = admitted(connections.admit(start));
        let activity = &registration.activity;
        // A new connection owes its first request's head from the accept.
        assert_eq!(activity.waiting(), Waiting::Head { since: start, started: false });
        activity.on_bytes(start + Duration::from_secs(1));
        activity.on_bytes(start + Duration::from_secs(2));
        assert_eq!(activity.waiting(), Waiting::Head { since: start + Duration::from_secs(1), started: true });
        activity.enter_service();
        activity.on_bytes(start + Duration::from_secs(3)); // the body
        assert_eq!(activity.waiting(), Waiting::InService);
        activity.leave_service(start + Duration::from_secs(4), 0);
        assert_eq!(activity.waiting(), Waiting::Idle(start + Duration::from_secs(4)));
        activity.on_bytes(start + Duration::from_secs(5));
        assert_eq!(activity.waiting(), Waiting::Head { since: start + Duration::from_secs(5), started: true });
    }
}
