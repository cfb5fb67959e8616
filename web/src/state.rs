//! Shared application state.

use crate::actions::AuditAction;
use crate::auth::{SessionStore, Throttle, UserStore};
use crate::backend::{AuditRecord, AuditStore, Outcome, VmBackend};
use crate::config::Config;
use crate::ctx::Ctx;
use crate::error::ApiError;
use crate::images::ImageStore;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Limits and facts the handlers need from the configuration.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Served over TLS (cookies get `Secure`).
    pub tls: bool,
    /// Body limit for JSON and forms.
    pub max_body_bytes: usize,
    /// Body limit for image uploads.
    pub max_image_bytes: usize,
    /// Longest API token lifetime, days.
    pub token_max_days: u32,
    /// Most VMs.
    pub max_vms: u32,
    /// Most vCPUs per VM.
    pub max_vcpus: u8,
    /// Most memory per VM, MiB.
    pub max_memory_mib: u32,
    /// SHA-256 of the running binary (or `unknown`).
    pub binary_sha256: String,
}

impl Settings {
    /// Settings from a validated config.
    pub fn from_config(c: &Config, binary_sha256: String) -> Settings {
        Settings {
            tls: c.server.tls.is_some(),
            max_body_bytes: c.server.max_body_bytes,
            max_image_bytes: c.server.max_image_bytes,
            token_max_days: c.auth.token_max_days,
            max_vms: c.vms.max_vms,
            max_vcpus: c.vms.max_vcpus,
            max_memory_mib: c.vms.max_memory_mib,
            binary_sha256,
        }
    }
}

/// What the router needs; cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub vms: Arc<dyn VmBackend>,
    pub audit: Arc<dyn AuditStore>,
    pub users: UserStore,
    pub sessions: SessionStore,
    pub throttle: Throttle,
    pub images: ImageStore,
    pub settings: Settings,
    pub started: Instant,
    /// The TPM that signs quotes (set by the daemon; absent with the fake backend).
    pub tpm: std::sync::OnceLock<sakshi_attest::Tpm>,
    /// Measured boot's golden set (set by the daemon; absent with the fake backend).
    pub golden: std::sync::OnceLock<Arc<crate::golden::GoldenStore>>,
    /// Metrics served at `/metrics` and who may read them (set when `[otlp]` is configured).
    pub metrics: std::sync::OnceLock<(Arc<crate::otlp::Metrics>, crate::otlp::PrometheusAccess)>,
    /// Evidence bundles, reports and the golden set (set by the daemon).
    pub evidence: std::sync::OnceLock<Arc<crate::backend::evidence::EvidenceService>>,
    /// Spans and console export (set by the daemon; absent in router tests).
    pub telemetry: std::sync::OnceLock<crate::otlp::Telemetry>,
    /// SIEM delivery state from the audit shipper (set when `[otlp]` is configured).
    pub delivery: std::sync::OnceLock<(
        tokio::sync::watch::Receiver<crate::otlp::DeliveryHealth>,
        String,
    )>,
}

