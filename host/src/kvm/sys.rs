//! Every `unsafe` block of sakshi-host lives here, each with its justification.
#![allow(unsafe_code)]

use std::cell::Cell;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::ptr::NonNull;
use std::sync::atomic::{Ordering, fence};

use kvm_bindings::{
    KVM_COALESCED_MMIO_PAGE_OFFSET, kvm_coalesced_mmio, kvm_coalesced_mmio_ring, kvm_run,
    kvm_userspace_memory_region,
};
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

/// The VM's coalesced I/O ring (`KVM_COALESCED_MMIO_PAGE_OFFSET` of a vCPU file): writes to a
/// registered zone are appended here by KVM instead of exiting to the VMM. One page shared by
/// every vCPU of the VM; KVM produces at `last`, the VMM consumes at `first`.
pub(crate) struct CoalescedRing {
    page: NonNull<kvm_coalesced_mmio_ring>,
    page_size: usize,
    capacity: u32,
}

// SAFETY: the ring is a shared mapping that stays valid until `drop`; the only consumer state
// (`first`) is written through `&mut self`, so moving the owner between threads is sound.
unsafe impl Send for CoalescedRing {}

impl CoalescedRing {
    /// Maps the ring page of the VM through `vcpu`.
    pub(crate) fn map(vcpu: &VcpuFd) -> io::Result<Self> {
        // SAFETY: sysconf has no memory effects.
        let page_size = match unsafe { libc::sysconf(libc::_SC_PAGESIZE) } {
            n if n > 0 => n as usize,
            _ => return Err(io::Error::last_os_error()),
        };
        let offset = libc::off_t::from(KVM_COALESCED_MMIO_PAGE_OFFSET) * page_size as libc::off_t;
        // SAFETY: a new shared mapping of one page of the vCPU file at the offset KVM documents
        // for the coalesced ring; nothing else lives at the address the kernel picks.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                page_size,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                vcpu.as_raw_fd(),
                offset,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let page = NonNull::new(addr.cast()).ok_or_else(io::Error::last_os_error)?;
        let capacity = ((page_size - size_of::<kvm_coalesced_mmio_ring>())
            / size_of::<kvm_coalesced_mmio>()) as u32;
        Ok(Self {
            page,
            page_size,
            capacity,
        })
    }

    /// Whether KVM has appended entries not consumed yet.
    pub(crate) fn is_empty(&self) -> bool {
        let ring = self.page.as_ptr();
        // SAFETY: `ring` points to the live mapped page; `first` and `last` are u32 fields that
        // KVM and this process update with plain stores, read here with volatile loads.
        unsafe {
            std::ptr::read_volatile(&raw const (*ring).first)
                == std::ptr::read_volatile(&raw const (*ring).last)
        }
    }

    /// Consumes every entry, oldest first: `f(port or address, data)`.
    pub(crate) fn drain(&mut self, mut f: impl FnMut(u64, &[u8])) {
        let ring = self.page.as_ptr();
        // SAFETY: as in `is_empty`; the entries array follows the header inside the page and
        // `capacity` entries fit in it. KVM writes an entry before it publishes `last` (with a
        // write barrier), so after the acquire fence the entries before `last` are complete;
        // KVM does not touch entries between `first` and `last` until `first` moves past them.
        unsafe {
            let last = std::ptr::read_volatile(&raw const (*ring).last);
            fence(Ordering::Acquire);
            let mut first = std::ptr::read_volatile(&raw const (*ring).first);
            if last >= self.capacity || first >= self.capacity {
                return;
            }
            let entries = (&raw const (*ring).coalesced_mmio).cast::<kvm_coalesced_mmio>();
            while first != last {
                let e = std::ptr::read_volatile(entries.add(first as usize));
                let len = (e.len as usize).min(e.data.len());
                f(e.phys_addr, &e.data[..len]);
                first = (first + 1) % self.capacity;
                fence(Ordering::Release);
                std::ptr::write_volatile(&raw mut (*ring).first, first);
            }
        }
    }
}

impl Drop for CoalescedRing {
    fn drop(&mut self) {
        // SAFETY: the page was mapped by `map` with this size and is not used after this.
        unsafe { libc::munmap(self.page.as_ptr().cast(), self.page_size) };
    }
}

/// Leaves the last references to the VM (and everything else this process has open) to a child
/// process that waits for this process to exit, then exits itself. Closing a VM file makes the
/// kernel tear the VM down (PIT and device unregistration, each waiting for a grace period: often
/// 10-20 ms on a busy host); done in the child, that no longer delays this process's exit status.
///
/// Before the fork, guest memory is excluded from the child (`MADV_DONTFORK`, nothing to copy),
/// and stdin/stdout/stderr are pointed at /dev/null so that readers of this process's output see
/// EOF when this process exits, not when the child does. The caller has closed every other
/// descriptor a reader waits on (the events fd) and must exit right after this returns.
pub(crate) fn hand_over_teardown(mem: &GuestMemoryMmap) -> io::Result<()> {
    for region in mem.iter() {
        let host = region
            .get_host_address(vm_memory::MemoryRegionAddress(0))
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: `host`..`host + len` is one live anonymous mapping owned by `mem`; the advice
        // only changes what a later fork copies.
        let rc = unsafe { libc::madvise(host.cast(), region.len() as usize, libc::MADV_DONTFORK) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    // SAFETY: pidfd_open(2) on this process; no pointers.
    let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, libc::getpid(), 0) };
    if pidfd < 0 {
        return Err(io::Error::last_os_error());
    }
    let pidfd = pidfd as RawFd;
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null");
    let devnull = match devnull {
        Ok(f) => f,
        Err(e) => {
            // SAFETY: `pidfd` was opened above and is not used elsewhere.
            unsafe { libc::close(pidfd) };
            return Err(e);
        }
    };
    for fd in 0..3 {
        // SAFETY: dup2 onto the standard descriptors; the caller has flushed and no longer
        // writes guest output, and Rust's std handles tolerate writes to /dev/null.
        unsafe { libc::dup2(devnull.as_raw_fd(), fd) };
    }
    drop(devnull);
    // SAFETY: fork in a multi-threaded process: the child only calls the async-signal-safe
    // `poll` and `_exit` (no allocation, no locks), so state held by other threads at the fork
    // cannot be observed.
    match unsafe { libc::fork() } {
        -1 => {
            let e = io::Error::last_os_error();
            // SAFETY: as above.
            unsafe { libc::close(pidfd) };
            Err(e)
        }
        0 => {
            let mut pfd = libc::pollfd {
                fd: pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            loop {
                // SAFETY: `pfd` is a valid pollfd; a pidfd becomes readable when the process
                // (the parent) has exited, i.e. after it closed its descriptors.
                let rc = unsafe { libc::poll(&mut pfd, 1, -1) };
                if rc != -1 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                    break;
                }
            }
            // SAFETY: `_exit` ends the child without running any parent state's destructors;
            // the kernel closes the VM files here.
            unsafe { libc::_exit(0) }
        }
        _ => {
            // SAFETY: the child has its own copy; this one is no longer needed.
            unsafe { libc::close(pidfd) };
            Ok(())
        }
    }
}
