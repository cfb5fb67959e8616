//! Export + offline verification, with tampering of every kind.

use std::io::Read;
use std::path::PathBuf;

use chrono::{DateTime, TimeDelta, TimeZone, Utc};
use sakshi_audit::{Action, Actor, ApplianceKey, AuthMethod, NewEntry, Origin, Target};

use super::soft_tpm::SoftTpm;
use super::source::memory::MemorySource;
use super::*;
use crate::catalog::Catalog;
use crate::evaluate::Status;
use crate::evidence::{Period, VmRecord};

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap()
}

fn period() -> Period {
    Period::new(t0(), t0() + TimeDelta::days(1)).unwrap()
}

/// 5 entries the day before (ending with the "previous bundle" checkpoint at size 5), then
/// one entry every 20 minutes for the period and a checkpoint every 30 minutes, then an
/// anchor checkpoint just after the period.
fn sample_log() -> (MemorySource, String) {
    let mut log = MemorySource::new(ApplianceKey::generate().unwrap());
    let before = t0() - TimeDelta::hours(10);
    for i in 0..5 {
        log.append(
            NewEntry::new(
                Action::ApplianceStart,
                Actor::service("sakshi"),
                Origin::Internal,
            ),
            before + TimeDelta::minutes(i),
        );
    }
    let previous = log
        .checkpoint(t0() - TimeDelta::minutes(1))
        .as_str()
        .to_owned();
    let admin = || Actor::user("alice", AuthMethod::Password);
    let ip = || Origin::Ip {
        addr: "192.0.2.10".parse().unwrap(),
    };
    for minute in (0..24 * 60).step_by(10) {
        let at = t0() + TimeDelta::minutes(minute);
        if minute % 20 == 0 {
            let n = match (minute / 20) % 4 {
                0 => NewEntry::new(Action::VmCreate, admin(), ip())
                    .target(Target::vm(format!("vm-{minute}"))),
                1 => NewEntry::new(Action::AuditRead, admin(), ip()),
                2 => NewEntry::new(
                    Action::AuditVerify,
                    Actor::service("review"),
                    Origin::Internal,
                )
                .details(serde_json::json!({"review": "daily"})),
                _ => NewEntry::new(
                    Action::VmBoot,
                    Actor::service("supervisor"),
                    Origin::Internal,
                )
                .target(Target::vm(format!("vm-{minute}"))),
            };
            log.append(n, at + TimeDelta::seconds(1));
        }
        if minute % 30 == 0 {
            log.checkpoint(at + TimeDelta::seconds(2));
        }
    }
    log.checkpoint(t0() + TimeDelta::days(1) + TimeDelta::seconds(30));
    (log, previous)
}

fn options(tpm: &SoftTpm, previous: Option<String>) -> ExportOptions {
    ExportOptions {
        period: period(),
        scope: Scope::All,
        hostname: "sakshi-test".into(),
        machine_id: Some("0123456789abcdef".into()),
        appliance_version: "0.1.0".into(),
        generated_by: "auditor".into(),
        previous_checkpoint: previous,
        catalogs: Catalog::builtin().unwrap(),
        golden: tpm.golden(),
        inventory: Some(vec![VmRecord {
            id: "vm-1".into(),
            state: "running".into(),
            kernel_sha256: Some(tpm.kernel.to_hex()),
            initrd_sha256: None,
            vcpus: 1,
            memory_mib: 128,
            created: t0(),
            labels: [
                ("function".to_owned(), "payments".to_owned()),
                ("tenant".to_owned(), "bank-a".to_owned()),
            ]
            .into(),
        }]),
        patches: Some(Vec::new()),
        time_sync: None,
        retention: None,
        location: None,
        siem: None,
        now: t0() + TimeDelta::days(1) + TimeDelta::minutes(5),
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    bytes: Vec<u8>,
    key: sakshi_audit::AppliancePublicKey,
    previous: String,
    summary: ExportSummary,
}

fn export() -> Fixture {
    let (log, previous) = sample_log();
    let tpm = SoftTpm::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bundle.tar.gz");
    let summary = export_bundle(
        &log,
        &log.key,
        &tpm,
        &options(&tpm, Some(previous.clone())),
        &path,
    )
    .unwrap();
    let bytes = std::fs::read(&path).unwrap();
    Fixture {
        key: log.key.public_key().clone(),
        _dir: dir,
        path,
        bytes,
        previous,
        summary,
    }
}

fn verify(bytes: &[u8], key: &sakshi_audit::AppliancePublicKey) -> BundleReport {
    verify_bundle(
        bytes,
        &VerifyOptions {
            key: key.clone(),
            previous_anchor: None,
        },
    )
}

fn members(bytes: &[u8]) -> Vec<(String, Vec<u8>)> {
    let mut ar = tar::Archive::new(flate2::read::GzDecoder::new(bytes));
    ar.entries()
        .unwrap()
        .map(|e| {
            let mut e = e.unwrap();
            let p = e.path().unwrap().to_string_lossy().into_owned();
            let mut b = Vec::new();
            e.read_to_end(&mut b).unwrap();
            (p, b)
        })
        .collect()
}

fn pack(files: &[(String, Vec<u8>)]) -> Vec<u8> {
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(
        Vec::new(),
        flate2::Compression::fast(),
    ));
    for (p, b) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(b.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        tar.append_data(&mut h, p, b.as_slice()).unwrap();
    }
    tar.into_inner().unwrap().finish().unwrap()
}

