//! The VM supervisor: one `sakshi-vmm` process per VM, its lifecycle, its events.
//!
//! [`Supervisor`] spawns a VMM process per VM and talks to it only through the process contract
//! (docs/CONTRACTS.md): command line, `--events-fd` JSON lines, exit status and the control
//! socket. Each VM moves through
//! `Created -> Booting -> Running <-> Paused -> Stopped | Failed(reason)`; every change is a
//! [`VmEvent`] with a per-VM sequence number, delivered in order to every
//! [`subscriber`](Supervisor::subscribe).
//!
//! Each VM has a runtime directory `<runtime_dir>/<vm id>/` holding `vm.json` (the canonical
//! configuration that was measured), `control.sock`, `console.log` (guest serial output) and
//! `vmm.log` (the VMM's own log); [`destroy`](Supervisor::destroy) removes it. Dropping the last
//! handle kills every VMM and removes every runtime directory.
//!
//! # Use from async code
//! [`Supervisor`] is a cheap `Clone + Send + Sync` handle without any async runtime. Methods that
//! wait for a process or a socket ([`start`](Supervisor::start) (measurer), `pause`, `resume`,
//! `stop`, `destroy`, `vmm_status`, `wait_for`) block the calling thread, bounded by the
//! configured timeouts; from tokio call them through `spawn_blocking`. `list`, `show`,
//! `subscribe` and `create` only touch memory and small files. The event receiver is a
//! `std::sync::mpsc::Receiver`; drain it from a blocking task.

mod control;
mod error;
mod ids;
mod measure;
mod monitor;
mod spec;
mod state;
pub(crate) mod sys;

use std::collections::BTreeMap;
use std::fs::{DirBuilder, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

pub use control::MemUsage;
pub use error::{
    ConsoleError, ControlError, CreateError, DestroyError, InitError, StartError, StopError,
    UnknownVm, WaitError,
};
pub use ids::{ParseTraceIdError, ParseVmIdError, TraceId, VmId};
pub use measure::{BootMeasurement, BootMeasurer, MeasureError, NoopMeasurer};
pub use spec::VmSpec;
pub use state::{ExitInfo, FailReason, InvalidTransition, StateKind, VmEvent, VmState};

use crate::{ControlRequest, ExitReason, VmStatus};
use measure::DigestCache;
use monitor::Monitor;
use state::{Lifecycle, TransitionFacts};

/// Largest console tail served, in bytes.
pub const MAX_CONSOLE_TAIL: usize = 1024 * 1024;

/// Serialises spawns: the events pipe is inheritable only while its VMM is being spawned.
static SPAWN_LOCK: Mutex<()> = Mutex::new(());

/// How the supervisor runs VMMs.
#[derive(Clone, Debug)]
pub struct SupervisorConfig {
    /// The `sakshi-vmm` binary.
    pub vmm_path: PathBuf,
    /// Directory for the per-VM runtime directories (created if missing, mode 0700).
    pub runtime_dir: PathBuf,
    /// How long a graceful stop waits before it kills the VMM.
    pub stop_timeout: Duration,
    /// How long one control-socket request may take.
    pub control_timeout: Duration,
}

impl SupervisorConfig {
    /// Defaults: 10 s graceful stop, 5 s per control request.
    pub fn new(vmm_path: impl Into<PathBuf>, runtime_dir: impl Into<PathBuf>) -> Self {
        Self {
            vmm_path: vmm_path.into(),
            runtime_dir: runtime_dir.into(),
            stop_timeout: Duration::from_secs(10),
            control_timeout: Duration::from_secs(5),
        }
    }
}

/// How to stop a VM.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StopMode {
    /// Ask the VMM to stop (`{"op":"stop","graceful":true}`); kill it after the stop timeout.
    Graceful,
    /// Ask the VMM to stop at once; kill it if it does not answer or exit promptly.
    Hard,
}

