//! `sakshi bench boot`: boot latency, memory and throughput of `sakshi-vmm`, side by side with
//! QEMU microvm booting the same test guest.
//!
//! What is measured, per peer, over `runs` sequential boots of the guest with `exit=reboot`:
//! - process spawn -> first byte of guest output on the VMM's stdout;
//! - process spawn -> process exit (the guest reboots, the VMM ends the run);
//! - peak RSS of the process (`wait4` rusage `ru_maxrss`);
//! - VMs run to exit per second, sequentially and with `parallel` workers.
//!
//! Then how many idle 128 MiB `sakshi-vmm` VMs (`run=spin`) run at once under the
//! [`Supervisor`], and their total RSS.
//!
//! [`boot`] blocks for the whole run (tens of seconds).

use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::supervisor::{
    self, InitError, NoopMeasurer, Supervisor, SupervisorConfig, VmSpec, VmState,
};

/// Fewest boots per peer that give meaningful percentiles.
pub const MIN_RUNS: usize = 20;

/// What to run.
#[derive(Clone, Debug)]
pub struct BootBenchOptions {
    /// Boots per peer (at least [`MIN_RUNS`]).
    pub runs: usize,
    /// The `sakshi-vmm` binary.
    pub vmm: PathBuf,
    /// The guest kernel both peers boot (the test guest).
    pub guest: PathBuf,
    /// The QEMU binary; `None` skips the QEMU column.
    pub qemu: Option<PathBuf>,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Workers for the parallel throughput figure.
    pub parallel: usize,
    /// How many idle VMs to try to hold at once; 0 skips that part.
    pub idle_target: usize,
    /// How long to wait for all idle VMs to reach `Running`.
    pub idle_timeout: Duration,
}

impl BootBenchOptions {
    /// Defaults: 30 runs, QEMU from `PATH`, 128 MiB, 2 parallel workers, 50 idle VMs.
    pub fn new(vmm: impl Into<PathBuf>, guest: impl Into<PathBuf>) -> Self {
        Self {
            runs: 30,
            vmm: vmm.into(),
            guest: guest.into(),
            qemu: Some(PathBuf::from("qemu-system-x86_64")),
            memory_mib: 128,
            parallel: 2,
            idle_target: 50,
            idle_timeout: Duration::from_secs(120),
        }
    }
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Fewer runs than [`MIN_RUNS`], or no parallel worker.
    #[error(
        "need at least {MIN_RUNS} runs and one parallel worker (got {runs} runs, {parallel} workers)"
    )]
    Options {
        /// Runs asked for.
        runs: usize,
        /// Workers asked for.
        parallel: usize,
    },
    /// An input file is missing.
    #[error("{} does not exist", .0.display())]
    Missing(PathBuf),
    /// The scratch directory could not be made or written.
    #[error("scratch directory")]
    Scratch(#[source] std::io::Error),
    /// The VMM configuration could not be serialised.
    #[error("cannot serialise the VMM configuration")]
    Config(#[source] serde_json::Error),
    /// `sakshi-vmm` could not be run or a boot did not complete.
    #[error("sakshi-vmm run {run} failed")]
    Vmm {
        /// Index of the failed run.
        run: usize,
        /// What happened.
        #[source]
        source: RunError,
    },
    /// The supervisor for the idle part could not start.
    #[error("supervisor")]
    Supervisor(#[from] InitError),
}

/// One boot that did not complete.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The process could not be spawned or waited for.
    #[error("cannot run {}", .0.display())]
    Spawn(PathBuf, #[source] std::io::Error),
    /// The process ended unsuccessfully.
    #[error("exit status {code:?}, signal {signal:?}")]
    Status {
        /// Exit status.
        code: Option<i32>,
        /// Terminating signal.
        signal: Option<i32>,
    },
    /// The guest never printed its final line.
    #[error("guest output lacks {0:?}")]
    Output(&'static str),
}

/// Latency percentiles, in microseconds (nearest-rank).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50_us: f64,
    /// 95th percentile.
    pub p95_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Fastest.
    pub min_us: f64,
    /// Slowest.
    pub max_us: f64,
}

impl Percentiles {
    /// Percentiles of the samples; `None` when there are none.
    pub fn of(samples: &[Duration]) -> Option<Self> {
        if samples.is_empty() {
            return None;
        }
        let mut us: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1e6).collect();
        us.sort_by(f64::total_cmp);
        let rank = |p: f64| {
            // Nearest rank: the smallest value with at least p% of samples at or below it.
            let n = us.len();
            let k = ((p / 100.0) * n as f64).ceil() as usize;
            us[k.clamp(1, n) - 1]
        };
        Some(Self {
            p50_us: rank(50.0),
            p95_us: rank(95.0),
            p99_us: rank(99.0),
            min_us: us[0],
            max_us: us[us.len() - 1],
        })
    }
}

/// Figures for one VMM.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PeerReport {
    /// `sakshi-vmm` or `qemu-microvm`.
    pub name: String,
    /// The exact command line of one run.
    pub command: String,
    /// Boots measured.
    pub runs: usize,
    /// Spawn -> first guest output byte on stdout.
    pub first_output: Percentiles,
    /// Spawn -> process exit.
    pub exit: Percentiles,
    /// CPU time (user + system, all threads) of one boot: less sensitive to other load than the
    /// wall-clock figures.
    pub cpu_time: Percentiles,
    /// Peak RSS (`ru_maxrss`) percentiles, KiB.
    pub peak_rss_kib_p50: u64,
    /// Largest peak RSS seen, KiB.
    pub peak_rss_kib_max: u64,
    /// VMs run to exit per second, one after another.
    pub vms_per_sec_sequential: f64,
    /// VMs run to exit per second with `parallel` workers.
    pub vms_per_sec_parallel: f64,
    /// Workers for the figure above.
    pub parallel: usize,
}

