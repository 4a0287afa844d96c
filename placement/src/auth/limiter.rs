//! Failed-login rate limiting: a token bucket per user name and one per client IP address. Each failed
//! password check takes a token from both; a login is refused without checking the password while
//! either bucket is empty, and the caller answers 429 with the wait. So one address cannot guess
//! quickly at any account, and many addresses cannot guess quickly at one account.
//!
//! Memory is bounded: each table holds at most `max_tracked` buckets. A full bucket carries no
//! information, so those are dropped first; when every tracked bucket is still draining, new keys share
//! one overflow bucket (refusing the newcomers together rather than forgetting an attacker). Callers
//! pass a user name only when that user exists, so random names cannot fill the user table.
//! Time is a parameter, so tests drive it.

use std::collections::HashMap;
use std::hash::Hash;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;

/// A bucket's shape: `burst` failures at once, then one more every `refill_every`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BucketPolicy {
    pub burst: u32,
    pub refill_every: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LimiterPolicy {
    pub per_user: BucketPolicy,
    pub per_ip: BucketPolicy,
    /// Buckets kept per table (user names, addresses).
    pub max_tracked: usize,
}

impl Default for LimiterPolicy {
    /// 5 quick failures per user, then one a second (an online guesser gets 3 600 tries an hour at
    /// most); 20 per address, then five a second (some clients share an address behind NAT).
    fn default() -> Self {
        LimiterPolicy {
            per_user: BucketPolicy { burst: 5, refill_every: Duration::from_secs(1) },
            per_ip: BucketPolicy { burst: 20, refill_every: Duration::from_millis(200) },
            max_tracked: 10_000,
        }
    }
}

/// What the limiter tells the metric hook.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoginEvent {
    /// A password check succeeded.
    Succeeded,
    /// A password (or token) check failed.
    Failed,
    /// A login was refused without a check, its bucket being empty.
    Throttled,
}

impl LoginEvent {
    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            LoginEvent::Succeeded => "succeeded",
            LoginEvent::Failed => "failed",
            LoginEvent::Throttled => "throttled",
        }
    }
}

/// Called on every [`LoginEvent`]; `src/metrics.rs` passes one that increments a counter.
pub type LoginHook = Arc<dyn Fn(LoginEvent) + Send + Sync>;

/// A refused login: try again after `retry_after` (the `Retry-After` of a 429).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("too many failed logins; retry after {retry_after:?}")]
pub struct Throttled {
    pub retry_after: Duration,
}

pub struct LoginLimiter {
    policy: LimiterPolicy,
    users: Mutex<Buckets<String>>,
    ips: Mutex<Buckets<IpAddr>>,
    hook: Option<LoginHook>,
}

impl LoginLimiter {
    pub fn new(policy: LimiterPolicy, hook: Option<LoginHook>) -> LoginLimiter {
        LoginLimiter {
            policy,
            users: Mutex::new(Buckets::new(policy.per_user, policy.max_tracked)),
            ips: Mutex::new(Buckets::new(policy.per_ip, policy.max_tracked)),
            hook,
        }
    }

    /// Whether a login from `ip` (for `user`, when that user exists) may be checked now.
    pub fn check(&self, user: Option<&str>, ip: IpAddr, now: Instant) -> Result<(), Throttled> {
        let user_wait = user.map_or(Duration::ZERO, |user| self.users.lock().wait(user, now));
        let wait = user_wait.max(self.ips.lock().wait(&ip, now));
        if wait.is_zero() {
            return Ok(());
        }
        self.notify(LoginEvent::Throttled);
        Err(Throttled { retry_after: wait })
    }

    /// Counts a failed check against `ip` and (when that user exists) `user`.
    pub fn record_failure(&self, user: Option<&str>, ip: IpAddr, now: Instant) {
        if let Some(user) = user {
            self.users.lock().take(user, now);
        }
        self.ips.lock().take(&ip, now);
        self.notify(LoginEvent::Failed);
    }

    /// Tells the hook of a successful password check (the limiter itself forgets nothing for it).
    pub fn record_success(&self) {
        self.notify(LoginEvent::Succeeded);
    }

    pub fn policy(&self) -> LimiterPolicy {
        self.policy
    }

    /// Buckets tracked now (users, addresses), overflow excluded: for tests of the bound.
    pub fn tracked(&self) -> (usize, usize) {
        (self.users.lock().map.len(), self.ips.lock().map.len())
    }

