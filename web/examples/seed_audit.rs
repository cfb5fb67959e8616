//! Fills an appliance's audit log with synthetic entries for load benchmarks
//! (docs/bench/web.md): `seed_audit <data dir> <entries>`. Run it while `sakshi serve` is NOT
//! running; it opens the log with the appliance's key like the daemon does.

use anyhow::{Context, Result};
use sakshi_audit::{
    Action, Actor, ApplianceKey, AuditConfig, AuditLog, AuthMethod, NewEntry, Origin, Outcome,
    Target,
};
use serde_json::json;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = PathBuf::from(
        args.next()
            .context("usage: seed_audit <data dir> <entries>")?,
    );
    let n: u64 = args.next().context("entries")?.parse()?;
    let password = std::fs::read_to_string(dir.join("audit-key.pass"))
        .context("no audit-key.pass: start `sakshi serve` once on this data dir first")?;
    let (key, _) =
        ApplianceKey::load_or_generate(&dir.join("audit-key.pem"), password.trim().as_bytes())?;
    let log = AuditLog::open(
        dir.join("audit.sqlite"),
        AuditConfig::default(),
        Arc::new(key),
        None,
    )?;
    let actions = [
        Action::VmBoot,
        Action::VmRunning,
        Action::VmStop,
        Action::AuthLoginSuccess,
        Action::AuthLoginFailure,
        Action::AuditRead,
        Action::AuthDenied,
        Action::ImageRegister,
    ];
    let t0 = Instant::now();
    let mut done = 0u64;
    while done < n {
        let batch: Vec<NewEntry> = (done..(done + 2000).min(n))
            .map(|i| {
                let action = actions[(i % actions.len() as u64) as usize];
                let outcome = if matches!(action, Action::AuthLoginFailure | Action::AuthDenied) {
                    Outcome::failure("synthetic")
                } else {
                    Outcome::Success
                };
                NewEntry::new(
                    action,
                    Actor::user(format!("user{}", i % 17), AuthMethod::Session),
                    Origin::Ip {
                        addr: std::net::IpAddr::from([10, 0, (i % 250) as u8, 7]),
                    },
                )
                .target(Target::vm(format!("seed-{:06}", i % 5000)))
                .outcome(outcome)
                .details(json!({ "seed": i, "note": "synthetic load-test entry" }))
            })
            .collect();
        done += batch.len() as u64;
        log.append_batch(batch)?;
    }
    log.checkpoint()?;
    let secs = t0.elapsed().as_secs_f64();
    println!(
        "appended {n} entries in {secs:.1} s ({:.0}/s); log size {}",
        n as f64 / secs,
        log.size()?
    );
    Ok(())
}
