//! The node's configuration: one flat set of names shared by the TOML file, the `FEKV_*` environment
//! variables and the command-line flags (`max_value_size` = `FEKV_MAX_VALUE_SIZE` = `--max-value-size`).
//!
//! Precedence: built-in default < `--config` file < environment < flag. Clap merges the last two
//! (a flag wins over its variable); [`ServeArgs::load`] lays the result over the file.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::{Deserialize, Serialize};

use crate::security::config::{NodeTlsArgs, TlsConfig};

/// LMDB refuses keys longer than this (its compile-time `MDB_MAXKEYSIZE`); user keys are stored as
/// they are, so this is also fekv's key limit.
pub const MAX_KEY_SIZE: usize = 511;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Where the REST API listens.
    pub http_addr: SocketAddr,
    /// Directory of the node's LMDB environment.
    pub data_dir: PathBuf,
    /// Addresses of the placement replicas, comma-separated (`host:port`, `http://host:port`,
    /// `https://host:port`); the file may give an array. Unset: a single node with no peers.
    #[serde(deserialize_with = "string_or_list")]
    pub placement: Option<String>,
    /// Where other stores reach this one's raft transport (cluster mode).
    pub raft_addr: SocketAddr,
    /// The `host:port` clients and other nodes use to reach the REST API: registered with placement,
    /// so it is where other nodes redirect to. Unset: the address `http_addr` binds, which must then
    /// be a specific one (not `0.0.0.0` or `::`) in cluster mode.
    pub advertise_http_addr: Option<String>,
    /// The `host:port` other stores use to reach the raft transport. Unset: the address `raft_addr`
    /// binds, which must then be a specific one.
    pub advertise_raft_addr: Option<String>,
    /// Log filter when `RUST_LOG` is unset (tracing `EnvFilter` syntax).
    pub log_level: String,
    /// Largest value a PUT/POST may carry; larger bodies get `413`.
    pub max_value_size: ByteSize,
    /// LMDB map size: the most the database file may grow to. Writes get `507` near it.
    pub map_size: ByteSize,
    /// LMDB reader slots: concurrent GETs in flight.
    pub max_readers: u32,
    /// Raft's logical clock.
    #[serde(with = "humantime_serde")]
    pub raft_tick_interval: Duration,
    /// Ticks without a leader before a follower campaigns.
    pub raft_election_ticks: usize,
    /// Ticks between a leader's heartbeats.
    pub raft_heartbeat_ticks: usize,
    /// Raft log entries kept after apply before the leader compacts the log.
    pub raft_log_gc_threshold: u64,
    /// Messages the raftstore drains per poll round (one LMDB commit per round).
    pub raftstore_max_batch: usize,
    /// How long committed entries may wait to be applied in the next round that syncs the log
    /// anyway, before they get a commit of their own (one flush). 0 applies at once.
    #[serde(with = "humantime_serde")]
    pub raft_apply_delay: Duration,
    /// A round nobody waits behind (no round in flight, no message queued) is committed on the
    /// raftstore thread itself, saving a lone writer the two thread hops to the writer thread and
    /// back; false sends every round through the writer thread.
    pub raftstore_inline_commit: bool,
    /// Time between the starts of two background scrub passes over the whole store; 0 turns the
    /// background scrub off (`POST /scrub` still checks on demand).
    #[serde(with = "humantime_serde")]
    pub scrub_interval: Duration,
    /// Bytes per second a background scrub pass reads at most.
    pub scrub_rate: ByteSize,
    /// Largest snapshot a store accepts from another; a bigger one is refused before it is received.
    pub snapshot_max_size: ByteSize,
    /// Snapshots received at once; more are refused (the sender's raft retries later).
    pub snapshot_max_receiving: usize,
    /// A snapshot stream with no chunk for this long is dropped.
    #[serde(with = "humantime_serde")]
    pub snapshot_recv_timeout: Duration,
    /// A region larger than this (keys + values) is split in two.
    pub region_max_size: ByteSize,
    /// How long a request may wait for raft before it is answered `503`/`504`.
    #[serde(with = "humantime_serde")]
    pub request_timeout: Duration,
    /// How long a client may take to send a request's line and headers, from its first byte; then
    /// `408` and the connection is closed.
    #[serde(with = "humantime_serde")]
    pub http_header_timeout: Duration,
    /// How long a client may take to send a request's whole body, once its headers are in (then
    /// `408`), or to read any of a response being written to it (then the connection is closed).
    #[serde(with = "humantime_serde")]
    pub http_body_timeout: Duration,
    /// A keep-alive connection with no request for this long is closed.
    #[serde(with = "humantime_serde")]
    pub http_idle_timeout: Duration,
    /// Most client connections open at once; 0 = derived from the open-file limit, keeping a reserve
    /// for the node's own files and raft connections. At the cap, a new connection closes the
    /// longest-idle one, or is answered `503` if none is idle.
    pub http_max_connections: usize,
    /// How long a token from `POST /auth/token` is valid (auth, issue 12).
    #[serde(with = "humantime_serde")]
    pub auth_token_ttl: Duration,
    /// The argon2id cost the node checks unknown user names at, matching placement's
    /// `--password-cost`: `interactive`, or `minimal` for tests only.
    pub auth_password_cost: String,
    /// A second listener serving `/metrics`, `/status`, `/health` and `/ready` without credentials
    /// (etcd's `--listen-metrics-urls`); keep it on loopback. Unset: none.
    pub metrics_addr: Option<SocketAddr>,
    /// TLS on the REST API and the peer side (the `[tls]` table); empty: none, as before.
    #[serde(skip_serializing_if = "TlsConfig::is_empty")]
    pub tls: TlsConfig,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 3000)),
            data_dir: PathBuf::from("./fekv-data"),
            placement: None,
            raft_addr: SocketAddr::from(([127, 0, 0, 1], 20160)),
            advertise_http_addr: None,
            advertise_raft_addr: None,
            log_level: "info".into(),
            max_value_size: ByteSize::mib(1),
            map_size: ByteSize::gib(16),
            max_readers: 1024,
            raft_tick_interval: Duration::from_millis(100),
            raft_election_ticks: 10,
            raft_heartbeat_ticks: 2,
            raft_log_gc_threshold: 1024,
            raftstore_max_batch: 4096,
            raft_apply_delay: Duration::from_millis(2),
            raftstore_inline_commit: true,
            scrub_interval: Duration::from_secs(24 * 3600),
            scrub_rate: ByteSize::mib(32),
            snapshot_max_size: ByteSize::gib(1),
            snapshot_max_receiving: 4,
            snapshot_recv_timeout: Duration::from_secs(30),
            region_max_size: ByteSize::mib(64),
            request_timeout: Duration::from_secs(5),
            http_header_timeout: Duration::from_secs(10),
            http_body_timeout: Duration::from_secs(30),
            http_idle_timeout: Duration::from_secs(60),
            http_max_connections: 0,
            auth_token_ttl: Duration::from_secs(300),
            auth_password_cost: "interactive".into(),
            metrics_addr: None,
            tls: TlsConfig::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("invalid config file {path}: {source}")]
    Parse { path: PathBuf, source: Box<toml::de::Error> },
    #[error("invalid setting {name}: {reason}")]
    Invalid { name: &'static str, reason: String },
}

