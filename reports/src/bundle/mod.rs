//! The evidence bundle format (`sakshi-evidence/v1`): a gzip-compressed tar file.
//!
//! | path | content |
//! |---|---|
//! | `manifest.json` | [`Manifest`]: every other file with its SHA-256 and size, the period, scope, host, version, generation time (always first) |
//! | `manifest.sigstore.json` | Sigstore bundle v0.3 over the exact bytes of `manifest.json` (always second) |
//! | `audit/proof.json` | [`AuditProof`]: range, chain values, anchor checkpoint, range proof, consistency proof from the previous bundle |
//! | `audit/checkpoints.jsonl` | every signed checkpoint (C2SP note, one JSON string per line) whose tree size falls in the period |
//! | `attestation/golden.json` | the golden values (approved images) the quote is appraised against |
//! | `attestation/quote/*` | a fresh TPM quote over the manifest-derived nonce, PCR values, event logs, AK public key |
//! | `inventory/vms.json` | VM inventory |
//! | `patches/ledger.json` | patch ledger and per-CVE time-to-patch |
//! | `statements/retention-and-location.json` | retention configuration and data-location statement |
//! | `statements/time-sync.json` | time synchronisation evidence |
//! | `statements/siem-delivery.json` | SIEM delivery state |
//! | `results/assessment-results.json` | control results, shaped like NIST OSCAL assessment-results |
//! | `reports/<framework>.html` | printable report per framework |
//! | `audit/entries.jsonl` | the period's entries, one `{"seq","canonical","chain"}` object per line (always last) |
//!
//! The quote nonce is SHA-256 over the RFC 8785 form of the manifest without the quote
//! nonce itself and without the files under `attestation/quote/`, `results/` and
//! `reports/` ([`Manifest::quote_nonce_input`]): it binds the quote to the audit data,
//! ledger, inventory and statements of this bundle.

mod audit_check;
#[cfg(feature = "export")]
mod export;
#[cfg(feature = "export")]
pub(crate) mod source;
mod verify;

#[cfg(all(test, feature = "export"))]
mod soft_tpm;
#[cfg(all(test, feature = "export"))]
mod tests;

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use sakshi_audit::{Hash, RangeProof, hex_hash, hex_hashes};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::evidence::Period;

pub use audit_check::{AuditCheckError, AuditChecker, MAX_LINE_BYTES};
#[cfg(feature = "export")]
pub(crate) use export::check_range;
#[cfg(feature = "export")]
pub use export::{ExportError, ExportOptions, ExportSummary, QuoteSource, assess, export_bundle};
#[cfg(feature = "export")]
pub use source::{AuditSource, SourceError};
pub use verify::{
    BundleProblem, BundleReport, MAX_BUFFERED_BYTES, MAX_FILES, MAX_MANIFEST_BYTES, QuoteSummary,
    VerifyOptions, error_chain, verify_bundle, verify_bundle_file,
};

/// The manifest's `format`.
pub const BUNDLE_FORMAT: &str = "sakshi-evidence/v1";
/// The audit proof's `format`.
pub const AUDIT_PROOF_FORMAT: &str = "sakshi-evidence-audit/v1";
/// Domain separator of the quote nonce.
pub const NONCE_DOMAIN: &str = "sakshi-evidence-quote-nonce/v1";

/// File paths inside a bundle.
pub mod paths {
    /// The manifest.
    pub const MANIFEST: &str = "manifest.json";
    /// The manifest's Sigstore bundle.
    pub const SIGNATURE: &str = "manifest.sigstore.json";
    /// Audit proof.
    pub const AUDIT_PROOF: &str = "audit/proof.json";
    /// Checkpoints.
    pub const CHECKPOINTS: &str = "audit/checkpoints.jsonl";
    /// Entries.
    pub const ENTRIES: &str = "audit/entries.jsonl";
    /// Golden values.
    pub const GOLDEN: &str = "attestation/golden.json";
    /// Directory of the quote files.
    pub const QUOTE_DIR: &str = "attestation/quote/";
    /// Inventory.
    pub const INVENTORY: &str = "inventory/vms.json";
    /// Patch ledger.
    pub const PATCHES: &str = "patches/ledger.json";
    /// Retention and data location.
    pub const RETENTION_LOCATION: &str = "statements/retention-and-location.json";
    /// Time synchronisation.
    pub const TIME_SYNC: &str = "statements/time-sync.json";
    /// SIEM delivery.
    pub const SIEM: &str = "statements/siem-delivery.json";
    /// OSCAL-shaped results.
    pub const RESULTS: &str = "results/assessment-results.json";
    /// Directory of the HTML reports.
    pub const REPORTS_DIR: &str = "reports/";
}

