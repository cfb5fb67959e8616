//! Legacy devices on the port-I/O bus: COM1 (8250), the i8042 reset line and the Sakshi signal
//! port; everything else is counted as an unknown access.

pub(crate) mod console;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use vm_superio::{I8042Device, Serial, Trigger};
use vmm_sys_util::eventfd::EventFd;

use self::console::{Console, ConsoleWriter};
use crate::kvm::sys::CoalescedRing;

/// COM1 base port.
pub(crate) const COM1_BASE: u16 = 0x3f8;
/// COM1 interrupt line.
pub(crate) const COM1_IRQ: u32 = 4;
/// i8042 data port.
pub(crate) const I8042_DATA: u16 = 0x60;
/// i8042 command/status port.
pub(crate) const I8042_COMMAND: u16 = 0x64;
/// The Sakshi signal port.
pub(crate) const SIGNAL_PORT: u16 = 0x440;
/// Signal port value: boot complete.
pub(crate) const SIGNAL_BOOT_COMPLETE: u8 = 0x01;
/// Signal port value: power off.
pub(crate) const SIGNAL_POWER_OFF: u8 = 0x02;
/// The POST diagnostic port (used as an I/O delay; silently ignored).
const POST_PORT: u16 = 0x80;

/// Raises the serial interrupt through an irqfd.
pub(crate) struct IrqTrigger(pub(crate) EventFd);

impl Trigger for IrqTrigger {
    type E = std::io::Error;

    fn trigger(&self) -> std::io::Result<()> {
        self.0.write(1)
    }
}

/// Records an i8042 CPU-reset request.
#[derive(Clone, Default)]
pub(crate) struct ResetTrigger(Arc<AtomicBool>);

impl ResetTrigger {
    /// Whether the guest asked for a reset (and clears the request).
    pub(crate) fn take(&self) -> bool {
        self.0.swap(false, Ordering::AcqRel)
    }
}

impl Trigger for ResetTrigger {
    type E = std::convert::Infallible;

    fn trigger(&self) -> Result<(), Self::E> {
        self.0.store(true, Ordering::Release);
        Ok(())
    }
}

/// What a port write asks the VMM to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PortAction {
    /// Nothing beyond the device's own effect.
    None,
    /// The guest reset the CPU.
    Reset,
    /// The guest signalled boot complete.
    BootComplete,
    /// The guest asked to power off.
    PowerOff,
}

/// The port-I/O devices of one VM.
pub(crate) struct Devices {
    serial: Serial<IrqTrigger, vm_superio::serial::NoEvents, ConsoleWriter>,
    i8042: I8042Device<ResetTrigger>,
    reset: ResetTrigger,
    unknown: Arc<AccessCounters>,
    stop_requested: Arc<AtomicBool>,
    /// THR writes KVM queued instead of exiting; fed to the serial device before anything else.
    serial_ring: Option<CoalescedRing>,
}

impl Devices {
    pub(crate) fn new(
        serial_irq: EventFd,
        console: Arc<Console>,
        unknown: Arc<AccessCounters>,
        stop_requested: Arc<AtomicBool>,
    ) -> Self {
        let reset = ResetTrigger::default();
        Self {
            serial: Serial::new(IrqTrigger(serial_irq), ConsoleWriter(console)),
            i8042: I8042Device::new(reset.clone()),
            reset,
            unknown,
            stop_requested,
            serial_ring: None,
        }
    }

    /// Takes the ring KVM queues COM1 THR writes in (a coalesced zone for `COM1_BASE`).
    pub(crate) fn set_serial_ring(&mut self, ring: Option<CoalescedRing>) {
        self.serial_ring = ring;
    }

    /// Whether THR writes are queued by KVM (and so need draining) rather than exiting.
    pub(crate) fn has_serial_ring(&self) -> bool {
        self.serial_ring.is_some()
    }

    /// Whether queued THR writes wait in the ring.
    pub(crate) fn has_queued(&self) -> bool {
        self.serial_ring.as_ref().is_some_and(|r| !r.is_empty())
    }

