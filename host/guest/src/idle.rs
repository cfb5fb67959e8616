//! `run=idle`: the guest halts between ticks of its local APIC timer and so costs (almost) no
//! host CPU, while still answering a graceful stop and showing signs of life.
//!
//! Setup (only on this path, so the other runs stay as cheap as before): an IDT with two gates
//! (the tick and the APIC's spurious vector), the xAPIC software-enabled, its timer periodic
//! every [`TICK_MS`] ms. Each wake-up: bump the counter at 0x300100, poll the signal port for a
//! stop request, print `idle: tick N` every `heartbeat=` seconds. Everything else (pause,
//! resume, a hard stop) is the VMM's business: a halted vCPU leaves `KVM_RUN` on its kick
//! signal like a running one.

use crate::io::{self, Console};
use core::arch::{asm, global_asm};

/// xAPIC registers (MMIO at the architectural default base; the guest maps all of 4 GiB).
const LAPIC_BASE: usize = 0xfee0_0000;
const LAPIC_SVR: usize = 0xf0;
const LAPIC_LVT_TIMER: usize = 0x320;
const LAPIC_TIMER_INITIAL: usize = 0x380;
const LAPIC_TIMER_DIVIDE: usize = 0x3e0;
const SVR_APIC_ENABLE: u32 = 1 << 8;
const LVT_TIMER_PERIODIC: u32 = 1 << 17;
/// Divide configuration 0b1010: the bus clock / 128.
const DIVIDE_BY_128: u32 = 0b1010;

/// Vectors: the tick, and the spurious vector (low four bits set, as older APICs require).
const TICK_VECTOR: usize = 0x40;
const SPURIOUS_VECTOR: usize = 0x4f;

/// Tick period. KVM's emulated APIC bus runs at 1 GHz: 100 ms = 781,250 counts of bus / 128.
const TICK_MS: u64 = 100;
const TICK_COUNT: u32 = (TICK_MS * 1_000_000 / 128) as u32;
const TICKS_PER_SECOND: u64 = 1000 / TICK_MS;

/// The segment selector of the guest's 64-bit code segment (see `entry.rs`).
const SEL_CODE64: u64 = 0x08;
/// Present, DPL 0, 64-bit interrupt gate (IF cleared on entry).
const GATE_INTERRUPT: u64 = 0x8e;

/// 16-byte gates up to the spurious vector; the unused ones stay not-present.
static mut IDT: [u64; 2 * (SPURIOUS_VECTOR + 1)] = [0; 2 * (SPURIOUS_VECTOR + 1)];

/// Ticks seen by the interrupt handler.
#[unsafe(no_mangle)]
static mut IDLE_TICKS: u64 = 0;

global_asm!(
    ".section .text",
    ".globl idle_tick_isr",
    "idle_tick_isr:",
    "push rax",
    "inc qword ptr [rip + {ticks}]",
    // End of interrupt: any write to the APIC's EOI register (0xfee000b0).
    "mov eax, 0xfee000b0",
    "mov dword ptr [rax], 0",
    "pop rax",
    "iretq",
    // Spurious interrupts need no EOI.
    ".globl idle_spurious_isr",
    "idle_spurious_isr:",
    "iretq",
    ticks = sym IDLE_TICKS,
);

unsafe extern "C" {
    fn idle_tick_isr();
    fn idle_spurious_isr();
}

fn lapic_write(offset: usize, value: u32) {
    // SAFETY: the xAPIC page is identity-mapped by the guest's 4 GiB map and is not RAM; the
    // write goes to the (in-kernel) local APIC emulation.
    unsafe { ((LAPIC_BASE + offset) as *mut u32).write_volatile(value) };
}

fn set_gate(vector: usize, handler: usize) {
    let handler = handler as u64;
    let low = (handler & 0xffff)
        | (SEL_CODE64 << 16)
        | (GATE_INTERRUPT << 40)
        | (((handler >> 16) & 0xffff) << 48);
    let high = handler >> 32;
    let idt = &raw mut IDT;
    // SAFETY: one vCPU, interrupts off, and nothing else references IDT; `vector` is below the
    // table's length (both callers pass constants at most SPURIOUS_VECTOR).
    unsafe {
        (*idt)[2 * vector] = low;
        (*idt)[2 * vector + 1] = high;
    }
}

fn ticks() -> u64 {
    // SAFETY: an aligned u64 only the tick handler writes; a volatile read sees its updates.
    unsafe { (&raw const IDLE_TICKS).read_volatile() }
}

/// Halts until the next interrupt; interrupts are off again when this returns.
fn wait_for_interrupt() {
    // SAFETY: `sti` takes effect after `hlt` begins (interrupt shadow), so a tick cannot slip in
    // between; the handler preserves every register and returns here; `cli` closes the window.
    // Not `nomem`: the handler writes IDLE_TICKS.
    unsafe { asm!("sti", "hlt", "cli", options(nostack)) };
}

/// Runs the idle loop until the host asks for a graceful stop, then returns.
/// `heartbeat_s` = seconds between `idle: tick N` lines (0 = none).
pub fn run(con: Console, heartbeat_s: u64) {
    set_gate(TICK_VECTOR, idle_tick_isr as *const () as usize);
    set_gate(SPURIOUS_VECTOR, idle_spurious_isr as *const () as usize);
    let idtr: [u16; 5] = {
        let base = (&raw const IDT) as u64;
        let limit = (core::mem::size_of::<[u64; 2 * (SPURIOUS_VECTOR + 1)]>() - 1) as u16;
        [
            limit,
            base as u16,
            (base >> 16) as u16,
            (base >> 32) as u16,
            (base >> 48) as u16,
        ]
    };
    // SAFETY: the IDT is a static that lives for the rest of the run, its present gates point
    // at the handlers above; interrupts stay off until `wait_for_interrupt`.
    unsafe { asm!("lidt [{}]", in(reg) idtr.as_ptr(), options(readonly, nostack)) };
    lapic_write(LAPIC_SVR, SVR_APIC_ENABLE | SPURIOUS_VECTOR as u32);
    lapic_write(LAPIC_TIMER_DIVIDE, DIVIDE_BY_128);
    lapic_write(LAPIC_LVT_TIMER, LVT_TIMER_PERIODIC | TICK_VECTOR as u32);
    lapic_write(LAPIC_TIMER_INITIAL, TICK_COUNT);

    let every = heartbeat_s.saturating_mul(TICKS_PER_SECOND);
    let mut next = every;
    let mut beats: u64 = 0;
    loop {
        wait_for_interrupt();
        crate::bump_counter();
        if io::inb(crate::SIGNAL_PORT) & crate::SIGNAL_STOP_REQUESTED != 0 {
            lapic_write(LAPIC_TIMER_INITIAL, 0);
            con.put(b"idle: stop requested\n");
            return;
        }
        let now = ticks();
        if every != 0 && now >= next {
            beats += 1;
            next = now + every;
            con.put(b"idle: tick ");
            con.dec(beats as u32);
            con.put(b"\n");
        }
    }
}
