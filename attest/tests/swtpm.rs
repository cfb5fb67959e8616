//! Integration tests against a real swtpm (one per test, on free ports, in a temp dir, killed
//! on drop) and the real tpm2-tools. They fail, never skip, when swtpm or tpm2-tools is missing.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use sakshi_attest::{
    BootComponent, EventLog, Finding, HashAlg, MeasuredBoot, MeasuredEvent, OpenError, Policy,
    PolicyDecision, PolicyMode, Quote, Sha256Digest, Swtpm, SwtpmStop, Tpm, TpmConfig, TpmKind,
    VerifyDirError, VerifyError, VerifyOptions, VmBoot, VmBootDigests, quote_files, verify_dir,
    verify_quote,
};

const PCR: u32 = 16;

struct Env {
    dir: tempfile::TempDir,
    swtpm: Swtpm,
}

impl Env {
    fn new() -> Result<Self> {
        let dir = tempfile::tempdir()?;
        let swtpm = Swtpm::start(&dir.path().join("swtpm")).context("start swtpm")?;
        Ok(Env { dir, swtpm })
    }

    fn config(&self) -> TpmConfig {
        let mut c = TpmConfig::new(self.swtpm.tcti(), self.dir.path().join("tpm-state"));
        c.pcr = PCR;
        c.allow_resettable_pcr = true;
        c
    }

    fn open(&self) -> Result<Tpm> {
        Ok(Tpm::open(&self.config())?)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Write a file and return its path and digest.
    fn image(&self, name: &str, bytes: &[u8]) -> Result<(PathBuf, Sha256Digest)> {
        let p = self.path(name);
        fs::write(&p, bytes)?;
        Ok((p, Sha256Digest::of(bytes)))
    }

    fn tpm2(&self, tool: &str) -> Command {
        let mut c = Command::new(tool);
        c.env("TPM2TOOLS_TCTI", self.swtpm.tcti());
        c
    }
}

struct Images {
    kernel: PathBuf,
    initrd: PathBuf,
    golden: Policy,
}

fn images(env: &Env, mode: PolicyMode) -> Result<Images> {
    let (kernel, k) = env.image("vmlinux", b"\x7fELF test kernel image")?;
    let (initrd, i) = env.image("initrd", b"initrd bytes")?;
    let mut golden = Policy::new(mode);
    golden.approve(BootComponent::Kernel, k, "test-kernel 1.0");
    golden.approve(BootComponent::Initrd, i, "test-initrd 1.0");
    Ok(Images {
        kernel,
        initrd,
        golden,
    })
}

fn boot<'a>(vm_id: &'a str, kernel: &'a Path, initrd: Option<&'a Path>) -> VmBoot<'a> {
    VmBoot {
        vm_id,
        kernel,
        initrd,
        cmdline: "console=ttyS0 trace=abc",
        config: br#"{"mem_mib":64,"vcpus":1}"#,
    }
}

