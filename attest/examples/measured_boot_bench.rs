//! Extra boot latency of measured boot: the test guest booted through the real `sakshi-host`
//! supervisor and `sakshi-vmm`, alternately with no measurer and with a measurer that extends
//! a real swtpm (the same calls `sakshi serve` makes), in one run.
//!
//! ```text
//! cargo build --release -p sakshi-host --bin sakshi-vmm
//! cargo run --release -p sakshi-attest --example measured_boot_bench -- --n 30
//! ```
//!
//! Options: `--n N` boots per arm (at least 30), `--warmup N` discarded boots per arm (default
//! 3), `--vmm PATH` (default: `sakshi-vmm` next to this example's target directory),
//! `--guest PATH` (default: the test guest of this build), `--control` (an A/A run: the
//! "measured" arm gets no measurer either, which shows how far apart two identical arms land
//! on this machine).
//!
//! Per boot it records, from just before `Supervisor::start`:
//! - `start -> boot-complete`: until the supervisor's `running` event (its wall-clock stamp);
//! - `start()`: how long `Supervisor::start` blocks (digests from the cache, canonical config,
//!   the measurer, `vm.json` with fsync, spawn) — the whole pre-boot path that measuring adds to;
//! - `spawn -> first output`, `spawn -> boot-complete`: the supervisor's own figures, which
//!   start after the measurement (a check that the guest side is the same in both arms);
//! - for the measured arm, the measurer call alone.
//!
//! Pairs alternate which arm goes first, so drift in machine load hits both arms alike.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context as _, Result, bail, ensure};
use sakshi_attest::{
    BootComponent, MeasuredBoot, Policy, PolicyMode, Sha256Digest, Swtpm, SwtpmStop, Tpm,
    TpmConfig, VerifyOptions, VmBootDigests, verify_quote,
};
use sakshi_host::supervisor::{
    BootMeasurement, BootMeasurer, MeasureError, NoopMeasurer, StateKind, Supervisor,
    SupervisorConfig, VmId, VmSpec, VmState,
};

const TIMEOUT: Duration = Duration::from_secs(60);
const CMDLINE: &str = "exit=reboot";

struct Args {
    n: usize,
    warmup: usize,
    vmm: Option<PathBuf>,
    guest: Option<PathBuf>,
    control: bool,
}

fn args() -> Result<Args> {
    let mut a = Args {
        n: 30,
        warmup: 3,
        vmm: None,
        guest: None,
        control: false,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--n" => a.n = value()?.parse()?,
            "--warmup" => a.warmup = value()?.parse()?,
            "--vmm" => a.vmm = Some(value()?.into()),
            "--guest" => a.guest = Some(value()?.into()),
            "--control" => a.control = true,
            other => bail!("unknown argument {other}"),
        }
    }
    ensure!(a.n >= 30, "--n must be at least 30");
    Ok(a)
}

/// The supervisor's measured-boot hook, as `sakshi serve` implements it (without its registry
/// write): extend through `MeasuredBoot::measure_digests`, refuse what the policy refuses.
struct TpmMeasurer {
    boot: MeasuredBoot,
    times: Mutex<Vec<Duration>>,
}

impl BootMeasurer for TpmMeasurer {
    fn measure(&self, m: &BootMeasurement<'_>) -> Result<(), MeasureError> {
        let t = Instant::now();
        let vm_id = m.vm_id.to_string();
        let result = self
            .boot
            .measure_digests(&VmBootDigests {
                vm_id: &vm_id,
                kernel_sha256: Sha256Digest(m.kernel_sha256),
                initrd_sha256: m.initrd_sha256.map(Sha256Digest),
                cmdline: m.cmdline,
                config: m.config_json,
            })
            .map_err(|e| MeasureError::Unavailable {
                source: Box::new(e),
            })?;
        if !result.may_boot() {
            return Err(MeasureError::Refused {
                reason: format!("{:?}", result.decision),
            });
        }
        let elapsed = t.elapsed();
        self.times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(elapsed);
        Ok(())
    }
}

/// One boot's figures.
#[derive(Default)]
struct Samples {
    to_boot_complete: Vec<Duration>,
    start_call: Vec<Duration>,
    spawn_to_first_output: Vec<Duration>,
    spawn_to_boot_complete: Vec<Duration>,
}

fn unix_nanos(t: SystemTime) -> Result<i64> {
    Ok(i64::try_from(t.duration_since(UNIX_EPOCH)?.as_nanos())?)
}

