//! `fekv bench`: a closed-loop HTTP load generator, in the spirit of `ab`, `wrk` and
//! `etcdctl benchmark`, built into the binary so every machine that runs fekv can measure it.
//!
//! Closed loop: each of `--connections` workers keeps exactly one request in flight, over a
//! keep-alive connection to the node that leads the request's key (one per node it talks to), so
//! the load offered is whatever the server answers; latency is measured from sending a request to
//! reading its whole response. A run:
//! 1. validates the flags into a [`Plan`] (bad flags never reach the network);
//! 2. with `--prefill`, writes every key once (not measured);
//! 3. reads the server's group-commit counters and CPU time;
//! 4. runs the measured phase, bounded by `--duration` or `--requests`;
//! 5. reads the counters again and reports (text, or one JSON object with `--json`).
//!
//! Parts: [`workload`] (operations, keys, seeded randomness), [`client`] (one connection per worker,
//! redirects, the leader map), [`report`] (histograms, counts, output), [`server`] (`/metrics` and
//! `/proc`). The loadgen never links against the node: it only speaks HTTP.

pub mod client;
pub mod report;
pub mod server;
pub mod workload;

use std::io::{IsTerminal, Write};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use bytesize::ByteSize;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use crate::config::MAX_KEY_SIZE;
use crate::security::auth::Credentials;
use client::{Client, Endpoint, LeaderMap};
use hyper::header::HeaderValue;
use report::{Outcome, Report, ServerReport, Settings, Stats};
use workload::{Generator, KeyDistribution, KeySpace, Op, Workload};

/// How long a run lasts when neither `--duration` nor `--requests` is given.
pub const DEFAULT_DURATION: Duration = Duration::from_secs(10);

/// A refused connection fails at once; without a pause, a worker facing a dead endpoint would spin
/// and report millions of errors instead of a steady trickle.
const PAUSE_AFTER_CONNECTION_ERROR: Duration = Duration::from_millis(10);

/// How often the progress bar is redrawn.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);

