//! The per-VM monitor thread: reads the VMM's stdout (console) and events, and reaps it.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use rustix::event::{PollFd, PollFlags, Timespec, poll};

use super::control::{LineSplitter, parse_event};
use super::sys;
use super::{EventHub, VmEntry};
use crate::{EventKind, ExitReason};

/// Longest events line accepted.
const MAX_EVENT_LINE: usize = 64 * 1024;
/// Console log size at which it is rotated to `console.log.old`.
pub(crate) const CONSOLE_ROTATE_BYTES: u64 = 8 * 1024 * 1024;

/// Everything the monitor thread owns.
pub(crate) struct Monitor {
    pub entry: Arc<VmEntry>,
    pub hub: Arc<EventHub>,
    pub pid: u32,
    pub pidfd: Arc<OwnedFd>,
    pub events: io::PipeReader,
    pub stdout: std::process::ChildStdout,
    pub spawned_at: Instant,
}

struct Console {
    path: PathBuf,
    old: PathBuf,
    file: Option<File>,
    written: u64,
}

impl Console {
    fn write(&mut self, bytes: &[u8]) {
        if self.written >= CONSOLE_ROTATE_BYTES {
            self.file = None;
            if let Err(e) = std::fs::rename(&self.path, &self.old) {
                tracing::warn!(error = %e, "console log rotation failed");
            }
            self.written = 0;
        }
        if self.file.is_none() {
            match OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => self.file = Some(f),
                Err(e) => {
                    tracing::warn!(error = %e, path = %self.path.display(), "cannot open console log");
                    return;
                }
            }
        }
        if let Some(f) = &mut self.file
            && f.write_all(bytes).is_ok()
        {
            self.written += bytes.len() as u64;
        }
    }
}

impl Monitor {
    /// Runs until the VMM has exited and been reaped.
    pub fn run(mut self) {
        let mut console = Console {
            path: self.entry.console_path(),
            old: self.entry.console_old_path(),
            file: None,
            written: 0,
        };
        let mut lines = LineSplitter::new(MAX_EVENT_LINE);
        let mut exit_reason: Option<(ExitReason, Option<String>)> = None;
        let mut events_open = true;
        let mut stdout_open = true;
        let mut buf = vec![0u8; 16 * 1024];
        let mut first_output = false;

        // Until the process ends: wait on the pidfd and both pipes.
        loop {
            let ready = poll_ready(
                Some(self.pidfd.as_fd()),
                events_open.then(|| self.events.as_fd()),
                stdout_open.then(|| self.stdout.as_fd()),
                None,
            );
            let [exited, ev_ready, out_ready] = match ready {
                Ok(r) => r,
                Err(rustix::io::Errno::INTR) => continue,
                Err(e) => {
                    tracing::error!(vm.id = %self.entry.id, error = %e, "poll on the VMM failed; waiting for its exit");
                    break;
                }
            };
            if ev_ready {
                events_open = self.read_events(&mut buf, &mut lines, &mut exit_reason);
            }
            if out_ready {
                stdout_open = self.read_console(&mut buf, &mut console, &mut first_output);
            }
            if exited {
                break;
            }
        }

        // The process is gone: everything it wrote is already in the pipes. Drain without blocking
        // (a pipe end leaked to another process would never report end-of-file).
        while events_open || stdout_open {
            let ready = poll_ready(
                None,
                events_open.then(|| self.events.as_fd()),
                stdout_open.then(|| self.stdout.as_fd()),
                Some(&Timespec::default()),
            );
            let [_, ev_ready, out_ready] = match ready {
                Ok(r) => r,
                Err(rustix::io::Errno::INTR) => continue,
                Err(_) => break,
            };
            if !ev_ready && !out_ready {
                break;
            }
            if ev_ready {
                events_open = self.read_events(&mut buf, &mut lines, &mut exit_reason);
            }
            if out_ready {
                stdout_open = self.read_console(&mut buf, &mut console, &mut first_output);
            }
        }

        let reaped = sys::wait4(self.pid);
        self.entry.on_exit(&self.hub, reaped, exit_reason);
    }

    /// Reads once from the events pipe; false at end of file.
    fn read_events(
        &mut self,
        buf: &mut [u8],
        lines: &mut LineSplitter,
        exit_reason: &mut Option<(ExitReason, Option<String>)>,
    ) -> bool {
        match self.events.read(buf) {
            Ok(0) => false,
            Ok(n) => {
                lines.feed(&buf[..n], |line| match parse_event(line).map(|e| e.kind) {
                    Some(EventKind::BootComplete { .. }) => self.entry.on_boot_complete(&self.hub),
                    Some(EventKind::Exited { reason, detail, .. }) => {
                        *exit_reason = Some((reason, detail));
                    }
                    Some(other) => {
                        tracing::debug!(vm.id = %self.entry.id, event = ?other, "vmm event")
                    }
                    None => tracing::warn!(vm.id = %self.entry.id, "malformed VMM event line"),
                });
                true
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(_) => false,
        }
    }

    /// Reads once from the VMM's stdout into the console log; false at end of file.
    fn read_console(&mut self, buf: &mut [u8], console: &mut Console, first: &mut bool) -> bool {
        match self.stdout.read(buf) {
            Ok(0) => false,
            Ok(n) => {
                if !*first {
                    *first = true;
                    self.entry.on_first_output(self.spawned_at.elapsed());
                }
                console.write(&buf[..n]);
                true
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => true,
            Err(_) => false,
        }
    }
}

/// Polls up to three descriptors; returns which of them are readable (or hung up).
fn poll_ready(
    a: Option<BorrowedFd<'_>>,
    b: Option<BorrowedFd<'_>>,
    c: Option<BorrowedFd<'_>>,
    timeout: Option<&Timespec>,
) -> rustix::io::Result<[bool; 3]> {
    let slots = [a, b, c];
    let mut fds: Vec<PollFd<'_>> = slots
        .iter()
        .flatten()
        .map(|fd| PollFd::from_borrowed_fd(*fd, PollFlags::IN))
        .collect();
    poll(&mut fds, timeout)?;
    let mut out = [false; 3];
    let mut ready = fds.iter().map(|fd| {
        fd.revents()
            .intersects(PollFlags::IN | PollFlags::HUP | PollFlags::ERR)
    });
    for (slot, o) in slots.iter().zip(out.iter_mut()) {
        if slot.is_some() {
            *o = ready.next().unwrap_or(false);
        }
    }
    Ok(out)
}