#[test]
fn swtpm_happy_path_measure_checkpoint_quote_verify() -> Result<()> {
    let env = Env::new()?;
    let tpm = env.open()?;
    assert_eq!(tpm.kind(), TpmKind::Software);
    assert_eq!(
        tpm.kind().notice(),
        "software TPM: no hardware root of trust"
    );
    let img = images(&env, PolicyMode::Enforce)?;
    let mb = MeasuredBoot::new(tpm.clone(), img.golden.clone());

    let m = mb.measure_vm(&boot("vm-1", &img.kernel, Some(&img.initrd)))?;
    assert_eq!(m.decision, PolicyDecision::Approved);
    assert_eq!(m.kernel_sha256, Sha256Digest::of(&fs::read(&img.kernel)?));
    let ext = m.extended.context("approved boot must be extended")?;
    assert_eq!((ext.pcr, ext.first_recnum, ext.count), (PCR, 0, 4));
    // The supervisor's path: it already hashed the images it loads.
    let m2 = mb.measure_digests(&VmBootDigests {
        vm_id: "vm-2",
        kernel_sha256: m.kernel_sha256,
        initrd_sha256: None,
        cmdline: "console=ttyS0",
        config: b"{}",
    })?;
    assert_eq!(m2.extended.map(|e| (e.first_recnum, e.count)), Some((4, 3)));
    let head = Sha256Digest::of(b"checkpoint 7");
    let cp = tpm.record_audit_checkpoint(7, head.as_bytes())?;
    assert_eq!(cp.first_recnum, 7);

    let nonce = b"fresh nonce 0001";
    let quote = tpm.quote(nonce)?;
    assert_eq!(quote.event_log.len(), 8);
    let out = env.path("quote");
    quote.write_dir(&out)?;

    // No transient objects or sessions are left behind; EK and AK are persistent.
    for (cap, want) in [("handles-transient", ""), ("handles-loaded-session", "")] {
        let out = env.tpm2("tpm2_getcap").arg(cap).output()?;
        ensure!(out.status.success(), "tpm2_getcap {cap} failed");
        assert_eq!(String::from_utf8(out.stdout)?.trim(), want, "{cap}");
    }
    let handles = String::from_utf8(
        env.tpm2("tpm2_getcap")
            .arg("handles-persistent")
            .output()?
            .stdout,
    )?;
    assert!(
        handles.contains("0x81010002") && handles.contains("0x81010003"),
        "{handles}"
    );

    let known: BTreeMap<u64, Sha256Digest> = [(7, head)].into();
    let opts = VerifyOptions {
        trusted_ak_pem: Some(tpm.ak_public_pem()),
        known_checkpoints: Some(&known),
        ..VerifyOptions::new(nonce, &img.golden)
    };
    let report = verify_dir(&out, &opts)?;
    assert!(report.passed(), "{:?}", report.findings);
    assert!(report.ak_trusted);
    assert_eq!(report.tpm_notice, "software TPM: no hardware root of trust");
    assert_eq!(report.vm_boots.len(), 2);
    let vm1 = &report.vm_boots[0];
    assert_eq!(vm1.vm_id, "vm-1");
    assert_eq!(vm1.kernel.as_ref().map(|c| c.sha256), Some(m.kernel_sha256));
    assert_eq!(vm1.initrd.as_ref().map(|c| c.sha256), m.initrd_sha256);
    assert_eq!(vm1.config.as_ref().map(|c| c.sha256), Some(m.config_sha256));
    assert!(report.vm_boots[1].initrd.is_none());
    assert_eq!(
        report.vm_boots[1].cmdline.as_ref().map(|c| c.sha256),
        Some(Sha256Digest::of(b"console=ttyS0"))
    );
    assert_eq!(report.audit_checkpoints.len(), 1);
    assert_eq!(report.audit_checkpoints[0].known, Some(true));
    assert_eq!(report.pcrs[&PCR], hex::encode(&quote.pcrs.values[0].1));
    Ok(())
}

#[test]
fn swtpm_every_active_bank_is_extended_and_matches_the_log() -> Result<()> {
    let env = Env::new()?;
    let tpm = env.open()?;
    let img = images(&env, PolicyMode::Enforce)?;
    let mb = MeasuredBoot::new(tpm.clone(), img.golden);
    mb.measure_vm(&boot("vm-banks", &img.kernel, Some(&img.initrd)))?;
    let log = tpm.event_log()?;
    let values = tpm.read_pcr()?;
    // swtpm 0.7 activates sha1, sha256, sha384 and sha512 by default.
    assert_eq!(
        values.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
        HashAlg::ALL.to_vec()
    );
    for (alg, value) in values {
        assert_eq!(log.replay(PCR, alg), Some(value), "bank {alg}");
    }
    Ok(())
}

#[test]
fn swtpm_wrong_nonce_is_rejected() -> Result<()> {
    let env = Env::new()?;
    let tpm = env.open()?;
    let quote = tpm.quote(b"nonce-A")?;
    let golden = Policy::default();
    let err = verify_quote(&quote, &VerifyOptions::new(b"nonce-B", &golden)).unwrap_err();
    assert!(matches!(err, VerifyError::NonceMismatch { .. }), "{err:?}");
    verify_quote(&quote, &VerifyOptions::new(b"nonce-A", &golden))?;
    assert!(tpm.quote(&[]).is_err());
    assert!(tpm.quote(&[0u8; 65]).is_err());
    Ok(())
}

#[test]
fn swtpm_replayed_old_quote_is_rejected() -> Result<()> {
    let env = Env::new()?;
    let tpm = env.open()?;
    let img = images(&env, PolicyMode::Audit)?;
    let mb = MeasuredBoot::new(tpm.clone(), img.golden.clone());
    mb.measure_vm(&boot("vm-good", &img.kernel, None))?;
    // An old quote, taken before an unapproved kernel booted...
    let old = tpm.quote(b"challenge-1")?;
    let (bad_kernel, _) = env.image("evil", b"unapproved kernel")?;
    let m = mb.measure_vm(&boot("vm-bad", &bad_kernel, None))?;
    assert!(matches!(m.decision, PolicyDecision::Flagged { .. }));
    // ...replayed to a verifier that sent a fresh challenge.
    let err = verify_quote(&old, &VerifyOptions::new(b"challenge-2", &img.golden)).unwrap_err();
    assert!(matches!(err, VerifyError::NonceMismatch { .. }), "{err:?}");
    // A fresh quote answers the challenge and shows the unapproved boot.
    let fresh = tpm.quote(b"challenge-2")?;
    let report = verify_quote(&fresh, &VerifyOptions::new(b"challenge-2", &img.golden))?;
    assert!(!report.passed());
    // Grafting the new log onto the old quote does not replay.
    let mut grafted = old.clone();
    grafted.event_log = fresh.event_log.clone();
    let err = verify_quote(&grafted, &VerifyOptions::new(b"challenge-1", &img.golden)).unwrap_err();
    assert!(matches!(err, VerifyError::ReplayMismatch { .. }), "{err:?}");
    Ok(())
}

