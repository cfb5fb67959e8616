//! The attestation page: the TPM and its attestation key, the measurement PCR now, the image
//! policy, the measured boots, the event log, and an on-demand quote verified on the spot.

use super::{Chrome, UiError, UiForm, UiResult, render};
use crate::actions::AuditAction;
use crate::backend::{CheckpointView, HostInfo, Measurement, Outcome};
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::state::AppState;
use askama::Template;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use sakshi_attest::{
    Appraisal, ComponentReport, EventLog, MeasuredEvent, Policy, PolicyMode, Report, Tpm,
    VerifyOptions,
};
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

/// Event-log rows shown on the page (the newest); the downloads carry all of them.
const LOG_ROWS: usize = 50;
/// Audit checkpoints fetched to cross-check the ones bound into the PCR.
const CHECKPOINT_WINDOW: u32 = 100;

struct MeasuredVm {
    id: String,
    name: String,
    state: String,
    measurements: Vec<Measurement>,
}

/// The TPM side of the page (absent when the appliance runs without a TPM).
struct TpmView {
    pcr: u32,
    banks: String,
    ak_pem: String,
    pcr_values: Vec<(String, String)>,
    log_total: usize,
    log_rows: Vec<LogRow>,
}

struct LogRow {
    recnum: u64,
    pcr: u32,
    kind: String,
    detail: String,
    sha256: String,
}

struct GoldenRow {
    component: &'static str,
    sha256: String,
    label: String,
}

struct PolicyView {
    mode: &'static str,
    golden: Vec<GoldenRow>,
}

/// The result of "Quote and verify now".
struct Verification {
    ok: bool,
    nonce: String,
    error: String,
    records: usize,
    pcr_value: String,
    clock: String,
    findings: Vec<String>,
    boots: Vec<BootRow>,
    checkpoints: Vec<CheckpointRow>,
}

struct BootRow {
    vm_id: String,
    boot: u64,
    parts: Vec<(&'static str, String, String)>,
}

struct CheckpointRow {
    tree_size: u64,
    sha256: String,
    /// "matches the audit log", "differs from the audit log" or "older than the last N checkpoints".
    status: &'static str,
    ok: bool,
}

#[derive(Template)]
#[template(path = "attestation.html")]
struct AttestationPage {
    c: Chrome,
    host: HostInfo,
    tpm: Option<TpmView>,
    tpm_error: String,
    policy: Option<PolicyView>,
    verification: Option<Verification>,
    vms: Vec<MeasuredVm>,
    can_quote: bool,
}

fn describe(log_event: Result<MeasuredEvent, sakshi_attest::EventDecodeError>) -> (String, String) {
    match log_event {
        Ok(MeasuredEvent::Boot {
            component,
            vm_id,
            boot,
            ..
        }) => (
            format!("boot {}", component.name()),
            format!("VM {vm_id}, boot #{boot}"),
        ),
        Ok(MeasuredEvent::AuditCheckpoint { tree_size, .. }) => (
            "audit checkpoint".to_owned(),
            format!("tree size {tree_size}"),
        ),
        Err(e) => ("unknown".to_owned(), e.to_string()),
    }
}

fn tpm_view(tpm: &Tpm) -> Result<TpmView, sakshi_attest::TpmError> {
    let pcr_values = tpm
        .read_pcr()?
        .into_iter()
        .map(|(alg, v)| (format!("{alg:?}").to_lowercase(), hex::encode(v)))
        .collect();
    let log = tpm.event_log()?;
    let records = log.records();
    let log_rows = records
        .iter()
        .rev()
        .take(LOG_ROWS)
        .map(|r| {
            let (kind, detail) = describe(r.event());
            LogRow {
                recnum: r.recnum,
                pcr: r.pcr,
                kind,
                detail,
                sha256: r
                    .digest(sakshi_attest::HashAlg::Sha256)
                    .map(hex::encode)
                    .unwrap_or_default(),
            }
        })
        .collect();
    Ok(TpmView {
        pcr: tpm.pcr(),
        banks: tpm
            .banks()
            .iter()
            .map(|b| format!("{b:?}").to_lowercase())
            .collect::<Vec<_>>()
            .join(", "),
        ak_pem: tpm.ak_public_pem().to_owned(),
        pcr_values,
        log_total: log.len(),
        log_rows,
    })
}

fn policy_view(p: &Policy) -> PolicyView {
    let mut golden = Vec::new();
    for (component, set) in [
        ("kernel", &p.kernels),
        ("initrd", &p.initrds),
        ("cmdline", &p.cmdlines),
        ("config", &p.configs),
    ] {
        for (digest, label) in set {
            golden.push(GoldenRow {
                component,
                sha256: digest.to_hex(),
                label: label.clone(),
            });
        }
    }
    PolicyView {
        mode: match p.mode {
            PolicyMode::Enforce => "enforce (unapproved kernels and initrds are refused)",
            PolicyMode::Audit => "audit (unapproved images boot and are flagged)",
        },
        golden,
    }
}

fn appraisal(a: &Appraisal) -> String {
    match a {
        Appraisal::Approved { label } => format!("approved ({label})"),
        Appraisal::NotApproved => "NOT APPROVED".to_owned(),
        Appraisal::NoGoldenValues => "no golden values".to_owned(),
    }
}

/// Turns a verified report into rows, cross-checking every audit checkpoint bound into the PCR
/// against the audit log's own recent checkpoints (SHA-256 of the signed note).
fn verification(nonce: &str, report: &Report, recent: &[CheckpointView]) -> Verification {
    let known: BTreeMap<u64, [u8; 32]> = recent
        .iter()
        .map(|c| (c.size, Sha256::digest(c.text.as_bytes()).into()))
        .collect();
    let oldest = recent.iter().map(|c| c.size).min();
    let checkpoints: Vec<CheckpointRow> = report
        .audit_checkpoints
        .iter()
        .map(|c| {
            let (status, ok) = match known.get(&c.tree_size) {
                Some(h) if *h == c.checkpoint_sha256.0 => ("matches the audit log", true),
                Some(_) => ("DIFFERS from the audit log", false),
                None if oldest.is_some_and(|o| c.tree_size < o) => {
                    ("older than the checkpoints checked here", true)
                }
                None => ("NOT in the audit log", false),
            };
            CheckpointRow {
                tree_size: c.tree_size,
                sha256: c.checkpoint_sha256.to_hex(),
                status,
                ok,
            }
        })
        .collect();
    let part = |name: &'static str, c: &Option<ComponentReport>| {
        c.as_ref()
            .map(|c| (name, c.sha256.to_hex(), appraisal(&c.appraisal)))
    };
    let boots = report
        .vm_boots
        .iter()
        .map(|b| BootRow {
            vm_id: b.vm_id.clone(),
            boot: b.boot,
            parts: [
                part("kernel", &b.kernel),
                part("initrd", &b.initrd),
                part("cmdline", &b.cmdline),
                part("config", &b.config),
            ]
            .into_iter()
            .flatten()
            .collect(),
        })
        .collect();
    let findings: Vec<String> = report
        .findings
        .iter()
        .map(|f| serde_json::to_string(f).unwrap_or_else(|_| format!("{f:?}")))
        .collect();
    Verification {
        ok: findings.is_empty() && checkpoints.iter().all(|c| c.ok),
        nonce: nonce.to_owned(),
        error: String::new(),
        records: report.records,
        pcr_value: report.pcrs.values().next().cloned().unwrap_or_default(),
        clock: format!(
            "clock {} ms, resets {}, restarts {}",
            report.clock.clock, report.clock.reset_count, report.clock.restart_count
        ),
        findings,
        boots,
        checkpoints,
    }
}

