//! End to end: a running `sakshi serve` (real KVM demo VM, real swtpm, real SQLite) exports a
//! signed evidence bundle through the CLI; the library verifier accepts it with the appliance's
//! public key and rejects it after a one-byte change. Patches, reports and the daily review go
//! through the same daemon.

mod common;

use anyhow::{Context, Result, ensure};
use common::{Client, Daemon, sakshi_bin, write_config};
use serde_json::{Value, json};
use std::io::Read;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

fn cli(url: &str, token: &str, args: &[&str]) -> Result<std::process::Output> {
    Ok(Command::new(sakshi_bin())
        .args(args)
        .env("SAKSHI_URL", url)
        .env("SAKSHI_TOKEN", token)
        .output()?)
}

fn ok(out: &std::process::Output, what: &str) -> Result<String> {
    ensure!(
        out.status.success(),
        "{what}: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The appliance's public key, read out of band from its data directory (as an auditor would
/// receive it from the operator).
fn appliance_key(data: &Path) -> Result<sakshi_audit::AppliancePublicKey> {
    let pass = std::fs::read_to_string(data.join("audit-key.pass"))?;
    let pem = std::fs::read(data.join("audit-key.pem"))?;
    let key = sakshi_audit::ApplianceKey::from_encrypted_pem(&pem, pass.trim().as_bytes())?;
    Ok(key.public_key().clone())
}

fn verify(bytes: &[u8], key: &sakshi_audit::AppliancePublicKey) -> sakshi_reports::BundleReport {
    sakshi_reports::verify_bundle(
        bytes,
        &sakshi_reports::VerifyOptions {
            key: key.clone(),
            previous_anchor: None,
        },
    )
}

/// The bundle's members, in order.
fn members(gz: &[u8]) -> Result<Vec<(String, Vec<u8>)>> {
    let mut a = tar::Archive::new(flate2::read::GzDecoder::new(gz));
    let mut out = Vec::new();
    for e in a.entries()? {
        let mut e = e?;
        let name = e.path()?.to_string_lossy().into_owned();
        let mut b = Vec::new();
        e.read_to_end(&mut b)?;
        out.push((name, b));
    }
    Ok(out)
}

/// Re-packs members (same order) into a tar.gz.
fn repack(files: &[(String, Vec<u8>)]) -> Result<Vec<u8>> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let mut t = tar::Builder::new(gz);
    for (name, bytes) in files {
        let mut h = tar::Header::new_ustar();
        h.set_size(bytes.len() as u64);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::Regular);
        t.append_data(&mut h, name, bytes.as_slice())?;
    }
    Ok(t.into_inner()?.finish()?)
}

