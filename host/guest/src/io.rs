//! Port I/O, the serial console and the ways the guest stops.

use core::arch::asm;

const COM1_THR: u16 = 0x3f8;

pub fn outb(port: u16, value: u8) {
    // SAFETY: port I/O has no memory effects on the guest; the guest runs at CPL 0.
    unsafe {
        asm!("out dx, al", in("dx") port, in("al") value, options(nomem, nostack, preserves_flags))
    };
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

/// COM1, written without waiting for THR-empty (the VMM never back-pressures).
#[derive(Clone, Copy)]
pub struct Console;

impl Console {
    pub fn put(self, bytes: &[u8]) {
        for b in bytes {
            self.byte(*b);
        }
    }

    /// Writes the parts, then `\n`.
    pub fn line(self, parts: &[&[u8]]) {
        for p in parts {
            self.put(p);
        }
        self.put(b"\n");
    }

    /// Lowercase hex, zero-padded to `digits` (0 = as few digits as needed).
    pub fn hex(self, value: u64, digits: u32) {
        let significant = (64 - value.leading_zeros()).div_ceil(4).max(1);
        let mut i = significant.max(digits).min(16);
        while i > 0 {
            i -= 1;
            let nibble = ((value >> (4 * i)) & 0xf) as u8;
            self.byte(if nibble < 10 {
                b'0' + nibble
            } else {
                b'a' + nibble - 10
            });
        }
    }

    /// Decimal without padding.
    pub fn dec(self, value: u64) {
        let mut divisor = 1u64;
        while let Some(next) = divisor.checked_mul(10)
            && next <= value
        {
            divisor = next;
        }
        while let Some(digit) = value.checked_div(divisor) {
            self.byte(b'0' + (digit % 10) as u8);
            divisor /= 10;
        }
    }

    fn byte(self, b: u8) {
        outb(COM1_THR, b);
    }
}
