//! The numbers of a run: what each worker counts while it runs ([`Stats`]: outcomes by class and an
//! HDR histogram of latencies per operation), and the final [`Report`], printed as text or as one
//! JSON object. Nothing here touches the network or the clock.

use std::collections::BTreeMap;
use std::io::{self, Write};
use std::time::Duration;

use hdrhistogram::Histogram;
use hyper::StatusCode;
use serde::Serialize;

use super::client::{Exchange, RequestError};
use super::workload::{KeyDistribution, Op};

/// Latencies are recorded in µs from 1 µs to 10 min, at 3 significant digits.
const HISTOGRAM_MAX_US: u64 = 600_000_000;

/// How one request ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// 2xx.
    Success,
    /// 404 on a GET: the key is not there, which is an answer, not an error.
    Miss,
    /// 4xx other than a GET's 404.
    ClientError,
    /// 5xx.
    ServerError,
    Timeout,
    /// Could not connect, or the connection broke mid-request.
    Connection,
    /// Anything else: a 1xx/3xx we do not follow, too many or unusable redirects.
    Other,
}

impl Outcome {
    pub fn of(op: Op, exchange: &Exchange) -> Outcome {
        match &exchange.result {
            Ok(reply) if reply.status.is_success() => Outcome::Success,
            Ok(reply) if reply.status == StatusCode::NOT_FOUND && op == Op::Get => Outcome::Miss,
            Ok(reply) if reply.status.is_client_error() => Outcome::ClientError,
            Ok(reply) if reply.status.is_server_error() => Outcome::ServerError,
            Ok(_) => Outcome::Other,
            Err(RequestError::Timeout(_)) => Outcome::Timeout,
            Err(RequestError::Connection { .. }) => Outcome::Connection,
            Err(RequestError::TooManyRedirects | RequestError::BadRedirect(_) | RequestError::Build { .. }) => {
                Outcome::Other
            }
        }
    }

    /// Whether the request was answered as intended (its latency counts).
    pub fn answered(self) -> bool {
        matches!(self, Outcome::Success | Outcome::Miss)
    }
}

/// Longest part of a response body quoted in a failure.
const QUOTED_BODY: usize = 200;

/// One line on why a request failed: the request, and the status and body, or the error.
pub fn describe_failure(op: Op, path: &str, exchange: &Exchange) -> String {
    let request = format!("{} {path}", op.method());
    match &exchange.result {
        Ok(reply) => {
            let body = String::from_utf8_lossy(&reply.body);
            let body = body.trim();
            match body.char_indices().nth(QUOTED_BODY) {
                _ if body.is_empty() => format!("{request} answered {}", reply.status),
                Some((cut, _)) => format!("{request} answered {}: {}...", reply.status, &body[..cut]),
                None => format!("{request} answered {}: {body}", reply.status),
            }
        }
        Err(err) => format!("{request}: {err}"),
    }
}

/// One operation's counts and latencies.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// µs, successful requests (misses included) only.
    pub latency: Histogram<u64>,
    pub requests: u64,
    pub successes: u64,
    pub misses: u64,
    pub client_errors: u64,
    pub server_errors: u64,
    pub timeouts: u64,
    pub connection_errors: u64,
    pub other_errors: u64,
}

impl Default for OpStats {
    fn default() -> Self {
        OpStats {
            latency: Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).expect("1 µs .. 10 min at 3 digits is valid"),
            requests: 0,
            successes: 0,
            misses: 0,
            client_errors: 0,
            server_errors: 0,
            timeouts: 0,
            connection_errors: 0,
            other_errors: 0,
        }
    }
}

impl OpStats {
    pub fn errors(&self) -> u64 {
        self.client_errors + self.server_errors + self.timeouts + self.connection_errors + self.other_errors
    }

    fn merge(&mut self, other: &OpStats) {
        self.latency.add(&other.latency).expect("histograms with the same bounds merge");
        self.requests += other.requests;
        self.successes += other.successes;
        self.misses += other.misses;
        self.client_errors += other.client_errors;
        self.server_errors += other.server_errors;
        self.timeouts += other.timeouts;
        self.connection_errors += other.connection_errors;
        self.other_errors += other.other_errors;
    }
}