/// Load a fekv cluster over HTTP and report throughput, latency and the server's group commit.
#[derive(Debug, Clone, clap::Parser)]
#[command(
    name = "fekv bench",
    about = "Measure a running fekv with a closed-loop HTTP load (like ab or wrk)",
    long_about = "Measure a running fekv with a closed-loop HTTP load (like ab or wrk).\n\n\
        Each connection keeps one request in flight. Keys are {prefix}{index:08}. The report gives \
        throughput, latency percentiles of answered requests, errors by class, redirects followed, \
        and, when the endpoints' /metrics are reachable, the server's proposals per LMDB commit."
)]
pub struct BenchArgs {
    /// Base URLs of the nodes (http:// or https://); connections are spread over them round-robin
    #[arg(long, value_name = "URL[,URL...]", value_delimiter = ',', default_value = "http://127.0.0.1:3000")]
    pub endpoints: Vec<String>,
    /// TLS to https:// endpoints (etcdctl's names)
    #[command(flatten)]
    pub tls: crate::security::config::ClientTlsArgs,
    /// Workers, each with one request in flight over keep-alive HTTP/1.1 (one connection per node it
    /// sends to: the leaders of the keys' regions)
    #[arg(long, short = 'c', value_name = "N", default_value_t = 64)]
    pub connections: usize,
    /// How long to measure, e.g. 10s or 1m [default: 10s, unless --requests is given]
    #[arg(long, short = 'd', value_name = "DURATION", value_parser = humantime::parse_duration, conflicts_with = "requests")]
    pub duration: Option<Duration>,
    /// Measure this many requests in total instead of a duration
    #[arg(long, short = 'n', value_name = "N")]
    pub requests: Option<u64>,
    /// put, get, delete, or mixed:R where R (0 to 1) is the fraction of GETs (the rest are PUTs)
    #[arg(long, value_name = "WORKLOAD", default_value = "put")]
    pub workload: Workload,
    /// Size of the key space
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    pub keys: u64,
    /// Keys are {prefix}{index:08}
    #[arg(long, value_name = "PREFIX", default_value = "k")]
    pub key_prefix: String,
    /// Size of every PUT's value, e.g. 100 or 1KiB
    #[arg(long, value_name = "BYTES", default_value = "100")]
    pub value_size: ByteSize,
    /// Write every key once before measuring (not counted), so GETs find their keys
    #[arg(long)]
    pub prefill: bool,
    /// How keys are picked: uniform, or zipf with exponent 0.99 (key 0 hottest)
    #[arg(long, value_name = "DIST", value_enum, default_value_t = KeyDistribution::Uniform)]
    pub distribution: KeyDistribution,
    /// Seed of the key and operation choices; the same seed repeats the same per-connection sequences
    #[arg(long, value_name = "N", default_value_t = 1)]
    pub seed: u64,
    /// Print the report as one JSON object instead of text
    #[arg(long)]
    pub json: bool,
    /// A request without a full response within this time counts as a timeout
    #[arg(long, value_name = "DURATION", value_parser = humantime::parse_duration, default_value = "5s")]
    pub timeout: Duration,
    /// Server process ids whose CPU time (user + system, from /proc) to report per request
    #[arg(long, value_name = "PID[,PID...]", value_delimiter = ',')]
    pub server_pid: Vec<u32>,
    /// Fail (exit 1, after the report) if more than this fraction of the measured requests failed
    #[arg(long, value_name = "FRACTION", default_value_t = 0.01)]
    pub max_error_rate: f64,
    /// Credentials sent with every request (HTTP Basic) once auth is enabled: NAME:PASSWORD. Each
    /// Basic request costs the node a password hash; a token from POST /auth/token avoids it (--token)
    #[arg(long, value_name = "NAME:PASSWORD", env = "FEKV_USER", hide_env_values = true)]
    pub user: Option<String>,
    /// A bearer token from POST /auth/token, sent with every request instead of --user
    #[arg(long, value_name = "TOKEN", conflicts_with = "user")]
    pub token: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("invalid --{flag}: {reason}")]
    InvalidArgument { flag: &'static str, reason: String },
    #[error("give either --duration or --requests, not both")]
    ConflictingBounds,
    #[error("prefill failed: {failed} of {keys} PUTs got no 2xx; the first: {first_error}")]
    Prefill { failed: u64, keys: u64, first_error: String },
    #[error(
        "{errors} of {requests} requests failed ({:.1}%), over --max-error-rate {max_rate}",
        100.0 * *errors as f64 / *requests as f64
    )]
    TooManyErrors { errors: u64, requests: u64, max_rate: f64 },
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    #[error("cannot write the report: {0}")]
    Output(#[from] std::io::Error),
}

/// What ends the measured phase.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Bound {
    Duration(Duration),
    Requests(u64),
}

/// Validated flags: everything a run needs, in the form it needs it.
#[derive(Debug, Clone)]
pub struct Plan {
    pub endpoints: Vec<Endpoint>,
    pub connections: usize,
    pub bound: Bound,
    pub workload: Workload,
    pub distribution: KeyDistribution,
    pub keys: KeySpace,
    pub value: Bytes,
    pub prefill: bool,
    pub seed: u64,
    pub timeout: Duration,
    pub server_pids: Vec<u32>,
    pub json: bool,
    pub max_error_rate: f64,
    /// The `Authorization` every request carries.
    pub authorization: Option<HeaderValue>,
}

