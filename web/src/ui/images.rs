//! Image list.

use super::{Chrome, UiError, UiResult, fmt_time, render};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;

struct ImageRow {
    sha256: String,
    name: String,
    kind: &'static str,
    size: String,
    added_at: String,
    added_by: String,
}

#[derive(Template)]
#[template(path = "images.html")]
struct ImagesPage {
    c: Chrome,
    images: Vec<ImageRow>,
}

fn fmt_size(n: u64) -> String {
    match n {
        0..1024 => format!("{n} B"),
        1024..1_048_576 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// `GET /images`
pub async fn list(State(app): State<AppState>, ctx: Ctx) -> Result<Response, UiError> {
    let images = app
        .blocking(|i| i.images.list().map_err(ApiError::internal))
        .await
        .ui(&ctx)?
        .ui(&ctx)?;
    let images = images
        .into_iter()
        .map(|i| ImageRow {
            size: fmt_size(i.size),
            added_at: fmt_time(&i.added_at),
            kind: i.kind.as_str(),
            sha256: i.sha256,
            name: i.name,
            added_by: i.added_by,
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &ImagesPage {
            c: Chrome::new(&ctx, "images"),
            images,
        },
    ))
}