/// QEMU divided by sakshi-vmm (above 1: sakshi-vmm is faster or smaller).
#[derive(Clone, Copy, Debug, Serialize, Deserialize)]
pub struct Ratios {
    /// First output p50.
    pub first_output_p50: f64,
    /// Exit p50.
    pub exit_p50: f64,
    /// CPU time p50.
    pub cpu_time_p50: f64,
    /// Peak RSS p50.
    pub peak_rss_p50: f64,
    /// Sequential throughput, sakshi-vmm over QEMU.
    pub vms_per_sec_sequential: f64,
}

/// Idle VMs held at once under the supervisor.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct IdleReport {
    /// VMs asked for.
    pub target: usize,
    /// VMs that reached `Running` and were running together.
    pub running: usize,
    /// Guest memory of each, MiB.
    pub memory_mib: u64,
    /// Sum of the VMMs' current RSS while all ran, KiB.
    pub total_rss_kib: u64,
    /// Mean RSS per VMM, KiB.
    pub mean_rss_kib: u64,
    /// Time from the first spawn until all were `Running`, ms.
    pub all_running_ms: f64,
    /// Why fewer than `target` ran, when they did not.
    pub shortfall: Option<String>,
}

/// Where the numbers were taken.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct MachineInfo {
    /// CPU model name.
    pub cpu: String,
    /// Logical CPUs available.
    pub cpus: usize,
    /// Host kernel release.
    pub kernel: String,
    /// Whether KVM is PVM (software nested virtualisation).
    pub kvm_pvm: bool,
    /// `qemu-system-x86_64 --version`, first line.
    pub qemu_version: Option<String>,
    /// 1-minute load average when the run started (other work on the machine skews timings).
    pub load_average_1m: Option<f64>,
}