/// One VM in [`Supervisor::list`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmSummary {
    /// The VM.
    pub id: VmId,
    /// Its state.
    #[serde(flatten)]
    pub state: VmState,
    /// Its trace id.
    pub trace_id: TraceId,
    /// The VMM process id while the process exists.
    pub vmm_pid: Option<u32>,
    /// The VMM's memory use while the process exists.
    pub vmm_memory: Option<MemUsage>,
    /// Spawn to boot-complete, nanoseconds.
    pub boot_latency_ns: Option<u64>,
    /// Spawn to the first console byte, nanoseconds.
    pub first_output_ns: Option<u64>,
}

/// Everything known about one VM ([`Supervisor::show`]).
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct VmDetails {
    /// The summary.
    #[serde(flatten)]
    pub summary: VmSummary,
    /// What was asked for.
    pub spec: VmSpec,
    /// The command line the guest got (after the trace id was added), once started.
    pub cmdline: Option<String>,
    /// SHA-256 of the kernel as measured, hex.
    pub kernel_sha256: Option<String>,
    /// SHA-256 of the initrd as measured, hex.
    pub initrd_sha256: Option<String>,
    /// The runtime directory.
    pub runtime_dir: PathBuf,
    /// How the VMM process ended.
    pub exit: Option<ExitInfo>,
    /// Every event of the VM, oldest first.
    pub history: Vec<VmEvent>,
}

/// Delivers events to subscribers.
#[derive(Debug, Default)]
pub(crate) struct EventHub {
    subscribers: Mutex<Vec<mpsc::Sender<VmEvent>>>,
}

impl EventHub {
    fn subscribe(&self) -> mpsc::Receiver<VmEvent> {
        let (tx, rx) = mpsc::channel();
        lock(&self.subscribers).push(tx);
        rx
    }

    fn publish(&self, event: &VmEvent) {
        tracing::info!(
            vm.id = %event.vm_id,
            vm.seq = event.seq,
            vm.state = %event.state,
            trace.id = %event.trace_id,
            vm.boot_latency_ns = event.boot_latency_ns,
            "vm state changed"
        );
        lock(&self.subscribers).retain(|s| s.send(event.clone()).is_ok());
    }
}

/// Locks a mutex, recovering from poisoning: every critical section leaves its data consistent
/// before anything in it can panic.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn now_unix_nano() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[derive(Debug)]
struct Process {
    pid: u32,
    pidfd: Arc<OwnedFd>,
    alive: bool,
}

#[derive(Debug)]
struct VmInner {
    lifecycle: Lifecycle,
    process: Option<Process>,
    monitor: Option<JoinHandle<()>>,
    stop_requested: bool,
    kill_sent: bool,
    destroyed: bool,
    cmdline: Option<String>,
    kernel_sha256: Option<[u8; 32]>,
    initrd_sha256: Option<[u8; 32]>,
    first_output: Option<Duration>,
    exit: Option<ExitInfo>,
}

/// One VM, shared between the supervisor and its monitor thread.
#[derive(Debug)]
pub(crate) struct VmEntry {
    id: VmId,
    spec: VmSpec,
    trace_id: TraceId,
    dir: PathBuf,
    inner: Mutex<VmInner>,
    changed: Condvar,
    /// Serialises control-socket requests to this VM.
    control: Mutex<()>,
}

