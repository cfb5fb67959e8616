//! `/api/v1/attestations`

use super::types::QuoteRequest;
use crate::actions::AuditAction;
use crate::backend::Outcome;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;
use axum::Json;
use axum::extract::State;
use serde_json::{Value, json};

/// Why a quote could not be produced.
#[derive(Debug, thiserror::Error)]
pub enum AttestError {
    /// The appliance runs without a TPM (test backends).
    #[error("no TPM is attached to this appliance")]
    NoTpm,
    /// The TPM refused or failed the quote.
    #[error("TPM quote failed")]
    Quote(#[source] sakshi_attest::QuoteError),
}

/// Decodes and bounds-checks the nonce (hex, 1-64 bytes).
pub fn parse_nonce(hex_nonce: &str) -> Result<Vec<u8>, ApiError> {
    let bytes = hex::decode(hex_nonce)
        .map_err(|_| ApiError::invalid("nonce", "must be hex (an even number of 0-9a-f)"))?;
    if bytes.is_empty() || bytes.len() > sakshi_attest::MAX_NONCE_LEN {
        return Err(ApiError::invalid(
            "nonce",
            format!("must be 1-{} bytes", sakshi_attest::MAX_NONCE_LEN),
        ));
    }
    Ok(bytes)
}

/// `POST /api/v1/attestations`: a TPM quote over the measurement PCR with the caller's nonce,
/// with the event log and the AK public key; audited as `attest.quote`.
pub async fn quote(
    State(app): State<AppState>,
    ctx: Ctx,
    ApiJson(req): ApiJson<QuoteRequest>,
) -> Result<Json<Value>, ApiError> {
    let nonce = parse_nonce(&req.nonce)?;
    let quoted = app
        .blocking(move |i| match i.tpm.get() {
            Some(tpm) => tpm.quote(&nonce).map_err(AttestError::Quote),
            None => Err(AttestError::NoTpm),
        })
        .await?;
    let (outcome, details) = match &quoted {
        Ok(q) => (
            Outcome::Success,
            json!({ "nonce": req.nonce, "tpm_kind": q.tpm_kind, "pcrs": q.pcrs.values.len(),
                    "events": q.event_log.len() }),
        ),
        Err(e) => (
            Outcome::Failure,
            json!({ "nonce": req.nonce, "error": crate::ops::error_chain(e) }),
        ),
    };
    app.audit(
        &ctx,
        AuditAction::AttestQuote,
        "attestation:quote",
        outcome,
        details,
    )
    .await?;
    let q = quoted.map_err(ApiError::internal)?;
    let mut body = serde_json::to_value(&q).map_err(ApiError::internal)?;
    if let Value::Object(m) = &mut body
        && q.tpm_kind.is_software()
    {
        m.insert(
            "tpm_kind_notice".to_owned(),
            Value::String(q.tpm_kind.notice().to_owned()),
        );
    }
    Ok(Json(body))
}