/// What one worker (or, merged, the whole run) saw.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    pub ops: BTreeMap<&'static str, OpStats>,
    pub redirects: u64,
    pub connects: u64,
    /// Why the first failed request failed ([`describe_failure`]).
    pub first_error: Option<String>,
}

impl Stats {
    pub fn record(&mut self, op: Op, outcome: Outcome, latency: Duration, redirects: u32) {
        let stats = self.ops.entry(op.name()).or_default();
        stats.requests += 1;
        match outcome {
            Outcome::Success => stats.successes += 1,
            Outcome::Miss => stats.misses += 1,
            Outcome::ClientError => stats.client_errors += 1,
            Outcome::ServerError => stats.server_errors += 1,
            Outcome::Timeout => stats.timeouts += 1,
            Outcome::Connection => stats.connection_errors += 1,
            Outcome::Other => stats.other_errors += 1,
        }
        if outcome.answered() {
            stats.latency.saturating_record(latency.as_micros().min(u128::from(HISTOGRAM_MAX_US)) as u64);
        }
        self.redirects += u64::from(redirects);
    }

    pub fn merge(&mut self, other: &Stats) {
        for (name, stats) in &other.ops {
            self.ops.entry(name).or_default().merge(stats);
        }
        self.redirects += other.redirects;
        self.connects += other.connects;
        if self.first_error.is_none() {
            self.first_error.clone_from(&other.first_error);
        }
    }

    /// Every operation together.
    pub fn total(&self) -> OpStats {
        let mut total = OpStats::default();
        for stats in self.ops.values() {
            total.merge(stats);
        }
        total
    }
}

/// What was run: the settings that matter for comparing two reports.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    pub workload: String,
    pub distribution: KeyDistribution,
    pub endpoints: Vec<String>,
    pub connections: usize,
    pub keys: u64,
    pub value_size: u64,
    pub seed: u64,
    pub prefill: bool,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Errors {
    pub total: u64,
    pub client_4xx: u64,
    pub server_5xx: u64,
    pub timeouts: u64,
    pub connection: u64,
    pub other: u64,
}

/// Milliseconds.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Latency {
    pub mean: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub p99_9: f64,
    pub max: f64,
}

impl Latency {
    fn of(histogram: &Histogram<u64>) -> Latency {
        if histogram.is_empty() {
            return Latency::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Latency {
            mean: histogram.mean() / 1000.0,
            p50: ms(histogram.value_at_quantile(0.5)),
            p90: ms(histogram.value_at_quantile(0.9)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p99_9: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
        }
    }
}

/// One operation type's share of a run.
#[derive(Debug, Clone, Serialize)]
pub struct OpReport {
    pub requests: u64,
    pub successes: u64,
    pub misses: u64,
    pub errors: u64,
    pub throughput_rps: f64,
    pub latency_ms: Latency,
}

/// What the server did during the measured phase, when it could be observed.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ServerReport {
    /// Increase of `fekv_raftstore_proposals_total`, summed over the endpoints.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposals: Option<u64>,
    /// Increase of `fekv_storage_commits_total` (LMDB write transactions, one fsync each).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub commits: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub proposals_per_commit: Option<f64>,
    /// Why the metrics could not be read, if they could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub metrics_error: Option<String>,
    /// The `--server-pid`s whose CPU time was measured.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pids: Vec<u32>,
    /// User + system CPU time of those processes, µs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_us_per_request: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_error: Option<String>,
}

/// The result of a run. `requests` counts every request of the measured phase, answered or not;
/// throughput counts only the answered ones (successes and misses), so errors never inflate it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub settings: Settings,
    pub requests: u64,
    pub successes: u64,
    pub misses: u64,
    pub errors: Errors,
    pub redirects: u64,
    /// TCP connections opened during the measured phase.
    pub connects: u64,
    pub elapsed_s: f64,
    pub throughput_rps: f64,
    pub latency_ms: Latency,
    /// Per operation type ("put", "get", "delete"), for the types the run made.
    pub ops: BTreeMap<&'static str, OpReport>,
    pub server: ServerReport,
    /// Why the first failed request failed, if one did.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_error: Option<String>,
}

