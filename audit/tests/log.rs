//! The SQLite log end to end: appends, checkpoints, queries, proofs, exports, witness,
//! triggers, reopen, and clear errors for bad input, read-only files and a full disk.

mod common;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::{Fixture, config, entry, fill, raw};
use sakshi_audit::{
    Action, Actor, AppendError, ApplianceKey, AppliancePublicKey, AuditConfig, AuditLog,
    CheckpointWitness, InvalidEntry, NewEntry, OpenError, Order, Origin, Query, SignedCheckpoint,
    VerifyOptions, WitnessError, verify_database,
};

#[test]
fn appends_are_chained_checkpointed_and_verify_intact() {
    let fx = Fixture::new();
    let log = fx.open(config(1000));
    fill(&log, 2500);
    assert_eq!(log.size().unwrap(), 2500);
    let cps = log.checkpoints(0, u64::MAX).unwrap();
    let sizes: Vec<u64> = cps.iter().map(|c| c.checkpoint().tree_size).collect();
    assert_eq!(
        sizes,
        vec![0, 1000, 2000],
        "genesis plus one per 1000 entries"
    );
    for pair in cps.windows(2) {
        assert_eq!(pair[1].checkpoint().prev, Some(pair[0].hash()));
    }
    let report = log.verify(&VerifyOptions::default()).unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.entries_checked, 2500);
    assert_eq!(report.checkpoint_roots_checked, 3);
    assert_eq!(report.unsigned_tail, 500);
    assert!(report.to_string().contains("INTACT"));

    // Closing covers the tail with a final checkpoint.
    drop(log);
    let report = verify_database(
        fx.db(),
        &VerifyOptions {
            trusted_key: Some(fx.key.public_key().clone()),
            ..Default::default()
        },
    )
    .unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.unsigned_tail, 0);
    assert_eq!(report.latest_checkpoint.as_ref().map(|l| l.0), Some(2500));
}

