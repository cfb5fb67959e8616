//! End to end: the real `sakshi serve` (real KVM, real swtpm, real SQLite) with an `[otlp]` table
//! pointing at the real OTLP receiver (tests/otlp/receiver.py). A VM created over the API boots the
//! test guest; the receiver must get the audit entries, the request and VM lifecycle spans, the
//! guest's console lines in the VM's trace, and metrics, all with the appliance's resource.

mod common;
mod otlp_support;

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{Client, Daemon, write_config};
use otlp_support::Receiver;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

/// The trace and parent span of the caller's `traceparent` on the create request.
const TRACE: &str = "5a6b5368690a4f544c50736572766531";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn spans<'a>(lines: &'a [Value], name: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["signal"] == "span" && l["name"] == name)
        .collect()
}

fn console_of<'a>(lines: &'a [Value], vm: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|l| l["scope"] == "sakshi.console" && l["attributes"]["sakshi.vm.id"] == vm)
        .collect()
}

#[test]
fn otlp_kvm_swtpm_serve_exports_audit_spans_console_and_metrics() -> Result<()> {
    let tmp = tempfile::tempdir()?;
    let receiver = Receiver::start(&tmp.path().join("rx.jsonl"), &[])?;
    let data = tmp.path().join("data");
    let extra = format!(
        "[demo]\nenabled = false\n[otlp]\nendpoint = \"{}\"\nprotocol = \"grpc\"\ncursor_path = \"{}\"\n\
         prometheus = \"loopback\"\npoll_interval_ms = 50\nmetrics_interval_ms = 500\n\
         failure_threshold_secs = 2\nretry_initial_ms = 50\nretry_max_ms = 200\ntimeout_ms = 1000\n\
         host_id = \"otlp-e2e-host\"\nhost_name = \"otlp-e2e\"\n",
        receiver.grpc_endpoint(),
        tmp.path().join("otlp.cursor").display()
    );
    let cfg = write_config(&data, "", &extra)?;
    let d = Daemon::start(&cfg)?;
    let password = d.admin_password.clone().context("no admin password")?;
    let mut c = Client::new(&d.url);
    c.login("admin", &password)?;
    let token = c.token.clone().context("token")?;

    let guest = std::fs::read(sakshi_host::test_guest::test_guest_path())?;
    let (s, img) = c.post_bytes("/api/v1/images?name=guest&kind=kernel", &guest)?;
    ensure!(s == 200 || s == 201, "{s} {img}");
    let sha = img["sha256"].as_str().context("sha")?.to_owned();

    // Create and start, continuing the caller's trace (W3C traceparent).
    let agent = ureq::Agent::new_with_config(
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build(),
    );
    let mut r = agent
        .post(format!("{}/api/v1/vms", d.url))
        .header("Authorization", &format!("Bearer {token}"))
        .header("traceparent", &format!("00-{TRACE}-{CALLER_SPAN}-01"))
        .send_json(
            json!({"name": "traced", "kernel_sha256": sha, "cmdline": "console=ttyS0",
                          "memory_mib": 32, "start": true}),
        )?;
    let status = r.status().as_u16();
    let vm: Value = serde_json::from_str(&r.body_mut().read_to_string()?)?;
    ensure!(status == 201 || status == 200, "{status} {vm}");
    let id = vm["id"].as_str().context("vm id")?.to_owned();
    ensure!(
        vm["trace_id"] == TRACE,
        "the VM adopts the request's trace: {vm}"
    );
    let v = c.wait_vm(&id, "stopped", |v| v["state"] == "stopped")?;
    ensure!(v["exit_reason"] == "poweroff", "{v}");

    // Everything arrives: audit entries (vm.running is appended by the supervisor pump after the
    // boot), the four spans, the guest's console up to its `trace:` echo, and the boot histogram.
    let lines = receiver.wait_for("audit, spans, console and metrics", WAIT, |l| {
        let audit_running = l.iter().any(|x| {
            x["scope"] == "sakshi.audit"
                && x["event_name"] == "vm.running"
                && x["attributes"]["sakshi.target"] == format!("vm:{id}")
        });
        let lifecycle = [
            "POST /api/v1/vms",
            "vm.lifecycle",
            "vm.measure",
            "vm.boot",
            "vm.stopped",
        ]
        .iter()
        .all(|n| !spans(l, n).is_empty());
        let echoed = console_of(l, &id)
            .iter()
            .any(|x| x["attributes"].get("sakshi.guest.trace_id").is_some());
        let booted = l.iter().any(|x| {
            x["signal"] == "metric"
                && x["name"] == "sakshi.vm.boot.duration"
                && x["points"][0]["count"].as_u64().unwrap_or(0) >= 1
        });
        audit_running && lifecycle && echoed && booted
    })?;

    // Every signal carries the appliance's resource.
    for l in &lines {
        ensure!(l["resource"]["service.name"] == "sakshi", "{l}");
        ensure!(l["resource"]["host.id"] == "otlp-e2e-host", "{l}");
    }

    // Audit entries: the create, in the request's trace, with seq and a stable uid.
    let audit: Vec<&Value> = lines
        .iter()
        .filter(|l| l["scope"] == "sakshi.audit")
        .collect();
    let create = audit
        .iter()
        .find(|l| {
            l["event_name"] == "vm.create" && l["attributes"]["sakshi.target"] == format!("vm:{id}")
        })
        .context("no vm.create record")?;
    ensure!(create["trace_id"] == TRACE, "{create}");
    let seq = create["attributes"]["sakshi.audit.seq"]
        .as_u64()
        .context("sakshi.audit.seq")?;
    let uid = create["attributes"]["log.record.uid"]
        .as_str()
        .context("log.record.uid")?;
    ensure!(uid.ends_with(&format!("/{seq}")), "{uid} vs seq {seq}");
    ensure!(
        audit.iter().any(|l| l["event_name"] == "appliance.start"),
        "appliance.start shipped"
    );

    // Spans: the request continues the caller's trace; the VM lifecycle is its child; measure
    // and boot are the lifecycle's children; all in the VM's trace.
    let req = spans(&lines, "POST /api/v1/vms")
        .into_iter()
        .find(|s| s["trace_id"] == TRACE)
        .context("no request span in the caller's trace")?;
    ensure!(req["parent_span_id"] == CALLER_SPAN, "{req}");
    ensure!(req["kind"] == 2, "SPAN_KIND_SERVER: {req}");
    ensure!(req["attributes"]["http.route"] == "/api/v1/vms", "{req}");
    ensure!(
        req["attributes"]["http.response.status_code"] == status,
        "{req}"
    );
    let lifecycle = spans(&lines, "vm.lifecycle")
        .into_iter()
        .find(|s| s["attributes"]["sakshi.vm.id"] == id.as_str())
        .context("no lifecycle span")?;
    ensure!(lifecycle["trace_id"] == TRACE, "{lifecycle}");
    ensure!(lifecycle["parent_span_id"] == req["span_id"], "{lifecycle}");
    for child in ["vm.measure", "vm.boot"] {
        let s = spans(&lines, child)
            .into_iter()
            .find(|s| s["attributes"]["sakshi.vm.id"] == id.as_str())
            .with_context(|| format!("no {child} span"))?;
        ensure!(s["trace_id"] == TRACE, "{s}");
        ensure!(s["parent_span_id"] == lifecycle["span_id"], "{s}");
    }
    // The guest powered off: a `vm.stopped` span in the same trace, with the reason.
    let stopped = spans(&lines, "vm.stopped")
        .into_iter()
        .find(|s| s["attributes"]["sakshi.vm.id"] == id.as_str())
        .context("no vm.stopped span")?;
    ensure!(stopped["trace_id"] == TRACE, "{stopped}");
    ensure!(
        stopped["attributes"]["sakshi.vm.reason"] == "poweroff",
        "{stopped}"
    );
    // Request spans are named by route template, never by raw path.
    let start_like: Vec<&Value> = lines
        .iter()
        .filter(|l| l["signal"] == "span" && l["kind"] == 2)
        .collect();
    ensure!(
        start_like
            .iter()
            .all(|s| !s["name"].as_str().unwrap_or("").contains(&id)),
        "a span name carries a VM id"
    );
    ensure!(
        spans(&lines, "GET /api/v1/vms/{id}")
            .iter()
            .any(|s| s["attributes"]["http.response.status_code"] == 200),
        "the polls of the VM are traced under their template"
    );

    // Guest console: the lines in the VM's trace, and the guest echoed that same trace id.
    let console = console_of(&lines, &id);
    ensure!(
        console.iter().any(|l| l["body"]
            .as_str()
            .unwrap_or("")
            .starts_with("SAKSHI-TEST-GUEST v1")),
        "{console:?}"
    );
    ensure!(
        console.iter().all(|l| l["trace_id"] == TRACE),
        "{console:?}"
    );
    let echo = console
        .iter()
        .find(|l| l["attributes"].get("sakshi.guest.trace_id").is_some())
        .context("no trace echo")?;
    ensure!(
        echo["attributes"]["sakshi.guest.trace_id"] == TRACE,
        "{echo}"
    );
    ensure!(echo["trace_id"] == lifecycle["trace_id"], "{echo}");

    // Prometheus text (loopback access) has the boot latency histogram with this boot in it.
    let anon = Client::new(&d.url);
    let (s, text) = anon.get("/metrics")?;
    ensure!(s == 200, "{s} {text}");
    let text = text.as_str().context("metrics text")?;
    ensure!(
        text.contains("# TYPE sakshi_vm_boot_latency_seconds histogram"),
        "{text}"
    );
    let count = |name: &str| -> Result<u64> {
        Ok(text
            .lines()
            .find_map(|l| l.strip_prefix(&format!("{name} ")))
            .with_context(|| format!("no {name}"))?
            .trim()
            .parse()?)
    };
    ensure!(
        count("sakshi_vm_boot_latency_seconds_count")? >= 1,
        "{text}"
    );
    ensure!(
        count("sakshi_vm_measured_boot_latency_seconds_count")? >= 1,
        "{text}"
    );
    ensure!(text.contains("sakshi_vms{state=\"stopped\"} 1"), "{text}");

    // The overview shows SIEM delivery as healthy.
    let (s, o) = c.get("/api/v1/overview")?;
    ensure!(s == 200 && o["siem"]["state"] == "healthy", "{s} {o}");

    // The receiver dies: new audit entries cannot be shipped, and after the threshold the
    // PCI-DSS 10.7 logging-failure state shows on the overview (API and dashboard page).
    let mut receiver = receiver;
    receiver.kill();
    let deadline = std::time::Instant::now() + WAIT;
    let failing = loop {
        // Each read is audited (audit.read), so there is always something to ship.
        c.get("/api/v1/audit/entries?limit=1")?;
        let (_, o) = c.get("/api/v1/overview")?;
        if o["siem"]["state"] == "logging_failure" {
            break o;
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "no logging failure: {o}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let siem = &failing["siem"];
    ensure!(
        siem["failing_since_unix_ms"].as_u64().unwrap_or(0) > 0,
        "{siem}"
    );
    ensure!(
        siem["consecutive_failures"].as_u64().unwrap_or(0) >= 1,
        "{siem}"
    );
    ensure!(siem["pending"].as_u64().unwrap_or(0) >= 1, "{siem}");
    let (s, page) = c.get("/")?;
    let page = page.as_str().unwrap_or_default();
    ensure!(
        s == 200 && page.contains("LOGGING FAILURE (PCI-DSS 10.7)") && page.contains("siem-since"),
        "{s} {page}"
    );

    // An evidence bundle exported now states the backlog: the receiver (no credentials), what
    // it acknowledged, and entries still waiting.
    let bundles = tempfile::tempdir()?;
    let out = std::process::Command::new(common::sakshi_bin())
        .args(["evidence", "export", "--from"])
        .arg((chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339())
        .arg("--to")
        .arg((chrono::Utc::now() + chrono::Duration::minutes(5)).to_rfc3339())
        .arg("--out")
        .arg(bundles.path())
        .env("SAKSHI_URL", &d.url)
        .env("SAKSHI_TOKEN", c.token.clone().context("token")?)
        .output()?;
    ensure!(
        out.status.success(),
        "evidence export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bundle = std::fs::read_dir(bundles.path())?
        .next()
        .context("no bundle")??
        .path();
    let mut archive =
        tar::Archive::new(flate2::read::GzDecoder::new(std::fs::File::open(&bundle)?));
    let mut statement = None;
    for member in archive.entries()? {
        let mut member = member?;
        if member.path()?.to_str() == Some("statements/siem-delivery.json") {
            let mut text = String::new();
            std::io::Read::read_to_string(&mut member, &mut text)?;
            statement = Some(serde_json::from_str::<Value>(&text)?);
        }
    }
    let statement = statement.context("no statements/siem-delivery.json in the bundle")?;
    ensure!(
        statement["endpoint"]
            .as_str()
            .is_some_and(|e| e.starts_with("http://127.0.0.1:")),
        "{statement}"
    );
    ensure!(
        statement["log_size"].as_u64() > statement["acked_size"].as_u64()
            && statement["oldest_unacked"].is_string(),
        "{statement}"
    );

    // The receiver returns: the backlog ships, including the audited alarm and recovery.
    receiver.restart()?;
    wait_siem_healthy(&c)?;
    let delivery = |l: &Value, event: &str| {
        l["event_name"] == "siem.delivery" && l["attributes"]["sakshi.details"]["event"] == event
    };
    let lines = receiver.wait_for("the audited alarm and recovery", WAIT, |l| {
        ["alarm_raised", "recovered"]
            .iter()
            .all(|e| l.iter().any(|x| delivery(x, e)))
    })?;
    let alarm = lines
        .iter()
        .find(|l| delivery(l, "alarm_raised"))
        .context("alarm record")?;
    ensure!(
        alarm["attributes"]["sakshi.details"]["control"] == "PCI-DSS 10.7",
        "{alarm}"
    );
    d.stop()?;
    Ok(())
}

/// Polls the overview until SIEM delivery is healthy with nothing pending.
fn wait_siem_healthy(c: &Client) -> Result<()> {
    let deadline = std::time::Instant::now() + WAIT;
    loop {
        let (_, o) = c.get("/api/v1/overview")?;
        if o["siem"]["state"] == "healthy" && o["siem"]["pending"] == 0 {
            return Ok(());
        }
        ensure!(
            std::time::Instant::now() < deadline,
            "SIEM delivery did not recover: {o}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}