/// `placement = "a:1,b:2"` or `placement = ["a:1", "b:2"]`: kept as the one comma-separated form
/// the flag and the environment give.
fn string_or_list<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(Some(match OneOrMany::deserialize(deserializer)? {
        OneOrMany::One(list) => list,
        OneOrMany::Many(list) => list.join(","),
    }))
}

impl Config {
    pub fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |name, reason: &str| Err(ConfigError::Invalid { name, reason: reason.into() });
        if let Err(reason) = crate::logging::check_filter(&self.log_level) {
            return invalid("log_level", &reason);
        }
        if let Err((name, reason)) =
            crate::security::config::check(&self.tls, self.auth_token_ttl, &self.auth_password_cost)
        {
            return invalid(name, &reason);
        }
        for (name, addr) in
            [("advertise_http_addr", &self.advertise_http_addr), ("advertise_raft_addr", &self.advertise_raft_addr)]
        {
            if let Some(Err(reason)) = addr.as_deref().map(check_advertised) {
                return invalid(name, &reason);
            }
        }
        if self.max_value_size.as_u64() == 0 {
            return invalid("max_value_size", "must be at least 1 byte");
        }
        // A value and its raft entry must fit in the map with room to spare.
        if self.map_size.as_u64() < 4 * self.max_value_size.as_u64() + ByteSize::mib(1).as_u64() {
            return invalid("map_size", "must be at least 4 × max_value_size + 1MiB");
        }
        if self.max_readers < 8 {
            return invalid("max_readers", "must be at least 8");
        }
        if self.raft_tick_interval.is_zero() {
            return invalid("raft_tick_interval", "must be positive");
        }
        if self.raft_heartbeat_ticks == 0 || self.raft_election_ticks <= self.raft_heartbeat_ticks {
            return invalid("raft_election_ticks", "must be greater than raft_heartbeat_ticks, which must be positive");
        }
        if self.raft_log_gc_threshold == 0 {
            return invalid("raft_log_gc_threshold", "must be at least 1");
        }
        if self.region_max_size.as_u64() == 0 {
            return invalid("region_max_size", "must be at least 1 byte");
        }
        if self.raftstore_max_batch == 0 {
            return invalid("raftstore_max_batch", "must be at least 1");
        }
        if self.scrub_rate.as_u64() == 0 {
            return invalid("scrub_rate", "must be at least 1 byte (turn the scrub off with scrub_interval = 0)");
        }
        if self.snapshot_max_size.as_u64() == 0 {
            return invalid("snapshot_max_size", "must be at least 1 byte");
        }
        if self.snapshot_max_receiving == 0 {
            return invalid("snapshot_max_receiving", "must be at least 1");
        }
        if self.snapshot_recv_timeout.is_zero() {
            return invalid("snapshot_recv_timeout", "must be positive");
        }
        if self.request_timeout < self.raft_tick_interval {
            return invalid("request_timeout", "must be at least one raft_tick_interval");
        }
        for (name, timeout) in [
            ("http_header_timeout", self.http_header_timeout),
            ("http_body_timeout", self.http_body_timeout),
            ("http_idle_timeout", self.http_idle_timeout),
        ] {
            if timeout.is_zero() {
                return invalid(name, "must be positive");
            }
        }
        Ok(())
    }

    /// The address registered for the REST API: `advertise_http_addr`, else the one bound.
    pub fn advertised_http_addr(&self, bound: SocketAddr) -> Result<String, ConfigError> {
        advertised("advertise_http_addr", "http_addr", self.advertise_http_addr.as_deref(), bound)
    }

    /// The address registered for the raft transport: `advertise_raft_addr`, else the one bound.
    pub fn advertised_raft_addr(&self, bound: SocketAddr) -> Result<String, ConfigError> {
        advertised("advertise_raft_addr", "raft_addr", self.advertise_raft_addr.as_deref(), bound)
    }

    /// Bytes of the LMDB map kept free for log GC and deletes: writes that would eat into it are
    /// refused with `507` before they reach raft, so a full disk never wedges the raft log.
    pub fn write_reserve(&self) -> u64 {
        (self.map_size.as_u64() / 16).max(2 * self.max_value_size.as_u64() + ByteSize::kib(256).as_u64())
    }

    /// Bytes of the filesystem under the data directory kept free the same way (counting the free
    /// pages inside LMDB's file): writes that add data are refused with `507` once less is left,
    /// so a disk the node fills itself still has room for the deletes that free it. Not a share of
    /// the map, which says nothing of the disk: what a delete and a log compaction need.
    pub fn disk_reserve(&self) -> u64 {
        ByteSize::mib(16).as_u64().max(2 * self.max_value_size.as_u64() + ByteSize::kib(256).as_u64())
    }
}

