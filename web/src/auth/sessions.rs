//! Login sessions, kept in memory (a restart logs everyone out). The cookie carries a random
//! 256-bit value; the store is keyed by its SHA-256, so lookups never compare secrets.

use crate::rbac::Role;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most sessions kept at once; the oldest is dropped beyond this.
const MAX_SESSIONS: usize = 10_000;

/// One logged-in browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// User name.
    pub user: String,
    /// Role at login.
    pub role: Role,
    /// CSRF token every form and state-changing request of this session must carry.
    pub csrf: String,
    created: Instant,
    last_seen: Instant,
}

/// The session table.
#[derive(Debug)]
pub struct SessionStore {
    idle: Duration,
    max: Duration,
    inner: Mutex<HashMap<[u8; 32], Session>>,
}

fn key(cookie_value: &str) -> [u8; 32] {
    Sha256::digest(cookie_value.as_bytes()).into()
}

impl SessionStore {
    /// A store whose sessions end after `idle` without use or `max` after login.
    pub fn new(idle: Duration, max: Duration) -> SessionStore {
        SessionStore {
            idle,
            max,
            inner: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<[u8; 32], Session>> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Starts a session; returns the cookie value and the session.
    pub fn create(&self, user: &str, role: Role, now: Instant) -> (String, Session) {
        let value = super::random_hex(32);
        let session = Session {
            user: user.to_owned(),
            role,
            csrf: super::random_hex(32),
            created: now,
            last_seen: now,
        };
        let mut map = self.lock();
        let (idle, max) = (self.idle, self.max);
        map.retain(|_, s| Self::alive(s, now, idle, max));
        if map.len() >= MAX_SESSIONS
            && let Some(oldest) = map.iter().min_by_key(|(_, s)| s.created).map(|(k, _)| *k)
        {
            map.remove(&oldest);
        }
        map.insert(key(&value), session.clone());
        (value, session)
    }

    fn alive(s: &Session, now: Instant, idle: Duration, max: Duration) -> bool {
        now.saturating_duration_since(s.last_seen) < idle
            && now.saturating_duration_since(s.created) < max
    }

    /// The live session for a cookie value, refreshing its idle timer.
    pub fn get(&self, cookie_value: &str, now: Instant) -> Option<Session> {
        let k = key(cookie_value);
        let mut map = self.lock();
        let s = map.get_mut(&k)?;
        if !Self::alive(s, now, self.idle, self.max) {
            map.remove(&k);
            return None;
        }
        s.last_seen = now;
        Some(s.clone())
    }

    /// Ends a session.
    pub fn remove(&self, cookie_value: &str) {
        self.lock().remove(&key(cookie_value));
    }

    /// Ends every session of a user (deleted user, password reset).
    pub fn remove_user(&self, user: &str) {
        self.lock().retain(|_, s| s.user != user);
    }

    /// Number of live entries (expired ones may linger until the next login).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether there are no sessions.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sessions_expire_when_idle_and_at_max_age() {
        let store = SessionStore::new(Duration::from_secs(60), Duration::from_secs(300));
        let t0 = Instant::now();
        let (cookie, s) = store.create("alice", Role::Operator, t0);
        assert_eq!(cookie.len(), 64);
        assert_eq!(s.csrf.len(), 64);
        assert_eq!(
            store
                .get(&cookie, t0 + Duration::from_secs(50))
                .unwrap()
                .user,
            "alice"
        );
        // Each use restarts the idle timer, so a session used every 50 s stays alive...
        for t in [100, 150, 200, 250, 299] {
            assert!(
                store.get(&cookie, t0 + Duration::from_secs(t)).is_some(),
                "at {t} s"
            );
        }
        // Max age reached even though it was used recently.
        assert!(store.get(&cookie, t0 + Duration::from_secs(300)).is_none());
        assert!(
            store.get(&cookie, t0 + Duration::from_secs(1)).is_none(),
            "removed"
        );

        let (c2, _) = store.create("bob", Role::Auditor, t0);
        assert!(store.get(&c2, t0 + Duration::from_secs(61)).is_none());
        assert!(store.get("not-a-session", t0).is_none());
    }

    #[test]
    fn logout_and_user_removal() {
        let store = SessionStore::new(Duration::from_secs(60), Duration::from_secs(300));
        let t0 = Instant::now();
        let (a, _) = store.create("alice", Role::Admin, t0);
        let (b, _) = store.create("bob", Role::Admin, t0);
        let (a2, _) = store.create("alice", Role::Admin, t0);
        store.remove(&a);
        assert!(store.get(&a, t0).is_none());
        assert!(store.get(&a2, t0).is_some());
        store.remove_user("alice");
        assert!(store.get(&a2, t0).is_none());
        assert!(store.get(&b, t0).is_some());
        assert_eq!(store.len(), 1);
    }
}
