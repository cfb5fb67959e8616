//! The one system call the supervisor needs that has no safe wrapper: `wait4` with rusage.
//!
//! Everything else (pidfd, poll, signals) goes through `rustix`'s safe API.
#![allow(unsafe_code)]

use std::io;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

/// How a reaped child ended, with its peak resident set size.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Reaped {
    pub status: ExitStatus,
    /// `ru_maxrss` in KiB.
    pub peak_rss_kib: u64,
    /// User plus system CPU time (`ru_utime + ru_stime`).
    pub cpu_time: std::time::Duration,
}

/// Blocks until the child `pid` has ended, reaps it and returns its status and rusage.
///
/// `pid` must be a child of this process that nobody else reaps.
pub(crate) fn wait4(pid: u32) -> io::Result<Reaped> {
    let pid =
        libc::pid_t::try_from(pid).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    loop {
        let mut status: libc::c_int = 0;
        // SAFETY: all-zero bytes are a valid `rusage` (a struct of integers).
        let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
        // SAFETY: `status` and `usage` are valid, writable and live for the whole call; wait4 writes
        // only into them.
        let rc = unsafe { libc::wait4(pid, &mut status, 0, &mut usage) };
        if rc == pid {
            return Ok(Reaped {
                status: ExitStatus::from_raw(status),
                peak_rss_kib: u64::try_from(usage.ru_maxrss).unwrap_or(0),
                cpu_time: timeval(usage.ru_utime) + timeval(usage.ru_stime),
            });
        }
        let err = io::Error::last_os_error();
        if err.kind() != io::ErrorKind::Interrupted {
            return Err(err);
        }
    }
}

fn timeval(tv: libc::timeval) -> std::time::Duration {
    let secs = u64::try_from(tv.tv_sec).unwrap_or(0);
    let micros = u32::try_from(tv.tv_usec).unwrap_or(0);
    std::time::Duration::from_secs(secs) + std::time::Duration::from_micros(u64::from(micros))
}
