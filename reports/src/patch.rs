//! The patch ledger: what was patched, which vulnerabilities that fixed, when, and who approved.
//!
//! Storage: each record is one `patch.record` entry of the audit log, with the record under
//! `details.patch` and the target `patch:<id>`. The ledger is therefore hash-chained, signed
//! and exported like every other entry, and needs no table of its own; reading it back is a
//! scan of `patch.record` entries ([`ledger_from_entries`]). A vulnerability first recorded as
//! pending (no `applied_at`) and later as applied keeps both entries; the latest record per
//! CVE and component wins.
//!
//! Time-to-patch is measured per CVE from the vendor's release date (00:00 UTC that day) to
//! the time the patch was applied ([`cve_statuses`]); `crate::evaluate` compares it with the
//! catalog's deadline (PCI DSS 6.3.3: critical within one month = 30 days).

use std::collections::BTreeMap;
use std::fmt;

use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sakshi_attest::{BootComponent, Policy, Sha256Digest};
use sakshi_audit::{Action, Actor, Entry, NewEntry, Origin, Target, TargetKind};
use serde::{Deserialize, Serialize};

use crate::catalog::Severity;

/// Longest version string, in bytes.
pub const MAX_VERSION_BYTES: usize = 128;
/// Most CVEs in one record.
pub const MAX_CVES: usize = 256;
/// Most artifacts in one record.
pub const MAX_ARTIFACTS: usize = 64;
/// Longest free-text field (approver, notes, artifact names), in bytes.
pub const MAX_TEXT_BYTES: usize = 4096;
/// Clock skew tolerated for `applied_at` in the future.
const FUTURE_SKEW: TimeDelta = TimeDelta::minutes(5);

/// What was patched.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Component {
    /// The appliance itself (Sakshi, its OS).
    Appliance,
    /// The VMM (`sakshi-vmm`).
    Vmm,
    /// A guest kernel.
    GuestKernel,
    /// A guest image (initrd / root filesystem).
    GuestImage,
}

impl Component {
    /// snake_case name.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Appliance => "appliance",
            Component::Vmm => "vmm",
            Component::GuestKernel => "guest_kernel",
            Component::GuestImage => "guest_image",
        }
    }
}

impl fmt::Display for Component {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A vulnerability a patch fixes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CveFix {
    /// `CVE-YYYY-NNNN...`.
    pub id: String,
    /// Severity (CVSS qualitative rating).
    pub severity: Severity,
    /// When the vendor released the fix.
    pub vendor_released: NaiveDate,
}

/// A file that went into service, by digest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Artifact {
    /// File or package name.
    pub name: String,
    /// SHA-256, 64 lowercase hex digits.
    pub sha256: String,
}

/// A patched guest image to add to the golden set used by measured boot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GoldenImage {
    /// Kernel SHA-256.
    pub kernel_sha256: String,
    /// Initrd SHA-256, if the image has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initrd_sha256: Option<String>,
}

/// A patch as submitted (CLI `sakshi patch record`, API `POST /api/v1/patches`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPatch {
    /// What was patched.
    pub component: Component,
    /// Version before.
    pub from_version: String,
    /// Version after.
    pub to_version: String,
    /// Vulnerabilities fixed.
    #[serde(default)]
    pub cves: Vec<CveFix>,
    /// When the patch went into service; `None` records a known, still pending fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<DateTime<Utc>>,
    /// Digests of what went into service.
    #[serde(default)]
    pub artifacts: Vec<Artifact>,
    /// Who approved the change.
    pub approver: String,
    /// A patched guest image to approve for measured boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden_image: Option<GoldenImage>,
    /// Free text (change ticket, test evidence).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// A recorded patch: the submission plus its id and when it was recorded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PatchRecord {
    /// Ledger id (`patch-<uuid>`).
    pub id: String,
    /// When it was recorded.
    pub recorded_at: DateTime<Utc>,
    /// Who recorded it (actor id).
    pub recorded_by: String,
    /// What was patched.
    pub component: Component,
    /// Version before.
    pub from_version: String,
    /// Version after.
    pub to_version: String,
    /// Vulnerabilities fixed.
    pub cves: Vec<CveFix>,
    /// When it went into service (`None`: pending).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub applied_at: Option<DateTime<Utc>>,
    /// Digests of what went into service.
    pub artifacts: Vec<Artifact>,
    /// Who approved it.
    pub approver: String,
    /// A patched guest image approved for measured boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub golden_image: Option<GoldenImage>,
    /// Free text.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub notes: Option<String>,
}

