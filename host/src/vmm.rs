//! One VM in this process: build it, run its vCPUs, serve control requests, end it.

use std::fs::OpenOptions;
use std::os::fd::RawFd;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use kvm_ioctls::VcpuFd;
use vm_memory::GuestMemoryMmap;
use vmm_sys_util::signal::Killable;

use crate::config::VmConfig;
use crate::control::{
    self, ControlRequest, ControlResponse, ErrorKind, Pending, Reply, RunState, VmStatus,
};
use crate::cpuid::CpuPolicy;
use crate::devices::console::Console;
use crate::devices::{AccessCounters, COM1_BASE, COM1_IRQ, Devices};
use crate::events::{EventKind, ExitReason, StopMode, Timeline};
use crate::kvm::{self, KvmError, Vm, sys};
use crate::layout;
use crate::loader::{self, LoadError};
use crate::vcpu::{self, GuestExit, RunControl, VcpuShared};

/// How long pause and resume wait for the vCPUs.
const PAUSE_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a hard stop waits for the vCPUs to leave the guest.
const HARD_STOP_TIMEOUT: Duration = Duration::from_secs(2);
/// How long the last control answer may take to be written before the process exits.
const LAST_REPLY_TIMEOUT: Duration = Duration::from_millis(500);
/// How often the main thread drains queued serial output while the guest keeps writing without
/// exiting, and how often it looks while the ring is quiet.
const DRAIN_BUSY: Duration = Duration::from_millis(1);
const DRAIN_QUIET: Duration = Duration::from_millis(20);
/// Until the first output (or `FIRST_OUTPUT_WINDOW` after start), the main thread looks more
/// often: the first console line should leave as soon as the guest wrote it.
const DRAIN_FIRST: Duration = Duration::from_micros(100);
const FIRST_OUTPUT_WINDOW: Duration = Duration::from_millis(20);

/// Messages to the main thread.
pub(crate) enum MainMsg {
    /// A vCPU saw the VM end.
    Guest(GuestExit),
    /// A control request.
    Control(Pending),
    /// SIGTERM, SIGINT or SIGHUP.
    Signal(i32),
}

/// How the process was started (everything but the VM configuration).
#[derive(Debug, Clone)]
pub struct VmmOptions {
    /// Control socket to create.
    pub api_sock: Option<PathBuf>,
    /// Inherited descriptor for events.
    pub events_fd: Option<RawFd>,
    /// Process start.
    pub start: Instant,
    /// CLOCK_MONOTONIC at `start`, in nanoseconds.
    pub start_mono_ns: u64,
    /// CLOCK_MONOTONIC time of the start request, in nanoseconds.
    pub start_request_ns: Option<u64>,
    /// Print boot-complete timing on stderr.
    pub print_boot_complete: bool,
}

impl VmmOptions {
    /// Options with the process start taken now.
    pub fn starting_now() -> Self {
        Self {
            api_sock: None,
            events_fd: None,
            start: Instant::now(),
            start_mono_ns: sys::monotonic_ns(),
            start_request_ns: None,
            print_boot_complete: true,
        }
    }
}

