//! `/api/v1/vms`

use super::types::{ConsoleQuery, ConsoleTail, CreateVmRequest, Items};
use crate::backend::{VmDetail, VmSummary};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::ops::{self, VmAction};
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// `GET /api/v1/vms`
pub async fn list(State(app): State<AppState>) -> Result<Json<Items<VmSummary>>, ApiError> {
    let items = app.blocking(|i| i.vms.list()).await??;
    Ok(Json(Items { items }))
}

/// `POST /api/v1/vms`
pub async fn create(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<CreateVmRequest>,
) -> Result<(StatusCode, Json<VmDetail>), ApiError> {
    let d = ops::create_vm(&app, &ctx, req).await?;
    Ok((StatusCode::CREATED, Json(d)))
}

/// `GET /api/v1/vms/{id}`
pub async fn show(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<VmDetail>, ApiError> {
    Ok(Json(app.blocking(move |i| i.vms.show(&id)).await??))
}

async fn action(
    app: AppState,
    ctx: Ctx,
    id: String,
    a: VmAction,
) -> Result<Json<VmDetail>, ApiError> {
    let d = ops::vm_action(&app, &ctx, id.clone(), a).await?;
    match d {
        Some(d) => Ok(Json(d)),
        None => Ok(Json(app.blocking(move |i| i.vms.show(&id)).await??)),
    }
}

/// `POST /api/v1/vms/{id}/start`
pub async fn start(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<VmDetail>, ApiError> {
    action(app, ctx, id, VmAction::Start).await
}

/// `POST /api/v1/vms/{id}/pause`
pub async fn pause(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<VmDetail>, ApiError> {
    action(app, ctx, id, VmAction::Pause).await
}

/// `POST /api/v1/vms/{id}/resume`
pub async fn resume(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<VmDetail>, ApiError> {
    action(app, ctx, id, VmAction::Resume).await
}

/// `POST /api/v1/vms/{id}/stop`
pub async fn stop(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<String>,
) -> Result<Json<VmDetail>, ApiError> {
    action(app, ctx, id, VmAction::Stop).await
}

/// `DELETE /api/v1/vms/{id}`
pub async fn destroy(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    ops::vm_action(&app, &ctx, id, VmAction::Destroy).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/v1/vms/{id}/console`
pub async fn console(
    State(app): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(q): ApiQuery<ConsoleQuery>,
) -> Result<Json<ConsoleTail>, ApiError> {
    let bytes = q.bytes.unwrap_or(4096);
    if bytes == 0 || bytes > 65536 {
        return Err(ApiError::invalid("bytes", "must be between 1 and 65536"));
    }
    let id2 = id.clone();
    let text = app
        .blocking(move |i| i.vms.console_tail(&id2, bytes))
        .await??;
    Ok(Json(ConsoleTail { id, text }))
}
