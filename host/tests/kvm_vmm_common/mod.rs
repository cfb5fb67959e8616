//! Shared helpers for the `sakshi-vmm` integration tests: spawn the real binary with a config in
//! a temporary directory, read its events, talk to its control socket.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStderr, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sakshi_host::{ControlResponse, EventKind, VmmEvent};

/// Generous: a boot takes a few tens of milliseconds here.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// Serialises spawns: the events pipe is inheritable only while its child is spawned.
static SPAWN_LOCK: Mutex<()> = Mutex::new(());

pub fn vmm_bin() -> &'static str {
    env!("CARGO_BIN_EXE_sakshi-vmm")
}

pub fn guest() -> &'static Path {
    sakshi_host::test_guest::test_guest_path()
}

pub fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// A running `sakshi-vmm`.
pub struct Vmm {
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
    pub console: PathBuf,
    child: Arc<Mutex<Child>>,
    events: BufReader<std::io::PipeReader>,
    stderr: Option<ChildStderr>,
    pub seen: Vec<VmmEvent>,
    done: Arc<std::sync::atomic::AtomicBool>,
}

/// What a finished `sakshi-vmm` left.
pub struct Finished {
    pub status: ExitStatus,
    pub events: Vec<VmmEvent>,
    pub console: String,
    pub stderr: String,
    pub dir: tempfile::TempDir,
    pub sock: PathBuf,
}

impl Finished {
    pub fn exited(&self) -> &EventKind {
        let last = self.events.last().expect("at least one event");
        assert!(
            matches!(last.kind, EventKind::Exited { .. }),
            "last event is `exited`: {:?}",
            self.events
        );
        &last.kind
    }

    pub fn names(&self) -> Vec<&'static str> {
        self.events.iter().map(|e| name(&e.kind)).collect()
    }
}

pub fn name(kind: &EventKind) -> &'static str {
    match kind {
        EventKind::Ready { .. } => "ready",
        EventKind::FirstOutput { .. } => "first_output",
        EventKind::BootComplete { .. } => "boot_complete",
        EventKind::Paused { .. } => "paused",
        EventKind::Resumed { .. } => "resumed",
        EventKind::Exited { .. } => "exited",
    }
}

/// Writes `config` (the kernel defaults to the test guest; the console goes to a file) and
/// starts `sakshi-vmm` with a control socket and an events pipe.
pub fn spawn(mut config: serde_json::Value, extra_args: &[&str]) -> Result<Vmm> {
    let dir = tempfile::tempdir()?;
    let console = dir.path().join("console.log");
    let sock = dir.path().join("vmm.sock");
    let obj = config.as_object_mut().context("config is an object")?;
    obj.entry("kernel")
        .or_insert_with(|| serde_json::json!(guest()));
    obj.entry("console")
        .or_insert_with(|| serde_json::json!({"stdout": false, "file": console}));
    let config_path = dir.path().join("vm.json");
    std::fs::write(&config_path, serde_json::to_vec(&config)?)?;

    let (events_rx, events_tx) = std::io::pipe()?;
    let events_tx: OwnedFd = rustix::io::fcntl_dupfd_cloexec(&events_tx, 10)?;
    let mut cmd = Command::new(vmm_bin());
    cmd.arg("--config")
        .arg(&config_path)
        .arg("--api-sock")
        .arg(&sock)
        .arg("--events-fd")
        .arg(events_tx.as_raw_fd().to_string())
        .args(extra_args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let child = {
        let _guard = SPAWN_LOCK.lock().unwrap_or_else(|e| e.into_inner());
        rustix::io::fcntl_setfd(&events_tx, rustix::io::FdFlags::empty())?;
        let child = cmd.spawn();
        drop(events_tx);
        child?
    };
    let child = Arc::new(Mutex::new(child));
    let stderr = child.lock().unwrap().stderr.take();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    // Watchdog: a hung VMM fails the test instead of hanging it.
    {
        let child = child.clone();
        let done = done.clone();
        std::thread::spawn(move || {
            let deadline = Instant::now() + TIMEOUT;
            while Instant::now() < deadline {
                if done.load(std::sync::atomic::Ordering::Acquire) {
                    return;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.lock().unwrap().kill();
        });
    }
    Ok(Vmm {
        dir,
        sock,
        console,
        child,
        events: BufReader::new(events_rx),
        stderr,
        seen: Vec::new(),
        done,
    })
}

impl Vmm {
    /// Reads events until one named `want` arrives (or the stream ends).
    pub fn wait_event(&mut self, want: &str) -> Result<VmmEvent> {
        loop {
            let mut line = String::new();
            if self.events.read_line(&mut line)? == 0 {
                bail!("events ended before `{want}`; seen {:?}", self.seen);
            }
            let event: VmmEvent =
                serde_json::from_str(&line).with_context(|| format!("event line {line:?}"))?;
            self.seen.push(event.clone());
            if name(&event.kind) == want {
                return Ok(event);
            }
        }
    }

    /// One control request on a fresh connection.
    pub fn request(&self, request: serde_json::Value) -> Result<ControlResponse> {
        let mut s = UnixStream::connect(&self.sock)
            .with_context(|| format!("connect {}", self.sock.display()))?;
        s.set_read_timeout(Some(TIMEOUT))?;
        let mut line = serde_json::to_vec(&request)?;
        line.push(b'\n');
        s.write_all(&line)?;
        let mut resp = String::new();
        BufReader::new(s).read_line(&mut resp)?;
        serde_json::from_str(&resp).with_context(|| format!("response {resp:?}"))
    }

    /// Waits for the process and collects what it left.
    pub fn finish(mut self) -> Result<Finished> {
        let mut rest = String::new();
        self.events.read_to_string(&mut rest)?;
        for line in rest.lines() {
            self.seen
                .push(serde_json::from_str(line).with_context(|| format!("event {line:?}"))?);
        }
        let mut stderr = String::new();
        if let Some(mut e) = self.stderr.take() {
            e.read_to_string(&mut stderr)?;
        }
        let status = self.child.lock().unwrap().wait()?;
        self.done.store(true, std::sync::atomic::Ordering::Release);
        let console = std::fs::read_to_string(&self.console).unwrap_or_default();
        Ok(Finished {
            status,
            events: self.seen,
            console,
            stderr,
            dir: self.dir,
            sock: self.sock,
        })
    }

    /// The child's pid (for signals).
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().id()
    }
}

/// Runs a VM that ends by itself and returns what it left.
pub fn run_to_end(config: serde_json::Value) -> Result<Finished> {
    spawn(config, &[])?.finish()
}

/// Runs `sakshi-vmm` on a config that must be refused: returns (status, stderr, dir listing).
pub fn run_refused(config: &serde_json::Value) -> Result<(ExitStatus, String, Vec<String>)> {
    let dir = tempfile::tempdir()?;
    let config_path = dir.path().join("vm.json");
    std::fs::write(&config_path, serde_json::to_vec(config)?)?;
    let out = Command::new(vmm_bin())
        .arg("--config")
        .arg(&config_path)
        .arg("--api-sock")
        .arg(dir.path().join("vmm.sock"))
        .stdin(Stdio::null())
        .output()?;
    let mut listing: Vec<String> = std::fs::read_dir(dir.path())?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<std::io::Result<_>>()?;
    listing.sort();
    Ok((
        out.status,
        String::from_utf8_lossy(&out.stderr).into_owned(),
        listing,
    ))
}