fn messages(r: &BundleReport) -> Vec<String> {
    r.problems.iter().map(|p| error_chain(p)).collect()
}

#[test]
fn a_good_bundle_verifies() {
    let f = export();
    let m = &f.summary.manifest;
    assert_eq!(m.audit.start, 5);
    assert_eq!(m.audit.end, 5 + 72);
    assert_eq!(f.path.file_name().unwrap(), "bundle.tar.gz");
    assert_eq!(
        m.file_name(),
        "sakshi-evidence_sakshi-test_all_20261101T000000Z-20261102T000000Z.tar.gz"
    );
    let r = verify(&f.bytes, &f.key);
    assert!(r.is_ok(), "{:?}", messages(&r));
    assert_eq!(r.entries_checked, 72);
    assert_eq!(r.files_ok, m.files.len());
    let integrity = r.integrity.as_ref().unwrap();
    assert_eq!(integrity.consistent_from, Some(5));
    // The previous bundle's checkpoint (size 5), 48 half-hourly ones, and the anchor.
    assert_eq!(integrity.checkpoints, 50);
    assert!(
        integrity.max_checkpoint_gap_secs <= 30 * 60 + 2,
        "{integrity:?}"
    );
    let q = r.quote.as_ref().unwrap();
    assert!(
        q.software_tpm && q.findings.is_empty() && q.vm_boots == 1,
        "{q:?}"
    );
    // The auditor's previous bundle anchor is the checkpoint this one continues from.
    let r = verify_bundle(
        f.bytes.as_slice(),
        &VerifyOptions {
            key: f.key.clone(),
            previous_anchor: Some(f.previous.clone()),
        },
    );
    assert!(r.is_ok(), "{:?}", messages(&r));
    let (other_log, _) = sample_log();
    let r = verify_bundle(
        f.bytes.as_slice(),
        &VerifyOptions {
            key: f.key.clone(),
            previous_anchor: Some(other_log.checkpoints[0].as_str().to_owned()),
        },
    );
    assert!(
        matches!(r.problems.as_slice(), [BundleProblem::Previous]),
        "{:?}",
        messages(&r)
    );
    // The files named in the layout are present, in order, with the entries last.
    let names: Vec<String> = members(&f.bytes).into_iter().map(|(p, _)| p).collect();
    assert_eq!(names[0], paths::MANIFEST);
    assert_eq!(names[1], paths::SIGNATURE);
    assert_eq!(names.last().unwrap(), paths::ENTRIES);
    for p in [
        paths::AUDIT_PROOF,
        paths::CHECKPOINTS,
        paths::GOLDEN,
        paths::INVENTORY,
        paths::PATCHES,
        paths::RESULTS,
    ] {
        assert!(names.iter().any(|n| n == p), "{p} missing from {names:?}");
    }
    assert!(names.iter().any(|n| n == "reports/pci-dss-4.0.1.html"));
    assert!(names.iter().any(|n| n == "attestation/quote/quote.msg"));
}