/// Which part of the appliance a bundle covers.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// Everything.
    All,
    /// One VM's entries.
    Vm(String),
}

/// A scope string that is not `all` or `vm:<id>`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("scope must be \"all\" or \"vm:<id>\" with a valid VM id")]
pub struct ScopeError;

impl FromStr for Scope {
    type Err = ScopeError;
    fn from_str(s: &str) -> Result<Self, ScopeError> {
        if s == "all" {
            return Ok(Scope::All);
        }
        match s.strip_prefix("vm:") {
            Some(id) if sakshi_attest::is_valid_vm_id(id) => Ok(Scope::Vm(id.to_owned())),
            _ => Err(ScopeError),
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("all"),
            Scope::Vm(id) => write!(f, "vm:{id}"),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Who produced the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostIdentity {
    /// Host name.
    pub hostname: String,
    /// `/etc/machine-id`, if known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub machine_id: Option<String>,
    /// Hex SHA-256 of the appliance public key (DER SPKI).
    pub appliance_key: String,
}

/// The audit part of the manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditSummary {
    /// The log's origin.
    pub origin: String,
    /// First entry of the period.
    pub start: u64,
    /// One past the last entry of the period.
    pub end: u64,
    /// Entries in `audit/entries.jsonl`.
    pub entries: u64,
    /// Tree size of the anchor checkpoint.
    pub anchor_tree_size: u64,
}

/// One file in the bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileEntry {
    /// Path inside the bundle.
    pub path: String,
    /// SHA-256, lowercase hex.
    pub sha256: String,
    /// Size in bytes.
    pub size: u64,
}

/// `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// [`BUNDLE_FORMAT`].
    pub format: String,
    /// The period covered.
    pub period: Period,
    /// The scope.
    pub scope: Scope,
    /// Producer.
    pub host: HostIdentity,
    /// Sakshi version that produced the bundle.
    pub appliance_version: String,
    /// When it was produced.
    pub generated_at: DateTime<Utc>,
    /// Who asked for it (actor id).
    pub generated_by: String,
    /// The audit range.
    pub audit: AuditSummary,
    /// Hex of the nonce the quote carries.
    pub quote_nonce: String,
    /// Every file except the manifest and its signature, in archive order.
    pub files: Vec<FileEntry>,
}

#[derive(Serialize)]
struct NonceInput<'a> {
    domain: &'static str,
    format: &'a str,
    period: &'a Period,
    scope: &'a Scope,
    host: &'a HostIdentity,
    appliance_version: &'a str,
    generated_at: &'a DateTime<Utc>,
    generated_by: &'a str,
    audit: &'a AuditSummary,
    files: Vec<&'a FileEntry>,
}

/// True for files the quote nonce does not cover (the quote itself and what is derived from it).
pub fn excluded_from_nonce(path: &str) -> bool {
    path.starts_with(paths::QUOTE_DIR)
        || path.starts_with("results/")
        || path.starts_with(paths::REPORTS_DIR)
}

impl Manifest {
    /// The canonical bytes the quote nonce is computed over.
    pub fn quote_nonce_input(&self) -> Vec<u8> {
        let input = NonceInput {
            domain: NONCE_DOMAIN,
            format: &self.format,
            period: &self.period,
            scope: &self.scope,
            host: &self.host,
            appliance_version: &self.appliance_version,
            generated_at: &self.generated_at,
            generated_by: &self.generated_by,
            audit: &self.audit,
            files: self
                .files
                .iter()
                .filter(|f| !excluded_from_nonce(&f.path))
                .collect(),
        };
        // Only strings, integers and RFC 3339 times: canonicalisation cannot fail.
        serde_json_canonicalizer::to_vec(&input).unwrap_or_default()
    }

    /// The quote nonce: SHA-256 of [`Manifest::quote_nonce_input`].
    pub fn quote_nonce(&self) -> [u8; 32] {
        Sha256::digest(self.quote_nonce_input()).into()
    }

