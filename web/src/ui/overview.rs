//! The overview page.

use super::{Chrome, UiError, UiResult, fmt_time, render, short};
use crate::api::types::Overview;
use crate::ctx::Ctx;
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    c: Chrome,
    o: Overview,
    root_short: String,
    checkpoint: Option<(u64, String)>,
    uptime: String,
    /// SIEM delivery: (state, failing since (UTC), lag in seconds), when OTLP is configured.
    siem: Option<(&'static str, Option<String>, String)>,
}

/// The SIEM delivery state in words, the time exports started failing, and the lag.
fn siem_view(h: &crate::otlp::DeliveryHealth) -> (&'static str, Option<String>, String) {
    let state = match h.state {
        crate::otlp::DeliveryState::Healthy => "ok",
        crate::otlp::DeliveryState::Retrying => "lagging (retrying)",
        crate::otlp::DeliveryState::LoggingFailure => "LOGGING FAILURE (PCI-DSS 10.7)",
    };
    let since = h.failing_since_unix_ms.and_then(|ms| {
        chrono::DateTime::from_timestamp_millis(i64::try_from(ms).ok()?)
            .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
    });
    (state, since, format!("{:.0} s", h.lag_secs))
}

fn fmt_uptime(s: u64) -> String {
    match s {
        0..60 => format!("{s} s"),
        60..3600 => format!("{} min", s / 60),
        3600..86400 => format!("{} h {} min", s / 3600, (s % 3600) / 60),
        _ => format!("{} d {} h", s / 86400, (s % 86400) / 3600),
    }
}

/// `GET /`
pub async fn page(State(app): State<AppState>, ctx: Ctx) -> Result<Response, UiError> {
    let o = crate::ops::overview(&app, &ctx).await.ui(&ctx)?;
    Ok(render(
        StatusCode::OK,
        &OverviewPage {
            c: Chrome::new(&ctx, "overview"),
            root_short: short(&o.audit_root),
            checkpoint: o
                .last_checkpoint
                .as_ref()
                .map(|cp| (cp.size, fmt_time(&cp.time))),
            uptime: fmt_uptime(o.uptime_s),
            siem: o.siem.as_ref().map(siem_view),
            o,
        },
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn uptime() {
        assert_eq!(super::fmt_uptime(5), "5 s");
        assert_eq!(super::fmt_uptime(125), "2 min");
        assert_eq!(super::fmt_uptime(3700), "1 h 1 min");
        assert_eq!(super::fmt_uptime(90000), "1 d 1 h");
    }

    #[test]
    fn siem_state_names_the_logging_failure_and_when_it_began() {
        use crate::otlp::{DeliveryHealth, DeliveryState};
        let mut h = DeliveryHealth {
            state: DeliveryState::LoggingFailure,
            next_seq: 7,
            pending: 3,
            lag_secs: 412.4,
            consecutive_failures: 9,
            last_error: Some("connection refused".into()),
            last_ack_unix_ms: None,
            failing_since_unix_ms: Some(1_764_214_800_000),
        };
        assert_eq!(
            super::siem_view(&h),
            (
                "LOGGING FAILURE (PCI-DSS 10.7)",
                Some("2025-11-27 03:40:00 UTC".to_owned()),
                "412 s".to_owned()
            )
        );
        h.state = DeliveryState::Healthy;
        h.failing_since_unix_ms = None;
        assert_eq!(super::siem_view(&h).0, "ok");
        assert_eq!(super::siem_view(&h).1, None);
    }
}
