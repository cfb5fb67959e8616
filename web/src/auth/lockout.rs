//! Login throttling: after `threshold` consecutive failures for a user name or a client address,
//! further attempts are refused (without checking the password) for a backoff that doubles with
//! each further failure, up to a maximum.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most keys tracked; beyond this the entries without an active lock are dropped.
const MAX_KEYS: usize = 100_000;

#[derive(Debug, Clone, Copy)]
struct Entry {
    failures: u32,
    locked_until: Option<Instant>,
}

/// Failure counters keyed by `user:<name>` and `addr:<ip>`.
#[derive(Debug)]
pub struct Throttle {
    threshold: u32,
    base: Duration,
    max: Duration,
    inner: Mutex<HashMap<String, Entry>>,
}

impl Throttle {
    /// `threshold` failures lock for `base`, each further failure doubles it, up to `max`.
    pub fn new(threshold: u32, base: Duration, max: Duration) -> Throttle {
        Throttle {
            threshold,
            base,
            max,
            inner: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Entry>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The longest remaining lock among `keys`, if any is locked.
    pub fn locked(&self, keys: &[&str], now: Instant) -> Option<Duration> {
        let map = self.lock();
        keys.iter()
            .filter_map(|k| map.get(*k)?.locked_until)
            .filter(|until| *until > now)
            .map(|until| until - now)
            .max()
    }

    /// Counts a failure for every key; returns the lock now in force, if any.
    pub fn failure(&self, keys: &[&str], now: Instant) -> Option<Duration> {
        let mut map = self.lock();
        if map.len() >= MAX_KEYS {
            map.retain(|_, e| e.locked_until.is_some_and(|u| u > now));
        }
        let mut longest = None;
        for k in keys {
            let e = map.entry((*k).to_owned()).or_insert(Entry {
                failures: 0,
                locked_until: None,
            });
            e.failures = e.failures.saturating_add(1);
            if e.failures >= self.threshold {
                let doublings = (e.failures - self.threshold).min(20);
                let d = self.base.saturating_mul(1u32 << doublings).min(self.max);
                e.locked_until = Some(now + d);
                longest = longest.max(Some(d));
            }
        }
        longest
    }

    /// A successful login clears the counters of these keys.
    pub fn success(&self, keys: &[&str]) {
        let mut map = self.lock();
        for k in keys {
            map.remove(*k);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_after_threshold_with_doubling_backoff() {
        let t = Throttle::new(3, Duration::from_secs(10), Duration::from_secs(35));
        let now = Instant::now();
        let keys = ["user:alice", "addr:10.0.0.1"];
        assert_eq!(t.failure(&keys, now), None);
        assert_eq!(t.failure(&keys, now), None);
        assert_eq!(t.locked(&keys, now), None);
        assert_eq!(t.failure(&keys, now), Some(Duration::from_secs(10)));
        assert_eq!(
            t.locked(&["user:alice"], now),
            Some(Duration::from_secs(10))
        );
        assert_eq!(
            t.locked(&["addr:10.0.0.1"], now + Duration::from_secs(4)),
            Some(Duration::from_secs(6))
        );
        assert_eq!(t.locked(&keys, now + Duration::from_secs(10)), None);
        assert_eq!(t.failure(&keys, now), Some(Duration::from_secs(20)));
        assert_eq!(
            t.failure(&keys, now),
            Some(Duration::from_secs(35)),
            "capped"
        );
        assert_eq!(t.locked(&["user:bob"], now), None);
        t.success(&["user:alice"]);
        assert_eq!(t.locked(&["user:alice"], now), None);
        assert!(
            t.locked(&["addr:10.0.0.1"], now).is_some(),
            "address stays locked"
        );
    }
}
