//! End to end: `sakshi serve` with real KVM, a real swtpm, real SQLite files, driven over HTTP.

mod common;

use anyhow::{Context, Result, ensure};
use common::{Client, Daemon, vmm_pids_for, write_config};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

fn actions(entries: &[Value]) -> Vec<String> {
    entries
        .iter()
        .map(|e| e["action"].as_str().unwrap_or("").to_owned())
        .collect()
}

/// The first start creates the admin and boots the measured demo VM; VMs run through their
/// lifecycle over the API, every step audited; a restart finds VMs whose VMM died (or outlived
/// the daemon) and marks them failed, audited; the log verifies offline.
#[test]
fn kvm_swtpm_serve_lifecycle_restart_recovery_and_audit() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let cfg = write_config(
        &data,
        "",
        "[demo]\ncmdline = \"console=ttyS0 marker=demo\"\n",
    )?;
    let d = Daemon::start(&cfg)?;
    let password = d
        .admin_password
        .clone()
        .context("no initial admin password printed")?;
    let demo = d.demo_id.clone().context("demo VM not booted")?;
    let mut c = Client::new(&d.url);

    // Anonymous callers get a problem document.
    let (s, p) = c.get("/api/v1/vms")?;
    ensure!(s == 401 && p["status"] == 401, "anonymous: {s} {p}");
    let (s, _) = c.post(
        "/api/v1/auth/token",
        json!({"username": "admin", "password": "wrong password!", "name": "x"}),
    )?;
    ensure!(s == 401);
    c.login("admin", &password)?;

    // The demo VM booted the test guest, measured into the TPM, then powered off.
    let v = c.wait_vm(&demo, "stopped", |v| v["state"] == "stopped")?;
    ensure!(v["boot_latency_us"].as_u64().unwrap_or(0) > 0, "{v}");
    ensure!(v["exit_reason"] == "poweroff", "{v}");
    let m = v["measurements"].as_array().context("measurements")?;
    ensure!(
        m.iter().any(|m| m["what"] == "kernel" && m["pcr"].is_u64()),
        "{v}"
    );
    let (_, o) = c.get("/api/v1/overview")?;
    ensure!(
        o["host"]["tpm_kind"]
            .as_str()
            .unwrap_or("")
            .contains("software TPM"),
        "{o}"
    );

    // The CLI fetches a TPM quote over the API; it verifies offline and covers the demo boot.
    let nonce = "5a6b5368690a";
    let quote_dir = tmp.path().join("quote");
    let out = std::process::Command::new(common::sakshi_bin())
        .args(["attest", "quote", "--nonce", nonce, "--out"])
        .arg(&quote_dir)
        .env("SAKSHI_URL", &d.url)
        .env("SAKSHI_TOKEN", c.token.clone().context("token")?)
        .output()?;
    ensure!(
        out.status.success(),
        "attest quote: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let golden = sakshi_attest::Policy::default();
    let nonce_bytes = hex::decode(nonce)?;
    let report = sakshi_attest::verify_dir(
        &quote_dir,
        &sakshi_attest::VerifyOptions::new(&nonce_bytes, &golden),
    )?;
    ensure!(report.tpm_kind.is_software(), "{report:?}");
    ensure!(
        report.vm_boots.iter().any(|b| b.vm_id == demo),
        "{report:?}"
    );
    let quotes: Vec<Value> = c
        .audit_all()?
        .into_iter()
        .filter(|e| e["action"] == "attest.quote")
        .collect();
    ensure!(
        quotes.len() == 1 && quotes[0]["actor"] == "admin" && quotes[0]["outcome"] == "success",
        "{quotes:?}"
    );

    // Upload the test guest, create spinning VMs, drive them.
    let guest = std::fs::read(sakshi_host::test_guest::test_guest_path())?;
    let (s, img) = c.post_bytes("/api/v1/images?name=guest&kind=kernel", &guest)?;
    ensure!(s == 200 || s == 201, "{s} {img}");
    let sha = img["sha256"].as_str().context("sha")?.to_owned();
    ensure!(sha == hex::encode(Sha256::digest(&guest)));
    let (s, bad) = c.post(
        "/api/v1/vms",
        json!({"name": "x", "kernel_sha256": sha, "memory_mib": 1}),
    )?;
    ensure!(
        s == 422 && bad["errors"][0]["field"] == "memory_mib",
        "{s} {bad}"
    );

    let mut ids = Vec::new();
    for name in ["spin-a", "spin-b", "spin-c"] {
        let (s, v) = c.post(
            "/api/v1/vms",
            json!({"name": name, "kernel_sha256": sha, "cmdline": "console=ttyS0 run=spin", "memory_mib": 32, "start": true}),
        )?;
        ensure!(s == 201, "{s} {v}");
        ids.push(v["id"].as_str().context("id")?.to_owned());
    }
    let a = ids[0].clone();
    c.wait_vm(&a, "running", |v| v["state"] == "running")?;
    let (s, v) = c.post_empty(&format!("/api/v1/vms/{a}/pause"))?;
    ensure!(s == 200 && v["state"] == "paused", "{s} {v}");
    let (s, v) = c.post_empty(&format!("/api/v1/vms/{a}/pause"))?;
    ensure!(s == 409, "pausing a paused VM: {s} {v}");
    let (s, v) = c.post_empty(&format!("/api/v1/vms/{a}/resume"))?;
    ensure!(s == 200 && v["state"] == "running", "{s} {v}");
    let (_, con) = c.get(&format!("/api/v1/vms/{a}/console"))?;
    ensure!(
        con["text"].as_str().unwrap_or("").contains("run: spin"),
        "{con}"
    );
    let (s, v) = c.post_empty(&format!("/api/v1/vms/{a}/stop"))?;
    ensure!(s == 200 && v["state"] == "stopped", "{s} {v}");
    let (s, _) = c.delete(&format!("/api/v1/vms/{a}"))?;
    ensure!(s == 204);
    ensure!(vmm_pids_for(&a).is_empty());

    // Leave the other two running across a daemon restart; one VMM dies while it is down.
    for id in &ids[1..] {
        c.wait_vm(id, "running", |v| v["state"] == "running")?;
    }
    let entries = c.audit_all()?;
    let acts = actions(&entries);
    for want in [
        "appliance.start",
        "user.create",
        "vm.create",
        "vm.boot",
        "vm.running",
        "vm.stop",
        "auth.login.failure",
        "auth.login.success",
        "token.create",
        "image.register",
        "vm.pause",
        "vm.resume",
        "vm.destroy",
        "auth.denied",
    ] {
        ensure!(
            acts.iter().any(|a| a == want),
            "no {want} entry in {acts:?}"
        );
    }
    let start = entries
        .iter()
        .find(|e| e["action"] == "appliance.start")
        .context("start")?;
    let bin_sha = hex::encode(Sha256::digest(std::fs::read(common::sakshi_bin())?));
    ensure!(
        start["details"]["binary_sha256"] == bin_sha.as_str(),
        "{start}"
    );
    ensure!(start["details"]["version"] == env!("CARGO_PKG_VERSION"));
    let boot = entries
        .iter()
        .find(|e| e["action"] == "vm.boot" && e["target"] == format!("vm:{}", ids[1]))
        .context("vm.boot entry")?;
    let measured = boot["details"]["measurements"]
        .as_array()
        .context("measurements")?;
    ensure!(
        measured
            .iter()
            .any(|m| m["what"] == "kernel" && m["sha256"] == sha.as_str() && m["pcr"].is_u64()),
        "vm.boot carries the measured digests: {boot}"
    );
    let pause = entries
        .iter()
        .find(|e| e["action"] == "vm.pause")
        .context("pause")?;
    ensure!(
        pause["actor"] == "admin"
            && pause["origin"] == "127.0.0.1"
            && pause["target"] == format!("vm:{a}"),
        "{pause}"
    );
    d.stop()?;
    // Default on_shutdown = stop: nothing is left running.
    for id in &ids[1..] {
        ensure!(
            vmm_pids_for(id).is_empty(),
            "VMM of {id} survived a stop-mode shutdown"
        );
    }

    // Second run with on_shutdown = leave.
    let cfg = write_config(
        &data,
        "on_shutdown = \"leave\"",
        "[demo]\nenabled = false\n",
    )?;
    let d = Daemon::start(&cfg)?;
    ensure!(d.admin_password.is_none(), "the admin is created only once");
    let mut c = Client::new(&d.url);
    c.login("admin", &password)?;
    let mut left = Vec::new();
    for name in ["left-a", "left-b"] {
        let (s, v) = c.post(
            "/api/v1/vms",
            json!({"name": name, "kernel_sha256": sha, "cmdline": "run=spin", "memory_mib": 32, "start": true}),
        )?;
        ensure!(s == 201, "{s} {v}");
        let id = v["id"].as_str().context("id")?.to_owned();
        c.wait_vm(&id, "running", |v| v["state"] == "running")?;
        left.push(id);
    }
    d.stop()?;
    ensure!(
        !vmm_pids_for(&left[0]).is_empty() && !vmm_pids_for(&left[1]).is_empty(),
        "leave mode left the VMMs running"
    );
    for pid in vmm_pids_for(&left[0]) {
        let _ = rustix::process::kill_process(
            rustix::process::Pid::from_raw(pid).context("pid")?,
            rustix::process::Signal::KILL,
        );
    }
    std::thread::sleep(std::time::Duration::from_millis(300));

    let d = Daemon::start(&cfg)?;
    let mut c = Client::new(&d.url);
    c.login("admin", &password)?;
    let dead = c.wait_vm(&left[0], "failed", |v| v["state"] == "failed")?;
    ensure!(
        dead["exit_reason"]
            .as_str()
            .unwrap_or("")
            .contains("died while the daemon was down"),
        "{dead}"
    );
    let orphan = c.wait_vm(&left[1], "failed", |v| v["state"] == "failed")?;
    ensure!(
        orphan["exit_reason"]
            .as_str()
            .unwrap_or("")
            .contains("cannot be adopted"),
        "{orphan}"
    );
    ensure!(
        vmm_pids_for(&left[1]).is_empty(),
        "the orphaned VMM was killed"
    );
    let entries = c.audit_all()?;
    let failed: Vec<&Value> = entries
        .iter()
        .filter(|e| e["action"] == "vm.failed")
        .collect();
    ensure!(
        failed
            .iter()
            .any(|e| e["target"] == format!("vm:{}", left[0]) && e["actor"] == "sakshi"),
        "{failed:?}"
    );
    ensure!(
        failed
            .iter()
            .any(|e| e["target"] == format!("vm:{}", left[1])),
        "{failed:?}"
    );
    let stops = entries
        .iter()
        .filter(|e| e["action"] == "appliance.stop")
        .count();
    ensure!(stops == 2, "two clean stops recorded, found {stops}");
    let (s, v) = c.post_empty("/api/v1/audit/verify")?;
    ensure!(s == 200 && v["ok"] == true, "{s} {v}");
    d.stop()?;

    // Offline verification of the same database with the CLI.
    let out = std::process::Command::new(common::sakshi_bin())
        .args(["audit", "verify", "--json", "--db"])
        .arg(data.join("audit.sqlite"))
        .output()?;
    let report: Value = serde_json::from_slice(&out.stdout).context("verify --json output")?;
    ensure!(out.status.success() && report["ok"] == true, "{report}");
    ensure!(report["entries_checked"].as_u64().unwrap_or(0) as usize >= entries.len());
    Ok(())
}

