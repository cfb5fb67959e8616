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
}
