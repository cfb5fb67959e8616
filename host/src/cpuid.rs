//! The CPU policy: turns the CPUID KVM supports into what one vCPU sees.
//!
//! Per vCPU it sets the APIC id (leaf 1, 0xb, 0x1f, 0x8000_001e), the topology (every vCPU is
//! one core of one socket, one thread per core), the hypervisor bit, and clears hidden features.

use std::collections::BTreeSet;

use kvm_bindings::{KVM_CPUID_FLAG_SIGNIFCANT_INDEX, kvm_cpuid_entry2};

use crate::config::{CpuConfig, CpuFeature, PvmWorkarounds};

/// Where a feature bit lives.
#[derive(Debug, Clone, Copy)]
enum Reg {
    Ebx,
    Ecx,
    Edx,
}

/// (leaf, subleaf, register, bit) of a feature.
fn location(feature: CpuFeature) -> (u32, u32, Reg, u32) {
    match feature {
        CpuFeature::Xsave => (1, 0, Reg::Ecx, 26),
        CpuFeature::Cx16 => (1, 0, Reg::Ecx, 13),
        CpuFeature::Popcnt => (1, 0, Reg::Ecx, 23),
        CpuFeature::Smep => (7, 0, Reg::Ebx, 7),
        CpuFeature::Smap => (7, 0, Reg::Ebx, 20),
        CpuFeature::Avx => (1, 0, Reg::Ecx, 28),
        CpuFeature::Avx2 => (7, 0, Reg::Ebx, 5),
        CpuFeature::Avx512f => (7, 0, Reg::Ebx, 16),
        CpuFeature::X2apic => (1, 0, Reg::Ecx, 21),
        CpuFeature::Pcid => (1, 0, Reg::Ecx, 17),
        CpuFeature::Invpcid => (7, 0, Reg::Ebx, 10),
        CpuFeature::Rdrand => (1, 0, Reg::Ecx, 30),
        CpuFeature::Rdseed => (7, 0, Reg::Ebx, 18),
        CpuFeature::Pdpe1gb => (0x8000_0001, 0, Reg::Edx, 26),
        CpuFeature::TscDeadline => (1, 0, Reg::Ecx, 24),
        CpuFeature::Umip => (7, 0, Reg::Ecx, 2),
        CpuFeature::Fsgsbase => (7, 0, Reg::Ebx, 0),
    }
}

/// Leaf 1 ECX: OSXSAVE (cleared together with XSAVE).
const LEAF1_ECX_OSXSAVE: u32 = 27;
/// Leaf 1 ECX: running under a hypervisor.
const LEAF1_ECX_HYPERVISOR: u32 = 31;
/// Leaf 1 EDX: multi-threading (more than one logical processor per package).
const LEAF1_EDX_HTT: u32 = 28;

/// The set of features hidden from the guest, resolved once per VM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CpuPolicy {
    hidden: BTreeSet<CpuFeature>,
    pvm: bool,
}

impl CpuPolicy {
    /// Resolves the policy from the configuration and whether the host's KVM is PVM.
    pub fn new(config: &CpuConfig, pvm_host: bool) -> Self {
        let pvm = match config.pvm_workarounds {
            PvmWorkarounds::Auto => pvm_host,
            PvmWorkarounds::On => true,
            PvmWorkarounds::Off => false,
        };
        let mut hidden: BTreeSet<CpuFeature> = config.hide.iter().copied().collect();
        if pvm {
            hidden.extend(CpuFeature::PVM_HIDDEN);
        }
        Self { hidden, pvm }
    }

    /// Whether the PVM workarounds are applied.
    pub fn pvm_workarounds(&self) -> bool {
        self.pvm
    }

