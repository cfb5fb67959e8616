//! The per-VM lifecycle state machine and the events it emits.
//!
//! Pure code: no processes, no clocks of its own (callers pass the time in),
//! so every rule here is unit-tested without KVM.

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::ids::{TraceId, VmId};
use crate::ExitReason;

/// Why a VM ended in [`VmState::Failed`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum FailReason {
    /// The boot measurer (policy) refused the boot; no VMM process was spawned.
    MeasurementRefused {
        /// The measurer's explanation.
        message: String,
    },
    /// The supervisor could not prepare or spawn the VMM (runtime files, digests, exec).
    Setup {
        /// What went wrong, with its cause chain.
        message: String,
    },
    /// The VMM refused its configuration or could not load the guest (exit status 1).
    VmmRejected {
        /// The VMM's `exited` reason or the last line it logged, when there was one.
        detail: Option<String>,
    },
    /// The guest failed: triple fault, KVM internal error, ... (exit status 2).
    GuestFailed {
        /// The typed reason from the VMM's final `exited` event, when it sent one.
        reason: Option<ExitReason>,
        /// The VMM's details (KVM sub-error, errno, ...), when it gave them.
        detail: Option<String>,
    },
    /// The VMM process was killed by a signal the supervisor did not send.
    KilledBySignal {
        /// The signal number.
        signal: i32,
    },
    /// The VMM exited with a status the process contract does not define.
    UnexpectedExit {
        /// The exit status.
        code: i32,
    },
}

impl fmt::Display for FailReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MeasurementRefused { message } => {
                write!(f, "boot measurement refused: {message}")
            }
            Self::Setup { message } => write!(f, "VMM could not be started: {message}"),
            Self::VmmRejected { detail: Some(d) } => write!(f, "VMM rejected the VM: {d}"),
            Self::VmmRejected { detail: None } => f.write_str("VMM rejected the VM"),
            Self::GuestFailed { reason, detail } => {
                f.write_str("guest failed")?;
                if let Some(r) = reason {
                    write!(f, ": {}", r.name())?;
                }
                if let Some(d) = detail {
                    write!(f, " ({d})")?;
                }
                Ok(())
            }
            Self::KilledBySignal { signal } => write!(f, "killed by signal {signal}"),
            Self::UnexpectedExit { code } => write!(f, "VMM exited with unexpected status {code}"),
        }
    }
}

/// The state of one VM.
///
/// `Created -> Booting -> Running <-> Paused -> Stopped | Failed(reason)`;
/// `Stopped` and `Failed` are final.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "reason", rename_all = "snake_case")]
pub enum VmState {
    /// Registered, runtime directory made, nothing spawned.
    Created,
    /// The VMM process was spawned; the guest has not signalled boot-complete yet.
    Booting,
    /// The guest signalled boot-complete.
    Running,
    /// The vCPUs are paused.
    Paused,
    /// The VM ended cleanly (guest reboot or power-off, or a requested stop).
    Stopped,
    /// The VM ended abnormally, or never started.
    Failed(FailReason),
}

impl VmState {
    /// The state without its payload.
    pub fn kind(&self) -> StateKind {
        match self {
            Self::Created => StateKind::Created,
            Self::Booting => StateKind::Booting,
            Self::Running => StateKind::Running,
            Self::Paused => StateKind::Paused,
            Self::Stopped => StateKind::Stopped,
            Self::Failed(_) => StateKind::Failed,
        }
    }

    /// True for `Stopped` and `Failed`.
    pub fn is_final(&self) -> bool {
        self.kind().is_final()
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Failed(reason) => write!(f, "failed ({reason})"),
            other => fmt::Display::fmt(&other.kind(), f),
        }
    }
}

/// A [`VmState`] without its payload, for transition rules and error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StateKind {
    /// See [`VmState::Created`].
    Created,
    /// See [`VmState::Booting`].
    Booting,
    /// See [`VmState::Running`].
    Running,
    /// See [`VmState::Paused`].
    Paused,
    /// See [`VmState::Stopped`].
    Stopped,
    /// See [`VmState::Failed`].
    Failed,
}

impl StateKind {
    /// True for `Stopped` and `Failed`.
    pub fn is_final(self) -> bool {
        matches!(self, Self::Stopped | Self::Failed)
    }

    /// True while a VMM process may exist for the VM.
    pub fn has_process(self) -> bool {
        matches!(self, Self::Booting | Self::Running | Self::Paused)
    }

    /// Whether the state machine allows `self -> to`.
    pub fn can_become(self, to: StateKind) -> bool {
        use StateKind::*;
        matches!(
            (self, to),
            (Created, Booting | Failed)
                | (Booting, Running | Stopped | Failed)
                | (Running, Paused | Stopped | Failed)
                | (Paused, Running | Stopped | Failed)
        )
    }
}

impl fmt::Display for StateKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Created => "created",
            Self::Booting => "booting",
            Self::Running => "running",
            Self::Paused => "paused",
            Self::Stopped => "stopped",
            Self::Failed => "failed",
        })
    }
}

