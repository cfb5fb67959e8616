//! Evidence bundle benchmark: export and offline verification of a period of N entries.
//!
//! ```text
//! evidence_bench gen DIR N        # create DIR/audit.db with N entries (not timed), key, swtpm state
//! evidence_bench export DIR OUT   # time export_bundle over all entries (fresh swtpm quote)
//! evidence_bench verify OUT DIR   # time verify_bundle_file with DIR/appliance.pub.pem
//! ```
//! Each phase runs in its own process and prints its wall time and peak RSS (VmHWM), so the
//! memory figures belong to that phase alone. See docs/bench/evidence.md.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use chrono::{TimeDelta, Utc};
use sakshi_attest::{Policy, Quote, Swtpm, Tpm, TpmConfig};
use sakshi_audit::{
    Action, Actor, ApplianceKey, AuditConfig, AuditLog, AuthMethod, NewEntry, Origin, Target,
};
use sakshi_reports::{
    Catalog, ExportOptions, Period, QuoteSource, Scope, SourceError, VerifyOptions, export_bundle,
    verify_bundle_file,
};

const PASSWORD: &[u8] = b"evidence-bench";

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kib| kib / 1024.0)
}

fn status_kib(field: &str) -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap_or(0)
}

/// Samples anonymous (heap) memory every 5 ms; file-backed pages (SQLite's mmap of the
/// database, the page cache) are excluded.
struct AnonSampler {
    stop: Arc<std::sync::atomic::AtomicBool>,
    handle: std::thread::JoinHandle<u64>,
}

impl AnonSampler {
    fn start() -> Self {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let s = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut peak = 0;
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                peak = peak.max(status_kib("RssAnon:"));
                std::thread::sleep(Duration::from_millis(5));
            }
            peak
        });
        AnonSampler { stop, handle }
    }

    fn peak_mib(self) -> f64 {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.handle.join().unwrap_or(0) as f64 / 1024.0
    }
}

fn config() -> AuditConfig {
    AuditConfig {
        checkpoint_every: 1000,
        checkpoint_interval: Duration::from_secs(60),
        ..AuditConfig::default()
    }
}

fn key(dir: &Path) -> anyhow::Result<Arc<ApplianceKey>> {
    let pem = std::fs::read(dir.join("appliance.key.pem"))?;
    Ok(Arc::new(ApplianceKey::from_encrypted_pem(&pem, PASSWORD)?))
}

fn generate(dir: &Path, n: u64) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir)?;
    let key = Arc::new(ApplianceKey::generate()?);
    std::fs::write(
        dir.join("appliance.key.pem"),
        key.to_encrypted_pem(PASSWORD)?,
    )?;
    std::fs::write(dir.join("appliance.pub.pem"), key.public_key().to_pem())?;
    let start = Utc::now();
    std::fs::write(dir.join("start.txt"), start.to_rfc3339())?;
    let log = AuditLog::open(dir.join("audit.db"), config(), key, None)?;
    let t = Instant::now();
    let mut batch = Vec::with_capacity(1000);
    for i in 0..n {
        let vm = format!("vm-{:06}", i % 5000);
        let e = match i % 5 {
            0 => NewEntry::new(Action::VmCreate, Actor::user("alice", AuthMethod::Session), Origin::Ip {
                addr: "192.0.2.10".parse()?,
            })
            .target(Target::vm(vm))
            .details(serde_json::json!({"kernel_sha256": "ab".repeat(32), "vcpus": 1, "memory_mib": 128})),
            1 => NewEntry::new(Action::VmBoot, Actor::service("supervisor"), Origin::Internal)
                .target(Target::vm(vm))
                .vm_seq(i),
            2 => NewEntry::new(Action::VmRunning, Actor::service("supervisor"), Origin::Internal)
                .target(Target::vm(vm))
                .details(serde_json::json!({"boot_latency_ns": 1_234_567})),
            3 => NewEntry::new(Action::AuditRead, Actor::api_token("tok-siem"), Origin::Ip { addr: "198.51.100.7".parse()? }),
            _ => NewEntry::new(Action::VmStop, Actor::service("supervisor"), Origin::Internal)
                .target(Target::vm(vm))
                .details(serde_json::json!({"reason": "poweroff"})),
        };
        batch.push(e);
        if batch.len() == 1000 {
            log.append_batch(std::mem::take(&mut batch))?;
        }
    }
    if !batch.is_empty() {
        log.append_batch(batch)?;
    }
    log.checkpoint()?;
    println!("gen: {n} entries in {:.1} s", t.elapsed().as_secs_f64());
    Ok(())
}

