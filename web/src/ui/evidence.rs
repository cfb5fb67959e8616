//! Evidence page (bundle download and per-framework reports, for roles with
//! `evidence.export`) and the patch ledger page.

use super::{Chrome, UiError, UiForm, UiResult, fmt_time, render, url_encode};
use crate::api::evidence::{export_response, period, report_html};
use crate::api::patches::load;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use chrono::{DateTime, NaiveDate, TimeDelta, Utc};
use sakshi_reports::Scope;
use serde::Deserialize;

/// The period fields as typed (blank = the previous UTC day).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct PeriodFields {
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    scope: String,
}

/// Parses an RFC 3339 time or a `YYYY-MM-DD` date (midnight UTC).
pub fn parse_when(field: &'static str, s: &str) -> Result<DateTime<Utc>, ApiError> {
    let s = s.trim();
    if let Ok(d) = DateTime::parse_from_rfc3339(s) {
        return Ok(d.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|d| d.and_utc())
        .ok_or_else(|| ApiError::BadRequest {
            field: Some(field.to_owned()),
            detail: format!("{field}: expected an RFC 3339 time or a YYYY-MM-DD date"),
        })
}

fn yesterday() -> (String, String) {
    let today = Utc::now().date_naive();
    let y = today - TimeDelta::days(1);
    (y.to_string(), today.to_string())
}

impl PeriodFields {
    /// Blank fields get the previous UTC day and scope `all`.
    fn filled(mut self) -> PeriodFields {
        let (y, t) = yesterday();
        if self.from.trim().is_empty() {
            self.from = y;
        }
        if self.to.trim().is_empty() {
            self.to = t;
        }
        if self.scope.trim().is_empty() {
            self.scope = "all".to_owned();
        }
        self
    }

    fn parse(&self) -> Result<(sakshi_reports::Period, Scope), ApiError> {
        let from = parse_when("from", &self.from)?;
        let to = parse_when("to", &self.to)?;
        let scope = self
            .scope
            .trim()
            .parse::<Scope>()
            .map_err(|e| ApiError::BadRequest {
                field: Some("scope".to_owned()),
                detail: format!("scope: {e}"),
            })?;
        Ok((period(from, to, Utc::now())?, scope))
    }

    fn query(&self) -> String {
        format!(
            "from={}&to={}&scope={}",
            url_encode(self.from.trim()),
            url_encode(self.to.trim()),
            url_encode(self.scope.trim())
        )
    }
}

struct FrameworkLink {
    id: String,
    name: String,
    href: String,
}

#[derive(Template)]
#[template(path = "evidence.html")]
struct EvidencePage {
    c: Chrome,
    f: PeriodFields,
    frameworks: Vec<FrameworkLink>,
    hostname: String,
    error: Option<String>,
}

fn evidence_page(app: &AppState, ctx: &Ctx, f: PeriodFields, error: Option<ApiError>) -> Response {
    let q = f.query();
    let (frameworks, hostname) = match app.inner.evidence.get() {
        Some(svc) => (
            svc.frameworks()
                .into_iter()
                .map(|(id, name)| FrameworkLink {
                    href: format!("/evidence/reports/{}?{q}", url_encode(&id)),
                    id,
                    name,
                })
                .collect(),
            svc.hostname().to_owned(),
        ),
        None => (Vec::new(), String::new()),
    };
    let status = error.as_ref().map_or(StatusCode::OK, ApiError::status);
    render(
        status,
        &EvidencePage {
            c: Chrome::new(ctx, "evidence"),
            f,
            frameworks,
            hostname,
            error: error.map(|e| e.problem().detail),
        },
    )
}

/// `GET /evidence[?from=&to=&scope=]`
pub async fn page(
    State(app): State<AppState>,
    ctx: Ctx,
    Query(f): Query<PeriodFields>,
) -> Response {
    evidence_page(&app, &ctx, f.filled(), None)
}

/// The download form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportForm {
    #[allow(dead_code)]
    csrf: String,
    #[serde(default)]
    from: String,
    #[serde(default)]
    to: String,
    #[serde(default)]
    scope: String,
}

/// `POST /evidence`: the bundle download (same as `POST /api/v1/evidence`).
pub async fn export(
    State(app): State<AppState>,
    ctx: Ctx,
    UiForm(form): UiForm<ExportForm>,
) -> Result<Response, UiError> {
    let f = PeriodFields {
        from: form.from,
        to: form.to,
        scope: form.scope,
    }
    .filled();
    let (period, scope) = match f.parse() {
        Ok(p) => p,
        Err(e) => return Ok(evidence_page(&app, &ctx, f, Some(e))),
    };
    match export_response(&app, &ctx, period, scope).await {
        Ok(r) => Ok(r),
        Err(e @ (ApiError::BadRequest { .. } | ApiError::Conflict(_))) => {
            Ok(evidence_page(&app, &ctx, f, Some(e)))
        }
        Err(e) => Err(e).ui(&ctx),
    }
}

