//! The supervisor against the real `sakshi-vmm`, real KVM and the real test guest.
//!
//! Every test needs `/dev/kvm` (hence `kvm_`); they fail, never skip, without it.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use sakshi_host::supervisor::{
    BootMeasurement, BootMeasurer, FailReason, MeasureError, NoopMeasurer, StartError, StateKind,
    StopMode, Supervisor, SupervisorConfig, VmEvent, VmId, VmSpec, VmState,
};
use sakshi_host::test_guest::test_guest_path;
use sakshi_host::{ExitReason, RunState};

const BOOT: Duration = Duration::from_secs(60);

struct Harness {
    dir: tempfile::TempDir,
    sup: Supervisor,
    events: Receiver<VmEvent>,
}

impl Harness {
    fn new() -> Result<Self> {
        Self::with_measurer(Arc::new(NoopMeasurer))
    }

    fn with_measurer(measurer: Arc<dyn BootMeasurer>) -> Result<Self> {
        assert!(Path::new("/dev/kvm").exists(), "these tests need /dev/kvm");
        let dir = tempfile::tempdir()?;
        let mut config =
            SupervisorConfig::new(env!("CARGO_BIN_EXE_sakshi-vmm"), dir.path().join("run"));
        config.stop_timeout = Duration::from_secs(10);
        let sup = Supervisor::new(config, measurer)?;
        let events = sup.subscribe();
        Ok(Self { dir, sup, events })
    }

    fn runtime(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn boot(&self, cmdline: &str) -> Result<VmId> {
        let id = self
            .sup
            .create(VmSpec::new(test_guest_path(), cmdline, 128))?;
        self.sup.start(&id)?;
        Ok(id)
    }

    fn wait_running(&self, id: &VmId) -> Result<()> {
        let state = self.sup.wait_for(id, BOOT, |s| *s != VmState::Booting)?;
        ensure!(
            state == VmState::Running,
            "VM {id} is {state}; console: {}",
            self.console(id)
        );
        Ok(())
    }

    fn wait_final(&self, id: &VmId) -> Result<VmState> {
        Ok(self.sup.wait_for(id, BOOT, VmState::is_final)?)
    }

    fn console(&self, id: &VmId) -> String {
        self.sup
            .console_tail(id, 64 * 1024)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    }

    /// Events received so far for `id`, as (seq, state kind).
    fn seen(&self, all: &mut Vec<VmEvent>, id: &VmId) -> Vec<(u64, StateKind)> {
        all.extend(self.events.try_iter());
        all.iter()
            .filter(|e| &e.vm_id == id)
            .map(|e| (e.seq, e.state.kind()))
            .collect()
    }

    fn runtime_entries(&self) -> usize {
        std::fs::read_dir(self.runtime()).map_or(0, |d| d.count())
    }
}

/// Live child processes of this test process (any thread) whose command line mentions `needle`.
fn children_mentioning(needle: &str) -> Vec<u32> {
    let me = std::process::id();
    let mut found = BTreeSet::new();
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{me}/task")) else {
        return Vec::new();
    };
    for task in tasks.flatten() {
        let children = std::fs::read_to_string(task.path().join("children")).unwrap_or_default();
        for pid in children
            .split_whitespace()
            .filter_map(|p| p.parse::<u32>().ok())
        {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if String::from_utf8_lossy(&cmdline).contains(needle) {
                found.insert(pid);
            }
        }
    }
    found.into_iter().collect()
}

fn process_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[test]
fn kvm_boot_reaches_running_with_ordered_events_then_stops() -> Result<()> {
    let h = Harness::new()?;
    let id = h.boot("run=spin marker=supervisor")?;
    h.wait_running(&id)?;
    let console = h.console(&id);
    ensure!(console.contains("boot-complete\n"), "console: {console}");
    let details = h.sup.show(&id)?;
    let trace = details.summary.trace_id.to_string();
    ensure!(
        console.contains(&format!("trace: {trace}\n")),
        "the guest did not get the trace id: {console}"
    );
    ensure!(
        details.cmdline.as_deref() == Some(&*format!("run=spin marker=supervisor trace={trace}"))
    );
    let pid = details.summary.vmm_pid.context("no pid while running")?;
    ensure!(details.summary.boot_latency_ns.is_some_and(|n| n > 0));
    let listed = h.sup.list();
    ensure!(listed.len() == 1 && listed[0].vmm_pid == Some(pid));
    let mem = listed[0].vmm_memory.context("no RSS for a live VMM")?;
    ensure!(mem.rss_kib > 0 && mem.hwm_kib >= mem.rss_kib, "{mem:?}");
    let status = h.sup.vmm_status(&id)?;
    ensure!(
        status.state == RunState::Running && status.memory_mib == 128,
        "{status:?}"
    );

    let state = h.sup.stop(&id, StopMode::Graceful)?;
    ensure!(state == VmState::Stopped, "{state}");
    ensure!(!process_exists(pid), "VMM {pid} still exists");
    let mut all = Vec::new();
    let seen = h.seen(&mut all, &id);
    ensure!(
        seen == vec![
            (1, StateKind::Created),
            (2, StateKind::Booting),
            (3, StateKind::Running),
            (4, StateKind::Stopped)
        ],
        "{seen:?}"
    );
    ensure!(all.iter().all(|e| e.trace_id.to_string() == trace));
    ensure!(all[2].boot_latency_ns.is_some() && all[1].vmm_pid == Some(pid));
    let exit = all[3].exit.clone().context("no exit info")?;
    ensure!(
        exit.code == Some(0) && exit.reason == Some(ExitReason::Stopped),
        "{exit:?}"
    );
    ensure!(exit.peak_rss_kib.is_some_and(|k| k > 0));
    ensure!(h.sup.show(&id)?.history == all);

    h.sup.destroy(&id)?;
    ensure!(h.runtime_entries() == 0, "runtime directory left behind");
    Ok(())
}

