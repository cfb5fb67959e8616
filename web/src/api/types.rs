//! Request and response bodies of the JSON API (documented in `GET /api/v1/openapi.json`, see [`crate::openapi_document`]).

use crate::backend::{CheckpointView, HostInfo};
use crate::rbac::Role;
use serde::{Deserialize, Serialize};

fn one() -> u8 {
    1
}
fn sixty_four() -> u32 {
    64
}

/// `POST /api/v1/vms`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct CreateVmRequest {
    /// Name: 1-63 of a-z, 0-9, `-`, starting with a letter.
    pub name: String,
    /// SHA-256 of a stored kernel image.
    pub kernel_sha256: String,
    /// SHA-256 of a stored initrd image.
    #[serde(default)]
    pub initrd_sha256: Option<String>,
    /// Kernel command line (printable ASCII, at most 2048 bytes).
    #[serde(default)]
    pub cmdline: String,
    /// vCPUs (default 1).
    #[serde(default = "one")]
    pub vcpus: u8,
    /// Memory in MiB (default 64).
    #[serde(default = "sixty_four")]
    pub memory_mib: u32,
    /// Boot right away.
    #[serde(default)]
    pub start: bool,
}

/// `POST /api/v1/attestations`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct QuoteRequest {
    /// Caller-chosen freshness nonce: hex, 1-64 bytes.
    pub nonce: String,
}

/// A list response.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Items<T> {
    /// The items.
    pub items: Vec<T>,
}

/// `GET /api/v1/vms/{id}/console`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsoleQuery {
    /// Bytes from the end (default 4096, at most 65536).
    pub bytes: Option<usize>,
}

/// Console tail.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ConsoleTail {
    /// VM id.
    pub id: String,
    /// The text (lossy UTF-8).
    pub text: String,
}

/// `POST /api/v1/images?name=..&kind=..`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UploadQuery {
    /// Label.
    pub name: String,
    /// `kernel` or `initrd`.
    pub kind: crate::images::ImageKind,
}

/// `GET /api/v1/audit/entries`
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AuditQueryParams {
    /// Exact actor.
    pub actor: Option<String>,
    /// Exact action, or a prefix ending in `.`.
    pub action: Option<String>,
    /// Exact target.
    pub target: Option<String>,
    /// `success`, `failure` or `denied`.
    pub outcome: Option<String>,
    /// RFC 3339 lower bound.
    pub since: Option<String>,
    /// RFC 3339 upper bound.
    pub until: Option<String>,
    /// Older page: entries below this index.
    pub before: Option<u64>,
    /// Newer page: entries above this index.
    pub after: Option<u64>,
    /// Page size (1-500, default 50).
    pub limit: Option<u32>,
}

/// `GET /api/v1/audit/entries/{index}/proof`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProofQuery {
    /// Tree size (default: current).
    pub tree_size: Option<u64>,
}

/// `GET /api/v1/audit/consistency`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConsistencyQuery {
    /// Older size.
    pub from: u64,
    /// Newer size (default: current).
    pub to: Option<u64>,
}

/// `GET /api/v1/audit/checkpoints`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckpointQuery {
    /// How many (1-100, default 10).
    pub limit: Option<u32>,
}

/// `POST /api/v1/users`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateUserRequest {
    /// User name.
    pub name: String,
    /// Role.
    pub role: Role,
    /// Initial password (12-256 characters).
    pub password: String,
}

/// `PUT /api/v1/users/{name}/password`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResetPasswordRequest {
    /// New password.
    pub password: String,
}

/// `PUT /api/v1/account/password`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChangePasswordRequest {
    /// Current password.
    pub current_password: String,
    /// New password.
    pub new_password: String,
}

/// `POST /api/v1/tokens`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateTokenRequest {
    /// Label.
    pub name: String,
    /// Role (default: the caller's; only admins may choose another).
    #[serde(default)]
    pub role: Option<Role>,
    /// Lifetime in days (default min(90, auth.token_max_days)).
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// `GET /api/v1/tokens`
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenListQuery {
    /// Everyone's tokens (admins only).
    #[serde(default)]
    pub all: bool,
}

/// `POST /api/v1/auth/token`
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenLoginRequest {
    /// User name.
    pub username: String,
    /// Password.
    pub password: String,
    /// Token label.
    pub name: String,
    /// Lifetime in days.
    #[serde(default)]
    pub expires_in_days: Option<u32>,
}

/// VM counts by state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct VmCounts {
    /// All.
    pub total: u32,
    /// Created.
    pub created: u32,
    /// Booting.
    pub booting: u32,
    /// Running.
    pub running: u32,
    /// Paused.
    pub paused: u32,
    /// Stopped.
    pub stopped: u32,
    /// Failed.
    pub failed: u32,
}

/// `GET /api/v1/overview`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Overview {
    /// Appliance version.
    pub version: String,
    /// SHA-256 of the running binary.
    pub binary_sha256: String,
    /// Seconds since start.
    pub uptime_s: u64,
    /// Host facts.
    pub host: HostInfo,
    /// VM counts.
    pub vms: VmCounts,
    /// Audit log size.
    pub audit_size: u64,
    /// Audit Merkle root.
    pub audit_root: String,
    /// Latest signed checkpoint.
    pub last_checkpoint: Option<CheckpointView>,
    /// Caller.
    pub user: String,
    /// Caller's role.
    pub role: Option<Role>,
    /// SIEM (OTLP) delivery of the audit log: `null` without an `[otlp]` table. `state` is
    /// `healthy`, `retrying` or `logging_failure` (PCI-DSS 10.7).
    #[serde(default)]
    pub siem: Option<crate::otlp::DeliveryHealth>,
}

/// `GET /api/v1/whoami`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Whoami {
    /// User name.
    pub user: String,
    /// Effective role.
    pub role: Role,
    /// `session` or `token`.
    pub auth: String,
    /// Permissions of the role.
    pub permissions: Vec<String>,
}

/// `GET /api/v1/health`
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Health {
    /// Always `ok` when the daemon answers.
    pub status: String,
    /// Appliance version.
    pub version: String,
}