    /// The hidden features, in a stable order.
    pub fn hidden(&self) -> impl Iterator<Item = CpuFeature> + '_ {
        self.hidden.iter().copied()
    }

    /// Applies the policy to the supported CPUID `entries` for vCPU `cpu` of `cpus`.
    pub(crate) fn apply(&self, entries: &mut Vec<kvm_cpuid_entry2>, cpu: u32, cpus: u32) {
        let apic_id = cpu;
        // Bits needed to number the cores of the package.
        let core_bits = 32 - (cpus.max(1) - 1).leading_zeros();
        let hide_xsave = self.hidden.contains(&CpuFeature::Xsave);

        for e in entries.iter_mut() {
            match e.function {
                1 => {
                    e.ebx = (e.ebx & 0x0000_ffff) | (apic_id << 24) | ((cpus & 0xff) << 16);
                    e.ecx |= 1 << LEAF1_ECX_HYPERVISOR;
                    if cpus > 1 {
                        e.edx |= 1 << LEAF1_EDX_HTT;
                    } else {
                        e.edx &= !(1 << LEAF1_EDX_HTT);
                    }
                    if hide_xsave {
                        e.ecx &= !(1 << LEAF1_ECX_OSXSAVE);
                    }
                }
                4 => {
                    // Deterministic cache parameters (Intel): cores per package - 1 in EAX[31:26].
                    e.eax = (e.eax & 0x03ff_ffff) | ((cpus - 1).min(63) << 26);
                }
                0xd if hide_xsave => {
                    e.eax = 0;
                    e.ebx = 0;
                    e.ecx = 0;
                    e.edx = 0;
                }
                0x8000_0008 => {
                    // AMD: number of cores - 1 in ECX[7:0], APIC id bits for cores in ECX[15:12].
                    e.ecx = (e.ecx & !0xf0ff) | ((cpus - 1) & 0xff) | (core_bits << 12);
                }
                0x8000_001e => {
                    // AMD extended APIC id; one thread per core.
                    e.eax = apic_id;
                    e.ebx = (e.ebx & !0xffff) | (apic_id & 0xff);
                    e.ecx &= !0x7ff;
                }
                _ => {}
            }
        }

        for leaf in [0xb, 0x1f] {
            if entries.iter().any(|e| e.function == leaf) {
                entries.retain(|e| e.function != leaf);
                entries.extend(topology_leaf(leaf, apic_id, cpus, core_bits));
            }
        }

        for feature in &self.hidden {
            let (leaf, subleaf, reg, bit) = location(*feature);
            for e in entries
                .iter_mut()
                .filter(|e| e.function == leaf && e.index == subleaf)
            {
                let r = match reg {
                    Reg::Ebx => &mut e.ebx,
                    Reg::Ecx => &mut e.ecx,
                    Reg::Edx => &mut e.edx,
                };
                *r &= !(1 << bit);
            }
        }
    }
}

