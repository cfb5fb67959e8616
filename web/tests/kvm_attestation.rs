//! End to end: the attestation page of a running `sakshi serve` (real KVM, real swtpm): the
//! measured demo boot, the PCR, the AK, a quote taken and verified on the spot (boots appraised,
//! audit checkpoints cross-checked against the audit log), the event log downloads that
//! `tpm2_eventlog` replays to the same PCR value, and the audit entry the quote leaves.

mod common;

use anyhow::{Context, Result, ensure};
use common::{Client, Daemon, write_config};
use std::time::Duration;

fn agent() -> ureq::Agent {
    ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build(),
    )
}

/// The value in the element after `marker` (up to the next `<`).
fn text_after<'a>(html: &'a str, marker: &str) -> Option<&'a str> {
    let rest = &html[html.find(marker)? + marker.len()..];
    let start = rest.find('>')? + 1;
    let end = rest[start..].find('<')?;
    Some(rest[start..start + end].trim())
}

/// `(bank, pcr) -> lowercase hex` from `tpm2_eventlog`'s replay of a binary log.
fn eventlog_pcr(path: &std::path::Path, pcr: u32) -> Result<String> {
    let out = std::process::Command::new("tpm2_eventlog")
        .arg(path)
        .output()
        .context("run tpm2_eventlog")?;
    ensure!(
        out.status.success(),
        "tpm2_eventlog failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout)?;
    let (mut in_pcrs, mut bank) = (false, String::new());
    for line in text.lines() {
        if line.starts_with("pcrs:") {
            in_pcrs = true;
            continue;
        }
        let t = line.trim();
        if !in_pcrs || t.is_empty() {
            continue;
        }
        if let Some(b) = t.strip_suffix(':') {
            bank = b.to_owned();
        } else if let Some((idx, val)) = t.split_once(':')
            && bank == "sha256"
            && idx.trim().parse::<u32>().ok() == Some(pcr)
        {
            return Ok(val.trim().trim_start_matches("0x").to_lowercase());
        }
    }
    anyhow::bail!("tpm2_eventlog printed no sha256 PCR {pcr}:\n{text}")
}

#[test]
fn kvm_swtpm_attestation_page_quotes_verifies_and_exports_the_log() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    // Frequent checkpoints, so the quoted log binds several of them.
    let cfg = write_config(&data, "", "[audit]\ncheckpoint_every = 2\n")?;
    let d = Daemon::start(&cfg)?;
    let password = d.admin_password.clone().context("no admin password")?;
    let demo = d.demo_id.clone().context("demo VM not booted")?;
    let mut c = Client::new(&d.url);
    c.login("admin", &password)?;
    let token = c.token.clone().context("token")?;
    c.wait_vm(&demo, "booted", |v| v["boot_latency_us"].as_u64().is_some())?;
    let bearer = format!("Bearer {token}");
    let http = agent();

    // The page: software TPM notice, PCR, AK, the demo boot measured and approved.
    let mut r = http
        .get(format!("{}/attestation", d.url))
        .header("Authorization", &bearer)
        .call()?;
    ensure!(r.status() == 200, "GET /attestation: {}", r.status());
    let page = r.body_mut().read_to_string()?;
    ensure!(
        page.contains("software TPM: no hardware root of trust"),
        "{page}"
    );
    ensure!(page.contains("BEGIN PUBLIC KEY"), "AK PEM missing");
    ensure!(page.contains(&demo), "demo VM missing from the page");
    let pcr: u32 = text_after(&page, "id=\"pcr-index\"")
        .context("PCR index")?
        .parse()?;
    ensure!(
        page.contains("approved</span>") || page.contains(">approved<"),
        "demo kernel not shown as approved"
    );

    // Quote and verify now.
    let mut r = http
        .post(format!("{}/attestation/verify", d.url))
        .header("Authorization", &bearer)
        .header("Content-Type", "application/x-www-form-urlencoded")
        .send("csrf=-")?;
    ensure!(
        r.status() == 200,
        "POST /attestation/verify: {}",
        r.status()
    );
    let result = r.body_mut().read_to_string()?;
    let verdict = text_after(&result, "id=\"verify-result\"").context("no verdict")?;
    ensure!(verdict.starts_with("Verified:"), "verdict: {verdict}");
    ensure!(
        result.contains("matches the audit log"),
        "no checkpoint cross-checked against the audit log"
    );
    ensure!(
        !result.contains("DIFFERS from the audit log") && !result.contains("NOT in the audit log"),
        "a bound checkpoint disagrees with the audit log"
    );
    ensure!(
        result.contains(&demo),
        "the demo boot is not in the verified log"
    );
    ensure!(
        result.contains("approved (demo"),
        "demo kernel not appraised as approved"
    );

    // The binary log replays (with tpm2-tools) to the PCR value the page shows.
    let shown = result
        .split("data-bank=\"sha256\">")
        .nth(1)
        .and_then(|s| s.split('<').next())
        .context("PCR value on the page")?
        .to_owned();
    let mut r = http
        .get(format!("{}/attestation/eventlog?format=tcg2", d.url))
        .header("Authorization", &bearer)
        .call()?;
    ensure!(r.status() == 200);
    let bin = r.body_mut().read_to_vec()?;
    let bin_path = tmp.path().join("eventlog.bin");
    std::fs::write(&bin_path, &bin)?;
    let replayed = eventlog_pcr(&bin_path, pcr)?;
    // The CEL-JSON log, fetched after the binary one, extends it (checkpoints keep arriving):
    // tpm2_eventlog's replay must equal the replay of some prefix of it, and so must the value
    // the page showed when it verified the quote.
    let mut r = http
        .get(format!("{}/attestation/eventlog?format=cel-json", d.url))
        .header("Authorization", &bearer)
        .call()?;
    ensure!(r.status() == 200);
    let cel = sakshi_attest::EventLog::from_cel_json(r.body_mut().read_to_string()?.as_bytes())?;
    let prefixes: Vec<String> = (0..=cel.len())
        .filter_map(|n| cel.replay_prefix(pcr, sakshi_attest::HashAlg::Sha256, n))
        .map(hex::encode)
        .collect();
    ensure!(
        prefixes.contains(&replayed),
        "tpm2_eventlog's replay {replayed} is no prefix of the CEL log"
    );
    ensure!(
        prefixes.contains(&shown),
        "the quoted PCR value {shown} is no prefix of the CEL log"
    );

    // Unknown formats are a 422 naming the field; the AK download is the PEM.
    let r = http
        .get(format!("{}/attestation/eventlog?format=yaml", d.url))
        .header("Authorization", &bearer)
        .call()?;
    ensure!(r.status() == 422, "bad format: {}", r.status());
    let mut r = http
        .get(format!("{}/attestation/ak.pem", d.url))
        .header("Authorization", &bearer)
        .call()?;
    ensure!(r.status() == 200);
    ensure!(
        r.body_mut()
            .read_to_string()?
            .starts_with("-----BEGIN PUBLIC KEY-----")
    );

    // The quote is audited with its verdict.
    let entries = c.audit_all()?;
    let quote = entries
        .iter()
        .rev()
        .find(|e| e["action"] == "attest.quote")
        .context("no attest.quote entry")?;
    ensure!(quote["outcome"] == "success", "{quote}");
    ensure!(quote["details"]["verified"] == true, "{quote}");
    ensure!(
        quote["actor"].as_str().unwrap_or("").contains("admin"),
        "{quote}"
    );
    d.stop()
}
