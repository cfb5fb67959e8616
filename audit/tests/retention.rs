//! Retention: old entries are sealed into compressed archive segments that verify on their
//! own; segments past the retention period expire; both are audited in the log itself, and
//! the log keeps verifying (and proving) across both.

mod common;

use std::io::Read;
use std::time::Duration;

use chrono::Utc;
use common::{Fixture, config, entry, fill};
use sakshi_audit::{
    Action, AppliancePublicKey, AuditConfig, DamageKind, ExportBundle, ProofRequestError, Query,
    RetentionPolicy, RetentionPolicyError, VerifyOptions,
};

fn retention_config(dir: &std::path::Path) -> AuditConfig {
    AuditConfig {
        retention: RetentionPolicy {
            archive_dir: Some(dir.join("archive")),
            max_segment_entries: 300,
            ..RetentionPolicy::default()
        },
        ..config(100)
    }
}

fn read_segment(path: &std::path::Path) -> ExportBundle {
    let data = std::fs::read(path).unwrap();
    let mut json = Vec::new();
    flate2::read::GzDecoder::new(data.as_slice())
        .read_to_end(&mut json)
        .unwrap();
    serde_json::from_slice(&json).unwrap()
}

#[test]
fn default_policy_meets_pci_dss_and_cert_in() {
    let p = RetentionPolicy::default();
    let day = 24 * 3600;
    assert!(
        p.hot >= Duration::from_secs(90 * day),
        "PCI-DSS 10.5.1: 3 months immediately available"
    );
    assert!(
        p.retain >= Duration::from_secs(365 * day),
        "PCI-DSS 10.5.1: 12 months; DPDP: 1 year"
    );
    assert!(
        p.retain >= Duration::from_secs(180 * day),
        "CERT-In: 180 days"
    );
    p.validate().unwrap();
    let bad = RetentionPolicy {
        retain: Duration::from_secs(day),
        ..p
    };
    assert!(matches!(
        bad.validate(),
        Err(RetentionPolicyError::RetainShorterThanHot { .. })
    ));
}

#[test]
fn nothing_young_is_sealed() {
    let fx = Fixture::new();
    let log = fx.open(retention_config(fx.dir.path()));
    fill(&log, 50);
    let report = log.apply_retention(Utc::now()).unwrap();
    assert!(report.sealed.is_empty() && report.expired.is_empty());
    assert_eq!(
        log.query(&Query {
            limit: 1000,
            ..Default::default()
        })
        .unwrap()
        .entries
        .len(),
        50
    );
}

