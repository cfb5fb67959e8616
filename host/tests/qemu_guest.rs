//! Boots the Sakshi test guest under the peer VMM, QEMU `-M microvm`, through the guest's PVH
//! entry, and checks the console protocol of docs/CONTRACTS.md ("Test guest").
//!
//! QEMU runs with `-accel kvm`; only if QEMU refuses KVM does a run fall back to TCG, and it says
//! so on the test output. QEMU has no device at port 0x440, so boot-complete and power-off are
//! checked on the console only.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use sakshi_host::test_guest::test_guest_path;

/// Generous: a boot takes well under a second with KVM and TCG alike.
const TIMEOUT: Duration = Duration::from_secs(60);
const MARKER_GPA: u64 = 0x30_0000;
const MARKER_VALUE_MAX: usize = 0x100 - "SAKSHI-MARKER:".len() - 1;

fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |h: u32, b| {
        (h ^ u32::from(*b)).wrapping_mul(0x0100_0193)
    })
}

/// A small initrd with content that differs at every byte position (xorshift64).
fn write_initrd(dir: &Path, len: usize, seed: u64) -> Result<(PathBuf, Vec<u8>)> {
    let mut x = seed;
    let bytes: Vec<u8> = (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect();
    let path = dir.join("initrd.bin");
    std::fs::write(&path, &bytes).context("write initrd")?;
    Ok((path, bytes))
}

/// A QEMU process, killed when dropped.
struct Qemu {
    child: Child,
    console: mpsc::Receiver<Vec<u8>>,
    output: Vec<u8>,
    stderr: Option<thread::JoinHandle<String>>,
    accel: &'static str,
}

impl Drop for Qemu {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// How a wait for console output ended.
enum Waited {
    /// The text appeared; QEMU may still be running.
    Seen,
    /// QEMU exited by itself.
    Exited(ExitStatus),
}

impl Qemu {
    fn spawn(
        accel: &'static str,
        cmdline: &str,
        initrd: Option<&Path>,
        monitor: Option<&Path>,
    ) -> Result<Self> {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args(["-M", "microvm", "-accel", accel, "-m", "128"])
            .args(["-nodefaults", "-no-user-config", "-nographic"])
            .args(["-serial", "stdio", "-no-reboot", "-device", "i8042"])
            .arg("-kernel")
            .arg(test_guest_path())
            .args(["-append", cmdline]);
        if let Some(initrd) = initrd {
            cmd.arg("-initrd").arg(initrd);
        }
        if let Some(sock) = monitor {
            cmd.arg("-monitor")
                .arg(format!("unix:{},server=on,wait=off", sock.display()));
        }
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("spawn qemu-system-x86_64 (Debian package qemu-system-x86)")?;
        let mut stdout = child.stdout.take().context("qemu stdout")?;
        let mut stderr = child.stderr.take().context("qemu stderr")?;
        let (tx, console) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        let stderr = thread::spawn(move || {
            let mut s = String::new();
            let _ = stderr.read_to_string(&mut s);
            s
        });
        Ok(Qemu {
            child,
            console,
            output: Vec::new(),
            stderr: Some(stderr),
            accel,
        })
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.output).into_owned()
    }

    /// Waits until `needle` is on the console or QEMU exits by itself.
    fn wait_for(&mut self, needle: &str) -> Result<Waited> {
        let deadline = Instant::now() + TIMEOUT;
        loop {
            if self.text().contains(needle) {
                return Ok(Waited::Seen);
            }
            if let Some(status) = self.child.try_wait()? {
                // Drain what QEMU wrote before it exited (the reader ends at EOF).
                while let Ok(chunk) = self.console.recv_timeout(TIMEOUT) {
                    self.output.extend_from_slice(&chunk);
                }
                return Ok(Waited::Exited(status));
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out after {TIMEOUT:?} waiting for {needle:?}; console so far:\n{}",
                    self.text()
                );
            }
            if let Ok(chunk) = self.console.recv_timeout(Duration::from_millis(50)) {
                self.output.extend_from_slice(&chunk);
            }
        }
    }

    /// Stops QEMU and returns what it wrote on stderr.
    fn take_stderr(&mut self) -> String {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.stderr
            .take()
            .and_then(|h| h.join().ok())
            .unwrap_or_default()
    }
}