    /// Feeds the queued THR writes to the serial device, oldest first. Must run before any other
    /// guest access is handled, so that the device and the console see the guest's order.
    pub(crate) fn drain_queued(&mut self) {
        let Some(ring) = self.serial_ring.as_mut() else {
            return;
        };
        let serial = &mut self.serial;
        let unknown = &self.unknown;
        ring.drain(|addr, data| {
            if addr != u64::from(COM1_BASE) {
                // Only the THR is registered; anything else would be a KVM surprise.
                unknown.device_error("coalesced ring", &addr);
                return;
            }
            for &b in data {
                if let Err(error) = serial.write(0, b) {
                    unknown.device_error("serial", &error);
                }
            }
        });
    }

    /// Handles an `out` of `data` to `port`.
    pub(crate) fn pio_write(&mut self, port: u16, data: &[u8]) -> PortAction {
        match port {
            COM1_BASE..=0x3ff => {
                let offset = (port - COM1_BASE) as u8;
                for &b in data {
                    if let Err(error) = self.serial.write(offset, b) {
                        self.unknown.device_error("serial", &error);
                    }
                }
                PortAction::None
            }
            I8042_DATA | I8042_COMMAND => {
                let offset = (port - I8042_DATA) as u8;
                for &b in data {
                    // Infallible trigger.
                    let _ = self.i8042.write(offset, b);
                }
                if self.reset.take() {
                    PortAction::Reset
                } else {
                    PortAction::None
                }
            }
            SIGNAL_PORT if data.len() == 1 => match data[0] {
                SIGNAL_BOOT_COMPLETE => PortAction::BootComplete,
                SIGNAL_POWER_OFF => PortAction::PowerOff,
                _ => {
                    self.unknown.pio(port, true);
                    PortAction::None
                }
            },
            POST_PORT => PortAction::None,
            _ => {
                self.unknown.pio(port, true);
                PortAction::None
            }
        }
    }

    /// Handles an `in` from `port` into `data`.
    pub(crate) fn pio_read(&mut self, port: u16, data: &mut [u8]) {
        match port {
            COM1_BASE..=0x3ff => {
                let offset = (port - COM1_BASE) as u8;
                for b in data.iter_mut() {
                    *b = self.serial.read(offset);
                }
            }
            I8042_DATA | I8042_COMMAND => {
                let offset = (port - I8042_DATA) as u8;
                for b in data.iter_mut() {
                    *b = self.i8042.read(offset);
                }
            }
            SIGNAL_PORT => {
                // Bit 0: the host asks the guest to power off (graceful stop).
                let v = u8::from(self.stop_requested.load(Ordering::Acquire));
                data.fill(0);
                if let Some(b) = data.first_mut() {
                    *b = v;
                }
            }
            POST_PORT => data.fill(0xff),
            _ => {
                self.unknown.pio(port, false);
                data.fill(0xff);
            }
        }
    }
}

/// Counts accesses no device claims; logs them rate-limited (the first few, then at powers of
/// two), since the guest controls how many there are.
#[derive(Debug, Default)]
pub(crate) struct AccessCounters {
    pio: AtomicU64,
    mmio: AtomicU64,
    device_errors: AtomicU64,
}

/// Accesses logged one by one before the log becomes sparse.
const LOG_FIRST: u64 = 8;

fn should_log(n: u64) -> bool {
    n <= LOG_FIRST || n.is_power_of_two()
}

impl AccessCounters {
    pub(crate) fn pio(&self, port: u16, write: bool) {
        let n = self.pio.fetch_add(1, Ordering::Relaxed) + 1;
        if should_log(n) {
            tracing::warn!(
                port = format_args!("{port:#x}"),
                write,
                unknown_pio.count = n,
                "unknown port I/O access"
            );
        }
    }

    pub(crate) fn mmio(&self, addr: u64, write: bool) {
        let n = self.mmio.fetch_add(1, Ordering::Relaxed) + 1;
        if should_log(n) {
            tracing::warn!(
                addr = format_args!("{addr:#x}"),
                write,
                unknown_mmio.count = n,
                "unknown MMIO access"
            );
        }
    }