/// Why a patch submission is refused. Nothing is recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InvalidPatch {
    /// A version is empty or too long.
    #[error("{field} must be 1..={MAX_VERSION_BYTES} bytes")]
    Version {
        /// `from_version` or `to_version`.
        field: &'static str,
    },
    /// From and to versions are equal.
    #[error("from_version and to_version are both {0:?}")]
    SameVersion(String),
    /// A CVE id is not `CVE-YYYY-NNNN`.
    #[error("{0:?} is not a CVE id (CVE-YYYY-NNNN)")]
    CveId(String),
    /// A CVE is listed twice.
    #[error("{0} is listed twice")]
    DuplicateCve(String),
    /// Too many CVEs or artifacts.
    #[error("too many {what}: {count} (limit {limit})")]
    TooMany {
        /// CVEs or artifacts.
        what: &'static str,
        /// Given.
        count: usize,
        /// Limit.
        limit: usize,
    },
    /// The vendor release date is after the patch was applied or in the future.
    #[error("{cve}: vendor release {released} is after {when}")]
    ReleaseAfter {
        /// The CVE.
        cve: String,
        /// Its release date.
        released: NaiveDate,
        /// "the time it was applied" or "today".
        when: &'static str,
    },
    /// `applied_at` is in the future.
    #[error("applied_at {0} is in the future")]
    AppliedInFuture(DateTime<Utc>),
    /// An applied patch lists no artifact digests.
    #[error("an applied patch must list the digests of what went into service")]
    NoArtifacts,
    /// An artifact digest is malformed.
    #[error("artifact {name:?}: sha256 must be 64 lowercase hex digits")]
    Digest {
        /// Artifact name.
        name: String,
    },
    /// A text field is empty or too long.
    #[error("{field} must be 1..={MAX_TEXT_BYTES} bytes")]
    Text {
        /// Which field.
        field: &'static str,
    },
    /// A golden image on a component that does not boot as a guest.
    #[error("a golden image can only be approved for guest_kernel or guest_image patches")]
    GoldenImageComponent,
    /// A golden image for a patch that is not applied.
    #[error("a golden image can only be approved once the patch is applied")]
    GoldenImagePending,
    /// A golden image digest is malformed.
    #[error("golden image {field} must be 64 lowercase hex digits")]
    GoldenDigest {
        /// Which digest.
        field: &'static str,
    },
}

