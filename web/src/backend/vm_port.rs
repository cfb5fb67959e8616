//! The VM host port: typed commands in, typed results and errors out.

use serde::{Deserialize, Serialize};
use std::error::Error as StdError;
use std::fmt;

/// Lifecycle state of a micro-VM (the supervisor's state machine).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Configured and measured, VMM not started.
    Created,
    /// VMM started, guest has not signalled boot-complete.
    Booting,
    /// Guest signalled boot-complete.
    Running,
    /// vCPUs paused.
    Paused,
    /// Ended cleanly (poweroff, reboot, stop request).
    Stopped,
    /// The guest or its VMM failed.
    Failed,
}

impl VmState {
    /// Every state, in lifecycle order.
    pub const ALL: [VmState; 6] = [
        VmState::Created,
        VmState::Booting,
        VmState::Running,
        VmState::Paused,
        VmState::Stopped,
        VmState::Failed,
    ];

    /// Stopped and failed are final.
    pub fn is_final(self) -> bool {
        matches!(self, VmState::Stopped | VmState::Failed)
    }

    /// Lowercase name.
    pub fn as_str(self) -> &'static str {
        match self {
            VmState::Created => "created",
            VmState::Booting => "booting",
            VmState::Running => "running",
            VmState::Paused => "paused",
            VmState::Stopped => "stopped",
            VmState::Failed => "failed",
        }
    }
}

impl fmt::Display for VmState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A boot image resolved from the image store: its digest and where its bytes are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ImageRef {
    /// Lowercase hex SHA-256 of the bytes.
    pub sha256: String,
    /// Path of the stored bytes.
    pub path: std::path::PathBuf,
}

/// A validated request to create a VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VmSpec {
    /// Human-readable name (unique among live VMs).
    pub name: String,
    /// Kernel image.
    pub kernel: ImageRef,
    /// Optional initrd image.
    pub initrd: Option<ImageRef>,
    /// Kernel command line.
    pub cmdline: String,
    /// Number of vCPUs.
    pub vcpus: u8,
    /// Guest memory in MiB.
    pub memory_mib: u32,
    /// Trace id carried from the API request into the guest.
    pub trace_id: String,
}

/// One row of the VM list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmSummary {
    /// Supervisor-assigned id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Current state.
    pub state: VmState,
    /// vCPUs.
    pub vcpus: u8,
    /// Memory in MiB.
    pub memory_mib: u32,
    /// RFC 3339 creation time.
    pub created_at: String,
    /// VMM start to guest boot-complete, in microseconds.
    pub boot_latency_us: Option<u64>,
    /// Resident set size of the VMM process, in KiB (when it runs).
    pub rss_kib: Option<u64>,
    /// SHA-256 of the kernel.
    pub kernel_sha256: String,
    /// Trace id of the request that created it.
    pub trace_id: String,
}

/// A state transition in a VM's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StateChange {
    /// New state.
    pub state: VmState,
    /// RFC 3339 time.
    pub at: String,
    /// Why (exit reason, request, recovery), when known.
    pub reason: Option<String>,
}

/// A measurement taken before boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Measurement {
    /// What was measured (`kernel`, `initrd`, `cmdline`, `config`).
    pub what: String,
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// PCR it was extended into, if any.
    pub pcr: Option<u32>,
    /// Whether the image is in the golden set (kernel and initrd under an image policy; absent
    /// for the command line and config, and without measured boot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approved: Option<bool>,
}

/// The image-policy verdict a boot's measurements record: `approved`, `flagged` (booted in
/// audit mode with an image outside the golden set) or `unmeasured`.
pub fn policy_verdict(measurements: &[Measurement]) -> &'static str {
    if measurements.iter().any(|m| m.approved == Some(false)) {
        "flagged"
    } else if measurements.iter().any(|m| m.approved == Some(true)) {
        "approved"
    } else {
        "unmeasured"
    }
}

/// Everything about one VM.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmDetail {
    /// The list row.
    #[serde(flatten)]
    pub summary: VmSummary,
    /// Kernel command line.
    pub cmdline: String,
    /// SHA-256 of the initrd, if any.
    pub initrd_sha256: Option<String>,
    /// Why the VM ended, when it did.
    pub exit_reason: Option<String>,
    /// State history, oldest first.
    pub history: Vec<StateChange>,
    /// Boot measurements.
    pub measurements: Vec<Measurement>,
}

/// Host facts for the overview page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostInfo {
    /// Host name.
    pub hostname: String,
    /// `hardware`, `pvm (software nested virtualization)` or `unavailable`.
    pub kvm_mode: String,
    /// TPM in use, e.g. `software TPM (swtpm): no hardware root of trust`.
    pub tpm_kind: String,
    /// Attestation state in one line.
    pub attestation: String,
}

/// Why a VM command failed.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// No VM with this id.
    #[error("no VM with id {0:?}")]
    NotFound(String),
    /// The command is not allowed in the VM's current state.
    #[error("VM {id} is {state}; cannot {op}")]
    InvalidState {
        /// VM id.
        id: String,
        /// Its state.
        state: VmState,
        /// The refused command.
        op: &'static str,
    },
    /// The supervisor rejected a field of the request.
    #[error("{field}: {reason}")]
    Rejected {
        /// Field name as in the API request.
        field: &'static str,
        /// What is wrong with it.
        reason: String,
    },
    /// A configured limit (VM count, total memory) would be exceeded.
    #[error("limit reached: {0}")]
    Limit(String),
    /// The supervisor failed internally.
    #[error("VM host failure")]
    Host(#[source] Box<dyn StdError + Send + Sync>),
}

/// The micro-VM host as the web layer sees it. Implementations must be cheap to call from many
/// threads; the router calls them from blocking tasks.
pub trait VmBackend: Send + Sync + 'static {
    /// Facts about the host.
    fn host_info(&self) -> HostInfo;
    /// Create (and measure) a VM; it starts in `created`.
    fn create(&self, spec: VmSpec) -> Result<VmDetail, VmError>;
    /// All VMs, newest first.
    fn list(&self) -> Result<Vec<VmSummary>, VmError>;
    /// One VM.
    fn show(&self, id: &str) -> Result<VmDetail, VmError>;
    /// Boot a created (or stopped) VM.
    fn start(&self, id: &str) -> Result<VmDetail, VmError>;
    /// Pause a running VM.
    fn pause(&self, id: &str) -> Result<VmDetail, VmError>;
    /// Resume a paused VM.
    fn resume(&self, id: &str) -> Result<VmDetail, VmError>;
    /// Stop a booting, running or paused VM.
    fn stop(&self, id: &str) -> Result<VmDetail, VmError>;
    /// Remove a VM that is not running (stopping it first if needed).
    fn destroy(&self, id: &str) -> Result<(), VmError>;
    /// The last `bytes` bytes of the guest console.
    fn console_tail(&self, id: &str, bytes: usize) -> Result<String, VmError>;
}