/// Boot the guest once to its reboot, record the figures, destroy the VM.
fn boot_once(sup: &Supervisor, guest: &PathBuf, out: Option<&mut Samples>) -> Result<()> {
    let id: VmId = sup.create(VmSpec::new(guest, CMDLINE, 128))?;
    let wall0 = unix_nanos(SystemTime::now())?;
    let t0 = Instant::now();
    sup.start(&id)?;
    let start_call = t0.elapsed();
    let state = sup.wait_for(&id, TIMEOUT, VmState::is_final)?;
    ensure!(
        state == VmState::Stopped,
        "VM {id} ended {state}; console: {}",
        String::from_utf8_lossy(&sup.console_tail(&id, 4096).unwrap_or_default())
    );
    let details = sup.show(&id)?;
    let running = details
        .history
        .iter()
        .find(|e| e.state.kind() == StateKind::Running)
        .context("no running event: the guest never signalled boot-complete")?;
    let to_boot_complete = u64::try_from(running.time_unix_nano - wall0)
        .context("running event stamped before the start")?;
    let spawn_first = details.summary.first_output_ns.context("no first output")?;
    let spawn_boot = running.boot_latency_ns.context("no boot latency")?;
    sup.destroy(&id)?;
    if let Some(s) = out {
        s.to_boot_complete
            .push(Duration::from_nanos(to_boot_complete));
        s.start_call.push(start_call);
        s.spawn_to_first_output
            .push(Duration::from_nanos(spawn_first));
        s.spawn_to_boot_complete
            .push(Duration::from_nanos(spawn_boot));
    }
    Ok(())
}

