//! Follows guest console logs and hands every complete line to [`Telemetry::console_line`].
//!
//! The supervisor writes each VM's serial output to `<runtime dir>/console.log` and rotates it to
//! `console.log.old` at 8 MiB (CONTRACTS.md). One thread polls every followed file: it keeps the
//! file open, so a rotation loses nothing (the open descriptor is drained to its end before the
//! new file is opened, found by its changed inode).

use std::collections::HashMap;
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use super::console::MAX_LINE_BYTES;
use super::telemetry::Telemetry;
use super::trace::TraceId;

/// How often followed console files are read.
const POLL: Duration = Duration::from_millis(100);
/// Bytes read per VM per poll at most (a flooding guest cannot starve the others).
const MAX_READ_PER_POLL: usize = 256 * 1024;

/// One followed console file.
#[derive(Debug)]
struct Tail {
    path: PathBuf,
    file: Option<(File, u64)>,
    pending: Vec<u8>,
    trace_id: Option<TraceId>,
    finishing: bool,
}

impl Tail {
    fn new(path: PathBuf, trace_id: Option<TraceId>) -> Self {
        Tail {
            path,
            file: None,
            pending: Vec::new(),
            trace_id,
            finishing: false,
        }
    }

    /// Read what was appended since the last call; `emit` gets every complete line (without its
    /// `\r\n`; empty lines skipped; lines longer than [`MAX_LINE_BYTES`] are cut into pieces).
    fn poll(&mut self, emit: &mut dyn FnMut(&str)) {
        let mut budget = MAX_READ_PER_POLL;
        if self.file.is_none() {
            match File::open(&self.path).and_then(|f| Ok((f.metadata()?.ino(), f))) {
                Ok((ino, f)) => self.file = Some((f, ino)),
                // Not written yet (the VMM has printed nothing).
                Err(_) => return,
            }
        }
        self.drain(&mut budget, emit);
        // Rotated: the old file is complete once it was renamed; drain it, then follow the new one.
        let rotated = match (&self.file, std::fs::metadata(&self.path)) {
            (Some((_, ino)), Ok(m)) => m.ino() != *ino,
            _ => false,
        };
        if rotated && budget > 0 {
            self.drain(&mut budget, emit);
            if budget > 0 {
                self.file = None;
                if let Ok((ino, f)) =
                    File::open(&self.path).and_then(|f| Ok((f.metadata()?.ino(), f)))
                {
                    self.file = Some((f, ino));
                    self.drain(&mut budget, emit);
                }
            }
        }
    }

    fn drain(&mut self, budget: &mut usize, emit: &mut dyn FnMut(&str)) {
        let mut buf = [0u8; 16 * 1024];
        while *budget > 0 {
            let Some((file, _)) = &mut self.file else {
                return;
            };
            let want = buf.len().min(*budget);
            match file.read(&mut buf[..want]) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    *budget -= n;
                    self.feed(&buf[..n], emit);
                }
            }
        }
    }

    fn feed(&mut self, mut bytes: &[u8], emit: &mut dyn FnMut(&str)) {
        while !bytes.is_empty() {
            match bytes.iter().position(|b| *b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&bytes[..i]);
                    bytes = &bytes[i + 1..];
                    self.flush_line(emit);
                }
                None => {
                    self.pending.extend_from_slice(bytes);
                    bytes = &[];
                }
            }
            while self.pending.len() > MAX_LINE_BYTES {
                let rest = self.pending.split_off(MAX_LINE_BYTES);
                self.flush_line(emit);
                self.pending = rest;
            }
        }
    }

    fn flush_line(&mut self, emit: &mut dyn FnMut(&str)) {
        let mut line = &self.pending[..];
        if let Some(l) = line.strip_suffix(b"\r") {
            line = l;
        }
        if !line.is_empty() {
            emit(&String::from_utf8_lossy(line));
        }
        self.pending.clear();
    }
}

struct Shared {
    telemetry: Telemetry,
    tails: Mutex<HashMap<String, Tail>>,
}