impl BenchArgs {
    /// Checks what clap cannot, and turns the flags into a [`Plan`].
    pub fn validate(&self) -> Result<Plan, BenchError> {
        let invalid = |flag, reason: String| Err(BenchError::InvalidArgument { flag, reason });
        if self.endpoints.is_empty() {
            return invalid("endpoints", "give at least one URL".into());
        }
        let mut endpoints = Vec::with_capacity(self.endpoints.len());
        for text in &self.endpoints {
            match Endpoint::parse(text.trim()) {
                Ok(endpoint) => endpoints.push(endpoint),
                Err(err) => return invalid("endpoints", err.to_string()),
            }
        }
        if endpoints.iter().any(Endpoint::is_secure) && self.tls.cacert.is_none() {
            return invalid(
                "cacert",
                "https:// endpoints need --cacert (the CA that signed the nodes' certificates)".into(),
            );
        }
        if self.connections == 0 {
            return invalid("connections", "must be at least 1".into());
        }
        let bound = match (self.duration, self.requests) {
            (Some(_), Some(_)) => return Err(BenchError::ConflictingBounds),
            (Some(duration), None) if duration.is_zero() => return invalid("duration", "must be positive".into()),
            (Some(duration), None) => Bound::Duration(duration),
            (None, Some(0)) => return invalid("requests", "must be at least 1".into()),
            (None, Some(requests)) => Bound::Requests(requests),
            (None, None) => Bound::Duration(DEFAULT_DURATION),
        };
        if self.keys == 0 {
            return invalid("keys", "the key space needs at least 1 key".into());
        }
        let longest_key = self.key_prefix.len() + (self.keys - 1).to_string().len().max(8);
        if longest_key > MAX_KEY_SIZE {
            return invalid("key-prefix", format!("keys would be {longest_key} bytes; fekv's limit is {MAX_KEY_SIZE}"));
        }
        // The value is held in memory once and shared; a limit keeps a typo from allocating the machine.
        if self.value_size > ByteSize::gib(1) {
            return invalid("value-size", format!("{} is over the 1GiB this tool sends", self.value_size));
        }
        if self.timeout.is_zero() {
            return invalid("timeout", "must be positive".into());
        }
        if self.server_pid.contains(&0) {
            return invalid("server-pid", "0 is not a process id".into());
        }
        if !(0.0..=1.0).contains(&self.max_error_rate) {
            return invalid("max-error-rate", format!("{} is not a fraction from 0 to 1", self.max_error_rate));
        }
        let credentials = match (&self.user, &self.token) {
            (Some(user), _) => match user.split_once(':') {
                Some((name, password)) if !name.is_empty() => {
                    Some(Credentials::Password { user: name.into(), password: password.into() })
                }
                _ => return invalid("user", "expected NAME:PASSWORD".into()),
            },
            (None, Some(token)) => Some(Credentials::Token(token.clone())),
            (None, None) => None,
        };
        let authorization = credentials
            .map(|credentials| HeaderValue::from_str(&credentials.to_authorization()))
            .transpose()
            .map_err(|_| BenchError::InvalidArgument { flag: "user", reason: "not a valid header value".into() })?;
        Ok(Plan {
            endpoints,
            connections: self.connections,
            bound,
            workload: self.workload,
            distribution: self.distribution,
            keys: KeySpace { prefix: self.key_prefix.clone(), count: self.keys },
            value: workload::value(self.value_size.as_u64()),
            prefill: self.prefill,
            seed: self.seed,
            timeout: self.timeout,
            server_pids: self.server_pid.clone(),
            json: self.json,
            max_error_rate: self.max_error_rate,
            authorization,
        })
    }
}

/// The connector for `https://` endpoints, from `--cacert`, `--cert`, `--key`.
fn tls_connector(args: &BenchArgs) -> Result<Option<crate::security::tls::TlsConnector>, BenchError> {
    use crate::security::tls::{AppProtocol, ClientTls, TlsConnector};
    let invalid =
        |err: crate::security::tls::TlsError| BenchError::InvalidArgument { flag: "cacert", reason: err.to_string() };
    let Some(settings) = args.tls.settings().map_err(invalid)? else { return Ok(None) };
    let tls = ClientTls::load(settings, AppProtocol::Http1).map_err(invalid)?;
    Ok(Some(TlsConnector::new(Arc::new(tls))))
}

