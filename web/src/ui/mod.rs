//! The server-rendered dashboard (askama templates in `templates/`). Every page works without
//! JavaScript; every form carries the session's CSRF token.

pub mod attestation;
pub mod audit;
pub mod auth;
pub mod evidence;
pub mod images;
pub mod overview;
pub mod users;
pub mod vms;

use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::rbac::{Permission, Role};
use askama::Template;
use axum::extract::{FromRequest, Path, Request};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use serde::Deserialize;
use serde::de::DeserializeOwned;

/// What every page's frame needs.
#[derive(Debug, Clone, Default)]
pub struct Chrome {
    /// Signed-in user ("" when anonymous).
    pub user: String,
    /// Role name ("" when anonymous).
    pub role: String,
    /// CSRF token for forms.
    pub csrf: String,
    /// Active navigation entry.
    pub nav: &'static str,
    /// May run VM lifecycle actions.
    pub can_lifecycle: bool,
    /// May read the audit log.
    pub can_audit: bool,
    /// May manage users.
    pub can_admin: bool,
    /// May see VMs.
    pub can_vms: bool,
    /// May see images.
    pub can_images: bool,
    /// May export evidence bundles and reports.
    pub can_evidence: bool,
    /// May read the patch ledger.
    pub can_patches: bool,
    /// Trace id of the request (shown in the footer, handy for support).
    pub trace_id: String,
    /// Appliance version.
    pub version: &'static str,
}

impl Chrome {
    /// The frame for `ctx`, with `nav` highlighted.
    pub fn new(ctx: &Ctx, nav: &'static str) -> Chrome {
        let role = ctx.role();
        let can = |p: Permission| role.is_some_and(|r: Role| r.allows(p));
        Chrome {
            user: ctx.actor(),
            role: role.map(|r| r.as_str().to_owned()).unwrap_or_default(),
            csrf: ctx.csrf().unwrap_or_default().to_owned(),
            nav,
            can_lifecycle: can(Permission::VmLifecycle),
            can_audit: can(Permission::AuditRead),
            can_admin: can(Permission::UserAdmin),
            can_vms: can(Permission::VmRead),
            can_images: can(Permission::ImageRead),
            can_evidence: can(Permission::EvidenceExport),
            can_patches: can(Permission::PatchRead),
            trace_id: ctx.trace_id.clone(),
            version: env!("CARGO_PKG_VERSION"),
        }
    }

    /// Whether a user is signed in.
    pub fn signed_in(&self) -> bool {
        !self.role.is_empty()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    c: Chrome,
    status: u16,
    title: String,
    detail: String,
}

/// Renders a template into a response with `status`.
pub fn render<T: Template>(status: StatusCode, t: &T) -> Response {
    match t.render() {
        Ok(html) => (status, Html(html)).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "template rendering failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "template rendering failed",
            )
                .into_response()
        }
    }
}

fn error_response(c: Chrome, err: ApiError) -> Response {
    let status = err.status();
    let problem = err.problem();
    let retry_after = match &err {
        ApiError::TooManyAttempts { retry_after_s } => Some(*retry_after_s),
        _ => None,
    };
    // Internal errors are logged exactly as the API logs them; the body is discarded.
    if matches!(err, ApiError::Internal(_)) {
        drop(err.into_response());
    }
    let mut r = render(
        status,
        &ErrorPage {
            c,
            status: status.as_u16(),
            title: problem.title,
            detail: problem.detail,
        },
    );
    if let Some(s) = retry_after
        && let Ok(h) = HeaderValue::from_str(&s.to_string())
    {
        r.headers_mut().insert(header::RETRY_AFTER, h);
    }
    r
}

/// An HTML error page for a request (used by the guard and the fallbacks).
pub fn error_page(req: &Request, err: ApiError) -> Response {
    let c = req
        .extensions()
        .get::<Ctx>()
        .map(|ctx| Chrome::new(ctx, ""))
        .unwrap_or_default();
    error_response(c, err)
}