impl Report {
    pub fn new(settings: Settings, stats: &Stats, elapsed: Duration, server: ServerReport) -> Report {
        let seconds = elapsed.as_secs_f64();
        let rate = |count: u64| if seconds > 0.0 { count as f64 / seconds } else { 0.0 };
        let total = stats.total();
        let ops = stats
            .ops
            .iter()
            .map(|(name, op)| {
                let report = OpReport {
                    requests: op.requests,
                    successes: op.successes,
                    misses: op.misses,
                    errors: op.errors(),
                    throughput_rps: rate(op.successes + op.misses),
                    latency_ms: Latency::of(&op.latency),
                };
                (*name, report)
            })
            .collect();
        Report {
            settings,
            requests: total.requests,
            successes: total.successes,
            misses: total.misses,
            errors: Errors {
                total: total.errors(),
                client_4xx: total.client_errors,
                server_5xx: total.server_errors,
                timeouts: total.timeouts,
                connection: total.connection_errors,
                other: total.other_errors,
            },
            redirects: stats.redirects,
            connects: stats.connects,
            elapsed_s: seconds,
            throughput_rps: rate(total.successes + total.misses),
            latency_ms: Latency::of(&total.latency),
            ops,
            server,
            first_error: stats.first_error.clone(),
        }
    }

    pub fn write_json(&self, out: &mut dyn Write) -> io::Result<()> {
        serde_json::to_writer(&mut *out, self)?;
        writeln!(out)
    }

    pub fn write_text(&self, out: &mut dyn Write) -> io::Result<()> {
        let s = &self.settings;
        writeln!(
            out,
            "fekv bench: {} over {} connection(s) to {}; {} keys ({}), {}-byte values, seed {}{}",
            s.workload,
            s.connections,
            s.endpoints.join(","),
            s.keys,
            s.distribution.name(),
            s.value_size,
            s.seed,
            if s.prefill { ", prefilled" } else { "" }
        )?;
        writeln!(out, "Requests:      {} in {:.2} s", self.requests, self.elapsed_s)?;
        writeln!(out, "Throughput:    {:.1} req/s", self.throughput_rps)?;
        // Misses only mean something for a run that reads.
        match self.ops.contains_key(Op::Get.name()) {
            true => writeln!(out, "Successes:     {} (+ {} misses: 404 on GET)", self.successes, self.misses)?,
            false => writeln!(out, "Successes:     {}", self.successes)?,
        }
        writeln!(out, "Errors:        {}", errors_text(&self.errors))?;
        if let Some(first) = &self.first_error {
            writeln!(out, "First error:   {first}")?;
        }
        writeln!(out, "Redirects:     {}   Connections opened: {}", self.redirects, self.connects)?;
        if self.successes + self.misses == 0 {
            writeln!(out, "Latency (ms):  - (no request succeeded)")?;
        } else {
            writeln!(out, "Latency (ms):  {}", latency_line(&self.latency_ms))?;
        }
        if self.ops.len() > 1 {
            for (name, op) in &self.ops {
                writeln!(
                    out,
                    "  {name:<6}       {} requests, {:.1} req/s, {} errors; {}",
                    op.requests,
                    op.throughput_rps,
                    op.errors,
                    latency_line(&op.latency_ms)
                )?;
            }
        }
        let server = &self.server;
        match (server.proposals, server.commits, &server.metrics_error) {
            (Some(proposals), Some(commits), _) => writeln!(
                out,
                "Server:        {proposals} proposals in {commits} LMDB commits = {} proposals/commit",
                server.proposals_per_commit.map_or("-".to_string(), |r| format!("{r:.1}"))
            )?,
            (_, _, Some(err)) => writeln!(out, "Server:        metrics not available ({err})")?,
            _ => {}
        }
        if !server.pids.is_empty() {
            let pids = server.pids.iter().map(u32::to_string).collect::<Vec<_>>().join(",");
            match (server.cpu_us, server.cpu_us_per_request, &server.cpu_error) {
                (Some(cpu_us), per_request, _) => writeln!(
                    out,
                    "Server CPU:    {:.1} ms for pid {pids} = {} µs/request",
                    cpu_us / 1000.0,
                    per_request.map_or("-".to_string(), |r| format!("{r:.1}"))
                )?,
                (None, _, Some(err)) => writeln!(out, "Server CPU:    not available for pid {pids} ({err})")?,
                _ => {}
            }
        }
        Ok(())
    }
}