    fn device_error(&self, device: &'static str, error: &dyn std::fmt::Debug) {
        let n = self.device_errors.fetch_add(1, Ordering::Relaxed) + 1;
        if should_log(n) {
            tracing::warn!(device, ?error, device_errors.count = n, "device error");
        }
    }

    /// Unknown port accesses so far.
    pub(crate) fn pio_count(&self) -> u64 {
        self.pio.load(Ordering::Relaxed)
    }

    /// Unknown MMIO accesses so far.
    pub(crate) fn mmio_count(&self) -> u64 {
        self.mmio.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Timeline;
    use std::time::Instant;

    fn devices() -> (
        Devices,
        Arc<Console>,
        Arc<AccessCounters>,
        EventFd,
        Arc<AtomicBool>,
    ) {
        let tl = Arc::new(Timeline::new(Instant::now(), 0, None, None, false));
        let console = Arc::new(Console::new(4096, false, None, tl));
        let counters = Arc::new(AccessCounters::default());
        let irq = EventFd::new(libc::EFD_NONBLOCK).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let d = Devices::new(
            irq.try_clone().unwrap(),
            console.clone(),
            counters.clone(),
            stop.clone(),
        );
        (d, console, counters, irq, stop)
    }

    #[test]
    fn serial_output_reaches_console() {
        let (mut d, console, counters, _irq, _) = devices();
        for b in b"hi\n" {
            assert_eq!(d.pio_write(COM1_BASE, &[*b]), PortAction::None);
        }
        assert_eq!(console.tail(10).0, b"hi\n");
        // Line status register: transmitter empty.
        let mut lsr = [0u8];
        d.pio_read(COM1_BASE + 5, &mut lsr);
        assert_ne!(lsr[0] & 0x20, 0);
        assert_eq!(counters.pio_count(), 0);
    }

    #[test]
    fn serial_interrupt_uses_the_irqfd() {
        let (mut d, _, _, irq, _) = devices();
        // Enable the THR-empty interrupt: the device raises it at once.
        d.pio_write(COM1_BASE + 1, &[0x02]);
        assert_eq!(irq.read().unwrap(), 1);
    }

    #[test]
    fn i8042_reset_is_reported_once() {
        let (mut d, ..) = devices();
        assert_eq!(d.pio_write(I8042_COMMAND, &[0x01]), PortAction::None);
        assert_eq!(d.pio_write(I8042_COMMAND, &[0xfe]), PortAction::Reset);
        assert_eq!(d.pio_write(I8042_DATA, &[0xfe]), PortAction::None);
    }

    #[test]
    fn signal_port() {
        let (mut d, _, counters, _, stop) = devices();
        assert_eq!(d.pio_write(SIGNAL_PORT, &[1]), PortAction::BootComplete);
        assert_eq!(d.pio_write(SIGNAL_PORT, &[2]), PortAction::PowerOff);
        assert_eq!(d.pio_write(SIGNAL_PORT, &[7]), PortAction::None);
        assert_eq!(counters.pio_count(), 1);
        let mut v = [0xffu8];
        d.pio_read(SIGNAL_PORT, &mut v);
        assert_eq!(v[0], 0);
        stop.store(true, Ordering::Release);
        d.pio_read(SIGNAL_PORT, &mut v);
        assert_eq!(v[0], 1);
    }

    #[test]
    fn unknown_ports_are_counted_and_read_all_ones() {
        let (mut d, _, counters, _, _) = devices();
        for port in [0x70u16, 0x2f8, 0xcfc, 0xffff] {
            assert_eq!(d.pio_write(port, &[0xaa]), PortAction::None);
            let mut v = [0u8; 4];
            d.pio_read(port, &mut v);
            assert_eq!(v, [0xff; 4]);
        }
        assert_eq!(counters.pio_count(), 8);
        d.pio_write(POST_PORT, &[0]);
        assert_eq!(counters.pio_count(), 8, "POST port is not unknown");
        counters.mmio(0xd000_0000, true);
        assert_eq!(counters.mmio_count(), 1);
    }

    #[test]
    fn log_rate_limit() {
        let logged: Vec<u64> = (1..=1000).filter(|n| should_log(*n)).collect();
        assert_eq!(logged, [1, 2, 3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256, 512]);
    }
}
