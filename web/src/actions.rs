//! The typed list of actions the web layer audits.

/// An audited action. The dotted names are the audit log's action vocabulary
/// (`sakshi_audit::Action`); several variants share a name and differ in their details.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AuditAction {
    /// The daemon started (details: version, binary SHA-256).
    ApplianceStart,
    /// The daemon stopped.
    ApplianceStop,
    /// A successful login.
    LoginSucceeded,
    /// A failed login (bad credentials or locked out).
    LoginFailed,
    /// A logout.
    Logout,
    /// A request carried an invalid, expired or revoked API token.
    TokenAuth,
    /// A request was refused by authorization or CSRF checks.
    AccessDenied,
    /// VM created (with image digests).
    VmCreate,
    /// VM boot requested.
    VmStart,
    /// VM paused.
    VmPause,
    /// VM resumed.
    VmResume,
    /// VM stop requested.
    VmStop,
    /// VM destroyed.
    VmDestroy,
    /// The guest signalled boot-complete (details: boot latency).
    VmRunning,
    /// The VM ended (details: reason).
    VmExited,
    /// The VM failed (guest or VMM crash, or found dead on restart).
    VmFailed,
    /// Image stored.
    ImageAdd,
    /// Image approved into the measured-boot golden set.
    ImageApprove,
    /// Image withdrawn from the golden set.
    ImageRevoke,
    /// User created.
    UserCreate,
    /// User deleted.
    UserDelete,
    /// Password changed or reset.
    UserPassword,
    /// API token issued.
    TokenCreate,
    /// API token revoked.
    TokenRevoke,
    /// Audit entries read.
    AuditRead,
    /// Audit log verified.
    AuditVerify,
    /// Audit proof produced.
    AuditProof,
    /// Checkpoints read.
    AuditCheckpointRead,
    /// A TPM quote was produced.
    AttestQuote,
    /// An evidence bundle or a compliance report was produced (`details.kind`).
    EvidenceExport,
    /// A patch was recorded (the entry is the ledger record: `details.patch`).
    PatchRecord,
}

/// Every action.
#[cfg(test)]
pub const ALL: [AuditAction; 31] = [
    AuditAction::ApplianceStart,
    AuditAction::ApplianceStop,
    AuditAction::LoginSucceeded,
    AuditAction::LoginFailed,
    AuditAction::Logout,
    AuditAction::TokenAuth,
    AuditAction::AccessDenied,
    AuditAction::VmCreate,
    AuditAction::VmStart,
    AuditAction::VmPause,
    AuditAction::VmResume,
    AuditAction::VmStop,
    AuditAction::VmDestroy,
    AuditAction::VmRunning,
    AuditAction::VmExited,
    AuditAction::VmFailed,
    AuditAction::ImageAdd,
    AuditAction::ImageApprove,
    AuditAction::ImageRevoke,
    AuditAction::UserCreate,
    AuditAction::UserDelete,
    AuditAction::UserPassword,
    AuditAction::TokenCreate,
    AuditAction::TokenRevoke,
    AuditAction::AuditRead,
    AuditAction::AuditVerify,
    AuditAction::AuditProof,
    AuditAction::AuditCheckpointRead,
    AuditAction::AttestQuote,
    AuditAction::EvidenceExport,
    AuditAction::PatchRecord,
];

impl AuditAction {
    /// The dotted name.
    pub fn as_str(self) -> &'static str {
        match self {
            AuditAction::ApplianceStart => "appliance.start",
            AuditAction::ApplianceStop => "appliance.stop",
            AuditAction::LoginSucceeded => "auth.login.success",
            AuditAction::LoginFailed => "auth.login.failure",
            AuditAction::Logout => "auth.logout",
            AuditAction::TokenAuth => "auth.login.failure",
            AuditAction::AccessDenied => "auth.denied",
            AuditAction::VmCreate => "vm.create",
            AuditAction::VmStart => "vm.boot",
            AuditAction::VmPause => "vm.pause",
            AuditAction::VmResume => "vm.resume",
            AuditAction::VmStop => "vm.stop",
            AuditAction::VmDestroy => "vm.destroy",
            AuditAction::VmRunning => "vm.running",
            AuditAction::VmExited => "vm.stop",
            AuditAction::VmFailed => "vm.failed",
            AuditAction::ImageAdd => "image.register",
            AuditAction::ImageApprove => "image.approve",
            AuditAction::ImageRevoke => "image.revoke",
            AuditAction::UserCreate => "user.create",
            AuditAction::UserDelete => "user.delete",
            AuditAction::UserPassword => "user.credential_change",
            AuditAction::TokenCreate => "token.create",
            AuditAction::TokenRevoke => "token.revoke",
            AuditAction::AuditRead => "audit.read",
            AuditAction::AuditVerify => "audit.verify",
            AuditAction::AuditProof => "audit.read",
            AuditAction::AuditCheckpointRead => "audit.read",
            AuditAction::AttestQuote => "attest.quote",
            AuditAction::EvidenceExport => "evidence.export",
            AuditAction::PatchRecord => "patch.record",
        }
    }
}