#[test]
fn the_control_results_use_the_bundle_evidence() {
    let f = export();
    let pci = f
        .summary
        .results
        .iter()
        .find(|r| r.framework.id == "pci-dss-4.0.1")
        .unwrap();
    let status = |id: &str| pci.controls.iter().find(|c| c.id == id).unwrap().status;
    assert_eq!(status("10.3.2"), Status::Pass, "log integrity");
    assert_eq!(status("10.2.2"), Status::Pass, "record fields");
    assert_eq!(status("10.2.1.7"), Status::Pass, "vm.create recorded");
    assert_eq!(status("10.4.1.1"), Status::Pass, "daily review present");
    assert_eq!(status("2.2.3"), Status::Pass, "function label");
    assert_eq!(
        status("10.6.1"),
        Status::NeedsReview,
        "no time-sync evidence"
    );
    let files = members(&f.bytes);
    let results = &files.iter().find(|(p, _)| p == paths::RESULTS).unwrap().1;
    let v: serde_json::Value = serde_json::from_slice(results).unwrap();
    let ar = &v["assessment-results"];
    assert_eq!(ar["metadata"]["oscal-version"], crate::oscal::OSCAL_VERSION);
    let first = &ar["results"][0];
    assert_eq!(
        first["findings"].as_array().unwrap().len(),
        pci.controls.len()
    );
    assert_eq!(
        first["findings"][0]["target"]["target-id"],
        format!("pci-dss-4.0.1_{}", pci.controls[0].id)
    );
    let html = String::from_utf8(
        files
            .iter()
            .find(|(p, _)| p == "reports/pci-dss-4.0.1.html")
            .unwrap()
            .1
            .clone(),
    )
    .unwrap();
    assert!(html.contains("10.4.1.1") && html.contains("wording not verified"));
}

#[test]
fn changing_any_file_fails_naming_it() {
    let f = export();
    let files = members(&f.bytes);
    for i in 0..files.len() {
        let mut changed = files.clone();
        let b = &mut changed[i].1;
        let at = b.len() / 2;
        b[at] ^= 0x01;
        let r = verify(&pack(&changed), &f.key);
        assert!(!r.is_ok(), "changing {} was not detected", files[i].0);
        let text = messages(&r).join("\n");
        let path = &files[i].0;
        if path == paths::MANIFEST || path == paths::SIGNATURE {
            assert!(
                r.problems.iter().any(|p| matches!(
                    p,
                    BundleProblem::Signature(_) | BundleProblem::ManifestJson(_)
                )),
                "{path}: {text}"
            );
        } else {
            assert!(text.contains(&format!("{path}: SHA-256")), "{path}: {text}");
        }
    }
}

#[test]
fn adding_or_removing_any_file_fails_naming_it() {
    let f = export();
    let files = members(&f.bytes);
    let mut added = files.clone();
    added.insert(5, ("notes/extra.txt".into(), b"hello".to_vec()));
    let r = verify(&pack(&added), &f.key);
    assert_eq!(
        messages(&r),
        vec!["notes/extra.txt: file is not listed in the manifest (added)".to_owned()]
    );
    let mut twice = files.clone();
    twice.insert(4, files[3].clone());
    let r = verify(&pack(&twice), &f.key);
    assert!(
        matches!(&r.problems[..], [BundleProblem::DuplicateFile(p)] if *p == files[3].0),
        "{:?}",
        messages(&r)
    );
    for i in 0..files.len() {
        let mut removed = files.clone();
        let (path, _) = removed.remove(i);
        let r = verify(&pack(&removed), &f.key);
        assert!(!r.is_ok(), "removing {path} was not detected");
        let text = messages(&r).join("\n");
        if i < 2 {
            assert!(
                matches!(r.problems[0], BundleProblem::Layout { .. }),
                "{path}: {text}"
            );
        } else {
            assert!(
                text.contains(&format!("{path}: listed in the manifest but missing")),
                "{path}: {text}"
            );
        }
    }
}

