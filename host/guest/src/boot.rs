//! Reading what the VMM passed: Linux `boot_params` (zero page) or Xen/PVH `hvm_start_info`.
//!
//! Offsets: Linux Documentation/arch/x86/zero-page.rst and boot.rst (setup header at 0x1f1);
//! Xen include/public/arch-x86/hvm/start_info.h.
//!
//! Every structure is range-checked once (the whole zero page, the whole start info, the whole
//! memory map, the module list entry); the fields inside are then read without further checks:
//! under KVM-PVM each guest instruction costs.

/// Everything the guest reads lies below this address (the extent of its identity map).
pub const FOUR_GIB: u64 = 1 << 32;

const MAX_CMDLINE: u64 = 4096;
const MAX_MAP_ENTRIES: u32 = 128;

// boot_params (zero page).
const BP_SIZE: u64 = 4096;
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
const SI_SIZE: u64 = 56;
const HVM_START_MAGIC: u32 = 0x336e_c578;
const SI_MAGIC: u64 = 0;
const SI_VERSION: u64 = 4;
const SI_NR_MODULES: u64 = 12;
const SI_MODLIST_PADDR: u64 = 16;
const SI_CMDLINE_PADDR: u64 = 24;
const SI_MEMMAP_PADDR: u64 = 40;
const SI_MEMMAP_ENTRIES: u64 = 48;
const SI_MEMMAP_ENTRY_SIZE: u64 = 24;
const SI_MOD_SIZE_OF_ENTRY: u64 = 16;
const SI_MOD_PADDR: u64 = 0;
const SI_MOD_SIZE: u64 = 8;

/// `true` when `len` bytes at `addr` lie inside the identity map and `addr` is not 0
/// ("not present" in both protocols).
fn readable(addr: u64, len: u64) -> bool {
    addr != 0 && addr.checked_add(len).is_some_and(|end| end <= FOUR_GIB)
}

/// Reads a little-endian `u8`/`u32`/`u64` at `addr`.
///
/// # Safety
/// `size_of::<T>()` bytes at `addr` must lie inside the identity map (see [`readable`]).
unsafe fn read<T: Copy>(addr: u64) -> T {
    // SAFETY: guaranteed by the caller; the read tolerates misalignment.
    unsafe { (addr as *const T).read_unaligned() }
}