    /// The file name the bundle should be saved under.
    pub fn file_name(&self) -> String {
        bundle_file_name(&self.host.hostname, &self.scope, &self.period)
    }
}

/// `sakshi-evidence_<host>_<scope>_<from>-<to>.tar.gz`, with anything but `[A-Za-z0-9.-]`
/// replaced by `-`.
pub fn bundle_file_name(hostname: &str, scope: &Scope, period: &Period) -> String {
    let clean = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '-'
                }
            })
            .collect()
    };
    let scope = match scope {
        Scope::All => "all".to_owned(),
        Scope::Vm(id) => format!("vm-{}", clean(id)),
    };
    format!(
        "sakshi-evidence_{}_{}_{}.tar.gz",
        clean(hostname),
        scope,
        period.file_stem()
    )
}

/// True for a path allowed inside a bundle: relative, ASCII `[A-Za-z0-9._-]` components
/// separated by `/`, no empty, `.` or `..` component, at most 100 bytes.
pub fn is_safe_path(p: &str) -> bool {
    !p.is_empty()
        && p.len() <= 100
        && p.split('/').all(|c| {
            !c.is_empty()
                && c != "."
                && c != ".."
                && c.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
        })
}

/// One line of `audit/entries.jsonl` in a scoped (`vm:<id>`) bundle: the entry's canonical
/// bytes and its RFC 9162 inclusion proof in the anchor's tree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScopedEntry {
    /// Sequence number (leaf index).
    pub seq: u64,
    /// The canonical entry bytes, exactly as hashed.
    pub canonical: String,
    /// Audit path from the leaf to the anchor's root.
    #[serde(with = "hex_hashes")]
    pub inclusion: Vec<Hash>,
}

/// `audit/proof.json`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditProof {
    /// [`AUDIT_PROOF_FORMAT`].
    pub format: String,
    /// The log's origin.
    pub origin: String,
    /// First entry.
    pub start: u64,
    /// One past the last entry.
    pub end: u64,
    /// Chain value before `start`.
    #[serde(with = "hex_hash")]
    pub prev_chain: Hash,
    /// Chain value of the last entry (equal to `prev_chain` for an empty range).
    #[serde(with = "hex_hash")]
    pub end_chain: Hash,
    /// The signed checkpoint the range is proven against (tree size >= `end`).
    pub anchor: String,
    /// Compact-range proof of `[start, end)` in the anchor's tree.
    pub range: RangeProof,
    /// Consistency from the previous bundle's checkpoint, when one was given.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous: Option<PreviousCheckpoint>,
}

/// The previous bundle's anchor and a consistency proof from it to this bundle's anchor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousCheckpoint {
    /// The previous signed checkpoint.
    pub checkpoint: String,
    /// RFC 9162 consistency proof from its size to the anchor's.
    #[serde(with = "hex_hashes")]
    pub consistency: Vec<Hash>,
}

#[cfg(test)]
mod format_tests {
    use super::*;

    #[test]
    fn scopes_parse() {
        assert_eq!("all".parse::<Scope>().unwrap(), Scope::All);
        assert_eq!(
            "vm:web-1".parse::<Scope>().unwrap(),
            Scope::Vm("web-1".into())
        );
        assert!("vm:".parse::<Scope>().is_err());
        assert!("vm:../x".parse::<Scope>().is_err());
        assert!("everything".parse::<Scope>().is_err());
    }

    #[test]
    fn safe_paths() {
        for ok in [
            "manifest.json",
            "audit/entries.jsonl",
            "attestation/quote/quote.msg",
        ] {
            assert!(is_safe_path(ok), "{ok}");
        }
        for bad in [
            "",
            "/etc/passwd",
            "../x",
            "a//b",
            "a/./b",
            "a/../b",
            "a b",
            "a\\b",
            "é",
        ] {
            assert!(!is_safe_path(bad), "{bad}");
        }
    }

    #[test]
    fn file_names_carry_period_and_scope() {
        use chrono::TimeZone;
        let p = Period::new(
            Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
        )
        .unwrap();
        assert_eq!(
            bundle_file_name("bank/host 1", &Scope::Vm("pay-1".into()), &p),
            "sakshi-evidence_bank-host-1_vm-pay-1_20261101T000000Z-20261201T000000Z.tar.gz"
        );
    }
}
