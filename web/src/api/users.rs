//! `/api/v1/users` and `/api/v1/account`

use super::types::{ChangePasswordRequest, CreateUserRequest, Items, ResetPasswordRequest};
use crate::auth::UserView;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::ops;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// `GET /api/v1/users`
pub async fn list(State(app): State<AppState>) -> Result<Json<Items<UserView>>, ApiError> {
    let items = app.blocking(|i| i.users.list_users()).await??;
    Ok(Json(Items { items }))
}

/// `POST /api/v1/users`
pub async fn create(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<CreateUserRequest>,
) -> Result<(StatusCode, Json<UserView>), ApiError> {
    Ok((
        StatusCode::CREATED,
        Json(ops::create_user(&app, &ctx, req).await?),
    ))
}

/// `DELETE /api/v1/users/{name}`
pub async fn delete(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiPath(name): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    ops::delete_user(&app, &ctx, name).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/users/{name}/password`
pub async fn reset_password(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiPath(name): ApiPath<String>,
    ApiJson(req): ApiJson<ResetPasswordRequest>,
) -> Result<StatusCode, ApiError> {
    ops::set_password(&app, &ctx, name, None, req.password).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `PUT /api/v1/account/password`
pub async fn own_password(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<ChangePasswordRequest>,
) -> Result<StatusCode, ApiError> {
    let user = ctx.actor();
    ops::set_password(
        &app,
        &ctx,
        user,
        Some(req.current_password),
        req.new_password,
    )
    .await?;
    Ok(StatusCode::NO_CONTENT)
}
