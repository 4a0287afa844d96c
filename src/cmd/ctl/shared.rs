//! What every `fekv ctl` command shares: its error, the output format, the deadline of one call to a
//! node, printing, the clock, and keys as the command line spells them.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long one call to placement or to a node may take, connecting included.
pub(super) const CALL_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Output {
    /// Aligned columns for people
    Table,
    /// JSON with stable field names, for scripts
    Json,
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
    #[error("region {region_id} split, but placement did not learn of its right half within {waited:?} (see `fekv ctl region list`)")]
    HalfUnknown { region_id: u64, waited: Duration },
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
    #[error("{failed} of {total} placement replicas did not answer")]
    PlacementMembers { failed: usize, total: usize },
    #[error("{failed} of {total} nodes {what}")]
    Nodes { failed: usize, total: usize, what: &'static str },
    #[error("cannot write the output: {0}")]
    Output(#[from] std::io::Error),
    #[error("{0}")]
    Credentials(String),
    #[error(transparent)]
    Tls(#[from] crate::security::tls::TlsError),
}

pub(super) fn print(text: &str) -> Result<(), CtlError> {
    use std::io::Write;
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()).and_then(|()| stdout.flush()) {
        // `fekv ctl ... | head` closing the pipe early is not an error of ours.
        Err(err) if err.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}

pub(super) fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Keys on the command line take the REST API's form: percent-encoded, strictly.
pub(super) fn parse_key(raw: &str) -> Result<Vec<u8>, CtlError> {
    crate::api::request::decode_key(raw, crate::config::MAX_KEY_SIZE)
        .map_err(|err| CtlError::BadKey { key: raw.to_string(), reason: err.to_string() })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_on_the_command_line_are_percent_decoded_strictly() {
        assert_eq!(parse_key("a%2Fb%00").unwrap(), b"a/b\0");
        assert!(matches!(parse_key("bad%zz"), Err(CtlError::BadKey { .. })));
        assert!(matches!(parse_key(""), Err(CtlError::BadKey { .. })));
    }
}
