//! Health, OpenAPI, whoami, overview.

use super::types::{Health, Overview, Whoami};
use crate::ctx::{Ctx, Via};
use crate::error::ApiError;
use crate::rbac::Permission;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;

/// `GET /api/v1/health`
pub async fn health() -> Json<Health> {
    Json(Health {
        status: "ok".to_owned(),
        version: env!("CARGO_PKG_VERSION").to_owned(),
    })
}

/// `GET /api/v1/openapi.json`
pub async fn openapi() -> impl IntoResponse {
    (
        [(header::CACHE_CONTROL, "public, max-age=300")],
        Json(crate::openapi::document()),
    )
}

/// `GET /api/v1/whoami`
pub async fn whoami(ctx: Ctx) -> Result<Json<Whoami>, ApiError> {
    let p = ctx.principal.ok_or(ApiError::Unauthenticated)?;
    let permissions = ALL_PERMISSIONS
        .iter()
        .filter(|perm| p.role.allows(**perm))
        .map(|perm| perm.as_str().to_owned())
        .collect();
    Ok(Json(Whoami {
        user: p.user,
        role: p.role,
        auth: match p.via {
            Via::Session { .. } => "session".to_owned(),
            Via::Token { .. } => "token".to_owned(),
            Via::Password => "password".to_owned(),
        },
        permissions,
    }))
}

const ALL_PERMISSIONS: [Permission; 12] = [
    Permission::ViewAppliance,
    Permission::VmRead,
    Permission::VmLifecycle,
    Permission::VmSnapshot,
    Permission::VmQuarantine,
    Permission::ImageRead,
    Permission::ImageWrite,
    Permission::AuditRead,
    Permission::EvidenceExport,
    Permission::PatchRead,
    Permission::PatchRecord,
    Permission::UserAdmin,
];

/// `GET /api/v1/overview`
pub async fn overview(State(app): State<AppState>, ctx: Ctx) -> Result<Json<Overview>, ApiError> {
    Ok(Json(crate::ops::overview(&app, &ctx).await?))
}

/// `GET /metrics`: Prometheus text exposition of the appliance metrics (404 without `[otlp]`).
pub async fn metrics(State(app): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let (m, _) = app
        .inner
        .metrics
        .get()
        .ok_or_else(|| ApiError::NotFound("metrics are off (no [otlp] table)".to_owned()))?;
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        m.render_prometheus(),
    ))
}
