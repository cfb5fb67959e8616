//! Trace and span ids, finished spans, and the VM lifecycle tracker (create -> measured -> booted).

use std::collections::HashMap;
use std::fmt;
use std::str::FromStr;

use opentelemetry::KeyValue;
use rand::RngCore;

/// A W3C trace id: 16 bytes, 32 lowercase hex digits, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId([u8; 16]);

impl TraceId {
    /// A fresh random trace id.
    pub fn random() -> Self {
        let mut b = [0u8; 16];
        while b == [0; 16] {
            rand::thread_rng().fill_bytes(&mut b);
        }
        TraceId(b)
    }

    /// Wrap raw bytes; `None` for the invalid all-zero id.
    pub fn from_bytes(bytes: [u8; 16]) -> Option<Self> {
        (bytes != [0; 16]).then_some(TraceId(bytes))
    }

    /// The raw bytes.
    pub fn to_bytes(self) -> [u8; 16] {
        self.0
    }

    /// The kernel command-line parameter that hands this trace id to the guest (`trace=<32 hex>`).
    pub fn cmdline_param(self) -> String {
        format!("trace={self}")
    }
}

/// A W3C span id: 8 bytes, 16 lowercase hex digits, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId([u8; 8]);

impl SpanId {
    /// A fresh random span id.
    pub fn random() -> Self {
        let mut b = [0u8; 8];
        while b == [0; 8] {
            rand::thread_rng().fill_bytes(&mut b);
        }
        SpanId(b)
    }

    /// Wrap raw bytes; `None` for the invalid all-zero id.
    pub fn from_bytes(bytes: [u8; 8]) -> Option<Self> {
        (bytes != [0; 8]).then_some(SpanId(bytes))
    }

    /// The raw bytes.
    pub fn to_bytes(self) -> [u8; 8] {
        self.0
    }
}

/// A trace or span id that is not lowercase hex of the right length, or is all zeros.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("expected {expected} lowercase hex digits, not all zero")]
pub struct IdParseError {
    expected: usize,
}

fn parse_hex<const N: usize>(s: &str) -> Result<[u8; N], IdParseError> {
    let err = IdParseError { expected: 2 * N };
    if s.len() != 2 * N
        || !s
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Err(err);
    }
    let mut out = [0u8; N];
    hex::decode_to_slice(s, &mut out).map_err(|_| err.clone())?;
    if out == [0u8; N] {
        return Err(err);
    }
    Ok(out)
}

impl FromStr for TraceId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex::<16>(s).map(TraceId)
    }
}

impl FromStr for SpanId {
    type Err = IdParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_hex::<8>(s).map(SpanId)
    }
}

impl fmt::Display for TraceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Display for SpanId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// The role of a span.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SpanKind {
    /// Handling an incoming request (API requests).
    Server,
    /// Work inside the appliance (VM lifecycle operations).
    Internal,
}

/// How a span ended.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum SpanStatus {
    /// Not set (the normal case for success).
    #[default]
    Unset,
    /// Explicitly successful.
    Ok,
    /// Failed, with a message.
    Error(String),
}

/// A span ready for export.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct FinishedSpan {
    pub(crate) name: String,
    pub(crate) trace_id: TraceId,
    pub(crate) span_id: SpanId,
    pub(crate) parent: Option<SpanId>,
    pub(crate) kind: SpanKind,
    pub(crate) start_unix_nano: u64,
    pub(crate) end_unix_nano: u64,
    pub(crate) attributes: Vec<KeyValue>,
    pub(crate) status: SpanStatus,
}

/// A step in a micro-VM's life, reported by the supervisor.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VmPhase {
    /// The create request was accepted (starts the VM's lifecycle span). `parent` is the API request's
    /// span, when the request was traced.
    Created {
        /// The request span.
        parent: Option<SpanId>,
    },
    /// Kernel, initrd, command line and config were measured into the TPM.
    Measured,
    /// The guest signalled boot-complete (ends the lifecycle span).
    Booted,
    /// The VM failed: before it booted this ends the lifecycle span with an error; after, it is
    /// a `vm.failed` span of its own in the VM's trace.
    Failed {
        /// Why.
        reason: String,
    },
    /// A later lifecycle step of a booted VM (`paused`, `resumed`, `stopped`): a `vm.<step>`
    /// span in the VM's trace, so a SIEM sees every operation on the VM under one trace id.
    Step {
        /// The step (`paused`, `resumed`, `stopped`).
        step: &'static str,
        /// Why (exit reason), when there is one.
        reason: Option<String>,
    },
}

