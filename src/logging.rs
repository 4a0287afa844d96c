//! Logging through `tracing`, with raft-rs's slog output bridged in.
//!
//! The filter is `RUST_LOG` if set, else the configured `log_level` (default `info`); either is
//! checked ([`check_filter`]) and refused at start if it is no filter. Nothing on the request path
//! logs at `info`, so load tests are not slowed by the console.
//!
//! raft-rs's own records arrive under the target `raft`, one level down: its `info` (a peer's role
//! changes, elections, configuration switches, for every region at every start) is `debug` here,
//! since fekv logs what an operator needs of them itself (`leader changed`, `peer destroyed`); its
//! `debug` is `trace`. Its warnings and errors keep their level. `RUST_LOG=raft=debug` shows them.

use tracing::Level;
use tracing_subscriber::EnvFilter;

/// The levels a filter directive may name.
const LEVELS: [&str; 6] = ["trace", "debug", "info", "warn", "error", "off"];

/// Installs the global subscriber: `RUST_LOG` if set, else `default_filter`. Safe to call more than
/// once (later calls are no-ops). A `RUST_LOG` that [`check_filter`] refuses is an error, not a
/// silent filter: `RUST_LOG=nonsense` logged nothing at all, not even why a node exited.
pub fn init(default_filter: &str) -> Result<(), String> {
    let from_env = std::env::var("RUST_LOG").ok().filter(|f| !f.trim().is_empty());
    let filter = match &from_env {
        Some(filter) => {
            check_filter(filter).map_err(|reason| format!("invalid RUST_LOG: {reason}"))?;
            EnvFilter::new(filter)
        }
        None => EnvFilter::new(default_filter),
    };
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
    Ok(())
}

/// Checks a log filter: comma-separated directives, each a level (`info`) or `target=level`
/// (`fekv::api=debug`). Stricter than `EnvFilter`, which reads a bare word as a target to log at
/// every level, so `--log-level nonsense` would silently mean "log nothing but target nonsense".
pub fn check_filter(filter: &str) -> Result<(), String> {
    let is_level = |word: &str| LEVELS.contains(&word.to_ascii_lowercase().as_str());
    for directive in filter.split(',') {
        let level = match directive.rsplit_once('=') {
            Some((target, level)) if !target.trim().is_empty() => level,
            _ => directive,
        };
        if !is_level(level.trim()) {
            let whole = if directive == filter { String::new() } else { format!(" in {filter:?}") };
            return Err(format!("{directive:?}{whole} is not a level ({}) or target=level", LEVELS.join(", ")));
        }
    }
    EnvFilter::try_new(filter).map(drop).map_err(|e| format!("{filter:?}: {e}"))
}

/// A slog logger for raft-rs whose records become tracing events of target `raft`.
pub fn raft_logger() -> slog::Logger {
    use slog::Drain;
    slog::Logger::root(RaftDrain.fuse(), slog::o!())
}

/// Forwards raft-rs's slog records to tracing: the message, and its key-values (`region_id`,
/// `peer_id`, `raft_id`, ...) as one `raft` field. Not its source file and line: they name a path in
/// the cargo registry, which tells an operator nothing.
struct RaftDrain;

impl slog::Drain for RaftDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, values: &slog::OwnedKVList) -> Result<(), slog::Never> {
        // tracing's macros need the level as a constant, hence one arm per level.
        macro_rules! forward {
            ($level:expr) => {
                if tracing::enabled!(target: "raft", $level) {
                    let fields = key_values(record, values);
                    tracing::event!(target: "raft", $level, raft = %fields, "{}", record.msg());
                }
            };
        }
        match record.level() {
            slog::Level::Critical | slog::Level::Error => forward!(Level::ERROR),
            slog::Level::Warning => forward!(Level::WARN),
            slog::Level::Info => forward!(Level::DEBUG),
            slog::Level::Debug | slog::Level::Trace => forward!(Level::TRACE),
        }
        Ok(())
    }
}

/// A record's key-values and its logger's, as `key=value key=value`.
fn key_values(record: &slog::Record<'_>, values: &slog::OwnedKVList) -> String {
    use slog::KV;
    struct Text(String);
    impl slog::Serializer for Text {
        fn emit_arguments(&mut self, key: slog::Key, value: &std::fmt::Arguments<'_>) -> slog::Result {
            use std::fmt::Write;
            let separator = if self.0.is_empty() { "" } else { " " };
            let _ = write!(self.0, "{separator}{key}={value}");
            Ok(())
        }
    }
    let mut text = Text(String::new());
    let _ = record.kv().serialize(record, &mut text);
    let _ = values.serialize(record, &mut text);
    text.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_name_levels() {
        for good in ["info", "WARN", "off", "info,fekv=debug", "raft=trace", "fekv::api=debug,warn"] {
            check_filter(good).unwrap_or_else(|e| panic!("{good}: {e}"));
        }
        for bad in ["nonsense", "info,nonsense", "fekv=loud", "", "info,", "=info"] {
            assert!(check_filter(bad).is_err(), "{bad}");
        }
    }
}