/// The whole report; `Display` is the human table, serde the `--json` form.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct BootReport {
    /// UTC time the run started (RFC 3339).
    pub date: String,
    /// The machine.
    pub machine: MachineInfo,
    /// The guest booted.
    pub guest: PathBuf,
    /// Guest memory, MiB.
    pub memory_mib: u64,
    /// sakshi-vmm figures.
    pub sakshi: PeerReport,
    /// QEMU microvm figures, when QEMU ran.
    pub qemu: Option<PeerReport>,
    /// Why QEMU did not run, when it did not.
    pub qemu_error: Option<String>,
    /// QEMU over sakshi-vmm.
    pub ratios: Option<Ratios>,
    /// Idle VMs held at once, when measured.
    pub idle: Option<IdleReport>,
}

/// One measured boot.
#[derive(Clone, Copy, Debug)]
struct Sample {
    first_output: Duration,
    exit: Duration,
    peak_rss_kib: u64,
    cpu_time: Duration,
}

/// A way to boot the guest once.
struct Peer {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
}

impl Peer {
    fn command_line(&self) -> String {
        std::iter::once(self.program.display().to_string())
            .chain(self.args.iter().map(|a| {
                if a.contains(' ') {
                    format!("'{a}'")
                } else {
                    a.clone()
                }
            }))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Boots once; the guest prints `exit: reboot` and resets, the process exits 0.
    fn run_once(&self) -> Result<Sample, RunError> {
        let spawn_err = |e| RunError::Spawn(self.program.clone(), e);
        let start = Instant::now();
        let mut child = Command::new(&self.program)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(spawn_err)?;
        let pid = child.id();
        let mut out = child
            .stdout
            .take()
            .ok_or_else(|| spawn_err(std::io::ErrorKind::BrokenPipe.into()))?;
        let mut output = Vec::with_capacity(4096);
        let mut buf = [0u8; 4096];
        let mut first_output = None;
        loop {
            match out.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    first_output.get_or_insert_with(|| start.elapsed());
                    output.extend_from_slice(&buf[..n]);
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    let _ = child.kill();
                    let _ = supervisor::sys::wait4(pid);
                    return Err(spawn_err(e));
                }
            }
        }
        drop(child);
        let reaped = supervisor::sys::wait4(pid).map_err(spawn_err)?;
        let exit = start.elapsed();
        if !reaped.status.success() {
            use std::os::unix::process::ExitStatusExt;
            return Err(RunError::Status {
                code: reaped.status.code(),
                signal: reaped.status.signal(),
            });
        }
        const LAST: &str = "exit: reboot";
        if !String::from_utf8_lossy(&output).contains(LAST) {
            return Err(RunError::Output(LAST));
        }
        Ok(Sample {
            first_output: first_output.unwrap_or(exit),
            exit,
            peak_rss_kib: reaped.peak_rss_kib,
            cpu_time: reaped.cpu_time,
        })
    }

    /// VMs run to exit per second: `runs` boots spread over `workers` threads.
    fn throughput(&self, runs: usize, workers: usize) -> Result<f64, (usize, RunError)> {
        let t0 = Instant::now();
        let results: Vec<Result<(), (usize, RunError)>> = std::thread::scope(|s| {
            let handles: Vec<_> = (0..workers)
                .map(|w| {
                    s.spawn(move || {
                        for run in (w..runs).step_by(workers) {
                            self.run_once().map_err(|e| (run, e))?;
                        }
                        Ok(())
                    })
                })
                .collect();
            handles
                .into_iter()
                .map(|h| h.join().unwrap_or(Ok(())))
                .collect()
        });
        let rate = runs as f64 / t0.elapsed().as_secs_f64();
        results.into_iter().collect::<Result<(), _>>()?;
        Ok(rate)
    }

    /// The report from latency samples and the two throughput figures.
    fn report(&self, samples: &[Sample], sequential: f64, parallel: (usize, f64)) -> PeerReport {
        let first: Vec<Duration> = samples.iter().map(|s| s.first_output).collect();
        let exit: Vec<Duration> = samples.iter().map(|s| s.exit).collect();
        let cpu: Vec<Duration> = samples.iter().map(|s| s.cpu_time).collect();
        let mut rss: Vec<u64> = samples.iter().map(|s| s.peak_rss_kib).collect();
        rss.sort_unstable();
        let none = Percentiles {
            p50_us: 0.0,
            p95_us: 0.0,
            p99_us: 0.0,
            min_us: 0.0,
            max_us: 0.0,
        };
        PeerReport {
            name: self.name.to_owned(),
            command: self.command_line(),
            runs: samples.len(),
            first_output: Percentiles::of(&first).unwrap_or(none),
            exit: Percentiles::of(&exit).unwrap_or(none),
            cpu_time: Percentiles::of(&cpu).unwrap_or(none),
            peak_rss_kib_p50: rss
                .get(rss.len().saturating_sub(1) / 2)
                .copied()
                .unwrap_or(0),
            peak_rss_kib_max: rss.last().copied().unwrap_or(0),
            vms_per_sec_sequential: sequential,
            vms_per_sec_parallel: parallel.1,
            parallel: parallel.0,
        }
    }
}

