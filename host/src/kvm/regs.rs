//! Boot-time vCPU state: CPUID, MSRs, general and segment registers, FPU, local APIC.

use kvm_bindings::{CpuId, Msrs, kvm_fpu, kvm_lapic_state, kvm_msr_entry, kvm_regs};
use kvm_ioctls::VcpuFd;

use super::KvmError;
use crate::gdt::{self, CODE_SELECTOR, DATA_SELECTOR, TSS_SELECTOR};
use crate::layout;
use crate::loader::Entry;

const MSR_IA32_TSC: u32 = 0x10;
const MSR_IA32_SYSENTER_CS: u32 = 0x174;
const MSR_IA32_SYSENTER_ESP: u32 = 0x175;
const MSR_IA32_SYSENTER_EIP: u32 = 0x176;
const MSR_IA32_MISC_ENABLE: u32 = 0x1a0;
const MSR_MTRR_DEF_TYPE: u32 = 0x2ff;
const MSR_STAR: u32 = 0xc000_0081;
const MSR_LSTAR: u32 = 0xc000_0082;
const MSR_CSTAR: u32 = 0xc000_0083;
const MSR_SYSCALL_MASK: u32 = 0xc000_0084;
const MSR_KERNEL_GS_BASE: u32 = 0xc000_0102;

/// IA32_MISC_ENABLE: fast string operations.
const MISC_ENABLE_FAST_STRING: u64 = 1;
/// MTRRdefType: MTRRs enabled, default type write-back.
const MTRR_ENABLE_WB: u64 = (1 << 11) | 6;

const CR0_PE: u64 = 1 << 0;
const CR0_ET: u64 = 1 << 4;
const CR0_NE: u64 = 1 << 5;
const CR0_NW: u64 = 1 << 29;
const CR0_CD: u64 = 1 << 30;
const CR0_PG: u64 = 1 << 31;
const CR4_PAE: u64 = 1 << 5;
const EFER_LME: u64 = 1 << 8;
const EFER_LMA: u64 = 1 << 10;

/// Local APIC register offsets and delivery modes.
const APIC_LVT0: usize = 0x350;
const APIC_LVT1: usize = 0x360;
const APIC_MODE_NMI: u32 = 0x4;
const APIC_MODE_EXTINT: u32 = 0x7;

/// Sets up a freshly created vCPU to start at `entry`.
pub(super) fn configure(
    vcpu: &VcpuFd,
    id: u32,
    cpuid: &CpuId,
    entry: Entry,
) -> Result<(), KvmError> {
    let err = |step| move |source| KvmError::Vcpu { id, step, source };
    vcpu.set_cpuid2(cpuid).map_err(err("set CPUID"))?;
    set_msrs(vcpu, id)?;
    set_lapic(vcpu).map_err(err("set up the local APIC"))?;
    vcpu.set_fpu(&kvm_fpu {
        fcw: 0x37f,
        mxcsr: 0x1f80,
        ..Default::default()
    })
    .map_err(err("set FPU state"))?;

    let mut sregs = vcpu.get_sregs().map_err(err("read special registers"))?;
    let long_mode = matches!(entry, Entry::Linux64 { .. });
    let table = gdt::boot_gdt(long_mode);
    let seg = |sel: u16| table[usize::from(sel / 8)].segment(sel);
    sregs.gdt.base = layout::BOOT_GDT;
    sregs.gdt.limit = (table.len() * 8 - 1) as u16;
    sregs.idt.base = layout::BOOT_IDT;
    sregs.idt.limit = 7;
    sregs.cs = seg(CODE_SELECTOR);
    let data = seg(DATA_SELECTOR);
    sregs.ds = data;
    sregs.es = data;
    sregs.fs = data;
    sregs.gs = data;
    sregs.ss = data;
    sregs.tr = seg(TSS_SELECTOR);
    sregs.cr0 = (sregs.cr0 & !(CR0_CD | CR0_NW)) | CR0_PE | CR0_ET | CR0_NE;
    let mut regs = kvm_regs {
        rflags: 0x2,
        ..Default::default()
    };
    match entry {
        Entry::Linux64 { rip } => {
            sregs.cr3 = layout::PML4;
            sregs.cr4 |= CR4_PAE;
            sregs.cr0 |= CR0_PG;
            sregs.efer |= EFER_LME | EFER_LMA;
            regs.rip = rip;
            regs.rsp = layout::BOOT_STACK;
            regs.rbp = layout::BOOT_STACK;
            regs.rsi = layout::ZERO_PAGE;
        }
        Entry::Pvh { rip } => {
            sregs.cr0 &= !CR0_PG;
            sregs.cr4 = 0;
            sregs.efer = 0;
            regs.rip = rip;
            regs.rbx = layout::PVH_START_INFO;
        }
    }
    vcpu.set_sregs(&sregs)
        .map_err(err("set special registers"))?;
    vcpu.set_regs(&regs).map_err(err("set registers"))?;
    Ok(())
}

