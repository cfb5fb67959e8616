//! Extractors whose rejections are problem documents naming the offending field.

use crate::error::ApiError;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, FailedToBufferBody};
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::{header, request::Parts};
use serde::de::DeserializeOwned;
use std::error::Error as StdError;

/// A JSON body: `Content-Type: application/json`, within the body limit, unknown fields rejected
/// by the target type.
#[derive(Debug)]
pub struct ApiJson<T>(pub T);

/// Field name from a serde message such as ``missing field `name` `` or ``unknown field `x`, ...``.
fn backticked(msg: &str) -> Option<&str> {
    let start = msg.find('`')? + 1;
    let len = msg[start..].find('`')?;
    Some(&msg[start..start + len])
}

fn field_of(path: &str, msg: &str) -> Option<String> {
    let path = path.trim_start_matches('.');
    if path.starts_with('[') {
        // The body is not an object at all; no field to blame.
        return None;
    }
    let named = if msg.starts_with("missing field") || msg.starts_with("unknown field") {
        backticked(msg)
    } else {
        None
    };
    match (path.is_empty() || path == "?", named) {
        (true, Some(n)) => Some(n.to_owned()),
        (true, None) => None,
        (false, Some(n)) if msg.starts_with("missing field") => Some(format!("{path}.{n}")),
        (false, _) => Some(path.to_owned()),
    }
}

/// Reads the body within the configured limit.
pub async fn body_bytes(req: Request) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, &()).await.map_err(|e| match e {
        BytesRejection::FailedToBufferBody(FailedToBufferBody::LengthLimitError(_)) => {
            ApiError::TooLarge { limit: 0 }
        }
        other => ApiError::BadRequest {
            field: None,
            detail: format!("cannot read request body: {}", other.body_text()),
        },
    })
}

/// Deserializes JSON, naming the offending field on failure.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    let value: T = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let msg = inner.to_string();
        // Drop serde_json's " at line L column C" suffix from the human message.
        let short = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        let field = if inner.is_syntax() || inner.is_eof() {
            None
        } else {
            field_of(&path, &short)
        };
        let detail = match &field {
            Some(f) if !short.contains(f.as_str()) => format!("{f}: {short}"),
            _ if inner.is_syntax() || inner.is_eof() => format!("malformed JSON: {msg}"),
            _ => short,
        };
        ApiError::BadRequest { field, detail }
    })?;
    Ok(value)
}

impl<T: DeserializeOwned> FromRequest<crate::state::AppState> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(
        req: Request,
        app: &crate::state::AppState,
    ) -> Result<Self, Self::Rejection> {
        let ok_type = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
        if !ok_type {
            return Err(ApiError::UnsupportedMediaType {
                expected: "application/json",
            });
        }
        let limit = app.inner.settings.max_body_bytes;
        let bytes = body_bytes(req).await.map_err(|e| match e {
            ApiError::TooLarge { .. } => ApiError::TooLarge { limit },
            e => e,
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Query parameters; unknown parameters are rejected by the target type.
#[derive(Debug)]
pub struct ApiQuery<T>(pub T);

fn query_error_field(e: &(dyn StdError + 'static)) -> Option<(String, String)> {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(p) = err.downcast_ref::<serde_path_to_error::Error<serde::de::value::Error>>() {
            let msg = p.inner().to_string();
            let field = field_of(&p.path().to_string(), &msg)?;
            return Some((field, msg));
        }
        cur = err.source();
    }
    None
}

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for ApiQuery<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        match Query::<T>::from_request_parts(parts, state).await {
            Ok(Query(v)) => Ok(ApiQuery(v)),
            Err(rej) => Err(match query_error_field(&rej) {
                Some((field, msg)) => ApiError::BadRequest {
                    detail: if msg.contains(&field) {
                        msg
                    } else {
                        format!("{field}: {msg}")
                    },
                    field: Some(field),
                },
                None => ApiError::BadRequest {
                    field: None,
                    detail: rej.body_text(),
                },
            }),
        }
    }
}

/// Path parameters.
#[derive(Debug)]
pub struct ApiPath<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for ApiPath<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        Path::<T>::from_request_parts(parts, state)
            .await
            .map(|Path(v)| ApiPath(v))
            .map_err(|rej| ApiError::BadRequest {
                field: None,
                detail: rej.body_text(),
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Body {
        name: String,
        vcpus: u8,
        #[serde(default)]
        inner: Option<Inner>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        depth: u32,
    }

    fn field(r: Result<Body, ApiError>) -> Option<String> {
        match r {
            Err(ApiError::BadRequest { field, .. }) => field,
            other => panic!("expected a bad request, got {other:?}"),
        }
    }

    #[test]
    fn json_errors_name_the_field() {
        assert!(parse_json::<Body>(br#"{"name":"a","vcpus":1}"#).is_ok());
        assert_eq!(
            field(parse_json(br#"{"name":"a","vcpus":1,"bogus":2}"#)).as_deref(),
            Some("bogus")
        );
        assert_eq!(
            field(parse_json(br#"{"vcpus":1}"#)).as_deref(),
            Some("name")
        );
        assert_eq!(
            field(parse_json(br#"{"name":"a","vcpus":"x"}"#)).as_deref(),
            Some("vcpus")
        );
        assert_eq!(
            field(parse_json(br#"{"name":"a","vcpus":300}"#)).as_deref(),
            Some("vcpus")
        );
        assert_eq!(
            field(parse_json(
                br#"{"name":"a","vcpus":1,"inner":{"depth":-1}}"#
            ))
            .as_deref(),
            Some("inner.depth")
        );
        assert_eq!(
            field(parse_json(br#"{"name":"a","vcpus":1,"inner":{"deep":1}}"#)).as_deref(),
            Some("inner.deep")
        );
        assert_eq!(field(parse_json(br#"{"name":"a","#)), None);
        assert_eq!(field(parse_json(b"[1,2]")), None);
    }
}
