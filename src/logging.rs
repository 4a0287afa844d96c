//! Logging through `tracing`, with raft-rs's slog output bridged in.
//!
//! The filter is `RUST_LOG` if set, else the configured `log_level` (default `info`). Nothing on the
//! request path logs at `info`, so load tests are not slowed by the console.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. Safe to call more than once (later calls are no-ops).
pub fn init(default_filter: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let _ = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).with_ansi(ansi).try_init();
}

/// A slog logger for raft-rs whose records become tracing events (target `slog`).
pub fn raft_logger() -> slog::Logger {
    use slog::Drain;
    slog::Logger::root(tracing_slog::TracingSlogDrain.fuse(), slog::o!())
}
