//! The route table: every route's method, path, surface and required permission in one place.
//! The router, the authorization guard, the OpenAPI document and the route x role test are all
//! driven by [`ROUTES`].

use crate::actions::AuditAction;
use crate::backend::Outcome;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::rbac::Permission;
use crate::state::AppState;
use crate::{api, ui};
use axum::Router;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, FromRequest, Request, State};
use axum::http::{Method, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{MethodRouter, delete, get, post, put};

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    /// Anyone (health, OpenAPI, login, static assets).
    Public,
    /// Callers whose role holds the permission.
    Perm(Permission),
}

/// Which face of the appliance a route belongs to (decides the error style).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    /// JSON API under `/api/v1`.
    Api,
    /// Server-rendered dashboard.
    Ui,
}

/// Every operation.
#[allow(missing_docs)]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    Health,
    OpenApi,
    Whoami,
    Overview,
    VmList,
    VmCreate,
    VmShow,
    VmDestroy,
    VmStart,
    VmPause,
    VmResume,
    VmStop,
    VmConsole,
    ImageList,
    ImageUpload,
    ImageShow,
    ImageApprove,
    ImageRevoke,
    Golden,
    AuditEntries,
    AuditEntry,
    AuditInclusion,
    AuditConsistency,
    AuditVerify,
    AuditCheckpoints,
    AttestQuote,
    EvidenceExport,
    ReportHtml,
    PatchList,
    PatchRecord,
    Metrics,
    UserList,
    UserCreate,
    UserDelete,
    UserResetPassword,
    OwnPassword,
    TokenList,
    TokenCreate,
    TokenRevoke,
    TokenLogin,
    UiStatic,
    UiLoginForm,
    UiLogin,
    UiLogout,
    UiOverview,
    UiVms,
    UiVmCreate,
    UiVmDetail,
    UiVmStart,
    UiVmPause,
    UiVmResume,
    UiVmStop,
    UiVmDestroy,
    UiImages,
    UiAudit,
    UiAuditEntry,
    UiAuditVerify,
    UiAttestation,
    UiEvidence,
    UiEvidenceExport,
    UiReport,
    UiPatches,
    UiAttestationVerify,
    UiAttestationAk,
    UiAttestationLog,
    UiUsers,
    UiUserCreate,
    UiUserDelete,
    UiAccount,
    UiPassword,
    UiTokenCreate,
    UiTokenRevoke,
}

/// One row of the route table.
#[derive(Debug, Clone)]
pub struct Route {
    /// Operation (selects the handler and its documentation).
    pub op: Op,
    /// HTTP method.
    pub method: Method,
    /// Path template (axum syntax, `{param}`).
    pub path: &'static str,
    /// API or dashboard.
    pub surface: Surface,
    /// Who may call it.
    pub access: Access,
}

macro_rules! routes {
    ($($op:ident $method:ident $path:literal $surface:ident $access:expr;)*) => {
        /// The route table.
        pub const ROUTES: &[Route] = &[$(Route {
            op: Op::$op,
            method: Method::$method,
            path: $path,
            surface: Surface::$surface,
            access: $access,
        }),*];
    };
}

use Access::{Perm, Public};
use Permission as P;

