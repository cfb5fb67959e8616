//! The server span of every HTTP request (axum middleware).

use axum::extract::{MatchedPath, Request, State};
use axum::http::{HeaderMap, Method};
use axum::middleware::Next;
use axum::response::Response;

use super::trace::{SpanId, SpanStatus, TraceId};
use crate::ctx::Ctx;
use crate::state::AppState;

/// The method as a span name part: the standard methods, anything else `_OTHER` (OpenTelemetry
/// HTTP semantic conventions; keeps span names bounded).
fn method_name(m: &Method) -> &'static str {
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::DELETE => "DELETE",
        Method::PATCH => "PATCH",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        Method::CONNECT => "CONNECT",
        Method::TRACE => "TRACE",
        _ => "_OTHER",
    }
}

/// The parent span id of a W3C `traceparent` header (`00-<trace id>-<parent id>-<flags>`) when
/// its trace id is `trace_id` (the one the request context adopted).
fn remote_parent(headers: &HeaderMap, trace_id: TraceId) -> Option<SpanId> {
    let value = headers.get("traceparent")?.to_str().ok()?;
    let mut parts = value.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || flags.len() != 2 {
        return None;
    }
    (trace.parse::<TraceId>().ok()? == trace_id)
        .then(|| parent.parse().ok())
        .flatten()
}

/// Wraps every request in a SERVER span named `<METHOD> <route template>` (the matched route,
/// never the raw path: bounded cardinality; unmatched requests are named by the method alone),
/// in the request's trace (its `traceparent`, else the id the context middleware chose), with
/// `http.response.status_code`; 5xx answers mark the span as an error. Must run inside
/// the request-context middleware (`ctx::context`).
pub(crate) async fn trace_request(
    State(app): State<AppState>,
    req: Request,
    next: Next,
) -> Response {
    let Some(telemetry) = app.telemetry() else {
        return next.run(req).await;
    };
    let trace_id = req
        .extensions()
        .get::<Ctx>()
        .and_then(|c| c.trace_id.parse::<TraceId>().ok())
        .unwrap_or_else(TraceId::random);
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_default();
    let parent = remote_parent(req.headers(), trace_id);
    let mut span =
        telemetry.request_span_with_parent(method_name(req.method()), &route, trace_id, parent);
    let response = next.run(req).await;
    let status = response.status();
    span.set_int("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.set_status(SpanStatus::Error(status.to_string()));
    }
    span.end();
    response
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::HeaderValue;

    #[test]
    fn traceparent_parent_is_taken_only_for_the_adopted_trace() {
        let trace: TraceId = "4bf92f3577b34da6a3ce929d0e0e4736".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert(
            "traceparent",
            HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
        );
        assert_eq!(
            remote_parent(&h, trace).map(|s| s.to_string()).as_deref(),
            Some("00f067aa0ba902b7")
        );
        assert_eq!(remote_parent(&h, TraceId::random()), None);
        for bad in [
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00F067AA0BA902B7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736",
        ] {
            h.insert("traceparent", HeaderValue::from_static(bad));
            assert_eq!(remote_parent(&h, trace), None, "{bad}");
        }
        assert_eq!(method_name(&Method::from_bytes(b"BREW").unwrap()), "_OTHER");
    }
}