fn wait_for(c: &Client, what: &str, pred: impl Fn(&Value) -> bool) -> Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(e) = c.audit_all()?.into_iter().find(|e| pred(e)) {
            return Ok(e);
        }
        ensure!(Instant::now() < deadline, "no audit entry for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn kvm_swtpm_evidence_bundle_from_serve_verifies_offline_and_tampering_fails() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let cfg = write_config(
        &data,
        "",
        "[demo]\ncmdline = \"console=ttyS0 marker=demo\"\n[audit]\nreview_check_seconds = 60\n\
         [data_location]\ndeclared_by = \"Asha Rao, CISO\"\ndeclared_at = \"2026-11-01T00:00:00Z\"\n\
         [[data_location.locations]]\nwhat = \"audit log\"\ncountry = \"IN\"\nsite = \"Mumbai DC-1\"\n",
    )?;
    let d = Daemon::start(&cfg)?;
    let password = d.admin_password.clone().context("no admin password")?;
    let demo = d.demo_id.clone().context("demo VM not booted")?;
    let mut admin = Client::new(&d.url);
    admin.login("admin", &password)?;
    let vm = admin.wait_vm(&demo, "stopped", |v| v["state"] == "stopped")?;
    let kernel = vm["kernel_sha256"]
        .as_str()
        .context("kernel digest")?
        .to_owned();
    let admin_token = admin.token.clone().context("token")?;

    // An auditor account, and an operator who may record patches but not export.
    for (name, role) in [("audra", "auditor"), ("oscar", "operator")] {
        let (s, v) = admin.post(
            "/api/v1/users",
            json!({ "name": name, "role": role, "password": "a long enough password" }),
        )?;
        ensure!(s == 201, "create {name}: {s} {v}");
    }
    let mut auditor = Client::new(&d.url);
    auditor.login("audra", "a long enough password")?;
    let auditor_token = auditor.token.clone().context("token")?;
    let mut operator = Client::new(&d.url);
    operator.login("oscar", "a long enough password")?;

    // The operator records the patched guest kernel (the demo kernel) and approves it.
    let released = (chrono::Utc::now() - chrono::Duration::days(3)).date_naive();
    let applied = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let out = cli(
        &d.url,
        operator.token.as_deref().context("token")?,
        &[
            "patch",
            "record",
            "--component",
            "guest_kernel",
            "--from-version",
            "1.0",
            "--to-version",
            "1.1",
            "--cve",
            &format!("CVE-2026-4242:critical:{released}"),
            "--applied",
            &applied,
            "--artifact-sha256",
            &format!("test-guest={kernel}"),
            "--approver",
            "change-board",
            "--golden-kernel",
            &kernel,
        ],
    )?;
    let text = ok(&out, "patch record")?;
    ensure!(text.contains("golden set: 1 digest(s) approved"), "{text}");
    let out = cli(&d.url, &admin_token, &["patch", "list", "--json"])?;
    let ledger: Value = serde_json::from_str(&ok(&out, "patch list")?)?;
    ensure!(
        ledger["records"].as_array().map(Vec::len) == Some(1),
        "{ledger}"
    );
    ensure!(ledger["cves"][0]["sla"] == "patched_in_time", "{ledger}");

    // The operator may not export; the auditor exports through the CLI.
    let from = (chrono::Utc::now() - chrono::Duration::hours(1))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let to = (chrono::Utc::now() + chrono::Duration::minutes(5))
        .to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let (s, _) = operator.post("/api/v1/evidence", json!({ "from": from, "to": to }))?;
    ensure!(s == 403, "operator export: {s}");
    let out_dir = tmp.path().join("bundles");
    std::fs::create_dir(&out_dir)?;
    let started = Instant::now();
    let out = cli(
        &d.url,
        &auditor_token,
        &[
            "evidence",
            "export",
            "--from",
            &from,
            "--to",
            &to,
            "--out",
            out_dir.to_str().context("path")?,
        ],
    )?;
    let text = ok(&out, "evidence export")?;
    let export_ms = started.elapsed().as_millis();
    let files: Vec<_> = std::fs::read_dir(&out_dir)?.collect::<Result<_, _>>()?;
    ensure!(files.len() == 1, "one bundle expected: {files:?}");
    let path = files[0].path();
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .context("name")?
        .to_owned();
    ensure!(
        name.starts_with("sakshi-evidence_") && name.contains("_all_") && name.ends_with(".tar.gz"),
        "{name}"
    );
    let bytes = std::fs::read(&path)?;
    eprintln!(
        "bundle {name}: {} bytes, exported in {export_ms} ms ({text})",
        bytes.len()
    );

    // Offline verification with the appliance key alone: signature, digests, audit chain,
    // checkpoints, proofs, the swtpm quote and its event-log replay.
    let key = appliance_key(&data)?;
    let report = verify(&bytes, &key);
    ensure!(
        report.problems.is_empty(),
        "problems: {:?}",
        report
            .problems
            .iter()
            .map(|p| p.to_string())
            .collect::<Vec<_>>()
    );
    ensure!(report.signature_ok && report.integrity.is_some() && report.quote.is_some());
    ensure!(report.entries_checked > 10, "{}", report.entries_checked);
    let first_anchor = report
        .manifest
        .as_ref()
        .context("manifest")?
        .audit
        .anchor_tree_size;
    ensure!(
        report
            .integrity
            .as_ref()
            .and_then(|i| i.consistent_from)
            .is_none(),
        "the first bundle has no predecessor"
    );

    // The next bundle proves the log consistent from the previous bundle's anchor checkpoint.
    let out_dir2 = tmp.path().join("bundles2");
    std::fs::create_dir(&out_dir2)?;
    let out = cli(
        &d.url,
        &auditor_token,
        &[
            "evidence",
            "export",
            "--from",
            &from,
            "--to",
            &to,
            "--out",
            out_dir2.to_str().context("path")?,
        ],
    )?;
    ok(&out, "second evidence export")?;
    let second = std::fs::read_dir(&out_dir2)?
        .next()
        .context("no second bundle")??
        .path();
    let report2 = verify(&std::fs::read(&second)?, &key);
    ensure!(report2.is_ok(), "second bundle: {:?}", report2.problems);
    let integrity2 = report2.integrity.as_ref().context("integrity")?;
    ensure!(
        integrity2.consistent_from == Some(first_anchor),
        "second bundle consistent from {:?}, first anchor {first_anchor}",
        integrity2.consistent_from
    );

    // Contents: the software-TPM statement, the ledger and the approved golden image.
    let files = members(&bytes)?;
    let get = |p: &str| -> Result<String> {
        Ok(String::from_utf8_lossy(
            &files
                .iter()
                .find(|(n, _)| n == p)
                .with_context(|| format!("{p} missing"))?
                .1,
        )
        .into_owned())
    };
    // Time-sync evidence is collected (and says so honestly when no daemon answers).
    let time_sync: Value = serde_json::from_str(&get("statements/time-sync.json")?)?;
    ensure!(
        time_sync["daemon"].is_string() && time_sync["synchronized"].is_boolean(),
        "{time_sync}"
    );
    let quote_meta: Value = serde_json::from_str(&get("attestation/quote/quote.json")?)?;
    ensure!(quote_meta["tpm_kind"] == "software", "{quote_meta}");
    ensure!(
        quote_meta["notice"] == "software TPM: no hardware root of trust",
        "{quote_meta}"
    );
    ensure!(get("patches/ledger.json")?.contains("CVE-2026-4242"));
    let retention: Value = serde_json::from_str(&get("statements/retention-and-location.json")?)?;
    ensure!(
        retention["retention"]["online_days"] == 92 && retention["retention"]["total_days"] == 366,
        "{retention}"
    );
    ensure!(
        retention["data_location"]["locations"][0]["country"] == "IN"
            && retention["data_location"]["declared_by"] == "Asha Rao, CISO",
        "{retention}"
    );
    ensure!(get("attestation/golden.json")?.contains(&kernel));
    let manifest: Value = serde_json::from_str(&get("manifest.json")?)?;
    ensure!(manifest["generated_by"] == "audra", "{manifest}");
    ensure!(
        name == format!(
            "sakshi-evidence_{}_all_{}.tar.gz",
            manifest["host"]["hostname"]
                .as_str()
                .unwrap_or("?")
                .replace(
                    |c: char| !c.is_ascii_alphanumeric() && c != '.' && c != '-',
                    "-"
                ),
            sakshi_reports::Period::new(
                chrono::DateTime::parse_from_rfc3339(&from)?.into(),
                chrono::DateTime::parse_from_rfc3339(&to)?.into()
            )?
            .file_stem()
        )
    );

    // One changed byte inside an audit entry: the verifier names the entry.
    let mut tampered = files.clone();
    let entries = tampered
        .iter_mut()
        .find(|(n, _)| n == "audit/entries.jsonl")
        .context("entries")?;
    let at = entries
        .1
        .windows(7)
        .position(|w| w == b"vm.boot")
        .context("a vm.boot entry")?;
    entries.1[at + 3] = b'B';
    let report = verify(&repack(&tampered)?, &key);
    let problems: Vec<String> = report.problems.iter().map(|p| p.to_string()).collect();
    ensure!(!problems.is_empty(), "a tampered entry verified");
    ensure!(
        problems
            .iter()
            .any(|p| p.contains("audit/entries.jsonl") || p.contains("entry #")),
        "{problems:?}"
    );
    // Changed bytes of the compressed file itself: each either fails verification or (rarely:
    // deflate can carry a bit, e.g. in an unused Huffman code length, that changes nothing)
    // decompresses to the very same archive, byte for byte.
    let gunzip = |gz: &[u8]| -> Option<Vec<u8>> {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(gz)
            .read_to_end(&mut out)
            .ok()?;
        Some(out)
    };
    let original = gunzip(&bytes).context("the bundle does not decompress")?;
    let mut detected = 0;
    for k in 1..=16 {
        let at = bytes.len() * k / 17;
        let mut raw = bytes.clone();
        raw[at] ^= 0x01;
        if !verify(&raw, &key).problems.is_empty() {
            detected += 1;
        } else {
            ensure!(
                gunzip(&raw).as_deref() == Some(original.as_slice()),
                "flipping byte {at} changed the archive and still verified"
            );
        }
    }
    eprintln!("flipped bytes detected: {detected} of 16");
    ensure!(
        detected >= 12,
        "only {detected} of 16 flipped bytes were detected"
    );

    // The printable report through the CLI.
    let report_path = tmp.path().join("pci.html");
    let out = cli(
        &d.url,
        &auditor_token,
        &[
            "report",
            "--framework",
            "pci-dss",
            "--from",
            &from,
            "--to",
            &to,
            "--out",
            report_path.to_str().context("path")?,
        ],
    )?;
    ok(&out, "report")?;
    let html = std::fs::read_to_string(&report_path)?;
    ensure!(
        html.contains("6.3.3") && html.contains("10.4.1.1"),
        "report lacks controls"
    );

    // Audited with actor and origin; the daily review ran and was audited.
    let export = wait_for(&admin, "the export", |e| {
        e["action"] == "evidence.export" && e["details"]["kind"] == "bundle"
    })?;
    ensure!(
        export["actor"] == "audra" && export["origin"] == "127.0.0.1",
        "{export}"
    );
    ensure!(export["target"] == format!("evidence:{name}"), "{export}");
    let patch = wait_for(&admin, "the patch", |e| e["action"] == "patch.record")?;
    ensure!(
        patch["actor"] == "oscar" && patch["origin"] == "127.0.0.1",
        "{patch}"
    );
    wait_for(&admin, "the approval", |e| {
        e["action"] == "image.approve" && e["target"] == format!("image:{kernel}")
    })?;
    wait_for(&admin, "the report", |e| {
        e["action"] == "evidence.export" && e["details"]["kind"] == "report"
    })?;
    let review = wait_for(&admin, "the daily review", |e| {
        e["action"] == "audit.verify" && e["details"]["review"] == "daily"
    })?;
    ensure!(review["actor"] == "review", "{review}");
    let day = (chrono::Utc::now() - chrono::Duration::days(1)).date_naive();
    ensure!(data.join("reviews").join(format!("{day}.html")).is_file());

    d.stop()
}
