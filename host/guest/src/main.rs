//! The Sakshi test guest: a freestanding x86-64 micro-VM kernel.
//!
//! Built by `host/build.rs` (not by cargo directly). The console protocol, the memory it writes
//! and the devices it uses are specified in `docs/CONTRACTS.md` ("Test guest").

#![no_std]
#![no_main]

mod boot;
mod entry;
mod idle;
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
/// Bit 0 of a read from the signal port: the host asks for a graceful stop.
const SIGNAL_STOP_REQUESTED: u8 = 0x01;
/// Seconds between `idle: tick N` lines when the command line has no `heartbeat=`.
const DEFAULT_HEARTBEAT_S: u64 = 10;

/// The `marker:` line up to the text; the address is spelled out here (checked below), so that
/// printing it costs no formatting.
const MARKER_LINE_PREFIX: &[u8] = b"marker: gpa=0x300000 text=";
const _: () = assert!(MARKER_GPA == 0x30_0000);

/// Entry kinds passed by the assembly entries.
const ENTRY_LINUX64: u32 = 0;

/// What `run=` asks for (the last `run=` word wins).
#[derive(Default, Clone, Copy, PartialEq, Eq)]
enum Run {
    #[default]
    None,
    Spin,
    Idle,
}

/// A decimal number (at most 19 digits: no overflow); `None` for anything else.
fn parse_dec(text: &[u8]) -> Option<u64> {
    if text.is_empty() || text.len() > 19 {
        return None;
    }
    let mut value = 0u64;
    for b in text {
        if !b.is_ascii_digit() {
            return None;
        }
        value = value * 10 + u64::from(b - b'0');
    }
    Some(value)
}

/// What the command line asks for.
#[derive(Default)]
struct Actions<'a> {
    marker: Option<&'a [u8]>,
    trace: Option<&'a [u8]>,
    mmio_garbage: bool,
    fault_triple: bool,
    run: Run,
    heartbeat_s: Option<u64>,
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
                b"run=spin" => actions.run = Run::Spin,
                b"run=idle" => actions.run = Run::Idle,
                b"exit=reboot" => actions.exit_reboot = true,
                b"exit=halt" => actions.exit_halt = true,
                _ => {
                    if let Some(value) = word.strip_prefix(b"marker=") {
                        actions.marker = Some(value);
                    } else if let Some(value) = word.strip_prefix(b"trace=") {
                        actions.trace = Some(value);
                    } else if let Some(value) = word.strip_prefix(b"heartbeat=") {
                        actions.heartbeat_s = parse_dec(value);
                    }
                }
            }
        }
        actions
    }
}

