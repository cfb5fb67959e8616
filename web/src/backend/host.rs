//! [`VmBackend`] over the real micro-VM supervisor ([`sakshi_host::supervisor::Supervisor`]),
//! with a small SQLite registry of the web layer's own facts about each VM (name, image
//! digests, measurements, last known state and history), so VMs outlive a daemon restart in
//! the list and VMs whose VMM died while the daemon was down are found and marked failed.
//!
//! Boots are measured by [`Measurer`], the supervisor's [`BootMeasurer`] hook, which extends the
//! TPM through `sakshi_attest::MeasuredBoot` and records the digests for the VM detail page.

use super::vm_port::{
    HostInfo, Measurement, StateChange, VmBackend, VmDetail, VmError, VmSpec, VmState, VmSummary,
};
use rusqlite::{Connection, params};
use sakshi_host::supervisor::{
    self as sup, BootMeasurement, BootMeasurer, ControlError, CreateError, DestroyError,
    MeasureError, StartError, StateKind, StopError, StopMode, Supervisor, TraceId, VmEvent, VmId,
};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, mpsc};

fn kind_of(k: StateKind) -> VmState {
    match k {
        StateKind::Created => VmState::Created,
        StateKind::Booting => VmState::Booting,
        StateKind::Running => VmState::Running,
        StateKind::Paused => VmState::Paused,
        StateKind::Stopped => VmState::Stopped,
        StateKind::Failed => VmState::Failed,
    }
}

fn state_str(s: VmState) -> &'static str {
    s.as_str()
}

fn state_parse(s: &str) -> VmState {
    VmState::ALL
        .into_iter()
        .find(|v| v.as_str() == s)
        .unwrap_or(VmState::Failed)
}

fn rfc3339_nanos(t: i64) -> String {
    chrono::DateTime::from_timestamp_nanos(t).to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

/// Why an event moved a VM where it did, in words.
fn event_reason(ev: &VmEvent) -> Option<String> {
    match &ev.state {
        sup::VmState::Failed(r) => Some(r.to_string()),
        sup::VmState::Stopped => ev.exit.as_ref().map(|x| match (x.reason, &x.detail) {
            (Some(r), _) => r.name().to_owned(),
            (None, Some(d)) => d.clone(),
            (None, None) => "stopped".to_owned(),
        }),
        _ => None,
    }
}

/// A lifecycle change, for the daemon to audit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LifecycleNote {
    /// VM id.
    pub vm_id: String,
    /// VM name.
    pub name: String,
    /// New state.
    pub state: VmState,
    /// Why (exit reason, failure).
    pub reason: Option<String>,
    /// Boot latency, when it just became running.
    pub boot_latency_us: Option<u64>,
    /// Trace id of the VM.
    pub trace_id: String,
    /// The supervisor's per-VM event sequence number (0 for recovery notes).
    pub seq: u64,
}

/// The web layer's persistent facts about VMs: SQLite for durability, a write-through map in
/// memory for reads (the VM list is the hottest page).
#[derive(Debug)]
pub struct Registry {
    conn: Mutex<Connection>,
    cache: std::sync::RwLock<std::collections::HashMap<String, Row>>,
}

/// A registry row.
#[derive(Debug, Clone)]
struct Row {
    id: String,
    name: String,
    created_at: String,
    kernel_sha256: String,
    initrd_sha256: Option<String>,
    cmdline: String,
    vcpus: u8,
    memory_mib: u32,
    trace_id: String,
    state: VmState,
    reason: Option<String>,
    boot_latency_us: Option<u64>,
    vmm_pid: Option<u32>,
    history: Vec<StateChange>,
    measurements: Vec<Measurement>,
}

const ROW_COLS: &str = "id, name, created_at, kernel_sha256, initrd_sha256, cmdline, vcpus, \
    memory_mib, trace_id, state, reason, boot_latency_us, vmm_pid, history, measurements";

