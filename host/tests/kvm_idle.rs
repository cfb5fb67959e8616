//! The test guest's `run=idle` under real KVM (docs/CONTRACTS.md): it stays running on (almost)
//! no host CPU, shows a heartbeat, and answers pause, resume and both kinds of stop.

#[path = "kvm_vmm_common/mod.rs"]
mod common;

use anyhow::{Context, Result, bail};
use common::{TIMEOUT, Vmm, spawn};
use sakshi_host::{EventKind, ExitReason, RunState, StopMode};
use serde_json::json;
use std::time::{Duration, Instant};

/// On-CPU time of every thread of process `pid` (the scheduler's nanosecond account).
fn cpu_time(pid: u32) -> Result<Duration> {
    let mut total = 0u64;
    for task in std::fs::read_dir(format!("/proc/{pid}/task"))? {
        let path = task?.path().join("schedstat");
        // A thread may end between the listing and the read.
        let Ok(text) = std::fs::read_to_string(&path) else {
            continue;
        };
        let ns: u64 = text
            .split_whitespace()
            .next()
            .context("empty schedstat")?
            .parse()
            .with_context(|| format!("{}: {text:?}", path.display()))?;
        total += ns;
    }
    Ok(Duration::from_nanos(total))
}

/// Polls the console tail until it contains `needle`.
fn wait_console(vmm: &Vmm, needle: &str) -> Result<String> {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let r = vmm.request(json!({"op": "console_tail", "bytes": 4096}))?;
        let console = r.console.unwrap_or_default();
        if console.contains(needle) {
            return Ok(console);
        }
        if Instant::now() > deadline {
            bail!("console never showed {needle:?}: {console:?}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn kvm_idle_guest_stays_running_on_little_cpu_then_stops_hard() -> Result<()> {
    let mut vmm = spawn(
        json!({"cmdline": "run=idle heartbeat=1", "memory_mib": 32}),
        &[],
    )?;
    vmm.wait_event("boot_complete")?;
    wait_console(&vmm, "run: idle\n")?;

    let wall0 = Instant::now();
    let cpu0 = cpu_time(vmm.pid())?;
    std::thread::sleep(Duration::from_secs(2));
    let cpu = cpu_time(vmm.pid())? - cpu0;
    let wall = wall0.elapsed();
    // A spinning guest burns a whole core (100 % of wall time); an idle one next to nothing.
    assert!(
        cpu.as_secs_f64() < 0.2 * wall.as_secs_f64(),
        "idle guest used {cpu:?} CPU in {wall:?}"
    );

    let s = vmm
        .request(json!({"op": "status"}))?
        .status
        .context("status")?;
    assert_eq!(s.state, RunState::Running);
    // The heartbeat shows the guest is alive (its timer wakes it).
    let console = wait_console(&vmm, "idle: tick 2\n")?;
    assert!(console.contains("idle: tick 1\n"), "{console}");

    let stop = vmm.request(json!({"op": "stop", "graceful": false}))?;
    assert!(stop.ok, "{stop:?}");
    assert_eq!(stop.stop_mode, Some(StopMode::Hard));
    let f = vmm.finish()?;
    assert_eq!(f.status.code(), Some(0));
    match f.exited() {
        EventKind::Exited { reason, .. } => assert_eq!(*reason, ExitReason::Stopped),
        other => bail!("last event {other:?}"),
    }
    Ok(())
}

#[test]
fn kvm_idle_guest_pauses_resumes_and_powers_off_on_graceful_stop() -> Result<()> {
    let mut vmm = spawn(
        json!({"cmdline": "run=idle heartbeat=0", "memory_mib": 32}),
        &[],
    )?;
    vmm.wait_event("boot_complete")?;
    wait_console(&vmm, "run: idle\n")?;

    let p = vmm.request(json!({"op": "pause"}))?;
    assert!(p.ok, "{p:?}");
    vmm.wait_event("paused")?;
    let s = vmm
        .request(json!({"op": "status"}))?
        .status
        .context("status")?;
    assert_eq!(s.state, RunState::Paused);
    let r = vmm.request(json!({"op": "resume"}))?;
    assert!(r.ok, "{r:?}");
    vmm.wait_event("resumed")?;

    // The idle guest polls the stop request at every tick and powers off by itself.
    let stop = vmm.request(json!({"op": "stop", "graceful": true, "timeout_ms": 30000}))?;
    assert!(stop.ok, "{stop:?}");
    assert_eq!(stop.stop_mode, Some(StopMode::Graceful));
    let f = vmm.finish()?;
    assert_eq!(f.status.code(), Some(0));
    assert!(
        f.console.contains("idle: stop requested\nexit: halt\n"),
        "{}",
        f.console
    );
    // heartbeat=0: no heartbeat lines.
    assert!(!f.console.contains("idle: tick"), "{}", f.console);
    Ok(())
}