/// Called by both entries on the guest's own stack, page tables and GDT, after they printed the
/// first console line (`SAKSHI-TEST-GUEST v1 entry=<kind>`).
#[unsafe(no_mangle)]
extern "C" fn guest_main(entry_kind: u32, boot_info_gpa: u64) -> ! {
    let con = Console;
    let boot = if entry_kind == ENTRY_LINUX64 {
        BootInfo::from_boot_params(boot_info_gpa)
    } else {
        BootInfo::from_start_info(boot_info_gpa)
    };
    let Some(boot) = boot else {
        con.put(b"error: bad boot information\n");
        power_off(con)
    };

    let cmdline = boot.cmdline();
    con.put(b"cmdline: ");
    con.put(cmdline);
    con.put(b"\n");

    for e in boot.memory_map() {
        print_map_entry(con, &e);
    }

    match boot.initrd() {
        None => con.put(b"initrd: none\n"),
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
    con.put(MARKER_LINE_PREFIX);
    // SAFETY: write_marker just wrote `marker_len` bytes at MARKER_GPA, which is identity-mapped
    // RAM that nothing else in the guest references.
    con.put(unsafe { core::slice::from_raw_parts(MARKER_GPA as *const u8, marker_len) });
    con.put(b"\n");

    if let Some(trace) = actions.trace {
        con.put(b"trace: ");
        con.put(trace);
        con.put(b"\n");
    }

    con.put(b"boot-complete\n");
    io::outb(SIGNAL_PORT, SIGNAL_BOOT_COMPLETE);

    if actions.mmio_garbage {
        mmio_garbage(&boot);
        con.put(b"mmio: garbage done\n");
    }
    if actions.fault_triple {
        con.put(b"fault: triple\n");
        io::triple_fault();
    }
    if actions.run == Run::Spin {
        con.put(b"run: spin\n");
        loop {
            bump_counter();
        }
    }
    if actions.run == Run::Idle {
        con.put(b"run: idle\n");
        idle::run(con, actions.heartbeat_s.unwrap_or(DEFAULT_HEARTBEAT_S));
        // A graceful stop was requested: power off.
        power_off(con)
    }
    if actions.exit_reboot {
        con.put(b"exit: reboot\n");
        io::outb(0x64, 0xfe);
        io::park();
    }
    // `exit=halt`, and the default when nothing else ended the run.
    let _ = actions.exit_halt;
    power_off(con)
}

/// An `e820:` line, its fixed text in place: printing an entry fills in the numbers and writes
/// the line with one `rep outsb`.
#[repr(C)]
struct MapLine {
    addr_label: [u8; 13],
    addr: [[u8; 2]; 8],
    size_label: [u8; 8],
    size: [[u8; 2]; 8],
    type_label: [u8; 6],
    /// The type when it is a single digit, and `\n`.
    kind: [u8; 2],
}

static mut MAP_LINE: MapLine = MapLine {
    addr_label: *b"e820: addr=0x",
    addr: [[b'0'; 2]; 8],
    size_label: *b" size=0x",
    size: [[b'0'; 2]; 8],
    type_label: *b" type=",
    kind: *b"0\n",
};

fn print_map_entry(con: Console, e: &boot::MapEntry) {
    let line = &raw mut MAP_LINE;
    // SAFETY: the guest runs on one vCPU and nothing else references MAP_LINE; `MapLine` is
    // all bytes (no padding), so viewing it as a byte slice is sound.
    unsafe {
        (*line).addr = io::hex16(e.addr);
        (*line).size = io::hex16(e.size);
        let single_digit = e.kind < 10;
        if single_digit {
            (*line).kind[0] = b'0' + e.kind as u8;
        }
        let bytes = core::slice::from_raw_parts(line.cast::<u8>(), core::mem::size_of::<MapLine>());
        if single_digit {
            con.put(bytes);
        } else {
            con.put(&bytes[..bytes.len() - 2]);
            con.dec(e.kind);
            con.put(b"\n");
        }
    }
}

fn power_off(con: Console) -> ! {
    con.put(b"exit: halt\n");
    io::outb(SIGNAL_PORT, SIGNAL_POWER_OFF);
    io::park()
}

/// Writes `SAKSHI-MARKER:<value>\0` at [`MARKER_GPA`]; returns the text length (without NUL).
fn write_marker(value: &[u8]) -> usize {
    let value = &value[..value.len().min(MARKER_VALUE_MAX)];
    let dst = MARKER_GPA as *mut u8;
    // SAFETY: MARKER_GPA..COUNTER_GPA is identity-mapped guest RAM that the contract reserves
    // for the marker (the VMM puts no boot data there) and nothing else in the guest references;
    // prefix + value + NUL fit in it by the MARKER_VALUE_MAX bound. `rep movsb` copies forward
    // (DF is clear) from the image and from the command line.
    unsafe {
        core::arch::asm!(
            "rep movsb",
            "mov rsi, {value}",
            "mov rcx, {value_len}",
            "rep movsb",
            "mov byte ptr [rdi], 0",
            value = in(reg) value.as_ptr(),
            value_len = in(reg) value.len(),
            inout("rdi") dst => _,
            inout("rsi") MARKER_PREFIX.as_ptr() => _,
            inout("rcx") MARKER_PREFIX.len() => _,
            options(nostack, preserves_flags)
        )
    };
    MARKER_PREFIX.len() + value.len()
}

fn bump_counter() {
    let counter = COUNTER_GPA as *mut u64;
    // SAFETY: COUNTER_GPA is identity-mapped, 8-byte aligned guest RAM reserved for the counter.
    unsafe { counter.write_volatile(counter.read_volatile().wrapping_add(1)) };
}

/// Writes to I/O ports and MMIO that no device should claim (see CONTRACTS.md).
fn mmio_garbage(boot: &BootInfo) {
    let mut ram_top_below_4g = 0u64;
    for e in boot.memory_map() {
        if e.kind == 1 && e.addr < boot::FOUR_GIB {
            let end = e.addr.saturating_add(e.size).min(boot::FOUR_GIB);
            ram_top_below_4g = ram_top_below_4g.max(end);
        }
    }
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
/// Under KVM-PVM every guest instruction is emulated, so this costs instructions per byte: the
/// loop reads eight bytes per load and folds each byte in with two instructions (`xor` into the
/// low byte of the hash is exactly `h ^ byte`, then `imul`).
fn fnv1a32(bytes: &[u8]) -> u32 {
    const PRIME: u32 = 0x0100_0193;
    let mut h: u32 = 0x811c_9dc5;
    let (words, tail) = bytes.as_chunks::<8>();
    if !words.is_empty() {
        // SAFETY: reads `words.len()` 8-byte chunks from `words`; registers only otherwise.
        unsafe {
            core::arch::asm!(
                "2:",
                "mov {w}, qword ptr [{p}]",
                "xor al, {w:l}",
                "imul eax, eax, 0x01000193",
                "xor al, {w:h}",
                "imul eax, eax, 0x01000193",
                "shr {w}, 16",
                "xor al, {w:l}",
                "imul eax, eax, 0x01000193",
                "xor al, {w:h}",
                "imul eax, eax, 0x01000193",
                "shr {w}, 16",
                "xor al, {w:l}",
                "imul eax, eax, 0x01000193",
                "xor al, {w:h}",
                "imul eax, eax, 0x01000193",
                "shr {w}, 16",
                "xor al, {w:l}",
                "imul eax, eax, 0x01000193",
                "xor al, {w:h}",
                "imul eax, eax, 0x01000193",
                "add {p}, 8",
                "cmp {p}, {end}",
                "jne 2b",
                p = inout(reg) words.as_ptr() => _,
                end = in(reg) words.as_ptr_range().end,
                w = out(reg_abcd) _,
                inout("eax") h,
                options(nostack, readonly)
            )
        };
    }
    for b in tail {
        h = (h ^ u32::from(*b)).wrapping_mul(PRIME);
    }
    h
}

#[panic_handler]
fn panic(_: &core::panic::PanicInfo) -> ! {
    Console.put(b"error: guest panic\n");
    io::park()
}