impl VmEntry {
    fn lock(&self) -> MutexGuard<'_, VmInner> {
        lock(&self.inner)
    }

    fn config_path(&self) -> PathBuf {
        self.dir.join("vm.json")
    }

    fn socket_path(&self) -> PathBuf {
        self.dir.join("control.sock")
    }

    fn console_path(&self) -> PathBuf {
        self.dir.join("console.log")
    }

    fn console_old_path(&self) -> PathBuf {
        self.dir.join("console.log.old")
    }

    fn vmm_log_path(&self) -> PathBuf {
        self.dir.join("vmm.log")
    }

    /// Makes a transition and publishes its event while the VM lock is held, so that each VM's
    /// events reach subscribers in sequence order.
    fn transition(
        &self,
        inner: &mut VmInner,
        hub: &EventHub,
        to: VmState,
        at: Instant,
        facts: TransitionFacts,
    ) -> Result<(), InvalidTransition> {
        let event = inner.lifecycle.transition(to, at, now_unix_nano(), facts)?;
        hub.publish(&event);
        self.changed.notify_all();
        Ok(())
    }

    fn on_boot_complete(&self, hub: &EventHub) {
        let mut inner = self.lock();
        if inner.lifecycle.state().kind() == StateKind::Booting {
            let pid = inner.process.as_ref().map(|p| p.pid);
            let facts = TransitionFacts {
                vmm_pid: pid,
                exit: None,
            };
            // Checked just above: Booting -> Running is allowed.
            let _ = self.transition(&mut inner, hub, VmState::Running, Instant::now(), facts);
        }
    }

    fn on_first_output(&self, after: Duration) {
        self.lock().first_output = Some(after);
    }

    fn on_exit(
        &self,
        hub: &EventHub,
        reaped: std::io::Result<sys::Reaped>,
        exited: Option<(ExitReason, Option<String>)>,
    ) {
        let mut inner = self.lock();
        let pid = inner.process.as_ref().map(|p| p.pid);
        let (reason, detail) = match exited {
            Some((r, d)) => (Some(r), d),
            None => (None, None),
        };
        let (state, exit) = match reaped {
            Ok(r) => {
                let exit = ExitInfo {
                    code: r.status.code(),
                    signal: r.status.signal(),
                    reason,
                    detail: detail.clone(),
                    peak_rss_kib: Some(r.peak_rss_kib),
                };
                let state = match (r.status.code(), r.status.signal()) {
                    (Some(0), _) => VmState::Stopped,
                    (Some(1), _) => VmState::Failed(FailReason::VmmRejected {
                        detail: detail.or_else(|| last_log_line(&self.vmm_log_path())),
                    }),
                    (Some(2), _) => VmState::Failed(FailReason::GuestFailed { reason, detail }),
                    (Some(code), _) => VmState::Failed(FailReason::UnexpectedExit { code }),
                    (None, Some(libc::SIGKILL)) if inner.kill_sent => VmState::Stopped,
                    (None, Some(signal)) => VmState::Failed(FailReason::KilledBySignal { signal }),
                    (None, None) => VmState::Failed(FailReason::UnexpectedExit { code: -1 }),
                };
                (state, exit)
            }
            Err(e) => {
                tracing::error!(vm.id = %self.id, error = %e, "cannot reap the VMM");
                let exit = ExitInfo {
                    code: None,
                    signal: None,
                    reason,
                    detail,
                    peak_rss_kib: None,
                };
                let state = VmState::Failed(FailReason::Setup {
                    message: format!("cannot reap the VMM: {e}"),
                });
                (state, exit)
            }
        };
        if let Some(p) = &mut inner.process {
            p.alive = false;
        }
        inner.exit = Some(exit.clone());
        let facts = TransitionFacts {
            vmm_pid: pid,
            exit: Some(exit),
        };
        if let Err(e) = self.transition(&mut inner, hub, state, Instant::now(), facts) {
            tracing::error!(vm.id = %self.id, error = %e, "VMM exit in an unexpected state");
        }
        self.changed.notify_all();
    }

    fn summary(&self, inner: &VmInner) -> VmSummary {
        let live_pid = inner.process.as_ref().filter(|p| p.alive).map(|p| p.pid);
        VmSummary {
            id: self.id.clone(),
            state: inner.lifecycle.state().clone(),
            trace_id: self.trace_id.clone(),
            vmm_pid: live_pid,
            vmm_memory: live_pid.and_then(control::mem_usage),
            boot_latency_ns: inner.lifecycle.boot_latency().map(nanos),
            first_output_ns: inner.first_output.map(nanos),
        }
    }

    fn is_alive(&self) -> bool {
        self.lock().process.as_ref().is_some_and(|p| p.alive)
    }

    /// Sends SIGKILL through the pidfd if the process is still alive.
    fn kill(&self) -> std::io::Result<()> {
        let mut inner = self.lock();
        let Some(p) = inner.process.as_ref().filter(|p| p.alive) else {
            return Ok(());
        };
        let pidfd = Arc::clone(&p.pidfd);
        inner.kill_sent = true;
        match rustix::process::pidfd_send_signal(pidfd.as_fd(), rustix::process::Signal::KILL) {
            Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Waits until the process has been reaped, up to `timeout`; true if it has.
    fn wait_exit(&self, timeout: Duration) -> bool {
        let inner = self.lock();
        let (inner, _) = self
            .changed
            .wait_timeout_while(inner, timeout, |i| {
                i.process.as_ref().is_some_and(|p| p.alive)
            })
            .unwrap_or_else(|e| e.into_inner());
        !inner.process.as_ref().is_some_and(|p| p.alive)
    }

    fn join_monitor(&self) {
        let handle = self.lock().monitor.take();
        if let Some(h) = handle
            && h.join().is_err()
        {
            tracing::error!(vm.id = %self.id, "VM monitor thread panicked");
        }
    }
}

fn last_log_line(path: &Path) -> Option<String> {
    let text = tail_bytes(path, 4096).ok()?;
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .map(|l| l.trim().to_owned())
}

/// The last `max` bytes of a file (empty if it does not exist).
fn tail_bytes(path: &Path, max: usize) -> std::io::Result<Vec<u8>> {
    let mut file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let len = file.metadata()?.len();
    let want = u64::try_from(max).unwrap_or(u64::MAX).min(len);
    file.seek(SeekFrom::Start(len - want))?;
    let mut out = Vec::with_capacity(usize::try_from(want).unwrap_or(0));
    file.take(want).read_to_end(&mut out)?;
    Ok(out)
}

struct Inner {
    config: SupervisorConfig,
    measurer: Arc<dyn BootMeasurer>,
    hub: Arc<EventHub>,
    vms: Mutex<BTreeMap<VmId, Arc<VmEntry>>>,
    digests: DigestCache,
}

impl Drop for Inner {
    fn drop(&mut self) {
        let entries: Vec<Arc<VmEntry>> = lock(&self.vms).values().cloned().collect();
        for entry in &entries {
            if let Err(e) = entry.kill() {
                tracing::error!(vm.id = %entry.id, error = %e, "cannot kill VMM on shutdown");
            }
        }
        for entry in &entries {
            entry.join_monitor();
            if let Err(e) = std::fs::remove_dir_all(&entry.dir)
                && e.kind() != std::io::ErrorKind::NotFound
            {
                tracing::error!(vm.id = %entry.id, error = %e, "cannot remove VM runtime directory");
            }
        }
    }
}

/// The VM supervisor. See the [module documentation](self).
#[derive(Clone)]
pub struct Supervisor {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Supervisor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Supervisor")
            .field("config", &self.inner.config)
            .finish_non_exhaustive()
    }
}