fn is_sha256_hex(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

fn is_cve_id(s: &str) -> bool {
    let Some(rest) = s.strip_prefix("CVE-") else {
        return false;
    };
    let Some((year, num)) = rest.split_once('-') else {
        return false;
    };
    year.len() == 4
        && year.bytes().all(|b| b.is_ascii_digit())
        && (4..=19).contains(&num.len())
        && num.bytes().all(|b| b.is_ascii_digit())
}

fn release_start(d: NaiveDate) -> DateTime<Utc> {
    d.and_hms_opt(0, 0, 0).unwrap_or_default().and_utc()
}

impl NewPatch {
    /// Check the submission as of `now`.
    pub fn validate(&self, now: DateTime<Utc>) -> Result<(), InvalidPatch> {
        for (field, v) in [
            ("from_version", &self.from_version),
            ("to_version", &self.to_version),
        ] {
            if v.trim().is_empty() || v.len() > MAX_VERSION_BYTES {
                return Err(InvalidPatch::Version { field });
            }
        }
        if self.from_version == self.to_version {
            return Err(InvalidPatch::SameVersion(self.to_version.clone()));
        }
        if self.cves.len() > MAX_CVES {
            return Err(InvalidPatch::TooMany {
                what: "CVEs",
                count: self.cves.len(),
                limit: MAX_CVES,
            });
        }
        if self.artifacts.len() > MAX_ARTIFACTS {
            return Err(InvalidPatch::TooMany {
                what: "artifacts",
                count: self.artifacts.len(),
                limit: MAX_ARTIFACTS,
            });
        }
        if let Some(t) = self.applied_at
            && t > now + FUTURE_SKEW
        {
            return Err(InvalidPatch::AppliedInFuture(t));
        }
        let mut seen = std::collections::BTreeSet::new();
        for c in &self.cves {
            if !is_cve_id(&c.id) {
                return Err(InvalidPatch::CveId(c.id.chars().take(64).collect()));
            }
            if !seen.insert(c.id.as_str()) {
                return Err(InvalidPatch::DuplicateCve(c.id.clone()));
            }
            let released = release_start(c.vendor_released);
            if released > now {
                return Err(InvalidPatch::ReleaseAfter {
                    cve: c.id.clone(),
                    released: c.vendor_released,
                    when: "today",
                });
            }
            if let Some(applied) = self.applied_at
                && applied.date_naive() < c.vendor_released
            {
                return Err(InvalidPatch::ReleaseAfter {
                    cve: c.id.clone(),
                    released: c.vendor_released,
                    when: "the time it was applied",
                });
            }
        }
        if self.applied_at.is_some() && self.artifacts.is_empty() {
            return Err(InvalidPatch::NoArtifacts);
        }
        for a in &self.artifacts {
            if a.name.trim().is_empty() || a.name.len() > MAX_TEXT_BYTES {
                return Err(InvalidPatch::Text {
                    field: "artifact name",
                });
            }
            if !is_sha256_hex(&a.sha256) {
                return Err(InvalidPatch::Digest {
                    name: a.name.chars().take(64).collect(),
                });
            }
        }
        if self.approver.trim().is_empty() || self.approver.len() > MAX_TEXT_BYTES {
            return Err(InvalidPatch::Text { field: "approver" });
        }
        if self
            .notes
            .as_ref()
            .is_some_and(|n| n.len() > MAX_TEXT_BYTES)
        {
            return Err(InvalidPatch::Text { field: "notes" });
        }
        if let Some(g) = &self.golden_image {
            if !matches!(
                self.component,
                Component::GuestKernel | Component::GuestImage
            ) {
                return Err(InvalidPatch::GoldenImageComponent);
            }
            if self.applied_at.is_none() {
                return Err(InvalidPatch::GoldenImagePending);
            }
            if !is_sha256_hex(&g.kernel_sha256) {
                return Err(InvalidPatch::GoldenDigest {
                    field: "kernel_sha256",
                });
            }
            if g.initrd_sha256
                .as_deref()
                .is_some_and(|d| !is_sha256_hex(d))
            {
                return Err(InvalidPatch::GoldenDigest {
                    field: "initrd_sha256",
                });
            }
        }
        Ok(())
    }

    /// Validate and turn into a record with a fresh id.
    pub fn into_record(
        self,
        recorded_by: &str,
        now: DateTime<Utc>,
    ) -> Result<PatchRecord, InvalidPatch> {
        self.validate(now)?;
        if recorded_by.trim().is_empty() {
            return Err(InvalidPatch::Text {
                field: "recorded_by",
            });
        }
        Ok(PatchRecord {
            id: format!("patch-{}", uuid::Uuid::now_v7()),
            recorded_at: now,
            recorded_by: recorded_by.to_owned(),
            component: self.component,
            from_version: self.from_version,
            to_version: self.to_version,
            cves: self.cves,
            applied_at: self.applied_at,
            artifacts: self.artifacts,
            approver: self.approver,
            golden_image: self.golden_image,
            notes: self.notes,
        })
    }
}

impl PatchRecord {
    /// The audit entry that stores this record (`patch.record`, target `patch:<id>`).
    pub fn to_entry(&self, actor: Actor, origin: Origin) -> NewEntry {
        let details = serde_json::json!({ "patch": self });
        NewEntry::new(Action::PatchRecord, actor, origin)
            .target(Target::new(TargetKind::Patch, self.id.clone()))
            .details(details)
    }

    /// Add the record's golden image (if any) to the measured-boot golden set. Returns the
    /// number of digests added. Call this when the patched image is approved, and audit it
    /// as `image.approve`.
    pub fn approve_into(&self, policy: &mut Policy) -> usize {
        let Some(g) = &self.golden_image else {
            return 0;
        };
        let label = format!("{} {} ({})", self.component, self.to_version, self.id);
        let mut added = 0;
        let parts = [
            (BootComponent::Kernel, Some(&g.kernel_sha256)),
            (BootComponent::Initrd, g.initrd_sha256.as_ref()),
        ];
        for (component, digest) in parts {
            if let Some(d) = digest
                && let Ok(d) = d.parse::<Sha256Digest>()
            {
                policy.approve(component, d, label.clone());
                added += 1;
            }
        }
        added
    }
}

/// A `patch.record` entry whose details are not a patch record.
#[derive(Debug, thiserror::Error)]
#[error("audit entry {seq} is a patch.record without a valid details.patch")]
pub struct LedgerDecodeError {
    /// The entry.
    pub seq: u64,
    /// Why.
    #[source]
    pub source: serde_json::Error,
}

/// Collect the ledger from audit entries (other actions are skipped), in log order.
pub fn ledger_from_entries<'a>(
    entries: impl IntoIterator<Item = &'a Entry>,
) -> Result<Vec<(u64, PatchRecord)>, LedgerDecodeError> {
    let mut out = Vec::new();
    for e in entries {
        if e.action != Action::PatchRecord || !e.outcome.is_success() {
            continue;
        }
        let patch = e
            .details
            .get("patch")
            .cloned()
            .unwrap_or(serde_json::Value::Null);
        let rec: PatchRecord = serde_json::from_value(patch)
            .map_err(|source| LedgerDecodeError { seq: e.seq, source })?;
        out.push((e.seq, rec));
    }
    Ok(out)
}

