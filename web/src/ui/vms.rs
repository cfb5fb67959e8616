//! VM list, detail and lifecycle forms.

use super::{
    Chrome, UiError, UiForm, UiResult, fmt_kib, fmt_time, fmt_us, render, see_other, short,
};
use crate::api::types::CreateVmRequest;
use crate::backend::{VmDetail, VmState, VmSummary};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::images::{ImageInfo, ImageKind};
use crate::ops::{self, VmAction};
use crate::state::AppState;
use askama::Template;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;

/// A VM row, preformatted.
pub struct VmRow {
    id: String,
    name: String,
    state: &'static str,
    vcpus: u8,
    memory_mib: u32,
    boot: String,
    rss: String,
    created: String,
    kernel: String,
}

impl From<&VmSummary> for VmRow {
    fn from(v: &VmSummary) -> VmRow {
        VmRow {
            id: v.id.clone(),
            name: v.name.clone(),
            state: v.state.as_str(),
            vcpus: v.vcpus,
            memory_mib: v.memory_mib,
            boot: fmt_us(v.boot_latency_us),
            rss: fmt_kib(v.rss_kib),
            created: fmt_time(&v.created_at),
            kernel: short(&v.kernel_sha256),
        }
    }
}

/// Values of the create form, echoed back on error.
#[derive(Debug, Clone, Default)]
pub struct CreateValues {
    name: String,
    kernel: String,
    initrd: String,
    cmdline: String,
    vcpus: String,
    memory: String,
}

#[derive(Template)]
#[template(path = "vms.html")]
struct VmsPage {
    c: Chrome,
    vms: Vec<VmRow>,
    kernels: Vec<ImageInfo>,
    initrds: Vec<ImageInfo>,
    form: CreateValues,
    error: Option<String>,
    error_field: String,
}

async fn list_page(
    app: &AppState,
    ctx: &Ctx,
    status: StatusCode,
    form: CreateValues,
    error: Option<ApiError>,
) -> Result<Response, UiError> {
    let (vms, images) = app
        .blocking(|i| -> Result<_, ApiError> {
            let vms = i.vms.list()?;
            let images = i.images.list().map_err(ApiError::internal)?;
            Ok((vms, images))
        })
        .await
        .ui(ctx)?
        .ui(ctx)?;
    let (kernels, initrds) = images
        .into_iter()
        .partition::<Vec<_>, _>(|i| i.kind == ImageKind::Kernel);
    let error_field = match &error {
        Some(ApiError::Invalid { field, .. }) => field.clone(),
        Some(ApiError::BadRequest { field: Some(f), .. }) => f.clone(),
        _ => String::new(),
    };
    Ok(render(
        status,
        &VmsPage {
            c: Chrome::new(ctx, "vms"),
            vms: vms.iter().map(VmRow::from).collect(),
            kernels,
            initrds,
            form,
            error: error.map(|e| e.problem().detail),
            error_field,
        },
    ))
}

/// `GET /vms`
pub async fn list(State(app): State<AppState>, ctx: Ctx) -> Result<Response, UiError> {
    let form = CreateValues {
        vcpus: "1".to_owned(),
        memory: "64".to_owned(),
        cmdline: "console=ttyS0 run=spin".to_owned(),
        ..Default::default()
    };
    list_page(&app, &ctx, StatusCode::OK, form, None).await
}

/// The create form.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateForm {
    csrf: String,
    name: String,
    kernel_sha256: String,
    #[serde(default)]
    initrd_sha256: String,
    #[serde(default)]
    cmdline: String,
    vcpus: String,
    memory_mib: String,
    #[serde(default)]
    start: Option<String>,
}

