//! Loads the kernel, initrd and command line into guest memory and writes the boot structures
//! (zero page or PVH start info, e820 map, MP table, GDT, identity page tables).

use std::fs::File;
use std::io::{Cursor, Read};
use std::path::{Path, PathBuf};

use linux_loader::cmdline::Cmdline;
use linux_loader::loader::bootparam::{boot_e820_entry, boot_params, setup_header};
use linux_loader::loader::elf::start_info::{
    hvm_memmap_table_entry, hvm_modlist_entry, hvm_start_info,
};
use linux_loader::loader::elf::{Elf, PvhBootCapability};
use linux_loader::loader::{BzImage, KernelLoader, load_cmdline};
use sha2::{Digest, Sha256};
use vm_memory::{Bytes, GuestAddress, GuestMemoryError, GuestMemoryMmap};

use crate::config::{BootMode, MAX_CMDLINE_LEN, VmConfig};
use crate::gdt;
use crate::layout::{self, E820Entry};
use crate::mptable::{self, MpTableError};

/// The PVH start info magic (`XEN_HVM_START_MAGIC_VALUE`).
const PVH_MAGIC: u32 = 0x336e_c578;
/// Offset of the 64-bit entry from the protected-mode kernel of a bzImage.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;
/// `HdrS` at offset 0x202 of a bzImage.
const BZIMAGE_MAGIC: u32 = 0x5372_6448;
/// Boot protocol 2.12 introduced `xloadflags` (and with it `XLF_KERNEL_64`).
const BOOT_PROTOCOL_2_12: u16 = 0x020c;
/// `xloadflags` bit: the kernel has the 64-bit entry.
const XLF_KERNEL_64: u16 = 1;
/// Loader type "undefined" in `type_of_loader`.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// Page size used for alignment.
const PAGE: u64 = 0x1000;
/// Chunk used when streaming the initrd into guest memory.
const INITRD_CHUNK: usize = 64 * 1024;

/// The kernel entry the vCPU starts at.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Entry {
    /// 64-bit Linux boot protocol: long mode, `RSI` = zero page.
    Linux64 {
        /// Entry address.
        rip: u64,
    },
    /// PVH: 32-bit protected mode, `EBX` = `hvm_start_info`.
    Pvh {
        /// Entry address.
        rip: u64,
    },
}

impl Entry {
    /// The name used in events and status (`linux64` or `pvh`).
    pub(crate) fn name(self) -> &'static str {
        match self {
            Entry::Linux64 { .. } => "linux64",
            Entry::Pvh { .. } => "pvh",
        }
    }
}

/// What was loaded, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct BootInfo {
    /// Where the vCPU starts.
    pub entry: Entry,
    /// End (exclusive) of the memory the kernel occupies.
    pub kernel_end: u64,
    /// Guest-physical address and size of the initrd.
    pub initrd: Option<(u64, u64)>,
}