struct TpmQuotes(Tpm);

impl QuoteSource for TpmQuotes {
    fn quote(&self, nonce: &[u8]) -> Result<Quote, SourceError> {
        Ok(self.0.quote(nonce)?)
    }
}

fn export(dir: &Path, out: &Path) -> anyhow::Result<()> {
    let key = key(dir)?;
    let start: chrono::DateTime<Utc> = std::fs::read_to_string(dir.join("start.txt"))?
        .trim()
        .parse()?;
    let log = AuditLog::open(dir.join("audit.db"), config(), key.clone(), None)?;
    println!(
        "export: log opened; peak RSS so far {:.0} MiB",
        peak_rss_mib()
    );
    let swtpm = Swtpm::start(&dir.join("swtpm"))?;
    let tpm = Tpm::open(&TpmConfig::new(swtpm.tcti(), dir.join("tpm-state")))?;
    let now = Utc::now();
    let opts = ExportOptions {
        period: Period::new(start - TimeDelta::seconds(1), now)?,
        scope: Scope::All,
        hostname: "bench".into(),
        machine_id: None,
        appliance_version: env!("CARGO_PKG_VERSION").into(),
        generated_by: "bench".into(),
        previous_checkpoint: None,
        catalogs: Catalog::builtin()?,
        golden: Policy::default(),
        inventory: Some(Vec::new()),
        patches: Some(Vec::new()),
        time_sync: None,
        retention: None,
        location: None,
        siem: None,
        now,
    };
    let sampler = AnonSampler::start();
    let t = Instant::now();
    let summary = export_bundle(&log, &key, &TpmQuotes(tpm), &opts, out)?;
    let secs = t.elapsed().as_secs_f64();
    println!(
        "export: {} entries, {} files, {:.1} MiB bundle in {secs:.2} s; peak anonymous memory {:.0} MiB, peak RSS {:.0} MiB (incl. mapped database pages)",
        summary.manifest.audit.entries,
        summary.manifest.files.len(),
        summary.bytes as f64 / (1024.0 * 1024.0),
        sampler.peak_mib(),
        peak_rss_mib()
    );
    Ok(())
}

fn verify(bundle: &Path, dir: &Path) -> anyhow::Result<()> {
    let pem = std::fs::read_to_string(dir.join("appliance.pub.pem"))?;
    let key = sakshi_audit::AppliancePublicKey::from_pem(&pem)?;
    let sampler = AnonSampler::start();
    let t = Instant::now();
    let report = verify_bundle_file(
        bundle,
        &VerifyOptions {
            key,
            previous_anchor: None,
        },
    );
    let secs = t.elapsed().as_secs_f64();
    let anon = sampler.peak_mib();
    if !report.is_ok() {
        bail!("bundle did not verify: {:?}", report.problems);
    }
    println!(
        "verify: {} entries, {} files in {secs:.2} s; peak anonymous memory {anon:.0} MiB, peak RSS {:.0} MiB",
        report.entries_checked,
        report.files_ok,
        peak_rss_mib()
    );
    Ok(())
}

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let arg = |i: usize| args.get(i).map(PathBuf::from).context("missing argument");
    match args.first().map(String::as_str) {
        Some("gen") => generate(&arg(1)?, args.get(2).context("missing N")?.parse()?),
        Some("export") => export(&arg(1)?, &arg(2)?),
        Some("verify") => verify(&arg(1)?, &arg(2)?),
        _ => bail!("usage: evidence_bench gen DIR N | export DIR OUT | verify OUT DIR"),
    }
}
