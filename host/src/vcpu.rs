//! The vCPU threads: the KVM_RUN loop, exit dispatch, and pause/stop parking.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kvm_bindings::{KVM_SYSTEM_EVENT_RESET, KVM_SYSTEM_EVENT_SHUTDOWN};
use kvm_ioctls::{VcpuExit, VcpuFd};

use crate::devices::{AccessCounters, Devices, PortAction};
use crate::events::{ExitReason, Timeline};
use crate::kvm::sys;

const RUN: u8 = 0;
const PAUSE: u8 = 1;
const STOP: u8 = 2;

/// What every vCPU thread shares.
pub(crate) struct VcpuShared {
    pub(crate) devices: Mutex<Devices>,
    pub(crate) timeline: Arc<Timeline>,
    pub(crate) unknown: Arc<AccessCounters>,
    pub(crate) control: RunControl,
    pub(crate) to_main: Sender<crate::vmm::MainMsg>,
}

/// Why a VM ended, as seen by a vCPU.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct GuestExit {
    pub reason: ExitReason,
    pub detail: Option<String>,
}

impl GuestExit {
    fn new(reason: ExitReason, detail: Option<String>) -> Self {
        Self { reason, detail }
    }
}

/// The requested run state of all vCPUs, and how many have reached it.
pub(crate) struct RunControl {
    request: AtomicU8,
    counts: Mutex<Counts>,
    changed: Condvar,
    vcpus: u32,
}

#[derive(Default)]
struct Counts {
    paused: u32,
    exited: u32,
}

impl RunControl {
    pub(crate) fn new(vcpus: u32) -> Self {
        Self {
            request: AtomicU8::new(RUN),
            counts: Mutex::new(Counts::default()),
            changed: Condvar::new(),
            vcpus,
        }
    }

    fn lock(&self) -> MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Asks every vCPU to pause; the caller kicks them.
    pub(crate) fn request_pause(&self) {
        let _ = self
            .request
            .compare_exchange(RUN, PAUSE, Ordering::AcqRel, Ordering::Acquire);
    }

    /// Releases paused vCPUs.
    pub(crate) fn request_resume(&self) {
        let _guard = self.lock();
        let _ = self
            .request
            .compare_exchange(PAUSE, RUN, Ordering::AcqRel, Ordering::Acquire);
        self.changed.notify_all();
    }

    /// Asks every vCPU to leave its loop; the caller kicks them.
    pub(crate) fn request_stop(&self) {
        let _guard = self.lock();
        self.request.store(STOP, Ordering::Release);
        self.changed.notify_all();
    }

    /// Waits until every vCPU still running is parked. False on timeout.
    pub(crate) fn wait_paused(&self, timeout: Duration) -> bool {
        self.wait(timeout, |c| c.paused + c.exited >= self.vcpus)
    }

    /// Waits until no vCPU is parked any more. False on timeout.
    pub(crate) fn wait_resumed(&self, timeout: Duration) -> bool {
        self.wait(timeout, |c| c.paused == 0)
    }

    /// Waits until every vCPU left its loop. False on timeout.
    pub(crate) fn wait_exited(&self, timeout: Duration) -> bool {
        self.wait(timeout, |c| c.exited >= self.vcpus)
    }

