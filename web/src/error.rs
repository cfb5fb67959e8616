//! API errors as RFC 9457 problem documents. A 5xx never carries internals: the real error is
//! logged with its whole chain and the client sees a generic detail plus the trace id.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use std::error::Error as StdError;

/// Media type of problem documents.
pub const PROBLEM_JSON: &str = "application/problem+json";

/// Everything an API handler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed request (syntax, unknown or missing field, wrong type).
    #[error("{detail}")]
    BadRequest {
        /// The offending field, when one is to blame.
        field: Option<String>,
        /// What is wrong.
        detail: String,
    },
    /// Well-formed but invalid value.
    #[error("{field}: {detail}")]
    Invalid {
        /// The offending field.
        field: String,
        /// What is wrong.
        detail: String,
    },
    /// No or bad credentials.
    #[error("authentication required")]
    Unauthenticated,
    /// Authenticated but not allowed.
    #[error("{0}")]
    Forbidden(String),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The route exists but not with this method.
    #[error("{0}")]
    MethodNotAllowed(String),
    /// Not allowed in the resource's current state.
    #[error("{0}")]
    Conflict(String),
    /// Body larger than the route accepts.
    #[error("request body exceeds {limit} bytes")]
    TooLarge {
        /// The limit.
        limit: usize,
    },
    /// Wrong `Content-Type`.
    #[error("expected Content-Type {expected}")]
    UnsupportedMediaType {
        /// The accepted media type.
        expected: &'static str,
    },
    /// Login locked out for a while.
    #[error("too many failed attempts; retry in {retry_after_s} s")]
    TooManyAttempts {
        /// Seconds until the lock lifts.
        retry_after_s: u64,
    },
    /// A dependency (VM host, audit log) is unavailable or failed.
    #[error("internal error")]
    Internal(#[source] Box<dyn StdError + Send + Sync>),
}

impl ApiError {
    /// Shorthand for [`ApiError::Invalid`].
    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError::Invalid {
            field: field.into(),
            detail: detail.into(),
        }
    }

    /// Wraps any error as an internal one.
    pub fn internal(e: impl StdError + Send + Sync + 'static) -> ApiError {
        ApiError::Internal(Box::new(e))
    }

    /// HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            ApiError::BadRequest { .. } => StatusCode::BAD_REQUEST,
            ApiError::Invalid { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unauthenticated => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed(_) => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::TooManyAttempts { .. } => StatusCode::TOO_MANY_REQUESTS,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn slug(&self) -> &'static str {
        match self {
            ApiError::BadRequest { .. } => "malformed-request",
            ApiError::Invalid { .. } => "invalid-field",
            ApiError::Unauthenticated => "unauthenticated",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not-found",
            ApiError::MethodNotAllowed(_) => "method-not-allowed",
            ApiError::Conflict(_) => "conflict",
            ApiError::TooLarge { .. } => "payload-too-large",
            ApiError::UnsupportedMediaType { .. } => "unsupported-media-type",
            ApiError::TooManyAttempts { .. } => "too-many-attempts",
            ApiError::Internal(_) => "internal",
        }
    }

    /// The problem document (without trace id).
    pub fn problem(&self) -> Problem {
        let status = self.status();
        let field = match self {
            ApiError::BadRequest { field, .. } => field.clone(),
            ApiError::Invalid { field, .. } => Some(field.clone()),
            _ => None,
        };
        let detail = match self {
            ApiError::Internal(_) => {
                "the server failed; the error is logged under this request's trace id".to_owned()
            }
            ApiError::Invalid { detail, .. } | ApiError::BadRequest { detail, .. } => {
                detail.clone()
            }
            other => other.to_string(),
        };
        Problem {
            type_: format!("urn:sakshi:problem:{}", self.slug()),
            title: status.canonical_reason().unwrap_or("Error").to_owned(),
            status: status.as_u16(),
            detail,
            errors: field
                .map(|f| {
                    vec![FieldError {
                        field: f,
                        message: match self {
                            ApiError::Invalid { detail, .. }
                            | ApiError::BadRequest { detail, .. } => detail.clone(),
                            _ => String::new(),
                        },
                    }]
                })
                .unwrap_or_default(),
        }
    }
}

/// An RFC 9457 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Problem {
    /// URI naming the problem kind.
    #[serde(rename = "type")]
    pub type_: String,
    /// Short summary (the HTTP reason phrase).
    pub title: String,
    /// HTTP status.
    pub status: u16,
    /// What happened, for humans.
    pub detail: String,
    /// The offending fields, for 400/422.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<FieldError>,
}

/// One offending field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct FieldError {
    /// Field path, e.g. `memory_mib`.
    pub field: String,
    /// What is wrong with it.
    pub message: String,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        if let ApiError::Internal(e) = &self {
            let mut chain = e.to_string();
            let mut src = e.source();
            while let Some(s) = src {
                chain.push_str(": ");
                chain.push_str(&s.to_string());
                src = s.source();
            }
            tracing::error!(error = %chain, "request failed");
        }
        let status = self.status();
        let mut resp = (status, Json(self.problem())).into_response();
        resp.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        match &self {
            ApiError::Unauthenticated => {
                resp.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"sakshi\""),
                );
            }
            ApiError::TooManyAttempts { retry_after_s } => {
                if let Ok(v) = HeaderValue::from_str(&retry_after_s.to_string()) {
                    resp.headers_mut().insert(header::RETRY_AFTER, v);
                }
            }
            _ => {}
        }
        resp
    }
}

impl From<crate::backend::VmError> for ApiError {
    fn from(e: crate::backend::VmError) -> Self {
        use crate::backend::VmError as E;
        match e {
            E::NotFound(_) => ApiError::NotFound(e.to_string()),
            E::InvalidState { .. } => ApiError::Conflict(e.to_string()),
            E::Rejected { field, reason } => ApiError::invalid(field, reason),
            E::Limit(_) => ApiError::Conflict(e.to_string()),
            E::Host(_) => ApiError::internal(e),
        }
    }
}

impl From<crate::backend::AuditQueryError> for ApiError {
    fn from(e: crate::backend::AuditQueryError) -> Self {
        use crate::backend::AuditQueryError as E;
        match e {
            E::NotFound(m) => ApiError::NotFound(m),
            E::Invalid { field, reason } => ApiError::invalid(field, reason),
            E::Store(_) => ApiError::internal(e),
        }
    }
}

impl From<crate::backend::AuditAppendError> for ApiError {
    fn from(e: crate::backend::AuditAppendError) -> Self {
        ApiError::internal(e)
    }
}

impl From<crate::auth::UserError> for ApiError {
    fn from(e: crate::auth::UserError) -> Self {
        use crate::auth::UserError as E;
        match e {
            E::Exists(_) | E::LastAdmin => ApiError::Conflict(e.to_string()),
            E::NoSuchUser(_) | E::NoSuchToken(_) => ApiError::NotFound(e.to_string()),
            E::Corrupt(_) | E::Db(_) => ApiError::internal(e),
        }
    }
}

impl From<tokio::task::JoinError> for ApiError {
    fn from(e: tokio::task::JoinError) -> Self {
        ApiError::internal(e)
    }
}