/// Why the VM could not be started. Nothing ran, and nothing was left behind.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// `--events-fd` is not an open descriptor.
    #[error("cannot use --events-fd {fd}")]
    EventsFd {
        /// The descriptor.
        fd: RawFd,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// Signal setup failed.
    #[error("cannot set up signal handling")]
    Signals(#[source] std::io::Error),
    /// Guest memory could not be mapped.
    #[error("cannot map {mib} MiB of guest memory")]
    Memory {
        /// Size asked for.
        mib: u64,
        /// Why.
        #[source]
        source: vm_memory::mmap::FromRangesError,
    },
    /// The kernel, initrd or command line could not be loaded.
    #[error("cannot load the guest")]
    Load(#[from] LoadError),
    /// KVM refused to set up the VM.
    #[error("cannot set up the VM")]
    Kvm(#[from] KvmError),
    /// The console file could not be opened.
    #[error("field `console.file`: cannot open {}", .path.display())]
    ConsoleFile {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The control socket could not be created.
    #[error("cannot bind control socket {}", .path.display())]
    Socket {
        /// The path.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A thread could not be started.
    #[error("cannot start thread {name}")]
    Thread {
        /// Thread name.
        name: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// How the VM ended. Holds the VM and its vCPU files: the caller is expected to exit the
/// process without dropping it, which skips the slow VM teardown on the critical path.
pub struct Outcome {
    /// Why the VM ended.
    pub reason: ExitReason,
    /// The process exit status to use.
    pub exit_code: i32,
    /// Failure details.
    pub detail: Option<String>,
    _keep: KeepAlive,
}

struct KeepAlive {
    _vcpus: Vec<JoinHandle<VcpuFd>>,
    vm: Vm,
    timeline: Arc<Timeline>,
}

/// Files created by the VMM, removed on every error path.
#[derive(Default)]
struct Cleanup {
    paths: Vec<PathBuf>,
}

impl Cleanup {
    fn keep(&mut self, path: &Path) {
        self.paths.retain(|p| p != path);
    }

    fn remove_all(&mut self) {
        for p in self.paths.drain(..) {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.remove_all();
    }
}

/// Builds the VM described by `config` (already validated), runs it to the end and returns how
/// it ended. The final `exited` event has been written when this returns `Ok`.
pub fn run(config: &VmConfig, opts: VmmOptions) -> Result<Outcome, StartError> {
    let events = opts
        .events_fd
        .map(|fd| {
            sys::file_from_inherited_fd(fd).map_err(|source| StartError::EventsFd { fd, source })
        })
        .transpose()?;
    let timeline = Arc::new(Timeline::new(
        opts.start,
        opts.start_mono_ns,
        opts.start_request_ns,
        events,
        opts.print_boot_complete,
    ));
    sys::block_termination_signals().map_err(StartError::Signals)?;

    let policy = CpuPolicy::new(&config.cpu, kvm::pvm_host());
    let hidden: Vec<String> = policy.hidden().map(|f| f.name().to_owned()).collect();
    if policy.pvm_workarounds() {
        tracing::info!(hidden = ?hidden, "PVM host: hiding CPU features the guest cannot use here");
    }

    let mem_bytes = config.memory_mib << 20;
    let regions: Vec<_> = layout::ram_regions(mem_bytes)
        .into_iter()
        .map(|(addr, size)| (addr, size as usize))
        .collect();
    let memory = GuestMemoryMmap::from_ranges(&regions).map_err(|source| StartError::Memory {
        mib: config.memory_mib,
        source,
    })?;
    let boot = loader::load(config, &memory, mem_bytes)?;
    loader::write_mptable(&memory, config.vcpus)?;
    let t_loaded = timeline.now_us();

    let kvm::Built {
        vm,
        vcpus: vcpu_fds,
        serial_irq,
        serial_ring,
    } = Vm::build(
        memory,
        config.vcpus,
        &policy,
        boot.entry,
        COM1_IRQ,
        COM1_BASE,
    )?;
    tracing::debug!(
        loaded.t_us = t_loaded,
        vm_built.t_us = timeline.now_us(),
        "start-up phases"
    );

    // Files last, so that every earlier failure leaves nothing behind.
    let mut cleanup = Cleanup::default();
    let console_file = match &config.console.file {
        Some(path) => {
            let existed = path.exists();
            let file = OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|source| StartError::ConsoleFile {
                    path: path.clone(),
                    source,
                })?;
            if !existed {
                cleanup.paths.push(path.clone());
            }
            Some(file)
        }
        None => None,
    };
    let listener = match &opts.api_sock {
        Some(path) => {
            let l = UnixListener::bind(path).map_err(|source| StartError::Socket {
                path: path.clone(),
                source,
            })?;
            cleanup.paths.push(path.clone());
            Some(l)
        }
        None => None,
    };
    sys::install_kick_handler().map_err(StartError::Signals)?;

    let console = Arc::new(Console::new(
        config.console.ring_bytes,
        config.console.stdout,
        console_file,
        timeline.clone(),
    ));
    let unknown = Arc::new(AccessCounters::default());
    let stop_requested = Arc::new(AtomicBool::new(false));
    let mut devices = Devices::new(
        serial_irq,
        console.clone(),
        unknown.clone(),
        stop_requested.clone(),
    );
    devices.set_serial_ring(serial_ring);
    let (to_main, from_others) = mpsc::channel();
    let shared = Arc::new(VcpuShared {
        devices: Mutex::new(devices),
        timeline: timeline.clone(),
        unknown,
        control: RunControl::new(config.vcpus),
        to_main: to_main.clone(),
    });

    timeline.emit(EventKind::Ready {
        vcpus: config.vcpus,
        memory_mib: config.memory_mib,
        entry: boot.entry.name().to_owned(),
        pvm_workarounds: policy.pvm_workarounds(),
        hidden_cpu_features: hidden.clone(),
    });

    let spawn = |name: String, f: Box<dyn FnOnce() + Send>| {
        std::thread::Builder::new()
            .name(name.clone())
            .spawn(f)
            .map_err(|source| StartError::Thread { name, source })
    };
    if let Some(listener) = listener {
        let tx = to_main.clone();
        spawn(
            "sakshi-ctl".into(),
            Box::new(move || control::serve(listener, tx)),
        )?;
    }
    {
        let tx = to_main.clone();
        spawn(
            "sakshi-signals".into(),
            Box::new(move || {
                while let Ok(sig) = sys::wait_termination_signal() {
                    if tx.send(MainMsg::Signal(sig)).is_err() {
                        break;
                    }
                }
            }),
        )?;
    }
    let mut handles = Vec::with_capacity(vcpu_fds.len());
    for (id, fd) in (0u32..).zip(vcpu_fds) {
        let vcpu_shared = shared.clone();
        let name = format!("vcpu{id}");
        let handle = std::thread::Builder::new()
            .name(name.clone())
            .spawn(move || vcpu::run(id, fd, vcpu_shared))
            .map_err(|source| StartError::Thread { name, source });
        match handle {
            Ok(h) => handles.push(h),
            Err(e) => {
                shared.control.request_stop();
                kick(&handles);
                return Err(e);
            }
        }
    }
    drop(to_main);
    if let Some(path) = &config.console.file {
        cleanup.keep(path);
    }

    let mut main = Main {
        config,
        entry: boot.entry.name(),
        pvm: policy.pvm_workarounds(),
        hidden,
        shared,
        handles,
        console,
        stop_requested,
        timeline,
        cleanup,
        paused: false,
        started: Instant::now(),
        last_pause_latency_us: None,
        last_resume_latency_us: None,
    };
    let end = main.run(&from_others);
    Ok(Outcome {
        reason: end.reason,
        exit_code: end.reason.exit_code(),
        detail: end.detail,
        _keep: KeepAlive {
            _vcpus: main.handles,
            vm,
            timeline: main.timeline.clone(),
        },
    })
}

impl Outcome {
    /// Prepares a fast process exit: closes the events fd and the standard descriptors and
    /// leaves the VM's kernel teardown (10-20 ms on a busy host) to a child process that waits
    /// for this one to exit. Call it last, after flushing stdout, and exit right after. If the
    /// child cannot be started, the teardown simply happens at this process's exit.
    pub fn hand_over_teardown(&self) {
        self._keep.timeline.close_events();
        if let Err(error) = self._keep.vm.hand_over_teardown() {
            tracing::debug!(%error, "VM teardown stays on the exit path");
        }
    }
}

fn kick(handles: &[JoinHandle<VcpuFd>]) {
    for h in handles {
        // A vCPU thread that already left its loop may be gone; nothing to kick then.
        let _ = h.kill(sys::kick_signal());
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros() as u64
}

struct End {
    reason: ExitReason,
    detail: Option<String>,
}

struct Main<'a> {
    config: &'a VmConfig,
    entry: &'static str,
    pvm: bool,
    hidden: Vec<String>,
    shared: Arc<VcpuShared>,
    handles: Vec<JoinHandle<VcpuFd>>,
    console: Arc<Console>,
    stop_requested: Arc<AtomicBool>,
    timeline: Arc<Timeline>,
    cleanup: Cleanup,
    paused: bool,
    /// When the vCPUs were started.
    started: Instant,
    last_pause_latency_us: Option<u64>,
    last_resume_latency_us: Option<u64>,
}

impl Main<'_> {
    /// Feeds serial output KVM queued to the console (it is also drained on every vCPU exit).
    /// Returns how long to wait before looking again.
    fn drain(&self) -> Duration {
        let mut devices = self
            .shared
            .devices
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if !devices.has_serial_ring() {
            // Every serial write exits: nothing to look for (`recv_timeout` waits forever).
            Duration::MAX
        } else if devices.has_queued() {
            devices.drain_queued();
            DRAIN_BUSY
        } else if self.console.total() == 0 && self.started.elapsed() < FIRST_OUTPUT_WINDOW {
            DRAIN_FIRST
        } else {
            DRAIN_QUIET
        }
    }

    fn run(&mut self, rx: &Receiver<MainMsg>) -> End {
        let mut wait = self.drain();
        loop {
            let msg = match rx.recv_timeout(wait) {
                Ok(m) => m,
                Err(RecvTimeoutError::Timeout) => {
                    wait = self.drain();
                    continue;
                }
                // Every sender gone: all vCPUs left without a reason; treat as a stop.
                Err(RecvTimeoutError::Disconnected) => {
                    return self.finish(ExitReason::Stopped, None, None, None);
                }
            };
            match msg {
                MainMsg::Guest(exit) => return self.finish(exit.reason, exit.detail, None, None),
                MainMsg::Signal(sig) => {
                    let t0 = Instant::now();
                    self.hard_stop();
                    return self.finish(
                        ExitReason::Stopped,
                        Some(format!("signal {sig}")),
                        Some(StopMode::Hard),
                        Some(micros(t0.elapsed())),
                    );
                }
                MainMsg::Control(pending) => {
                    if let ControlRequest::Stop {
                        graceful,
                        timeout_ms,
                    } = pending.request
                    {
                        return self.stop(rx, pending, graceful, timeout_ms);
                    }
                    let response = self.handle(&pending.request);
                    let _ = pending.reply.send(Reply {
                        response,
                        written: None,
                    });
                }
            }
        }
    }

    fn handle(&mut self, request: &ControlRequest) -> ControlResponse {
        self.drain();
        match request {
            ControlRequest::Status {} => ControlResponse {
                status: Some(self.status()),
                ..ControlResponse::ok()
            },
            ControlRequest::ConsoleTail { bytes } => {
                let (tail, total) = self.console.tail((*bytes).min(control::MAX_TAIL_BYTES));
                ControlResponse {
                    console: Some(String::from_utf8_lossy(&tail).into_owned()),
                    console_total_bytes: Some(total),
                    ..ControlResponse::ok()
                }
            }
            ControlRequest::Pause {} => self.pause(),
            ControlRequest::Resume {} => self.resume(),
            // Handled by `run`.
            ControlRequest::Stop { .. } => {
                ControlResponse::error(ErrorKind::InvalidState, "stop is handled elsewhere")
            }
        }
    }

    fn status(&self) -> VmStatus {
        let boot_complete_us = self.timeline.boot_complete_us();
        VmStatus {
            state: if self.paused {
                RunState::Paused
            } else {
                RunState::Running
            },
            uptime_us: self.timeline.now_us(),
            vcpus: self.config.vcpus,
            memory_mib: self.config.memory_mib,
            entry: self.entry.to_owned(),
            pvm_workarounds: self.pvm,
            hidden_cpu_features: self.hidden.clone(),
            first_output_us: self.timeline.first_output_us(),
            boot_complete_us,
            boot_complete_since_request_us: boot_complete_us
                .and_then(|t| self.timeline.since_request_us(t)),
            last_pause_latency_us: self.last_pause_latency_us,
            last_resume_latency_us: self.last_resume_latency_us,
            unknown_pio: self.shared.unknown.pio_count(),
            unknown_mmio: self.shared.unknown.mmio_count(),
            console_bytes: self.console.total(),
        }
    }

    fn pause(&mut self) -> ControlResponse {
        if self.paused {
            return ControlResponse::error(ErrorKind::InvalidState, "the VM is already paused");
        }
        let t0 = Instant::now();
        self.shared.control.request_pause();
        kick(&self.handles);
        if !self.shared.control.wait_paused(PAUSE_TIMEOUT) {
            self.shared.control.request_resume();
            return ControlResponse::error(ErrorKind::Timeout, "vCPUs did not pause in time");
        }
        let latency = micros(t0.elapsed());
        self.paused = true;
        self.last_pause_latency_us = Some(latency);
        self.timeline.emit(EventKind::Paused {
            latency_us: latency,
        });
        ControlResponse {
            latency_us: Some(latency),
            ..ControlResponse::ok()
        }
    }

    fn resume(&mut self) -> ControlResponse {
        if !self.paused {
            return ControlResponse::error(ErrorKind::InvalidState, "the VM is not paused");
        }
        let t0 = Instant::now();
        self.shared.control.request_resume();
        if !self.shared.control.wait_resumed(PAUSE_TIMEOUT) {
            return ControlResponse::error(ErrorKind::Timeout, "vCPUs did not resume in time");
        }
        let latency = micros(t0.elapsed());
        self.paused = false;
        self.last_resume_latency_us = Some(latency);
        self.timeline.emit(EventKind::Resumed {
            latency_us: latency,
        });
        ControlResponse {
            latency_us: Some(latency),
            ..ControlResponse::ok()
        }
    }

    /// Graceful: raise the stop request the guest can read on the signal port and wait for the
    /// guest to end the run; then (or directly) hard: kick every vCPU out of the guest.
    fn stop(
        &mut self,
        rx: &Receiver<MainMsg>,
        pending: Pending,
        graceful: bool,
        timeout_ms: Option<u64>,
    ) -> End {
        let t0 = Instant::now();
        let mut mode = StopMode::Hard;
        let mut failure: Option<GuestExit> = None;
        if graceful && !self.paused {
            self.stop_requested.store(true, Ordering::Release);
            let timeout = timeout_ms
                .unwrap_or(self.config.stop_timeout_ms)
                .min(crate::config::MAX_STOP_TIMEOUT_MS);
            let deadline = t0 + Duration::from_millis(timeout);
            let mut wait = DRAIN_BUSY;
            loop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                match rx.recv_timeout(left.min(wait)) {
                    Err(RecvTimeoutError::Timeout) => wait = self.drain(),
                    Ok(MainMsg::Guest(exit)) => {
                        if exit.reason.exit_code() == 0 {
                            mode = StopMode::Graceful;
                        } else {
                            failure = Some(exit);
                        }
                        break;
                    }
                    Ok(MainMsg::Control(other)) => {
                        let _ = other.reply.send(Reply {
                            response: ControlResponse::error(
                                ErrorKind::ShuttingDown,
                                "a stop is in progress",
                            ),
                            written: None,
                        });
                    }
                    Ok(MainMsg::Signal(_)) | Err(RecvTimeoutError::Disconnected) => break,
                }
            }
        }
        self.hard_stop();
        let latency = micros(t0.elapsed());
        let (written_tx, written_rx) = mpsc::channel();
        let _ = pending.reply.send(Reply {
            response: ControlResponse {
                latency_us: Some(latency),
                stop_mode: Some(mode),
                ..ControlResponse::ok()
            },
            written: Some(written_tx),
        });
        let _ = written_rx.recv_timeout(LAST_REPLY_TIMEOUT);
        match failure {
            Some(exit) => self.finish(exit.reason, exit.detail, None, None),
            None => self.finish(ExitReason::Stopped, None, Some(mode), Some(latency)),
        }
    }

    fn hard_stop(&mut self) {
        self.shared.control.request_stop();
        kick(&self.handles);
        if !self.shared.control.wait_exited(HARD_STOP_TIMEOUT) {
            tracing::warn!("vCPUs did not stop in time; exiting anyway");
        }
    }

    fn finish(
        &mut self,
        reason: ExitReason,
        detail: Option<String>,
        stop_mode: Option<StopMode>,
        stop_latency_us: Option<u64>,
    ) -> End {
        self.hard_stop();
        self.drain();
        self.console.flush();
        if let Some(d) = &detail
            && reason.exit_code() != 0
        {
            tracing::error!(reason = reason.name(), detail = %d, "guest failed");
        }
        self.timeline.emit(EventKind::Exited {
            reason,
            exit_code: reason.exit_code(),
            detail: detail.clone(),
            stop_mode,
            stop_latency_us,
        });
        self.cleanup.remove_all();
        End { reason, detail }
    }
}