/// `GET /evidence/reports/{framework}?from=&to=&scope=`: the printable report itself.
pub async fn report(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(framework): Path<String>,
    Query(f): Query<PeriodFields>,
) -> Result<Response, UiError> {
    let f = f.filled();
    let (period, scope) = match f.parse() {
        Ok(p) => p,
        Err(e) => return Ok(evidence_page(&app, &ctx, f, Some(e))),
    };
    let (html, _) = report_html(&app, &ctx, framework, period, scope)
        .await
        .ui(&ctx)?;
    Ok(Html(html).into_response())
}

struct RecordRow {
    seq: u64,
    id: String,
    component: String,
    versions: String,
    cves: String,
    applied: String,
    approver: String,
    recorded: String,
    golden: bool,
}

struct CveRow {
    cve: String,
    component: String,
    severity: String,
    released: String,
    applied: String,
    days: i64,
    deadline: String,
    sla: &'static str,
    label: &'static str,
    class: &'static str,
    fails: bool,
}

#[derive(Template)]
#[template(path = "patches.html")]
struct PatchesPage {
    c: Chrome,
    records: Vec<RecordRow>,
    cves: Vec<CveRow>,
    failing: usize,
    as_of: String,
}

/// `GET /patches`
pub async fn patches(State(app): State<AppState>, ctx: Ctx) -> Result<Response, UiError> {
    let ledger = load(&app, &ctx).await.ui(&ctx)?;
    let records = ledger
        .records
        .iter()
        .map(|r| {
            let p = &r.record;
            RecordRow {
                seq: r.seq,
                id: p.id.clone(),
                component: p.component.as_str().to_owned(),
                versions: format!("{} → {}", p.from_version, p.to_version),
                cves: p
                    .cves
                    .iter()
                    .map(|c| format!("{} ({})", c.id, c.severity.as_str()))
                    .collect::<Vec<_>>()
                    .join(", "),
                applied: p
                    .applied_at
                    .map_or_else(|| "pending".to_owned(), |t| fmt_time(&t.to_rfc3339())),
                approver: p.approver.clone(),
                recorded: format!(
                    "{} by {}",
                    fmt_time(&p.recorded_at.to_rfc3339()),
                    p.recorded_by
                ),
                golden: p.golden_image.is_some(),
            }
        })
        .collect();
    let cves = ledger
        .cves
        .iter()
        .map(|c| {
            let (label, class) = match c.sla {
                "patched_in_time" => ("patched in time", "outcome-success"),
                "patched_late" => ("patched late: fails PCI DSS 6.3.3", "outcome-denied"),
                "pending" => ("pending, within deadline", "outcome-failure"),
                "overdue" => ("OVERDUE: fails PCI DSS 6.3.3", "outcome-denied"),
                _ => ("no deadline for this severity", "outcome-success"),
            };
            CveRow {
                cve: c.status.cve.clone(),
                component: c.status.component.as_str().to_owned(),
                severity: c.status.severity.as_str().to_owned(),
                released: c.status.vendor_released.to_string(),
                applied: c
                    .status
                    .applied_at
                    .map_or_else(|| "-".to_owned(), |t| fmt_time(&t.to_rfc3339())),
                days: c.status.days,
                deadline: c
                    .deadline_days
                    .map_or_else(|| "-".to_owned(), |d| format!("{d} days")),
                sla: c.sla,
                label,
                class,
                fails: c.fails_6_3_3,
            }
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &PatchesPage {
            c: Chrome::new(&ctx, "patches"),
            records,
            cves,
            failing: ledger.failing,
            as_of: fmt_time(&ledger.as_of.to_rfc3339()),
        },
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_and_times_parse_and_bad_ones_name_the_field() {
        assert_eq!(
            parse_when("from", "2026-11-01").unwrap().to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        assert_eq!(
            parse_when("to", "2026-11-01T05:30:00+05:30")
                .unwrap()
                .to_rfc3339(),
            "2026-11-01T00:00:00+00:00"
        );
        match parse_when("to", "yesterday") {
            Err(ApiError::BadRequest { field, .. }) => assert_eq!(field.as_deref(), Some("to")),
            other => panic!("unexpected {other:?}"),
        }
    }
}