/// Checks an advertised address: `host:port`, where the host is a name or an IP address (IPv6 in
/// brackets) that others can connect to, so not an unspecified one.
pub fn check_advertised(addr: &str) -> Result<(), String> {
    let Some((host, port)) = addr.rsplit_once(':') else {
        return Err(format!("{addr:?} is not host:port"));
    };
    if port.parse::<u16>().map_or(true, |port| port == 0) {
        return Err(format!("{addr:?} has no valid port (1 to 65535)"));
    }
    let bare = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    if bare.is_empty() || bare.chars().any(|c| c.is_whitespace() || c == '/' || c == '@') {
        return Err(format!("{addr:?} has no valid host"));
    }
    match bare.parse::<std::net::IpAddr>() {
        Ok(ip) if ip.is_unspecified() => {
            Err(format!("{addr:?} is the unspecified address: others cannot connect to it"))
        }
        Ok(std::net::IpAddr::V6(_)) if host == bare => Err(format!("{addr:?}: write an IPv6 host in brackets")),
        _ => Ok(()),
    }
}

/// `configured` if set, else `bound`, which must not be an unspecified address (it would be
/// registered as the place to reach this node).
fn advertised(
    setting: &'static str,
    bind_setting: &str,
    configured: Option<&str>,
    bound: SocketAddr,
) -> Result<String, ConfigError> {
    if let Some(addr) = configured {
        return Ok(addr.to_string());
    }
    if bound.ip().is_unspecified() {
        return Err(ConfigError::Invalid {
            name: setting,
            reason: format!(
                "{bind_setting} {bound} listens on every interface, which is no address to give other nodes; \
                 set {setting} to the host:port they reach this node at"
            ),
        });
    }
    Ok(bound.to_string())
}

