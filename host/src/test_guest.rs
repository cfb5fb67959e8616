//! The project's own test guest, built from `host/guest/` by `host/build.rs`.
//!
//! A freestanding x86-64 ELF (`.text` at 1 MiB) with a 64-bit Linux boot protocol entry
//! (`e_entry`) and a PVH entry (Xen note `XEN_ELFNOTE_PHYS32_ENTRY`). Its console protocol,
//! command line and memory contents are specified in `docs/CONTRACTS.md` ("Test guest").

use std::path::Path;

/// Path of the test guest ELF that this build of `sakshi-host` produced.
///
/// The file lives in cargo's build output (`OUT_DIR` of this crate) and exists as long as that
/// target directory does. Scripts get the same path from `sakshi-vmm --print-test-guest`.
pub fn test_guest_path() -> &'static Path {
    Path::new(env!("SAKSHI_TEST_GUEST"))
}

#[cfg(test)]
mod tests {
    use super::test_guest_path;

    const PT_LOAD: u32 = 1;
    const PT_NOTE: u32 = 4;
    const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;
    const ONE_MIB: u64 = 0x10_0000;

    fn u16_at(b: &[u8], off: usize) -> u16 {
        u16::from_le_bytes(b[off..off + 2].try_into().unwrap())
    }
    fn u32_at(b: &[u8], off: usize) -> u32 {
        u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
    }
    fn u64_at(b: &[u8], off: usize) -> u64 {
        u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
    }

    struct Phdr {
        kind: u32,
        offset: usize,
        paddr: u64,
        vaddr: u64,
        filesz: u64,
        memsz: u64,
        align: u64,
    }

    fn program_headers(elf: &[u8]) -> Vec<Phdr> {
        let phoff = usize::try_from(u64_at(elf, 0x20)).unwrap();
        let phentsize = usize::from(u16_at(elf, 0x36));
        let phnum = usize::from(u16_at(elf, 0x38));
        assert_eq!(phentsize, 56, "ELF64 program header size");
        (0..phnum)
            .map(|i| {
                let p = phoff + i * phentsize;
                Phdr {
                    kind: u32_at(elf, p),
                    offset: usize::try_from(u64_at(elf, p + 8)).unwrap(),
                    vaddr: u64_at(elf, p + 16),
                    paddr: u64_at(elf, p + 24),
                    filesz: u64_at(elf, p + 32),
                    memsz: u64_at(elf, p + 40),
                    align: u64_at(elf, p + 48),
                }
            })
            .collect()
    }

    /// (name, type, descriptor) of every note in a PT_NOTE segment (4-byte aligned fields).
    fn notes(segment: &[u8]) -> Vec<(Vec<u8>, u32, Vec<u8>)> {
        let mut out = Vec::new();
        let mut off = 0;
        while off + 12 <= segment.len() {
            let namesz = usize::try_from(u32_at(segment, off)).unwrap();
            let descsz = usize::try_from(u32_at(segment, off + 4)).unwrap();
            let kind = u32_at(segment, off + 8);
            let name = segment[off + 12..off + 12 + namesz].to_vec();
            let desc_off = off + 12 + namesz.next_multiple_of(4);
            let desc = segment[desc_off..desc_off + descsz].to_vec();
            out.push((name, kind, desc));
            off = desc_off + descsz.next_multiple_of(4);
        }
        out
    }

    #[test]
    fn test_guest_is_x86_64_elf_with_linux64_and_pvh_entries() {
        let elf = std::fs::read(test_guest_path()).expect("the build script produced the guest");
        assert_eq!(&elf[..4], b"\x7fELF", "ELF magic");
        assert_eq!(elf[4], 2, "ELFCLASS64");
        assert_eq!(elf[5], 1, "little endian");
        assert_eq!(u16_at(&elf, 0x10), 2, "ET_EXEC");
        assert_eq!(u16_at(&elf, 0x12), 0x3e, "EM_X86_64");

        let entry = u64_at(&elf, 0x18);
        assert!(
            (ONE_MIB..2 * ONE_MIB).contains(&entry),
            "e_entry {entry:#x} not in the 1 MiB range"
        );

        let phdrs = program_headers(&elf);
        let loads: Vec<&Phdr> = phdrs.iter().filter(|p| p.kind == PT_LOAD).collect();
        assert!(!loads.is_empty(), "no PT_LOAD");
        for p in &loads {
            assert_eq!(p.paddr, p.vaddr, "identity-mapped load segment");
            assert!(p.paddr >= ONE_MIB && p.memsz >= p.filesz);
        }
        let in_image = |addr: u64| {
            loads
                .iter()
                .any(|p| (p.paddr..p.paddr + p.filesz).contains(&addr))
        };
        assert!(
            in_image(entry),
            "e_entry {entry:#x} outside the loaded bytes"
        );

        let pvh_entries: Vec<u64> = phdrs
            .iter()
            .filter(|p| p.kind == PT_NOTE)
            .flat_map(|p| {
                // QEMU aligns the note name with p_align; 4 is what the ELF note format uses.
                assert_eq!(p.align, 4, "PT_NOTE alignment");
                let len = usize::try_from(p.filesz).unwrap();
                notes(&elf[p.offset..p.offset + len])
            })
            .filter(|(name, kind, _)| name == b"Xen\0" && *kind == XEN_ELFNOTE_PHYS32_ENTRY)
            .map(|(_, _, desc)| {
                assert_eq!(desc.len(), 8, "PVH entry descriptor size");
                u64_at(&desc, 0)
            })
            .collect();
        assert_eq!(pvh_entries.len(), 1, "exactly one PVH entry note");
        let pvh = pvh_entries[0];
        assert!(pvh < u64::from(u32::MAX), "PVH entry is a 32-bit address");
        assert!(in_image(pvh), "PVH entry {pvh:#x} outside the loaded bytes");
        assert_ne!(pvh, entry, "the PVH and 64-bit entries are different code");

        assert!(elf.len() < 64 * 1024, "guest grew to {} bytes", elf.len());
    }
}
