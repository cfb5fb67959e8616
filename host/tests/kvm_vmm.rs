//! `sakshi-vmm` against real KVM and the real test guest (docs/CONTRACTS.md).

#[path = "kvm_vmm_common/mod.rs"]
mod common;

use anyhow::Result;
use common::{fnv1a32, run_to_end, spawn};
use sakshi_host::{ErrorKind, EventKind, ExitReason, RunState, StopMode};
use serde_json::json;

fn exit_reason(kind: &EventKind) -> (ExitReason, i32) {
    match kind {
        EventKind::Exited {
            reason, exit_code, ..
        } => (*reason, *exit_code),
        other => panic!("not exited: {other:?}"),
    }
}

/// The e820 lines the guest must print for `mib` MiB below 3 GiB.
fn expected_e820(mib: u64) -> Vec<String> {
    [
        (0u64, 0x9fc00u64, 1u32),
        (0x9fc00, 0x400, 2),
        (0x10_0000, (mib << 20) - 0x10_0000, 1),
    ]
    .iter()
    .map(|(a, s, t)| format!("e820: addr=0x{a:016x} size=0x{s:016x} type={t}"))
    .collect()
}

fn boot_and_check(boot: &str, entry: &str) -> Result<()> {
    let cmdline = "console=ttyS0 marker=xyz trace=0123abcd exit=reboot";
    let f = run_to_end(json!({"boot": boot, "cmdline": cmdline, "memory_mib": 64}))?;
    assert!(
        f.status.success(),
        "status {:?}, stderr {}",
        f.status,
        f.stderr
    );
    let lines: Vec<&str> = f.console.lines().collect();
    assert_eq!(lines[0], format!("SAKSHI-TEST-GUEST v1 entry={entry}"));
    assert_eq!(lines[1], format!("cmdline: {cmdline}"));
    let e820: Vec<&str> = lines
        .iter()
        .copied()
        .filter(|l| l.starts_with("e820:"))
        .collect();
    assert_eq!(e820, expected_e820(64));
    assert!(lines.contains(&"initrd: none"), "{lines:?}");
    assert!(lines.contains(&"marker: gpa=0x300000 text=SAKSHI-MARKER:xyz"));
    assert!(lines.contains(&"trace: 0123abcd"));
    assert!(lines.contains(&"boot-complete"));
    assert_eq!(lines.last(), Some(&"exit: reboot"));
    assert_eq!(
        f.names(),
        ["ready", "first_output", "boot_complete", "exited"]
    );
    match &f.events[0].kind {
        EventKind::Ready {
            entry: e,
            vcpus,
            memory_mib,
            ..
        } => {
            assert_eq!((e.as_str(), *vcpus, *memory_mib), (entry, 1, 64));
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(exit_reason(f.exited()), (ExitReason::Reboot, 0));
    let t: Vec<u64> = f.events.iter().map(|e| e.t_us).collect();
    assert!(
        t.windows(2).all(|w| w[0] <= w[1]),
        "event times ordered: {t:?}"
    );
    assert!(!f.sock.exists(), "control socket removed");
    Ok(())
}

#[test]
fn kvm_vmm_boots_test_guest_through_pvh_entry() -> Result<()> {
    boot_and_check("pvh", "pvh")
}

#[test]
fn kvm_vmm_boots_test_guest_through_linux64_entry() -> Result<()> {
    boot_and_check("linux64", "linux64")
}

#[test]
fn kvm_vmm_auto_boot_uses_pvh_note() -> Result<()> {
    boot_and_check("auto", "pvh")
}

#[test]
fn kvm_vmm_initrd_checksum_and_placement() -> Result<()> {
    let mut x: u32 = 0x1234_5678;
    let data: Vec<u8> = (0..150_000)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            x as u8
        })
        .collect();
    for boot in ["pvh", "linux64"] {
        let dir = tempfile::tempdir()?;
        let initrd = dir.path().join("initrd.img");
        std::fs::write(&initrd, &data)?;
        let digest = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&data))
        };
        let f = run_to_end(json!({
            "boot": boot, "memory_mib": 32, "initrd": initrd, "initrd_sha256": digest,
        }))?;
        assert!(f.status.success(), "{}", f.stderr);
        // Top of low memory, page aligned.
        let addr = ((32u64 << 20) - data.len() as u64) & !0xfff;
        let want = format!(
            "initrd: addr=0x{addr:x} size=0x{:x} fnv1a32=0x{:08x}",
            data.len(),
            fnv1a32(&data)
        );
        assert!(
            f.console.lines().any(|l| l == want),
            "{boot}: want {want}\n{}",
            f.console
        );
    }
    Ok(())
}

#[test]
fn kvm_vmm_halt_is_a_clean_poweroff() -> Result<()> {
    let f = run_to_end(json!({"cmdline": "exit=halt"}))?;
    assert_eq!(f.status.code(), Some(0));
    assert_eq!(exit_reason(f.exited()), (ExitReason::Poweroff, 0));
    assert_eq!(f.console.lines().last(), Some("exit: halt"));
    Ok(())
}

