//! A writer process for the durability test: appends from several threads forever and prints
//! `ACK <seq> <marker>` for every acknowledged (durable) append, flushing each line.
//!
//! Usage: `audit_writer <db> <encrypted key PEM file> <threads>`; the key password is read from
//! the `SAKSHI_AUDIT_KEY_PASSWORD` environment variable.

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use sakshi_audit::{Action, Actor, ApplianceKey, AuditConfig, AuditLog, NewEntry, Origin, Target};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    anyhow::ensure!(
        args.len() == 4,
        "usage: audit_writer <db> <key.pem> <threads>"
    );
    let password =
        std::env::var("SAKSHI_AUDIT_KEY_PASSWORD").context("SAKSHI_AUDIT_KEY_PASSWORD")?;
    let pem = std::fs::read(&args[2]).with_context(|| format!("reading {}", args[2]))?;
    let key = Arc::new(ApplianceKey::from_encrypted_pem(&pem, password.as_bytes())?);
    let threads: u64 = args[3].parse().context("threads")?;
    let config = AuditConfig {
        checkpoint_every: 257,
        checkpoint_interval: Duration::from_millis(200),
        ..AuditConfig::default()
    };
    let log = Arc::new(AuditLog::open(&args[1], config, key, None)?);
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let workers: Vec<_> = (0..threads)
        .map(|t| {
            let (log, out) = (log.clone(), out.clone());
            std::thread::spawn(move || -> anyhow::Result<()> {
                for i in 0u64.. {
                    let marker = t * 1_000_000_000 + i;
                    let e = NewEntry::new(
                        Action::VmRunning,
                        Actor::service("supervisor"),
                        Origin::Internal,
                    )
                    .target(Target::vm(format!("vm-{t}")))
                    .vm_seq(i)
                    .details(serde_json::json!({ "marker": marker }));
                    let r = log.append(e)?;
                    let mut o = out.lock().expect("stdout lock");
                    writeln!(o, "ACK {} {marker}", r.seq)?;
                    o.flush()?;
                }
                Ok(())
            })
        })
        .collect();
    for w in workers {
        w.join().expect("worker panicked")?;
    }
    Ok(())
}