/// Boots with KVM; falls back to TCG only when QEMU refuses KVM, and says so.
fn boot(
    cmdline: &str,
    initrd: Option<&Path>,
    monitor: Option<&Path>,
    until: &str,
) -> Result<(Qemu, Waited)> {
    let mut qemu = Qemu::spawn("kvm", cmdline, initrd, monitor)?;
    let waited = qemu.wait_for(until)?;
    if let Waited::Exited(status) = &waited
        && !status.success()
        && qemu.output.is_empty()
    {
        let stderr = qemu.take_stderr();
        ensure!(
            stderr.to_lowercase().contains("kvm"),
            "qemu failed before the guest ran ({status}):\n{stderr}"
        );
        println!(
            "NOTE: QEMU refused -accel kvm ({}); this run falls back to TCG",
            stderr.trim()
        );
        let mut qemu = Qemu::spawn("tcg", cmdline, initrd, monitor)?;
        let waited = qemu.wait_for(until)?;
        return Ok((qemu, waited));
    }
    Ok((qemu, waited))
}

/// Console lines of a finished run, printed for the test log.
fn lines(qemu: &Qemu) -> Vec<String> {
    let text = qemu.text();
    println!(
        "--- guest console (qemu -accel {}) ---\n{text}--- end ---",
        qemu.accel
    );
    text.lines().map(str::to_owned).collect()
}

struct E820 {
    addr: u64,
    size: u64,
    kind: u32,
}

fn parse_hex(s: &str, digits: Option<usize>) -> Result<u64> {
    let h = s
        .strip_prefix("0x")
        .with_context(|| format!("{s:?} lacks 0x"))?;
    if let Some(d) = digits {
        ensure!(h.len() == d, "{s:?}: expected {d} hex digits");
    }
    ensure!(
        h.bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)),
        "{s:?}: not lowercase hex"
    );
    Ok(u64::from_str_radix(h, 16)?)
}

fn parse_e820(line: &str) -> Result<E820> {
    let rest = line.strip_prefix("e820: ").context("not an e820 line")?;
    let f: Vec<&str> = rest.split(' ').collect();
    ensure!(f.len() == 3, "e820 line {line:?}");
    Ok(E820 {
        addr: parse_hex(f[0].strip_prefix("addr=").context("addr=")?, Some(16))?,
        size: parse_hex(f[1].strip_prefix("size=").context("size=")?, Some(16))?,
        kind: f[2].strip_prefix("type=").context("type=")?.parse()?,
    })
}