/// Rewrite the kernel digest inside record 0's event data (keeping the record's own digests
/// consistent, as a careful forger would).
fn forge_kernel(log: &EventLog, fake: Sha256Digest) -> Result<EventLog> {
    let mut out = EventLog::new();
    for r in log.records() {
        let ev = match r.event()? {
            MeasuredEvent::Boot {
                component: BootComponent::Kernel,
                vm_id,
                boot,
                ..
            } => MeasuredEvent::Boot {
                component: BootComponent::Kernel,
                vm_id,
                boot,
                sha256: fake,
            },
            other => other,
        };
        let banks: Vec<HashAlg> = r.digests.iter().map(|d| d.alg).collect();
        out.append(r.pcr, &banks, &ev);
    }
    Ok(out)
}

#[test]
fn swtpm_tampered_event_log_is_rejected() -> Result<()> {
    let env = Env::new()?;
    let tpm = env.open()?;
    let img = images(&env, PolicyMode::Audit)?;
    let mb = MeasuredBoot::new(tpm.clone(), Policy::new(PolicyMode::Audit));
    let (evil, _) = env.image("evil", b"unapproved kernel")?;
    mb.measure_vm(&boot("vm-x", &evil, None))?;
    let nonce = b"n";
    let quote = tpm.quote(nonce)?;
    let out = env.path("q");
    quote.write_dir(&out)?;
    let opts = VerifyOptions::new(nonce, &img.golden);
    let cel = out.join(quote_files::EVENTLOG_CEL);

    // 1. Claim an approved kernel booted instead.
    let golden_kernel = Sha256Digest::of(&fs::read(&img.kernel)?);
    fs::write(
        &cel,
        forge_kernel(&quote.event_log, golden_kernel)?.to_cel_json(),
    )?;
    let err = verify_dir(&out, &opts).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyDirError::Verify(VerifyError::ReplayMismatch { pcr: PCR, .. })
        ),
        "{err:?}"
    );

    // 2. Drop the last record.
    let mut text: serde_json::Value = serde_json::from_str(&quote.event_log.to_cel_json())?;
    text.as_array_mut().context("array")?.pop();
    fs::write(&cel, serde_json::to_vec(&text)?)?;
    let err = verify_dir(&out, &opts).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyDirError::Verify(VerifyError::ReplayMismatch { .. })
        ),
        "{err:?}"
    );

    // 3. Edit event data without fixing the digests.
    let mut text: serde_json::Value = serde_json::from_str(&quote.event_log.to_cel_json())?;
    let data = text[0]["content"]["event_data"]
        .as_str()
        .context("event_data")?
        .to_owned();
    let mut bytes = hex::decode(data)?;
    let last = bytes.len() - 3;
    bytes[last] ^= 0x01;
    text[0]["content"]["event_data"] = hex::encode(bytes).into();
    fs::write(&cel, serde_json::to_vec(&text)?)?;
    let err = verify_dir(&out, &opts).unwrap_err();
    assert!(
        matches!(
            err,
            VerifyDirError::Verify(VerifyError::EventDigest { recnum: 0, .. })
        ),
        "{err:?}"
    );

    // 4. Malformed JSON is a read error, not a panic.
    fs::write(&cel, b"[{")?;
    assert!(matches!(
        verify_dir(&out, &opts),
        Err(VerifyDirError::Read(_))
    ));

    // 5. The untampered log verifies (and flags the unapproved kernel).
    fs::write(&cel, quote.event_log.to_cel_json())?;
    let report = verify_dir(&out, &opts)?;
    assert!(matches!(
        report.findings.as_slice(),
        [Finding::NotApproved {
            component: BootComponent::Kernel,
            ..
        }]
    ));
    Ok(())
}