/// Runs the boot benchmark. Blocks for the whole run.
pub fn boot(opts: &BootBenchOptions) -> Result<BootReport, BenchError> {
    if opts.runs < MIN_RUNS || opts.parallel == 0 {
        return Err(BenchError::Options {
            runs: opts.runs,
            parallel: opts.parallel,
        });
    }
    for p in [&opts.vmm, &opts.guest] {
        if !p.is_file() {
            return Err(BenchError::Missing(p.clone()));
        }
    }
    let date = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    let machine = machine_info(opts.qemu.as_deref());
    let scratch = ScratchDir::new().map_err(BenchError::Scratch)?;

    // The same configuration the supervisor writes: kernel digest included, so the VMM also
    // pays for verifying it.
    let digest = {
        use sha2::Digest;
        let bytes = std::fs::read(&opts.guest).map_err(BenchError::Scratch)?;
        hex::encode(sha2::Sha256::digest(&bytes))
    };
    let mut config = crate::VmConfig::new(&opts.guest);
    config.kernel_sha256 = Some(digest);
    config.cmdline = "exit=reboot".to_owned();
    config.memory_mib = opts.memory_mib;
    let config = serde_json::to_string(&config).map_err(BenchError::Config)?;
    let config_path = scratch.path().join("vm.json");
    std::fs::write(&config_path, config).map_err(BenchError::Scratch)?;
    let sakshi = Peer {
        name: "sakshi-vmm",
        program: opts.vmm.clone(),
        args: vec!["--config".into(), config_path.display().to_string()],
    };
    let qemu = opts.qemu.as_ref().map(|program| Peer {
        name: "qemu-microvm",
        program: program.clone(),
        args: [
            "-M",
            "microvm",
            "-accel",
            "kvm",
            "-m",
            &opts.memory_mib.to_string(),
            "-nodefaults",
            "-no-user-config",
            "-nographic",
            "-serial",
            "stdio",
            "-no-reboot",
            "-device",
            "i8042",
            "-kernel",
            &opts.guest.display().to_string(),
            "-append",
            "exit=reboot",
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect(),
    });
    let vmm_err = |(run, source)| BenchError::Vmm { run, source };
    let mut qemu_error = qemu.is_none().then(|| "not requested".to_owned());

    // Latency: the peers alternate run by run, so that load from elsewhere hits both alike.
    let mut sakshi_samples = Vec::with_capacity(opts.runs);
    let mut qemu_samples = Vec::with_capacity(opts.runs);
    for run in 0..opts.runs {
        sakshi_samples.push(sakshi.run_once().map_err(|e| vmm_err((run, e)))?);
        if let Some(q) = qemu.as_ref().filter(|_| qemu_error.is_none()) {
            match q.run_once() {
                Ok(s) => qemu_samples.push(s),
                Err(e) => qemu_error = Some(format!("run {run}: {}", error_chain(&e))),
            }
        }
    }
    let parallel = opts.parallel;
    let sakshi_report = sakshi.report(
        &sakshi_samples,
        sakshi.throughput(opts.runs, 1).map_err(vmm_err)?,
        (
            parallel,
            sakshi.throughput(opts.runs, parallel).map_err(vmm_err)?,
        ),
    );
    let qemu_report = match (&qemu, &qemu_error) {
        (Some(q), None) => {
            let rates = q
                .throughput(opts.runs, 1)
                .and_then(|seq| Ok((seq, q.throughput(opts.runs, parallel)?)));
            match rates {
                Ok((seq, par)) => Some(q.report(&qemu_samples, seq, (parallel, par))),
                Err((run, e)) => {
                    qemu_error = Some(format!("run {run}: {}", error_chain(&e)));
                    None
                }
            }
        }
        _ => None,
    };
    let (sakshi, qemu) = (sakshi_report, qemu_report);
    let ratios = qemu.as_ref().map(|q| Ratios {
        first_output_p50: q.first_output.p50_us / sakshi.first_output.p50_us,
        exit_p50: q.exit.p50_us / sakshi.exit.p50_us,
        cpu_time_p50: q.cpu_time.p50_us / sakshi.cpu_time.p50_us.max(1.0),
        peak_rss_p50: q.peak_rss_kib_p50 as f64 / sakshi.peak_rss_kib_p50.max(1) as f64,
        vms_per_sec_sequential: sakshi.vms_per_sec_sequential / q.vms_per_sec_sequential,
    });

    let idle = if opts.idle_target > 0 {
        Some(idle(opts, scratch.path())?)
    } else {
        None
    };

    Ok(BootReport {
        date,
        machine,
        guest: opts.guest.clone(),
        memory_mib: opts.memory_mib,
        sakshi,
        qemu,
        qemu_error,
        ratios,
        idle,
    })
}

/// Holds `idle_target` spinning VMs under a supervisor, sums their RSS, destroys them.
fn idle(opts: &BootBenchOptions, scratch: &Path) -> Result<IdleReport, BenchError> {
    let mut config = SupervisorConfig::new(&opts.vmm, scratch.join("run"));
    config.stop_timeout = Duration::from_secs(5);
    let sup = Supervisor::new(config, Arc::new(NoopMeasurer))?;
    let t0 = Instant::now();
    let mut ids = Vec::new();
    let mut shortfall = None;
    for _ in 0..opts.idle_target {
        let spec = VmSpec::new(&opts.guest, "run=spin", opts.memory_mib);
        let started = sup
            .create(spec)
            .map_err(|e| error_chain(&e))
            .and_then(|id| {
                ids.push(id.clone());
                sup.start(&id).map_err(|e| error_chain(&e))
            });
        if let Err(e) = started {
            shortfall = Some(e);
            break;
        }
    }
    let deadline = t0 + opts.idle_timeout;
    for id in &ids {
        let left = deadline.saturating_duration_since(Instant::now());
        if let Err(e) = sup.wait_for(id, left, |s| *s != VmState::Booting) {
            shortfall.get_or_insert_with(|| error_chain(&e));
        }
    }
    let all_running_ms = t0.elapsed().as_secs_f64() * 1e3;
    let listed = sup.list();
    let running: Vec<_> = listed
        .iter()
        .filter(|v| v.state == VmState::Running)
        .collect();
    if running.len() < opts.idle_target && shortfall.is_none() {
        let failed = listed.iter().find(|v| v.state != VmState::Running);
        shortfall = failed.map(|v| format!("a VM ended up {}", v.state));
    }
    let total_rss_kib: u64 = running
        .iter()
        .filter_map(|v| v.vmm_memory.map(|m| m.rss_kib))
        .sum();
    let count = running.len();
    // Dropping the only handle SIGKILLs every VMM at once, reaps them and removes their runtime
    // directories: much faster than 50 control-socket stops on a saturated host.
    drop(sup);
    Ok(IdleReport {
        target: opts.idle_target,
        running: count,
        memory_mib: opts.memory_mib,
        total_rss_kib,
        mean_rss_kib: total_rss_kib / u64::try_from(count.max(1)).unwrap_or(1),
        all_running_ms,
        shortfall,
    })
}

/// A private directory under the system temp dir, removed on drop.
struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    fn new() -> std::io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        // Short: the VMs' control sockets live below it (`sun_path` is 108 bytes).
        let tag: String = uuid::Uuid::new_v4().simple().to_string()[..12].to_owned();
        let path = std::env::temp_dir().join(format!("sakshi-bench-{tag}"));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self { path })
    }

    fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn machine_info(qemu: Option<&Path>) -> MachineInfo {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .and_then(|r| r.split_once(':'))
                .map(|(_, v)| v.trim().to_owned())
        })
        .unwrap_or_else(|| "unknown".to_owned());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned());
    let qemu_version = qemu.and_then(|q| {
        let out = Command::new(q).arg("--version").output().ok()?;
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .map(str::to_owned)
    });
    MachineInfo {
        cpu,
        cpus: std::thread::available_parallelism().map_or(1, |n| n.get()),
        kernel,
        kvm_pvm: Path::new("/sys/module/kvm_pvm").exists(),
        qemu_version,
        load_average_1m: std::fs::read_to_string("/proc/loadavg")
            .ok()
            .and_then(|t| t.split_whitespace().next()?.parse().ok()),
    }
}

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