routes! {
    Health GET "/api/v1/health" Api Public;
    OpenApi GET "/api/v1/openapi.json" Api Public;
    Whoami GET "/api/v1/whoami" Api Perm(P::ViewAppliance);
    Overview GET "/api/v1/overview" Api Perm(P::ViewAppliance);
    VmList GET "/api/v1/vms" Api Perm(P::VmRead);
    VmCreate POST "/api/v1/vms" Api Perm(P::VmLifecycle);
    VmShow GET "/api/v1/vms/{id}" Api Perm(P::VmRead);
    VmDestroy DELETE "/api/v1/vms/{id}" Api Perm(P::VmLifecycle);
    VmStart POST "/api/v1/vms/{id}/start" Api Perm(P::VmLifecycle);
    VmPause POST "/api/v1/vms/{id}/pause" Api Perm(P::VmLifecycle);
    VmResume POST "/api/v1/vms/{id}/resume" Api Perm(P::VmLifecycle);
    VmStop POST "/api/v1/vms/{id}/stop" Api Perm(P::VmLifecycle);
    VmConsole GET "/api/v1/vms/{id}/console" Api Perm(P::VmRead);
    ImageList GET "/api/v1/images" Api Perm(P::ImageRead);
    ImageUpload POST "/api/v1/images" Api Perm(P::ImageWrite);
    ImageShow GET "/api/v1/images/{sha256}" Api Perm(P::ImageRead);
    ImageApprove POST "/api/v1/images/{sha256}/approval" Api Perm(P::ImageApprove);
    ImageRevoke DELETE "/api/v1/images/{sha256}/approval" Api Perm(P::ImageApprove);
    Golden GET "/api/v1/golden" Api Perm(P::ImageRead);
    AuditEntries GET "/api/v1/audit/entries" Api Perm(P::AuditRead);
    AuditEntry GET "/api/v1/audit/entries/{index}" Api Perm(P::AuditRead);
    AuditInclusion GET "/api/v1/audit/entries/{index}/proof" Api Perm(P::AuditRead);
    AuditConsistency GET "/api/v1/audit/consistency" Api Perm(P::AuditRead);
    AuditVerify POST "/api/v1/audit/verify" Api Perm(P::AuditRead);
    AuditCheckpoints GET "/api/v1/audit/checkpoints" Api Perm(P::AuditRead);
    AttestQuote POST "/api/v1/attestations" Api Perm(P::AuditRead);
    EvidenceExport POST "/api/v1/evidence" Api Perm(P::EvidenceExport);
    ReportHtml GET "/api/v1/reports/{framework}" Api Perm(P::EvidenceExport);
    PatchList GET "/api/v1/patches" Api Perm(P::PatchRead);
    PatchRecord POST "/api/v1/patches" Api Perm(P::PatchRecord);
    Metrics GET "/metrics" Api Perm(P::ViewAppliance);
    UserList GET "/api/v1/users" Api Perm(P::UserAdmin);
    UserCreate POST "/api/v1/users" Api Perm(P::UserAdmin);
    UserDelete DELETE "/api/v1/users/{name}" Api Perm(P::UserAdmin);
    UserResetPassword PUT "/api/v1/users/{name}/password" Api Perm(P::UserAdmin);
    OwnPassword PUT "/api/v1/account/password" Api Perm(P::ViewAppliance);
    TokenList GET "/api/v1/tokens" Api Perm(P::ViewAppliance);
    TokenCreate POST "/api/v1/tokens" Api Perm(P::ViewAppliance);
    TokenRevoke DELETE "/api/v1/tokens/{id}" Api Perm(P::ViewAppliance);
    TokenLogin POST "/api/v1/auth/token" Api Public;
    UiStatic GET "/static/{file}" Ui Public;
    UiLoginForm GET "/login" Ui Public;
    UiLogin POST "/login" Ui Public;
    UiLogout POST "/logout" Ui Perm(P::ViewAppliance);
    UiOverview GET "/" Ui Perm(P::ViewAppliance);
    UiVms GET "/vms" Ui Perm(P::VmRead);
    UiVmCreate POST "/vms" Ui Perm(P::VmLifecycle);
    UiVmDetail GET "/vms/{id}" Ui Perm(P::VmRead);
    UiVmStart POST "/vms/{id}/start" Ui Perm(P::VmLifecycle);
    UiVmPause POST "/vms/{id}/pause" Ui Perm(P::VmLifecycle);
    UiVmResume POST "/vms/{id}/resume" Ui Perm(P::VmLifecycle);
    UiVmStop POST "/vms/{id}/stop" Ui Perm(P::VmLifecycle);
    UiVmDestroy POST "/vms/{id}/destroy" Ui Perm(P::VmLifecycle);
    UiImages GET "/images" Ui Perm(P::ImageRead);
    UiAudit GET "/audit" Ui Perm(P::AuditRead);
    UiAuditEntry GET "/audit/{index}" Ui Perm(P::AuditRead);
    UiAuditVerify POST "/audit/verify" Ui Perm(P::AuditRead);
    UiAttestation GET "/attestation" Ui Perm(P::ViewAppliance);
    UiEvidence GET "/evidence" Ui Perm(P::EvidenceExport);
    UiEvidenceExport POST "/evidence" Ui Perm(P::EvidenceExport);
    UiReport GET "/evidence/reports/{framework}" Ui Perm(P::EvidenceExport);
    UiPatches GET "/patches" Ui Perm(P::PatchRead);
    UiAttestationVerify POST "/attestation/verify" Ui Perm(P::AuditRead);
    UiAttestationAk GET "/attestation/ak.pem" Ui Perm(P::ViewAppliance);
    UiAttestationLog GET "/attestation/eventlog" Ui Perm(P::AuditRead);
    UiUsers GET "/users" Ui Perm(P::UserAdmin);
    UiUserCreate POST "/users" Ui Perm(P::UserAdmin);
    UiUserDelete POST "/users/{name}/delete" Ui Perm(P::UserAdmin);
    UiAccount GET "/account" Ui Perm(P::ViewAppliance);
    UiPassword POST "/account/password" Ui Perm(P::ViewAppliance);
    UiTokenCreate POST "/account/tokens" Ui Perm(P::ViewAppliance);
    UiTokenRevoke POST "/account/tokens/{id}/revoke" Ui Perm(P::ViewAppliance);
}

