//! A software TPM (swtpm 0.7) spawned as a child process, for development and tests.
//!
//! It runs `swtpm socket --tpm2 --server type=tcp,port=P --ctrl type=tcp,port=P+1
//! --tpmstate dir=STATE --flags not-need-init,startup-clear` on free loopback ports, waits
//! until both sockets accept connections. The TPM state (keys, NV, counters) persists in
//! `STATE` across restarts; PCRs are reset at every start.
//!
//! Stopping ([`Swtpm::stop`], or dropping) is orderly: `TPM2_Shutdown(TPM_SU_CLEAR)` on the TPM
//! port, then the control channel's shutdown command, so swtpm saves its state and exits by
//! itself; it is killed only if that fails. A TPM that is stopped without `TPM2_Shutdown`
//! counts the next start as a non-orderly shutdown and raises its dictionary-attack lockout
//! counter; after a few such restarts it refuses DA-protected keys. (swtpm 0.7's own shutdown
//! command and SIGTERM do not send `TPM2_Shutdown`.)

use std::fs;
use std::io::{self, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

/// How long to wait for swtpm to accept connections.
const READY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long each step of an orderly stop may take before swtpm is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(3);
/// `TPM2_Shutdown(TPM_SU_CLEAR)`: tag TPM_ST_NO_SESSIONS, size 12, TPM_CC_Shutdown, TPM_SU_CLEAR.
const TPM2_SHUTDOWN_CLEAR: [u8; 12] = [
    0x80, 0x01, 0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x01, 0x45, 0x00, 0x00,
];
/// swtpm control channel command `CMD_SHUTDOWN` (save state, exit), big-endian.
const CTRL_CMD_SHUTDOWN: [u8; 4] = [0, 0, 0, 3];
/// How many port pairs to try when swtpm cannot bind.
const ATTEMPTS: usize = 5;

/// Why swtpm could not be started.
#[derive(Debug, thiserror::Error)]
pub enum SwtpmError {
    /// The state directory could not be created or the log file opened.
    #[error("cannot prepare swtpm state directory {path}")]
    StateDir {
        /// The path.
        path: PathBuf,
        /// The failure.
        #[source]
        source: io::Error,
    },
    /// Binding a loopback port to find a free one failed.
    #[error("cannot bind a loopback port")]
    Ports(#[source] io::Error),
    /// No two consecutive free loopback ports were found.
    #[error("cannot find two free consecutive loopback ports")]
    NoPortPair,
    /// The swtpm binary could not be run (is the `swtpm` package installed?).
    #[error("cannot run swtpm")]
    Spawn(#[source] io::Error),
    /// swtpm exited during startup; its output is in `log`.
    #[error("swtpm exited during startup ({status}); see {log}")]
    Exited {
        /// Its exit status.
        status: ExitStatus,
        /// Its output.
        log: PathBuf,
    },
    /// swtpm did not accept connections in time; its output is in `log`.
    #[error("swtpm did not become ready within {READY_TIMEOUT:?}; see {log}")]
    NotReady {
        /// Its output.
        log: PathBuf,
    },
}

/// How [`Swtpm::stop`] ended the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwtpmStop {
    /// The TPM accepted `TPM2_Shutdown(TPM_SU_CLEAR)` and swtpm exited on its control
    /// channel's shutdown command: the next start is orderly.
    Orderly,
    /// A step failed (see the log) and swtpm was killed. The next start is non-orderly unless
    /// the failing step came after an accepted `TPM2_Shutdown`.
    Killed,
    /// The process had already exited.
    AlreadyExited,
}

/// A running swtpm process, stopped (orderly, see [`Swtpm::stop`]) on drop.
#[derive(Debug)]
pub struct Swtpm {
    child: Child,
    stopped: bool,
    port: u16,
    state_dir: PathBuf,
}

impl Swtpm {
    /// Start `swtpm` (from `PATH`) with its state in `state_dir` (created if missing).
    pub fn start(state_dir: &Path) -> Result<Self, SwtpmError> {
        Self::start_with_binary(Path::new("swtpm"), state_dir)
    }

    /// Start the given swtpm binary with its state in `state_dir`.
    pub fn start_with_binary(binary: &Path, state_dir: &Path) -> Result<Self, SwtpmError> {
        let state_err = |source| SwtpmError::StateDir {
            path: state_dir.to_path_buf(),
            source,
        };
        fs::create_dir_all(state_dir).map_err(state_err)?;
        let log_path = state_dir.join("swtpm.log");
        let mut last_exit = None;
        for _ in 0..ATTEMPTS {
            let port = free_port_pair()?;
            let log = fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&log_path)
                .map_err(state_err)?;
            let log2 = log.try_clone().map_err(state_err)?;
            let mut child = Command::new(binary)
                .arg("socket")
                .arg("--tpm2")
                .arg("--server")
                .arg(format!("type=tcp,port={port}"))
                .arg("--ctrl")
                .arg(format!("type=tcp,port={}", port + 1))
                .arg("--tpmstate")
                .arg(format!("dir={}", state_dir.display()))
                .arg("--flags")
                .arg("not-need-init,startup-clear")
                .stdin(Stdio::null())
                .stdout(log)
                .stderr(log2)
                .spawn()
                .map_err(SwtpmError::Spawn)?;
            match wait_ready(&mut child, port) {
                Ok(()) => {
                    tracing::debug!(swtpm.port = port, swtpm.pid = child.id(), "swtpm ready");
                    return Ok(Swtpm {
                        child,
                        stopped: false,
                        port,
                        state_dir: state_dir.to_path_buf(),
                    });
                }
                Err(Some(status)) => {
                    // Most likely a port race; try another pair.
                    tracing::warn!(swtpm.port = port, %status, "swtpm exited during startup");
                    last_exit = Some(status);
                }
                Err(None) => {
                    let _ = child.kill();
                    let _ = child.wait();
                    return Err(SwtpmError::NotReady { log: log_path });
                }
            }
        }
        match last_exit {
            Some(status) => Err(SwtpmError::Exited {
                status,
                log: log_path,
            }),
            None => Err(SwtpmError::NotReady { log: log_path }),
        }
    }

    /// The TPM command port (the control channel is `port() + 1`).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The control channel port.
    pub fn ctrl_port(&self) -> u16 {
        self.port + 1
    }

    /// The TCTI string that reaches this TPM: `swtpm:host=127.0.0.1,port=P`.
    pub fn tcti(&self) -> String {
        format!("swtpm:host=127.0.0.1,port={}", self.port)
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The state directory.
    pub fn state_dir(&self) -> &Path {
        &self.state_dir
    }

    /// True while the process runs.
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Stop swtpm in order: `TPM2_Shutdown(TPM_SU_CLEAR)` on the TPM port, then the control
    /// channel's shutdown command, then wait for it to exit; kill it if any step fails. Each
    /// step waits at most a few seconds (a client that holds the TPM connection delays it).
    pub fn stop(mut self) -> SwtpmStop {
        self.stop_inner()
    }

    fn stop_inner(&mut self) -> SwtpmStop {
        if self.stopped {
            return SwtpmStop::AlreadyExited;
        }
        self.stopped = true;
        if !matches!(self.child.try_wait(), Ok(None)) {
            return SwtpmStop::AlreadyExited;
        }
        let shutdown = tpm2_shutdown_clear(self.port);
        if let Err(e) = &shutdown {
            tracing::warn!(swtpm.port = self.port, error = %chain(e), "TPM2_Shutdown failed; killing swtpm");
        }
        let exited = shutdown.is_ok()
            && match ctrl_shutdown(self.port + 1) {
                Ok(()) => self.wait_exit(STOP_TIMEOUT),
                Err(e) => {
                    tracing::warn!(swtpm.port = self.port, error = %chain(&e), "swtpm control shutdown failed");
                    false
                }
            };
        if exited {
            tracing::debug!(swtpm.port = self.port, "swtpm stopped in order");
            return SwtpmStop::Orderly;
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        SwtpmStop::Killed
    }

    /// Wait until the process exits (true) or `timeout` passes (false).
    fn wait_exit(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        loop {
            match self.child.try_wait() {
                Ok(Some(_)) => return true,
                Ok(None) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                _ => return false,
            }
        }
    }
}

impl Drop for Swtpm {
    fn drop(&mut self) {
        self.stop_inner();
    }
}

/// Why an orderly stop step failed.
#[derive(Debug, thiserror::Error)]
enum StopStepError {
    #[error("cannot talk to swtpm")]
    Io(#[from] io::Error),
    #[error("TPM answered with response code {0:#x}")]
    Tpm(u32),
    #[error("swtpm control channel answered with result {0:#x}")]
    Ctrl(u32),
}

/// An error and its sources, for a log line.
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

fn connect(port: u16) -> io::Result<TcpStream> {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let s = TcpStream::connect_timeout(&addr, STOP_TIMEOUT)?;
    s.set_read_timeout(Some(STOP_TIMEOUT))?;
    s.set_write_timeout(Some(STOP_TIMEOUT))?;
    Ok(s)
}

/// Send `TPM2_Shutdown(TPM_SU_CLEAR)` on the TPM port and check the response code.
fn tpm2_shutdown_clear(port: u16) -> Result<(), StopStepError> {
    let mut s = connect(port)?;
    s.write_all(&TPM2_SHUTDOWN_CLEAR)?;
    // Response: tag (2), size (4), response code (4).
    let mut resp = [0u8; 10];
    s.read_exact(&mut resp)?;
    let rc = u32::from_be_bytes([resp[6], resp[7], resp[8], resp[9]]);
    if rc != 0 {
        return Err(StopStepError::Tpm(rc));
    }
    Ok(())
}

/// Send the control channel's `CMD_SHUTDOWN` (swtpm saves its state and exits).
fn ctrl_shutdown(port: u16) -> Result<(), StopStepError> {
    let mut s = connect(port)?;
    s.write_all(&CTRL_CMD_SHUTDOWN)?;
    let mut resp = [0u8; 4];
    s.read_exact(&mut resp)?;
    let result = u32::from_be_bytes(resp);
    if result != 0 {
        return Err(StopStepError::Ctrl(result));
    }
    Ok(())
}

/// A port `P` such that `P` and `P + 1` are both free on 127.0.0.1 right now.
fn free_port_pair() -> Result<u16, SwtpmError> {
    let ports = SwtpmError::Ports;
    for _ in 0..64 {
        let a = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).map_err(ports)?;
        let port = a.local_addr().map_err(ports)?.port();
        if port == u16::MAX {
            continue;
        }
        if TcpListener::bind((Ipv4Addr::LOCALHOST, port + 1)).is_ok() {
            return Ok(port);
        }
    }
    Err(SwtpmError::NoPortPair)
}

/// Wait until both sockets accept. `Err(Some(status))`: the process exited; `Err(None)`: timeout.
fn wait_ready(child: &mut Child, port: u16) -> Result<(), Option<ExitStatus>> {
    let deadline = Instant::now() + READY_TIMEOUT;
    let ctrl = SocketAddr::from((Ipv4Addr::LOCALHOST, port + 1));
    let data = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Err(Some(status));
        }
        let timeout = Duration::from_millis(200);
        if TcpStream::connect_timeout(&ctrl, timeout).is_ok()
            && TcpStream::connect_timeout(&data, timeout).is_ok()
        {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(None);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}