/// `fekv bench`: runs on a runtime of its own and prints the report on stdout.
pub fn run_cli(args: BenchArgs) -> Result<(), BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().map_err(BenchError::Runtime)?;
    let mut stdout = std::io::stdout().lock();
    runtime.block_on(run(&args, &mut stdout))?;
    Ok(())
}

/// Runs the benchmark `args` describe and writes its report to `out`; must be called within a
/// multi-threaded tokio runtime (the workers are spawned on it). A run whose error rate is over
/// `--max-error-rate` writes its report and then fails with [`BenchError::TooManyErrors`].
pub async fn run(args: &BenchArgs, out: &mut dyn Write) -> Result<Report, BenchError> {
    let plan = Arc::new(args.validate()?);
    // Checked now so a wrong pid is a usage error, not a line missing from the report later.
    if !plan.server_pids.is_empty() {
        server::cpu_time(&plan.server_pids)
            .map_err(|reason| BenchError::InvalidArgument { flag: "server-pid", reason })?;
    }
    let leaders = LeaderMap::with(tls_connector(args)?, plan.authorization.clone());
    leaders.add_nodes(&plan.endpoints);
    leaders.refresh(plan.timeout).await;
    if plan.prefill {
        prefill(&plan, &leaders).await?;
    }
    let counters_before = server::scrape(&plan.endpoints, &leaders, plan.timeout).await;
    // Read after the scrape so the scrape's own CPU is not billed to the measured requests.
    let cpu_before = (!plan.server_pids.is_empty()).then(|| server::cpu_time(&plan.server_pids));

    let (stats, elapsed) = measure(&plan, &leaders).await;

    let cpu_after = cpu_before.as_ref().map(|_| server::cpu_time(&plan.server_pids));
    let counters_after = server::scrape(&plan.endpoints, &leaders, plan.timeout).await;
    let requests = stats.total().requests;
    let mut server = ServerReport { pids: plan.server_pids.clone(), ..ServerReport::default() };
    match (counters_before, counters_after) {
        (Ok(before), Ok(after)) => {
            let proposals = after.proposals.saturating_sub(before.proposals);
            let commits = after.commits.saturating_sub(before.commits);
            server.proposals = Some(proposals);
            server.commits = Some(commits);
            server.proposals_per_commit = (commits > 0).then(|| proposals as f64 / commits as f64);
        }
        (Err(err), _) | (_, Err(err)) => server.metrics_error = Some(err),
    }
    match (cpu_before, cpu_after) {
        (Some(Ok(before)), Some(Ok(after))) => {
            let cpu_us = after.saturating_sub(before).as_secs_f64() * 1e6;
            server.cpu_us = Some(cpu_us);
            server.cpu_us_per_request = (requests > 0).then(|| cpu_us / requests as f64);
        }
        (Some(Err(err)), _) | (_, Some(Err(err))) => server.cpu_error = Some(err),
        _ => {}
    }

    let settings = Settings {
        workload: plan.workload.to_string(),
        distribution: plan.distribution,
        endpoints: plan.endpoints.iter().map(Endpoint::url).collect(),
        connections: plan.connections,
        keys: plan.keys.count,
        value_size: plan.value.len() as u64,
        seed: plan.seed,
        prefill: plan.prefill,
    };
    let report = Report::new(settings, &stats, elapsed, server);
    if plan.json {
        report.write_json(out)?;
    } else {
        report.write_text(out)?;
    }
    out.flush()?;
    let (errors, requests) = (report.errors.total, report.requests);
    if requests > 0 && errors as f64 > plan.max_error_rate * requests as f64 {
        return Err(BenchError::TooManyErrors { errors, requests, max_rate: plan.max_error_rate });
    }
    Ok(report)
}

/// Hands out the requests of a phase to the workers.
enum Budget {
    /// Send until this instant (requests in flight then still complete and count).
    Until(Instant),
    /// Send exactly `total` requests, numbered from 0.
    Count { next: AtomicU64, total: u64 },
}