#[test]
fn kvm_vmm_default_run_ends_with_halt() -> Result<()> {
    let f = run_to_end(json!({}))?;
    assert_eq!(f.status.code(), Some(0));
    assert_eq!(exit_reason(f.exited()), (ExitReason::Poweroff, 0));
    Ok(())
}

#[test]
fn kvm_vmm_reboot_exits_zero_with_reason_reboot() -> Result<()> {
    let f = run_to_end(json!({"cmdline": "exit=reboot", "boot": "linux64"}))?;
    assert_eq!(f.status.code(), Some(0));
    assert_eq!(exit_reason(f.exited()), (ExitReason::Reboot, 0));
    Ok(())
}

#[test]
fn kvm_vmm_triple_fault_exits_2_with_reason() -> Result<()> {
    for boot in ["pvh", "linux64"] {
        let f = run_to_end(json!({"cmdline": "fault=triple", "boot": boot}))?;
        assert_eq!(f.status.code(), Some(2), "{boot}: {}", f.stderr);
        let (reason, code) = exit_reason(f.exited());
        assert_eq!(code, 2);
        // Hardware KVM reports a shutdown exit; PVM an internal error or a KVM_RUN failure.
        assert!(
            matches!(
                reason,
                ExitReason::TripleFault | ExitReason::InternalError | ExitReason::RunError
            ),
            "{boot}: {reason:?}"
        );
        assert!(f.console.contains("fault: triple"));
        assert!(!f.sock.exists());
    }
    Ok(())
}

#[test]
fn kvm_vmm_mmio_garbage_is_counted_and_survived() -> Result<()> {
    let mut vmm = spawn(json!({"cmdline": "mmio=garbage run=spin"}), &[])?;
    vmm.wait_event("boot_complete")?;
    // The guest prints `run: spin` after the garbage; wait for it on the console ring.
    let deadline = std::time::Instant::now() + common::TIMEOUT;
    loop {
        let tail = vmm.request(json!({"op": "console_tail", "bytes": 65536}))?;
        if tail.console.as_deref().unwrap_or("").contains("run: spin") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "guest never reached run=spin"
        );
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    let status = vmm
        .request(json!({"op": "status"}))?
        .status
        .expect("status");
    assert!(status.unknown_pio > 0, "{status:?}");
    assert!(status.unknown_mmio > 0, "{status:?}");
    assert_eq!(status.state, RunState::Running);
    let stop = vmm.request(json!({"op": "stop", "graceful": false}))?;
    assert!(stop.ok);
    let f = vmm.finish()?;
    assert_eq!(f.status.code(), Some(0));
    assert_eq!(exit_reason(f.exited()), (ExitReason::Stopped, 0));
    assert!(f.console.contains("mmio: garbage done"));
    Ok(())
}

#[test]
fn kvm_vmm_pause_resume_and_stop_via_socket() -> Result<()> {
    let mut vmm = spawn(json!({"cmdline": "run=spin", "vcpus": 2}), &[])?;
    vmm.wait_event("boot_complete")?;

    let r = vmm.request(json!({"op": "resume"}))?;
    assert!(!r.ok);
    assert_eq!(r.error.unwrap().kind, ErrorKind::InvalidState);

    let p = vmm.request(json!({"op": "pause"}))?;
    assert!(p.ok, "{p:?}");
    assert!(p.latency_us.is_some());
    let ev = vmm.wait_event("paused")?;
    assert!(matches!(ev.kind, EventKind::Paused { .. }));
    let s = vmm.request(json!({"op": "status"}))?.status.unwrap();
    assert_eq!(s.state, RunState::Paused);
    assert_eq!(s.last_pause_latency_us, p.latency_us);
    let again = vmm.request(json!({"op": "pause"}))?;
    assert_eq!(again.error.unwrap().kind, ErrorKind::InvalidState);

    let r = vmm.request(json!({"op": "resume"}))?;
    assert!(r.ok, "{r:?}");
    vmm.wait_event("resumed")?;
    let s = vmm.request(json!({"op": "status"}))?.status.unwrap();
    assert_eq!(s.state, RunState::Running);
    assert!(s.boot_complete_us.is_some());
    assert_eq!(s.last_resume_latency_us, r.latency_us);

    let stop = vmm.request(json!({"op": "stop", "graceful": false}))?;
    assert!(stop.ok);
    assert_eq!(stop.stop_mode, Some(StopMode::Hard));
    let f = vmm.finish()?;
    assert_eq!(f.status.code(), Some(0));
    assert_eq!(
        f.names(),
        [
            "ready",
            "first_output",
            "boot_complete",
            "paused",
            "resumed",
            "exited"
        ]
    );
    match f.exited() {
        EventKind::Exited {
            reason,
            stop_mode,
            stop_latency_us,
            ..
        } => {
            assert_eq!(*reason, ExitReason::Stopped);
            assert_eq!(*stop_mode, Some(StopMode::Hard));
            assert!(stop_latency_us.is_some());
        }
        _ => unreachable!(),
    }
    assert!(!f.sock.exists());
    Ok(())
}

