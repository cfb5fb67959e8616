//! The console sink behind COM1: stdout and/or a file, line by line, and a bounded ring.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{self, Write};
use std::sync::{Arc, Mutex};

use crate::events::Timeline;

/// Longest partial line kept before it is written out anyway.
const MAX_LINE: usize = 4096;

/// Shared console state: written by the serial device, read by the control socket.
pub(crate) struct Console {
    inner: Mutex<Inner>,
    timeline: Arc<Timeline>,
}

struct Inner {
    ring: VecDeque<u8>,
    ring_cap: usize,
    line: Vec<u8>,
    stdout: bool,
    file: Option<File>,
    total: u64,
    sink_failed: bool,
}

impl Console {
    pub(crate) fn new(
        ring_cap: usize,
        stdout: bool,
        file: Option<File>,
        timeline: Arc<Timeline>,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                ring_cap,
                line: Vec::new(),
                stdout,
                file,
                total: 0,
                sink_failed: false,
            }),
            timeline,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Takes guest output.
    pub(crate) fn push(&self, bytes: &[u8]) {
        if bytes.is_empty() {
            return;
        }
        let mut inner = self.lock();
        if inner.total == 0 {
            self.timeline.mark_first_output();
        }
        inner.total += bytes.len() as u64;
        for &b in bytes {
            if inner.ring.len() == inner.ring_cap {
                inner.ring.pop_front();
            }
            inner.ring.push_back(b);
        }
        inner.line.extend_from_slice(bytes);
        if bytes.contains(&b'\n') || inner.line.len() >= MAX_LINE {
            inner.flush_line();
        }
    }

    /// Writes out a partial last line.
    pub(crate) fn flush(&self) {
        self.lock().flush_line();
    }

    /// The last `max` bytes of output (fewer if less was written), and the total ever written.
    pub(crate) fn tail(&self, max: usize) -> (Vec<u8>, u64) {
        let inner = self.lock();
        let n = max.min(inner.ring.len());
        let skip = inner.ring.len() - n;
        (inner.ring.iter().skip(skip).copied().collect(), inner.total)
    }

    /// Bytes the guest wrote so far.
    pub(crate) fn total(&self) -> u64 {
        self.lock().total
    }
}

impl Inner {
    fn flush_line(&mut self) {
        if self.line.is_empty() {
            return;
        }
        let mut result = Ok(());
        if self.stdout {
            result = io::stdout().lock().write_all(&self.line);
        }
        if let Some(file) = self.file.as_mut() {
            result = result.and(file.write_all(&self.line));
        }
        if let Err(error) = result
            && !self.sink_failed
        {
            tracing::warn!(%error, "cannot write guest console output");
            self.sink_failed = true;
        }
        self.line.clear();
    }
}

/// The `Write` end handed to the vm-superio serial device.
pub(crate) struct ConsoleWriter(pub(crate) Arc<Console>);

impl Write for ConsoleWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.push(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        // The serial device flushes after every byte; lines are written out whole instead.
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};
    use std::time::Instant;

    fn console(cap: usize, file: Option<File>) -> Console {
        let tl = Arc::new(Timeline::new(Instant::now(), 0, None, None, false));
        Console::new(cap, false, file, tl)
    }

    #[test]
    fn ring_keeps_the_last_bytes() {
        let c = console(8, None);
        c.push(b"hello ");
        c.push(b"world\n");
        let (tail, total) = c.tail(100);
        assert_eq!(tail, b"o world\n");
        assert_eq!(total, 12);
        assert_eq!(c.tail(3).0, b"ld\n");
        assert_eq!(c.total(), 12);
    }

    #[test]
    fn file_is_written_per_line_and_on_flush() {
        let mut f = tempfile::tempfile().unwrap();
        let c = console(64, Some(f.try_clone().unwrap()));
        c.push(b"line one\npart");
        f.rewind().unwrap();
        let mut s = String::new();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "line one\npart");
        c.push(b"ial");
        c.flush();
        f.rewind().unwrap();
        s.clear();
        f.read_to_string(&mut s).unwrap();
        assert_eq!(s, "line one\npartial");
    }
}
