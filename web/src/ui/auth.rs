//! Login and logout pages.

use super::{Chrome, UiForm, UiResult, render, see_other};
use crate::actions::AuditAction;
use crate::backend::Outcome;
use crate::ctx::{Ctx, SESSION_COOKIE, Via, cookie};
use crate::error::ApiError;
use crate::state::AppState;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::time::Instant;

/// Double-submit cookie protecting the login form against login CSRF.
const LOGIN_CSRF_COOKIE: &str = "sakshi_login_csrf";

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    c: Chrome,
    csrf: String,
    next: String,
    username: String,
    error: Option<String>,
}

/// `?next=` of the login form.
#[derive(Debug, Deserialize, Default)]
pub struct NextQuery {
    next: Option<String>,
}

fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n.to_owned(),
        _ => "/".to_owned(),
    }
}

fn cookie_header(
    name: &str,
    value: &str,
    path: &str,
    tls: bool,
    max_age: Option<u64>,
) -> HeaderValue {
    let mut s = format!("{name}={value}; Path={path}; HttpOnly; SameSite=Strict");
    if tls {
        s.push_str("; Secure");
    }
    if let Some(a) = max_age {
        s.push_str(&format!("; Max-Age={a}"));
    }
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid=1"))
}

fn login_page(
    app: &AppState,
    ctx: &Ctx,
    status: StatusCode,
    next: String,
    username: String,
    error: Option<String>,
) -> Response {
    let csrf = crate::auth::random_hex(32);
    let mut r = render(
        status,
        &LoginPage {
            c: Chrome::new(ctx, "login"),
            csrf: csrf.clone(),
            next,
            username,
            error,
        },
    );
    r.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(
            LOGIN_CSRF_COOKIE,
            &csrf,
            "/login",
            app.inner.settings.tls,
            None,
        ),
    );
    r
}

/// `GET /login`
pub async fn login_form(
    State(app): State<AppState>,
    ctx: Ctx,
    Query(q): Query<NextQuery>,
) -> Response {
    if ctx.principal.is_some() {
        return see_other(&safe_next(q.next.as_deref()));
    }
    login_page(
        &app,
        &ctx,
        StatusCode::OK,
        safe_next(q.next.as_deref()),
        String::new(),
        None,
    )
}

/// The login form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginForm {
    username: String,
    password: String,
    csrf: String,
    #[serde(default)]
    next: Option<String>,
}

/// `POST /login`
pub async fn login(
    State(app): State<AppState>,
    ctx: Ctx,
    headers: HeaderMap,
    UiForm(f): UiForm<LoginForm>,
) -> Result<Response, super::UiError> {
    let next = safe_next(f.next.as_deref());
    let csrf_ok = cookie(&headers, LOGIN_CSRF_COOKIE)
        .is_some_and(|c| crate::auth::secrets_equal(c.as_bytes(), f.csrf.as_bytes()));
    if !csrf_ok {
        app.audit(
            &ctx,
            AuditAction::AccessDenied,
            "appliance:POST /login",
            Outcome::Denied,
            serde_json::json!({ "reason": "missing or wrong login CSRF token" }),
        )
        .await
        .ui(&ctx)?;
        return Ok(login_page(
            &app,
            &ctx,
            StatusCode::FORBIDDEN,
            next,
            f.username,
            Some("The form expired. Please sign in again.".to_owned()),
        ));
    }
    match crate::ops::login(&app, &ctx, &f.username, &f.password, "dashboard").await {
        Ok(role) => {
            let (value, _) = app.inner.sessions.create(&f.username, role, Instant::now());
            let mut r = see_other(&next);
            let h = r.headers_mut();
            h.append(
                header::SET_COOKIE,
                cookie_header(SESSION_COOKIE, &value, "/", app.inner.settings.tls, None),
            );
            h.append(
                header::SET_COOKIE,
                cookie_header(
                    LOGIN_CSRF_COOKIE,
                    "",
                    "/login",
                    app.inner.settings.tls,
                    Some(0),
                ),
            );
            Ok(r)
        }
        Err(ApiError::Unauthenticated) => Ok(login_page(
            &app,
            &ctx,
            StatusCode::UNAUTHORIZED,
            next,
            f.username,
            Some("Wrong user name or password.".to_owned()),
        )),
        Err(ApiError::TooManyAttempts { retry_after_s }) => {
            let mut r = login_page(
                &app,
                &ctx,
                StatusCode::TOO_MANY_REQUESTS,
                next,
                f.username,
                Some(format!(
                    "Too many failed attempts. Try again in {retry_after_s} seconds."
                )),
            );
            if let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string()) {
                r.headers_mut().insert(header::RETRY_AFTER, v);
            }
            Ok(r)
        }
        Err(e) => Err(e).ui(&ctx),
    }
}

/// `POST /logout`
pub async fn logout(State(app): State<AppState>, ctx: Ctx) -> Result<Response, super::UiError> {
    if let Some(p) = &ctx.principal
        && let Via::Session { cookie, .. } = &p.via
    {
        app.inner.sessions.remove(cookie);
    }
    app.audit(
        &ctx,
        AuditAction::Logout,
        format!("user:{}", ctx.actor()),
        Outcome::Success,
        serde_json::json!({}),
    )
    .await
    .ui(&ctx)?;
    let mut r = see_other("/login");
    r.headers_mut().append(
        header::SET_COOKIE,
        cookie_header(SESSION_COOKIE, "", "/", app.inner.settings.tls, Some(0)),
    );
    Ok(r.into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_must_be_a_local_path() {
        assert_eq!(safe_next(Some("/vms/1")), "/vms/1");
        assert_eq!(safe_next(Some("//evil.example")), "/");
        assert_eq!(safe_next(Some("https://evil.example")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }
}
