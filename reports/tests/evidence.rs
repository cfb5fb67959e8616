//! Evidence bundles from a real SQLite audit log and a real software TPM (swtpm), checked
//! with the `sakshi-verify` binary as an auditor would run it.

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{TimeDelta, Utc};
use sakshi_attest::{Policy, Quote, Swtpm, Tpm, TpmConfig};
use sakshi_audit::{
    Action, Actor, ApplianceKey, AuditConfig, AuditLog, AuthMethod, NewEntry, Origin, Target,
};
use sakshi_reports::{
    Artifact, Catalog, Component, CveFix, ExportOptions, NewPatch, Period, QuoteSource, Scope,
    Severity, SourceError, Status, export_bundle, load_ledger, record_patch,
};

struct TpmQuotes(Tpm);

impl QuoteSource for TpmQuotes {
    fn quote(&self, nonce: &[u8]) -> Result<Quote, SourceError> {
        Ok(self.0.quote(nonce)?)
    }
}

fn verify_cmd(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_sakshi-verify"))
        .args(args)
        .output()
        .expect("run sakshi-verify");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn open_log(dir: &Path, key: &Arc<ApplianceKey>) -> anyhow::Result<AuditLog> {
    let cfg = AuditConfig {
        checkpoint_every: 40,
        checkpoint_interval: Duration::from_secs(3600),
        ..AuditConfig::default()
    };
    Ok(AuditLog::open(
        dir.join("audit.db"),
        cfg,
        key.clone(),
        None,
    )?)
}

fn patch(applied_days_after_release: i64) -> NewPatch {
    let applied = Utc::now() - TimeDelta::minutes(1);
    let released = (applied - TimeDelta::days(applied_days_after_release)).date_naive();
    NewPatch {
        component: Component::Vmm,
        from_version: "0.1.0".into(),
        to_version: "0.1.1".into(),
        cves: vec![CveFix {
            id: "CVE-2026-1111".into(),
            severity: Severity::Critical,
            vendor_released: released,
        }],
        applied_at: Some(applied),
        artifacts: vec![Artifact {
            name: "sakshi-vmm".into(),
            sha256: "ab".repeat(32),
        }],
        approver: "change board".into(),
        golden_image: None,
        notes: Some("CHG-42".into()),
    }
}

#[test]
fn swtpm_bundle_from_sqlite_log_verifies_with_the_cli() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let key = Arc::new(ApplianceKey::generate()?);
    let start = Utc::now() - TimeDelta::seconds(1);
    let log = open_log(dir, &key)?;
    let admin = || Actor::user("alice", AuthMethod::Password);
    let ip = || Origin::Ip {
        addr: "192.0.2.10".parse().unwrap(),
    };
    for i in 0..150 {
        let e = match i % 3 {
            0 => {
                NewEntry::new(Action::VmCreate, admin(), ip()).target(Target::vm(format!("vm-{i}")))
            }
            1 => NewEntry::new(Action::AuditRead, admin(), ip()),
            _ => NewEntry::new(
                Action::VmBoot,
                Actor::service("supervisor"),
                Origin::Internal,
            )
            .target(Target::vm(format!("vm-{i}"))),
        };
        log.append(e)?;
    }
    // A critical CVE patched after 40 days: PCI 6.3.3 must fail in a period containing it.
    let now = Utc::now();
    let (late, _) = record_patch(&log, patch(40), admin(), ip(), now)?;
    let ledger = load_ledger(&log)?;
    assert_eq!(ledger.len(), 1);
    assert_eq!(ledger[0].1, late);
    let previous = log
        .latest_checkpoint()?
        .context("a checkpoint exists")?
        .as_str()
        .to_owned();
    for _ in 0..20 {
        log.append(NewEntry::new(Action::AuditRead, admin(), ip()))?;
    }
    log.checkpoint()?;
    let end = Utc::now() + TimeDelta::seconds(1);

    let swtpm = Swtpm::start(&dir.join("swtpm"))?;
    let tpm = Tpm::open(&TpmConfig::new(swtpm.tcti(), dir.join("tpm-state")))?;
    let out = dir.join("bundle.tar.gz");
    let opts = ExportOptions {
        period: Period::new(start, end)?,
        scope: Scope::All,
        hostname: "it-host".into(),
        machine_id: None,
        appliance_version: env!("CARGO_PKG_VERSION").into(),
        generated_by: "auditor".into(),
        previous_checkpoint: Some(previous.clone()),
        catalogs: Catalog::builtin()?,
        golden: Policy::default(),
        inventory: Some(Vec::new()),
        patches: Some(ledger.into_iter().map(|(_, r)| r).collect()),
        time_sync: None,
        retention: None,
        location: None,
        siem: None,
        now: Utc::now(),
    };
    let summary = export_bundle(&log, &key, &TpmQuotes(tpm), &opts, &out)?;
    assert_eq!(summary.manifest.audit.entries, 171);
    let pci = summary
        .results
        .iter()
        .find(|r| r.framework.id == "pci-dss-4.0.1")
        .unwrap();
    let c633 = pci.controls.iter().find(|c| c.id == "6.3.3").unwrap();
    assert_eq!(c633.status, Status::Fail, "{:?}", c633.rules);
    assert!(c633.rules[0].reasons[0].contains("CVE-2026-1111"));

    let pem = dir.join("appliance.pub.pem");
    std::fs::write(&pem, key.public_key().to_pem())?;
    let (ok, text) = verify_cmd(&["bundle", s(&out), "--key", s(&pem)]);
    assert!(ok, "{text}");
    assert!(
        text.contains("RESULT: PASS") && text.contains("software TPM"),
        "{text}"
    );
    assert!(text.contains("entries #0..#171 (171) verified"), "{text}");

    // The auditor's previous bundle: the new one continues from its anchor.
    let out2 = dir.join("bundle2.tar.gz");
    for _ in 0..5 {
        log.append(NewEntry::new(Action::AuditExport, admin(), ip()))?;
    }
    let anchor = summary.manifest.audit.anchor_tree_size;
    let prev_anchor = log
        .checkpoints(anchor, anchor)?
        .last()
        .context("anchor stored")?
        .as_str()
        .to_owned();
    let opts2 = ExportOptions {
        period: Period::new(end, Utc::now() + TimeDelta::seconds(1))?,
        previous_checkpoint: Some(prev_anchor),
        now: Utc::now(),
        ..opts
    };
    let tpm2 = Tpm::open(&TpmConfig::new(swtpm.tcti(), dir.join("tpm-state")))?;
    export_bundle(&log, &key, &TpmQuotes(tpm2), &opts2, &out2)?;
    let (ok, text) = verify_cmd(&["bundle", s(&out2), "--key", s(&pem), "--previous", s(&out)]);
    assert!(ok, "{text}");
    assert!(
        text.contains(&format!(
            "consistent with the previous checkpoint at tree size {anchor}"
        )),
        "{text}"
    );

    // Tampering is caught and named; the exit status is 1.
    let bad = dir.join("bad.tar.gz");
    let mut bytes = std::fs::read(&out)?;
    let n = bytes.len();
    bytes[n / 2] ^= 0x20;
    std::fs::write(&bad, &bytes)?;
    let (ok, text) = verify_cmd(&["bundle", s(&bad), "--key", s(&pem)]);
    assert!(!ok && text.contains("RESULT: FAIL"), "{text}");
    let other = dir.join("other.pub.pem");
    std::fs::write(&other, ApplianceKey::generate()?.public_key().to_pem())?;
    let (ok, text) = verify_cmd(&["bundle", s(&out), "--key", s(&other)]);
    assert!(
        !ok && text.contains("signature over manifest.json does not verify"),
        "{text}"
    );
    let (ok, text) = verify_cmd(&["bundle", s(&dir.join("missing.tar.gz")), "--key", s(&pem)]);
    assert!(!ok && text.contains("not a readable"), "{text}");
    Ok(())
}

