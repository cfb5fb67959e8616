//! Roles and permissions. Enforcement happens in the route guard ([`crate::routes`]), driven by
//! the route table; this module only answers "may role R do P".

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// A user's (or an API token's) role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Everything, including user management.
    Admin,
    /// VM lifecycle and images.
    Operator,
    /// Read-only; reports and evidence export.
    Auditor,
    /// Snapshots, quarantine, read.
    Responder,
}

impl Role {
    /// Every role, in display order.
    pub const ALL: [Role; 4] = [Role::Admin, Role::Operator, Role::Auditor, Role::Responder];

    /// The lowercase name used in the API, the config and the database.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "admin",
            Role::Operator => "operator",
            Role::Auditor => "auditor",
            Role::Responder => "responder",
        }
    }

    /// Whether this role holds `perm`.
    pub fn allows(self, perm: Permission) -> bool {
        use Permission as P;
        match self {
            Role::Admin => true,
            Role::Operator => matches!(
                perm,
                P::ViewAppliance
                    | P::VmRead
                    | P::VmLifecycle
                    | P::ImageRead
                    | P::ImageWrite
                    | P::PatchRead
                    | P::PatchRecord
            ),
            Role::Auditor => matches!(
                perm,
                P::ViewAppliance
                    | P::VmRead
                    | P::ImageRead
                    | P::AuditRead
                    | P::EvidenceExport
                    | P::PatchRead
            ),
            Role::Responder => matches!(
                perm,
                P::ViewAppliance
                    | P::VmRead
                    | P::ImageRead
                    | P::AuditRead
                    | P::VmSnapshot
                    | P::VmQuarantine
            ),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not one of the four roles.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("unknown role {0:?} (expected admin, operator, auditor or responder)")]
pub struct UnknownRole(pub String);

impl FromStr for Role {
    type Err = UnknownRole;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "admin" => Ok(Role::Admin),
            "operator" => Ok(Role::Operator),
            "auditor" => Ok(Role::Auditor),
            "responder" => Ok(Role::Responder),
            other => Err(UnknownRole(other.to_owned())),
        }
    }
}

/// What a route needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Permission {
    /// Overview, own account and own API tokens.
    ViewAppliance,
    /// List and show VMs, console tails.
    VmRead,
    /// Create, start, pause, resume, stop, destroy VMs.
    VmLifecycle,
    /// Snapshot a VM for forensics.
    VmSnapshot,
    /// Quarantine a VM.
    VmQuarantine,
    /// List and show images.
    ImageRead,
    /// Upload images.
    ImageWrite,
    /// Query the audit log, proofs, verification, checkpoints.
    AuditRead,
    /// Export evidence bundles and reports.
    EvidenceExport,
    /// Read the patch ledger and per-CVE time-to-patch.
    PatchRead,
    /// Record a patch (and approve its image into the golden set).
    PatchRecord,
    /// Approve images into (or withdraw them from) measured boot's golden set.
    ImageApprove,
    /// Manage users and everyone's tokens.
    UserAdmin,
}

impl Permission {
    /// Stable name, used in denial audit entries and problem documents.
    pub fn as_str(self) -> &'static str {
        match self {
            Permission::ViewAppliance => "appliance.view",
            Permission::VmRead => "vm.read",
            Permission::VmLifecycle => "vm.lifecycle",
            Permission::VmSnapshot => "vm.snapshot",
            Permission::VmQuarantine => "vm.quarantine",
            Permission::ImageRead => "image.read",
            Permission::ImageWrite => "image.write",
            Permission::AuditRead => "audit.read",
            Permission::EvidenceExport => "evidence.export",
            Permission::PatchRead => "patch.read",
            Permission::PatchRecord => "patch.record",
            Permission::ImageApprove => "image.approve",
            Permission::UserAdmin => "user.admin",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn role_names_round_trip() {
        for r in Role::ALL {
            assert_eq!(r.as_str().parse::<Role>(), Ok(r));
        }
        assert_eq!("root".parse::<Role>(), Err(UnknownRole("root".to_owned())));
    }

    #[test]
    fn only_admin_manages_users_and_only_lifecycle_roles_change_vms() {
        let holders = |p| {
            Role::ALL
                .into_iter()
                .filter(|r| r.allows(p))
                .collect::<Vec<_>>()
        };
        assert_eq!(holders(Permission::UserAdmin), vec![Role::Admin]);
        assert_eq!(
            holders(Permission::VmLifecycle),
            vec![Role::Admin, Role::Operator]
        );
        assert_eq!(
            holders(Permission::VmSnapshot),
            vec![Role::Admin, Role::Responder]
        );
        assert_eq!(
            holders(Permission::AuditRead),
            vec![Role::Admin, Role::Auditor, Role::Responder]
        );
        assert_eq!(holders(Permission::ViewAppliance), Role::ALL.to_vec());
        assert_eq!(
            holders(Permission::EvidenceExport),
            vec![Role::Admin, Role::Auditor]
        );
        assert_eq!(
            holders(Permission::PatchRecord),
            vec![Role::Admin, Role::Operator]
        );
        assert_eq!(
            holders(Permission::PatchRead),
            vec![Role::Admin, Role::Operator, Role::Auditor]
        );
    }
}
