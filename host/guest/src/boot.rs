//! Reading what the VMM passed: Linux `boot_params` (zero page) or Xen/PVH `hvm_start_info`.
//!
//! Offsets: Linux Documentation/arch/x86/zero-page.rst and boot.rst (setup header at 0x1f1);
//! Xen include/public/arch-x86/hvm/start_info.h.

/// Everything the guest reads lies below this address (the extent of its identity map).
pub const FOUR_GIB: u64 = 1 << 32;

const MAX_CMDLINE: u64 = 4096;
const MAX_MAP_ENTRIES: u32 = 128;

// boot_params (zero page).
const BP_EXT_RAMDISK_IMAGE: u64 = 0x0c0;
const BP_EXT_RAMDISK_SIZE: u64 = 0x0c4;
const BP_EXT_CMD_LINE_PTR: u64 = 0x0c8;
const BP_E820_ENTRIES: u64 = 0x1e8;
const BP_RAMDISK_IMAGE: u64 = 0x218;
const BP_RAMDISK_SIZE: u64 = 0x21c;
const BP_CMD_LINE_PTR: u64 = 0x228;
const BP_E820_TABLE: u64 = 0x2d0;
const BP_E820_ENTRY_SIZE: u64 = 20;

// hvm_start_info.
const HVM_START_MAGIC: u32 = 0x336e_c578;
const SI_MAGIC: u64 = 0;
const SI_VERSION: u64 = 4;
const SI_NR_MODULES: u64 = 12;
const SI_MODLIST_PADDR: u64 = 16;
const SI_CMDLINE_PADDR: u64 = 24;
const SI_MEMMAP_PADDR: u64 = 40;
const SI_MEMMAP_ENTRIES: u64 = 48;
const SI_MEMMAP_ENTRY_SIZE: u64 = 24;
const SI_MOD_PADDR: u64 = 0;
const SI_MOD_SIZE: u64 = 8;

/// `true` when `len` bytes at `addr` lie inside the identity map and `addr` is not 0
/// ("not present" in both protocols).
fn readable(addr: u64, len: u64) -> bool {
    addr != 0 && addr.checked_add(len).is_some_and(|end| end <= FOUR_GIB)
}

fn read_u8(addr: u64) -> u8 {
    if !readable(addr, 1) {
        return 0;
    }
    // SAFETY: `addr` is inside the guest's identity map of the first 4 GiB.
    unsafe { (addr as *const u8).read_volatile() }
}

fn read_u32(addr: u64) -> u32 {
    if !readable(addr, 4) {
        return 0;
    }
    // SAFETY: the 4 bytes are inside the identity map; the read tolerates misalignment.
    unsafe { (addr as *const u32).read_unaligned() }
}

fn read_u64(addr: u64) -> u64 {
    if !readable(addr, 8) {
        return 0;
    }
    // SAFETY: the 8 bytes are inside the identity map; the read tolerates misalignment.
    unsafe { (addr as *const u64).read_unaligned() }
}

/// A byte slice of guest memory, or `None` when it is not inside the identity map.
fn bytes(addr: u64, len: u64) -> Option<&'static [u8]> {
    if len == 0 {
        return Some(&[]);
    }
    if !readable(addr, len) {
        return None;
    }
    // SAFETY: the range is inside the identity map; the VMM placed the data there before entry
    // and nothing in the guest writes to it.
    Some(unsafe { core::slice::from_raw_parts(addr as *const u8, len as usize) })
}

/// The boot information the VMM handed over.
pub enum BootInfo {
    /// Linux `boot_params` at this address.
    Linux(u64),
    /// `hvm_start_info` at this address, with its version.
    Pvh(u64, u32),
}

/// One memory map entry (e820 / hvm_memmap_table_entry).
pub struct MapEntry {
    pub addr: u64,
    pub size: u64,
    pub kind: u32,
}

/// The initial ramdisk.
pub struct Initrd {
    pub addr: u64,
    pub size: u64,
}

impl Initrd {
    pub fn bytes(&self) -> Option<&'static [u8]> {
        bytes(self.addr, self.size)
    }
}

impl BootInfo {
    pub fn from_boot_params(addr: u64) -> Option<Self> {
        readable(addr, 4096).then_some(BootInfo::Linux(addr))
    }

    pub fn from_start_info(addr: u64) -> Option<Self> {
        if !readable(addr, 56) || read_u32(addr + SI_MAGIC) != HVM_START_MAGIC {
            return None;
        }
        Some(BootInfo::Pvh(addr, read_u32(addr + SI_VERSION)))
    }

    pub fn cmdline(&self) -> &'static [u8] {
        let ptr = match *self {
            BootInfo::Linux(bp) => {
                u64::from(read_u32(bp + BP_CMD_LINE_PTR))
                    | u64::from(read_u32(bp + BP_EXT_CMD_LINE_PTR)) << 32
            }
            BootInfo::Pvh(si, _) => read_u64(si + SI_CMDLINE_PADDR),
        };
        let mut len = 0;
        while len < MAX_CMDLINE && readable(ptr, len + 1) && read_u8(ptr + len) != 0 {
            len += 1;
        }
        bytes(ptr, len).unwrap_or(&[])
    }

    pub fn memory_map(&self) -> impl Iterator<Item = MapEntry> {
        let (table, count, stride) = match *self {
            BootInfo::Linux(bp) => (
                bp + BP_E820_TABLE,
                u32::from(read_u8(bp + BP_E820_ENTRIES)),
                BP_E820_ENTRY_SIZE,
            ),
            BootInfo::Pvh(si, version) if version >= 1 => (
                read_u64(si + SI_MEMMAP_PADDR),
                read_u32(si + SI_MEMMAP_ENTRIES),
                SI_MEMMAP_ENTRY_SIZE,
            ),
            BootInfo::Pvh(..) => (0, 0, 0),
        };
        let count = if readable(table, u64::from(count) * stride) {
            count.min(MAX_MAP_ENTRIES)
        } else {
            0
        };
        (0..u64::from(count)).map(move |i| {
            let e = table + i * stride;
            MapEntry {
                addr: read_u64(e),
                size: read_u64(e + 8),
                kind: read_u32(e + 16),
            }
        })
    }

    pub fn initrd(&self) -> Option<Initrd> {
        let (addr, size) = match *self {
            BootInfo::Linux(bp) => (
                u64::from(read_u32(bp + BP_RAMDISK_IMAGE))
                    | u64::from(read_u32(bp + BP_EXT_RAMDISK_IMAGE)) << 32,
                u64::from(read_u32(bp + BP_RAMDISK_SIZE))
                    | u64::from(read_u32(bp + BP_EXT_RAMDISK_SIZE)) << 32,
            ),
            BootInfo::Pvh(si, _) => {
                let list = read_u64(si + SI_MODLIST_PADDR);
                if read_u32(si + SI_NR_MODULES) == 0 || list == 0 {
                    return None;
                }
                (read_u64(list + SI_MOD_PADDR), read_u64(list + SI_MOD_SIZE))
            }
        };
        (size != 0).then_some(Initrd { addr, size })
    }
}
