//! The VMM side of the process contract: control-socket requests, `--events-fd` lines, `/proc` figures.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::error::ControlError;
use crate::{ControlRequest, ControlResponse, VmmEvent};

/// Longest control-socket response line accepted.
const MAX_RESPONSE_BYTES: u64 = 4 * 1024 * 1024;

/// Sends one request on a fresh connection and returns the (successful) response.
pub(crate) fn request(
    socket: &Path,
    req: &ControlRequest,
    timeout: Duration,
) -> Result<ControlResponse, ControlError> {
    let io_err = |e| ControlError::Socket(socket.to_path_buf(), e);
    let mut stream = UnixStream::connect(socket).map_err(io_err)?;
    stream.set_read_timeout(Some(timeout)).map_err(io_err)?;
    stream.set_write_timeout(Some(timeout)).map_err(io_err)?;
    let mut line = serde_json::to_vec(req).map_err(ControlError::Response)?;
    line.push(b'\n');
    stream.write_all(&line).map_err(io_err)?;
    let mut reader = BufReader::new(stream.take(MAX_RESPONSE_BYTES));
    let mut response = String::new();
    reader.read_line(&mut response).map_err(io_err)?;
    parse_response(&response)
}

/// Parses one response line; `ok: false` becomes [`ControlError::Refused`].
pub(crate) fn parse_response(line: &str) -> Result<ControlResponse, ControlError> {
    let response: ControlResponse =
        serde_json::from_str(line.trim_end()).map_err(ControlError::Response)?;
    if response.ok {
        return Ok(response);
    }
    match response.error {
        Some(e) => Err(ControlError::Refused {
            kind: e.kind,
            message: e.message,
        }),
        None => Err(ControlError::Response(serde::de::Error::custom(
            "`ok` is false but there is no `error`",
        ))),
    }
}

/// Parses one `--events-fd` line.
pub(crate) fn parse_event(line: &[u8]) -> Option<VmmEvent> {
    serde_json::from_slice(line).ok()
}

/// Splits a byte stream into lines, dropping lines longer than `max`.
#[derive(Debug)]
pub(crate) struct LineSplitter {
    buf: Vec<u8>,
    max: usize,
    overflow: bool,
}

impl LineSplitter {
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            max,
            overflow: false,
        }
    }

    /// Feeds bytes and calls `f` with every complete line (without its newline).
    pub fn feed(&mut self, mut bytes: &[u8], mut f: impl FnMut(&[u8])) {
        while let Some(pos) = bytes.iter().position(|&b| b == b'\n') {
            if !self.overflow {
                self.buf.extend_from_slice(&bytes[..pos]);
                f(&self.buf);
            }
            self.buf.clear();
            self.overflow = false;
            bytes = &bytes[pos + 1..];
        }
        if !self.overflow {
            self.buf.extend_from_slice(bytes);
            if self.buf.len() > self.max {
                self.buf.clear();
                self.overflow = true;
            }
        }
    }
}

/// Resident set size figures of a live process, in KiB.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemUsage {
    /// Current resident set size (`VmRSS`).
    pub rss_kib: u64,
    /// Peak resident set size so far (`VmHWM`).
    pub hwm_kib: u64,
}

/// Reads `VmRSS` and `VmHWM` from `/proc/<pid>/status`.
pub(crate) fn mem_usage(pid: u32) -> Option<MemUsage> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status(&text)
}

fn parse_status(text: &str) -> Option<MemUsage> {
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|rest| rest.trim().strip_suffix("kB"))
            .and_then(|n| n.trim().parse::<u64>().ok())
    };
    Some(MemUsage {
        rss_kib: field("VmRSS:")?,
        hwm_kib: field("VmHWM:")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn responses_are_parsed() {
        let ok = parse_response("{\"ok\":true,\"latency_us\":12}\n").unwrap();
        assert_eq!(ok.latency_us, Some(12));
        match parse_response(
            r#"{"ok":false,"error":{"kind":"invalid_state","message":"not running"}}"#,
        ) {
            Err(ControlError::Refused { kind, message }) => {
                assert_eq!(kind, crate::ErrorKind::InvalidState);
                assert_eq!(message, "not running");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            parse_response(r#"{"ok":false}"#),
            Err(ControlError::Response(_))
        ));
        assert!(matches!(
            parse_response("garbage"),
            Err(ControlError::Response(_))
        ));
    }

    #[test]
    fn vmm_events_are_parsed() {
        let e = parse_event(br#"{"event":"boot_complete","t_us":1234}"#).unwrap();
        assert_eq!(e.t_us, 1234);
        assert!(matches!(e.kind, crate::EventKind::BootComplete { .. }));
        let x =
            parse_event(br#"{"event":"exited","reason":"reboot","exit_code":0,"t_us":9}"#).unwrap();
        assert!(matches!(
            x.kind,
            crate::EventKind::Exited {
                reason: crate::ExitReason::Reboot,
                exit_code: 0,
                ..
            }
        ));
        assert!(parse_event(b"not json").is_none());
    }

    #[test]
    fn line_splitter_handles_partial_and_oversize_lines() {
        let mut s = LineSplitter::new(8);
        let mut lines = Vec::new();
        s.feed(b"ab", |l| lines.push(l.to_vec()));
        s.feed(b"c\nde\n0123456789", |l| lines.push(l.to_vec()));
        s.feed(b"xx\nok\n", |l| lines.push(l.to_vec()));
        assert_eq!(lines, vec![b"abc".to_vec(), b"de".to_vec(), b"ok".to_vec()]);
    }

    #[test]
    fn proc_status_is_parsed() {
        let text = "Name:\tsakshi-vmm\nVmHWM:\t    2816 kB\nVmRSS:\t    2700 kB\n";
        assert_eq!(
            parse_status(text),
            Some(MemUsage {
                rss_kib: 2700,
                hwm_kib: 2816
            })
        );
        assert_eq!(parse_status("Name:\tzombie\n"), None);
        let me = mem_usage(std::process::id()).unwrap();
        assert!(me.rss_kib > 0 && me.hwm_kib >= me.rss_kib);
    }
}