/// Why a patch could not be recorded. Nothing was recorded.
#[cfg(feature = "export")]
#[derive(Debug, thiserror::Error)]
pub enum RecordPatchError {
    /// The submission is invalid.
    #[error("the patch record is invalid")]
    Invalid(#[source] InvalidPatch),
    /// The audit log refused the entry.
    #[error("the patch could not be recorded in the audit log")]
    Append(#[source] sakshi_audit::AppendError),
}

/// Validate `new` and record it in the audit log as a `patch.record` entry by `actor`.
#[cfg(feature = "export")]
pub fn record_patch(
    log: &sakshi_audit::AuditLog,
    new: NewPatch,
    actor: Actor,
    origin: Origin,
    now: DateTime<Utc>,
) -> Result<(PatchRecord, sakshi_audit::Receipt), RecordPatchError> {
    let record = new
        .into_record(&actor.id, now)
        .map_err(RecordPatchError::Invalid)?;
    let receipt = log
        .append(record.to_entry(actor, origin))
        .map_err(RecordPatchError::Append)?;
    Ok((record, receipt))
}

/// Why the ledger could not be read.
#[cfg(feature = "export")]
#[derive(Debug, thiserror::Error)]
pub enum LoadLedgerError {
    /// Querying the log failed.
    #[error("querying patch.record entries failed")]
    Query(#[source] sakshi_audit::QueryError),
    /// A stored record does not decode.
    #[error("the patch ledger holds an unreadable record")]
    Decode(#[source] LedgerDecodeError),
}

/// Read every `patch.record` entry still online, in log order.
#[cfg(feature = "export")]
pub fn load_ledger(
    log: &sakshi_audit::AuditLog,
) -> Result<Vec<(u64, PatchRecord)>, LoadLedgerError> {
    let mut out = Vec::new();
    let mut cursor = None;
    loop {
        let q = sakshi_audit::Query {
            cursor,
            limit: sakshi_audit::MAX_PAGE,
            actions: vec![Action::PatchRecord],
            ..sakshi_audit::Query::default()
        };
        let page = log.query(&q).map_err(LoadLedgerError::Query)?;
        out.extend(ledger_from_entries(&page.entries).map_err(LoadLedgerError::Decode)?);
        match page.next_cursor {
            Some(c) => cursor = Some(c),
            None => return Ok(out),
        }
    }
}

/// Where one vulnerability stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CveStatus {
    /// The CVE.
    pub cve: String,
    /// The component.
    pub component: Component,
    /// Its severity (the highest recorded).
    pub severity: Severity,
    /// Vendor release date.
    pub vendor_released: NaiveDate,
    /// When it was patched (`None`: still pending at `as_of`).
    pub applied_at: Option<DateTime<Utc>>,
    /// The record that decided this status.
    pub patch_id: String,
    /// Days from release to application, or to `as_of` while pending.
    pub days: i64,
}

/// The status of every CVE in the ledger as of `as_of`. Records applied after `as_of` count
/// as pending at `as_of`; records made after `as_of` are ignored.
pub fn cve_statuses(records: &[PatchRecord], as_of: DateTime<Utc>) -> Vec<CveStatus> {
    let mut by_cve: BTreeMap<(String, Component), CveStatus> = BTreeMap::new();
    for r in records.iter().filter(|r| r.recorded_at <= as_of) {
        let applied = r.applied_at.filter(|t| *t <= as_of);
        for c in &r.cves {
            let end = applied.unwrap_or(as_of);
            let days = (end - release_start(c.vendor_released)).num_days();
            let status = CveStatus {
                cve: c.id.clone(),
                component: r.component,
                severity: c.severity,
                vendor_released: c.vendor_released,
                applied_at: applied,
                patch_id: r.id.clone(),
                days,
            };
            match by_cve.get_mut(&(c.id.clone(), r.component)) {
                // An earlier application stands; a later pending record does not undo it.
                Some(old)
                    if old.applied_at.is_some()
                        && (applied.is_none() || old.applied_at <= applied) =>
                {
                    old.severity = old.severity.max(c.severity);
                }
                Some(old) => {
                    let severity = old.severity.max(c.severity);
                    *old = CveStatus { severity, ..status };
                }
                None => {
                    by_cve.insert((c.id.clone(), r.component), status);
                }
            }
        }
    }
    by_cve.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn now() -> DateTime<Utc> {
        Utc.with_ymd_and_hms(2026, 11, 27, 12, 0, 0).unwrap()
    }

    pub(crate) fn sample(applied: Option<DateTime<Utc>>) -> NewPatch {
        NewPatch {
            component: Component::GuestKernel,
            from_version: "6.1.112".into(),
            to_version: "6.1.115".into(),
            cves: vec![CveFix {
                id: "CVE-2026-12345".into(),
                severity: Severity::Critical,
                vendor_released: NaiveDate::from_ymd_opt(2026, 10, 1).unwrap(),
            }],
            applied_at: applied,
            artifacts: if applied.is_some() {
                vec![Artifact {
                    name: "vmlinux".into(),
                    sha256: "ab".repeat(32),
                }]
            } else {
                vec![]
            },
            approver: "carol (change board)".into(),
            golden_image: None,
            notes: None,
        }
    }

    #[test]
    fn valid_patches_pass_and_get_ids() {
        let p = sample(Some(now() - TimeDelta::days(2)));
        let r = p.into_record("alice", now()).unwrap();
        assert!(r.id.starts_with("patch-"));
        assert_eq!(r.recorded_by, "alice");
        assert!(sample(None).validate(now()).is_ok());
    }

    #[test]
    fn invalid_patches_are_refused_with_the_reason() {
        let applied = Some(now() - TimeDelta::days(2));
        let mut p = sample(applied);
        p.cves[0].id = "CVE-26-1".into();
        assert_eq!(
            p.validate(now()),
            Err(InvalidPatch::CveId("CVE-26-1".into()))
        );
        let mut p = sample(applied);
        p.cves.push(p.cves[0].clone());
        assert_eq!(
            p.validate(now()),
            Err(InvalidPatch::DuplicateCve("CVE-2026-12345".into()))
        );
        let mut p = sample(applied);
        p.to_version = p.from_version.clone();
        assert!(matches!(
            p.validate(now()),
            Err(InvalidPatch::SameVersion(_))
        ));
        let mut p = sample(applied);
        p.artifacts.clear();
        assert_eq!(p.validate(now()), Err(InvalidPatch::NoArtifacts));
        let mut p = sample(applied);
        p.artifacts[0].sha256 = "AB".repeat(32);
        assert!(matches!(
            p.validate(now()),
            Err(InvalidPatch::Digest { .. })
        ));
        let mut p = sample(Some(now() + TimeDelta::hours(1)));
        p.artifacts = sample(applied).artifacts;
        assert!(matches!(
            p.validate(now()),
            Err(InvalidPatch::AppliedInFuture(_))
        ));
        let mut p = sample(Some(Utc.with_ymd_and_hms(2026, 9, 30, 0, 0, 0).unwrap()));
        p.artifacts = sample(applied).artifacts;
        assert!(matches!(
            p.validate(now()),
            Err(InvalidPatch::ReleaseAfter { .. })
        ));
        let mut p = sample(None);
        p.golden_image = Some(GoldenImage {
            kernel_sha256: "cd".repeat(32),
            initrd_sha256: None,
        });
        assert_eq!(p.validate(now()), Err(InvalidPatch::GoldenImagePending));
        let mut p = sample(applied);
        p.component = Component::Vmm;
        p.golden_image = Some(GoldenImage {
            kernel_sha256: "cd".repeat(32),
            initrd_sha256: None,
        });
        assert_eq!(p.validate(now()), Err(InvalidPatch::GoldenImageComponent));
        let mut p = sample(applied);
        p.approver = " ".into();
        assert_eq!(
            p.validate(now()),
            Err(InvalidPatch::Text { field: "approver" })
        );
        let unknown = r#"{"component":"vmm","from_version":"1","to_version":"2","approver":"x","colour":"red"}"#;
        assert!(serde_json::from_str::<NewPatch>(unknown).is_err());
    }

    #[test]
    fn time_to_patch_per_cve() {
        // Released 1 Oct; pending recorded 2 Oct; applied 5 Nov = 35 days.
        let pending = sample(None)
            .into_record("a", Utc.with_ymd_and_hms(2026, 10, 2, 0, 0, 0).unwrap())
            .unwrap();
        let applied_at = Utc.with_ymd_and_hms(2026, 11, 5, 9, 0, 0).unwrap();
        let applied = sample(Some(applied_at))
            .into_record("a", applied_at)
            .unwrap();
        let recs = vec![pending.clone(), applied.clone()];
        let s = cve_statuses(&recs, now());
        assert_eq!(s.len(), 1);
        assert_eq!(s[0].applied_at, Some(applied_at));
        assert_eq!(s[0].days, 35);
        assert_eq!(s[0].patch_id, applied.id);
        // As of 20 Oct the CVE was pending for 19 days.
        let s = cve_statuses(&recs, Utc.with_ymd_and_hms(2026, 10, 20, 0, 0, 0).unwrap());
        assert_eq!(
            (s[0].applied_at, s[0].days, s[0].patch_id.as_str()),
            (None, 19, pending.id.as_str())
        );
    }

    #[test]
    fn ledger_round_trips_through_audit_entries() {
        let rec = sample(Some(now() - TimeDelta::days(1)))
            .into_record("alice", now())
            .unwrap();
        let new = rec.to_entry(
            Actor::user("alice", sakshi_audit::AuthMethod::Password),
            Origin::Internal,
        );
        assert!(new.validate().is_ok());
        let entry = Entry::from_new(new, 3, now());
        let canonical = entry.canonical().unwrap();
        let back = Entry::decode(canonical.as_bytes()).unwrap();
        let ledger = ledger_from_entries([&back]).unwrap();
        assert_eq!(ledger, vec![(3, rec)]);
        let mut bad = back.clone();
        bad.details = serde_json::json!({"patch": {"id": 1}});
        assert_eq!(ledger_from_entries([&bad]).unwrap_err().seq, 3);
    }

    #[test]
    fn golden_image_updates_the_policy() {
        let mut p = sample(Some(now() - TimeDelta::days(1)));
        p.golden_image = Some(GoldenImage {
            kernel_sha256: "cd".repeat(32),
            initrd_sha256: Some("ef".repeat(32)),
        });
        let rec = p.into_record("alice", now()).unwrap();
        let mut policy = Policy::default();
        assert_eq!(rec.approve_into(&mut policy), 2);
        let k: Sha256Digest = "cd".repeat(32).parse().unwrap();
        assert!(policy.kernels.contains_key(&k));
        assert_eq!(policy.initrds.len(), 1);
    }
}
