//! The two ports the web layer talks through: [`VmBackend`] (the micro-VM host supervisor) and
//! [`AuditStore`] (the audit log). The router only sees these traits; the daemon plugs in the real
//! adapters and the router tests plug in fakes.

pub mod audit;
mod audit_port;
pub mod evidence;
pub mod host;
mod timesync;
mod vm_port;

pub use audit_port::{
    ActorAuth, AuditAppendError, AuditCursor, AuditEntryView, AuditFilter, AuditPage,
    AuditQueryError, AuditRecord, AuditStore, CheckpointView, ConsistencyProofView,
    InclusionProofView, Outcome, VerifyReport,
};
pub use vm_port::{
    HostInfo, ImageRef, Measurement, StateChange, VmBackend, VmDetail, VmError, VmSpec, VmState,
    VmSummary, policy_verdict,
};
