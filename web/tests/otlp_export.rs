//! End-to-end OTLP export against a real receiver process (tests/otlp/receiver.py: grpcio + the official
//! opentelemetry-proto package) on loopback, over gRPC and HTTP/protobuf.

mod otlp_support;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Result, ensure};
use otlp_support::{Audit, Receiver, seqs};
use sakshi_audit::{Action, Actor, AuthMethod, NewEntry, Origin, Outcome, Target};
use sakshi_web::otlp::AuditSource;
use sakshi_web::otlp::{
    Cursor, DeliveryState, Metrics, OtlpConfig, Protocol, Secret, Shipper, Telemetry, TraceId,
    VmPhase,
};

const WAIT: Duration = Duration::from_secs(60);

fn config(endpoint: String, protocol: Protocol, dir: &std::path::Path) -> OtlpConfig {
    let mut c = OtlpConfig::new(endpoint, protocol, dir.join("otlp.cursor"));
    c.poll_interval_ms = 20;
    c.retry_initial_ms = 20;
    c.retry_max_ms = 200;
    c.timeout_ms = 2_000;
    c.host_id = Some("test-host-id".into());
    c.host_name = Some("test-appliance".into());
    c
}

fn endpoint(r: &Receiver, p: Protocol) -> String {
    match p {
        Protocol::Grpc => r.grpc_endpoint(),
        Protocol::HttpProtobuf => r.http_endpoint(),
    }
}