/// A dashboard handler error: rendered as an HTML error page inside the frame.
#[derive(Debug)]
pub struct UiError(Box<(ApiError, Chrome)>);

impl UiError {
    fn new(err: ApiError, chrome: Chrome) -> UiError {
        UiError(Box::new((err, chrome)))
    }
}

impl IntoResponse for UiError {
    fn into_response(self) -> Response {
        let (err, chrome) = *self.0;
        error_response(chrome, err)
    }
}

/// Attaches the frame to an error.
pub trait UiResult<T> {
    /// Maps the error to an HTML page for `ctx`.
    fn ui(self, ctx: &Ctx) -> Result<T, UiError>;
}

impl<T, E: Into<ApiError>> UiResult<T> for Result<T, E> {
    fn ui(self, ctx: &Ctx) -> Result<T, UiError> {
        self.map_err(|e| UiError::new(e.into(), Chrome::new(ctx, "")))
    }
}

/// A urlencoded form body; rejections become HTML error pages.
#[derive(Debug)]
pub struct UiForm<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for UiForm<T> {
    type Rejection = UiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        let chrome = req
            .extensions()
            .get::<Ctx>()
            .map(|c| Chrome::new(c, ""))
            .unwrap_or_default();
        axum::Form::<T>::from_request(req, state)
            .await
            .map(|f| UiForm(f.0))
            .map_err(|rej| {
                UiError::new(
                    ApiError::BadRequest {
                        field: None,
                        detail: rej.body_text(),
                    },
                    chrome,
                )
            })
    }
}

/// The body of a button that only posts the CSRF token (the route guard checks it).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ButtonForm {
    #[allow(dead_code)]
    csrf: String,
}

/// Percent-encodes a string for a query parameter.
pub fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' | b'/' => {
                out.push(char::from(b))
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

const CSS: &str = include_str!("../../static/sakshi.css");

/// `GET /static/{file}`
pub async fn static_file(Path(file): Path<String>) -> Response {
    match file.as_str() {
        "sakshi.css" => (
            [
                (header::CONTENT_TYPE, "text/css; charset=utf-8"),
                (header::CACHE_CONTROL, "public, max-age=3600"),
            ],
            CSS,
        )
            .into_response(),
        _ => (StatusCode::NOT_FOUND, "not found").into_response(),
    }
}

/// Formats microseconds as milliseconds with one decimal.
pub fn fmt_us(us: Option<u64>) -> String {
    us.map_or_else(
        || "-".to_owned(),
        |u| format!("{:.1} ms", u as f64 / 1000.0),
    )
}

/// Formats KiB as MiB.
pub fn fmt_kib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "-".to_owned(),
        |k| format!("{:.1} MiB", k as f64 / 1024.0),
    )
}

/// First 12 characters of a hash.
pub fn short(h: &str) -> String {
    h.chars().take(12).collect()
}

/// An RFC 3339 time shortened for tables (`2025-01-31 12:00:00`).
pub fn fmt_time(t: &str) -> String {
    chrono::DateTime::parse_from_rfc3339(t)
        .map(|d| {
            d.with_timezone(&chrono::Utc)
                .format("%Y-%m-%d %H:%M:%S")
                .to_string()
        })
        .unwrap_or_else(|_| t.to_owned())
}

/// Redirect after a successful POST (303, so the browser GETs the target).
pub fn see_other(to: &str) -> Response {
    axum::response::Redirect::to(to).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formatting() {
        assert_eq!(url_encode("/vms?x=1 2"), "/vms%3Fx%3D1%202");
        assert_eq!(fmt_us(Some(1234)), "1.2 ms");
        assert_eq!(fmt_us(None), "-");
        assert_eq!(fmt_kib(Some(2048)), "2.0 MiB");
        assert_eq!(short("0123456789abcdef"), "0123456789ab");
        assert_eq!(fmt_time("2025-01-31T12:00:00+01:00"), "2025-01-31 11:00:00");
        assert_eq!(fmt_time("garbage"), "garbage");
    }
}