/// The error count, and the classes that occurred: `0`, or `7 (4xx 5, timeouts 2)`.
fn errors_text(e: &Errors) -> String {
    let classes = [
        ("4xx", e.client_4xx),
        ("5xx", e.server_5xx),
        ("timeouts", e.timeouts),
        ("connection", e.connection),
        ("other", e.other),
    ];
    let seen: Vec<String> = classes.iter().filter(|(_, n)| *n > 0).map(|(name, n)| format!("{name} {n}")).collect();
    match seen.is_empty() {
        true => e.total.to_string(),
        false => format!("{} ({})", e.total, seen.join(", ")),
    }
}

fn latency_line(latency: &Latency) -> String {
    format!(
        "p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  (mean {:.3})",
        latency.p50, latency.p90, latency.p99, latency.p99_9, latency.max, latency.mean
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::client::Reply;

    fn reply(status: u16) -> Exchange {
        let reply = Reply {
            status: StatusCode::from_u16(status).unwrap(),
            headers: Default::default(),
            body: Default::default(),
        };
        Exchange { result: Ok(reply), redirects: 0 }
    }

    #[test]
    fn a_404_is_a_miss_for_get_and_an_error_otherwise() {
        assert_eq!(Outcome::of(Op::Get, &reply(404)), Outcome::Miss);
        assert_eq!(Outcome::of(Op::Delete, &reply(404)), Outcome::ClientError);
        assert_eq!(Outcome::of(Op::Put, &reply(413)), Outcome::ClientError);
        assert_eq!(Outcome::of(Op::Put, &reply(503)), Outcome::ServerError);
        assert_eq!(Outcome::of(Op::Put, &reply(200)), Outcome::Success);
        assert_eq!(Outcome::of(Op::Put, &reply(307)), Outcome::Other);
        let timeout = Exchange { result: Err(RequestError::Timeout(Duration::from_secs(1))), redirects: 0 };
        assert_eq!(Outcome::of(Op::Get, &timeout), Outcome::Timeout);
    }

    #[test]
    fn only_answered_requests_have_latencies_and_throughput() {
        let mut stats = Stats::default();
        stats.record(Op::Put, Outcome::Success, Duration::from_millis(2), 1);
        stats.record(Op::Put, Outcome::ServerError, Duration::from_secs(9), 0);
        stats.record(Op::Get, Outcome::Miss, Duration::from_millis(1), 0);
        let mut merged = Stats::default();
        merged.merge(&stats);
        let settings = Settings {
            workload: "mixed:0.5".into(),
            distribution: KeyDistribution::Uniform,
            endpoints: vec![],
            connections: 1,
            keys: 1,
            value_size: 1,
            seed: 1,
            prefill: false,
        };
        let report = Report::new(settings, &merged, Duration::from_secs(1), ServerReport::default());
        assert_eq!((report.requests, report.successes, report.misses, report.errors.server_5xx), (3, 1, 1, 1));
        assert_eq!(report.redirects, 1);
        assert!((report.throughput_rps - 2.0).abs() < 1e-9);
        assert!(report.latency_ms.max < 2.1, "{:?}", report.latency_ms);
        assert_eq!(report.ops["put"].requests, 2);
        let mut text = Vec::new();
        report.write_text(&mut text).unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("Errors:        1 (5xx 1)\n"), "{text}");
        assert!(text.contains("(+ 1 misses: 404 on GET)"), "{text}");
        assert!(text.contains("  get "), "{text}");
    }
}