#[test]
fn swtpm_swapped_kernel_enforce_refuses_audit_flags() -> Result<()> {
    let env = Env::new()?;
    let tpm = env.open()?;
    let img = images(&env, PolicyMode::Enforce)?;
    let mb = MeasuredBoot::new(tpm.clone(), img.golden.clone());
    let (swapped, swapped_digest) = env.image("vmlinux-swapped", b"\x7fELF a different kernel")?;

    let refused = mb.measure_vm(&boot("vm-s", &swapped, Some(&img.initrd)))?;
    assert!(!refused.may_boot());
    assert!(refused.extended.is_none());
    match &refused.decision {
        PolicyDecision::Refused { unapproved } => {
            assert_eq!(unapproved.len(), 1);
            assert_eq!(unapproved[0].component, BootComponent::Kernel);
            assert_eq!(unapproved[0].sha256, swapped_digest);
        }
        other => anyhow::bail!("expected a refusal, got {other:?}"),
    }
    assert!(
        tpm.event_log()?.is_empty(),
        "a refused boot must not be measured"
    );

    let mut audit = img.golden.clone();
    audit.mode = PolicyMode::Audit;
    mb.set_policy(audit.clone());
    let flagged = mb.measure_vm(&boot("vm-s", &swapped, Some(&img.initrd)))?;
    assert!(flagged.may_boot());
    assert!(matches!(flagged.decision, PolicyDecision::Flagged { .. }));
    assert!(flagged.extended.is_some());

    let quote = tpm.quote(b"audit")?;
    let report = verify_quote(&quote, &VerifyOptions::new(b"audit", &audit))?;
    assert!(!report.passed());
    assert_eq!(
        report.findings,
        vec![Finding::NotApproved {
            recnum: 0,
            vm_id: "vm-s".into(),
            component: BootComponent::Kernel,
            sha256: swapped_digest
        }]
    );
    assert!(
        report.vm_boots[0]
            .initrd
            .as_ref()
            .is_some_and(|c| c.appraisal.is_acceptable())
    );
    Ok(())
}

#[test]
fn swtpm_reset_of_resettable_pcr_is_detected() -> Result<()> {
    let env = Env::new()?;
    let tpm = env.open()?;
    let img = images(&env, PolicyMode::Enforce)?;
    let mb = MeasuredBoot::new(tpm.clone(), img.golden.clone());
    mb.measure_vm(&boot("vm-r", &img.kernel, Some(&img.initrd)))?;
    let before = tpm.quote(b"before")?;
    let old_dir = env.path("before");
    before.write_dir(&old_dir)?;
    drop(mb);
    drop(tpm);

    // Someone resets PCR 16 (allowed from locality 0).
    let st = env
        .tpm2("tpm2_pcrreset")
        .arg(PCR.to_string())
        .status()
        .context("run tpm2_pcrreset")?;
    ensure!(st.success(), "tpm2_pcrreset failed");

    // Reopening notices the PCR no longer matches the log.
    let err = Tpm::open(&env.config()).unwrap_err();
    assert!(
        matches!(
            err,
            OpenError::Journal(sakshi_attest::JournalError::OutOfSync { pcr: PCR, .. })
        ),
        "{err:?}"
    );

    // A quote taken now (with tpm2-tools and our persistent AK) does not match the old log.
    let dir = env.path("after");
    fs::create_dir(&dir)?;
    for f in [
        quote_files::AK_PEM,
        quote_files::AK_PUBLIC,
        quote_files::EVENTLOG_CEL,
        quote_files::META,
    ] {
        fs::copy(old_dir.join(f), dir.join(f))?;
    }
    let st = env
        .tpm2("tpm2_quote")
        .args([
            "-c",
            &format!("{:#x}", sakshi_attest::DEFAULT_AK_HANDLE),
            "-l",
            &format!("sha256:{PCR}"),
        ])
        .args(["-q", &hex::encode(b"after"), "-g", "sha256"])
        .arg("-m")
        .arg(dir.join(quote_files::MESSAGE))
        .arg("-s")
        .arg(dir.join(quote_files::SIGNATURE))
        .arg("-o")
        .arg(dir.join(quote_files::PCRS))
        .output()
        .context("run tpm2_quote")?;
    ensure!(
        st.status.success(),
        "tpm2_quote failed: {}",
        String::from_utf8_lossy(&st.stderr)
    );
    let err = verify_dir(&dir, &VerifyOptions::new(b"after", &img.golden)).unwrap_err();
    match err {
        VerifyDirError::Verify(VerifyError::ReplayMismatch { pcr, quoted, .. }) => {
            assert_eq!(pcr, PCR);
            assert_eq!(quoted, "00".repeat(32));
        }
        other => anyhow::bail!("expected a replay mismatch, got {other:?}"),
    }
    Ok(())
}