impl Shared {
    fn tails(&self) -> std::sync::MutexGuard<'_, HashMap<String, Tail>> {
        self.tails.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn poll_all(&self) {
        let mut tails = self.tails();
        let mut done = Vec::new();
        for (vm_id, tail) in tails.iter_mut() {
            let trace = tail.trace_id;
            let mut emit = |line: &str| self.telemetry.console_line(vm_id, trace, line);
            tail.poll(&mut emit);
            if tail.finishing {
                tail.flush_line(&mut emit);
                done.push(vm_id.clone());
            }
        }
        for id in done {
            tails.remove(&id);
        }
    }
}

/// Follows the console files of running VMs (see the module docs). Dropping it stops the thread
/// within one poll interval.
pub struct ConsoleFollower {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ConsoleFollower {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleFollower")
            .field("following", &self.shared.tails().len())
            .finish()
    }
}

impl ConsoleFollower {
    /// Start the polling thread; lines go to `telemetry`.
    pub fn spawn(telemetry: Telemetry) -> std::io::Result<ConsoleFollower> {
        let shared = Arc::new(Shared {
            telemetry,
            tails: Mutex::new(HashMap::new()),
        });
        let weak: Weak<Shared> = Arc::downgrade(&shared);
        std::thread::Builder::new()
            .name("sakshi-console".into())
            .spawn(move || {
                while let Some(shared) = weak.upgrade() {
                    shared.poll_all();
                    drop(shared);
                    std::thread::sleep(POLL);
                }
            })?;
        Ok(ConsoleFollower { shared })
    }

    /// Follow VM `vm_id`'s console file `path` from its start; lines carry `trace_id`.
    pub fn follow(&self, vm_id: &str, path: PathBuf, trace_id: Option<TraceId>) {
        self.shared
            .tails()
            .insert(vm_id.to_owned(), Tail::new(path, trace_id));
    }

    /// The VM ended: read what is left (a last line without `\n` included), then stop following.
    pub fn finish(&self, vm_id: &str) {
        if let Some(t) = self.shared.tails().get_mut(vm_id) {
            t.finishing = true;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn lines(tail: &mut Tail) -> Vec<String> {
        let mut out = Vec::new();
        tail.poll(&mut |l: &str| out.push(l.to_owned()));
        out
    }

    #[test]
    fn complete_lines_only_across_partial_writes_and_rotation() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        let mut tail = Tail::new(path.clone(), None);
        assert!(lines(&mut tail).is_empty(), "no file yet");
        let mut f = File::create(&path).unwrap();
        f.write_all(b"SAKSHI-TEST-GUEST v1\r\ncmdline: a b")
            .unwrap();
        assert_eq!(lines(&mut tail), ["SAKSHI-TEST-GUEST v1"]);
        f.write_all(b" trace=x\n\ntrace: 42\n").unwrap();
        assert_eq!(lines(&mut tail), ["cmdline: a b trace=x", "trace: 42"]);
        // The supervisor rotates: the tail of the old file, then the new one, nothing lost.
        f.write_all(b"last old line\n").unwrap();
        std::fs::rename(&path, dir.path().join("console.log.old")).unwrap();
        f.write_all(b"late old line\n").unwrap();
        let mut g = File::create(&path).unwrap();
        g.write_all(b"first new line\nhalf").unwrap();
        assert_eq!(
            lines(&mut tail),
            ["last old line", "late old line", "first new line"]
        );
        let mut rest = Vec::new();
        tail.flush_line(&mut |l: &str| rest.push(l.to_owned()));
        assert_eq!(rest, ["half"]);
    }

    #[test]
    fn overlong_lines_are_cut() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("console.log");
        std::fs::write(&path, vec![b'x'; 2 * MAX_LINE_BYTES + 10]).unwrap();
        let mut tail = Tail::new(path, None);
        let got = lines(&mut tail);
        assert_eq!(got.len(), 2);
        assert!(got.iter().all(|l| l.len() == MAX_LINE_BYTES));
        assert_eq!(tail.pending.len(), 10);
    }
}