/// With an `[otlp]` table the daemon starts the audit shipper and serves `/metrics` (here to
/// loopback callers without a token); the append hook counts every audit append. The receiver is
/// unreachable, so exports fail and are counted, and shutdown still completes.
#[test]
fn kvm_swtpm_serve_with_otlp_serves_metrics() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let extra = format!(
        "[demo]\nenabled = false\n[otlp]\nendpoint = \"http://127.0.0.1:9\"\ncursor_path = \"{}\"\nprometheus = \"loopback\"\nretry_initial_ms = 50\nretry_max_ms = 200\ntimeout_ms = 1000\n",
        tmp.path().join("otlp.cursor").display()
    );
    let cfg = write_config(&data, "", &extra)?;
    let d = Daemon::start(&cfg)?;
    let c = Client::new(&d.url);
    let (s, v) = c.get("/metrics")?;
    ensure!(s == 200, "{s} {v}");
    let text = v.as_str().context("metrics text")?;
    let appends = text
        .lines()
        .find_map(|l| l.strip_prefix("sakshi_audit_appends_total "))
        .context("no sakshi_audit_appends_total")?
        .trim()
        .parse::<u64>()?;
    // appliance.start and the initial admin's user.create at least.
    ensure!(appends >= 2, "{text}");
    ensure!(text.contains("sakshi_otlp_export_failures_total"), "{text}");
    // Everything else still needs a token.
    let (s, _) = c.get("/api/v1/vms")?;
    ensure!(s == 401);
    d.stop()?;
    Ok(())
}