/// Checks the lines every boot prints, up to and including `boot-complete`; returns the rest.
fn check_boot_lines<'a>(
    lines: &'a [String],
    cmdline: &str,
    initrd: Option<&[u8]>,
    marker_text: &str,
    trace: Option<&str>,
) -> Result<&'a [String]> {
    let mut it = lines.iter().map(String::as_str).enumerate().peekable();
    let mut next = |what: &str| {
        it.next()
            .map(|(_, l)| l)
            .with_context(|| format!("console ended before the {what} line"))
    };
    ensure!(
        next("banner")? == "SAKSHI-TEST-GUEST v1 entry=pvh",
        "banner"
    );
    ensure!(
        next("cmdline")? == format!("cmdline: {cmdline}"),
        "cmdline echo"
    );

    let mut e820 = Vec::new();
    let mut line = next("e820")?;
    while line.starts_with("e820: ") {
        e820.push(parse_e820(line)?);
        line = next("initrd")?;
    }
    ensure!(!e820.is_empty(), "no e820 lines");
    let ram: u64 = e820.iter().filter(|e| e.kind == 1).map(|e| e.size).sum();
    ensure!(
        (120 << 20..=128 << 20).contains(&ram),
        "usable RAM in the map is {ram:#x}, QEMU was given 128 MiB"
    );
    ensure!(
        e820.iter()
            .any(|e| e.kind == 1 && e.addr <= 0x10_0000 && e.addr + e.size >= 0x40_0000),
        "no RAM entry covers the guest image and the marker page"
    );

    match initrd {
        None => ensure!(line == "initrd: none", "initrd line {line:?}"),
        Some(bytes) => {
            let f: Vec<&str> = line
                .strip_prefix("initrd: ")
                .with_context(|| format!("initrd line {line:?}"))?
                .split(' ')
                .collect();
            ensure!(f.len() == 3, "initrd line {line:?}");
            let addr = parse_hex(f[0].strip_prefix("addr=").context("addr=")?, None)?;
            let size = parse_hex(f[1].strip_prefix("size=").context("size=")?, None)?;
            let fnv = parse_hex(f[2].strip_prefix("fnv1a32=").context("fnv1a32=")?, Some(8))?;
            ensure!(addr != 0 && addr % 4096 == 0, "initrd address {addr:#x}");
            ensure!(
                size == bytes.len() as u64,
                "initrd size {size} != {}",
                bytes.len()
            );
            ensure!(
                fnv == u64::from(fnv1a32(bytes)),
                "guest fnv1a32 {fnv:#x} != {:#x}",
                fnv1a32(bytes)
            );
        }
    }
    ensure!(
        next("marker")? == format!("marker: gpa=0x300000 text={marker_text}"),
        "marker line"
    );
    if let Some(trace) = trace {
        ensure!(next("trace")? == format!("trace: {trace}"), "trace line");
    }
    ensure!(
        next("boot-complete")? == "boot-complete",
        "boot-complete line"
    );
    let consumed = it.peek().map_or(lines.len(), |(i, _)| *i);
    Ok(&lines[consumed..])
}

#[test]
fn qemu_pvh_boot_prints_protocol_and_reboot_ends_qemu() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let (initrd_path, initrd) = write_initrd(dir.path(), 3000, 0x5eed_0001)?;
    let cmdline = "quiet marker=qemu-boot-1 trace=4bf92f3577b34da6a3ce929d0e0e4736 exit=reboot";
    let (qemu, waited) = boot(cmdline, Some(&initrd_path), None, "no such line")?;
    let lines = lines(&qemu);
    let Waited::Exited(status) = waited else {
        bail!("unreachable: waited for a line the guest never prints")
    };
    let rest = check_boot_lines(
        &lines,
        cmdline,
        Some(&initrd),
        "SAKSHI-MARKER:qemu-boot-1",
        Some("4bf92f3577b34da6a3ce929d0e0e4736"),
    )?;
    assert_eq!(rest, ["exit: reboot"]);
    assert!(
        status.success(),
        "QEMU ended with {status} after the i8042 reset"
    );
    Ok(())
}

#[test]
fn qemu_no_initrd_and_empty_cmdline_default_to_halt() -> Result<()> {
    let (qemu, waited) = boot("", None, None, "exit: halt\n")?;
    let lines = lines(&qemu);
    assert!(
        matches!(waited, Waited::Seen),
        "QEMU exited before the guest halted"
    );
    let rest = check_boot_lines(&lines, "", None, "SAKSHI-MARKER:default", None)?;
    assert_eq!(rest, ["exit: halt"]);
    Ok(())
}

