//! `/api/v1/images`

use super::types::{Items, UploadQuery};
use crate::actions::AuditAction;
use crate::backend::Outcome;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::extract::{ApiPath, ApiQuery};
use crate::images::{ImageError, ImageInfo};
use crate::state::AppState;
use axum::Json;
use axum::extract::{Request, State};
use axum::http::{StatusCode, header};

/// `GET /api/v1/images`
pub async fn list(State(app): State<AppState>) -> Result<Json<Items<ImageInfo>>, ApiError> {
    let items = app
        .blocking(|i| i.images.list())
        .await?
        .map_err(ApiError::internal)?;
    Ok(Json(Items { items }))
}

/// `GET /api/v1/images/{sha256}`
pub async fn show(
    State(app): State<AppState>,
    ApiPath(sha): ApiPath<String>,
) -> Result<Json<ImageInfo>, ApiError> {
    match app.blocking(move |i| i.images.get(&sha)).await? {
        Ok(info) => Ok(Json(info)),
        Err(e @ ImageError::NotFound(_)) => Err(ApiError::NotFound(e.to_string())),
        Err(e) => Err(ApiError::internal(e)),
    }
}

/// `POST /api/v1/images?name=..&kind=kernel|initrd` with the raw bytes
/// (`Content-Type: application/octet-stream`).
pub async fn upload(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<UploadQuery>,
    req: Request,
) -> Result<(StatusCode, Json<ImageInfo>), ApiError> {
    let ok_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/octet-stream"));
    if !ok_type {
        return Err(ApiError::UnsupportedMediaType {
            expected: "application/octet-stream",
        });
    }
    let name = q.name.trim().to_owned();
    if name.is_empty() || name.len() > 128 || name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must be 1 to 128 printable characters",
        ));
    }
    let limit = app.inner.settings.max_image_bytes;
    let bytes = crate::extract::body_bytes(req).await.map_err(|e| match e {
        ApiError::TooLarge { .. } => ApiError::TooLarge { limit },
        e => e,
    })?;
    let actor = ctx.actor();
    let kind = q.kind;
    let n2 = name.clone();
    let result = app
        .blocking(move |i| i.images.put(&n2, kind, &bytes, &actor))
        .await?;
    let (outcome, target, details) = match &result {
        Ok((info, fresh)) => (
            Outcome::Success,
            format!("image:{}", info.sha256),
            serde_json::json!({ "name": name, "kind": kind, "size": info.size, "new": fresh }),
        ),
        Err(e) => (
            Outcome::Failure,
            format!("image:{name}"),
            serde_json::json!({ "kind": kind, "error": e.to_string() }),
        ),
    };
    app.audit(&ctx, AuditAction::ImageAdd, target, outcome, details)
        .await?;
    match result {
        Ok((info, true)) => Ok((StatusCode::CREATED, Json(info))),
        Ok((info, false)) => Ok((StatusCode::OK, Json(info))),
        Err(e @ (ImageError::NotAKernel | ImageError::Empty)) => {
            Err(ApiError::invalid("body", e.to_string()))
        }
        Err(e) => Err(ApiError::internal(e)),
    }
}