fn handler(op: Op, max_image_bytes: usize) -> MethodRouter<AppState> {
    use Op::*;
    match op {
        Health => get(api::misc::health),
        OpenApi => get(api::misc::openapi),
        Whoami => get(api::misc::whoami),
        Overview => get(api::misc::overview),
        VmList => get(api::vms::list),
        VmCreate => post(api::vms::create),
        VmShow => get(api::vms::show),
        VmDestroy => delete(api::vms::destroy),
        VmStart => post(api::vms::start),
        VmPause => post(api::vms::pause),
        VmResume => post(api::vms::resume),
        VmStop => post(api::vms::stop),
        VmConsole => get(api::vms::console),
        ImageList => get(api::images::list),
        ImageUpload => post(api::images::upload).layer(DefaultBodyLimit::max(max_image_bytes)),
        ImageShow => get(api::images::show),
        ImageApprove => post(api::golden::approve),
        ImageRevoke => delete(api::golden::revoke),
        Golden => get(api::golden::show),
        AuditEntries => get(api::audit::entries),
        AuditEntry => get(api::audit::entry),
        AuditInclusion => get(api::audit::inclusion),
        AuditConsistency => get(api::audit::consistency),
        AuditVerify => post(api::audit::verify),
        AuditCheckpoints => get(api::audit::checkpoints),
        AttestQuote => post(api::attest::quote),
        EvidenceExport => post(api::evidence::export),
        ReportHtml => get(api::evidence::report),
        PatchList => get(api::patches::list),
        PatchRecord => post(api::patches::create),
        Metrics => get(api::misc::metrics),
        UserList => get(api::users::list),
        UserCreate => post(api::users::create),
        UserDelete => delete(api::users::delete),
        UserResetPassword => put(api::users::reset_password),
        OwnPassword => put(api::users::own_password),
        TokenList => get(api::tokens::list),
        TokenCreate => post(api::tokens::create),
        TokenRevoke => delete(api::tokens::revoke),
        TokenLogin => post(api::tokens::login),
        UiStatic => get(ui::static_file),
        UiLoginForm => get(ui::auth::login_form),
        UiLogin => post(ui::auth::login),
        UiLogout => post(ui::auth::logout),
        UiOverview => get(ui::overview::page),
        UiVms => get(ui::vms::list),
        UiVmCreate => post(ui::vms::create),
        UiVmDetail => get(ui::vms::detail),
        UiVmStart => post(ui::vms::start),
        UiVmPause => post(ui::vms::pause),
        UiVmResume => post(ui::vms::resume),
        UiVmStop => post(ui::vms::stop),
        UiVmDestroy => post(ui::vms::destroy),
        UiImages => get(ui::images::list),
        UiAudit => get(ui::audit::list),
        UiAuditEntry => get(ui::audit::entry),
        UiAuditVerify => post(ui::audit::verify),
        UiAttestation => get(ui::attestation::show),
        UiAttestationVerify => post(ui::attestation::verify),
        UiAttestationAk => get(ui::attestation::ak_pem),
        UiAttestationLog => get(ui::attestation::event_log),
        UiEvidence => get(ui::evidence::page),
        UiEvidenceExport => post(ui::evidence::export),
        UiReport => get(ui::evidence::report),
        UiPatches => get(ui::evidence::patches),
        UiUsers => get(ui::users::list),
        UiUserCreate => post(ui::users::create),
        UiUserDelete => post(ui::users::delete),
        UiAccount => get(ui::users::account),
        UiPassword => post(ui::users::password),
        UiTokenCreate => post(ui::users::token_create),
        UiTokenRevoke => post(ui::users::token_revoke),
    }
}