/// The default demo VM runs the test guest with `run=idle`: it stays up (halted between timer
/// ticks) instead of powering off after boot, and the daemon's shutdown stops it.
#[test]
fn kvm_swtpm_serve_default_demo_vm_stays_running() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let data = tmp.path().join("data");
    let cfg = write_config(&data, "", "")?;
    let d = Daemon::start(&cfg)?;
    let demo = d.demo_id.clone().context("demo VM not booted")?;
    let mut c = Client::new(&d.url);
    c.login(
        "admin",
        d.admin_password.as_deref().context("no admin password")?,
    )?;
    c.wait_vm(&demo, "running", |v| v["state"] == "running")?;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let console = loop {
        let (_, con) = c.get(&format!("/api/v1/vms/{demo}/console"))?;
        let text = con["text"].as_str().unwrap_or("").to_owned();
        if text.contains("run: idle\n") || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    ensure!(console.contains("run: idle\n"), "{console}");
    ensure!(!console.contains("exit: halt"), "{console}");
    let (_, v) = c.get(&format!("/api/v1/vms/{demo}"))?;
    ensure!(v["state"] == "running", "{v}");
    ensure!(!vmm_pids_for(&demo).is_empty(), "no VMM runs the demo VM");
    d.stop()?;
    ensure!(
        vmm_pids_for(&demo).is_empty(),
        "the demo VM outlived the daemon"
    );
    Ok(())
}
