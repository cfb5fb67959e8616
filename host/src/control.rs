//! The control socket: newline-delimited JSON, one request per line, one response per line.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::mpsc::{self, Sender};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::vmm::MainMsg;

/// Longest request line accepted, in bytes.
pub const MAX_REQUEST_LINE: usize = 4096;
/// Most console bytes one `console_tail` returns.
pub const MAX_TAIL_BYTES: usize = 1 << 20;

/// A request on the control socket.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case", deny_unknown_fields)]
pub enum ControlRequest {
    /// State, timings and counters.
    Status {},
    /// Pause every vCPU.
    Pause {},
    /// Resume every vCPU.
    Resume {},
    /// Stop the VM (the process then exits with status 0).
    Stop {
        /// Ask the guest first (signal port bit, `stop_timeout_ms`), then stop hard.
        #[serde(default = "default_graceful")]
        graceful: bool,
        /// Overrides the configured graceful timeout, in milliseconds.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        timeout_ms: Option<u64>,
    },
    /// The last bytes of console output.
    ConsoleTail {
        /// How many bytes at most (capped at [`MAX_TAIL_BYTES`]).
        #[serde(default = "default_tail")]
        bytes: usize,
    },
}

fn default_graceful() -> bool {
    true
}

fn default_tail() -> usize {
    4096
}

/// A response: `{"ok":true,...}` or `{"ok":false,"error":{...}}`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlResponse {
    /// Whether the request succeeded.
    pub ok: bool,
    /// For `status`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<VmStatus>,
    /// For `pause`, `resume` and `stop`: how long the operation took, in microseconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latency_us: Option<u64>,
    /// For `stop`: how the VM was stopped.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stop_mode: Option<crate::events::StopMode>,
    /// For `console_tail`: the bytes, as UTF-8 (invalid sequences replaced).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console: Option<String>,
    /// For `console_tail`: console bytes written since boot.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub console_total_bytes: Option<u64>,
    /// Set when `ok` is false.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ControlError>,
}

impl ControlResponse {
    pub(crate) fn ok() -> Self {
        Self {
            ok: true,
            ..Default::default()
        }
    }

    pub(crate) fn error(kind: ErrorKind, message: impl Into<String>) -> Self {
        Self {
            ok: false,
            error: Some(ControlError {
                kind,
                message: message.into(),
            }),
            ..Default::default()
        }
    }
}

/// Why a request failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ControlError {
    /// Machine-readable kind.
    pub kind: ErrorKind,
    /// Human-readable message.
    pub message: String,
}

/// Kinds of control errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// Not JSON, unknown op, unknown field, line too long.
    InvalidRequest,
    /// The operation does not apply in the current state (pause while paused ...).
    InvalidState,
    /// vCPUs did not reach the requested state in time.
    Timeout,
    /// The VM is shutting down.
    ShuttingDown,
}

/// The run state reported by `status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RunState {
    /// vCPUs run.
    Running,
    /// vCPUs are parked.
    Paused,
}

/// `status` payload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VmStatus {
    /// Run state.
    pub state: RunState,
    /// Microseconds since process start.
    pub uptime_us: u64,
    /// Number of vCPUs.
    pub vcpus: u32,
    /// Guest memory in MiB.
    pub memory_mib: u64,
    /// Entry used (`linux64` or `pvh`).
    pub entry: String,
    /// Whether the PVM workarounds are applied.
    pub pvm_workarounds: bool,
    /// CPU features hidden from the guest.
    pub hidden_cpu_features: Vec<String>,
    /// First console byte, microseconds since process start.
    pub first_output_us: Option<u64>,
    /// Boot complete, microseconds since process start.
    pub boot_complete_us: Option<u64>,
    /// Boot complete, microseconds since the start request (when given).
    pub boot_complete_since_request_us: Option<u64>,
    /// Latency of the last pause, microseconds.
    pub last_pause_latency_us: Option<u64>,
    /// Latency of the last resume, microseconds.
    pub last_resume_latency_us: Option<u64>,
    /// Unknown port I/O accesses so far.
    pub unknown_pio: u64,
    /// Unknown MMIO accesses so far.
    pub unknown_mmio: u64,
    /// Console bytes written so far.
    pub console_bytes: u64,
}

/// A control request on its way to the main thread, with where to send the answer.
pub(crate) struct Pending {
    pub request: ControlRequest,
    pub reply: Sender<Reply>,
}

/// The answer, and (for the last answer before exit) a way to confirm it was written.
pub(crate) struct Reply {
    pub response: ControlResponse,
    pub written: Option<Sender<()>>,
}

/// Accepts connections until the process exits; one thread per connection.
pub(crate) fn serve(listener: UnixListener, to_main: Sender<MainMsg>) {
    for stream in listener.incoming() {
        match stream {
            Ok(stream) => {
                let to_main = to_main.clone();
                let spawned = std::thread::Builder::new()
                    .name("sakshi-ctl-conn".into())
                    .spawn(move || connection(stream, to_main));
                if let Err(error) = spawned {
                    tracing::warn!(%error, "cannot serve control connection");
                }
            }
            Err(error) => tracing::warn!(%error, "control socket accept failed"),
        }
    }
}