/// Run `tpm2_checkquote` on a quote directory; with `eventlog`, also have it replay
/// `eventlog.bin` against the quoted PCRs (`-e`).
fn checkquote(env: &Env, dir: &Path, nonce: &[u8], eventlog: bool) -> Result<bool> {
    let mut cmd = env.tpm2("tpm2_checkquote");
    cmd.current_dir(dir)
        .args([
            "-u",
            quote_files::AK_PEM,
            "-m",
            quote_files::MESSAGE,
            "-s",
            quote_files::SIGNATURE,
        ])
        .args([
            "-f",
            quote_files::PCRS,
            "-g",
            "sha256",
            "-q",
            &hex::encode(nonce),
        ]);
    if eventlog {
        cmd.args(["-e", quote_files::EVENTLOG_BIN]);
    }
    let out = cmd.output().context("run tpm2_checkquote")?;
    Ok(out.status.success())
}

/// The PCR values `tpm2_eventlog` computes by replaying the binary log, as `(bank, pcr) -> hex`.
fn tpm2_eventlog_pcrs(env: &Env, file: &Path) -> Result<BTreeMap<(String, u32), String>> {
    let out = env
        .tpm2("tpm2_eventlog")
        .arg(file)
        .output()
        .context("run tpm2_eventlog")?;
    ensure!(
        out.status.success(),
        "tpm2_eventlog failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let mut map = BTreeMap::new();
    let mut in_pcrs = false;
    let mut bank = String::new();
    for line in text.lines() {
        if line.starts_with("pcrs:") {
            in_pcrs = true;
            continue;
        }
        if !in_pcrs {
            continue;
        }
        let t = line.trim();
        if let Some(b) = t.strip_suffix(':') {
            bank = b.to_owned();
        } else if let Some((idx, val)) = t.split_once(':') {
            let idx: u32 = idx.trim().parse()?;
            map.insert(
                (bank.clone(), idx),
                val.trim().trim_start_matches("0x").to_lowercase(),
            );
        }
    }
    Ok(map)
}

#[test]
fn swtpm_tpm2_checkquote_and_tpm2_eventlog_agree_with_our_verifier() -> Result<()> {
    let env = Env::new()?;
    let tpm = env.open()?;
    let img = images(&env, PolicyMode::Enforce)?;
    let mb = MeasuredBoot::new(tpm.clone(), img.golden.clone());
    mb.measure_vm(&boot("vm-t", &img.kernel, Some(&img.initrd)))?;
    tpm.record_audit_checkpoint(1, &[0xab; 32])?;
    let nonce = b"interop";
    let quote = tpm.quote(nonce)?;
    let dir = env.path("q");
    quote.write_dir(&dir)?;

    // Both accept the genuine quote (tpm2_checkquote also replays the binary log), both
    // reject it under another nonce.
    assert!(
        checkquote(&env, &dir, nonce, false)?,
        "tpm2_checkquote rejected a genuine quote"
    );
    assert!(
        checkquote(&env, &dir, nonce, true)?,
        "tpm2_checkquote -e rejected our binary event log"
    );
    assert!(verify_dir(&dir, &VerifyOptions::new(nonce, &img.golden))?.passed());
    assert!(!checkquote(&env, &dir, b"other", false)?);
    assert!(verify_dir(&dir, &VerifyOptions::new(b"other", &img.golden)).is_err());

    // A forged log (an approved kernel claimed in place of the measured one): both reject.
    let forged = forge_kernel(&quote.event_log, Sha256Digest::of(b"some other kernel"))?;
    let forged_dir = env.path("forged");
    Quote {
        event_log: forged,
        ..quote.clone()
    }
    .write_dir(&forged_dir)?;
    assert!(
        checkquote(&env, &forged_dir, nonce, false)?,
        "the quote itself is genuine"
    );
    assert!(
        !checkquote(&env, &forged_dir, nonce, true)?,
        "tpm2_checkquote -e accepted a forged log"
    );
    assert!(matches!(
        verify_dir(&forged_dir, &VerifyOptions::new(nonce, &img.golden)),
        Err(VerifyDirError::Verify(VerifyError::ReplayMismatch { .. }))
    ));

    // tpm2_eventlog replays the binary log to the TPM's values in every bank.
    let replayed = tpm2_eventlog_pcrs(&env, &dir.join(quote_files::EVENTLOG_BIN))?;
    for (alg, value) in tpm.read_pcr()? {
        assert_eq!(
            replayed.get(&(alg.name().to_owned(), PCR)),
            Some(&hex::encode(value)),
            "bank {alg}"
        );
    }
    // And the binary log holds the same records as the CEL-JSON log.
    assert_eq!(
        EventLog::from_tcg2_binary(&fs::read(dir.join(quote_files::EVENTLOG_BIN))?)?,
        quote.event_log
    );

    // A tampered message: both reject.
    let mut msg = fs::read(dir.join(quote_files::MESSAGE))?;
    let n = msg.len();
    msg[n - 1] ^= 1;
    fs::write(dir.join(quote_files::MESSAGE), msg)?;
    assert!(!checkquote(&env, &dir, nonce, false)?);
    assert!(matches!(
        verify_dir(&dir, &VerifyOptions::new(nonce, &img.golden)),
        Err(VerifyDirError::Verify(VerifyError::BadSignature))
    ));
    Ok(())
}

#[test]
fn swtpm_keys_and_log_persist_across_restarts() -> Result<()> {
    let env = Env::new()?;
    let tpm = env.open()?;
    let ak = tpm.ak_public_pem().to_owned();
    let img = images(&env, PolicyMode::Enforce)?;
    MeasuredBoot::new(tpm.clone(), img.golden.clone()).measure_vm(&boot(
        "vm-p",
        &img.kernel,
        None,
    ))?;
    let log = tpm.event_log()?;
    drop(tpm);
    assert!(env.config().state_dir.join("ak.pub.pem").is_file());

    // Same swtpm process (same reset cycle): the log resumes.
    let tpm = env.open()?;
    assert_eq!(tpm.ak_public_pem(), ak);
    assert_eq!(tpm.event_log()?, log);
    tpm.record_audit_checkpoint(1, &[1; 32])?;
    assert_eq!(tpm.event_log()?.len(), log.len() + 1);
    drop(tpm);

    // swtpm restarts (a TPM reset): same keys, fresh log, old log archived.
    let Env { dir, swtpm } = env;
    let state = swtpm.state_dir().to_path_buf();
    drop(swtpm);
    let env = Env {
        dir,
        swtpm: Swtpm::start(&state)?,
    };
    let tpm = env.open()?;
    assert_eq!(tpm.ak_public_pem(), ak, "AK must survive a restart");
    assert!(tpm.event_log()?.is_empty());
    let archived = fs::read_dir(&env.config().state_dir)?
        .filter_map(|e| e.ok())
        .any(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("eventlog.reset-")
        });
    assert!(archived);
    let q = tpm.quote(b"after restart")?;
    verify_quote(
        &q,
        &VerifyOptions {
            trusted_ak_pem: Some(&ak),
            ..VerifyOptions::new(b"after restart", &img.golden)
        },
    )?;
    Ok(())
}

