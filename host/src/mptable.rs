//! A minimal Intel MultiProcessor Specification 1.4 table, so the guest finds its vCPUs, the
//! IO-APIC and the ISA interrupt routing without ACPI.
//!
//! Layout written at [`crate::layout::EBDA_START`]: the 16-byte floating pointer, then the
//! configuration table (header, one processor entry per vCPU, the ISA bus, the IO-APIC, one I/O
//! interrupt entry per IO-APIC pin, and the two local interrupt entries LINT0 = ExtINT,
//! LINT1 = NMI).

use crate::layout::{IOAPIC_ADDR, LAPIC_ADDR};

/// Pins of the in-kernel IO-APIC.
const IOAPIC_PINS: u8 = 24;
/// Local APIC version reported for each vCPU.
const LAPIC_VERSION: u8 = 0x14;
/// IO-APIC version reported.
const IOAPIC_VERSION: u8 = 0x11;
/// Size of the floating pointer structure.
const FLOATING_POINTER_LEN: usize = 16;
/// Size of the configuration table header.
const HEADER_LEN: usize = 44;

const ENTRY_PROCESSOR: u8 = 0;
const ENTRY_BUS: u8 = 1;
const ENTRY_IOAPIC: u8 = 2;
const ENTRY_IO_INTERRUPT: u8 = 3;
const ENTRY_LOCAL_INTERRUPT: u8 = 4;

const INT_TYPE_INT: u8 = 0;
const INT_TYPE_NMI: u8 = 1;
const INT_TYPE_EXTINT: u8 = 3;

const CPU_ENABLED: u8 = 1;
const CPU_BSP: u8 = 2;

/// Why the MP table could not be built.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum MpTableError {
    /// More vCPUs than APIC ids below the IO-APIC's.
    #[error("{0} vCPUs do not fit in an MP table")]
    TooManyCpus(u32),
    /// The table would not fit in the space reserved for it.
    #[error("the MP table needs {needed} bytes, only {available} are reserved")]
    TooBig {
        /// Bytes needed.
        needed: usize,
        /// Bytes available.
        available: usize,
    },
}

/// Size in bytes of the table for `cpus` vCPUs.
pub(crate) fn table_len(cpus: u32) -> usize {
    FLOATING_POINTER_LEN
        + HEADER_LEN
        + cpus as usize * 20
        + 8
        + 8
        + usize::from(IOAPIC_PINS) * 8
        + 2 * 8
}

/// Builds the MP floating pointer followed by the configuration table, to be written at
/// guest-physical `base`. `max_len` is the room reserved for it.
pub(crate) fn build(cpus: u32, base: u32, max_len: usize) -> Result<Vec<u8>, MpTableError> {
    // APIC ids 0..cpus for the vCPUs, `cpus` for the IO-APIC: all must fit the 8-bit id space.
    if cpus == 0 || cpus >= 0xff {
        return Err(MpTableError::TooManyCpus(cpus));
    }
    let needed = table_len(cpus);
    if needed > max_len {
        return Err(MpTableError::TooBig {
            needed,
            available: max_len,
        });
    }
    let ioapic_id = cpus as u8;
    let table_base = base + FLOATING_POINTER_LEN as u32;

    let mut fp = Vec::with_capacity(FLOATING_POINTER_LEN);
    fp.extend_from_slice(b"_MP_");
    fp.extend_from_slice(&table_base.to_le_bytes());
    fp.push(1); // length in 16-byte units
    fp.push(4); // spec revision 1.4
    fp.push(0); // checksum, fixed below
    fp.extend_from_slice(&[0; 5]); // feature bytes: a configuration table is present
    fp[10] = checksum(&fp);

    let mut entries = Vec::new();
    let mut count: u16 = 0;
    for id in 0..cpus {
        entries.push(ENTRY_PROCESSOR);
        entries.push(id as u8);
        entries.push(LAPIC_VERSION);
        entries.push(CPU_ENABLED | if id == 0 { CPU_BSP } else { 0 });
        entries.extend_from_slice(&0x600u32.to_le_bytes()); // signature: family 6
        entries.extend_from_slice(&0x201u32.to_le_bytes()); // features: FPU, APIC
        entries.extend_from_slice(&[0; 8]);
        count += 1;
    }
    entries.push(ENTRY_BUS);
    entries.push(0);
    entries.extend_from_slice(b"ISA   ");
    count += 1;
    entries.push(ENTRY_IOAPIC);
    entries.push(ioapic_id);
    entries.push(IOAPIC_VERSION);
    entries.push(1); // enabled
    entries.extend_from_slice(&IOAPIC_ADDR.to_le_bytes());
    count += 1;
    for pin in 0..IOAPIC_PINS {
        entries.push(ENTRY_IO_INTERRUPT);
        entries.push(INT_TYPE_INT);
        entries.extend_from_slice(&0u16.to_le_bytes()); // conforms to bus
        entries.push(0); // source bus: ISA
        entries.push(pin); // source IRQ
        entries.push(ioapic_id);
        entries.push(pin); // destination pin
        count += 1;
    }
    for (kind, lint) in [(INT_TYPE_EXTINT, 0u8), (INT_TYPE_NMI, 1u8)] {
        entries.push(ENTRY_LOCAL_INTERRUPT);
        entries.push(kind);
        entries.extend_from_slice(&0u16.to_le_bytes());
        entries.push(0);
        entries.push(0);
        entries.push(0xff); // all local APICs
        entries.push(lint);
        count += 1;
    }

    let table_len = (HEADER_LEN + entries.len()) as u16;
    let mut table = Vec::with_capacity(usize::from(table_len));
    table.extend_from_slice(b"PCMP");
    table.extend_from_slice(&table_len.to_le_bytes());
    table.push(4); // spec revision
    table.push(0); // checksum, fixed below
    table.extend_from_slice(b"SAKSHI  "); // OEM id
    table.extend_from_slice(b"MICROVM     "); // product id
    table.extend_from_slice(&0u32.to_le_bytes()); // OEM table pointer
    table.extend_from_slice(&0u16.to_le_bytes()); // OEM table size
    table.extend_from_slice(&count.to_le_bytes());
    table.extend_from_slice(&LAPIC_ADDR.to_le_bytes());
    table.extend_from_slice(&0u16.to_le_bytes()); // extended table length
    table.push(0); // extended table checksum
    table.push(0); // reserved
    debug_assert_eq!(table.len(), HEADER_LEN);
    table.extend_from_slice(&entries);
    table[7] = checksum(&table);

    fp.extend_from_slice(&table);
    debug_assert_eq!(fp.len(), needed);
    Ok(fp)
}

