//! The KVM side: the VM (memory slots, in-kernel IRQ chip and PIT, irqfds) and vCPU setup.
//! All unsafe code of the crate is in [`sys`].

mod regs;
pub(crate) mod sys;

use kvm_bindings::{CpuId, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY, kvm_pit_config};
use kvm_ioctls::{Cap, IoEventAddress, Kvm, VcpuFd, VmFd};
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::eventfd::EventFd;

use crate::cpuid::CpuPolicy;
use crate::loader::Entry;

/// The TSS region KVM needs on Intel hosts (three pages just below the BIOS area).
const KVM_TSS_ADDRESS: usize = 0xfffb_d000;

/// Where the PVM kernel module shows itself.
const PVM_MODULE: &str = "/sys/module/kvm_pvm";

/// Whether the host's KVM is PVM (software nested virtualization).
pub fn pvm_host() -> bool {
    std::path::Path::new(PVM_MODULE).exists()
}

/// Why the VM or a vCPU could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KvmError {
    /// `/dev/kvm` could not be opened.
    #[error("cannot open /dev/kvm")]
    Open(#[source] kvm_ioctls::Error),
    /// `KVM_CREATE_VM` failed.
    #[error("cannot create the VM")]
    CreateVm(#[source] kvm_ioctls::Error),
    /// Guest memory could not be mapped.
    #[error("cannot map guest memory")]
    Memory(#[source] vm_memory::mmap::FromRangesError),
    /// A memory slot could not be registered.
    #[error("cannot register guest memory with KVM")]
    MemoryRegion(#[source] kvm_ioctls::Error),
    /// `KVM_CREATE_IRQCHIP` failed.
    #[error("cannot create the in-kernel IRQ chip")]
    IrqChip(#[source] kvm_ioctls::Error),
    /// `KVM_CREATE_PIT2` failed.
    #[error("cannot create the in-kernel PIT")]
    Pit(#[source] kvm_ioctls::Error),
    /// An eventfd could not be created.
    #[error("cannot create an eventfd")]
    EventFd(#[source] std::io::Error),
    /// `KVM_IRQFD` failed.
    #[error("cannot register the irqfd for GSI {gsi}")]
    Irqfd {
        /// The interrupt line.
        gsi: u32,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
    /// `KVM_GET_SUPPORTED_CPUID` failed.
    #[error("cannot read the supported CPUID")]
    SupportedCpuid(#[source] kvm_ioctls::Error),
    /// The CPUID or MSR list does not fit KVM's limit.
    #[error("CPUID or MSR list has too many entries")]
    TooManyEntries,
    /// One step of vCPU setup failed.
    #[error("vCPU {id}: cannot {step}")]
    Vcpu {
        /// vCPU index.
        id: u32,
        /// The step (`create`, `set CPUID`, `set registers` ...).
        step: &'static str,
        /// The KVM error.
        #[source]
        source: kvm_ioctls::Error,
    },
}

/// A VM with its guest memory. The VM file is declared (and so dropped) before the memory it
/// points into; both stay open for the life of the process.
pub(crate) struct Vm {
    _fd: VmFd,
    /// KVM points into this mapping.
    _memory: GuestMemoryMmap,
    _kvm: Kvm,
}

impl Vm {
    /// Leaves the VM's teardown to a child process (see [`sys::hand_over_teardown`]); the
    /// caller exits right after.
    pub(crate) fn hand_over_teardown(&self) -> std::io::Result<()> {
        sys::hand_over_teardown(&self._memory)
    }
}

/// A built VM: the VM, its vCPUs (set up to start at the entry), the serial irqfd and ring.
pub(crate) struct Built {
    pub vm: Vm,
    pub vcpus: Vec<VcpuFd>,
    pub serial_irq: EventFd,
    /// Where KVM queues the serial THR writes that no longer exit (None: they exit).
    pub serial_ring: Option<sys::CoalescedRing>,
}

impl Vm {
    /// Creates the VM with `memory`, the in-kernel IRQ chip and PIT, an irqfd for `serial_gsi`,
    /// `cpus` vCPUs set up by `policy` to start at `entry`, and (when KVM supports it) a
    /// coalesced zone for the 1-byte port `serial_thr`.
    ///
    /// Registering guest memory makes KVM wait for its internal synchronisation, which takes
    /// milliseconds on a busy host; nothing else here needs the memory, so it is registered on a
    /// helper thread while the rest is set up.
    pub(crate) fn build(
        memory: GuestMemoryMmap,
        cpus: u32,
        policy: &CpuPolicy,
        entry: Entry,
        serial_gsi: u32,
        serial_thr: u16,
    ) -> Result<Built, KvmError> {
        let kvm = Kvm::new().map_err(KvmError::Open)?;
        let fd = kvm.create_vm().map_err(KvmError::CreateVm)?;
        if let Err(error) = fd.set_tss_address(KVM_TSS_ADDRESS) {
            tracing::debug!(%error, "KVM_SET_TSS_ADDR refused");
        }
        let serial_thr = IoEventAddress::Pio(u64::from(serial_thr));
        let (registered, rest) = std::thread::scope(|scope| {
            let helper = std::thread::Builder::new()
                .name("sakshi-memslot".into())
                .stack_size(64 * 1024)
                .spawn_scoped(scope, || sys::register_guest_memory(&fd, &memory));
            let rest = Self::devices(&kvm, &fd, serial_gsi, &serial_thr).and_then(|devices| {
                Self::vcpus(&kvm, &fd, cpus, policy, entry).map(|vcpus| (devices, vcpus))
            });
            let registered = match helper {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|_| Err(kvm_ioctls::Error::new(libc::EIO))),
                // No thread: register here.
                Err(_) => sys::register_guest_memory(&fd, &memory),
            };
            (registered, rest)
        });
        registered.map_err(KvmError::MemoryRegion)?;
        let ((serial_irq, coalesced), vcpus) = rest?;
        let serial_ring = match (coalesced, vcpus.first()) {
            (true, Some(vcpu)) => match sys::CoalescedRing::map(vcpu) {
                Ok(ring) => Some(ring),
                Err(error) => {
                    // Without the ring nothing could read the bytes: let them exit again.
                    tracing::debug!(%error, "cannot map the coalesced ring; serial writes exit");
                    let _ = fd.unregister_coalesced_mmio(serial_thr, 1);
                    None
                }
            },
            _ => None,
        };
        Ok(Built {
            vm: Self {
                _fd: fd,
                _memory: memory,
                _kvm: kvm,
            },
            vcpus,
            serial_irq,
            serial_ring,
        })
    }

    /// The IRQ chip, PIT and serial irqfd; and whether THR writes are coalesced.
    fn devices(
        kvm: &Kvm,
        fd: &VmFd,
        serial_gsi: u32,
        serial_thr: &IoEventAddress,
    ) -> Result<(EventFd, bool), KvmError> {
        fd.create_irq_chip().map_err(KvmError::IrqChip)?;
        let pit = kvm_pit_config {
            flags: KVM_PIT_SPEAKER_DUMMY,
            ..Default::default()
        };
        fd.create_pit2(pit).map_err(KvmError::Pit)?;
        let serial_irq = EventFd::new(libc::EFD_NONBLOCK).map_err(KvmError::EventFd)?;
        fd.register_irqfd(&serial_irq, serial_gsi)
            .map_err(|source| KvmError::Irqfd {
                gsi: serial_gsi,
                source,
            })?;
        let coalesced = kvm.check_extension(Cap::CoalescedPio)
            && match fd.register_coalesced_mmio(*serial_thr, 1) {
                Ok(()) => true,
                Err(error) => {
                    tracing::debug!(%error, "coalesced PIO refused; serial writes exit");
                    false
                }
            };
        Ok((serial_irq, coalesced))
    }

    fn vcpus(
        kvm: &Kvm,
        fd: &VmFd,
        cpus: u32,
        policy: &CpuPolicy,
        entry: Entry,
    ) -> Result<Vec<VcpuFd>, KvmError> {
        let supported = kvm
            .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
            .map_err(KvmError::SupportedCpuid)?;
        (0..cpus)
            .map(|id| Self::create_vcpu(fd, id, cpus, &supported, policy, entry))
            .collect()
    }

    /// Creates vCPU `id` of `cpus` and sets it up to start at `entry`.
    fn create_vcpu(
        fd: &VmFd,
        id: u32,
        cpus: u32,
        supported: &CpuId,
        policy: &CpuPolicy,
        entry: Entry,
    ) -> Result<VcpuFd, KvmError> {
        let vcpu = fd
            .create_vcpu(u64::from(id))
            .map_err(|source| KvmError::Vcpu {
                id,
                step: "create",
                source,
            })?;
        let mut entries = supported.as_slice().to_vec();
        policy.apply(&mut entries, id, cpus);
        let cpuid = CpuId::from_entries(&entries).map_err(|_| KvmError::TooManyEntries)?;
        regs::configure(&vcpu, id, &cpuid, entry)?;
        Ok(vcpu)
    }
}
