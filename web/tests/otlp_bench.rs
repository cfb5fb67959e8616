//! OTLP benchmarks (docs/bench/otlp.md). Ignored by default; run in release:
//!
//! ```sh
//! cargo test -p sakshi-web --release --test otlp_bench -- --ignored --nocapture --test-threads 1
//! ```
//!
//! Both use the real audit log (SQLite, synchronous=FULL, group commit) and the real receiver
//! (tests/otlp/receiver.py in `--summary` mode: it parses every request and records each record's
//! lag, receive time minus the entry's append time, but writes one line per request).

mod otlp_support;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use otlp_support::{Audit, Receiver};
use sakshi_web::otlp::{Metrics, OtlpConfig, Protocol, Shipper};

const RATE_RECORDS: usize = 100_000;
const LAG_RATE: usize = 5_000;
const LAG_SECS: usize = 10;

fn config(r: &Receiver, protocol: Protocol, dir: &std::path::Path) -> OtlpConfig {
    let endpoint = match protocol {
        Protocol::Grpc => r.grpc_endpoint(),
        Protocol::HttpProtobuf => r.http_endpoint(),
    };
    let mut c = OtlpConfig::new(endpoint, protocol, dir.join("otlp.cursor"));
    c.batch_size = 1000;
    c
}

/// First-arrival lag of every record, from the receiver's summary lines.
fn lags(r: &Receiver) -> BTreeMap<u64, u64> {
    let mut out = BTreeMap::new();
    for l in r.lines().iter().filter(|l| l["signal"] == "logs_summary") {
        let (Some(first), Some(last), Some(lags)) = (
            l["seq_first"].as_u64(),
            l["seq_last"].as_u64(),
            l["lags_ns"].as_array(),
        ) else {
            continue;
        };
        // The shipper sends contiguous ranges; anything else is a bug worth failing on.
        assert_eq!(
            last - first + 1,
            lags.len() as u64,
            "non-contiguous request"
        );
        for (s, lag) in (first..=last).zip(lags) {
            if let Some(lag) = lag.as_i64() {
                out.entry(s).or_insert(lag.max(0) as u64);
            }
        }
    }
    out
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1e6
}

async fn wait_shipped(shipper: &sakshi_web::otlp::ShipperHandle, n: u64) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(300);
    while shipper.health().next_seq < n {
        ensure!(
            Instant::now() < deadline,
            "shipper stuck at {}",
            shipper.health().next_seq
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    Ok(())
}

async fn export_rate(protocol: Protocol) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let audit = Audit::open(&dir.path().join("audit.db"))?;
    audit.append_many(RATE_RECORDS)?;
    let receiver = Receiver::start(&dir.path().join("rx.jsonl"), &["--summary"])?;
    let cfg = config(&receiver, protocol, dir.path());
    let start = Instant::now();
    let shipper = Shipper::spawn(cfg, audit.source.clone(), Arc::new(Metrics::new()))?;
    wait_shipped(&shipper, RATE_RECORDS as u64).await?;
    let secs = start.elapsed().as_secs_f64();
    shipper.shutdown().await;
    ensure!(
        lags(&receiver).len() == RATE_RECORDS,
        "receiver missed records"
    );
    println!(
        "{{\"bench\":\"otlp_export_rate\",\"protocol\":\"{protocol:?}\",\"records\":{RATE_RECORDS},\"secs\":{secs:.3},\"records_per_sec\":{:.0}}}",
        RATE_RECORDS as f64 / secs
    );
    Ok(())
}

async fn lag_at_rate(protocol: Protocol) -> Result<()> {
    let dir = tempfile::tempdir()?;
    let audit = Audit::open(&dir.path().join("audit.db"))?;
    let receiver = Receiver::start(&dir.path().join("rx.jsonl"), &["--summary"])?;
    let cfg = config(&receiver, protocol, dir.path());
    let shipper = Shipper::spawn(cfg, audit.source.clone(), Arc::new(Metrics::new()))?;
    // 5,000 appends/s as 50-entry group commits every 10 ms (what concurrent API requests produce).
    let total = LAG_RATE * LAG_SECS;
    let per_tick = LAG_RATE / 100;
    let log = audit.log.clone();
    let start = Instant::now();
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut appended = 0;
    while appended < total {
        tick.tick().await;
        let log = log.clone();
        let batch = tokio::task::spawn_blocking(move || {
            let entries = (0..per_tick)
                .map(|i| {
                    sakshi_audit::NewEntry::new(
                        sakshi_audit::Action::AuditRead,
                        sakshi_audit::Actor::api_token("bench"),
                        sakshi_audit::Origin::Internal,
                    )
                    .details(serde_json::json!({ "i": i }))
                })
                .collect();
            log.append_batch(entries)
        });
        batch.await??;
        appended += per_tick;
        shipper.nudge();
    }
    let append_secs = start.elapsed().as_secs_f64();
    wait_shipped(&shipper, total as u64).await?;
    shipper.shutdown().await;
    let mut l: Vec<u64> = lags(&receiver).into_values().collect();
    ensure!(l.len() == total, "receiver got {} of {total}", l.len());
    l.sort_unstable();
    println!(
        "{{\"bench\":\"otlp_lag\",\"protocol\":\"{protocol:?}\",\"records\":{total},\"append_rate\":{:.0},\"lag_ms_p50\":{:.1},\"lag_ms_p99\":{:.1},\"lag_ms_max\":{:.1}}}",
        total as f64 / append_secs,
        percentile(&l, 0.50),
        percentile(&l, 0.99),
        percentile(&l, 1.0)
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored in release"]
async fn otlp_bench_export_rate() -> Result<()> {
    export_rate(Protocol::Grpc).await?;
    export_rate(Protocol::HttpProtobuf).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "benchmark: run with --ignored in release"]
async fn otlp_bench_lag_at_5000_appends_per_sec() -> Result<()> {
    lag_at_rate(Protocol::Grpc).await?;
    lag_at_rate(Protocol::HttpProtobuf).await
}