#[test]
fn kvm_pause_and_resume_through_the_control_socket() -> Result<()> {
    let h = Harness::new()?;
    let id = h.boot("run=spin")?;
    h.wait_running(&id)?;
    h.sup.pause(&id)?;
    ensure!(h.sup.show(&id)?.summary.state == VmState::Paused);
    let paused = h.sup.vmm_status(&id)?;
    ensure!(paused.state == RunState::Paused, "{paused:?}");
    // Pausing twice is an invalid transition, reported without touching the VMM.
    ensure!(h.sup.pause(&id).is_err());
    h.sup.resume(&id)?;
    let running = h.sup.vmm_status(&id)?;
    ensure!(running.state == RunState::Running, "{running:?}");
    // A paused VM can be stopped directly.
    h.sup.pause(&id)?;
    ensure!(h.sup.stop(&id, StopMode::Hard)? == VmState::Stopped);
    let mut all = Vec::new();
    let kinds: Vec<StateKind> = h.seen(&mut all, &id).into_iter().map(|(_, k)| k).collect();
    ensure!(
        kinds
            == vec![
                StateKind::Created,
                StateKind::Booting,
                StateKind::Running,
                StateKind::Paused,
                StateKind::Running,
                StateKind::Paused,
                StateKind::Stopped
            ],
        "{kinds:?}"
    );
    h.sup.destroy(&id)?;
    Ok(())
}

#[test]
fn kvm_guest_reboot_ends_in_stopped() -> Result<()> {
    let h = Harness::new()?;
    let id = h.boot("exit=reboot")?;
    let state = h.wait_final(&id)?;
    ensure!(
        state == VmState::Stopped,
        "{state}; console: {}",
        h.console(&id)
    );
    let details = h.sup.show(&id)?;
    let exit = details.exit.context("no exit info")?;
    ensure!(
        exit.code == Some(0) && exit.reason == Some(ExitReason::Reboot),
        "{exit:?}"
    );
    ensure!(h.console(&id).ends_with("exit: reboot\n"));
    let kinds: Vec<StateKind> = details.history.iter().map(|e| e.state.kind()).collect();
    ensure!(
        kinds
            == vec![
                StateKind::Created,
                StateKind::Booting,
                StateKind::Running,
                StateKind::Stopped
            ],
        "{kinds:?}"
    );
    h.sup.destroy(&id)?;
    Ok(())
}

#[test]
fn kvm_triple_fault_ends_in_failed_with_the_reason() -> Result<()> {
    let h = Harness::new()?;
    let id = h.boot("fault=triple")?;
    let state = h.wait_final(&id)?;
    match &state {
        VmState::Failed(FailReason::GuestFailed {
            reason: Some(r), ..
        }) => {
            ensure!(
                matches!(
                    r,
                    ExitReason::TripleFault | ExitReason::InternalError | ExitReason::RunError
                ),
                "{r:?}"
            );
        }
        other => bail!(
            "expected a guest failure, got {other}; console: {}",
            h.console(&id)
        ),
    }
    ensure!(h.console(&id).contains("fault: triple"));
    let exit = h.sup.show(&id)?.exit.context("no exit info")?;
    ensure!(exit.code == Some(2), "{exit:?}");
    h.sup.destroy(&id)?;
    Ok(())
}

#[test]
fn kvm_sigkill_fails_one_vm_and_its_neighbour_keeps_running() -> Result<()> {
    let h = Harness::new()?;
    let victim = h.boot("run=spin")?;
    let neighbour = h.boot("run=spin")?;
    h.wait_running(&victim)?;
    h.wait_running(&neighbour)?;
    let pid = h.sup.show(&victim)?.summary.vmm_pid.context("no pid")?;
    let killed = std::process::Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()?;
    ensure!(killed.success());
    let state = h.wait_final(&victim)?;
    ensure!(
        state == VmState::Failed(FailReason::KilledBySignal { signal: 9 }),
        "{state}"
    );
    ensure!(state.to_string().contains("killed by signal 9"));

    ensure!(h.sup.show(&neighbour)?.summary.state == VmState::Running);
    let before = h.sup.vmm_status(&neighbour)?;
    std::thread::sleep(Duration::from_millis(200));
    let after = h.sup.vmm_status(&neighbour)?;
    ensure!(
        after.uptime_us > before.uptime_us && after.state == RunState::Running,
        "neighbour not advancing: {before:?} {after:?}"
    );
    let mut all = Vec::new();
    let neighbour_kinds: Vec<StateKind> = h
        .seen(&mut all, &neighbour)
        .into_iter()
        .map(|(_, k)| k)
        .collect();
    ensure!(
        neighbour_kinds == vec![StateKind::Created, StateKind::Booting, StateKind::Running],
        "the neighbour saw {neighbour_kinds:?}"
    );
    ensure!(h.sup.stop(&neighbour, StopMode::Hard)? == VmState::Stopped);
    h.sup.destroy(&victim)?;
    h.sup.destroy(&neighbour)?;
    ensure!(h.runtime_entries() == 0);
    Ok(())
}

