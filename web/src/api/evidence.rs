//! `/api/v1/evidence` (signed evidence bundles) and `/api/v1/reports/{framework}` (printable
//! compliance reports). Both are computed by `sakshi-reports` over the audit log on a blocking
//! thread; the bundle is streamed from an unlinked temporary file, never held in memory. Every
//! export and report is audited as `evidence.export` (`details.kind` = `bundle` or `report`),
//! success or failure, before anything is sent.

use crate::actions::AuditAction;
use crate::backend::Outcome;
use crate::backend::evidence::{EvidenceExportError, EvidenceService, ExportRequest, ReportError};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::AppState;
use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use sakshi_reports::{ExportError, Period, Scope, VmRecord};
use serde::Deserialize;
use serde_json::json;
use std::sync::Arc;

/// `POST /api/v1/evidence` body.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EvidenceRequest {
    /// Start of the period (RFC 3339, inclusive).
    pub from: DateTime<Utc>,
    /// End of the period (RFC 3339, exclusive).
    pub to: DateTime<Utc>,
    /// `all` (default) or `vm:<id>`.
    #[serde(default = "scope_all")]
    pub scope: Scope,
}

fn scope_all() -> Scope {
    Scope::All
}

/// `GET /api/v1/reports/{framework}` query.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportQuery {
    /// Start of the period (RFC 3339, inclusive).
    pub from: DateTime<Utc>,
    /// End of the period (RFC 3339, exclusive).
    pub to: DateTime<Utc>,
    /// `all` (default) or `vm:<id>`.
    #[serde(default = "scope_all")]
    pub scope: Scope,
}

/// The period `[from, to)`, refused (400, naming the field) when empty or in the future.
pub fn period(
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Period, ApiError> {
    if from >= now {
        return Err(ApiError::BadRequest {
            field: Some("from".to_owned()),
            detail: "from: the period must start in the past".to_owned(),
        });
    }
    Period::new(from, to).map_err(|e| ApiError::BadRequest {
        field: Some("to".to_owned()),
        detail: format!("to: {e}"),
    })
}

/// The evidence service, or 409 when this appliance runs without one (no signing key or TPM).
pub(crate) fn service(app: &AppState) -> Result<Arc<EvidenceService>, ApiError> {
    app.inner.evidence.get().cloned().ok_or_else(|| {
        ApiError::Conflict(
            "evidence is not available: the appliance has no evidence service".to_owned(),
        )
    })
}

/// The VM inventory as the reports see it.
pub(crate) async fn inventory(app: &AppState) -> Result<Vec<VmRecord>, ApiError> {
    let list = app.blocking(|i| i.vms.list()).await??;
    Ok(list
        .into_iter()
        .map(|v| VmRecord {
            created: DateTime::parse_from_rfc3339(&v.created_at)
                .map(|d| d.with_timezone(&Utc))
                .unwrap_or_else(|_| Utc::now()),
            id: v.id,
            state: v.state.as_str().to_owned(),
            kernel_sha256: Some(v.kernel_sha256),
            initrd_sha256: None,
            vcpus: u32::from(v.vcpus),
            memory_mib: u64::from(v.memory_mib),
            labels: [("name".to_owned(), v.name)].into_iter().collect(),
        })
        .collect())
}

fn export_api_error(e: EvidenceExportError) -> ApiError {
    match e {
        // The log failed its own verification: the caller must know, and nothing internal
        // is revealed by saying so.
        EvidenceExportError::Export(ExportError::Integrity(_)) => ApiError::Conflict(
            "the audit log does not verify for this period; run `sakshi audit verify`".to_owned(),
        ),
        other => ApiError::internal(other),
    }
}

/// Exports a bundle for `ctx` and streams it back; audited. Shared by the API and the dashboard.
pub(crate) async fn export_response(
    app: &AppState,
    ctx: &Ctx,
    period: Period,
    scope: Scope,
) -> Result<Response, ApiError> {
    let svc = service(app)?;
    let inventory = inventory(app).await?;
    let req = ExportRequest {
        period,
        scope: scope.clone(),
        requested_by: ctx.actor(),
        inventory,
        siem: app.siem_status(),
        now: Utc::now(),
    };
    let exported = tokio::task::spawn_blocking(move || svc.export(req)).await?;
    let mut details = json!({
        "kind": "bundle",
        "from": period.from().to_rfc3339(),
        "to": period.to().to_rfc3339(),
        "scope": scope.to_string(),
    });
    let (outcome, target) = match &exported {
        Ok(b) => {
            details["file"] = b.file_name.clone().into();
            details["bytes"] = b.bytes.into();
            details["entries"] = b.entries.into();
            details["quote_nonce"] = b.quote_nonce.clone().into();
            details["results"] = b
                .results
                .iter()
                .map(|(id, pass, review, fail)| {
                    json!({ "framework": id, "pass": pass, "needs_review": review, "fail": fail })
                })
                .collect();
            (Outcome::Success, format!("evidence:{}", b.file_name))
        }
        Err(e) => {
            details["error"] = crate::ops::error_chain(e).into();
            (Outcome::Failure, "evidence:bundle".to_owned())
        }
    };
    app.audit(ctx, AuditAction::EvidenceExport, target, outcome, details)
        .await?;
    let b = exported.map_err(export_api_error)?;
    let file = tokio::fs::File::from_std(b.file);
    let body = Body::from_stream(tokio_util::io::ReaderStream::with_capacity(file, 64 * 1024));
    let mut resp = (StatusCode::OK, body).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/gzip"),
    );
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(b.bytes));
    // The name is `[A-Za-z0-9._-]` only (bundle_file_name), so it needs no quoting rules.
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{}\"", b.file_name)) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    Ok(resp)
}