/// The registry database failed.
#[derive(Debug, thiserror::Error)]
#[error("VM registry failure")]
pub struct RegistryError(#[from] rusqlite::Error);

impl Registry {
    /// Opens (creating) the registry at `path`.
    pub fn open(path: &Path) -> Result<Registry, RegistryError> {
        let conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        conn.execute_batch(
            "CREATE TABLE IF NOT EXISTS vms (
                id TEXT PRIMARY KEY, name TEXT NOT NULL, created_at TEXT NOT NULL,
                kernel_sha256 TEXT NOT NULL, initrd_sha256 TEXT, cmdline TEXT NOT NULL,
                vcpus INTEGER NOT NULL, memory_mib INTEGER NOT NULL, trace_id TEXT NOT NULL,
                state TEXT NOT NULL, reason TEXT, boot_latency_us INTEGER, vmm_pid INTEGER,
                history TEXT NOT NULL, measurements TEXT NOT NULL)",
        )?;
        let rows = {
            let mut stmt = conn.prepare(&format!("SELECT {ROW_COLS} FROM vms"))?;
            let rows = stmt.query_map([], Self::row)?;
            rows.collect::<Result<Vec<_>, _>>()?
        };
        Ok(Registry {
            conn: Mutex::new(conn),
            cache: std::sync::RwLock::new(rows.into_iter().map(|r| (r.id.clone(), r)).collect()),
        })
    }

    fn cache_write(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, std::collections::HashMap<String, Row>> {
        self.cache.write().unwrap_or_else(|p| p.into_inner())
    }

    fn cache_read(&self) -> std::sync::RwLockReadGuard<'_, std::collections::HashMap<String, Row>> {
        self.cache.read().unwrap_or_else(|p| p.into_inner())
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn row(r: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
        let history: String = r.get(13)?;
        let measurements: String = r.get(14)?;
        Ok(Row {
            id: r.get(0)?,
            name: r.get(1)?,
            created_at: r.get(2)?,
            kernel_sha256: r.get(3)?,
            initrd_sha256: r.get(4)?,
            cmdline: r.get(5)?,
            vcpus: r.get(6)?,
            memory_mib: r.get(7)?,
            trace_id: r.get(8)?,
            state: state_parse(&r.get::<_, String>(9)?),
            reason: r.get(10)?,
            boot_latency_us: r.get::<_, Option<i64>>(11)?.map(|v| v.max(0) as u64),
            vmm_pid: r.get(12)?,
            history: serde_json::from_str(&history).unwrap_or_default(),
            measurements: serde_json::from_str(&measurements).unwrap_or_default(),
        })
    }

    fn insert(&self, row: &Row) -> Result<(), RegistryError> {
        self.conn().execute(
            &format!("INSERT INTO vms ({ROW_COLS}) VALUES (?1,?2,?3,?4,?5,?6,?7,?8,?9,?10,?11,?12,?13,?14,?15)"),
            params![
                row.id,
                row.name,
                row.created_at,
                row.kernel_sha256,
                row.initrd_sha256,
                row.cmdline,
                row.vcpus,
                row.memory_mib,
                row.trace_id,
                state_str(row.state),
                row.reason,
                row.boot_latency_us.map(|v| v as i64),
                row.vmm_pid,
                serde_json::to_string(&row.history).unwrap_or_else(|_| "[]".into()),
                serde_json::to_string(&row.measurements).unwrap_or_else(|_| "[]".into()),
            ],
        )?;
        self.cache_write().insert(row.id.clone(), row.clone());
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<Row>, RegistryError> {
        Ok(self.cache_read().get(id).cloned())
    }

    fn all(&self) -> Result<Vec<Row>, RegistryError> {
        let mut rows: Vec<Row> = self.cache_read().values().cloned().collect();
        rows.sort_by(|a, b| {
            b.created_at
                .cmp(&a.created_at)
                .then_with(|| a.id.cmp(&b.id))
        });
        Ok(rows)
    }

    fn remove(&self, id: &str) -> Result<bool, RegistryError> {
        let n = self.conn().execute("DELETE FROM vms WHERE id = ?1", [id])?;
        self.cache_write().remove(id);
        Ok(n > 0)
    }

    fn set_measurements(&self, id: &str, m: &[Measurement]) -> Result<(), RegistryError> {
        self.conn().execute(
            "UPDATE vms SET measurements = ?2 WHERE id = ?1",
            params![id, serde_json::to_string(m).unwrap_or_else(|_| "[]".into())],
        )?;
        if let Some(row) = self.cache_write().get_mut(id) {
            row.measurements = m.to_vec();
        }
        Ok(())
    }

    /// Records a state change; returns the VM's name and trace id when it is known.
    fn record(
        &self,
        id: &str,
        state: VmState,
        reason: Option<String>,
        at: String,
        boot_latency_us: Option<u64>,
        pid: Option<Option<u32>>,
    ) -> Result<Option<(String, String)>, RegistryError> {
        let Some(mut row) = self.get(id)? else {
            return Ok(None);
        };
        row.history.push(StateChange {
            state,
            at,
            reason: reason.clone(),
        });
        if row.history.len() > 200 {
            let cut = row.history.len() - 200;
            row.history.drain(..cut);
        }
        let latency = boot_latency_us.or(row.boot_latency_us);
        let pid = pid.unwrap_or(row.vmm_pid);
        self.conn().execute(
            "UPDATE vms SET state = ?2, reason = ?3, boot_latency_us = ?4, vmm_pid = ?5, history = ?6
             WHERE id = ?1",
            params![
                id,
                state_str(state),
                reason,
                latency.map(|v| v as i64),
                pid,
                serde_json::to_string(&row.history).unwrap_or_else(|_| "[]".into()),
            ],
        )?;
        let out = (row.name.clone(), row.trace_id.clone());
        row.state = state;
        row.reason = reason;
        row.boot_latency_us = latency;
        row.vmm_pid = pid;
        self.cache_write().insert(id.to_owned(), row);
        Ok(Some(out))
    }
}

/// The supervisor's boot hook: measures every boot into the TPM (when there is one) and keeps
/// the digests for the VM detail page.
pub struct Measurer {
    boot: Option<Arc<sakshi_attest::MeasuredBoot>>,
    registry: Arc<Registry>,
    measured: AtomicU64,
    /// Shared with the [`HostBackend`] built on this measurer.
    telemetry: Arc<OnceLock<VmTelemetry>>,
}

/// Where the host backend reports VM phases, boot metrics and guest console lines (set once
/// by [`HostBackend::set_telemetry`]).
struct VmTelemetry {
    telemetry: crate::otlp::Telemetry,
    console: Option<crate::otlp::ConsoleFollower>,
}

impl VmTelemetry {
    /// A VM lifecycle phase, in the VM's trace (VMs whose trace id does not parse are skipped).
    fn phase(&self, vm_id: &str, trace_id: &str, phase: crate::otlp::VmPhase) {
        if let Ok(trace) = trace_id.parse() {
            self.telemetry.vm_phase(vm_id, trace, phase);
        }
    }
}

/// `sakshi_vms{state}` from the registry.
fn publish_vm_counts(registry: &Registry, metrics: &crate::otlp::Metrics) {
    if let Ok(rows) = registry.all() {
        let mut counts = std::collections::BTreeMap::new();
        for r in &rows {
            *counts.entry(r.state.as_str()).or_insert(0u64) += 1;
        }
        metrics.vms.set_all(counts);
    }
}

impl Measurer {
    /// A measurer extending through `boot` (or only recording digests, with `None`).
    pub fn new(boot: Option<Arc<sakshi_attest::MeasuredBoot>>, registry: Arc<Registry>) -> Self {
        Measurer {
            boot,
            registry,
            measured: AtomicU64::new(0),
            telemetry: Arc::new(OnceLock::new()),
        }
    }

    /// Boots measured so far.
    pub fn count(&self) -> u64 {
        self.measured.load(Ordering::Relaxed)
    }
}

impl BootMeasurer for Measurer {
    fn measure(&self, m: &BootMeasurement<'_>) -> Result<(), MeasureError> {
        let vm_id = m.vm_id.to_string();
        let cmdline_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(m.cmdline.as_bytes()));
        let config_sha = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(m.config_json));
        let measuring = std::time::Instant::now();
        let (pcr, unapproved) = match &self.boot {
            Some(boot) => {
                let result = boot
                    .measure_digests(&sakshi_attest::VmBootDigests {
                        vm_id: &vm_id,
                        kernel_sha256: sakshi_attest::Sha256Digest(m.kernel_sha256),
                        initrd_sha256: m.initrd_sha256.map(sakshi_attest::Sha256Digest),
                        cmdline: m.cmdline,
                        config: m.config_json,
                    })
                    .map_err(|e| MeasureError::Unavailable {
                        source: Box::new(e),
                    })?;
                let unapproved = match &result.decision {
                    sakshi_attest::PolicyDecision::Approved => Vec::new(),
                    sakshi_attest::PolicyDecision::Flagged { unapproved } => unapproved.clone(),
                    sakshi_attest::PolicyDecision::Refused { unapproved } => {
                        let parts: Vec<String> = unapproved
                            .iter()
                            .map(|u| format!("{} {} is not approved", u.component.name(), u.sha256))
                            .collect();
                        return Err(MeasureError::Refused {
                            reason: parts.join("; "),
                        });
                    }
                };
                (Some(boot.tpm().pcr()), Some(unapproved))
            }
            None => (None, None),
        };
        let approved = |component: sakshi_attest::BootComponent, sha: &[u8; 32]| {
            unapproved.as_ref().map(|list| {
                !list
                    .iter()
                    .any(|u| u.component == component && u.sha256.0 == *sha)
            })
        };
        let mut list = vec![Measurement {
            what: "kernel".into(),
            sha256: hex::encode(m.kernel_sha256),
            pcr,
            approved: approved(sakshi_attest::BootComponent::Kernel, &m.kernel_sha256),
        }];
        if let Some(i) = m.initrd_sha256 {
            list.push(Measurement {
                what: "initrd".into(),
                sha256: hex::encode(i),
                pcr,
                approved: approved(sakshi_attest::BootComponent::Initrd, &i),
            });
        }
        list.push(Measurement {
            what: "cmdline".into(),
            sha256: cmdline_sha,
            pcr,
            approved: None,
        });
        list.push(Measurement {
            what: "config".into(),
            sha256: config_sha,
            pcr,
            approved: None,
        });
        self.measured.fetch_add(1, Ordering::Relaxed);
        if let Some(t) = self.telemetry.get() {
            t.telemetry
                .metrics()
                .measured_boot_latency
                .observe(measuring.elapsed().as_secs_f64());
            t.phase(
                &vm_id,
                &m.trace_id.to_string(),
                crate::otlp::VmPhase::Measured,
            );
        }
        self.registry
            .set_measurements(&vm_id, &list)
            .map_err(|e| MeasureError::Unavailable {
                source: Box::new(e),
            })
    }
}

