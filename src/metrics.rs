//! The node's Prometheus metrics (`GET /metrics`), one registry per node so in-process clusters keep
//! their nodes apart. Names follow `fekv_<subsystem>_<what>_<unit>`.
//!
//! The group-commit figure to watch is `fekv_raftstore_proposals_total / fekv_storage_commits_total`
//! (also as the histogram `fekv_storage_proposals_per_commit`). Commits per write:
//! `fekv_storage_commits_total / fekv_raftstore_proposals_total`, of which
//! `fekv_storage_apply_only_commits_total` made one flush instead of two.

use prometheus::{
    Encoder, Histogram, HistogramOpts, HistogramVec, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

pub struct Metrics {
    registry: Registry,
    pub http_requests: IntCounterVec,
    pub http_request_duration: HistogramVec,
    pub http_connections: IntGauge,
    pub http_connections_closed: IntCounterVec,
    pub raft_proposals: IntCounter,
    pub raft_proposals_rejected: IntCounterVec,
    pub raft_read_index: IntCounter,
    pub raft_leader_changes: IntCounter,
    pub raft_applied_entries: IntCounter,
    pub raft_log_compactions: IntCounter,
    pub raft_peers_destroyed: IntCounter,
    pub raftstore_rounds: IntCounter,
    pub raftstore_peers_per_round: Histogram,
    pub raftstore_hibernated_regions: IntGauge,
    pub raft_messages_sent: IntCounterVec,
    pub raft_messages_received: IntCounterVec,
    pub raft_messages_dropped: IntCounterVec,
    pub raft_snapshots: IntCounterVec,
    pub transport_batch_messages: Histogram,
    pub transport_batch_bytes: Histogram,
    pub storage_commits: IntCounter,
    pub storage_apply_only_commits: IntCounter,
    pub raft_answered_at_commit: IntCounter,
    pub raftstore_deferred_rounds: IntCounter,
    pub storage_commit_failures: IntCounter,
    pub storage_commit_duration: Histogram,
    pub storage_entries_per_commit: Histogram,
    pub storage_proposals_per_commit: Histogram,
    pub storage_checksum_failures: IntCounter,
    pub storage_used_bytes: IntGauge,
    pub storage_map_size_bytes: IntGauge,
    pub storage_scrub: crate::storage::scrub::background::ScrubMetrics,
    pub auth_logins: IntCounterVec,
    pub tls_handshakes: IntCounterVec,
}

fn counter(registry: &Registry, name: &str, help: &str) -> IntCounter {
    let metric = IntCounter::new(name, help).expect("metric name is valid");
    registry.register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

fn counter_vec(registry: &Registry, name: &str, help: &str, labels: &[&str]) -> IntCounterVec {
    let metric = IntCounterVec::new(Opts::new(name, help), labels).expect("metric name is valid");
    registry.register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

fn gauge(registry: &Registry, name: &str, help: &str) -> IntGauge {
    let metric = IntGauge::new(name, help).expect("metric name is valid");
    registry.register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

fn float_gauge(registry: &Registry, name: &str, help: &str) -> prometheus::Gauge {
    let metric = prometheus::Gauge::new(name, help).expect("metric name is valid");
    registry.register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

fn scrub_metrics(registry: &Registry) -> crate::storage::scrub::background::ScrubMetrics {
    crate::storage::scrub::background::ScrubMetrics {
        runs: counter(registry, "fekv_storage_scrub_runs_total", "Scrub passes over the whole store completed"),
        last_run_timestamp: gauge(
            registry,
            "fekv_storage_scrub_last_run_timestamp_seconds",
            "When the last scrub pass finished (Unix time; 0: none yet)",
        ),
        last_run_duration: float_gauge(
            registry,
            "fekv_storage_scrub_last_run_duration_seconds",
            "How long the last scrub pass took",
        ),
        records_checked: counter(
            registry,
            "fekv_storage_scrub_records_checked_total",
            "Stored records the scrub checked (every database)",
        ),
        damaged: gauge(
            registry,
            "fekv_storage_scrub_damaged_records",
            "Problems the last scrub pass found (0: the store checked clean)",
        ),
    }
}

fn histogram(registry: &Registry, name: &str, help: &str, buckets: Vec<f64>) -> Histogram {
    let metric = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets)).expect("metric name is valid");
    registry.register(Box::new(metric.clone())).expect("metric registered once");
    metric
}

/// Buckets for counts per commit: 1, 2, 4, ... 4096.
fn count_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(1.0, 2.0, 13).expect("valid buckets")
}

/// Buckets for latencies: 50µs .. ~13s.
fn latency_buckets() -> Vec<f64> {
    prometheus::exponential_buckets(0.00005, 2.0, 19).expect("valid buckets")
}

impl Metrics {
    pub fn new() -> Metrics {
        let registry = Registry::new();
        let http_requests = IntCounterVec::new(
            Opts::new("fekv_http_requests_total", "HTTP requests answered, by route, method and status code"),
            &["route", "method", "code"],
        )
        .expect("metric name is valid");
        registry.register(Box::new(http_requests.clone())).expect("metric registered once");
        let http_request_duration = HistogramVec::new(
            HistogramOpts::new("fekv_http_request_duration_seconds", "HTTP request latency, by route and method")
                .buckets(latency_buckets()),
            &["route", "method"],
        )
        .expect("metric name is valid");
        registry.register(Box::new(http_request_duration.clone())).expect("metric registered once");
        let raft_proposals_rejected = IntCounterVec::new(
            Opts::new("fekv_raft_proposals_rejected_total", "Proposals refused before reaching the log, by reason"),
            &["reason"],
        )
        .expect("metric name is valid");
        registry.register(Box::new(raft_proposals_rejected.clone())).expect("metric registered once");
        Metrics {
            http_requests,
            http_request_duration,
            http_connections: gauge(&registry, "fekv_http_connections", "Client connections open"),
            http_connections_closed: counter_vec(
                &registry,
                "fekv_http_connections_closed_total",
                "Client connections the server closed or refused, by reason: idle_timeout, header_timeout, \
                 send_timeout (the client read nothing), malformed_request, evicted (the longest-idle one, for a new client at the cap), over_cap \
                 (refused with 503: every connection in a request)",
                &["reason"],
            ),
            auth_logins: counter_vec(
                &registry,
                "fekv_auth_logins_total",
                "Password checks on the client API while auth is enabled, by outcome: succeeded, failed, throttled \
                 (refused unchecked after too many failures)",
                &["outcome"],
            ),
            raft_proposals: counter(&registry, "fekv_raftstore_proposals_total", "Client commands proposed to raft"),
            raft_proposals_rejected,
            raft_read_index: counter(
                &registry,
                "fekv_raftstore_read_index_total",
                "ReadIndex requests issued (each serves a batch of reads)",
            ),
            raft_leader_changes: counter(
                &registry,
                "fekv_raft_leader_changes_total",
                "Times a local peer saw its region's leader change",
            ),
            raft_applied_entries: counter(&registry, "fekv_raft_applied_entries_total", "Raft log entries applied"),
            raft_log_compactions: counter(&registry, "fekv_raft_log_compactions_total", "Raft log compactions applied"),
            raft_peers_destroyed: counter(
                &registry,
                "fekv_raft_peers_destroyed_total",
                "Peers destroyed here after their removal from a region (data deleted, tombstone kept)",
            ),
            raftstore_rounds: counter(&registry, "fekv_raftstore_rounds_total", "Poll rounds of the raftstore thread"),
            raftstore_peers_per_round: histogram(
                &registry,
                "fekv_raftstore_peers_per_round",
                "Peers a raftstore round visited (those with a message, a request, a due tick or an unfinished ready)",
                prometheus::exponential_buckets(1.0, 2.0, 17).expect("valid buckets"),
            ),
            raftstore_hibernated_regions: gauge(
                &registry,
                "fekv_raftstore_hibernated_regions",
                "Local peers whose region hibernates: idle, they neither tick nor heartbeat",
            ),
            raft_messages_sent: counter_vec(
                &registry,
                "fekv_raft_messages_sent_total",
                "Raft messages handed to the transport, by type",
                &["type"],
            ),
            raft_messages_received: counter_vec(
                &registry,
                "fekv_raft_messages_received_total",
                "Raft messages received from other stores, by type",
                &["type"],
            ),
            raft_messages_dropped: counter_vec(
                &registry,
                "fekv_raft_messages_dropped_total",
                "Raft messages the transport could not send, by type",
                &["type"],
            ),
            transport_batch_messages: histogram(
                &registry,
                "fekv_transport_batch_messages",
                "Raft messages per batch sent to one store (one batch per store per round)",
                count_buckets(),
            ),
            transport_batch_bytes: histogram(
                &registry,
                "fekv_transport_batch_bytes",
                "Bytes per batch sent to one store",
                prometheus::exponential_buckets(64.0, 4.0, 12).expect("valid buckets"),
            ),
            raft_snapshots: counter_vec(
                &registry,
                "fekv_raft_snapshots_total",
                "Snapshots sent, received and rejected as damaged",
                &["event"],
            ),
            storage_commits: counter(
                &registry,
                "fekv_storage_commits_total",
                "LMDB write transactions committed (apply-only ones included)",
            ),
            storage_apply_only_commits: counter(
                &registry,
                "fekv_storage_apply_only_commits_total",
                "LMDB commits that only applied committed entries (one flush: no meta page sync)",
            ),
            raft_answered_at_commit: counter(
                &registry,
                "fekv_raft_writes_answered_at_commit_total",
                "Plain writes answered once their entry committed, before their apply",
            ),
            raftstore_deferred_rounds: counter(
                &registry,
                "fekv_raftstore_deferred_apply_rounds_total",
                "Rounds whose applies waited for a later commit instead of committing their own",
            ),
            storage_commit_failures: counter(
                &registry,
                "fekv_storage_commit_failures_total",
                "LMDB write transactions that failed",
            ),
            storage_commit_duration: histogram(
                &registry,
                "fekv_storage_commit_duration_seconds",
                "Time to commit a round's LMDB transaction",
                latency_buckets(),
            ),
            storage_entries_per_commit: histogram(
                &registry,
                "fekv_storage_entries_per_commit",
                "Raft log entries written per LMDB commit",
                count_buckets(),
            ),
            storage_proposals_per_commit: histogram(
                &registry,
                "fekv_storage_proposals_per_commit",
                "Client proposals made durable per LMDB commit",
                count_buckets(),
            ),
            storage_checksum_failures: counter(
                &registry,
                "fekv_storage_checksum_failures_total",
                "Stored records or log entries whose crc32c did not match",
            ),
            storage_used_bytes: gauge(
                &registry,
                "fekv_storage_used_bytes",
                "Bytes of the LMDB map in use (excluding free pages)",
            ),
            storage_map_size_bytes: gauge(&registry, "fekv_storage_map_size_bytes", "Configured LMDB map size"),
            storage_scrub: scrub_metrics(&registry),
            tls_handshakes: counter_vec(
                &registry,
                "fekv_tls_handshakes_total",
                "TLS handshakes on the node's listeners, by listener (client: the REST API, peer: the raft \
                 port) and outcome (completed, failed, timed_out)",
                &["listener", "outcome"],
            ),
            registry,
        }
    }

    /// What a TLS listener reports each handshake to: `fekv_tls_handshakes_total{listener}`.
    pub fn handshake_hook(&self, listener: &'static str) -> crate::security::tls::HandshakeHook {
        let counter = self.tls_handshakes.clone();
        std::sync::Arc::new(move |event: crate::security::tls::HandshakeEvent| {
            counter.with_label_values(&[listener, event.as_str()]).inc()
        })
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = Vec::new();
        prometheus::TextEncoder::new().encode(&self.registry.gather(), &mut out).expect("text encoding cannot fail");
        String::from_utf8(out).expect("prometheus text is UTF-8")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
