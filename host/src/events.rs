//! Lifecycle events (`--events-fd`): one JSON object per line, and the timeline they come from.

use std::fs::File;
use std::io::Write;
use std::sync::{Mutex, OnceLock};
use std::time::Instant;

use serde::{Deserialize, Serialize};

/// One line on the events fd: `{"event":"boot_complete","t_us":1234,...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmmEvent {
    /// Microseconds since the VMM process started.
    pub t_us: u64,
    /// What happened.
    #[serde(flatten)]
    pub kind: EventKind,
}

/// What happened.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum EventKind {
    /// The VM is built (memory, kernel, devices, vCPUs); the vCPUs have not run yet.
    Ready {
        /// Number of vCPUs.
        vcpus: u32,
        /// Guest memory in MiB.
        memory_mib: u64,
        /// Entry used: `linux64` or `pvh`.
        entry: String,
        /// Whether the PVM workarounds are applied.
        pvm_workarounds: bool,
        /// CPU features hidden from the guest.
        hidden_cpu_features: Vec<String>,
    },
    /// The guest wrote its first console byte.
    FirstOutput {
        /// Microseconds since the start request (`--start-ts-ns`), when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_request_us: Option<u64>,
    },
    /// The guest wrote 0x01 to the signal port.
    BootComplete {
        /// Microseconds since the start request (`--start-ts-ns`), when given.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        since_request_us: Option<u64>,
    },
    /// Every vCPU is paused.
    Paused {
        /// Microseconds from the request to the last vCPU parked.
        latency_us: u64,
    },
    /// Every vCPU runs again.
    Resumed {
        /// Microseconds from the request to the last vCPU released.
        latency_us: u64,
    },
    /// The VM ended; always the last event.
    Exited {
        /// Why.
        reason: ExitReason,
        /// The process exit status that follows.
        exit_code: i32,
        /// Details for failures (KVM sub-error, errno ...).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        detail: Option<String>,
        /// How a requested stop ended the VM.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop_mode: Option<StopMode>,
        /// Microseconds from the stop request to every vCPU stopped.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        stop_latency_us: Option<u64>,
    },
}

/// Why a VM ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ExitReason {
    /// The guest reset the CPU (i8042 0xFE, or a KVM reset event).
    Reboot,
    /// The guest asked to power off (signal port 0x02, or a KVM shutdown event).
    Poweroff,
    /// A stop was requested (control socket or SIGTERM/SIGINT).
    Stopped,
    /// The guest triple-faulted (KVM_EXIT_SHUTDOWN).
    TripleFault,
    /// KVM_EXIT_INTERNAL_ERROR (on PVM hosts this is also how a triple fault surfaces).
    InternalError,
    /// KVM_EXIT_FAIL_ENTRY.
    FailEntry,
    /// KVM_RUN itself failed (on PVM hosts a triple fault can surface this way).
    RunError,
    /// An exit the VMM cannot handle (KVM_EXIT_UNKNOWN, a crash system event ...).
    UnexpectedExit,
}

impl ExitReason {
    /// 0 when the guest ended the run or a stop was requested, 2 when the guest failed.
    pub fn exit_code(self) -> i32 {
        match self {
            ExitReason::Reboot | ExitReason::Poweroff | ExitReason::Stopped => 0,
            _ => 2,
        }
    }

    /// The snake_case name used on the wire.
    pub fn name(self) -> &'static str {
        match self {
            ExitReason::Reboot => "reboot",
            ExitReason::Poweroff => "poweroff",
            ExitReason::Stopped => "stopped",
            ExitReason::TripleFault => "triple_fault",
            ExitReason::InternalError => "internal_error",
            ExitReason::FailEntry => "fail_entry",
            ExitReason::RunError => "run_error",
            ExitReason::UnexpectedExit => "unexpected_exit",
        }
    }
}

/// How a requested stop ended the VM.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// The guest ended the run itself within the graceful timeout.
    Graceful,
    /// The vCPUs were kicked out of the guest.
    Hard,
}

/// Process-relative clock, start-request reference, first-time marks and the events fd.
pub(crate) struct Timeline {
    start: Instant,
    start_mono_ns: u64,
    request_ns: Option<u64>,
    out: Mutex<Option<File>>,
    first_output_us: OnceLock<u64>,
    boot_complete_us: OnceLock<u64>,
    print_boot_complete: bool,
}

impl Timeline {
    /// `start` and `start_mono_ns` (CLOCK_MONOTONIC) are the same moment, taken at process start;
    /// `request_ns` is the CLOCK_MONOTONIC time of the start request, if known.
    pub(crate) fn new(
        start: Instant,
        start_mono_ns: u64,
        request_ns: Option<u64>,
        out: Option<File>,
        print_boot_complete: bool,
    ) -> Self {
        Self {
            start,
            start_mono_ns,
            request_ns,
            out: Mutex::new(out),
            first_output_us: OnceLock::new(),
            boot_complete_us: OnceLock::new(),
            print_boot_complete,
        }
    }

    /// Microseconds since process start.
    pub(crate) fn now_us(&self) -> u64 {
        self.start.elapsed().as_micros() as u64
    }