/// A transition the state machine does not allow.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("a {from} VM cannot become {to}")]
pub struct InvalidTransition {
    /// The current state.
    pub from: StateKind,
    /// The state asked for.
    pub to: StateKind,
}

/// How the VMM process ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    /// Exit status, when the process exited.
    pub code: Option<i32>,
    /// Terminating signal, when it was killed.
    pub signal: Option<i32>,
    /// The reason from the VMM's final `exited` event.
    pub reason: Option<ExitReason>,
    /// The details from that event, if any.
    pub detail: Option<String>,
    /// Peak resident set size of the VMM process in KiB (`wait4` rusage `ru_maxrss`).
    pub peak_rss_kib: Option<u64>,
}

/// One lifecycle event: a VM changed state.
///
/// Events of one VM carry consecutive sequence numbers starting at 1 and are
/// delivered to every subscriber in that order.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmEvent {
    /// The VM.
    pub vm_id: VmId,
    /// Per-VM sequence number, starting at 1.
    pub seq: u64,
    /// The new state.
    #[serde(flatten)]
    pub state: VmState,
    /// The state before, absent for the first event.
    pub previous: Option<StateKind>,
    /// When the change happened, UTC, nanoseconds since the Unix epoch.
    pub time_unix_nano: i64,
    /// W3C trace id of the VM.
    pub trace_id: TraceId,
    /// Spawn to boot-complete, in nanoseconds; only on the event that reaches `Running` first.
    pub boot_latency_ns: Option<u64>,
    /// The VMM process id, once spawned.
    pub vmm_pid: Option<u32>,
    /// How the VMM process ended; on the final event after a process ran.
    pub exit: Option<ExitInfo>,
}

/// Extra facts recorded with a transition.
#[derive(Debug, Default)]
pub(crate) struct TransitionFacts {
    pub vmm_pid: Option<u32>,
    pub exit: Option<ExitInfo>,
}

/// The lifecycle of one VM: current state, history and sequence numbers.
#[derive(Debug)]
pub(crate) struct Lifecycle {
    vm_id: VmId,
    trace_id: TraceId,
    state: VmState,
    history: Vec<VmEvent>,
    booting_since: Option<Instant>,
    boot_latency: Option<Duration>,
}

impl Lifecycle {
    /// A new VM in `Created`; returns the first event (seq 1).
    pub fn new(vm_id: VmId, trace_id: TraceId, time_unix_nano: i64) -> (Self, VmEvent) {
        let event = VmEvent {
            vm_id: vm_id.clone(),
            seq: 1,
            state: VmState::Created,
            previous: None,
            time_unix_nano,
            trace_id: trace_id.clone(),
            boot_latency_ns: None,
            vmm_pid: None,
            exit: None,
        };
        let lifecycle = Self {
            vm_id,
            trace_id,
            state: VmState::Created,
            history: vec![event.clone()],
            booting_since: None,
            boot_latency: None,
        };
        (lifecycle, event)
    }

    pub fn state(&self) -> &VmState {
        &self.state
    }

    pub fn history(&self) -> &[VmEvent] {
        &self.history
    }

    pub fn boot_latency(&self) -> Option<Duration> {
        self.boot_latency
    }

    /// Checks a transition without making it.
    pub fn check(&self, to: StateKind) -> Result<(), InvalidTransition> {
        let from = self.state.kind();
        if from.can_become(to) {
            Ok(())
        } else {
            Err(InvalidTransition { from, to })
        }
    }

    /// Moves to `to` at the given instants and returns the event to publish.
    pub fn transition(
        &mut self,
        to: VmState,
        now: Instant,
        time_unix_nano: i64,
        facts: TransitionFacts,
    ) -> Result<VmEvent, InvalidTransition> {
        let from = self.state.kind();
        self.check(to.kind())?;
        let mut boot_latency_ns = None;
        match to.kind() {
            StateKind::Booting => self.booting_since = Some(now),
            StateKind::Running if self.boot_latency.is_none() => {
                if let Some(since) = self.booting_since {
                    let latency = now.saturating_duration_since(since);
                    self.boot_latency = Some(latency);
                    boot_latency_ns = Some(u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX));
                }
            }
            _ => {}
        }
        let seq = self.history.last().map_or(1, |e| e.seq + 1);
        let event = VmEvent {
            vm_id: self.vm_id.clone(),
            seq,
            state: to.clone(),
            previous: Some(from),
            time_unix_nano,
            trace_id: self.trace_id.clone(),
            boot_latency_ns,
            vmm_pid: facts.vmm_pid,
            exit: facts.exit,
        };
        self.state = to;
        self.history.push(event.clone());
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lifecycle() -> (Lifecycle, VmEvent, Instant) {
        let id: VmId = "0190d8e2-7a1c-4b7e-9d3f-2a5b6c7d8e9f".parse().unwrap();
        let trace: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
        let (l, e) = Lifecycle::new(id, trace, 1_000);
        (l, e, Instant::now())
    }