#[test]
fn changing_an_entry_names_the_entry() {
    let f = export();
    let files = members(&f.bytes);
    let idx = files.iter().position(|(p, _)| p == paths::ENTRIES).unwrap();
    let text = String::from_utf8(files[idx].1.clone()).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    // Every byte of one entry's canonical text, one at a time (letters swapped for others).
    let line = lines[10];
    let e: sakshi_audit::ExportedEntry = serde_json::from_str(line).unwrap();
    let mut tried = 0;
    for (pos, ch) in e.canonical.char_indices() {
        if !ch.is_ascii_alphanumeric() {
            continue;
        }
        let mut canonical = e.canonical.clone();
        let repl = if ch == 'a' { "b" } else { "a" };
        canonical.replace_range(pos..pos + 1, repl);
        let altered = serde_json::to_string(&sakshi_audit::ExportedEntry {
            canonical,
            ..e.clone()
        })
        .unwrap();
        let mut new_lines = lines.clone();
        new_lines[10] = &altered;
        let mut changed = files.clone();
        changed[idx].1 = format!("{}\n", new_lines.join("\n")).into_bytes();
        let r = verify(&pack(&changed), &f.key);
        let msgs = messages(&r);
        assert!(
            msgs.iter()
                .any(|m| m.contains("audit/entries.jsonl: SHA-256")),
            "{msgs:?}"
        );
        assert!(
            msgs.iter()
                .any(|m| m.contains(&format!("entry #{} was altered", e.seq))),
            "{msgs:?}"
        );
        tried += 1;
    }
    assert!(tried > 50);
    // A consistent forgery (chain values recomputed) still fails against the signed checkpoints.
    let mut chain = serde_json::from_str::<sakshi_audit::ExportedEntry>(lines[11])
        .unwrap()
        .chain;
    let mut forged = Vec::new();
    for (i, l) in lines.iter().enumerate() {
        let mut x: sakshi_audit::ExportedEntry = serde_json::from_str(l).unwrap();
        if i == 12 {
            assert!(x.canonical.contains("alice"));
            x.canonical = x.canonical.replace("alice", "mallory");
        }
        if i >= 12 {
            chain =
                sakshi_audit::chain_hash(&chain, &sakshi_audit::leaf_hash(x.canonical.as_bytes()));
            x.chain = chain;
        }
        forged.push(serde_json::to_string(&x).unwrap());
    }
    let mut changed = files.clone();
    changed[idx].1 = format!("{}\n", forged.join("\n")).into_bytes();
    let r = verify(&pack(&changed), &f.key);
    let msgs = messages(&r).join("\n");
    assert!(
        msgs.contains("do not match the signed checkpoint"),
        "{msgs}"
    );
}

#[test]
fn wrong_key_and_reordering_fail() {
    let f = export();
    let other = ApplianceKey::generate().unwrap();
    let r = verify(&f.bytes, other.public_key());
    assert!(!r.signature_ok);
    let msgs = messages(&r).join("\n");
    assert!(
        msgs.contains("signature over manifest.json does not verify"),
        "{msgs}"
    );
    assert!(msgs.contains("not signed by the given key"), "{msgs}");

    let mut files = members(&f.bytes);
    let entries = files.pop().unwrap();
    files.insert(2, entries);
    let r = verify(&pack(&files), &f.key);
    assert!(
        r.problems
            .iter()
            .any(|p| matches!(p, BundleProblem::Order(_))),
        "{:?}",
        messages(&r)
    );

    let r = verify(b"not a bundle", &f.key);
    assert!(matches!(r.problems[0], BundleProblem::Archive(_)));
}

#[test]
fn a_quote_over_another_nonce_fails() {
    let f = export();
    let mut files = members(&f.bytes);
    // Replace the quote with one over a different nonce, and re-sign everything with a key
    // the verifier trusts: only the nonce binding can catch it.
    let tpm = SoftTpm::new();
    let quote = tpm.make_quote(&[9u8; 32]);
    let dir = tempfile::tempdir().unwrap();
    quote.write_dir(&dir.path().join("q")).unwrap();
    for (p, b) in files.iter_mut() {
        if let Some(name) = p.strip_prefix(paths::QUOTE_DIR) {
            *b = std::fs::read(dir.path().join("q").join(name)).unwrap();
        }
    }
    let r = verify(&pack(&files), &f.key);
    let msgs = messages(&r).join("\n");
    assert!(
        msgs.contains("attestation/quote/quote.msg: SHA-256"),
        "{msgs}"
    );
    assert!(msgs.contains("nonce"), "{msgs}");
}

#[test]
fn export_never_overwrites_or_leaves_partial_files() {
    let f = export();
    let (log, _) = sample_log();
    let tpm = SoftTpm::new();
    let err = export_bundle(&log, &log.key, &tpm, &options(&tpm, None), &f.path).unwrap_err();
    assert!(matches!(err, ExportError::OutputExists(_)), "{err}");
    // A previous checkpoint from another log is refused before anything is written.
    let out = f.path.with_file_name("other.tar.gz");
    let (other, _) = sample_log();
    let bad_prev = Some(other.checkpoints.last().unwrap().as_str().to_owned());
    let mut foreign = options(&tpm, bad_prev);
    foreign.previous_checkpoint = Some(
        other
            .checkpoints
            .last()
            .unwrap()
            .as_str()
            .replace("sakshi.test", "other.test"),
    );
    assert!(export_bundle(&log, &log.key, &tpm, &foreign, &out).is_err());
    assert!(!out.exists());
    let leftovers: Vec<_> = std::fs::read_dir(f.path.parent().unwrap())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".sakshi-evidence-"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}