impl Supervisor {
    /// A supervisor that runs `config.vmm_path` and asks `measurer` before every boot.
    pub fn new(
        config: SupervisorConfig,
        measurer: Arc<dyn BootMeasurer>,
    ) -> Result<Self, InitError> {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&config.runtime_dir)
            .map_err(|e| InitError::RuntimeDir(config.runtime_dir.clone(), e))?;
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                measurer,
                hub: Arc::new(EventHub::default()),
                vms: Mutex::new(BTreeMap::new()),
                digests: DigestCache::default(),
            }),
        })
    }

    /// A receiver of every event from now on, in per-VM sequence order.
    ///
    /// Dropping the receiver unsubscribes. Earlier events are in [`show`](Self::show).
    pub fn subscribe(&self) -> mpsc::Receiver<VmEvent> {
        self.inner.hub.subscribe()
    }

    fn entry(&self, id: &VmId) -> Result<Arc<VmEntry>, UnknownVm> {
        lock(&self.inner.vms)
            .get(id)
            .cloned()
            .ok_or_else(|| UnknownVm(id.clone()))
    }

    /// Registers a VM and makes its runtime directory; it is `Created` (event seq 1).
    pub fn create(&self, spec: VmSpec) -> Result<VmId, CreateError> {
        spec.validate()?;
        let id = VmId::random();
        let dir = self.inner.config.runtime_dir.join(id.to_string());
        let socket = dir.join("control.sock");
        if socket.as_os_str().len() > 107 {
            return Err(CreateError::SocketPathTooLong(socket));
        }
        DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| CreateError::RuntimeDir(dir.clone(), e))?;
        let trace_id = spec.trace_id.clone().unwrap_or_else(TraceId::random);
        let (lifecycle, event) = Lifecycle::new(id.clone(), trace_id.clone(), now_unix_nano());
        let entry = Arc::new(VmEntry {
            id: id.clone(),
            spec,
            trace_id,
            dir,
            inner: Mutex::new(VmInner {
                lifecycle,
                process: None,
                monitor: None,
                stop_requested: false,
                kill_sent: false,
                destroyed: false,
                cmdline: None,
                kernel_sha256: None,
                initrd_sha256: None,
                first_output: None,
                exit: None,
            }),
            changed: Condvar::new(),
            control: Mutex::new(()),
        });
        {
            // Publish under the VM lock like every other event of this VM.
            let _inner = entry.lock();
            lock(&self.inner.vms).insert(id.clone(), Arc::clone(&entry));
            self.inner.hub.publish(&event);
        }
        Ok(id)
    }

    /// Measures the VM and spawns its VMM; returns once it is `Booting`.
    ///
    /// Blocks for the digests (cached) and the [`BootMeasurer`]. Use
    /// [`wait_for`](Self::wait_for) to wait for `Running`. On any error after the state check the
    /// VM becomes `Failed` and no process is left.
    pub fn start(&self, id: &VmId) -> Result<(), StartError> {
        let entry = self.entry(id)?;
        let mut inner = entry.lock();
        inner.lifecycle.check(StateKind::Booting)?;
        if inner.destroyed {
            return Err(UnknownVm(id.clone()).into());
        }
        match self.spawn(&entry, &mut inner) {
            Ok(()) => Ok(()),
            Err(err) => {
                let reason = match &err {
                    StartError::Measure(MeasureError::Refused { reason }) => {
                        FailReason::MeasurementRefused {
                            message: reason.clone(),
                        }
                    }
                    other => FailReason::Setup {
                        message: error_chain(other),
                    },
                };
                // Created -> Failed is always allowed; no process exists on this path.
                let _ = entry.transition(
                    &mut inner,
                    &self.inner.hub,
                    VmState::Failed(reason),
                    Instant::now(),
                    TransitionFacts::default(),
                );
                Err(err)
            }
        }
    }

    fn spawn(&self, entry: &Arc<VmEntry>, inner: &mut VmInner) -> Result<(), StartError> {
        let spec = &entry.spec;
        let digests = &self.inner.digests;
        let kernel_sha256 = digests
            .sha256(&spec.kernel)
            .map_err(|e| StartError::Digest(spec.kernel.clone(), e))?;
        let initrd_sha256 = match &spec.initrd {
            Some(p) => Some(
                digests
                    .sha256(p)
                    .map_err(|e| StartError::Digest(p.clone(), e))?,
            ),
            None => None,
        };
        let mut config = spec.vmm_config(&entry.trace_id);
        config.kernel_sha256 = Some(hex::encode(kernel_sha256));
        config.initrd_sha256 = initrd_sha256.map(hex::encode);
        let config_json = spec::canonical_json(&config).map_err(StartError::Config)?;
        let cmdline = config.cmdline;
        inner.cmdline = Some(cmdline.clone());
        inner.kernel_sha256 = Some(kernel_sha256);
        inner.initrd_sha256 = initrd_sha256;

        self.inner
            .measurer
            .measure(&BootMeasurement {
                vm_id: &entry.id,
                trace_id: &entry.trace_id,
                kernel_sha256,
                initrd_sha256,
                cmdline: &cmdline,
                config_json: &config_json,
            })
            .map_err(StartError::Measure)?;

        let config_path = entry.config_path();
        write_new_file(&config_path, &config_json)
            .map_err(|e| StartError::RuntimeFile(config_path.clone(), e))?;
        let log_path = entry.vmm_log_path();
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log_path)
            .map_err(|e| StartError::RuntimeFile(log_path.clone(), e))?;

        let vmm = &self.inner.config.vmm_path;
        let spawn_err = |e| StartError::Spawn(vmm.clone(), e);
        let (events_rx, events_tx) = std::io::pipe().map_err(spawn_err)?;
        // Keep the inheritable descriptor off 0..=2, which the child's stdio replaces.
        let events_tx: OwnedFd = if events_tx.as_raw_fd() < 3 {
            rustix::io::fcntl_dupfd_cloexec(&events_tx, 3).map_err(|e| spawn_err(e.into()))?
        } else {
            events_tx.into()
        };
        let mut cmd = Command::new(vmm);
        cmd.arg("--config")
            .arg(&config_path)
            .arg("--api-sock")
            .arg(entry.socket_path())
            .arg("--events-fd")
            .arg(events_tx.as_raw_fd().to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log));

        let (spawned, spawned_at) = {
            let _guard = lock(&SPAWN_LOCK);
            rustix::io::fcntl_setfd(&events_tx, rustix::io::FdFlags::empty())
                .map_err(|e| spawn_err(e.into()))?;
            let spawned_at = Instant::now();
            let spawned = cmd.spawn();
            // Make it close-on-exec again before anyone else can spawn.
            drop(events_tx);
            (spawned, spawned_at)
        };
        let mut child = spawned.map_err(spawn_err)?;
        let pid = child.id();
        let pidfd = match rustix::process::Pid::from_raw(pid as i32)
            .ok_or(rustix::io::Errno::SRCH)
            .and_then(|p| rustix::process::pidfd_open(p, rustix::process::PidfdFlags::empty()))
        {
            Ok(fd) => Arc::new(fd),
            Err(e) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(spawn_err(e.into()));
            }
        };
        let Some(stdout) = child.stdout.take() else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(spawn_err(std::io::ErrorKind::BrokenPipe.into()));
        };
        // From here on the monitor thread reaps the child; `child` is not waited on.
        drop(child);

        let monitor = Monitor {
            entry: Arc::clone(entry),
            hub: Arc::clone(&self.inner.hub),
            pid,
            pidfd: Arc::clone(&pidfd),
            events: events_rx,
            stdout,
            spawned_at,
        };
        inner.process = Some(Process {
            pid,
            pidfd: Arc::clone(&pidfd),
            alive: true,
        });
        // Created -> Booting was checked by the caller under this same lock.
        let _ = entry.transition(
            inner,
            &self.inner.hub,
            VmState::Booting,
            spawned_at,
            TransitionFacts {
                vmm_pid: Some(pid),
                exit: None,
            },
        );
        let short: String = entry.id.to_string().chars().take(8).collect();
        match std::thread::Builder::new()
            .name(format!("vmm-{short}"))
            .spawn(move || monitor.run())
        {
            Ok(handle) => {
                inner.monitor = Some(handle);
                Ok(())
            }
            Err(e) => {
                // No monitor: kill and reap here, then report the VM as failed.
                let _ = rustix::process::pidfd_send_signal(
                    pidfd.as_fd(),
                    rustix::process::Signal::KILL,
                );
                let _ = sys::wait4(pid);
                if let Some(p) = &mut inner.process {
                    p.alive = false;
                }
                let _ = entry.transition(
                    inner,
                    &self.inner.hub,
                    VmState::Failed(FailReason::Setup {
                        message: format!("cannot start the monitor thread: {e}"),
                    }),
                    Instant::now(),
                    TransitionFacts {
                        vmm_pid: Some(pid),
                        exit: None,
                    },
                );
                // The state is already Failed; the caller's transition will be refused.
                Err(spawn_err(e))
            }
        }
    }

    fn control(
        &self,
        entry: &VmEntry,
        req: &ControlRequest,
    ) -> Result<crate::ControlResponse, ControlError> {
        control::request(&entry.socket_path(), req, self.inner.config.control_timeout)
    }

    fn pause_or_resume(&self, id: &VmId, pause: bool) -> Result<(), ControlError> {
        let entry = self.entry(id)?;
        let _ctl = lock(&entry.control);
        let to = if pause {
            VmState::Paused
        } else {
            VmState::Running
        };
        {
            let inner = entry.lock();
            if pause && inner.lifecycle.state().kind() != StateKind::Running
                || !pause && inner.lifecycle.state().kind() != StateKind::Paused
            {
                return Err(InvalidTransition {
                    from: inner.lifecycle.state().kind(),
                    to: to.kind(),
                }
                .into());
            }
        }
        let req = if pause {
            ControlRequest::Pause {}
        } else {
            ControlRequest::Resume {}
        };
        self.control(&entry, &req)?;
        let mut inner = entry.lock();
        let pid = inner.process.as_ref().map(|p| p.pid);
        entry.transition(
            &mut inner,
            &self.inner.hub,
            to,
            Instant::now(),
            TransitionFacts {
                vmm_pid: pid,
                exit: None,
            },
        )?;
        Ok(())
    }

    /// Pauses a `Running` VM's vCPUs through the control socket. Blocks for the request.
    pub fn pause(&self, id: &VmId) -> Result<(), ControlError> {
        self.pause_or_resume(id, true)
    }

    /// Resumes a `Paused` VM through the control socket. Blocks for the request.
    pub fn resume(&self, id: &VmId) -> Result<(), ControlError> {
        self.pause_or_resume(id, false)
    }

    /// The VMM's own `status` (run state, uptime, counters). Blocks for the request.
    pub fn vmm_status(&self, id: &VmId) -> Result<VmStatus, ControlError> {
        let entry = self.entry(id)?;
        let kind = entry.lock().lifecycle.state().kind();
        if !kind.has_process() {
            return Err(ControlError::NoProcess(kind));
        }
        let _ctl = lock(&entry.control);
        self.control(&entry, &ControlRequest::Status {})?
            .status
            .ok_or_else(|| {
                ControlError::Response(serde::de::Error::custom(
                    "`status` response without `status`",
                ))
            })
    }

    /// Stops a `Booting`, `Running` or `Paused` VM and returns its final state.
    ///
    /// Blocks until the VMM has exited: up to the stop timeout for a graceful stop (then the
    /// VMM is killed), a short grace period for a hard stop.
    pub fn stop(&self, id: &VmId, mode: StopMode) -> Result<VmState, StopError> {
        let entry = self.entry(id)?;
        {
            let mut inner = entry.lock();
            inner.lifecycle.check(StateKind::Stopped)?;
            inner.stop_requested = true;
        }
        let asked = {
            let _ctl = lock(&entry.control);
            let req = ControlRequest::Stop {
                graceful: mode == StopMode::Graceful,
                timeout_ms: None,
            };
            match self.control(&entry, &req) {
                Ok(_) => true,
                Err(e) => {
                    tracing::warn!(vm.id = %id, error = %error_chain(&e), "stop request failed; killing the VMM");
                    false
                }
            }
        };
        let grace = match mode {
            StopMode::Graceful => self.inner.config.stop_timeout,
            StopMode::Hard => Duration::from_secs(2),
        };
        if !(asked && entry.wait_exit(grace)) {
            entry.kill().map_err(StopError::Kill)?;
            if !entry.wait_exit(Duration::from_secs(10)) {
                return Err(StopError::Timeout(entry.lock().lifecycle.state().kind()));
            }
        }
        Ok(entry.lock().lifecycle.state().clone())
    }

    /// Stops the VM if its VMM still runs (hard), then removes it and its runtime directory.
    ///
    /// Blocks until the VMM is gone. On error the VM stays listed and destroy can be retried.
    pub fn destroy(&self, id: &VmId) -> Result<(), DestroyError> {
        let entry = self.entry(id)?;
        entry.lock().destroyed = true;
        if entry.is_alive() {
            match self.stop(id, StopMode::Hard) {
                Ok(_) => {}
                // It ended on its own between the check and the stop.
                Err(StopError::State(_)) if !entry.is_alive() => {}
                Err(e) => return Err(DestroyError::Stop(e)),
            }
        }
        entry.join_monitor();
        match std::fs::remove_dir_all(&entry.dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(DestroyError::Cleanup(entry.dir.clone(), e)),
        }
        lock(&self.inner.vms).remove(id);
        Ok(())
    }

    /// Every VM with its state, VMM pid, VMM memory and boot latency.
    pub fn list(&self) -> Vec<VmSummary> {
        let entries: Vec<Arc<VmEntry>> = lock(&self.inner.vms).values().cloned().collect();
        entries.iter().map(|e| e.summary(&e.lock())).collect()
    }

    /// Everything known about one VM, with its full event history.
    pub fn show(&self, id: &VmId) -> Result<VmDetails, UnknownVm> {
        let entry = self.entry(id)?;
        let inner = entry.lock();
        Ok(VmDetails {
            summary: entry.summary(&inner),
            spec: entry.spec.clone(),
            cmdline: inner.cmdline.clone(),
            kernel_sha256: inner.kernel_sha256.map(hex::encode),
            initrd_sha256: inner.initrd_sha256.map(hex::encode),
            runtime_dir: entry.dir.clone(),
            exit: inner.exit.clone(),
            history: inner.lifecycle.history().to_vec(),
        })
    }

    /// The last `bytes` bytes (at most [`MAX_CONSOLE_TAIL`]) of the VM's console output.
    pub fn console_tail(&self, id: &VmId, bytes: usize) -> Result<Vec<u8>, ConsoleError> {
        let entry = self.entry(id)?;
        let want = bytes.min(MAX_CONSOLE_TAIL);
        let path = entry.console_path();
        let mut out = tail_bytes(&path, want).map_err(|e| ConsoleError::Read(path.clone(), e))?;
        if out.len() < want {
            let old_path = entry.console_old_path();
            let mut old = tail_bytes(&old_path, want - out.len())
                .map_err(|e| ConsoleError::Read(old_path, e))?;
            old.append(&mut out);
            out = old;
        }
        Ok(out)
    }

    /// Blocks until `pred` holds for the VM's state (returns it) or `timeout` passes.
    ///
    /// `pred` runs with the VM locked and must not call the supervisor.
    pub fn wait_for(
        &self,
        id: &VmId,
        timeout: Duration,
        pred: impl Fn(&VmState) -> bool,
    ) -> Result<VmState, WaitError> {
        let entry = self.entry(id)?;
        let inner = entry.lock();
        let (inner, _) = entry
            .changed
            .wait_timeout_while(inner, timeout, |i| !pred(i.lifecycle.state()))
            .unwrap_or_else(|e| e.into_inner());
        let state = inner.lifecycle.state().clone();
        if pred(&state) {
            Ok(state)
        } else {
            Err(WaitError::Timeout(state))
        }
    }
}

/// Writes a file that must not exist yet, and syncs it.
fn write_new_file(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut f = OpenOptions::new().write(true).create_new(true).open(path)?;
    f.write_all(bytes)?;
    f.sync_all()
}

/// An error and its sources, for a `FailReason` that outlives the error.
fn error_chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

#[cfg(test)]
mod tests;