    /// Microseconds between the start request and `t_us` (process-relative), if a request
    /// time was given.
    pub(crate) fn since_request_us(&self, t_us: u64) -> Option<u64> {
        self.request_ns
            .map(|req| (self.start_mono_ns + t_us * 1000).saturating_sub(req) / 1000)
    }

    /// Closes the events fd: no further events (the final `exited` event has been written).
    pub(crate) fn close_events(&self) {
        self.out.lock().unwrap_or_else(|e| e.into_inner()).take();
    }

    /// Writes one event line (one `write` call). A closed events fd is logged once, then ignored.
    pub(crate) fn emit(&self, kind: EventKind) {
        self.emit_at(self.now_us(), kind);
    }

    fn emit_at(&self, t_us: u64, kind: EventKind) {
        let mut guard = self.out.lock().unwrap_or_else(|e| e.into_inner());
        let Some(file) = guard.as_mut() else {
            return;
        };
        let event = VmmEvent { t_us, kind };
        let mut line = match serde_json::to_vec(&event) {
            Ok(l) => l,
            Err(error) => {
                tracing::error!(%error, "cannot encode event");
                return;
            }
        };
        line.push(b'\n');
        if let Err(error) = file.write_all(&line) {
            tracing::warn!(%error, "events fd closed; no further events");
            *guard = None;
        }
    }

    /// Records the first console byte (once) and emits `first_output`.
    pub(crate) fn mark_first_output(&self) {
        let t = self.now_us();
        if self.first_output_us.set(t).is_ok() {
            self.emit_at(
                t,
                EventKind::FirstOutput {
                    since_request_us: self.since_request_us(t),
                },
            );
        }
    }

    /// Records boot-complete (once), emits `boot_complete` and prints it on stderr.
    pub(crate) fn mark_boot_complete(&self) {
        let t = self.now_us();
        if self.boot_complete_us.set(t).is_ok() {
            let since = self.since_request_us(t);
            self.emit_at(
                t,
                EventKind::BootComplete {
                    since_request_us: since,
                },
            );
            if self.print_boot_complete {
                match since {
                    Some(s) => eprintln!(
                        "sakshi-vmm: boot complete {t} us after process start, {s} us after start request"
                    ),
                    None => eprintln!("sakshi-vmm: boot complete {t} us after process start"),
                }
            }
        }
    }

    /// When the first console byte came, in microseconds since process start.
    pub(crate) fn first_output_us(&self) -> Option<u64> {
        self.first_output_us.get().copied()
    }

    /// When boot-complete came, in microseconds since process start.
    pub(crate) fn boot_complete_us(&self) -> Option<u64> {
        self.boot_complete_us.get().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    #[test]
    fn event_wire_format() {
        let e = VmmEvent {
            t_us: 1234,
            kind: EventKind::BootComplete {
                since_request_us: None,
            },
        };
        assert_eq!(
            serde_json::to_string(&e).unwrap(),
            r#"{"t_us":1234,"event":"boot_complete"}"#
        );
        let back: VmmEvent =
            serde_json::from_str(r#"{"event":"boot_complete","t_us":1234}"#).unwrap();
        assert_eq!(back, e);
        let exit = VmmEvent {
            t_us: 9,
            kind: EventKind::Exited {
                reason: ExitReason::TripleFault,
                exit_code: 2,
                detail: Some("x".into()),
                stop_mode: None,
                stop_latency_us: None,
            },
        };
        let text = serde_json::to_string(&exit).unwrap();
        assert!(text.contains(r#""reason":"triple_fault""#), "{text}");
        assert_eq!(serde_json::from_str::<VmmEvent>(&text).unwrap(), exit);
    }

    #[test]
    fn exit_codes() {
        assert_eq!(ExitReason::Reboot.exit_code(), 0);
        assert_eq!(ExitReason::Poweroff.exit_code(), 0);
        assert_eq!(ExitReason::Stopped.exit_code(), 0);
        for r in [
            ExitReason::TripleFault,
            ExitReason::InternalError,
            ExitReason::FailEntry,
            ExitReason::RunError,
            ExitReason::UnexpectedExit,
        ] {
            assert_eq!(r.exit_code(), 2);
            assert_eq!(
                serde_json::to_string(&r).unwrap(),
                format!("\"{}\"", r.name())
            );
        }
    }

    #[test]
    fn marks_fire_once_and_lines_are_json() {
        let mut file = tempfile::tempfile().unwrap();
        let tl = Timeline::new(
            Instant::now(),
            1_000_000,
            Some(500_000),
            Some(file.try_clone().unwrap()),
            false,
        );
        tl.mark_first_output();
        tl.mark_first_output();
        tl.mark_boot_complete();
        assert!(tl.first_output_us().is_some());
        assert!(tl.boot_complete_us() >= tl.first_output_us());
        file.rewind().unwrap();
        let mut text = String::new();
        file.read_to_string(&mut text).unwrap();
        let events: Vec<VmmEvent> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(events.len(), 2);
        match &events[0].kind {
            EventKind::FirstOutput { since_request_us } => {
                // 1 ms at process start minus 0.5 ms request time: at least 500 us.
                assert!(since_request_us.unwrap() >= 500);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(events[1].kind, EventKind::BootComplete { .. }));
    }
}