#[test]
fn concurrent_appends_get_unique_contiguous_sequence_numbers() {
    let fx = Fixture::new();
    let log = Arc::new(fx.open(config(100)));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let (log, seen) = (log.clone(), seen.clone());
            std::thread::spawn(move || {
                for i in 0..200 {
                    let r = log.append(entry(t * 1000 + i)).unwrap();
                    seen.lock().unwrap().push(r.seq);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_unstable();
    assert_eq!(seen, (0..1600).collect::<Vec<u64>>());
    assert!(log.verify(&VerifyOptions::default()).unwrap().is_intact());
}

#[test]
fn query_filters_and_keyset_pagination() {
    let fx = Fixture::new();
    let log = fx.open(config(1000));
    fill(&log, 300);
    // Page through everything ascending.
    let mut all = Vec::new();
    let mut q = Query {
        limit: 70,
        ..Default::default()
    };
    loop {
        let page = log.query(&q).unwrap();
        all.extend(page.entries.iter().map(|e| e.seq));
        match page.next_cursor {
            Some(c) => q.cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(all, (0..300).collect::<Vec<u64>>());

    // Descending, filtered by action and outcome.
    let q = Query {
        order: Order::Descending,
        actions: vec![Action::AuthLoginFailure],
        success: Some(false),
        limit: 10,
        ..Default::default()
    };
    let page = log.query(&q).unwrap();
    assert_eq!(page.entries.len(), 10);
    assert!(page.entries.windows(2).all(|w| w[0].seq > w[1].seq));
    assert!(
        page.entries
            .iter()
            .all(|e| e.action == Action::AuthLoginFailure && !e.outcome.is_success())
    );
    assert_eq!(page.entries[0].seq, 297);

    // Actor and target filters.
    let page = log
        .query(&Query {
            actor: Some("user1".into()),
            target: Some("vm-2".into()),
            limit: 1000,
            ..Default::default()
        })
        .unwrap();
    assert!(!page.entries.is_empty());
    assert!(
        page.entries
            .iter()
            .all(|e| e.actor.id == "user1" && e.target.as_ref().unwrap().id == "vm-2")
    );
    let expected = (0..300u64).filter(|i| i % 3 == 1 && i % 7 == 2).count();
    assert_eq!(page.entries.len(), expected);

    // Time filter: everything is after the epoch and nothing is in the future.
    let future = chrono::Utc::now() + chrono::Duration::days(1);
    assert!(
        log.query(&Query {
            since: Some(future),
            ..Default::default()
        })
        .unwrap()
        .entries
        .is_empty()
    );
    assert_eq!(
        log.query(&Query {
            until: Some(future),
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
        .entries
        .len(),
        300
    );

    assert!(
        log.query(&Query {
            limit: 5000,
            ..Default::default()
        })
        .is_err()
    );
    let e = log.get(42).unwrap().unwrap();
    assert_eq!(e.seq, 42);
    assert_eq!(e.details["i"], 42);
}

#[test]
fn inclusion_and_consistency_proofs_verify_against_signed_checkpoints() {
    let fx = Fixture::new();
    let log = fx.open(config(100));
    fill(&log, 777);
    let cp = log.checkpoint().unwrap();
    let c = cp.checkpoint().clone();
    assert_eq!(c.tree_size, 777);
    cp.verify(fx.key.public_key()).unwrap();
    for index in [0, 1, 99, 100, 511, 512, 776] {
        let p = log.inclusion_proof(index, c.tree_size).unwrap();
        p.verify(&c.root).unwrap();
        let mut bad = p.clone();
        bad.index ^= 1;
        assert!(bad.verify(&c.root).is_err());
    }
    let cps = log.checkpoints(1, 777).unwrap();
    for old in &cps {
        let o = old.checkpoint();
        let proof = log.consistency_proof(o.tree_size, c.tree_size).unwrap();
        proof.verify(&o.root, &c.root).unwrap();
        assert_eq!(log.root_at(o.tree_size).unwrap(), o.root);
    }
    assert!(log.inclusion_proof(777, 777).is_err());
    assert!(log.consistency_proof(10, 800).is_err());
}

#[test]
fn export_verifies_offline_with_the_pem_public_key_only() {
    let fx = Fixture::new();
    let log = fx.open(config(64));
    fill(&log, 200);
    log.checkpoint().unwrap();
    let bundle = log.export(37, 150).unwrap();
    let json = serde_json::to_string(&bundle).unwrap();

    let public = AppliancePublicKey::from_pem(fx.key.public_key().to_pem()).unwrap();
    let parsed: sakshi_audit::ExportBundle = serde_json::from_str(&json).unwrap();
    let verified = parsed.verify(&public).unwrap();
    assert_eq!(verified.entries.len(), 113);
    assert_eq!(verified.entries[0].seq, 37);

    // A changed entry, a dropped entry, or another key all fail.
    let mut bad = parsed.clone();
    bad.entries[5].canonical = bad.entries[5]
        .canonical
        .replace("\"note\":\"n\"", "\"note\":\"x\"");
    assert!(bad.verify(&public).is_err());
    let mut bad = parsed.clone();
    bad.entries.remove(10);
    assert!(bad.verify(&public).is_err());
    let other = ApplianceKey::generate().unwrap();
    assert!(parsed.verify(other.public_key()).is_err());
}

struct Recorder {
    calls: Mutex<Vec<(u64, [u8; 32])>>,
    fail_first: AtomicU64,
}

impl CheckpointWitness for Recorder {
    fn witness(&self, tree_size: u64, checkpoint_hash: &[u8; 32]) -> Result<(), WitnessError> {
        self.calls
            .lock()
            .unwrap()
            .push((tree_size, *checkpoint_hash));
        if self.fail_first.load(Ordering::SeqCst) > 0 {
            self.fail_first.fetch_sub(1, Ordering::SeqCst);
            return Err(WitnessError::new(
                "test-tpm",
                std::io::Error::other("PCR extend refused"),
            ));
        }
        Ok(())
    }
}

#[test]
fn witness_sees_every_checkpoint_and_failures_are_audited() {
    let fx = Fixture::new();
    let w = Arc::new(Recorder {
        calls: Mutex::new(Vec::new()),
        fail_first: AtomicU64::new(1),
    });
    let log = AuditLog::open(fx.db(), config(10), fx.key.clone(), Some(w.clone())).unwrap();
    fill(&log, 25);
    let forced = log.checkpoint().unwrap();
    let cps = log.checkpoints(0, u64::MAX).unwrap();
    let calls = w.calls.lock().unwrap().clone();
    let expected: Vec<(u64, [u8; 32])> = cps
        .iter()
        .map(|c| (c.checkpoint().tree_size, c.hash()))
        .collect();
    assert_eq!(
        calls, expected,
        "one witness call per checkpoint, in order, with its hash"
    );
    assert_eq!(calls.last().unwrap().1, forced.hash());
    // The first (genesis) witness call failed: recorded as an audit entry.
    let page = log
        .query(&Query {
            actions: vec![Action::AuditWitnessFailure],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.entries.len(), 1);
    assert!(
        matches!(&page.entries[0].outcome, sakshi_audit::Outcome::Failure { reason } if reason.contains("PCR extend refused"))
    );
}

#[test]
fn empty_intervals_still_get_checkpoints() {
    let fx = Fixture::new();
    let cfg = AuditConfig {
        checkpoint_interval: Duration::from_millis(50),
        ..config(1000)
    };
    let log = fx.open(cfg);
    log.append(entry(0)).unwrap();
    std::thread::sleep(Duration::from_millis(600));
    let cps = log.checkpoints(0, u64::MAX).unwrap();
    let at_one = cps.iter().filter(|c| c.checkpoint().tree_size == 1).count();
    assert!(
        at_one >= 2,
        "expected repeated checkpoints of an unchanged tree, got {at_one}"
    );
    assert!(log.verify(&VerifyOptions::default()).unwrap().is_intact());
}

#[test]
fn triggers_reject_update_and_delete() {
    let fx = Fixture::new();
    let log = fx.open(config(10));
    fill(&log, 20);
    let conn = raw(&fx.db());
    let err = conn
        .execute("UPDATE entries SET body = NULL WHERE seq = 3", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn
        .execute("DELETE FROM entries WHERE seq = 3", [])
        .unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn.execute("DELETE FROM checkpoints", []).unwrap_err();
    assert!(err.to_string().contains("append-only"), "{err}");
    let err = conn
        .execute("UPDATE meta SET value = 'x' WHERE key = 'origin'", [])
        .unwrap_err();
    assert!(err.to_string().contains("immutable"), "{err}");
    assert!(log.verify(&VerifyOptions::default()).unwrap().is_intact());
}

#[test]
fn reopening_continues_the_chain_and_the_tree() {
    let fx = Fixture::new();
    {
        let log = fx.open(config(50));
        fill(&log, 123);
    }
    let log = fx.open(config(50));
    let r = log.append(entry(999)).unwrap();
    assert_eq!(r.seq, 123);
    fill(&log, 30);
    let report = log.verify(&VerifyOptions::default()).unwrap();
    assert!(report.is_intact(), "{report}");
}

#[test]
fn invalid_entries_and_wrong_keys_are_refused_without_writing() {
    let fx = Fixture::new();
    let log = fx.open(config(10));
    let before = log.size().unwrap();
    let bad = NewEntry::new(Action::ConfigChange, Actor::service("x"), Origin::Internal)
        .details(serde_json::json!("str"));
    assert!(matches!(
        log.append(bad),
        Err(AppendError::Invalid(InvalidEntry::DetailsNotObject))
    ));
    let huge = NewEntry::new(Action::ConfigChange, Actor::service("x"), Origin::Internal)
        .details(serde_json::json!({ "blob": "x".repeat(70_000) }));
    assert!(matches!(
        log.append(huge),
        Err(AppendError::Invalid(InvalidEntry::DetailsTooLarge { .. }))
    ));
    // A batch with one bad entry writes none of it.
    let batch = vec![
        entry(1),
        NewEntry::new(Action::ConfigChange, Actor::service(""), Origin::Internal),
    ];
    assert!(matches!(
        log.append_batch(batch),
        Err(AppendError::Invalid(InvalidEntry::EmptyActor))
    ));
    assert_eq!(log.size().unwrap(), before);
    drop(log);

    let other = Arc::new(ApplianceKey::generate().unwrap());
    let err = AuditLog::open(fx.db(), config(10), other, None).unwrap_err();
    assert!(matches!(err, OpenError::KeyMismatch { .. }), "{err}");
}

/// Makes a file immutable (`chattr +i`): read-only even for root, which ignores mode bits.
struct Immutable(std::path::PathBuf);

impl Immutable {
    fn new(path: &std::path::Path) -> Self {
        let st = std::process::Command::new("chattr")
            .arg("+i")
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "chattr +i failed");
        Immutable(path.to_path_buf())
    }
}

impl Drop for Immutable {
    fn drop(&mut self) {
        let _ = std::process::Command::new("chattr")
            .arg("-i")
            .arg(&self.0)
            .status();
    }
}

#[test]
fn read_only_database_gives_a_clear_error_and_is_untouched() {
    let fx = Fixture::new();
    {
        let log = fx.open(config(10));
        fill(&log, 15);
    }
    // Fold the WAL into the main file so the read-only file is complete on its own.
    raw(&fx.db())
        .pragma_update(None, "journal_mode", "DELETE")
        .unwrap();
    let before = std::fs::read(fx.db()).unwrap();
    {
        let _ro = Immutable::new(&fx.db());
        let err = AuditLog::open(fx.db(), config(10), fx.key.clone(), None).unwrap_err();
        assert!(matches!(err, OpenError::ReadOnly { .. }), "{err:?}");
        assert!(err.to_string().contains("read-only"));
        // Verification needs no write access.
        let report = verify_database(fx.db(), &VerifyOptions::default()).unwrap();
        assert!(report.is_intact(), "{report}");
    }
    assert_eq!(std::fs::read(fx.db()).unwrap(), before, "file unchanged");
    let log = fx.open(config(10));
    assert_eq!(log.append(entry(1)).unwrap().seq, 15);
}

fn padded(i: u64) -> NewEntry {
    entry(i).details(serde_json::json!({ "i": i, "pad": "p".repeat(2000) }))
}

/// Append until the log reports `Full`; returns how many were acknowledged.
fn append_until_full(log: &AuditLog) -> u64 {
    let mut acked = 0u64;
    for i in 0..1_000_000u64 {
        match log.append(padded(i)) {
            Ok(r) => {
                assert_eq!(r.seq, log.size().unwrap() - 1);
                acked += 1;
            }
            Err(AppendError::Full) => return acked,
            Err(e) => panic!("unexpected error after {acked} appends: {e}"),
        }
    }
    panic!("never became full");
}

#[test]
fn size_limit_fails_appends_cleanly_and_never_corrupts_the_log() {
    let fx = Fixture::new();
    let cfg = AuditConfig {
        max_db_bytes: Some(512 * 1024),
        ..config(100)
    };
    let log = fx.open(cfg);
    let before = log.size().unwrap();
    let acked = append_until_full(&log);
    assert!(acked > 10);
    // Still full: still a clean error, and nothing half-written.
    assert!(matches!(log.append(padded(0)), Err(AppendError::Full)));
    assert_eq!(log.size().unwrap(), before + acked);
    let report = log.verify(&VerifyOptions::default()).unwrap();
    assert!(report.is_intact(), "{report}");
    drop(log);
    // Reopened with room, it continues where it stopped.
    let log = fx.open(config(100));
    assert_eq!(log.append(entry(1)).unwrap().seq, before + acked);
    assert!(log.verify(&VerifyOptions::default()).unwrap().is_intact());
}

/// A tiny tmpfs (needs root): a real ENOSPC.
struct Tmpfs(std::path::PathBuf);

impl Tmpfs {
    fn mount(dir: &std::path::Path, size: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        let st = std::process::Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .unwrap();
        assert!(
            st.success(),
            "mounting a tmpfs failed (this test needs root)"
        );
        Tmpfs(dir.to_path_buf())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = std::process::Command::new("umount").arg(&self.0).status();
    }
}

#[test]
fn full_disk_fails_appends_cleanly_and_never_corrupts_the_log() {
    let fx = Fixture::new();
    let mnt = fx.dir.path().join("small");
    let _fs = Tmpfs::mount(&mnt, "1m");
    let db = mnt.join("audit.db");
    let log = AuditLog::open(&db, config(50), fx.key.clone(), None).unwrap();
    let acked = append_until_full(&log);
    assert!(acked > 10);
    assert!(matches!(log.append(padded(0)), Err(AppendError::Full)));
    let size = log.size().unwrap();
    let report = log.verify(&VerifyOptions::default()).unwrap();
    assert!(report.is_intact(), "{report}");
    drop(log);
    // Every acknowledged entry is still there after reopening, and the log verifies.
    let report = verify_database(&db, &VerifyOptions::default()).unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.log_size, size);
}

#[test]
fn checkpoint_files_round_trip_for_external_holders() {
    let fx = Fixture::new();
    let log = fx.open(config(10));
    fill(&log, 12);
    let cp = log.checkpoint().unwrap();
    let path = fx.dir.path().join("cp.txt");
    std::fs::write(&path, cp.as_str()).unwrap();
    let back = SignedCheckpoint::parse(&std::fs::read_to_string(&path).unwrap()).unwrap();
    let report = log
        .verify(&VerifyOptions {
            external_checkpoints: vec![back],
            ..Default::default()
        })
        .unwrap();
    assert!(report.is_intact(), "{report}");
    assert_eq!(report.external_consistent, 1);
}

#[test]
fn one_thread_can_pipeline_appends_with_submit() {
    let fx = Fixture::new();
    let log = fx.open(config(100));
    let pending: Vec<_> = (0..300)
        .map(|i| log.submit(vec![entry(i)]).unwrap())
        .collect();
    let seqs: Vec<u64> = pending
        .into_iter()
        .map(|p| p.wait().unwrap()[0].seq)
        .collect();
    assert_eq!(seqs, (0..300).collect::<Vec<u64>>());
    assert!(log.verify(&VerifyOptions::default()).unwrap().is_intact());
}

/// A minimal executor: park the thread until the waker unparks it.
fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = std::task::Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let std::task::Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

#[test]
fn async_appends_resolve_when_durable() {
    let fx = Fixture::new();
    let log = fx.open(config(100));
    let r = block_on(log.append_async(entry(7))).unwrap();
    assert_eq!(r.seq, 0);
    assert_eq!(log.get(0).unwrap().unwrap().details["i"], 7);
    let bad = NewEntry::new(Action::ConfigChange, Actor::service(""), Origin::Internal);
    assert!(matches!(
        block_on(log.append_async(bad)),
        Err(AppendError::Invalid(_))
    ));
}

#[test]
fn read_only_reader_serves_proofs_next_to_a_running_log() {
    let fx = Fixture::new();
    let log = fx.open(config(100));
    fill(&log, 250);
    let cp = log.checkpoint().unwrap();
    let reader = sakshi_audit::AuditReader::open(fx.db()).unwrap();
    assert_eq!(reader.origin(), log.origin());
    assert_eq!(reader.stored_public_key(), fx.key.public_key());
    for i in [0, 99, 100, 128, 249] {
        reader
            .inclusion_proof(i, 250)
            .unwrap()
            .verify(&cp.checkpoint().root)
            .unwrap();
    }
    // The reader follows the log as it grows (its node cache only holds immutable nodes).
    fill(&log, 300);
    let cp2 = log.checkpoint().unwrap();
    assert_eq!(reader.size().unwrap(), 550);
    for i in [0, 249, 250, 511, 549] {
        reader
            .inclusion_proof(i, 550)
            .unwrap()
            .verify(&cp2.checkpoint().root)
            .unwrap();
    }
    reader
        .consistency_proof(250, 550)
        .unwrap()
        .verify(&cp.checkpoint().root, &cp2.checkpoint().root)
        .unwrap();
    assert!(
        reader
            .verify(&VerifyOptions::default())
            .unwrap()
            .is_intact()
    );
    assert!(sakshi_audit::AuditReader::open(fx.dir.path().join("missing.db")).is_err());
}

/// `RssFile` of this process, KiB (file pages mapped, as `/proc/self/status` counts them).
fn rss_file_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("RssFile:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

#[test]
fn a_bulk_read_leaves_nothing_mapped_after_release_memory() {
    let fx = Fixture::new();
    let log = fx.open(config(1000));
    fill(&log, 6000);
    let before = rss_file_kib();
    // Read every entry through the shared reader connection (mapped).
    let mut seen = 0usize;
    let mut cursor = None;
    loop {
        let page = log
            .query(&Query {
                limit: 1000,
                cursor,
                ..Query::default()
            })
            .unwrap();
        seen += page.entries.len();
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, 6000);
    let mapped = rss_file_kib();
    assert!(
        mapped > before + 1024,
        "reading ~4 MB should map it: {before} -> {mapped} KiB"
    );
    log.release_read_memory();
    let after = rss_file_kib();
    assert!(
        after + 1024 < mapped,
        "release_read_memory unmapped nothing: {mapped} -> {after} KiB"
    );
    // The reader still works (re-mapped lazily).
    assert_eq!(log.query(&Query::default()).unwrap().entries.len(), 100);
}