async fn page(
    app: &AppState,
    ctx: &Ctx,
    verification: Option<Verification>,
) -> Result<Response, UiError> {
    let (host, vms, tpm, tpm_error, policy) = app
        .blocking(|i| -> Result<_, ApiError> {
            let host = i.vms.host_info();
            let mut out = Vec::new();
            for v in i.vms.list()?.into_iter().take(100) {
                if let Ok(d) = i.vms.show(&v.id) {
                    out.push(MeasuredVm {
                        id: v.id,
                        name: v.name,
                        state: v.state.as_str().to_owned(),
                        measurements: d.measurements,
                    });
                }
            }
            let (tpm, tpm_error) = match i.tpm.get().map(tpm_view) {
                Some(Ok(v)) => (Some(v), String::new()),
                Some(Err(e)) => (None, crate::ops::error_chain(&e)),
                None => (None, String::new()),
            };
            let policy = i.golden.get().map(|g| policy_view(&g.policy()));
            Ok((host, out, tpm, tpm_error, policy))
        })
        .await
        .ui(ctx)?
        .ui(ctx)?;
    let can_quote = ctx
        .role()
        .is_some_and(|r| r.allows(crate::rbac::Permission::AuditRead));
    Ok(render(
        StatusCode::OK,
        &AttestationPage {
            c: Chrome::new(ctx, "attestation"),
            host,
            tpm,
            tpm_error,
            policy,
            verification,
            vms,
            can_quote,
        },
    ))
}

/// `GET /attestation`
pub async fn show(State(app): State<AppState>, ctx: Ctx) -> Result<Response, UiError> {
    page(&app, &ctx, None).await
}

