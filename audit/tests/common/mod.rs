//! Shared helpers for the audit integration tests.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use sakshi_audit::{
    Action, Actor, ApplianceKey, AuditConfig, AuditLog, AuthMethod, NewEntry, Origin, Outcome,
    Target,
};

pub struct Fixture {
    pub dir: tempfile::TempDir,
    pub key: Arc<ApplianceKey>,
}

impl Fixture {
    pub fn new() -> Self {
        Fixture {
            dir: tempfile::tempdir().unwrap(),
            key: Arc::new(ApplianceKey::generate().unwrap()),
        }
    }

    pub fn db(&self) -> PathBuf {
        self.dir.path().join("audit.db")
    }

    pub fn open(&self, config: AuditConfig) -> AuditLog {
        AuditLog::open(self.db(), config, self.key.clone(), None).unwrap()
    }
}

/// Checkpoints every `every` entries, and (effectively) never by time.
pub fn config(every: u64) -> AuditConfig {
    AuditConfig {
        checkpoint_every: every,
        checkpoint_interval: Duration::from_secs(3600),
        ..AuditConfig::default()
    }
}

/// A varied entry; `i` goes into details so each entry is distinct.
pub fn entry(i: u64) -> NewEntry {
    let actions = [
        Action::VmCreate,
        Action::VmBoot,
        Action::AuthLoginFailure,
        Action::ConfigChange,
        Action::AuditRead,
    ];
    let action = actions[(i % actions.len() as u64) as usize];
    let mut e = NewEntry::new(
        action,
        Actor::user(format!("user{}", i % 3), AuthMethod::Password),
        Origin::Ip {
            addr: "192.0.2.10".parse().unwrap(),
        },
    )
    .target(Target::vm(format!("vm-{}", i % 7)))
    .details(serde_json::json!({ "i": i, "note": "n" }));
    if action == Action::AuthLoginFailure {
        e = e.outcome(Outcome::failure("bad password"));
    }
    if matches!(action, Action::VmCreate | Action::VmBoot) {
        e = e.vm_seq(i);
    }
    e
}

pub fn fill(log: &AuditLog, n: u64) {
    let batch: Vec<NewEntry> = (0..n).map(entry).collect();
    for chunk in batch.chunks(500) {
        log.append_batch(chunk.to_vec()).unwrap();
    }
}

pub fn raw(path: &Path) -> rusqlite::Connection {
    rusqlite::Connection::open(path).unwrap()
}
