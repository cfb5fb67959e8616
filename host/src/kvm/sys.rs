//! Every `unsafe` block of sakshi-host lives here, each with its justification.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::fd::{FromRawFd, RawFd};

use kvm_bindings::{kvm_run, kvm_userspace_memory_region};
use kvm_ioctls::{VcpuFd, VmFd};
use vm_memory::{GuestMemoryBackend, GuestMemoryMmap, GuestMemoryRegion};

thread_local! {
    /// The `kvm_run` page of the vCPU this thread runs, for the kick signal handler.
    static KVM_RUN: Cell<*mut kvm_run> = const { Cell::new(std::ptr::null_mut()) };
}

/// The signal used to kick vCPU threads out of `KVM_RUN`.
pub(crate) fn kick_signal() -> libc::c_int {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn kick_handler(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {
    let run = KVM_RUN.with(Cell::get);
    if !run.is_null() {
        // SAFETY: the pointer was registered by this very thread from its live `VcpuFd` (whose
        // `kvm_run` mapping outlives the registration, see `KickRegistration`), and the handler
        // runs on that thread. A volatile byte store is async-signal-safe; KVM reads the flag
        // on the next KVM_RUN, so the kick cannot be lost between the flag check and the ioctl.
        unsafe { std::ptr::write_volatile(&raw mut (*run).immediate_exit, 1) };
    }
}

/// Installs the kick handler (process-wide, idempotent).
pub(crate) fn install_kick_handler() -> io::Result<()> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), kick_handler)
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))
}

/// While alive, the kick signal sets `immediate_exit` of this thread's vCPU.
pub(crate) struct KickRegistration(());

impl KickRegistration {
    /// Registers `vcpu` for the calling thread. The registration must be dropped (on the same
    /// thread) before `vcpu` is; it borrows nothing so the run loop can keep using `vcpu`.
    pub(crate) fn new(vcpu: &mut VcpuFd) -> Self {
        let run: *mut kvm_run = vcpu.get_kvm_run();
        KVM_RUN.with(|c| c.set(run));
        Self(())
    }
}

impl Drop for KickRegistration {
    fn drop(&mut self) {
        KVM_RUN.with(|c| c.set(std::ptr::null_mut()));
    }
}

/// Registers every region of `mem` with the VM as slots 0, 1, ...
///
/// The caller keeps `mem` mapped for as long as `vm` exists (`kvm::Vm` owns both and drops
/// the VM file first).
pub(crate) fn register_guest_memory(
    vm: &VmFd,
    mem: &GuestMemoryMmap,
) -> Result<(), kvm_ioctls::Error> {
    for (slot, region) in mem.iter().enumerate() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|_| kvm_ioctls::Error::new(libc::EINVAL))?;
        let desc = kvm_userspace_memory_region {
            slot: slot as u32,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: host as u64,
        };
        // SAFETY: `host` points to a live anonymous mapping of exactly `region.len()` bytes that
        // belongs to `mem`; the caller guarantees `mem` outlives the VM, so the kernel never
        // sees a dangling userspace address. Slots are distinct and regions do not overlap.
        unsafe { vm.set_user_memory_region(desc)? };
    }
    Ok(())
}

/// `KVM_EXIT_INTERNAL_ERROR` details: sub-error code and the first data words.
pub(crate) fn internal_error(vcpu: &mut VcpuFd) -> (u32, Vec<u64>) {
    let run = vcpu.get_kvm_run();
    // SAFETY: only called right after KVM_RUN returned KVM_EXIT_INTERNAL_ERROR, so the kernel
    // filled the `internal` member of the exit union; it is plain data.
    let internal = unsafe { run.__bindgen_anon_1.internal };
    let n = (internal.ndata as usize).min(internal.data.len());
    (internal.suberror, internal.data[..n].to_vec())
}

/// CLOCK_MONOTONIC in nanoseconds (the clock `--start-ts-ns` is read against).
pub(crate) fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; CLOCK_MONOTONIC always exists on Linux.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64) * 1_000_000_000 + ts.tv_nsec as u64
}

/// Takes ownership of the inherited descriptor `fd` (the events fd) after checking it is open.
pub(crate) fn file_from_inherited_fd(fd: RawFd) -> io::Result<File> {
    if fd < 0 {
        return Err(io::Error::from_raw_os_error(libc::EBADF));
    }
    // SAFETY: F_GETFD only inspects the descriptor table entry.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
    if flags < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: same as above; marks the descriptor close-on-exec.
    unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) };
    // SAFETY: the descriptor is open (checked above), was handed to this process to own, and
    // nothing else in the process wraps it: `--events-fd` is parsed once.
    Ok(unsafe { File::from_raw_fd(fd) })
}

/// The termination signals the VMM turns into a hard stop.
const TERMINATION: [libc::c_int; 3] = [libc::SIGTERM, libc::SIGINT, libc::SIGHUP];

/// Blocks the termination signals in the calling thread and the threads it spawns afterwards,
/// so that only [`wait_termination_signal`] receives them.
pub(crate) fn block_termination_signals() -> io::Result<()> {
    let set = termination_set()?;
    // SAFETY: `set` is an initialised sigset; the old mask is not requested.
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(())
}

/// Waits for a termination signal and returns its number.
pub(crate) fn wait_termination_signal() -> io::Result<libc::c_int> {
    let set = termination_set()?;
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is initialised, `sig` is writable; the signals are blocked in every thread.
    let rc = unsafe { libc::sigwait(&set, &mut sig) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(sig)
}

fn termination_set() -> io::Result<libc::sigset_t> {
    vmm_sys_util::signal::create_sigset(&TERMINATION)
        .map_err(|e| io::Error::from_raw_os_error(e.errno()))
}
