//! `/api/v1/audit`: entries with keyset pagination and filters, proofs, verification, checkpoints.
//! Every read is itself audited.

use super::types::{AuditQueryParams, CheckpointQuery, ConsistencyQuery, Items, ProofQuery};
use crate::actions::AuditAction;
use crate::backend::{
    AuditEntryView, AuditPage, CheckpointView, ConsistencyProofView, InclusionProofView, Outcome,
    VerifyReport,
};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::ops;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde_json::json;

/// `GET /api/v1/audit/entries`
pub async fn entries(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<AuditQueryParams>,
) -> Result<Json<AuditPage>, ApiError> {
    Ok(Json(
        ops::audit_page(&app, &ctx, &q, ops::EntryForm::Full).await?,
    ))
}

/// `GET /api/v1/audit/entries/{index}`
pub async fn entry(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiPath(index): ApiPath<u64>,
) -> Result<Json<AuditEntryView>, ApiError> {
    let e = app.blocking(move |i| i.audit.entry(index)).await??;
    app.audit(
        &ctx,
        AuditAction::AuditRead,
        format!("audit_log:{index}"),
        Outcome::Success,
        json!({ "kind": "entry" }),
    )
    .await?;
    Ok(Json(e))
}

/// Inclusion proof of one entry, audited.
pub async fn inclusion_proof(
    app: &AppState,
    ctx: &Ctx,
    index: u64,
    tree_size: Option<u64>,
) -> Result<InclusionProofView, ApiError> {
    let proof = app
        .blocking(move |i| -> Result<_, ApiError> {
            let size = match tree_size {
                Some(s) => s,
                None => i.audit.head()?.0,
            };
            if index >= size {
                return Err(ApiError::invalid(
                    "tree_size",
                    format!("must be greater than the entry index {index}"),
                ));
            }
            Ok(i.audit.inclusion_proof(index, size)?)
        })
        .await??;
    app.audit(
        ctx,
        AuditAction::AuditProof,
        format!("audit_log:{index}"),
        Outcome::Success,
        json!({ "kind": "inclusion_proof", "tree_size": proof.tree_size }),
    )
    .await?;
    Ok(proof)
}

/// `GET /api/v1/audit/entries/{index}/proof`
pub async fn inclusion(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiPath(index): ApiPath<u64>,
    ApiQuery(q): ApiQuery<ProofQuery>,
) -> Result<Json<InclusionProofView>, ApiError> {
    Ok(Json(inclusion_proof(&app, &ctx, index, q.tree_size).await?))
}

/// `GET /api/v1/audit/consistency`
pub async fn consistency(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<ConsistencyQuery>,
) -> Result<Json<ConsistencyProofView>, ApiError> {
    let from = q.from;
    let proof = app
        .blocking(move |i| -> Result<_, ApiError> {
            let to = match q.to {
                Some(t) => t,
                None => i.audit.head()?.0,
            };
            if from == 0 || from > to {
                return Err(ApiError::invalid(
                    "from",
                    format!("must be between 1 and {to}"),
                ));
            }
            Ok(i.audit.consistency_proof(from, to)?)
        })
        .await??;
    app.audit(
        &ctx,
        AuditAction::AuditProof,
        "audit_log:tree",
        Outcome::Success,
        json!({ "kind": "consistency_proof", "from": proof.from_size, "to": proof.to_size }),
    )
    .await?;
    Ok(Json(proof))
}

/// Verifies the whole log, audited with the result.
pub async fn run_verify(app: &AppState, ctx: &Ctx) -> Result<VerifyReport, ApiError> {
    let report = app.blocking(|i| i.audit.verify()).await??;
    let outcome = if report.ok {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    app.audit(
        ctx,
        AuditAction::AuditVerify,
        "audit_log:log",
        outcome,
        json!({
            "entries": report.entries, "root": report.root,
            "first_bad_index": report.first_bad_index, "problem": report.problem,
        }),
    )
    .await?;
    Ok(report)
}

/// `POST /api/v1/audit/verify`
pub async fn verify(State(app): State<AppState>, ctx: Ctx) -> Result<Json<VerifyReport>, ApiError> {
    Ok(Json(run_verify(&app, &ctx).await?))
}

/// `GET /api/v1/audit/checkpoints`
pub async fn checkpoints(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<CheckpointQuery>,
) -> Result<Json<Items<CheckpointView>>, ApiError> {
    let limit = q.limit.unwrap_or(10);
    if !(1..=100).contains(&limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 100"));
    }
    let items = app.blocking(move |i| i.audit.checkpoints(limit)).await??;
    app.audit(
        &ctx,
        AuditAction::AuditCheckpointRead,
        "audit_log:checkpoints",
        Outcome::Success,
        json!({ "kind": "checkpoints", "returned": items.len() }),
    )
    .await?;
    Ok(Json(Items { items }))
}
