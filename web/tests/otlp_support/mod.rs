//! Shared by the otlp_* tests: the real OTLP receiver process (tests/otlp/receiver.py, built on the
//! official opentelemetry-proto package and grpcio) and the real audit log in a SQLite file.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use sakshi_audit::{
    Action, Actor, ApplianceKey, AuditConfig, AuditLog, AuthMethod, NewEntry, Origin, Query,
    Target, TargetKind,
};
use sakshi_web::otlp::AuditLogSource;

/// The receiver's interpreter: $SAKSHI_OTLP_PYTHON, else the venv scripts/otlp-receiver-setup makes.
fn python() -> Result<PathBuf> {
    if let Some(p) = std::env::var_os("SAKSHI_OTLP_PYTHON") {
        return Ok(p.into());
    }
    let cache = std::env::var_os("SAKSHI_CACHE").unwrap_or_else(|| "/var/cache/sakshi".into());
    let p = PathBuf::from(cache).join("otlp-venv/bin/python");
    if !p.exists() {
        bail!(
            "OTLP receiver environment missing at {}: run scripts/otlp-receiver-setup (otlp_* tests need it)",
            p.display()
        );
    }
    Ok(p)
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("web/ has a parent")
        .to_path_buf()
}

/// A running receiver; SIGKILLed on drop.
pub struct Receiver {
    child: Child,
    pub grpc_port: u16,
    pub http_port: u16,
    pub out: PathBuf,
    extra: Vec<String>,
}

impl Receiver {
    /// Start on free ports, appending JSON lines to `out`.
    pub fn start(out: &Path, extra: &[&str]) -> Result<Self> {
        let extra: Vec<String> = extra.iter().map(|s| s.to_string()).collect();
        Self::spawn(out, 0, 0, extra)
    }

    fn spawn(out: &Path, grpc_port: u16, http_port: u16, extra: Vec<String>) -> Result<Self> {
        let mut child = Command::new(python()?)
            .arg(repo_root().join("tests/otlp/receiver.py"))
            .args([
                "--grpc-port",
                &grpc_port.to_string(),
                "--http-port",
                &http_port.to_string(),
            ])
            .arg("--out")
            .arg(out)
            .args(&extra)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("starting the OTLP receiver")?;
        let stdout = child.stdout.take().context("receiver stdout")?;
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .context("reading READY")?;
        let mut ports = line
            .trim()
            .strip_prefix("READY ")
            .unwrap_or_default()
            .split(' ');
        let mut port = |name: &str| -> Result<u16> {
            let field = ports
                .next()
                .with_context(|| format!("receiver said {line:?}"))?;
            Ok(field.strip_prefix(name).context("port field")?.parse()?)
        };
        let (grpc_port, http_port) = match (port("grpc="), port("http=")) {
            (Ok(g), Ok(h)) => (g, h),
            _ => {
                let _ = child.kill();
                let _ = child.wait();
                bail!("OTLP receiver did not start: {line:?}");
            }
        };
        Ok(Receiver {
            child,
            grpc_port,
            http_port,
            out: out.to_path_buf(),
            extra,
        })
    }

    /// SIGKILL it, as a crash would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// Start again on the same ports and output file (after [`Receiver::kill`]).
    pub fn restart(&mut self) -> Result<()> {
        self.kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            match Self::spawn(
                &self.out,
                self.grpc_port,
                self.http_port,
                self.extra.clone(),
            ) {
                Ok(r) => {
                    *self = r;
                    return Ok(());
                }
                Err(e) if Instant::now() < deadline => {
                    eprintln!("receiver restart: {e:#}; retrying");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(e),
            }
        }
    }

    pub fn grpc_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.grpc_port)
    }

    pub fn http_endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.http_port)
    }

    /// Every JSON line received so far.
    pub fn lines(&self) -> Vec<serde_json::Value> {
        let text = std::fs::read_to_string(&self.out).unwrap_or_default();
        // A line being written when we read may be incomplete: keep only complete lines.
        text.split_inclusive('\n')
            .filter(|l| l.ends_with('\n'))
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Received audit log records (scope `sakshi.audit`), in arrival order.
    pub fn audit_records(&self) -> Vec<serde_json::Value> {
        self.lines()
            .into_iter()
            .filter(|l| l["signal"] == "log" && l["scope"] == "sakshi.audit")
            .collect()
    }

    /// Wait until `pred` holds over the received lines (fails after `timeout`).
    pub fn wait_for(
        &self,
        what: &str,
        timeout: Duration,
        pred: impl Fn(&[serde_json::Value]) -> bool,
    ) -> Result<Vec<serde_json::Value>> {
        let deadline = Instant::now() + timeout;
        loop {
            let lines = self.lines();
            if pred(&lines) {
                return Ok(lines);
            }
            if Instant::now() > deadline {
                bail!(
                    "timed out waiting for {what}; received {} lines",
                    lines.len()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Audit seq numbers of the received audit records, in arrival order.
pub fn seqs(lines: &[serde_json::Value]) -> Vec<u64> {
    lines
        .iter()
        .filter(|l| l["signal"] == "log" && l["scope"] == "sakshi.audit")
        .filter_map(|l| l["attributes"]["sakshi.audit.seq"].as_u64())
        .collect()
}

/// The appliance's real audit log (sakshi-audit) in a SQLite file, and the shipper's view of it.
pub struct Audit {
    pub log: Arc<AuditLog>,
    pub source: Arc<AuditLogSource>,
}

impl Audit {
    pub fn open(path: &Path) -> Result<Self> {
        let key = Arc::new(ApplianceKey::generate()?);
        let log = Arc::new(AuditLog::open(path, AuditConfig::default(), key, None)?);
        let source = Arc::new(AuditLogSource::new(log.clone()));
        Ok(Audit { log, source })
    }

    /// Append `n` plain entries in batches (one group commit each).
    pub fn append_many(&self, n: usize) -> Result<()> {
        let entry = |i: usize| {
            NewEntry::new(
                Action::ConfigChange,
                Actor::user("alice", AuthMethod::Session),
                Origin::Internal,
            )
            .target(Target::new(TargetKind::Config, "otlp.test"))
            .details(serde_json::json!({ "i": i }))
        };
        let mut i = 0;
        while i < n {
            let chunk = (n - i).min(500);
            self.log.append_batch((i..i + chunk).map(entry).collect())?;
            i += chunk;
        }
        Ok(())
    }

    /// (action, details JSON) of every entry, in seq order.
    pub fn actions(&self) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut cursor = None;
        loop {
            let page = self
                .log
                .query(&Query {
                    cursor,
                    limit: 1000,
                    ..Query::default()
                })
                .expect("query the audit log");
            out.extend(
                page.entries
                    .iter()
                    .map(|e| (e.action.to_string(), e.details.to_string())),
            );
            match page.next_cursor {
                Some(c) => cursor = Some(c),
                None => return out,
            }
        }
    }
}