#[test]
fn swtpm_bad_input_changes_nothing() -> Result<()> {
    let env = Env::new()?;
    let tpm = env.open()?;
    let img = images(&env, PolicyMode::Enforce)?;
    let mb = MeasuredBoot::new(tpm.clone(), img.golden.clone());
    assert!(
        mb.measure_vm(&boot("bad id/..", &img.kernel, None))
            .is_err()
    );
    assert!(
        mb.measure_vm(&boot("vm", &env.path("missing"), None))
            .is_err()
    );
    assert!(tpm.event_log()?.is_empty());
    assert_eq!(
        tpm.read_pcr()?
            .iter()
            .find(|(a, _)| *a == HashAlg::Sha256)
            .map(|(_, v)| v.clone()),
        Some(vec![0; 32])
    );
    // A second Tpm on a production PCR with a non-resettable config refuses PCR 16.
    let mut c = env.config();
    c.allow_resettable_pcr = false;
    assert!(matches!(Tpm::open(&c), Err(OpenError::Config(_))));
    Ok(())
}

#[test]
fn swtpm_quote_write_dir_refuses_a_non_empty_target() -> Result<()> {
    let env = Env::new()?;
    let tpm = env.open()?;
    let q = tpm.quote(b"x")?;
    let dir = env.path("taken");
    fs::create_dir(&dir)?;
    fs::write(dir.join("keep"), b"mine")?;
    assert!(q.write_dir(&dir).is_err());
    assert_eq!(fs::read(dir.join("keep"))?, b"mine");
    assert_eq!(fs::read_dir(&dir)?.count(), 1);
    let back = Quote::read_dir(&{
        let d = env.path("ok");
        q.write_dir(&d)?;
        d
    })?;
    assert_eq!(back, q);
    Ok(())
}