#[test]
fn a_vm_scoped_bundle_carries_inclusion_proofs() {
    let (log, previous) = sample_log();
    let tpm = SoftTpm::new();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("vm.tar.gz");
    let mut opts = options(&tpm, Some(previous));
    opts.scope = "vm:vm-80".parse().unwrap();
    let summary = export_bundle(&log, &log.key, &tpm, &opts, &path).unwrap();
    assert_eq!(
        summary.manifest.file_name(),
        "sakshi-evidence_sakshi-test_vm-vm-80_20261101T000000Z-20261102T000000Z.tar.gz"
    );
    let bytes = std::fs::read(&path).unwrap();
    let r = verify(&bytes, log.key.public_key());
    assert!(r.is_ok(), "{:?}", messages(&r));
    assert_eq!(r.entries_checked, 1);
    // Only the VM's entry is in the bundle, and the inventory has no other VM.
    let files = members(&bytes);
    let idx = files.iter().position(|(p, _)| p == paths::ENTRIES).unwrap();
    let text = String::from_utf8(files[idx].1.clone()).unwrap();
    let e: ScopedEntry = serde_json::from_str(text.trim_end()).unwrap();
    assert!(e.canonical.contains(r#""id":"vm-80""#));
    let inv = &files.iter().find(|(p, _)| p == paths::INVENTORY).unwrap().1;
    assert_eq!(
        serde_json::from_slice::<Vec<VmRecord>>(inv).unwrap().len(),
        0
    );
    // Altering the entry breaks its inclusion proof, named.
    let altered = ScopedEntry {
        canonical: e.canonical.replace("alice", "alicf"),
        ..e.clone()
    };
    let mut changed = files.clone();
    changed[idx].1 = format!("{}\n", serde_json::to_string(&altered).unwrap()).into_bytes();
    let r = verify(&pack(&changed), log.key.public_key());
    let msgs = messages(&r).join("\n");
    assert!(
        msgs.contains(&format!(
            "entry #{} was altered or is not in the log",
            e.seq
        )),
        "{msgs}"
    );
}

#[test]
fn assess_evaluates_without_a_bundle() {
    let (log, previous) = sample_log();
    let tpm = SoftTpm::new();
    let results = assess(&log, log.key.public_key(), &options(&tpm, Some(previous))).unwrap();
    let pci = results
        .iter()
        .find(|r| r.framework.id == "pci-dss-4.0.1")
        .unwrap();
    let status = |id: &str| pci.controls.iter().find(|c| c.id == id).unwrap().status;
    assert_eq!(status("10.3.2"), Status::Pass);
    assert_eq!(status("10.4.1.1"), Status::Pass);
    // No quote: attestation-based controls need review.
    assert_eq!(status("2.2.1"), Status::NeedsReview);
    let html = crate::html::render_framework(
        pci,
        &crate::html::ReportContext {
            hostname: "h<script>".into(),
            scope: "all".into(),
            period: period(),
            generated_at: t0(),
            generated_by: "auditor".into(),
            appliance_version: "0.1.0".into(),
            appliance_key: "00".into(),
            bundle_name: None,
        },
    )
    .unwrap();
    assert!(
        html.contains("h&#60;script&#62;") || html.contains("h&lt;script&gt;"),
        "host name must be escaped"
    );
    assert!(!html.contains("h<script>"));
}

#[test]
fn truncated_or_garbled_archives_fail_without_panicking() {
    let f = export();
    for cut in [10, f.bytes.len() / 3, f.bytes.len() / 2, f.bytes.len() - 5] {
        let r = verify(&f.bytes[..cut], &f.key);
        assert!(!r.is_ok(), "truncated at {cut} verified");
    }
    // An over-long entry line is refused with the line named, memory bounded.
    let mut files = members(&f.bytes);
    let idx = files.iter().position(|(p, _)| p == paths::ENTRIES).unwrap();
    files[idx].1 = vec![b'x'; MAX_LINE_BYTES + 10];
    let r = verify(&pack(&files), &f.key);
    let msgs = messages(&r).join("\n");
    assert!(msgs.contains("line 1 is longer than"), "{msgs}");
}