/// Most VMs whose lifecycle spans are open at once; older ones are closed as abandoned.
const MAX_OPEN_VMS: usize = 4096;

#[derive(Debug)]
struct OpenVm {
    trace_id: TraceId,
    root: SpanId,
    parent: Option<SpanId>,
    created: u64,
    measured: Option<u64>,
}

/// A point-in-time span `vm.<step>` in the VM's trace.
fn step_span(
    vm_id: &str,
    trace_id: TraceId,
    step: &str,
    reason: Option<String>,
    status: SpanStatus,
    now: u64,
) -> FinishedSpan {
    let mut attributes = vec![
        KeyValue::new("sakshi.vm.id", vm_id.to_owned()),
        KeyValue::new("sakshi.vm.state", step.to_owned()),
    ];
    if let Some(r) = reason {
        attributes.push(KeyValue::new("sakshi.vm.reason", r));
    }
    FinishedSpan {
        name: format!("vm.{step}"),
        trace_id,
        span_id: SpanId::random(),
        parent: None,
        kind: SpanKind::Internal,
        start_unix_nano: now,
        end_unix_nano: now,
        attributes,
        status,
    }
}

/// Turns lifecycle phases into spans: a root `vm.lifecycle` (create -> booted) with children
/// `vm.measure` (create -> measured) and `vm.boot` (measured -> booted).
#[derive(Debug, Default)]
pub(crate) struct VmTracker {
    open: HashMap<String, OpenVm>,
}