#[test]
fn swtpm_unknown_event_type_fails_verification() -> Result<()> {
    let env = Env::new()?;
    let tpm = env.open()?;
    let img = images(&env, PolicyMode::Enforce)?;
    MeasuredBoot::new(tpm.clone(), img.golden.clone()).measure_vm(&boot(
        "vm-u",
        &img.kernel,
        None,
    ))?;

    // Another TPM user extends the PCR with an EV_IPL event of its own, in every bank.
    let data = b"grub_cmd: linux /vmlinuz".to_vec();
    let spec: Vec<String> = tpm
        .banks()
        .iter()
        .map(|a| format!("{}={}", a.name(), hex::encode(a.digest(&data))))
        .collect();
    let st = env
        .tpm2("tpm2_pcrextend")
        .arg(format!("{PCR}:{}", spec.join(",")))
        .status()?;
    ensure!(st.success(), "tpm2_pcrextend failed");

    let nonce = b"foreign";
    let quote = tpm.quote(nonce)?;
    // The appliance's own log lacks the event: the replay fails.
    let err = verify_quote(&quote, &VerifyOptions::new(nonce, &img.golden)).unwrap_err();
    assert!(matches!(err, VerifyError::ReplayMismatch { .. }), "{err:?}");

    // With the event logged, the replay matches, but an unknown event type is refused.
    let mut records: Vec<serde_json::Value> = serde_json::from_str(&quote.event_log.to_cel_json())?;
    let recnum = records.len();
    let digests: Vec<serde_json::Value> = tpm
        .banks()
        .iter()
        .map(|a| serde_json::json!({"hashAlg": a.name(), "digest": hex::encode(a.digest(&data))}))
        .collect();
    records.push(serde_json::json!({
        "recnum": recnum, "pcr": PCR, "digests": digests, "content_type": "pcclient_std",
        "content": {"event_type": "EV_IPL", "event_data": hex::encode(&data)}
    }));
    let log = EventLog::from_cel_json(&serde_json::to_vec(&records)?)?;
    let with_foreign = Quote {
        event_log: log,
        ..quote
    };
    let err = verify_quote(&with_foreign, &VerifyOptions::new(nonce, &img.golden)).unwrap_err();
    match err {
        VerifyError::UnknownEvent { recnum: r, source } => {
            assert_eq!(r, recnum as u64);
            assert!(matches!(
                source,
                sakshi_attest::EventDecodeError::UnknownEventType(0xd)
            ));
        }
        other => anyhow::bail!("expected an unknown-event failure, got {other:?}"),
    }
    Ok(())
}

/// TPM2_PT_LOCKOUT_COUNTER as `tpm2_getcap properties-variable` reports it.
fn lockout_counter(swtpm: &Swtpm) -> Result<u32> {
    let out = Command::new("tpm2_getcap")
        .arg("properties-variable")
        .env("TPM2TOOLS_TCTI", swtpm.tcti())
        .output()
        .context("run tpm2_getcap (tpm2-tools)")?;
    ensure!(out.status.success(), "tpm2_getcap failed: {out:?}");
    let text = String::from_utf8(out.stdout)?;
    let value = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("TPM2_PT_LOCKOUT_COUNTER:"))
        .context("no TPM2_PT_LOCKOUT_COUNTER in tpm2_getcap output")?
        .trim();
    let hex = value.strip_prefix("0x").unwrap_or(value);
    Ok(u32::from_str_radix(hex, 16)?)
}

/// TPMA_OBJECT of a TPM2B_PUBLIC: after size (2), type (2) and nameAlg (2).
fn object_attributes(tpm2b_public: &[u8]) -> Result<u32> {
    let b = tpm2b_public.get(6..10).context("short TPM2B_PUBLIC")?;
    Ok(u32::from_be_bytes(b.try_into()?))
}

/// Authorise with a DA-protected key (a fresh owner primary, as parent of a new key), so a
/// non-orderly shutdown after this counts against the DA lockout.
fn use_da_protected_key(swtpm: &Swtpm, dir: &Path) -> Result<()> {
    let primary = dir.join("primary.ctx");
    let runs: [&[&str]; 3] = [
        &["tpm2_createprimary", "-Q", "-C", "o", "-G", "ecc", "-c"],
        &[
            "tpm2_create",
            "-Q",
            "-G",
            "ecc",
            "-u",
            "/dev/null",
            "-r",
            "/dev/null",
            "-C",
        ],
        &["tpm2_flushcontext", "-t"],
    ];
    for (i, args) in runs.iter().enumerate() {
        let mut c = Command::new(args[0]);
        c.args(&args[1..]).env("TPM2TOOLS_TCTI", swtpm.tcti());
        if i < 2 {
            c.arg(&primary);
        }
        let out = c.output().with_context(|| format!("run {}", args[0]))?;
        ensure!(out.status.success(), "{} failed: {out:?}", args[0]);
    }
    Ok(())
}

