//! The boot GDT: descriptor encoding, and the matching KVM segment registers.
//!
//! Selectors follow the Linux boot protocol (`__BOOT_CS` = 0x10, `__BOOT_DS` = 0x18); the PVH
//! entry uses the same selectors with a 32-bit code segment.

use kvm_bindings::kvm_segment;

/// Selector of the code segment.
pub(crate) const CODE_SELECTOR: u16 = 0x10;
/// Selector of the data segment.
pub(crate) const DATA_SELECTOR: u16 = 0x18;
/// Selector of the task-state segment.
pub(crate) const TSS_SELECTOR: u16 = 0x20;

/// Flags (access byte in bits 0..8, G/DB/L/AVL in bits 12..16) of a 64-bit code segment.
const CODE64: u16 = 0xa09b;
/// Flags of a 32-bit code segment.
const CODE32: u16 = 0xc09b;
/// Flags of a flat read/write data segment.
const DATA: u16 = 0xc093;
/// Flags of a busy 32-bit TSS.
const TSS: u16 = 0x808b;

/// A segment descriptor before encoding.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Descriptor {
    flags: u16,
    base: u32,
    limit: u32,
}

impl Descriptor {
    const fn flat(flags: u16) -> Self {
        Self {
            flags,
            base: 0,
            limit: 0xfffff,
        }
    }

    const NULL: Self = Self {
        flags: 0,
        base: 0,
        limit: 0,
    };

    /// The 8-byte descriptor as stored in the GDT.
    pub(crate) fn encode(self) -> u64 {
        let base = u64::from(self.base);
        let limit = u64::from(self.limit);
        let flags = u64::from(self.flags);
        ((base & 0xff00_0000) << 32)
            | ((flags & 0xf0ff) << 40)
            | ((limit & 0x000f_0000) << 32)
            | ((base & 0x00ff_ffff) << 16)
            | (limit & 0xffff)
    }

    /// The KVM segment register loaded with `selector`, which refers to this descriptor.
    pub(crate) fn segment(self, selector: u16) -> kvm_segment {
        let access = self.flags & 0xff;
        let granular = (self.flags >> 15) & 1;
        let present = ((access >> 7) & 1) as u8;
        let limit = if granular == 1 {
            (self.limit << 12) | 0xfff
        } else {
            self.limit
        };
        kvm_segment {
            base: u64::from(self.base),
            limit,
            selector,
            type_: (access & 0xf) as u8,
            present,
            dpl: ((access >> 5) & 3) as u8,
            db: ((self.flags >> 14) & 1) as u8,
            s: ((access >> 4) & 1) as u8,
            l: ((self.flags >> 13) & 1) as u8,
            g: granular as u8,
            avl: ((self.flags >> 12) & 1) as u8,
            unusable: u8::from(present == 0),
            padding: 0,
        }
    }
}

/// The boot GDT for the 64-bit entry (`long_mode`) or the PVH 32-bit entry.
pub(crate) fn boot_gdt(long_mode: bool) -> [Descriptor; 5] {
    [
        Descriptor::NULL,
        Descriptor::NULL,
        Descriptor::flat(if long_mode { CODE64 } else { CODE32 }),
        Descriptor::flat(DATA),
        Descriptor::flat(TSS),
    ]
}

/// The GDT as bytes, ready to be written to guest memory.
pub(crate) fn gdt_bytes(gdt: &[Descriptor]) -> Vec<u8> {
    gdt.iter().flat_map(|d| d.encode().to_le_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_known_descriptors() {
        // Flat 64-bit kernel code and data descriptors as found in any long-mode GDT.
        assert_eq!(Descriptor::flat(CODE64).encode(), 0x00af_9b00_0000_ffff);
        assert_eq!(Descriptor::flat(CODE32).encode(), 0x00cf_9b00_0000_ffff);
        assert_eq!(Descriptor::flat(DATA).encode(), 0x00cf_9300_0000_ffff);
        assert_eq!(Descriptor::NULL.encode(), 0);
        let d = Descriptor {
            flags: DATA,
            base: 0x1234_5678,
            limit: 0xabcde,
        };
        assert_eq!(d.encode(), 0x12ca_9334_5678_bcde);
    }

    #[test]
    fn segments_match_descriptors() {
        let gdt = boot_gdt(true);
        let cs = gdt[usize::from(CODE_SELECTOR / 8)].segment(CODE_SELECTOR);
        assert_eq!(
            (cs.l, cs.db, cs.g, cs.present, cs.s, cs.type_),
            (1, 0, 1, 1, 1, 0xb)
        );
        assert_eq!(cs.limit, 0xffff_ffff);
        let gdt32 = boot_gdt(false);
        let cs32 = gdt32[usize::from(CODE_SELECTOR / 8)].segment(CODE_SELECTOR);
        assert_eq!((cs32.l, cs32.db), (0, 1));
        let tr = gdt[usize::from(TSS_SELECTOR / 8)].segment(TSS_SELECTOR);
        assert_eq!((tr.s, tr.type_, tr.present), (0, 0xb, 1));
        let null = Descriptor::NULL.segment(0);
        assert_eq!(null.unusable, 1);
        assert_eq!(gdt_bytes(&gdt).len(), 40);
    }
}