/// Nearest-rank percentile of sorted samples.
fn pct(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn sorted(v: &[Duration]) -> Vec<Duration> {
    let mut v = v.to_vec();
    v.sort();
    v
}

fn row(name: &str, v: &[Duration]) -> [Duration; 3] {
    let s = sorted(v);
    let p = [pct(&s, 0.50), pct(&s, 0.90), pct(&s, 0.99)];
    println!(
        "  {name:<28} n={:<3} p50 {:>8.3} ms  p90 {:>8.3} ms  p99 {:>8.3} ms",
        s.len(),
        ms(p[0]),
        ms(p[1]),
        ms(p[2])
    );
    p
}

fn diff_row(name: &str, with: [Duration; 3], without: [Duration; 3]) {
    let d = |i: usize| ms(with[i]) - ms(without[i]);
    println!(
        "  {name:<28}       p50 {:>+8.3} ms  p90 {:>+8.3} ms  p99 {:>+8.3} ms",
        d(0),
        d(1),
        d(2)
    );
}

/// Median and mean of the per-pair differences `with[i] - without[i]`, in ms (pair `i` ran
/// back to back, so this cancels load drift better than a difference of percentiles).
fn paired_row(name: &str, with: &[Duration], without: &[Duration]) {
    let mut d: Vec<f64> = with
        .iter()
        .zip(without)
        .map(|(w, o)| ms(*w) - ms(*o))
        .collect();
    d.sort_by(f64::total_cmp);
    let median = d.get(d.len().saturating_sub(1) / 2).copied().unwrap_or(0.0);
    let mean = d.iter().sum::<f64>() / d.len().max(1) as f64;
    println!("  {name:<28}       paired median {median:>+8.3} ms  mean {mean:>+8.3} ms");
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn main() -> Result<()> {
    let a = args()?;
    let vmm = match a.vmm {
        Some(p) => p,
        None => {
            // target/<profile>/examples/measured_boot_bench -> target/<profile>/sakshi-vmm
            let exe = std::env::current_exe().context("locating this executable")?;
            exe.parent()
                .and_then(|examples| examples.parent())
                .map(|profile| profile.join("sakshi-vmm"))
                .context("cannot derive the sakshi-vmm path; pass --vmm")?
        }
    };
    ensure!(
        vmm.is_file(),
        "{} not found: build it first (cargo build --release -p sakshi-host --bin sakshi-vmm) or pass --vmm",
        vmm.display()
    );
    let guest = a
        .guest
        .unwrap_or_else(|| sakshi_host::test_guest::test_guest_path().to_path_buf());
    let tmp = tempfile::tempdir()?;

    // A real swtpm and the production configuration (PCR 15, every active bank).
    let swtpm = Swtpm::start(&tmp.path().join("swtpm"))?;
    let tpm = Tpm::open(&TpmConfig::new(swtpm.tcti(), tmp.path().join("attest")))?;
    let mut policy = Policy::new(PolicyMode::Enforce);
    let guest_sha = Sha256Digest::of(&std::fs::read(&guest)?);
    policy.approve(BootComponent::Kernel, guest_sha, "sakshi test guest");
    let measurer = Arc::new(TpmMeasurer {
        boot: MeasuredBoot::new(tpm.clone(), policy.clone()),
        times: Mutex::new(Vec::new()),
    });

    let plain = Supervisor::new(
        SupervisorConfig::new(&vmm, tmp.path().join("run-plain")),
        Arc::new(NoopMeasurer),
    )?;
    let measured = Supervisor::new(
        SupervisorConfig::new(&vmm, tmp.path().join("run-measured")),
        if a.control {
            Arc::new(NoopMeasurer)
        } else {
            measurer.clone()
        },
    )?;

    println!(
        "measured boot bench: guest {} ({} bytes), cmdline {CMDLINE:?}, 128 MiB, 1 vCPU",
        guest.display(),
        std::fs::metadata(&guest)?.len()
    );
    println!(
        "tpm: swtpm pid {}, PCR {}, banks {:?}; n={} per arm after {} warm-up boots; load {}",
        swtpm.pid(),
        tpm.pcr(),
        tpm.banks(),
        a.n,
        a.warmup,
        loadavg()
    );

    // Warm-up: fills the supervisors' digest caches and the page cache, starts the journal.
    for _ in 0..a.warmup {
        boot_once(&plain, &guest, None)?;
        boot_once(&measured, &guest, None)?;
    }
    let warm_measures = measurer
        .times
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .len();

    let mut without = Samples::default();
    let mut with = Samples::default();
    for i in 0..a.n {
        if i % 2 == 0 {
            boot_once(&plain, &guest, Some(&mut without))?;
            boot_once(&measured, &guest, Some(&mut with))?;
        } else {
            boot_once(&measured, &guest, Some(&mut with))?;
            boot_once(&plain, &guest, Some(&mut without))?;
        }
    }
    let measure_times: Vec<Duration> = measurer
        .times
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .get(warm_measures..)
        .unwrap_or_default()
        .to_vec();
    let expected = if a.control { 0 } else { a.n };
    ensure!(
        measure_times.len() == expected,
        "expected {} measurements, got {}",
        expected,
        measure_times.len()
    );

    println!("without measurement (NoopMeasurer):");
    let w0 = row("start -> boot-complete", &without.to_boot_complete);
    let s0 = row("start() call", &without.start_call);
    row("spawn -> first output", &without.spawn_to_first_output);
    row("spawn -> boot-complete", &without.spawn_to_boot_complete);
    if a.control {
        println!("CONTROL RUN (A/A): the second arm is not measured either");
    }
    println!(
        "with measurement (swtpm, 3 events x {} banks):",
        tpm.banks().len()
    );
    let w1 = row("start -> boot-complete", &with.to_boot_complete);
    let s1 = row("start() call", &with.start_call);
    row("spawn -> first output", &with.spawn_to_first_output);
    row("spawn -> boot-complete", &with.spawn_to_boot_complete);
    row("measurer call alone", &measure_times);
    println!("difference (with - without, per percentile):");
    diff_row("start -> boot-complete", w1, w0);
    diff_row("start() call", s1, s0);
    paired_row(
        "start -> boot-complete",
        &with.to_boot_complete,
        &without.to_boot_complete,
    );
    paired_row("start() call", &with.start_call, &without.start_call);
    println!("load after: {}", loadavg());

    // The boots really were measured: the log has 3 events per measured boot (kernel, command
    // line, config; the guest has no initrd) and a quote over it verifies against the policy.
    let nonce = b"measured-boot-bench";
    let quote = tpm.quote(nonce)?;
    let report = verify_quote(&quote, &VerifyOptions::new(nonce, &policy))?;
    ensure!(
        report.passed(),
        "quote over the benchmark's log does not verify"
    );
    let measured_boots = if a.control { 0 } else { a.warmup + a.n };
    ensure!(
        quote.event_log.len() == 3 * measured_boots,
        "log has {} events, expected {}",
        quote.event_log.len(),
        3 * measured_boots
    );
    println!(
        "log: {} events for {} measured boots; quote verifies",
        quote.event_log.len(),
        measured_boots
    );
    drop(measured);
    drop(plain);
    drop(measurer);
    drop(tpm);
    match swtpm.stop() {
        SwtpmStop::Orderly => Ok(()),
        other => bail!("swtpm did not stop in order: {other:?}"),
    }
}
