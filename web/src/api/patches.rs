//! `/api/v1/patches`: the patch ledger and per-CVE time-to-patch (PCI DSS 6.3.3).
//!
//! The ledger lives in the audit log itself: recording a patch appends one `patch.record`
//! entry (target `patch:<id>`, `details.patch` = the `PatchRecord`), exactly the shape
//! `sakshi_reports::load_ledger` reads back, so it is hash-chained, signed, shipped and
//! exported like every other entry. A record that names a golden image (an applied guest
//! kernel or image patch) also approves it into measured boot's golden set, audited as
//! `image.approve`.

use crate::actions::AuditAction;
use crate::backend::evidence::patch_deadline_days;
use crate::backend::{AuditCursor, AuditFilter, Outcome};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use sakshi_reports::{CveStatus, InvalidPatch, NewPatch, PatchRecord, cve_statuses};
use serde::Serialize;
use serde_json::{Value, json};

/// One ledger record with its audit entry.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerRecord {
    /// The `patch.record` entry.
    pub seq: u64,
    /// The record.
    #[serde(flatten)]
    pub record: PatchRecord,
}

/// Where one CVE stands against PCI DSS 6.3.3.
#[derive(Debug, Clone, Serialize)]
pub struct CveView {
    /// The library's status (days from release to application, or to now).
    #[serde(flatten)]
    pub status: CveStatus,
    /// The allowed days for its severity, if any.
    pub deadline_days: Option<u32>,
    /// `patched_in_time`, `patched_late`, `pending`, `overdue` or `no_deadline`.
    pub sla: &'static str,
    /// True when this CVE fails PCI DSS 6.3.3 (patched late or pending past its deadline).
    pub fails_6_3_3: bool,
}

/// The ledger and CVE statuses.
#[derive(Debug, Clone, Serialize)]
pub struct Ledger {
    /// Time the statuses are computed for.
    pub as_of: DateTime<Utc>,
    /// Records, oldest first.
    pub records: Vec<LedgerRecord>,
    /// One status per CVE and component.
    pub cves: Vec<CveView>,
    /// CVEs failing PCI DSS 6.3.3.
    pub failing: usize,
}

/// Classifies one CVE status against its deadline.
pub fn classify(s: CveStatus) -> CveView {
    let deadline_days = patch_deadline_days(s.severity);
    let (sla, fails) = match (deadline_days, s.applied_at.is_some()) {
        (None, _) => ("no_deadline", false),
        (Some(d), true) if s.days <= i64::from(d) => ("patched_in_time", false),
        (Some(_), true) => ("patched_late", true),
        (Some(d), false) if s.days <= i64::from(d) => ("pending", false),
        (Some(_), false) => ("overdue", true),
    };
    CveView {
        status: s,
        deadline_days,
        sla,
        fails_6_3_3: fails,
    }
}

/// Builds the ledger view from records as of `now`.
pub fn ledger_view(records: Vec<LedgerRecord>, now: DateTime<Utc>) -> Ledger {
    let plain: Vec<PatchRecord> = records.iter().map(|r| r.record.clone()).collect();
    let cves: Vec<CveView> = cve_statuses(&plain, now)
        .into_iter()
        .map(classify)
        .collect();
    Ledger {
        as_of: now,
        failing: cves.iter().filter(|c| c.fails_6_3_3).count(),
        records,
        cves,
    }
}

/// A stored `patch.record` entry does not hold a patch record.
#[derive(Debug, thiserror::Error)]
#[error("audit entry {seq} is a patch.record without a valid details.patch")]
pub struct BadLedgerEntry {
    seq: u64,
    #[source]
    source: serde_json::Error,
}

/// Reads every successful `patch.record` entry through the audit port, oldest first. The read
/// is audited (`audit.read`, `details.kind = "patch_ledger"`).
pub(crate) async fn load(app: &AppState, ctx: &Ctx) -> Result<Ledger, ApiError> {
    let records = app
        .blocking(|i| -> Result<Vec<LedgerRecord>, ApiError> {
            let filter = AuditFilter {
                action: Some("patch.record".to_owned()),
                outcome: Some(Outcome::Success),
                ..AuditFilter::default()
            };
            let mut out = Vec::new();
            let mut cursor = AuditCursor::Newest;
            loop {
                let page = i.audit.query(&filter, cursor, 500)?;
                for e in page.entries {
                    let record = serde_json::from_value::<PatchRecord>(
                        e.details.get("patch").cloned().unwrap_or(Value::Null),
                    )
                    .map_err(|source| {
                        ApiError::internal(BadLedgerEntry {
                            seq: e.index,
                            source,
                        })
                    })?;
                    out.push(LedgerRecord {
                        seq: e.index,
                        record,
                    });
                }
                match page.next_before {
                    Some(b) => cursor = AuditCursor::Before(b),
                    None => break,
                }
            }
            out.reverse();
            Ok(out)
        })
        .await??;
    let view = ledger_view(records, Utc::now());
    app.audit(
        ctx,
        AuditAction::AuditRead,
        "audit_log:patch.record",
        Outcome::Success,
        json!({ "kind": "patch_ledger", "records": view.records.len(), "failing_6_3_3": view.failing }),
    )
    .await?;
    Ok(view)
}

