//! The limit on open files (`RLIMIT_NOFILE`), which bounds client connections.
//!
//! The soft limit is often 1024, a default kept for programs that use `select(2)`; nothing here
//! does. Like Go's runtime, fekv raises its soft limit to the hard limit at start, so the kernel's
//! real bound (the hard limit an administrator set) is what counts.

/// A raise above this is not attempted when the hard limit is unlimited (Linux refuses soft limits
/// above `fs.nr_open`, which defaults to this).
const UNLIMITED_TARGET: u64 = 1 << 20;

/// The soft and hard limits now.
pub fn open_file_limit() -> std::io::Result<(u64, u64)> {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes only the struct it is given, which outlives the call.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok((limit.rlim_cur, limit.rlim_max))
}

/// Raises the soft limit to the hard one; returns the soft limit in force afterwards. A raise the
/// kernel refuses leaves the limit as it was (the caller logs what it got).
pub fn raise_open_file_limit() -> std::io::Result<u64> {
    let (soft, hard) = open_file_limit()?;
    let target = if hard == libc::RLIM_INFINITY { UNLIMITED_TARGET.max(soft) } else { hard };
    if soft >= target {
        return Ok(soft);
    }
    let raised = libc::rlimit { rlim_cur: target, rlim_max: hard };
    // SAFETY: setrlimit reads only the struct it is given.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Ok(soft);
    }
    Ok(target)
}