impl AppState {
    /// Assembles the state from its parts.
    pub fn new(
        config: &Config,
        settings: Settings,
        vms: Arc<dyn VmBackend>,
        audit: Arc<dyn AuditStore>,
        users: UserStore,
        images: ImageStore,
    ) -> AppState {
        let a = &config.auth;
        AppState {
            inner: Arc::new(Inner {
                vms,
                audit,
                users,
                sessions: SessionStore::new(
                    Duration::from_secs(u64::from(a.session_idle_minutes) * 60),
                    Duration::from_secs(u64::from(a.session_max_hours) * 3600),
                ),
                throttle: Throttle::new(
                    a.lockout_threshold,
                    Duration::from_secs(a.lockout_base_seconds.into()),
                    Duration::from_secs(a.lockout_max_seconds.into()),
                ),
                images,
                settings,
                started: Instant::now(),
                tpm: std::sync::OnceLock::new(),
                golden: std::sync::OnceLock::new(),
                metrics: std::sync::OnceLock::new(),
                evidence: std::sync::OnceLock::new(),
                telemetry: std::sync::OnceLock::new(),
                delivery: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Attaches the TPM that answers `POST /api/v1/attestations` (first call wins).
    pub fn set_tpm(&self, tpm: sakshi_attest::Tpm) {
        let _ = self.inner.tpm.set(tpm);
    }

    /// Attaches the evidence service behind `/api/v1/evidence`, `/api/v1/reports` and the
    /// patch ledger's golden-set hook (first call wins).
    pub(crate) fn set_evidence(&self, evidence: Arc<crate::backend::evidence::EvidenceService>) {
        let _ = self.inner.evidence.set(evidence);
    }

    /// Attaches measured boot's golden set, which the attestation page shows and appraises
    /// quotes against and the approval endpoints change (first call wins).
    pub fn set_golden(&self, golden: Arc<crate::golden::GoldenStore>) {
        let _ = self.inner.golden.set(golden);
    }

    /// Serves `metrics` at `/metrics` to the callers `access` names (first call wins).
    pub fn set_metrics(
        &self,
        metrics: Arc<crate::otlp::Metrics>,
        access: crate::otlp::PrometheusAccess,
    ) {
        let _ = self.inner.metrics.set((metrics, access));
    }

    /// Emits request spans through `telemetry` (first call wins).
    pub fn set_telemetry(&self, telemetry: crate::otlp::Telemetry) {
        let _ = self.inner.telemetry.set(telemetry);
    }

    /// The telemetry handle, when the daemon set one.
    pub fn telemetry(&self) -> Option<&crate::otlp::Telemetry> {
        self.inner.telemetry.get()
    }

    /// Shows the audit shipper's delivery state (to `endpoint`) on the overview and in evidence
    /// bundles (first call wins). Credentials in the endpoint URL are never kept.
    pub fn set_delivery(
        &self,
        health: tokio::sync::watch::Receiver<crate::otlp::DeliveryHealth>,
        endpoint: &str,
    ) {
        let _ = self
            .inner
            .delivery
            .set((health, crate::otlp::redact_endpoint(endpoint)));
    }

    /// The SIEM delivery state, when the audit shipper runs.
    pub fn delivery_health(&self) -> Option<crate::otlp::DeliveryHealth> {
        self.inner.delivery.get().map(|(h, _)| h.borrow().clone())
    }

    /// The SIEM delivery state as evidence: the receiver, what it acknowledged, the backlog.
    pub fn siem_status(&self) -> Option<sakshi_reports::SiemStatus> {
        let (h, endpoint) = self.inner.delivery.get()?;
        let h = h.borrow().clone();
        let now = chrono::Utc::now();
        let lag = chrono::Duration::milliseconds((h.lag_secs * 1000.0) as i64);
        Some(sakshi_reports::SiemStatus {
            collected_at: now,
            endpoint: endpoint.clone(),
            acked_size: h.next_seq,
            log_size: h.next_seq + h.pending,
            oldest_unacked: (h.pending > 0).then(|| now - lag),
        })
    }

    /// Runs `f` on a blocking thread (SQLite, argon2, the VM host).
    pub(crate) async fn blocking<T, F>(&self, f: F) -> Result<T, ApiError>
    where
        F: FnOnce(&Inner) -> T + Send + 'static,
        T: Send + 'static,
    {
        let inner = self.inner.clone();
        Ok(tokio::task::spawn_blocking(move || f(&inner)).await?)
    }

    /// Appends one audit entry for the request in `ctx`.
    pub(crate) async fn audit(
        &self,
        ctx: &Ctx,
        action: AuditAction,
        target: impl Into<String>,
        outcome: Outcome,
        details: serde_json::Value,
    ) -> Result<u64, ApiError> {
        let record = AuditRecord {
            actor: ctx.actor(),
            auth: ctx.auth(),
            origin: ctx.origin.clone(),
            action,
            target: target.into(),
            outcome,
            details: ctx.decorate(details),
            trace_id: Some(ctx.trace_id.clone()),
        };
        // Not on the blocking pool: waiting for the group commit holds no thread.
        Ok(self.inner.audit.append_async(record).await?)
    }

    /// Appends a system entry (no request).
    pub async fn audit_system(
        &self,
        action: AuditAction,
        target: impl Into<String>,
        outcome: Outcome,
        details: serde_json::Value,
    ) -> Result<u64, ApiError> {
        let record = AuditRecord {
            actor: "sakshi".to_owned(),
            auth: crate::backend::ActorAuth::System,
            origin: "local".to_owned(),
            action,
            target: target.into(),
            outcome,
            details,
            trace_id: None,
        };
        Ok(self.blocking(move |i| i.audit.append(record)).await??)
    }

    /// The VM backend.
    pub fn vms(&self) -> &Arc<dyn VmBackend> {
        &self.inner.vms
    }

    /// The user store.
    pub fn users(&self) -> &UserStore {
        &self.inner.users
    }

    /// The image store.
    pub fn images(&self) -> &ImageStore {
        &self.inner.images
    }

    /// The audit store.
    pub fn audit_store(&self) -> &Arc<dyn AuditStore> {
        &self.inner.audit
    }
}