/// `POST /api/v1/evidence`: a signed evidence bundle (tar.gz) for the period and scope.
pub async fn export(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<EvidenceRequest>,
) -> Result<Response, ApiError> {
    let period = period(req.from, req.to, Utc::now())?;
    export_response(&app, &ctx, period, req.scope).await
}

/// Renders one framework's report for `ctx`; audited. Shared by the API and the dashboard.
pub(crate) async fn report_html(
    app: &AppState,
    ctx: &Ctx,
    framework: String,
    period: Period,
    scope: Scope,
) -> Result<(String, String), ApiError> {
    let svc = service(app)?;
    let inventory = inventory(app).await?;
    let actor = ctx.actor();
    let (fw, sc) = (framework.clone(), scope.clone());
    let rendered = tokio::task::spawn_blocking(move || {
        svc.report(&fw, period, sc, &actor, inventory, Utc::now())
    })
    .await?;
    if let Err(ReportError::UnknownFramework { .. }) = &rendered {
        // Asking for a framework that does not exist reads nothing: not audited, 404.
        return Err(rendered
            .err()
            .map(|e| ApiError::NotFound(e.to_string()))
            .unwrap_or_else(|| ApiError::NotFound(framework)));
    }
    let mut details = json!({
        "kind": "report",
        "framework": framework,
        "from": period.from().to_rfc3339(),
        "to": period.to().to_rfc3339(),
        "scope": scope.to_string(),
    });
    let outcome = match &rendered {
        Ok((_, r)) => {
            details["framework"] = r.framework.id.clone().into();
            details["pass"] = r.summary.pass.into();
            details["needs_review"] = r.summary.needs_review.into();
            details["fail"] = r.summary.fail.into();
            Outcome::Success
        }
        Err(e) => {
            details["error"] = crate::ops::error_chain(e).into();
            Outcome::Failure
        }
    };
    let target = format!(
        "evidence:report-{}",
        details["framework"].as_str().unwrap_or("unknown")
    );
    app.audit(ctx, AuditAction::EvidenceExport, target, outcome, details)
        .await?;
    let (html, result) = rendered.map_err(|e| match e {
        ReportError::Assess(ExportError::Integrity(_)) => ApiError::Conflict(
            "the audit log does not verify for this period; run `sakshi audit verify`".to_owned(),
        ),
        other => ApiError::internal(other),
    })?;
    let name = format!(
        "sakshi-report_{}_{}.html",
        result.framework.id,
        period.file_stem()
    );
    Ok((html, name))
}

/// `GET /api/v1/reports/{framework}?from=&to=[&scope=]`: the printable HTML report.
pub async fn report(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiPath(framework): ApiPath<String>,
    ApiQuery(q): ApiQuery<ReportQuery>,
) -> Result<Response, ApiError> {
    let period = period(q.from, q.to, Utc::now())?;
    let (html, name) = report_html(&app, &ctx, framework, period, q.scope).await?;
    let mut resp = (StatusCode::OK, html).into_response();
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("inline; filename=\"{name}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    Ok(resp)
}