/// Telemetry for one supervisor event: boot latency and the `booted` phase on the first
/// `running`, the `failed` phase, the end of console following, VMs by state.
fn vm_event_telemetry(
    t: &VmTelemetry,
    registry: &Registry,
    ev: &VmEvent,
    state: VmState,
    trace_id: &str,
) {
    let vm_id = ev.vm_id.to_string();
    let metrics = t.telemetry.metrics();
    match &ev.state {
        // Only the first `running` (boot-complete) carries the boot latency.
        sup::VmState::Running => match ev.boot_latency_ns {
            Some(ns) => {
                metrics.boot_latency.observe(ns as f64 / 1e9);
                t.phase(&vm_id, trace_id, crate::otlp::VmPhase::Booted);
            }
            None => t.phase(
                &vm_id,
                trace_id,
                crate::otlp::VmPhase::Step {
                    step: "resumed",
                    reason: None,
                },
            ),
        },
        sup::VmState::Paused => t.phase(
            &vm_id,
            trace_id,
            crate::otlp::VmPhase::Step {
                step: "paused",
                reason: None,
            },
        ),
        sup::VmState::Stopped => t.phase(
            &vm_id,
            trace_id,
            crate::otlp::VmPhase::Step {
                step: "stopped",
                reason: ev
                    .exit
                    .as_ref()
                    .and_then(|e| e.reason.as_ref())
                    .map(|r| r.name().to_owned()),
            },
        ),
        sup::VmState::Failed(reason) => t.phase(
            &vm_id,
            trace_id,
            crate::otlp::VmPhase::Failed {
                reason: reason.to_string(),
            },
        ),
        _ => {}
    }
    if state.is_final()
        && let Some(console) = &t.console
    {
        console.finish(&vm_id);
    }
    publish_vm_counts(registry, metrics);
}