/// Index of the first NUL among the `limit` bytes at `addr`, or `limit` when there is none.
///
/// # Safety
/// `addr..addr + limit` must lie inside the identity map.
unsafe fn nul_index(addr: u64, limit: u64) -> u64 {
    if limit == 0 {
        return 0;
    }
    let rest: u64;
    let found: u8;
    // SAFETY: the caller guarantees that the range is readable; `repne scasb` only reads it,
    // forward (DF is clear). One instruction: the emulator iterates without re-entering the guest.
    unsafe {
        core::arch::asm!(
            "repne scasb",
            "sete {found}",
            found = out(reg_byte) found,
            inout("rdi") addr => _,
            inout("rcx") limit => rest,
            in("al") 0u8,
            options(nostack, readonly)
        )
    };
    limit - rest - u64::from(found)
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

/// The boot information the VMM handed over; only built once its whole structure was found
/// readable.
pub enum BootInfo {
    /// Linux `boot_params` at this address (all of its 4 KiB readable).
    Linux(u64),
    /// `hvm_start_info` at this address (all of its 56 bytes readable), with its version.
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
        readable(addr, BP_SIZE).then_some(BootInfo::Linux(addr))
    }

    pub fn from_start_info(addr: u64) -> Option<Self> {
        if !readable(addr, SI_SIZE) {
            return None;
        }
        // SAFETY: the whole start info is readable (checked just above).
        let (magic, version): (u32, u32) =
            unsafe { (read(addr + SI_MAGIC), read(addr + SI_VERSION)) };
        (magic == HVM_START_MAGIC).then_some(BootInfo::Pvh(addr, version))
    }

    /// Reads the field at `offset` of the zero page / start info.
    ///
    /// # Safety
    /// `offset + size_of::<T>()` must not exceed the structure's size (4096 / 56).
    unsafe fn field<T: Copy>(&self, offset: u64) -> T {
        let (BootInfo::Linux(base) | BootInfo::Pvh(base, _)) = *self;
        // SAFETY: the constructors checked that the whole structure is readable; the caller
        // keeps the field inside it.
        unsafe { read(base + offset) }
    }

    pub fn cmdline(&self) -> &'static [u8] {
        // SAFETY (both arms): the offsets are those of fields inside the structure.
        let ptr = match *self {
            BootInfo::Linux(_) => unsafe {
                u64::from(self.field::<u32>(BP_CMD_LINE_PTR))
                    | u64::from(self.field::<u32>(BP_EXT_CMD_LINE_PTR)) << 32
            },
            BootInfo::Pvh(..) => unsafe { self.field::<u64>(SI_CMDLINE_PADDR) },
        };
        if !readable(ptr, 1) {
            return &[];
        }
        let limit = MAX_CMDLINE.min(FOUR_GIB - ptr);
        // SAFETY: `ptr..ptr + limit` ends at or below 4 GiB, and `ptr` is not 0.
        let len = unsafe { nul_index(ptr, limit) };
        bytes(ptr, len).unwrap_or(&[])
    }

    pub fn memory_map(&self) -> impl Iterator<Item = MapEntry> {
        // SAFETY (all arms): the offsets are those of fields inside the structure.
        let (table, count, stride) = match *self {
            BootInfo::Linux(bp) => (
                bp + BP_E820_TABLE,
                u32::from(unsafe { self.field::<u8>(BP_E820_ENTRIES) }),
                BP_E820_ENTRY_SIZE,
            ),
            BootInfo::Pvh(_, version) if version >= 1 => unsafe {
                (
                    self.field::<u64>(SI_MEMMAP_PADDR),
                    self.field::<u32>(SI_MEMMAP_ENTRIES),
                    SI_MEMMAP_ENTRY_SIZE,
                )
            },
            BootInfo::Pvh(..) => (0, 0, 0),
        };
        let count = if readable(table, u64::from(count) * stride) {
            count.min(MAX_MAP_ENTRIES)
        } else {
            0
        };
        (0..u64::from(count)).map(move |i| {
            let e = table + i * stride;
            // SAFETY: the whole table is readable (checked above); an entry starts with
            // addr (u64), size (u64), type (u32).
            unsafe {
                MapEntry {
                    addr: read(e),
                    size: read(e + 8),
                    kind: read(e + 16),
                }
            }
        })
    }

    pub fn initrd(&self) -> Option<Initrd> {
        // SAFETY (both arms): the offsets are those of fields inside the structure; the module
        // list entry is read only once found readable.
        let (addr, size) = match *self {
            BootInfo::Linux(_) => unsafe {
                (
                    u64::from(self.field::<u32>(BP_RAMDISK_IMAGE))
                        | u64::from(self.field::<u32>(BP_EXT_RAMDISK_IMAGE)) << 32,
                    u64::from(self.field::<u32>(BP_RAMDISK_SIZE))
                        | u64::from(self.field::<u32>(BP_EXT_RAMDISK_SIZE)) << 32,
                )
            },
            BootInfo::Pvh(..) => unsafe {
                let list: u64 = self.field(SI_MODLIST_PADDR);
                if self.field::<u32>(SI_NR_MODULES) == 0 {
                    return None;
                }
                if readable(list, SI_MOD_SIZE_OF_ENTRY) {
                    (read(list + SI_MOD_PADDR), read(list + SI_MOD_SIZE))
                } else {
                    // As if the entry read as zeros: not present.
                    (0, 0)
                }
            },
        };
        (size != 0).then_some(Initrd { addr, size })
    }
}
