//! The Sakshi test guest: a freestanding x86-64 micro-VM kernel.
//!
//! Built by `host/build.rs` (not by cargo directly). The console protocol, the memory it writes
//! and the devices it uses are specified in `docs/CONTRACTS.md` ("Test guest").

#![no_std]
#![no_main]

mod boot;
mod entry;
mod io;

use boot::BootInfo;
use io::Console;

/// Guest-physical address of the NUL-terminated marker text.
const MARKER_GPA: usize = 0x30_0000;
/// Guest-physical address of the little-endian u64 counter.
const COUNTER_GPA: usize = 0x30_0100;
const MARKER_PREFIX: &[u8] = b"SAKSHI-MARKER:";
/// Room for the marker value: prefix + value + NUL must end before the counter.
const MARKER_VALUE_MAX: usize = COUNTER_GPA - MARKER_GPA - MARKER_PREFIX.len() - 1;

/// Sakshi signal port (1-byte writes).
const SIGNAL_PORT: u16 = 0x440;
const SIGNAL_BOOT_COMPLETE: u8 = 0x01;
const SIGNAL_POWER_OFF: u8 = 0x02;

/// Entry kinds passed by the assembly entries.
const ENTRY_LINUX64: u32 = 0;

/// What the command line asks for.
#[derive(Default)]
struct Actions<'a> {
    marker: Option<&'a [u8]>,
    trace: Option<&'a [u8]>,
    mmio_garbage: bool,
    fault_triple: bool,
    run_spin: bool,
    exit_reboot: bool,
    exit_halt: bool,
}

impl<'a> Actions<'a> {
    fn parse(cmdline: &'a [u8]) -> Self {
        let mut actions = Actions::default();
        for word in cmdline.split(|b| *b == b' ' || *b == b'\t' || *b == b'\n') {
            match word {
                b"mmio=garbage" => actions.mmio_garbage = true,
                b"fault=triple" => actions.fault_triple = true,
                b"run=spin" => actions.run_spin = true,
                b"exit=reboot" => actions.exit_reboot = true,
                b"exit=halt" => actions.exit_halt = true,
                _ => {
                    if let Some(value) = word.strip_prefix(b"marker=") {
                        actions.marker = Some(value);
                    } else if let Some(value) = word.strip_prefix(b"trace=") {
                        actions.trace = Some(value);
                    }
                }
            }
        }
        actions
    }
}

/// Called by both entries on the guest's own stack, page tables and GDT.
#[unsafe(no_mangle)]
extern "C" fn guest_main(entry_kind: u32, boot_info_gpa: u64) -> ! {
    let con = Console;
    let linux64 = entry_kind == ENTRY_LINUX64;
    con.line(&[
        b"SAKSHI-TEST-GUEST v1 entry=",
        if linux64 { b"linux64" } else { b"pvh" },
    ]);

    let boot = if linux64 {
        BootInfo::from_boot_params(boot_info_gpa)
    } else {
        BootInfo::from_start_info(boot_info_gpa)
    };
    let Some(boot) = boot else {
        con.line(&[b"error: bad boot information"]);
        power_off(con)
    };

    let cmdline = boot.cmdline();
    con.line(&[b"cmdline: ", cmdline]);

    let mut ram_top_below_4g = 0u64;
    for e in boot.memory_map() {
        con.put(b"e820: addr=0x");
        con.hex(e.addr, 16);
        con.put(b" size=0x");
        con.hex(e.size, 16);
        con.put(b" type=");
        con.dec(u64::from(e.kind));
        con.put(b"\n");
        if e.kind == 1 && e.addr < boot::FOUR_GIB {
            let end = e.addr.saturating_add(e.size).min(boot::FOUR_GIB);
            ram_top_below_4g = ram_top_below_4g.max(end);
        }
    }

    match boot.initrd() {
        None => con.line(&[b"initrd: none"]),
        Some(initrd) => {
            con.put(b"initrd: addr=0x");
            con.hex(initrd.addr, 0);
            con.put(b" size=0x");
            con.hex(initrd.size, 0);
            match initrd.bytes() {
                Some(bytes) => {
                    con.put(b" fnv1a32=0x");
                    con.hex(u64::from(fnv1a32(bytes)), 8);
                    con.put(b"\n");
                }
                None => con.put(b" unreadable (beyond 4 GiB)\n"),
            }
        }
    }

    let actions = Actions::parse(cmdline);
    let marker_len = write_marker(actions.marker.unwrap_or(b"default"));
    bump_counter();
    con.put(b"marker: gpa=0x");
    con.hex(MARKER_GPA as u64, 0);
    con.put(b" text=");
    // SAFETY: write_marker just wrote `marker_len` bytes at MARKER_GPA, which is identity-mapped
    // RAM that nothing else in the guest references.
    con.put(unsafe { core::slice::from_raw_parts(MARKER_GPA as *const u8, marker_len) });
    con.put(b"\n");

    if let Some(trace) = actions.trace {
        con.line(&[b"trace: ", trace]);
    }

    con.line(&[b"boot-complete"]);
    io::outb(SIGNAL_PORT, SIGNAL_BOOT_COMPLETE);

    if actions.mmio_garbage {
        mmio_garbage(ram_top_below_4g);
        con.line(&[b"mmio: garbage done"]);
    }
    if actions.fault_triple {
        con.line(&[b"fault: triple"]);
        io::triple_fault();
    }
    if actions.run_spin {
        con.line(&[b"run: spin"]);
        loop {
            bump_counter();
        }
    }
    if actions.exit_reboot {
        con.line(&[b"exit: reboot"]);
        io::outb(0x64, 0xfe);
        io::park();
    }
    // `exit=halt`, and the default when nothing else ended the run.
    let _ = actions.exit_halt;
    power_off(con)
}