/// `GET /api/v1/patches`
pub async fn list(State(app): State<AppState>, ctx: Ctx) -> Result<Json<Ledger>, ApiError> {
    Ok(Json(load(&app, &ctx).await?))
}

/// The field an invalid submission is blamed on.
pub fn invalid_field(e: &InvalidPatch) -> String {
    match e {
        InvalidPatch::Version { field } | InvalidPatch::Text { field } => (*field).to_owned(),
        InvalidPatch::SameVersion(_) => "to_version".to_owned(),
        InvalidPatch::CveId(_)
        | InvalidPatch::DuplicateCve(_)
        | InvalidPatch::ReleaseAfter { .. } => "cves".to_owned(),
        InvalidPatch::TooMany { what, .. } => (*what).to_owned(),
        InvalidPatch::AppliedInFuture(_) => "applied_at".to_owned(),
        InvalidPatch::NoArtifacts | InvalidPatch::Digest { .. } => "artifacts".to_owned(),
        InvalidPatch::GoldenImageComponent | InvalidPatch::GoldenImagePending => {
            "golden_image".to_owned()
        }
        InvalidPatch::GoldenDigest { field } => format!("golden_image.{field}"),
    }
}

/// Records a patch for `ctx` (and approves its golden image); shared by the API and the CLI.
pub(crate) async fn record(app: &AppState, ctx: &Ctx, new: NewPatch) -> Result<Value, ApiError> {
    let record = new
        .into_record(&ctx.actor(), Utc::now())
        .map_err(|e| ApiError::invalid(invalid_field(&e), e.to_string()))?;
    let details = json!({ "patch": record });
    let seq = app
        .audit(
            ctx,
            AuditAction::PatchRecord,
            format!("patch:{}", record.id),
            Outcome::Success,
            details,
        )
        .await?;
    let golden = match &record.golden_image {
        None => Value::Null,
        Some(g) => {
            let approved = app
                .inner
                .evidence
                .get()
                .and_then(|svc| svc.approve(&record));
            let (outcome, extra) = match &approved {
                Some(Ok(n)) => (Outcome::Success, json!({ "digests_added": n })),
                Some(Err(e)) => (
                    Outcome::Failure,
                    json!({ "error": crate::ops::error_chain(e) }),
                ),
                None => (
                    Outcome::Failure,
                    json!({ "error": "this appliance has no measured-boot golden set to update" }),
                ),
            };
            let mut d = json!({ "patch": record.id, "kernel_sha256": g.kernel_sha256,
                                "initrd_sha256": g.initrd_sha256, "approver": record.approver });
            if let (Some(o), Some(e)) = (d.as_object_mut(), extra.as_object()) {
                o.extend(e.clone());
            }
            app.audit(
                ctx,
                AuditAction::ImageApprove,
                format!("image:{}", g.kernel_sha256),
                outcome,
                d,
            )
            .await?;
            let added = match approved {
                Some(Ok(n)) => Some(n),
                Some(Err(e)) => return Err(ApiError::internal(e)),
                None => None,
            };
            json!({ "approved": added.is_some(), "digests_added": added.unwrap_or(0) })
        }
    };
    let recorded = LedgerRecord { seq, record };
    Ok(json!({ "record": recorded, "golden_set": golden }))
}

/// `POST /api/v1/patches`: body is a `NewPatch` (unknown fields refused).
pub async fn create(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiJson(new): ApiJson<NewPatch>,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    Ok((StatusCode::CREATED, Json(record(&app, &ctx, new).await?)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::{NaiveDate, TimeZone};
    use sakshi_reports::{Component, Severity};

    fn status(severity: Severity, applied: bool, days: i64) -> CveStatus {
        CveStatus {
            cve: "CVE-2026-1234".into(),
            component: Component::GuestKernel,
            severity,
            vendor_released: NaiveDate::from_ymd_opt(2026, 1, 1).unwrap(),
            applied_at: applied.then(|| Utc.with_ymd_and_hms(2026, 2, 1, 0, 0, 0).unwrap()),
            patch_id: "patch-1".into(),
            days,
        }
    }

    #[test]
    fn critical_cves_fail_6_3_3_after_thirty_days() {
        let c = |applied, days| classify(status(Severity::Critical, applied, days));
        assert_eq!(c(true, 30).sla, "patched_in_time");
        assert!(!c(true, 30).fails_6_3_3);
        assert_eq!(c(true, 31).sla, "patched_late");
        assert!(c(true, 31).fails_6_3_3);
        assert_eq!(c(false, 10).sla, "pending");
        assert!(!c(false, 10).fails_6_3_3);
        assert_eq!(c(false, 45).sla, "overdue");
        assert!(c(false, 45).fails_6_3_3);
        let low = classify(status(Severity::Low, false, 400));
        assert_eq!((low.sla, low.fails_6_3_3), ("no_deadline", false));
    }

    #[test]
    fn invalid_patches_name_their_field() {
        assert_eq!(
            invalid_field(&InvalidPatch::Version {
                field: "from_version"
            }),
            "from_version"
        );
        assert_eq!(invalid_field(&InvalidPatch::CveId("x".into())), "cves");
        assert_eq!(
            invalid_field(&InvalidPatch::GoldenDigest {
                field: "kernel_sha256"
            }),
            "golden_image.kernel_sha256"
        );
    }
}
