//! Per-request context: who (session or API token), from where, and the trace id. The
//! [`context`] middleware resolves it once for every request and stores it as an extension.

use crate::actions::AuditAction;
use crate::auth::{parse_token, token_matches};
use crate::backend::Outcome;
use crate::error::ApiError;
use crate::rbac::Role;
use crate::state::AppState;
use axum::extract::{ConnectInfo, FromRequestParts, Request, State};
use axum::http::{HeaderMap, HeaderValue, header, request::Parts};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use std::time::Instant;

/// Name of the session cookie.
pub const SESSION_COOKIE: &str = "sakshi_session";

/// How a principal authenticated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// Browser session.
    Session {
        /// Cookie value (to end the session on logout).
        cookie: String,
        /// The session's CSRF token.
        csrf: String,
    },
    /// API bearer token.
    Token {
        /// Token id.
        id: String,
    },
    /// A password given in this request (the login itself).
    Password,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// User name.
    pub user: String,
    /// Effective role (the token's role for API tokens).
    pub role: Role,
    /// Session or token.
    pub via: Via,
}

/// The request context.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Caller, if authenticated.
    pub principal: Option<Principal>,
    /// Client address.
    pub origin: String,
    /// W3C trace id (32 hex digits).
    pub trace_id: String,
}

impl Ctx {
    /// The audit actor: the user name, or `anonymous`.
    pub fn actor(&self) -> String {
        self.principal
            .as_ref()
            .map_or_else(|| "anonymous".to_owned(), |p| p.user.clone())
    }

    /// Adds how the caller authenticated to an audit details object.
    pub fn decorate(&self, mut details: serde_json::Value) -> serde_json::Value {
        if let (Some(p), Some(obj)) = (&self.principal, details.as_object_mut()) {
            let via = match &p.via {
                Via::Session { .. } => "session".to_owned(),
                Via::Token { id } => format!("token:{id}"),
                Via::Password => "password".to_owned(),
            };
            obj.insert("auth".to_owned(), via.into());
            obj.insert("role".to_owned(), p.role.as_str().into());
        }
        details
    }

    /// The CSRF token of the session, if the caller uses one.
    pub fn csrf(&self) -> Option<&str> {
        match &self.principal.as_ref()?.via {
            Via::Session { csrf, .. } => Some(csrf),
            Via::Token { .. } | Via::Password => None,
        }
    }

    /// How the caller authenticated, for the audit log.
    pub fn auth(&self) -> crate::backend::ActorAuth {
        use crate::backend::ActorAuth;
        match self.principal.as_ref().map(|p| &p.via) {
            None => ActorAuth::Anonymous,
            Some(Via::Session { .. }) => ActorAuth::Session,
            Some(Via::Token { .. }) => ActorAuth::Token,
            Some(Via::Password) => ActorAuth::Password,
        }
    }

    /// The role, if authenticated.
    pub fn role(&self) -> Option<Role> {
        self.principal.as_ref().map(|p| p.role)
    }
}

impl<S: Send + Sync> FromRequestParts<S> for Ctx {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, Self::Rejection> {
        parts
            .extensions
            .get::<Ctx>()
            .cloned()
            .ok_or_else(|| ApiError::internal(MissingContext))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("request context missing (context middleware not installed)")]
struct MissingContext;

/// Value of cookie `name` in the request headers.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

fn trace_id_from(headers: &HeaderMap) -> String {
    // traceparent: 00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>
    let from_header = headers
        .get("traceparent")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            let mut it = v.split('-');
            let (_ver, id) = (it.next()?, it.next()?);
            let ok = id.len() == 32
                && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
                && id != "0".repeat(32);
            ok.then(|| id.to_owned())
        });
    from_header.unwrap_or_else(|| crate::auth::random_hex(16))
}

/// Resolves the [`Ctx`] of every request and adds the trace id and security headers to the
/// response. A request with an invalid bearer token is refused (401) and audited.
pub async fn context(State(app): State<AppState>, mut req: Request, next: Next) -> Response {
    let origin = req
        .extensions()
        .get::<ConnectInfo<crate::listen::PeerAddr>>()
        .map_or_else(|| "unknown".to_owned(), |c| c.0.0.ip().to_string());
    let trace_id = trace_id_from(req.headers());
    let mut ctx = Ctx {
        principal: None,
        origin,
        trace_id: trace_id.clone(),
    };
    let bearer = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.strip_prefix("Bearer ").unwrap_or("").trim().to_owned());
    let mut resp = if let Some(bearer) = bearer {
        match authenticate_token(&app, &bearer).await {
            Ok(Some(p)) => {
                ctx.principal = Some(p);
                req.extensions_mut().insert(ctx);
                next.run(req).await
            }
            Ok(None) => {
                let id = parse_token(&bearer).map(|(id, _)| id.to_owned());
                let target = format!("token:{}", id.as_deref().unwrap_or("malformed"));
                let details = serde_json::json!({
                    "reason": "invalid, expired or revoked API token",
                    "method": "bearer_token",
                    "token_id": id,
                    "path": req.uri().path(),
                });
                match app
                    .audit(
                        &ctx,
                        AuditAction::TokenAuth,
                        target,
                        Outcome::Failure,
                        details,
                    )
                    .await
                {
                    Ok(_) => ApiError::Unauthenticated.into_response(),
                    Err(e) => e.into_response(),
                }
            }
            Err(e) => e.into_response(),
        }
    } else {
        if let Some(value) = cookie(req.headers(), SESSION_COOKIE)
            && let Some(s) = app.inner.sessions.get(value, Instant::now())
        {
            ctx.principal = Some(Principal {
                user: s.user,
                role: s.role,
                via: Via::Session {
                    cookie: value.to_owned(),
                    csrf: s.csrf,
                },
            });
        }
        req.extensions_mut().insert(ctx);
        next.run(req).await
    };
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&trace_id) {
        h.insert("x-trace-id", v);
    }
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
        ),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    resp
}

async fn authenticate_token(app: &AppState, bearer: &str) -> Result<Option<Principal>, ApiError> {
    let Some((id, secret)) = parse_token(bearer) else {
        return Ok(None);
    };
    // Served from the token cache (a short SQLite lookup on a miss): no blocking task needed.
    let Some(rec) = app.inner.users.token(id)? else {
        return Ok(None);
    };
    if !token_matches(&rec, secret, chrono::Utc::now()) {
        return Ok(None);
    }
    Ok(Some(Principal {
        user: rec.token.owner,
        role: rec.token.role,
        via: Via::Token { id: id.to_owned() },
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookies_and_traceparent() {
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            HeaderValue::from_static("a=1; sakshi_session=xyz; b=2"),
        );
        assert_eq!(cookie(&h, SESSION_COOKIE), Some("xyz"));
        assert_eq!(cookie(&h, "c"), None);
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(trace_id_from(&h), "4bf92f3577b34da6a3ce929d0e0e4736");
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-XYZ-00f067aa0ba902b7-01"),
        );
        let generated = trace_id_from(&h);
        assert_eq!(generated.len(), 32);
        assert_ne!(generated, "XYZ");
    }
}