#[test]
fn kvm_ten_vms_run_together_and_stop_without_leftovers() -> Result<()> {
    let h = Harness::new()?;
    let ids: Vec<VmId> = (0..10).map(|_| h.boot("run=spin")).collect::<Result<_>>()?;
    for id in &ids {
        h.wait_running(id)?;
    }
    let listed = h.sup.list();
    ensure!(
        listed
            .iter()
            .filter(|v| v.state == VmState::Running)
            .count()
            == 10
    );
    let pids: Vec<u32> = listed.iter().filter_map(|v| v.vmm_pid).collect();
    ensure!(pids.len() == 10);
    let runtime = h.runtime().display().to_string();
    ensure!(children_mentioning(&runtime).len() == 10);

    std::thread::scope(|s| -> Result<()> {
        let stops: Vec<_> = ids
            .iter()
            .map(|id| s.spawn(|| h.sup.stop(id, StopMode::Hard)))
            .collect();
        for t in stops {
            let state = t
                .join()
                .map_err(|_| anyhow::anyhow!("stop thread panicked"))??;
            ensure!(state == VmState::Stopped, "{state}");
        }
        Ok(())
    })?;
    for id in &ids {
        h.sup.destroy(id)?;
    }
    ensure!(pids.iter().all(|p| !process_exists(*p)), "a VMM survived");
    ensure!(children_mentioning(&runtime).is_empty());
    ensure!(h.runtime_entries() == 0, "runtime files left behind");
    ensure!(h.sup.list().is_empty());
    Ok(())
}

struct Refuse;

impl BootMeasurer for Refuse {
    fn measure(&self, _m: &BootMeasurement<'_>) -> Result<(), MeasureError> {
        Err(MeasureError::Refused {
            reason: "image not approved".into(),
        })
    }
}

#[test]
fn kvm_refusing_measurer_fails_the_vm_and_spawns_nothing() -> Result<()> {
    let h = Harness::with_measurer(Arc::new(Refuse))?;
    let id = h
        .sup
        .create(VmSpec::new(test_guest_path(), "exit=halt", 128))?;
    let err = h.sup.start(&id).unwrap_err();
    ensure!(
        matches!(err, StartError::Measure(MeasureError::Refused { .. })),
        "{err:?}"
    );
    let details = h.sup.show(&id)?;
    ensure!(
        details.summary.state
            == VmState::Failed(FailReason::MeasurementRefused {
                message: "image not approved".into()
            })
    );
    ensure!(details.history.iter().all(|e| e.vmm_pid.is_none()));
    ensure!(children_mentioning(&h.runtime().display().to_string()).is_empty());
    let files: Vec<_> = std::fs::read_dir(&details.runtime_dir)?.collect();
    ensure!(
        files.is_empty(),
        "runtime files for a VM that never ran: {files:?}"
    );
    h.sup.destroy(&id)?;
    Ok(())
}

/// Changes the kernel file after it was hashed: the VMM must refuse the changed bytes.
struct Tamper(PathBuf);

impl BootMeasurer for Tamper {
    fn measure(&self, _m: &BootMeasurement<'_>) -> Result<(), MeasureError> {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&self.0)
            .map_err(|e| MeasureError::Unavailable { source: e.into() })?;
        f.write_all(b"tampered")
            .map_err(|e| MeasureError::Unavailable { source: e.into() })?;
        Ok(())
    }
}

#[test]
fn kvm_kernel_changed_after_measurement_is_refused_by_the_vmm() -> Result<()> {
    let scratch = tempfile::tempdir()?;
    let kernel = scratch.path().join("guest.elf");
    std::fs::copy(test_guest_path(), &kernel)?;
    let h = Harness::with_measurer(Arc::new(Tamper(kernel.clone())))?;
    let id = h.sup.create(VmSpec::new(&kernel, "exit=halt", 128))?;
    h.sup.start(&id)?;
    let state = h.wait_final(&id)?;
    ensure!(
        matches!(state, VmState::Failed(FailReason::VmmRejected { .. })),
        "{state}"
    );
    ensure!(!h.console(&id).contains("boot-complete"));
    h.sup.destroy(&id)?;
    Ok(())
}