impl Budget {
    fn new(bound: Bound) -> Budget {
        match bound {
            Bound::Duration(duration) => Budget::Until(Instant::now() + duration),
            Bound::Requests(total) => Budget::Count { next: AtomicU64::new(0), total },
        }
    }

    /// The next request's number, or `None` when the phase is over.
    fn take(&self) -> Option<u64> {
        match self {
            Budget::Until(deadline) => (Instant::now() < *deadline).then_some(0),
            Budget::Count { next, total } => {
                let number = next.fetch_add(1, Ordering::Relaxed);
                (number < *total).then_some(number)
            }
        }
    }
}

/// The measured phase: every worker until the budget runs out.
async fn measure(plan: &Arc<Plan>, leaders: &Arc<LeaderMap>) -> (Stats, Duration) {
    let budget = Arc::new(Budget::new(plan.bound));
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("measuring", plan.bound, done.clone());
    let started = Instant::now();
    let workers: Vec<_> = (0..plan.connections)
        .map(|worker| {
            let (plan, leaders, budget, done) = (plan.clone(), leaders.clone(), budget.clone(), done.clone());
            tokio::spawn(async move { measure_worker(worker, &plan, leaders, &budget, &done).await })
        })
        .collect();
    let mut stats = Stats::default();
    for worker in workers {
        stats.merge(&worker.await.expect("a load worker panicked"));
    }
    let elapsed = started.elapsed();
    progress.finish();
    (stats, elapsed)
}

async fn measure_worker(
    worker: usize,
    plan: &Plan,
    leaders: Arc<LeaderMap>,
    budget: &Budget,
    done: &AtomicU64,
) -> Stats {
    let home = plan.endpoints[worker % plan.endpoints.len()].clone();
    let mut client = Client::new(home, leaders, plan.timeout);
    let mut generator = Generator::new(plan.workload, plan.distribution, plan.keys.count, plan.seed, worker as u64);
    let mut stats = Stats::default();
    let no_body = Bytes::new();
    while budget.take().is_some() {
        let planned = generator.next_request();
        let (key, path) = (plan.keys.key(planned.key_index), plan.keys.path(planned.key_index));
        let body = if planned.op == Op::Put { &plan.value } else { &no_body };
        let started = Instant::now();
        let exchange = client.send_for_key(&planned.op.method(), Some(key.as_bytes()), &path, body).await;
        let latency = started.elapsed();
        let outcome = Outcome::of(planned.op, &exchange);
        stats.record(planned.op, outcome, latency, exchange.redirects);
        if !outcome.answered() && stats.first_error.is_none() {
            stats.first_error = Some(report::describe_failure(planned.op, &path, &exchange));
        }
        done.fetch_add(1, Ordering::Relaxed);
        if outcome == Outcome::Connection {
            tokio::time::sleep(PAUSE_AFTER_CONNECTION_ERROR).await;
        }
    }
    stats.connects = client.connects;
    stats
}

/// Writes every key once, over the same number of connections as the measured phase.
async fn prefill(plan: &Arc<Plan>, leaders: &Arc<LeaderMap>) -> Result<(), BenchError> {
    let keys = plan.keys.count;
    let budget = Arc::new(Budget::new(Bound::Requests(keys)));
    let done = Arc::new(AtomicU64::new(0));
    let progress = Progress::start("prefilling", Bound::Requests(keys), done.clone());
    let workers: Vec<_> = (0..plan.connections.min(keys as usize))
        .map(|worker| {
            let (plan, leaders, budget, done) = (plan.clone(), leaders.clone(), budget.clone(), done.clone());
            tokio::spawn(async move {
                let home = plan.endpoints[worker % plan.endpoints.len()].clone();
                let mut client = Client::new(home, leaders, plan.timeout);
                let mut failed = 0u64;
                let mut first_error = None;
                while let Some(key_index) = budget.take() {
                    let key = plan.keys.key(key_index);
                    let path = plan.keys.path(key_index);
                    let exchange =
                        client.send_for_key(&Op::Put.method(), Some(key.as_bytes()), &path, &plan.value).await;
                    done.fetch_add(1, Ordering::Relaxed);
                    let error = match exchange.result {
                        Ok(reply) if reply.status.is_success() => continue,
                        Ok(reply) => format!("{} answered {}", plan.keys.key(key_index), reply.status),
                        Err(err) => format!("{}: {err}", plan.keys.key(key_index)),
                    };
                    failed += 1;
                    first_error.get_or_insert(error);
                }
                (failed, first_error)
            })
        })
        .collect();
    let (mut failed, mut first_error) = (0, None);
    for worker in workers {
        let (worker_failed, worker_error) = worker.await.expect("a prefill worker panicked");
        failed += worker_failed;
        first_error = first_error.or(worker_error);
    }
    progress.finish();
    match first_error {
        None => Ok(()),
        Some(first_error) => Err(BenchError::Prefill { failed, keys, first_error }),
    }
}

