//! Panics reach the log. A panic is a broken invariant; it must never be lost on a console nobody
//! reads, nor leave a process that looks alive. [`install_hook`] sends every panic through `tracing`
//! (message, where, which thread) and remembers it on the thread that panicked, so whoever catches
//! the unwind there ([`PanicReport::caught`]) can say why the thread ended.

use std::any::Any;
use std::cell::RefCell;
use std::fmt;

/// What a panic said and where it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanicReport {
    pub message: String,
    /// `file:line:column`, when the hook saw the panic (it is only known there).
    pub location: Option<String>,
}

thread_local! {
    /// The last panic on this thread, as the hook saw it.
    static LAST_PANIC: RefCell<Option<PanicReport>> = const { RefCell::new(None) };
}

/// Logs every panic at `error` through tracing, with a backtrace when `RUST_BACKTRACE` asks for one,
/// instead of printing it to stderr (while no tracing subscriber is installed, the previous hook
/// prints it as before). Call once, after the subscriber is installed.
pub fn install_hook() {
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let report = PanicReport {
            message: message_of(info.payload()),
            location: info.location().map(|l| format!("{}:{}:{}", l.file(), l.line(), l.column())),
        };
        if tracing::dispatcher::has_been_set() {
            let thread = std::thread::current();
            let thread = thread.name().unwrap_or("unnamed");
            let location = report.location.as_deref().unwrap_or("unknown");
            let backtrace = std::backtrace::Backtrace::capture();
            if backtrace.status() == std::backtrace::BacktraceStatus::Captured {
                tracing::error!(thread, location, %backtrace, "panic: {}", report.message);
            } else {
                tracing::error!(thread, location, "panic: {}", report.message);
            }
        } else {
            previous(info);
        }
        LAST_PANIC.with(|last| *last.borrow_mut() = Some(report));
    }));
}

impl PanicReport {
    /// The report of a panic caught on this thread (by `catch_unwind`): the hook's, with where it
    /// happened, or else what the payload says.
    pub fn caught(payload: &(dyn Any + Send)) -> PanicReport {
        LAST_PANIC
            .with(|last| last.borrow_mut().take())
            .unwrap_or_else(|| PanicReport { message: message_of(payload), location: None })
    }
}

impl fmt::Display for PanicReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.location {
            Some(location) => write!(f, "panicked at {location}: {}", self.message),
            None => write!(f, "panicked: {}", self.message),
        }
    }
}

/// The text a panic carries (`panic!` with a message gives a `&str` or a `String`).
fn message_of(payload: &(dyn Any + Send)) -> String {
    if let Some(message) = payload.downcast_ref::<&str>() {
        (*message).to_string()
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message.clone()
    } else {
        "a panic without a message".to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_caught_panic_says_what_and_where() {
        install_hook();
        let caught = std::thread::spawn(|| {
            let payload = std::panic::catch_unwind(|| panic!("invariant {} broken", 7)).unwrap_err();
            PanicReport::caught(payload.as_ref())
        })
        .join()
        .unwrap();
        assert_eq!(caught.message, "invariant 7 broken");
        let location = caught.location.clone().expect("the hook saw where");
        assert!(location.starts_with("src/panics.rs:"), "{location}");
        assert!(caught.to_string().starts_with("panicked at src/panics.rs:"), "{caught}");
    }

    #[test]
    fn without_the_hook_the_payload_still_says_what() {
        let payload: Box<dyn Any + Send> = Box::new(String::from("lost"));
        let report = PanicReport { message: message_of(payload.as_ref()), location: None };
        assert_eq!(report.to_string(), "panicked: lost");
    }
}