/// Builds the whole application router.
pub fn build_router(state: AppState) -> Router {
    let settings = state.inner.settings.clone();
    let mut router = Router::new();
    for route in ROUTES {
        let guarded = handler(route.op, settings.max_image_bytes).route_layer(
            middleware::from_fn_with_state((state.clone(), route), guard),
        );
        router = router.route(route.path, guarded);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(settings.max_body_bytes))
        // Inside `context`, which resolves the trace id the span uses.
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::otlp::trace_request,
        ))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::ctx::context,
        ))
        .with_state(state)
}

fn is_api(path: &str) -> bool {
    path == "/api" || path.starts_with("/api/")
}

async fn not_found(req: Request) -> Response {
    let path = req.uri().path().to_owned();
    if is_api(&path) {
        ApiError::NotFound(format!("no route {path}")).into_response()
    } else {
        ui::error_page(&req, ApiError::NotFound(format!("no page {path}")))
    }
}

async fn method_not_allowed(req: Request) -> Response {
    let e = ApiError::MethodNotAllowed(format!(
        "method {} not allowed on {}",
        req.method(),
        req.uri().path()
    ));
    if is_api(req.uri().path()) {
        e.into_response()
    } else {
        ui::error_page(&req, e)
    }
}

/// Why the guard refused a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Denial {
    Unauthenticated,
    Forbidden(Permission),
    Csrf,
}

#[derive(serde::Deserialize)]
struct CsrfField {
    csrf: Option<String>,
}

/// Header carrying the CSRF token on state-changing API calls made with a session cookie.
pub const CSRF_HEADER: &str = "x-csrf-token";

