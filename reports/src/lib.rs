//! Sakshi reports: control catalogs as data, their evaluation against evidence, the patch
//! ledger, signed evidence bundles and their offline verification.
//!
//! - [`Catalog`]: one TOML file per framework under `reports/catalogs/` ([`Catalog::builtin`]).
//! - [`EntryStats`] + [`Evidence`] -> [`evaluate`] -> [`FrameworkResult`]: pass / fail /
//!   needs-review per control with reasons and supporting audit entries.
//! - [`NewPatch`] / [`PatchRecord`]: the patch ledger, stored as `patch.record` audit entries.
//! - [`export_bundle`] (feature `export`) writes a signed `.tar.gz` evidence bundle;
//!   [`verify_bundle`] checks one offline, as the `sakshi-verify` binary does.
//! - [`render_framework`] and [`assessment_results`]: printable HTML and OSCAL-shaped JSON.
//!
//! See `docs/EVIDENCE.md` for the bundle format and the rule kinds.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod bundle;
mod catalog;
mod evaluate;
mod evidence;
mod html;
mod oscal;
mod patch;
#[cfg(feature = "export")]
mod review;
mod sign;
mod stats;

pub use bundle::{
    AUDIT_PROOF_FORMAT, AuditCheckError, AuditChecker, AuditProof, AuditSummary, BUNDLE_FORMAT,
    BundleProblem, BundleReport, FileEntry, HostIdentity, MAX_BUFFERED_BYTES, MAX_FILES,
    MAX_LINE_BYTES, MAX_MANIFEST_BYTES, Manifest, NONCE_DOMAIN, PreviousCheckpoint, QuoteSummary,
    Scope, ScopeError, ScopedEntry, VerifyOptions, bundle_file_name, error_chain,
    excluded_from_nonce, is_safe_path, paths, verify_bundle, verify_bundle_file,
};
#[cfg(feature = "export")]
pub use bundle::{
    AuditSource, ExportError, ExportOptions, ExportSummary, QuoteSource, SourceError, assess,
    export_bundle,
};
pub use catalog::{
    ActionPattern, BUILTIN_CATALOGS, Catalog, CatalogError, CatalogProblem, Control, EntryMatch,
    EvidenceKind, FailurePair, Framework, MAX_CATALOG_BYTES, OutcomeFilter, Rule, Severity,
};
pub use evaluate::{
    ControlResult, FrameworkResult, MAX_CONTROL_ENTRIES, RuleResult, Status, StatusCounts, evaluate,
};
pub use evidence::{
    AttestationSummary, DataLocation, Evidence, LogIntegrity, Period, PeriodError, RetentionStatus,
    SiemStatus, StorageLocation, TimeSync, VmRecord,
};
pub use html::{ReportContext, render_framework};
pub use oscal::{OSCAL_VERSION, assessment_results};
pub use patch::{
    Artifact, Component, CveFix, CveStatus, GoldenImage, InvalidPatch, LedgerDecodeError, NewPatch,
    PatchRecord, cve_statuses, ledger_from_entries,
};
#[cfg(feature = "export")]
pub use patch::{LoadLedgerError, RecordPatchError, load_ledger, record_patch};
#[cfg(feature = "export")]
pub use review::{DailyReview, Highlight, ReviewError, daily_review};
pub use sign::{
    MAX_SIGSTORE_BUNDLE_BYTES, SIGSTORE_BUNDLE_MEDIA_TYPE, SignatureCheckError, sign_message,
    verify_message,
};
pub use stats::{ActionCount, EntryStats};