fn set_msrs(vcpu: &VcpuFd, id: u32) -> Result<(), KvmError> {
    let list = [
        (MSR_IA32_SYSENTER_CS, 0),
        (MSR_IA32_SYSENTER_ESP, 0),
        (MSR_IA32_SYSENTER_EIP, 0),
        (MSR_STAR, 0),
        (MSR_CSTAR, 0),
        (MSR_KERNEL_GS_BASE, 0),
        (MSR_SYSCALL_MASK, 0),
        (MSR_LSTAR, 0),
        (MSR_IA32_TSC, 0),
        (MSR_IA32_MISC_ENABLE, MISC_ENABLE_FAST_STRING),
        (MSR_MTRR_DEF_TYPE, MTRR_ENABLE_WB),
    ];
    let entries: Vec<kvm_msr_entry> = list
        .iter()
        .map(|&(index, data)| kvm_msr_entry {
            index,
            data,
            ..Default::default()
        })
        .collect();
    let msrs = Msrs::from_entries(&entries).map_err(|_| KvmError::TooManyEntries)?;
    let written = vcpu.set_msrs(&msrs).map_err(|source| KvmError::Vcpu {
        id,
        step: "set MSRs",
        source,
    })?;
    // KVM stops at the first MSR it refuses: set the rest one by one so that one refusal (a
    // host without that MSR) does not leave the others at their reset values.
    for e in entries.iter().skip(written) {
        let one =
            Msrs::from_entries(std::slice::from_ref(e)).map_err(|_| KvmError::TooManyEntries)?;
        if !matches!(vcpu.set_msrs(&one), Ok(1)) {
            tracing::debug!(
                vcpu = id,
                msr = format_args!("{:#x}", e.index),
                "MSR refused by KVM"
            );
        }
    }
    Ok(())
}

fn set_lapic(vcpu: &VcpuFd) -> Result<(), kvm_ioctls::Error> {
    let mut lapic = vcpu.get_lapic()?;
    set_lvt_mode(&mut lapic, APIC_LVT0, APIC_MODE_EXTINT);
    set_lvt_mode(&mut lapic, APIC_LVT1, APIC_MODE_NMI);
    vcpu.set_lapic(&lapic)
}

fn set_lvt_mode(lapic: &mut kvm_lapic_state, offset: usize, mode: u32) {
    let reg = &mut lapic.regs[offset..offset + 4];
    let mut bytes = [0u8; 4];
    for (b, r) in bytes.iter_mut().zip(reg.iter()) {
        *b = *r as u8;
    }
    let value = (u32::from_le_bytes(bytes) & !0x700) | (mode << 8);
    for (r, b) in reg.iter_mut().zip(value.to_le_bytes()) {
        *r = b as _;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lvt_delivery_mode_is_set_and_rest_kept() {
        let mut lapic = kvm_lapic_state::default();
        lapic.regs[APIC_LVT0] = 0x30;
        lapic.regs[APIC_LVT0 + 1] = 0x03; // fixed mode bits set: must be replaced
        lapic.regs[APIC_LVT0 + 2] = 0x01; // mask bit kept
        set_lvt_mode(&mut lapic, APIC_LVT0, APIC_MODE_EXTINT);
        assert_eq!(lapic.regs[APIC_LVT0] as u8, 0x30);
        assert_eq!(lapic.regs[APIC_LVT0 + 1] as u8, 0x07);
        assert_eq!(lapic.regs[APIC_LVT0 + 2] as u8, 0x01);
        set_lvt_mode(&mut lapic, APIC_LVT1, APIC_MODE_NMI);
        assert_eq!(lapic.regs[APIC_LVT1 + 1] as u8, 0x04);
    }
}