/// `POST /vms`
pub async fn create(
    State(app): State<AppState>,
    ctx: Ctx,
    UiForm(f): UiForm<CreateForm>,
) -> Result<Response, UiError> {
    let _ = &f.csrf;
    let values = CreateValues {
        name: f.name.clone(),
        kernel: f.kernel_sha256.clone(),
        initrd: f.initrd_sha256.clone(),
        cmdline: f.cmdline.clone(),
        vcpus: f.vcpus.clone(),
        memory: f.memory_mib.clone(),
    };
    let parsed = (|| {
        let vcpus = f
            .vcpus
            .trim()
            .parse::<u8>()
            .map_err(|_| ApiError::invalid("vcpus", "must be a whole number"))?;
        let memory_mib = f
            .memory_mib
            .trim()
            .parse::<u32>()
            .map_err(|_| ApiError::invalid("memory_mib", "must be a whole number"))?;
        Ok::<_, ApiError>(CreateVmRequest {
            name: f.name.trim().to_owned(),
            kernel_sha256: f.kernel_sha256.trim().to_owned(),
            initrd_sha256: Some(f.initrd_sha256.trim().to_owned()).filter(|s| !s.is_empty()),
            cmdline: f.cmdline.trim().to_owned(),
            vcpus,
            memory_mib,
            start: f.start.is_some(),
        })
    })();
    let result = match parsed {
        Ok(req) => ops::create_vm(&app, &ctx, req).await,
        Err(e) => Err(e),
    };
    match result {
        Ok(d) => Ok(see_other(&format!(
            "/vms/{}",
            super::url_encode(&d.summary.id)
        ))),
        Err(
            e @ (ApiError::Invalid { .. } | ApiError::BadRequest { .. } | ApiError::Conflict(_)),
        ) => {
            let status = e.status();
            list_page(&app, &ctx, status, values, Some(e)).await
        }
        Err(e) => Err(e).ui(&ctx),
    }
}

struct HistoryRow {
    state: &'static str,
    at: String,
    reason: String,
}

#[derive(Template)]
#[template(path = "vm_detail.html")]
struct VmDetailPage {
    c: Chrome,
    vm: VmRow,
    d: VmDetail,
    history: Vec<HistoryRow>,
    console: String,
    can_start: bool,
    can_pause: bool,
    can_resume: bool,
    can_stop: bool,
    can_destroy: bool,
}

/// `GET /vms/{id}`
pub async fn detail(
    State(app): State<AppState>,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Result<Response, UiError> {
    let (d, console) = app
        .blocking(move |i| -> Result<_, ApiError> {
            let d = i.vms.show(&id)?;
            let console = i.vms.console_tail(&id, 8192).unwrap_or_default();
            Ok((d, console))
        })
        .await
        .ui(&ctx)?
        .ui(&ctx)?;
    let s = d.summary.state;
    let history = d
        .history
        .iter()
        .map(|h| HistoryRow {
            state: h.state.as_str(),
            at: fmt_time(&h.at),
            reason: h.reason.clone().unwrap_or_default(),
        })
        .collect();
    Ok(render(
        StatusCode::OK,
        &VmDetailPage {
            c: Chrome::new(&ctx, "vms"),
            vm: VmRow::from(&d.summary),
            history,
            console,
            can_start: s == VmState::Created,
            can_pause: s == VmState::Running,
            can_resume: s == VmState::Paused,
            can_stop: matches!(s, VmState::Booting | VmState::Running | VmState::Paused),
            can_destroy: true,
            d,
        },
    ))
}

async fn act(app: AppState, ctx: Ctx, id: String, a: VmAction) -> Result<Response, UiError> {
    ops::vm_action(&app, &ctx, id.clone(), a).await.ui(&ctx)?;
    if a == VmAction::Destroy {
        Ok(see_other("/vms"))
    } else {
        Ok(see_other(&format!("/vms/{}", super::url_encode(&id))))
    }
}

macro_rules! action_handler {
    ($name:ident, $action:expr, $doc:literal) => {
        #[doc = $doc]
        pub async fn $name(
            State(app): State<AppState>,
            ctx: Ctx,
            Path(id): Path<String>,
            UiForm(_f): UiForm<super::ButtonForm>,
        ) -> Result<Response, UiError> {
            act(app, ctx, id, $action).await
        }
    };
}

action_handler!(start, VmAction::Start, "`POST /vms/{id}/start`");
action_handler!(pause, VmAction::Pause, "`POST /vms/{id}/pause`");
action_handler!(resume, VmAction::Resume, "`POST /vms/{id}/resume`");
action_handler!(stop, VmAction::Stop, "`POST /vms/{id}/stop`");
action_handler!(destroy, VmAction::Destroy, "`POST /vms/{id}/destroy`");