/// Enforces the route's access rule and CSRF on every state-changing session request; every
/// denial is audited.
async fn guard(
    State((app, route)): State<(AppState, &'static Route)>,
    req: Request,
    next: Next,
) -> Response {
    let Some(ctx) = req.extensions().get::<Ctx>().cloned() else {
        return ApiError::Unauthenticated.into_response();
    };
    let denial = match (route.access, &ctx.principal) {
        (Access::Public, _) => None,
        _ if route.op == Op::Metrics && loopback_metrics(&app, &ctx) => None,
        (Access::Perm(_), None) => Some(Denial::Unauthenticated),
        (Access::Perm(p), Some(pr)) if !pr.role.allows(p) => Some(Denial::Forbidden(p)),
        (Access::Perm(_), Some(_)) => None,
    };
    let (req, denial) = match denial {
        Some(d) => (req, Some(d)),
        None => match check_csrf(&app, &ctx, req).await {
            Ok(req) => (req, None),
            Err(CsrfOutcome::Denied(req)) => (req, Some(Denial::Csrf)),
            Err(CsrfOutcome::Response(r)) => return r,
        },
    };
    let Some(denial) = denial else {
        return next.run(req).await;
    };
    let (reason, perm) = match denial {
        Denial::Unauthenticated => ("authentication required", None),
        Denial::Forbidden(p) => ("role lacks permission", Some(p.as_str())),
        Denial::Csrf => ("missing or wrong CSRF token", None),
    };
    let details = serde_json::json!({
        "method": req.method().as_str(),
        "path": req.uri().path(),
        "reason": reason,
        "permission": perm,
    });
    let target = format!("appliance:{} {}", route.method, route.path);
    if let Err(e) = app
        .audit(
            &ctx,
            AuditAction::AccessDenied,
            target,
            Outcome::Denied,
            details,
        )
        .await
    {
        return e.into_response();
    }
    let error = match denial {
        Denial::Unauthenticated => ApiError::Unauthenticated,
        Denial::Forbidden(p) => ApiError::Forbidden(format!(
            "your role ({}) lacks permission {}",
            ctx.role().map_or("none", |r| r.as_str()),
            p.as_str()
        )),
        Denial::Csrf => ApiError::Forbidden("missing or wrong CSRF token".to_owned()),
    };
    match (route.surface, denial) {
        (Surface::Api, _) => error.into_response(),
        (Surface::Ui, Denial::Unauthenticated) => {
            let next = req
                .uri()
                .path_and_query()
                .map(|p| p.as_str())
                .unwrap_or("/");
            if req.method() == Method::GET {
                Redirect::to(&format!("/login?next={}", ui::url_encode(next))).into_response()
            } else {
                Redirect::to("/login").into_response()
            }
        }
        (Surface::Ui, _) => ui::error_page(&req, error),
    }
}

/// `[otlp] prometheus = "loopback"` lets anyone on a loopback address read `/metrics`.
fn loopback_metrics(app: &AppState, ctx: &Ctx) -> bool {
    matches!(
        app.inner.metrics.get(),
        Some((_, crate::otlp::PrometheusAccess::Loopback))
    ) && ctx
        .origin
        .parse::<std::net::IpAddr>()
        .is_ok_and(|ip| ip.is_loopback())
}

enum CsrfOutcome {
    Denied(Request),
    Response(Response),
}

async fn check_csrf(app: &AppState, ctx: &Ctx, req: Request) -> Result<Request, CsrfOutcome> {
    let safe = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    let Some(expected) = ctx.csrf() else {
        return Ok(req);
    };
    if safe {
        return Ok(req);
    }
    if let Some(h) = req.headers().get(CSRF_HEADER) {
        return if crate::auth::secrets_equal(h.as_bytes(), expected.as_bytes()) {
            Ok(req)
        } else {
            Err(CsrfOutcome::Denied(req))
        };
    }
    let is_form = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return Err(CsrfOutcome::Denied(req));
    }
    let (parts, body) = req.into_parts();
    let bytes = match axum::body::to_bytes(body, app.inner.settings.max_body_bytes).await {
        Ok(b) => b,
        Err(_) => {
            let limit = app.inner.settings.max_body_bytes;
            let req = Request::from_parts(parts, Body::empty());
            return Err(CsrfOutcome::Response(ui::error_page(
                &req,
                ApiError::TooLarge { limit },
            )));
        }
    };
    let probe = Request::from_parts(parts.clone(), Body::from(bytes.clone()));
    let given = axum::Form::<CsrfField>::from_request(probe, &())
        .await
        .ok()
        .and_then(|f| f.0.csrf);
    let req = Request::from_parts(parts, Body::from(bytes));
    match given {
        Some(g) if crate::auth::secrets_equal(g.as_bytes(), expected.as_bytes()) => Ok(req),
        _ => Err(CsrfOutcome::Denied(req)),
    }
}
