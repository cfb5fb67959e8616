//! The measured-boot golden set: `GET /api/v1/golden`, and approving or withdrawing a stored
//! image (`POST`/`DELETE /api/v1/images/{sha256}/approval`, admin only, audited). In `enforce`
//! mode only approved kernels and initrds boot; in `audit` mode the others boot flagged.

use crate::actions::AuditAction;
use crate::backend::Outcome;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::extract::ApiPath;
use crate::images::{ImageError, ImageKind};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use sakshi_attest::{BootComponent, Policy, PolicyMode, Sha256Digest};
use serde::Serialize;
use serde_json::json;

/// One approved digest.
#[derive(Debug, Serialize)]
pub struct GoldenEntry {
    /// Lowercase hex SHA-256.
    pub sha256: String,
    /// Why it is approved (image name, patch, demo guest).
    pub label: String,
}

/// `GET /api/v1/golden`
#[derive(Debug, Serialize)]
pub struct GoldenView {
    /// `enforce` or `audit`.
    pub mode: &'static str,
    /// Approved kernels.
    pub kernels: Vec<GoldenEntry>,
    /// Approved initrds.
    pub initrds: Vec<GoldenEntry>,
    /// Approved command lines (empty: not appraised).
    pub cmdlines: Vec<GoldenEntry>,
    /// Approved VM configs (empty: not appraised).
    pub configs: Vec<GoldenEntry>,
}

impl GoldenView {
    /// The view of `p`.
    pub fn of(p: &Policy) -> GoldenView {
        let list = |m: &std::collections::BTreeMap<Sha256Digest, String>| {
            m.iter()
                .map(|(d, l)| GoldenEntry {
                    sha256: d.to_hex(),
                    label: l.clone(),
                })
                .collect()
        };
        GoldenView {
            mode: match p.mode {
                PolicyMode::Enforce => "enforce",
                PolicyMode::Audit => "audit",
            },
            kernels: list(&p.kernels),
            initrds: list(&p.initrds),
            cmdlines: list(&p.cmdlines),
            configs: list(&p.configs),
        }
    }
}

/// The answer to an approval change.
#[derive(Debug, Serialize)]
pub struct ApprovalView {
    /// The image.
    pub sha256: String,
    /// `kernel` or `initrd`.
    pub component: &'static str,
    /// Whether it is approved now.
    pub approved: bool,
    /// False when it already was in the requested state.
    pub changed: bool,
}

fn no_golden() -> ApiError {
    ApiError::Conflict("this appliance has no measured boot, so no golden set".to_owned())
}

/// `GET /api/v1/golden`
pub async fn show(State(app): State<AppState>) -> Result<Json<GoldenView>, ApiError> {
    let golden = app.inner.golden.get().ok_or_else(no_golden)?;
    Ok(Json(GoldenView::of(&golden.policy())))
}

async fn change(
    app: AppState,
    ctx: Ctx,
    sha: String,
    approve: bool,
) -> Result<Json<ApprovalView>, ApiError> {
    if !crate::images::is_sha256_hex(&sha) {
        return Err(ApiError::invalid(
            "sha256",
            "must be 64 lowercase hex characters",
        ));
    }
    let sha2 = sha.clone();
    let result = app
        .blocking(move |i| -> Result<(ImageKind, bool), ApiError> {
            let golden = i.golden.get().ok_or_else(no_golden)?;
            let info = i.images.get(&sha2).map_err(|e| match e {
                ImageError::NotFound(_) => ApiError::NotFound(e.to_string()),
                e => ApiError::internal(e),
            })?;
            let component = match info.kind {
                ImageKind::Kernel => BootComponent::Kernel,
                ImageKind::Initrd => BootComponent::Initrd,
            };
            let mut digest = [0u8; 32];
            hex::decode_to_slice(&sha2, &mut digest).map_err(ApiError::internal)?;
            let digest = Sha256Digest(digest);
            let changed = if approve {
                golden.approve(component, digest, &format!("image {:?}", info.name))
            } else {
                golden.revoke(component, &digest)
            }
            .map_err(ApiError::internal)?;
            Ok((info.kind, changed))
        })
        .await?;
    let action = if approve {
        AuditAction::ImageApprove
    } else {
        AuditAction::ImageRevoke
    };
    let (outcome, details) = match &result {
        Ok((kind, changed)) => (
            Outcome::Success,
            json!({ "component": kind.as_str(), "changed": changed }),
        ),
        Err(e) => (
            Outcome::Failure,
            json!({ "error": crate::ops::error_chain(e) }),
        ),
    };
    app.audit(&ctx, action, format!("image:{sha}"), outcome, details)
        .await?;
    let (kind, changed) = result?;
    Ok(Json(ApprovalView {
        sha256: sha,
        component: kind.as_str(),
        approved: approve,
        changed,
    }))
}

/// `POST /api/v1/images/{sha256}/approval`
pub async fn approve(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiPath(sha): ApiPath<String>,
) -> Result<Json<ApprovalView>, ApiError> {
    change(app, ctx, sha, true).await
}

/// `DELETE /api/v1/images/{sha256}/approval`
pub async fn revoke(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiPath(sha): ApiPath<String>,
) -> Result<Json<ApprovalView>, ApiError> {
    change(app, ctx, sha, false).await
}
