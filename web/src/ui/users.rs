//! User administration and the account page (own password and API tokens).

use super::{Chrome, UiError, UiForm, UiResult, fmt_time, render, see_other};
use crate::api::types::{CreateTokenRequest, CreateUserRequest};
use crate::auth::{ApiToken, UserView};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::ops;
use crate::rbac::Role;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

struct UserRow {
    name: String,
    role: &'static str,
    created: String,
    is_self: bool,
}

#[derive(Template)]
#[template(path = "users.html")]
struct UsersPage {
    c: Chrome,
    users: Vec<UserRow>,
    roles: Vec<&'static str>,
    error: Option<String>,
    form_name: String,
    form_role: String,
}

async fn users_page(
    app: &AppState,
    ctx: &Ctx,
    status: StatusCode,
    error: Option<String>,
    form_name: String,
    form_role: String,
) -> Result<Response, UiError> {
    let users: Vec<UserView> = app
        .blocking(|i| i.users.list_users())
        .await
        .ui(ctx)?
        .ui(ctx)?;
    let me = ctx.actor();
    Ok(render(
        status,
        &UsersPage {
            c: Chrome::new(ctx, "users"),
            users: users
                .into_iter()
                .map(|u| UserRow {
                    is_self: u.name == me,
                    role: u.role.as_str(),
                    created: fmt_time(&u.created_at),
                    name: u.name,
                })
                .collect(),
            roles: Role::ALL.iter().map(|r| r.as_str()).collect(),
            error,
            form_name,
            form_role,
        },
    ))
}

/// `GET /users`
pub async fn list(State(app): State<AppState>, ctx: Ctx) -> Result<Response, UiError> {
    users_page(
        &app,
        &ctx,
        StatusCode::OK,
        None,
        String::new(),
        "operator".to_owned(),
    )
    .await
}

/// New user form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewUserForm {
    #[allow(dead_code)]
    csrf: String,
    name: String,
    role: String,
    password: String,
}

/// `POST /users`
pub async fn create(
    State(app): State<AppState>,
    ctx: Ctx,
    UiForm(f): UiForm<NewUserForm>,
) -> Result<Response, UiError> {
    let result = match f.role.parse::<Role>() {
        Ok(role) => {
            ops::create_user(
                &app,
                &ctx,
                CreateUserRequest {
                    name: f.name.trim().to_owned(),
                    role,
                    password: f.password,
                },
            )
            .await
        }
        Err(e) => Err(ApiError::invalid("role", e.to_string())),
    };
    match result {
        Ok(_) => Ok(see_other("/users")),
        Err(e @ (ApiError::Invalid { .. } | ApiError::Conflict(_))) => {
            let status = e.status();
            users_page(&app, &ctx, status, Some(e.problem().detail), f.name, f.role).await
        }
        Err(e) => Err(e).ui(&ctx),
    }
}

/// `POST /users/{name}/delete`
pub async fn delete(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(name): Path<String>,
    UiForm(_f): UiForm<super::ButtonForm>,
) -> Result<Response, UiError> {
    ops::delete_user(&app, &ctx, name).await.ui(&ctx)?;
    Ok(see_other("/users"))
}

struct TokenRow {
    id: String,
    name: String,
    role: &'static str,
    created: String,
    expires: String,
    revoked: bool,
}

impl From<ApiToken> for TokenRow {
    fn from(t: ApiToken) -> Self {
        TokenRow {
            revoked: t.revoked_at.is_some(),
            role: t.role.as_str(),
            created: fmt_time(&t.created_at),
            expires: fmt_time(&t.expires_at),
            id: t.id,
            name: t.name,
        }
    }
}

#[derive(Template)]
#[template(path = "account.html")]
struct AccountPage {
    c: Chrome,
    tokens: Vec<TokenRow>,
    roles: Vec<&'static str>,
    new_secret: Option<String>,
    notice: Option<String>,
    error: Option<String>,
    max_days: u32,
}

async fn account_page(
    app: &AppState,
    ctx: &Ctx,
    status: StatusCode,
    new_secret: Option<String>,
    notice: Option<String>,
    error: Option<String>,
) -> Result<Response, UiError> {
    let me = ctx.actor();
    let tokens = app
        .blocking(move |i| i.users.list_tokens(Some(&me)))
        .await
        .ui(ctx)?
        .ui(ctx)?;
    let role = ctx.role();
    let roles = Role::ALL
        .iter()
        .filter(|r| role == Some(Role::Admin) || role == Some(**r))
        .map(|r| r.as_str())
        .collect();
    Ok(render(
        status,
        &AccountPage {
            c: Chrome::new(ctx, "account"),
            tokens: tokens.into_iter().map(TokenRow::from).collect(),
            roles,
            new_secret,
            notice,
            error,
            max_days: app.inner.settings.token_max_days,
        },
    ))
}

/// `GET /account`
pub async fn account(State(app): State<AppState>, ctx: Ctx) -> Result<Response, UiError> {
    account_page(&app, &ctx, StatusCode::OK, None, None, None).await
}

/// Password change form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordForm {
    #[allow(dead_code)]
    csrf: String,
    current_password: String,
    new_password: String,
}

/// `POST /account/password`
pub async fn password(
    State(app): State<AppState>,
    ctx: Ctx,
    UiForm(f): UiForm<PasswordForm>,
) -> Result<Response, UiError> {
    let me = ctx.actor();
    match ops::set_password(&app, &ctx, me, Some(f.current_password), f.new_password).await {
        // All sessions of the user end with a password change.
        Ok(()) => Ok(see_other("/login")),
        Err(e @ ApiError::Invalid { .. }) => {
            let status = e.status();
            account_page(&app, &ctx, status, None, None, Some(e.problem().detail)).await
        }
        Err(e) => Err(e).ui(&ctx),
    }
}

/// New token form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenForm {
    #[allow(dead_code)]
    csrf: String,
    name: String,
    role: String,
    expires_in_days: String,
}

/// `POST /account/tokens`
pub async fn token_create(
    State(app): State<AppState>,
    ctx: Ctx,
    UiForm(f): UiForm<TokenForm>,
) -> Result<Response, UiError> {
    let Some(p) = ctx.principal.clone() else {
        return Err(ApiError::Unauthenticated).ui(&ctx);
    };
    let parsed = (|| {
        let role = f
            .role
            .parse::<Role>()
            .map_err(|e| ApiError::invalid("role", e.to_string()))?;
        let days = f
            .expires_in_days
            .trim()
            .parse::<u32>()
            .map_err(|_| ApiError::invalid("expires_in_days", "must be a whole number"))?;
        Ok::<_, ApiError>(CreateTokenRequest {
            name: f.name.clone(),
            role: Some(role),
            expires_in_days: Some(days),
        })
    })();
    let result = match parsed {
        Ok(req) => ops::create_token(&app, &ctx, p.user, p.role, req).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(t) => account_page(&app, &ctx, StatusCode::CREATED, Some(t.secret), None, None).await,
        Err(e @ ApiError::Invalid { .. }) => {
            let status = e.status();
            account_page(&app, &ctx, status, None, None, Some(e.problem().detail)).await
        }
        Err(e) => Err(e).ui(&ctx),
    }
}

/// `POST /account/tokens/{id}/revoke`
pub async fn token_revoke(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
    UiForm(_f): UiForm<super::ButtonForm>,
) -> Result<Response, UiError> {
    ops::revoke_token(&app, &ctx, id).await.ui(&ctx)?;
    account_page(
        &app,
        &ctx,
        StatusCode::OK,
        None,
        Some("Token revoked.".to_owned()),
        None,
    )
    .await
}