fn power_off(con: Console) -> ! {
    con.line(&[b"exit: halt"]);
    io::outb(SIGNAL_PORT, SIGNAL_POWER_OFF);
    io::park()
}

/// Writes `SAKSHI-MARKER:<value>\0` at [`MARKER_GPA`]; returns the text length (without NUL).
fn write_marker(value: &[u8]) -> usize {
    let value = &value[..value.len().min(MARKER_VALUE_MAX)];
    let dst = MARKER_GPA as *mut u8;
    let mut n = 0;
    for b in MARKER_PREFIX.iter().chain(value).chain(&[0u8]) {
        // SAFETY: MARKER_GPA..COUNTER_GPA is identity-mapped guest RAM reserved for the marker by
        // the contract; `n` stays below COUNTER_GPA - MARKER_GPA by the MARKER_VALUE_MAX bound.
        unsafe { dst.add(n).write_volatile(*b) };
        n += 1;
    }
    n - 1
}

fn bump_counter() {
    let counter = COUNTER_GPA as *mut u64;
    // SAFETY: COUNTER_GPA is identity-mapped, 8-byte aligned guest RAM reserved for the counter.
    unsafe { counter.write_volatile(counter.read_volatile().wrapping_add(1)) };
}

/// Writes to I/O ports and MMIO that no device should claim (see CONTRACTS.md).
fn mmio_garbage(ram_top_below_4g: u64) {
    io::outb(0x0777, 0xa5);
    io::outw(0x5a5a, 0xdead);
    io::outl(0xe0e0, 0xdead_beef);
    let base = ram_top_below_4g.next_multiple_of(0x20_0000) + 0x400_0000;
    if base < 0xfe00_0000 {
        let base = base as usize;
        // SAFETY: `base` is inside the guest's own 4 GiB identity map and above all RAM below
        // 4 GiB: the writes reach no memory the guest uses; they exit to the VMM (or are dropped).
        unsafe {
            (base as *mut u8).write_volatile(0xa5);
            ((base + 0x1000) as *mut u32).write_volatile(0xdead_beef);
            ((base + 0x2000) as *mut u64).write_volatile(0x0123_4567_89ab_cdef);
        }
    }
}

/// FNV-1a, 32-bit (offset basis 0x811c9dc5, prime 0x01000193).
///
/// Reads eight bytes per load: under KVM-PVM every guest instruction is emulated, so fewer
/// memory accesses and branches per byte matter.
fn fnv1a32(bytes: &[u8]) -> u32 {
    const PRIME: u32 = 0x0100_0193;
    let mut h: u32 = 0x811c_9dc5;
    let (words, tail) = bytes.as_chunks::<8>();
    for word in words {
        let w = u64::from_le_bytes(*word);
        // Unrolled by hand: opt-level=s keeps loops rolled.
        h = (h ^ u32::from(w as u8)).wrapping_mul(PRIME);
        h = (h ^ u32::from((w >> 8) as u8)).wrapping_mul(PRIME);
        h = (h ^ u32::from((w >> 16) as u8)).wrapping_mul(PRIME);
        h = (h ^ u32::from((w >> 24) as u8)).wrapping_mul(PRIME);
        h = (h ^ u32::from((w >> 32) as u8)).wrapping_mul(PRIME);
        h = (h ^ u32::from((w >> 40) as u8)).wrapping_mul(PRIME);
        h = (h ^ u32::from((w >> 48) as u8)).wrapping_mul(PRIME);
        h = (h ^ u32::from((w >> 56) as u8)).wrapping_mul(PRIME);
    }
    for b in tail {
        h = (h ^ u32::from(*b)).wrapping_mul(PRIME);
    }
    h
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    Console.line(&[b"error: guest panic"]);
    io::park()
}