/// Why the kernel, initrd or command line could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The kernel file could not be read.
    #[error("cannot read kernel {}", .path.display())]
    ReadKernel {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The kernel's SHA-256 differs from `kernel_sha256`.
    #[error("kernel digest mismatch: expected {expected}, loaded {actual}")]
    KernelDigestMismatch {
        /// Configured digest (hex).
        expected: String,
        /// Digest of the bytes loaded (hex).
        actual: String,
    },
    /// Neither an ELF nor a bzImage.
    #[error("kernel is neither an ELF image nor a bzImage")]
    UnknownKernelFormat,
    /// An ELF that is not a 64-bit x86-64 image.
    #[error("kernel ELF is not a 64-bit x86-64 image")]
    NotX86_64Elf,
    /// The ELF loader refused the image (truncated, corrupt, out of guest memory ...).
    #[error("cannot load ELF kernel")]
    Elf(#[source] linux_loader::loader::Error),
    /// The bzImage loader refused the image.
    #[error("cannot load bzImage kernel")]
    BzImage(#[source] linux_loader::loader::Error),
    /// The bzImage has no 64-bit entry point (boot protocol older than 2.12 or a 32-bit kernel).
    #[error("bzImage has no 64-bit entry point (boot protocol {version:#06x})")]
    NoLongModeEntry {
        /// Boot protocol version of the image.
        version: u16,
    },
    /// `boot: "pvh"` but the kernel has no PVH entry note.
    #[error("boot mode `pvh` requested but the kernel has no PVH entry note")]
    NoPvhEntry,
    /// The kernel does not fit in guest memory.
    #[error("kernel ends at {kernel_end:#x}, beyond the end of low memory {low_mem_end:#x}")]
    KernelTooBig {
        /// End of the kernel.
        kernel_end: u64,
        /// End of the RAM below 4 GiB.
        low_mem_end: u64,
    },
    /// The initrd could not be read.
    #[error("cannot read initrd {}", .path.display())]
    ReadInitrd {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
    /// The initrd is empty.
    #[error("initrd {} is empty", .0.display())]
    EmptyInitrd(PathBuf),
    /// The initrd does not fit between the kernel and the top of low memory.
    #[error("initrd of {size} bytes does not fit: {available} bytes free above the kernel")]
    InitrdTooLarge {
        /// Size of the initrd.
        size: u64,
        /// Room left above the kernel.
        available: u64,
    },
    /// The initrd changed size while it was being read.
    #[error("initrd changed while loading: expected {expected} bytes, read {read}")]
    InitrdChanged {
        /// Size seen before reading.
        expected: u64,
        /// Bytes actually read.
        read: u64,
    },
    /// The initrd's SHA-256 differs from `initrd_sha256`.
    #[error("initrd digest mismatch: expected {expected}, loaded {actual}")]
    InitrdDigestMismatch {
        /// Configured digest (hex).
        expected: String,
        /// Digest of the bytes loaded (hex).
        actual: String,
    },
    /// linux-loader refused the command line.
    #[error("invalid kernel command line")]
    Cmdline(#[source] linux_loader::cmdline::Error),
    /// The command line is longer than the kernel accepts.
    #[error("command line of {len} bytes exceeds the kernel's limit of {max}")]
    CmdlineTooLongForKernel {
        /// Length of the command line.
        len: usize,
        /// The kernel's `cmdline_size`.
        max: usize,
    },
    /// The command line could not be written to guest memory.
    #[error("cannot write the command line to guest memory")]
    WriteCmdline(#[source] linux_loader::loader::Error),
    /// More e820 entries than the boot structures hold.
    #[error("memory map of {0} entries does not fit the boot structures")]
    TooManyE820Entries(usize),
    /// The MP table could not be built.
    #[error("cannot build the MP table")]
    MpTable(#[source] MpTableError),
    /// A boot structure could not be written to guest memory.
    #[error("cannot write the {what} to guest memory")]
    WriteBootData {
        /// Which structure.
        what: &'static str,
        /// The memory error.
        #[source]
        source: GuestMemoryError,
    },
    /// A digest in the configuration is malformed (validated configs never have one).
    #[error("malformed digest in config")]
    Config(#[source] crate::config::ConfigError),
}

/// Loads everything the configuration names into `mem` (`mem_bytes` of RAM) for `cpus` vCPUs.
pub(crate) fn load(
    config: &VmConfig,
    mem: &GuestMemoryMmap,
    mem_bytes: u64,
) -> Result<BootInfo, LoadError> {
    let kernel = read_kernel(&config.kernel)?;
    if let Some(expected) = config.kernel_digest().map_err(LoadError::Config)? {
        let actual: [u8; 32] = Sha256::digest(&kernel).into();
        if actual != expected {
            return Err(LoadError::KernelDigestMismatch {
                expected: hex::encode(expected),
                actual: hex::encode(actual),
            });
        }
    }
    let low_end = layout::low_mem_end(mem_bytes);
    let loaded = load_kernel(&kernel, config.boot, mem)?;
    drop(kernel);
    if loaded.reserved_end > low_end {
        return Err(LoadError::KernelTooBig {
            kernel_end: loaded.reserved_end,
            low_mem_end: low_end,
        });
    }

    let initrd = match &config.initrd {
        Some(path) => {
            let max_end = match &loaded.header {
                Some(hdr) => low_end.min(u64::from(hdr.initrd_addr_max) + 1),
                None => low_end,
            };
            let expected = config.initrd_digest().map_err(LoadError::Config)?;
            Some(load_initrd(
                path,
                expected,
                mem,
                loaded.reserved_end,
                max_end,
            )?)
        }
        None => None,
    };

    let cmdline =
        Cmdline::try_from(&config.cmdline, MAX_CMDLINE_LEN + 1).map_err(LoadError::Cmdline)?;
    let cmdline_len = cmdline
        .as_cstring()
        .map_err(LoadError::Cmdline)?
        .as_bytes()
        .len();
    if let Some(hdr) = &loaded.header {
        let max = hdr.cmdline_size as usize;
        if hdr.version >= 0x0206 && cmdline_len > max {
            return Err(LoadError::CmdlineTooLongForKernel {
                len: cmdline_len,
                max,
            });
        }
    }
    load_cmdline(mem, GuestAddress(layout::CMDLINE), &cmdline).map_err(LoadError::WriteCmdline)?;

    let e820 = layout::e820_map(mem_bytes);
    match loaded.entry {
        Entry::Linux64 { .. } => {
            write_zero_page(mem, loaded.header, cmdline_len, initrd, &e820)?;
            write_page_tables(mem)?;
        }
        Entry::Pvh { .. } => write_pvh_start_info(mem, initrd, &e820)?,
    }
    write(
        mem,
        "GDT",
        &gdt::gdt_bytes(&gdt::boot_gdt(matches!(
            loaded.entry,
            Entry::Linux64 { .. }
        ))),
        layout::BOOT_GDT,
    )?;
    write(mem, "IDT", &[0u8; 8], layout::BOOT_IDT)?;
    Ok(BootInfo {
        entry: loaded.entry,
        kernel_end: loaded.reserved_end,
        initrd,
    })
}

/// Writes the MP table describing `cpus` vCPUs.
pub(crate) fn write_mptable(mem: &GuestMemoryMmap, cpus: u32) -> Result<(), LoadError> {
    let table = mptable::build(
        cpus,
        layout::EBDA_START as u32,
        (layout::EBDA_END - layout::EBDA_START) as usize,
    )
    .map_err(LoadError::MpTable)?;
    write(mem, "MP table", &table, layout::EBDA_START)
}

fn read_kernel(path: &Path) -> Result<Vec<u8>, LoadError> {
    std::fs::read(path).map_err(|source| LoadError::ReadKernel {
        path: path.to_owned(),
        source,
    })
}

/// The kernel as loaded.
struct LoadedKernel {
    entry: Entry,
    /// End of the memory the kernel needs (its image, or for a bzImage its `init_size`).
    reserved_end: u64,
    /// The bzImage setup header.
    header: Option<setup_header>,
}

fn load_kernel(
    image: &[u8],
    boot: BootMode,
    mem: &GuestMemoryMmap,
) -> Result<LoadedKernel, LoadError> {
    let himem = Some(GuestAddress(layout::HIMEM_START));
    if image.starts_with(b"\x7fELF") {
        // linux-loader reads the header as ELF64 little-endian without checking class/machine.
        if image.len() < 20 || image[4] != 2 || u16::from_le_bytes([image[18], image[19]]) != 62 {
            return Err(LoadError::NotX86_64Elf);
        }
        let result =
            Elf::load(mem, None, &mut Cursor::new(image), himem).map_err(LoadError::Elf)?;
        let entry_addr = elf_entry(image);
        let entry = match (boot, result.pvh_boot_cap) {
            (BootMode::Linux64, _) => Entry::Linux64 { rip: entry_addr },
            (BootMode::Auto | BootMode::Pvh, PvhBootCapability::PvhEntryPresent(addr)) => {
                Entry::Pvh { rip: addr.0 }
            }
            (BootMode::Pvh, _) => return Err(LoadError::NoPvhEntry),
            (BootMode::Auto, _) => Entry::Linux64 { rip: entry_addr },
        };
        return Ok(LoadedKernel {
            entry,
            reserved_end: result.kernel_end,
            header: None,
        });
    }
    if image.len() >= 0x206 && image[0x202..0x206] == BZIMAGE_MAGIC.to_le_bytes() {
        if boot == BootMode::Pvh {
            return Err(LoadError::NoPvhEntry);
        }
        let result =
            BzImage::load(mem, None, &mut Cursor::new(image), himem).map_err(LoadError::BzImage)?;
        // BzImage::load only returns Ok with a header.
        let Some(hdr) = result.setup_header else {
            return Err(LoadError::UnknownKernelFormat);
        };
        let version = hdr.version;
        if version < BOOT_PROTOCOL_2_12 || hdr.xloadflags & XLF_KERNEL_64 == 0 {
            return Err(LoadError::NoLongModeEntry { version });
        }
        let load = result.kernel_load.0;
        let reserved_end = result
            .kernel_end
            .max(load.saturating_add(u64::from(hdr.init_size)));
        return Ok(LoadedKernel {
            entry: Entry::Linux64 {
                rip: load + BZIMAGE_64BIT_ENTRY_OFFSET,
            },
            reserved_end,
            header: Some(hdr),
        });
    }
    Err(LoadError::UnknownKernelFormat)
}

/// `e_entry` of an ELF64 image whose header linux-loader already accepted.
fn elf_entry(image: &[u8]) -> u64 {
    let mut bytes = [0u8; 8];
    bytes.copy_from_slice(&image[24..32]);
    u64::from_le_bytes(bytes)
}

fn load_initrd(
    path: &Path,
    expected: Option<[u8; 32]>,
    mem: &GuestMemoryMmap,
    kernel_end: u64,
    max_end: u64,
) -> Result<(u64, u64), LoadError> {
    let read_err = |source| LoadError::ReadInitrd {
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(read_err)?;
    let size = file.metadata().map_err(read_err)?.len();
    if size == 0 {
        return Err(LoadError::EmptyInitrd(path.to_owned()));
    }
    let floor = kernel_end.next_multiple_of(PAGE);
    let available = max_end.saturating_sub(floor);
    let addr = max_end
        .checked_sub(size)
        .map(|a| a & !(PAGE - 1))
        .filter(|a| *a >= floor)
        .ok_or(LoadError::InitrdTooLarge { size, available })?;

    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; INITRD_CHUNK.min(size as usize)];
    let mut done: u64 = 0;
    loop {
        let n = file.read(&mut buf).map_err(read_err)?;
        if n == 0 {
            break;
        }
        if done + n as u64 > size {
            return Err(LoadError::InitrdChanged {
                expected: size,
                read: done + n as u64,
            });
        }
        hasher.update(&buf[..n]);
        write(mem, "initrd", &buf[..n], addr + done)?;
        done += n as u64;
    }
    if done != size {
        return Err(LoadError::InitrdChanged {
            expected: size,
            read: done,
        });
    }
    if let Some(expected) = expected {
        let actual: [u8; 32] = hasher.finalize().into();
        if actual != expected {
            return Err(LoadError::InitrdDigestMismatch {
                expected: hex::encode(expected),
                actual: hex::encode(actual),
            });
        }
    }
    Ok((addr, size))
}

fn write(
    mem: &GuestMemoryMmap,
    what: &'static str,
    bytes: &[u8],
    addr: u64,
) -> Result<(), LoadError> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| LoadError::WriteBootData { what, source })
}

fn write_zero_page(
    mem: &GuestMemoryMmap,
    header: Option<setup_header>,
    cmdline_len: usize,
    initrd: Option<(u64, u64)>,
    e820: &[E820Entry],
) -> Result<(), LoadError> {
    let mut params = boot_params::default();
    if e820.len() > params.e820_table.len() {
        return Err(LoadError::TooManyE820Entries(e820.len()));
    }
    if let Some(hdr) = header {
        params.hdr = hdr;
    } else {
        params.hdr.kernel_alignment = 0x0100_0000;
    }
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.boot_flag = 0xaa55;
    params.hdr.header = BZIMAGE_MAGIC;
    params.hdr.cmd_line_ptr = layout::CMDLINE as u32;
    params.hdr.cmdline_size = cmdline_len as u32;
    if let Some((addr, size)) = initrd {
        // Both are below 4 GiB: the initrd lives in low memory.
        params.hdr.ramdisk_image = addr as u32;
        params.hdr.ramdisk_size = size as u32;
        params.ext_ramdisk_size = (size >> 32) as u32;
    }
    for (slot, e) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: e.addr,
            size: e.size,
            r#type: e.kind,
        };
    }
    params.e820_entries = e820.len() as u8;
    mem.write_obj(params, GuestAddress(layout::ZERO_PAGE))
        .map_err(|source| LoadError::WriteBootData {
            what: "zero page",
            source,
        })
}

fn write_pvh_start_info(
    mem: &GuestMemoryMmap,
    initrd: Option<(u64, u64)>,
    e820: &[E820Entry],
) -> Result<(), LoadError> {
    if e820.len() > layout::PVH_MEMMAP_MAX {
        return Err(LoadError::TooManyE820Entries(e820.len()));
    }
    let err = |what| move |source| LoadError::WriteBootData { what, source };
    for (i, e) in e820.iter().enumerate() {
        let entry = hvm_memmap_table_entry {
            addr: e.addr,
            size: e.size,
            type_: e.kind,
            reserved: 0,
        };
        mem.write_obj(entry, GuestAddress(layout::PVH_MEMMAP + 24 * i as u64))
            .map_err(err("PVH memory map"))?;
    }
    let mut info = hvm_start_info {
        magic: PVH_MAGIC,
        version: 1,
        cmdline_paddr: layout::CMDLINE,
        memmap_paddr: layout::PVH_MEMMAP,
        memmap_entries: e820.len() as u32,
        ..Default::default()
    };
    if let Some((paddr, size)) = initrd {
        let module = hvm_modlist_entry {
            paddr,
            size,
            ..Default::default()
        };
        mem.write_obj(module, GuestAddress(layout::PVH_MODLIST))
            .map_err(err("PVH module list"))?;
        info.nr_modules = 1;
        info.modlist_paddr = layout::PVH_MODLIST;
    }
    mem.write_obj(info, GuestAddress(layout::PVH_START_INFO))
        .map_err(err("PVH start info"))
}

/// Identity-maps the first 4 GiB with 2 MiB pages for the 64-bit entry.
fn write_page_tables(mem: &GuestMemoryMmap) -> Result<(), LoadError> {
    const PRESENT_RW: u64 = 0x3;
    const HUGE: u64 = 0x80;
    let mut pml4 = [0u8; 8];
    pml4.copy_from_slice(&(layout::PDPT | PRESENT_RW).to_le_bytes());
    write(mem, "PML4", &pml4, layout::PML4)?;
    let pdpt: Vec<u8> = (0..layout::PD_COUNT)
        .flat_map(|i| ((layout::PD + i * PAGE) | PRESENT_RW).to_le_bytes())
        .collect();
    write(mem, "PDPT", &pdpt, layout::PDPT)?;
    let pd: Vec<u8> = (0..layout::PD_COUNT * 512)
        .flat_map(|i| ((i << 21) | PRESENT_RW | HUGE).to_le_bytes())
        .collect();
    write(mem, "page directories", &pd, layout::PD)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::io::Write;
    use vm_memory::GuestMemoryBackend;

    const MIB: u64 = 1 << 20;

    /// Builds a minimal x86-64 ELF: one PT_LOAD of `code` at 1 MiB and, if `pvh`, a PT_NOTE with
    /// the Xen PHYS32 entry note pointing at the same code.
    pub(crate) fn tiny_elf(code: &[u8], pvh: bool) -> Vec<u8> {
        let phnum: u16 = if pvh { 2 } else { 1 };
        let code_off = 64 + 56 * u64::from(phnum);
        let note_off = code_off + code.len() as u64;
        let mut note = Vec::new();
        if pvh {
            note.extend_from_slice(&4u32.to_le_bytes());
            note.extend_from_slice(&4u32.to_le_bytes());
            note.extend_from_slice(&18u32.to_le_bytes());
            note.extend_from_slice(b"Xen\0");
            note.extend_from_slice(&(HIMEM as u32).to_le_bytes());
        }
        let mut elf = Vec::new();
        elf.extend_from_slice(b"\x7fELF\x02\x01\x01\0");
        elf.extend_from_slice(&[0; 8]);
        elf.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
        elf.extend_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        elf.extend_from_slice(&1u32.to_le_bytes());
        elf.extend_from_slice(&HIMEM.to_le_bytes()); // e_entry
        elf.extend_from_slice(&64u64.to_le_bytes()); // e_phoff
        elf.extend_from_slice(&0u64.to_le_bytes()); // e_shoff
        elf.extend_from_slice(&0u32.to_le_bytes());
        elf.extend_from_slice(&64u16.to_le_bytes());
        elf.extend_from_slice(&56u16.to_le_bytes());
        elf.extend_from_slice(&phnum.to_le_bytes());
        elf.extend_from_slice(&[0; 6]);
        let phdr = |elf: &mut Vec<u8>, kind: u32, off: u64, addr: u64, size: u64| {
            elf.extend_from_slice(&kind.to_le_bytes());
            elf.extend_from_slice(&5u32.to_le_bytes());
            elf.extend_from_slice(&off.to_le_bytes());
            elf.extend_from_slice(&addr.to_le_bytes());
            elf.extend_from_slice(&addr.to_le_bytes());
            elf.extend_from_slice(&size.to_le_bytes());
            elf.extend_from_slice(&size.to_le_bytes());
            elf.extend_from_slice(&4u64.to_le_bytes());
        };
        phdr(&mut elf, 1, code_off, HIMEM, code.len() as u64);
        if pvh {
            phdr(&mut elf, 4, note_off, 0, note.len() as u64);
        }
        elf.extend_from_slice(code);
        elf.extend_from_slice(&note);
        elf
    }

    const HIMEM: u64 = layout::HIMEM_START;

    /// A fake bzImage: setup sectors with a 2.15 header, then `payload` as the protected-mode code.
    fn tiny_bzimage(payload: &[u8], xloadflags: u16) -> Vec<u8> {
        let setup_sects = 4u8;
        let mut img = vec![0u8; (usize::from(setup_sects) + 1) * 512];
        img[0x1f1] = setup_sects;
        img[0x1fe..0x200].copy_from_slice(&0xaa55u16.to_le_bytes());
        img[0x202..0x206].copy_from_slice(&BZIMAGE_MAGIC.to_le_bytes());
        img[0x206..0x208].copy_from_slice(&0x020fu16.to_le_bytes());
        img[0x211] = 1; // loadflags: LOADED_HIGH
        img[0x214..0x218].copy_from_slice(&(HIMEM as u32).to_le_bytes()); // code32_start
        img[0x22c..0x230].copy_from_slice(&0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
        img[0x236..0x238].copy_from_slice(&xloadflags.to_le_bytes());
        img[0x238..0x23c].copy_from_slice(&2048u32.to_le_bytes()); // cmdline_size
        img[0x260..0x264].copy_from_slice(&(2 * MIB as u32).to_le_bytes()); // init_size
        img.extend_from_slice(payload);
        img
    }

    fn mem(bytes: u64) -> GuestMemoryMmap {
        let regions: Vec<_> = layout::ram_regions(bytes)
            .into_iter()
            .map(|(a, s)| (a, s as usize))
            .collect();
        GuestMemoryMmap::from_ranges(&regions).unwrap()
    }

    fn file(bytes: &[u8]) -> tempfile::NamedTempFile {
        let mut f = tempfile::NamedTempFile::new().unwrap();
        f.write_all(bytes).unwrap();
        f
    }

    fn config(kernel: &Path) -> VmConfig {
        let mut c = VmConfig::new(kernel);
        c.memory_mib = 32;
        c
    }

    const CODE: &[u8] = &[0xb0, 0xfe, 0xe6, 0x64, 0xf4];

    #[test]
    fn elf_auto_prefers_pvh_and_linux64_is_selectable() {
        let k = file(&tiny_elf(CODE, true));
        let m = mem(32 * MIB);
        let mut c = config(k.path());
        let info = load(&c, &m, 32 * MIB).unwrap();
        assert_eq!(info.entry, Entry::Pvh { rip: HIMEM });
        let mut got = [0u8; 5];
        m.read_slice(&mut got, GuestAddress(HIMEM)).unwrap();
        assert_eq!(got, CODE);
        let start: hvm_start_info = m.read_obj(GuestAddress(layout::PVH_START_INFO)).unwrap();
        assert_eq!(start.magic, PVH_MAGIC);
        assert_eq!(start.memmap_entries, 3);
        assert_eq!(start.nr_modules, 0);

        c.boot = BootMode::Linux64;
        let m = mem(32 * MIB);
        let info = load(&c, &m, 32 * MIB).unwrap();
        assert_eq!(info.entry, Entry::Linux64 { rip: HIMEM });
        let zp: boot_params = m.read_obj(GuestAddress(layout::ZERO_PAGE)).unwrap();
        assert_eq!(zp.e820_entries, 3);
        let hdr = zp.hdr;
        assert_eq!({ hdr.boot_flag }, 0xaa55);
        assert_eq!({ hdr.cmd_line_ptr }, layout::CMDLINE as u32);
        // The identity map covers the kernel.
        let pml4: u64 = m.read_obj(GuestAddress(layout::PML4)).unwrap();
        assert_eq!(pml4 & !0xfff, layout::PDPT);
        let pde: u64 = m.read_obj(GuestAddress(layout::PD + 8)).unwrap();
        assert_eq!(pde, (2 * MIB) | 0x83);
    }

    #[test]
    fn pvh_without_note_is_a_typed_error() {
        let k = file(&tiny_elf(CODE, false));
        let mut c = config(k.path());
        assert_eq!(
            load(&c, &mem(32 * MIB), 32 * MIB).unwrap().entry,
            Entry::Linux64 { rip: HIMEM }
        );
        c.boot = BootMode::Pvh;
        assert!(matches!(
            load(&c, &mem(32 * MIB), 32 * MIB),
            Err(LoadError::NoPvhEntry)
        ));
    }

    #[test]
    fn truncated_elf_is_a_typed_error() {
        let full = tiny_elf(CODE, true);
        for len in [4, 40, 100, full.len() - 10] {
            let k = file(&full[..len]);
            let err = load(&config(k.path()), &mem(32 * MIB), 32 * MIB).unwrap_err();
            assert!(
                matches!(err, LoadError::Elf(_) | LoadError::NotX86_64Elf),
                "len {len}: {err:?}"
            );
        }
    }

    #[test]
    fn corrupt_elf_is_a_typed_error() {
        let mut bad = tiny_elf(CODE, false);
        bad[4] = 1; // ELFCLASS32
        let k = file(&bad);
        assert!(matches!(
            load(&config(k.path()), &mem(32 * MIB), 32 * MIB),
            Err(LoadError::NotX86_64Elf)
        ));
        let mut bad = tiny_elf(CODE, false);
        bad[54] = 0x99; // e_phentsize
        let k = file(&bad);
        assert!(matches!(
            load(&config(k.path()), &mem(32 * MIB), 32 * MIB),
            Err(LoadError::Elf(_))
        ));
        // A segment placed beyond guest memory.
        let mut bad = tiny_elf(CODE, false);
        bad[64 + 24..64 + 32].copy_from_slice(&(1u64 << 40).to_le_bytes());
        let k = file(&bad);
        assert!(matches!(
            load(&config(k.path()), &mem(32 * MIB), 32 * MIB),
            Err(LoadError::Elf(_))
        ));
    }

    #[test]
    fn garbage_is_not_a_kernel() {
        let k = file(&[0x55; 4096]);
        assert!(matches!(
            load(&config(k.path()), &mem(32 * MIB), 32 * MIB),
            Err(LoadError::UnknownKernelFormat)
        ));
        let k = file(&[]);
        assert!(matches!(
            load(&config(k.path()), &mem(32 * MIB), 32 * MIB),
            Err(LoadError::UnknownKernelFormat)
        ));
    }

    #[test]
    fn bzimage_loads_with_64bit_entry() {
        let k = file(&tiny_bzimage(CODE, XLF_KERNEL_64));
        let m = mem(32 * MIB);
        let mut c = config(k.path());
        c.cmdline = "console=ttyS0".into();
        let info = load(&c, &m, 32 * MIB).unwrap();
        assert_eq!(info.entry, Entry::Linux64 { rip: HIMEM + 0x200 });
        assert_eq!(info.kernel_end, HIMEM + 2 * MIB, "init_size reserved");
        let zp: boot_params = m.read_obj(GuestAddress(layout::ZERO_PAGE)).unwrap();
        let hdr = zp.hdr;
        assert_eq!({ hdr.type_of_loader }, 0xff);
        assert_eq!({ hdr.cmdline_size }, 13);
        assert_eq!({ hdr.version }, 0x020f);
        c.boot = BootMode::Pvh;
        assert!(matches!(
            load(&c, &mem(32 * MIB), 32 * MIB),
            Err(LoadError::NoPvhEntry)
        ));
    }

    #[test]
    fn bzimage_errors_are_typed() {
        let k = file(&tiny_bzimage(CODE, 0));
        assert!(matches!(
            load(&config(k.path()), &mem(32 * MIB), 32 * MIB),
            Err(LoadError::NoLongModeEntry { version: 0x020f })
        ));
        // Header claims more setup sectors than the file has.
        let mut img = tiny_bzimage(&[], XLF_KERNEL_64);
        img[0x1f1] = 0xff;
        let k = file(&img);
        assert!(matches!(
            load(&config(k.path()), &mem(32 * MIB), 32 * MIB),
            Err(LoadError::BzImage(_))
        ));
        // Truncated inside the header.
        let img = tiny_bzimage(CODE, XLF_KERNEL_64);
        let k = file(&img[..0x210]);
        assert!(matches!(
            load(&config(k.path()), &mem(32 * MIB), 32 * MIB),
            Err(LoadError::BzImage(_))
        ));
    }

    #[test]
    fn initrd_goes_to_top_of_low_memory_page_aligned() {
        let k = file(&tiny_elf(CODE, true));
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 7) as u8).collect();
        let i = file(&data);
        let mut c = config(k.path());
        c.initrd = Some(i.path().to_owned());
        c.initrd_sha256 = Some(hex::encode(Sha256::digest(&data)));
        let m = mem(32 * MIB);
        let info = load(&c, &m, 32 * MIB).unwrap();
        let (addr, size) = info.initrd.unwrap();
        assert_eq!(size, 10_000);
        assert_eq!(addr % PAGE, 0);
        assert!(addr + size <= 32 * MIB && addr + size + PAGE > 32 * MIB);
        let mut back = vec![0u8; data.len()];
        m.read_slice(&mut back, GuestAddress(addr)).unwrap();
        assert_eq!(back, data);
        let module: hvm_modlist_entry = m.read_obj(GuestAddress(layout::PVH_MODLIST)).unwrap();
        assert_eq!((module.paddr, module.size), (addr, size));
    }

    #[test]
    fn initrd_larger_than_memory_is_rejected() {
        let k = file(&tiny_elf(CODE, true));
        let i = file(&vec![1u8; 33 * MIB as usize]);
        let mut c = config(k.path());
        c.initrd = Some(i.path().to_owned());
        match load(&c, &mem(32 * MIB), 32 * MIB) {
            Err(LoadError::InitrdTooLarge { size, available }) => {
                assert_eq!(size, 33 * MIB);
                assert!(available < 32 * MIB);
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    #[test]
    fn digest_mismatches_are_refused() {
        let k = file(&tiny_elf(CODE, true));
        let mut c = config(k.path());
        c.kernel_sha256 = Some("00".repeat(32));
        assert!(matches!(
            load(&c, &mem(32 * MIB), 32 * MIB),
            Err(LoadError::KernelDigestMismatch { .. })
        ));
        c.kernel_sha256 = Some(hex::encode(Sha256::digest(tiny_elf(CODE, true))));
        assert!(load(&c, &mem(32 * MIB), 32 * MIB).is_ok());
        let i = file(b"initrd bytes");
        c.initrd = Some(i.path().to_owned());
        c.initrd_sha256 = Some("11".repeat(32));
        assert!(matches!(
            load(&c, &mem(32 * MIB), 32 * MIB),
            Err(LoadError::InitrdDigestMismatch { .. })
        ));
    }

    #[test]
    fn cmdline_is_written_nul_terminated() {
        let k = file(&tiny_elf(CODE, true));
        let mut c = config(k.path());
        c.cmdline = "console=ttyS0 marker=abc".into();
        let m = mem(32 * MIB);
        load(&c, &m, 32 * MIB).unwrap();
        let mut buf = vec![0u8; c.cmdline.len() + 1];
        m.read_slice(&mut buf, GuestAddress(layout::CMDLINE))
            .unwrap();
        assert_eq!(&buf[..c.cmdline.len()], c.cmdline.as_bytes());
        assert_eq!(buf[c.cmdline.len()], 0);
    }

    #[test]
    fn mptable_lands_in_ebda() {
        let m = mem(32 * MIB);
        write_mptable(&m, 4).unwrap();
        let mut sig = [0u8; 4];
        m.read_slice(&mut sig, GuestAddress(layout::EBDA_START))
            .unwrap();
        assert_eq!(&sig, b"_MP_");
        assert!(m.address_in_range(GuestAddress(layout::EBDA_END - 1)));
    }
}
