//! Guest-physical memory layout (x86-64). See docs/VMM.md for the picture.

use vm_memory::GuestAddress;

/// GDT used at boot.
pub(crate) const BOOT_GDT: u64 = 0x500;
/// Empty IDT used at boot.
pub(crate) const BOOT_IDT: u64 = 0x540;
/// PVH `hvm_start_info`.
pub(crate) const PVH_START_INFO: u64 = 0x6000;
/// PVH module list (the initrd).
pub(crate) const PVH_MODLIST: u64 = 0x6040;
/// PVH memory map.
pub(crate) const PVH_MEMMAP: u64 = 0x6100;
/// Most entries the PVH memory map can hold before it reaches the zero page.
pub(crate) const PVH_MEMMAP_MAX: usize = (ZERO_PAGE - PVH_MEMMAP) as usize / 24;
/// Linux `boot_params` (the zero page).
pub(crate) const ZERO_PAGE: u64 = 0x7000;
/// Initial stack pointer of the 64-bit entry.
pub(crate) const BOOT_STACK: u64 = 0x8ff0;
/// Page-map level 4 of the boot identity map.
pub(crate) const PML4: u64 = 0x9000;
/// Page-directory-pointer table of the boot identity map.
pub(crate) const PDPT: u64 = 0xa000;
/// First of the four page directories (2 MiB pages, 4 GiB identity map).
pub(crate) const PD: u64 = 0xb000;
/// Number of page directories (one per GiB mapped).
pub(crate) const PD_COUNT: u64 = 4;
/// Kernel command line.
pub(crate) const CMDLINE: u64 = 0x20000;
/// Start of the extended BIOS data area; the MP table lives here.
pub(crate) const EBDA_START: u64 = 0x9fc00;
/// End of conventional memory (640 KiB).
pub(crate) const EBDA_END: u64 = 0xa0000;
/// Start of high memory; kernels load here or above.
pub(crate) const HIMEM_START: u64 = 0x10_0000;
/// Start of the 32-bit MMIO hole (nothing is mapped between here and 4 GiB).
pub(crate) const MMIO_HOLE_START: u64 = 0xc000_0000;
/// End of the 32-bit MMIO hole.
pub(crate) const MMIO_HOLE_END: u64 = 0x1_0000_0000;
/// IO-APIC base address (in-kernel IO-APIC).
pub(crate) const IOAPIC_ADDR: u32 = 0xfec0_0000;
/// Local APIC base address.
pub(crate) const LAPIC_ADDR: u32 = 0xfee0_0000;
/// e820 type of usable RAM.
pub(crate) const E820_RAM: u32 = 1;
/// e820 type of reserved memory.
pub(crate) const E820_RESERVED: u32 = 2;

/// One e820 memory-map entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct E820Entry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The guest RAM regions for a guest of `mem_bytes`: one below the MMIO hole and, when memory
/// does not fit there, a second one from 4 GiB up.
pub(crate) fn ram_regions(mem_bytes: u64) -> Vec<(GuestAddress, u64)> {
    if mem_bytes <= MMIO_HOLE_START {
        vec![(GuestAddress(0), mem_bytes)]
    } else {
        vec![
            (GuestAddress(0), MMIO_HOLE_START),
            (GuestAddress(MMIO_HOLE_END), mem_bytes - MMIO_HOLE_START),
        ]
    }
}

/// End (exclusive) of the RAM below 4 GiB.
pub(crate) fn low_mem_end(mem_bytes: u64) -> u64 {
    mem_bytes.min(MMIO_HOLE_START)
}

/// The e820 map handed to the guest.
pub(crate) fn e820_map(mem_bytes: u64) -> Vec<E820Entry> {
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820_RAM,
        },
        E820Entry {
            addr: EBDA_START,
            size: EBDA_END - EBDA_START,
            kind: E820_RESERVED,
        },
    ];
    let low_end = low_mem_end(mem_bytes);
    map.push(E820Entry {
        addr: HIMEM_START,
        size: low_end - HIMEM_START,
        kind: E820_RAM,
    });
    if mem_bytes > MMIO_HOLE_START {
        map.push(E820Entry {
            addr: MMIO_HOLE_END,
            size: mem_bytes - MMIO_HOLE_START,
            kind: E820_RAM,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boot_structures_do_not_overlap() {
        let mut areas = [
            (BOOT_GDT, 8 * 8),
            (BOOT_IDT, 8),
            (PVH_START_INFO, 0x38),
            (PVH_MODLIST, 0x20),
            (PVH_MEMMAP, PVH_MEMMAP_MAX as u64 * 24),
            (ZERO_PAGE, 0x1000),
            (BOOT_STACK - 0x800, 0x800),
            (PML4, 0x1000),
            (PDPT, 0x1000),
            (PD, PD_COUNT * 0x1000),
            (CMDLINE, 2048),
            (EBDA_START, EBDA_END - EBDA_START),
        ];
        areas.sort();
        for w in areas.windows(2) {
            assert!(
                w[0].0 + w[0].1 <= w[1].0,
                "{:#x?} overlaps {:#x?}",
                w[0],
                w[1]
            );
        }
        assert!(areas.last().map(|a| a.0 + a.1).unwrap() <= HIMEM_START);
    }

    #[test]
    fn small_guest_has_one_region() {
        let mib = 1 << 20;
        assert_eq!(ram_regions(128 * mib), vec![(GuestAddress(0), 128 * mib)]);
        let map = e820_map(128 * mib);
        assert_eq!(map.len(), 3);
        assert_eq!(map[2].addr + map[2].size, 128 * mib);
        assert_eq!(map.iter().filter(|e| e.kind == E820_RAM).count(), 2);
    }

    #[test]
    fn big_guest_skips_mmio_hole() {
        let gib = 1u64 << 30;
        let regions = ram_regions(8 * gib);
        assert_eq!(regions.len(), 2);
        assert_eq!(regions[0], (GuestAddress(0), 3 * gib));
        assert_eq!(regions[1], (GuestAddress(4 * gib), 5 * gib));
        let map = e820_map(8 * gib);
        let ram: u64 = map
            .iter()
            .filter(|e| e.kind == E820_RAM)
            .map(|e| e.size)
            .sum();
        assert_eq!(ram, 8 * gib - HIMEM_START + EBDA_START);
        assert!(
            map.iter()
                .all(|e| e.addr + e.size <= MMIO_HOLE_START || e.addr >= MMIO_HOLE_END)
        );
    }
}