    fn notify(&self, event: LoginEvent) {
        if let Some(hook) = &self.hook {
            hook(event);
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

impl Bucket {
    fn full(policy: BucketPolicy, now: Instant) -> Bucket {
        Bucket { tokens: f64::from(policy.burst), updated: now }
    }

    fn refill(&mut self, policy: BucketPolicy, now: Instant) {
        let elapsed = now.saturating_duration_since(self.updated);
        let earned = elapsed.as_secs_f64() / policy.refill_every.as_secs_f64().max(f64::MIN_POSITIVE);
        self.tokens = (self.tokens + earned).min(f64::from(policy.burst));
        self.updated = now;
    }

    fn is_full(&self, policy: BucketPolicy) -> bool {
        self.tokens >= f64::from(policy.burst)
    }
}

/// One table of buckets, bounded, with the shared overflow bucket.
struct Buckets<K> {
    policy: BucketPolicy,
    max_tracked: usize,
    map: HashMap<K, Bucket>,
    overflow: Option<Bucket>,
}

impl<K: Hash + Eq + Clone> Buckets<K> {
    fn new(policy: BucketPolicy, max_tracked: usize) -> Buckets<K> {
        Buckets { policy, max_tracked, map: HashMap::new(), overflow: None }
    }

    /// How long until `key` may fail once more (zero: now).
    fn wait<Q>(&mut self, key: &Q, now: Instant) -> Duration
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let policy = self.policy;
        let bucket = match self.map.get_mut(key) {
            Some(bucket) => bucket,
            None => match &mut self.overflow {
                // An untracked key is only held back while the overflow bucket is in use.
                Some(overflow) if self.map.len() >= self.max_tracked => overflow,
                _ => return Duration::ZERO,
            },
        };
        bucket.refill(policy, now);
        if bucket.tokens >= 1.0 {
            Duration::ZERO
        } else {
            policy.refill_every.mul_f64(1.0 - bucket.tokens)
        }
    }

    /// Takes one token from `key`'s bucket, tracking it if there is room.
    fn take<Q>(&mut self, key: &Q, now: Instant)
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ToOwned<Owned = K> + ?Sized,
    {
        let policy = self.policy;
        if !self.map.contains_key(key) && self.map.len() >= self.max_tracked {
            // Full buckets say nothing a new bucket would not: drop them to make room.
            self.map.retain(|_, bucket| {
                bucket.refill(policy, now);
                !bucket.is_full(policy)
            });
        }
        let bucket = if self.map.len() < self.max_tracked || self.map.contains_key(key) {
            self.map.entry(key.to_owned()).or_insert_with(|| Bucket::full(policy, now))
        } else {
            self.overflow.get_or_insert_with(|| Bucket::full(policy, now))
        };
        bucket.refill(policy, now);
        bucket.tokens = (bucket.tokens - 1.0).max(0.0);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;

    const ALICE: Option<&str> = Some("alice");

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    fn policy(max_tracked: usize) -> LimiterPolicy {
        LimiterPolicy {
            per_user: BucketPolicy { burst: 3, refill_every: Duration::from_secs(1) },
            per_ip: BucketPolicy { burst: 5, refill_every: Duration::from_secs(1) },
            max_tracked,
        }
    }

    #[test]
    fn a_user_is_held_back_after_the_burst_and_let_in_as_the_bucket_refills() {
        let limiter = LoginLimiter::new(policy(100), None);
        let t0 = Instant::now();
        for attempt in 0..3u8 {
            // Each from another address: the per-user bucket is what stops them.
            assert_eq!(limiter.check(ALICE, ip(attempt), t0), Ok(()));
            limiter.record_failure(ALICE, ip(attempt), t0);
        }
        assert_eq!(limiter.check(ALICE, ip(9), t0), Err(Throttled { retry_after: Duration::from_secs(1) }));
        let partly_refilled = limiter.check(ALICE, ip(9), t0 + Duration::from_millis(400)).unwrap_err();
        let wait_ms = partly_refilled.retry_after.as_secs_f64() * 1000.0;
        assert!((599.0..=601.0).contains(&wait_ms), "{wait_ms} ms");
        assert_eq!(limiter.check(ALICE, ip(9), t0 + Duration::from_secs(1)), Ok(()));
        // Another user is not affected.
        assert_eq!(limiter.check(Some("bob"), ip(9), t0), Ok(()));
    }

    #[test]
    fn an_address_is_held_back_whatever_names_it_tries() {
        let limiter = LoginLimiter::new(policy(100), None);
        let now = Instant::now();
        for _ in 0..5 {
            limiter.record_failure(None, ip(1), now);
        }
        assert!(limiter.check(None, ip(1), now).is_err());
        assert!(limiter.check(Some("bob"), ip(1), now).is_err());
        assert_eq!(limiter.check(Some("bob"), ip(2), now), Ok(()));
    }

    #[test]
    fn memory_stays_bounded_and_newcomers_share_the_overflow_bucket() {
        let limiter = LoginLimiter::new(policy(4), None);
        let now = Instant::now();
        for last in 0..50 {
            limiter.record_failure(None, ip(last), now);
        }
        assert_eq!(limiter.tracked(), (0, 4));
        // 46 failures went to the overflow bucket: untracked addresses are held back together...
        assert!(limiter.check(None, ip(200), now).is_err());
        // ...while tracked ones keep their own count (one failure of five).
        assert_eq!(limiter.check(None, ip(0), now), Ok(()));
        // Once the tracked buckets refill they make room again.
        let later = now + Duration::from_secs(60);
        limiter.record_failure(None, ip(200), later);
        assert_eq!(limiter.tracked(), (0, 1));
        assert_eq!(limiter.check(None, ip(201), later), Ok(()));
    }

    #[test]
    fn the_hook_counts_failures_and_refusals() {
        let counts = Arc::new([AtomicU64::new(0), AtomicU64::new(0)]);
        let seen = counts.clone();
        let hook: LoginHook = Arc::new(move |event| {
            seen[usize::from(event == LoginEvent::Throttled)].fetch_add(1, Ordering::Relaxed);
        });
        let limiter = LoginLimiter::new(policy(10), Some(hook));
        let now = Instant::now();
        for _ in 0..3 {
            limiter.record_failure(ALICE, ip(1), now);
        }
        assert!(limiter.check(ALICE, ip(1), now).is_err());
        assert_eq!((counts[0].load(Ordering::Relaxed), counts[1].load(Ordering::Relaxed)), (3, 1));
        assert_eq!(LoginEvent::Throttled.as_str(), "throttled");
    }
}
