//! Port I/O, the serial console and the ways the guest stops.
//!
//! Under KVM-PVM every guest instruction is emulated (and every `out` to COM1 is a VM exit), so
//! the console writes whole byte strings with one `rep outsb` and formats numbers without
//! per-digit loops.

use core::arch::asm;

const COM1_THR: u16 = 0x3f8;

pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects on the guest; the guest runs at CPL 0.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
}

pub fn inb(port: u16) -> u8 {
    let value: u8;
    // SAFETY: as for `outb`; the read has no memory effects either.
    unsafe {
        asm!("in al, dx", in("dx") port, out("al") value, options(nomem, nostack, preserves_flags))
    };
    value
}

pub fn outw(port: u16, value: u16) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, ax", in("dx") port, in("ax") value, options(nomem, nostack, preserves_flags))
    };
}

pub fn outl(port: u16, value: u32) {
    // SAFETY: as for `outb`.
    unsafe {
        asm!("out dx, eax", in("dx") port, in("eax") value, options(nomem, nostack, preserves_flags))
    };
}

/// Stops this vCPU for good (interrupts stay off).
pub fn park() -> ! {
    loop {
        // SAFETY: interrupts are disabled; `hlt` just stops the vCPU.
        unsafe { asm!("cli", "hlt", options(nomem, nostack)) };
    }
}

/// Loads an empty IDT and raises #UD: #UD -> #GP -> #DF -> triple fault (CPU shutdown).
pub fn triple_fault() -> ! {
    let idtr = [0u16; 5];
    // SAFETY: deliberately ends the guest; nothing runs after this instruction sequence.
    unsafe { asm!("lidt [{}]", "ud2", in(reg) idtr.as_ptr(), options(noreturn, nostack)) }
}

/// Two lowercase hex digits per byte value, most significant first.
static HEX_PAIRS: [[u8; 2]; 256] = {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut table = [[0u8; 2]; 256];
    let mut i = 0;
    while i < 256 {
        table[i] = [DIGITS[i >> 4], DIGITS[i & 0xf]];
        i += 1;
    }
    table
};

/// `value` as 16 lowercase hex digits (most significant first): one table load per byte.
#[inline(always)]
pub fn hex16(value: u64) -> [[u8; 2]; 8] {
    let b = value.to_be_bytes();
    [
        HEX_PAIRS[usize::from(b[0])],
        HEX_PAIRS[usize::from(b[1])],
        HEX_PAIRS[usize::from(b[2])],
        HEX_PAIRS[usize::from(b[3])],
        HEX_PAIRS[usize::from(b[4])],
        HEX_PAIRS[usize::from(b[5])],
        HEX_PAIRS[usize::from(b[6])],
        HEX_PAIRS[usize::from(b[7])],
    ]
}

/// COM1, written without waiting for THR-empty (the VMM never back-pressures).
#[derive(Clone, Copy)]
pub struct Console;

impl Console {
    /// Writes `bytes` to THR, one `rep outsb`.
    pub fn put(self, bytes: &[u8]) {
        // SAFETY: `rep outsb` reads `bytes.len()` bytes forward from `bytes` (DF is clear: the
        // entries run `cld` and compiled code keeps it clear) and writes them to COM1's THR.
        unsafe {
            asm!(
                "rep outsb",
                in("dx") COM1_THR,
                inout("rsi") bytes.as_ptr() => _,
                inout("rcx") bytes.len() => _,
                options(nostack, preserves_flags, readonly)
            )
        };
    }

    /// Lowercase hex, zero-padded to `digits` (0 = as few digits as needed).
    pub fn hex(self, value: u64, digits: u32) {
        let text = hex16(value);
        let significant = (64 - value.leading_zeros()).div_ceil(4).max(1);
        let n = significant.max(digits).min(16) as usize;
        let text = text.as_flattened();
        self.put(&text[text.len() - n..]);
    }

    /// Decimal without padding.
    pub fn dec(self, value: u32) {
        let mut text = [0u8; 10];
        let mut i = text.len();
        let mut rest = value;
        loop {
            i -= 1;
            text[i] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        self.put(&text[i..]);
    }
}
