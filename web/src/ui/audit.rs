//! Audit log browser: filters, keyset pagination, per-entry inclusion proof, verification.

use super::{Chrome, UiError, UiForm, UiResult, fmt_time, render, url_encode};
use crate::actions::AuditAction;
use crate::api::types::AuditQueryParams;
use crate::backend::{AuditEntryView, InclusionProofView, Outcome, VerifyReport};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

/// The filter form (all text, blanks ignored).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UiAuditQuery {
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
    #[serde(default)]
    target: String,
    #[serde(default)]
    outcome: String,
    #[serde(default)]
    since: String,
    #[serde(default)]
    until: String,
    #[serde(default)]
    before: String,
    #[serde(default)]
    after: String,
    #[serde(default)]
    limit: String,
}

fn opt(s: &str) -> Option<String> {
    Some(s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn num<T: std::str::FromStr>(field: &'static str, s: &str) -> Result<Option<T>, ApiError> {
    opt(s)
        .map(|v| {
            v.parse::<T>()
                .map_err(|_| ApiError::invalid(field, "must be a whole number"))
        })
        .transpose()
}

impl UiAuditQuery {
    fn to_params(&self) -> Result<AuditQueryParams, ApiError> {
        Ok(AuditQueryParams {
            actor: opt(&self.actor),
            action: opt(&self.action),
            target: opt(&self.target),
            outcome: opt(&self.outcome),
            since: opt(&self.since),
            until: opt(&self.until),
            before: num("before", &self.before)?,
            after: num("after", &self.after)?,
            limit: num("limit", &self.limit)?,
        })
    }

    /// The filter part of the query string, for pagination links.
    fn filter_qs(&self) -> String {
        let mut qs = String::new();
        for (k, v) in [
            ("actor", &self.actor),
            ("action", &self.action),
            ("target", &self.target),
            ("outcome", &self.outcome),
            ("since", &self.since),
            ("until", &self.until),
            ("limit", &self.limit),
        ] {
            if !v.trim().is_empty() {
                qs.push_str(&format!("&{k}={}", url_encode(v.trim())));
            }
        }
        qs
    }
}

struct EntryRow {
    index: u64,
    time: String,
    actor: String,
    origin: String,
    action: String,
    target: String,
    outcome: &'static str,
}

impl From<AuditEntryView> for EntryRow {
    fn from(e: AuditEntryView) -> Self {
        EntryRow {
            index: e.index,
            time: row_time(&e.time),
            actor: e.actor,
            origin: e.origin,
            action: e.action,
            target: e.target,
            outcome: e.outcome.as_str(),
        }
    }
}

/// `YYYY-MM-DD HH:MM:SS` of an entry time. The log writes UTC as
/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z`: that is cut to seconds without parsing (a page shows
/// many rows); anything else goes through [`fmt_time`].
fn row_time(t: &str) -> String {
    let b = t.as_bytes();
    let utc_shape = b.len() >= 20
        && b.last() == Some(&b'Z')
        && b.get(10) == Some(&b'T')
        && matches!(b.get(19), Some(b'.' | b'Z'))
        && b[..19].iter().enumerate().all(|(i, c)| match i {
            4 | 7 => *c == b'-',
            10 => true,
            13 | 16 => *c == b':',
            _ => c.is_ascii_digit(),
        });
    if utc_shape {
        format!("{} {}", &t[..10], &t[11..19])
    } else {
        fmt_time(t)
    }
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPageT {
    c: Chrome,
    q: UiAuditQuery,
    entries: Vec<EntryRow>,
    newer: Option<String>,
    older: Option<String>,
    error: Option<String>,
    verify: Option<VerifyReport>,
}

async fn audit_list(
    app: &AppState,
    ctx: &Ctx,
    q: UiAuditQuery,
    verify: Option<VerifyReport>,
) -> Result<Response, UiError> {
    let result = match q.to_params() {
        Ok(p) => crate::ops::audit_page(app, ctx, &p, crate::ops::EntryForm::Summary).await,
        Err(e) => Err(e),
    };
    let (entries, newer, older, error, status) = match result {
        Ok(page) => {
            let fq = q.filter_qs();
            (
                page.entries.into_iter().map(EntryRow::from).collect(),
                page.prev_after.map(|a| format!("/audit?after={a}{fq}")),
                page.next_before.map(|b| format!("/audit?before={b}{fq}")),
                None,
                StatusCode::OK,
            )
        }
        Err(e @ (ApiError::Invalid { .. } | ApiError::BadRequest { .. })) => {
            let status = e.status();
            (Vec::new(), None, None, Some(e.problem().detail), status)
        }
        Err(e) => return Err(e).ui(ctx),
    };
    Ok(render(
        status,
        &AuditPageT {
            c: Chrome::new(ctx, "audit"),
            q,
            entries,
            newer,
            older,
            error,
            verify,
        },
    ))
}

/// `GET /audit`
pub async fn list(
    State(app): State<AppState>,
    ctx: Ctx,
    Query(q): Query<UiAuditQuery>,
) -> Result<Response, UiError> {
    audit_list(&app, &ctx, q, None).await
}

#[derive(Template)]
#[template(path = "audit_entry.html")]
struct EntryPage {
    c: Chrome,
    e: AuditEntryView,
    time: String,
    details: String,
    proof: InclusionProofView,
}

/// `GET /audit/{index}`
pub async fn entry(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(index): Path<u64>,
) -> Result<Response, UiError> {
    // The entry and its proof against the current tree in one trip to the blocking pool.
    let (e, proof) = app
        .blocking(move |i| -> Result<_, ApiError> {
            let e = i.audit.entry(index)?;
            let size = i.audit.size()?;
            if index >= size {
                return Err(ApiError::invalid(
                    "tree_size",
                    format!("must be greater than the entry index {index}"),
                ));
            }
            Ok((e, i.audit.inclusion_proof(index, size)?))
        })
        .await
        .ui(&ctx)?
        .ui(&ctx)?;
    // Producing the proof is audited (as a read of this entry), as the API's proof read is.
    app.audit(
        &ctx,
        AuditAction::AuditProof,
        format!("audit_log:{index}"),
        Outcome::Success,
        json!({ "kind": "inclusion_proof", "tree_size": proof.tree_size }),
    )
    .await
    .ui(&ctx)?;
    Ok(render(
        StatusCode::OK,
        &EntryPage {
            c: Chrome::new(&ctx, "audit"),
            time: fmt_time(&e.time),
            details: serde_json::to_string_pretty(&e.details).unwrap_or_default(),
            proof,
            e,
        },
    ))
}

/// `POST /audit/verify`
pub async fn verify(
    State(app): State<AppState>,
    ctx: Ctx,
    UiForm(_f): UiForm<super::ButtonForm>,
) -> Result<Response, UiError> {
    let report = crate::api::audit::run_verify(&app, &ctx).await.ui(&ctx)?;
    audit_list(&app, &ctx, UiAuditQuery::default(), Some(report)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_times_match_the_full_formatting() {
        for t in [
            "2026-11-27T03:49:33.902197Z",
            "2026-11-27T03:49:33Z",
            "2026-01-02T23:59:59.5Z",
            "2026-11-27T05:49:33+02:00",
            "2026-11-27T03:49:33.902197",
            "not a time",
            "",
        ] {
            assert_eq!(row_time(t), fmt_time(t), "{t:?}");
        }
        assert_eq!(row_time("2026-11-27T03:49:33.9Z"), "2026-11-27 03:49:33");
    }
}