#[test]
fn old_entries_are_sealed_into_segments_that_verify_offline() {
    let fx = Fixture::new();
    let log = fx.open(retention_config(fx.dir.path()));
    fill(&log, 1000);
    let report = log
        .apply_retention(Utc::now() + chrono::Duration::days(100))
        .unwrap();
    let ranges: Vec<(u64, u64)> = report.sealed.iter().map(|s| (s.start, s.end)).collect();
    assert_eq!(ranges, vec![(0, 300), (300, 600), (600, 900), (900, 1000)]);

    // Each segment verifies on its own with only the PEM public key.
    let public = AppliancePublicKey::from_pem(fx.key.public_key().to_pem()).unwrap();
    for s in &report.sealed {
        let bundle = read_segment(&s.file);
        let verified = bundle.verify(&public).unwrap();
        assert_eq!(verified.entries.first().unwrap().seq, s.start);
        assert_eq!(verified.entries.len() as u64, s.end - s.start);
    }
    // Sealing is audited, with the file's hash.
    let archived = log
        .query(&Query {
            actions: vec![Action::AuditArchive],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(archived.entries.len(), 4);
    assert_eq!(
        archived.entries[0].details["sha256"],
        hex::encode(report.sealed[0].sha256)
    );
    // Sealed entries leave the hot tables but the log still verifies, segments included.
    assert!(log.get(10).unwrap().is_none());
    let v = log.verify(&VerifyOptions::default()).unwrap();
    assert!(v.is_intact(), "{v}");
    assert_eq!(v.archived, 1000);
    assert_eq!(v.segments_checked, 4);
    // Proofs still work for sealed entries (their hashes stay until expiry).
    let cp = log.checkpoint().unwrap();
    log.inclusion_proof(123, cp.checkpoint().tree_size)
        .unwrap()
        .verify(&cp.checkpoint().root)
        .unwrap();
}

#[test]
fn tampered_or_missing_segments_are_detected() {
    let fx = Fixture::new();
    let log = fx.open(retention_config(fx.dir.path()));
    fill(&log, 700);
    let report = log
        .apply_retention(Utc::now() + chrono::Duration::days(100))
        .unwrap();
    // Rewrite segment 1 with one entry changed (a valid gzip of valid JSON).
    let mut bundle = read_segment(&report.sealed[1].file);
    bundle.entries[3].canonical = bundle.entries[3]
        .canonical
        .replace("\"note\":\"n\"", "\"note\":\"m\"");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    std::io::Write::write_all(&mut gz, &serde_json::to_vec(&bundle).unwrap()).unwrap();
    std::fs::write(&report.sealed[1].file, gz.finish().unwrap()).unwrap();
    std::fs::remove_file(&report.sealed[2].file).unwrap();
    let v = log.verify(&VerifyOptions::default()).unwrap();
    assert!(v.has(DamageKind::BadSegment), "{v}");
    assert!(v.has(DamageKind::MissingSegment), "{v}");
    assert_eq!(
        v.first_damage().unwrap().first_bad_index(),
        Some(300),
        "{v}"
    );
}

#[test]
fn expired_segments_are_deleted_audited_and_the_log_still_verifies_and_proves() {
    let fx = Fixture::new();
    let log = fx.open(retention_config(fx.dir.path()));
    fill(&log, 1000);
    let sealed = log
        .apply_retention(Utc::now() + chrono::Duration::days(100))
        .unwrap();
    let before = log.checkpoint().unwrap();
    let report = log
        .apply_retention(Utc::now() + chrono::Duration::days(400))
        .unwrap();
    assert!(!report.expired.is_empty());
    let last_expired = report.expired.last().unwrap().end;
    assert!(last_expired >= 1000);
    for s in &sealed.sealed {
        assert!(
            !s.file.exists(),
            "expired segment {} still on disk",
            s.file.display()
        );
    }
    let expired = log
        .query(&Query {
            actions: vec![Action::AuditExpire],
            ..Default::default()
        })
        .unwrap();
    assert_eq!(expired.entries.len(), report.expired.len());
    assert_eq!(expired.entries[0].details["start"], 0);

    // New entries continue the same tree.
    for i in 0..50 {
        log.append(entry(10_000 + i)).unwrap();
    }
    let v = log.verify(&VerifyOptions::default()).unwrap();
    assert!(v.is_intact(), "{v}");
    assert_eq!(v.expired, last_expired);
    let cp = log.checkpoint().unwrap();
    let c = cp.checkpoint();
    let size = log.size().unwrap();
    assert_eq!(c.tree_size, size);
    for index in [last_expired, size - 1] {
        log.inclusion_proof(index, size)
            .unwrap()
            .verify(&c.root)
            .unwrap();
    }
    // Consistency with a checkpoint from before expiry still proves (it needs no expired
    // node here), or fails with a typed error when it would.
    match log.consistency_proof(before.checkpoint().tree_size, size) {
        Ok(p) => p.verify(&before.checkpoint().root, &c.root).unwrap(),
        Err(e) => assert!(matches!(e, ProofRequestError::Expired { .. }), "{e}"),
    }
    assert!(matches!(
        log.inclusion_proof(5, size),
        Err(ProofRequestError::Expired { .. })
    ));
    // Verification by the externally held pre-expiry checkpoint still holds.
    let v = log
        .verify(&VerifyOptions {
            external_checkpoints: vec![before],
            ..Default::default()
        })
        .unwrap();
    assert!(v.is_intact(), "{v}");
}

#[test]
fn retention_survives_reopen() {
    let fx = Fixture::new();
    {
        let log = fx.open(retention_config(fx.dir.path()));
        fill(&log, 400);
        log.apply_retention(Utc::now() + chrono::Duration::days(400))
            .unwrap();
    }
    let log = fx.open(retention_config(fx.dir.path()));
    log.append(entry(1)).unwrap();
    let v = log.verify(&VerifyOptions::default()).unwrap();
    assert!(v.is_intact(), "{v}");
    assert!(v.expired >= 400);
}