    fn wait(&self, timeout: Duration, done: impl Fn(&Counts) -> bool) -> bool {
        let deadline = Instant::now() + timeout;
        let mut counts = self.lock();
        while !done(&counts) {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            counts = self
                .changed
                .wait_timeout(counts, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        true
    }

    /// Parks the calling vCPU while a pause is requested.
    fn park(&self) {
        let mut counts = self.lock();
        counts.paused += 1;
        self.changed.notify_all();
        while self.request.load(Ordering::Acquire) == PAUSE {
            counts = self.changed.wait(counts).unwrap_or_else(|e| e.into_inner());
        }
        counts.paused -= 1;
        self.changed.notify_all();
    }

    fn mark_exited(&self) {
        let mut counts = self.lock();
        counts.exited += 1;
        self.changed.notify_all();
    }
}

/// What to do after an exit was handled.
enum Flow {
    Continue,
    Exit(GuestExit),
    InternalError,
}

/// Runs vCPU `id` until the VM ends or a stop is requested. Returns the vCPU so that its file
/// is not closed (VM teardown is left to process exit).
pub(crate) fn run(id: u32, mut vcpu: VcpuFd, shared: Arc<VcpuShared>) -> VcpuFd {
    let registration = sys::KickRegistration::new(&mut vcpu);
    let mut exit = None;
    loop {
        match shared.control.request.load(Ordering::Acquire) {
            RUN => {}
            PAUSE => {
                shared.control.park();
                continue;
            }
            _ => break,
        }
        let flow = match vcpu.run() {
            Ok(vm_exit) => handle_exit(&shared, vm_exit),
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
                Flow::Continue
            }
            Err(e) => Flow::Exit(GuestExit::new(
                ExitReason::RunError,
                Some(format!("KVM_RUN failed on vCPU {id}: {e}")),
            )),
        };
        match flow {
            Flow::Continue => {}
            Flow::InternalError => {
                let (suberror, data) = sys::internal_error(&mut vcpu);
                exit = Some(GuestExit::new(
                    ExitReason::InternalError,
                    Some(format!(
                        "vCPU {id}: KVM internal error, suberror {suberror}, data {data:x?}"
                    )),
                ));
                break;
            }
            Flow::Exit(e) => {
                exit = Some(e);
                break;
            }
        }
    }
    drop(registration);
    if let Some(e) = exit {
        let _ = shared.to_main.send(crate::vmm::MainMsg::Guest(e));
    }
    shared.control.mark_exited();
    vcpu
}

fn handle_exit(shared: &VcpuShared, exit: VcpuExit<'_>) -> Flow {
    let mut devices = shared.devices.lock().unwrap_or_else(|e| e.into_inner());
    // Serial bytes KVM queued came before this exit.
    devices.drain_queued();
    match exit {
        VcpuExit::IoOut(port, data) => {
            let action = devices.pio_write(port, data);
            drop(devices);
            match action {
                PortAction::None => Flow::Continue,
                PortAction::BootComplete => {
                    shared.timeline.mark_boot_complete();
                    Flow::Continue
                }
                PortAction::Reset => Flow::Exit(GuestExit::new(ExitReason::Reboot, None)),
                PortAction::PowerOff => Flow::Exit(GuestExit::new(ExitReason::Poweroff, None)),
            }
        }
        VcpuExit::IoIn(port, data) => {
            devices.pio_read(port, data);
            Flow::Continue
        }
        VcpuExit::MmioRead(addr, data) => {
            shared.unknown.mmio(addr, false);
            data.fill(0xff);
            Flow::Continue
        }
        VcpuExit::MmioWrite(addr, _) => {
            shared.unknown.mmio(addr, true);
            Flow::Continue
        }
        VcpuExit::Hlt | VcpuExit::IrqWindowOpen | VcpuExit::Intr => Flow::Continue,
        VcpuExit::Shutdown => Flow::Exit(GuestExit::new(
            ExitReason::TripleFault,
            Some("KVM_EXIT_SHUTDOWN".into()),
        )),
        VcpuExit::FailEntry(reason, cpu) => Flow::Exit(GuestExit::new(
            ExitReason::FailEntry,
            Some(format!(
                "hardware entry failure reason {reason:#x} on CPU {cpu}"
            )),
        )),
        VcpuExit::InternalError => Flow::InternalError,
        VcpuExit::SystemEvent(kind, _) => match kind {
            KVM_SYSTEM_EVENT_RESET => Flow::Exit(GuestExit::new(ExitReason::Reboot, None)),
            KVM_SYSTEM_EVENT_SHUTDOWN => Flow::Exit(GuestExit::new(ExitReason::Poweroff, None)),
            other => Flow::Exit(GuestExit::new(
                ExitReason::UnexpectedExit,
                Some(format!("system event {other}")),
            )),
        },
        other => Flow::Exit(GuestExit::new(
            ExitReason::UnexpectedExit,
            Some(format!("{other:?}")),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pause_resume_stop_counts() {
        let rc = Arc::new(RunControl::new(2));
        rc.request_pause();
        let workers: Vec<_> = (0..2)
            .map(|_| {
                let rc = rc.clone();
                std::thread::spawn(move || {
                    loop {
                        match rc.request.load(Ordering::Acquire) {
                            PAUSE => rc.park(),
                            STOP => break,
                            _ => std::thread::yield_now(),
                        }
                    }
                    rc.mark_exited();
                })
            })
            .collect();
        assert!(rc.wait_paused(Duration::from_secs(10)));
        rc.request_resume();
        assert!(rc.wait_resumed(Duration::from_secs(10)));
        rc.request_stop();
        assert!(rc.wait_exited(Duration::from_secs(10)));
        for w in workers {
            w.join().unwrap();
        }
    }

    #[test]
    fn waits_time_out() {
        let rc = RunControl::new(1);
        rc.request_pause();
        assert!(!rc.wait_paused(Duration::from_millis(10)));
        assert!(!rc.wait_exited(Duration::from_millis(10)));
        assert!(rc.wait_resumed(Duration::from_millis(10)));
    }
}