/// The real VM host.
pub struct HostBackend {
    sup: Supervisor,
    registry: Arc<Registry>,
    measurer: Arc<Measurer>,
    info: HostInfo,
    tpm_line: String,
    telemetry: Arc<OnceLock<VmTelemetry>>,
}

fn host_err(e: impl std::error::Error + Send + Sync + 'static) -> VmError {
    VmError::Host(Box::new(e))
}

fn parse_id(id: &str) -> Result<VmId, VmError> {
    id.parse().map_err(|_| VmError::NotFound(id.to_owned()))
}

impl HostBackend {
    /// Wraps a supervisor; starts the thread that records its events in the registry and
    /// forwards them as [`LifecycleNote`]s.
    pub fn new(
        sup: Supervisor,
        registry: Arc<Registry>,
        measurer: Arc<Measurer>,
        tpm_kind: String,
        tpm_line: String,
    ) -> (HostBackend, mpsc::Receiver<LifecycleNote>) {
        let (tx, rx) = mpsc::channel();
        let events = sup.subscribe();
        let reg = registry.clone();
        let telemetry = measurer.telemetry.clone();
        let spawned = std::thread::Builder::new()
            .name("sakshi-vm-events".into())
            .spawn(move || {
                for ev in events {
                    let state = kind_of(ev.state.kind());
                    let reason = event_reason(&ev);
                    let latency = ev.boot_latency_ns.map(|n| n / 1000);
                    let pid = if state.is_final() {
                        Some(None)
                    } else {
                        ev.vmm_pid.map(Some)
                    };
                    match reg.record(
                        &ev.vm_id.to_string(),
                        state,
                        reason.clone(),
                        rfc3339_nanos(ev.time_unix_nano),
                        latency,
                        pid,
                    ) {
                        Ok(Some((name, trace_id))) => {
                            if let Some(t) = telemetry.get() {
                                vm_event_telemetry(t, &reg, &ev, state, &trace_id);
                            }
                            let _ = tx.send(LifecycleNote {
                                vm_id: ev.vm_id.to_string(),
                                name,
                                state,
                                reason,
                                boot_latency_us: latency,
                                trace_id,
                                seq: ev.seq,
                            });
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(error = %e, vm.id = %ev.vm_id, "cannot record VM event")
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            tracing::error!(error = %e, "cannot start the VM event thread");
        }
        let measurer_telemetry = measurer.telemetry.clone();
        let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned());
        let kvm_mode = if !Path::new("/dev/kvm").exists() {
            "unavailable (no /dev/kvm)".to_owned()
        } else if sakshi_host::pvm_host() {
            "PVM (software nested virtualization)".to_owned()
        } else {
            "hardware KVM".to_owned()
        };
        (
            HostBackend {
                sup,
                registry,
                measurer,
                info: HostInfo {
                    hostname,
                    kvm_mode,
                    tpm_kind,
                    attestation: String::new(),
                },
                tpm_line,
                telemetry: measurer_telemetry,
            },
            rx,
        )
    }

    /// Reports VM phases (create -> measured -> booted, or failed) as spans in each VM's trace,
    /// boot and measured-boot latencies and VMs by state as metrics, and follows guest consoles
    /// as log records (when `telemetry` exports). First call wins.
    pub fn set_telemetry(&self, telemetry: crate::otlp::Telemetry) {
        let console = if telemetry.enabled() {
            match crate::otlp::ConsoleFollower::spawn(telemetry.clone()) {
                Ok(c) => Some(c),
                Err(e) => {
                    tracing::error!(error = %e, "cannot start the guest console follower");
                    None
                }
            }
        } else {
            None
        };
        publish_vm_counts(&self.registry, telemetry.metrics());
        let _ = self.telemetry.set(VmTelemetry { telemetry, console });
    }

    /// The supervisor.
    pub fn supervisor(&self) -> &Supervisor {
        &self.sup
    }

    /// Marks VMs that were live when the daemon last ran as failed: their VMM is gone (or, if
    /// it still runs, it cannot be adopted and is killed). Returns what changed, to audit.
    pub fn recover(&self) -> Result<Vec<LifecycleNote>, RegistryError> {
        let live: std::collections::HashSet<String> = self
            .sup
            .list()
            .into_iter()
            .map(|s| s.id.to_string())
            .collect();
        let mut notes = Vec::new();
        for row in self.registry.all()? {
            if live.contains(&row.id) || matches!(row.state, VmState::Stopped | VmState::Failed) {
                continue;
            }
            let reason = match row.vmm_pid.filter(|p| vmm_alive(*p)) {
                Some(pid) => {
                    let killed = rustix::process::Pid::from_raw(pid as i32)
                        .map(|p| {
                            rustix::process::kill_process(p, rustix::process::Signal::KILL).is_ok()
                        })
                        .unwrap_or(false);
                    format!(
                        "VMM pid {pid} outlived the daemon and cannot be adopted; {}",
                        if killed { "killed" } else { "kill failed" }
                    )
                }
                None if row.state == VmState::Created => {
                    "never started; lost when the daemon restarted".to_owned()
                }
                None => "VMM died while the daemon was down".to_owned(),
            };
            self.registry.record(
                &row.id,
                VmState::Failed,
                Some(reason.clone()),
                now(),
                None,
                Some(None),
            )?;
            notes.push(LifecycleNote {
                vm_id: row.id,
                name: row.name,
                state: VmState::Failed,
                reason: Some(reason),
                boot_latency_us: None,
                trace_id: row.trace_id,
                seq: 0,
            });
        }
        Ok(notes)
    }

    /// Stops every VM that still runs (graceful, in parallel), for a daemon shutdown.
    pub fn stop_all(&self) {
        let ids: Vec<VmId> = self
            .sup
            .list()
            .into_iter()
            .filter(|s| s.state.kind().has_process())
            .map(|s| s.id)
            .collect();
        std::thread::scope(|scope| {
            for id in &ids {
                scope.spawn(move || {
                    if let Err(e) = self.sup.stop(id, StopMode::Graceful) {
                        tracing::warn!(vm.id = %id, error = %e, "stop at shutdown failed");
                    }
                });
            }
        });
    }

    fn summary(&self, row: &Row, live: Option<&sup::VmSummary>) -> VmSummary {
        let (state, latency, rss) = match live {
            Some(s) => (
                kind_of(s.state.kind()),
                s.boot_latency_ns.map(|n| n / 1000).or(row.boot_latency_us),
                s.vmm_memory.as_ref().map(|m| m.rss_kib),
            ),
            None => (row.state, row.boot_latency_us, None),
        };
        VmSummary {
            id: row.id.clone(),
            name: row.name.clone(),
            state,
            vcpus: row.vcpus,
            memory_mib: row.memory_mib,
            created_at: row.created_at.clone(),
            boot_latency_us: latency,
            rss_kib: rss,
            kernel_sha256: row.kernel_sha256.clone(),
            trace_id: row.trace_id.clone(),
        }
    }

    fn detail(&self, id: &str) -> Result<VmDetail, VmError> {
        let row = self
            .registry
            .get(id)
            .map_err(host_err)?
            .ok_or_else(|| VmError::NotFound(id.to_owned()))?;
        let vm_id = parse_id(id)?;
        let live = self.sup.show(&vm_id).ok();
        let summary = self.summary(&row, live.as_ref().map(|d| &d.summary));
        let (cmdline, exit_reason) = match &live {
            Some(d) => (
                d.cmdline.clone().unwrap_or_else(|| row.cmdline.clone()),
                match &d.summary.state {
                    sup::VmState::Failed(r) => Some(r.to_string()),
                    sup::VmState::Stopped => d
                        .exit
                        .as_ref()
                        .and_then(|x| x.reason)
                        .map(|r| r.name().to_owned()),
                    _ => None,
                },
            ),
            None => (
                row.cmdline.clone(),
                matches!(row.state, VmState::Failed | VmState::Stopped)
                    .then(|| row.reason.clone())
                    .flatten(),
            ),
        };
        Ok(VmDetail {
            summary,
            cmdline,
            initrd_sha256: row.initrd_sha256.clone(),
            exit_reason,
            history: row.history.clone(),
            measurements: row.measurements.clone(),
        })
    }
}

/// Whether `pid` is a running `sakshi-vmm`.
fn vmm_alive(pid: u32) -> bool {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|c| String::from_utf8_lossy(&c).contains("sakshi-vmm"))
        .unwrap_or(false)
}

fn invalid_state(id: &str, from: StateKind, op: &'static str) -> VmError {
    VmError::InvalidState {
        id: id.to_owned(),
        state: kind_of(from),
        op,
    }
}

fn control_err(id: &str, op: &'static str, e: ControlError) -> VmError {
    match e {
        ControlError::Unknown(_) => VmError::NotFound(id.to_owned()),
        ControlError::State(t) => invalid_state(id, t.from, op),
        ControlError::NoProcess(k) => invalid_state(id, k, op),
        other => host_err(other),
    }
}

impl VmBackend for HostBackend {
    fn host_info(&self) -> HostInfo {
        let mut info = self.info.clone();
        info.attestation = format!(
            "{}; {} boot(s) measured since start",
            self.tpm_line,
            self.measurer.count()
        );
        info
    }

    fn create(&self, spec: VmSpec) -> Result<VmDetail, VmError> {
        let trace: Option<TraceId> = spec.trace_id.parse().ok();
        let mut s = sup::VmSpec::new(
            &spec.kernel.path,
            spec.cmdline.clone(),
            spec.memory_mib.into(),
        );
        s.initrd = spec.initrd.as_ref().map(|i| i.path.clone());
        s.vcpus = spec.vcpus.into();
        s.trace_id = trace.clone();
        let id = self.sup.create(s).map_err(|e| match e {
            CreateError::Spec(c) => {
                let msg = c.to_string();
                let field = ["memory_mib", "vcpus", "cmdline", "initrd", "kernel"]
                    .into_iter()
                    .find(|f| msg.contains(&format!("`{f}`")))
                    .map(|f| match f {
                        "kernel" => "kernel_sha256",
                        "initrd" => "initrd_sha256",
                        other => other,
                    })
                    .unwrap_or("body");
                VmError::Rejected { field, reason: msg }
            }
            other => host_err(other),
        })?;
        let trace_id = self
            .sup
            .show(&id)
            .map(|d| d.summary.trace_id.to_string())
            .unwrap_or(spec.trace_id);
        let row = Row {
            id: id.to_string(),
            name: spec.name,
            created_at: now(),
            kernel_sha256: spec.kernel.sha256,
            initrd_sha256: spec.initrd.map(|i| i.sha256),
            cmdline: spec.cmdline,
            vcpus: spec.vcpus,
            memory_mib: spec.memory_mib,
            trace_id,
            state: VmState::Created,
            reason: None,
            boot_latency_us: None,
            vmm_pid: None,
            history: vec![StateChange {
                state: VmState::Created,
                at: now(),
                reason: None,
            }],
            measurements: Vec::new(),
        };
        if let Err(e) = self.registry.insert(&row) {
            let _ = self.sup.destroy(&id);
            return Err(host_err(e));
        }
        if let Some(t) = self.telemetry.get() {
            let parent = row
                .trace_id
                .parse()
                .ok()
                .and_then(|tr| t.telemetry.request_parent(tr));
            t.phase(
                &row.id,
                &row.trace_id,
                crate::otlp::VmPhase::Created { parent },
            );
            publish_vm_counts(&self.registry, t.telemetry.metrics());
        }
        self.detail(&row.id)
    }

    fn list(&self) -> Result<Vec<VmSummary>, VmError> {
        let live: std::collections::HashMap<String, sup::VmSummary> = self
            .sup
            .list()
            .into_iter()
            .map(|s| (s.id.to_string(), s))
            .collect();
        Ok(self
            .registry
            .all()
            .map_err(host_err)?
            .iter()
            .map(|r| self.summary(r, live.get(&r.id)))
            .collect())
    }

    fn show(&self, id: &str) -> Result<VmDetail, VmError> {
        self.detail(id)
    }

    fn start(&self, id: &str) -> Result<VmDetail, VmError> {
        let vm = parse_id(id)?;
        if self.sup.show(&vm).is_err() {
            return match self.registry.get(id).map_err(host_err)? {
                Some(row) => Err(VmError::InvalidState {
                    id: id.to_owned(),
                    state: row.state,
                    op: "start",
                }),
                None => Err(VmError::NotFound(id.to_owned())),
            };
        }
        self.sup.start(&vm).map_err(|e| match e {
            StartError::Unknown(_) => VmError::NotFound(id.to_owned()),
            StartError::State(t) => invalid_state(id, t.from, "start"),
            StartError::Measure(MeasureError::Refused { reason }) => VmError::Rejected {
                field: "kernel_sha256",
                reason: format!("boot refused by image policy: {reason}"),
            },
            other => host_err(other),
        })?;
        if let Some(t) = self.telemetry.get()
            && let Some(console) = &t.console
            && let Ok(d) = self.sup.show(&vm)
        {
            console.follow(
                id,
                d.runtime_dir.join("console.log"),
                d.summary.trace_id.to_string().parse().ok(),
            );
            // Ended before it was followed: the event thread's `finish` came first.
            if d.summary.state.is_final()
                || self
                    .registry
                    .get(id)
                    .ok()
                    .flatten()
                    .is_some_and(|r| r.state.is_final())
            {
                console.finish(id);
            }
        }
        // Returns at `booting`: `running` follows as an event (and its own audit entry), so the
        // request's `vm.boot` entry comes first in the log.
        self.detail(id)
    }

    fn pause(&self, id: &str) -> Result<VmDetail, VmError> {
        let vm = parse_id(id)?;
        self.sup
            .pause(&vm)
            .map_err(|e| control_err(id, "pause", e))?;
        self.detail(id)
    }

    fn resume(&self, id: &str) -> Result<VmDetail, VmError> {
        let vm = parse_id(id)?;
        self.sup
            .resume(&vm)
            .map_err(|e| control_err(id, "resume", e))?;
        self.detail(id)
    }

    fn stop(&self, id: &str) -> Result<VmDetail, VmError> {
        let vm = parse_id(id)?;
        if self.sup.show(&vm).is_err()
            && let Some(row) = self.registry.get(id).map_err(host_err)?
        {
            return Err(VmError::InvalidState {
                id: id.to_owned(),
                state: row.state,
                op: "stop",
            });
        }
        self.sup
            .stop(&vm, StopMode::Graceful)
            .map_err(|e| match e {
                StopError::Unknown(_) => VmError::NotFound(id.to_owned()),
                StopError::State(t) => invalid_state(id, t.from, "stop"),
                other => host_err(other),
            })?;
        self.detail(id)
    }

    fn destroy(&self, id: &str) -> Result<(), VmError> {
        let vm = parse_id(id)?;
        match self.sup.destroy(&vm) {
            Ok(()) | Err(DestroyError::Unknown(_)) => {}
            Err(e) => return Err(host_err(e)),
        }
        let removed = self.registry.remove(id).map_err(host_err)?;
        if let Some(t) = self.telemetry.get() {
            if let Some(console) = &t.console {
                console.finish(id);
            }
            t.telemetry.forget_vm(id);
            publish_vm_counts(&self.registry, t.telemetry.metrics());
        }
        if removed {
            Ok(())
        } else {
            Err(VmError::NotFound(id.to_owned()))
        }
    }

    fn console_tail(&self, id: &str, bytes: usize) -> Result<String, VmError> {
        let vm = parse_id(id)?;
        match self.sup.console_tail(&vm, bytes) {
            Ok(b) => Ok(String::from_utf8_lossy(&b).into_owned()),
            Err(sup::ConsoleError::Unknown(_)) => match self.registry.get(id).map_err(host_err)? {
                // A VM from before the last restart: its console went with its runtime dir.
                Some(_) => Ok(String::new()),
                None => Err(VmError::NotFound(id.to_owned())),
            },
            Err(e) => Err(host_err(e)),
        }
    }
}