/// A progress bar with the live request rate, on stderr when it is a terminal; nothing otherwise.
struct Progress {
    bar: ProgressBar,
    ticker: Option<tokio::task::JoinHandle<()>>,
}

impl Progress {
    fn start(label: &'static str, bound: Bound, done: Arc<AtomicU64>) -> Progress {
        if !std::io::stderr().is_terminal() {
            return Progress { bar: ProgressBar::with_draw_target(None, ProgressDrawTarget::hidden()), ticker: None };
        }
        // Requests are counted by the workers in an atomic; the bar is only redrawn by this ticker,
        // so drawing costs the workers nothing.
        let (length, by_time) = match bound {
            Bound::Requests(total) => (total, false),
            Bound::Duration(duration) => (duration.as_millis() as u64, true),
        };
        let bar = ProgressBar::new(length);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>10} [{bar:30}] {elapsed_precise} {msg}")
                .expect("the template is valid")
                .progress_chars("=> "),
        );
        bar.set_prefix(label);
        let ticker_bar = bar.clone();
        let ticker = tokio::spawn(async move {
            let started = Instant::now();
            let (mut last_count, mut last_at) = (0, started);
            let mut interval = tokio::time::interval(PROGRESS_INTERVAL);
            loop {
                interval.tick().await;
                let count = done.load(Ordering::Relaxed);
                let now = Instant::now();
                let rate = (count - last_count) as f64 / now.duration_since(last_at).as_secs_f64().max(1e-3);
                (last_count, last_at) = (count, now);
                ticker_bar.set_position(if by_time { now.duration_since(started).as_millis() as u64 } else { count });
                ticker_bar.set_message(format!("{count} requests, {rate:.0} req/s"));
            }
        });
        Progress { bar, ticker: Some(ticker) }
    }

    fn finish(self) {
        if let Some(ticker) = self.ticker {
            ticker.abort();
        }
        self.bar.finish_and_clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn parse(flags: &[&str]) -> BenchArgs {
        BenchArgs::try_parse_from(std::iter::once("bench").chain(flags.iter().copied())).unwrap()
    }

    #[test]
    fn defaults_are_a_ten_second_put_run_on_64_connections() {
        let plan = parse(&[]).validate().unwrap();
        assert_eq!(plan.bound, Bound::Duration(Duration::from_secs(10)));
        assert_eq!(plan.connections, 64);
        assert_eq!(plan.workload, Workload::Put);
        assert_eq!(plan.endpoints, vec![Endpoint::parse("http://127.0.0.1:3000").unwrap()]);
        assert_eq!((plan.keys.count, plan.value.len()), (10_000, 100));
    }

    #[test]
    fn sizes_and_lists_parse() {
        let plan = parse(&["--value-size", "1KiB", "--endpoints", "http://a:1,http://b:2", "--server-pid", "3,4"])
            .validate()
            .unwrap();
        assert_eq!(plan.value.len(), 1024);
        assert_eq!(plan.endpoints.len(), 2);
        assert_eq!(plan.server_pids, vec![3, 4]);
    }
}
