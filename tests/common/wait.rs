//! Waiting in tests: every wait is a poll with a deadline, never a sleep that hopes. [`eventually`]
//! (async) and [`eventually_sync`] (on a plain thread) poll a probe until it is ready and panic on
//! timeout naming what was awaited and the last state the probe saw. [`Watchdog`] bounds a whole
//! test in time, also under plain `cargo test`, where no runner kills a test that hangs, and kills
//! the child processes the test binary [watches](watch_child) before it aborts.

use std::fmt::Display;
use std::future::Future;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// What a probe returns: ready (with a value), or not yet (with what it saw, for the panic).
pub trait Ready {
    type Value;
    fn ready(self) -> Result<Self::Value, String>;
}

impl Ready for bool {
    type Value = ();
    fn ready(self) -> Result<(), String> {
        if self {
            Ok(())
        } else {
            Err("false".into())
        }
    }
}

impl<T> Ready for Option<T> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.ok_or_else(|| "None".into())
    }
}

/// `Err` carries the last observed state: `Err(format!("{status:?}"))` shows up in the panic.
impl<T, E: Display> Ready for Result<T, E> {
    type Value = T;
    fn ready(self) -> Result<T, String> {
        self.map_err(|e| e.to_string())
    }
}

/// Polls start at 5 ms and back off to 100 ms: quick conditions are seen at once, long waits (a
/// probe that spawns `fekv ctl`) do not load the machine.
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(5))
    }

    fn next(&mut self) -> Duration {
        let now = self.0;
        self.0 = (self.0 * 2).min(Duration::from_millis(100));
        now
    }
}

fn timed_out(within: Duration, what: &str, last: &str) -> ! {
    panic!("waited {within:?} for {what}; last seen: {last}")
}

/// Polls `probe` until it is ready and returns its value; after `within`, panics naming `what` and
/// the probe's last answer.
pub async fn eventually<R, Fut>(within: Duration, what: &str, probe: impl FnMut() -> Fut) -> R::Value
where
    R: Ready,
    Fut: Future<Output = R>,
{
    try_eventually(within, probe).await.unwrap_or_else(|last| timed_out(within, what, &last))
}

/// [`eventually`] for a wait whose timeout is an answer, not a failure: the probe's last answer.
pub async fn try_eventually<R, Fut>(within: Duration, mut probe: impl FnMut() -> Fut) -> Result<R::Value, String>
where
    R: Ready,
    Fut: Future<Output = R>,
{
    let deadline = Instant::now() + within;
    let mut backoff = Backoff::new();
    loop {
        let last = match probe().await.ready() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        tokio::time::sleep(backoff.next()).await;
    }
}

/// [`eventually`] for a probe that blocks (a child process, a file): on this thread, no runtime.
pub fn eventually_sync<R: Ready>(within: Duration, what: &str, probe: impl FnMut() -> R) -> R::Value {
    try_eventually_sync(within, probe).unwrap_or_else(|last| timed_out(within, what, &last))
}

/// [`try_eventually`] on this thread: the value, or the probe's last answer after `within`.
pub fn try_eventually_sync<R: Ready>(within: Duration, mut probe: impl FnMut() -> R) -> Result<R::Value, String> {
    let deadline = Instant::now() + within;
    let mut backoff = Backoff::new();
    loop {
        let last = match probe().ready() {
            Ok(value) => return Ok(value),
            Err(last) => last,
        };
        if Instant::now() >= deadline {
            return Err(last);
        }
        std::thread::sleep(backoff.next());
    }
}

/// Bounds a test in time: if it is not dropped within its limit, it says which test hung, kills the
/// `fekv` processes the test binary started and aborts the binary. Under nextest every test is its
/// own process and nextest's own timeout applies as well; under `cargo test` this is the only bound.
/// The fixtures (`TestNode`, `Cluster`, `FekvProcess`, `ProcessCluster`) each hold one.
pub struct Watchdog {
    /// Dropping it tells the watchdog's thread the test is over.
    _done: std::sync::mpsc::Sender<()>,
}

/// The limit of a test that uses a fixture: the longest process test takes about a minute alone,
/// a few times that on a loaded 2-core machine.
pub const TEST_LIMIT: Duration = Duration::from_secs(600);

impl Watchdog {
    pub fn start(limit: Duration) -> Watchdog {
        let (done, over) = std::sync::mpsc::channel::<()>();
        // libtest names each test's thread after the test.
        let test = std::thread::current().name().unwrap_or("a test").to_string();
        std::thread::spawn(move || {
            if over.recv_timeout(limit) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                eprintln!("watchdog: {test} still running after {limit:?}; aborting the test binary");
                kill_children();
                std::process::abort();
            }
        });
        Watchdog { _done: done }
    }
}

impl Default for Watchdog {
    fn default() -> Watchdog {
        Watchdog::start(TEST_LIMIT)
    }
}

/// The pids of the children this test binary started and has not reaped yet.
static CHILDREN: Mutex<Vec<u32>> = Mutex::new(Vec::new());

/// Registers a child process for the watchdog to kill if a test hangs.
pub fn watch_child(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).push(pid);
}

/// The child was reaped: its pid may be reused.
pub fn forget_child(pid: u32) {
    CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).retain(|p| *p != pid);
}

/// `kill -9` of every watched child: the watchdog's last act before it aborts the binary.
fn kill_children() {
    for pid in CHILDREN.lock().unwrap_or_else(|e| e.into_inner()).iter() {
        // SAFETY: kill(2) on a pid this binary spawned and has not reaped (so not reused).
        unsafe { libc::kill(*pid as i32, libc::SIGKILL) };
    }
}
