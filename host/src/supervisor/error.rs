//! One error type per supervisor operation.

use std::io;
use std::path::PathBuf;

use super::ids::VmId;
use super::measure::MeasureError;
use super::state::{InvalidTransition, StateKind, VmState};
use crate::config::ConfigError;

/// No VM has this id (never created, or destroyed).
#[derive(Debug, thiserror::Error)]
#[error("no VM with id {0}")]
pub struct UnknownVm(pub VmId);

/// [`Supervisor::new`](super::Supervisor::new) failed.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// The runtime directory could not be created.
    #[error("cannot create runtime directory {}", .0.display())]
    RuntimeDir(PathBuf, #[source] io::Error),
}

/// [`Supervisor::create`](super::Supervisor::create) failed; nothing was created.
#[derive(Debug, thiserror::Error)]
pub enum CreateError {
    /// The spec is invalid.
    #[error("invalid VM spec")]
    Spec(#[from] ConfigError),
    /// The per-VM runtime directory could not be made.
    #[error("cannot create VM runtime directory {}", .0.display())]
    RuntimeDir(PathBuf, #[source] io::Error),
    /// The control socket path would exceed the 107-byte `sun_path` limit.
    #[error("control socket path {} is too long for a Unix socket", .0.display())]
    SocketPathTooLong(PathBuf),
}

/// [`Supervisor::start`](super::Supervisor::start) failed.
///
/// Except for `Unknown` and `State`, the VM is now `Failed` and no VMM process is left.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// No such VM.
    #[error(transparent)]
    Unknown(#[from] UnknownVm),
    /// The VM is not in `Created`.
    #[error("cannot start the VM")]
    State(#[from] InvalidTransition),
    /// The kernel or initrd could not be hashed.
    #[error("cannot hash {}", .0.display())]
    Digest(PathBuf, #[source] io::Error),
    /// The VMM configuration could not be serialised.
    #[error("cannot serialise the VMM configuration")]
    Config(#[source] serde_json::Error),
    /// The measurer refused the boot or could not record it; nothing was spawned.
    #[error("boot not measured")]
    Measure(#[source] MeasureError),
    /// A runtime file (vm.json, log) could not be written.
    #[error("cannot write runtime file {}", .0.display())]
    RuntimeFile(PathBuf, #[source] io::Error),
    /// The VMM could not be spawned, or its monitor could not be set up.
    #[error("cannot spawn {}", .0.display())]
    Spawn(PathBuf, #[source] io::Error),
}

/// A control-socket operation ([`pause`](super::Supervisor::pause),
/// [`resume`](super::Supervisor::resume), [`vmm_status`](super::Supervisor::vmm_status)) failed.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// No such VM.
    #[error(transparent)]
    Unknown(#[from] UnknownVm),
    /// The VM is not in a state that allows the operation.
    #[error("operation not allowed now")]
    State(#[from] InvalidTransition),
    /// The VM has no VMM process.
    #[error("the VM is {0}, it has no VMM process")]
    NoProcess(StateKind),
    /// Talking to the control socket failed.
    #[error("control socket {} failed", .0.display())]
    Socket(PathBuf, #[source] io::Error),
    /// The VMM answered with something that is not a response.
    #[error("malformed control response")]
    Response(#[source] serde_json::Error),
    /// The VMM refused the request.
    #[error("VMM refused the request ({kind:?}): {message}")]
    Refused {
        /// The VMM's error kind.
        kind: crate::ErrorKind,
        /// The VMM's message.
        message: String,
    },
}

/// [`Supervisor::stop`](super::Supervisor::stop) failed.
#[derive(Debug, thiserror::Error)]
pub enum StopError {
    /// No such VM.
    #[error(transparent)]
    Unknown(#[from] UnknownVm),
    /// The VM has no VMM process to stop.
    #[error("cannot stop the VM")]
    State(#[from] InvalidTransition),
    /// Sending SIGKILL failed.
    #[error("cannot kill the VMM")]
    Kill(#[source] io::Error),
    /// The process did not end even after SIGKILL.
    #[error("the VMM did not exit (state {0})")]
    Timeout(StateKind),
}

/// [`Supervisor::destroy`](super::Supervisor::destroy) failed; the VM is still listed.
#[derive(Debug, thiserror::Error)]
pub enum DestroyError {
    /// No such VM.
    #[error(transparent)]
    Unknown(#[from] UnknownVm),
    /// Its VMM could not be stopped.
    #[error("cannot stop the VMM")]
    Stop(#[source] StopError),
    /// Its runtime directory could not be removed.
    #[error("cannot remove runtime directory {}", .0.display())]
    Cleanup(PathBuf, #[source] io::Error),
}

/// [`Supervisor::console_tail`](super::Supervisor::console_tail) failed.
#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    /// No such VM.
    #[error(transparent)]
    Unknown(#[from] UnknownVm),
    /// The console log could not be read.
    #[error("cannot read console log {}", .0.display())]
    Read(PathBuf, #[source] io::Error),
}

/// [`Supervisor::wait_for`](super::Supervisor::wait_for) failed.
#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    /// No such VM.
    #[error(transparent)]
    Unknown(#[from] UnknownVm),
    /// The condition did not hold within the timeout.
    #[error("timed out; the VM is {0}")]
    Timeout(VmState),
}