/// The node's settings as flags (each also read from its `FEKV_*` variable). Unset ones keep the
/// value from the file or the default.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct ServeArgs {
    /// TOML file with any of the settings below (same names, snake_case).
    #[arg(long, env = "FEKV_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// REST API listen address [default: 127.0.0.1:3000]
    #[arg(long, env = "FEKV_HTTP_ADDR", value_name = "ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Data directory [default: ./fekv-data]
    #[arg(long, env = "FEKV_DATA_DIR", value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
    /// Placement replicas, comma-separated (host:port, http:// or https:// URLs); without it the node runs alone [default: none]
    #[arg(long, env = "FEKV_PLACEMENT", value_name = "ADDR")]
    pub placement: Option<String>,
    /// Raft transport listen address, for the other stores (with --placement) [default: 127.0.0.1:20160]
    #[arg(long, env = "FEKV_RAFT_ADDR", value_name = "ADDR")]
    pub raft_addr: Option<SocketAddr>,
    /// host:port registered for the REST API, where other nodes redirect clients [default: the bound http-addr]
    #[arg(long, env = "FEKV_ADVERTISE_HTTP_ADDR", value_name = "HOST:PORT")]
    pub advertise_http_addr: Option<String>,
    /// host:port registered for the raft transport, where other stores connect [default: the bound raft-addr]
    #[arg(long, env = "FEKV_ADVERTISE_RAFT_ADDR", value_name = "HOST:PORT")]
    pub advertise_raft_addr: Option<String>,
    /// Log level, or filter (info,fekv=debug), used when RUST_LOG is unset [default: info]
    #[arg(long, env = "FEKV_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,
    /// Largest value accepted by PUT/POST, e.g. 512KiB [default: 1MiB]
    #[arg(long, env = "FEKV_MAX_VALUE_SIZE", value_name = "SIZE")]
    pub max_value_size: Option<ByteSize>,
    /// LMDB map size: the most the database may grow to [default: 16GiB]
    #[arg(long, env = "FEKV_MAP_SIZE", value_name = "SIZE")]
    pub map_size: Option<ByteSize>,
    /// LMDB reader slots (concurrent reads) [default: 1024]
    #[arg(long, env = "FEKV_MAX_READERS", value_name = "N")]
    pub max_readers: Option<u32>,
    /// Raft tick interval [default: 100ms]
    #[arg(long, env = "FEKV_RAFT_TICK_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub raft_tick_interval: Option<Duration>,
    /// Ticks before a follower without a leader campaigns [default: 10]
    #[arg(long, env = "FEKV_RAFT_ELECTION_TICKS", value_name = "N")]
    pub raft_election_ticks: Option<usize>,
    /// Ticks between leader heartbeats [default: 2]
    #[arg(long, env = "FEKV_RAFT_HEARTBEAT_TICKS", value_name = "N")]
    pub raft_heartbeat_ticks: Option<usize>,
    /// Applied raft log entries kept before the log is compacted [default: 1024]
    #[arg(long, env = "FEKV_RAFT_LOG_GC_THRESHOLD", value_name = "N")]
    pub raft_log_gc_threshold: Option<u64>,
    /// Messages handled per raftstore round, all committed to LMDB at once [default: 4096]
    #[arg(long, env = "FEKV_RAFTSTORE_MAX_BATCH", value_name = "N")]
    pub raftstore_max_batch: Option<usize>,
    /// Longest wait of committed entries for a round that syncs the log anyway; then they are
    /// applied in a commit of their own (one flush) [default: 2ms]
    #[arg(long, env = "FEKV_RAFT_APPLY_DELAY", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub raft_apply_delay: Option<Duration>,
    /// Commit a round nobody waits behind on the raftstore thread, not the writer thread [default: true]
    #[arg(long, env = "FEKV_RAFTSTORE_INLINE_COMMIT", value_name = "BOOL")]
    pub raftstore_inline_commit: Option<bool>,
    /// Time between background scrubs of the whole store; 0s turns them off [default: 24h]
    #[arg(long, env = "FEKV_SCRUB_INTERVAL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub scrub_interval: Option<Duration>,
    /// Bytes per second a background scrub reads at most [default: 32MiB]
    #[arg(long, env = "FEKV_SCRUB_RATE", value_name = "SIZE")]
    pub scrub_rate: Option<ByteSize>,
    /// Largest snapshot accepted from another store [default: 1GiB]
    #[arg(long, env = "FEKV_SNAPSHOT_MAX_SIZE", value_name = "SIZE")]
    pub snapshot_max_size: Option<ByteSize>,
    /// Snapshots received at once; more are refused and retried by their sender [default: 4]
    #[arg(long, env = "FEKV_SNAPSHOT_MAX_RECEIVING", value_name = "N")]
    pub snapshot_max_receiving: Option<usize>,
    /// Drop a snapshot stream that sends no chunk for this long [default: 30s]
    #[arg(long, env = "FEKV_SNAPSHOT_RECV_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub snapshot_recv_timeout: Option<Duration>,
    /// Split a region once its keys and values pass this size, e.g. 4KiB [default: 64MiB]
    #[arg(long, env = "FEKV_REGION_MAX_SIZE", value_name = "SIZE")]
    pub region_max_size: Option<ByteSize>,
    /// How long a request may wait for raft before 503/504 [default: 5s]
    #[arg(long, env = "FEKV_REQUEST_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub request_timeout: Option<Duration>,
    /// Time a client has to send a request's headers, from its first byte, before 408 [default: 10s]
    #[arg(long, env = "FEKV_HTTP_HEADER_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub http_header_timeout: Option<Duration>,
    /// Time a client has to send a request's whole body, after its headers, before 408 [default: 30s]
    #[arg(long, env = "FEKV_HTTP_BODY_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub http_body_timeout: Option<Duration>,
    /// A keep-alive connection without a request for this long is closed [default: 60s]
    #[arg(long, env = "FEKV_HTTP_IDLE_TIMEOUT", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub http_idle_timeout: Option<Duration>,
    /// Most client connections at once; 0 = the open-file limit less a reserve [default: 0]
    #[arg(long, env = "FEKV_HTTP_MAX_CONNECTIONS", value_name = "N")]
    pub http_max_connections: Option<usize>,
    /// Validity of the tokens POST /auth/token issues [default: 5m]
    #[arg(long, env = "FEKV_AUTH_TOKEN_TTL", value_name = "DURATION", value_parser = humantime::parse_duration)]
    pub auth_token_ttl: Option<Duration>,
    /// argon2id cost of password checks, as placement's --password-cost: interactive, or minimal (tests only) [default: interactive]
    #[arg(long, env = "FEKV_AUTH_PASSWORD_COST", value_name = "COST")]
    pub auth_password_cost: Option<String>,
    /// Listener serving /metrics, /status, /health, /ready without credentials; keep it on loopback [default: none]
    #[arg(long, env = "FEKV_METRICS_ADDR", value_name = "ADDR")]
    pub metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    pub tls: NodeTlsArgs,
}