#[test]
fn qemu_triple_fault_ends_qemu_and_long_marker_is_truncated() -> Result<()> {
    let value = "m".repeat(300);
    let cmdline = format!("fault=triple marker={value} exit=reboot");
    let (qemu, waited) = boot(&cmdline, None, None, "no such line")?;
    let lines = lines(&qemu);
    let Waited::Exited(status) = waited else {
        bail!("unreachable: waited for a line the guest never prints")
    };
    let marker = format!("SAKSHI-MARKER:{}", &value[..MARKER_VALUE_MAX]);
    let rest = check_boot_lines(&lines, &cmdline, None, &marker, None)?;
    // The fault comes before the requested reboot, which never happens.
    assert_eq!(rest, ["fault: triple"]);
    assert!(
        status.success(),
        "QEMU ended with {status} after the triple fault"
    );
    Ok(())
}

#[test]
fn qemu_mmio_garbage_is_survived_then_reboot() -> Result<()> {
    let cmdline = "exit=reboot mmio=garbage";
    let (qemu, waited) = boot(cmdline, None, None, "no such line")?;
    let lines = lines(&qemu);
    let Waited::Exited(status) = waited else {
        bail!("unreachable: waited for a line the guest never prints")
    };
    let rest = check_boot_lines(&lines, cmdline, None, "SAKSHI-MARKER:default", None)?;
    assert_eq!(rest, ["mmio: garbage done", "exit: reboot"]);
    assert!(status.success());
    Ok(())
}

/// Human monitor over a Unix socket: sends one command, returns once the prompt is back.
fn hmp(sock: &mut UnixStream, command: &str) -> Result<()> {
    sock.write_all(format!("{command}\n").as_bytes())?;
    read_prompt(sock)
}

fn read_prompt(sock: &mut UnixStream) -> Result<()> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.ends_with(b"(qemu) ") {
        let n = sock.read(&mut buf).context("read monitor")?;
        ensure!(n > 0, "monitor closed: {}", String::from_utf8_lossy(&seen));
        seen.extend_from_slice(&buf[..n]);
    }
    Ok(())
}

/// Guest memory 0x300000..0x300108 (marker page and counter), read with `pmemsave`.
fn marker_page(sock: &mut UnixStream, file: &Path) -> Result<(Vec<u8>, u64)> {
    hmp(
        sock,
        &format!("pmemsave {MARKER_GPA:#x} 0x108 \"{}\"", file.display()),
    )?;
    let bytes = std::fs::read(file).context("pmemsave output")?;
    ensure!(bytes.len() == 0x108, "pmemsave wrote {} bytes", bytes.len());
    let counter = u64::from_le_bytes(bytes[0x100..0x108].try_into()?);
    Ok((bytes, counter))
}

#[test]
fn qemu_spin_counter_runs_and_marker_is_in_guest_memory() -> Result<()> {
    let dir = tempfile::tempdir()?;
    let sock_path = dir.path().join("monitor.sock");
    let cmdline = "run=spin marker=in-memory-7";
    let (qemu, waited) = boot(cmdline, None, Some(&sock_path), "run: spin\n")?;
    let lines = lines(&qemu);
    assert!(
        matches!(waited, Waited::Seen),
        "QEMU exited during run=spin"
    );
    let rest = check_boot_lines(&lines, cmdline, None, "SAKSHI-MARKER:in-memory-7", None)?;
    assert_eq!(rest, ["run: spin"]);

    let mut sock = UnixStream::connect(&sock_path).context("connect monitor")?;
    sock.set_read_timeout(Some(TIMEOUT))?;
    read_prompt(&mut sock)?;
    let dump = dir.path().join("marker.bin");
    let (bytes, first) = marker_page(&mut sock, &dump)?;
    let text = b"SAKSHI-MARKER:in-memory-7\0";
    assert_eq!(&bytes[..text.len()], text);
    assert!(first >= 1, "counter {first} was never incremented");

    // The counter keeps moving while the guest spins.
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let (_, now) = marker_page(&mut sock, &dump)?;
        if now > first {
            break;
        }
        assert!(Instant::now() < deadline, "counter stuck at {first}");
        thread::sleep(Duration::from_millis(20));
    }
    Ok(())
}