/// SIGKILL, as a crash of the appliance (or of swtpm) would do it.
fn kill9(swtpm: &mut Swtpm) -> Result<()> {
    let st = Command::new("kill")
        .args(["-9", &swtpm.pid().to_string()])
        .status()?;
    ensure!(st.success(), "kill -9 failed");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while swtpm.is_running() {
        ensure!(
            std::time::Instant::now() < deadline,
            "swtpm survived SIGKILL"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    Ok(())
}

#[test]
fn swtpm_restarts_are_orderly_and_do_not_raise_the_lockout_counter() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let state = dir.path().join("swtpm");
    let config = |swtpm: &Swtpm| {
        let mut c = TpmConfig::new(swtpm.tcti(), dir.path().join("tpm-state"));
        c.pcr = PCR;
        c.allow_resettable_pcr = true;
        c
    };
    let mut ak: Option<String> = None;
    // Stop through the harness (the actor's and the harness's TPM2_Shutdown) several times.
    for round in 0..4 {
        let swtpm = Swtpm::start(&state)?;
        assert_eq!(lockout_counter(&swtpm)?, 0, "round {round}");
        let tpm = Tpm::open(&config(&swtpm))?;
        // noDA: a TPM in lockout must not be able to refuse quotes.
        assert_ne!(
            object_attributes(tpm.ak_public())? & 0x400,
            0,
            "AK lacks noDA"
        );
        let pem = tpm.ak_public_pem().to_owned();
        assert_eq!(
            *ak.get_or_insert_with(|| pem.clone()),
            pem,
            "AK changed in round {round}"
        );
        tpm.record_audit_checkpoint(round, &[7; 32])?;
        tpm.quote(b"round")?;
        use_da_protected_key(&swtpm, dir.path())?;
        drop(tpm);
        assert_eq!(swtpm.stop(), SwtpmStop::Orderly, "round {round}");
    }
    let ak = ak.context("no AK")?;

    // The actor alone: its TPM2_Shutdown on drop makes even a SIGKILL of swtpm orderly.
    let mut swtpm = Swtpm::start(&state)?;
    assert_eq!(lockout_counter(&swtpm)?, 0);
    let tpm = Tpm::open(&config(&swtpm))?;
    tpm.quote(b"actor only")?;
    use_da_protected_key(&swtpm, dir.path())?;
    drop(tpm);
    kill9(&mut swtpm)?;
    assert_eq!(swtpm.stop(), SwtpmStop::AlreadyExited);

    // A crash after only Sakshi's own use (noDA AK, EK through policy sessions) leaves the
    // TPM orderly as far as DA is concerned.
    let mut swtpm = Swtpm::start(&state)?;
    assert_eq!(
        lockout_counter(&swtpm)?,
        0,
        "actor shutdown was not orderly"
    );
    let tpm = Tpm::open(&config(&swtpm))?;
    tpm.record_audit_checkpoint(9, &[9; 32])?;
    tpm.quote(b"crash with only our own use")?;
    kill9(&mut swtpm)?;
    drop(tpm);
    drop(swtpm);

    // A crash after a DA-protected authorisation is not orderly, and the counter shows it (so
    // the assertions above can fail); the noDA AK still quotes, and it is the same AK.
    let mut swtpm = Swtpm::start(&state)?;
    assert_eq!(
        lockout_counter(&swtpm)?,
        0,
        "a crash after noDA use only was counted"
    );
    let tpm = Tpm::open(&config(&swtpm))?;
    tpm.quote(b"before the crash")?;
    use_da_protected_key(&swtpm, dir.path())?;
    kill9(&mut swtpm)?;
    drop(tpm);
    drop(swtpm);
    let swtpm = Swtpm::start(&state)?;
    assert_eq!(
        lockout_counter(&swtpm)?,
        1,
        "a crash must count as non-orderly"
    );
    let tpm = Tpm::open(&config(&swtpm))?;
    assert_eq!(tpm.ak_public_pem(), ak);
    let q = tpm.quote(b"after the crash")?;
    let golden = Policy::new(PolicyMode::Enforce);
    verify_quote(
        &q,
        &VerifyOptions {
            trusted_ak_pem: Some(&ak),
            ..VerifyOptions::new(b"after the crash", &golden)
        },
    )?;
    drop(tpm);
    assert_eq!(swtpm.stop(), SwtpmStop::Orderly);
    Ok(())
}