async fn exports_audit_records(protocol: Protocol) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let audit = Audit::open(&dir.path().join("audit.db"))?;
    let trace: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse()?;
    let created = audit.log.append(
        NewEntry::new(
            Action::VmCreate,
            Actor::user("alice", AuthMethod::Password),
            Origin::Ip {
                addr: "192.0.2.7".parse()?,
            },
        )
        .target(Target::vm("vm-1"))
        .details(serde_json::json!({"kernel_sha256": "ab12", "vcpus": 1}))
        .trace_id(trace.to_string().parse()?)
        .vm_seq(1),
    )?;
    audit.log.append(
        NewEntry::new(
            Action::AuthLoginFailure,
            Actor::user("mallory", AuthMethod::None),
            Origin::Internal,
        )
        .outcome(Outcome::failure("bad password")),
    )?;
    audit.append_many(3)?;

    let receiver = Receiver::start(&dir.path().join("rx.jsonl"), &[])?;
    let cfg = config(endpoint(&receiver, protocol), protocol, dir.path());
    let shipper = Shipper::spawn(cfg, audit.source.clone(), Arc::new(Metrics::new()))?;
    let lines = receiver.wait_for("5 audit records", WAIT, |l| seqs(l).len() >= 5)?;
    let records: Vec<_> = lines
        .iter()
        .filter(|l| l["scope"] == "sakshi.audit")
        .collect();
    let transport = if protocol == Protocol::Grpc {
        "grpc"
    } else {
        "http"
    };

    let first = records[0];
    assert_eq!(first["transport"], transport);
    assert_eq!(first["event_name"], "vm.create");
    assert_eq!(first["severity_text"], "INFO");
    assert_eq!(first["trace_id"], trace.to_string());
    assert_eq!(first["span_id"], "", "the audit log records no span ids");
    let a = &first["attributes"];
    assert_eq!(a["sakshi.actor"], "user:alice");
    assert_eq!(a["sakshi.origin"], "192.0.2.7");
    assert_eq!(a["sakshi.target"], "vm:vm-1");
    assert_eq!(a["sakshi.outcome"], "success");
    assert_eq!(a["sakshi.vm.id"], "vm-1");
    assert_eq!(a["sakshi.vm.seq"], 1);
    assert_eq!(a["sakshi.audit.seq"], 0);
    assert_eq!(a["sakshi.details"]["kernel_sha256"], "ab12");
    // The leaf hash the log returned at append time, and a uid unique to this log and entry.
    assert_eq!(a["sakshi.audit.hash"], hex::encode(created.leaf_hash));
    assert_eq!(a["log.record.uid"], format!("{}/0", audit.log.origin()));
    let nanos = created.time.timestamp_nanos_opt().unwrap_or_default() as u64;
    assert_eq!(first["time_unix_nano"].as_u64(), Some(nanos));
    assert!(first["observed_time_unix_nano"].as_u64() >= Some(nanos));
    let res = &first["resource"];
    assert_eq!(res["service.name"], "sakshi");
    assert_eq!(res["service.version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(res["host.id"], "test-host-id");
    assert_eq!(res["host.name"], "test-appliance");

    let second = records[1];
    assert_eq!(second["event_name"], "auth.login.failure");
    assert_eq!(second["attributes"]["sakshi.outcome"], "failure");
    assert_eq!(
        second["attributes"]["sakshi.outcome.reason"],
        "bad password"
    );
    assert_eq!(second["attributes"]["sakshi.actor"], "user:mallory");
    assert_eq!(second["severity_text"], "WARN");
    assert_eq!(second["trace_id"], "", "no trace id on entries without one");
    assert!(second["attributes"].get("sakshi.target").is_none());

    let uids: BTreeSet<String> = records
        .iter()
        .map(|r| r["attributes"]["log.record.uid"].to_string())
        .collect();
    assert_eq!(uids.len(), records.len(), "uids are unique");

    // Acknowledged batches move the durable cursor.
    wait_until("cursor at 5", || {
        Cursor::new(dir.path().join("otlp.cursor")).load().ok() == Some(5)
    })
    .await?;
    assert_eq!(shipper.health().state, DeliveryState::Healthy);
    shipper.shutdown().await;
    Ok(())
}

async fn wait_until(what: &str, f: impl Fn() -> bool) -> Result<()> {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !f() {
        ensure!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_exports_audit_records() -> Result<()> {
    exports_audit_records(Protocol::Grpc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_exports_audit_records() -> Result<()> {
    exports_audit_records(Protocol::HttpProtobuf).await
}

/// Kill the receiver mid-stream, append more, restart it, restart the shipper too: every entry arrives,
/// first arrivals in order, duplicates only of unacknowledged batches.
async fn survives_receiver_and_appliance_restarts(protocol: Protocol) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let audit = Audit::open(&dir.path().join("audit.db"))?;
    audit.append_many(2000)?;
    let mut receiver = Receiver::start(&dir.path().join("rx.jsonl"), &[])?;
    let mut cfg = config(endpoint(&receiver, protocol), protocol, dir.path());
    cfg.batch_size = 10;
    let metrics = Arc::new(Metrics::new());
    let shipper = Shipper::spawn(cfg.clone(), audit.source.clone(), metrics.clone())?;

    receiver.wait_for("the first batches", WAIT, |l| seqs(l).len() >= 30)?;
    receiver.kill();
    let seen_before_kill = seqs(&receiver.lines()).len();
    eprintln!(
        "{protocol:?}: {seen_before_kill} of 2000 records received before the receiver was killed"
    );
    audit.append_many(100)?;
    shipper.nudge();
    // The shipper notices: it retries and reports itself as failing.
    wait_until("shipper failing", || {
        shipper.health().state != DeliveryState::Healthy
    })
    .await?;
    assert!(shipper.health().last_error.is_some());

    // An appliance restart in the middle of the outage: a new shipper resumes from the cursor.
    shipper.shutdown().await;
    let shipper = Shipper::spawn(cfg, audit.source.clone(), metrics.clone())?;
    audit.append_many(50)?;
    receiver.restart()?;
    shipper.nudge();

    // Everything appended, including the shipper's own siem.delivery entries, arrives.
    let total_before_wait = 2150;
    let lines = receiver.wait_for("every entry", WAIT, |l| {
        let got: BTreeSet<u64> = seqs(l).into_iter().collect();
        got.len() >= total_before_wait && (0..total_before_wait as u64).all(|s| got.contains(&s))
    })?;
    wait_until("shipper healthy", || {
        shipper.health().state == DeliveryState::Healthy
    })
    .await?;
    let received = seqs(&lines);
    assert!(received.len() > seen_before_kill);
    // First arrivals are in order; later copies are re-sends of batches that were not acknowledged.
    let mut first_seen = Vec::new();
    let mut set = BTreeSet::new();
    for s in &received {
        if set.insert(*s) {
            first_seen.push(*s);
        }
    }
    assert!(
        first_seen.windows(2).all(|w| w[0] < w[1]),
        "first arrivals out of order"
    );
    // Duplicates are identifiable by log.record.uid: same seq <=> same uid.
    let mut uid_by_seq = std::collections::BTreeMap::new();
    for l in lines.iter().filter(|l| l["scope"] == "sakshi.audit") {
        let seq = l["attributes"]["sakshi.audit.seq"]
            .as_u64()
            .unwrap_or(u64::MAX);
        let uid = l["attributes"]["log.record.uid"].clone();
        assert_eq!(uid_by_seq.entry(seq).or_insert_with(|| uid.clone()), &uid);
    }
    // The outage was audited: a failing event and then a recovery, both shipped too.
    let actions = audit.actions();
    let delivery: Vec<_> = actions
        .iter()
        .filter(|(a, _)| a == "siem.delivery")
        .collect();
    assert!(
        delivery.iter().any(|(_, d)| d.contains("\"failing\"")),
        "{delivery:?}"
    );
    wait_until("recovery audited", || {
        audit
            .actions()
            .iter()
            .any(|(a, d)| a == "siem.delivery" && d.contains("\"recovered\""))
    })
    .await?;
    assert!(metrics.export_failures.get() > 0);
    shipper.shutdown().await;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_grpc_receiver_killed_mid_stream_loses_nothing() -> Result<()> {
    survives_receiver_and_appliance_restarts(Protocol::Grpc).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_http_receiver_killed_mid_stream_loses_nothing() -> Result<()> {
    survives_receiver_and_appliance_restarts(Protocol::HttpProtobuf).await
}

/// Custom headers reach the receiver; a refused request raises the PCI 10.7 state once the threshold
/// passes, and that is audited.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_headers_and_logging_failure_alarm() -> Result<()> {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let dir = tempfile::tempdir()?;
        let audit = Audit::open(&dir.path().join("audit.db"))?;
        audit.append_many(3)?;
        let receiver = Receiver::start(
            &dir.path().join("rx.jsonl"),
            &["--require-header", "authorization=Bearer s3cret"],
        )?;

        // Wrong token: refused, retried, alarm raised after the 1 s threshold.
        let mut cfg = config(endpoint(&receiver, protocol), protocol, dir.path());
        cfg.failure_threshold_secs = 1;
        cfg.headers
            .insert("authorization".into(), Secret::new("Bearer wrong"));
        let metrics = Arc::new(Metrics::new());
        let shipper = Shipper::spawn(cfg.clone(), audit.source.clone(), metrics.clone())?;
        wait_until("logging failure", || {
            shipper.health().state == DeliveryState::LoggingFailure
        })
        .await?;
        assert_eq!(metrics.logging_failure.get(), 1.0);
        assert!(seqs(&receiver.lines()).is_empty());
        assert_eq!(
            Cursor::new(&cfg.cursor_path).load()?,
            0,
            "nothing acknowledged, cursor unmoved"
        );
        let alarm = audit
            .actions()
            .into_iter()
            .find(|(a, d)| a == "siem.delivery" && d.contains("alarm_raised"));
        assert!(alarm.is_some_and(|(_, d)| d.contains("PCI-DSS 10.7")));
        shipper.shutdown().await;

        // Right token: everything (including the delivery entries) arrives, the alarm clears.
        cfg.headers
            .insert("authorization".into(), Secret::new("Bearer s3cret"));
        let shipper = Shipper::spawn(cfg, audit.source.clone(), metrics.clone())?;
        let n = audit.source.next_seq()? as usize;
        receiver.wait_for("all entries", WAIT, |l| seqs(l).len() >= n)?;
        wait_until("healthy", || {
            shipper.health().state == DeliveryState::Healthy
        })
        .await?;
        shipper.shutdown().await;
    }
    Ok(())
}

/// Spans (API request, VM lifecycle), guest console lines and metrics reach the receiver, and the guest's
/// records carry the same trace id as the host's spans.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_spans_console_and_metrics_share_the_vm_trace() -> Result<()> {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let dir = tempfile::tempdir()?;
        let receiver = Receiver::start(&dir.path().join("rx.jsonl"), &[])?;
        let mut cfg = config(endpoint(&receiver, protocol), protocol, dir.path());
        cfg.console_burst = 3;
        cfg.console_lines_per_sec = 1;
        let metrics = Arc::new(Metrics::new());
        let (telemetry, task) = Telemetry::spawn(&cfg, metrics.clone())?;

        let trace = TraceId::random();
        let mut request = telemetry.request_span("POST", "/api/v1/vms", trace);
        telemetry.vm_phase(
            "vm-7",
            trace,
            VmPhase::Created {
                parent: Some(request.span_id()),
            },
        );
        telemetry.vm_phase("vm-7", trace, VmPhase::Measured);
        request.set_int("http.response.status_code", 201);
        request.end();
        // The console of a test guest booted with `trace=<id>` on its command line.
        telemetry.console_line("vm-7", Some(trace), "SAKSHI-TEST-GUEST v1 entry=linux64");
        telemetry.console_line("vm-7", Some(trace), &format!("trace: {trace}"));
        telemetry.console_line(
            "vm-7",
            Some(trace),
            r#"{"level":"error","msg":"agent up","pid":1}"#,
        );
        telemetry.console_line("vm-7", Some(trace), "over the burst: dropped");
        telemetry.vm_phase("vm-7", trace, VmPhase::Booted);
        metrics.audit_appends.add(4);
        metrics.boot_latency.observe(0.05);
        metrics.vms.set_all([("running", 1)]);
        telemetry.flush().await;

        let lines = receiver.wait_for("spans, console, metrics", WAIT, |l| {
            l.iter().filter(|x| x["signal"] == "span").count() >= 4
                && l.iter().any(|x| x["signal"] == "metric")
                && l.iter().filter(|x| x["scope"] == "sakshi.console").count() >= 3
        })?;
        let spans: Vec<_> = lines.iter().filter(|l| l["signal"] == "span").collect();
        let names: BTreeSet<_> = spans
            .iter()
            .map(|s| s["name"].as_str().unwrap_or(""))
            .collect();
        assert_eq!(
            names,
            BTreeSet::from(["POST /api/v1/vms", "vm.boot", "vm.lifecycle", "vm.measure"])
        );
        assert!(spans.iter().all(|s| s["trace_id"] == trace.to_string()));
        let req = spans
            .iter()
            .find(|s| s["name"] == "POST /api/v1/vms")
            .unwrap();
        assert_eq!(req["attributes"]["http.response.status_code"], 201);
        assert_eq!(req["kind"], 2, "SPAN_KIND_SERVER");
        let lifecycle = spans.iter().find(|s| s["name"] == "vm.lifecycle").unwrap();
        assert_eq!(lifecycle["parent_span_id"], req["span_id"]);
        for child in ["vm.measure", "vm.boot"] {
            let c = spans.iter().find(|s| s["name"] == child).unwrap();
            assert_eq!(c["parent_span_id"], lifecycle["span_id"]);
        }

        let console: Vec<_> = lines
            .iter()
            .filter(|l| l["scope"] == "sakshi.console")
            .collect();
        assert_eq!(console.len(), 3, "the 4th line is over the per-VM burst");
        assert_eq!(metrics.console_dropped.get(), 1);
        assert!(console.iter().all(|c| c["trace_id"] == trace.to_string()));
        assert!(
            console
                .iter()
                .all(|c| c["attributes"]["sakshi.vm.id"] == "vm-7")
        );
        let echoed = console
            .iter()
            .find(|c| c["attributes"].get("sakshi.guest.trace_id").is_some())
            .unwrap();
        assert_eq!(
            echoed["attributes"]["sakshi.guest.trace_id"],
            trace.to_string()
        );
        let agent = console.iter().find(|c| c["body"] == "agent up").unwrap();
        assert_eq!(agent["severity_text"], "ERROR");
        assert_eq!(agent["attributes"]["guest.pid"], 1);

        let metric = |name: &str| {
            lines
                .iter()
                .rev()
                .find(|l| l["signal"] == "metric" && l["name"] == name)
        };
        assert_eq!(
            metric("sakshi.audit.appends").unwrap()["points"][0]["value"],
            4
        );
        assert_eq!(
            metric("sakshi.vm.boot.duration").unwrap()["points"][0]["count"],
            1
        );
        let vms = metric("sakshi.vms").unwrap();
        assert_eq!(vms["points"][0]["attributes"]["state"], "running");
        assert_eq!(vms["resource"]["service.name"], "sakshi");
        drop(telemetry);
        task.await?;
    }
    Ok(())
}

/// A CA and a server certificate for 127.0.0.1, made with the openssl command-line tool.
fn make_certs(dir: &std::path::Path) -> Result<()> {
    let run = |args: &[&str]| -> Result<()> {
        let out = std::process::Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()?;
        ensure!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(())
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-days",
        "2",
        "-subj",
        "/CN=sakshi test CA",
        "-keyout",
        "ca.key",
        "-out",
        "ca.pem",
    ])?;
    run(&[
        "req",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:P-256",
        "-nodes",
        "-subj",
        "/CN=127.0.0.1",
        "-keyout",
        "server.key",
        "-out",
        "server.csr",
    ])?;
    std::fs::write(
        dir.join("ext.cnf"),
        "subjectAltName=IP:127.0.0.1,DNS:localhost\n",
    )?;
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.pem",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-days",
        "2",
        "-extfile",
        "ext.cnf",
        "-out",
        "server.pem",
    ])?;
    Ok(())
}

