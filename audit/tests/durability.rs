//! Crash durability: a writer process is SIGKILLed in the middle of an append storm, several
//! times; after each restart every acknowledged entry is present and the log verifies.

mod common;

use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use sakshi_audit::{Action, ApplianceKey, AuditLog, Query, VerifyOptions, verify_database};

const PASSWORD: &str = "durability-test-password";

/// `target/<profile>/examples/audit_writer`, next to this test's `deps/` directory.
fn writer_binary() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let bin = profile_dir.join("examples").join("audit_writer");
    assert!(
        bin.exists(),
        "{} is missing: `cargo test -p sakshi-audit` builds it (or `cargo build -p sakshi-audit --examples`)",
        bin.display()
    );
    bin
}

/// Run the writer until it has acknowledged at least `min_acks` appends, SIGKILL it, and
/// return every acknowledged (seq -> marker).
fn run_and_kill(db: &std::path::Path, key: &std::path::Path, min_acks: usize) -> HashMap<u64, u64> {
    let mut child = Command::new(writer_binary())
        .arg(db)
        .arg(key)
        .arg("4")
        .env("SAKSHI_AUDIT_KEY_PASSWORD", PASSWORD)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut acks = HashMap::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while acks.len() < min_acks {
        let line = rx
            .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .expect("writer stalled");
        record(&mut acks, &line);
    }
    child.kill().unwrap(); // SIGKILL
    let status = child.wait().unwrap();
    assert!(!status.success(), "the writer was killed, not finished");
    reader.join().unwrap();
    // Lines already written to the pipe before the kill are acknowledged too.
    for line in rx.try_iter() {
        record(&mut acks, &line);
    }
    acks
}

fn record(acks: &mut HashMap<u64, u64>, line: &str) {
    let mut it = line.split_whitespace();
    assert_eq!(it.next(), Some("ACK"), "unexpected output {line:?}");
    let seq: u64 = it.next().unwrap().parse().unwrap();
    let marker: u64 = it.next().unwrap().parse().unwrap();
    assert!(
        acks.insert(seq, marker).is_none(),
        "seq {seq} acknowledged twice"
    );
}

#[test]
fn sigkill_during_append_storm_loses_no_acknowledged_entry() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("audit.db");
    let key_path = dir.path().join("appliance.key");
    let key = ApplianceKey::generate().unwrap();
    std::fs::write(
        &key_path,
        key.to_encrypted_pem(PASSWORD.as_bytes()).unwrap(),
    )
    .unwrap();
    let key = Arc::new(key);

    let mut all: HashMap<u64, u64> = HashMap::new();
    for round in 0..3 {
        let acks = run_and_kill(&db, &key_path, 1500);
        for (seq, marker) in acks {
            assert!(
                all.insert(seq, marker).is_none(),
                "round {round}: seq {seq} reused after a crash"
            );
        }
        // Every acknowledged entry is present with the content that was acknowledged.
        let log = AuditLog::open(&db, common::config(1000), key.clone(), None).unwrap();
        for (&seq, &marker) in &all {
            let e = log
                .get(seq)
                .unwrap()
                .unwrap_or_else(|| panic!("acknowledged entry {seq} lost"));
            assert_eq!(e.details["marker"], marker, "entry {seq} has other content");
        }
        let report = log.verify(&VerifyOptions::default()).unwrap();
        assert!(report.is_intact(), "round {round}:\n{report}");
        // The restart adopted the unsigned tail and said so in the log.
        let recovered = log
            .query(&Query {
                actions: vec![Action::AuditRecover],
                ..Default::default()
            })
            .unwrap();
        assert_eq!(recovered.entries.len(), round + 1);
        drop(log);
    }
    let report = verify_database(
        &db,
        &VerifyOptions {
            trusted_key: Some(key.public_key().clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.is_intact(), "{report}");
    assert!(report.log_size >= all.len() as u64);
}