/// Extended topology (leaf 0xb or 0x1f): SMT level with one thread, core level with `cpus`.
fn topology_leaf(leaf: u32, apic_id: u32, cpus: u32, core_bits: u32) -> [kvm_cpuid_entry2; 3] {
    let entry = |index: u32, eax: u32, ebx: u32, ecx: u32| kvm_cpuid_entry2 {
        function: leaf,
        index,
        flags: KVM_CPUID_FLAG_SIGNIFCANT_INDEX,
        eax,
        ebx,
        ecx,
        edx: apic_id,
        ..Default::default()
    };
    [
        // SMT: one thread; shift 0 to reach the core level.
        entry(0, 0, 1, 1 << 8),
        // Core: `cpus` logical processors; shift `core_bits` to reach the package.
        entry(1, core_bits, cpus, 1 | (2 << 8)),
        // Invalid level terminates the enumeration.
        entry(2, 0, 0, 2),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(
        function: u32,
        index: u32,
        eax: u32,
        ebx: u32,
        ecx: u32,
        edx: u32,
    ) -> kvm_cpuid_entry2 {
        kvm_cpuid_entry2 {
            function,
            index,
            eax,
            ebx,
            ecx,
            edx,
            ..Default::default()
        }
    }

    /// A plausible host CPUID with every feature bit the policy knows set.
    fn host() -> Vec<kvm_cpuid_entry2> {
        vec![
            entry(0, 0, 0x1f, 0, 0, 0),
            entry(1, 0, 0x00a2_0f10, 0x0010_0800, !(1 << 31), 0xffff_ffff),
            entry(7, 0, 0, 0xffff_ffff, 0xffff_ffff, 0),
            entry(0xb, 0, 1, 2, 0x100, 7),
            entry(0xb, 1, 4, 16, 0x201, 7),
            entry(0xd, 0, 0x2e7, 0x988, 0x988, 0),
            entry(0xd, 1, 0xf, 0, 0, 0),
            entry(0x8000_0001, 0, 0, 0, 0, 0xffff_ffff),
            entry(0x8000_0008, 0, 0x3030, 0, 0x700f, 0),
        ]
    }

    fn find(entries: &[kvm_cpuid_entry2], function: u32, index: u32) -> kvm_cpuid_entry2 {
        *entries
            .iter()
            .find(|e| e.function == function && e.index == index)
            .unwrap()
    }

    #[test]
    fn pvm_hides_its_features_only_when_asked() {
        let auto = CpuConfig::default();
        let on_pvm = CpuPolicy::new(&auto, true);
        assert!(on_pvm.pvm_workarounds());
        let hidden: Vec<_> = on_pvm.hidden().map(|f| f.name()).collect();
        assert_eq!(hidden, ["xsave", "cx16", "popcnt", "smap", "smep"]);
        assert_eq!(CpuPolicy::new(&auto, false).hidden().count(), 0);

        let off = CpuConfig {
            hide: vec![],
            pvm_workarounds: PvmWorkarounds::Off,
        };
        assert_eq!(CpuPolicy::new(&off, true).hidden().count(), 0);
        let on = CpuConfig {
            hide: vec![CpuFeature::Avx2],
            pvm_workarounds: PvmWorkarounds::On,
        };
        assert_eq!(CpuPolicy::new(&on, false).hidden().count(), 6);
    }

    #[test]
    fn hidden_bits_are_cleared() {
        let mut e = host();
        CpuPolicy::new(&CpuConfig::default(), true).apply(&mut e, 0, 1);
        let l1 = find(&e, 1, 0);
        for bit in [26, 27, 13, 23] {
            assert_eq!(l1.ecx & (1 << bit), 0, "leaf 1 ecx bit {bit}");
        }
        assert_ne!(l1.ecx & (1 << 28), 0, "avx left alone");
        let l7 = find(&e, 7, 0);
        assert_eq!(l7.ebx & (1 << 7), 0);
        assert_eq!(l7.ebx & (1 << 20), 0);
        assert_ne!(l7.ebx & (1 << 5), 0, "avx2 left alone");
        assert_eq!(find(&e, 0xd, 0).eax, 0);
        assert_eq!(find(&e, 0xd, 1).eax, 0);
    }

    #[test]
    fn nothing_hidden_without_pvm() {
        let mut e = host();
        let before = find(&e, 7, 0).ebx;
        CpuPolicy::new(&CpuConfig::default(), false).apply(&mut e, 0, 1);
        assert_eq!(find(&e, 7, 0).ebx, before);
        assert_ne!(find(&e, 1, 0).ecx & (1 << 26), 0);
    }

    #[test]
    fn apic_ids_and_topology_per_vcpu() {
        let policy = CpuPolicy::default();
        for cpu in 0..4 {
            let mut e = host();
            policy.apply(&mut e, cpu, 4);
            let l1 = find(&e, 1, 0);
            assert_eq!(l1.ebx >> 24, cpu);
            assert_eq!((l1.ebx >> 16) & 0xff, 4);
            assert_eq!(l1.ebx & 0xffff, 0x0800, "clflush size kept");
            assert_ne!(l1.ecx & (1 << 31), 0, "hypervisor bit");
            assert_ne!(l1.edx & (1 << 28), 0, "htt with 4 cpus");
            let smt = find(&e, 0xb, 0);
            let core = find(&e, 0xb, 1);
            assert_eq!((smt.ebx, smt.edx), (1, cpu));
            assert_eq!(
                (core.eax, core.ebx, core.ecx >> 8 & 0xff, core.edx),
                (2, 4, 2, cpu)
            );
            assert_eq!(find(&e, 0xb, 2).ecx >> 8 & 0xff, 0, "terminator");
            assert_eq!(e.iter().filter(|x| x.function == 0xb).count(), 3);
            assert_eq!(find(&e, 0x8000_0008, 0).ecx & 0xff, 3);
        }
    }

    #[test]
    fn single_cpu_topology() {
        let mut e = host();
        CpuPolicy::default().apply(&mut e, 0, 1);
        assert_eq!(find(&e, 0xb, 1).eax, 0);
        assert_eq!(find(&e, 1, 0).edx & (1 << 28), 0);
        assert!(
            !e.iter().any(|x| x.function == 0x1f),
            "absent leaves stay absent"
        );
    }
}
