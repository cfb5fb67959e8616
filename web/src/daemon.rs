//! `sakshi serve`: opens the data directory, the TPM, the audit log, the user database, the
//! image store and the VM supervisor; recovers VMs whose VMM died while the daemon was down;
//! creates the first admin; boots the demo VM; serves the API and dashboard until SIGINT or
//! SIGTERM; then stops (or leaves) the VMs and records `appliance.stop`.

use crate::actions::AuditAction;
use crate::auth::{UserStore, generate_password, hash_password};
use crate::backend::audit::AuditLogStore;
use crate::backend::host::{HostBackend, LifecycleNote, Measurer, Registry};
use crate::backend::{ActorAuth, AuditRecord, AuditStore, Outcome, VmBackend, VmSpec, VmState};
use crate::config::{Config, OnShutdown, PolicyMode};
use crate::images::{ImageKind, ImageStore};
use crate::listen::{PeerAddr, TlsListener};
use crate::rbac::Role;
use crate::state::{AppState, Settings};
use sakshi_audit::{ApplianceKey, AuditConfig, AuditLog, CheckpointWitness, WitnessError};
use sakshi_host::supervisor::{Supervisor, SupervisorConfig};
use serde_json::json;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// Why the daemon could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The data directory could not be prepared.
    #[error("cannot prepare data directory {}", path.display())]
    DataDir {
        /// Directory.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The golden set could not be loaded.
    #[error("cannot load the measured-boot golden set")]
    Golden(#[source] crate::golden::GoldenError),
    /// swtpm could not be started.
    #[error("cannot start swtpm")]
    Swtpm(#[source] sakshi_attest::SwtpmError),
    /// The TPM could not be opened.
    #[error("cannot open the TPM")]
    Tpm(#[source] sakshi_attest::OpenError),
    /// The audit signing key could not be loaded or created.
    #[error("cannot load the audit signing key")]
    AuditKey(#[source] sakshi_audit::KeyError),
    /// The audit log could not be opened.
    #[error("cannot open the audit log")]
    AuditLog(#[source] sakshi_audit::OpenError),
    /// The user database failed.
    #[error("user database")]
    Users(#[source] crate::auth::UserError),
    /// The initial admin's password could not be hashed.
    #[error("cannot hash the initial admin password")]
    Password(#[source] crate::auth::PasswordError),
    /// The image store failed.
    #[error("image store")]
    Images(#[source] crate::images::ImageError),
    /// The VM registry failed.
    #[error("VM registry")]
    Registry(#[source] crate::backend::host::RegistryError),
    /// The supervisor could not start.
    #[error("cannot start the VM supervisor")]
    Supervisor(#[source] sakshi_host::supervisor::InitError),
    /// An audit entry the daemon must write could not be written.
    #[error("cannot write the audit log")]
    Audit(#[source] crate::backend::AuditAppendError),
    /// The listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// Address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// TLS could not be set up.
    #[error("cannot set up TLS")]
    Tls(#[source] crate::listen::TlsSetupError),
    /// The evidence service could not start.
    #[error("cannot start the evidence service")]
    Evidence(#[source] crate::backend::evidence::EvidenceInitError),
    /// The OTLP audit shipper could not start.
    #[error("cannot start the OTLP audit shipper")]
    Otlp(#[source] crate::otlp::ShipperStartError),
    /// OTLP span, console and metric export could not start.
    #[error("cannot start OTLP telemetry export")]
    Telemetry(#[source] crate::otlp::TelemetryStartError),
    /// Serving failed.
    #[error("HTTP server failed")]
    Serve(#[source] std::io::Error),
}

/// Extends each audit checkpoint into the TPM, so a quote binds the audit head.
struct TpmWitness(sakshi_attest::Tpm);

impl CheckpointWitness for TpmWitness {
    fn witness(&self, tree_size: u64, checkpoint_hash: &[u8; 32]) -> Result<(), WitnessError> {
        self.0
            .record_audit_checkpoint(tree_size, checkpoint_hash)
            .map(|_| ())
            .map_err(|e| WitnessError::new("tpm", e))
    }
}

fn mkdir(path: &Path) -> Result<(), ServeError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| ServeError::DataDir {
            path: path.to_owned(),
            source,
        })
}

/// SHA-256 of the running binary.
pub fn binary_sha256() -> String {
    use sha2::{Digest, Sha256};
    std::env::current_exe()
        .and_then(std::fs::read)
        .map(|b| hex::encode(Sha256::digest(b)))
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The password of the audit key file: random, kept next to it with mode 0600.
fn key_password(dir: &Path) -> Result<String, ServeError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let path = dir.join("audit-key.pass");
    let io = |source| ServeError::DataDir {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s.trim().to_owned()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let pw = crate::auth::random_hex(32);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(io)?;
            f.write_all(pw.as_bytes()).map_err(io)?;
            f.sync_all().map_err(io)?;
            Ok(pw)
        }
        Err(e) => Err(io(e)),
    }
}

fn system_record(
    action: AuditAction,
    target: String,
    outcome: Outcome,
    details: serde_json::Value,
    trace_id: Option<String>,
) -> AuditRecord {
    AuditRecord {
        actor: "sakshi".to_owned(),
        auth: ActorAuth::System,
        origin: "local".to_owned(),
        action,
        target,
        outcome,
        details,
        trace_id,
    }
}

/// The audit entry for a lifecycle change the supervisor reported, if it gets one (changes a
/// request caused, like `booting` after a start, are audited with the request).
fn note_record(n: &LifecycleNote) -> Option<AuditRecord> {
    let (action, outcome, details) = match n.state {
        VmState::Running => (
            AuditAction::VmRunning,
            Outcome::Success,
            json!({ "name": n.name, "boot_latency_us": n.boot_latency_us, "vm_seq": n.seq }),
        ),
        VmState::Stopped => (
            AuditAction::VmExited,
            Outcome::Success,
            json!({ "name": n.name, "reason": n.reason, "vm_seq": n.seq }),
        ),
        VmState::Failed => (
            AuditAction::VmFailed,
            Outcome::Failure,
            json!({ "name": n.name, "reason": n.reason, "vm_seq": n.seq }),
        ),
        _ => return None,
    };
    Some(system_record(
        action,
        format!("vm:{}", n.vm_id),
        outcome,
        details,
        Some(n.trace_id.clone()),
    ))
}

/// Where `sakshi-vmm` is: configured, or next to this binary.
fn vmm_path(config: &Config) -> PathBuf {
    config.vms.vmm_binary.clone().unwrap_or_else(|| {
        std::env::current_exe()
            .ok()
            .and_then(|p| p.parent().map(|d| d.join("sakshi-vmm")))
            .unwrap_or_else(|| PathBuf::from("sakshi-vmm"))
    })
}

/// Everything the daemon opened, in drop order.
struct Opened {
    state: AppState,
    host: Arc<HostBackend>,
    audit: Arc<AuditLogStore>,
    log: Arc<AuditLog>,
    first_start: bool,
    _tpm: sakshi_attest::Tpm,
    _swtpm: Option<sakshi_attest::Swtpm>,
}

fn open(config: &Config) -> Result<(Opened, std::sync::mpsc::Receiver<LifecycleNote>), ServeError> {
    let dir = &config.data.dir;
    for sub in ["", "images", "run", "tpm", "snapshots"] {
        mkdir(&dir.join(sub))?;
    }
    // TPM: swtpm (software, no hardware root of trust) or a device.
    let (swtpm, tcti) = if config.tpm.kind == "swtpm" {
        let s = sakshi_attest::Swtpm::start(&dir.join("tpm").join("swtpm"))
            .map_err(ServeError::Swtpm)?;
        // Orderly restarts keep swtpm's DA lockout counter at 0: the TPM actor and the Swtpm
        // harness send TPM2_Shutdown when they stop, and the AK is noDA (sakshi-attest).
        let tcti = s.tcti();
        (Some(s), tcti)
    } else {
        (None, config.tpm.kind.clone())
    };
    let tpm = sakshi_attest::Tpm::open(&sakshi_attest::TpmConfig::new(
        tcti,
        dir.join("tpm").join("attest"),
    ))
    .map_err(ServeError::Tpm)?;
    let tpm_kind = match tpm.kind() {
        sakshi_attest::TpmKind::Software => tpm.kind().notice().to_owned(),
        sakshi_attest::TpmKind::Hardware => format!("hardware TPM ({})", config.tpm.kind),
    };
    let mode = match config.tpm.policy {
        PolicyMode::Audit => sakshi_attest::PolicyMode::Audit,
        PolicyMode::Enforce => sakshi_attest::PolicyMode::Enforce,
    };
    let tpm_line = format!(
        "measured boot into PCR {} ({} policy)",
        tpm.pcr(),
        match config.tpm.policy {
            PolicyMode::Audit => "audit",
            PolicyMode::Enforce => "enforce",
        }
    );
    let measured = Arc::new(sakshi_attest::MeasuredBoot::new(
        tpm.clone(),
        sakshi_attest::Policy::new(mode),
    ));
    let golden = {
        let boot = measured.clone();
        Arc::new(
            crate::golden::GoldenStore::open(
                &dir.join("golden.json"),
                mode,
                Box::new(move |p| boot.set_policy(p)),
            )
            .map_err(ServeError::Golden)?,
        )
    };

    // Audit log, signed checkpoints witnessed by the TPM.
    let password = key_password(dir)?;
    let (key, _) = ApplianceKey::load_or_generate(&dir.join("audit-key.pem"), password.as_bytes())
        .map_err(ServeError::AuditKey)?;
    // Shared with the evidence service, which signs bundle manifests with it.
    let key = Arc::new(key);
    let audit_config = AuditConfig {
        checkpoint_every: config.audit.checkpoint_every,
        checkpoint_interval: Duration::from_secs(config.audit.checkpoint_interval_seconds),
        ..AuditConfig::default()
    };
    let retention = audit_config.retention.clone();
    let log = AuditLog::open(
        dir.join("audit.sqlite"),
        audit_config,
        key.clone(),
        Some(Arc::new(TpmWitness(tpm.clone()))),
    )
    .map_err(ServeError::AuditLog)?;
    let log = Arc::new(log);
    let audit = Arc::new(AuditLogStore::new(
        log.clone(),
        config.audit.checkpoint_every,
    ));

    let users = UserStore::open(&dir.join("users.sqlite")).map_err(ServeError::Users)?;
    let first_start = users.count().map_err(ServeError::Users)? == 0;
    let images = ImageStore::open(&dir.join("images")).map_err(ServeError::Images)?;
    let registry = Arc::new(Registry::open(&dir.join("vms.sqlite")).map_err(ServeError::Registry)?);
    let golden_set: Arc<dyn crate::backend::evidence::GoldenSet> = Arc::new(
        crate::backend::evidence::MeasuredGolden::new(golden.clone()),
    );
    let measurer = Arc::new(Measurer::new(Some(measured.clone()), registry.clone()));
    let sup = Supervisor::new(
        SupervisorConfig::new(vmm_path(config), dir.join("run")),
        measurer.clone(),
    )
    .map_err(ServeError::Supervisor)?;
    let (host, notes) = HostBackend::new(sup, registry, measurer, tpm_kind, tpm_line);
    let host = Arc::new(host);
    let settings = Settings::from_config(config, binary_sha256());
    let state = AppState::new(config, settings, host.clone(), audit.clone(), users, images);
    state.set_tpm(tpm.clone());
    let evidence = Arc::new(
        crate::backend::evidence::EvidenceService::new(
            log.clone(),
            key,
            Box::new(crate::backend::evidence::TpmQuotes(tpm.clone())),
            Some(golden_set),
            retention,
            dir,
            host.host_info().hostname,
        )
        .map_err(ServeError::Evidence)?
        .with_location(config.data_location.as_ref().map(|d| d.statement())),
    );
    // Approvals of patched images live in the ledger (the audit log); re-apply them.
    match evidence.restore_golden() {
        Ok(0) => {}
        Ok(n) => tracing::info!(
            golden.digests = n,
            "golden set restored from the patch ledger"
        ),
        Err(e) => {
            tracing::error!(error = %crate::ops::error_chain(&e), "cannot restore the golden set from the patch ledger")
        }
    }
    state.set_evidence(evidence);
    state.set_golden(golden);
    Ok((
        Opened {
            state,
            host,
            audit,
            log,
            first_start,
            _tpm: tpm,
            _swtpm: swtpm,
        },
        notes,
    ))
}

fn append(audit: &AuditLogStore, r: AuditRecord) -> Result<u64, ServeError> {
    audit.append(r).map_err(ServeError::Audit)
}

/// Creates the admin account on first start; prints its one-time password to stdout (never
/// to the log).
fn first_admin(o: &Opened, config: &Config) -> Result<(), ServeError> {
    let name = &config.auth.initial_admin;
    let password = generate_password();
    let phc = hash_password(&password).map_err(ServeError::Password)?;
    o.state
        .users()
        .create_user(name, Role::Admin, &phc)
        .map_err(ServeError::Users)?;
    append(
        &o.audit,
        system_record(
            AuditAction::UserCreate,
            format!("user:{name}"),
            Outcome::Success,
            json!({ "role": "admin", "reason": "initial admin on first start" }),
            None,
        ),
    )?;
    println!("sakshi: initial admin account {name:?} created");
    println!("sakshi: initial admin password: {password}");
    println!("sakshi: (shown once; it is not logged. Change it under Account.)");
    Ok(())
}

/// Approves the demo VM's image into the golden set (audited when it changes anything): the
/// appliance ships the test guest, and an operator who configures another demo image chose it.
fn approve_demo_image(o: &Opened, sha256: &str, kind: ImageKind, bundled: bool) {
    let Some(golden) = o.state.inner.golden.get() else {
        return;
    };
    let mut digest = [0u8; 32];
    if hex::decode_to_slice(sha256, &mut digest).is_err() {
        return;
    }
    let component = match kind {
        ImageKind::Kernel => sakshi_attest::BootComponent::Kernel,
        ImageKind::Initrd => sakshi_attest::BootComponent::Initrd,
    };
    let label = if bundled {
        "demo guest (the bundled test guest)"
    } else {
        "demo image (from the configuration)"
    };
    let (outcome, details) =
        match golden.approve(component, sakshi_attest::Sha256Digest(digest), label) {
            Ok(false) => return,
            Ok(true) => (
                Outcome::Success,
                json!({ "component": kind.as_str(), "changed": true, "label": label }),
            ),
            Err(e) => (
                Outcome::Failure,
                json!({ "component": kind.as_str(), "error": crate::ops::error_chain(&e) }),
            ),
        };
    if let Err(e) = append(
        &o.audit,
        system_record(
            AuditAction::ImageApprove,
            format!("image:{sha256}"),
            outcome,
            details,
            None,
        ),
    ) {
        tracing::error!(error = %e, "cannot audit the demo image approval");
    }
}

/// Boots the demo VM (the project's test guest, measured). A previous demo VM record is
/// replaced.
fn demo_vm(o: &Opened, config: &Config) -> Result<(), ServeError> {
    let d = &config.demo;
    let kernel_path = d
        .kernel
        .clone()
        .unwrap_or_else(|| sakshi_host::test_guest::test_guest_path().to_owned());
    let outcome = (|| -> Result<String, String> {
        let bytes = std::fs::read(&kernel_path)
            .map_err(|e| format!("cannot read {}: {e}", kernel_path.display()))?;
        let (k, _) = o
            .state
            .images()
            .put("test-guest", ImageKind::Kernel, &bytes, "sakshi")
            .map_err(|e| e.to_string())?;
        approve_demo_image(o, &k.sha256, ImageKind::Kernel, d.kernel.is_none());
        let initrd = match &d.initrd {
            Some(p) => {
                let b =
                    std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?;
                let (i, _) = o
                    .state
                    .images()
                    .put("demo-initrd", ImageKind::Initrd, &b, "sakshi")
                    .map_err(|e| e.to_string())?;
                approve_demo_image(o, &i.sha256, ImageKind::Initrd, false);
                Some(
                    o.state
                        .images()
                        .resolve(&i.sha256, ImageKind::Initrd)
                        .map_err(|e| e.to_string())?,
                )
            }
            None => None,
        };
        for old in o.host.list().map_err(|e| e.to_string())? {
            if old.name == d.name {
                let _ = o.host.destroy(&old.id);
                let _ = append(
                    &o.audit,
                    system_record(
                        AuditAction::VmDestroy,
                        format!("vm:{}", old.id),
                        Outcome::Success,
                        json!({ "name": old.name, "reason": "replaced by a fresh demo VM" }),
                        None,
                    ),
                );
            }
        }
        let trace_id = crate::auth::random_hex(16);
        let created = o
            .host
            .create(VmSpec {
                name: d.name.clone(),
                kernel: o
                    .state
                    .images()
                    .resolve(&k.sha256, ImageKind::Kernel)
                    .map_err(|e| e.to_string())?,
                initrd,
                cmdline: d.cmdline.clone(),
                vcpus: d.vcpus,
                memory_mib: d.memory_mib,
                trace_id: trace_id.clone(),
            })
            .map_err(|e| e.to_string())?;
        let id = created.summary.id.clone();
        append(
            &o.audit,
            system_record(
                AuditAction::VmCreate,
                format!("vm:{id}"),
                Outcome::Success,
                json!({ "name": d.name, "kernel_sha256": k.sha256, "cmdline": d.cmdline,
                        "vcpus": d.vcpus, "memory_mib": d.memory_mib, "demo": true }),
                Some(created.summary.trace_id.clone()),
            ),
        )
        .map_err(|e| e.to_string())?;
        let started = o.host.start(&id);
        let (outcome, details) = match &started {
            Ok(s) => (
                Outcome::Success,
                json!({ "state": s.summary.state, "measurements": s.measurements }),
            ),
            Err(e) => (Outcome::Failure, json!({ "error": e.to_string() })),
        };
        append(
            &o.audit,
            system_record(
                AuditAction::VmStart,
                format!("vm:{id}"),
                outcome,
                details,
                Some(created.summary.trace_id),
            ),
        )
        .map_err(|e| e.to_string())?;
        started.map(|_| id).map_err(|e| e.to_string())
    })();
    match outcome {
        Ok(id) => println!("sakshi: demo VM {:?} booted (id {id})", d.name),
        Err(e) => {
            tracing::error!(error = %e, "demo VM could not be booted");
            println!("sakshi: demo VM could not be booted: {e}");
        }
    }
    Ok(())
}

/// Runs the appliance until `shutdown` resolves.
pub async fn serve(
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let cfg = config.clone();
    let (o, notes) = tokio::task::spawn_blocking(move || open(&cfg))
        .await
        .map_err(|e| ServeError::Serve(std::io::Error::other(e)))??;
    let version = env!("CARGO_PKG_VERSION");
    let sha = o.state.inner.settings.binary_sha256.clone();

    // SIEM streaming: ship audit entries over OTLP from the durable cursor, nudged on append;
    // spans (API requests, VM phases), guest console lines and metrics through `Telemetry`.
    let metrics = Arc::new(crate::otlp::Metrics::new());
    let (shipper, telemetry) = match &config.otlp {
        Some(otlp) => {
            o.state.set_metrics(metrics.clone(), otlp.prometheus);
            let source = Arc::new(crate::otlp::AuditLogSource::new(o.log.clone()));
            let handle = Arc::new(
                crate::otlp::Shipper::spawn(otlp.clone(), source, metrics.clone())
                    .map_err(ServeError::Otlp)?,
            );
            o.state.set_delivery(handle.subscribe(), &otlp.endpoint);
            let weak = Arc::downgrade(&handle);
            let counted = metrics.clone();
            o.audit.set_on_append(Box::new(move || {
                counted.audit_appends.inc();
                if let Some(h) = weak.upgrade() {
                    h.nudge();
                }
            }));
            let (telemetry, _task) = crate::otlp::Telemetry::spawn(otlp, metrics.clone())
                .map_err(ServeError::Telemetry)?;
            println!(
                "sakshi: shipping audit entries over OTLP to {}",
                otlp.endpoint
            );
            (Some(handle), telemetry)
        }
        None => {
            let counted = metrics.clone();
            o.audit
                .set_on_append(Box::new(move || counted.audit_appends.inc()));
            (None, crate::otlp::Telemetry::disabled(metrics.clone()))
        }
    };
    o.state.set_telemetry(telemetry.clone());
    o.host.set_telemetry(telemetry.clone());

    // Lifecycle events -> audit entries.
    let audit_for_pump = o.audit.clone();
    std::thread::Builder::new()
        .name("sakshi-vm-audit".into())
        .spawn(move || {
            for n in notes {
                if let Some(r) = note_record(&n)
                    && let Err(e) = audit_for_pump.append(r)
                {
                    tracing::error!(error = %e, vm.id = %n.vm_id, "cannot audit VM lifecycle event");
                }
            }
        })
        .map_err(ServeError::Serve)?;

    append(
        &o.audit,
        system_record(
            AuditAction::ApplianceStart,
            "appliance:sakshi".to_owned(),
            Outcome::Success,
            json!({ "version": version, "binary_sha256": sha, "listen": config.server.listen.to_string(),
                    "tls": config.server.tls.is_some(), "data_dir": config.data.dir.display().to_string() }),
            None,
        ),
    )?;
    for n in o.host.recover().map_err(ServeError::Registry)? {
        println!(
            "sakshi: VM {} ({}) marked failed: {}",
            n.name,
            n.vm_id,
            n.reason.clone().unwrap_or_default()
        );
        if let Some(r) = note_record(&n) {
            append(&o.audit, r)?;
        }
    }
    if o.first_start {
        first_admin(&o, &config)?;
    }
    if config.demo.enabled {
        demo_vm(&o, &config)?;
    }

    // PCI DSS 10.4.1.1: review the previous UTC day, once per day.
    let review_task = o.state.inner.evidence.get().cloned().map(|svc| {
        tokio::spawn(crate::backend::evidence::daily_review_loop(
            svc,
            Duration::from_secs(config.audit.review_check_seconds),
        ))
    });
    let router = crate::routes::build_router(o.state.clone());
    let addr = config.server.listen;
    let tcp = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ServeError::Bind { addr, source })?;
    let local = tcp
        .local_addr()
        .map_err(|source| ServeError::Bind { addr, source })?;
    let served = match &config.server.tls {
        Some(tls) => {
            let listener = TlsListener::new(tcp, &tls.cert, &tls.key).map_err(ServeError::Tls)?;
            println!("sakshi: listening on https://{local}");
            axum::serve(
                listener,
                router.into_make_service_with_connect_info::<PeerAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
        None => {
            println!("sakshi: listening on http://{local}");
            axum::serve(
                tcp,
                router.into_make_service_with_connect_info::<PeerAddr>(),
            )
            .with_graceful_shutdown(shutdown)
            .await
        }
    };
    tracing::info!("shutting down");
    if let Some(t) = review_task {
        t.abort();
    }
    let host = o.host.clone();
    let on_shutdown = config.vms.on_shutdown;
    let left = tokio::task::spawn_blocking(move || {
        let live = host
            .list()
            .map(|l| {
                l.iter()
                    .filter(|v| {
                        matches!(
                            v.state,
                            VmState::Booting | VmState::Running | VmState::Paused
                        )
                    })
                    .count()
            })
            .unwrap_or(0);
        match on_shutdown {
            OnShutdown::Stop => {
                host.stop_all();
                0
            }
            OnShutdown::Leave => {
                // Keep the supervisor alive past exit: dropping it would kill every VMM.
                std::mem::forget(host.supervisor().clone());
                live
            }
        }
    })
    .await
    .unwrap_or(0);
    // Give the lifecycle pump a moment to record the final states.
    tokio::time::sleep(Duration::from_millis(200)).await;
    append(
        &o.audit,
        system_record(
            AuditAction::ApplianceStop,
            "appliance:sakshi".to_owned(),
            Outcome::Success,
            json!({ "version": version, "binary_sha256": sha,
                    "on_shutdown": match on_shutdown { OnShutdown::Stop => "stop", OnShutdown::Leave => "leave" },
                    "vms_left_running": left }),
            None,
        ),
    )?;
    if let Err(e) = o.audit.checkpoint() {
        tracing::error!(error = %e, "final audit checkpoint failed");
    }
    if let Some(h) = shipper.and_then(Arc::into_inner) {
        h.shutdown().await;
    }
    telemetry.flush().await;
    println!("sakshi: stopped");
    served.map_err(ServeError::Serve)
}