impl VmTracker {
    pub(crate) fn phase(
        &mut self,
        vm_id: &str,
        trace_id: TraceId,
        phase: VmPhase,
        now: u64,
    ) -> Vec<FinishedSpan> {
        let mut out = Vec::new();
        let child = |name: &str, vm: &OpenVm, start: u64, status: SpanStatus| FinishedSpan {
            name: name.to_owned(),
            trace_id: vm.trace_id,
            span_id: SpanId::random(),
            parent: Some(vm.root),
            kind: SpanKind::Internal,
            start_unix_nano: start,
            end_unix_nano: now,
            attributes: vec![KeyValue::new("sakshi.vm.id", vm_id.to_owned())],
            status,
        };
        match phase {
            VmPhase::Created { parent } => {
                if self.open.len() >= MAX_OPEN_VMS
                    && let Some(oldest) = self
                        .open
                        .iter()
                        .min_by_key(|(_, v)| v.created)
                        .map(|(k, _)| k.clone())
                {
                    self.open.remove(&oldest);
                }
                self.open.insert(
                    vm_id.to_owned(),
                    OpenVm {
                        trace_id,
                        root: SpanId::random(),
                        parent,
                        created: now,
                        measured: None,
                    },
                );
            }
            VmPhase::Measured => {
                if let Some(vm) = self.open.get_mut(vm_id) {
                    vm.measured = Some(now);
                    out.push(child("vm.measure", vm, vm.created, SpanStatus::Unset));
                }
            }
            VmPhase::Step { step, reason } => {
                out.push(step_span(
                    vm_id,
                    trace_id,
                    step,
                    reason,
                    SpanStatus::Unset,
                    now,
                ));
            }
            VmPhase::Failed { reason } if !self.open.contains_key(vm_id) => {
                out.push(step_span(
                    vm_id,
                    trace_id,
                    "failed",
                    None,
                    SpanStatus::Error(reason),
                    now,
                ));
            }
            VmPhase::Booted | VmPhase::Failed { .. } => {
                if let Some(vm) = self.open.remove(vm_id) {
                    let status = match &phase {
                        VmPhase::Failed { reason } => SpanStatus::Error(reason.clone()),
                        _ => SpanStatus::Unset,
                    };
                    let boot_start = vm.measured.unwrap_or(vm.created);
                    out.push(child("vm.boot", &vm, boot_start, status.clone()));
                    out.push(FinishedSpan {
                        name: "vm.lifecycle".to_owned(),
                        trace_id: vm.trace_id,
                        span_id: vm.root,
                        parent: vm.parent,
                        kind: SpanKind::Internal,
                        start_unix_nano: vm.created,
                        end_unix_nano: now,
                        attributes: vec![KeyValue::new("sakshi.vm.id", vm_id.to_owned())],
                        status,
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_parse_and_print_as_lowercase_hex() {
        let t: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
        assert_eq!(t.to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.cmdline_param(), "trace=4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "00000000000000000000000000000000",
            "4BF92F3577B34DA6A3CE929D0E0E4736",
            "4bf9",
        ] {
            assert!(bad.parse::<TraceId>().is_err(), "{bad}");
        }
        let s: SpanId = "00f067aa0ba902b7".parse().unwrap();
        assert_eq!(s.to_string(), "00f067aa0ba902b7");
        assert_ne!(TraceId::random(), TraceId::random());
        assert!(TraceId::from_bytes([0; 16]).is_none());
    }

    #[test]
    fn lifecycle_produces_nested_spans_in_one_trace() {
        let mut t = VmTracker::default();
        let trace = TraceId::random();
        let req = SpanId::random();
        assert!(
            t.phase("vm-1", trace, VmPhase::Created { parent: Some(req) }, 100)
                .is_empty()
        );
        let measured = t.phase("vm-1", trace, VmPhase::Measured, 150);
        assert_eq!(measured.len(), 1);
        assert_eq!(
            (measured[0].start_unix_nano, measured[0].end_unix_nano),
            (100, 150)
        );
        let booted = t.phase("vm-1", trace, VmPhase::Booted, 400);
        let names: Vec<_> = booted.iter().map(|s| s.name.as_str()).collect();
        assert_eq!(names, ["vm.boot", "vm.lifecycle"]);
        let root = &booted[1];
        assert_eq!(root.parent, Some(req));
        assert_eq!((root.start_unix_nano, root.end_unix_nano), (100, 400));
        assert_eq!(booted[0].parent, Some(root.span_id));
        assert_eq!(measured[0].parent, Some(root.span_id));
        assert!(booted.iter().chain(&measured).all(|s| s.trace_id == trace));
        assert!(
            t.phase("vm-1", trace, VmPhase::Booted, 500).is_empty(),
            "closed once"
        );
    }

    #[test]
    fn failure_closes_the_lifecycle_with_an_error() {
        let mut t = VmTracker::default();
        let trace = TraceId::random();
        t.phase("vm-2", trace, VmPhase::Created { parent: None }, 1);
        let spans = t.phase(
            "vm-2",
            trace,
            VmPhase::Failed {
                reason: "triple fault".into(),
            },
            2,
        );
        assert_eq!(spans[1].status, SpanStatus::Error("triple fault".into()));
        assert_eq!(spans[1].parent, None);
    }

    #[test]
    fn later_steps_are_spans_in_the_vm_trace() {
        let mut t = VmTracker::default();
        let trace = TraceId::random();
        t.phase("vm-3", trace, VmPhase::Created { parent: None }, 1);
        assert_eq!(t.phase("vm-3", trace, VmPhase::Booted, 2).len(), 2);
        let paused = t.phase(
            "vm-3",
            trace,
            VmPhase::Step {
                step: "paused",
                reason: None,
            },
            3,
        );
        assert_eq!(paused.len(), 1);
        assert_eq!(
            (paused[0].name.as_str(), paused[0].trace_id),
            ("vm.paused", trace)
        );
        let stopped = t.phase(
            "vm-3",
            trace,
            VmPhase::Step {
                step: "stopped",
                reason: Some("poweroff".into()),
            },
            4,
        );
        assert!(
            stopped[0]
                .attributes
                .iter()
                .any(|kv| kv.key.as_str() == "sakshi.vm.reason")
        );
        // A failure after boot is its own error span.
        let failed = t.phase(
            "vm-3",
            trace,
            VmPhase::Failed {
                reason: "killed by signal 9".into(),
            },
            5,
        );
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].name, "vm.failed");
        assert_eq!(
            failed[0].status,
            SpanStatus::Error("killed by signal 9".into())
        );
    }
}