impl ServeArgs {
    /// The effective configuration: default < file < environment < flags, validated.
    pub fn load(&self) -> Result<Config, ConfigError> {
        let mut config = match &self.config {
            None => Config::default(),
            Some(path) => {
                let text =
                    std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.clone(), source })?;
                toml::from_str(&text)
                    .map_err(|source| ConfigError::Parse { path: path.clone(), source: Box::new(source) })?
            }
        };
        macro_rules! overlay {
            ($($field:ident),*) => { $( if let Some(value) = &self.$field { config.$field = value.clone(); } )* };
        }
        // The settings with no default: a flag sets them, its absence keeps the file's.
        for (flag, setting) in [
            (&self.placement, &mut config.placement),
            (&self.advertise_http_addr, &mut config.advertise_http_addr),
            (&self.advertise_raft_addr, &mut config.advertise_raft_addr),
        ] {
            if flag.is_some() {
                *setting = flag.clone();
            }
        }
        if self.metrics_addr.is_some() {
            config.metrics_addr = self.metrics_addr;
        }
        overlay!(
            http_addr,
            data_dir,
            raft_addr,
            log_level,
            max_value_size,
            map_size,
            max_readers,
            raft_tick_interval,
            raft_election_ticks,
            raft_heartbeat_ticks,
            raft_log_gc_threshold,
            raftstore_max_batch,
            raft_apply_delay,
            raftstore_inline_commit,
            scrub_interval,
            scrub_rate,
            snapshot_max_size,
            snapshot_max_receiving,
            snapshot_recv_timeout,
            region_max_size,
            request_timeout,
            http_header_timeout,
            http_body_timeout,
            http_idle_timeout,
            http_max_connections,
            auth_token_ttl,
            auth_password_cost
        );
        self.tls.overlay(&mut config.tls);
        config.validate()?;
        Ok(config)
    }
}

#[cfg(test)]
mod tests;