fn ms(us: f64) -> String {
    format!("{:.2} ms", us / 1e3)
}

fn mib(kib: u64) -> String {
    format!("{:.1} MiB", kib as f64 / 1024.0)
}

impl fmt::Display for BootReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "sakshi bench boot  ({})", self.date)?;
        let m = &self.machine;
        writeln!(
            f,
            "machine: {} ({} CPUs), Linux {}{}, load average {}",
            m.cpu,
            m.cpus,
            m.kernel,
            if m.kvm_pvm {
                ", KVM = PVM (nested)"
            } else {
                ""
            },
            m.load_average_1m
                .map_or_else(|| "unknown".to_owned(), |l| format!("{l:.2}"))
        )?;
        writeln!(
            f,
            "guest: {} ({} MiB), cmdline exit=reboot, {} runs per peer",
            self.guest.display(),
            self.memory_mib,
            self.sakshi.runs
        )?;
        writeln!(f)?;
        let peers: Vec<&PeerReport> = std::iter::once(&self.sakshi).chain(&self.qemu).collect();
        write!(f, "{:<30}", "")?;
        for p in &peers {
            write!(f, "{:>16}", p.name)?;
        }
        if self.ratios.is_some() {
            write!(f, "{:>10}", "ratio")?;
        }
        writeln!(f)?;
        let row = |f: &mut fmt::Formatter<'_>,
                   label: &str,
                   get: &dyn Fn(&PeerReport) -> String,
                   ratio: Option<f64>|
         -> fmt::Result {
            write!(f, "{label:<30}")?;
            for p in &peers {
                write!(f, "{:>16}", get(p))?;
            }
            if let Some(r) = ratio {
                write!(f, "{:>9.1}x", r)?;
            }
            writeln!(f)
        };
        let r = self.ratios;
        row(
            f,
            "first output p50",
            &|p| ms(p.first_output.p50_us),
            r.map(|r| r.first_output_p50),
        )?;
        row(f, "first output p95", &|p| ms(p.first_output.p95_us), None)?;
        row(f, "first output p99", &|p| ms(p.first_output.p99_us), None)?;
        row(f, "exit p50", &|p| ms(p.exit.p50_us), r.map(|r| r.exit_p50))?;
        row(f, "exit p95", &|p| ms(p.exit.p95_us), None)?;
        row(f, "exit p99", &|p| ms(p.exit.p99_us), None)?;
        row(
            f,
            "CPU time p50",
            &|p| ms(p.cpu_time.p50_us),
            r.map(|r| r.cpu_time_p50),
        )?;
        row(
            f,
            "peak RSS p50",
            &|p| mib(p.peak_rss_kib_p50),
            r.map(|r| r.peak_rss_p50),
        )?;
        row(f, "peak RSS max", &|p| mib(p.peak_rss_kib_max), None)?;
        row(
            f,
            "VMs/s sequential",
            &|p| format!("{:.1}", p.vms_per_sec_sequential),
            r.map(|r| r.vms_per_sec_sequential),
        )?;
        row(
            f,
            &format!("VMs/s {} in parallel", self.sakshi.parallel),
            &|p| format!("{:.1}", p.vms_per_sec_parallel),
            None,
        )?;
        if let Some(e) = &self.qemu_error {
            writeln!(f, "qemu: {e}")?;
        }
        if let Some(i) = &self.idle {
            writeln!(f)?;
            writeln!(
                f,
                "idle VMs ({} MiB, run=spin): {}/{} running at once after {:.0} ms; total RSS {}, mean {}",
                i.memory_mib,
                i.running,
                i.target,
                i.all_running_ms,
                mib(i.total_rss_kib),
                mib(i.mean_rss_kib)
            )?;
            if let Some(s) = &i.shortfall {
                writeln!(f, "  shortfall: {s}")?;
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=100).map(Duration::from_micros).collect();
        let p = Percentiles::of(&samples).unwrap();
        assert_eq!(p.p50_us.round(), 50.0);
        assert_eq!(p.p95_us.round(), 95.0);
        assert_eq!(p.p99_us.round(), 99.0);
        assert_eq!(p.min_us.round(), 1.0);
        assert_eq!(p.max_us.round(), 100.0);
        let few = [
            Duration::from_micros(30),
            Duration::from_micros(10),
            Duration::from_micros(20),
        ];
        let q = Percentiles::of(&few).unwrap();
        assert_eq!((q.p50_us.round(), q.p99_us.round()), (20.0, 30.0));
        assert!(Percentiles::of(&[]).is_none());
    }

    #[test]
    fn options_are_checked_before_anything_runs() {
        let mut o = BootBenchOptions::new("/nonexistent/vmm", "/nonexistent/guest");
        o.runs = 5;
        assert!(matches!(boot(&o), Err(BenchError::Options { runs: 5, .. })));
        o.runs = 20;
        assert!(
            matches!(boot(&o), Err(BenchError::Missing(p)) if p == Path::new("/nonexistent/vmm"))
        );
    }

    #[test]
    fn peer_run_measures_a_real_process() {
        // A stand-in VMM: prints the guest's last line and exits 0.
        let peer = Peer {
            name: "sh",
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "echo 'exit: reboot'".into()],
        };
        let s = peer.run_once().unwrap();
        assert!(s.first_output <= s.exit);
        assert!(s.peak_rss_kib > 0);
        assert_eq!(peer.command_line(), "/bin/sh -c 'echo 'exit: reboot''");
        let failing = Peer {
            name: "sh",
            program: PathBuf::from("/bin/sh"),
            args: vec!["-c".into(), "exit 3".into()],
        };
        assert!(matches!(
            failing.run_once(),
            Err(RunError::Status { code: Some(3), .. })
        ));
        let silent = Peer {
            name: "true",
            program: PathBuf::from("/bin/true"),
            args: vec![],
        };
        assert!(matches!(silent.run_once(), Err(RunError::Output(_))));
    }
}
