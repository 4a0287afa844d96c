//! Watching the server while it is loaded: its group-commit counters from `/metrics`, and its CPU time
//! from `/proc/PID/stat`. Both are read before and after the measured phase; only the differences
//! are reported. Failing to observe the server never fails the run.

use std::time::Duration;

use bytes::Bytes;
use hyper::{Method, StatusCode};

use super::client::{Client, Endpoint, LeaderMap};

/// Client commands proposed to raft (one per PUT/DELETE).
pub const PROPOSALS_METRIC: &str = "fekv_raftstore_proposals_total";
/// LMDB write transactions, one fsync each.
pub const COMMITS_METRIC: &str = "fekv_storage_commits_total";

/// The two group-commit counters, summed over the endpoints.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Counters {
    pub proposals: u64,
    pub commits: u64,
}

/// Reads the counters from every endpoint's `/metrics`.
pub async fn scrape(endpoints: &[Endpoint], leaders: &LeaderMap, timeout: Duration) -> Result<Counters, String> {
    let mut total = Counters { proposals: 0, commits: 0 };
    for endpoint in endpoints {
        // A leader map of its own: /metrics is per node and must not be redirected elsewhere.
        let mut client = Client::new(endpoint.clone(), leaders.fresh(), timeout);
        let reply = client
            .send(&Method::GET, "/metrics", &Bytes::new())
            .await
            .result
            .map_err(|err| format!("{endpoint}: {err}"))?;
        if reply.status != StatusCode::OK {
            return Err(format!("{endpoint}/metrics answered {}", reply.status));
        }
        let text = String::from_utf8_lossy(&reply.body);
        let read = |name: &str| sample_sum(&text, name).ok_or_else(|| format!("{endpoint}/metrics has no {name}"));
        total.proposals += read(PROPOSALS_METRIC)? as u64;
        total.commits += read(COMMITS_METRIC)? as u64;
    }
    Ok(total)
}

/// The sum of every sample of `name` (over all its label sets) in Prometheus text format, or `None`
/// if there is none.
pub fn sample_sum(text: &str, name: &str) -> Option<f64> {
    let mut sum = None;
    for line in text.lines().filter(|line| !line.starts_with('#')) {
        let Some(rest) = line.strip_prefix(name) else { continue };
        // `name 12` or `name{labels} 12`, not `name_suffix 12`.
        let value = if let Some(labelled) = rest.strip_prefix('{') {
            labelled.rsplit_once('}').map(|(_, value)| value)
        } else if rest.starts_with(' ') {
            Some(rest)
        } else {
            None
        };
        if let Some(value) = value.and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse::<f64>().ok()) {
            *sum.get_or_insert(0.0) += value;
        }
    }
    sum
}

/// User + system CPU time the processes have used so far.
pub fn cpu_time(pids: &[u32]) -> Result<Duration, String> {
    let ticks_per_second = clock_ticks_per_second();
    let mut ticks = 0;
    for &pid in pids {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .map_err(|err| format!("cannot read /proc/{pid}/stat: {err}"))?;
        ticks += utime_plus_stime(&stat).ok_or_else(|| format!("cannot parse /proc/{pid}/stat"))?;
    }
    Ok(Duration::from_secs_f64(ticks as f64 / ticks_per_second as f64))
}

/// Fields 14 and 15 of `/proc/PID/stat` (utime, stime), in clock ticks. The command name (field 2) is
/// in parentheses and may itself hold spaces and ')', so fields are counted from the last ')'.
fn utime_plus_stime(stat: &str) -> Option<u64> {
    let (_, after_name) = stat.rsplit_once(')')?;
    let fields: Vec<&str> = after_name.split_whitespace().collect();
    // after_name starts at field 3 (state): utime is field 14, index 11 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(utime + stime)
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf only reads a system constant.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    // 100 is what Linux has used on every common architecture, should sysconf ever fail.
    if ticks > 0 {
        ticks as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_samples_over_labels_and_ignores_longer_names() {
        let text = "# HELP fekv_x_total x\n# TYPE fekv_x_total counter\nfekv_x_total 12\nfekv_x_total_extra 100\n\
                    fekv_y_total{code=\"200\"} 3\nfekv_y_total{code=\"500\"} 4\n";
        assert_eq!(sample_sum(text, "fekv_x_total"), Some(12.0));
        assert_eq!(sample_sum(text, "fekv_y_total"), Some(7.0));
        assert_eq!(sample_sum(text, "fekv_z_total"), None);
    }

    #[test]
    fn stat_fields_are_counted_from_the_last_parenthesis() {
        let stat = "1234 (a ) b) S 1 1234 1234 0 -1 4194304 100 0 0 0 250 50 0 0 20 0 8 0 100 0 0";
        assert_eq!(utime_plus_stime(stat), Some(300));
    }

    #[test]
    fn own_process_cpu_time_is_readable() {
        assert!(cpu_time(&[std::process::id()]).is_ok());
        assert!(cpu_time(&[u32::MAX]).is_err());
    }
}