#[test]
fn swtpm_quote_and_audit_subcommands() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let dir = tmp.path();
    let swtpm = Swtpm::start(&dir.join("swtpm"))?;
    let tpm = Tpm::open(&TpmConfig::new(swtpm.tcti(), dir.join("tpm-state")))?;
    let nonce = [0x5au8; 32];
    let qdir = dir.join("quote");
    tpm.quote(&nonce)?.write_dir(&qdir)?;
    let (ok, text) = verify_cmd(&["quote", s(&qdir), "--nonce", &hex::encode(nonce)]);
    assert!(ok && text.contains("RESULT: PASS"), "{text}");
    let (ok, text) = verify_cmd(&["quote", s(&qdir), "--nonce", &hex::encode([1u8; 32])]);
    assert!(!ok && text.contains("nonce"), "{text}");

    let key = Arc::new(ApplianceKey::generate()?);
    let log = open_log(dir, &key)?;
    for _ in 0..10 {
        log.append(NewEntry::new(
            Action::AuditRead,
            Actor::user("bob", AuthMethod::Password),
            Origin::Internal,
        ))?;
    }
    let cp = log.checkpoint()?;
    let pem = dir.join("k.pem");
    std::fs::write(&pem, key.public_key().to_pem())?;
    let export = dir.join("export.json");
    std::fs::write(&export, serde_json::to_vec(&log.export(2, 8)?)?)?;
    let (ok, text) = verify_cmd(&["audit", s(&export), "--key", s(&pem)]);
    assert!(ok && text.contains("#2..#8 (6) verified"), "{text}");
    let note = dir.join("checkpoint.txt");
    std::fs::write(&note, cp.as_str())?;
    let (ok, text) = verify_cmd(&["audit", s(&note), "--key", s(&pem)]);
    assert!(ok && text.contains("signature OK"), "{text}");
    std::fs::write(&note, cp.as_str().replacen("\n10\n", "\n11\n", 1))?;
    let (ok, text) = verify_cmd(&["audit", s(&note), "--key", s(&pem)]);
    assert!(!ok && text.contains("RESULT: FAIL"), "{text}");
    Ok(())
}

#[test]
fn patch_ledger_in_a_sqlite_log() -> anyhow::Result<()> {
    let tmp = tempfile::tempdir()?;
    let key = Arc::new(ApplianceKey::generate()?);
    let log = open_log(tmp.path(), &key)?;
    let actor = || Actor::user("alice", AuthMethod::Password);
    let (a, ra) = record_patch(&log, patch(3), actor(), Origin::Internal, Utc::now())?;
    let mut bad = patch(3);
    bad.cves[0].id = "CVE-1".into();
    assert!(record_patch(&log, bad, actor(), Origin::Internal, Utc::now()).is_err());
    let (b, rb) = record_patch(&log, patch(10), actor(), Origin::Internal, Utc::now())?;
    let ledger = load_ledger(&log)?;
    assert_eq!(ledger, vec![(ra.seq, a.clone()), (rb.seq, b)]);
    assert_eq!(log.size()?, 2, "the invalid patch wrote nothing");
    let entry = log.get(ra.seq)?.context("stored")?;
    assert_eq!(entry.action, Action::PatchRecord);
    assert_eq!(entry.target.map(|t| t.id), Some(a.id));
    Ok(())
}