fn connection(stream: UnixStream, to_main: Sender<MainMsg>) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    let mut line = Vec::new();
    loop {
        line.clear();
        let n = match (&mut reader)
            .take(MAX_REQUEST_LINE as u64 + 1)
            .read_until(b'\n', &mut line)
        {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            return;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            // Blank lines are not requests; they get no response.
            continue;
        }
        let too_long = line.len() > MAX_REQUEST_LINE && line.last() != Some(&b'\n');
        let (response, written) = if too_long {
            // Drop the rest of the oversized line.
            let mut sink = Vec::new();
            if reader.read_until(b'\n', &mut sink).is_err() {
                return;
            }
            (
                ControlResponse::error(
                    ErrorKind::InvalidRequest,
                    format!("request line longer than {MAX_REQUEST_LINE} bytes"),
                ),
                None,
            )
        } else {
            match serde_json::from_slice::<ControlRequest>(trim_newline(&line)) {
                Err(e) => (
                    ControlResponse::error(ErrorKind::InvalidRequest, e.to_string()),
                    None,
                ),
                Ok(request) => ask_main(&to_main, request),
            }
        };
        let mut out = serde_json::to_vec(&response).unwrap_or_else(|_| b"{\"ok\":false}".to_vec());
        out.push(b'\n');
        let result = writer.write_all(&out).and_then(|_| writer.flush());
        if let Some(done) = written {
            let _ = done.send(());
        }
        if result.is_err() {
            return;
        }
    }
}

fn trim_newline(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

fn ask_main(
    to_main: &Sender<MainMsg>,
    request: ControlRequest,
) -> (ControlResponse, Option<Sender<()>>) {
    let (tx, rx) = mpsc::channel();
    let gone = || {
        (
            ControlResponse::error(ErrorKind::ShuttingDown, "the VM is shutting down"),
            None,
        )
    };
    if to_main
        .send(MainMsg::Control(Pending { request, reply: tx }))
        .is_err()
    {
        return gone();
    }
    // Generous: a graceful stop waits up to the configured maximum of 60 s.
    match rx.recv_timeout(Duration::from_secs(120)) {
        Ok(reply) => (reply.response, reply.written),
        Err(_) => gone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_wire_format() {
        let cases = [
            (r#"{"op":"status"}"#, ControlRequest::Status {}),
            (r#"{"op":"pause"}"#, ControlRequest::Pause {}),
            (r#"{"op":"resume"}"#, ControlRequest::Resume {}),
            (
                r#"{"op":"stop","graceful":true}"#,
                ControlRequest::Stop {
                    graceful: true,
                    timeout_ms: None,
                },
            ),
            (
                r#"{"op":"stop","graceful":false,"timeout_ms":5}"#,
                ControlRequest::Stop {
                    graceful: false,
                    timeout_ms: Some(5),
                },
            ),
            (
                r#"{"op":"console_tail","bytes":4096}"#,
                ControlRequest::ConsoleTail { bytes: 4096 },
            ),
            (
                r#"{"op":"console_tail"}"#,
                ControlRequest::ConsoleTail { bytes: 4096 },
            ),
        ];
        for (text, want) in cases {
            assert_eq!(
                serde_json::from_str::<ControlRequest>(text).unwrap(),
                want,
                "{text}"
            );
        }
        for bad in [
            r#"{"op":"reboot"}"#,
            r#"{"op":"pause","now":true}"#,
            r#"{"op":"console_tail","bytes":-1}"#,
            r#"{}"#,
            "pause",
        ] {
            assert!(
                serde_json::from_str::<ControlRequest>(bad).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn response_wire_format() {
        let ok = ControlResponse {
            latency_us: Some(12),
            ..ControlResponse::ok()
        };
        assert_eq!(
            serde_json::to_string(&ok).unwrap(),
            r#"{"ok":true,"latency_us":12}"#
        );
        let err = ControlResponse::error(ErrorKind::InvalidState, "already paused");
        assert_eq!(
            serde_json::to_string(&err).unwrap(),
            r#"{"ok":false,"error":{"kind":"invalid_state","message":"already paused"}}"#
        );
    }

    #[test]
    fn bad_lines_get_error_responses_and_the_connection_survives() {
        let (a, b) = UnixStream::pair().unwrap();
        let (tx, rx) = mpsc::channel();
        let server = std::thread::spawn(move || connection(a, tx));
        let main = std::thread::spawn(move || {
            while let Ok(MainMsg::Control(p)) = rx.recv() {
                let _ = p.reply.send(Reply {
                    response: ControlResponse::ok(),
                    written: None,
                });
            }
        });
        let mut w = b.try_clone().unwrap();
        let mut r = BufReader::new(b);
        let long = "x".repeat(MAX_REQUEST_LINE + 10);
        // Blank lines get no response: the first response read belongs to "not json".
        w.write_all(b"\n \r\n").unwrap();
        for (line, ok) in [
            ("not json", false),
            (long.as_str(), false),
            (r#"{"op":"status"}"#, true),
        ] {
            w.write_all(line.as_bytes()).unwrap();
            w.write_all(b"\n").unwrap();
            let mut resp = String::new();
            r.read_line(&mut resp).unwrap();
            let resp: ControlResponse = serde_json::from_str(&resp).unwrap();
            assert_eq!(resp.ok, ok, "{line:.20}");
            if !ok {
                assert_eq!(resp.error.unwrap().kind, ErrorKind::InvalidRequest);
            }
        }
        drop(w);
        drop(r);
        server.join().unwrap();
        main.join().unwrap();
    }
}