/// The byte that makes `bytes` sum to zero (mod 256).
fn checksum(bytes: &[u8]) -> u8 {
    bytes
        .iter()
        .fold(0u8, |acc, b| acc.wrapping_add(*b))
        .wrapping_neg()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sum(bytes: &[u8]) -> u8 {
        bytes.iter().fold(0u8, |a, b| a.wrapping_add(*b))
    }

    /// Parses the table the way a guest does and returns the processor entries' APIC ids.
    fn parse(bytes: &[u8], base: u32) -> Vec<(u8, bool)> {
        assert_eq!(&bytes[0..4], b"_MP_");
        assert_eq!(sum(&bytes[0..16]), 0, "floating pointer checksum");
        let table_addr = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
        let off = (table_addr - base) as usize;
        let table = &bytes[off..];
        assert_eq!(&table[0..4], b"PCMP");
        let len = usize::from(u16::from_le_bytes([table[4], table[5]]));
        assert_eq!(sum(&table[..len]), 0, "table checksum");
        let count = u16::from_le_bytes([table[34], table[35]]);
        let mut cpus = Vec::new();
        let mut p = HEADER_LEN;
        for _ in 0..count {
            let size = if table[p] == ENTRY_PROCESSOR { 20 } else { 8 };
            if table[p] == ENTRY_PROCESSOR {
                cpus.push((table[p + 1], table[p + 3] & CPU_BSP != 0));
            }
            p += size;
        }
        assert_eq!(p, len, "entries fill the table exactly");
        cpus
    }

    #[test]
    fn one_entry_per_cpu_with_bsp_first() {
        for n in [1u32, 2, 4, 32] {
            let bytes = build(n, 0x9fc00, 1024).unwrap();
            assert_eq!(bytes.len(), table_len(n));
            let cpus = parse(&bytes, 0x9fc00);
            assert_eq!(cpus.len(), n as usize);
            for (i, (id, bsp)) in cpus.iter().enumerate() {
                assert_eq!(usize::from(*id), i);
                assert_eq!(*bsp, i == 0);
            }
        }
    }

    #[test]
    fn rejects_what_does_not_fit() {
        assert_eq!(build(0, 0, 1024), Err(MpTableError::TooManyCpus(0)));
        assert_eq!(build(255, 0, 1 << 16), Err(MpTableError::TooManyCpus(255)));
        assert!(matches!(
            build(32, 0, 100),
            Err(MpTableError::TooBig { .. })
        ));
    }
}