/// `POST /attestation/verify`: a quote with a fresh random nonce, verified at once against the
/// AK, the event log, the golden values and the audit log's checkpoints; audited as
/// `attest.quote`.
pub async fn verify(
    State(app): State<AppState>,
    ctx: Ctx,
    UiForm(_f): UiForm<super::ButtonForm>,
) -> Result<Response, UiError> {
    let nonce: [u8; 32] = rand::random();
    let nonce_hex = hex::encode(nonce);
    let outcome = app
        .blocking(
            move |i| -> Result<Result<(Report, Vec<CheckpointView>), String>, ApiError> {
                let Some(tpm) = i.tpm.get() else {
                    return Ok(Err("no TPM is attached to this appliance".to_owned()));
                };
                let quote = match tpm.quote(&nonce) {
                    Ok(q) => q,
                    Err(e) => return Ok(Err(crate::ops::error_chain(&e))),
                };
                let golden = i
                    .golden
                    .get()
                    .map(|g| g.policy())
                    .unwrap_or_else(|| Policy::new(PolicyMode::Audit));
                let opts = VerifyOptions {
                    nonce: &nonce,
                    golden: &golden,
                    trusted_ak_pem: Some(tpm.ak_public_pem()),
                    known_checkpoints: None,
                };
                let report = match sakshi_attest::verify_quote(&quote, &opts) {
                    Ok(r) => r,
                    Err(e) => return Ok(Err(crate::ops::error_chain(&e))),
                };
                let recent = i
                    .audit
                    .checkpoints(CHECKPOINT_WINDOW)
                    .map_err(ApiError::internal)?;
                Ok(Ok((report, recent)))
            },
        )
        .await
        .ui(&ctx)?
        .ui(&ctx)?;
    let v = match &outcome {
        Ok((report, recent)) => verification(&nonce_hex, report, recent),
        Err(e) => Verification {
            ok: false,
            nonce: nonce_hex.clone(),
            error: e.clone(),
            records: 0,
            pcr_value: String::new(),
            clock: String::new(),
            findings: Vec::new(),
            boots: Vec::new(),
            checkpoints: Vec::new(),
        },
    };
    let details = json!({
        "nonce": nonce_hex,
        "verified": v.ok,
        "records": v.records,
        "findings": v.findings.len(),
        "error": if v.error.is_empty() { None } else { Some(&v.error) },
    });
    let result = if v.ok {
        Outcome::Success
    } else {
        Outcome::Failure
    };
    app.audit(
        &ctx,
        AuditAction::AttestQuote,
        "attestation:quote",
        result,
        details,
    )
    .await
    .ui(&ctx)?;
    page(&app, &ctx, Some(v)).await
}

/// `GET /attestation/ak.pem`: the attestation key's public key.
pub async fn ak_pem(State(app): State<AppState>, ctx: Ctx) -> Result<Response, UiError> {
    let pem = app
        .blocking(|i| i.tpm.get().map(|t| t.ak_public_pem().to_owned()))
        .await
        .ui(&ctx)?
        .ok_or_else(|| ApiError::NotFound("no TPM attestation key on this appliance".to_owned()))
        .ui(&ctx)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/x-pem-file"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"ak.pem\"",
            ),
        ],
        pem,
    )
        .into_response())
}

/// Which form of the event log to download.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// `cel-json` (default) or `tcg2`.
    #[serde(default)]
    format: Option<String>,
}

/// `GET /attestation/eventlog?format=cel-json|tcg2`: the measurement log.
pub async fn event_log(
    State(app): State<AppState>,
    ctx: Ctx,
    axum::extract::Query(q): axum::extract::Query<LogQuery>,
) -> Result<Response, UiError> {
    let tcg2 = match q.format.as_deref() {
        None | Some("cel-json") => false,
        Some("tcg2") => true,
        Some(_) => {
            return Err(ApiError::invalid("format", "must be cel-json or tcg2")).ui(&ctx);
        }
    };
    let log: EventLog = app
        .blocking(|i| i.tpm.get().map(|t| t.event_log()))
        .await
        .ui(&ctx)?
        .ok_or_else(|| ApiError::NotFound("no TPM event log on this appliance".to_owned()))
        .ui(&ctx)?
        .map_err(ApiError::internal)
        .ui(&ctx)?;
    let response = if tcg2 {
        (
            [
                (header::CONTENT_TYPE, "application/octet-stream"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"eventlog.bin\"",
                ),
            ],
            log.to_tcg2_binary(),
        )
            .into_response()
    } else {
        (
            [
                (header::CONTENT_TYPE, "application/json"),
                (
                    header::CONTENT_DISPOSITION,
                    "attachment; filename=\"eventlog.cel.json\"",
                ),
            ],
            log.to_cel_json(),
        )
            .into_response()
    };
    Ok(response)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sakshi_attest::Sha256Digest;

    #[test]
    fn policy_rows_cover_every_component() {
        let mut p = Policy::new(PolicyMode::Enforce);
        p.approve(
            sakshi_attest::BootComponent::Kernel,
            Sha256Digest([1; 32]),
            "guest 1",
        );
        p.approve(
            sakshi_attest::BootComponent::Initrd,
            Sha256Digest([2; 32]),
            "initrd 1",
        );
        let v = policy_view(&p);
        assert!(v.mode.starts_with("enforce"));
        let names: Vec<_> = v.golden.iter().map(|g| g.component).collect();
        assert_eq!(names, ["kernel", "initrd"]);
        assert_eq!(v.golden[0].sha256, "01".repeat(32));
        assert_eq!(v.golden[1].label, "initrd 1");
    }
}