    fn go(l: &mut Lifecycle, to: VmState, t: Instant) -> Result<VmEvent, InvalidTransition> {
        l.transition(to, t, 2_000, TransitionFacts::default())
    }

    #[test]
    fn first_event_is_created_with_seq_one() {
        let (l, e, _) = lifecycle();
        assert_eq!(e.seq, 1);
        assert_eq!(e.state, VmState::Created);
        assert_eq!(e.previous, None);
        assert_eq!(l.history(), &[e]);
    }

    #[test]
    fn full_lifecycle_numbers_events_consecutively() {
        let (mut l, _, t0) = lifecycle();
        let steps = [
            VmState::Booting,
            VmState::Running,
            VmState::Paused,
            VmState::Running,
            VmState::Paused,
            VmState::Stopped,
        ];
        for (i, s) in steps.iter().enumerate() {
            let e = go(&mut l, s.clone(), t0).unwrap();
            assert_eq!(e.seq, i as u64 + 2);
            assert_eq!(&e.state, s);
        }
        let seqs: Vec<u64> = l.history().iter().map(|e| e.seq).collect();
        assert_eq!(seqs, (1..=7).collect::<Vec<_>>());
        assert_eq!(l.history()[3].previous, Some(StateKind::Running));
    }

    #[test]
    fn boot_latency_is_set_once_on_first_running() {
        let (mut l, _, t0) = lifecycle();
        go(&mut l, VmState::Booting, t0).unwrap();
        let t1 = t0 + Duration::from_millis(7);
        let running = go(&mut l, VmState::Running, t1).unwrap();
        assert_eq!(running.boot_latency_ns, Some(7_000_000));
        go(&mut l, VmState::Paused, t1).unwrap();
        let again = go(&mut l, VmState::Running, t1 + Duration::from_secs(1)).unwrap();
        assert_eq!(again.boot_latency_ns, None);
        assert_eq!(l.boot_latency(), Some(Duration::from_millis(7)));
    }

    #[test]
    fn invalid_transitions_are_rejected_and_change_nothing() {
        let (mut l, _, t0) = lifecycle();
        let err = go(&mut l, VmState::Running, t0).unwrap_err();
        assert_eq!(
            err,
            InvalidTransition {
                from: StateKind::Created,
                to: StateKind::Running
            }
        );
        assert_eq!(err.to_string(), "a created VM cannot become running");
        assert_eq!(l.state(), &VmState::Created);
        assert_eq!(l.history().len(), 1);
        go(&mut l, VmState::Booting, t0).unwrap();
        assert!(go(&mut l, VmState::Paused, t0).is_err());
        go(
            &mut l,
            VmState::Failed(FailReason::KilledBySignal { signal: 9 }),
            t0,
        )
        .unwrap();
        for s in [
            VmState::Booting,
            VmState::Running,
            VmState::Paused,
            VmState::Stopped,
            VmState::Created,
        ] {
            assert!(go(&mut l, s, t0).is_err());
        }
        assert_eq!(l.history().len(), 3);
    }

    #[test]
    fn transition_table_matches_the_documented_machine() {
        use StateKind::*;
        let all = [Created, Booting, Running, Paused, Stopped, Failed];
        let mut allowed = Vec::new();
        for from in all {
            for to in all {
                if from.can_become(to) {
                    allowed.push((from, to));
                }
            }
        }
        assert_eq!(
            allowed,
            vec![
                (Created, Booting),
                (Created, Failed),
                (Booting, Running),
                (Booting, Stopped),
                (Booting, Failed),
                (Running, Paused),
                (Running, Stopped),
                (Running, Failed),
                (Paused, Running),
                (Paused, Stopped),
                (Paused, Failed),
            ]
        );
    }

    #[test]
    fn failed_reason_displays_the_signal() {
        let s = VmState::Failed(FailReason::KilledBySignal { signal: 9 });
        assert_eq!(s.to_string(), "failed (killed by signal 9)");
    }

    #[test]
    fn events_serialise_with_flat_state_and_reason() {
        let (mut l, _, t0) = lifecycle();
        go(&mut l, VmState::Booting, t0).unwrap();
        let e = go(
            &mut l,
            VmState::Failed(FailReason::GuestFailed {
                reason: Some(ExitReason::TripleFault),
                detail: None,
            }),
            t0,
        )
        .unwrap();
        let v = serde_json::to_value(&e).unwrap();
        assert_eq!(v["state"], "failed");
        assert_eq!(v["reason"]["kind"], "guest_failed");
        assert_eq!(v["reason"]["reason"], "triple_fault");
        assert_eq!(e.state.to_string(), "failed (guest failed: triple_fault)");
        assert_eq!(v["seq"], 3);
        assert_eq!(v["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736");
        let back: VmEvent = serde_json::from_value(v).unwrap();
        assert_eq!(back, e);
        let created = serde_json::to_value(&l.history()[0]).unwrap();
        assert_eq!(created["state"], "created");
        assert!(created.get("reason").is_none());
    }
}
