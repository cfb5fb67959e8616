//! `/api/v1/tokens` and `/api/v1/auth/token`

use super::types::{CreateTokenRequest, Items, TokenListQuery, TokenLoginRequest};
use crate::auth::{ApiToken, NewToken};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::ops;
use crate::rbac::Permission;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;

/// `GET /api/v1/tokens[?all=true]`
pub async fn list(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiQuery(q): ApiQuery<TokenListQuery>,
) -> Result<Json<Items<ApiToken>>, ApiError> {
    let p = ctx.principal.clone().ok_or(ApiError::Unauthenticated)?;
    if q.all && !p.role.allows(Permission::UserAdmin) {
        return Err(ops::deny(
            &app,
            &ctx,
            "token:*".to_owned(),
            "only admins may list everyone's tokens",
            Permission::UserAdmin,
        )
        .await);
    }
    let owner = (!q.all).then_some(p.user);
    let items = app
        .blocking(move |i| i.users.list_tokens(owner.as_deref()))
        .await??;
    Ok(Json(Items { items }))
}

/// `POST /api/v1/tokens`
pub async fn create(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<CreateTokenRequest>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    let p = ctx.principal.clone().ok_or(ApiError::Unauthenticated)?;
    let t = ops::create_token(&app, &ctx, p.user, p.role, req).await?;
    Ok((StatusCode::CREATED, Json(t)))
}

/// `DELETE /api/v1/tokens/{id}`
pub async fn revoke(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiPath(id): ApiPath<String>,
) -> Result<StatusCode, ApiError> {
    ops::revoke_token(&app, &ctx, id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /api/v1/auth/token`: exchange a user name and password for an API token (the CLI's
/// `sakshi login`). Subject to the same lockout as the login form; audited as a login.
pub async fn login(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<TokenLoginRequest>,
) -> Result<(StatusCode, Json<NewToken>), ApiError> {
    let role = ops::login(&app, &ctx, &req.username, &req.password, "api").await?;
    let as_user = Ctx {
        principal: Some(crate::ctx::Principal {
            user: req.username.clone(),
            role,
            via: crate::ctx::Via::Password,
        }),
        ..ctx
    };
    let t = ops::create_token(
        &app,
        &as_user,
        req.username,
        role,
        CreateTokenRequest {
            name: req.name,
            role: None,
            expires_in_days: req.expires_in_days,
        },
    )
    .await?;
    Ok((StatusCode::CREATED, Json(t)))
}
