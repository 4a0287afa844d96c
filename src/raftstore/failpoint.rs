//! Test hooks for process tests, compiled into debug builds only: `FEKV_FAILPOINT=<name>[,<name>…]`
//! makes the raftstore fail in a named way, so a test running the real binary can check what the
//! node does then. Release builds ignore the variable. The names:
//!
//! - `raftstore_panic_on_write`: the raftstore thread panics when the first write reaches it.

/// Whether the failpoint `name` is switched on.
#[cfg(debug_assertions)]
pub fn enabled(name: &str) -> bool {
    std::env::var("FEKV_FAILPOINT").is_ok_and(|names| names.split(',').any(|n| n.trim() == name))
}

/// Release builds have no failpoints.
#[cfg(not(debug_assertions))]
pub fn enabled(_name: &str) -> bool {
    false
}