/// TLS with a private CA over both transports; without the CA the receiver is not trusted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn otlp_tls_with_private_ca() -> Result<()> {
    for protocol in [Protocol::Grpc, Protocol::HttpProtobuf] {
        let dir = tempfile::tempdir()?;
        make_certs(dir.path())?;
        let cert = dir.path().join("server.pem");
        let key = dir.path().join("server.key");
        let receiver = Receiver::start(
            &dir.path().join("rx.jsonl"),
            &[
                "--tls-cert",
                cert.to_str().unwrap_or_default(),
                "--tls-key",
                key.to_str().unwrap_or_default(),
            ],
        )?;
        let port = match protocol {
            Protocol::Grpc => receiver.grpc_port,
            Protocol::HttpProtobuf => receiver.http_port,
        };
        let audit = Audit::open(&dir.path().join("audit.db"))?;
        audit.append_many(5)?;

        // System roots only: the private CA is not trusted, nothing is delivered.
        let mut cfg = config(format!("https://127.0.0.1:{port}"), protocol, dir.path());
        cfg.tls = Some(sakshi_web::otlp::TlsConfig::default());
        let shipper = Shipper::spawn(cfg.clone(), audit.source.clone(), Arc::new(Metrics::new()))?;
        wait_until("TLS failure", || shipper.health().consecutive_failures >= 2).await?;
        assert!(seqs(&receiver.lines()).is_empty());
        shipper.shutdown().await;

        // With the CA: delivered over TLS.
        cfg.tls = Some(sakshi_web::otlp::TlsConfig {
            ca_file: Some(dir.path().join("ca.pem")),
            ..Default::default()
        });
        let shipper = Shipper::spawn(cfg, audit.source.clone(), Arc::new(Metrics::new()))?;
        let n = audit.source.next_seq()? as usize;
        receiver.wait_for("records over TLS", WAIT, |l| seqs(l).len() >= n)?;
        shipper.shutdown().await;
    }
    Ok(())
}