#[test]
fn kvm_vmm_graceful_stop_times_out_to_hard() -> Result<()> {
    let mut vmm = spawn(json!({"cmdline": "run=spin"}), &[])?;
    vmm.wait_event("boot_complete")?;
    let stop = vmm.request(json!({"op": "stop", "graceful": true, "timeout_ms": 50}))?;
    assert!(stop.ok, "{stop:?}");
    // The test guest does not poll the stop request: the hard stop ends it.
    assert_eq!(stop.stop_mode, Some(StopMode::Hard));
    assert!(stop.latency_us.unwrap() >= 50_000);
    let f = vmm.finish()?;
    assert_eq!(exit_reason(f.exited()), (ExitReason::Stopped, 0));
    Ok(())
}

#[test]
fn kvm_vmm_stop_while_paused() -> Result<()> {
    let mut vmm = spawn(json!({"cmdline": "run=spin"}), &[])?;
    vmm.wait_event("boot_complete")?;
    assert!(vmm.request(json!({"op": "pause"}))?.ok);
    let stop = vmm.request(json!({"op": "stop"}))?;
    assert!(stop.ok);
    let f = vmm.finish()?;
    assert_eq!(f.status.code(), Some(0));
    assert_eq!(exit_reason(f.exited()), (ExitReason::Stopped, 0));
    Ok(())
}

#[test]
fn kvm_vmm_sigterm_stops_cleanly() -> Result<()> {
    let mut vmm = spawn(json!({"cmdline": "run=spin"}), &[])?;
    vmm.wait_event("boot_complete")?;
    let killed = std::process::Command::new("kill")
        .arg("-TERM")
        .arg(vmm.pid().to_string())
        .status()?;
    assert!(killed.success());
    let f = vmm.finish()?;
    assert_eq!(f.status.code(), Some(0));
    assert_eq!(exit_reason(f.exited()), (ExitReason::Stopped, 0));
    assert!(!f.sock.exists(), "socket removed after SIGTERM");
    Ok(())
}

#[test]
fn kvm_vmm_control_socket_rejects_bad_requests() -> Result<()> {
    let mut vmm = spawn(json!({"cmdline": "run=spin"}), &[])?;
    vmm.wait_event("ready")?;
    for bad in [
        json!({"op": "explode"}),
        json!({"op": "status", "x": 1}),
        json!([1]),
    ] {
        let r = vmm.request(bad)?;
        assert!(!r.ok);
        assert_eq!(r.error.unwrap().kind, ErrorKind::InvalidRequest);
    }
    assert!(vmm.request(json!({"op": "status"}))?.ok, "still serving");
    assert!(vmm.request(json!({"op": "stop", "graceful": false}))?.ok);
    assert_eq!(vmm.finish()?.status.code(), Some(0));
    Ok(())
}

#[test]
fn kvm_vmm_boots_with_four_vcpus() -> Result<()> {
    let f = run_to_end(json!({"vcpus": 4, "cmdline": "exit=halt"}))?;
    assert!(f.status.success(), "{}", f.stderr);
    match &f.events[0].kind {
        EventKind::Ready { vcpus, .. } => assert_eq!(*vcpus, 4),
        other => panic!("{other:?}"),
    }
    assert_eq!(exit_reason(f.exited()), (ExitReason::Poweroff, 0));
    Ok(())
}

#[test]
fn kvm_vmm_boot_complete_since_start_request() -> Result<()> {
    let f = {
        let vmm = spawn(json!({"cmdline": "exit=halt"}), &["--start-ts-ns", "1"])?;
        vmm.finish()?
    };
    let since = f.events.iter().find_map(|e| match &e.kind {
        EventKind::BootComplete { since_request_us } => Some(*since_request_us),
        _ => None,
    });
    // CLOCK_MONOTONIC at boot complete minus 1 ns: the machine's uptime, far above t_us.
    let since = since
        .expect("boot_complete event")
        .expect("since_request_us");
    let t = f
        .events
        .iter()
        .find(|e| matches!(e.kind, EventKind::BootComplete { .. }))
        .unwrap()
        .t_us;
    assert!(since > t, "{since} > {t}");
    assert!(f.stderr.contains("boot complete"), "{}", f.stderr);
    Ok(())
}

#[test]
fn kvm_vmm_kernel_digest_is_checked() -> Result<()> {
    let bytes = std::fs::read(common::guest())?;
    let good = {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let f = run_to_end(json!({"kernel_sha256": good, "cmdline": "exit=halt"}))?;
    assert!(f.status.success(), "{}", f.stderr);
    let (status, stderr, left) = common::run_refused(&json!({
        "kernel": common::guest(), "kernel_sha256": "00".repeat(32),
    }))?;
    assert_eq!(status.code(), Some(1));
    assert!(stderr.contains("kernel digest mismatch"), "{stderr}");
    assert_eq!(left, ["vm.json"]);
    Ok(())
}
